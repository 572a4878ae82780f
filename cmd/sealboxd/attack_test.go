package main

// Attacks on the surfaces added last (the online check, audit following,
// the journal copy, export-secret, unlock and policy set) by someone who did
// not write them: each test fails if its attack works.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// forgedLine is what a stranger puts in the path of a refused read: a
// newline, then a line that looks like an admin change, then a terminal
// escape that clears the screen of whoever reads the log.
const forgedLine = "%0a%20%20%204242%202026-12-06T06:00:00Z%20admin.add%20%20%20%20%20%20%20ok%20actor=alice%20target=mallory%1b[2J"

// strangerGets runs curl as uid stranger for each path, on the service socket.
func strangerGets(t *testing.T, e *env, paths []string) {
	t.Helper()
	script := "for p in \"$@\"; do curl -s -g -o /dev/null --path-as-is --unix-socket " + e.sock + " \"http://sealbox$p\"; done"
	args := append([]string{"--reuid", strconv.Itoa(stranger), "--regid", strconv.Itoa(stranger), "--clear-groups", "sh", "-c", script, "sh"}, paths...)
	if out, err := exec.Command("setpriv", args...).CombinedOutput(); err != nil {
		t.Fatalf("the stranger's curl: %v\n%s", err, out)
	}
}

// TestRefusedPathCannotForgeOrFloodTheAudit: a local user who is no client
// chooses the path of its refused reads. The path must not reach the audit
// log's text (a forged line, a terminal escape), the journal copy, or defeat
// the aggregation of refusals (one record per peer per window, not one per
// distinct path).
func TestRefusedPathCannotForgeOrFloodTheAudit(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	sock := filepath.Join(e.dir, "journal.sock")
	jconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer jconn.Close()
	e.start(nil, "--config", writeFile(t, e.dir, "journal.toml", "audit_journal = \""+sock+"\"\n"))
	var paths []string
	for i := 0; i < 40; i++ {
		paths = append(paths, fmt.Sprintf("/v1/secret-%d%s", i, forgedLine))
	}
	strangerGets(t, e, paths)
	// The refusals are aggregated per window: flush them now.
	e.online(0, "", "seal")
	text := e.online(0, "", "audit", "--reads").out
	if strings.ContainsRune(text, 0x1b) {
		t.Errorf("a stranger's terminal escape reached `audit --reads`:\n%q", text)
	}
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if strings.Contains(l, "4242 2026-12-06T06:00:00Z admin.add") && strings.HasPrefix(strings.TrimLeft(l, " "), "4242") {
			t.Errorf("a stranger forged an audit line:\n%s", text)
			break
		}
	}
	var recs []struct {
		Event struct {
			Count int64
			Peer  *struct{ UID uint32 }
		}
	}
	if err := json.Unmarshal([]byte(e.online(0, "", "audit", "--reads", "--json").out), &recs); err != nil {
		t.Fatal(err)
	}
	n, counted := 0, int64(0)
	for _, r := range recs {
		if r.Event.Peer != nil && r.Event.Peer.UID == stranger {
			n++
			counted += max(r.Event.Count, 1)
		}
	}
	if counted != int64(len(paths)) {
		t.Errorf("%d of %d refusals accounted for", counted, len(paths))
	}
	if n > 2 {
		t.Errorf("%d refused reads with distinct paths took %d records: a stranger defeats the aggregation by varying the path", len(paths), n)
	}
	// The journal copy has neither the escape nor the forged line.
	buf := make([]byte, 64<<10)
	var all strings.Builder
	for {
		jconn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		k, err := jconn.Read(buf)
		if err != nil {
			break
		}
		all.Write(buf[:k])
	}
	if j := all.String(); !strings.Contains(j, "SEALBOX_UID="+strconv.Itoa(stranger)) {
		t.Errorf("the refusals are not in the journal:\n%q", j)
	} else if strings.ContainsRune(j, 0x1b) || strings.Contains(j, "target=mallory") {
		t.Errorf("a stranger's path reached the journal:\n%q", j)
	}
}

// TestBackupReachesFollowersAndJournal: a backup through the daemon is
// recorded (audit.backup); a follower and the journal copy must hear of it
// when it is committed, not whenever some later record happens to be
// written. On an idle daemon, "later" was never: someone with the admin
// socket could copy the keyring with no follower or journal reader told.
func TestBackupReachesFollowersAndJournal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sock := filepath.Join(e.dir, "journal.sock")
	jconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer jconn.Close()
	e.start(nil, "--config", writeFile(t, e.dir, "journal.toml", "audit_journal = \""+sock+"\"\n"))
	f := e.follow("--jsonl")
	f.waitFor(t, `"kind":"admin.add"`) // the stored records are out: following
	e.online(0, "", "backup", "--to", filepath.Join(e.dir, "copy.db"))
	// Nothing else happens on this daemon from here on.
	buf := make([]byte, 64<<10)
	journalHas := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !journalHas; {
		jconn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := jconn.Read(buf); err == nil && strings.Contains(string(buf[:n]), "SEALBOX_KIND=backup\n") {
			journalHas = true
		}
	}
	if !journalHas {
		t.Error("the backup's record never reached the journal")
	}
	f.waitFor(t, `"kind":"backup"`)
}

// TestExportSecretOutputSwappedDuringTheExport: a careless admin exports
// into a directory someone else can write. While the password is derived,
// that someone moves the freshly created (empty) output file aside and puts
// a file of their own under its name. The export must not then report
// success with the attacker's bytes at --out (an admin restoring from it
// would use a key of the attacker's choosing), nor leave the secret in the
// file that was moved.
func TestExportSecretOutputSwappedDuringTheExport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	backup := filepath.Join(e.dir, "backup.db")
	e.admin(0, "", "--keyring", e.keyring, "backup", "--to", backup)
	shared := filepath.Join(e.dir, "shared")
	os.Mkdir(shared, 0o777)
	out := filepath.Join(shared, "secret.out")
	aside := filepath.Join(shared, "moved")
	attackerKey := []byte("attacker-chosen key")
	swapped := make(chan error, 1)
	go func() {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			if _, err := os.Lstat(out); err == nil {
				if err := os.Rename(out, aside); err != nil {
					swapped <- err
					return
				}
				swapped <- os.WriteFile(out, attackerKey, 0o644)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
		swapped <- fmt.Errorf("the output file never appeared")
	}()
	r := runCmd(t, pwAlice+"\n", adminBin, "--keyring", backup, "export-secret", "--as", "alice", "--out", out)
	if err := <-swapped; err != nil {
		t.Fatalf("the swap: %v", err)
	}
	got, _ := os.ReadFile(out)
	if r.code == 0 && !bytes.Equal(got, masterSecret) {
		t.Errorf("export-secret said it wrote the secret to %s, which holds %q (the attacker's file):\n%s", out, got, r.out)
	}
	if moved, _ := os.ReadFile(aside); bytes.Contains(moved, masterSecret[:12]) {
		t.Errorf("the secret was left in the file moved aside (%q)", moved)
	}
	if r.code != 4 || !strings.Contains(r.out, "moved or replaced") {
		t.Errorf("export with its output file replaced: exit %d, want 4 (refused, saying why):\n%s", r.code, r.out)
	}
	if !bytes.Equal(got, attackerKey) {
		t.Errorf("the export touched the attacker's file: %q", got)
	}
}

// adminPost sends a raw JSON body to the admin socket and returns the status
// and the answer.
func adminPost(t *testing.T, e *env, path, body string) (int, string) {
	t.Helper()
	resp, err := unixClient(e.admSock).Post("http://sealbox"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminSocketCannotLowerHideOrForge: on the admin socket, without an
// admin's password or below the floor, policy set and unlock change nothing
// and are recorded; an unknown admin name chosen to look like a record (a
// newline, a forged line, a terminal escape) is recorded, but neither
// `audit` nor `audit --follow` prints it as a line of its own.
func TestAdminSocketCannotLowerHideOrForge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	follow := e.follow()
	follow.waitFor(t, "admin.add")
	policyBefore := e.slotsOf("--admin-socket", e.admSock).Policy
	// Below the floor, with alice's own password: refused, nothing changes.
	if code, ans := adminPost(t, e, "/v1/policy", `{"actor":"alice","actor_password":"`+b64(pwAlice)+`","kdf":{"t":1,"memory_kib":8,"p":1}}`); code != 400 {
		t.Fatalf("a policy below the floor: %d %s", code, ans)
	}
	// Zero fields mean "keep": a zero policy is no way under the floor.
	if code, ans := adminPost(t, e, "/v1/policy", `{"actor":"alice","actor_password":"`+b64(pwAlice)+`","kdf":{"t":0,"memory_kib":0,"p":0}}`); code != 200 || strings.Contains(ans, `"t":0`) {
		t.Fatalf("a zero policy: %d %s", code, ans)
	}
	// Someone with the socket but no password: policy and unlock refused.
	if code, ans := adminPost(t, e, "/v1/policy", `{"actor":"mallory","actor_password":"`+b64("mallory's guess here")+`","kdf":{"t":3,"memory_kib":65536,"p":4}}`); code < 400 {
		t.Fatalf("a policy set by no admin: %d %s", code, ans)
	}
	e.pushBackoff(4, "unseal", "--admin", "bob")
	if code, ans := adminPost(t, e, "/v1/admins/bob/unlock", `{"actor":"alice","actor_password":"`+b64("not alice's password")+`"}`); code < 400 {
		t.Fatalf("an unlock with a wrong password: %d %s", code, ans)
	}
	if b := e.slotsOf("--admin-socket", e.admSock).slot(t, "bob"); b.Failures+b.RootFail < 4 {
		t.Fatalf("bob's failures were cleared without alice's password: %+v", b)
	}
	if after := e.slotsOf("--admin-socket", e.admSock).Policy; after != policyBefore {
		t.Fatalf("the policy changed: %+v, was %+v", after, policyBefore)
	}
	if n := e.auditCount([]string{"--admin-socket", e.admSock}, "admin.policy", "wrong_password"); n != 1 {
		t.Errorf("%d admin.policy wrong_password records, want 1 (mallory's)", n)
	}
	if n := e.auditCount([]string{"--admin-socket", e.admSock}, "admin.unlock", "wrong_password"); n != 1 {
		t.Errorf("%d admin.unlock wrong_password records, want 1", n)
	}
	if n := e.auditCount([]string{"--admin-socket", e.admSock}, "admin.unlock", "ok"); n != 0 {
		t.Errorf("%d admin.unlock ok records, want 0", n)
	}
	// A name that forges a line.
	forged := "x\n   4242 2026-12-06T06:00:00Z admin.add       ok actor=alice target=mallory\x1b[2J"
	body, _ := json.Marshal(map[string]any{"admin": forged, "password": []byte("anything long enough")})
	if code, ans := adminPost(t, e, "/v1/unseal", string(body)); code != 401 && code != 403 {
		t.Fatalf("unseal as a forged name: %d %s", code, ans)
	}
	follow.waitFor(t, "target=mallory")
	text := e.online(0, "", "audit").out
	follow.mu.Lock()
	followed := strings.Join(follow.lines, "\n")
	follow.mu.Unlock()
	for what, out := range map[string]string{"audit": text, "audit --follow": followed} {
		if strings.ContainsRune(out, 0x1b) {
			t.Errorf("%s printed a terminal escape from a name:\n%q", what, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimLeft(l, " "), "4242 ") {
				t.Errorf("%s printed a forged line: %q", what, l)
			}
		}
	}
}

// TestHostileBodiesOnTheNewEndpoints: malformed, oversized or out-of-range
// requests to check, keyring check, unlock, policy and the audit stream are
// refused before any derivation, with no password echoed in the answer or
// the daemon's log; refused follow requests do not use up follower places.
func TestHostileBodiesOnTheNewEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil, "--config", writeFile(t, e.dir, "debug.toml", "log_level = \"debug\"\n"))
	const marker = "SEKRET-PASSWORD-MARKER"
	pw := `"actor_password":"` + b64(pwAlice) + `"`
	cases := []struct {
		name, path, body string
		want             int
	}{
		{"check: syntax error around a password", "/v1/check", `{"actor":"alice","actor_password":` + marker + `}`, 400},
		{"check: password not base64", "/v1/check", `{"actor":"alice","actor_password":"` + marker + `!!"}`, 400},
		{"check: wrong type holding a password", "/v1/check", `{"actor":["` + marker + `"],` + pw + `}`, 400},
		{"check: unknown before", "/v1/check", `{"actor":"alice",` + pw + `,"before":"x\n\u001b[2J"}`, 400},
		{"keyring check: oversized", "/v1/keyring/check", `{"actor":"alice","actor_password":"` + strings.Repeat("QUFB", 5<<10) + `"}`, 413},
		{"keyring check: trailing data", "/v1/keyring/check", `{"actor":"alice",` + pw + `} {"actor_password":"` + b64(marker) + `"}`, 400},
		{"unlock: a name with a newline", "/v1/admins/b%0Ab/unlock", `{"actor":"alice",` + pw + `}`, 400},
		{"unlock: a name too long", "/v1/admins/" + strings.Repeat("b", 300) + "/unlock", `{"actor":"alice",` + pw + `}`, 400},
		{"policy: negative memory", "/v1/policy", `{"actor":"alice",` + pw + `,"kdf":{"memory_kib":-1}}`, 400},
		{"policy: time past the cap", "/v1/policy", `{"actor":"alice",` + pw + `,"kdf":{"t":4294967295}}`, 400},
		{"policy: memory past the cap", "/v1/policy", `{"actor":"alice",` + pw + `,"kdf":{"memory_kib":4294967295}}`, 400},
		{"policy: threads overflow", "/v1/policy", `{"actor":"alice",` + pw + `,"kdf":{"p":256}}`, 400},
	}
	ac := unixClient(e.admSock)
	before := e.slotsOf("--admin-socket", e.admSock)
	for _, c := range cases {
		code, ans := adminPost(t, e, c.path, c.body)
		if code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, ans, c.want)
		}
		if strings.Contains(ans, marker) || strings.Contains(ans, b64(marker)) || strings.Contains(ans, pwAlice) {
			t.Errorf("%s: the answer echoes a password: %s", c.name, ans)
		}
		if strings.ContainsRune(ans, 0x1b) {
			t.Errorf("%s: the answer carries a terminal escape: %q", c.name, ans)
		}
	}
	// The audit stream: bad filters are 400 and take no place.
	for i := 0; i < 40; i++ {
		for _, q := range []string{"since=yesterday", "uid=-1", "limit=-5", "stream=both", "until=2026-13-01T00:00:00Z"} {
			resp, err := ac.Get("http://sealbox/v1/audit?follow=1&" + q)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Fatalf("follow with %s: %d", q, resp.StatusCode)
			}
		}
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 16; i++ {
		c, err := net.Dial("unix", e.admSock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.Write([]byte("GET /v1/audit?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line := make([]byte, 12)
		if _, err := io.ReadFull(c, line); err != nil || !strings.Contains(string(line), "200") {
			t.Fatalf("follower %d after 200 refused follows: %q %v", i+1, line, err)
		}
	}
	// No derivation ran, nothing changed, no password in the log.
	if after := e.slotsOf("--admin-socket", e.admSock); after.Policy != before.Policy {
		t.Fatalf("the policy changed: %+v", after.Policy)
	}
	st := e.online(7, "", "status", "--json").out // 7: sealed
	if !strings.Contains(st, `"kdf_derivations": 0`) {
		t.Errorf("refused requests ran a derivation:\n%s", st)
	}
	if l := e.log.String(); strings.Contains(l, marker) || strings.Contains(l, b64(marker)) || strings.Contains(l, pwAlice) {
		t.Errorf("the daemon's log holds a password:\n%s", l)
	}
}
