#!/usr/bin/env bash
# sealbox end to end on local defaults: keyring and sockets under
# ./.sealbox-demo, no root. Passwords are generated and passed on stdin,
# never in argv or the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SEALBOX_DEMO_DIR:-$PWD/.sealbox-demo}
bin=${SEALBOX_DEMO_BIN:-./bin}
admin=$bin/sealbox-admin
daemon=$bin/sealboxd
client=$bin/sealbox
for b in "$admin" "$daemon" "$client"; do
  [ -x "$b" ] || { echo "demo: run 'make build' first" >&2; exit 1; }
done
rm -rf "$dir"
umask 077
mkdir -p "$dir"

kr=$dir/state/keyring.db sock=$dir/run/sealbox.sock adm=$dir/run/admin.sock
pw() { head -c 18 /dev/urandom | base64; }
alice=$(pw) bob=$(pw)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
export SEALBOX_SOCKET=$sock
# Prints sealbox's exit code: 0 read, 7 sealed, 4 refused (see sealbox --help).
read_secret() { $client get --out "$dir/secret.out" "$@" 2>/dev/null && echo "exit 0: read $(wc -c < "$dir/secret.out") bytes" || echo "exit $?"; }

step "init: a keyring with admin alice and a random 32-byte master secret"
printf '%s\n' "$alice" | $admin init --keyring "$kr" --admin alice --kdf-time 500ms
printf '%s\n%s\n' "$alice" "$bob" | $admin --keyring "$kr" add bob --as alice
printf '%s\n' "$alice" | $admin --keyring "$kr" client add demo-service --uid "$(id -u)" --as alice

step "start sealboxd (sealed), sockets under $dir/run"
$daemon --keyring "$kr" --socket "$sock" --admin-socket "$adm" 2>"$dir/sealboxd.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$adm" ] && break; sleep 0.1; done
ls -l "$dir/run"
# status exits 7 while the daemon is sealed, as scripts testing for it expect.
$admin --admin-socket "$adm" status || [ $? = 7 ]

step "a service reads while sealed (sealbox get exits 7)"
read_secret

step "bob unseals; a service that was waiting (sealbox wait) goes on at once"
$client wait --timeout 30s && echo "sealbox wait: unsealed" &
waiter=$!
sleep 0.3
printf '%s\n' "$bob" | $admin --admin-socket "$adm" unseal --admin bob
wait $waiter
read_secret
grep VmLck "/proc/$pid/status"

step "sealbox exec hands the secret to a program on fd 3"
$client exec -- sh -c 'echo "child read $(wc -c < "$SEALBOX_SECRET_FILE") bytes from $SEALBOX_SECRET_FILE"'

step "disable the client: refused at once (exit 4)"
printf '%s\n' "$alice" | $admin --admin-socket "$adm" client disable demo-service --as alice
read_secret
printf '%s\n' "$alice" | $admin --admin-socket "$adm" client enable demo-service --as alice
read_secret

step "seal: the secret is wiped from memory"
$admin --admin-socket "$adm" seal
read_secret

step "the audit log, and its chain verified"
$admin --admin-socket "$adm" audit --limit 8
$admin --admin-socket "$adm" audit verify

step "stop (SIGTERM): sockets removed"
kill -TERM $pid; wait $pid || true
ls "$dir/run" 2>/dev/null | sed 's/^/left: /' || true
rm -f "$dir/secret.out"
echo
echo "demo: ok (daemon log: $dir/sealboxd.log; 'make clean' removes it all)"
