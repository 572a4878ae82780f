package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sealbox/sealbox/keyring"
)

// BenchmarkReadAudit measures authorized reads per second over 16 keep-alive
// connections with read auditing (group commit) on and off, alternating the
// two within each iteration, and reports the ratio on/off (goal >= 0.9).
func BenchmarkReadAudit(b *testing.B) {
	t := &testing.T{}
	d, ac, _ := startDaemonTB(b, t)
	if _, err := ac.Unseal(context.Background(), "alice", []byte(pwAlice)); err != nil {
		b.Fatal(err)
	}
	const conns, reads = 16, 4000
	client := unixHTTP(d.cfg.Socket)
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = conns
	round := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for c := 0; c < conns; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < reads/conns; i++ {
					resp, err := client.Get("http://sealbox/v1/secret")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	round() // warm up connections
	var on, off time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, audited := range []bool{i%2 == 0, i%2 != 0} {
			d.noReadAudit = !audited // between rounds: no reader runs
			if audited {
				on += round()
			} else {
				off += round()
			}
		}
	}
	b.StopTimer()
	d.noReadAudit = false
	perSec := func(d time.Duration) float64 { return float64(reads*b.N) / d.Seconds() }
	b.ReportMetric(perSec(on), "reads/s-audit")
	b.ReportMetric(perSec(off), "reads/s-noaudit")
	b.ReportMetric(perSec(on)/perSec(off), "audit/noaudit")
}

// BenchmarkClientLookup times authorizing one request against an index of
// 10,000 clients (the per-request work: no database transaction).
func BenchmarkClientLookup(b *testing.B) {
	v := newVault()
	var cs []*keyring.Client
	for i := 0; i < 10000; i++ {
		cs = append(cs, &keyring.Client{Name: fmt.Sprintf("svc%05d", i), UID: uint32(10000 + i), HasUID: true, Status: keyring.ClientActive})
	}
	v.setClients(cs)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := v.match(PeerCred{UID: uint32(10000 + i%10000)}); !ok {
			b.Fatal("no match")
		}
	}
}
