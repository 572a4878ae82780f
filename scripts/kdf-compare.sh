#!/usr/bin/env bash
# Compares Argon2id implementations process against process, one hash per
# fresh process (as a daemon's first unseal), wall time against wall time:
# internal/argon2id, x/crypto/argon2, Debian's argon2 command (libargon2
# 20171227) and the reference implementation built with OPTTARGET=native.
# Then warm derivations in one process, ours against x/crypto. Arguments go
# to sealbox-bench --kdf-compare (e.g. --rounds 9, --params '3,65536,4').
#
# Needs: apt-get install argon2 (Debian's command), a C compiler and make.
# The reference source comes from PHC_SRC (a phc-winner-argon2 checkout) or
# is cloned from GitHub at a pinned commit; it is built in a scratch
# directory outside the repository (WORK, default a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
commit=f57e61e19229e23c4445b85494dbf7c07de721cb # phc-winner-argon2 master, 2021
work=${WORK:-$(mktemp -d)}
src=$work/phc-winner-argon2
if [ ! -x "$src/argon2" ]; then
  if [ -n "${PHC_SRC:-}" ]; then
    git clone -q "$PHC_SRC" "$src"
  else
    git clone -q https://github.com/P-H-C/phc-winner-argon2 "$src"
  fi
  git -C "$src" checkout -q "$commit"
  echo "kdf-compare: building the reference implementation: make -C $src OPTTARGET=native" >&2
  make -s -C "$src" OPTTARGET=native argon2 >/dev/null
fi
if ! command -v argon2 >/dev/null; then
  echo "kdf-compare: warning: no argon2 command; hint: apt-get install argon2" >&2
fi
mkdir -p bin
go build -o bin/sealbox-bench ./cmd/sealbox-bench
exec bin/sealbox-bench --kdf-compare --argon2-opt "$src/argon2" "$@"
