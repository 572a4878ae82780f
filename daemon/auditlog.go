package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// Group commit for read records: reads are queued and written in batches,
// one bbolt transaction (one fsync) per batch, at most every flushEvery or
// when maxBatch records are waiting. If the process dies, at most the reads
// of the last unflushed batch are lost: up to flushEvery's worth, or
// readQueue records. Admin changes never go through here: they are written
// in their own change's transaction (see admin), and seals are written
// synchronously (Sync).
const (
	flushEvery = 50 * time.Millisecond
	maxBatch   = 2048
	readQueue  = 16384
	pruneEvery = 4096 // records between retention checks
)

type auditor struct {
	kr   *keyring.Keyring
	log  *slog.Logger
	keep int

	// Pending records: appended under mu by readers, swapped out whole by
	// the writer. A reader waits on space only when readQueue are pending.
	mu      sync.Mutex
	space   *sync.Cond
	pending []audit.Event
	kick    chan struct{}   // a full batch is waiting
	flushes chan chan error // Flush requests
	done    chan struct{}

	keyMu sync.Mutex
	key   *memlock.Buffer // from the first unseal on; nil before
	// writeMu is held while a batch is written; a rekey holds it so that no
	// batch is signed with the old key after the epoch closed.
	writeMu sync.Mutex
	// since counts records written since the last retention check.
	since int
}

func newAuditor(kr *keyring.Keyring, log *slog.Logger, keep int) *auditor {
	a := &auditor{kr: kr, log: log, keep: keep, kick: make(chan struct{}, 1),
		flushes: make(chan chan error), done: make(chan struct{})}
	a.space = sync.NewCond(&a.mu)
	return a
}

// setKey installs the audit key from an unseal. The first one is kept for
// the process's life; later ones are the same key and are destroyed.
func (a *auditor) setKey(k *memlock.Buffer) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if a.key == nil {
		a.key = k
	} else {
		k.Destroy()
	}
}

// replaceKey installs the audit key of a rekey, replacing the old one.
func (a *auditor) replaceKey(k *memlock.Buffer) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	a.key.Destroy()
	a.key = k
}

// keyBytes returns the audit key, or nil before the first unseal.
func (a *auditor) keyBytes() []byte {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if a.key == nil {
		return nil
	}
	return a.key.Bytes()
}

// Read queues a read record. It waits when readQueue records are pending:
// reads slow down rather than go unrecorded.
func (a *auditor) Read(ev audit.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	a.mu.Lock()
	for len(a.pending) >= readQueue {
		a.space.Wait()
	}
	a.pending = append(a.pending, ev)
	full := len(a.pending) >= maxBatch
	a.mu.Unlock()
	if full {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// Sync writes ev now, after every queued read, and returns once it is on
// disk.
func (a *auditor) Sync(ev audit.Event) error {
	a.Read(ev)
	return a.Flush()
}

// Flush returns once everything queued so far is on disk.
func (a *auditor) Flush() error {
	c := make(chan error, 1)
	select {
	case a.flushes <- c:
		return <-c
	case <-a.done:
		return nil
	}
}

// take swaps out the pending records and wakes readers waiting for space.
func (a *auditor) take() []audit.Event {
	a.mu.Lock()
	batch := a.pending
	a.pending = nil
	a.space.Broadcast()
	a.mu.Unlock()
	return batch
}

// run writes batches until ctx ends, then drains the queue.
func (a *auditor) run(ctx context.Context) {
	defer close(a.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.write(a.take())
		case <-a.kick:
			a.write(a.take())
		case c := <-a.flushes:
			c <- a.write(a.take())
		case <-ctx.Done():
			a.write(a.take())
			return
		}
	}
}

func (a *auditor) write(batch []audit.Event) error {
	if len(batch) == 0 {
		return nil
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	key := a.keyBytes()
	a.since += len(batch)
	prune := key != nil && a.keep > 0 && a.since >= pruneEvery
	err := a.kr.Update(func(tx *keyring.Tx) error {
		if err := audit.Append(tx, key, batch...); err != nil {
			return err
		}
		if prune {
			a.since = 0
			if n, err := audit.Prune(tx, key, a.keep); err != nil {
				a.log.Error("audit: pruning failed", "error", err)
			} else if n > 0 {
				a.log.Info("audit: pruned old records", "removed", n, "kept", a.keep)
			}
		}
		return nil
	})
	if err != nil {
		a.log.Error("audit: writing records failed", "records", len(batch), "error", err)
	}
	return err
}

// close destroys the key; run must have returned.
func (a *auditor) close() {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	a.key.Destroy()
	a.key = nil
}
