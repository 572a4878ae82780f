package main

// End-to-end tests: the real sealbox, sealboxd and sealbox-admin binaries,
// a real keyring at the real Argon2id floor, real sockets.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/internal/testdaemon"
)

var sealboxBin, daemonBin, adminBin string

func TestMain(m *testing.M) {
	// Race-built binaries otherwise sleep a second at exit.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	var err error
	sealboxBin, err = testbin.Build("sealbox", testbin.Race)
	if err == nil {
		daemonBin, err = testbin.Build("sealboxd", false)
	}
	if err == nil {
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

const pwAlice = "alice's long passphrase"

// The secret has a NUL and a newline: byte-exact delivery is the point.
var secret = []byte("exec-secret\x00with\nbytes\xff")

type world struct {
	t                  *testing.T
	dir, sock, adm, kr string
	daemon             *testdaemon.Process
}

type result struct {
	stdout, stderr string
	code           int
}

func runBin(t *testing.T, env []string, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(pwAlice + "\n")
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return r
}

// newWorld starts a daemon on a keyring whose client "me" is this process's
// uid.
func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, secret)
}

func newWorldWith(t *testing.T, secret []byte) *world {
	t.Helper()
	w := newStoppedWorld(t, secret)
	w.start()
	return w
}

// newStoppedWorld makes the keyring of newWorld, with no daemon yet.
func newStoppedWorld(t *testing.T, secret []byte) *world {
	t.Helper()
	dir, err := os.MkdirTemp("", "sbx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &world{t: t, dir: dir, sock: filepath.Join(dir, "s.sock"), adm: filepath.Join(dir, "a.sock"), kr: filepath.Join(dir, "k.db")}
	sf := filepath.Join(dir, "secret.in")
	os.WriteFile(sf, secret, 0o600)
	for _, args := range [][]string{
		{"init", "--keyring", w.kr, "--admin", "alice", "--secret-file", sf, "--kdf-time", "1ms"},
		{"--keyring", w.kr, "client", "add", "me", "--uid", strconv.Itoa(os.Getuid()), "--as", "alice"},
	} {
		if r := runBin(t, nil, adminBin, args...); r.code != 0 {
			t.Fatalf("%v: %s", args, r.stderr)
		}
	}
	os.Remove(sf)
	t.Cleanup(func() { w.stop() })
	return w
}

// start runs sealboxd on the world's keyring and waits for its READY=1.
func (w *world) start() {
	w.t.Helper()
	p, err := testdaemon.Start(testdaemon.Options{Bin: daemonBin, Args: []string{"--keyring", w.kr, "--socket", w.sock, "--admin-socket", w.adm}})
	if err != nil {
		w.t.Fatal(err)
	}
	w.daemon = p
}

// stop ends sealboxd as systemd would, with SIGTERM; its sockets go.
func (w *world) stop() {
	if w.daemon != nil {
		if _, err := w.daemon.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
			w.t.Error(err)
		}
		w.daemon = nil
	}
}

func (w *world) sealbox(args ...string) result {
	w.t.Helper()
	return runBin(w.t, []string{"SEALBOX_SOCKET=" + w.sock}, sealboxBin, args...)
}

func (w *world) unseal() {
	w.t.Helper()
	if r := runBin(w.t, nil, adminBin, "--admin-socket", w.adm, "unseal", "--admin", "alice"); r.code != 0 {
		w.t.Fatalf("unseal: %s", r.stderr)
	}
}

func expectCode(t *testing.T, r result, code int, contains string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout+r.stderr, contains) {
		t.Fatalf("exit %d (want %d), want %q in\nstdout: %q\nstderr: %s", r.code, code, contains, r.stdout, r.stderr)
	}
}

func TestSealedTimeoutUnreachable(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// One exit-code table with sealbox-admin: 7 sealed, 9 timed out.
	expectCode(t, w.sealbox("get"), 7, "sealed")
	// status prints the state and exits 7 when sealed, 0 when not.
	expectCode(t, w.sealbox("status"), 7, "sealed (this user is client me)")
	if r := w.sealbox("status"); strings.Contains(r.stderr, "error") {
		t.Fatalf("a sealed status is reported as an error: %s", r.stderr)
	}
	expectCode(t, w.sealbox("status", "--json"), 7, `"sealed":true`)
	expectCode(t, w.sealbox("wait", "--timeout", "300ms"), 9, "timed out")
	expectCode(t, w.sealbox("get", "--wait", "300ms"), 9, "timed out")
	none := filepath.Join(w.dir, "none.sock")
	expectCode(t, runBin(t, nil, sealboxBin, "--socket", none, "get"), 5, "cannot reach sealboxd")
	// --socket after the command is the same flag (as sealbox-admin takes
	// its global flags anywhere): this one names a socket with no daemon.
	expectCode(t, runBin(t, nil, sealboxBin, "get", "--socket", none), 5, "cannot reach sealboxd")
	expectCode(t, runBin(t, nil, sealboxBin, "status", "--socket", none), 5, none)
	// A wait on a daemon that never comes up runs out its time, and says why.
	r := runBin(t, nil, sealboxBin, "--socket", none, "get", "--wait", "400ms")
	expectCode(t, r, 9, "timed out")
	expectCode(t, r, 9, "cannot reach sealboxd")
	expectCode(t, w.sealbox("frobnicate"), 2, "unknown command")
	expectCode(t, w.sealbox("exec"), 2, "name a command")
	expectCode(t, w.sealbox("exec", "--fd", "1", "--", "true"), 2, "--fd must be")
	for _, c := range []string{"get", "wait", "exec", "status"} {
		expectCode(t, w.sealbox(c, "--help"), 0, "Usage: sealbox "+c)
	}
	expectCode(t, w.sealbox("--help"), 0, "Exit codes")
	expectCode(t, runBin(t, nil, sealboxBin, "--version"), 0, "sealbox ")
	if r := runBin(t, nil, sealboxBin, "--version"); !strings.Contains(r.stdout, runtime.Version()) || !strings.Contains(r.stdout, "commit ") {
		t.Fatalf("--version does not name the commit and Go version: %q", r.stdout)
	}
}

func TestWaitReturnsAfterUnseal(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	done := make(chan result, 1)
	go func() { done <- w.sealbox("wait", "--timeout", "2m") }()
	time.Sleep(300 * time.Millisecond)
	w.unseal()
	unsealed := time.Now()
	r := <-done
	expectCode(t, r, 0, "")
	expectCode(t, w.sealbox("status"), 0, "unsealed (this user is client me)")
	t.Logf("wait returned %v after the unseal command", time.Since(unsealed).Round(time.Millisecond))
}

const notReachable = "sealboxd is not reachable yet"

// expectOnce fails unless r's stderr says s exactly once.
func expectOnce(t *testing.T, r result, s string) {
	t.Helper()
	if n := strings.Count(r.stderr, s); n != 1 {
		t.Fatalf("%q said %d times, want once:\n%s", s, n, r.stderr)
	}
}

// The documented ExecStartPre=sealbox wait, for a unit that starts before
// sealboxd (no ordering, or a daemon slow to come up): the wait retries the
// missing socket, says so once, and returns once the daemon is up and
// unsealed. get --wait rides it out the same way.
func TestWaitBeforeDaemonStarts(t *testing.T) {
	t.Parallel()
	w := newStoppedWorld(t, secret)
	waited, got := make(chan result, 1), make(chan result, 1)
	go func() { waited <- w.sealbox("wait", "--timeout", "60s") }()
	go func() { got <- w.sealbox("get", "--wait", "60s") }()
	time.Sleep(700 * time.Millisecond) // no socket for a while: several retries
	w.start()
	for _, ch := range []chan result{waited, got} {
		select {
		case r := <-ch:
			t.Fatalf("a wait ended before the daemon was unsealed: %d %s", r.code, r.stderr)
		default:
		}
	}
	w.unseal()
	unsealed := time.Now()
	r := <-waited
	t.Logf("wait returned %v after the unseal command", time.Since(unsealed).Round(time.Millisecond))
	expectCode(t, r, 0, notReachable)
	expectOnce(t, r, notReachable)
	r = <-got
	expectCode(t, r, 0, notReachable)
	if r.stdout != string(secret) {
		t.Fatalf("get --wait: %q", r.stdout)
	}
}

// The documented ExecStartPre=sealbox wait: a daemon restart (systemctl
// restart sealboxd, a crash and Restart=) while a unit waits does not end
// the wait; the restarted daemon's unseal does.
func TestWaitSurvivesDaemonRestart(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	done := make(chan result, 1)
	go func() { done <- w.sealbox("wait", "--timeout", "60s") }()
	time.Sleep(300 * time.Millisecond) // long-polling the sealed daemon
	w.stop()                           // SIGTERM, as systemctl restart sends
	time.Sleep(700 * time.Millisecond) // down for a while: several retries
	w.start()
	started := time.Now()
	select {
	case r := <-done:
		t.Fatalf("wait ended across the restart, before any unseal: %d %s", r.code, r.stderr)
	default:
	}
	w.unseal()
	unsealed := time.Now()
	r := <-done
	t.Logf("wait returned %v after the restarted daemon's socket appeared, %v after the unseal command returned",
		time.Since(started).Round(time.Millisecond), time.Since(unsealed).Round(time.Millisecond))
	expectCode(t, r, 0, notReachable)
	expectOnce(t, r, notReachable)
}

// A refusal (403: this user is not an Active client) is not something a
// wait rides out: wait, get --wait and exec --wait fail at once with exit
// 4 and the hint, without retrying.
func TestWaitRefusedAtOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if r := runBin(t, nil, adminBin, "--admin-socket", w.adm, "client", "disable", "me", "--as", "alice"); r.code != 0 {
		t.Fatalf("client disable: %s", r.stderr)
	}
	for _, args := range [][]string{
		{"wait", "--timeout", "60s"},
		{"get", "--wait", "60s"},
		{"exec", "--wait", "60s", "--", "true"},
	} {
		start := time.Now()
		r := w.sealbox(args...)
		expectCode(t, r, 4, "hint: register this user")
		if d := time.Since(start); d > 10*time.Second || strings.Contains(r.stderr, notReachable) {
			t.Fatalf("%v: refused after %v, stderr:\n%s", args, d, r.stderr)
		}
	}
}

func TestGetAndExecDeliverExactBytes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.unseal()

	// stdout (a pipe here).
	if r := w.sealbox("get"); r.code != 0 || r.stdout != string(secret) {
		t.Fatalf("get: %d %q", r.code, r.stdout)
	}
	// --out: 0600, exact bytes, replaced atomically (no temp file left).
	out := filepath.Join(w.dir, "out", "secret")
	os.MkdirAll(filepath.Dir(out), 0o755)
	os.WriteFile(out, []byte("old"), 0o644)
	expectCode(t, w.sealbox("get", "--out", out), 0, "")
	st, _ := os.Stat(out)
	got, _ := os.ReadFile(out)
	if st.Mode().Perm() != 0o600 || !bytes.Equal(got, secret) {
		t.Fatalf("--out: mode %v, %q", st.Mode().Perm(), got)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}

	// exec: the child reads the secret from the inherited descriptor.
	dump := filepath.Join(w.dir, "from-child")
	expectCode(t, w.sealbox("exec", "--", "sh", "-c", `cat "$SEALBOX_SECRET_FILE" > "$0"`, dump), 0, "")
	if got, _ := os.ReadFile(dump); !bytes.Equal(got, secret) {
		t.Fatalf("exec via $SEALBOX_SECRET_FILE: %q", got)
	}
	os.Remove(dump)
	expectCode(t, w.sealbox("exec", "--fd", "7", "--", "sh", "-c", `cat {secret-file} > "$0"`, dump), 0, "")
	if got, _ := os.ReadFile(dump); !bytes.Equal(got, secret) {
		t.Fatalf("exec --fd 7 with {secret-file}: %q", got)
	}
	// The child's exit status is sealbox's.
	expectCode(t, w.sealbox("exec", "--", "sh", "-c", "exit 7"), 7, "")
	// --env cannot carry a NUL byte: refused, nothing started.
	expectCode(t, w.sealbox("exec", "--env", "SECRET", "--", "sh", "-c", "echo started"), 1, "NUL byte")
}

func TestExecEnv(t *testing.T) {
	t.Parallel()
	plain := []byte("plain-env-secret-4d2f")
	w := newWorldWith(t, plain)
	w.unseal()
	r := w.sealbox("exec", "--env", "SECRET", "--", "sh", "-c", `printf %s "$SECRET"`)
	if r.code != 0 || r.stdout != string(plain) {
		t.Fatalf("exec --env: %d %q %s", r.code, r.stdout, r.stderr)
	}
	expectCode(t, w.sealbox("exec", "--env", "A=B", "--", "true"), 2, "without '='")
}

func TestRefusedForOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		testbin.Require(t, "needs root to run as another uid")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		testbin.Require(t, "needs setpriv (util-linux; .ci/run installs it)")
	}
	t.Parallel()
	w := newWorld(t)
	os.Chmod(w.dir, 0o755)
	w.unseal()
	r := runBin(t, []string{"SEALBOX_SOCKET=" + w.sock}, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sealboxBin, "get")
	expectCode(t, r, 4, "not a registered active sealbox client")
	if strings.Contains(r.stdout, "exec-secret") {
		t.Fatal("secret bytes reached an unregistered user")
	}
}

func TestRefusesATerminal(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		testbin.Require(t, "script (util-linux) gives the command a pseudo-terminal")
	}
	t.Parallel()
	w := newWorld(t)
	w.unseal()
	// script runs the command on a pty; its own exit status is the command's.
	r := runBin(t, []string{"SEALBOX_SOCKET=" + w.sock}, "script", "-qec", sealboxBin+" get", "/dev/null")
	if r.code != 2 || !strings.Contains(r.stdout, "terminal") || strings.Contains(r.stdout, "exec-secret") {
		t.Fatalf("get on a terminal: exit %d, %q", r.code, r.stdout)
	}
}
