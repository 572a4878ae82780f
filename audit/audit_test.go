package audit

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/keyring"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func newKeyring(t *testing.T) *keyring.Keyring {
	t.Helper()
	in := &keyring.Initial{
		Header: keyring.Header{Policy: keyring.Params{Time: 3, MemoryKiB: 65536, Threads: 4}},
		Secret: keyring.Secret{Version: 1, Ciphertext: make([]byte, 40)},
		Slot:   keyring.Slot{Name: "alice", Kind: keyring.KindAdmin},
	}
	kr, err := keyring.Create(filepath.Join(t.TempDir(), "k.db"), in)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	return kr
}

func appendN(t *testing.T, kr *keyring.Keyring, k []byte, n int, kind string) {
	t.Helper()
	err := kr.Update(func(tx *keyring.Tx) error {
		for i := 0; i < n; i++ {
			ev := Event{Kind: kind, Client: fmt.Sprintf("svc%d", i%3), Outcome: "served", Peer: &Peer{UID: uint32(i)}}
			if err := Append(tx, k, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func verify(t *testing.T, kr *keyring.Keyring) (*Report, error) {
	t.Helper()
	var rep *Report
	var verr error
	kr.View(func(tx *keyring.Tx) error { rep, verr = Verify(tx, key); return nil })
	return rep, verr
}

// mutate rewrites stored records directly, as someone with write access to
// the file could.
func mutate(t *testing.T, kr *keyring.Keyring, fn func(tx *keyring.Tx, recs map[uint64][]byte) error) {
	t.Helper()
	err := kr.Update(func(tx *keyring.Tx) error {
		recs := map[uint64][]byte{}
		tx.AuditRecords(0, func(seq uint64, raw []byte) bool { recs[seq] = append([]byte(nil), raw...); return true })
		return fn(tx, recs)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func expectBroken(t *testing.T, kr *keyring.Keyring, seq uint64, contains string) {
	t.Helper()
	rep, err := verify(t, kr)
	if !errors.Is(err, ErrBroken) {
		t.Fatalf("verify: %v, want ErrBroken", err)
	}
	if rep.BadSeq != seq || !strings.Contains(rep.Problem, contains) {
		t.Fatalf("first bad record %d %q, want %d containing %q", rep.BadSeq, rep.Problem, seq, contains)
	}
}

func TestChainVerifies(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 10, "read")
	rep, err := verify(t, kr)
	if err != nil || rep.Records != 10 || rep.Keyed != 10 || rep.Unanchored != 0 || rep.First != 1 || rep.Last != 10 {
		t.Fatalf("%+v %v", rep, err)
	}
	var wrong []byte = []byte("another key, thirty-two bytes...")
	kr.View(func(tx *keyring.Tx) error {
		if _, err := Verify(tx, wrong); !errors.Is(err, ErrBroken) {
			t.Errorf("wrong key verified: %v", err)
		}
		if _, err := Verify(tx, nil); err == nil {
			t.Error("nil key accepted")
		}
		return nil
	})
}

func TestDeletionDetected(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 5, "read")
	mutate(t, kr, func(tx *keyring.Tx, recs map[uint64][]byte) error { return tx.DeleteAuditBefore(0) }) // no-op
	kr.Update(func(tx *keyring.Tx) error {
		// delete record 3 by rebuilding without it
		recs := map[uint64][]byte{}
		tx.AuditRecords(0, func(seq uint64, raw []byte) bool { recs[seq] = append([]byte(nil), raw...); return true })
		tx.DeleteAuditBefore(100)
		for seq, raw := range recs {
			if seq != 3 {
				tx.PutAudit(seq, raw)
			}
		}
		return nil
	})
	expectBroken(t, kr, 3, "missing")
}

func TestEditDetected(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 5, "read")
	mutate(t, kr, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		raw := recs[2]
		i := strings.Index(string(raw), `"served"`)
		copy(raw[i:], `"sealed"`)
		return tx.PutAudit(2, raw)
	})
	expectBroken(t, kr, 2, "edited")
}

func TestReorderDetected(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 5, "read")
	mutate(t, kr, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		tx.PutAudit(2, recs[3])
		return tx.PutAudit(3, recs[2])
	})
	expectBroken(t, kr, 2, "moved")
}

func TestTailTruncationDetected(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 5, "read")
	mutate(t, kr, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		tx.DeleteAuditBefore(100)
		for seq := uint64(1); seq <= 4; seq++ {
			tx.PutAudit(seq, recs[seq])
		}
		return nil
	})
	expectBroken(t, kr, 5, "removed from the end")
}

func TestUnkeyedRecordsAnchoredByTheNextKeyedOne(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 2, "read")
	appendN(t, kr, nil, 3, "read") // a daemon before its first unseal
	rep, err := verify(t, kr)
	if err != nil || rep.Unanchored != 3 || rep.Keyed != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
	appendN(t, kr, key, 1, "read")
	rep, err = verify(t, kr)
	if err != nil || rep.Unanchored != 0 || rep.Records != 6 {
		t.Fatalf("%+v %v", rep, err)
	}
	// An anchored unkeyed record cannot be edited, even with its hash redone.
	mutate(t, kr, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		rec, body, _ := decode(recs[4])
		body = []byte(strings.Replace(string(body), "served", "sealed", 1))
		mac := chainMAC(nil, 4, rec.Prev, false, body)
		return tx.PutAudit(4, encode(4, rec.Prev, false, mac, body))
	})
	expectBroken(t, kr, 5, "does not follow")
}

func TestKeyedRecordsCannotBeDowngraded(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 4, "read")
	// Rewrite records 3 and 4 as unkeyed with recomputed hashes, and a head
	// that says nothing was keyed after 2: what an attacker could compute.
	mutate(t, kr, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		r2, _, _ := decode(recs[2])
		prev := r2.MAC
		for seq := uint64(3); seq <= 4; seq++ {
			_, body, _ := decode(recs[seq])
			body = []byte(strings.Replace(string(body), "served", "forged", 1))
			mac := chainMAC(nil, seq, prev, false, body)
			tx.PutAudit(seq, encode(seq, prev, false, mac, body))
			prev = mac
		}
		h, _ := readHead(tx)
		h.seq, h.mac = 4, prev
		return writeHead(tx, h)
	})
	expectBroken(t, kr, 3, "rewritten as unkeyed")
	// Dropping the attestation altogether does not help either.
	mutate(t, kr, func(tx *keyring.Tx, _ map[uint64][]byte) error {
		h, _ := readHead(tx)
		h.keyedSeq, h.keyedMAC, h.attest = 0, [macSize]byte{}, [macSize]byte{}
		return writeHead(tx, h)
	})
	expectBroken(t, kr, 4, "lost its attestation")
}

func TestAlwaysKeyedKindsMustBeKeyed(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	kr.Update(func(tx *keyring.Tx) error {
		return Append(tx, nil, Event{Kind: "admin.add", Actor: "mallory", Target: "mallory", Outcome: "ok"})
	})
	expectBroken(t, kr, 1, "always written keyed")
}

func TestPruneKeepsTheChainVerifiable(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 20, "read")
	var dropped int
	err := kr.Update(func(tx *keyring.Tx) error {
		var err error
		dropped, err = Prune(tx, key, 5)
		return err
	})
	if err != nil || dropped != 15 {
		t.Fatalf("prune: %d %v", dropped, err)
	}
	rep, err := verify(t, kr)
	if err != nil || rep.Records != 6 || rep.Pruned != 15 || rep.First != 16 || rep.Last != 21 {
		t.Fatalf("after prune: %+v %v", rep, err)
	}
	// Removing one more record from the front is still detected.
	mutate(t, kr, func(tx *keyring.Tx, _ map[uint64][]byte) error { return tx.DeleteAuditBefore(17) })
	expectBroken(t, kr, 16, "missing")
	// So is moving the anchor without the key.
	mutate(t, kr, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		a := tx.AuditMeta(keyring.AuditAnchor)
		r17, _, _ := decode(recs[17])
		copy(a[8:], r17.Prev[:])
		a[7] = 16
		return tx.PutAuditMeta(keyring.AuditAnchor, a)
	})
	expectBroken(t, kr, 16, "anchor was altered")
}

func TestListFilters(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t)
	appendN(t, kr, key, 6, "read")
	kr.Update(func(tx *keyring.Tx) error {
		return Append(tx, key, Event{Kind: "admin.add", Actor: "alice", Target: "bob", Outcome: "ok", Time: time.Now().Add(time.Hour)})
	})
	kr.View(func(tx *keyring.Tx) error {
		if n := len(List(tx, Filter{})); n != 7 {
			t.Errorf("all: %d", n)
		}
		if n := len(List(tx, Filter{Client: "svc1"})); n != 2 {
			t.Errorf("client svc1: %d", n)
		}
		if l := List(tx, Filter{Admin: "bob"}); len(l) != 1 || l[0].Kind != "admin.add" {
			t.Errorf("admin bob: %+v", l)
		}
		if n := len(List(tx, Filter{Since: time.Now().Add(30 * time.Minute)})); n != 1 {
			t.Errorf("since: %d", n)
		}
		if l := List(tx, Filter{Limit: 2}); len(l) != 2 || l[1].Seq != 7 {
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
	kr := newKeyring(t)
	k2 := []byte("second audit key, 32 bytes long!")
	k3 := []byte("third audit key, also 32 bytes!!")
	appendN(t, kr, key, 3, "read")
	rekey := func(old, new []byte) {
		t.Helper()
		err := kr.Update(func(tx *keyring.Tx) error {
			return Rekey(tx, old, new, Event{Kind: "admin.rekey", Actor: "alice", Outcome: "ok"})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rekey(key, k2)
	appendN(t, kr, k2, 2, "read")
	kr.Update(func(tx *keyring.Tx) error { _, err := Prune(tx, k2, 4); return err })
	rekey(k2, k3)
	appendN(t, kr, k3, 2, "read")
	var rep *Report
	var err error
	kr.View(func(tx *keyring.Tx) error { rep, err = Verify(tx, k3); return nil })
	if err != nil || rep.Last != 10 || rep.Pruned != 2 {
		t.Fatalf("across two rekeys and a prune: %+v %v", rep, err)
	}
	// An old key alone verifies nothing now, and cannot read the history.
	kr.View(func(tx *keyring.Tx) error {
		if _, err := Verify(tx, k2); err == nil {
			t.Error("the previous key verified the current chain")
		}
		return nil
	})
	// A record of the second epoch re-signed with the first key fails.
	mutate(t, kr, func(tx *keyring.Tx, recs map[uint64][]byte) error {
		for seq := range recs {
			if seq == 9 {
				rec, body, _ := decode(recs[seq])
				mac := chainMAC(key, seq, rec.Prev, true, body)
				return tx.PutAudit(seq, encode(seq, rec.Prev, true, mac, body))
			}
		}
		return fmt.Errorf("record 9 not found")
	})
	kr.View(func(tx *keyring.Tx) error { _, err = Verify(tx, k3); return nil })
	if !errors.Is(err, ErrBroken) {
		t.Fatalf("a record signed with the wrong epoch's key: %v", err)
	}
}
