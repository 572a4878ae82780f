package main

import (
	"strings"
	"testing"

	"github.com/sealbox/sealbox/config"
	"github.com/sealbox/sealbox/internal/clidoc"
)

// TestGeneratedDocsAreCurrent fails when sealboxd(8) or sealboxd.toml(5)
// differs from what the flags and the shipped configuration give; make
// docs rewrites them.
func TestGeneratedDocsAreCurrent(t *testing.T) {
	t.Parallel()
	page := tomlPage()
	// Every key of the shipped file is documented.
	for _, line := range strings.Split(config.Shipped, "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			if !strings.Contains(page, strings.ReplaceAll(strings.TrimSpace(k), "_", "_")) {
				t.Errorf("sealboxd.toml(5) lacks %s", strings.TrimSpace(k))
			}
		}
	}
	clidoc.Check(t, map[string]string{
		"docs/man/sealboxd.8":      clidoc.Man(program(), "sealbox"),
		"docs/man/sealboxd.toml.5": page,
	})
}
