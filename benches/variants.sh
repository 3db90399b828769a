#!/usr/bin/env bash
# Compares builds of the benchmark binary side by side: for judging a change
# to zonal against the code before it (and against a peer) on one workload.
#
# Each NAME=BINARY[:ALLOCATOR] names a built `zonal-benches` (copy
# target/release/zonal-benches aside before rebuilding with the change) and
# the allocator to run in it (default zonal). Every run is a fresh process;
# the variants take turns within each round, so drift in the machine's load
# affects them alike. Prints, per variant, the median and the minimum wall
# time of the workload (as the binary reports it) and the median relative
# to the first variant.
#
# usage: benches/variants.sh WORKLOAD RUNS NAME=BINARY[:ALLOCATOR]...
# example:
#   cp benches/target/release/zonal-benches /tmp/before
#   (edit, rebuild)
#   benches/variants.sh churn-batch-100k 21 before=/tmp/before \
#       after=benches/target/release/zonal-benches \
#       mimalloc=benches/target/release/zonal-benches:mimalloc
#
# On a shared machine, differences under about 5 % between two such runs
# have been seen to reverse; use 21 runs or more and repeat before trusting
# one.
set -euo pipefail

if (($# < 3)); then
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
workload="$1"
runs="$2"
shift 2

names=()
declare -A binary allocator times
for spec in "$@"; do
    name="${spec%%=*}"
    rest="${spec#*=}"
    if [[ "$name" == "$spec" || -z "$rest" ]]; then
        echo "variants.sh: expected NAME=BINARY[:ALLOCATOR], got '$spec'" >&2
        exit 2
    fi
    names+=("$name")
    binary[$name]="${rest%%:*}"
    allocator[$name]=zonal
    [[ "$rest" == *:* ]] && allocator[$name]="${rest#*:}"
    [[ -x "${binary[$name]}" ]] || { echo "variants.sh: ${binary[$name]} is not executable" >&2; exit 2; }
    times[$name]=""
done

for ((round = 1; round <= runs; round++)); do
    for name in "${names[@]}"; do
        out=$(ZONAL_BENCH_ALLOC="${allocator[$name]}" \
            "${binary[$name]}" run "$workload" "${allocator[$name]}")
        times[$name]+=" ${out%% *}"
    done
    printf '\rround %d/%d' "$round" "$runs" >&2
done
printf '\n' >&2

# median NS...: the median of the arguments.
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
minimum() { printf '%s\n' "$@" | sort -n | head -1; }

# shellcheck disable=SC2086 # word splitting of the time lists is intended
first=$(median ${times[${names[0]}]})
printf '| variant | median (ms) | min (ms) | median / %s |\n|---|---:|---:|---:|\n' "${names[0]}"
for name in "${names[@]}"; do
    # shellcheck disable=SC2086
    med=$(median ${times[$name]})
    # shellcheck disable=SC2086
    low=$(minimum ${times[$name]})
    awk -v n="$name" -v m="$med" -v l="$low" -v f="$first" \
        'BEGIN {printf "| %s | %.1f | %.1f | %.3f |\n", n, m / 1e6, l / 1e6, m / f}'
done
