package keyring

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseSlotExactLength(t *testing.T) {
	t.Parallel()
	s := &Slot{Name: "alice", Kind: KindAdmin, Params: Params{3, 65536, 4}, Created: 5, Expires: 7}
	s.Salt[0], s.Nonce[0], s.Wrapped[0], s.Escrow.Nonce[0], s.Escrow.Box[0] = 1, 2, 3, 4, 5
	good := s.Marshal()
	if len(good) != slotSize {
		t.Fatalf("marshal gave %d bytes, want %d", len(good), slotSize)
	}
	got, err := ParseSlot("alice", good)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	// With a pending key.
	s2 := *s
	s2.Flags = SlotPending
	s2.Pending.Nonce[0], s2.Pending.Box[47] = 8, 9
	got, err = ParseSlot("alice", s2.Marshal())
	if err != nil || !reflect.DeepEqual(*got, s2) || !got.HasPending() {
		t.Fatalf("round trip with pending: %v %+v", err, got)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"short":              func(b []byte) []byte { return b[:len(b)-1] },
		"long":               func(b []byte) []byte { return append(b, 0) },
		"header only":        func(b []byte) []byte { return b[:slotHdrSize-1] },
		"empty":              func(b []byte) []byte { return nil },
		"version 2":          func(b []byte) []byte { b[0] = 2; return b },
		"version 4":          func(b []byte) []byte { b[0] = 4; return b },
		"kind 0":             func(b []byte) []byte { b[1] = 0; return b },
		"unknown flag":       func(b []byte) []byte { b[18] = 8; return b },
		"stale and pending":  func(b []byte) []byte { b[18] = SlotStale | SlotPending; return b },
		"body length lies":   func(b []byte) []byte { b[20]--; return b[:len(b)-1] },
		"pending bytes only": func(b []byte) []byte { b[len(b)-1] = 1; return b },
	} {
		if _, err := ParseSlot("alice", mutate(append([]byte{}, good...))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}

func TestOpaqueSlotKindsRoundTrip(t *testing.T) {
	t.Parallel()
	s := &Slot{Name: "fido-1", Kind: 7, Created: 3, Flags: 0, Body: []byte("{\"jwe\": \"a later kind\"}")}
	got, err := ParseSlot("fido-1", s.Marshal())
	if err != nil || !got.Opaque() || string(got.Body) != string(s.Body) || got.Created != 3 {
		t.Fatalf("opaque kind: %v %+v", err, got)
	}
	if !bytes.Equal(got.Marshal(), s.Marshal()) {
		t.Fatal("opaque slot does not round-trip")
	}
}

func unattendedSlot() *Slot {
	s := &Slot{Name: "tang-a", Kind: KindTang, Created: 9, Binding: []byte("eyJhbGciOiJFQ0RILUVTIn0..iv.ct.tag")}
	for i := range s.Wrapped {
		s.Wrapped[i] = byte(i)
	}
	s.Nonce[0], s.Escrow.Nonce[0], s.Escrow.Box[0] = 1, 2, 3
	return s
}

func TestUnattendedSlotRoundTrip(t *testing.T) {
	t.Parallel()
	for _, k := range []SlotKind{KindTang, KindTPM2, KindThreshold} {
		s := unattendedSlot()
		s.Kind = k
		b := s.Marshal()
		if len(b) != slotHdrSize+2+len(s.Binding)+keysBodySize {
			t.Fatalf("%s: %d bytes", k, len(b))
		}
		got, err := ParseSlot(s.Name, b)
		if err != nil || !got.Unattended() || got.Opaque() || !bytes.Equal(got.Binding, s.Binding) || got.Wrapped != s.Wrapped || got.Escrow != s.Escrow {
			t.Fatalf("%s: %v %+v", k, err, got)
		}
		if !bytes.Equal(got.Marshal(), b) {
			t.Fatalf("%s does not round-trip", k)
		}
		s.Flags = SlotPending
		s.Pending.Nonce[3], s.Pending.Box[7] = 4, 5
		if got, err := ParseSlot(s.Name, s.Marshal()); err != nil || got.Pending != s.Pending {
			t.Fatalf("%s pending: %v", k, err)
		}
	}
}

func TestParseUnattendedSlotRefusesCorruption(t *testing.T) {
	t.Parallel()
	good := unattendedSlot().Marshal()
	if _, err := ParseSlot("tang-a", good); err != nil {
		t.Fatal(err)
	}
	const bl = slotHdrSize // offset of the binding length
	for name, mutate := range map[string]func([]byte) []byte{
		"short":                  func(b []byte) []byte { return b[:len(b)-1] },
		"long":                   func(b []byte) []byte { return append(b, 0) },
		"binding length longer":  func(b []byte) []byte { b[bl+1]++; return b },
		"binding length shorter": func(b []byte) []byte { b[bl+1]--; return b },
		"empty binding": func(b []byte) []byte {
			n := 2 + keysBodySize
			out := append(b[:bl:bl], make([]byte, n)...)
			out[19], out[20] = byte(n>>8), byte(n)
			return out
		},
		"no fixed part": func(b []byte) []byte {
			out := append(b[:bl:bl], 0, 1, 'x')
			out[19], out[20] = 0, 3
			return out
		},
		"legacy-wrap flag":   func(b []byte) []byte { b[18] = SlotLegacyWrap; return b },
		"stale flag":         func(b []byte) []byte { b[18] = SlotStale; return b },
		"an expiry":          func(b []byte) []byte { b[17] = 1; return b },
		"pending bytes only": func(b []byte) []byte { b[len(b)-1] = 1; return b },
	} {
		if _, err := ParseSlot("tang-a", mutate(append([]byte{}, good...))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}

func TestParseLegacySlot(t *testing.T) {
	t.Parallel()
	// A format-1 version-2 record: 308 bytes, pending flag at 275.
	v2 := make([]byte, legacySlotV2Size)
	v2[0], v2[1] = 2, byte(KindAdmin)
	v2[2+3] = 3 // t=3
	v2[legacySlotV2Size-MACSize-1] = 0xAA
	if _, err := ParseLegacySlot("bob", v2); !errors.Is(err, ErrCorrupt) {
		t.Errorf("pending bytes without the flag: %v", err)
	}
	v2[legacySlotV2Size-MACSize-LegacyPendingSize-1] = 1
	s, err := ParseLegacySlot("bob", v2)
	if err != nil || s.Legacy == nil || s.Legacy.Pending == nil || s.Legacy.Pending[LegacyPendingSize-1] != 0xAA || s.Params.Time != 3 {
		t.Fatalf("v2 with pending: %v %+v", err, s)
	}
	v1 := make([]byte, legacySlotV1Size)
	v1[0], v1[1] = 1, byte(KindRecovery)
	v1[len(v1)-1] = 0x55
	s, err = ParseLegacySlot("recovery", v1)
	if err != nil || s.Legacy.Version != 1 || s.Legacy.Pending != nil || s.Legacy.MAC[MACSize-1] != 0x55 {
		t.Fatalf("v1: %v %+v", err, s)
	}
	for _, b := range [][]byte{v1[:len(v1)-1], append(append([]byte{}, v2...), 0), {3}, nil} {
		if _, err := ParseLegacySlot("x", b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%d bytes: %v", len(b), err)
		}
	}
}

func TestParseClient(t *testing.T) {
	t.Parallel()
	for _, c := range []*Client{
		{Name: "svc", UID: 1000, HasUID: true, GID: 50, HasGID: true, Status: ClientDisabled, Created: 1, Updated: 2},
		{Name: "web", Unit: "web.service", Status: ClientActive, Created: 1, Updated: 2},
		{Name: "both", Unit: "db@1.service", UID: 5, HasUID: true, Status: ClientRetired},
	} {
		good := c.Marshal()
		got, err := ParseClient(c.Name, good)
		if err != nil || *got != *c {
			t.Fatalf("round trip: %v %+v", err, got)
		}
	}
	good := (&Client{Name: "svc", UID: 1000, HasUID: true, GID: 50, HasGID: true, Status: ClientActive}).Marshal()
	for name, mutate := range map[string]func([]byte) []byte{
		"short":   func(b []byte) []byte { return b[:len(b)-1] },
		"long":    func(b []byte) []byte { return append(b, 0) },
		"version": func(b []byte) []byte { b[0] = 7; return b },
		"flags":   func(b []byte) []byte { b[1] = 4; return b },
		"nothing to match": func(b []byte) []byte {
			b[1] = 0
			b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9] = 0, 0, 0, 0, 0, 0, 0, 0
			return b
		},
		"gid without uid":  func(b []byte) []byte { b[1] = ClientMatchGID; return b },
		"stray uid":        func(b []byte) []byte { b[1] = 0; return append(b[:27], append([]byte{3}, "a.service"...)...) },
		"status0":          func(b []byte) []byte { b[10] = 0; return b },
		"status4":          func(b []byte) []byte { b[10] = 4; return b },
		"unit length lies": func(b []byte) []byte { b[27] = 5; return b },
		"bad unit":         func(b []byte) []byte { return append(b[:27], append([]byte{5}, "a/b.x"...)...) },
	} {
		if _, err := ParseClient("svc", mutate(append([]byte{}, good...))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
	legacy := make([]byte, legacyClientSize)
	legacy[0], legacy[4], legacy[8], legacy[9], legacy[10] = 1, 33, 7, 1, byte(ClientActive)
	c, err := ParseLegacyClient("old", legacy)
	if err != nil || !c.HasUID || c.UID != 33 || !c.HasGID || c.GID != 7 || c.LegacyMAC == nil {
		t.Fatalf("legacy client: %v %+v", err, c)
	}
}

func TestValidUnit(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"web.service", "cred-oneshot@a.service", `system-cred\x2doneshot.slice`, "a:b_c.socket"} {
		if err := ValidUnit(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "web", "web service", "../x.service", "a/b.service", strings.Repeat("a", 250) + ".service", ".service"} {
		if err := ValidUnit(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRootRoundTrip(t *testing.T) {
	t.Parallel()
	r := &Root{Generation: 7}
	r.Header[0], r.Secret[1], r.Records[2], r.Keys[3], r.MAC[31] = 1, 2, 3, 4, 5
	r.Events = AuditState{KeyedSeq: 9, AnchorSeq: 4}
	r.Events.KeyedMAC[0], r.Reads.AnchorMAC[31] = 6, 7
	b := r.Marshal()
	if len(b) != rootSize {
		t.Fatalf("root is %d bytes, want %d", len(b), rootSize)
	}
	got, err := ParseRoot(b)
	if err != nil || *got != *r {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(append([]byte{}, b...), 0), nil} {
		if _, err := ParseRoot(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%d bytes: %v", len(bad), err)
		}
	}
	v := append([]byte{}, b...)
	v[0] = 2
	if _, err := ParseRoot(v); !errors.Is(err, ErrCorrupt) {
		t.Errorf("version 2: %v", err)
	}
}

func TestParseSecretLengths(t *testing.T) {
	t.Parallel()
	s := &Secret{Version: 3, Ciphertext: bytes.Repeat([]byte{1}, 40)}
	good := s.Marshal()
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

func TestParseHeaderLengths(t *testing.T) {
	t.Parallel()
	h := &Header{Policy: Params{3, 65536, 4}, Created: 9}
	if _, err := parseHeader(h.Marshal()[1:]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short header: %v", err)
	}
	if _, err := parseHeader(append(h.Marshal(), 1)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("long header: %v", err)
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
