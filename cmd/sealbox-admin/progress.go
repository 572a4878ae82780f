package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/sealbox/sealbox/keyring"
)

// waiter shows what a slow step is doing. On a terminal it redraws one line
// with the elapsed time until the step ends, then leaves the total; in a
// log or a pipe it writes the line once.
type waiter struct {
	mu      sync.Mutex
	out     io.Writer // the terminal or log, unwrapped (c.stderr ends the step first)
	tty     bool
	current *step
}

// endFirst ends the step shown before anything else is written, so that
// output and prompts never land inside the redrawn line.
type endFirst struct {
	c *cli
	w io.Writer
}

func (e endFirst) Write(p []byte) (int, error) {
	e.c.end()
	return e.w.Write(p)
}

type step struct {
	what  string
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

// begin ends the step shown (if any) and shows what.
func (c *cli) begin(what string) {
	c.wait.mu.Lock()
	defer c.wait.mu.Unlock()
	c.wait.endLocked()
	if c.wait.out == nil {
		return
	}
	if !c.wait.tty {
		fmt.Fprintf(c.wait.out, "%s…\n", what)
		return
	}
	s := &step{what: what, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	c.wait.current = s
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			fmt.Fprintf(c.wait.out, "\r%s… %.1fs", s.what, time.Since(s.start).Seconds())
			select {
			case <-s.stop:
				fmt.Fprintf(c.wait.out, "\r%s: %.1fs\033[K\n", s.what, time.Since(s.start).Seconds())
				return
			case <-t.C:
			}
		}
	}()
}

// end ends the step shown, if any.
func (c *cli) end() {
	c.wait.mu.Lock()
	defer c.wait.mu.Unlock()
	c.wait.endLocked()
}

func (w *waiter) endLocked() {
	if w.current == nil {
		return
	}
	close(w.current.stop)
	<-w.current.done
	w.current = nil
}

// stderrIsTerminal reports whether progress can be redrawn in place.
func stderrIsTerminal() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

// progress is admin.Options.Progress: each Argon2id derivation the CLI runs
// itself, and each timed run of a calibration.
func (c *cli) progress(what string, p keyring.Params) {
	c.begin(fmt.Sprintf("%s (Argon2id %v)", what, p))
}
