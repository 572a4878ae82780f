package clidoc

import (
	"fmt"
	"slices"
	"strings"
)

// valueFlags are the flags (global or any command's) that take a value,
// and which of those take a path.
func (p Program) valueFlags() (all, files []string) {
	add := func(f Flag) {
		if f.Arg == "" || slices.Contains(all, "--"+f.Name) {
			return
		}
		all = append(all, "--"+f.Name)
		if f.takesFile() {
			files = append(files, "--"+f.Name)
		}
	}
	for _, f := range p.Flags {
		add(f)
	}
	for _, c := range p.Commands {
		for _, f := range c.Flags {
			add(f)
		}
	}
	return all, files
}

func flagWords(fl []Flag) string {
	w := make([]string, len(fl))
	for i, f := range fl {
		w[i] = "--" + f.Name
	}
	return strings.Join(w, " ")
}

func (p Program) subsOf(group string) []string {
	var out []string
	for _, c := range p.Commands {
		if g, s, ok := strings.Cut(c.Name, " "); ok && g == group {
			out = append(out, s)
		}
	}
	return out
}

// scan writes the loop, in the syntax bash and zsh share, that finds the
// command and the group's subcommand among the words before the cursor
// (words first to last-1), skipping flags and their values; then a case on
// the previous word, prev: a flag that takes a path runs fileAction,
// another flag with a value valueAction.
func (p Program) scan(b *strings.Builder, first, last, word, prev, fileAction, valueAction string) {
	all, files := p.valueFlags()
	groups := p.groups()
	fmt.Fprintf(b, "\tfor ((i = %s; i < %s; i++)); do\n\t\tw=%s\n\t\tcase $w in\n", first, last, word)
	if len(all) > 0 {
		fmt.Fprintf(b, "\t\t(%s) ((i++)); continue ;;\n", strings.Join(all, "|"))
	}
	b.WriteString("\t\t(-*) continue ;;\n\t\tesac\n")
	b.WriteString("\t\tif [[ -z $cmd ]]; then\n\t\t\tcmd=$w\n")
	if len(groups) > 0 {
		fmt.Fprintf(b, "\t\telif [[ -z $sub && \" %s \" == *\" $cmd \"* ]]; then\n\t\t\tsub=$w\n", strings.Join(groups, " "))
	}
	b.WriteString("\t\tfi\n\tdone\n")
	fmt.Fprintf(b, "\tcase %s in\n", prev)
	if len(files) > 0 {
		fmt.Fprintf(b, "\t(%s) %s ;;\n", strings.Join(files, "|"), fileAction)
	}
	if others := slices.DeleteFunc(slices.Clone(all), func(f string) bool { return slices.Contains(files, f) }); len(others) > 0 {
		fmt.Fprintf(b, "\t(%s) %s ;;\n", strings.Join(others, "|"), valueAction)
	}
	b.WriteString("\tesac\n")
}

func funcName(prog string) string { return "_" + strings.ReplaceAll(prog, "-", "_") }

// Bash renders a bash completion script (for
// /usr/share/bash-completion/completions/NAME).
func Bash(p Program) string {
	var b strings.Builder
	fn := funcName(p.Name)
	groups := p.groups()
	fmt.Fprintf(&b, "# bash completion for %s. Generated from its command table; do not edit (make docs).\n", p.Name)
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString("\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n")
	b.WriteString("\tlocal i w cmd= sub= opts\n")
	p.scan(&b, "1", "COMP_CWORD", "${COMP_WORDS[i]}", "$prev",
		"COMPREPLY=($(compgen -f -- \"$cur\")); return", "COMPREPLY=(); return")
	b.WriteString("\tif [[ $cur == -* ]]; then\n\t\tcase \"$cmd${sub:+ $sub}\" in\n")
	for _, c := range p.Commands {
		fmt.Fprintf(&b, "\t\t%s) opts=%s ;;\n", quoteSingle(c.Name), quoteSingle(flagWords(c.Flags)))
	}
	b.WriteString("\t\t*) opts= ;;\n\t\tesac\n")
	fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W \"$opts %s --help\" -- \"$cur\"))\n\t\treturn\n\tfi\n", flagWords(p.Flags))
	if len(p.Commands) > 0 {
		fmt.Fprintf(&b, "\tif [[ -z $cmd ]]; then\n\t\tCOMPREPLY=($(compgen -W %s -- \"$cur\"))\n\t\treturn\n\tfi\n", quoteSingle(strings.Join(p.top(), " ")+" help"))
	}
	if len(groups) > 0 {
		b.WriteString("\tif [[ -z $sub ]]; then\n\t\tcase $cmd in\n")
		for _, g := range groups {
			fmt.Fprintf(&b, "\t\t%s) COMPREPLY=($(compgen -W %s -- \"$cur\")) ;;\n", g, quoteSingle(strings.Join(p.subsOf(g), " ")))
		}
		b.WriteString("\t\tesac\n\tfi\n")
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "complete -F %s %s\n", fn, p.Name)
	return b.String()
}

func zshQuote(s string) string {
	// Inside _describe's "word:description" a colon in the word must be
	// escaped; in descriptions brackets are fine, quotes are not.
	return quoteSingle(strings.ReplaceAll(oneLine(s), ":", `\:`))
}

// Zsh renders a zsh completion function (the file _NAME in $fpath).
func Zsh(p Program) string {
	var b strings.Builder
	fn := funcName(p.Name)
	groups := p.groups()
	fmt.Fprintf(&b, "#compdef %s\n# zsh completion for %s. Generated from its command table; do not edit (make docs).\n", p.Name, p.Name)
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString("\tlocal i w cmd= sub=\n\tlocal -a opts items\n")
	p.scan(&b, "2", "CURRENT", "${words[i]}", "${words[CURRENT-1]}", "_files; return", "_message 'value'; return")
	b.WriteString("\tif [[ $PREFIX == -* ]]; then\n")
	b.WriteString("\t\topts=(")
	for _, f := range p.Flags {
		fmt.Fprintf(&b, " %s", zshQuote("--"+f.Name+":"+f.Usage))
	}
	b.WriteString(" '--help:show help')\n\t\tcase \"$cmd${sub:+ $sub}\" in\n")
	for _, c := range p.Commands {
		if len(c.Flags) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\t\t(%s) opts+=(", quoteSingle(c.Name))
		for _, f := range c.Flags {
			fmt.Fprintf(&b, " %s", zshQuote("--"+f.Name+":"+f.Usage))
		}
		b.WriteString(") ;;\n")
	}
	b.WriteString("\t\tesac\n\t\t_describe -t options 'option' opts\n\t\treturn\n\tfi\n")
	if len(p.Commands) > 0 {
		b.WriteString("\tif [[ -z $cmd ]]; then\n\t\titems=(")
		for _, w := range p.top() {
			fmt.Fprintf(&b, " %s", zshQuote(w+":"+p.summaryOf(w)))
		}
		fmt.Fprintf(&b, ")\n\t\t_describe -t commands '%s command' items\n\t\treturn\n\tfi\n", p.Name)
	}
	if len(groups) > 0 {
		b.WriteString("\tif [[ -z $sub ]]; then\n\t\tcase $cmd in\n")
		for _, g := range groups {
			fmt.Fprintf(&b, "\t\t(%s) items=(", g)
			for _, c := range p.Commands {
				if gg, s, ok := strings.Cut(c.Name, " "); ok && gg == g {
					fmt.Fprintf(&b, " %s", zshQuote(s+":"+c.Summary))
				}
			}
			fmt.Fprintf(&b, ") ;;\n")
		}
		b.WriteString("\t\t(*) return 1 ;;\n\t\tesac\n\t\t_describe -t commands 'subcommand' items\n\tfi\n")
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "%s \"$@\"\n", fn)
	return b.String()
}

// Fish renders a fish completion script (NAME.fish).
func Fish(p Program) string {
	var b strings.Builder
	n := p.Name
	groups := p.groups()
	top := p.top()
	fmt.Fprintf(&b, "# fish completion for %s. Generated from its command table; do not edit (make docs).\n", n)
	fmt.Fprintf(&b, "complete -c %s -f\n", n)
	flag := func(cond string, f Flag) {
		fmt.Fprintf(&b, "complete -c %s", n)
		if cond != "" {
			fmt.Fprintf(&b, " -n %s", quoteSingle(cond))
		}
		fmt.Fprintf(&b, " -l %s", f.Name)
		switch {
		case f.takesFile():
			b.WriteString(" -r -F")
		case f.Arg != "":
			b.WriteString(" -x")
		}
		fmt.Fprintf(&b, " -d %s\n", quoteSingle(oneLine(f.Usage)))
	}
	for _, f := range p.Flags {
		flag("", f)
	}
	if len(top) > 0 {
		none := "not __fish_seen_subcommand_from " + strings.Join(top, " ")
		for _, w := range top {
			fmt.Fprintf(&b, "complete -c %s -n %s -a %s -d %s\n", n, quoteSingle(none), w, quoteSingle(oneLine(p.summaryOf(w))))
		}
	}
	for _, g := range groups {
		subs := p.subsOf(g)
		cond := "__fish_seen_subcommand_from " + g + "; and not __fish_seen_subcommand_from " + strings.Join(subs, " ")
		for _, c := range p.Commands {
			if gg, s, ok := strings.Cut(c.Name, " "); ok && gg == g {
				fmt.Fprintf(&b, "complete -c %s -n %s -a %s -d %s\n", n, quoteSingle(cond), s, quoteSingle(oneLine(c.Summary)))
			}
		}
	}
	notGroup := ""
	if len(groups) > 0 {
		notGroup = "; and not __fish_seen_subcommand_from " + strings.Join(groups, " ")
	}
	for _, c := range p.Commands {
		var cond string
		if g, s, ok := strings.Cut(c.Name, " "); ok {
			cond = "__fish_seen_subcommand_from " + g + "; and __fish_seen_subcommand_from " + s
		} else {
			cond = "__fish_seen_subcommand_from " + c.Name + notGroup
		}
		for _, f := range c.Flags {
			flag(cond, f)
		}
	}
	return b.String()
}
