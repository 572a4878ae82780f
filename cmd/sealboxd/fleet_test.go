package main

// Unattended slots end to end: the real sealboxd and sealbox-admin against
// Debian's tangd (under socat on 127.0.0.1), clevis and swtpm. Bind, unseal
// with no person, rotation on the server, servers that refuse, hang or are
// dropped, a threshold of three, and a TPM whose PCRs change.

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
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// fleetConfig is a daemon configuration with short unattended deadlines,
// pinning the keyring's identity.
func fleetConfig(t *testing.T, e *env, timeout time.Duration, extra string) string {
	return writeFile(t, e.dir, "fleet.toml", fmt.Sprintf("unattended_timeout = %q\nunattended_dial_timeout = %q\nunattended_retry_max = \"2s\"\nunattended_identity = %q\n%s",
		timeout.String(), (timeout/2).String(), e.identity(), extra))
}

// identity is the keyring's identity pin, as check --as prints it (through
// the daemon when it runs).
func (e *env) identity() string {
	e.t.Helper()
	args := []string{"--keyring", e.keyring, "check", "--as", "alice", "--json"}
	if _, err := os.Stat(e.admSock); err == nil {
		args = append([]string{"--admin-socket", e.admSock}, args[2:]...)
	}
	// A file that fails verification (exit 6) still has its identity.
	r := runCmd(e.t, pwAlice+"\n", adminBin, args...)
	var res struct {
		Identity string `json:"identity"`
	}
	if err := json.NewDecoder(strings.NewReader(r.out[strings.IndexByte(r.out, '{'):])).Decode(&res); err != nil || len(res.Identity) != 64 {
		e.t.Fatalf("no identity in check: %v\n%s", err, r.out)
	}
	return res.Identity
}

// status reads the daemon's status.
func (e *env) status() *api.Status {
	e.t.Helper()
	r := runCmd(e.t, "", adminBin, "--admin-socket", e.admSock, "status", "--json")
	if r.code != 0 && r.code != 7 {
		e.t.Fatalf("status: exit %d\n%s", r.code, r.out)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(r.out), &st); err != nil {
		e.t.Fatalf("status: %v\n%s", err, r.out)
	}
	return &st
}

// waitStatus polls status until ok says so, or fails after d.
func (e *env) waitStatus(d time.Duration, what string, ok func(*api.Status) bool) *api.Status {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := e.status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st.Unattended, "", " ")
			e.t.Fatalf("%s: not within %v; unattended: %s\nlog:\n%s", what, d, b, lastLines(e.log.String(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func attempt(st *api.Status, slot string) api.UnattendedAttempt {
	for _, a := range st.Unattended {
		if a.Slot == slot {
			return a
		}
	}
	return api.UnattendedAttempt{}
}

func unsealed(st *api.Status) bool { return !st.Sealed }

// bindTang binds a tang slot on the file, trusting the server's thumbprint.
func (e *env) bindTang(s *fleettest.Tang, name string, through ...string) {
	e.t.Helper()
	args := append(through, "bind", "tang", s.URL, "--thp", s.Thumbprint(), "--name", name, "--as", "alice")
	if len(through) == 0 {
		args = append([]string{"--keyring", e.keyring}, args...)
	}
	r := e.admin(0, pwAlice+"\n", args...)
	if !strings.Contains(r.out, "bound "+name+" to "+s.URL) || !strings.Contains(r.out, "keyring identity: ") || !strings.Contains(r.out, "unattended_identity = ") {
		e.t.Fatalf("bind: %s", r.out)
	}
}

// coldStart starts the daemon and returns how long it took from start to
// unsealed, by the daemon's own clock.
func coldStart(e *env, cfg string, within time.Duration) (*api.Status, time.Duration) {
	e.t.Helper()
	e.start(nil, "--config", cfg)
	st := e.waitStatus(within, "unattended unseal", unsealed)
	return st, st.UnsealedAt.Sub(st.Started)
}

func TestTangSlotUnsealsWithNoPerson(t *testing.T) {
	t.Parallel()
	tg := fleettest.StartTang(t)
	e := newEnv(t)

	// A wrong thumbprint binds nothing (exit 6); a URL that refuses says so (5).
	r := e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", tg.URL, "--thp", strings.Repeat("A", 43), "--as", "alice")
	if !strings.Contains(r.out, "not signed by the trusted key") || !strings.Contains(r.out, "tang-show-keys") || strings.Contains(r.out, "tampered") {
		t.Fatalf("wrong thp: %s", r.out)
	}
	// A URL tang cannot use is a usage error, named as the URL's.
	if r := e.admin(2, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", tg.URL+"/x?y#z", "--thp", tg.Thumbprint(), "--as", "alice"); !strings.Contains(r.out, "url must be") || strings.Contains(r.out, "advertisement") {
		t.Fatalf("bad URL: %s", r.out)
	}
	e.admin(5, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", fleettest.RefusedURL(t), "--thp", tg.Thumbprint(), "--as", "alice")
	// No terminal and no --thp: a usage error, not a silent trust.
	e.admin(2, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", tg.URL, "--as", "alice")
	e.bindTang(tg, "tang-a")
	// The name is taken now.
	e.admin(4, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", tg.URL, "--thp", tg.Thumbprint(), "--name", "tang-a", "--as", "alice")
	// remove is for admins, invites and the recovery code: an unattended
	// slot is unbind's, with or without a rekey (which would not list it
	// among the slots to bind again).
	for _, extra := range [][]string{nil, {"--rekey"}} {
		r := e.admin(4, pwAlice+"\n", append([]string{"--keyring", e.keyring, "remove", "tang-a", "--as", "alice"}, extra...)...)
		if !strings.Contains(r.out, "sealbox-admin unbind tang-a") || strings.Contains(r.out, "removed") {
			t.Fatalf("remove %v of an unattended slot: %s", extra, r.out)
		}
	}

	var view struct {
		Slots []struct {
			Name, Kind, Binding, KDF string
		} `json:"slots"`
	}
	json.Unmarshal([]byte(e.admin(0, "", "--keyring", e.keyring, "slots", "--json").out), &view)
	found := false
	for _, s := range view.Slots {
		if s.Name == "tang-a" {
			found = s.Kind == "tang" && s.Binding == "tang "+tg.URL && s.KDF == "binding"
		}
	}
	if !found {
		t.Fatalf("slots view: %+v", view.Slots)
	}
	// The status of the file (the daemon stopped) names it too.
	if out := e.admin(0, "", "--keyring", e.keyring, "status").out; !strings.Contains(out, "unattended: tang-a (tang): tang "+tg.URL) {
		t.Fatalf("status of the file: %s", out)
	}

	// The escape hatch: the binding is a clevis JWE; clevis decrypt (with
	// the server) yields the key that opens the slot.
	kr, err := keyring.Open(e.keyring, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var h *keyring.Header
	var slot *keyring.Slot
	kr.View(func(tx *keyring.Tx) error {
		h, _ = tx.Header()
		slot, err = tx.Slot("tang-a")
		return nil
	})
	kr.Close()
	if err != nil {
		t.Fatal(err)
	}
	kek := fleettest.Run(t, slot.Binding, "clevis", "decrypt")
	k, err := unseal.OpenSlotKEK(h, slot, kek, memlock.Options{AllowUnlocked: true})
	if err != nil {
		t.Fatalf("the key clevis decrypt gave does not open the slot: %v", err)
	}
	k.Destroy()
	// A password never opens it: to a login it is an unknown name.
	e.admin(3, "anything at all\n", "--keyring", e.keyring, "check", "--as", "tang-a")

	// Without the identity pinned in the configuration nothing is tried.
	e.start(nil, "--config", writeFile(t, e.dir, "nopin.toml", "unattended_timeout = \"2s\"\nunattended_dial_timeout = \"1s\"\n"))
	st := e.waitStatus(3*time.Second, "tang-a off", func(st *api.Status) bool { return attempt(st, "tang-a").State == "off" })
	if a := attempt(st, "tang-a"); !st.Sealed || a.Tries != 0 || !strings.Contains(a.Error, "unattended_identity is not set") {
		t.Fatalf("no pin: %+v", a)
	}
	e.stop(15)
	cfg := fleetConfig(t, e, 2*time.Second, "")
	st, took := coldStart(e, cfg, 5*time.Second)
	a := attempt(st, "tang-a")
	if st.UnsealedBy != "tang-a" || a.State != "unsealed" || a.Tries != 1 || a.Method != "tang "+tg.URL {
		t.Fatalf("status after the unattended unseal: by %q, %+v", st.UnsealedBy, a)
	}
	t.Logf("cold start, one tang slot: unsealed %v after start (tang attempt %d ms)", took.Round(time.Millisecond), a.ElapsedMS)
	if out := e.online(0, "", "audit", "--admin", "tang-a").out; !strings.Contains(out, "unseal") || !strings.Contains(out, "tang "+tg.URL) {
		t.Fatalf("audit: %s", out)
	}
	// An admin's seal is not undone by a machine.
	e.online(0, "", "seal")
	time.Sleep(2500 * time.Millisecond)
	if !e.status().Sealed {
		t.Fatal("the unattended slot unsealed again after an admin sealed")
	}
	e.stop(15)

	// Rotation on the server: the old key, hidden, still answers.
	tg.Rotate()
	st, _ = coldStart(e, cfg, 5*time.Second)
	if st.UnsealedBy != "tang-a" {
		t.Fatalf("after rotation: unsealed by %q", st.UnsealedBy)
	}
	e.stop(15)
	// Once the old keys are deleted the server answers 404. Anyone on the
	// path could say that too, so the slot is tried again, at the slowest
	// pace (unattended_retry_max, 2 s here), and the failure is recorded
	// once, not at every try.
	restore := tg.DropHidden()
	e.start(nil, "--config", cfg)
	st = e.waitStatus(8*time.Second, "tang-a tried twice", func(st *api.Status) bool {
		a := attempt(st, "tang-a")
		return a.State == "waiting" && a.Tries >= 2
	})
	if a := attempt(st, "tang-a"); !st.Sealed || !strings.Contains(a.Error, "no longer has the key") || a.NextTry == nil ||
		a.NextTry.Sub(*a.LastTry) < 1400*time.Millisecond {
		t.Fatalf("after the keys were deleted: want a slow retry: %+v", a)
	}
	if out := e.online(0, "", "audit", "--json").out; strings.Count(out, "no longer has the key") != 1 {
		t.Fatalf("want the 404 recorded once:\n%s", out)
	}
	// The server takes it back (its keys restored from a backup): the next
	// try unseals.
	restore()
	st = e.waitStatus(5*time.Second, "unsealed after the keys came back", unsealed)
	if st.UnsealedBy != "tang-a" {
		t.Fatalf("after the keys came back: unsealed by %q", st.UnsealedBy)
	}
	e.online(0, "", "seal")
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	// Unbind through the daemon; it is gone from the file.
	e.online(4, pwAlice+"\n", "unbind", "bob", "--as", "alice")
	if out := e.online(4, pwAlice+"\n", "unbind", "nosuch", "--as", "alice").out; !strings.Contains(out, `no slot "nosuch"`) || strings.Contains(out, "no such admin") {
		t.Fatalf("unbind of a name no slot has: %s", out)
	}
	e.online(0, pwAlice+"\n", "unbind", "tang-a", "--as", "alice")
	if out := e.online(0, "", "slots").out; strings.Contains(out, "tang-a") {
		t.Fatalf("unbound slot still listed: %s", out)
	}
	if out := e.online(0, "", "audit", "--admin", "tang-a").out; !strings.Contains(out, "slot.unbind") || !strings.Contains(out, "slot.bind") {
		t.Fatalf("audit of bind and unbind: %s", out)
	}
}

// A refused port and a server that hangs each give up within their deadline
// while a working server unseals at once; with no working server, an
// admin's password is not held up by the attempts in flight.
func TestUnattendedDeadlines(t *testing.T) {
	t.Parallel()
	refused, hung, good := fleettest.StartTang(t), fleettest.StartTang(t), fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(refused, "tang-refused")
	e.bindTang(hung, "tang-hung")
	e.bindTang(good, "tang-good")
	refused.Stop()
	hung.Hang()
	const timeout = 2 * time.Second
	cfg := fleetConfig(t, e, timeout, "")
	st, took := coldStart(e, cfg, timeout)
	if st.UnsealedBy != "tang-good" {
		t.Fatalf("unsealed by %q", st.UnsealedBy)
	}
	t.Logf("cold start, one working of three (refused, hung): %v", took.Round(time.Millisecond))
	if a := attempt(st, "tang-refused"); a.Tries < 1 || a.ElapsedMS > 1000 || !strings.Contains(a.Error, "unreachable") {
		t.Fatalf("refused: %+v", a)
	}
	e.stop(15)

	good.Hang()
	e.start(nil, "--config", cfg)
	// While both hang, an admin's unseal goes through at once.
	start := time.Now()
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	if d := time.Since(start); d > timeout {
		t.Fatalf("an admin's unseal waited %v behind the unattended attempts", d)
	}
	e.online(0, "", "seal")
	before := failures(e, "tang-refused")
	e.stop(15)
	e.start(nil, "--config", cfg)
	st = e.waitStatus(timeout+3*time.Second, "every attempt gave up", func(st *api.Status) bool {
		for _, n := range []string{"tang-refused", "tang-hung", "tang-good"} {
			if a := attempt(st, n); a.State != "waiting" && !(a.State == "trying" && a.Tries > 1) {
				return false
			}
		}
		return true
	})
	for _, n := range []string{"tang-hung", "tang-good"} {
		a := attempt(st, n)
		if a.ElapsedMS < timeout.Milliseconds()-100 || a.ElapsedMS > timeout.Milliseconds()+1500 || !strings.Contains(a.Error, "unreachable") {
			t.Fatalf("%s: gave up after %d ms (deadline %v): %+v", n, a.ElapsedMS, timeout, a)
		}
	}
	if !st.Sealed {
		t.Fatal("unsealed with no server answering")
	}
	// Retries that fail the same way are one record, not one each.
	e.waitStatus(5*time.Second, "tang-refused retried", func(st *api.Status) bool { return attempt(st, "tang-refused").Tries >= 3 })
	if n := failures(e, "tang-refused") - before; n != 1 {
		t.Fatalf("%d failure records for one reason over 3 tries, want 1", n)
	}
	// The retries go on in the background: a server that comes back
	// unseals without a person.
	good.Start()
	st = e.waitStatus(10*time.Second, "unsealed once the server is back", unsealed)
	if st.UnsealedBy != "tang-good" || attempt(st, "tang-good").Tries < 2 {
		t.Fatalf("after the server came back: by %q %+v", st.UnsealedBy, attempt(st, "tang-good"))
	}
}

// Threshold 2 of 3 Tang servers: unseals with one down, not with two; with
// two down it gives up within the deadline.
func TestThresholdTwoOfThreeTangServers(t *testing.T) {
	t.Parallel()
	servers := []*fleettest.Tang{fleettest.StartTang(t), fleettest.StartTang(t), fleettest.StartTang(t)}
	e := newEnv(t)
	e.start(nil, "--config", fleetConfig(t, e, 2*time.Second, ""))
	// Bound through the daemon this time.
	for i, s := range servers {
		e.bindTang(s, fmt.Sprintf("tang-%d", i+1), "--admin-socket", e.admSock)
	}
	e.online(2, pwAlice+"\n", "bind", "threshold", "4", "tang-1", "tang-2", "tang-3", "--as", "alice")
	e.online(4, pwAlice+"\n", "bind", "threshold", "2", "tang-1", "bob", "--as", "alice")
	r := e.online(0, pwAlice+"\n", "bind", "threshold", "2", "tang-1", "tang-2", "tang-3", "--name", "site", "--as", "alice")
	if !strings.Contains(r.out, "bound site: 2 of tang-1, tang-2, tang-3") {
		t.Fatalf("bind threshold: %s", r.out)
	}
	out := e.online(0, "", "slots").out
	if strings.Contains(out, "tang-1") || !strings.Contains(out, "threshold 2 of 3: tang "+servers[0].URL) {
		t.Fatalf("slots after the threshold replaced its members:\n%s", out)
	}
	// status lists what was bound since the start, as not tried yet.
	if st := e.status(); attempt(st, "site").State != "off" || !strings.Contains(attempt(st, "site").Error, "next start") || attempt(st, "tang-1").Slot != "" {
		t.Fatalf("status after binds through the daemon: %+v", st.Unattended)
	}
	e.stop(15)
	cfg := fleetConfig(t, e, 2*time.Second, "")

	st, took := coldStart(e, cfg, 5*time.Second)
	if st.UnsealedBy != "site" {
		t.Fatalf("all up: unsealed by %q", st.UnsealedBy)
	}
	t.Logf("cold start, threshold 2 of 3, all up: %v", took.Round(time.Millisecond))
	e.stop(15)

	servers[1].Stop()
	st, took = coldStart(e, cfg, 5*time.Second)
	a := attempt(st, "site")
	if st.UnsealedBy != "site" || len(a.Members) != 3 {
		t.Fatalf("one down: by %q %+v", st.UnsealedBy, a)
	}
	t.Logf("cold start, threshold 2 of 3, one refused: %v", took.Round(time.Millisecond))
	e.stop(15)

	servers[2].Hang()
	e.start(nil, "--config", cfg)
	st = e.waitStatus(5*time.Second, "threshold gave up", func(st *api.Status) bool { return attempt(st, "site").State == "waiting" })
	a = attempt(st, "site")
	if !st.Sealed || a.ElapsedMS > 3500 || !strings.Contains(a.Error, "1 of 3 gave a share, 2 needed") {
		t.Fatalf("two down: sealed %v, %+v", st.Sealed, a)
	}
	t.Logf("threshold 2 of 3 with one refused and one hung: gave up after %d ms (deadline 2 s)", a.ElapsedMS)
	// The text status says which members failed and why.
	out = e.online(7, "", "status").out
	for _, want := range []string{"unattended: site (threshold 2 of 3", "member tang " + servers[0].URL + ": ok", "member tang " + servers[1].URL + ": recovering from " + servers[1].URL + ": tang server unreachable"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}
}

// A tpm2 slot: seals, unseals with no person, fails cleanly after a PCR
// extend (a firmware or kernel update), and the next admin unseal seals it
// again so that the next start unseals by itself.
func TestTPM2SlotAndReseal(t *testing.T) {
	t.Parallel()
	tpm := fleettest.StartSWTPM(t)
	e := newEnv(t)
	r := e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tpm2", "--pcrs", "7", "--tcti", tpm.TCTI(), "--as", "alice")
	if !strings.Contains(r.out, "bound tpm2-1") {
		t.Fatalf("bind tpm2: %s", r.out)
	}
	e.admin(2, pwAlice+"\n", "--keyring", e.keyring, "bind", "tpm2", "--pcrs", "24", "--tcti", tpm.TCTI(), "--as", "alice")
	cfg := fleetConfig(t, e, 5*time.Second, fmt.Sprintf("tpm2_tcti = %q\n", tpm.TCTI()))
	st, took := coldStart(e, cfg, 10*time.Second)
	if st.UnsealedBy != "tpm2-1" || attempt(st, "tpm2-1").Method != "tpm2 sha256:7" {
		t.Fatalf("tpm2: by %q %+v", st.UnsealedBy, attempt(st, "tpm2-1"))
	}
	t.Logf("cold start, tpm2 slot: %v (attempt %d ms)", took.Round(time.Millisecond), attempt(st, "tpm2-1").ElapsedMS)
	e.stop(15)

	tpm.Extend(7)
	e.start(nil, "--config", cfg)
	st = e.waitStatus(10*time.Second, "tpm2 failed", func(st *api.Status) bool { return attempt(st, "tpm2-1").State == "failed" })
	if a := attempt(st, "tpm2-1"); !st.Sealed || !strings.Contains(a.Error, "PCRs differ") {
		t.Fatalf("after the extend: %+v", a)
	}
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	waitLog(t, e, "sealed again to the current PCR values")
	if out := e.online(0, "", "audit", "--admin", "tpm2-1").out; !strings.Contains(out, "slot.reseal") {
		t.Fatalf("no reseal record: %s", out)
	}
	e.stop(15)
	// The next boot with the same (changed) PCRs unseals by itself. A
	// reboot resets PCRs, so this one is the TPM as it now stands.
	st, _ = coldStart(e, cfg, 10*time.Second)
	if st.UnsealedBy != "tpm2-1" {
		t.Fatalf("after the reseal: by %q", st.UnsealedBy)
	}
}

// A threshold of this host's TPM and the site's Tang server (2 of 2: the
// disk unseals only in this machine, on this network): a PCR extend makes
// its tpm2 member fail for good, and the next admin unseal seals that
// member again, inside the threshold, so the next start unseals by itself.
func TestMixedThresholdReseal(t *testing.T) {
	t.Parallel()
	tg, tpm := fleettest.StartTang(t), fleettest.StartSWTPM(t)
	e := newEnv(t)
	e.bindTang(tg, "tang-1")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tpm2", "--pcrs", "7", "--tcti", tpm.TCTI(), "--name", "tpm-1", "--as", "alice")
	r := e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "threshold", "2", "tang-1", "tpm-1", "--name", "here", "--tcti", tpm.TCTI(), "--as", "alice")
	if !strings.Contains(r.out, "bound here: 2 of tang-1, tpm-1") {
		t.Fatalf("bind threshold: %s", r.out)
	}
	before := rawSlot(t, e.keyring, "here")
	cfg := fleetConfig(t, e, 5*time.Second, fmt.Sprintf("tpm2_tcti = %q\n", tpm.TCTI()))
	st, took := coldStart(e, cfg, 10*time.Second)
	if st.UnsealedBy != "here" {
		t.Fatalf("both members up: unsealed by %q", st.UnsealedBy)
	}
	t.Logf("cold start, threshold 2 of (tang, tpm2): %v", took.Round(time.Millisecond))
	e.stop(15)

	// The server down: not for good, the threshold waits for it.
	tg.Stop()
	e.start(nil, "--config", cfg)
	st = e.waitStatus(10*time.Second, "waiting for the server", func(st *api.Status) bool { return attempt(st, "here").State == "waiting" })
	if !st.Sealed {
		t.Fatal("unsealed with one of two members")
	}
	e.stop(15)
	tg.Start()

	// A firmware update: PCR 7 changes. The TPM member fails for good, so
	// the threshold does, and is not retried.
	tpm.Extend(7)
	e.start(nil, "--config", cfg)
	st = e.waitStatus(10*time.Second, "the threshold failed", func(st *api.Status) bool { return attempt(st, "here").State == "failed" })
	a := attempt(st, "here")
	if !st.Sealed || len(a.Members) != 2 || !strings.Contains(a.Members[1].Error, "PCRs differ") || a.Members[0].Error != "" {
		t.Fatalf("after the extend: %+v", a)
	}
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	waitLog(t, e, "sealed again to the current PCR values")
	if out := e.online(0, "", "audit", "--admin", "here").out; !strings.Contains(out, "slot.reseal") {
		t.Fatalf("no reseal record for the threshold: %s", out)
	}
	e.stop(15)
	after := rawSlot(t, e.keyring, "here")
	if bytes.Equal(before, after) {
		t.Fatal("the threshold's record did not change")
	}
	st, _ = coldStart(e, cfg, 10*time.Second)
	if st.UnsealedBy != "here" {
		t.Fatalf("after the reseal: unsealed by %q", st.UnsealedBy)
	}
	// Still bound to the site: with the server gone, it does not open.
	e.stop(15)
	tg.Stop()
	e.start(nil, "--config", cfg)
	if st := e.waitStatus(10*time.Second, "waiting after the reseal", func(st *api.Status) bool { return attempt(st, "here").State == "waiting" }); !st.Sealed {
		t.Fatal("the resealed threshold opened without its Tang member")
	}
}

// A host dropped from the network (SYN dropped, in a private network
// namespace) gives up within its deadline while a working server unseals.
func TestDroppedHostGivesUpWithinItsDeadline(t *testing.T) {
	requireRootTools(t)
	for _, tool := range []string{"unshare", "ip", "iptables", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbin.Require(t, tool+" is missing (.ci/run installs iptables, iproute2)")
		}
	}
	t.Parallel()
	dropped, good := fleettest.StartTang(t), fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(dropped, "tang-dropped")
	e.bindTang(good, "tang-good")
	dropped.Stop()
	good.Stop()
	// The namespace's iptables and tangd: see netns below.
	port := func(u string) string { return u[strings.LastIndexByte(u, ':')+1:] }
	// In a namespace of its own: lo up, the dropped server's port
	// firewalled (SYNs vanish), and, when serve, the good server's keys
	// served by a tangd started there; then sealboxd.
	pidFile := filepath.Join(e.dir, "socat.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	netns := func(serve bool) []string {
		script := fmt.Sprintf("set -e\nip link set lo up\niptables -A INPUT -i lo -p tcp --dport %s -j DROP\n", port(dropped.URL))
		if serve {
			// socat's output goes nowhere (it would hold the test's pipes
			// open), and its pid to a file, for the cleanup to kill it.
			script += fmt.Sprintf("socat TCP-LISTEN:%s,bind=127.0.0.1,reuseaddr,fork EXEC:\"%s %s\" </dev/null >/dev/null 2>&1 &\necho $! > %s\n"+
				"for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/%s) 2>/dev/null && break; sleep 0.05; done\n",
				port(good.URL), fleettest.Tangd, good.Dir, pidFile, port(good.URL))
		}
		return []string{"unshare", "-n", "bash", "-c", script + `exec "$@"`, "sealboxd"}
	}
	const timeout = 2 * time.Second
	cfg := fleetConfig(t, e, timeout, "")
	e.start(netns(false), "--config", cfg)
	st := e.waitStatus(timeout+3*time.Second, "the dropped host gave up", func(st *api.Status) bool { return attempt(st, "tang-dropped").State == "waiting" })
	a := attempt(st, "tang-dropped")
	if !st.Sealed || a.ElapsedMS < 900 || a.ElapsedMS > timeout.Milliseconds()+1500 || !strings.Contains(a.Error, "unreachable") {
		t.Fatalf("dropped host: %+v", a)
	}
	t.Logf("dropped host (SYN dropped): gave up after %d ms (dial deadline %v, attempt deadline %v)", a.ElapsedMS, timeout/2, timeout)
	e.stop(15)
	st, took := coldStart2(e, netns(true), cfg, timeout)
	if st.UnsealedBy != "tang-good" {
		t.Fatalf("unsealed by %q", st.UnsealedBy)
	}
	t.Logf("cold start with a dropped host and a working one: %v", took.Round(time.Millisecond))
}

func coldStart2(e *env, prefix []string, cfg string, within time.Duration) (*api.Status, time.Duration) {
	e.t.Helper()
	e.start(prefix, "--config", cfg)
	st := e.waitStatus(within, "unattended unseal", unsealed)
	return st, st.UnsealedAt.Sub(st.Started)
}

// socketActivate serves path as systemd's Accept=yes socket units do: each
// connection runs sealbox-admin unattended-helper with the connection as
// stdin and stdout (systemd-socket-activate --inetd).
func socketActivate(t *testing.T, path string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		testbin.Require(t, "systemd-socket-activate is missing (package systemd)")
	}
	cmd := exec.Command("systemd-socket-activate", append([]string{"--inetd", "--accept", "-l", path, adminBin, "unattended-helper"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if i > 100 {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sealboxd with no network at all (a private network namespace, as its
// unit's PrivateNetwork=yes) unseals through its Tang and TPM2 slots,
// because the socket-activated helpers do that work; through the TPM helper
// it also binds and reseals.
func TestHelpersDoWhatTheDaemonMayNot(t *testing.T) {
	if os.Geteuid() != 0 {
		testbin.Require(t, "needs root for a private network namespace (unshare -n)")
	}
	t.Parallel()
	tg := fleettest.StartTang(t)
	tpm := fleettest.StartSWTPM(t)
	e := newEnv(t)
	e.bindTang(tg, "tang-1")
	helpers := filepath.Join(e.dir, "helpers")
	os.Mkdir(helpers, 0o755)
	cfg := writeFile(t, e.dir, "helpers.toml", fmt.Sprintf("unattended_timeout = \"3s\"\nunattended_dial_timeout = \"1s\"\nunattended_helpers = %q\nunattended_identity = %q\n", helpers, e.identity()))
	noNet := []string{"unshare", "-n"}

	// Without a helper, the daemon (no network) cannot reach the server.
	e.start(noNet, "--config", cfg)
	st := e.waitStatus(5*time.Second, "tang-1 tried", func(st *api.Status) bool { return attempt(st, "tang-1").State == "waiting" })
	if a := attempt(st, "tang-1"); !st.Sealed || !strings.Contains(a.Error, "unreachable") {
		t.Fatalf("no helper, no network: %+v", a)
	}
	e.stop(15)

	socketActivate(t, filepath.Join(helpers, "tang.sock"), "--kind", "tang")
	socketActivate(t, filepath.Join(helpers, "tpm2.sock"), "--kind", "tpm2", "--tcti", tpm.TCTI())
	st, took := coldStart2(e, noNet, cfg, 5*time.Second)
	if st.UnsealedBy != "tang-1" {
		t.Fatalf("through the tang helper: by %q %+v", st.UnsealedBy, attempt(st, "tang-1"))
	}
	t.Logf("cold start through the tang helper (a process per exchange): %v", took.Round(time.Millisecond))

	// Bound through the daemon: the TPM helper seals (the daemon has no TPM
	// and no TCTI that reaches one from its namespace).
	e.online(0, pwAlice+"\n", "unbind", "tang-1", "--as", "alice")
	if r := e.online(0, pwAlice+"\n", "bind", "tpm2", "--pcrs", "7", "--as", "alice"); !strings.Contains(r.out, "bound tpm2-1") {
		t.Fatalf("bind tpm2 through the daemon: %s", r.out)
	}
	e.stop(15)
	st, took = coldStart2(e, noNet, cfg, 5*time.Second)
	if st.UnsealedBy != "tpm2-1" {
		t.Fatalf("through the tpm2 helper: by %q %+v", st.UnsealedBy, attempt(st, "tpm2-1"))
	}
	t.Logf("cold start through the tpm2 helper: %v", took.Round(time.Millisecond))
	e.stop(15)
	tpm.Extend(7)
	e.start(noNet, "--config", cfg)
	e.waitStatus(5*time.Second, "tpm2-1 failed", func(st *api.Status) bool { return attempt(st, "tpm2-1").State == "failed" })
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	waitLog(t, e, "sealed again to the current PCR values")
	e.stop(15)
	if st, _ := coldStart2(e, noNet, cfg, 5*time.Second); st.UnsealedBy != "tpm2-1" {
		t.Fatalf("after the reseal through the helper: by %q", st.UnsealedBy)
	}
	// A helper refuses the other kind's requests.
	r := runCmd(t, `{"op":"open","kind":"tpm2","binding":"AA==","timeout_ms":1000}`+"\n", adminBin, "unattended-helper", "--kind", "tang")
	if r.code != 0 || !strings.Contains(r.out, `"code":"invalid"`) || !strings.Contains(r.out, "serves tang") {
		t.Fatalf("cross-kind request: %d %s", r.code, r.out)
	}
}

// failures counts the failed unseal records of slot in the audit log.
func failures(e *env, slot string) int {
	e.t.Helper()
	out := e.online(0, "", "audit", "--admin", slot, "--jsonl").out
	return strings.Count(out, `"outcome":"error"`)
}

// A connection to a helper's socket that sends nothing (only the sealbox
// user can connect, but a stuck or hostile process of that user could) is
// answered with an error and closed after unattended.DefaultRequestTimeout,
// instead of holding a helper process until the unit's RuntimeMaxSec
// (6 min). The answer comes from the helper as systemd's Accept=yes runs it.
func TestHelperDropsASilentConnection(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "tang.sock")
	socketActivate(t, sock, "--kind", "tang")
	const silent = 3
	type result struct {
		took time.Duration
		out  string
		err  error
	}
	done := make(chan result, silent)
	start := time.Now()
	for range silent {
		go func() {
			c, err := net.Dial("unix", sock)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(unattended.DefaultRequestTimeout + 20*time.Second))
			out, err := io.ReadAll(c) // the answer, then EOF when the helper exits
			done <- result{time.Since(start), string(out), err}
		}()
	}
	for range silent {
		r := <-done
		if r.err != nil {
			t.Fatalf("a silent connection: %v (after %v, got %q)", r.err, r.took, r.out)
		}
		if r.took < unattended.DefaultRequestTimeout-time.Second || r.took > unattended.DefaultRequestTimeout+10*time.Second {
			t.Fatalf("a silent connection was closed after %v, want about %v", r.took, unattended.DefaultRequestTimeout)
		}
		if !strings.Contains(r.out, `"code":"invalid"`) || !strings.Contains(r.out, "reading the request") {
			t.Fatalf("a silent connection's answer: %q", r.out)
		}
	}
	// A connection that sends its request at once is served as before.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, `{"op":"open","kind":"tpm2","binding":"AA==","timeout_ms":1000}`+"\n")
	if out, err := io.ReadAll(c); err != nil || !strings.Contains(string(out), "serves tang") {
		t.Fatalf("a prompt request: %v %q", err, out)
	}
}

// Started on a pipe (as sealbox-bench and a shell do), the helper waits for
// a writer slower than itself: stdin stays a blocking pipe, not one left
// non-blocking by a failed attempt to take it as a socket, which answered
// "resource temporarily unavailable" when the request came late.
func TestHelperWaitsForASlowPipe(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(adminBin, "unattended-helper", "--kind", "tang")
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // well after the helper is reading
	fmt.Fprintf(w, `{"op":"open","kind":"tpm2","binding":"AA==","timeout_ms":1000}`+"\n")
	w.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v: %s", err, out.String())
	}
	if !strings.Contains(out.String(), "serves tang") {
		t.Fatalf("a request that came late on a pipe: %q", out.String())
	}
}
