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
	clidoc.Check(t, clidoc.Files(program()))
}
