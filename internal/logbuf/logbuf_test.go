package logbuf

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func TestFlushesOnTickFullAndClose(t *testing.T) {
	var out lockedBuf
	w := New(&out, 64, 20*time.Millisecond)
	w.Write([]byte("one\n"))
	if out.String() != "" {
		t.Fatal("written through at once")
	}
	deadline := time.Now().Add(10 * time.Second)
	for out.String() != "one\n" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if out.String() != "one\n" {
		t.Fatalf("not flushed by the ticker: %q", out.String())
	}
	w.Write(bytes.Repeat([]byte("x"), 100)) // larger than the buffer
	if len(out.String()) < 100 {
		t.Fatal("a full buffer was not written")
	}
	w.Write([]byte("last\n"))
	w.Close()
	if !bytes.HasSuffix([]byte(out.String()), []byte("last\n")) {
		t.Fatalf("Close did not flush: %q", out.String())
	}
}
