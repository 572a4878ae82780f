package unseal

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sealbox/sealbox/keyring"
)

func TestPendingKeyFoldsIntoASlotAfterRekey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.slot(t, "alice", "alice password 1")
	bob := f.slot(t, "bob", "bob's password 12")
	// Alice rekeys; bob is not there.
	k2, err := f.key.Rekeyed(mo)
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Destroy()
	h2 := *f.h
	h2.Commitment = k2.Commitment()
	bob2, err := k2.SealPending(bob)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenSlot(&h2, bob2, []byte("bob's password 12"), mo)
	if err != nil {
		t.Fatalf("bob after the rekey: %v", err)
	}
	defer got.Destroy()
	if !got.Folded || !bytes.Equal(got.dataKey(), k2.dataKey()) {
		t.Fatalf("folded %v, key is the new one %v", got.Folded, bytes.Equal(got.dataKey(), k2.dataKey()))
	}
	// Without the pending key the old slot is just wrong for the new header.
	if _, err := OpenSlot(&h2, alice, []byte("alice password 1"), mo); !errors.Is(err, ErrCommitment) {
		t.Fatalf("an old slot without pending: %v", err)
	}
	// A pending key sealed to another slot's public key does not open.
	swapped := *bob2
	swapped.PublicKey = alice.PublicKey
	k2.SignSlot(&swapped)
	if _, err := OpenSlot(&h2, &swapped, []byte("bob's password 12"), mo); err == nil {
		t.Fatal("a slot with another's public key opened")
	}
	// A damaged pending key is an integrity error, not a wrong password.
	bad := *bob2
	bad.Pending = new([keyring.PendingSize]byte)
	*bad.Pending = *bob2.Pending
	bad.Pending[50] ^= 1
	k2.SignSlot(&bad)
	if _, err := OpenSlot(&h2, &bad, []byte("bob's password 12"), mo); !errors.Is(err, ErrCommitment) {
		t.Fatalf("damaged pending: %v", err)
	}
	// The pending key does not help someone without bob's password.
	if _, err := OpenSlot(&h2, bob2, []byte("alice password 1"), mo); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password on a pending slot: %v", err)
	}
}

func TestCodes(t *testing.T) {
	t.Parallel()
	code, err := NewCode()
	if err != nil {
		t.Fatal(err)
	}
	if len(code) != 39 || bytes.Count(code, []byte("-")) != 7 {
		t.Fatalf("code %q", code)
	}
	other, _ := NewCode()
	if bytes.Equal(code, other) {
		t.Fatal("two codes alike")
	}
	typed := bytes.ToLower(bytes.ReplaceAll(code, []byte("-"), []byte(" ")))
	norm, ok := NormalizeCode(typed)
	want, _ := NormalizeCode(code)
	if !ok || !bytes.Equal(norm, want) || bytes.Contains(norm, []byte("-")) {
		t.Fatalf("normalized %q %v, want %q", norm, ok, want)
	}
	for _, bad := range []string{"", "short", string(code) + "A", "0000-0000-0000-0000-0000-0000-0000-0000", "a password that is not a code"} {
		if _, ok := NormalizeCode([]byte(bad)); ok {
			t.Errorf("%q accepted as a code", bad)
		}
	}
	f := newFixture(t)
	s, err := f.key.SealCodeSlot("recovery", keyring.KindRecovery, want, 1, 0)
	if err != nil || s.Params != CodeParams {
		t.Fatalf("%v %v", s.Params, err)
	}
	k, err := OpenSlot(f.h, s, norm, mo)
	if err != nil {
		t.Fatal(err)
	}
	k.Destroy()
	if _, err := f.key.SealCodeSlot("alice", keyring.KindAdmin, want, 1, 0); err == nil {
		t.Fatal("a code slot of kind admin")
	}
	inv, _ := f.key.SealCodeSlot("bob", keyring.KindInvite, want, 1, 99)
	if inv.Expires != 99 || !f.key.VerifySlot(inv) {
		t.Fatalf("invite expiry not signed: %+v", inv)
	}
}
