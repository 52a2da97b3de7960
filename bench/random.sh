#!/usr/bin/env bash
# The random allocation pattern (bench/randpat.c) on umem.h's heaps and on
# other allocators: live sets of 1K to 64K blocks per thread, 1, 2 and 4
# threads.  Prints a table of time per step and one of peak RSS, and the
# ratios the project is held to.  Every figure is the median of
# BENCH_ROUNDS interleaved rounds (each round runs every configuration
# once, in a new random order), so that a noisy neighbour slows all of
# them alike.
#
#   BENCH_ROUNDS     rounds (default 5)
#   RANDPAT_STEPS    steps of one run, shared among its threads (default
#                    4000000: each of T threads takes 4000000 / T)
#   RANDPAT_TIMEOUT  seconds before a run is stopped (default 20); it then
#                    counts as slower than any figure, and its configuration
#                    is not run again in later rounds
#
# Writes bench/random.md.  Exit status 1 when a run failed (an allocation
# that found no room, overlapping blocks), after the table.
set -u
cd "$(dirname "$0")/.." || exit 1
ROUNDS=${BENCH_ROUNDS:-5}
STEPS=${RANDPAT_STEPS:-4000000}
LIMIT=${RANDPAT_TIMEOUT:-20}
LIVES="1024 4096 16384 65536"
THREADS="1 2 4"
began=$(date +%s)
load_before=$(cut -d" " -f1-3 /proc/loadavg 2> /dev/null)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. bench/allocators.sh

CC=${CC:-cc}
$CC -O2 -g -Wall -Wextra -pthread -I. -o "$work/randpat" bench/randpat.c || exit 1

# Columns: umem's backends this umem.h offers, then the allocators found.
offered=$("$work/randpat" --list) || exit 1
columns=()
notes=()
for b in umem-nolock umem-locked umem-cached; do
    if grep -qx -- "$b" <<< "$offered"; then
        columns+=("$b")
    else
        notes+=("$b: skipped, umem.h has no UMEM_CACHED")
    fi
done
for a in glibc jemalloc mimalloc tcmalloc; do
    lib=${preload[$a]}
    if [ -n "$lib" ] && [ ! -e "$lib" ]; then
        notes+=("$a: not installed")
        continue
    fi
    columns+=("$a")
done

# A configuration is column|live|threads.
configs=()
for l in $LIVES; do
    for t in $THREADS; do
        for c in "${columns[@]}"; do configs+=("$c|$l|$t"); done
    done
done

# times and rss hold each configuration's figures, one a round; a run
# stopped by the timeout adds "inf" to times.  dead marks a configuration
# not to run again: TIMEOUT or FAILED.
declare -A times rss dead
failed=0
run_one() { # configuration
    local col l t backend lib out code ns kb
    IFS='|' read -r col l t <<< "$1"
    case $col in
        umem-*) backend=$col lib="" ;;
        *) backend=malloc lib=${preload[$col]} ;;
    esac
    out=$(LD_PRELOAD=$lib timeout -k 2 "$LIMIT" "$work/randpat" "$backend" "$l" "$t" \
        $((STEPS / t)) 2> "$work/err")
    code=$?
    if [ $code -eq 124 ] || [ $code -eq 137 ]; then
        echo "random: $col, live $l, threads $t: stopped after $LIMIT s" >&2
        dead[$1]=TIMEOUT
        return
    fi
    read -r _ ns _ kb <<< "$out"
    if [ $code -ne 0 ] || [ -z "${kb:-}" ]; then
        echo "random: $col, live $l, threads $t: failed (exit $code): $(head -n 3 "$work/err")" >&2
        dead[$1]=FAILED
        failed=1
        return
    fi
    times[$1]="${times[$1]:-} $ns"
    rss[$1]="${rss[$1]:-} $kb"
}

for ((r = 1; r <= ROUNDS; r++)); do
    echo "random: round $r of $ROUNDS" >&2
    if command -v shuf > /dev/null; then
        mapfile -t order < <(printf '%s\n' "${configs[@]}" | shuf)
    else
        order=("${configs[@]}")
    fi
    for c in "${order[@]}"; do
        if [ -n "${dead[$c]:-}" ]; then
            # Rounds a stopped configuration skips count as stopped too.
            [ "${dead[$c]}" = TIMEOUT ] && times[$c]="${times[$c]:-} inf"
            continue
        fi
        run_one "$c"
        [ "${dead[$c]:-}" = TIMEOUT ] && times[$c]="${times[$c]:-} inf"
    done
done

# The median of a list; "inf" when it falls on a stopped run.
median() {
    tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 }
        END {
            if (NR == 0) { print "inf"; exit }
            a = v[int((NR + 1) / 2)]; b = v[int(NR / 2) + 1]
            if (a == "inf" || b == "inf") print "inf"
            else print (NR % 2) ? a : (a + b) / 2
        }'
}
declare -A med medrss
for c in "${configs[@]}"; do
    if [ "${dead[$c]:-}" = FAILED ]; then
        med[$c]=FAILED
        medrss[$c]=FAILED
        continue
    fi
    med[$c]=$(echo "${times[$c]:-}" | median)
    if [ -n "${rss[$c]:-}" ] && [ "${med[$c]}" != inf ]; then
        medrss[$c]=$(echo "${rss[$c]}" | median)
    else
        medrss[$c]=""
    fi
done

label() { # live blocks: 1024 -> 1K
    if [ $(($1 % 1024)) -eq 0 ]; then echo "$(($1 / 1024))K"; else echo "$1"; fi
}
nscell() {
    case $1 in
        inf) echo ">TIMEOUT" ;;
        FAILED) echo FAILED ;;
        *) awk -v v="$1" 'BEGIN { printf "%.1f", v }' ;;
    esac
}
mibcell() {
    case $1 in
        "") echo "-" ;;
        FAILED) echo FAILED ;;
        *) awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }' ;;
    esac
}
has_column() {
    local c
    for c in "${columns[@]}"; do [ "$c" = "$1" ] && return 0; done
    return 1
}

cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
rev=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
git diff --quiet HEAD -- umem.h 2> /dev/null || rev="$rev, umem.h modified"
{
    echo "# Random allocation pattern"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), $(uname -sr), commit $rev."
    echo "Each of T threads keeps L live blocks and takes 4 L untimed steps, then $STEPS / T"
    echo "timed ones; a step frees a random one of the thread's blocks and allocates"
    echo "16 to 515 bytes in its place."
    echo "ns/step is the wall time of the steps (from the threads' common start to the"
    echo "last one's end) over the steps of one thread, so T threads at the same speed"
    echo "on T free cores print the figure one thread does; peak RSS is the process's,"
    echo "its own arrays of live blocks included (16 bytes a block). umem-nolock gives"
    echo "each thread a heap of its own; umem-locked and umem-cached share one heap."
    echo "Median of $ROUNDS interleaved rounds; >TIMEOUT: runs stopped after $LIMIT s."
    load_after=$(cut -d" " -f1-3 /proc/loadavg 2> /dev/null)
    echo "Load average (1, 5, 15 min): ${load_before:-unknown} before the runs,"
    echo "${load_after:-unknown} after; other work on the machine slows every figure."
    echo
    header="| live blocks | threads |"
    rule="|---:|---:|"
    for c in "${columns[@]}"; do
        header="$header $c |"
        rule="$rule---:|"
    done
    # table TITLE CELL ARRAY: one row per live set and thread count, a cell
    # per column, CELL formatting ARRAY's median
    table() {
        local -n figures=$3
        echo "$1"
        echo
        echo "$header"
        echo "$rule"
        for l in $LIVES; do
            for t in $THREADS; do
                line="| $(label "$l") | $t |"
                for c in "${columns[@]}"; do line="$line $($2 "${figures[$c|$l|$t]}") |"; done
                echo "$line"
            done
        done
    }
    table "Time per step, ns:" nscell med
    echo
    table "Peak RSS, MiB:" mibcell medrss
    for n in "${notes[@]}"; do
        echo
        echo "$n."
    done
    echo
    echo "What the targets ask, from the same run:"
    echo
    check() { # text value op bound: value may be inf (a stopped run) or FAILED
        local ok shown
        case $2 in
            inf) shown=">TIMEOUT" ok=MISSED ;;
            FAILED) shown=FAILED ok=MISSED ;;
            none) shown="no figure to compare with" ok=unknown ;;
            *)
                shown=$2
                ok=$(awk -v v="$2" -v b="$4" -v op="$3" 'BEGIN {
                    r = op == "<=" ? v <= b : op == "<" ? v < b : v >= b
                    print r ? "met" : "MISSED" }')
                ;;
        esac
        echo "- $1: $shown (target $3 $4): $ok"
    }
    ratio() { # a b: a / b, or why there is none
        case "$1$2" in
            *FAILED*) echo FAILED ;;
            inf*) echo inf ;;
            *inf) echo none ;;
            *) awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' ;;
        esac
    }
    # umem backend, threads, bound, operator, the allocator compared with
    for target in "umem-nolock 1 1.0 <= glibc" "umem-locked 1 3 <= glibc" \
        "umem-cached 1 1.0 <= glibc" "umem-cached 2 1.0 <= glibc" \
        "umem-cached 1 1.1 <= mimalloc" "umem-cached 2 1.1 <= mimalloc"; do
        read -r b t bound op ref <<< "$target"
        has_column "$b" || continue
        if ! has_column "$ref"; then
            echo "- $b against $ref: $ref not measured"
            continue
        fi
        for l in $LIVES; do
            check "$b over $ref, $(label "$l") live, $t thread$([ "$t" -gt 1 ] && echo s) (time ratio)" \
                "$(ratio "${med[$b|$l|$t]}" "${med[$ref|$l|$t]}")" "$op" "$bound"
        done
    done
    for b in umem-nolock umem-locked umem-cached; do
        has_column "$b" && has_column glibc || continue
        worst="" where="" left=0 n=0
        for l in $LIVES; do
            for t in $THREADS; do
                u=${medrss[$b|$l|$t]} g=${medrss[glibc|$l|$t]}
                if [ -z "$u" ] || [ -z "$g" ] || [ "$u" = FAILED ] || [ "$g" = FAILED ]; then
                    left=$((left + 1))
                    continue
                fi
                n=$((n + 1))
                q=$(ratio "$u" "$g")
                if [ -z "$worst" ] || awk -v q="$q" -v w="$worst" 'BEGIN { exit !(q > w) }'; then
                    worst=$q
                    where="$(label "$l") live, $t thread$([ "$t" -gt 1 ] && echo s)"
                fi
            done
        done
        [ $left -gt 0 ] && skipped=", $left without a figure left out" || skipped=""
        if [ $n -eq 0 ]; then
            echo "- $b peak RSS over glibc's: no configuration with both figures"
        else
            check "$b peak RSS over glibc's, largest of $n configurations ($where$skipped)" \
                "$worst" "<=" 1.3
        fi
    done
} > bench/random.md
cat bench/random.md
echo "random: wrote bench/random.md in $(($(date +%s) - began)) s" >&2
exit $failed
