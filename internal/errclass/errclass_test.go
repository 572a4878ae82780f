package errclass

import (
	"errors"
	"fmt"
	"testing"
)

func TestClassesSurviveWrapping(t *testing.T) {
	wrong := New(Auth, "wrong password")
	busy := New(Busy, "slow down")
	for _, c := range []struct {
		err  error
		want Class
	}{
		{wrong, Auth},
		{fmt.Errorf("unseal alice: %w", wrong), Auth},
		{fmt.Errorf("%w: %w", busy, wrong), Busy}, // Busy comes first in Of's order
		{errors.New("disk on fire"), Internal},
		{Sealed, Sealed},
		{fmt.Errorf("x: %w", NotFound), NotFound},
		{nil, ""},
	} {
		if got := Of(c.err); got != c.want {
			t.Errorf("Of(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if !errors.Is(fmt.Errorf("a: %w", wrong), wrong) {
		t.Error("the sentinel itself is lost in wrapping")
	}
	if errors.Is(wrong, Busy) || errors.Is(wrong, New(Auth, "wrong password")) {
		t.Error("a sentinel matches another class, or another sentinel of its class")
	}
	if wrong.Error() != "wrong password" {
		t.Errorf("message %q", wrong.Error())
	}
}

func TestParseRoundTrips(t *testing.T) {
	for _, c := range append(all, Internal) {
		if Parse(string(c)) != c {
			t.Errorf("Parse(%q) = %q", c, Parse(string(c)))
		}
	}
	if Parse("no such code") != Internal || Parse("") != Internal {
		t.Error("an unknown code is not Internal")
	}
}

func TestEveryClassHasItsOwnExitCode(t *testing.T) {
	seen := map[int]Class{}
	for _, c := range append(all, Internal) {
		code := Exit(c)
		if code == ExitOK {
			t.Errorf("%q exits 0", c)
		}
		// Refused, NotFound and Forbidden share 4 on purpose.
		if o, dup := seen[code]; dup && !(code == ExitRefused) {
			t.Errorf("%q and %q both exit %d", c, o, code)
		}
		seen[code] = c
	}
	if Exit("") != ExitOK || Exit(Of(nil)) != ExitOK {
		t.Error("no error does not exit 0")
	}
}
