//go:build goexperiment.runtimesecret

package argon2id

import (
	"bytes"
	"runtime/secret"
	"testing"

	"golang.org/x/crypto/argon2"
)

// TestUnderSecretDo runs a derivation the way a caller that must leave
// nothing would: inside secret.Do, with each lane's goroutine in its own.
// Run with GOEXPERIMENT=runtimesecret.
func TestUnderSecretDo(t *testing.T) {
	got := make([]byte, 32)
	var err error
	secret.Do(func() {
		err = Derive(got, []byte("password"), []byte("somesalt"), 2, 4096, 4, nil, &Options{Do: secret.Do})
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := argon2.IDKey([]byte("password"), []byte("somesalt"), 2, 4096, 4, 32); !bytes.Equal(got, want) {
		t.Fatalf("%x, want %x", got, want)
	}
}
