package admin

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/sealbox/sealbox/keyring"
)

// Summary is what a keyring says of itself without a password: nothing in
// it is verified (check does that, with an admin's password).
type Summary struct {
	Format        uint32         `json:"format"`
	ID            string         `json:"keyring_id"`
	Created       time.Time      `json:"created"`
	Policy        keyring.Params `json:"kdf_policy"`
	Admins        int            `json:"admins"` // usable admin slots: not stale
	Clients       int            `json:"clients"`
	SecretVersion uint64         `json:"secret_version"`
	Generation    uint64         `json:"generation"`
	Recovery      bool           `json:"recovery_code"`
	Slots         []AdminInfo    `json:"slots"`
}

// Summary reads the keyring's header, secret record, state generation,
// clients and slots.
func (m *Manager) Summary() (*Summary, error) {
	var s Summary
	err := m.kr.View(func(tx *keyring.Tx) error {
		s.Format = tx.Format()
		h, err := tx.Header()
		if err != nil {
			return err
		}
		sec, err := tx.Secret()
		if err != nil {
			return err
		}
		if s.Format == 1 {
			reg, err := tx.LegacyRegistry()
			if err != nil {
				return err
			}
			s.Generation = reg.Generation
		} else {
			root, err := tx.Root()
			if err != nil {
				return err
			}
			s.Generation = root.Generation
		}
		clients, err := tx.Clients()
		if err != nil {
			return err
		}
		slots, err := tx.Slots()
		if err != nil {
			return err
		}
		for _, sl := range slots {
			switch {
			case sl.Kind == keyring.KindAdmin && sl.Flags&keyring.SlotStale == 0:
				s.Admins++
			case sl.Kind == keyring.KindRecovery:
				s.Recovery = true
			}
		}
		s.ID = hex.EncodeToString(h.ID[:])
		s.Created = time.Unix(h.Created, 0).UTC()
		s.Policy = h.Policy
		s.Clients = len(clients)
		s.SecretVersion = sec.Version
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.Slots, err = m.ListAdmins(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Policy returns the keyring's KDF policy for new slots.
func (m *Manager) Policy() (keyring.Params, error) {
	var p keyring.Params
	err := m.kr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err == nil {
			p = h.Policy
		}
		return err
	})
	return p, err
}

// RecordedClients returns the client records as the file holds them,
// unverified: sealboxd refuses peers by them until an unseal verifies them
// (nothing is served while sealed).
func (m *Manager) RecordedClients() ([]*keyring.Client, error) {
	var cs []*keyring.Client
	err := m.kr.View(func(tx *keyring.Tx) error {
		var err error
		cs, err = tx.Clients()
		return err
	})
	return cs, err
}

// Preflight checks, without a password, that the file's pages (bbolt's own
// check), its format and every record decode. Nothing is verified against
// the state root: check --as NAME does that.
func (m *Manager) Preflight() error {
	if err := m.kr.Check(); err != nil {
		return fmt.Errorf("%w: bbolt check: %v", keyring.ErrCorrupt, err)
	}
	return m.kr.View(func(tx *keyring.Tx) error {
		if _, err := tx.Header(); err != nil {
			return err
		}
		if _, err := tx.Secret(); err != nil {
			return err
		}
		if tx.Format() == 1 {
			if _, err := tx.LegacyRegistry(); err != nil {
				return err
			}
		} else if _, err := tx.Root(); err != nil {
			return err
		}
		if _, err := tx.Slots(); err != nil {
			return err
		}
		_, err := tx.Clients()
		return err
	})
}
