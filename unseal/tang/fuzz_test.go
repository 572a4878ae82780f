package tang

import (
	"testing"
)

// FuzzParse: Parse never panics, and what it accepts has the lengths
// Recover relies on. The seeds (a real JWE and its advertisement) run in
// every go test.
func FuzzParse(f *testing.F) {
	ft := newFakeTang(f)
	adv, err := ParseAdv(ft.srv.URL, ft.signedAdv(nil))
	if err != nil {
		f.Fatal(err)
	}
	jwe, err := Encrypt(adv, []byte("seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(jwe)
	f.Add([]byte("...."))
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := Parse(in)
		if err != nil {
			return
		}
		if len(b.iv) != ivLen || len(b.tag) != tagLen || b.c == nil || b.s == nil || !isThumbprint(b.Kid) {
			t.Fatalf("accepted a malformed JWE: %+v", b)
		}
	})
}

// FuzzParseAdv: ParseAdv never panics, and what it accepts has signing
// and exchange keys.
func FuzzParseAdv(f *testing.F) {
	ft := newFakeTang(f)
	f.Add(ft.signedAdv(nil))
	ft.sig = append(ft.sig, newSigner(f))
	f.Add(ft.signedAdv(nil))
	f.Add([]byte(`{"payload":"","signatures":[]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := ParseAdv("http://127.0.0.1", in)
		if err != nil {
			return
		}
		if len(a.signers) == 0 || len(a.exchange) == 0 {
			t.Fatal("accepted an advertisement without keys")
		}
	})
}
