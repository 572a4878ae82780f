package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/client"
	"github.com/sealbox/sealbox/config"
	"github.com/sealbox/sealbox/daemon"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

const pwAlice = "alice's long passphrase"

var (
	secret = []byte("client package secret")
	adm    *daemon.AdminClient
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
		adm = daemon.NewAdminClient(cfg.AdminSocket)
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
	if _, err := adm.Unseal(context.Background(), "alice", []byte(pwAlice)); err != nil && !errors.Is(err, daemon.ErrRefused) {
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
	time.Sleep(300 * time.Millisecond)
	stop() // a restart: the long poll's connection drops
	time.Sleep(300 * time.Millisecond)
	cfg, stop := startDaemon(dir)
	defer stop()
	select {
	case r := <-res:
		t.Fatalf("the wait ended before any unseal: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	a := daemon.NewAdminClient(cfg.AdminSocket)
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
