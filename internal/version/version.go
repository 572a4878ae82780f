// Package version says which sealbox a binary is, for --version: the
// release and the commit (set at build time by the Makefile, or the Debian
// package), and the Go toolchain with its experiments.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release, set with
// -ldflags "-X github.com/sealbox/sealbox/internal/version.Version=V".
// "devel" when it was not.
var Version = "devel"

// Commit is the VCS revision, set like Version; when it is not, the one Go
// recorded in the binary (go build in a git checkout), or "unknown".
var Commit = ""

// String is the --version line of command name.
func String(name string) string {
	commit, dirty := Commit, false
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if commit == "" {
					commit = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true" && Commit == ""
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	} else if len(commit) > 12 {
		commit = commit[:12]
	}
	if dirty {
		commit += "+dirty"
	}
	// runtime.Version names the experiments too: go1.26.8-X:runtimesecret.
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", name, Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
