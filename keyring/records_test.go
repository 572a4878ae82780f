package keyring

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseSlotExactLength(t *testing.T) {
	t.Parallel()
	s := &Slot{Name: "alice", Kind: KindAdmin, Params: Params{3, 65536, 4}, Created: 5}
	s.Salt[0], s.Nonce[0], s.Wrapped[0], s.PublicKey[0], s.MAC[0] = 1, 2, 3, 4, 5
	good := s.marshal()
	if len(good) != slotSize {
		t.Fatalf("marshal gave %d bytes, want %d", len(good), slotSize)
	}
	got, err := ParseSlot("alice", good)
	if err != nil || !got.Equal(s) {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	// With an expiry and a pending key.
	s2 := *s
	s2.Expires = 99
	s2.Pending = &[PendingSize]byte{7}
	got, err = ParseSlot("alice", s2.marshal())
	if err != nil || !got.Equal(&s2) || got.Pending[0] != 7 || got.Expires != 99 {
		t.Fatalf("round trip with pending: %v %+v", err, got)
	}
	// A version 1 record (no expiry, no pending) still reads.
	v1rec := make([]byte, 0, slotV1Size)
	v1rec = append(v1rec, 1)
	v1rec = append(v1rec, good[1:2+paramsSize+SaltSize+NonceSize+WrappedSize+KeySize+8]...)
	v1rec = append(v1rec, s.MAC[:]...)
	if got, err := ParseSlot("alice", v1rec); err != nil || got.Created != 5 || got.Pending != nil || got.MAC != s.MAC {
		t.Fatalf("v1 record: %v %+v", err, got)
	}
	flags := append([]byte{}, good...)
	flags[slotSize-MACSize-PendingSize-1] = 2
	if _, err := ParseSlot("alice", flags); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unknown flags: %v", err)
	}
	for _, b := range [][]byte{good[:len(good)-1], append(append([]byte{}, good...), 0), nil, good[:1]} {
		if _, err := ParseSlot("alice", b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%d bytes: got %v, want ErrCorrupt", len(b), err)
		}
	}
	ver := append([]byte{}, good...)
	ver[0] = 3
	if _, err := ParseSlot("alice", ver); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "record version 3") {
		t.Errorf("version 3: %v", err)
	}
	kind := append([]byte{}, good...)
	kind[1] = 9
	if _, err := ParseSlot("alice", kind); !errors.Is(err, ErrCorrupt) {
		t.Errorf("kind 9: %v", err)
	}
}

func TestParseClient(t *testing.T) {
	t.Parallel()
	c := &Client{Name: "svc", UID: 1000, GID: 50, HasGID: true, Status: ClientDisabled, Created: 1, Updated: 2}
	good := c.marshal()
	got, err := ParseClient("svc", good)
	if err != nil || *got != *c {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"short":   func(b []byte) []byte { return b[:len(b)-1] },
		"long":    func(b []byte) []byte { return append(b, 0) },
		"version": func(b []byte) []byte { b[0] = 7; return b },
		"flags":   func(b []byte) []byte { b[9] = 2; return b },
		"status0": func(b []byte) []byte { b[10] = 0; return b },
		"status4": func(b []byte) []byte { b[10] = 4; return b },
	} {
		if _, err := ParseClient("svc", mutate(append([]byte{}, good...))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}

func TestParseSecretLengths(t *testing.T) {
	t.Parallel()
	s := &Secret{Version: 3, Ciphertext: bytes.Repeat([]byte{1}, 40)}
	good := s.marshal()
	got, err := ParseSecret(good)
	if err != nil || got.Version != 3 || !bytes.Equal(got.Ciphertext, s.Ciphertext) {
		t.Fatalf("round trip: %v", err)
	}
	cases := map[string][]byte{
		"truncated":   good[:len(good)-1],
		"trailing":    append(append([]byte{}, good...), 0),
		"header only": good[:secretHdrSize-1],
	}
	huge := append([]byte{}, good...)
	huge[8+NonceSize] = 0xFF // length field says ~4 GiB
	cases["length field huge"] = huge
	tiny := append([]byte{}, good[:secretHdrSize]...)
	tiny[8+NonceSize], tiny[8+NonceSize+1], tiny[8+NonceSize+2], tiny[8+NonceSize+3] = 0, 0, 0, TagSize
	cases["empty plaintext"] = append(tiny, make([]byte, TagSize)...)
	for name, b := range cases {
		if _, err := ParseSecret(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}

func TestParseHeaderAndRegistryLengths(t *testing.T) {
	t.Parallel()
	h := &Header{Policy: Params{3, 65536, 4}, Created: 9}
	if _, err := parseHeader(h.marshal()[1:]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short header: %v", err)
	}
	r := &Registry{Generation: 4}
	if _, err := parseRegistry(append(r.marshal(), 1)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("long registry: %v", err)
	}
}

func TestValidName(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"alice", "a", "build-bot.01", "x_y", strings.Repeat("a", 64)} {
		if err := ValidName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Alice", "-x", ".hidden", "a/b", "../x", "a b", "a\x00b", strings.Repeat("a", 65), "é"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
