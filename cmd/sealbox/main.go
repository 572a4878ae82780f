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

const usage = `Usage: sealbox [--socket PATH] COMMAND [FLAGS]
       sealbox --version

Read the master secret from sealboxd. The socket is --socket, else
$SEALBOX_SOCKET, else /run/sealbox/sealbox.sock. This process's user must be
a registered client (sealbox-admin client add NAME --uid N --as ADMIN).

Commands:
  get [--wait D] [--out FILE] [--force]
        write the secret to stdout, or to FILE (created 0600, atomically);
        refuses a terminal without --force
  wait [--timeout D]
        block until the daemon is unsealed (for ExecStartPre=; give the
        unit a TimeoutStartSec= above D). Waits, here and with --wait,
        ride out a daemon that is not up yet or restarts until D runs out
        (exit 9); a refusal (exit 4) ends them at once
  exec [--env NAME | --fd N] [--wait D] -- CMD [ARGS...]
        run CMD with the secret on an inherited file descriptor (default:
        fd 3, path in $SEALBOX_SECRET_FILE, and any argument "{secret-file}"
        replaced by it), or with --env in the environment variable NAME;
        exits with CMD's status. Prefer the descriptor: an environment
        variable is readable in /proc/PID/environ by the same user and root,
        is inherited by every child, and ends up in crash reports
  status [--json]
        sealed or unsealed, and the client name this user is registered
        as; exits 7 when sealed

Exit codes (the same table as sealbox-admin's):
  0 success   1 failure   2 usage   4 refused (not a registered active
  client)   5 daemon unreachable   7 sealed (status too, after printing)
  9 timed out waiting (a wait retries an unreachable daemon, and so ends
  with 9, not 5)
`

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
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		return fail(stderr, usagef("%v", err))
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("sealbox"))
		return exitOK
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
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
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	sub := subcommand{socket: socket, connect: connect, stdout: stdout}
	var err error
	switch cmd {
	case "get":
		err = sub.get(ctx, rest)
	case "wait":
		err = sub.wait(ctx, rest)
	case "exec":
		var code int
		if code, err = sub.exec(ctx, rest); err == nil {
			return code
		}
	case "status":
		err = sub.status(ctx, rest)
	case "help":
		fmt.Fprint(stdout, usage)
	default:
		err = usagef("unknown command %q", cmd)
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
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

// flags parses a subcommand's flags; --help prints them.
func (s subcommand) flags(name, synopsis string, args []string, setup func(*flag.FlagSet)) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(s.socket, "socket", *s.socket, "service socket `path` (also accepted before the command)")
	setup(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stdout, "Usage: sealbox %s %s\n\nFlags:\n", name, synopsis)
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, usagef("%s: %v", name, err)
	}
	return fs, nil
}

func fetch(ctx context.Context, c *client.Client, wait time.Duration) ([]byte, error) {
	if wait > 0 {
		return c.WaitSecret(ctx, wait)
	}
	return c.Secret(ctx)
}

func (s subcommand) get(ctx context.Context, args []string) error {
	var wait time.Duration
	var out string
	var force bool
	fs, err := s.flags("get", "[--wait D] [--out FILE] [--force]", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&wait, "wait", 0, "wait up to `duration` for an unseal")
		fs.StringVar(&out, "out", "", "write to this `file` (created 0600, replaced atomically)")
		fs.BoolVar(&force, "force", false, "write to a terminal anyway")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("get: unexpected argument %q", fs.Arg(0))
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

func (s subcommand) wait(ctx context.Context, args []string) error {
	var timeout time.Duration
	fs, err := s.flags("wait", "[--timeout D]", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&timeout, "timeout", 5*time.Minute, "give up after `duration` (exit 9)")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("wait: unexpected argument %q", fs.Arg(0))
	}
	return s.connect().WaitUnsealed(ctx, timeout)
}

func (s subcommand) status(ctx context.Context, args []string) error {
	var asJSON bool
	fs, err := s.flags("status", "[--json]", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("status: unexpected argument %q", fs.Arg(0))
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
func (s subcommand) exec(ctx context.Context, args []string) (int, error) {
	var envName string
	var fd int
	var wait time.Duration
	fs, err := s.flags("exec", "[--env NAME | --fd N] [--wait D] -- CMD [ARGS...]", args, func(fs *flag.FlagSet) {
		fs.StringVar(&envName, "env", "", "put the secret in environment variable `NAME` (see the trade-off in --help)")
		fs.IntVar(&fd, "fd", 3, "hand the secret over on inherited file descriptor `n`")
		fs.DurationVar(&wait, "wait", 0, "wait up to `duration` for an unseal")
	})
	if err != nil {
		return 0, err
	}
	argv := fs.Args()
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
