#!/bin/bash
# Runs inside a minimal Debian booted by systemd-nspawn (see
# TestSystemdNspawn): installs sealbox as make install would, starts the real
# unit, and checks from inside the daemon what systemd gave it. Its exit
# status becomes the container's (SuccessAction/FailureAction=exit-force).
set -uo pipefail
fail() { echo "SEALBOX-NSPAWN: FAIL: $*"; journalctl -u sealboxd --no-pager | tail -20; exit 1; }
t=/sealbox-test
install -m 0755 "$t"/bin/sealboxd "$t"/bin/sealbox-admin "$t"/bin/sealbox /usr/local/bin/
install -d /etc/sealbox && install -m 0644 "$t"/sealboxd.toml /etc/sealbox/sealboxd.toml
install -m 0644 "$t"/sealboxd.service /etc/systemd/system/sealboxd.service
useradd --system --home-dir /var/lib/sealbox --shell /usr/sbin/nologin sealbox
useradd --system --shell /usr/sbin/nologin svc
install -d -o sealbox -g sealbox -m 0700 /var/lib/sealbox
pw='nspawn admin passphrase'
as_sealbox() { setpriv --reuid sealbox --regid sealbox --init-groups -- "$@"; }
printf '%s\n' "$pw" | as_sealbox sealbox-admin init --keyring /var/lib/sealbox/keyring.db --admin alice --kdf-time 1ms || fail init
printf '%s\n' "$pw" | as_sealbox sealbox-admin --keyring /var/lib/sealbox/keyring.db client add svc --uid "$(id -u svc)" --as alice || fail "client add"

systemctl daemon-reload
systemctl start sealboxd || fail "the unit did not start (Type=notify: READY=1 never came?)"
systemctl is-active -q sealboxd || fail "not active"
[ -S /run/sealbox/sealbox.sock ] && [ -S /run/sealbox/admin.sock ] || fail "sockets not under /run/sealbox"
[ "$(stat -c %a /run/sealbox/admin.sock)" = 600 ] || fail "admin socket mode $(stat -c %a /run/sealbox/admin.sock)"
[ "$(stat -c %a /run/sealbox/sealbox.sock)" = 666 ] || fail "service socket mode"
pid=$(systemctl show -p MainPID --value sealboxd)
setpriv --reuid svc --regid svc --clear-groups -- sealbox --socket /run/sealbox/sealbox.sock get >/dev/null 2>&1
[ $? = 3 ] || fail "a read while sealed did not exit 3"
printf '%s\n' "$pw" | as_sealbox sealbox-admin unseal --admin alice || fail unseal
n=$(setpriv --reuid svc --regid svc --clear-groups -- sealbox --socket /run/sealbox/sealbox.sock get | wc -c)
[ "$n" = 32 ] || fail "the client read $n bytes"
setpriv --reuid nobody --regid nogroup --clear-groups -- sealbox --socket /run/sealbox/sealbox.sock get >/dev/null 2>&1
[ $? = 4 ] || fail "an unregistered user was not refused"

# From inside the daemon: what systemd really gave it.
st=/proc/$pid/status
grep -Eq '^VmLck:\s+[1-9]' "$st" || fail "VmLck is 0: the secret is not in locked memory"
grep -Eq '^Max core file size\s+0\s+0' /proc/$pid/limits || fail "core limit not 0"
grep -Eq '^NoNewPrivs:\s+1' "$st" || fail "NoNewPrivileges not in force"
grep -Eq '^Seccomp:\s+2' "$st" || fail "no seccomp filter"
grep -Eq '^CapEff:\s+0+$' "$st" || fail "effective capabilities: $(grep CapEff "$st")"
grep -Eq '^CapBnd:\s+0+$' "$st" || fail "bounding set: $(grep CapBnd "$st")"
[ "$(awk '/^Uid:/{print $2}' "$st")" = "$(id -u sealbox)" ] || fail "not running as sealbox"
[ "$(stat -c %u /proc/$pid/environ)" = 0 ] || fail "dumpable"
systemctl show -p StatusText --value sealboxd | grep -q unsealed || fail "STATUS= not unsealed: $(systemctl show -p StatusText --value sealboxd)"
lck=$(awk '/^VmLck/{print $2}' "$st")
systemctl stop sealboxd || fail stop
[ -e /run/sealbox/sealbox.sock ] && fail "socket left after stop"
echo "SEALBOX-NSPAWN: PASS (VmLck ${lck} kB, seccomp, no capabilities, NoNewPrivs, core 0)"
exit 0
