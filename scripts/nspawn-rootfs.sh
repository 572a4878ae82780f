#!/usr/bin/env bash
# Builds, once, the minimal Debian that TestSystemdNspawn boots, at
# $SEALBOX_NSPAWN_ROOTFS (default /var/tmp/sealbox-nspawn-rootfs). Needs root,
# debootstrap and a Debian package mirror; takes a few minutes.
#
# The mirror is the first one apt on this machine uses for bookworm, from
# one-line sources (/etc/apt/sources.list, sources.list.d/*.list) or deb822
# ones (sources.list.d/*.sources, the Debian 12 default); with none, it is
# http://deb.debian.org/debian. $SEALBOX_NSPAWN_MIRROR overrides it.
set -euo pipefail
suite=bookworm
dir=${SEALBOX_NSPAWN_ROOTFS:-/var/tmp/sealbox-nspawn-rootfs}
say() { echo "nspawn rootfs: $*"; }
die() { echo "nspawn rootfs: error: $*" >&2; exit 1; }

if [ -x "$dir/usr/lib/systemd/systemd" ]; then
  say "cached at $dir"; exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root (run as root, or build $dir elsewhere and copy it)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

# debian_mirror prints "URI FILE" for the first enabled deb source of $suite.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    awk -v suite="$suite" -v file="$f" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i+1) == suite) { print $i, file; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # deb822 stanzas, separated by blank lines; field names are
    # case-insensitive; "Enabled: no" turns a stanza off.
    awk -v suite="$suite" -v file="$f" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " suite " ") && uris != "") {
          split(uris, u, " "); print u[1], file; found = 1; exit
        }
        types = ""; suites = ""; uris = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[A-Za-z-]+:/ {
        key = tolower(substr($0, 1, index($0, ":") - 1))
        val = substr($0, index($0, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "uris") uris = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { if (!found) flush() }' "$f"
  done
}

if [ -n "${SEALBOX_NSPAWN_MIRROR:-}" ]; then
  mirror=$SEALBOX_NSPAWN_MIRROR from='$SEALBOX_NSPAWN_MIRROR'
else
  read -r mirror from < <(debian_mirror | head -1) || true
  if [ -z "${mirror:-}" ]; then
    mirror=http://deb.debian.org/debian from="the default (no $suite source in /etc/apt)"
  fi
fi
say "building Debian $suite at $dir from $mirror (mirror from $from)"
rm -rf "$dir.tmp"
start=$SECONDS
if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,util-linux,passwd \
  "$suite" "$dir.tmp" "$mirror"; then
  log=$dir.tmp/debootstrap/debootstrap.log
  [ -r "$log" ] && { echo "--- last lines of $log:" >&2; tail -15 "$log" >&2; }
  die "debootstrap $suite from $mirror failed (no network or mirror? set SEALBOX_NSPAWN_MIRROR); left $dir.tmp for inspection"
fi
mv "$dir.tmp" "$dir"
say "built at $dir in $((SECONDS - start)) s"
