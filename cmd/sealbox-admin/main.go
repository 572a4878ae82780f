// Command sealbox-admin manages a sealbox keyring: unseal and seal the daemon,
// add and remove admins and clients, check the file. It talks to sealboxd over
// its admin socket, or works on the keyring file directly with --keyring
// while the daemon is stopped.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/prompt"
)

const usage = `Usage: sealbox-admin [--keyring PATH | --admin-socket PATH] COMMAND [ARGS]

Manage a sealbox keyring. With --keyring it works on the file directly (the
daemon must be stopped); otherwise it talks to sealboxd on --admin-socket
(default /run/sealbox/admin.sock).

Commands:
  init --keyring PATH --admin NAME [--secret-file FILE] [--kdf-time D] [--recovery-code]
                                 create a keyring with its first admin
  unseal --admin NAME            unseal the daemon with NAME's password
  unseal --recovery              unseal the daemon with the recovery code
  seal                           seal the daemon (wipes the secret from memory)
  status [--json]                daemon state, or the file's summary offline
  add NAME --as ACTOR            add admin NAME, authorized by ACTOR
  remove NAME --as ACTOR [--rekey]
                                 remove admin NAME (never the last one)
  invite NAME --as ACTOR [--expires D]
                                 print a one-time code for NAME to enroll with
  enroll NAME                    become admin NAME with an invite code
  list [--json]                  list admins
  passwd NAME                    change NAME's password
  check [--as NAME [--repair]]   verify the keyring file; with a password,
                                 also its DataKey, records and secret
  rotate --as ACTOR [--secret-file FILE]
                                 replace the master secret
  rekey --as ACTOR               replace the DataKey (after removing an admin)
  recovery regenerate --as ACTOR create or replace the recovery code
  backup --to FILE               a consistent copy of the keyring, mode 0600
  client add NAME --uid N [--gid N] --as ACTOR
                                 register a service by its peer credentials
  client list [--json]           list clients
  client disable|enable|remove NAME --as ACTOR
                                 change a client's status (remove retires it)
  audit [--since T] [--client NAME] [--admin NAME] [--limit N] [--json]
                                 show the audit log
  audit verify [--as NAME]       verify the audit chain (offline: --as NAME)

Run 'sealbox-admin COMMAND --help' for a command's flags.

Passwords are prompted without echo on a terminal (new ones twice). When
standard input is not a terminal, one password is read per line, in the
order the prompts would appear (new passwords once). They are never taken
from arguments or the environment.

Exit codes:
  0 success          3 wrong password or unknown admin   5 keyring busy or daemon unreachable
  1 failure          4 refused (rules or policy)         6 integrity check failed
  2 usage, or input  7 daemon sealed                     8 too many attempts, retry later
    not acceptable
`

// Exit codes, documented in usage.
const (
	exitOK        = 0
	exitFailure   = 1
	exitUsage     = 2
	exitAuth      = 3
	exitRefused   = 4
	exitUnavail   = 5
	exitIntegrity = 6
	exitSealed    = 7
	exitBackoff   = 8
)

// usageError marks an error in how the command was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// cli holds what every command shares.
type cli struct {
	ctx            context.Context // carries this process as the audit peer
	stdout, stderr io.Writer
	pw             *prompt.Reader
	global         globalFlags
}

type globalFlags struct {
	keyring     string
	adminSocket string
}

func (g *globalFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.keyring, "keyring", g.keyring, "work on the keyring `file` directly (the daemon must be stopped)")
	fs.StringVar(&g.adminSocket, "admin-socket", g.adminSocket, "talk to the daemon on this `socket` (default /run/sealbox/admin.sock)")
}

func main() {
	if err := memlock.HardenProcess(); err != nil {
		fmt.Fprintf(os.Stderr, "sealbox-admin: warning: %v\n", err)
	}
	self := audit.Peer{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid())}
	c := &cli{ctx: audit.WithPeer(context.Background(), self), stdout: os.Stdout, stderr: os.Stderr, pw: prompt.New(os.Stdin, os.Stderr)}
	code := c.run(os.Args[1:])
	c.pw.Close()
	os.Exit(code)
}

func (c *cli) run(args []string) int {
	fs := flag.NewFlagSet("sealbox-admin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.global.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, usage)
			return exitOK
		}
		return c.fail(usagef("%v", err))
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(c.stderr, usage)
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	if name == "client" {
		if len(rest) == 0 {
			return c.fail(usagef("client needs a subcommand: add, list, disable, enable, remove"))
		}
		name, rest = "client "+rest[0], rest[1:]
	}
	if name == "audit" && len(rest) > 0 && rest[0] == "verify" {
		name, rest = "audit verify", rest[1:]
	}
	if name == "recovery" {
		if len(rest) == 0 || rest[0] != "regenerate" {
			return c.fail(usagef("recovery needs a subcommand: regenerate"))
		}
		name, rest = "recovery regenerate", rest[1:]
	}
	if name == "help" {
		fmt.Fprint(c.stdout, usage)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		return c.fail(usagef("unknown command %q", name))
	}
	return c.fail(cmd.run(c, name, rest))
}

// fail prints err (if any) with a hint and returns its exit code.
func (c *cli) fail(err error) int {
	if err == nil {
		return exitOK
	}
	code, hint := classify(err)
	fmt.Fprintf(c.stderr, "sealbox-admin: error: %v\n", err)
	if hint != "" {
		fmt.Fprintf(c.stderr, "sealbox-admin: hint: %s\n", hint)
	}
	return code
}

// command is one subcommand: its usage line, its flags, and what it does.
type command struct {
	args  string // positional arguments, for the usage line
	help  string
	flags func(fs *flag.FlagSet, o *opts)
	nPos  int // exact number of positional arguments
	do    func(c *cli, o *opts) error
}

// opts collects every flag a command may take.
type opts struct {
	pos          []string
	as           string
	admin        string
	secretFile   string
	kdfTime      string
	json         bool
	recovery     bool
	expires      string
	to           string
	rekey        bool
	recoveryCode bool
	uid, gid     int64
	since        string
	client       string
	limit        int
	repair       bool
	yes          bool
	reads        bool
	keepInvites  bool
	unit         string
}

func (cmd *command) run(c *cli, name string, args []string) error {
	o := &opts{uid: -1, gid: -1}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.global.register(fs)
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(c.stdout, "Usage: sealbox-admin %s%s\n\n%s\n\nFlags:\n", name, cmd.args, cmd.help)
		fs.SetOutput(c.stdout)
		fs.PrintDefaults()
		return nil
	}
	if err != nil {
		return usagef("%s: %v", name, err)
	}
	if len(pos) != cmd.nPos {
		return usagef("%s: expected%s, got %d argument(s) (see sealbox-admin %s --help)", name, cmd.args, len(pos), name)
	}
	o.pos = pos
	if c.global.keyring != "" && c.global.adminSocket != "" {
		return usagef("give --keyring or --admin-socket, not both")
	}
	return cmd.do(c, o)
}

// parseInterspersed parses flags that may come before, between or after
// positional arguments ("add bob --as alice"). "--" ends flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func requireFlag(name, val string) error {
	if strings.TrimSpace(val) == "" {
		return usagef("--%s is required", name)
	}
	return nil
}
