#!/usr/bin/env bash
# Builds, once, the minimal Debian that TestSystemdNspawn boots, at
# $SEALBOX_NSPAWN_ROOTFS (default /var/tmp/sealbox-nspawn-rootfs). Needs root,
# debootstrap and Debian's package mirror; takes a few minutes.
set -euo pipefail
dir=${SEALBOX_NSPAWN_ROOTFS:-/var/tmp/sealbox-nspawn-rootfs}
if [ -x "$dir/usr/lib/systemd/systemd" ]; then
  echo "nspawn rootfs: cached at $dir"; exit 0
fi
mirror=$(grep -hoE 'https?://[^ ]+debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | head -1)
rm -rf "$dir.tmp"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,util-linux,passwd \
  bookworm "$dir.tmp" "${mirror:-http://deb.debian.org/debian}"
mv "$dir.tmp" "$dir"
echo "nspawn rootfs: built at $dir"
