package tpm2

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
)

// TestPolicyPCRVector checks the PolicyPCR digest against the one swtpm
// computes (tpm2_createpolicy --policy-pcr -l sha256:7 with PCR 7 = 0³²).
func TestPolicyPCRVector(t *testing.T) {
	got := policyPCR(1<<7, make([]byte, 32))
	const want = "8b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b"
	if hex.EncodeToString(got[:]) != want {
		t.Fatalf("PolicyPCR(sha256:7 = 0) = %x, want %s", got, want)
	}
}

// pubArea is a TPM2B_PUBLIC of a policy-only sealed object, as tpm2_create
// writes it (attributes fixedtpm|fixedparent|noda).
func pubArea(digest [32]byte, attrs uint32) []byte {
	p := binary.BigEndian.AppendUint16(nil, 78)
	p = binary.BigEndian.AppendUint16(p, algKeyedHash)
	p = binary.BigEndian.AppendUint16(p, algSHA256)
	p = binary.BigEndian.AppendUint32(p, attrs)
	p = binary.BigEndian.AppendUint16(p, 32)
	p = append(p, digest[:]...)
	p = binary.BigEndian.AppendUint16(p, algNull)
	p = binary.BigEndian.AppendUint16(p, 32)
	return append(p, bytes.Repeat([]byte{0x71}, 32)...)
}

func testBinding() *Binding {
	d := policyPCR(1<<7|1, make([]byte, 64))
	priv := binary.BigEndian.AppendUint16(nil, 158)
	priv = append(priv, bytes.Repeat([]byte{0x5A}, 158)...)
	return &Binding{Bank: "sha256", PCRs: []int{0, 7}, PolicyDigest: d,
		Public: pubArea(d, 0x412), Private: priv}
}

func TestMarshalParse(t *testing.T) {
	b := testBinding()
	enc := b.Marshal()
	if len(enc) != headerLen+2+80+2+160 {
		t.Fatalf("%d bytes", len(enc))
	}
	if hex.EncodeToString(enc[:7]) != "01000b00000081" {
		t.Fatalf("header %x", enc[:7])
	}
	p, err := Parse(enc)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p) != fmt.Sprint(b) {
		t.Fatalf("Parse(Marshal(b)) = %+v, want %+v", p, b)
	}
	if !bytes.Equal(p.Marshal(), enc) {
		t.Fatal("Marshal(Parse(enc)) != enc")
	}
	enc[len(enc)-1] ^= 1 // Parse must not alias its input
	if p.Private[len(p.Private)-1] != 0x5A {
		t.Fatal("Parse aliases its input")
	}
}

// TestParseRefuses: each mutation of a valid binding is refused with
// ErrFormat.
func TestParseRefuses(t *testing.T) {
	good := testBinding().Marshal()
	pubAt := headerLen + 2
	privLenAt := pubAt + 80
	edit := func(f func(p []byte) []byte) []byte { return f(bytes.Clone(good)) }
	set16 := func(at int, v uint16) []byte {
		return edit(func(p []byte) []byte { binary.BigEndian.PutUint16(p[at:], v); return p })
	}
	set32 := func(at int, v uint32) []byte {
		return edit(func(p []byte) []byte { binary.BigEndian.PutUint32(p[at:], v); return p })
	}
	withPub := func(pub []byte) []byte {
		b := testBinding()
		b.Public = pub
		return b.Marshal()
	}
	// Marshal refuses to write a blob over 1024 bytes, so build one here.
	bigEnc := bytes.Clone(good[:privLenAt])
	bigEnc = binary.BigEndian.AppendUint16(bigEnc, 1025)
	bigEnc = binary.BigEndian.AppendUint16(bigEnc, 1023)
	bigEnc = append(bigEnc, make([]byte, 1023)...)
	cases := map[string][]byte{
		"empty":              nil,
		"header only":        good[:headerLen],
		"truncated priv":     good[:len(good)-1],
		"truncated pub":      good[:pubAt+40],
		"extended":           append(bytes.Clone(good), 0),
		"version 0":          edit(func(p []byte) []byte { p[0] = 0; return p }),
		"version 2":          edit(func(p []byte) []byte { p[0] = 2; return p }),
		"sha1 bank":          set16(1, 0x0004),
		"mask 0":             set32(3, 0),
		"mask bit 24":        set32(3, 1<<24|1<<7),
		"mask bit 31":        set32(3, 1<<31),
		"pub len beyond":     set16(headerLen, 0xFFFF),
		"pub len over 1024":  set16(headerLen, 1025),
		"pub len short":      set16(headerLen, 79),
		"priv len long":      set16(privLenAt, 161),
		"priv len short":     set16(privLenAt, 159),
		"priv TPM2B size":    set16(privLenAt+2, 157),
		"pub TPM2B size":     set16(pubAt, 77),
		"digest not policy":  edit(func(p []byte) []byte { p[7] ^= 1; return p }),
		"pub type rsa":       set16(pubAt+2, 0x0001),
		"pub nameAlg sha1":   set16(pubAt+4, 0x0004),
		"userWithAuth":       withPub(pubArea(testBinding().PolicyDigest, 0x452)),
		"not fixedTPM":       withPub(pubArea(testBinding().PolicyDigest, 0x410)),
		"pub scheme hmac":    set16(pubAt+2+44, 0x0005),
		"pub longer area":    withPub(append(binary.BigEndian.AppendUint16(nil, 79), append(pubArea(testBinding().PolicyDigest, 0x412)[2:], 0)...)),
		"priv over 1024":     bigEnc,
		"priv not TPM2B (2)": withPriv(2),
	}
	for name, in := range cases {
		if b, err := Parse(in); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: Parse = %v, %v; want ErrFormat", name, b, err)
		}
	}
	for n := range len(good) {
		if _, err := Parse(good[:n]); !errors.Is(err, ErrFormat) {
			t.Fatalf("prefix of %d bytes: %v, want ErrFormat", n, err)
		}
	}
}

func withPriv(n int) []byte {
	b := testBinding()
	b.Private = make([]byte, n)
	return b.Marshal()
}
