#!/usr/bin/env bash
# A long-lived cache's memory under each allocator (bench/churn.c): load
# values of 64 B to 4 KiB, delete 70% of them, load values of 256 B to
# 16 KiB, free everything; after each phase, resident memory over the
# bytes the program holds.  Memory does not depend on the machine's load:
# one run of each allocator is enough (they are deterministic).
#
#   CHURN_VALUES  values of the first load (default 300000)
#
# Also runs libumem.so built with pools for requests up to 1 KiB
# (-DUMEM_POOL_SHIFT=10, the first-fit heap and the blocks threads keep for
# the rest) as "umem-1k", and with pools up to 64 KiB (-DUMEM_POOL_SHIFT=16,
# no blocks kept) as "umem-64k".  Writes bench/churn.md; exit status 1
# when a run failed.
set -u
cd "$(dirname "$0")/.." || exit 1
VALUES=${CHURN_VALUES:-300000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. bench/allocators.sh
make -s libumem.so || exit 1
CC=${CC:-cc}
$CC -O2 -Wall -Wextra -o "$work/churn" bench/churn.c -lm || exit 1
preload[umem]=$PWD/libumem.so
for v in 1k:10 64k:16; do
    $CC -O2 -g -Wall -Wextra -DUMEM_POOL_SHIFT=${v#*:} -shared -fPIC -fvisibility=hidden \
        -ftls-model=initial-exec -fno-builtin-malloc -fno-builtin-calloc -fno-builtin-realloc \
        -fno-builtin-free -pthread -o "$work/libumem-${v%:*}.so" libumem.c || exit 1
    preload[umem-${v%:*}]=$work/libumem-${v%:*}.so
done

declare -A ratio left
names=()
status=0
for a in umem umem-1k umem-64k glibc jemalloc mimalloc tcmalloc; do
    lib=${preload[$a]}
    if [ -n "$lib" ] && [ ! -e "$lib" ]; then
        echo "bench/churn.sh: $a is not installed; left out" >&2
        continue
    fi
    if ! LD_PRELOAD=$lib "$work/churn" "$VALUES" > "$work/out.$a"; then
        echo "bench/churn.sh: the run under $a failed" >&2
        status=1
        continue
    fi
    names+=("$a")
    while read -r phase _ held _ rss; do
        if [ "$phase" = free ]; then
            left[$a]=$(awk -v r="$rss" 'BEGIN { printf "%.1f", r / 1048576 }')
        else
            ratio[$a.$phase]=$(awk -v r="$rss" -v h="$held" 'BEGIN { printf "%.2f", r / h }')
        fi
    done < "$work/out.$a"
done
best=""
for a in "${names[@]}"; do
    case $a in umem* | glibc) continue ;; esac
    if [ -z "$best" ] ||
        awk -v x="${ratio[$a.reload]}" -v y="${ratio[$best.reload]}" 'BEGIN { exit !(x < y) }'; then
        best=$a
    fi
done
{
    echo "# Churn: resident memory over the bytes held"
    echo
    echo "A cache loads $VALUES values of 64 B to 4 KiB, deletes 70% at random, loads"
    echo "$((VALUES / 3)) values of 256 B to 16 KiB, then frees everything"
    echo "(bench/churn.c, bench/churn.sh).  Lower is tighter; the last column is the"
    echo "resident memory left when everything is freed."
    echo
    echo "| allocator | after load | after delete | after reload | MiB left after free |"
    echo "|---|---:|---:|---:|---:|"
    for a in "${names[@]}"; do
        echo "| $a | ${ratio[$a.load]} | ${ratio[$a.delete]} | ${ratio[$a.reload]} | ${left[$a]} |"
    done
    if [ -n "${ratio[umem.reload]:-}" ] && [ -n "$best" ]; then
        echo
        awk -v u="${ratio[umem.reload]}" -v b="${ratio[$best.reload]}" -v n="$best" \
            'BEGIN { printf "after reload, umem / best peer (%s): %.2f; target: at most 1.00\n", n, u / b }'
    fi
} > bench/churn.md
cat bench/churn.md
exit $status
