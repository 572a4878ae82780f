package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// DefaultInviteTTL is how long an invite code stays valid.
const DefaultInviteTTL = 24 * time.Hour

// newCodeSlot draws a code and seals a code slot for it, inside the budget.
// The code is returned to be shown once (the caller wipes it).
func (m *Manager) newCodeSlot(ctx context.Context, key *unseal.Key, name string, kind keyring.SlotKind, expires int64) (*keyring.Slot, []byte, error) {
	code, err := unseal.NewCode()
	if err != nil {
		return nil, nil, err
	}
	norm, _ := unseal.NormalizeCode(code)
	defer memlock.Wipe(norm)
	var slot *keyring.Slot
	err = m.opts.withKDF(ctx, unseal.CodeParams, func() error {
		var err error
		slot, err = key.SealSlot(name, kind, norm, unseal.CodeParams, m.opts.now(), expires)
		return err
	})
	if err != nil {
		memlock.Wipe(code)
		return nil, nil, err
	}
	return slot, code, nil
}

// Invite creates a one-time code with which name can enroll as an admin and
// choose their own password, authorized by actor. The code is returned once
// (the caller wipes it) and expires after ttl. The DataKey is never at rest
// unwrapped: the invite is a slot of its own, wrapping it under the code. A
// stale slot of that name (one that missed a format-1 rekey) is replaced at
// enrolment.
func (m *Manager) Invite(ctx context.Context, actor string, actorPassword []byte, name string, ttl time.Duration) (code []byte, expires time.Time, err error) {
	if err := validAdminName(name); err != nil {
		return nil, time.Time{}, err
	}
	if ttl < time.Minute || ttl > 30*24*time.Hour {
		return nil, time.Time{}, fmt.Errorf("%w: an invite lives from 1 minute to 30 days", ErrInvalid)
	}
	s, err := m.authenticate(ctx, audit.KindAdminInvite, actor, actorPassword)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer s.close()
	expires = m.opts.clock().Add(ttl).Truncate(time.Second)
	slot, code, err := m.newCodeSlot(ctx, s.key, name, keyring.KindInvite, expires.Unix())
	if err != nil {
		return nil, time.Time{}, err
	}
	_, err = m.change(ctx, s, op{kind: audit.KindAdminInvite, target: name, detail: "expires " + expires.UTC().Format(time.RFC3339)}, func(t *txn) error {
		if err := slotFree(t.Tx, name); err != nil {
			return err
		}
		return t.PutSlot(slot)
	})
	if err != nil {
		memlock.Wipe(code)
		return nil, time.Time{}, err
	}
	return code, expires, nil
}

// Enroll turns name's invite into name's admin slot under newPassword. The
// invite is single use: the new slot replaces it in one transaction. Before
// that, the new slot is opened with newPassword, so a slot that would not
// open is never committed. A wrong code does not consume the invite.
func (m *Manager) Enroll(ctx context.Context, name string, typedCode, newPassword []byte) error {
	if err := CheckNewPassword(name, newPassword); err != nil {
		return err
	}
	code, ok := unseal.NormalizeCode(typedCode)
	if !ok {
		return fmt.Errorf("%w: that is not the shape of a code (32 letters and digits in groups of four)", ErrInvite)
	}
	defer memlock.Wipe(code)
	s, err := m.authenticateKind(ctx, audit.KindAdminEnroll, name, code, keyring.KindInvite)
	if err != nil {
		return err
	}
	defer s.close()
	if err := m.bringUpToDate(ctx, s, code); err != nil {
		return err
	}
	slot, err := m.sealNew(ctx, s, name, newPassword, m.opts.now(), nil)
	if err != nil {
		return err
	}
	// Verified enrolment: the slot opens with the password just typed.
	err = m.opts.withKDF(ctx, slot.Params, func() error {
		k, err := unseal.OpenSlot(s.header, slot, newPassword, m.opts.Memory)
		if err != nil {
			return fmt.Errorf("the new slot did not open with the new password (nothing was changed): %w", err)
		}
		k.Destroy()
		return nil
	})
	if err != nil {
		return err
	}
	_, err = m.change(ctx, s, op{kind: audit.KindAdminEnroll, target: name}, func(t *txn) error { return t.PutSlot(slot) })
	return err
}

// RegenerateRecovery creates, or replaces, the recovery code, authorized by
// actor. The code is returned once; the caller shows it and wipes it.
func (m *Manager) RegenerateRecovery(ctx context.Context, actor string, actorPassword []byte) ([]byte, error) {
	s, err := m.authenticate(ctx, audit.KindRecoveryRegenerate, actor, actorPassword)
	if err != nil {
		return nil, err
	}
	defer s.close()
	slot, code, err := m.newCodeSlot(ctx, s.key, RecoveryName, keyring.KindRecovery, 0)
	if err != nil {
		return nil, err
	}
	_, err = m.change(ctx, s, op{kind: audit.KindRecoveryRegenerate, target: RecoveryName}, func(t *txn) error {
		if old, err := t.Slot(RecoveryName); err == nil && old.Kind != keyring.KindRecovery {
			return fmt.Errorf("%w: an admin is named %q", ErrReservedName, RecoveryName)
		}
		return t.PutSlot(slot)
	})
	if err != nil {
		memlock.Wipe(code)
		return nil, err
	}
	return code, nil
}

// HasRecovery reports whether a recovery code is set.
func (m *Manager) HasRecovery() bool {
	has := false
	m.kr.View(func(tx *keyring.Tx) error {
		s, err := tx.Slot(RecoveryName)
		has = err == nil && s.Kind == keyring.KindRecovery
		return nil
	})
	return has
}

// Rotate replaces the master secret with newSecret (version + 1), authorized
// by actor, and returns the new version. The DataKey stays.
func (m *Manager) Rotate(ctx context.Context, actor string, actorPassword []byte, newSecret []byte) (uint64, error) {
	if len(newSecret) < 1 || len(newSecret) > keyring.MaxSecretSize {
		return 0, fmt.Errorf("%w: the master secret must be 1 to %d bytes, got %d", ErrInvalid, keyring.MaxSecretSize, len(newSecret))
	}
	s, err := m.authenticate(ctx, audit.KindSecretRotate, actor, actorPassword)
	if err != nil {
		return 0, err
	}
	defer s.close()
	var version uint64
	_, err = m.change(ctx, s, op{kind: audit.KindSecretRotate}, func(t *txn) error {
		sec, err := t.Secret()
		if err != nil {
			return err
		}
		version = sec.Version + 1
		ns, err := s.key.EncryptSecret(newSecret, version)
		if err != nil {
			return err
		}
		return t.PutSecret(ns)
	})
	return version, err
}

// Rekeyed is what a rekey hands back to the acting admin.
type Rekeyed struct {
	// RecoveryCode is the new recovery code (shown once, then wiped by the
	// caller); nil when the keyring had none.
	RecoveryCode []byte
	// DroppedInvites are the invites the rekey ended; KeptInvites those it
	// handed the new key (only with keepInvites).
	DroppedInvites []string
	KeptInvites    []string
	// HandedOver are the admin slots that take the new key at their owner's
	// next login; Stale those that cannot (they must enrol again).
	HandedOver []string
	Stale      []string
	// Remade are the unattended slots bound again under new keys (with
	// KeepUnattended); DroppedUnattended those the rekey removed.
	Remade            []string
	DroppedUnattended []string
	Generation        uint64
	// Identity is the keyring's new identity pin (unattended_identity),
	// empty when it has none.
	Identity string
}

// RekeyOptions are what a rekey keeps that it ends by default.
type RekeyOptions struct {
	// KeepInvites hands outstanding invites the new key instead of
	// dropping them (their codes keep working).
	KeepInvites bool
	// KeepUnattended binds the unattended slots again under new keys, to
	// the servers, PCRs and members the file holds, instead of removing
	// them. Whoever could change the file before the rekey (a removed
	// admin, who held the DataKey) may have chosen those: a Tang slot
	// bound to a server of theirs would still give them the new DataKey.
	KeepUnattended bool
	// Remove names an admin, an invite or the recovery code (what remove
	// takes: removable) whose slot goes in the same transaction as the
	// rekey: offboarding never leaves the removed
	// admin's DataKey current, even if the process dies between the two.
	// It is recorded as its own admin.remove event before the rekey's.
	Remove string
}

// Rekey replaces the DataKey, authorized by actor, so that an older copy of
// the keyring and a removed admin's password open nothing written after it,
// and ends every credential a removed party could know: the recovery code is
// regenerated (returned once), and outstanding invites are dropped unless
// o.KeepInvites. The master secret is re-encrypted (same value, same
// version); the actor's slot is rewrapped under their password; every other
// admin slot gets the new key under its hand-over key (HandOver), which only
// a holder of the old DataKey can do, and folds it in at its owner's next
// login. Unattended slots are removed, or with o.KeepUnattended bound again
// under new keys. The state root is re-signed under the new key and the
// audit log moves to the new audit key, in the same transaction.
func (m *Manager) Rekey(ctx context.Context, actor string, actorPassword []byte, o RekeyOptions) (*Rekeyed, error) {
	if o.Remove != "" && o.Remove == actor {
		return nil, fmt.Errorf("%w: %s cannot remove themself and rekey: once removed, they hold no slot to rekey with; remove, then another admin rekeys", ErrInvalid, actor)
	}
	s, err := m.authenticate(ctx, audit.KindAdminRekey, actor, actorPassword)
	if err != nil {
		return nil, err
	}
	defer s.close()
	k2, err := s.key.Rekeyed(m.opts.Memory)
	if err != nil {
		return nil, err
	}
	defer k2.Destroy()
	lk2, err := k2.LogKeys(m.opts.Memory)
	if err != nil {
		return nil, err
	}
	handed := false
	defer func() {
		if !handed {
			lk2.Destroy()
		}
	}()
	params := newSlotParams(s.header.Policy)
	var mine *keyring.Slot
	err = m.opts.withKDF(ctx, params, func() error {
		m.opts.progress("deriving key for "+actor, params)
		var err error
		mine, err = k2.SealSlot(actor, keyring.KindAdmin, actorPassword, params, s.slot.Created, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	var remade remade
	if o.KeepUnattended {
		remade, err = m.remakeUnattended(ctx)
		defer remade.destroy()
		if err != nil {
			m.refused(ctx, s, op{kind: audit.KindAdminRekey, target: o.Remove}, err)
			return nil, err
		}
	}
	out := &Rekeyed{}
	var recovery *keyring.Slot
	// A recovery code being removed in this rekey gets no successor.
	if m.HasRecovery() && o.Remove != RecoveryName {
		if recovery, out.RecoveryCode, err = m.newCodeSlot(ctx, k2, RecoveryName, keyring.KindRecovery, 0); err != nil {
			return nil, err
		}
	}
	var root *keyring.Root
	change := func() (err error) {
		root, err = m.change(ctx, s, op{kind: audit.KindAdminRekey, target: o.Remove}, func(t *txn) error {
			return m.rekeyIn(ctx, t, k2, lk2, mine, recovery, o, remade, out)
		})
		return err
	}
	if m.opts.Exclusive != nil {
		err = m.opts.Exclusive(change)
	} else {
		err = change()
	}
	if err != nil {
		memlock.Wipe(out.RecoveryCode)
		return nil, err
	}
	handed = true // OnCommit owns lk2 now
	out.Generation = root.Generation
	return out, nil
}

// remade are the unattended slots' new bindings for a rekey, made before
// its transaction, each with the record it was made from.
type remade map[string]*remadeSlot

type remadeSlot struct {
	raw     []byte
	binding []byte
	kek     *memlock.Buffer
}

func (r remade) destroy() {
	for _, s := range r {
		s.kek.Destroy()
	}
}

// remakeUnattended makes a new binding over a new key for every unattended
// slot (Options.Remake), outside the rekey's transaction: a TPM or a
// helper may take a while. Any slot that cannot be made again stops the
// rekey before it changes anything, with what to do.
func (m *Manager) remakeUnattended(ctx context.Context) (remade, error) {
	out := remade{}
	var slots []*keyring.Slot
	raws := map[string][]byte{}
	if err := m.kr.View(func(tx *keyring.Tx) error {
		all, err := tx.Slots()
		if err != nil {
			return err
		}
		for _, sl := range all {
			if sl.Unattended() {
				slots = append(slots, sl)
				raws[sl.Name] = append([]byte(nil), tx.RawSlot(sl.Name)...)
			}
		}
		return nil
	}); err != nil {
		return out, err
	}
	if len(slots) > 0 && m.opts.Remake == nil {
		return out, fmt.Errorf("%w: this keyring has unattended slots, which a rekey that keeps them binds again under new keys, and this tool cannot make bindings", ErrInvalid)
	}
	for _, sl := range slots {
		kek, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
		if err != nil {
			return out, err
		}
		out[sl.Name] = &remadeSlot{raw: raws[sl.Name], kek: kek}
		if _, err := rand.Read(kek.Bytes()); err != nil {
			return out, err
		}
		b, err := m.opts.Remake(ctx, sl.Kind, sl.Binding, kek.Bytes())
		if err != nil {
			return out, fmt.Errorf("the rekey keeps the unattended slots by binding each again under a new key, and %s slot %q could not be: %w; the rekey changed nothing: run it where the TPM answers (--tcti), or without --keep-unattended (the slots are removed; bind them again after)", sl.Kind, sl.Name, err)
		}
		out[sl.Name].binding = b
	}
	return out, nil
}

func (m *Manager) rekeyIn(ctx context.Context, t *txn, k2 *unseal.Key, lk2 *memlock.Buffer, mine, recovery *keyring.Slot, o RekeyOptions, remade remade, out *Rekeyed) error {
	if o.Remove != "" {
		target, err := t.Slot(o.Remove)
		if err != nil {
			return err
		}
		if err := removable(t.Tx, target); err != nil {
			return err
		}
		if err := t.DeleteSlot(o.Remove); err != nil {
			return err
		}
		// Under the old audit key, before the rekey's record moves the
		// log to the new one: the log reads remove, then rekey.
		ev := audit.Event{Kind: audit.KindAdminRemove, Actor: t.s.slot.Name, Target: o.Remove, Peer: audit.PeerFrom(ctx), Outcome: audit.OK, Detail: "with a rekey, in one transaction"}
		if _, err := audit.Append(t.Tx, t.s.auditKey(), keyring.Events, &t.root.Events, ev); err != nil {
			return fmt.Errorf("writing the audit record (nothing was changed): %w", err)
		}
	}
	sec, err := t.Secret()
	if err != nil {
		return err
	}
	plain, err := t.s.key.DecryptSecret(sec, m.opts.Memory)
	if err != nil {
		return err
	}
	ns, err := k2.EncryptSecret(plain.Bytes(), sec.Version)
	plain.Destroy()
	if err != nil {
		return err
	}
	if err := t.PutSecret(ns); err != nil {
		return err
	}
	h, err := t.Header()
	if err != nil {
		return err
	}
	h.Commitment = k2.Commitment()
	if err := t.PutHeader(h); err != nil {
		return err
	}
	{
		// A new identity, not the old one under the new DataKey: whoever
		// held the old DataKey (a removed admin) knows the old identity and
		// could give a state they forge under a key of their own. Its pin
		// must go into sealboxd's configuration again. Drawn even when the
		// file has no identity record: the record is not under the state
		// root, so a writer could have deleted it to keep the rekey quiet
		// about a pin that sealboxd's configuration still holds.
		next, err := k2.NewIdentity()
		if err != nil {
			return err
		}
		if out.Identity, err = k2.IdentityPin(next); err != nil {
			return err
		}
		if err := t.PutIdentity(next); err != nil {
			return err
		}
		t.detail = append(t.detail, "new identity")
	}
	slots, err := t.Slots()
	if err != nil {
		return err
	}
	replaced := false
	for _, sl := range slots {
		var next *keyring.Slot
		switch {
		case sl.Name == t.s.slot.Name:
			next = mine
		case sl.Kind == keyring.KindRecovery:
			if recovery == nil {
				return fmt.Errorf("%w: a recovery code was set during the rekey", ErrChanged)
			}
			next, replaced = recovery, true
		case sl.Kind == keyring.KindInvite && !o.KeepInvites:
			if err := t.DeleteSlot(sl.Name); err != nil {
				return err
			}
			out.DroppedInvites = append(out.DroppedInvites, sl.Name)
			continue
		case sl.Unattended() && !o.KeepUnattended:
			if err := t.DeleteSlot(sl.Name); err != nil {
				return err
			}
			out.DroppedUnattended = append(out.DroppedUnattended, sl.Name)
			continue
		case sl.Unattended():
			// A new key and a new hand-over key, no pending key: a
			// hand-over would seal the new DataKey under a hand-over key
			// that whoever held the old DataKey can read from its escrow.
			r := remade[sl.Name]
			if r == nil || !bytes.Equal(t.RawSlot(sl.Name), r.raw) {
				return fmt.Errorf("%w: slot %q", ErrChanged, sl.Name)
			}
			if next, err = k2.SealSlotKEK(sl.Name, sl.Kind, r.binding, r.kek.Bytes(), sl.Created); err != nil {
				return err
			}
			out.Remade = append(out.Remade, sl.Name)
		case sl.Flags&keyring.SlotStale != 0 || sl.Opaque():
			out.Stale = append(out.Stale, sl.Name)
			continue
		default:
			if next, err = t.s.key.HandOver(sl, k2); err != nil {
				return err
			}
			if sl.Kind == keyring.KindInvite {
				out.KeptInvites = append(out.KeptInvites, sl.Name)
			} else {
				out.HandedOver = append(out.HandedOver, sl.Name)
			}
		}
		if err := t.PutSlot(next); err != nil {
			return err
		}
	}
	if recovery != nil && !replaced {
		// Its code, made before this transaction, would be handed out
		// opening nothing.
		return fmt.Errorf("%w: the recovery code was removed during the rekey", ErrChanged)
	}
	d := fmt.Sprintf("%d admin slots get the new key at their next login", len(out.HandedOver))
	if len(out.Remade) > 0 {
		d += fmt.Sprintf("; unattended slots %q bound again under new keys", out.Remade)
	}
	if len(out.DroppedUnattended) > 0 {
		d += fmt.Sprintf("; unattended slots %q removed", out.DroppedUnattended)
	}
	if recovery != nil {
		d += "; recovery code regenerated"
	}
	if len(out.DroppedInvites) > 0 {
		d += fmt.Sprintf("; invites %q dropped", out.DroppedInvites)
	}
	if len(out.KeptInvites) > 0 {
		d += fmt.Sprintf("; invites %q kept (their codes still work)", out.KeptInvites)
	}
	ev := audit.Event{Kind: audit.KindAdminRekey, Actor: t.s.slot.Name, Peer: audit.PeerFrom(ctx), Outcome: audit.OK, Detail: joinDetail(d, t.detail)}
	head, err := audit.Rekey(t.Tx, t.s.auditKey(), auditKey(lk2.Bytes()), t.root, ev)
	if err != nil {
		return fmt.Errorf("moving the audit log to the new key (nothing was changed): %w", err)
	}
	t.head, t.signer, t.logKeys = head, k2, lk2
	return nil
}

// Backup writes a consistent copy of the keyring, taken in one read
// transaction, to w, and records it. It needs no password: the copy is no
// more than the file itself.
func (m *Manager) Backup(ctx context.Context, w io.Writer) (int64, error) {
	n, err := m.kr.Backup(w)
	if err != nil {
		return n, err
	}
	if aerr := m.kr.Update(func(tx *keyring.Tx) error {
		_, err := Log(tx, m.opts.logKeys(), m.wm, keyring.Events, 0, audit.Event{Kind: audit.KindBackup, Peer: audit.PeerFrom(ctx), Outcome: audit.OK, Detail: fmt.Sprintf("%d bytes", n)})
		return ignoreUnsigned(err)
	}); aerr != nil && !errors.Is(aerr, keyring.ErrReadOnly) {
		return n, aerr
	}
	return n, nil
}
