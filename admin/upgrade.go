package admin

import (
	"bytes"
	"context"
	"fmt"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// upgrade carries a format-1 file into format 2 in one transaction, at the
// first login whose slot opens the header's commitment directly (OpenSlot
// refuses format-1 pending keys, which nothing authenticates). The file must
// verify under format 1's rules first. Every slot keeps its format-1 payload
// (its hand-over key is derived from the DataKey it wraps, and escrowed);
// a slot that still carries a format-1 pending key becomes stale; clients
// are rewritten; the audit head and anchor move into the new state root,
// which is signed for the first time. The actor's slot is rewrapped in the
// current layout afterwards, by refresh.
func (m *Manager) upgrade(ctx context.Context, s *session, _ []byte) error {
	var stale []string
	err := m.kr.Update(func(tx *keyring.Tx) error {
		if tx.Format() != 1 || !bytes.Equal(tx.RawSlot(s.slot.Name), s.raw) {
			return ErrChanged
		}
		rep, err := s.key.VerifyLegacy(tx)
		if err != nil {
			return err
		}
		if err := rep.Err(); err != nil {
			return fmt.Errorf("%w (this format-1 keyring is upgraded at the first login, which needs it to verify; run: sealbox-admin --keyring PATH check --as NAME --repair)", err)
		}
		prev, err := legacyState(tx, s)
		if err != nil {
			return err
		}
		if stale, err = convert(tx, s.key, nil); err != nil {
			return err
		}
		d := upgradeDetail(stale)
		if p, clamped, err := clampLegacyPolicy(tx, s.slot.Params); err != nil {
			return err
		} else if clamped {
			d += "; kdf policy set to " + p.String() + " (format 1 did not authenticate it)"
		}
		return m.signUpgrade(ctx, tx, s, prev, audit.KindUpgrade, d)
	})
	if err != nil {
		return err
	}
	return m.reload(s)
}

func upgradeDetail(stale []string) string {
	d := fmt.Sprintf("upgraded from format 1 to format %d", keyring.FormatVersion)
	if len(stale) > 0 {
		d += fmt.Sprintf("; slots %q missed a format-1 rekey and must enrol again", stale)
	}
	return d
}

// convert rewrites a format-1 file's records in format 2, leaving out the
// records drop names (those that failed verification, for repair). It
// returns the names of slots that became stale.
func convert(tx *keyring.Tx, key *unseal.Key, drop func(kind byte, name string) bool) ([]string, error) {
	slots, err := tx.Slots()
	if err != nil {
		return nil, err
	}
	clients, err := tx.Clients()
	if err != nil {
		return nil, err
	}
	var stale []string
	var out []*keyring.Slot
	for _, sl := range slots {
		if drop != nil && drop(keyring.RecordSlot, sl.Name) {
			continue
		}
		up, err := key.UpgradeSlot(sl)
		if err != nil {
			return nil, err
		}
		if up.Flags&keyring.SlotStale != 0 {
			stale = append(stale, sl.Name)
		}
		out = append(out, up)
	}
	for _, sl := range slots {
		if err := tx.DeleteSlot(sl.Name); err != nil {
			return nil, err
		}
	}
	for _, c := range clients {
		if err := tx.DeleteClient(c.Name); err != nil {
			return nil, err
		}
	}
	if err := tx.SetFormat(keyring.FormatVersion); err != nil {
		return nil, err
	}
	if err := tx.DeleteLegacy(); err != nil {
		return nil, err
	}
	for _, sl := range out {
		if err := tx.PutSlot(sl); err != nil {
			return nil, err
		}
	}
	for _, c := range clients {
		if drop != nil && drop(keyring.RecordClient, c.Name) {
			continue
		}
		c.LegacyMAC = nil
		if err := tx.PutClient(c); err != nil {
			return nil, err
		}
	}
	return stale, nil
}

// clampLegacyPolicy lowers a format-1 header's policy, which format 1 did
// not authenticate, to the upgrading admin's own slot parameters (which
// their password just proved) wherever it is above them, and never below
// the floor: a policy raised by someone who could write the file is not
// signed into the first state root.
func clampLegacyPolicy(tx *keyring.Tx, mine keyring.Params) (keyring.Params, bool, error) {
	h, err := tx.Header()
	if err != nil {
		return keyring.Params{}, false, err
	}
	p := h.Policy
	p.Time, p.MemoryKiB, p.Threads = min(p.Time, mine.Time), min(p.MemoryKiB, mine.MemoryKiB), min(p.Threads, mine.Threads)
	p = newSlotParams(p)
	if unseal.CheckParams(p) != nil || p == h.Policy {
		return h.Policy, false, nil
	}
	h.Policy = p
	return p, true, tx.PutHeader(h)
}

// legacyState reads what format 1 vouched for, before the conversion: the
// registry's generation, and the audit head and anchor (checked under the
// audit key), as the starting point of the first state root.
func legacyState(tx *keyring.Tx, s *session) (*keyring.Root, error) {
	reg, err := tx.LegacyRegistry()
	if err != nil {
		return nil, err
	}
	events, err := audit.Upgrade(tx, s.auditKey())
	if err != nil {
		return nil, err
	}
	return &keyring.Root{Generation: reg.Generation, Events: events}, nil
}

// signUpgrade finishes an upgrade inside its transaction: the keyed record
// is appended after the format-1 log, and the first state root is signed.
func (m *Manager) signUpgrade(ctx context.Context, tx *keyring.Tx, s *session, prev *keyring.Root, kind audit.Kind, d string) error {
	h, err := audit.Append(tx, s.auditKey(), keyring.Events, &prev.Events, audit.Event{Kind: kind, Actor: s.slot.Name, Peer: audit.PeerFrom(ctx), Outcome: audit.OK, Detail: d})
	if err != nil {
		return err
	}
	events := prev.Events
	events.KeyedSeq, events.KeyedMAC = h.Seq, h.MAC
	_, err = s.key.Sign(tx, prev, &events, nil, m.wm)
	return err
}

// reload re-reads the session's slot after a change rewrote it.
func (m *Manager) reload(s *session) error {
	return m.kr.View(func(tx *keyring.Tx) error {
		sl, err := tx.Slot(s.slot.Name)
		if err != nil {
			return err
		}
		s.slot, s.raw = sl, append([]byte(nil), tx.RawSlot(sl.Name)...)
		return nil
	})
}
