// Package unseal turns an admin's password into the DataKey, and the DataKey
// into the master secret, held in locked memory; it also keeps the keyring's
// state root, the one MAC that covers everything in the file.
//
// Most callers want OpenSlot (password + slot → *Key), then VerifyState (is
// the file as the last change left it?) and Key.DecryptSecret (→
// *memlock.Buffer with the master secret). Changing the keyring goes through
// a *Key too: SealSlot wraps the DataKey for a new password, HandOver gives
// another slot a new DataKey at a rekey, and Sign re-signs the state root
// after a change.
//
// Errors: a wrong password and an unknown admin both return ErrWrongPassword
// after the same Argon2id work (see Decoy). A slot that decrypts but holds a
// different DataKey, or whose pending key does not open, returns
// ErrCommitment. Parameters beyond the caps return ErrParams before any
// derivation. A state that does not verify is a *Report whose Err wraps
// ErrIntegrity.
//
// This package is not for storage (see keyring) or for the rules of who may
// change what (see admin).
package unseal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// Errors callers test with errors.Is.
var (
	ErrWrongPassword = errclass.New(errclass.Auth, "wrong admin name or password")
	ErrCommitment    = errclass.New(errclass.Integrity, "slot holds a key that is not this keyring's DataKey")
	ErrIntegrity     = errclass.New(errclass.Integrity, "the keyring does not verify")
	ErrSecret        = errclass.New(errclass.Integrity, "master secret does not decrypt under the DataKey")
	// ErrBinding is returned when an unattended slot's binding gave a key
	// that does not open the slot's wrapped DataKey.
	ErrBinding = errclass.New(errclass.Integrity, "the key the binding gave does not open the slot")
	// ErrStale is returned for a slot that missed a rekey made by format 1,
	// whose hand-over cannot be authenticated: its admin must enrol again.
	ErrStale = errclass.New(errclass.Integrity, "this slot missed a rekey made by an earlier sealbox, which cannot be authenticated; an admin must invite its owner again (sealbox-admin invite NAME --as ADMIN)")
)

// Labels. They are part of the format: see keyring/FORMAT.md.
const (
	labelSlotAAD     = "sealbox/v2/slot"
	labelEscrowAAD   = "sealbox/v2/escrow"
	labelPendingAAD  = "sealbox/v2/pending"
	labelEscrowKey   = "sealbox/v2/escrow-key"
	labelPendingKey  = "sealbox/v2/pending-key"
	labelRootKey     = "sealbox/v2/root-key"
	labelLegacyHand  = "sealbox/v2/legacy-hand-over"
	labelSecretAAD   = "sealbox/v1/secret"
	labelCommitment  = "sealbox/v1/commitment"
	labelAudit       = "sealbox/v1/audit-key"
	labelLegacySlot  = "sealbox/v1/slot"
	labelLegacyReg   = "sealbox/v1/registry"
	labelLegacySMAC  = "sealbox/v1/slot-record"
	labelLegacyCMAC  = "sealbox/v1/client-record"
	labelLegacyManif = "sealbox/v1/manifest"
)

// Key is an unwrapped DataKey together with the state-root key derived from
// it, both in one locked buffer. Destroy it when done.
type Key struct {
	buf *memlock.Buffer // DataKey (32) || root key (32)
	id  [keyring.IDSize]byte
	// Folded is set by OpenSlot when the slot held an older DataKey and the
	// current one came from its pending field: rewrap the slot.
	Folded bool
	// Rewrap is set when the slot should be rewrapped in the current layout
	// at this login: it was folded, or it is a format-1 payload.
	Rewrap bool
}

// DataKey returns the DataKey itself. Callers must not keep a copy.
func (k *Key) dataKey() []byte { return k.buf.Bytes()[:keyring.KeySize] }

// RootKey returns the state-root key; it lives as long as the Key.
func (k *Key) RootKey() []byte { return k.buf.Bytes()[keyring.KeySize:] }

// ID returns the keyring ID the key belongs to.
func (k *Key) ID() [keyring.IDSize]byte { return k.id }

// Destroy wipes and unmaps the key.
func (k *Key) Destroy() {
	if k != nil {
		k.buf.Destroy()
	}
}

// Locked reports whether the key's pages are mlock'd.
func (k *Key) Locked() bool { return k.buf.Locked() }

// NewKey makes a fresh random DataKey for a new keyring (or a rekey) with the
// given keyring ID.
func NewKey(id [keyring.IDSize]byte, mo memlock.Options) (*Key, error) {
	return newKey(rand.Reader, id, mo)
}

func newKey(rng io.Reader, id [keyring.IDSize]byte, mo memlock.Options) (*Key, error) {
	k, err := emptyKey(id, mo)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rng, k.dataKey()); err != nil {
		k.Destroy()
		return nil, err
	}
	k.deriveRootKey()
	return k, nil
}

func emptyKey(id [keyring.IDSize]byte, mo memlock.Options) (*Key, error) {
	buf, err := memlock.New(2*keyring.KeySize, mo)
	if err != nil {
		return nil, err
	}
	return &Key{buf: buf, id: id}, nil
}

// hkdfInto derives 32 bytes into dst: HKDF-SHA256(ikm, salt, info).
func hkdfInto(dst, ikm, salt []byte, info string) {
	memlock.Do(func() {
		v, err := hkdf.Key(sha256.New, ikm, salt, info, keyring.KeySize)
		if err != nil {
			panic("unseal: hkdf: " + err.Error()) // only on an invalid length, a bug
		}
		copy(dst, v)
		clear(v)
	})
}

func (k *Key) deriveRootKey() { hkdfInto(k.RootKey(), k.dataKey(), k.id[:], labelRootKey) }

// LogKeys derives the keys sealboxd keeps from its first unseal until it
// exits, so that it can append keyed audit records and re-sign the state
// root for them: the audit key (32 bytes) then the root key (32 bytes), in
// a new locked buffer. Neither reveals the DataKey.
func (k *Key) LogKeys(mo memlock.Options) (*memlock.Buffer, error) {
	buf, err := memlock.New(2*keyring.KeySize, mo)
	if err != nil {
		return nil, err
	}
	b := buf.Bytes()
	hkdfInto(b[:keyring.KeySize], k.dataKey(), k.id[:], labelAudit)
	copy(b[keyring.KeySize:], k.RootKey())
	return buf, nil
}

// Commitment returns the value stored in the header that commits to this
// DataKey: HKDF-SHA256(DataKey, salt=keyring ID, info=labelCommitment).
func (k *Key) Commitment() [keyring.KeySize]byte {
	var c [keyring.KeySize]byte
	hkdfInto(c[:], k.dataKey(), k.id[:], labelCommitment)
	return c
}

func (k *Key) commitOK(h *keyring.Header) bool {
	c := k.Commitment()
	return subtle.ConstantTimeCompare(c[:], h.Commitment[:]) == 1
}

// gcmSeal and gcmOpen run AES-256-GCM inside Do, so that the key schedule
// and GHASH state are wiped with the call's memory.
func gcmSeal(key, dst, nonce, plain, aad []byte) []byte {
	var out []byte
	memlock.Do(func() { out = newGCM(key).Seal(dst, nonce, plain, aad) })
	return out
}

func gcmOpen(key, dst, nonce, sealed, aad []byte) ([]byte, error) {
	var out []byte
	var err error
	memlock.Do(func() { out, err = newGCM(key).Open(dst, nonce, sealed, aad) })
	return out, err
}

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("unseal: aes key length: " + err.Error())
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic("unseal: gcm: " + err.Error())
	}
	return g
}

// placeAAD is label || id || kind || u16(len(name)) || name: it binds a
// sealed value to its keyring, slot kind and name.
func placeAAD(label string, id [keyring.IDSize]byte, kind keyring.SlotKind, name string) []byte {
	b := make([]byte, 0, len(label)+keyring.IDSize+1+2+len(name)+keyring.KeySize)
	b = append(b, label...)
	b = append(b, id[:]...)
	b = append(b, byte(kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	return append(b, name...)
}

// legacySlotAAD is format 1's slot AAD: it has the format version (u32 1)
// after the label.
func legacySlotAAD(id [keyring.IDSize]byte, kind keyring.SlotKind, name string) []byte {
	b := binary.BigEndian.AppendUint32([]byte(labelLegacySlot), 1)
	b = append(b, id[:]...)
	b = append(b, byte(kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	return append(b, name...)
}

// SealSlot wraps the DataKey for name under secret (a password, or a code as
// NormalizeCode returns it) with params: a new slot with a fresh hand-over
// key, escrowed under this DataKey.
func (k *Key) SealSlot(name string, kind keyring.SlotKind, secret []byte, params keyring.Params, created, expires int64) (*keyring.Slot, error) {
	if kind == keyring.KindAdmin {
		if err := CheckNewParams(params); err != nil {
			return nil, err
		}
	} else if err := CheckParams(params); err != nil {
		return nil, err
	}
	return k.sealSlot(rand.Reader, name, kind, secret, params, created, expires)
}

// sealSlot draws the salt, the nonce, the hand-over key and the escrow
// nonce, in that order, from rng (the test vectors depend on that order).
func (k *Key) sealSlot(rng io.Reader, name string, kind keyring.SlotKind, secret []byte, params keyring.Params, created, expires int64) (*keyring.Slot, error) {
	if err := keyring.ValidName(name); err != nil {
		return nil, err
	}
	s := &keyring.Slot{Name: name, Kind: kind, Params: params, Created: created, Expires: expires}
	if _, err := io.ReadFull(rng, s.Salt[:]); err != nil {
		return nil, err
	}
	kek, err := derive(secret, s.Salt[:], params)
	if err != nil {
		return nil, err
	}
	defer kek.Destroy()
	return s, k.wrapInto(rng, s, kek.Bytes())
}

// SealSlotKEK wraps the DataKey for a new unattended slot under kek (32
// bytes, the key its binding yields), with a fresh hand-over key escrowed
// under this DataKey. binding is stored as it is.
func (k *Key) SealSlotKEK(name string, kind keyring.SlotKind, binding, kek []byte, created int64) (*keyring.Slot, error) {
	return k.sealSlotKEK(rand.Reader, name, kind, binding, kek, created)
}

// sealSlotKEK draws the nonce, the hand-over key and the escrow nonce, in
// that order, from rng (the test vectors depend on that order).
func (k *Key) sealSlotKEK(rng io.Reader, name string, kind keyring.SlotKind, binding, kek []byte, created int64) (*keyring.Slot, error) {
	if err := keyring.ValidName(name); err != nil {
		return nil, err
	}
	if !kind.Unattended() {
		return nil, fmt.Errorf("unseal: %s is not an unattended slot kind", kind)
	}
	if len(kek) != keyring.KeySize {
		return nil, fmt.Errorf("unseal: an unattended slot's key must be %d bytes", keyring.KeySize)
	}
	if len(binding) == 0 || len(binding) > keyring.MaxBindingSize {
		return nil, fmt.Errorf("unseal: a binding must be 1 to %d bytes, not %d", keyring.MaxBindingSize, len(binding))
	}
	s := &keyring.Slot{Name: name, Kind: kind, Created: created, Binding: append([]byte(nil), binding...)}
	return s, k.wrapInto(rng, s, kek)
}

// wrapInto draws the slot's nonce and a new hand-over key, escrows the
// hand-over key under this DataKey, and wraps DataKey || hand-over key
// under kek into s.Wrapped.
func (k *Key) wrapInto(rng io.Reader, s *keyring.Slot, kek []byte) error {
	if _, err := io.ReadFull(rng, s.Nonce[:]); err != nil {
		return err
	}
	payload, err := memlock.New(2*keyring.KeySize+keyring.TagSize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return err
	}
	defer payload.Destroy()
	p := payload.Bytes()
	copy(p, k.dataKey())
	hand := p[keyring.KeySize : 2*keyring.KeySize]
	if _, err := io.ReadFull(rng, hand); err != nil {
		return err
	}
	if err := k.escrow(rng, s, hand); err != nil {
		return err
	}
	// Sealed in place: the payload buffer then holds only ciphertext.
	copy(s.Wrapped[:], gcmSeal(kek, p[:0], s.Nonce[:], p[:2*keyring.KeySize], placeAAD(labelSlotAAD, k.id, s.Kind, s.Name)))
	return nil
}

// escrow seals the slot's hand-over key under this DataKey's escrow key.
func (k *Key) escrow(rng io.Reader, s *keyring.Slot, hand []byte) error {
	if _, err := io.ReadFull(rng, s.Escrow.Nonce[:]); err != nil {
		return err
	}
	var ek [keyring.KeySize]byte
	defer clear(ek[:])
	hkdfInto(ek[:], k.dataKey(), k.id[:], labelEscrowKey)
	copy(s.Escrow.Box[:], gcmSeal(ek[:], nil, s.Escrow.Nonce[:], hand, placeAAD(labelEscrowAAD, k.id, s.Kind, s.Name)))
	return nil
}

// openEscrow recovers a slot's hand-over key into dst with this DataKey.
func (k *Key) openEscrow(s *keyring.Slot, dst []byte) error {
	var ek [keyring.KeySize]byte
	defer clear(ek[:])
	hkdfInto(ek[:], k.dataKey(), k.id[:], labelEscrowKey)
	if _, err := gcmOpen(ek[:], dst[:0], s.Escrow.Nonce[:], s.Escrow.Box[:], placeAAD(labelEscrowAAD, k.id, s.Kind, s.Name)); err != nil {
		return fmt.Errorf("slot %q: its escrow does not open under the DataKey: %w", s.Name, ErrIntegrity)
	}
	return nil
}

func pendingAAD(id [keyring.IDSize]byte, s *keyring.Slot, commitment [keyring.KeySize]byte) []byte {
	return append(placeAAD(labelPendingAAD, id, s.Kind, s.Name), commitment[:]...)
}

// HandOver returns slot s prepared for the rekey from k to next: its
// hand-over key, recovered from the escrow with k, now seals next's DataKey
// in Pending and is escrowed under next. Only a holder of the DataKey that
// escrowed the hand-over key can do this: that is the proof a pending key
// carries. Stale slots are returned unchanged.
func (k *Key) HandOver(s *keyring.Slot, next *Key) (*keyring.Slot, error) {
	return k.handOver(rand.Reader, s, next)
}

func (k *Key) handOver(rng io.Reader, s *keyring.Slot, next *Key) (*keyring.Slot, error) {
	if s.Flags&keyring.SlotStale != 0 {
		return s, nil
	}
	hbuf, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil, err
	}
	defer hbuf.Destroy()
	hand := hbuf.Bytes()
	if err := k.openEscrow(s, hand); err != nil {
		return nil, err
	}
	out := *s
	if err := next.escrow(rng, &out, hand); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rng, out.Pending.Nonce[:]); err != nil {
		return nil, err
	}
	var pk [keyring.KeySize]byte
	defer clear(pk[:])
	hkdfInto(pk[:], hand, k.id[:], labelPendingKey)
	copy(out.Pending.Box[:], gcmSeal(pk[:], nil, out.Pending.Nonce[:], next.dataKey(), pendingAAD(k.id, &out, next.Commitment())))
	out.Flags |= keyring.SlotPending
	return &out, nil
}

// OpenSlot derives the slot's key from secret and unwraps the DataKey. It
// checks the parameter caps before deriving, and after unwrapping checks the
// DataKey against the header's commitment. A slot written before a rekey its
// owner missed holds the old DataKey and, in Pending, the current one under
// its hand-over key: OpenSlot opens that, checks it against the commitment,
// and sets Key.Folded, so the caller can rewrap the slot. It does not verify
// the rest of the file: call VerifyState with the key.
func OpenSlot(h *keyring.Header, s *keyring.Slot, secret []byte, mo memlock.Options) (*Key, error) {
	if s.Unattended() || s.Opaque() {
		return nil, fmt.Errorf("slot %q is a %s slot: it does not open with a password or a code", s.Name, s.Kind)
	}
	if err := CheckParams(s.Params); err != nil {
		return nil, fmt.Errorf("slot %q: %w", s.Name, err)
	}
	if s.Flags&keyring.SlotStale != 0 {
		return nil, fmt.Errorf("slot %q: %w", s.Name, ErrStale)
	}
	kek, err := derive(secret, s.Salt[:], s.Params)
	if err != nil {
		return nil, err
	}
	defer kek.Destroy()
	return openWrapped(h, s, kek.Bytes(), mo)
}

// OpenSlotKEK opens an unattended slot (Tang, TPM2, threshold) with the
// 32-byte key its binding gave, and otherwise does what OpenSlot does. A key
// that does not open the slot is an integrity error: the binding and the
// slot's wrapped key no longer belong together.
func OpenSlotKEK(h *keyring.Header, s *keyring.Slot, kek []byte, mo memlock.Options) (*Key, error) {
	if !s.Unattended() {
		return nil, fmt.Errorf("slot %q is a %s slot, not an unattended one", s.Name, s.Kind)
	}
	if len(kek) != keyring.KeySize {
		return nil, fmt.Errorf("slot %q: its binding gave %d bytes, not a %d-byte key: %w", s.Name, len(kek), keyring.KeySize, ErrBinding)
	}
	k, err := openWrapped(h, s, kek, mo)
	if errors.Is(err, ErrWrongPassword) {
		return nil, fmt.Errorf("slot %q: %w", s.Name, ErrBinding)
	}
	return k, err
}

// openWrapped opens the slot's wrapped DataKey with kek and finds the
// current DataKey (directly, or through the pending key).
func openWrapped(h *keyring.Header, s *keyring.Slot, kek []byte, mo memlock.Options) (*Key, error) {
	payload, err := memlock.New(keyring.WrappedSize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil, err
	}
	defer payload.Destroy()
	legacy := s.Legacy != nil || s.Flags&keyring.SlotLegacyWrap != 0
	aad := placeAAD(labelSlotAAD, h.ID, s.Kind, s.Name)
	if legacy {
		aad = legacySlotAAD(h.ID, s.Kind, s.Name)
	}
	plain, err := gcmOpen(kek, payload.Bytes()[:0], s.Nonce[:], s.Wrapped[:], aad)
	if err != nil {
		return nil, ErrWrongPassword
	}
	k, err := emptyKey(h.ID, mo)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			k.Destroy()
		}
	}()
	copy(k.dataKey(), plain[:keyring.KeySize])
	if s.Legacy != nil {
		// A format-1 record: its X25519 key must match its public half, and
		// its format-1 pending key cannot be trusted (see FORMAT.md).
		if err := checkLegacyPub(s, plain[keyring.KeySize:]); err != nil {
			return nil, err
		}
		if !k.commitOK(h) {
			if s.Legacy.Pending != nil {
				return nil, fmt.Errorf("slot %q: %w", s.Name, ErrStale)
			}
			return nil, fmt.Errorf("slot %q: %w", s.Name, ErrCommitment)
		}
		k.deriveRootKey()
		k.Rewrap = true
		ok = true
		return k, nil
	}
	hand := plain[keyring.KeySize:]
	if legacy {
		// A format-1 payload carried into format 2: its hand-over key is
		// derived from the DataKey it wraps.
		hkdfInto(hand, k.dataKey(), h.ID[:], legacyHandInfo(s.Name))
		k.Rewrap = true
	}
	if !k.commitOK(h) {
		if !s.HasPending() {
			return nil, fmt.Errorf("slot %q: %w", s.Name, ErrCommitment)
		}
		var pk [keyring.KeySize]byte
		hkdfInto(pk[:], hand, h.ID[:], labelPendingKey)
		_, err := gcmOpen(pk[:], k.dataKey()[:0], s.Pending.Nonce[:], s.Pending.Box[:], pendingAAD(h.ID, s, h.Commitment))
		clear(pk[:])
		if err != nil {
			return nil, fmt.Errorf("slot %q: its pending key was not made by a holder of the key this slot opens: %w", s.Name, ErrCommitment)
		}
		if !k.commitOK(h) {
			return nil, fmt.Errorf("slot %q: its pending key: %w", s.Name, ErrCommitment)
		}
		k.Folded, k.Rewrap = true, true
	}
	k.deriveRootKey()
	ok = true
	return k, nil
}

func legacyHandInfo(name string) string {
	b := binary.BigEndian.AppendUint16([]byte(labelLegacyHand), uint16(len(name)))
	return string(append(b, name...))
}

// Decoy does the work of opening a slot that does not exist, with params and
// a random salt, and returns ErrWrongPassword. Callers use it for unknown
// admin names so that they cost the same as a wrong password.
func Decoy(params keyring.Params, password []byte) error {
	if err := CheckParams(params); err != nil {
		return ErrWrongPassword
	}
	var salt [keyring.SaltSize]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return err
	}
	kek, err := derive(password, salt[:], params)
	if err != nil {
		return err
	}
	// Spend the same cipher work as a wrong password: a tag check that fails.
	var junk [keyring.WrappedSize]byte
	_, _ = gcmOpen(kek.Bytes(), nil, salt[:keyring.NonceSize], junk[:], nil)
	kek.Destroy()
	return ErrWrongPassword
}

func secretAAD(id [keyring.IDSize]byte, version uint64) []byte {
	b := append([]byte(labelSecretAAD), id[:]...)
	return binary.BigEndian.AppendUint64(b, version)
}

// EncryptSecret encrypts plaintext as the master secret of the given version.
func (k *Key) EncryptSecret(plaintext []byte, version uint64) (*keyring.Secret, error) {
	return k.encryptSecret(rand.Reader, plaintext, version)
}

func (k *Key) encryptSecret(rng io.Reader, plaintext []byte, version uint64) (*keyring.Secret, error) {
	if len(plaintext) < 1 || len(plaintext) > keyring.MaxSecretSize {
		return nil, fmt.Errorf("master secret must be 1 to %d bytes, got %d", keyring.MaxSecretSize, len(plaintext))
	}
	s := &keyring.Secret{Version: version}
	if _, err := io.ReadFull(rng, s.Nonce[:]); err != nil {
		return nil, err
	}
	s.Ciphertext = gcmSeal(k.dataKey(), nil, s.Nonce[:], plaintext, secretAAD(k.id, version))
	return s, nil
}

// DecryptSecret decrypts the master secret straight into a new locked buffer
// of exactly its length.
func (k *Key) DecryptSecret(s *keyring.Secret, mo memlock.Options) (*memlock.Buffer, error) {
	n := len(s.Ciphertext) - keyring.TagSize
	if n < 1 || n > keyring.MaxSecretSize {
		return nil, fmt.Errorf("%w: ciphertext length %d out of range", keyring.ErrCorrupt, len(s.Ciphertext))
	}
	buf, err := memlock.New(n, mo)
	if err != nil {
		return nil, err
	}
	if _, err := gcmOpen(k.dataKey(), buf.Bytes()[:0], s.Nonce[:], s.Ciphertext, secretAAD(k.id, s.Version)); err != nil {
		buf.Destroy()
		return nil, ErrSecret
	}
	return buf, nil
}

// Rekeyed returns a new random DataKey for the same keyring, for a rekey.
func (k *Key) Rekeyed(mo memlock.Options) (*Key, error) { return NewKey(k.id, mo) }
