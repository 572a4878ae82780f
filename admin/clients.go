package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// AddClient registers a new Active client identified by uid and, when gid is
// not nil, by gid too. Authorized by actor's password.
func (m *Manager) AddClient(ctx context.Context, actor string, actorPassword []byte, name string, uid uint32, gid *uint32) error {
	if err := keyring.ValidName(name); err != nil {
		return fmt.Errorf("client name: %w", err)
	}
	s, err := m.authenticate(ctx, "client.add", actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	now := m.opts.now()
	c := &keyring.Client{Name: name, UID: uid, Status: keyring.ClientActive, Created: now, Updated: now}
	if gid != nil {
		c.GID, c.HasGID = *gid, true
	}
	s.key.SignClient(c)
	err = m.change(ctx, s, "client.add", name, func(tx *keyring.Tx) error {
		if old, err := tx.Client(name); err == nil {
			hint := ""
			if old.Status == keyring.ClientRetired {
				hint = " (retired names are kept for the audit trail; choose another name)"
			}
			return fmt.Errorf("%w: %q%s", keyring.ErrClientExists, name, hint)
		}
		return tx.PutClient(c)
	})
	if err == nil && m.opts.OnClient != nil {
		m.opts.OnClient(c)
	}
	return err
}

// SetClientStatus moves a client between Active and Disabled, or retires it
// (Retired is final). Authorized by actor's password.
func (m *Manager) SetClientStatus(ctx context.Context, actor string, actorPassword []byte, name string, status keyring.ClientStatus) error {
	op, ok := statusOps[status]
	if !ok {
		return fmt.Errorf("%w: client status %d", ErrInvalid, status)
	}
	s, err := m.authenticate(ctx, op, actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	var changed *keyring.Client
	err = m.change(ctx, s, op, name, func(tx *keyring.Tx) error {
		c, err := tx.Client(name)
		if err != nil {
			return err
		}
		// Re-signing a record that was altered would launder it.
		if !s.key.VerifyClient(c) {
			return fmt.Errorf("%w: client record %q; remove it with check --repair", unseal.ErrRegistry, name)
		}
		if c.Status == keyring.ClientRetired {
			return fmt.Errorf("%w: client %q is retired", ErrClientState, name)
		}
		if c.Status == status {
			return fmt.Errorf("%w: client %q is already %s", ErrClientState, name, status)
		}
		c.Status = status
		c.Updated = m.opts.now()
		s.key.SignClient(c)
		changed = c
		return tx.PutClient(c)
	})
	if err == nil && m.opts.OnClient != nil {
		m.opts.OnClient(changed)
	}
	return err
}

var statusOps = map[keyring.ClientStatus]string{
	keyring.ClientActive:   "client.enable",
	keyring.ClientDisabled: "client.disable",
	keyring.ClientRetired:  "client.remove",
}

// ClientInfo is what ListClients shows of a client.
type ClientInfo struct {
	Name    string    `json:"name"`
	UID     uint32    `json:"uid"`
	GID     *uint32   `json:"gid,omitempty"`
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Info converts a record for display.
func Info(c *keyring.Client) ClientInfo {
	ci := ClientInfo{
		Name: c.Name, UID: c.UID, Status: c.Status.String(),
		Created: time.Unix(c.Created, 0).UTC(), Updated: time.Unix(c.Updated, 0).UTC(),
	}
	if c.HasGID {
		g := c.GID
		ci.GID = &g
	}
	return ci
}

// ListClients returns every client record, by name. Like ListAdmins it needs
// no password and does not verify the records.
func (m *Manager) ListClients() ([]ClientInfo, error) {
	var out []ClientInfo
	err := m.kr.View(func(tx *keyring.Tx) error {
		clients, err := tx.Clients()
		for _, c := range clients {
			out = append(out, Info(c))
		}
		return err
	})
	return out, err
}

// AuditRecords returns the audit records that match f. It needs no
// password; VerifyAudit checks them.
func (m *Manager) AuditRecords(f audit.Filter) ([]audit.Record, error) {
	var out []audit.Record
	err := m.kr.View(func(tx *keyring.Tx) error { out = audit.List(tx, f); return nil })
	return out, err
}

// VerifyAudit checks the audit chain with the audit key that actor's
// password unlocks.
func (m *Manager) VerifyAudit(ctx context.Context, actor string, actorPassword []byte) (*audit.Report, error) {
	s, err := m.authenticate(ctx, "audit.verify", actor, actorPassword)
	if err != nil {
		return nil, err
	}
	defer s.close()
	var rep *audit.Report
	var verr error
	if err := m.kr.View(func(tx *keyring.Tx) error { rep, verr = audit.Verify(tx, s.auditKey.Bytes()); return nil }); err != nil {
		return nil, err
	}
	return rep, verr
}
