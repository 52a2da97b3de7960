#!/usr/bin/env bash
# UMEM_DEBUG with no tool: each bug tests/debug_bugs plants, on a locked,
# a UMEM_CACHED and a UMEM_NOLOCK heap.  The eight it must catch end the
# program with one "umem: " line naming the block and what was done to
# it (or, for a leak, list the block at umem_destroy with its allocating
# function); the three only a tool can see (reads) run to the end.  Then
# libumem.so with UMEM_DEBUG=1 on a program that overruns a malloc'd
# block and on one that leaks.  (valgrind and AddressSanitizer on the same
# bugs: tests/check.sh.)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bugs.sh"
PROG=tests/debug_bugs
if [ ! -x $PROG ]; then
    not_ok "$PROG is built (make test builds it)"
    exit 1
fi

declare -A want=([overrun]="written past its end (overrun)" [underrun]="written before its start (underrun)"
    [write-after-free]="was written after its free" [stale-after-realloc]="was written after its free"
    [memalign-overrun]="written past its end (overrun)" [double-free]="freed already (double free)"
    [foreign-free]="not a block from umem_alloc" [leak]="leak: 100 bytes at")
# "exit": the program never calls umem_destroy; the heap is checked at
# exit, and a leak makes the exit status 23.
for mode in debug exit; do
for kind in locked cached nolock; do
    found=0
    leak_rc=0
    [ $mode = exit ] && leak_rc=23
    for bug in $BUGS; do
        (timeout -k 5 60 $PROG $kind $bug $mode; exit $?) > "$TMP/out" 2>&1
        rc=$?
        if [ -n "${want[$bug]:-}" ]; then
            caught "$TMP/out" && grep -q -- "${want[$bug]}" "$TMP/out"
            ok_report=$?
            if [ $bug = leak ]; then
                # Listed, not fatal, the allocating function named.
                [ $ok_report -eq 0 ] && [ $rc -eq $leak_rc ] && grep -q 'leak_one_block' "$TMP/out"
            else
                [ $ok_report -eq 0 ] && [ $rc -eq 134 ] &&
                    [ "$(grep -c '^umem: ' "$TMP/out")" -eq 1 ]
            fi
            if [ $? -eq 0 ]; then
                found=$((found + 1))
                ok "UMEM_DEBUG ($mode), $kind heap: $bug is reported, naming the block"
            else
                not_ok "UMEM_DEBUG ($mode), $kind heap: $bug is reported, naming the block" \
                    "exit $rc; $(head -c 400 "$TMP/out")"
            fi
        else
            check "UMEM_DEBUG ($mode), $kind heap: $bug (a read: for the tools) runs to the end" \
                test $rc -eq 0
        fi
    done
    check "UMEM_DEBUG ($mode), $kind heap: 8 of the 11 bugs caught with no tool" test $found -eq 8
done
done

# UMEM_EXITCODE: the status of a process that leaked; 0 leaves its own.
for code in 0 7; do
    (UMEM_EXITCODE=$code $PROG locked leak exit; exit $?) > "$TMP/out" 2>&1
    rc=$?
    check "UMEM_EXITCODE=$code: a leak at exit makes the status $code" \
        eval '[ $rc -eq $code ] && grep -q "^umem: leak: 100 bytes at" "$TMP/out"'
done
(UMEM_EXITCODE=7 $PROG locked overread exit; exit $?) > "$TMP/out" 2>&1
check "UMEM_EXITCODE: a program that leaked nothing keeps its status" test $? -eq 0

# A heap without UMEM_DEBUG is not slowed by it: the same bugs go unseen.
$PROG locked overrun > "$TMP/out" 2>&1
check "without UMEM_DEBUG an overrun into the slack goes unseen" test $? -eq 0

# libumem.so: UMEM_DEBUG=1 in the environment.
cat > "$TMP/overrun.c" <<'C'
#include <stdlib.h>
#include <string.h>
int main(void) { char *volatile p = malloc(24); memset(p, 'x', 25); free(p); return 0; }
C
cat > "$TMP/leak.c" <<'C'
#include <stdlib.h>
#include <stdio.h>
char *volatile kept;
int main(void) { kept = malloc(4321); kept = NULL; puts("done"); return 0; }
C
${CC:-cc} -O0 -fno-builtin -o "$TMP/overrun" "$TMP/overrun.c" &&
    ${CC:-cc} -O0 -fno-builtin -o "$TMP/leak" "$TMP/leak.c"
(UMEM_DEBUG=1 LD_PRELOAD=$PWD/libumem.so "$TMP/overrun"; exit $?) > /dev/null 2> "$TMP/err"
rc=$?
check "libumem.so, UMEM_DEBUG=1: an overrun of a malloc'd block ends the program" \
    eval '[ $rc -eq 134 ] && grep -q "^umem: free of 0x[0-9a-f]* (24 bytes): written past its end (overrun), at byte 24$" "$TMP/err"'
LD_PRELOAD=$PWD/libumem.so "$TMP/overrun" > /dev/null 2>&1
check "libumem.so without UMEM_DEBUG: the same program runs" test $? -eq 0
out=$(UMEM_DEBUG=1 LD_PRELOAD=$PWD/libumem.so "$TMP/leak" 2> "$TMP/err")
rc=$?
check "libumem.so, UMEM_DEBUG=1: a block still allocated at exit is listed with its size" \
    eval '[ $rc -eq 0 ] && [ "$out" = done ] && grep -q "^umem: still allocated at exit: 4321 bytes at 0x" "$TMP/err"'
out=$(UMEM_DEBUG=1 LD_PRELOAD=$PWD/libumem.so ./sharedhash samples/xs1M.bin 2> "$TMP/err")
check "libumem.so, UMEM_DEBUG=1: the hasher's signature is unchanged" \
    test "$out" = "$(./sharedhash samples/xs1M.bin)"
(UMEM_DEBUG=1 UMEM_EXITCODE=5 LD_PRELOAD=$PWD/libumem.so "$TMP/leak"; exit $?) > /dev/null 2>&1
check "libumem.so, UMEM_DEBUG=1 UMEM_EXITCODE=5: a program that leaked exits 5" test $? -eq 5
cat > "$TMP/late.c" <<'C'
#include <stdlib.h>
char *volatile p;
int main(void) { p = malloc(40); free(p); p[3] = 1; return 0; }
C
${CC:-cc} -O0 -fno-builtin -o "$TMP/late" "$TMP/late.c"
(UMEM_DEBUG=1 LD_PRELOAD=$PWD/libumem.so "$TMP/late"; exit $?) > /dev/null 2> "$TMP/err"
rc=$?
check "libumem.so, UMEM_DEBUG=1: a write after free is reported at exit" \
    eval '[ $rc -eq 134 ] && grep -q "^umem: block 0x[0-9a-f]* (40 bytes) was written after its free, at byte 3$" "$TMP/err"'
