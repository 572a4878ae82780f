package admin

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// clockAt returns options whose clock reads *now.
func clockAt(now *time.Time) Options {
	o := opts()
	o.Now = func() time.Time { return *now }
	return o
}

// newStoreAt is newStore with a clock the test moves.
func newStoreAt(t *testing.T, now *time.Time) *Manager {
	t.Helper()
	return New(initKeyring(t, filepath.Join(t.TempDir(), "keyring.db")), clockAt(now))
}

func TestBackoffPersistsAndResets(t *testing.T) {
	// Not parallel: reads unseal's process-wide work counter.
	path := filepath.Join(t.TempDir(), "keyring.db")
	if err := Init(ctx, path, "alice", []byte(pwAlice), secret, opts()); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	kr, _ := keyring.Open(path, keyring.Options{})
	m := New(kr, clockAt(&now))
	for i := 0; i < freePerName; i++ {
		if _, err := m.Unseal(ctx, "alice", []byte("wrong password!!")); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	// The next try is refused before any Argon2id work, even with the right
	// password, and says when to come back.
	n0, _ := unseal.Work()
	_, err := m.Unseal(ctx, "alice", []byte(pwAlice))
	n1, _ := unseal.Work()
	var be *BackoffError
	if !errors.As(err, &be) || be.RetryAfter != time.Second || n1 != n0 {
		t.Fatalf("after %d failures: %v (retry %v), %d derivations", freePerName, err, be, n1-n0)
	}
	// A restart does not reset it.
	kr.Close()
	kr, _ = keyring.Open(path, keyring.Options{})
	defer kr.Close()
	m = New(kr, clockAt(&now))
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.Is(err, ErrBackoff) {
		t.Fatalf("after reopening: %v", err)
	}
	// The wait doubles with each further failure.
	now = now.Add(time.Second)
	m.Unseal(ctx, "alice", []byte("wrong password!!"))
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.As(err, &be) || be.RetryAfter != 2*time.Second {
		t.Fatalf("after one more failure: %v", err)
	}
	// Once the wait is over, the right password works and clears the count.
	now = now.Add(2 * time.Second)
	u, err := m.Unseal(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	u.Secret.Destroy()
	u.LogKeys.Destroy()
	if _, err := m.Unseal(ctx, "alice", []byte("wrong password!!")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("after a success the count starts over: %v", err)
	}
}

func TestUnknownNamesBackOffLikeKnownOnes(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	m := newStoreAt(t, &now)
	var answers [2][]string
	for i, name := range []string{"alice", "zed"} {
		for j := 0; j < freePerName+1; j++ {
			_, err := m.Unseal(ctx, name, []byte("wrong password!!"))
			answers[i] = append(answers[i], err.Error())
		}
	}
	for j := range answers[0] {
		if answers[0][j] != answers[1][j] {
			t.Fatalf("try %d: known %q, unknown %q", j+1, answers[0][j], answers[1][j])
		}
	}
}

func TestGlobalBackoff(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	m := newStoreAt(t, &now)
	// Many names, one failure each: only the global count can stop them.
	for i := 0; i < freeGlobal; i++ {
		m.Unseal(ctx, "guess"+string(rune('a'+i)), []byte("wrong password!!"))
	}
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.Is(err, ErrBackoff) {
		t.Fatalf("after %d failures across names: %v", freeGlobal, err)
	}
	now = now.Add(2 * time.Hour) // the global count decays
	u, err := m.Unseal(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	u.Secret.Destroy()
}

func TestChangeFailsClosedWithoutItsAuditRecord(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	before := snapshot(t, m)
	// An undecodable record at the end of the events log: the state
	// verifies (the root's keyed record is intact), but no record can be
	// appended after it.
	m.kr.Update(func(tx *keyring.Tx) error {
		_, last := tx.AuditBounds(keyring.Events)
		return tx.PutAudit(keyring.Events, last+1, []byte("damaged"))
	})
	err := m.AddClient(ctx, "alice", []byte(pwAlice), "web", uidMatch(33))
	if !errors.Is(err, audit.ErrBroken) {
		t.Fatalf("got %v, want the audit error", err)
	}
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err == nil {
		t.Fatal("admin added without an audit record")
	}
	if !bytes.Equal(before, snapshot(t, m)) {
		t.Fatal("the keyring changed although its audit record could not be written")
	}
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); err == nil {
		t.Fatal("unsealed without an audit record")
	}
}

func TestChangesAreAudited(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	pctx := audit.WithPeer(ctx, audit.Peer{UID: 1000, GID: 1000, PID: 42})
	if err := m.AddAdmin(pctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	m.AddClient(pctx, "bob", []byte("wrong password!!"), "web", uidMatch(33))
	if err := m.RemoveAdmin(pctx, "bob", []byte(pwBob), "nobody-here"); err == nil {
		t.Fatal("removed a missing admin")
	}
	var recs []audit.Record
	m.kr.View(func(tx *keyring.Tx) error {
		recs = audit.List(tx, audit.Filter{})
		return nil
	})
	want := []struct{ kind, outcome, actor, target string }{
		{"init", "ok", "alice", "alice"},
		{"admin.add", "ok", "alice", "bob"},
		{"client.add", "wrong_password", "bob", ""},
		{"admin.remove", "refused", "bob", "nobody-here"},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records: %+v", len(recs), recs)
	}
	for i, w := range want {
		r := recs[i]
		if string(r.Kind) != w.kind || string(r.Outcome) != w.outcome || r.Actor != w.actor || r.Target != w.target {
			t.Errorf("record %d: %+v, want %+v", i+1, r.Event, w)
		}
		if i > 0 && (r.Peer == nil || r.Peer.PID != 42) {
			t.Errorf("record %d lacks the peer", i+1)
		}
	}
	// Nothing secret in any record.
	for _, r := range recs {
		for _, s := range []string{pwAlice, pwBob, "wrong password", string(secret)} {
			if bytes.Contains([]byte(r.String()+r.Detail), []byte(s)) {
				t.Errorf("record %d contains %q", r.Seq, s)
			}
		}
	}
}
