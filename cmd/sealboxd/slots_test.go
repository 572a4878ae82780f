package main

// End-to-end tests of what an admin used to cryptsetup expects: check
// through the daemon (--test-passphrase), slots (luksDump), unlock, KDF
// parameters and policy (luksConvertKey), export-secret
// (--dump-volume-key).

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/keyring"
)

type slotRow struct {
	Name        string  `json:"name"`
	Kind        string  `json:"kind"`
	Memory      uint32  `json:"kdf_memory_kib"`
	BelowPolicy bool    `json:"below_policy"`
	LastUsed    *string `json:"last_used"`
	Failures    uint32  `json:"failures"`
	RootFail    uint32  `json:"root_failures"`
	Backoff     int64   `json:"backoff_seconds"`
	Invite      string  `json:"invite"`
}

type slotsView struct {
	Policy struct {
		T      uint32 `json:"t"`
		Memory uint32 `json:"memory_kib"`
		P      uint8  `json:"p"`
	} `json:"kdf_policy"`
	Slots []slotRow `json:"slots"`
}

// slotsOf runs slots --json (args say where) and decodes it.
func (e *env) slotsOf(args ...string) slotsView {
	e.t.Helper()
	r := e.admin(0, "", append(args, "slots", "--json")...)
	var v slotsView
	// Hints go to stderr, which runCmd mixes in after the JSON.
	if err := json.NewDecoder(strings.NewReader(r.out)).Decode(&v); err != nil {
		e.t.Fatalf("slots --json: %v\n%s", err, r.out)
	}
	return v
}

func (v slotsView) slot(t *testing.T, name string) slotRow {
	t.Helper()
	for _, s := range v.Slots {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no slot %q", name)
	return slotRow{}
}

var retryIn = regexp.MustCompile(`try again in (\d+)s`)

// pushBackoff sends wrong passwords through args (a command that asks for
// one password, through the daemon) until n of them have failed, waiting
// out each refusal as it says. At least one guess must have been refused
// (exit 8) on the way: the backoff, not the pace of this loop, holds them.
func (e *env) pushBackoff(n int, args ...string) {
	e.t.Helper()
	refused := false
	for failures, tries := 0, 0; failures < n; tries++ {
		if tries > 4*n {
			e.t.Fatalf("%d tries for %d failures", tries, n)
		}
		r := runCmd(e.t, "not the right password\n", adminBin, append([]string{"--admin-socket", e.admSock}, args...)...)
		switch r.code {
		case 3:
			failures++
		case 8:
			m := retryIn.FindStringSubmatch(r.out)
			if m == nil {
				e.t.Fatalf("exit 8 without a retry time: %s", r.out)
			}
			refused = true
			sec, _ := strconv.Atoi(m[1])
			time.Sleep(time.Duration(sec) * time.Second)
		default:
			e.t.Fatalf("guess: exit %d\n%s", r.code, r.out)
		}
	}
	if !refused {
		e.t.Fatalf("%d wrong passwords through %v, none refused", n, args)
	}
}

// auditCount counts the records of kind with outcome in the audit log.
func (e *env) auditCount(where []string, kind, outcome string) int {
	e.t.Helper()
	r := e.admin(0, "", append(where, "audit", "--json")...)
	var recs []struct {
		Event struct {
			Kind    string `json:"kind"`
			Outcome string `json:"outcome"`
		} `json:"event"`
	}
	if err := json.NewDecoder(strings.NewReader(r.out)).Decode(&recs); err != nil {
		e.t.Fatalf("audit --json: %v\n%s", err, r.out)
	}
	n := 0
	for _, rec := range recs {
		if rec.Event.Kind == kind && rec.Event.Outcome == outcome {
			n++
		}
	}
	return n
}

func TestCheckThroughTheDaemon(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	// Sealed: a right password checks out, and the daemon stays sealed.
	r := e.online(0, pwBob+"\n", "check", "--as", "bob")
	if !strings.Contains(r.out, "state: ok") || !strings.Contains(r.out, "audit: ok") {
		t.Fatalf("check: %s", r.out)
	}
	e.expectRead(nobody, 503)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	// Unsealed: no downtime, the secret is still served.
	e.online(0, pwBob+"\n", "check", "--as", "bob", "--json")
	if body := e.expectRead(nobody, 200); !bytes.Equal(body, masterSecret) {
		t.Fatal("the secret changed")
	}
	e.online(3, "not bob's password\n", "check", "--as", "bob")
	e.online(3, pwBob+"\n", "check", "--as", "nobody-here")
	e.online(2, "", "check")
	e.online(2, pwBob+"\n", "check", "--as", "bob", "--repair")
	// A flood of guesses through check is held back like unseals are, and
	// holds back bob's right password too: the counter is the same.
	e.pushBackoff(5, "check", "--as", "bob")
	e.online(8, pwBob+"\n", "check", "--as", "bob")
	e.expectRead(nobody, 200)
	if st := e.online(0, "", "status"); !strings.Contains(st.out, "unsealed by alice") {
		t.Fatalf("status after the checks: %s", st.out)
	}
	online := []string{"--admin-socket", e.admSock}
	if n := e.auditCount(online, "check", "wrong_password"); n < 6 {
		t.Fatalf("%d failed checks in the audit log, want 6 or more", n)
	}
	if n := e.auditCount(online, "check", "backoff"); n < 1 {
		t.Fatal("the refused checks are not in the audit log")
	}
}

func TestCheckThroughTheDaemonFindsTampering(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A client record changed behind the daemon's back: found, exit 6.
	editFile(t, e.keyring, func(tx *keyring.Tx) error {
		c, err := tx.Client("svc")
		if err != nil {
			return err
		}
		c.Unit = "evil.service"
		return tx.PutClient(c)
	})
	e.start(nil)
	r := e.online(6, pwAlice+"\n", "check", "--as", "alice")
	if !strings.Contains(r.out, `FAIL client "svc"`) {
		t.Fatalf("check of a tampered file: %s", r.out)
	}
}

func TestSlotsPolicyAndKDFParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	off := []string{"--keyring", e.keyring}
	v := e.slotsOf(off...)
	if a := v.slot(t, "alice"); a.Kind != "admin" || a.LastUsed == nil || a.BelowPolicy || a.Memory != 64<<10 {
		t.Fatalf("alice offline: %+v", a)
	}
	if v.Policy.T != 3 || v.Policy.Memory != 64<<10 || v.Policy.P != 4 {
		t.Fatalf("policy: %+v", v.Policy)
	}
	r := e.admin(0, "", append(off, "slots")...)
	if !strings.Contains(r.out, "NAME") || !strings.Contains(r.out, "t=3 m=64MiB p=4") {
		t.Fatalf("slots table: %s", r.out)
	}
	// Bad parameters are refused before a password is asked for.
	for _, bad := range [][]string{{"--kdf-memory", "32"}, {"--kdf-iterations", "17"}, {"--kdf-parallelism", "0x"}, {"--kdf-memory", "-1"}} {
		e.admin(2, "", append(append(off, "add", "carol", "--as", "alice"), bad...)...)
		e.admin(2, "", append(append(off, "policy", "set", "--as", "alice"), bad...)...)
	}
	e.admin(2, "", append(off, "policy", "set", "--as", "alice")...)
	// Explicit parameters for a new slot, offline.
	e.admin(0, pwAlice+"\n"+pwCarol+"\n", append(off, "add", "carol", "--as", "alice", "--kdf-memory", "96")...)
	if c := e.slotsOf(off...).slot(t, "carol"); c.Memory != 96<<10 || c.BelowPolicy {
		t.Fatalf("carol: %+v", c)
	}

	e.start(nil)
	e.online(3, "not bob's password\n", "unseal", "--admin", "bob")
	v = e.slotsOf("--admin-socket", e.admSock)
	if b := v.slot(t, "bob"); b.Failures+b.RootFail != 1 {
		t.Fatalf("bob after a wrong password: %+v", b)
	}
	// Raising the policy: above the daemon's KDF budget is refused (no
	// login could rewrap to it), nothing changes.
	before := e.online(7, "", "status", "--json").out
	e.online(2, pwAlice+"\n", "policy", "set", "--kdf-memory", "4096", "--as", "alice")
	if after := e.online(7, "", "status", "--json").out; !strings.Contains(after, `"memory_kib": 65536`) || strings.Count(before, "memory_kib") != strings.Count(after, "memory_kib") {
		t.Fatalf("a refused policy changed something:\n%s", after)
	}
	e.online(0, pwAlice+"\n", "policy", "set", "--kdf-memory", "128", "--as", "alice")
	v = e.slotsOf("--admin-socket", e.admSock)
	if v.Policy.Memory != 128<<10 || !v.slot(t, "bob").BelowPolicy || !v.slot(t, "carol").BelowPolicy {
		t.Fatalf("after the policy raise: %+v", v)
	}
	// Bob's next login (a check, here) rewraps his slot; carol's waits for hers.
	e.online(0, pwBob+"\n", "check", "--as", "bob")
	v = e.slotsOf("--admin-socket", e.admSock)
	if b := v.slot(t, "bob"); b.BelowPolicy || b.Memory != 128<<10 || b.Failures != 0 {
		t.Fatalf("bob after his check: %+v", b)
	}
	if !v.slot(t, "carol").BelowPolicy {
		t.Fatal("carol's slot was rewrapped without her password")
	}
	// Explicit parameters below the policy are refused (exit 2), through the daemon.
	e.online(2, pwBob+"\n"+pwCarol+"x\n", "passwd", "bob", "--kdf-memory", "64")
	e.online(0, pwBob+"\n"+pwCarol+"x\n", "passwd", "bob", "--kdf-memory", "256")
	if b := e.slotsOf("--admin-socket", e.admSock).slot(t, "bob"); b.Memory != 256<<10 {
		t.Fatalf("bob after passwd: %+v", b)
	}
	r = e.online(0, "", "audit", "--admin", "alice")
	if !strings.Contains(r.out, "admin.policy") {
		t.Fatalf("the policy change is not in the audit log:\n%s", r.out)
	}
}

func TestInitWithExplicitKDF(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, keyring: filepath.Join(dir, "k.db")}
	e.admin(2, pwAlice+"\n", "init", "--keyring", e.keyring, "--admin", "alice", "--kdf-iterations", "2")
	if _, err := os.Stat(e.keyring); err == nil {
		t.Fatal("a refused init created the file")
	}
	e.admin(0, pwAlice+"\n", "init", "--keyring", e.keyring, "--admin", "alice", "--kdf-memory", "80", "--kdf-iterations", "4")
	v := e.slotsOf("--keyring", e.keyring)
	if v.Policy.T != 4 || v.Policy.Memory != 80<<10 || v.Policy.P != 4 || v.slot(t, "alice").Memory != 80<<10 {
		t.Fatalf("explicit init: %+v", v)
	}
}

func TestUnlockClearsALockout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	e.pushBackoff(6, "unseal", "--admin", "bob")
	if b := e.slotsOf("--admin-socket", e.admSock).slot(t, "bob"); b.Backoff < 1 || b.Failures+b.RootFail != 6 {
		t.Fatalf("bob is not in backoff: %+v", b)
	}
	e.online(3, "not alice's password\n", "unlock", "bob", "--as", "alice")
	e.online(8, pwBob+"\n", "check", "--as", "bob")
	r := e.online(0, pwAlice+"\n", "unlock", "bob", "--as", "alice")
	if !strings.Contains(r.out, "cleared") {
		t.Fatalf("unlock: %s", r.out)
	}
	if b := e.slotsOf("--admin-socket", e.admSock).slot(t, "bob"); b.Backoff != 0 || b.Failures+b.RootFail != 0 {
		t.Fatalf("bob after the unlock: %+v", b)
	}
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	e.online(4, pwAlice+"\n", "unlock", "bob", "--as", "alice")
	e.online(2, "", "unlock", "bob")
	if n := e.auditCount([]string{"--admin-socket", e.admSock}, "admin.unlock", "ok"); n != 1 {
		t.Fatalf("%d admin.unlock records, want 1", n)
	}
	// Offline too.
	e.stop(15)
	off := []string{"--keyring", e.keyring}
	e.admin(3, "not bob's password\n", append(off, "check", "--as", "bob")...)
	e.admin(0, pwAlice+"\n", append(off, "unlock", "bob", "--as", "alice")...)
	if b := e.slotsOf(off...).slot(t, "bob"); b.Failures+b.RootFail != 0 {
		t.Fatalf("bob after the offline unlock: %+v", b)
	}
}

func TestExportSecretFromABackup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	backup := filepath.Join(e.dir, "backup.db")
	e.admin(0, "", "--keyring", e.keyring, "backup", "--to", backup)
	bk := []string{"--keyring", backup, "export-secret", "--as", "alice"}
	out := filepath.Join(e.dir, "secret.out")

	e.admin(3, "not alice's password\n", append(bk, "--out", out)...)
	if _, err := os.Lstat(out); err == nil {
		t.Fatal("a wrong password left a file")
	}
	e.admin(0, pwAlice+"\n", append(bk, "--out", out)...)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, masterSecret) {
		t.Fatalf("exported %q, %v", got, err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// Never replaces a file, nor follows a link to one.
	r := e.admin(4, pwAlice+"\n", append(bk, "--out", out)...)
	if !strings.Contains(r.out, "never replaces") {
		t.Fatalf("existing file: %s", r.out)
	}
	victim := filepath.Join(e.dir, "victim")
	os.WriteFile(victim, []byte("keep me"), 0o644)
	os.Symlink(victim, filepath.Join(e.dir, "link"))
	e.admin(4, pwAlice+"\n", append(bk, "--out", filepath.Join(e.dir, "link"))...)
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Fatal("followed a symlink")
	}
	// To a pipe, yes; to a terminal, not without --force.
	r = e.admin(0, pwAlice+"\n", append(bk, "--out", "-")...)
	if !strings.Contains(r.out, string(masterSecret)) {
		t.Fatalf("--out - to a pipe: %q", r.out)
	}
	if _, err := exec.LookPath("script"); err == nil {
		// timeout: were the terminal not refused, the password prompt
		// would wait on it.
		cmd := "timeout 30 " + adminBin + " --keyring " + backup + " export-secret --as alice --out -"
		r = runCmd(t, "", "script", "-qec", cmd, "/dev/null")
		if r.code != 2 || !strings.Contains(r.out, "terminal") || strings.Contains(r.out, "S3cr3t") {
			t.Fatalf("to a terminal: exit %d, %q", r.code, r.out)
		}
	}
	// Recorded in the backup's own audit log, the wrong password too.
	if ok, wrong := e.auditCount([]string{"--keyring", backup}, "secret.export", "ok"), e.auditCount([]string{"--keyring", backup}, "secret.export", "wrong_password"); ok != 2 || wrong != 1 {
		t.Fatalf("the backup's audit log has %d exports and %d wrong passwords, want 2 and 1", ok, wrong)
	}
	// A tampered backup: exit 6, nothing written.
	editFile(t, backup, func(tx *keyring.Tx) error {
		s, err := tx.Secret()
		if err != nil {
			return err
		}
		s.Ciphertext[0] ^= 1
		return tx.PutSecret(s)
	})
	out2 := filepath.Join(e.dir, "secret2.out")
	e.admin(6, pwAlice+"\n", "--keyring", backup, "export-secret", "--as", "alice", "--out", out2)
	if _, err := os.Lstat(out2); err == nil {
		t.Fatal("a tampered backup left a file")
	}
	// The live keyring while the daemon holds it: unavailable (5).
	e.start(nil)
	e.admin(5, pwAlice+"\n", "--keyring", e.keyring, "export-secret", "--as", "alice", "--out", out2)
	// Only on the file.
	e.online(2, pwAlice+"\n", "export-secret", "--as", "alice", "--out", out2)
	if _, err := os.Lstat(out2); err == nil {
		t.Fatal("a refused export left a file")
	}
}

// TestCheckThroughTheDaemonLeavesNoKey: a check through a sealed daemon
// derives the KEK, opens the DataKey, decrypts the secret and derives the
// log keys; once answered, none of them (nor the password) is left in the
// daemon's memory.
func TestCheckThroughTheDaemonLeavesNoKey(t *testing.T) {
	if os.Geteuid() != 0 {
		testbin.Require(t, "reading another process's memory through /proc/PID/mem needs root")
	}
	t.Parallel()
	e := newEnv(t)
	needles := keysOf(t, e.keyring, "alice", pwAlice)
	needles["master secret"] = masterSecret
	e.start(nil)
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	st, err := ac.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryHygiene != "full" {
		testbin.Require(t, "the daemon was built without GOEXPERIMENT=runtimesecret (memory_hygiene "+st.MemoryHygiene+"); run make test")
	}
	e.online(0, pwAlice+"\n", "check", "--as", "alice")
	for deadline := time.Now().Add(15 * time.Second); !expectClean(t, "after a check", e.pid, needles); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("after a check through the daemon, its memory still holds the copies logged above")
		}
	}
	if st, _ := ac.Status(context.Background()); !st.Sealed || st.AuditKeyed {
		t.Fatalf("the check changed the daemon's state: sealed %v, audit keyed %v", st.Sealed, st.AuditKeyed)
	}
}

// TestExportSecretFromAReadOnlyBackup: a backup its reader may not write
// is exported without a record, says so, and is left byte for byte as it
// was.
func TestExportSecretFromAReadOnlyBackup(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	dir := filepath.Join(e.dir, "restore")
	os.Mkdir(dir, 0o700)
	os.Chown(dir, nobody, nobody)
	backup := filepath.Join(dir, "backup.db")
	e.admin(0, "", "--keyring", e.keyring, "backup", "--to", backup)
	os.Chown(backup, nobody, nobody)
	os.Chmod(backup, 0o400)
	before, _ := os.ReadFile(backup)
	out := filepath.Join(dir, "secret.out")
	asNobody := []string{"--reuid", "65534", "--regid", "65534", "--clear-groups", adminBin, "--keyring", backup, "export-secret", "--as", "alice", "--out", out}
	r := runCmd(t, "not alice's password\n", "setpriv", asNobody...)
	if r.code != 3 {
		t.Fatalf("read-only, wrong password: exit %d\n%s", r.code, r.out)
	}
	r = runCmd(t, pwAlice+"\n", "setpriv", asNobody...)
	if r.code != 0 || !strings.Contains(r.out, "not in its audit log") {
		t.Fatalf("read-only export: exit %d\n%s", r.code, r.out)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, masterSecret) {
		t.Fatalf("exported %q", got)
	}
	if after, _ := os.ReadFile(backup); !bytes.Equal(before, after) {
		t.Fatal("the read-only backup changed")
	}
}
