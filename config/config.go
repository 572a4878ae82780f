// Package config reads sealboxd's configuration: a TOML file whose unknown
// keys are errors (a typo must not silently become a default), overridden by
// the command-line flags of the interface contract.
//
// Use Flags to register the flags on a FlagSet, then Flags.Load after parsing.
// It is not for anything secret: the file holds paths and limits only.
package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Defaults of the interface contract.
const (
	DefaultKeyring     = "/var/lib/sealbox/keyring.db"
	DefaultSocket      = "/run/sealbox/sealbox.sock"
	DefaultAdminSocket = "/run/sealbox/admin.sock"
	// DefaultCredentialSocket serves systemd's LoadCredential=.
	DefaultCredentialSocket = "/run/sealbox/credentials.sock"
)

// Config is sealboxd's configuration.
type Config struct {
	Keyring     string `toml:"keyring"`
	Socket      string `toml:"socket"`
	AdminSocket string `toml:"admin_socket"`
	// CredentialSocket serves LoadCredential=NAME:PATH to units registered
	// as clients by unit. Empty: credentials.sock beside the admin socket;
	// "off" turns it off.
	CredentialSocket string `toml:"credential_socket"`
	// CredentialWait is how long a credential request waits for an unseal
	// while sealed, before its unit fails. Reloaded on SIGHUP.
	CredentialWait time.Duration `toml:"credential_wait"`

	// AllowUnlockedMemory lets unseal proceed when mlock fails; status then
	// reports memory_locked=false. Off by default.
	AllowUnlockedMemory bool `toml:"allow_unlocked_memory"`

	// KDFTime and KDFMaxMemoryMiB are accepted for configurations written
	// for earlier releases, and not used: sealboxd never calibrates (it
	// never creates slots' policy); sealbox-admin init does, with
	// --kdf-time and --kdf-max-memory. Parse warns when they are set.
	KDFTime         time.Duration `toml:"kdf_time"`
	KDFMaxMemoryMiB uint32        `toml:"kdf_max_memory_mib"`
	// KDFMemoryBudgetMiB caps the memory of concurrent derivations; more
	// wait in a bounded queue, then are refused. 0 picks four derivations'
	// worth of the keyring's largest slot, at most half of the memory.
	KDFMemoryBudgetMiB uint32 `toml:"kdf_memory_budget_mib"`
	// AuditMaxRecords caps the audit log of reads and refusals; the oldest
	// are pruned behind an anchor that keeps the chain verifiable. 0 keeps
	// everything.
	AuditMaxRecords int `toml:"audit_max_records"`
	// AuditJournal forwards every committed audit record to systemd's
	// journal with structured fields (SEALBOX_KIND=, …): "auto" when
	// sealboxd runs as a systemd service, "off", or the path of a journald
	// socket (a namespace's).
	AuditJournal string `toml:"audit_journal"`
	// AuditMaxEvents caps the audit log of unseals, seals and changes, which
	// no volume of reads can touch. 0 (the default) keeps everything.
	AuditMaxEvents int `toml:"audit_max_events"`

	// MaxConnections caps open connections per socket.
	MaxConnections int `toml:"max_connections"`
	// MaxWait caps ?wait= on the service socket. Reloaded on SIGHUP.
	MaxWait time.Duration `toml:"max_wait"`
	// LogLevel is debug, info, warn or error. Reloaded on SIGHUP.
	LogLevel string `toml:"log_level"`

	// UnattendedTimeout bounds one attempt at an unattended slot (a Tang
	// request, a TPM unseal), connect included; UnattendedDialTimeout
	// bounds a TCP connect to a Tang server within it.
	UnattendedTimeout     time.Duration `toml:"unattended_timeout"`
	UnattendedDialTimeout time.Duration `toml:"unattended_dial_timeout"`
	// UnattendedRetryMax caps the wait between background retries of an
	// unattended slot that failed for a reason that may pass (a server
	// down); 0 turns retries off.
	UnattendedRetryMax time.Duration `toml:"unattended_retry_max"`
	// TPM2TCTI says how tpm2-tools reach the TPM for tpm2 slots, in their
	// TCTI syntax ("device:/dev/tpmrm0", "swtpm:host=…,port=…").
	TPM2TCTI string `toml:"tpm2_tcti"`
	// UnattendedHelpers is the directory of the helpers' sockets
	// (tang.sock, tpm2.sock): a kind whose socket is there is done by its
	// socket-activated helper unit, which has the network or the TPM that
	// sealboxd's own unit does not. "" does everything in process.
	UnattendedHelpers string `toml:"unattended_helpers"`
	// UnattendedIdentity pins the keyring's identity (64 hex digits, as
	// sealbox-admin bind and check --as NAME print it): sealboxd unseals
	// with no person only into a state whose identity hashes to it, so that
	// a forged keyring with an unattended slot of its own is refused. ""
	// (the default) tries no unattended slot.
	UnattendedIdentity string `toml:"unattended_identity"`

	// Warnings are about keys that are accepted but have no effect; the
	// daemon logs them at start and reload.
	Warnings []string `toml:"-"`
}

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		Keyring:         DefaultKeyring,
		Socket:          DefaultSocket,
		AdminSocket:     DefaultAdminSocket,
		CredentialWait:  60 * time.Second,
		KDFTime:         time.Second,
		KDFMaxMemoryMiB: 1024,
		AuditMaxRecords: 1_000_000,
		AuditJournal:    "auto",
		MaxConnections:  256,
		MaxWait:         5 * time.Minute,
		LogLevel:        "info",

		UnattendedTimeout:     10 * time.Second,
		UnattendedDialTimeout: 3 * time.Second,
		UnattendedRetryMax:    5 * time.Minute,
		TPM2TCTI:              "device:/dev/tpmrm0",
		UnattendedHelpers:     "/run/sealbox-unattended",
	}
}

// CredentialSocketPath returns the credential socket's path: the one
// configured, credentials.sock beside the admin socket when none is, or ""
// when it is "off".
func (c *Config) CredentialSocketPath() string {
	switch c.CredentialSocket {
	case "off":
		return ""
	case "":
		return filepath.Join(filepath.Dir(c.AdminSocket), "credentials.sock")
	}
	return c.CredentialSocket
}

// Level returns LogLevel as a slog level.
func (c *Config) Level() slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.LogLevel)) // validated by Validate
	return l
}

// Validate checks ranges and paths.
func (c *Config) Validate() error {
	var errs []error
	for _, p := range []struct{ key, val string }{{"keyring", c.Keyring}, {"socket", c.Socket}, {"admin_socket", c.AdminSocket}} {
		if p.val == "" {
			errs = append(errs, fmt.Errorf("%s: must not be empty", p.key))
		} else if strings.IndexByte(p.val, 0) >= 0 {
			errs = append(errs, fmt.Errorf("%s: contains a NUL byte", p.key))
		}
	}
	if c.Socket != "" && c.Socket == c.AdminSocket {
		errs = append(errs, errors.New("socket and admin_socket must be different paths"))
	}
	// sun_path holds 108 bytes including the terminating NUL.
	for _, p := range []struct{ key, val string }{{"socket", c.Socket}, {"admin_socket", c.AdminSocket}} {
		if len(p.val) > 107 {
			errs = append(errs, fmt.Errorf("%s: path is %d bytes, Unix sockets allow 107", p.key, len(p.val)))
		}
	}
	if c.KDFTime < 0 || c.KDFTime > time.Minute {
		errs = append(errs, fmt.Errorf("kdf_time: %v out of range (0 to 1m)", c.KDFTime))
	}
	if c.KDFMaxMemoryMiB < 64 || c.KDFMaxMemoryMiB > 4096 {
		errs = append(errs, fmt.Errorf("kdf_max_memory_mib: %d out of range (64 to 4096)", c.KDFMaxMemoryMiB))
	}
	if c.KDFMemoryBudgetMiB != 0 && (c.KDFMemoryBudgetMiB < 8 || c.KDFMemoryBudgetMiB > 1<<20) {
		errs = append(errs, fmt.Errorf("kdf_memory_budget_mib: %d out of range (0 for automatic, or 8 to 1048576)", c.KDFMemoryBudgetMiB))
	}
	if c.AuditMaxRecords < 0 || (c.AuditMaxRecords > 0 && c.AuditMaxRecords < 1000) {
		errs = append(errs, fmt.Errorf("audit_max_records: %d out of range (0 for no cap, or at least 1000)", c.AuditMaxRecords))
	}
	if c.AuditMaxEvents < 0 || (c.AuditMaxEvents > 0 && c.AuditMaxEvents < 1000) {
		errs = append(errs, fmt.Errorf("audit_max_events: %d out of range (0 for no cap, or at least 1000)", c.AuditMaxEvents))
	}
	if j := c.AuditJournal; j != "auto" && j != "off" && (!filepath.IsAbs(j) || len(j) > 107 || strings.IndexByte(j, 0) >= 0) {
		errs = append(errs, fmt.Errorf("audit_journal: %q is not auto, off, or an absolute socket path", j))
	}
	if c.MaxConnections < 1 || c.MaxConnections > 65536 {
		errs = append(errs, fmt.Errorf("max_connections: %d out of range (1 to 65536)", c.MaxConnections))
	}
	if c.CredentialWait < 0 || c.CredentialWait > time.Hour {
		errs = append(errs, fmt.Errorf("credential_wait: %v out of range (0 to 1h)", c.CredentialWait))
	}
	if cs := c.CredentialSocketPath(); cs != "" && (cs == c.Socket || cs == c.AdminSocket || len(cs) > 107 || !filepath.IsAbs(cs)) {
		errs = append(errs, errors.New("credential_socket: must differ from the other sockets and fit in 107 bytes"))
	}
	if c.MaxWait < 0 || c.MaxWait > time.Hour {
		errs = append(errs, fmt.Errorf("max_wait: %v out of range (0 to 1h)", c.MaxWait))
	}
	if c.UnattendedTimeout < 100*time.Millisecond || c.UnattendedTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("unattended_timeout: %v out of range (100ms to 5m)", c.UnattendedTimeout))
	}
	if c.UnattendedDialTimeout < 100*time.Millisecond || c.UnattendedDialTimeout > c.UnattendedTimeout {
		errs = append(errs, fmt.Errorf("unattended_dial_timeout: %v out of range (100ms to unattended_timeout)", c.UnattendedDialTimeout))
	}
	if c.UnattendedRetryMax != 0 && (c.UnattendedRetryMax < time.Second || c.UnattendedRetryMax > 24*time.Hour) {
		errs = append(errs, fmt.Errorf("unattended_retry_max: %v out of range (0 for no retries, or 1s to 24h)", c.UnattendedRetryMax))
	}
	if c.TPM2TCTI == "" || strings.ContainsAny(c.TPM2TCTI, "\x00\n") {
		errs = append(errs, errors.New("tpm2_tcti: must be a TCTI string such as device:/dev/tpmrm0"))
	}
	if p := c.UnattendedIdentity; p != "" && !isPin(p) {
		errs = append(errs, errors.New("unattended_identity: want the 64 lowercase hex digits sealbox-admin bind printed"))
	}
	if h := c.UnattendedHelpers; h != "" && (!filepath.IsAbs(h) || len(h) > 90 || strings.IndexByte(h, 0) >= 0) {
		errs = append(errs, fmt.Errorf("unattended_helpers: %q is not an absolute directory path of at most 90 bytes", h))
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("log_level: %q is not one of debug, info, warn, error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// Parse reads a configuration from TOML text on top of the defaults.
func Parse(data []byte, name string) (Config, error) {
	c := Default()
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return Config{}, fmt.Errorf("%s: unknown keys %s (check the spelling; see sealboxd --help)", name, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	for _, k := range []struct{ key, flag string }{{"kdf_time", "--kdf-time"}, {"kdf_max_memory_mib", "--kdf-max-memory"}} {
		if md.IsDefined(k.key) {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: %s is not used by sealboxd (slots' Argon2id cost is chosen by sealbox-admin init %s); remove it", name, k.key, k.flag))
		}
	}
	return c, nil
}

// Load reads the file at path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// Flags are the contract's flags for sealboxd.
type Flags struct {
	File        string
	Keyring     string
	Socket      string
	AdminSocket string
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.File, "config", "", "configuration `file` (TOML); flags override it")
	fs.StringVar(&f.Keyring, "keyring", "", "keyring `path` (default "+DefaultKeyring+")")
	fs.StringVar(&f.Socket, "socket", "", "service socket `path` (default "+DefaultSocket+")")
	fs.StringVar(&f.AdminSocket, "admin-socket", "", "admin socket `path` (default "+DefaultAdminSocket+")")
}

// Load returns the configuration: defaults, then the file if one was named,
// then the flags that were given. Relative paths are made absolute so that a
// daemon that changes directory keeps its files.
func (f *Flags) Load() (Config, error) {
	c := Default()
	if f.File != "" {
		var err error
		if c, err = Load(f.File); err != nil {
			return Config{}, err
		}
	}
	for _, o := range []struct {
		dst *string
		val string
	}{{&c.Keyring, f.Keyring}, {&c.Socket, f.Socket}, {&c.AdminSocket, f.AdminSocket}} {
		if o.val != "" {
			*o.dst = o.val
		}
	}
	for _, p := range []*string{&c.Keyring, &c.Socket, &c.AdminSocket} {
		if *p != "" && !filepath.IsAbs(*p) {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return Config{}, err
			}
			*p = abs
		}
	}
	return c, c.Validate()
}

func isPin(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
