package tang

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/fleettest"
)

// run runs a command (no proxy) and returns its stdout.
func run(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	return fleettest.Run(t, stdin, name, args...)
}

// startTangd serves a fresh key directory with the real tangd under socat
// on a free 127.0.0.1 port and returns the directory and the URL.
func startTangd(t *testing.T) (dir, url string) {
	s := fleettest.StartTang(t)
	return s.Dir, s.URL
}

// signingThumbprint returns the thumbprint of the one signing key in dir,
// from its file name (tangd-keygen names files by S256 thumbprint),
// checked against jose jwk thp.
func signingThumbprint(t *testing.T, dir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var k jwk
		if err := json.Unmarshal(b, &k); err != nil {
			t.Fatal(err)
		}
		if k.Alg == "ES512" {
			found = append(found, f)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d signing keys in %s", len(found), dir)
	}
	thp := strings.TrimSuffix(filepath.Base(found[0]), ".jwk")
	if jose := strings.TrimSpace(string(run(t, nil, "jose", "jwk", "thp", "-i", found[0]))); jose != thp {
		t.Fatalf("jose jwk thp says %s, file name %s", jose, thp)
	}
	return thp
}

func recoverT(t *testing.T, jwe []byte) ([]byte, error) {
	t.Helper()
	b, err := Parse(jwe)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, b.Len())
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err = Recover(ctx, Client(time.Second), jwe, dst)
	t.Logf("Recover against tangd: %v", time.Since(start))
	return dst, err
}

// TestRealTangd: interoperability with Debian's tangd and clevis in both
// directions, thumbprint trust, key rotation and deleted keys.
func TestRealTangd(t *testing.T) {
	fleettest.RequireTang(t)
	t.Parallel()
	dir, url := startTangd(t)
	thp := signingThumbprint(t, dir)
	plain := []byte("sealbox tang interop\x00\xff binary")

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	adv, err := Fetch(ctx, Client(time.Second), url)
	if err != nil {
		t.Fatal(err)
	}
	if err := adv.Trust(thp); err != nil {
		t.Fatalf("Trust(real thumbprint): %v", err)
	}
	if got := adv.Signers(); !slices.Equal(got, []string{thp}) {
		t.Fatalf("Signers %v, want [%s]", got, thp)
	}
	if err := adv.Trust(strings.Repeat("A", 43)); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("Trust(wrong): %v", err)
	}

	// Go binds, clevis opens.
	start := time.Now()
	goJWE, err := Encrypt(adv, plain)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Encrypt: %v", time.Since(start))
	start = time.Now()
	if got := run(t, goJWE, "clevis", "decrypt"); !bytes.Equal(got, plain) {
		t.Fatalf("clevis decrypt of Go's JWE: %q", got)
	}
	t.Logf("clevis decrypt: %v", time.Since(start))

	// clevis binds, Go opens.
	start = time.Now()
	clevisJWE := run(t, plain, "clevis", "encrypt", "tang", fmt.Sprintf(`{"url":%q}`, url), "-y")
	t.Logf("clevis encrypt: %v", time.Since(start))
	if got, err := recoverT(t, clevisJWE); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Recover of clevis's JWE: %q, %v", got, err)
	}
	// Go also opens its own JWE against the real server.
	if got, err := recoverT(t, goJWE); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Recover of Go's JWE: %q, %v", got, err)
	}

	// Rotation: old keys are hidden (.<thp>.jwk), no longer advertised,
	// but still serve /rec.
	run(t, nil, fleettest.TangdRotate, "-d", dir)
	adv2, err := Fetch(ctx, Client(time.Second), url)
	if err != nil {
		t.Fatal(err)
	}
	if err := adv2.Trust(thp); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("the rotated-out signer is still trusted: %v", err)
	}
	if got, err := recoverT(t, clevisJWE); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Recover after rotation: %q, %v", got, err)
	}

	// Deleting the hidden keys ends the old bindings: 404, ErrKeyGone.
	hidden, err := filepath.Glob(filepath.Join(dir, ".*.jwk"))
	if err != nil || len(hidden) != 2 {
		t.Fatalf("hidden keys %v, %v", hidden, err)
	}
	for _, h := range hidden {
		if err := os.Remove(h); err != nil {
			t.Fatal(err)
		}
	}
	for name, jwe := range map[string][]byte{"clevis": clevisJWE, "Go": goJWE} {
		if _, err := recoverT(t, jwe); !errors.Is(err, ErrKeyGone) {
			t.Fatalf("Recover of %s's JWE after the keys were deleted: %v", name, err)
		}
	}
	// A new binding to the new keys works.
	if err := adv2.Trust(signingThumbprint(t, dir)); err != nil {
		t.Fatal(err)
	}
	newJWE, err := Encrypt(adv2, plain)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := recoverT(t, newJWE); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Recover of a binding to the new keys: %q, %v", got, err)
	}
}
