#!/usr/bin/env bash
# Instructions per free and malloc of a small block by the thread that
# owns it (bench/fastpath.c), counted by callgrind for libumem.so and the
# allocators found: two runs of 100,000 and 1,100,000 steps each, the
# difference over 1,000,000.  Instruction counts do not depend on the
# machine's load, so one run of each is enough.  The loop's own work
# (a random number, a call to each) is included, as in each allocator.
# The same for libumem.so sampling guarded blocks with a draw that never
# comes (its countdown's cost).
# Then the same for a thread that starts, allocates one block and ends
# (bench/threadchurn.c: 500 and 2,500 threads, the difference over 2,000),
# the C library's own work for a thread included.
#
# Writes bench/fastpath.md; exit status 1 when valgrind is missing or a
# run failed.
set -u
cd "$(dirname "$0")/.." || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! command -v valgrind > /dev/null; then
    echo "bench/fastpath.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi
. bench/allocators.sh
make -s libumem.so || exit 1
CC=${CC:-cc}
$CC -O2 -g -Wall -Wextra -fno-builtin -o "$work/fastpath" bench/fastpath.c || exit 1
$CC -O2 -g -Wall -Wextra -pthread -o "$work/threadchurn" bench/threadchurn.c || exit 1

count() { # LD_PRELOAD PROGRAM ARG: the instructions callgrind collected
    LD_PRELOAD=$1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$work/$2" "$3" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

# per LD_PRELOAD PROGRAM FEW MANY: the instructions one more step takes.
per() {
    local short long
    short=$(count "$1" "$2" "$3")
    long=$(count "$1" "$2" "$4")
    [ -n "$short" ] && [ -n "$long" ] || return 1
    awk -v s="$short" -v l="$long" -v d=$(($4 - $3)) 'BEGIN { printf "%.1f", (l - s) / d }'
}

declare -A cost thread
names=()
status=0
for a in umem glibc jemalloc mimalloc tcmalloc; do
    if [ $a = umem ]; then lib=$PWD/libumem.so; else lib=${preload[$a]}; fi
    if [ -n "$lib" ] && [ ! -e "$lib" ]; then
        echo "bench/fastpath.sh: $a is not installed; left out" >&2
        continue
    fi
    if ! cost[$a]=$(per "$lib" fastpath 100000 1100000) ||
        ! thread[$a]=$(per "$lib" threadchurn 500 2500); then
        echo "bench/fastpath.sh: a run under $a failed" >&2
        status=1
        continue
    fi
    names+=("$a")
done
# libumem.so sampling guarded blocks (UMEM_GUARD=N) with a draw that never
# comes: what the countdown costs every free and malloc.
sampled=""
if [ -n "${cost[umem]:-}" ] &&
    ! sampled=$(UMEM_GUARD=2000000000 per "$PWD/libumem.so" fastpath 100000 1100000); then
    echo "bench/fastpath.sh: a run under umem with UMEM_GUARD failed" >&2
    status=1
fi
best=""
for a in "${names[@]}"; do
    case $a in umem | glibc) continue ;; esac
    if [ -z "$best" ] || awk -v x="${cost[$a]}" -v y="${cost[$best]}" 'BEGIN { exit !(x < y) }'; then
        best=$a
    fi
done
{
    echo "# The fast path: instructions per free and malloc"
    echo
    echo "A thread frees one of its 64 live blocks and allocates 16 to 271 bytes"
    echo "in its place (bench/fastpath.c), counted by callgrind (bench/fastpath.sh);"
    echo "the loop's own work is included.  Per thread: a thread that starts,"
    echo "allocates one block and ends (bench/threadchurn.c), the C library's work"
    echo "included."
    echo
    echo "| allocator | instructions per free + malloc | per thread started and ended |"
    echo "|---|---:|---:|"
    for a in "${names[@]}"; do echo "| $a | ${cost[$a]} | ${thread[$a]} |"; done
    [ -z "$sampled" ] || echo "| umem, UMEM_GUARD=2000000000 (never drawn) | $sampled | |"
    if [ -n "${cost[umem]:-}" ] && [ -n "$best" ]; then
        echo
        awk -v u="${cost[umem]}" -v b="${cost[$best]}" -v n="$best" \
            'BEGIN { printf "umem / best peer (%s): %.2f; target: umem at most 80 instructions\n", n, u / b }'
    fi
    if [ -n "${thread[umem]:-}" ] && [ -n "${thread[glibc]:-}" ]; then
        awk -v u="${thread[umem]}" -v g="${thread[glibc]}" \
            'BEGIN { printf "a thread: umem / glibc %.2f; target: at most 1.00\n", u / g }'
    fi
} > bench/fastpath.md
cat bench/fastpath.md
exit $status
