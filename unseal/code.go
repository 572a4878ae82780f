package unseal

import (
	"crypto/rand"
	"encoding/base32"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// CodeParams are the Argon2id parameters of code slots (recovery code,
// invites). A code carries 160 random bits, so guessing it is hopeless at
// any cost; the KDF only has to be cheap and uniform.
var CodeParams = keyring.Params{Time: 1, MemoryKiB: 8 << 10, Threads: 1}

// CodeBytes is a code's entropy in bytes (160 bits).
const CodeBytes = 20

var codeEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewCode returns a fresh code for people to type: 32 base32 characters in
// groups of four. The caller wipes it.
func NewCode() ([]byte, error) {
	raw := make([]byte, CodeBytes)
	defer memlock.Wipe(raw)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	enc := make([]byte, codeEncoding.EncodedLen(CodeBytes))
	codeEncoding.Encode(enc, raw)
	out := make([]byte, 0, len(enc)+len(enc)/4)
	for i := 0; i < len(enc); i += 4 {
		if i > 0 {
			out = append(out, '-')
		}
		out = append(out, enc[i:i+4]...)
	}
	memlock.Wipe(enc)
	return out, nil
}

// NormalizeCode turns what a person typed into the bytes the KDF sees:
// upper case, without dashes or spaces. It reports false if it cannot be a
// code, before any derivation.
func NormalizeCode(typed []byte) ([]byte, bool) {
	out := make([]byte, 0, len(typed))
	for _, c := range typed {
		switch {
		case c == '-' || c == ' ':
		case c >= 'a' && c <= 'z':
			out = append(out, c-'a'+'A')
		case (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'):
			out = append(out, c)
		default:
			memlock.Wipe(out)
			return nil, false
		}
	}
	if len(out) != codeEncoding.EncodedLen(CodeBytes) {
		memlock.Wipe(out)
		return nil, false
	}
	return out, true
}
