package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/prompt"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/tpm2"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// bindOpts are the flags of bind and unbind.
type bindOpts struct {
	thp        string
	name       string
	pcrs       string
	tcti       string
	helperKind string
}

func bindFlags(fs *flag.FlagSet, o *opts) {
	asFlag(fs, o)
	fs.StringVar(&o.name, "name", "", "the new slot's `name` (default: tang-1, tpm2-1, threshold-1, … the first free)")
}

// fetchTimeout bounds fetching a Tang server's advertisement.
const fetchTimeout = 10 * time.Second

func (c *cli) bindTang(o *opts) error {
	url, err := tang.CheckURL(o.pos[0])
	if err != nil {
		return usagef("bind tang: %q: %v", o.pos[0], err)
	}
	ctx, cancel := context.WithTimeout(c.ctx, fetchTimeout)
	adv, err := tang.Fetch(ctx, tang.Client(unattended.DefaultDialTimeout), url)
	cancel()
	if err != nil {
		return fmt.Errorf("fetching %s/adv: %w", url, err)
	}
	signers := adv.Signers()
	thp := o.thp
	if thp == "" {
		fmt.Fprintf(c.stderr, "The advertisement of %s is signed by the key(s) with thumbprint:\n", url)
		for _, s := range signers {
			fmt.Fprintf(c.stderr, "  %s\n", s)
		}
		fmt.Fprintf(c.stderr, "Compare with the server's (on it: tang-show-keys, or jose jwk thp -i KEY.jwk).\n")
		ok, err := c.pw.Confirm("trust this server?")
		if errors.Is(err, prompt.ErrNoTerminal) {
			return usagef("bind tang: no terminal to confirm the server's key on; pass --thp THUMBPRINT, read on the server")
		}
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: the server was not trusted; nothing was bound", errNotConfirmed)
		}
		thp = signers[0]
	}
	if err := adv.Trust(thp); err != nil {
		return fmt.Errorf("%w: %v (signed by %s)", errUntrusted, err, strings.Join(signers, ", "))
	}
	return c.doBind(o, &api.BindRequest{Kind: "tang", URL: url, Adv: adv.JWS(), Thp: thp})
}

var (
	errNotConfirmed = errclass.New(errclass.Refused, "not confirmed")
	errUntrusted    = errclass.New(errclass.Integrity, "the server's advertisement is not signed by the trusted key")
)

func tpmFlags(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.tcti, "tcti", "device:/dev/tpmrm0", "how tpm2-tools reach the TPM, on the file (`TCTI`; through the daemon, its tpm2_tcti)")
}

func (c *cli) bindTPM2(o *opts) error {
	var pcrs []int
	for _, f := range strings.Split(o.pcrs, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p < 0 || p > api.MaxPCR {
			return usagef("bind tpm2: --pcrs %q: want PCR numbers 0 to %d, comma-separated (such as 7 or 7,14)", o.pcrs, api.MaxPCR)
		}
		pcrs = append(pcrs, p)
	}
	return c.doBind(o, &api.BindRequest{Kind: "tpm2", PCRs: pcrs})
}

func (c *cli) bindThreshold(o *opts) error {
	t, err := strconv.Atoi(o.pos[0])
	members := o.pos[1:]
	if err != nil || t < 1 || t > len(members) {
		return usagef("bind threshold: %q: want a number from 1 to the number of slots named (%d)", o.pos[0], len(members))
	}
	for _, m := range members {
		if err := keyring.ValidName(m); err != nil {
			return usagef("bind threshold: slot name: %v", err)
		}
	}
	return c.doBind(o, &api.BindRequest{Kind: "threshold", T: t, Members: members})
}

func (c *cli) doBind(o *opts, req *api.BindRequest) error {
	return c.asActor(o, func(b backend, apw []byte) error {
		name := o.name
		if name == "" {
			var err error
			if name, err = freeName(c.ctx, b, req.Kind); err != nil {
				return err
			}
		} else if err := keyring.ValidName(name); err != nil {
			return usagef("--name: %v", err)
		}
		req.Actor, req.ActorPassword, req.Name = o.as, apw, name
		pin, err := b.Bind(c.ctx, req, c.offlineEnv(o.tcti))
		if err != nil {
			return err
		}
		switch req.Kind {
		case "threshold":
			fmt.Fprintf(c.stdout, "bound %s: %d of %s (those slots are now its members)\n", name, req.T, strings.Join(req.Members, ", "))
		case "tang":
			fmt.Fprintf(c.stdout, "bound %s to %s (signing key %s)\n", name, req.URL, req.Thp)
		default:
			fmt.Fprintf(c.stdout, "bound %s to this machine's TPM, PCRs sha256:%s\n", name, o.pcrs)
		}
		fmt.Fprintf(c.stdout, "keyring identity: %s\n", pin)
		fmt.Fprintf(c.stderr, "sealbox-admin: sealboxd tries it at its next start once its configuration pins this keyring (as root, in /etc/sealbox/sealboxd.toml):\n  unattended_identity = %q\nand the helper units reach it (see docs/fleet.md)\n", pin)
		return nil
	})
}

// freeName picks kind-1, kind-2, … the first that no slot has.
func freeName(ctx context.Context, b backend, kind string) (string, error) {
	list, err := b.ListAdmins(ctx)
	if err != nil {
		return "", err
	}
	taken := map[string]bool{}
	for _, a := range list {
		taken[a.Name] = true
	}
	for i := 1; ; i++ {
		if n := fmt.Sprintf("%s-%d", kind, i); !taken[n] {
			return n, nil
		}
	}
}

func (c *cli) unbind(o *opts) error {
	name := o.pos[0]
	if err := keyring.ValidName(name); err != nil {
		return usagef("slot name: %v", err)
	}
	return c.asActor(o, func(b backend, apw []byte) error {
		if err := b.Unbind(c.ctx, o.as, apw, name); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "unbound %s\n", name)
		return nil
	})
}

// offlineEnv is how sealbox-admin reaches the TPM on the file (--tcti).
func (c *cli) offlineEnv(tcti string) *unattended.Env {
	return &unattended.Env{TPM: tpm2.Config{TCTI: tcti}}
}

// unattendedHelper serves one request of sealboxd on stdin/stdout.
func (c *cli) unattendedHelper(o *opts) error {
	var kind keyring.SlotKind
	switch o.helperKind {
	case "tang":
		kind = keyring.KindTang
	case "tpm2":
		kind = keyring.KindTPM2
	default:
		return usagef("unattended-helper: --kind %q: want tang or tpm2", o.helperKind)
	}
	in, out := io.Reader(os.Stdin), c.stdout
	// Under a socket unit with Accept=yes, stdin and stdout are the
	// connection. As a net.Conn it takes a read deadline, so a client that
	// connects and sends nothing does not hold this process until
	// RuntimeMaxSec.
	//
	// Only a socket is handed to net.FileConn: it sets O_NONBLOCK on the
	// duplicate it makes, which shares the file description, before it
	// finds out the descriptor is not a socket. A pipe left non-blocking
	// that way fails the plain read below with EAGAIN whenever the writer
	// is slower than this process.
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeSocket != 0 {
		conn, err := net.FileConn(os.Stdin)
		if err != nil {
			return fmt.Errorf("unattended-helper: stdin is a socket but not usable: %w", err)
		}
		defer conn.Close()
		in, out = conn, conn
	}
	return unattended.ServeHelper(c.ctx, unattended.HelperConfig{Kind: kind, TPM: tpm2.Config{TCTI: o.tcti}}, in, out)
}
