package tang

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// rebind points a JWE made for one server at url, keeping the rest (the
// GCM tag no longer matches, which does not matter: these requests never
// get an answer).
func rebind(t *testing.T, jwe []byte, url string) []byte {
	return retag(t, jwe, func(h map[string]any) {
		h["clevis"].(map[string]any)["tang"].(map[string]any)["url"] = url
	})
}

// TestRefusedPort: nothing listens: ErrUnreachable at once, for Recover
// and Fetch.
func TestRefusedPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	jwe := rebind(t, bind(t, newFakeTang(t)), url)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err = Recover(ctx, Client(time.Second), jwe, make([]byte, len(secret)))
	took := time.Since(start)
	t.Logf("Recover, refused: %v after %v", err, took)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v", err)
	}
	if took > 900*time.Millisecond { // under the client's 1 s timeout: not waited out
		t.Fatalf("took %v", took)
	}
	if _, err := Fetch(ctx, Client(time.Second), url); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Fetch: %v", err)
	}
}

// hungListener accepts connections and never answers; it closes them at
// test end.
func hungListener(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// TestHungServer: a server that accepts and never answers costs the
// context's deadline (1 s), not more and not much less, and gives
// ErrUnreachable wrapping context.DeadlineExceeded. The dial timeout (5 s)
// does not matter: the connection is up.
func TestHungServer(t *testing.T) {
	t.Parallel()
	url := hungListener(t)
	jwe := rebind(t, bind(t, newFakeTang(t)), url)
	for _, op := range []string{"Recover", "Fetch"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			start := time.Now()
			var err error
			if op == "Recover" {
				err = Recover(ctx, Client(5*time.Second), jwe, make([]byte, len(secret)))
			} else {
				_, err = Fetch(ctx, Client(5*time.Second), url)
			}
			took := time.Since(start)
			t.Logf("%s, hung: gave up after %v", op, took)
			if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v", err)
			}
			if took < 900*time.Millisecond || took > 2500*time.Millisecond {
				t.Fatalf("gave up after %v, want 1 s", took)
			}
		})
	}
}

// TestHungBody: a server that sends headers and then stalls mid-body is
// cut off at the deadline too (the body read is under ctx).
func TestHungBody(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				c.Read(buf)
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/jwk+json\r\nContent-Length: 1000\r\n\r\n{\"kty\":"))
				<-done
			}()
		}
	}()
	jwe := rebind(t, bind(t, newFakeTang(t)), "http://"+l.Addr().String())
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	err = Recover(ctx, Client(time.Second), jwe, make([]byte, len(secret)))
	took := time.Since(start)
	t.Logf("Recover, stalled body: gave up after %v", took)
	if !errors.Is(err, ErrUnreachable) || took < 900*time.Millisecond || took > 2500*time.Millisecond {
		t.Fatalf("got %v after %v", err, took)
	}
	if strings.Contains(err.Error(), "kty") {
		t.Fatalf("error quotes the reply: %v", err)
	}
}
