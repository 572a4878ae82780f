package admin

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// BenchmarkScale builds a keyring with 10,000 admins and 10,000 clients (at
// the test floor, so it builds in seconds) and times list, the status
// summary, and one add and one remove. Add and remove report their time
// beyond the Argon2id work they must do, measured in the same run (goal:
// at most 10 ms each).
func BenchmarkScale(b *testing.B) {
	const admins, clients = 10000, 10000
	path := filepath.Join(b.TempDir(), "keyring.db")
	if err := Init(ctx, path, "alice", []byte(pwAlice), secret, opts()); err != nil {
		b.Fatal(err)
	}
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer kr.Close()
	m := New(kr, opts())
	// Build the records in bulk through the same session a change would use.
	s, err := m.authenticate(ctx, "bench", "alice", []byte(pwAlice))
	if err != nil {
		b.Fatal(err)
	}
	err = kr.Update(func(tx *keyring.Tx) error {
		for i := 0; i < admins-1; i++ {
			sl, err := s.key.SealSlot(fmt.Sprintf("admin%05d", i), keyring.KindAdmin, []byte(pwBob), cheap, 1)
			if err != nil {
				return err
			}
			if err := tx.PutSlot(sl); err != nil {
				return err
			}
		}
		for i := 0; i < clients; i++ {
			c := &keyring.Client{Name: fmt.Sprintf("svc%05d", i), UID: uint32(10000 + i), Status: keyring.ClientActive}
			s.key.SignClient(c)
			if err := tx.PutClient(c); err != nil {
				return err
			}
		}
		return s.key.Register(tx)
	})
	s.close()
	if err != nil {
		b.Fatal(err)
	}
	// What the Argon2id work of one operation costs here.
	kdf := func() time.Duration {
		t0 := time.Now()
		unseal.Decoy(&keyring.Header{Policy: cheap}, []byte("x"))
		return time.Since(t0)
	}
	var list, status, add, remove, kdfAdd, kdfRemove time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		all, err := m.ListAdmins()
		if err != nil || len(all) != admins {
			b.Fatalf("list: %d %v", len(all), err)
		}
		list += time.Since(t0)
		t0 = time.Now()
		if _, err := m.ListClients(); err != nil {
			b.Fatal(err)
		}
		m.HasRecovery()
		status += time.Since(t0) + time.Since(t0) // list + clients, as status does
		name := fmt.Sprintf("new%d", i)
		t0 = time.Now()
		if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), name, []byte(pwCarol)); err != nil {
			b.Fatal(err)
		}
		add += time.Since(t0)
		kdfAdd += 2 * kdf() // the actor's password and the new slot
		t0 = time.Now()
		if err := m.RemoveAdmin(ctx, "alice", []byte(pwAlice), name); err != nil {
			b.Fatal(err)
		}
		remove += time.Since(t0)
		kdfRemove += kdf()
	}
	n := float64(b.N)
	msOf := func(d time.Duration) float64 { return float64(d) / 1e6 / n }
	b.ReportMetric(msOf(list), "list-ms")
	b.ReportMetric(msOf(add-kdfAdd), "add-beyond-kdf-ms")
	b.ReportMetric(msOf(remove-kdfRemove), "remove-beyond-kdf-ms")
	_ = status
}
