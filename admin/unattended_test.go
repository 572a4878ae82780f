package admin

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// fakeBinding is a BindSpec whose binding is the KEK itself behind a
// marker: what a Tang or TPM binding yields, without the server. It stands
// in for the real ones here; unseal/unattended and cmd/sealboxd test those.
func fakeBinding(kek *[]byte) BindSpec {
	return BindSpec{Kind: keyring.KindTang, Detail: "test", Build: func(_ context.Context, k []byte, _ []*keyring.Slot) ([]byte, error) {
		*kek = bytes.Clone(k)
		return append([]byte("fake:"), k...), nil
	}}
}

func TestBindUnsealKEKAndUnbind(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	var kek []byte
	if _, err := m.Bind(ctx, "alice", []byte("wrong"), "tang-1", fakeBinding(&kek)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("bind with a wrong password: %v", err)
	}
	if _, err := m.Bind(ctx, "alice", []byte(pwAlice), "alice", fakeBinding(&kek)); !errors.Is(err, ErrSlotExists) {
		t.Fatalf("bind over an admin's name: %v", err)
	}
	pin, err := m.Bind(ctx, "alice", []byte(pwAlice), "tang-1", fakeBinding(&kek))
	if err != nil || len(pin) != 64 {
		t.Fatalf("bind: %q %v", pin, err)
	}
	slots, _, err := m.UnattendedSlots()
	if err != nil || len(slots) != 1 || slots[0].Name != "tang-1" || !bytes.Equal(slots[0].Binding, append([]byte("fake:"), kek...)) {
		t.Fatalf("unattended slots: %v %+v", err, slots)
	}
	// The identity pin is the gate: none, or another keyring's, refuses.
	for _, other := range []string{"", strings.Repeat("0", 64)} {
		if _, err := m.UnsealKEK(ctx, "tang-1", kek, "tang test", other); !errors.Is(err, unseal.ErrIdentity) {
			t.Fatalf("pin %q: %v", other, err)
		}
	}
	u, err := m.UnsealKEK(ctx, "tang-1", kek, "tang test", pin)
	if err != nil || !bytes.Equal(u.Secret.Bytes(), secret) {
		t.Fatalf("unseal with the binding's key: %v", err)
	}
	u.Destroy()
	// check --as shows the same pin.
	if res, err := m.Check(ctx, "alice", []byte(pwAlice)); err != nil || res.Identity != pin || !res.OK() {
		t.Fatalf("check: %v %+v", err, res)
	}
	// A wrong key is an integrity error, and is recorded.
	bad := bytes.Clone(kek)
	bad[0] ^= 1
	if _, err := m.UnsealKEK(ctx, "tang-1", bad, "tang test", pin); !errors.Is(err, unseal.ErrBinding) || errclass.Of(err) != errclass.Integrity {
		t.Fatalf("wrong key: %v", err)
	}
	// A password never opens it: to a login it is an unknown name.
	if _, err := m.Unseal(ctx, "tang-1", kek); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("password login as an unattended slot: %v", err)
	}
	// An admin slot does not open with a key either.
	if _, err := m.UnsealKEK(ctx, "alice", kek, "x", pin); err == nil {
		t.Fatal("an admin slot opened with a binding key")
	}
	// Nor does remove take an unattended slot, with or without a rekey:
	// unbind does, and a rekey's removal would not list it among the
	// slots to bind again. The refusal is recorded against the slot.
	if err := m.RemoveAdmin(ctx, "alice", []byte(pwAlice), "tang-1"); !errors.Is(err, ErrNotAdmin) || !strings.Contains(err.Error(), "unbind tang-1") {
		t.Fatalf("remove of an unattended slot: %v", err)
	}
	if _, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{Remove: "tang-1"}); !errors.Is(err, ErrNotAdmin) {
		t.Fatalf("remove --rekey of an unattended slot: %v", err)
	}
	recs, _ := m.AuditRecords(audit.Filter{Admin: "tang-1"})
	if last := recs[len(recs)-1]; last.Kind != audit.KindAdminRekey || last.Outcome == audit.OK {
		t.Fatalf("the refused remove --rekey is not recorded against its target: %+v", last.Event)
	}
	// Unbind never removes an admin.
	if err := m.Unbind(ctx, "alice", []byte(pwAlice), "alice"); !errors.Is(err, ErrNotUnattended) {
		t.Fatalf("unbind an admin: %v", err)
	}
	if err := m.Unbind(ctx, "alice", []byte(pwAlice), "nobody"); !errors.Is(err, keyring.ErrNoSlot) || errclass.Of(err) != errclass.NotFound || strings.Contains(err.Error(), "no such admin") {
		t.Fatalf("unbind a missing slot: %v", err)
	}
	if err := m.Unbind(ctx, "alice", []byte(pwAlice), "tang-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.UnsealKEK(ctx, "tang-1", kek, "x", pin); !errors.Is(err, keyring.ErrNoSlot) {
		t.Fatalf("unseal after unbind: %v", err)
	}
	recs, err = m.AuditRecords(audit.Filter{Admin: "tang-1"})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range recs {
		kinds = append(kinds, string(r.Kind)+"/"+string(r.Outcome))
	}
	want := "slot.bind/ok unseal/error unseal/ok unseal/error unseal/wrong_password admin.remove/refused admin.rekey/refused slot.unbind/ok"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("audit of tang-1: %s, want %s", got, want)
	}
}

// A rekey binds every unattended slot again under a new key (Options.Remake)
// with a new hand-over key and no pending key: a hand-over would leave the
// new DataKey under a hand-over key that the old DataKey's holders can read
// from its escrow. Without Remake, or when a slot cannot be made again, the
// rekey changes nothing.
func TestRekeyRemakesUnattendedSlots(t *testing.T) {
	t.Parallel()
	m, path := newStore(t)
	var kek []byte
	pin, err := m.Bind(ctx, "alice", []byte(pwAlice), "tang-1", fakeBinding(&kek))
	if err != nil {
		t.Fatal(err)
	}
	before := rawSlotOf(t, m, "tang-1")
	if _, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{KeepUnattended: true}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unattended slots") {
		t.Fatalf("rekey with no way to make bindings: %v", err)
	}
	o := opts()
	o.Remake = func(context.Context, keyring.SlotKind, []byte, []byte) ([]byte, error) {
		return nil, errors.New("the TPM did not answer")
	}
	m = reopenWith(t, m, path, o)
	if _, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{KeepUnattended: true}); err == nil || !strings.Contains(err.Error(), `"tang-1" could not be`) || !strings.Contains(err.Error(), "the rekey changed nothing") {
		t.Fatalf("rekey when a slot cannot be made again: %v", err)
	}
	if !bytes.Equal(rawSlotOf(t, m, "tang-1"), before) {
		t.Fatal("a refused rekey changed the slot")
	}
	// It changed nothing but its own refused record.
	recs, err := m.AuditRecords(audit.Filter{Admin: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var refused []audit.Record
	for _, r := range recs {
		if r.Kind == audit.KindAdminRekey {
			refused = append(refused, r)
		}
	}
	if len(refused) != 2 || refused[1].Outcome != audit.Refused || !strings.Contains(refused[1].Detail, "tang-1") {
		t.Fatalf("records of the refused rekeys: %+v", refused)
	}

	var newKEK, oldBinding []byte
	o.Remake = func(_ context.Context, kind keyring.SlotKind, binding, k []byte) ([]byte, error) {
		if kind != keyring.KindTang {
			t.Errorf("remake of a %s", kind)
		}
		oldBinding, newKEK = bytes.Clone(binding), bytes.Clone(k)
		return append([]byte("fake:"), k...), nil
	}
	m = reopenWith(t, m, path, o)
	res, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{KeepUnattended: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(oldBinding, append([]byte("fake:"), kek...)) || bytes.Equal(newKEK, kek) {
		t.Fatal("the rekey did not remake the slot from its binding under a new key")
	}
	if len(res.Remade) != 1 || res.Remade[0] != "tang-1" || len(res.HandedOver) != 0 {
		t.Fatalf("rekey: remade %q, handed over %q", res.Remade, res.HandedOver)
	}
	var after *keyring.Slot
	m.kr.View(func(tx *keyring.Tx) error { after, err = tx.Slot("tang-1"); return err })
	if after.HasPending() || bytes.Equal(after.Escrow.Box[:], mustSlot(t, before).Escrow.Box[:]) {
		t.Fatal("after the rekey the unattended slot still has a pending key, or its old escrow")
	}
	// The rekey draws a new identity: whoever held the old DataKey knows
	// the old one. The old pin no longer unseals; the new one does, with
	// the new key only.
	if len(res.Identity) != 64 || res.Identity == pin {
		t.Fatalf("rekey: identity %q, before %q", res.Identity, pin)
	}
	if u, err := m.UnsealKEK(ctx, "tang-1", newKEK, "old pin", pin); !errors.Is(err, unseal.ErrIdentity) {
		u.Destroy()
		t.Fatalf("unattended unseal with the pin of before the rekey: %v", err)
	}
	if u, err := m.UnsealKEK(ctx, "tang-1", kek, "old key", res.Identity); err == nil {
		u.Destroy()
		t.Fatal("the slot's key of before the rekey still opens it")
	}
	u, err := m.UnsealKEK(ctx, "tang-1", newKEK, "after rekey", res.Identity)
	if err != nil || !bytes.Equal(u.Secret.Bytes(), secret) {
		t.Fatalf("unattended unseal after a rekey: %v", err)
	}
	u.Destroy()
	// And the file still verifies as a whole.
	if c, err := m.Check(ctx, "alice", []byte(pwAlice)); err != nil || !c.OK() || c.Identity != res.Identity {
		t.Fatalf("check after rekey: %v %v", err, c)
	}
}

func rawSlotOf(t *testing.T, m *Manager, name string) []byte {
	t.Helper()
	var raw []byte
	m.kr.View(func(tx *keyring.Tx) error { raw = bytes.Clone(tx.RawSlot(name)); return nil })
	if raw == nil {
		t.Fatalf("no slot %q", name)
	}
	return raw
}

func mustSlot(t *testing.T, raw []byte) *keyring.Slot {
	t.Helper()
	s, err := keyring.ParseSlot("tang-1", raw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reopenWith closes m's keyring and opens path again with o.
func reopenWith(t *testing.T, m *Manager, path string, o Options) *Manager {
	t.Helper()
	m.kr.Close()
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	return New(kr, o)
}

// A threshold replaces its members in the same change; a member that
// changed since the binding was made stops it.
func TestBindReplacesMembers(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	var k1, k2, k3 []byte
	for name, k := range map[string]*[]byte{"tang-1": &k1, "tang-2": &k2} {
		if _, err := m.Bind(ctx, "alice", []byte(pwAlice), name, fakeBinding(k)); err != nil {
			t.Fatal(err)
		}
	}
	spec := fakeBinding(&k3)
	spec.Kind, spec.Replaces = keyring.KindThreshold, []string{"tang-1", "tang-2"}
	inner := spec.Build
	spec.Build = func(ctx context.Context, k []byte, members []*keyring.Slot) ([]byte, error) {
		if len(members) != 2 || members[0].Name != "tang-1" || members[1].Name != "tang-2" {
			t.Errorf("members given to Build: %v", members)
		}
		return inner(ctx, k, members)
	}
	if _, err := m.Bind(ctx, "alice", []byte(pwAlice), "site", spec); err != nil {
		t.Fatal(err)
	}
	slots, _, _ := m.UnattendedSlots()
	if len(slots) != 1 || slots[0].Name != "site" || slots[0].Kind != keyring.KindThreshold {
		t.Fatalf("after the threshold: %+v", slots)
	}
	// Members must be unattended slots.
	spec.Replaces = []string{"alice"}
	if _, err := m.Bind(ctx, "alice", []byte(pwAlice), "site2", spec); !errors.Is(err, ErrNotUnattended) {
		t.Fatalf("an admin as a member: %v", err)
	}
}

// An unattended slot that a rekey by an earlier build handed over (its
// pending key under a hand-over key the old DataKey's holders know) is a
// finding of check, and a rekey now clears it.
func TestCheckFindsAnUnattendedSlotHandedOver(t *testing.T) {
	t.Parallel()
	m, path := newStore(t)
	var kek []byte
	if _, err := m.Bind(ctx, "alice", []byte(pwAlice), "tang-1", fakeBinding(&kek)); err != nil {
		t.Fatal(err)
	}
	// What an earlier rekey wrote, without the rekey: the slot handed over
	// to the DataKey it already has.
	s, err := m.authenticate(ctx, audit.KindCheck, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.change(ctx, s, op{kind: audit.KindSlotReseal, target: "tang-1"}, func(t *txn) error {
		sl, err := t.Slot("tang-1")
		if err != nil {
			return err
		}
		next, err := t.s.key.HandOver(sl, t.s.key)
		if err != nil {
			return err
		}
		return t.PutSlot(next)
	})
	s.close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Check(ctx, "alice", []byte(pwAlice))
	if err != nil || c.OK() || len(c.HandedOver) != 1 || c.HandedOver[0] != "tang-1" || !c.Report.OK() {
		t.Fatalf("check of a handed-over unattended slot: %v %+v", err, c)
	}
	o := opts()
	o.Remake = func(_ context.Context, _ keyring.SlotKind, _, k []byte) ([]byte, error) {
		return append([]byte("fake:"), k...), nil
	}
	m = reopenWith(t, m, path, o)
	if _, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{KeepUnattended: true}); err != nil {
		t.Fatal(err)
	}
	if c, err := m.Check(ctx, "alice", []byte(pwAlice)); err != nil || !c.OK() || len(c.HandedOver) != 0 {
		t.Fatalf("check after a rekey: %v %+v", err, c)
	}
}

// By default a rekey removes the unattended slots: whoever could change the
// file before it may have chosen their servers. It needs no way to make
// bindings, and says which it removed.
func TestRekeyRemovesUnattendedSlotsByDefault(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	var kek []byte
	if _, err := m.Bind(ctx, "alice", []byte(pwAlice), "tang-1", fakeBinding(&kek)); err != nil {
		t.Fatal(err)
	}
	res, err := m.Rekey(ctx, "alice", []byte(pwAlice), RekeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.DroppedUnattended) != 1 || res.DroppedUnattended[0] != "tang-1" || len(res.Remade) != 0 {
		t.Fatalf("rekey: dropped %q, remade %q", res.DroppedUnattended, res.Remade)
	}
	if slots, _, err := m.UnattendedSlots(); err != nil || len(slots) != 0 {
		t.Fatalf("after the rekey: %d unattended slots, %v", len(slots), err)
	}
	if c, err := m.Check(ctx, "alice", []byte(pwAlice)); err != nil || !c.OK() {
		t.Fatalf("check after rekey: %v %+v", err, c)
	}
}
