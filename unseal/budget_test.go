package unseal

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBudgetNeverExceedsItsCap(t *testing.T) {
	t.Parallel()
	b := NewBudget(100, 100, 10*time.Second)
	var peak, cur atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := b.Acquire(context.Background(), 40)
			if err != nil {
				t.Error(err)
				return
			}
			n := cur.Add(40)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			cur.Add(-40)
			release()
			release() // idempotent
		}()
	}
	wg.Wait()
	if peak.Load() > 100 || peak.Load() < 80 {
		t.Fatalf("peak %d KiB with a 100 KiB budget of 40 KiB derivations", peak.Load())
	}
	if b.InUse() != 0 {
		t.Fatalf("%d KiB still reserved", b.InUse())
	}
}

func TestBudgetRefusesBeyondItsQueue(t *testing.T) {
	t.Parallel()
	b := NewBudget(10, 1, 50*time.Millisecond)
	release, err := b.Acquire(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan error, 1)
	go func() { _, err := b.Acquire(context.Background(), 10); queued <- err }()
	time.Sleep(10 * time.Millisecond)
	if _, err := b.Acquire(context.Background(), 10); !errors.Is(err, ErrBusy) {
		t.Fatalf("past the queue: %v", err)
	}
	if err := <-queued; !errors.Is(err, ErrBusy) {
		t.Fatalf("queued past its wait: %v", err)
	}
	if _, err := b.Acquire(context.Background(), 11); !errors.Is(err, ErrParams) {
		t.Fatalf("larger than the budget: %v", err)
	}
	release()
	r2, err := b.Acquire(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	r2()
	var nilBudget *Budget
	r3, err := nilBudget.Acquire(context.Background(), 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	r3()
}
