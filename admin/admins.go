package admin

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// AddAdmin adds name with newPassword, authorized by actor's password.
func (m *Manager) AddAdmin(ctx context.Context, actor string, actorPassword []byte, name string, newPassword []byte) error {
	return m.AddAdminWith(ctx, actor, actorPassword, name, newPassword, nil)
}

// AddAdminWith is AddAdmin with explicit Argon2id parameters for the new
// slot (nil: the keyring's policy; a zero field: the policy's). They must be
// at least the policy in every dimension, within the caps and the budget.
func (m *Manager) AddAdminWith(ctx context.Context, actor string, actorPassword []byte, name string, newPassword []byte, kdf *keyring.Params) error {
	if err := validAdminName(name); err != nil {
		return err
	}
	if err := CheckNewPassword(name, newPassword); err != nil {
		return err
	}
	params, detail, err := m.explicitOrPolicy(kdf)
	if err != nil {
		return err
	}
	if err := m.kr.View(func(tx *keyring.Tx) error { return slotFree(tx, name) }); err != nil {
		return err
	}
	s, err := m.authenticate(ctx, audit.KindAdminAdd, actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	slot, err := m.sealNew(ctx, s, name, newPassword, m.opts.now(), params)
	if err != nil {
		return err
	}
	_, err = m.change(ctx, s, op{kind: audit.KindAdminAdd, target: name, detail: detail}, func(t *txn) error {
		if err := slotFree(t.Tx, name); err != nil {
			return err
		}
		return t.PutSlot(slot)
	})
	return err
}

// slotFree refuses a name that a slot holds, unless that slot is stale (it
// can never open again, so a new one may take its place).
func slotFree(tx *keyring.Tx, name string) error {
	sl, err := tx.Slot(name)
	if err != nil {
		return nil
	}
	if sl.Flags&keyring.SlotStale != 0 {
		return nil
	}
	return fmt.Errorf("%w: %q", keyring.ErrSlotExists, name)
}

// RemoveAdmin deletes name's slot (or a pending invite), authorized by
// actor's password. An admin may remove themself while another usable admin
// remains; the last one is never removed.
func (m *Manager) RemoveAdmin(ctx context.Context, actor string, actorPassword []byte, name string) error {
	s, err := m.authenticate(ctx, audit.KindAdminRemove, actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	_, err = m.change(ctx, s, op{kind: audit.KindAdminRemove, target: name}, func(t *txn) error {
		target, err := t.Slot(name)
		if err != nil {
			return err
		}
		if err := removable(t.Tx, target); err != nil {
			return err
		}
		return t.DeleteSlot(name)
	})
	return err
}

// removable says whether remove may take target: an admin (never the last
// usable one), an invite or the recovery code. Unattended slots are
// unbind's: a remove would not stop them being tried, nor name them among
// the slots to bind again.
func removable(tx *keyring.Tx, target *keyring.Slot) error {
	if target.Unattended() {
		return fmt.Errorf("%w: %q is %s slot; remove it with: sealbox-admin unbind %s", ErrNotAdmin, target.Name, KindWithArticle(target.Kind), target.Name)
	}
	if usableAdmin(target) && usableAdmins(tx) <= 1 {
		return ErrLastAdmin
	}
	return nil
}

// usableAdmin reports whether a slot is an admin's that can still open.
func usableAdmin(s *keyring.Slot) bool {
	return s.Kind == keyring.KindAdmin && s.Flags&keyring.SlotStale == 0
}

func usableAdmins(tx *keyring.Tx) int {
	slots, _ := tx.Slots()
	n := 0
	for _, s := range slots {
		if usableAdmin(s) {
			n++
		}
	}
	return n
}

// Passwd replaces name's slot with one under newPassword, authorized by the
// current password. The new slot replaces the old in the same transaction, so
// there is no moment with neither.
func (m *Manager) Passwd(ctx context.Context, name string, current, newPassword []byte) error {
	return m.PasswdWith(ctx, name, current, newPassword, nil)
}

// PasswdWith is Passwd with explicit Argon2id parameters for the new slot,
// as AddAdminWith takes them.
func (m *Manager) PasswdWith(ctx context.Context, name string, current, newPassword []byte, kdf *keyring.Params) error {
	if err := CheckNewPassword(name, newPassword); err != nil {
		return err
	}
	params, detail, err := m.explicitOrPolicy(kdf)
	if err != nil {
		return err
	}
	if bytes.Equal(current, newPassword) {
		return fmt.Errorf("%w: the new password is the same as the current one", ErrWeakPassword)
	}
	s, err := m.authenticate(ctx, audit.KindAdminPasswd, name, current)
	if err != nil {
		return err
	}
	defer s.close()
	slot, err := m.sealNew(ctx, s, name, newPassword, s.slot.Created, params)
	if err != nil {
		return err
	}
	_, err = m.change(ctx, s, op{kind: audit.KindAdminPasswd, target: name, detail: detail}, func(t *txn) error { return t.PutSlot(slot) })
	return err
}

// AdminInfo is what ListAdmins shows of a slot. It holds nothing secret.
type AdminInfo struct {
	Name    string     `json:"name"`
	Kind    string     `json:"kind"`
	Time    uint32     `json:"kdf_time"`
	Memory  uint32     `json:"kdf_memory_kib"`
	Threads uint8      `json:"kdf_threads"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	Expired bool       `json:"expired,omitempty"`
	// Pending says a rekey happened since this slot's owner last logged in.
	Pending bool `json:"rekey_pending,omitempty"`
	// Stale says the slot missed a format-1 rekey and can no longer open:
	// its owner must be invited again.
	Stale bool `json:"stale,omitempty"`
	// Legacy says the slot still holds a format-1 payload; its owner's
	// next login rewraps it.
	Legacy bool `json:"legacy_layout,omitempty"`
	// Binding says what an unattended slot is bound to ("tang http://…",
	// "tpm2 sha256:7", "threshold 2 of 3: …"), as the file says: it is
	// verified only when the slot opens.
	Binding string `json:"binding,omitempty"`
}

// ListAdmins returns every slot, by name. It needs no password; the records
// are verified only by operations that hold the DataKey.
func (m *Manager) ListAdmins() ([]AdminInfo, error) {
	var out []AdminInfo
	now := m.opts.now()
	err := m.kr.View(func(tx *keyring.Tx) error {
		slots, err := tx.Slots()
		if err != nil {
			return err
		}
		for _, s := range slots {
			ai := AdminInfo{
				Name: s.Name, Kind: s.Kind.String(),
				Time: s.Params.Time, Memory: s.Params.MemoryKiB, Threads: s.Params.Threads,
				Created: time.Unix(s.Created, 0).UTC(), Pending: s.HasPending() || (s.Legacy != nil && s.Legacy.Pending != nil),
				Stale:  s.Flags&keyring.SlotStale != 0,
				Legacy: s.Legacy != nil || s.Flags&keyring.SlotLegacyWrap != 0,
			}
			if s.Unattended() {
				ai.Binding = unattended.Describe(s.Kind, s.Binding)
			}
			if s.Expires != 0 {
				e := time.Unix(s.Expires, 0).UTC()
				ai.Expires, ai.Expired = &e, now >= s.Expires
			}
			out = append(out, ai)
		}
		return nil
	})
	return out, err
}

// MaxSlotParams returns the most memory and the most lanes any admin
// slot's derivation needs (at least the policy's), so that a budget can be
// checked against it and working memory kept ready for it.
func (m *Manager) MaxSlotParams() (keyring.Params, error) {
	var most keyring.Params
	err := m.kr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		most = decoyParams(h, mostExpensiveAdmin(tx))
		slots, err := tx.Slots()
		for _, s := range slots {
			if s.Kind == keyring.KindAdmin && unseal.CheckParams(s.Params) == nil {
				most.MemoryKiB = max(most.MemoryKiB, s.Params.MemoryKiB)
				most.Threads = max(most.Threads, s.Params.Threads)
				most.Time = max(most.Time, s.Params.Time)
			}
		}
		return err
	})
	return most, err
}

// SetPolicy changes the Argon2id parameters new slots get, authorized by
// actor's password; never below the floor, nor above what the KDF budget
// (when there is one) can derive: the logins that rewrap slots to it would
// fail. Each admin's slot is rewrapped
// to it at their next login (cryptsetup's luksConvertKey, without anyone
// else present).
func (m *Manager) SetPolicy(ctx context.Context, actor string, actorPassword []byte, p keyring.Params) error {
	if err := m.checkExplicit(p); err != nil {
		return err
	}
	s, err := m.authenticate(ctx, audit.KindAdminPolicy, actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	_, err = m.change(ctx, s, op{kind: audit.KindAdminPolicy, detail: "kdf policy " + p.String()}, func(t *txn) error {
		h, err := t.Header()
		if err != nil {
			return err
		}
		h.Policy = p
		return t.PutHeader(h)
	})
	return err
}
