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
	"slices"
	"strings"
	"time"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/tpm2"
)

// Helpers. sealboxd's own unit has no network and no devices; the work
// that needs them runs in small socket-activated units of their own
// (sealbox-tang@.service: network to the Tang servers only; sealbox-tpm2@
// .service: the TPM device only, no network). sealboxd connects to their
// sockets (HelperSocket), sends one request and reads one answer per
// connection; each connection is a fresh helper process (inetd style:
// its stdin and stdout are the connection). A helper never sees the keyring
// or the admin socket: it turns a binding into the key it yields, seals a
// key to the TPM, or says whether the PCRs changed.
//
// The wire format is one JSON object each way, at most maxHelperMessage
// bytes: HelperRequest, then HelperResponse.

// Helper socket names, in the helper directory (config unattended_helpers).
const (
	TangSocket = "tang.sock"
	TPM2Socket = "tpm2.sock"
)

const (
	maxHelperMessage = 1 << 20
	// maxHelperTimeout caps what a request may ask a helper to wait.
	maxHelperTimeout = 5 * time.Minute
	// DefaultRequestTimeout bounds how long a helper waits for its request
	// on a connection that can have a deadline (a socket): sealboxd sends
	// it as soon as it connects, so a connection that sends nothing is not
	// sealboxd's and must not hold a helper process.
	DefaultRequestTimeout = 10 * time.Second
)

// ErrHelper: the helper could not be reached or answered nonsense; worth
// retrying.
var ErrHelper = errclass.New(errclass.Unavailable, "the unattended helper did not answer")

// HelperRequest is what sealboxd asks a helper.
type HelperRequest struct {
	Op      string `json:"op"`   // open, seal (tpm2), drifted (tpm2)
	Kind    string `json:"kind"` // tang, tpm2
	Binding []byte `json:"binding,omitempty"`
	// Plaintext and PCRs are a seal's.
	Plaintext []byte `json:"plaintext,omitempty"`
	PCRs      []int  `json:"pcrs,omitempty"`
	// TimeoutMS bounds the whole operation; DialTimeoutMS a TCP connect.
	TimeoutMS     int64 `json:"timeout_ms"`
	DialTimeoutMS int64 `json:"dial_timeout_ms,omitempty"`
}

// HelperResponse is a helper's answer: Key for open, Binding for seal,
// Drifted for drifted, or Code and Error.
type HelperResponse struct {
	Key     []byte `json:"key,omitempty"`
	Binding []byte `json:"binding,omitempty"`
	Drifted bool   `json:"drifted,omitempty"`
	Code    string `json:"code,omitempty"`
	Error   string `json:"error,omitempty"`
}

// codes name the errors that cross the socket, so that the daemon sorts a
// helper's failure exactly as its own (Transient, status, audit).
var codes = []struct {
	code string
	err  error
}{
	{"tang-unreachable", tang.ErrUnreachable},
	{"tang-key-gone", tang.ErrKeyGone},
	{"tang-refused", tang.ErrRefused},
	{"tang-bad-jwe", tang.ErrBadJWE},
	{"tpm2-policy", tpm2.ErrPolicy},
	{"tpm2-unavailable", tpm2.ErrUnavailable},
	{"tpm2-binding", tpm2.ErrBinding},
	{"tpm2-format", tpm2.ErrFormat},
	{"invalid", ErrBinding},
}

func codeOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "tang-unreachable"
	}
	return "invalid"
}

// Reason names the kind of a failed attempt (tang-unreachable,
// tang-key-gone, tpm2-policy, ...; for a threshold, its outcome and each
// member's): sealboxd records a failure again when its reason changes. The
// text of an error is no such key: it can carry what a server, or anyone on
// a plain-HTTP path, chose to say, and change at every try.
func (r Result) Reason() string {
	var b strings.Builder
	switch {
	case r.Err == nil:
		b.WriteString("ok")
	case errors.Is(r.Err, errPermanent):
		b.WriteString("threshold-permanent")
	case errors.Is(r.Err, errAnswered):
		b.WriteString("threshold-answered")
	case errors.Is(r.Err, ErrThreshold):
		b.WriteString("threshold-short")
	case errors.Is(r.Err, ErrHelper):
		b.WriteString("helper")
	default:
		b.WriteString(codeOf(r.Err))
	}
	for _, m := range r.Members {
		b.WriteString(" " + m.Reason())
	}
	return b.String()
}

// Brief is an error's text as sealboxd keeps it (status, log, audit
// record): at most maxHelperError bytes, on a UTF-8 boundary.
func Brief(err error) string { return brief(err.Error()) }

func brief(msg string) string {
	if len(msg) > maxHelperError {
		msg = strings.ToValidUTF8(msg[:maxHelperError], "") + "…"
	}
	return msg
}

// maxHelperError bounds the text of a helper's error that sealboxd keeps
// (status, log, audit record): a helper that sends a new megabyte at every
// retry must not grow the audit log by that much.
const maxHelperError = 300

func errOf(code, msg string) error {
	msg = brief(msg)
	for _, c := range codes {
		if c.code == code {
			return fmt.Errorf("%w (in the helper: %s)", c.err, msg)
		}
	}
	return fmt.Errorf("%w: unknown error code %q: %s", ErrHelper, brief(code), msg)
}

// HelperSocket returns the socket of kind's helper in dir, if it exists:
// then sealboxd uses it instead of doing the work itself.
func HelperSocket(dir string, kind keyring.SlotKind) string {
	if dir == "" {
		return ""
	}
	name := TangSocket
	if kind == keyring.KindTPM2 {
		name = TPM2Socket
	}
	p := filepath.Join(dir, name)
	if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeSocket != 0 {
		return p
	}
	return ""
}

// ask sends one request to the helper at path and reads its answer, all
// within ctx.
func ask(ctx context.Context, path string, req *HelperRequest, resp *HelperResponse) error {
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(1, time.Until(dl).Milliseconds())
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrHelper, path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	var werr error
	memlock.Do(func() {
		b, err := json.Marshal(req)
		if err != nil {
			werr = err
			return
		}
		_, werr = c.Write(append(b, '\n'))
		clear(b)
	})
	if werr != nil {
		return fmt.Errorf("%w: %s: %v", ErrHelper, path, werr)
	}
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	var rerr error
	memlock.Do(func() {
		b, err := io.ReadAll(io.LimitReader(c, maxHelperMessage+1))
		defer clear(b)
		switch {
		case ctx.Err() != nil:
			rerr = fmt.Errorf("%w: %s: %w", ErrHelper, path, ctx.Err())
		case err != nil:
			rerr = fmt.Errorf("%w: %s: %v", ErrHelper, path, err)
		case len(b) > maxHelperMessage:
			rerr = fmt.Errorf("%w: %s: answer too long", ErrHelper, path)
		default:
			if err := json.Unmarshal(b, resp); err != nil {
				rerr = fmt.Errorf("%w: %s: the answer is not JSON", ErrHelper, path)
			}
		}
	})
	if rerr != nil {
		return rerr
	}
	if resp.Code != "" {
		clear(resp.Key)
		// A helper answers for its own kind: a Tang helper that answers
		// with a TPM's code (or the reverse) is broken, and its word must
		// not make a failure permanent.
		if k, _, _ := strings.Cut(resp.Code, "-"); (k == "tang" || k == "tpm2") && k != req.Kind {
			return fmt.Errorf("%w: %s: a %s code (%s) for a %s request", ErrHelper, path, k, brief(resp.Code), req.Kind)
		}
		return errOf(resp.Code, resp.Error)
	}
	return nil
}

// helperOpen asks the helper at path for a binding's key, into dst.
func helperOpen(ctx context.Context, path string, kind keyring.SlotKind, binding, dst []byte, dial time.Duration) error {
	var resp HelperResponse
	req := &HelperRequest{Op: "open", Kind: kind.String(), Binding: binding, DialTimeoutMS: dial.Milliseconds()}
	if err := ask(ctx, path, req, &resp); err != nil {
		return err
	}
	defer clear(resp.Key)
	if len(resp.Key) != len(dst) {
		return fmt.Errorf("%w: the helper gave %d bytes, want %d", ErrHelper, len(resp.Key), len(dst))
	}
	copy(dst, resp.Key)
	return nil
}

// HelperConfig is what a helper process knows of its own: its kind (it
// refuses the other's requests) and, for tpm2, how it reaches the TPM.
type HelperConfig struct {
	Kind keyring.SlotKind
	TPM  tpm2.Config
	// RequestTimeout bounds the wait for the request when r can have a
	// read deadline; 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// ServeHelper reads one request from r, does it, and writes the answer to
// w: the whole of a helper process's work.
func ServeHelper(ctx context.Context, cfg HelperConfig, r io.Reader, w io.Writer) error {
	var resp HelperResponse
	var err error
	memlock.Do(func() { err = serveHelper(ctx, cfg, r, &resp) })
	if err != nil {
		resp = HelperResponse{Code: codeOf(err), Error: err.Error()}
	}
	var b []byte
	var merr error
	memlock.Do(func() {
		b, merr = json.Marshal(&resp)
		clear(resp.Key)
	})
	if merr != nil {
		return merr
	}
	_, err = w.Write(append(b, '\n'))
	clear(b)
	return err
}

func serveHelper(ctx context.Context, cfg HelperConfig, r io.Reader, resp *HelperResponse) error {
	// A pipe (an *os.File not in the poller) has no deadline: nothing to
	// bound there, its writer is whoever started this process.
	if d, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		wait := cfg.RequestTimeout
		if wait <= 0 {
			wait = DefaultRequestTimeout
		}
		if err := d.SetReadDeadline(time.Now().Add(wait)); err != nil && !errors.Is(err, os.ErrNoDeadline) {
			return fmt.Errorf("%w: setting the request's deadline: %v", ErrBinding, err)
		}
	}
	br := bufio.NewReader(io.LimitReader(r, maxHelperMessage))
	line, err := br.ReadBytes('\n')
	defer clear(line)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: reading the request: %v", ErrBinding, err)
	}
	var req HelperRequest
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("%w: the request is not JSON", ErrBinding)
	}
	defer clear(req.Plaintext)
	if req.Kind != cfg.Kind.String() {
		return fmt.Errorf("%w: this helper serves %s, not %q", ErrBinding, cfg.Kind, req.Kind)
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 || timeout > maxHelperTimeout {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	env := &Env{TPM: cfg.TPM, Timeout: timeout, DialTimeout: time.Duration(req.DialTimeoutMS) * time.Millisecond}
	switch req.Op {
	case "open":
		key := make([]byte, KeySize)
		if err := openLocal(ctx, env, cfg.Kind, req.Binding, key); err != nil {
			clear(key)
			return err
		}
		resp.Key = key
		return nil
	case "seal":
		if cfg.Kind != keyring.KindTPM2 {
			return fmt.Errorf("%w: only a tpm2 helper seals", ErrBinding)
		}
		b, err := tpm2.Seal(ctx, cfg.TPM, req.Plaintext, req.PCRs)
		resp.Binding = b
		return err
	case "drifted":
		if cfg.Kind != keyring.KindTPM2 {
			return fmt.Errorf("%w: only a tpm2 helper reads PCRs", ErrBinding)
		}
		b, err := tpm2.Parse(req.Binding)
		if err != nil {
			return err
		}
		resp.Drifted, err = tpm2.Drifted(ctx, cfg.TPM, b)
		return err
	}
	return fmt.Errorf("%w: unknown operation %q", ErrBinding, req.Op)
}

// tpmSeal seals plaintext to pcrs, through the tpm2 helper if there is one.
func tpmSeal(ctx context.Context, env *Env, plaintext []byte, pcrs []int) ([]byte, error) {
	if path := HelperSocket(env.HelperDir, keyring.KindTPM2); path != "" {
		var resp HelperResponse
		if err := ask(ctx, path, &HelperRequest{Op: "seal", Kind: "tpm2", Plaintext: plaintext, PCRs: pcrs}, &resp); err != nil {
			return nil, err
		}
		b, err := tpm2.Parse(resp.Binding)
		if err != nil {
			return nil, fmt.Errorf("%w: the helper's binding: %v", ErrHelper, err)
		}
		// Sealed to the PCRs asked for, not others the helper chose.
		if !slices.Equal(b.PCRs, sortedPCRs(pcrs)) {
			return nil, fmt.Errorf("%w: the helper sealed to PCRs %s, not %v", ErrHelper, pcrList(b), pcrs)
		}
		return resp.Binding, nil
	}
	return tpm2.Seal(ctx, env.TPM, plaintext, pcrs)
}

// sortedPCRs returns pcrs ascending, without repeats, as a binding
// lists them.
func sortedPCRs(pcrs []int) []int {
	out := slices.Clone(pcrs)
	slices.Sort(out)
	return slices.Compact(out)
}

// tpmDrifted says whether b's PCRs changed, through the tpm2 helper if
// there is one.
func tpmDrifted(ctx context.Context, env *Env, binding []byte) (bool, error) {
	b, err := tpm2.Parse(binding)
	if err != nil {
		return false, err
	}
	if path := HelperSocket(env.HelperDir, keyring.KindTPM2); path != "" {
		var resp HelperResponse
		if err := ask(ctx, path, &HelperRequest{Op: "drifted", Kind: "tpm2", Binding: binding}, &resp); err != nil {
			return false, err
		}
		return resp.Drifted, nil
	}
	return tpm2.Drifted(ctx, env.TPM, b)
}
