package tang

import (
	"crypto/ecdh"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
)

// coordLen is the length of a P-521 coordinate: ceil(521/8).
const coordLen = 66

var b64 = base64.RawURLEncoding

// jwk is the part of a JSON Web Key this package reads. Tang's keys are all
// EC P-521; anything else is refused where it is parsed.
type jwk struct {
	Kty    string   `json:"kty"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	D      string   `json:"d,omitempty"`
	Alg    string   `json:"alg,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
}

// point is a validated P-521 point: on the curve, not the identity.
type point struct {
	x, y [coordLen]byte
}

// uncompressed returns 0x04 || x || y.
func (p *point) uncompressed() []byte {
	b := make([]byte, 0, 1+2*coordLen)
	b = append(b, 4)
	b = append(b, p.x[:]...)
	return append(b, p.y[:]...)
}

// pointFrom checks an uncompressed encoding with crypto/ecdh, which refuses
// points off the curve, the identity and non-canonical coordinates. Every
// point this package hands to crypto/elliptic (which panics on bad points)
// has passed here.
func pointFrom(u []byte) (*point, error) {
	if _, err := ecdh.P521().NewPublicKey(u); err != nil {
		return nil, fmt.Errorf("not a P-521 point")
	}
	var p point
	copy(p.x[:], u[1:1+coordLen])
	copy(p.y[:], u[1+coordLen:])
	return &p, nil
}

// point returns the key's point, checked.
func (k *jwk) point() (*point, error) {
	if k.Kty != "EC" || k.Crv != "P-521" {
		return nil, fmt.Errorf("key is not EC P-521")
	}
	x, errx := b64.DecodeString(k.X)
	y, erry := b64.DecodeString(k.Y)
	if errx != nil || erry != nil || len(x) != coordLen || len(y) != coordLen {
		return nil, fmt.Errorf("key coordinates are not 66 bytes of base64url")
	}
	u := make([]byte, 0, 1+2*coordLen)
	u = append(append(append(u, 4), x...), y...)
	return pointFrom(u)
}

func (k *jwk) has(op string) bool { return slices.Contains(k.KeyOps, op) }

// publicJWK returns the EC JWK of p with the given alg (may be empty).
func publicJWK(p *point, alg string) jwk {
	return jwk{Kty: "EC", Crv: "P-521", X: b64.EncodeToString(p.x[:]), Y: b64.EncodeToString(p.y[:]), Alg: alg}
}

// thumbprintInput is RFC 7638's canonical form for an EC key: the required
// members only, in lexicographic order, no white space.
func thumbprintInput(p *point) []byte {
	b, _ := json.Marshal(struct {
		Crv string `json:"crv"`
		Kty string `json:"kty"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}{"P-521", "EC", b64.EncodeToString(p.x[:]), b64.EncodeToString(p.y[:])})
	return b
}

// thumbprint is the RFC 7638 SHA-256 thumbprint, base64url (Tang's "S256").
func thumbprint(p *point) string {
	h := sha256.Sum256(thumbprintInput(p))
	return b64.EncodeToString(h[:])
}

// thumbprintS1 is the legacy SHA-1 thumbprint that old Tang servers used.
func thumbprintS1(p *point) string {
	h := sha1.Sum(thumbprintInput(p))
	return b64.EncodeToString(h[:])
}

// matches reports whether thp is p's S256 or S1 thumbprint.
func matches(p *point, thp string) bool {
	return thp != "" && (thp == thumbprint(p) || thp == thumbprintS1(p))
}

// isThumbprint reports whether s looks like a base64url thumbprint (S1 or
// S256), so that it is safe to put in a URL path.
func isThumbprint(s string) bool {
	if len(s) != 27 && len(s) != 43 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
