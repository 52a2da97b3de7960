#!/usr/bin/env bash
# make bench: times sharedhash, esharedhash and the same hasher on other
# allocators, side by side on one input, and prints one table and the
# ratios the project is held to.  Every figure is the median of
# BENCH_ROUNDS interleaved rounds (each round runs every configuration
# once), so that a noisy neighbour slows all of them alike.
#
#   BENCH_ROUNDS  rounds (default 5)
#   BENCH_MIB     input size in MiB of random bytes (default 64)
#   BENCH_MANY    the larger worker count (default 4)
#
# Then runs bench/random.sh (the allocator alone on a random pattern),
# bench/preload.sh (libumem.so under real programs), bench/fastpath.sh
# (instructions per free and malloc) and bench/churn.sh (memory after
# churn) and appends their tables.  Writes bench/results.md, and bench/scaling.svg
# where gnuplot is installed.
set -u
cd "$(dirname "$0")/.." || exit 1
ROUNDS=${BENCH_ROUNDS:-5}
MIB=${BENCH_MIB:-64}
MANY=${BENCH_MANY:-4}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. bench/allocators.sh

make -s sharedhash esharedhash || exit 1
CC=${CC:-cc}
for b in mallochash arrayhash; do
    $CC -O2 -g -Wall -Wextra -pthread -o "$work/$b" bench/$b.c || exit 1
done
$CC -O2 -Wall -Wextra -o "$work/timeit" bench/timeit.c || exit 1
head -c $((MIB << 20)) /dev/urandom > "$work/input"

# name | command | mode | workers | allocator | LD_PRELOAD
configs=()
add() { configs+=("$1|$2|$3|$4|$5|$6"); }
for p in sharedhash esharedhash; do
    add $p ./$p single 1 umem ""
    for m in -t -m; do
        for j in 1 2 $MANY; do add $p ./$p $m $j umem ""; done
    done
done
add arrayhash "$work/arrayhash" single 1 "none (array)" ""
add arrayhash "$work/arrayhash" -t 2 "none (array)" ""
missing=""
for a in glibc jemalloc mimalloc tcmalloc; do
    lib=${preload[$a]}
    if [ -n "$lib" ] && [ ! -e "$lib" ]; then
        missing="$missing $a"
        continue
    fi
    add mallochash "$work/mallochash" single 1 $a "$lib"
    add mallochash "$work/mallochash" -t 2 $a "$lib"
done

args_of() { # mode workers
    if [ "$1" = single ]; then echo ""; else echo "$1 -j $2"; fi
}

# One run of each with --stats: every signature must agree, and the
# lock counts come from here (they do not vary from run to run).
declare -A locks seconds rss
want=""
for c in "${configs[@]}"; do
    IFS='|' read -r name cmd mode j alloc lib <<< "$c"
    out=$(LD_PRELOAD=$lib $cmd $(args_of $mode $j) --stats "$work/input" 2> "$work/stats")
    [ -n "$want" ] || want=$out
    if [ "$out" != "$want" ]; then
        echo "bench: $name $mode -j $j ($alloc) printed '$out', others '$want'" >&2
        exit 1
    fi
    locks[$c]=$(awk '$1 == "lock_count" { print $2 }' "$work/stats")
done

for ((r = 1; r <= ROUNDS; r++)); do
    echo "bench: round $r of $ROUNDS" >&2
    for c in "${configs[@]}"; do
        IFS='|' read -r name cmd mode j alloc lib <<< "$c"
        read -r s kb code < <(LD_PRELOAD=$lib "$work/timeit" $cmd $(args_of $mode $j) "$work/input")
        [ "$code" = 0 ] || { echo "bench: $name $mode -j $j failed ($code)" >&2; exit 1; }
        seconds[$c]="${seconds[$c]:-} $s"
        rss[$c]="${rss[$c]:-} $kb"
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxof() { tr ' ' '\n' | grep . | sort -g | tail -n 1; }
declare -A med
for c in "${configs[@]}"; do med[$c]=$(echo "${seconds[$c]}" | median); done
key() { # name mode workers allocator: the configuration's key
    for c in "${configs[@]}"; do
        IFS='|' read -r n _ m j a _ <<< "$c"
        [ "$n|$m|$j|$a" = "$1|$2|$3|$4" ] && { echo "$c"; return; }
    done
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
{
    echo "# Benchmark results"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), $(uname -sr)."
    echo "Input: $MIB MiB of random bytes; median of $ROUNDS interleaved rounds;"
    echo "speedup is against the same program and allocator single-threaded;"
    echo "peak RSS is the largest process's (the reader or one worker)."
    echo
    echo "| program | mode | workers | allocator | median s | MB/s | speedup | lock_count | peak RSS MiB |"
    echo "|---|---|---:|---|---:|---:|---:|---:|---:|"
    for c in "${configs[@]}"; do
        IFS='|' read -r name cmd mode j alloc lib <<< "$c"
        base=${med[$(key $name single 1 "$alloc")]}
        printf '| %s | %s | %s | %s | %.3f | %.1f | %.2fx | %s | %.1f |\n' "$name" "$mode" "$j" \
            "$alloc" "${med[$c]}" "$(awk -v m=$MIB -v s=${med[$c]} 'BEGIN { print m * 1.048576 / s }')" \
            "$(ratio "$base" "${med[$c]}")" "${locks[$c]}" \
            "$(awk -v k=$(echo "${rss[$c]}" | maxof) 'BEGIN { print k / 1024 }')"
    done
    if [ -n "$missing" ]; then
        echo
        echo "Not installed:$missing."
    fi
    echo
    echo "## Targets"
    echo
    check() { # text value op bound
        local ok
        ok=$(awk -v v="$2" -v b="$4" -v op="$3" 'BEGIN { print (op == ">=" ? v >= b : v <= b) ? "met" : "MISSED" }')
        echo "- $1: $2 (target $3 $4): $ok"
    }
    es1=${med[$(key esharedhash single 1 umem)]}
    est=${med[$(key esharedhash -t 2 umem)]}
    esm=${med[$(key esharedhash -m 2 umem)]}
    sh1=${med[$(key sharedhash single 1 umem)]}
    sht=${med[$(key sharedhash -t 2 umem)]}
    check "esharedhash -t speedup over esharedhash single, 2 workers" "$(ratio $es1 $est)" ">=" 1.8
    check "esharedhash -m speedup over esharedhash single, 2 workers" "$(ratio $es1 $esm)" ">=" 1.7
    echo "- esharedhash -t vs sharedhash -t, 2 workers: [$(awk -v a=$sht -v b=$est 'BEGIN { printf "%.1f", a / b }')]x speedup"
    check "  that speedup" "$(ratio $sht $est)" ">=" 3
    check "sharedhash -t slowdown against sharedhash single, 2 workers" "$(ratio $sht $sh1)" "<=" 2
    arr1=${med[$(key arrayhash single 1 "none (array)")]}
    check "esharedhash single against the allocation-free build (time ratio)" "$(ratio $es1 $arr1)" "<=" 1.10
    for a in glibc jemalloc mimalloc tcmalloc; do
        k1=$(key mallochash single 1 $a)
        [ -n "$k1" ] || { echo "- $a: not installed"; continue; }
        kt=$(key mallochash -t 2 $a)
        check "mallochash on $a over esharedhash, single (time ratio)" "$(ratio ${med[$k1]} $es1)" ">=" 1.0
        check "mallochash on $a over esharedhash, -t 2 (time ratio)" "$(ratio ${med[$kt]} $est)" ">=" 1.0
    done
    for j in 1 2 $MANY; do
        echo "- esharedhash -t -j $j lock_count for the whole run: ${locks[$(key esharedhash -t $j umem)]}"
    done
    top=0
    for c in "${configs[@]}"; do
        m=$(echo "${rss[$c]}" | maxof)
        [ "$m" -gt "$top" ] && top=$m
    done
    check "largest peak RSS of any run, MiB" "$(awk -v k=$top 'BEGIN { printf "%.1f", k / 1024 }')" "<=" 32
} > bench/results.md

# The allocator on its own: the random pattern (bench/random.sh writes
# bench/random.md); then libumem.so as the malloc of real programs and
# threaded workloads (bench/preload.sh writes bench/preload.md), the
# instructions of its fast path (bench/fastpath.sh, bench/fastpath.md) and
# a long-lived cache's memory (bench/churn.sh, bench/churn.md).  All are
# appended to the results.
make -s libumem.so || exit 1
for part in random preload fastpath churn; do
    BENCH_ROUNDS=$ROUNDS bench/$part.sh > /dev/null || echo "bench: bench/$part.sh failed" >&2
    {
        echo
        sed 's/^# /## /' bench/$part.md
    } >> bench/results.md
done
cat bench/results.md

if command -v gnuplot > /dev/null; then
    for p in sharedhash esharedhash; do
        for m in -t -m; do
            for j in 1 2 $MANY; do
                echo "$j $(awk -v m=$MIB -v s=${med[$(key $p $m $j umem)]} 'BEGIN { print m * 1.048576 / s }')"
            done > "$work/$p$m.dat"
        done
    done
    gnuplot << EOF
set terminal svg size 720,420 dynamic
set output "bench/scaling.svg"
set title "Throughput against workers ($MIB MiB random input, $(nproc) CPUs)"
set xlabel "workers (-j)"
set ylabel "MB/s"
set key left top
set xtics (1, 2, $MANY)
set grid
plot "$work/esharedhash-t.dat" with linespoints title "esharedhash -t", \
     "$work/esharedhash-m.dat" with linespoints title "esharedhash -m", \
     "$work/sharedhash-t.dat" with linespoints title "sharedhash -t", \
     "$work/sharedhash-m.dat" with linespoints title "sharedhash -m"
EOF
    echo "bench: wrote bench/results.md and bench/scaling.svg" >&2
else
    echo "bench: wrote bench/results.md; gnuplot is not installed, so no bench/scaling.svg" >&2
fi
