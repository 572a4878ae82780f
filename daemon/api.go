package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// Errors the admin client returns, wrapped in *APIError; test with errors.Is.
// ErrWrongPassword is unseal.ErrWrongPassword.
var (
	ErrSealed        = errors.New("sealed")
	ErrNotAuthorized = errors.New("not a registered active client")
	ErrRefused       = errors.New("refused")
	ErrIntegrity     = errors.New("integrity check failed")
	ErrBusy          = errors.New("busy")
	ErrUnreachable   = errors.New("cannot reach sealboxd")
)

// Error codes on the wire, in {"error": "...", "code": "..."}.
const (
	codeWrongPassword = "wrong_password"
	codeSealed        = "sealed"
	codeForbidden     = "forbidden"
	codeRefused       = "refused"
	codeNotFound      = "not_found"
	codeBadRequest    = "bad_request"
	codeIntegrity     = "integrity"
	codeMemlock       = "memlock"
	codeBusy          = "busy"
	codeBackoff       = "backoff"
	codeInternal      = "internal"
)

// APIError is an error answer from the daemon.
type APIError struct {
	Status     int    `json:"-"`
	Code       string `json:"code"`
	Message    string `json:"error"`
	RetryAfter int    `json:"retry_after,omitempty"` // seconds, with 429 and 503
}

func (e *APIError) Error() string { return e.Message }

// Unwrap maps the wire code back to the sentinel callers test for.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case codeWrongPassword:
		return unseal.ErrWrongPassword
	case codeSealed:
		return ErrSealed
	case codeForbidden:
		return ErrNotAuthorized
	case codeRefused, codeNotFound, codeBadRequest:
		return ErrRefused
	case codeIntegrity:
		return ErrIntegrity
	case codeBusy:
		return ErrBusy
	case codeBackoff:
		return admin.ErrBackoff
	}
	return nil
}

// errorFor maps an error from the layers below to an HTTP answer, in one
// place. Messages are the errors' own: none of them carries a secret.
func errorFor(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var be *admin.BackoffError
	if errors.As(err, &be) {
		return &APIError{Status: http.StatusTooManyRequests, Code: codeBackoff, Message: err.Error(), RetryAfter: int(be.RetryAfter.Seconds())}
	}
	if errors.Is(err, unseal.ErrBusy) || errors.Is(err, ErrBusy) {
		return &APIError{Status: http.StatusServiceUnavailable, Code: codeBusy, Message: err.Error(), RetryAfter: 1}
	}
	status, code := http.StatusInternalServerError, codeInternal
	switch {
	case errors.Is(err, unseal.ErrWrongPassword):
		status, code = http.StatusUnauthorized, codeWrongPassword
	case errors.Is(err, keyring.ErrNoSlot), errors.Is(err, keyring.ErrNoClient):
		status, code = http.StatusNotFound, codeNotFound
	case errors.Is(err, admin.ErrInvite), errors.Is(err, admin.ErrRecovery):
		status, code = http.StatusUnauthorized, codeWrongPassword
	case errors.Is(err, admin.ErrLastAdmin), errors.Is(err, keyring.ErrSlotExists), errors.Is(err, admin.ErrReservedName), errors.Is(err, admin.ErrAmbiguous),
		errors.Is(err, keyring.ErrClientExists), errors.Is(err, admin.ErrClientState),
		errors.Is(err, admin.ErrChanged), errors.Is(err, admin.ErrNothingToRepair):
		status, code = http.StatusConflict, codeRefused
	case errors.Is(err, admin.ErrWeakPassword), errors.Is(err, unseal.ErrParams):
		status, code = http.StatusBadRequest, codeRefused
	case errors.Is(err, keyring.ErrInvalidName), errors.Is(err, admin.ErrInvalid):
		status, code = http.StatusBadRequest, codeBadRequest
	case errors.Is(err, unseal.ErrCommitment), errors.Is(err, unseal.ErrIntegrity), errors.Is(err, unseal.ErrStale), errors.Is(err, unseal.ErrRolledBack),
		errors.Is(err, keyring.ErrCorrupt), errors.Is(err, unseal.ErrSecret), errors.Is(err, audit.ErrBroken):
		status, code = http.StatusInternalServerError, codeIntegrity
	case errors.Is(err, memlock.ErrLockFailed):
		status, code = http.StatusInternalServerError, codeMemlock
	}
	return &APIError{Status: status, Code: code, Message: err.Error()}
}

func badRequest(format string, a ...any) *APIError {
	return &APIError{Status: http.StatusBadRequest, Code: codeBadRequest, Message: fmt.Sprintf(format, a...)}
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
