// Package audit keeps sealbox's append-only audit log in the keyring file: a
// chain of records, each carrying a MAC over its predecessor's, so that a
// deleted, reordered or edited record is found by Verify.
//
// Records are keyed when an audit key is at hand: an HMAC under a key derived
// from the DataKey (unseal.Key.AuditKey), which someone who can write the
// file but is not an admin does not have. Before the daemon's first unseal no
// key exists, so records are chained with plain SHA-256 ("unkeyed"). The next
// keyed record anchors them: its MAC covers its predecessor's hash, which
// covers the one before. Verify reports a tail of unkeyed records that no
// keyed record follows yet, since it is chained but not authenticated.
//
// The head (last sequence number and MAC) and, after pruning, the anchor
// (the last pruned record's sequence number and MAC) live in the keyring's
// meta bucket, so truncating the tail or deleting a prefix is detected too.
// The head also carries an attestation, a MAC under the audit key, of the
// last keyed record; unkeyed appends copy it forward. So someone rewriting
// the file can alter only the unkeyed records after the last keyed one, and
// cannot pass keyed records off as unkeyed. Events that are only ever
// written with a key (successful changes and unseals) must verify as keyed.
//
// Use Append inside a keyring transaction (admin changes write their record
// in the change's own transaction, so a change without its record cannot
// commit), Verify to check the chain, List to read it back, Prune to cap it.
package audit

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/sealbox/sealbox/keyring"
)

// Record format, version 1.
const (
	recVersion = 1
	macSize    = 32
	hdrSize    = 1 + 8 + macSize + 1 + macSize       // version, seq, prev, keyed, mac
	headSize   = 8 + macSize + 8 + macSize + macSize // seq, mac; last keyed seq, its mac, attestation
	anchorSize = 8 + macSize + macSize               // seq, mac, anchor MAC
	// MaxBody bounds a record's JSON body.
	MaxBody = 4096

	labelKeyed   = "sealbox/v1/audit"
	labelUnkeyed = "sealbox/v1/audit-unkeyed"
	labelHead    = "sealbox/v1/audit-head"
	labelAnchor  = "sealbox/v1/audit-anchor"
)

// ErrBroken is wrapped by Verify's error when the chain does not hold.
var ErrBroken = errors.New("audit chain broken")

// Peer is the process at the other end of a socket, as the kernel reported.
type Peer struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	PID int32  `json:"pid"`
}

// Event is what happened. It never holds a password, code or secret.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // unseal, seal, read, admin.add, client.disable, ...
	Actor   string    `json:"actor,omitempty"`
	Target  string    `json:"target,omitempty"`
	Client  string    `json:"client,omitempty"`
	Peer    *Peer     `json:"peer,omitempty"`
	Outcome string    `json:"outcome"`
	Detail  string    `json:"detail,omitempty"`
}

// Record is a stored event with its place in the chain.
type Record struct {
	Seq   uint64        `json:"seq"`
	Keyed bool          `json:"keyed"`
	Prev  [macSize]byte `json:"-"`
	MAC   [macSize]byte `json:"-"`
	Event `json:"event"`
}

// chainer computes record MACs, reusing one HMAC state across a batch.
type chainer struct {
	keyed hash.Hash // nil without a key
	plain hash.Hash
	buf   [8 + macSize + 1]byte
}

func newChainer(key []byte) *chainer {
	c := &chainer{plain: sha256.New()}
	if key != nil {
		c.keyed = hmac.New(sha256.New, key)
	}
	return c
}

func (c *chainer) mac(seq uint64, prev [macSize]byte, keyed bool, body []byte) [macSize]byte {
	h := c.plain
	label := labelUnkeyed
	if keyed {
		h, label = c.keyed, labelKeyed
	}
	h.Reset()
	h.Write([]byte(label))
	binary.BigEndian.PutUint64(c.buf[:], seq)
	copy(c.buf[8:], prev[:])
	c.buf[8+macSize] = 0
	if keyed {
		c.buf[8+macSize] = 1
	}
	h.Write(c.buf[:])
	h.Write(body)
	var out [macSize]byte
	h.Sum(out[:0])
	return out
}

func chainMAC(key []byte, seq uint64, prev [macSize]byte, keyed bool, body []byte) [macSize]byte {
	return newChainer(key).mac(seq, prev, keyed, body)
}

func encode(seq uint64, prev [macSize]byte, keyed bool, mac [macSize]byte, body []byte) []byte {
	b := make([]byte, 0, hdrSize+len(body))
	b = append(b, recVersion)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, prev[:]...)
	if keyed {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = append(b, mac[:]...)
	return append(b, body...)
}

// decode parses a stored record; the body is returned raw for MAC checks.
func decode(raw []byte) (*Record, []byte, error) {
	if len(raw) < hdrSize+2 || len(raw) > hdrSize+MaxBody {
		return nil, nil, fmt.Errorf("record is %d bytes, outside %d..%d", len(raw), hdrSize+2, hdrSize+MaxBody)
	}
	if raw[0] != recVersion {
		return nil, nil, fmt.Errorf("record version %d, this build reads %d", raw[0], recVersion)
	}
	if raw[1+8+macSize] > 1 {
		return nil, nil, fmt.Errorf("record keyed flag %d", raw[1+8+macSize])
	}
	r := &Record{Seq: binary.BigEndian.Uint64(raw[1:]), Keyed: raw[1+8+macSize] == 1}
	copy(r.Prev[:], raw[9:])
	copy(r.MAC[:], raw[1+8+macSize+1:])
	body := raw[hdrSize:]
	if err := json.Unmarshal(body, &r.Event); err != nil {
		return nil, nil, fmt.Errorf("record body: %v", err)
	}
	return r, body, nil
}

type head struct {
	seq      uint64
	mac      [macSize]byte
	keyedSeq uint64 // 0: no keyed record yet
	keyedMAC [macSize]byte
	attest   [macSize]byte
}

func headMAC(key []byte, label string, seq uint64, mac [macSize]byte) [macSize]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(binary.BigEndian.AppendUint64(nil, seq))
	m.Write(mac[:])
	var out [macSize]byte
	m.Sum(out[:0])
	return out
}

func readHead(tx *keyring.Tx) (head, error) {
	raw := tx.AuditMeta(keyring.AuditHead)
	if raw == nil {
		return head{}, nil
	}
	if len(raw) != headSize {
		return head{}, fmt.Errorf("%w: audit head is %d bytes, want %d", ErrBroken, len(raw), headSize)
	}
	h := head{seq: binary.BigEndian.Uint64(raw), keyedSeq: binary.BigEndian.Uint64(raw[8+macSize:])}
	copy(h.mac[:], raw[8:])
	copy(h.keyedMAC[:], raw[8+macSize+8:])
	copy(h.attest[:], raw[8+macSize+8+macSize:])
	return h, nil
}

func writeHead(tx *keyring.Tx, h head) error {
	b := binary.BigEndian.AppendUint64(nil, h.seq)
	b = append(b, h.mac[:]...)
	b = binary.BigEndian.AppendUint64(b, h.keyedSeq)
	b = append(b, h.keyedMAC[:]...)
	b = append(b, h.attest[:]...)
	return tx.PutAuditMeta(keyring.AuditHead, b)
}

// alwaysKeyed reports whether an event is only ever written with the audit
// key at hand: every successful change and unseal is.
func alwaysKeyed(e *Event) bool {
	if e.Outcome != "ok" {
		return false
	}
	switch e.Kind {
	case "init", "unseal", "repair", "audit.prune":
		return true
	}
	return strings.HasPrefix(e.Kind, "admin.") || strings.HasPrefix(e.Kind, "client.")
}

// Append adds events to the chain in tx, keyed under key when it is not nil.
func Append(tx *keyring.Tx, key []byte, events ...Event) error {
	h, err := readHead(tx)
	if err != nil {
		return err
	}
	keyed := key != nil
	ch := newChainer(key)
	var body []byte
	for _, ev := range events {
		if ev.Time.IsZero() {
			ev.Time = time.Now()
		}
		ev.Time = ev.Time.UTC()
		body = appendEvent(body[:0], &ev)
		if len(body) > MaxBody {
			return fmt.Errorf("audit: event body %d bytes exceeds %d", len(body), MaxBody)
		}
		seq := h.seq + 1
		mac := ch.mac(seq, h.mac, keyed, body)
		if err := tx.PutAudit(seq, encode(seq, h.mac, keyed, mac, body)); err != nil {
			return err
		}
		h.seq, h.mac = seq, mac
	}
	if keyed && len(events) > 0 {
		h.keyedSeq, h.keyedMAC = h.seq, h.mac
		h.attest = headMAC(key, labelHead, h.seq, h.mac)
	}
	return writeHead(tx, h)
}

// Report is what Verify found.
type Report struct {
	Records    int    `json:"records"`
	First      uint64 `json:"first_seq"`
	Last       uint64 `json:"last_seq"`
	Keyed      int    `json:"keyed"`
	Unanchored int    `json:"unanchored_tail"` // unkeyed records after the last keyed one
	Pruned     uint64 `json:"pruned_through,omitempty"`
	BadSeq     uint64 `json:"first_bad_seq,omitempty"`
	Problem    string `json:"problem,omitempty"`
}

// OK reports whether the chain verified.
func (r *Report) OK() bool { return r.Problem == "" }

func (r *Report) fail(seq uint64, format string, a ...any) (*Report, error) {
	r.BadSeq = seq
	r.Problem = fmt.Sprintf(format, a...)
	return r, fmt.Errorf("%w at record %d: %s", ErrBroken, seq, r.Problem)
}

// Verify walks the whole chain with key and names the first record that does
// not hold. A nil key is refused: keyed records cannot be checked without it.
func Verify(tx *keyring.Tx, key []byte) (*Report, error) {
	if key == nil {
		return nil, errors.New("audit: verifying needs the audit key (an admin's password)")
	}
	r := &Report{}
	epochs, err := loadEpochs(tx, key)
	if err != nil {
		return r.fail(0, "%v", err)
	}
	chainers := map[*byte]*chainer{}
	chainerFor := func(seq uint64) *chainer {
		k := epochs.keyFor(seq, key)
		if c, ok := chainers[&k[0]]; ok {
			return c
		}
		c := newChainer(k)
		chainers[&k[0]] = c
		return c
	}
	var prev [macSize]byte
	next := uint64(1)
	if raw := tx.AuditMeta(keyring.AuditAnchor); raw != nil {
		if len(raw) != anchorSize {
			return r.fail(0, "anchor is %d bytes, want %d", len(raw), anchorSize)
		}
		seq := binary.BigEndian.Uint64(raw)
		copy(prev[:], raw[8:])
		want := headMAC(key, labelAnchor, seq, prev)
		if !hmac.Equal(want[:], raw[8+macSize:]) {
			return r.fail(seq, "the pruning anchor was altered (records before it may have been removed)")
		}
		r.Pruned, next = seq, seq+1
	}
	var ferr error
	var lastKeyed uint64
	var lastKeyedMAC [macSize]byte
	tx.AuditRecords(0, func(seq uint64, raw []byte) bool {
		if seq != next {
			if seq < next {
				_, ferr = r.fail(seq, "record %d is older than the pruning anchor", seq)
			} else {
				_, ferr = r.fail(next, "record %d is missing (deleted)", next)
			}
			return false
		}
		rec, body, err := decode(raw)
		if err != nil {
			_, ferr = r.fail(seq, "%v", err)
			return false
		}
		if rec.Seq != seq {
			_, ferr = r.fail(seq, "record stored under %d says it is %d (moved)", seq, rec.Seq)
			return false
		}
		if rec.Prev != prev {
			_, ferr = r.fail(seq, "does not follow record %d (deleted, reordered or edited)", seq-1)
			return false
		}
		mac := chainerFor(seq).mac(seq, prev, rec.Keyed, body)
		if !hmac.Equal(mac[:], rec.MAC[:]) {
			_, ferr = r.fail(seq, "its MAC does not match its contents (edited)")
			return false
		}
		if !rec.Keyed && alwaysKeyed(&rec.Event) {
			_, ferr = r.fail(seq, "a %s record that is always written keyed is unkeyed (rewritten)", rec.Kind)
			return false
		}
		if r.Records == 0 {
			r.First = seq
		}
		r.Records++
		r.Last = seq
		if rec.Keyed {
			r.Keyed++
			r.Unanchored = 0
			lastKeyed, lastKeyedMAC = seq, mac
		} else {
			r.Unanchored++
		}
		prev = mac
		next = seq + 1
		return true
	})
	if ferr != nil {
		return r, ferr
	}
	h, err := readHead(tx)
	if err != nil {
		return r.fail(r.Last, "%v", err)
	}
	if h.seq != r.Last || h.mac != prev {
		return r.fail(r.Last+1, "the log ends at %d but its head says %d (records removed from the end)", r.Last, h.seq)
	}
	switch {
	case h.keyedSeq == 0 && r.Keyed > 0:
		return r.fail(h.seq, "the head lost its attestation of the last keyed record (rewritten)")
	case h.keyedSeq != 0:
		want := headMAC(epochs.keyFor(h.keyedSeq, key), labelHead, h.keyedSeq, h.keyedMAC)
		if !hmac.Equal(want[:], h.attest[:]) {
			return r.fail(h.keyedSeq, "the head's attestation was altered")
		}
		if h.keyedSeq != lastKeyed || h.keyedMAC != lastKeyedMAC {
			return r.fail(lastKeyed+1, "the last keyed record is %d, but the head attests %d (keyed records rewritten as unkeyed)", lastKeyed, h.keyedSeq)
		}
	}
	return r, nil
}

// Filter selects records for List.
type Filter struct {
	Since  time.Time
	Client string
	Admin  string // matches Actor or Target
	Limit  int    // the newest Limit records; 0 means all
}

// List returns the records that match f, oldest first. It decodes what it
// can; a record that does not decode is skipped here and named by Verify.
func List(tx *keyring.Tx, f Filter) []Record {
	var out []Record
	tx.AuditRecords(0, func(seq uint64, raw []byte) bool {
		rec, _, err := decode(raw)
		if err != nil {
			return true
		}
		if !f.Since.IsZero() && rec.Time.Before(f.Since) {
			return true
		}
		if f.Client != "" && rec.Client != f.Client {
			return true
		}
		if f.Admin != "" && rec.Actor != f.Admin && rec.Target != f.Admin {
			return true
		}
		out = append(out, *rec)
		return true
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}

// Prune deletes the oldest records so that at most keep remain, records an
// anchor (under key) so the chain still verifies across the cut, and appends
// a keyed audit.prune record saying so. It returns how many it deleted.
func Prune(tx *keyring.Tx, key []byte, keep int) (int, error) {
	if key == nil {
		return 0, errors.New("audit: pruning needs the audit key")
	}
	n := tx.AuditCount()
	if n <= keep {
		return 0, nil
	}
	drop := n - keep
	var lastSeq uint64
	var lastMAC [macSize]byte
	i := 0
	var derr error
	tx.AuditRecords(0, func(seq uint64, raw []byte) bool {
		i++
		if i == drop {
			rec, _, err := decode(raw)
			if err != nil {
				derr = fmt.Errorf("%w at record %d: cannot prune across an undecodable record: %v", ErrBroken, seq, err)
				return false
			}
			lastSeq, lastMAC = seq, rec.MAC
			return false
		}
		return true
	})
	if derr != nil {
		return 0, derr
	}
	am := headMAC(key, labelAnchor, lastSeq, lastMAC)
	anchor := binary.BigEndian.AppendUint64(nil, lastSeq)
	anchor = append(anchor, lastMAC[:]...)
	anchor = append(anchor, am[:]...)
	if err := tx.PutAuditMeta(keyring.AuditAnchor, anchor); err != nil {
		return 0, err
	}
	if err := tx.DeleteAuditBefore(lastSeq + 1); err != nil {
		return 0, err
	}
	return drop, Append(tx, key, Event{Kind: "audit.prune", Outcome: "ok", Detail: fmt.Sprintf("removed %d records through %d", drop, lastSeq)})
}

// String renders a record on one line for people.
func (r *Record) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%6d %s %-15s %-8s", r.Seq, r.Time.Format(time.RFC3339), r.Kind, r.Outcome)
	for _, kv := range [][2]string{{"actor", r.Actor}, {"target", r.Target}, {"client", r.Client}, {"detail", r.Detail}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	if r.Peer != nil {
		fmt.Fprintf(&b, " uid=%d gid=%d pid=%d", r.Peer.UID, r.Peer.GID, r.Peer.PID)
	}
	if !r.Keyed {
		b.WriteString(" (unkeyed)")
	}
	return b.String()
}

// Key epochs. The audit key derives from the DataKey, so a rekey changes it.
// The rekey's own record is the last one under the old key. The old keys
// are kept, each with the last sequence number it signed, in the meta
// record "audit-keys", encrypted under a key derived from the current audit
// key: whoever holds the current key (sealboxd, or an admin) can verify the
// whole chain. Someone who only knows an old key, such as a removed admin
// with an old copy of the file, learns nothing of the later ones.

const labelKeys = "sealbox/v1/audit-keys"

type epoch struct {
	last uint64
	key  []byte
}

type epochs []epoch

// keyFor returns the key that signed record seq.
func (e epochs) keyFor(seq uint64, current []byte) []byte {
	for _, ep := range e {
		if seq <= ep.last {
			return ep.key
		}
	}
	return current
}

func keysCipher(key []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, key, nil, labelKeys, 32)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func loadEpochs(tx *keyring.Tx, current []byte) (epochs, error) {
	raw := tx.AuditMeta(keyring.AuditKeys)
	if raw == nil {
		return nil, nil
	}
	g, err := keysCipher(current)
	if err != nil {
		return nil, err
	}
	if len(raw) < g.NonceSize()+g.Overhead() {
		return nil, fmt.Errorf("the audit key history is %d bytes", len(raw))
	}
	plain, err := g.Open(nil, raw[:g.NonceSize()], raw[g.NonceSize():], []byte(labelKeys))
	if err != nil {
		return nil, errors.New("the audit key history does not open under the current key (altered, or a wrong key)")
	}
	if len(plain)%(8+32) != 0 {
		return nil, fmt.Errorf("the audit key history is %d bytes of entries", len(plain))
	}
	var out epochs
	for b := plain; len(b) > 0; b = b[40:] {
		out = append(out, epoch{last: binary.BigEndian.Uint64(b), key: append([]byte(nil), b[8:40]...)})
	}
	clear(plain)
	return out, nil
}

func storeEpochs(tx *keyring.Tx, current []byte, e epochs) error {
	var plain []byte
	for _, ep := range e {
		plain = binary.BigEndian.AppendUint64(plain, ep.last)
		plain = append(plain, ep.key...)
	}
	defer clear(plain)
	g, err := keysCipher(current)
	if err != nil {
		return err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	return tx.PutAuditMeta(keyring.AuditKeys, g.Seal(nonce, nonce, plain, []byte(labelKeys)))
}

// Rekey closes the epoch of oldKey: it appends ev as the last record signed
// with oldKey, adds oldKey to the history now kept under newKey, and moves
// the pruning anchor to newKey (after checking it under oldKey). Records
// appended after it are signed with newKey.
func Rekey(tx *keyring.Tx, oldKey, newKey []byte, ev Event) error {
	hist, err := loadEpochs(tx, oldKey)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBroken, err)
	}
	if raw := tx.AuditMeta(keyring.AuditAnchor); raw != nil {
		if len(raw) != anchorSize {
			return fmt.Errorf("%w: anchor is %d bytes", ErrBroken, len(raw))
		}
		var mac [macSize]byte
		seq := binary.BigEndian.Uint64(raw)
		copy(mac[:], raw[8:])
		if want := headMAC(oldKey, labelAnchor, seq, mac); !hmac.Equal(want[:], raw[8+macSize:]) {
			return fmt.Errorf("%w: the pruning anchor does not verify; not carrying it into the new key", ErrBroken)
		}
		nm := headMAC(newKey, labelAnchor, seq, mac)
		if err := tx.PutAuditMeta(keyring.AuditAnchor, append(raw[:8+macSize:8+macSize], nm[:]...)); err != nil {
			return err
		}
	}
	if err := Append(tx, oldKey, ev); err != nil {
		return err
	}
	h, err := readHead(tx)
	if err != nil {
		return err
	}
	hist = append(hist, epoch{last: h.seq, key: append([]byte(nil), oldKey...)})
	return storeEpochs(tx, newKey, hist)
}
