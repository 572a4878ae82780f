#!/usr/bin/env bash
# Runs every go test -fuzz target in the module for FUZZTIME each (default
# 10m). FUZZTIME is a duration (10m) or a count of inputs (20000x); CI runs a
# count. Found crashers land in the package's testdata/fuzz and become
# regression tests.
#
# A duration can end in a spurious "context deadline exceeded" with no input
# at fault: the Go fuzz coordinator races its own -fuzztime deadline on a
# loaded machine (go.dev/issue/75804, fixed in Go 1.27). A count sets no
# deadline, so CI cannot meet it. For a duration, that exact failure with no
# failing input written is reported and run once more; anything else fails.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10m}
total=0
run() {
  go test -run '^$' -fuzz "^${2}\$" -fuzztime "$t" "$1" 2>&1
}
spurious() {
  ! [[ $t =~ x$ ]] &&
    grep -q '^    context deadline exceeded$' <<<"$1" &&
    ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' <<<"$1"
}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "fuzz: $pkg $target for $t"
    if ! out=$(run "$pkg" "$target"); then
      if spurious "$out"; then
        echo "fuzz: $target: the coordinator's deadline race (go.dev/issue/75804), no input at fault; running it again"
        out=$(run "$pkg" "$target") || { echo "$out"; exit 1; }
      else
        echo "$out"
        exit 1
      fi
    fi
    execs=$(printf '%s\n' "$out" | grep -o 'execs: [0-9]*' | tail -1 | cut -d' ' -f2)
    echo "fuzz: $target: ${execs:-0} execs, no failure"
    total=$((total + ${execs:-0}))
  done
done
echo "fuzz: all targets passed, $total execs in all"
