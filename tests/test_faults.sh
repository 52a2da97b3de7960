#!/usr/bin/env bash
# Faults: workers that die (killed, or holding the heap's lock), SIGINT and
# SIGTERM to the parent, a worker out of heap, an input that shrinks or
# grows while it is read, read errors, far more workers than CPUs.  Faults
# are injected by tests/faults.so (LD_PRELOAD), so the programs carry no
# test code.  No check depends on how fast anything runs: each waits for
# the state it needs (wait_for, up to LIMIT, 60 s), and the inputs that
# must not end by themselves are FIFOs held open, or files read so slowly
# that they would take far longer than that.
. "$(dirname "$0")/lib.sh"

FAULTS=$PWD/tests/faults.so
xs_copies 4 "$TMP/xs4M"

# How a run reports a worker process killed by SIGKILL while it works: by
# its signal or, when the kill found it holding the heap's lock (a
# sharedhash worker takes it for every allocation), by the dead owner that
# the next process to take the lock finds; the reader reports whichever
# it sees first.
KILLED="killed by signal 9|died while holding its lock"

# A worker process dies by SIGKILL right after taking the heap's lock.
# sharedhash's workers take it on every allocation (here the 1000th);
# esharedhash's take it only to carve their pool (the 1st).  The program
# reaps its workers before it exits, so none may be left when it has.  A
# run that hangs on the dead worker's lock is ended by run's time limit,
# and fails: its status is then not 1.
for case in "sharedhash 1000" "esharedhash 1"; do
    set -- $case
    prog=$1
    input="$TMP/lock-holder-$prog.bin"
    cp "$XS" "$input"
    start=$SECONDS
    run env FAULT=die-holding-lock:$2 LD_PRELOAD=$FAULTS $BIN/$prog -m -j 2 "$input"
    took=$((SECONDS - start))
    left=$(alive_with "$input")
    if [ $rc -eq 1 ] && [ -z "$out" ] && [ "$(grep -c . "$TMP/err")" -eq 1 ] &&
        grep -qE "$KILLED" "$TMP/err" &&
        [ -z "$left" ]; then
        ok "$prog -m: a worker killed holding the heap's lock"
    else
        not_ok "$prog -m: a worker killed holding the heap's lock" \
            "rc $rc after ${took}s, stdout '$out', stderr '$err', left: $left"
    fi
done

# A worker process killed while the reader waits on an input that never
# ends by itself (a FIFO held open): the run ends at once with one line,
# exit 1, and no worker left behind.
mkfifo "$TMP/fifo"
for prog in sharedhash esharedhash; do
    start sh -c "exec $BIN/$prog -m -j 2 - < $TMP/fifo"
    exec 3> "$TMP/fifo"
    cat "$XS" >&3 # returns once the reader has taken all but a pipeful
    if kill_a_worker "$prog -m worker killed" 2; then
        left=""
        for k in $kids; do kill -0 "$k" 2> /dev/null && left="$left $k"; done
        if [ $rc -ne 1 ] || [ -s "$TMP/out" ] || [ -n "$left" ] ||
            ! grep -qE "$KILLED" "$TMP/err" || [ "$(grep -c . "$TMP/err")" -ne 1 ]; then
            not_ok "$prog -m worker killed" "rc $rc, stdout '$(cat "$TMP/out")'," \
                "stderr '$(cat "$TMP/err")', children $kids, left:$left"
        else
            ok "$prog -m worker killed"
        fi
    fi
    exec 3>&-
done

# A worker process killed while the reader waits in open() for a FIFO's
# writer (it has hashed the first file; no writer ever comes): the run
# ends at once, not when a writer comes.  The worker is killed only once
# the reader is seen waiting there.
mkfifo "$TMP/nowriter"
for prog in sharedhash esharedhash; do
    name="$prog -m: a worker killed while the reader waits for a FIFO"
    start $BIN/$prog -m -j 2 samples/one.bin "$TMP/nowriter"
    if wait_for $LIMIT waits_in_fifo_open $parent; then
        kill_a_worker "$name" 2 &&
            check "$name" eval '[ $rc -eq 1 ] && grep -q "killed by signal 9" "$TMP/err"'
    else
        not_ok "$name" "the reader never waited in open() for the FIFO within $LIMIT s" \
            "(wchan '$(cat /proc/$parent/wchan 2> /dev/null)', stdout '$(cat "$TMP/out")')"
        kill -KILL $parent $(children_of $parent) 2> /dev/null
        wait $parent
    fi
done

# A run that fails part-way keeps what it finished: the first file's line
# is out, and stdout ends at a line boundary, never in a torn line.
run env FAULT=die-holding-lock:400000 LD_PRELOAD=$FAULTS $BIN/sharedhash -m -j 1 -v \
    samples/hello.txt "$TMP/xs4M"
if [ $rc -eq 1 ] && grep -qx "Final signature: 1327664517  samples/hello.txt" "$TMP/out" &&
    [ "$(tail -c 1 "$TMP/out" | od -An -c | tr -d ' ')" = '\n' ] &&
    ! grep -vqE '^(Block [0-9]+ hash: [0-9]+|Final signature: [0-9]+  .*)$' "$TMP/out"; then
    ok "a failed run keeps finished lines and ends on a line boundary"
else
    not_ok "a failed run keeps finished lines and ends on a line boundary" \
        "rc $rc, stderr '$err', last bytes: $(tail -c 40 "$TMP/out" | od -c | head -3)"
fi

# SIGINT or SIGTERM to the parent while it waits on a FIFO held open:
# every worker is gone at once (they see the end of their task socket).
# A shell starts background jobs with SIGINT ignored, and whoever runs
# this script may have too: env(1) gives the program the default actions.
default_signals=(env --default-signal=INT,TERM)
"${default_signals[@]}" true 2> /dev/null || default_signals=()
for prog in sharedhash esharedhash; do
    for sig in INT TERM; do
        for mode in -t -m; do
            input="$TMP/signal-$prog-$sig$mode"
            ln -sf "$TMP/fifo" "$input"
            "${default_signals[@]}" $BIN/$prog $mode -j 2 "$input" > "$TMP/out" 2> /dev/null &
            parent=$!
            exec 3> "$TMP/fifo"
            cat samples/ties64k.bin >&3
            expect=1
            [ $mode = -m ] && expect=3 # the parent and two workers
            wait_for $LIMIT count_alive_with "$input" $expect
            before=$(alive_with "$input")
            kill -$sig $parent
            wait_for $LIMIT count_alive_with "$input" 0
            left=$(alive_with "$input")
            exec 3>&-
            wait $parent 2> /dev/null
            rc=$?
            if [ "$(echo $before | wc -w)" -eq $expect ] && [ -z "$left" ] && [ ! -s "$TMP/out" ]; then
                ok "$prog $mode: SIG$sig to the parent ends every worker"
            else
                not_ok "$prog $mode: SIG$sig to the parent ends every worker" \
                    "before: $before; after $LIMIT s: $left; rc $rc; stdout $(cat "$TMP/out")"
                [ -z "$left" ] || kill -KILL $left 2> /dev/null
            fi
        done
    done
done

# A regular file is read by the workers themselves, here slowed to 200 ms
# a chunk; a sparse file of 1 GiB, 16384 chunks, would take them over 25
# minutes, so it cannot end by itself while the test waits.  A reader
# killed meanwhile leaves no worker process behind (they look at their
# task sockets between chunks, and are given LIMIT, 60 s, to go), and a
# worker process killed meanwhile ends the run at once with one line.
for prog in sharedhash esharedhash; do
    for sig in TERM KILL; do
        input="$TMP/feed-$prog-$sig"
        truncate -s 1G "$input"
        exec 4>&2 2> /dev/null # not even the shell's notice that the parent was killed
        env FAULT=slow:200 LD_PRELOAD=$FAULTS $BIN/$prog -m -j 2 "$input" > "$TMP/out" &
        parent=$!
        wait_for $LIMIT count_alive_with "$input" 3
        before=$(alive_with "$input")
        kill -$sig $parent
        wait_for $LIMIT count_alive_with "$input" 0
        left=$(alive_with "$input")
        wait $parent
        exec 2>&4 4>&-
        if [ "$(echo $before | wc -w)" -eq 3 ] && [ -z "$left" ] && [ ! -s "$TMP/out" ]; then
            ok "$prog -m: SIG$sig to the parent while workers read a file ends them"
        else
            not_ok "$prog -m: SIG$sig to the parent while workers read a file ends them" \
                "before: $before; after $LIMIT s: $left"
            [ -z "$left" ] || kill -KILL $left 2> /dev/null
        fi
    done
    input="$TMP/feed-$prog-worker"
    truncate -s 1G "$input"
    name="$prog -m: a worker killed while the workers read a file"
    start env FAULT=slow:200 LD_PRELOAD=$FAULTS $BIN/$prog -m -j 2 "$input"
    if kill_a_worker "$name" 2; then
        left=$(alive_with "$input")
        check "$name" eval '[ $rc -eq 1 ] && [ ! -s "$TMP/out" ] && [ -z "$left" ] &&
            [ "$(grep -c . "$TMP/err")" -eq 1 ] && grep -qE "$KILLED" "$TMP/err"'
    fi
done

# A worker out of heap while the reader waits on a stalled input: the
# worker's own reason is reported at once, in -t (a failing thread writes
# to the reader's self-pipe) and in -m (SIGCHLD does; not "ended before
# its work was done").  The failure is built in, whichever thread runs
# first: with --pool 0 each of esharedhash's workers allocates from the
# heap, and the heap is the smallest in which the reader carves its own
# pool, which holds every input buffer; what is left cannot hold one
# block's tree.  The input is one chunk, then a FIFO held open, so only
# the worker's failure can end the run.
reader_pool_fits() { # MODE HEAP
    printf '' | $BIN/esharedhash $1 -j 1 --pool 0 --heap $2 --stats - 2>&1 |
        grep -q '^ *pool_fallbacks *0$'
}
for mode in -t -m; do
    lo=$((64 << 10)) hi=$((1 << 20))
    while [ $((hi - lo)) -gt 64 ]; do
        mid=$(((lo + hi) / 2))
        if reader_pool_fits $mode $mid; then hi=$mid; else lo=$mid; fi
    done
    name="a worker out of heap on a stalled input, $mode"
    start sh -c "exec $BIN/esharedhash $mode -j 1 --pool 0 --heap $hi - < $TMP/fifo"
    exec 3> "$TMP/fifo"
    head -c 64K "$XS" >&3
    if wait_for $LIMIT ended $parent; then
        wait $parent
        rc=$?
        if [ $rc -eq 1 ] && [ ! -s "$TMP/out" ] && [ "$(grep -c . "$TMP/err")" -eq 1 ] &&
            grep -q "worker 0: the heap is too small" "$TMP/err"; then
            ok "$name"
        else
            not_ok "$name" "--heap $hi: rc $rc, stdout '$(cat "$TMP/out")', stderr '$(cat "$TMP/err")'"
        fi
    else
        not_ok "$name" "--heap $hi: still waiting for input"
        kill -KILL $parent $(children_of $parent) 2> /dev/null
        wait $parent
    fi
    exec 3>&-
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

# An input that shrinks or grows while it is read is an error, never a
# signature.
for prog in sharedhash esharedhash; do
    for mode in "" -t -m; do
        for change in shrink grow; do
            head -c 4M /dev/urandom > "$TMP/changing"
            expect_error "$prog ${mode:-single}: an input that ${change}s is an error" \
                "changed size while it was being read" \
                env FAULT=$change:$TMP/changing LD_PRELOAD=$FAULTS $BIN/$prog $mode "$TMP/changing"
        done
    done
done

# A read error (EIO on the second read): one line naming the file and the
# cause, exit 1, no signature.
for prog in sharedhash esharedhash; do
    for mode in "" -t -m; do
        expect_error "$prog ${mode:-single}: a read error" "samples/xs1M.bin: Input/output error" \
            env FAULT=eio LD_PRELOAD=$FAULTS $BIN/$prog $mode samples/xs1M.bin
    done
done

# A read error in one file of several (-t, whose threads share one count
# of reads): that file is reported, the next is still hashed.
run env FAULT=eio LD_PRELOAD=$FAULTS $BIN/esharedhash -t samples/xs1M.bin samples/hello.txt
check "esharedhash -t: a read error in one file, the next one hashed" \
    eval '[ $rc -eq 1 ] && [ "$out" = "Final signature: 1327664517  samples/hello.txt" ] &&
          [ "$err" = "esharedhash: samples/xs1M.bin: Input/output error" ]'

# Far more workers than CPUs.
for prog in sharedhash esharedhash; do
    for mode in -t -m; do
        run $BIN/$prog $mode -j 256 "$XS"
        check "$prog $mode -j 256" [ "$out" = "$XS_SIG" -a $rc -eq 0 ]
    done
done
