package daemon

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/keyring"
)

// serviceRouter is the whole service API: what local clients may ask. Admin
// operations do not exist here. Every request passes identify first, so an
// unknown peer learns nothing, not even which paths exist. Two routes need
// no router: the path is matched exactly (no cleaning, no redirects: an
// unclean path is just not found), then the method.
func (d *Daemon) serviceRouter() http.Handler {
	return d.identify(func(w http.ResponseWriter, r *http.Request, cred PeerCred, c *keyring.Client) {
		var h func(http.ResponseWriter, *http.Request, PeerCred, *keyring.Client)
		switch r.URL.Path {
		case "/v1/secret":
			h = d.getSecret
		case "/v1/status":
			h = d.getServiceStatus
		default:
			notFound(w, r)
			return
		}
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r)
			return
		}
		h(w, r, cred, c)
	})
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, apiError(errclass.NotFound, "no such endpoint"))
}

func methodNotAllowed(w http.ResponseWriter, _ *http.Request) {
	writeError(w, &api.APIError{Status: http.StatusMethodNotAllowed, Code: string(errclass.Invalid), Message: "method not allowed"})
}

// secretWriter is what connServer's writer offers: the secret goes from its
// locked buffer to the socket without a copy.
type secretWriter interface {
	WriteSecret(secret []byte) error
}

var (
	octetStream = []string{"application/octet-stream"}
	noStore     = []string{"no-store"}
)

// identify admits only peers that are an Active registered client, by the
// credentials the kernel attested at accept, and hands next the peer and its
// client. Root is not special.
func (d *Daemon) identify(next func(http.ResponseWriter, *http.Request, PeerCred, *keyring.Client)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, ok := peerOf(w, r)
		if !ok {
			writeError(w, apiError(errclass.Forbidden, "no peer credentials"))
			return
		}
		c, ok := d.vault.match(cred)
		if !ok {
			d.logRead(r, cred, c, audit.Refused)
			writeError(w, apiError(errclass.Forbidden,
				"not a registered active client (uid "+strconv.FormatUint(uint64(cred.UID), 10)+")"))
			return
		}
		next(w, r, cred, c)
	})
}

// logRead records a read in the structured log and, through group commit,
// in the audit log.
func (d *Daemon) logRead(r *http.Request, cred PeerCred, c *keyring.Client, outcome audit.Outcome) {
	name := ""
	if c != nil {
		name = c.Name
	}
	// The audit log has every read and (aggregated) refusal; the daemon's
	// own log has them at debug level only, so that a flood of refusals
	// cannot flood it either.
	d.log.LogAttrs(r.Context(), slog.LevelDebug, "read", slog.String("path", r.URL.Path), slog.String("client", name),
		slog.Uint64("uid", uint64(cred.UID)), slog.Uint64("gid", uint64(cred.GID)), slog.Int64("pid", int64(cred.PID)), slog.String("outcome", string(outcome)))
	if !d.noReadAudit {
		d.audit.Read(keyring.Reads, audit.Event{Kind: audit.KindRead, Client: name, Peer: &audit.Peer{UID: cred.UID, GID: cred.GID, PID: cred.PID, Unit: cred.Unit}, Outcome: outcome, Detail: auditPath(r.URL.Path)})
	}
}

// auditPath is what the audit log says of a request's path: an endpoint's
// own, or "another path". The path is the peer's choice, decoded (%0a is a
// newline): recorded as sent, it would let any local user write lines and
// terminal escapes into the log an admin reads, and defeat the aggregation
// of refusals, which counts one record per peer and detail.
func auditPath(p string) string {
	switch p {
	case "/v1/secret", "/v1/status":
		return p
	}
	return "another path"
}

// waitParam parses ?wait=DURATION, capped by max_wait.
func (d *Daemon) waitParam(r *http.Request) (time.Duration, *api.APIError) {
	if r.URL.RawQuery == "" {
		return 0, nil
	}
	s := r.URL.Query().Get("wait")
	if s == "" {
		return 0, nil
	}
	wait, err := time.ParseDuration(s)
	if err != nil || wait < 0 {
		return 0, badRequest("wait: want a duration such as 30s")
	}
	if maxWait := time.Duration(d.maxWait.Load()); wait > maxWait {
		wait = maxWait
	}
	return wait, nil
}

// awaitUnseal blocks while sealed, for at most wait, and reports whether the
// vault is unsealed now.
func (d *Daemon) awaitUnseal(w http.ResponseWriter, r *http.Request, wait time.Duration) bool {
	sealed, ch := d.vault.isSealed()
	if !sealed {
		return true
	}
	if wait <= 0 {
		return false
	}
	// The server's write timeout is short; a long poll gets its own.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + writeTimeout))
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-r.Context().Done():
	case <-d.stopping:
	}
	sealed, _ = d.vault.isSealed()
	return !sealed
}

func sealedError() *api.APIError {
	return apiError(errclass.Sealed, "sealed: an admin must run sealbox-admin unseal")
}

func (d *Daemon) getSecret(w http.ResponseWriter, r *http.Request, cred PeerCred, _ *keyring.Client) {
	wait, aerr := d.waitParam(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	d.awaitUnseal(w, r, wait)
	outcome, c, err := d.vault.serve(cred, func(secret []byte, version uint64) error {
		// Canonical keys and shared values: nothing to allocate here.
		h := w.Header()
		h["Content-Type"] = octetStream
		h["Cache-Control"] = noStore
		h["X-Sealbox-Secret-Version"] = d.versionHeader(version)
		if sw, ok := w.(secretWriter); ok {
			return sw.WriteSecret(secret) // from locked memory to the socket
		}
		h["Content-Length"] = []string{strconv.Itoa(len(secret))}
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(secret)
		return err
	})
	if err != nil {
		outcome = audit.WriteFailed
	}
	d.logRead(r, cred, c, outcome)
	switch outcome {
	case audit.SealedOutcome:
		writeError(w, sealedError())
	case audit.Refused:
		writeError(w, apiError(errclass.Forbidden, "not a registered active client"))
	}
}

// versionHeader returns the X-Sealbox-Secret-Version value for version,
// made once per version rather than per read (header values are only read).
func (d *Daemon) versionHeader(version uint64) []string {
	if v := d.verHdr.Load(); v != nil && v.version == version {
		return v.value
	}
	v := &versionValue{version: version, value: []string{strconv.FormatUint(version, 10)}}
	d.verHdr.Store(v)
	return v.value
}

type versionValue struct {
	version uint64
	value   []string
}

func (d *Daemon) getServiceStatus(w http.ResponseWriter, r *http.Request, _ PeerCred, c *keyring.Client) {
	wait, aerr := d.waitParam(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	unsealed := d.awaitUnseal(w, r, wait)
	writeJSON(w, api.ServiceStatus{Sealed: !unsealed, Client: c.Name})
}
