package admin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

var cheap = keyring.Params{Time: 1, MemoryKiB: 64, Threads: 1}

var ctx = context.Background()

func TestMain(m *testing.M) {
	unseal.UseTestFloor(cheap)
	os.Exit(m.Run())
}

const (
	pwAlice = "alice's long passphrase"
	pwBob   = "bob's own long passphrase"
	pwCarol = "carol picks another one"
)

var secret = []byte("the master secret: 7f3a9c1e5b2d4f60")

func opts() Options {
	p := cheap
	return Options{Policy: &p, Memory: memlock.Options{AllowUnlocked: true}}
}

// newStore makes a keyring with alice as its only admin and returns its
// manager and path.
func newStore(t *testing.T) (*Manager, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyring.db")
	if err := Init(ctx, path, "alice", []byte(pwAlice), secret, opts()); err != nil {
		t.Fatal(err)
	}
	m := reopen(t, path)
	return m, path
}

func reopen(t *testing.T, path string) *Manager {
	t.Helper()
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	return New(kr, opts())
}

func mustUnseal(t *testing.T, m *Manager, name, pw string) *Unsealed {
	t.Helper()
	u, err := m.Unseal(ctx, name, []byte(pw))
	if err != nil {
		t.Fatalf("unseal as %s: %v", name, err)
	}
	t.Cleanup(u.Destroy)
	if !bytes.Equal(u.Secret.Bytes(), secret) {
		t.Fatalf("unseal as %s: wrong secret", name)
	}
	return u
}
