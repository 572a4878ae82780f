# bash completion for sealbox. Generated from its command table; do not edit (make docs).
_sealbox() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	local i w cmd= sub= opts
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case $w in
		(--socket|--out|--wait|--timeout|--env|--fd) ((i++)); continue ;;
		(-*) continue ;;
		esac
		if [[ -z $cmd ]]; then
			cmd=$w
		fi
	done
	case $prev in
	(--socket|--out) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	(--wait|--timeout|--env|--fd) COMPREPLY=(); return ;;
	esac
	if [[ $cur == -* ]]; then
		case "$cmd${sub:+ $sub}" in
		'get') opts='--force --out --wait' ;;
		'wait') opts='--timeout' ;;
		'exec') opts='--env --fd --wait' ;;
		'status') opts='--json' ;;
		*) opts= ;;
		esac
		COMPREPLY=($(compgen -W "$opts --socket --version --help" -- "$cur"))
		return
	fi
	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W 'get wait exec status help' -- "$cur"))
		return
	fi
}
complete -F _sealbox sealbox
