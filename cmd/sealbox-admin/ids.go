package main

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"time"
)

// idFlag is a --uid or --gid: a number, or a user or group name resolved
// on this host (www-data).
type idFlag struct {
	v     *int64
	group bool
}

func (f idFlag) name() string {
	if f.group {
		return "--gid"
	}
	return "--uid"
}

func (f idFlag) String() string {
	if f.v == nil || *f.v < 0 {
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}

func (f idFlag) Set(s string) error {
	if s != "" && (s[0] == '-' || s[0] >= '0' && s[0] <= '9') {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n > 1<<32-2 {
			return fmt.Errorf("%s wants an id from 0 to 4294967294, or a name", f.name())
		}
		*f.v = int64(n)
		return nil
	}
	var id string
	if f.group {
		g, err := user.LookupGroup(s)
		if err != nil {
			return fmt.Errorf("no group %q on this host (give a number, or an existing group)", s)
		}
		id = g.Gid
	} else {
		u, err := user.Lookup(s)
		if err != nil {
			return fmt.Errorf("no user %q on this host (give a number, or an existing user)", s)
		}
		id = u.Uid
	}
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return fmt.Errorf("%q has id %q, not a number", s, id)
	}
	*f.v = int64(n)
	return nil
}

// parseWhen reads --since and --until: a duration back from now, with d
// for days (90m, 36h, 1d, 1d12h), a date (2026-11-20, midnight local
// time), a local date and time (2026-11-20 10:00 or 2026-11-20T10:00), or
// an RFC 3339 time (2026-11-20T10:00:00Z).
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	if d, err := parseDays(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("--%s: a duration back from now cannot be negative", flag)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		var t time.Time
		var err error
		if layout == time.RFC3339Nano {
			t, err = time.Parse(layout, s)
		} else {
			t, err = time.ParseInLocation(layout, s, time.Local)
		}
		if err == nil {
			return t, nil
		}
	}
	return time.Time{}, usagef("--%s: want a duration back from now (90m, 36h, 1d), a date (2026-11-20), a local time (2026-11-20 10:00) or an RFC 3339 time (2026-11-20T10:00:00Z); got %q", flag, s)
}

// parseDays is time.ParseDuration with a leading whole number of days.
func parseDays(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	n, err := strconv.ParseUint(days, 10, 16)
	if err != nil {
		return 0, err
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest == "" {
		return d, nil
	}
	r, err := time.ParseDuration(rest)
	if err != nil || r < 0 {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return d + r, nil
}
