package unseal

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sealbox/sealbox/internal/errclass"
)

// ErrBusy is wrapped when a derivation cannot get memory from the budget in
// time, or the queue for it is full.
var ErrBusy = errclass.New(errclass.Busy, "too many password checks in progress; try again shortly")

// Budget caps the memory that concurrent Argon2id derivations may use. A
// derivation that does not fit waits, in a queue of bounded length and for a
// bounded time, then fails with ErrBusy: a storm of attempts queues or is
// refused, and never runs the daemon out of memory. The zero value is not
// usable; a nil *Budget admits everything.
type Budget struct {
	mu         sync.Mutex
	capKiB     uint64
	usedKiB    uint64
	waiting    int
	maxWaiting int
	maxWait    time.Duration
	freed      chan struct{} // closed and replaced on every release
}

// NewBudget returns a budget of capKiB, with at most maxWaiting derivations
// queued, each for at most maxWait.
func NewBudget(capKiB uint64, maxWaiting int, maxWait time.Duration) *Budget {
	return &Budget{capKiB: capKiB, maxWaiting: maxWaiting, maxWait: maxWait, freed: make(chan struct{})}
}

// CapKiB returns the budget's size.
func (b *Budget) CapKiB() uint64 { return b.capKiB }

// Acquire reserves kib for one derivation; call the returned func when done.
func (b *Budget) Acquire(ctx context.Context, kib uint64) (func(), error) {
	if b == nil {
		return func() {}, nil
	}
	if kib > b.capKiB {
		return nil, fmt.Errorf("%w: one derivation needs %d MiB, the budget is %d MiB", ErrParams, kib/1024, b.capKiB/1024)
	}
	var timeout <-chan time.Time
	b.mu.Lock()
	for b.usedKiB+kib > b.capKiB {
		if timeout == nil {
			if b.waiting >= b.maxWaiting {
				b.mu.Unlock()
				return nil, ErrBusy
			}
			t := time.NewTimer(b.maxWait)
			defer t.Stop()
			timeout = t.C
		}
		b.waiting++
		freed := b.freed
		b.mu.Unlock()
		var err error
		select {
		case <-freed:
		case <-timeout:
			err = ErrBusy
		case <-ctx.Done():
			err = ctx.Err()
		}
		b.mu.Lock()
		b.waiting--
		if err != nil {
			b.mu.Unlock()
			return nil, err
		}
	}
	b.usedKiB += kib
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.usedKiB -= kib
			close(b.freed)
			b.freed = make(chan struct{})
			b.mu.Unlock()
		})
	}, nil
}

// InUse returns the memory reserved now, for status and tests.
func (b *Budget) InUse() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.usedKiB
}
