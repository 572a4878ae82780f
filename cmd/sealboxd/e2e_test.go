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

	"github.com/sealbox/sealbox/admin/api"

	bolt "go.etcd.io/bbolt"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/internal/testdaemon"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

var daemonBin, adminBin string

func TestMain(m *testing.M) {
	if sock := os.Getenv("SEALBOX_TEST_FLOOD"); sock != "" {
		os.Exit(flood(sock)) // this binary, re-run as another uid: hostile_test.go
	}
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
	proc    *testdaemon.Process
	pid     int // the daemon's own pid (not a wrapper's such as strace)
	log     *testdaemon.Buffer
}

type syncBuffer = testdaemon.Buffer

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
	args := append([]string{"--keyring", e.keyring, "--socket", e.sock, "--admin-socket", e.admSock}, extra...)
	p, err := testdaemon.Start(testdaemon.Options{Bin: bin, Prefix: prefix, Args: args})
	if err != nil {
		e.t.Fatal(err)
	}
	e.proc, e.pid, e.log = p, p.PID, p.Log
	e.t.Cleanup(p.Kill)
}

// stop sends sig to the daemon and waits for the exit code.
func (e *env) stop(sig syscall.Signal) int {
	e.t.Helper()
	code, err := e.proc.Stop(sig, 30*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	return code
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
	if st := e.online(7, "", "status", "--json").out; !strings.Contains(st, `"sealed": true`) {
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
	// Already unsealed: nothing to do, nothing derived, exit 0.
	if r := e.online(0, "not carol's password\n", "unseal", "--admin", "carol"); !strings.Contains(r.out, "already unsealed") {
		t.Fatalf("unseal of an unsealed daemon: %+v", r)
	}

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
	// Reads and refusals are in the audit log (checked above); the daemon's
	// log at info has none of them, so that a flood of refusals cannot flood
	// it.
	if strings.Contains(logs, "outcome=served") || strings.Contains(logs, "outcome=refused") {
		t.Fatalf("reads are logged at info:\n%s", logs)
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
	e.online(7, "", "status")
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
		{"oversized body", adm, "POST", "/v1/unseal", `{"admin":"` + strings.Repeat("a", 20<<10) + `"}`, 413},
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
	if st := e.online(7, "", "status", "--json").out; !strings.Contains(st, `"sealed": true`) || !strings.Contains(st, `"admins": 2`) {
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
	e.online(7, "", "status")
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
	reads := e.online(0, "", "audit", "--reads", "--json")
	r.out = strings.TrimSuffix(strings.TrimSpace(r.out), "]") + "," + strings.TrimPrefix(strings.TrimSpace(reads.out), "[")
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
	editFile(t, path, func(tx *keyring.Tx) error { return deleteAuditRecordTx(tx, keyring.Events, seq) })
}

func TestBackoffSurvivesRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
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
	// Three free failures, then each doubles the wait. Push it to 8s,
	// waiting out each step as Retry-After says, so that nothing below
	// depends on a short window on a loaded machine.
	for failures := 0; failures < 6; {
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
	// The CLI says when to try again, and exits 8.
	r := e.online(8, pwBob+"\n", "unseal", "--admin", "bob")
	if !strings.Contains(r.out, "try again in") {
		t.Fatalf("backoff message: %s", r.out)
	}
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
		testbin.Require(t, "needs make")
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
		// With DESTDIR (a package), units go where packages put them.
		"usr/lib/systemd/system/sealboxd.service": 0o644, "etc/sealbox/sealboxd.toml": 0o644,
		"usr/lib/sysusers.d/sealbox.conf": 0o644, "usr/lib/tmpfiles.d/sealbox.conf": 0o644,
		"usr/share/doc/sealbox/operations.md": 0o644,
		"usr/share/man/man8/sealbox-admin.8":  0o644, "usr/share/man/man5/sealboxd.toml.5": 0o644,
		"usr/share/man/man1/sealbox.1":                        0o644,
		"usr/share/bash-completion/completions/sealbox-admin": 0o644,
		"usr/share/zsh/vendor-completions/_sealbox-admin":     0o644,
		"usr/share/fish/vendor_completions.d/sealbox.fish":    0o644,
	} {
		st, err := os.Stat(filepath.Join(stage, path))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, st, err, mode)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(stage, "usr/lib/systemd/system/sealboxd.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/sealboxd --config /etc/sealbox/sealboxd.toml") {
		t.Errorf("unit ExecStart not adjusted to PREFIX:\n%s", unit)
	}
	if su, _ := os.ReadFile(filepath.Join(stage, "usr/lib/sysusers.d/sealbox.conf")); !strings.Contains(string(su), "\nu sealbox ") {
		t.Errorf("sysusers entry: %q", su)
	}
	if tf, _ := os.ReadFile(filepath.Join(stage, "usr/lib/tmpfiles.d/sealbox.conf")); !strings.Contains(string(tf), "\nd /var/lib/sealbox 0700 sealbox sealbox -") {
		t.Errorf("tmpfiles entry: %q", tf)
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
	for _, gone := range []string{"usr/bin/sealboxd", "usr/lib/systemd/system/sealboxd.service", "usr/share/doc/sealbox",
		"usr/share/man/man8/sealboxd.8", "usr/share/bash-completion/completions/sealbox", "usr/lib/tmpfiles.d/sealbox.conf"} {
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

// reader hammers the service socket from conns goroutines until stop or
// until total reads are done, and checks every answer with ok.
func reader(t *testing.T, sock string, conns, total int, stop <-chan struct{}, ok func(code int, body []byte) bool) (served, sealed int64, errs []string) {
	c := unixClient(sock)
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = conns
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < conns; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; total == 0 || i < total/conns; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("http://sealbox/v1/secret")
				var body []byte
				code := 0
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err.Error())
				case !ok(code, body):
					errs = append(errs, fmt.Sprintf("%d %q", code, body))
				case code == 200:
					served++
				default:
					sealed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return
}

// TestSoakReads: N reads (SEALBOX_SOAK_READS, default 20,000; make soak:
// 1,000,000) over 64 keep-alive connections, zero errors, and the daemon's
// own memory flat after warm-up.
func TestSoakReads(t *testing.T) {
	t.Parallel()
	total := 20000
	if v := os.Getenv("SEALBOX_SOAK_READS"); v != "" {
		total, _ = strconv.Atoi(v)
	}
	plain, err := testbin.Build("sealboxd", false) // throughput, not race hunting
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "tester", "--uid", strconv.Itoa(os.Geteuid()), "--as", "alice")
	e.startBin(plain, nil)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	exact := func(code int, body []byte) bool { return code == 200 && bytes.Equal(body, masterSecret) }
	start := time.Now()
	_, _, errs := reader(t, e.sock, 64, total/10, nil, exact) // warm-up
	// The unseal's Argon2id memory goes back once the daemon idled 5 s.
	time.Sleep(6 * time.Second)
	warm := rssKiB(t, e.pid, "RssAnon")
	served, _, errs2 := reader(t, e.sock, 64, total-total/10, nil, exact)
	end := rssKiB(t, e.pid, "RssAnon")
	errs = append(errs, errs2...)
	peak := rssKiB(t, e.pid, "VmHWM")
	t.Logf("%d reads over 64 connections in %v: %d errors; daemon's own memory %d KiB after warm-up, %d KiB at the end; peak RSS %d KiB",
		total, time.Since(start).Round(time.Millisecond), len(errs), warm, end, peak)
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %s", len(errs), errs[0])
	}
	if int(served) != total-total/10-(total-total/10)%64 {
		t.Fatalf("served %d", served)
	}
	if end > warm+16<<10 {
		t.Fatalf("the daemon's memory grew from %d KiB to %d KiB: not flat", warm, end)
	}
}

func rssKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	n, _ := strconv.Atoi(strings.Fields(procField(t, pid, "status", field+":"))[1])
	return n
}

// TestReadsDuringChanges: while readers run, the secret is rotated, the
// DataKey replaced and the daemon sealed and unsealed over and over. Every
// answer is a whole value that was current at some point, or 503.
func TestReadsDuringChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "tester", "--uid", strconv.Itoa(os.Geteuid()), "--as", "alice")
	e.start(nil)
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	ctx := context.Background()
	if _, err := ac.Unseal(ctx, "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	values := map[string]bool{string(masterSecret): true}
	ok := func(code int, body []byte) bool {
		if code == 503 {
			return true
		}
		mu.Lock()
		defer mu.Unlock()
		return code == 200 && values[string(body)]
	}
	stop := make(chan struct{})
	type res struct {
		served, sealed int64
		errs           []string
	}
	done := make(chan res)
	go func() { s, z, e := reader(t, e.sock, 8, 0, stop, ok); done <- res{s, z, e} }()
	for i := 0; i < 4; i++ {
		next := []byte(fmt.Sprintf("value %d of the master secret", i))
		mu.Lock()
		values[string(next)] = true // allowed from the moment it may be served
		mu.Unlock()
		if _, err := ac.Rotate(ctx, "alice", []byte(pwAlice), next); err != nil {
			t.Fatal(err)
		}
		if _, err := ac.Rekey(ctx, "alice", []byte(pwAlice), false); err != nil {
			t.Fatal(err)
		}
		if _, err := ac.Seal(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := ac.Unseal(ctx, "bob", []byte(pwBob)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	r := <-done
	t.Logf("%d whole values served, %d sealed answers, %d wrong", r.served, r.sealed, len(r.errs))
	if len(r.errs) > 0 {
		t.Fatalf("%d wrong answers, first: %s", len(r.errs), r.errs[0])
	}
	if r.served == 0 || r.sealed == 0 {
		t.Fatalf("the reads did not overlap both states: %d served, %d sealed", r.served, r.sealed)
	}
	e.online(0, "", "audit", "verify")
}

// TestHostileInputs is the catalogue: every hostile input gets a clear
// error, the right exit code, and no change to the keyring.
func TestHostileInputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	link := filepath.Join(e.dir, "link.db")
	os.Symlink(e.keyring, link)
	truncated := filepath.Join(e.dir, "truncated.db")
	raw, _ := os.ReadFile(e.keyring)
	os.WriteFile(truncated, raw[:len(raw)/3], 0o600)
	future := filepath.Join(e.dir, "future.db")
	os.WriteFile(future, raw, 0o600)
	if kr, err := keyring.Open(future, keyring.Options{}); err == nil {
		kr.Close()
	}
	setFormat(t, future, 9)
	writable := filepath.Join(e.dir, "writable.db")
	os.WriteFile(writable, raw, 0o600)
	os.Chmod(writable, 0o666)
	foreign := filepath.Join(e.dir, "foreign.db")
	os.WriteFile(foreign, raw, 0o600)
	os.Chown(foreign, nobody, nobody)
	sockLink := filepath.Join(e.dir, "sock-link")
	os.Symlink("/etc/passwd", sockLink)
	other := func(n string) []string {
		return []string{"--socket", filepath.Join(e.dir, n+".sock"), "--admin-socket", filepath.Join(e.dir, n+".adm")}
	}
	daemonCases := []struct {
		name string
		args []string
		want string
	}{
		{"symlinked keyring", append([]string{"--keyring", link}, other("a")...), "symlinks are refused"},
		{"truncated keyring", append([]string{"--keyring", truncated}, other("b")...), "truncated"},
		{"future format", append([]string{"--keyring", future}, other("c")...), "format 9"},
		{"keyring others may write", append([]string{"--keyring", writable}, other("d")...), "others may write"},
		{"keyring of another user", append([]string{"--keyring", foreign}, other("e")...), "belongs to uid"},
		{"a directory as keyring", append([]string{"--keyring", e.dir}, other("f")...), "not a regular file"},
		{"symlink where the socket goes", []string{"--keyring", e.keyring, "--socket", sockLink, "--admin-socket", filepath.Join(e.dir, "g.adm")}, "not a socket"},
		{"socket path too long", []string{"--keyring", e.keyring, "--socket", "/" + strings.Repeat("s", 200), "--admin-socket", filepath.Join(e.dir, "h.adm")}, "Unix sockets allow 107"},
		{"unknown config key", []string{"--config", writeFile(t, e.dir, "bad.toml", "keyrnig = \"/x\"\n")}, "unknown keys keyrnig"},
		{"stray argument", []string{"extra"}, "unexpected argument"},
	}
	for _, c := range daemonCases {
		r := runCmd(t, "", daemonBin, c.args...)
		if r.code == 0 || !strings.Contains(r.out, c.want) {
			t.Errorf("sealboxd, %s: exit %d, want an error containing %q:\n%s", c.name, r.code, c.want, r.out)
		}
	}

	// The CLI.
	kr := []string{"--keyring", e.keyring}
	cliCases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"huge admin name", pwAlice + "\n" + pwBob + "\n", append(kr, "add", strings.Repeat("a", 65<<10), "--as", "alice"), 2, "limit is 64"},
		{"upper-case name", pwAlice + "\n", append(kr, "client", "add", "Web", "--uid", "1", "--as", "alice"), 2, "lowercase"},
		{"path trick as a name", pwAlice + "\n", append(kr, "remove", "../alice", "--as", "alice"), 2, "lowercase"},
		{"negative uid", pwAlice + "\n", append(kr, "client", "add", "web", "--uid", "-5", "--as", "alice"), 2, "--uid"},
		{"uid too large", pwAlice + "\n", append(kr, "client", "add", "web", "--uid", "99999999999", "--as", "alice"), 2, "--uid"},
		{"password line too long", strings.Repeat("p", 10000) + "\n", append(kr, "check", "--as", "alice"), 1, "longer than"},
		{"no password at all", "", append(kr, "passwd", "alice"), 1, "no password on standard input"},
		{"secret file is a directory", pwAlice + "\n", append(kr, "rotate", "--as", "alice", "--secret-file", e.dir), 1, "secret file"},
		{"backup over the keyring", "", append(kr, "backup", "--to", e.keyring), 4, "exists"},
		{"bad duration", pwAlice + "\n", append(kr, "invite", "bob2", "--as", "alice", "--expires", "forever"), 2, "--expires"},
		{"enroll with a garbage code", "not a code\n" + pwBob + "\n", append(kr, "enroll", "nobody"), 3, "no valid invite"},
	}
	for _, c := range cliCases {
		r := runCmd(t, c.stdin, adminBin, c.args...)
		if r.code != c.code || !strings.Contains(r.out, c.want) {
			t.Errorf("sealbox-admin, %s: exit %d (want %d), want %q:\n%s", c.name, r.code, c.code, c.want, r.out[:min(len(r.out), 400)])
		}
	}
	// Only the audit log and failure counters may have changed: the admins,
	// clients and secret did not.
	if got := e.admin(0, "", "--keyring", e.keyring, "list", "--json").out; strings.Count(got, `"name"`) != 2 {
		t.Errorf("admins changed:\n%s", got)
	}

	// Both sockets, with the daemon running.
	e.start(nil)
	for _, sock := range []string{e.sock, e.admSock} {
		// Slowloris: half a request, then silence. The server hangs up
		// after its header timeout; others are served meanwhile.
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: "))
		e.online(7, "", "status")
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%s: a half-sent request was not hung up on: %v", sock, err)
		}
		c.Close()
		// Headers far over the limit.
		c, _ = net.Dial("unix", sock)
		c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 64<<10) + "\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, _ := io.ReadAll(c)
		if !bytes.Contains(resp, []byte("431")) && !bytes.Contains(resp, []byte("400")) {
			t.Errorf("%s: oversized headers: %q", sock, resp[:min(len(resp), 80)])
		}
		c.Close()
	}
	adm := unixClient(e.admSock)
	for name, body := range map[string]string{
		"NUL in a name":       `{"actor":"alice","actor_password":"eA==","name":"a\u0000b","password":"eA=="}`,
		"a name of 100k":      `{"actor":"alice","actor_password":"eA==","name":"` + strings.Repeat("n", 100<<10) + `","password":"eA=="}`,
		"password not base64": `{"actor":"alice","actor_password":"%%%","name":"zz","password":"eA=="}`,
		"wrong types":         `{"actor":1,"name":["x"]}`,
		"deep nesting":        strings.Repeat("[", 10000),
	} {
		resp, err := adm.Post("http://sealbox/v1/admins", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := 400
		if len(body) > 16<<10 {
			want = 413 // refused before any handler sees it
		}
		if resp.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", name, resp.StatusCode, b, want)
		}
	}
	e.stop(syscall.SIGTERM)
	if got := e.admin(0, "", "--keyring", e.keyring, "list", "--json").out; strings.Count(got, `"name"`) != 2 {
		t.Errorf("admins changed after the socket cases:\n%s", got)
	}
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// setFormat rewrites the format record, as a future version would have.
func setFormat(t *testing.T, path string, v byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte{0, 0, 0, v}) })
}

// TestSecretHygiene runs a whole session and then looks for the secrets and
// passwords everywhere sealbox writes or shows things: the keyring file,
// the daemon's log, its environment and command line, and the directories
// it uses. It also checks core dumps are impossible.
func TestSecretHygiene(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	os.MkdirAll(filepath.Dir(e.sock), 0o755)
	for _, p := range []string{filepath.Dir(e.keyring), e.keyring, filepath.Dir(e.sock)} {
		os.Chown(p, nobody, nobody)
	}
	e.start([]string{"setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups"})
	rotated := []byte("rotated hygiene value: 9c0ffee-4711")
	next := writeFile(t, e.dir, "next", string(rotated))
	e.online(3, "wrong password typed here\n", "unseal", "--admin", "bob")
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.expectRead(nobody, 200)
	e.online(0, pwAlice+"\n", "rotate", "--as", "alice", "--secret-file", next)
	os.Remove(next)
	if body := e.expectRead(nobody, 200); !bytes.Equal(body, rotated) {
		t.Fatalf("after rotate: %q", body)
	}

	// Core dumps impossible: limit 0, and not dumpable (proc(5): the
	// /proc/PID files of a non-dumpable process belong to root, although
	// this daemon runs as nobody).
	if core := strings.Fields(procField(t, e.pid, "limits", "Max core file size")); core[4] != "0" {
		t.Errorf("core limit %v", core)
	}
	if st, err := os.Stat(fmt.Sprintf("/proc/%d/environ", e.pid)); err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the daemon (uid %d) is dumpable: its /proc files are not root's", nobody)
	}
	var exposed []byte
	for _, f := range []string{"environ", "cmdline"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", e.pid, f))
		if err != nil {
			t.Fatal(err)
		}
		exposed = append(exposed, b...)
	}
	e.online(0, "", "seal")
	e.stop(syscall.SIGTERM)
	exposed = append(exposed, []byte(e.log.String())...)
	filepath.Walk(e.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			exposed = append(exposed, b...)
		}
		return nil
	})
	needles := [][]byte{}
	for _, s := range [][]byte{masterSecret, rotated, []byte(pwAlice), []byte(pwBob), []byte("wrong password typed here")} {
		needles = append(needles, s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)))
	}
	needles = append(needles, masterSecret[:12], rotated[:20])
	for _, n := range needles {
		if bytes.Contains(exposed, n) {
			t.Errorf("found %q in what sealbox left behind", n)
		}
	}
	t.Logf("scanned %d bytes (keyring, log, environ, cmdline, files): %d needles, 0 hits", len(exposed), len(needles))
}

// TestSystemdNspawn boots a minimal Debian under systemd-nspawn, installs
// sealbox with the real sealboxd.service, and runs testdata/nspawn/run.sh
// inside: READY, sockets under /run, unseal and read, and what systemd gave
// the daemon, checked from inside it. The rootfs is built once by
// scripts/nspawn-rootfs.sh and cached ($SEALBOX_NSPAWN_ROOTFS). Where this
// machine cannot run it, testbin.Require says why: the test skips, and fails
// under CI, which must run it.
func TestSystemdNspawn(t *testing.T) {
	nspawn, rootfs := nspawnRootfs(t)
	t.Parallel()
	stage := t.TempDir()
	os.MkdirAll(filepath.Join(stage, "bin"), 0o755)
	for _, name := range []string{"sealboxd", "sealbox-admin", "sealbox"} {
		p, err := testbin.Build(name, false)
		if err != nil {
			t.Fatal(err)
		}
		copyFile(t, p, filepath.Join(stage, "bin", name), 0o755)
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	copyFile(t, filepath.Join(root, "sealboxd.service"), filepath.Join(stage, "sealboxd.service"), 0o644)
	copyFile(t, filepath.Join(root, "sealbox-askpass.service"), filepath.Join(stage, "sealbox-askpass.service"), 0o644)
	copyFile(t, filepath.Join(root, "config", "sealboxd.toml"), filepath.Join(stage, "sealboxd.toml"), 0o644)
	copyFile(t, filepath.Join("testdata", "nspawn", "run.sh"), filepath.Join(stage, "run.sh"), 0o755)
	bootContainer(t, nspawn, rootfs, stage, "sealbox-test.service", "SEALBOX-NSPAWN:")
}

// nspawnRootfs returns systemd-nspawn and the container rootfs that
// scripts/nspawn-rootfs.sh builds, or stops the test (failing under CI).
func nspawnRootfs(t *testing.T) (nspawn, rootfs string) {
	t.Helper()
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		testbin.Require(t, "systemd-nspawn is not installed (apt-get install systemd-container)")
	}
	if os.Geteuid() != 0 {
		testbin.Require(t, "systemd-nspawn needs root")
	}
	rootfs = os.Getenv("SEALBOX_NSPAWN_ROOTFS")
	if rootfs == "" {
		rootfs = "/var/tmp/sealbox-nspawn-rootfs"
	}
	if _, err := os.Stat(filepath.Join(rootfs, "usr/lib/systemd/systemd")); err != nil {
		testbin.Require(t, fmt.Sprintf("no container rootfs at %s: build it with scripts/nspawn-rootfs.sh", rootfs))
	}
	return nspawn, rootfs
}

// bootContainer boots rootfs (on a throwaway overlay) with stage at
// /sealbox-test and runs testdata/nspawn/UNIT, whose script prints lines
// starting with marker and ends with "marker PASS".
func bootContainer(t *testing.T, nspawn, rootfs, stage, unit, marker string) {
	t.Helper()
	copyFile(t, filepath.Join("testdata", "nspawn", unit), filepath.Join(stage, unit), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nspawn, "-D", rootfs, "--volatile=overlay", "--register=no", "--keep-unit",
		"--console=read-only", "--capability=CAP_IPC_LOCK,CAP_NET_ADMIN",
		"--bind-ro="+stage+":/sealbox-test",
		"--bind-ro="+filepath.Join(stage, unit)+":/etc/systemd/system/"+unit,
		"--boot", "--", "systemd.unit="+unit)
	out, err := cmd.CombinedOutput()
	text := string(out)
	if !strings.Contains(text, marker) {
		// The container never ran the test: this machine cannot boot one.
		testbin.Require(t, fmt.Sprintf("systemd-nspawn could not boot a container here (%v):\n%s", err, lastLines(text, 15)))
	}
	if err != nil || !strings.Contains(text, marker+" PASS") {
		t.Fatalf("inside the container: %v\n%s", err, lastLines(text, 40))
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, marker) {
			t.Log(strings.TrimSpace(line))
		}
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
