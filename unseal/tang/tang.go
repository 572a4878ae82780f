// Package tang binds a secret to a Tang server (the McCallum-Relyea
// exchange that clevis's tang pin uses) and gets it back, with JWEs that
// clevis reads and writes.
//
// Binding is offline once the server's advertisement is known: Fetch gets
// and verifies the advertisement, the caller pins it with Trust (a
// signing-key thumbprint the administrator confirmed; trust on first use is
// the caller's decision, not this package's), and Encrypt writes a compact
// JWE. Recover asks the server named in the JWE to help open it; Parse reads
// what a stored JWE says without the network.
//
// What it protects: the JWE alone does not open, so a copied keyring does
// not give up the secret without the Tang server; the server never learns
// the secret or the key that wraps it (the request is blinded); a server
// that answers with garbage cannot crash the caller or make it accept a
// wrong plaintext (points are checked, AES-GCM authenticates). Requests never
// go through an environment proxy or follow redirects, and the caller's
// context bounds the whole exchange, so a dead server costs a deadline, not
// the kernel's 2-minute SYN retries.
//
// What it does not protect: anyone who can reach the Tang server with the
// JWE opens it (that is the point of Tang: put the server where only the
// intended hosts reach it). The JWE's URL and advertisement are not
// authenticated by this package; the caller must store the JWE where a
// writer cannot swap it (the keyring's state root), or a swapped JWE points
// Recover at another server. Over plain HTTP a network attacker can drop or
// delay replies (availability), but learns nothing and cannot forge a
// plaintext. Intermediate values are cleared where this package owns them;
// crypto/elliptic's big.Int internals and the AES key schedule are outside
// its reach.
//
// Errors: a server that cannot be reached, times out, or answers 5xx or a
// truncated reply gives ErrUnreachable (retry later); 404 from /rec gives
// ErrKeyGone (the server deleted the key: permanent); a reply that does not
// open the JWE gives ErrRefused. Malformed advertisements and JWEs give
// ErrBadAdv and ErrBadJWE; a thumbprint that is not a signer gives
// ErrUntrusted. No error carries key material.
package tang

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sealbox/sealbox/internal/errclass"
)

// Errors callers test with errors.Is.
var (
	// ErrUnreachable: the server could not be reached or did not answer in
	// time (refused, DNS, timeout, 5xx, truncated reply). Worth retrying.
	ErrUnreachable = errclass.New(errclass.Unavailable, "tang server unreachable")
	// ErrKeyGone: the server answered 404 to /rec: it no longer has the
	// key this JWE was bound to. Permanent.
	ErrKeyGone = errclass.New(errclass.NotFound, "tang server no longer has the key")
	// ErrRefused: the server answered, but the answer does not open the
	// JWE (bad point, authentication failure, wrong length, unexpected
	// status). Permanent.
	ErrRefused = errclass.New(errclass.Refused, "tang binding does not open")
	// ErrBadAdv: the advertisement is malformed or its signatures do not
	// verify.
	ErrBadAdv = errclass.New(errclass.Invalid, "bad tang advertisement")
	// ErrBadJWE: the JWE is not a well-formed clevis tang JWE.
	ErrBadJWE = errclass.New(errclass.Invalid, "bad tang JWE")
	// ErrUntrusted: no signing key in the advertisement has the thumbprint.
	ErrUntrusted = errclass.New(errclass.Auth, "tang advertisement not signed by the trusted key")
)

// maxBody bounds every reply body read from a server.
const maxBody = 64 << 10

// Client returns an HTTP client for Tang: no proxy from the environment, no
// redirects followed, dial bounded by dial, keep-alives off, default TLS.
// The caller's context bounds each whole request.
func Client(dial time.Duration) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            (&net.Dialer{Timeout: dial}).DialContext,
			TLSHandshakeTimeout:    dial,
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: maxBody,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// CheckURL accepts an http or https URL with a host and no query, fragment
// or user info, and returns it without a trailing slash for building
// request paths.
func CheckURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("url must be http(s)://host[:port][/path]")
	}
	return strings.TrimRight(s, "/"), nil
}

// status names a reply's status by its code and the standard text, not the
// server's reason phrase: that is text from the network (anyone on a
// plain-HTTP path chooses it), and errors go into status, the log and the
// audit log.
func status(resp *http.Response) string {
	return strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
}

// do sends req and reads the reply body (at most maxBody bytes). A
// transport failure, a 5xx or a truncated body is ErrUnreachable.
func do(c *http.Client, req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		return nil, nil, fmt.Errorf("%w: %s", ErrUnreachable, status(resp))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading reply: %w", ErrUnreachable, err)
	}
	if len(body) > maxBody {
		return nil, nil, fmt.Errorf("%w: reply longer than %d bytes", ErrRefused, maxBody)
	}
	return resp, body, nil
}

// Fetch gets url's advertisement (GET url/adv) and verifies it: see
// ParseAdv. It does not decide trust: call Trust.
func Fetch(ctx context.Context, c *http.Client, url string) (*Adv, error) {
	base, err := CheckURL(url)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAdv, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/adv", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAdv, err)
	}
	resp, body, err := do(c, req)
	if err != nil {
		return nil, fmt.Errorf("fetching advertisement: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: GET /adv: %s", ErrBadAdv, status(resp))
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/jose+json" {
		return nil, fmt.Errorf("%w: content type is not application/jose+json", ErrBadAdv)
	}
	return ParseAdv(url, body)
}
