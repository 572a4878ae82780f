package argon2id

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestNoCopyOfThePassword derives with a random password that lives in a
// mapping of its own, wipes it, and then reads the whole writable memory of
// the process looking for any 8-byte word of it: a copy on the heap, on a
// stack, or left in the arena would show. The needle is kept xored with a
// key, so that the search does not plant what it looks for.
func TestNoCopyOfThePassword(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's shadow memory is huge")
	}
	page, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(page)
	pw := page[:64]
	if _, err := rand.Read(pw); err != nil {
		t.Fatal(err)
	}
	var key uint64 = 0x9e3779b97f4a7c15
	needles := map[uint64]bool{}
	for i := 0; i+8 <= len(pw); i += 8 {
		needles[binary.LittleEndian.Uint64(pw[i:])^key] = true
	}
	dst := make([]byte, 32)
	if err := Derive(dst, pw, []byte("saltsaltsalt"), 1, 1024, 4, nil, nil); err != nil {
		t.Fatal(err)
	}
	a, err := NewArena(1024, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if err := Derive(dst, pw, []byte("saltsaltsalt"), 1, 1024, 4, a, nil); err != nil {
		t.Fatal(err)
	}
	clear(pw)

	own := uintptr(unsafe.Pointer(&page[0]))
	found := scanMemory(t, func(addr uintptr, word uint64) bool {
		return needles[word^key] && (addr < own || addr >= own+4096)
	})
	for _, f := range found {
		t.Errorf("a word of the password at %s", f)
	}
}

// scanMemory reads every readable and writable mapping of the process
// through /proc/self/mem and returns where match held, with the mapping's
// name.
func scanMemory(t *testing.T, match func(addr uintptr, word uint64) bool) []string {
	t.Helper()
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skip(err)
	}
	defer maps.Close()
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Skip(err)
	}
	defer mem.Close()
	var found []string
	buf := make([]byte, 1<<20)
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || !strings.HasPrefix(f[1], "rw") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		name := ""
		if len(f) >= 6 {
			name = f[5]
		}
		for off := start; off < end; off += uint64(len(buf)) {
			n, _ := mem.ReadAt(buf[:min(uint64(len(buf)), end-off)], int64(off))
			for i := 0; i+8 <= n; i += 8 {
				if match(uintptr(off)+uintptr(i), binary.LittleEndian.Uint64(buf[i:])) {
					found = append(found, fmt.Sprintf("%#x (mapping %s %s)", off+uint64(i), f[0], name))
				}
			}
		}
	}
	clear(buf)
	return found
}
