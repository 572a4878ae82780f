package daemon

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// parse runs parseGET on raw as the connection would have it buffered.
func parse(raw string) (*http.Request, bool, int) {
	br := bufio.NewReaderSize(strings.NewReader(raw), connBufSize)
	br.Peek(1) // what the connection has read
	var req http.Request
	var u url.URL
	ok := parseGET(br, maxHeaderBytes, &req, &u)
	return &req, ok, br.Buffered()
}

func TestParseGETTakesPlainReadsOnly(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		raw         string
		ok          bool
		path, query string
		close       bool
		left        int // bytes left buffered after a taken request
	}{
		{raw: "GET /v1/secret HTTP/1.1\r\nHost: sealbox\r\n\r\n", ok: true, path: "/v1/secret"},
		{raw: "GET /v1/status?wait=5s HTTP/1.1\r\nHost: x\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n", ok: true, path: "/v1/status", query: "wait=5s"},
		{raw: "GET /v1/secret HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n", ok: true, path: "/v1/secret", close: true},
		{raw: "GET /v1/secret HTTP/1.0\r\n\r\n", ok: true, path: "/v1/secret", close: true},
		{raw: "GET /v1/secret HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", ok: true, path: "/v1/secret"},
		{raw: "GET /v1/secret HTTP/1.1\r\nContent-Length: 0\r\n\r\n", ok: true, path: "/v1/secret"},
		{raw: "GET /v1/secret HTTP/1.1\r\n\r\nGET /v1/status HTTP/1.1\r\n\r\n", ok: true, path: "/v1/secret", left: 27}, // pipelined
		{raw: "GET /other HTTP/1.1\r\n\r\n", ok: true, path: "/other"},
		// Left to net/http: nothing consumed.
		{raw: "POST /v1/secret HTTP/1.1\r\n\r\n"},
		{raw: "GET /v1/secret HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"},
		{raw: "GET /v1/secret HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{raw: "GET /v1/secret HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"},
		{raw: "GET /v1/%73ecret HTTP/1.1\r\n\r\n"},
		{raw: "GET /v1/secret#frag HTTP/1.1\r\n\r\n"},
		{raw: "GET http://sealbox/v1/secret HTTP/1.1\r\n\r\n"},
		{raw: "GET /v1/secret HTTP/2.0\r\n\r\n"},
		{raw: "GET /v1/secret  HTTP/1.1\r\n\r\n"},
		{raw: "GET /v1/secret HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"}, // bare LF
		{raw: "GET /v1/secret HTTP/1.1\r\nX: a\r\n folded\r\n\r\n"},
		{raw: "GET /v1/secret HTTP/1.1\r\nBad Name: a\r\n\r\n"},
		{raw: "GET /v1/secret HTTP/1.1\r\nNoColon\r\n\r\n"},
		{raw: "GET /v1/secret HTTP/1.1\r\nHost: sealbox\r\n"}, // header not complete yet
		{raw: "GET /v1/secret\x00 HTTP/1.1\r\n\r\n"},
	} {
		req, ok, left := parse(c.raw)
		if ok != c.ok {
			t.Errorf("%q: taken %v, want %v", c.raw, ok, c.ok)
			continue
		}
		if !ok {
			if left != len(c.raw) {
				t.Errorf("%q: refused but consumed %d bytes", c.raw, len(c.raw)-left)
			}
			continue
		}
		if req.Method != "GET" || req.URL.Path != c.path || req.URL.RawQuery != c.query || req.Close != c.close || left != c.left || req.Body != http.NoBody {
			t.Errorf("%q: got %s %q %q close=%v left=%d", c.raw, req.Method, req.URL.Path, req.URL.RawQuery, req.Close, left)
		}
	}
}

// FuzzParseGET: whatever parseGET takes, net/http reads the same way
// (method, path, query, protocol, whether the connection closes, where the
// next request starts). parseGET is a shortcut, never a second dialect.
func FuzzParseGET(f *testing.F) {
	for _, s := range []string{
		"GET /v1/secret HTTP/1.1\r\nHost: sealbox\r\n\r\n",
		"GET /v1/status?wait=5s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET /v1/secret HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"GET /a?b=c&d HTTP/1.1\r\nX-A: 1\r\nx-b:\t2 \r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(raw), connBufSize)
		br.Peek(len(raw))
		var req http.Request
		var u url.URL
		if !parseGET(br, maxHeaderBytes, &req, &u) {
			if br.Buffered() != min(len(raw), connBufSize) {
				t.Fatalf("refused %q but consumed some of it", raw)
			}
			return
		}
		left := br.Buffered()
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatalf("took %q, which net/http refuses: %v", raw, err)
		}
		rest := len(raw) - left
		if want.Method != req.Method || want.URL.Path != req.URL.Path || want.URL.RawQuery != req.URL.RawQuery ||
			want.Proto != req.Proto || want.Close != req.Close || want.ContentLength != 0 {
			t.Fatalf("%q: parseGET %s %q %q %s close=%v; net/http %s %q %q %s close=%v length=%d", raw,
				req.Method, req.URL.Path, req.URL.RawQuery, req.Proto, req.Close,
				want.Method, want.URL.Path, want.URL.RawQuery, want.Proto, want.Close, want.ContentLength)
		}
		// net/http must end the header where parseGET did.
		br2 := bufio.NewReader(bytes.NewReader(raw))
		http.ReadRequest(br2)
		if br2.Buffered() != len(raw)-rest {
			t.Fatalf("%q: header ends at %d for parseGET, %d for net/http", raw, rest, len(raw)-br2.Buffered())
		}
	})
}
