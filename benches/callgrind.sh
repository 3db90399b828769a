#!/usr/bin/env bash
# Instructions per malloc+free pair, per allocator, counted by callgrind.
#
# Runs `zonal-benches pairs ALLOCATOR N` (N pairs of 32-byte alloc+dealloc
# through std::alloc, after a 1,000-pair warm-up) under
# `valgrind --tool=callgrind` for two counts N1 < N2 and reports
#     (Ir(N2) - Ir(N1)) / (N2 - N1)
# so start-up, warm-up and exit cancel out. The row `loop only` is the same
# loop without the allocator calls. Instruction counts do not depend on
# machine load, so this is the figure to use for fast-path work.
#
# usage: benches/callgrind.sh [N1 [N2]]     (default 100000 200000)
# Respects CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
n1="${1:-100000}"
n2="${2:-$((2 * n1))}"
if ((n2 <= n1)); then
    echo "callgrind.sh: need N2 > N1" >&2
    exit 2
fi
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found" >&2; exit 2; }

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$here/target}/release/zonal-benches"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# ir ALLOCATOR|none N: total instructions of one run.
ir() {
    local env_alloc="$1"
    [[ "$1" == none ]] && env_alloc=system
    if ! ZONAL_BENCH_ALLOC="$env_alloc" valgrind --tool=callgrind \
        --callgrind-out-file="$tmp/callgrind.out" "$bin" pairs "$1" "$2" 2>"$tmp/log"; then
        cat "$tmp/log" >&2
        exit 1
    fi
    sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$tmp/log"
}

declare -A per_pair
rows=""
for a in none zonal system mimalloc jemalloc; do
    echo "callgrind: $a ..." >&2
    i1="$(ir "$a" "$n1")"
    i2="$(ir "$a" "$n2")"
    per_pair[$a]="$(awk -v a="$i1" -v b="$i2" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%.2f", (b - a) / (n2 - n1) }')"
    rows+="$a $i1 $i2 ${per_pair[$a]}"$'\n'
done

loop="${per_pair[none]}"
echo "## Instructions per malloc+free pair (callgrind)"
echo
echo "- date: $(date -u)"
echo "- machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -n1); $(valgrind --version)"
echo "- 32-byte blocks, std::alloc::alloc + dealloc; (Ir(N2) - Ir(N1)) / (N2 - N1) with N1 = $n1, N2 = $n2"
echo "- every allocator is reached through the benchmark's dispatching #[global_allocator]: each alloc and"
echo "  each dealloc pays two loads and an indirect jump into a wrapper (about 6 instructions per pair, the same for all)"
echo "- 'net' subtracts the loop's own instructions (row 'loop only')"
echo
echo "| allocator | Ir(N1) | Ir(N2) | instr / pair | net of loop | zonal / allocator (net) |"
echo "|---|---:|---:|---:|---:|---:|"
zonal_net="$(awk -v z="${per_pair[zonal]}" -v l="$loop" 'BEGIN { printf "%.2f", z - l }')"
while read -r a i1 i2 pp; do
    [[ -z "$a" ]] && continue
    if [[ "$a" == none ]]; then
        echo "| loop only | $i1 | $i2 | $pp | - | - |"
        continue
    fi
    net="$(awk -v p="$pp" -v l="$loop" 'BEGIN { printf "%.2f", p - l }')"
    ratio="$(awk -v z="$zonal_net" -v n="$net" 'BEGIN { if (n > 0) printf "%.2f", z / n; else print "-" }')"
    name="$a"
    [[ "$a" == system ]] && name="System (glibc)"
    echo "| $name | $i1 | $i2 | $pp | $net | $ratio |"
done <<<"$rows"
echo
raw="$(awk -v z="${per_pair[zonal]}" -v m="${per_pair[mimalloc]}" 'BEGIN { printf "%.2f", z / m }')"
net="$(awk -v z="$zonal_net" -v m="${per_pair[mimalloc]}" -v l="$loop" 'BEGIN { printf "%.2f", z / (m - l) }')"
echo "zonal / mimalloc: $raw per pair including loop and dispatch, $net net of the loop."
