package argon2id

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	blockSize = 1024
	hugePage  = 2 << 20
)

// laneState is one lane's working memory besides its blocks.
type laneState struct {
	s     scratch  // the compression's temporaries
	addr  block    // data-independent addressing: the current address block
	input block    // ... and its input block Z
	hash  blake2b  // H' for the lane's first two blocks
	seed  [72]byte // H0 || LE32(column) || LE32(lane)
	c     cursor   // where the lane is in its current segment
	_     [64 - laneSmall%64]byte
}

// laneSmall is the size of laneState's fields after its blocks; the padding
// makes the whole a number of cache lines, so lanes do not share one.
const laneSmall = unsafe.Sizeof(blake2b{}) + 72 + unsafe.Sizeof(cursor{})

// header is the derivation's working memory outside the lanes.
type header struct {
	hash blake2b
	h0   [64]byte
	last block // the xor of every lane's last block
}

// Arena is the working memory of a derivation: the m KiB of blocks and a few
// KiB of state per lane, in one anonymous mapping outside the Go heap,
// excluded from core dumps. Derive zeroes what it used before it returns, so
// between derivations an arena holds nothing but zeros; it can be reused for
// any derivation that fits (see NewArena), one at a time.
//
// A fresh arena has no pages: the first derivation asks the kernel for each
// lane's pages as the lane starts (MADV_POPULATE_WRITE, in parallel), which
// costs less than faulting them in one by one. Prefault does it ahead of
// time, for the whole arena. The pages are not locked unless Lock is called.
type Arena struct {
	state     atomic.Uint32 // idle, busy or released
	mem       []byte        // the whole mapping
	blocks    []block
	lanes     []laneState
	hdr       *header
	memKiB    uint32
	nLanes    uint32
	dirty     bool // a derivation started and has not wiped yet
	populated bool // the pages are (or were asked to be) in memory
}

const (
	arenaIdle uint32 = iota
	arenaBusy
	arenaReleased
)

// ErrArenaBusy is returned when an arena is used by two derivations at once,
// or released while a derivation runs.
var ErrArenaBusy = errors.New("argon2id: arena in use by another derivation")

// ErrArenaReleased is returned when a released arena is used.
var ErrArenaReleased = errors.New("argon2id: arena released")

// ErrArenaTooSmall is wrapped when a derivation needs more memory or lanes
// than the arena has.
var ErrArenaTooSmall = errors.New("argon2id: arena too small")

// NewArena maps an arena for derivations with at most memKiB KiB of memory
// and at most lanes lanes. It accepts the (memKiB, lanes) pairs that Derive
// accepts. The mapping is memKiB KiB plus under 5 KiB per lane, rounded up to
// whole pages (whole 2 MiB pages once it is 2 MiB or more, so that
// UseHugePages can cover it); no page is touched until a derivation or
// Prefault needs it.
func NewArena(memKiB uint32, lanes uint8) (*Arena, error) {
	if lanes < 1 {
		return nil, fmt.Errorf("%w: p=0, the minimum is 1", ErrParams)
	}
	if memKiB < 8*uint32(lanes) {
		return nil, fmt.Errorf("%w: m=%d KiB is less than 8*p=%d KiB", ErrParams, memKiB, 8*uint32(lanes))
	}
	size := uint64(memKiB)*blockSize + uint64(lanes)*uint64(unsafe.Sizeof(laneState{})) + uint64(unsafe.Sizeof(header{}))
	round := uint64(os.Getpagesize())
	if size >= hugePage {
		// A whole number of huge pages: the kernel then aligns the mapping
		// to a huge page boundary and can back all of it with huge pages.
		round = hugePage
	}
	size = (size + round - 1) / round * round
	if size > math.MaxInt {
		return nil, fmt.Errorf("argon2id: %d KiB do not fit in this address space", memKiB)
	}
	mem, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("argon2id: mapping %d KiB: %w", size>>10, err)
	}
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("argon2id: madvise(MADV_DONTDUMP): %w", err)
	}
	// A forked child sees zeros, not a copy. Best effort: kernels before
	// 4.14 refuse it, and it does not change what the arena holds.
	_ = unix.Madvise(mem, unix.MADV_WIPEONFORK)
	a := &Arena{mem: mem, memKiB: memKiB, nLanes: uint32(lanes)}
	base := unsafe.Pointer(unsafe.SliceData(mem))
	a.blocks = unsafe.Slice((*block)(base), memKiB)
	off := uintptr(memKiB) * blockSize
	a.lanes = unsafe.Slice((*laneState)(unsafe.Add(base, off)), lanes)
	off += uintptr(lanes) * unsafe.Sizeof(laneState{})
	a.hdr = (*header)(unsafe.Add(base, off))
	return a, nil
}

// Size returns the size of the mapping in bytes (0 once released).
func (a *Arena) Size() int { return len(a.mem) }

// Prefault makes the kernel back every page of the arena now, so that the
// next derivation does not wait for it: MADV_POPULATE_WRITE where the kernel
// has it (Linux 5.14), else a write to each page.
func (a *Arena) Prefault() error {
	if err := a.acquire(); err != nil {
		return err
	}
	defer a.idle()
	if err := populate(a.mem); err != nil {
		return fmt.Errorf("argon2id: prefault: %w", err)
	}
	a.populated = true
	return nil
}

// PrefaultUntil is Prefault done a chunk at a time on one CPU, so that it
// leaves the others to whatever else runs (a daemon answering its first
// requests), and that stops early once stop is closed: a derivation that
// wants the arena then gets it at once, partly faulted in, and asks for the
// rest itself, in parallel, as a fresh arena's first derivation does.
func (a *Arena) PrefaultUntil(stop <-chan struct{}) error {
	if err := a.acquire(); err != nil {
		return err
	}
	defer a.idle()
	const chunk = 8 << 20
	for off := 0; off < len(a.mem); off += chunk {
		select {
		case <-stop:
			return nil
		default:
		}
		if err := populate(a.mem[off:min(off+chunk, len(a.mem))]); err != nil {
			return fmt.Errorf("argon2id: prefault: %w", err)
		}
	}
	a.populated = true
	return nil
}

// populate backs b (whole pages, all zero) with memory.
func populate(b []byte) error {
	err := unix.Madvise(b, unix.MADV_POPULATE_WRITE)
	if errors.Is(err, unix.EINVAL) { // before Linux 5.14
		page := os.Getpagesize()
		for i := 0; i < len(b); i += page {
			b[i] = 0
		}
		return nil
	}
	return err
}

// UseHugePages asks for transparent huge pages (MADV_HUGEPAGE) for the
// pages the arena gets from now on; call it before Prefault. With huge
// pages Argon2's random reads miss the TLB less: on the machine this was
// measured on (a 2-core VM, m = 647 MiB) a warm derivation took 16% less
// time. But getting huge pages can cost more than it saves: there, faulting
// in 647 MiB took 1.4 to 1.9 s as huge pages against 0.3 s as 4 KiB pages.
// So it suits an arena that is kept and prefaulted off the critical path,
// not a cold derivation. It fails where the kernel has no transparent huge
// pages.
func (a *Arena) UseHugePages() error {
	if err := a.acquire(); err != nil {
		return err
	}
	defer a.idle()
	if err := unix.Madvise(a.mem, unix.MADV_HUGEPAGE); err != nil {
		return fmt.Errorf("argon2id: madvise(MADV_HUGEPAGE): %w", err)
	}
	return nil
}

// Lock locks the arena's pages in memory (mlock), so that no block is ever
// written to swap; it also faults them all in. It needs RLIMIT_MEMLOCK (or
// CAP_IPC_LOCK) for the whole arena. Release unlocks.
func (a *Arena) Lock() error {
	if err := a.acquire(); err != nil {
		return err
	}
	defer a.idle()
	if err := unix.Mlock(a.mem); err != nil {
		return fmt.Errorf("argon2id: mlock %d KiB: %w (raise RLIMIT_MEMLOCK: LimitMEMLOCK= in the unit, or grant CAP_IPC_LOCK)", len(a.mem)>>10, err)
	}
	a.populated = true
	return nil
}

// Discard gives the arena's pages back to the kernel (MADV_DONTNEED) and
// keeps the mapping: the next derivation gets them again, as zeros. Use it
// to shrink an idle process. The kernel refuses it for a locked arena.
func (a *Arena) Discard() error {
	if err := a.acquire(); err != nil {
		return err
	}
	defer a.idle()
	if err := unix.Madvise(a.mem, unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("argon2id: madvise(MADV_DONTNEED): %w", err)
	}
	a.populated = false
	return nil
}

// Release zeroes the arena if a derivation left anything in it (none that
// returned does), and unmaps it. It is idempotent; it fails only while a
// derivation uses the arena.
func (a *Arena) Release() error {
	for {
		switch {
		case a.state.CompareAndSwap(arenaIdle, arenaBusy):
			if a.dirty {
				clear(a.mem)
			}
			err := unix.Munmap(a.mem)
			a.mem, a.blocks, a.lanes, a.hdr = nil, nil, nil, nil
			a.state.Store(arenaReleased)
			if err != nil {
				return fmt.Errorf("argon2id: munmap: %w", err)
			}
			return nil
		case a.state.Load() == arenaReleased:
			return nil
		case a.state.Load() == arenaBusy:
			return ErrArenaBusy
		}
	}
}

// acquire takes the arena for one operation.
func (a *Arena) acquire() error {
	if a.state.CompareAndSwap(arenaIdle, arenaBusy) {
		return nil
	}
	if a.state.Load() == arenaReleased {
		return ErrArenaReleased
	}
	return ErrArenaBusy
}

func (a *Arena) idle() { a.state.Store(arenaIdle) }

// blockBytes is b's memory as bytes.
func blockBytes(b *block) *[blockSize]byte { return (*[blockSize]byte)(unsafe.Pointer(b)) }

// blocksBytes is bs's memory as bytes.
func blocksBytes(bs []block) []byte {
	if len(bs) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&bs[0])), len(bs)*blockSize)
}
