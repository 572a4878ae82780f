package admin

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealbox/sealbox/keyring"
)

func TestSummaryCountsWhatTheFileHolds(t *testing.T) {
	m, _ := newStore(t)
	uid := uint32(1000)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	if err := m.AddClient(ctx, "alice", []byte(pwAlice), "web", Match{UID: &uid}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Invite(ctx, "alice", []byte(pwAlice), "carol", DefaultInviteTTL); err != nil {
		t.Fatal(err)
	}
	if _, err := m.RegenerateRecovery(ctx, "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	s, err := m.Summary()
	if err != nil {
		t.Fatal(err)
	}
	// alice and bob; the invite and the recovery code are not admins.
	if s.Admins != 2 || s.Clients != 1 || !s.Recovery || s.Format != keyring.FormatVersion || s.SecretVersion != 1 || len(s.Slots) != 4 || s.Generation < 4 {
		t.Fatalf("%+v", s)
	}
	if p, err := m.Policy(); err != nil || p != cheap {
		t.Fatalf("policy %v, %v", p, err)
	}
	if cs, err := m.RecordedClients(); err != nil || len(cs) != 1 || cs[0].Name != "web" {
		t.Fatalf("clients %v, %v", cs, err)
	}
	if err := m.Preflight(); err != nil {
		t.Fatal(err)
	}
}

// A file whose pages after bbolt's meta pages are zeroed is refused as
// corrupt, at open or by Preflight: bbolt panicked on it at open before.
func TestDamagedFileIsRefusedNotAPanic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.db")
	if err := Init(ctx, path, "alice", []byte(pwAlice), secret, opts()); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	// Pages 0 and 1 are bbolt's meta pages; everything after them is
	// scribbled over.
	if _, err := f.WriteAt(make([]byte, st.Size()-2*4096), 2*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		if !errors.Is(err, keyring.ErrCorrupt) && !errors.Is(err, keyring.ErrNotKeyring) {
			t.Fatalf("open: %v", err)
		}
		return
	}
	defer kr.Close()
	if err := New(kr, opts()).Preflight(); err == nil {
		t.Fatal("a scribbled page passed the preflight")
	}
}
