package tang

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// fakeTang is a Tang server test double: one ES512 signing key, one ECMR
// exchange key, /adv and /rec/{kid}. Its reply to /rec can be spoiled to
// test the client against a hostile or broken server.
type fakeTang struct {
	t   testing.TB
	srv *httptest.Server

	mu    sync.Mutex
	sig   []*ecdsa.PrivateKey
	exc   *ecdh.PrivateKey
	reply func(w http.ResponseWriter, y *point) // nil: answer Y = s·X
	adv   func(jws []byte) []byte               // nil: serve the adv as signed
	recs  int
}

func newFakeTang(t testing.TB) *fakeTang {
	f := &fakeTang{t: t}
	f.sig = []*ecdsa.PrivateKey{newSigner(t)}
	f.rotate()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /adv", f.handleAdv)
	mux.HandleFunc("POST /rec/{kid}", f.handleRec)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTang) recCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recs
}

func newSigner(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rotate replaces the exchange key; bindings to the old one get 404.
func (f *fakeTang) rotate() {
	k, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.exc = k
	f.mu.Unlock()
}

func mustPoint(t testing.TB, u []byte) *point {
	t.Helper()
	p, err := pointFrom(u)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ecdsaPoint(t testing.TB, k *ecdsa.PrivateKey) *point {
	u, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return mustPoint(t, u)
}

// signedAdv returns the advertisement JWS: flattened with one signer,
// general with several; signWith chooses which of the advertised signing
// keys sign (nil: all).
func (f *fakeTang) signedAdv(signWith []*ecdsa.PrivateKey) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []any
	for _, k := range f.sig {
		j := publicJWK(ecdsaPoint(f.t, k), "ES512")
		j.KeyOps = []string{"verify"}
		keys = append(keys, j)
	}
	x := publicJWK(mustPoint(f.t, f.exc.PublicKey().Bytes()), "ECMR")
	x.KeyOps = []string{"deriveKey"}
	keys = append(keys, x)
	payload, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		f.t.Fatal(err)
	}
	if signWith == nil {
		signWith = f.sig
	}
	p64 := b64.EncodeToString(payload)
	var sigs []jwsSig
	for _, k := range signWith {
		prot := b64.EncodeToString([]byte(`{"alg":"ES512","cty":"jwk-set+json"}`))
		d := sha512.Sum512([]byte(prot + "." + p64))
		r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
		if err != nil {
			f.t.Fatal(err)
		}
		sig := make([]byte, 2*coordLen)
		r.FillBytes(sig[:coordLen])
		s.FillBytes(sig[coordLen:])
		sigs = append(sigs, jwsSig{Protected: prot, Signature: b64.EncodeToString(sig)})
	}
	var out any
	if len(sigs) == 1 {
		out = map[string]any{"payload": p64, "protected": sigs[0].Protected, "signature": sigs[0].Signature}
	} else {
		out = map[string]any{"payload": p64, "signatures": sigs}
	}
	b, err := json.Marshal(out)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *fakeTang) handleAdv(w http.ResponseWriter, _ *http.Request) {
	jws := f.signedAdv(nil)
	f.mu.Lock()
	spoil := f.adv
	f.mu.Unlock()
	if spoil != nil {
		jws = spoil(jws)
	}
	w.Header().Set("Content-Type", "application/jose+json")
	w.Write(jws)
}

func (f *fakeTang) handleRec(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	exc, reply := f.exc, f.reply
	f.recs++
	f.mu.Unlock()
	if r.PathValue("kid") != thumbprint(mustPoint(f.t, exc.PublicKey().Bytes())) {
		http.NotFound(w, r)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
	var k jwk
	if json.Unmarshal(body, &k) != nil || k.Alg != "ECMR" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	x, err := k.point()
	if err != nil {
		http.Error(w, "bad point", http.StatusBadRequest)
		return
	}
	xx, xy := x.bigs()
	//lint:ignore SA1019 the test server's s·X; the point was checked by crypto/ecdh.
	yx, yy := elliptic.P521().ScalarMult(xx, xy, exc.Bytes())
	y, err := pointFromBigs(yx, yy)
	if err != nil {
		f.t.Error(err)
		return
	}
	if reply != nil {
		reply(w, y)
		return
	}
	writeJWK(w, publicJWK(y, "ECMR"))
}

func writeJWK(w http.ResponseWriter, j jwk) {
	j.KeyOps = []string{"deriveKey"}
	w.Header().Set("Content-Type", "application/jwk+json")
	json.NewEncoder(w).Encode(j)
}

// randomPoint is a valid point nobody asked for.
func randomPoint(t testing.TB) *point {
	k, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return mustPoint(t, k.PublicKey().Bytes())
}

// offCurve returns p with y+1: not on the curve.
func offCurve(p *point) jwk {
	y := new(big.Int).SetBytes(p.y[:])
	y.Add(y, big.NewInt(1))
	var yb [coordLen]byte
	y.FillBytes(yb[:])
	return jwk{Kty: "EC", Crv: "P-521", Alg: "ECMR", X: b64.EncodeToString(p.x[:]), Y: b64.EncodeToString(yb[:])}
}
