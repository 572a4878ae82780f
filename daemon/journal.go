package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/sealbox/sealbox/audit"
)

// DefaultJournalSocket is where systemd-journald takes native entries.
const DefaultJournalSocket = "/run/systemd/journal/socket"

// journalWait bounds one send: a journald that does not keep up loses
// entries (counted and logged), it never holds up the audit writer.
const journalWait = 50 * time.Millisecond

// journal forwards committed audit records to systemd's journal with
// structured fields, over journald's native protocol (one datagram per
// entry). The keyring's chain stays the record of truth; the journal is a
// copy for the host's log tooling (journalctl SEALBOX_KIND=unseal).
type journal struct {
	conn *net.UnixConn
	log  *slog.Logger

	mu      sync.Mutex
	buf     bytes.Buffer
	dropped int64
}

// journalSocket resolves the audit_journal setting: "off", "auto" (the
// default socket, when sealboxd runs as a systemd service and the socket
// exists), or a socket's path (a journald namespace's). "" means off.
func journalSocket(setting string) string {
	switch setting {
	case "off":
		return ""
	case "", "auto":
		if os.Getenv("INVOCATION_ID") == "" {
			return ""
		}
		if st, err := os.Stat(DefaultJournalSocket); err != nil || st.Mode()&os.ModeSocket == 0 {
			return ""
		}
		return DefaultJournalSocket
	}
	return setting
}

func openJournal(path string, log *slog.Logger) (*journal, error) {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("audit_journal: %w", err)
	}
	return &journal{conn: conn, log: log}, nil
}

func (j *journal) close() {
	if j != nil {
		j.conn.Close()
	}
}

// send writes records as journal entries, all within journalWait: a
// journald that does not take them in that time loses the rest of the batch
// (counted and logged), and the caller, the audit writer, goes on.
func (j *journal) send(recs []audit.Record) {
	if len(recs) == 0 {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	_ = j.conn.SetWriteDeadline(time.Now().Add(journalWait))
	for i := range recs {
		j.buf.Reset()
		appendJournalEntry(&j.buf, &recs[i])
		if _, err := j.conn.Write(j.buf.Bytes()); err != nil {
			lost := int64(len(recs) - i)
			before := j.dropped
			j.dropped += lost
			// Once, then once per thousand: a stalled journald must not
			// flood the log it feeds.
			if before == 0 || before/1000 != j.dropped/1000 {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = errors.New("journald did not take the entries in time")
				}
				j.log.Warn("audit: records were not forwarded to the journal (the keyring has them)", "lost", lost, "dropped", j.dropped, "error", err)
			}
			return
		}
	}
}

// appendJournalEntry encodes rec in journald's native format: FIELD=value
// lines, and FIELD, a little-endian 64-bit length and the bytes for a
// value that holds a newline. Audit records hold no secret (audit.Event),
// so nothing here needs wiping.
func appendJournalEntry(b *bytes.Buffer, rec *audit.Record) {
	field := func(name, value string) {
		if value == "" {
			return
		}
		if !bytes.ContainsAny([]byte(value), "\n") {
			b.WriteString(name)
			b.WriteByte('=')
			b.WriteString(value)
			b.WriteByte('\n')
			return
		}
		b.WriteString(name)
		b.WriteByte('\n')
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(value)))
		b.Write(n[:])
		b.WriteString(value)
		b.WriteByte('\n')
	}
	priority := "6" // info
	switch rec.Outcome {
	case audit.Failed, audit.Refused, audit.WrongPassword, audit.Backoff, audit.WriteFailed:
		priority = "4" // warning
	}
	field("MESSAGE", "audit: "+rec.String())
	field("PRIORITY", priority)
	field("SYSLOG_IDENTIFIER", "sealboxd")
	field("SEALBOX_STREAM", rec.Stream.String())
	field("SEALBOX_SEQ", strconv.FormatUint(rec.Seq, 10))
	field("SEALBOX_KEYED", strconv.FormatBool(rec.Keyed))
	field("SEALBOX_KIND", string(rec.Kind))
	field("SEALBOX_OUTCOME", string(rec.Outcome))
	field("SEALBOX_ACTOR", rec.Actor)
	field("SEALBOX_TARGET", rec.Target)
	field("SEALBOX_CLIENT", rec.Client)
	field("SEALBOX_DETAIL", rec.Detail)
	if rec.Peer != nil {
		field("SEALBOX_UID", strconv.FormatUint(uint64(rec.Peer.UID), 10))
		field("SEALBOX_GID", strconv.FormatUint(uint64(rec.Peer.GID), 10))
		field("SEALBOX_PID", strconv.FormatInt(int64(rec.Peer.PID), 10))
		field("SEALBOX_UNIT", rec.Peer.Unit)
	}
	if rec.Count > 0 {
		field("SEALBOX_COUNT", strconv.FormatInt(rec.Count, 10))
	}
	field("SEALBOX_TIME", rec.Time.UTC().Format(time.RFC3339Nano))
}
