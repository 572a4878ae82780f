package main

// Secret hygiene: what the secret and passwords never reach.

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestSecretHygiene runs a whole session and then looks for the secrets and
// passwords everywhere sealbox writes or shows things: the keyring file,
// the daemon's log, its environment and command line, and the directories
// it uses. It also checks core dumps are impossible.
func TestSecretHygiene(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	os.MkdirAll(filepath.Dir(e.sock), 0o755)
	for _, p := range []string{filepath.Dir(e.keyring), e.keyring, filepath.Dir(e.sock)} {
		os.Chown(p, nobody, nobody)
	}
	e.start([]string{"setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups"})
	rotated := []byte("rotated hygiene value: 9c0ffee-4711")
	next := writeFile(t, e.dir, "next", string(rotated))
	e.online(3, "wrong password typed here\n", "unseal", "--admin", "bob")
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.expectRead(nobody, 200)
	e.online(0, pwAlice+"\n", "rotate", "--as", "alice", "--secret-file", next)
	os.Remove(next)
	if body := e.expectRead(nobody, 200); !bytes.Equal(body, rotated) {
		t.Fatalf("after rotate: %q", body)
	}

	// Core dumps impossible: limit 0, and not dumpable (proc(5): the
	// /proc/PID files of a non-dumpable process belong to root, although
	// this daemon runs as nobody).
	if core := strings.Fields(procField(t, e.pid, "limits", "Max core file size")); core[4] != "0" {
		t.Errorf("core limit %v", core)
	}
	if st, err := os.Stat(fmt.Sprintf("/proc/%d/environ", e.pid)); err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the daemon (uid %d) is dumpable: its /proc files are not root's", nobody)
	}
	var exposed []byte
	for _, f := range []string{"environ", "cmdline"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", e.pid, f))
		if err != nil {
			t.Fatal(err)
		}
		exposed = append(exposed, b...)
	}
	e.online(0, "", "seal")
	e.stop(syscall.SIGTERM)
	exposed = append(exposed, []byte(e.log.String())...)
	filepath.Walk(e.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			exposed = append(exposed, b...)
		}
		return nil
	})
	needles := [][]byte{}
	for _, s := range [][]byte{masterSecret, rotated, []byte(pwAlice), []byte(pwBob), []byte("wrong password typed here")} {
		needles = append(needles, s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)))
	}
	needles = append(needles, masterSecret[:12], rotated[:20])
	for _, n := range needles {
		if bytes.Contains(exposed, n) {
			t.Errorf("found %q in what sealbox left behind", n)
		}
	}
	t.Logf("scanned %d bytes (keyring, log, environ, cmdline, files): %d needles, 0 hits", len(exposed), len(needles))
}
