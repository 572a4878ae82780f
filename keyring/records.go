package keyring

import (
	"encoding/binary"
	"fmt"

	"github.com/sealbox/sealbox/internal/errclass"
)

// Fixed sizes of the format. Every decoder checks lengths against these
// before anything reaches a cipher.
const (
	IDSize        = 16
	SaltSize      = 32
	NonceSize     = 12
	KeySize       = 32 // DataKey, hand-over keys, HMAC outputs
	TagSize       = 16
	WrappedSize   = 2*KeySize + TagSize // AES-GCM(DataKey || hand-over key)
	SealedKeySize = KeySize + TagSize   // AES-GCM of one 32-byte key
	MACSize       = 32
	HashSize      = 32
	MaxSecretSize = 64 << 10
	MaxNameLen    = 64
	MaxUnitLen    = 255
	headerSize    = IDSize + KeySize + paramsSize + 8
	paramsSize    = 4 + 4 + 1
	// slotHdrSize is the part of a version-3 slot record before its body.
	slotHdrSize = 1 + 1 + 8 + 8 + 1 + 2
	// passwordBodySize is the body of a password or code slot (kinds 1-3).
	passwordBodySize = paramsSize + SaltSize + keysBodySize
	// keysBodySize is what every slot body ends with: nonce, wrapped,
	// escrow and pending (212 bytes).
	keysBodySize = NonceSize + WrappedSize + 2*(NonceSize+SealedKeySize)
	// MaxBindingSize is the largest binding an unattended slot can hold.
	MaxBindingSize = 0xffff - 2 - keysBodySize
	slotSize       = slotHdrSize + passwordBodySize
	clientHdrSize  = 1 + 1 + 4 + 4 + 1 + 8 + 8 + 1
	secretHdrSize  = 8 + NonceSize + 4
	auditStateSize = 8 + MACSize + 8 + MACSize
	rootSize       = 1 + 8 + 4*HashSize + 2*auditStateSize + MACSize
	slotRecVersion = 3
	clientRecVer   = 2
	rootRecVersion = 1
)

// Slot flags (version 3).
const (
	SlotPending    = 1 << 0 // pending holds the current DataKey under the hand-over key
	SlotLegacyWrap = 1 << 1 // wrapped is a format-1 payload (DataKey || X25519 key, v1 AAD)
	SlotStale      = 1 << 2 // missed a format-1 rekey: cannot be opened; re-enrol
	slotFlagsKnown = SlotPending | SlotLegacyWrap | SlotStale
)

// ErrCorrupt is wrapped by every decoding error: the bytes on disk are not a
// valid record of this format.
var ErrCorrupt = errclass.New(errclass.Integrity, "corrupt keyring record")

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

// Marshal returns the stored form of the header.
func (h *Header) Marshal() []byte {
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

// Slot kinds: an admin's password, the recovery code, an invite's code, and
// the unattended kinds, whose key comes from a binding instead of a typed
// secret: a Tang server, the TPM, or a threshold of such members. Kinds 7 and
// up are reserved (see FORMAT.md): this build keeps them as opaque records
// and never opens them.
const (
	KindAdmin     SlotKind = 1
	KindRecovery  SlotKind = 2
	KindInvite    SlotKind = 3
	KindTang      SlotKind = 4
	KindTPM2      SlotKind = 5
	KindThreshold SlotKind = 6
)

func (k SlotKind) String() string {
	switch k {
	case KindAdmin:
		return "admin"
	case KindRecovery:
		return "recovery"
	case KindInvite:
		return "invite"
	case KindTang:
		return "tang"
	case KindTPM2:
		return "tpm2"
	case KindThreshold:
		return "threshold"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Sealed is a 32-byte key under AES-256-GCM with its nonce.
type Sealed struct {
	Nonce [NonceSize]byte
	Box   [SealedKeySize]byte
}

// Slot is one way to the DataKey: an admin's password, the recovery code or
// an invite code wrapping it, plus what a rekey needs to hand the slot a new
// DataKey without its owner (see FORMAT.md).
type Slot struct {
	Name    string
	Kind    SlotKind
	Created int64
	Expires int64 // unix seconds; 0 means never (invites expire)
	Flags   uint8
	Params  Params
	Salt    [SaltSize]byte
	Nonce   [NonceSize]byte
	Wrapped [WrappedSize]byte // AES-256-GCM(KEK, DataKey || hand-over key)
	// Escrow is the slot's hand-over key under a key derived from the
	// current DataKey, so that a rekey can seal the new DataKey for it.
	Escrow Sealed
	// Pending, valid when Flags has SlotPending, is the current DataKey
	// under a key derived from the hand-over key: set by a rekey its owner
	// was not present for.
	Pending Sealed

	// Binding says how an unattended slot (Tang, TPM2, threshold) gets
	// its key: the stored form of the binding, which the kind's own code
	// parses. Empty for the other kinds.
	Binding []byte

	// Body is the record's body for kinds this build does not open
	// (reserved): kept byte for byte, covered by the state root, never
	// opened.
	Body []byte

	// Format 1 only (see FORMAT.md, appendix): record version 1 or 2.
	Legacy *LegacySlot
}

// Opaque reports whether the slot is of a kind this build does not open.
func (s *Slot) Opaque() bool { return s.Kind > KindThreshold }

// Unattended reports whether the slot's key comes from a binding (Tang,
// TPM2, threshold) rather than a password or a code.
func (s *Slot) Unattended() bool { return s.Kind.Unattended() }

// Unattended reports whether slots of kind k open without a typed secret.
func (k SlotKind) Unattended() bool { return k >= KindTang && k <= KindThreshold }

// LegacySlot is what a format-1 slot record holds beyond the common fields.
type LegacySlot struct {
	Version   uint8
	PublicKey [KeySize]byte
	Pending   *[LegacyPendingSize]byte
	MAC       [MACSize]byte
}

// HasPending reports whether a rekey left the slot a pending DataKey.
func (s *Slot) HasPending() bool { return s.Flags&SlotPending != 0 }

// Marshal returns the stored form of a version-3 slot.
func (s *Slot) Marshal() []byte {
	n := passwordBodySize
	switch {
	case s.Opaque():
		n = len(s.Body)
	case s.Unattended():
		n = 2 + len(s.Binding) + keysBodySize
	}
	b := make([]byte, slotHdrSize+n)
	b[0] = slotRecVersion
	b[1] = byte(s.Kind)
	binary.BigEndian.PutUint64(b[2:], uint64(s.Created))
	binary.BigEndian.PutUint64(b[10:], uint64(s.Expires))
	b[18] = s.Flags
	binary.BigEndian.PutUint16(b[19:], uint16(n))
	off := slotHdrSize
	switch {
	case s.Opaque():
		copy(b[off:], s.Body)
		return b
	case s.Unattended():
		binary.BigEndian.PutUint16(b[off:], uint16(len(s.Binding)))
		off += 2
		off += copy(b[off:], s.Binding)
	default:
		s.Params.put(b[off:])
		off += paramsSize
		off += copy(b[off:], s.Salt[:])
	}
	off += copy(b[off:], s.Nonce[:])
	off += copy(b[off:], s.Wrapped[:])
	off += copy(b[off:], s.Escrow.Nonce[:])
	off += copy(b[off:], s.Escrow.Box[:])
	if s.HasPending() {
		off += copy(b[off:], s.Pending.Nonce[:])
		copy(b[off:], s.Pending.Box[:])
	}
	return b
}

// ParseSlot decodes a version-3 slot record (format 2). The length is
// checked exactly, and unknown versions, kinds and flags are refused.
func ParseSlot(name string, b []byte) (*Slot, error) {
	if len(b) < slotHdrSize {
		return nil, fmt.Errorf("%w: slot %q is %d bytes, shorter than its header", ErrCorrupt, name, len(b))
	}
	if b[0] != slotRecVersion {
		return nil, fmt.Errorf("%w: slot %q has record version %d, this format has %d", ErrCorrupt, name, b[0], slotRecVersion)
	}
	s := &Slot{Name: name, Kind: SlotKind(b[1]), Flags: b[18]}
	s.Created = int64(binary.BigEndian.Uint64(b[2:]))
	s.Expires = int64(binary.BigEndian.Uint64(b[10:]))
	n := int(binary.BigEndian.Uint16(b[19:]))
	if len(b) != slotHdrSize+n {
		return nil, fmt.Errorf("%w: slot %q is %d bytes, its header says %d", ErrCorrupt, name, len(b), slotHdrSize+n)
	}
	if s.Kind == 0 {
		return nil, fmt.Errorf("%w: slot %q has kind 0", ErrCorrupt, name)
	}
	if s.Flags&^slotFlagsKnown != 0 {
		return nil, fmt.Errorf("%w: slot %q has unknown flags %#x", ErrCorrupt, name, s.Flags)
	}
	if s.Opaque() {
		// A kind of a later version (an unattended slot): kept as it is.
		s.Body = append([]byte(nil), b[slotHdrSize:]...)
		return s, nil
	}
	off := slotHdrSize
	if s.Unattended() {
		// blen || binding || the keys part, with an exact length.
		if n < 2+keysBodySize {
			return nil, fmt.Errorf("%w: %s slot %q has a %d-byte body, shorter than its fixed part", ErrCorrupt, s.Kind, name, n)
		}
		blen := int(binary.BigEndian.Uint16(b[off:]))
		if blen == 0 || n != 2+blen+keysBodySize {
			return nil, fmt.Errorf("%w: %s slot %q has a %d-byte body, its binding length says %d", ErrCorrupt, s.Kind, name, n, 2+blen+keysBodySize)
		}
		if s.Flags&(SlotLegacyWrap|SlotStale) != 0 || s.Expires != 0 {
			return nil, fmt.Errorf("%w: %s slot %q has flags %#x or an expiry, which unattended slots never have", ErrCorrupt, s.Kind, name, s.Flags)
		}
		s.Binding = append([]byte(nil), b[off+2:off+2+blen]...)
		off += 2 + blen
	} else {
		if n != passwordBodySize {
			return nil, fmt.Errorf("%w: slot %q has a %d-byte body, want %d", ErrCorrupt, name, n, passwordBodySize)
		}
		if s.Flags&SlotStale != 0 && s.Flags&SlotPending != 0 {
			return nil, fmt.Errorf("%w: slot %q is both stale and pending", ErrCorrupt, name)
		}
		s.Params = getParams(b[off:])
		off += paramsSize
		off += copy(s.Salt[:], b[off:])
	}
	off += copy(s.Nonce[:], b[off:])
	off += copy(s.Wrapped[:], b[off:])
	off += copy(s.Escrow.Nonce[:], b[off:])
	off += copy(s.Escrow.Box[:], b[off:])
	if s.HasPending() {
		off += copy(s.Pending.Nonce[:], b[off:])
		copy(s.Pending.Box[:], b[off:])
	} else if !allZero(b[off:]) {
		return nil, fmt.Errorf("%w: slot %q has bytes in its pending field but no pending flag", ErrCorrupt, name)
	}
	return s, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
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

// Client flags (version 2).
const (
	ClientMatchUID   = 1 << 0
	ClientMatchGID   = 1 << 1
	clientFlagsKnown = ClientMatchUID | ClientMatchGID
)

// Client is a registered local service, identified by kernel-attested peer
// credentials: a uid (optionally with a gid), a systemd unit, or both.
type Client struct {
	Name    string
	UID     uint32
	HasUID  bool
	GID     uint32
	HasGID  bool   // when false, any gid matches
	Unit    string // systemd unit; empty means any
	Status  ClientStatus
	Created int64
	Updated int64

	// LegacyMAC is the record MAC of a format-1 client record.
	LegacyMAC *[MACSize]byte
}

// Marshal returns the stored form of a version-2 client record.
func (c *Client) Marshal() []byte {
	b := make([]byte, clientHdrSize, clientHdrSize+len(c.Unit))
	b[0] = clientRecVer
	if c.HasUID {
		b[1] |= ClientMatchUID
	}
	if c.HasGID {
		b[1] |= ClientMatchGID
	}
	binary.BigEndian.PutUint32(b[2:], c.UID)
	binary.BigEndian.PutUint32(b[6:], c.GID)
	b[10] = byte(c.Status)
	binary.BigEndian.PutUint64(b[11:], uint64(c.Created))
	binary.BigEndian.PutUint64(b[19:], uint64(c.Updated))
	b[27] = byte(len(c.Unit))
	return append(b, c.Unit...)
}

// Validate checks what a client record may hold: a uid or a unit (or both),
// a gid only with a uid, a valid unit name, a known status.
func (c *Client) Validate() error {
	if !c.HasUID && c.Unit == "" {
		return fmt.Errorf("%w: client %q matches neither a uid nor a unit", ErrCorrupt, c.Name)
	}
	if c.HasGID && !c.HasUID {
		return fmt.Errorf("%w: client %q has a gid without a uid", ErrCorrupt, c.Name)
	}
	if c.Unit != "" {
		if err := ValidUnit(c.Unit); err != nil {
			return fmt.Errorf("%w: client %q: %v", ErrCorrupt, c.Name, err)
		}
	}
	if c.Status < ClientActive || c.Status > ClientRetired {
		return fmt.Errorf("%w: client %q has unknown status %d", ErrCorrupt, c.Name, c.Status)
	}
	if !c.HasUID && c.UID != 0 || !c.HasGID && c.GID != 0 {
		return fmt.Errorf("%w: client %q has an id that its flags do not use", ErrCorrupt, c.Name)
	}
	return nil
}

// ParseClient decodes a version-2 client record (format 2).
func ParseClient(name string, b []byte) (*Client, error) {
	if len(b) < clientHdrSize {
		return nil, fmt.Errorf("%w: client %q is %d bytes, shorter than its header", ErrCorrupt, name, len(b))
	}
	if b[0] != clientRecVer {
		return nil, fmt.Errorf("%w: client %q has record version %d, this format has %d", ErrCorrupt, name, b[0], clientRecVer)
	}
	if b[1]&^clientFlagsKnown != 0 {
		return nil, fmt.Errorf("%w: client %q has unknown flags %#x", ErrCorrupt, name, b[1])
	}
	if n := int(b[27]); len(b) != clientHdrSize+n {
		return nil, fmt.Errorf("%w: client %q is %d bytes, its header says %d", ErrCorrupt, name, len(b), clientHdrSize+n)
	}
	c := &Client{
		Name:    name,
		HasUID:  b[1]&ClientMatchUID != 0,
		HasGID:  b[1]&ClientMatchGID != 0,
		UID:     binary.BigEndian.Uint32(b[2:]),
		GID:     binary.BigEndian.Uint32(b[6:]),
		Status:  ClientStatus(b[10]),
		Created: int64(binary.BigEndian.Uint64(b[11:])),
		Updated: int64(binary.BigEndian.Uint64(b[19:])),
		Unit:    string(b[clientHdrSize:]),
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ValidUnit reports whether u is a plausible systemd unit name: 1 to 255
// bytes of [A-Za-z0-9:_.\-@], with a known unit suffix.
func ValidUnit(u string) error {
	if len(u) == 0 || len(u) > MaxUnitLen {
		return fmt.Errorf("unit name must be 1 to %d bytes", MaxUnitLen)
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == ':' || c == '_' || c == '.' || c == '-' || c == '@' || c == '\\':
		default:
			return fmt.Errorf("unit name %q has a character systemd does not allow", u)
		}
	}
	for _, suf := range []string{".service", ".socket", ".scope", ".timer", ".mount", ".path", ".target", ".slice", ".swap", ".device", ".automount"} {
		if len(u) > len(suf) && u[len(u)-len(suf):] == suf {
			return nil
		}
	}
	return fmt.Errorf("unit name %q lacks a unit type suffix such as .service", u)
}

// Secret is the master secret, encrypted under the DataKey.
type Secret struct {
	Version    uint64 // bumped on every rotation; bound into the AAD
	Nonce      [NonceSize]byte
	Ciphertext []byte // plaintext length + TagSize
}

// Marshal returns the stored form of the secret record.
func (s *Secret) Marshal() []byte {
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

// AuditState is where one audit stream stands, as the state root covers it:
// its last keyed record and its pruning anchor (the last record removed).
type AuditState struct {
	KeyedSeq  uint64 // 0: no keyed record yet
	KeyedMAC  [MACSize]byte
	AnchorSeq uint64 // 0: never pruned
	AnchorMAC [MACSize]byte
}

func (a *AuditState) put(b []byte) {
	binary.BigEndian.PutUint64(b, a.KeyedSeq)
	copy(b[8:], a.KeyedMAC[:])
	binary.BigEndian.PutUint64(b[8+MACSize:], a.AnchorSeq)
	copy(b[16+MACSize:], a.AnchorMAC[:])
}

func getAuditState(b []byte) AuditState {
	var a AuditState
	a.KeyedSeq = binary.BigEndian.Uint64(b)
	copy(a.KeyedMAC[:], b[8:])
	a.AnchorSeq = binary.BigEndian.Uint64(b[8+MACSize:])
	copy(a.AnchorMAC[:], b[16+MACSize:])
	return a
}

// Root is the state root: one MAC over everything someone who can write the
// file could swap or roll back piecewise (see FORMAT.md).
type Root struct {
	Generation uint64
	Header     [HashSize]byte // SHA-256 of the header record
	Secret     [HashSize]byte // SHA-256 of the secret record
	Records    [HashSize]byte // digest of the manifest
	Keys       [HashSize]byte // SHA-256 of the audit key history, or zeros
	Events     AuditState     // the audit log of events
	Reads      AuditState     // the audit log of reads and refusals
	MAC        [MACSize]byte
}

// Body returns the bytes the root's MAC covers.
func (r *Root) Body() []byte {
	b := make([]byte, rootSize-MACSize)
	b[0] = rootRecVersion
	binary.BigEndian.PutUint64(b[1:], r.Generation)
	off := 9
	for _, h := range [][HashSize]byte{r.Header, r.Secret, r.Records, r.Keys} {
		off += copy(b[off:], h[:])
	}
	r.Events.put(b[off:])
	off += auditStateSize
	r.Reads.put(b[off:])
	return b
}

// Marshal returns the stored form of the root.
func (r *Root) Marshal() []byte { return append(r.Body(), r.MAC[:]...) }

// ParseRoot decodes the state root record.
func ParseRoot(b []byte) (*Root, error) {
	if len(b) != rootSize {
		return nil, fmt.Errorf("%w: state root is %d bytes, want %d", ErrCorrupt, len(b), rootSize)
	}
	if b[0] != rootRecVersion {
		return nil, fmt.Errorf("%w: state root has record version %d, this build reads %d", ErrCorrupt, b[0], rootRecVersion)
	}
	r := &Root{Generation: binary.BigEndian.Uint64(b[1:])}
	off := 9
	for _, h := range []*[HashSize]byte{&r.Header, &r.Secret, &r.Records, &r.Keys} {
		off += copy(h[:], b[off:])
	}
	r.Events = getAuditState(b[off:])
	off += auditStateSize
	r.Reads = getAuditState(b[off:])
	off += auditStateSize
	copy(r.MAC[:], b[off:])
	return r, nil
}

// ErrInvalidName is wrapped by ValidName's errors.
var ErrInvalidName = errclass.New(errclass.Invalid, "invalid name")

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
