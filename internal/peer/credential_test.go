package peer

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCredentialAddr(t *testing.T) {
	ok := []struct {
		addr     string
		unit, id string
	}{
		{"\x00f22fa9e30d3a9702/unit/cred-oneshot@a.service/x", "cred-oneshot@a.service", "x"},
		{"\x002fa9e30d3a9702/unit/sealbox-client.service/master-secret", "sealbox-client.service", "master-secret"},
		{"\x000/unit/a.service/b", "a.service", "b"},
		{`` + "\x00abc/unit/system-x\\x2dy.service/id.with.dots", `system-x\x2dy.service`, "id.with.dots"},
		{"\x00abc/unit/foo.socket/c", "foo.socket", "c"},
		{"\x00abc/unit/foo.mount/c", "foo.mount", "c"},
		{"\x00abc/unit/foo.swap/c", "foo.swap", "c"},
		{"\x00abc/unit/a.service/with space", "a.service", "with space"},
		{"\x00abc/unit/a.service/" + strings.Repeat("i", 83), "a.service", strings.Repeat("i", 83)},
	}
	for _, tc := range ok {
		req, err := ParseCredentialAddr([]byte(tc.addr))
		if err != nil || req.Unit != tc.unit || req.ID != tc.id {
			t.Errorf("%q: %+v, %v; want %s %s", tc.addr, req, err, tc.unit, tc.id)
		}
	}
	bad := []string{
		"",
		"\x00",
		// A file path that looks like the abstract name (net shows both with "@").
		"@f22fa9e30d3a9702/unit/cred-oneshot@a.service/x",
		"f22fa9e30d3a9702/unit/cred-oneshot@a.service/x",
		"\x00/unit/a.service/x",                  // no random part
		"\x0012345678901234567/unit/a.service/x", // 17 digits
		"\x00F22FA9/unit/a.service/x",            // upper case
		"\x00f22g/unit/a.service/x",
		"\x00f22 /unit/a.service/x",
		"\x00f22/units/a.service/x",
		"\x00f22/unit/a.service",
		"\x00f22/unit/a.service/",
		"\x00f22/unit//x",
		"\x00f22/unit/a.service/x/y",
		"\x00f22/unit/a.service/x\x00",
		"\x00f22/unit/a.service/x\n",
		"\x00f22/unit/a.service/a:b",
		"\x00f22/unit/a.service/.",
		"\x00f22/unit/a.service/..",
		"\x00f22/unit/a.service/\xff",
		"\x00f22/unit/a.slice/x",
		"\x00f22/unit/a.scope/x",
		"\x00f22/unit/a.target/x",
		"\x00f22/unit/a@.service/x",
		"\x00f22/unit/@a.service/x",
		"\x00f22/unit/a b.service/x",
		"\x00f22/unit/a/x",
		"\x00f22/unit/../x",
		"\x00f22/unit/a.service/" + strings.Repeat("i", 100), // longer than sun_path
		"\x00f22/unit/a.service/x/unit/b.service/y",
		"\x00f22/a.service/x",
		"\x00\x00f22/unit/a.service/x",
	}
	for _, addr := range bad {
		req, err := ParseCredentialAddr([]byte(addr))
		if !errors.Is(err, ErrNotCredentialAddr) || req != (CredentialRequest{}) {
			t.Errorf("%q: %+v, %v; want ErrNotCredentialAddr", addr, req, err)
		}
	}
}

// dialFrom connects to the listener name from a socket bound to the raw
// address bind, in this process, and returns the accepted end.
func dialFrom(t *testing.T, bind []byte) *net.UnixConn {
	t.Helper()
	l, name := listen(t)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if bind != nil {
		if err := bindRaw(fd, bind); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	unix.Write(fd, []byte{1})
	t.Cleanup(func() { unix.Close(fd) })
	return accept(t, l)
}

func TestPeerAddr(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	fake := "@f22fa9e30d3a9702/unit/x.service"
	if err := os.MkdirAll(filepath.Join(dir, fake), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, bind := range [][]byte{
		[]byte("\x00f22fa9e30d3a9702/unit/x.service/c"),
		[]byte("\x00with\x00nul"),
		[]byte(fake + "/c"), // a relative file path starting with "@"
		nil,                 // unbound
	} {
		got, err := PeerAddr(dialFrom(t, bind))
		if err != nil || string(got) != string(bind) {
			t.Errorf("bound to %q: PeerAddr %q, %v", bind, got, err)
		}
	}
}

func TestLoadCredentialRefusesForgedAddress(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.MkdirAll(filepath.Join(dir, "@abc/unit/x.service"), 0o700)
	// This process is not systemd starting x.service.
	_, id, err := LoadCredential(dialFrom(t, []byte("\x00abc/unit/x.service/c")))
	if ok, _ := kernel(t); !ok {
		if !errors.Is(err, ErrNoPidfd) {
			t.Fatalf("without SO_PEERPIDFD: %v, want ErrNoPidfd", err)
		}
	} else if !errors.Is(err, ErrForgedRequest) || id.PID != int32(os.Getpid()) {
		t.Fatalf("forged abstract address: %+v, %v; want ErrForgedRequest", id, err)
	}
	// A file path that net would show as the abstract name.
	_, id, err = LoadCredential(dialFrom(t, []byte("@abc/unit/x.service/c")))
	if !errors.Is(err, ErrNotCredentialAddr) || id.PID != int32(os.Getpid()) {
		t.Fatalf("path address: %+v, %v; want ErrNotCredentialAddr with the credentials", id, err)
	}
	_, _, err = LoadCredential(dialFrom(t, nil))
	if !errors.Is(err, ErrNotCredentialAddr) {
		t.Fatalf("unbound peer: %v; want ErrNotCredentialAddr", err)
	}
}

// systemd's side, played by a child in the unit's cgroup: accepted from
// root, refused from another uid or from another unit's cgroup.
func TestLoadCredentialFromUnitCgroup(t *testing.T) {
	requireRootAndPidfd(t)
	top := testTop()
	unitFD := cgroupTree(t, top+"/cred-test@a.service")
	otherFD := cgroupTree(t, top+"/other.service")
	// Each connection binds a fresh name, as systemd does.
	addr := func() []byte { return []byte("\x00" + randHex(8) + "/unit/cred-test@a.service/master") }
	for _, tc := range []struct {
		name string
		o    childOpts
		err  error
	}{
		{"systemd for the unit", childOpts{cgroupFD: unitFD, bind: addr()}, nil},
		{"another uid in the unit", childOpts{cgroupFD: unitFD, bind: addr(), uid: 65534}, ErrForgedRequest},
		{"root in another unit", childOpts{cgroupFD: otherFD, bind: addr()}, ErrForgedRequest},
		{"gone", childOpts{cgroupFD: unitFD, bind: addr(), exit: true}, ErrPeerGone},
	} {
		l, name := listen(t)
		cmd, _ := startChild(t, name, tc.o)
		c := accept(t, l)
		if tc.o.exit {
			waitExited(t, cmd.Process.Pid)
		}
		req, id, err := LoadCredential(c)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %+v %+v, %v; want %v", tc.name, req, id, err, tc.err)
			continue
		}
		if tc.err == nil && (req != CredentialRequest{Unit: "cred-test@a.service", ID: "master"} || id.PID != int32(cmd.Process.Pid)) {
			t.Errorf("%s: %+v %+v", tc.name, req, id)
		}
		if tc.err != nil && req != (CredentialRequest{}) {
			t.Errorf("%s: refused, yet returned %+v", tc.name, req)
		}
	}
}
