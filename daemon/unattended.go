package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/tpm2"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// driftCheckTimeout bounds the check, after an unseal, of whether a tpm2
// slot's PCRs changed (a PCR read takes milliseconds).
const driftCheckTimeout = 2 * time.Second

// maxUnattendedSlots caps the slots tried at start: more come only from
// someone who can write the file, and each costs requests and records.
const maxUnattendedSlots = 32

// firstRetry is the wait before the first background retry; each further
// one doubles it, up to unattended_retry_max, with ±25 % jitter so that a
// rack of hosts does not retry in step.
const firstRetry = time.Second

// attempts is what status shows of the unattended slots.
type attempts struct {
	mu sync.Mutex
	m  map[string]*api.UnattendedAttempt
	// bound holds, per listed slot, the hash of the binding its entry is
	// about: a slot bound again under the same name since (unbind and
	// bind, rekey --keep-unattended) is another slot.
	bound map[string][32]byte
	// unsealMu makes one success the unseal: a second one finds the
	// daemon unsealed and stops.
	unsealMu sync.Mutex
	// stop, while attempts run, ends them: Seal calls it (an explicit seal
	// is not undone by a machine).
	stop context.CancelFunc
}

func (a *attempts) update(name string, fn func(at *api.UnattendedAttempt)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at := a.m[name]
	if at == nil {
		at = &api.UnattendedAttempt{Slot: name}
		a.m[name] = at
	}
	fn(at)
}

// modify changes name's entry if it is still listed (syncUnattended drops
// the entries of slots that are gone); it never adds one.
func (a *attempts) modify(name string, fn func(at *api.UnattendedAttempt)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if at := a.m[name]; at != nil {
		fn(at)
	}
}

// current reports whether s is still the slot its entry is about: listed,
// with the same binding.
func (a *attempts) current(s *keyring.Slot) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m[s.Name] != nil && a.bound[s.Name] == sha256.Sum256(s.Binding)
}

// track records the binding s's entry is about.
func (a *attempts) track(s *keyring.Slot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bound[s.Name] = sha256.Sum256(s.Binding)
}

func (a *attempts) list() []api.UnattendedAttempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]api.UnattendedAttempt, 0, len(a.m))
	for _, at := range a.m {
		c := *at
		c.Members = append([]api.MemberAttempt(nil), at.Members...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Slot < out[j].Slot })
	return out
}

func (d *Daemon) unattendedEnv() *unattended.Env {
	return &unattended.Env{
		Timeout:     d.cfg.UnattendedTimeout,
		DialTimeout: d.cfg.UnattendedDialTimeout,
		TPM:         tpm2.Config{TCTI: d.cfg.TPM2TCTI},
		HelperDir:   d.cfg.UnattendedHelpers,
	}
}

// runUnattended tries every unattended slot at once, each on its own, and
// unseals with the first that opens; the others are then cancelled. A slot
// that failed for a reason that may pass is retried in the background. It
// stops for good once the daemon is unsealed by any way, or an admin seals
// it (an explicit seal is not undone by a machine), or ctx ends.
//
// epoch is the vault's seal epoch before the admin socket took requests:
// any seal since then refuses an unattended unseal (unsealUnattended).
func (d *Daemon) runUnattended(ctx context.Context, epoch uint64) {
	slots, skipped, err := d.mgr.UnattendedSlots()
	if err != nil {
		d.log.Error("unattended slots could not be read; only an admin can unseal", "error", err)
		return
	}
	if len(skipped) > 0 {
		d.log.Error("slot records that do not decode are not tried (run: sealbox-admin check --as NAME)", "slots", skipped)
	}
	if len(slots) > maxUnattendedSlots {
		d.log.Error("too many unattended slots; only the first are tried", "slots", len(slots), "tried", maxUnattendedSlots)
		slots = slots[:maxUnattendedSlots]
	}
	if len(slots) == 0 {
		return
	}
	if d.cfg.UnattendedIdentity == "" {
		// Without a pin, a file writer could forge a whole state with an
		// unattended slot of their own: nothing is tried.
		const why = "not tried: unattended_identity is not set in the configuration (sealbox-admin bind and check --as NAME print it)"
		d.log.Warn("unattended unseal: " + why)
		for _, s := range slots {
			d.unattended.track(s)
			d.unattended.update(s.Name, func(at *api.UnattendedAttempt) {
				at.Method, at.State, at.Error = unattended.Describe(s.Kind, s.Binding), "off", why
			})
		}
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.unattended.mu.Lock()
	d.unattended.stop = cancel
	d.unattended.mu.Unlock()
	// Stop every attempt as soon as the daemon is unsealed, by whatever
	// way; Seal stops them when an admin seals.
	go func() {
		_, unsealed := d.vault.isSealed()
		select {
		case <-ctx.Done():
		case <-unsealed:
			cancel()
		}
	}()
	env := d.unattendedEnv()
	d.log.Info("unattended unseal: trying", "slots", len(slots))
	var wg sync.WaitGroup
	for _, s := range slots {
		d.unattended.track(s)
		d.unattended.update(s.Name, func(at *api.UnattendedAttempt) {
			at.Method, at.State = unattended.Describe(s.Kind, s.Binding), "trying"
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.trySlot(ctx, env, s, epoch)
		}()
	}
	wg.Wait()
	d.unattended.mu.Lock()
	for _, at := range d.unattended.m {
		if at.State == "trying" || at.State == "waiting" {
			at.State, at.NextTry = "stopped", nil
		}
	}
	d.unattended.mu.Unlock()
}

// syncUnattended makes status match the file after a bind, unbind or rekey
// through the daemon: a slot bound since the start is listed, not tried
// until the next start; one that is gone is no longer listed.
func (d *Daemon) syncUnattended() {
	slots, _, err := d.mgr.UnattendedSlots()
	if err != nil {
		return
	}
	d.unattended.mu.Lock()
	defer d.unattended.mu.Unlock()
	now := map[string]bool{}
	for _, s := range slots {
		now[s.Name] = true
		h := sha256.Sum256(s.Binding)
		if d.unattended.m[s.Name] == nil || d.unattended.bound[s.Name] != h {
			d.unattended.m[s.Name] = &api.UnattendedAttempt{Slot: s.Name, Method: unattended.Describe(s.Kind, s.Binding), State: "off",
				Error: "bound after sealboxd started: tried at its next start"}
			d.unattended.bound[s.Name] = h
		}
	}
	for name := range d.unattended.m {
		if !now[name] {
			delete(d.unattended.m, name)
			delete(d.unattended.bound, name)
		}
	}
}

// stopUnattended ends the unattended attempts, if any run.
func (d *Daemon) stopUnattended() {
	d.unattended.mu.Lock()
	defer d.unattended.mu.Unlock()
	if d.unattended.stop != nil {
		d.unattended.stop()
	}
}

func (d *Daemon) trySlot(ctx context.Context, env *unattended.Env, s *keyring.Slot, epoch uint64) {
	wait := firstRetry
	var lastRecorded string
	for {
		// Gone from status (unbound, or removed by a rekey, since the
		// start), or bound again under its name: the binding read at the
		// start is not tried again.
		if ctx.Err() != nil || !d.unattended.current(s) {
			return
		}
		kek, err := memlock.New(unattended.KeySize, memlock.Options{AllowUnlocked: true})
		if err != nil {
			d.log.Error("unattended unseal: no memory for a key", "slot", s.Name, "error", err)
			return
		}
		start := time.Now()
		d.unattended.modify(s.Name, func(at *api.UnattendedAttempt) {
			at.State, at.NextTry = "trying", nil
			at.Tries++
			t := start.UTC()
			at.LastTry = &t
		})
		r := unattended.Open(ctx, env, s.Kind, s.Binding, kek.Bytes())
		if ctx.Err() != nil {
			kek.Destroy()
			return // another way unsealed, an admin sealed, or shutdown
		}
		if r.Err == nil {
			r.Err = d.unsealUnattended(ctx, s, kek.Bytes(), r.Method, epoch)
		}
		kek.Destroy()
		d.unattended.modify(s.Name, func(at *api.UnattendedAttempt) {
			at.ElapsedMS = r.Elapsed.Milliseconds()
			at.Members = at.Members[:0]
			for _, m := range r.Members {
				ma := api.MemberAttempt{Method: m.Method, ElapsedMS: m.Elapsed.Milliseconds()}
				switch {
				case m.Err == nil:
				case errors.Is(m.Err, context.Canceled):
					ma.Error = "not asked to finish: the attempt ended first"
				default:
					ma.Error = unattended.Brief(m.Err)
				}
				at.Members = append(at.Members, ma)
			}
			at.Error = ""
			if r.Err != nil {
				at.Error = unattended.Brief(r.Err)
			}
		})
		if r.Err == nil {
			d.unattended.modify(s.Name, func(at *api.UnattendedAttempt) { at.State = "unsealed" })
			return
		}
		if errors.Is(r.Err, errAlreadyUnsealed) {
			d.unattended.modify(s.Name, func(at *api.UnattendedAttempt) { at.State, at.Error = "stopped", "" })
			return
		}
		transient, answered := unattended.Transient(r.Err), unattended.Answered(r.Err)
		retry := (transient || answered) && d.cfg.UnattendedRetryMax > 0
		brief := unattended.Brief(r.Err)
		d.log.Warn("unattended unseal: attempt failed", "slot", s.Name, "method", r.Method, "elapsed", r.Elapsed.Round(time.Millisecond).String(), "retry", retry, "error", brief)
		// A failure is recorded when its reason changes, not at every
		// retry: a server down for a day is one record, not hundreds. The
		// reason is the failure's kind, not its text, which whoever
		// answers can vary at every try.
		if _, rec := r.Err.(recorded); !rec && r.Reason() != lastRecorded {
			lastRecorded = r.Reason()
			d.audit.Read(keyring.Events, audit.Event{Kind: audit.KindUnseal, Actor: s.Name, Outcome: audit.Failed, Detail: r.Method + ": " + brief})
		}
		if !retry {
			d.unattended.modify(s.Name, func(at *api.UnattendedAttempt) { at.State = "failed" })
			return
		}
		if answered {
			// A server's "no" is tried again only at the slowest pace.
			wait = d.cfg.UnattendedRetryMax
		}
		wait = min(wait, d.cfg.UnattendedRetryMax)
		// ±25 % jitter, so that a rack does not retry in step, and never
		// more than unattended_retry_max apart.
		j := min(wait*3/4+rand.N(wait/2+1), d.cfg.UnattendedRetryMax)
		next := time.Now().Add(j)
		d.unattended.modify(s.Name, func(at *api.UnattendedAttempt) {
			t := next.UTC()
			at.State, at.NextTry = "waiting", &t
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(j):
		}
		wait *= 2
	}
}

var errAlreadyUnsealed = errors.New("already unsealed")

// recorded marks a failure the admin package recorded itself; its text is
// the failure's own (status and the log show it).
type recorded struct{ error }

func (r recorded) Unwrap() error { return r.error }

// unsealUnattended unseals with the key an unattended slot's binding gave:
// the same verification and record as an admin's unseal.
func (d *Daemon) unsealUnattended(ctx context.Context, s *keyring.Slot, kek []byte, method string, epoch uint64) error {
	d.unattended.unsealMu.Lock()
	defer d.unattended.unsealMu.Unlock()
	if sealed, _ := d.vault.isSealed(); !sealed || d.vault.sealEpoch() != epoch {
		return errAlreadyUnsealed
	}
	for try := 0; ; try++ {
		u, err := d.mgr.UnsealKEK(ctx, s.Name, kek, method, d.cfg.UnattendedIdentity)
		if err != nil {
			return recorded{err}
		}
		switch err := d.install(u, s.Name, epoch, "slot", s.Name, "method", method); {
		case err == nil:
			return nil
		case errors.Is(err, errRotatedMeanwhile) && try < 2:
			// It read the secret before a rotate committed: read again.
			continue
		case errors.Is(err, errRotatedMeanwhile):
			return err
		default:
			return errAlreadyUnsealed
		}
	}
}

// resealHook is admin.Options.Reseal: after an unseal, a tpm2 slot (or a
// threshold with a tpm2 member) whose PCRs drifted is sealed again to the
// current values. The check runs inside an admin's unseal request, so a
// TPM that does not answer costs at most driftCheckTimeout per slot.
func (d *Daemon) resealHook(ctx context.Context, s *keyring.Slot) (func(kek []byte) ([]byte, error), string, error) {
	env := d.unattendedEnv()
	check := d.unattendedEnv()
	check.Timeout = min(env.Timeout, driftCheckTimeout)
	// The whole check, every tpm2 member of a threshold included, within
	// driftCheckTimeout; and none of it past the daemon's stop.
	cctx, cancel := context.WithTimeout(ctx, driftCheckTimeout)
	defer cancel()
	stop := context.AfterFunc(d.stopCtx, cancel)
	defer stop()
	need, why, err := unattended.NeedsReseal(cctx, check, s.Kind, s.Binding)
	if err != nil || !need {
		return nil, "", err
	}
	return func(kek []byte) ([]byte, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(d.stopCtx, cancel)
		defer stop()
		return unattended.Remake(ctx, env, s.Kind, s.Binding, kek)
	}, why, nil
}

func (d *Daemon) logResealed(u *admin.Unsealed) {
	for _, name := range u.Resealed {
		d.log.Info("unattended slot sealed again to the current PCR values", "slot", name)
	}
	for _, err := range u.ResealErrors {
		d.log.Warn("unattended slot could not be checked or sealed again", "error", err)
	}
}
