// Package admin holds the rules for changing a keyring: who may add or remove
// an admin, the last-admin guard, password policy, the client lifecycle, and
// the guessing defence. Every change takes one path (Manager.change):
// authenticate the actor, verify the whole file against its state root,
// apply, re-sign the root, write the audit record, commit, all in one keyring
// transaction, so a change whose record cannot be written does not happen,
// and nothing is built on a state that does not verify.
//
// Use Init to make a keyring, then New(kr, opts) for a Manager over an open
// keyring; sealbox-admin's offline mode and sealboxd both go through it.
// Operations take a context; put the caller's peer credentials in it with
// audit.WithPeer so that the audit records name them.
//
// Errors: ErrWrongPassword (wrong password or unknown actor, same work, same
// error), *BackoffError (ErrBackoff: too many failures, with RetryAfter),
// ErrLastAdmin, ErrWeakPassword, unseal.ErrBusy (KDF budget),
// unseal.ErrIntegrity (the file does not verify: see Check and Repair), and
// keyring's ErrNoSlot, ErrSlotExists, ErrNoClient, ErrClientExists; test with
// errors.Is.
package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// Errors callers test with errors.Is.
var (
	ErrWrongPassword   = unseal.ErrWrongPassword
	ErrLastAdmin       = errclass.New(errclass.Refused, "refusing to remove the last admin: add another admin first")
	ErrNotAdmin        = errclass.New(errclass.Refused, "that slot is not an admin's, an invite or the recovery code")
	ErrChanged         = errclass.New(errclass.Refused, "keyring changed while the password was being checked; try again")
	ErrClientState     = errclass.New(errclass.Refused, "client is not in a state that allows this")
	ErrNothingToRepair = errclass.New(errclass.Refused, "everything verifies; nothing to repair")
	ErrInvite          = errclass.New(errclass.Auth, "no valid invite for that name and code (wrong, used or expired)")
	ErrRecovery        = errclass.New(errclass.Auth, "wrong recovery code, or no recovery code is set")
	ErrReservedName    = errclass.New(errclass.Refused, "that name is reserved")
	ErrAmbiguous       = errclass.New(errclass.Refused, "another client already matches exactly these peers")
	// ErrInvalid is wrapped by errors about malformed input (sizes,
	// durations, statuses); names have keyring.ErrInvalidName.
	ErrInvalid = errclass.New(errclass.Invalid, "invalid request")
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
	// LogKeys, if set, returns the log keys the caller holds (sealboxd after
	// its first unseal: the audit key then the root key, 64 bytes), used for
	// records written without an authenticated admin, such as failed
	// attempts. Nil means unkeyed.
	LogKeys func() []byte
	// Exclusive, if set, runs a rekey's transaction and its OnCommit:
	// sealboxd holds its audit writer there, so that no batch is signed
	// with the old log keys after the rekey closed their epoch. The
	// rekey's derivations run before it, outside.
	Exclusive func(func() error) error
	// Watermark, if set, is the highest state-root generation this process
	// has seen; lower ones are refused as a rollback. Nil means a new one.
	Watermark *unseal.Watermark
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Progress, if set, is told before each Argon2id derivation.
	Progress func(what string, p keyring.Params)
	// Refusal, if set, takes the records of attempts refused before any
	// derivation (the backoff said wait), so that the caller can aggregate
	// a flood of them (sealboxd writes one record per peer and window).
	// Nil writes each one.
	Refusal func(ev audit.Event)
	// OnCommit, if set, is called after every committed change with what the
	// daemon needs to follow it: the client records as they now stand (all
	// verified), and, after a rekey, the new log keys, which it then owns.
	OnCommit func(c *Commit)
	// Reseal, if set, is asked after every unseal, for each unattended
	// slot but the one that unsealed, whether its binding must be made
	// again (a TPM whose PCRs changed since it was sealed). It returns nil
	// when not, or how to make the new binding over a new key and why; the
	// slot is then rebound in a change of its own (KindSlotReseal).
	Reseal func(ctx context.Context, s *keyring.Slot) (build func(kek []byte) ([]byte, error), why string, err error)
	// Remake, if set, makes a new binding of the same shape as an
	// unattended slot's over a new key (a Tang binding to the same
	// advertisement, a tpm2 binding sealed to the current PCRs, a
	// threshold with fresh shares). A rekey gives every unattended slot a
	// new key and a new hand-over key this way: a hand-over would leave the
	// new DataKey under a hand-over key the old DataKey's holders know.
	// Without it, a rekey refuses a keyring that has unattended slots.
	Remake func(ctx context.Context, kind keyring.SlotKind, binding, kek []byte) ([]byte, error)
}

// Commit is what a committed change tells Options.OnCommit.
type Commit struct {
	Op         audit.Kind
	Clients    []*keyring.Client
	Generation uint64
	Root       [keyring.MACSize]byte // the new state root's MAC
	// LogKeys is set by a rekey: the new audit and root keys (the receiver
	// owns the buffer).
	LogKeys *memlock.Buffer
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

func (o *Options) logKeys() []byte {
	if o.LogKeys != nil {
		return o.LogKeys()
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
	if err := validAdminName(name); err != nil {
		return err
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
		policy = unseal.Calibrate(target, maxMem, nil)
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
	lk, err := key.LogKeys(opts.Memory)
	if err != nil {
		return err
	}
	defer lk.Destroy()
	now := opts.now()
	sec, err := key.EncryptSecret(secret, 1)
	if err != nil {
		return err
	}
	opts.progress("deriving key for "+name, policy)
	slot, err := key.SealSlot(name, keyring.KindAdmin, password, policy, now, 0)
	if err != nil {
		return err
	}
	ident, err := key.NewIdentity()
	if err != nil {
		return err
	}
	kr, err := keyring.Create(path, func(tx *keyring.Tx) error {
		if err := tx.PutIdentity(ident); err != nil {
			return err
		}
		if err := tx.PutHeader(&keyring.Header{ID: id, Commitment: key.Commitment(), Policy: policy, Created: now}); err != nil {
			return err
		}
		if err := tx.PutSecret(sec); err != nil {
			return err
		}
		if err := tx.PutSlot(slot); err != nil {
			return err
		}
		h, err := audit.Append(tx, auditKey(lk.Bytes()), keyring.Events, nil, audit.Event{Kind: audit.KindInit, Actor: name, Target: name, Peer: audit.PeerFrom(ctx), Outcome: audit.OK})
		if err != nil {
			return fmt.Errorf("writing the first audit record: %w", err)
		}
		_, err = key.Sign(tx, nil, &keyring.AuditState{KeyedSeq: h.Seq, KeyedMAC: h.MAC}, nil, opts.Watermark)
		return err
	})
	if err != nil {
		return err
	}
	if err := kr.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// auditKey and rootKey split log keys (audit key || root key).
func auditKey(lk []byte) []byte {
	if lk == nil {
		return nil
	}
	return lk[:keyring.KeySize]
}

func rootKey(lk []byte) []byte { return lk[keyring.KeySize:] }

// Manager applies the rules to an open keyring. It is safe for concurrent use
// (bbolt serializes writers; each change re-checks what it authenticated).
type Manager struct {
	kr   *keyring.Keyring
	opts Options
	wm   *unseal.Watermark
}

// New returns a Manager over kr. The caller keeps ownership of kr.
func New(kr *keyring.Keyring, opts Options) *Manager {
	wm := opts.Watermark
	if wm == nil {
		wm = &unseal.Watermark{}
	}
	return &Manager{kr: kr, opts: opts, wm: wm}
}

// validAdminName checks a name for an admin slot: a valid name that is not
// the recovery code's.
func validAdminName(name string) error {
	if err := keyring.ValidName(name); err != nil {
		return fmt.Errorf("admin name: %w", err)
	}
	if name == RecoveryName {
		return fmt.Errorf("%w: %q is the recovery code's slot", ErrReservedName, name)
	}
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

// Log appends events to stream s outside a change (failed attempts,
// refusals, sealbox's read batches), keyed when the caller holds log keys
// (audit key || root key), with the state root moved to the new keyed
// record, or unkeyed. keep, when above zero, caps stream s (pruned behind an
// anchor, keyed only). If the state root does not verify under the root
// key, or was rolled back below w, nothing is signed: the events are written
// unkeyed and the error says why.
func Log(tx *keyring.Tx, logKeys []byte, w *unseal.Watermark, s keyring.Stream, keep int, events ...audit.Event) (pruned int, err error) {
	if logKeys == nil || tx.Format() != keyring.FormatVersion {
		_, err := audit.Append(tx, nil, s, anchorOf(tx, s), events...)
		return 0, err
	}
	h, err := tx.Header()
	if err != nil {
		return 0, err
	}
	root, rerr := readRootChecked(tx, logKeys, h, w)
	if rerr == nil {
		// A keyed record is appended only after the stream as it stands
		// matches the root: otherwise moving the root to it would vouch
		// for a truncation or a rollback.
		if p := unseal.CheckAuditState(tx, s, *auditStateOf(root, s)); p != "" {
			rerr = fmt.Errorf("%w: the %s log: %s", unseal.ErrIntegrity, s, p)
		}
	}
	if rerr != nil {
		if _, err := audit.Append(tx, nil, s, anchorOf(tx, s), events...); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("records written unkeyed: %w", rerr)
	}
	st := auditStateOf(root, s)
	head, err := audit.Append(tx, auditKey(logKeys), s, st, events...)
	if err != nil {
		return 0, err
	}
	if head != nil {
		st.KeyedSeq, st.KeyedMAC = head.Seq, head.MAC
	}
	if keep > 0 {
		if pruned, err = audit.Prune(tx, auditKey(logKeys), s, keep, root); err != nil {
			return 0, err
		}
	}
	if root.Generation == math.MaxUint64 {
		return 0, fmt.Errorf("%w: the generation counter is at its end", unseal.ErrIntegrity)
	}
	root.Generation++
	if err := unseal.PutRoot(tx, rootKey(logKeys), h.ID, root); err != nil {
		return 0, err
	}
	w.Wrote(tx, root.Generation)
	return pruned, nil
}

func auditStateOf(r *keyring.Root, s keyring.Stream) *keyring.AuditState {
	if s == keyring.Reads {
		return &r.Reads
	}
	return &r.Events
}

// readRootChecked reads the state root under the log keys' root key and
// checks its generation against w.
func readRootChecked(tx *keyring.Tx, logKeys []byte, h *keyring.Header, w *unseal.Watermark) (*keyring.Root, error) {
	root, err := unseal.ReadRoot(tx, rootKey(logKeys), h.ID)
	if err != nil {
		return nil, err
	}
	return root, w.Check(tx, root.Generation)
}

// anchorOf returns stream s's anchor from the stored root without verifying
// it (for unkeyed appends, which vouch for nothing).
func anchorOf(tx *keyring.Tx, s keyring.Stream) *keyring.AuditState {
	if tx.Format() != keyring.FormatVersion {
		return nil
	}
	r, err := tx.Root()
	if err != nil {
		return nil
	}
	if s == keyring.Reads {
		return &r.Reads
	}
	return &r.Events
}
