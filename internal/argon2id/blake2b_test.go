package argon2id

import (
	"bytes"
	"crypto/rand"
	"testing"

	xblake2b "golang.org/x/crypto/blake2b"
)

// TestBlake2bMatchesXCrypto compares the small BLAKE2b with x/crypto's for
// every digest size and inputs around the block boundaries, written whole
// and in pieces.
func TestBlake2bMatchesXCrypto(t *testing.T) {
	in := make([]byte, 400)
	rand.Read(in)
	var s blake2b
	for size := 1; size <= 64; size++ {
		for _, n := range []int{0, 1, 63, 64, 127, 128, 129, 255, 256, 257, 400} {
			x, err := xblake2b.New(size, nil)
			if err != nil {
				t.Fatal(err)
			}
			x.Write(in[:n])
			want := x.Sum(nil)
			for _, piece := range []int{n + 1, 1, 7, 128} {
				s.init(size)
				for p := in[:n]; len(p) > 0; {
					k := min(piece, len(p))
					s.write(p[:k])
					p = p[k:]
				}
				got := make([]byte, size)
				s.sum(got)
				if !bytes.Equal(got, want) {
					t.Fatalf("size %d, %d bytes in pieces of %d: %x, want %x", size, n, piece, got, want)
				}
				if s != (blake2b{}) {
					t.Fatal("sum left state behind")
				}
			}
		}
	}
}

// TestHashPrime checks H' against its definition (RFC 9106 section 3.3),
// built from x/crypto's BLAKE2b.
func TestHashPrime(t *testing.T) {
	in := make([]byte, 100)
	rand.Read(in)
	ref := func(T int) []byte {
		le32 := []byte{byte(T), byte(T >> 8), byte(T >> 16), byte(T >> 24)}
		if T <= 64 {
			h, _ := xblake2b.New(T, nil)
			h.Write(le32)
			h.Write(in)
			return h.Sum(nil)
		}
		r := (T+31)/32 - 2
		h, _ := xblake2b.New512(nil)
		h.Write(le32)
		h.Write(in)
		v := h.Sum(nil)
		out := append([]byte{}, v[:32]...)
		for range r - 1 {
			s := xblake2b.Sum512(v)
			v = s[:]
			out = append(out, v[:32]...)
		}
		h, _ = xblake2b.New(T-32*r, nil)
		h.Write(v)
		return h.Sum(out)
	}
	var s blake2b
	for _, T := range []int{1, 4, 32, 63, 64, 65, 95, 96, 97, 128, 1000, 1024} {
		got := make([]byte, T)
		hashPrime(&s, got, in[:40], in[40:])
		if want := ref(T); !bytes.Equal(got, want) {
			t.Fatalf("T=%d: %x, want %x", T, got, want)
		}
		if s != (blake2b{}) {
			t.Fatalf("T=%d: state left behind", T)
		}
	}
}
