// Package errclass sorts sealbox's errors into a few classes, in the spirit
// of io/fs's ErrNotExist and ErrPermission: each sentinel error in keyring,
// unseal, audit, admin and daemon is made with New and belongs to one
// class, which errors.Is finds through any wrapping. The admin API sends
// the class as its error code, the CLIs turn it into an exit code, and each
// of those mappings is one short switch over the classes instead of a list
// of every sentinel.
//
// An error of no class is Internal: a failure the caller can do nothing
// about but report.
package errclass

import "errors"

// Class is an error class. Its string is the admin API's error code.
type Class string

func (c Class) Error() string { return string(c) }

// The classes.
const (
	// Auth: a wrong password, invite code or recovery code.
	Auth Class = "auth"
	// Invalid: the request or its input is not acceptable as given (a bad
	// name, a weak password, out-of-range parameters).
	Invalid Class = "invalid"
	// NotFound: no such admin or client.
	NotFound Class = "not_found"
	// Refused: a valid request the keyring's state does not allow (the
	// last admin, a name taken, a changed keyring).
	Refused Class = "refused"
	// Busy: try again later (guessing backoff, too many derivations).
	Busy Class = "busy"
	// Sealed: the daemon does not hold the secret.
	Sealed Class = "sealed"
	// Forbidden: the peer is not a registered, active client.
	Forbidden Class = "forbidden"
	// Unavailable: the daemon or the keyring cannot be reached or used now.
	Unavailable Class = "unavailable"
	// Integrity: the keyring does not verify.
	Integrity Class = "integrity"
	// Timeout: a wait ran out (for an unseal, or for the daemon).
	Timeout Class = "timeout"
	// Internal: anything else.
	Internal Class = "internal"
)

// all is every class but Internal, in the order Of tries them: an error
// that wraps errors of two classes is the first one's.
var all = []Class{Timeout, Integrity, Busy, Auth, Sealed, Forbidden, Unavailable, NotFound, Invalid, Refused}

// New returns a sentinel error with message msg that belongs to class c.
func New(c Class, msg string) error { return &sentinel{msg: msg, class: c} }

type sentinel struct {
	msg   string
	class Class
}

func (s *sentinel) Error() string { return s.msg }

// Is makes errors.Is(err, c) hold for the sentinel's class c.
func (s *sentinel) Is(target error) bool { return target == s.class }

// Of returns err's class, or Internal. A Class given as an error is its own.
func Of(err error) Class {
	if err == nil {
		return ""
	}
	for _, c := range all {
		if errors.Is(err, c) {
			return c
		}
	}
	return Internal
}

// Parse returns the class named code (an API error code), or Internal.
func Parse(code string) Class {
	for _, c := range all {
		if string(c) == code {
			return c
		}
	}
	return Internal
}

// The exit codes of sealbox and sealbox-admin, one table for both:
//
//	0 success
//	1 failure (Internal: anything else)
//	2 usage, or input that is not acceptable (Invalid)
//	3 wrong password, code or unknown admin (Auth)
//	4 refused: by a rule, no such admin or client, not a registered
//	  active client (Refused, NotFound, Forbidden)
//	5 daemon unreachable, keyring busy (Unavailable)
//	6 integrity check failed (Integrity)
//	7 sealed (Sealed)
//	8 too many attempts or derivations, retry later (Busy)
//	9 a wait timed out (Timeout)
const (
	ExitOK        = 0
	ExitFailure   = 1
	ExitUsage     = 2
	ExitAuth      = 3
	ExitRefused   = 4
	ExitUnavail   = 5
	ExitIntegrity = 6
	ExitSealed    = 7
	ExitBusy      = 8
	ExitTimeout   = 9
)

// ExitCodes is the table above, for the man pages.
var ExitCodes = []struct {
	Code    int
	Meaning string
}{
	{ExitOK, "success"},
	{ExitFailure, "failure not covered below"},
	{ExitUsage, "usage, or input that is not acceptable (a bad name, a weak password, a path that is not a keyring file)"},
	{ExitAuth, "wrong password or code, or unknown admin (one answer for both)"},
	{ExitRefused, "refused by a rule; no such admin or client; not a registered active client"},
	{ExitUnavail, "daemon unreachable, or the keyring is held by another process"},
	{ExitIntegrity, "the keyring does not verify (edited, damaged or rolled back)"},
	{ExitSealed, "the daemon is sealed (status too, after printing the state)"},
	{ExitBusy, "too many attempts or derivations; retry later"},
	{ExitTimeout, "a wait ran out"},
}

// Exit returns the exit code of an error of class c (see the table above).
func Exit(c Class) int {
	switch c {
	case "":
		return ExitOK
	case Invalid:
		return ExitUsage
	case Auth:
		return ExitAuth
	case Refused, NotFound, Forbidden:
		return ExitRefused
	case Unavailable:
		return ExitUnavail
	case Integrity:
		return ExitIntegrity
	case Sealed:
		return ExitSealed
	case Busy:
		return ExitBusy
	case Timeout:
		return ExitTimeout
	}
	return ExitFailure
}
