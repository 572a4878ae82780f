package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
)

func (o *opts) filter() (audit.Filter, error) {
	f := audit.Filter{Client: o.client, Admin: o.admin, Limit: o.limit, Reads: o.reads}
	if o.limit < 0 {
		return f, usagef("--limit: want a whole number")
	}
	now := time.Now()
	var err error
	if o.since != "" {
		if f.Since, err = parseWhen("since", o.since, now); err != nil {
			return f, err
		}
	}
	if o.until != "" {
		if f.Until, err = parseWhen("until", o.until, now); err != nil {
			return f, err
		}
		if !f.Since.IsZero() && !f.Until.After(f.Since) {
			return f, usagef("--until must be after --since")
		}
	}
	if o.auditUID >= 0 {
		u := uint32(o.auditUID)
		f.UID = &u
	}
	return f, nil
}

func (c *cli) auditList(o *opts) error {
	f, err := o.filter()
	if err != nil {
		return err
	}
	if o.follow {
		return c.auditFollow(o, f)
	}
	var recs []audit.Record
	if c.global.keyring != "" {
		off, err := c.openOffline(true)
		if err != nil {
			return err
		}
		defer off.Close()
		recs, err = off.AuditRecords(f)
		if err != nil {
			return err
		}
	} else {
		ac := api.NewClient(c.adminSocket())
		defer ac.Close()
		if recs, err = ac.Audit(c.ctx, f); err != nil {
			return err
		}
	}
	if o.json && !o.jsonl {
		if recs == nil {
			recs = []audit.Record{}
		}
		return writeJSON(c.stdout, recs)
	}
	for i := range recs {
		if err := c.printRecord(o, &recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// auditFollow streams the log through the daemon until Ctrl-C.
func (c *cli) auditFollow(o *opts, f audit.Filter) error {
	if c.global.keyring != "" {
		return usagef("--follow works through the daemon (the file is not written while it is stopped): drop --keyring")
	}
	ctx, stop := signal.NotifyContext(c.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ac := api.NewClient(c.adminSocket())
	defer ac.Close()
	return ac.FollowAudit(ctx, f, func(rec audit.Record) error { return c.printRecord(o, &rec) })
}

// printRecord writes one record: a line of text, or of JSON (--jsonl, or
// --json while following).
func (c *cli) printRecord(o *opts, rec *audit.Record) error {
	if o.jsonl || (o.json && o.follow) {
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(append(b, '\n'))
		return err
	}
	_, err := fmt.Fprintln(c.stdout, rec.String())
	return err
}

func (c *cli) auditVerify(o *opts) error {
	var rep *audit.Report
	if c.global.keyring != "" {
		if o.as == "" {
			return usagef("offline, audit verify needs --as NAME: the audit key comes from an admin's password")
		}
		off, err := c.openOffline(false)
		if err != nil {
			return err
		}
		defer off.Close()
		pw, err := c.pw.Password(o.as + "'s password")
		if err != nil {
			return err
		}
		defer memlock.Wipe(pw)
		if rep, err = off.VerifyAudit(c.ctx, o.as, pw); err != nil {
			return err
		}
	} else {
		ac := api.NewClient(c.adminSocket())
		defer ac.Close()
		var err error
		if rep, err = ac.VerifyAudit(c.ctx); err != nil {
			return err
		}
	}
	if o.json {
		return writeJSON(c.stdout, rep)
	}
	for _, sr := range []struct {
		name string
		r    audit.StreamReport
	}{{"events", rep.Events}, {"reads", rep.Reads}} {
		fmt.Fprintf(c.stdout, "audit %s: ok, %d records (%d to %d), %d keyed", sr.name, sr.r.Records, sr.r.First, sr.r.Last, sr.r.Keyed)
		if sr.r.Pruned > 0 {
			fmt.Fprintf(c.stdout, ", anchored after pruning through %d", sr.r.Pruned)
		}
		fmt.Fprintln(c.stdout)
		if sr.r.Unanchored > 0 {
			fmt.Fprintf(c.stderr, "sealbox-admin: warning: the last %d %s records were written with no key at hand (before any unseal): chained, but not yet authenticated\n", sr.r.Unanchored, sr.name)
		}
	}
	return nil
}
