// Package keyring stores sealbox's records in a bbolt file: the format
// version, the keyring header, the encrypted master secret, admin slots and
// client records. It knows bytes on disk and transactions, nothing of
// passwords or ciphers: the unseal package gives the records their meaning,
// and the admin package the rules for changing them.
//
// Every change is one bbolt transaction (Update), so a crash leaves either the
// old state or the new one. Decoders check exact lengths and refuse unknown
// versions; the layout is specified in FORMAT.md beside this file.
//
// Open a keyring with Open (it must exist) or make one with Create.
package keyring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/sealbox/sealbox/internal/errclass"
)

// FormatVersion is the keyring format this build writes. It also reads
// format 1, which the first successful admin login upgrades.
const FormatVersion = 2

// Errors callers test with errors.Is.
var (
	ErrNotFound        = errors.New("no keyring at that path")
	ErrExists          = errclass.New(errclass.Refused, "a keyring already exists at that path")
	ErrLocked          = errclass.New(errclass.Unavailable, "keyring is in use by another process")
	ErrUnknownVersion  = errclass.New(errclass.Integrity, "keyring format version not supported")
	ErrNotKeyring      = errclass.New(errclass.Integrity, "file is not a sealbox keyring")
	ErrNotFile         = errclass.New(errclass.Invalid, "not a regular file")
	ErrNoSlot          = errclass.New(errclass.NotFound, "no such admin")
	ErrNoClient        = errclass.New(errclass.NotFound, "no such client")
	ErrSlotExists      = errclass.New(errclass.Refused, "admin already exists")
	ErrClientExists    = errclass.New(errclass.Refused, "client already exists")
	ErrReadOnly        = errors.New("keyring is open read-only")
	errReadOnlyTxWrite = errors.New("keyring: write in a read-only transaction")
)

var (
	bucketMeta     = []byte("meta")
	bucketSlots    = []byte("slots")
	bucketClients  = []byte("clients")
	bucketManifest = []byte("manifest")
	keyFormat      = []byte("format")
	keyHeader      = []byte("header")
	keySecret      = []byte("secret")
	keyRegistry    = []byte("registry") // format 1
	keyRoot        = []byte("root")
	keyIdentity    = []byte("identity")
)

// OpenTimeout is how long Open waits for another process's lock on the file.
const OpenTimeout = time.Second

// Keyring is an open keyring file. It holds bbolt's file lock until Close.
type Keyring struct {
	db   *bolt.DB
	path string
	// broken is set once bbolt itself panicked (not a transaction's own
	// code): it may have done so holding its locks, so nothing may touch
	// the database again; every call then fails at once with ErrCorrupt.
	broken atomic.Bool
}

// Options tune Open.
type Options struct {
	ReadOnly bool // shared lock; Update fails
}

// Path returns the file's path.
func (k *Keyring) Path() string { return k.path }

// Close releases the file.
func (k *Keyring) Close() error {
	if k.broken.Load() {
		return errBroken // bbolt's locks may be held: the process's exit releases the file
	}
	return k.db.Close()
}

var errBroken = fmt.Errorf("%w: the keyring file was found damaged, or written over while in use, earlier in this process; find out what wrote it before a restart (a new process trusts the file as it then is: check a copy with sealbox-admin --keyring COPY check --as NAME)", ErrCorrupt)

func openDB(path string, ro bool) (db *bolt.DB, err error) {
	// bbolt panics on some damaged pages it reads at open (a zeroed
	// freelist page): that is a damaged file, not a crash. (The file
	// descriptor bbolt opened is then released by the collector.)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guardBolt(&err)
	// The freelist is written at every commit, so that opening reads it
	// instead of walking every page (which is slow on a large file, and
	// panics on a damaged page). NoSync stays false: every commit is on disk
	// when it returns.
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: OpenTimeout, ReadOnly: ro,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (is sealboxd running? then use --admin-socket instead of --keyring)", ErrLocked, path)
		}
		if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrChecksum) {
			return nil, fmt.Errorf("%w: %s: %v", ErrNotKeyring, path, err)
		}
		return nil, fmt.Errorf("opening keyring %s: %w", path, err)
	}
	return db, nil
}

// Open opens an existing keyring and checks its format version. It never
// creates a file.
func Open(path string, opts Options) (*Keyring, error) {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (create one with: sealbox-admin init --keyring %s --admin NAME)", ErrNotFound, path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening keyring: %w", err)
	}
	if !st.Mode().IsRegular() {
		// A wrong path, not a damaged file: a directory, a device, or a
		// symlink (refused, so that the file opened is the one named).
		what := "a directory"
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			what = "a symlink (symlinks are refused; name the file itself)"
		case !st.IsDir():
			what = "not a regular file"
		}
		return nil, fmt.Errorf("%w: --keyring %s is %s; it names the keyring file, e.g. /var/lib/sealbox/keyring.db", ErrNotFile, path, what)
	}
	if err := checkSize(path, st.Size()); err != nil {
		return nil, err
	}
	db, err := openDB(path, opts.ReadOnly)
	if err != nil {
		return nil, err
	}
	k := &Keyring{db: db, path: path}
	if err := k.View(func(tx *Tx) error { return tx.checkFormat() }); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// Create makes a new keyring file at path, mode 0600 from the start, in a
// parent directory created 0700 if missing, with the buckets of the current
// format; fill writes its first records in the same transaction. It refuses
// to overwrite anything. The file is removed again if the transaction fails.
func Create(path string, fill func(tx *Tx) error) (*Keyring, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating keyring directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%w: %s (it was left untouched)", ErrExists, path)
	}
	if err != nil {
		return nil, fmt.Errorf("creating keyring: %w", err)
	}
	f.Close()
	db, err := openDB(path, false)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	k := &Keyring{db: db, path: path}
	err = k.Update(func(tx *Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketSlots, bucketClients, bucketManifest} {
			if _, err := tx.tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if err := tx.SetFormat(FormatVersion); err != nil {
			return err
		}
		return fill(tx)
	})
	if err != nil {
		k.Close()
		os.Remove(path)
		return nil, fmt.Errorf("writing new keyring: %w", err)
	}
	return k, nil
}

// checkSize refuses a file shorter than the pages its bbolt meta pages
// claim. bbolt maps the file and would touch pages past its end, which is a
// SIGBUS, not an error. The meta page layout is bbolt's on-disk format 2:
// page header (16 bytes), then magic, version, page size (u32 each, at 16,
// 20, 24), flags, root (16 bytes), freelist (8), and the high-water page id
// at offset 56, all little-endian.
func checkSize(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening keyring: %w", err)
	}
	defer f.Close()
	var hdr [64]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return fmt.Errorf("%w: %s is too short (%d bytes)", ErrNotKeyring, path, size)
	}
	if binary.LittleEndian.Uint32(hdr[16:]) != 0xED0CDAED {
		return fmt.Errorf("%w: %s has no bbolt header", ErrNotKeyring, path)
	}
	pageSize := int64(binary.LittleEndian.Uint32(hdr[24:]))
	if pageSize < 512 || pageSize > 1<<16 || pageSize&(pageSize-1) != 0 {
		return fmt.Errorf("%w: %s has page size %d", ErrNotKeyring, path, pageSize)
	}
	for i := int64(0); i < 2; i++ {
		var meta [64]byte
		if _, err := f.ReadAt(meta[:], i*pageSize); err != nil {
			return fmt.Errorf("%w: %s is truncated (%d bytes, meta page %d missing)", ErrCorrupt, path, size, i)
		}
		hw := int64(binary.LittleEndian.Uint64(meta[56:]))
		if hw < 0 || hw > size/pageSize {
			return fmt.Errorf("%w: %s is truncated: %d bytes, its meta page %d needs %d pages of %d", ErrCorrupt, path, size, i, hw, pageSize)
		}
	}
	return nil
}

// fnPanic carries a panic of a transaction's own function (ours, or bbolt
// decoding a page for it) through bbolt, whose deferred rollback then ran
// and released its locks.
type fnPanic struct{ v any }

// inTx runs fn so that a panic in it is told apart from one in bbolt.
func inTx(fn func(*Tx) error) func(*bolt.Tx) error {
	return func(btx *bolt.Tx) error {
		defer func() {
			if r := recover(); r != nil {
				panic(fnPanic{r})
			}
		}()
		return fn(&Tx{tx: btx})
	}
}

// guard turns a panic of a transaction into ErrCorrupt instead of a crash:
// a fault on the mapped file (a page that vanished or was truncated under
// us), or bbolt panicking on pages that do not decode, as a file written
// over in place while this process has it open (an older copy put back)
// gives. Whoever can write the file must not be able to stop sealboxd at
// will: a restart forgets the newest generation it had seen. A panic from
// bbolt's own code (begin, commit, rollback) may have left its locks held:
// the keyring is then marked broken and refuses every later call, so that
// nothing waits on those locks.
func (k *Keyring) guard(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if p, ok := r.(fnPanic); ok {
		r = p.v
	} else {
		k.broken.Store(true)
	}
	if _, ok := r.(interface{ Addr() uintptr }); ok {
		*err = fmt.Errorf("%w: the keyring file faulted while being read (truncated or damaged)", ErrCorrupt)
		return
	}
	*err = fmt.Errorf("%w: the keyring file is damaged, or was written over while in use (bbolt: %v)", ErrCorrupt, r)
}

// guardBolt is guard for calls that run only bbolt's code (open, check):
// any panic there comes from a page that does not decode.
func guardBolt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: the keyring file is damaged (bbolt: %v)", ErrCorrupt, r)
	}
}

// View runs fn in a read-only transaction.
func (k *Keyring) View(fn func(*Tx) error) error {
	return k.guarded(func() error { return k.db.View(inTx(fn)) })
}

// guarded runs a call into bbolt with faults on the mapped file turned
// into panics and every panic into ErrCorrupt (guard), unless the keyring
// is already broken.
func (k *Keyring) guarded(call func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if k.broken.Load() {
		return errBroken
	}
	defer k.guard(&err)
	return call()
}

// Update runs fn in one read-write transaction: all of its changes land, or
// none (fn returned an error, or the process died before commit).
func (k *Keyring) Update(fn func(*Tx) error) error {
	err := k.guarded(func() error { return k.db.Update(inTx(fn)) })
	if errors.Is(err, bolterrors.ErrDatabaseReadOnly) {
		return ErrReadOnly
	}
	return err
}

// Backup writes a consistent copy of the whole file, taken in one read
// transaction, to w.
func (k *Keyring) Backup(w io.Writer) (n int64, err error) {
	err = k.View(func(tx *Tx) error {
		var werr error
		n, werr = tx.tx.WriteTo(w)
		return werr
	})
	return n, err
}

// Check runs bbolt's consistency check over every page.
func (k *Keyring) Check() error {
	// All of it is bbolt's code (no inTx): a panic marks the keyring broken.
	return k.guarded(func() error {
		return k.db.View(func(btx *bolt.Tx) error {
			var errs []error
			for err := range btx.Check() {
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		})
	})
}

// Tx is a keyring transaction.
type Tx struct {
	tx *bolt.Tx
}

func (tx *Tx) meta() *bolt.Bucket    { return tx.tx.Bucket(bucketMeta) }
func (tx *Tx) slots() *bolt.Bucket   { return tx.tx.Bucket(bucketSlots) }
func (tx *Tx) clients() *bolt.Bucket { return tx.tx.Bucket(bucketClients) }

func (tx *Tx) checkFormat() error {
	if tx.meta() == nil || tx.slots() == nil || tx.clients() == nil {
		return fmt.Errorf("%w: missing buckets", ErrNotKeyring)
	}
	v := tx.meta().Get(keyFormat)
	if len(v) != 4 {
		return fmt.Errorf("%w: format record is %d bytes", ErrNotKeyring, len(v))
	}
	switch got := binary.BigEndian.Uint32(v); got {
	case 1:
	case FormatVersion:
		if tx.tx.Bucket(bucketManifest) == nil {
			return fmt.Errorf("%w: missing the manifest bucket", ErrNotKeyring)
		}
	default:
		return fmt.Errorf("%w: file has format %d, this build reads 1 and %d (upgrade sealbox)", ErrUnknownVersion, got, FormatVersion)
	}
	return nil
}

// Format returns the file's format version: 1 or FormatVersion.
func (tx *Tx) Format() uint32 { return binary.BigEndian.Uint32(tx.meta().Get(keyFormat)) }

// SetFormat writes the format version; the upgrade from format 1 uses it
// and creates the buckets the new format needs.
func (tx *Tx) SetFormat(v uint32) error {
	if !tx.tx.Writable() {
		return errReadOnlyTxWrite
	}
	if _, err := tx.tx.CreateBucketIfNotExists(bucketManifest); err != nil {
		return err
	}
	return tx.meta().Put(keyFormat, binary.BigEndian.AppendUint32(nil, v))
}

// DeleteLegacy removes format 1's records that format 2 replaces: the
// registry, and the audit head and anchor.
func (tx *Tx) DeleteLegacy() error {
	if !tx.tx.Writable() {
		return errReadOnlyTxWrite
	}
	for _, k := range []string{string(keyRegistry), "audit-" + AuditHead, "audit-" + AuditAnchor} {
		if err := tx.meta().Delete([]byte(k)); err != nil {
			return err
		}
	}
	return nil
}

// Writable reports whether tx is a read-write transaction: it sees the
// latest committed state, and no other writer runs meanwhile.
func (tx *Tx) Writable() bool { return tx.tx.Writable() }

// OnCommit runs fn after tx commits (never if it rolls back).
// A panic in fn is the function's, not bbolt's (whose locks are free by
// then): it does not mark the keyring broken.
func (tx *Tx) OnCommit(fn func()) {
	tx.tx.OnCommit(func() {
		defer func() {
			if r := recover(); r != nil {
				panic(fnPanic{r})
			}
		}()
		fn()
	})
}

func (tx *Tx) put(b *bolt.Bucket, key, val []byte) error {
	if !tx.tx.Writable() {
		return errReadOnlyTxWrite
	}
	return b.Put(key, val)
}

func (tx *Tx) del(b *bolt.Bucket, key []byte) error {
	if !tx.tx.Writable() {
		return errReadOnlyTxWrite
	}
	return b.Delete(key)
}

// RawHeader returns the stored header record (nil if absent).
func (tx *Tx) RawHeader() []byte { return tx.meta().Get(keyHeader) }

// Header returns the keyring header.
func (tx *Tx) Header() (*Header, error) { return parseHeader(tx.RawHeader()) }

// PutHeader replaces the header.
func (tx *Tx) PutHeader(h *Header) error { return tx.put(tx.meta(), keyHeader, h.Marshal()) }

// IdentitySize is the size of the identity record: nonce || GCM(32-byte
// identity key).
const IdentitySize = NonceSize + KeySize + TagSize

// RawIdentity returns the identity record (see FORMAT.md), nil if none.
func (tx *Tx) RawIdentity() []byte { return tx.meta().Get(keyIdentity) }

// PutIdentity stores the identity record.
func (tx *Tx) PutIdentity(b []byte) error {
	if len(b) != IdentitySize {
		return fmt.Errorf("keyring: an identity record is %d bytes, not %d", IdentitySize, len(b))
	}
	return tx.put(tx.meta(), keyIdentity, b)
}

// RawSecret returns the stored secret record (nil if absent).
func (tx *Tx) RawSecret() []byte { return tx.meta().Get(keySecret) }

// Secret returns the encrypted master secret.
func (tx *Tx) Secret() (*Secret, error) { return ParseSecret(tx.RawSecret()) }

// PutSecret replaces the encrypted master secret.
func (tx *Tx) PutSecret(s *Secret) error {
	if len(s.Ciphertext) < TagSize+1 || len(s.Ciphertext) > MaxSecretSize+TagSize {
		return fmt.Errorf("keyring: secret ciphertext length %d out of range", len(s.Ciphertext))
	}
	return tx.put(tx.meta(), keySecret, s.Marshal())
}

// RawRoot returns the stored state root (nil if absent, as in format 1).
func (tx *Tx) RawRoot() []byte { return tx.meta().Get(keyRoot) }

// Root returns the state root.
func (tx *Tx) Root() (*Root, error) {
	b := tx.RawRoot()
	if b == nil {
		return nil, fmt.Errorf("%w: the state root is missing", ErrCorrupt)
	}
	return ParseRoot(b)
}

// PutRoot replaces the state root.
func (tx *Tx) PutRoot(r *Root) error { return tx.put(tx.meta(), keyRoot, r.Marshal()) }

func (tx *Tx) parseSlot(name string, v []byte) (*Slot, error) {
	if tx.Format() == 1 {
		return ParseLegacySlot(name, v)
	}
	return ParseSlot(name, v)
}

func (tx *Tx) parseClient(name string, v []byte) (*Client, error) {
	if tx.Format() == 1 {
		return ParseLegacyClient(name, v)
	}
	return ParseClient(name, v)
}

// RawSlot returns the named slot's stored bytes (nil if none).
func (tx *Tx) RawSlot(name string) []byte { return tx.slots().Get([]byte(name)) }

// Slot returns the named slot, or an error wrapping ErrNoSlot.
func (tx *Tx) Slot(name string) (*Slot, error) {
	v := tx.slots().Get([]byte(name))
	if v == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoSlot, name)
	}
	return tx.parseSlot(name, v)
}

// Slots returns every slot in name order. A record that does not decode is an
// error: a keyring with a damaged slot needs attention, not silence.
func (tx *Tx) Slots() ([]*Slot, error) {
	var out []*Slot
	err := tx.slots().ForEach(func(k, v []byte) error {
		s, err := tx.parseSlot(string(k), v)
		if err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// PutSlot writes a slot under its name, replacing any slot of that name.
func (tx *Tx) PutSlot(s *Slot) error {
	if err := ValidName(s.Name); err != nil {
		return err
	}
	if tx.Format() != FormatVersion || s.Legacy != nil {
		return fmt.Errorf("keyring: writing a slot into a format-%d file", tx.Format())
	}
	return tx.put(tx.slots(), []byte(s.Name), s.Marshal())
}

// DeleteSlot removes the named slot.
func (tx *Tx) DeleteSlot(name string) error {
	if tx.slots().Get([]byte(name)) == nil {
		return fmt.Errorf("%w: %q", ErrNoSlot, name)
	}
	return tx.del(tx.slots(), []byte(name))
}

// Client returns the named client, or an error wrapping ErrNoClient.
func (tx *Tx) Client(name string) (*Client, error) {
	v := tx.clients().Get([]byte(name))
	if v == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoClient, name)
	}
	return tx.parseClient(name, v)
}

// Clients returns every client in name order.
func (tx *Tx) Clients() ([]*Client, error) {
	var out []*Client
	err := tx.clients().ForEach(func(k, v []byte) error {
		c, err := tx.parseClient(string(k), v)
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// PutClient writes a client record under its name.
func (tx *Tx) PutClient(c *Client) error {
	if err := ValidName(c.Name); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if tx.Format() != FormatVersion {
		return fmt.Errorf("keyring: writing a client into a format-%d file", tx.Format())
	}
	return tx.put(tx.clients(), []byte(c.Name), c.Marshal())
}

// DeleteClient removes the named client record.
func (tx *Tx) DeleteClient(name string) error {
	if tx.clients().Get([]byte(name)) == nil {
		return fmt.Errorf("%w: %q", ErrNoClient, name)
	}
	return tx.del(tx.clients(), []byte(name))
}

// Record kinds in RawRecords and manifest keys.
const (
	RecordSlot   = 'S'
	RecordClient = 'C'
)

// RawRecords calls fn for every slot (kind 'S') and then every client (kind
// 'C') in key order with its name and stored bytes, without decoding them.
// The slices are valid only during the call.
func (tx *Tx) RawRecords(fn func(kind byte, name, raw []byte)) {
	tx.slots().ForEach(func(k, v []byte) error { fn(RecordSlot, k, v); return nil })
	tx.clients().ForEach(func(k, v []byte) error { fn(RecordClient, k, v); return nil })
}

// Manifest calls fn for every manifest entry in key order. Keys are the
// record kind ('S' or 'C') followed by the record's name; values are the
// SHA-256 of the record as stored. The slices are valid only during the call.
func (tx *Tx) Manifest(fn func(key, hash []byte)) {
	if b := tx.tx.Bucket(bucketManifest); b != nil {
		b.ForEach(func(k, v []byte) error { fn(k, v); return nil })
	}
}

// ManifestEntry returns one manifest entry (nil if none).
func (tx *Tx) ManifestEntry(key []byte) []byte {
	if b := tx.tx.Bucket(bucketManifest); b != nil {
		return b.Get(key)
	}
	return nil
}

// PutManifest writes one manifest entry; a nil hash deletes it.
func (tx *Tx) PutManifest(key, hash []byte) error {
	b := tx.tx.Bucket(bucketManifest)
	if b == nil {
		return fmt.Errorf("%w: no manifest bucket", ErrCorrupt)
	}
	if hash == nil {
		return tx.del(b, key)
	}
	return tx.put(b, key, hash)
}
