package main

// What an admin used to cryptsetup expects: slots (luksDump), check --as
// through the daemon (--test-passphrase), unlock (clear a lockout), explicit
// Argon2id parameters and policy set (luksConvertKey, lazily), and
// export-secret (--dump-volume-key, from a backup).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// slotOpts are the flags of these commands (part of opts).
type slotOpts struct {
	kdfMemory, kdfIterations, kdfParallelism uint
	out                                      string
	force                                    bool
}

func kdfFlags(fs *flag.FlagSet, o *opts) {
	fs.UintVar(&o.kdfMemory, "kdf-memory", 0, "Argon2id memory in `MiB` (never below 64, at most 4096)")
	fs.UintVar(&o.kdfIterations, "kdf-iterations", 0, "Argon2id passes, `t` (never below 3, at most 16)")
	fs.UintVar(&o.kdfParallelism, "kdf-parallelism", 0, "Argon2id lanes, `p` (never below 4, at most 16)")
}

// kdf returns the explicit Argon2id parameters the flags give (zero fields
// for those not given), or nil when none is given. Values out of range are
// a usage error, found before any password is asked for.
func (o *slotOpts) kdf() (*keyring.Params, error) {
	if o.kdfMemory == 0 && o.kdfIterations == 0 && o.kdfParallelism == 0 {
		return nil, nil
	}
	f := unseal.Floor()
	switch {
	case o.kdfMemory != 0 && (o.kdfMemory < uint(f.MemoryKiB>>10) || o.kdfMemory > unseal.MaxMemoryKiB>>10):
		return nil, usagef("--kdf-memory: want %d to %d MiB, got %d", f.MemoryKiB>>10, unseal.MaxMemoryKiB>>10, o.kdfMemory)
	case o.kdfIterations != 0 && (o.kdfIterations < uint(f.Time) || o.kdfIterations > unseal.MaxTime):
		return nil, usagef("--kdf-iterations: want %d to %d, got %d", f.Time, unseal.MaxTime, o.kdfIterations)
	case o.kdfParallelism != 0 && (o.kdfParallelism < uint(f.Threads) || o.kdfParallelism > unseal.MaxThreads):
		return nil, usagef("--kdf-parallelism: want %d to %d, got %d", f.Threads, unseal.MaxThreads, o.kdfParallelism)
	}
	return &keyring.Params{Time: uint32(o.kdfIterations), MemoryKiB: uint32(o.kdfMemory << 10), Threads: uint8(o.kdfParallelism)}, nil
}

// The backends' versions of what these commands need.

func (o *offline) Slots(context.Context) (*admin.SlotsView, error) { return o.Manager.Slots() }

func (o *online) AddAdminWith(ctx context.Context, actor string, apw []byte, name string, npw []byte, kdf *keyring.Params) error {
	o.deriving(actor)
	return o.Client.AddAdminWith(ctx, actor, apw, name, npw, kdf)
}

func (o *online) PasswdWith(ctx context.Context, name string, cur, npw []byte, kdf *keyring.Params) error {
	o.deriving(name)
	return o.Client.PasswdWith(ctx, name, cur, npw, kdf)
}

func (o *online) Unlock(ctx context.Context, actor string, apw []byte, name string) (uint32, error) {
	o.deriving(actor)
	return o.Client.Unlock(ctx, actor, apw, name)
}

func (o *online) SetPolicyFields(ctx context.Context, actor string, apw []byte, p keyring.Params) (keyring.Params, error) {
	o.deriving(actor)
	return o.Client.SetPolicyFields(ctx, actor, apw, p)
}

func (c *cli) slots(o *opts) error {
	b, err := c.backend()
	if err != nil {
		return err
	}
	defer b.Close()
	v, err := b.Slots(c.ctx)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(c.stdout, v)
	}
	fmt.Fprintf(c.stdout, "kdf policy: %v for new slots (floor %v)\n", v.Policy, v.Floor)
	if v.GlobalFailures > 0 {
		fmt.Fprintf(c.stdout, "all names:  %d failed attempts by non-root callers%s\n", v.GlobalFailures, backoffText(v.GlobalBackoffSeconds))
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tARGON2ID\tCREATED\tLAST USED\tFAILURES\tSTATE")
	below := 0
	var bindings []string
	for _, s := range v.Slots {
		last := "-"
		if s.LastUsed != nil {
			last = s.LastUsed.Format(time.RFC3339)
		}
		failures := fmt.Sprint(s.Failures)
		if s.RootFailures > 0 {
			failures += fmt.Sprintf(" (+%d root)", s.RootFailures)
		}
		failures += backoffText(s.BackoffSeconds)
		var state []string
		switch {
		case s.Invite == "expired":
			state = append(state, "invite expired")
		case s.Invite == "pending":
			state = append(state, "invite pending until "+s.Expires.Format(time.RFC3339))
		case s.Stale:
			state = append(state, "stale: invite again")
		}
		if s.Pending {
			state = append(state, "rekey pending")
		}
		if s.BelowPolicy {
			state = append(state, "below policy")
			below++
		}
		if s.Legacy && !s.Stale {
			state = append(state, "format-1 layout")
		}
		if len(state) == 0 {
			state = append(state, "ok")
		}
		kdf := fmt.Sprintf("t=%d m=%dMiB p=%d", s.Time, s.Memory>>10, s.Threads)
		if s.Binding != "" {
			kdf = "- (bound)"
			bindings = append(bindings, fmt.Sprintf("  %s: %s", s.Name, s.Binding))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Kind, kdf,
			s.Created.Format(time.RFC3339), last, failures, strings.Join(state, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(bindings) > 0 {
		fmt.Fprintf(c.stdout, "unattended slots (as the file says; verified when they open):\n%s\n", strings.Join(bindings, "\n"))
	}
	if below > 0 {
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: a slot below policy is rewrapped at its owner's next login; to do it now, its owner runs: sealbox-admin check --as NAME")
	}
	fmt.Fprintln(c.stderr, "sealbox-admin: hint: none of this is verified without a password: check --as NAME verifies the whole file")
	return nil
}

func backoffText(sec int64) string {
	if sec <= 0 {
		return ""
	}
	return fmt.Sprintf(", refused for %v", time.Duration(sec)*time.Second)
}

func (c *cli) unlock(o *opts) error {
	name := o.pos[0]
	if err := keyring.ValidName(name); err != nil {
		return usagef("admin name: %v", err)
	}
	return c.asActor(o, func(b backend, apw []byte) error {
		n, err := b.Unlock(c.ctx, o.as, apw, name)
		if err != nil {
			return err
		}
		if n == 0 {
			fmt.Fprintf(c.stdout, "no failed attempts are counted against %s (your login cleared your own)\n", name)
			return nil
		}
		fmt.Fprintf(c.stdout, "cleared %d failed attempts at %s: the next try is not delayed\n", n, name)
		return nil
	})
}

func (c *cli) policySet(o *opts) error {
	p, err := o.kdf()
	if err != nil {
		return err
	}
	if p == nil {
		return usagef("policy set needs --kdf-memory, --kdf-iterations or --kdf-parallelism")
	}
	return c.asActor(o, func(b backend, apw []byte) error {
		set, err := b.SetPolicyFields(c.ctx, o.as, apw, *p)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "kdf policy for new slots: %v\n", set)
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: each slot below it is rewrapped at its owner's next login (unseal, check --as NAME, any change); sealbox-admin slots shows which still are")
		return nil
	})
}

// onlineCheck is check --as NAME through the daemon: the same derivation,
// budget and backoff as an unseal, and the state (sealed or not) unchanged.
func (c *cli) onlineCheck(o *opts) error {
	if o.repair {
		return usagef("--repair works on the file: stop the daemon, then: sealbox-admin --keyring PATH check --as NAME --repair")
	}
	if o.as == "" {
		return usagef("through the daemon, check needs --as NAME (the file's pages are checked offline: --keyring PATH check)")
	}
	ac := api.NewClient(c.adminSocket())
	defer ac.Close()
	if _, err := ac.Status(c.ctx); err != nil { // unreachable: ask for nothing
		return err
	}
	pw, err := c.pw.Password(o.as + "'s password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(pw)
	c.begin("sealboxd is deriving " + o.as + "'s key (Argon2id)")
	res, err := ac.CheckKeyring(c.ctx, o.as, pw)
	c.end()
	if err != nil {
		return err
	}
	return c.printCheck(o, res)
}

// printCheck shows what check --as found, and fails (integrity) if
// anything did not verify.
func (c *cli) printCheck(o *opts, res *admin.CheckResult) error {
	if o.json {
		if err := writeJSON(c.stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "datakey: ok (%s's slot opens it; master secret version %d decrypts, %d bytes)\n", o.as, res.SecretVersion, res.SecretBytes)
		for _, f := range res.Report.Findings {
			fmt.Fprintf(c.stdout, "FAIL %s\n", f)
		}
		if res.Report.OK() {
			fmt.Fprintf(c.stdout, "state: ok (the state root, generation %d, covers every record, and each matches)\n", res.Generation)
		}
		switch {
		case res.AuditProblem != "":
			fmt.Fprintf(c.stdout, "FAIL audit: %s\n", res.AuditProblem)
		case res.Audit != nil:
			fmt.Fprintf(c.stdout, "audit: ok (%d event records, %d read records)\n", res.Audit.Events.Records, res.Audit.Reads.Records)
		}
		switch {
		case res.IdentityProblem != "":
			fmt.Fprintf(c.stdout, "FAIL identity: %s\n", res.IdentityProblem)
		case res.Identity != "":
			fmt.Fprintf(c.stdout, "identity: %s (unattended_identity in sealboxd's configuration)\n", res.Identity)
		}
		if len(res.HandedOver) > 0 {
			fmt.Fprintf(c.stdout, "FAIL unattended slots %s hold the DataKey under a hand-over key from a rekey by an earlier sealbox: whoever held the DataKey before that rekey (a removed admin) can read the current one from them; rekey again to bind them anew\n", strings.Join(res.HandedOver, ", "))
		}
	}
	if !res.OK() {
		problems := len(res.Report.Findings) + map[bool]int{true: 1}[res.AuditProblem != ""] + map[bool]int{true: 1}[res.IdentityProblem != ""] + map[bool]int{true: 1}[len(res.HandedOver) > 0]
		if len(res.Report.Findings) == 0 && res.AuditProblem == "" && res.IdentityProblem == "" {
			return fmt.Errorf("%w: unattended slots %s need a rekey (sealbox-admin rekey --as %s)", unseal.ErrIntegrity, strings.Join(res.HandedOver, ", "), o.as)
		}
		return fmt.Errorf("%w: %d problems (to see what a repair would do: check --as %s --repair, on the file)", unseal.ErrIntegrity, problems, o.as)
	}
	return nil
}

// errOutExists: export-secret never replaces a file.
var errOutExists = errclass.New(errclass.Refused, "the output file exists; export-secret never replaces a file: choose a new name")

// errOutReplaced: the output file was moved away while the export ran.
var errOutReplaced = errclass.New(errclass.Refused, "the output file was moved or replaced while the export ran (someone else can write its directory?): the secret was not left in it; export to a directory only you can write")

// stillAt reports whether path names the file f is open on (not through a
// symlink).
func stillAt(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	li, err := os.Lstat(path)
	return err == nil && os.SameFile(fi, li)
}

// exportSecret writes the master secret of a keyring file (a backup, with
// no daemon) to a new file, after the file verified under NAME's password.
func (c *cli) exportSecret(o *opts) error {
	toStdout := o.out == "-"
	if toStdout {
		if isTerminal(c.stdout) && !o.force {
			return usagef("refusing to write the master secret to a terminal (scrollback, screen sharing): give --out FILE, pipe it, or add --force")
		}
	} else if _, err := os.Lstat(o.out); err == nil {
		return fmt.Errorf("%w: %s", errOutExists, o.out)
	}
	// Open the file read-write, so that the export is an attempt like any
	// other (backoff) and is recorded; a backup the caller may not write
	// (read-only media, mode 0400) is opened read-only and exported
	// without either.
	kr, err := keyring.Open(c.global.keyring, keyring.Options{})
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		kr, err = keyring.Open(c.global.keyring, keyring.Options{ReadOnly: true})
	}
	if err != nil {
		return err
	}
	defer kr.Close()
	m := admin.New(kr, admin.Options{Memory: c.memory(), Progress: c.progress})
	pw, err := c.pw.Password(o.as + "'s password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(pw)
	// The name is claimed before anything is derived (O_EXCL: never
	// replaced, never followed), so that an export that is recorded has
	// somewhere to go, and removed again if the export fails.
	var out *os.File
	if !toStdout {
		if out, err = os.OpenFile(o.out, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w: %s", errOutExists, o.out)
			}
			return fmt.Errorf("creating %s: %w", o.out, err)
		}
		defer func() {
			if out != nil { // not written through: nothing is left
				if stillAt(out, o.out) {
					os.Remove(o.out)
				}
				out.Close()
			}
		}()
	}
	buf, audited, err := m.ExportSecret(c.ctx, o.as, pw)
	if err != nil {
		return err
	}
	defer buf.Destroy()
	if toStdout {
		if _, err := c.stdout.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("writing the secret: %w", err)
		}
	} else {
		// Whoever can write the directory may have moved the file aside
		// and put one of theirs under its name meanwhile: the secret goes
		// only into the file that is still at --out, and is taken back out
		// of one that was moved while it was written.
		if !stillAt(out, o.out) {
			return fmt.Errorf("%w: %s", errOutReplaced, o.out)
		}
		_, err := out.Write(buf.Bytes())
		if err == nil {
			err = out.Sync()
		}
		if err == nil && !stillAt(out, o.out) {
			err = errOutReplaced
			if terr := out.Truncate(0); terr == nil {
				_ = out.Sync()
			}
		}
		if err == nil {
			err = out.Close()
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", o.out, err)
		}
		out = nil
		fmt.Fprintf(c.stderr, "sealbox-admin: wrote the master secret (%d bytes) to %s, mode 0600\n", len(buf.Bytes()), o.out)
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: the file holds the master secret in the clear: move it where it is needed, then shred it")
	}
	if !audited {
		fmt.Fprintln(c.stderr, "sealbox-admin: warning: the keyring is read-only here, so this export is not in its audit log")
	}
	return nil
}

// isTerminal reports whether w is a terminal, through the wrapper that
// ends a progress line first.
func isTerminal(w io.Writer) bool {
	if e, ok := w.(endFirst); ok {
		w = e.w
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// initPolicy is init's policy from explicit parameters: those given, the
// floor's for the others; nil (calibrate) when none is given.
func initPolicy(kdf *keyring.Params) *keyring.Params {
	if kdf == nil {
		return nil
	}
	p := admin.FillParams(*kdf, unseal.Floor())
	return &p
}
