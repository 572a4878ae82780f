// Package shamir splits a secret into n shares of which any t recover it,
// and fewer than t tell nothing about it (Shamir's secret sharing over
// GF(2^8), byte by byte).
//
// The field is GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1.
// Share i (1 <= i <= n) holds, for each byte of the secret, the value at
// x = i of a random polynomial of degree t-1 whose constant term is that
// byte. The share's x is its position, which callers keep next to it; a
// share given the wrong x, or a forged share, recovers a wrong secret, which
// is why callers authenticate what they recover (sealbox opens a GCM box
// with it).
//
// Arithmetic is branch-free and table-free, so its timing does not depend on
// the secret.
package shamir

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// MaxShares is the largest n (and t) Split accepts.
const MaxShares = 16

// mul multiplies in GF(2^8) without branches or tables on its operands.
func mul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= -(b & 1) & a
		// a *= x, reduced by the AES polynomial when the top bit falls out.
		a = a<<1 ^ (-(a >> 7) & 0x1b)
		b >>= 1
	}
	return p
}

// inv returns a^254 = a^-1 (and 0 for 0).
func inv(a byte) byte {
	// a^254 = a^(2+4+8+16+32+64+128)
	r := byte(1)
	p := a
	for range 7 {
		p = mul(p, p)
		r = mul(r, p)
	}
	return r
}

// Split returns n shares of secret, any t of which recover it; share i is
// for x = i+1. Each share has len(secret) bytes. Randomness is crypto/rand.
func Split(secret []byte, t, n int) ([][]byte, error) {
	return split(rand.Reader, secret, t, n)
}

func split(rng io.Reader, secret []byte, t, n int) ([][]byte, error) {
	if t < 1 || n < t || n > MaxShares {
		return nil, fmt.Errorf("shamir: need 1 <= t <= n <= %d, got t=%d n=%d", MaxShares, t, n)
	}
	if len(secret) == 0 {
		return nil, errors.New("shamir: empty secret")
	}
	coef := make([]byte, t-1) // the polynomial's coefficients above the constant
	defer clear(coef)
	shares := make([][]byte, n)
	for i := range shares {
		shares[i] = make([]byte, len(secret))
	}
	for j, s := range secret {
		if _, err := io.ReadFull(rng, coef); err != nil {
			return nil, err
		}
		for i := range n {
			x := byte(i + 1)
			// Horner: ((c_{t-1} x + c_{t-2}) x + ... + c_1) x + s
			var y byte
			for k := len(coef) - 1; k >= 0; k-- {
				y = mul(y^coef[k], x)
			}
			shares[i][j] = y ^ s
		}
	}
	return shares, nil
}

// Combine recovers the secret from shares, xs[k] being shares[k]'s x (1 to
// 255, distinct), into dst, which must be as long as every share. With t
// shares of a t-of-n split it recovers the secret; with fewer, or with a
// wrong share, it recovers bytes unrelated to it, without an error.
func Combine(dst []byte, xs []byte, shares [][]byte) error {
	if len(xs) == 0 || len(xs) != len(shares) {
		return errors.New("shamir: need as many x values as shares, at least one")
	}
	for k, sh := range shares {
		if len(sh) != len(dst) {
			return fmt.Errorf("shamir: share %d has %d bytes, want %d", k, len(sh), len(dst))
		}
		if xs[k] == 0 {
			return errors.New("shamir: x = 0 is the secret, not a share")
		}
		for m := range k {
			if xs[m] == xs[k] {
				return fmt.Errorf("shamir: two shares for x = %d", xs[k])
			}
		}
	}
	// Lagrange at 0: secret = sum_k y_k * prod_{m != k} x_m / (x_m - x_k);
	// subtraction is xor in GF(2^8).
	basis := make([]byte, len(xs))
	for k := range xs {
		num, den := byte(1), byte(1)
		for m := range xs {
			if m != k {
				num = mul(num, xs[m])
				den = mul(den, xs[m]^xs[k])
			}
		}
		basis[k] = mul(num, inv(den))
	}
	for j := range dst {
		var s byte
		for k := range shares {
			s ^= mul(shares[k][j], basis[k])
		}
		dst[j] = s
	}
	return nil
}
