// Package client reads the master secret from sealboxd, for Go programs that
// run as a registered sealbox client.
//
// In most programs:
//
//	c := client.New("")                       // $SEALBOX_SOCKET, else /run/sealbox/sealbox.sock
//	secret, err := c.WaitSecret(ctx, time.Minute) // blocks until an admin unseals
//	defer clear(secret)
//
// The daemon decides who may read from the kernel-attested uid (and gid) of
// the connecting process: register the program's user with
// sealbox-admin client add. Nothing else is needed here.
//
// Errors wrap ErrSealed (an admin has not unsealed yet), ErrRefused (this
// process is not an Active registered client), ErrUnreachable (no daemon on
// the socket) or ErrTimeout (a wait ran out); test them with errors.Is.
//
// The secret is returned as a byte slice the caller owns: clear it when done,
// and keep it out of strings, logs and the environment.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/sealbox/sealbox/internal/unixhttp"
)

// DefaultSocket is the service socket sealboxd listens on by default.
const DefaultSocket = "/run/sealbox/sealbox.sock"

// SocketEnv names the environment variable that overrides DefaultSocket.
const SocketEnv = "SEALBOX_SOCKET"

// MaxSecret is the largest master secret sealbox stores.
const MaxSecret = 64 << 10

// Errors callers test with errors.Is.
var (
	ErrSealed      = errors.New("sealbox is sealed")
	ErrRefused     = errors.New("not a registered active sealbox client")
	ErrUnreachable = errors.New("cannot reach sealboxd")
	ErrTimeout     = errors.New("timed out waiting for sealbox to be unsealed")
)

// Client talks to sealboxd's service socket. It is safe for concurrent use
// and keeps connections alive between calls.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client for the service socket at path; "" means
// $SEALBOX_SOCKET, or DefaultSocket when that is unset.
func New(path string) *Client {
	if path == "" {
		path = os.Getenv(SocketEnv)
	}
	if path == "" {
		path = DefaultSocket
	}
	return &Client{socket: path, hc: &http.Client{Transport: unixhttp.Transport(path, 2)}}
}

// Socket returns the socket path in use.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Status is the daemon's answer to a registered client.
type Status struct {
	Sealed bool   `json:"sealed"`
	Client string `json:"client"` // the name this process is registered under
}

// Secret returns the master secret now, or ErrSealed.
func (c *Client) Secret(ctx context.Context) ([]byte, error) {
	return c.secret(ctx, 0)
}

// WaitSecret returns the master secret, waiting up to wait for an unseal. It
// returns ErrTimeout if none came. The daemon caps one long poll (max_wait,
// default 5 minutes); longer waits poll again.
func (c *Client) WaitSecret(ctx context.Context, wait time.Duration) ([]byte, error) {
	deadline := time.Now().Add(wait)
	for {
		secret, err := c.secret(ctx, max(time.Until(deadline), 0))
		if errors.Is(err, ErrTimeout) && time.Now().Before(deadline) {
			continue
		}
		return secret, err
	}
}

// Status reports whether the daemon is sealed.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	return c.status(ctx, 0)
}

// WaitUnsealed returns once the daemon is unsealed, or ErrTimeout after
// timeout. The daemon caps one long poll (max_wait, default 5 minutes);
// longer waits poll again.
func (c *Client) WaitUnsealed(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := c.status(ctx, max(time.Until(deadline), 0))
		if err != nil {
			return err
		}
		if !st.Sealed {
			return nil
		}
		if time.Now().After(deadline) {
			return ErrTimeout
		}
	}
}

func (c *Client) get(ctx context.Context, path string, wait time.Duration) (*http.Response, error) {
	u := "http://sealbox" + path
	if wait > 0 {
		u += "?wait=" + url.QueryEscape(wait.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, c.socket, errors.Unwrap(err))
	}
	return resp, nil
}

// answerError turns a non-200 answer into an error.
func answerError(resp *http.Response, waited bool) error {
	var e struct {
		Message string `json:"error"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
	switch resp.StatusCode {
	case http.StatusServiceUnavailable:
		if waited {
			return fmt.Errorf("%w (%s)", ErrTimeout, ErrSealed)
		}
		return ErrSealed
	case http.StatusForbidden:
		return fmt.Errorf("%w: %s", ErrRefused, e.Message)
	}
	return fmt.Errorf("sealboxd answered %s: %s", resp.Status, e.Message)
}

func (c *Client) secret(ctx context.Context, wait time.Duration) ([]byte, error) {
	resp, err := c.get(ctx, "/v1/secret", wait)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, answerError(resp, wait > 0)
	}
	n, err := strconv.Atoi(resp.Header.Get("Content-Length"))
	if err != nil || n < 1 || n > MaxSecret {
		return nil, fmt.Errorf("sealboxd sent a secret of unexpected length %q", resp.Header.Get("Content-Length"))
	}
	// Read into one buffer of the exact size: no growing copies left behind.
	secret := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, secret); err != nil {
		clear(secret)
		return nil, fmt.Errorf("reading the secret: %w", err)
	}
	return secret, nil
}

func (c *Client) status(ctx context.Context, wait time.Duration) (*Status, error) {
	resp, err := c.get(ctx, "/v1/status", wait)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, answerError(resp, false)
	}
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st); err != nil {
		return nil, fmt.Errorf("decoding status: %w", err)
	}
	return &st, nil
}
