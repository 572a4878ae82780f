package admin

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

func slotOf(t *testing.T, v *SlotsView, name string) SlotInfo {
	t.Helper()
	for _, s := range v.Slots {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no slot %q in %+v", name, v.Slots)
	return SlotInfo{}
}

func mustSlots(t *testing.T, m *Manager) *SlotsView {
	t.Helper()
	v, err := m.Slots()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSlotsShowWhatTheFileRecords(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	m := newStoreAt(t, &now)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Invite(ctx, "alice", []byte(pwAlice), "carol", time.Hour); err != nil {
		t.Fatal(err)
	}
	for range freePerName + 1 {
		m.CheckPassword(ctx, audit.KindCheck, "bob", []byte("not bob's password"))
	}
	now = now.Add(time.Minute)
	mustUnseal(t, m, "alice", pwAlice)
	v := mustSlots(t, m)
	a, b, c := slotOf(t, v, "alice"), slotOf(t, v, "bob"), slotOf(t, v, "carol")
	if a.KDF != "argon2id" || a.LastUsed == nil || a.Failures != 0 || a.BackoffSeconds != 0 || a.BelowPolicy {
		t.Errorf("alice: %+v", a)
	}
	if b.Failures != freePerName || b.BackoffSeconds != 0 {
		// The fourth try was refused before any derivation: not a failure.
		t.Errorf("bob after %d failures and a minute: %+v", freePerName, b)
	}
	if c.Invite != "pending" || c.Expires == nil || c.LastUsed != nil {
		t.Errorf("carol's invite: %+v", c)
	}
	if v.Policy != cheap || v.GlobalFailures != freePerName {
		t.Errorf("policy %v, global failures %d", v.Policy, v.GlobalFailures)
	}
	m.CheckPassword(ctx, audit.KindCheck, "bob", []byte("not bob's password"))
	if b := slotOf(t, mustSlots(t, m), "bob"); b.Failures != freePerName+1 || b.BackoffSeconds != 2 {
		t.Errorf("bob in backoff: %+v", b)
	}
	now = now.Add(2 * time.Hour)
	if c := slotOf(t, mustSlots(t, m), "carol"); c.Invite != "expired" {
		t.Errorf("carol's invite after 2h: %+v", c)
	}
}

func TestPolicyRaiseShowsAndUpgradesAtLogin(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	p, err := m.SetPolicyFields(ctx, "alice", []byte(pwAlice), keyring.Params{MemoryKiB: 128})
	if err != nil {
		t.Fatal(err)
	}
	if want := (keyring.Params{Time: cheap.Time, MemoryKiB: 128, Threads: cheap.Threads}); p != want {
		t.Fatalf("policy %v, want %v", p, want)
	}
	v := mustSlots(t, m)
	if a, b := slotOf(t, v, "alice"), slotOf(t, v, "bob"); !a.BelowPolicy || !b.BelowPolicy {
		t.Fatalf("before their logins: alice %+v, bob %+v", a, b)
	}
	// A password check is a login: it rewraps bob's slot, not alice's.
	if err := m.CheckPassword(ctx, audit.KindCheck, "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	v = mustSlots(t, m)
	if a, b := slotOf(t, v, "alice"), slotOf(t, v, "bob"); !a.BelowPolicy || b.BelowPolicy || b.Memory != 128 {
		t.Fatalf("after bob's check: alice %+v, bob %+v", a, b)
	}
	recs, _ := m.AuditRecords(audit.Filter{})
	if !hasRecord(recs, audit.KindAdminPolicy, "alice") || !hasRecord(recs, audit.KindAdminRefresh, "bob") {
		t.Fatal("the policy change and the rewrap are not both recorded")
	}
	// Out of range: refused before anything is derived or changed.
	before := snapshot(t, m)
	for _, bad := range []keyring.Params{{Time: unseal.MaxTime + 1}, {MemoryKiB: unseal.MaxMemoryKiB + 1}, {Threads: unseal.MaxThreads + 1}} {
		if _, err := m.SetPolicyFields(ctx, "alice", []byte(pwAlice), bad); errclass.Of(err) != errclass.Invalid {
			t.Errorf("policy %v: %v", bad, err)
		}
	}
	if !bytes.Equal(before, snapshot(t, m)) {
		t.Fatal("a refused policy changed the file")
	}
}

func TestPolicyAboveTheBudgetRefused(t *testing.T) {
	t.Parallel()
	m0, _ := newStore(t)
	o := opts()
	o.Budget = unseal.NewBudget(256, 1, time.Second)
	m := New(m0.kr, o)
	if _, err := m.SetPolicyFields(ctx, "alice", []byte(pwAlice), keyring.Params{MemoryKiB: 512}); !errors.Is(err, unseal.ErrParams) {
		t.Fatalf("policy above the budget: %v", err)
	}
	if err := m.AddAdminWith(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob), &keyring.Params{Time: 1, MemoryKiB: 512, Threads: 1}); !errors.Is(err, unseal.ErrParams) {
		t.Fatalf("slot above the budget: %v", err)
	}
}

func TestExplicitSlotParams(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	if _, err := m.SetPolicyFields(ctx, "alice", []byte(pwAlice), keyring.Params{Time: 2}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, m)
	for _, bad := range []keyring.Params{
		{Time: 1, MemoryKiB: 256, Threads: 1},                     // below the policy's t=2
		{Time: 2, MemoryKiB: unseal.MaxMemoryKiB + 1, Threads: 1}, // above the cap
		{Time: 2, MemoryKiB: 64, Threads: unseal.MaxThreads + 1},
	} {
		err := m.AddAdminWith(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob), &bad)
		if errclass.Of(err) != errclass.Invalid {
			t.Errorf("add with %v: %v", bad, err)
		}
		if err := m.PasswdWith(ctx, "alice", []byte(pwAlice), []byte(pwCarol), &bad); errclass.Of(err) != errclass.Invalid {
			t.Errorf("passwd with %v: %v", bad, err)
		}
	}
	if !bytes.Equal(before, snapshot(t, m)) {
		t.Fatal("refused parameters changed the file")
	}
	want := keyring.Params{Time: 3, MemoryKiB: 256, Threads: 2}
	if err := m.AddAdminWith(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob), &want); err != nil {
		t.Fatal(err)
	}
	if err := m.PasswdWith(ctx, "alice", []byte(pwAlice), []byte(pwCarol), &want); err != nil {
		t.Fatal(err)
	}
	v := mustSlots(t, m)
	for _, name := range []string{"alice", "bob"} {
		s := slotOf(t, v, name)
		if (keyring.Params{Time: s.Time, MemoryKiB: s.Memory, Threads: s.Threads}) != want || s.BelowPolicy {
			t.Errorf("%s: %+v", name, s)
		}
	}
	mustUnseal(t, m, "bob", pwBob)
	mustUnseal(t, m, "alice", pwCarol)
	// A field left out is the policy's.
	if err := m.AddAdminWith(ctx, "alice", []byte(pwCarol), "carol", []byte(pwCarol+"!"), &keyring.Params{MemoryKiB: 512}); err != nil {
		t.Fatal(err)
	}
	if c := slotOf(t, mustSlots(t, m), "carol"); c.Time != 2 || c.Memory != 512 || c.Threads != cheap.Threads {
		t.Errorf("carol: %+v", c)
	}
}

func TestUnlockClearsAnotherAdminsBackoff(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	m := newStoreAt(t, &now)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	for range freePerName + 1 {
		m.CheckPassword(ctx, audit.KindCheck, "bob", []byte("not bob's password"))
		now = now.Add(time.Second)
	}
	if err := m.CheckPassword(ctx, audit.KindCheck, "bob", []byte(pwBob)); !errors.Is(err, ErrBackoff) {
		t.Fatalf("bob before the unlock: %v", err)
	}
	// A wrong password clears nothing.
	if _, err := m.Unlock(ctx, "alice", []byte("not alice's password"), "bob"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("unlock with a wrong password: %v", err)
	}
	if b := slotOf(t, mustSlots(t, m), "bob"); b.Failures != freePerName+1 {
		t.Fatalf("bob after a failed unlock: %+v", b)
	}
	n, err := m.Unlock(ctx, "alice", []byte(pwAlice), "bob")
	if err != nil || n != freePerName+1 {
		t.Fatalf("unlock: %d, %v", n, err)
	}
	if b := slotOf(t, mustSlots(t, m), "bob"); b.Failures != 0 || b.BackoffSeconds != 0 {
		t.Fatalf("bob after the unlock: %+v", b)
	}
	if err := m.CheckPassword(ctx, audit.KindCheck, "bob", []byte(pwBob)); err != nil {
		t.Fatalf("bob after the unlock: %v", err)
	}
	recs, _ := m.AuditRecords(audit.Filter{})
	var found bool
	for _, r := range recs {
		found = found || (r.Kind == audit.KindAdminUnlock && r.Actor == "alice" && r.Target == "bob" && r.Keyed && r.Outcome == audit.OK)
	}
	if !found {
		t.Fatal("no keyed admin.unlock record")
	}
	if _, err := m.Unlock(ctx, "alice", []byte(pwAlice), "bob"); !errors.Is(err, ErrNothingToUnlock) {
		t.Fatalf("a second unlock: %v", err)
	}
	if _, err := m.Unlock(ctx, "alice", []byte(pwAlice), "no/such"); errclass.Of(err) != errclass.Invalid {
		t.Fatalf("a bad name: %v", err)
	}
}

func TestExportSecret(t *testing.T) {
	t.Parallel()
	m, path := newStore(t)
	buf, audited, err := m.ExportSecret(ctx, "alice", []byte(pwAlice))
	if err != nil || !audited || !bytes.Equal(buf.Bytes(), secret) {
		t.Fatalf("export: %v (audited %v)", err, audited)
	}
	buf.Destroy()
	recs, _ := m.AuditRecords(audit.Filter{})
	if !hasRecord(recs, audit.KindSecretExport, "alice") {
		t.Fatal("the export is not recorded")
	}
	if _, _, err := m.ExportSecret(ctx, "alice", []byte("not alice's password")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := m.ExportSecret(ctx, "nobody", []byte(pwAlice)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("unknown admin: %v", err)
	}

	// A read-only backup: exported, not recorded, the file untouched.
	m.kr.Close()
	before, _ := os.ReadFile(path)
	kr, err := keyring.Open(path, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ro := New(kr, opts())
	buf, audited, err = ro.ExportSecret(ctx, "alice", []byte(pwAlice))
	if err != nil || audited || !bytes.Equal(buf.Bytes(), secret) {
		t.Fatalf("read-only export: %v (audited %v)", err, audited)
	}
	buf.Destroy()
	if _, _, err := ro.ExportSecret(ctx, "alice", []byte("not alice's password")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("read-only, wrong password: %v", err)
	}
	kr.Close()
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a read-only export changed the file")
	}

	// A tampered secret record: refused as an integrity failure, writable
	// or not.
	m = reopen(t, path)
	var raw []byte
	m.kr.View(func(tx *keyring.Tx) error { raw = append(raw, tx.RawSecret()...); return nil })
	raw[len(raw)-1] ^= 1
	m = rawPut(t, m, path, "meta", "secret", raw)
	if _, _, err := m.ExportSecret(ctx, "alice", []byte(pwAlice)); !errors.Is(err, unseal.ErrIntegrity) {
		t.Fatalf("tampered: %v", err)
	}
	m.kr.Close()
	kr, _ = keyring.Open(path, keyring.Options{ReadOnly: true})
	defer kr.Close()
	if _, _, err := New(kr, opts()).ExportSecret(ctx, "alice", []byte(pwAlice)); !errors.Is(err, unseal.ErrIntegrity) {
		t.Fatalf("tampered, read-only: %v", err)
	}
}

func TestCheckPasswordCountsLikeUnseal(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	m := newStoreAt(t, &now)
	for i := range freePerName {
		if err := m.CheckPassword(ctx, audit.KindCheck, "alice", []byte("not alice's password")); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("check %d: %v", i, err)
		}
	}
	// The unseal after checks waits as after unseals, and the other way.
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.Is(err, ErrBackoff) {
		t.Fatalf("unseal after %d failed checks: %v", freePerName, err)
	}
	if err := m.CheckPassword(ctx, audit.KindCheck, "alice", []byte(pwAlice)); !errors.Is(err, ErrBackoff) {
		t.Fatalf("check in backoff: %v", err)
	}
}

func TestCheckAndExportWaitInTheBudget(t *testing.T) {
	t.Parallel()
	m0, _ := newStore(t)
	o := opts()
	o.Budget = unseal.NewBudget(uint64(cheap.MemoryKiB), 0, 10*time.Millisecond)
	m := New(m0.kr, o)
	// Another derivation holds the whole budget: a check, a password
	// check and an export are refused as busy, and none counts as a failure.
	release, err := o.Budget.Acquire(ctx, uint64(cheap.MemoryKiB))
	if err != nil {
		t.Fatal(err)
	}
	for range freePerName + 1 {
		if _, err := m.Check(ctx, "alice", []byte("not alice's password")); !errors.Is(err, unseal.ErrBusy) {
			t.Fatalf("check over the budget: %v", err)
		}
	}
	if err := m.CheckPassword(ctx, audit.KindCheck, "alice", []byte(pwAlice)); !errors.Is(err, unseal.ErrBusy) {
		t.Fatalf("password check over the budget: %v", err)
	}
	if _, _, err := m.ExportSecret(ctx, "alice", []byte(pwAlice)); !errors.Is(err, unseal.ErrBusy) {
		t.Fatalf("export over the budget: %v", err)
	}
	release()
	if a := slotOf(t, mustSlots(t, m), "alice"); a.Failures != 0 {
		t.Fatalf("refusals for the budget counted as failures: %+v", a)
	}
	if _, err := m.Check(ctx, "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
}
