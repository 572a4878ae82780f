package argon2id

import "math/bits"

// block is one 1 KiB Argon2 memory block, as 128 little-endian words.
type block [128]uint64

// scratch is the working memory of one compression: w holds the state being
// permuted, r holds R = X xor Y (xor the old block, in later passes). It
// lives in an Arena, next to the blocks, and is wiped with them.
type scratch [2]block

// compressFunc computes the compression G of RFC 9106 section 3.5:
// dst = P(R) xor R with R = x xor y, or, when xor is set (passes after the
// first), dst = P(R) xor R xor dst. It reads x, y and (when xor) dst in full
// before writing dst, so dst may be x or y. s must not overlap the others.
type compressFunc func(dst, x, y *block, s *scratch, xor bool)

// compressGeneric is G in plain Go.
func compressGeneric(dst, x, y *block, s *scratch, xor bool) {
	w, r := &s[0], &s[1]
	if xor {
		for i := range w {
			v := x[i] ^ y[i]
			w[i] = v
			r[i] = v ^ dst[i]
		}
	} else {
		for i := range w {
			v := x[i] ^ y[i]
			w[i] = v
			r[i] = v
		}
	}
	// P on each row of 16 words, then on each column of 8 word pairs.
	for i := 0; i < len(w); i += 16 {
		permute((*[16]uint64)(w[i : i+16]))
	}
	for i := 0; i < 16; i += 2 {
		permuteColumn(w, i)
	}
	for i := range dst {
		dst[i] = w[i] ^ r[i]
	}
}

// permuteColumn applies P to the words i, i+1, i+16, i+17, ..., i+112, i+113.
func permuteColumn(w *block, i int) {
	v0, v1, v2, v3 := w[i], w[i+1], w[i+16], w[i+17]
	v4, v5, v6, v7 := w[i+32], w[i+33], w[i+48], w[i+49]
	v8, v9, v10, v11 := w[i+64], w[i+65], w[i+80], w[i+81]
	v12, v13, v14, v15 := w[i+96], w[i+97], w[i+112], w[i+113]
	v0, v4, v8, v12 = gbHalf(v0, v4, v8, v12, 32, 24)
	v0, v4, v8, v12 = gbHalf(v0, v4, v8, v12, 16, 63)
	v1, v5, v9, v13 = gbHalf(v1, v5, v9, v13, 32, 24)
	v1, v5, v9, v13 = gbHalf(v1, v5, v9, v13, 16, 63)
	v2, v6, v10, v14 = gbHalf(v2, v6, v10, v14, 32, 24)
	v2, v6, v10, v14 = gbHalf(v2, v6, v10, v14, 16, 63)
	v3, v7, v11, v15 = gbHalf(v3, v7, v11, v15, 32, 24)
	v3, v7, v11, v15 = gbHalf(v3, v7, v11, v15, 16, 63)
	v0, v5, v10, v15 = gbHalf(v0, v5, v10, v15, 32, 24)
	v0, v5, v10, v15 = gbHalf(v0, v5, v10, v15, 16, 63)
	v1, v6, v11, v12 = gbHalf(v1, v6, v11, v12, 32, 24)
	v1, v6, v11, v12 = gbHalf(v1, v6, v11, v12, 16, 63)
	v2, v7, v8, v13 = gbHalf(v2, v7, v8, v13, 32, 24)
	v2, v7, v8, v13 = gbHalf(v2, v7, v8, v13, 16, 63)
	v3, v4, v9, v14 = gbHalf(v3, v4, v9, v14, 32, 24)
	v3, v4, v9, v14 = gbHalf(v3, v4, v9, v14, 16, 63)
	w[i], w[i+1], w[i+16], w[i+17] = v0, v1, v2, v3
	w[i+32], w[i+33], w[i+48], w[i+49] = v4, v5, v6, v7
	w[i+64], w[i+65], w[i+80], w[i+81] = v8, v9, v10, v11
	w[i+96], w[i+97], w[i+112], w[i+113] = v12, v13, v14, v15
}

// permute applies P to 16 consecutive words.
func permute(v *[16]uint64) {
	v0, v1, v2, v3 := v[0], v[1], v[2], v[3]
	v4, v5, v6, v7 := v[4], v[5], v[6], v[7]
	v8, v9, v10, v11 := v[8], v[9], v[10], v[11]
	v12, v13, v14, v15 := v[12], v[13], v[14], v[15]
	v0, v4, v8, v12 = gbHalf(v0, v4, v8, v12, 32, 24)
	v0, v4, v8, v12 = gbHalf(v0, v4, v8, v12, 16, 63)
	v1, v5, v9, v13 = gbHalf(v1, v5, v9, v13, 32, 24)
	v1, v5, v9, v13 = gbHalf(v1, v5, v9, v13, 16, 63)
	v2, v6, v10, v14 = gbHalf(v2, v6, v10, v14, 32, 24)
	v2, v6, v10, v14 = gbHalf(v2, v6, v10, v14, 16, 63)
	v3, v7, v11, v15 = gbHalf(v3, v7, v11, v15, 32, 24)
	v3, v7, v11, v15 = gbHalf(v3, v7, v11, v15, 16, 63)
	v0, v5, v10, v15 = gbHalf(v0, v5, v10, v15, 32, 24)
	v0, v5, v10, v15 = gbHalf(v0, v5, v10, v15, 16, 63)
	v1, v6, v11, v12 = gbHalf(v1, v6, v11, v12, 32, 24)
	v1, v6, v11, v12 = gbHalf(v1, v6, v11, v12, 16, 63)
	v2, v7, v8, v13 = gbHalf(v2, v7, v8, v13, 32, 24)
	v2, v7, v8, v13 = gbHalf(v2, v7, v8, v13, 16, 63)
	v3, v4, v9, v14 = gbHalf(v3, v4, v9, v14, 32, 24)
	v3, v4, v9, v14 = gbHalf(v3, v4, v9, v14, 16, 63)
	v[0], v[1], v[2], v[3] = v0, v1, v2, v3
	v[4], v[5], v[6], v[7] = v4, v5, v6, v7
	v[8], v[9], v[10], v[11] = v8, v9, v10, v11
	v[12], v[13], v[14], v[15] = v12, v13, v14, v15
}

// gbHalf is half of BlaMka's GB (RFC 9106 section 3.6), which is BLAKE2b's
// G with each addition a+b replaced by a + b + 2*lo32(a)*lo32(b) and no
// message words: GB is gbHalf with rotations 32 and 24, then with 16 and 63.
// Whole, GB is too big for the compiler to inline; halves are not.
func gbHalf(a, b, c, d uint64, r1, r2 int) (uint64, uint64, uint64, uint64) {
	a += b + 2*uint64(uint32(a))*uint64(uint32(b))
	d = bits.RotateLeft64(d^a, -r1)
	c += d + 2*uint64(uint32(c))*uint64(uint32(d))
	b = bits.RotateLeft64(b^c, -r2)
	return a, b, c, d
}

// compressor is one implementation of G, whole and split in two:
// head(dst, x, y, s, xor) then tail(dst, s, next) is full(dst, x, y, s,
// xor), and head leaves word 0 of dst final, so that the caller can find
// the next reference block and have tail fetch it into the cache while it
// finishes. tail may prefetch next and the block after dst, which must not
// change the result.
type compressor struct {
	name string
	full compressFunc
	head compressFunc
	tail func(dst *block, s *scratch, next *block)
}

// genericCompressor is G in plain Go; its head does everything.
var genericCompressor = compressor{"generic", compressGeneric, compressGeneric, func(*block, *scratch, *block) {}}

// compress is the best implementation for this CPU.
var compress = compressors()[0]
