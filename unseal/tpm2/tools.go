package tpm2

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// defaultTCTI is the TCTI when Config.TCTI is empty: the kernel's resource
// manager.
const defaultTCTI = "device:/dev/tpmrm0"

// stderrMax bounds the stderr kept from one command, and errTextMax the
// part of it an error message quotes.
const (
	stderrMax  = 16 << 10
	errTextMax = 300
)

// session is one operation's use of the tools: its config and its private
// temporary directory.
type session struct {
	cfg Config
	dir string
}

// proc is a started tool.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *capped
}

// start starts tool with args. stdin and stdout, when not nil, are given to
// the child as they are (no copying goroutine, so no copy of what passes
// through them); otherwise the child gets /dev/null. The child runs in its
// own process group, which is killed when ctx ends.
func (s *session) start(ctx context.Context, tool string, stdin, stdout *os.File, args ...string) (*proc, error) {
	path, err := s.lookPath(tool)
	if err != nil {
		return nil, fmt.Errorf("tpm2: %s: %w: %w", tool, ErrUnavailable, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = childEnv(s.cfg.TCTI)
	cmd.Dir = s.dir
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	stderr := &capped{max: stderrMax}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group's id is the child's pid (Setpgid with Pgid 0).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 500 * time.Millisecond
	if err := cmd.Start(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tpm2: %s: %w: %w", tool, ErrUnavailable, context.Cause(ctx))
		}
		return nil, fmt.Errorf("tpm2: %s: %w: %w", tool, ErrUnavailable, err)
	}
	return &proc{name: tool, cmd: cmd, stderr: stderr}, nil
}

// wait waits for p and turns a failure into a classified error.
func (p *proc) wait(ctx context.Context) error {
	err := p.cmd.Wait()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("tpm2: %s: %w: %w", p.name, ErrUnavailable, context.Cause(ctx))
	}
	return classify(p.name, err, p.stderr.Bytes())
}

// run starts tool and waits for it.
func (s *session) run(ctx context.Context, tool string, args ...string) error {
	p, err := s.start(ctx, tool, nil, nil, args...)
	if err != nil {
		return err
	}
	return p.wait(ctx)
}

// flush flushes every transient object and every loaded and saved session
// of a TPM without a resource manager (on one with, there are none to see).
func (s *session) flush(ctx context.Context) error {
	for _, kind := range []string{"-t", "-l", "-s"} {
		if err := s.run(ctx, "tpm2_flushcontext", kind); err != nil {
			return err
		}
	}
	return nil
}

// flushObjects flushes the transient objects only, between two commands.
func (s *session) flushObjects(ctx context.Context) error {
	return s.run(ctx, "tpm2_flushcontext", "-t")
}

// path is the name of a file in the session's directory.
func (s *session) path(name string) string { return filepath.Join(s.dir, name) }

func (s *session) lookPath(tool string) (string, error) {
	if s.cfg.Tools == "" {
		return exec.LookPath(tool)
	}
	path := filepath.Join(s.cfg.Tools, tool)
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", &fs.PathError{Op: "exec", Path: path, Err: fs.ErrPermission}
	}
	return path, nil
}

// childEnv is this process's environment without any TPM2TOOLS_ or TSS2_
// setting, plus the TCTI: the TCTI is the child's alone, never set in this
// process.
func childEnv(tcti string) []string {
	if tcti == "" {
		tcti = defaultTCTI
	}
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TPM2TOOLS_") || strings.HasPrefix(kv, "TSS2_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TPM2TOOLS_TCTI="+tcti)
}

// codeRE finds the TSS2 response codes tpm2-tools and the TSS print:
// "ErrorCode (0x0000099d)" and "Esys_Unseal(0x99D) - …".
var codeRE = regexp.MustCompile(`(?:ErrorCode \(|[A-Za-z_]\()0x([0-9A-Fa-f]{1,8})\)`)

// classify turns a failed tool into an error wrapping ErrPolicy,
// ErrBinding or ErrUnavailable when its stderr says which, and quotes the
// start of its ERROR lines.
func classify(tool string, err error, stderr []byte) error {
	text := string(stderr)
	var class error
	for _, m := range codeRE.FindAllStringSubmatch(text, -1) {
		rc, perr := strconv.ParseUint(m[1], 16, 32)
		if perr != nil {
			continue
		}
		if c := rcClass(uint32(rc)); c != nil {
			class = c
			break
		}
	}
	if class == nil && (strings.Contains(text, "Could not load tcti") || strings.Contains(text, "Failed to instantiate TCTI")) {
		class = ErrUnavailable
	}
	msg := errorLines(text)
	if class == nil {
		return fmt.Errorf("tpm2: %s: %w: %s", tool, err, msg)
	}
	return fmt.Errorf("tpm2: %s: %w: %w: %s", tool, class, err, msg)
}

// rcClass maps a TSS2 response code to a sentinel, or nil.
func rcClass(rc uint32) error {
	layer := rc >> 16
	switch layer {
	case 0x0A: // TCTI layer: the TPM cannot be reached
		return ErrUnavailable
	case 0: // the TPM itself
	default:
		return nil
	}
	if rc&0x080 != 0 { // format one: error number in bits 0-5
		switch rc & 0x3F {
		case 0x1D: // TPM_RC_POLICY_FAIL
			return ErrPolicy
		case 0x1F: // TPM_RC_INTEGRITY
			return ErrBinding
		}
		return nil
	}
	switch rc & 0xFFF { // format zero; warnings are RC_WARN (0x900) + n
	case 0x902, 0x903, 0x908, 0x90A, 0x922: // object or session memory, yielded, testing, retry
		return ErrUnavailable
	case 0x128: // TPM_RC_PCR_CHANGED: a PCR moved during the command
		return ErrUnavailable
	}
	return nil
}

// errorLines joins the ERROR lines of a tool's stderr (all of it if there
// are none), cut to errTextMax bytes.
func errorLines(text string) string {
	var lines []string
	for l := range strings.SplitSeq(text, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "ERROR") {
			lines = append(lines, l)
		}
	}
	s := strings.Join(lines, "; ")
	if s == "" {
		s = strings.Join(strings.Fields(text), " ")
	}
	if len(s) > errTextMax {
		s = s[:errTextMax] + "…"
	}
	if s == "" {
		s = "(no stderr)"
	}
	return s
}

// capped is a buffer that keeps the first max bytes written to it.
type capped struct {
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) Bytes() []byte { return c.buf.Bytes() }
