#!/usr/bin/env bash
# The allocators side by side as the malloc of whole programs: every
# workload of tests/workloads.sh, and the threaded workloads of bench/
# (larson, prodcons, falseshare, rptest, largerealloc, mstress and
# smallobj with 1 and 2 threads; larson, prodcons and rptest also with 4
# and 8, more threads than most machines that run this have cores), under
# glibc, jemalloc, mimalloc, tcmalloc and libumem (each but glibc through
# LD_PRELOAD), with wall time, peak RSS and, for the programs that report
# one ("N ops/s" on their result line), throughput.  Every figure is the
# median of BENCH_ROUNDS interleaved rounds (each round runs every
# configuration once, the allocators of one workload back to back), so
# that a noisy neighbour slows all of them alike.  Every run's output is
# compared with glibc's, its throughput left out.
#
#   BENCH_ROUNDS     rounds (default 5)
#   PRELOAD_LIB      the library measured as libumem (default ./libumem.so)
#   BENCH_WORKLOADS  the workloads to run (default: all of them)
#
# Prints and writes bench/preload.md (every figure, a summary of libumem
# against glibc and against the best of the others, and the targets), and
# bench/preload.svg where gnuplot is installed.
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
peers=() # the allocators installed other than glibc and libumem
missing=""
for a in glibc jemalloc mimalloc tcmalloc libumem; do
    lib=${preload[$a]}
    if [ -n "$lib" ] && [ ! -e "$lib" ]; then
        missing="$missing $a"
        continue
    fi
    allocators+=("$a")
    case $a in glibc | libumem) ;; *) peers+=("$a") ;; esac
done

CC=${CC:-cc}
$CC -O2 -Wall -Wextra -o "$work/timeit" bench/timeit.c || exit 1
threaded="larson prodcons falseshare rptest largerealloc mstress smallobj"
oversubscribed=" larson prodcons rptest "
chosen=" ${BENCH_WORKLOADS:-$WORKLOADS $threaded} "
for p in $threaded; do
    [[ $chosen == *" $p "* ]] || continue
    $CC -std=c11 -O2 -g -Wall -Wextra -pthread -o "$work/$p" bench/$p.c || exit 1
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
    counts="1 2"
    [[ $oversubscribed == *" $p "* ]] && counts="1 2 4 8"
    for t in $counts; do workloads+=("$p|$t|$work/$p $t"); done
done

# One timed run of a workload on an allocator; its stdout goes to a file
# through sh, so every timed run is also checked.  A figure followed by
# " ops/s" is the run's throughput: it is taken out of the output before
# the output is compared with glibc's (glibc runs first in each round and
# its first output is the reference).
declare -A seconds rss tput verdict
run_one() { # name threads allocator command...
    local name=$1 threads=$2 a=$3 c="$1|$2|$3" ref="$work/ref.$1.$2" s kb code ops
    shift 3
    rm -rf "$work/dir"
    mkdir "$work/dir"
    read -r s kb code < <(LD_PRELOAD=${preload[$a]} "$work/timeit" \
        sh -c 'exec "$@" > "$0" 2> "$0.err"' "$work/out" "$@")
    ops=$(grep -Eo '[0-9][0-9.e+]* ops/s' "$work/out" | head -n 1)
    sed -Ei 's|[0-9][0-9.e+]* ops/s|N ops/s|' "$work/out"
    echo "exit $code" >> "$work/out"
    [ -e "$ref" ] || cp "$work/out" "$ref"
    if [ "$code" != 0 ]; then
        verdict[$c]="exit $code"
        echo "bench: $name $threads on $a exited $code: $(tail -n 3 "$work/out.err")" >&2
    elif ! cmp -s "$work/out" "$ref"; then
        verdict[$c]=differs
        echo "bench: $name $threads on $a printed other output than glibc:" >&2
        diff "$ref" "$work/out" | head -n 6 >&2
    fi
    seconds[$c]="${seconds[$c]:-} $s"
    rss[$c]="${rss[$c]:-} $kb"
    [ -z "$ops" ] || tput[$c]="${tput[$c]:-} ${ops% *}"
}

for ((r = 1; r <= ROUNDS; r++)); do
    echo "bench: round $r of $ROUNDS" >&2
    for wl in "${workloads[@]}"; do
        IFS='|' read -r name threads cmd <<< "$wl"
        for a in "${allocators[@]}"; do
            run_one "$name" "$threads" "$a" $cmd
        done
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# The geometric mean of the numbers on stdin, one a line.
geomean() { awk '{ s += log($1); n++ } END { if (n) printf "%.2f", exp(s / n); else print "-" }'; }
declare -A med_s med_kb med_ops
for wl in "${workloads[@]}"; do
    IFS='|' read -r name threads _ <<< "$wl"
    for a in "${allocators[@]}"; do
        c="$name|$threads|$a"
        med_s[$c]=$(echo "${seconds[$c]}" | median)
        med_kb[$c]=$(echo "${rss[$c]}" | median)
        med_ops[$c]=$(echo "${tput[$c]:-}" | median)
    done
done
has_umem=""
for a in "${allocators[@]}"; do [ "$a" = libumem ] && has_umem=1; done

# Every figure of every allocator.
print_table() {
    echo "| workload | threads | allocator | median s | time vs glibc | ops/s | ops/s vs glibc | peak RSS MiB | RSS vs glibc | output |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
    local wl name threads a c g ops opsr
    for wl in "${workloads[@]}"; do
        IFS='|' read -r name threads _ <<< "$wl"
        g="$name|$threads|glibc"
        for a in "${allocators[@]}"; do
            c="$name|$threads|$a"
            ops=- opsr=-
            if [ -n "${med_ops[$c]}" ]; then
                ops=$(awk -v o="${med_ops[$c]}" 'BEGIN { printf "%.0f", o }')
                opsr=$(ratio "${med_ops[$c]}" "${med_ops[$g]:-0}")
            fi
            printf '| %s | %s | %s | %.3f | %s | %s | %s | %.1f | %s | %s |\n' "$name" "$threads" \
                "$a" "${med_s[$c]}" "$(ratio "${med_s[$c]}" "${med_s[$g]}")" "$ops" "$opsr" \
                "$(awk -v k="${med_kb[$c]}" 'BEGIN { print k / 1024 }')" \
                "$(ratio "${med_kb[$c]}" "${med_kb[$g]}")" "${verdict[$c]:-same}"
        done
    done
}

# The fastest peer on one workload and thread count: "name seconds", or
# nothing when no peer is installed or none ran cleanly.
best_peer() { # name threads
    local a c best="" best_s=""
    for a in "${peers[@]}"; do
        c="$1|$2|$a"
        [ -z "${verdict[$c]:-}" ] || continue
        if [ -z "$best" ] || awk -v a="${med_s[$c]}" -v b="$best_s" 'BEGIN { exit !(a < b) }'; then
            best=$a best_s=${med_s[$c]}
        fi
    done
    [ -z "$best" ] || echo "$best $best_s"
}

# libumem's time against glibc's and the best peer's on every row, then
# the geometric means and the rows where libumem is slower than glibc.
print_summary() {
    echo "Time ratios: below 1.00 libumem is the faster. The best peer is the"
    echo "fastest of ${peers[*]:-(none installed)} on that row. A row where libumem's"
    echo "run failed or printed other output than glibc's is left out of the means."
    echo
    echo "| workload | threads | glibc s | libumem s | libumem / glibc | best peer | peer s | libumem / best peer |"
    echo "|---|---:|---:|---:|---:|---|---:|---:|"
    local wl name threads u g r peer peer_s pr ps n=0 slower="" nslower=0
    : > "$work/vs_glibc"
    : > "$work/vs_mimalloc"
    for wl in "${workloads[@]}"; do
        IFS='|' read -r name threads _ <<< "$wl"
        u=${med_s[$name|$threads|libumem]} g=${med_s[$name|$threads|glibc]}
        r=$(ratio "$u" "$g")
        read -r peer peer_s < <(best_peer "$name" "$threads"; echo)
        pr=- ps=-
        if [ -n "${peer:-}" ]; then
            pr=$(ratio "$u" "$peer_s")
            ps=$(printf '%.3f' "$peer_s")
        fi
        printf '| %s | %s | %.3f | %.3f | %s | %s | %s | %s |\n' "$name" "$threads" "$g" "$u" \
            "$r" "${peer:--}" "$ps" "$pr"
        [ -z "${verdict[$name|$threads|libumem]:-}" ] || continue
        n=$((n + 1))
        echo "$r" >> "$work/vs_glibc"
        [ -z "${med_s[$name|$threads|mimalloc]:-}" ] || [ -n "${verdict[$name|$threads|mimalloc]:-}" ] ||
            echo "$(ratio "$u" "${med_s[$name|$threads|mimalloc]}")" >> "$work/vs_mimalloc"
        if awk -v r="$r" 'BEGIN { exit !(r > 1.00) }'; then
            nslower=$((nslower + 1))
            [ "$threads" = - ] && slower="$slower $name ($r);" || slower="$slower $name $threads ($r);"
        fi
    done
    echo
    echo "- geometric mean of libumem / glibc over $n rows: $(geomean < "$work/vs_glibc")"
    echo "- geometric mean of libumem / mimalloc over $(grep -c . "$work/vs_mimalloc") rows: $(geomean < "$work/vs_mimalloc")"
    echo "- rows where libumem is slower than glibc (ratio above 1.00): $nslower of $n${slower:+:${slower%;}}"
}

# The project's targets for libumem against glibc.
print_targets() {
    check() { # text value op bound
        local ok
        ok=$(awk -v v="$2" -v b="$4" -v op="$3" 'BEGIN {
            print (op == "<" ? v < b : v <= b) ? "met" : "MISSED" }')
        echo "- $1: $2 (target $3 $4): $ok"
    }
    local wl name threads label a v p differ=""
    for wl in "${workloads[@]}"; do
        IFS='|' read -r name threads _ <<< "$wl"
        for a in "${allocators[@]}"; do
            v=${verdict[$name|$threads|$a]:-}
            [ "$threads" = - ] && label=$name || label="$name $threads"
            [ -z "$v" ] || differ="$differ $label on $a ($v);"
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
}

cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
{
    echo "# Allocators as the malloc of whole programs"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), $(uname -sr)."
    echo "Median of $ROUNDS interleaved rounds. libumem is \`${preload[libumem]}\`."
    echo "Threads: prodcons runs that many producers and as many consumers;"
    echo "mstress starts that many threads anew in each of its iterations."
    echo "ops/s is the throughput the program reports, where it reports one."
    echo "Peak RSS is the largest process's of the workload (a real program"
    echo "may start several). Output: the run's stdout (throughput left out)"
    echo "and exit status against glibc's."
    echo
    print_table
    [ -z "$missing" ] || printf '\nNot installed:%s.\n' "$missing"
    [ -z "$skipped" ] || printf '\nSkipped, their programs not installed:%s.\n' "$skipped"
    echo
    echo "## libumem against glibc and the best peer"
    echo
    if [ -z "$has_umem" ]; then
        echo "libumem: not installed (${preload[libumem]} does not exist)."
    else
        print_summary
    fi
    echo
    echo "## Targets (libumem against glibc)"
    echo
    if [ -z "$has_umem" ]; then
        echo "- libumem: not installed (${preload[libumem]} does not exist)"
    else
        print_targets
    fi
} > bench/preload.md
cat bench/preload.md

# One row per workload and thread count, one column per allocator other
# than glibc: what (time, ops or rss) against glibc's.  Rows without the
# figure (ops/s of a program that reports none) are left out.
plot_data() { # what
    local wl name threads label a v
    printf 'workload'
    for a in "${allocators[@]:1}"; do printf ' %s' "$a"; done
    echo
    for wl in "${workloads[@]}"; do
        IFS='|' read -r name threads _ <<< "$wl"
        [ "$1" != ops ] || [ -n "${med_ops[$name|$threads|glibc]}" ] || continue
        label=$name
        [ "$threads" = - ] || label="$name-$threads"
        printf '"%s"' "$label"
        for a in "${allocators[@]:1}"; do
            case $1 in
                time) v=$(ratio "${med_s[$name|$threads|$a]}" "${med_s[$name|$threads|glibc]}") ;;
                ops) v=$(ratio "${med_ops[$name|$threads|$a]:-0}" "${med_ops[$name|$threads|glibc]}") ;;
                rss) v=$(ratio "${med_kb[$name|$threads|$a]}" "${med_kb[$name|$threads|glibc]}") ;;
            esac
            printf ' %s' "$v"
        done
        echo
    done
}

# bench/preload.svg: time, throughput (where reported) and peak RSS of
# each allocator against glibc's, one panel each.
plot() {
    local what panels=2 n=${#allocators[@]} width
    for what in time ops rss; do plot_data $what > "$work/$what.dat"; done
    [ "$(wc -l < "$work/ops.dat")" -gt 1 ] && panels=3
    width=$((${#workloads[@]} * 44 + 360))
    [ $width -ge 1440 ] || width=1440
    {
        echo "set terminal svg size $width,$((panels * 380)) dynamic font \",11\""
        echo "set output \"bench/preload.svg\""
        echo "set multiplot layout $panels,1 title \"Each allocator against glibc (1 = glibc; median of $ROUNDS rounds, $(nproc) CPUs)\""
        echo "set style data histogram"
        echo "set style histogram cluster gap 1"
        echo "set style fill solid border -1"
        echo "set boxwidth 0.9"
        echo "set key outside right top"
        echo "set xtics nomirror rotate by 45 right font \",9\""
        echo "set grid ytics"
        echo "set logscale y 2"
        echo "set ylabel \"wall time / glibc's (lower is better)\""
        echo "plot for [i=2:$n] \"$work/time.dat\" using i:xtic(1) title columnheader(i), 1 with lines lt -1 notitle"
        if [ $panels = 3 ]; then
            echo "set ylabel \"ops/s / glibc's (higher is better)\""
            echo "plot for [i=2:$n] \"$work/ops.dat\" using i:xtic(1) title columnheader(i), 1 with lines lt -1 notitle"
        fi
        echo "set ylabel \"peak RSS / glibc's\""
        echo "plot for [i=2:$n] \"$work/rss.dat\" using i:xtic(1) title columnheader(i), 1 with lines lt -1 notitle"
        echo "unset multiplot"
    } > "$work/plot.gp"
    gnuplot "$work/plot.gp"
}

if command -v gnuplot > /dev/null && [ ${#allocators[@]} -gt 1 ] && [ ${#workloads[@]} -gt 0 ]; then
    if plot; then
        echo "bench: wrote bench/preload.md and bench/preload.svg" >&2
    else
        echo "bench: wrote bench/preload.md; gnuplot failed, bench/preload.svg not written" >&2
    fi
else
    echo "bench: wrote bench/preload.md; no bench/preload.svg (gnuplot not installed, or glibc alone)" >&2
fi
