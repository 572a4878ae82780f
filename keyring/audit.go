package keyring

import (
	"encoding/binary"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// The audit buckets hold records by sequence number (u64 big-endian keys,
// so bbolt's order is the chain's order), one bucket per stream. Their
// encoding and chaining belong to the audit package; this file only stores
// bytes.

// Stream names an audit log: events (unseals, seals, changes) or reads
// (reads and refusals), each a chain of its own with its own retention.
type Stream uint8

// The streams. Format 1 has only Events.
const (
	Events Stream = 0
	Reads  Stream = 1
)

func (s Stream) String() string {
	if s == Reads {
		return "reads"
	}
	return "events"
}

var (
	bucketAudit     = []byte("audit")
	bucketReads     = []byte("audit-reads")
	bucketBackoff   = []byte("backoff")
	errNoAuditWrite = errors.New("keyring: audit write in a read-only transaction")
)

// Audit metadata records in the meta bucket, stored as "audit-"+name.
// Format 2 keeps only the key history; format 1 also had a head and an
// anchor, which the state root replaces.
const (
	AuditHead   = "head"
	AuditAnchor = "anchor"
	AuditKeys   = "keys"
)

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func (tx *Tx) auditBucket(s Stream, create bool) (*bolt.Bucket, error) {
	name := bucketAudit
	if s == Reads {
		name = bucketReads
	}
	b := tx.tx.Bucket(name)
	if b == nil && create {
		if !tx.tx.Writable() {
			return nil, errNoAuditWrite
		}
		var err error
		if b, err = tx.tx.CreateBucket(name); err != nil {
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

// PutAudit stores an audit record under seq in stream s.
func (tx *Tx) PutAudit(s Stream, seq uint64, rec []byte) error {
	b, err := tx.auditBucket(s, true)
	if err != nil {
		return err
	}
	return tx.put(b, seqKey(seq), rec)
}

// PutAuditBatch stores recs under consecutive sequence numbers from first
// in stream s: PutAudit for many records, with one bucket lookup and one
// allocation for their keys.
func (tx *Tx) PutAuditBatch(s Stream, first uint64, recs [][]byte) error {
	b, err := tx.auditBucket(s, true)
	if err != nil {
		return err
	}
	keys := make([]byte, 8*len(recs))
	for i, rec := range recs {
		k := keys[8*i : 8*i+8 : 8*i+8]
		binary.BigEndian.PutUint64(k, first+uint64(i))
		if err := tx.put(b, k, rec); err != nil {
			return err
		}
	}
	return nil
}

// AuditRecords calls fn for every stored record of stream s from seq on, in
// order, until fn returns false. The slice is valid only during the call.
// A key that is not 8 bytes is passed with seq 0, for the chain check to
// report.
func (tx *Tx) AuditRecords(s Stream, from uint64, fn func(seq uint64, rec []byte) bool) {
	b, _ := tx.auditBucket(s, false)
	if b == nil {
		return
	}
	c := b.Cursor()
	for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
		seq := uint64(0)
		if len(k) == 8 {
			seq = binary.BigEndian.Uint64(k)
		}
		if !fn(seq, v) {
			return
		}
	}
}

// AuditRecord returns the record stored under seq in stream s (nil if none).
func (tx *Tx) AuditRecord(s Stream, seq uint64) []byte {
	b, _ := tx.auditBucket(s, false)
	if b == nil {
		return nil
	}
	return b.Get(seqKey(seq))
}

// AuditBounds returns the first and last sequence numbers stored in stream s
// (0, 0 if it is empty), in O(log n).
func (tx *Tx) AuditBounds(s Stream) (first, last uint64) {
	b, _ := tx.auditBucket(s, false)
	if b == nil {
		return 0, 0
	}
	c := b.Cursor()
	if k, _ := c.First(); len(k) == 8 {
		first = binary.BigEndian.Uint64(k)
	}
	if k, _ := c.Last(); len(k) == 8 {
		last = binary.BigEndian.Uint64(k)
	}
	return first, last
}

// AuditLast returns the last record of stream s and its sequence number
// (0, nil if empty).
func (tx *Tx) AuditLast(s Stream) (uint64, []byte) {
	b, _ := tx.auditBucket(s, false)
	if b == nil {
		return 0, nil
	}
	k, v := b.Cursor().Last()
	if len(k) != 8 {
		return 0, v
	}
	return binary.BigEndian.Uint64(k), v
}

// DeleteAuditBefore deletes every record of stream s with a sequence number
// below seq, in O(records deleted).
func (tx *Tx) DeleteAuditBefore(s Stream, seq uint64) error {
	b, _ := tx.auditBucket(s, false)
	if b == nil {
		return nil
	}
	if !tx.tx.Writable() {
		return errNoAuditWrite
	}
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && (len(k) != 8 || binary.BigEndian.Uint64(k) < seq); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
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
