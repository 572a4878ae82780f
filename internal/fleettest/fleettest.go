// Package fleettest runs the real servers unattended slots talk to, for
// end-to-end tests: Debian's tangd under socat on a free 127.0.0.1 port,
// and swtpm (a software TPM 2.0) on free 127.0.0.1 ports. Both are stopped
// by t.Cleanup. Missing tools fail the test under CI=true and skip it
// elsewhere (testbin.Require). It is for tests only.
package fleettest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/testbin"
)

// Debian's tang programs.
const (
	Tangd       = "/usr/libexec/tangd"
	TangdKeygen = "/usr/libexec/tangd-keygen"
	TangdRotate = "/usr/libexec/tangd-rotate-keys"
)

// RequireTang stops t unless tang, clevis, jose and socat are installed.
func RequireTang(t testing.TB) {
	t.Helper()
	for _, p := range []string{Tangd, TangdKeygen, TangdRotate} {
		if _, err := os.Stat(p); err != nil {
			testbin.Require(t, p+" is missing (apt-get install tang)")
		}
	}
	for _, tool := range []string{"socat", "clevis", "jose", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbin.Require(t, tool+" is missing (apt-get install tang clevis jose socat curl)")
		}
	}
}

// Run runs a command with stdin and no proxy settings, and returns its
// stdout; it fails t on error.
func Run(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "http_proxy=", "HTTP_PROXY=", "https_proxy=", "HTTPS_PROXY=", "all_proxy=", "ALL_PROXY=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// Tang is a running tangd.
type Tang struct {
	t    testing.TB
	Dir  string // its key directory
	URL  string // http://127.0.0.1:PORT
	port int
	cmd  *exec.Cmd
	hung func() // ends Hang's listener
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartTang makes a key directory and serves it.
func StartTang(t testing.TB) *Tang {
	t.Helper()
	RequireTang(t)
	s := &Tang{t: t, Dir: t.TempDir(), port: FreePort(t)}
	Run(t, nil, TangdKeygen, s.Dir)
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start serves the key directory again on the same port (after Stop or
// Hang).
func (s *Tang) Start() {
	s.t.Helper()
	s.Stop()
	if s.hung != nil {
		s.hung()
		s.hung = nil
	}
	cmd := exec.Command("socat",
		fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", s.port),
		fmt.Sprintf("EXEC:%s %s", Tangd, s.Dir))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := c.Get(s.URL + "/adv")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("tangd under socat does not answer on %s: %v\n%s", s.URL, err, stderr.Bytes())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills socat and any tangd it forked: the port then refuses.
func (s *Tang) Stop() {
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	s.cmd.Wait()
	s.cmd = nil
}

// Hang stops the server and, on its port, accepts connections and never
// answers them: a server that hangs.
func (s *Tang) Hang() {
	s.t.Helper()
	s.Stop()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
	if err != nil {
		s.t.Fatal(err)
	}
	s.hung = hang(l)
	s.t.Cleanup(func() {
		if s.hung != nil {
			s.hung()
			s.hung = nil
		}
	})
}

// hang accepts on l and never answers, until the returned func is called.
func hang(l net.Listener) func() {
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
}

// Thumbprint is the S256 thumbprint of the server's signing key (the
// name of its ES512 key file).
func (s *Tang) Thumbprint() string {
	s.t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.Dir, "*.jwk"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			s.t.Fatal(err)
		}
		var k struct {
			Alg string `json:"alg"`
		}
		if json.Unmarshal(b, &k) == nil && k.Alg == "ES512" {
			return strings.TrimSuffix(filepath.Base(f), ".jwk")
		}
	}
	s.t.Fatalf("no signing key in %s", s.Dir)
	return ""
}

// Rotate makes new keys; the old ones are hidden (.*.jwk) and still
// answer /rec, but /adv no longer lists them.
func (s *Tang) Rotate() {
	s.t.Helper()
	Run(s.t, nil, TangdRotate, "-d", s.Dir)
}

// DropHidden deletes the hidden (rotated) keys: /rec for them is 404. The
// returned func puts them back, as a restore from a backup would.
func (s *Tang) DropHidden() (restore func()) {
	s.t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.Dir, ".*.jwk"))
	if len(files) == 0 {
		s.t.Fatal("no hidden keys to drop")
	}
	kept := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			s.t.Fatal(err)
		}
		kept[f] = b
		if err := os.Remove(f); err != nil {
			s.t.Fatal(err)
		}
	}
	return func() {
		s.t.Helper()
		for f, b := range kept {
			if err := os.WriteFile(f, b, 0o600); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

// HungServer accepts connections on 127.0.0.1 and never answers; it
// returns the URL.
func HungServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hang(l))
	return "http://" + l.Addr().String()
}

// RefusedURL is a 127.0.0.1 URL whose port refuses connections.
func RefusedURL(t testing.TB) string {
	return fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
}

// SWTPM is a running software TPM.
type SWTPM struct {
	t      testing.TB
	dir    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
}

// RequireTPMTools stops t unless swtpm and tpm2-tools are installed.
func RequireTPMTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"swtpm", "tpm2_createprimary", "tpm2_create", "tpm2_load", "tpm2_unseal", "tpm2_pcrread", "tpm2_pcrextend", "tpm2_flushcontext"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbin.Require(t, tool+" is not installed (apt-get install swtpm swtpm-tools tpm2-tools)")
		}
	}
}

// StartSWTPM starts a TPM on a fresh state directory.
func StartSWTPM(t testing.TB) *SWTPM {
	t.Helper()
	RequireTPMTools(t)
	s := &SWTPM{t: t, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// TCTI is how tpm2-tools reach it.
func (s *SWTPM) TCTI() string { return "swtpm:host=127.0.0.1,port=" + strconv.Itoa(s.port) }

func (s *SWTPM) start() {
	s.t.Helper()
	for i := range 10 {
		port := s.port
		if i > 0 || port == 0 {
			port = FreePort(s.t)
		}
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1)); err != nil {
			continue
		} else {
			l.Close()
		}
		cmd := exec.Command("swtpm", "socket", "--tpmstate", "dir="+s.dir, "--tpm2",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--flags", "not-need-init,startup-clear")
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("starting swtpm: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
			if err == nil {
				c.Close()
				s.port, s.cmd, s.exited = port, cmd, exited
				return
			}
			select {
			case <-exited:
				deadline = time.Time{}
			case <-time.After(20 * time.Millisecond):
			}
		}
		cmd.Process.Kill()
		<-exited
	}
	s.t.Fatal("swtpm did not start")
}

// Stop ends the TPM.
func (s *SWTPM) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // in case Freeze stopped it
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Freeze stops the TPM's process (SIGSTOP): connections are accepted by
// the kernel and never answered. Stop ends it anyway.
func (s *SWTPM) Freeze() {
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Reboot restarts the TPM on the same state: the PCRs are reset. It keeps
// its port unless that was taken meanwhile; read TCTI again.
func (s *SWTPM) Reboot() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Extend extends PCR pcr of the sha256 bank, as a firmware or kernel
// update does at the next boot.
func (s *SWTPM) Extend(pcr int) {
	s.t.Helper()
	s.Tool("tpm2_pcrextend", fmt.Sprintf("%d:sha256=%s", pcr, strings.Repeat("ab", 32)))
}

// Tool runs a tpm2-tools command against the TPM and returns its output;
// it fails the test on error.
func (s *SWTPM) Tool(name string, args ...string) []byte {
	s.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+s.TCTI())
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

// SlowProxy forwards connections on a new 127.0.0.1 port to target
// (host:port), holding each one delay before it forwards anything: a
// server that answers, late. It returns the proxy's URL.
func SlowProxy(t testing.TB, target string, delay time.Duration) string {
	t.Helper()
	p := StartProxy(t, target)
	p.mu.Lock()
	p.delay = delay
	p.mu.Unlock()
	return p.URL
}

// Proxy is someone on the plain-HTTP path to a server: it forwards each
// connection to the target, or, once Forge is called, answers every
// request itself.
type Proxy struct {
	URL    string
	target string
	mu     sync.Mutex
	delay  time.Duration
	forge  func(n int) string
	forged int
}

// StartProxy listens on a new 127.0.0.1 port and forwards to target
// (host:port) until told otherwise.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{URL: "http://" + l.Addr().String(), target: target}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return p
}

// Forge makes the proxy answer every request with reply(n) (the whole
// HTTP response), n counting the requests it answered; nil forwards again.
func (p *Proxy) Forge(reply func(n int) string) {
	p.mu.Lock()
	p.forge = reply
	p.mu.Unlock()
}

func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	p.mu.Lock()
	delay, forge := p.delay, p.forge
	if forge != nil {
		p.forged++
	}
	n := p.forged
	p.mu.Unlock()
	time.Sleep(delay)
	if forge != nil {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		io.WriteString(c, forge(n))
		return
	}
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer u.Close()
	go io.Copy(u, c)
	io.Copy(c, u)
}
