package argon2id

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/crypto/argon2"
	"golang.org/x/sys/unix"
)

var seedFlag = flag.Uint64("argon2id.seed", 0, "seed for the randomized comparison with x/crypto (0: a fresh one)")

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC9106Vectors checks the test vectors of RFC 9106 section 5: H0 and
// the tag, for each type, with a secret and associated data.
func TestRFC9106Vectors(t *testing.T) {
	password := bytes.Repeat([]byte{0x01}, 32)
	salt := bytes.Repeat([]byte{0x02}, 16)
	opts := &Options{Secret: bytes.Repeat([]byte{0x03}, 8), AssociatedData: bytes.Repeat([]byte{0x04}, 12)}
	for _, tc := range []struct {
		name    string
		y       variant
		h0, tag string
	}{
		{"Argon2d", argon2d,
			"b8 81 97 91 a0 35 96 60 bb 77 09 c8 5f a4 8f 04 d5 d8 2c 05 c5 f2 15 cc db 88 54 91 71 7c f7 57 08 2c 28 b9 51 be 38 14 10 b5 fc 2e b7 27 40 33 b9 fd c7 ae 67 2b ca ac 5d 17 90 97 a4 af 31 09",
			"51 2b 39 1b 6f 11 62 97 53 71 d3 09 19 73 42 94 f8 68 e3 be 39 84 f3 c1 a1 3a 4d b9 fa be 4a cb"},
		{"Argon2i", argon2i,
			"c4 60 65 81 52 76 a0 b3 e7 31 73 1c 90 2f 1f d8 0c f7 76 90 7f bb 7b 6a 5c a7 2e 7b 56 01 1f ee ca 44 6c 86 dd 75 b9 46 9a 5e 68 79 de c4 b7 2d 08 63 fb 93 9b 98 2e 5f 39 7c c7 d1 64 fd da a9",
			"c8 14 d9 d1 dc 7f 37 aa 13 f0 d7 7f 24 94 bd a1 c8 de 6b 01 6d d3 88 d2 99 52 a4 c4 67 2b 6c e8"},
		{"Argon2id", argon2id,
			"28 89 de 48 7e b4 2a e5 00 c0 00 7e d9 25 2f 10 69 ea de c4 0d 57 65 b4 85 de 6d c2 43 7a 67 b8 54 6a 2f 0a cc 1a 08 82 db 8f cf 74 71 4b 47 2e 94 df 42 1a 5d a1 11 2f fa 11 43 43 70 a1 e9 97",
			"0d 64 0d f5 8d 78 76 6c 08 c0 37 a3 4a 8b 53 c9 d0 1e f0 45 2d 75 b6 5e b5 25 20 e9 6b 01 e6 59"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h blake2b
			var h0 [64]byte
			hashH0(&h, &h0, tc.y, 4, 32, 32, 3, password, salt, opts.Secret, opts.AssociatedData)
			if want := unhex(t, tc.h0); !bytes.Equal(h0[:], want) {
				t.Errorf("H0 = %x, want %x", h0, want)
			}
			if h != (blake2b{}) {
				t.Error("hashH0 left its BLAKE2b state behind")
			}
			tag := make([]byte, 32)
			if err := derive(tc.y, tag, password, salt, 3, 32, 4, nil, opts); err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, tc.tag); !bytes.Equal(tag, want) {
				t.Errorf("tag = %x, want %x", tag, want)
			}
		})
	}
}

// TestMatchesXCrypto compares with golang.org/x/crypto/argon2 bit for bit
// over random parameters, for the types it exposes (id and i).
func TestMatchesXCrypto(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = mrand.Uint64()
	}
	t.Logf("seed %d (rerun with -argon2id.seed=%d)", seed, seed)
	rng := mrand.New(mrand.NewPCG(seed, 0))
	n := 60
	if testing.Short() {
		n = 15
	}
	for i := range n {
		y := argon2id
		if i%4 == 3 {
			y = argon2i
		}
		p := uint8(1 + rng.IntN(8))
		tc := uint32(1 + rng.IntN(4))
		m := uint32(8*int(p) + rng.IntN(4096-8*int(p)+1))
		if i%5 == 0 { // keep some cases small, where edge effects are
			m = uint32(8*int(p) + rng.IntN(4*int(p)))
		}
		pwLen := rng.IntN(64)
		if i%7 == 0 {
			pwLen = 0
		}
		password := make([]byte, pwLen)
		salt := make([]byte, 8+rng.IntN(57))
		rand.Read(password)
		rand.Read(salt)
		T := 4 + rng.IntN(125)

		got := make([]byte, T)
		if err := derive(y, got, password, salt, tc, m, p, nil, nil); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		var want []byte
		if y == argon2id {
			want = argon2.IDKey(password, salt, tc, m, p, uint32(T))
		} else {
			want = argon2.Key(password, salt, tc, m, p, uint32(T))
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d (seed %d): type %d t=%d m=%d p=%d T=%d password %x salt %x:\n got %x\nwant %x",
				i, seed, y, tc, m, p, T, password, salt, got, want)
		}
	}
}

// allZero reports whether the whole mapping is zero, and where it is not.
func allZero(a *Arena) (bool, int) {
	for i, b := range a.mem {
		if b != 0 {
			return false, i
		}
	}
	return true, -1
}

func TestArenaZeroAfterDerive(t *testing.T) {
	a, err := NewArena(1024, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if a.Size() < 1024*1024 {
		t.Fatalf("arena is %d bytes", a.Size())
	}
	// The check can fail: a stray byte is found.
	a.mem[len(a.mem)/2] = 1
	if ok, at := allZero(a); ok || at != len(a.mem)/2 {
		t.Fatal("allZero does not see a non-zero byte")
	}
	a.mem[len(a.mem)/2] = 0

	opts := &Options{Secret: []byte("pepper"), AssociatedData: []byte("ad")}
	for _, c := range []struct {
		t, m uint32
		p    uint8
		T    int
	}{{1, 1024, 4, 32}, {3, 1000, 3, 100}, {2, 64, 1, 4}, {1, 32, 4, 64}} {
		dst := make([]byte, c.T)
		if err := Derive(dst, []byte("password"), []byte("saltsaltsalt"), c.t, c.m, c.p, a, opts); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(dst, make([]byte, c.T)) {
			t.Fatal("empty tag")
		}
		if ok, at := allZero(a); !ok {
			t.Fatalf("t=%d m=%d p=%d: arena byte %d of %d is not zero after Derive", c.t, c.m, c.p, at, len(a.mem))
		}
	}
}

func TestArenaReuse(t *testing.T) {
	a, err := NewArena(4096, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	pw, salt := []byte("correct horse"), []byte("0123456789abcdef")
	for _, c := range []struct {
		t, m uint32
		p    uint8
	}{{3, 4096, 8}, {3, 4096, 4}, {1, 100, 2}, {2, 2048, 1}, {3, 4096, 8}} {
		fresh := make([]byte, 32)
		if err := Derive(fresh, pw, salt, c.t, c.m, c.p, nil, nil); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			reused := make([]byte, 32)
			if err := Derive(reused, pw, salt, c.t, c.m, c.p, a, nil); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(fresh, reused) {
				t.Fatalf("%+v: reused arena gives %x, a fresh one %x", c, reused, fresh)
			}
		}
	}
}

// resident counts the arena's pages that are in memory.
func resident(t *testing.T, a *Arena) (in, total int) {
	t.Helper()
	page := unix.Getpagesize()
	vec := make([]byte, (len(a.mem)+page-1)/page)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(a.mem))), uintptr(len(a.mem)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return in, len(vec)
}

func TestPrefaultAndDiscard(t *testing.T) {
	a, err := NewArena(8192, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if in, _ := resident(t, a); in != 0 {
		t.Fatalf("%d pages resident before any use", in)
	}
	if err := a.Prefault(); err != nil {
		t.Fatal(err)
	}
	if in, total := resident(t, a); in != total {
		t.Fatalf("%d of %d pages resident after Prefault", in, total)
	}
	want := argon2.IDKey([]byte("pw"), []byte("saltsalt"), 2, 8192, 4, 32)
	got := make([]byte, 32)
	if err := Derive(got, []byte("pw"), []byte("saltsalt"), 2, 8192, 4, a, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("prefaulted arena gives %x, want %x", got, want)
	}
	if err := a.Discard(); err != nil {
		t.Fatal(err)
	}
	if in, _ := resident(t, a); in != 0 {
		t.Fatalf("%d pages resident after Discard", in)
	}
	if err := Derive(got, []byte("pw"), []byte("saltsalt"), 2, 8192, 4, a, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("discarded arena gives %x, want %x", got, want)
	}
}

// PrefaultUntil faults in everything when not stopped, stops early when
// asked, and either way leaves an arena that derives the right hash.
func TestPrefaultUntil(t *testing.T) {
	want := argon2.IDKey([]byte("pw"), []byte("saltsalt"), 2, 65536, 4, 32)
	got := make([]byte, 32)
	for _, stopAtOnce := range []bool{false, true} {
		a, err := NewArena(65536, 4)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		if stopAtOnce {
			close(stop)
		}
		if err := a.PrefaultUntil(stop); err != nil {
			t.Fatal(err)
		}
		in, total := resident(t, a)
		switch {
		case !stopAtOnce && in != total:
			t.Errorf("%d of %d pages resident after a whole PrefaultUntil", in, total)
		case stopAtOnce && in != 0:
			t.Errorf("%d of %d pages resident after a PrefaultUntil stopped before it began", in, total)
		}
		if err := Derive(got, []byte("pw"), []byte("saltsalt"), 2, 65536, 4, a, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("stopped %v: %x, want %x", stopAtOnce, got, want)
		}
		a.Release()
	}
}

// TestArenaNotDumped checks the mapping's flags in /proc/self/smaps.
func TestArenaNotDumped(t *testing.T) {
	a, err := NewArena(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	flags := smapsFlags(t, a)
	if !strings.Contains(flags, " dd") {
		t.Errorf("arena VmFlags %q lack dd (MADV_DONTDUMP)", flags)
	}
	if !strings.Contains(flags, " wf") {
		t.Logf("arena VmFlags %q lack wf (MADV_WIPEONFORK); kernel older than 4.14?", flags)
	}
	if strings.Contains(flags, " hg") {
		t.Errorf("arena VmFlags %q: huge pages without UseHugePages", flags)
	}
	if err := a.UseHugePages(); err != nil {
		t.Logf("UseHugePages: %v", err)
	} else if flags := smapsFlags(t, a); !strings.Contains(flags, " hg") {
		t.Errorf("arena VmFlags %q lack hg after UseHugePages", flags)
	}
}

func TestReleaseAndBusy(t *testing.T) {
	a, err := NewArena(64, 2)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 32)
	// Busy while another derivation holds it.
	started, finish := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		var once sync.Once
		done <- Derive(dst, nil, []byte("saltsalt"), 1, 64, 2, a, &Options{Do: func(f func()) {
			once.Do(func() { close(started); <-finish })
			f()
		}})
	}()
	<-started
	if err := Derive(make([]byte, 32), nil, []byte("saltsalt"), 1, 64, 2, a, nil); !errors.Is(err, ErrArenaBusy) {
		t.Errorf("second derivation on a busy arena: %v, want ErrArenaBusy", err)
	}
	if err := a.Release(); !errors.Is(err, ErrArenaBusy) {
		t.Errorf("Release of a busy arena: %v, want ErrArenaBusy", err)
	}
	close(finish)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if a.Size() != 0 {
		t.Fatal("released arena still has a size")
	}
	if err := Derive(dst, nil, []byte("saltsalt"), 1, 64, 2, a, nil); !errors.Is(err, ErrArenaReleased) {
		t.Errorf("Derive on a released arena: %v", err)
	}
	if err := a.Prefault(); !errors.Is(err, ErrArenaReleased) {
		t.Errorf("Prefault on a released arena: %v", err)
	}
}

func TestBadParams(t *testing.T) {
	a, err := NewArena(64, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	salt := []byte("saltsalt")
	for _, c := range []struct {
		name   string
		T      int
		salt   []byte
		t, m   uint32
		p      uint8
		arena  *Arena
		target error
	}{
		{"t=0", 32, salt, 0, 64, 1, nil, ErrParams},
		{"p=0", 32, salt, 1, 64, 0, nil, ErrParams},
		{"m<8p", 32, salt, 1, 31, 4, nil, ErrParams},
		{"m=0", 32, salt, 1, 0, 1, nil, ErrParams},
		{"tag 3 bytes", 3, salt, 1, 64, 1, nil, ErrParams},
		{"no tag", 0, salt, 1, 64, 1, nil, ErrParams},
		{"salt 7 bytes", 32, salt[:7], 1, 64, 1, nil, ErrParams},
		{"no salt", 32, nil, 1, 64, 1, nil, ErrParams},
		{"arena memory", 32, salt, 1, 128, 2, a, ErrArenaTooSmall},
		{"arena lanes", 32, salt, 1, 64, 4, a, ErrArenaTooSmall},
	} {
		dst := make([]byte, c.T)
		err := Derive(dst, []byte("pw"), c.salt, c.t, c.m, c.p, c.arena, nil)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if c.target != nil && !errors.Is(err, c.target) {
			t.Errorf("%s: %v, want %v", c.name, err, c.target)
		}
		if c.T > 0 && !bytes.Equal(dst, make([]byte, c.T)) {
			t.Errorf("%s: dst written on error", c.name)
		}
	}
	for _, c := range []struct {
		m uint32
		p uint8
	}{{0, 1}, {8, 0}, {15, 2}} {
		if _, err := NewArena(c.m, c.p); !errors.Is(err, ErrParams) {
			t.Errorf("NewArena(%d, %d): %v, want ErrParams", c.m, c.p, err)
		}
	}
	// The smallest valid derivation, and its error-free neighbours.
	for _, p := range []uint8{1, 2, 255} {
		if err := Derive(make([]byte, 4), nil, salt, 1, 8*uint32(p), p, nil, nil); err != nil {
			t.Errorf("m=8p, p=%d: %v", p, err)
		}
	}
}

// TestDoRunsEveryLane checks that Options.Do wraps each goroutine Derive
// starts.
func TestDoRunsEveryLane(t *testing.T) {
	var calls atomic.Int32
	var mu sync.Mutex
	goroutines := map[uint64]bool{}
	opts := &Options{Do: func(f func()) {
		calls.Add(1)
		mu.Lock()
		goroutines[goid()] = true
		mu.Unlock()
		f()
	}}
	got := make([]byte, 32)
	if err := Derive(got, []byte("pw"), []byte("saltsalt"), 2, 256, 5, nil, opts); err != nil {
		t.Fatal(err)
	}
	want := min(5, runtime.GOMAXPROCS(0))
	if int(calls.Load()) != want || len(goroutines) != want {
		t.Fatalf("Do called %d times on %d goroutines, want %d and %d", calls.Load(), len(goroutines), want, want)
	}
	if want := argon2.IDKey([]byte("pw"), []byte("saltsalt"), 2, 256, 5, 32); !bytes.Equal(got, want) {
		t.Fatalf("with Do: %x, want %x", got, want)
	}
}

// goid returns the current goroutine's id, from its stack header.
func goid() uint64 {
	var buf [64]byte
	s := strings.TrimPrefix(string(buf[:runtime.Stack(buf[:], false)]), "goroutine ")
	var id uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}

// TestConcurrentArenas runs derivations in parallel, one arena each.
func TestConcurrentArenas(t *testing.T) {
	want := argon2.IDKey([]byte("pw"), []byte("saltsalt"), 1, 512, 3, 32)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			a, err := NewArena(512, 3)
			if err != nil {
				t.Error(err)
				return
			}
			defer a.Release()
			for range 3 {
				got := make([]byte, 32)
				if err := Derive(got, []byte("pw"), []byte("saltsalt"), 1, 512, 3, a, nil); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, want) {
					t.Errorf("got %x, want %x", got, want)
				}
			}
		})
	}
	wg.Wait()
}

// TestHeapIndependentOfMemory checks that a derivation's Go-heap
// allocations do not grow with m: the blocks live in the arena.
func TestHeapIndependentOfMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's shadow of the blocks is on the heap")
	}
	alloc := func(m uint32) uint64 {
		a, err := NewArena(m, 4)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Release()
		dst := make([]byte, 32)
		Derive(dst, []byte("pw"), []byte("saltsalt"), 1, m, 4, a, nil) // warm
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := Derive(dst, []byte("pw"), []byte("saltsalt"), 1, m, 4, a, nil); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := alloc(64), alloc(16384)
	t.Logf("heap per derivation: %d bytes at 64 KiB, %d bytes at 16 MiB", small, large)
	if large > 16<<10 || large > 2*small+4096 {
		t.Fatalf("a 16 MiB derivation allocates %d bytes on the Go heap (64 KiB: %d)", large, small)
	}
}

// TestPasswordNotOnHeap checks that no heap allocation made during Derive
// is big enough to hold a copy of a 1 KiB password (a hash state from
// another package, or a buffer, would be).
func TestPasswordNotOnHeap(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	pw := bytes.Repeat([]byte("secret password "), 64)
	dst := make([]byte, 32)
	a, err := NewArena(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	Derive(dst, pw, []byte("saltsalt"), 1, 64, 1, a, nil)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	Derive(dst, pw, []byte("saltsalt"), 1, 64, 1, a, nil)
	runtime.ReadMemStats(&after)
	// BySize counts allocations up to 32 KiB; the rest are the large ones.
	big := after.Mallocs - before.Mallocs
	for i, c := range after.BySize {
		if c.Size < uint32(len(pw)) {
			big -= c.Mallocs - before.BySize[i].Mallocs
		}
	}
	if big != 0 {
		t.Fatalf("Derive made %d heap allocations of %d bytes or more", big, len(pw))
	}
}

// smapsFlags returns the VmFlags line of the arena's mapping.
func smapsFlags(t *testing.T, a *Arena) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(unsafe.SliceData(a.mem))))
	in := false
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, start) {
			in = true
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmFlags:"))
		}
	}
	t.Fatalf("no mapping at %s in /proc/self/smaps", start)
	return ""
}

// TestPass0IgnoresOldContents fills the arena with garbage first: pass 0
// must write blocks without reading what was there.
func TestPass0IgnoresOldContents(t *testing.T) {
	a, err := NewArena(2048, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	rand.Read(blocksBytes(a.blocks))
	got := make([]byte, 32)
	if err := Derive(got, []byte("pw"), []byte("saltsalt"), 2, 2048, 4, a, nil); err != nil {
		t.Fatal(err)
	}
	if want := argon2.IDKey([]byte("pw"), []byte("saltsalt"), 2, 2048, 4, 32); !bytes.Equal(got, want) {
		t.Fatalf("over garbage: %x, want %x", got, want)
	}
	if ok, at := allZero(a); !ok {
		t.Fatalf("byte %d not wiped", at)
	}
}

func TestLock(t *testing.T) {
	a, err := NewArena(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if err := a.Lock(); err != nil {
		t.Skipf("mlock not allowed here: %v", err)
	}
	if flags := smapsFlags(t, a); !strings.Contains(flags, " lo") {
		t.Fatalf("arena VmFlags %q lack lo (locked) after Lock", flags)
	}
	if in, total := resident(t, a); in != total {
		t.Fatalf("%d of %d pages resident after Lock", in, total)
	}
	got := make([]byte, 32)
	if err := Derive(got, []byte("pw"), []byte("saltsalt"), 1, 1024, 2, a, nil); err != nil {
		t.Fatal(err)
	}
	if want := argon2.IDKey([]byte("pw"), []byte("saltsalt"), 1, 1024, 2, 32); !bytes.Equal(got, want) {
		t.Fatalf("locked arena gives %x, want %x", got, want)
	}
}

func TestLaneStateSize(t *testing.T) {
	if n := unsafe.Sizeof(laneState{}); n%64 != 0 || n >= 5<<10 {
		t.Fatalf("laneState is %d bytes: want a multiple of 64, under 5 KiB", n)
	}
}
