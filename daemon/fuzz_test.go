package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
)

// fuzzRequest builds a request the way the server would hand it to the
// router, with the peer credentials of this process attached.
func fuzzRequest(method, target string, body []byte) *http.Request {
	if !strings.HasPrefix(target, "/") {
		target = "/" + target
	}
	u := &url.URL{Path: target}
	if i := strings.IndexByte(target, '?'); i >= 0 {
		u.Path, u.RawQuery = target[:i], target[i+1:]
	}
	r := httptest.NewRequest(http.MethodGet, "/", strings.NewReader(string(body)))
	r.Method, r.URL, r.RequestURI = method, u, u.RequestURI()
	cred := PeerCred{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: 1}
	return r.WithContext(context.WithValue(r.Context(), credKey{}, cred))
}

// FuzzAdminAPI sends arbitrary methods, paths and bodies to the admin API.
// Nothing may panic, and with a sound keyring nothing is a 500: bad input is
// always the caller's error.
func FuzzAdminAPI(f *testing.F) {
	d, _, _ := startDaemonTB(f, nil)
	h := d.adminRouter()
	f.Add("POST", "/v1/unseal", []byte(`{"admin":"alice","password":"eHh4"}`))
	f.Add("POST", "/v1/admins", []byte(`{"actor":"alice","actor_password":"eA==","name":"bob","password":"eA=="}`))
	f.Add("POST", "/v1/clients/me/disable", []byte(`{"actor":"alice","actor_password":"eA=="}`))
	f.Add("POST", "/v1/admins/%00/remove", []byte(`{}`))
	f.Add("GET", "/v1/audit?since=yesterday&limit=-1", []byte(nil))
	f.Add("POST", "/v1/rotate", []byte(`{"actor":"alice","actor_password":"eA==","secret":"AAAA"}`))
	f.Add("PUT", "/v1/../../etc/passwd", []byte(`[`))
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		if method == "" || strings.ContainsAny(method, " \r\n") {
			return
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, fuzzRequest(method, target, body))
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %q %q: %d %s", method, target, body, w.Code, w.Body.String())
		}
	})
}

// FuzzServiceAPI sends arbitrary methods, paths and queries to the service
// API as a registered client: only the documented answers may come back.
func FuzzServiceAPI(f *testing.F) {
	d, _, _ := startDaemonTB(f, nil)
	h := d.serviceRouter()
	f.Add("GET", "/v1/secret?wait=1ms")
	f.Add("GET", "/v1/status?wait=-5s")
	f.Add("POST", "/v1/secret")
	f.Add("GET", "/v1/secret?wait=99999999h")
	f.Fuzz(func(t *testing.T, method, target string) {
		if method == "" || strings.ContainsAny(method, " \r\n") {
			return
		}
		w := httptest.NewRecorder()
		r := fuzzRequest(method, target, nil)
		// An expired context: a long ?wait= returns at once instead of
		// slowing the fuzzer down.
		ctx, cancel := context.WithTimeout(r.Context(), 0)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
		switch w.Code {
		case 200, 400, 403, 404, 405, 503:
		default:
			t.Fatalf("%s %q: %d %s", method, target, w.Code, w.Body.String())
		}
	})
}
