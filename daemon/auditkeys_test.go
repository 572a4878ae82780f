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

// A rekey's new log keys replace the old ones, and the shutdown destroys
// the last ones, while a write transaction that read them (the manager
// reads them inside its own) may still be running: the buffer stays
// readable until that transaction ends, and the step returns only then.
func TestLogKeysOutliveTheTransactionsHoldingThem(t *testing.T) {
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
	a.setKeys(secretBuf(t, 1))
	// Each step destroys the keys a transaction holds: a rekey's swap (to
	// keys of 2s), then the shutdown.
	steps := []struct {
		name string
		held byte
		do   func()
	}{
		{"a rekey's swap", 1, func() { a.replaceKeys(secretBuf(t, 2)) }},
		{"the shutdown", 2, a.close},
	}
	for _, st := range steps {
		reading, read := make(chan struct{}), make(chan error, 1)
		errDone := errors.New("done")
		go func() {
			read <- kr.Update(func(*keyring.Tx) error {
				held := a.keyBytes()
				close(reading)
				time.Sleep(300 * time.Millisecond) // the step runs meanwhile
				if !bytes.Equal(held, bytes.Repeat([]byte{st.held}, 32)) {
					return errors.New("the keys changed under a transaction that held them")
				}
				return errDone
			})
		}()
		<-reading
		done := make(chan struct{})
		go func() {
			st.do()
			close(done)
		}()
		select {
		case <-done:
			t.Fatalf("%s destroyed the keys while a write transaction held them", st.name)
		case <-time.After(100 * time.Millisecond):
		}
		if err := <-read; !errors.Is(err, errDone) {
			t.Fatalf("%s: %v", st.name, err)
		}
		<-done
	}
	if a.keyBytes() != nil {
		t.Fatal("keys left after the shutdown")
	}
}
