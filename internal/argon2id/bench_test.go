package argon2id

import (
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// The floor of RFC 9106's second recommended set, sealbox's minimum.
const benchT, benchM, benchP = 3, 64 << 10, 4

// benchPair times ours and x/crypto's Argon2id alternately, once each per
// iteration, and reports both and their ratio. ns/op is ours alone.
// prepare runs untimed before each x/crypto call.
func benchPair(b *testing.B, ours func() error, prepare func()) {
	pw, salt := []byte("benchmark password"), []byte("0123456789abcdef")
	var tOurs, tX time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		start := time.Now()
		if err := ours(); err != nil {
			b.Fatal(err)
		}
		tOurs += time.Since(start)
		if prepare != nil {
			prepare()
		}
		start = time.Now()
		argon2.IDKey(pw, salt, benchT, benchM, benchP, 32)
		tX += time.Since(start)
		n++
		b.StartTimer()
	}
	b.ReportMetric(float64(tOurs.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(float64(tX.Nanoseconds())/float64(n), "xcrypto-ns/op")
	b.ReportMetric(float64(tOurs)/float64(tX), "ours/xcrypto")
}

// BenchmarkFloorWarm: a kept, prefaulted arena against x/crypto in a loop
// (its heap already grown), as in a daemon's later unseals.
func BenchmarkFloorWarm(b *testing.B) {
	a, err := NewArena(benchM, benchP)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Release()
	if err := a.Prefault(); err != nil {
		b.Fatal(err)
	}
	pw, salt := []byte("benchmark password"), []byte("0123456789abcdef")
	dst := make([]byte, 32)
	argon2.IDKey(pw, salt, benchT, benchM, benchP, 32) // grow the heap
	benchPair(b, func() error { return Derive(dst, pw, salt, benchT, benchM, benchP, a, nil) }, nil)
}

// BenchmarkFloorCold: a fresh arena per derivation (nil: mapped, faulted,
// wiped and unmapped in the call) against x/crypto after the heap was given
// back to the kernel, as in a daemon's first unseal.
func BenchmarkFloorCold(b *testing.B) {
	pw, salt := []byte("benchmark password"), []byte("0123456789abcdef")
	dst := make([]byte, 32)
	benchPair(b, func() error { return Derive(dst, pw, salt, benchT, benchM, benchP, nil, nil) }, debug.FreeOSMemory)
}

// BenchmarkCompress times one compression (pass-0 and later-pass forms) with
// each implementation this CPU runs, the first being the one in use.
func BenchmarkCompress(b *testing.B) {
	var x, y, dst block
	var s scratch
	for i := range x {
		x[i], y[i] = uint64(i)*0x9e3779b97f4a7c15, uint64(i)*0xc2b2ae3d27d4eb4f
	}
	for _, c := range compressors() {
		for _, xor := range []bool{false, true} {
			name := c.name + "/write"
			if xor {
				name = c.name + "/xor"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(blockSize)
				for b.Loop() {
					c.full(&dst, &x, &y, &s, xor)
				}
			})
		}
	}
}
