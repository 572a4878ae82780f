package main

import (
	"flag"

	"github.com/sealbox/sealbox/internal/clidoc"
)

// program describes sealbox for its man page and completions, from the
// command table (docs_test.go writes them: make docs).
func program() clidoc.Program {
	global := flag.NewFlagSet("sealbox", flag.ContinueOnError)
	global.String("socket", "", "service socket `path` (also accepted after the command)")
	global.Bool("version", false, "print the version and exit")
	p := clidoc.Program{
		Name:     "sealbox",
		Section:  "1",
		Summary:  "read the master secret from sealboxd",
		Synopsis: []string{"[--socket PATH] COMMAND [FLAGS]", "COMMAND --help", "--version"},
		Description: "sealbox reads the master secret from sealboxd(8) for local services and scripts: it prints it, " +
			"writes it to a file, waits for an unseal, or starts a program with it. " +
			"It must run as a registered client's user (sealbox-admin client add NAME --uid N --as ADMIN); " +
			"the daemon identifies it by the uid, gid and systemd unit the kernel reports for its connection.",
		Flags: clidoc.FlagsOf(global),
		Sections: []clidoc.Section{
			{Title: "Exit status", Body: clidoc.ExitStatus("sealbox and sealbox-admin(8) share one table. exec exits with its command's status once it has started it.")},
			{Title: "Environment", Body: "SEALBOX_SOCKET\n  the service socket, when --socket is not given\n\nSEALBOX_SECRET_FILE\n  set by exec for CMD: the path of the descriptor that holds the secret"},
			{Title: "Files", Body: "/run/sealbox/sealbox.sock\n  the daemon's service socket"},
			{Title: "See also", Body: "sealbox-admin(8), sealboxd(8), sealboxd.toml(5)"},
		},
	}
	for _, c := range commands {
		socket := ""
		fs := c.flagSet(&socket, &options{})
		p.Commands = append(p.Commands, clidoc.Command{
			Name: c.name, Synopsis: c.synopsis, Summary: c.summary, Help: c.help,
			Flags: clidoc.FlagsOf(fs, "socket"),
		})
	}
	return p
}
