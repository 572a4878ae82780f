package main

// Script-style tests of the command line as an admin meets it: each case is
// one run of the real binary (its arguments, environment and standard
// input), the exit code it must give, and what its output must and must not
// say. Cases that need a terminal run under script(1), which gives the
// command a pseudo-terminal.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/internal/testbin"
)

type cliCase struct {
	name    string
	env     []string // added to the environment
	stdin   string
	args    []string
	tty     bool // run on a pseudo-terminal (stdout and stderr merged)
	code    int
	want    []string // each must appear in stdout or stderr
	notWant []string // none may appear
}

func (tc cliCase) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var cmd *exec.Cmd
	if tc.tty {
		if _, err := exec.LookPath("script"); err != nil {
			testbin.Require(t, "script (util-linux) gives the command a pseudo-terminal")
		}
		line := shellQuote(append([]string{bin}, tc.args...))
		cmd = exec.CommandContext(ctx, "script", "-qec", line, "/dev/null")
	} else {
		cmd = exec.CommandContext(ctx, bin, tc.args...)
	}
	cmd.Env = append(os.Environ(), tc.env...)
	cmd.Stdin = strings.NewReader(tc.stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", tc.name, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s: hung", tc.name)
	}
	text := out.String()
	if code != tc.code {
		t.Errorf("%s: exit %d, want %d\n%s", tc.name, code, tc.code, text)
	}
	for _, w := range tc.want {
		if !strings.Contains(text, w) {
			t.Errorf("%s: output lacks %q\n%s", tc.name, w, text)
		}
	}
	for _, w := range tc.notWant {
		if strings.Contains(text, w) {
			t.Errorf("%s: output has %q\n%s", tc.name, w, text)
		}
	}
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestCLIWithoutADaemon covers what needs no running daemon: help,
// version, usage mistakes, an unreachable socket and prompt order.
func TestCLIWithoutADaemon(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	none := filepath.Join(dir, "none.sock")
	path := initKeyring(t)
	expect(t, run(t, pwA+"\n"+pwB+"\n", "--keyring", path, "add", "bob", "--as", "alice"), 0, "added admin bob")
	kr := []string{"--keyring", path}
	cases := []cliCase{
		{name: "version", args: []string{"--version"}, code: 0,
			want: []string{"sealbox-admin ", "commit ", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}},
		{name: "group help", args: []string{"recovery", "--help"}, code: 0,
			want: []string{"Usage: sealbox-admin recovery", "regenerate"}},
		{name: "help lists exit codes", args: []string{"--help"}, code: 0,
			want: []string{"Exit codes", "7 sealed", "9 a wait timed out", "SEALBOX_ADMIN_SOCKET"}},
		// Calibration shows each timed step with its elapsed time on a
		// terminal, then what it chose.
		{name: "calibration progress", tty: true, stdin: pwA + "\n" + pwA + "\n",
			args: []string{"init", "--keyring", filepath.Join(dir, "new.db"), "--admin", "alice", "--kdf-time", "50ms"}, code: 0,
			want: []string{"calibrating: timing (Argon2id t=3 m=64MiB p=4)… 0.", "calibrated Argon2id t=", "calibration took", "created keyring"}},
		{name: "calibration memory cap", args: []string{"init", "--keyring", filepath.Join(dir, "other.db"), "--admin", "alice", "--kdf-max-memory", "10"}, code: 2,
			want: []string{"--kdf-max-memory: want 64 to 4096"}},
		{name: "calibration or explicit cost, not both", args: []string{"init", "--keyring", filepath.Join(dir, "other.db"), "--admin", "alice", "--kdf-time", "2s", "--kdf-memory", "128"}, code: 2,
			want: []string{"give one or the other"}},
		// A directory is a wrong path (exit 2), not a tampered file (6).
		{name: "keyring is a directory", args: []string{"--keyring", dir, "list"}, code: 2,
			want: []string{"is a directory", "names the keyring file"}, notWant: []string{"tampered"}},
		// unseal works through the daemon only: a usage mistake, said at
		// once, before any password is asked for.
		{name: "unseal on a file", args: []string{"--keyring", path, "unseal", "--admin", "alice"}, code: 2,
			want: []string{"unseal talks to the running daemon", "drop --keyring"}},
		// No daemon: unseal says so before asking for a password or
		// deriving anything, and does not suggest --keyring, which unseal
		// cannot use.
		{name: "unseal with no daemon", tty: true, args: []string{"--admin-socket", none, "unseal", "--admin", "alice"}, code: 5,
			want:    []string{"cannot reach sealboxd at " + none, "is sealboxd running?"},
			notWant: []string{"password:", "deriving", "--keyring"}},
		// A command that also works on the file says how.
		{name: "list with no daemon", args: []string{"--admin-socket", none, "list"}, code: 5,
			want: []string{"cannot reach sealboxd", "work on the file: --keyring PATH"}},
		{name: "admin socket from the environment", env: []string{"SEALBOX_ADMIN_SOCKET=" + none}, args: []string{"status"}, code: 5,
			want: []string{"cannot reach sealboxd at " + none}},
		{name: "flag over environment", env: []string{"SEALBOX_ADMIN_SOCKET=/nonexistent/env.sock"}, args: []string{"--admin-socket", none, "status"}, code: 5,
			want: []string{none}, notWant: []string{"env.sock"}},
		// A wrong actor password is found before the new admin's password
		// is asked for.
		{name: "add checks the actor first", tty: true, stdin: "not alice's password\n", args: append(kr, "add", "carol", "--as", "alice"), code: 3,
			want: []string{"alice's password:", "wrong admin name or password"}, notWant: []string{"carol's new password"}},
		// On a terminal a mistyped repetition is asked again.
		{name: "new password mismatch asked again", tty: true,
			stdin: pwB + "\n" + "bob's new long passphrase\n" + "bob's other long passphrase\n" + "bob's new long passphrase\n" + "bob's new long passphrase\n",
			args:  append(kr, "passwd", "bob"), code: 0,
			want: []string{"do not match; try again", "changed the password of bob"}},
		{name: "three mismatches give up", tty: true,
			stdin: "bob's new long passphrase\n" + strings.Repeat("one long passphrase\nanother long passphrase\n", 3),
			args:  append(kr, "passwd", "bob"), code: 2,
			want: []string{"the two passwords do not match"}, notWant: []string{"changed the password"}},
		// Users and groups by name.
		{name: "client by user name", stdin: pwA + "\n", args: append(kr, "client", "add", "nob", "--uid", "nobody", "--gid", "nogroup", "--as", "alice"), code: 0,
			want: []string{"nob"}},
		{name: "client list shows the uid", args: append(kr, "client", "list"), code: 0, want: []string{"65534"}},
		{name: "unknown user", args: append(kr, "client", "add", "x", "--uid", "no-such-user-here", "--as", "alice"), code: 2,
			want: []string{`no user "no-such-user-here" on this host`}},
		{name: "audit by user name and day", args: append(kr, "audit", "--uid", "root", "--since", "1d"), code: 0,
			want: []string{"client.add"}},
		{name: "audit bad since", args: append(kr, "audit", "--since", "yesterday"), code: 2,
			want: []string{"--since: want a duration back from now"}},
		{name: "audit until before since", args: append(kr, "audit", "--since", "1d", "--until", "2d"), code: 2,
			want: []string{"--until must be after --since"}},
		// Removing oneself: the rekey hint names another admin.
		{name: "remove self --rekey refused first", args: append(kr, "remove", "bob", "--as", "bob", "--rekey"), code: 2,
			want: []string{"once removed, bob cannot rekey"}},
		{name: "remove self hints another admin", stdin: "bob's new long passphrase\n", args: append(kr, "remove", "bob", "--as", "bob"), code: 0,
			want: []string{"removed admin bob", "rekey --as ANOTHER_ADMIN"}, notWant: []string{"rekey --as bob"}},
	}
	// In order: the passwd and remove cases build on each other.
	for _, tc := range cases {
		tc.run(t)
	}
}

// TestBindTangConfirmsTheThumbprint: on a terminal, without --thp, bind
// tang shows the server's signing thumbprint and binds only when told yes;
// a no binds nothing (exit 4).
func TestBindTangConfirmsTheThumbprint(t *testing.T) {
	t.Parallel()
	tg := fleettest.StartTang(t)
	path := initKeyring(t)
	kr := []string{"--keyring", path}
	for _, tc := range []cliCase{
		{name: "declined", tty: true, stdin: "n\n", args: append(kr, "bind", "tang", tg.URL, "--as", "alice"), code: 4,
			want: []string{tg.Thumbprint(), "trust this server? [y/N]", "not trusted; nothing was bound"}},
		{name: "confirmed", tty: true, stdin: "y\n" + pwA + "\n", args: append(kr, "bind", "tang", tg.URL, "--as", "alice"), code: 0,
			want: []string{tg.Thumbprint(), "bound tang-1 to " + tg.URL + " (signing key " + tg.Thumbprint() + ")", "keyring identity: "}},
	} {
		tc.run(t)
	}
	expect(t, run(t, "", "--keyring", path, "slots"), 0, "tang-1: tang "+tg.URL)
}
