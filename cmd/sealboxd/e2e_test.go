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
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/internal/testdaemon"
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
		testbin.Require(t, "needs root to run clients as other uids (setpriv)")
	}
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbin.Require(t, fmt.Sprintf("needs %s (.ci/run installs it)", tool))
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

// unixClient is an HTTP client on a Unix socket, as the test's own uid.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
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

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

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
