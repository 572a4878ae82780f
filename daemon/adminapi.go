package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/gorilla/mux"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// maxAdminBody bounds admin request bodies: names and passwords are small.
const maxAdminBody = 16 << 10

// adminHandler answers one admin request. It returns the value to send as
// JSON, or an error that errorFor maps to a status.
type adminHandler func(r *http.Request, cred PeerCred) (any, error)

// adminRouter is the whole admin API. Every route is logged with the peer's
// credentials before it runs; access to the socket itself is limited by its
// mode (0600, the daemon's user), and every change needs an admin password.
func (d *Daemon) adminRouter() http.Handler {
	routes := []struct {
		method, path string
		h            adminHandler
	}{
		{http.MethodGet, "/v1/status", d.adminStatus},
		{http.MethodPost, "/v1/unseal", d.unseal},
		{http.MethodPost, "/v1/seal", d.seal},
		{http.MethodGet, "/v1/admins", d.listAdmins},
		{http.MethodPost, "/v1/admins", d.addAdmin},
		{http.MethodPost, "/v1/admins/{name}/remove", d.removeAdmin},
		{http.MethodPost, "/v1/admins/{name}/passwd", d.passwd},
		{http.MethodGet, "/v1/clients", d.listClients},
		{http.MethodPost, "/v1/clients", d.addClient},
		{http.MethodPost, "/v1/clients/{name}/{action:disable|enable|remove}", d.clientAction},
	}
	r := mux.NewRouter()
	for _, rt := range routes {
		r.Handle(rt.path, d.adminEndpoint(rt.h)).Methods(rt.method)
	}
	r.NotFoundHandler = http.HandlerFunc(notFound)
	r.MethodNotAllowedHandler = http.HandlerFunc(methodNotAllowed)
	return r
}

func (d *Daemon) adminEndpoint(h adminHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, ok := credFrom(r.Context())
		if !ok {
			writeError(w, &APIError{Status: http.StatusForbidden, Code: codeForbidden, Message: "no peer credentials"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		v, err := h(r, cred)
		if err != nil {
			e := errorFor(err)
			d.log.Debug("admin request failed", "method", r.Method, "path", r.URL.Path, "uid", cred.UID, "pid", cred.PID, "status", e.Status, "error", e.Message)
			writeError(w, e)
			return
		}
		d.log.Debug("admin request", "method", r.Method, "path", r.URL.Path, "uid", cred.UID, "gid", cred.GID, "pid", cred.PID)
		writeJSON(w, v)
	})
}

// readJSON decodes a bounded body into dst, refusing unknown fields, and
// wipes the raw body, which may hold passwords.
func readJSON(r *http.Request, dst any) error {
	raw, err := io.ReadAll(r.Body)
	defer memlock.Wipe(raw)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return badRequest("request body larger than %d bytes", maxAdminBody)
		}
		return badRequest("reading request: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return badRequest("malformed JSON request: %v", err)
	}
	if dec.More() {
		return badRequest("malformed JSON request: trailing data")
	}
	return nil
}

// kdf runs fn, which derives an Argon2id key, when a derivation slot is free.
// Requests beyond the limit wait for up to kdfQueueWait, then get ErrBusy.
func (d *Daemon) kdf(ctx context.Context, fn func() error) error {
	t := time.NewTimer(kdfQueueWait)
	defer t.Stop()
	select {
	case d.kdfSlots <- struct{}{}:
	case <-t.C:
		return fmt.Errorf("%w: too many password checks in progress; try again shortly", ErrBusy)
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-d.kdfSlots }()
	return fn()
}

func (d *Daemon) adminStatus(r *http.Request, _ PeerCred) (any, error) {
	return d.Status()
}

// Status reports the daemon's state. It holds nothing secret.
func (d *Daemon) Status() (*Status, error) {
	s := &Status{
		AllowUnlockedMemory: d.cfg.AllowUnlockedMemory,
		Keyring:             d.kr.Path(),
		PID:                 os.Getpid(),
		Started:             d.started.UTC(),
	}
	d.vault.status(s)
	s.KDFDerivations, _ = unseal.Work()
	err := d.kr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		s.KDFPolicy = h.Policy
		s.Admins = tx.SlotCount()
		return nil
	})
	return s, err
}

func (d *Daemon) unseal(r *http.Request, cred PeerCred) (any, error) {
	var req UnsealRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	defer wipe(req.Password)
	if sealed, _ := d.vault.isSealed(); !sealed {
		return nil, &APIError{Status: http.StatusConflict, Code: codeRefused, Message: "already unsealed; seal first to unseal as another admin"}
	}
	var u *admin.Unsealed
	err := d.kdf(r.Context(), func() error {
		var err error
		u, err = d.mgr.Unseal(req.Admin, req.Password)
		return err
	})
	if err != nil {
		d.log.Warn("unseal failed", "admin", req.Admin, "uid", cred.UID, "gid", cred.GID, "pid", cred.PID, "error", err)
		return nil, err
	}
	d.vault.unseal(u, req.Admin)
	d.log.Info("unsealed", "admin", req.Admin, "uid", cred.UID, "gid", cred.GID, "pid", cred.PID, "memory_locked", u.Secret.Locked(), "clients", len(u.Clients))
	if err := u.Report.Err(); err != nil {
		d.log.Error("registry records failed verification and are not honoured", "report", err)
	}
	d.notify("STATUS=unsealed")
	return d.Status()
}

func (d *Daemon) seal(r *http.Request, cred PeerCred) (any, error) {
	if d.vault.seal() {
		d.log.Info("sealed", "by", "admin socket", "uid", cred.UID, "pid", cred.PID)
		d.notify("STATUS=sealed")
	}
	return d.Status()
}

func (d *Daemon) listAdmins(r *http.Request, _ PeerCred) (any, error) {
	list, err := d.mgr.ListAdmins()
	if list == nil {
		list = []admin.AdminInfo{}
	}
	return list, err
}

func (d *Daemon) addAdmin(r *http.Request, cred PeerCred) (any, error) {
	var req AddAdminRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	defer wipe(req.ActorPassword, req.Password)
	err := d.kdf(r.Context(), func() error {
		return d.mgr.AddAdmin(req.Actor, req.ActorPassword, req.Name, req.Password)
	})
	d.logChange("add admin", req.Actor, req.Name, cred, err)
	return okIf(err)
}

func (d *Daemon) removeAdmin(r *http.Request, cred PeerCred) (any, error) {
	var req AuthRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	defer wipe(req.ActorPassword)
	name := mux.Vars(r)["name"]
	err := d.kdf(r.Context(), func() error { return d.mgr.RemoveAdmin(req.Actor, req.ActorPassword, name) })
	d.logChange("remove admin", req.Actor, name, cred, err)
	return okIf(err)
}

func (d *Daemon) passwd(r *http.Request, cred PeerCred) (any, error) {
	var req PasswdRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	defer wipe(req.Current, req.New)
	name := mux.Vars(r)["name"]
	err := d.kdf(r.Context(), func() error { return d.mgr.Passwd(name, req.Current, req.New) })
	d.logChange("passwd", name, name, cred, err)
	return okIf(err)
}

func (d *Daemon) listClients(r *http.Request, _ PeerCred) (any, error) {
	list, err := d.mgr.ListClients()
	if list == nil {
		list = []admin.ClientInfo{}
	}
	return list, err
}

func (d *Daemon) addClient(r *http.Request, cred PeerCred) (any, error) {
	var req AddClientRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	defer wipe(req.ActorPassword)
	if req.UID == nil {
		return nil, badRequest("uid is required")
	}
	err := d.kdf(r.Context(), func() error {
		return d.mgr.AddClient(req.Actor, req.ActorPassword, req.Name, *req.UID, req.GID)
	})
	d.logChange("add client", req.Actor, req.Name, cred, err)
	return okIf(err)
}

var clientActions = map[string]keyring.ClientStatus{
	"disable": keyring.ClientDisabled,
	"enable":  keyring.ClientActive,
	"remove":  keyring.ClientRetired,
}

func (d *Daemon) clientAction(r *http.Request, cred PeerCred) (any, error) {
	var req AuthRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	defer wipe(req.ActorPassword)
	vars := mux.Vars(r)
	err := d.kdf(r.Context(), func() error {
		return d.mgr.SetClientStatus(req.Actor, req.ActorPassword, vars["name"], clientActions[vars["action"]])
	})
	d.logChange(vars["action"]+" client", req.Actor, vars["name"], cred, err)
	return okIf(err)
}

func (d *Daemon) logChange(what, actor, target string, cred PeerCred, err error) {
	if err != nil {
		d.log.Warn("change refused", "change", what, "actor", actor, "target", target, "uid", cred.UID, "pid", cred.PID, "error", err)
		return
	}
	d.log.Info("change", "change", what, "actor", actor, "target", target, "uid", cred.UID, "pid", cred.PID)
}

func okIf(err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return map[string]bool{"ok": true}, nil
}
