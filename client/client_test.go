package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/client"
	"github.com/sealbox/sealbox/config"
	"github.com/sealbox/sealbox/daemon"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

const pwAlice = "alice's long passphrase"

var (
	secret = []byte("client package secret")
	adm    *api.Client
	sock   string
)

// TestMain runs a real sealboxd in this process, with this process's uid
// registered as client "tests", and points $SEALBOX_SOCKET at it.
func TestMain(m *testing.M) {
	cheap := keyring.Params{Time: 1, MemoryKiB: 64, Threads: 1}
	unseal.UseTestFloor(cheap)
	dir, err := os.MkdirTemp("", "sbc")
	if err != nil {
		panic(err)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		cfg, stop := startDaemon(dir)
		defer stop()
		sock = cfg.Socket
		os.Setenv(client.SocketEnv, sock)
		adm = api.NewClient(cfg.AdminSocket)
		return m.Run()
	}()
	os.Exit(code)
}

// startDaemon makes a keyring in dir whose client "tests" is this process's
// uid and serves it in this process until stop.
func startDaemon(dir string) (cfg config.Config, stop func()) {
	ctx := context.Background()
	cheap := keyring.Params{Time: 1, MemoryKiB: 64, Threads: 1}
	opts := admin.Options{Policy: &cheap, Memory: memlock.Options{AllowUnlocked: true}}
	cfg = config.Default()
	cfg.Keyring, cfg.Socket, cfg.AdminSocket = filepath.Join(dir, "k.db"), filepath.Join(dir, "s.sock"), filepath.Join(dir, "a.sock")
	cfg.CredentialSocket = "off"
	cfg.MaxWait = 2 * time.Second // short, so tests see waits span several polls
	if _, err := os.Stat(cfg.Keyring); err != nil {
		if err := admin.Init(ctx, cfg.Keyring, "alice", []byte(pwAlice), secret, opts); err != nil {
			panic(err)
		}
		kr, _ := keyring.Open(cfg.Keyring, keyring.Options{})
		uid := uint32(os.Getuid())
		if err := admin.New(kr, opts).AddClient(ctx, "alice", []byte(pwAlice), "tests", admin.Match{UID: &uid}); err != nil {
			panic(err)
		}
		kr.Close()
	}
	d, err := daemon.New(cfg, daemon.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Serve(sctx); close(done) }()
	return cfg, func() { cancel(); <-done }
}

func unsealNow(t testing.TB) {
	if _, err := adm.Unseal(context.Background(), "alice", []byte(pwAlice)); err != nil && !errors.Is(err, errclass.Refused) {
		t.Fatal(err)
	}
}

func sealNow(t testing.TB) {
	if _, err := adm.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Example reads the secret once an admin has unsealed sealboxd. Here the
// daemon runs in the test process and is unsealed in the background.
func Example() {
	go func() {
		time.Sleep(100 * time.Millisecond)
		adm.Unseal(context.Background(), "alice", []byte(pwAlice))
	}()
	c := client.New("") // $SEALBOX_SOCKET, else /run/sealbox/sealbox.sock
	defer c.Close()
	secret, err := c.WaitSecret(context.Background(), time.Minute)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer clear(secret)
	fmt.Printf("read %d bytes of master secret\n", len(secret))
	// Output: read 21 bytes of master secret
}

// ExampleClient_WaitSecret bounds a wait with a context deadline, as a
// service that must be up within a minute would. The wait rides out a
// daemon that is not up yet or restarts; a refusal ends it at once. Here a
// second sealboxd starts, sealed, only after the wait began, and is unsealed
// then.
func ExampleClient_WaitSecret() {
	dir, _ := os.MkdirTemp("", "sbe")
	defer os.RemoveAll(dir)
	daemonDone := make(chan func())
	go func() {
		time.Sleep(200 * time.Millisecond)
		cfg, stop := startDaemon(dir)
		api.NewClient(cfg.AdminSocket).Unseal(context.Background(), "alice", []byte(pwAlice))
		daemonDone <- stop
	}()
	defer func() { (<-daemonDone)() }()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := client.New(filepath.Join(dir, "s.sock"))
	defer c.Close()
	secret, err := c.WaitSecret(ctx, time.Hour) // the context's minute ends it first
	switch {
	case errors.Is(err, client.ErrRefused):
		fmt.Println("register this program's user or unit with sealbox-admin client add:", err)
		return
	case errors.Is(err, client.ErrTimeout):
		// Also wraps ErrUnreachable if sealboxd was down when time ran out,
		// and context.DeadlineExceeded.
		fmt.Println("no unseal within the minute:", err)
		return
	case err != nil:
		fmt.Println("error:", err)
		return
	}
	defer clear(secret)
	fmt.Printf("read %d bytes of master secret\n", len(secret))
	// Output: read 21 bytes of master secret
}

// The tests below change the shared daemon's state: they do not run in
// parallel.

func TestSecretSealedAndUnsealed(t *testing.T) {
	sealNow(t)
	c := client.New("")
	defer c.Close()
	if c.Socket() != sock {
		t.Fatalf("socket %q, want $SEALBOX_SOCKET %q", c.Socket(), sock)
	}
	if _, err := c.Secret(context.Background()); !errors.Is(err, client.ErrSealed) {
		t.Fatalf("sealed: %v", err)
	}
	st, err := c.Status(context.Background())
	if err != nil || !st.Sealed || st.Client != "tests" {
		t.Fatalf("status %+v %v", st, err)
	}
	unsealNow(t)
	got, err := c.Secret(context.Background())
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unsealed: %q %v", got, err)
	}
}

func TestWaitTimesOutAcrossPolls(t *testing.T) {
	sealNow(t)
	c := client.New("")
	defer c.Close()
	start := time.Now()
	// Longer than the daemon's 2s max_wait: the client polls again.
	err := c.WaitUnsealed(context.Background(), 3*time.Second)
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if time.Since(start) < 3*time.Second {
		t.Fatalf("gave up after %v, before its timeout", time.Since(start))
	}
	if _, err := c.WaitSecret(context.Background(), 100*time.Millisecond); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("WaitSecret: %v", err)
	}
}

func TestWaitReturnsOnUnseal(t *testing.T) {
	sealNow(t)
	c := client.New("")
	defer c.Close()
	go func() {
		time.Sleep(200 * time.Millisecond)
		unsealNow(t)
	}()
	if err := c.WaitUnsealed(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
}

func TestUnreachable(t *testing.T) {
	c := client.New(filepath.Join(t.TempDir(), "none.sock"))
	defer c.Close()
	if _, err := c.Secret(context.Background()); !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := client.New("").Secret(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestRefusedWhenDisabled(t *testing.T) {
	unsealNow(t)
	ctx := context.Background()
	if err := adm.SetClientStatus(ctx, "alice", []byte(pwAlice), "tests", keyring.ClientDisabled); err != nil {
		t.Fatal(err)
	}
	defer adm.SetClientStatus(ctx, "alice", []byte(pwAlice), "tests", keyring.ClientActive)
	if _, err := client.New("").Secret(ctx); !errors.Is(err, client.ErrRefused) {
		t.Fatalf("got %v", err)
	}
}

// A wait started before the daemon is up, across its restart, returns the
// secret once the restarted daemon is unsealed.
func TestWaitSurvivesDaemonRestart(t *testing.T) {
	dir := t.TempDir()
	c := client.New(filepath.Join(dir, "s.sock")) // nothing there yet
	defer c.Close()
	var downs int
	c.OnUnreachable(func(error) { downs++ })
	type got struct {
		secret []byte
		err    error
	}
	res := make(chan got, 1)
	go func() {
		s, err := c.WaitSecret(context.Background(), time.Minute)
		res <- got{s, err}
	}()
	time.Sleep(300 * time.Millisecond)
	_, stop := startDaemon(dir) // up, sealed: the wait now long-polls it
	// The wait's pause between retries is at most a second: longer than
	// that, and it has reached the daemon.
	time.Sleep(1500 * time.Millisecond)
	stop() // a restart: the long poll's connection drops
	time.Sleep(300 * time.Millisecond)
	cfg, stop := startDaemon(dir)
	defer stop()
	select {
	case r := <-res:
		t.Fatalf("the wait ended before any unseal: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	a := api.NewClient(cfg.AdminSocket)
	if _, err := a.Unseal(context.Background(), "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || !bytes.Equal(r.secret, secret) {
		t.Fatalf("after the restart and unseal: %q, %v", r.secret, r.err)
	}
	if downs != 2 {
		t.Fatalf("OnUnreachable called %d times, want 2 (before start, during restart)", downs)
	}
}

// A wait on a daemon that never comes ends at its timeout, saying both.
func TestWaitOnAbsentDaemonTimesOut(t *testing.T) {
	c := client.New(filepath.Join(t.TempDir(), "none.sock"))
	defer c.Close()
	start := time.Now()
	err := c.WaitUnsealed(context.Background(), 400*time.Millisecond)
	if !errors.Is(err, client.ErrTimeout) || !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("got %v, want a timeout wrapping unreachable", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("gave up after %v, before its timeout", d)
	}
	// No wait: unreachable at once.
	if _, err := c.WaitSecret(context.Background(), 0); errors.Is(err, client.ErrTimeout) || !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("zero wait: %v", err)
	}
}

// A refusal (403: not an Active client) ends a wait at once: waiting does
// not register anyone.
func TestWaitRefusedIsNotRetried(t *testing.T) {
	sealNow(t)
	ctx := context.Background()
	if err := adm.SetClientStatus(ctx, "alice", []byte(pwAlice), "tests", keyring.ClientDisabled); err != nil {
		t.Fatal(err)
	}
	defer adm.SetClientStatus(ctx, "alice", []byte(pwAlice), "tests", keyring.ClientActive)
	c := client.New("")
	defer c.Close()
	c.OnUnreachable(func(err error) { t.Errorf("a refusal taken for an unreachable daemon: %v", err) })
	start := time.Now()
	if _, err := c.WaitSecret(ctx, time.Minute); !errors.Is(err, client.ErrRefused) || errors.Is(err, client.ErrTimeout) {
		t.Fatalf("WaitSecret: %v", err)
	}
	if err := c.WaitUnsealed(ctx, time.Minute); !errors.Is(err, client.ErrRefused) || errors.Is(err, client.ErrTimeout) {
		t.Fatalf("WaitUnsealed: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refused after %v: retried", d)
	}
}

// A context deadline bounds a wait like its own timeout: ErrTimeout, which
// also says the daemon was down and that the context's deadline passed.
func TestWaitEndsAtContextDeadline(t *testing.T) {
	c := client.New(filepath.Join(t.TempDir(), "none.sock"))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.WaitUnsealed(ctx, time.Hour)
	d := time.Since(start)
	for _, want := range []error{client.ErrTimeout, client.ErrUnreachable, context.DeadlineExceeded} {
		if !errors.Is(err, want) {
			t.Fatalf("got %v, want it to wrap %v", err, want)
		}
	}
	if d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("ended after %v, want the context's 300ms", d)
	}

	// The same on the running, sealed daemon, within one long poll.
	sealNow(t)
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := client.New("").WaitSecret(ctx, time.Hour); !errors.Is(err, client.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sealed daemon: %v", err)
	}
	// Cancelling is not a timeout.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := c.WaitUnsealed(ctx, time.Hour); !errors.Is(err, context.Canceled) || errors.Is(err, client.ErrTimeout) {
		t.Fatalf("cancelled: %v", err)
	}
}

// serveFake answers on a new socket with h, counting requests.
func serveFake(t *testing.T, h http.HandlerFunc) (sock string, requests *atomic.Int32) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	requests = new(atomic.Int32)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock, requests
}

// A daemon that answers a long poll at once (one shutting down, or with
// max_wait = 0) is polled with the same pauses as an unreachable one, not
// in a busy loop.
func TestWaitPacesQuickAnswers(t *testing.T) {
	sock, requests := serveFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"sealed":true,"client":"tests"}`)
	})
	c := client.New(sock)
	defer c.Close()
	err := c.WaitUnsealed(context.Background(), 1500*time.Millisecond)
	if !errors.Is(err, client.ErrTimeout) || errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("got %v, want a plain timeout", err)
	}
	// Pauses of 25-50, 50-100, ... 500-1000 ms: at most 7 polls in 1.5 s.
	if n := requests.Load(); n < 3 || n > 10 {
		t.Fatalf("%d polls in 1.5s", n)
	}
}

// A connection that breaks in the middle of an answer (a daemon killed
// while it answered) is retried like an unreachable daemon.
func TestWaitRetriesABrokenAnswer(t *testing.T) {
	var n atomic.Int32
	sock, _ := serveFake(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			conn, buf, _ := http.NewResponseController(w).Hijack()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\nclient pa")
			buf.Flush()
			conn.Close()
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(secret)))
		w.Write(secret)
	})
	c := client.New(sock)
	defer c.Close()
	var downs int
	c.OnUnreachable(func(error) { downs++ })
	got, err := c.WaitSecret(context.Background(), 10*time.Second)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("got %q, %v", got, err)
	}
	if downs != 1 {
		t.Fatalf("OnUnreachable called %d times for one outage", downs)
	}
	if _, err := client.New(sock).Secret(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A daemon that takes the request and never answers cannot hold a wait
// much past its end.
func TestWaitOnHungDaemonEnds(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hung.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	c := client.New(sock)
	defer c.Close()
	start := time.Now()
	err = c.WaitUnsealed(context.Background(), 300*time.Millisecond)
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("ended after %v", d)
	}
}

// A socket this user may not open is a setup error: not retried.
func TestWaitOnForbiddenSocketIsNotRetried(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root opens any socket")
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Chmod(sock, 0); err != nil {
		t.Fatal(err)
	}
	c := client.New(sock)
	defer c.Close()
	start := time.Now()
	err = c.WaitUnsealed(context.Background(), time.Minute)
	if !errors.Is(err, syscall.EACCES) || errors.Is(err, client.ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
}
