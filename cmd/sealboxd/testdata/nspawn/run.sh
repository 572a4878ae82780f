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
install -m 0644 "$t"/sealbox-askpass.service /etc/systemd/system/sealbox-askpass.service
useradd --system --home-dir /var/lib/sealbox --shell /usr/sbin/nologin sealbox
groupadd --system sealbox-unattended # as debian/sealbox.sysusers and make install
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
[ $? = 7 ] || fail "a read while sealed did not exit 7 (sealed)"
printf '%s\n' "$pw" | as_sealbox sealbox-admin unseal --admin alice || fail unseal
n=$(setpriv --reuid svc --regid svc --clear-groups -- sealbox --socket /run/sealbox/sealbox.sock get | wc -c)
[ "$n" = 32 ] || fail "the client read $n bytes"
setpriv --reuid nobody --regid nogroup --clear-groups -- sealbox --socket /run/sealbox/sealbox.sock get >/dev/null 2>&1
[ $? = 4 ] || fail "an unregistered user was not refused"
# Audit records reach the journal with structured fields (audit_journal = auto);
# reads are written in batches, within a few seconds.
in_journal() {
  for _ in $(seq 100); do
    journalctl -o verbose --no-pager "$@" 2>/dev/null | grep -Eq 'SEALBOX_OUTCOME=(ok|served)' && return 0
    sleep 0.1
  done
  return 1
}
in_journal SEALBOX_KIND=unseal SEALBOX_ACTOR=alice || fail "the unseal is not in the journal"
in_journal SEALBOX_STREAM=reads SEALBOX_CLIENT=svc || fail "the read is not in the journal"

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

# --- LoadCredential= from the credential socket, and the password agents ---
secret=$(setpriv --reuid svc --regid svc --clear-groups -- sealbox --socket /run/sealbox/sealbox.sock get | od -An -tx1 | tr -d ' \n')
online() { as_sealbox sealbox-admin "$@"; }
for u in cred-a cred-b cred-d cred-e; do
  printf '%s\n' "$pw" | online client add "$u" --unit "$u.service" --as alice >/dev/null || fail "client add $u"
done
printf '%s\n' "$pw" | online client disable cred-b --as alice >/dev/null || fail "client disable"
for u in cred-a cred-b cred-c cred-d cred-e; do
  cat > /etc/systemd/system/$u.service <<UNIT
[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=120
LoadCredential=secret:/run/sealbox/credentials.sock
ExecStart=/bin/sh -c 'od -An -tx1 "\$CREDENTIALS_DIRECTORY/secret" | tr -d " \\n" > /run/$u.out'
UNIT
done
systemctl daemon-reload
online seal >/dev/null || fail seal
# Refused at once, even sealed: a disabled client's unit, an unregistered
# one. Neither starts, and neither gets an empty credential.
systemctl start cred-b.service 2>/dev/null && fail "a disabled client's unit started"
systemctl start cred-c.service 2>/dev/null && fail "an unregistered unit started"
[ -e /run/cred-b.out ] || [ -e /run/cred-c.out ] && fail "a refused unit ran"
for u in cred-b cred-c; do
  [ "$(systemctl show -p ExecMainStatus --value $u.service)" = 243 ] || fail "$u: not 243/CREDENTIALS: $(systemctl show -p Result -p ExecMainStatus $u.service)"
done
# A registered unit whose wait times out fails; it never starts empty.
sed -i 's/^credential_wait.*/credential_wait = "2s"/' /etc/sealbox/sealboxd.toml
reload_to() {
  systemctl reload sealboxd || fail "reload"
  for i in $(seq 1 50); do journalctl -u sealboxd --no-pager | grep -q "msg=reloaded.*credential_wait=$1" && return; sleep 0.1; done
  fail "credential_wait not reloaded to $1: $(grep credential_wait /etc/sealbox/sealboxd.toml)"
}
reload_to 2s
systemctl start cred-d.service 2>/dev/null && fail "a unit started after its credential wait timed out"
[ -e /run/cred-d.out ] && fail "a timed-out unit ran"
[ "$(systemctl show -p ExecMainStatus --value cred-d.service)" = 243 ] || fail "cred-d: not 243/CREDENTIALS"
sed -i 's/^credential_wait.*/credential_wait = "60s"/' /etc/sealbox/sealboxd.toml
reload_to 1m0s
# A root process outside the unit forging systemd's address gets nothing.
got=$(perl -MSocket -e 'socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; bind($s, pack_sockaddr_un("\0deadbeef/unit/cred-a.service/secret")) or die "bind: $!"; connect($s, pack_sockaddr_un("/run/sealbox/credentials.sock")) or die "connect: $!"; shutdown($s, 1); my $n = 0; while (my $r = sysread($s, my $b, 65536)) { $n += $r } print $n')
[ "$got" -gt 1048576 ] || fail "a forged credential request got $got bytes"
# A registered unit started while sealed waits; an admin unseals through
# the password agents (as at the console); then the unit starts with the
# exact secret.
systemctl start --no-block cred-a.service cred-e.service
sleep 2
[ "$(systemctl is-active cred-a.service)" = activating ] || fail "cred-a did not wait: $(systemctl is-active cred-a.service)"
systemctl start --no-block sealbox-askpass.service
# An admin at the console: the tty agent shows each question and reads the
# answer typed after it (it flushes what was typed before its prompt).
mkfifo /run/agent.in
timeout 90 script -qec "systemd-tty-ask-password-agent --watch" /dev/null < /run/agent.in >/dev/null 2>&1 &
agent=$!
exec 3>/run/agent.in
asked() { for i in $(seq 1 100); do grep -qs "^Id=$1\$" /run/systemd/ask-password/ask.* && return; sleep 0.1; done; fail "no question $1 for the agents"; }
asked sealbox:unseal; sleep 0.5; printf 'alice\n' >&3
asked sealbox:unseal:alice; sleep 0.5; printf '%s\n' "$pw" >&3
for i in $(seq 1 300); do systemctl is-active -q cred-a.service && break; sleep 0.2; done
exec 3>&-
kill $agent 2>/dev/null
systemctl is-active -q cred-a.service || fail "cred-a did not start after the unseal: $(systemctl is-active cred-a.service); $(journalctl -u sealbox-askpass --no-pager | tail -5)"
[ "$(cat /run/cred-a.out)" = "$secret" ] || fail "cred-a got other bytes than the secret"
# Two units under the same uid (root) are told apart.
for i in $(seq 1 50); do systemctl is-active -q cred-e.service && break; sleep 0.2; done
[ "$(cat /run/cred-e.out)" = "$secret" ] || fail "cred-e"
[ -e /run/cred-c.out ] && fail "cred-c ran"
for i in $(seq 1 50); do systemctl is-active -q sealbox-askpass.service || break; sleep 0.2; done
[ "$(systemctl show -p Result --value sealbox-askpass.service)" = success ] || fail "the agent did not end after the unseal"
# Every credential request is in the audit log, with its unit.
audit=$(online audit --reads --json)
for want in 'cred-a.service' 'credential secret for cred-c.service' 'credential secret for cred-d.service'; do
  echo "$audit" | grep -q "$want" || fail "no audit record with $want"
done
online audit --json | grep -q '"actor": "alice"' || fail "no unseal record"

# --- Unattended unseal through the socket-activated Tang helper: sealboxd
# itself has no network (PrivateNetwork=yes); sealbox-tang@.service reaches
# the Tang server the test runs on the host (this container shares its
# network).
for u in sealbox-tang.socket sealbox-tang@.service sealbox-tpm2.socket sealbox-tpm2@.service; do
  install -m 0644 "$t/$u" "/etc/systemd/system/$u"
done
# The Tang server is allowed as fleet.md says, in a drop-in.
install -d /etc/systemd/system/sealbox-tang@.service.d
printf '[Service]\nIPAddressAllow=127.0.0.1\n' > /etc/systemd/system/sealbox-tang@.service.d/tang-servers.conf
systemctl daemon-reload
systemctl enable --now sealbox-tang.socket || fail "sealbox-tang.socket did not start"
[ "$(stat -c '%a %U %G' /run/sealbox-unattended/tang.sock)" = "660 root sealbox-unattended" ] || fail "tang.sock: $(stat -c '%a %U %G' /run/sealbox-unattended/tang.sock)"
# The sealbox user itself (an operator's shell as sealbox) cannot connect:
# only sealboxd.service holds the group.
out=$(as_sealbox sealbox --socket /run/sealbox-unattended/tang.sock get 2>&1) && fail "the sealbox user connected to the Tang helper: $out"
echo "$out" | grep -qi 'permission denied' || fail "the sealbox user's connection to the Tang helper: $out"
out=$(printf '%s\n' "$pw" | online bind tang "$(cat "$t"/tang.url)" --thp "$(cat "$t"/tang.thp)" --as alice) || fail "bind tang: $out"
pin=$(echo "$out" | awk '/^keyring identity:/{print $3}')
[ ${#pin} = 64 ] || fail "no identity pin in: $out"
sed -i "s/^unattended_identity .*/unattended_identity = \"$pin\"/" /etc/sealbox/sealboxd.toml
systemctl restart sealboxd || fail "restart with the identity pinned"
for i in $(seq 1 100); do online status --json 2>/dev/null | grep -q '"unsealed_by": "tang-1"' && break; sleep 0.1; done
online status --json | grep -q '"unsealed_by": "tang-1"' || fail "not unsealed through the Tang helper: $(online status 2>&1 | grep -i unattended); $(journalctl -u 'sealbox-tang@*' --no-pager | tail -5)"
[ "$(systemctl show -p NAccepted --value sealbox-tang.socket)" -ge 1 ] || fail "the helper socket accepted nothing"
pid=$(systemctl show -p MainPID --value sealboxd)
[ "$(readlink /proc/$pid/ns/net)" != "$(readlink /proc/1/ns/net)" ] || fail "sealboxd shares the host's network"
n=$(setpriv --reuid svc --regid svc --clear-groups -- sealbox --socket /run/sealbox/sealbox.sock get | wc -c)
[ "$n" = 32 ] || fail "after the unattended unseal the client read $n bytes"

# The helper reaches only the addresses its drop-in allows: with another
# address allowed (and so not the Tang server's), the same start stays
# sealed, the attempt unreachable, and the admin's password still works.
# systemd enforces IPAddressAllow=/Deny= with cgroup BPF programs; where it
# cannot (it says nothing and lets the traffic through: seen in this
# container on a host with hybrid cgroups), a probe unit shows it first, and
# the check says so instead of passing.
url=$(cat "$t"/tang.url)
for p in open deny; do
  printf '[Service]\nType=oneshot\nExecStart=/bin/bash -c "exec 3<>/dev/tcp/127.0.0.1/%s"\n' "${url##*:}" >"/etc/systemd/system/ipprobe-$p.service"
done
printf 'IPAddressDeny=any\n' >>/etc/systemd/system/ipprobe-deny.service
systemctl daemon-reload
systemctl start ipprobe-open.service || fail "probe: a unit with no filter cannot reach the Tang server"
if systemctl start ipprobe-deny.service 2>/dev/null; then
  ipfilter="not checked: this systemd does not enforce IPAddressDeny= here (a probe unit with IPAddressDeny=any reached the Tang server)"
else
  printf '[Service]\nIPAddressAllow=192.0.2.10\n' > /etc/systemd/system/sealbox-tang@.service.d/tang-servers.conf
  systemctl daemon-reload
  systemctl restart sealboxd || fail "restart with the Tang server not allowed"
  for i in $(seq 1 100); do online status --json 2>/dev/null | grep -q '"state": "waiting"' && break; sleep 0.1; done
  st=$(online status --json)
  echo "$st" | grep -q '"sealed": true' || fail "unsealed through a Tang server the helper's unit does not allow: $(journalctl --no-pager -u 'sealbox-tang@*' | tail -4 | tr '\n' ' ') $(systemctl list-units --all --no-pager 'sealbox-tang@*' | head -5 | tr '\n' ' ')"
  echo "$st" | grep -q '"state": "waiting"' || fail "with the server not allowed, the attempt did not fail: $(echo "$st" | grep -E '"(state|error)"')"
  echo "$st" | grep -q 'unreachable' || fail "with the server not allowed, another failure than unreachable: $(echo "$st" | grep '"error"')"
  printf '%s\n' "$pw" | online unseal --admin alice >/dev/null || fail "the admin's unseal while the helper is fenced off"
  printf '[Service]\nIPAddressAllow=127.0.0.1\n' > /etc/systemd/system/sealbox-tang@.service.d/tang-servers.conf
  systemctl daemon-reload
  ipfilter="and not when its drop-in allows another address"
fi

# A helper runs as sealbox, the keyring's owner, but must not read it: the
# probe runs with each helper unit's own sandbox (a drop-in replaces only
# what it runs and its stdio, and the tss group this container lacks).
for u in sealbox-tang@probe sealbox-tpm2@probe; do
  mkdir -p "/etc/systemd/system/$u.service.d"
  printf '[Service]\nType=oneshot\nStandardInput=null\nStandardOutput=journal\nSupplementaryGroups=\nExecStart=\nExecStart=/bin/sh -c "test -r /etc/hostname || exit 3; cat /var/lib/sealbox/keyring.db >/dev/null 2>&1 && exit 4; [ $$(id -u) != %s ] || exit 5; exit 0"\n' "$(id -u sealbox)" >"/etc/systemd/system/$u.service.d/probe.conf"
done
systemctl daemon-reload
for u in sealbox-tang@probe sealbox-tpm2@probe; do
  systemctl start "$u.service" || fail "$u: the helper's sandbox lets it read the keyring (exit 4) or runs it as the sealbox user (exit 5): exit $(systemctl show -p ExecMainStatus --value "$u.service")"
done

systemctl stop sealboxd || fail stop
[ -e /run/sealbox/sealbox.sock ] && fail "socket left after stop"
echo "SEALBOX-NSPAWN: PASS (VmLck ${lck} kB, seccomp, no capabilities, NoNewPrivs, core 0; LoadCredential= served after an unseal through the password agents, refused for a disabled, an unregistered, a timed-out and a forged request; unsealed with no person through sealbox-tang@ while sealboxd has no network, and the sealbox user refused at its socket; IP filter $ipfilter)"
exit 0
