package unseal

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/sealbox/sealbox/internal/argon2id"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

// cheap are the parameters unit tests use; production floors are tested by
// the end-to-end tests and the benchmark.
var cheap = keyring.Params{Time: 1, MemoryKiB: 64, Threads: 1}

var mo = memlock.Options{AllowUnlocked: true}

func TestMain(m *testing.M) {
	UseTestFloor(cheap)
	os.Exit(m.Run())
}

// fixture is a keyring's worth of material kept in memory.
type fixture struct {
	key *Key
	h   *keyring.Header
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	var id [keyring.IDSize]byte
	copy(id[:], "fixture-keyring!")
	k, err := NewKey(id, mo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return &fixture{key: k, h: &keyring.Header{ID: id, Commitment: k.Commitment(), Policy: cheap}}
}

func (f *fixture) slot(t *testing.T, name, pw string) *keyring.Slot {
	t.Helper()
	s, err := f.key.SealSlot(name, keyring.KindAdmin, []byte(pw), cheap, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpenSlotRightAndWrongPassword(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.slot(t, "alice", "alice password 1")
	k, err := OpenSlot(f.h, s, []byte("alice password 1"), mo)
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	defer k.Destroy()
	if !bytes.Equal(k.dataKey(), f.key.dataKey()) {
		t.Fatal("unwrapped key differs from the DataKey")
	}
	if _, err := OpenSlot(f.h, s, []byte("alice password 2"), mo); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: got %v, want ErrWrongPassword", err)
	}
}

func TestSlotUnderAnotherNameDoesNotOpen(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.slot(t, "bob", "bob password 123")
	moved := *s
	moved.Name = "alice"
	if _, err := OpenSlot(f.h, &moved, []byte("bob password 123"), mo); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("slot renamed to alice: got %v, want ErrWrongPassword", err)
	}
	other := *f.h
	other.ID[0] ^= 1
	if _, err := OpenSlot(&other, s, []byte("bob password 123"), mo); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("slot in another keyring: got %v, want ErrWrongPassword", err)
	}
	kind := *s
	kind.Kind = keyring.KindRecovery
	if _, err := OpenSlot(f.h, &kind, []byte("bob password 123"), mo); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("slot with another kind: got %v, want ErrWrongPassword", err)
	}
}

func TestForeignDataKeyRejectedByCommitment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// Same keyring ID, same name, a valid wrap under a known password, but
	// of another DataKey: GCM opens it, the commitment must not.
	forger, err := NewKey(f.h.ID, mo)
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Destroy()
	s, err := forger.SealSlot("alice", keyring.KindAdmin, []byte("attacker password"), cheap, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSlot(f.h, s, []byte("attacker password"), mo); !errors.Is(err, ErrCommitment) {
		t.Fatalf("got %v, want ErrCommitment", err)
	}
}

// rekey is what admin.Rekey does to the keys: a new DataKey, the header's
// commitment moved to it, and slot s handed over.
func (f *fixture) rekey(t *testing.T, from *Key, s *keyring.Slot) (*Key, *keyring.Slot) {
	t.Helper()
	next, err := from.Rekeyed(mo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(next.Destroy)
	out, err := from.HandOver(s, next)
	if err != nil {
		t.Fatal(err)
	}
	f.h.Commitment = next.Commitment()
	return next, out
}

func TestHandOverAcrossRekeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	bob := f.slot(t, "bob", "bob password 123")
	k := f.key
	for i := 0; i < 3; i++ { // bob misses three rekeys; only the last counts
		k, bob = f.rekey(t, k, bob)
	}
	got, err := OpenSlot(f.h, bob, []byte("bob password 123"), mo)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Destroy()
	if !got.Folded || !bytes.Equal(got.dataKey(), k.dataKey()) {
		t.Fatalf("folded %v, key right %v", got.Folded, bytes.Equal(got.dataKey(), k.dataKey()))
	}
}

// TestForgedPendingWithoutAnyKeyRefused is the forged rekey of a file
// writer who has no key at all: they draw a DataKey, move the commitment to
// it and seal it into a slot's pending field. Without the slot's hand-over
// key (wrapped under the password, escrowed under the old DataKey) the
// pending field cannot be made to open.
func TestForgedPendingWithoutAnyKeyRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.slot(t, "alice", "alice password 1")
	forged, err := NewKey(f.h.ID, mo)
	if err != nil {
		t.Fatal(err)
	}
	defer forged.Destroy()
	// Their best try: a hand-over under a key of their own choosing, from
	// a slot they made, copied onto alice's.
	decoy, err := forged.SealSlot("alice", keyring.KindAdmin, []byte("attacker password"), cheap, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	next, err := forged.Rekeyed(mo)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Destroy()
	handed, err := forged.HandOver(decoy, next)
	if err != nil {
		t.Fatal(err)
	}
	victim := *alice
	victim.Flags |= keyring.SlotPending
	victim.Pending = handed.Pending
	h := *f.h
	h.Commitment = next.Commitment()
	if _, err := OpenSlot(&h, &victim, []byte("alice password 1"), mo); !errors.Is(err, ErrCommitment) {
		t.Fatalf("forged pending: got %v, want ErrCommitment", err)
	}
	// A genuine pending key moved to another commitment does not open
	// either: it is bound to the commitment of the rekey that made it.
	k2, bob := f.rekey(t, f.key, f.slot(t, "bob", "bob password 123"))
	_ = k2
	other := *f.h
	other.Commitment = forged.Commitment()
	if _, err := OpenSlot(&other, bob, []byte("bob password 123"), mo); !errors.Is(err, ErrCommitment) {
		t.Fatalf("pending under another commitment: got %v, want ErrCommitment", err)
	}
}

func TestStaleSlotRefusedBeforeAnyWork(t *testing.T) {
	f := newFixture(t) // not parallel: reads the process-wide work counter
	s := f.slot(t, "alice", "alice password 1")
	s.Flags = keyring.SlotStale | keyring.SlotLegacyWrap
	n0, _ := Work()
	if _, err := OpenSlot(f.h, s, []byte("alice password 1"), mo); !errors.Is(err, ErrStale) {
		t.Fatalf("got %v, want ErrStale", err)
	}
	if n1, _ := Work(); n1 != n0 {
		t.Fatal("a stale slot cost a derivation")
	}
}

func TestParamsAboveCapRefusedWithoutWork(t *testing.T) {
	f := newFixture(t) // not parallel: reads the process-wide work counter
	s := f.slot(t, "alice", "alice password 1")
	for _, p := range []keyring.Params{
		{Time: 1, MemoryKiB: 0xFFFFFFFF, Threads: 1},
		{Time: 17, MemoryKiB: 64, Threads: 1},
		{Time: 1, MemoryKiB: 64, Threads: 0},
		{Time: 0, MemoryKiB: 64, Threads: 1},
		{Time: 1, MemoryKiB: 64, Threads: 200},
	} {
		bad := *s
		bad.Params = p
		n0, _ := Work()
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		_, err := OpenSlot(f.h, &bad, []byte("alice password 1"), mo)
		runtime.ReadMemStats(&ms1)
		n1, _ := Work()
		if !errors.Is(err, ErrParams) {
			t.Errorf("%v: got %v, want ErrParams", p, err)
		}
		if n1 != n0 {
			t.Errorf("%v: %d derivations ran, want 0", p, n1-n0)
		}
		if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 1<<20 {
			t.Errorf("%v: allocated %d bytes before refusing", p, alloc)
		}
	}
}

func TestDecoyDoesTheSameWorkAsAWrongPassword(t *testing.T) {
	f := newFixture(t) // not parallel: reads the process-wide work counter
	s := f.slot(t, "alice", "alice password 1")
	n0, c0 := Work()
	_, errWrong := OpenSlot(f.h, s, []byte("not the password"), mo)
	n1, c1 := Work()
	errDecoy := Decoy(cheap, []byte("not the password"))
	n2, c2 := Work()
	if !errors.Is(errWrong, ErrWrongPassword) || !errors.Is(errDecoy, ErrWrongPassword) || errWrong.Error() != errDecoy.Error() {
		t.Fatalf("errors differ: wrong=%v decoy=%v", errWrong, errDecoy)
	}
	if n1-n0 != 1 || n2-n1 != 1 || c1-c0 != c2-c1 {
		t.Fatalf("work differs: wrong password %d derivations cost %d, decoy %d cost %d", n1-n0, c1-c0, n2-n1, c2-c1)
	}
}

func TestSecretRoundTripAndBinding(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	plain := []byte("master secret bytes \x00\xff")
	sec, err := f.key.EncryptSecret(plain, 7)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := f.key.DecryptSecret(sec, mo)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), plain) {
		t.Fatalf("decrypted %q", buf.Bytes())
	}
	buf.Destroy()
	if buf.Bytes() != nil {
		t.Fatal("Destroy left the bytes reachable")
	}
	rolled := *sec
	rolled.Version = 6
	if _, err := f.key.DecryptSecret(&rolled, mo); !errors.Is(err, ErrSecret) {
		t.Fatalf("version changed: got %v, want ErrSecret", err)
	}
	short := *sec
	short.Ciphertext = sec.Ciphertext[:keyring.TagSize]
	if _, err := f.key.DecryptSecret(&short, mo); !errors.Is(err, keyring.ErrCorrupt) {
		t.Fatalf("empty plaintext: got %v, want ErrCorrupt", err)
	}
	if _, err := f.key.EncryptSecret(make([]byte, keyring.MaxSecretSize+1), 1); err == nil {
		t.Fatal("oversized secret accepted")
	}
}

func TestNewSlotParamsNeverBelowFloor(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	below := keyring.Params{Time: cheap.Time, MemoryKiB: cheap.MemoryKiB / 2, Threads: 1}
	if _, err := f.key.SealSlot("alice", keyring.KindAdmin, []byte("alice password 1"), below, 1, 0); !errors.Is(err, ErrParams) {
		t.Fatalf("got %v, want ErrParams", err)
	}
}

func TestCalibrateRespectsFloorAndCap(t *testing.T) {
	t.Parallel()
	p := Calibrate(time.Nanosecond, 1<<20, nil)
	if p != Floor() {
		t.Fatalf("tiny target gave %v, want the floor %v", p, Floor())
	}
	p = Calibrate(20*time.Millisecond, 1024, nil)
	if p.MemoryKiB > 1024 || p.MemoryKiB < Floor().MemoryKiB || p.Time < Floor().Time || p.Time > MaxTime {
		t.Fatalf("calibrated %v outside floor %v and cap 1024 KiB", p, Floor())
	}
	if err := CheckParams(p); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSlotUnwrap compares one OpenSlot with one bare derivation by the
// same Argon2id (internal/argon2id, a fresh arena each, as OpenSlot maps one
// when none is kept) at the same parameters (RFC 9106's floor), alternating
// the two in each iteration. The ratio metric is unwrap/argon2; everything
// beyond the KDF is overhead.
func BenchmarkSlotUnwrap(b *testing.B) {
	f := newFixtureB(b)
	p := RFC9106Floor
	s, err := f.key.sealSlot(randReader{}, "alice", keyring.KindAdmin, []byte("alice password 1"), p, 1, 0)
	if err != nil {
		b.Fatal(err)
	}
	f.h.Policy = p
	var bare, unwrap time.Duration
	runBare := func() {
		t0 := time.Now()
		k := make([]byte, 32)
		if err := argon2id.Derive(k, []byte("alice password 1"), s.Salt[:], p.Time, p.MemoryKiB, p.Threads, nil, &argon2id.Options{Do: memlock.Do}); err != nil {
			b.Fatal(err)
		}
		bare += time.Since(t0)
		clear(k)
	}
	runUnwrap := func() {
		t0 := time.Now()
		key, err := OpenSlot(f.h, s, []byte("alice password 1"), mo)
		unwrap += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		key.Destroy()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate the order: the second call of a pair pays for the
		// garbage of the first's 64 MiB.
		if i%2 == 0 {
			runBare()
			runUnwrap()
		} else {
			runUnwrap()
			runBare()
		}
	}
	b.ReportMetric(float64(bare)/1e6/float64(b.N), "argon2-ms/op")
	b.ReportMetric(float64(unwrap)/1e6/float64(b.N), "unwrap-ms/op")
	b.ReportMetric(float64(unwrap)/float64(bare), "unwrap/argon2")
}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i * 7)
	}
	return len(p), nil
}

func newFixtureB(b *testing.B) *fixture {
	var id [keyring.IDSize]byte
	k, err := NewKey(id, mo)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(k.Destroy)
	return &fixture{key: k, h: &keyring.Header{ID: id, Commitment: k.Commitment()}}
}

// BenchmarkCalibration calibrates to a target, then times three derivations
// with the parameters it chose and reports the median against the target
// (goal: within 15 %). It runs at the real floor.
func BenchmarkCalibration(b *testing.B) {
	UseTestFloor(RFC9106Floor)
	defer UseTestFloor(cheap)
	for _, target := range []time.Duration{500 * time.Millisecond, time.Second} {
		b.Run(target.String(), func(b *testing.B) {
			var ratio float64
			var p keyring.Params
			for i := 0; i < b.N; i++ {
				p = Calibrate(target, 1<<20, nil)
				timeOne(p) // as a running daemon would be: warm
				var runs []time.Duration
				for j := 0; j < 3; j++ {
					runs = append(runs, timeOne(p))
				}
				slices.Sort(runs)
				ratio = float64(runs[1]) / float64(target)
			}
			b.ReportMetric(ratio, "median/target")
			b.ReportMetric(float64(p.MemoryKiB>>10), "MiB")
			b.ReportMetric(float64(p.Time), "t")
		})
	}
}

// A derivation that comes while KeepArena is still faulting memory in takes
// that arena over instead of mapping a second one (which would double the
// peak memory), and derives the right key from it.
func TestDerivationTakesOverTheArenaBeingPrepared(t *testing.T) {
	p := keyring.Params{Time: 1, MemoryKiB: 512 << 10, Threads: 4}
	defer DropArena()
	kept := make(chan error, 1)
	go func() { kept <- KeepArena(p) }()
	for {
		arenas.mu.Lock()
		preparing := arenas.preparing != nil
		arenas.mu.Unlock()
		if preparing {
			break
		}
		select {
		case err := <-kept:
			t.Skipf("KeepArena finished (%v) before a derivation could come during it", err)
		default:
		}
		time.Sleep(time.Millisecond)
	}
	own := ownArenas.Load()
	salt := []byte("sixteen byte salt")
	start := time.Now()
	k, err := derive([]byte("pw"), salt, p)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	if err := <-kept; err != nil {
		t.Fatal(err)
	}
	if n := ownArenas.Load() - own; n != 0 {
		t.Fatalf("%d derivations mapped an arena of their own while one was being prepared", n)
	}
	if want := argon2.IDKey([]byte("pw"), salt, p.Time, p.MemoryKiB, p.Threads, 32); !bytes.Equal(k.Bytes(), want) {
		t.Fatal("wrong key from the taken-over arena")
	}
	if ArenaKept() != p {
		t.Fatal("the arena is not kept for the next derivation")
	}
	t.Logf("derivation with a half-prepared arena: %v", took)
}

// Past the memory cap, calibration adds whole passes and then trims the
// memory so that the cost is what was asked, not a pass's worth off.
func TestScaleToHitsTheCostPastTheMemoryCap(t *testing.T) {
	p := keyring.Params{Time: 1, MemoryKiB: 1024, Threads: 1}
	for _, f := range []float64{2, 3.5, 5.9, 6.1, 11.2} {
		got := scaleTo(p, f, 4096)
		want := 1024 * f
		cost := float64(got.MemoryKiB) * float64(got.Time)
		if got.MemoryKiB > 4096 || cost > want || cost < want-1024*float64(got.Time) {
			t.Errorf("x%.1f: %v costs %.0f, want %.0f within a MiB per pass, m <= 4096 KiB", f, got, cost, want)
		}
	}
	if got := scaleTo(p, 3, 4096); got.Time != 1 || got.MemoryKiB != 3072 {
		t.Errorf("under the cap: %v, want memory first (t=1 m=3072)", got)
	}
}
