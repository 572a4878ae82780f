package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/daemon"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/prompt"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// backend is what the commands need, offline (the file) or online (the
// daemon's admin socket).
type backend interface {
	AddAdmin(ctx context.Context, actor string, actorPw []byte, name string, newPw []byte) error
	RemoveAdmin(ctx context.Context, actor string, actorPw []byte, name string) error
	Passwd(ctx context.Context, name string, cur, newPw []byte) error
	ListAdmins(ctx context.Context) ([]admin.AdminInfo, error)
	AddClient(ctx context.Context, actor string, actorPw []byte, name string, uid uint32, gid *uint32) error
	SetClientStatus(ctx context.Context, actor string, actorPw []byte, name string, st keyring.ClientStatus) error
	ListClients(ctx context.Context) ([]admin.ClientInfo, error)
	Invite(ctx context.Context, actor string, actorPw []byte, name string, ttl time.Duration) ([]byte, time.Time, error)
	Enroll(ctx context.Context, name string, code, pw []byte) error
	RegenerateRecovery(ctx context.Context, actor string, actorPw []byte) ([]byte, error)
	Rotate(ctx context.Context, actor string, actorPw []byte, secret []byte) (uint64, error)
	Rekey(ctx context.Context, actor string, actorPw []byte) error
	Backup(ctx context.Context, w io.Writer) (int64, error)
	Close() error
}

// errNeedsDaemon is returned for daemon-only commands in offline mode.
var errNeedsDaemon = errors.New("this command talks to the running daemon; drop --keyring (or give --admin-socket)")

// offline works on the keyring file through the admin package.
type offline struct {
	*admin.Manager
	kr *keyring.Keyring
}

func (o *offline) Close() error { return o.kr.Close() }

func (o *offline) ListAdmins(context.Context) ([]admin.AdminInfo, error) {
	return o.Manager.ListAdmins()
}

func (o *offline) ListClients(context.Context) ([]admin.ClientInfo, error) {
	return o.Manager.ListClients()
}

func (c *cli) openOffline(readOnly bool) (*offline, error) {
	kr, err := keyring.Open(c.global.keyring, keyring.Options{ReadOnly: readOnly})
	if err != nil {
		return nil, err
	}
	return &offline{kr: kr, Manager: admin.New(kr, admin.Options{Memory: c.memory(), Progress: c.progress})}, nil
}

func (c *cli) backend() (backend, error) {
	if c.global.keyring != "" {
		return c.openOffline(false)
	}
	return c.online()
}

func (c *cli) unseal(o *opts) error {
	if c.global.keyring != "" {
		return errNeedsDaemon
	}
	if o.recovery {
		if o.admin != "" {
			return usagef("give --admin NAME or --recovery, not both")
		}
		return c.onlineRecoveryUnseal()
	}
	if err := requireFlag("admin", o.admin); err != nil {
		return err
	}
	return c.onlineUnseal(o)
}

func (c *cli) seal(o *opts) error {
	if c.global.keyring != "" {
		return errNeedsDaemon
	}
	return c.onlineSeal()
}

// fileStatus is the offline summary of a keyring file.
type fileStatus struct {
	Keyring       string            `json:"keyring"`
	Format        int               `json:"format"`
	ID            string            `json:"keyring_id"`
	Created       time.Time         `json:"created"`
	Policy        keyring.Params    `json:"kdf_policy"`
	Admins        int               `json:"admins"`
	Clients       int               `json:"clients"`
	SecretVersion uint64            `json:"secret_version"`
	Generation    uint64            `json:"registry_generation"`
	Recovery      bool              `json:"recovery_code"`
	Slots         []admin.AdminInfo `json:"slots"`
}

func (c *cli) status(o *opts) error {
	if c.global.keyring == "" {
		return c.onlineStatus(o)
	}
	off, err := c.openOffline(true)
	if err != nil {
		return err
	}
	defer off.Close()
	st := fileStatus{Keyring: c.global.keyring, Format: keyring.FormatVersion}
	err = off.kr.View(func(tx *keyring.Tx) error {
		h, err := tx.Header()
		if err != nil {
			return err
		}
		sec, err := tx.Secret()
		if err != nil {
			return err
		}
		reg, err := tx.Registry()
		if err != nil {
			return err
		}
		clients, err := tx.Clients()
		if err != nil {
			return err
		}
		st.ID = hex.EncodeToString(h.ID[:])
		st.Created = time.Unix(h.Created, 0).UTC()
		st.Policy = h.Policy
		st.Clients = len(clients)
		st.SecretVersion = sec.Version
		st.Generation = reg.Generation
		return nil
	})
	if err != nil {
		return err
	}
	if st.Slots, err = off.Manager.ListAdmins(); err != nil {
		return err
	}
	for _, sl := range st.Slots {
		switch sl.Kind {
		case "admin":
			st.Admins++
		case "recovery":
			st.Recovery = true
		}
	}
	if o.json {
		return writeJSON(c.stdout, st)
	}
	fmt.Fprintf(c.stdout, "keyring:   %s (format %d, id %s)\n", st.Keyring, st.Format, st.ID)
	fmt.Fprintf(c.stdout, "state:     sealed (file; the daemon is not involved)\n")
	fmt.Fprintf(c.stdout, "admins:    %d\nclients:   %d\n", st.Admins, st.Clients)
	fmt.Fprintf(c.stdout, "kdf:       %v for new slots\n", st.Policy)
	fmt.Fprintf(c.stdout, "secret:    version %d\n", st.SecretVersion)
	fmt.Fprintf(c.stdout, "recovery:  %v\n", map[bool]string{true: "a recovery code is set", false: "none (sealbox-admin recovery regenerate --as NAME)"}[st.Recovery])
	return nil
}

func (c *cli) check(o *opts) error {
	if c.global.keyring == "" {
		return usagef("check works on the file: give --keyring PATH (stop the daemon first)")
	}
	if o.repair && o.as == "" {
		return usagef("--repair needs --as NAME")
	}
	// With a password, authentication writes its audit record.
	off, err := c.openOffline(o.as == "")
	if err != nil {
		return err
	}
	defer off.Close()
	if err := off.kr.Check(); err != nil {
		return fmt.Errorf("%w: bbolt check: %v", keyring.ErrCorrupt, err)
	}
	if err := off.kr.View(func(tx *keyring.Tx) error {
		if _, err := tx.Header(); err != nil {
			return err
		}
		if _, err := tx.Secret(); err != nil {
			return err
		}
		if _, err := tx.Registry(); err != nil {
			return err
		}
		if _, err := tx.Slots(); err != nil {
			return err
		}
		_, err := tx.Clients()
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "file: ok (pages, format and every record decode)")
	if o.as == "" {
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: add --as NAME to also check the DataKey commitment, record authentication and the secret")
		return nil
	}
	pw, err := c.pw.Password(o.as + "'s password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(pw)
	if o.repair {
		rep, err := off.Repair(c.ctx, o.as, pw)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "repaired: %v\n", rep.Err())
		fmt.Fprintln(c.stdout, "removed the records named above; review the admins and clients that remain:")
		admins, err := off.Manager.ListAdmins()
		if err != nil {
			return err
		}
		clients, err := off.Manager.ListClients()
		if err != nil {
			return err
		}
		if err := printAdmins(c.stdout, admins, false); err != nil {
			return err
		}
		return printClients(c.stdout, clients, false)
	}
	u, err := off.Unseal(c.ctx, o.as, pw)
	if err != nil {
		return err
	}
	defer u.Secret.Destroy()
	defer u.AuditKey.Destroy()
	fmt.Fprintf(c.stdout, "datakey: ok (commitment matches; master secret version %d decrypts, %d bytes)\n", u.Version, len(u.Secret.Bytes()))
	if err := u.Report.Err(); err != nil {
		return fmt.Errorf("%w (to drop failing records and re-sign: check --as NAME --repair)", err)
	}
	fmt.Fprintln(c.stdout, "registry: ok (every admin and client record authenticates)")
	return nil
}

// classify maps an error to an exit code and a hint for the next step.
func classify(err error) (int, string) {
	var ue *usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, keyring.ErrInvalidName), errors.Is(err, admin.ErrInvalid):
		return exitUsage, "run 'sealbox-admin --help' for usage"
	case errors.Is(err, unseal.ErrWrongPassword):
		return exitAuth, "nothing was changed; check the admin name and try again"
	case errors.Is(err, admin.ErrInvite), errors.Is(err, admin.ErrRecovery):
		return exitAuth, "nothing was changed; check the code (dashes and case do not matter)"
	case errors.Is(err, admin.ErrBackoff), errors.Is(err, daemon.ErrBusy), errors.Is(err, unseal.ErrBusy):
		return exitBackoff, "nothing was tried; wait, then try again"
	case errors.Is(err, errSealed):
		return exitSealed, "unseal first: sealbox-admin unseal --admin NAME"
	case errors.Is(err, admin.ErrLastAdmin), errors.Is(err, admin.ErrWeakPassword),
		errors.Is(err, keyring.ErrSlotExists), errors.Is(err, keyring.ErrClientExists),
		errors.Is(err, keyring.ErrNoSlot), errors.Is(err, keyring.ErrNoClient),
		errors.Is(err, admin.ErrClientState), errors.Is(err, keyring.ErrExists),
		errors.Is(err, admin.ErrNothingToRepair), errors.Is(err, admin.ErrChanged), errors.Is(err, admin.ErrReservedName),
		errors.Is(err, prompt.ErrMismatch), errors.Is(err, unseal.ErrParams),
		errors.Is(err, errRefused):
		return exitRefused, "nothing was changed"
	case errors.Is(err, keyring.ErrLocked), errors.Is(err, errUnreachable), errors.Is(err, errNeedsDaemon):
		return exitUnavail, ""
	case errors.Is(err, keyring.ErrNotFound):
		return exitFailure, ""
	case errors.Is(err, unseal.ErrCommitment), errors.Is(err, unseal.ErrRegistry), errors.Is(err, daemon.ErrIntegrity),
		errors.Is(err, keyring.ErrCorrupt), errors.Is(err, keyring.ErrNotKeyring),
		errors.Is(err, keyring.ErrUnknownVersion), errors.Is(err, unseal.ErrSecret), errors.Is(err, audit.ErrBroken):
		return exitIntegrity, "the keyring file may have been tampered with or damaged; restore a backup and investigate"
	case errors.Is(err, memlock.ErrLockFailed):
		return exitFailure, ""
	}
	return exitFailure, ""
}
