package keyring

import (
	"bytes"
	"testing"
)

// Every decoder of stored records: no input panics, and whatever decodes
// encodes back to the same bytes (nothing is silently ignored or misread).

func FuzzParseSlot(f *testing.F) {
	s := &Slot{Name: "alice", Kind: KindAdmin, Params: Params{3, 65536, 4}, Created: 5, Expires: 9}
	f.Add(s.Marshal())
	s.Flags = SlotPending | SlotLegacyWrap
	s.Pending.Box[0] = 1
	f.Add(s.Marshal())
	f.Add(make([]byte, legacySlotV1Size))
	f.Add(make([]byte, legacySlotV2Size))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ParseSlot("x", b); err == nil && !bytes.Equal(s.Marshal(), b) {
			t.Fatalf("round trip differs")
		}
		if s, err := ParseLegacySlot("x", b); err == nil && (s.Legacy == nil || len(b) != map[byte]int{1: legacySlotV1Size, 2: legacySlotV2Size}[b[0]]) {
			t.Fatalf("legacy slot of %d bytes accepted", len(b))
		}
	})
}

func FuzzParseClient(f *testing.F) {
	c := &Client{Name: "svc", UID: 1000, HasUID: true, GID: 5, HasGID: true, Status: ClientActive, Created: 1, Updated: 2}
	f.Add(c.Marshal())
	c = &Client{Name: "web", Unit: "web.service", Status: ClientDisabled}
	f.Add(c.Marshal())
	f.Add(make([]byte, legacyClientSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseClient("x", b); err == nil {
			if out := c.Marshal(); !bytes.Equal(out, b) {
				t.Fatalf("round trip differs:\n%x\n%x", b, out)
			}
		}
		if c, err := ParseLegacyClient("x", b); err == nil && (len(b) != legacyClientSize || c.LegacyMAC == nil) {
			t.Fatal("legacy client accepted with the wrong size")
		}
	})
}

func FuzzParseSecret(f *testing.F) {
	s := &Secret{Version: 3, Ciphertext: bytes.Repeat([]byte{1}, 40)}
	f.Add(s.Marshal())
	f.Add(make([]byte, secretHdrSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSecret(b)
		if err != nil {
			return
		}
		if !bytes.Equal(s.Marshal(), b) {
			t.Fatal("round trip differs")
		}
	})
}

func FuzzParseHeaderAndRoot(f *testing.F) {
	h := &Header{Policy: Params{3, 65536, 4}, Created: 9}
	f.Add(h.Marshal())
	r := &Root{Generation: 4}
	f.Add(r.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := parseHeader(b); err == nil && !bytes.Equal(h.Marshal(), b) {
			t.Fatal("header round trip differs")
		}
		if r, err := ParseRoot(b); err == nil && !bytes.Equal(r.Marshal(), b) {
			t.Fatal("root round trip differs")
		}
	})
}
