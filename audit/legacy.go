package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/sealbox/sealbox/keyring"
)

// Format 1 kept the log's end in an "audit-head" record (the last record,
// and the last keyed one with an attestation under the audit key) and its
// pruning anchor in "audit-anchor" (under the audit key too). Format 2's
// state root replaces both; Upgrade carries them over.

type legacyHead struct {
	seq      uint64
	mac      [macSize]byte
	keyedSeq uint64
	keyedMAC [macSize]byte
	attest   [macSize]byte
}

func readLegacyHead(tx *keyring.Tx) (legacyHead, error) {
	raw := tx.AuditMeta(keyring.AuditHead)
	if raw == nil {
		return legacyHead{}, nil
	}
	if len(raw) != keyring.LegacyAuditHeadSize {
		return legacyHead{}, fmt.Errorf("%w: audit head is %d bytes, want %d", ErrBroken, len(raw), keyring.LegacyAuditHeadSize)
	}
	h := legacyHead{seq: binary.BigEndian.Uint64(raw), keyedSeq: binary.BigEndian.Uint64(raw[8+macSize:])}
	copy(h.mac[:], raw[8:])
	copy(h.keyedMAC[:], raw[8+macSize+8:])
	copy(h.attest[:], raw[8+macSize+8+macSize:])
	return h, nil
}

// writeLegacyHead records an unkeyed append in a format-1 file: the last
// record moves, the attested keyed record stays.
func writeLegacyHead(tx *keyring.Tx, seq uint64, mac [macSize]byte) error {
	h, err := readLegacyHead(tx)
	if err != nil {
		return err
	}
	b := binary.BigEndian.AppendUint64(nil, seq)
	b = append(b, mac[:]...)
	b = binary.BigEndian.AppendUint64(b, h.keyedSeq)
	b = append(b, h.keyedMAC[:]...)
	b = append(b, h.attest[:]...)
	return tx.PutAuditMeta(keyring.AuditHead, b)
}

func legacyMAC(key []byte, label string, seq uint64, mac [macSize]byte) [macSize]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(binary.BigEndian.AppendUint64(nil, seq))
	m.Write(mac[:])
	var out [macSize]byte
	m.Sum(out[:0])
	return out
}

// Upgrade carries a format-1 log into format 2, in the upgrade's
// transaction and before the file's format changes: it checks the head's
// attestation and the anchor under the audit key (so what format 1 vouched
// for is still vouched for), rewrites the key history in format 2's layout,
// and returns the events stream's state for the new state root. The whole
// chain is Verify's job afterwards.
func Upgrade(tx *keyring.Tx, key []byte) (keyring.AuditState, error) {
	st, hist, err := legacyState(tx, key)
	if err == nil && len(hist) > 0 {
		err = storeEpochs(tx, key, hist)
	}
	return st, err
}

// LegacyState is Upgrade's check alone, in a read-only transaction: where
// a format-1 log stands, as its head and anchor vouch under the audit key.
func LegacyState(tx *keyring.Tx, key []byte) (keyring.AuditState, error) {
	st, _, err := legacyState(tx, key)
	return st, err
}

func legacyState(tx *keyring.Tx, key []byte) (keyring.AuditState, epochs, error) {
	var st keyring.AuditState
	if tx.Format() != 1 {
		return st, nil, fmt.Errorf("audit: the file is not format 1")
	}
	hist, err := loadEpochs(tx, key)
	if err != nil {
		return st, nil, fmt.Errorf("%w: %v", ErrBroken, err)
	}
	h, err := readLegacyHead(tx)
	if err != nil {
		return st, nil, err
	}
	if tx.AuditMeta(keyring.AuditHead) == nil {
		if _, last := tx.AuditBounds(keyring.Events); last != 0 || tx.AuditMeta(keyring.AuditAnchor) != nil {
			return st, nil, fmt.Errorf("%w: the audit log has records but no head: it was replaced", ErrBroken)
		}
	}
	if h.keyedSeq != 0 {
		_, k := hist.keyFor(keyring.Events, h.keyedSeq, key)
		if want := legacyMAC(k, labelHead, h.keyedSeq, h.keyedMAC); !hmac.Equal(want[:], h.attest[:]) {
			return st, nil, fmt.Errorf("%w: the audit head's attestation does not verify", ErrBroken)
		}
		raw := tx.AuditRecord(keyring.Events, h.keyedSeq)
		r, _, err := decodeHeader(raw)
		if err != nil || r.MAC != h.keyedMAC {
			return st, nil, fmt.Errorf("%w: record %d is not the keyed record the audit head attests", ErrBroken, h.keyedSeq)
		}
		st.KeyedSeq, st.KeyedMAC = h.keyedSeq, h.keyedMAC
	}
	if raw := tx.AuditMeta(keyring.AuditAnchor); raw != nil {
		if len(raw) != keyring.LegacyAuditAnchorSize {
			return st, nil, fmt.Errorf("%w: the audit anchor is %d bytes", ErrBroken, len(raw))
		}
		st.AnchorSeq = binary.BigEndian.Uint64(raw)
		copy(st.AnchorMAC[:], raw[8:])
		if want := legacyMAC(key, labelAnchor, st.AnchorSeq, st.AnchorMAC); !hmac.Equal(want[:], raw[8+macSize:]) {
			return st, nil, fmt.Errorf("%w: the audit anchor does not verify", ErrBroken)
		}
	}
	return st, hist, nil
}

// StateOf returns where stream s stands according to the log itself: its
// anchor (the record before the first one kept) and its last keyed record.
// Repair uses it to accept a log as it stands, saying so in its own record;
// nothing else should, since it vouches for whatever the file holds.
func StateOf(tx *keyring.Tx, s keyring.Stream) (keyring.AuditState, error) {
	var st keyring.AuditState
	var ferr error
	first := true
	tx.AuditRecords(s, 0, func(seq uint64, raw []byte) bool {
		r, _, err := decodeHeader(raw)
		if err != nil {
			ferr = fmt.Errorf("%w: record %d: %v", ErrBroken, seq, err)
			return false
		}
		if first {
			first = false
			if seq > 1 {
				st.AnchorSeq, st.AnchorMAC = seq-1, r.Prev
			}
		}
		if r.Keyed {
			st.KeyedSeq, st.KeyedMAC = seq, r.MAC
		}
		return true
	})
	return st, ferr
}
