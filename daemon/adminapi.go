package daemon

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/sealbox/sealbox/admin/api"
	"golang.org/x/sys/unix"

	"github.com/gorilla/mux"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
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
		{http.MethodPost, "/v1/unseal", withBody(d.unseal)},
		{http.MethodPost, "/v1/seal", d.seal},
		{http.MethodPost, "/v1/check", withBody(d.checkPassword)},
		{http.MethodGet, "/v1/admins", d.listAdmins},
		{http.MethodPost, "/v1/admins", withBody(d.addAdmin)},
		{http.MethodPost, "/v1/admins/{name}/remove", withBody(d.removeAdmin)},
		{http.MethodPost, "/v1/admins/{name}/passwd", withBody(d.passwd)},
		{http.MethodGet, "/v1/clients", d.listClients},
		{http.MethodPost, "/v1/clients", withBody(d.addClient)},
		{http.MethodPost, "/v1/clients/{name}/{action:disable|enable|remove}", withBody(d.clientAction)},
		{http.MethodGet, "/v1/audit", d.auditList},
		{http.MethodPost, "/v1/audit/verify", d.auditVerify},
		{http.MethodPost, "/v1/admins/{name}/invite", withBody(d.invite)},
		{http.MethodPost, "/v1/admins/{name}/enroll", withBody(d.enroll)},
		{http.MethodPost, "/v1/recovery", withBody(d.recovery)},
		{http.MethodPost, "/v1/rotate", withBody(d.rotate)},
		{http.MethodPost, "/v1/rekey", withBody(d.rekey)},
		{http.MethodGet, "/v1/slots", d.slots},
		{http.MethodPost, "/v1/keyring/check", withBody(d.checkKeyring)},
		{http.MethodPost, "/v1/admins/{name}/unlock", withBody(d.unlockAdmin)},
		{http.MethodPost, "/v1/policy", withBody(d.setPolicy)},
		{http.MethodPost, "/v1/slots/bind", withBody(d.bind)},
		{http.MethodPost, "/v1/slots/{name}/unbind", withBody(d.unbind)},
	}
	r := mux.NewRouter().SkipClean(true) // no redirects: an unclean path is just not found
	// An audit stream (?follow=1), JSON Lines until the follower hangs up:
	// before the routes, which would take GET /v1/audit as a list.
	r.Handle("/v1/audit", http.HandlerFunc(d.auditFollow)).Methods(http.MethodGet).Queries("follow", "1")
	for _, rt := range routes {
		r.Handle(rt.path, d.adminEndpoint(rt.h)).Methods(rt.method)
	}
	// The one answer that is not JSON: a consistent copy of the keyring.
	r.Handle("/v1/backup", http.HandlerFunc(d.backup)).Methods(http.MethodGet)
	r.NotFoundHandler = http.HandlerFunc(notFound)
	r.MethodNotAllowedHandler = http.HandlerFunc(methodNotAllowed)
	return r
}

func (d *Daemon) adminEndpoint(h adminHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, ok := credFrom(r.Context())
		if !ok {
			writeError(w, apiError(errclass.Forbidden, "no peer credentials"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		r = r.WithContext(audit.WithPeer(r.Context(), audit.Peer{UID: cred.UID, GID: cred.GID, PID: cred.PID}))
		v, err := h(r, cred)
		// The request may have written audit records (a change, a login,
		// a failed attempt): followers and the journal hear of them.
		d.audit.publish()
		// What the request's derivations, unwraps and decoding left on the
		// heap was allocated inside memlock.Do: one collection, before the
		// answer, erases it (runtime/secret), so that nothing of a password
		// or a key outlives the request.
		runtime.GC()
		if err != nil {
			e := errorFor(err)
			d.log.Debug("admin request failed", "method", r.Method, "path", r.URL.Path, "uid", cred.UID, "pid", cred.PID, "status", e.Status, "error", e.Message)
			writeError(w, e)
			return
		}
		d.log.Debug("admin request", "method", r.Method, "path", r.URL.Path, "uid", cred.UID, "gid", cred.GID, "pid", cred.PID)
		if wa, ok := v.(*wipingAnswer); ok {
			wa.write(w)
			return
		}
		writeJSON(w, v)
	})
}

// readJSON decodes a bounded body into dst, refusing unknown fields. The
// body, which may hold passwords, is read into locked memory that is wiped
// after decoding, and decoded inside memlock.Do, so that the decoder's own
// buffers are erased too; the byte strings it decodes into dst are the
// caller's to wipe.
func readJSON(r *http.Request, dst any) error {
	raw, err := memlock.New(maxAdminBody+1, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return err
	}
	defer raw.Destroy()
	n, err := io.ReadFull(r.Body, raw.Bytes())
	if n > maxAdminBody {
		return badRequest("request body larger than %d bytes", maxAdminBody)
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return badRequest("reading request: %v", err)
	}
	var derr error
	memlock.Do(func() { derr = decodeJSON(raw.Bytes()[:n], dst) })
	return derr
}

func decodeJSON(raw []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		// encoding/json's messages can quote the input, which may hold a
		// password: say where, not what.
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return badRequest("malformed JSON request at byte %d", se.Offset)
		case errors.As(err, &te):
			return badRequest("malformed JSON request: field %q has the wrong type", te.Field)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return badRequest("malformed JSON request: %v", err) // names the field, not a value
		}
		return badRequest("malformed JSON request (a byte string must be base64)")
	}
	if dec.More() {
		return badRequest("malformed JSON request: trailing data")
	}
	return nil
}

func (d *Daemon) adminStatus(r *http.Request, _ PeerCred) (any, error) {
	return d.Status()
}

// Status reports the daemon's state. It holds nothing secret.
func (d *Daemon) Status() (*api.Status, error) {
	s := &api.Status{
		AllowUnlockedMemory: d.cfg.AllowUnlockedMemory,
		Keyring:             d.kr.Path(),
		PID:                 os.Getpid(),
		Started:             d.started.UTC(),
	}
	d.vault.status(s)
	s.KDFDerivations, _ = unseal.Work()
	s.KDFBudgetMiB = d.budget.CapKiB() >> 10
	s.AuditKeyed = d.audit.keyBytes() != nil
	s.MemoryHygiene = memlock.Hygiene
	s.KDFMemoryReady = unseal.ArenaKept() != (keyring.Params{})
	s.Generation = d.wm.Seen()
	sum, err := d.mgr.Summary()
	if err != nil {
		return nil, err
	}
	s.Slots, s.Admins, s.Recovery, s.Format, s.KDFPolicy = sum.Slots, sum.Admins, sum.Recovery, sum.Format, sum.Policy
	s.Unattended = d.unattended.list()
	return s, nil
}

func (d *Daemon) unseal(r *http.Request, cred PeerCred, req *api.UnsealRequest) (any, error) {
	if req.Recovery {
		req.Admin = admin.RecoveryName
	}
	// The epoch first: a seal that comes after it, even one that finds the
	// vault already sealed a moment later, ends this unseal.
	epoch := d.vault.sealEpoch()
	if sealed, _ := d.vault.isSealed(); !sealed {
		// Nothing to do, and nothing derived: the attempt is recorded.
		d.audit.Read(keyring.Events, audit.Event{Kind: audit.KindUnseal, Actor: req.Admin, Peer: audit.PeerFrom(r.Context()), Outcome: audit.AlreadyDone, Detail: "already unsealed; the password was not checked"})
		st, err := d.Status()
		if st != nil {
			st.AlreadyUnsealed = true
		}
		return st, err
	}
	var u *admin.Unsealed
	var err error
	if req.Recovery {
		u, err = d.mgr.UnsealRecovery(r.Context(), req.Password)
	} else {
		u, err = d.mgr.Unseal(r.Context(), req.Admin, req.Password)
	}
	if err != nil {
		d.log.Warn("unseal failed", "admin", req.Admin, "uid", cred.UID, "gid", cred.GID, "pid", cred.PID, "error", err)
		return nil, err
	}
	switch err := d.install(u, req.Admin, epoch, "admin", req.Admin, "uid", cred.UID, "gid", cred.GID, "pid", cred.PID); {
	case errors.Is(err, errSealedMeanwhile):
		d.log.Warn("a seal arrived while the unseal was in progress; the seal wins", "admin", req.Admin)
		return nil, apiError(errclass.Refused, "sealed while the unseal was in progress: the seal wins; unseal again if that was not meant")
	case err != nil:
		d.log.Warn("unseal not installed", "admin", req.Admin, "error", err)
		return nil, apiError(errclass.Refused, err.Error()+": it read the secret before; unseal again")
	}
	return d.Status()
}

// install puts what an unseal decrypted in the vault and takes its log
// keys, unless a seal came since epoch or a rotate committed after the
// unseal read the secret: then it destroys it and says which. by names who
// unsealed; attrs go into the log line.
func (d *Daemon) install(u *admin.Unsealed, by string, epoch uint64, attrs ...any) error {
	keys := u.LogKeys
	u.LogKeys = nil
	d.audit.setKeys(keys)
	if err := d.vault.unseal(u, by, epoch); err != nil {
		u.Destroy()
		return err
	}
	unseal.DropArena()
	d.log.Info("unsealed", append(attrs, "memory_locked", u.Secret.Locked(), "clients", len(u.Clients), "generation", u.Generation)...)
	if err := u.Report.Err(); err != nil {
		d.log.Error("records failed verification and are not honoured", "report", err)
	}
	d.logResealed(u)
	d.notify("STATUS=unsealed")
	return nil
}

// checkPassword tests an admin's password, sealed or not, without changing
// anything (cryptsetup's --test-passphrase).
func (d *Daemon) checkPassword(r *http.Request, cred PeerCred, req *api.CheckRequest) (any, error) {
	before := audit.KindCheck
	if req.Before != "" {
		if !audit.Kind(req.Before).Known() {
			return nil, badRequest("before: unknown operation %q", req.Before)
		}
		before = audit.Kind(req.Before)
	}
	return okIf(d.mgr.CheckPassword(r.Context(), before, req.Actor, req.ActorPassword))
}

func (d *Daemon) seal(r *http.Request, cred PeerCred) (any, error) {
	d.Seal("admin socket", audit.PeerFrom(r.Context()))
	return d.Status()
}

func (d *Daemon) listAdmins(r *http.Request, _ PeerCred) (any, error) {
	list, err := d.mgr.ListAdmins()
	if list == nil {
		list = []admin.AdminInfo{}
	}
	return list, err
}

func (d *Daemon) addAdmin(r *http.Request, cred PeerCred, req *api.AddAdminRequest) (any, error) {
	return d.changed("add admin", req.Actor, req.Name, cred, d.mgr.AddAdminWith(r.Context(), req.Actor, req.ActorPassword, req.Name, req.Password, req.KDF))
}

func (d *Daemon) bind(r *http.Request, cred PeerCred, req *api.BindRequest) (any, error) {
	spec, err := req.Spec(d.unattendedEnv())
	var pin string
	if err == nil {
		pin, err = d.mgr.Bind(r.Context(), req.Actor, req.ActorPassword, req.Name, spec)
	}
	d.logChange("bind "+req.Kind, req.Actor, req.Name, cred, err)
	if err != nil {
		return nil, err
	}
	d.syncUnattended()
	if pin != d.cfg.UnattendedIdentity {
		d.log.Warn("unattended slots are not tried until unattended_identity in the configuration is this keyring's identity (sealbox-admin bind printed it)")
	}
	return &api.BindResponse{Identity: pin}, nil
}

func (d *Daemon) unbind(r *http.Request, cred PeerCred, req *api.AuthRequest) (any, error) {
	name := mux.Vars(r)["name"]
	err := d.mgr.Unbind(r.Context(), req.Actor, req.ActorPassword, name)
	if err == nil {
		d.syncUnattended()
	}
	return d.changed("unbind", req.Actor, name, cred, err)
}

func (d *Daemon) removeAdmin(r *http.Request, cred PeerCred, req *api.AuthRequest) (any, error) {
	name := mux.Vars(r)["name"]
	return d.changed("remove admin", req.Actor, name, cred, d.mgr.RemoveAdmin(r.Context(), req.Actor, req.ActorPassword, name))
}

func (d *Daemon) passwd(r *http.Request, cred PeerCred, req *api.PasswdRequest) (any, error) {
	name := mux.Vars(r)["name"]
	return d.changed("passwd", name, name, cred, d.mgr.PasswdWith(r.Context(), name, req.Current, req.New, req.KDF))
}

func (d *Daemon) listClients(r *http.Request, _ PeerCred) (any, error) {
	list, err := d.mgr.ListClients()
	if list == nil {
		list = []admin.ClientInfo{}
	}
	return list, err
}

func (d *Daemon) addClient(r *http.Request, cred PeerCred, req *api.AddClientRequest) (any, error) {
	if req.UID == nil && req.Unit == "" {
		return nil, badRequest("uid or unit is required")
	}
	return d.changed("add client", req.Actor, req.Name, cred, d.mgr.AddClient(r.Context(), req.Actor, req.ActorPassword, req.Name, admin.Match{UID: req.UID, GID: req.GID, Unit: req.Unit}))
}

func (d *Daemon) clientAction(r *http.Request, cred PeerCred, req *api.AuthRequest) (any, error) {
	vars := mux.Vars(r)
	st, ok := api.ClientStatusOf(vars["action"])
	if !ok {
		return nil, badRequest("no such client action %q", vars["action"])
	}
	return d.changed(vars["action"]+" client", req.Actor, vars["name"], cred, d.mgr.SetClientStatus(r.Context(), req.Actor, req.ActorPassword, vars["name"], st))
}

func (d *Daemon) logChange(what, actor, target string, cred PeerCred, err error) {
	if err != nil {
		d.log.Warn("change refused", "change", what, "actor", actor, "target", target, "uid", cred.UID, "pid", cred.PID, "error", err)
		return
	}
	d.log.Info("change", "change", what, "actor", actor, "target", target, "uid", cred.UID, "pid", cred.PID)
}

// withBody decodes a request's JSON body into a new T (in locked memory,
// see readJSON), hands it to h, and wipes every password and code it holds
// when h returns: the one skeleton of every admin request with a body.
func withBody[T any, P interface {
	*T
	Secrets() [][]byte
}](h func(r *http.Request, cred PeerCred, req P) (any, error)) adminHandler {
	return func(r *http.Request, cred PeerCred) (any, error) {
		req := P(new(T))
		defer func() { wipe(req.Secrets()...) }()
		if err := readJSON(r, req); err != nil {
			return nil, err
		}
		return h(r, cred, req)
	}
}

// changed logs a change (or its refusal) and answers it.
func (d *Daemon) changed(what, actor, target string, cred PeerCred, err error) (any, error) {
	d.logChange(what, actor, target, cred, err)
	return okIf(err)
}

func okIf(err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return map[string]bool{"ok": true}, nil
}

func (d *Daemon) auditList(r *http.Request, _ PeerCred) (any, error) {
	f, err := api.ParseFilterQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	if err := d.audit.Flush(); err != nil {
		return nil, err
	}
	recs, err := d.mgr.AuditRecords(f)
	if recs == nil {
		recs = []audit.Record{}
	}
	return recs, err
}

func (d *Daemon) auditVerify(r *http.Request, _ PeerCred) (any, error) {
	if d.audit.keyBytes() == nil {
		return nil, apiError(errclass.Sealed,
			"the daemon has not been unsealed since it started, so it holds no audit key; unseal first, or stop it and run: sealbox-admin --keyring PATH audit verify --as NAME")
	}
	// With the writer held, as a rekey holds it, no rekey commits during
	// the verify: the keys are those the file is under, and stay mapped.
	var rep *audit.Report
	var verr error
	if err := d.audit.exclusive(func() error {
		rep, verr = admin.VerifyAuditWith(d.kr, d.audit.keyBytes(), d.wm)
		return nil
	}); err != nil {
		return nil, err
	}
	if verr != nil {
		return nil, apiError(errclass.Integrity, verr.Error())
	}
	return rep, nil
}

func (d *Daemon) invite(r *http.Request, cred PeerCred, req *api.InviteRequest) (any, error) {
	name := mux.Vars(r)["name"]
	ttl := admin.DefaultInviteTTL
	if req.TTLSeconds != 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	code, expires, err := d.mgr.Invite(r.Context(), req.Actor, req.ActorPassword, name, ttl)
	d.logChange("invite", req.Actor, name, cred, err)
	if err != nil {
		return nil, err
	}
	return &wipingAnswer{field: "code", code: code, rest: api.CodeAnswer{Expires: &expires}}, nil
}

func (d *Daemon) enroll(r *http.Request, cred PeerCred, req *api.EnrollRequest) (any, error) {
	name := mux.Vars(r)["name"]
	return d.changed("enroll", name, name, cred, d.mgr.Enroll(r.Context(), name, req.Code, req.Password))
}

func (d *Daemon) recovery(r *http.Request, cred PeerCred, req *api.AuthRequest) (any, error) {
	code, err := d.mgr.RegenerateRecovery(r.Context(), req.Actor, req.ActorPassword)
	d.logChange("regenerate recovery code", req.Actor, admin.RecoveryName, cred, err)
	if err != nil {
		return nil, err
	}
	return &wipingAnswer{field: "code", code: code, rest: api.CodeAnswer{}}, nil
}

func (d *Daemon) rotate(r *http.Request, cred PeerCred, req *api.RotateRequest) (any, error) {
	secret := req.Secret
	if len(secret) == 0 {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		defer wipe(secret)
	}
	version, err := d.mgr.Rotate(r.Context(), req.Actor, req.ActorPassword, secret)
	d.logChange("rotate secret", req.Actor, "", cred, err)
	if err != nil {
		return nil, err
	}
	// Serve the new value at once.
	buf, err := memlock.New(len(secret), memlock.Options{AllowUnlocked: d.cfg.AllowUnlockedMemory})
	if err != nil {
		d.Seal("rotate: cannot hold the new secret", audit.PeerFrom(r.Context()))
		return nil, fmt.Errorf("the secret was rotated, but the daemon could not hold the new one and sealed: %w", err)
	}
	copy(buf.Bytes(), secret)
	d.vault.rotate(buf, version)
	return api.RotateAnswer{Version: version}, nil
}

func (d *Daemon) rekey(r *http.Request, cred PeerCred, req *api.RekeyRequest) (any, error) {
	// The manager holds the audit writer (Options.Exclusive) for the
	// rekey's transaction only, not through its derivations.
	res, err := d.mgr.Rekey(r.Context(), req.Actor, req.ActorPassword, admin.RekeyOptions{KeepInvites: req.KeepInvites, KeepUnattended: req.KeepUnattended, Remove: req.Remove})
	what := "rekey"
	if req.Remove != "" {
		what = "remove admin with a rekey"
	}
	d.logChange(what, req.Actor, req.Remove, cred, err)
	if err != nil {
		return nil, err
	}
	d.syncUnattended()
	ans := api.RekeyAnswer{DroppedInvites: res.DroppedInvites, KeptInvites: res.KeptInvites,
		HandedOver: res.HandedOver, Remade: res.Remade, DroppedUnattended: res.DroppedUnattended, Stale: res.Stale, Generation: res.Generation, Identity: res.Identity}
	if d.cfg.UnattendedIdentity != "" && res.Identity != d.cfg.UnattendedIdentity {
		d.log.Warn("the rekey drew a new keyring identity: unattended_identity in the configuration now pins the old one, which admits a keyring forged by whoever held the old DataKey; set it to \"\" until unattended slots are bound again, then to the new one (the rekey printed it)")
	}
	return &wipingAnswer{field: "recovery_code", code: res.RecoveryCode, rest: ans}, nil
}

// backup streams a consistent copy of the keyring.
func (d *Daemon) backup(w http.ResponseWriter, r *http.Request) {
	cred, _ := credFrom(r.Context())
	ctx := audit.WithPeer(r.Context(), audit.Peer{UID: cred.UID, GID: cred.GID, PID: cred.PID})
	// The copy goes first into a file with no name beside the keyring, in
	// one read transaction that lasts as long as the local disk takes,
	// and is streamed after it ends. Streamed from inside the transaction,
	// a reader that stopped reading held it open until the write deadline:
	// the next write that had to grow the file's map waited for it, and
	// behind that write the audit writer, every admin operation and every
	// read of the secret.
	f, err := unnamedFile(filepath.Dir(d.cfg.Keyring))
	if err != nil {
		d.log.Error("backup failed", "uid", cred.UID, "error", err)
		writeError(w, apiError(errclass.Internal, "no room for the backup's copy beside the keyring: "+err.Error()))
		return
	}
	defer f.Close()
	n, err := d.mgr.Backup(ctx, f)
	// The backup's record was written by the manager, not the audit writer:
	// followers and the journal hear of it now, as adminEndpoint does for
	// the other routes, not at whatever batch comes next (on an idle
	// daemon, none).
	d.audit.publish()
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		d.log.Error("backup failed", "uid", cred.UID, "error", err)
		writeError(w, errorFor(err))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(adminWriteTimeout))
	if _, err := io.Copy(w, f); err != nil {
		d.log.Error("backup not delivered", "uid", cred.UID, "error", err)
		return
	}
	d.log.Info("backup", "uid", cred.UID, "pid", cred.PID, "bytes", n)
}

// unnamedFile opens a file in dir that has no name (O_TMPFILE, 0600), so
// that nothing is left behind whatever happens to this process; where the
// file system cannot, a named one removed at once.
func unnamedFile(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE, 0o600)
	if err == nil {
		return f, nil
	}
	if f, err = os.CreateTemp(dir, ".sealbox-backup-*"); err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// wipingAnswer is a JSON answer that holds a code (an invite, the recovery
// code): the code is encoded by hand into a buffer that is wiped once sent,
// never through encoding/json, whose buffers are pooled and never cleared.
// rest is the answer without the code; the code goes first, as field.
type wipingAnswer struct {
	field string
	code  []byte
	rest  any
}

func (wa *wipingAnswer) write(w http.ResponseWriter) {
	defer memlock.Wipe(wa.code)
	rest, err := json.Marshal(wa.rest)
	if err != nil || len(rest) < 2 {
		writeError(w, apiError(errclass.Internal, "encoding the answer"))
		return
	}
	out := make([]byte, 0, len(wa.field)+base64.StdEncoding.EncodedLen(len(wa.code))+len(rest)+8)
	defer func() { memlock.Wipe(out[:cap(out)]) }()
	if wa.code != nil {
		out = append(out, `{"`...)
		out = append(out, wa.field...)
		out = append(out, `":"`...)
		n := len(out)
		out = out[:n+base64.StdEncoding.EncodedLen(len(wa.code))]
		base64.StdEncoding.Encode(out[n:], wa.code)
		out = append(out, '"')
		if len(rest) > 2 {
			out = append(out, ',')
		}
		out = append(out, rest[1:]...)
	} else {
		out = append(out, rest...)
	}
	out = append(out, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(out)
}
