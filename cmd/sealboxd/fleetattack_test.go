package main

// Attacks on unattended slots (tang, tpm2, threshold) by someone who can
// write the keyring file but is not an admin, against the real sealboxd,
// sealbox-admin, tangd and swtpm. Each test fails if the attack works.

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/unattended"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/argon2"
)

// rawSlot returns a slot record as stored.
func rawSlot(t *testing.T, path, name string) []byte {
	t.Helper()
	var raw []byte
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	if err := kr.View(func(tx *keyring.Tx) error {
		raw = append([]byte(nil), tx.RawSlot(name)...)
		return nil
	}); err != nil || raw == nil {
		t.Fatalf("slot %q: %v", name, err)
	}
	return raw
}

// putRawSlot writes raw under name, as a file writer can.
func putRawSlot(t *testing.T, path, name string, raw []byte) {
	t.Helper()
	editFile(t, path, func(tx *keyring.Tx) error {
		s, err := keyring.ParseSlot(name, raw)
		if err != nil {
			return err
		}
		s.Name = name
		return tx.PutSlot(s)
	})
}

// noSecret fails if the daemon serves anything.
func (e *env) noSecret() {
	e.t.Helper()
	if code, body := e.read(nobody, "/v1/secret"); code == 200 || len(body) > 0 && bytes.Contains(body, masterSecret) {
		e.t.Fatalf("served %d", code)
	}
}

// A file writer swaps the bindings of two tang slots, puts a threshold's
// members in another order, or copies a tang slot under a new name: none of
// them unseals, each is an integrity failure that is not retried, and an
// admin's unseal still works.
func TestUnattendedBindingSwapsDoNotUnseal(t *testing.T) {
	t.Parallel()
	a, b, c := fleettest.StartTang(t), fleettest.StartTang(t), fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(a, "tang-a")
	e.bindTang(b, "tang-b")
	e.bindTang(c, "tang-c")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", a.URL, "--thp", a.Thumbprint(), "--name", "m1", "--as", "alice")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", b.URL, "--thp", b.Thumbprint(), "--name", "m2", "--as", "alice")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "threshold", "2", "m1", "m2", "--name", "site", "--as", "alice")

	// Swap the two tang bindings; reverse the threshold's members; copy
	// tang-c's record (whose binding opens) under a new name.
	editFile(t, e.keyring, func(tx *keyring.Tx) error {
		sa, err := tx.Slot("tang-a")
		if err != nil {
			return err
		}
		sb, err := tx.Slot("tang-b")
		if err != nil {
			return err
		}
		sa.Binding, sb.Binding = sb.Binding, sa.Binding
		if err := tx.PutSlot(sa); err != nil {
			return err
		}
		if err := tx.PutSlot(sb); err != nil {
			return err
		}
		st, err := tx.Slot("site")
		if err != nil {
			return err
		}
		th, err := unattended.ParseThreshold(st.Binding)
		if err != nil {
			return err
		}
		th.Members[0], th.Members[1] = th.Members[1], th.Members[0]
		st.Binding = th.Marshal()
		if err := tx.PutSlot(st); err != nil {
			return err
		}
		sc, err := tx.Slot("tang-c")
		if err != nil {
			return err
		}
		if err := tx.DeleteSlot("tang-c"); err != nil {
			return err
		}
		sc.Name = "tang-copy"
		return tx.PutSlot(sc)
	})
	cfg := fleetConfig(t, e, 2*time.Second, "")
	e.start(nil, "--config", cfg)
	st := e.waitStatus(8*time.Second, "every attempt failed", func(st *api.Status) bool {
		for _, n := range []string{"tang-a", "tang-b", "site", "tang-copy"} {
			if attempt(st, n).State != "failed" {
				return false
			}
		}
		return true
	})
	if !st.Sealed {
		t.Fatalf("unsealed by %q through a swapped binding", st.UnsealedBy)
	}
	for _, n := range []string{"tang-a", "tang-b", "site", "tang-copy"} {
		if a := attempt(st, n); a.Tries != 1 || strings.Contains(a.Error, "\n") || !strings.Contains(a.Error, "does not open the slot") {
			t.Fatalf("%s: want one try, failed for good, with a one-line error: %+v", n, a)
		}
	}
	e.noSecret()
	// The admin's way in still works; the swapped slots are named.
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	waitLog(t, e, "records failed verification")
}

// After unbind, a kept copy of the slot record (and, after a rekey, of the
// record from before it) put back into the file does not unseal.
func TestUnboundTangSlotPutBackDoesNotUnseal(t *testing.T) {
	t.Parallel()
	tg := fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(tg, "tang-a")
	kept := rawSlot(t, e.keyring, "tang-a")

	// Rekey, keeping it: the slot is bound again and still opens by itself.
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "rekey", "--keep-unattended", "--as", "alice")
	cfg := fleetConfig(t, e, 2*time.Second, "") // the rekey draws a new identity
	if st, _ := coldStart(e, cfg, 5*time.Second); st.UnsealedBy != "tang-a" {
		t.Fatalf("after rekey: unsealed by %q", st.UnsealedBy)
	}
	e.expectRead(nobody, 200)
	e.stop(15)
	// The pre-rekey record back in place of the current one: refused.
	current := rawSlot(t, e.keyring, "tang-a")
	putRawSlot(t, e.keyring, "tang-a", kept)
	e.start(nil, "--config", cfg)
	st := e.waitStatus(5*time.Second, "the old record failed", func(st *api.Status) bool { return attempt(st, "tang-a").State == "failed" })
	if !st.Sealed {
		t.Fatal("unsealed through a rolled-back tang slot")
	}
	e.noSecret()
	e.stop(15)
	putRawSlot(t, e.keyring, "tang-a", current)

	// Unbind, then put the last record back (it opens the current
	// DataKey, but the state root does not vouch for it).
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "unbind", "tang-a", "--as", "alice")
	putRawSlot(t, e.keyring, "tang-a", current)
	e.start(nil, "--config", cfg)
	st = e.waitStatus(5*time.Second, "the unbound record failed", func(st *api.Status) bool { return attempt(st, "tang-a").State == "failed" })
	if !st.Sealed {
		t.Fatal("unsealed through an unbound tang slot put back")
	}
	e.noSecret()
	if out := e.online(0, "", "audit").out; !strings.Contains(out, "tang-a") {
		t.Fatalf("the failed attempt is not in the audit log:\n%s", out)
	}
}

// A file writer adds copies of a tpm2 slot under new names. The state root
// does not vouch for them, so no change can be signed while they are there:
// an admin's unseal must not spend TPM work on them, nor try (and audit as
// refused) a reseal of each.
func TestUnverifiedTPM2SlotsAreNotResealed(t *testing.T) {
	t.Parallel()
	tpm := fleettest.StartSWTPM(t)
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tpm2", "--pcrs", "7", "--tcti", tpm.TCTI(), "--name", "tpm-a", "--as", "alice")
	raw := rawSlot(t, e.keyring, "tpm-a")
	const copies = 4
	for i := range copies {
		putRawSlot(t, e.keyring, fmt.Sprintf("evil-%d", i), raw)
	}
	tpm.Extend(7) // every copy now "needs" a reseal
	cfg := fleetConfig(t, e, 5*time.Second, fmt.Sprintf("tpm2_tcti = %q\n", tpm.TCTI()))
	e.start(nil, "--config", cfg)
	e.waitStatus(10*time.Second, "tpm2 attempts failed", func(st *api.Status) bool {
		return attempt(st, "evil-3").State == "failed" && attempt(st, "tpm-a").State == "failed"
	})
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	// The daemon says why it looked at none of them, after the unseal.
	waitLog(t, e, "not checked for a reseal until the keyring verifies")
	out := e.online(0, "", "audit", "--json").out
	if n := strings.Count(out, `"slot.reseal"`); n != 0 {
		t.Fatalf("%d reseal records after an unseal over slots the root does not vouch for:\n%s", n, out)
	}
	if strings.Contains(e.log.String(), "sealed again to the current PCR values") {
		t.Fatal("resealed a slot the root does not vouch for")
	}
}

// Found by an independent review: someone who can write the keyring but is
// not an admin builds a whole state under a DataKey of their own, with a
// tang slot bound to the real server's public advertisement, their own
// secret, and a state root they signed. The daemon must not unseal into it
// with no person: the identity pinned in its configuration does not match,
// whether the forger keeps the real identity record (it does not decrypt
// under their key) or writes one of their own.
func TestForgedKeyringWithItsOwnTangSlotIsRefused(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	for _, ownIdentity := range []bool{false, true} {
		t.Run(fmt.Sprintf("own identity %v", ownIdentity), func(t *testing.T) {
			t.Parallel()
			forgedTang(t, ownIdentity)
		})
	}
}

func forgedTang(t *testing.T, ownIdentity bool) {
	tg := fleettest.StartTang(t)
	e := newEnv(t)
	cfg := fleetConfig(t, e, 2*time.Second, "")
	var identity func(forged *unseal.Key) ([]byte, error) // nil: the real record stays
	if ownIdentity {
		identity = func(forged *unseal.Key) ([]byte, error) { return forged.NewIdentity() }
	}
	forgeTangKeyring(t, e.keyring, tg.URL, []byte("the attacker's secret"), identity)
	e.start(nil, "--config", cfg)
	st := e.waitStatus(5*time.Second, "the forged slot was tried", func(st *api.Status) bool { return attempt(st, "tang-1").State == "failed" })
	if a := attempt(st, "tang-1"); !st.Sealed || !strings.Contains(a.Error, "identity") {
		t.Fatalf("forged keyring: sealed %v, %+v", st.Sealed, a)
	}
	if code, body := e.read(nobody, "/v1/secret"); code == 200 {
		t.Fatalf("served the forger's secret: %q", body)
	}
	if out := e.online(0, "", "audit", "--admin", "tang-1").out; !strings.Contains(out, "identity") {
		t.Fatalf("the refusal is not in the audit log:\n%s", out)
	}
}

// Races with an unattended attempt in flight (a Tang server that answers
// after 2 s): an admin's seal wins and is not undone; an unbind wins (the
// key that comes back opens nothing any more); an admin's unseal wins and
// the late answer changes nothing.
func TestUnattendedRaces(t *testing.T) {
	t.Parallel()
	tg := fleettest.StartTang(t)
	slow := fleettest.SlowProxy(t, strings.TrimPrefix(tg.URL, "http://"), 2*time.Second)
	e := newEnv(t)
	r := e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", slow, "--thp", tg.Thumbprint(), "--name", "tang-slow", "--as", "alice")
	if !strings.Contains(r.out, "bound tang-slow") {
		t.Fatalf("bind through the slow proxy: %s", r.out)
	}
	cfg := fleetConfig(t, e, 5*time.Second, "")
	settled := func(what string) *api.Status {
		t.Helper()
		e.waitStatus(5*time.Second, what, func(st *api.Status) bool { s := attempt(st, "tang-slow").State; return s != "trying" && s != "" })
		time.Sleep(500 * time.Millisecond) // a late answer, if any, has landed
		return e.status()
	}

	// An admin seals (the daemon is still sealed) while the answer is on
	// its way: nothing unseals.
	e.start(nil, "--config", cfg)
	e.online(0, "", "seal")
	if st := settled("after the seal"); !st.Sealed || attempt(st, "tang-slow").State != "stopped" {
		t.Fatalf("seal during an attempt: sealed %v, %+v", st.Sealed, attempt(st, "tang-slow"))
	}
	e.stop(15)

	// An admin unseals meanwhile: the admin's unseal stands, the late
	// answer is dropped.
	e.start(nil, "--config", cfg)
	e.online(0, pwBob+"\n", "unseal", "--admin", "bob")
	if st := settled("after the admin's unseal"); st.Sealed || st.UnsealedBy != "bob" || attempt(st, "tang-slow").State != "stopped" {
		t.Fatalf("unseal during an attempt: by %q, %+v", st.UnsealedBy, attempt(st, "tang-slow"))
	}
	e.online(0, "", "seal")
	e.stop(15)

	// The slot is unbound while its answer is on its way: the key that
	// comes back opens nothing in the file as it now is.
	e.start(nil, "--config", cfg)
	e.online(0, pwAlice+"\n", "unbind", "tang-slow", "--as", "alice")
	e.waitStatus(5*time.Second, "the unbound slot gone from status", func(st *api.Status) bool { return attempt(st, "tang-slow").Slot == "" })
	time.Sleep(2500 * time.Millisecond) // the answer on its way has landed
	st := e.status()
	if attempt(st, "tang-slow").Slot != "" {
		t.Fatalf("the unbound slot is back in status: %+v", attempt(st, "tang-slow"))
	}
	if !st.Sealed {
		t.Fatalf("unsealed by %q through a slot unbound during the attempt", st.UnsealedBy)
	}
	if out := e.online(0, "", "audit", "--admin", "tang-slow", "--jsonl").out; strings.Contains(out, `"kind":"unseal","actor":"tang-slow","outcome":"ok"`) {
		t.Fatalf("an unattended unseal was recorded:\n%s", out)
	}
}

// Found by the second attack review: a removed admin who kept a copy of the
// file knew the old DataKey, and with it the keyring's identity. If a rekey
// only re-encrypted the identity, they could (writing the file, never
// /etc) forge a whole state under a DataKey of their own that carries the
// real identity, with a tang slot they can open: the daemon would unseal
// into it with no person and serve their secret, and no passwd would ever
// end it. A rekey draws a new identity (and prints its pin); the pinned
// configuration of after the rekey refuses the forged state.
func TestRemovedAdminCannotReplayTheIdentity(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	tg := fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(tg, "tang-1")
	before := e.identity()
	bobsCopy := filepath.Join(e.dir, "bobs-copy.db")
	copyFile(t, e.keyring, bobsCopy, 0o600)
	r := e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "remove", "bob", "--as", "alice", "--rekey")
	after := e.identity()
	if after == before {
		t.Fatal("the rekey kept the identity a removed admin knows")
	}
	if !strings.Contains(r.out, after) {
		t.Fatalf("the rekey does not print the new identity:\n%s", r.out)
	}
	// The offboarding removed the slot; alice binds it again.
	e.bindTang(tg, "tang-1")
	cfg := fleetConfig(t, e, 2*time.Second, "")
	// The new identity opens the slot with no person.
	if st, _ := coldStart(e, cfg, 5*time.Second); st.UnsealedBy != "tang-1" {
		t.Fatalf("after the rekey: unsealed by %q", st.UnsealedBy)
	}
	e.stop(15)

	// Bob, from his copy: the old DataKey and its identity record.
	var oldKey *unseal.Key
	var oldRec []byte
	okr, err := keyring.Open(bobsCopy, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = okr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		s, err := tx.Slot("bob")
		if err != nil {
			return err
		}
		oldRec = append([]byte(nil), tx.RawIdentity()...)
		oldKey, err = unseal.OpenSlot(h, s, []byte(pwBob), memlock.Options{AllowUnlocked: true})
		return err
	})
	okr.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer oldKey.Destroy()
	// The identity bob knew, under his DataKey, moved to the forger's.
	forgeTangKeyring(t, e.keyring, tg.URL, []byte("the removed admin's secret"), func(forged *unseal.Key) ([]byte, error) {
		return oldKey.RewrapIdentity(oldRec, forged)
	})
	e.start(nil, "--config", cfg)
	st := e.waitStatus(5*time.Second, "the forged slot was tried", func(st *api.Status) bool {
		s := attempt(st, "tang-1").State
		return s == "failed" || s == "unsealed"
	})
	if code, body := e.read(nobody, "/v1/secret"); code == 200 {
		t.Fatalf("served the removed admin's secret: %q", body)
	}
	if a := attempt(st, "tang-1"); !st.Sealed || !strings.Contains(a.Error, "identity") {
		t.Fatalf("forged keyring with the old identity: sealed %v, %+v", st.Sealed, a)
	}
}

// forgeTangKeyring rewrites the keyring at path as someone who can write it
// but holds no current DataKey would: a DataKey of their own, a tang slot
// "tang-1" bound to the real server at url (its advertisement is public),
// their secret, and a root they sign. identity, if not nil, gives the
// identity record they put in; nil leaves the real one.
func forgeTangKeyring(t *testing.T, path, url string, secret []byte, identity func(forged *unseal.Key) ([]byte, error)) {
	t.Helper()
	adv, err := tang.Fetch(context.Background(), tang.Client(time.Second), url)
	if err != nil {
		t.Fatal(err)
	}
	editFile(t, path, func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		forged, err := unseal.NewKey(h.ID, memlock.Options{AllowUnlocked: true})
		if err != nil {
			return err
		}
		defer forged.Destroy()
		kek := make([]byte, 32)
		binding, err := tang.Encrypt(adv, kek)
		if err != nil {
			return err
		}
		s, err := forged.SealSlotKEK("tang-1", keyring.KindTang, binding, kek, 1)
		if err != nil {
			return err
		}
		if err := tx.PutSlot(s); err != nil {
			return err
		}
		if identity != nil {
			rec, err := identity(forged)
			if err != nil {
				return err
			}
			if err := tx.PutIdentity(rec); err != nil {
				return err
			}
		}
		return forgeUnder(tx, h, forged, secret, audit.Event{Kind: audit.KindSlotBind, Actor: "alice", Target: "tang-1", Outcome: audit.OK})
	})
}

// A removed admin kept a copy of the file: with their old password it gives
// the old DataKey, and with it the hand-over key of every slot of that time
// (its escrow). A rekey that handed unattended slots over would seal the new
// DataKey under those same hand-over keys, and unattended slots never fold,
// so the removed admin could read the new DataKey from the current file with
// no password, server or TPM (the independent review's break). A rekey that
// keeps them (--keep-unattended, here after a remove that had no reason to
// distrust the bindings) binds them again instead: no pending key, a new
// escrow, a new slot key. By default a rekey removes them (next test).
func TestRekeyLeavesARemovedAdminNothingInUnattendedSlots(t *testing.T) {
	t.Parallel()
	tg, tpm := fleettest.StartTang(t), fleettest.StartSWTPM(t)
	e := newEnv(t)
	e.bindTang(tg, "tang-1")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tpm2", "--pcrs", "7", "--tcti", tpm.TCTI(), "--name", "tpm-1", "--as", "alice")
	bobsCopy := filepath.Join(e.dir, "bobs-copy.db")
	copyFile(t, e.keyring, bobsCopy, 0o600)

	// The TPM does not answer: the rekey stops before it changes anything.
	before := map[string][]byte{"tang-1": rawSlot(t, e.keyring, "tang-1"), "tpm-1": rawSlot(t, e.keyring, "tpm-1")}
	tpm.Stop()
	r := e.admin(5, pwAlice+"\n", "--keyring", e.keyring, "rekey", "--keep-unattended", "--tcti", tpm.TCTI(), "--as", "alice")
	if r.code == 0 || !strings.Contains(r.out, `slot "tpm-1" could not be`) || !strings.Contains(r.out, "the rekey changed nothing") {
		t.Fatalf("rekey with the TPM down: %d %s", r.code, r.out)
	}
	for name, raw := range before {
		if !bytes.Equal(rawSlot(t, e.keyring, name), raw) {
			t.Fatalf("a refused rekey changed %s", name)
		}
	}
	tpm.Reboot() // the same TPM state, PCRs as at boot

	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "remove", "bob", "--as", "alice")
	r = e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "rekey", "--keep-unattended", "--tcti", tpm.TCTI(), "--as", "alice")
	if !strings.Contains(r.out, "unattended slots bound again under new keys: tang-1, tpm-1") || !strings.Contains(r.out, "warning: unattended slots tang-1, tpm-1 were kept") {
		t.Fatalf("rekey --keep-unattended: %s", r.out)
	}

	// Bob, with his copy and his old password (FORMAT.md, bare primitives).
	var old *keyring.Header
	var oldSlots = map[string]*keyring.Slot{}
	rvRead(t, bobsCopy, func(tx *keyring.Tx) error {
		var err error
		old, err = tx.Header()
		for _, n := range []string{"bob", "tang-1", "tpm-1"} {
			if oldSlots[n], err = tx.Slot(n); err != nil {
				return err
			}
		}
		return err
	})
	bob := oldSlots["bob"]
	kek := argon2.IDKey([]byte(pwBob), bob.Salt[:], bob.Params.Time, bob.Params.MemoryKiB, bob.Params.Threads, 32)
	plain, err := rvGCM(kek).Open(nil, bob.Nonce[:], bob.Wrapped[:], rvPlace("sealbox/v2/slot", old.ID, keyring.KindAdmin, "bob"))
	if err != nil {
		t.Fatalf("bob's own old slot: %v", err)
	}
	oldDK := plain[:32]
	oldEK := rvHKDF(t, oldDK, old.ID, "sealbox/v2/escrow-key")
	for _, n := range []string{"tang-1", "tpm-1"} {
		os := oldSlots[n]
		hand, err := rvGCM(oldEK).Open(nil, os.Escrow.Nonce[:], os.Escrow.Box[:], rvPlace("sealbox/v2/escrow", old.ID, os.Kind, n))
		if err != nil {
			t.Fatalf("bob cannot open the old escrow of %s (the test is wrong): %v", n, err)
		}
		var cur *keyring.Slot
		var h *keyring.Header
		rvRead(t, e.keyring, func(tx *keyring.Tx) error {
			h, _ = tx.Header()
			cur, err = tx.Slot(n)
			return err
		})
		if cur.HasPending() {
			pk := rvHKDF(t, hand, old.ID, "sealbox/v2/pending-key")
			aad := append(rvPlace("sealbox/v2/pending", old.ID, cur.Kind, n), h.Commitment[:]...)
			if dk, err := rvGCM(pk).Open(nil, cur.Pending.Nonce[:], cur.Pending.Box[:], aad); err == nil {
				t.Fatalf("%s: the removed admin reads the new DataKey %x… from its pending key", n, dk[:4])
			}
			t.Fatalf("%s: still has a pending key after the rekey", n)
		}
		if _, err := rvGCM(oldEK).Open(nil, cur.Escrow.Nonce[:], cur.Escrow.Box[:], rvPlace("sealbox/v2/escrow", old.ID, cur.Kind, n)); err == nil {
			t.Fatalf("%s: its escrow still opens under the old DataKey", n)
		}
		if bytes.Equal(cur.Binding, os.Binding) {
			t.Fatalf("%s: its binding did not change", n)
		}
	}
	// Bob can also reach the Tang server (the site's network): the old
	// binding gives him the old slot key, which opens nothing now.
	oldKEK := make([]byte, 32)
	if err := tang.Recover(t.Context(), tang.Client(time.Second), oldSlots["tang-1"].Binding, oldKEK); err != nil {
		t.Fatal(err)
	}
	cur := rawSlot(t, e.keyring, "tang-1")
	cs, _ := keyring.ParseSlot("tang-1", cur)
	if _, err := rvGCM(oldKEK).Open(nil, cs.Nonce[:], cs.Wrapped[:], rvPlace("sealbox/v2/slot", old.ID, keyring.KindTang, "tang-1")); err == nil {
		t.Fatal("the old tang binding's key opens the rebound slot")
	}

	// Both slots, made again, still unseal with no person (the new pin).
	cfg := fleetConfig(t, e, 5*time.Second, fmt.Sprintf("tpm2_tcti = %q\n", tpm.TCTI()))
	if st, _ := coldStart(e, cfg, 10*time.Second); st.UnsealedBy != "tang-1" && st.UnsealedBy != "tpm-1" {
		t.Fatalf("after the rekey: unsealed by %q", st.UnsealedBy)
	}
	e.stop(15)
	tg.Stop()
	if st, _ := coldStart(e, cfg, 10*time.Second); st.UnsealedBy != "tpm-1" {
		t.Fatalf("after the rekey, with the server down: unsealed by %q", st.UnsealedBy)
	}
	// Through the daemon (its tpm2_tcti; a Tang binding is made again
	// offline, from the advertisement it holds, so the server may be down).
	e.stop(15)
	tpmBefore := rawSlot(t, e.keyring, "tpm-1")
	coldStart(e, cfg, 10*time.Second)
	if r := e.online(0, pwAlice+"\n", "rekey", "--keep-unattended", "--as", "alice"); !strings.Contains(r.out, "unattended slots bound again under new keys: tang-1, tpm-1") {
		t.Fatalf("rekey through the daemon: %s", r.out)
	}
	e.stop(15)
	if bytes.Equal(rawSlot(t, e.keyring, "tpm-1"), tpmBefore) {
		t.Fatal("the rekey through the daemon left the tpm2 slot as it was")
	}
	tg.Start()
	cfg = fleetConfig(t, e, 5*time.Second, fmt.Sprintf("tpm2_tcti = %q\n", tpm.TCTI()))
	e.start(nil, "--config", cfg)
	e.waitStatus(10*time.Second, "both slots open", func(st *api.Status) bool {
		return !st.Sealed && attempt(st, "tang-1").Tries+attempt(st, "tpm-1").Tries >= 1
	})
	// Each of them, alone, opens the rekeyed file.
	for _, slot := range []string{"tang-1", "tpm-1"} {
		e.stop(15)
		if slot == "tang-1" {
			tpm.Stop()
		} else {
			tpm.Reboot()
			tg.Stop()
			cfg = fleetConfig(t, e, 5*time.Second, fmt.Sprintf("tpm2_tcti = %q\n", tpm.TCTI()))
		}
		if st, _ := coldStart(e, cfg, 10*time.Second); st.UnsealedBy != slot {
			t.Fatalf("after the rekey through the daemon, %s alone: unsealed by %q", slot, st.UnsealedBy)
		}
	}
}

// Spec-level helpers (keyring/FORMAT.md), as an attacker writes them.
func rvPlace(label string, id [keyring.IDSize]byte, kind keyring.SlotKind, name string) []byte {
	b := append([]byte(label), id[:]...)
	b = append(b, byte(kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	return append(b, name...)
}

func rvHKDF(t *testing.T, ikm []byte, id [keyring.IDSize]byte, info string) []byte {
	t.Helper()
	k, err := hkdf.Key(sha256.New, ikm, id[:], info, 32)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rvGCM(key []byte) cipher.AEAD {
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	return g
}

func rvRead(t *testing.T, path string, fn func(tx *keyring.Tx) error) {
	t.Helper()
	kr, err := keyring.Open(path, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	if err := kr.View(fn); err != nil {
		t.Fatal(err)
	}
}

// Someone on the path to the Tang server answers every try with a 503 whose
// reason phrase is theirs: 5,000 bytes, different each time. The failure
// must be recorded once (its kind does not change), in a record of bounded
// size, and must not cost the records batched with it: every client read
// made meanwhile is in the audit log (the independent review found a detail
// over the record limit failed the whole batch, and a new text made a new
// record at every try). In process, then through the helper.
func TestForgedReplyTextNeitherFloodsNorErasesTheAuditLog(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	tg := fleettest.StartTang(t)
	m := fleettest.StartProxy(t, strings.TrimPrefix(tg.URL, "http://"))
	e := newEnv(t)
	registerRoot(e)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tang", m.URL, "--thp", tg.Thumbprint(), "--name", "tang-1", "--as", "alice")
	pad := strings.Repeat("A", 5000)
	m.Forge(func(n int) string {
		return fmt.Sprintf("HTTP/1.1 503 try %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", n, pad)
	})
	helpers := filepath.Join(e.dir, "helpers")
	os.Mkdir(helpers, 0o755)
	for _, through := range []string{"in process", "the helper"} {
		if through == "the helper" {
			socketActivate(t, filepath.Join(helpers, "tang.sock"), "--kind", "tang")
		}
		cfg := writeFile(t, e.dir, "c.toml", fmt.Sprintf("unattended_timeout = \"2s\"\nunattended_dial_timeout = \"1s\"\nunattended_retry_max = \"1s\"\nunattended_helpers = %q\nunattended_identity = %q\n", helpers, e.identity()))
		before := strings.Count(runCmd(t, "", adminBin, "--keyring", e.keyring, "audit", "--admin", "tang-1", "--jsonl").out, `"outcome":"error"`)
		e.start(nil, "--config", cfg)
		c := unixClient(e.sock)
		reads := 0
		for attempt(e.status(), "tang-1").Tries < 4 {
			time.Sleep(5 * time.Millisecond)
			resp, err := c.Get("http://sealbox/v1/secret")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatal("unsealed through a forged reply")
			}
			reads++
		}
		a := attempt(e.status(), "tang-1")
		if len(a.Error) > 400 || !strings.Contains(a.Error, "503 Service Unavailable") || strings.Contains(a.Error, "AAAA") {
			t.Fatalf("%s: status keeps %d bytes of the reply: %.120q", through, len(a.Error), a.Error)
		}
		out := e.online(0, "", "audit", "--admin", "tang-1", "--jsonl").out
		if n := failures(e, "tang-1") - before; n != 1 {
			t.Fatalf("%s: %d failure records for %d tries of one kind of failure:\n%s", through, n, a.Tries, out)
		}
		if strings.Contains(out, "AAAA") || strings.Contains(out, "try ") {
			t.Fatalf("%s: the forged reason phrase is in the audit log", through)
		}
		e.stop(15)
		if strings.Contains(e.log.String(), "writing records failed") {
			t.Fatalf("%s: the daemon lost a batch of records:\n%s", through, lastLines(e.log.String(), 10))
		}
		logged := strings.Count(runCmd(t, "", adminBin, "--keyring", e.keyring, "audit", "--reads", "--jsonl").out, `"kind":"read"`)
		if logged < reads {
			t.Fatalf("%s: %d client reads made, %d recorded", through, reads, logged)
		}
	}
}

// The second independent review's break: an admin (while still one, or
// after removal with the DataKey of before the rekey) rewrites a Tang slot
// so that its binding holds the advertisement of a server of their own,
// under the site's URL, and re-signs the state: nothing in the file can tell.
// A rekey that kept the slot would bind it again to that advertisement, and
// the removed admin would open it from any later copy of the file, with no
// site server. So offboarding (remove --rekey, and a rekey by default)
// removes every unattended slot, and says to bind them again.
func TestOffboardingRemovesAPlantedTangBinding(t *testing.T) {
	t.Parallel()
	site, own := fleettest.StartTang(t), fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(site, "tang-1")
	// bob, still an admin, plants his server's advertisement in tang-1.
	plantTang(t, e.keyring, "tang-1", site, own)
	if got := bobOpens(t, e.keyring, "tang-1", own); got == nil {
		t.Fatal("the plant does not work (the test is wrong)")
	}
	r := e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "remove", "bob", "--rekey", "--as", "alice")
	if !strings.Contains(r.out, "removed unattended slots: tang-1") {
		t.Fatalf("remove --rekey: %s", r.out)
	}
	if out := e.admin(0, "", "--keyring", e.keyring, "slots").out; strings.Contains(out, "tang-1") {
		t.Fatalf("tang-1 is still there after the offboarding rekey:\n%s", out)
	}
	// Bound again by alice, confirming the site's thumbprint: bob's server
	// opens nothing in any later copy of the file.
	e.bindTang(site, "tang-1")
	site.Stop()
	if got := bobOpens(t, e.keyring, "tang-1", own); got != nil {
		t.Fatalf("after offboarding, bob's own Tang server opens tang-1 and gives %q", got)
	}
	if out := e.admin(0, "", "--keyring", e.keyring, "audit").out; !strings.Contains(out, "removed") || !strings.Contains(out, "tang-1") {
		t.Fatalf("the rekey's record does not name the removed slot:\n%s", lastLines(out, 6))
	}
}

// plantTang rewrites slot name as bob would with the current DataKey (his
// password, while he is an admin): a binding under the site's URL that holds
// own's advertisement, the state re-signed, no audit record.
func plantTang(t *testing.T, path, name string, site, own *fleettest.Tang) {
	t.Helper()
	ownAdv, err := tang.Fetch(context.Background(), tang.Client(time.Second), own.URL)
	if err != nil {
		t.Fatal(err)
	}
	fake, err := tang.ParseAdv(site.URL, ownAdv.JWS())
	if err != nil {
		t.Fatal(err)
	}
	editFile(t, path, func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		bs, err := tx.Slot("bob")
		if err != nil {
			return err
		}
		k, err := unseal.OpenSlot(h, bs, []byte(pwBob), memlock.Options{AllowUnlocked: true})
		if err != nil {
			return err
		}
		defer k.Destroy()
		old, err := tx.Slot(name)
		if err != nil {
			return err
		}
		kek := bytes.Repeat([]byte{7}, 32)
		binding, err := tang.Encrypt(fake, kek)
		if err != nil {
			return err
		}
		s, err := k.SealSlotKEK(name, keyring.KindTang, binding, kek, old.Created)
		if err != nil {
			return err
		}
		if err := tx.PutSlot(s); err != nil {
			return err
		}
		root, err := tx.Root()
		if err != nil {
			return err
		}
		_, err = k.Sign(tx, root, nil, nil, nil)
		return err
	})
}

// bobOpens is bob with a read-only copy of the file and his own Tang server
// (none of the site's): the master secret if slot name opens, else nil.
func bobOpens(t *testing.T, path, name string, own *fleettest.Tang) []byte {
	t.Helper()
	var h *keyring.Header
	var s *keyring.Slot
	var sec *keyring.Secret
	rvRead(t, path, func(tx *keyring.Tx) error {
		var err error
		if h, err = tx.Header(); err != nil {
			return err
		}
		if sec, err = tx.Secret(); err != nil {
			return err
		}
		s, err = tx.Slot(name)
		return err
	})
	addr := strings.TrimPrefix(own.URL, "http://")
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}}}
	kek := make([]byte, 32)
	if err := tang.Recover(context.Background(), c, s.Binding, kek); err != nil {
		return nil
	}
	k, err := unseal.OpenSlotKEK(h, s, kek, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil
	}
	defer k.Destroy()
	b, err := k.DecryptSecret(sec, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil
	}
	defer b.Destroy()
	return bytes.Clone(b.Bytes())
}

// The third review: a keyless writer deletes the identity record (it is not
// under the state root) so that the offboarding rekey would not say that the
// pin in sealboxd's configuration is now the old one. The rekey draws a new
// identity anyway, and says to replace the pin; it names the admin slots
// that took the new key, so that one planted straight into the file shows.
func TestOffboardingRekeyAlwaysDrawsANewIdentity(t *testing.T) {
	t.Parallel()
	tg := fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(tg, "tang-1")
	db, err := bolt.Open(e.keyring, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("identity")) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	r := e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "remove", "bob", "--rekey", "--as", "alice")
	for _, want := range []string{"keyring identity: ", "it pins the old one, which now admits a keyring forged", "the new key went to these admin slots: alice."} {
		if !strings.Contains(r.out, want) {
			t.Fatalf("remove --rekey without an identity record does not say %q:\n%s", want, r.out)
		}
	}
	if id := e.identity(); id == "" || !strings.Contains(r.out, id) {
		t.Fatalf("the rekey's identity %q is not the file's:\n%s", id, r.out)
	}
}

// withFrozenTPM makes a keyring with k tpm2 slots on a swtpm and starts the
// daemon with its TCTI and no pin (no unattended unseal); the TPM is then
// frozen, so that every drift check after an admin unseal waits out its
// deadline: the unseal record is committed seconds before it installs.
func withFrozenTPM(t *testing.T, k int) *env {
	t.Helper()
	tpm := fleettest.StartSWTPM(t)
	e := newEnv(t)
	for i := range k {
		e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "bind", "tpm2", "--pcrs", "7", "--tcti", tpm.TCTI(), "--name", fmt.Sprintf("tpm-%d", i), "--as", "alice")
	}
	e.start(nil, "--config", writeFile(t, e.dir, "frozen.toml", fmt.Sprintf("tpm2_tcti = %q\n", tpm.TCTI())))
	tpm.Freeze()
	return e
}

// unsealInBackground starts alice's unseal and returns once its record is
// committed (the generation moved) while the daemon is still sealed, with a
// channel that gets the CLI's exit code when it ends.
func unsealInBackground(t *testing.T, e *env) chan int {
	t.Helper()
	gen0 := e.status().Generation
	done := make(chan int, 1)
	go func() {
		done <- runCmd(t, pwAlice+"\n", adminBin, "--admin-socket", e.admSock, "unseal", "--admin", "alice").code
	}()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st := e.status(); st.Generation > gen0 {
			if !st.Sealed {
				t.Fatal("already unsealed: no window to show")
			}
			return done
		}
	}
	t.Fatal("the unseal record never came")
	return nil
}

// The fourth review: what an unseal read from the file is installed only
// after its reseal step (seconds, with a TPM that does not answer). A
// client disabled, or a secret rotated, in between must hold once it is
// installed: the daemon keeps the newer clients, and refuses to install a
// secret older than one rotated in (the admin unseals again).
func TestChangesDuringAnUnsealOutliveIt(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	t.Run("disable", func(t *testing.T) {
		t.Parallel()
		e := withFrozenTPM(t, 2)
		done := unsealInBackground(t, e)
		e.online(0, pwBob+"\n", "client", "disable", "svc", "--as", "bob")
		if code := <-done; code != 0 {
			t.Fatalf("the unseal failed: %d", code)
		}
		if st := e.status(); st.Sealed {
			t.Fatal("not unsealed")
		}
		if code, _ := e.read(nobody, "/v1/secret"); code == 200 {
			t.Fatal("a client disabled during the unseal is served once it installed")
		}
	})
	t.Run("rotate", func(t *testing.T) {
		t.Parallel()
		e := withFrozenTPM(t, 2)
		done := unsealInBackground(t, e)
		sf := writeFile(t, e.dir, "new.secret", "the-new-secret-value")
		os.Chmod(sf, 0o600)
		e.online(0, pwBob+"\n", "rotate", "--as", "bob", "--secret-file", sf)
		code := <-done
		if st := e.status(); code == 0 || !st.Sealed {
			t.Fatalf("an unseal that read the secret before a rotate was installed (exit %d, sealed %v)", code, st.Sealed)
		}
		// Unsealed again, it serves the rotated secret.
		e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
		if code, body := e.read(nobody, "/v1/secret"); code != 200 || string(body) != "the-new-secret-value" {
			t.Fatalf("after the second unseal: %d %q", code, body)
		}
	})
}

// The fifth review: a file writer puts an older copy of the keyring back in
// place (same inode) while sealboxd runs sealed and retries a Tang slot.
// bbolt panicked at the next write, sealboxd died, and the restart under
// Restart=on-failure forgot the newest generation it had seen, so it
// unsealed into the older state and served a client an admin had disabled.
// Now the write fails with a named error and sealboxd stays up: the retry
// is refused (older than what it has seen), and it stays sealed.
func TestOlderCopyPutBackInPlaceDoesNotStopTheDaemon(t *testing.T) {
	t.Parallel()
	tg := fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(tg, "tang-a")
	cfg := fleetConfig(t, e, 2*time.Second, "")
	older, err := os.ReadFile(e.keyring)
	if err != nil {
		t.Fatal(err)
	}
	tg.Stop()
	e.start(nil, "--config", cfg)
	e.waitStatus(5*time.Second, "tang-a waiting", func(st *api.Status) bool { return attempt(st, "tang-a").State == "waiting" })
	e.online(0, pwAlice+"\n", "client", "disable", "svc", "--as", "alice")
	if st, _ := os.Stat(e.keyring); int64(len(older)) > st.Size() {
		t.Fatalf("the older copy (%d bytes) is longer than the file (%d): not an in-place rollback", len(older), st.Size())
	}
	f, err := os.OpenFile(e.keyring, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(older, 0); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	tg.Start()
	// The retry reads the older copy and is refused as a rollback; writing
	// its record may then find the file damaged, and sealboxd refuses
	// every later use of it. Either way it stays up (status answers,
	// exit 6 at worst) and sealed.
	var out string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r := runCmd(t, "", adminBin, "--admin-socket", e.admSock, "status", "--json")
		out = r.out
		if r.code == 5 {
			t.Fatalf("sealboxd stopped:\n%s", lastLines(e.log.String(), 20))
		}
		if r.code == 6 || strings.Contains(out, "rolled back") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("neither refused nor damaged after 15 s: %s", out)
		}
	}
	if code, _ := e.read(nobody, "/v1/secret"); code == 200 {
		t.Fatal("served after the older copy was put back")
	}
	r := runCmd(t, pwAlice+"\n", adminBin, "--admin-socket", e.admSock, "unseal", "--admin", "alice")
	if r.code == 0 || r.code == 5 {
		t.Fatalf("after the older copy was put back, an admin's unseal: exit %d %s\n%s", r.code, r.out, lastLines(e.log.String(), 20))
	}
	if code, _ := e.read(nobody, "/v1/secret"); code == 200 {
		t.Fatal("served after the older copy was put back and an admin's unseal")
	}
}

// A slot bound again under the same name while the first binding is still
// retried (unbind, then bind) is another slot: the old binding is not tried
// against it (the seventh review), and status says the new one waits for
// the next start.
func TestRetriesStopForASlotBoundAgainUnderItsName(t *testing.T) {
	t.Parallel()
	tg := fleettest.StartTang(t)
	e := newEnv(t)
	e.bindTang(tg, "tang-a")
	tg.Stop()
	e.start(nil, "--config", fleetConfig(t, e, 2*time.Second, ""))
	e.waitStatus(5*time.Second, "tang-a waiting", func(st *api.Status) bool { return attempt(st, "tang-a").State == "waiting" })
	e.online(0, pwAlice+"\n", "unbind", "tang-a", "--as", "alice")
	tg.Start() // for the bind; the old binding's retries have stopped
	e.bindTang(tg, "tang-a", "--admin-socket", e.admSock)
	time.Sleep(3 * time.Second) // past the next retry (retry max 2 s)
	st := e.status()
	if a := attempt(st, "tang-a"); a.State != "off" || !strings.Contains(a.Error, "next start") || !st.Sealed {
		t.Fatalf("the slot bound again: sealed %v, %+v", st.Sealed, a)
	}
	if out := e.online(0, "", "audit", "--admin", "tang-a", "--jsonl").out; strings.Contains(out, "does not open") {
		t.Fatalf("the old binding was tried against the new slot:\n%s", out)
	}
}
