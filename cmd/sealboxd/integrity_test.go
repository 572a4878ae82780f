package main

// Attacks on the keyring file by someone who can write it but is not an
// admin, each as keyring/FORMAT.md says it must fail, driven through the
// real binaries on a real file. The attacker's edits go through the keyring
// package (bytes on disk) and the public primitives, exactly what anyone
// reading FORMAT.md could compute; never through a key they do not have.

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/admin/api"

	bolt "go.etcd.io/bbolt"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// editFile runs fn on the keyring file while no daemon holds it.
func editFile(t *testing.T, path string, fn func(tx *keyring.Tx) error) {
	t.Helper()
	kr, err := keyring.Open(path, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	if err := kr.Update(fn); err != nil {
		t.Fatalf("the attacker's edit failed: %v", err)
	}
}

// copyBucketsFrom puts the named buckets of an older copy of the file into
// the current one, as someone with both copies could.
func copyBucketsFrom(t *testing.T, older, current string, buckets ...string) {
	t.Helper()
	src, err := bolt.Open(older, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := bolt.Open(current, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	err = src.View(func(stx *bolt.Tx) error {
		return dst.Update(func(dtx *bolt.Tx) error {
			for _, name := range buckets {
				if err := dtx.DeleteBucket([]byte(name)); err != nil {
					return err
				}
				b, err := dtx.CreateBucket([]byte(name))
				if err != nil {
					return err
				}
				if err := stx.Bucket([]byte(name)).ForEach(func(k, v []byte) error { return b.Put(k, v) }); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) snapshot(name string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	copyFile(e.t, e.keyring, p, 0o600)
	return p
}

// TestForgedRekeyWithoutAnyKey is issue 11's first attack: with no password
// and no key, draw a DataKey, seal it into every slot's pending field, move
// the commitment to it, encrypt a secret of one's choosing, and re-sign the
// state root and the audit log under keys derived from it.
func TestForgedRekeyWithoutAnyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	forgedSecret := []byte("the attacker's secret")
	editFile(t, e.keyring, func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		forged, err := unseal.NewKey(h.ID, memlock.Options{AllowUnlocked: true})
		if err != nil {
			return err
		}
		defer forged.Destroy()
		slots, err := tx.Slots()
		if err != nil {
			return err
		}
		// A pending field needs the slot's hand-over key, which the attacker
		// does not have: the best they can do is a hand-over from a slot
		// of their own making, under the same name.
		next, err := forged.Rekeyed(memlock.Options{AllowUnlocked: true})
		if err != nil {
			return err
		}
		defer next.Destroy()
		for _, s := range slots {
			own, err := forged.SealSlot(s.Name, s.Kind, []byte("attacker password"), s.Params, s.Created, s.Expires)
			if err != nil {
				return err
			}
			handed, err := forged.HandOver(own, next)
			if err != nil {
				return err
			}
			s.Flags |= keyring.SlotPending
			s.Pending, s.Escrow = handed.Pending, handed.Escrow
			if err := tx.PutSlot(s); err != nil {
				return err
			}
		}
		return forgeUnder(tx, h, next, forgedSecret, audit.Event{Kind: audit.KindAdminRekey, Actor: "alice", Outcome: audit.OK})
	})
	// Offline: check refuses, naming the pending key.
	for _, who := range [][2]string{{"alice", pwAlice}, {"bob", pwBob}} {
		r := e.admin(6, who[1]+"\n", "--keyring", e.keyring, "check", "--as", who[0])
		if !strings.Contains(r.out, "pending key was not made by a holder") {
			t.Fatalf("check as %s: %s", who[0], r.out)
		}
	}
	// The daemon: no unseal, nothing served, the forged secret never.
	e.start(nil)
	e.online(6, pwAlice+"\n", "unseal", "--admin", "alice")
	e.online(6, pwBob+"\n", "unseal", "--admin", "bob")
	if code, body := e.read(0, "/v1/secret"); code == 200 || bytes.Contains(body, forgedSecret) {
		t.Fatalf("served %d %q", code, body)
	}
}

// TestPartialRollback is issue 11's second attack: slots, clients and the
// manifest copied from an older copy of the file into the current one, so
// that a client disabled since would be served the current secret.
func TestPartialRollback(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	older := e.snapshot("older.db")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "disable", "svc", "--as", "alice")
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "rotate", "--as", "alice")
	current := e.snapshot("current.db")
	for _, v := range []struct {
		name    string
		buckets []string
		unseal  int // the unseal's exit code: refused, or svc not honoured
		read    int
	}{
		// The manifest names svc's record as rolled back: alice unseals,
		// svc is not served.
		{"records only", []string{"slots", "clients"}, 0, 403},
		// The manifest no longer matches the root: nothing is vouched for.
		{"records and manifest", []string{"slots", "clients", "manifest"}, 6, 503},
		// The older root does not cover the current secret.
		{"records, manifest and the root", []string{"slots", "clients", "manifest", "meta"}, 6, 503},
	} {
		name, buckets := v.name, v.buckets
		copyFile(t, current, e.keyring, 0o600)
		copyBucketsFrom(t, older, e.keyring, buckets...)
		if name == "records, manifest and the root" {
			// Keep the current secret and header, which the older root
			// does not cover: otherwise this is the whole file rolled back.
			editFile(t, e.keyring, func(tx *keyring.Tx) error {
				kr, err := keyring.Open(current, keyring.Options{ReadOnly: true})
				if err != nil {
					return err
				}
				defer kr.Close()
				return kr.View(func(ctx *keyring.Tx) error {
					sec, _ := ctx.Secret()
					h, _ := ctx.Header()
					if err := tx.PutSecret(sec); err != nil {
						return err
					}
					return tx.PutHeader(h)
				})
			})
		}
		r := e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "check", "--as", "alice")
		if !strings.Contains(r.out, "outside sealbox") {
			t.Fatalf("%s: check said %s", name, r.out)
		}
		e.start(nil)
		e.online(v.unseal, pwAlice+"\n", "unseal", "--admin", "alice")
		e.expectRead(nobody, v.read)
		e.stop(15)
	}
}

// TestAuditTruncationAndForgedRecords is issue 11's third attack.
func TestAuditTruncationAndForgedRecords(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "rotate", "--as", "alice")
	good := e.snapshot("good.db")
	// Delete the newest event records (the rotate and what followed).
	var last uint64
	editFile(t, e.keyring, func(tx *keyring.Tx) error {
		_, last = tx.AuditBounds(keyring.Events)
		return nil
	})
	editFile(t, e.keyring, func(tx *keyring.Tx) error {
		var keep [][]byte
		tx.AuditRecords(keyring.Events, 0, func(seq uint64, raw []byte) bool {
			if seq < last-1 {
				keep = append(keep, append([]byte(nil), raw...))
			}
			return true
		})
		if err := tx.DeleteAuditBefore(keyring.Events, 1<<62); err != nil {
			return err
		}
		for i, raw := range keep {
			if err := tx.PutAudit(keyring.Events, uint64(i+1), raw); err != nil {
				return err
			}
		}
		return nil
	})
	r := e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "audit", "verify", "--as", "alice")
	if !strings.Contains(r.out, "truncated") && !strings.Contains(r.out, "removed from the end") {
		t.Fatalf("truncated log: %s", r.out)
	}
	e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "check", "--as", "alice")
	// A forged unkeyed "secret.rotate ok" after the last keyed record.
	copyFile(t, good, e.keyring, 0o600)
	editFile(t, e.keyring, func(tx *keyring.Tx) error {
		_, err := audit.Append(tx, nil, keyring.Events, nil, audit.Event{Kind: audit.KindSecretRotate, Actor: "alice", Outcome: audit.OK})
		return err
	})
	r = e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "audit", "verify", "--as", "alice")
	if !strings.Contains(r.out, "only ever written keyed") {
		t.Fatalf("forged unkeyed rotate: %s", r.out)
	}
}

// TestRekeyEndsOldCodes is issue 11's fourth item: after remove --rekey,
// the old recovery code and outstanding invites open nothing.
func TestRekeyEndsOldCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	kr := []string{"--keyring", e.keyring}
	rc := codeIn(t, e.admin(0, pwAlice+"\n", append(kr, "recovery", "regenerate", "--as", "alice")...).out)
	inv := codeIn(t, e.admin(0, pwAlice+"\n", append(kr, "invite", "dave", "--as", "alice", "--expires", "1h")...).out)
	r := e.admin(0, pwAlice+"\n", append(kr, "remove", "bob", "--as", "alice", "--rekey")...)
	if !strings.Contains(r.out, "dropped invites: dave") || !strings.Contains(r.out, "recovery code was replaced") {
		t.Fatalf("rekey output: %s", r.out)
	}
	newRC := codeIn(t, r.out[strings.Index(r.out, "recovery code was replaced"):])
	e.admin(3, inv+"\n"+"dave's own passphrase\n", append(kr, "enroll", "dave")...)
	e.start(nil)
	e.online(3, rc+"\n", "unseal", "--recovery")
	e.online(0, newRC+"\n", "unseal", "--recovery")
	e.expectRead(nobody, 200)
}

// TestRestoredOldSlotIsNotLaundered is issue 11's fifth item: a slot
// restored from before a password change must not open with the old
// password, and repair drops it rather than re-signing it.
func TestRestoredOldSlotIsNotLaundered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	older := e.snapshot("older.db")
	newPw := "alice's second passphrase"
	e.admin(0, pwAlice+"\n"+newPw+"\n", "--keyring", e.keyring, "passwd", "alice")
	var oldSlot []byte
	kr, err := keyring.Open(older, keyring.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	kr.View(func(tx *keyring.Tx) error { oldSlot = append([]byte(nil), tx.RawSlot("alice")...); return nil })
	kr.Close()
	db, err := bolt.Open(e.keyring, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("slots")).Put([]byte("alice"), oldSlot) })
	db.Close()
	// The old password opens the restored slot, but the unseal is refused.
	e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "check", "--as", "alice")
	// Without a terminal and without --yes, repair only shows its plan.
	r := e.admin(4, pwBob+"\n", "--keyring", e.keyring, "check", "--as", "bob", "--repair")
	if !strings.Contains(r.out, `slot "alice": drop it and invite its admin again`) {
		t.Fatalf("repair plan: %s", r.out)
	}
	e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "check", "--as", "alice")
	r = e.admin(0, pwBob+"\n", "--keyring", e.keyring, "check", "--as", "bob", "--repair", "--yes")
	code := codeIn(t, r.out[strings.Index(r.out, "invite code for alice"):])
	for _, pw := range []string{pwAlice, newPw} {
		e.admin(3, pw+"\n", "--keyring", e.keyring, "check", "--as", "alice")
	}
	e.admin(0, code+"\nalice's third passphrase\n", "--keyring", e.keyring, "enroll", "alice")
	e.admin(0, "alice's third passphrase\n", "--keyring", e.keyring, "check", "--as", "alice")
}

// TestFormat1KeyringsUpgrade is issue 11's sixth item, through the binary:
// version-1 slots open, and the first login upgrades the file.
func TestFormat1KeyringsUpgrade(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "k.db")
	copyFile(t, filepath.Join("..", "..", "admin", "testdata", "legacy", "format1-slotv1.db"), path, 0o600)
	r := runCmd(t, "", adminBin, "--keyring", path, "status")
	if r.code != 0 || !strings.Contains(r.out, "format 1") {
		t.Fatalf("status of a format-1 file: %d %s", r.code, r.out)
	}
	r = runCmd(t, "bob's own long passphrase\n", adminBin, "--keyring", path, "check", "--as", "bob")
	if r.code != 0 || !strings.Contains(r.out, "state: ok") {
		t.Fatalf("check of a format-1 file: %d %s", r.code, r.out)
	}
	r = runCmd(t, "", adminBin, "--keyring", path, "status")
	if !strings.Contains(r.out, "format 2") {
		t.Fatalf("after the first login: %s", r.out)
	}
}

// Issue 11's seventh item (a lowered or raised KDF policy in the header is
// detected, and nothing is rewrapped) is two rows of TestTamperTable.

// TestSealDuringUnsealWins is issue 11's eighth item: a seal that arrives
// while an unseal derives wins; the daemon does not end up unsealed.
func TestSealDuringUnsealWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// carol's slot takes a second or more to derive (alice's, at the floor,
	// a tenth): the seal below lands inside it even on a loaded machine.
	e.admin(0, pwAlice+"\n"+pwCarol+"\n", "--keyring", e.keyring, "add", "carol", "--as", "alice", "--kdf-iterations", "16", "--kdf-memory", "128")
	e.start(nil)
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	st0, err := ac.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ac.Unseal(context.Background(), "carol", []byte(pwCarol))
		errc <- err
	}()
	// Seal once the derivation has started.
	waitDerivation(t, ac, st0)
	if _, err := ac.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	err = <-errc
	st, serr := ac.Status(context.Background())
	if serr != nil {
		t.Fatal(serr)
	}
	if !st.Sealed || err == nil || !strings.Contains(err.Error(), "the seal wins") {
		t.Fatalf("after a seal during an unseal: sealed=%v, unseal error %v", st.Sealed, err)
	}
	e.expectRead(nobody, 503)
}

// forgeUnder finishes a forged state under the forger's own key k: the
// header's commitment moved to it, their secret, a keyed record of theirs
// (ev) and a state root they signed. It is what someone who can write the
// file but holds no DataKey can do.
func forgeUnder(tx *keyring.Tx, h *keyring.Header, k *unseal.Key, secret []byte, ev audit.Event) error {
	h.Commitment = k.Commitment()
	if err := tx.PutHeader(h); err != nil {
		return err
	}
	sec, err := k.EncryptSecret(secret, 9)
	if err != nil {
		return err
	}
	if err := tx.PutSecret(sec); err != nil {
		return err
	}
	lk, err := k.LogKeys(memlock.Options{AllowUnlocked: true})
	if err != nil {
		return err
	}
	defer lk.Destroy()
	events, err := audit.StateOf(tx, keyring.Events)
	if err != nil {
		return err
	}
	hd, err := audit.Append(tx, lk.Bytes()[:32], keyring.Events, &events, ev)
	if err != nil {
		return err
	}
	events.KeyedSeq, events.KeyedMAC = hd.Seq, hd.MAC
	reads, _ := audit.StateOf(tx, keyring.Reads)
	_, err = k.Sign(tx, nil, &events, &reads, nil)
	return err
}

// remove --rekey is offboarding: the removed admin knew the DataKey, so a
// state with their slot gone and their DataKey still current must never be
// left behind, whatever moment the tool dies at. It is killed at each of
// its derivations in turn (the removal and the rekey are one transaction,
// so at every one nothing has changed yet) until it runs to the end; each
// time the file is either as before (bob present, the old DataKey) or
// wholly after (bob gone, a new DataKey), and verifies.
func TestRemoveRekeyKilledLeavesNoHalfway(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	state := func() (commitment [32]byte, bob bool) {
		t.Helper()
		kr, err := keyring.Open(e.keyring, keyring.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer kr.Close()
		if err := kr.View(func(tx *keyring.Tx) error {
			h, err := tx.Header()
			if err != nil {
				return err
			}
			commitment = h.Commitment
			_, err = tx.Slot("bob")
			bob = err == nil
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return commitment, bob
	}
	before, _ := state()
	for k := 1; ; k++ {
		if k > 10 {
			t.Fatal("remove --rekey never ran to its end")
		}
		cmd := exec.Command(adminBin, "--keyring", e.keyring, "remove", "bob", "--rekey", "--as", "alice")
		cmd.Stdin = strings.NewReader(pwAlice + "\n")
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		finished := false
	wait:
		for {
			select {
			case err = <-done:
				finished = true
				break wait
			case <-time.After(5 * time.Millisecond):
				if strings.Count(out.String(), "deriving key for alice") >= k {
					cmd.Process.Kill()
					err = <-done
					break wait
				}
			}
		}
		after, bob := state()
		switch {
		case bob && after == before:
			// Nothing changed.
		case !bob && after != before:
			if !finished && err == nil {
				t.Fatalf("killed at derivation %d but exited 0", k)
			}
			if k == 1 {
				t.Fatalf("remove --rekey was never killed before it ended:\n%s", out.String())
			}
			t.Logf("killed at derivations 1 to %d with nothing changed; then it ran to its end", k-1)
			e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "check", "--as", "alice")
			return
		default:
			t.Fatalf("killed at derivation %d: bob's slot present %v, DataKey replaced %v: a half-done offboarding\n%s", k, bob, after != before, out.String())
		}
		if finished {
			t.Fatalf("remove --rekey ended (%v) and changed nothing:\n%s", err, out.String())
		}
		e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "check", "--as", "alice")
	}
}

// An audit verify asked for while a remove --rekey derives is answered
// under the keys the file is under when it runs: not with the old keys the
// rekey destroys on commit (a fault in the verify's read, which
// said "corrupt keyring: restore a backup" and would have rolled the
// offboarding back), nor against a state root they no longer sign. A read
// queued meanwhile makes the audit writer wait on the rekey too.
func TestAuditVerifyDuringARekey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// carol's slot takes a second or more to derive: the verify lands
	// inside her rekey.
	e.admin(0, pwAlice+"\n"+pwCarol+"\n", "--keyring", e.keyring, "add", "carol", "--as", "alice", "--kdf-iterations", "16", "--kdf-memory", "256")
	e.start(nil)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	ctx := context.Background()
	st0, err := ac.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rekeyed := make(chan error, 1)
	go func() {
		_, err := ac.Rekey(ctx, "carol", []byte(pwCarol), admin.RekeyOptions{Remove: "bob"})
		rekeyed <- err
	}()
	waitDerivation(t, ac, st0)
	e.expectRead(nobody, 200)
	// The rekey holds the audit writer for its transaction only: the read
	// is on file while the rekey still derives.
	recs, err := ac.Audit(ctx, audit.Filter{Reads: true, Limit: 1})
	select {
	case err := <-rekeyed:
		t.Fatalf("the rekey (%v) ended before the read's record could be listed: its derivation was too quick for this test", err)
	default:
	}
	if err != nil || len(recs) != 1 || recs[0].Outcome != audit.Served {
		t.Fatalf("the read's record, listed during the rekey: %v %d records", err, len(recs))
	}
	verified := make(chan error, 1)
	go func() {
		_, err := ac.VerifyAudit(ctx)
		verified <- err
	}()
	if err := <-rekeyed; err != nil {
		t.Fatalf("rekey: %v", err)
	}
	select {
	case err := <-verified:
		if err != nil {
			t.Fatalf("an audit verify during the rekey: %v\n%s", err, lastLines(e.log.String(), 20))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the audit verify never answered")
	}
	if _, err := ac.VerifyAudit(ctx); err != nil {
		t.Fatalf("a later verify: %v", err)
	}
	e.expectRead(nobody, 200)
}

// waitDerivation returns once the daemon has started an Argon2id derivation
// since st0 was taken.
func waitDerivation(t *testing.T, ac *api.Client, st0 *api.Status) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		st, err := ac.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.KDFDerivations > st0.KDFDerivations {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no derivation started")
		}
	}
}
