package unseal

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/argon2id"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// Argon2id limits. New slots never go below the floor (RFC 9106's second
// recommended set); a stored slot above a cap is refused before any memory is
// allocated, so a tampered file cannot exhaust the host.
const (
	MaxTime      = 16
	MaxMemoryKiB = 4 << 20 // 4 GiB
	MaxThreads   = 16
)

// RFC9106Floor is t=3, m=64 MiB, p=4.
var RFC9106Floor = keyring.Params{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// floor is the minimum for new slots. Only tests lower it, through
// UseTestFloor.
var floor = RFC9106Floor

// ErrParams is wrapped when KDF parameters are out of range.
var ErrParams = errclass.New(errclass.Invalid, "kdf parameters out of range")

// UseTestFloor lowers the floor for new slots so that tests run fast. It
// panics outside a test binary: production code has no way to weaken the KDF.
func UseTestFloor(p keyring.Params) {
	if !testing.Testing() {
		panic("unseal.UseTestFloor called outside a test binary")
	}
	floor = p
}

// Floor returns the minimum parameters for new slots.
func Floor() keyring.Params { return floor }

// CheckParams refuses parameters a slot may not be opened with.
func CheckParams(p keyring.Params) error {
	switch {
	case p.Time < 1 || p.Time > MaxTime:
		return fmt.Errorf("%w: t=%d (allowed 1..%d)", ErrParams, p.Time, MaxTime)
	case p.Threads < 1 || p.Threads > MaxThreads:
		return fmt.Errorf("%w: p=%d (allowed 1..%d)", ErrParams, p.Threads, MaxThreads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxMemoryKiB:
		return fmt.Errorf("%w: m=%d KiB (allowed %d..%d)", ErrParams, p.MemoryKiB, 8*uint32(p.Threads), MaxMemoryKiB)
	}
	return nil
}

// CheckNewParams refuses parameters below the floor or above the caps.
func CheckNewParams(p keyring.Params) error {
	if err := CheckParams(p); err != nil {
		return err
	}
	if p.Time < floor.Time || p.MemoryKiB < floor.MemoryKiB || p.Threads < floor.Threads {
		return fmt.Errorf("%w: %v is below the minimum %v", ErrParams, p, floor)
	}
	return nil
}

// work counts Argon2id derivations and their cost in KiB-passes (m*t), for
// status reporting and for tests that check two paths do the same work.
var work struct {
	derivations atomic.Uint64
	cost        atomic.Uint64
}

// Work returns how many Argon2id derivations this process has run and their
// summed cost in KiB-passes (m*t).
func Work() (derivations, cost uint64) {
	return work.derivations.Load(), work.cost.Load()
}

// derive runs Argon2id into a new locked buffer, which the caller
// destroys. The working memory is an arena outside the Go heap (kept ready
// by KeepArena, or mapped for this derivation), zeroed before derive
// returns; the derivation and each of its lanes run inside memlock.Do, so
// what they leave on stacks and in registers is erased too.
func derive(password, salt []byte, p keyring.Params) (*memlock.Buffer, error) {
	work.derivations.Add(1)
	work.cost.Add(uint64(p.MemoryKiB) * uint64(p.Time))
	kek, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil, err
	}
	a, put := arenas.get(p)
	defer put()
	memlock.Do(func() {
		err = argon2id.Derive(kek.Bytes(), password, salt, p.Time, p.MemoryKiB, p.Threads, a, &argon2id.Options{Do: memlock.Do})
	})
	if err != nil {
		kek.Destroy()
		return nil, fmt.Errorf("argon2id: %w", err)
	}
	return kek, nil
}

// arenas keeps at most one arena ready between derivations, while
// KeepArena says an unseal is plausible (sealboxd, while sealed): its pages
// are faulted in ahead of time, so the admin waiting on an unseal does not
// pay for them. Every other derivation maps an arena of its own and
// releases it after.
var arenas arenaPool

type arenaPool struct {
	mu   sync.Mutex
	kept *argon2id.Arena // ready, unused; nil when none
	want keyring.Params  // the size to keep; zero: keep none
	// preparing is closed when the arena KeepArena is faulting in is
	// kept; nil when none is being prepared. Closing hurry stops the
	// faulting early.
	preparing chan struct{}
	hurry     chan struct{}
	prepFor   keyring.Params
}

// get returns an arena for p (nil: Derive maps one for the call) and what to
// do with it after. An arena being faulted in for p is taken over: its
// faulting stops at the next chunk, and the derivation faults in the rest
// itself, in parallel, as with a fresh arena. So an unseal that comes right
// after sealboxd started costs what a cold derivation costs, and two arenas
// never double the peak memory.
func (ap *arenaPool) get(p keyring.Params) (*argon2id.Arena, func()) {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	for ap.kept == nil && ap.preparing != nil && fits(ap.prepFor, p) {
		ch := ap.preparing
		select {
		case <-ap.hurry:
		default:
			close(ap.hurry)
		}
		ap.mu.Unlock()
		<-ch
		ap.mu.Lock()
	}
	if a := ap.kept; a != nil && fits(ap.want, p) {
		ap.kept = nil
		return a, func() { ap.put(a) }
	}
	ownArenas.Add(1)
	return nil, func() {}
}

// ownArenas counts derivations that mapped an arena of their own.
var ownArenas atomic.Uint64

func fits(have, p keyring.Params) bool {
	return p.MemoryKiB <= have.MemoryKiB && p.Threads <= have.Threads
}

func (ap *arenaPool) put(a *argon2id.Arena) {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	if ap.kept == nil && ap.want != (keyring.Params{}) {
		ap.kept = a
		return
	}
	a.Release()
}

// KeepArena keeps an arena for a derivation with p ready (mapped and
// faulted in) until DropArena, so that an unseal with such a slot does not
// wait for its memory; it returns once the memory is ready. A second call
// replaces the first.
func KeepArena(p keyring.Params) error {
	if err := CheckParams(p); err != nil {
		return err
	}
	ready, hurry := make(chan struct{}), make(chan struct{})
	arenas.mu.Lock()
	arenas.preparing, arenas.hurry, arenas.prepFor = ready, hurry, p
	arenas.mu.Unlock()
	done := func(a *argon2id.Arena) (old *argon2id.Arena) {
		arenas.mu.Lock()
		defer arenas.mu.Unlock()
		if arenas.preparing == ready {
			arenas.preparing = nil
		}
		close(ready)
		if a != nil {
			old = arenas.kept
			arenas.kept, arenas.want = a, p
		}
		return old
	}
	warmOnce.Do(func() { warmUp(p.Threads) })
	a, err := argon2id.NewArena(p.MemoryKiB, p.Threads)
	if err == nil {
		if err = a.PrefaultUntil(hurry); err != nil {
			a.Release()
		}
	}
	if err != nil {
		done(nil)
		return err
	}
	old := done(a)
	if old != nil {
		old.Release()
	}
	return nil
}

// warmUp runs one small derivation (8 MiB, one pass) with threads lanes
// and throws it away. A process's first derivation is about a tenth slower
// than the ones after it, whatever its size (measured here: 870-1060 ms
// against 760-800 ms at m=980 MiB, t=5); after a 4 ms warm-up the first
// large one runs at the later ones' speed. KeepArena warms up once per
// process, so that the unseal an admin waits for after a boot is not
// sealboxd's first derivation. It is not counted in Work.
func warmUp(threads uint8) {
	h := make([]byte, 32)
	memlock.Do(func() {
		_ = argon2id.Derive(h, []byte("warm-up"), []byte("sealbox warm-up!"), 1, 8<<10, max(threads, 1), nil, &argon2id.Options{Do: memlock.Do})
	})
}

var warmOnce sync.Once

// DropArena keeps no arena from then on and releases the kept one (it holds
// only zeros between derivations) a second later: unmapping up to a GiB
// takes milliseconds and holds the process's memory map, which the unseal
// calling this and its answer need not wait for.
func DropArena() {
	arenas.mu.Lock()
	a := arenas.kept
	arenas.kept, arenas.want = nil, keyring.Params{}
	arenas.mu.Unlock()
	if a != nil {
		time.AfterFunc(releaseDelay, func() { a.Release() })
	}
}

// releaseDelay is how long a dropped arena stays mapped.
const releaseDelay = time.Second

// ArenaKept reports the parameters of the arena kept ready (zero if none).
func ArenaKept() keyring.Params {
	arenas.mu.Lock()
	defer arenas.mu.Unlock()
	if arenas.kept == nil {
		return keyring.Params{}
	}
	return arenas.want
}

// Calibrate picks parameters for new slots that take about target on this
// host: memory first (up to maxMemKiB), then passes. It never returns less
// than the floor; a target shorter than the floor's cost gets the floor.
//
// It calibrates the cold cost, the path an admin waits on: every timed
// derivation maps fresh working memory, as a daemon's first unseal does
// (sealboxd keeps memory ready while sealed, which only makes the real
// unseal faster). Each size is run once untimed first, to settle the CPU. Argon2id's time is close to
// linear in m*t, which gives a first guess from the floor; one timed run at
// that guess (the median of three) corrects it. It costs about three floor
// derivations and four at the target.
//
// report, if not nil, is told the parameters before each group of runs,
// for a progress display.
func Calibrate(target time.Duration, maxMemKiB uint32, report func(keyring.Params)) keyring.Params {
	if report == nil {
		report = func(keyring.Params) {}
	}
	p := floor
	maxMemKiB = max(maxMemKiB, p.MemoryKiB)
	maxMemKiB = min(maxMemKiB, uint32(MaxMemoryKiB))
	report(p)
	timeOne(p) // warm-up
	took := min(timeOne(p), timeOne(p))
	if took >= target {
		return p
	}
	p = scaleTo(p, float64(target)/float64(took), maxMemKiB)
	if p == floor {
		return p
	}
	report(p)
	timeOne(p) // warm-up at the new size
	runs := []time.Duration{timeOne(p), timeOne(p), timeOne(p)}
	slices.Sort(runs) // the median: one run the scavenger made cold, or a
	took = runs[1]    // neighbour's load, does not steer the result
	return scaleTo(p, float64(target)/float64(took), maxMemKiB)
}

// scaleTo multiplies p's cost by f: memory first, up to maxMemKiB (in whole
// MiB), then passes; never below the floor.
func scaleTo(p keyring.Params, f float64, maxMemKiB uint32) keyring.Params {
	cost := float64(p.MemoryKiB) * float64(p.Time) * f
	// With the floor's passes, how much memory would it take?
	m := cost / float64(floor.Time)
	t := float64(floor.Time)
	if m > float64(maxMemKiB) {
		// As few passes as fit the cost within the memory allowed, and
		// then the memory that makes up the cost with them: rounding the
		// passes alone would miss the target by up to a pass's worth.
		t = min(max(math.Ceil(cost/float64(maxMemKiB)), float64(floor.Time)), float64(MaxTime))
		m = min(cost/t, float64(maxMemKiB))
	}
	out := p
	out.MemoryKiB = max(uint32(m)/1024*1024, floor.MemoryKiB)
	out.Time = max(uint32(t), floor.Time)
	return out
}

// timeOne times one derivation. It collects garbage first, so the previous
// derivation's memory is free for this one to reuse.
func timeOne(p keyring.Params) time.Duration {
	salt := make([]byte, keyring.SaltSize)
	runtime.GC()
	start := time.Now()
	k, err := derive([]byte("sealbox calibration"), salt, p)
	d := time.Since(start)
	if err == nil {
		k.Destroy()
	}
	return d
}
