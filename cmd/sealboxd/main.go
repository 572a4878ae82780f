// Command sealboxd is the sealbox daemon: it holds the keyring, starts
// sealed, and serves the master secret to registered local clients once an
// admin has unsealed it. See the daemon package.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/sealbox/sealbox/config"
	"github.com/sealbox/sealbox/daemon"
	"github.com/sealbox/sealbox/internal/logbuf"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/internal/version"
)

const usage = `Usage: sealboxd [--config FILE] [--keyring PATH] [--socket PATH] [--admin-socket PATH] [--version]

The sealbox daemon. It opens the keyring (and holds it for its lifetime),
starts sealed, and listens on two Unix sockets:

  service socket  GET /v1/secret[?wait=30s], GET /v1/status, for registered
                  clients only (kernel-attested uid/gid; root is not special)
  admin socket    unseal, seal, status, admin and client changes, for
                  sealbox-admin (mode 0600)

Signals: SIGTERM/SIGINT seal (wipe the secret), close the sockets and exit 0;
SIGHUP reloads log_level, max_wait and credential_wait from --config.

Flags override the config file. Defaults: keyring /var/lib/sealbox/keyring.db,
socket /run/sealbox/sealbox.sock, admin socket /run/sealbox/admin.sock.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("sealboxd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var flags config.Flags
	flags.Register(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sealboxd: error: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(os.Stdout, version.String("sealboxd"))
		return 0
	}
	// The daemon's live heap is a few MiB and a read allocates about a KiB,
	// so at Go's default (GOGC=100) it collects several times a second under
	// load: a fifth of what a read costs beyond a bare HTTP server
	// (docs/BENCHMARKS.md). Four times the live heap between collections
	// costs a few MiB; freed memory still goes back to the kernel when idle,
	// and admin requests still collect at once. GOGC in the environment
	// overrides it.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	// Before anything secret exists: no core dumps, no ptrace by others.
	if err := memlock.HardenProcess(); err != nil {
		fmt.Fprintf(stderr, "sealboxd: error: %v\n", err)
		return 1
	}
	cfg, err := flags.Load()
	if err != nil {
		fmt.Fprintf(stderr, "sealboxd: error: %v\n", err)
		return 2
	}
	level := new(slog.LevelVar)
	level.Set(cfg.Level())
	// One line per read: buffer them, rather than one write(2) per request.
	logOut := logbuf.New(stderr, 64<<10, 100*time.Millisecond)
	defer logOut.Close()
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
	notify := func(state string) {
		if err := daemon.Notify(state); err != nil {
			log.Warn("sd_notify failed", "error", err)
		}
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	d, err := daemon.New(cfg, daemon.Options{Log: log, Level: level, Notify: notify})
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		for s := range sigs {
			if s != syscall.SIGHUP {
				log.Info("stopping", "signal", s.String())
				d.Seal("signal "+s.String(), nil)
				cancel()
				return
			}
			if flags.File == "" {
				log.Info("SIGHUP: no --config file to reload")
				continue
			}
			c, err := flags.Load()
			if err != nil {
				log.Error("reload failed; keeping the running configuration", "error", err)
				continue
			}
			for _, w := range c.Warnings {
				log.Warn(w)
			}
			d.Reload(c)
		}
	}()
	if err := d.Serve(ctx); err != nil {
		log.Error("stopped on error", "error", err)
		return 1
	}
	return 0
}
