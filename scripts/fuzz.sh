#!/usr/bin/env bash
# Runs every go test -fuzz target in the module for FUZZTIME each (default
# 10m). CI runs it with FUZZTIME=3s. Found crashers land in the package's
# testdata/fuzz and become regression tests.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10m}
total=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "fuzz: $pkg $target for $t"
    out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$t" "$pkg" 2>&1) || { echo "$out"; exit 1; }
    execs=$(printf '%s\n' "$out" | grep -o 'execs: [0-9]*' | tail -1 | cut -d' ' -f2)
    echo "fuzz: $target: ${execs:-0} execs, no failure"
    total=$((total + ${execs:-0}))
  done
done
echo "fuzz: all targets passed, $total execs in all"
