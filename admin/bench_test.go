package admin

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

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
