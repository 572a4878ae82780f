package admin

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

func TestInviteAndEnroll(t *testing.T) {
	// not parallel: reads unseal's process-wide work counter
	now := time.Unix(1_800_000_000, 0)
	path := filepath.Join(t.TempDir(), "keyring.db")
	if err := Init(ctx, path, "alice", []byte(pwAlice), secret, opts()); err != nil {
		t.Fatal(err)
	}
	kr, _ := keyring.Open(path, keyring.Options{})
	defer kr.Close()
	m := New(kr, clockAt(&now))
	code, expires, err := m.Invite(ctx, "alice", []byte(pwAlice), "bob", time.Hour)
	if err != nil || !expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("invite: %v %v", expires, err)
	}
	// An invite is not an admin: the last-admin guard still holds.
	if err := m.RemoveAdmin(ctx, "alice", []byte(pwAlice), "alice"); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("last admin with an invite pending: %v", err)
	}
	// A wrong code fails and leaves the invite in place.
	wrong, _ := unseal.NewCode()
	if err := m.Enroll(ctx, "bob", wrong, []byte(pwBob)); !errors.Is(err, ErrInvite) {
		t.Fatalf("wrong code: %v", err)
	}
	if err := m.Enroll(ctx, "bob", []byte("not a code at all"), []byte(pwBob)); !errors.Is(err, ErrInvite) {
		t.Fatalf("malformed code: %v", err)
	}
	// The right code, typed sloppily, enrolls bob with his own password.
	typed := bytes.ToLower(bytes.ReplaceAll(code, []byte("-"), []byte(" ")))
	if err := m.Enroll(ctx, "bob", typed, []byte(pwBob)); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	mustUnseal(t, m, "bob", pwBob)
	// Single use.
	if err := m.Enroll(ctx, "bob", code, []byte(pwCarol)); !errors.Is(err, ErrInvite) {
		t.Fatalf("reused invite: %v", err)
	}
	mustUnseal(t, m, "bob", pwBob)
	// Expired invites do not open, before any derivation.
	code2, _, err := m.Invite(ctx, "alice", []byte(pwAlice), "carol", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	n0, _ := unseal.Work()
	err = m.Enroll(ctx, "carol", code2, []byte(pwCarol))
	if !errors.Is(err, ErrInvite) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired invite: %v", err)
	}
	if n1, _ := unseal.Work(); n1 != n0 {
		t.Fatal("an expired invite cost a derivation")
	}
	// Names already taken, and the reserved one, are refused.
	if _, _, err := m.Invite(ctx, "alice", []byte(pwAlice), "bob", time.Hour); !errors.Is(err, keyring.ErrSlotExists) {
		t.Fatalf("invite for an existing admin: %v", err)
	}
	if _, _, err := m.Invite(ctx, "alice", []byte(pwAlice), RecoveryName, time.Hour); !errors.Is(err, ErrReservedName) {
		t.Fatalf("invite for the reserved name: %v", err)
	}
}

func TestRecoveryCode(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	if m.HasRecovery() {
		t.Fatal("recovery before one was made")
	}
	code, err := m.RegenerateRecovery(ctx, "alice", []byte(pwAlice))
	if err != nil || !m.HasRecovery() {
		t.Fatalf("regenerate: %v", err)
	}
	u, err := m.UnsealRecovery(ctx, code)
	if err != nil || !bytes.Equal(u.Secret.Bytes(), secret) {
		t.Fatalf("unseal with the recovery code: %v", err)
	}
	u.Secret.Destroy()
	u.LogKeys.Destroy()
	wrong, _ := unseal.NewCode()
	if _, err := m.UnsealRecovery(ctx, wrong); !errors.Is(err, ErrRecovery) {
		t.Fatalf("wrong code: %v", err)
	}
	// A new code replaces the old one.
	code2, err := m.RegenerateRecovery(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.UnsealRecovery(ctx, code); !errors.Is(err, ErrRecovery) {
		t.Fatalf("the old code after regenerating: %v", err)
	}
	u, err = m.UnsealRecovery(ctx, code2)
	if err != nil {
		t.Fatal(err)
	}
	u.Secret.Destroy()
	// The recovery code is not an admin.
	if err := m.AddAdmin(ctx, RecoveryName, code2, "bob", []byte(pwBob)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("the recovery code as an actor: %v", err)
	}
	// Audited as such.
	recs, _ := m.AuditRecords(audit.Filter{Admin: RecoveryName})
	found := false
	for _, r := range recs {
		if r.Kind == "unseal" && r.Outcome == "ok" && r.Detail == "recovery code" && r.Keyed {
			found = true
		}
	}
	if !found {
		t.Fatalf("no keyed recovery unseal record in %+v", recs)
	}
}

func TestRotate(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	next := []byte("the rotated master secret")
	if _, err := m.Rotate(ctx, "alice", []byte("wrong password!!"), next); !errors.Is(err, ErrWrongPassword) {
		t.Fatal(err)
	}
	mustUnseal(t, m, "alice", pwAlice) // unchanged
	v, err := m.Rotate(ctx, "alice", []byte(pwAlice), next)
	if err != nil || v != 2 {
		t.Fatalf("rotate: %d %v", v, err)
	}
	u, err := m.Unseal(ctx, "alice", []byte(pwAlice))
	if err != nil || !bytes.Equal(u.Secret.Bytes(), next) || u.Version != 2 {
		t.Fatalf("after rotate: %q v%d %v", u.Secret.Bytes(), u.Version, err)
	}
	u.Secret.Destroy()
}

// The scenario rekey exists for: bob is removed, but kept a copy of the
// file. After a rekey, his password and that copy open nothing written
// since, while the other admins carry on with their passwords unchanged.
func TestRemoveRekeyLocksOutAnOldCopy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, kr, keys := rekeyable(t, filepath.Join(dir, "keyring.db"))
	for _, a := range [][2]string{{"bob", pwBob}, {"carol", pwCarol}} {
		if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), a[0], []byte(a[1])); err != nil {
			t.Fatal(err)
		}
	}
	recovery, err := m.RegenerateRecovery(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	invite, _, err := m.Invite(ctx, "alice", []byte(pwAlice), "dave", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Bob keeps a copy of the file while he is still an admin.
	var copyBuf bytes.Buffer
	if _, err := m.Backup(ctx, &copyBuf); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "bobs-copy.db")
	os.WriteFile(old, copyBuf.Bytes(), 0o600)
	if err := m.RemoveAdmin(ctx, "alice", []byte(pwAlice), "bob"); err != nil {
		t.Fatal(err)
	}

	res, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{})
	if err != nil {
		t.Fatalf("rekey: %v", err)
	}
	if len(*keys) != 1 {
		t.Fatal("OnCommit did not get the new log keys")
	}
	if res.RecoveryCode == nil || len(res.DroppedInvites) != 1 || res.DroppedInvites[0] != "dave" || len(res.HandedOver) != 1 || res.HandedOver[0] != "carol" {
		t.Fatalf("rekey result %+v", res)
	}
	rotated := []byte("rotated after bob left")
	if _, err := m.Rotate(ctx, "alice", []byte(pwAlice), rotated); err != nil {
		t.Fatal(err)
	}

	// Bob opens his slot in the old copy: he gets the old DataKey...
	okr, err := keyring.Open(old, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var oldKey *unseal.Key
	okr.View(func(tx *keyring.Tx) error {
		h, _ := tx.Header()
		s, _ := tx.Slot("bob")
		oldKey, err = unseal.OpenSlot(h, s, []byte(pwBob), memlock.Options{AllowUnlocked: true})
		return nil
	})
	okr.Close()
	if err != nil {
		t.Fatalf("bob's password on his old copy: %v", err)
	}
	defer oldKey.Destroy()
	// ...which opens neither the current secret nor anything else now.
	kr.View(func(tx *keyring.Tx) error {
		sec, _ := tx.Secret()
		if buf, err := oldKey.DecryptSecret(sec, memlock.Options{AllowUnlocked: true}); !errors.Is(err, unseal.ErrSecret) {
			buf.Destroy()
			t.Errorf("the old DataKey decrypts the secret written after the rekey: %v", err)
		}
		if rep, _ := oldKey.VerifyState(tx, nil); !rep.Untrusted {
			t.Error("the old DataKey verifies the state root signed by the rekey")
		}
		for _, name := range []string{"alice", "carol", RecoveryName} {
			s, err := tx.Slot(name)
			if err != nil {
				t.Fatalf("slot %s after the rekey: %v", name, err)
			}
			h, _ := tx.Header()
			if _, err := unseal.OpenSlot(h, s, []byte(pwBob), memlock.Options{AllowUnlocked: true}); err == nil {
				t.Errorf("bob's password opens %s's slot", name)
			}
		}
		return nil
	})

	// Carol was not there: she unseals with her unchanged password, her slot
	// folds the new key in, and the rekey is no longer pending for her.
	u := mustUnsealSecret(t, m, "carol", pwCarol, rotated)
	_ = u
	admins, _ := m.ListAdmins()
	for _, a := range admins {
		if a.Name == "carol" && a.Pending {
			t.Error("carol's slot still has the rekey pending after her login")
		}
		if a.Name == RecoveryName && a.Pending {
			t.Error("the recovery slot was replaced: it should open the new key directly")
		}
		if a.Name == "dave" {
			t.Error("the invite outlived the rekey")
		}
	}
	mustUnsealSecret(t, m, "carol", pwCarol, rotated)
	mustUnsealSecret(t, m, "alice", pwAlice, rotated)
	// The old recovery code and the old invite open nothing any more; the
	// recovery code the rekey printed does.
	if _, err := m.UnsealRecovery(ctx, recovery); !errors.Is(err, ErrRecovery) {
		t.Fatalf("the old recovery code after the rekey: %v", err)
	}
	if err := m.Enroll(ctx, "dave", invite, []byte("dave's own passphrase")); !errors.Is(err, ErrInvite) {
		t.Fatalf("the old invite after the rekey: %v", err)
	}
	ur, err := m.UnsealRecovery(ctx, res.RecoveryCode)
	if err != nil || !bytes.Equal(ur.Secret.Bytes(), rotated) {
		t.Fatalf("the new recovery code: %v", err)
	}
	ur.Destroy()
	// The audit chain verifies across the rekey, with the new key.
	rep, err := m.VerifyAudit(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatalf("audit across the rekey: %v", err)
	}
	var rekeyed bool
	recs, _ := m.AuditRecords(audit.Filter{})
	for _, r := range recs {
		rekeyed = rekeyed || (r.Kind == "admin.rekey" && r.Outcome == "ok")
	}
	if !rekeyed || rep.Events.Records != len(recs) {
		t.Fatalf("audit: rekey recorded %v, %d verified of %d", rekeyed, rep.Events.Records, len(recs))
	}
}

func mustUnsealSecret(t *testing.T, m *Manager, name, pw string, want []byte) *Unsealed {
	t.Helper()
	u, err := m.Unseal(ctx, name, []byte(pw))
	if err != nil {
		t.Fatalf("unseal as %s: %v", name, err)
	}
	t.Cleanup(u.Destroy)
	if !bytes.Equal(u.Secret.Bytes(), want) {
		t.Fatalf("%s unsealed %q, want %q", name, u.Secret.Bytes(), want)
	}
	if !u.Report.OK() {
		t.Fatalf("registry after unseal as %s: %v", name, u.Report.Err())
	}
	return u
}

func TestSlotBelowPolicyIsUpgradedAtLogin(t *testing.T) {
	m, _ := newStore(t) // not parallel: reads unseal's process-wide work counter
	stronger := keyring.Params{Time: 2, MemoryKiB: 128, Threads: 1}
	// A policy raised behind sealbox's back is not honoured: the header no
	// longer matches the state root, and nothing is rewrapped at the
	// attacker's cost.
	var orig *keyring.Header
	m.kr.Update(func(tx *keyring.Tx) error {
		orig, _ = tx.Header()
		h := *orig
		h.Policy = stronger
		return tx.PutHeader(&h)
	})
	n0, _ := unseal.Work()
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.Is(err, unseal.ErrIntegrity) {
		t.Fatalf("unseal with a raised header policy: %v", err)
	}
	if n1, _ := unseal.Work(); n1-n0 != 1 {
		t.Fatalf("%d derivations, want only the login's", n1-n0)
	}
	m.kr.Update(func(tx *keyring.Tx) error { return tx.PutHeader(orig) })
	// Raised by an admin, it is.
	if err := m.SetPolicy(ctx, "alice", []byte(pwAlice), stronger); err != nil {
		t.Fatal(err)
	}
	mustUnseal(t, m, "alice", pwAlice)
	admins, _ := m.ListAdmins()
	if admins[0].Time != 2 || admins[0].Memory != 128 {
		t.Fatalf("slot after login: %+v, want the policy %v", admins[0], stronger)
	}
	recs, _ := m.AuditRecords(audit.Filter{Admin: "alice"})
	if recs[len(recs)-2].Kind != "admin.refresh" {
		t.Fatalf("no refresh record: %+v", recs[len(recs)-2])
	}
	mustUnseal(t, m, "alice", pwAlice)
}

func TestBackupOpens(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	var buf bytes.Buffer
	n, err := m.Backup(ctx, &buf)
	if err != nil || n != int64(buf.Len()) || n == 0 {
		t.Fatalf("backup: %d %v", n, err)
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	os.WriteFile(path, buf.Bytes(), 0o600)
	mustUnseal(t, reopen(t, path), "alice", pwAlice)
}

// RekeyOptions.Remove takes the admin out in the rekey's own transaction:
// refused for the actor and for a name no slot has (nothing changes), and
// on success recorded as admin.remove then admin.rekey, on a chain that
// verifies across the key change.
func TestRekeyRemovesInItsTransaction(t *testing.T) {
	t.Parallel()
	m, kr, _ := rekeyable(t, filepath.Join(t.TempDir(), "keyring.db"))
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	commitment := func() [32]byte {
		var c [32]byte
		kr.View(func(tx *keyring.Tx) error {
			h, err := tx.Header()
			if err == nil {
				c = h.Commitment
			}
			return err
		})
		return c
	}
	before := commitment()
	if _, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{Remove: "alice"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("removing the actor in a rekey: %v", err)
	}
	if _, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{Remove: "nobody"}); !errors.Is(err, keyring.ErrNoSlot) {
		t.Fatalf("removing a missing slot in a rekey: %v", err)
	}
	if commitment() != before {
		t.Fatal("a refused remove-and-rekey replaced the DataKey")
	}
	if _, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{Remove: "bob"}); err != nil {
		t.Fatal(err)
	}
	if commitment() == before {
		t.Fatal("the DataKey was not replaced")
	}
	rep, err := m.VerifyAudit(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := m.AuditRecords(audit.Filter{})
	if rep.Events.Records != len(recs) || len(recs) < 2 {
		t.Fatalf("%d of %d records verified", rep.Events.Records, len(recs))
	}
	rm, rk := recs[len(recs)-2], recs[len(recs)-1]
	if rm.Kind != audit.KindAdminRemove || rm.Target != "bob" || rm.Outcome != audit.OK || rk.Kind != audit.KindAdminRekey || rk.Outcome != audit.OK {
		t.Fatalf("the last two records: %+v, %+v", rm.Event, rk.Event)
	}
	if _, err := m.Unseal(ctx, "bob", []byte(pwBob)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("bob after his removal: %v", err)
	}
	// The recovery code is a slot remove takes too: removed in a rekey,
	// it gets no successor (none is printed that would open nothing).
	if _, err := m.RegenerateRecovery(ctx, "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	res, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{Remove: RecoveryName})
	if err != nil || res.RecoveryCode != nil || m.HasRecovery() {
		t.Fatalf("removing the recovery code in a rekey: %v, a code returned %v, a recovery slot left %v", err, res != nil && res.RecoveryCode != nil, m.HasRecovery())
	}
}

// rekeyable makes a keyring with admin alice at path and its manager, which
// keeps the log keys each rekey hands over (as sealboxd does) in *keys,
// destroyed when the test ends.
func rekeyable(t *testing.T, path string) (m *Manager, kr *keyring.Keyring, keys *[]*memlock.Buffer) {
	t.Helper()
	kr = initKeyring(t, path)
	keys = new([]*memlock.Buffer)
	t.Cleanup(func() {
		for _, k := range *keys {
			k.Destroy()
		}
	})
	o := opts()
	o.OnCommit = func(c *Commit) {
		if c.LogKeys != nil {
			*keys = append(*keys, c.LogKeys)
		}
	}
	return New(kr, o), kr, keys
}

// A recovery code removed by another admin while a rekey derives (after it
// made the successor's slot, before its transaction) ends the rekey with
// ErrChanged: the successor's code would otherwise be handed out opening
// nothing. Nothing changes; the rekey again succeeds with no code.
func TestRekeyRefusesWhenTheRecoveryCodeGoesMeanwhile(t *testing.T) {
	t.Parallel()
	kr := initKeyring(t, filepath.Join(t.TempDir(), "keyring.db"))
	var derivations atomic.Int32
	var armed atomic.Bool
	var meanwhile atomic.Pointer[func()]
	o := opts()
	// After the rekey's second derivation (alice's new slot), it looks for
	// a recovery code; the next clock reading is in the making of the
	// successor's slot, before the rekey's transaction.
	o.Progress = func(what string, _ keyring.Params) {
		if strings.Contains(what, "alice") && derivations.Add(1) == 2 {
			armed.Store(true)
		}
	}
	o.Now = func() time.Time {
		if armed.CompareAndSwap(true, false) {
			if f := meanwhile.Swap(nil); f != nil {
				(*f)()
			}
		}
		return time.Now()
	}
	m := New(kr, o)
	for _, a := range [][2]string{{"bob", pwBob}, {"carol", pwCarol}} {
		if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), a[0], []byte(a[1])); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.RegenerateRecovery(ctx, "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	var cerr error
	f := func() { cerr = m.RemoveAdmin(ctx, "bob", []byte(pwBob), RecoveryName) }
	derivations.Store(0)
	meanwhile.Store(&f)
	res, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{Remove: "carol"})
	if cerr != nil || m.HasRecovery() {
		t.Fatalf("the recovery code was not removed meanwhile: %v", cerr)
	}
	if !errors.Is(err, ErrChanged) || res != nil {
		t.Fatalf("a rekey whose recovery code went meanwhile: %v (a result returned: %v)", err, res != nil)
	}
	if _, err := m.Unseal(ctx, "carol", []byte(pwCarol)); err != nil {
		t.Fatalf("carol after the refused rekey: %v", err)
	}
	res, err = m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{Remove: "carol"})
	if err != nil || res.RecoveryCode != nil {
		t.Fatalf("the rekey again: %v, a code %v", err, res != nil && res.RecoveryCode != nil)
	}
}

// initKeyring makes a keyring with admin alice at path and opens it; it is
// closed when the test ends.
func initKeyring(t *testing.T, path string) *keyring.Keyring {
	t.Helper()
	if err := Init(ctx, path, "alice", []byte(pwAlice), secret, opts()); err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	return kr
}
