// Package memlock holds secrets in memory that is kept out of swap and core
// dumps.
//
// A Buffer is a dedicated anonymous mapping, separated from the Go heap by a
// guard page on each side, locked with mlock(2) and marked MADV_DONTDUMP. Use
// it for the DataKey and the master secret, never for bulk data: locked memory
// is a scarce, per-process resource (RLIMIT_MEMLOCK).
//
// It is not for hiding secrets from root or from the kernel, and it does not
// stop the Go runtime from copying bytes you pass through ordinary slices:
// write into Bytes() directly and zero any temporary you had to make.
//
// This package never calls mlockall: that would pin bbolt's whole mapping.
package memlock

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrLockFailed is wrapped by New when the pages cannot be locked and the
// caller did not allow unlocked memory.
var ErrLockFailed = errors.New("cannot lock memory")

// Buffer is a fixed-size secret buffer. The zero value is not usable; call New.
// Its methods are safe for concurrent use; Destroy must not race with readers
// that still use the slice returned by Bytes.
type Buffer struct {
	mu     sync.Mutex
	region []byte // whole mapping, guard pages included
	data   []byte // the usable part
	locked bool
}

// Options says what New may fall back to.
type Options struct {
	// AllowUnlocked lets New return a buffer that is not mlock'd when locking
	// fails; the buffer is still excluded from core dumps. Locked reports it.
	AllowUnlocked bool
}

// New maps a buffer of exactly size bytes. When mlock fails and
// opts.AllowUnlocked is false, it unmaps and returns an error that wraps
// ErrLockFailed and names the fix.
func New(size int, opts Options) (*Buffer, error) {
	if size <= 0 {
		return nil, fmt.Errorf("memlock: invalid size %d", size)
	}
	page := os.Getpagesize()
	inner := (size + page - 1) / page * page
	region, err := unix.Mmap(-1, 0, inner+2*page, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("memlock: mmap: %w", err)
	}
	body := region[page : page+inner]
	if err := unix.Mprotect(body, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		_ = unix.Munmap(region)
		return nil, fmt.Errorf("memlock: mprotect: %w", err)
	}
	if err := unix.Madvise(body, unix.MADV_DONTDUMP); err != nil {
		_ = unix.Munmap(region)
		return nil, fmt.Errorf("memlock: madvise(MADV_DONTDUMP): %w", err)
	}
	b := &Buffer{region: region, data: body[:size]}
	if err := unix.Mlock(body); err != nil {
		if !opts.AllowUnlocked {
			_ = unix.Munmap(region)
			return nil, fmt.Errorf("%w (%d bytes): %v; raise the limit (systemd: LimitMEMLOCK=, or grant CAP_IPC_LOCK) or set allow_unlocked_memory = true in the config", ErrLockFailed, inner, err)
		}
	} else {
		b.locked = true
	}
	return b, nil
}

// Bytes returns the buffer's memory. It is nil after Destroy.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.data
}

// Locked reports whether the pages are mlock'd.
func (b *Buffer) Locked() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.locked
}

// Destroy zeroes the buffer, unlocks and unmaps it. It is idempotent.
func (b *Buffer) Destroy() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.region == nil {
		return
	}
	Wipe(b.data)
	page := os.Getpagesize()
	body := b.region[page : len(b.region)-page]
	Wipe(body)
	if b.locked {
		_ = unix.Munlock(body)
	}
	_ = unix.Munmap(b.region)
	b.region, b.data, b.locked = nil, nil, false
}

// Wipe zeroes p. Use it on every temporary copy of a secret.
func Wipe(p []byte) {
	clear(p)
}

// HardenProcess makes the process non-dumpable (no core files, no ptrace by
// other users, /proc/PID/mem unreadable to them) and sets RLIMIT_CORE to zero.
// Call it first thing in main.
func HardenProcess() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_CORE): %w", err)
	}
	return nil
}
