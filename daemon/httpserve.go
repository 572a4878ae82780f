package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
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
	// fastGET parses a plain GET without net/http (parseGET): the service
	// socket's reads.
	fastGET bool

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
	w := &connWriter{c: c, header: http.Header{}}
	var fast http.Request // the fast path's request and URL, reused
	var fastURL url.URL
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
		req := &fast
		if !s.fastGET || !parseGET(br, s.maxHeaderBytes, req, &fastURL) {
			_ = c.SetReadDeadline(time.Now().Add(s.headerTimeout))
			var err error
			if req, err = http.ReadRequest(br); err != nil {
				if errors.Is(err, errTooLarge) {
					writeRaw(c, http.StatusRequestHeaderFieldsTooLarge, "request header too large")
				} else if !errors.Is(err, io.EOF) {
					writeRaw(c, http.StatusBadRequest, "malformed request")
				}
				return
			}
		}
		keep := s.serveOne(ctx, c, br, lim, req, w)
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
func (s *connServer) serveOne(ctx context.Context, c *peerConn, br *bufio.Reader, lim *limitedReader, req *http.Request, w *connWriter) bool {
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
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		_ = c.SetReadDeadline(time.Now().Add(s.headerTimeout + s.writeTimeout))
	}
	_ = c.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	req.RemoteAddr = "@"
	w.reset(req.ProtoAtLeast(1, 1), s.closeAfter || req.Close)
	defer w.wipe()
	// A long poll, or an audit stream, watches the connection: a peer that
	// hangs up cancels it.
	var watch sync.WaitGroup
	watching := req.URL.RawQuery != "" && hasAny(req.URL.RawQuery, "wait", "follow") && req.ContentLength == 0 && req.Header.Get("Transfer-Encoding") == ""
	// The request's context carries the peer's credentials and, for a long
	// poll, the hang-up. A service read without one needs neither: its
	// handler takes the peer from the writer (peerOf), and the request is
	// not copied.
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if watching || s.closeAfter {
		rctx, cancel = context.WithCancel(ctx)
		defer cancel()
		req = req.WithContext(rctx)
	}
	if watching {
		// The watcher waits as long as the poll does: no read deadline
		// until it is stopped.
		_ = c.SetReadDeadline(time.Time{})
		watch.Add(1)
		go func() {
			defer watch.Done()
			if _, err := br.Peek(1); err != nil {
				cancel()
			}
		}()
	}
	s.handler.ServeHTTP(w, req)
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
	return keep
}

// parseGET parses the next request from br if it is a plain GET whose whole
// header is already buffered: "GET /path[?query] HTTP/1.x", then header
// lines of which only Connection matters; no body, no percent-escapes.
// Anything else (another method, a Content-Length other than 0, a
// Transfer-Encoding or Expect header, an escaped or unusual target, a header
// split across reads, a bare LF, a folded line) returns false with nothing
// consumed, for http.ReadRequest to parse. On success it fills req and u,
// which the connection reuses, and consumes the header.
func parseGET(br *bufio.Reader, maxHeader int, req *http.Request, u *url.URL) bool {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 || end+4 > maxHeader {
		return false
	}
	line, rest, _ := bytes.Cut(buf[:end+2], crlf)
	target, ok := bytes.CutPrefix(line, []byte("GET "))
	if !ok {
		return false
	}
	sp := bytes.IndexByte(target, ' ')
	if sp < 1 || target[0] != '/' {
		return false
	}
	proto := target[sp+1:]
	target = target[:sp]
	var minor int
	switch string(proto) {
	case "HTTP/1.1":
		minor = 1
	case "HTTP/1.0":
	default:
		return false
	}
	protos := [2]string{"HTTP/1.0", "HTTP/1.1"}
	for _, b := range target {
		if b <= ' ' || b >= 0x7f || b == '%' || b == '#' {
			return false
		}
	}
	closeConn, keepAlive := false, false
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, crlf)
		colon := bytes.IndexByte(h, ':')
		if colon < 1 || bytes.IndexByte(h, '\n') >= 0 || bytes.IndexByte(h, '\r') >= 0 {
			return false
		}
		name, value := h[:colon], bytes.Trim(h[colon+1:], " \t")
		for _, b := range name {
			if !isTokenByte(b) {
				return false
			}
		}
		for _, b := range value {
			if b < ' ' && b != '\t' || b == 0x7f {
				return false
			}
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if string(value) != "0" {
				return false
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")), bytes.EqualFold(name, []byte("Expect")):
			return false
		case bytes.EqualFold(name, []byte("Connection")):
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.Trim(tok, " \t")
				closeConn = closeConn || bytes.EqualFold(tok, []byte("close"))
				keepAlive = keepAlive || bytes.EqualFold(tok, []byte("keep-alive"))
			}
		}
	}
	path, query, _ := bytes.Cut(target, []byte("?"))
	*u = url.URL{Path: internPath(path)}
	if len(query) > 0 {
		u.RawQuery = string(query)
	}
	*req = http.Request{Method: http.MethodGet, URL: u, Proto: protos[minor], ProtoMajor: 1, ProtoMinor: minor,
		Body: http.NoBody, Close: closeConn || (minor == 0 && !keepAlive), RequestURI: internPath(target)}
	_, _ = br.Discard(end + 4)
	return true
}

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
)

// internPath returns the service's paths without allocating.
func internPath(p []byte) string {
	switch string(p) {
	case "/v1/secret":
		return "/v1/secret"
	case "/v1/status":
		return "/v1/status"
	}
	return string(p)
}

// isTokenByte reports whether b may appear in a header name (RFC 9110 token).
func isTokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

// writeRaw answers a request that never reached a handler.
func writeRaw(c net.Conn, status int, msg string) {
	body := `{"error":"` + msg + `","code":"invalid"}` + "\n"
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
	// Reused from request to request: the header being built, its sorted
	// keys, and the writev list.
	hdr  []byte
	keys []string
	bufs net.Buffers
}

const maxBuffered = 64 << 10

func (w *connWriter) Header() http.Header { return w.header }

// reset readies the connection's writer for its next request.
func (w *connWriter) reset(proto11, closeConn bool) {
	clear(w.header)
	w.status, w.buf = 0, w.buf[:0]
	w.streaming, w.sent, w.err = false, false, nil
	w.proto11, w.closeConn = proto11, closeConn
}

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

// Flush sends what is buffered (http.Flusher): the first call sends the
// header without a length (the connection ends after the body), and every
// later Write goes straight to the socket. The audit stream uses it.
func (w *connWriter) Flush() {
	w.WriteHeader(http.StatusOK)
	if w.err != nil || w.streaming {
		return
	}
	w.streaming, w.closeConn = true, true
	w.header.Del("Content-Length")
	w.err = w.send(-1, w.buf)
	w.wipe()
}

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
	hdr := append(w.hdr[:0], "HTTP/1.1 "...)
	hdr = strconv.AppendInt(hdr, int64(w.status), 10)
	hdr = append(hdr, ' ')
	hdr = append(hdr, http.StatusText(w.status)...)
	hdr = append(hdr, "\r\n"...)
	keys := w.keys[:0]
	for k := range w.header {
		if k != "Content-Length" && k != "Connection" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
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
	w.hdr, w.keys = hdr, keys
	bufs := append(w.bufs[:0], hdr)
	for _, b := range bodies {
		if len(b) > 0 {
			bufs = append(bufs, b)
		}
	}
	w.bufs = bufs
	_, err := bufs.WriteTo(w.c.UnixConn)
	clear(w.bufs[:cap(w.bufs)]) // drop the references to what was sent
	return err
}

func (w *connWriter) wipe() {
	memlock.Wipe(w.buf[:cap(w.buf)])
	w.buf = w.buf[:0]
}

// hasAny reports whether a raw query names one of the keys (parsed once:
// the service socket's reads come through here).
func hasAny(rawQuery string, keys ...string) bool {
	q, _ := url.ParseQuery(rawQuery)
	for _, k := range keys {
		if q.Has(k) {
			return true
		}
	}
	return false
}
