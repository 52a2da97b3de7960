#!/usr/bin/env bash
# --stats: on stderr, after the result; the allocator's and the locks'
# figures are exact.
. "$(dirname "$0")/lib.sh"

stat_of() { awk -v k="$1" '$1 == k { print $2 }' "$TMP/err"; }
run $BIN/sharedhash -t -j 2 --stats "$XS"
allocs=$(stat_of heap_allocs)
frees=$(stat_of heap_frees)
check "sharedhash -t --stats: result unchanged" [ "$out" = "$XS_SIG" ]
check "sharedhash -t --stats: a lock per allocation and per free" \
    [ "$(stat_of lock_count)" = $((allocs + frees)) -a "$allocs" = "$frees" ]
check "sharedhash -t --stats: every umalloc reaches the heap" \
    [ "$(stat_of umalloc_calls)" = "$allocs" -a "$allocs" -gt 500000 ]
run $BIN/sharedhash --stats "$XS"
check "sharedhash single --stats: no lock" [ "$(stat_of lock_count)" = 0 ]

for mode in -t -m; do
    run $BIN/esharedhash $mode -j 3 --stats "$XS"
    check "esharedhash $mode --stats: no fallback with the default pool" \
        [ "$(stat_of pool_fallbacks)" = 0 -a "$(stat_of pool_hits)" = "$(stat_of umalloc_calls)" ]
    check "esharedhash $mode --stats: a lock to create and free each pool" \
        [ "$(stat_of lock_count)" = $((2 + 2 * 3)) ]
    check "esharedhash $mode --stats: workers read a file into their own pools" \
        [ "$(stat_of remote_frees)" = 0 ]
    run sh -c "cat $XS | $BIN/esharedhash $mode -j 3 --stats -"
    check "esharedhash $mode --stats: workers free the reader's buffers from a pipe remotely" \
        [ "$out" = "$XS_SIG" -a "$(stat_of remote_frees)" = 16 ]
    for pool in 0 1K; do
        run $BIN/esharedhash $mode -j 2 --pool $pool --stats "$XS"
        fallbacks=$(stat_of pool_fallbacks)
        check "esharedhash $mode --pool $pool: same signature through fallbacks" \
            [ "$out" = "$XS_SIG" -a "${fallbacks:-0}" -gt 100000 ]
    done
done
run $BIN/esharedhash --pool 0 --stats "$XS"
check "esharedhash single --pool 0: same signature" [ "$out" = "$XS_SIG" ]
