package keyring

import (
	"encoding/binary"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// The audit bucket holds records by sequence number (u64 big-endian keys, so
// bbolt's order is the chain's order). Their encoding and chaining belong to
// the audit package; this file only stores bytes.

var (
	bucketAudit     = []byte("audit")
	bucketBackoff   = []byte("backoff")
	errNoAuditWrite = errors.New("keyring: audit write in a read-only transaction")
)

// Audit metadata records in the meta bucket, stored as "audit-"+name.
const (
	AuditHead   = "head"
	AuditAnchor = "anchor"
	AuditKeys   = "keys"
)

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func (tx *Tx) auditBucket(create bool) (*bolt.Bucket, error) {
	b := tx.tx.Bucket(bucketAudit)
	if b == nil && create {
		if !tx.tx.Writable() {
			return nil, errNoAuditWrite
		}
		var err error
		if b, err = tx.tx.CreateBucket(bucketAudit); err != nil {
			return nil, err
		}
	}
	if b != nil {
		// Keys only ever grow: fill pages completely instead of splitting
		// them in half.
		b.FillPercent = 1.0
	}
	return b, nil
}

// AuditMeta returns the named audit metadata record (nil if none).
func (tx *Tx) AuditMeta(name string) []byte {
	if v := tx.meta().Get([]byte("audit-" + name)); v != nil {
		return append([]byte(nil), v...)
	}
	return nil
}

// PutAuditMeta stores the named audit metadata record.
func (tx *Tx) PutAuditMeta(name string, v []byte) error {
	return tx.put(tx.meta(), []byte("audit-"+name), v)
}

// PutAudit stores an audit record under seq.
func (tx *Tx) PutAudit(seq uint64, rec []byte) error {
	b, err := tx.auditBucket(true)
	if err != nil {
		return err
	}
	return tx.put(b, seqKey(seq), rec)
}

// AuditRecords calls fn for every stored audit record from seq on, in order,
// until fn returns false. The slice is valid only during the call.
func (tx *Tx) AuditRecords(from uint64, fn func(seq uint64, rec []byte) bool) {
	b, _ := tx.auditBucket(false)
	if b == nil {
		return
	}
	c := b.Cursor()
	for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			continue // decoded by the audit package as a gap
		}
		if !fn(binary.BigEndian.Uint64(k), v) {
			return
		}
	}
}

// AuditCount returns how many audit records are stored.
func (tx *Tx) AuditCount() int {
	b, _ := tx.auditBucket(false)
	if b == nil {
		return 0
	}
	return b.Stats().KeyN
}

// DeleteAuditBefore deletes every audit record with a sequence number below
// seq.
func (tx *Tx) DeleteAuditBefore(seq uint64) error {
	b, _ := tx.auditBucket(false)
	if b == nil {
		return nil
	}
	if !tx.tx.Writable() {
		return errNoAuditWrite
	}
	c := b.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) < seq; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Backoff returns the stored guessing-defence state for key (nil if none).
func (tx *Tx) Backoff(key string) []byte {
	b := tx.tx.Bucket(bucketBackoff)
	if b == nil {
		return nil
	}
	if v := b.Get([]byte(key)); v != nil {
		return append([]byte(nil), v...)
	}
	return nil
}

// PutBackoff stores the guessing-defence state for key; nil deletes it.
func (tx *Tx) PutBackoff(key string, v []byte) error {
	if !tx.tx.Writable() {
		return errReadOnlyTxWrite
	}
	b, err := tx.tx.CreateBucketIfNotExists(bucketBackoff)
	if err != nil {
		return err
	}
	if v == nil {
		return b.Delete([]byte(key))
	}
	return b.Put([]byte(key), v)
}

// Backoffs calls fn for every stored backoff entry.
func (tx *Tx) Backoffs(fn func(key string, v []byte)) {
	b := tx.tx.Bucket(bucketBackoff)
	if b == nil {
		return
	}
	b.ForEach(func(k, v []byte) error { fn(string(k), v); return nil })
}
