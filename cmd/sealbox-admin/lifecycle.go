package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

func (c *cli) invite(o *opts) error {
	name := o.pos[0]
	ttl, err := time.ParseDuration(o.expires)
	if err != nil || ttl < time.Minute || ttl > 720*time.Hour {
		return usagef("--expires: want a duration from 1m to 720h")
	}
	return c.asActor(o, func(b backend, apw []byte) error {
		code, expires, err := b.Invite(c.ctx, o.as, apw, name, ttl)
		if err != nil {
			return err
		}
		defer memlock.Wipe(code)
		fmt.Fprintf(c.stdout, "invite code for %s (valid until %s, once):\n", name, expires.UTC().Format(time.RFC3339))
		c.stdout.Write(code)
		fmt.Fprintln(c.stdout)
		fmt.Fprintf(c.stderr, "sealbox-admin: hint: give the code to %s by another channel than the one you use to tell them their name; they run: sealbox-admin enroll %s\n", name, name)
		return nil
	})
}

func (c *cli) enroll(o *opts) error {
	name := o.pos[0]
	b, err := c.backend()
	if err != nil {
		return err
	}
	defer b.Close()
	code, err := c.pw.Password("invite code for " + name)
	if err != nil {
		return err
	}
	defer memlock.Wipe(code)
	pw, err := c.pw.NewPassword(name + "'s new password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(pw)
	if err := b.Enroll(c.ctx, name, code, pw); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "enrolled %s as an admin; the invite is used up\n", name)
	return nil
}

func (c *cli) recoveryRegenerate(o *opts) error {
	return c.asActor(o, func(b backend, apw []byte) error {
		code, err := b.RegenerateRecovery(c.ctx, o.as, apw)
		if err != nil {
			return err
		}
		defer memlock.Wipe(code)
		c.printRecovery(code)
		return nil
	})
}

func (c *cli) printRecovery(code []byte) {
	fmt.Fprintln(c.stdout, "recovery code (shown once; any earlier one no longer works):")
	c.stdout.Write(code)
	fmt.Fprintln(c.stdout)
	fmt.Fprintln(c.stderr, "sealbox-admin: hint: store it offline, like a spare key (paper in a safe); it unseals with: sealbox-admin unseal --recovery")
}

func (c *cli) rotate(o *opts) error {
	var secret []byte
	if o.secretFile != "" {
		var err error
		if secret, err = readSecretFile(o.secretFile); err != nil {
			return err
		}
	} else if c.global.keyring != "" {
		// Offline nobody else picks one: 32 random bytes.
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return err
		}
	}
	defer memlock.Wipe(secret)
	return c.asActor(o, func(b backend, apw []byte) error {
		version, err := b.Rotate(c.ctx, o.as, apw, secret)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "rotated the master secret: version %d", version)
		if c.global.keyring == "" {
			fmt.Fprint(c.stdout, ", served now")
		}
		fmt.Fprintln(c.stdout)
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: services that cached the old value must read it again (restart them, or sealbox get)")
		return nil
	})
}

func (c *cli) rekey(o *opts) error {
	c.tcti = o.tcti
	return c.asActor(o, func(b backend, apw []byte) error {
		return c.doRekey(b, o.as, apw, admin.RekeyOptions{KeepInvites: o.keepInvites, KeepUnattended: o.keepUnattended})
	})
}

func (c *cli) doRekey(b backend, actor string, apw []byte, ro admin.RekeyOptions) error {
	res, err := b.Rekey(c.ctx, actor, apw, ro)
	if err != nil {
		return err
	}
	defer memlock.Wipe(res.RecoveryCode)
	if ro.Remove != "" {
		fmt.Fprintln(c.stdout, removed(ro.Remove))
	}
	fmt.Fprintln(c.stdout, "rekeyed: a new DataKey; old copies of the keyring open nothing written from now on")
	if len(res.HandedOver) > 0 {
		fmt.Fprintf(c.stdout, "admins who take the new key at their next login: %s\n", strings.Join(res.HandedOver, ", "))
	}
	if len(res.DroppedUnattended) > 0 {
		fmt.Fprintf(c.stdout, "removed unattended slots: %s (whoever could change the file before this rekey may have chosen their servers: bind them again, confirming each thumbprint)\n", strings.Join(res.DroppedUnattended, ", "))
	}
	if len(res.Remade) > 0 {
		fmt.Fprintf(c.stdout, "unattended slots bound again under new keys: %s\n", strings.Join(res.Remade, ", "))
		fmt.Fprintf(c.stderr, "sealbox-admin: warning: unattended slots %s were kept, bound again to the servers, PCRs and members the file holds: if a removed admin could change the file before this rekey, they may have chosen them (sealbox-admin slots shows each binding)\n", strings.Join(res.Remade, ", "))
	}
	if len(res.DroppedInvites) > 0 {
		fmt.Fprintf(c.stdout, "dropped invites: %s (invite them again if they should still join)\n", strings.Join(res.DroppedInvites, ", "))
	}
	if len(res.KeptInvites) > 0 {
		fmt.Fprintf(c.stderr, "sealbox-admin: warning: invites %s were kept: whoever knows those codes (the removed admin may) can still enrol until they expire\n", strings.Join(res.KeptInvites, ", "))
	}
	if len(res.Stale) > 0 {
		fmt.Fprintf(c.stderr, "sealbox-admin: warning: slots %s cannot take the new key (they missed a format-1 rekey); invite their admins again\n", strings.Join(res.Stale, ", "))
	}
	if res.RecoveryCode != nil {
		fmt.Fprintln(c.stdout, "the recovery code was replaced; the new one (shown once; the old one no longer works):")
		c.stdout.Write(res.RecoveryCode)
		fmt.Fprintln(c.stdout)
	}
	if res.Identity != "" {
		fmt.Fprintf(c.stdout, "keyring identity: %s\n", res.Identity)
		fmt.Fprintf(c.stderr, "sealbox-admin: the rekey drew a new keyring identity. If sealboxd's configuration pins one (unattended_identity in /etc/sealbox/sealboxd.toml), it pins the old one, which now admits a keyring forged by whoever held the old DataKey: as root, set it now, to \"\" until unattended slots are bound again, then to:\n  unattended_identity = %q\n", res.Identity)
	}
	var admins []string
	if list, err := b.ListAdmins(c.ctx); err == nil {
		for _, a := range list {
			if a.Kind == keyring.KindAdmin.String() {
				admins = append(admins, a.Name)
			}
		}
	}
	if len(admins) > 0 {
		fmt.Fprintf(c.stderr, "sealbox-admin: the new key went to these admin slots: %s. Until the rekey, whoever held the old DataKey could have added one straight into the file: remove any you do not know (sealbox-admin remove NAME --rekey)\n", strings.Join(admins, ", "))
	}
	fmt.Fprintln(c.stderr, "sealbox-admin: hint: to finish offboarding, every other admin changes their password (sealbox-admin passwd NAME): until then, someone who kept an old copy of the file and can write it could redirect their slots (keyring/FORMAT.md, Rekey); to also change what an old copy reveals, rotate the master secret")
	return nil
}

func (c *cli) backup(o *opts) error {
	if _, err := os.Lstat(o.to); err == nil {
		return fmt.Errorf("%w: %s exists; choose a new file", keyring.ErrExists, o.to)
	}
	b, err := c.backend()
	if err != nil {
		return err
	}
	defer b.Close()
	// Write beside the target, check the copy opens as a keyring, then put it
	// in place: a half-written backup never carries the final name.
	f, err := os.CreateTemp(filepath.Dir(o.to), "."+filepath.Base(o.to)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating the backup: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	n, err := b.Backup(c.ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing the backup: %w", err)
	}
	kr, err := keyring.Open(tmp, keyring.Options{ReadOnly: true})
	if err == nil {
		err = kr.Check()
		kr.Close()
	}
	if err != nil {
		return fmt.Errorf("the copy does not check out, so it was not kept: %w", err)
	}
	if err := os.Link(tmp, o.to); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s appeared meanwhile", keyring.ErrExists, o.to)
		}
		return err
	}
	fmt.Fprintf(c.stdout, "backed up the keyring to %s (%d bytes, mode 0600)\n", o.to, n)
	fmt.Fprintln(c.stderr, "sealbox-admin: hint: the copy opens with any current admin's password, like the keyring itself: keep it as carefully")
	return nil
}

// onlineRecoveryUnseal is unseal --recovery through the daemon.
func (c *cli) onlineRecoveryUnseal() error {
	ac := api.NewClient(c.adminSocket())
	defer ac.Close()
	code, err := c.pw.Password("recovery code")
	if err != nil {
		return err
	}
	defer memlock.Wipe(code)
	st, err := ac.UnsealRecovery(c.ctx, code)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "unsealed with the recovery code (%d active clients can read now)\n", st.ActiveClients)
	fmt.Fprintln(c.stderr, "sealbox-admin: hint: the recovery code still works; regenerate it once the emergency is over: sealbox-admin recovery regenerate --as NAME")
	return nil
}

// recoveryAfterInit creates the recovery code right after init, with the
// first admin's password.
func (c *cli) recoveryAfterInit(name string, pw []byte) error {
	off, err := c.openOffline(false)
	if err != nil {
		return err
	}
	defer off.Close()
	code, err := off.RegenerateRecovery(c.ctx, name, pw)
	if err != nil {
		return err
	}
	defer memlock.Wipe(code)
	c.printRecovery(code)
	return nil
}
