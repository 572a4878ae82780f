package keyring

import (
	"encoding/binary"
	"fmt"
)

// Format 1 (sealbox before the state root). A format-1 file is read as it
// is until the first successful admin login upgrades it (see the admin
// package and FORMAT.md's appendix). Nothing writes format-1 records.

const (
	// LegacyPendingSize is a format-1 pending key: ephemeral X25519 public
	// key, nonce, AES-GCM(DataKey).
	LegacyPendingSize  = KeySize + NonceSize + KeySize + TagSize
	legacySlotV1Size   = 1 + 1 + paramsSize + SaltSize + NonceSize + WrappedSize + KeySize + 8 + MACSize
	legacySlotV2Size   = legacySlotV1Size + 8 + 1 + LegacyPendingSize
	legacyClientSize   = 1 + 4 + 4 + 1 + 1 + 8 + 8 + MACSize
	legacyRegistrySize = 8 + MACSize
	// LegacyAuditHeadSize and LegacyAuditAnchorSize are format 1's audit
	// head and anchor records.
	LegacyAuditHeadSize   = 8 + MACSize + 8 + MACSize + MACSize
	LegacyAuditAnchorSize = 8 + MACSize + MACSize
)

// LegacyBody returns the bytes a format-1 slot's record MAC covers: the
// record as stored, without its MAC.
func LegacyBody(raw []byte) []byte {
	if len(raw) < MACSize {
		return nil
	}
	return raw[:len(raw)-MACSize]
}

// ParseLegacySlot decodes a format-1 slot record: version 1 (no expiry, no
// pending key) or version 2.
func ParseLegacySlot(name string, b []byte) (*Slot, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: slot %q is empty", ErrCorrupt, name)
	}
	want := map[byte]int{1: legacySlotV1Size, 2: legacySlotV2Size}[b[0]]
	if want == 0 {
		return nil, fmt.Errorf("%w: slot %q has record version %d, format 1 has 1 and 2", ErrCorrupt, name, b[0])
	}
	if len(b) != want {
		return nil, fmt.Errorf("%w: slot %q is %d bytes, want %d", ErrCorrupt, name, len(b), want)
	}
	s := &Slot{Name: name, Kind: SlotKind(b[1]), Legacy: &LegacySlot{Version: b[0]}}
	if s.Kind != KindAdmin && s.Kind != KindRecovery && s.Kind != KindInvite {
		return nil, fmt.Errorf("%w: slot %q has unknown kind %d", ErrCorrupt, name, b[1])
	}
	off := 2
	s.Params = getParams(b[off:])
	off += paramsSize
	off += copy(s.Salt[:], b[off:])
	off += copy(s.Nonce[:], b[off:])
	off += copy(s.Wrapped[:], b[off:])
	off += copy(s.Legacy.PublicKey[:], b[off:])
	s.Created = int64(binary.BigEndian.Uint64(b[off:]))
	off += 8
	if b[0] == 2 {
		s.Expires = int64(binary.BigEndian.Uint64(b[off:]))
		off += 8
		switch b[off] {
		case 0:
			if !allZero(b[off+1 : off+1+LegacyPendingSize]) {
				return nil, fmt.Errorf("%w: slot %q has bytes in its pending field but no pending flag", ErrCorrupt, name)
			}
		case 1:
			s.Legacy.Pending = new([LegacyPendingSize]byte)
			copy(s.Legacy.Pending[:], b[off+1:])
		default:
			return nil, fmt.Errorf("%w: slot %q has unknown flags %#x", ErrCorrupt, name, b[off])
		}
		off += 1 + LegacyPendingSize
	}
	copy(s.Legacy.MAC[:], b[off:])
	return s, nil
}

// ParseLegacyClient decodes a format-1 client record (version 1).
func ParseLegacyClient(name string, b []byte) (*Client, error) {
	if len(b) != legacyClientSize {
		return nil, fmt.Errorf("%w: client %q is %d bytes, want %d", ErrCorrupt, name, len(b), legacyClientSize)
	}
	if b[0] != 1 {
		return nil, fmt.Errorf("%w: client %q has record version %d, format 1 has 1", ErrCorrupt, name, b[0])
	}
	if b[9] > 1 {
		return nil, fmt.Errorf("%w: client %q has unknown flags %#x", ErrCorrupt, name, b[9])
	}
	c := &Client{
		Name:    name,
		HasUID:  true,
		UID:     binary.BigEndian.Uint32(b[1:]),
		HasGID:  b[9] == 1,
		Status:  ClientStatus(b[10]),
		Created: int64(binary.BigEndian.Uint64(b[11:])),
		Updated: int64(binary.BigEndian.Uint64(b[19:])),
	}
	if c.HasGID {
		c.GID = binary.BigEndian.Uint32(b[5:])
	}
	if c.Status < ClientActive || c.Status > ClientRetired {
		return nil, fmt.Errorf("%w: client %q has unknown status %d", ErrCorrupt, name, b[10])
	}
	c.LegacyMAC = new([MACSize]byte)
	copy(c.LegacyMAC[:], b[27:])
	return c, nil
}

// LegacyRegistry is format 1's manifest over all slot and client records.
type LegacyRegistry struct {
	Generation uint64
	MAC        [MACSize]byte
}

// LegacyRegistry returns format 1's registry record.
func (tx *Tx) LegacyRegistry() (*LegacyRegistry, error) {
	b := tx.meta().Get(keyRegistry)
	if len(b) != legacyRegistrySize {
		return nil, fmt.Errorf("%w: registry record is %d bytes, want %d", ErrCorrupt, len(b), legacyRegistrySize)
	}
	r := &LegacyRegistry{Generation: binary.BigEndian.Uint64(b)}
	copy(r.MAC[:], b[8:])
	return r, nil
}
