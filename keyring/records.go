package keyring

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Fixed sizes of the v1 format. Every decoder checks lengths against these
// before anything reaches a cipher.
const (
	IDSize        = 16
	SaltSize      = 32
	NonceSize     = 12
	KeySize       = 32 // DataKey, X25519 keys, HMAC outputs
	TagSize       = 16
	WrappedSize   = 2*KeySize + TagSize // AES-GCM(DataKey || X25519 private key)
	MACSize       = 32
	MaxSecretSize = 64 << 10
	MaxNameLen    = 64
	headerSize    = IDSize + KeySize + paramsSize + 8
	paramsSize    = 4 + 4 + 1
	slotV1Size    = 1 + 1 + paramsSize + SaltSize + NonceSize + WrappedSize + KeySize + 8 + MACSize
	slotSize      = slotV1Size + 8 + 1 + PendingSize
	// PendingSize is a DataKey sealed to a slot's X25519 public key:
	// ephemeral public key, nonce, AES-GCM(DataKey).
	PendingSize    = KeySize + NonceSize + KeySize + TagSize
	clientSize     = 1 + 4 + 4 + 1 + 1 + 8 + 8 + MACSize
	registrySize   = 8 + MACSize
	secretHdrSize  = 8 + NonceSize + 4
	slotRecVersion = 2
	clientRecVer   = 1
)

// ErrCorrupt is wrapped by every decoding error: the bytes on disk are not a
// valid record of this format.
var ErrCorrupt = errors.New("corrupt keyring record")

// Params are Argon2id parameters as stored in a slot.
type Params struct {
	Time      uint32 `json:"t"`          // passes
	MemoryKiB uint32 `json:"memory_kib"` // memory in KiB (m)
	Threads   uint8  `json:"p"`          // lanes
}

func (p Params) String() string {
	return fmt.Sprintf("t=%d m=%dMiB p=%d", p.Time, p.MemoryKiB/1024, p.Threads)
}

func (p Params) put(b []byte) {
	binary.BigEndian.PutUint32(b[0:], p.Time)
	binary.BigEndian.PutUint32(b[4:], p.MemoryKiB)
	b[8] = p.Threads
}

func getParams(b []byte) Params {
	return Params{Time: binary.BigEndian.Uint32(b[0:]), MemoryKiB: binary.BigEndian.Uint32(b[4:]), Threads: b[8]}
}

// Header is the keyring-wide metadata.
type Header struct {
	ID         [IDSize]byte  // random, binds every record to this keyring
	Commitment [KeySize]byte // commitment to the DataKey (see FORMAT.md)
	Policy     Params        // parameters for new slots and for unknown-admin decoys
	Created    int64         // unix seconds
}

func (h *Header) marshal() []byte {
	b := make([]byte, headerSize)
	copy(b, h.ID[:])
	copy(b[IDSize:], h.Commitment[:])
	h.Policy.put(b[IDSize+KeySize:])
	binary.BigEndian.PutUint64(b[IDSize+KeySize+paramsSize:], uint64(h.Created))
	return b
}

func parseHeader(b []byte) (*Header, error) {
	if len(b) != headerSize {
		return nil, fmt.Errorf("%w: header is %d bytes, want %d", ErrCorrupt, len(b), headerSize)
	}
	h := &Header{}
	copy(h.ID[:], b)
	copy(h.Commitment[:], b[IDSize:])
	h.Policy = getParams(b[IDSize+KeySize:])
	h.Created = int64(binary.BigEndian.Uint64(b[IDSize+KeySize+paramsSize:]))
	return h, nil
}

// SlotKind says what opens a slot.
type SlotKind uint8

// Slot kinds: an admin's password, the recovery code, an invite's code.
const (
	KindAdmin    SlotKind = 1
	KindRecovery SlotKind = 2
	KindInvite   SlotKind = 3
)

func (k SlotKind) String() string {
	switch k {
	case KindAdmin:
		return "admin"
	case KindRecovery:
		return "recovery"
	case KindInvite:
		return "invite"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Slot is one admin's wrapped copy of the DataKey.
type Slot struct {
	Name      string
	Kind      SlotKind
	Params    Params
	Salt      [SaltSize]byte
	Nonce     [NonceSize]byte
	Wrapped   [WrappedSize]byte // AES-256-GCM(key, DataKey || X25519 private key)
	PublicKey [KeySize]byte     // X25519 public key of this slot
	Created   int64
	Expires   int64 // unix seconds; 0 means never (invites expire)
	// Pending, when set, is a newer DataKey sealed to PublicKey by a rekey
	// that this slot's owner was not present for.
	Pending *[PendingSize]byte
	MAC     [MACSize]byte // registry MAC (see FORMAT.md)
}

// MarshalBody returns the record without its MAC: the bytes the MAC covers.
func (s *Slot) MarshalBody() []byte {
	b := make([]byte, slotSize-MACSize)
	b[0] = slotRecVersion
	b[1] = byte(s.Kind)
	off := 2
	s.Params.put(b[off:])
	off += paramsSize
	off += copy(b[off:], s.Salt[:])
	off += copy(b[off:], s.Nonce[:])
	off += copy(b[off:], s.Wrapped[:])
	off += copy(b[off:], s.PublicKey[:])
	binary.BigEndian.PutUint64(b[off:], uint64(s.Created))
	off += 8
	binary.BigEndian.PutUint64(b[off:], uint64(s.Expires))
	off += 8
	if s.Pending != nil {
		b[off] = 1
		copy(b[off+1:], s.Pending[:])
	}
	return b
}

func (s *Slot) marshal() []byte {
	return append(s.MarshalBody(), s.MAC[:]...)
}

// Equal reports whether two slots are the same record.
func (s *Slot) Equal(o *Slot) bool {
	return s.Name == o.Name && s.MAC == o.MAC && string(s.MarshalBody()) == string(o.MarshalBody())
}

// ParseSlot decodes a stored slot record: version 2, or version 1 (no
// expiry, no pending key). The length is checked exactly for the version,
// and unknown versions, kinds and flags are refused.
func ParseSlot(name string, b []byte) (*Slot, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: slot %q is empty", ErrCorrupt, name)
	}
	want := map[byte]int{1: slotV1Size, 2: slotSize}[b[0]]
	if want == 0 {
		return nil, fmt.Errorf("%w: slot %q has record version %d, this build reads 1 and 2", ErrCorrupt, name, b[0])
	}
	if len(b) != want {
		return nil, fmt.Errorf("%w: slot %q is %d bytes, want %d", ErrCorrupt, name, len(b), want)
	}
	s := &Slot{Name: name, Kind: SlotKind(b[1])}
	if s.Kind != KindAdmin && s.Kind != KindRecovery && s.Kind != KindInvite {
		return nil, fmt.Errorf("%w: slot %q has unknown kind %d", ErrCorrupt, name, b[1])
	}
	off := 2
	s.Params = getParams(b[off:])
	off += paramsSize
	off += copy(s.Salt[:], b[off:])
	off += copy(s.Nonce[:], b[off:])
	off += copy(s.Wrapped[:], b[off:])
	off += copy(s.PublicKey[:], b[off:])
	s.Created = int64(binary.BigEndian.Uint64(b[off:]))
	off += 8
	if b[0] == 2 {
		s.Expires = int64(binary.BigEndian.Uint64(b[off:]))
		off += 8
		switch b[off] {
		case 0:
			for _, c := range b[off+1 : off+1+PendingSize] {
				if c != 0 {
					return nil, fmt.Errorf("%w: slot %q has bytes in its pending field but no pending flag", ErrCorrupt, name)
				}
			}
		case 1:
			s.Pending = new([PendingSize]byte)
			copy(s.Pending[:], b[off+1:])
		default:
			return nil, fmt.Errorf("%w: slot %q has unknown flags %#x", ErrCorrupt, name, b[off])
		}
		off += 1 + PendingSize
	}
	copy(s.MAC[:], b[off:])
	return s, nil
}

// ClientStatus is a client's standing.
type ClientStatus uint8

// Client statuses. Retired is final: the record stays for the audit trail.
const (
	ClientActive   ClientStatus = 1
	ClientDisabled ClientStatus = 2
	ClientRetired  ClientStatus = 3
)

func (s ClientStatus) String() string {
	switch s {
	case ClientActive:
		return "active"
	case ClientDisabled:
		return "disabled"
	case ClientRetired:
		return "retired"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Client is a registered local service, identified by kernel-attested peer
// credentials.
type Client struct {
	Name    string
	UID     uint32
	GID     uint32
	HasGID  bool // when false, any gid matches
	Status  ClientStatus
	Created int64
	Updated int64
	MAC     [MACSize]byte
}

// MarshalBody returns the record without its MAC.
func (c *Client) MarshalBody() []byte {
	b := make([]byte, clientSize-MACSize)
	b[0] = clientRecVer
	binary.BigEndian.PutUint32(b[1:], c.UID)
	binary.BigEndian.PutUint32(b[5:], c.GID)
	if c.HasGID {
		b[9] = 1
	}
	b[10] = byte(c.Status)
	binary.BigEndian.PutUint64(b[11:], uint64(c.Created))
	binary.BigEndian.PutUint64(b[19:], uint64(c.Updated))
	return b
}

func (c *Client) marshal() []byte {
	return append(c.MarshalBody(), c.MAC[:]...)
}

// ParseClient decodes a stored client record.
func ParseClient(name string, b []byte) (*Client, error) {
	if len(b) != clientSize {
		return nil, fmt.Errorf("%w: client %q is %d bytes, want %d", ErrCorrupt, name, len(b), clientSize)
	}
	if b[0] != clientRecVer {
		return nil, fmt.Errorf("%w: client %q has record version %d, this build reads %d", ErrCorrupt, name, b[0], clientRecVer)
	}
	if b[9] > 1 {
		return nil, fmt.Errorf("%w: client %q has unknown flags %#x", ErrCorrupt, name, b[9])
	}
	c := &Client{
		Name:    name,
		UID:     binary.BigEndian.Uint32(b[1:]),
		GID:     binary.BigEndian.Uint32(b[5:]),
		HasGID:  b[9] == 1,
		Status:  ClientStatus(b[10]),
		Created: int64(binary.BigEndian.Uint64(b[11:])),
		Updated: int64(binary.BigEndian.Uint64(b[19:])),
	}
	if c.Status < ClientActive || c.Status > ClientRetired {
		return nil, fmt.Errorf("%w: client %q has unknown status %d", ErrCorrupt, name, b[10])
	}
	copy(c.MAC[:], b[27:])
	return c, nil
}

// Secret is the master secret, encrypted under the DataKey.
type Secret struct {
	Version    uint64 // bumped on every rotation; bound into the AAD
	Nonce      [NonceSize]byte
	Ciphertext []byte // plaintext length + TagSize
}

func (s *Secret) marshal() []byte {
	b := make([]byte, secretHdrSize, secretHdrSize+len(s.Ciphertext))
	binary.BigEndian.PutUint64(b, s.Version)
	copy(b[8:], s.Nonce[:])
	binary.BigEndian.PutUint32(b[8+NonceSize:], uint32(len(s.Ciphertext)))
	return append(b, s.Ciphertext...)
}

// ParseSecret decodes the stored secret record.
func ParseSecret(b []byte) (*Secret, error) {
	if len(b) < secretHdrSize {
		return nil, fmt.Errorf("%w: secret record is %d bytes, shorter than its header", ErrCorrupt, len(b))
	}
	n := binary.BigEndian.Uint32(b[8+NonceSize:])
	if n < TagSize+1 || n > MaxSecretSize+TagSize {
		return nil, fmt.Errorf("%w: secret ciphertext length %d out of range", ErrCorrupt, n)
	}
	if uint64(len(b)) != uint64(secretHdrSize)+uint64(n) {
		return nil, fmt.Errorf("%w: secret record is %d bytes, its header says %d", ErrCorrupt, len(b), secretHdrSize+int(n))
	}
	s := &Secret{Version: binary.BigEndian.Uint64(b)}
	copy(s.Nonce[:], b[8:])
	s.Ciphertext = append([]byte(nil), b[secretHdrSize:]...)
	return s, nil
}

// Registry is the manifest over all slot and client records.
type Registry struct {
	Generation uint64 // bumped on every change
	MAC        [MACSize]byte
}

func (r *Registry) marshal() []byte {
	b := make([]byte, registrySize)
	binary.BigEndian.PutUint64(b, r.Generation)
	copy(b[8:], r.MAC[:])
	return b
}

func parseRegistry(b []byte) (*Registry, error) {
	if len(b) != registrySize {
		return nil, fmt.Errorf("%w: registry record is %d bytes, want %d", ErrCorrupt, len(b), registrySize)
	}
	r := &Registry{Generation: binary.BigEndian.Uint64(b)}
	copy(r.MAC[:], b[8:])
	return r, nil
}

// ErrInvalidName is wrapped by ValidName's errors.
var ErrInvalidName = errors.New("invalid name")

// ValidName reports whether name is acceptable for an admin or a client:
// 1 to 64 characters of lowercase letters, digits, '.', '_' and '-',
// starting with a letter or digit.
func ValidName(name string) error {
	if len(name) == 0 {
		return fmt.Errorf("%w: the name is empty", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d characters, the limit is %d", ErrInvalidName, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%w %q: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit", ErrInvalidName, name)
		}
	}
	return nil
}
