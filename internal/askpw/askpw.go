// Package askpw asks a question through systemd's password agents, as
// systemd-ask-password does (systemd's docs/PASSWORD_AGENTS.md): it drops
// an ask file into /run/systemd/ask-password, and whichever agent answers
// first (the console at boot, systemd-tty-ask-password-agent, Plymouth, a
// desktop agent) sends the answer back over a datagram socket.
//
// Use Ask, with a buffer the caller owns (locked memory, for a password):
// the answer is received straight into it and never becomes a Go string.
// Only root may answer unless Question.AllowedUIDs says otherwise, and the
// sender's uid is the one in SCM_CREDENTIALS, which the kernel fills in or
// checks (only root may name another uid there).
//
// Not for: reading a password from a terminal or stdin (see
// internal/prompt), or answering questions (that is an agent's job).
// Writing to /run/systemd/ask-password needs root, as systemd's own tool
// does; tests and unusual setups point Question.Dir elsewhere.
package askpw

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// DefaultDir is where systemd's agents look for questions.
const DefaultDir = "/run/systemd/ask-password"

var (
	// ErrCanceled means the agent's user declined to answer ("-").
	ErrCanceled = errors.New("the password agent canceled the question")

	// ErrTimeout means no answer came before the question's NotAfter.
	ErrTimeout = errors.New("no answer from a password agent in time")

	// ErrTooLong means the answer does not fit the caller's buffer; the
	// buffer holds none of it.
	ErrTooLong = errors.New("the answer is longer than the buffer")
)

// Question is what agents show, and who may answer.
type Question struct {
	// Message is the question, one line of UTF-8 (Message=).
	Message string
	// Icon is an XDG icon name for graphical agents (Icon=), optional.
	Icon string
	// ID names the asker for agents that recognize queries (Id=), such as
	// "sealbox:unseal:alice"; optional.
	ID string
	// Echo lets agents show what is typed (Echo=1): for names, never for
	// passwords.
	Echo bool
	// Timeout bounds the wait and sets NotAfter=, so agents stop showing
	// the question when it passes. Zero: no limit but ctx's deadline,
	// which also sets NotAfter= when it is earlier.
	Timeout time.Duration
	// Dir is the agents' directory; DefaultDir when empty. It must exist.
	Dir string
	// AllowedUIDs are the uids whose answers count; nil means root only.
	// Answers from any other uid are ignored, as systemd does.
	AllowedUIDs []uint32
}

// Ask publishes q to the password agents, waits for the first answer from
// an allowed uid, and writes it into buf, returning its length. The ask
// file and the socket are removed before Ask returns, at once when ctx is
// done, so that agents stop showing the question.
//
// Errors: ErrCanceled when the agent declined, ErrTimeout when
// q.Timeout passed, ctx.Err() when ctx was done first, ErrTooLong when the
// answer does not fit buf. On any error buf is zeroed; on success buf[n:]
// is. Errors never contain the answer.
func Ask(ctx context.Context, q Question, buf []byte) (n int, err error) {
	defer func() {
		if err != nil {
			clear(buf)
			n = 0
		}
	}()
	if len(buf) == 0 {
		return 0, errors.New("askpw: empty answer buffer")
	}
	if err := q.check(); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	dir := q.Dir
	if dir == "" {
		dir = DefaultDir
	}
	// Agents connect to Socket= from their own working directory.
	if dir, err = filepath.Abs(dir); err != nil {
		return 0, fmt.Errorf("askpw: %w", err)
	}
	allowed := q.AllowedUIDs
	if allowed == nil {
		allowed = []uint32{0}
	}

	// The wait ends at the earlier of q.Timeout and ctx's deadline; that
	// moment, on CLOCK_MONOTONIC, is NotAfter=.
	wait := q.Timeout
	timeoutErr := error(ErrTimeout)
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); wait == 0 || d < wait {
			wait, timeoutErr = max(d, time.Microsecond), context.DeadlineExceeded
		}
	}
	var notAfter uint64
	if wait > 0 {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return 0, fmt.Errorf("askpw: reading the monotonic clock: %w", err)
		}
		notAfter = uint64(ts.Nano()/1000) + uint64(wait.Microseconds())
	}
	deadline := time.Now().Add(wait)

	conn, sockPath, err := listen(dir, allowed)
	if err != nil {
		return 0, err
	}
	defer os.Remove(sockPath)
	defer conn.Close()

	askPath, err := publish(dir, q, sockPath, notAfter)
	if err != nil {
		return 0, err
	}
	defer os.Remove(askPath)
	if wait > 0 {
		conn.SetReadDeadline(deadline)
	}
	// Cancellation: withdraw the question at once, then wake the reader.
	stop := context.AfterFunc(ctx, func() {
		os.Remove(askPath)
		conn.SetReadDeadline(time.Now())
	})
	defer stop()

	for {
		n, kind, err := receive(conn, buf, allowed)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			return 0, timeoutErr
		case err != nil:
			return 0, err
		case kind == '+':
			return n, nil
		case kind == '-':
			return 0, ErrCanceled
		}
		// Not an answer from an allowed uid: ignored.
	}
}

// check refuses fields that would break the ask file's one-line syntax.
func (q Question) check() error {
	for _, f := range []struct{ name, v string }{{"message", q.Message}, {"icon", q.Icon}, {"id", q.ID}, {"directory", q.Dir}} {
		if !utf8.ValidString(f.v) || strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("askpw: the %s has a control character or is not UTF-8", f.name)
		}
	}
	if q.Message == "" {
		return errors.New("askpw: empty message")
	}
	if q.Timeout < 0 {
		return errors.New("askpw: negative timeout")
	}
	return nil
}

func randomSuffix() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// listen creates the answer socket dir/sck.RANDOM with SO_PASSCRED set and
// its final mode from the moment agents can find it: it is bound in a
// private 0700 directory, given its mode, and renamed into dir (a socket
// is found by inode, so the rename keeps it working). Only root may answer
// by default, so the mode is 0600; other allowed uids need 0666, and the
// credentials check stays the gate.
func listen(dir string, allowed []uint32) (*net.UnixConn, string, error) {
	private, err := os.MkdirTemp(dir, ".sck-")
	if err != nil {
		return nil, "", fmt.Errorf("askpw: creating the answer socket: %w", err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: tmp, Net: "unixgram"})
	if err != nil {
		return nil, "", fmt.Errorf("askpw: creating the answer socket: %w", err)
	}
	fail := func(err error) (*net.UnixConn, string, error) {
		conn.Close()
		return nil, "", fmt.Errorf("askpw: creating the answer socket: %w", err)
	}
	mode := os.FileMode(0o600)
	if slices.ContainsFunc(allowed, func(u uint32) bool { return u != 0 }) {
		mode = 0o666
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return fail(err)
	}
	if serr != nil {
		return fail(fmt.Errorf("SO_PASSCRED: %w", serr))
	}
	final := filepath.Join(dir, "sck."+randomSuffix())
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	return conn, final, nil
}

// publish writes the ask file atomically: agents watch for IN_MOVED_TO and
// IN_CLOSE_WRITE, and must never read half a question.
func publish(dir string, q Question, sockPath string, notAfter uint64) (string, error) {
	var b strings.Builder
	b.WriteString("[Ask]\n")
	fmt.Fprintf(&b, "PID=%d\nSocket=%s\nAcceptCached=0\nEcho=%d\nNotAfter=%d\nMessage=%s\n",
		os.Getpid(), sockPath, boolInt(q.Echo), notAfter, q.Message)
	if q.Icon != "" {
		fmt.Fprintf(&b, "Icon=%s\n", q.Icon)
	}
	if q.ID != "" {
		fmt.Fprintf(&b, "Id=%s\n", q.ID)
	}
	suffix := randomSuffix()
	tmp := filepath.Join(dir, "tmp."+suffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("askpw: writing the ask file: %w", err)
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Chmod(0o644) // agents that are not root read it too
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	final := filepath.Join(dir, "ask."+suffix)
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("askpw: writing the ask file: %w", err)
	}
	return final, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// receive reads one datagram, the answer going straight into buf. It
// returns kind '+' with the answer's length, '-' for a cancel, or 0 for a
// datagram to ignore (no or a non-allowed uid, not an answer); buf is
// zeroed in every case but '+', and beyond the answer in that one.
func receive(conn *net.UnixConn, buf []byte, allowed []uint32) (n int, kind byte, err error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var (
		head  [1]byte // '+' or '-'
		extra [1]byte // room for the NUL after an answer that fills buf
		oob   = make([]byte, unix.CmsgSpace(unix.SizeofUcred))
		got   int
		oobn  int
		flags int
		rerr  error
	)
	defer clear(extra[:])
	err = raw.Read(func(fd uintptr) bool {
		got, oobn, flags, _, rerr = unix.RecvmsgBuffers(int(fd), [][]byte{head[:], buf, extra[:]}, oob,
			unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		clear(buf)
		return 0, 0, err
	}
	ok := flags&unix.MSG_CTRUNC == 0 && sender(oob[:oobn], allowed)
	if !ok || got == 0 || (head[0] != '+' && head[0] != '-') {
		clear(buf)
		return 0, 0, nil
	}
	if head[0] == '-' {
		clear(buf)
		return 0, '-', nil
	}
	// "+" then the answer, optionally followed by a NUL (and, from some
	// agents, more NUL-separated answers, which are not used).
	payload := got - 1
	if i := indexZero(buf[:min(payload, len(buf))]); i >= 0 {
		clear(buf[i:])
		return i, '+', nil
	}
	if flags&unix.MSG_TRUNC != 0 || payload > len(buf)+1 || (payload == len(buf)+1 && extra[0] != 0) {
		clear(buf)
		return 0, 0, ErrTooLong
	}
	n = min(payload, len(buf))
	clear(buf[n:])
	return n, '+', nil
}

func indexZero(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// sender reports whether the kernel-attached credentials name an allowed
// uid. Any file descriptors passed along are closed.
func sender(oob []byte, allowed []uint32) bool {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	ok := false
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(m); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
			return false
		case unix.SCM_CREDENTIALS:
			if uc, err := unix.ParseUnixCredentials(m); err == nil {
				ok = slices.Contains(allowed, uc.Uid)
			}
		}
	}
	return ok
}
