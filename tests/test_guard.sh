#!/usr/bin/env bash
# UMEM_GUARD: each bug tests/debug_bugs plants, on a heap whose every block
# is guarded, with the guard page after the blocks and before them
# (UMEM_GUARD_BELOW=1), with and without UMEM_DEBUG, each block right
# against its guard page (UMEM_GUARD_ALIGN=1).  A fault in a guard
# page or a freed block's page ends the program with SIGSEGV and one
# "umem: " line (what, the block, its size, the offset), and the stack
# umem-symbolize resolves names the guilty line; a misuse found at free
# (slack written, a double free) ends it with abort() and names the
# guilty function.  Then a program's own SIGSEGV handler, a fork child,
# a zero-size block, the sampling, and libumem.so with UMEM_GUARD.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bugs.sh"
PROG=tests/debug_bugs
GPROG=tests/guard_prog
if [ ! -x $PROG ] || [ ! -x $GPROG ]; then
    not_ok "$PROG and $GPROG are built (make test builds them)"
    exit 1
fi
have addr2line binutils "umem-symbolize resolves the reports' frames" || exit 0

# What each placement reports: "fault:SUMMARY" (SIGSEGV, the guilty line
# named) or "free:SUMMARY" (abort(), the guilty function named); none: the
# bug runs to the end (without UMEM_DEBUG the leak does too).
declare -A after=([overrun]="fault:overflow: block B (100 bytes), at offset 100"
    [underrun]="free:free of B (100 bytes): written before its start (underrun), at byte -1"
    [overread]="fault:overflow: block B (100 bytes), at offset 100"
    [memalign-overrun]="free:free of B (100 bytes): written past its end (overrun), at byte 100")
declare -A below=([overrun]="free:free of B (100 bytes): written past its end (overrun), at byte 100"
    [underrun]="fault:underflow: block B (100 bytes), at offset -1"
    [memalign-overrun]="free:free of B (100 bytes): written past its end (overrun), at byte 100")
declare -A both=([read-after-free]="fault:use after free: block B (100 bytes), at offset 10"
    [write-after-free]="fault:use after free: block B (100 bytes), at offset 10"
    [stale-after-realloc]="fault:use after free: block B (100 bytes), at offset 10"
    [double-free]="free:free of B (100 bytes): freed already (double free)"
    [foreign-free]="free:free of .*B")

# judge BUG WANT: whether $TMP/out, a run's output with $rc its status,
# reports the bug as WANT says.
judge() {
    local bug=$1 how=${2%%:*} summary=${2#*:} block line func
    block=$(sed -n 's/^block \(0x[0-9a-f]*\) line [0-9]*$/\1/p' "$TMP/out")
    line=$(sed -n 's/^block 0x[0-9a-f]* line \([0-9]*\)$/\1/p' "$TMP/out")
    func=${bug//-/_}
    summary=${summary//B/$block}
    ./umem-symbolize "$TMP/out" > "$TMP/sym"
    [ "$(grep -c '^umem: ' "$TMP/out")" -eq 1 ] && grep -q "^umem: $summary" "$TMP/out" ||
        return 1
    case $how in
    fault) [ $rc -eq 139 ] && grep -q " at .*debug_bugs\.c:$line\b" "$TMP/sym" ;;
    free) [ $rc -eq 134 ] && { [ $bug = foreign-free ] || grep -q "#[0-9] $func at " "$TMP/sym"; } ;;
    esac
}

for place in after below; do
    for mode in guard guard-debug; do
        found=0
        for bug in $BUGS; do
            name="UMEM_GUARD ($place, $mode): $bug"
            want=${both[$bug]:-}
            [ $place = after ] && want=${want:-${after[$bug]:-}}
            [ $place = below ] && want=${want:-${below[$bug]:-}}
            below_set=0
            [ $place = below ] && below_set=1
            (UMEM_GUARD_ALIGN=1 UMEM_GUARD_BELOW=$below_set \
                timeout -k 5 60 $PROG locked $bug $mode; exit $?) > "$TMP/out" 2>&1
            rc=$?
            if [ $bug = leak ] && [ $mode = guard-debug ]; then
                check "$name is listed at umem_destroy" eval '[ $rc -eq 0 ] &&
                    grep -q "^umem: leak: 100 bytes at 0x[0-9a-f]* (guarded)$" "$TMP/out" &&
                    ./umem-symbolize "$TMP/out" | grep -q " leak_one_block at "'
                found=$((found + 1))
            elif [ -z "$want" ]; then
                check "$name runs to the end (not for a guard)" test $rc -eq 0
            elif judge $bug "$want"; then
                found=$((found + 1))
                ok "$name is reported, naming the block, the offset and the culprit"
            else
                not_ok "$name is reported, naming the block, the offset and the culprit" \
                    "exit $rc; want ${want#*:}" "$(head -c 600 "$TMP/out")"
            fi
        done
        expect=8
        [ $place = after ] && expect=9
        [ $mode = guard-debug ] && expect=$((expect + 1))
        check "UMEM_GUARD ($place, $mode): $expect of the 11 bugs caught" test $found -eq $expect
    done
done

# UMEM_GUARD_ALIGN=1 above: a block of 100 bytes ends against the guard.
# By default it is 8-byte aligned, 4 bytes short of it: an overrun by one
# byte is found at free.
(timeout -k 5 60 $PROG locked overrun guard; exit $?) > "$TMP/out" 2>&1
rc=$?
check "UMEM_GUARD, 8-byte alignment: a 1-byte overrun of 100 bytes is found at free" \
    judge overrun "free:free of B (100 bytes): written past its end (overrun), at byte 100"

# A program's own SIGSEGV handler: installed before the heap, umem's
# passes it the program's own faults; installed after, it takes them all.
for kind in chain chain-info; do
    (timeout -k 5 60 $GPROG $kind; exit $?) > "$TMP/out" 2>&1
    rc=$?
    block=$(sed -n 's/^block \(0x[0-9a-f]*\) line [0-9]*$/\1/p' "$TMP/out")
    check "a handler of the program's own ($kind), installed first, still sees its faults; ours are reported" \
        eval '[ $rc -eq 139 ] && grep -q "^own faults 1$" "$TMP/out" &&
        grep -q "^umem: use after free: block $block (64 bytes), at offset 7$" "$TMP/out"'
done
(timeout -k 5 60 $GPROG after; exit $?) > "$TMP/out" 2>&1
check "a handler of the program's own, installed after the heap, sees its faults" \
    eval '[ $? -eq 0 ] && grep -q "^own faults 1$" "$TMP/out"'

(timeout -k 5 60 $GPROG fork; exit $?) > "$TMP/out" 2>&1
rc=$?
line=$(sed -n 's/^block 0x[0-9a-f]* line \([0-9]*\)$/\1/p' "$TMP/out")
check "a fork child's use after free is reported in the child; the parent goes on" \
    eval '[ $rc -eq 0 ] && grep -q "^child signal 11$" "$TMP/out" &&
    grep -q "^umem: use after free: block 0x[0-9a-f]* (64 bytes), at offset 7$" "$TMP/out" &&
    ./umem-symbolize "$TMP/out" | grep -q " use_after_free at .*guard_prog\.c:$line\b"'

(timeout -k 5 60 $GPROG zero; exit $?) > "$TMP/out" 2>&1
rc=$?
block=$(sed -n 's/^block \(0x[0-9a-f]*\) line [0-9]*$/\1/p' "$TMP/out")
check "a guarded block of 0 bytes faults when read" \
    eval '[ $rc -eq 139 ] && grep -q "^umem: overflow: block $block (0 bytes), at offset 0$" "$TMP/out"'

(UMEM_GUARD=2 UMEM_GUARD_SLOTS=1 timeout -k 5 60 $GPROG first-under; exit $?) > "$TMP/out" 2>&1
rc=$?
block=$(sed -n 's/^block \(0x[0-9a-f]*\) line [0-9]*$/\1/p' "$TMP/out")
check "sampling: an underflow of the block in the first slot, onto the arena's first page, is reported" \
    eval '[ $rc -eq 139 ] && grep -q "^umem: underflow: block $block (4096 bytes), at offset -1$" "$TMP/out"'

for mode in 1 2; do
    (UMEM_GUARD=$mode UMEM_GUARD_SLOTS=1 timeout -k 5 60 $GPROG first-under-far; exit $?) > "$TMP/out" 2>&1
    rc=$?
    block=$(sed -n 's/^block \(0x[0-9a-f]*\) line [0-9]*$/\1/p' "$TMP/out")
    check "UMEM_GUARD=$mode: an underflow by 1 MiB of the first block, into the arena's lead, is reported" \
        eval '[ $rc -eq 139 ] && grep -q "^umem: underflow: block $block (4096 bytes), at offset -1048576$" "$TMP/out"'
done

out=$(env -u UMEM_GUARD timeout -k 5 60 $GPROG calls 2>&1)
check "guarded blocks: sizes, alignment, realloc, memalign, threads, on every kind of heap" \
    test "$out" = "calls right"

# Four threads drawing one block in two share four slots: a slot is
# taken, opened, closed and taken again under them all the time.
out=$(UMEM_GUARD=2 UMEM_GUARD_SLOTS=4 timeout -k 5 60 $GPROG threads 2>&1)
check "UMEM_GUARD=2, four slots: four threads allocate and free at once" \
    test "$out" = "threads right"

# Sampling: 1 in 100 of 100000 blocks, drawn at random (a mean of 1000;
# outside 500 to 2000 only by a chance far below one in a billion).
n=$(UMEM_GUARD=100 $GPROG sample 100000 | sed -n 's/^guarded //p')
check "UMEM_GUARD=100 guards about 1 block in 100 (got ${n:-none} of 100000)" \
    eval '[ -n "$n" ] && [ "$n" -ge 500 ] && [ "$n" -le 2000 ]'
# A block drawn while every slot holds a live one is not guarded: 16
# slots, about 1,000 draws among 10,000 blocks held.
n=$(UMEM_GUARD=10 UMEM_GUARD_SLOTS=16 $GPROG hold 10000 | sed -n 's/^guarded //p')
check "UMEM_GUARD=10, UMEM_GUARD_SLOTS=16: 16 blocks held are guarded at most (got ${n:-none})" \
    test "$n" = 16
n=$($GPROG sample 1000 | sed -n 's/^guarded //p')
check "UMEM_GUARD unset: the flag guards every block (got ${n:-none} of 1000)" test "$n" = 1000

# libumem.so: UMEM_GUARD=1 in the environment.
cat > "$TMP/misuse.c" <<'C'
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    char *volatile p = malloc(24);
    if (!strcmp(argv[1], "uaf")) { free(p); p[3] = 1; }
    if (!strcmp(argv[1], "memcpy")) memcpy(p, argv[0], 25);
    if (!strcmp(argv[1], "zero")) { char *volatile z = malloc(0); z[0] = 1; }
    if (!strcmp(argv[1], "under")) { char *volatile q = malloc(4096); q[-1] = 1; }
    if (!strcmp(argv[1], "sample")) {
        /* A guarded 24-byte block ends against its page: 8 bytes past a
         * multiple of 16, where no pooled slot starts.  The first one is
         * used after its free, and after all the others', of 40 bytes:
         * had one taken its slot, the report would name that one. */
        long guarded = 0;
        char *first = NULL;
        for (int i = 0; i < 100000; i++) {
            char *q = malloc(first ? 40 : 24), *r = malloc(200);
            if ((unsigned long)q % 16 == 8 && guarded++ == 0)
                first = q;
            free(q);
            free(r);
        }
        printf("guarded %ld\nfirst %p\n", guarded, (void *)first);
        fflush(stdout);
        if (first) first[5] = 1;
    }
    puts("unnoticed");
    return 0;
}
C
${CC:-cc} -O0 -g -fno-builtin -o "$TMP/misuse" "$TMP/misuse.c"
for m in uaf:"use after free: block 0x[0-9a-f]* (24 bytes), at offset 3" \
    memcpy:"overflow: block 0x[0-9a-f]* (24 bytes), at offset 24" \
    zero:"overflow: block 0x[0-9a-f]* (0 bytes), at offset 0" \
    under:"underflow: block 0x[0-9a-f]* (4096 bytes), at offset -1"; do
    (UMEM_GUARD=1 LD_PRELOAD=$PWD/libumem.so timeout -k 5 60 "$TMP/misuse" ${m%%:*}; exit $?) \
        > "$TMP/out" 2>&1
    rc=$?
    check "libumem.so, UMEM_GUARD=1: ${m%%:*} faults, reported and resolved to main" \
        eval '[ $rc -eq 139 ] && grep -q "^umem: ${m#*:}$" "$TMP/out" &&
        ! grep -q unnoticed "$TMP/out" && ! grep -q "#[0-9].*libumem\.so" "$TMP/out" &&
        ./umem-symbolize "$TMP/out" | grep -q "#[0-9] main at .*misuse\.c:"'
done
# One in N: malloc's countdown and free's slot path in libumem.so, beside
# the guarded blocks it draws (bounds as for the heap's own above).  The
# first block guarded is freed at once, the others after it, each in a
# slot of its own while the ring of 4096 lasts: its slot stays no-access.
(UMEM_GUARD=100 UMEM_GUARD_SLOTS=4096 LD_PRELOAD=$PWD/libumem.so \
    timeout -k 5 60 "$TMP/misuse" sample; exit $?) > "$TMP/out" 2>&1
rc=$?
n=$(sed -n 's/^guarded //p' "$TMP/out")
first=$(sed -n 's/^first 0x//p' "$TMP/out")
check "libumem.so, UMEM_GUARD=100: about 1 block in 100 guarded (got ${n:-none} of 100000)" \
    eval '[ -n "$n" ] && [ "$n" -ge 500 ] && [ "$n" -le 2000 ]'
check "libumem.so, UMEM_GUARD=100: a sampled block's use after free is reported, after 500 or more others" \
    eval '[ $rc -eq 139 ] && [ -n "$first" ] &&
        grep -q "^umem: use after free: block 0x$first (24 bytes), at offset 5$" "$TMP/out"'
out=$(UMEM_GUARD=1 LD_PRELOAD=$PWD/libumem.so ./sharedhash samples/xs1M.bin 2> "$TMP/err")
check "libumem.so, UMEM_GUARD=1: the hasher's signature is unchanged" \
    test "$out" = "$(./sharedhash samples/xs1M.bin)"
