package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestStringNamesEverything(t *testing.T) {
	old, oldCommit := Version, Commit
	defer func() { Version, Commit = old, oldCommit }()
	Version, Commit = "1.2.3", "0123456789abcdef0123"
	s := String("sealboxd")
	for _, want := range []string{"sealboxd 1.2.3", "commit 0123456789ab", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(s, want) {
			t.Errorf("%q lacks %q", s, want)
		}
	}
	if strings.Contains(s, "0123456789abc") {
		t.Errorf("%q: the commit is not shortened", s)
	}
}
