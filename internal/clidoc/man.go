package clidoc

import (
	"fmt"
	"strings"
)

// Man renders p as a man page (man(7) macros), dated by source, e.g.
// "sealbox 0.1.0".
func Man(p Program, source string) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".\\\" Generated from the command table of %s; do not edit (make docs).\n", p.Name)
	fmt.Fprintf(&b, ".TH %s %s \"\" %s \"sealbox manual\"\n", strings.ToUpper(roffEsc(p.Name)), p.Section, roffQuote(source))
	// No hyphenation, ragged right: flags and paths must not be split.
	b.WriteString(".nh\n.ad l\n")
	b.WriteString(".SH NAME\n")
	fmt.Fprintf(&b, "%s \\- %s\n", roffEsc(p.Name), roffEsc(p.Summary))
	if len(p.Synopsis) > 0 {
		b.WriteString(".SH SYNOPSIS\n")
		for i, s := range p.Synopsis {
			if i > 0 {
				b.WriteString(".br\n")
			}
			fmt.Fprintf(&b, ".B %s\n%s\n", roffEsc(p.Name), roffEsc(s))
		}
	}
	if p.Description != "" {
		b.WriteString(".SH DESCRIPTION\n")
		paragraphs(&b, p.Description)
	}
	if len(p.Flags) > 0 {
		b.WriteString(".SH OPTIONS\n")
		flags(&b, p.Flags)
	}
	if len(p.Commands) > 0 {
		b.WriteString(".SH COMMANDS\n")
		for _, c := range p.Commands {
			fmt.Fprintf(&b, ".SS %s\n", roffEsc(c.Name))
			fmt.Fprintf(&b, ".B %s %s\n.PP\n", roffEsc(p.Name), roffEsc(c.Synopsis))
			paragraphs(&b, c.Help)
			if len(c.Flags) > 0 {
				flags(&b, c.Flags)
			}
		}
	}
	for _, s := range p.Sections {
		fmt.Fprintf(&b, ".SH %s\n", roffEsc(strings.ToUpper(s.Title)))
		paragraphs(&b, s.Body)
	}
	return b.String()
}

func flags(b *strings.Builder, fl []Flag) {
	for _, f := range fl {
		b.WriteString(".TP\n")
		if f.Arg != "" {
			fmt.Fprintf(b, ".BI \\-\\-%s \" %s\"\n", roffEsc(f.Name), roffEsc(f.Arg))
		} else {
			fmt.Fprintf(b, ".B \\-\\-%s\n", roffEsc(f.Name))
		}
		fmt.Fprintf(b, "%s\n", roffEsc(oneLine(f.Usage)))
	}
}

// paragraphs writes text: blank lines separate paragraphs, lines indented
// by two spaces are kept verbatim.
func paragraphs(b *strings.Builder, text string) {
	verbatim := false
	first := true
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if !first {
			b.WriteString(".PP\n")
		}
		first = false
		var prose []string
		flush := func() {
			if len(prose) > 0 {
				b.WriteString(roffEsc(oneLine(strings.Join(prose, " "))) + "\n")
				prose = nil
			}
		}
		for _, line := range strings.Split(para, "\n") {
			if strings.HasPrefix(line, "  ") {
				flush()
				if !verbatim {
					b.WriteString(".nf\n.RS 4\n")
					verbatim = true
				}
				b.WriteString(roffEsc(strings.TrimPrefix(line, "  ")) + "\n")
				continue
			}
			if verbatim {
				b.WriteString(".RE\n.fi\n")
				verbatim = false
			}
			prose = append(prose, line)
		}
		flush()
		if verbatim {
			b.WriteString(".RE\n.fi\n")
			verbatim = false
		}
	}
}

// roffEsc escapes text for a roff line: backslashes, hyphens (so they
// stay hyphens, not typographic dashes) and a leading control character.
func roffEsc(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	// groff reads ASCII: anything else by its code point (… is \[u2026]).
	var b strings.Builder
	for _, r := range s {
		if r > 127 {
			fmt.Fprintf(&b, `\[u%04X]`, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func roffQuote(s string) string { return `"` + strings.ReplaceAll(roffEsc(s), `"`, `\(dq`) + `"` }
