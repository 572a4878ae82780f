package admin

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// BenchmarkScale builds a keyring with 10,000 admins and 10,000 clients (at
// the test floor, so it builds in seconds, through one change) and times
// list, and one add and one remove. Add and remove report their time beyond
// the Argon2id work they must do, measured in the same run (goal: at most
// 10 ms each), since that work is the same at any scale.
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
	s, err := m.authenticate(ctx, audit.KindAdminAdd, "alice", []byte(pwAlice))
	if err != nil {
		b.Fatal(err)
	}
	_, err = m.change(ctx, s, op{kind: audit.KindAdminAdd, target: "bulk"}, func(t *txn) error {
		for i := 0; i < admins-1; i++ {
			sl, err := s.key.SealSlot(fmt.Sprintf("admin%05d", i), keyring.KindAdmin, []byte(pwBob), cheap, 1, 0)
			if err != nil {
				return err
			}
			if err := t.PutSlot(sl); err != nil {
				return err
			}
		}
		for i := 0; i < clients; i++ {
			c := &keyring.Client{Name: fmt.Sprintf("svc%05d", i), UID: uint32(10000 + i), HasUID: true, Status: keyring.ClientActive}
			if err := t.PutClient(c); err != nil {
				return err
			}
		}
		return nil
	})
	s.close()
	if err != nil {
		b.Fatal(err)
	}
	// What the Argon2id work of one operation costs here.
	kdf := func() time.Duration {
		t0 := time.Now()
		unseal.Decoy(cheap, []byte("x"))
		return time.Since(t0)
	}
	var list, add, remove, kdfAdd, kdfRemove time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		all, err := m.ListAdmins()
		if err != nil || len(all) != admins {
			b.Fatalf("list: %d %v", len(all), err)
		}
		list += time.Since(t0)
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
}

// BenchmarkUnknownVsWrongPassword times an unseal attempt with a wrong
// password for an existing admin against one for an unknown name, at the
// real floor parameters, alternating the two. The ratio unknown/wrong should
// be 1 within noise: the decoy derivation does the same work.
func BenchmarkUnknownVsWrongPassword(b *testing.B) {
	unseal.UseTestFloor(unseal.RFC9106Floor)
	defer unseal.UseTestFloor(cheap)
	path := filepath.Join(b.TempDir(), "keyring.db")
	o := opts()
	p := unseal.RFC9106Floor
	o.Policy = &p
	if err := Init(ctx, path, "alice", []byte(pwAlice), secret, o); err != nil {
		b.Fatal(err)
	}
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer kr.Close()
	now := time.Unix(1_800_000_000, 0)
	o.Now = func() time.Time { return now }
	m := New(kr, o)
	var wrong, unknown time.Duration
	try := func(name string) time.Duration {
		now = now.Add(2 * time.Hour) // stay clear of the backoff
		start := time.Now()
		if _, err := m.Unseal(ctx, name, []byte("not the password")); err == nil {
			b.Fatal("unsealed")
		}
		return time.Since(start)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			wrong += try("alice")
			unknown += try("zed")
		} else {
			unknown += try("zed")
			wrong += try("alice")
		}
	}
	b.ReportMetric(float64(wrong)/1e6/float64(b.N), "wrong-ms/op")
	b.ReportMetric(float64(unknown)/1e6/float64(b.N), "unknown-ms/op")
	b.ReportMetric(float64(unknown)/float64(wrong), "unknown/wrong")
}
