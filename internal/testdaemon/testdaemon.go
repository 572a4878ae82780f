// Package testdaemon starts the real sealboxd binary for tests and
// benchmarks, the one way they all do it: with a notify socket, so that
// "ready" is the READY=1 sealboxd sends systemd (timed, for the benchmark),
// its log captured, and a stop that reports the exit code.
//
// It does not import testing, so that the benchmark program can use it.
package testdaemon

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options say how to start sealboxd.
type Options struct {
	Bin string // the sealboxd binary
	// Prefix wraps the daemon (setpriv, prlimit, strace): its pid is then
	// the wrapper's, and the daemon's is found as its only child for
	// strace (see Process.PID).
	Prefix []string
	Args   []string  // sealboxd's arguments: --keyring, --socket, …
	Env    []string  // added to this process's environment
	Log    io.Writer // where stdout and stderr go, besides Process.Log; nil: only there
	// Timeout bounds the wait for READY=1; zero means 30 s.
	Timeout time.Duration
}

// Process is a started sealboxd.
type Process struct {
	Cmd *exec.Cmd
	// PID is the daemon's own pid (under strace, strace's child).
	PID int
	// Ready is how long READY=1 took from the start.
	Ready time.Duration
	// Log is what the daemon wrote to stdout and stderr.
	Log *Buffer
	// Exited is closed when the process has exited.
	Exited chan struct{}

	stopOnce sync.Once
}

// Start starts sealboxd and waits for its READY=1. It fails if the daemon
// exits first or does not get ready in time; its log is in the error.
func Start(o Options) (*Process, error) {
	dir, err := os.MkdirTemp("", "sbxn")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// A wrapper may run the daemon as another user: it must reach the
	// notify socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	ns := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := os.Chmod(ns, 0o777); err != nil {
		return nil, err
	}
	argv := append(append(append([]string{}, o.Prefix...), o.Bin), o.Args...)
	p := &Process{Log: &Buffer{}, Exited: make(chan struct{})}
	p.Cmd = exec.Command(argv[0], argv[1:]...)
	p.Cmd.Env = append(append(os.Environ(), o.Env...), "NOTIFY_SOCKET="+ns)
	var out io.Writer = p.Log
	if o.Log != nil {
		out = io.MultiWriter(p.Log, o.Log)
	}
	p.Cmd.Stdout, p.Cmd.Stderr = out, out
	start := time.Now()
	if err := p.Cmd.Start(); err != nil {
		return nil, err
	}
	p.PID = p.Cmd.Process.Pid
	go func() { p.Cmd.Wait(); close(p.Exited) }()
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 512)
		conn.SetReadDeadline(time.Now().Add(timeout))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				ready <- err
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				ready <- nil
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			p.Kill()
			return nil, fmt.Errorf("sealboxd did not get ready (%v):\n%s", err, p.Log)
		}
	case <-p.Exited:
		return nil, fmt.Errorf("sealboxd exited at start (%v):\n%s", p.Cmd.ProcessState, p.Log)
	}
	p.Ready = time.Since(start)
	if len(o.Prefix) > 0 && filepath.Base(o.Prefix[0]) == "strace" {
		if p.PID, err = onlyChild(p.Cmd.Process.Pid); err != nil {
			p.Kill()
			return nil, err
		}
	}
	return p, nil
}

// onlyChild returns the pid of the one process pid started.
func onlyChild(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	f := strings.Fields(string(b))
	if err != nil || len(f) != 1 {
		return 0, fmt.Errorf("the children of %d: %q %v", pid, b, err)
	}
	return strconv.Atoi(f[0])
}

// Stop sends sig to the daemon and waits up to timeout for it to exit,
// returning its exit code (a wrapper's, if there is one).
func (p *Process) Stop(sig syscall.Signal, timeout time.Duration) (int, error) {
	syscall.Kill(p.PID, sig)
	select {
	case <-p.Exited:
		return p.Cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		p.Kill()
		return -1, fmt.Errorf("sealboxd did not exit on %v within %v", sig, timeout)
	}
}

// Kill ends the daemon (and a wrapper) at once and waits for it; for
// cleanups. It may be called more than once.
func (p *Process) Kill() {
	p.stopOnce.Do(func() {
		syscall.Kill(p.PID, syscall.SIGKILL)
		p.Cmd.Process.Kill()
	})
	<-p.Exited
}

// Buffer is a bytes.Buffer safe for one writer and concurrent readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
