package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// follower runs sealbox-admin audit --follow and collects its lines.
type follower struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	code  int
}

func (e *env) follow(args ...string) *follower {
	e.t.Helper()
	f := &follower{done: make(chan struct{})}
	f.cmd = exec.Command(adminBin, append([]string{"--admin-socket", e.admSock, "audit", "--follow"}, args...)...)
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	var stderr bytes.Buffer
	f.cmd.Stderr = &stderr
	if err := f.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f.mu.Lock()
			f.lines = append(f.lines, sc.Text())
			f.mu.Unlock()
		}
		f.cmd.Wait()
		f.code = f.cmd.ProcessState.ExitCode()
		f.mu.Lock()
		f.lines = append(f.lines, "stderr: "+stderr.String())
		f.mu.Unlock()
		close(f.done)
	}()
	e.t.Cleanup(func() { f.cmd.Process.Kill(); <-f.done })
	return f
}

// waitFor waits until a line contains want, and returns it.
func (f *follower) waitFor(t *testing.T, want string) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		f.mu.Lock()
		for _, l := range f.lines {
			if strings.Contains(l, want) {
				f.mu.Unlock()
				return l
			}
		}
		f.mu.Unlock()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t.Fatalf("no line with %q in:\n%s", want, strings.Join(f.lines, "\n"))
	return ""
}

func (f *follower) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-f.done:
		return f.code
	case <-time.After(20 * time.Second):
		t.Fatal("the follower did not exit")
		return -1
	}
}

// TestAuditFollow follows the log through the daemon: stored records first,
// then new ones as JSON Lines, across a seal; Ctrl-C ends it with 0, and a
// daemon that stops ends it with 5.
func TestAuditFollow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	first := e.follow("--jsonl")
	// The stored records: the init's admin.add of bob.
	line := first.waitFor(t, `"kind":"admin.add"`)
	var rec struct {
		Seq   uint64 `json:"seq"`
		Event struct {
			Kind   string `json:"kind"`
			Target string `json:"target"`
		} `json:"event"`
	}
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Seq == 0 || rec.Event.Target != "bob" {
		t.Fatalf("not a JSON record line: %q (%v)", line, err)
	}
	// New ones, as they are written.
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	first.waitFor(t, `"kind":"unseal","actor":"alice"`)
	e.online(0, "", "seal")
	first.waitFor(t, `"kind":"seal"`)
	// Still following while sealed: a wrong password is recorded too.
	e.online(3, "not bob's password\n", "unseal", "--admin", "bob")
	first.waitFor(t, `"outcome":"wrong_password"`)
	// Filters apply to what follows: only bob's records, as text.
	second := e.follow("--admin", "bob", "--since", "1d")
	second.waitFor(t, "wrong_password")
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	first.waitFor(t, `"kind":"unseal","actor":"alice","peer"`)
	second.mu.Lock()
	for _, l := range second.lines {
		if strings.Contains(l, "alice") && !strings.Contains(l, "bob") {
			t.Errorf("a record without bob reached a --admin bob follower: %q", l)
		}
	}
	second.mu.Unlock()
	// Ctrl-C: exit 0.
	first.cmd.Process.Signal(os.Interrupt)
	if code := first.exit(t); code != 0 {
		t.Fatalf("follower after SIGINT: exit %d", code)
	}
	// The daemon stops: the other follower is told, exit 5.
	e.stop(syscall.SIGTERM)
	if code := second.exit(t); code != 5 {
		t.Fatalf("follower after the daemon stopped: exit %d, want 5\n%s", code, strings.Join(second.lines, "\n"))
	}
	second.waitFor(t, "ended the audit stream")
	// Following works through the daemon only.
	r := runCmd(t, "", adminBin, "--keyring", e.keyring, "audit", "--follow")
	if r.code != 2 || !strings.Contains(r.out, "--follow works through the daemon") {
		t.Fatalf("--follow on a file: exit %d\n%s", r.code, r.out)
	}
}

// TestSlowAuditFollowerIsDropped: a follower that never reads must not hold
// up the audit writer or the service; it is dropped, and the daemon says so.
func TestSlowAuditFollowerIsDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "me", "--uid", "0", "--as", "alice")
	e.start(nil)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	hc := unixClient(e.sock)
	read := func(n int) {
		for i := 0; i < n; i++ {
			resp, err := hc.Get("http://sealbox/v1/secret")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("read %d: %d", i, resp.StatusCode)
			}
		}
	}
	// Enough stored reads (about 200 bytes each as JSON) to fill the
	// socket's buffer many times over.
	read(3000)
	c, err := net.Dial("unix", e.admSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /v1/audit?follow=1&stream=reads HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// It never reads. Meanwhile reads are served and audited.
	start := time.Now()
	read(200)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("200 reads took %v with a stalled follower", d)
	}
	waitLog(t, e, "dropped a follower that did not take its records in time")
	r := e.online(0, "", "audit", "--reads", "--json")
	var recs []json.RawMessage
	json.Unmarshal([]byte(r.out), &recs)
	if len(recs) < 3200 {
		t.Fatalf("%d read records, want at least 3200: the writer stalled", len(recs))
	}
}

// TestAuditFollowStartsWithAtMostABacklog: a follower gets at most the
// newest 1000 stored records, not a whole stream that may hold a million.
func TestAuditFollowStartsWithAtMostABacklog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "me", "--uid", "0", "--as", "alice")
	e.start(nil)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	hc := unixClient(e.sock)
	for i := 0; i < 1200; i++ {
		resp, err := hc.Get("http://sealbox/v1/secret")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	c, err := net.Dial("unix", e.admSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /v1/audit?follow=1&stream=reads HTTP/1.1\r\nHost: x\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(c)
	if n := strings.Count(string(b), `"seq":`); n != 1000 {
		t.Fatalf("the follower started with %d records, want the newest 1000 of 1200", n)
	}
}

// TestQuietAuditFollowerIsDropped: on a quiet stream every write fits in
// the socket's buffer, so a follower that stops reading is never caught by
// a write deadline; it is dropped once what it left unread sat there 10 s,
// and its place is free again.
func TestQuietAuditFollowerIsDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	c, err := net.Dial("unix", e.admSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /v1/audit?follow=1&limit=1 HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitLog(t, e, "audit: follower started")
	// One record it will never read.
	e.online(0, pwAlice+"\n", "check", "--as", "alice")
	start := time.Now()
	waitLog(t, e, "dropped a follower that did not take its records in time")
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("dropped after %v", d)
	}
}

// TestAuditJournal: with audit_journal naming a socket, every committed
// record arrives there as one journald native entry with structured fields,
// and none carries a password or the secret.
func TestAuditJournal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sock := filepath.Join(e.dir, "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg := writeFile(t, e.dir, "journal.toml", "audit_journal = \""+sock+"\"\n")
	e.start(nil, "--config", cfg)
	e.online(3, "wrong password here\n", "unseal", "--admin", "bob")
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.expectRead(nobody, 200)
	var entries []string
	buf := make([]byte, 64<<10)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			if len(entries) >= 3 && strings.Contains(strings.Join(entries, ""), "SEALBOX_OUTCOME=served") {
				break
			}
			continue
		}
		entries = append(entries, string(buf[:n]))
	}
	all := strings.Join(entries, "\n--\n")
	var unseal string
	for _, en := range entries {
		if strings.Contains(en, "SEALBOX_KIND=unseal\n") && strings.Contains(en, "SEALBOX_ACTOR=alice\n") {
			unseal = en
		}
	}
	for _, want := range []string{"MESSAGE=audit: ", "PRIORITY=6\n", "SYSLOG_IDENTIFIER=sealboxd\n", "SEALBOX_STREAM=events\n", "SEALBOX_OUTCOME=ok\n", "SEALBOX_UID=0\n", "SEALBOX_SEQ="} {
		if !strings.Contains(unseal, want) {
			t.Errorf("the unseal entry lacks %q:\n%s", want, all)
		}
	}
	if !strings.Contains(all, "SEALBOX_OUTCOME=wrong_password\nPRIORITY") && !strings.Contains(all, "PRIORITY=4\n") {
		t.Errorf("the wrong password is not a warning:\n%s", all)
	}
	if !strings.Contains(all, "SEALBOX_STREAM=reads\n") || !strings.Contains(all, "SEALBOX_CLIENT=svc\n") {
		t.Errorf("the read is not in the journal:\n%s", all)
	}
	for _, secret := range []string{pwAlice, "wrong password here", string(masterSecret[:12])} {
		if strings.Contains(all, secret) {
			t.Fatalf("a journal entry carries %q", secret)
		}
	}
}

// TestAuditFollowersAreCapped: someone on the admin socket opening follow
// streams until something gives gets 16, then a busy answer, while the
// service goes on; a closed stream frees its place.
func TestAuditFollowersAreCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	open := func() (net.Conn, string) {
		c, err := net.Dial("unix", e.admSock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /v1/audit?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("no answer to a follow: %v", err)
		}
		return c, line
	}
	var held []net.Conn
	for i := 0; i < 16; i++ {
		c, status := open()
		if !strings.Contains(status, "200") {
			t.Fatalf("follower %d: %q", i+1, status)
		}
		held = append(held, c)
	}
	c, status := open()
	if !strings.Contains(status, "503") {
		t.Fatalf("the 17th follower: %q, want 503 busy", status)
	}
	c.Close()
	// The service and the admin socket still answer.
	e.expectRead(nobody, 200)
	e.online(0, "", "status")
	// A follower that leaves frees its place.
	held[0].Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, status := open()
		c.Close()
		if strings.Contains(status, "200") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed follower's place was not freed: %q", status)
		}
	}
	for _, c := range held[1:] {
		c.Close()
	}
}
