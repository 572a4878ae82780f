package main

// Crash consistency: run real sealbox-admin changes on a real keyring and
// SIGKILL them at random moments, then check that the file opens and
// checks out, that every acknowledged change is there, that the admin set
// is never empty, and that every admin can still unseal with the password
// they were last told worked.
//
// CI runs 20 kills; make crash runs SEALBOX_CRASH_KILLS=200.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// slotMACs snapshots every admin slot's MAC straight from the file.
func slotMACs(t *testing.T, path string) map[string][sha256.Size]byte {
	t.Helper()
	kr, err := keyring.Open(path, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the keyring does not open: %v", err)
	}
	defer kr.Close()
	out := map[string][sha256.Size]byte{}
	err = kr.View(func(tx *keyring.Tx) error {
		slots, err := tx.Slots()
		for _, s := range slots {
			if s.Kind == keyring.KindAdmin {
				out[s.Name] = sha256.Sum256(tx.RawSlot(s.Name))
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("the keyring's slots do not decode: %v", err)
	}
	return out
}

// opensWith reports whether pw opens name's slot, straight through the
// unseal package: no backoff counted, no audit record written.
func opensWith(t *testing.T, path, name, pw string) bool {
	t.Helper()
	kr, err := keyring.Open(path, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	ok := false
	kr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			t.Fatal(err)
		}
		s, err := tx.Slot(name)
		if err != nil {
			t.Fatal(err)
		}
		k, err := unseal.OpenSlot(h, s, []byte(pw), memlock.Options{AllowUnlocked: true})
		if err == nil {
			k.Destroy()
			ok = true
		}
		return nil
	})
	return ok
}

func TestCrashConsistency(t *testing.T) {
	kills := 20
	if v := os.Getenv("SEALBOX_CRASH_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d, %d kills", seed, kills)
	path := initKeyring(t)
	kr := []string{"--keyring", path}
	admins := map[string]string{"alice": pwA} // acknowledged: name → password
	next, killed, acked, refused := 0, 0, 0, 0
	names := func() []string {
		var ns []string
		for n := range admins {
			ns = append(ns, n)
		}
		sort.Strings(ns)
		return ns
	}
	pick := func() string { ns := names(); return ns[rng.IntN(len(ns))] }
	verifyUnseal := func(name string) {
		t.Helper()
		r := run(t, admins[name]+"\n", append(kr, "check", "--as", name)...)
		if r.code != 0 {
			t.Fatalf("after %d kills, %s cannot unseal with the acknowledged password: exit %d\n%s", killed, name, r.code, r.stderr)
		}
	}
	for killed < kills {
		before := slotMACs(t, path)
		ops := []string{"add", "add", "remove", "passwd", "invite", "rekey"}
		if len(admins) < 3 {
			ops = append(ops, "add", "add") // keep several admins, so the final check covers several
		}
		op := ops[rng.IntN(len(ops))]
		var args []string
		var stdin, target, newPw string
		actor := pick()
		switch op {
		case "add":
			next++
			target, newPw = fmt.Sprintf("admin%d", next), fmt.Sprintf("password number %d!", next)
			args, stdin = []string{"add", target, "--as", actor}, admins[actor]+"\n"+newPw+"\n"
		case "remove":
			target = pick()
			args, stdin = []string{"remove", target, "--as", actor}, admins[actor]+"\n"
		case "passwd":
			target, newPw = actor, fmt.Sprintf("changed password %d!", rng.IntN(1<<30))
			args, stdin = []string{"passwd", target}, admins[actor]+"\n"+newPw+"\n"
		case "invite":
			next++
			target = fmt.Sprintf("invitee%d", next)
			args, stdin = []string{"invite", target, "--as", actor}, admins[actor]+"\n"
		case "rekey":
			args, stdin = []string{"rekey", "--as", actor}, admins[actor]+"\n"
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, append(kr, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.IntN(900)) * time.Millisecond
		timer := time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
		err := cmd.Wait()
		timer.Stop()
		cancel()
		var ee *exec.ExitError
		status := "acked"
		switch {
		case err == nil:
			acked++
		case errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled():
			killed++
			status = "killed"
		default:
			refused++ // the rules said no (the last admin, say): nothing changed
			status = "refused"
		}
		after := slotMACs(t, path)
		// Acknowledged changes are there; a killed one either happened or
		// did not, and the file tells which.
		switch op {
		case "add":
			if _, ok := after[target]; ok {
				admins[target] = newPw
			} else if status == "acked" {
				t.Fatalf("add %s was acknowledged but is not in the file", target)
			}
		case "remove":
			if _, ok := after[target]; !ok {
				delete(admins, target)
			} else if status == "acked" {
				t.Fatalf("remove %s was acknowledged but the slot is still there", target)
			}
		case "passwd":
			switch {
			case status == "acked":
				if after[target] == before[target] {
					t.Fatalf("passwd %s was acknowledged but the slot did not change", target)
				}
				admins[target] = newPw
			case after[target] != before[target]:
				// Killed, and the slot changed: either the new password
				// committed, or only the login before it did (a login
				// rewraps a slot that missed a rekey, under the old
				// password, in a transaction of its own). Ask the slot.
				switch {
				case opensWith(t, path, target, newPw):
					admins[target] = newPw
				case !opensWith(t, path, target, admins[target]):
					t.Fatalf("after a killed passwd, %s's slot opens with neither the old nor the new password", target)
				}
			}
		}
		if len(after) == 0 {
			t.Fatalf("after %s (%s) the keyring has no admin", op, status)
		}
		got := make([]string, 0, len(after))
		for n := range after {
			got = append(got, n)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(names(), ",") {
			t.Fatalf("after %s (%s): admins in the file %v, acknowledged %v", op, status, got, names())
		}
		if r := run(t, "", append(kr, "check")...); r.code != 0 {
			t.Fatalf("after %s (%s): check fails: %s", op, status, r.stderr)
		}
		var listed []map[string]any
		if r := run(t, "", append(kr, "list", "--json")...); json.Unmarshal([]byte(r.stdout), &listed) != nil {
			t.Fatalf("after %s (%s): list --json: %s", op, status, r.stdout)
		}
		if status == "killed" && killed%5 == 0 {
			verifyUnseal(pick())
		}
	}
	for _, n := range names() {
		verifyUnseal(n)
	}
	t.Logf("%d kills survived, %d changes acknowledged, %d refused by the rules; %d admins at the end, each unseals", killed, acked, refused, len(admins))
}
