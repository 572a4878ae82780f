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
	// Unbind never removes an admin.
	if err := m.Unbind(ctx, "alice", []byte(pwAlice), "alice"); !errors.Is(err, ErrNotUnattended) {
		t.Fatalf("unbind an admin: %v", err)
	}
	if err := m.Unbind(ctx, "alice", []byte(pwAlice), "nobody"); !errors.Is(err, keyring.ErrNoSlot) {
		t.Fatalf("unbind a missing slot: %v", err)
	}
	if err := m.Unbind(ctx, "alice", []byte(pwAlice), "tang-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.UnsealKEK(ctx, "tang-1", kek, "x", pin); !errors.Is(err, keyring.ErrNoSlot) {
		t.Fatalf("unseal after unbind: %v", err)
	}
	recs, err := m.AuditRecords(audit.Filter{Admin: "tang-1"})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range recs {
		kinds = append(kinds, string(r.Kind)+"/"+string(r.Outcome))
	}
	want := "slot.bind/ok unseal/error unseal/ok unseal/error unseal/wrong_password slot.unbind/ok"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("audit of tang-1: %s, want %s", got, want)
	}
}

// A rekey hands an unattended slot the new DataKey without its server: it
// still opens with the same key afterwards, through its pending key.
func TestRekeyHandsOverUnattendedSlots(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	var kek []byte
	pin, err := m.Bind(ctx, "alice", []byte(pwAlice), "tang-1", fakeBinding(&kek))
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Rekey(ctx, "alice", []byte(pwAlice), false)
	if err != nil {
		t.Fatal(err)
	}
	// The rekey draws a new identity: whoever held the old DataKey knows
	// the old one. The old pin no longer unseals; the new one does, and
	// check prints it.
	if len(res.Identity) != 64 || res.Identity == pin {
		t.Fatalf("rekey: identity %q, before %q", res.Identity, pin)
	}
	if u, err := m.UnsealKEK(ctx, "tang-1", kek, "old pin", pin); !errors.Is(err, unseal.ErrIdentity) {
		u.Destroy()
		t.Fatalf("unattended unseal with the pin of before the rekey: %v", err)
	}
	u, err := m.UnsealKEK(ctx, "tang-1", kek, "after rekey", res.Identity)
	if err != nil || !bytes.Equal(u.Secret.Bytes(), secret) {
		t.Fatalf("unattended unseal after a rekey: %v", err)
	}
	u.Destroy()
	// And the file still verifies as a whole.
	if c, err := m.Check(ctx, "alice", []byte(pwAlice)); err != nil || !c.OK() || c.Identity != res.Identity {
		t.Fatalf("check after rekey: %v %v", err, c)
	}
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
