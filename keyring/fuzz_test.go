package keyring

import (
	"bytes"
	"testing"
)

// Every decoder of stored records: no input panics, and whatever decodes
// encodes back to the same bytes (nothing is silently ignored or misread).

func FuzzParseSlot(f *testing.F) {
	s := &Slot{Name: "alice", Kind: KindAdmin, Params: Params{3, 65536, 4}, Created: 5, Expires: 9}
	f.Add(s.marshal())
	s.Pending = &[PendingSize]byte{1, 2, 3}
	f.Add(s.marshal())
	f.Add(make([]byte, slotV1Size))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSlot("x", b)
		if err != nil {
			return
		}
		if b[0] == slotRecVersion && !bytes.Equal(s.marshal(), b) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzParseClient(f *testing.F) {
	c := &Client{Name: "svc", UID: 1000, GID: 5, HasGID: true, Status: ClientActive, Created: 1, Updated: 2}
	f.Add(c.marshal())
	f.Add(make([]byte, clientSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseClient("x", b)
		if err != nil {
			return
		}
		if out := c.marshal(); !bytes.Equal(out, b) {
			// The GID bytes of a record without the gid flag are kept
			// verbatim by marshal; anything else must round-trip.
			t.Fatalf("round trip differs:\n%x\n%x", b, out)
		}
	})
}

func FuzzParseSecret(f *testing.F) {
	s := &Secret{Version: 3, Ciphertext: bytes.Repeat([]byte{1}, 40)}
	f.Add(s.marshal())
	f.Add(make([]byte, secretHdrSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSecret(b)
		if err != nil {
			return
		}
		if !bytes.Equal(s.marshal(), b) {
			t.Fatal("round trip differs")
		}
	})
}

func FuzzParseHeaderAndRegistry(f *testing.F) {
	h := &Header{Policy: Params{3, 65536, 4}, Created: 9}
	f.Add(h.marshal())
	r := &Registry{Generation: 4}
	f.Add(r.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := parseHeader(b); err == nil && !bytes.Equal(h.marshal(), b) {
			t.Fatal("header round trip differs")
		}
		if r, err := parseRegistry(b); err == nil && !bytes.Equal(r.marshal(), b) {
			t.Fatal("registry round trip differs")
		}
	})
}
