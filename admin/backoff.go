package admin

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/keyring"
)

// Guessing defence. Attempts are counted per admin name (known or not, so
// that the answers do not tell which names exist) and, for callers other
// than root, globally. An attempt is reserved (recorded in flight) in a
// transaction of its own before its derivation starts, and settled after
// it, so parallel guesses cannot outrun the wait: while the attempts in
// flight would use up the free ones, the next one waits. A reservation that
// is never settled (its process was killed) stops counting at once. After a few free failures each
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
var ErrBackoff = errclass.New(errclass.Busy, "too many failed attempts")

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

// An attempt in flight is a backoff entry "flight:TOKEN" holding the pid of
// the process deriving, when it started, and the counters it is reserved
// against. It counts while that process lives, for at most inflightTTL: a
// process killed during its derivation leaves nothing that counts.
const (
	flightPrefix = "flight:"
	inflightTTL  = 2 * time.Minute
)

type flight struct {
	pid   uint32
	start int64
	keys  []string // the counters it is reserved against
}

func (f flight) bytes() []byte {
	b := binary.BigEndian.AppendUint32(nil, f.pid)
	b = binary.BigEndian.AppendUint64(b, uint64(f.start))
	for _, k := range f.keys {
		b = append(b, byte(len(k)))
		b = append(b, k...)
	}
	return b
}

func parseFlight(b []byte) (flight, bool) {
	if len(b) < 12 {
		return flight{}, false
	}
	f := flight{pid: binary.BigEndian.Uint32(b), start: int64(binary.BigEndian.Uint64(b[4:]))}
	for rest := b[12:]; len(rest) > 0; {
		n := int(rest[0])
		if len(rest) < 1+n {
			return flight{}, false
		}
		f.keys = append(f.keys, string(rest[1:1+n]))
		rest = rest[1+n:]
	}
	return f, true
}

// live reports whether an attempt in flight still counts.
func (f flight) live(now time.Time) bool {
	if age := now.Sub(time.Unix(0, f.start)); age > inflightTTL || age < -time.Minute {
		return false
	}
	return syscall.Kill(int(f.pid), 0) != syscall.ESRCH
}

// inFlight counts the live attempts reserved against each counter, and
// names the entries that no longer count.
func inFlight(tx *keyring.Tx, now time.Time) (map[string]uint32, []string) {
	counts := map[string]uint32{}
	var dead []string
	tx.Backoffs(func(k string, v []byte) {
		if !strings.HasPrefix(k, flightPrefix) {
			return
		}
		f, ok := parseFlight(v)
		if !ok || !f.live(now) {
			dead = append(dead, k)
			return
		}
		for _, c := range f.keys {
			counts[c]++
		}
	})
	return counts, dead
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

func limits(k string) (uint32, time.Duration) {
	if k == backoffGlobal {
		return freeGlobal, capGlobal
	}
	return freePerName, capPerName
}

// load reads one counter as of now (the global one decays after an hour
// without failures).
func load(tx *keyring.Tx, k string, now time.Time) backoffState {
	s := parseBackoff(tx.Backoff(k))
	if k == backoffGlobal && now.Sub(time.Unix(0, s.last)) > globalDecay {
		s = backoffState{}
	}
	// No wait is longer than the cap from now: an entry written to say
	// otherwise (the counters are not authenticated) cannot lock anyone out
	// for longer.
	if _, limit := limits(k); s.until > now.Add(limit).UnixNano() {
		s.until = now.Add(limit).UnixNano()
	}
	return s
}

// checkBackoff refuses a try for name from src before its wait is over, or
// while attempts already in flight would use up the free ones.
func checkBackoff(tx *keyring.Tx, name string, src source, now time.Time, flying map[string]uint32) error {
	wait := time.Duration(0)
	for _, k := range src.keys(name) {
		s := load(tx, k, now)
		if d := time.Duration(s.until - now.UnixNano()); d > wait {
			wait = d
		}
		if free, _ := limits(k); flying[k] > 0 && s.failures+flying[k] >= free {
			wait = max(wait, time.Second)
		}
	}
	if wait > 0 {
		return &BackoffError{RetryAfter: time.Duration(math.Ceil(wait.Seconds())) * time.Second}
	}
	return nil
}

// reserve refuses a try while name is in backoff, and otherwise records it
// as in flight, in the same transaction, so that parallel guesses see it.
// finish settles it; the token names the reservation.
func reserve(tx *keyring.Tx, name string, src source, now time.Time) (string, error) {
	flying, dead := inFlight(tx, now)
	for _, k := range dead {
		if err := tx.PutBackoff(k, nil); err != nil {
			return "", err
		}
	}
	if err := checkBackoff(tx, name, src, now, flying); err != nil {
		return "", err
	}
	var tok [8]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return "", err
	}
	token := flightPrefix + hex.EncodeToString(tok[:])
	f := flight{pid: uint32(os.Getpid()), start: now.UnixNano(), keys: src.keys(name)}
	return token, tx.PutBackoff(token, f.bytes())
}

// outcome of an attempt, for finish.
type outcome int

const (
	neutral outcome = iota // not a guess: the budget refused it, the slot is unusable
	failed                 // a wrong password or code
	passed                 // the right one: the name's count starts over
)

// finish settles a reservation.
func finish(tx *keyring.Tx, token, name string, src source, o outcome, now time.Time) error {
	if err := tx.PutBackoff(token, nil); err != nil {
		return err
	}
	for _, k := range src.keys(name) {
		s := load(tx, k, now)
		switch {
		case o == failed:
			free, limit := limits(k)
			s.failures++
			s.last, s.until = now.UnixNano(), now.UnixNano()+int64(delay(s.failures, free, limit))
		case o == passed && k != backoffGlobal:
			s = backoffState{}
		default:
			continue
		}
		var v []byte
		if s.failures != 0 {
			v = s.bytes()
		}
		if err := tx.PutBackoff(k, v); err != nil {
			return err
		}
	}
	if o == failed {
		return evictOldest(tx)
	}
	return nil
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
		if k == backoffGlobal || strings.HasPrefix(k, flightPrefix) {
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
