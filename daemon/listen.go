package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealbox/sealbox/internal/peer"
)

// umaskMu serializes the umask changes of listenUnix.
var umaskMu sync.Mutex

// PeerCred is what the kernel says about the process at the other end of a
// connection, captured once at accept (SO_PEERCRED: the credentials at
// connect time).
type PeerCred struct {
	PID int32
	UID uint32
	GID uint32
	// Unit is the peer's systemd unit, read race-free through a pidfd
	// (internal/peer); UnitKnown says whether it could be. A peer whose
	// unit is not known never matches a client by unit, and is refused
	// where a client by unit could have been it.
	Unit      string
	UnitKnown bool
}

type credKey struct{}

// peerOf returns the credentials of the peer whose request r is: from the
// connection's writer where connServer serves it, else from the context.
func peerOf(w http.ResponseWriter, r *http.Request) (PeerCred, bool) {
	if cw, ok := w.(*connWriter); ok {
		return cw.c.cred, true
	}
	return credFrom(r.Context())
}

// credFrom returns the connection's peer credentials from a request context.
func credFrom(ctx context.Context) (PeerCred, bool) {
	c, ok := ctx.Value(credKey{}).(PeerCred)
	return c, ok
}

// listenUnix creates a Unix socket at path whose mode is mode from the moment
// it exists: bind runs under a umask that leaves exactly those bits, so no
// one can connect in a window before a chmod. It must be called before any
// other goroutine creates files, since the umask is process-wide (sealboxd
// calls it during startup only).
//
// A socket file already at path is removed only if nothing answers on it (a
// daemon that was killed). The race accepted: two daemons starting at once
// on the same path could both see it stale; they would also contend for the
// keyring's bbolt lock, which only one of them gets, and the other exits
// before it listens.
func listenUnix(path string, mode os.FileMode) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another process is listening on %s (is sealboxd already running?)", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("probing existing socket %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	}
	umaskMu.Lock()
	old := unix.Umask(int(0o777 &^ mode))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(true)
	st, err := os.Lstat(path)
	if err != nil || st.Mode().Perm() != mode {
		l.Close()
		return nil, fmt.Errorf("socket %s was created with mode %v, want %v", path, st.Mode().Perm(), mode)
	}
	return l, nil
}

// peerListener captures SO_PEERCRED at accept and caps open connections:
// in all, per uid, and for peers that are not registered clients. A peer
// over its cap is closed at once, at the cost of one accept; registered
// clients keep a reserve of the table that no one else can take.
type peerListener struct {
	*net.UnixListener
	limits connLimits
	// isClient says whether a peer matches a registered Active client (nil:
	// every peer counts as one, as on the admin socket).
	isClient func(PeerCred) bool
	// units says whether to attest each peer's systemd unit: only while
	// some client is registered by unit (it costs a pidfd and a read of
	// /proc per connection).
	units func() bool
	// noPidfd is told, once, that this kernel cannot attest units.
	noPidfd  func(error)
	warnOnce sync.Once

	mu         sync.Mutex
	total      int
	strangers  int
	perUID     map[uint32]int
	turnedAway atomic.Uint64
}

// connLimits are a listener's caps.
type connLimits struct {
	max         int // open connections in all
	reserve     int // of max, kept for registered clients
	perStranger int // per uid that is not a registered client
	perClient   int // per uid that is
}

// limitsFor keeps a quarter of the table for registered clients, and lets
// a peer that is not one hold at most four connections: enough to be
// answered, too few to matter.
func limitsFor(maxConns int) connLimits {
	return connLimits{max: maxConns, reserve: max(maxConns/4, 1), perStranger: 4, perClient: maxConns}
}

func newPeerListener(l *net.UnixListener, maxConns int, isClient func(PeerCred) bool) *peerListener {
	return &peerListener{UnixListener: l, limits: limitsFor(maxConns), isClient: isClient, perUID: map[uint32]int{}}
}

// Accept returns the next connection within the caps; one over them is
// closed right away and counted in turnedAway.
func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		cred, err := l.identify(c)
		if err != nil {
			c.Close() // no identity, no service
			continue
		}
		client := l.isClient == nil || l.isClient(cred)
		if !l.admit(cred.UID, client) {
			l.turnedAway.Add(1)
			c.Close()
			continue
		}
		return &peerConn{UnixConn: c, cred: cred, release: func() { l.leave(cred.UID, client) }}, nil
	}
}

func (l *peerListener) admit(uid uint32, client bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.limits
	if l.total >= lim.max {
		return false
	}
	if client {
		if l.perUID[uid] >= lim.perClient {
			return false
		}
	} else if l.strangers >= lim.max-lim.reserve || l.perUID[uid] >= lim.perStranger {
		return false
	}
	l.total++
	l.perUID[uid]++
	if !client {
		l.strangers++
	}
	return true
}

func (l *peerListener) leave(uid uint32, client bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perUID[uid]--; l.perUID[uid] <= 0 {
		delete(l.perUID, uid)
	}
	if !client {
		l.strangers--
	}
}

// identify returns what the kernel attests of c's peer: SO_PEERCRED, and,
// where units matter, the peer's systemd unit through a pidfd. A peer that
// exited before its unit was proven has no identity.
func (l *peerListener) identify(c *net.UnixConn) (PeerCred, error) {
	if l.units == nil || !l.units() {
		return peerCred(c)
	}
	id, err := peer.Resolve(c)
	if err == nil {
		return PeerCred{PID: id.PID, UID: id.UID, GID: id.GID, Unit: id.Unit, UnitKnown: true}, nil
	}
	if errors.Is(err, peer.ErrNoPidfd) && l.noPidfd != nil {
		l.warnOnce.Do(func() { l.noPidfd(err) })
	}
	// No unit (an old kernel, no cgroup v2, a peer that exited, /proc
	// hidden): the uid and gid SO_PEERCRED attests still hold, and the unit
	// counts as unknown, which refuses every match that depends on it.
	return peerCred(c)
}

func peerCred(c *net.UnixConn) (PeerCred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return PeerCred{}, err
	}
	var uc *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return PeerCred{}, err
	}
	if serr != nil {
		return PeerCred{}, serr
	}
	return PeerCred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}, nil
}

type peerConn struct {
	*net.UnixConn
	cred    PeerCred
	once    sync.Once
	release func()
}

func (c *peerConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.release)
	return err
}
