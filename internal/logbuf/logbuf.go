// Package logbuf buffers a log stream so that a busy daemon does not pay a
// write system call per line: lines are flushed every interval, when the
// buffer fills, and on Close. A crash loses at most one interval of lines;
// sealbox's audit log, not this stream, is the record that must survive.
package logbuf

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Writer is a buffered, periodically flushed, concurrency-safe writer.
type Writer struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// New buffers w (size bytes), flushing every interval.
func New(w io.Writer, size int, interval time.Duration) *Writer {
	b := &Writer{w: bufio.NewWriterSize(w, size), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				b.Flush()
			case <-b.stop:
				return
			}
		}
	}()
	return b
}

// Write buffers p (one log line, as slog writes them).
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

// Flush writes out what is buffered.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

// Close stops the flusher and flushes.
func (b *Writer) Close() error {
	close(b.stop)
	<-b.done
	return b.Flush()
}
