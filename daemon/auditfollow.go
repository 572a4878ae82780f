package daemon

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
)

const (
	// maxFollowers bounds the audit streams open at once.
	maxFollowers = 16
	// followWrite is how long a follower may take to accept one batch;
	// one that takes longer is dropped (the writer never waits on it).
	followWrite = 10 * time.Second
	// followKeepAlive is how often an idle stream sends an empty line, so
	// that a follower that went away is noticed.
	followKeepAlive = 30 * time.Second
)

var followers atomic.Int32

// auditFollow streams the audit records that match the query as JSON Lines:
// those stored (the newest ?limit= of them), then each new one as it is
// committed, until the follower hangs up or the daemon stops. It goes on
// across seals: the records hold nothing secret, and who may connect to
// the admin socket may read them anyway. Only this handler waits for the
// follower; the audit writer just closes a channel after each batch.
func (d *Daemon) auditFollow(w http.ResponseWriter, r *http.Request) {
	cred, ok := credFrom(r.Context())
	if !ok {
		writeError(w, apiError(errclass.Forbidden, "no peer credentials"))
		return
	}
	f, err := api.ParseFilterQuery(r.URL.Query())
	if err != nil {
		writeError(w, errorFor(err))
		return
	}
	if followers.Add(1) > maxFollowers {
		followers.Add(-1)
		writeError(w, apiError(errclass.Busy, "too many audit followers; stop one and try again"))
		return
	}
	defer followers.Add(-1)
	if err := d.audit.Flush(); err != nil {
		writeError(w, errorFor(err))
		return
	}
	// The channel is taken before the read: a batch committed after the
	// read closes it, so that none is missed.
	wrote := d.audit.wroteCh()
	recs, last, err := d.mgr.AuditTail(f)
	if err != nil {
		writeError(w, errorFor(err))
		return
	}
	d.log.Info("audit: follower started", "uid", cred.UID, "pid", cred.PID)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	var buf bytes.Buffer
	send := func(recs []audit.Record, keepAlive bool) bool {
		buf.Reset()
		enc := json.NewEncoder(&buf)
		for i := range recs {
			_ = enc.Encode(&recs[i])
		}
		if keepAlive {
			buf.WriteByte('\n')
		}
		if buf.Len() > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(followWrite))
			if _, err := w.Write(buf.Bytes()); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	end := func(why string) {
		d.log.Info("audit: follower ended", "uid", cred.UID, "pid", cred.PID, "why", why)
	}
	dropped := func() {
		d.log.Warn("audit: dropped a follower that did not take its records in time", "uid", cred.UID, "pid", cred.PID, "after", followWrite)
	}
	if !send(recs, false) {
		dropped()
		return
	}
	f.Limit = 0
	tick := time.NewTicker(followKeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			end("it hung up")
			return
		case <-d.stopping:
			end("the daemon stops")
			return
		case <-tick.C:
			if !send(nil, true) {
				end("it did not keep up")
				return
			}
		case <-wrote:
			wrote = d.audit.wroteCh()
			f.After = last
			if recs, last, err = d.mgr.AuditTail(f); err != nil {
				d.log.Error("audit: follower: reading records failed", "error", err)
				return
			}
			if !send(recs, false) {
				dropped()
				return
			}
		}
	}
}
