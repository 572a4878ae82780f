package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sealbox/sealbox/internal/memlock"
)

// connServer serves HTTP/1.1 on sealboxd's two sockets. It replaces
// net/http's server loop for two reasons. First, what passes through it
// stays in memory sealbox owns: a request is read into a buffer of the
// connection's own that is wiped after every request (net/http pools its
// read and write buffers across connections and never clears them, and an
// admin request carries passwords), and the master secret goes from its
// locked buffer straight to the socket in one writev, never through a Go
// buffer. Second, it decides per connection: a peer the handler refused is
// closed at once, and connections are capped per uid (see peerListener).
//
// It speaks what sealbox's clients need: HTTP/1.0 and 1.1 requests with
// Content-Length or chunked bodies, keep-alive, header and idle timeouts,
// and a cancelled request context when the peer hangs up during a long
// poll. Routing stays with the handler (gorilla/mux on the admin socket).
type connServer struct {
	handler        http.Handler
	log            func(msg string, args ...any)
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	writeTimeout   time.Duration
	maxHeaderBytes int
	maxBodyBytes   int64
	// closeAfter says whether a request's connection ends with it (the
	// admin socket: every request may carry a password).
	closeAfter bool
	// closeOnStatus, if set, ends the connection after an answer with this
	// status (the service socket: a refused peer).
	closeOnStatus int

	mu     sync.Mutex
	conns  map[*peerConn]bool // true while a request is in flight
	closed bool
	wg     sync.WaitGroup
}

var errServerClosed = http.ErrServerClosed

// Serve accepts connections until ln is closed.
func (s *connServer) Serve(ln *peerListener) error {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*peerConn]bool{}
	}
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return errServerClosed
			}
			return err
		}
		pc := c.(*peerConn)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			pc.Close()
			continue
		}
		s.conns[pc] = false
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(pc)
	}
}

// Shutdown closes idle connections at once and waits, until ctx ends, for
// those with a request in flight; then closes them too.
func (s *connServer) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	for c, busy := range s.conns {
		if !busy {
			c.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
}

func (s *connServer) setBusy(c *peerConn, busy bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed && !busy {
		return false
	}
	s.conns[c] = busy
	return true
}

// limitedReader caps what one request may read from the connection: its
// header and, once parsed, its body.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

var errTooLarge = errors.New("request too large")

// zeroReader reads zeros: feeding it through a bufio.Reader overwrites the
// reader's buffer.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

const (
	connBufSize = 4096
	// maxDrain is how much of a refused body is read before the
	// connection closes.
	maxDrain = 256 << 10
)

func (s *connServer) serveConn(c *peerConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	lim := &limitedReader{r: c}
	br := bufio.NewReaderSize(lim, connBufSize)
	// wipe overwrites br's buffer: what it held of a request (an admin
	// request's password) does not outlive the request.
	wipe := func() {
		br.Reset(zeroReader{})
		_, _ = br.Peek(connBufSize)
		br.Reset(lim)
	}
	defer wipe()
	ctx := context.WithValue(context.Background(), credKey{}, c.cred)
	for first := true; ; first = false {
		// Wait for the next request's first byte (idle), then its header.
		idle := s.idleTimeout
		if first {
			idle = s.headerTimeout
		}
		_ = c.SetReadDeadline(time.Now().Add(idle))
		lim.n = int64(s.maxHeaderBytes) + 1
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				return
			}
		}
		if !s.setBusy(c, true) {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(s.headerTimeout))
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, errTooLarge) {
				writeRaw(c, http.StatusRequestHeaderFieldsTooLarge, "request header too large")
			} else if !errors.Is(err, io.EOF) {
				writeRaw(c, http.StatusBadRequest, "malformed request")
			}
			return
		}
		keep := s.serveOne(ctx, c, br, lim, req)
		if s.closeAfter {
			keep = false
		}
		if !s.setBusy(c, false) || !keep {
			return
		}
	}
}

// serveOne runs the handler for req and reports whether the connection may
// carry another request.
func (s *connServer) serveOne(ctx context.Context, c *peerConn, br *bufio.Reader, lim *limitedReader, req *http.Request) bool {
	if req.ContentLength > s.maxBodyBytes {
		writeRaw(c, http.StatusRequestEntityTooLarge, "request body too large")
		// Read (and drop) some of what the peer is still sending, briefly,
		// so that it gets to read the answer instead of a broken pipe.
		lim.n = maxDrain
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.CopyN(io.Discard, br, min(req.ContentLength, maxDrain))
		return false
	}
	lim.n = s.maxBodyBytes + 1 // the body (chunked bodies are bounded here)
	_ = c.SetReadDeadline(time.Now().Add(s.headerTimeout + s.writeTimeout))
	_ = c.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req.RemoteAddr = "@"
	w := &connWriter{c: c, header: http.Header{}, proto11: req.ProtoAtLeast(1, 1), closeConn: s.closeAfter || req.Close}
	defer w.wipe()
	// A long poll watches the connection: a peer that hangs up cancels it.
	var watch sync.WaitGroup
	watching := req.URL.Query().Has("wait") && req.ContentLength == 0 && req.Header.Get("Transfer-Encoding") == ""
	if watching {
		watch.Add(1)
		go func() {
			defer watch.Done()
			if _, err := br.Peek(1); err != nil {
				cancel()
			}
		}()
	}
	s.handler.ServeHTTP(w, req.WithContext(rctx))
	if s.closeOnStatus != 0 && w.status == s.closeOnStatus {
		w.closeConn = true
	}
	keep := w.finish() == nil && !w.closeConn && !req.Close && w.proto11
	if watching {
		// Stop the watcher: a read deadline in the past ends its Peek.
		_ = c.SetReadDeadline(time.Unix(1, 0))
		watch.Wait()
		_ = c.SetReadDeadline(time.Time{})
		if br.Buffered() == 0 && rctx.Err() != nil {
			keep = false
		}
	}
	// What the handler did not read of the body is drained, within the
	// limit; a body too large to drain ends the connection.
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		keep = false
	}
	req.Body.Close()
	_ = c.SetWriteDeadline(time.Time{})
	return keep
}

// writeRaw answers a request that never reached a handler.
func writeRaw(c net.Conn, status int, msg string) {
	body := `{"error":"` + msg + `","code":"bad_request"}` + "\n"
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", status, http.StatusText(status), len(body), body)
}

// connWriter is the http.ResponseWriter of connServer. Small answers are
// buffered (in a buffer it wipes) and sent with a Content-Length;
// WriteSecret sends the header and the secret in one writev straight from
// the secret's locked buffer; an answer that outgrows maxBuffered is
// streamed and the connection closed after it.
type connWriter struct {
	c         *peerConn
	header    http.Header
	status    int
	buf       []byte
	streaming bool
	sent      bool
	closeConn bool
	proto11   bool
	err       error
}

const maxBuffered = 64 << 10

func (w *connWriter) Header() http.Header { return w.header }

func (w *connWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *connWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.err != nil {
		return 0, w.err
	}
	if !w.streaming && len(w.buf)+len(p) <= maxBuffered {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if !w.streaming {
		// Too much to buffer: send what there is without a length, and
		// end the connection after the body.
		w.streaming, w.closeConn = true, true
		w.header.Del("Content-Length")
		if w.err = w.send(-1, w.buf); w.err != nil {
			return 0, w.err
		}
		w.wipe()
	}
	n, err := w.c.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// WriteSecret sends a 200 answer whose body is secret, without copying the
// secret anywhere: the header is built first, then header and secret go out
// in one writev.
func (w *connWriter) WriteSecret(secret []byte) error {
	w.WriteHeader(http.StatusOK)
	w.err = w.send(len(secret), nil, secret)
	return w.err
}

// SetWriteDeadline lets http.ResponseController extend a long poll's write
// deadline.
func (w *connWriter) SetWriteDeadline(t time.Time) error { return w.c.SetWriteDeadline(t) }

// Flush sends what is buffered (http.Flusher).
func (w *connWriter) Flush() {}

func (w *connWriter) finish() error {
	if w.err != nil || w.sent {
		return w.err
	}
	w.WriteHeader(http.StatusOK)
	w.err = w.send(len(w.buf), w.buf)
	return w.err
}

// send writes the status line and headers, then bodies; n is the
// Content-Length (-1: none, the connection closes after the body).
func (w *connWriter) send(n int, bodies ...[]byte) error {
	w.sent = true
	hdr := make([]byte, 0, 256)
	hdr = append(hdr, "HTTP/1.1 "...)
	hdr = strconv.AppendInt(hdr, int64(w.status), 10)
	hdr = append(hdr, ' ')
	hdr = append(hdr, http.StatusText(w.status)...)
	hdr = append(hdr, "\r\n"...)
	keys := make([]string, 0, len(w.header))
	for k := range w.header {
		if k != "Content-Length" && k != "Connection" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range w.header[k] {
			hdr = append(hdr, k...)
			hdr = append(hdr, ": "...)
			hdr = append(hdr, v...)
			hdr = append(hdr, "\r\n"...)
		}
	}
	if n >= 0 {
		hdr = append(hdr, "Content-Length: "...)
		hdr = strconv.AppendInt(hdr, int64(n), 10)
		hdr = append(hdr, "\r\n"...)
	}
	if n < 0 || w.closeConn || !w.proto11 {
		hdr = append(hdr, "Connection: close\r\n"...)
		w.closeConn = true
	}
	hdr = append(hdr, "\r\n"...)
	bufs := net.Buffers{hdr}
	for _, b := range bodies {
		if len(b) > 0 {
			bufs = append(bufs, b)
		}
	}
	_, err := bufs.WriteTo(w.c.UnixConn)
	return err
}

func (w *connWriter) wipe() {
	memlock.Wipe(w.buf[:cap(w.buf)])
	w.buf = w.buf[:0]
}
