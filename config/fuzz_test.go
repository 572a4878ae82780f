package config

import "testing"

// FuzzParse: no input panics, and what parses is valid.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "keyring = \"/x\"\n", "max_wait = \"1s\"\nlog_level = \"debug\"\n", "[x]\ny=1\n", "kdf_memory_budget_mib = 128\n"} {
		f.Add([]byte(s))
	}
	if b, err := readShipped(); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "fuzz.toml")
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
	})
}
