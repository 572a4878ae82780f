package testbin

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestBuildRunsAndCaches(t *testing.T) {
	defer Cleanup()
	p, err := Build("sealbox-admin", false)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("%s: %v %v", p, st.Mode(), err)
	}
	out, _ := exec.Command(p, "--help").CombinedOutput()
	if !strings.Contains(string(out), "Usage: sealbox-admin") {
		t.Fatalf("built binary does not run: %s", out)
	}
	again, err := Build("sealbox-admin", false)
	if err != nil || again != p {
		t.Fatalf("second build %q %v, want the cached %q", again, err, p)
	}
	if _, err := Build("no-such-command", false); err == nil {
		t.Fatal("building a missing command succeeded")
	}
}
