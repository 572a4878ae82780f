package api

import (
	"context"
	"net/http"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/keyring"
)

// The slot view, the online keyring check, lockout clearing and the KDF
// policy: what an admin used to cryptsetup expects (luksDump,
// --test-passphrase, luksConvertKey).

// PolicyRequest sets the KDF policy for new slots; a zero field keeps the
// current value.
type PolicyRequest struct {
	AuthRequest
	KDF keyring.Params `json:"kdf"`
}

// PolicyAnswer is the policy as set.
type PolicyAnswer struct {
	Policy keyring.Params `json:"kdf_policy"`
}

// UnlockAnswer says how many failed attempts an unlock cleared.
type UnlockAnswer struct {
	Cleared uint32 `json:"cleared"`
}

// Slots returns the slot view (GET /v1/slots).
func (c *Client) Slots(ctx context.Context) (*admin.SlotsView, error) {
	var v admin.SlotsView
	return &v, c.do(ctx, http.MethodGet, "/v1/slots", nil, &v)
}

// CheckKeyring tests actor's password and verifies the daemon's keyring
// under it: the state root over every record, the master secret, the audit
// chains (POST /v1/keyring/check). Findings are in the answer; a wrong
// password, a backoff or a root that does not verify are errors.
func (c *Client) CheckKeyring(ctx context.Context, actor string, pw []byte) (*admin.CheckResult, error) {
	var res admin.CheckResult
	return &res, c.do(ctx, http.MethodPost, "/v1/keyring/check", AuthRequest{Actor: actor, ActorPassword: pw}, &res)
}

// Unlock clears the failed attempts counted against name, authorized by
// actor (POST /v1/admins/NAME/unlock).
func (c *Client) Unlock(ctx context.Context, actor string, actorPw []byte, name string) (uint32, error) {
	if err := pathName(name); err != nil {
		return 0, err
	}
	var a UnlockAnswer
	err := c.do(ctx, http.MethodPost, "/v1/admins/"+name+"/unlock", AuthRequest{Actor: actor, ActorPassword: actorPw}, &a)
	return a.Cleared, err
}

// SetPolicyFields sets the KDF policy (zero fields keep theirs), authorized
// by actor (POST /v1/policy).
func (c *Client) SetPolicyFields(ctx context.Context, actor string, actorPw []byte, p keyring.Params) (keyring.Params, error) {
	var a PolicyAnswer
	err := c.do(ctx, http.MethodPost, "/v1/policy", PolicyRequest{AuthRequest: AuthRequest{Actor: actor, ActorPassword: actorPw}, KDF: p}, &a)
	return a.Policy, err
}

// AddAdminWith is AddAdmin with explicit Argon2id parameters (nil: the
// policy).
func (c *Client) AddAdminWith(ctx context.Context, actor string, actorPw []byte, name string, newPw []byte, kdf *keyring.Params) error {
	return c.do(ctx, http.MethodPost, "/v1/admins", AddAdminRequest{AuthRequest: AuthRequest{Actor: actor, ActorPassword: actorPw}, Name: name, Password: newPw, KDF: kdf}, nil)
}

// PasswdWith is Passwd with explicit Argon2id parameters (nil: the policy).
func (c *Client) PasswdWith(ctx context.Context, name string, cur, newPw []byte, kdf *keyring.Params) error {
	if err := pathName(name); err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/admins/"+name+"/passwd", PasswdRequest{Current: cur, New: newPw, KDF: kdf}, nil)
}
