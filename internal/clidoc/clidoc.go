// Package clidoc turns a command's description (its commands and flags,
// taken from the same table that parses them) into a man page and bash,
// zsh and fish completions, so that none of them is written by hand and
// none can drift from what the binary accepts.
package clidoc

import (
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/sealbox/sealbox/internal/errclass"
)

// Program describes one binary.
type Program struct {
	Name     string   // sealbox-admin
	Section  string   // 8
	Summary  string   // one line, for NAME
	Synopsis []string // usage lines, without the program's name
	// Description is paragraphs separated by blank lines; lines that start
	// with two spaces are kept as they are (examples, tables).
	Description string
	Flags       []Flag    // global flags, accepted before or after the command
	Commands    []Command // in the order --help lists them
	Sections    []Section // EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO, …
}

// Command is one command; a two-word name ("client add") is a subcommand of
// a group.
type Command struct {
	Name     string
	Synopsis string // the usage line after the program's name
	Summary  string
	Help     string
	Flags    []Flag
}

// Flag is one flag.
type Flag struct {
	Name  string
	Arg   string // the value's name ("" for a boolean flag)
	Usage string
}

// Section is an extra man page section.
type Section struct {
	Title string
	Body  string // as Description
}

// FlagsOf lists fs's flags in name order, without those in skip.
func FlagsOf(fs *flag.FlagSet, skip ...string) []Flag {
	var out []Flag
	fs.VisitAll(func(f *flag.Flag) {
		if slices.Contains(skip, f.Name) {
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			arg = ""
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			usage += " (default " + f.DefValue + ")"
		}
		out = append(out, Flag{Name: f.Name, Arg: arg, Usage: usage})
	})
	return out
}

// groups returns the group names ("client") in table order.
func (p Program) groups() []string {
	var out []string
	for _, c := range p.Commands {
		if g, _, ok := strings.Cut(c.Name, " "); ok && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// top returns the first words: commands and groups, in table order.
func (p Program) top() []string {
	var out []string
	for _, c := range p.Commands {
		w, _, _ := strings.Cut(c.Name, " ")
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// takesFile reports whether a flag's value is a path, for completion.
func (f Flag) takesFile() bool {
	switch strings.ToLower(f.Arg) {
	case "file", "path", "directory", "dir", "socket":
		return true
	}
	return false
}

// summaryOf is the summary of a top-level word: a command's, or a list of a
// group's subcommands.
func (p Program) summaryOf(word string) string {
	var subs []string
	for _, c := range p.Commands {
		if c.Name == word {
			return c.Summary
		}
		if g, s, ok := strings.Cut(c.Name, " "); ok && g == word {
			subs = append(subs, s)
		}
	}
	return word + " commands: " + strings.Join(subs, ", ")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func quoteSingle(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ExitStatus is the exit-code table sealbox and sealbox-admin share, as
// man page text after intro.
func ExitStatus(intro string) string {
	var b strings.Builder
	b.WriteString(intro + "\n\n")
	for _, e := range errclass.ExitCodes {
		fmt.Fprintf(&b, "  %d  %s\n", e.Code, e.Meaning)
	}
	return b.String()
}
