package main

import (
	"testing"

	"github.com/sealbox/sealbox/internal/clidoc"
)

// TestGeneratedDocsAreCurrent fails when the man page or a completion
// script differs from what the command table gives; make docs rewrites
// them.
func TestGeneratedDocsAreCurrent(t *testing.T) {
	t.Parallel()
	p := program()
	clidoc.Check(t, map[string]string{
		"docs/man/sealbox-admin.8":       clidoc.Man(p, "sealbox"),
		"completions/sealbox-admin.bash": clidoc.Bash(p),
		"completions/_sealbox-admin":     clidoc.Zsh(p),
		"completions/sealbox-admin.fish": clidoc.Fish(p),
	})
}
