package main

import (
	"flag"

	"github.com/sealbox/sealbox/internal/clidoc"
)

// program describes sealbox-admin for its man page and completions, from
// the command table (docs_test.go writes them: make docs).
func program() clidoc.Program {
	global := flag.NewFlagSet("sealbox-admin", flag.ContinueOnError)
	(&globalFlags{}).register(global)
	global.Bool("version", false, "print the version and exit")
	p := clidoc.Program{
		Name:    "sealbox-admin",
		Section: "8",
		Summary: "manage a sealbox keyring: unseal, seal, admins, clients, audit",
		Synopsis: []string{
			"[--keyring PATH | --admin-socket PATH] COMMAND [ARGS] [FLAGS]",
			"COMMAND --help",
			"--version",
		},
		Description: "sealbox-admin manages the keyring of sealboxd(8): it unseals and seals the daemon, " +
			"adds and removes admins (peers) and clients, rekeys, and reads and verifies the audit trail.\n\n" +
			"With --keyring it works on the file directly, and the daemon must be stopped; otherwise it talks to " +
			"sealboxd on its admin socket (--admin-socket, else $SEALBOX_ADMIN_SOCKET, else /run/sealbox/admin.sock). " +
			"Global flags may come before or after the command.\n\n" +
			"Passwords are prompted without echo on a terminal (new ones twice, and asked again when the two differ). " +
			"When standard input is not a terminal, one password is read per line, in the order the prompts would appear " +
			"(new passwords once). They are never taken from arguments or the environment.",
		Flags: clidoc.FlagsOf(global),
		Sections: []clidoc.Section{
			{Title: "Exit status", Body: clidoc.ExitStatus("sealbox-admin and sealbox(1) share one table; the code comes from the error's class, which is also the code of the admin API's error answers.")},
			{Title: "Environment", Body: "SEALBOX_ADMIN_SOCKET\n  the admin socket, when --admin-socket is not given"},
			{Title: "Files", Body: "/run/sealbox/admin.sock\n  the daemon's admin socket (mode 0600)\n\n/var/lib/sealbox/keyring.db\n  the keyring (mode 0600)"},
			{Title: "See also", Body: "sealboxd(8), sealbox(1), sealboxd.toml(5)"},
		},
	}
	for _, cmd := range commands {
		fs := cmd.flagSet(&cli{}, &opts{})
		p.Commands = append(p.Commands, clidoc.Command{
			Name: cmd.name, Synopsis: cmd.synopsis(fs), Summary: cmd.summary, Help: cmd.help,
			Flags: clidoc.FlagsOf(fs, "keyring", "admin-socket"),
		})
	}
	return p
}
