package unseal

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

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
var ErrParams = errors.New("kdf parameters out of range")

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

// derive runs Argon2id. The caller wipes the result.
func derive(password, salt []byte, p keyring.Params) []byte {
	work.derivations.Add(1)
	work.cost.Add(uint64(p.MemoryKiB) * uint64(p.Time))
	return argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, keyring.KeySize)
}

// Calibrate picks parameters for new slots that take about target on this
// host: memory first (up to maxMemKiB), then passes. It never returns less
// than the floor; a target shorter than the floor's cost gets the floor.
// It runs one or two derivations, so it takes about target plus the floor's
// time.
func Calibrate(target time.Duration, maxMemKiB uint32) keyring.Params {
	p := floor
	if maxMemKiB < p.MemoryKiB {
		maxMemKiB = p.MemoryKiB
	}
	if maxMemKiB > MaxMemoryKiB {
		maxMemKiB = MaxMemoryKiB
	}
	took := timeOne(p)
	if took >= target {
		return p
	}
	// Argon2id's time is close to linear in m*t.
	scale := float64(target) / float64(took)
	m := float64(p.MemoryKiB) * scale
	if m > float64(maxMemKiB) {
		m = float64(maxMemKiB)
	}
	p.MemoryKiB = uint32(m) / 1024 * 1024
	if p.MemoryKiB < floor.MemoryKiB {
		p.MemoryKiB = floor.MemoryKiB
	}
	if p.MemoryKiB == maxMemKiB || uint32(m) >= maxMemKiB {
		took = timeOne(p)
		t := float64(p.Time) * float64(target) / float64(took)
		p.Time = uint32(t + 0.5)
		if p.Time < floor.Time {
			p.Time = floor.Time
		}
		if p.Time > MaxTime {
			p.Time = MaxTime
		}
	}
	return p
}

func timeOne(p keyring.Params) time.Duration {
	salt := make([]byte, keyring.SaltSize)
	start := time.Now()
	k := derive([]byte("sealbox calibration"), salt, p)
	d := time.Since(start)
	clear(k)
	return d
}
