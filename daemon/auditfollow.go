package daemon

import (
	"golang.org/x/sys/unix"

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
	// followCheck is how often the daemon looks at what the follower left
	// unread in the socket: a write into the socket's buffer succeeds even
	// when nobody reads, so on a quiet stream the write deadline alone would
	// never drop a follower that stopped reading.
	followCheck = 2 * time.Second
	// followBacklog is the most stored records a follower starts with.
	followBacklog = 1000
)

var followers atomic.Int32

// auditFollow streams the audit records that match the query as JSON Lines:
// those stored (the newest ?limit= of them, at most followBacklog), then each new one as it is
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
	// A follower starts with at most the newest followBacklog stored
	// records (fewer with ?limit=): the stream may hold a million.
	if f.Limit <= 0 || f.Limit > followBacklog {
		f.Limit = followBacklog
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
	written := 0 // bytes of records and keep-alives written
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
			written += buf.Len()
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
	check := time.NewTicker(followCheck)
	defer check.Stop()
	// The follower is stuck when bytes wait unread and it took none of them
	// since the last check: it has read written−unread bytes (the framing
	// the writer adds only makes that look like progress, never like none).
	var consumed int
	progress := time.Now()
	for {
		select {
		case <-check.C:
			n := unread(w)
			if n <= 0 || written-n != consumed {
				consumed, progress = written-n, time.Now()
			} else if time.Since(progress) > followWrite {
				dropped()
				return
			}
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

// unread returns how many bytes the follower has not read yet from its
// connection (SIOCOUTQ on a Unix stream socket), or -1 when that is not
// known (a ResponseWriter that is not sealboxd's own).
func unread(w http.ResponseWriter) int {
	cw, ok := w.(*connWriter)
	if !ok {
		return -1
	}
	rc, err := cw.c.UnixConn.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	_ = rc.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil {
			n = v
		}
	})
	return n
}
