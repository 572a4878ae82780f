#!/usr/bin/env bash
# sealbox end to end on local defaults: keyring and sockets under
# ./.sealbox-demo, no root. Passwords are generated and passed on stdin,
# never in argv or the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$PWD/.sealbox-demo
admin=./bin/sealbox-admin
daemon=./bin/sealboxd
for b in "$admin" "$daemon"; do
  [ -x "$b" ] || { echo "demo: run 'make build' first" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "demo: needs curl (apt-get install curl)" >&2; exit 1; }
rm -rf "$dir"
umask 077
mkdir -p "$dir"

kr=$dir/state/keyring.db sock=$dir/run/sealbox.sock adm=$dir/run/admin.sock
pw() { head -c 18 /dev/urandom | base64; }
alice=$(pw) bob=$(pw)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
read_secret() { curl -s -o "$dir/secret.out" -w '%{http_code}' --unix-socket "$sock" "http://sealbox/v1/secret$1"; }

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
$admin --admin-socket "$adm" status

step "a service reads while sealed: 503"
echo "HTTP $(read_secret '')"

step "bob unseals; a reader that was waiting with ?wait=30s gets the secret"
read_secret '?wait=30s' > "$dir/poll.code" &
poll=$!
sleep 0.3
printf '%s\n' "$bob" | $admin --admin-socket "$adm" unseal --admin bob
wait $poll
echo "HTTP $(cat "$dir/poll.code"), $(wc -c < "$dir/secret.out") bytes of master secret"
grep VmLck "/proc/$pid/status"

step "disable the client: refused at once"
printf '%s\n' "$alice" | $admin --admin-socket "$adm" client disable demo-service --as alice
echo "HTTP $(read_secret '')"
printf '%s\n' "$alice" | $admin --admin-socket "$adm" client enable demo-service --as alice
echo "HTTP $(read_secret '')"

step "seal: the secret is wiped from memory"
$admin --admin-socket "$adm" seal
echo "HTTP $(read_secret '')"

step "stop (SIGTERM): sockets removed"
kill -TERM $pid; wait $pid || true
ls "$dir/run" 2>/dev/null | sed 's/^/left: /' || true
rm -f "$dir/secret.out"
echo
echo "demo: ok (daemon log: $dir/sealboxd.log; 'make clean' removes it all)"
