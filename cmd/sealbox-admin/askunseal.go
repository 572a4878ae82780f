package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/askpw"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
)

func (c *cli) askUnseal(o *opts) error {
	limit, err := time.ParseDuration(o.expires)
	if err != nil || limit < 0 {
		return usagef("--timeout: want a duration such as 10m, or 0s for no limit")
	}
	ctx := c.ctx
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	ac := api.NewClient(c.adminSocket())
	defer ac.Close()
	pw, err := memlock.New(admin.MaxPasswordLen, memlock.Options{AllowUnlocked: true})
	if err != nil {
		return err
	}
	defer pw.Destroy()
	said := false
	for {
		st, err := ac.Status(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("still sealed after %v", limit)
		case err != nil:
			if !said {
				fmt.Fprintf(c.stderr, "sealbox-admin: waiting for sealboxd at %s: %v\n", c.adminSocket(), err)
				said = true
			}
			if sleepCtx(ctx, time.Second) != nil {
				return fmt.Errorf("still sealed after %v", limit)
			}
			continue
		case !st.Sealed:
			fmt.Fprintf(c.stdout, "unsealed (by %s)\n", st.UnsealedBy)
			return nil
		}
		if err := c.askOnce(ctx, ac, o.to, pw.Bytes()); err != nil {
			var be *admin.BackoffError
			switch {
			case errors.Is(err, errUnsealedMeanwhile):
				continue // the next status says so
			case ctx.Err() != nil:
				return fmt.Errorf("still sealed after %v", limit)
			case errors.Is(err, errclass.Auth):
				fmt.Fprintln(c.stderr, "sealbox-admin: wrong admin name or password; asking again")
			case errors.As(err, &be):
				fmt.Fprintf(c.stderr, "sealbox-admin: %v\n", err)
				_ = sleepCtx(ctx, be.RetryAfter)
			default:
				fmt.Fprintf(c.stderr, "sealbox-admin: %v; asking again\n", err)
				_ = sleepCtx(ctx, time.Second)
			}
		}
	}
}

var errUnsealedMeanwhile = errors.New("unsealed by another path while asking")

// askOnce asks for a name and a password and tries them. The questions are
// withdrawn as soon as the daemon is unsealed by another path.
func (c *cli) askOnce(ctx context.Context, ac *api.Client, dir string, pw []byte) error {
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for sleepCtx(qctx, time.Second) == nil {
			if st, err := ac.Status(qctx); err == nil && !st.Sealed {
				cancel()
				return
			}
		}
	}()
	var nameBuf [64]byte
	n, err := askpw.Ask(qctx, askpw.Question{Message: "sealbox: name of the admin who unseals:", ID: "sealbox:unseal", Icon: "dialog-password", Echo: true, Dir: dir}, nameBuf[:])
	if err != nil {
		return c.askErr(ctx, qctx, err)
	}
	name := string(nameBuf[:n])
	n, err = askpw.Ask(qctx, askpw.Question{Message: "sealbox: password of admin " + name + ":", ID: "sealbox:unseal:" + name, Icon: "dialog-password", Dir: dir}, pw)
	if err != nil {
		return c.askErr(ctx, qctx, err)
	}
	defer memlock.Wipe(pw[:n])
	st, err := ac.Unseal(ctx, name, pw[:n])
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "unsealed by %s (%d active clients can read now)\n", name, st.ActiveClients)
	return nil
}

func (c *cli) askErr(ctx, qctx context.Context, err error) error {
	if qctx.Err() != nil && ctx.Err() == nil {
		return errUnsealedMeanwhile
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
