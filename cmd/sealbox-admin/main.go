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
	"slices"
	"strings"

	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/prompt"
	"github.com/sealbox/sealbox/internal/version"
)

const usageText = `Usage: sealbox-admin [--keyring PATH | --admin-socket PATH] COMMAND [ARGS]
       sealbox-admin --version

Manage a sealbox keyring. With --keyring it works on the file directly (the
daemon must be stopped); otherwise it talks to sealboxd on --admin-socket,
else $SEALBOX_ADMIN_SOCKET, else /run/sealbox/admin.sock.

%s
Run 'sealbox-admin COMMAND --help' for a command's flags.

Passwords are prompted without echo on a terminal (new ones twice). When
standard input is not a terminal, one password is read per line, in the
order the prompts would appear (new passwords once). They are never taken
from arguments or the environment.

Exit codes (the same table as sealbox's):
  0 success          4 refused by a rule, no such admin   7 sealed (status too)
  1 failure            or client                          8 too many attempts,
  2 usage, or input  5 daemon unreachable, keyring busy     retry later
    not acceptable   6 integrity check failed             9 a wait timed out
  3 wrong password or unknown admin
`

// Exit codes: errclass's table (errclass.Exit), shared with sealbox and
// documented in usage.
const (
	exitOK    = errclass.ExitOK
	exitUsage = errclass.ExitUsage
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
	cmd            *command // the command being run, once known
	wait           waiter   // the slow step shown (progress.go)
	// tcti is how a rekey on the file reaches the TPM to bind tpm2 slots
	// again (rekey --keep-unattended --tcti).
	tcti string
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
	c := &cli{ctx: audit.WithPeer(context.Background(), self)}
	c.wait.out, c.wait.tty = os.Stderr, stderrIsTerminal()
	c.stdout, c.stderr = endFirst{c, os.Stdout}, endFirst{c, os.Stderr}
	c.pw = prompt.New(os.Stdin, c.stderr)
	code := c.run(os.Args[1:])
	c.pw.Close()
	os.Exit(code)
}

func (c *cli) run(args []string) int {
	fs := flag.NewFlagSet("sealbox-admin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.global.register(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, usage())
			return exitOK
		}
		return c.fail(usagef("%v", err))
	}
	rest := fs.Args()
	if *showVersion {
		fmt.Fprintln(c.stdout, version.String("sealbox-admin"))
		return exitOK
	}
	if len(rest) == 0 {
		fmt.Fprint(c.stderr, usage())
		return exitUsage
	}
	if rest[0] == "help" {
		fmt.Fprint(c.stdout, usage())
		return exitOK
	}
	cmd, rest, err := lookup(c.stdout, rest)
	if err != nil {
		return c.fail(err)
	}
	if cmd == nil { // a group's --help
		return exitOK
	}
	c.cmd = cmd
	err = cmd.run(c, rest)
	c.end()
	return c.fail(err)
}

// fail prints err (if any) with a hint and returns its exit code.
func (c *cli) fail(err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errSealedState) {
		return errclass.ExitSealed // status printed it already
	}
	code, hint := classify(err)
	if errors.Is(err, api.ErrUnreachable) {
		hint = c.unreachableHint(err)
	}
	fmt.Fprintf(c.stderr, "sealbox-admin: error: %v\n", err)
	if hint != "" {
		fmt.Fprintf(c.stderr, "sealbox-admin: hint: %s\n", hint)
	}
	return code
}

// mode says where a command works.
type mode int

const (
	either     mode = iota // through the daemon, or on the file with --keyring
	daemonOnly             // through the daemon only
	fileOnly               // on the file only (--keyring, daemon stopped)
)

// command is one entry of the command table (table.go).
type command struct {
	name     string   // "add", or a group's "client add"
	args     string   // positional arguments, for the usage line: " NAME"
	nPos     int      // exact number of positional arguments (the least, with variadic)
	variadic bool     // more positional arguments may follow
	required []string // flags it cannot do without ("keyring" is the global one)
	mode     mode     // whether it works through the daemon, on the file, or both
	summary  string   // one line, for the list of commands
	help     string
	flags    func(fs *flag.FlagSet, o *opts)
	do       func(c *cli, o *opts) error
}

// opts collects every flag a command may take.
type opts struct {
	pos            []string
	set            map[string]bool // the flags given on the command line
	as             string
	admin          string
	secretFile     string
	kdfTime        string
	kdfMaxMemory   uint
	json           bool
	recovery       bool
	expires        string
	to             string
	rekey          bool
	recoveryCode   bool
	uid, gid       int64
	since, until   string
	jsonl          bool
	follow         bool
	auditUID       int64
	client         string
	limit          int
	repair         bool
	yes            bool
	reads          bool
	keepInvites    bool
	keepUnattended bool
	unit           string
	slotOpts
	bindOpts
}

func (cmd *command) run(c *cli, args []string) error {
	o := &opts{uid: -1, gid: -1, auditUID: -1}
	fs := cmd.flagSet(c, o)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(c.stdout, "Usage: sealbox-admin %s\n\n%s\n\nFlags:\n", cmd.synopsis(fs), cmd.help)
		fs.SetOutput(c.stdout)
		fs.PrintDefaults()
		return nil
	}
	if err != nil {
		return usagef("%s: %v", cmd.name, err)
	}
	if len(pos) != cmd.nPos && !(cmd.variadic && len(pos) > cmd.nPos) {
		want := "no arguments"
		if cmd.nPos > 0 {
			want = strings.TrimSpace(cmd.args)
		}
		return usagef("%s takes %s, got %d (usage: sealbox-admin %s)", cmd.name, want, len(pos), cmd.synopsis(fs))
	}
	o.pos = pos
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if c.global.keyring != "" && c.global.adminSocket != "" {
		return usagef("give --keyring or --admin-socket, not both")
	}
	switch {
	case cmd.mode == daemonOnly && c.global.keyring != "":
		return usagef("%s talks to the running daemon (a file has no unsealed state): drop --keyring", cmd.name)
	case cmd.mode == fileOnly && c.global.keyring == "":
		return usagef("%s works on the file: give --keyring PATH (stop the daemon first)", cmd.name)
	}
	for _, r := range cmd.required {
		if f := fs.Lookup(r); f == nil || strings.TrimSpace(f.Value.String()) == "" {
			return usagef("--%s is required (usage: sealbox-admin %s)", r, cmd.synopsis(fs))
		}
	}
	return cmd.do(c, o)
}

// flagSet is cmd's flags, the global ones included.
func (cmd *command) flagSet(c *cli, o *opts) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.global.register(fs)
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	return fs
}

// synopsis is cmd's usage line: its name, arguments and required flags,
// then [FLAGS] if it has others.
func (cmd *command) synopsis(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(cmd.name + cmd.args)
	for _, r := range cmd.required {
		if f := fs.Lookup(r); f != nil {
			name, _ := flag.UnquoteUsage(f)
			if name == "" || name == "value" {
				name = strings.ToUpper(r)
			}
			fmt.Fprintf(&b, " --%s %s", r, strings.ToUpper(name))
		}
	}
	others := 0
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "keyring" && f.Name != "admin-socket" && !slices.Contains(cmd.required, f.Name) {
			others++
		}
	})
	if others > 0 {
		b.WriteString(" [FLAGS]")
	}
	return b.String()
}

// lookup finds the command args name, a group's ("client add") included,
// and returns the arguments after its name. A group named alone, or with
// --help, lists its commands (cmd and err nil after --help).
func lookup(stdout io.Writer, args []string) (*command, []string, error) {
	name := args[0]
	if len(args) > 1 {
		if cmd := find(name + " " + args[1]); cmd != nil { // "audit verify"
			return cmd, args[2:], nil
		}
	}
	if cmd := find(name); cmd != nil {
		return cmd, args[1:], nil
	}
	var group []string
	for _, cmd := range commands {
		if g, sub, ok := strings.Cut(cmd.name, " "); ok && g == name {
			group = append(group, sub)
		}
	}
	if len(group) == 0 {
		return nil, nil, usagef("unknown command %q", name)
	}
	if len(args) > 1 {
		if args[1] == "--help" || args[1] == "-h" || args[1] == "help" {
			fmt.Fprintf(stdout, "Usage: sealbox-admin %s SUBCOMMAND [ARGS]\n\nSubcommands:\n", name)
			for _, cmd := range commands {
				if strings.HasPrefix(cmd.name, name+" ") {
					fmt.Fprintf(stdout, "  %-20s %s\n", strings.TrimPrefix(cmd.name, name+" "), cmd.summary)
				}
			}
			fmt.Fprintf(stdout, "\nRun 'sealbox-admin %s SUBCOMMAND --help' for its flags.\n", name)
			return nil, nil, nil
		}
		return nil, nil, usagef("unknown command %q; %s takes: %s", name+" "+args[1], name, strings.Join(group, ", "))
	}
	return nil, nil, usagef("%s needs a subcommand: %s", name, strings.Join(group, ", "))
}

func find(name string) *command {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

// usage is the top-level help: the command list comes from the table.
func usage() string {
	var b strings.Builder
	b.WriteString("Commands:\n")
	for _, cmd := range commands {
		syn := cmd.synopsis(cmd.flagSet(&cli{}, &opts{}))
		if len(syn) > 30 {
			fmt.Fprintf(&b, "  %s\n  %-30s %s\n", syn, "", cmd.summary)
		} else {
			fmt.Fprintf(&b, "  %-30s %s\n", syn, cmd.summary)
		}
	}
	return fmt.Sprintf(usageText, b.String())
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
