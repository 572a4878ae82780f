package admin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sealbox/sealbox/keyring"
)

// Guessing defence. Failures are counted per admin name (known or not, so
// that the answers do not tell which names exist) and globally, persisted in
// the keyring so that a restart does not reset them. After a few free
// failures each one doubles the wait before the next try, up to a cap. A
// successful login resets that name's count; the global count decays after
// an hour without failures.
const (
	freePerName   = 3
	capPerName    = 15 * time.Minute
	freeGlobal    = 20
	capGlobal     = 5 * time.Minute
	globalDecay   = time.Hour
	maxNames      = 1024 // name entries kept; the oldest is dropped past this
	backoffGlobal = "global"
	backoffPrefix = "name:"
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

func backoffKey(name string) string {
	if keyring.ValidName(name) != nil {
		return backoffPrefix + "~invalid"
	}
	return backoffPrefix + name
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

// checkBackoff refuses a try for name before its wait is over.
func checkBackoff(tx *keyring.Tx, name string, now time.Time) error {
	wait := time.Duration(0)
	for _, k := range []string{backoffKey(name), backoffGlobal} {
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

// recordFailure counts a failed try for name and globally.
func recordFailure(tx *keyring.Tx, name string, now time.Time) error {
	n := now.UnixNano()
	s := parseBackoff(tx.Backoff(backoffKey(name)))
	s.failures++
	s.last, s.until = n, n+int64(delay(s.failures, freePerName, capPerName))
	if err := tx.PutBackoff(backoffKey(name), s.bytes()); err != nil {
		return err
	}
	g := parseBackoff(tx.Backoff(backoffGlobal))
	if now.Sub(time.Unix(0, g.last)) > globalDecay {
		g = backoffState{}
	}
	g.failures++
	g.last, g.until = n, n+int64(delay(g.failures, freeGlobal, capGlobal))
	if err := tx.PutBackoff(backoffGlobal, g.bytes()); err != nil {
		return err
	}
	return evictOldest(tx)
}

// recordSuccess clears name's count.
func recordSuccess(tx *keyring.Tx, name string) error {
	if tx.Backoff(backoffKey(name)) == nil {
		return nil
	}
	return tx.PutBackoff(backoffKey(name), nil)
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
