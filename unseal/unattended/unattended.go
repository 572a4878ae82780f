// Package unattended makes and opens the bindings of unattended slots: a
// Tang server (unseal/tang), the TPM (unseal/tpm2), or a threshold of such
// members (t of n, Shamir shares of the slot's key). A binding yields the
// slot's 32-byte key; the slot itself (wrapped DataKey, escrow, pending) is
// the same as every slot's (see keyring/FORMAT.md).
//
// Opening never trusts the binding: it comes from the file, and is
// verified only through what it yields (the slot's wrapped key must open,
// then the state root must verify). A binding that was tampered with can
// make sealboxd ask a server of the tamperer's choice, which learns nothing
// (the Tang exchange is blinded) and can only make the attempt fail.
package unattended

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/shamir"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/tpm2"
)

// KeySize is the size of what every binding yields.
const KeySize = keyring.KeySize

// Defaults for Env.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultDialTimeout = 3 * time.Second
)

// Errors.
var (
	// ErrBinding: the binding is not well formed.
	ErrBinding = errclass.New(errclass.Integrity, "malformed binding")
	// ErrThreshold: too few members of a threshold gave their share.
	ErrThreshold = errclass.New(errclass.Unavailable, "too few members of the threshold answered")
)

// Env is what opening and making bindings needs from the host.
type Env struct {
	HTTP    *http.Client  // for Tang; nil: tang.Client(DialTimeout)
	TPM     tpm2.Config   // for TPM2
	Timeout time.Duration // per attempt of one binding or member (dial + request); 0: DefaultTimeout
	// DialTimeout bounds a TCP connect to a Tang server; 0: DefaultDialTimeout.
	DialTimeout time.Duration
	// HelperDir, if set, holds the sockets of helpers (HelperSocket): a
	// kind whose socket is there is done by its helper, not in process.
	HelperDir string

	once sync.Once
}

func (e *Env) timeout() time.Duration {
	if e.Timeout > 0 {
		return e.Timeout
	}
	return DefaultTimeout
}

func (e *Env) dial() time.Duration {
	if e.DialTimeout > 0 {
		return e.DialTimeout
	}
	return DefaultDialTimeout
}

func (e *Env) http() *http.Client {
	e.once.Do(func() {
		if e.HTTP != nil {
			return
		}
		d := e.DialTimeout
		if d <= 0 {
			d = DefaultDialTimeout
		}
		e.HTTP = tang.Client(d)
	})
	return e.HTTP
}

// Transient reports whether a failed attempt may succeed if tried again
// (a server that did not answer, a TPM that was not there), as opposed to a
// binding that will not open until an admin acts (a key the server no
// longer has, PCRs that changed, a tampered binding).
func Transient(err error) bool {
	return errors.Is(err, tang.ErrUnreachable) || errors.Is(err, tpm2.ErrUnavailable) ||
		errors.Is(err, ErrThreshold) || errors.Is(err, ErrHelper) || errors.Is(err, context.DeadlineExceeded)
}

// Answered reports whether a failed attempt is a Tang server's "no": a 404
// for a key it no longer holds, or a reply that does not open the binding.
// From an honest server that is final until an admin acts, but over plain
// HTTP anyone on the path can say it, and a server restored from a backup
// takes it back; so it is tried again, at the slowest retry pace. A
// threshold that could still be reached if such members answered again is
// Answered too. Failures that are neither Transient nor Answered (PCRs that
// changed, a binding that does not parse, a key that does not open the
// slot) are not retried.
func Answered(err error) bool {
	return !Transient(err) && (errors.Is(err, tang.ErrKeyGone) || errors.Is(err, tang.ErrRefused) || errors.Is(err, errAnswered))
}

// Member is one member of a threshold binding.
type Member struct {
	Kind    keyring.SlotKind // KindTang or KindTPM2
	Binding []byte
}

// Threshold is a decoded threshold binding:
// ver u8 (=1) || t u8 || n u8 || n × (kind u8 || u16(len) || binding).
type Threshold struct {
	T       int
	Members []Member
}

const thresholdVersion = 1

// ParseThreshold decodes a threshold binding, with exact lengths.
func ParseThreshold(b []byte) (*Threshold, error) {
	if len(b) < 3 || b[0] != thresholdVersion {
		return nil, fmt.Errorf("%w: threshold binding: bad version or too short", ErrBinding)
	}
	th := &Threshold{T: int(b[1])}
	n := int(b[2])
	if th.T < 1 || n < th.T || n > shamir.MaxShares {
		return nil, fmt.Errorf("%w: threshold binding: t=%d n=%d, want 1 <= t <= n <= %d", ErrBinding, th.T, n, shamir.MaxShares)
	}
	rest := b[3:]
	for i := range n {
		if len(rest) < 3 {
			return nil, fmt.Errorf("%w: threshold binding: member %d truncated", ErrBinding, i+1)
		}
		k := keyring.SlotKind(rest[0])
		l := int(binary.BigEndian.Uint16(rest[1:]))
		if k != keyring.KindTang && k != keyring.KindTPM2 {
			return nil, fmt.Errorf("%w: threshold binding: member %d has kind %s", ErrBinding, i+1, k)
		}
		if l == 0 || len(rest) < 3+l {
			return nil, fmt.Errorf("%w: threshold binding: member %d truncated", ErrBinding, i+1)
		}
		th.Members = append(th.Members, Member{Kind: k, Binding: append([]byte(nil), rest[3:3+l]...)})
		rest = rest[3+l:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: threshold binding: %d bytes after the last member", ErrBinding, len(rest))
	}
	return th, nil
}

// Marshal encodes a threshold binding.
func (th *Threshold) Marshal() []byte {
	b := []byte{thresholdVersion, byte(th.T), byte(len(th.Members))}
	for _, m := range th.Members {
		b = append(b, byte(m.Kind))
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Binding)))
		b = append(b, m.Binding...)
	}
	return b
}

// Describe says in a few words what a binding is bound to, for the slot
// view, status and the audit log ("tang http://…", "tpm2 sha256:7",
// "threshold 2 of 3: …"). It never fails: a binding it cannot read is
// described as such.
func Describe(kind keyring.SlotKind, binding []byte) string {
	switch kind {
	case keyring.KindTang:
		b, err := tang.Parse(binding)
		if err != nil {
			return "tang (unreadable binding)"
		}
		return "tang " + b.URL
	case keyring.KindTPM2:
		b, err := tpm2.Parse(binding)
		if err != nil {
			return "tpm2 (unreadable binding)"
		}
		return "tpm2 " + pcrList(b)
	case keyring.KindThreshold:
		th, err := ParseThreshold(binding)
		if err != nil {
			return "threshold (unreadable binding)"
		}
		parts := make([]string, len(th.Members))
		for i, m := range th.Members {
			parts[i] = Describe(m.Kind, m.Binding)
		}
		return fmt.Sprintf("threshold %d of %d: %s", th.T, len(th.Members), strings.Join(parts, ", "))
	}
	return kind.String()
}

func pcrList(b *tpm2.Binding) string {
	s := make([]string, len(b.PCRs))
	for i, p := range b.PCRs {
		s[i] = fmt.Sprint(p)
	}
	return b.Bank + ":" + strings.Join(s, ",")
}

// Result is what an attempt at one binding did: per member for a
// threshold.
type Result struct {
	Method  string
	Err     error
	Elapsed time.Duration
	Members []Result
}

// Open recovers the key of an unattended binding into dst (KeySize bytes).
// Each Tang or TPM2 attempt has its own deadline (Env.Timeout); a threshold
// starts every member at once and stops at the t-th share.
func Open(ctx context.Context, env *Env, kind keyring.SlotKind, binding []byte, dst []byte) Result {
	start := time.Now()
	r := Result{Method: Describe(kind, binding)}
	if len(dst) != KeySize {
		r.Err = fmt.Errorf("unattended: want a %d-byte destination", KeySize)
		return r
	}
	switch kind {
	case keyring.KindTang, keyring.KindTPM2:
		r.Err = openOne(ctx, env, kind, binding, dst)
	case keyring.KindThreshold:
		r.Members, r.Err = openThreshold(ctx, env, binding, dst)
	default:
		r.Err = fmt.Errorf("%w: %s is not an unattended kind", ErrBinding, kind)
	}
	r.Elapsed = time.Since(start)
	return r
}

func openOne(ctx context.Context, env *Env, kind keyring.SlotKind, binding []byte, dst []byte) error {
	ctx, cancel := context.WithTimeout(ctx, env.timeout())
	defer cancel()
	if kind == keyring.KindTang || kind == keyring.KindTPM2 {
		if path := HelperSocket(env.HelperDir, kind); path != "" {
			return helperOpen(ctx, path, kind, binding, dst, env.dial())
		}
	}
	return openLocal(ctx, env, kind, binding, dst)
}

// openLocal opens a tang or tpm2 binding in this process.
func openLocal(ctx context.Context, env *Env, kind keyring.SlotKind, binding []byte, dst []byte) error {
	switch kind {
	case keyring.KindTang:
		return tang.Recover(ctx, env.http(), binding, dst)
	case keyring.KindTPM2:
		return tpm2.Unseal(ctx, env.TPM, binding, dst)
	}
	return fmt.Errorf("%w: a threshold member must be tang or tpm2, not %s", ErrBinding, kind)
}

type share struct {
	i   int
	err error
	d   time.Duration
}

func openThreshold(ctx context.Context, env *Env, binding []byte, dst []byte) ([]Result, error) {
	th, err := ParseThreshold(binding)
	if err != nil {
		return nil, err
	}
	n := len(th.Members)
	// Every member writes its share into its own part of one locked
	// buffer. It is destroyed (wiped and unmapped) once every member has
	// reported: here, or by drain after the threshold was met early.
	shares, err := memlock.New(n*KeySize, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return nil, err
	}
	part := func(i int) []byte { return shares.Bytes()[i*KeySize : (i+1)*KeySize] }
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan share, n)
	for i, m := range th.Members {
		go func() {
			start := time.Now()
			err := openOne(ctx, env, m.Kind, m.Binding, part(i))
			if err != nil {
				clear(part(i))
			}
			ch <- share{i: i, err: err, d: time.Since(start)}
		}()
	}
	results := make([]Result, n)
	for i, m := range th.Members {
		results[i] = Result{Method: Describe(m.Kind, m.Binding), Err: context.Canceled}
	}
	var xs []byte
	var got [][]byte
	permanent, answered := 0, 0
	for received := 1; received <= n; received++ {
		s := <-ch
		results[s.i].Err, results[s.i].Elapsed = s.err, s.d
		switch {
		case s.err == nil:
		case Answered(s.err):
			answered++
			continue
		case !Transient(s.err):
			permanent++
			continue
		default:
			continue
		}
		xs, got = append(xs, byte(s.i+1)), append(got, part(s.i))
		if len(got) == th.T {
			err := shamir.Combine(dst, xs, got)
			// The members still running see the cancel; drain waits for
			// them, then destroys the shares (with any that arrived late).
			cancel()
			go drain(ch, n-received, shares)
			return results, err
		}
	}
	shares.Destroy()
	err = fmt.Errorf("%w: %d of %d gave a share, %d needed", ErrThreshold, len(got), n, th.T)
	switch {
	case n-permanent < th.T:
		// Too many members failed for good: no retry can reach t.
		err = fmt.Errorf("%d of %d members failed for good, %d needed: %w", permanent, n, th.T, errPermanent)
	case n-permanent-answered < th.T:
		// Reachable only if servers that said no say yes again.
		err = fmt.Errorf("%d of %d members failed for good and %d servers said no, %d needed: %w", permanent, n, answered, th.T, errAnswered)
	}
	return results, err
}

var (
	errPermanent = errors.New("the threshold cannot be reached until an admin acts")
	errAnswered  = errors.New("the threshold can be reached only if those servers answer again")
)

// drain reads the remaining members' results so that their goroutines end,
// then destroys the shares, with any that arrived after the threshold was
// met.
func drain(ch chan share, n int, shares *memlock.Buffer) {
	for range n {
		<-ch
	}
	shares.Destroy()
}

// NewTang binds kek to a Tang server's advertisement (offline once the
// advertisement is at hand).
func NewTang(adv *tang.Adv, kek []byte) ([]byte, error) { return tang.Encrypt(adv, kek) }

// NewTPM2 seals kek to the TPM's current values of pcrs.
func NewTPM2(ctx context.Context, env *Env, kek []byte, pcrs []int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, env.timeout())
	defer cancel()
	return tpmSeal(ctx, env, kek, pcrs)
}

// Rebind makes a binding of the same kind, to the same server or PCRs, as
// binding, over a new plaintext: a Tang binding is re-encrypted to the
// advertisement it holds (offline), a TPM2 binding is sealed again to the
// current values of its PCRs.
func Rebind(ctx context.Context, env *Env, kind keyring.SlotKind, binding []byte, plaintext []byte) ([]byte, error) {
	switch kind {
	case keyring.KindTang:
		return tang.Rebind(binding, plaintext)
	case keyring.KindTPM2:
		b, err := tpm2.Parse(binding)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, env.timeout())
		defer cancel()
		return tpmSeal(ctx, env, plaintext, b.PCRs)
	}
	return nil, fmt.Errorf("%w: cannot rebind a %s binding", ErrBinding, kind)
}

// NewThreshold splits kek into one share per member, any t of which
// recover it, and binds each share as its member is bound (Rebind).
func NewThreshold(ctx context.Context, env *Env, t int, members []Member, kek []byte) ([]byte, error) {
	if t < 1 || t > len(members) || len(members) > shamir.MaxShares {
		return nil, fmt.Errorf("threshold: need 1 <= %d <= %d members <= %d", t, len(members), shamir.MaxShares)
	}
	shares, err := shamir.Split(kek, t, len(members))
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range shares {
			clear(s)
		}
	}()
	th := &Threshold{T: t}
	for i, m := range members {
		b, err := Rebind(ctx, env, m.Kind, m.Binding, shares[i])
		if err != nil {
			return nil, fmt.Errorf("threshold member %d (%s): %w", i+1, Describe(m.Kind, m.Binding), err)
		}
		th.Members = append(th.Members, Member{Kind: m.Kind, Binding: b})
	}
	return th.Marshal(), nil
}

// NeedsReseal reports whether a binding must be made again because the TPM
// it is sealed to no longer has the PCR values it was sealed to (a
// firmware, boot loader or kernel update): a tpm2 binding, or a threshold
// with such a member. It unseals nothing. why says which PCRs.
func NeedsReseal(ctx context.Context, env *Env, kind keyring.SlotKind, binding []byte) (bool, string, error) {
	switch kind {
	case keyring.KindTPM2:
		b, err := tpm2.Parse(binding)
		if err != nil {
			return false, "", err
		}
		ctx, cancel := context.WithTimeout(ctx, env.timeout())
		defer cancel()
		drifted, err := tpmDrifted(ctx, env, binding)
		if err != nil || !drifted {
			return false, "", err
		}
		return true, "PCRs " + pcrList(b) + " changed since it was sealed", nil
	case keyring.KindThreshold:
		th, err := ParseThreshold(binding)
		if err != nil {
			return false, "", err
		}
		for i, m := range th.Members {
			if m.Kind != keyring.KindTPM2 {
				continue
			}
			need, why, err := NeedsReseal(ctx, env, m.Kind, m.Binding)
			if err != nil || need {
				return need, fmt.Sprintf("member %d: %s", i+1, why), err
			}
		}
	}
	return false, "", nil
}

// Remake makes a new binding of the same shape as binding over a new key:
// a tpm2 binding sealed to the current PCR values, a threshold with fresh
// shares, each member rebound (Rebind).
func Remake(ctx context.Context, env *Env, kind keyring.SlotKind, binding []byte, kek []byte) ([]byte, error) {
	if kind == keyring.KindThreshold {
		th, err := ParseThreshold(binding)
		if err != nil {
			return nil, err
		}
		return NewThreshold(ctx, env, th.T, th.Members, kek)
	}
	return Rebind(ctx, env, kind, binding, kek)
}
