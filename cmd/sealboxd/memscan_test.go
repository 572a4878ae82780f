package main

// The memory promise of DESIGN.md and docs/threat-model.md, attacked the way
// an attacker with root after seal would: read the whole memory of the
// running daemon through /proc/PID/mem and search it for every key and
// password it handled. Only the two log keys may remain, and only in locked
// pages (FORMAT.md, Audit log).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/unseal/shamir"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/unattended"

	"golang.org/x/crypto/argon2"

	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/keyring"
)

// keysOf computes, from the file and alice's password alone (bare
// primitives, FORMAT.md), what the scan looks for.
func keysOf(t *testing.T, path, name, password string) map[string][]byte {
	t.Helper()
	kr, err := keyring.Open(path, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	var h *keyring.Header
	var s *keyring.Slot
	kr.View(func(tx *keyring.Tx) error {
		h, _ = tx.Header()
		s, err = tx.Slot(name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	kek := argon2.IDKey([]byte(password), s.Salt[:], s.Params.Time, s.Params.MemoryKiB, s.Params.Threads, 32)
	keys := keysUnder(t, h, s, kek)
	keys["password"] = []byte(password)
	keys["password (base64)"] = []byte(base64.StdEncoding.EncodeToString([]byte(password)))
	return keys
}

// keysUnder opens slot s with its KEK (bare primitives, FORMAT.md) and
// returns the KEK and the keys the scan looks for.
func keysUnder(t *testing.T, h *keyring.Header, s *keyring.Slot, kek []byte) map[string][]byte {
	t.Helper()
	name := s.Name
	aad := append([]byte("sealbox/v2/slot"), h.ID[:]...)
	aad = append(aad, byte(s.Kind))
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(name)))
	aad = append(aad, name...)
	b, _ := aes.NewCipher(kek)
	g, _ := cipher.NewGCM(b)
	plain, err := g.Open(nil, s.Nonce[:], s.Wrapped[:], aad)
	if err != nil {
		t.Fatalf("the test could not open %s's slot: %v", name, err)
	}
	dk := plain[:32]
	hk := func(info string) []byte { k, _ := hkdf.Key(sha256.New, dk, h.ID[:], info, 32); return k }
	return map[string][]byte{
		"KEK":                kek,
		"DataKey":            dk,
		"hand-over key":      plain[32:64],
		"escrow key":         hk("sealbox/v2/escrow-key"),
		"root key (locked)":  hk("sealbox/v2/root-key"),
		"audit key (locked)": hk("sealbox/v1/audit-key"),
	}
}

type region struct {
	lo, hi uint64
	line   string
	locked bool
}

// regions lists pid's readable mappings, with whether each is mlock'd.
func regions(t *testing.T, pid int) []region {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []region
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && len(fields[1]) == 4 {
			a := strings.SplitN(fields[0], "-", 2)
			lo, _ := strconv.ParseUint(a[0], 16, 64)
			hi, _ := strconv.ParseUint(a[1], 16, 64)
			out = append(out, region{lo: lo, hi: hi, line: line})
			if fields[1][0] != 'r' || strings.HasSuffix(line, "[vvar]") || strings.HasSuffix(line, "[vsyscall]") || strings.HasSuffix(line, "[vvar_vclock]") {
				out[len(out)-1].hi = lo // not readable
			}
			continue
		}
		if len(out) > 0 && strings.HasPrefix(line, "Locked:") && len(fields) >= 2 && fields[1] != "0" {
			out[len(out)-1].locked = true
		}
	}
	return out
}

// scan returns, for each needle, where in pid's memory it is: "locked" or
// "unlocked" and the mapping.
func scan(t *testing.T, pid int, needles map[string][]byte) map[string][]string {
	t.Helper()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	hits := map[string][]string{}
	buf := make([]byte, 1<<20)
	for _, r := range regions(t, pid) {
		for off := r.lo; off < r.hi; {
			n := min(uint64(len(buf)), r.hi-off)
			// Overlap chunks by 64 bytes so that a needle across a chunk
			// boundary is found.
			got, err := mem.ReadAt(buf[:n], int64(off))
			if got == 0 {
				if err != nil && err != io.EOF {
					break
				}
			}
			chunk := buf[:got]
			for name, nd := range needles {
				for i := 0; ; {
					j := bytes.Index(chunk[i:], nd)
					if j < 0 {
						break
					}
					where := "unlocked"
					if r.locked {
						where = "locked"
					}
					hits[name] = append(hits[name], fmt.Sprintf("%s at %#x in %s", where, off+uint64(i+j), r.line))
					i += j + 1
				}
			}
			if uint64(got) < n {
				break
			}
			off += uint64(got)
			if off < r.hi {
				off -= 64
			}
		}
	}
	return hits
}

// expectClean fails for every needle found, except the locked keys in
// locked pages.
func expectClean(t *testing.T, when string, pid int, needles map[string][]byte) bool {
	t.Helper()
	clean := true
	for name, where := range scan(t, pid, needles) {
		for _, w := range where {
			if strings.HasSuffix(name, "(locked)") && strings.HasPrefix(w, "locked ") {
				continue
			}
			clean = false
			t.Logf("%s: %s: %s", when, name, w)
		}
	}
	return clean
}

func TestMemoryHoldsNoKeyAfterSeal(t *testing.T) {
	if os.Geteuid() != 0 {
		testbin.Require(t, "reading another process's memory through /proc/PID/mem needs root")
	}
	t.Parallel()
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "root-reader", "--uid", "0", "--as", "alice")
	needles := keysOf(t, e.keyring, "alice", pwAlice)
	needles["master secret"] = masterSecret
	e.start(nil)
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	st, err := ac.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryHygiene != "full" {
		testbin.Require(t, "the daemon was built without GOEXPERIMENT=runtimesecret (memory_hygiene "+st.MemoryHygiene+"); run make test")
	}
	// Unseal through the real CLI; right after, the password is gone.
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	for _, k := range []string{"password", "password (base64)", "KEK"} {
		if hits := scan(t, e.pid, map[string][]byte{k: needles[k]}); len(hits) > 0 {
			t.Errorf("right after the unseal, the daemon holds the %s: %v", k, hits[k])
		}
	}
	// Unsealed: the secret only in locked memory, no DataKey at all.
	hc := unixClient(e.sock)
	for i := 0; i < 200; i++ {
		resp, err := hc.Get("http://sealbox/v1/secret")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(body, masterSecret) {
			t.Fatalf("read %d: %d", i, resp.StatusCode)
		}
	}
	hits := scan(t, e.pid, map[string][]byte{"master secret": masterSecret, "DataKey": needles["DataKey"]})
	for _, w := range hits["master secret"] {
		if !strings.HasPrefix(w, "locked ") {
			t.Errorf("unsealed, after 200 reads, a copy of the master secret outside locked memory: %s", w)
		}
	}
	if len(hits["DataKey"]) > 0 {
		t.Errorf("unsealed, the daemon keeps the DataKey: %v", hits["DataKey"])
	}
	// Seal: nothing of the secret, the DataKey, the KEK, the escrow key or
	// the password anywhere; the log keys only in locked pages.
	e.online(0, "", "seal")
	deadline := time.Now().Add(15 * time.Second)
	for !expectClean(t, "after seal", e.pid, needles) {
		if time.Now().After(deadline) {
			t.Fatal("after seal and a garbage collection, the daemon's memory still holds the copies logged above")
		}
		time.Sleep(time.Second)
	}
}

// TestAdminCLIHoldsNoKeyAfterADerivation: sealbox-admin, after it checked
// an admin's password with a derivation and while it waits for the next
// prompt, holds no KEK and no DataKey, and the password only in locked
// memory.
func TestAdminCLIHoldsNoKeyAfterADerivation(t *testing.T) {
	if os.Geteuid() != 0 {
		testbin.Require(t, "reading another process's memory through /proc/PID/mem needs root")
	}
	t.Parallel()
	e := newEnv(t)
	needles := keysOf(t, e.keyring, "alice", pwAlice)
	needles["master secret"] = masterSecret
	delete(needles, "root key (locked)")  // an offline add signs the root: its key lives in the
	delete(needles, "audit key (locked)") // admin's session, in locked memory, until it ends
	needles["password (locked)"] = needles["password"]
	delete(needles, "password")
	cmd := exec.Command(adminBin, "--keyring", e.keyring, "add", "carol", "--as", "alice")
	stdin, _ := cmd.StdinPipe()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	io.WriteString(stdin, pwAlice+"\n")
	// Wait until it reads standard input again, after the derivation that
	// checked alice's password: it then waits for carol's.
	for deadline := time.Now().Add(60 * time.Second); !readingStdin(cmd.Process.Pid) || !strings.Contains(out.String(), "deriving key for alice"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sealbox-admin never waited for carol's password:\n%s", out.String())
		}
	}
	time.Sleep(100 * time.Millisecond)
	if !expectClean(t, "sealbox-admin after checking alice's password", cmd.Process.Pid, needles) {
		t.Error("sealbox-admin holds the copies logged above while it waits for the next password")
	}
	io.WriteString(stdin, pwCarol+"\n")
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("add carol: %v\n%s", err, out.String())
	}
}

// readingStdin reports whether a thread of pid is blocked in read(0, ...).
func readingStdin(pid int) bool {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, task.Name()))
		if err == nil && strings.HasPrefix(string(b), "0 0x0 ") {
			return true
		}
	}
	return false
}

// TestMemoryHoldsNoShareAfterAThresholdUnseal: after an unattended unseal
// through a threshold of two Tang servers, the daemon holds neither share,
// nor the KEK they make, nor the DataKey; after seal, nothing of them.
func TestMemoryHoldsNoShareAfterAThresholdUnseal(t *testing.T) {
	if os.Geteuid() != 0 {
		testbin.Require(t, "reading another process's memory through /proc/PID/mem needs root")
	}
	t.Parallel()
	servers := []*fleettest.Tang{fleettest.StartTang(t), fleettest.StartTang(t)}
	e := newEnv(t)
	e.bindTang(servers[0], "tang-1")
	e.bindTang(servers[1], "tang-2")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "threshold", "2", "tang-1", "tang-2", "--name", "site", "--as", "alice")

	// What the daemon will handle, recovered by the test from the file and
	// the servers, as the daemon will.
	kr, err := keyring.Open(e.keyring, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var h *keyring.Header
	var s *keyring.Slot
	err = kr.View(func(tx *keyring.Tx) error {
		var err error
		if h, err = tx.Header(); err != nil {
			return err
		}
		s, err = tx.Slot("site")
		return err
	})
	kr.Close()
	if err != nil {
		t.Fatal(err)
	}
	th, err := unattended.ParseThreshold(s.Binding)
	if err != nil {
		t.Fatal(err)
	}
	var shares [][]byte
	for _, m := range th.Members {
		share := make([]byte, 32)
		if err := tang.Recover(t.Context(), tang.Client(time.Second), m.Binding, share); err != nil {
			t.Fatal(err)
		}
		shares = append(shares, share)
	}
	kek := make([]byte, 32)
	if err := shamir.Combine(kek, []byte{1, 2}, shares); err != nil {
		t.Fatal(err)
	}
	needles := keysUnder(t, h, s, kek) // fails if the KEK does not open the slot
	needles["share 1"], needles["share 2"] = shares[0], shares[1]

	st, _ := coldStart(e, fleetConfig(t, e, 5*time.Second, ""), 10*time.Second)
	if st.UnsealedBy != "site" {
		t.Fatalf("unsealed by %q", st.UnsealedBy)
	}
	if st.MemoryHygiene != "full" {
		testbin.Require(t, "the daemon was built without GOEXPERIMENT=runtimesecret (memory_hygiene "+st.MemoryHygiene+"); run make test")
	}
	unsealedNeedles := map[string][]byte{"share 1": shares[0], "share 2": shares[1], "KEK": kek, "DataKey": needles["DataKey"]}
	for deadline := time.Now().Add(15 * time.Second); !expectClean(t, "unsealed through the threshold", e.pid, unsealedNeedles); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("unsealed through the threshold, after a garbage collection, the daemon still holds the copies logged above")
		}
	}
	e.online(0, "", "seal")
	for deadline := time.Now().Add(15 * time.Second); !expectClean(t, "after seal", e.pid, needles); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("after seal and a garbage collection, the daemon's memory still holds the copies logged above")
		}
	}
}
