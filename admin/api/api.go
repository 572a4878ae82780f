// Package api is sealboxd's admin API as its clients see it: the requests
// and answers on the admin socket, the error answer and its classes, and a
// client. sealbox-admin and tests use it without linking the daemon; the
// daemon serves these types.
package api

import (
	"net/http"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/keyring"
)

// SocketEnv names the environment variable sealbox-admin reads the admin
// socket's path from when --admin-socket is not given.
const SocketEnv = "SEALBOX_ADMIN_SOCKET"

// Errors of the API's own, each of its class (internal/errclass). The
// client's errors are *APIError, which errors.Is matches against the class
// the daemon sent: test them with errors.Is(err, errclass.Auth), or
// errclass.Of(err).
var (
	ErrSealed        = errclass.New(errclass.Sealed, "sealed")
	ErrNotAuthorized = errclass.New(errclass.Forbidden, "not a registered active client")
	ErrRefused       = errclass.New(errclass.Refused, "refused")
	ErrIntegrity     = errclass.New(errclass.Integrity, "integrity check failed")
	ErrBusy          = errclass.New(errclass.Busy, "busy")
	ErrUnreachable   = errclass.New(errclass.Unavailable, "cannot reach sealboxd")
	ErrInvalid       = errclass.New(errclass.Invalid, "invalid request")
	// ErrStreamEnded: the daemon closed an audit stream (it stopped, or
	// dropped a follower that did not keep up).
	ErrStreamEnded = errclass.New(errclass.Unavailable, "sealboxd ended the audit stream (it stopped, or this follower fell behind)")
)

// APIError is an error answer from the daemon: {"error": message, "code":
// class}, and Retry-After with a busy answer.
type APIError struct {
	Status     int    `json:"-"`
	Code       string `json:"code"`
	Message    string `json:"error"`
	RetryAfter int    `json:"retry_after,omitempty"` // seconds, with 429 and 503
}

func (e *APIError) Error() string { return e.Message }

// Unwrap returns the error's class, from its code.
func (e *APIError) Unwrap() error { return errclass.Parse(e.Code) }

// StatusOf is the HTTP status of an error of class c.
func StatusOf(c errclass.Class) int {
	switch c {
	case errclass.Auth:
		return http.StatusUnauthorized
	case errclass.Invalid:
		return http.StatusBadRequest
	case errclass.NotFound:
		return http.StatusNotFound
	case errclass.Refused:
		return http.StatusConflict
	case errclass.Busy, errclass.Sealed, errclass.Unavailable:
		return http.StatusServiceUnavailable
	case errclass.Forbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError // Integrity, Internal
}

// Passwords travel as JSON []byte (base64), which encoding/json decodes
// straight into a byte slice: no Go string ever holds them.

// UnsealRequest asks to unseal with one admin's password, or with the
// recovery code (Recovery set, Password holding the code).
type UnsealRequest struct {
	Admin    string `json:"admin,omitempty"`
	Password []byte `json:"password"`
	Recovery bool   `json:"recovery,omitempty"`
}

// InviteRequest creates an invite for the admin in the path.
type InviteRequest struct {
	AuthRequest
	TTLSeconds int64 `json:"ttl_seconds"`
}

// CodeAnswer carries a code shown once: an invite or the recovery code.
type CodeAnswer struct {
	Code    []byte     `json:"code,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
}

// EnrollRequest turns an invite into an admin slot.
type EnrollRequest struct {
	Code     []byte `json:"code"`
	Password []byte `json:"password"`
}

// RotateRequest replaces the master secret; an empty Secret means 32 random
// bytes chosen by the daemon.
type RotateRequest struct {
	AuthRequest
	Secret []byte `json:"secret,omitempty"`
}

// RotateAnswer says which version is served now.
type RotateAnswer struct {
	Version uint64 `json:"version"`
}

// AuthRequest carries the acting admin of a change.
type AuthRequest struct {
	Actor         string `json:"actor"`
	ActorPassword []byte `json:"actor_password"`
}

// AddAdminRequest adds an admin; KDF, if set, gives the new slot's
// Argon2id parameters (never below the policy).
type AddAdminRequest struct {
	AuthRequest
	Name     string          `json:"name"`
	Password []byte          `json:"password"`
	KDF      *keyring.Params `json:"kdf,omitempty"`
}

// PasswdRequest changes an admin's password; KDF as in AddAdminRequest.
type PasswdRequest struct {
	Current []byte          `json:"current"`
	New     []byte          `json:"new"`
	KDF     *keyring.Params `json:"kdf,omitempty"`
}

// AddClientRequest registers a client: by uid (and gid), by systemd unit,
// or both.
type AddClientRequest struct {
	AuthRequest
	Name string  `json:"name"`
	UID  *uint32 `json:"uid,omitempty"`
	GID  *uint32 `json:"gid,omitempty"`
	Unit string  `json:"unit,omitempty"`
}

// CheckRequest tests an admin's password; Before names the operation it
// comes before, for the audit record of a failure.
type CheckRequest struct {
	AuthRequest
	Before string `json:"before,omitempty"`
}

// RekeyRequest replaces the DataKey; KeepInvites hands outstanding invites
// the new key instead of dropping them.
type RekeyRequest struct {
	AuthRequest
	KeepInvites    bool `json:"keep_invites,omitempty"`
	KeepUnattended bool `json:"keep_unattended,omitempty"`
	// Remove names an admin removed in the rekey's transaction.
	Remove string `json:"remove,omitempty"`
}

// RekeyAnswer is what a rekey did. RecoveryCode is the new recovery code,
// shown once (absent if the keyring had none).
type RekeyAnswer struct {
	RecoveryCode      []byte   `json:"recovery_code,omitempty"`
	DroppedInvites    []string `json:"dropped_invites,omitempty"`
	KeptInvites       []string `json:"kept_invites,omitempty"`
	HandedOver        []string `json:"handed_over,omitempty"`
	Remade            []string `json:"remade,omitempty"`
	DroppedUnattended []string `json:"dropped_unattended,omitempty"`
	Stale             []string `json:"stale,omitempty"`
	Generation        uint64   `json:"generation"`
	Identity          string   `json:"identity,omitempty"`
}

// Status is the admin socket's view of the daemon.
type Status struct {
	Sealed              bool              `json:"sealed"`
	MemoryLocked        bool              `json:"memory_locked"`
	AllowUnlockedMemory bool              `json:"allow_unlocked_memory"`
	UnsealedBy          string            `json:"unsealed_by,omitempty"`
	UnsealedAt          *time.Time        `json:"unsealed_at,omitempty"`
	SecretVersion       uint64            `json:"secret_version,omitempty"`
	Admins              int               `json:"admins"`
	Clients             int               `json:"clients"`
	ActiveClients       int               `json:"active_clients"`
	RegistryProblems    string            `json:"registry_problems,omitempty"`
	Recovery            bool              `json:"recovery_code"`
	Slots               []admin.AdminInfo `json:"slots"`
	KDFPolicy           keyring.Params    `json:"kdf_policy"`
	KDFDerivations      uint64            `json:"kdf_derivations"`
	KDFBudgetMiB        uint64            `json:"kdf_budget_mib"`
	AuditKeyed          bool              `json:"audit_keyed"`
	AlreadyUnsealed     bool              `json:"already_unsealed,omitempty"`
	MemoryHygiene       string            `json:"memory_hygiene"`
	KDFMemoryReady      bool              `json:"kdf_memory_ready"`
	Format              uint32            `json:"format"`
	Generation          uint64            `json:"generation"`
	Keyring             string            `json:"keyring"`
	PID                 int               `json:"pid"`
	Started             time.Time         `json:"started"`
	// Unattended lists the unattended slots the daemon tried since it
	// started, and how each attempt went.
	Unattended []UnattendedAttempt `json:"unattended,omitempty"`
}

// UnattendedAttempt is how the daemon's attempts at one unattended slot
// went.
type UnattendedAttempt struct {
	Slot   string `json:"slot"`
	Method string `json:"method"` // "tang http://…", "tpm2 sha256:7", "threshold 2 of 3: …"
	// State: trying, waiting (a retry is due at NextTry), failed (for
	// good, until an admin acts), unsealed (this slot unsealed the
	// daemon), stopped (another way unsealed it, or an admin sealed), off
	// (not tried: no identity is pinned in the configuration).
	State     string          `json:"state"`
	Tries     int             `json:"tries"`
	LastTry   *time.Time      `json:"last_try,omitempty"`
	ElapsedMS int64           `json:"elapsed_ms"` // of the last try
	Error     string          `json:"error,omitempty"`
	NextTry   *time.Time      `json:"next_try,omitempty"`
	Members   []MemberAttempt `json:"members,omitempty"`
}

// MemberAttempt is one threshold member's part in the last try.
type MemberAttempt struct {
	Method    string `json:"method"`
	ElapsedMS int64  `json:"elapsed_ms"`
	Error     string `json:"error,omitempty"`
}

// ServiceStatus is what clients see on the service socket.
type ServiceStatus struct {
	Sealed bool   `json:"sealed"`
	Client string `json:"client"`
}

// Secrets returns a request's passwords and codes, for the daemon to wipe
// when it is done with them (requests that embed AuthRequest and carry no
// other secret have AuthRequest's).
func (r *AuthRequest) Secrets() [][]byte { return [][]byte{r.ActorPassword} }

// Secrets: see AuthRequest.Secrets.
func (r *UnsealRequest) Secrets() [][]byte { return [][]byte{r.Password} }

// Secrets: see AuthRequest.Secrets.
func (r *AddAdminRequest) Secrets() [][]byte { return [][]byte{r.ActorPassword, r.Password} }

// Secrets: see AuthRequest.Secrets.
func (r *PasswdRequest) Secrets() [][]byte { return [][]byte{r.Current, r.New} }

// Secrets: see AuthRequest.Secrets.
func (r *EnrollRequest) Secrets() [][]byte { return [][]byte{r.Code, r.Password} }

// Secrets: see AuthRequest.Secrets.
func (r *RotateRequest) Secrets() [][]byte { return [][]byte{r.ActorPassword, r.Secret} }

// clientVerbs are the client status changes as the API's paths and the CLI
// name them: /v1/clients/NAME/VERB, sealbox-admin client VERB NAME.
var clientVerbs = [...]struct {
	verb   string
	status keyring.ClientStatus
}{{"disable", keyring.ClientDisabled}, {"enable", keyring.ClientActive}, {"remove", keyring.ClientRetired}}

// ClientVerb returns the verb that moves a client to status st.
func ClientVerb(st keyring.ClientStatus) (string, bool) {
	for _, v := range clientVerbs {
		if v.status == st {
			return v.verb, true
		}
	}
	return "", false
}

// ClientStatusOf returns the status verb moves a client to.
func ClientStatusOf(verb string) (keyring.ClientStatus, bool) {
	for _, v := range clientVerbs {
		if v.verb == verb {
			return v.status, true
		}
	}
	return 0, false
}
