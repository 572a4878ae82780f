package daemon

import (
	"testing"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

func secretBuf(t *testing.T, b byte) *memlock.Buffer {
	t.Helper()
	buf, err := memlock.New(32, memlock.Options{AllowUnlocked: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf.Bytes() {
		buf.Bytes()[i] = b
	}
	return buf
}

// Changes report their commits to the daemon outside the keyring's writer
// lock, so two can arrive out of order (the sixth review): the vault keeps
// the newer clients and the newer secret.
func TestVaultKeepsTheNewerOfTwoLateReports(t *testing.T) {
	t.Parallel()
	v := newVault()
	x := func(s keyring.ClientStatus) []*keyring.Client {
		return []*keyring.Client{{Name: "x", UID: 7, HasUID: true, Status: s}}
	}
	v.replaceClients(8, x(keyring.ClientDisabled))
	v.replaceClients(7, x(keyring.ClientActive)) // the older change, late
	if v.active != 0 {
		t.Fatal("an older change's clients replaced a newer one's")
	}
	if err := v.unseal(&admin.Unsealed{Secret: secretBuf(t, 1), Version: 1, Generation: 5}, "alice", v.sealEpoch()); err != nil {
		t.Fatal(err)
	}
	if v.active != 0 {
		t.Fatal("an unseal older than the last change replaced its clients")
	}
	v.rotate(secretBuf(t, 3), 3)
	v.rotate(secretBuf(t, 2), 2) // the older rotate, late
	if v.version != 3 || v.secret.Bytes()[0] != 3 {
		t.Fatalf("serving version %d after rotates to 3 and a late 2", v.version)
	}
}
