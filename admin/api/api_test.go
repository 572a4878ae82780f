package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/keyring"
)

// serve answers on a Unix socket in a temporary directory with h and
// returns a client for it. (The real daemon is tested against this client in
// package daemon and the end-to-end tests; here only the client's side.)
func serve(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := NewClient(sock)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestErrorAnswersKeepTheirClass(t *testing.T) {
	for _, c := range []struct {
		status int
		body   string
		class  errclass.Class
	}{
		{401, `{"code":"auth","error":"wrong admin name or password"}`, errclass.Auth},
		{409, `{"code":"refused","error":"refusing to remove the last admin"}`, errclass.Refused},
		{503, `{"code":"sealed","error":"sealed"}`, errclass.Sealed},
		{500, `not json`, errclass.Internal},
		{418, `{"code":"something new","error":"x"}`, errclass.Internal},
	} {
		cl := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(c.status)
			io.WriteString(w, c.body)
		})
		_, err := cl.Status(context.Background())
		if errclass.Of(err) != c.class {
			t.Errorf("%d %s: class %q, want %q (%v)", c.status, c.body, errclass.Of(err), c.class, err)
		}
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != c.status || ae.Message == "" {
			t.Errorf("%d %s: %#v", c.status, c.body, err)
		}
	}
}

func TestBackoffCarriesRetryAfter(t *testing.T) {
	cl := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"code":"busy","error":"too many failed attempts","retry_after":8}`)
	})
	_, err := cl.Unseal(context.Background(), "alice", []byte("pw"))
	var be *admin.BackoffError
	if !errors.As(err, &be) || be.RetryAfter.Seconds() != 8 || !errors.Is(err, errclass.Busy) {
		t.Fatalf("got %v", err)
	}
}

func TestUnreachableAndBadNames(t *testing.T) {
	cl := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	defer cl.Close()
	if _, err := cl.Status(context.Background()); !errors.Is(err, errclass.Unavailable) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("no daemon: %v", err)
	}
	// A name is checked before it becomes part of a path: nothing is sent.
	asked := false
	cl = serve(t, func(w http.ResponseWriter, r *http.Request) { asked = true })
	for _, name := range []string{"../x", "a/b", "", "UPPER"} {
		if err := cl.RemoveAdmin(context.Background(), "alice", []byte("pw"), name); !errors.Is(err, errclass.Invalid) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	if err := cl.SetClientStatus(context.Background(), "alice", []byte("pw"), "web", keyring.ClientStatus(99)); !errors.Is(err, errclass.Invalid) {
		t.Errorf("status 99: %v", err)
	}
	if asked {
		t.Error("a request reached the daemon")
	}
}

func TestRequestsSendWhatTheDaemonReads(t *testing.T) {
	var got string
	cl := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = r.Method + " " + r.URL.Path + " " + string(b)
		io.WriteString(w, `{"ok":true}`)
	})
	if err := cl.SetClientStatus(context.Background(), "alice", []byte("pw"), "web", keyring.ClientRetired); err != nil {
		t.Fatal(err)
	}
	if want := `POST /v1/clients/web/remove {"actor":"alice","actor_password":"cHc="}`; got != want {
		t.Errorf("sent %s, want %s", got, want)
	}
}

func TestClientVerbsRoundTrip(t *testing.T) {
	for _, st := range []keyring.ClientStatus{keyring.ClientActive, keyring.ClientDisabled, keyring.ClientRetired} {
		verb, ok := ClientVerb(st)
		if back, ok2 := ClientStatusOf(verb); !ok || !ok2 || back != st {
			t.Errorf("%v -> %q -> %v", st, verb, back)
		}
	}
	if _, ok := ClientStatusOf("delete"); ok {
		t.Error("an unknown verb maps to a status")
	}
}

func TestSecretsNameEveryPasswordAndCode(t *testing.T) {
	pw := func(s string) []byte { return []byte(s) }
	for _, c := range []struct {
		req  interface{ Secrets() [][]byte }
		want string
	}{
		{&UnsealRequest{Password: pw("a")}, "a"},
		{&AuthRequest{ActorPassword: pw("a")}, "a"},
		{&AddAdminRequest{AuthRequest: AuthRequest{ActorPassword: pw("a")}, Password: pw("b")}, "a b"},
		{&PasswdRequest{Current: pw("a"), New: pw("b")}, "a b"},
		{&EnrollRequest{Code: pw("a"), Password: pw("b")}, "a b"},
		{&RotateRequest{AuthRequest: AuthRequest{ActorPassword: pw("a")}, Secret: pw("b")}, "a b"},
		{&RekeyRequest{AuthRequest: AuthRequest{ActorPassword: pw("a")}}, "a"},
		{&InviteRequest{AuthRequest: AuthRequest{ActorPassword: pw("a")}}, "a"},
		{&CheckRequest{AuthRequest: AuthRequest{ActorPassword: pw("a")}}, "a"},
		{&AddClientRequest{AuthRequest: AuthRequest{ActorPassword: pw("a")}}, "a"},
	} {
		var got []string
		for _, s := range c.req.Secrets() {
			got = append(got, string(s))
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%T: %q, want %q", c.req, got, c.want)
		}
	}
}
