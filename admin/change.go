package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// session is an authenticated admin (or code holder): the key their slot
// unwrapped, the log keys derived from it, and the slot as it was stored
// when they authenticated.
type session struct {
	key     *unseal.Key
	logKeys *memlock.Buffer // audit key || root key
	header  *keyring.Header
	slot    *keyring.Slot
	raw     []byte // the slot record's stored bytes
}

func (s *session) close() {
	s.key.Destroy()
	s.logKeys.Destroy()
}

func (s *session) auditKey() []byte { return auditKey(s.logKeys.Bytes()) }

// authenticate opens actor's admin slot with password, for operation op,
// and brings the actor's slot and the file up to date: a format-1 file is
// upgraded, and a slot that missed a rekey, holds a format-1 payload, or is
// below the keyring's policy is rewrapped, in changes of their own after the
// file verified.
func (m *Manager) authenticate(ctx context.Context, op audit.Kind, actor string, password []byte) (*session, error) {
	s, err := m.authenticateKind(ctx, op, actor, password, keyring.KindAdmin)
	if err != nil {
		return nil, err
	}
	if err := m.bringUpToDate(ctx, s, password); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (m *Manager) bringUpToDate(ctx context.Context, s *session, secret []byte) error {
	if s.slot.Legacy != nil {
		if err := m.upgrade(ctx, s, secret); err != nil {
			return err
		}
	}
	if s.slot.Kind == keyring.KindAdmin && (s.key.Rewrap || belowPolicy(s.slot.Params, s.header.Policy)) {
		// Verify before deriving: a pending key or a policy that the state
		// root does not vouch for costs no derivation and is never acted on.
		if err := m.kr.View(func(tx *keyring.Tx) error {
			t, err := m.begin(tx, s)
			if err != nil {
				return err
			}
			return t.rep.Err()
		}); err != nil {
			return err
		}
		return m.refresh(ctx, s, secret)
	}
	return nil
}

// decoyParams are what an unknown name costs: the keyring's policy, but no
// more in any dimension than the most expensive admin slot (most, the zero
// value when there is none), raised to the floor. Neither is verified
// before a key is at hand, so someone who can write the file can move the
// cost of unknown names between the floor and that slot's; they can read
// the names from the file anyway (see FORMAT.md).
func decoyParams(h *keyring.Header, most keyring.Params) keyring.Params {
	p := h.Policy
	if most != (keyring.Params{}) {
		p.Time, p.MemoryKiB, p.Threads = min(p.Time, most.Time), min(p.MemoryKiB, most.MemoryKiB), min(p.Threads, most.Threads)
	}
	p = newSlotParams(p)
	if unseal.CheckParams(p) != nil {
		p = unseal.Floor()
	}
	return p
}

// mostExpensiveAdmin returns the per-dimension maximum of the admin slots'
// parameters that are within the caps.
func mostExpensiveAdmin(tx *keyring.Tx) keyring.Params {
	var most keyring.Params
	slots, _ := tx.Slots()
	for _, s := range slots {
		if s.Kind == keyring.KindAdmin && unseal.CheckParams(s.Params) == nil {
			most.Time, most.MemoryKiB, most.Threads = max(most.Time, s.Params.Time), max(most.MemoryKiB, s.Params.MemoryKiB), max(most.Threads, s.Params.Threads)
		}
	}
	return most
}

// authenticateKind opens the slot called name, which must be of kind, with
// secret (a password, or a code as NormalizeCode returns it). It refuses at
// once while name or everyone is in backoff, and otherwise reserves the
// attempt before deriving, so parallel guesses cannot outrun the backoff.
// Unknown names cost the same Argon2id work and return the same error as a
// wrong secret. A failure is counted and audited. The derivation runs
// outside any write transaction and inside the KDF budget.
func (m *Manager) authenticateKind(ctx context.Context, op audit.Kind, name string, secret []byte, kind keyring.SlotKind) (*session, error) {
	var h *keyring.Header
	var slot *keyring.Slot
	var raw []byte
	var most keyring.Params
	now := m.opts.clock()
	src := sourceOf(ctx)
	var token string
	err := m.kr.Update(func(tx *keyring.Tx) error {
		var err error
		if token, err = reserve(tx, name, src, now); err != nil {
			return err
		}
		if h, err = tx.Header(); err != nil {
			return err
		}
		slot, err = tx.Slot(name)
		if errors.Is(err, keyring.ErrNoSlot) || (err == nil && slot.Kind != kind) {
			slot, err = nil, nil
		}
		if slot != nil {
			raw = append([]byte(nil), tx.RawSlot(name)...)
		} else if kind == keyring.KindAdmin {
			most = mostExpensiveAdmin(tx)
		}
		return err
	})
	if err != nil {
		var be *BackoffError
		if errors.As(err, &be) {
			ev := audit.Event{Kind: op, Actor: name, Peer: audit.PeerFrom(ctx), Outcome: audit.Backoff}
			if m.opts.Refusal != nil && ev.Peer != nil {
				m.opts.Refusal(ev)
			} else {
				m.logFailure(ctx, op, name, audit.Backoff, err)
			}
		}
		return nil, err
	}
	settle := func(o outcome) error {
		return m.kr.Update(func(tx *keyring.Tx) error { return finish(tx, token, name, src, o, m.opts.clock()) })
	}
	if slot != nil && slot.Expires != 0 && now.Unix() >= slot.Expires {
		_ = settle(neutral)
		return nil, fmt.Errorf("%w: the invite for %s expired at %s; ask an admin for a new one", ErrInvite, name, time.Unix(slot.Expires, 0).UTC().Format(time.RFC3339))
	}
	params := decoyParams(h, most)
	if kind != keyring.KindAdmin {
		params = unseal.CodeParams
	}
	if slot != nil {
		params = slot.Params
		if err := unseal.CheckParams(params); err != nil {
			_ = settle(neutral)
			return nil, fmt.Errorf("slot %q: %w", name, err)
		}
	}
	var key *unseal.Key
	err = m.opts.withKDF(ctx, params, func() error {
		m.opts.progress("deriving key for "+name, params)
		if slot == nil {
			return unseal.Decoy(params, secret)
		}
		var err error
		key, err = unseal.OpenSlot(h, slot, secret, m.opts.Memory)
		return err
	})
	if err != nil {
		if errors.Is(err, unseal.ErrBusy) || errors.Is(err, context.Canceled) {
			_ = settle(neutral)
			return nil, err
		}
		wrong := errors.Is(err, ErrWrongPassword)
		outcome := audit.Failed
		if wrong {
			outcome = audit.WrongPassword
		}
		werr := m.kr.Update(func(tx *keyring.Tx) error {
			o := neutral
			if wrong {
				o = failed
			}
			if err := finish(tx, token, name, src, o, m.opts.clock()); err != nil {
				return err
			}
			_, lerr := Log(tx, m.opts.logKeys(), m.wm, keyring.Events, 0, audit.Event{Kind: op, Actor: name, Peer: audit.PeerFrom(ctx), Outcome: outcome, Detail: detail(err)})
			return ignoreUnsigned(lerr)
		})
		if kind != keyring.KindAdmin && wrong {
			err = ErrInvite
			if kind == keyring.KindRecovery {
				err = ErrRecovery
			}
		}
		return nil, errors.Join(err, werr)
	}
	if err := settle(passed); err != nil {
		key.Destroy()
		return nil, err
	}
	lk, err := key.LogKeys(m.opts.Memory)
	if err != nil {
		key.Destroy()
		return nil, err
	}
	return &session{key: key, logKeys: lk, header: h, slot: slot, raw: raw}, nil
}

// ignoreUnsigned drops Log's complaint that it wrote unkeyed records
// because the root did not verify: the caller's own change reports that.
func ignoreUnsigned(err error) error {
	if errors.Is(err, unseal.ErrIntegrity) || errors.Is(err, unseal.ErrRolledBack) {
		return nil
	}
	return err
}

// logFailure records an attempt that did not get as far as a derivation.
func (m *Manager) logFailure(ctx context.Context, op audit.Kind, name string, outcome audit.Outcome, err error) {
	_ = m.kr.Update(func(tx *keyring.Tx) error {
		_, lerr := Log(tx, m.opts.logKeys(), m.wm, keyring.Events, 0, audit.Event{Kind: op, Actor: name, Peer: audit.PeerFrom(ctx), Outcome: outcome, Detail: detail(err)})
		return ignoreUnsigned(lerr)
	})
}

// belowPolicy reports whether p is weaker than what new slots get.
func belowPolicy(p, policy keyring.Params) bool {
	want := newSlotParams(policy)
	return p.Time < want.Time || p.MemoryKiB < want.MemoryKiB || p.Threads < want.Threads
}

// newSlotParams returns the keyring's policy raised to the current floor.
func newSlotParams(policy keyring.Params) keyring.Params {
	f := unseal.Floor()
	p := policy
	p.Time = max(p.Time, f.Time)
	p.MemoryKiB = max(p.MemoryKiB, f.MemoryKiB)
	p.Threads = max(p.Threads, f.Threads)
	return p
}

// refresh rewraps an admin's slot under the current DataKey and policy,
// with the password just checked, and records it. It is a change like any
// other: the file must verify first, so a tampered policy or pending key is
// never acted on.
func (m *Manager) refresh(ctx context.Context, s *session, password []byte) error {
	slot, err := m.sealNew(ctx, s, s.slot.Name, password, s.slot.Created, nil)
	if err != nil {
		return err
	}
	d := "raised to the KDF policy"
	switch {
	case s.key.Folded:
		d = "folded in the key of a rekey"
	case s.key.Rewrap:
		d = "rewrapped from the format-1 layout"
	}
	if _, err = m.change(ctx, s, op{kind: audit.KindAdminRefresh, target: s.slot.Name, detail: d}, func(t *txn) error { return t.PutSlot(slot) }); err != nil {
		return err
	}
	s.slot, s.raw = slot, slot.Marshal()
	s.key.Folded, s.key.Rewrap = false, false
	return nil
}

// sealNew wraps the DataKey for name under newPassword, inside the budget.
func (m *Manager) sealNew(ctx context.Context, s *session, name string, newPassword []byte, created int64, explicit *keyring.Params) (*keyring.Slot, error) {
	params := newSlotParams(s.header.Policy)
	if explicit != nil {
		params = *explicit
	}
	var slot *keyring.Slot
	err := m.opts.withKDF(ctx, params, func() error {
		m.opts.progress("deriving key for "+name, params)
		var err error
		slot, err = s.key.SealSlot(name, keyring.KindAdmin, newPassword, params, created, 0)
		return err
	})
	return slot, err
}

// op describes a change for its audit record.
type op struct {
	kind   audit.Kind
	target string
	detail string
}

// txn is a change in progress: the keyring transaction, the session that
// authenticated it, the state root it started from, and what the change
// decided along the way.
type txn struct {
	*keyring.Tx
	s    *session
	root *keyring.Root
	rep  *unseal.Report
	now  time.Time
	// signer signs the state root at the end: the session's key, or the
	// new key of a rekey.
	signer *unseal.Key
	// head, when fn set it, is the change's audit record, already written
	// (a rekey writes its own).
	head *audit.Head
	// detail is appended to the audit record's detail.
	detail []string
	// logKeys is handed to Options.OnCommit (a rekey's new keys).
	logKeys *memlock.Buffer
}

// change is the one path every change takes, in one write transaction:
//
//  1. the actor's slot must still be the record that authenticated;
//  2. the whole file must verify against the state root under the actor's
//     key (unseal.Key.VerifyState) and the generation watermark;
//  3. expired invites are purged;
//  4. fn applies the change;
//  5. the change's keyed audit record is appended;
//  6. the state root is re-signed over the result (next generation).
//
// Nothing is written if any step fails; a refusal is then recorded on its
// own. OnCommit hears of the result.
func (m *Manager) change(ctx context.Context, s *session, o op, fn func(t *txn) error) (*keyring.Root, error) {
	var commit *Commit
	var root *keyring.Root
	err := m.kr.Update(func(tx *keyring.Tx) error {
		t, err := m.begin(tx, s)
		if err != nil {
			return err
		}
		if err := t.rep.Err(); err != nil {
			return fmt.Errorf("%w; changes are refused until this is resolved (run: sealbox-admin --keyring PATH check --as NAME, then --repair)", err)
		}
		if err := t.purgeExpired(); err != nil {
			return err
		}
		if err := fn(t); err != nil {
			return err
		}
		if root, commit, err = m.finish(ctx, t, o); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		m.refused(ctx, s, o, err)
		return nil, err
	}
	m.commit(commit)
	return root, nil
}

// begin opens a change: the actor's slot is unchanged since it
// authenticated, and the file's state is verified.
func (m *Manager) begin(tx *keyring.Tx, s *session) (*txn, error) {
	if tx.Format() != keyring.FormatVersion {
		return nil, fmt.Errorf("%w: the keyring is still in format %d", ErrChanged, tx.Format())
	}
	if !bytes.Equal(tx.RawSlot(s.slot.Name), s.raw) {
		return nil, ErrChanged
	}
	rep, err := s.key.VerifyState(tx, m.wm)
	if err != nil {
		return nil, err
	}
	return &txn{Tx: tx, s: s, root: rep.Root, rep: rep, now: m.opts.clock(), signer: s.key}, nil
}

// finish writes the change's audit record, re-signs the state root and
// clears the actor's failures.
func (m *Manager) finish(ctx context.Context, t *txn, o op) (*keyring.Root, *Commit, error) {
	if t.head == nil {
		ev := audit.Event{Kind: o.kind, Actor: t.s.slot.Name, Target: o.target, Peer: audit.PeerFrom(ctx), Outcome: audit.OK, Detail: joinDetail(o.detail, t.detail)}
		h, err := audit.Append(t.Tx, t.s.auditKey(), keyring.Events, &t.root.Events, ev)
		if err != nil {
			return nil, nil, fmt.Errorf("writing the audit record (the change was not made): %w", err)
		}
		t.head = h
	}
	events := t.root.Events
	events.KeyedSeq, events.KeyedMAC = t.head.Seq, t.head.MAC
	root, err := t.signer.Sign(t.Tx, t.root, &events, nil, m.wm)
	if err != nil {
		return nil, nil, err
	}
	clients, err := t.Clients()
	if err != nil {
		return nil, nil, err
	}
	return root, &Commit{Op: o.kind, Clients: clients, Generation: root.Generation, Root: root.MAC, LogKeys: t.logKeys}, nil
}

func joinDetail(first string, rest []string) string {
	all := rest
	if first != "" {
		all = append([]string{first}, rest...)
	}
	return strings.Join(all, "; ")
}

func (m *Manager) commit(c *Commit) {
	if c == nil {
		return
	}
	if m.opts.OnCommit != nil {
		m.opts.OnCommit(c)
	} else if c.LogKeys != nil {
		c.LogKeys.Destroy()
	}
}

// refused records an authenticated change that the rules refused. Best
// effort: the change did not happen either way.
func (m *Manager) refused(ctx context.Context, s *session, o op, err error) {
	_ = m.kr.Update(func(tx *keyring.Tx) error {
		ev := audit.Event{Kind: o.kind, Actor: s.slot.Name, Target: o.target, Peer: audit.PeerFrom(ctx), Outcome: audit.Refused, Detail: detail(err)}
		_, lerr := Log(tx, s.logKeys.Bytes(), m.wm, keyring.Events, 0, ev)
		return ignoreUnsigned(lerr)
	})
}

// purgeExpired deletes every invite whose time is up.
func (t *txn) purgeExpired() error {
	slots, err := t.Slots()
	if err != nil {
		return err
	}
	var gone []string
	for _, sl := range slots {
		if sl.Kind == keyring.KindInvite && sl.Expires != 0 && t.now.Unix() >= sl.Expires {
			if err := t.DeleteSlot(sl.Name); err != nil {
				return err
			}
			gone = append(gone, sl.Name)
		}
	}
	if len(gone) > 0 {
		t.detail = append(t.detail, fmt.Sprintf("purged expired invites %q", gone))
	}
	return nil
}

// record writes the keyed record of an operation that changes no record
// (an unseal, a password check) after the state verified well enough for
// it (accept decides), moving only the root's audit fields: records that
// failed stay failed. fn runs in the same transaction after verification.
func (m *Manager) record(ctx context.Context, s *session, o op, accept func(rep *unseal.Report) error, fn func(t *txn) error) error {
	return m.kr.Update(func(tx *keyring.Tx) error {
		t, err := m.begin(tx, s)
		if err != nil {
			return err
		}
		if err := accept(t.rep); err != nil {
			return err
		}
		if err := fn(t); err != nil {
			return err
		}
		ev := audit.Event{Kind: o.kind, Actor: s.slot.Name, Target: o.target, Peer: audit.PeerFrom(ctx), Outcome: audit.OK, Detail: joinDetail(o.detail, t.detail)}
		if t.rep.Has("audit") || t.rep.Has("audit-keys") {
			// The log does not match the root: a keyed record would vouch
			// for that. Recorded unkeyed; the root is left as it is.
			ev.Outcome = audit.Failed
			ev.Detail = joinDetail(ev.Detail, []string{"the audit log does not verify"})
			_, err := audit.Append(tx, nil, keyring.Events, &t.root.Events, ev)
			return err
		}
		h, err := audit.Append(tx, s.auditKey(), keyring.Events, &t.root.Events, ev)
		if err != nil {
			return fmt.Errorf("writing the audit record: %w", err)
		}
		root := *t.root
		root.Events.KeyedSeq, root.Events.KeyedMAC = h.Seq, h.MAC
		if root.Generation == math.MaxUint64 {
			return fmt.Errorf("%w: the generation counter is at its end", unseal.ErrIntegrity)
		}
		root.Generation++
		if err := unseal.PutRoot(tx, s.key.RootKey(), s.header.ID, &root); err != nil {
			return err
		}
		m.wm.Wrote(tx, root.Generation)
		return nil
	})
}
