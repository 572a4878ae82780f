// Package unseal turns an admin's password into the DataKey, and the DataKey
// into the master secret, held in locked memory.
//
// Most callers want OpenSlot (password + slot → *Key) followed by
// Key.DecryptSecret (→ *memlock.Buffer with the master secret). Changing the
// keyring goes through a *Key too: SealSlot wraps the DataKey for a new
// password, SignClient authenticates a client record, and Register rewrites
// the registry manifest after a change. VerifyRegistry checks every record.
//
// Errors: a wrong password and an unknown admin both return ErrWrongPassword
// after the same Argon2id work (see Decoy). A slot that decrypts but holds a
// different DataKey returns ErrCommitment. Parameters beyond the caps return
// ErrParams before any derivation.
//
// This package is not for storage (see keyring) or for the rules of who may
// change what (see admin).
package unseal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/curve25519"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// Errors callers test with errors.Is.
var (
	ErrWrongPassword = errors.New("wrong admin name or password")
	ErrCommitment    = errors.New("slot holds a key that is not this keyring's DataKey")
	ErrRegistry      = errors.New("registry record fails authentication")
	ErrSecret        = errors.New("master secret does not decrypt under the DataKey")
)

// Labels. They are part of the format: see keyring/FORMAT.md.
const (
	labelSlotAAD    = "sealbox/v1/slot"
	labelSecretAAD  = "sealbox/v1/secret"
	labelCommitment = "sealbox/v1/commitment"
	labelRegistry   = "sealbox/v1/registry"
	labelSlotMAC    = "sealbox/v1/slot-record"
	labelClientMAC  = "sealbox/v1/client-record"
	labelManifest   = "sealbox/v1/manifest"
	labelAudit      = "sealbox/v1/audit-key"
)

// Key is an unwrapped DataKey together with the registry key derived from it,
// both in one locked buffer. Destroy it when done.
type Key struct {
	buf *memlock.Buffer // DataKey (32) || registry key (32)
	id  [keyring.IDSize]byte
	// Folded is set by OpenSlot when the slot held an older DataKey and the
	// current one came from its Pending field: rewrap the slot.
	Folded bool
}

func (k *Key) dataKey() []byte { return k.buf.Bytes()[:keyring.KeySize] }
func (k *Key) regKey() []byte  { return k.buf.Bytes()[keyring.KeySize:] }

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
	buf, err := memlock.New(2*keyring.KeySize, mo)
	if err != nil {
		return nil, err
	}
	k := &Key{buf: buf, id: id}
	if _, err := io.ReadFull(rng, k.dataKey()); err != nil {
		buf.Destroy()
		return nil, err
	}
	if err := k.deriveRegKey(); err != nil {
		buf.Destroy()
		return nil, err
	}
	return k, nil
}

func (k *Key) deriveRegKey() error {
	rk, err := hkdf.Key(sha256.New, k.dataKey(), k.id[:], labelRegistry, keyring.KeySize)
	if err != nil {
		return err
	}
	copy(k.regKey(), rk)
	memlock.Wipe(rk)
	return nil
}

// AuditKey derives the audit log's MAC key into a new locked buffer:
// HKDF-SHA256(DataKey, salt=keyring ID, info=labelAudit). It reveals nothing
// of the DataKey, so a daemon may keep it after sealing.
func (k *Key) AuditKey(mo memlock.Options) (*memlock.Buffer, error) {
	v, err := hkdf.Key(sha256.New, k.dataKey(), k.id[:], labelAudit, keyring.KeySize)
	if err != nil {
		return nil, err
	}
	defer memlock.Wipe(v)
	buf, err := memlock.New(keyring.KeySize, mo)
	if err != nil {
		return nil, err
	}
	copy(buf.Bytes(), v)
	return buf, nil
}

// Commitment returns the value stored in the header that commits to this
// DataKey: HKDF-SHA256(DataKey, salt=keyring ID, info=labelCommitment).
func (k *Key) Commitment() [keyring.KeySize]byte {
	var c [keyring.KeySize]byte
	v, err := hkdf.Key(sha256.New, k.dataKey(), k.id[:], labelCommitment, keyring.KeySize)
	if err != nil {
		panic("unseal: hkdf: " + err.Error()) // only on an invalid length, a bug
	}
	copy(c[:], v)
	return c
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

func slotAAD(id [keyring.IDSize]byte, kind keyring.SlotKind, name string) []byte {
	b := make([]byte, 0, len(labelSlotAAD)+4+keyring.IDSize+1+2+len(name))
	b = append(b, labelSlotAAD...)
	b = binary.BigEndian.AppendUint32(b, keyring.FormatVersion)
	b = append(b, id[:]...)
	b = append(b, byte(kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	return append(b, name...)
}

// SealSlot wraps the DataKey for name under password with params, together
// with a fresh X25519 key pair for the slot, and signs the record.
func (k *Key) SealSlot(name string, kind keyring.SlotKind, password []byte, params keyring.Params, created int64) (*keyring.Slot, error) {
	if err := CheckNewParams(params); err != nil {
		return nil, err
	}
	return k.sealSlot(rand.Reader, name, kind, password, params, created)
}

// sealSlot draws the salt, the nonce and the X25519 private key, in that
// order, from rng (the test vectors depend on that order).
func (k *Key) sealSlot(rng io.Reader, name string, kind keyring.SlotKind, password []byte, params keyring.Params, created int64) (*keyring.Slot, error) {
	if err := keyring.ValidName(name); err != nil {
		return nil, err
	}
	s := &keyring.Slot{Name: name, Kind: kind, Params: params, Created: created}
	if _, err := io.ReadFull(rng, s.Salt[:]); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rng, s.Nonce[:]); err != nil {
		return nil, err
	}
	payload := make([]byte, 2*keyring.KeySize, 2*keyring.KeySize+keyring.TagSize)
	defer memlock.Wipe(payload[:cap(payload)])
	copy(payload, k.dataKey())
	priv := payload[keyring.KeySize:]
	if _, err := io.ReadFull(rng, priv); err != nil {
		return nil, err
	}
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	copy(s.PublicKey[:], pub)
	kek := derive(password, s.Salt[:], params)
	defer memlock.Wipe(kek)
	sealed := newGCM(kek).Seal(payload[:0], s.Nonce[:], payload, slotAAD(k.id, kind, name))
	copy(s.Wrapped[:], sealed)
	s.MAC = k.slotMAC(s)
	return s, nil
}

// OpenSlot derives the slot's key from password and unwraps the DataKey. It
// checks the parameter caps before deriving, and after unwrapping checks the
// DataKey against the header's commitment, the slot's public key against its
// private half, and the slot record's registry MAC. A slot written before a
// rekey its owner missed holds the old DataKey and, in Pending, the new one
// sealed to its public key: OpenSlot opens that and sets Key.Folded, so the
// caller can rewrap the slot under the new key.
func OpenSlot(h *keyring.Header, s *keyring.Slot, password []byte, mo memlock.Options) (*Key, error) {
	if err := CheckParams(s.Params); err != nil {
		return nil, fmt.Errorf("slot %q: %w", s.Name, err)
	}
	kek := derive(password, s.Salt[:], s.Params)
	defer memlock.Wipe(kek)
	var payload [keyring.WrappedSize]byte
	defer memlock.Wipe(payload[:])
	plain, err := newGCM(kek).Open(payload[:0], s.Nonce[:], s.Wrapped[:], slotAAD(h.ID, s.Kind, s.Name))
	if err != nil {
		return nil, ErrWrongPassword
	}
	buf, err := memlock.New(2*keyring.KeySize, mo)
	if err != nil {
		return nil, err
	}
	k := &Key{buf: buf, id: h.ID}
	copy(k.dataKey(), plain[:keyring.KeySize])
	ok := false
	defer func() {
		if !ok {
			k.Destroy()
		}
	}()
	priv := plain[keyring.KeySize:]
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil || subtle.ConstantTimeCompare(pub, s.PublicKey[:]) != 1 {
		return nil, fmt.Errorf("slot %q: public key does not match its private key: %w", s.Name, ErrRegistry)
	}
	if !k.commitOK(h) {
		if s.Pending == nil {
			return nil, fmt.Errorf("slot %q: %w", s.Name, ErrCommitment)
		}
		if err := openPending(h.ID, s, priv, k.dataKey()); err != nil {
			return nil, err
		}
		if !k.commitOK(h) {
			return nil, fmt.Errorf("slot %q: its pending key: %w", s.Name, ErrCommitment)
		}
		k.Folded = true
	}
	if err := k.deriveRegKey(); err != nil {
		return nil, err
	}
	if mac := k.slotMAC(s); !hmac.Equal(mac[:], s.MAC[:]) {
		return nil, fmt.Errorf("slot %q: %w", s.Name, ErrRegistry)
	}
	ok = true
	return k, nil
}

// Decoy does the work of opening a slot that does not exist, with the
// keyring's policy parameters and a random salt, and returns ErrWrongPassword.
// Callers use it for unknown admin names so that they cost the same as a wrong
// password for a slot at policy parameters.
func Decoy(h *keyring.Header, password []byte) error {
	s := &keyring.Slot{Name: "decoy", Kind: keyring.KindAdmin, Params: h.Policy}
	if _, err := rand.Read(s.Salt[:]); err != nil {
		return err
	}
	if _, err := rand.Read(s.Wrapped[:]); err != nil {
		return err
	}
	if err := CheckParams(s.Params); err != nil {
		return ErrWrongPassword
	}
	// The wrapped bytes are random, so the tag check fails like a wrong
	// password's would; a key is never returned.
	if k, err := OpenSlot(h, s, password, memlock.Options{AllowUnlocked: true}); err == nil {
		k.Destroy()
	}
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
	s.Ciphertext = newGCM(k.dataKey()).Seal(nil, s.Nonce[:], plaintext, secretAAD(k.id, version))
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
	dst := buf.Bytes()
	if _, err := newGCM(k.dataKey()).Open(dst[:0], s.Nonce[:], s.Ciphertext, secretAAD(k.id, s.Version)); err != nil {
		buf.Destroy()
		return nil, ErrSecret
	}
	return buf, nil
}

func (k *Key) mac(label string, name string, body []byte) [keyring.MACSize]byte {
	m := hmac.New(sha256.New, k.regKey())
	m.Write([]byte(label))
	m.Write(k.id[:])
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(name)))
	m.Write(l[:])
	m.Write([]byte(name))
	m.Write(body)
	var out [keyring.MACSize]byte
	m.Sum(out[:0])
	return out
}

func (k *Key) slotMAC(s *keyring.Slot) [keyring.MACSize]byte {
	return k.mac(labelSlotMAC, s.Name, s.MarshalBody())
}

func (k *Key) clientMAC(c *keyring.Client) [keyring.MACSize]byte {
	return k.mac(labelClientMAC, c.Name, c.MarshalBody())
}

// SignClient sets the client record's registry MAC.
func (k *Key) SignClient(c *keyring.Client) { c.MAC = k.clientMAC(c) }

// VerifyClient reports whether the client record's MAC is right.
func (k *Key) VerifyClient(c *keyring.Client) bool {
	m := k.clientMAC(c)
	return hmac.Equal(m[:], c.MAC[:])
}

// VerifySlot reports whether the slot record's MAC is right.
func (k *Key) VerifySlot(s *keyring.Slot) bool {
	m := k.slotMAC(s)
	return hmac.Equal(m[:], s.MAC[:])
}

// manifest computes the registry MAC over every record's stored MAC, in one
// pass over the raw records. It reports false if a record is too short to
// hold a MAC (the full verification names it).
func (k *Key) manifest(tx *keyring.Tx, gen uint64) ([keyring.MACSize]byte, bool) {
	m := hmac.New(sha256.New, k.regKey())
	m.Write([]byte(labelManifest))
	m.Write(k.id[:])
	m.Write([]byte{0, 0}) // the empty name of the generic MAC layout
	m.Write(binary.BigEndian.AppendUint64(nil, gen))
	ok := true
	var l [2]byte
	tx.RecordMACs(func(kind byte, name []byte, _ keyring.SlotKind, mac []byte) {
		if mac == nil {
			ok = false
			return
		}
		binary.BigEndian.PutUint16(l[:], uint16(len(name)))
		m.Write([]byte{kind})
		m.Write(l[:])
		m.Write(name)
		m.Write(mac)
	})
	var out [keyring.MACSize]byte
	m.Sum(out[:0])
	return out, ok
}

// VerifyManifest checks only the registry manifest: that the set of records
// and their MACs is the one the last change signed. It costs one pass over
// the raw records and one HMAC, so every change can afford it; a record
// whose body was edited under an unchanged MAC still fails its own MAC
// wherever it is used, and is named by VerifyRegistry.
func (k *Key) VerifyManifest(tx *keyring.Tx) error {
	reg, err := tx.Registry()
	if err != nil {
		return err
	}
	m, ok := k.manifest(tx, reg.Generation)
	if !ok || !hmac.Equal(m[:], reg.MAC[:]) {
		rep, err := k.VerifyRegistry(tx)
		if err != nil {
			return err
		}
		if rep.OK() { // cannot happen: the full check sees the same bytes
			rep.ManifestBad = true
		}
		return rep.Err()
	}
	return nil
}

// Report is the outcome of VerifyRegistry.
type Report struct {
	BadSlots    []string // slot records whose MAC fails
	BadClients  []string // client records whose MAC fails
	ManifestBad bool     // the set of records (or the generation) was changed
}

// OK reports whether every record verified.
func (r *Report) OK() bool {
	return len(r.BadSlots) == 0 && len(r.BadClients) == 0 && !r.ManifestBad
}

// Err returns nil when r.OK(), else an error wrapping ErrRegistry that names
// the records that failed.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	msg := ""
	if len(r.BadSlots) > 0 {
		msg += fmt.Sprintf(" admin records %q;", r.BadSlots)
	}
	if len(r.BadClients) > 0 {
		msg += fmt.Sprintf(" client records %q;", r.BadClients)
	}
	if r.ManifestBad {
		msg += " the record set was changed (a record added, removed or rolled back outside sealbox);"
	}
	return fmt.Errorf("%w:%s", ErrRegistry, msg[:len(msg)-1])
}

// VerifyRegistry checks every slot and client record and the manifest.
func (k *Key) VerifyRegistry(tx *keyring.Tx) (*Report, error) {
	slots, err := tx.Slots()
	if err != nil {
		return nil, err
	}
	clients, err := tx.Clients()
	if err != nil {
		return nil, err
	}
	reg, err := tx.Registry()
	if err != nil {
		return nil, err
	}
	r := &Report{}
	for _, s := range slots {
		if !k.VerifySlot(s) {
			r.BadSlots = append(r.BadSlots, s.Name)
		}
	}
	for _, c := range clients {
		if !k.VerifyClient(c) {
			r.BadClients = append(r.BadClients, c.Name)
		}
	}
	m, _ := k.manifest(tx, reg.Generation)
	r.ManifestBad = !hmac.Equal(m[:], reg.MAC[:])
	return r, nil
}

// Register bumps the registry generation and rewrites the manifest over the
// records as they stand in tx. Call it last in every change, after verifying
// the registry at the start of the change.
func (k *Key) Register(tx *keyring.Tx) error {
	reg, err := tx.Registry()
	if err != nil {
		return err
	}
	reg.Generation++
	var ok bool
	if reg.MAC, ok = k.manifest(tx, reg.Generation); !ok {
		return fmt.Errorf("%w: a record too short to hold a MAC", keyring.ErrCorrupt)
	}
	return tx.PutRegistry(reg)
}

// InitialRegistry returns the manifest for a new keyring holding one slot.
func (k *Key) InitialRegistry(s *keyring.Slot) keyring.Registry {
	m := hmac.New(sha256.New, k.regKey())
	m.Write([]byte(labelManifest))
	m.Write(k.id[:])
	m.Write([]byte{0, 0})
	m.Write(binary.BigEndian.AppendUint64(nil, 1))
	m.Write([]byte{'S'})
	m.Write(binary.BigEndian.AppendUint16(nil, uint16(len(s.Name))))
	m.Write([]byte(s.Name))
	m.Write(s.MAC[:])
	r := keyring.Registry{Generation: 1}
	m.Sum(r.MAC[:0])
	return r
}
