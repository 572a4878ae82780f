// Package client reads the master secret from sealboxd, for Go programs that
// run as a registered sealbox client.
//
// In most programs:
//
//	c := client.New("")                       // $SEALBOX_SOCKET, else /run/sealbox/sealbox.sock
//	secret, err := c.WaitSecret(ctx, time.Minute) // blocks until an admin unseals
//	defer clear(secret)
//
// The daemon decides who may read from what the kernel attests of the
// connecting process: its uid (and gid) or its systemd unit. Register the
// program's user or unit with sealbox-admin client add. Nothing else is
// needed here. Waits ride out a daemon that is not up yet or restarts.
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
	"syscall"
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
	socket        string
	hc            *http.Client
	onUnreachable func(error)
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
// default 5 minutes); longer waits poll again. A daemon that is not up yet,
// restarts or drops the connection is retried until wait runs out: the
// ErrTimeout then also wraps ErrUnreachable.
func (c *Client) WaitSecret(ctx context.Context, wait time.Duration) ([]byte, error) {
	r := c.newRetry(wait)
	for {
		secret, err := c.secret(ctx, r.left())
		if r.again(ctx, err) {
			continue
		}
		return secret, r.final(err)
	}
}

// Status reports whether the daemon is sealed.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	return c.status(ctx, 0)
}

// WaitUnsealed returns once the daemon is unsealed, or ErrTimeout after
// timeout. The daemon caps one long poll (max_wait, default 5 minutes);
// longer waits poll again. Like WaitSecret, it retries a daemon that is not
// up yet or restarts until timeout.
func (c *Client) WaitUnsealed(ctx context.Context, timeout time.Duration) error {
	r := c.newRetry(timeout)
	for {
		st, err := c.status(ctx, r.left())
		if err == nil && st.Sealed {
			err = ErrTimeout // this poll ended sealed
		}
		if r.again(ctx, err) {
			continue
		}
		return r.final(err)
	}
}

// OnUnreachable sets a function called once each time a wait finds the
// daemon unreachable after reaching it (or at the start), with the error;
// the wait goes on retrying. The sealbox command uses it to say so on
// stderr. Set it before the client is shared.
func (c *Client) OnUnreachable(f func(error)) { c.onUnreachable = f }

// retry paces a wait: it polls again while the deadline allows, after a
// timed-out long poll at once and after an unreachable daemon with a
// backoff from 50 ms to 1 s.
type retry struct {
	c        *Client
	deadline time.Time
	backoff  time.Duration
	down     error // the last unreachable error, while the daemon is down
}

func (c *Client) newRetry(wait time.Duration) *retry {
	return &retry{c: c, deadline: time.Now().Add(wait)}
}

func (r *retry) left() time.Duration { return max(time.Until(r.deadline), 0) }

// again reports whether to poll again after err, sleeping first when the
// daemon was unreachable.
func (r *retry) again(ctx context.Context, err error) bool {
	switch {
	case err == nil, ctx.Err() != nil, r.left() == 0:
		return false
	case errors.Is(err, ErrTimeout):
		r.down, r.backoff = nil, 0
		return true
	case !errors.Is(err, ErrUnreachable) || errors.Is(err, syscall.EACCES):
		// Refused, a protocol error, or a socket this user may not
		// open: waiting does not change those.
		return false
	}
	if r.down == nil && r.c.onUnreachable != nil {
		r.c.onUnreachable(err)
	}
	r.down = err
	r.backoff = min(max(2*r.backoff, 50*time.Millisecond), time.Second)
	t := time.NewTimer(min(r.backoff, r.left()))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return ctx.Err() == nil
}

// final is the error a wait returns: a deadline reached while the daemon
// was down is a timeout that also says why.
func (r *retry) final(err error) error {
	if r.down != nil && r.left() == 0 && errors.Is(err, ErrUnreachable) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
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
