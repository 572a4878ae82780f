// Package argon2id implements Argon2id (RFC 9106, version 0x13) with working
// memory the caller controls.
//
// Use Derive with an Arena: the arena is an anonymous mapping outside the Go
// heap, excluded from core dumps, that Derive zeroes before it returns, and
// that can be kept for the next derivation (warm: its pages stay) or
// released. A nil arena maps a temporary one for the call, as a daemon's
// first unseal would. Lanes run in parallel goroutines (with more lanes
// than CPUs, each goroutine interleaves several lanes, which hides memory
// latency); each lane asks the kernel for its pages at once when the arena
// has none yet, and pass 0 writes blocks without reading them first, so
// that no page is ever read before it is written (no zero-page mapping and
// copy-on-write fault).
//
// On amd64 the compression function is assembly (AVX-512VL, AVX2 or SSSE3,
// whichever the CPU has); elsewhere, and with the purego build tag, it is
// Go.
//
// # What stays behind
//
// The password goes, once, into a BLAKE2b state inside the arena; neither
// it nor any block, H0, H' chaining value or compression temporary is
// copied to the Go heap, and all of them are zeroed before Derive returns
// (the tests scan the whole process memory for the password afterwards).
// What remains is what the compiler puts in registers and stack frames: a
// few words of BLAKE2b and BlaMka working state, and their spills, in the
// stacks of the calling goroutine and of the lanes' goroutines (which the
// runtime frees, not wipes, when they exit); the assembly clears the vector
// registers it used before returning. A caller that must leave nothing runs
// Derive inside runtime/secret's secret.Do (GOEXPERIMENT=runtimesecret),
// which erases the stack and registers it used and also covers signal
// delivery, and sets Options.Do to secret.Do as well, because secret.Do
// does not reach the goroutines a function starts: Derive runs each of its
// goroutines through Options.Do. The pages of the arena are not locked
// unless Lock is called, so without it they could reach swap.
//
// This package is for deriving keys from passwords. It does not encode or
// verify PHC strings, and it does not choose parameters: that is policy,
// which belongs to its caller.
package argon2id

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Version is the Argon2 version implemented: 0x13 (decimal 19).
const Version = 0x13

// Limits of RFC 9106 section 3.1 that are not implied by the argument types.
const (
	MinSaltLen = 8
	MinTagLen  = 4
)

// ErrParams is wrapped by every error about parameters or input lengths
// outside what RFC 9106 allows.
var ErrParams = errors.New("argon2id: invalid parameters")

// Options holds the inputs beyond the usual ones. The zero value, or nil, is
// plain Argon2id.
type Options struct {
	// Secret is the optional secret value K (a key, or pepper).
	Secret []byte
	// AssociatedData is the optional associated data X.
	AssociatedData []byte
	// Do, if set, runs the body of each goroutine Derive starts (one per
	// lane, or one per CPU that interleaves several lanes when GOMAXPROCS
	// is less than p): Do(f) must call f once, on its own goroutine, and
	// return after it. Set it to runtime/secret's secret.Do so that what
	// those goroutines leave in registers and on their stacks is erased
	// too.
	Do func(f func())
}

// variant is Argon2's type y.
type variant uint32

const (
	argon2d  variant = 0
	argon2i  variant = 1
	argon2id variant = 2
)

// Derive computes the Argon2id tag of password and salt with t passes over
// memKiB KiB in p lanes, into all of dst (len(dst) is the tag length T).
// Arguments outside RFC 9106's limits (t >= 1, p >= 1, memKiB >= 8*p,
// len(salt) >= 8, len(dst) >= 4, no input longer than 2^32-1 bytes) give an
// error that wraps ErrParams; Derive never panics on them.
//
// a is the working memory: it must have been made for at least memKiB and p
// (see NewArena), and Derive has it to itself until it returns; it is all
// zeros again then. With a nil arena Derive maps one for the call and unmaps
// it before returning. On error dst is left unchanged (apart from a
// failure to unmap a temporary arena, after dst was written).
func Derive(dst, password, salt []byte, t, memKiB uint32, p uint8, a *Arena, opts *Options) error {
	return derive(argon2id, dst, password, salt, t, memKiB, p, a, opts)
}

func checkParams(y variant, dst, password, salt []byte, t, m uint32, p uint8, opts *Options) error {
	tooLong := func(b []byte) bool { return uint64(len(b)) > math.MaxUint32 }
	switch {
	case y > argon2id:
		return fmt.Errorf("%w: type %d", ErrParams, y)
	case t < 1:
		return fmt.Errorf("%w: t=0, the minimum is 1", ErrParams)
	case p < 1:
		return fmt.Errorf("%w: p=0, the minimum is 1", ErrParams)
	case m < 8*uint32(p):
		return fmt.Errorf("%w: m=%d KiB is less than 8*p=%d KiB", ErrParams, m, 8*uint32(p))
	case len(dst) < MinTagLen || tooLong(dst):
		return fmt.Errorf("%w: tag length %d, allowed %d to 2^32-1", ErrParams, len(dst), MinTagLen)
	case len(salt) < MinSaltLen || tooLong(salt):
		return fmt.Errorf("%w: salt length %d, allowed %d to 2^32-1", ErrParams, len(salt), MinSaltLen)
	case tooLong(password):
		return fmt.Errorf("%w: password longer than 2^32-1 bytes", ErrParams)
	case opts != nil && tooLong(opts.Secret):
		return fmt.Errorf("%w: secret longer than 2^32-1 bytes", ErrParams)
	case opts != nil && tooLong(opts.AssociatedData):
		return fmt.Errorf("%w: associated data longer than 2^32-1 bytes", ErrParams)
	}
	return nil
}

func derive(y variant, dst, password, salt []byte, t, m uint32, p uint8, a *Arena, opts *Options) (err error) {
	if err := checkParams(y, dst, password, salt, t, m, p, opts); err != nil {
		return err
	}
	if opts == nil {
		opts = &Options{}
	}
	temporary := a == nil
	if temporary {
		if a, err = NewArena(m, p); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, a.Release()) }()
	}
	if err := a.acquire(); err != nil {
		return err
	}
	defer a.idle()

	lanes := uint32(p)
	mPrime := m / (4 * lanes) * (4 * lanes) // m' of RFC 9106 section 3.2
	if mPrime > a.memKiB || lanes > a.nLanes {
		return fmt.Errorf("%w: it holds %d KiB in %d lanes, this derivation needs %d KiB in %d lanes",
			ErrArenaTooSmall, a.memKiB, a.nLanes, mPrime, lanes)
	}
	in := &instance{
		y: y, passes: t, lanes: lanes, mPrime: mPrime,
		q: mPrime / lanes, sl: mPrime / lanes / 4,
		mem: a.blocks[:mPrime], ls: a.lanes[:lanes], hdr: a.hdr,
		c:        compress,
		race:     newRaceShadow(mPrime),
		populate: !a.populated,
		discard:  temporary,
	}
	a.populated = true
	a.dirty = true

	h := &in.hdr.hash
	hashH0(h, &in.hdr.h0, y, p, uint32(len(dst)), m, t, password, salt, opts.Secret, opts.AssociatedData)

	// One goroutine per lane, or per CPU when there are fewer CPUs than
	// lanes: then each goroutine interleaves several lanes.
	workers := min(lanes, uint32(max(1, runtime.GOMAXPROCS(0))))
	in.bar.init(int(workers))
	var wg sync.WaitGroup
	for w := range workers {
		var mine []uint32
		for lane := w; lane < lanes; lane += workers {
			mine = append(mine, lane)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if opts.Do != nil {
				opts.Do(func() { in.worker(mine) })
			} else {
				in.worker(mine)
			}
		}()
	}
	wg.Wait()

	// The tag: H' of the xor of the last column.
	last := &in.hdr.last
	for lane := range lanes {
		b := in.lastBlock(lane)
		in.race.read(lane*in.q + in.q - 1)
		if lane == 0 {
			*last = *b
		} else {
			for i := range last {
				last[i] ^= b[i]
			}
		}
		in.race.write(lane*in.q + in.q - 1)
		*b = block{}
	}
	toLE(last)
	hashPrime(h, dst, blockBytes(last)[:])
	*in.hdr = header{}
	a.dirty = false
	return nil
}

// hashH0 computes H0 (RFC 9106 section 3.2) with h as scratch, left wiped.
func hashH0(h *blake2b, h0 *[64]byte, y variant, p uint8, tagLen, m, t uint32, password, salt, secret, ad []byte) {
	h.init(64)
	for _, v := range [...]uint32{uint32(p), tagLen, m, t, Version, uint32(y)} {
		h.writeUint32(v)
	}
	for _, s := range [...][]byte{password, salt, secret, ad} {
		h.writeUint32(uint32(len(s)))
		h.write(s)
	}
	h.sum(h0[:])
}

// instance is one derivation in progress.
type instance struct {
	y             variant
	passes, lanes uint32
	mPrime        uint32 // blocks
	q, sl         uint32 // lane length and segment length, in blocks
	mem           []block
	ls            []laneState
	hdr           *header
	c             compressor
	bar           barrier
	race          raceShadow
	populate      bool // ask for each lane's pages first
	discard       bool // give each lane's pages back at the end
}

func (in *instance) lastBlock(lane uint32) *block { return &in.mem[lane*in.q+in.q-1] }

// worker computes the lanes given to one goroutine: their first blocks,
// then slice after slice, waiting for the other goroutines after each, their
// segments interleaved block by block. Interleaving hides memory latency:
// while one lane computes a block, the reference block another lane needs
// next is on its way into the cache. Then it zeroes the lanes' blocks,
// except their last, which the tag still needs, and their state.
func (in *instance) worker(lanes []uint32) {
	for _, lane := range lanes {
		in.initLane(lane)
	}
	for pass := range in.passes {
		for slice := range uint32(syncPoints) {
			active := 0
			for _, lane := range lanes {
				if in.startSegment(&in.ls[lane], pass, lane, slice) {
					active++
				}
			}
			for active > 0 {
				for _, lane := range lanes {
					if ls := &in.ls[lane]; !ls.c.done && !in.step(ls) {
						ls.c.done = true
						active--
					}
				}
			}
			in.bar.wait()
		}
	}
	// No lane reads another lane's blocks after the last barrier.
	for _, lane := range lanes {
		start := lane * in.q
		for i := start; i < start+in.q-1; i++ {
			in.race.write(i)
		}
		clear(blocksBytes(in.mem[start : start+in.q-1]))
		if in.discard {
			// A temporary arena: give the pages back now, in parallel,
			// rather than in the single munmap. Lanes start on a page
			// boundary (q is a multiple of 4 blocks); the page of the last
			// block stays.
			_ = unix.Madvise(blocksBytes(in.mem[start:start+in.q-4]), unix.MADV_DONTNEED)
		}
		in.ls[lane] = laneState{}
	}
}

// initLane gets the lane's pages if the arena has none yet, and computes its
// first two blocks.
func (in *instance) initLane(lane uint32) {
	ls := &in.ls[lane]
	if in.populate {
		// Best effort: should it fail, the writes fault the pages in.
		_ = populate(blocksBytes(in.mem[lane*in.q : lane*in.q+in.q]))
	}
	copy(ls.seed[:64], in.hdr.h0[:])
	binary.LittleEndian.PutUint32(ls.seed[68:], lane)
	for j := range uint32(2) {
		binary.LittleEndian.PutUint32(ls.seed[64:], j)
		b := &in.mem[lane*in.q+j]
		in.race.write(lane*in.q + j)
		hashPrime(&ls.hash, blockBytes(b)[:], ls.seed[:])
		fromLE(b)
	}
}

// syncPoints is the number of slices per pass.
const syncPoints = 4

// cursor is a lane's position in the segment it is computing.
type cursor struct {
	pass, lane, slice uint32
	idx               uint32 // index in the segment of the block to compute
	cur, prev, ref    uint32 // that block, the previous one, its reference
	independent       bool   // data-independent addressing
	done              bool
}

// startSegment sets the lane's cursor at the start of a segment (RFC 9106
// section 3.4); it reports whether the segment has blocks to compute.
func (in *instance) startSegment(ls *laneState, pass, lane, slice uint32) bool {
	c := &ls.c
	*c = cursor{pass: pass, lane: lane, slice: slice}
	c.independent = in.y == argon2i || (in.y == argon2id && pass == 0 && slice < syncPoints/2)
	if pass == 0 && slice == 0 {
		c.idx = 2 // the first two blocks come from H'
		if c.idx == in.sl {
			c.done = true
			return false // m' = 8p: that is the whole segment
		}
	}
	if c.independent {
		ls.input = block{}
		ls.input[0] = uint64(pass)
		ls.input[1] = uint64(lane)
		ls.input[2] = uint64(slice)
		ls.input[3] = uint64(in.mPrime)
		ls.input[4] = uint64(in.passes)
		ls.input[5] = uint64(in.y)
		if c.idx != 0 {
			in.nextAddresses(ls) // the first, which idx%128 == 0 skipped
		}
	}
	c.cur = lane*in.q + slice*in.sl + c.idx
	c.prev = c.cur - 1
	if slice == 0 && c.idx == 0 {
		c.prev += in.q // the lane's last block, from the previous pass
	}
	c.ref = in.refIndex(in.pseudoRandom(ls, c.independent, c.prev, c.idx), pass, lane, slice, c.idx)
	return true
}

// step computes the block at the lane's cursor and moves on; it reports
// whether the segment has more blocks.
func (in *instance) step(ls *laneState) bool {
	c := &ls.c
	in.race.read(c.prev)
	in.race.read(c.ref)
	in.race.write(c.cur)
	in.c.head(&in.mem[c.cur], &in.mem[c.prev], &in.mem[c.ref], &ls.s, c.pass > 0)
	c.prev, c.cur, c.idx = c.cur, c.cur+1, c.idx+1
	if c.idx == in.sl || c.independent && c.idx%128 == 0 {
		// Nothing to fetch early: the segment ends, or the next reference
		// needs a new address block, which needs ls.s.
		in.c.tail(&in.mem[c.prev], &ls.s, &in.mem[c.prev])
		if c.idx == in.sl {
			return false
		}
		c.ref = in.refIndex(in.pseudoRandom(ls, c.independent, c.prev, c.idx), c.pass, c.lane, c.slice, c.idx)
		return true
	}
	// The head finished word 0 of the block, which is what the next
	// reference depends on (data-dependent addressing): find it, and have
	// the tail fetch it while it completes the block.
	c.ref = in.refIndex(in.pseudoRandom(ls, c.independent, c.prev, c.idx), c.pass, c.lane, c.slice, c.idx)
	in.c.tail(&in.mem[c.prev], &ls.s, &in.mem[c.ref])
	return true
}

// pseudoRandom returns the value that picks the reference block of the
// block at idx: from the address blocks (data-independent) or from word 0
// of the previous block (data-dependent).
func (in *instance) pseudoRandom(ls *laneState, independent bool, prev, idx uint32) uint64 {
	if !independent {
		return in.mem[prev][0]
	}
	if idx%128 == 0 {
		in.nextAddresses(ls)
	}
	return ls.addr[idx%128]
}

// zeroBlock is the all-zero block of the address generator.
var zeroBlock block

// nextAddresses computes the next block of 128 pseudo-random values for
// data-independent addressing: G(0, G(0, Z)) with Z's counter incremented.
func (in *instance) nextAddresses(ls *laneState) {
	ls.input[6]++
	in.c.full(&ls.addr, &zeroBlock, &ls.input, &ls.s, false)
	in.c.full(&ls.addr, &zeroBlock, &ls.addr, &ls.s, false)
}

// refIndex maps a pseudo-random value to the reference block's index in
// memory (RFC 9106 section 3.4.1.2): a lane, then a position in the blocks
// of that lane that may be referenced, biased towards the most recent.
func (in *instance) refIndex(rnd uint64, pass, lane, slice, idx uint32) uint32 {
	refLane := uint32(rnd>>32) % in.lanes
	if pass == 0 && slice == 0 {
		refLane = lane
	}
	// The reference area: the finished segments of the pass so far (pass
	// 0), or the three segments other than the current one (later passes),
	// plus, in the own lane, the blocks of the current segment before the
	// previous block; without a lane's newest block while it is computed.
	var size, start uint32
	if pass == 0 {
		size = slice * in.sl
	} else {
		size = (syncPoints - 1) * in.sl
		start = (slice + 1) % syncPoints * in.sl
	}
	if refLane == lane {
		size += idx - 1
	} else if idx == 0 {
		size--
	}
	x := rnd & math.MaxUint32
	x = x * x >> 32
	rel := size - 1 - uint32(uint64(size)*x>>32)
	pos := start + rel
	if pos >= in.q {
		pos -= in.q
	}
	return refLane*in.q + pos
}

// barrier lets n goroutines wait for each other, any number of times.
type barrier struct {
	mu      sync.Mutex
	cond    sync.Cond
	n, seen int
	round   uint64
}

func (b *barrier) init(n int) {
	b.n = n
	b.cond.L = &b.mu
}

func (b *barrier) wait() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seen++
	if b.seen == b.n {
		b.seen = 0
		b.round++
		b.cond.Broadcast()
		return
	}
	for r := b.round; r == b.round; {
		b.cond.Wait()
	}
}

// fromLE turns a block read as bytes into words; toLE does the reverse. On
// little-endian machines both leave memory as it is.
func fromLE(b *block) {
	bb := blockBytes(b)
	for i := range b {
		b[i] = binary.LittleEndian.Uint64(bb[8*i:])
	}
}

func toLE(b *block) {
	bb := blockBytes(b)
	for i, v := range b {
		binary.LittleEndian.PutUint64(bb[8*i:], v)
	}
}
