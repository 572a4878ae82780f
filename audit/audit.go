// Package audit keeps sealbox's append-only audit log in the keyring file:
// two chains of records (keyring.Events for unseals, seals and changes;
// keyring.Reads for client reads and refusals), each record carrying a MAC
// over its predecessor's, so that a deleted, reordered or edited record is
// found by Verify. The two streams have separate retention, so no volume of
// reads can push an admin record out.
//
// Records are keyed when an audit key is at hand: an HMAC under a key derived
// from the DataKey (unseal.Key.LogKeys), which someone who can write the
// file but is not an admin does not have. Before the daemon's first unseal no
// key exists, so records are chained with plain SHA-256 ("unkeyed"). The next
// keyed record anchors them: its MAC covers its predecessor's hash, which
// covers the one before. Verify reports a tail of unkeyed records that no
// keyed record follows yet, since it is chained but not authenticated.
//
// Where each stream stands (its last keyed record, and its pruning anchor)
// is part of the keyring's state root, which the caller re-signs after a
// keyed append: truncating a stream, deleting a prefix, or passing keyed
// records off as unkeyed is detected. Kinds of record that are only ever
// written keyed (see Kinds) must verify as keyed.
//
// Use Append inside a keyring transaction (admin changes write their record
// in the change's own transaction, so a change without its record cannot
// commit), Verify to check the chains, List to read them back, Prune to cap
// them.
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
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// Record format, version 1 (the same in both keyring formats).
const (
	recVersion = 1
	macSize    = 32
	hdrSize    = 1 + 8 + macSize + 1 + macSize // version, seq, prev, keyed, mac
	// MaxBody bounds a record's JSON body.
	MaxBody = 4096

	labelKeyed        = "sealbox/v1/audit"
	labelUnkeyed      = "sealbox/v1/audit-unkeyed"
	labelReadsKeyed   = "sealbox/v2/reads"
	labelReadsUnkeyed = "sealbox/v2/reads-unkeyed"
	labelHead         = "sealbox/v1/audit-head"   // format 1 only
	labelAnchor       = "sealbox/v1/audit-anchor" // format 1 only
)

// ErrBroken is wrapped by Verify's error when a chain does not hold.
var ErrBroken = errclass.New(errclass.Integrity, "audit chain broken")

// Peer is the process at the other end of a socket, as the kernel reported.
type Peer struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	PID  int32  `json:"pid"`
	Unit string `json:"unit,omitempty"`
}

// Event is what happened. It never holds a password, code or secret.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    Kind      `json:"kind"`
	Actor   string    `json:"actor,omitempty"`
	Target  string    `json:"target,omitempty"`
	Client  string    `json:"client,omitempty"`
	Peer    *Peer     `json:"peer,omitempty"`
	Outcome Outcome   `json:"outcome"`
	Detail  string    `json:"detail,omitempty"`
	// Count and First describe an aggregated record: Count events of this
	// kind, outcome and peer from First to Time.
	Count int64      `json:"count,omitempty"`
	First *time.Time `json:"first,omitempty"`
}

// Record is a stored event with its place in the chain.
type Record struct {
	Stream keyring.Stream `json:"-"`
	Seq    uint64         `json:"seq"`
	Keyed  bool           `json:"keyed"`
	Prev   [macSize]byte  `json:"-"`
	MAC    [macSize]byte  `json:"-"`
	Event  `json:"event"`
}

// chainer computes record MACs, reusing one HMAC state across a batch.
type chainer struct {
	keyed  hash.Hash // nil without a key
	plain  hash.Hash
	kl, ul string // the stream's keyed and unkeyed labels
	buf    [8 + macSize + 1]byte
	sum    [macSize]byte // the last mac's result
}

func newChainer(s keyring.Stream, key []byte) *chainer {
	c := &chainer{plain: sha256.New(), kl: labelKeyed, ul: labelUnkeyed}
	if s == keyring.Reads {
		c.kl, c.ul = labelReadsKeyed, labelReadsUnkeyed
	}
	if key != nil {
		c.keyed = hmac.New(sha256.New, key)
	}
	return c
}

func (c *chainer) mac(seq uint64, prev [macSize]byte, keyed bool, body []byte) [macSize]byte {
	h, label := c.plain, c.ul
	if keyed {
		h, label = c.keyed, c.kl
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
	h.Sum(c.sum[:0])
	return c.sum
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

// decodeHeader parses a stored record's fixed part.
func decodeHeader(raw []byte) (*Record, []byte, error) {
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
	return r, raw[hdrSize:], nil
}

// decode parses a stored record; the body is returned raw for MAC checks.
func decode(raw []byte) (*Record, []byte, error) {
	r, body, err := decodeHeader(raw)
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(body, &r.Event); err != nil {
		return nil, nil, fmt.Errorf("record body: %v", err)
	}
	return r, body, nil
}

// last returns the sequence number and MAC of stream s's last record (0 and
// zeros if it is empty; the anchor's if it was pruned empty).
func last(tx *keyring.Tx, s keyring.Stream, anchorSeq uint64, anchorMAC [macSize]byte) (uint64, [macSize]byte, error) {
	seq, raw := tx.AuditLast(s)
	if raw == nil {
		return anchorSeq, anchorMAC, nil
	}
	r, _, err := decodeHeader(raw)
	if err != nil {
		return 0, [macSize]byte{}, fmt.Errorf("%w: the last record (%d): %v", ErrBroken, seq, err)
	}
	if r.Seq != seq {
		return 0, [macSize]byte{}, fmt.Errorf("%w: the record stored under %d says it is %d", ErrBroken, seq, r.Seq)
	}
	return seq, r.MAC, nil
}

// Truncated ends a detail that was cut to fit a record.
const Truncated = " …(cut to fit the record)"

// cutDetail shortens d so that its encoding (an escaped byte takes up to
// 6) is about over bytes shorter, on a UTF-8 boundary, and marks it
// Truncated. Append calls it again while the record is still too long.
func cutDetail(d string, over int) string {
	d = strings.TrimSuffix(d, Truncated)
	enc := len(appendString(nil, d))
	// Cut in proportion to how much each byte costs encoded, and by the
	// marker's own cost.
	cut := (over+len(appendString(nil, Truncated)))*len(d)/enc + 1
	keep := len(d) - cut
	if keep <= 0 {
		return "" // the rest of the event alone does not fit: Append says so
	}
	for keep > 0 && !utf8.RuneStart(d[keep]) {
		keep--
	}
	return d[:keep] + Truncated
}

// Head is a stream's last keyed record, as the state root covers it.
type Head struct {
	Seq uint64
	MAC [macSize]byte
}

// Append adds events to stream s in tx, keyed under key when it is not nil.
// anchor is the stream's pruning anchor from the state root (nil if none,
// or in a format-1 file). For a keyed append it returns the new last keyed
// record, which the caller puts into the state root it re-signs; an unkeyed
// append returns nil and leaves the root alone.
func Append(tx *keyring.Tx, key []byte, s keyring.Stream, anchor *keyring.AuditState, events ...Event) (*Head, error) {
	var aSeq uint64
	var aMAC [macSize]byte
	if anchor != nil {
		aSeq, aMAC = anchor.AnchorSeq, anchor.AnchorMAC
	}
	if tx.Format() == 1 {
		if key != nil || s != keyring.Events {
			return nil, errors.New("audit: a format-1 keyring takes only unkeyed events (it is upgraded at the first login)")
		}
		if h, err := readLegacyHead(tx); err == nil && h.seq != 0 {
			// Pruned format-1 logs may be empty past their anchor.
			if seq, _ := tx.AuditLast(s); seq == 0 {
				aSeq, aMAC = h.seq, h.mac
			}
		}
	}
	seq, prev, err := last(tx, s, aSeq, aMAC)
	if err != nil {
		return nil, err
	}
	keyed := key != nil
	// The records, laid out in one buffer: header, then body. Bodies are
	// public; only the MACs need the key.
	recs := make([][]byte, len(events))
	ends := make([]int, len(events))
	var hdr [hdrSize]byte
	var buf []byte
	for i, ev := range events {
		if ev.Time.IsZero() {
			ev.Time = time.Now()
		}
		ev.Time = ev.Time.UTC()
		buf = append(buf, hdr[:]...)
		start := len(buf)
		buf = appendEvent(buf, &ev)
		// A detail too long for a record (text from outside, such as a
		// server's error) is cut, and says so: one long event must never
		// cost the records batched with it.
		for n := len(buf) - start; n > MaxBody && ev.Detail != ""; n = len(buf) - start {
			ev.Detail = cutDetail(ev.Detail, n-MaxBody)
			buf = appendEvent(buf[:start], &ev)
		}
		if n := len(buf) - start; n > MaxBody {
			return nil, fmt.Errorf("audit: event body %d bytes exceeds %d", n, MaxBody)
		}
		ends[i] = len(buf)
	}
	for i, start := 0, 0; i < len(recs); i++ {
		recs[i] = buf[start:ends[i]:ends[i]]
		start = ends[i]
	}
	// Chain them: one memlock.Do for the whole batch, and nothing allocated
	// inside it but the HMAC state.
	first := seq + 1
	memlock.Do(func() {
		ch := newChainer(s, key)
		for _, rec := range recs {
			seq++
			rec[0] = recVersion
			binary.BigEndian.PutUint64(rec[1:], seq)
			copy(rec[9:], prev[:])
			if keyed {
				rec[1+8+macSize] = 1
			}
			ch.mac(seq, prev, keyed, rec[hdrSize:])
			copy(rec[hdrSize-macSize:hdrSize], ch.sum[:])
			prev = ch.sum
		}
		clear(ch.sum[:])
	})
	if err := tx.PutAuditBatch(s, first, recs); err != nil {
		return nil, err
	}
	if tx.Format() == 1 {
		return nil, writeLegacyHead(tx, seq, prev)
	}
	if !keyed || len(events) == 0 {
		return nil, nil
	}
	return &Head{Seq: seq, MAC: prev}, nil
}

// StreamReport is what Verify found in one stream.
type StreamReport struct {
	Records    int    `json:"records"`
	First      uint64 `json:"first_seq"`
	Last       uint64 `json:"last_seq"`
	Keyed      int    `json:"keyed"`
	Unanchored int    `json:"unanchored_tail"` // unkeyed records after the last keyed one
	Pruned     uint64 `json:"pruned_through,omitempty"`
}

// Report is what Verify found.
type Report struct {
	Events    StreamReport `json:"events"`
	Reads     StreamReport `json:"reads"`
	BadStream string       `json:"bad_stream,omitempty"`
	BadSeq    uint64       `json:"first_bad_seq,omitempty"`
	Problem   string       `json:"problem,omitempty"`
}

// OK reports whether the chains verified.
func (r *Report) OK() bool { return r.Problem == "" }

func (r *Report) fail(s keyring.Stream, seq uint64, format string, a ...any) (*Report, error) {
	r.BadStream, r.BadSeq = s.String(), seq
	r.Problem = fmt.Sprintf(format, a...)
	return r, fmt.Errorf("%w in the %s log at record %d: %s", ErrBroken, s, seq, r.Problem)
}

// Verify walks both streams with the audit key and the verified state root
// (from unseal.ReadRoot), and names the first record that does not hold. A
// nil key is refused: keyed records cannot be checked without it.
func Verify(tx *keyring.Tx, key []byte, root *keyring.Root) (*Report, error) {
	if key == nil {
		return nil, errors.New("audit: verifying needs the audit key (an admin's password)")
	}
	r := &Report{}
	epochs, err := loadEpochs(tx, key)
	if err != nil {
		return r.fail(keyring.Events, 0, "%v", err)
	}
	if _, err := verifyStream(tx, keyring.Events, key, epochs, root.Events, &r.Events, r); err != nil {
		return r, err
	}
	if _, err := verifyStream(tx, keyring.Reads, key, epochs, root.Reads, &r.Reads, r); err != nil {
		return r, err
	}
	return r, nil
}

func verifyStream(tx *keyring.Tx, s keyring.Stream, key []byte, epochs epochs, st keyring.AuditState, sr *StreamReport, r *Report) (*Report, error) {
	chainers := map[int]*chainer{}
	chainerFor := func(seq uint64) *chainer {
		i, k := epochs.keyFor(s, seq, key)
		if c, ok := chainers[i]; ok {
			return c
		}
		c := newChainer(s, k)
		chainers[i] = c
		return c
	}
	prev, next := st.AnchorMAC, st.AnchorSeq+1
	sr.Pruned = st.AnchorSeq
	var ferr error
	var lastKeyed uint64
	var lastKeyedMAC [macSize]byte
	tx.AuditRecords(s, 0, func(seq uint64, raw []byte) bool {
		if seq != next {
			if seq < next {
				_, ferr = r.fail(s, seq, "record %d is older than the pruning anchor (%d)", seq, st.AnchorSeq)
			} else {
				_, ferr = r.fail(s, next, "record %d is missing (deleted)", next)
			}
			return false
		}
		rec, body, err := decode(raw)
		if err != nil {
			_, ferr = r.fail(s, seq, "%v", err)
			return false
		}
		if rec.Seq != seq {
			_, ferr = r.fail(s, seq, "record stored under %d says it is %d (moved)", seq, rec.Seq)
			return false
		}
		if rec.Prev != prev {
			_, ferr = r.fail(s, seq, "does not follow record %d (deleted, reordered or edited)", seq-1)
			return false
		}
		mac := chainerFor(seq).mac(seq, prev, rec.Keyed, body)
		if !hmac.Equal(mac[:], rec.MAC[:]) {
			_, ferr = r.fail(s, seq, "its MAC does not match its contents (edited)")
			return false
		}
		// The body must be exactly the canonical encoding of a known kind
		// and outcome: no duplicate, case-variant or unknown field, no
		// look-alike value that a reader could take for another.
		if !rec.Kind.Known() || !rec.Outcome.Known() {
			_, ferr = r.fail(s, seq, "unknown kind %q or outcome %q", rec.Kind, rec.Outcome)
			return false
		}
		if !bytes.Equal(appendEvent(nil, &rec.Event), body) {
			_, ferr = r.fail(s, seq, "its body is not in the canonical encoding (duplicate, unknown or reformatted fields)")
			return false
		}
		if !rec.Keyed && rec.Kind.keyedOnly(rec.Outcome) {
			_, ferr = r.fail(s, seq, "a %s %s record, which is only ever written keyed, is unkeyed (forged or rewritten)", rec.Kind, rec.Outcome)
			return false
		}
		if sr.Records == 0 {
			sr.First = seq
		}
		sr.Records++
		sr.Last = seq
		if rec.Keyed {
			sr.Keyed++
			sr.Unanchored = 0
			lastKeyed, lastKeyedMAC = seq, mac
		} else {
			sr.Unanchored++
		}
		prev = mac
		next = seq + 1
		return true
	})
	if ferr != nil {
		return r, ferr
	}
	switch {
	case st.KeyedSeq > sr.Last && st.KeyedSeq > st.AnchorSeq:
		return r.fail(s, sr.Last+1, "the log ends at %d, but the state root signed record %d (records removed from the end)", sr.Last, st.KeyedSeq)
	case lastKeyed != st.KeyedSeq && !(lastKeyed == 0 && st.KeyedSeq <= st.AnchorSeq):
		return r.fail(s, max(lastKeyed, st.KeyedSeq), "the last keyed record is %d, but the state root signed %d (truncated, or keyed records rewritten)", lastKeyed, st.KeyedSeq)
	case lastKeyed != 0 && lastKeyedMAC != st.KeyedMAC:
		return r.fail(s, lastKeyed, "record %d is not the one the state root signed (rewritten)", lastKeyed)
	}
	return r, nil
}

// Filter selects records for List.
type Filter struct {
	Since  time.Time
	Until  time.Time // records before Until; zero means no end
	Client string
	Admin  string  // matches Actor or Target
	UID    *uint32 // the peer's uid; nil means any
	Limit  int     // the newest Limit records; 0 means all
	Reads  bool    // the reads stream instead of events
	After  uint64  // only records after this sequence number
}

// Match reports whether rec passes f's conditions (all but Limit).
func (f Filter) Match(rec *Record) bool {
	switch {
	case rec.Seq <= f.After && f.After > 0:
	case !f.Since.IsZero() && rec.Time.Before(f.Since):
	case !f.Until.IsZero() && !rec.Time.Before(f.Until):
	case f.Client != "" && rec.Client != f.Client:
	case f.Admin != "" && rec.Actor != f.Admin && rec.Target != f.Admin:
	case f.UID != nil && (rec.Peer == nil || rec.Peer.UID != *f.UID):
	default:
		return true
	}
	return false
}

// List returns the records of one stream that match f, oldest first. It
// decodes what it can; a record that does not decode is skipped here and
// named by Verify.
func List(tx *keyring.Tx, f Filter) []Record {
	s := keyring.Events
	if f.Reads {
		s = keyring.Reads
	}
	var out []Record
	from := uint64(0)
	if f.After > 0 {
		from = f.After + 1
	}
	tx.AuditRecords(s, from, func(seq uint64, raw []byte) bool {
		rec, _, err := decode(raw)
		if err != nil {
			return true
		}
		rec.Stream = s
		if f.Match(rec) {
			out = append(out, *rec)
		}
		return true
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}

// Count returns how many records stream s holds, in O(log n).
func Count(tx *keyring.Tx, s keyring.Stream) int {
	first, last := tx.AuditBounds(s)
	if last == 0 {
		return 0
	}
	return int(last - first + 1)
}

// Prune deletes the oldest records of stream s so that at most keep remain
// (it costs O(records deleted)), and appends a keyed audit.prune record to
// the events stream saying so. It updates st (the stream's state as the
// caller's state root has it) with the new anchor, and events with the new
// last keyed event; the caller re-signs the root. It returns how many it
// deleted.
func Prune(tx *keyring.Tx, key []byte, s keyring.Stream, keep int, root *keyring.Root) (int, error) {
	if key == nil {
		return 0, errors.New("audit: pruning needs the audit key")
	}
	first, lastSeq := tx.AuditBounds(s)
	n := Count(tx, s)
	if n <= keep || lastSeq == 0 {
		return 0, nil
	}
	cut := first + uint64(n-keep) - 1 // the last record removed
	raw := tx.AuditRecord(s, cut)
	rec, _, err := decodeHeader(raw)
	if err != nil {
		return 0, fmt.Errorf("%w at record %d: cannot prune across an undecodable record: %v", ErrBroken, cut, err)
	}
	if err := tx.DeleteAuditBefore(s, cut+1); err != nil {
		return 0, err
	}
	st := &root.Events
	if s == keyring.Reads {
		st = &root.Reads
	}
	st.AnchorSeq, st.AnchorMAC = cut, rec.MAC
	if st.KeyedSeq <= cut {
		// The last keyed record went too; the anchor vouches for it.
		st.KeyedSeq, st.KeyedMAC = 0, [macSize]byte{}
	}
	h, err := Append(tx, key, keyring.Events, &root.Events, Event{Kind: KindAuditPrune, Outcome: OK, Target: s.String(), Detail: fmt.Sprintf("removed %d %s records through %d", n-keep, s, cut)})
	if err != nil {
		return 0, err
	}
	root.Events.KeyedSeq, root.Events.KeyedMAC = h.Seq, h.MAC
	return n - keep, nil
}

// String renders a record on one line for people.
func (r *Record) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%6d %s %-15s %-8s", r.Seq, r.Time.Format(time.RFC3339), r.Kind, r.Outcome)
	for _, kv := range [][2]string{{"actor", r.Actor}, {"target", r.Target}, {"client", r.Client}, {"detail", r.Detail}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], printable(kv[1]))
		}
	}
	if r.Peer != nil {
		fmt.Fprintf(&b, " uid=%d gid=%d pid=%d", r.Peer.UID, r.Peer.GID, r.Peer.PID)
		if r.Peer.Unit != "" {
			fmt.Fprintf(&b, " unit=%s", printable(r.Peer.Unit))
		}
	}
	if r.Count > 1 {
		fmt.Fprintf(&b, " count=%d", r.Count)
		if r.First != nil {
			fmt.Fprintf(&b, " first=%s", r.First.Format(time.RFC3339))
		}
	}
	if !r.Keyed {
		b.WriteString(" (unkeyed)")
	}
	return b.String()
}

// printable returns v as it is, or quoted (strconv.Quote) when it holds a
// newline, a terminal escape or anything else not printable: a record's
// text is one line, and a name in it may be a caller's choice (an unknown
// admin name in a failed unseal) or a file writer's, which must not forge
// a line or drive the terminal of the admin who reads the log.
func printable(v string) string {
	for _, c := range v {
		if c == utf8.RuneError || !unicode.IsPrint(c) {
			return strconv.Quote(v)
		}
	}
	return v
}

// Key epochs. The audit key derives from the DataKey, so a rekey changes it.
// The rekey's own record is the last event under the old key. The old keys
// are kept, each with the last sequence number it signed in each stream, in
// the meta record "audit-keys", encrypted under a key derived from the
// current audit key: whoever holds the current key (sealboxd, or an admin)
// can verify the whole chain. Someone who only knows an old key, such as a
// removed admin with an old copy of the file, learns nothing of the later
// ones.

const labelKeys = "sealbox/v1/audit-keys"

type epoch struct {
	last [2]uint64 // by stream
	key  []byte
}

type epochs []epoch

// keyFor returns the key that signed record seq of stream s, and its index
// (len(e) for the current key).
func (e epochs) keyFor(s keyring.Stream, seq uint64, current []byte) (int, []byte) {
	for i, ep := range e {
		if seq <= ep.last[s] {
			return i, ep.key
		}
	}
	return len(e), current
}

func keysCipher(key []byte) (cipher.AEAD, error) {
	var g cipher.AEAD
	var err error
	memlock.Do(func() {
		var k []byte
		if k, err = hkdf.Key(sha256.New, key, nil, labelKeys, 32); err != nil {
			return
		}
		defer clear(k)
		var block cipher.Block
		if block, err = aes.NewCipher(k); err != nil {
			return
		}
		g, err = cipher.NewGCM(block)
	})
	return g, err
}

// entrySize is a history entry: format 2 has one last sequence number per
// stream, format 1 one for its single stream.
func entrySize(format uint32) int {
	if format == 1 {
		return 8 + 32
	}
	return 8 + 8 + 32
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
	defer clear(plain)
	size := entrySize(tx.Format())
	if len(plain)%size != 0 {
		return nil, fmt.Errorf("the audit key history is %d bytes of entries", len(plain))
	}
	var out epochs
	for b := plain; len(b) > 0; b = b[size:] {
		ep := epoch{key: append([]byte(nil), b[size-32:size]...)}
		ep.last[keyring.Events] = binary.BigEndian.Uint64(b)
		if size == 48 {
			ep.last[keyring.Reads] = binary.BigEndian.Uint64(b[8:])
		}
		out = append(out, ep)
	}
	return out, nil
}

func storeEpochs(tx *keyring.Tx, current []byte, e epochs) error {
	var plain []byte
	for _, ep := range e {
		plain = binary.BigEndian.AppendUint64(plain, ep.last[keyring.Events])
		plain = binary.BigEndian.AppendUint64(plain, ep.last[keyring.Reads])
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

// Rekey closes the epoch of oldKey: it appends ev to the events stream as
// the last record signed with oldKey, and adds oldKey, with the last
// sequence number it signed in each stream, to the history now kept under
// newKey. It returns the new last keyed event for the state root, which the
// caller re-signs under the new root key in the same transaction. Records
// appended after it are signed with newKey.
func Rekey(tx *keyring.Tx, oldKey, newKey []byte, root *keyring.Root, ev Event) (*Head, error) {
	hist, err := loadEpochs(tx, oldKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBroken, err)
	}
	h, err := Append(tx, oldKey, keyring.Events, &root.Events, ev)
	if err != nil {
		return nil, err
	}
	ep := epoch{key: append([]byte(nil), oldKey...)}
	ep.last[keyring.Events] = h.Seq
	ep.last[keyring.Reads], _, err = last(tx, keyring.Reads, root.Reads.AnchorSeq, root.Reads.AnchorMAC)
	if err != nil {
		return nil, err
	}
	return h, storeEpochs(tx, newKey, append(hist, ep))
}
