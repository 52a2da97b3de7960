#!/usr/bin/env bash
# libumem.so as the malloc of programs nobody here wrote: each workload of
# tests/workloads.sh runs without and with LD_PRELOAD=$PRELOAD_LIB, and
# the two runs must print the same bytes and exit alike.  Then the
# project's own end-to-end tests, with the programs on the library.
#
#   PRELOAD_LIB   the library (default ./libumem.so); any malloc
#                 replacement .so stands in for it
. "$(dirname "$0")/lib.sh"
. tests/workloads.sh

lib=${PRELOAD_LIB:-./libumem.so}
if [ ! -f "$lib" ]; then
    not_ok preload_lib_built "$lib does not exist (make builds ./libumem.so)"
    exit 0
fi
lib=$(realpath "$lib")

# The dynamic loader ignores a library it cannot preload and runs the
# program anyway, which would make every comparison below pass unseen.
# So: the library must load, and libc's own calls to the malloc family
# must bind to it.
bindings=$(LD_BIND_NOW=1 LD_DEBUG=bindings LD_PRELOAD=$lib cat /dev/null 2>&1 |
    awk '$0 ~ /binding file .*libc\.so/' | grep -F " to $lib ")
missing=""
for f in malloc free calloc realloc; do
    grep -q "symbol \`$f'" <<< "$bindings" || missing="$missing $f"
done
if [ -n "$missing" ]; then
    not_ok preload_lib_serves_malloc "libc's$missing do not bind to $lib"
    exit 0
fi
ok preload_lib_serves_malloc

# A function of the family the library leaves out is served by glibc from
# glibc's heap, and its block then reaches the library's free.
if ! command -v nm > /dev/null; then
    skip_or_fail preload_lib_exports_malloc_family nm binutils
else
    exports=$(nm -D --defined-only "$lib" | awk '{ sub(/@.*/, "", $3); print $3 }')
    missing=""
    for f in malloc free calloc realloc posix_memalign aligned_alloc memalign valloc \
        malloc_usable_size; do
        grep -qx "$f" <<< "$exports" || missing="$missing $f"
    done
    if [ -z "$missing" ]; then
        ok preload_lib_exports_malloc_family
    else
        not_ok preload_lib_exports_malloc_family "$lib does not define$missing"
    fi
fi

# run_workload NAME OUTFILE [LIB]: the workload in a fresh directory of the
# same name each time (paths never differ between the two runs); its
# stdout, then its exit status, in OUTFILE; its stderr in OUTFILE.err.
run_workload() {
    rm -rf "$TMP/work"
    mkdir "$TMP/work"
    if [ -n "${3:-}" ]; then
        LD_PRELOAD=$3 timeout -k 10 300 tests/workloads.sh "$1" "$TMP/work" > "$2" 2> "$2.err"
    else
        timeout -k 10 300 tests/workloads.sh "$1" "$TMP/work" > "$2" 2> "$2.err"
    fi
    echo "exit $?" >> "$2"
}

for w in $WORKLOADS; do
    name="preload $w"
    if need=$(workload_missing "$w"); then
        skip_or_fail "$name" $need
        continue
    fi
    run_workload "$w" "$TMP/$w.plain"
    run_workload "$w" "$TMP/$w.preload" "$lib"
    if [ "$(tail -n 1 "$TMP/$w.plain")" != "exit 0" ]; then
        not_ok "$name" "fails without the library: $(tail -n 1 "$TMP/$w.plain")" \
            "$(tail -n 5 "$TMP/$w.plain.err")"
    elif cmp -s "$TMP/$w.plain" "$TMP/$w.preload"; then
        ok "$name"
    else
        not_ok "$name" "output differs (< without, > with the library):" \
            "$(diff "$TMP/$w.plain" "$TMP/$w.preload" | head -n 20)" \
            "stderr with the library:" "$(tail -n 5 "$TMP/$w.preload.err")"
    fi
done

# The end-to-end tests of the programs' behaviour (signatures, the command
# line, inputs, --stats; the fault tests preload faults.so themselves),
# through wrappers that put only the programs under test on the library (the test scripts' own shells stay on glibc, so a
# failure names a program).  The 5 GiB sparse file is left out: it
# reads zeros for seconds and allocates no more than the rest.
if [ -x ./sharedhash ] && [ -x ./esharedhash ]; then
    mkdir "$TMP/bin"
    for p in sharedhash esharedhash; do
        printf '#!/bin/sh\nexec env LD_PRELOAD="%s" "%s" "$@"\n' "$lib" "$PWD/$p" > "$TMP/bin/$p"
        chmod +x "$TMP/bin/$p"
    done
    for t in test_signatures test_cli test_inputs test_stats; do
        BIN=$TMP/bin SKIP_SLOW=1 timeout 300 tests/$t.sh > "$TMP/$t" 2>&1
        rc=$?
        passed=$(grep -c '^ok - ' "$TMP/$t")
        failed=$(grep -c '^not ok - ' "$TMP/$t")
        if [ $rc -eq 0 ] && [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then
            ok "$t.sh under the library"
        else
            not_ok "$t.sh under the library" "exit $rc, $passed passed, $failed failed:" \
                "$(grep -v '^ok - ' "$TMP/$t" | head -n 20)"
        fi
    done
else
    not_ok "the end-to-end tests under the library" "sharedhash and esharedhash are not built (make)"
fi
