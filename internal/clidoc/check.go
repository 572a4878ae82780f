package clidoc

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealbox/sealbox/internal/testbin"
)

// UpdateEnv names the environment variable that makes Check write the files
// instead of comparing them (make docs sets it).
const UpdateEnv = "SEALBOX_UPDATE_DOCS"

// Files is what a program with commands generates: its man page and its
// completions, by their paths in the repository.
func Files(p Program) map[string]string {
	return map[string]string{
		"docs/man/" + p.Name + "." + p.Section: Man(p, "sealbox"),
		"completions/" + p.Name + ".bash":      Bash(p),
		"completions/_" + p.Name:               Zsh(p),
		"completions/" + p.Name + ".fish":      Fish(p),
	}
}

// Check compares each generated file (path relative to the repository's
// root) with what is committed, or writes it when $SEALBOX_UPDATE_DOCS=1;
// then it has each file's own tool read it: groff for man pages (no
// warnings), bash, zsh and fish for completions (no syntax errors).
func Check(t *testing.T, files map[string]string) {
	t.Helper()
	root := repoRoot(t)
	for rel, want := range files {
		path := filepath.Join(root, rel)
		if os.Getenv(UpdateEnv) == "1" {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is not what the command table gives (run: make docs)", rel)
			continue
		}
		validate(t, rel, path)
	}
}

func validate(t *testing.T, rel, path string) {
	t.Helper()
	var cmd []string
	switch {
	case strings.HasPrefix(rel, "docs/man/"):
		cmd = []string{"groff", "-man", "-ww", "-z", path}
	case strings.HasSuffix(rel, ".bash"):
		cmd = []string{"bash", "-n", path}
	case strings.HasSuffix(rel, ".fish"):
		cmd = []string{"fish", "--no-execute", path}
	case strings.HasPrefix(filepath.Base(rel), "_"):
		cmd = []string{"zsh", "-n", path}
	default:
		return
	}
	if _, err := exec.LookPath(cmd[0]); err != nil {
		testbin.Require(t, cmd[0]+" checks "+rel+" (.ci/run installs it)")
		return
	}
	var out bytes.Buffer
	c := exec.Command(cmd[0], cmd[1:]...)
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil || out.Len() > 0 {
		t.Errorf("%s: %v: %v\n%s", rel, cmd, err, out.String())
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}
