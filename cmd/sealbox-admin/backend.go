package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/tpm2"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// backend is what the commands need, offline (the file) or online (the
// daemon's admin socket).
type backend interface {
	AddAdmin(ctx context.Context, actor string, actorPw []byte, name string, newPw []byte) error
	RemoveAdmin(ctx context.Context, actor string, actorPw []byte, name string) error
	Passwd(ctx context.Context, name string, cur, newPw []byte) error
	ListAdmins(ctx context.Context) ([]admin.AdminInfo, error)
	AddClient(ctx context.Context, actor string, actorPw []byte, name string, m admin.Match) error
	SetClientStatus(ctx context.Context, actor string, actorPw []byte, name string, st keyring.ClientStatus) error
	ListClients(ctx context.Context) ([]admin.ClientInfo, error)
	Invite(ctx context.Context, actor string, actorPw []byte, name string, ttl time.Duration) ([]byte, time.Time, error)
	Enroll(ctx context.Context, name string, code, pw []byte) error
	RegenerateRecovery(ctx context.Context, actor string, actorPw []byte) ([]byte, error)
	Rotate(ctx context.Context, actor string, actorPw []byte, secret []byte) (uint64, error)
	Rekey(ctx context.Context, actor string, actorPw []byte, o admin.RekeyOptions) (*admin.Rekeyed, error)
	Backup(ctx context.Context, w io.Writer) (int64, error)
	CheckPassword(ctx context.Context, before audit.Kind, actor string, pw []byte) error
	AddAdminWith(ctx context.Context, actor string, actorPw []byte, name string, newPw []byte, kdf *keyring.Params) error
	PasswdWith(ctx context.Context, name string, cur, newPw []byte, kdf *keyring.Params) error
	Slots(ctx context.Context) (*admin.SlotsView, error)
	Unlock(ctx context.Context, actor string, actorPw []byte, name string) (uint32, error)
	SetPolicyFields(ctx context.Context, actor string, actorPw []byte, p keyring.Params) (keyring.Params, error)
	Bind(ctx context.Context, req *api.BindRequest, env *unattended.Env) (string, error)
	Unbind(ctx context.Context, actor string, actorPw []byte, name string) error
	Close() error
}

// Bind makes the binding here (sealbox-admin reaches the TPM with --tcti)
// and adds the slot.
func (o *offline) Bind(ctx context.Context, req *api.BindRequest, env *unattended.Env) (string, error) {
	spec, err := req.Spec(env)
	if err != nil {
		return "", err
	}
	return o.Manager.Bind(ctx, req.Actor, req.ActorPassword, req.Name, spec)
}

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
	env := c.offlineEnv(c.tcti)
	remake := func(ctx context.Context, kind keyring.SlotKind, binding, kek []byte) ([]byte, error) {
		return unattended.Remake(ctx, env, kind, binding, kek)
	}
	return &offline{kr: kr, Manager: admin.New(kr, admin.Options{Memory: c.memory(), Progress: c.progress, Remake: remake})}, nil
}

func (c *cli) backend() (backend, error) {
	if c.global.keyring != "" {
		return c.openOffline(false)
	}
	return c.online()
}

func (c *cli) unseal(o *opts) error {
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
	return c.onlineSeal()
}

// fileStatus is the offline summary of a keyring file. Nothing in it is
// verified: that takes an admin's password (check --as NAME).
type fileStatus struct {
	Keyring string `json:"keyring"`
	*admin.Summary
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
	sum, err := off.Manager.Summary()
	if err != nil {
		return err
	}
	st := fileStatus{Keyring: c.global.keyring, Summary: sum}
	if o.json {
		return writeJSON(c.stdout, st)
	}
	fmt.Fprintf(c.stdout, "keyring:    %s (format %d, id %s)\n", st.Keyring, st.Format, st.ID)
	fmt.Fprintf(c.stdout, "state:      sealed (file; the daemon is not involved), generation %d\n", st.Generation)
	fmt.Fprintf(c.stdout, "admins:     %d\nclients:    %d\n", st.Admins, st.Clients)
	fmt.Fprintf(c.stdout, "kdf:        %v for new slots\n", st.Policy)
	fmt.Fprintf(c.stdout, "secret:     version %d\n", st.SecretVersion)
	fmt.Fprintf(c.stdout, "recovery:   %v\n", map[bool]string{true: "a recovery code is set", false: "none (sealbox-admin recovery regenerate --as NAME)"}[st.Recovery])
	for _, sl := range st.Slots {
		if sl.Binding == "" {
			continue
		}
		fmt.Fprintf(c.stdout, "unattended: %s (%s): %s; tried by the daemon at its start\n", sl.Name, sl.Kind, sl.Binding)
	}
	if st.Format == 1 {
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: this keyring is in format 1; the first admin login upgrades it (check --as NAME does)")
	}
	fmt.Fprintln(c.stderr, "sealbox-admin: hint: none of this is verified without a password: check --as NAME verifies the whole file")
	return nil
}

func (c *cli) check(o *opts) error {
	if o.repair && o.as == "" {
		return usagef("--repair needs --as NAME")
	}
	if o.yes && !o.repair {
		return usagef("--yes goes with --repair")
	}
	if c.global.keyring == "" {
		return c.onlineCheck(o)
	}
	// With a password, authentication writes its audit record.
	off, err := c.openOffline(o.as == "")
	if err != nil {
		return err
	}
	defer off.Close()
	if err := off.Manager.Preflight(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "file: ok (pages, format and every record decode)")
	if o.as == "" {
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: add --as NAME to also verify the DataKey, the state root over every record, the secret and the audit log")
		return nil
	}
	pw, err := c.pw.Password(o.as + "'s password")
	if err != nil {
		return err
	}
	defer memlock.Wipe(pw)
	if o.repair {
		return c.repair(off, o, pw)
	}
	res, err := off.Manager.Check(c.ctx, o.as, pw)
	if err != nil {
		return err
	}
	return c.printCheck(o, res)
}

// repair shows what a repair would do, asks (or takes --yes), and does it.
func (c *cli) repair(off *offline, o *opts, pw []byte) error {
	res, err := off.Manager.Repair(c.ctx, o.as, pw, func(plan *admin.RepairPlan) bool {
		fmt.Fprintln(c.stdout, "found:")
		for _, f := range plan.Findings {
			fmt.Fprintf(c.stdout, "  %s\n", f)
		}
		fmt.Fprintln(c.stdout, "a repair would (nothing that failed is ever re-signed):")
		for _, a := range plan.Actions {
			fmt.Fprintf(c.stdout, "  %s\n", a)
		}
		if o.yes {
			return true
		}
		ok, err := c.pw.Confirm("apply this repair?")
		if err != nil {
			fmt.Fprintf(c.stderr, "sealbox-admin: error: %v\n", err)
			return false
		}
		return ok
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "repaired")
	for name, code := range res.Codes {
		fmt.Fprintf(c.stdout, "invite code for %s (valid for 24h, once):\n", name)
		c.stdout.Write(code)
		fmt.Fprintln(c.stdout)
		memlock.Wipe(code)
	}
	if len(res.Codes) > 0 {
		fmt.Fprintln(c.stderr, "sealbox-admin: hint: give each code to its admin by another channel; they run: sealbox-admin enroll NAME")
	}
	return nil
}

// classify maps an error to an exit code (errclass.Exit, the table both
// CLIs share) and a hint for the next step, both from its class.
func classify(err error) (int, string) {
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage, "run 'sealbox-admin --help' for usage"
	}
	c := errclass.Of(err)
	if c == errclass.Invalid && strings.Contains(err.Error(), "json: unknown field") {
		// The daemon decodes requests strictly: one started from an
		// older sealbox does not know a field this tool sends.
		return errclass.Exit(c), "the change was not made; sealboxd may be older than this sealbox-admin: after an upgrade, restart it (systemctl restart sealboxd)"
	}
	for _, h := range specificHints {
		if errors.Is(err, h.err) {
			return errclass.Exit(c), h.hint
		}
	}
	return errclass.Exit(c), hints[c]
}

// specificHints are the next step after errors whose class alone would
// point the wrong way.
var specificHints = []struct {
	err  error
	hint string
}{
	{errUntrusted, "nothing was bound and the keyring was not touched; read the thumbprint on the server (tang-show-keys, or jose jwk thp -i KEY.jwk) and compare"},
	{tpm2.ErrUnavailable, "the change was not made; is the TPM there? Through the daemon it uses tpm2_tcti in sealboxd.toml; on the file, --tcti (default device:/dev/tpmrm0; a software TPM: swtpm:host=ADDR,port=PORT)"},
}

// unreachableHint is the next step when the admin socket did not answer:
// the socket's permissions, or where else to look, and the file itself
// only for commands that can work on it.
func (c *cli) unreachableHint(err error) string {
	if errors.Is(err, syscall.EACCES) {
		return "this user may not open the admin socket (sealboxd makes it 0600, owned by its user): run as root, or as the daemon's user"
	}
	h := "is sealboxd running? (systemctl status sealboxd); --admin-socket or $" + api.SocketEnv + " names another socket"
	if c.cmd != nil && c.cmd.mode == either {
		h += "; with the daemon stopped, work on the file: --keyring PATH"
	}
	return h
}

// hints is the next step after an error of each class.
var hints = map[errclass.Class]string{
	errclass.Invalid:   "the change was not made",
	errclass.Auth:      "the change was not made; check the name and the password or code (a code's dashes and case do not matter)",
	errclass.Busy:      "nothing was tried; wait, then try again",
	errclass.Sealed:    "unseal first: sealbox-admin unseal --admin NAME",
	errclass.Refused:   "the change was not made",
	errclass.NotFound:  "the change was not made",
	errclass.Forbidden: "the change was not made",
	errclass.Integrity: "the keyring file may have been tampered with or damaged; restore a backup and investigate",
}
