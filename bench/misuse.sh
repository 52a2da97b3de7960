#!/usr/bin/env bash
# Misuse of the malloc family caught at once: each kind of bench/misuse.c
# at 8 B, 4 KiB and 256 KiB, under glibc and under libumem.so with no
# setting, with UMEM_DEBUG=1, and with UMEM_GUARD=1 UMEM_DEBUG=1 with the
# guard page after the block and before it (UMEM_GUARD_BELOW=1), and the
# two together (a misuse either run catches).  A misuse is caught when
# the program stops before it prints "unnoticed".  Prints one line per
# misuse and the counts.  Not part of make test.
set -u
cd "$(dirname "$0")/.." || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
${CC:-cc} -O0 -g -fno-builtin -o "$work/misuse" bench/misuse.c || exit 1
lib=$PWD/libumem.so
[ -f "$lib" ] || { echo "misuse.sh: build libumem.so first (make)" >&2; exit 1; }

# caught ENV...: whether the misuse stops the program under those settings.
caught() {
    local out
    out=$(env "$@" timeout -k 5 30 "$work/misuse" "$kind" "$size" 2> /dev/null)
    [ "$out" != unnoticed ]
}

names="glibc libumem debug guard-after guard-below guard-either"
declare -A total
for name in $names; do total[$name]=0; done
printf '%-22s %7s %s\n' misuse size "$names"
for kind in $("$work/misuse" list); do
    for size in 8 4096 262144; do
        row=""
        r_glibc=0 r_libumem=0 r_debug=0 r_after=0 r_below=0
        caught && r_glibc=1
        caught LD_PRELOAD="$lib" && r_libumem=1
        caught LD_PRELOAD="$lib" UMEM_DEBUG=1 && r_debug=1
        caught LD_PRELOAD="$lib" UMEM_DEBUG=1 UMEM_GUARD=1 && r_after=1
        caught LD_PRELOAD="$lib" UMEM_DEBUG=1 UMEM_GUARD=1 UMEM_GUARD_BELOW=1 && r_below=1
        r_either=$((r_after | r_below))
        for v in $r_glibc $r_libumem $r_debug $r_after $r_below $r_either; do
            row="$row $v"
        done
        set -- $row
        for name in $names; do
            total[$name]=$((total[$name] + $1))
            shift
        done
        printf '%-22s %7s%s\n' "$kind" "$size" "$row"
    done
done
count=$(( $("$work/misuse" list | wc -l) * 3 ))
for name in $names; do
    echo "$name: ${total[$name]} of $count caught"
done
