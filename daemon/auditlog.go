package daemon

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
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
	// aggWindow: refusals of one peer (uid, gid, unit, what it asked) are
	// written as one record per window, with a count and the first and last
	// times: a flood costs at most one record per peer per window.
	aggWindow = 10 * time.Second
)

type aggKey struct {
	stream   keyring.Stream
	kind     audit.Kind
	outcome  audit.Outcome
	client   string
	uid, gid uint32
	unit     string
	detail   string
}

type aggregate struct {
	ev    audit.Event // the last one, with its peer
	first time.Time
	count int64
}

type auditor struct {
	kr   *keyring.Keyring
	log  *slog.Logger
	keep [2]int // records kept per stream (0: no cap)
	wm   *unseal.Watermark

	// Pending records: appended under mu by readers, swapped out whole by
	// the writer. A reader waits on space only when readQueue are pending.
	mu      sync.Mutex
	space   *sync.Cond
	pending []pendingEvent
	aggs    map[aggKey]*aggregate // refusals being counted
	kick    chan struct{}         // a full batch is waiting
	flushes chan chan error       // Flush requests
	done    chan struct{}

	keyMu sync.Mutex
	// keys are the log keys (audit key || root key) from the first unseal
	// on, kept in locked memory until the process exits: with them the
	// daemon writes keyed records and re-signs the state root for them
	// while sealed too. They reveal nothing of the DataKey. Nil before.
	keys *memlock.Buffer
	// writeMu is held while a batch is written; a rekey holds it so that no
	// batch is signed with the old key after the epoch closed.
	writeMu sync.Mutex
	// since counts records written since the last retention check.
	since int

	// written is closed (and replaced) after every committed batch: audit
	// followers wait on it, and the writer never waits on them.
	writtenMu sync.Mutex
	written   chan struct{}
	// journal, if set, gets every committed record (journal.go).
	journal *journal
	// published is each stream's last record followers and the journal
	// have been told of.
	pubMu     sync.Mutex
	published [2]uint64
}

// wroteCh returns the channel closed after the next committed batch.
func (a *auditor) wroteCh() <-chan struct{} {
	a.writtenMu.Lock()
	defer a.writtenMu.Unlock()
	if a.written == nil {
		a.written = make(chan struct{})
	}
	return a.written
}

func (a *auditor) wrote() {
	a.writtenMu.Lock()
	defer a.writtenMu.Unlock()
	if a.written != nil {
		close(a.written)
		a.written = nil
	}
}

type pendingEvent struct {
	stream keyring.Stream
	ev     audit.Event
}

func newAuditor(kr *keyring.Keyring, log *slog.Logger, keepEvents, keepReads int, wm *unseal.Watermark) *auditor {
	a := &auditor{kr: kr, log: log, keep: [2]int{keepEvents, keepReads}, wm: wm, kick: make(chan struct{}, 1),
		flushes: make(chan chan error), done: make(chan struct{}), aggs: map[aggKey]*aggregate{}}
	a.space = sync.NewCond(&a.mu)
	return a
}

// setKeys installs the log keys from an unseal. The first ones are kept for
// the process's life; later ones are the same keys and are destroyed.
func (a *auditor) setKeys(k *memlock.Buffer) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if a.keys == nil {
		a.keys = k
	} else {
		k.Destroy()
	}
}

// replaceKeys installs the log keys of a rekey (nil at shutdown), replacing
// the old ones. The old buffer is destroyed only once no write transaction
// can still be using it: the manager reads the keys (keyBytes) inside its
// own write transactions, one of which may have begun between the rekey's
// commit and this swap. Waiting for the write lock (a transaction that
// changes nothing) outlasts it; later ones get the new keys.
func (a *auditor) replaceKeys(k *memlock.Buffer) {
	a.keyMu.Lock()
	old := a.keys
	a.keys = k
	a.keyMu.Unlock()
	_ = a.kr.Update(func(*keyring.Tx) error { return errKeysSwapped })
	old.Destroy()
}

// errKeysSwapped rolls back replaceKeys' empty transaction.
var errKeysSwapped = errors.New("daemon: log keys swapped")

// keyBytes returns the log keys, or nil before the first unseal. The slice
// is valid until the next rekey: for the duration of a write transaction
// (see replaceKeys), or while writeMu is held (a rekey holds it).
func (a *auditor) keyBytes() []byte {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if a.keys == nil {
		return nil
	}
	return a.keys.Bytes()
}

// Read queues a record for stream s. It waits when readQueue records are
// pending: reads slow down rather than go unrecorded.
func (a *auditor) Read(s keyring.Stream, ev audit.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if (ev.Outcome == audit.Refused || ev.Outcome == audit.Backoff) && ev.Peer != nil {
		a.refused(s, ev)
		return
	}
	a.mu.Lock()
	for len(a.pending) >= readQueue {
		a.space.Wait()
	}
	a.pending = append(a.pending, pendingEvent{s, ev})
	full := len(a.pending) >= maxBatch
	a.mu.Unlock()
	if full {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// refused counts a refusal into its peer's aggregate for the window.
func (a *auditor) refused(s keyring.Stream, ev audit.Event) {
	k := aggKey{stream: s, kind: ev.Kind, outcome: ev.Outcome, client: ev.Client, uid: ev.Peer.UID, gid: ev.Peer.GID, unit: ev.Peer.Unit, detail: ev.Detail}
	a.mu.Lock()
	defer a.mu.Unlock()
	if g := a.aggs[k]; g != nil {
		g.count++
		g.ev = ev
		return
	}
	if len(a.aggs) >= readQueue {
		// Too many peers at once: the oldest aggregates go out early.
		a.drainAggs(time.Time{})
	}
	a.aggs[k] = &aggregate{ev: ev, first: ev.Time, count: 1}
}

// drainAggs moves the aggregates whose window began before cutoff (all,
// with the zero time) to the pending records. The caller holds mu.
func (a *auditor) drainAggs(cutoff time.Time) {
	for k, g := range a.aggs {
		if !cutoff.IsZero() && g.first.After(cutoff) {
			continue
		}
		ev := g.ev
		if g.count > 1 {
			first := g.first
			ev.Count, ev.First = g.count, &first
		}
		a.pending = append(a.pending, pendingEvent{k.stream, ev})
		delete(a.aggs, k)
	}
}

// Sync writes ev to the events stream now, after every queued record, and
// returns once it is on disk.
func (a *auditor) Sync(ev audit.Event) error {
	a.Read(keyring.Events, ev)
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

// exclusive writes what is pending, then runs fn with no batch written
// meanwhile: a rekey closes the audit key's epoch, and no batch may be
// signed with the old key after that, until OnCommit has installed the new
// keys (which fn's change does before it returns).
func (a *auditor) exclusive(fn func() error) error {
	if err := a.Flush(); err != nil {
		return err
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	return fn()
}

// take swaps out the pending records, with the aggregates whose window is
// over (all of them when all is set), and wakes readers waiting for space.
func (a *auditor) take(all bool) []pendingEvent {
	a.mu.Lock()
	cutoff := time.Now().Add(-aggWindow)
	if all {
		cutoff = time.Time{}
	}
	a.drainAggs(cutoff)
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
			a.write(a.take(false))
		case <-a.kick:
			a.write(a.take(false))
		case c := <-a.flushes:
			c <- a.write(a.take(true))
		case <-ctx.Done():
			a.write(a.take(true))
			return
		}
	}
}

func (a *auditor) write(batch []pendingEvent) error {
	if len(batch) == 0 {
		return nil
	}
	var byStream [2][]audit.Event
	for _, p := range batch {
		byStream[p.stream] = append(byStream[p.stream], p.ev)
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	keys := a.keyBytes()
	a.since += len(batch)
	prune := keys != nil && a.since >= pruneEvery
	if prune {
		a.since = 0
	}
	var unsigned error
	err := a.kr.Update(func(tx *keyring.Tx) error {
		for s, evs := range byStream {
			keep := 0
			if prune {
				keep = a.keep[s]
			}
			if len(evs) == 0 && keep == 0 {
				continue
			}
			n, err := admin.Log(tx, keys, a.wm, keyring.Stream(s), keep, evs...)
			if err != nil {
				if !errors.Is(err, unseal.ErrIntegrity) && !errors.Is(err, unseal.ErrRolledBack) {
					return err
				}
				unsigned = err
			}
			if n > 0 {
				a.log.Info("audit: pruned old records", "stream", keyring.Stream(s).String(), "removed", n, "kept", keep)
			}
		}
		return nil
	})
	if unsigned != nil {
		a.log.Error("audit: the keyring's state root does not verify, so these records were written unkeyed; run sealbox-admin check", "records", len(batch), "error", unsigned)
	}
	if err != nil {
		a.log.Error("audit: writing records failed", "records", len(batch), "error", err)
		return err
	}
	a.publish()
	return nil
}

// publish tells audit followers that records were committed and forwards
// the new ones to the journal. Records come from the writer here and from
// admin.Manager's changes and logins (the admin socket calls publish after
// each request), so it looks at what the keyring holds past what it last
// published, rather than at what was handed to it.
func (a *auditor) publish() {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	var last [2]uint64
	_ = a.kr.View(func(tx *keyring.Tx) error {
		for s := range last {
			_, last[s] = tx.AuditBounds(keyring.Stream(s))
			if a.journal != nil && last[s] > a.published[s] {
				a.journal.send(audit.List(tx, audit.Filter{Reads: s == int(keyring.Reads), After: a.published[s]}))
			}
		}
		return nil
	})
	if last != a.published {
		a.published = last
		a.wrote()
	}
}

// startPublishing marks what the keyring holds at start as published: the
// journal gets what is written from now on.
func (a *auditor) startPublishing() {
	_ = a.kr.View(func(tx *keyring.Tx) error {
		for s := range a.published {
			_, a.published[s] = tx.AuditBounds(keyring.Stream(s))
		}
		return nil
	})
}

// close destroys the keys; run must have returned, the keyring must still
// be open: an admin request that outlived the shutdown's grace period may
// be inside a write transaction with the keys in hand (replaceKeys waits).
func (a *auditor) close() {
	a.journal.close()
	a.replaceKeys(nil)
}
