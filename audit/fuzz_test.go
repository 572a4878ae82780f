package audit

import (
	"errors"
	"testing"

	"github.com/sealbox/sealbox/keyring"
)

// FuzzDecode: no record bytes panic the decoder.
func FuzzDecode(f *testing.F) {
	var z [macSize]byte
	f.Add(encode(1, z, true, z, []byte(`{"time":"2026-01-01T00:00:00Z","kind":"read","outcome":"served"}`)))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		decode(b)
	})
}

// FuzzChain: any change to any stored record's bytes is caught by Verify,
// and nothing panics it.
func FuzzChain(f *testing.F) {
	f.Add(uint8(2), uint16(10), uint8(1))
	f.Add(uint8(0), uint16(0), uint8(0x80))
	f.Add(uint8(4), uint16(200), uint8(7))
	f.Fuzz(func(t *testing.T, rec uint8, off uint16, x uint8) {
		if x == 0 {
			return
		}
		fx := newFixture(t)
		fx.reads(t, key, 2)
		fx.reads(t, nil, 1)
		fx.reads(t, key, 2)
		seq := uint64(rec%5) + 1
		fx.kr.Update(func(tx *keyring.Tx) error {
			raw := append([]byte(nil), tx.AuditRecord(keyring.Reads, seq)...)
			raw[int(off)%len(raw)] ^= x
			return tx.PutAudit(keyring.Reads, seq, raw)
		})
		if _, err := fx.verify(key); !errors.Is(err, ErrBroken) {
			t.Fatalf("record %d altered at byte %d, Verify said %v", seq, int(off), err)
		}
	})
}
