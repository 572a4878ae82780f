package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealbox/sealbox/internal/testbin"
)

// TestDebianPackage builds the .deb with make deb from a copy of the
// source, and, in a container booted by the real systemd, installs it with
// apt, initializes, starts, unseals, has a unit read the secret through
// LoadCredential=, then removes and purges it: the keyring stays
// (testdata/nspawn/run-deb.sh).
func TestDebianPackage(t *testing.T) {
	nspawn, rootfs := nspawnRootfs(t)
	if _, err := exec.LookPath("dpkg-buildpackage"); err != nil {
		testbin.Require(t, "dpkg-buildpackage is not installed (apt-get install dpkg-dev debhelper)")
	}
	if _, err := exec.LookPath("dh"); err != nil {
		testbin.Require(t, "debhelper is not installed (apt-get install debhelper)")
	}
	t.Parallel()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	// A copy of the tree as git sees it (tracked and new files, not the
	// ignored ones): the build writes beside the source and into its parent.
	src := filepath.Join(t.TempDir(), "sealbox")
	files, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		testbin.Require(t, "the source tree is not a git checkout: "+err.Error())
	}
	for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		st, err := os.Lstat(filepath.Join(root, f))
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted in the working tree
		}
		os.MkdirAll(filepath.Dir(filepath.Join(src, f)), 0o755)
		copyFile(t, filepath.Join(root, f), filepath.Join(src, f), st.Mode().Perm())
	}
	commit, _ := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	build := exec.Command("make", "-C", src, "deb", "COMMIT="+strings.TrimSpace(string(commit)))
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, lastLines(string(out), 30))
	}
	debs, _ := filepath.Glob(filepath.Join(src, "dist", "sealbox_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb left %v in dist/\n%s", debs, lastLines(string(out), 10))
	}
	stage := t.TempDir()
	copyFile(t, debs[0], filepath.Join(stage, filepath.Base(debs[0])), 0o644)
	copyFile(t, filepath.Join("testdata", "nspawn", "run-deb.sh"), filepath.Join(stage, "run-deb.sh"), 0o755)
	bootContainer(t, nspawn, rootfs, stage, "sealbox-deb-test.service", "SEALBOX-DEB:")
}
