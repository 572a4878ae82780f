// Package testbin builds this module's commands for end-to-end tests, once
// per test binary, into a temporary directory, and decides what a test does
// when this machine cannot run it (Require: fail under CI, skip elsewhere).
// It is for tests only.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

var (
	mu    sync.Mutex
	dir   string
	built = map[string]string{}
)

// root returns the module root (two levels above this file).
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Build compiles ./cmd/NAME, with the race detector when race is true, and
// returns the binary's path. Call Cleanup from TestMain when done.
func Build(name string, race bool) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	key := fmt.Sprintf("%s/%v", name, race)
	if p, ok := built[key]; ok {
		return p, nil
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "sealbox-bin-")
		if err != nil {
			return "", err
		}
		// Other uids (setpriv tests) must be able to run the binaries.
		if err := os.Chmod(d, 0o755); err != nil {
			return "", err
		}
		dir = d
	}
	out := filepath.Join(dir, fmt.Sprintf("%s-race%v", name, race))
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/"+name)
	cmd := exec.Command("go", args...)
	cmd.Dir = root()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", name, err, b)
	}
	built[key] = out
	return out, nil
}

// Cleanup removes the built binaries.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
	}
}
