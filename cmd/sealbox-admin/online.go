package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/internal/errclass"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/config"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// online talks to the daemon; every change shows progress, since the daemon
// derives Argon2id keys for it.
type online struct {
	*api.Client
	c *cli
}

// adminSocket is --admin-socket, else $SEALBOX_ADMIN_SOCKET, else the
// default.
func (c *cli) adminSocket() string {
	if c.global.adminSocket != "" {
		return c.global.adminSocket
	}
	if env := os.Getenv(api.SocketEnv); env != "" {
		return env
	}
	return config.DefaultAdminSocket
}

func (c *cli) online() (backend, error) {
	return &online{Client: api.NewClient(c.adminSocket()), c: c}, nil
}

func (o *online) deriving(who string) {
	o.c.begin("sealboxd is deriving " + who + "'s key (Argon2id)")
}

func (o *online) AddAdmin(ctx context.Context, actor string, apw []byte, name string, npw []byte) error {
	o.deriving(actor)
	return o.Client.AddAdmin(ctx, actor, apw, name, npw)
}

// Bind asks the daemon, which makes the binding (and reaches the TPM
// with its own tpm2_tcti).
func (o *online) Bind(ctx context.Context, req *api.BindRequest, _ *unattended.Env) (string, error) {
	o.deriving(req.Actor)
	return o.Client.Bind(ctx, req)
}

func (o *online) Unbind(ctx context.Context, actor string, apw []byte, name string) error {
	o.deriving(actor)
	return o.Client.Unbind(ctx, actor, apw, name)
}

func (o *online) RemoveAdmin(ctx context.Context, actor string, apw []byte, name string) error {
	o.deriving(actor)
	return o.Client.RemoveAdmin(ctx, actor, apw, name)
}

func (o *online) Rekey(ctx context.Context, actor string, apw []byte, ro admin.RekeyOptions) (*admin.Rekeyed, error) {
	o.deriving(actor)
	return o.Client.Rekey(ctx, actor, apw, ro)
}

func (o *online) CheckPassword(ctx context.Context, before audit.Kind, actor string, pw []byte) error {
	o.deriving(actor)
	return o.Client.CheckPassword(ctx, before, actor, pw)
}

func (o *online) Enroll(ctx context.Context, name string, code, pw []byte) error {
	o.deriving(name)
	return o.Client.Enroll(ctx, name, code, pw)
}

func (o *online) Passwd(ctx context.Context, name string, cur, npw []byte) error {
	o.deriving(name)
	return o.Client.Passwd(ctx, name, cur, npw)
}

func (c *cli) onlineUnseal(o *opts) error {
	ac := api.NewClient(c.adminSocket())
	defer ac.Close()
	// Ask the daemon first: no password is asked for, and nothing is
	// derived, when it is unreachable or already unsealed.
	st, err := ac.Status(c.ctx)
	if err != nil {
		return err
	}
	if !st.Sealed {
		fmt.Fprintf(c.stdout, "already unsealed (by %s); nothing to do\n", st.UnsealedBy)
		return nil
	}
	pw, err := c.pw.Password(o.admin + "'s password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(pw)
	c.begin("sealboxd is deriving " + o.admin + "'s key (Argon2id)")
	st, err = ac.Unseal(c.ctx, o.admin, pw)
	c.end()
	if err != nil {
		return err
	}
	if st.AlreadyUnsealed {
		fmt.Fprintf(c.stdout, "already unsealed (by %s); nothing to do\n", st.UnsealedBy)
		return nil
	}
	fmt.Fprintf(c.stdout, "unsealed by %s (%d active clients can read now)\n", o.admin, st.ActiveClients)
	if !st.MemoryLocked {
		fmt.Fprintln(c.stderr, "sealbox-admin: warning: the secret is in memory that is NOT locked (allow_unlocked_memory = true)")
	}
	if st.RegistryProblems != "" {
		fmt.Fprintf(c.stderr, "sealbox-admin: warning: %s\n", st.RegistryProblems)
	}
	return nil
}

func (c *cli) onlineSeal() error {
	ac := api.NewClient(c.adminSocket())
	defer ac.Close()
	if _, err := ac.Seal(c.ctx); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "sealed: the secret is wiped from the daemon's memory")
	return nil
}

func (c *cli) onlineStatus(o *opts) error {
	ac := api.NewClient(c.adminSocket())
	defer ac.Close()
	st, err := ac.Status(c.ctx)
	if err != nil {
		return err
	}
	if o.json {
		if err := writeJSON(c.stdout, st); err != nil {
			return err
		}
		return sealedStatus(st.Sealed)
	}
	state := "sealed"
	if !st.Sealed {
		state = fmt.Sprintf("unsealed by %s at %s", st.UnsealedBy, st.UnsealedAt.Format(time.RFC3339))
		if !st.MemoryLocked {
			state += " (memory NOT locked)"
		}
	}
	fmt.Fprintf(c.stdout, "state:     %s\n", state)
	fmt.Fprintf(c.stdout, "keyring:   %s\n", st.Keyring)
	fmt.Fprintf(c.stdout, "admins:    %d\nclients:   %d (%d active)\n", st.Admins, st.Clients, st.ActiveClients)
	fmt.Fprintf(c.stdout, "kdf:       %v for new slots\n", st.KDFPolicy)
	if st.Recovery {
		fmt.Fprintln(c.stdout, "recovery:  a recovery code is set")
	} else {
		fmt.Fprintln(c.stdout, "recovery:  none (sealbox-admin recovery regenerate --as NAME)")
	}
	fmt.Fprintf(c.stdout, "daemon:    pid %d, up since %s, generation %d\n", st.PID, st.Started.Format(time.RFC3339), st.Generation)
	if st.MemoryHygiene != "full" {
		fmt.Fprintln(c.stdout, "memory:    hygiene reduced: built without GOEXPERIMENT=runtimesecret, so derivations may leave key material on the heap until it is reused (build with make)")
	}
	if st.RegistryProblems != "" {
		fmt.Fprintf(c.stdout, "problems:  %s\n", st.RegistryProblems)
	}
	for _, a := range st.Unattended {
		line := fmt.Sprintf("%s (%s): %s, %d tries", a.Slot, a.Method, a.State, a.Tries)
		if a.LastTry != nil {
			line += fmt.Sprintf(", last at %s took %d ms", a.LastTry.Format(time.RFC3339), a.ElapsedMS)
		}
		if a.Error != "" {
			line += ": " + a.Error
		}
		if a.NextTry != nil {
			line += fmt.Sprintf("; next try at %s", a.NextTry.Format(time.RFC3339))
		}
		fmt.Fprintf(c.stdout, "unattended: %s\n", line)
		for _, m := range a.Members {
			res := "ok"
			if m.Error != "" {
				res = m.Error
			}
			fmt.Fprintf(c.stdout, "            member %s: %s (%d ms)\n", m.Method, res, m.ElapsedMS)
		}
	}
	if st.Sealed {
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: unseal with: sealbox-admin unseal --admin NAME")
	}
	return sealedStatus(st.Sealed)
}

// errSealedState is status's answer for a sealed daemon: the state is
// printed, not reported as an error, and the exit code is 7 (sealed), so
// that a script can test it (as vault status exits 2 when sealed).
var errSealedState = errclass.New(errclass.Sealed, "the daemon is sealed")

func sealedStatus(sealed bool) error {
	if sealed {
		return errSealedState
	}
	return nil
}
