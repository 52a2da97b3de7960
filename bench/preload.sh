#!/usr/bin/env bash
# The allocators side by side as the malloc of whole programs: every
# workload of tests/workloads.sh, and bench/larson, bench/prodcons and
# bench/falseshare with 1 and 2 threads, under glibc, jemalloc, mimalloc,
# tcmalloc and libumem (each but glibc through LD_PRELOAD), with wall time
# and peak RSS.  Every figure is the median of BENCH_ROUNDS interleaved
# rounds (each round runs every configuration once, the allocators of one
# workload back to back), so that a noisy neighbour slows all of them
# alike.  Every run's output is compared with glibc's.
#
#   BENCH_ROUNDS     rounds (default 5)
#   PRELOAD_LIB      the library measured as libumem (default ./libumem.so)
#   BENCH_WORKLOADS  the workloads to run (default: all of them)
#
# Prints and writes bench/preload.md, and bench/preload.svg where gnuplot
# is installed.
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/workloads.sh
ROUNDS=${BENCH_ROUNDS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. bench/allocators.sh
umem=${PRELOAD_LIB:-./libumem.so}
[ -e "$umem" ] && umem=$(realpath "$umem")
preload[libumem]=$umem
allocators=()
missing=""
for a in glibc jemalloc mimalloc tcmalloc libumem; do
    lib=${preload[$a]}
    if [ -n "$lib" ] && [ ! -e "$lib" ]; then
        missing="$missing $a"
    else
        allocators+=("$a")
    fi
done

CC=${CC:-cc}
$CC -O2 -Wall -Wextra -o "$work/timeit" bench/timeit.c || exit 1
threaded="larson prodcons falseshare"
chosen=" ${BENCH_WORKLOADS:-$WORKLOADS $threaded} "
for p in $threaded; do
    $CC -O2 -g -Wall -Wextra -pthread -o "$work/$p" bench/$p.c || exit 1
done

# workload | threads ("-" for a real program) | command
workloads=()
skipped=""
for w in $WORKLOADS; do
    [[ $chosen == *" $w "* ]] || continue
    if need=$(workload_missing "$w"); then
        skipped="$skipped $w (no ${need% *})"
        continue
    fi
    workloads+=("$w|-|tests/workloads.sh $w $work/dir")
done
for p in $threaded; do
    [[ $chosen == *" $p "* ]] || continue
    for t in 1 2; do workloads+=("$p|$t|$work/$p $t"); done
done

# Each run writes its stdout to a file through sh, so every timed run is
# also checked; glibc runs first in each round and its first output is the
# reference.
declare -A seconds rss verdict
for ((r = 1; r <= ROUNDS; r++)); do
    echo "bench: round $r of $ROUNDS" >&2
    for wl in "${workloads[@]}"; do
        IFS='|' read -r name threads cmd <<< "$wl"
        for a in "${allocators[@]}"; do
            c="$name|$threads|$a"
            rm -rf "$work/dir"
            mkdir "$work/dir"
            read -r s kb code < <(LD_PRELOAD=${preload[$a]} "$work/timeit" \
                sh -c 'exec "$@" > "$0" 2> "$0.err"' "$work/out" $cmd)
            echo "exit $code" >> "$work/out"
            [ -e "$work/ref.$name.$threads" ] || cp "$work/out" "$work/ref.$name.$threads"
            if [ "$code" != 0 ]; then
                verdict[$c]="exit $code"
                echo "bench: $name $threads on $a exited $code: $(tail -n 3 "$work/out.err")" >&2
            elif ! cmp -s "$work/out" "$work/ref.$name.$threads"; then
                verdict[$c]=differs
                echo "bench: $name $threads on $a printed other output than glibc:" >&2
                diff "$work/ref.$name.$threads" "$work/out" | head -n 6 >&2
            fi
            seconds[$c]="${seconds[$c]:-} $s"
            rss[$c]="${rss[$c]:-} $kb"
        done
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
declare -A med_s med_kb
for wl in "${workloads[@]}"; do
    IFS='|' read -r name threads _ <<< "$wl"
    for a in "${allocators[@]}"; do
        c="$name|$threads|$a"
        med_s[$c]=$(echo "${seconds[$c]}" | median)
        med_kb[$c]=$(echo "${rss[$c]}" | median)
    done
done
has_umem=""
for a in "${allocators[@]}"; do [ "$a" = libumem ] && has_umem=1; done

cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
{
    echo "# Allocators as the malloc of whole programs"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), $(uname -sr)."
    echo "Median of $ROUNDS interleaved rounds. libumem is \`${preload[libumem]}\`."
    echo "Threads: prodcons runs that many producers and as many consumers."
    echo "Peak RSS is the largest process's of the workload (a real program"
    echo "may start several). Output: the run's stdout and exit status against glibc's."
    echo
    echo "| workload | threads | allocator | median s | time vs glibc | peak RSS MiB | RSS vs glibc | output |"
    echo "|---|---:|---|---:|---:|---:|---:|---|"
    for wl in "${workloads[@]}"; do
        IFS='|' read -r name threads _ <<< "$wl"
        for a in "${allocators[@]}"; do
            c="$name|$threads|$a"
            g="$name|$threads|glibc"
            printf '| %s | %s | %s | %.3f | %s | %.1f | %s | %s |\n' "$name" "$threads" "$a" \
                "${med_s[$c]}" "$(ratio "${med_s[$c]}" "${med_s[$g]}")" \
                "$(awk -v k="${med_kb[$c]}" 'BEGIN { print k / 1024 }')" \
                "$(ratio "${med_kb[$c]}" "${med_kb[$g]}")" "${verdict[$c]:-same}"
        done
    done
    [ -z "$missing" ] || printf '\nNot installed:%s.\n' "$missing"
    [ -z "$skipped" ] || printf '\nSkipped, their programs not installed:%s.\n' "$skipped"
    echo
    echo "## Targets (libumem against glibc)"
    echo
    if [ -z "$has_umem" ]; then
        echo "- libumem: not installed (${preload[libumem]} does not exist)"
    else
        check() { # text value op bound
            local ok
            ok=$(awk -v v="$2" -v b="$4" -v op="$3" 'BEGIN {
                print (op == "<" ? v < b : v <= b) ? "met" : "MISSED" }')
            echo "- $1: $2 (target $3 $4): $ok"
        }
        differ=""
        for wl in "${workloads[@]}"; do
            IFS='|' read -r name threads _ <<< "$wl"
            for a in "${allocators[@]}"; do
                v=${verdict[$name|$threads|$a]:-}
                [ "$threads" = - ] || name="$name $threads"
                [ -z "$v" ] || differ="$differ $name on $a ($v);"
            done
        done
        if [ -z "$differ" ]; then
            echo "- every output identical to glibc's: met"
        else
            echo "- every output identical to glibc's: MISSED:$differ"
        fi
        for p in $threaded; do
            [ -n "${med_s[$p|1|libumem]:-}" ] || continue
            check "$p, 2 threads, time ratio" \
                "$(ratio "${med_s[$p|2|libumem]}" "${med_s[$p|2|glibc]}")" "<" 1.00
            check "$p, 1 thread, time ratio" \
                "$(ratio "${med_s[$p|1|libumem]}" "${med_s[$p|1|glibc]}")" "<=" 1.25
        done
        if [ -n "${med_s[python|-|libumem]:-}" ]; then
            check "python (PYTHONMALLOC=malloc), time ratio" \
                "$(ratio "${med_s[python|-|libumem]}" "${med_s[python|-|glibc]}")" "<=" 1.15
        fi
        for wl in "${workloads[@]}"; do
            IFS='|' read -r name threads _ <<< "$wl"
            case $threads in
                -) label=$name ;;
                1) label="$name, 1 thread" ;;
                *) label="$name, $threads threads" ;;
            esac
            check "peak RSS ratio, $label" \
                "$(ratio "${med_kb[$name|$threads|libumem]}" "${med_kb[$name|$threads|glibc]}")" \
                "<=" 1.3
        done
    fi
} > bench/preload.md
cat bench/preload.md

if command -v gnuplot > /dev/null && [ ${#allocators[@]} -gt 1 ]; then
    # One row per workload, one column per allocator other than glibc.
    for what in time rss; do
        {
            printf 'workload'
            for a in "${allocators[@]:1}"; do printf ' %s' "$a"; done
            echo
            for wl in "${workloads[@]}"; do
                IFS='|' read -r name threads _ <<< "$wl"
                label=$name
                [ "$threads" = - ] || label="$name-$threads"
                printf '"%s"' "$label"
                for a in "${allocators[@]:1}"; do
                    if [ $what = time ]; then
                        printf ' %s' "$(ratio "${med_s[$name|$threads|$a]}" "${med_s[$name|$threads|glibc]}")"
                    else
                        printf ' %s' "$(ratio "${med_kb[$name|$threads|$a]}" "${med_kb[$name|$threads|glibc]}")"
                    fi
                done
                echo
            done
        } > "$work/$what.dat"
    done
    n=$((${#allocators[@]} + 0))
    gnuplot << EOF
set terminal svg size 1440,720 dynamic font ",11"
set output "bench/preload.svg"
set multiplot layout 2,1 title "Each allocator against glibc (1 = glibc; median of $ROUNDS rounds, $(nproc) CPUs)"
set style data histogram
set style histogram cluster gap 1
set style fill solid border -1
set boxwidth 0.9
set key outside right top
set xtics nomirror font ",9"
set grid ytics
set logscale y 2
set ylabel "wall time / glibc's"
plot for [i=2:$n] "$work/time.dat" using i:xtic(1) title columnheader(i), 1 with lines lt -1 notitle
set ylabel "peak RSS / glibc's"
plot for [i=2:$n] "$work/rss.dat" using i:xtic(1) title columnheader(i), 1 with lines lt -1 notitle
unset multiplot
EOF
    echo "bench: wrote bench/preload.md and bench/preload.svg" >&2
else
    echo "bench: wrote bench/preload.md; no bench/preload.svg (gnuplot not installed, or glibc alone)" >&2
fi
