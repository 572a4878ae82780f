#!/usr/bin/env bash
# sealbox end to end on local defaults: a keyring under ./.sealbox-demo, no
# root. Passwords are generated and passed on stdin, never in argv or env.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.sealbox-demo
admin=./bin/sealbox-admin
[ -x "$admin" ] || { echo "demo: run 'make build' first" >&2; exit 1; }
rm -rf "$dir"
umask 077

pw() { head -c 18 /dev/urandom | base64; }
alice=$(pw) bob=$(pw)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "init: a keyring with admin alice and a random 32-byte master secret"
printf '%s\n' "$alice" | $admin init --keyring "$dir/keyring.db" --admin alice --kdf-time 500ms
ls -l "$dir/keyring.db"

step "add: alice adds bob (alice's password, then bob's new one)"
printf '%s\n%s\n' "$alice" "$bob" | $admin --keyring "$dir/keyring.db" add bob --as alice

step "client add: register this user as a service"
printf '%s\n' "$bob" | $admin --keyring "$dir/keyring.db" client add demo-service --uid "$(id -u)" --as bob

step "list and client list"
$admin --keyring "$dir/keyring.db" list
$admin --keyring "$dir/keyring.db" client list

step "check: bob's password opens the DataKey and every record verifies"
printf '%s\n' "$bob" | $admin --keyring "$dir/keyring.db" check --as bob

step "remove: bob removes alice; alice's password no longer opens anything"
printf '%s\n' "$bob" | $admin --keyring "$dir/keyring.db" remove alice --as bob
if printf '%s\n' "$alice" | $admin --keyring "$dir/keyring.db" check --as alice 2>/dev/null; then
  echo "demo: alice still opens the keyring" >&2; exit 1
fi
echo "alice refused, as expected"

step "status"
$admin --keyring "$dir/keyring.db" status
echo
echo "demo: ok (state in $dir; 'make clean' removes it)"
