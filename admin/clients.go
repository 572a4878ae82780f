package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// Match is who a client is: the kernel-attested peer it matches. A client
// matches a uid (and, if set, a gid too), a systemd unit, or a unit run as a
// given uid. When several clients match one peer, the most specific wins
// (unit over uid, then gid), and a disabled winner refuses the peer: a
// less specific registration never steps in for it (see Specificity).
type Match struct {
	UID  *uint32
	GID  *uint32
	Unit string
}

// apply puts m into a client record.
func (m Match) apply(c *keyring.Client) {
	if m.UID != nil {
		c.UID, c.HasUID = *m.UID, true
	}
	if m.GID != nil {
		c.GID, c.HasGID = *m.GID, true
	}
	c.Unit = m.Unit
}

// Specificity orders the clients that match one peer: the one with the
// highest value is the peer's client.
func Specificity(c *keyring.Client) int {
	n := 0
	if c.Unit != "" {
		n += 4
	}
	if c.HasUID {
		n += 2
	}
	if c.HasGID {
		n++
	}
	return n
}

// sameMatch reports whether two clients match exactly the same peers.
func sameMatch(a, b *keyring.Client) bool {
	return a.HasUID == b.HasUID && a.UID == b.UID && a.HasGID == b.HasGID && a.GID == b.GID && a.Unit == b.Unit
}

// AddClient registers a new Active client, authorized by actor's password.
// A registration that matches exactly the same peers as another client that
// is not retired is refused with ErrAmbiguous, naming it.
func (m *Manager) AddClient(ctx context.Context, actor string, actorPassword []byte, name string, match Match) error {
	if err := keyring.ValidName(name); err != nil {
		return fmt.Errorf("client name: %w", err)
	}
	now := m.opts.now()
	c := &keyring.Client{Name: name, Status: keyring.ClientActive, Created: now, Updated: now}
	match.apply(c)
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: a client needs --uid, --unit or both (and --gid only with --uid)", ErrInvalid)
	}
	s, err := m.authenticate(ctx, audit.KindClientAdd, actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	_, err = m.change(ctx, s, op{kind: audit.KindClientAdd, target: name, detail: describe(c)}, func(t *txn) error {
		if old, err := t.Client(name); err == nil {
			hint := ""
			if old.Status == keyring.ClientRetired {
				hint = " (retired names are kept for the audit trail; choose another name)"
			}
			return fmt.Errorf("%w: %q%s", keyring.ErrClientExists, name, hint)
		}
		clients, err := t.Clients()
		if err != nil {
			return err
		}
		for _, o := range clients {
			if o.Status != keyring.ClientRetired && sameMatch(o, c) {
				return fmt.Errorf("%w: client %q (%s) already matches %s; disable or remove it first, or narrow this one (--gid, --unit)", ErrAmbiguous, o.Name, o.Status, describe(c))
			}
		}
		return t.PutClient(c)
	})
	return err
}

// describe says in words which peers a client matches.
func describe(c *keyring.Client) string {
	s := ""
	if c.Unit != "" {
		s = "unit " + c.Unit
	}
	if c.HasUID {
		if s != "" {
			s += " "
		}
		s += fmt.Sprintf("uid %d", c.UID)
	}
	if c.HasGID {
		s += fmt.Sprintf(" gid %d", c.GID)
	}
	return s
}

// SetClientStatus moves a client between Active and Disabled, or retires it
// (Retired is final). Authorized by actor's password.
func (m *Manager) SetClientStatus(ctx context.Context, actor string, actorPassword []byte, name string, status keyring.ClientStatus) error {
	kind, ok := statusOps[status]
	if !ok {
		return fmt.Errorf("%w: client status %d", ErrInvalid, status)
	}
	s, err := m.authenticate(ctx, kind, actor, actorPassword)
	if err != nil {
		return err
	}
	defer s.close()
	_, err = m.change(ctx, s, op{kind: kind, target: name}, func(t *txn) error {
		c, err := t.Client(name)
		if err != nil {
			return err
		}
		if c.Status == keyring.ClientRetired {
			return fmt.Errorf("%w: client %q is retired", ErrClientState, name)
		}
		if c.Status == status {
			return fmt.Errorf("%w: client %q is already %s", ErrClientState, name, status)
		}
		c.Status = status
		c.Updated = m.opts.now()
		return t.PutClient(c)
	})
	return err
}

var statusOps = map[keyring.ClientStatus]audit.Kind{
	keyring.ClientActive:   audit.KindClientEnable,
	keyring.ClientDisabled: audit.KindClientDisable,
	keyring.ClientRetired:  audit.KindClientRemove,
}

// ClientInfo is what ListClients shows of a client.
type ClientInfo struct {
	Name    string    `json:"name"`
	UID     *uint32   `json:"uid,omitempty"`
	GID     *uint32   `json:"gid,omitempty"`
	Unit    string    `json:"unit,omitempty"`
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Info converts a record for display.
func Info(c *keyring.Client) ClientInfo {
	ci := ClientInfo{
		Name: c.Name, Unit: c.Unit, Status: c.Status.String(),
		Created: time.Unix(c.Created, 0).UTC(), Updated: time.Unix(c.Updated, 0).UTC(),
	}
	if c.HasUID {
		u := c.UID
		ci.UID = &u
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

// AuditTail is AuditRecords, with the sequence number of the stream's last
// record read in the same transaction: an audit follower goes on after it.
func (m *Manager) AuditTail(f audit.Filter) ([]audit.Record, uint64, error) {
	var out []audit.Record
	var last uint64
	err := m.kr.View(func(tx *keyring.Tx) error {
		out = audit.List(tx, f)
		s := keyring.Events
		if f.Reads {
			s = keyring.Reads
		}
		_, last = tx.AuditBounds(s)
		return nil
	})
	return out, max(last, f.After), err
}

// VerifyAudit checks the audit chains with the keys that actor's password
// unlocks, against the verified state root.
func (m *Manager) VerifyAudit(ctx context.Context, actor string, actorPassword []byte) (*audit.Report, error) {
	s, err := m.authenticate(ctx, audit.KindAuditVerify, actor, actorPassword)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return VerifyAuditWith(m.kr, s.logKeys.Bytes(), m.wm)
}

// VerifyAuditWith checks the audit chains with log keys (audit key || root
// key) a caller already holds, such as sealboxd's.
func VerifyAuditWith(kr *keyring.Keyring, logKeys []byte, w *unseal.Watermark) (*audit.Report, error) {
	var rep *audit.Report
	var verr error
	err := kr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		root, err := readRootChecked(tx, logKeys, h, w)
		if err != nil {
			return err
		}
		// Inside memlock.Do: the MAC states keyed with every epoch's audit
		// key are erased with the call's memory.
		memlock.Do(func() { rep, verr = audit.Verify(tx, auditKey(logKeys), root) })
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rep, verr
}
