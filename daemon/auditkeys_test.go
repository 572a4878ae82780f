package daemon

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// A rekey's new log keys replace the old ones while a write transaction
// that read the old ones (the manager reads them inside its own) may still
// be running: the old buffer stays readable until that transaction ends,
// and the swap returns only then. Later readers get the new keys.
func TestReplacedLogKeysOutliveTheirReaders(t *testing.T) {
	t.Parallel()
	kpath := filepath.Join(shortDir(t), "k.db")
	p := cheap
	if err := admin.Init(context.Background(), kpath, "alice", []byte(pwAlice), secret, admin.Options{Policy: &p, Memory: memlock.Options{AllowUnlocked: true}}); err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Open(kpath, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	a := newAuditor(kr, nil, 0, 0, nil)
	key := func(b byte) *memlock.Buffer {
		k, err := memlock.New(64, memlock.Options{AllowUnlocked: true})
		if err != nil {
			t.Fatal(err)
		}
		for i := range k.Bytes() {
			k.Bytes()[i] = b
		}
		return k
	}
	a.setKeys(key(1))
	reading, read := make(chan struct{}), make(chan error, 1)
	errDone := errors.New("done")
	go func() {
		read <- kr.Update(func(*keyring.Tx) error {
			old := a.keyBytes()
			close(reading)
			time.Sleep(300 * time.Millisecond) // the swap happens meanwhile
			if !bytes.Equal(old, bytes.Repeat([]byte{1}, 64)) {
				return errors.New("the old keys changed under a transaction that held them")
			}
			return errDone
		})
	}()
	<-reading
	swapped := make(chan struct{})
	go func() {
		a.replaceKeys(key(2))
		close(swapped)
	}()
	select {
	case <-swapped:
		t.Fatal("the old keys were destroyed while a write transaction held them")
	case <-time.After(100 * time.Millisecond):
	}
	if err := <-read; !errors.Is(err, errDone) {
		t.Fatal(err)
	}
	<-swapped
	if !bytes.Equal(a.keyBytes(), bytes.Repeat([]byte{2}, 64)) {
		t.Fatal("the new keys are not installed")
	}
	a.close()
}
