#!/usr/bin/env bash
# The command line: help, version, --stats, --pool, and every error a user
# can cause, with its exit status, its one line on stderr and an empty stdout.
. "$(dirname "$0")/lib.sh"

XS=samples/xs1M.bin
XS_SIG="Final signature: 811138869"

for prog in sharedhash esharedhash; do
    run $BIN/$prog --help
    check "$prog --help: usage on stdout, exit 0" [ $rc -eq 0 -a -z "$err" ]
    check "$prog --help names the options" grep -q -- "-j N" "$TMP/out"
    run $BIN/$prog --version
    check "$prog --version" [ $rc -eq 0 -a "$out" = "$prog 1.0.0" ]
    run $BIN/$prog -j2 "$XS" -t
    check "$prog -j2 glued, options after FILE" [ "$out" = "$XS_SIG" ]
    run $BIN/$prog -- "$XS"
    check "$prog -- ends the options" [ "$out" = "$XS_SIG" ]

    # Usage errors: exit 2, a message and the usage on stderr, nothing on stdout.
    while IFS='|' read -r args what; do
        run $BIN/$prog $args
        if [ $rc -eq 2 ] && [ -z "$out" ] && grep -q -- "$what" "$TMP/err" &&
            grep -q "^usage: $prog" "$TMP/err"; then
            ok "$prog usage error: $args"
        else
            not_ok "$prog usage error: $args" "rc $rc, stdout '$out', stderr '$err'"
        fi
    done << LIST
--bogus $XS|unknown option '--bogus'
-x $XS|unknown option '-x'
-t -m $XS|-t and -m exclude each other
-m $XS -t|-t and -m exclude each other
-j 0 -t $XS|-j wants a number of workers
-j abc -t $XS|-j wants a number of workers
-j 257 -t $XS|-j wants a number of workers
-j 99999999999999999999999 $XS|-j wants a number of workers
$XS -j|needs a value
--heap 12Q $XS|--heap wants a size
--heap 0 $XS|--heap wants a size
--heap 99999999999G $XS|--heap wants a size
--heap=-5 $XS|--heap wants a size
--stats=no $XS|option '--stats' takes no value
|no input FILE
LIST
done
run $BIN/sharedhash --pool 1K "$XS"
check "sharedhash has no --pool" [ $rc -eq 2 ]
run $BIN/esharedhash --pool x "$XS"
check "esharedhash --pool x: usage error" [ $rc -eq 2 -a -z "$out" ]

# Errors: exit 1, one line naming the cause, nothing on stdout.
for prog in sharedhash esharedhash; do
    for mode in "" -t -m; do
        expect_error "$prog $mode missing file" "no/such/file: No such file or directory" \
            $BIN/$prog $mode no/such/file
        expect_error "$prog $mode directory" "samples: Is a directory" $BIN/$prog $mode samples
        expect_error "$prog $mode heap too small" "heap is too small" \
            $BIN/$prog $mode --heap 64K "$XS"
        expect_error "$prog $mode heap below one block" "cannot create a heap" \
            $BIN/$prog $mode --heap 100 "$XS"
        expect_error "$prog $mode stdout full" "write error on standard output" \
            sh -c "$BIN/$prog $mode $XS > /dev/full"
    done
done

# A heap that cannot be mapped; --help and --version to a full stdout.
expect_error "a heap larger than any address space" \
    "cannot create a heap of .*: Cannot allocate memory" $BIN/sharedhash --heap 17179869183G "$XS"
for opt in --help --version; do
    run sh -c "$BIN/esharedhash $opt > /dev/full"
    check "$opt to a full stdout: exit 1 and a line" \
        eval '[ $rc -eq 1 ] && grep -q "write error on standard output" "$TMP/err"'
done

# A closed standard input: '-' is an error, never a hang, in every mode.
for mode in "" -t -m; do
    expect_error "'-' with standard input closed, ${mode:-single}" \
        "standard input: Bad file descriptor" sh -c "exec $BIN/sharedhash $mode - <&-"
done

# A reader of stdout that goes away: exit 1 with a line, not a silent
# death by SIGPIPE (8 MiB: more block lines than a pipe holds).
for i in 1 2 3 4 5 6 7 8; do cat "$XS"; done > "$TMP/xs8M"
for mode in "" -t -m; do
    $BIN/sharedhash -v $mode "$TMP/xs8M" 2> "$TMP/err" | head -n 1 > /dev/null
    rc=${PIPESTATUS[0]}
    check "stdout closed early, ${mode:-single}: exit 1" \
        eval '[ $rc -eq 1 ] && grep -q "write error on standard output: Broken pipe" "$TMP/err"'
done

# A worker that runs out of heap while the reader waits on a slow input:
# the worker's own reason is reported at once (timeout 3: not when the
# input resumes 4 s later), in -t (no SIGPIPE) and in -m (not "ended
# before its work was done").
for mode in -t -m; do
    expect_error "a worker out of heap on a stalled input, $mode" "heap is too small" \
        sh -c "(head -c 64K $XS; sleep 4; head -c 256K $XS) |
               timeout 3 $BIN/sharedhash $mode -j 1 --heap 140K -"
done

# A tight --heap on a file the workers read: a worker that finds no room
# for a buffer leaves the file to the others, so room for one buffer and
# one block's tree does the work; less is one clear error.
for prog in sharedhash esharedhash; do
    for mode in "-t -j 8" "-m -j 4"; do
        run $BIN/$prog $mode --heap 100K "$XS"
        check "$prog $mode --heap 100K: the workers with a buffer do the work" \
            [ "$out" = "$XS_SIG" -a $rc -eq 0 -a -z "$err" ]
    done
    expect_error "$prog -t --heap 72K: a buffer, but no room to hash" \
        "$prog: worker [0-9]*: the heap is too small for the work" $BIN/$prog -t -j 2 --heap 72K "$XS"
    expect_error "$prog -m --heap 32K: no room for any buffer" \
        "^$prog: the heap is too small for the work" $BIN/$prog -m -j 2 --heap 32K "$XS"
done

# Standard output closed (>&-): an error, not a result sent to nowhere.
for mode in "" -t -m; do
    expect_error "stdout closed, ${mode:-single}" "write error on standard output: Bad file descriptor" \
        sh -c "exec $BIN/esharedhash $mode $XS >&-"
done

# Standard input that is a regular file, read from where it stands and
# left at its end, as cat would leave it (the workers read it with pread).
want=$(tail -c +13 "$XS" | $BIN/sharedhash -)
for mode in "" -t -m; do
    run sh -c "{ head -c 12 > /dev/null; $BIN/sharedhash $mode -; } < $XS"
    check "stdin part-read already, ${mode:-single}: the rest is hashed" \
        [ $rc -eq 0 -a "$out" = "$want" ]
    run sh -c "{ $BIN/esharedhash $mode -; wc -c; } < $XS"
    check "stdin read whole, ${mode:-single}: left at its end" \
        [ "$out" = "$(printf '%s\n0' "$XS_SIG")" ]
done
run sh -c "$BIN/sharedhash - - < samples/hello.txt"
check "stdin twice: the second time it is empty" [ $rc -eq 0 -a "$out" = "$(printf '%s\n' \
    'Final signature: 1327664517  -' 'Final signature: 0  -')" ]

# --stats: on stderr, after the result; the figures are exact.
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


# A worker process killed while the reader waits on a slow input: the run
# ends at once with one line, exit 1, and no worker left behind.
mkfifo "$TMP/fifo"
for prog in sharedhash esharedhash; do
    $BIN/$prog -m -j 2 - < "$TMP/fifo" > "$TMP/out" 2> "$TMP/err" &
    parent=$!
    exec 3> "$TMP/fifo" # held open: the input never ends by itself
    cat "$XS" >&3
    sleep 1
    kids=$(children_of "$parent")
    victim=${kids%% *}
    start=$SECONDS
    kill -KILL "$victim"
    wait "$parent"
    rc=$?
    took=$((SECONDS - start))
    exec 3>&-
    left=""
    for k in $kids; do kill -0 "$k" 2> /dev/null && left="$left $k"; done
    if [ $rc -ne 1 ] || [ -s "$TMP/out" ] || [ -n "$left" ] || [ $took -gt 3 ] ||
        ! grep -q "killed by signal 9" "$TMP/err" || [ "$(grep -c . "$TMP/err")" -ne 1 ]; then
        not_ok "$prog -m worker killed" "rc $rc after ${took}s, stdout '$(cat "$TMP/out")'," \
            "stderr '$(cat "$TMP/err")', children $kids, left:$left"
    else
        ok "$prog -m worker killed"
    fi
done
