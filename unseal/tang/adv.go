package tang

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
)

// Limits on what an advertisement may hold; Tang has one or two of each.
const (
	maxKeys       = 32
	maxSignatures = 16
)

// Adv is a Tang server's advertisement, verified: every signing (verify)
// key in it signed it, and every signature is by one of them. Verified is
// not trusted: the advertisement vouches only for itself until Trust
// matches one of its signers to a thumbprint the caller knows.
type Adv struct {
	// URL is the server's URL as given to Fetch or ParseAdv; Encrypt
	// stores it in the JWE and Recover contacts it.
	URL string

	jws      []byte            // the advertisement as received
	keys     []json.RawMessage // the advertised JWK set, as sent
	signers  []*point
	exchange []*point // ECMR deriveKey keys, in advertised order
}

// jwsSig is one signature of a JWS in JSON serialization.
type jwsSig struct {
	Protected string          `json:"protected"`
	Header    json.RawMessage `json:"header,omitempty"`
	Signature string          `json:"signature"`
}

// jwsJSON is the general (signatures) or flattened (one jwsSig inline)
// JSON serialization.
type jwsJSON struct {
	Payload    *string  `json:"payload"`
	Signatures []jwsSig `json:"signatures"`
	jwsSig
}

// ParseAdv parses and verifies an advertisement (a JWS in flattened or
// general JSON serialization) from the server at url. It checks that the
// payload is a JWK set of valid EC P-521 keys with at least one signing key
// and one ECMR exchange key, that every signing key signed the payload
// (ES512), and that no signature is by anyone else.
func ParseAdv(url string, jws []byte) (*Adv, error) {
	if _, err := CheckURL(url); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAdv, err)
	}
	a, err := parseAdv(jws)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAdv, err)
	}
	a.URL = url
	a.jws = bytes.Clone(jws)
	return a, nil
}

// JWS returns the advertisement as it was received, for ParseAdv to check
// again elsewhere (sealbox-admin fetches it, sealboxd binds).
func (a *Adv) JWS() []byte { return bytes.Clone(a.jws) }

func parseAdv(jws []byte) (*Adv, error) {
	var j jwsJSON
	if err := json.Unmarshal(jws, &j); err != nil {
		return nil, fmt.Errorf("not a JSON JWS")
	}
	if j.Payload == nil {
		return nil, fmt.Errorf("no payload")
	}
	sigs := j.Signatures
	flat := j.Signature != "" || j.Protected != "" || j.Header != nil
	switch {
	case flat && sigs != nil:
		return nil, fmt.Errorf("JWS mixes flattened and general serialization")
	case flat:
		sigs = []jwsSig{j.jwsSig}
	case len(sigs) == 0:
		return nil, fmt.Errorf("no signatures")
	}
	if len(sigs) > maxSignatures {
		return nil, fmt.Errorf("more than %d signatures", maxSignatures)
	}

	payload, err := b64.DecodeString(*j.Payload)
	if err != nil {
		return nil, fmt.Errorf("payload is not base64url")
	}
	a, err := parseKeySet(payload)
	if err != nil {
		return nil, err
	}

	// Every signature must verify under some signing key, and every
	// signing key must have signed.
	signed := make([]bool, len(a.signers))
	for i, s := range sigs {
		k, err := verifySig(s, *j.Payload, a.signers)
		if err != nil {
			return nil, fmt.Errorf("signature %d: %w", i, err)
		}
		signed[k] = true
	}
	if i := slices.Index(signed, false); i >= 0 {
		return nil, fmt.Errorf("signing key %s did not sign the advertisement", thumbprint(a.signers[i]))
	}
	return a, nil
}

// parseKeySet reads {"keys":[…]} and sorts the keys into signing and
// exchange keys.
func parseKeySet(payload []byte) (*Adv, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(payload, &set); err != nil {
		return nil, fmt.Errorf("payload is not a JWK set")
	}
	if len(set.Keys) > maxKeys {
		return nil, fmt.Errorf("more than %d keys", maxKeys)
	}
	a := &Adv{}
	for i, raw := range set.Keys {
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("key %d is not a JWK", i)
		}
		if k.D != "" {
			return nil, fmt.Errorf("key %d is a private key", i)
		}
		p, err := k.point()
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		sign, derive := k.has("verify"), k.has("deriveKey")
		switch {
		case sign && derive:
			return nil, fmt.Errorf("key %d is both a signing and an exchange key", i)
		case sign:
			if k.Alg != "" && k.Alg != "ES512" {
				return nil, fmt.Errorf("signing key %d is not ES512", i)
			}
			a.signers = append(a.signers, p)
		case derive && k.Alg == "ECMR":
			a.exchange = append(a.exchange, p)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, raw); err != nil {
			return nil, fmt.Errorf("key %d is not a JWK", i)
		}
		a.keys = append(a.keys, c.Bytes())
	}
	if len(a.signers) == 0 {
		return nil, fmt.Errorf("no signing key")
	}
	if len(a.exchange) == 0 {
		return nil, fmt.Errorf("no ECMR exchange key")
	}
	return a, nil
}

// verifySig checks one ES512 signature over protected "." payload and
// returns the index of the signer whose key verifies it.
func verifySig(s jwsSig, payload string, signers []*point) (int, error) {
	hdr, err := b64.DecodeString(s.Protected)
	if err != nil {
		return 0, fmt.Errorf("protected header is not base64url")
	}
	var h struct {
		Alg  string          `json:"alg"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil {
		return 0, fmt.Errorf("protected header is not JSON")
	}
	if h.Alg != "ES512" {
		return 0, fmt.Errorf("alg is not ES512")
	}
	if h.Crit != nil {
		return 0, fmt.Errorf("crit is not supported")
	}
	sig, err := b64.DecodeString(s.Signature)
	if err != nil || len(sig) != 2*coordLen {
		return 0, fmt.Errorf("signature is not 132 bytes of base64url")
	}
	digest := sha512.Sum512([]byte(s.Protected + "." + payload))
	r := new(big.Int).SetBytes(sig[:coordLen])
	ss := new(big.Int).SetBytes(sig[coordLen:])
	for i, p := range signers {
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P521(), p.uncompressed())
		if err != nil {
			continue // cannot happen: p was checked
		}
		if ecdsa.Verify(pub, digest[:], r, ss) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("does not verify under any signing key")
}

// Signers returns the S256 thumbprints (RFC 7638, base64url) of the
// advertisement's signing keys, sorted. One of these is what an
// administrator confirms out of band (tang-show-keys on the server).
func (a *Adv) Signers() []string {
	t := make([]string, len(a.signers))
	for i, p := range a.signers {
		t[i] = thumbprint(p)
	}
	slices.Sort(t)
	return t
}

// Trust returns nil if a signing key of the advertisement has thumbprint
// thp (S256, or the legacy S1), and an error wrapping ErrUntrusted
// otherwise. Since every signing key signed the advertisement, one trusted
// signer vouches for the exchange key Encrypt uses.
func (a *Adv) Trust(thp string) error {
	for _, p := range a.signers {
		if matches(p, thp) {
			return nil
		}
	}
	return fmt.Errorf("%w: %q is not among the signers %v", ErrUntrusted, thp, a.Signers())
}
