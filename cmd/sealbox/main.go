// Command sealbox reads the master secret from sealboxd for local services
// and scripts: print it, write it to a file, wait for an unseal, or start a
// program with it. It must run as a registered client's user.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/sealbox/sealbox/client"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/version"
)

const usageHead = `Usage: sealbox [--socket PATH] COMMAND [FLAGS]
       sealbox --version

Read the master secret from sealboxd. The socket is --socket (before or
after the command), else $SEALBOX_SOCKET, else /run/sealbox/sealbox.sock.
This process's user must be a registered client (sealbox-admin client add
NAME --uid N --as ADMIN).

Commands:
`

const usageTail = `
Exit codes (the same table as sealbox-admin's):
  0 success   1 failure   2 usage   4 refused (not a registered active
  client)   5 daemon unreachable   7 sealed (status too, after printing)
  9 timed out waiting (a wait retries an unreachable daemon, and so ends
  with 9, not 5)
`

// options are every command's flags.
type options struct {
	wait, timeout time.Duration
	out           string
	force, json   bool
	env           string
	fd            int
}

// command is one entry of the command table: the usage text, each
// command's --help, the man page and the completions come from it.
type command struct {
	name, synopsis, summary string
	help                    string // paragraphs, as in the man page
	flags                   func(fs *flag.FlagSet, o *options)
	run                     func(s subcommand, ctx context.Context, o *options, args []string) (int, error)
}

var commands = []*command{
	{
		name: "get", synopsis: "get [--wait D] [--out FILE] [--force]",
		summary: "write the secret to stdout, or to FILE (created 0600, atomically); refuses a terminal without --force",
		help:    "Write the master secret to standard output, or with --out to FILE, created 0600 beside its final name and renamed over it. A terminal is refused without --force: the secret would land on screen and in scrollback.",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.DurationVar(&o.wait, "wait", 0, "wait up to `duration` for an unseal")
			fs.StringVar(&o.out, "out", "", "write to this `file` (created 0600, replaced atomically)")
			fs.BoolVar(&o.force, "force", false, "write to a terminal anyway")
		},
		run: noCode(subcommand.get),
	},
	{
		name: "wait", synopsis: "wait [--timeout D]",
		summary: "block until the daemon is unsealed (for ExecStartPre=)",
		help:    "Block until the daemon is unsealed, for ExecStartPre=; give the unit a TimeoutStartSec= above D. Waits, here and with --wait, ride out a daemon that is not up yet or restarts until D runs out (exit 9); a refusal (exit 4) ends them at once.",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after `duration` (exit 9)")
		},
		run: noCode(subcommand.wait),
	},
	{
		name: "exec", synopsis: "exec [--env NAME | --fd N] [--wait D] -- CMD [ARGS...]",
		summary: "run CMD with the secret on an inherited descriptor (or in an environment variable)",
		help:    "Run CMD with the secret on an inherited file descriptor (default: fd 3, its path in $SEALBOX_SECRET_FILE, and any argument \"{secret-file}\" replaced by it), or with --env in the environment variable NAME; exits with CMD's status. Prefer the descriptor: an environment variable is readable in /proc/PID/environ by the same user and root, is inherited by every child, and ends up in crash reports.",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.StringVar(&o.env, "env", "", "put the secret in environment variable `NAME` (see the trade-off in --help)")
			fs.IntVar(&o.fd, "fd", 3, "hand the secret over on inherited file descriptor `n`")
			fs.DurationVar(&o.wait, "wait", 0, "wait up to `duration` for an unseal")
		},
		run: subcommand.exec,
	},
	{
		name: "status", synopsis: "status [--json]",
		summary: "sealed or unsealed, and this user's client name; exits 7 when sealed",
		help:    "Print whether the daemon is sealed and the client name this user is registered as; exits 7 when sealed.",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.BoolVar(&o.json, "json", false, "print JSON")
		},
		run: noCode(subcommand.status),
	},
}

// noCode adapts a command that has no exit status of its own.
func noCode(f func(subcommand, context.Context, *options, []string) error) func(subcommand, context.Context, *options, []string) (int, error) {
	return func(s subcommand, ctx context.Context, o *options, args []string) (int, error) {
		return exitOK, f(s, ctx, o, args)
	}
}

// usage is the top-level help: the command list comes from the table.
func usage() string {
	var b strings.Builder
	b.WriteString(usageHead)
	for _, c := range commands {
		fmt.Fprintf(&b, "  %s\n", c.synopsis)
		for _, line := range wrap(c.summary, 66) {
			fmt.Fprintf(&b, "        %s\n", line)
		}
	}
	b.WriteString(usageTail)
	return b.String()
}

// wrap breaks text into lines of at most width columns.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

const exitOK = errclass.ExitOK

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if err := memlock.HardenProcess(); err != nil {
		fmt.Fprintf(stderr, "sealbox: warning: %v\n", err)
	}
	fs := flag.NewFlagSet("sealbox", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", "", "service socket `path`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage())
			return exitOK
		}
		return fail(stderr, usagef("%v", err))
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("sealbox"))
		return exitOK
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage())
		return errclass.ExitUsage
	}
	// --socket may also follow the command (sealbox get --socket X), so
	// the client is made once the command's flags are parsed.
	var c *client.Client
	connect := func() *client.Client {
		c = client.New(*socket)
		// Once per outage, not per retry: a wait that rides out a restart
		// says so once in the journal.
		c.OnUnreachable(func(err error) {
			fmt.Fprintf(stderr, "sealbox: sealboxd is not reachable yet (%v); retrying until the wait runs out\n", err)
		})
		return c
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	name, rest := fs.Arg(0), fs.Args()[1:]
	sub := subcommand{socket: socket, connect: connect, stdout: stdout}
	if name == "help" {
		fmt.Fprint(stdout, usage())
		return exitOK
	}
	cmd := find(name)
	if cmd == nil {
		return fail(stderr, usagef("unknown command %q", name))
	}
	o, pos, err := sub.parse(cmd, rest)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err == nil {
		var code int
		if code, err = cmd.run(sub, ctx, o, pos); err == nil {
			return code
		}
	}
	return fail(stderr, err)
}

func fail(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	if !errors.Is(err, errSealedStatus) {
		fmt.Fprintf(stderr, "sealbox: error: %v\n", err)
	}
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "sealbox: hint: run 'sealbox --help' for usage")
		return errclass.ExitUsage
	case errors.Is(err, errSealedStatus):
	case errors.Is(err, client.ErrSealed):
		fmt.Fprintln(stderr, "sealbox: hint: an admin must run: sealbox-admin unseal --admin NAME (or pass --wait)")
	case errors.Is(err, client.ErrRefused):
		fmt.Fprintf(stderr, "sealbox: hint: register this user: sealbox-admin client add NAME --uid %d --as ADMIN\n", os.Getuid())
	case errors.Is(err, syscall.EACCES):
		fmt.Fprintln(stderr, "sealbox: hint: this user may not open the socket: check its mode (sealboxd makes it 0666) and its directories'")
	case errors.Is(err, client.ErrUnreachable):
		fmt.Fprintln(stderr, "sealbox: hint: is sealboxd running? (systemctl status sealboxd); --socket or $SEALBOX_SOCKET name another socket")
	}
	return errclass.Exit(errclass.Of(err))
}

// errSealedStatus is status's answer when the daemon is sealed: printed as
// a status, not an error, and exits 7 like every sealed answer.
var errSealedStatus = errclass.New(errclass.Sealed, "sealed")

// subcommand is what every command needs: the socket flag (which may come
// after the command's name) and a way to make the client once it is known.
type subcommand struct {
	socket  *string
	connect func() *client.Client
	stdout  io.Writer
}

func find(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// flagSet is cmd's flags, --socket included.
func (cmd *command) flagSet(socket *string, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(socket, "socket", *socket, "service socket `path` (also accepted before the command)")
	cmd.flags(fs, o)
	return fs
}

// parse parses cmd's flags and returns them with the arguments left;
// --help prints the command's usage and flags.
func (s subcommand) parse(cmd *command, args []string) (*options, []string, error) {
	o := &options{}
	fs := cmd.flagSet(s.socket, o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(s.stdout, "Usage: sealbox %s\n\n%s\n\nFlags:\n", cmd.synopsis, strings.Join(wrap(cmd.help, 76), "\n"))
			fs.SetOutput(s.stdout)
			fs.PrintDefaults()
			return nil, nil, err
		}
		return nil, nil, usagef("%s: %v", cmd.name, err)
	}
	return o, fs.Args(), nil
}

func fetch(ctx context.Context, c *client.Client, wait time.Duration) ([]byte, error) {
	if wait > 0 {
		return c.WaitSecret(ctx, wait)
	}
	return c.Secret(ctx)
}

func (s subcommand) get(ctx context.Context, o *options, args []string) error {
	wait, out, force := o.wait, o.out, o.force
	if len(args) > 0 {
		return usagef("get: unexpected argument %q", args[0])
	}
	if out == "" && !force {
		if f, ok := s.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return usagef("get: stdout is a terminal; the secret would land on screen and in scrollback. Use --out FILE, a pipe, or --force")
		}
	}
	secret, err := fetch(ctx, s.connect(), wait)
	if err != nil {
		return err
	}
	defer clear(secret)
	if out != "" {
		return writeFileAtomic(out, secret)
	}
	_, err = s.stdout.Write(secret)
	return err
}

// writeFileAtomic writes data to a new 0600 file beside path, syncs it and
// renames it over path, so readers see the old file or the whole new one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating the output file: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600 from the start.
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (s subcommand) wait(ctx context.Context, o *options, args []string) error {
	if len(args) > 0 {
		return usagef("wait: unexpected argument %q", args[0])
	}
	return s.connect().WaitUnsealed(ctx, o.timeout)
}

func (s subcommand) status(ctx context.Context, o *options, args []string) error {
	asJSON := o.json
	if len(args) > 0 {
		return usagef("status: unexpected argument %q", args[0])
	}
	st, err := s.connect().Status(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		if err := json.NewEncoder(s.stdout).Encode(st); err != nil {
			return err
		}
	} else {
		state := "unsealed"
		if st.Sealed {
			state = "sealed"
		}
		fmt.Fprintf(s.stdout, "%s (this user is client %s)\n", state, st.Client)
	}
	if st.Sealed {
		return errSealedStatus // exit 7, as a script testing for sealed expects
	}
	return nil
}

// execCmd runs CMD with the secret and returns its exit status. With --fd
// (the default) the secret waits in a pipe whose read end CMD inherits as
// fd N: it never touches a file system, an argument list or the
// environment. With --env it is in CMD's environment, readable in
// /proc/PID/environ by the same user and root and inherited by every child:
// use it only for programs that cannot read a file. sealbox stays as CMD's
// parent, forwards signals to it and exits with its status; it holds no copy
// of the secret meanwhile.
func (s subcommand) exec(ctx context.Context, o *options, argv []string) (int, error) {
	envName, fd, wait := o.env, o.fd, o.wait
	if len(argv) == 0 {
		return 0, usagef("exec: name a command after --")
	}
	if fd < 3 || fd > 255 {
		return 0, usagef("exec: --fd must be 3 to 255 (0-2 are stdin, stdout, stderr)")
	}
	if strings.ContainsAny(envName, "=\x00") {
		return 0, usagef("exec: --env needs a variable name without '='")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	secret, err := fetch(ctx, s.connect(), wait)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = os.Environ()
	if envName != "" {
		if bytes.IndexByte(secret, 0) >= 0 {
			clear(secret)
			return 0, fmt.Errorf("exec: the secret contains a NUL byte and cannot go in an environment variable; use --fd")
		}
		cmd.Env = append(cmd.Env, envName+"="+string(secret))
		clear(secret)
	} else {
		r, w, err := os.Pipe()
		if err != nil {
			clear(secret)
			return 0, err
		}
		// A pipe holds 64 KiB, the largest secret: this write never blocks.
		_, werr := w.Write(secret)
		clear(secret)
		w.Close()
		if werr != nil {
			r.Close()
			return 0, fmt.Errorf("exec: filling the pipe: %w", werr)
		}
		defer r.Close()
		// Entry i of ExtraFiles becomes fd 3+i in the child; nil entries
		// stay closed.
		cmd.ExtraFiles = make([]*os.File, fd-2)
		cmd.ExtraFiles[fd-3] = r
		file := "/dev/fd/" + strconv.Itoa(fd)
		for i := range cmd.Args {
			cmd.Args[i] = strings.ReplaceAll(cmd.Args[i], "{secret-file}", file)
		}
		cmd.Env = append(cmd.Env, "SEALBOX_SECRET_FILE="+file)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	for _, f := range cmd.ExtraFiles {
		if f != nil {
			f.Close() // the child has its copy
		}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}
