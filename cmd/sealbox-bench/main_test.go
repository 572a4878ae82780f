package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/internal/testbin"
)

// TestMain lets the test binary be its own --load child, as sealbox-bench is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "--load" {
		loadChild(os.Args[2:])
		return
	}
	os.Exit(m.Run())
}

func TestLoadAgainstTheBareServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "bare.sock")
	go serveBare(sock, "32")
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, keepAlive := range []bool{true, false} {
		rate, lat, err := load(sock, 4, 200, keepAlive)
		if err != nil || rate <= 0 || len(lat) != 200 {
			t.Fatalf("keep-alive %v: rate %v, %d latencies, %v", keepAlive, rate, len(lat), err)
		}
		if pct(lat, 0.5) > pct(lat, 0.99) || pct(lat, 0) != lat[0] {
			t.Fatal("latencies not sorted")
		}
	}
	if _, _, err := load(filepath.Join(t.TempDir(), "none.sock"), 1, 2, true); err == nil {
		t.Fatal("no error from a missing server")
	}
}

func TestHelpers(t *testing.T) {
	if median([]float64{3, 1, 2}) != 2 || medianD([]time.Duration{5, 1, 9}) != 5 {
		t.Fatal("median")
	}
	if met(true) != "yes" || met(false) != "NO" {
		t.Fatal("met")
	}
	if mib(1536) != "1.5 MiB" || ms(1500*time.Microsecond) != "1.5 ms" {
		t.Fatal("units")
	}
	if rssKiB(os.Getpid(), "VmRSS") <= 0 {
		t.Fatal("rss of this process")
	}
}

func TestKDFCompareHelpers(t *testing.T) {
	if busy, total := cpuTicks(); total == 0 || busy > total {
		t.Fatalf("cpuTicks: %d busy of %d", busy, total)
	}
	c := kdfImpl{argv: func(k kdfParams) []string { return []string{"/bin/echo", fmt.Sprint(k.m), "x"} }, pipe: true}
	k := kdfParams{t: 3, m: 64, p: 4}
	if got := c.command(k); got != "printf password | /bin/echo 64 x" {
		t.Fatalf("command %q", got)
	}
	s, err := c.run(k)
	if err != nil || s.hash != "64" || s.wall <= 0 || s.rss <= 0 {
		t.Fatalf("run: %+v, %v", s, err)
	}
}

func TestLoadInAChildProcess(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "bare.sock")
	go serveBare(sock, "32")
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	rate, lat, err := loadProc(sock, 2, 100, true)
	if err != nil || rate <= 0 || len(lat) != 100 {
		t.Fatalf("rate %v, %d latencies, %v", rate, len(lat), err)
	}
}

// TestTangSection runs the tang section, quick, against the real tangd and
// clevis with a freshly built sealbox-admin: its three rows come out, each
// side recovered the right key (the section fails otherwise), and the hung
// server is given up on. The figures themselves are not asserted.
func TestTangSection(t *testing.T) {
	fleettest.RequireTang(t)
	bin, err := testbin.Build("sealbox-admin", false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := &bench{dir: dir, adminBin: bin, quick: true}
	if err := b.tangSection(); err != nil {
		t.Fatal(err)
	}
	if len(b.rows) != 3 || b.rows[0].Ratio <= 0 || b.rows[2].Met != "yes" {
		t.Fatalf("rows: %+v", b.rows)
	}
	for _, r := range b.rows {
		t.Logf("%s: %s (baseline %s)", r.Metric, r.Sealbox, r.Baseline)
	}
}
