package tpm2

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/testbin"
)

// tools are the programs the TPM tests run.
var tools = []string{"swtpm", "tpm2_createprimary", "tpm2_create", "tpm2_load",
	"tpm2_unseal", "tpm2_pcrread", "tpm2_pcrextend", "tpm2_flushcontext", "tpm2_createpolicy"}

func requireTools(t testing.TB) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testbin.Require(t, tool+" is not installed (apt-get install swtpm swtpm-tools tpm2-tools)")
		}
	}
}

// swtpm is a software TPM 2.0 on 127.0.0.1, its state in dir.
type swtpm struct {
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd

	exited chan struct{}
}

// startSWTPM starts a swtpm on a fresh state directory; t.Cleanup kills it.
func startSWTPM(t testing.TB) *swtpm {
	t.Helper()
	requireTools(t)
	s := &swtpm{t: t, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *swtpm) cfg() Config {
	return Config{TCTI: "swtpm:host=127.0.0.1,port=" + strconv.Itoa(s.port)}
}

// start starts swtpm on s.dir on two free ports (server P, control P+1) and
// waits until both accept.
func (s *swtpm) start() {
	s.t.Helper()
	var last error
	for range 10 {
		port, err := freePortPair()
		if err != nil {
			last = err
			continue
		}
		cmd := exec.Command("swtpm", "socket", "--tpmstate", "dir="+s.dir, "--tpm2",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--flags", "not-need-init,startup-clear")
		out := &capped{max: 4096}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("starting swtpm: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if err := waitReady(port, exited); err != nil {
			cmd.Process.Kill()
			<-exited
			last = fmt.Errorf("%v: %s", err, out.Bytes())
			continue
		}
		s.port, s.cmd = port, cmd
		s.exited = exited
		return
	}
	s.t.Fatalf("swtpm did not start: %v", last)
}

// stop ends swtpm (SIGCONT first, in case a test stopped it) and waits.
func (s *swtpm) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// restart is a reboot: the same TPM (state directory), PCRs reset.
func (s *swtpm) restart() {
	s.t.Helper()
	s.stop()
	s.start()
}

// freePortPair finds P such that P and P+1 are free on 127.0.0.1.
func freePortPair() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l.Close()
		if err == nil {
			l2.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no two adjacent free ports")
}

func waitReady(port int, exited <-chan struct{}) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("swtpm exited")
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port+1), 200*time.Millisecond)
		if err == nil {
			c.Close()
			c, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
			if err == nil {
				c.Close()
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("swtpm not ready after 5 s")
}

// tool runs a tpm2-tools command against s, for test setup.
func (s *swtpm) tool(name string, args ...string) []byte {
	s.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+s.cfg().TCTI)
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
	return out
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
