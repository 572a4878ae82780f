// Package admin holds the rules for changing a keyring: who may add or remove
// an admin, the last-admin guard, password policy, the client lifecycle, and
// the guessing defence. Every change is authenticated by an existing admin's
// password, verified against the registry, and written in one keyring
// transaction together with its audit record, so a change whose record
// cannot be written does not happen.
//
// Use Init to make a keyring, then New(kr, opts) for a Manager over an open
// keyring; sealbox-admin's offline mode and sealboxd both go through it.
// Operations take a context; put the caller's peer credentials in it with
// audit.WithPeer so that the audit records name them.
//
// Errors: ErrWrongPassword (wrong password or unknown actor, same work, same
// error), *BackoffError (ErrBackoff: too many failures, with RetryAfter),
// ErrLastAdmin, ErrWeakPassword, unseal.ErrBusy (KDF budget), and keyring's
// ErrNoSlot, ErrSlotExists, ErrNoClient, ErrClientExists; test with
// errors.Is.
package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// Errors callers test with errors.Is.
var (
	ErrWrongPassword   = unseal.ErrWrongPassword
	ErrLastAdmin       = errors.New("refusing to remove the last admin: add another admin first")
	ErrChanged         = errors.New("keyring changed while the password was being checked; try again")
	ErrClientState     = errors.New("client is not in a state that allows this")
	ErrNothingToRepair = errors.New("every record authenticates; nothing to repair")
	ErrInvite          = errors.New("no valid invite for that name and code (wrong, used or expired)")
	ErrRecovery        = errors.New("wrong recovery code, or no recovery code is set")
	ErrReservedName    = errors.New("that name is reserved")
	// ErrInvalid is wrapped by errors about malformed input (sizes,
	// durations, statuses); names have keyring.ErrInvalidName.
	ErrInvalid = errors.New("invalid request")
)

// RecoveryName is the slot name of the recovery code.
const RecoveryName = "recovery"

// Options are shared by Init and Manager.
type Options struct {
	// KDFTarget is the time Init calibrates new slots to. Zero means 1s.
	KDFTarget time.Duration
	// KDFMaxMemoryKiB caps calibrated memory. Zero means 1 GiB.
	KDFMaxMemoryKiB uint32
	// Policy, when set, is used instead of calibrating. It must not be below
	// the floor.
	Policy *keyring.Params
	// Memory says whether unlocked memory is acceptable for keys and secrets.
	Memory memlock.Options
	// Budget, if set, bounds the memory of concurrent derivations.
	Budget *unseal.Budget
	// AuditKey, if set, returns the audit key the caller holds (sealboxd
	// after its first unseal), used for records written without an
	// authenticated admin, such as failed attempts. Nil means unkeyed.
	AuditKey func() []byte
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Progress, if set, is told before each Argon2id derivation.
	Progress func(what string, p keyring.Params)
	// OnChange, if set, is called after a change that re-signed every record
	// (rekey, repair) with the client records that verified in its
	// transaction and the registry report: sealboxd rebuilds its client
	// index from them.
	OnChange func(clients []*keyring.Client, rep *unseal.Report)
	// OnClient, if set, is called after a change to one client record with
	// that record: sealboxd updates its index in place, without a pass over
	// every client per change.
	OnClient func(c *keyring.Client)
	// OnRekey, if set, receives the new audit key after a rekey and owns it
	// (sealboxd keeps writing the audit log with it). If nil, it is wiped.
	OnRekey func(auditKey *memlock.Buffer)
}

func (o *Options) clock() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) now() int64 { return o.clock().Unix() }

func (o *Options) progress(what string, p keyring.Params) {
	if o.Progress != nil {
		o.Progress(what, p)
	}
}

func (o *Options) auditKey() []byte {
	if o.AuditKey != nil {
		return o.AuditKey()
	}
	return nil
}

// withKDF runs fn, which derives with p, inside the memory budget.
func (o *Options) withKDF(ctx context.Context, p keyring.Params, fn func() error) error {
	release, err := o.Budget.Acquire(ctx, uint64(p.MemoryKiB))
	if err != nil {
		return err
	}
	defer release()
	return fn()
}

// Init creates a keyring at path with one admin and the given master secret,
// and writes the first (keyed) audit record. The caller keeps ownership of
// password and secret and wipes them.
func Init(ctx context.Context, path, name string, password, secret []byte, opts Options) error {
	if err := keyring.ValidName(name); err != nil {
		return fmt.Errorf("admin name: %w", err)
	}
	if err := CheckNewPassword(name, password); err != nil {
		return err
	}
	if len(secret) < 1 || len(secret) > keyring.MaxSecretSize {
		return fmt.Errorf("%w: the master secret must be 1 to %d bytes, got %d", ErrInvalid, keyring.MaxSecretSize, len(secret))
	}
	var policy keyring.Params
	if opts.Policy != nil {
		policy = *opts.Policy
	} else {
		target, maxMem := opts.KDFTarget, opts.KDFMaxMemoryKiB
		if target == 0 {
			target = time.Second
		}
		if maxMem == 0 {
			maxMem = 1 << 20
		}
		opts.progress("calibrating Argon2id to about "+target.String()+" per unlock, from", unseal.Floor())
		policy = unseal.Calibrate(target, maxMem)
	}
	if err := unseal.CheckNewParams(policy); err != nil {
		return err
	}
	var id [keyring.IDSize]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	key, err := unseal.NewKey(id, opts.Memory)
	if err != nil {
		return err
	}
	defer key.Destroy()
	ak, err := key.AuditKey(opts.Memory)
	if err != nil {
		return err
	}
	defer ak.Destroy()
	now := opts.now()
	sec, err := key.EncryptSecret(secret, 1)
	if err != nil {
		return err
	}
	opts.progress("deriving key for "+name, policy)
	slot, err := key.SealSlot(name, keyring.KindAdmin, password, policy, now)
	if err != nil {
		return err
	}
	in := &keyring.Initial{
		Header:   keyring.Header{ID: id, Commitment: key.Commitment(), Policy: policy, Created: now},
		Secret:   *sec,
		Slot:     *slot,
		Registry: key.InitialRegistry(slot),
	}
	kr, err := keyring.Create(path, in)
	if err != nil {
		return err
	}
	err = kr.Update(func(tx *keyring.Tx) error {
		return audit.Append(tx, ak.Bytes(), audit.Event{Kind: "init", Actor: name, Target: name, Peer: audit.PeerFrom(ctx), Outcome: "ok"})
	})
	if cerr := kr.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing the first audit record (the keyring was removed again): %w", err)
	}
	return nil
}

// Manager applies the rules to an open keyring. It is safe for concurrent use
// (bbolt serializes writers; each change re-checks what it authenticated).
type Manager struct {
	kr   *keyring.Keyring
	opts Options
}

// New returns a Manager over kr. The caller keeps ownership of kr.
func New(kr *keyring.Keyring, opts Options) *Manager {
	return &Manager{kr: kr, opts: opts}
}

// Keyring returns the underlying keyring.
func (m *Manager) Keyring() *keyring.Keyring { return m.kr }

// session is an authenticated admin: the key their slot unwrapped, the audit
// key derived from it, and the slot as it was when they authenticated.
type session struct {
	key      *unseal.Key
	auditKey *memlock.Buffer
	header   *keyring.Header
	slot     *keyring.Slot
}

func (s *session) close() {
	s.key.Destroy()
	s.auditKey.Destroy()
}

// authenticate opens actor's admin slot with password, for operation op.
// It refuses at once while actor or everyone is in backoff. Unknown actors
// cost the same Argon2id work and return the same error as a wrong
// password. A failure is counted and audited. The derivation runs outside
// any write transaction and inside the KDF budget. A slot that missed a
// rekey, or whose parameters are below the keyring's policy, is rewrapped
// now that the password is at hand.
func (m *Manager) authenticate(ctx context.Context, op, actor string, password []byte) (*session, error) {
	s, err := m.authenticateKind(ctx, op, actor, password, keyring.KindAdmin)
	if err != nil {
		return nil, err
	}
	if s.key.Folded || belowPolicy(s.slot.Params, s.header.Policy) {
		if err := m.refresh(ctx, s, password); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// authenticateKind opens the slot called name, which must be of kind, with
// secret (a password, or a code as NormalizeCode returns it).
func (m *Manager) authenticateKind(ctx context.Context, op, name string, secret []byte, kind keyring.SlotKind) (*session, error) {
	var h *keyring.Header
	var slot *keyring.Slot
	now := m.opts.clock()
	err := m.kr.View(func(tx *keyring.Tx) error {
		if err := checkBackoff(tx, name, now); err != nil {
			return err
		}
		var err error
		if h, err = tx.Header(); err != nil {
			return err
		}
		slot, err = tx.Slot(name)
		if errors.Is(err, keyring.ErrNoSlot) || (err == nil && slot.Kind != kind) {
			slot, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if slot != nil && slot.Expires != 0 && now.Unix() >= slot.Expires {
		return nil, fmt.Errorf("%w: the invite for %s expired at %s; ask an admin for a new one", ErrInvite, name, time.Unix(slot.Expires, 0).UTC().Format(time.RFC3339))
	}
	params := h.Policy
	if kind != keyring.KindAdmin {
		params = unseal.CodeParams
	}
	if slot != nil {
		params = slot.Params
		if err := unseal.CheckParams(params); err != nil {
			return nil, fmt.Errorf("slot %q: %w", name, err)
		}
	}
	var key *unseal.Key
	err = m.opts.withKDF(ctx, params, func() error {
		m.opts.progress("deriving key for "+name, params)
		if slot == nil {
			return unseal.Decoy(&keyring.Header{ID: h.ID, Policy: params}, secret)
		}
		var err error
		key, err = unseal.OpenSlot(h, slot, secret, m.opts.Memory)
		return err
	})
	if err != nil {
		if errors.Is(err, unseal.ErrBusy) || errors.Is(err, context.Canceled) {
			return nil, err
		}
		outcome := "error"
		if errors.Is(err, ErrWrongPassword) {
			outcome = "wrong_password"
		}
		werr := m.kr.Update(func(tx *keyring.Tx) error {
			if outcome == "wrong_password" {
				if err := recordFailure(tx, name, now); err != nil {
					return err
				}
			}
			return audit.Append(tx, m.opts.auditKey(), audit.Event{Kind: op, Actor: name, Peer: audit.PeerFrom(ctx), Outcome: outcome, Detail: detail(err)})
		})
		if kind != keyring.KindAdmin && errors.Is(err, ErrWrongPassword) {
			err = ErrInvite
			if kind == keyring.KindRecovery {
				err = ErrRecovery
			}
		}
		return nil, errors.Join(err, werr)
	}
	ak, err := key.AuditKey(m.opts.Memory)
	if err != nil {
		key.Destroy()
		return nil, err
	}
	return &session{key: key, auditKey: ak, header: h, slot: slot}, nil
}

// belowPolicy reports whether p is weaker than what new slots get.
func belowPolicy(p, policy keyring.Params) bool {
	want := newSlotParams(policy)
	return p.Time < want.Time || p.MemoryKiB < want.MemoryKiB || p.Threads < want.Threads
}

// refresh rewraps an admin's slot under the current DataKey and policy,
// with the password just checked, and records it.
func (m *Manager) refresh(ctx context.Context, s *session, password []byte) error {
	slot, err := m.sealNew(ctx, s, s.slot.Name, password, s.slot.Created)
	if err != nil {
		return err
	}
	detail := "raised to the KDF policy"
	if s.key.Folded {
		detail = "folded in the key of a rekey"
	}
	if err := m.change(ctx, s, "admin.refresh", s.slot.Name, func(tx *keyring.Tx) error { return tx.PutSlot(slot) }, detail); err != nil {
		return err
	}
	s.slot = slot
	return nil
}

// detail is what an audit record says about an error: never a password, and
// never a wrong-password message (the outcome says it).
func detail(err error) string {
	if err == nil || errors.Is(err, ErrWrongPassword) {
		return ""
	}
	return err.Error()
}

// change runs fn in one write transaction after checking that the actor's
// slot is still the one that authenticated and that the registry manifest
// verifies, then rewrites the manifest, clears the actor's failure count and
// appends the keyed audit record. Nothing is written if any step fails. The
// cost does not grow with the number of records beyond one pass over their
// stored MACs: records a change re-signs are verified by the change itself.
func (m *Manager) change(ctx context.Context, s *session, op, target string, fn func(tx *keyring.Tx) error, details ...string) error {
	err := m.kr.Update(func(tx *keyring.Tx) error {
		cur, err := tx.Slot(s.slot.Name)
		if err != nil || cur.MAC != s.slot.MAC {
			return ErrChanged
		}
		if err := s.key.VerifyManifest(tx); err != nil {
			return fmt.Errorf("%w; changes are refused until this is resolved (run sealbox-admin check)", err)
		}
		if err := fn(tx); err != nil {
			return err
		}
		if err := s.key.Register(tx); err != nil {
			return err
		}
		if err := recordSuccess(tx, s.slot.Name); err != nil {
			return err
		}
		ev := audit.Event{Kind: op, Actor: s.slot.Name, Target: target, Peer: audit.PeerFrom(ctx), Outcome: "ok"}
		if len(details) > 0 {
			ev.Detail = details[0]
		}
		if err := audit.Append(tx, s.auditKey.Bytes(), ev); err != nil {
			return fmt.Errorf("writing the audit record (the change was not made): %w", err)
		}
		return nil
	})
	if err != nil {
		m.refused(ctx, s, op, target, err)
	}
	return err
}

// refused records an authenticated change that the rules refused. Best
// effort: the change did not happen either way.
func (m *Manager) refused(ctx context.Context, s *session, op, target string, err error) {
	_ = m.kr.Update(func(tx *keyring.Tx) error {
		return audit.Append(tx, s.auditKey.Bytes(), audit.Event{Kind: op, Actor: s.slot.Name, Target: target, Peer: audit.PeerFrom(ctx), Outcome: "refused", Detail: detail(err)})
	})
}

// verifiedClients returns the client records that verify under key, none at
// all when the manifest fails (any record may have been rolled back), and
// the report.
func verifiedClients(key *unseal.Key, tx *keyring.Tx) ([]*keyring.Client, *unseal.Report, error) {
	rep, err := key.VerifyRegistry(tx)
	if err != nil {
		return nil, nil, err
	}
	clients, err := tx.Clients()
	if err != nil {
		return nil, nil, err
	}
	var out []*keyring.Client
	for _, c := range clients {
		if !rep.ManifestBad && key.VerifyClient(c) {
			out = append(out, c)
		}
	}
	return out, rep, nil
}

// sealNew wraps the DataKey for name under newPassword, inside the budget.
func (m *Manager) sealNew(ctx context.Context, s *session, name string, newPassword []byte, created int64) (*keyring.Slot, error) {
	params := newSlotParams(s.header.Policy)
	var slot *keyring.Slot
	err := m.opts.withKDF(ctx, params, func() error {
		m.opts.progress("deriving key for "+name, params)
		var err error
		slot, err = s.key.SealSlot(name, keyring.KindAdmin, newPassword, params, created)
		return err
	})
	return slot, err
}

// AddAdmin adds name with newPassword, authorized by actor's password.
func (m *Manager) AddAdmin(ctx context.Context, actor string, actorPassword []byte, name string, newPassword []byte) error {
	if err := validAdminName(name); err != nil {
		return err
	}
	if err := CheckNewPassword(name, newPassword); err != nil {
		return err
	}
	if err := m.kr.View(func(tx *keyring.Tx) error {
		if _, err := tx.Slot(name); err == nil {
			return fmt.Errorf("%w: %q", keyring.ErrSlotExists, name)
		}
		return nil
	}); err != nil {
		return err
	}
	s, err := m.authenticate(ctx, "admin.add", actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	slot, err := m.sealNew(ctx, s, name, newPassword, m.opts.now())
	if err != nil {
		return err
	}
	return m.change(ctx, s, "admin.add", name, func(tx *keyring.Tx) error {
		if _, err := tx.Slot(name); err == nil {
			return fmt.Errorf("%w: %q", keyring.ErrSlotExists, name)
		}
		return tx.PutSlot(slot)
	})
}

func validAdminName(name string) error {
	if err := keyring.ValidName(name); err != nil {
		return fmt.Errorf("admin name: %w", err)
	}
	if name == RecoveryName {
		return fmt.Errorf("%w: %q is the recovery code's slot", ErrReservedName, name)
	}
	return nil
}

// RemoveAdmin deletes name's slot, authorized by actor's password. An admin
// may remove themself while another admin remains; the last admin is never
// removed.
func (m *Manager) RemoveAdmin(ctx context.Context, actor string, actorPassword []byte, name string) error {
	s, err := m.authenticate(ctx, "admin.remove", actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	return m.change(ctx, s, "admin.remove", name, func(tx *keyring.Tx) error {
		target, err := tx.Slot(name)
		if err != nil {
			return err
		}
		if target.Kind == keyring.KindAdmin && adminCount(tx) <= 1 {
			return ErrLastAdmin
		}
		return tx.DeleteSlot(name)
	})
}

func adminCount(tx *keyring.Tx) int {
	n := 0
	tx.RecordMACs(func(kind byte, _ []byte, sk keyring.SlotKind, _ []byte) {
		if kind == 'S' && sk == keyring.KindAdmin {
			n++
		}
	})
	return n
}

// Passwd replaces name's slot with one under newPassword, authorized by the
// current password. The new slot replaces the old in the same transaction, so
// there is no moment with neither.
func (m *Manager) Passwd(ctx context.Context, name string, current, newPassword []byte) error {
	if err := CheckNewPassword(name, newPassword); err != nil {
		return err
	}
	if bytes.Equal(current, newPassword) {
		return fmt.Errorf("%w: the new password is the same as the current one", ErrWeakPassword)
	}
	s, err := m.authenticate(ctx, "admin.passwd", name, current)
	if err != nil {
		return err
	}
	defer s.close()
	slot, err := m.sealNew(ctx, s, name, newPassword, s.slot.Created)
	if err != nil {
		return err
	}
	return m.change(ctx, s, "admin.passwd", name, func(tx *keyring.Tx) error { return tx.PutSlot(slot) })
}

// Repair is the way out of a registry that fails verification, authorized by
// actor's password: it deletes every slot and client record that fails its
// own MAC and re-signs the manifest over what remains. A manifest failure with
// no bad record (a record deleted or rolled back) is accepted as the records
// now stand, so the caller must show the admin the report and the records.
// It returns what it found.
func (m *Manager) Repair(ctx context.Context, actor string, actorPassword []byte) (*unseal.Report, error) {
	s, err := m.authenticate(ctx, "repair", actor, actorPassword)
	if err != nil {
		return nil, err
	}
	defer s.close()
	var rep, after *unseal.Report
	var verified []*keyring.Client
	err = m.kr.Update(func(tx *keyring.Tx) error {
		if rep, err = s.key.VerifyRegistry(tx); err != nil {
			return err
		}
		if rep.OK() {
			return ErrNothingToRepair
		}
		for _, name := range rep.BadSlots {
			if name == actor {
				return fmt.Errorf("%w: the acting admin's own record fails", unseal.ErrRegistry)
			}
			if err := tx.DeleteSlot(name); err != nil {
				return err
			}
		}
		for _, name := range rep.BadClients {
			if err := tx.DeleteClient(name); err != nil {
				return err
			}
		}
		if err := s.key.Register(tx); err != nil {
			return err
		}
		if err := audit.Append(tx, s.auditKey.Bytes(), audit.Event{Kind: "repair", Actor: actor, Peer: audit.PeerFrom(ctx), Outcome: "ok", Detail: rep.Err().Error()}); err != nil {
			return err
		}
		verified, after, err = verifiedClients(s.key, tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if m.opts.OnChange != nil {
		m.opts.OnChange(verified, after)
	}
	return rep, nil
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

// AdminInfo is what List shows of a slot. It holds nothing secret.
type AdminInfo struct {
	Name    string     `json:"name"`
	Kind    string     `json:"kind"`
	Time    uint32     `json:"kdf_time"`
	Memory  uint32     `json:"kdf_memory_kib"`
	Threads uint8      `json:"kdf_threads"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	// Pending says a rekey happened since this slot's owner last logged in.
	Pending bool `json:"rekey_pending,omitempty"`
}

// ListAdmins returns every slot, by name. It needs no password; the records
// are verified only by operations that hold the DataKey.
func (m *Manager) ListAdmins() ([]AdminInfo, error) {
	var out []AdminInfo
	err := m.kr.View(func(tx *keyring.Tx) error {
		slots, err := tx.Slots()
		if err != nil {
			return err
		}
		for _, s := range slots {
			ai := AdminInfo{
				Name: s.Name, Kind: s.Kind.String(),
				Time: s.Params.Time, Memory: s.Params.MemoryKiB, Threads: s.Params.Threads,
				Created: time.Unix(s.Created, 0).UTC(), Pending: s.Pending != nil,
			}
			if s.Expires != 0 {
				e := time.Unix(s.Expires, 0).UTC()
				ai.Expires = &e
			}
			out = append(out, ai)
		}
		return nil
	})
	return out, err
}

// MaxSlotMemoryKiB returns the most memory any slot's derivation needs (at
// least the policy's), so a budget can be checked against it.
func (m *Manager) MaxSlotMemoryKiB() (uint32, error) {
	var most uint32
	err := m.kr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		most = newSlotParams(h.Policy).MemoryKiB
		slots, err := tx.Slots()
		for _, s := range slots {
			if unseal.CheckParams(s.Params) == nil {
				most = max(most, s.Params.MemoryKiB)
			}
		}
		return err
	})
	return most, err
}

// Unsealed is the result of a successful unseal.
type Unsealed struct {
	Secret   *memlock.Buffer   // the master secret; Destroy it on seal
	AuditKey *memlock.Buffer   // the audit key; the caller owns it
	Version  uint64            // the master secret's version
	Clients  []*keyring.Client // every client record that verified
	Report   *unseal.Report    // records that did not verify (not honoured)
	Header   *keyring.Header   // the header as read
}

// Unseal opens name's slot with password, decrypts the master secret into
// locked memory, verifies the registry and records the unseal. Records that
// fail verification are left out of Clients and named in Report; when the
// manifest fails, Clients is empty, since any record may have been rolled
// back. If the audit record cannot be written, the unseal fails.
func (m *Manager) Unseal(ctx context.Context, name string, password []byte) (*Unsealed, error) {
	s, err := m.authenticate(ctx, "unseal", name, password)
	if err != nil {
		return nil, err
	}
	return m.unsealWith(ctx, s, name, "")
}

// UnsealRecovery is Unseal with the recovery code instead of an admin's
// password; the audit record says so.
func (m *Manager) UnsealRecovery(ctx context.Context, typed []byte) (*Unsealed, error) {
	code, ok := unseal.NormalizeCode(typed)
	if !ok {
		return nil, fmt.Errorf("%w: that is not the shape of a code (32 letters and digits in groups of four)", ErrRecovery)
	}
	defer memlock.Wipe(code)
	s, err := m.authenticateKind(ctx, "unseal", RecoveryName, code, keyring.KindRecovery)
	if err != nil {
		return nil, err
	}
	return m.unsealWith(ctx, s, RecoveryName, "recovery code")
}

func (m *Manager) unsealWith(ctx context.Context, s *session, name, how string) (*Unsealed, error) {
	defer s.key.Destroy()
	u := &Unsealed{Header: s.header, AuditKey: s.auditKey}
	err := m.kr.Update(func(tx *keyring.Tx) error {
		sec, err := tx.Secret()
		if err != nil {
			return err
		}
		if u.Clients, u.Report, err = verifiedClients(s.key, tx); err != nil {
			return err
		}
		u.Version = sec.Version
		if u.Secret, err = s.key.DecryptSecret(sec, m.opts.Memory); err != nil {
			return err
		}
		if err := recordSuccess(tx, name); err != nil {
			return err
		}
		return audit.Append(tx, s.auditKey.Bytes(), audit.Event{Kind: "unseal", Actor: name, Peer: audit.PeerFrom(ctx), Outcome: "ok", Detail: how})
	})
	if err != nil {
		u.Secret.Destroy()
		s.auditKey.Destroy()
		return nil, err
	}
	return u, nil
}
