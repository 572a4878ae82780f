package admin

import (
	"context"
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

// Invite creates a one-time code with which name can enroll as an admin and
// choose their own password, authorized by actor. The code is returned once
// (the caller wipes it) and expires after ttl. The DataKey is never at rest
// unwrapped: the invite is a slot of its own, wrapping it under the code.
func (m *Manager) Invite(ctx context.Context, actor string, actorPassword []byte, name string, ttl time.Duration) (code []byte, expires time.Time, err error) {
	if err := validAdminName(name); err != nil {
		return nil, time.Time{}, err
	}
	if ttl < time.Minute || ttl > 30*24*time.Hour {
		return nil, time.Time{}, fmt.Errorf("%w: an invite lives from 1 minute to 30 days", ErrInvalid)
	}
	s, err := m.authenticate(ctx, "admin.invite", actor, actorPassword)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer s.close()
	if code, err = unseal.NewCode(); err != nil {
		return nil, time.Time{}, err
	}
	norm, _ := unseal.NormalizeCode(code)
	defer memlock.Wipe(norm)
	now := m.opts.clock()
	expires = now.Add(ttl).Truncate(time.Second)
	var slot *keyring.Slot
	err = m.opts.withKDF(ctx, unseal.CodeParams, func() error {
		var err error
		slot, err = s.key.SealCodeSlot(name, keyring.KindInvite, norm, now.Unix(), expires.Unix())
		return err
	})
	if err == nil {
		err = m.change(ctx, s, "admin.invite", name, func(tx *keyring.Tx) error {
			if _, err := tx.Slot(name); err == nil {
				return fmt.Errorf("%w: %q", keyring.ErrSlotExists, name)
			}
			return tx.PutSlot(slot)
		}, "expires "+expires.UTC().Format(time.RFC3339))
	}
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
	s, err := m.authenticateKind(ctx, "admin.enroll", name, code, keyring.KindInvite)
	if err != nil {
		return err
	}
	defer s.close()
	slot, err := m.sealNew(ctx, s, name, newPassword, m.opts.now())
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
	return m.change(ctx, s, "admin.enroll", name, func(tx *keyring.Tx) error { return tx.PutSlot(slot) })
}

// RegenerateRecovery creates, or replaces, the recovery code, authorized by
// actor. The code is returned once; the caller shows it and wipes it.
func (m *Manager) RegenerateRecovery(ctx context.Context, actor string, actorPassword []byte) ([]byte, error) {
	s, err := m.authenticate(ctx, "recovery.regenerate", actor, actorPassword)
	if err != nil {
		return nil, err
	}
	defer s.close()
	code, err := unseal.NewCode()
	if err != nil {
		return nil, err
	}
	norm, _ := unseal.NormalizeCode(code)
	defer memlock.Wipe(norm)
	var slot *keyring.Slot
	err = m.opts.withKDF(ctx, unseal.CodeParams, func() error {
		var err error
		slot, err = s.key.SealCodeSlot(RecoveryName, keyring.KindRecovery, norm, m.opts.now(), 0)
		return err
	})
	if err == nil {
		err = m.change(ctx, s, "recovery.regenerate", RecoveryName, func(tx *keyring.Tx) error {
			if old, err := tx.Slot(RecoveryName); err == nil && old.Kind != keyring.KindRecovery {
				return fmt.Errorf("%w: an admin is named %q", ErrReservedName, RecoveryName)
			}
			return tx.PutSlot(slot)
		})
	}
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
	s, err := m.authenticate(ctx, "secret.rotate", actor, actorPassword)
	if err != nil {
		return 0, err
	}
	defer s.close()
	var version uint64
	err = m.change(ctx, s, "secret.rotate", "", func(tx *keyring.Tx) error {
		sec, err := tx.Secret()
		if err != nil {
			return err
		}
		version = sec.Version + 1
		ns, err := s.key.EncryptSecret(newSecret, version)
		if err != nil {
			return err
		}
		return tx.PutSecret(ns)
	})
	return version, err
}

// Rekey replaces the DataKey, authorized by actor, so that an older copy of
// the keyring and a removed admin's password open nothing written after it.
// The master secret is re-encrypted (same value, same version); the actor's
// slot is rewrapped under their password; every other slot gets the new key
// sealed to its X25519 public key (Pending) and folds it in at its owner's
// next login, so nobody else needs to be present or to change a password.
// Every record is re-signed under the new registry key, and the audit log
// moves to the new audit key (Options.OnRekey receives it).
func (m *Manager) Rekey(ctx context.Context, actor string, actorPassword []byte) error {
	s, err := m.authenticate(ctx, "admin.rekey", actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	k2, err := s.key.Rekeyed(m.opts.Memory)
	if err != nil {
		return err
	}
	defer k2.Destroy()
	ak2, err := k2.AuditKey(m.opts.Memory)
	if err != nil {
		return err
	}
	handed := false
	defer func() {
		if !handed {
			ak2.Destroy()
		}
	}()
	params := newSlotParams(s.header.Policy)
	var mine *keyring.Slot
	err = m.opts.withKDF(ctx, params, func() error {
		m.opts.progress("deriving key for "+actor, params)
		var err error
		mine, err = k2.SealSlot(actor, keyring.KindAdmin, actorPassword, params, s.slot.Created)
		return err
	})
	if err != nil {
		return err
	}
	var verified []*keyring.Client
	var after *unseal.Report
	err = m.kr.Update(func(tx *keyring.Tx) error {
		cur, err := tx.Slot(actor)
		if err != nil || !cur.Equal(s.slot) {
			return ErrChanged
		}
		rep, err := s.key.VerifyRegistry(tx)
		if err != nil {
			return err
		}
		if err := rep.Err(); err != nil {
			return fmt.Errorf("%w; a rekey is refused until this is resolved (run sealbox-admin check)", err)
		}
		sec, err := tx.Secret()
		if err != nil {
			return err
		}
		plain, err := s.key.DecryptSecret(sec, m.opts.Memory)
		if err != nil {
			return err
		}
		ns, err := k2.EncryptSecret(plain.Bytes(), sec.Version)
		plain.Destroy()
		if err != nil {
			return err
		}
		if err := tx.PutSecret(ns); err != nil {
			return err
		}
		h, err := tx.Header()
		if err != nil {
			return err
		}
		h.Commitment = k2.Commitment()
		if err := tx.PutHeader(h); err != nil {
			return err
		}
		slots, err := tx.Slots()
		if err != nil {
			return err
		}
		for _, sl := range slots {
			next := mine
			if sl.Name != actor {
				if next, err = k2.SealPending(sl); err != nil {
					return err
				}
			}
			if err := tx.PutSlot(next); err != nil {
				return err
			}
		}
		clients, err := tx.Clients()
		if err != nil {
			return err
		}
		for _, c := range clients {
			k2.SignClient(c)
			if err := tx.PutClient(c); err != nil {
				return err
			}
		}
		if err := k2.Register(tx); err != nil {
			return err
		}
		if err := recordSuccess(tx, actor); err != nil {
			return err
		}
		ev := audit.Event{Kind: "admin.rekey", Actor: actor, Peer: audit.PeerFrom(ctx), Outcome: "ok", Detail: fmt.Sprintf("%d other slots get the new key at their next login", len(slots)-1)}
		if err := audit.Rekey(tx, s.auditKey.Bytes(), ak2.Bytes(), ev); err != nil {
			return fmt.Errorf("moving the audit log to the new key (nothing was changed): %w", err)
		}
		verified, after, err = verifiedClients(k2, tx)
		return err
	})
	if err != nil {
		m.refused(ctx, s, "admin.rekey", "", err)
		return err
	}
	if m.opts.OnChange != nil {
		m.opts.OnChange(verified, after)
	}
	if m.opts.OnRekey != nil {
		m.opts.OnRekey(ak2)
		handed = true
	}
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
		return audit.Append(tx, m.opts.auditKey(), audit.Event{Kind: "backup", Peer: audit.PeerFrom(ctx), Outcome: "ok", Detail: fmt.Sprintf("%d bytes", n)})
	}); aerr != nil && !errors.Is(aerr, keyring.ErrReadOnly) {
		return n, aerr
	}
	return n, nil
}
