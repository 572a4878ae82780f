// Package peer says who is at the other end of an accepted Unix socket
// connection, from what the kernel attests: the uid, gid and pid of the
// process that connected (SO_PEERCRED) and, through a pidfd of that very
// process (SO_PEERPIDFD), its cgroup and systemd unit.
//
// Use Resolve on each accepted connection whose authorization depends on a
// systemd unit, and Creds where the uid and gid are enough. For systemd's
// LoadCredential= connections, LoadCredential reads the unit and credential
// name systemd put in the peer's socket address and checks them against
// the peer Resolve attests, since any local process can forge that address.
//
// # What Resolve guarantees, and on which kernels
//
// A pid number alone proves nothing: once its process has exited and been
// reaped, the kernel may give the number to another process, so whatever
// /proc/PID says may be about someone else. Resolve never uses a pid without
// a pidfd that pins the process which connected:
//
//   - Linux 6.13 and later (PIDFD_GET_INFO with PIDFD_INFO_CGROUPID): the
//     kernel gives the cgroup id of the pidfd's process, and the path read
//     from /proc/PID/cgroup must name the directory with that inode on the
//     cgroup v2 mount (ProofCgroupID). A forged or stale path cannot match.
//   - Linux 6.5 to 6.12 (SO_PEERPIDFD only): the path is read from
//     /proc/PID/cgroup and the pidfd must show the process still running
//     afterwards (poll, and pidfd_send_signal with signal 0); a process that
//     is still running after the read was running during it, so its pid
//     had not been reused (ProofAlive).
//   - Before Linux 6.5: Resolve returns ErrNoPidfd with the SO_PEERCRED
//     credentials and no cgroup or unit. Callers must then refuse every
//     authorization by unit; there is no silent fallback to the racy pid.
//
// Either way a peer that exited before its cgroup was proven, zombies
// included, is refused with ErrPeerGone.
//
// The uid, gid and pid are those of the connecting process at connect(2).
// The cgroup is the peer's when Resolve ran: moving a process between
// cgroups takes write access to both cgroup.procs files (root, or a unit
// with Delegate=, which can move its processes only inside its own subtree,
// which still maps to the same unit).
//
// Unit is the system manager's unit, named as systemd does
// (cg_path_get_unit): the first path component below the leading slices.
// Everything under it, including the sub-cgroups of a unit with Delegate=
// and the whole of a user's manager user@UID.service, belongs to that unit,
// so a delegated subtree cannot name itself after another unit. The unit
// of a user's own manager is UserUnit: that user controls it, and it must
// never be matched against a system unit.
//
// Resolve needs the cgroup v2 hierarchy (unified, or hybrid with the
// unified hierarchy mounted, as systemd 252 sets up); with cgroup v1 alone
// it returns ErrNoCgroup2. Peers whose pid is not visible in this pid
// namespace, or whose cgroup lies outside this cgroup namespace, are
// refused.
//
// Not for: deciding what a peer may do (that is the daemon's policy),
// sockets other than AF_UNIX stream sockets, or systems other than Linux.
package peer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

var (
	// ErrNoPidfd means the kernel has no SO_PEERPIDFD (Linux before 6.5):
	// the peer's cgroup and unit cannot be attested, and the caller must
	// refuse any authorization by unit.
	ErrNoPidfd = errors.New("the kernel cannot give a pidfd of a socket peer (SO_PEERPIDFD needs Linux 6.5 or later); systemd units cannot be attested")

	// ErrPeerGone means the peer exited before its identity was proven.
	ErrPeerGone = errors.New("the peer exited before its identity was proven")

	// ErrNoCgroup2 means the peer is in no cgroup v2 hierarchy that this
	// process can see.
	ErrNoCgroup2 = errors.New("no cgroup v2 hierarchy: systemd units cannot be attested")
)

// Cred is what SO_PEERCRED says: the connecting process at connect time.
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

// Proof says how Resolve tied the cgroup to the peer process.
type Proof int

const (
	// ProofNone: no cgroup was attested.
	ProofNone Proof = iota
	// ProofCgroupID: PIDFD_GET_INFO's cgroup id is the inode of the path
	// (Linux 6.13 and later).
	ProofCgroupID
	// ProofAlive: the path was read from /proc/PID/cgroup and the pidfd
	// showed the process still running afterwards (Linux 6.5 and later).
	ProofAlive
)

func (p Proof) String() string {
	switch p {
	case ProofCgroupID:
		return "pidfd-cgroupid"
	case ProofAlive:
		return "pidfd-alive"
	}
	return "none"
}

// Identity is a peer as the kernel attests it.
type Identity struct {
	Cred
	// Cgroup is the cgroup v2 path, relative to this process's cgroup
	// namespace, e.g. "/system.slice/foo.service".
	Cgroup string
	// Unit is the system unit the cgroup belongs to ("foo.service",
	// "session-3.scope", "user@1000.service"), or "" for none.
	Unit string
	// UserUnit is the unit inside a user's manager, when Unit is
	// user@UID.service; that user controls it.
	UserUnit string
	// Proof says how the cgroup was tied to the peer process.
	Proof Proof
}

// Creds returns the SO_PEERCRED credentials of c's peer.
func Creds(c *net.UnixConn) (Cred, error) {
	var cred Cred
	err := control(c, func(fd int) error {
		var err error
		cred, err = peerCred(fd)
		return err
	})
	return cred, err
}

// Resolve returns the identity of c's peer; see the package documentation
// for what it guarantees. On error, the Identity holds what was attested
// before the failure (the Cred, at least, unless SO_PEERCRED itself failed)
// and never a Unit.
func Resolve(c *net.UnixConn) (Identity, error) {
	return resolver{}.resolve(c)
}

// resolver holds what tests change; the zero value is what Resolve uses.
type resolver struct {
	proc        string                    // "/proc" when empty
	noPidfdInfo bool                      // prove by liveness even where PIDFD_GET_INFO works
	peerPidfd   func(fd int) (int, error) // SO_PEERPIDFD when nil
	afterCgroup func()                    // runs after /proc/PID/cgroup is read
}

func (r resolver) resolve(c *net.UnixConn) (Identity, error) {
	var id Identity
	pidfd := -1
	err := control(c, func(fd int) error {
		var err error
		if id.Cred, err = peerCred(fd); err != nil {
			return err
		}
		get := r.peerPidfd
		if get == nil {
			get = func(fd int) (int, error) { return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD) }
		}
		pidfd, err = get(fd)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.ENOPROTOOPT):
			return ErrNoPidfd
		case errors.Is(err, unix.ESRCH), errors.Is(err, unix.EINVAL):
			// Before Linux 6.16 a reaped peer has no pidfd (EINVAL).
			return ErrPeerGone
		}
		return fmt.Errorf("SO_PEERPIDFD: %w", err)
	})
	if err != nil {
		return id, err
	}
	defer unix.Close(pidfd)
	if id.PID <= 0 {
		return id, fmt.Errorf("the peer's pid is not visible in this pid namespace")
	}

	cgroup, proof, err := r.cgroup(pidfd, id.PID)
	if err != nil {
		return id, err
	}
	id.Cgroup, id.Proof = cgroup, proof
	id.Unit, id.UserUnit = Units(cgroup)
	return id, nil
}

// cgroup returns the peer's cgroup path and how it was proven.
func (r resolver) cgroup(pidfd int, pid int32) (string, Proof, error) {
	if !r.noPidfdInfo {
		path, err := r.cgroupByID(pidfd, pid)
		if !errors.Is(err, errors.ErrUnsupported) {
			return path, ProofCgroupID, err
		}
	}
	path, err := r.readCgroup(pid)
	if err != nil {
		return "", ProofNone, err
	}
	if err := alive(pidfd); err != nil {
		return "", ProofNone, err
	}
	return path, ProofAlive, nil
}

// cgroupByID proves the path by PIDFD_GET_INFO's cgroup id; it returns
// errors.ErrUnsupported where the kernel or this mount namespace cannot.
func (r resolver) cgroupByID(pidfd int, pid int32) (string, error) {
	root, err := cgroup2Mount()
	if err != nil {
		return "", errors.ErrUnsupported
	}
	// One retry: a process may move between cgroups between the two looks.
	for try := 0; ; try++ {
		path, err := r.readCgroup(pid)
		if err != nil {
			return "", err
		}
		info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID | unix.PIDFD_INFO_CGROUPID}
		switch err := unix.IoctlPidfdInfo(pidfd, &info); {
		case errors.Is(err, unix.ESRCH):
			return "", ErrPeerGone
		case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
			return "", errors.ErrUnsupported // before Linux 6.13
		case err != nil:
			return "", fmt.Errorf("PIDFD_GET_INFO: %w", err)
		}
		if info.Mask&unix.PIDFD_INFO_CGROUPID == 0 {
			return "", errors.ErrUnsupported
		}
		if info.Mask&unix.PIDFD_INFO_PID != 0 && int32(info.Tgid) != pid {
			return "", fmt.Errorf("the pidfd names pid %d, SO_PEERCRED pid %d", info.Tgid, pid)
		}
		var st unix.Stat_t
		err = unix.Stat(filepath.Join(root, path), &st)
		if err == nil && st.Ino == info.Cgroupid {
			// A zombie still reports its last cgroup: refuse it too.
			if err := alive(pidfd); err != nil {
				return "", err
			}
			return path, nil
		}
		if err := alive(pidfd); err != nil {
			return "", err
		}
		if try == 1 {
			return "", fmt.Errorf("the peer's cgroup %q is not the one its pidfd names (cgroup id %d)", path, info.Cgroupid)
		}
	}
}

// readCgroup returns the cgroup v2 path in /proc/PID/cgroup.
func (r resolver) readCgroup(pid int32) (string, error) {
	proc := r.proc
	if proc == "" {
		proc = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(int(pid)), "cgroup"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return "", ErrPeerGone
		}
		return "", fmt.Errorf("reading the peer's cgroup: %w", err)
	}
	if r.afterCgroup != nil {
		r.afterCgroup()
	}
	return parseProcCgroup(b)
}

// parseProcCgroup returns the path of the single "0::" line of a
// /proc/PID/cgroup. The kernel prints cgroup names raw, so a name with a
// newline (which a delegated subtree may create) can forge a line: more
// than one "0::" line is refused rather than guessed at.
func parseProcCgroup(b []byte) (string, error) {
	var path string
	n := 0
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if p, ok := bytes.CutPrefix(line, []byte("0::")); ok {
			path = string(p)
			n++
		}
	}
	switch {
	case n == 0:
		return "", ErrNoCgroup2
	case n > 1:
		return "", fmt.Errorf("the peer's /proc/PID/cgroup has %d cgroup v2 lines (a cgroup name with a newline?)", n)
	case !strings.HasPrefix(path, "/"):
		return "", fmt.Errorf("the peer's cgroup path %q is not absolute", path)
	case path == "/.." || strings.HasPrefix(path, "/../"):
		return "", fmt.Errorf("the peer's cgroup is outside this cgroup namespace")
	}
	return path, nil
}

// alive returns nil if the pidfd's process has not exited, ErrPeerGone if
// it has (zombies included).
func alive(pidfd int) error {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("polling the peer's pidfd: %w", err)
		}
		if n > 0 {
			return ErrPeerGone // POLLIN: exited; POLLHUP: reaped
		}
		break
	}
	// Signal 0 checks existence only; EPERM (another uid) still means the
	// process exists.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil && !errors.Is(err, unix.EPERM) {
		if errors.Is(err, unix.ESRCH) {
			return ErrPeerGone
		}
		return fmt.Errorf("pidfd_send_signal: %w", err)
	}
	return nil
}

// cgroup2Mount returns the mount point of the root of the cgroup v2
// hierarchy in this mount namespace (/sys/fs/cgroup, or
// /sys/fs/cgroup/unified on a hybrid system).
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return parseMountinfo(f)
}

func parseMountinfo(f io.Reader) (string, error) {
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(s.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" || fields[3] != "/" {
			continue
		}
		return unescapeMountinfo(fields[4]), nil
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", ErrNoCgroup2
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func peerCred(fd int) (Cred, error) {
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Cred{}, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}, nil
}

// control runs f on c's file descriptor.
func control(c *net.UnixConn, f func(fd int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
