// Package prompt reads passwords the way the interface contract says: on a
// terminal, without echo (new passwords twice); otherwise one per line from
// standard input, in the order the prompts would appear (new passwords once).
//
// Passwords are returned as []byte the caller wipes; they never pass through a
// Go string, and they live in locked memory (memlock) until the Reader is
// closed: whatever the terminal or pipe reading left on the heap is wiped,
// or erased by runtime/secret, before the password is handed over.
package prompt

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/term"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
)

// ErrMismatch is returned when a new password and its repetition differ.
var ErrMismatch = errclass.New(errclass.Invalid, "the two passwords do not match")

// ErrNoInput is returned when stdin ends before a password.
var ErrNoInput = errors.New("no password on standard input (one per line, in prompt order)")

// MaxLine bounds a password line read from a pipe.
const MaxLine = 4096

// Reader reads passwords from a terminal or a pipe.
type Reader struct {
	in    *os.File
	out   io.Writer // where prompts go (stderr)
	tty   bool
	lines *bufio.Reader
	held  []*memlock.Buffer // the passwords handed out, in locked memory
}

// Close wipes and unmaps every password this Reader handed out.
func (r *Reader) Close() {
	for _, b := range r.held {
		b.Destroy()
	}
	r.held = nil
}

// keep moves a password into locked memory and wipes b.
func (r *Reader) keep(b []byte) []byte {
	buf, err := memlock.New(max(len(b), 1), memlock.Options{AllowUnlocked: true})
	if err != nil {
		return b
	}
	copy(buf.Bytes(), b)
	memlock.Wipe(b)
	r.held = append(r.held, buf)
	return buf.Bytes()[:len(b)]
}

// New returns a Reader on in, prompting on out when in is a terminal.
func New(in *os.File, out io.Writer) *Reader {
	r := &Reader{in: in, out: out, tty: term.IsTerminal(int(in.Fd()))}
	if !r.tty {
		r.lines = bufio.NewReaderSize(in, MaxLine+2)
	}
	return r
}

// Interactive reports whether passwords come from a terminal.
func (r *Reader) Interactive() bool { return r.tty }

// Password reads an existing password after showing label.
func (r *Reader) Password(label string) (pw []byte, err error) {
	// While it waits for input, what earlier work left on the heap inside
	// memlock.Do is erased (runtime/secret erases at collection).
	runtime.GC()
	memlock.Do(func() {
		if !r.tty {
			pw, err = r.line()
		} else {
			pw, err = r.readTerm(label + ": ")
		}
	})
	if err != nil {
		return nil, err
	}
	return r.keep(pw), nil
}

// NewPassword reads a new password: twice on a terminal, once from a pipe.
func (r *Reader) NewPassword(label string) (pw []byte, err error) {
	runtime.GC()
	memlock.Do(func() { pw, err = r.newPassword(label) })
	if err != nil {
		return nil, err
	}
	return r.keep(pw), nil
}

// mismatchTries is how many times a terminal user may type a new password
// and its repetition before ErrMismatch.
const mismatchTries = 3

func (r *Reader) newPassword(label string) ([]byte, error) {
	if !r.tty {
		return r.line()
	}
	for try := 1; ; try++ {
		a, err := r.readTerm(label + ": ")
		if err != nil {
			return nil, err
		}
		b, err := r.readTerm("repeat " + label + ": ")
		if err != nil {
			memlock.Wipe(a)
			return nil, err
		}
		same := subtle.ConstantTimeCompare(a, b) == 1
		memlock.Wipe(b)
		if same {
			return a, nil
		}
		memlock.Wipe(a)
		if try == mismatchTries {
			return nil, ErrMismatch
		}
		fmt.Fprintln(r.out, "the two passwords do not match; try again")
	}
}

// line reads one line from the pipe without keeping copies behind: the
// bufio buffer is overwritten by later reads, and the returned slice is the
// caller's to wipe.
func (r *Reader) line() ([]byte, error) {
	raw, err := r.lines.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		memlock.Wipe(raw)
		return nil, fmt.Errorf("password line longer than %d bytes", MaxLine)
	}
	if err != nil && !(errors.Is(err, io.EOF) && len(raw) > 0) {
		if errors.Is(err, io.EOF) {
			return nil, ErrNoInput
		}
		return nil, err
	}
	n := len(raw)
	for n > 0 && (raw[n-1] == '\n' || raw[n-1] == '\r') {
		n--
	}
	out := make([]byte, n)
	copy(out, raw[:n])
	memlock.Wipe(raw)
	return out, nil
}

// readTerm reads without echo and restores the terminal if the user presses
// Ctrl-C or the process is told to stop meanwhile.
func (r *Reader) readTerm(prompt string) ([]byte, error) {
	fd := int(r.in.Fd())
	state, err := term.GetState(fd)
	if err != nil {
		return nil, err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	defer func() {
		signal.Stop(sig)
		close(done)
	}()
	go func() {
		select {
		case <-sig:
			_ = term.Restore(fd, state)
			fmt.Fprintln(r.out)
			os.Exit(130)
		case <-done:
		}
	}()
	fmt.Fprint(r.out, prompt)
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(r.out)
	if err != nil {
		return nil, err
	}
	return pw, nil
}

// ErrNoTerminal is returned by Confirm when there is no terminal to ask on.
var ErrNoTerminal = errors.New("no terminal to confirm on; pass --yes to confirm from a script")

// Confirm asks a yes/no question on the terminal (the answer is echoed) and
// reports whether the answer was yes. Without a terminal it refuses:
// scripts confirm with a flag, never by piping "y".
func (r *Reader) Confirm(question string) (bool, error) {
	if !r.tty {
		return false, ErrNoTerminal
	}
	fmt.Fprint(r.out, question+" [y/N] ")
	line, err := bufio.NewReader(r.in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	switch string(bytes.TrimSpace([]byte(line))) {
	case "y", "Y", "yes", "YES", "Yes":
		return true, nil
	}
	return false, nil
}
