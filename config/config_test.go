package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseDefaultsAndOverrides(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte("keyring = \"/srv/k.db\"\nkdf_time = \"500ms\"\nmax_wait = \"30s\"\nlog_level = \"debug\"\n"), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Keyring != "/srv/k.db" || c.KDFTime != 500*time.Millisecond || c.MaxWait != 30*time.Second || c.Socket != DefaultSocket {
		t.Fatalf("%+v", c)
	}
	if c.Level().String() != "DEBUG" {
		t.Fatal(c.Level())
	}
	// kdf_time is accepted for old configurations, and said to do nothing.
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "kdf_time is not used by sealboxd") {
		t.Fatalf("warnings %q", c.Warnings)
	}
	if c, _ := Parse([]byte("max_wait = \"30s\"\n"), "t.toml"); len(c.Warnings) != 0 {
		t.Fatalf("warnings without kdf keys: %q", c.Warnings)
	}
}

func TestParseRejectsUnknownKeysAndBadValues(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"typo":         "keyrng = \"/x\"\n",
		"bad toml":     "keyring = \n",
		"empty path":   "socket = \"\"\n",
		"same sockets": "socket = \"/a\"\nadmin_socket = \"/a\"\n",
		"long socket":  "socket = \"/" + strings.Repeat("s", 120) + "\"\n",
		"bad level":    "log_level = \"loud\"\n",
		"bad duration": "max_wait = \"soon\"\n",
		"conns":        "max_connections = 0\n",
		"kdf memory":   "kdf_max_memory_mib = 8\n",
		"journal":      "audit_journal = \"journal.sock\"\n",
		"wrong type":   "max_connections = \"many\"\n",
		"nested":       "[daemon]\nkeyring = \"/x\"\n",
	}
	for name, text := range cases {
		if _, err := Parse([]byte(text), "t.toml"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, err := Parse([]byte("keyrng = \"/x\"\n"), "t.toml")
	if err == nil || !strings.Contains(err.Error(), "keyrng") {
		t.Fatalf("unknown key not named: %v", err)
	}
}

func TestFlagsWinOverFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "c.toml")
	os.WriteFile(file, []byte("keyring = \"/from/file.db\"\nsocket = \"/from/file.sock\"\n"), 0o600)
	var f Flags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f.Register(fs)
	if err := fs.Parse([]string{"--config", file, "--socket", "rel.sock"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Keyring != "/from/file.db" {
		t.Errorf("keyring %q", c.Keyring)
	}
	if !filepath.IsAbs(c.Socket) || filepath.Base(c.Socket) != "rel.sock" {
		t.Errorf("socket %q not the flag's, made absolute", c.Socket)
	}
	if c.AdminSocket != DefaultAdminSocket {
		t.Errorf("admin socket %q", c.AdminSocket)
	}
	var missing Flags
	missing.File = filepath.Join(dir, "none.toml")
	if _, err := missing.Load(); err == nil {
		t.Error("missing config file accepted")
	}
}

func TestShippedConfigIsTheDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load("sealboxd.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("shipped config %+v differs from the built-in defaults %+v", c, Default())
	}
}

func readShipped() ([]byte, error) { return os.ReadFile("sealboxd.toml") }
