package main

import (
	"os/user"
	"testing"
	"time"
)

func TestParseWhen(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	local := func(y int, m time.Month, d, h, min int) time.Time {
		return time.Date(y, m, d, h, min, 0, 0, time.Local)
	}
	for in, want := range map[string]time.Time{
		"90m":                  now.Add(-90 * time.Minute),
		"1d":                   now.Add(-24 * time.Hour),
		"1d12h":                now.Add(-36 * time.Hour),
		"2026-11-20":           local(2026, 11, 20, 0, 0),
		"2026-11-20 10:00":     local(2026, 11, 20, 10, 0),
		"2026-11-20T10:00":     local(2026, 11, 20, 10, 0),
		"2026-11-20T10:00:00Z": time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC),
	} {
		got, err := parseWhen("since", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-1h", "1d-2h", "2026-13-01", "d", "99999d"} {
		if _, err := parseWhen("since", bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestIDFlagTakesNumbersAndNames(t *testing.T) {
	t.Parallel()
	var v int64 = -1
	f := idFlag{v: &v}
	if err := f.Set("1234"); err != nil || v != 1234 {
		t.Fatalf("number: %d %v", v, err)
	}
	root, err := user.Lookup("root")
	if err != nil {
		t.Fatal("no root user in this system's user database")
	}
	if err := f.Set("root"); err != nil || root.Uid != "0" || v != 0 {
		t.Fatalf("root: %d %v", v, err)
	}
	if err := f.Set("no-such-user-here"); err == nil {
		t.Fatal("an unknown user was accepted")
	}
	if err := f.Set("4294967295"); err == nil {
		t.Fatal("uid -1 (4294967295) was accepted")
	}
	g := idFlag{v: &v, group: true}
	if err := g.Set("root"); err != nil || v != 0 {
		t.Fatalf("group root: %d %v", v, err)
	}
}
