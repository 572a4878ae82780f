package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// Unsealed is the result of a successful unseal.
type Unsealed struct {
	Secret     *memlock.Buffer   // the master secret; Destroy it on seal
	LogKeys    *memlock.Buffer   // audit key || root key; the caller owns it
	Version    uint64            // the master secret's version
	Clients    []*keyring.Client // every client record that verified
	Report     *unseal.Report    // records that did not verify (not honoured)
	Header     *keyring.Header   // the header, verified
	Generation uint64            // the state root's generation after the unseal
	// Resealed names the unattended slots rebound after the unseal
	// (Options.Reseal); ResealErrors says why others could not be.
	Resealed     []string
	ResealErrors []error
}

// Destroy wipes what an Unsealed holds.
func (u *Unsealed) Destroy() {
	if u != nil {
		u.Secret.Destroy()
		u.LogKeys.Destroy()
	}
}

// Unseal opens name's slot with password, verifies the whole file against
// its state root, decrypts the master secret into locked memory and records
// the unseal. Client records that fail verification are left out of Clients
// and named in Report. The unseal is refused when what it would serve cannot
// be trusted: the root, the header, the secret record, the audit log or the
// acting slot itself does not verify. If the audit record cannot be written,
// the unseal fails.
func (m *Manager) Unseal(ctx context.Context, name string, password []byte) (*Unsealed, error) {
	s, err := m.authenticate(ctx, audit.KindUnseal, name, password)
	if err != nil {
		return nil, err
	}
	return m.unsealWith(ctx, s, "")
}

// UnsealRecovery is Unseal with the recovery code instead of an admin's
// password; the audit record says so.
func (m *Manager) UnsealRecovery(ctx context.Context, typed []byte) (*Unsealed, error) {
	code, ok := unseal.NormalizeCode(typed)
	if !ok {
		return nil, fmt.Errorf("%w: that is not the shape of a code (32 letters and digits in groups of four)", ErrRecovery)
	}
	defer memlock.Wipe(code)
	s, err := m.authenticateKind(ctx, audit.KindUnseal, RecoveryName, code, keyring.KindRecovery)
	if err != nil {
		return nil, err
	}
	if err := m.bringUpToDate(ctx, s, code); err != nil {
		s.close()
		return nil, err
	}
	return m.unsealWith(ctx, s, "recovery code")
}

// servable refuses a state an unseal must not serve from.
func servable(actor string) func(rep *unseal.Report) error {
	return refuseUnsafe(actor, "the unseal was refused (run: sealbox-admin --keyring PATH check --as NAME)")
}

// refuseUnsafe refuses what fails beyond a client record, or another admin's
// slot in a state that is otherwise trusted: the root, the header, the
// secret record, the audit log or the acting slot. why ends the error.
func refuseUnsafe(actor, why string) func(rep *unseal.Report) error {
	return func(rep *unseal.Report) error {
		for _, f := range rep.Findings {
			switch {
			case f.What == "client":
			case f.What == "slot" && f.Name != actor && !rep.Untrusted:
			default:
				return fmt.Errorf("%w; %s", rep.Err(), why)
			}
		}
		return nil
	}
}

func (m *Manager) unsealWith(ctx context.Context, s *session, how string) (*Unsealed, error) {
	return m.unsealChecked(ctx, s, how, nil)
}

// unsealChecked is unsealWith with one more check (check, if not nil) of
// the verified state before the secret is decrypted.
func (m *Manager) unsealChecked(ctx context.Context, s *session, how string, check func(t *txn) error) (*Unsealed, error) {
	defer s.key.Destroy()
	u := &Unsealed{Header: s.header, LogKeys: s.logKeys}
	err := m.record(ctx, s, op{kind: audit.KindUnseal, detail: how}, servable(s.slot.Name), func(t *txn) error {
		if check != nil {
			if err := check(t); err != nil {
				return err
			}
		}
		sec, err := t.Secret()
		if err != nil {
			return err
		}
		clients, err := t.Clients()
		if err != nil {
			return err
		}
		for _, c := range clients {
			if !t.rep.Bad(keyring.RecordClient, c.Name) {
				u.Clients = append(u.Clients, c)
			}
		}
		u.Report, u.Version, u.Generation = t.rep, sec.Version, t.root.Generation+1
		if u.Secret, err = s.key.DecryptSecret(sec, m.opts.Memory); err != nil {
			return err
		}
		if !t.rep.OK() {
			t.detail = append(t.detail, fmt.Sprintf("%d records not honoured", len(t.rep.Findings)))
		}
		return nil
	})
	if err != nil {
		u.Destroy()
		return nil, err
	}
	u.Resealed, u.ResealErrors = m.resealDrifted(ctx, s, u.Report)
	return u, nil
}

// resealDrifted asks Options.Reseal about every unattended slot but the
// acting one, and rebinds those it says must be. Failures are returned, not
// fatal: the unseal stands. When the unseal found records that do not
// verify, no change can be signed, so no slot is looked at: a file writer's
// added slots cost no TPM work and no refused reseals.
func (m *Manager) resealDrifted(ctx context.Context, s *session, rep *unseal.Report) (done []string, errs []error) {
	if m.opts.Reseal == nil {
		return nil, nil
	}
	if err := rep.Err(); err != nil {
		return nil, []error{fmt.Errorf("unattended slots not checked for a reseal until the keyring verifies: %w", err)}
	}
	type cand struct {
		slot *keyring.Slot
		raw  []byte
	}
	var cands []cand
	_ = m.kr.View(func(tx *keyring.Tx) error {
		slots, err := tx.Slots()
		if err != nil {
			return err
		}
		for _, sl := range slots {
			if sl.Unattended() && sl.Name != s.slot.Name {
				cands = append(cands, cand{sl, append([]byte(nil), tx.RawSlot(sl.Name)...)})
			}
		}
		return nil
	})
	for _, c := range cands {
		build, why, err := m.opts.Reseal(ctx, c.slot)
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %s: %w", c.slot.Name, err))
			continue
		}
		if build == nil {
			continue
		}
		if err := m.reseal(ctx, s, c.slot.Name, c.raw, build, why); err != nil {
			errs = append(errs, fmt.Errorf("slot %s: resealing: %w", c.slot.Name, err))
			continue
		}
		done = append(done, c.slot.Name)
	}
	return done, errs
}

// CheckResult is what Check found.
type CheckResult struct {
	Report        *unseal.Report `json:"state"`
	Generation    uint64         `json:"generation"`
	SecretVersion uint64         `json:"secret_version"`
	SecretBytes   int            `json:"secret_bytes"`
	Audit         *audit.Report  `json:"audit,omitempty"`
	AuditProblem  string         `json:"audit_problem,omitempty"`
	// Identity is the keyring's identity pin (unattended_identity), empty
	// when it has none (made before identities; the first bind makes one);
	// IdentityProblem says why it could not be read.
	Identity        string `json:"identity,omitempty"`
	IdentityProblem string `json:"identity_problem,omitempty"`
	// HandedOver are unattended slots that still hold the DataKey in a
	// pending key, as a rekey by an earlier sealbox left them: its
	// hand-over key is known to whoever held the DataKey before that
	// rekey. A rekey now binds them again.
	HandedOver []string `json:"unattended_handed_over,omitempty"`
}

// OK reports whether everything verified.
func (c *CheckResult) OK() bool {
	return c.Report.OK() && c.AuditProblem == "" && c.IdentityProblem == "" && len(c.HandedOver) == 0
}

// Check tests actor's password and verifies the whole file: the state root
// and every record under it, that the master secret decrypts, and the audit
// chains. It is recorded as a password check (KindCheck), not an unseal.
// Findings are in the result, not the error.
func (m *Manager) Check(ctx context.Context, actor string, password []byte) (*CheckResult, error) {
	s, err := m.authenticate(ctx, audit.KindCheck, actor, password)
	if err != nil {
		return nil, err
	}
	defer s.close()
	res := &CheckResult{}
	inspect := func(t *txn) error {
		res.Report = t.rep
		if t.root != nil {
			res.Generation = t.root.Generation
			var rep *audit.Report
			var err error
			memlock.Do(func() { rep, err = audit.Verify(t.Tx, s.auditKey(), t.root) })
			res.Audit = rep
			if err != nil {
				res.AuditProblem = err.Error()
			}
		}
		sec, err := t.Secret()
		if err != nil {
			return err
		}
		res.SecretVersion = sec.Version
		buf, err := s.key.DecryptSecret(sec, m.opts.Memory)
		if err != nil {
			return err
		}
		res.SecretBytes = len(buf.Bytes())
		buf.Destroy()
		if rec := t.RawIdentity(); rec != nil {
			if res.Identity, err = s.key.IdentityPin(rec); err != nil {
				res.IdentityProblem = err.Error()
			}
		}
		slots, err := t.Slots()
		if err != nil {
			return err
		}
		for _, sl := range slots {
			if sl.Unattended() && sl.HasPending() {
				res.HandedOver = append(res.HandedOver, sl.Name)
			}
		}
		return nil
	}
	// The inspection (the whole audit chain, which may hold a million
	// records) runs in a read transaction, so that the audit writer and
	// every change go on meanwhile; the check's record then takes a short
	// write transaction of its own.
	if err := m.kr.View(func(tx *keyring.Tx) error {
		t, err := m.begin(tx, s)
		if err != nil {
			return err
		}
		return inspect(t)
	}); err != nil {
		return nil, err
	}
	if res.Report.Untrusted {
		// Nothing can be signed over a root that does not verify: the
		// check is recorded unkeyed.
		m.logFailure(ctx, audit.KindCheck, actor, audit.Failed, res.Report.Err())
		return res, nil
	}
	err = m.record(ctx, s, op{kind: audit.KindCheck}, func(rep *unseal.Report) error {
		if rep.Untrusted {
			return errUnsignable
		}
		return nil
	}, func(t *txn) error {
		if !res.OK() {
			t.detail = append(t.detail, "problems found")
		}
		return nil
	})
	if errors.Is(err, errUnsignable) {
		// The file changed between the inspection and the record.
		m.logFailure(ctx, audit.KindCheck, actor, audit.Failed, err)
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

var errUnsignable = errors.New("the state root does not verify")

// CheckPassword tests actor's password without changing anything or
// unsealing: the same derivation and guessing defence as a login, recorded
// as a password check (KindCheck). Tools use it to check a password before
// asking for a new one, and admins to test theirs without downtime. It
// refuses only when the state root itself does not verify.
//
// before names the operation the check comes before (admin.add, ...; or
// KindCheck for a check on its own): a failure is recorded as an attempt at
// it.
func (m *Manager) CheckPassword(ctx context.Context, before audit.Kind, actor string, password []byte) error {
	s, err := m.authenticate(ctx, before, actor, password)
	if err != nil {
		return err
	}
	defer s.close()
	d := "password check"
	if before != audit.KindCheck {
		d = "password check before " + string(before)
	}
	return m.record(ctx, s, op{kind: audit.KindCheck, detail: d}, func(rep *unseal.Report) error {
		if rep.Untrusted {
			return rep.Err()
		}
		return nil
	}, func(*txn) error { return nil })
}
