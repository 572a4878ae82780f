package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// What an admin used to cryptsetup expects (luksDump, --test-passphrase,
// luksConvertKey, --dump-volume-key), on sealbox's terms: see Slots,
// CheckPassword, SetPolicyFields, Unlock and ExportSecret.

// ErrNothingToUnlock is returned by Unlock when no failures are counted
// against the name.
var ErrNothingToUnlock = errclass.New(errclass.Refused, "no failed attempts are counted against that name; nothing to clear")

// SlotInfo is what Slots shows of one slot: ListAdmins' view, plus what the
// keyring records around it. Nothing in it is secret, and nothing in it is
// verified (the backoff counters and the audit log are readable without a
// password, like the slots themselves).
type SlotInfo struct {
	AdminInfo
	// KDF is the slot's key derivation: "argon2id" for password and code
	// slots, "binding" for unattended slots (Binding says what to), empty
	// for a kind this build keeps but does not open.
	KDF string `json:"kdf"`
	// BelowPolicy says the slot's Argon2id parameters are weaker than what
	// new slots get: its owner's next login rewraps it.
	BelowPolicy bool `json:"below_policy,omitempty"`
	// LastUsed is the time of the newest keyed audit record this slot's
	// owner acted in with success (an unseal, a check, a change), if the
	// log still holds one.
	LastUsed *time.Time `json:"last_used,omitempty"`
	// Failures counts failed attempts at this name not yet cleared by a
	// success or an unlock; RootFailures those made by root, counted apart.
	Failures     uint32 `json:"failures"`
	RootFailures uint32 `json:"root_failures,omitempty"`
	// BackoffSeconds is how long tries at this name are still refused (the
	// longer of the two counters), 0 when none are.
	BackoffSeconds int64 `json:"backoff_seconds"`
	// Invite is an invite's state: "pending" or "expired".
	Invite string `json:"invite,omitempty"`
}

// SlotsView is the keyring's slots as Slots shows them.
type SlotsView struct {
	Policy keyring.Params `json:"kdf_policy"` // what new slots get (raised to the floor)
	Floor  keyring.Params `json:"kdf_floor"`
	// GlobalFailures and GlobalBackoffSeconds are the counter that every
	// caller but root shares.
	GlobalFailures       uint32     `json:"global_failures"`
	GlobalBackoffSeconds int64      `json:"global_backoff_seconds"`
	Slots                []SlotInfo `json:"slots"`
}

func remaining(s backoffState, now time.Time) int64 {
	d := time.Duration(s.until - now.UnixNano())
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Slots returns every slot with its parameters, its state, when it was last
// used and the failures counted against it (cryptsetup's luksDump, without
// anything secret). It needs no password.
func (m *Manager) Slots() (*SlotsView, error) {
	admins, err := m.ListAdmins()
	if err != nil {
		return nil, err
	}
	now := m.opts.clock()
	v := &SlotsView{Floor: unseal.Floor(), Slots: []SlotInfo{}}
	err = m.kr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		v.Policy = newSlotParams(h.Policy)
		g := load(tx, backoffGlobal, now)
		v.GlobalFailures, v.GlobalBackoffSeconds = g.failures, remaining(g, now)
		last := map[string]time.Time{}
		for _, r := range audit.List(tx, audit.Filter{}) {
			if r.Keyed && r.Outcome == audit.OK && r.Actor != "" {
				last[r.Actor] = r.Time
			}
		}
		for _, a := range admins {
			si := SlotInfo{AdminInfo: a, KDF: "argon2id"}
			switch {
			case a.Binding != "":
				si.KDF = "binding"
			case !opens(a.Kind):
				si.KDF = ""
			}
			if a.Kind == keyring.KindAdmin.String() && !a.Stale {
				si.BelowPolicy = belowPolicy(keyring.Params{Time: a.Time, MemoryKiB: a.Memory, Threads: a.Threads}, h.Policy)
			}
			if a.Kind == keyring.KindInvite.String() {
				si.Invite = "pending"
				if a.Expired {
					si.Invite = "expired"
				}
			}
			if t, ok := last[a.Name]; ok {
				t := t.UTC()
				si.LastUsed = &t
			}
			u, r := load(tx, backoffKey("user", a.Name), now), load(tx, backoffKey("root", a.Name), now)
			si.Failures, si.RootFailures = u.failures, r.failures
			si.BackoffSeconds = max(remaining(u, now), remaining(r, now))
			v.Slots = append(v.Slots, si)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// opens reports whether kind (as AdminInfo names it) is one this build
// opens.
func opens(kind string) bool {
	for _, k := range []keyring.SlotKind{keyring.KindAdmin, keyring.KindRecovery, keyring.KindInvite} {
		if k.String() == kind {
			return true
		}
	}
	return false
}

// Unlock clears the failures counted against name (its own counter and
// root's for it), authorized by actor's password, and records it
// (KindAdminUnlock). It returns how many failures it cleared. An admin's
// own count is cleared by any successful login; the name need not be a
// slot's (unknown names are counted too). The counter shared by every
// caller but root is left alone: it decays an hour after its last failure.
func (m *Manager) Unlock(ctx context.Context, actor string, actorPassword []byte, name string) (uint32, error) {
	if err := keyring.ValidName(name); err != nil {
		return 0, fmt.Errorf("admin name: %w", err)
	}
	s, err := m.authenticate(ctx, audit.KindAdminUnlock, actor, actorPassword)
	if err != nil {
		return 0, err
	}
	defer s.close()
	var cleared uint32
	_, err = m.change(ctx, s, op{kind: audit.KindAdminUnlock, target: name}, func(t *txn) error {
		cleared = 0
		for _, src := range []source{"user", "root"} {
			k := backoffKey(src, name)
			cleared += load(t.Tx, k, t.now).failures
			if err := t.PutBackoff(k, nil); err != nil {
				return err
			}
		}
		if cleared == 0 && name != actor {
			return ErrNothingToUnlock
		}
		t.detail = append(t.detail, fmt.Sprintf("cleared %d failed attempts", cleared))
		return nil
	})
	return cleared, err
}

// checkExplicit refuses explicit parameters for a new slot that are out of
// range, or more than the KDF budget could ever derive (the slot would
// never open here).
func (m *Manager) checkExplicit(p keyring.Params) error {
	if err := unseal.CheckNewParams(p); err != nil {
		return err
	}
	if b := m.opts.Budget; b != nil && uint64(p.MemoryKiB) > b.CapKiB() {
		return fmt.Errorf("%w: m=%dMiB is more than the daemon's KDF memory budget (%d MiB, kdf_memory_budget_mib): no login could derive it", unseal.ErrParams, p.MemoryKiB>>10, b.CapKiB()>>10)
	}
	return nil
}

// explicit returns explicit parameters for a new slot with its zero fields
// taken from what new slots get, after checking them against the policy,
// the caps and the budget.
func (m *Manager) explicit(p keyring.Params) (keyring.Params, error) {
	policy, err := m.Policy()
	if err != nil {
		return p, err
	}
	p = FillParams(p, newSlotParams(policy))
	if err := m.checkExplicit(p); err != nil {
		return p, err
	}
	return p, notBelowPolicy(p, policy)
}

// FillParams returns p with its zero fields taken from base.
func FillParams(p, base keyring.Params) keyring.Params {
	if p.Time == 0 {
		p.Time = base.Time
	}
	if p.MemoryKiB == 0 {
		p.MemoryKiB = base.MemoryKiB
	}
	if p.Threads == 0 {
		p.Threads = base.Threads
	}
	return p
}

// notBelowPolicy refuses explicit parameters weaker than what new slots get.
func notBelowPolicy(p keyring.Params, policy keyring.Params) error {
	if belowPolicy(p, policy) {
		return fmt.Errorf("%w: %v is below the keyring's policy %v in some dimension (new slots get at least the policy; leave the flags out, or change the policy with: sealbox-admin policy set)", unseal.ErrParams, p, newSlotParams(policy))
	}
	return nil
}

// explicitOrPolicy checks explicit parameters (explicit); nil means the
// keyring's policy, which sealNew takes at the change. detail is what the
// audit record says of them.
func (m *Manager) explicitOrPolicy(kdf *keyring.Params) (*keyring.Params, string, error) {
	if kdf == nil {
		return nil, "", nil
	}
	p, err := m.explicit(*kdf)
	if err != nil {
		return nil, "", err
	}
	return &p, "kdf " + p.String(), nil
}

// SetPolicyFields is SetPolicy where a zero field keeps the policy's
// current value; it returns the policy set. Raising the policy is
// cryptsetup's luksConvertKey for everyone at once: no one can rewrap
// another admin's slot without their password, so each slot below it is
// rewrapped at its owner's next login (an unseal, a check, any change), and
// Slots shows which still are below.
func (m *Manager) SetPolicyFields(ctx context.Context, actor string, actorPassword []byte, p keyring.Params) (keyring.Params, error) {
	cur, err := m.Policy()
	if err != nil {
		return keyring.Params{}, err
	}
	p = FillParams(p, cur)
	return p, m.SetPolicy(ctx, actor, actorPassword, p)
}

// ExportSecret returns the master secret of the keyring, authenticated by
// name's password, after the state root, the header, the secret record and
// name's own slot verified (cryptsetup's --dump-volume-key, for disaster
// recovery from a backup without a daemon). The caller owns the buffer.
//
// On a writable keyring it is an authenticated attempt like any other
// (backoff, KDF budget) and is recorded (KindSecretExport). A keyring opened
// read-only (a backup on read-only media) cannot take a record or a
// reservation: the secret is then exported without either, and audited
// reports false. That gives nothing away: whoever can read the file can
// guess offline anyway.
func (m *Manager) ExportSecret(ctx context.Context, name string, password []byte) (buf *memlock.Buffer, audited bool, err error) {
	if err := m.kr.Update(func(*keyring.Tx) error { return nil }); errors.Is(err, keyring.ErrReadOnly) {
		buf, err := m.exportReadOnly(ctx, name, password)
		return buf, false, err
	}
	s, err := m.authenticate(ctx, audit.KindSecretExport, name, password)
	if err != nil {
		return nil, false, err
	}
	defer s.close()
	err = m.record(ctx, s, op{kind: audit.KindSecretExport, detail: "master secret exported"}, exportable(name), func(t *txn) error {
		sec, err := t.Secret()
		if err != nil {
			return err
		}
		buf, err = s.key.DecryptSecret(sec, m.opts.Memory)
		return err
	})
	if err != nil {
		buf.Destroy()
		return nil, false, err
	}
	return buf, true, nil
}

// exportable refuses a state the secret must not be exported from: what an
// unseal refuses (servable).
func exportable(actor string) func(rep *unseal.Report) error {
	return refuseUnsafe(actor, "the export was refused (see: sealbox-admin --keyring PATH check --as NAME)")
}

// exportReadOnly is ExportSecret without a write: the same derivation (a
// decoy for unknown names), the same verification, nothing recorded.
func (m *Manager) exportReadOnly(ctx context.Context, name string, password []byte) (*memlock.Buffer, error) {
	var out *memlock.Buffer
	err := m.kr.View(func(tx *keyring.Tx) error {
		if tx.Format() != keyring.FormatVersion {
			return fmt.Errorf("%w: this read-only keyring is in format %d; export from a writable copy (its first login upgrades it)", ErrChanged, tx.Format())
		}
		h, err := tx.Header()
		if err != nil {
			return err
		}
		slot, err := tx.Slot(name)
		if errors.Is(err, keyring.ErrNoSlot) || (err == nil && slot.Kind != keyring.KindAdmin) {
			slot, err = nil, nil
		}
		if err != nil {
			return err
		}
		params := decoyParams(h, mostExpensiveAdmin(tx))
		if slot != nil {
			params = slot.Params
		}
		var key *unseal.Key
		err = m.opts.withKDF(ctx, params, func() error {
			m.opts.progress("deriving key for "+name, params)
			if slot == nil {
				return unseal.Decoy(params, password)
			}
			var err error
			key, err = unseal.OpenSlot(h, slot, password, m.opts.Memory)
			return err
		})
		if err != nil {
			return err
		}
		defer key.Destroy()
		rep, err := key.VerifyState(tx, m.wm)
		if err != nil {
			return err
		}
		if err := exportable(name)(rep); err != nil {
			return err
		}
		sec, err := tx.Secret()
		if err != nil {
			return err
		}
		out, err = key.DecryptSecret(sec, m.opts.Memory)
		return err
	})
	return out, err
}
