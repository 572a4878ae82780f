package main

import (
	"flag"
	"strings"

	"github.com/sealbox/sealbox/config"
	"github.com/sealbox/sealbox/internal/clidoc"
)

// program describes sealboxd for its man page, from its flags and usage
// text (docs_test.go writes it: make docs).
func program() clidoc.Program {
	fs := flag.NewFlagSet("sealboxd", flag.ContinueOnError)
	var flags config.Flags
	flags.Register(fs)
	fs.Bool("version", false, "print the version and exit")
	// The usage text between its first line and "Flags:" is the description.
	desc := usage[strings.Index(usage, "\n\n")+2 : strings.Index(usage, "Flags:")]
	return clidoc.Program{
		Name:        "sealboxd",
		Section:     "8",
		Summary:     "the sealbox daemon: holds the host's master secret, sealed until an admin unseals it",
		Synopsis:    []string{"[--config FILE] [--keyring PATH] [--socket PATH] [--admin-socket PATH]", "--version"},
		Description: desc,
		Flags:       clidoc.FlagsOf(fs),
		Sections: []clidoc.Section{
			{Title: "Exit status", Body: "  0  stopped by SIGTERM or SIGINT, after sealing\n  1  could not start (the keyring, a socket, locked memory), or stopped on an error\n  2  usage, or a configuration file that does not parse or validate"},
			{Title: "Files", Body: "/etc/sealbox/sealboxd.toml\n  the configuration, see sealboxd.toml(5)\n\n/var/lib/sealbox/keyring.db\n  the keyring (mode 0600), held open and locked for the daemon's life\n\n/run/sealbox/sealbox.sock, /run/sealbox/admin.sock, /run/sealbox/credentials.sock\n  the service (0666), admin (0600) and LoadCredential= sockets"},
			{Title: "See also", Body: "sealbox-admin(8), sealbox(1), sealboxd.toml(5), systemd.exec(5) (LoadCredential=)"},
		},
	}
}

// tomlPage is sealboxd.toml(5), generated from the shipped, annotated
// configuration: each comment block documents the keys that follow it.
func tomlPage() string {
	p := clidoc.Program{
		Name:    "sealboxd.toml",
		Section: "5",
		Summary: "configuration of sealboxd",
		Description: "sealboxd(8) reads its configuration from the TOML file named by --config " +
			"(the packaged unit passes /etc/sealbox/sealboxd.toml). Every key is optional; unknown keys are errors, " +
			"so that a misspelt key is never silently ignored. The flags --keyring, --socket and --admin-socket override the file. " +
			"SIGHUP reloads log_level, max_wait and credential_wait.",
	}
	var keys strings.Builder
	var block []string
	var lastKeyLine bool
	var entries []struct {
		keys    []string
		comment []string
	}
	for _, line := range strings.Split(config.Shipped, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "#") && strings.HasPrefix(line, " ") && lastKeyLine && len(entries) > 0:
			// An inline comment continued on the next lines.
			e := &entries[len(entries)-1]
			e.comment = append(e.comment, strings.TrimSpace(strings.TrimPrefix(trimmed, "#")))
		case strings.HasPrefix(trimmed, "#"):
			block = append(block, strings.TrimSpace(strings.TrimPrefix(trimmed, "#")))
			lastKeyLine = false
		case trimmed == "":
			if len(entries) == 0 && len(block) > 0 {
				block = nil // the file's own header, said in DESCRIPTION
			}
			block = nil
			lastKeyLine = false
		default:
			kv, inline, _ := strings.Cut(trimmed, "#")
			kv = strings.Join(strings.Fields(kv), " ")
			inline = strings.TrimSpace(inline)
			// A key with no comment of its own belongs to the entry
			// before it (audit_max_events to audit_max_records).
			if lastKeyLine && len(entries) > 0 && len(block) == 0 && inline == "" {
				e := &entries[len(entries)-1]
				e.keys = append(e.keys, kv)
			} else {
				c := block
				if inline != "" {
					c = append(c, inline)
				}
				entries = append(entries, struct {
					keys    []string
					comment []string
				}{[]string{kv}, c})
			}
			block = nil
			lastKeyLine = true
		}
	}
	for _, e := range entries {
		for _, k := range e.keys {
			keys.WriteString("  " + k + "\n")
		}
		keys.WriteString(strings.Join(e.comment, " ") + "\n\n")
	}
	p.Sections = []clidoc.Section{
		{Title: "Keys", Body: "Each key is shown at its default.\n\n" + keys.String()},
		{Title: "Deprecated keys", Body: "kdf_time and kdf_max_memory_mib are accepted for files written for earlier releases and do nothing (sealboxd logs a warning): the Argon2id cost of slots is chosen by sealbox-admin init --kdf-time and --kdf-max-memory."},
		{Title: "See also", Body: "sealboxd(8), sealbox-admin(8)"},
	}
	return clidoc.Man(p, "sealbox")
}
