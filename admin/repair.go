package admin

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// ErrNotConfirmed is returned by Repair when the caller declined the plan.
var ErrNotConfirmed = errclass.New(errclass.Refused, "repair not confirmed; nothing was changed")

// RepairAction is one thing Repair does.
type RepairAction struct {
	What   string `json:"what"` // slot, client, header, secret, audit
	Name   string `json:"name,omitempty"`
	Action string `json:"action"`
}

func (a RepairAction) String() string {
	if a.Name != "" {
		return fmt.Sprintf("%s %q: %s", a.What, a.Name, a.Action)
	}
	return fmt.Sprintf("%s: %s", a.What, a.Action)
}

// RepairPlan is what Repair found and would do.
type RepairPlan struct {
	Format   uint32           `json:"format"`
	Findings []unseal.Finding `json:"findings"`
	Actions  []RepairAction   `json:"actions"`
	// Invite lists the admins whose slots are dropped: each gets a new
	// invite code.
	Invite   []string `json:"invite,omitempty"`
	drop     map[string]bool
	policy   *keyring.Params
	reanchor bool
}

// RepairResult is what Repair did.
type RepairResult struct {
	Plan *RepairPlan
	// Codes are the new invite codes, by admin name, shown once (the
	// caller wipes them).
	Codes map[string][]byte
}

// Repair is the way out of a keyring that does not verify, authorized by
// actor's password (whose own slot must open the DataKey directly and
// verify). It never re-signs a record that failed: a failing slot or client
// is dropped (an admin whose slot is dropped gets a new invite code), and
// when the state root or the manifest itself fails, no record but the
// actor's slot can be vouched for, so all others are dropped. A header whose
// policy was changed gets the actor's slot parameters as its policy back; a
// secret record that was changed but still decrypts is kept, with a warning
// to rotate; an audit log that was truncated or rewritten is accepted as it
// stands, and the keyed repair record says what was lost. confirm sees the
// plan first; nothing happens unless it returns true. A format-1 keyring is
// upgraded by the same transaction.
func (m *Manager) Repair(ctx context.Context, actor string, actorPassword []byte, confirm func(*RepairPlan) bool) (*RepairResult, error) {
	s, err := m.authenticateKind(ctx, audit.KindRepair, actor, actorPassword, keyring.KindAdmin)
	if err != nil {
		return nil, err
	}
	defer s.close()
	var plan *RepairPlan
	if err := m.kr.View(func(tx *keyring.Tx) (err error) { plan, err = m.planRepair(tx, s); return err }); err != nil {
		return nil, err
	}
	if !confirm(plan) {
		return &RepairResult{Plan: plan}, ErrNotConfirmed
	}
	res := &RepairResult{Plan: plan, Codes: map[string][]byte{}}
	wipeCodes := func() {
		for _, c := range res.Codes {
			memlock.Wipe(c)
		}
	}
	invites := map[string]*keyring.Slot{}
	for _, name := range plan.Invite {
		slot, code, err := m.newCodeSlot(ctx, s.key, name, keyring.KindInvite, m.opts.clock().Add(DefaultInviteTTL).Unix())
		if err != nil {
			wipeCodes()
			return nil, err
		}
		invites[name], res.Codes[name] = slot, code
	}
	var commit *Commit
	err = m.kr.Update(func(tx *keyring.Tx) error {
		again, err := m.planRepair(tx, s)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(again.Actions, plan.Actions) {
			return ErrChanged
		}
		commit, err = m.applyRepair(ctx, tx, s, plan, invites)
		return err
	})
	if err != nil {
		wipeCodes()
		return nil, err
	}
	m.commit(commit)
	return res, nil
}

func (m *Manager) planRepair(tx *keyring.Tx, s *session) (*RepairPlan, error) {
	plan := &RepairPlan{Format: tx.Format(), drop: map[string]bool{}}
	var rep *unseal.Report
	var err error
	if plan.Format == 1 {
		rep, err = s.key.VerifyLegacy(tx)
		if err == nil {
			if _, aerr := audit.LegacyState(tx, s.auditKey()); aerr != nil {
				rep.Findings = append(rep.Findings, unseal.Finding{What: "audit", Name: "events", Problem: aerr.Error()})
			}
		}
	} else {
		rep, err = s.key.VerifyState(tx, m.wm)
	}
	if err != nil {
		return nil, err
	}
	plan.Findings = rep.Findings
	if rep.OK() {
		if plan.Format == 1 {
			return nil, fmt.Errorf("%w (a format-1 keyring that verifies is upgraded at the next login)", ErrNothingToRepair)
		}
		return nil, ErrNothingToRepair
	}
	if rep.Bad(keyring.RecordSlot, s.slot.Name) && !rep.Untrusted {
		return nil, fmt.Errorf("%w: the acting admin's own slot does not verify; repair as another admin, or restore a backup", unseal.ErrIntegrity)
	}
	for _, f := range rep.Findings {
		switch f.What {
		case "audit-keys":
			return nil, fmt.Errorf("%w: the audit key history was changed, which repair cannot undo; restore a backup", unseal.ErrIntegrity)
		case "header":
			p := s.slot.Params
			plan.policy = &p
			plan.Actions = append(plan.Actions, RepairAction{What: "header", Action: fmt.Sprintf("keep the ID and commitment (the DataKey opened), reset the KDF policy to %v (the parameters of %s's slot)", p, s.slot.Name)})
		case "secret":
			sec, err := tx.Secret()
			if err != nil {
				return nil, err
			}
			plan.Actions = append(plan.Actions, RepairAction{What: "secret", Action: fmt.Sprintf("keep the secret record as it is (version %d decrypts under the DataKey); if the secret was rotated after version %d, rotate it again", sec.Version, sec.Version)})
		case "audit":
			if !plan.reanchor {
				plan.reanchor = true
				plan.Actions = append(plan.Actions, RepairAction{What: "audit", Action: "accept the audit logs as they stand; the repair record says what no longer verifies"})
			}
		}
	}
	if rep.Untrusted {
		// Nothing in the file is vouched for: not the header's policy and
		// not the secret record, whatever the findings say about them.
		plan.reanchor = true
		if plan.policy == nil {
			p := s.slot.Params
			plan.policy = &p
			plan.Actions = append(plan.Actions, RepairAction{What: "header", Action: fmt.Sprintf("keep the ID and commitment (the DataKey opened), reset the KDF policy to %v (the parameters of %s's slot): the stored one cannot be verified", p, s.slot.Name)})
		}
		if !rep.Has("secret") {
			sec, err := tx.Secret()
			if err != nil {
				return nil, err
			}
			plan.Actions = append(plan.Actions, RepairAction{What: "secret", Action: fmt.Sprintf("keep the secret record as it is (version %d decrypts under the DataKey, but cannot be checked against a signed state); if the secret was rotated after version %d, rotate it again", sec.Version, sec.Version)})
		}
	}
	slots, err := tx.Slots()
	if err != nil {
		return nil, err
	}
	for _, sl := range slots {
		if sl.Name == s.slot.Name || !rep.Bad(keyring.RecordSlot, sl.Name) {
			continue
		}
		plan.drop[string(unseal.ManifestKey(keyring.RecordSlot, sl.Name))] = true
		action := "drop it"
		if sl.Kind == keyring.KindAdmin {
			action = "drop it and invite its admin again (a new code)"
			plan.Invite = append(plan.Invite, sl.Name)
		} else if sl.Kind == keyring.KindRecovery {
			action = "drop it (regenerate the recovery code afterwards)"
		}
		plan.Actions = append(plan.Actions, RepairAction{What: "slot", Name: sl.Name, Action: action})
	}
	clients, err := tx.Clients()
	if err != nil {
		return nil, err
	}
	for _, c := range clients {
		if rep.Bad(keyring.RecordClient, c.Name) {
			plan.drop[string(unseal.ManifestKey(keyring.RecordClient, c.Name))] = true
			plan.Actions = append(plan.Actions, RepairAction{What: "client", Name: c.Name, Action: "drop it (register it again if it is yours: " + describe(c) + ")"})
		}
	}
	for _, f := range rep.Findings {
		if (f.What == "slot" || f.What == "client") && strings.HasPrefix(f.Problem, "deleted") {
			plan.Actions = append(plan.Actions, RepairAction{What: f.What, Name: f.Name, Action: "already gone from the file; forget it (re-add or invite it again if it should exist)"})
		}
	}
	return plan, nil
}

func (m *Manager) applyRepair(ctx context.Context, tx *keyring.Tx, s *session, plan *RepairPlan, invites map[string]*keyring.Slot) (*Commit, error) {
	drop := func(kind byte, name string) bool { return plan.drop[string(unseal.ManifestKey(kind, name))] }
	var prev *keyring.Root
	if plan.Format == 1 {
		reg, err := tx.LegacyRegistry()
		gen := uint64(0)
		if err == nil {
			gen = reg.Generation
		}
		events, err := audit.Upgrade(tx, s.auditKey())
		if err != nil {
			if events, err = audit.StateOf(tx, keyring.Events); err != nil {
				return nil, err
			}
		}
		prev = &keyring.Root{Generation: gen, Events: events}
		if _, err := convert(tx, s.key, drop); err != nil {
			return nil, err
		}
	} else {
		prev = &keyring.Root{Generation: m.wm.Seen()}
		if root, err := unseal.ReadRoot(tx, s.key.RootKey(), s.header.ID); err == nil {
			prev = root // verified: its generation and audit state go on
			prev.Generation = max(prev.Generation, m.wm.Seen())
		} else {
			plan.reanchor = true // the stored audit state is not vouched for
		}
		if plan.reanchor {
			var err error
			if prev.Events, err = audit.StateOf(tx, keyring.Events); err != nil {
				return nil, err
			}
			if prev.Reads, err = audit.StateOf(tx, keyring.Reads); err != nil {
				return nil, err
			}
		}
		var errs []error
		tx.RawRecords(func(kind byte, name, _ []byte) {
			if drop(kind, string(name)) {
				if kind == keyring.RecordSlot {
					errs = append(errs, tx.DeleteSlot(string(name)))
				} else {
					errs = append(errs, tx.DeleteClient(string(name)))
				}
			}
		})
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	if plan.policy != nil {
		h, err := tx.Header()
		if err != nil {
			return nil, err
		}
		h.Policy = *plan.policy
		if err := tx.PutHeader(h); err != nil {
			return nil, err
		}
	}
	for _, sl := range invites {
		if err := tx.PutSlot(sl); err != nil {
			return nil, err
		}
	}
	var what []string
	for _, f := range plan.Findings {
		what = append(what, f.String())
	}
	var did []string
	for _, a := range plan.Actions {
		did = append(did, a.String())
	}
	ev := audit.Event{Kind: audit.KindRepair, Actor: s.slot.Name, Peer: audit.PeerFrom(ctx), Outcome: audit.OK,
		Detail: truncate("found: "+strings.Join(what, "; ")+". did: "+strings.Join(did, "; "), 3000)}
	h, err := audit.Append(tx, s.auditKey(), keyring.Events, &prev.Events, ev)
	if err != nil {
		return nil, err
	}
	events := prev.Events
	events.KeyedSeq, events.KeyedMAC = h.Seq, h.MAC
	root, err := s.key.Sign(tx, prev, &events, nil, m.wm)
	if err != nil {
		return nil, err
	}
	clients, err := tx.Clients()
	if err != nil {
		return nil, err
	}
	return &Commit{Op: audit.KindRepair, Clients: clients, Generation: root.Generation, Root: root.MAC}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
