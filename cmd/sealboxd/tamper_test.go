package main

import (
	"strings"
	"testing"

	"github.com/sealbox/sealbox/keyring"
)

// TestTamperTable edits one record of each kind the state root covers, as
// someone who can write the file but holds no key would, and checks the
// promise of FORMAT.md and the threat model each time, against the real
// binaries: check --as names what changed (exit 6); the daemon refuses to
// unseal when what the root covers as a whole changed, and otherwise
// unseals but does not honour the record that fails; audit verify names an
// edited log. Each case starts from the same untouched file.
func TestTamperTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pristine := e.snapshot("pristine.db")
	flip := func(b []byte) { b[len(b)/2] ^= 0x01 }
	cases := []struct {
		name  string
		edit  func(tx *keyring.Tx) error
		check string // in check --as alice's output (exit 6)
		// unseal is alice's unseal through the daemon: 6 refused, or 0
		// with the failing record not honoured; read is svc's read then.
		unseal, read int
		// notListed must not be in list --json after the check's login or
		// the daemon's unseal attempt (a slot rewrapped to a tampered
		// policy).
		notListed string
		after     func(t *testing.T, e *env)
	}{
		{name: "policy lowered in the header", check: "header: changed outside sealbox", unseal: 6, read: 503, notListed: `"kdf_time": 1,`,
			edit: setPolicy(keyring.Params{Time: 1, MemoryKiB: 64, Threads: 1})},
		{name: "policy raised in the header", check: "header: changed outside sealbox", unseal: 6, read: 503, notListed: `"kdf_time": 4`,
			edit: setPolicy(keyring.Params{Time: 4, MemoryKiB: 128 << 10, Threads: 4})},
		{name: "a byte of the secret's ciphertext", check: "master secret does not decrypt", unseal: 6, read: 503,
			edit: func(tx *keyring.Tx) error {
				s, err := tx.Secret()
				if err != nil {
					return err
				}
				flip(s.Ciphertext)
				return tx.PutSecret(s)
			}},
		{name: "bob's slot salt", check: "bob", unseal: 0, read: 200,
			edit: func(tx *keyring.Tx) error {
				s, err := tx.Slot("bob")
				if err != nil {
					return err
				}
				s.Salt[0] ^= 1
				return tx.PutSlot(s)
			},
			after: func(t *testing.T, e *env) {
				// bob's own password opens nothing through the edited
				// slot: to him it is a wrong password, like any failure.
				e.online(0, "", "seal")
				e.online(3, pwBob+"\n", "unseal", "--admin", "bob")
			}},
		{name: "a forged admin beside the others", check: "mallory", unseal: 0, read: 200,
			edit: func(tx *keyring.Tx) error {
				s, err := tx.Slot("bob")
				if err != nil {
					return err
				}
				s.Name = "mallory"
				return tx.PutSlot(s)
			},
			after: func(t *testing.T, e *env) {
				// A slot copied under another name is bound to its own
				// name: bob's password does not open it as mallory.
				e.online(0, "", "seal")
				e.online(3, pwBob+"\n", "unseal", "--admin", "mallory")
			}},
		{name: "svc's client record widened to root", check: "svc", unseal: 0, read: 403,
			edit: func(tx *keyring.Tx) error {
				c, err := tx.Client("svc")
				if err != nil {
					return err
				}
				c.UID = 0
				return tx.PutClient(c)
			},
			after: func(t *testing.T, e *env) {
				// Neither the old uid nor the forged one is served.
				e.expectRead(0, 403)
			}},
		{name: "a manifest entry", check: "outside sealbox", unseal: 6, read: 503,
			edit: func(tx *keyring.Tx) error {
				var key []byte
				tx.Manifest(func(k, _ []byte) {
					if key == nil {
						key = append([]byte(nil), k...)
					}
				})
				return tx.PutManifest(key, make([]byte, 32))
			}},
		{name: "the root's generation", check: "outside sealbox", unseal: 6, read: 503,
			edit: func(tx *keyring.Tx) error {
				r, err := tx.Root()
				if err != nil {
					return err
				}
				r.Generation++
				return tx.PutRoot(r)
			}},
		// The root covers each log's end and anchor, not every record: the
		// daemon unseals (nothing it honours changed), and the chain, which
		// check and audit verify walk, names the gap.
		{name: "an event record deleted from the middle", check: "record 2", unseal: 0, read: 200,
			edit: func(tx *keyring.Tx) error {
				raw := tx.AuditRecord(keyring.Events, 2)
				if raw == nil {
					return nil
				}
				return deleteAuditRecordTx(tx, keyring.Events, 2)
			},
			after: func(t *testing.T, e *env) {
				e.stop(15)
				r := e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "audit", "verify", "--as", "alice")
				if !strings.Contains(r.out, "record 2") || !strings.Contains(r.out, "missing") {
					t.Errorf("audit verify on a deleted record: %s", r.out)
				}
				e.start(nil)
			}},
	}
	for _, c := range cases {
		t.Logf("tampering with %s", c.name)
		copyFile(t, pristine, e.keyring, 0o600)
		editFile(t, e.keyring, c.edit)
		r := e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "check", "--as", "alice")
		if !strings.Contains(r.out, c.check) {
			t.Errorf("%s: check does not name %q:\n%s", c.name, c.check, r.out)
		}
		if c.notListed != "" {
			if r := e.admin(0, "", "--keyring", e.keyring, "list", "--json"); strings.Contains(r.out, c.notListed) {
				t.Errorf("%s: the check's login rewrapped a slot to the tampered policy: %s", c.name, r.out)
			}
		}
		// check writes its own record to the file; put the edit back on
		// the untouched file for the daemon.
		copyFile(t, pristine, e.keyring, 0o600)
		editFile(t, e.keyring, c.edit)
		e.start(nil)
		r = e.online(c.unseal, pwAlice+"\n", "unseal", "--admin", "alice")
		e.expectRead(nobody, c.read)
		if c.notListed != "" {
			if r := e.online(0, "", "list", "--json"); strings.Contains(r.out, c.notListed) {
				t.Errorf("%s: the daemon rewrapped a slot to the tampered policy: %s", c.name, r.out)
			}
		}
		if c.after != nil {
			c.after(t, e)
		}
		e.stop(15)
		if t.Failed() {
			t.Fatalf("%s: unseal said:\n%s", c.name, r.out)
		}
	}
}

// setPolicy is an edit that puts p in the header as the KDF policy.
func setPolicy(p keyring.Params) func(tx *keyring.Tx) error {
	return func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		h.Policy = p
		return tx.PutHeader(h)
	}
}

// deleteAuditRecordTx removes record seq of stream s, keeping the others
// under their numbers, as an editor of the file could.
func deleteAuditRecordTx(tx *keyring.Tx, s keyring.Stream, seq uint64) error {
	keep := map[uint64][]byte{}
	tx.AuditRecords(s, 0, func(n uint64, raw []byte) bool {
		if n != seq {
			keep[n] = append([]byte(nil), raw...)
		}
		return true
	})
	if err := tx.DeleteAuditBefore(s, 1<<62); err != nil {
		return err
	}
	for n, raw := range keep {
		if err := tx.PutAudit(s, n, raw); err != nil {
			return err
		}
	}
	return nil
}
