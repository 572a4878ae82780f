package clidoc

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sealbox/sealbox/internal/testbin"
)

var demo = Program{
	Name: "demo-tool", Section: "8", Summary: "a tool - for tests",
	Synopsis:    []string{"COMMAND [FLAGS]"},
	Description: "First paragraph\nwrapped, and so on…\n\n  .verbatim line\n  second\n\nLast \\ paragraph.",
	Flags:       []Flag{{Name: "keyring", Arg: "file", Usage: "the keyring"}, {Name: "version", Usage: "print the version"}},
	Commands: []Command{
		{Name: "init", Synopsis: "init --admin NAME", Summary: "create it", Help: "Create it.", Flags: []Flag{{Name: "admin", Arg: "name", Usage: "the admin's name"}, {Name: "secret-file", Arg: "file", Usage: "read it"}}},
		{Name: "add", Synopsis: "add NAME", Summary: "add one", Help: "Add.", Flags: []Flag{{Name: "as", Arg: "actor", Usage: "acting admin"}}},
		{Name: "client add", Synopsis: "client add NAME", Summary: "add a client", Help: "Add a client.", Flags: []Flag{{Name: "uid", Arg: "uid", Usage: "its uid"}, {Name: "json", Usage: "JSON"}}},
		{Name: "client list", Synopsis: "client list", Summary: "list clients", Help: "List."},
	},
	Sections: []Section{{Title: "Exit status", Body: "  0  ok"}},
}

func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		testbin.Require(t, tool+" (.ci/run installs it)")
	}
}

func TestManPageRendersCleanly(t *testing.T) {
	t.Parallel()
	need(t, "groff")
	page := Man(demo, "sealbox")
	for _, want := range []string{".TH DEMO\\-TOOL 8", "\\-\\-keyring", ".SS client add", "\\&.verbatim line", "Last \\e paragraph.", ".nf"} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q:\n%s", want, page)
		}
	}
	path := filepath.Join(t.TempDir(), "demo-tool.8")
	os.WriteFile(path, []byte(page), 0o644)
	out, err := exec.Command("groff", "-man", "-ww", "-Tutf8", path).CombinedOutput()
	text := string(out)
	if err != nil || strings.Contains(text, "warning") {
		t.Fatalf("groff: %v\n%s", err, text)
	}
	// The leading dot of a verbatim line is text, not a request.
	if !strings.Contains(text, ".verbatim line") {
		t.Fatalf("a verbatim line was lost:\n%s", text)
	}
}

// complete runs the bash completion for line (the cursor at its end) and
// returns the candidates.
func bashComplete(t *testing.T, script, line string) []string {
	t.Helper()
	words := strings.Fields(line)
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	var q []string
	for _, w := range words {
		q = append(q, quoteSingle(w))
	}
	prog := script + "\nCOMP_WORDS=(" + strings.Join(q, " ") + ")\nCOMP_CWORD=" + itoa(len(words)-1) +
		"\n" + funcName(demo.Name) + "\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	out, err := exec.Command("bash", "-c", prog).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestBashCompletes(t *testing.T) {
	t.Parallel()
	need(t, "bash")
	script := Bash(demo)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "keyring.db"), nil, 0o600)
	cases := []struct {
		line string
		want []string
		not  []string
	}{
		{"demo-tool ", []string{"init", "add", "client", "help"}, []string{"list"}},
		{"demo-tool cl", []string{"client"}, []string{"init"}},
		{"demo-tool client ", []string{"add", "list"}, []string{"init"}},
		{"demo-tool client add --", []string{"--uid", "--json", "--keyring", "--help"}, []string{"--admin", "--as"}},
		{"demo-tool add --", []string{"--as"}, []string{"--uid"}},
		{"demo-tool --keyring x init --a", []string{"--admin"}, nil},
		{"demo-tool init --keyring " + dir + "/k", []string{dir + "/keyring.db"}, nil},
		{"demo-tool init --admin ", nil, []string{"init", "keyring.db"}},
	}
	for _, c := range cases {
		got := bashComplete(t, script, c.line)
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("%q: %v lacks %q", c.line, got, w)
			}
		}
		for _, w := range c.not {
			if slices.Contains(got, w) {
				t.Errorf("%q: %v has %q", c.line, got, w)
			}
		}
	}
}

func TestFishCompletes(t *testing.T) {
	t.Parallel()
	need(t, "fish")
	path := filepath.Join(t.TempDir(), "demo-tool.fish")
	os.WriteFile(path, []byte(Fish(demo)), 0o644)
	run := func(line string) string {
		out, err := exec.Command("fish", "--no-config", "-c", "source "+quoteSingle(path)+"; complete -C "+quoteSingle(line)).CombinedOutput()
		if err != nil {
			t.Fatalf("fish: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := run("demo-tool "); !strings.Contains(out, "init\tcreate it") || !strings.Contains(out, "client\t") {
		t.Errorf("top level:\n%s", out)
	}
	if out := run("demo-tool client "); !strings.Contains(out, "add\tadd a client") || strings.Contains(out, "init") {
		t.Errorf("client group:\n%s", out)
	}
	if out := run("demo-tool client add --"); !strings.Contains(out, "--uid") || strings.Contains(out, "--as") {
		t.Errorf("client add flags:\n%s", out)
	}
	if out := run("demo-tool add --"); !strings.Contains(out, "--as") || strings.Contains(out, "--uid") {
		t.Errorf("add flags:\n%s", out)
	}
}

func TestZshParses(t *testing.T) {
	t.Parallel()
	need(t, "zsh")
	script := Zsh(demo)
	if !strings.HasPrefix(script, "#compdef demo-tool\n") {
		t.Fatalf("no #compdef line:\n%s", script)
	}
	path := filepath.Join(t.TempDir(), "_demo-tool")
	os.WriteFile(path, []byte(script), 0o644)
	if out, err := exec.Command("zsh", "-n", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
}
