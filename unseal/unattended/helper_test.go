package unattended

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/tpm2"
)

// serve runs ServeHelper on one end of a net.Pipe and returns what the
// other end reads back, and how long that took.
func serve(t *testing.T, cfg HelperConfig, request string) (HelperResponse, time.Duration) {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		if err := ServeHelper(t.Context(), cfg, b, b); err != nil {
			t.Errorf("ServeHelper: %v", err)
		}
	}()
	defer a.Close()
	start := time.Now()
	if request != "" {
		go io.WriteString(a, request)
	}
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, err := io.ReadAll(a)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("reading the answer: %v (%q)", err, out)
	}
	var resp HelperResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("answer %q: %v", out, err)
	}
	return resp, took
}

func TestHelperGivesUpOnASilentConnection(t *testing.T) {
	t.Parallel()
	resp, took := serve(t, HelperConfig{Kind: keyring.KindTang, RequestTimeout: 200 * time.Millisecond}, "")
	if resp.Code != "invalid" || !strings.Contains(resp.Error, "reading the request") {
		t.Fatalf("silent connection: %+v", resp)
	}
	if took < 150*time.Millisecond || took > 5*time.Second {
		t.Fatalf("silent connection answered after %v, want about 200ms", took)
	}
	// Half a request, never finished, is the same.
	resp, _ = serve(t, HelperConfig{Kind: keyring.KindTang, RequestTimeout: 200 * time.Millisecond}, `{"op":"open",`)
	if resp.Code != "invalid" || !strings.Contains(resp.Error, "reading the request") {
		t.Fatalf("half a request: %+v", resp)
	}
}

func TestHelperRefusesBadRequests(t *testing.T) {
	t.Parallel()
	cfg := HelperConfig{Kind: keyring.KindTang}
	for _, c := range []struct{ name, req, want string }{
		{"not JSON", "hello\n", "not JSON"},
		{"unknown field", `{"op":"open","kind":"tang","extra":1}` + "\n", "not JSON"},
		{"other kind", `{"op":"open","kind":"tpm2","binding":"AA==","timeout_ms":1000}` + "\n", "serves tang"},
		{"too long", `{"op":"open","kind":"tang","binding":"` + strings.Repeat("A", maxHelperMessage) + `"}` + "\n", "not JSON"},
	} {
		resp, _ := serve(t, cfg, c.req)
		if resp.Code != "invalid" || !strings.Contains(resp.Error, c.want) || resp.Key != nil {
			t.Errorf("%s: %+v", c.name, resp)
		}
	}
}

// A pipe has no deadline: the helper serves it as before (sealbox-admin
// run by hand, or a test, writes the request to its stdin).
func TestHelperServesAPipe(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.WriteString(`{"op":"open","kind":"tpm2","binding":"AA==","timeout_ms":1000}` + "\n")
	w.Close()
	var out bytes.Buffer
	if err := ServeHelper(t.Context(), HelperConfig{Kind: keyring.KindTang}, r, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "serves tang") {
		t.Fatalf("pipe: %s", out.String())
	}
}

// A failure's reason is its kind, not its text: what a server says can
// change at every try without making a new record.
func TestReasonIsTheKindNotTheText(t *testing.T) {
	t.Parallel()
	a := Result{Err: fmt.Errorf("%w: 503 try 1 AAAA", tang.ErrUnreachable)}
	b := Result{Err: fmt.Errorf("%w: 503 try 2 BBBB", tang.ErrUnreachable)}
	c := Result{Err: fmt.Errorf("%w: 404", tang.ErrKeyGone)}
	if a.Reason() != b.Reason() || a.Reason() == c.Reason() {
		t.Fatalf("reasons: %q %q %q", a.Reason(), b.Reason(), c.Reason())
	}
	th := func(errs ...error) Result {
		r := Result{Err: fmt.Errorf("%w: x", ErrThreshold)}
		for _, e := range errs {
			r.Members = append(r.Members, Result{Err: e})
		}
		return r
	}
	if th(a.Err, nil).Reason() != th(b.Err, nil).Reason() || th(a.Err, nil).Reason() == th(nil, a.Err).Reason() {
		t.Fatal("a threshold's reason must follow its members' kinds, not their texts")
	}
	long := fmt.Errorf("%w: %s", tang.ErrRefused, strings.Repeat("é", 1000))
	if s := Brief(long); len(s) > maxHelperError+len("…") || !utf8.ValidString(s) {
		t.Fatalf("brief: %d bytes", len(s))
	}
}

// fakeHelper listens on dir/name as a helper of its own would, and answers
// each connection with answer (given the request).
func fakeHelper(t *testing.T, dir, name string, answer func(c net.Conn, req *HelperRequest)) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var req HelperRequest
				line, _ := bufio.NewReader(c).ReadBytes('\n')
				json.Unmarshal(line, &req)
				answer(c, &req)
			}()
		}
	}()
}

// A broken or compromised helper cannot make sealboxd keep a binding to
// PCRs it did not ask for (a reseal, a rekey --keep-unattended), nor make a
// Tang failure permanent with a TPM's code (the fourth review).
func TestHelperAnswersAreChecked(t *testing.T) {
	t.Parallel()
	tpm := fleettest.StartSWTPM(t)
	cfg := tpm2.Config{TCTI: tpm.TCTI()}
	dir := t.TempDir()
	fakeHelper(t, dir, TPM2Socket, func(c net.Conn, req *HelperRequest) {
		switch req.Op {
		case "drifted":
			json.NewEncoder(c).Encode(HelperResponse{Drifted: true})
		case "seal": // to PCR 16, the debug PCR anyone with the TPM resets
			b, err := tpm2.Seal(context.Background(), cfg, req.Plaintext, []int{16})
			if err != nil {
				json.NewEncoder(c).Encode(HelperResponse{Code: "tpm2-unavailable", Error: err.Error()})
				return
			}
			json.NewEncoder(c).Encode(HelperResponse{Binding: b})
		}
	})
	fakeHelper(t, dir, TangSocket, func(c net.Conn, req *HelperRequest) {
		json.NewEncoder(c).Encode(HelperResponse{Code: "tpm2-policy", Error: "PCRs differ"})
	})
	orig, err := NewTPM2(t.Context(), &Env{Timeout: 10 * time.Second, TPM: cfg}, newKEK(t), []int{7})
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Timeout: 10 * time.Second, HelperDir: dir}
	if b, err := Remake(t.Context(), env, keyring.KindTPM2, orig, newKEK(t)); err == nil || !errors.Is(err, ErrHelper) {
		t.Fatalf("a reseal to PCRs the helper chose: %v (%s)", err, Describe(keyring.KindTPM2, b))
	}
	r := Open(t.Context(), env, keyring.KindTang, []byte("x"), make([]byte, KeySize))
	if r.Err == nil || !Transient(r.Err) || errors.Is(r.Err, tpm2.ErrPolicy) {
		t.Fatalf("a Tang helper answering a TPM's code: %v (transient %v)", r.Err, Transient(r.Err))
	}
}
