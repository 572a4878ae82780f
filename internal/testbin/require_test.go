package testbin

import (
	"fmt"
	"testing"
)

// recorder stands in for *testing.T so that Require's fail and skip can be
// observed without stopping this test.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Skip(args ...any)                  { r.skip = fmt.Sprint(args...) }

func TestRequireFailsUnderCI(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{TB: t}
	Require(r, "needs root")
	if r.skip != "" || r.fatal != "required test cannot run under CI=true: needs root" {
		t.Fatalf("under CI=true: fatal %q, skip %q", r.fatal, r.skip)
	}
}

func TestRequireSkipsOutsideCI(t *testing.T) {
	for _, v := range []string{"", "false", "1"} {
		t.Setenv("CI", v)
		r := &recorder{TB: t}
		Require(r, "needs root")
		if r.fatal != "" || r.skip != "needs root" {
			t.Fatalf("CI=%q: fatal %q, skip %q", v, r.fatal, r.skip)
		}
	}
}
