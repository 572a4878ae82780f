package admin

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"unicode/utf8"

	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
)

// Password policy, in the spirit of NIST SP 800-63B: a minimum length, a
// deny-list of common passwords, no composition rules.
const (
	MinPasswordLen = 12   // characters
	MaxPasswordLen = 1024 // bytes; bounds the work a request can ask for
)

// ErrWeakPassword is wrapped when a new password is refused by policy.
var ErrWeakPassword = errclass.New(errclass.Invalid, "password refused")

//go:embed denylist.txt
var denylistText []byte

var denylist = func() [][]byte {
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(denylistText))
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 && line[0] != '#' {
			out = append(out, append([]byte(nil), line...))
		}
	}
	return out
}()

// CheckNewPassword applies the policy to a new password for admin name. The
// error never contains the password.
func CheckNewPassword(name string, pw []byte) error {
	if len(pw) > MaxPasswordLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrWeakPassword, MaxPasswordLen)
	}
	if !utf8.Valid(pw) {
		return fmt.Errorf("%w: not valid UTF-8", ErrWeakPassword)
	}
	if n := utf8.RuneCount(pw); n < MinPasswordLen {
		return fmt.Errorf("%w: %d characters, the minimum is %d (a few unrelated words make a good one)", ErrWeakPassword, n, MinPasswordLen)
	}
	if bytes.IndexByte(pw, 0) >= 0 || bytes.IndexByte(pw, '\n') >= 0 {
		return fmt.Errorf("%w: contains a NUL or newline", ErrWeakPassword)
	}
	lower := bytes.ToLower(pw)
	defer memlock.Wipe(lower)
	if name != "" && bytes.Contains(lower, []byte(name)) {
		rest := bytes.ReplaceAll(lower, []byte(name), nil)
		short := utf8.RuneCount(rest) < MinPasswordLen
		memlock.Wipe(rest)
		if short {
			return fmt.Errorf("%w: it is mostly the admin name", ErrWeakPassword)
		}
	}
	for _, d := range denylist {
		if bytes.Equal(lower, d) {
			return fmt.Errorf("%w: it is on the list of commonly used passwords", ErrWeakPassword)
		}
	}
	return nil
}
