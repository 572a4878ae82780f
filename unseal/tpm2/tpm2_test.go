package tpm2

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func secret(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(0xA0 + i)
	}
	return p
}

// TestSealUnseal: a round trip to PCR 7; the binding parses and marshals
// back to the same bytes; its policy digest is the one the TPM computes
// (tpm2_createpolicy); Drifted is false; repeated use leaves nothing behind
// in a TPM without a resource manager; and timings.
func TestSealUnseal(t *testing.T) {
	t.Parallel()
	tpm := startSWTPM(t)
	ctx := testCtx(t)
	want := secret(32)

	t0 := time.Now()
	binding, err := Seal(ctx, tpm.cfg(), want, []int{7})
	sealTime := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 32)
	t0 = time.Now()
	if err := Unseal(ctx, tpm.cfg(), binding, got); err != nil {
		t.Fatal(err)
	}
	unsealTime := time.Since(t0)
	if !bytes.Equal(got, want) {
		t.Fatalf("unsealed %x, want %x", got, want)
	}
	t.Logf("swtpm: seal %v, unseal %v", sealTime, unsealTime)

	b, err := Parse(binding)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Marshal(), binding) {
		t.Fatal("Marshal(Parse(binding)) differs from binding")
	}
	if b.Bank != "sha256" || fmt.Sprint(b.PCRs) != "[7]" || len(b.Public) != 80 {
		t.Fatalf("binding: bank %s, PCRs %v, pub %d bytes, priv %d bytes", b.Bank, b.PCRs, len(b.Public), len(b.Private))
	}
	t.Logf("binding %d bytes (pub %d, priv %d)", len(binding), len(b.Public), len(b.Private))

	pol := filepath.Join(t.TempDir(), "policy")
	tpm.tool("tpm2_createpolicy", "--policy-pcr", "-l", "sha256:7", "-L", pol)
	tpmDigest, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tpmDigest, b.PolicyDigest[:]) {
		t.Fatalf("policy digest %x, the TPM's %x", b.PolicyDigest, tpmDigest)
	}

	if d, err := Drifted(ctx, tpm.cfg(), b); err != nil || d {
		t.Fatalf("Drifted = %v, %v; want false", d, err)
	}

	// swtpm keeps only a few transient objects: leftovers would show as
	// TPM_RC_OBJECT_MEMORY within a few rounds.
	for i := range 5 {
		p := secret(1 + i*15)
		bi, err := Seal(ctx, tpm.cfg(), p, []int{0, 7, 23})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		g := make([]byte, len(p))
		if err := Unseal(ctx, tpm.cfg(), bi, g); err != nil || !bytes.Equal(g, p) {
			t.Fatalf("round %d: %v, %x", i, err, g)
		}
	}
}

// TestWrongLengthDst: a buffer shorter or longer than the secret is
// refused, and left zeroed.
func TestWrongLengthDst(t *testing.T) {
	t.Parallel()
	tpm := startSWTPM(t)
	ctx := testCtx(t)
	binding, err := Seal(ctx, tpm.cfg(), secret(32), []int{7})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{31, 33, 1, 64} {
		dst := bytes.Repeat([]byte{0xEE}, n)
		err := Unseal(ctx, tpm.cfg(), binding, dst)
		if !errors.Is(err, ErrArgument) {
			t.Errorf("dst of %d bytes: %v, want ErrArgument", n, err)
		}
		if !bytes.Equal(dst, make([]byte, n)) {
			t.Errorf("dst of %d bytes not zeroed: %x", n, dst)
		}
	}
	for _, n := range []int{0, 65} {
		if err := Unseal(ctx, tpm.cfg(), binding, make([]byte, n)); !errors.Is(err, ErrArgument) {
			t.Errorf("dst of %d bytes: %v, want ErrArgument", n, err)
		}
	}
	for _, p := range [][]byte{nil, secret(65)} {
		if _, err := Seal(ctx, tpm.cfg(), p, []int{7}); !errors.Is(err, ErrArgument) {
			t.Errorf("Seal of %d bytes: %v, want ErrArgument", len(p), err)
		}
	}
	for _, pcrs := range [][]int{nil, {24}, {-1}, {7, 7}} {
		if _, err := Seal(ctx, tpm.cfg(), secret(8), pcrs); !errors.Is(err, ErrArgument) {
			t.Errorf("Seal to PCRs %v: %v, want ErrArgument", pcrs, err)
		}
	}
}

// TestExtendThenReboot: extending PCR 7 makes Unseal fail with ErrPolicy
// and Drifted true; a reboot (swtpm restarted on the same state: PCRs
// reset, same seeds) makes the old binding unseal again.
func TestExtendThenReboot(t *testing.T) {
	t.Parallel()
	tpm := startSWTPM(t)
	ctx := testCtx(t)
	want := secret(32)
	binding, err := Seal(ctx, tpm.cfg(), want, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Parse(binding)
	if d, err := Drifted(ctx, tpm.cfg(), b); err != nil || d {
		t.Fatalf("before the extend: Drifted = %v, %v; want false", d, err)
	}

	tpm.tool("tpm2_pcrextend", "7:sha256="+strings.Repeat("ab", 32))
	got := make([]byte, 32)
	err = Unseal(ctx, tpm.cfg(), binding, got)
	if !errors.Is(err, ErrPolicy) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("after the extend: %v, want ErrPolicy", err)
	}
	t.Logf("after the extend: %v", err)
	if !bytes.Equal(got, make([]byte, 32)) {
		t.Fatal("dst not zero after a failed unseal")
	}
	if d, err := Drifted(ctx, tpm.cfg(), b); err != nil || !d {
		t.Fatalf("after the extend: Drifted = %v, %v; want true", d, err)
	}

	tpm.restart()
	if d, err := Drifted(ctx, tpm.cfg(), b); err != nil || d {
		t.Fatalf("after the reboot: Drifted = %v, %v; want false", d, err)
	}
	if err := Unseal(ctx, tpm.cfg(), binding, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the reboot: %v, %x", err, got)
	}
}

// TestOtherTPM: a binding sealed on one TPM fails cleanly on another
// (different seeds): ErrBinding, not ErrPolicy, nothing unsealed.
func TestOtherTPM(t *testing.T) {
	t.Parallel()
	a, b := startSWTPM(t), startSWTPM(t)
	ctx := testCtx(t)
	binding, err := Seal(ctx, a.cfg(), secret(32), []int{7})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 32)
	err = Unseal(ctx, b.cfg(), binding, got)
	if !errors.Is(err, ErrBinding) || errors.Is(err, ErrPolicy) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("on another TPM: %v, want ErrBinding", err)
	}
	t.Logf("on another TPM: %v", err)
	if !bytes.Equal(got, make([]byte, 32)) {
		t.Fatal("dst not zero")
	}
	// The other TPM still works, and so does the first.
	if err := Unseal(ctx, a.cfg(), binding, got); err != nil {
		t.Fatal(err)
	}
}

// TestUnavailable: a stopped swtpm (gone: refused; frozen by SIGSTOP:
// hung), missing tools and a missing device all give ErrUnavailable, and
// within the context's deadline of 2 s: a hung tool is killed with its
// process group.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	tpm := startSWTPM(t)
	binding, err := Seal(testCtx(t), tpm.cfg(), secret(32), []int{7})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Parse(binding)

	check := func(name string, cfg Config) {
		t.Helper()
		for op, f := range map[string]func(context.Context) error{
			"Seal":    func(ctx context.Context) error { _, err := Seal(ctx, cfg, secret(32), []int{7}); return err },
			"Unseal":  func(ctx context.Context) error { return Unseal(ctx, cfg, binding, make([]byte, 32)) },
			"Drifted": func(ctx context.Context) error { _, err := Drifted(ctx, cfg, b); return err },
		} {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			t0 := time.Now()
			err := f(ctx)
			took := time.Since(t0)
			cancel()
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s, %s: %v, want ErrUnavailable", name, op, err)
			}
			if took > 4*time.Second { // a hung tool sleeps far longer
				t.Errorf("%s, %s: took %v, beyond the 2 s deadline", name, op, took)
			}
			t.Logf("%s, %s: %v after %v", name, op, err, took.Round(time.Millisecond))
		}
	}

	tpm.Freeze()
	check("swtpm frozen", tpm.cfg())
	tpm.stop()
	check("swtpm gone", tpm.cfg())
	check("no tools", Config{TCTI: tpm.cfg().TCTI, Tools: t.TempDir()})
	check("no device", Config{TCTI: "device:" + filepath.Join(t.TempDir(), "tpmrm0")})
}

// TestSecretStaysOffArgvAndDisk runs every tool through a wrapper that
// records its argv, its environment and, after it ran, every file in its
// working directory (the private temp dir), and checks that a marker
// sealed and unsealed appears in none; that the TCTI reached the children
// and not this process; that the directory was 0700 and is gone.
func TestSecretStaysOffArgvAndDisk(t *testing.T) {
	t.Parallel()
	tpm := startSWTPM(t)
	ctx := testCtx(t)
	wrap := t.TempDir()
	log := filepath.Join(t.TempDir(), "log")
	for _, tool := range tools[1:] {
		real, _ := exec.LookPath(tool)
		script := fmt.Sprintf(`#!/bin/sh
log=%q
{ echo "== $0 $* (dir $(pwd), mode $(stat -c %%a .))"; env; } >>"$log"
%q "$@"; rc=$?
for f in *; do [ -f "$f" ] && { echo "-- $f"; od -An -tx1 "$f"; } >>"$log"; done
exit $rc
`, log, real)
		if err := os.WriteFile(filepath.Join(wrap, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := tpm.cfg()
	cfg.Tools = wrap
	marker := []byte("MARKER-5ea1b0x-not-in-argv")
	binding, err := Seal(ctx, cfg, marker, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(marker))
	if err := Unseal(ctx, cfg, binding, got); err != nil || !bytes.Equal(got, marker) {
		t.Fatalf("%v, %q", err, got)
	}
	tpm.tool("tpm2_pcrextend", "7:sha256="+strings.Repeat("cd", 32))
	if err := Unseal(ctx, cfg, binding, got); !errors.Is(err, ErrPolicy) || bytes.Contains([]byte(err.Error()), marker) {
		t.Fatalf("after the extend: %v", err)
	}

	rec, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	text := string(rec)
	hexMarker := hex.EncodeToString(marker)
	odText := strings.Join(strings.Fields(text), "")
	if strings.Contains(text, string(marker)) || strings.Contains(odText, hexMarker) {
		t.Fatal("the marker is in a tool's argv, environment or a temporary file")
	}
	for _, want := range []string{"TPM2TOOLS_TCTI=" + cfg.TCTI, "tpm2_create -C", "-i -", "tpm2_unseal -c", "-p pcr:sha256:7", "mode 700", "-- obj.priv"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if v, ok := os.LookupEnv("TPM2TOOLS_TCTI"); ok {
		t.Errorf("this process has TPM2TOOLS_TCTI=%s", v)
	}
	for l := range strings.SplitSeq(text, "\n") {
		if _, rest, ok := strings.Cut(l, "(dir "); ok {
			dir, _, _ := strings.Cut(rest, ",")
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("temp dir %s left behind", dir)
			}
		}
	}
}

// TestConcurrent: operations on one TPM without a resource manager, from
// several goroutines at once, all succeed: the package takes turns, so no
// operation flushes another's objects.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	tpm := startSWTPM(t)
	ctx := testCtx(t)
	want := secret(32)
	binding, err := Seal(ctx, tpm.cfg(), want, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Parse(binding)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range 3 {
				got := make([]byte, 32)
				if err := Unseal(ctx, tpm.cfg(), binding, got); err != nil || !bytes.Equal(got, want) {
					t.Errorf("goroutine %d: %v", g, err)
				}
				if _, err := Seal(ctx, tpm.cfg(), want, []int{7}); err != nil {
					t.Errorf("goroutine %d: %v", g, err)
				}
				if d, err := Drifted(ctx, tpm.cfg(), b); err != nil || d {
					t.Errorf("goroutine %d: Drifted %v, %v", g, d, err)
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkSeal and BenchmarkUnseal time one operation on swtpm, process
// starts included.
func BenchmarkSeal(b *testing.B) {
	tpm := startSWTPM(b)
	ctx := testCtx(b)
	for b.Loop() {
		if _, err := Seal(ctx, tpm.cfg(), secret(32), []int{7}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnseal(b *testing.B) {
	tpm := startSWTPM(b)
	ctx := testCtx(b)
	binding, err := Seal(ctx, tpm.cfg(), secret(32), []int{7})
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 32)
	for b.Loop() {
		if err := Unseal(ctx, tpm.cfg(), binding, dst); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDrifted(b *testing.B) {
	tpm := startSWTPM(b)
	ctx := testCtx(b)
	binding, err := Seal(ctx, tpm.cfg(), secret(32), []int{7})
	if err != nil {
		b.Fatal(err)
	}
	bi, _ := Parse(binding)
	for b.Loop() {
		if _, err := Drifted(ctx, tpm.cfg(), bi); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHungUnsealKilled: a tpm2_unseal that hangs while a child of its own
// holds the output pipe (a shell running sleep) is killed with its whole
// process group when the context ends, so Unseal returns ErrUnavailable
// at the deadline instead of waiting for the pipe to close.
func TestHungUnsealKilled(t *testing.T) {
	t.Parallel()
	tpm := startSWTPM(t)
	binding, err := Seal(testCtx(t), tpm.cfg(), secret(32), []int{7})
	if err != nil {
		t.Fatal(err)
	}
	wrap := t.TempDir()
	for _, tool := range tools[1:] {
		real, _ := exec.LookPath(tool)
		script := fmt.Sprintf("#!/bin/sh\nexec %q \"$@\"\n", real)
		if tool == "tpm2_unseal" {
			script = "#!/bin/sh\nsleep 30\necho late\n"
		}
		if err := os.WriteFile(filepath.Join(wrap, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := tpm.cfg()
	cfg.Tools = wrap
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	t0 := time.Now()
	err = Unseal(ctx, cfg, binding, make([]byte, 32))
	took := time.Since(t0)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want ErrUnavailable (deadline)", err)
	}
	// The stub sleeps 30 s: 2 s of slack tells the deadline from the hang
	// without failing on a loaded machine.
	if took > 3*time.Second {
		t.Fatalf("took %v with a 1 s deadline", took)
	}
	// The TPM is fine afterwards: the next operation flushes what the
	// interrupted one left.
	got := make([]byte, 32)
	if err := Unseal(testCtx(t), tpm.cfg(), binding, got); err != nil || !bytes.Equal(got, secret(32)) {
		t.Fatalf("after the hang: %v", err)
	}
}
