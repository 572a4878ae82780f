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
// needed here.
//
// Waits (WaitSecret, WaitUnsealed) ride out a daemon that is not up yet,
// restarts or shuts down, retrying it with short pauses (50 ms doubling to
// 1 s) until the wait's duration or the context's deadline, whichever comes
// first. A refusal is not retried.
//
// Errors wrap ErrSealed (an admin has not unsealed yet), ErrRefused (this
// process is not an Active registered client), ErrUnreachable (no daemon on
// the socket) or ErrTimeout (a wait ran out; it also wraps ErrUnreachable if
// the daemon was down then); test them with errors.Is.
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
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/unixhttp"
)

// DefaultSocket is the service socket sealboxd listens on by default.
const DefaultSocket = "/run/sealbox/sealbox.sock"

// SocketEnv names the environment variable that overrides DefaultSocket.
const SocketEnv = "SEALBOX_SOCKET"

// MaxSecret is the largest master secret sealbox stores.
const MaxSecret = 64 << 10

// Errors callers test with errors.Is. Each belongs to an error class
// (internal/errclass), which gives the sealbox command its exit code.
var (
	ErrSealed      = errclass.New(errclass.Sealed, "sealbox is sealed")
	ErrRefused     = errclass.New(errclass.Forbidden, "not a registered active sealbox client")
	ErrUnreachable = errclass.New(errclass.Unavailable, "cannot reach sealboxd")
	ErrTimeout     = errclass.New(errclass.Timeout, "timed out waiting for sealbox to be unsealed")
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

// WaitSecret returns the master secret, waiting up to wait for an unseal.
//
// The wait ends at wait or at ctx's deadline, whichever comes first, with an
// error wrapping ErrTimeout (and context.DeadlineExceeded when ctx's
// deadline came first). The daemon caps one long poll (max_wait, default 5
// minutes); longer waits poll again. A daemon that is not up yet, restarts,
// is shutting down or drops the connection is retried, after a pause of 50
// ms doubling to 1 s (with jitter), until the wait ends: the ErrTimeout then
// also wraps ErrUnreachable. A refusal (ErrRefused: not an Active client)
// or a socket this user may not open ends the wait at once. Cancelling ctx
// ends it with ctx.Err().
func (c *Client) WaitSecret(ctx context.Context, wait time.Duration) ([]byte, error) {
	var secret []byte
	err := c.wait(ctx, wait, func(ctx context.Context, left time.Duration) (err error) {
		secret, err = c.secret(ctx, left)
		return err
	})
	return secret, err
}

// Status reports whether the daemon is sealed.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	return c.status(ctx, 0)
}

// WaitUnsealed returns once the daemon is unsealed. It waits, and retries a
// daemon that is not up yet or restarts, exactly as WaitSecret does: up to
// timeout or ctx's deadline, then an error wrapping ErrTimeout.
func (c *Client) WaitUnsealed(ctx context.Context, timeout time.Duration) error {
	return c.wait(ctx, timeout, func(ctx context.Context, left time.Duration) error {
		st, err := c.status(ctx, left)
		if err == nil && st.Sealed {
			return ErrTimeout // this poll ended sealed
		}
		return err
	})
}

// OnUnreachable sets a function called when a wait finds the daemon
// unreachable: once at the start of each outage (not up yet, or gone after
// it answered), not once per retry, with the error; the wait goes on
// retrying. The sealbox command uses it to say so on stderr. Set it before
// the client is shared.
func (c *Client) OnUnreachable(f func(error)) { c.onUnreachable = f }

// Pacing of a wait's polls.
const (
	// minPause and maxPause bound the pause before retrying a daemon that
	// was unreachable or answered a long poll at once; it doubles from
	// the one to the other, with jitter.
	minPause = 50 * time.Millisecond
	maxPause = time.Second
	// longPoll is how long a poll must have lasted for the next to start
	// at once (a long poll that ran its course).
	longPoll = time.Second
	// answerGrace is how long after a wait's end a poll may still take
	// for the daemon's answer to arrive; a daemon that accepts but never
	// answers cannot hold a wait longer than that.
	answerGrace = time.Second
)

// errNoAnswer is what a poll of a daemon that accepted but did not answer
// before the wait ended returns.
var errNoAnswer = errors.New("sealboxd did not answer")

// wait runs poll until it succeeds or fails for good, or the wait ends. poll
// gets the time left; it returns an error wrapping ErrTimeout for a poll that
// ended sealed, and ErrUnreachable for a daemon it could not reach.
func (c *Client) wait(ctx context.Context, wait time.Duration, poll func(ctx context.Context, left time.Duration) error) error {
	deadline := time.Now().Add(max(wait, 0))
	byCtx := false
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, byCtx = d, true
	}
	pctx, cancel := context.WithDeadline(ctx, deadline.Add(answerGrace))
	defer cancel()
	var (
		err   error         // the last poll's
		down  error         // the last unreachable error, while the daemon is down
		pause time.Duration // the next pause, before jitter
	)
	for first := true; ; first = false {
		left := time.Until(deadline)
		if !first && left <= 0 {
			// The wait ran out, after a poll that ended sealed or
			// found the daemon down.
			var ctxErr error
			if byCtx {
				ctxErr = context.DeadlineExceeded
			}
			if down != nil {
				return timeout(down, ctxErr)
			}
			if ctxErr != nil {
				return fmt.Errorf("%w: %w", err, ctxErr)
			}
			return err
		}
		start := time.Now()
		err = poll(pctx, max(left, 0))
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ended(ctx, down)
		case pctx.Err() != nil:
			// The daemon took the request and held it past the wait's end.
			return timeout(down, fmt.Errorf("%w at %s before the wait ended", errNoAnswer, c.socket))
		case errors.Is(err, ErrTimeout):
			down = nil
		case !errors.Is(err, ErrUnreachable) || errors.Is(err, syscall.EACCES):
			// Refused, a protocol error, or a socket this user may not
			// open: waiting does not change those.
			return err
		case down == nil && time.Until(deadline) <= 0:
			return err // unreachable, with no time to retry (a zero wait)
		default:
			if down == nil && c.onUnreachable != nil {
				c.onUnreachable(err)
			}
			down = err
		}
		took := time.Since(start)
		if down == nil && took >= longPoll {
			pause = 0 // a long poll ran its course: poll again at once
			continue
		}
		// Unreachable, or a poll that ended at once (a daemon shutting
		// down, or one whose max_wait is 0): pause, less the time the
		// poll took, so that polls start at most once per pause.
		pause = min(max(2*pause, minPause), maxPause)
		if !sleep(ctx, min(jitter(pause)-took, time.Until(deadline))) {
			return ended(ctx, down)
		}
	}
}

// ended is the error of a wait whose ctx ended: ctx.Err() if it was
// cancelled, a timeout if its deadline passed.
func ended(ctx context.Context, down error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return timeout(down, ctx.Err())
	}
	return ctx.Err()
}

// timeout is the error of a wait that ran out: ErrTimeout, wrapping why the
// daemon was unreachable and ctx's deadline when they apply.
func timeout(down, ctxErr error) error {
	switch {
	case down != nil && ctxErr != nil:
		return fmt.Errorf("%w (%w): %w", ErrTimeout, ctxErr, down)
	case down != nil:
		return fmt.Errorf("%w: %w", ErrTimeout, down)
	case ctxErr != nil:
		return fmt.Errorf("%w: %w", ErrTimeout, ctxErr)
	}
	return ErrTimeout
}

// jitter returns a random duration between d/2 and d, so that services that
// wait for the same daemon do not all retry at the same moment.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
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
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.socket, errors.Unwrap(err))
	}
	return resp, nil
}

// readError is the error of reading an answer: ErrUnreachable if the
// connection broke (the daemon went away mid-answer), which a wait retries.
func (c *Client) readError(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w at %s: the connection broke %s: %w", ErrUnreachable, c.socket, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
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
		return nil, c.readError(ctx, "reading the secret", err)
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
		return nil, c.readError(ctx, "decoding status", err)
	}
	return &st, nil
}
