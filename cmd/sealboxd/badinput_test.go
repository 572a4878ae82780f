package main

// Hostile input: malformed requests, bad flags, files and paths.

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/keyring"
)

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Register the test's own uid so the service socket answers it.
	uid := strconv.Itoa(os.Geteuid())
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "tester", "--uid", uid, "--as", "alice")
	e.start(nil)
	svc, adm := unixClient(e.sock), unixClient(e.admSock)
	cases := []struct {
		name   string
		c      *http.Client
		method string
		path   string
		body   string
		want   int
	}{
		{"unknown path", svc, "GET", "/v1/nope", "", 404},
		{"post to secret", svc, "POST", "/v1/secret", "x", 405},
		{"bad wait", svc, "GET", "/v1/secret?wait=soon", "", 400},
		{"negative wait", svc, "GET", "/v1/secret?wait=-1s", "", 400},
		{"sealed", svc, "GET", "/v1/secret", "", 503},
		{"admin op on service socket", svc, "POST", "/v1/unseal", `{}`, 404},
		{"malformed json", adm, "POST", "/v1/unseal", `{"admin":`, 400},
		{"unknown field", adm, "POST", "/v1/unseal", `{"admin":"alice","pwd":"x"}`, 400},
		{"trailing data", adm, "POST", "/v1/unseal", `{"admin":"alice"} {}`, 400},
		{"oversized body", adm, "POST", "/v1/unseal", `{"admin":"` + strings.Repeat("a", 20<<10) + `"}`, 413},
		{"unknown admin", adm, "POST", "/v1/unseal", `{"admin":"zed","password":"` + "eHh4eHh4eHh4eHh4" + `"}`, 401},
		{"nul in name", adm, "POST", "/v1/admins/a%00b/remove", `{"actor":"alice","actor_password":"eA=="}`, 401},
		{"client without uid", adm, "POST", "/v1/clients", `{"actor":"alice","actor_password":"eA==","name":"x"}`, 400},
		{"bad action", adm, "POST", "/v1/clients/tester/explode", `{}`, 404},
		{"GET on a change", adm, "GET", "/v1/unseal", "", 405},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, "http://sealbox"+c.path, strings.NewReader(c.body))
		resp, err := c.c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, body, c.want)
		}
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 && ct != "application/json" {
			t.Errorf("%s: error answer of type %q", c.name, ct)
		}
	}
	// Nothing above changed the keyring or the state.
	if st := e.online(7, "", "status", "--json").out; !strings.Contains(st, `"sealed": true`) || !strings.Contains(st, `"admins": 2`) {
		t.Fatalf("state after bad requests: %s", st)
	}
}

// TestHostileInputs is the catalogue: every hostile input gets a clear
// error, the right exit code, and no change to the keyring.
func TestHostileInputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	link := filepath.Join(e.dir, "link.db")
	os.Symlink(e.keyring, link)
	truncated := filepath.Join(e.dir, "truncated.db")
	raw, _ := os.ReadFile(e.keyring)
	os.WriteFile(truncated, raw[:len(raw)/3], 0o600)
	future := filepath.Join(e.dir, "future.db")
	os.WriteFile(future, raw, 0o600)
	if kr, err := keyring.Open(future, keyring.Options{}); err == nil {
		kr.Close()
	}
	setFormat(t, future, 9)
	writable := filepath.Join(e.dir, "writable.db")
	os.WriteFile(writable, raw, 0o600)
	os.Chmod(writable, 0o666)
	foreign := filepath.Join(e.dir, "foreign.db")
	os.WriteFile(foreign, raw, 0o600)
	os.Chown(foreign, nobody, nobody)
	sockLink := filepath.Join(e.dir, "sock-link")
	os.Symlink("/etc/passwd", sockLink)
	other := func(n string) []string {
		return []string{"--socket", filepath.Join(e.dir, n+".sock"), "--admin-socket", filepath.Join(e.dir, n+".adm")}
	}
	daemonCases := []struct {
		name string
		args []string
		want string
	}{
		{"symlinked keyring", append([]string{"--keyring", link}, other("a")...), "symlinks are refused"},
		{"truncated keyring", append([]string{"--keyring", truncated}, other("b")...), "truncated"},
		{"future format", append([]string{"--keyring", future}, other("c")...), "format 9"},
		{"keyring others may write", append([]string{"--keyring", writable}, other("d")...), "others may write"},
		{"keyring of another user", append([]string{"--keyring", foreign}, other("e")...), "belongs to uid"},
		{"a directory as keyring", append([]string{"--keyring", e.dir}, other("f")...), "not a regular file"},
		{"symlink where the socket goes", []string{"--keyring", e.keyring, "--socket", sockLink, "--admin-socket", filepath.Join(e.dir, "g.adm")}, "not a socket"},
		{"socket path too long", []string{"--keyring", e.keyring, "--socket", "/" + strings.Repeat("s", 200), "--admin-socket", filepath.Join(e.dir, "h.adm")}, "Unix sockets allow 107"},
		{"unknown config key", []string{"--config", writeFile(t, e.dir, "bad.toml", "keyrnig = \"/x\"\n")}, "unknown keys keyrnig"},
		{"stray argument", []string{"extra"}, "unexpected argument"},
	}
	for _, c := range daemonCases {
		r := runCmd(t, "", daemonBin, c.args...)
		if r.code == 0 || !strings.Contains(r.out, c.want) {
			t.Errorf("sealboxd, %s: exit %d, want an error containing %q:\n%s", c.name, r.code, c.want, r.out)
		}
	}

	// The CLI.
	kr := []string{"--keyring", e.keyring}
	cliCases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"huge admin name", pwAlice + "\n" + pwBob + "\n", append(kr, "add", strings.Repeat("a", 65<<10), "--as", "alice"), 2, "limit is 64"},
		{"upper-case name", pwAlice + "\n", append(kr, "client", "add", "Web", "--uid", "1", "--as", "alice"), 2, "lowercase"},
		{"path trick as a name", pwAlice + "\n", append(kr, "remove", "../alice", "--as", "alice"), 2, "lowercase"},
		{"negative uid", pwAlice + "\n", append(kr, "client", "add", "web", "--uid", "-5", "--as", "alice"), 2, "--uid"},
		{"uid too large", pwAlice + "\n", append(kr, "client", "add", "web", "--uid", "99999999999", "--as", "alice"), 2, "--uid"},
		{"password line too long", strings.Repeat("p", 10000) + "\n", append(kr, "check", "--as", "alice"), 1, "longer than"},
		{"no password at all", "", append(kr, "passwd", "alice"), 1, "no password on standard input"},
		{"secret file is a directory", pwAlice + "\n", append(kr, "rotate", "--as", "alice", "--secret-file", e.dir), 1, "secret file"},
		{"backup over the keyring", "", append(kr, "backup", "--to", e.keyring), 4, "exists"},
		{"bad duration", pwAlice + "\n", append(kr, "invite", "bob2", "--as", "alice", "--expires", "forever"), 2, "--expires"},
		{"enroll with a garbage code", "not a code\n" + pwBob + "\n", append(kr, "enroll", "nobody"), 3, "no valid invite"},
	}
	for _, c := range cliCases {
		r := runCmd(t, c.stdin, adminBin, c.args...)
		if r.code != c.code || !strings.Contains(r.out, c.want) {
			t.Errorf("sealbox-admin, %s: exit %d (want %d), want %q:\n%s", c.name, r.code, c.code, c.want, r.out[:min(len(r.out), 400)])
		}
	}
	// Only the audit log and failure counters may have changed: the admins,
	// clients and secret did not.
	if got := e.admin(0, "", "--keyring", e.keyring, "list", "--json").out; strings.Count(got, `"name"`) != 2 {
		t.Errorf("admins changed:\n%s", got)
	}

	// Both sockets, with the daemon running.
	e.start(nil)
	for _, sock := range []string{e.sock, e.admSock} {
		// Slowloris: half a request, then silence. The server hangs up
		// after its header timeout; others are served meanwhile.
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: "))
		e.online(7, "", "status")
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%s: a half-sent request was not hung up on: %v", sock, err)
		}
		c.Close()
		// Headers far over the limit.
		c, _ = net.Dial("unix", sock)
		c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 64<<10) + "\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, _ := io.ReadAll(c)
		if !bytes.Contains(resp, []byte("431")) && !bytes.Contains(resp, []byte("400")) {
			t.Errorf("%s: oversized headers: %q", sock, resp[:min(len(resp), 80)])
		}
		c.Close()
	}
	adm := unixClient(e.admSock)
	for name, body := range map[string]string{
		"NUL in a name":       `{"actor":"alice","actor_password":"eA==","name":"a\u0000b","password":"eA=="}`,
		"a name of 100k":      `{"actor":"alice","actor_password":"eA==","name":"` + strings.Repeat("n", 100<<10) + `","password":"eA=="}`,
		"password not base64": `{"actor":"alice","actor_password":"%%%","name":"zz","password":"eA=="}`,
		"wrong types":         `{"actor":1,"name":["x"]}`,
		"deep nesting":        strings.Repeat("[", 10000),
	} {
		resp, err := adm.Post("http://sealbox/v1/admins", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := 400
		if len(body) > 16<<10 {
			want = 413 // refused before any handler sees it
		}
		if resp.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", name, resp.StatusCode, b, want)
		}
	}
	e.stop(syscall.SIGTERM)
	if got := e.admin(0, "", "--keyring", e.keyring, "list", "--json").out; strings.Count(got, `"name"`) != 2 {
		t.Errorf("admins changed after the socket cases:\n%s", got)
	}
}
