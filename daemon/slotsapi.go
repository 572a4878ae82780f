package daemon

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/sealbox/sealbox/admin/api"
)

// Handlers for the slot view, the online keyring check, lockout clearing
// and the KDF policy (routes in adminRouter).

func (d *Daemon) slots(r *http.Request, _ PeerCred) (any, error) {
	if err := d.audit.Flush(); err != nil { // last use is read from the log
		return nil, err
	}
	return d.mgr.Slots()
}

// checkKeyring tests an admin's password and verifies the keyring under it
// (check --as NAME through the daemon, cryptsetup's --test-passphrase plus
// the state root): the same derivation, budget and backoff as an unseal,
// and the sealed or unsealed state is left as it is.
func (d *Daemon) checkKeyring(r *http.Request, cred PeerCred, req *api.AuthRequest) (any, error) {
	if err := d.audit.Flush(); err != nil { // the audit chains are verified
		return nil, err
	}
	res, err := d.mgr.Check(r.Context(), req.Actor, req.ActorPassword)
	if err != nil {
		d.log.Warn("keyring check failed", "admin", req.Actor, "uid", cred.UID, "pid", cred.PID, "error", err)
		return nil, err
	}
	if !res.OK() {
		d.log.Error("keyring check found problems", "admin", req.Actor, "report", res.Report.Err(), "audit", res.AuditProblem)
	}
	return res, nil
}

func (d *Daemon) unlockAdmin(r *http.Request, cred PeerCred, req *api.AuthRequest) (any, error) {
	name := mux.Vars(r)["name"]
	n, err := d.mgr.Unlock(r.Context(), req.Actor, req.ActorPassword, name)
	d.logChange("unlock admin", req.Actor, name, cred, err)
	if err != nil {
		return nil, err
	}
	return api.UnlockAnswer{Cleared: n}, nil
}

func (d *Daemon) setPolicy(r *http.Request, cred PeerCred, req *api.PolicyRequest) (any, error) {
	p, err := d.mgr.SetPolicyFields(r.Context(), req.Actor, req.ActorPassword, req.KDF)
	d.logChange("kdf policy "+p.String(), req.Actor, "", cred, err)
	if err != nil {
		return nil, err
	}
	return api.PolicyAnswer{Policy: p}, nil
}
