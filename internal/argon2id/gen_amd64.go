//go:build ignore

// gen_amd64.go writes blamka_amd64.s: Argon2's compression G for amd64,
// in AVX2, in AVX-512VL (the same code on 256-bit registers, with VPRORQ
// for the rotations) and in SSSE3 (128-bit registers).
//
// Layout. A block is 8 rows of 16 words (128 bytes each). The row phase
// applies P to each row; the column phase applies P to each of the 8
// columns, column i being words 2i and 2i+1 of every row.
//
// For a 256-bit register holding 4 consecutive words of a row, P's first
// step (GB on words j, j+4, j+8, j+12) is vertical across the row's four
// registers; its second, diagonal step needs the rows' 2nd, 3rd and 4th
// registers rotated by 1, 2 and 3 words (VPERMQ). Two rows at a time: 8
// registers of state.
//
// In the column phase a register loaded from row r at byte 32k holds the
// word pairs of columns 2k and 2k+1 in row r, one per 128-bit half. P's
// first step is then vertical across rows (0,2,4,6) and (1,3,5,7); the
// diagonal step needs 128-bit-lane-local word swaps between rows 2/3 and
// 6/7 (VPALIGNR) and swaps the roles of rows 4 and 5. 128-bit registers use
// this scheme for both phases.
//
// Memory: s[0] holds the state W, s[1] holds R = x^y (^dst when xor). The
// row phase reads x and y (and dst), writes R and W; the column phase reads
// W and R and writes dst, so dst may alias x or y.
//
// Each encoding comes whole (compressX) and in two parts: compressHeadX
// stops after the first column iteration, which leaves word 0 of dst
// final; compressTailX does the other iterations, and first prefetches a
// block named by the caller (the next reference block, which depends on
// that word 0 in data-dependent addressing) and the block after dst (the
// next one to be written). The whole form and the head also prefetch the
// reference block (and dst, when read) at entry, so that its cache misses
// overlap rather than come one row at a time.
//
// Run: go run gen_amd64.go (go generate does it).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
)

type gen struct {
	b    bytes.Buffer
	wide bool // 256-bit registers
	vl   bool // AVX-512VL rotations
	sse  bool // non-VEX SSE encoding
}

func (g *gen) p(format string, args ...any) { fmt.Fprintf(&g.b, "\t"+format+"\n", args...) }
func (g *gen) label(l string)               { fmt.Fprintf(&g.b, "%s:\n", l) }

// reg names state register i (0..7) or a temporary (8, 9) or mask (14, 15).
func (g *gen) reg(i int) string {
	if g.wide {
		return fmt.Sprintf("Y%d", i)
	}
	return fmt.Sprintf("X%d", i)
}

// Three-operand helpers; the SSE forms copy first when dst != a.
func (g *gen) op3(vex, sse, src, a, dst string) {
	if !g.sse {
		g.p("%s %s, %s, %s", vex, src, a, dst)
		return
	}
	if a != dst {
		g.p("MOVO %s, %s", a, dst)
	}
	g.p("%s %s, %s", sse, src, dst)
}

func (g *gen) add(src, a, dst string) { g.op3("VPADDQ", "PADDQ", src, a, dst) }
func (g *gen) xor(src, a, dst string) { g.op3("VPXOR", "PXOR", src, a, dst) }
func (g *gen) mul(src, a, dst string) { g.op3("VPMULUDQ", "PMULULQ", src, a, dst) }

// blamka: a = a + b + 2*lo32(a)*lo32(b), t a temporary.
func (g *gen) blamka(a, b, t string) {
	g.mul(b, a, t)
	g.add(b, a, a)
	g.add(t, t, t)
	g.add(t, a, a)
}

// rotr rotates each word of x right by n bits; t a temporary.
func (g *gen) rotr(x string, n int, t string) {
	if g.vl {
		g.p("VPRORQ $%d, %s, %s", n, x, x)
		return
	}
	switch n {
	case 32:
		if g.sse {
			g.p("PSHUFD $0xb1, %s, %s", x, x)
		} else {
			g.p("VPSHUFD $0xb1, %s, %s", x, x)
		}
	case 24, 16:
		mask := g.reg(14)
		if n == 16 {
			mask = g.reg(15)
		}
		if g.sse {
			g.p("PSHUFB %s, %s", mask, x)
		} else {
			g.p("VPSHUFB %s, %s, %s", mask, x, x)
		}
	case 63:
		g.add(x, x, t)
		if g.sse {
			g.p("PSRLQ $63, %s", x)
		} else {
			g.p("VPSRLQ $63, %s, %s", x, x)
		}
		g.xor(t, x, x)
	}
}

// gb2 applies BlaMka's GB to two sets of four registers, interleaved.
func (g *gen) gb2(s0, s1 [4]string) {
	t0, t1 := g.reg(8), g.reg(9)
	half := func(r1, r2 int) {
		g.blamka(s0[0], s0[1], t0)
		g.blamka(s1[0], s1[1], t1)
		g.xor(s0[0], s0[3], s0[3])
		g.xor(s1[0], s1[3], s1[3])
		g.rotr(s0[3], r1, t0)
		g.rotr(s1[3], r1, t1)
		g.blamka(s0[2], s0[3], t0)
		g.blamka(s1[2], s1[3], t1)
		g.xor(s0[2], s0[1], s0[1])
		g.xor(s1[2], s1[1], s1[1])
		g.rotr(s0[1], r2, t0)
		g.rotr(s1[1], r2, t1)
	}
	half(32, 24)
	half(16, 63)
}

func (g *gen) mov(src, dst string) {
	if g.sse {
		g.p("MOVO %s, %s", src, dst)
	} else {
		g.p("VMOVDQA %s, %s", src, dst)
	}
}

// load and store move a register from or to memory (unaligned).
func (g *gen) load(mem, r string) {
	if g.sse {
		g.p("MOVOU %s, %s", mem, r)
	} else {
		g.p("VMOVDQU %s, %s", mem, r)
	}
}

func (g *gen) store(r, mem string) { g.load(r, mem) }

// xorMem: dst = r ^ mem.
func (g *gen) xorMem(mem, r, dst string) {
	if g.sse {
		if r != dst {
			g.mov(r, dst)
		}
		g.p("PXOR %s, %s", mem, dst)
		return
	}
	g.p("VPXOR %s, %s, %s", mem, r, dst)
}

// alignr: dst = (hi:lo) >> 64 within each 128-bit lane, i.e. [lo.w1, hi.w0].
func (g *gen) alignr(lo, hi, dst string) {
	if g.sse { // PALIGNR's destination is hi: go through X9 if it is lo
		d := dst
		if lo == dst {
			d = g.reg(9)
		}
		if hi != d {
			g.mov(hi, d)
		}
		g.p("PALIGNR $8, %s, %s", lo, d)
		if d != dst {
			g.mov(d, dst)
		}
		return
	}
	g.p("VPALIGNR $8, %s, %s, %s", lo, hi, dst)
}

// pairRound is P on registers whose 128-bit lanes hold word pairs:
// y[0..7] = pairs 0..7 of the 16 words P mixes.
func (g *gen) pairRound(y [8]string) {
	t := g.reg(8)
	g.gb2([4]string{y[0], y[2], y[4], y[6]}, [4]string{y[1], y[3], y[5], y[7]})
	// Diagonalise: (w5,w6) and (w7,w4) from pairs 2 and 3; (w15,w12) and
	// (w13,w14) from pairs 6 and 7; pairs 4 and 5 trade places.
	g.alignr(y[2], y[3], t)
	g.alignr(y[3], y[2], y[3])
	g.mov(t, y[2])
	g.alignr(y[7], y[6], t)
	g.alignr(y[6], y[7], y[7])
	g.mov(t, y[6])
	g.gb2([4]string{y[0], y[2], y[5], y[6]}, [4]string{y[1], y[3], y[4], y[7]})
	g.alignr(y[3], y[2], t)
	g.alignr(y[2], y[3], y[3])
	g.mov(t, y[2])
	g.alignr(y[6], y[7], t)
	g.alignr(y[7], y[6], y[7])
	g.mov(t, y[6])
}

// rowRound256 is P on two rows held as 4 registers of 4 words each.
func (g *gen) rowRound256(r0, r1 [4]string) {
	g.gb2(r0, r1)
	for _, r := range [][4]string{r0, r1} {
		g.p("VPERMQ $0x39, %s, %s", r[1], r[1])
		g.p("VPERMQ $0x4e, %s, %s", r[2], r[2])
		g.p("VPERMQ $0x93, %s, %s", r[3], r[3])
	}
	g.gb2(r0, r1)
	for _, r := range [][4]string{r0, r1} {
		g.p("VPERMQ $0x93, %s, %s", r[1], r[1])
		g.p("VPERMQ $0x4e, %s, %s", r[2], r[2])
		g.p("VPERMQ $0x39, %s, %s", r[3], r[3])
	}
}

func (g *gen) width() int {
	if g.wide {
		return 32
	}
	return 16
}

func (g *gen) state() (y [8]string) {
	for i := range y {
		y[i] = g.reg(i)
	}
	return y
}

func (g *gen) masks() {
	if !g.vl {
		g.load("·rotr24<>(SB)", g.reg(14))
		g.load("·rotr16<>(SB)", g.reg(15))
	}
}

// prefetch asks for the 16 cache lines of the block at (r).
func (g *gen) prefetch(r string) {
	for i := 0; i < blockSize; i += 64 {
		g.p("PREFETCHT0 %d(%s)", i, r)
	}
}

const blockSize = 1024

// compress emits G whole (head false) or its head: everything up to the
// first column iteration, which finishes words 0 to 3 (or 0 and 1) of each
// row of dst, word 0 being what data-dependent addressing needs next.
func (g *gen) compress(name string, head bool) {
	fmt.Fprintf(&g.b, "\n// func %s(dst, x, y *block, s *scratch, xor bool)\n", name)
	fmt.Fprintf(&g.b, "TEXT ·%s(SB), NOSPLIT, $0-33\n", name)
	g.p("MOVQ dst+0(FP), DI")
	g.p("MOVQ x+8(FP), SI")
	g.p("MOVQ y+16(FP), DX")
	g.p("MOVQ s+24(FP), BX")
	g.p("MOVBLZX xor+32(FP), R8")
	// y is the reference block, usually far away in memory (if the previous
	// tail did not fetch it): ask for all of its lines at once so that their
	// misses overlap; likewise dst's, when it is read.
	g.prefetch("DX")
	g.p("TESTL R8, R8")
	g.p("JZ prefetched")
	g.prefetch("DI")
	g.label("prefetched")
	g.masks()
	width := g.width()
	y := g.state()
	// Row phase: 256 bytes (two rows) per iteration with 256-bit
	// registers, 128 bytes (one row) with 128-bit ones.
	g.p("XORQ CX, CX")
	g.label("rows")
	for i := range 8 {
		g.load(fmt.Sprintf("%d(SI)(CX*1)", i*width), y[i])
		g.xorMem(fmt.Sprintf("%d(DX)(CX*1)", i*width), y[i], y[i])
	}
	g.p("TESTL R8, R8")
	g.p("JNZ rows_xor")
	for i := range 8 {
		g.store(y[i], fmt.Sprintf("%d(BX)(CX*1)", 1024+i*width))
	}
	g.p("JMP rows_permute")
	g.label("rows_xor")
	for i := range 8 {
		g.xorMem(fmt.Sprintf("%d(DI)(CX*1)", i*width), y[i], g.reg(8))
		g.store(g.reg(8), fmt.Sprintf("%d(BX)(CX*1)", 1024+i*width))
	}
	g.label("rows_permute")
	if g.wide {
		g.rowRound256([4]string{y[0], y[1], y[2], y[3]}, [4]string{y[4], y[5], y[6], y[7]})
	} else {
		g.pairRound(y)
	}
	for i := range 8 {
		g.store(y[i], fmt.Sprintf("%d(BX)(CX*1)", i*width))
	}
	g.p("ADDQ $%d, CX", 8*width)
	g.p("CMPQ CX, $1024")
	g.p("JB rows")
	g.p("XORQ CX, CX")
	if head {
		g.column()
		g.ret()
		return
	}
	g.columns()
}

// tail emits the rest of G after its head, prefetching the block at next
// and the one after dst.
func (g *gen) tail(name string) {
	fmt.Fprintf(&g.b, "\n// func %s(dst *block, s *scratch, next *block)\n", name)
	fmt.Fprintf(&g.b, "TEXT ·%s(SB), NOSPLIT, $0-24\n", name)
	g.p("MOVQ dst+0(FP), DI")
	g.p("MOVQ s+8(FP), BX")
	g.p("MOVQ next+16(FP), DX")
	g.prefetch("DX")
	// And the block after dst: the next one to be written (and read first,
	// after pass 0). Past the arena's last block there is mapped memory,
	// and a prefetch never faults anyway.
	for i := 0; i < blockSize; i += 64 {
		g.p("PREFETCHT0 %d(DI)", blockSize+i)
	}
	g.masks()
	g.p("MOVQ $%d, CX", g.width())
	g.columns()
}

// column emits one column iteration at CX: P on the words there of W, xor
// R, into dst.
func (g *gen) column() {
	y := g.state()
	for r := range 8 {
		g.load(fmt.Sprintf("%d(BX)(CX*1)", 128*r), y[r])
	}
	g.pairRound(y)
	for r := range 8 {
		g.xorMem(fmt.Sprintf("%d(BX)(CX*1)", 1024+128*r), y[r], y[r])
		g.store(y[r], fmt.Sprintf("%d(DI)(CX*1)", 128*r))
	}
}

// columns emits the column iterations from CX to the end, and returns.
func (g *gen) columns() {
	g.label("columns")
	g.column()
	g.p("ADDQ $%d, CX", g.width())
	g.p("CMPQ CX, $128")
	g.p("JB columns")
	g.ret()
}

// ret leaves no block data in vector registers, and returns.
func (g *gen) ret() {
	if g.sse {
		for i := range 16 {
			g.p("PXOR X%d, X%d", i, i)
		}
	} else {
		g.p("VZEROALL")
	}
	g.p("RET")
}

var outFile = flag.String("out", "blamka_amd64.s", "write to `file`")

func main() {
	flag.Parse()
	var out bytes.Buffer
	out.WriteString(`// Code generated by go run gen_amd64.go. DO NOT EDIT.

//go:build amd64 && !purego

#include "textflag.h"

// Byte shuffles that rotate each 64-bit word right by 24 and by 16 bits.
DATA ·rotr24<>+0x00(SB)/8, $0x0201000706050403
DATA ·rotr24<>+0x08(SB)/8, $0x0a09080f0e0d0c0b
DATA ·rotr24<>+0x10(SB)/8, $0x0201000706050403
DATA ·rotr24<>+0x18(SB)/8, $0x0a09080f0e0d0c0b
GLOBL ·rotr24<>(SB), NOPTR|RODATA, $32
DATA ·rotr16<>+0x00(SB)/8, $0x0100070605040302
DATA ·rotr16<>+0x08(SB)/8, $0x09080f0e0d0c0b0a
DATA ·rotr16<>+0x10(SB)/8, $0x0100070605040302
DATA ·rotr16<>+0x18(SB)/8, $0x09080f0e0d0c0b0a
GLOBL ·rotr16<>(SB), NOPTR|RODATA, $32
`)
	for _, v := range []struct {
		name, requires string
		g              gen
	}{
		{"AVX512VL", "AVX2, AVX512F, AVX512VL", gen{wide: true, vl: true}},
		{"AVX2", "AVX2", gen{wide: true}},
		{"SSSE3", "SSE2, SSSE3", gen{sse: true}},
	} {
		fmt.Fprintf(&out, "\n// %s: requires %s.\n", v.name, v.requires)
		v.g.compress("compress"+v.name, false)
		v.g.compress("compressHead"+v.name, true)
		v.g.tail("compressTail" + v.name)
		out.Write(v.g.b.Bytes())
	}
	if err := os.WriteFile(*outFile, out.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
