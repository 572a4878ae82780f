package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/config"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

var cheap = keyring.Params{Time: 1, MemoryKiB: 64, Threads: 1}

// Tests that bind sockets do not run in parallel: listenUnix sets the
// process-wide umask for the moment of bind, which would leak into files
// that parallel tests create at that moment (sealboxd binds only at start).

func TestMain(m *testing.M) {
	unseal.UseTestFloor(cheap)
	os.Exit(m.Run())
}

const pwAlice = "alice's long passphrase"

var secret = []byte("in-process secret \x00\x01\x02")

// shortDir returns a temporary directory with a path short enough for
// sockets (sun_path is 108 bytes).
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// startDaemon makes a keyring whose only client is this process's uid and
// runs a Daemon on it until the test ends.
func startDaemon(t *testing.T) (*Daemon, *api.Client, *http.Client) {
	t.Helper()
	return startDaemonTB(t, t)
}

func startDaemonTB(t testing.TB, _ *testing.T) (*Daemon, *api.Client, *http.Client) {
	t.Helper()
	dir := shortDir(t)
	p := cheap
	opts := admin.Options{Policy: &p, Memory: memlock.Options{AllowUnlocked: true}}
	kpath := filepath.Join(dir, "k.db")
	if err := admin.Init(context.Background(), kpath, "alice", []byte(pwAlice), secret, opts); err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Open(kpath, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.New(kr, opts).AddClient(context.Background(), "alice", []byte(pwAlice), "me", admin.Match{UID: ptr(uint32(os.Getuid()))}); err != nil {
		t.Fatal(err)
	}
	kr.Close()
	cfg := config.Default()
	cfg.Keyring, cfg.Socket, cfg.AdminSocket = kpath, filepath.Join(dir, "s.sock"), filepath.Join(dir, "a.sock")
	cfg.MaxWait = 10 * time.Second
	d, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	ac := api.NewClient(cfg.AdminSocket)
	t.Cleanup(func() { ac.Close() })
	return d, ac, unixHTTP(cfg.Socket)
}

func unixHTTP(path string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 4,
	}}
}

func get(t *testing.T, c *http.Client, path string) (int, []byte) {
	t.Helper()
	resp, err := c.Get("http://sealbox" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestSealedUnsealedStateMachine(t *testing.T) {
	_, ac, svc := startDaemon(t)
	if code, _ := get(t, svc, "/v1/secret"); code != 503 {
		t.Fatalf("sealed: %d", code)
	}
	if _, err := ac.Unseal(context.Background(), "alice", []byte("wrong password!")); !errors.Is(err, errclass.Auth) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := ac.Unseal(context.Background(), "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, svc, "/v1/secret")
	if code != 200 || !bytes.Equal(body, secret) {
		t.Fatalf("unsealed: %d %q", code, body)
	}
	// Unsealing an unsealed daemon succeeds at once, without a derivation.
	before, _ := unseal.Work()
	if st, err := ac.Unseal(context.Background(), "alice", []byte("not even the password")); err != nil || !st.AlreadyUnsealed || st.Sealed {
		t.Fatalf("second unseal: %+v %v", st, err)
	}
	if after, _ := unseal.Work(); after != before {
		t.Fatalf("an unseal of an unsealed daemon derived a key (%d derivations)", after-before)
	}
	st, err := ac.Seal(context.Background())
	if err != nil || !st.Sealed {
		t.Fatalf("seal: %+v %v", st, err)
	}
	if code, _ := get(t, svc, "/v1/secret"); code != 503 {
		t.Fatalf("after seal: %d", code)
	}
	// The client's own status view.
	code, body = get(t, svc, "/v1/status")
	if code != 200 || !strings.Contains(string(body), `"sealed":true`) || !strings.Contains(string(body), `"client":"me"`) {
		t.Fatalf("service status: %d %s", code, body)
	}
}

// Reads racing seal and unseal see the whole secret, or 503: never a partial
// or freed buffer. The race detector watches the vault's locking.
func TestConcurrentReadsDuringSealUnseal(t *testing.T) {
	_, ac, svc := startDaemon(t)
	stop := make(chan struct{})
	var served, sealed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := svc.Get("http://sealbox/v1/secret")
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200 && bytes.Equal(b, secret):
					served.Add(1)
				case resp.StatusCode == 503:
					sealed.Add(1)
				default:
					t.Errorf("read during seal/unseal: %d %q", resp.StatusCode, b)
					return
				}
			}
		}()
	}
	for i := 0; i < 10; i++ {
		if _, err := ac.Unseal(context.Background(), "alice", []byte(pwAlice)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		if _, err := ac.Seal(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if served.Load() == 0 || sealed.Load() == 0 {
		t.Fatalf("served %d, sealed %d: the reads did not overlap both states", served.Load(), sealed.Load())
	}
	t.Logf("%d served, %d sealed, 0 wrong", served.Load(), sealed.Load())
}

func TestWaitWakesOnUnseal(t *testing.T) {
	_, ac, svc := startDaemon(t)
	type res struct {
		code int
		body []byte
		err  error
	}
	c := make(chan res, 1)
	go func() {
		resp, err := svc.Get("http://sealbox/v1/secret?wait=60s") // capped to max_wait 10s
		if err != nil {
			c <- res{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c <- res{resp.StatusCode, b, nil}
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if _, err := ac.Unseal(context.Background(), "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	r := <-c
	if r.err != nil || r.code != 200 || !bytes.Equal(r.body, secret) {
		t.Fatalf("long poll: %+v", r)
	}
	if time.Since(start) >= 10*time.Second {
		t.Fatal("long poll waited for its timeout, not the unseal")
	}
}

func TestChangesUpdateTheClientIndex(t *testing.T) {
	_, ac, svc := startDaemon(t)
	if _, err := ac.Unseal(context.Background(), "alice", []byte(pwAlice)); err != nil {
		t.Fatal(err)
	}
	if err := ac.SetClientStatus(context.Background(), "alice", []byte(pwAlice), "me", keyring.ClientDisabled); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, svc, "/v1/secret"); code != 403 {
		t.Fatalf("disabled: %d", code)
	}
	if err := ac.SetClientStatus(context.Background(), "alice", []byte("wrong password!"), "me", keyring.ClientActive); !errors.Is(err, errclass.Auth) {
		t.Fatalf("wrong actor password: %v", err)
	}
	if code, _ := get(t, svc, "/v1/secret"); code != 403 {
		t.Fatalf("a refused enable took effect: %d", code)
	}
	if err := ac.SetClientStatus(context.Background(), "alice", []byte(pwAlice), "me", keyring.ClientActive); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, svc, "/v1/secret"); code != 200 {
		t.Fatalf("re-enabled: %d", code)
	}
	if err := ac.RemoveAdmin(context.Background(), "alice", []byte(pwAlice), "alice"); !errors.Is(err, errclass.Refused) || !strings.Contains(err.Error(), "last admin") {
		t.Fatalf("last admin over the socket: %v", err)
	}
	if err := ac.RemoveAdmin(context.Background(), "alice", []byte(pwAlice), "../x"); !errors.Is(err, errclass.Invalid) {
		t.Fatalf("path trick in a name: %v", err)
	}
}

func TestListenUnixModesAndStaleSockets(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "sub", "x.sock")
	for _, mode := range []os.FileMode{0o600, 0o666} {
		l, err := listenUnix(path, mode)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Lstat(path)
		if st.Mode().Perm() != mode {
			t.Errorf("mode %v, want %v", st.Mode().Perm(), mode)
		}
		// A live listener is never replaced.
		if _, err := listenUnix(path, mode); err == nil || !strings.Contains(err.Error(), "another process is listening") {
			t.Errorf("second listen: %v", err)
		}
		// A stale one (its owner gone without unlinking) is.
		l.SetUnlinkOnClose(false)
		l.Close()
		l2, err := listenUnix(path, mode)
		if err != nil {
			t.Fatalf("stale socket: %v", err)
		}
		l2.Close()
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("data"), 0o600)
	if _, err := listenUnix(file, 0o600); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
}

func TestPeerCredentialsAndConnectionLimit(t *testing.T) {
	dir := shortDir(t)
	ul, err := listenUnix(filepath.Join(dir, "p.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	pl := newPeerListener(ul, 2, nil)
	defer pl.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("unix", ul.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	first := <-accepted
	<-accepted
	pc := first.(*peerConn)
	if pc.cred.UID != uint32(os.Getuid()) || pc.cred.GID != uint32(os.Getgid()) || pc.cred.PID != int32(os.Getpid()) {
		t.Fatalf("cred %+v, want uid %d gid %d pid %d", pc.cred, os.Getuid(), os.Getgid(), os.Getpid())
	}
	// A third one is over the limit: accepted and closed at once.
	third := dial()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection past the limit was kept")
	}
	if n := pl.turnedAway.Load(); n != 1 {
		t.Fatalf("turned away %d, want 1", n)
	}
	// Closing one frees its place.
	first.Close()
	dial()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("closing a connection did not free a place")
	}
}

func TestStrangersCappedPerUIDAndClientsKeepAReserve(t *testing.T) {
	t.Parallel()
	l := &peerListener{limits: limitsFor(16), perUID: map[uint32]int{}}
	for i := 0; i < 4; i++ {
		if !l.admit(1000, false) {
			t.Fatalf("stranger connection %d refused", i)
		}
	}
	if l.admit(1000, false) {
		t.Fatal("a fifth connection from one stranger uid admitted")
	}
	// Strangers of many uids fill what is not reserved...
	for uid := uint32(2000); l.admit(uid, false); uid++ {
	}
	if l.strangers != 16-4 {
		t.Fatalf("%d stranger connections, want %d", l.strangers, 12)
	}
	// ...and registered clients still get the reserve.
	for i := 0; i < 4; i++ {
		if !l.admit(33, true) {
			t.Fatalf("client connection %d refused with the reserve free", i)
		}
	}
	if l.admit(33, true) {
		t.Fatal("admitted past the total")
	}
	l.leave(1000, false)
	if !l.admit(33, true) {
		t.Fatal("a freed place not given to a client")
	}
}

func TestVaultMatch(t *testing.T) {
	t.Parallel()
	v := newVault()
	v.setClients([]*keyring.Client{
		{Name: "any-gid", UID: 10, HasUID: true, Status: keyring.ClientActive},
		{Name: "gid-20", UID: 11, HasUID: true, GID: 20, HasGID: true, Status: keyring.ClientActive},
		{Name: "off", UID: 12, HasUID: true, Status: keyring.ClientDisabled},
		{Name: "gone", UID: 13, HasUID: true, Status: keyring.ClientRetired},
		{Name: "a-off", UID: 14, HasUID: true, GID: 1, HasGID: true, Status: keyring.ClientDisabled},
		{Name: "b-on", UID: 14, HasUID: true, Status: keyring.ClientActive},
		{Name: "web", Unit: "web.service", Status: keyring.ClientActive},
		{Name: "web-as-15", Unit: "web.service", UID: 15, HasUID: true, Status: keyring.ClientDisabled},
		{Name: "uid-15", UID: 15, HasUID: true, Status: keyring.ClientActive},
	})
	cases := []struct {
		cred PeerCred
		name string
		ok   bool
	}{
		{PeerCred{UID: 10, GID: 99}, "any-gid", true},
		{PeerCred{UID: 11, GID: 20}, "gid-20", true},
		{PeerCred{UID: 11, GID: 21}, "", false},
		{PeerCred{UID: 12}, "off", false},
		{PeerCred{UID: 13}, "", false}, // a retired client matches no one
		{PeerCred{UID: 0}, "", false},
		// The most specific match decides; a disabled one is not stood in
		// for by a less specific active one.
		{PeerCred{UID: 14, GID: 1}, "a-off", false},
		{PeerCred{UID: 14, GID: 2}, "b-on", true},
		{PeerCred{UID: 99, Unit: "web.service"}, "web", true},
		{PeerCred{UID: 15, Unit: "web.service"}, "web-as-15", false},
		{PeerCred{UID: 15, Unit: "other.service"}, "uid-15", true},
		{PeerCred{UID: 15}, "uid-15", true},
		{PeerCred{UID: 99, Unit: "db.service"}, "", false},
	}
	for _, c := range cases {
		c.cred.UnitKnown = true
		got, ok := v.match(c.cred)
		name := ""
		if got != nil {
			name = got.Name
		}
		if ok != c.ok || name != c.name {
			t.Errorf("%+v: got %q %v, want %q %v", c.cred, name, ok, c.name, c.ok)
		}
	}
	if v.total != 9 || v.active != 5 {
		t.Errorf("counts %d/%d", v.total, v.active)
	}
	// Where the unit could not be attested (a kernel without pidfds), a
	// uid that a client by unit could be is refused rather than matched
	// by a broader client; with "web" taking any uid, that is every uid.
	for _, cred := range []PeerCred{{UID: 15}, {UID: 10, GID: 99}} {
		if c, ok := v.match(cred); ok {
			t.Errorf("unit unknown, %+v matched %s", cred, c.Name)
		}
	}
	v.setClients([]*keyring.Client{
		{Name: "any-gid", UID: 10, HasUID: true, Status: keyring.ClientActive},
		{Name: "web-as-15", Unit: "web.service", UID: 15, HasUID: true, Status: keyring.ClientDisabled},
		{Name: "uid-15", UID: 15, HasUID: true, Status: keyring.ClientActive},
	})
	if _, ok := v.match(PeerCred{UID: 15}); ok {
		t.Error("unit unknown, uid 15 (bound to a client by unit) matched")
	}
	if c, ok := v.match(PeerCred{UID: 10}); !ok || c.Name != "any-gid" {
		t.Error("unit unknown, uid 10 (no client by unit) refused")
	}
}

func TestErrorForMapsInOnePlace(t *testing.T) {
	t.Parallel()
	cases := map[error]int{
		unseal.ErrWrongPassword:                        401,
		fmt.Errorf("x: %w", keyring.ErrNoSlot):         404,
		admin.ErrLastAdmin:                             409,
		fmt.Errorf("%w: short", admin.ErrWeakPassword): 400,
		fmt.Errorf("%w: bad", unseal.ErrIntegrity):     500,
		fmt.Errorf("%w: no", memlock.ErrLockFailed):    500,
		fmt.Errorf("%w: queue", api.ErrBusy):           503,
		errors.New("something else"):                   500,
		badRequest("bad"):                              400,
	}
	for err, want := range cases {
		e := errorFor(err)
		if e.Status != want {
			t.Errorf("%v: %d, want %d", err, e.Status, want)
		}
		// And back: the client's error unwraps to a sentinel.
		back := &api.APIError{Status: e.Status, Code: e.Code, Message: e.Message}
		if errclass.Of(back) != errclass.Of(err) {
			t.Errorf("%v: class %q on the wire, %q here", err, errclass.Of(back), errclass.Of(err))
		}
	}
}

func TestNotify(t *testing.T) {
	dir := shortDir(t)
	addr := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", addr)
	if err := Notify("READY=1\nSTATUS=sealed"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=sealed" {
		t.Fatalf("got %q %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Fatalf("no socket set: %v", err)
	}
}

func TestMalformedRequestsDoNotEchoTheirInput(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"admin":"alice","password":"c2VjcmV0IHBhc3N3b3Jk!!"}`,
		`{"admin":"alice","password":SECRETPW}`,
		`{"admin":"alice","password":["SECRETPW"]}`,
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		var req api.UnsealRequest
		err := readJSON(r, &req)
		if err == nil || strings.Contains(err.Error(), "SECRETPW") || strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "!!") {
			t.Errorf("%s: %v", body, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
