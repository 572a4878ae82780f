package askpw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealbox/sealbox/internal/testbin"
)

// question is an ask file as an agent reads it.
type question struct {
	path   string
	fields map[string]string
}

// parseAsk parses an ask file the way agents do: an [Ask] section of
// KEY=VALUE lines.
func parseAsk(b []byte) (map[string]string, error) {
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) == 0 || lines[0] != "[Ask]" {
		return nil, fmt.Errorf("no [Ask] section: %q", b)
	}
	fields := map[string]string{}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("not KEY=VALUE: %q", l)
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("%s= twice", k)
		}
		fields[k] = v
	}
	return fields, nil
}

// waitQuestion waits for the ask file in dir, as an agent watching it
// would, and parses it.
func waitQuestion(t *testing.T, dir string) question {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		m, _ := filepath.Glob(filepath.Join(dir, "ask.*"))
		if len(m) == 0 {
			continue
		}
		if len(m) > 1 {
			t.Fatalf("%d ask files: %v", len(m), m)
		}
		b, err := os.ReadFile(m[0])
		if err != nil {
			t.Fatal(err)
		}
		f, err := parseAsk(b)
		if err != nil {
			t.Fatalf("%s: %v", m[0], err)
		}
		return question{path: m[0], fields: f}
	}
	t.Fatal("no ask file appeared")
	return question{}
}

// answer sends payload to the question's socket, as an agent does; with
// cred set it claims those credentials, which only root may do for another
// uid.
func answer(t *testing.T, q question, payload []byte, cred *unix.Ucred) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var oob []byte
	if cred != nil {
		oob = unix.UnixCredentials(cred)
	}
	if err := unix.Sendmsg(fd, payload, oob, &unix.SockaddrUnix{Name: q.fields["Socket"]}, 0); err != nil {
		t.Fatalf("sending the answer: %v", err)
	}
}

type result struct {
	n   int
	err error
}

func ask(ctx context.Context, q Question, buf []byte) <-chan result {
	ch := make(chan result, 1)
	go func() {
		n, err := Ask(ctx, q, buf)
		ch <- result{n, err}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Ask did not return")
		return result{}
	}
}

// filled returns a buffer of junk, to see what Ask wipes.
func filled(n int) []byte { return bytes.Repeat([]byte{0xAA}, n) }

func zero(b []byte) bool { return !bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) }

// emptyDir fails unless Ask left nothing behind in dir.
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind: %s", e.Name())
	}
}

func monotonicMicros(t *testing.T) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano() / 1000)
}

func self() []uint32 { return []uint32{uint32(os.Getuid())} }

func TestAskAnswered(t *testing.T) {
	dir := t.TempDir()
	buf := filled(64)
	before := monotonicMicros(t)
	ch := ask(t.Context(), Question{
		Message: "Password for sealbox admin alice:", Icon: "dialog-password", ID: "sealbox:unseal:alice",
		Timeout: time.Minute, Dir: dir, AllowedUIDs: self(),
	}, buf)
	q := waitQuestion(t, dir)
	f := q.fields
	want := map[string]string{
		"PID": strconv.Itoa(os.Getpid()), "AcceptCached": "0", "Echo": "0",
		"Message": "Password for sealbox admin alice:", "Icon": "dialog-password", "Id": "sealbox:unseal:alice",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s=%q, want %q", k, f[k], v)
		}
	}
	if len(f) != len(want)+2 {
		t.Errorf("fields %v", f)
	}
	notAfter, err := strconv.ParseUint(f["NotAfter"], 10, 64)
	if err != nil || notAfter < before+uint64(time.Minute.Microseconds()) || notAfter > monotonicMicros(t)+uint64(time.Minute.Microseconds()) {
		t.Errorf("NotAfter=%s: not a minute from now on CLOCK_MONOTONIC (%d)", f["NotAfter"], before)
	}
	if filepath.Dir(f["Socket"]) != dir || !strings.HasPrefix(filepath.Base(f["Socket"]), "sck.") {
		t.Errorf("Socket=%s, want a sck.* in %s", f["Socket"], dir)
	}
	st, err := os.Stat(f["Socket"])
	wantMode := os.FileMode(0o600)
	if os.Getuid() != 0 {
		wantMode = 0o666 // a non-root uid may answer
	}
	if err != nil || st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != wantMode {
		t.Errorf("socket: %v, %v; want a socket with mode %v", st.Mode(), err, wantMode)
	}
	if st, err := os.Stat(q.path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("ask file: %v, %v; want mode 0644", st.Mode(), err)
	}
	// Datagrams that are not answers are ignored; the first answer wins.
	answer(t, q, []byte("garbage"), nil)
	answer(t, q, []byte{}, nil)
	answer(t, q, []byte("+correct horse\x00second\x00"), nil)
	answer(t, q, []byte("+too late"), nil)
	r := wait(t, ch)
	if r.err != nil || string(buf[:r.n]) != "correct horse" || !zero(buf[r.n:]) {
		t.Fatalf("Ask: %d, %v, buffer %q", r.n, r.err, buf)
	}
	emptyDir(t, dir)
}

func TestAskEchoAndBufferEdges(t *testing.T) {
	for _, tc := range []struct {
		payload string
		size    int
		want    string
		err     error
	}{
		{"+alice", 5, "alice", nil},
		{"+alice\x00", 5, "alice", nil},
		{"+", 5, "", nil},
		{"+\x00", 5, "", nil},
		{"+alice", 4, "", ErrTooLong},
		{"+alice\x00", 4, "", ErrTooLong},
		{"+alice" + strings.Repeat("x", 100), 8, "", ErrTooLong},
	} {
		dir := t.TempDir()
		buf := filled(tc.size)
		ch := ask(t.Context(), Question{Message: "Admin name:", Echo: true, Dir: dir, AllowedUIDs: self()}, buf)
		q := waitQuestion(t, dir)
		if q.fields["Echo"] != "1" || q.fields["NotAfter"] != "0" {
			t.Errorf("Echo=%s NotAfter=%s, want 1 and 0", q.fields["Echo"], q.fields["NotAfter"])
		}
		answer(t, q, []byte(tc.payload), nil)
		r := wait(t, ch)
		if !errors.Is(r.err, tc.err) || string(buf[:r.n]) != tc.want || !zero(buf[r.n:]) {
			t.Errorf("%q into %d bytes: %d, %v, buffer %q; want %q, %v", tc.payload, tc.size, r.n, r.err, buf, tc.want, tc.err)
		}
		if r.err != nil && strings.Contains(r.err.Error(), "alice") {
			t.Errorf("the error quotes the answer: %v", r.err)
		}
		emptyDir(t, dir)
	}
}

func TestAskCanceledByAgent(t *testing.T) {
	dir := t.TempDir()
	buf := filled(16)
	ch := ask(t.Context(), Question{Message: "Password:", Dir: dir, AllowedUIDs: self()}, buf)
	answer(t, waitQuestion(t, dir), []byte("-"), nil)
	if r := wait(t, ch); !errors.Is(r.err, ErrCanceled) || r.n != 0 || !zero(buf) {
		t.Fatalf("%d, %v, buffer %q; want ErrCanceled and a zeroed buffer", r.n, r.err, buf)
	}
	emptyDir(t, dir)
}

// Answers from a uid that is not allowed are ignored, the buffer they
// landed in wiped; the question then times out.
func TestAskIgnoresOtherUIDs(t *testing.T) {
	dir := t.TempDir()
	buf := filled(16)
	start := time.Now()
	ch := ask(t.Context(), Question{Message: "Password:", Dir: dir, Timeout: 300 * time.Millisecond,
		AllowedUIDs: []uint32{uint32(os.Getuid()) + 1}}, buf)
	q := waitQuestion(t, dir)
	answer(t, q, []byte("+from the wrong uid"), nil)
	answer(t, q, []byte("-"), nil)
	r := wait(t, ch)
	if !errors.Is(r.err, ErrTimeout) || r.n != 0 || !zero(buf) {
		t.Fatalf("%d, %v, buffer %q; want ErrTimeout and a zeroed buffer", r.n, r.err, buf)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("returned after %v, before the timeout", d)
	}
	emptyDir(t, dir)
}

// The uid is the kernel's: root may claim another uid in SCM_CREDENTIALS,
// and that answer is judged by the uid it claims.
func TestAskIgnoresClaimedNonRootUID(t *testing.T) {
	if os.Geteuid() != 0 {
		testbin.Require(t, "sending SCM_CREDENTIALS for another uid needs root")
	}
	dir := t.TempDir()
	buf := filled(16)
	ch := ask(t.Context(), Question{Message: "Password:", Dir: dir, Timeout: time.Minute}, buf)
	q := waitQuestion(t, dir)
	pid := int32(os.Getpid())
	answer(t, q, []byte("+evil"), &unix.Ucred{Pid: pid, Uid: 65534, Gid: 65534})
	answer(t, q, []byte("-"), &unix.Ucred{Pid: pid, Uid: 65534, Gid: 65534})
	answer(t, q, []byte("+good"), &unix.Ucred{Pid: pid, Uid: 0, Gid: 0})
	if r := wait(t, ch); r.err != nil || string(buf[:r.n]) != "good" {
		t.Fatalf("%d, %v, buffer %q; want root's answer only", r.n, r.err, buf)
	}
	emptyDir(t, dir)
}

func TestAskContextCanceled(t *testing.T) {
	dir := t.TempDir()
	buf := filled(16)
	ctx, cancel := context.WithCancel(t.Context())
	ch := ask(ctx, Question{Message: "Password:", Dir: dir, AllowedUIDs: self()}, buf)
	q := waitQuestion(t, dir)
	start := time.Now()
	cancel()
	r := wait(t, ch)
	if !errors.Is(r.err, context.Canceled) || !zero(buf) {
		t.Fatalf("%d, %v, buffer %q; want context.Canceled", r.n, r.err, buf)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v to notice the cancel", d)
	}
	if _, err := os.Stat(q.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ask file after cancel: %v", err)
	}
	emptyDir(t, dir)

	// Already canceled: nothing is published.
	if n, err := Ask(ctx, Question{Message: "Password:", Dir: dir}, buf); !errors.Is(err, context.Canceled) || n != 0 {
		t.Fatalf("canceled context: %d, %v", n, err)
	}
	emptyDir(t, dir)
}

func TestAskTimeout(t *testing.T) {
	dir := t.TempDir()
	buf := filled(16)
	start := time.Now()
	before := monotonicMicros(t)
	ch := ask(t.Context(), Question{Message: "Password:", Dir: dir, Timeout: 200 * time.Millisecond, AllowedUIDs: self()}, buf)
	q := waitQuestion(t, dir)
	notAfter, _ := strconv.ParseUint(q.fields["NotAfter"], 10, 64)
	if notAfter < before+200_000 || notAfter > before+1_200_000 {
		t.Errorf("NotAfter=%s, want about %d", q.fields["NotAfter"], before+200_000)
	}
	r := wait(t, ch)
	if !errors.Is(r.err, ErrTimeout) || !zero(buf) {
		t.Fatalf("%d, %v; want ErrTimeout", r.n, r.err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("timed out after %v", d)
	}
	emptyDir(t, dir)

	// A context deadline earlier than Timeout sets NotAfter and ends the wait.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	before = monotonicMicros(t)
	ch = ask(ctx, Question{Message: "Password:", Dir: dir, Timeout: time.Hour, AllowedUIDs: self()}, buf)
	q = waitQuestion(t, dir)
	notAfter, _ = strconv.ParseUint(q.fields["NotAfter"], 10, 64)
	if notAfter > before+200_000 {
		t.Errorf("NotAfter=%s, want the context's deadline, before %d", q.fields["NotAfter"], before+200_000)
	}
	if r := wait(t, ch); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("%v; want context.DeadlineExceeded", r.err)
	}
	emptyDir(t, dir)
}

func TestAskRefusesBadQuestions(t *testing.T) {
	dir := t.TempDir()
	buf := make([]byte, 8)
	// A question wrongly accepted would wait for an answer: not for long.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	for _, q := range []Question{
		{Message: "two\nlines", Dir: dir},
		{Message: "Password:\nSocket=/tmp/evil", Dir: dir},
		{Message: "Password:", Icon: "x\ry", Dir: dir},
		{Message: "Password:", ID: "a\x00b", Dir: dir},
		{Message: "bad \xff utf-8", Dir: dir},
		{Message: "", Dir: dir},
		{Message: "Password:", Dir: dir, Timeout: -time.Second},
		{Message: "Password:", Dir: dir + "\nNotAfter=1"},
		{Message: "Password:", Dir: filepath.Join(dir, "missing")},
	} {
		if _, err := Ask(ctx, q, buf); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%+v: accepted (%v)", q, err)
		}
	}
	if _, err := Ask(ctx, Question{Message: "Password:", Dir: dir}, nil); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Error("an empty buffer was accepted")
	}
	emptyDir(t, dir)
}

// systemd's own agent lists the question and answers it. systemd 252's
// systemd-tty-ask-password-agent has no option for another directory (see
// its --help), so it runs in a private mount namespace where the test's
// directory is mounted on /run/systemd/ask-password; script(1) gives it the
// terminal it reads the answer from.
func TestSystemdAgent(t *testing.T) {
	agent, err := exec.LookPath("systemd-tty-ask-password-agent")
	if err != nil {
		t.Skip("systemd-tty-ask-password-agent is not installed (package systemd)")
	}
	if os.Geteuid() != 0 {
		testbin.Require(t, "mounting the test's directory over /run/systemd/ask-password in a mount namespace needs root")
	}
	var tools []string
	for _, name := range []string{"unshare", "script"} {
		p, err := exec.LookPath(name)
		if err != nil {
			testbin.Require(t, name+" is not installed (util-linux, bsdutils)")
		}
		tools = append(tools, p)
	}
	// runAgent runs the agent with args in the namespace, stdin its terminal's input.
	runAgent := func(ctx context.Context, dir, stdin string, args string) string {
		t.Helper()
		script := `set -e
mount -t tmpfs sealbox-test /run
mkdir -p /run/systemd/ask-password
mount --bind "$1" /run/systemd/ask-password
exec "$2" -qec "$3 $4" /dev/null`
		cmd := exec.CommandContext(ctx, tools[0], "--mount", "--propagation", "private",
			"sh", "-c", script, "sh", dir, tools[1], agent, args)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v: %q", agent, args, err, out)
		}
		return string(out)
	}
	dir := t.TempDir()
	buf := filled(32)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ch := ask(ctx, Question{Message: "sealbox test question", Dir: dir, Timeout: time.Minute}, buf)
	waitQuestion(t, dir)
	if out := runAgent(ctx, dir, "", "--list"); !strings.Contains(out, "'sealbox test question'") {
		t.Fatalf("the agent does not list the question:\n%s", out)
	}
	runAgent(ctx, dir, "typed into the agent\n", "--query")
	if r := wait(t, ch); r.err != nil || string(buf[:r.n]) != "typed into the agent" {
		t.Fatalf("answered by the agent: %d, %v, %q", r.n, r.err, buf[:r.n])
	}
	emptyDir(t, dir)
}
