package tang

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sealbox/sealbox/internal/memlock"
)

// JWE constants: clevis's tang pin is ECDH-ES (direct key agreement) with
// A256GCM, compact serialization, 96-bit IV, 128-bit tag.
const (
	algECDHES = "ECDH-ES"
	encA256   = "A256GCM"
	ivLen     = 12
	tagLen    = 16
	keyLen    = 32
	// maxJWE bounds what Parse reads: a tang JWE with a two-key
	// advertisement is about 1.3 KB plus the plaintext.
	maxJWE = 1 << 20
)

// header is the JWE protected header clevis writes for the tang pin.
type header struct {
	Alg    string    `json:"alg"`
	Enc    string    `json:"enc"`
	Kid    string    `json:"kid"`
	Epk    jwk       `json:"epk"`
	Clevis clevisHdr `json:"clevis"`
}

type clevisHdr struct {
	Pin  string   `json:"pin"`
	Tang *tangHdr `json:"tang"`
}

type tangHdr struct {
	URL string `json:"url"`
	Adv *struct {
		Keys []json.RawMessage `json:"keys"`
	} `json:"adv"`
}

// Encrypt binds plaintext to the advertisement's server: a compact JWE
// that clevis decrypt (and Recover) opens with the server's help. It uses
// the advertisement's first ECMR key and crypto/rand, and does not touch
// the network. Call a.Trust first: Encrypt binds to whatever server the
// advertisement describes.
func Encrypt(a *Adv, plaintext []byte) ([]byte, error) {
	if a == nil || len(a.exchange) == 0 {
		return nil, fmt.Errorf("%w: no exchange key", ErrBadAdv)
	}
	s := a.exchange[0]
	h := header{
		Alg: algECDHES,
		Enc: encA256,
		Kid: thumbprint(s),
		Clevis: clevisHdr{Pin: "tang", Tang: &tangHdr{URL: a.URL, Adv: &struct {
			Keys []json.RawMessage `json:"keys"`
		}{a.keys}}},
	}

	var (
		out []byte
		err error
	)
	memlock.Do(func() { out, err = encrypt(&h, s, plaintext) })
	return out, err
}

// encrypt draws c, sets h.Epk = c·G, derives the CEK from x(c·S) and seals.
func encrypt(h *header, s *point, plaintext []byte) ([]byte, error) {
	spub, err := ecdh.P521().NewPublicKey(s.uncompressed())
	if err != nil {
		return nil, fmt.Errorf("%w: exchange key", ErrBadAdv)
	}
	c, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("drawing the ephemeral key: %w", err)
	}
	z, err := c.ECDH(spub)
	if err != nil {
		return nil, fmt.Errorf("%w: exchange key", ErrBadAdv)
	}
	defer clear(z)
	cp, err := pointFrom(c.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	h.Epk = publicJWK(cp, "")
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	hdr := b64.EncodeToString(hj)

	var cek [keyLen]byte
	defer clear(cek[:])
	concatKDF(cek[:], z)
	gcm, err := newGCM(cek[:])
	if err != nil {
		return nil, err
	}
	iv := make([]byte, ivLen)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	sealed := gcm.Seal(nil, iv, plaintext, []byte(hdr))
	ct, tag := sealed[:len(plaintext)], sealed[len(plaintext):]
	return []byte(strings.Join([]string{hdr, "", b64.EncodeToString(iv), b64.EncodeToString(ct), b64.EncodeToString(tag)}, ".")), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// concatKDF fills out (32 bytes) with RFC 7518 §4.6.2's Concat KDF for
// "enc": A256GCM, empty apu and apv: SHA-256(1 ‖ Z ‖ len‖"A256GCM" ‖
// len‖"" ‖ len‖"" ‖ 256). One round is enough for 256 bits.
func concatKDF(out, z []byte) {
	var u32 [4]byte
	h := sha256.New()
	binary.BigEndian.PutUint32(u32[:], 1)
	h.Write(u32[:])
	h.Write(z)
	binary.BigEndian.PutUint32(u32[:], uint32(len(encA256)))
	h.Write(u32[:])
	h.Write([]byte(encA256))
	binary.BigEndian.PutUint32(u32[:], 0)
	h.Write(u32[:]) // apu
	h.Write(u32[:]) // apv
	binary.BigEndian.PutUint32(u32[:], 8*keyLen)
	h.Write(u32[:])
	h.Sum(out[:0])
}

// Binding is what a stored tang JWE says, checked by Parse.
type Binding struct {
	// URL is the Tang server Recover will contact.
	URL string
	// Kid is the S256 (or legacy S1) thumbprint of the server's exchange
	// key that the JWE is bound to.
	Kid string

	hdr  string // the protected header as stored: the GCM AAD
	c, s *point // epk, and the exchange key whose thumbprint is Kid
	iv   []byte
	ct   []byte
	tag  []byte
}

// Len is the plaintext's length: the length Recover's dst must have.
func (b *Binding) Len() int { return len(b.ct) }

// Parse reads a compact tang JWE as clevis writes it and checks its
// structure: five parts with an empty encrypted key; alg ECDH-ES, enc
// A256GCM, no zip and no crit; a valid P-521 epk; clevis.pin "tang" with an
// http(s) URL; a kid that is a thumbprint of an ECMR key in the stored
// advertisement; a 96-bit IV and a 128-bit tag. It does not contact the
// server.
func Parse(jwe []byte) (*Binding, error) {
	b, err := parse(jwe)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadJWE, err)
	}
	return b, nil
}

func parse(jwe []byte) (*Binding, error) {
	if len(jwe) > maxJWE {
		return nil, fmt.Errorf("longer than %d bytes", maxJWE)
	}
	parts := strings.Split(string(bytes.TrimSpace(jwe)), ".")
	if len(parts) != 5 {
		return nil, fmt.Errorf("not a compact JWE (5 parts)")
	}
	if parts[1] != "" {
		return nil, fmt.Errorf("encrypted key is not empty (ECDH-ES is direct)")
	}
	hj, err := b64.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("header is not base64url")
	}
	var h struct {
		header
		Zip  json.RawMessage `json:"zip"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(hj, &h); err != nil {
		return nil, fmt.Errorf("header is not JSON")
	}
	switch {
	case h.Alg != algECDHES:
		return nil, fmt.Errorf("alg is not ECDH-ES")
	case h.Enc != encA256:
		return nil, fmt.Errorf("enc is not A256GCM")
	case h.Zip != nil:
		return nil, fmt.Errorf("zip is not supported")
	case h.Crit != nil:
		return nil, fmt.Errorf("crit is not supported")
	case h.Clevis.Pin != "tang" || h.Clevis.Tang == nil:
		return nil, fmt.Errorf("clevis pin is not tang")
	case h.Clevis.Tang.Adv == nil:
		return nil, fmt.Errorf("no clevis.tang.adv")
	case !isThumbprint(h.Kid):
		return nil, fmt.Errorf("kid is not a thumbprint")
	case h.Epk.D != "":
		return nil, fmt.Errorf("epk is a private key")
	}
	if _, err := CheckURL(h.Clevis.Tang.URL); err != nil {
		return nil, fmt.Errorf("clevis.tang.url: %w", err)
	}
	c, err := h.Epk.point()
	if err != nil {
		return nil, fmt.Errorf("epk: %w", err)
	}
	s, err := findKey(h.Clevis.Tang.Adv.Keys, h.Kid)
	if err != nil {
		return nil, err
	}
	iv, err1 := b64.DecodeString(parts[2])
	ct, err2 := b64.DecodeString(parts[3])
	tag, err3 := b64.DecodeString(parts[4])
	switch {
	case err1 != nil || err2 != nil || err3 != nil:
		return nil, fmt.Errorf("IV, ciphertext or tag is not base64url")
	case len(iv) != ivLen:
		return nil, fmt.Errorf("IV is not %d bytes", ivLen)
	case len(tag) != tagLen:
		return nil, fmt.Errorf("tag is not %d bytes", tagLen)
	}
	return &Binding{URL: h.Clevis.Tang.URL, Kid: h.Kid, hdr: parts[0], c: c, s: s, iv: iv, ct: ct, tag: tag}, nil
}

// findKey returns the ECMR deriveKey key in keys whose thumbprint is kid.
func findKey(keys []json.RawMessage, kid string) (*point, error) {
	if len(keys) > maxKeys {
		return nil, fmt.Errorf("more than %d keys in clevis.tang.adv", maxKeys)
	}
	for _, raw := range keys {
		var k jwk
		if json.Unmarshal(raw, &k) != nil || k.D != "" {
			continue
		}
		p, err := k.point()
		if err != nil || !matches(p, kid) {
			continue
		}
		if k.Alg != "ECMR" || !k.has("deriveKey") {
			return nil, fmt.Errorf("key kid is not an ECMR deriveKey key")
		}
		return p, nil
	}
	return nil, fmt.Errorf("no key in clevis.tang.adv has thumbprint kid")
}

// Rebind binds plaintext to the server key a stored JWE is bound to, with
// the advertisement and URL it holds: offline, and trusted exactly as far
// as that JWE was (the caller must have it from a verified place, such as
// a keyring record under its state root).
func Rebind(jwe, plaintext []byte) ([]byte, error) {
	b, err := Parse(jwe)
	if err != nil {
		return nil, err
	}
	hj, err := b64.DecodeString(b.hdr)
	if err != nil {
		return nil, fmt.Errorf("%w: header is not base64url", ErrBadJWE)
	}
	var old header
	if err := json.Unmarshal(hj, &old); err != nil || old.Clevis.Tang == nil || old.Clevis.Tang.Adv == nil {
		return nil, fmt.Errorf("%w: header", ErrBadJWE)
	}
	h := header{
		Alg:    algECDHES,
		Enc:    encA256,
		Kid:    thumbprint(b.s),
		Clevis: clevisHdr{Pin: "tang", Tang: &tangHdr{URL: b.URL, Adv: old.Clevis.Tang.Adv}},
	}
	var out []byte
	memlock.Do(func() { out, err = encrypt(&h, b.s, plaintext) })
	return out, err
}
