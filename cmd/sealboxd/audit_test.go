package main

// The audit trail through the daemon, and an edited log named offline.

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"

	"github.com/sealbox/sealbox/keyring"
)

func TestAuditTrailAndTamperDetection(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	e.expectRead(nobody, 503)
	e.expectRead(stranger, 403)
	e.online(3, "not alice's password\n", "unseal", "--admin", "alice")
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.expectRead(nobody, 200)
	e.online(0, pwAlice+"\n", "client", "disable", "svc", "--as", "alice")
	e.expectRead(nobody, 403)
	e.online(0, "", "seal")

	r := e.online(0, "", "audit", "--json")
	reads := e.online(0, "", "audit", "--reads", "--json")
	r.out = strings.TrimSuffix(strings.TrimSpace(r.out), "]") + "," + strings.TrimPrefix(strings.TrimSpace(reads.out), "[")
	var recs []struct {
		Seq   uint64
		Keyed bool
		Event struct {
			Kind, Outcome, Actor, Target, Client, Detail string
			Peer                                         *struct{ UID uint32 }
		}
	}
	if err := json.Unmarshal([]byte(r.out), &recs); err != nil {
		t.Fatalf("%v: %s", err, r.out)
	}
	seen := map[string]bool{}
	for _, rec := range recs {
		ev := rec.Event
		seen[ev.Kind+"/"+ev.Outcome+"/"+ev.Client+ev.Actor] = true
		if ev.Kind == "read" && ev.Client == "" && ev.Peer != nil && ev.Peer.UID != stranger {
			t.Errorf("a refused read names no client and uid %d", ev.Peer.UID)
		}
	}
	for _, want := range []string{
		"read/sealed/svc", "read/refused/", "unseal/wrong_password/alice", "unseal/ok/alice",
		"read/served/svc", "client.disable/ok/alice", "read/refused/svc", "seal/ok/",
	} {
		if !seen[want] {
			t.Errorf("no %s record in:\n%s", want, r.out)
		}
	}
	if strings.Contains(r.out, pwAlice) || strings.Contains(r.out, "S3cr3t") {
		t.Fatal("the audit log holds a password or the secret")
	}
	e.online(0, "", "audit", "verify")
	e.online(0, "", "audit", "--client", "svc", "--limit", "2")
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatal(code)
	}

	// Offline: the chain verifies with an admin's password...
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "audit", "verify", "--as", "alice")
	// ...and a record deleted behind sealbox's back is named.
	deleteAuditRecord(t, e.keyring, 4)
	r = e.admin(6, pwAlice+"\n", "--keyring", e.keyring, "audit", "verify", "--as", "alice")
	if !strings.Contains(r.out, "record 4") || !strings.Contains(r.out, "missing") {
		t.Fatalf("tampered audit log: %s", r.out)
	}
}

// deleteAuditRecord removes one record straight from the bbolt file.
func deleteAuditRecord(t *testing.T, path string, seq uint64) {
	t.Helper()
	editFile(t, path, func(tx *keyring.Tx) error { return deleteAuditRecordTx(tx, keyring.Events, seq) })
}
