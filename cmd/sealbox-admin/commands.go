package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

func asFlag(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.as, "as", "", "the acting admin, `actor` (their password is prompted)")
}

func jsonFlag(fs *flag.FlagSet, o *opts) {
	fs.BoolVar(&o.json, "json", false, "print JSON")
}

func (c *cli) memory() memlock.Options {
	// A short-lived CLI may run where mlock is not allowed; its buffers are
	// still kept out of core dumps, and the process is not dumpable.
	return memlock.Options{AllowUnlocked: true}
}

func (c *cli) init(o *opts) error {
	if err := keyring.ValidName(o.admin); err != nil {
		return usagef("--admin: %v", err)
	}
	target, err := time.ParseDuration(o.kdfTime)
	if err != nil || target < 0 || target > time.Minute {
		return usagef("--kdf-time: want a duration from 0s to 1m, like 1s or 500ms")
	}
	if o.kdfMaxMemory < 64 || o.kdfMaxMemory > 4096 {
		return usagef("--kdf-max-memory: want 64 to 4096 (MiB)")
	}
	kdf, err := o.kdf()
	if err != nil {
		return err
	}
	if initPolicy(kdf) != nil && (o.set["kdf-time"] || o.set["kdf-max-memory"]) {
		return usagef("--kdf-time and --kdf-max-memory calibrate; --kdf-memory, --kdf-iterations and --kdf-parallelism set the cost outright: give one or the other")
	}
	if _, err := os.Lstat(c.global.keyring); err == nil {
		return fmt.Errorf("%w: %s (it was left untouched)", keyring.ErrExists, c.global.keyring)
	}
	var secret []byte
	if o.secretFile != "" {
		if secret, err = readSecretFile(o.secretFile); err != nil {
			return err
		}
	} else {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return err
		}
	}
	defer memlock.Wipe(secret)
	pw, err := c.pw.NewPassword(o.admin + "'s new password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(pw)
	// Explicit parameters replace the calibration.
	policy := initPolicy(kdf)
	if policy == nil {
		p := c.calibrate(target, uint32(o.kdfMaxMemory)<<10)
		policy = &p
	}
	err = admin.Init(c.ctx, c.global.keyring, o.admin, pw, secret, admin.Options{
		Policy: policy, Memory: c.memory(), Progress: c.progress,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "created keyring %s with admin %s\n", c.global.keyring, o.admin)
	if o.recoveryCode {
		if err := c.recoveryAfterInit(o.admin, pw); err != nil {
			return fmt.Errorf("the keyring was created, but the recovery code was not: %w (retry with: sealbox-admin --keyring %s recovery regenerate --as %s)", err, c.global.keyring, o.admin)
		}
	}
	fmt.Fprintf(c.stderr, "sealbox-admin: hint: add a second admin now (sealbox-admin --keyring %s add NAME --as %s), so one forgotten password does not lock you out\n", c.global.keyring, o.admin)
	return nil
}

// calibrate picks the keyring's Argon2id policy for about target per
// unlock on this machine, showing each timed step, and says what it chose
// and whether the machine looked too busy for the choice to be typical.
func (c *cli) calibrate(target time.Duration, maxMemKiB uint32) keyring.Params {
	start := time.Now()
	p := unseal.Calibrate(target, maxMemKiB, func(p keyring.Params) {
		c.progress("calibrating: timing", p)
	})
	took := time.Since(start)
	c.end()
	fmt.Fprintf(c.stderr, "sealbox-admin: calibrated Argon2id %v for about %v per unlock (calibration took %.1fs)\n", p, target, took.Seconds())
	// Calibration costs about seven derivations, three at the floor and
	// four at the target: far more means other work competed for the CPU
	// or memory, and the cost chosen is lower than this machine can afford.
	if target > 0 && took > 10*target && p != unseal.Floor() {
		fmt.Fprintf(c.stderr, "sealbox-admin: warning: the machine looked busy (%.1fs for a %v target): the parameters may be lower than when idle; run init when the machine is quiet\n", took.Seconds(), target)
	}
	return p
}

// readSecretFile reads at most MaxSecretSize bytes from path, refusing more.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading secret file: %w", err)
	}
	defer f.Close()
	buf := make([]byte, keyring.MaxSecretSize+1)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		memlock.Wipe(buf)
		return nil, fmt.Errorf("reading secret file: %w", err)
	}
	if n > keyring.MaxSecretSize || n == 0 {
		memlock.Wipe(buf)
		return nil, fmt.Errorf("secret file must hold 1 to %d bytes", keyring.MaxSecretSize)
	}
	out := make([]byte, n)
	copy(out, buf)
	memlock.Wipe(buf)
	return out, nil
}

// asActor opens the backend and reads the acting admin's password, runs fn,
// then wipes the password and closes the backend.
func (c *cli) asActor(o *opts, fn func(b backend, apw []byte) error) error {
	b, err := c.backend()
	if err != nil {
		return err
	}
	defer b.Close()
	apw, err := c.actorPassword(o)
	if err != nil {
		return err
	}
	defer memlock.Wipe(apw)
	return fn(b, apw)
}

func (c *cli) actorPassword(o *opts) ([]byte, error) {
	if err := requireFlag("as", o.as); err != nil {
		return nil, err
	}
	return c.pw.Password(o.as + "'s password")
}

func (c *cli) add(o *opts) error {
	name := o.pos[0]
	if err := keyring.ValidName(name); err != nil {
		return usagef("admin name: %v", err)
	}
	kdf, err := o.kdf()
	if err != nil {
		return err
	}
	return c.asActor(o, func(b backend, apw []byte) error {
		// The acting admin's password is checked before a new one is asked
		// for: a typo there should not cost typing the new one twice.
		if err := b.CheckPassword(c.ctx, audit.KindAdminAdd, o.as, apw); err != nil {
			return err
		}
		npw, err := c.pw.NewPassword(name + "'s new password")
		if err != nil {
			return err
		}
		defer memlock.Wipe(npw)
		if err := b.AddAdminWith(c.ctx, o.as, apw, name, npw, kdf); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "added admin %s\n", name)
		return nil
	})
}

func (c *cli) remove(o *opts) error {
	if err := keyring.ValidName(o.pos[0]); err != nil {
		return usagef("admin name: %v", err)
	}
	if o.rekey && o.pos[0] == o.as {
		return usagef("remove %s --rekey: once removed, %s cannot rekey; remove, then another admin runs: sealbox-admin rekey --as NAME", o.as, o.as)
	}
	return c.asActor(o, func(b backend, apw []byte) error {
		if o.rekey {
			// Offboarding: the removal and the rekey are one transaction,
			// so there is no moment with the admin gone and their DataKey
			// still current. Nothing the removed admin could have shaped is
			// kept, unattended slots included.
			return c.doRekey(b, o.as, apw, admin.RekeyOptions{Remove: o.pos[0]})
		}
		if err := b.RemoveAdmin(c.ctx, o.as, apw, o.pos[0]); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, removed(o.pos[0]))
		if o.pos[0] == admin.RecoveryName {
			fmt.Fprintf(c.stderr, "sealbox-admin: hint: whoever holds the old code and a copy of the keyring can still open that copy; rekey to end it: sealbox-admin rekey --as %s\n", o.as)
			return nil
		}
		actor := o.as
		if o.pos[0] == o.as {
			actor = "ANOTHER_ADMIN" // o.as has no slot any more
		}
		fmt.Fprintf(c.stderr, "sealbox-admin: hint: if %s may have kept a copy of the keyring, rekey now: sealbox-admin rekey --as %s (and rotate the master secret where its consumer allows it)\n", o.pos[0], actor)
		return nil
	})
}

func (c *cli) passwd(o *opts) error {
	name := o.pos[0]
	kdf, err := o.kdf()
	if err != nil {
		return err
	}
	b, err := c.backend()
	if err != nil {
		return err
	}
	defer b.Close()
	cur, err := c.pw.Password(name + "'s current password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(cur)
	if err := b.CheckPassword(c.ctx, audit.KindAdminPasswd, name, cur); err != nil {
		return err
	}
	npw, err := c.pw.NewPassword(name + "'s new password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(npw)
	if err := b.PasswdWith(c.ctx, name, cur, npw, kdf); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "changed the password of %s\n", name)
	return nil
}

func (c *cli) list(o *opts) error {
	b, err := c.backend()
	if err != nil {
		return err
	}
	defer b.Close()
	admins, err := b.ListAdmins(c.ctx)
	if err != nil {
		return err
	}
	return printAdmins(c.stdout, admins, o.json)
}

func printAdmins(w io.Writer, admins []admin.AdminInfo, asJSON bool) error {
	if asJSON {
		if admins == nil {
			admins = []admin.AdminInfo{}
		}
		return writeJSON(w, admins)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tARGON2ID\tCREATED\tEXPIRES\tSTATE")
	for _, a := range admins {
		expires := "-"
		if a.Expires != nil {
			expires = a.Expires.Format(time.RFC3339)
		}
		var state []string
		switch {
		case a.Expired:
			state = append(state, "expired")
		case a.Stale:
			state = append(state, "stale: invite again")
		case a.Pending:
			state = append(state, "rekey pending")
		}
		if a.Legacy && !a.Stale {
			state = append(state, "format-1 layout")
		}
		if len(state) == 0 {
			state = append(state, "ok")
		}
		fmt.Fprintf(tw, "%s\t%s\tt=%d m=%dMiB p=%d\t%s\t%s\t%s\n", a.Name, a.Kind, a.Time, a.Memory/1024, a.Threads, a.Created.Format(time.RFC3339), expires, strings.Join(state, ", "))
	}
	return tw.Flush()
}

func (c *cli) clientAdd(o *opts) error {
	name := o.pos[0]
	if err := keyring.ValidName(name); err != nil {
		return usagef("client name: %v", err)
	}
	if o.uid < -1 || o.uid > 1<<32-2 {
		return usagef("--uid: want a numeric user id (id -u USER)")
	}
	if o.gid < -1 || o.gid > 1<<32-2 {
		return usagef("--gid: want a numeric group id")
	}
	if o.uid < 0 && o.unit == "" {
		return usagef("client add needs --uid N, --unit UNIT, or both")
	}
	if o.gid >= 0 && o.uid < 0 {
		return usagef("--gid goes with --uid")
	}
	if o.unit != "" {
		if err := keyring.ValidUnit(o.unit); err != nil {
			return usagef("--unit: %v", err)
		}
	}
	var m admin.Match
	if o.uid >= 0 {
		u := uint32(o.uid)
		m.UID = &u
	}
	if o.gid >= 0 {
		g := uint32(o.gid)
		m.GID = &g
	}
	m.Unit = o.unit
	return c.asActor(o, func(b backend, apw []byte) error {
		if err := b.AddClient(c.ctx, o.as, apw, name, m); err != nil {
			return err
		}
		var what []string
		if m.Unit != "" {
			what = append(what, "unit "+m.Unit)
		}
		if m.UID != nil {
			what = append(what, fmt.Sprintf("uid %d", *m.UID))
		}
		if m.GID != nil {
			what = append(what, fmt.Sprintf("gid %d", *m.GID))
		}
		fmt.Fprintf(c.stdout, "registered client %s (%s)\n", name, strings.Join(what, ", "))
		return nil
	})
}

func (c *cli) clientStatus(o *opts, st keyring.ClientStatus, verb string) error {
	return c.asActor(o, func(b backend, apw []byte) error {
		if err := b.SetClientStatus(c.ctx, o.as, apw, o.pos[0], st); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s client %s\n", verb, o.pos[0])
		return nil
	})
}

func (c *cli) clientList(o *opts) error {
	b, err := c.backend()
	if err != nil {
		return err
	}
	defer b.Close()
	clients, err := b.ListClients(c.ctx)
	if err != nil {
		return err
	}
	return printClients(c.stdout, clients, o.json)
}

func printClients(w io.Writer, clients []admin.ClientInfo, asJSON bool) error {
	if asJSON {
		if clients == nil {
			clients = []admin.ClientInfo{}
		}
		return writeJSON(w, clients)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tUID\tGID\tUNIT\tSTATUS\tUPDATED")
	for _, cl := range clients {
		uid, gid, unit := "any", "any", "any"
		if cl.UID != nil {
			uid = fmt.Sprint(*cl.UID)
		}
		if cl.GID != nil {
			gid = fmt.Sprint(*cl.GID)
		}
		if cl.Unit != "" {
			unit = cl.Unit
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cl.Name, uid, gid, unit, cl.Status, cl.Updated.Format(time.RFC3339))
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// removed is what remove says it took out.
func removed(name string) string {
	if name == admin.RecoveryName {
		return "removed the recovery code"
	}
	return "removed admin " + name
}
