package argon2id

import (
	"bytes"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/argon2"
)

func randomBlock(rng *mrand.Rand, b *block) {
	for i := range b {
		b[i] = rng.Uint64()
	}
}

// TestCompressImpls compares every compression this CPU runs with the
// pure-Go one, in both forms, with dst aliasing x or y, and checks that the
// scratch holds nothing it should not need (it is overwritten each call).
func TestCompressImpls(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	impls := compressors()
	names := []string{}
	for _, c := range impls {
		names = append(names, c.name)
	}
	t.Logf("implementations: %v", names)
	for _, impl := range impls[:len(impls)-1] {
		t.Run(impl.name, func(t *testing.T) {
			for i := range 200 {
				var x, y, old block
				randomBlock(rng, &x)
				randomBlock(rng, &y)
				randomBlock(rng, &old)
				if i == 0 {
					x, y = block{}, block{}
				}
				xor := i%2 == 1
				var s1, s2 scratch
				randomBlock(rng, &s2[0]) // scratch contents must not matter
				randomBlock(rng, &s2[1])
				want, got := old, old
				compressGeneric(&want, &x, &y, &s1, xor)
				impl.full(&got, &x, &y, &s2, xor)
				if got != want {
					t.Fatalf("case %d (xor %v): differs from the generic function at word %d", i, xor, firstDiff(&got, &want))
				}
				// In two parts, with word 0 final after the first.
				got = old
				randomBlock(rng, &s2[0])
				impl.head(&got, &x, &y, &s2, xor)
				if got[0] != want[0] {
					t.Fatalf("case %d (xor %v): word 0 is %#x after the head, want %#x", i, xor, got[0], want[0])
				}
				impl.tail(&got, &s2, &old)
				if got != want {
					t.Fatalf("case %d (xor %v): head+tail differs from the generic function at word %d", i, xor, firstDiff(&got, &want))
				}
				// dst == y, as in the address generator, and dst == x.
				got = y
				impl.full(&got, &x, &got, &s2, false)
				compressGeneric(&want, &x, &y, &s1, false)
				if got != want {
					t.Fatalf("case %d: dst aliasing y differs at word %d", i, firstDiff(&got, &want))
				}
				got = x
				impl.full(&got, &got, &y, &s2, false)
				if got != want {
					t.Fatalf("case %d: dst aliasing x differs at word %d", i, firstDiff(&got, &want))
				}
			}
		})
	}
}

func firstDiff(a, b *block) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestDeriveEachImpl runs whole derivations with each compression function.
func TestDeriveEachImpl(t *testing.T) {
	defer func(c compressor) { compress = c }(compress)
	for _, impl := range compressors() {
		compress = impl
		got := make([]byte, 48)
		for _, c := range []struct {
			t, m uint32
			p    uint8
		}{{3, 256, 4}, {1, 1000, 3}, {2, 64, 1}} {
			if err := Derive(got, []byte("password"), []byte("somesalt"), c.t, c.m, c.p, nil, nil); err != nil {
				t.Fatal(err)
			}
			if want := argon2.IDKey([]byte("password"), []byte("somesalt"), c.t, c.m, c.p, 48); !bytes.Equal(got, want) {
				t.Fatalf("%s %+v: %x, want %x", impl.name, c, got, want)
			}
		}
	}
}

// TestAssemblyGenerated checks that blamka_amd64.s is what gen_amd64.go
// writes today.
func TestAssemblyGenerated(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip(err)
	}
	out := filepath.Join(t.TempDir(), "blamka_amd64.s")
	if b, err := exec.Command(goCmd, "run", "gen_amd64.go", "-out", out).CombinedOutput(); err != nil {
		t.Fatalf("go run gen_amd64.go: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("blamka_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("blamka_amd64.s is stale: run go generate ./internal/argon2id")
	}
}
