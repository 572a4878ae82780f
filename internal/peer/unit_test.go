package peer

import (
	"errors"
	"strings"
	"testing"
)

func TestUnits(t *testing.T) {
	for _, tc := range []struct{ cgroup, unit, userUnit string }{
		{`/system.slice/system-cred\x2doneshot.slice/cred-oneshot@a.service`, `cred-oneshot@a.service`, ""},
		{`/system.slice/sealboxd.service`, "sealboxd.service", ""},
		{`/system.slice/docker-0123abcd.scope`, "docker-0123abcd.scope", ""},
		{`/system.slice/sealboxd.socket`, "sealboxd.socket", ""},
		{`/system.slice/var-lib.mount`, "var-lib.mount", ""},
		{`/init.scope`, "init.scope", ""},
		{`/user.slice/user-1000.slice/session-3.scope`, "session-3.scope", ""},
		{`/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service`, "user@1000.service", "foo.service"},
		{`/user.slice/user-1000.slice/user@1000.service/init.scope`, "user@1000.service", "init.scope"},
		{`/user.slice/user-1000.slice/user@1000.service`, "user@1000.service", ""},
		{`/user.slice/user-1000.slice/user@1000.service/app.slice`, "user@1000.service", ""},
		// Delegated subtrees belong to the delegating unit, whatever they are called.
		{`/system.slice/foo.service/bar.service`, "foo.service", ""},
		{`/system.slice/foo.service/payload/system.slice/victim.service`, "foo.service", ""},
		{`/system.slice/foo.service/x`, "foo.service", ""},
		// systemd's cgroup escape.
		{`/system.slice/_cpu.service`, "cpu.service", ""},
		{`/system.slice/__x.service`, "_x.service", ""},
		// Trailing and doubled slashes, as systemd's parser skips them.
		{`/system.slice//foo.service/`, "foo.service", ""},
		// In no unit.
		{`/`, "", ""},
		{``, "", ""},
		{`/system.slice`, "", ""},
		{`/user.slice/user-1000.slice`, "", ""},
		{`/machine`, "", ""},
		{`/system.slice/foo`, "", ""},
		{`/system.slice/foo.target`, "", ""},
		{`/system.slice/foo.timer`, "", ""},
		{`/system.slice/foo.unknown`, "", ""},
		{`/system.slice/foo@.service`, "", ""},
		{`/system.slice/@foo.service`, "", ""},
		{`/system.slice/.service`, "", ""},
		{`/system.slice/foo bar.service`, "", ""},
		{"/system.slice/foo.service (deleted)", "", ""},
		{"/system.slice/foo\n0::/bar.service", "", ""},
		{`/system.slice/x@y.slice/foo.service`, "", ""},
		{`/bad slice.slice/foo.service`, "", ""},
		{`/system.slice/` + strings.Repeat("a", 248) + `.service`, "", ""},
		{`/system.slice/` + strings.Repeat("a", 247) + `.service`, strings.Repeat("a", 247) + `.service`, ""},
		{`/user.slice/user-1000.slice/user@1000.service/app.slice/bad@.service`, "user@1000.service", ""},
		{`/user.slice/user-1000.slice/user@.service/app.slice/foo.service`, "", ""},
	} {
		unit, userUnit := Units(tc.cgroup)
		if unit != tc.unit || userUnit != tc.userUnit {
			t.Errorf("Units(%q) = %q, %q; want %q, %q", tc.cgroup, unit, userUnit, tc.unit, tc.userUnit)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error // nil: want success; errAny: any error
	}{
		{"0::/system.slice/foo.service\n", "/system.slice/foo.service", nil},
		{"0::/\n", "/", nil},
		// Hybrid: the v1 hierarchies come first.
		{"12:name=systemd:/system.slice/foo.service\n1:cpu:/\n0::/system.slice/foo.service\n", "/system.slice/foo.service", nil},
		// Pure v1: no unified hierarchy.
		{"1:name=systemd:/system.slice/foo.service\n", "", ErrNoCgroup2},
		{"", "", ErrNoCgroup2},
		// A cgroup name with a newline forges a second line.
		{"0::/system.slice/evil.service/x\n0::/system.slice/victim.service\n", "", errAny},
		{"1:name=systemd:/x\n0::/system.slice/victim.service\n0::/system.slice/evil.service\n", "", errAny},
		{"0::system.slice/foo.service\n", "", errAny},
		{"0::/..\n", "", errAny},
		{"0::/../../system.slice/foo.service\n", "", errAny},
	} {
		got, err := parseProcCgroup([]byte(tc.in))
		switch {
		case tc.err == nil && (err != nil || got != tc.want):
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.err == errAny && err == nil, tc.err != nil && tc.err != errAny && !errors.Is(err, tc.err):
			t.Errorf("%q: %q, %v; want error %v", tc.in, got, err, tc.err)
		}
	}
}

var errAny = errors.New("any error")

func TestParseMountinfo(t *testing.T) {
	const (
		unified = "25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
		hybrid  = "30 25 0:26 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw\n"
		v1      = "31 25 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
		subtree = "40 25 0:23 /system.slice/x.service /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
		spaced  = "41 25 0:23 / /mnt/cg\\040two rw - cgroup2 none rw\n"
		other   = "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
	)
	for _, tc := range []struct{ in, want string }{
		{other + unified, "/sys/fs/cgroup"},
		{other + v1 + hybrid, "/sys/fs/cgroup/unified"},
		{subtree + spaced, "/mnt/cg two"},
		{other + v1 + subtree, ""},
		{"", ""},
	} {
		got, err := parseMountinfo(strings.NewReader(tc.in))
		if got != tc.want || (tc.want == "") != errors.Is(err, ErrNoCgroup2) {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
