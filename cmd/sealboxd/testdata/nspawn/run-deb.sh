#!/bin/bash
# Runs inside a minimal Debian booted by systemd-nspawn (see
# TestDebianPackage): installs the .deb with apt, as an operator would, sets
# sealbox up, has a unit read the secret, then removes the package and checks
# that the keyring stayed. Its exit status becomes the container's.
set -uo pipefail
fail() { echo "SEALBOX-DEB: FAIL: $*"; journalctl -u sealboxd --no-pager | tail -20; exit 1; }
t=/sealbox-test
cp "$t"/sealbox_*.deb /tmp/ && chmod 0644 /tmp/sealbox_*.deb
# Offline: libc6 and systemd are installed, so apt needs nothing else.
cd /tmp && apt-get install -y ./sealbox_*.deb >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt install"; }
echo "SEALBOX-DEB: installed $(dpkg-query -W -f '${Package} ${Version}' sealbox)"

# What the package set up.
id sealbox >/dev/null 2>&1 || fail "no sealbox user (sysusers)"
getent group sealbox-unattended >/dev/null || fail "no sealbox-unattended group (sysusers)"
id -nG sealbox | grep -qw sealbox-unattended && fail "the sealbox user is a member of sealbox-unattended"
[ "$(stat -c '%a %U' /var/lib/sealbox)" = "700 sealbox" ] || fail "/var/lib/sealbox is $(stat -c '%a %U' /var/lib/sealbox) (tmpfiles)"
[ -f /usr/lib/systemd/system/sealboxd.service ] || fail "the unit is not in /usr/lib/systemd/system"
grep -q '^ExecStart=/usr/bin/sealboxd --config /etc/sealbox/sealboxd.toml' /usr/lib/systemd/system/sealboxd.service || fail "ExecStart: $(grep ExecStart= /usr/lib/systemd/system/sealboxd.service)"
[ "$(systemctl is-enabled sealboxd)" = disabled ] || fail "enabled before a keyring exists: $(systemctl is-enabled sealboxd)"
systemctl is-active -q sealboxd && fail "started before a keyring exists"
grep -qx /etc/sealbox/sealboxd.toml /var/lib/dpkg/info/sealbox.conffiles || fail "the config is not a conffile"
for f in /usr/share/man/man8/sealboxd.8.gz /usr/share/man/man8/sealbox-admin.8.gz /usr/share/man/man1/sealbox.1.gz \
	/usr/share/man/man5/sealboxd.toml.5.gz /usr/share/bash-completion/completions/sealbox-admin \
	/usr/share/zsh/vendor-completions/_sealbox-admin /usr/share/fish/vendor_completions.d/sealbox-admin.fish; do
	[ -f "$f" ] || fail "missing $f"
done
sealbox-admin --version | grep -q '^sealbox-admin 0\.1\.0 ' || fail "version: $(sealbox-admin --version)"

# Set up as the operations guide says, start, unseal.
pw='deb admin passphrase'
as_sealbox() { setpriv --reuid sealbox --regid sealbox --init-groups -- "$@"; }
useradd --system --shell /usr/sbin/nologin svc
printf '%s\n' "$pw" | as_sealbox sealbox-admin init --keyring /var/lib/sealbox/keyring.db --admin alice --kdf-time 1ms >/dev/null 2>&1 || fail init
printf '%s\n' "$pw" | as_sealbox sealbox-admin --keyring /var/lib/sealbox/keyring.db client add svc --uid svc --as alice >/dev/null || fail "client add svc"
printf '%s\n' "$pw" | as_sealbox sealbox-admin --keyring /var/lib/sealbox/keyring.db client add reader --unit reader.service --as alice >/dev/null || fail "client add reader"
systemctl enable --now sealboxd >/dev/null 2>&1 || fail "enable --now"
systemctl is-active -q sealboxd || fail "not active"
as_sealbox sealbox-admin status >/dev/null; [ $? = 7 ] || fail "status does not say sealed (7)"
printf '%s\n' "$pw" | as_sealbox sealbox-admin unseal --admin alice >/dev/null 2>&1 || fail unseal

# A unit reads the secret through LoadCredential=, and it is the secret.
cat > /etc/systemd/system/reader.service <<'UNIT'
[Service]
Type=oneshot
RemainAfterExit=yes
LoadCredential=secret:/run/sealbox/credentials.sock
ExecStart=/bin/sh -c 'od -An -tx1 "$CREDENTIALS_DIRECTORY/secret" | tr -d " \n" > /run/reader.out'
UNIT
systemctl daemon-reload
systemctl start reader.service || fail "the reader unit did not start"
want=$(setpriv --reuid svc --regid svc --clear-groups -- sealbox get | od -An -tx1 | tr -d ' \n')
[ "${#want}" = 64 ] || fail "sealbox get read ${#want} hex digits"
[ "$(cat /run/reader.out)" = "$want" ] || fail "the unit read another value"
echo "SEALBOX-DEB: a unit read the 32-byte secret through LoadCredential="

# Remove: the daemon stops (and so seals: its last records go to the
# keyring), the files go, the keyring stays; purge takes the conffile and
# leaves the keyring as it was. A copy of sealbox-admin checks it after.
install -m 0755 /usr/bin/sealbox-admin /tmp/sealbox-admin
apt-get remove -y sealbox >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt remove"; }
systemctl is-active -q sealboxd && fail "still running after remove"
[ -e /usr/bin/sealboxd ] && fail "the binary stayed"
systemctl cat sealboxd >/dev/null 2>&1 && fail "the unit is still known"
[ -f /var/lib/sealbox/keyring.db ] || fail "remove took the keyring"
[ -e /etc/sealbox/sealboxd.toml ] || fail "remove took the conffile"
sum=$(sha256sum /var/lib/sealbox/keyring.db)
apt-get purge -y sealbox >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt purge"; }
[ "$(sha256sum /var/lib/sealbox/keyring.db 2>&1)" = "$sum" ] || fail "purge took or changed the keyring"
[ -e /etc/sealbox/sealboxd.toml ] && fail "purge kept the conffile"
printf '%s\n' "$pw" | setpriv --reuid sealbox --regid sealbox --init-groups -- /tmp/sealbox-admin --keyring /var/lib/sealbox/keyring.db check --as alice >/tmp/check.out 2>&1 \
	|| { cat /tmp/check.out; fail "the keyring left behind does not verify"; }
grep -q '^state: ok' /tmp/check.out || { cat /tmp/check.out; fail "check did not verify the state root"; }
echo "SEALBOX-DEB: removed and purged; the keyring is untouched"
echo "SEALBOX-DEB: PASS"
