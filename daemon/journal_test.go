package daemon

import (
	"bytes"
	"encoding/binary"
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
