package main

// End-to-end tests: they build sealboxd (with -race when the tests run with
// it) and sealbox-admin, and drive them over real Unix sockets on a real
// bbolt file at the real Argon2id floor. Clients run as other uids through
// setpriv and curl, so peer credentials are the kernel's, not the test's.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

var daemonBin, adminBin string

func TestMain(m *testing.M) {
	// Race-built binaries otherwise sleep a second at exit.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	var err error
	if daemonBin, err = testbin.Build("sealboxd", testbin.Race); err == nil {
		adminBin, err = testbin.Build("sealbox-admin", false)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

const (
	pwAlice = "alice's long passphrase"
	pwBob   = "bob's own long passphrase"
	pwCarol = "carol's chosen passphrase"
	nobody  = 65534
	// A uid with no client record and no account: the kernel does not care.
	stranger = 65533
)

// masterSecret holds bytes a string search would trip on: NUL, 0xff, newline.
var masterSecret = []byte("db-password=\x00\xffS3cr3t-e2e-7c41\n")

// env is one test's keyring, sockets and daemon.
type env struct {
	t       *testing.T
	dir     string
	keyring string
	sock    string
	admSock string
	cmd     *exec.Cmd
	pid     int // the daemon's own pid (not a wrapper's such as strace)
	log     *syncBuffer
	exited  chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newEnv makes a world-traversable directory (other uids must reach the
// service socket) with a keyring holding admins alice and bob, the master
// secret above, and a client "svc" for uid nobody.
func newEnv(t *testing.T) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "sbx")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{t: t, dir: dir, keyring: filepath.Join(dir, "state", "keyring.db"),
		sock: filepath.Join(dir, "run", "sealbox.sock"), admSock: filepath.Join(dir, "run", "admin.sock")}
	sf := filepath.Join(dir, "secret.in")
	os.WriteFile(sf, masterSecret, 0o600)
	e.admin(0, pwAlice+"\n", "init", "--keyring", e.keyring, "--admin", "alice", "--secret-file", sf, "--kdf-time", "1ms")
	os.Remove(sf)
	e.admin(0, pwAlice+"\n"+pwBob+"\n", "--keyring", e.keyring, "add", "bob", "--as", "alice")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "svc", "--uid", strconv.Itoa(nobody), "--as", "alice")
	return e
}

type result struct {
	out  string
	code int
}

// admin runs sealbox-admin and checks its exit code.
func (e *env) admin(code int, stdin string, args ...string) result {
	e.t.Helper()
	r := runCmd(e.t, stdin, adminBin, args...)
	if r.code != code {
		e.t.Fatalf("sealbox-admin %v: exit %d, want %d\n%s", args, r.code, code, r.out)
	}
	return r
}

// online runs sealbox-admin against the daemon.
func (e *env) online(code int, stdin string, args ...string) result {
	e.t.Helper()
	return e.admin(code, stdin, append([]string{"--admin-socket", e.admSock}, args...)...)
}

func runCmd(t *testing.T, stdin, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	r := result{out: string(out)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return r
}

// start runs sealboxd (prefix wraps it, e.g. in prlimit or setpriv) and waits
// until it says it listens.
func (e *env) start(prefix []string, extra ...string) {
	e.t.Helper()
	e.startBin(daemonBin, prefix, extra...)
}

func (e *env) startBin(bin string, prefix []string, extra ...string) {
	e.t.Helper()
	args := append(append([]string{}, prefix...), bin, "--keyring", e.keyring, "--socket", e.sock, "--admin-socket", e.admSock)
	args = append(args, extra...)
	e.cmd = exec.Command(args[0], args[1:]...)
	e.log = &syncBuffer{}
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.exited = make(chan struct{})
	go func() { e.cmd.Wait(); close(e.exited) }()
	e.pid = e.cmd.Process.Pid
	e.t.Cleanup(func() { syscall.Kill(e.pid, syscall.SIGKILL); e.cmd.Process.Kill(); <-e.exited })
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-e.exited:
			e.t.Fatalf("sealboxd exited at start:\n%s", e.log.String())
		default:
		}
		if strings.Contains(e.log.String(), "listening, sealed") {
			if len(prefix) > 0 && prefix[0] == "strace" {
				e.pid = tracedChild(e.t, e.cmd.Process.Pid)
			}
			return
		}
	}
	e.t.Fatalf("sealboxd did not get ready:\n%s", e.log.String())
}

// tracedChild returns the pid of the process strace (pid) started.
func tracedChild(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	f := strings.Fields(string(b))
	if err != nil || len(f) != 1 {
		t.Fatalf("strace's children: %q %v", b, err)
	}
	child, _ := strconv.Atoi(f[0])
	return child
}

// stop sends sig to the daemon and waits for the exit code.
func (e *env) stop(sig syscall.Signal) int {
	e.t.Helper()
	syscall.Kill(e.pid, sig)
	select {
	case <-e.exited:
	case <-time.After(30 * time.Second):
		e.t.Fatalf("sealboxd did not exit on %v", sig)
	}
	return e.cmd.ProcessState.ExitCode()
}

// read fetches path from the service socket as uid (via setpriv), returning
// the HTTP status and body.
func (e *env) read(uid int, path string) (int, []byte) {
	e.t.Helper()
	out := filepath.Join(e.dir, fmt.Sprintf("body-%d-%d", uid, time.Now().UnixNano()))
	defer os.Remove(out)
	f, _ := os.OpenFile(out, os.O_CREATE|os.O_WRONLY, 0o666)
	f.Close()
	os.Chmod(out, 0o666)
	args := []string{"curl", "-s", "-o", out, "-w", "%{http_code}", "--max-time", "120", "--unix-socket", e.sock, "http://sealbox" + path}
	if uid != 0 {
		args = append([]string{"setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups"}, args...)
	}
	r := runCmd(e.t, "", args[0], args[1:]...)
	code, err := strconv.Atoi(strings.TrimSpace(r.out))
	if err != nil {
		e.t.Fatalf("curl as %d: %q (exit %d)", uid, r.out, r.code)
	}
	body, _ := os.ReadFile(out)
	return code, body
}

func (e *env) expectRead(uid int, wantCode int) []byte {
	e.t.Helper()
	code, body := e.read(uid, "/v1/secret")
	if code != wantCode {
		e.t.Fatalf("GET /v1/secret as uid %d: %d %q, want %d", uid, code, body, wantCode)
	}
	if wantCode != 200 && bytes.Contains(body, masterSecret[:12]) {
		e.t.Fatalf("a %d answer carried secret bytes", code)
	}
	return body
}

func requireRootTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as other uids (setpriv)")
	}
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (.ci/run installs it)", tool)
		}
	}
}

func procField(t *testing.T, pid int, file, prefix string) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			return sc.Text()
		}
	}
	t.Fatalf("no %q in /proc/%d/%s", prefix, pid, file)
	return ""
}

func TestDaemonEndToEnd(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	e.start(nil)

	// Sockets exist with their final modes.
	for path, mode := range map[string]os.FileMode{e.sock: 0o666, e.admSock: 0o600} {
		st, err := os.Lstat(path)
		if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want a socket of mode %v", path, st.Mode(), err, mode)
		}
	}

	// Sealed: the registered client gets 503; unregistered peers, root
	// included, get 403.
	e.expectRead(nobody, 503)
	e.expectRead(stranger, 403)
	e.expectRead(0, 403)
	if st := e.online(0, "", "status", "--json").out; !strings.Contains(st, `"sealed": true`) {
		t.Fatalf("status: %s", st)
	}

	// A wrong password changes nothing.
	r := e.online(3, "not bob's password\n", "unseal", "--admin", "bob")
	if !strings.Contains(r.out, "wrong admin name or password") {
		t.Fatalf("wrong password: %s", r.out)
	}
	e.expectRead(nobody, 503)

	// A reader long-polling while sealed gets the secret once bob unseals.
	type polled struct {
		code int
		body []byte
		at   time.Time
	}
	pollc := make(chan polled, 1)
	pollStart := time.Now()
	go func() {
		code, body := e.read(nobody, "/v1/secret?wait=60s")
		pollc <- polled{code, body, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // let the poll reach the daemon
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	unsealedAt := time.Now()
	p := <-pollc
	if p.code != 200 || !bytes.Equal(p.body, masterSecret) {
		t.Fatalf("long poll: %d %q", p.code, p.body)
	}
	if p.at.Sub(pollStart) >= 60*time.Second {
		t.Fatal("long poll ran into its timeout instead of waking on unseal")
	}
	t.Logf("long poll answered %v after the unseal command returned", p.at.Sub(unsealedAt).Round(time.Millisecond))

	// The registered client reads exactly the master secret; others nothing.
	if body := e.expectRead(nobody, 200); !bytes.Equal(body, masterSecret) {
		t.Fatalf("secret %q, want %q", body, masterSecret)
	}
	e.expectRead(stranger, 403)
	e.expectRead(0, 403)

	// Locked memory, no core dumps.
	pid := e.pid
	lck := strings.Fields(procField(t, pid, "status", "VmLck:"))
	if n, _ := strconv.Atoi(lck[1]); n <= 0 {
		t.Fatalf("VmLck %v after unseal", lck)
	}
	if core := strings.Fields(procField(t, pid, "limits", "Max core file size")); core[4] != "0" || core[5] != "0" {
		t.Fatalf("core limit %v", core)
	}

	// Disabling a client takes effect at once, without a restart.
	e.online(0, pwAlice+"\n", "client", "disable", "svc", "--as", "alice")
	e.expectRead(nobody, 403)
	e.online(0, pwAlice+"\n", "client", "enable", "svc", "--as", "alice")
	e.expectRead(nobody, 200)

	// Admin changes through the daemon take effect at once.
	e.online(0, pwAlice+"\n"+pwCarol+"\n", "add", "carol", "--as", "alice")
	e.online(0, pwCarol+"\n", "remove", "bob", "--as", "carol")
	if l := e.online(0, "", "list").out; strings.Contains(l, "bob") || !strings.Contains(l, "carol") {
		t.Fatalf("list after add/remove:\n%s", l)
	}
	e.online(0, "", "seal")
	e.expectRead(nobody, 503)
	e.online(3, pwBob+"\n", "unseal", "--admin", "bob")
	e.online(0, pwCarol+"\n", "unseal", "--admin", "carol")
	e.expectRead(nobody, 200)
	e.online(4, pwCarol+"\n", "unseal", "--admin", "carol") // already unseal

	// Seal, then SIGTERM: exit 0, socket files removed.
	e.online(0, "", "seal")
	e.expectRead(nobody, 503)
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM exit %d\n%s", code, e.log.String())
	}
	for _, s := range []string{e.sock, e.admSock} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind after SIGTERM", s)
		}
	}
	logs := e.log.String()

	// A restart starts sealed.
	e.start(nil)
	e.expectRead(nobody, 503)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.expectRead(nobody, 200)
	// SIGKILL leaves stale socket files; the next start replaces them.
	e.stop(syscall.SIGKILL)
	if _, err := os.Lstat(e.sock); err != nil {
		t.Fatalf("expected a stale socket after SIGKILL: %v", err)
	}
	e.start(nil)
	e.expectRead(nobody, 503)
	logs += e.log.String()

	// The secret and the passwords appear nowhere in the daemon's output.
	for _, needle := range []string{string(masterSecret), "S3cr3t", hex.EncodeToString(masterSecret), pwAlice, pwBob, pwCarol} {
		if strings.Contains(logs, needle) {
			t.Fatalf("daemon log contains %q", needle)
		}
	}
	if !strings.Contains(logs, "outcome=served") || !strings.Contains(logs, "outcome=refused") {
		t.Fatalf("reads are not logged:\n%s", logs)
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	// Same keyring: bbolt's lock, a clear error within the open timeout.
	other := filepath.Join(e.dir, "other")
	r := runCmd(t, "", daemonBin, "--keyring", e.keyring, "--socket", other+".sock", "--admin-socket", other+".adm")
	if r.code != 1 || !strings.Contains(r.out, "in use by another process") {
		t.Fatalf("second daemon on the keyring: exit %d\n%s", r.code, r.out)
	}
	// Another keyring on the same sockets: the live socket is not stolen.
	e2 := newEnv(t)
	r = runCmd(t, "", daemonBin, "--keyring", e2.keyring, "--socket", e.sock, "--admin-socket", e2.admSock)
	if r.code != 1 || !strings.Contains(r.out, "another process is listening") {
		t.Fatalf("second daemon on the socket: exit %d\n%s", r.code, r.out)
	}
	e.online(0, "", "status")
	// A regular file where a socket should go is never removed.
	os.MkdirAll(filepath.Dir(e2.sock), 0o755)
	os.WriteFile(e2.sock, []byte("keep me"), 0o600)
	r = runCmd(t, "", daemonBin, "--keyring", e2.keyring, "--socket", e2.sock, "--admin-socket", e2.admSock)
	if r.code != 1 || !strings.Contains(r.out, "not a socket") {
		t.Fatalf("file in the socket's place: exit %d\n%s", r.code, r.out)
	}
	if b, _ := os.ReadFile(e2.sock); string(b) != "keep me" {
		t.Fatal("the file was replaced")
	}
	// Missing keyring: says how to make one.
	r = runCmd(t, "", daemonBin, "--keyring", filepath.Join(e.dir, "none.db"), "--socket", other+"3.sock", "--admin-socket", other+"3.adm")
	if r.code != 1 || !strings.Contains(r.out, "sealbox-admin init") {
		t.Fatalf("missing keyring: exit %d\n%s", r.code, r.out)
	}
}

func TestMlockFailureNamesTheFix(t *testing.T) {
	requireRootTools(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("needs prlimit (util-linux)")
	}
	t.Parallel()
	e := newEnv(t)
	// The daemon runs as nobody (no CAP_IPC_LOCK) with RLIMIT_MEMLOCK 0.
	os.MkdirAll(filepath.Dir(e.sock), 0o755)
	for _, p := range []string{filepath.Dir(e.keyring), e.keyring, filepath.Dir(e.sock)} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	asNobody := []string{"prlimit", "--memlock=0:0", "--", "setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups"}
	e.start(asNobody)
	r := e.online(1, pwAlice+"\n", "unseal", "--admin", "alice")
	if !strings.Contains(r.out, "LimitMEMLOCK") || !strings.Contains(r.out, "CAP_IPC_LOCK") {
		t.Fatalf("mlock failure message: %s", r.out)
	}
	e.expectRead(nobody, 503)
	e.stop(syscall.SIGTERM)

	// Allowed explicitly in the config: unseal works, and status says so.
	cfg := filepath.Join(e.dir, "sealboxd.toml")
	os.WriteFile(cfg, []byte("allow_unlocked_memory = true\n"), 0o644)
	e.start(asNobody, "--config", cfg)
	r = e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	if !strings.Contains(r.out, "NOT locked") {
		t.Fatalf("unlocked unseal did not warn: %s", r.out)
	}
	var st struct {
		Sealed       bool `json:"sealed"`
		MemoryLocked bool `json:"memory_locked"`
		Allow        bool `json:"allow_unlocked_memory"`
	}
	json.Unmarshal([]byte(e.online(0, "", "status", "--json").out), &st)
	if st.Sealed || st.MemoryLocked || !st.Allow {
		t.Fatalf("status %+v", st)
	}
	if body := e.expectRead(nobody, 200); !bytes.Equal(body, masterSecret) {
		t.Fatalf("secret %q", body)
	}
}

// unixClient is an HTTP client on a Unix socket, as the test's own uid.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Register the test's own uid so the service socket answers it.
	uid := strconv.Itoa(os.Geteuid())
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "tester", "--uid", uid, "--as", "alice")
	e.start(nil)
	svc, adm := unixClient(e.sock), unixClient(e.admSock)
	cases := []struct {
		name   string
		c      *http.Client
		method string
		path   string
		body   string
		want   int
	}{
		{"unknown path", svc, "GET", "/v1/nope", "", 404},
		{"post to secret", svc, "POST", "/v1/secret", "x", 405},
		{"bad wait", svc, "GET", "/v1/secret?wait=soon", "", 400},
		{"negative wait", svc, "GET", "/v1/secret?wait=-1s", "", 400},
		{"sealed", svc, "GET", "/v1/secret", "", 503},
		{"admin op on service socket", svc, "POST", "/v1/unseal", `{}`, 404},
		{"malformed json", adm, "POST", "/v1/unseal", `{"admin":`, 400},
		{"unknown field", adm, "POST", "/v1/unseal", `{"admin":"alice","pwd":"x"}`, 400},
		{"trailing data", adm, "POST", "/v1/unseal", `{"admin":"alice"} {}`, 400},
		{"oversized body", adm, "POST", "/v1/unseal", `{"admin":"` + strings.Repeat("a", 20<<10) + `"}`, 400},
		{"unknown admin", adm, "POST", "/v1/unseal", `{"admin":"zed","password":"` + "eHh4eHh4eHh4eHh4" + `"}`, 401},
		{"nul in name", adm, "POST", "/v1/admins/a%00b/remove", `{"actor":"alice","actor_password":"eA=="}`, 401},
		{"client without uid", adm, "POST", "/v1/clients", `{"actor":"alice","actor_password":"eA==","name":"x"}`, 400},
		{"bad action", adm, "POST", "/v1/clients/tester/explode", `{}`, 404},
		{"GET on a change", adm, "GET", "/v1/unseal", "", 405},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, "http://sealbox"+c.path, strings.NewReader(c.body))
		resp, err := c.c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, body, c.want)
		}
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 && ct != "application/json" {
			t.Errorf("%s: error answer of type %q", c.name, ct)
		}
	}
	// Nothing above changed the keyring or the state.
	if st := e.online(0, "", "status", "--json").out; !strings.Contains(st, `"sealed": true`) || !strings.Contains(st, `"admins": 2`) {
		t.Fatalf("state after bad requests: %s", st)
	}
}

func TestUnitExposureScore(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (.ci/run installs it)")
	}
	unit, _ := filepath.Abs(filepath.Join("..", "..", "sealboxd.service"))
	r := runCmd(t, "", "systemd-analyze", "security", "--offline=yes", "--no-pager", unit)
	m := regexp.MustCompile(`Overall exposure level for sealboxd.service: ([0-9.]+)`).FindStringSubmatch(r.out)
	if m == nil {
		t.Fatalf("no score in:\n%s", r.out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("exposure %.1f", score)
	if score > 1.0 {
		t.Fatalf("exposure %.1f > 1.0:\n%s", score, r.out)
	}
	// The directives the daemon's correctness depends on.
	raw, _ := os.ReadFile(unit)
	for _, want := range []string{"Type=notify", "LimitCORE=0", "LimitMEMLOCK=", "MemorySwapMax=0", "RestrictAddressFamilies=AF_UNIX", "User=sealbox"} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("unit lacks %s", want)
		}
	}
	if bytes.Contains(raw, []byte("\nPrivateUsers=yes")) {
		t.Error("PrivateUsers=yes would map every client uid to nobody")
	}
}

// TestDaemonSyscallsWithinUnitFilter traces every system call a full daemon
// session makes and checks each against the unit's SystemCallFilter= lines,
// expanded by systemd-analyze: a call outside the filter would kill the
// daemon under systemd (SIGSYS), where no other test here can run it.
func TestDaemonSyscallsWithinUnitFilter(t *testing.T) {
	for _, tool := range []string{"strace", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (.ci/run installs it)", tool)
		}
	}
	requireRootTools(t)
	t.Parallel()
	plain, err := testbin.Build("sealboxd", false) // the race runtime makes calls production does not
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	trace := filepath.Join(e.dir, "trace")
	e.startBin(plain, []string{"strace", "-f", "-qq", "-o", trace})
	e.expectRead(nobody, 503)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.expectRead(nobody, 200)
	e.read(nobody, "/v1/status?wait=1s")
	e.online(0, pwAlice+"\n", "client", "disable", "svc", "--as", "alice")
	e.online(0, pwAlice+"\n"+pwCarol+"\n", "add", "carol", "--as", "alice")
	e.online(0, "", "seal")
	syscall.Kill(e.pid, syscall.SIGHUP)
	time.Sleep(200 * time.Millisecond)
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d:\n%s", code, e.log.String())
	}
	raw, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\d+\s+([a-z0-9_]+)\(`).FindAllStringSubmatch(string(raw), -1) {
		used[m[1]] = true
	}
	if !used["mlock"] || !used["accept4"] {
		t.Fatalf("trace looks incomplete: %d calls, mlock %v accept4 %v", len(used), used["mlock"], used["accept4"])
	}
	unit, _ := os.ReadFile(filepath.Join("..", "..", "sealboxd.service"))
	allow, deny := map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(string(unit), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "SystemCallFilter=")
		if !ok {
			continue
		}
		set := allow
		if strings.HasPrefix(v, "~") {
			set, v = deny, v[1:]
		}
		for _, item := range strings.Fields(v) {
			expandFilter(t, item, set)
		}
	}
	var bad []string
	for call := range used {
		if !allow[call] || deny[call] {
			bad = append(bad, fmt.Sprintf("%s (allowed %v, denied %v)", call, allow[call], deny[call]))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("system calls the unit's filter would kill the daemon for: %v", bad)
	}
	t.Logf("%d distinct system calls, all within the unit's filter", len(used))
}

// expandFilter adds a syscall or a @group (recursively) to set.
func expandFilter(t *testing.T, item string, set map[string]bool) {
	t.Helper()
	if !strings.HasPrefix(item, "@") {
		set[item] = true
		return
	}
	r := runCmd(t, "", "systemd-analyze", "syscall-filter", "--no-pager", item)
	if r.code != 0 {
		t.Fatalf("systemd-analyze syscall-filter %s: %s", item, r.out)
	}
	for _, line := range strings.Split(r.out, "\n") {
		f := strings.TrimSpace(line)
		if f == "" || strings.HasPrefix(f, "#") || strings.Contains(f, " ") || f == item {
			continue
		}
		if strings.HasPrefix(f, "@") {
			expandFilter(t, f, set)
		} else {
			set[f] = true
		}
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := filepath.Join(e.dir, "sealboxd.toml")
	os.WriteFile(cfg, []byte("log_level = \"info\"\nmax_wait = \"1s\"\n"), 0o644)
	e.start(nil, "--config", cfg)
	os.WriteFile(cfg, []byte("log_level = \"debug\"\nmax_wait = \"2m\"\n"), 0o644)
	syscall.Kill(e.pid, syscall.SIGHUP)
	waitLog(t, e, "reloaded log_level=debug max_wait=2m0s")
	// A broken file on reload: logged, the running configuration stays.
	os.WriteFile(cfg, []byte("log_levle = \"debug\"\n"), 0o644)
	syscall.Kill(e.pid, syscall.SIGHUP)
	waitLog(t, e, "reload failed")
	if !strings.Contains(e.log.String(), "log_levle") {
		t.Fatalf("the reload error does not name the bad key:\n%s", e.log.String())
	}
	e.online(0, "", "status")
	if code := e.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("SIGINT exit %d", code)
	}
}

func waitLog(t *testing.T, e *env, want string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(e.log.String(), want) {
			return
		}
	}
	t.Fatalf("log never said %q:\n%s", want, e.log.String())
}

func TestAuditTrailAndTamperDetection(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	e.expectRead(nobody, 503)
	e.expectRead(stranger, 403)
	e.online(3, "not alice's password\n", "unseal", "--admin", "alice")
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.expectRead(nobody, 200)
	e.online(0, pwAlice+"\n", "client", "disable", "svc", "--as", "alice")
	e.expectRead(nobody, 403)
	e.online(0, "", "seal")

	r := e.online(0, "", "audit", "--json")
	var recs []struct {
		Seq   uint64
		Keyed bool
		Event struct {
			Kind, Outcome, Actor, Target, Client, Detail string
			Peer                                         *struct{ UID uint32 }
		}
	}
	if err := json.Unmarshal([]byte(r.out), &recs); err != nil {
		t.Fatalf("%v: %s", err, r.out)
	}
	seen := map[string]bool{}
	for _, rec := range recs {
		ev := rec.Event
		seen[ev.Kind+"/"+ev.Outcome+"/"+ev.Client+ev.Actor] = true
		if ev.Kind == "read" && ev.Client == "" && ev.Peer != nil && ev.Peer.UID != stranger {
			t.Errorf("a refused read names no client and uid %d", ev.Peer.UID)
		}
	}
	for _, want := range []string{
		"read/sealed/svc", "read/refused/", "unseal/wrong_password/alice", "unseal/ok/alice",
		"read/served/svc", "client.disable/ok/alice", "read/refused/svc", "seal/ok/",
	} {
		if !seen[want] {
			t.Errorf("no %s record in:\n%s", want, r.out)
		}
	}
	if strings.Contains(r.out, pwAlice) || strings.Contains(r.out, "S3cr3t") {
		t.Fatal("the audit log holds a password or the secret")
	}
	e.online(0, "", "audit", "verify")
	e.online(0, "", "audit", "--client", "svc", "--limit", "2")
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatal(code)
	}

	// Offline: the chain verifies with an admin's password...
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "audit", "verify", "--as", "alice")
	// ...and a record deleted behind sealbox's back is named.
	deleteAuditRecord(t, e.keyring, 4)
	r = e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "audit", "verify", "--as", "alice")
	if !strings.Contains(r.out, "record 4") || !strings.Contains(r.out, "missing") {
		t.Fatalf("tampered audit log: %s", r.out)
	}
}

// deleteAuditRecord removes one record straight from the bbolt file.
func deleteAuditRecord(t *testing.T, path string, seq uint64) {
	t.Helper()
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	err = kr.Update(func(tx *keyring.Tx) error {
		var keep = map[uint64][]byte{}
		tx.AuditRecords(0, func(s uint64, raw []byte) bool {
			if s != seq {
				keep[s] = append([]byte(nil), raw...)
			}
			return true
		})
		if err := tx.DeleteAuditBefore(1 << 62); err != nil {
			return err
		}
		for s, raw := range keep {
			if err := tx.PutAudit(s, raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBackoffSurvivesRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	for i := 0; i < 3; i++ {
		e.online(3, "not bob's password\n", "unseal", "--admin", "bob")
	}
	r := e.online(8, pwBob+"\n", "unseal", "--admin", "bob")
	if !strings.Contains(r.out, "try again in 1s") {
		t.Fatalf("backoff message: %s", r.out)
	}
	// Each further failure doubles the wait; push it to 8s so that a restart
	// cannot outlast it, waiting out each step as Retry-After says.
	adm := unixClient(e.admSock)
	unseal := func(pw string) (int, int) {
		resp, err := adm.Post("http://sealbox/v1/unseal", "application/json",
			strings.NewReader(`{"admin":"bob","password":"`+b64(pw)+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return resp.StatusCode, retry
	}
	for failures := 3; failures < 6; {
		code, retry := unseal("not bob's password")
		switch code {
		case 429:
			if retry < 1 {
				t.Fatalf("429 without Retry-After")
			}
			time.Sleep(time.Duration(retry) * time.Second)
		case 401:
			failures++
		default:
			t.Fatalf("unexpected %d", code)
		}
	}
	code, retry := unseal(pwBob)
	if code != 429 || retry < 7 {
		t.Fatalf("after 6 failures: %d, Retry-After %d, want 429 and about 8s", code, retry)
	}
	deadline := time.Now().Add(time.Duration(retry) * time.Second)
	e.stop(syscall.SIGTERM)
	e.start(nil)
	if time.Now().After(deadline) {
		t.Skip("the restart took longer than the backoff; the machine is too loaded to tell")
	}
	e.online(8, pwBob+"\n", "unseal", "--admin", "bob")
	// Another admin is not held back by bob's failures.
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestBudgetSmallerThanOneDerivationRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := filepath.Join(e.dir, "small.toml")
	os.WriteFile(cfg, []byte("kdf_memory_budget_mib = 32\n"), 0o644)
	r := runCmd(t, "", daemonBin, "--config", cfg, "--keyring", e.keyring, "--socket", e.sock, "--admin-socket", e.admSock)
	if r.code != 1 || !strings.Contains(r.out, "smaller than one derivation") {
		t.Fatalf("exit %d: %s", r.code, r.out)
	}
}

// TestKDFBudgetBoundsPeakMemory sends 50 concurrent wrong unseals to a daemon
// with a 128 MiB budget (two derivations of 64 MiB) and checks its peak RSS
// (VmHWM) stays under the budget plus a fixed margin: derivations queue or
// are refused, and never pile up.
func TestKDFBudgetBoundsPeakMemory(t *testing.T) {
	t.Parallel()
	plain, err := testbin.Build("sealboxd", false) // the race runtime's shadow memory would swamp the figure
	if err != nil {
		t.Fatal(err)
	}
	const budgetMiB, marginMiB = 128, 112
	e := newEnv(t)
	cfg := filepath.Join(e.dir, "budget.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("kdf_memory_budget_mib = %d\n", budgetMiB)), 0o644)
	e.startBin(plain, nil, "--config", cfg)
	adm := unixClient(e.admSock)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Distinct names: per-name backoff must not cut the storm short.
			body := fmt.Sprintf(`{"admin":"guess%02d","password":"%s"}`, i, b64("wrong password here"))
			resp, err := adm.Post("http://sealbox/v1/unseal", "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	hwm := strings.Fields(procField(t, e.pid, "status", "VmHWM:"))
	peakKiB, _ := strconv.Atoi(hwm[1])
	t.Logf("50 concurrent wrong unseals: answers %v, peak RSS %d MiB (budget %d MiB + margin %d MiB)", codes, peakKiB>>10, budgetMiB, marginMiB)
	if codes[401]+codes[503]+codes[429] != 50 || codes[401] == 0 {
		t.Fatalf("answers %v: want only 401 (derived), 503 (budget queue full) and 429 (backoff)", codes)
	}
	if peakKiB > (budgetMiB+marginMiB)<<10 {
		t.Fatalf("peak RSS %d MiB exceeds budget %d MiB + margin %d MiB", peakKiB>>10, budgetMiB, marginMiB)
	}
	// Still alive and answering.
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
}

func TestMakeInstallAndUninstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("needs make")
	}
	t.Parallel()
	stage, bin := t.TempDir(), t.TempDir()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	makeIt := func(target string) string {
		cmd := exec.Command("make", "-C", root, target, "DESTDIR="+stage, "PREFIX=/usr", "BIN="+bin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	makeIt("install")
	for path, mode := range map[string]os.FileMode{
		"usr/bin/sealboxd": 0o755, "usr/bin/sealbox-admin": 0o755, "usr/bin/sealbox": 0o755,
		"etc/systemd/system/sealboxd.service": 0o644, "etc/sealbox/sealboxd.toml": 0o644,
		"usr/lib/sysusers.d/sealbox.conf": 0o644, "usr/share/doc/sealbox/operations.md": 0o644,
	} {
		st, err := os.Stat(filepath.Join(stage, path))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, st, err, mode)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(stage, "etc/systemd/system/sealboxd.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/sealboxd --config /etc/sealbox/sealboxd.toml") {
		t.Errorf("unit ExecStart not adjusted to PREFIX:\n%s", unit)
	}
	if su, _ := os.ReadFile(filepath.Join(stage, "usr/lib/sysusers.d/sealbox.conf")); !strings.HasPrefix(string(su), "u sealbox ") {
		t.Errorf("sysusers entry: %q", su)
	}
	// An operator's configuration survives a reinstall and an uninstall.
	cfg := filepath.Join(stage, "etc/sealbox/sealboxd.toml")
	os.WriteFile(cfg, []byte("log_level = \"debug\"\n"), 0o644)
	if out := makeIt("install"); !strings.Contains(out, "keeping") {
		t.Errorf("reinstall did not say it kept the config:\n%s", out)
	}
	makeIt("uninstall")
	if b, _ := os.ReadFile(cfg); string(b) != "log_level = \"debug\"\n" {
		t.Errorf("config after uninstall: %q", b)
	}
	for _, gone := range []string{"usr/bin/sealboxd", "etc/systemd/system/sealboxd.service", "usr/share/doc/sealbox"} {
		if _, err := os.Stat(filepath.Join(stage, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after uninstall", gone)
		}
	}
}

func codeIn(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if len(line) == 39 && strings.Count(line, "-") == 7 {
			return line
		}
	}
	t.Fatalf("no code in:\n%s", out)
	return ""
}

func TestLifecycleThroughTheDaemon(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	e.start(nil)

	// Invite carol and let her enroll, all through the daemon.
	code := codeIn(t, e.online(0, pwAlice+"\n", "invite", "carol", "--as", "alice").out)
	e.online(3, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH\n"+pwCarol+"\n", "enroll", "carol")
	e.online(0, code+"\n"+pwCarol+"\n", "enroll", "carol")
	e.online(3, code+"\n"+pwCarol+"\n", "enroll", "carol")
	e.online(0, pwCarol+"\n", "unseal", "--admin", "carol")
	e.online(0, "", "seal")
	// A password change through the daemon: the old one stops working.
	e.online(0, pwCarol+"\n"+"carol's second passphrase\n", "passwd", "carol")
	e.online(3, pwCarol+"\n", "unseal", "--admin", "carol")
	e.online(0, "carol's second passphrase\n"+pwCarol+"\n", "passwd", "carol")

	// The recovery code unseals, and the audit log says it was the code.
	recovery := codeIn(t, e.online(0, pwAlice+"\n", "recovery", "regenerate", "--as", "alice").out)
	e.online(0, recovery+"\n", "unseal", "--recovery")
	if body := e.expectRead(nobody, 200); !bytes.Equal(body, masterSecret) {
		t.Fatalf("after recovery unseal: %q", body)
	}
	if a := e.online(0, "", "audit", "--admin", "recovery").out; !strings.Contains(a, "unseal          ok       actor=recovery detail=recovery code") {
		t.Fatalf("recovery unseal not audited as such:\n%s", a)
	}

	// Rotate: the client reads the new value at once.
	next := filepath.Join(e.dir, "next")
	os.WriteFile(next, []byte("rotated while serving"), 0o600)
	e.online(0, pwAlice+"\n", "rotate", "--as", "alice", "--secret-file", next)
	if body := e.expectRead(nobody, 200); string(body) != "rotated while serving" {
		t.Fatalf("after rotate: %q", body)
	}

	// Bob keeps a backup while he is an admin, then is removed, and alice
	// rekeys and rotates.
	copyPath := filepath.Join(e.dir, "bobs-copy.db")
	e.online(0, "", "backup", "--to", copyPath)
	if st, err := os.Stat(copyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("online backup: %v %v", st, err)
	}
	e.online(0, pwAlice+"\n", "remove", "bob", "--as", "alice", "--rekey")
	e.online(0, pwAlice+"\n", "rotate", "--as", "alice")
	e.online(0, "", "audit", "verify")
	served := e.expectRead(nobody, 200)
	if len(served) != 32 {
		t.Fatalf("after the random rotate: %d bytes", len(served))
	}
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatal(code)
	}

	// Bob's password and his copy give him the old DataKey, which opens
	// nothing in the keyring now.
	okr, err := keyring.Open(copyPath, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var oldKey *unseal.Key
	okr.View(func(tx *keyring.Tx) error {
		h, _ := tx.Header()
		s, serr := tx.Slot("bob")
		if serr != nil {
			t.Fatal(serr)
		}
		oldKey, err = unseal.OpenSlot(h, s, []byte(pwBob), memlock.Options{AllowUnlocked: true})
		return nil
	})
	okr.Close()
	if err != nil {
		t.Fatalf("bob on his copy: %v", err)
	}
	defer oldKey.Destroy()
	kr, err := keyring.Open(e.keyring, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	kr.View(func(tx *keyring.Tx) error {
		sec, _ := tx.Secret()
		if b, err := oldKey.DecryptSecret(sec, memlock.Options{AllowUnlocked: true}); err == nil {
			b.Destroy()
			t.Error("the old DataKey decrypts the secret written after the rekey")
		}
		return nil
	})
	kr.Close()

	// After a restart, carol (absent at the rekey) unseals with her
	// unchanged password; the client gets the rotated secret.
	e.start(nil)
	e.online(3, pwBob+"\n", "unseal", "--admin", "bob")
	e.online(0, pwCarol+"\n", "unseal", "--admin", "carol")
	if body := e.expectRead(nobody, 200); !bytes.Equal(body, served) {
		t.Fatal("after the restart the client reads another value")
	}
	st := e.online(0, "", "status", "--json").out
	if !strings.Contains(st, `"recovery_code": true`) || !strings.Contains(st, `"slots"`) {
		t.Fatalf("status: %s", st)
	}
	e.online(0, "", "audit", "verify")
}
