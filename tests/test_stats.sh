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

# The times: wall_ms, cpu_ms and mb_per_s, in every mode, are numbers that
# agree with the clock outside and with the input's size: wall_ms within
# what the run took from outside, mb_per_s the bytes over wall_ms (wall_ms
# is whole milliseconds, mb_per_s rounded to 0.1), cpu_ms no more than the
# CPUs can give in wall_ms.
xs_copies 8 "$TMP/xs8M"
cpus=$(nproc)
for prog in sharedhash esharedhash; do
    for mode in "" -t -m; do
        name="$prog ${mode:-single} --stats"
        before=$(date +%s%N)
        run $BIN/$prog $mode -j 2 --stats "$TMP/xs8M"
        outside=$((($(date +%s%N) - before) / 1000000))
        wall=$(stat_of wall_ms) cpu=$(stat_of cpu_ms) rate=$(stat_of mb_per_s)
        check "$name: wall_ms, cpu_ms and mb_per_s are numbers" eval \
            '[[ $out = "$(xs_signature 8)" && $wall =~ ^[0-9]+$ && $cpu =~ ^[0-9]+$ &&
                $rate =~ ^[0-9]+\.[0-9]$ ]]'
        check "$name: wall_ms within the run's time from outside ($outside ms)" eval \
            '[ "$wall" -gt 0 ] && [ "$wall" -le "$outside" ]'
        check "$name: mb_per_s is the input's size over wall_ms" \
            awk -v r="$rate" -v w="$wall" \
                'BEGIN { exit !(r >= 8388.608 / (w + 1) - 0.051 && r <= 8388.608 / w + 0.051) }'
        check "$name: cpu_ms no more than $cpus CPUs give in wall_ms" \
            [ "$cpu" -le $(((wall + 100) * cpus)) ]
        eval "cpu_of_${prog}_${mode#-}=\$cpu"
    done
done
# With -m the workers read the file and do all the hashing, so cpu_ms
# counts their time: about as much as the same work single-threaded.
for prog in sharedhash esharedhash; do
    eval 'single=$cpu_of_'$prog'_ processes=$cpu_of_'$prog'_m'
    check "$prog -m --stats: cpu_ms counts the worker processes ($processes ms, single $single ms)" \
        [ "$((processes * 4))" -ge "$single" ]
done
