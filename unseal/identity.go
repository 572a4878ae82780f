package unseal

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// The identity (see FORMAT.md): 32 random bytes drawn at init and again at
// every rekey, kept under the DataKey, whose hash (the pin)
// the root-owned configuration holds. A file writer who forges a whole
// state under a DataKey of their own, with an unattended slot they can
// open, cannot give it this identity: sealboxd refuses an unattended unseal
// into a state whose identity does not hash to its pin.

const (
	labelIdentityKey = "sealbox/v2/identity-key"
	labelIdentityAAD = "sealbox/v2/identity"
	labelIdentityPin = "sealbox/v2/identity-pin"
)

// ErrIdentity: the state's identity is missing, does not decrypt, or does
// not hash to the pin.
var ErrIdentity = errclass.New(errclass.Integrity, "the keyring's identity does not match the pinned one")

func identityAAD(id [keyring.IDSize]byte) []byte {
	return append([]byte(labelIdentityAAD), id[:]...)
}

// NewIdentity draws an identity and returns its record under k.
func (k *Key) NewIdentity() ([]byte, error) {
	ik, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil, err
	}
	defer ik.Destroy()
	if _, err := rand.Read(ik.Bytes()); err != nil {
		return nil, err
	}
	return k.sealIdentity(rand.Reader, ik.Bytes())
}

func (k *Key) sealIdentity(rng io.Reader, ik []byte) ([]byte, error) {
	rec := make([]byte, keyring.NonceSize, keyring.IdentitySize)
	if _, err := io.ReadFull(rng, rec); err != nil {
		return nil, err
	}
	var idk [keyring.KeySize]byte
	defer clear(idk[:])
	hkdfInto(idk[:], k.dataKey(), k.id[:], labelIdentityKey)
	return gcmSeal(idk[:], rec, rec[:keyring.NonceSize], ik, identityAAD(k.id)), nil
}

// openIdentity decrypts an identity record under k into dst.
func (k *Key) openIdentity(rec, dst []byte) error {
	if len(rec) != keyring.IdentitySize {
		return fmt.Errorf("%w: the identity record is %d bytes, not %d", ErrIdentity, len(rec), keyring.IdentitySize)
	}
	var idk [keyring.KeySize]byte
	defer clear(idk[:])
	hkdfInto(idk[:], k.dataKey(), k.id[:], labelIdentityKey)
	if _, err := gcmOpen(idk[:], dst[:0], rec[:keyring.NonceSize], rec[keyring.NonceSize:], identityAAD(k.id)); err != nil {
		return fmt.Errorf("%w: the identity record does not decrypt under the DataKey", ErrIdentity)
	}
	return nil
}

// RewrapIdentity moves an identity record from k to next (a rekey).
func (k *Key) RewrapIdentity(rec []byte, next *Key) ([]byte, error) {
	ik, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil, err
	}
	defer ik.Destroy()
	if err := k.openIdentity(rec, ik.Bytes()); err != nil {
		return nil, err
	}
	return next.sealIdentity(rand.Reader, ik.Bytes())
}

// IdentityPin returns the pin of the identity record under k: 64 hex
// digits of SHA256("sealbox/v2/identity-pin" || id || identity).
func (k *Key) IdentityPin(rec []byte) (string, error) {
	ik, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return "", err
	}
	defer ik.Destroy()
	if err := k.openIdentity(rec, ik.Bytes()); err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(labelIdentityPin))
	h.Write(k.id[:])
	h.Write(ik.Bytes())
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckIdentity verifies that the identity record under k hashes to pin,
// in constant time.
func (k *Key) CheckIdentity(rec []byte, pin string) error {
	got, err := k.IdentityPin(rec)
	if err != nil {
		return err
	}
	if len(pin) != len(got) || subtle.ConstantTimeCompare([]byte(got), []byte(pin)) != 1 {
		return fmt.Errorf("%w: this file's identity is not the one the configuration pins (unattended_identity); an admin must unseal and compare it with check --as NAME", ErrIdentity)
	}
	return nil
}
