package tpm2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"
)

// MaxSecret is the longest plaintext Seal takes.
const MaxSecret = 64

// Config says how to reach the TPM.
type Config struct {
	// TCTI is given to each tool as TPM2TOOLS_TCTI: "device:/dev/tpmrm0"
	// when empty.
	TCTI string
	// Tools is the directory of the tpm2_* binaries; "" looks them up in
	// PATH.
	Tools string
}

// Seal seals plaintext (1 to 64 bytes) to the current values of the given
// PCRs of the sha256 bank, under the owner hierarchy's standard ECC primary
// key, with PolicyPCR over those PCRs as the only way to unseal. It returns
// the binding bytes (see the package doc). The plaintext goes to
// tpm2_create through a pipe and is neither copied nor kept.
//
// If the PCRs change while Seal runs, it fails with ErrUnavailable rather
// than return a binding that does not unseal now.
func Seal(ctx context.Context, cfg Config, plaintext []byte, pcrs []int) ([]byte, error) {
	if n := len(plaintext); n < 1 || n > MaxSecret {
		return nil, fmt.Errorf("tpm2: plaintext is %d bytes, want 1 to %d: %w", n, MaxSecret, ErrArgument)
	}
	mask, err := pcrMask(pcrs)
	if err != nil {
		return nil, err
	}
	s, done, err := begin(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer done()

	values, err := s.pcrValues(ctx, mask)
	if err != nil {
		return nil, err
	}
	digest := policyPCR(mask, values)
	if err := os.WriteFile(s.path("policy"), digest[:], 0o600); err != nil {
		return nil, fmt.Errorf("tpm2: %w", err)
	}
	if err := s.primary(ctx); err != nil {
		return nil, err
	}

	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("tpm2: %w", err)
	}
	// At most 64 bytes: the pipe's buffer takes them without a reader.
	_, err = w.Write(plaintext)
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("tpm2: writing to the pipe: %w", err)
	}
	p, err := s.start(ctx, "tpm2_create", r, nil,
		"-C", s.path("primary.ctx"), "-g", "sha256",
		"-a", "fixedtpm|fixedparent|noda", "-L", s.path("policy"),
		"-i", "-", "-u", s.path("obj.pub"), "-r", s.path("obj.priv"))
	r.Close()
	if err != nil {
		return nil, err
	}
	if err := p.wait(ctx); err != nil {
		return nil, err
	}
	if err := s.flushObjects(ctx); err != nil {
		return nil, err
	}

	b := &Binding{Bank: "sha256", PolicyDigest: digest}
	b.PCRs, _ = maskPCRs(mask)
	if b.Public, err = readBlob(s.path("obj.pub")); err != nil {
		return nil, err
	}
	if b.Private, err = readBlob(s.path("obj.priv")); err != nil {
		return nil, err
	}
	after, err := s.pcrValues(ctx, mask)
	if err != nil {
		return nil, err
	}
	if policyPCR(mask, after) != digest {
		return nil, fmt.Errorf("tpm2: the PCRs changed while sealing; try again: %w", ErrUnavailable)
	}
	out := b.Marshal()
	// The TPM wrote pub: check it is the object asked for.
	if _, err := Parse(out); err != nil {
		return nil, fmt.Errorf("tpm2: tpm2_create made an unexpected object: %w", err)
	}
	return out, nil
}

// Unseal recreates the primary key, loads the sealed object of binding and
// unseals it with a PolicyPCR session into dst, whose length must be the
// sealed length exactly. tpm2_unseal's output is read from a pipe straight
// into dst; on any error dst is zeroed.
func Unseal(ctx context.Context, cfg Config, binding []byte, dst []byte) (err error) {
	if n := len(dst); n < 1 || n > MaxSecret {
		return fmt.Errorf("tpm2: dst is %d bytes, want 1 to %d: %w", n, MaxSecret, ErrArgument)
	}
	b, err := Parse(binding)
	if err != nil {
		return err
	}
	mask, _ := pcrMask(b.PCRs)
	s, done, err := begin(ctx, cfg)
	if err != nil {
		return err
	}
	defer done()

	if err := os.WriteFile(s.path("obj.pub"), b.Public, 0o600); err != nil {
		return fmt.Errorf("tpm2: %w", err)
	}
	if err := os.WriteFile(s.path("obj.priv"), b.Private, 0o600); err != nil {
		return fmt.Errorf("tpm2: %w", err)
	}
	if err := s.primary(ctx); err != nil {
		return err
	}
	if err := s.run(ctx, "tpm2_load", "-C", s.path("primary.ctx"),
		"-u", s.path("obj.pub"), "-r", s.path("obj.priv"), "-c", s.path("obj.ctx")); err != nil {
		return err
	}
	if err := s.flushObjects(ctx); err != nil {
		return err
	}

	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("tpm2: %w", err)
	}
	defer r.Close()
	p, err := s.start(ctx, "tpm2_unseal", nil, w, "-c", s.path("obj.ctx"), "-p", "pcr:"+selection(mask))
	w.Close()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			clear(dst)
		}
	}()
	n, rerr := io.ReadFull(r, dst)
	more := 0
	if rerr == nil {
		more, rerr = drain(r)
	}
	r.Close()
	if err := p.wait(ctx); err != nil {
		return err
	}
	if rerr != nil && rerr != io.ErrUnexpectedEOF && rerr != io.EOF {
		return fmt.Errorf("tpm2: reading tpm2_unseal's output: %w", rerr)
	}
	if n != len(dst) || more != 0 {
		return fmt.Errorf("tpm2: dst is %d bytes, the sealed secret %d: %w", len(dst), n+more, ErrArgument)
	}
	return nil
}

// Drifted reports whether the PCRs of b now differ from those it was sealed
// to, by recomputing the PolicyPCR digest from their current values. It
// does not unseal and makes no object in the TPM.
func Drifted(ctx context.Context, cfg Config, b *Binding) (bool, error) {
	mask, err := pcrMask(b.PCRs)
	if err != nil {
		return false, err
	}
	if b.Bank != "sha256" {
		return false, fmt.Errorf("tpm2: PCR bank %q: %w", b.Bank, ErrArgument)
	}
	release, err := acquire(ctx, cfg.TCTI)
	if err != nil {
		return false, err
	}
	defer release()
	s, err := newSession(cfg)
	if err != nil {
		return false, err
	}
	defer s.close()
	values, err := s.pcrValues(ctx, mask)
	if err != nil {
		return false, err
	}
	return policyPCR(mask, values) != b.PolicyDigest, nil
}

// begin takes the TCTI's turn, makes the session's directory and flushes
// what an earlier, interrupted operation may have left in the TPM. done
// flushes again (best effort: the next begin retries), removes the
// directory and gives the turn back.
func begin(ctx context.Context, cfg Config) (s *session, done func(), err error) {
	release, err := acquire(ctx, cfg.TCTI)
	if err != nil {
		return nil, nil, err
	}
	s, err = newSession(cfg)
	if err != nil {
		release()
		return nil, nil, err
	}
	done = func() {
		_ = s.flush(ctx)
		s.close()
		release()
	}
	if err := s.flush(ctx); err != nil {
		s.close()
		release()
		return nil, nil, err
	}
	return s, done, nil
}

func newSession(cfg Config) (*session, error) {
	dir, err := os.MkdirTemp("", "sealbox-tpm2-") // mode 0700
	if err != nil {
		return nil, fmt.Errorf("tpm2: %w", err)
	}
	return &session{cfg: cfg, dir: dir}, nil
}

func (s *session) close() { os.RemoveAll(s.dir) }

// primary makes the owner hierarchy's standard ECC primary key, saves its
// context to primary.ctx and flushes it (tools that use it load it again).
func (s *session) primary(ctx context.Context) error {
	if err := s.run(ctx, "tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc", "-c", s.path("primary.ctx")); err != nil {
		return err
	}
	return s.flushObjects(ctx)
}

// pcrValues reads the sha256 PCRs of mask, 32 bytes each in ascending order.
func (s *session) pcrValues(ctx context.Context, mask uint32) ([]byte, error) {
	if err := s.run(ctx, "tpm2_pcrread", selection(mask), "-o", s.path("pcrs")); err != nil {
		return nil, err
	}
	v, err := os.ReadFile(s.path("pcrs"))
	if err != nil {
		return nil, fmt.Errorf("tpm2: %w", err)
	}
	if want := 32 * bits.OnesCount32(mask); len(v) != want {
		return nil, fmt.Errorf("tpm2: tpm2_pcrread gave %d bytes of sha256 PCR values, want %d (is the sha256 bank allocated?)", len(v), want)
	}
	return v, nil
}

func readBlob(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tpm2: %w", err)
	}
	if len(b) > maxBlob {
		return nil, fmt.Errorf("tpm2: %s is %d bytes, at most %d", path, len(b), maxBlob)
	}
	return b, nil
}

// drain reads r to its end and counts the bytes, zeroing its buffer.
func drain(r io.Reader) (int, error) {
	var buf [64]byte
	defer clear(buf[:])
	total := 0
	for {
		n, err := r.Read(buf[:])
		total += n
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// turns holds one token per TCTI: without a resource manager, two
// operations on one TPM would flush each other's objects, so a process
// runs one at a time per TCTI. (Different processes must not share such a
// TPM; /dev/tpmrm0 is a resource manager.)
var turns sync.Map // string → chan struct{}

// acquire waits for tcti's turn, or until ctx ends.
func acquire(ctx context.Context, tcti string) (release func(), err error) {
	if tcti == "" {
		tcti = defaultTCTI
	}
	v, _ := turns.LoadOrStore(tcti, make(chan struct{}, 1))
	ch := v.(chan struct{})
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("tpm2: waiting for the TPM: %w: %w", ErrUnavailable, context.Cause(ctx))
	}
}
