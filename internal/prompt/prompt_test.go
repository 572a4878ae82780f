package prompt

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

func pipeWith(t *testing.T, text string) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { io.WriteString(w, text); w.Close() }()
	t.Cleanup(func() { r.Close() })
	return r
}

func TestPipeOnePerLine(t *testing.T) {
	t.Parallel()
	r := New(pipeWith(t, "first password\r\nsecond one\nlast without newline"), io.Discard)
	if r.Interactive() {
		t.Fatal("pipe reported as terminal")
	}
	for _, want := range []string{"first password", "second one", "last without newline"} {
		got, err := r.Password("x")
		if err != nil || string(got) != want {
			t.Fatalf("got %q %v, want %q", got, err, want)
		}
	}
	if _, err := r.NewPassword("x"); !errors.Is(err, ErrNoInput) {
		t.Fatalf("after the end: %v", err)
	}
}

func TestPipeNewPasswordOnce(t *testing.T) {
	t.Parallel()
	r := New(pipeWith(t, "new one here\nnext\n"), io.Discard)
	got, err := r.NewPassword("x")
	if err != nil || string(got) != "new one here" {
		t.Fatalf("%q %v", got, err)
	}
	got, _ = r.Password("y")
	if string(got) != "next" {
		t.Fatalf("second read %q: NewPassword consumed two lines", got)
	}
}

func TestPipeLineTooLong(t *testing.T) {
	t.Parallel()
	r := New(pipeWith(t, strings.Repeat("a", MaxLine+10)+"\n"), io.Discard)
	_, err := r.Password("x")
	if err == nil || strings.Contains(err.Error(), "aaaa") {
		t.Fatalf("got %v", err)
	}
}
