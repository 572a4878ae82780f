package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// Errors of the daemon's own, each of its class (internal/errclass). The
// admin client's errors are *APIError, which errors.Is matches against the
// class the daemon sent: test them with errors.Is(err, errclass.Auth), or
// errclass.Of(err).
var (
	ErrSealed        = errclass.New(errclass.Sealed, "sealed")
	ErrNotAuthorized = errclass.New(errclass.Forbidden, "not a registered active client")
	ErrRefused       = errclass.New(errclass.Refused, "refused")
	ErrIntegrity     = errclass.New(errclass.Integrity, "integrity check failed")
	ErrBusy          = errclass.New(errclass.Busy, "busy")
	ErrUnreachable   = errclass.New(errclass.Unavailable, "cannot reach sealboxd")
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

// statusOf is the HTTP status of an error of class c.
func statusOf(c errclass.Class) int {
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

// errorFor maps an error from the layers below to an HTTP answer: its class
// decides the code and the status. Messages are the errors' own: none of
// them carries a secret.
func errorFor(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	c := errclass.Of(err)
	e := &APIError{Status: statusOf(c), Code: string(c), Message: err.Error()}
	if c == errclass.Busy {
		e.RetryAfter = 1
		var be *admin.BackoffError
		if errors.As(err, &be) {
			// The guessing defence: too many attempts, not a full queue.
			e.Status, e.RetryAfter = http.StatusTooManyRequests, max(int(be.RetryAfter.Seconds()), 1)
		}
	}
	return e
}

// apiError is an answer of class c with message msg.
func apiError(c errclass.Class, msg string) *APIError {
	return &APIError{Status: statusOf(c), Code: string(c), Message: msg}
}

func badRequest(format string, a ...any) *APIError {
	return &APIError{Status: http.StatusBadRequest, Code: string(errclass.Invalid), Message: fmt.Sprintf(format, a...)}
}

func writeError(w http.ResponseWriter, e *APIError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(e)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
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

// AddAdminRequest adds an admin.
type AddAdminRequest struct {
	AuthRequest
	Name     string `json:"name"`
	Password []byte `json:"password"`
}

// PasswdRequest changes an admin's password.
type PasswdRequest struct {
	Current []byte `json:"current"`
	New     []byte `json:"new"`
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
	KeepInvites bool `json:"keep_invites,omitempty"`
}

// RekeyAnswer is what a rekey did. RecoveryCode is the new recovery code,
// shown once (absent if the keyring had none).
type RekeyAnswer struct {
	RecoveryCode   []byte   `json:"recovery_code,omitempty"`
	DroppedInvites []string `json:"dropped_invites,omitempty"`
	KeptInvites    []string `json:"kept_invites,omitempty"`
	HandedOver     []string `json:"handed_over,omitempty"`
	Stale          []string `json:"stale,omitempty"`
	Generation     uint64   `json:"generation"`
}

// wipe zeroes every password field of a request.
func wipe(ps ...[]byte) {
	for _, p := range ps {
		memlock.Wipe(p)
	}
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
}

// ServiceStatus is what clients see on the service socket.
type ServiceStatus struct {
	Sealed bool   `json:"sealed"`
	Client string `json:"client"`
}
