package main

// End-to-end lifecycle of the real daemon: start, unseal, serve, seal,
// restart, reload, budgets, and the admin commands through its socket.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
		testbin.Require(t, "needs prlimit (util-linux; .ci/run installs it)")
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

// TestDemoScript runs scripts/demo.sh, what the README's first command
// (make demo) runs, on the test's binaries and in a scratch directory: it
// must go through to its end.
func TestDemoScript(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	client, err := testbin.Build("sealbox", false)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{"sealboxd": daemonBin, "sealbox-admin": adminBin, "sealbox": client} {
		copyFile(t, p, filepath.Join(bin, name), 0o755)
	}
	cmd := exec.Command(filepath.Join("..", "..", "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "SEALBOX_DEMO_DIR="+filepath.Join(t.TempDir(), "demo"), "SEALBOX_DEMO_BIN="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "demo: ok") {
		t.Fatalf("demo.sh: %v\n%s", err, lastLines(string(out), 30))
	}
}
