package admin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/keyring"
)

// Guessing defence. Attempts are counted per admin name (known or not, so
// that the answers do not tell which names exist) and, for callers other
// than root, globally. An attempt is counted as a failure before its
// derivation starts (a reservation), and the count is undone when it turns
// out right, so parallel guesses cannot outrun the wait: once the free
// attempts are reserved, the next one waits. After a few free failures each
// one doubles the wait before the next try, up to a cap. The counters are
// persisted in the keyring so that a restart does not reset them.
//
// Root is counted apart: its attempts have per-name counters of their own
// and no global limit, so no one without root can lock every admin out (a
// legitimate admin with sudo, or at the boot console, always has a way in).
// Root can read the keyring file and guess offline anyway; the online limit
// protects against callers who cannot.
const (
	freePerName   = 3
	capPerName    = 15 * time.Minute
	freeGlobal    = 20
	capGlobal     = 5 * time.Minute
	globalDecay   = time.Hour
	maxNames      = 1024 // name entries kept; the oldest is dropped past this
	backoffGlobal = "global"
)

// ErrBackoff is wrapped by *BackoffError.
var ErrBackoff = errors.New("too many failed attempts")

// BackoffError says when the next try is allowed.
type BackoffError struct {
	RetryAfter time.Duration
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("%v; try again in %v", ErrBackoff, e.RetryAfter.Round(time.Second))
}

// Unwrap returns ErrBackoff.
func (e *BackoffError) Unwrap() error { return ErrBackoff }

type backoffState struct {
	failures uint32
	last     int64 // unix nanoseconds of the last failure
	until    int64 // unix nanoseconds before which tries are refused
}

func (s backoffState) bytes() []byte {
	b := binary.BigEndian.AppendUint32(nil, s.failures)
	b = binary.BigEndian.AppendUint64(b, uint64(s.last))
	return binary.BigEndian.AppendUint64(b, uint64(s.until))
}

func parseBackoff(b []byte) backoffState {
	if len(b) != 20 {
		return backoffState{} // a damaged entry starts over; it can only loosen the wait
	}
	return backoffState{binary.BigEndian.Uint32(b), int64(binary.BigEndian.Uint64(b[4:])), int64(binary.BigEndian.Uint64(b[12:]))}
}

// source is who is guessing: "root" or "user".
type source string

func sourceOf(ctx context.Context) source {
	if p := audit.PeerFrom(ctx); p != nil && p.UID == 0 {
		return "root"
	}
	return "user"
}

func backoffKey(src source, name string) string {
	prefix := "name:"
	if src == "root" {
		prefix = "root:"
	}
	if keyring.ValidName(name) != nil {
		return prefix + "~invalid"
	}
	return prefix + name
}

func (s source) keys(name string) []string {
	if s == "root" {
		return []string{backoffKey(s, name)}
	}
	return []string{backoffKey(s, name), backoffGlobal}
}

// delay is the wait after the n-th failure.
func delay(n uint32, free uint32, limit time.Duration) time.Duration {
	if n < free {
		return 0
	}
	shift := n - free
	if shift > 30 {
		return limit
	}
	d := time.Second << shift
	return min(d, limit)
}

// checkBackoff refuses a try for name from src before its wait is over.
func checkBackoff(tx *keyring.Tx, name string, src source, now time.Time) error {
	wait := time.Duration(0)
	for _, k := range src.keys(name) {
		s := parseBackoff(tx.Backoff(k))
		if d := time.Duration(s.until - now.UnixNano()); d > wait {
			wait = d
		}
	}
	if wait > 0 {
		return &BackoffError{RetryAfter: time.Duration(math.Ceil(wait.Seconds())) * time.Second}
	}
	return nil
}

// reserve refuses a try while name is in backoff, and otherwise counts it
// as a failure now, in the same transaction; finish or unreserve settles it.
func reserve(tx *keyring.Tx, name string, src source, now time.Time) error {
	if err := checkBackoff(tx, name, src, now); err != nil {
		return err
	}
	n := now.UnixNano()
	for _, k := range src.keys(name) {
		free, limit := uint32(freePerName), capPerName
		s := parseBackoff(tx.Backoff(k))
		if k == backoffGlobal {
			free, limit = freeGlobal, capGlobal
			if now.Sub(time.Unix(0, s.last)) > globalDecay {
				s = backoffState{}
			}
		}
		s.failures++
		s.last, s.until = n, n+int64(delay(s.failures, free, limit))
		if err := tx.PutBackoff(k, s.bytes()); err != nil {
			return err
		}
	}
	return evictOldest(tx)
}

// unreserve takes back a reservation for an attempt that was not a guess
// (the KDF budget refused it, it was cancelled, the slot is unusable).
func unreserve(tx *keyring.Tx, name string, src source) error {
	for _, k := range src.keys(name) {
		s := parseBackoff(tx.Backoff(k))
		if s.failures == 0 {
			continue
		}
		s.failures--
		free, limit := uint32(freePerName), capPerName
		if k == backoffGlobal {
			free, limit = freeGlobal, capGlobal
		}
		s.until = s.last + int64(delay(s.failures, free, limit))
		if s.failures == 0 {
			s = backoffState{}
		}
		if err := tx.PutBackoff(k, s.bytes()); err != nil {
			return err
		}
	}
	return nil
}

// succeed settles a reservation that turned out right: name's count from
// src starts over, and the global count gets its reservation back.
func succeed(tx *keyring.Tx, name string, src source) error {
	if err := unreserve(tx, name, src); err != nil {
		return err
	}
	if tx.Backoff(backoffKey(src, name)) == nil {
		return nil
	}
	return tx.PutBackoff(backoffKey(src, name), nil)
}

// BackoffInfo is what Backoffs shows of one counter.
type BackoffInfo struct {
	Key      string     `json:"key"`
	Failures uint32     `json:"failures"`
	Last     time.Time  `json:"last_failure"`
	Until    *time.Time `json:"refused_until,omitempty"`
}

func evictOldest(tx *keyring.Tx) error {
	n, oldestKey, oldest := 0, "", int64(math.MaxInt64)
	tx.Backoffs(func(k string, v []byte) {
		if k == backoffGlobal {
			return
		}
		n++
		if s := parseBackoff(v); s.last < oldest {
			oldestKey, oldest = k, s.last
		}
	})
	if n > maxNames {
		return tx.PutBackoff(oldestKey, nil)
	}
	return nil
}
