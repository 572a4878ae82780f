package tang

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

var secret = []byte("the master secret, 32 bytes long")

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// bind fetches f's advertisement, trusts its signer and encrypts secret.
func bind(t *testing.T, f *fakeTang) []byte {
	t.Helper()
	adv, err := Fetch(ctxT(t), Client(time.Second), f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := adv.Trust(adv.Signers()[0]); err != nil {
		t.Fatal(err)
	}
	jwe, err := Encrypt(adv, secret)
	if err != nil {
		t.Fatal(err)
	}
	return jwe
}

// TestRoundTrip: Fetch → Trust → Encrypt → Parse → Recover gives the
// plaintext back, and the server saw one /rec.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	start := time.Now()
	jwe := bind(t, f)
	t.Logf("Fetch+Encrypt %v, JWE %d bytes", time.Since(start), len(jwe))

	b, err := Parse(jwe)
	if err != nil {
		t.Fatal(err)
	}
	if b.URL != f.srv.URL || b.Kid != thumbprint(mustPoint(t, f.exc.PublicKey().Bytes())) || b.Len() != len(secret) {
		t.Fatalf("binding %q %q %d", b.URL, b.Kid, b.Len())
	}
	dst := make([]byte, b.Len())
	start = time.Now()
	if err := Recover(ctxT(t), Client(time.Second), jwe, dst); err != nil {
		t.Fatal(err)
	}
	t.Logf("Recover %v", time.Since(start))
	if !bytes.Equal(dst, secret) {
		t.Fatal("wrong plaintext")
	}
	if f.recCount() != 1 {
		t.Fatalf("%d /rec requests", f.recCount())
	}

	// Encrypt alone, offline.
	adv, err := Fetch(ctxT(t), Client(time.Second), f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	const n = 20
	for range n {
		if _, err := Encrypt(adv, secret); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("Encrypt %v each", time.Since(start)/n)
}

// TestWrongLength: dst must be exactly the plaintext's length.
func TestWrongLength(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	jwe := bind(t, f)
	for _, n := range []int{0, len(secret) - 1, len(secret) + 1} {
		err := Recover(ctxT(t), Client(time.Second), jwe, make([]byte, n))
		if !errors.Is(err, ErrRefused) {
			t.Errorf("len %d: %v", n, err)
		}
	}
	if f.recCount() != 0 {
		t.Fatal("a wrong length still asked the server")
	}
}

// TestKeyGone: a server that no longer has the key (rotated and deleted)
// answers 404, which is ErrKeyGone, not ErrUnreachable.
func TestKeyGone(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	jwe := bind(t, f)
	f.rotate()
	err := Recover(ctxT(t), Client(time.Second), jwe, make([]byte, len(secret)))
	if !errors.Is(err, ErrKeyGone) || errors.Is(err, ErrUnreachable) || errors.Is(err, ErrRefused) {
		t.Fatalf("got %v", err)
	}
}

// TestBadReply: whatever the server answers, Recover returns an error of
// the right class, never panics, and leaves no plaintext in dst.
func TestBadReply(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		reply func(w http.ResponseWriter, y *point)
		want  error
	}{
		{"off-curve point", func(w http.ResponseWriter, y *point) {
			w.Header().Set("Content-Type", "application/jwk+json")
			json.NewEncoder(w).Encode(offCurve(y))
		}, ErrRefused},
		{"another valid point", func(w http.ResponseWriter, y *point) {
			writeJWK(w, publicJWK(randomPoint(t), "ECMR"))
		}, ErrRefused},
		{"P-256 key", func(w http.ResponseWriter, y *point) {
			j := publicJWK(y, "ECMR")
			j.Crv = "P-256"
			writeJWK(w, j)
		}, ErrRefused},
		{"short coordinates", func(w http.ResponseWriter, y *point) {
			j := publicJWK(y, "ECMR")
			j.X = b64.EncodeToString(y.x[1:])
			writeJWK(w, j)
		}, ErrRefused},
		{"identity", func(w http.ResponseWriter, y *point) {
			writeJWK(w, jwk{Kty: "EC", Crv: "P-521", X: b64.EncodeToString(make([]byte, 66)), Y: b64.EncodeToString(make([]byte, 66))})
		}, ErrRefused},
		{"not JSON", func(w http.ResponseWriter, y *point) { w.Write([]byte("<html>")) }, ErrRefused},
		{"too long", func(w http.ResponseWriter, y *point) { w.Write(make([]byte, maxBody+1)) }, ErrRefused},
		{"400", func(w http.ResponseWriter, y *point) { http.Error(w, "no", http.StatusBadRequest) }, ErrRefused},
		{"redirect is not followed", func(w http.ResponseWriter, y *point) {
			w.Header().Set("Location", "http://127.0.0.1:1/rec/x")
			w.WriteHeader(http.StatusTemporaryRedirect)
		}, ErrRefused},
		{"503", func(w http.ResponseWriter, y *point) { http.Error(w, "busy", http.StatusServiceUnavailable) }, ErrUnreachable},
		{"truncated", func(w http.ResponseWriter, y *point) {
			w.Header().Set("Content-Length", "400")
			w.Write([]byte(`{"kty":"EC",`))
		}, ErrUnreachable},
	}
	f := newFakeTang(t)
	jwe := bind(t, f)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.mu.Lock()
			f.reply = c.reply
			f.mu.Unlock()
			dst := make([]byte, len(secret))
			err := Recover(ctxT(t), Client(time.Second), jwe, dst)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			for _, other := range []error{ErrRefused, ErrUnreachable, ErrKeyGone} {
				if other != c.want && errors.Is(err, other) {
					t.Fatalf("%v is also %v", err, other)
				}
			}
			if !bytes.Equal(dst, make([]byte, len(secret))) {
				t.Fatal("dst holds data after a failure")
			}
		})
	}
}

// retag re-encodes a JWE's header after edit, keeping the rest.
func retag(t *testing.T, jwe []byte, edit func(h map[string]any)) []byte {
	t.Helper()
	parts := strings.Split(string(jwe), ".")
	hj, err := b64.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(hj, &h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	hj, err = json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	parts[0] = b64.EncodeToString(hj)
	return []byte(strings.Join(parts, "."))
}

// flip changes one byte of part i (decoded) and re-encodes it.
func flip(t *testing.T, jwe []byte, i int) []byte {
	t.Helper()
	parts := strings.Split(string(jwe), ".")
	b, err := b64.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	parts[i] = b64.EncodeToString(b)
	return []byte(strings.Join(parts, "."))
}

// TestTamper: a JWE changed anywhere the structure allows does not open
// (ErrRefused: the GCM check fails), and dst stays clear.
func TestTamper(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	jwe := bind(t, f)
	cases := map[string][]byte{
		"header field added": retag(t, jwe, func(h map[string]any) { h["x"] = 1 }),
		"epk replaced": retag(t, jwe, func(h map[string]any) {
			h["epk"] = publicJWK(randomPoint(t), "")
		}),
		"iv":         flip(t, jwe, 2),
		"ciphertext": flip(t, jwe, 3),
		"tag":        flip(t, jwe, 4),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			dst := make([]byte, len(secret))
			err := Recover(ctxT(t), Client(time.Second), bad, dst)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("got %v", err)
			}
			if !bytes.Equal(dst, make([]byte, len(secret))) {
				t.Fatal("dst holds data after a failure")
			}
		})
	}
}

// TestParseStrict: structural faults are ErrBadJWE, found before any
// request.
func TestParseStrict(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	jwe := bind(t, f)
	parts := strings.Split(string(jwe), ".")
	other := randomPoint(t)
	set := func(k string, v any) []byte {
		return retag(t, jwe, func(h map[string]any) { h[k] = v })
	}
	tang := func(edit func(m map[string]any)) []byte {
		return retag(t, jwe, func(h map[string]any) { edit(h["clevis"].(map[string]any)["tang"].(map[string]any)) })
	}
	cases := map[string][]byte{
		"empty":           nil,
		"four parts":      []byte(strings.Join(parts[:4], ".")),
		"encrypted key":   []byte(strings.Join([]string{parts[0], "AAAA", parts[2], parts[3], parts[4]}, ".")),
		"header not b64":  []byte("!!." + strings.Join(parts[1:], ".")),
		"alg dir":         set("alg", "dir"),
		"enc A128GCM":     set("enc", "A128GCM"),
		"zip":             set("zip", "DEF"),
		"crit":            set("crit", []string{"x"}),
		"pin sss":         set("clevis", map[string]any{"pin": "sss"}),
		"kid unknown":     set("kid", thumbprint(other)),
		"kid with slash":  set("kid", "../../adv/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		"epk off curve":   set("epk", offCurve(other)),
		"epk private":     set("epk", map[string]any{"kty": "EC", "crv": "P-521", "x": parts[0][:4], "y": "AA", "d": "AA"}),
		"url ftp":         tang(func(m map[string]any) { m["url"] = "ftp://127.0.0.1/" }),
		"url missing":     tang(func(m map[string]any) { delete(m, "url") }),
		"adv missing":     tang(func(m map[string]any) { delete(m, "adv") }),
		"adv key is sign": tang(func(m map[string]any) { m["adv"] = map[string]any{"keys": []any{publicJWK(other, "ES512")}} }),
		"iv 11 bytes":     []byte(strings.Join([]string{parts[0], "", b64.EncodeToString(make([]byte, 11)), parts[3], parts[4]}, ".")),
		"tag 15 bytes":    []byte(strings.Join([]string{parts[0], "", parts[2], parts[3], b64.EncodeToString(make([]byte, 15))}, ".")),
		"too long":        append(bytes.Repeat([]byte{'A'}, maxJWE), jwe...),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(bad); !errors.Is(err, ErrBadJWE) {
				t.Fatalf("Parse: %v", err)
			}
			if err := Recover(ctxT(t), Client(time.Second), bad, make([]byte, len(secret))); !errors.Is(err, ErrBadJWE) {
				t.Fatalf("Recover: %v", err)
			}
		})
	}
	if f.recCount() != 0 {
		t.Fatalf("%d requests for malformed JWEs", f.recCount())
	}
	// The "adv key is sign" case needs a kid matching that key to reach the check.
	bad := retag(t, jwe, func(h map[string]any) {
		h["kid"] = thumbprint(other)
		h["clevis"].(map[string]any)["tang"].(map[string]any)["adv"] = map[string]any{"keys": []any{publicJWK(other, "ES512")}}
	})
	if _, err := Parse(bad); !errors.Is(err, ErrBadJWE) || !strings.Contains(err.Error(), "not an ECMR") {
		t.Fatalf("kid of a signing key: %v", err)
	}
}

// TestAdv: Fetch refuses an advertisement whose signatures do not hold,
// and accepts the general serialization with two signers.
func TestAdv(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	spoil := func(fn func(jws []byte) []byte) error {
		f.mu.Lock()
		f.adv = fn
		f.mu.Unlock()
		_, err := Fetch(ctxT(t), Client(time.Second), f.srv.URL)
		return err
	}
	edit := func(fn func(m map[string]any)) func([]byte) []byte {
		return func(jws []byte) []byte {
			var m map[string]any
			if err := json.Unmarshal(jws, &m); err != nil {
				t.Fatal(err)
			}
			fn(m)
			b, _ := json.Marshal(m)
			return b
		}
	}
	flipB64 := func(s string) string {
		b, _ := b64.DecodeString(s)
		b[len(b)/2] ^= 1
		return b64.EncodeToString(b)
	}
	extra := newSigner(t)
	cases := map[string]func([]byte) []byte{
		"signature flipped": edit(func(m map[string]any) { m["signature"] = flipB64(m["signature"].(string)) }),
		"payload changed":   edit(func(m map[string]any) { m["payload"] = flipB64(m["payload"].(string)) }),
		"alg none": edit(func(m map[string]any) {
			m["protected"] = b64.EncodeToString([]byte(`{"alg":"none"}`))
		}),
		"signature dropped": edit(func(m map[string]any) { delete(m, "signature"); delete(m, "protected") }),
		"not JSON":          func([]byte) []byte { return []byte("{") },
		"signed by an outsider": func([]byte) []byte {
			f.mu.Lock()
			sig := f.sig
			f.sig = []*ecdsa.PrivateKey{extra}
			f.mu.Unlock()
			jws := f.signedAdv(nil)
			f.mu.Lock()
			f.sig = sig
			f.mu.Unlock()
			// Payload with f's key, signature from extra's adv.
			var good, bad map[string]any
			json.Unmarshal(f.signedAdv(nil), &good)
			json.Unmarshal(jws, &bad)
			good["signature"], good["protected"] = bad["signature"], bad["protected"]
			b, _ := json.Marshal(good)
			return b
		},
	}
	for name, fn := range cases {
		if err := spoil(fn); !errors.Is(err, ErrBadAdv) {
			t.Errorf("%s: got %v", name, err)
		}
	}

	// Two advertised signing keys, only one signed: refused.
	f.mu.Lock()
	f.sig = append(f.sig, extra)
	f.mu.Unlock()
	if err := spoil(func([]byte) []byte { return f.signedAdv(f.sig[:1]) }); !errors.Is(err, ErrBadAdv) {
		t.Errorf("one of two signers: got %v", err)
	}
	// Both signed (general serialization): accepted, both are signers.
	if err := spoil(nil); err != nil {
		t.Fatalf("two signers: %v", err)
	}
	adv, err := Fetch(ctxT(t), Client(time.Second), f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{thumbprint(ecdsaPoint(t, f.sig[0])), thumbprint(ecdsaPoint(t, f.sig[1]))}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	if got := adv.Signers(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Signers %v, want %v", got, want)
	}
}

// TestFetchContentType: an advertisement must come as application/jose+json.
func TestFetchContentType(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write(f.signedAdv(nil))
	}))
	defer srv.Close()
	if _, err := Fetch(ctxT(t), Client(time.Second), srv.URL); !errors.Is(err, ErrBadAdv) {
		t.Fatalf("got %v", err)
	}
}

// TestTrust: only a signer's thumbprint is trusted (S256 or S1); an
// exchange key's thumbprint or garbage is not.
func TestTrust(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	adv, err := Fetch(ctxT(t), Client(time.Second), f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	sp := ecdsaPoint(t, f.sig[0])
	for _, ok := range []string{thumbprint(sp), thumbprintS1(sp)} {
		if err := adv.Trust(ok); err != nil {
			t.Errorf("Trust(%s): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "x", thumbprint(randomPoint(t)), thumbprint(adv.exchange[0])} {
		if err := adv.Trust(bad); !errors.Is(err, ErrUntrusted) {
			t.Errorf("Trust(%q): %v", bad, err)
		}
	}
}

// TestClient: no environment proxy, no keep-alives.
func TestClient(t *testing.T) {
	t.Parallel()
	tr := Client(time.Second).Transport.(*http.Transport)
	if tr.Proxy != nil || !tr.DisableKeepAlives || tr.TLSClientConfig != nil {
		t.Fatal("Client: proxy set, keep-alives on or TLS changed")
	}
}

// TestErrorsCarryNoKeys: errors name URLs and thumbprints, never points.
func TestErrorsCarryNoKeys(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	jwe := bind(t, f)
	b, _ := Parse(jwe)
	f.mu.Lock()
	f.reply = func(w http.ResponseWriter, y *point) { json.NewEncoder(w).Encode(offCurve(y)) }
	f.mu.Unlock()
	err := Recover(ctxT(t), Client(time.Second), jwe, make([]byte, len(secret)))
	for _, s := range []string{b64.EncodeToString(b.c.x[:]), b64.EncodeToString(b.s.x[:]), b64.EncodeToString(b.ct)} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("error %q carries key material", err)
		}
	}
}

// Rebind makes a new JWE, offline, to the same server key and URL as a
// stored one; the server opens it, and the adv JWS survives a round trip
// through Adv.JWS.
func TestRebind(t *testing.T) {
	t.Parallel()
	f := newFakeTang(t)
	jwe := bind(t, f)
	n := f.recCount()
	other := []byte("another plaintext, rebound offline")
	jwe2, err := Rebind(jwe, other)
	if err != nil {
		t.Fatal(err)
	}
	if f.recCount() != n {
		t.Fatal("Rebind contacted the server")
	}
	b1, _ := Parse(jwe)
	b2, err := Parse(jwe2)
	if err != nil || b2.URL != b1.URL || b2.Kid != b1.Kid || bytes.Equal(b2.c.uncompressed(), b1.c.uncompressed()) {
		t.Fatalf("rebound binding: %v (same epk reused?)", err)
	}
	dst := make([]byte, len(other))
	if err := Recover(ctxT(t), Client(time.Second), jwe2, dst); err != nil || !bytes.Equal(dst, other) {
		t.Fatalf("recovering the rebound JWE: %v", err)
	}
	if _, err := Rebind([]byte("not.a.jwe"), other); !errors.Is(err, ErrBadJWE) {
		t.Fatalf("Rebind of garbage: %v", err)
	}
	adv, err := Fetch(ctxT(t), Client(time.Second), f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseAdv(adv.URL, adv.JWS())
	if err != nil || !slices.Equal(again.Signers(), adv.Signers()) {
		t.Fatalf("ParseAdv(JWS()): %v", err)
	}
}
