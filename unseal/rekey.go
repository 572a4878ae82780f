package unseal

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/curve25519"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

const (
	labelPending    = "sealbox/v1/pending"
	labelPendingAAD = "sealbox/v1/pending-aad"
)

// CodeParams are the Argon2id parameters of code slots (recovery code,
// invites). A code carries 160 random bits, so guessing it is hopeless at
// any cost; the KDF only has to be cheap and uniform.
var CodeParams = keyring.Params{Time: 1, MemoryKiB: 8 << 10, Threads: 1}

// CodeBytes is a code's entropy in bytes (160 bits).
const CodeBytes = 20

var codeEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewCode returns a fresh code for people to type: 32 base32 characters in
// groups of four. The caller wipes it.
func NewCode() ([]byte, error) {
	raw := make([]byte, CodeBytes)
	defer memlock.Wipe(raw)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	enc := make([]byte, codeEncoding.EncodedLen(CodeBytes))
	codeEncoding.Encode(enc, raw)
	out := make([]byte, 0, len(enc)+len(enc)/4)
	for i := 0; i < len(enc); i += 4 {
		if i > 0 {
			out = append(out, '-')
		}
		out = append(out, enc[i:i+4]...)
	}
	memlock.Wipe(enc)
	return out, nil
}

// NormalizeCode turns what a person typed into the bytes the KDF sees:
// upper case, without dashes or spaces. It reports false if it cannot be a
// code, before any derivation.
func NormalizeCode(typed []byte) ([]byte, bool) {
	out := make([]byte, 0, len(typed))
	for _, c := range typed {
		switch {
		case c == '-' || c == ' ':
		case c >= 'a' && c <= 'z':
			out = append(out, c-'a'+'A')
		case (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'):
			out = append(out, c)
		default:
			memlock.Wipe(out)
			return nil, false
		}
	}
	if len(out) != codeEncoding.EncodedLen(CodeBytes) {
		memlock.Wipe(out)
		return nil, false
	}
	return out, true
}

// SealCodeSlot wraps the DataKey for a code slot (recovery or invite) under
// code (as NormalizeCode returns it) with CodeParams.
func (k *Key) SealCodeSlot(name string, kind keyring.SlotKind, code []byte, created, expires int64) (*keyring.Slot, error) {
	if kind == keyring.KindAdmin {
		return nil, errors.New("unseal: an admin slot takes a password, not a code")
	}
	s, err := k.sealSlot(rand.Reader, name, kind, code, CodeParams, created)
	if err != nil {
		return nil, err
	}
	if expires != 0 {
		s.Expires = expires
		s.MAC = k.slotMAC(s)
	}
	return s, nil
}

func pendingAAD(id [keyring.IDSize]byte, name string, pub []byte) []byte {
	b := append([]byte(labelPendingAAD), id[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	return append(b, pub...)
}

func pendingKey(shared, ephPub, pub []byte) []byte {
	k, err := hkdf.Key(sha256.New, shared, append(append([]byte{}, ephPub...), pub...), labelPending, keyring.KeySize)
	if err != nil {
		panic("unseal: hkdf: " + err.Error())
	}
	return k
}

// SealPending seals this DataKey to slot s's X25519 public key and returns
// the slot with it as Pending, re-signed under this key. The slot's owner
// picks it up at their next login (OpenSlot), without anyone else learning
// their password.
func (k *Key) SealPending(s *keyring.Slot) (*keyring.Slot, error) {
	return k.sealPending(rand.Reader, s)
}

func (k *Key) sealPending(rng io.Reader, s *keyring.Slot) (*keyring.Slot, error) {
	var eph [keyring.KeySize]byte
	defer memlock.Wipe(eph[:])
	if _, err := io.ReadFull(rng, eph[:]); err != nil {
		return nil, err
	}
	ephPub, err := curve25519.X25519(eph[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	shared, err := curve25519.X25519(eph[:], s.PublicKey[:])
	if err != nil {
		return nil, fmt.Errorf("slot %q: %w", s.Name, err)
	}
	defer memlock.Wipe(shared)
	key := pendingKey(shared, ephPub, s.PublicKey[:])
	defer memlock.Wipe(key)
	p := new([keyring.PendingSize]byte)
	copy(p[:], ephPub)
	nonce := p[keyring.KeySize : keyring.KeySize+keyring.NonceSize]
	if _, err := io.ReadFull(rng, nonce); err != nil {
		return nil, err
	}
	newGCM(key).Seal(p[keyring.KeySize+keyring.NonceSize:keyring.KeySize+keyring.NonceSize], nonce, k.dataKey(), pendingAAD(k.id, s.Name, s.PublicKey[:]))
	out := *s
	out.Pending = p
	out.MAC = k.slotMAC(&out)
	return &out, nil
}

// openPending recovers the DataKey in s.Pending with the slot's private key.
func openPending(id [keyring.IDSize]byte, s *keyring.Slot, priv []byte, dst []byte) error {
	p := s.Pending
	ephPub := p[:keyring.KeySize]
	shared, err := curve25519.X25519(priv, ephPub)
	if err != nil {
		return err
	}
	defer memlock.Wipe(shared)
	key := pendingKey(shared, ephPub, s.PublicKey[:])
	defer memlock.Wipe(key)
	nonce := p[keyring.KeySize : keyring.KeySize+keyring.NonceSize]
	if _, err := newGCM(key).Open(dst[:0], nonce, p[keyring.KeySize+keyring.NonceSize:], pendingAAD(id, s.Name, s.PublicKey[:])); err != nil {
		return fmt.Errorf("slot %q: its pending key does not open: %w", s.Name, ErrCommitment)
	}
	return nil
}

// commitOK reports whether k's DataKey matches the header's commitment.
func (k *Key) commitOK(h *keyring.Header) bool {
	c := k.Commitment()
	return subtle.ConstantTimeCompare(c[:], h.Commitment[:]) == 1
}

// Rekeyed returns a new random DataKey for the same keyring, for a rekey.
func (k *Key) Rekeyed(mo memlock.Options) (*Key, error) { return NewKey(k.id, mo) }

// SignSlot sets a slot record's registry MAC under this key.
func (k *Key) SignSlot(s *keyring.Slot) { s.MAC = k.slotMAC(s) }
