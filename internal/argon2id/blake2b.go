package argon2id

import (
	"encoding/binary"
	"math/bits"
)

// blake2b is an unkeyed BLAKE2b state (RFC 7693) for digests of 1 to 64
// bytes: just what Argon2 needs for H0 and H'.
//
// It exists so that the state, including the buffer that holds the last
// bytes written (password bytes, when hashing H0), lives where the caller
// puts it: in an Arena's mapping, which is wiped after every derivation. It
// holds no Go pointers, so it may live outside the Go heap. sum leaves it
// zeroed but for v, which hashPrime zeroes.
type blake2b struct {
	h    [8]uint64
	t    uint64 // bytes compressed so far; Argon2 inputs stay far below 2^64
	n    uint64 // bytes waiting in buf
	size uint64 // digest length
	buf  [128]byte
	m    [16]uint64 // buf as words, here rather than in a stack array
	v    [64]byte   // H' chaining value (V_i in RFC 9106 section 3.3)
}

var blake2bIV = [8]uint64{
	0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
	0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
}

// blake2bSigma is the message schedule; rounds 10 and 11 reuse rows 0 and 1.
var blake2bSigma = [10][16]uint8{
	{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
	{14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
	{11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
	{7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
	{9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
	{2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
	{12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
	{13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
	{6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
	{10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
}

// init starts a digest of size bytes (1..64), keeping nothing from before.
func (s *blake2b) init(size int) {
	s.h = blake2bIV
	s.h[0] ^= 0x01010000 ^ uint64(size) // fanout 1, depth 1, no key
	s.t, s.n, s.size = 0, 0, uint64(size)
	clear(s.buf[:])
}

// write absorbs p. The last block is kept in buf until sum, as BLAKE2b
// compresses it with the final flag.
func (s *blake2b) write(p []byte) {
	for len(p) > 0 {
		if s.n == uint64(len(s.buf)) {
			s.t += uint64(len(s.buf))
			s.compress(false)
			s.n = 0
		}
		c := copy(s.buf[s.n:], p)
		s.n += uint64(c)
		p = p[c:]
	}
}

// writeUint32 absorbs LE32(x).
func (s *blake2b) writeUint32(x uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], x)
	s.write(b[:])
}

// sum writes the digest to out, which must hold exactly size bytes, and
// leaves the state wiped but for s.v, which out may be.
func (s *blake2b) sum(out []byte) {
	clear(s.buf[s.n:])
	s.t += s.n
	s.compress(true)
	for i := range out {
		out[i] = byte(s.h[i/8] >> (8 * (i % 8)))
	}
	s.h, s.t, s.n, s.size = [8]uint64{}, 0, 0, 0
	clear(s.buf[:]) // compress cleared s.m; s.v is hashPrime's to clear
}

// compress runs BLAKE2b's F on buf. The message words go through s.m, so
// that what a stack frame holds is the mixed working state, not the input.
func (s *blake2b) compress(last bool) {
	m := &s.m
	for i := range m {
		m[i] = binary.LittleEndian.Uint64(s.buf[8*i:])
	}
	v0, v1, v2, v3, v4, v5, v6, v7 := s.h[0], s.h[1], s.h[2], s.h[3], s.h[4], s.h[5], s.h[6], s.h[7]
	v8, v9, v10, v11 := blake2bIV[0], blake2bIV[1], blake2bIV[2], blake2bIV[3]
	v12, v13, v14, v15 := blake2bIV[4]^s.t, blake2bIV[5], blake2bIV[6], blake2bIV[7]
	if last {
		v14 = ^v14
	}
	for r := range 12 {
		sg := &blake2bSigma[r%10]
		v0, v4, v8, v12 = b2g(v0, v4, v8, v12, m[sg[0]], m[sg[1]])
		v1, v5, v9, v13 = b2g(v1, v5, v9, v13, m[sg[2]], m[sg[3]])
		v2, v6, v10, v14 = b2g(v2, v6, v10, v14, m[sg[4]], m[sg[5]])
		v3, v7, v11, v15 = b2g(v3, v7, v11, v15, m[sg[6]], m[sg[7]])
		v0, v5, v10, v15 = b2g(v0, v5, v10, v15, m[sg[8]], m[sg[9]])
		v1, v6, v11, v12 = b2g(v1, v6, v11, v12, m[sg[10]], m[sg[11]])
		v2, v7, v8, v13 = b2g(v2, v7, v8, v13, m[sg[12]], m[sg[13]])
		v3, v4, v9, v14 = b2g(v3, v4, v9, v14, m[sg[14]], m[sg[15]])
	}
	s.h[0] ^= v0 ^ v8
	s.h[1] ^= v1 ^ v9
	s.h[2] ^= v2 ^ v10
	s.h[3] ^= v3 ^ v11
	s.h[4] ^= v4 ^ v12
	s.h[5] ^= v5 ^ v13
	s.h[6] ^= v6 ^ v14
	s.h[7] ^= v7 ^ v15
	clear(m[:])
}

func b2g(a, b, c, d, x, y uint64) (uint64, uint64, uint64, uint64) {
	a += b + x
	d = bits.RotateLeft64(d^a, -32)
	c += d
	b = bits.RotateLeft64(b^c, -24)
	a += b + y
	d = bits.RotateLeft64(d^a, -16)
	c += d
	b = bits.RotateLeft64(b^c, -63)
	return a, b, c, d
}

// hashPrime writes H'^T(LE32(T) || in...) to out, T = len(out) >= 1: the
// variable-length hash of RFC 9106 section 3.3. s is scratch state, left
// wiped.
func hashPrime(s *blake2b, out []byte, in ...[]byte) {
	T := len(out)
	if T <= 64 {
		s.init(T)
		s.writeUint32(uint32(T))
		for _, p := range in {
			s.write(p)
		}
		s.sum(out)
		return
	}
	r := (T+31)/32 - 2
	s.init(64)
	s.writeUint32(uint32(T))
	for _, p := range in {
		s.write(p)
	}
	s.sum(s.v[:]) // V_1
	copy(out, s.v[:32])
	for i := 1; i < r; i++ {
		s.init(64)
		s.write(s.v[:])
		s.sum(s.v[:]) // V_{i+1}
		copy(out[32*i:], s.v[:32])
	}
	s.init(T - 32*r)
	s.write(s.v[:])
	s.sum(out[32*r:]) // V_{r+1}
	clear(s.v[:])
}
