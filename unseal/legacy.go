package unseal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/curve25519"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// Format 1 had record MACs and a manifest under a registry key instead of
// the state root, and pending keys that anyone could seal. A format-1 file
// is verified with its own rules once, by the admin whose login upgrades it
// (see FORMAT.md's appendix), and never written in format 1.

func checkLegacyPub(s *keyring.Slot, priv []byte) error {
	var bad bool
	memlock.Do(func() {
		pub, err := curve25519.X25519(priv, curve25519.Basepoint)
		bad = err != nil || subtle.ConstantTimeCompare(pub, s.Legacy.PublicKey[:]) != 1
	})
	if bad {
		return fmt.Errorf("slot %q: public key does not match its private key: %w", s.Name, ErrIntegrity)
	}
	return nil
}

// legacyMAC is format 1's record MAC: HMAC-SHA256(RK, label || id ||
// u16(len(name)) || name || body).
func legacyMAC(rk []byte, id [keyring.IDSize]byte, label, name string, body []byte) [keyring.MACSize]byte {
	var out [keyring.MACSize]byte
	memlock.Do(func() {
		m := hmac.New(sha256.New, rk)
		m.Write([]byte(label))
		m.Write(id[:])
		m.Write(binary.BigEndian.AppendUint16(nil, uint16(len(name))))
		m.Write([]byte(name))
		m.Write(body)
		m.Sum(out[:0])
	})
	return out
}

// VerifyLegacy checks a format-1 file with format 1's rules under this key:
// every slot and client record's MAC (over the record as stored, whatever
// its version) and the manifest over them. It names each record that fails.
func (k *Key) VerifyLegacy(tx *keyring.Tx) (*Report, error) {
	var rk [keyring.KeySize]byte
	defer clear(rk[:])
	hkdfInto(rk[:], k.dataKey(), k.id[:], labelLegacyReg)
	rep := &Report{}
	reg, err := tx.LegacyRegistry()
	if err != nil {
		rep.Untrusted = true
		rep.add("manifest", "", err.Error())
		return rep, nil
	}
	var manifest []byte
	manifest = binary.BigEndian.AppendUint64(manifest, reg.Generation)
	tx.RawRecords(func(kind byte, name, raw []byte) {
		what, label := "slot", labelLegacySMAC
		if kind == keyring.RecordClient {
			what, label = "client", labelLegacyCMAC
		}
		body := keyring.LegacyBody(raw)
		if body == nil {
			rep.add(what, string(name), "too short to be a record")
			return
		}
		mac := raw[len(body):]
		want := legacyMAC(rk[:], k.id, label, string(name), body)
		if !hmac.Equal(want[:], mac) {
			rep.add(what, string(name), "its record MAC does not verify (edited outside sealbox)")
		}
		manifest = append(manifest, kind)
		manifest = binary.BigEndian.AppendUint16(manifest, uint16(len(name)))
		manifest = append(manifest, name...)
		manifest = append(manifest, mac...)
	})
	want := legacyMAC(rk[:], k.id, labelLegacyManif, "", manifest)
	if !hmac.Equal(want[:], reg.MAC[:]) {
		rep.Untrusted = true
		rep.add("manifest", "", "the record set was changed outside sealbox (a record added, removed or rolled back)")
	}
	return rep, nil
}

// UpgradeSlot converts a format-1 slot record for format 2, with this key
// (the current DataKey, verified by the upgrading admin's own slot). A slot
// without a pending key wraps the current DataKey: it keeps its format-1
// payload, and its hand-over key, derived from that DataKey, is escrowed. A
// slot with a format-1 pending key missed a rekey whose hand-over nothing
// authenticates: it becomes stale, and its owner must enrol again.
func (k *Key) UpgradeSlot(s *keyring.Slot) (*keyring.Slot, error) {
	if s.Legacy == nil {
		return nil, fmt.Errorf("unseal: slot %q is not a format-1 record", s.Name)
	}
	out := *s
	out.Legacy = nil
	out.Flags = keyring.SlotLegacyWrap
	if s.Legacy.Pending != nil {
		out.Flags |= keyring.SlotStale
		return &out, nil
	}
	hand, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil, err
	}
	defer hand.Destroy()
	hkdfInto(hand.Bytes(), k.dataKey(), k.id[:], legacyHandInfo(s.Name))
	if err := k.escrow(rand.Reader, &out, hand.Bytes()); err != nil {
		return nil, err
	}
	return &out, nil
}
