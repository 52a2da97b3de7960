#!/usr/bin/env bash
# libumem.so as a drop-in malloc beyond the blocks: mallinfo2, mallinfo,
# malloc_trim, malloc_stats, malloc_info and mallopt answered from umem's
# own figures, glibc's __libc_* entry points, C23's sized frees and their
# misuse, UMEM_STATS=json, and the pkg-config files of a staged install.
# The program it runs is tests/libumem_info (see its header), under
# libumem and under glibc.
. "$(dirname "$0")/lib.sh"

LIB=$PWD/libumem.so
PROG=tests/libumem_info
ulimit -c 0 # the misuse cases abort

for f in "$LIB" "$PROG"; do
    if [ ! -e "$f" ]; then
        not_ok "$f is built (make test builds it)"
        exit 1
    fi
done

# suite LABEL [VAR=VALUE...]: the program's figures tests, labelled; a
# crash or a non-zero exit without a not ok line is one more not ok.
suite() {
    local label=$1
    shift
    timeout 300 env "$@" "$PROG" figures > "$TMP/out" 2> "$TMP/err"
    local rc=$?
    sed "s/^\(\(not \)\{0,1\}ok - \)/\1[$label] /" "$TMP/out"
    if ! grep -q '^ok - ' "$TMP/out" || { [ $rc -ne 0 ] && ! grep -q '^not ok - ' "$TMP/out"; }; then
        not_ok "[$label] figures runs to the end" "exit status $rc"
    fi
    sed "s/^/  [$label] /" "$TMP/err" | head -40 >&2
}

suite libumem LD_PRELOAD="$LIB" LIBUMEM=1
reference suite glibc

# ---- uordblks against UMEM_STATS=json, read at the same moment ----

run env LD_PRELOAD="$LIB" UMEM_STATS=json "$PROG" in-use
stats_in_use=$(grep -o '"bytes_in_use": [0-9]*' "$TMP/err" | grep -o '[0-9]*$')
check "UMEM_STATS=json: one line, one object" \
    eval '[ $rc -eq 0 ] && [ "$(grep -c . "$TMP/err")" -eq 1 ] && grep -q "^{\"pid\": [0-9]*, .*}\$" "$TMP/err"'
if [ $rc -eq 0 ] && [ -n "$stats_in_use" ] && [ "$out" = "$stats_in_use" ]; then
    ok "mallinfo2().uordblks is the bytes in use UMEM_STATS reports"
else
    not_ok "mallinfo2().uordblks is the bytes in use UMEM_STATS reports" \
        "uordblks '$out', UMEM_STATS bytes_in_use '$stats_in_use' (rc $rc)"
fi
if [ -n "$stats_in_use" ] && [ "$stats_in_use" -ge 1000000 ] && [ "$stats_in_use" -le 1250000 ]; then
    ok "10,000 blocks of 100 bytes: between 1 and 1.25 times the bytes asked for"
else
    not_ok "10,000 blocks of 100 bytes: between 1 and 1.25 times the bytes asked for" \
        "bytes_in_use '$stats_in_use'"
fi
if have python3 python3 "UMEM_STATS=json parses as JSON, with every figure of UMEM_STATS=1"; then
    names_json=$(python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin)))' < "$TMP/err")
    run env LD_PRELOAD="$LIB" UMEM_STATS=1 "$PROG" in-use
    names_text=$(awk 'NR > 1 { printf "%s ", $1 }' "$TMP/err")
    check "UMEM_STATS=json parses as JSON, with every figure of UMEM_STATS=1" \
        [ "$names_json" = "pid ${names_text% }" ]
fi

# ---- sized frees: a size or alignment the block was not allocated with ----

# misuse NAME MODE EXPECT [VAR=VALUE...]: EXPECT "abort" (one line naming
# the pointer, then abort) or "fine" (exit 0, nothing on stderr).
misuse() {
    local name=$1 mode=$2 expect=$3
    shift 3
    run env LD_PRELOAD="$LIB" "$@" "$PROG" "$mode" 2> /dev/null # the shell's own "Aborted"
    if [ "$expect" = abort ] && [ $rc -eq 134 ] && [ -n "$out" ] &&
        [ "$(grep -c . "$TMP/err")" -eq 1 ] && grep -q "^umem: free_.*$out\$" "$TMP/err"; then
        ok "$name"
    elif [ "$expect" = fine ] && [ $rc -eq 0 ] && [ -z "$err" ]; then
        ok "$name"
    else
        not_ok "$name" "rc $rc, stdout '$out', stderr '$err'"
    fi
}
run env LD_PRELOAD="$LIB" LIBUMEM=1 UMEM_DEBUG=1 "$PROG" sized
check "UMEM_DEBUG=1: sized frees with the sizes asked for (0 to 131071, calloc, aligned) pass" \
    eval '[ $rc -eq 0 ] && [ "$out" = "ok - sized_frees_free" ]'
misuse "free_sized with more than the block holds: one line, abort" sized-over abort
misuse "free_sized with more than asked for, UMEM_DEBUG: one line, abort" sized-over abort \
    UMEM_DEBUG=1
misuse "free_sized with less than asked for, UMEM_DEBUG: one line, abort" sized-under abort \
    UMEM_DEBUG=1
misuse "free_sized with less than asked for, within the block: freed" sized-under fine
misuse "free_aligned_sized with an alignment not a power of two: one line, abort" \
    sized-align abort

# ---- pkg-config, against a staged install ----

dest=$TMP/stage
prefix=/opt/umem-pc
if have pkg-config pkgconf "pkg-config builds against the installed umem.h and libumem.so"; then
    make -s install DESTDIR="$dest" PREFIX="$prefix" > "$TMP/log" 2>&1
    check "make install installs umem.pc and libumem.pc" \
        eval '[ -f "$dest$prefix/lib/pkgconfig/umem.pc" ] && [ -f "$dest$prefix/lib/pkgconfig/libumem.pc" ]'
    pc() { PKG_CONFIG_PATH=$dest$prefix/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest pkg-config "$@"; }
    cat > "$TMP/heap.c" << 'EOF_C'
#include <stdio.h>
#include <umem.h>
int main(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    char *p = h ? umem_alloc(h, 100) : NULL;
    if (!p)
        return 1;
    umem_free(h, p);
    umem_destroy(h);
    puts("heap");
    return 0;
}
EOF_C
    if ${CC:-cc} -Wall -Wextra -Werror -o "$TMP/heap" "$TMP/heap.c" $(pc --cflags --libs umem) \
        2> "$TMP/log" && [ "$("$TMP/heap")" = heap ]; then
        ok "pkg-config --cflags --libs umem: builds a program on the installed umem.h"
    else
        not_ok "pkg-config --cflags --libs umem: builds a program on the installed umem.h" \
            "$(pc --cflags --libs umem)" "$(cat "$TMP/log")"
    fi
    cat > "$TMP/linked.c" << 'EOF_C'
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    void *volatile p = malloc(100000);
    struct mallinfo2 m = mallinfo2();
    printf("%d\n", p != NULL && m.uordblks >= 100000);
    free(p);
    return 0;
}
EOF_C
    if ${CC:-cc} -Wall -Wextra -Werror -o "$TMP/linked" "$TMP/linked.c" \
        $(pc --cflags --libs libumem) 2> "$TMP/log"; then
        run env LD_LIBRARY_PATH="$dest$prefix/lib" UMEM_STATS=1 "$TMP/linked"
        check "pkg-config --libs libumem: a program linked with it allocates from umem" \
            eval '[ "$out" = 1 ] && grep -q "^libumem statistics" "$TMP/err"'
    else
        not_ok "pkg-config --libs libumem: a program linked with it allocates from umem" \
            "$(pc --cflags --libs libumem)" "$(cat "$TMP/log")"
    fi
    check "pkg-config --variable=preload libumem names the installed library" \
        [ "$(pc --variable=preload libumem)" = "$dest$prefix/lib/libumem.so" ]
    make -s uninstall DESTDIR="$dest" PREFIX="$prefix" > "$TMP/log" 2>&1
    check "make uninstall removes the pkg-config files" [ ! -e "$dest$prefix/lib/pkgconfig" ]
fi
