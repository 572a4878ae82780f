package main

// Reads under load: a soak, and reads while admins change the keyring.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/internal/testbin"
)

// reader hammers the service socket from conns goroutines until stop or
// until total reads are done, and checks every answer with ok.
func reader(t *testing.T, sock string, conns, total int, stop <-chan struct{}, ok func(code int, body []byte) bool) (served, sealed int64, errs []string) {
	c := unixClient(sock)
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = conns
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < conns; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; total == 0 || i < total/conns; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("http://sealbox/v1/secret")
				var body []byte
				code := 0
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err.Error())
				case !ok(code, body):
					errs = append(errs, fmt.Sprintf("%d %q", code, body))
				case code == 200:
					served++
				default:
					sealed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return
}

// TestSoakReads: N reads (SEALBOX_SOAK_READS, default 20,000; make soak:
// 1,000,000) over 64 keep-alive connections, zero errors, and the daemon's
// own memory flat after warm-up.
func TestSoakReads(t *testing.T) {
	t.Parallel()
	total := 20000
	if v := os.Getenv("SEALBOX_SOAK_READS"); v != "" {
		total, _ = strconv.Atoi(v)
	}
	plain, err := testbin.Build("sealboxd", false) // throughput, not race hunting
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "tester", "--uid", strconv.Itoa(os.Geteuid()), "--as", "alice")
	e.startBin(plain, nil)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	exact := func(code int, body []byte) bool { return code == 200 && bytes.Equal(body, masterSecret) }
	start := time.Now()
	_, _, errs := reader(t, e.sock, 64, total/10, nil, exact) // warm-up
	// The unseal's Argon2id memory goes back once the daemon idled 5 s.
	time.Sleep(6 * time.Second)
	warm := rssKiB(t, e.pid, "RssAnon")
	served, _, errs2 := reader(t, e.sock, 64, total-total/10, nil, exact)
	end := rssKiB(t, e.pid, "RssAnon")
	errs = append(errs, errs2...)
	peak := rssKiB(t, e.pid, "VmHWM")
	t.Logf("%d reads over 64 connections in %v: %d errors; daemon's own memory %d KiB after warm-up, %d KiB at the end; peak RSS %d KiB",
		total, time.Since(start).Round(time.Millisecond), len(errs), warm, end, peak)
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %s", len(errs), errs[0])
	}
	if int(served) != total-total/10-(total-total/10)%64 {
		t.Fatalf("served %d", served)
	}
	if end > warm+16<<10 {
		t.Fatalf("the daemon's memory grew from %d KiB to %d KiB: not flat", warm, end)
	}
	stalledBackup(t, e, exact)
}

// stalledBackup asks for a backup of the keyring the soak grew (megabytes)
// and never reads it, then reads on for a while: the daemon must go on
// answering, status and reads alike. A backup streamed from inside its
// read transaction held that transaction open until its 3-minute write
// deadline, and the first write that had to grow the file's map waited
// for it, with the audit writer, every admin operation and every read
// behind.
func stalledBackup(t *testing.T, e *env, ok func(int, []byte) bool) {
	t.Helper()
	conn, err := net.Dial("unix", e.admSock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.UnixConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /v1/backup HTTP/1.1\r\nHost: sealboxd\r\n\r\n")
	time.Sleep(time.Second) // the backup is under way, its reader stalled
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	stop := make(chan struct{})
	type res struct {
		served int64
		errs   []string
	}
	done := make(chan res)
	go func() { s, _, errs := reader(t, e.sock, 4, 0, stop, ok); done <- res{s, errs} }()
	var worst time.Duration
	for range 16 {
		time.Sleep(500 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		_, err := ac.Status(ctx)
		cancel()
		worst = max(worst, time.Since(t0))
		if err != nil {
			close(stop)
			t.Fatalf("status with a backup's reader stalled: %v (after %v)", err, time.Since(t0).Round(time.Millisecond))
		}
	}
	close(stop)
	r := <-done
	st, _ := os.Stat(e.keyring)
	t.Logf("with a backup's reader stalled: %d reads served, slowest status %v; keyring %d bytes", r.served, worst.Round(time.Millisecond), st.Size())
	if len(r.errs) > 0 {
		t.Fatalf("%d reads failed while a backup's reader stalled, first: %s", len(r.errs), r.errs[0])
	}
}

func rssKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	n, _ := strconv.Atoi(strings.Fields(procField(t, pid, "status", field+":"))[1])
	return n
}

// TestReadsDuringChanges: while readers run, the secret is rotated, the
// DataKey replaced and the daemon sealed and unsealed over and over. Every
// answer is a whole value that was current at some point, or 503.
func TestReadsDuringChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "tester", "--uid", strconv.Itoa(os.Geteuid()), "--as", "alice")
	e.start(nil)
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	ctx := context.Background()
	if _, err := ac.Unseal(ctx, "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	values := map[string]bool{string(masterSecret): true}
	ok := func(code int, body []byte) bool {
		if code == 503 {
			return true
		}
		mu.Lock()
		defer mu.Unlock()
		return code == 200 && values[string(body)]
	}
	stop := make(chan struct{})
	type res struct {
		served, sealed int64
		errs           []string
	}
	done := make(chan res)
	go func() { s, z, e := reader(t, e.sock, 8, 0, stop, ok); done <- res{s, z, e} }()
	for i := 0; i < 4; i++ {
		next := []byte(fmt.Sprintf("value %d of the master secret", i))
		mu.Lock()
		values[string(next)] = true // allowed from the moment it may be served
		mu.Unlock()
		if _, err := ac.Rotate(ctx, "alice", []byte(pwAlice), next); err != nil {
			t.Fatal(err)
		}
		if _, err := ac.Rekey(ctx, "alice", []byte(pwAlice), admin.RekeyOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := ac.Seal(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := ac.Unseal(ctx, "bob", []byte(pwBob)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	r := <-done
	t.Logf("%d whole values served, %d sealed answers, %d wrong", r.served, r.sealed, len(r.errs))
	if len(r.errs) > 0 {
		t.Fatalf("%d wrong answers, first: %s", len(r.errs), r.errs[0])
	}
	if r.served == 0 || r.sealed == 0 {
		t.Fatalf("the reads did not overlap both states: %d served, %d sealed", r.served, r.sealed)
	}
	e.online(0, "", "audit", "verify")
}
