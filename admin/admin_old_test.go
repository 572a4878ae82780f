package admin

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// snapshot returns the keyring's records as bytes, to show nothing changed
// (audit records and the generation aside: refusals are recorded).
func snapshot(t *testing.T, m *Manager) []byte {
	t.Helper()
	var out bytes.Buffer
	m.kr.View(func(tx *keyring.Tx) error {
		tx.RawRecords(func(kind byte, name, raw []byte) {
			out.WriteByte(kind)
			out.Write(name)
			out.Write(raw)
		})
		tx.Manifest(func(k, v []byte) { out.Write(k); out.Write(v) })
		out.Write(tx.RawHeader())
		out.Write(tx.RawSecret())
		return nil
	})
	return out.Bytes()
}

func TestRoundTripAddUnsealRemove(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	if err := m.AddAdmin(ctx, "bob", []byte(pwBob), "carol", []byte(pwCarol)); err != nil {
		t.Fatal(err)
	}
	for name, pw := range map[string]string{"alice": pwAlice, "bob": pwBob, "carol": pwCarol} {
		mustUnseal(t, m, name, pw)
	}
	if err := m.RemoveAdmin(ctx, "carol", []byte(pwCarol), "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Unseal(ctx, "bob", []byte(pwBob)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("removed admin unseal: got %v, want ErrWrongPassword", err)
	}
	if err := m.AddAdmin(ctx, "bob", []byte(pwBob), "mallory", []byte("mallory's own password")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("removed admin as actor: got %v, want ErrWrongPassword", err)
	}
	// The removed admin's password opens nothing left in the file.
	m.kr.View(func(tx *keyring.Tx) error {
		h, _ := tx.Header()
		slots, _ := tx.Slots()
		for _, s := range slots {
			if _, err := unseal.OpenSlot(h, s, []byte(pwBob), memlock.Options{AllowUnlocked: true}); err == nil {
				t.Errorf("bob's password opens slot %q", s.Name)
			}
		}
		return nil
	})
	// The others are unaffected.
	mustUnseal(t, m, "alice", pwAlice)
	mustUnseal(t, m, "carol", pwCarol)
}

func TestWrongPasswordChangesNothing(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	before := snapshot(t, m)
	if err := m.AddAdmin(ctx, "alice", []byte("not alice's password"), "bob", []byte(pwBob)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("got %v", err)
	}
	if err := m.AddClient(ctx, "alice", []byte("not alice's password"), "web", uidMatch(33)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("got %v", err)
	}
	if err := m.Passwd(ctx, "alice", []byte("not alice's password"), []byte("a brand new password")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("got %v", err)
	}
	if !bytes.Equal(before, snapshot(t, m)) {
		t.Fatal("keyring changed after wrong passwords")
	}
}

func TestUnknownAdminSameErrorSameWork(t *testing.T) {
	m, _ := newStore(t) // not parallel: reads unseal's process-wide work counter
	n0, c0 := unseal.Work()
	_, errWrong := m.Unseal(ctx, "alice", []byte("wrong password!!"))
	n1, c1 := unseal.Work()
	_, errUnknown := m.Unseal(ctx, "zed", []byte("wrong password!!"))
	n2, c2 := unseal.Work()
	if errWrong == nil || errUnknown == nil || errWrong.Error() != errUnknown.Error() {
		t.Fatalf("errors differ: wrong=%v unknown=%v", errWrong, errUnknown)
	}
	if n1-n0 != 1 || n2-n1 != 1 || c1-c0 != c2-c1 {
		t.Fatalf("work differs: wrong %d/%d, unknown %d/%d", n1-n0, c1-c0, n2-n1, c2-c1)
	}
}

func TestLastAdminGuard(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	if err := m.RemoveAdmin(ctx, "alice", []byte(pwAlice), "alice"); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("got %v, want ErrLastAdmin", err)
	}
	mustUnseal(t, m, "alice", pwAlice)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveAdmin(ctx, "alice", []byte(pwAlice), "alice"); err != nil {
		t.Fatalf("removing oneself with another admin left: %v", err)
	}
	if err := m.RemoveAdmin(ctx, "bob", []byte(pwBob), "bob"); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("got %v, want ErrLastAdmin", err)
	}
	mustUnseal(t, m, "bob", pwBob)
}

func TestSlotCopiedUnderAnotherNameDoesNotOpen(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	// Someone with write access to the file copies bob's slot over alice's.
	m.kr.Update(func(tx *keyring.Tx) error {
		s, err := tx.Slot("bob")
		if err != nil {
			return err
		}
		s.Name = "alice"
		return tx.PutSlot(s)
	})
	if _, err := m.Unseal(ctx, "alice", []byte(pwBob)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("bob's slot under alice's name with bob's password: got %v", err)
	}
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("alice's password on the overwritten slot: got %v", err)
	}
}

func TestForeignDataKeySlotRejected(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	// A slot wrapping another DataKey, under a password the attacker knows,
	// with this keyring's ID and a name of its own.
	var id [keyring.IDSize]byte
	m.kr.View(func(tx *keyring.Tx) error { h, _ := tx.Header(); id = h.ID; return nil })
	forger, err := unseal.NewKey(id, memlock.Options{AllowUnlocked: true})
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Destroy()
	s, err := forger.SealSlot("mallory", keyring.KindAdmin, []byte("mallory's password"), cheap, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	m.kr.Update(func(tx *keyring.Tx) error { return tx.PutSlot(s) })
	if _, err := m.Unseal(ctx, "mallory", []byte("mallory's password")); !errors.Is(err, unseal.ErrCommitment) {
		t.Fatalf("got %v, want ErrCommitment", err)
	}
	// Alice still unseals, and the foreign slot is reported.
	u, err := m.Unseal(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Secret.Destroy()
	if len(u.Report.Findings) != 1 || !u.Report.Bad(keyring.RecordSlot, "mallory") || u.Report.Bad(keyring.RecordSlot, "alice") {
		t.Fatalf("report %+v, want mallory named, alone", u.Report)
	}
	// Every change is refused while the state fails...
	if err := m.AddClient(ctx, "alice", []byte(pwAlice), "web", uidMatch(33)); !errors.Is(err, unseal.ErrIntegrity) {
		t.Fatalf("change with a bad state: got %v, want ErrIntegrity", err)
	}
	// ...until an admin repairs it, which drops the foreign slot.
	if _, err := m.Repair(ctx, "bob", []byte(pwAlice), yes); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("repair by unknown actor: %v", err)
	}
	if _, err := m.Repair(ctx, "alice", []byte(pwAlice), no); !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("unconfirmed repair: %v", err)
	}
	rep, err := m.Repair(ctx, "alice", []byte(pwAlice), yes)
	if err != nil || len(rep.Plan.Actions) != 1 || rep.Plan.Actions[0].Name != "mallory" || len(rep.Codes) != 1 {
		t.Fatalf("repair: %+v %v", rep, err)
	}
	mustUnseal(t, m, "alice", pwAlice)
	if err := m.AddClient(ctx, "alice", []byte(pwAlice), "web", uidMatch(33)); err != nil {
		t.Fatalf("change after repair: %v", err)
	}
	if _, err := m.Repair(ctx, "alice", []byte(pwAlice), yes); !errors.Is(err, ErrNothingToRepair) {
		t.Fatalf("repair of a good registry: %v", err)
	}
}

// rawPut writes bytes straight into a bucket, bypassing every encoder.
func rawPut(t *testing.T, m *Manager, path, bucket, key string, val []byte) *Manager {
	t.Helper()
	m.kr.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), val) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	return reopen(t, path)
}

func rawGet(t *testing.T, m *Manager, bucket, key string) []byte {
	t.Helper()
	kind := map[string]byte{"slots": keyring.RecordSlot, "clients": keyring.RecordClient}[bucket]
	var out []byte
	m.kr.View(func(tx *keyring.Tx) error {
		tx.RawRecords(func(k byte, name, raw []byte) {
			if k == kind && string(name) == key {
				out = append([]byte(nil), raw...)
			}
		})
		return nil
	})
	if out == nil {
		t.Fatalf("no %s record %q", bucket, key)
	}
	return out
}

func TestTruncatedOrOversizedSlotRejectedBeforeDecryption(t *testing.T) {
	m, path := newStore(t) // not parallel: reads unseal's work counter
	good := rawGet(t, m, "slots", "alice")
	for _, b := range [][]byte{good[:len(good)-1], append(append([]byte{}, good...), 0), good[:40]} {
		m = rawPut(t, m, path, "slots", "alice", b)
		n0, _ := unseal.Work()
		_, err := m.Unseal(ctx, "alice", []byte(pwAlice))
		n1, _ := unseal.Work()
		if !errors.Is(err, keyring.ErrCorrupt) {
			t.Errorf("%d-byte slot: got %v, want ErrCorrupt", len(b), err)
		}
		if n1 != n0 {
			t.Errorf("%d-byte slot: %d derivations ran before the length check", len(b), n1-n0)
		}
	}
}

func TestParamsAboveCapRefusedWithoutAllocating(t *testing.T) {
	m, path := newStore(t) // not parallel: reads unseal's work counter
	good := rawGet(t, m, "slots", "alice")
	bad := append([]byte{}, good...)
	// m (bytes 25..28 of the record) = 0xFFFFFFFF KiB, about 4 TiB.
	bad[25], bad[26], bad[27], bad[28] = 0xFF, 0xFF, 0xFF, 0xFF
	m = rawPut(t, m, path, "slots", "alice", bad)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	n0, _ := unseal.Work()
	_, err := m.Unseal(ctx, "alice", []byte(pwAlice))
	n1, _ := unseal.Work()
	runtime.ReadMemStats(&ms1)
	if !errors.Is(err, unseal.ErrParams) {
		t.Fatalf("got %v, want ErrParams", err)
	}
	if n1 != n0 {
		t.Fatal("a derivation ran")
	}
	if a := ms1.TotalAlloc - ms0.TotalAlloc; a > 1<<20 {
		t.Fatalf("allocated %d bytes before refusing", a)
	}
}

func TestUnknownFormatVersionRefused(t *testing.T) {
	t.Parallel()
	m, path := newStore(t)
	m.kr.Close()
	db, _ := bolt.Open(path, 0o600, nil)
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte{0, 0, 0, 9}) })
	db.Close()
	if _, err := keyring.Open(path, keyring.Options{}); !errors.Is(err, keyring.ErrUnknownVersion) {
		t.Fatalf("got %v, want ErrUnknownVersion", err)
	}
}

func TestSecretsAndPasswordsNeverInTheFile(t *testing.T) {
	t.Parallel()
	m, path := newStore(t)
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "bob", []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	if err := m.Passwd(ctx, "bob", []byte(pwBob), []byte(pwCarol)); err != nil {
		t.Fatal(err)
	}
	if err := m.AddClient(ctx, "bob", []byte(pwCarol), "web", uidMatch(33)); err != nil {
		t.Fatal(err)
	}
	m.kr.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range [][]byte{secret, secret[:16], []byte(pwAlice), []byte(pwBob), []byte(pwCarol), []byte(pwAlice[:12])} {
		if bytes.Contains(raw, needle) {
			t.Errorf("file contains %q", needle)
		}
	}
	if len(raw) < 4096 || !bytes.Contains(raw, []byte("alice")) {
		t.Fatal("scan is not looking at the keyring (names should be there)")
	}
}

func TestPasswdReplacesSlot(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	if err := m.Passwd(ctx, "alice", []byte(pwAlice), []byte(pwBob)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Unseal(ctx, "alice", []byte(pwAlice)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("old password still opens: %v", err)
	}
	mustUnseal(t, m, "alice", pwBob)
	if err := m.Passwd(ctx, "alice", []byte(pwBob), []byte(pwBob)); !errors.Is(err, ErrWeakPassword) {
		t.Fatalf("same password: %v", err)
	}
}

func TestAddAdminRefusals(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	before := snapshot(t, m)
	cases := map[string]struct {
		name, pw string
		want     error
	}{
		"exists":      {"alice", pwBob, keyring.ErrSlotExists},
		"short":       {"bob", "short", ErrWeakPassword},
		"denylisted":  {"bob", "Password1234", ErrWeakPassword},
		"contains me": {"bobby", "bobby-bobby-1", ErrWeakPassword},
	}
	for name, c := range cases {
		if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), c.name, []byte(c.pw)); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
	if err := m.AddAdmin(ctx, "alice", []byte(pwAlice), "Bad Name", []byte(pwBob)); err == nil {
		t.Error("invalid name accepted")
	}
	if !bytes.Equal(before, snapshot(t, m)) {
		t.Fatal("refused adds changed the keyring")
	}
}

func TestClientLifecycleAndRegistry(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	gid := uint32(44)
	if err := m.AddClient(ctx, "alice", []byte(pwAlice), "web", uidMatch(33)); err != nil {
		t.Fatal(err)
	}
	if err := m.AddClient(ctx, "alice", []byte(pwAlice), "db", Match{UID: ptr(uint32(70)), GID: &gid}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddClient(ctx, "alice", []byte(pwAlice), "web", uidMatch(34)); !errors.Is(err, keyring.ErrClientExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := m.SetClientStatus(ctx, "alice", []byte(pwAlice), "web", keyring.ClientDisabled); err != nil {
		t.Fatal(err)
	}
	if err := m.SetClientStatus(ctx, "alice", []byte(pwAlice), "web", keyring.ClientDisabled); !errors.Is(err, ErrClientState) {
		t.Fatalf("disable twice: %v", err)
	}
	if err := m.SetClientStatus(ctx, "alice", []byte(pwAlice), "db", keyring.ClientRetired); err != nil {
		t.Fatal(err)
	}
	if err := m.SetClientStatus(ctx, "alice", []byte(pwAlice), "db", keyring.ClientActive); !errors.Is(err, ErrClientState) {
		t.Fatalf("enable retired: %v", err)
	}
	if err := m.SetClientStatus(ctx, "alice", []byte(pwAlice), "nope", keyring.ClientActive); !errors.Is(err, keyring.ErrNoClient) {
		t.Fatalf("unknown client: %v", err)
	}
	list, err := m.ListClients()
	if err != nil || len(list) != 2 || list[0].Name != "db" || list[0].Status != "retired" || *list[0].GID != 44 || list[1].Status != "disabled" || list[1].GID != nil {
		t.Fatalf("list %+v %v", list, err)
	}
	u := mustUnseal(t, m, "alice", pwAlice)
	if len(u.Clients) != 2 {
		t.Fatalf("unseal verified %d clients, want 2", len(u.Clients))
	}

	// Someone who can write the file re-enables "web" by editing its record.
	m.kr.Update(func(tx *keyring.Tx) error {
		c, _ := tx.Client("web")
		c.Status = keyring.ClientActive
		return tx.PutClient(c)
	})
	u2, err := m.Unseal(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Destroy()
	if len(u2.Report.Findings) != 1 || !u2.Report.Bad(keyring.RecordClient, "web") || u2.Report.Bad(keyring.RecordClient, "db") {
		t.Fatalf("tampered client not reported: %+v", u2.Report)
	}
	for _, c := range u2.Clients {
		if c.Name == "web" {
			t.Fatal("tampered client honoured")
		}
	}
}

func TestRolledBackClientDetectedByManifest(t *testing.T) {
	t.Parallel()
	m, _ := newStore(t)
	if err := m.AddClient(ctx, "alice", []byte(pwAlice), "web", uidMatch(33)); err != nil {
		t.Fatal(err)
	}
	var old *keyring.Client
	m.kr.View(func(tx *keyring.Tx) error { old, _ = tx.Client("web"); return nil })
	if err := m.SetClientStatus(ctx, "alice", []byte(pwAlice), "web", keyring.ClientDisabled); err != nil {
		t.Fatal(err)
	}
	// Restore the older, validly signed Active record.
	m.kr.Update(func(tx *keyring.Tx) error { return tx.PutClient(old) })
	u, err := m.Unseal(ctx, "alice", []byte(pwAlice))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Destroy()
	if len(u.Report.Findings) != 1 || !u.Report.Bad(keyring.RecordClient, "web") || !strings.Contains(u.Report.Findings[0].Problem, "rolled back") {
		t.Fatalf("report %+v, want web named as rolled back", u.Report)
	}
	if len(u.Clients) != 0 {
		t.Fatalf("%d clients honoured after a rollback, want 0", len(u.Clients))
	}
}

func TestCheckNewPassword(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"twelve chars", "ünïcödé pässwörd", pwAlice} {
		if err := CheckNewPassword("alice", []byte(ok)); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "elevenchars", "QWERTY123456", "password1234", "alice1234567", "aliceALICE!!alice", "nul\x00in the middle", string(bytes.Repeat([]byte("a"), MaxPasswordLen+1)), "\xff\xfe not utf-8 at all"} {
		err := CheckNewPassword("alice", []byte(bad))
		if !errors.Is(err, ErrWeakPassword) {
			t.Errorf("%q accepted", bad)
			continue
		}
		if len(bad) > 4 && bytes.Contains([]byte(err.Error()), []byte(bad)) {
			t.Errorf("error repeats the password: %v", err)
		}
	}
}

func uidMatch(n uint32) Match { return Match{UID: &n} }

func yes(*RepairPlan) bool { return true }
func no(*RepairPlan) bool  { return false }

func ptr[T any](v T) *T { return &v }
