package main

// End-to-end tests of the offline mode: they build the real binary and drive
// it on real bbolt files, at the real Argon2id floor (t=3, 64 MiB, p=4).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/keyring"
)

var bin string

func TestMain(m *testing.M) {
	var err error
	// The CLI is single-goroutine work around Argon2id, which the race
	// detector slows fourfold; the daemon's e2e tests build with -race.
	if bin, err = testbin.Build("sealbox-admin", false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

const (
	pwA = "alice's long passphrase"
	pwB = "bob's own long passphrase"
)

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%v hung", args)
	}
	return r
}

func expect(t *testing.T, r result, code int, contains string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout+r.stderr, contains) {
		t.Fatalf("exit %d (want %d), want output containing %q\nstdout: %s\nstderr: %s", r.code, code, contains, r.stdout, r.stderr)
	}
}

// state returns what a refused operation must not change: the admins, the
// clients, the secret's version and the registry generation. (The audit log
// and the guessing defence's counters do change: they record the attempt.)
func state(t *testing.T, path string) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"list", "--json"}, {"client", "list", "--json"}, {"status", "--json"}} {
		r := run(t, "", append([]string{"--keyring", path}, args...)...)
		if r.code != 0 {
			t.Fatalf("%v: %s", args, r.stderr)
		}
		// The generation counts every signed write, audit records of
		// refusals included: it is not what a refused change must leave.
		b.WriteString(generation.ReplaceAllString(r.stdout, ""))
	}
	return b.String()
}

var generation = regexp.MustCompile(`"generation": \d+,?`)

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// initKeyring makes a keyring with admin alice and returns its path.
func initKeyring(t *testing.T, extra ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "keyring.db")
	args := append([]string{"init", "--keyring", path, "--admin", "alice", "--kdf-time", "1ms"}, extra...)
	expect(t, run(t, pwA+"\n", args...), 0, "created keyring")
	return path
}

func TestInitCreatesPrivateFileAtTheFloor(t *testing.T) {
	t.Parallel()
	path := initKeyring(t)
	st, _ := os.Stat(path)
	dst, _ := os.Stat(filepath.Dir(path))
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("modes file %v dir %v, want 0600 and 0700", st.Mode().Perm(), dst.Mode().Perm())
	}
	r := run(t, "", "--keyring", path, "list", "--json")
	expect(t, r, 0, `"name": "alice"`)
	var admins []struct {
		T, P int
		M    int `json:"kdf_memory_kib"`
	}
	json.Unmarshal([]byte(r.stdout), &admins)
	if !strings.Contains(r.stdout, `"kdf_time": 3`) || !strings.Contains(r.stdout, `"kdf_memory_kib": 65536`) || !strings.Contains(r.stdout, `"kdf_threads": 4`) {
		t.Fatalf("the real binary did not use the RFC 9106 floor:\n%s", r.stdout)
	}
	// Init again: refused, file untouched.
	h := fileHash(t, path)
	expect(t, run(t, pwB+"\n", "init", "--keyring", path, "--admin", "bob"), 4, "already exists")
	if fileHash(t, path) != h {
		t.Fatal("second init changed the keyring")
	}
}

func TestInitRefusesWeakPasswordAndWritesNothing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keyring.db")
	expect(t, run(t, "short\n", "init", "--keyring", path, "--admin", "alice", "--kdf-time", "1ms"), 2, "minimum is 12")
	expect(t, run(t, "password1234\n", "init", "--keyring", path, "--admin", "alice", "--kdf-time", "1ms"), 2, "commonly used")
	expect(t, run(t, "", "init", "--keyring", path, "--admin", "alice", "--kdf-time", "1ms"), 1, "no password on standard input")
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused init left a file")
	}
}

func TestAdminLifecycle(t *testing.T) {
	t.Parallel()
	path := initKeyring(t)
	kr := []string{"--keyring", path}
	before := state(t, path)
	// Wrong actor password and unknown actor: same error, same exit, no change.
	wrong := run(t, "not alice's password\n"+pwB+"\n", append(kr, "add", "bob", "--as", "alice")...)
	unknown := run(t, "not alice's password\n"+pwB+"\n", append(kr, "add", "bob", "--as", "zed")...)
	expect(t, wrong, 3, "wrong admin name or password")
	expect(t, unknown, 3, "wrong admin name or password")
	if state(t, path) != before {
		t.Fatal("a failed add changed the keyring")
	}
	expect(t, run(t, "", append(kr, "audit", "--admin", "zed")...), 0, "admin.add       wrong_password actor=zed")
	expect(t, run(t, pwA+"\n"+pwB+"\n", append(kr, "add", "bob", "--as", "alice")...), 0, "added admin bob")
	expect(t, run(t, pwA+"\n"+pwB+"\n", append(kr, "add", "bob", "--as", "alice")...), 4, "already exists")
	r := run(t, "", append(kr, "list", "--json")...)
	var admins []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &admins); err != nil || len(admins) != 2 {
		t.Fatalf("list --json: %v %s", err, r.stdout)
	}
	expect(t, run(t, pwB+"\n", append(kr, "check", "--as", "bob")...), 0, "state: ok")
	// Bob removes alice; alice's password no longer opens anything.
	expect(t, run(t, pwB+"\n", append(kr, "remove", "alice", "--as", "bob")...), 0, "removed admin alice")
	expect(t, run(t, pwA+"\n", append(kr, "check", "--as", "alice")...), 3, "wrong admin name or password")
	// The last admin stays.
	before = state(t, path)
	expect(t, run(t, pwB+"\n", append(kr, "remove", "bob", "--as", "bob")...), 4, "last admin")
	if state(t, path) != before {
		t.Fatal("a refused remove changed the keyring")
	}
	// Everything above is in the audit log, and the chain verifies.
	r = run(t, "", append(kr, "audit", "--json")...)
	var recs []struct {
		Event struct{ Kind, Outcome string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil || len(recs) < 8 {
		t.Fatalf("audit --json: %v %s", err, r.stdout)
	}
	expect(t, run(t, pwB+"\n", append(kr, "audit", "verify", "--as", "bob")...), 0, "audit events: ok")
	// Password change.
	expect(t, run(t, pwB+"\n"+"bob's brand new passphrase\n", append(kr, "passwd", "bob")...), 0, "changed the password")
	expect(t, run(t, pwB+"\n", append(kr, "check", "--as", "bob")...), 3, "wrong")
	expect(t, run(t, "bob's brand new passphrase\n", append(kr, "check", "--as", "bob")...), 0, "datakey: ok")
}

func TestClientCommands(t *testing.T) {
	t.Parallel()
	path := initKeyring(t)
	kr := []string{"--keyring", path}
	expect(t, run(t, pwA+"\n", append(kr, "client", "add", "web", "--as", "alice")...), 2, "client add needs --uid N, --unit UNIT, or both")
	expect(t, run(t, pwA+"\n", append(kr, "client", "add", "web", "--uid", "33", "--as", "alice")...), 0, "registered client web (uid 33)")
	expect(t, run(t, pwA+"\n", append(kr, "client", "add", "db", "--uid", "70", "--gid", "71", "--as", "alice")...), 0, "gid 71")
	expect(t, run(t, pwA+"\n", append(kr, "client", "disable", "web", "--as", "alice")...), 0, "disabled client web")
	expect(t, run(t, pwA+"\n", append(kr, "client", "remove", "db", "--as", "alice")...), 0, "retired client db")
	expect(t, run(t, pwA+"\n", append(kr, "client", "enable", "db", "--as", "alice")...), 4, "retired")
	expect(t, run(t, pwA+"\n", append(kr, "client", "enable", "nope", "--as", "alice")...), 4, "no such client")
	r := run(t, "", append(kr, "client", "list", "--json")...)
	var clients []struct {
		Name, Status string
		UID          int
		GID          *int
	}
	if err := json.Unmarshal([]byte(r.stdout), &clients); err != nil {
		t.Fatal(err, r.stdout)
	}
	if len(clients) != 2 || clients[0].Name != "db" || clients[0].Status != "retired" || *clients[0].GID != 71 ||
		clients[1].Name != "web" || clients[1].Status != "disabled" || clients[1].GID != nil {
		t.Fatalf("client list: %+v", clients)
	}
	expect(t, run(t, "", append(kr, "client", "list")...), 0, "web   33   any  any   disabled")
}

func TestSecretFileNeverInKeyring(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := []byte("db-password: S3cr3t-Value-4f9a2c81e7")
	sf := filepath.Join(dir, "secret")
	os.WriteFile(sf, secret, 0o600)
	path := initKeyring(t, "--secret-file", sf)
	expect(t, run(t, pwA+"\n", "--keyring", path, "check", "--as", "alice"), 0, fmt.Sprintf("decrypts, %d bytes", len(secret)))
	raw, _ := os.ReadFile(path)
	for _, needle := range []string{string(secret), "S3cr3t", pwA} {
		if bytes.Contains(raw, []byte(needle)) {
			t.Fatalf("keyring contains %q", needle)
		}
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, keyring.MaxSecretSize+1), 0o600)
	expect(t, run(t, pwA+"\n", "init", "--keyring", filepath.Join(dir, "k2.db"), "--admin", "alice", "--secret-file", big), 1, "1 to 65536 bytes")
}

func TestLockedKeyringGivesClearErrorFast(t *testing.T) {
	t.Parallel()
	path := initKeyring(t)
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	start := time.Now()
	r := run(t, "", "--keyring", path, "list")
	expect(t, r, 5, "in use by another process")
	expect(t, r, 5, "--admin-socket")
	t.Logf("locked keyring refused after %v", time.Since(start).Round(time.Millisecond))
}

func TestTamperedFileIsAnIntegrityError(t *testing.T) {
	t.Parallel()
	path := initKeyring(t)
	raw, _ := os.ReadFile(path)
	// Truncate to half: bbolt or our decoders must refuse it, not crash.
	bad := filepath.Join(t.TempDir(), "bad.db")
	os.WriteFile(bad, raw[:len(raw)/2], 0o600)
	r := run(t, pwA+"\n", "--keyring", bad, "check", "--as", "alice")
	if r.code != 6 && r.code != 1 {
		t.Fatalf("truncated file: exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "panic") {
		t.Fatalf("panic on a truncated file:\n%s", r.stderr)
	}
	junk := filepath.Join(t.TempDir(), "junk.db")
	os.WriteFile(junk, bytes.Repeat([]byte("junk"), 4096), 0o600)
	expect(t, run(t, "", "--keyring", junk, "list"), 6, "not a sealbox keyring")
	expect(t, run(t, "", "--keyring", filepath.Join(t.TempDir(), "none.db"), "list"), 1, "sealbox-admin init --keyring")
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, cmd := range commands {
		args := append(strings.Fields(cmd.name), "--help")
		r := run(t, "", args...)
		expect(t, r, 0, "Usage: sealbox-admin "+cmd.name)
		// The command list shows each command with its required flags.
		expect(t, run(t, "", "--help"), 0, cmd.summary)
	}
	for _, group := range []string{"client", "recovery", "audit"} {
		expect(t, run(t, "", group, "--help"), 0, "Usage: sealbox-admin "+group)
	}
	expect(t, run(t, "", "client", "--help"), 0, "disable")
	expect(t, run(t, "", "client", "frob"), 2, `client takes: add, list, disable, enable, remove`)
	expect(t, run(t, "", "status", "extra"), 2, "status takes no arguments, got 1")
	expect(t, run(t, "", "add", "bob"), 2, "--as is required (usage: sealbox-admin add NAME --as ACTOR [FLAGS])")
	expect(t, run(t, "", "--help"), 0, "Exit codes")
	expect(t, run(t, ""), 2, "Usage")
	expect(t, run(t, "", "frobnicate"), 2, `unknown command "frobnicate"`)
	expect(t, run(t, "", "add", "--as", "alice"), 2, "add takes NAME, got 0")
	expect(t, run(t, "", "client"), 2, "needs a subcommand")
	expect(t, run(t, "", "--keyring", "/x", "--admin-socket", "/y", "list"), 2, "not both")
	expect(t, run(t, "", "init", "--keyring", "/tmp/x.db"), 2, "--admin is required")
	expect(t, run(t, "", "init", "--keyring", "/tmp/x.db", "--admin", "Bad Name"), 2, "lowercase")
	expect(t, run(t, "", "--keyring", "/tmp/x.db", "unseal", "--admin", "alice"), 2, "talks to the running daemon")
}

// codeFrom returns the code line a command printed.
func codeFrom(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if len(line) == 39 && strings.Count(line, "-") == 7 {
			return line
		}
	}
	t.Fatalf("no code in output:\n%s", out)
	return ""
}

func TestLifecycleOffline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring.db")
	r := run(t, pwA+"\n", "init", "--keyring", path, "--admin", "alice", "--kdf-time", "1ms", "--recovery-code")
	expect(t, r, 0, "recovery code (shown once")
	recovery := codeFrom(t, r.stdout)
	kr := []string{"--keyring", path}
	r = run(t, "", append(kr, "status", "--json")...)
	expect(t, r, 0, `"recovery_code": true`)
	expect(t, r, 0, `"kdf_memory_kib": 8192`) // the recovery slot's cheaper parameters

	// Invite and enroll: a wrong code fails and keeps the invite.
	r = run(t, pwA+"\n", append(kr, "invite", "bob", "--as", "alice", "--expires", "1h")...)
	expect(t, r, 0, "invite code for bob")
	code := codeFrom(t, r.stdout)
	expect(t, run(t, strings.ToLower(recovery)+"\n"+pwB+"\n", append(kr, "enroll", "bob")...), 3, "no valid invite")
	expect(t, run(t, code+"\n"+pwB+"\n", append(kr, "enroll", "bob")...), 0, "enrolled bob")
	expect(t, run(t, code+"\n"+pwB+"\n", append(kr, "enroll", "bob")...), 3, "no valid invite")
	expect(t, run(t, pwB+"\n", append(kr, "check", "--as", "bob")...), 0, "state: ok")

	// Rotate: a new secret, version 2.
	sf := filepath.Join(dir, "new-secret")
	os.WriteFile(sf, []byte("second master secret"), 0o600)
	expect(t, run(t, pwA+"\n", append(kr, "rotate", "--as", "alice", "--secret-file", sf)...), 0, "version 2")
	expect(t, run(t, pwB+"\n", append(kr, "check", "--as", "bob")...), 0, "version 2 decrypts, 20 bytes")

	// Backup: a new 0600 file that opens; never over an existing file.
	bk := filepath.Join(dir, "backup.db")
	expect(t, run(t, "", append(kr, "backup", "--to", bk)...), 0, "backed up")
	if st, err := os.Stat(bk); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", st, err)
	}
	expect(t, run(t, pwA+"\n", "--keyring", bk, "check", "--as", "alice"), 0, "state: ok")
	expect(t, run(t, "", append(kr, "backup", "--to", bk)...), 4, "exists")

	// Remove bob and rekey in one go; everyone else keeps their password.
	r = run(t, pwA+"\n", append(kr, "remove", "bob", "--as", "alice", "--rekey")...)
	expect(t, r, 0, "rekeyed")
	expect(t, run(t, pwA+"\n", append(kr, "check", "--as", "alice")...), 0, "state: ok")
	expect(t, run(t, pwA+"\n", append(kr, "audit", "verify", "--as", "alice")...), 0, "audit events: ok")
	// Bob's password opens his slot in the backup, but not the keyring now.
	expect(t, run(t, pwB+"\n", append(kr, "check", "--as", "bob")...), 3, "wrong")
	expect(t, run(t, pwB+"\n", "--keyring", bk, "check", "--as", "bob"), 0, "version 2 decrypts")
	// The recovery code, from before the rekey, still works (offline check
	// goes through the same slot): regenerate replaces it.
	r = run(t, pwA+"\n", append(kr, "recovery", "regenerate", "--as", "alice")...)
	if codeFrom(t, r.stdout) == recovery {
		t.Fatal("regenerate printed the old code")
	}
	r = run(t, "", append(kr, "audit", "--json")...)
	for _, kind := range []string{"admin.invite", "admin.enroll", "secret.rotate", "backup", "admin.remove", "admin.rekey", "recovery.regenerate"} {
		if !strings.Contains(r.stdout, `"kind": "`+kind+`"`) {
			t.Errorf("no %s record in the audit log", kind)
		}
	}
	for _, c := range []string{recovery, code, pwA, pwB} {
		if strings.Contains(r.stdout, c) {
			t.Fatalf("the audit log contains %q", c)
		}
	}
}

// A daemon started from an older sealbox refuses a field it does not know
// (it decodes requests strictly). The tool says the change was not made
// and that sealboxd may need the restart an upgrade calls for. The daemon
// here answers as one that predates remove --rekey's single transaction:
// its password check passes, its rekey knows no "remove".
func TestOlderDaemonsUnknownFieldIsExplained(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var req map[string]any
		json.NewDecoder(r.Body).Decode(&req)
		if _, ok := req["remove"]; ok {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"code":"invalid","error":"malformed JSON request: json: unknown field \"remove\""}`)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	r := run(t, pwA+"\n", "--admin-socket", sock, "remove", "bob", "--rekey", "--as", "alice")
	if r.code != 2 || !strings.Contains(r.stderr, "sealboxd may be older than this sealbox-admin") || !strings.Contains(r.stderr, "the change was not made") || strings.Contains(r.stdout, "removed") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}
