#!/usr/bin/env bash
# libumem.so as the malloc of a program (LD_PRELOAD): what it exports,
# calloc that cannot call itself, the malloc family against glibc's
# behaviour, allocations made while the heap is created, threads that
# exit, fork from a threaded program, key destructors that allocate late,
# memory given back, misuse, and UMEM_STATS.  The programs it runs are
# tests/libumem_prog (see its header) and tests/libumem_boot.so.
. "$(dirname "$0")/lib.sh"

LIB=$PWD/libumem.so
PROG=tests/libumem_prog
BOOT=$PWD/tests/libumem_boot.so
ulimit -c 0 # the misuse cases abort

for f in "$LIB" "$PROG" "$BOOT"; do
    if [ ! -e "$f" ]; then
        not_ok "$f is built (make test builds it)"
        exit 1
    fi
done

# ---- what the library is made of ----

want="__libc_calloc __libc_free __libc_malloc __libc_memalign __libc_pvalloc __libc_realloc"
want="$want __libc_valloc aligned_alloc calloc free free_aligned_sized free_sized mallinfo"
want="$want mallinfo2 malloc malloc_info malloc_stats malloc_trim malloc_usable_size mallopt"
want="$want memalign posix_memalign pvalloc realloc reallocarray valloc"
got=$(nm -D --defined-only "$LIB" | awk '{ print $3 }' | LC_ALL=C sort | tr '\n' ' ')
check "libumem.so exports the malloc family and nothing else" [ "$got" = "$want " ]

# calloc must not call calloc or malloc (a compiler may turn malloc +
# memset into calloc): neither in the Makefile's build nor in a plain -O3
# build without -fno-builtin, which must also pass the api tests below.
mkdir "$TMP/plain"
PLAIN=$TMP/plain/libumem.so
if ! ${CC:-cc} -O3 -shared -fPIC -pthread -o "$PLAIN" libumem.c 2> "$TMP/log"; then
    not_ok "libumem.c builds with plain -O3" "$(cat "$TMP/log")"
    PLAIN=
fi
calls_in_calloc() { # LIBRARY: the calls and jumps calloc's code makes to the malloc family
    objdump -d --no-show-raw-insn --disassemble=calloc "$1" |
        grep -E '(call|jmp)[a-z]* .*<(calloc|malloc|__libc_calloc|__libc_malloc)(@plt)?>'
}
if have objdump binutils "calloc calls neither calloc nor malloc"; then
    for so in "$LIB" $PLAIN; do
        name="the Makefile's build"
        [ "$so" = "$LIB" ] || name="a plain -O3 build"
        if objdump -d --disassemble=calloc "$so" | grep -q '<calloc>:'; then
            calls=$(calls_in_calloc "$so")
            check "calloc in $name calls neither calloc nor malloc" [ -z "$calls" ]
        else
            not_ok "objdump shows calloc in $name"
        fi
    done
fi

# ---- the test program, under libumem and under glibc ----

# suite LABEL MODE [VAR=VALUE...]: runs the program in MODE with the
# variables set; passes its ok / not ok lines on, labelled.  A crash, a
# hang or a non-zero exit without a not ok line is one more not ok.
suite() {
    local label=$1 mode=$2
    shift 2
    timeout 300 env "$@" "$PROG" "$mode" > "$TMP/out" 2> "$TMP/err"
    local rc=$?
    sed "s/^\(\(not \)\{0,1\}ok - \)/\1[$label] /" "$TMP/out"
    if ! grep -q '^ok - ' "$TMP/out" || { [ $rc -ne 0 ] && ! grep -q '^not ok - ' "$TMP/out"; }; then
        not_ok "[$label] $mode runs to the end" "exit status $rc"
    fi
    if [ $rc -ne 0 ] || [ "$mode" = rss ]; then
        sed 's/^/  /' "$TMP/err" | head -40 >&2
    fi
}

suite libumem api LD_PRELOAD="$LIB" LIBUMEM=1
[ -z "$PLAIN" ] || suite "libumem -O3 plain" api LD_PRELOAD="$PLAIN" LIBUMEM=1
reference suite glibc api
suite libumem threads LD_PRELOAD="$LIB" LIBUMEM=1
reference suite glibc threads
suite libumem fork LD_PRELOAD="$LIB" LIBUMEM=1
suite libumem destructors LD_PRELOAD="$LIB" LIBUMEM=1
reference suite glibc destructors
suite libumem rss LD_PRELOAD="$LIB" LIBUMEM=1

# ---- a heap made after 40 pthread keys ----
# A key past the 32nd makes pthread_setspecific allocate, in every thread
# that sets it: the heap's own key must not send its cache's set-up round
# and round through malloc.
cat > "$TMP/late.c" << 'EOF_C'
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
static void *work(void *arg)
{
    for (int i = 0; i < 1000; i++)
        free(malloc((size_t)i % 500 + 1));
    return arg;
}
int main(void)
{
    pthread_key_t key;
    for (int i = 0; i < 40; i++)
        if (pthread_key_create(&key, NULL) != 0)
            return 2;
    work(NULL); /* the heap, and its key, are made here */
    pthread_t tid[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&tid[i], NULL, work, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(tid[i], NULL);
    puts("done");
    return 0;
}
EOF_C
if ${CC:-cc} -O1 -pthread -o "$TMP/late" "$TMP/late.c" 2> "$TMP/late.log"; then
    run env LD_PRELOAD="$LIB" "$TMP/late"
    check "a heap made after 40 pthread keys serves every thread" [ $rc -eq 0 -a "$out" = done ]
else
    not_ok "a heap made after 40 pthread keys serves every thread" "$(cat "$TMP/late.log")"
fi

# ---- allocations while the heap is being created ----

run env LD_PRELOAD="$LIB $BOOT" UMEM_STATS=1 "$PROG" touch
boot_bytes=$(awk '$1 == "boot_bytes" { print $2 }' <<< "$err")
if [ $rc -eq 0 ] && grep -Eq '^libumem_boot: [1-9][0-9]* checks, 0 failed$' <<< "$err" &&
    [ "${boot_bytes:-0}" -gt 0 ]; then
    ok "allocations made while the heap is created come from the bootstrap arena and stay usable"
else
    not_ok "allocations made while the heap is created come from the bootstrap arena and stay usable" \
        "rc $rc" "$err"
fi

# ---- misuse: one line naming the pointer, then abort ----

for mode in free-stack double-small double-medium double-large; do
    run env LD_PRELOAD="$LIB" "$PROG" "$mode" 2> /dev/null # the shell's own "Aborted"
    if [ $rc -eq 134 ] && [ -n "$out" ] && [ "$(grep -c . "$TMP/err")" -eq 1 ] &&
        grep -q "^umem: .*$out\$" "$TMP/err"; then
        ok "misuse $mode: one line naming the pointer, then abort"
    else
        not_ok "misuse $mode: one line naming the pointer, then abort" \
            "rc $rc, stdout '$out', stderr '$err'"
    fi
done

# ---- UMEM_STATS ----

run env LD_PRELOAD="$LIB" UMEM_STATS=1 "$PROG" touch
check "UMEM_STATS=1: the program's own output is unchanged" eval '[ $rc -eq 0 ] && [ -z "$out" ]'
check "UMEM_STATS=1: a heading names the process" \
    eval 'head -1 "$TMP/err" | grep -Eq "^libumem statistics \(pid [0-9]+\)$"'
missing=
for name in lock_count lock_contended allocs frees failed_allocs cache_hits cache_frees \
    cache_refills cache_flushes bytes_in_use peak_bytes_in_use cached_bytes heap_bytes \
    mapped_bytes large_blocks released_bytes remote_frees pool_pages abandoned_pages purges \
    map_reuses lent_calls held_blocks large_bytes map_cache_bytes unpurged_bytes boot_bytes \
    minor_faults; do
    grep -Eq "^  $name +[0-9]+$" "$TMP/err" || missing="$missing $name"
done
check "UMEM_STATS=1: one 'name value' line for each figure" [ -z "$missing" ]
figure() { awk -v n="$1" '$1 == n { print $2 }' "$TMP/err"; }
check "UMEM_STATS=1: the figures count the program's allocations" \
    eval '[ "$(figure allocs)" -ge 100 ] && [ "$(figure lock_count)" -gt 0 ] &&
          [ "$(figure peak_bytes_in_use)" -gt 0 ] && [ "$(figure mapped_bytes)" -gt 0 ] &&
          [ "$(figure frees)" -le "$(figure allocs)" ]'
check "UMEM_STATS=1: exactly the heading and 28 figures" [ "$(grep -c . "$TMP/err")" -eq 29 ]
for value in "" 0; do
    run env LD_PRELOAD="$LIB" UMEM_STATS="$value" "$PROG" touch
    check "UMEM_STATS='$value': no figures" eval '[ $rc -eq 0 ] && [ -z "$err" ]'
done
run env -u UMEM_STATS LD_PRELOAD="$LIB" "$PROG" touch
check "no UMEM_STATS: no figures" eval '[ $rc -eq 0 ] && [ -z "$err" ]'
run env LD_PRELOAD="$LIB" UMEM_STATS=1 "$PROG" close-stderr
check "UMEM_STATS=1: the figures come out after the program closed stderr" \
    eval '[ $rc -eq 0 ] && grep -Eq "^  allocs +[1-9]" "$TMP/err"'
: > "$TMP/elsewhere"
run env LD_PRELOAD="$LIB" UMEM_STATS=1 "$PROG" reuse-fds "$TMP/elsewhere"
check "UMEM_STATS=1: the figures never go to a file the program opened" \
    eval '[ $rc -eq 0 ] && [ ! -s "$TMP/elsewhere" ] && grep -Eq "^  allocs +[1-9]" "$TMP/err"'

# ---- two programs everybody has ----

run env LD_PRELOAD="$LIB" bash -c 'a=(); for i in $(seq 20000); do a+=("x$i"); done; echo "${#a[@]} ${a[19999]}"'
check "bash runs under libumem" eval '[ $rc -eq 0 ] && [ "$out" = "20000 x20000" ] && [ -z "$err" ]'
seq 200000 | awk '{ print ($1 * 7919) % 200003 }' > "$TMP/numbers"
sort -n "$TMP/numbers" > "$TMP/sorted"
run env LD_PRELOAD="$LIB" sort -n --parallel=2 -S 1M "$TMP/numbers"
check "sort --parallel=2 runs under libumem" eval '[ $rc -eq 0 ] && [ "$out" = "$(cat "$TMP/sorted")" ]'
