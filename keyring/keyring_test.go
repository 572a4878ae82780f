package keyring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sealbox/sealbox/internal/errclass"
)

type initial struct {
	Header Header
	Secret Secret
	Slot   Slot
	Root   Root
}

func sampleInitial() *initial {
	in := &initial{
		Header: Header{Policy: Params{Time: 3, MemoryKiB: 65536, Threads: 4}, Created: 1},
		Secret: Secret{Version: 1, Ciphertext: bytes.Repeat([]byte{0xAB}, 48)},
		Slot:   Slot{Name: "alice", Kind: KindAdmin, Params: Params{Time: 3, MemoryKiB: 65536, Threads: 4}},
	}
	in.Header.ID[0] = 9
	in.Root.Generation = 1
	return in
}

func (in *initial) fill(tx *Tx) error {
	if err := tx.PutHeader(&in.Header); err != nil {
		return err
	}
	if err := tx.PutSecret(&in.Secret); err != nil {
		return err
	}
	if err := tx.PutSlot(&in.Slot); err != nil {
		return err
	}
	return tx.PutRoot(&in.Root)
}

func newKeyring(t *testing.T) (*Keyring, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "keyring.db")
	k, err := Create(path, sampleInitial().fill)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k, path
}

func TestCreateModesAndRoundTrip(t *testing.T) {
	t.Parallel()
	k, path := newKeyring(t)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", st.Mode().Perm())
	}
	dst, _ := os.Stat(filepath.Dir(path))
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", dst.Mode().Perm())
	}
	in := sampleInitial()
	err = k.View(func(tx *Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		if *h != in.Header {
			t.Errorf("header %+v, want %+v", h, in.Header)
		}
		s, err := tx.Slot("alice")
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(*s, in.Slot) {
			t.Errorf("slot differs after round trip")
		}
		if r, err := tx.Root(); err != nil || *r != in.Root {
			t.Errorf("root differs after round trip: %v", err)
		}
		if tx.Format() != FormatVersion {
			t.Errorf("format %d", tx.Format())
		}
		sec, err := tx.Secret()
		if err != nil {
			return err
		}
		if sec.Version != 1 || !bytes.Equal(sec.Ciphertext, in.Secret.Ciphertext) {
			t.Errorf("secret differs after round trip")
		}
		if _, err := tx.Slot("bob"); !errors.Is(err, ErrNoSlot) {
			t.Errorf("missing slot: %v", err)
		}
		if err := tx.PutSlot(s); err == nil {
			t.Error("write in a read-only transaction succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestCreateRefusesExisting(t *testing.T) {
	t.Parallel()
	_, path := newKeyring(t)
	before, _ := os.ReadFile(path)
	if _, err := Create(path, sampleInitial().fill); !errors.Is(err, ErrExists) {
		t.Fatalf("got %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("existing keyring was modified")
	}
}

func TestOpenNeverCreates(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.db")
	if _, err := Open(path, Options{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Open created a file")
	}
}

func TestOpenRefusesSymlinkAndGarbage(t *testing.T) {
	t.Parallel()
	_, path := newKeyring(t)
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(link, Options{}); !errors.Is(err, ErrNotFile) || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("symlink: got %v, want ErrNotFile", err)
	}
	// A directory is a wrong path (invalid input), not a damaged keyring.
	if _, err := Open(t.TempDir(), Options{}); !errors.Is(err, ErrNotFile) || errclass.Of(err) != errclass.Invalid || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("directory: got %v, want ErrNotFile (invalid)", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.db")
	os.WriteFile(junk, bytes.Repeat([]byte("not a db"), 2048), 0o600)
	if _, err := Open(junk, Options{}); !errors.Is(err, ErrNotKeyring) {
		t.Fatalf("junk: got %v, want ErrNotKeyring", err)
	}
	// A valid bbolt file without our buckets.
	other := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(other, Options{}); !errors.Is(err, ErrNotKeyring) {
		t.Fatalf("foreign bbolt: got %v, want ErrNotKeyring", err)
	}
}

func TestUnknownFormatVersionRefused(t *testing.T) {
	t.Parallel()
	k, path := newKeyring(t)
	k.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{0, 0, 0, 3}) })
	db.Close()
	_, err = Open(path, Options{})
	if !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("got %v, want ErrUnknownVersion", err)
	}
}

func TestLockedKeyringFailsFast(t *testing.T) {
	t.Parallel()
	_, path := newKeyring(t) // held open by the fixture
	start := time.Now()
	_, err := Open(path, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
	// bbolt's Timeout bounds the wait; this only guards against a hang.
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("Open waited %v", d)
	}
}

func TestUpdateIsAllOrNothing(t *testing.T) {
	t.Parallel()
	k, _ := newKeyring(t)
	boom := errors.New("boom")
	err := k.Update(func(tx *Tx) error {
		if err := tx.PutClient(&Client{Name: "svc", UID: 1, HasUID: true, Status: ClientActive}); err != nil {
			return err
		}
		if err := tx.DeleteSlot("alice"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	k.View(func(tx *Tx) error {
		if _, err := tx.Slot("alice"); err != nil {
			t.Errorf("slot deleted by a failed transaction: %v", err)
		}
		if _, err := tx.Client("svc"); !errors.Is(err, ErrNoClient) {
			t.Errorf("client written by a failed transaction: %v", err)
		}
		return nil
	})
}

func TestTruncatedFileIsAnErrorNotACrash(t *testing.T) {
	t.Parallel()
	k, path := newKeyring(t)
	k.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSize(path, int64(len(raw))); err != nil {
		t.Fatalf("intact file refused: %v", err)
	}
	// Pages in use: the high-water mark of the newer meta page.
	pageSize := int(binary.LittleEndian.Uint32(raw[24:]))
	used := int(max(binary.LittleEndian.Uint64(raw[56:]), binary.LittleEndian.Uint64(raw[pageSize+56:]))) * pageSize
	if used < 3*pageSize || used > len(raw) {
		t.Fatalf("implausible high-water mark: %d bytes in use of %d", used, len(raw))
	}
	dir := t.TempDir()
	for _, cut := range []int{0, 10, 63, pageSize, pageSize + 100, used / 2, used - pageSize, used - 1} {
		p := filepath.Join(dir, "cut.db")
		os.WriteFile(p, raw[:cut], 0o600)
		kr, err := Open(p, Options{ReadOnly: true})
		if err == nil {
			kr.Close()
			t.Errorf("cut at %d of %d: opened", cut, len(raw))
			continue
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotKeyring) {
			t.Errorf("cut at %d: %v", cut, err)
		}
	}
}

// TestDeleteAuditBeforeSurvivesAShortKey: a record stored under a key that
// is not 8 bytes (an edited file) does not panic the pruning, which runs in
// the daemon's audit writer; the records before the mark go, and the odd
// key stays visible (as seq 0) for the chain check to name.
func TestDeleteAuditBeforeSurvivesAShortKey(t *testing.T) {
	t.Parallel()
	kr, _ := newKeyring(t)
	err := kr.Update(func(tx *Tx) error {
		b, err := tx.auditBucket(Events, true)
		if err != nil {
			return err
		}
		if err := b.Put([]byte("abc"), []byte("forged")); err != nil {
			return err
		}
		if err := tx.PutAudit(Events, 3, []byte("pruned")); err != nil {
			return err
		}
		if err := tx.PutAudit(Events, 5, []byte("kept")); err != nil {
			return err
		}
		return tx.DeleteAuditBefore(Events, 5)
	})
	if err != nil {
		t.Fatal(err)
	}
	kr.View(func(tx *Tx) error {
		var seqs []uint64
		tx.AuditRecords(Events, 0, func(seq uint64, _ []byte) bool { seqs = append(seqs, seq); return true })
		if len(seqs) != 2 || seqs[0] != 5 || seqs[1] != 0 {
			t.Errorf("after pruning: %v, want record 5 and the odd key (seq 0)", seqs)
		}
		return nil
	})
}

// The file written over in place while open (both meta pages zeroed): the
// first transaction fails with ErrCorrupt rather than crash; bbolt panicked
// in its own code, perhaps holding its locks, so every later call fails at
// once instead of waiting on them, and Close returns (the sixth review).
func TestWrittenOverWhileOpenFailsFastNotHangs(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keyring.db")
	k, err := Create(path, sampleInitial().fill)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 2*os.Getpagesize()), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := k.View(func(tx *Tx) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("first View: %v, want ErrCorrupt", err)
	}
	done := make(chan error, 3)
	go func() {
		done <- k.View(func(tx *Tx) error { return nil })
		done <- k.Update(func(tx *Tx) error { return nil })
		done <- k.Close()
	}()
	for i := range 3 {
		select {
		case err := <-done:
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("call %d after the damage: %v, want ErrCorrupt", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d after the damage still blocked: bbolt's locks were left held", i)
		}
	}
}

// A panic in a transaction's own function is bbolt-safe (its deferred
// rollback frees the locks): an error, and the keyring keeps working.
func TestPanicInATransactionIsAnErrorAndTheKeyringGoesOn(t *testing.T) {
	t.Parallel()
	k, err := Create(filepath.Join(t.TempDir(), "keyring.db"), sampleInitial().fill)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.Update(func(tx *Tx) error { panic("a bug") }); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "a bug") {
		t.Fatalf("a panic in Update: %v", err)
	}
	if err := k.Update(func(tx *Tx) error { return nil }); err != nil {
		t.Fatalf("the next Update: %v", err)
	}
}

// Check after the keyring was marked broken fails at once, and a panic in
// Check itself (all of it bbolt's) marks it broken; a panicking commit
// handler (ours) does not (the seventh review).
func TestCheckAndCommitHandlersAndBrokenKeyrings(t *testing.T) {
	t.Parallel()
	damage := func(path string) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(make([]byte, 2*os.Getpagesize()), 0)
		f.Close()
	}
	within := func(what string, fn func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked after 5 s", what)
			return nil
		}
	}
	for _, first := range []string{"view", "check"} {
		path := filepath.Join(t.TempDir(), "keyring.db")
		k, err := Create(path, sampleInitial().fill)
		if err != nil {
			t.Fatal(err)
		}
		damage(path)
		if first == "view" {
			k.View(func(tx *Tx) error { return nil })
		}
		if err := within(first+": Check", k.Check); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: Check: %v", first, err)
		}
		if err := within(first+": View", func() error { return k.View(func(tx *Tx) error { return nil }) }); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: View after Check: %v", first, err)
		}
		within(first+": Close", k.Close)
	}
	k, err := Create(filepath.Join(t.TempDir(), "keyring.db"), sampleInitial().fill)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	k.Update(func(tx *Tx) error {
		tx.OnCommit(func() { panic("handler bug") })
		return nil
	})
	if k.broken.Load() {
		t.Fatal("a commit handler's panic marked a healthy keyring broken")
	}
	if err := k.View(func(tx *Tx) error { return nil }); err != nil {
		t.Fatalf("after a commit handler's panic: %v", err)
	}
}
