package admin

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// The fixtures in testdata/legacy were made by earlier sealbox versions
// (commits 4143bbf and 9003087) with the passwords of main_test.go; see
// testdata/legacy/README.md.

func fixture(t *testing.T, name string) (*Manager, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "legacy", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	o := opts()
	// Before the fixtures' invites expire.
	o.Now = func() time.Time { return time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC) }
	return New(kr, o), path
}

func format(t *testing.T, m *Manager) uint32 {
	var f uint32
	m.kr.View(func(tx *keyring.Tx) error { f = tx.Format(); return nil })
	return f
}

func readCode(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", "legacy", name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

func checkClean(t *testing.T, m *Manager, actor, pw string) {
	t.Helper()
	res, err := m.Check(ctx, actor, []byte(pw))
	if err != nil || !res.OK() {
		t.Fatalf("check as %s after the upgrade: %v %+v %s", actor, err, res.Report, res.AuditProblem)
	}
}

func TestUpgradeVersion1Slots(t *testing.T) {
	t.Parallel()
	m, _ := fixture(t, "format1-slotv1.db")
	if format(t, m) != 1 {
		t.Fatal("the fixture is not format 1")
	}
	// Reading needs no login and changes nothing.
	admins, err := m.ListAdmins()
	if err != nil || len(admins) != 2 || !admins[0].Legacy {
		t.Fatalf("list of a format-1 file: %+v %v", admins, err)
	}
	u := mustUnseal(t, m, "bob", pwBob)
	if format(t, m) != keyring.FormatVersion {
		t.Fatal("bob's login did not upgrade the file")
	}
	var names []string
	for _, c := range u.Clients {
		names = append(names, c.Name+":"+c.Status.String())
	}
	if strings.Join(names, ",") != "api:disabled,web:active" {
		t.Fatalf("clients after the upgrade: %v", names)
	}
	mustUnseal(t, m, "alice", pwAlice) // a legacy-wrap slot, rewrapped now
	for _, a := range mustList(t, m) {
		if a.Legacy {
			t.Errorf("%s still has a format-1 payload after logging in", a.Name)
		}
	}
	checkClean(t, m, "alice", pwAlice)
	recs, _ := m.AuditRecords(audit.Filter{})
	if !hasRecord(recs, audit.KindUpgrade, "bob") {
		t.Fatal("no format.upgrade record")
	}
}

func TestUpgradeCurrentFormat1(t *testing.T) {
	t.Parallel()
	m, _ := fixture(t, "format1-current.db")
	want := []byte("rotated secret, version 2")
	u, err := m.Unseal(ctx, "carol", []byte(pwCarol))
	if err != nil || !bytes.Equal(u.Secret.Bytes(), want) || u.Version != 2 {
		t.Fatalf("carol after the upgrade: %v", err)
	}
	u.Destroy()
	ur, err := m.UnsealRecovery(ctx, readCode(t, "format1-current.recovery"))
	if err != nil || !bytes.Equal(ur.Secret.Bytes(), want) {
		t.Fatalf("the format-1 recovery code after the upgrade: %v", err)
	}
	ur.Destroy()
	if err := m.Enroll(ctx, "dave", readCode(t, "format1-current.invite"), []byte("dave's own passphrase")); err != nil {
		t.Fatalf("the format-1 invite after the upgrade: %v", err)
	}
	mustUnsealSecret(t, m, "dave", "dave's own passphrase", want)
	mustUnsealSecret(t, m, "alice", pwAlice, want)
	checkClean(t, m, "bob", pwBob)
	// The format-1 audit log is part of the chain that verifies now.
	rep, err := m.VerifyAudit(ctx, "bob", []byte(pwBob))
	if err != nil || rep.Events.First != 1 || rep.Events.Keyed < 10 {
		t.Fatalf("audit across the upgrade: %+v %v", rep, err)
	}
}

func TestUpgradeAfterAFormat1Rekey(t *testing.T) {
	t.Parallel()
	m, _ := fixture(t, "format1-rekeyed.db")
	// Bob missed alice's format-1 rekey: his pending key is not trusted,
	// and his login neither unseals nor upgrades.
	if _, err := m.Unseal(ctx, "bob", []byte(pwBob)); !errors.Is(err, unseal.ErrStale) {
		t.Fatalf("bob on a format-1 pending key: %v", err)
	}
	if format(t, m) != 1 {
		t.Fatal("a login through a format-1 pending key upgraded the file")
	}
	mustUnseal(t, m, "alice", pwAlice) // alice's slot opens directly: upgrade
	stale := map[string]bool{}
	for _, a := range mustList(t, m) {
		stale[a.Name] = a.Stale
	}
	if !stale["bob"] || !stale[RecoveryName] || stale["alice"] {
		t.Fatalf("stale slots after the upgrade: %v", stale)
	}
	if _, err := m.Unseal(ctx, "bob", []byte(pwBob)); !errors.Is(err, unseal.ErrStale) {
		t.Fatalf("bob after the upgrade: %v", err)
	}
	if _, err := m.UnsealRecovery(ctx, readCode(t, "format1-rekeyed.recovery")); !errors.Is(err, unseal.ErrStale) {
		t.Fatalf("the stale recovery slot: %v", err)
	}
	// Bob is invited again; his invite takes the stale slot's place.
	code, _, err := m.Invite(ctx, "alice", []byte(pwAlice), "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Enroll(ctx, "bob", code, []byte("bob's second passphrase")); err != nil {
		t.Fatal(err)
	}
	mustUnseal(t, m, "bob", "bob's second passphrase")
	if _, err := m.RegenerateRecovery(ctx, "bob", []byte("bob's second passphrase")); err != nil {
		t.Fatal(err)
	}
	checkClean(t, m, "alice", pwAlice)
}

func TestTamperedFormat1IsNotUpgraded(t *testing.T) {
	t.Parallel()
	m, path := fixture(t, "format1-slotv1.db")
	// Re-enable the disabled client by editing its format-1 record.
	raw := rawGet(t, m, "clients", "api")
	raw[10] = byte(keyring.ClientActive)
	m = rawPut(t, m, path, "clients", "api", raw)
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.Is(err, unseal.ErrIntegrity) {
		t.Fatalf("unseal of a tampered format-1 file: %v", err)
	}
	if format(t, m) != 1 {
		t.Fatal("a tampered format-1 file was upgraded")
	}
	res, err := m.Repair(ctx, "alice", []byte(pwAlice), yes)
	if err != nil || len(res.Plan.Actions) != 1 || res.Plan.Actions[0].Name != "api" {
		t.Fatalf("repair: %+v %v", res, err)
	}
	u := mustUnseal(t, m, "alice", pwAlice)
	for _, c := range u.Clients {
		if c.Name == "api" {
			t.Fatal("the tampered client survived the repair")
		}
	}
}

func mustList(t *testing.T, m *Manager) []AdminInfo {
	t.Helper()
	l, err := m.ListAdmins()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func hasRecord(recs []audit.Record, k audit.Kind, actor string) bool {
	for _, r := range recs {
		if r.Kind == k && r.Actor == actor && r.Outcome == audit.OK && r.Keyed {
			return true
		}
	}
	return false
}

// TestRollbackBelowTheWatermarkRefused: a process that has seen a
// generation refuses an older copy of the whole file put in its place,
// which the file alone cannot tell from the current one.
func TestRollbackBelowTheWatermarkRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keyring.db")
	if err := Init(ctx, path, "alice", []byte(pwAlice), secret, opts()); err != nil {
		t.Fatal(err)
	}
	older := filepath.Join(t.TempDir(), "older.db")
	b, _ := os.ReadFile(path)
	os.WriteFile(older, b, 0o600)
	wm := &unseal.Watermark{}
	o := opts()
	o.Watermark = wm
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := New(kr, o)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	kr.Close()
	b, _ = os.ReadFile(older)
	os.WriteFile(path, b, 0o600)
	kr, err = keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	m = New(kr, o)
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.Is(err, unseal.ErrIntegrity) || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("unseal of an older copy: %v", err)
	}
	// A fresh process cannot tell: that is what FORMAT.md says.
	mustUnseal(t, New(kr, opts()), "alice", pwAlice)
}

// TestNoOneButRootCanLockEveryoneOut: failures from a caller other than
// root, across many names, put such callers in the global backoff; root's
// attempts are counted apart and an admin with sudo still gets in.
func TestNoOneButRootCanLockEveryoneOut(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	user := audit.WithPeer(ctx, audit.Peer{UID: 1000})
	root := audit.WithPeer(ctx, audit.Peer{UID: 0})
	var locked bool
	for i := 0; i < 40 && !locked; i++ {
		_, err := m.Unseal(user, "name"+strconv.Itoa(i), []byte("a wrong password"))
		var be *BackoffError
		locked = errors.As(err, &be)
	}
	if !locked {
		t.Fatal("40 failures across names did not reach the global backoff")
	}
	if _, err := m.Unseal(user, "alice", []byte(pwAlice)); !errors.Is(err, ErrBackoff) {
		t.Fatalf("alice's right password from the same kind of caller: %v", err)
	}
	u, err := m.Unseal(root, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatalf("root, with alice's password, during the global backoff: %v", err)
	}
	u.Destroy()
}
