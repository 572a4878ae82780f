package tang_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/sealbox/sealbox/unseal/tang"
)

// Binding: fetch the advertisement, pin the signing key the administrator
// read on the server (tang-show-keys), encrypt offline.
func ExampleEncrypt() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	adv, err := tang.Fetch(ctx, tang.Client(3*time.Second), "http://tang.example:7500")
	if err != nil {
		log.Fatal(err)
	}
	if err := adv.Trust("r4Zt0L4Ezn_xZ_MvVqnU6QbPVhEgG5OsbYdHEkcDMrg"); err != nil {
		log.Fatalf("%v (the server signs with %v)", err, adv.Signers())
	}
	jwe, err := tang.Encrypt(adv, []byte("data key"))
	if err != nil {
		log.Fatal(err)
	}
	os.Stdout.Write(jwe)
}

// Unbinding: size the buffer from the JWE, give the server a deadline, and
// retry only what is worth retrying.
func ExampleRecover() {
	jwe, err := os.ReadFile("slot.jwe")
	if err != nil {
		log.Fatal(err)
	}
	b, err := tang.Parse(jwe)
	if err != nil {
		log.Fatal(err)
	}
	dst := make([]byte, b.Len()) // in real use: locked memory
	defer clear(dst)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch err := tang.Recover(ctx, tang.Client(3*time.Second), jwe, dst); {
	case err == nil:
		fmt.Println("opened with", b.URL)
	case errors.Is(err, tang.ErrUnreachable):
		fmt.Println("server down, try another slot or later:", err)
	default: // ErrKeyGone, ErrRefused, ErrBadJWE: this slot will not open
		fmt.Println("slot is dead:", err)
	}
}
