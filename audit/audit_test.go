package audit

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sealbox/sealbox/keyring"
)

var key = []byte("0123456789abcdef0123456789abcdef")

// fixture is a format-2 keyring and the state root its owner keeps: the
// audit package vouches for the log only together with the root, which the
// caller signs (unseal.Sign); here the test keeps it in memory.
type fixture struct {
	kr   *keyring.Keyring
	root keyring.Root
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	kr, err := keyring.Create(filepath.Join(t.TempDir(), "k.db"), func(tx *keyring.Tx) error {
		if err := tx.PutHeader(&keyring.Header{Policy: keyring.Params{Time: 3, MemoryKiB: 65536, Threads: 4}}); err != nil {
			return err
		}
		return tx.PutSecret(&keyring.Secret{Version: 1, Ciphertext: make([]byte, 40)})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	return &fixture{kr: kr}
}

func (f *fixture) state(s keyring.Stream) *keyring.AuditState {
	if s == keyring.Reads {
		return &f.root.Reads
	}
	return &f.root.Events
}

// add appends n events of kind to stream s, keyed under k (nil: unkeyed),
// and moves the root the way a caller does after a keyed append.
func (f *fixture) add(t *testing.T, s keyring.Stream, k []byte, n int, kind Kind, outcome Outcome) {
	t.Helper()
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = Event{Kind: kind, Client: fmt.Sprintf("svc%d", i%3), Outcome: outcome, Peer: &Peer{UID: uint32(i)}}
	}
	if err := f.append(s, k, evs...); err != nil {
		t.Fatal(err)
	}
}

// append writes evs to stream s in one transaction, keyed under k (nil:
// unkeyed), and moves the root the way a caller does after a keyed append.
func (f *fixture) append(s keyring.Stream, k []byte, evs ...Event) error {
	return f.kr.Update(func(tx *keyring.Tx) error {
		h, err := Append(tx, k, s, f.state(s), evs...)
		if h != nil {
			f.state(s).KeyedSeq, f.state(s).KeyedMAC = h.Seq, h.MAC
		}
		return err
	})
}

// list returns every record of the events stream.
func (f *fixture) list() []Record {
	var recs []Record
	f.kr.View(func(tx *keyring.Tx) error { recs = List(tx, Filter{}); return nil })
	return recs
}

func (f *fixture) reads(t *testing.T, k []byte, n int) {
	f.add(t, keyring.Reads, k, n, KindRead, Served)
}

func (f *fixture) verify(k []byte) (*Report, error) {
	var rep *Report
	var verr error
	f.kr.View(func(tx *keyring.Tx) error { rep, verr = Verify(tx, k, &f.root); return nil })
	return rep, verr
}

// mutate rewrites stored records of stream s directly, as someone with
// write access to the file could.
func (f *fixture) mutate(t *testing.T, s keyring.Stream, fn func(tx *keyring.Tx, recs map[uint64][]byte) error) {
	t.Helper()
	err := f.kr.Update(func(tx *keyring.Tx) error {
		recs := map[uint64][]byte{}
		tx.AuditRecords(s, 0, func(seq uint64, raw []byte) bool { recs[seq] = append([]byte(nil), raw...); return true })
		return fn(tx, recs)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) expectBroken(t *testing.T, stream string, seq uint64, contains string) {
	t.Helper()
	rep, err := f.verify(key)
	if !errors.Is(err, ErrBroken) {
		t.Fatalf("verify: %v, want ErrBroken", err)
	}
	if rep.BadStream != stream || rep.BadSeq != seq || !strings.Contains(rep.Problem, contains) {
		t.Fatalf("first bad record %s/%d %q, want %s/%d containing %q", rep.BadStream, rep.BadSeq, rep.Problem, stream, seq, contains)
	}
}

func chainMAC(s keyring.Stream, k []byte, seq uint64, prev [macSize]byte, keyed bool, body []byte) [macSize]byte {
	return newChainer(s, k).mac(seq, prev, keyed, body)
}

func TestChainVerifies(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.reads(t, key, 10)
	f.add(t, keyring.Events, key, 2, KindAdminAdd, OK)
	rep, err := f.verify(key)
	if err != nil || rep.Reads.Records != 10 || rep.Reads.Keyed != 10 || rep.Reads.Unanchored != 0 || rep.Reads.First != 1 || rep.Reads.Last != 10 || rep.Events.Records != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
	if _, err := f.verify([]byte("another key, thirty-two bytes...")); !errors.Is(err, ErrBroken) {
		t.Errorf("wrong key verified: %v", err)
	}
	if _, err := f.verify(nil); err == nil {
		t.Error("nil key accepted")
	}
}

func TestStreamsAreSeparateChains(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.reads(t, key, 3)
	f.add(t, keyring.Events, key, 1, KindAdminAdd, OK)
	// A read record moved into the events log is not part of that chain.
	f.mutate(t, keyring.Reads, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		return tx.PutAudit(keyring.Events, 2, recs[2])
	})
	f.expectBroken(t, "events", 2, "does not follow")
}

func TestDeletionDetected(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.reads(t, key, 5)
	f.mutate(t, keyring.Reads, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		tx.DeleteAuditBefore(keyring.Reads, 100)
		for seq, raw := range recs {
			if seq != 3 {
				tx.PutAudit(keyring.Reads, seq, raw)
			}
		}
		return nil
	})
	f.expectBroken(t, "reads", 3, "missing")
}

func TestEditDetected(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.reads(t, key, 5)
	f.mutate(t, keyring.Reads, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		raw := recs[2]
		i := strings.Index(string(raw), `"served"`)
		copy(raw[i:], `"sealed"`)
		return tx.PutAudit(keyring.Reads, 2, raw)
	})
	f.expectBroken(t, "reads", 2, "edited")
}

func TestReorderDetected(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.reads(t, key, 5)
	f.mutate(t, keyring.Reads, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		tx.PutAudit(keyring.Reads, 2, recs[3])
		return tx.PutAudit(keyring.Reads, 3, recs[2])
	})
	f.expectBroken(t, "reads", 2, "moved")
}

func TestTruncationToAnOlderStateDetected(t *testing.T) {
	t.Parallel()
	// Delete the newest records: the root still names record 5.
	f2 := newFixture(t)
	f2.add(t, keyring.Events, key, 5, KindAdminAdd, OK)
	f2.mutate(t, keyring.Events, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		tx.DeleteAuditBefore(keyring.Events, 100)
		for seq := uint64(1); seq <= 3; seq++ {
			tx.PutAudit(keyring.Events, seq, recs[seq])
		}
		return nil
	})
	f2.expectBroken(t, "events", 4, "removed from the end")
}

func TestUnkeyedRecordsAnchoredByTheNextKeyedOne(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.reads(t, key, 2)
	f.reads(t, nil, 3) // a daemon before its first unseal
	rep, err := f.verify(key)
	if err != nil || rep.Reads.Unanchored != 3 || rep.Reads.Keyed != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
	f.reads(t, key, 1)
	rep, err = f.verify(key)
	if err != nil || rep.Reads.Unanchored != 0 || rep.Reads.Records != 6 {
		t.Fatalf("%+v %v", rep, err)
	}
	// An anchored unkeyed record cannot be edited, even with its hash redone.
	f.mutate(t, keyring.Reads, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		rec, body, _ := decode(recs[4])
		body = []byte(strings.Replace(string(body), "served", "sealed", 1))
		mac := chainMAC(keyring.Reads, nil, 4, rec.Prev, false, body)
		return tx.PutAudit(keyring.Reads, 4, encode(4, rec.Prev, false, mac, body))
	})
	f.expectBroken(t, "reads", 5, "does not follow")
}

func TestKeyedRecordsCannotBeDowngraded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.reads(t, key, 4)
	// Rewrite records 3 and 4 as unkeyed with recomputed hashes: what an
	// attacker could compute. The root still names keyed record 4.
	f.mutate(t, keyring.Reads, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		r2, _, _ := decode(recs[2])
		prev := r2.MAC
		for seq := uint64(3); seq <= 4; seq++ {
			_, body, _ := decode(recs[seq])
			body = []byte(strings.Replace(string(body), "served", "sealed", 1))
			mac := chainMAC(keyring.Reads, nil, seq, prev, false, body)
			tx.PutAudit(keyring.Reads, seq, encode(seq, prev, false, mac, body))
			prev = mac
		}
		return nil
	})
	f.expectBroken(t, "reads", 4, "state root signed")
}

func TestKeyedOnlyKindsMustBeKeyed(t *testing.T) {
	t.Parallel()
	// Every kind the table marks keyed, forged unkeyed with an OK outcome,
	// is refused; the same kind with another outcome is a normal unkeyed
	// record (failed attempts are written before any key is at hand).
	for k, props := range kinds {
		if !props.keyed {
			continue
		}
		f := newFixture(t)
		f.add(t, keyring.Events, nil, 1, k, WrongPassword)
		if _, err := f.verify(key); err != nil {
			t.Fatalf("%s %s unkeyed: %v", k, WrongPassword, err)
		}
		f.add(t, keyring.Events, nil, 1, k, OK)
		f.expectBroken(t, "events", 2, "only ever written keyed")
	}
	for _, k := range []Kind{KindSecretRotate, KindRecoveryRegenerate, KindRepair, KindUpgrade, KindCheck} {
		if !kinds[k].keyed {
			t.Errorf("%s is not in the keyed-only table", k)
		}
	}
}

func TestPruneKeepsTheChainVerifiable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.add(t, keyring.Events, key, 1, KindAdminAdd, OK)
	f.reads(t, key, 20)
	var dropped int
	err := f.kr.Update(func(tx *keyring.Tx) error {
		var err error
		dropped, err = Prune(tx, key, keyring.Reads, 5, &f.root)
		return err
	})
	if err != nil || dropped != 15 {
		t.Fatalf("prune: %d %v", dropped, err)
	}
	rep, err := f.verify(key)
	if err != nil || rep.Reads.Records != 5 || rep.Reads.Pruned != 15 || rep.Reads.First != 16 || rep.Reads.Last != 20 {
		t.Fatalf("after prune: %+v %v", rep, err)
	}
	// The prune is itself an event; no event was pushed out by reads.
	if rep.Events.Records != 2 || rep.Events.First != 1 {
		t.Fatalf("events after pruning reads: %+v", rep.Events)
	}
	// Removing one more record from the front is still detected.
	f.mutate(t, keyring.Reads, func(tx *keyring.Tx, _ map[uint64][]byte) error { return tx.DeleteAuditBefore(keyring.Reads, 17) })
	f.expectBroken(t, "reads", 16, "missing")
}

func TestListFilters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.reads(t, key, 6)
	f.kr.Update(func(tx *keyring.Tx) error {
		_, err := Append(tx, key, keyring.Events, nil, Event{Kind: KindAdminAdd, Actor: "alice", Target: "bob", Outcome: OK, Time: time.Now().Add(time.Hour)})
		return err
	})
	f.kr.View(func(tx *keyring.Tx) error {
		if n := len(List(tx, Filter{Reads: true})); n != 6 {
			t.Errorf("reads: %d", n)
		}
		if n := len(List(tx, Filter{})); n != 1 {
			t.Errorf("events: %d", n)
		}
		if n := len(List(tx, Filter{Reads: true, Client: "svc1"})); n != 2 {
			t.Errorf("client svc1: %d", n)
		}
		if l := List(tx, Filter{Admin: "bob"}); len(l) != 1 || l[0].Kind != KindAdminAdd {
			t.Errorf("admin bob: %+v", l)
		}
		if n := len(List(tx, Filter{Since: time.Now().Add(30 * time.Minute)})); n != 1 {
			t.Errorf("since: %d", n)
		}
		if l := List(tx, Filter{Reads: true, Limit: 2}); len(l) != 2 || l[1].Seq != 6 {
			t.Errorf("limit: %+v", l)
		}
		return nil
	})
}

func TestDecodeLengths(t *testing.T) {
	t.Parallel()
	var z [macSize]byte
	good := encode(1, z, true, z, []byte(`{"kind":"x","outcome":"y","time":"2026-01-01T00:00:00Z"}`))
	if _, _, err := decode(good); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"short":   good[:hdrSize],
		"huge":    append(append([]byte{}, good...), make([]byte, MaxBody)...),
		"version": append([]byte{9}, good[1:]...),
		"flag":    func() []byte { c := append([]byte{}, good...); c[1+8+macSize] = 7; return c }(),
		"json":    append(append([]byte{}, good[:hdrSize]...), []byte("{not json")...),
	} {
		if _, _, err := decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestChainVerifiesAcrossRekeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k2 := []byte("second audit key, 32 bytes long!")
	k3 := []byte("third audit key, also 32 bytes!!")
	f.reads(t, key, 3)
	f.add(t, keyring.Events, key, 1, KindAdminAdd, OK)
	rekey := func(old, new []byte) {
		t.Helper()
		err := f.kr.Update(func(tx *keyring.Tx) error {
			h, err := Rekey(tx, old, new, &f.root, Event{Kind: KindAdminRekey, Actor: "alice", Outcome: OK})
			if h != nil {
				f.root.Events.KeyedSeq, f.root.Events.KeyedMAC = h.Seq, h.MAC
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rekey(key, k2)
	f.reads(t, k2, 2)
	f.kr.Update(func(tx *keyring.Tx) error { _, err := Prune(tx, k2, keyring.Reads, 4, &f.root); return err })
	rekey(k2, k3)
	f.reads(t, k3, 2)
	rep, err := f.verify(k3)
	if err != nil || rep.Reads.Last != 7 || rep.Reads.Pruned != 1 || rep.Events.Last != 4 {
		t.Fatalf("across two rekeys and a prune: %+v %v", rep, err)
	}
	// An old key alone verifies nothing now, and cannot read the history.
	if _, err := f.verify(k2); err == nil {
		t.Error("the previous key verified the current chain")
	}
	// A read of the second epoch re-signed with the first key fails.
	f.mutate(t, keyring.Reads, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		rec, body, _ := decode(recs[5])
		mac := chainMAC(keyring.Reads, key, 5, rec.Prev, true, body)
		return tx.PutAudit(keyring.Reads, 5, encode(5, rec.Prev, true, mac, body))
	})
	if _, err := f.verify(k3); !errors.Is(err, ErrBroken) {
		t.Fatalf("a record signed with the wrong epoch's key: %v", err)
	}
}

func TestLookalikeRecordsRefused(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"outcome with a NUL": `{"time":"2026-01-01T00:00:00Z","kind":"admin.add","actor":"mallory","outcome":"ok\u0000"}`,
		"duplicate outcome":  `{"time":"2026-01-01T00:00:00Z","kind":"admin.add","actor":"mallory","outcome":"ok","OUTCOME":"refused"}`,
		"unknown field":      `{"time":"2026-01-01T00:00:00Z","kind":"seal","outcome":"ok","note":"x"}`,
		"reordered fields":   `{"kind":"seal","time":"2026-01-01T00:00:00Z","outcome":"ok"}`,
		"unknown kind":       `{"time":"2026-01-01T00:00:00Z","kind":"admin.addd","outcome":"ok"}`,
	} {
		f := newFixture(t)
		f.add(t, keyring.Events, key, 1, KindAdminAdd, OK)
		f.mutate(t, keyring.Events, func(tx *keyring.Tx, recs map[uint64][]byte) error {
			r1, _, _ := decode(recs[1])
			mac := chainMAC(keyring.Events, nil, 2, r1.MAC, false, []byte(body))
			return tx.PutAudit(keyring.Events, 2, encode(2, r1.MAC, false, mac, []byte(body)))
		})
		if _, err := f.verify(key); !errors.Is(err, ErrBroken) {
			t.Errorf("%s: verified: %v", name, err)
		}
	}
}

// TestRecordStringIsOneLine: a record's text is one line, whatever its names
// hold: a newline, a terminal escape or invalid UTF-8 in an actor (an
// unknown name in a failed unseal is the caller's choice), a detail or a
// unit is quoted, and plain values are not.
func TestRecordStringIsOneLine(t *testing.T) {
	hostile := "x\n   4242 2026-12-06T06:00:00Z admin.add ok actor=alice\x1b[2J\xff"
	rec := Record{Seq: 7, Event: Event{Kind: KindUnseal, Outcome: WrongPassword, Actor: hostile, Detail: hostile,
		Peer: &Peer{UID: 1, Unit: hostile}}}
	s := rec.String()
	if strings.ContainsAny(s, "\n\x1b") || strings.Contains(s, "\xff") {
		t.Fatalf("a record's text carries a control character: %q", s)
	}
	if n := strings.Count(s, `"x\n   4242`); n != 3 {
		t.Fatalf("the hostile values are not quoted (%d of 3): %s", n, s)
	}
	plain := Record{Seq: 8, Event: Event{Kind: KindRead, Outcome: OK, Client: "svc", Detail: "/v1/secret"}}
	if s := plain.String(); !strings.Contains(s, " client=svc detail=/v1/secret") {
		t.Fatalf("a plain record is quoted: %s", s)
	}
}

// One event whose detail does not fit a record (a Tang server's error text,
// say) is cut to fit and says so; the events batched with it are written
// whole, and the chain verifies. Escaped text (6 bytes a byte) too.
func TestLongDetailIsCutNotTheBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	long := strings.Repeat("A", 3*MaxBody)
	escaped := strings.Repeat("\x01é", MaxBody)
	err := f.append(keyring.Events, key,
		Event{Kind: KindRead, Outcome: Served, Client: "before"},
		Event{Kind: KindUnseal, Outcome: Failed, Actor: "tang-1", Detail: long},
		Event{Kind: KindUnseal, Outcome: Failed, Actor: "tang-2", Detail: escaped},
		Event{Kind: KindRead, Outcome: Served, Client: "after"})
	if err != nil {
		t.Fatalf("a long detail failed the batch: %v", err)
	}
	if rep, err := f.verify(key); err != nil || rep.Events.Records != 4 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	recs := f.list()
	if len(recs) != 4 || recs[0].Client != "before" || recs[3].Client != "after" {
		t.Fatalf("records: %+v", recs)
	}
	for i, want := range map[int]string{1: "AAAA", 2: "\x01é"} {
		d := recs[i].Detail
		if !strings.HasSuffix(d, Truncated) || !strings.HasPrefix(d, want) || !utf8.ValidString(d) || len(d) < 1000 {
			t.Errorf("record %d: detail %d bytes, %q…%q", i, len(d), d[:min(len(d), 8)], d[max(0, len(d)-30):])
		}
	}
}

// Invalid UTF-8 in an event (an unknown name someone typed, a tool's
// output) is written as U+FFFD and the chain still verifies: the canonical
// form of the decoded body is the body (the second independent review found
// a `\ufffd` escape that a verifier's re-encoding did not reproduce). An
// event too long without its detail fails, rather than loop.
func TestInvalidUTF8VerifiesAndOversizeEnds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	err := f.append(keyring.Events, key,
		Event{Kind: KindUnseal, Outcome: WrongPassword, Actor: "x\xff\xfey", Detail: "tpm2: \xc3(", Peer: &Peer{Unit: "a\x80.service"}})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := f.verify(key); err != nil || rep.Events.Records != 1 {
		t.Fatalf("a record with invalid UTF-8 does not verify: %+v %v", rep, err)
	}
	recs := f.list()
	if len(recs) != 1 || recs[0].Actor != "x\uFFFD\uFFFDy" || recs[0].Detail != "tpm2: \uFFFD(" {
		t.Fatalf("records: %+v", recs)
	}
	done := make(chan error, 1)
	go func() {
		done <- f.kr.Update(func(tx *keyring.Tx) error {
			_, err := Append(tx, key, keyring.Events, f.state(keyring.Events),
				Event{Kind: KindRead, Outcome: Served, Peer: &Peer{Unit: strings.Repeat("u", MaxBody)}, Detail: "d"})
			return err
		})
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "exceeds") {
			t.Fatalf("an event too long without its detail: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Append did not end on an event too long without its detail")
	}
}
