package shamir

import (
	"bytes"
	"crypto/rand"
	"testing"
)

// slowMul is the schoolbook product reduced by the AES polynomial, written
// apart from mul to check it.
func slowMul(a, b byte) byte {
	var p uint16
	for i := range 8 {
		if b>>i&1 == 1 {
			p ^= uint16(a) << i
		}
	}
	for i := 15; i >= 8; i-- {
		if p>>i&1 == 1 {
			p ^= 0x11b << (i - 8)
		}
	}
	return byte(p)
}

func TestFieldArithmetic(t *testing.T) {
	t.Parallel()
	for a := range 256 {
		for b := range 256 {
			if got, want := mul(byte(a), byte(b)), slowMul(byte(a), byte(b)); got != want {
				t.Fatalf("mul(%#x, %#x) = %#x, want %#x", a, b, got, want)
			}
		}
		if a != 0 && mul(byte(a), inv(byte(a))) != 1 {
			t.Fatalf("inv(%#x) is not an inverse", a)
		}
	}
	// FIPS 197 §4.2: {57} • {83} = {c1}.
	if mul(0x57, 0x83) != 0xc1 {
		t.Fatal("FIPS 197 example")
	}
}

func subsets(n, t int, f func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == t {
			f(cur)
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func TestEveryTSubsetRecoversAndFewerDoNot(t *testing.T) {
	t.Parallel()
	secret := make([]byte, 32)
	rand.Read(secret)
	for _, c := range []struct{ t, n int }{{1, 1}, {1, 3}, {2, 3}, {3, 3}, {2, 5}, {4, 6}} {
		shares, err := Split(secret, c.t, c.n)
		if err != nil {
			t.Fatal(err)
		}
		subsets(c.n, c.t, func(idx []int) {
			xs, sh := make([]byte, len(idx)), make([][]byte, len(idx))
			for k, i := range idx {
				xs[k], sh[k] = byte(i+1), shares[i]
			}
			got := make([]byte, 32)
			if err := Combine(got, xs, sh); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("t=%d n=%d shares %v: %v", c.t, c.n, idx, err)
			}
			if c.t > 1 {
				// One share fewer recovers something else.
				if err := Combine(got, xs[1:], sh[1:]); err != nil || bytes.Equal(got, secret) {
					t.Fatalf("t=%d n=%d: %d shares recovered the secret", c.t, c.n, c.t-1)
				}
				// A share under the wrong x recovers something else.
				xs[0] ^= byte(c.n + 1)
				if err := Combine(got, xs, sh); err == nil && bytes.Equal(got, secret) {
					t.Fatalf("t=%d n=%d: a share with the wrong x recovered the secret", c.t, c.n)
				}
			}
		})
	}
}

// With t = 2, one share is uniformly distributed whatever the secret: for
// a fixed share byte, every secret byte is consistent with exactly one
// coefficient.
func TestOneShareOfTwoSaysNothing(t *testing.T) {
	t.Parallel()
	for x := 1; x <= 3; x++ {
		for y := range 256 {
			seen := map[byte]bool{}
			for c := range 256 {
				for s := range 256 {
					if mul(byte(c), byte(x))^byte(s) == byte(y) {
						seen[byte(s)] = true
					}
				}
			}
			if len(seen) != 256 {
				t.Fatalf("x=%d y=%d is consistent with %d secrets, want all 256", x, y, len(seen))
			}
		}
	}
}

func TestKnownAnswer(t *testing.T) {
	t.Parallel()
	// Coefficients drawn from a fixed stream: c1 = 0x02 for the only byte.
	shares, err := split(bytes.NewReader([]byte{0x02}), []byte{0x53}, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	// f(x) = 0x53 ^ 2•x: f(1) = 0x51, f(2) = 0x57, f(3) = 0x55.
	want := [][]byte{{0x51}, {0x57}, {0x55}}
	for i := range want {
		if !bytes.Equal(shares[i], want[i]) {
			t.Fatalf("share %d = %x, want %x", i+1, shares[i], want[i])
		}
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ t, n int }{{0, 1}, {2, 1}, {1, 17}, {17, 17}} {
		if _, err := Split([]byte{1}, c.t, c.n); err == nil {
			t.Errorf("Split t=%d n=%d accepted", c.t, c.n)
		}
	}
	if _, err := Split(nil, 1, 1); err == nil {
		t.Error("empty secret accepted")
	}
	dst := make([]byte, 2)
	for name, c := range map[string]struct {
		xs     []byte
		shares [][]byte
	}{
		"none":         {nil, nil},
		"count":        {[]byte{1}, [][]byte{{1, 2}, {3, 4}}},
		"length":       {[]byte{1, 2}, [][]byte{{1, 2}, {3}}},
		"x zero":       {[]byte{0, 2}, [][]byte{{1, 2}, {3, 4}}},
		"x duplicated": {[]byte{2, 2}, [][]byte{{1, 2}, {3, 4}}},
	} {
		if err := Combine(dst, c.xs, c.shares); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
