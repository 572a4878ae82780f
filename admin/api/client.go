package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/unixhttp"
	"github.com/sealbox/sealbox/keyring"
)

// timeout bounds one request: derivations may queue behind others.
const timeout = 3 * time.Minute

// Client talks to sealboxd's admin socket. Its errors wrap the package's
// sentinels (see APIError) or ErrUnreachable.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the admin socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, hc: &http.Client{Transport: unixhttp.Transport(path, 1), Timeout: timeout}}
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// do sends body (which may hold passwords: the encoded request is wiped
// after sending) and decodes a 2xx answer into out.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var buf []byte
	if body != nil {
		var err error
		if buf, err = json.Marshal(body); err != nil {
			return err
		}
		defer memlock.Wipe(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sealboxd"+path, bytes.NewReader(buf))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.socket, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return answerError(resp, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// answerError is the error a non-2xx answer (its body data) carries.
func answerError(resp *http.Response, data []byte) error {
	ae := &APIError{Status: resp.StatusCode}
	if json.Unmarshal(data, ae) != nil || ae.Message == "" {
		ae.Code, ae.Message = string(errclass.Internal), fmt.Sprintf("daemon answered %s", resp.Status)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		return &backoffAPIError{ae}
	}
	return ae
}

// Status returns the daemon's state.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Unseal unseals with name's password.
func (c *Client) Unseal(ctx context.Context, name string, pw []byte) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodPost, "/v1/unseal", UnsealRequest{Admin: name, Password: pw}, &s)
}

// Seal seals the daemon.
func (c *Client) Seal(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodPost, "/v1/seal", nil, &s)
}

// ListAdmins lists the admin slots.
func (c *Client) ListAdmins(ctx context.Context) ([]admin.AdminInfo, error) {
	var out []admin.AdminInfo
	return out, c.do(ctx, http.MethodGet, "/v1/admins", nil, &out)
}

// AddAdmin adds name, authorized by actor.
func (c *Client) AddAdmin(ctx context.Context, actor string, actorPw []byte, name string, newPw []byte) error {
	return c.do(ctx, http.MethodPost, "/v1/admins", AddAdminRequest{AuthRequest: AuthRequest{Actor: actor, ActorPassword: actorPw}, Name: name, Password: newPw}, nil)
}

// pathName checks a name before it becomes part of a URL path.
func pathName(name string) error {
	return keyring.ValidName(name)
}

// RemoveAdmin removes name, authorized by actor.
func (c *Client) RemoveAdmin(ctx context.Context, actor string, actorPw []byte, name string) error {
	if err := pathName(name); err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/admins/"+name+"/remove", AuthRequest{Actor: actor, ActorPassword: actorPw}, nil)
}

// Passwd changes name's password.
func (c *Client) Passwd(ctx context.Context, name string, cur, newPw []byte) error {
	if err := pathName(name); err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/admins/"+name+"/passwd", PasswdRequest{Current: cur, New: newPw}, nil)
}

// ListClients lists the client records.
func (c *Client) ListClients(ctx context.Context) ([]admin.ClientInfo, error) {
	var out []admin.ClientInfo
	return out, c.do(ctx, http.MethodGet, "/v1/clients", nil, &out)
}

// AddClient registers a client, authorized by actor.
func (c *Client) AddClient(ctx context.Context, actor string, actorPw []byte, name string, m admin.Match) error {
	return c.do(ctx, http.MethodPost, "/v1/clients", AddClientRequest{AuthRequest: AuthRequest{Actor: actor, ActorPassword: actorPw}, Name: name, UID: m.UID, GID: m.GID, Unit: m.Unit}, nil)
}

// SetClientStatus disables, enables or retires a client, authorized by actor.
func (c *Client) SetClientStatus(ctx context.Context, actor string, actorPw []byte, name string, st keyring.ClientStatus) error {
	action, ok := ClientVerb(st)
	if !ok {
		return fmt.Errorf("%w: invalid client status %d", errclass.Invalid, st)
	}
	if err := pathName(name); err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/clients/"+name+"/"+action, AuthRequest{Actor: actor, ActorPassword: actorPw}, nil)
}

// backoffAPIError lets callers errors.As an *admin.BackoffError from a 429.
type backoffAPIError struct{ *APIError }

func (e *backoffAPIError) Unwrap() []error {
	return []error{e.APIError, &admin.BackoffError{RetryAfter: time.Duration(e.RetryAfter) * time.Second}}
}

// Audit returns audit records; query holds since, client, admin, limit.
func (c *Client) Audit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	var out []audit.Record
	return out, c.do(ctx, http.MethodGet, "/v1/audit?"+FilterQuery(f).Encode(), nil, &out)
}

// FollowAudit streams the records that match f: first those stored (the
// newest f.Limit of them, if set), then each new one as the daemon writes
// it, calling fn for each, until ctx ends (nil), fn fails, or the daemon
// ends the stream (ErrStreamEnded; it stopped, or dropped a follower that
// did not keep up).
func (c *Client) FollowAudit(ctx context.Context, f audit.Filter, fn func(audit.Record) error) error {
	q := FilterQuery(f)
	q.Set("follow", "1")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sealboxd/v1/audit?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	// No overall timeout: a follow lasts until it is stopped.
	hc := &http.Client{Transport: c.hc.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.socket, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		ae := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, ae) != nil || ae.Message == "" {
			ae.Code, ae.Message = string(errclass.Internal), fmt.Sprintf("daemon answered %s", resp.Status)
		}
		return ae
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue // a keep-alive
		}
		var rec audit.Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("reading the audit stream: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStreamEnded, err)
	}
	return ErrStreamEnded
}

// FilterQuery is f as the audit endpoint's query parameters.
func FilterQuery(f audit.Filter) url.Values {
	q := url.Values{}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	if f.Client != "" {
		q.Set("client", f.Client)
	}
	if f.Admin != "" {
		q.Set("admin", f.Admin)
	}
	if f.UID != nil {
		q.Set("uid", strconv.FormatUint(uint64(*f.UID), 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Reads {
		q.Set("stream", "reads")
	}
	return q
}

// ParseFilterQuery reads what FilterQuery wrote; errors are ErrInvalid.
func ParseFilterQuery(q url.Values) (audit.Filter, error) {
	f := audit.Filter{Client: q.Get("client"), Admin: q.Get("admin")}
	switch q.Get("stream") {
	case "", "events":
	case "reads":
		f.Reads = true
	default:
		return f, fmt.Errorf("%w: stream: want events or reads", ErrInvalid)
	}
	for _, t := range []struct {
		key string
		dst *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(t.key); v != "" {
			tm, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, fmt.Errorf("%w: %s: want an RFC 3339 time such as 2026-11-22T09:00:00Z", ErrInvalid, t.key)
			}
			*t.dst = tm
		}
	}
	if v := q.Get("uid"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return f, fmt.Errorf("%w: uid: want a number", ErrInvalid)
		}
		u := uint32(n)
		f.UID = &u
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, fmt.Errorf("%w: limit: want a whole number", ErrInvalid)
		}
		f.Limit = n
	}
	return f, nil
}

// VerifyAudit asks the daemon to verify the audit chain with its key.
func (c *Client) VerifyAudit(ctx context.Context) (*audit.Report, error) {
	var r audit.Report
	return &r, c.do(ctx, http.MethodPost, "/v1/audit/verify", nil, &r)
}

// UnsealRecovery unseals with the recovery code.
func (c *Client) UnsealRecovery(ctx context.Context, code []byte) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodPost, "/v1/unseal", UnsealRequest{Recovery: true, Password: code}, &s)
}

// Invite creates an invite for name; the code is the caller's to wipe.
func (c *Client) Invite(ctx context.Context, actor string, actorPw []byte, name string, ttl time.Duration) ([]byte, time.Time, error) {
	if err := pathName(name); err != nil {
		return nil, time.Time{}, err
	}
	var a CodeAnswer
	err := c.do(ctx, http.MethodPost, "/v1/admins/"+name+"/invite", InviteRequest{AuthRequest: AuthRequest{Actor: actor, ActorPassword: actorPw}, TTLSeconds: int64(ttl.Seconds())}, &a)
	if err != nil || a.Expires == nil {
		return nil, time.Time{}, err
	}
	return a.Code, *a.Expires, nil
}

// Enroll turns name's invite into an admin slot under password.
func (c *Client) Enroll(ctx context.Context, name string, code, password []byte) error {
	if err := pathName(name); err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/admins/"+name+"/enroll", EnrollRequest{Code: code, Password: password}, nil)
}

// RegenerateRecovery creates or replaces the recovery code.
func (c *Client) RegenerateRecovery(ctx context.Context, actor string, actorPw []byte) ([]byte, error) {
	var a CodeAnswer
	err := c.do(ctx, http.MethodPost, "/v1/recovery", AuthRequest{Actor: actor, ActorPassword: actorPw}, &a)
	return a.Code, err
}

// Rotate replaces the master secret (nil: the daemon picks 32 random bytes).
func (c *Client) Rotate(ctx context.Context, actor string, actorPw []byte, secret []byte) (uint64, error) {
	var a RotateAnswer
	err := c.do(ctx, http.MethodPost, "/v1/rotate", RotateRequest{AuthRequest: AuthRequest{Actor: actor, ActorPassword: actorPw}, Secret: secret}, &a)
	return a.Version, err
}

// CheckPassword tests actor's password without changing anything.
func (c *Client) CheckPassword(ctx context.Context, before audit.Kind, actor string, pw []byte) error {
	return c.do(ctx, http.MethodPost, "/v1/check", CheckRequest{AuthRequest: AuthRequest{Actor: actor, ActorPassword: pw}, Before: string(before)}, nil)
}

// Rekey replaces the DataKey. The answer's recovery code is the caller's to
// show once and wipe.
func (c *Client) Rekey(ctx context.Context, actor string, actorPw []byte, o admin.RekeyOptions) (*admin.Rekeyed, error) {
	var ans RekeyAnswer
	if err := c.do(ctx, http.MethodPost, "/v1/rekey", RekeyRequest{AuthRequest: AuthRequest{Actor: actor, ActorPassword: actorPw}, KeepInvites: o.KeepInvites, KeepUnattended: o.KeepUnattended, Remove: o.Remove}, &ans); err != nil {
		return nil, err
	}
	return &admin.Rekeyed{RecoveryCode: ans.RecoveryCode, DroppedInvites: ans.DroppedInvites, KeptInvites: ans.KeptInvites,
		HandedOver: ans.HandedOver, Remade: ans.Remade, DroppedUnattended: ans.DroppedUnattended, Stale: ans.Stale, Generation: ans.Generation, Identity: ans.Identity}, nil
}

// Backup streams a consistent copy of the keyring into w.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sealboxd/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w at %s: %v", ErrUnreachable, c.socket, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return 0, answerError(resp, data)
	}
	// The daemon says the copy's length first: a copy cut short (the
	// daemon stopped, the connection dropped) is an error, not a backup.
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("the backup was cut short: %d of %d bytes", n, resp.ContentLength)
	}
	return n, err
}
