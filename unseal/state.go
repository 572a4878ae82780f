package unseal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// The state root (keyring.Root) is one HMAC, under a key derived from the
// DataKey, over hashes of everything someone who can write the file could
// swap or roll back piecewise: the header, the secret record, every slot and
// client record (through the manifest), the audit key history and where
// each audit stream stands, and a generation counter. See FORMAT.md.

const (
	labelRoot    = "sealbox/v2/root"
	labelRecords = "sealbox/v2/records"
)

// ErrRolledBack is wrapped when the file's generation is lower than one this
// process has already seen: the file was replaced by an older copy.
var ErrRolledBack = errclass.New(errclass.Integrity, "the keyring was rolled back to an older copy")

// RootMAC computes the state root's MAC under the root key rk.
func RootMAC(rk []byte, id [keyring.IDSize]byte, r *keyring.Root) [keyring.MACSize]byte {
	var out [keyring.MACSize]byte
	memlock.Do(func() {
		m := hmac.New(sha256.New, rk)
		m.Write([]byte(labelRoot))
		m.Write(id[:])
		m.Write(r.Body())
		m.Sum(out[:0])
	})
	return out
}

// ReadRoot returns the state root after checking its MAC under rk.
func ReadRoot(tx *keyring.Tx, rk []byte, id [keyring.IDSize]byte) (*keyring.Root, error) {
	r, err := tx.Root()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIntegrity, err)
	}
	want := RootMAC(rk, id, r)
	if !hmac.Equal(want[:], r.MAC[:]) {
		return nil, fmt.Errorf("%w: the state root's MAC does not verify (it was changed or replaced outside sealbox)", ErrIntegrity)
	}
	return r, nil
}

// PutRoot signs r under rk and stores it.
func PutRoot(tx *keyring.Tx, rk []byte, id [keyring.IDSize]byte, r *keyring.Root) error {
	r.MAC = RootMAC(rk, id, r)
	return tx.PutRoot(r)
}

// Watermark is the highest state-root generation a process has seen
// committed. A running daemon refuses any lower one: an older copy put in
// place of the file while it runs is detected, even though the file alone
// cannot tell. Only read-write transactions are checked (a read-only one may
// rightly see a snapshot older than a commit that happened meanwhile), and
// a generation is recorded only once it is committed.
type Watermark struct {
	mu  sync.Mutex
	gen uint64
}

// Check refuses the generation of the root tx reads if it is lower than the
// highest seen, and records it otherwise. Read-only transactions are not
// checked. A nil Watermark accepts everything.
func (w *Watermark) Check(tx *keyring.Tx, gen uint64) error {
	if w == nil || !tx.Writable() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen < w.gen {
		return fmt.Errorf("%w: its state root has generation %d, but generation %d was already seen", ErrRolledBack, gen, w.gen)
	}
	w.gen = gen
	return nil
}

// Wrote records, once tx commits, the generation of a root tx wrote.
func (w *Watermark) Wrote(tx *keyring.Tx, gen uint64) {
	if w == nil {
		return
	}
	tx.OnCommit(func() {
		w.mu.Lock()
		w.gen = max(w.gen, gen)
		w.mu.Unlock()
	})
}

// Seen returns the highest generation seen.
func (w *Watermark) Seen() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

func hashOf(b []byte) [keyring.HashSize]byte { return sha256.Sum256(b) }

// sameHash compares a computed hash with a stored one of any length.
func sameHash(h [keyring.HashSize]byte, stored []byte) bool {
	return len(stored) == keyring.HashSize && [keyring.HashSize]byte(stored) == h
}

// ManifestKey is the manifest key of a record: its kind ('S' or 'C') then
// its name.
func ManifestKey(kind byte, name string) []byte { return append([]byte{kind}, name...) }

// recordsDigest is SHA-256 over the manifest: the label, then for each
// entry in key order u16(len(key)) || key || hash.
func recordsDigest(tx *keyring.Tx) [keyring.HashSize]byte {
	h := sha256.New()
	h.Write([]byte(labelRecords))
	var l [2]byte
	tx.Manifest(func(k, v []byte) {
		binary.BigEndian.PutUint16(l[:], uint16(len(k)))
		h.Write(l[:])
		h.Write(k)
		h.Write(v)
	})
	var out [keyring.HashSize]byte
	h.Sum(out[:0])
	return out
}

func keysHash(tx *keyring.Tx) [keyring.HashSize]byte {
	if raw := tx.AuditMeta(keyring.AuditKeys); raw != nil {
		return hashOf(raw)
	}
	return [keyring.HashSize]byte{}
}

// Finding is one thing that does not verify.
type Finding struct {
	What    string `json:"what"` // root, manifest, header, secret, slot, client, audit-keys, audit
	Name    string `json:"name,omitempty"`
	Problem string `json:"problem"`
}

func (f Finding) String() string {
	if f.Name != "" {
		return fmt.Sprintf("%s %q: %s", f.What, f.Name, f.Problem)
	}
	return fmt.Sprintf("%s: %s", f.What, f.Problem)
}

// Report is what VerifyState found. When the root or the manifest fails,
// no individual record can be vouched for (Untrusted); otherwise each
// record that does not match is named.
type Report struct {
	Root      *keyring.Root `json:"-"` // the verified root (nil if its MAC failed)
	Untrusted bool          `json:"untrusted"`
	Findings  []Finding     `json:"findings,omitempty"`
}

// OK reports whether everything verified.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

// Err returns nil when r.OK(), else an error wrapping ErrIntegrity that names
// what failed.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	parts := make([]string, len(r.Findings))
	for i, f := range r.Findings {
		parts[i] = f.String()
	}
	return fmt.Errorf("%w: %s", ErrIntegrity, strings.Join(parts, "; "))
}

func (r *Report) add(what, name, problem string) {
	r.Findings = append(r.Findings, Finding{What: what, Name: name, Problem: problem})
}

// Bad reports whether the record of kind ('S' or 'C') and name may not be
// honoured.
func (r *Report) Bad(kind byte, name string) bool {
	if r.Untrusted {
		return true
	}
	what := map[byte]string{keyring.RecordSlot: "slot", keyring.RecordClient: "client"}[kind]
	for _, f := range r.Findings {
		if f.What == what && f.Name == name {
			return true
		}
	}
	return false
}

// Has reports whether a finding of kind what was made.
func (r *Report) Has(what string) bool {
	for _, f := range r.Findings {
		if f.What == what {
			return true
		}
	}
	return false
}

// VerifyState checks the whole file against the state root under this key:
// the root's MAC, the generation against w, the header, the secret record,
// the audit key history, the audit streams' keyed heads and anchors, the
// manifest, and every slot and client record against its manifest entry.
// It costs one pass over the records. The error is for failures to read;
// what does not verify is in the report.
func (k *Key) VerifyState(tx *keyring.Tx, w *Watermark) (*Report, error) {
	rep := &Report{}
	root, err := ReadRoot(tx, k.RootKey(), k.id)
	if err != nil {
		rep.Untrusted = true
		rep.add("root", "", strings.TrimPrefix(err.Error(), ErrIntegrity.Error()+": "))
		return rep, nil
	}
	if err := w.Check(tx, root.Generation); err != nil {
		rep.Untrusted = true
		rep.add("root", "", err.Error())
		return rep, nil
	}
	rep.Root = root
	if hashOf(tx.RawHeader()) != root.Header {
		rep.add("header", "", "changed outside sealbox (its KDF policy, ID or commitment differ from the signed state)")
	}
	if hashOf(tx.RawSecret()) != root.Secret {
		rep.add("secret", "", "changed outside sealbox (replaced, or rolled back to an older version)")
	}
	if keysHash(tx) != root.Keys {
		rep.add("audit-keys", "", "the audit key history was changed outside sealbox")
	}
	for _, st := range []keyring.Stream{keyring.Events, keyring.Reads} {
		if p := CheckAuditState(tx, st, auditState(root, st)); p != "" {
			rep.add("audit", st.String(), p)
		}
	}
	if recordsDigest(tx) != root.Records {
		rep.Untrusted = true
		rep.add("manifest", "", "the list of signed records was changed outside sealbox (a record added, removed or rolled back)")
		return rep, nil
	}
	seen := map[string]bool{}
	tx.RawRecords(func(kind byte, name, raw []byte) {
		key := ManifestKey(kind, string(name))
		seen[string(key)] = true
		what := map[byte]string{keyring.RecordSlot: "slot", keyring.RecordClient: "client"}[kind]
		want := tx.ManifestEntry(key)
		switch {
		case want == nil:
			rep.add(what, string(name), "added outside sealbox (not in the signed state)")
		case !sameHash(hashOf(raw), want):
			rep.add(what, string(name), "changed outside sealbox (edited, or rolled back to an older version)")
		}
	})
	tx.Manifest(func(key, _ []byte) {
		if !seen[string(key)] && len(key) > 0 {
			what := map[byte]string{keyring.RecordSlot: "slot", keyring.RecordClient: "client"}[key[0]]
			if what == "" {
				what = "manifest"
			}
			rep.add(what, string(key[1:]), "deleted outside sealbox (signed, but no longer in the file)")
		}
	})
	return rep, nil
}

func auditState(r *keyring.Root, s keyring.Stream) keyring.AuditState {
	if s == keyring.Reads {
		return r.Reads
	}
	return r.Events
}

// CheckAuditState checks, in O(log n), that stream s still holds the keyed
// record the root names with the MAC it names, that no keyed record follows
// it (the root would be older than the log), and that the stream starts
// right after the anchor. It returns what is wrong, or "". The whole chain
// is audit.Verify's job. Every keyed append must pass it first: a keyed
// record appended after a truncation would otherwise move the root past the
// gap and vouch for it.
func CheckAuditState(tx *keyring.Tx, s keyring.Stream, st keyring.AuditState) string {
	first, last := tx.AuditBounds(s)
	if last > st.KeyedSeq {
		if raw := tx.AuditRecord(s, last); len(raw) > auditKeyedFlag && raw[auditKeyedFlag] == 1 {
			return fmt.Sprintf("keyed record %d follows record %d, the last the state root signed: the root is older than the log (rolled back)", last, st.KeyedSeq)
		}
	}
	if st.KeyedSeq != 0 {
		raw := tx.AuditRecord(s, st.KeyedSeq)
		if raw == nil {
			return fmt.Sprintf("record %d, the last keyed one the state root signed, is missing (the log was truncated)", st.KeyedSeq)
		}
		if mac, ok := auditRecordMAC(raw); !ok || mac != st.KeyedMAC {
			return fmt.Sprintf("record %d is not the one the state root signed (rewritten)", st.KeyedSeq)
		}
	}
	if last != 0 && first != st.AnchorSeq+1 {
		return fmt.Sprintf("the log starts at record %d, but the state root says it was pruned through %d", first, st.AnchorSeq)
	}
	if last == 0 && st.KeyedSeq > st.AnchorSeq {
		return "the log is empty, but the state root signed records in it"
	}
	return ""
}

// auditKeyedFlag is the offset of a stored audit record's keyed flag.
const auditKeyedFlag = 1 + 8 + keyring.MACSize

// auditRecordMAC returns a stored audit record's own MAC (the layout is the
// audit package's: version, seq, prev, keyed flag, mac, body).
func auditRecordMAC(raw []byte) ([keyring.MACSize]byte, bool) {
	const off = 1 + 8 + keyring.MACSize + 1
	var mac [keyring.MACSize]byte
	if len(raw) < off+keyring.MACSize {
		return mac, false
	}
	copy(mac[:], raw[off:])
	return mac, true
}

// Sign re-signs the state after a change made with this key: it rewrites
// the manifest from the records as they stand, and stores a root with the
// next generation over the current header, secret, records and audit key
// history, and the audit streams as audit says they stand (events and reads;
// nil keeps the root's). prev is the root the change started from (nil for a
// new keyring or an upgrade). Call it last in the change's transaction.
func (k *Key) Sign(tx *keyring.Tx, prev *keyring.Root, events, reads *keyring.AuditState, w *Watermark) (*keyring.Root, error) {
	if err := rebuildManifest(tx); err != nil {
		return nil, err
	}
	r := &keyring.Root{}
	if prev != nil {
		*r = *prev
	}
	if r.Generation == math.MaxUint64 {
		return nil, fmt.Errorf("%w: the generation counter is at its end", ErrIntegrity)
	}
	r.Generation++
	r.Header = hashOf(tx.RawHeader())
	r.Secret = hashOf(tx.RawSecret())
	r.Keys = keysHash(tx)
	r.Records = recordsDigest(tx)
	if events != nil {
		r.Events = *events
	}
	if reads != nil {
		r.Reads = *reads
	}
	if err := PutRoot(tx, k.RootKey(), k.id, r); err != nil {
		return nil, err
	}
	w.Wrote(tx, r.Generation)
	return r, nil
}

// rebuildManifest makes the manifest list every record with its current
// hash, writing only the entries that changed.
func rebuildManifest(tx *keyring.Tx) error {
	want := map[string][keyring.HashSize]byte{}
	tx.RawRecords(func(kind byte, name, raw []byte) {
		want[string(ManifestKey(kind, string(name)))] = hashOf(raw)
	})
	var stale [][]byte
	tx.Manifest(func(key, v []byte) {
		if _, ok := want[string(key)]; !ok {
			stale = append(stale, append([]byte(nil), key...))
		}
	})
	for _, key := range stale {
		if err := tx.PutManifest(key, nil); err != nil {
			return err
		}
	}
	for key, h := range want {
		if sameHash(h, tx.ManifestEntry([]byte(key))) {
			continue
		}
		if err := tx.PutManifest([]byte(key), h[:]); err != nil {
			return err
		}
	}
	return nil
}
