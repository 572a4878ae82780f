package tpm2

import (
	"bytes"
	"errors"
	"testing"
)

// TestClassify maps tpm2-tools' stderr, as seen from tpm2-tools 5.4, to
// the sentinels.
func TestClassify(t *testing.T) {
	exit1 := errors.New("exit status 1")
	cases := []struct {
		stderr string
		want   error
	}{
		{"ERROR:esys:src/tss2-esys/api/Esys_Unseal.c:98:Esys_Unseal() Esys Finish ErrorCode (0x0000099d)\nERROR: Esys_Unseal(0x99D) - tpm:session(1):a policy check failed\n", ErrPolicy},
		{"ERROR: Eys_Load(0x1DF) - tpm:parameter(1):integrity check failed\n", ErrBinding},
		{"WARNING:tcti:src/util/io.c:262:socket_connect() Failed to connect to host 127.0.0.1, port 1: errno 111: Connection refused\nERROR: Could not load tcti, got: \"swtpm:host=127.0.0.1,port=1\"\n", ErrUnavailable},
		{"ERROR:esys:... ErrorCode (0x000a000a)\n", ErrUnavailable},
		{"ERROR: Esys_CreatePrimary(0x902) - tpm:warn(2.0): out of memory for object contexts\n", ErrUnavailable},
		{"ERROR: Esys_CreatePrimary(0x9A2) - tpm:session(1):the authorization HMAC check failed and DA counter incremented\n", nil},
		{"ERROR: Esys_TR_Deserialize(0x90006) - mu:A buffer isn't large enough\n", nil},
	}
	for _, c := range cases {
		err := classify("tool", exit1, []byte(c.stderr))
		for _, s := range []error{ErrPolicy, ErrBinding, ErrUnavailable} {
			if errors.Is(err, s) != (s == c.want) {
				t.Errorf("%q: %v; want %v", c.stderr, err, c.want)
			}
		}
		if !errors.Is(err, exit1) {
			t.Errorf("%q: %v does not wrap the exit error", c.stderr, err)
		}
	}
	long := classify("tool", exit1, bytes.Repeat([]byte("ERROR: x\n"), 200))
	if n := len(long.Error()); n > errTextMax+100 {
		t.Errorf("message of %d bytes", n)
	}
}
