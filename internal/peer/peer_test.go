package peer

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sealbox/sealbox/internal/testbin"
)

// The test binary doubles as the peer process: with PEER_TEST_CONNECT set
// it connects to that socket (from the raw address PEER_TEST_BIND, in hex,
// if set, and as the uid PEER_TEST_SETUID if set), writes one byte, and
// then waits for stdin to close, or exits at once with PEER_TEST_EXIT=1.
func TestMain(m *testing.M) {
	if sock := os.Getenv("PEER_TEST_CONNECT"); sock != "" {
		if err := child(sock); err != nil {
			fmt.Fprintln(os.Stderr, "peer test child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func child(sock string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if b := os.Getenv("PEER_TEST_BIND"); b != "" {
		raw, err := hex.DecodeString(b)
		if err != nil {
			return err
		}
		if err := bindRaw(fd, raw); err != nil {
			return err
		}
	}
	if uid := os.Getenv("PEER_TEST_SETUID"); uid != "" {
		// Drop root here rather than at exec: the test binary lives
		// where other uids cannot run it.
		n, err := strconv.Atoi(uid)
		if err != nil {
			return err
		}
		if err := syscall.Setgid(n); err != nil {
			return err
		}
		if err := syscall.Setuid(n); err != nil {
			return err
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		return err
	}
	if _, err := unix.Write(fd, []byte{1}); err != nil {
		return err
	}
	if os.Getenv("PEER_TEST_EXIT") == "" {
		io.Copy(io.Discard, os.Stdin)
	}
	return nil
}

// bindRaw binds fd to exactly the bytes of name: a leading NUL makes an
// abstract address, a leading "@" a file path (x/sys/unix would turn the
// "@" into a NUL).
func bindRaw(fd int, name []byte) error {
	var rsa unix.RawSockaddrUnix
	rsa.Family = unix.AF_UNIX
	if len(name) > len(rsa.Path) {
		return fmt.Errorf("address too long")
	}
	for i, c := range name {
		rsa.Path[i] = int8(c)
	}
	n := unsafe.Offsetof(rsa.Path) + uintptr(len(name))
	if _, _, e := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), n); e != 0 {
		return fmt.Errorf("bind: %w", e)
	}
	return nil
}

// listen listens on a fresh abstract address (no file modes in the way of
// children running as other uids) and returns it in x/sys/unix's "@" form.
func listen(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	name := "@sealbox-peer-test-" + randHex(8)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, name
}

// accept accepts one connection and reads the peer's one byte, so the peer
// has certainly connected and written.
func accept(t *testing.T, l *net.UnixListener) *net.UnixConn {
	t.Helper()
	l.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("reading the peer's byte: %v", err)
	}
	return c
}

// selfConn connects to a fresh listener from this process and returns the
// accepted end.
func selfConn(t *testing.T) *net.UnixConn {
	t.Helper()
	l, name := listen(t)
	d, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	d.Write([]byte{1})
	return accept(t, l)
}

type childOpts struct {
	cgroupFD int    // place the child in this cgroup (a directory fd); 0: stay in ours
	bind     []byte // raw address to bind before connecting
	exit     bool   // exit right after writing
	uid      uint32 // run as this uid (root only); 0: ours
	dir      string // working directory
}

// startChild starts the test binary as a peer of sock. Closing the
// returned stdin lets a waiting child exit.
func startChild(t *testing.T, sock string, o childOpts) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: a race-enabled binary otherwise sleeps 1 s at exit.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "PEER_TEST_CONNECT="+sock, "PEER_TEST_BIND="+hex.EncodeToString(o.bind))
	if o.exit {
		cmd.Env = append(cmd.Env, "PEER_TEST_EXIT=1")
	}
	cmd.Dir = o.dir
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if o.cgroupFD > 0 {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, o.cgroupFD
	}
	if o.uid != 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("PEER_TEST_SETUID=%d", o.uid))
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	return cmd, stdin
}

// waitExited waits until pid has exited, leaving it a zombie (WNOWAIT).
func waitExited(t *testing.T, pid int) {
	t.Helper()
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waitid: %v", err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// kernel reports what this kernel can do: SO_PEERPIDFD (6.5) and
// PIDFD_GET_INFO with a cgroup id (6.13).
func kernel(t *testing.T) (peerPidfd, pidfdInfo bool) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	pidfd, err := unix.GetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if err != nil {
		return false, false
	}
	defer unix.Close(pidfd)
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_CGROUPID}
	if err := unix.IoctlPidfdInfo(pidfd, &info); err != nil {
		return true, false
	}
	return true, info.Mask&unix.PIDFD_INFO_CGROUPID != 0
}

// resolvers are the two proofs; where the kernel lacks PIDFD_GET_INFO,
// both use the liveness proof.
func resolvers(t *testing.T) map[Proof]resolver {
	_, info := kernel(t)
	rs := map[Proof]resolver{ProofAlive: {noPidfdInfo: true}}
	if info {
		rs[ProofCgroupID] = resolver{}
	} else {
		t.Log("this kernel has no PIDFD_GET_INFO cgroup id (Linux 6.13): only the liveness proof is tested")
	}
	return rs
}

func ownCgroup(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseProcCgroup(b)
	if err != nil {
		t.Fatalf("own cgroup: %v", err)
	}
	return p
}

func TestResolveSelf(t *testing.T) {
	c := selfConn(t)
	pidfd, info := kernel(t)
	t.Logf("this kernel: SO_PEERPIDFD %v, PIDFD_GET_INFO with cgroup id %v", pidfd, info)
	if !pidfd {
		id, err := Resolve(c)
		if !errors.Is(err, ErrNoPidfd) || id.PID != int32(os.Getpid()) || id.Unit != "" || id.Proof != ProofNone {
			t.Fatalf("without SO_PEERPIDFD: %+v, %v; want the credentials and ErrNoPidfd", id, err)
		}
		t.Skip("this kernel has no SO_PEERPIDFD (Linux 6.5): only ErrNoPidfd was checked")
	}
	want := ownCgroup(t)
	for proof, r := range resolvers(t) {
		id, err := r.resolve(c)
		if err != nil {
			t.Fatalf("%v: %v", proof, err)
		}
		if id.PID != int32(os.Getpid()) || id.UID != uint32(os.Getuid()) || id.GID != uint32(os.Getgid()) {
			t.Errorf("%v: credentials %+v, want this process's", proof, id.Cred)
		}
		if id.Cgroup != want || id.Proof != proof {
			t.Errorf("%v: cgroup %q by %v, want %q", proof, id.Cgroup, id.Proof, want)
		}
		if u, uu := Units(want); id.Unit != u || id.UserUnit != uu {
			t.Errorf("%v: units %q %q, want %q %q", proof, id.Unit, id.UserUnit, u, uu)
		}
	}
	cred, err := Creds(c)
	if err != nil || cred.PID != int32(os.Getpid()) || cred.UID != uint32(os.Getuid()) {
		t.Errorf("Creds: %+v, %v", cred, err)
	}
}

func TestResolveWithoutPeerPidfdRefusesUnits(t *testing.T) {
	c := selfConn(t)
	r := resolver{peerPidfd: func(int) (int, error) { return -1, unix.ENOPROTOOPT }}
	id, err := r.resolve(c)
	if !errors.Is(err, ErrNoPidfd) {
		t.Fatalf("error %v, want ErrNoPidfd", err)
	}
	if id.PID != int32(os.Getpid()) || id.UID != uint32(os.Getuid()) || id.Cgroup != "" || id.Unit != "" || id.Proof != ProofNone {
		t.Fatalf("identity %+v: want the credentials and nothing else", id)
	}
}

// A peer that exits after connecting, whether still a zombie or already
// reaped, is refused: its pid may already name another process.
func TestResolveRefusesExitedPeer(t *testing.T) {
	if ok, _ := kernel(t); !ok {
		t.Skip("this kernel has no SO_PEERPIDFD (Linux 6.5)")
	}
	l, name := listen(t)
	cmd, _ := startChild(t, name, childOpts{exit: true})
	c := accept(t, l)
	waitExited(t, cmd.Process.Pid)
	for proof, r := range resolvers(t) {
		if id, err := r.resolve(c); !errors.Is(err, ErrPeerGone) || id.Unit != "" {
			t.Fatalf("zombie peer, %v: %+v, %v; want ErrPeerGone", proof, id, err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	for proof, r := range resolvers(t) {
		if id, err := r.resolve(c); !errors.Is(err, ErrPeerGone) || id.Unit != "" {
			t.Fatalf("reaped peer, %v: %+v, %v; want ErrPeerGone", proof, id, err)
		}
	}
}

// The race itself: the peer exits after its /proc/PID/cgroup was read and
// before the proof.
func TestResolveRefusesPeerExitingDuringCheck(t *testing.T) {
	if ok, _ := kernel(t); !ok {
		t.Skip("this kernel has no SO_PEERPIDFD (Linux 6.5)")
	}
	for proof, r := range resolvers(t) {
		l, name := listen(t)
		cmd, stdin := startChild(t, name, childOpts{})
		c := accept(t, l)
		r.afterCgroup = func() {
			stdin.Close()
			waitExited(t, cmd.Process.Pid)
		}
		if id, err := r.resolve(c); !errors.Is(err, ErrPeerGone) || id.Unit != "" {
			t.Fatalf("%v: %+v, %v; want ErrPeerGone", proof, id, err)
		}
	}
}

// cgroupTree creates the cgroup rel and its missing parents under the
// cgroup v2 mount, removed at the end of the test, and returns an open fd
// of it.
func cgroupTree(t *testing.T, rel string) int {
	t.Helper()
	root, err := cgroup2Mount()
	if err != nil {
		testbin.Require(t, fmt.Sprintf("no cgroup v2 hierarchy mounted: %v", err))
	}
	dir := root
	for _, comp := range strings.Split(strings.Trim(rel, "/"), "/") {
		dir = filepath.Join(dir, comp)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			t.Fatalf("creating cgroup: %v", err)
		}
		d := dir
		t.Cleanup(func() {
			// Cleanups run last in, first out: the peers placed in it
			// are reaped by now.
			if err := os.Remove(d); err != nil {
				t.Errorf("removing cgroup: %v", err)
			}
		})
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func requireRootAndPidfd(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testbin.Require(t, "creating cgroups and running peers as other uids needs root")
	}
	if ok, _ := kernel(t); !ok {
		t.Skip("this kernel has no SO_PEERPIDFD (Linux 6.5)")
	}
}

// testTop is a top-level slice of the test's own, so that unit names come
// out as they would under system.slice.
func testTop() string { return "/sealboxpeer" + randHex(4) + ".slice" }

// Peers in real cgroups created for the test.
func TestResolveChildInUnitCgroup(t *testing.T) {
	requireRootAndPidfd(t)
	top := testTop()
	cases := []struct{ cgroup, unit, userUnit string }{
		{top + `/system-peer\x2dtest.slice/peer-test@a.service`, "peer-test@a.service", ""},
		// A delegated unit's sub-cgroup cannot name itself after another unit.
		{top + `/deleg.service/victim.service`, "deleg.service", ""},
		{top + `/user-1000.slice/user@1000.service/app.slice/foo.service`, "user@1000.service", "foo.service"},
		{top + `/not-a-unit`, "", ""},
	}
	for _, tc := range cases {
		fd := cgroupTree(t, tc.cgroup)
		l, name := listen(t)
		cmd, _ := startChild(t, name, childOpts{cgroupFD: fd})
		c := accept(t, l)
		for proof, r := range resolvers(t) {
			id, err := r.resolve(c)
			if err != nil {
				t.Fatalf("%s, %v: %v", tc.cgroup, proof, err)
			}
			if id.PID != int32(cmd.Process.Pid) || id.UID != 0 || id.Cgroup != tc.cgroup || id.Proof != proof ||
				id.Unit != tc.unit || id.UserUnit != tc.userUnit {
				t.Errorf("%s, %v: got %+v", tc.cgroup, proof, id)
			}
		}
	}
}

// With PIDFD_GET_INFO, a /proc that names another cgroup (as a reused pid
// would) does not match the cgroup id the pidfd gives.
func TestResolveCgroupIDRefusesOtherPath(t *testing.T) {
	requireRootAndPidfd(t)
	if _, info := kernel(t); !info {
		t.Skip("this kernel has no PIDFD_GET_INFO cgroup id (Linux 6.13)")
	}
	top := testTop()
	fd := cgroupTree(t, top+"/peer.service")
	cgroupTree(t, top+"/victim.service")
	l, name := listen(t)
	startChild(t, name, childOpts{cgroupFD: fd})
	c := accept(t, l)
	id, err := Resolve(c)
	if err != nil || id.Unit != "peer.service" {
		t.Fatalf("the real peer: %+v, %v", id, err)
	}
	for _, forged := range []string{top + "/victim.service", top + "/gone.service", "/"} {
		proc := t.TempDir()
		os.MkdirAll(filepath.Join(proc, fmt.Sprint(id.PID)), 0o755)
		os.WriteFile(filepath.Join(proc, fmt.Sprint(id.PID), "cgroup"), []byte("0::"+forged+"\n"), 0o644)
		id, err := resolver{proc: proc}.resolve(c)
		if err == nil || id.Unit != "" || id.Cgroup != "" {
			t.Errorf("/proc says %s: %+v, %v; want a refusal", forged, id, err)
		}
	}
}
