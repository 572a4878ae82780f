package daemon

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/keyring"
)

func TestJournalEntryEncoding(t *testing.T) {
	t.Parallel()
	rec := &audit.Record{Stream: keyring.Events, Seq: 42, Keyed: true, Event: audit.Event{
		Time: time.Unix(0, 0), Kind: audit.KindUnseal, Actor: "alice", Outcome: audit.WrongPassword,
		Detail: "line one\nline two", Peer: &audit.Peer{UID: 33, GID: 33, PID: 7, Unit: "web.service"},
	}}
	var b bytes.Buffer
	appendJournalEntry(&b, rec)
	out := b.String()
	for _, want := range []string{"PRIORITY=4\n", "SEALBOX_SEQ=42\n", "SEALBOX_KIND=unseal\n", "SEALBOX_ACTOR=alice\n", "SEALBOX_OUTCOME=wrong_password\n", "SEALBOX_UID=33\n", "SEALBOX_UNIT=web.service\n", "SEALBOX_STREAM=events\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("entry lacks %q:\n%s", want, out)
		}
	}
	// A value with a newline: the name, a newline, its length (64-bit
	// little endian), the bytes, a newline.
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len("line one\nline two")))
	if !bytes.Contains(b.Bytes(), append(append([]byte("SEALBOX_DETAIL\n"), n[:]...), "line one\nline two\n"...)) {
		t.Errorf("the multi-line value is not in the binary form:\n%q", out)
	}
	// Empty fields are left out.
	if strings.Contains(out, "SEALBOX_TARGET") || strings.Contains(out, "SEALBOX_CLIENT") {
		t.Errorf("empty fields sent:\n%s", out)
	}
}

// TestJournalThatDoesNotReadCostsOneWait: a journald that takes nothing
// (its socket's queue full) costs the audit writer one short wait per
// batch, however many records the batch holds; the loss is counted.
func TestJournalThatDoesNotReadCostsOneWait(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "journal.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // never read
	j, err := openJournal(sock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	recs := make([]audit.Record, 2000)
	for i := range recs {
		recs[i] = audit.Record{Stream: keyring.Reads, Seq: uint64(i + 1), Event: audit.Event{Kind: audit.KindRead, Outcome: audit.Served, Client: "svc", Detail: strings.Repeat("x", 200)}}
	}
	start := time.Now()
	j.send(recs) // fills the queue, then waits once
	j.send(recs) // the queue is full: one wait, all lost
	if d := time.Since(start); d > 20*journalWait {
		t.Fatalf("two batches into a stalled journal took %v", d)
	}
	if j.dropped < int64(len(recs)) {
		t.Fatalf("dropped %d, want at least %d", j.dropped, len(recs))
	}
}
