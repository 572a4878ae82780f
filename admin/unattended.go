package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// Unattended slots (Tang, TPM2, threshold) hold the DataKey under a key that
// a binding yields without a person: see keyring/FORMAT.md. This file is
// what the admin rules say about them; making and opening bindings is
// unseal/unattended's.

// Errors of bindings.
var (
	ErrSlotExists    = errclass.New(errclass.Refused, "a slot of that name already exists; pick another --name or unbind it first")
	ErrNotUnattended = errclass.New(errclass.Refused, "that slot is not an unattended one (tang, tpm2, threshold)")
)

// BindSpec is a new unattended slot: its kind, and how to make its binding
// over the slot's new key.
type BindSpec struct {
	Kind keyring.SlotKind
	// Build returns the binding over kek (32 random bytes, the slot's new
	// key). members are the slots named in Replaces, as stored.
	Build func(ctx context.Context, kek []byte, members []*keyring.Slot) ([]byte, error)
	// Replaces names unattended slots that the new slot replaces in the
	// same change (a threshold's members).
	Replaces []string
	// Detail goes into the audit record (what the binding is bound to).
	Detail string
}

// Bind adds the unattended slot name, authorized by actor's password. The
// binding is made before the change, outside the transaction; the change
// then checks that the slots it replaces are the records the binding was
// made from.
//
// It returns the keyring's identity pin, which sealboxd's configuration must
// hold (unattended_identity) before it unseals with no person; a keyring
// without an identity (made before identities) gets one in this change.
func (m *Manager) Bind(ctx context.Context, actor string, actorPassword []byte, name string, spec BindSpec) (string, error) {
	if !spec.Kind.Unattended() {
		return "", fmt.Errorf("%w: %s is not an unattended slot kind", ErrInvalid, spec.Kind)
	}
	if err := validAdminName(name); err != nil {
		return "", err
	}
	s, err := m.authenticate(ctx, audit.KindSlotBind, actor, actorPassword)
	if err != nil {
		return "", err
	}
	defer s.close()
	var members []*keyring.Slot
	var raws [][]byte
	if err := m.kr.View(func(tx *keyring.Tx) error {
		if _, err := tx.Slot(name); err == nil && !contains(spec.Replaces, name) {
			return fmt.Errorf("%w: %q", ErrSlotExists, name)
		}
		for _, r := range spec.Replaces {
			sl, err := tx.Slot(r)
			if err != nil {
				return fmt.Errorf("slot %q: %w", r, err)
			}
			if !sl.Unattended() {
				return fmt.Errorf("%w: %q is %s slot", ErrNotUnattended, r, KindWithArticle(sl.Kind))
			}
			members = append(members, sl)
			raws = append(raws, append([]byte(nil), tx.RawSlot(r)...))
		}
		return nil
	}); err != nil {
		return "", err
	}
	kek, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return "", err
	}
	defer kek.Destroy()
	if _, err := rand.Read(kek.Bytes()); err != nil {
		return "", err
	}
	binding, err := spec.Build(ctx, kek.Bytes(), members)
	if err != nil {
		return "", err
	}
	var pin string
	_, err = m.change(ctx, s, op{kind: audit.KindSlotBind, target: name, detail: spec.Kind.String() + " " + spec.Detail}, func(t *txn) error {
		if _, err := t.Slot(name); err == nil && !contains(spec.Replaces, name) {
			return fmt.Errorf("%w: %q", ErrSlotExists, name)
		}
		for i, r := range spec.Replaces {
			if !bytes.Equal(t.RawSlot(r), raws[i]) {
				return fmt.Errorf("%w: slot %q", ErrChanged, r)
			}
			if err := t.DeleteSlot(r); err != nil {
				return err
			}
		}
		slot, err := t.s.key.SealSlotKEK(name, spec.Kind, binding, kek.Bytes(), t.now.Unix())
		if err != nil {
			return err
		}
		rec := t.RawIdentity()
		if rec == nil {
			if rec, err = t.s.key.NewIdentity(); err != nil {
				return err
			}
			if err := t.PutIdentity(rec); err != nil {
				return err
			}
			t.detail = append(t.detail, "new identity")
		}
		if pin, err = t.s.key.IdentityPin(rec); err != nil {
			return fmt.Errorf("%w; run: sealbox-admin check --as NAME", err)
		}
		return t.PutSlot(slot)
	})
	return pin, err
}

// KindWithArticle is "a tang", "an admin": a slot kind in a sentence.
func KindWithArticle(k keyring.SlotKind) string {
	s := k.String()
	if s != "" && strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// noSlotError is Unbind's answer for a name no slot has. It is
// keyring.ErrNoSlot without that error's text, which speaks of admins.
type noSlotError struct{ name string }

func (e noSlotError) Error() string {
	return fmt.Sprintf("no slot %q (every slot is listed by: sealbox-admin slots)", e.name)
}

func (e noSlotError) Is(target error) bool {
	return target == keyring.ErrNoSlot || target == errclass.NotFound
}

// Unbind removes the unattended slot name, authorized by actor's password.
// It never removes an admin's slot (that is RemoveAdmin).
func (m *Manager) Unbind(ctx context.Context, actor string, actorPassword []byte, name string) error {
	s, err := m.authenticate(ctx, audit.KindSlotUnbind, actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	_, err = m.change(ctx, s, op{kind: audit.KindSlotUnbind, target: name}, func(t *txn) error {
		sl, err := t.Slot(name)
		if err != nil {
			if errors.Is(err, keyring.ErrNoSlot) {
				return noSlotError{name}
			}
			return err
		}
		if !sl.Unattended() {
			return fmt.Errorf("%w: %q is %s slot (remove admins with: sealbox-admin remove NAME)", ErrNotUnattended, name, KindWithArticle(sl.Kind))
		}
		t.detail = append(t.detail, sl.Kind.String())
		return t.DeleteSlot(name)
	})
	return err
}

// Reseal replaces the binding of the unattended slot name by one build
// makes over a new key, in a change authorized by an admin's session: used
// after an admin unseal, for a TPM2 slot whose PCRs drifted. The slot must
// still be the record the caller read (raw).
func (m *Manager) reseal(ctx context.Context, s *session, name string, raw []byte, build func(kek []byte) ([]byte, error), why string) error {
	kek, err := memlock.New(keyring.KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return err
	}
	defer kek.Destroy()
	if _, err := rand.Read(kek.Bytes()); err != nil {
		return err
	}
	binding, err := build(kek.Bytes())
	if err != nil {
		return err
	}
	_, err = m.change(ctx, s, op{kind: audit.KindSlotReseal, target: name, detail: why}, func(t *txn) error {
		if !bytes.Equal(t.RawSlot(name), raw) {
			return fmt.Errorf("%w: slot %q", ErrChanged, name)
		}
		old, err := t.Slot(name)
		if err != nil {
			return err
		}
		slot, err := t.s.key.SealSlotKEK(name, old.Kind, binding, kek.Bytes(), old.Created)
		if err != nil {
			return err
		}
		return t.PutSlot(slot)
	})
	return err
}

// UnattendedSlots returns the unattended slots as stored. Nothing in them
// is verified before an unseal: a binding that was tampered with yields a
// key that opens nothing (OpenSlotKEK), the state root is checked once a
// key is at hand, and the identity after it. A record that does not decode
// is left out and named in skipped, so that one bad record does not stop
// the others.
func (m *Manager) UnattendedSlots() (slots []*keyring.Slot, skipped []string, err error) {
	err = m.kr.View(func(tx *keyring.Tx) error {
		if tx.Format() != keyring.FormatVersion {
			return nil // a format-1 file has no unattended slots
		}
		tx.RawRecords(func(kind byte, name, raw []byte) {
			if kind != keyring.RecordSlot {
				return
			}
			s, err := keyring.ParseSlot(string(name), raw)
			switch {
			case err != nil:
				skipped = append(skipped, string(name))
			case s.Unattended():
				slots = append(slots, s)
			}
		})
		return nil
	})
	return slots, skipped, err
}

// UnsealKEK unseals with the unattended slot name, whose binding yielded
// kek, as Unseal does with a password: the file must verify, its identity
// must hash to pin (the root-owned configuration's unattended_identity),
// and the unseal is recorded (how says by what, such as the Tang server).
// There is no backoff: a binding's key is 256 random bits, not a guess.
func (m *Manager) UnsealKEK(ctx context.Context, name string, kek []byte, how, pin string) (*Unsealed, error) {
	if pin == "" {
		return nil, fmt.Errorf("%w: no identity is pinned (unattended_identity); only an admin can unseal", unseal.ErrIdentity)
	}
	var h *keyring.Header
	var slot *keyring.Slot
	var raw []byte
	if err := m.kr.View(func(tx *keyring.Tx) error {
		var err error
		if h, err = tx.Header(); err != nil {
			return err
		}
		if slot, err = tx.Slot(name); err != nil {
			return err
		}
		raw = append([]byte(nil), tx.RawSlot(name)...)
		return nil
	}); err != nil {
		return nil, err
	}
	key, err := unseal.OpenSlotKEK(h, slot, kek, m.opts.Memory)
	if err != nil {
		m.logFailure(ctx, audit.KindUnseal, name, audit.Failed, err)
		return nil, err
	}
	lk, err := key.LogKeys(m.opts.Memory)
	if err != nil {
		key.Destroy()
		return nil, err
	}
	u, err := m.unsealChecked(ctx, &session{key: key, logKeys: lk, header: h, slot: slot, raw: raw}, how, func(t *txn) error {
		return t.s.key.CheckIdentity(t.RawIdentity(), pin)
	})
	if err != nil {
		m.logFailure(ctx, audit.KindUnseal, name, audit.Failed, err)
	}
	return u, err
}
