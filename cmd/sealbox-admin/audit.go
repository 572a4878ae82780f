package main

import (
	"fmt"
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
	if o.since != "" {
		if d, err := time.ParseDuration(o.since); err == nil && d >= 0 {
			f.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, o.since); err == nil {
			f.Since = t
		} else {
			return f, usagef("--since: want an RFC 3339 time (2026-11-22T09:00:00Z) or a duration (24h)")
		}
	}
	return f, nil
}

func (c *cli) auditList(o *opts) error {
	f, err := o.filter()
	if err != nil {
		return err
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
	if o.json {
		if recs == nil {
			recs = []audit.Record{}
		}
		return writeJSON(c.stdout, recs)
	}
	for i := range recs {
		fmt.Fprintln(c.stdout, recs[i].String())
	}
	return nil
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
