# bash completion for sealbox-admin. Generated from its command table; do not edit (make docs).
_sealbox_admin() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	local i w cmd= sub= opts
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case $w in
		(--admin-socket|--keyring|--admin|--kdf-iterations|--kdf-max-memory|--kdf-memory|--kdf-parallelism|--kdf-time|--secret-file|--ask-dir|--timeout|--as|--name|--thp|--pcrs|--tcti|--kind|--expires|--to|--out|--gid|--uid|--unit|--client|--limit|--since|--until) ((i++)); continue ;;
		(-*) continue ;;
		esac
		if [[ -z $cmd ]]; then
			cmd=$w
		elif [[ -z $sub && " bind policy recovery client audit " == *" $cmd "* ]]; then
			sub=$w
		fi
	done
	case $prev in
	(--admin-socket|--keyring|--secret-file|--ask-dir|--to|--out) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	(--admin|--kdf-iterations|--kdf-max-memory|--kdf-memory|--kdf-parallelism|--kdf-time|--timeout|--as|--name|--thp|--pcrs|--tcti|--kind|--expires|--gid|--uid|--unit|--client|--limit|--since|--until) COMPREPLY=(); return ;;
	esac
	if [[ $cur == -* ]]; then
		case "$cmd${sub:+ $sub}" in
		'init') opts='--admin --kdf-iterations --kdf-max-memory --kdf-memory --kdf-parallelism --kdf-time --recovery-code --secret-file' ;;
		'unseal') opts='--admin --recovery' ;;
		'ask-unseal') opts='--ask-dir --timeout' ;;
		'seal') opts='' ;;
		'status') opts='--json' ;;
		'add') opts='--as --kdf-iterations --kdf-memory --kdf-parallelism' ;;
		'remove') opts='--as --rekey' ;;
		'bind tang') opts='--as --name --thp' ;;
		'bind tpm2') opts='--as --name --pcrs --tcti' ;;
		'bind threshold') opts='--as --name --tcti' ;;
		'unattended-helper') opts='--kind --tcti' ;;
		'unbind') opts='--as' ;;
		'invite') opts='--as --expires' ;;
		'enroll') opts='' ;;
		'list') opts='--json' ;;
		'slots') opts='--json' ;;
		'unlock') opts='--as' ;;
		'policy set') opts='--as --kdf-iterations --kdf-memory --kdf-parallelism' ;;
		'passwd') opts='--kdf-iterations --kdf-memory --kdf-parallelism' ;;
		'check') opts='--as --json --repair --yes' ;;
		'rotate') opts='--as --secret-file' ;;
		'rekey') opts='--as --keep-invites --keep-unattended --tcti' ;;
		'recovery regenerate') opts='--as' ;;
		'backup') opts='--to' ;;
		'export-secret') opts='--as --force --out' ;;
		'client add') opts='--as --gid --uid --unit' ;;
		'client list') opts='--json' ;;
		'client disable') opts='--as' ;;
		'client enable') opts='--as' ;;
		'client remove') opts='--as' ;;
		'audit') opts='--admin --client --follow --json --jsonl --limit --reads --since --uid --until' ;;
		'audit verify') opts='--as --json' ;;
		*) opts= ;;
		esac
		COMPREPLY=($(compgen -W "$opts --admin-socket --keyring --version --help" -- "$cur"))
		return
	fi
	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W 'init unseal ask-unseal seal status add remove bind unattended-helper unbind invite enroll list slots unlock policy passwd check rotate rekey recovery backup export-secret client audit help' -- "$cur"))
		return
	fi
	if [[ -z $sub ]]; then
		case $cmd in
		bind) COMPREPLY=($(compgen -W 'tang tpm2 threshold' -- "$cur")) ;;
		policy) COMPREPLY=($(compgen -W 'set' -- "$cur")) ;;
		recovery) COMPREPLY=($(compgen -W 'regenerate' -- "$cur")) ;;
		client) COMPREPLY=($(compgen -W 'add list disable enable remove' -- "$cur")) ;;
		audit) COMPREPLY=($(compgen -W 'verify' -- "$cur")) ;;
		esac
	fi
}
complete -F _sealbox_admin sealbox-admin
