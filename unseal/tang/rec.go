package tang

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"

	"github.com/sealbox/sealbox/internal/memlock"
)

// Recover opens a tang JWE with its server's help and writes the plaintext
// into dst, whose length must be the plaintext's (Binding.Len); on any
// error dst holds no plaintext.
//
// The exchange (McCallum-Relyea): the JWE holds C = c·G and is keyed by
// x(c·S) where S = s·G is the server's exchange key. Recover draws e, sends
// X = C + E (E = e·G) to POST url/rec/kid, gets Y = s·X back, and unblinds
// Z = Y − e·S = c·S. The server sees only X, which is uniformly random and
// says nothing about C.
//
// ctx bounds the whole request: dial, sending, and reading the reply.
func Recover(ctx context.Context, c *http.Client, jwe []byte, dst []byte) error {
	b, err := Parse(jwe)
	if err != nil {
		return err
	}
	if len(dst) != b.Len() {
		return fmt.Errorf("%w: the plaintext is %d bytes, the buffer %d", ErrRefused, b.Len(), len(dst))
	}
	base, err := CheckURL(b.URL)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadJWE, err)
	}

	var e [coordLen]byte // the blinding scalar, big-endian
	defer clear(e[:])
	var x *point
	memlock.Do(func() { x, err = blind(b.c, &e) })
	if err != nil {
		return err
	}
	body, err := json.Marshal(publicJWK(x, "ECMR"))
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/rec/"+b.Kid, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadJWE, err)
	}
	req.Header.Set("Content-Type", "application/jwk+json")
	resp, reply, err := do(c, req)
	if err != nil {
		return fmt.Errorf("recovering from %s: %w", b.URL, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return fmt.Errorf("recovering from %s: %w (kid %s)", b.URL, ErrKeyGone, b.Kid)
	default:
		return fmt.Errorf("recovering from %s: %w: server answered %s", b.URL, ErrRefused, status(resp))
	}
	var yk jwk
	if err := json.Unmarshal(reply, &yk); err != nil {
		return fmt.Errorf("%w: the reply is not a JWK", ErrRefused)
	}
	y, err := yk.point()
	if err != nil {
		return fmt.Errorf("%w: the reply: %w", ErrRefused, err)
	}
	memlock.Do(func() { err = unblind(b, y, &e, dst) })
	return err
}

// bigs returns p's coordinates as big.Ints for crypto/elliptic.
func (p *point) bigs() (x, y *big.Int) {
	return new(big.Int).SetBytes(p.x[:]), new(big.Int).SetBytes(p.y[:])
}

// pointFromBigs checks an affine point that crypto/elliptic returned; the
// identity comes back as (0, 0) and is refused.
func pointFromBigs(x, y *big.Int) (*point, error) {
	if x.Sign() == 0 && y.Sign() == 0 {
		return nil, fmt.Errorf("point at infinity")
	}
	u := make([]byte, 1+2*coordLen)
	u[0] = 4
	x.FillBytes(u[1 : 1+coordLen])
	y.FillBytes(u[1+coordLen:])
	return pointFrom(u)
}

// wipe clears a big.Int's words.
func wipe(ns ...*big.Int) {
	for _, n := range ns {
		if n != nil {
			clear(n.Bits())
		}
	}
}

// blind draws e into *e and returns X = C + e·G.
func blind(c *point, e *[coordLen]byte) (*point, error) {
	k, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("drawing the blinding key: %w", err)
	}
	kb := k.Bytes()
	copy(e[:], kb)
	clear(kb)
	ep, err := pointFrom(k.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	cx, cy := c.bigs()
	ex, ey := ep.bigs()
	// Both points passed crypto/ecdh's checks, so Add cannot panic.
	//lint:ignore SA1019 P-521 point addition, which crypto/ecdh does not offer; constant-time nistec underneath.
	xx, xy := elliptic.P521().Add(cx, cy, ex, ey)
	x, err := pointFromBigs(xx, xy)
	if err != nil {
		return nil, fmt.Errorf("%w: the blinded point: %w", ErrRefused, err)
	}
	return x, nil
}

// unblind computes Z = Y − e·S, derives the CEK and opens the JWE into dst.
func unblind(b *Binding, y *point, e *[coordLen]byte, dst []byte) error {
	curve := elliptic.P521()
	sx, sy := b.s.bigs()
	//lint:ignore SA1019 P-521 scalar multiplication by the secret e, which crypto/ecdh does not offer for arbitrary points; constant-time nistec underneath.
	ex, ey := curve.ScalarMult(sx, sy, e[:])
	defer wipe(ex, ey)
	ey.Sub(curve.Params().P, ey) // −e·S
	yx, yy := y.bigs()
	// Y passed crypto/ecdh's checks and −e·S is on the curve, so Add
	// cannot panic.
	//lint:ignore SA1019 P-521 point addition, which crypto/ecdh does not offer; constant-time nistec underneath.
	zx, zy := curve.Add(yx, yy, ex, ey)
	defer wipe(zx, zy)
	if zx.Sign() == 0 && zy.Sign() == 0 {
		return fmt.Errorf("%w: the reply unblinds to the identity", ErrRefused)
	}
	var z [coordLen]byte
	defer clear(z[:])
	zx.FillBytes(z[:])

	var cek [keyLen]byte
	defer clear(cek[:])
	concatKDF(cek[:], z[:])
	gcm, err := newGCM(cek[:])
	if err != nil {
		return err
	}
	sealed := make([]byte, 0, len(b.ct)+tagLen)
	sealed = append(append(sealed, b.ct...), b.tag...)
	out, err := gcm.Open(dst[:0], b.iv, sealed, []byte(b.hdr))
	if err != nil {
		clear(dst)
		return fmt.Errorf("%w: the reply does not decrypt the JWE", ErrRefused)
	}
	if len(out) > 0 && &out[0] != &dst[0] {
		// Open did not work in place (it cannot happen with len(dst)
		// equal to the plaintext's): move it and clear the copy.
		copy(dst, out)
		clear(out)
	}
	return nil
}
