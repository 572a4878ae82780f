package testbin

import (
	"os"
	"testing"
)

// Require stops a test whose preconditions do not hold on this machine
// (no root, a tool not installed, no container rootfs): reason says what is
// missing and how to get it. Under CI (CI=true, as .ci/run sets it) the
// test fails, because CI provides everything a required test needs and a
// skip there would hide a test that never ran; elsewhere it skips.
//
// Call it only for tests that CI must run. A test that is optional
// everywhere (a probe of a kernel feature CI may lack) skips with t.Skip.
func Require(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("required test cannot run under CI=true: %s", reason)
	} else {
		t.Skip(reason)
	}
}

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }
