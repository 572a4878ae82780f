package main

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestAdminCLIAgainstTheDaemon covers the command line's answers that need
// a running daemon: status's exit code, unseal when there is nothing to do,
// a socket this user may not open, and sealboxd --version.
func TestAdminCLIAgainstTheDaemon(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	if r := runCmd(t, "", daemonBin, "--version"); r.code != 0 || !strings.HasPrefix(r.out, "sealboxd ") || !strings.Contains(r.out, runtime.Version()) {
		t.Fatalf("sealboxd --version: exit %d, %q", r.code, r.out)
	}
	e := newEnv(t)
	e.start(nil)
	// status prints the state and exits 7 while sealed, 0 once unsealed.
	if r := e.online(7, "", "status"); !strings.Contains(r.out, "state:     sealed") || strings.Contains(r.out, "error:") {
		t.Fatalf("sealed status:\n%s", r.out)
	}
	e.online(7, "", "status", "--json")
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.online(0, "", "status")
	// unseal on an unsealed daemon succeeds at once: no password read, no
	// derivation.
	if r := e.online(0, "", "unseal", "--admin", "bob"); !strings.Contains(r.out, "already unsealed (by alice)") || strings.Contains(r.out, "deriving") {
		t.Fatalf("unseal when unsealed:\n%s", r.out)
	}
	// The admin socket is 0600: another user is told why it cannot
	// connect, not asked whether the daemon runs.
	r := runCmd(t, "", "setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups",
		adminBin, "--admin-socket", e.admSock, "status")
	if r.code != 5 || !strings.Contains(r.out, "may not open the admin socket") || strings.Contains(r.out, "is sealboxd running") {
		t.Fatalf("status as another user: exit %d\n%s", r.code, r.out)
	}
}
