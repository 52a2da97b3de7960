#!/usr/bin/env bash
# Faults and hostile inputs: a worker process killed while it holds the
# heap's lock, SIGINT and SIGTERM to the parent, an input that shrinks
# while it is read, far more workers than CPUs, a FIFO, an unreadable file
# and files that are not regular.  Faults are injected by tests/faults.so
# (LD_PRELOAD), so the programs carry no test code.
. "$(dirname "$0")/lib.sh"

XS_SIG="Final signature: 811138869"
FAULTS=$PWD/tests/faults.so

# Processes whose command line names the file $1: a run's parent and its
# workers all do (the workers are forks), and nothing else does.
alive_with() {
    local f found=""
    for f in /proc/[0-9]*/cmdline; do
        tr '\0' ' ' 2> /dev/null < "$f" | grep -q -- "$1" && found="$found ${f//[^0-9]/}"
    done
    echo $found
}

# kill_a_worker NAME COMMAND...: runs COMMAND in the background (output
# in $TMP/out and $TMP/err), kills its first child half a second later and
# gives it 3 s to end.  Sets $rc and returns 0 once it has ended; if it
# has not, reports NAME as failed, kills it all and returns 1.
kill_a_worker() {
    local name=$1 parent kids i
    shift
    "$@" > "$TMP/out" 2> "$TMP/err" &
    parent=$!
    sleep 0.5
    kids=$(children_of $parent)
    kill -KILL ${kids%% *}
    for i in $(seq 30); do kill -0 $parent 2> /dev/null || break; sleep 0.1; done
    if kill -0 $parent 2> /dev/null; then
        not_ok "$name" "still running 3 s after a worker was killed"
        kill -KILL $parent $kids 2> /dev/null
        wait $parent
        return 1
    fi
    wait $parent
    rc=$?
}

# A worker process dies by SIGKILL right after taking the heap's lock.
# sharedhash's workers take it on every allocation (here the 1000th);
# esharedhash's take it only to carve their pool (the 1st).
for case in "sharedhash 1000" "esharedhash 1"; do
    set -- $case
    prog=$1
    input="$TMP/lock-holder-$prog.bin"
    cp samples/xs1M.bin "$input"
    start=$SECONDS
    run env FAULT=die-holding-lock:$2 LD_PRELOAD=$FAULTS $BIN/$prog -m -j 2 "$input"
    took=$((SECONDS - start))
    sleep 0.2
    left=$(alive_with "$input")
    if [ $rc -eq 1 ] && [ -z "$out" ] && [ "$(grep -c . "$TMP/err")" -eq 1 ] &&
        grep -qE "killed by signal 9|died while holding its lock" "$TMP/err" &&
        [ $took -le 5 ] && [ -z "$left" ]; then
        ok "$prog -m: a worker killed holding the heap's lock"
    else
        not_ok "$prog -m: a worker killed holding the heap's lock" \
            "rc $rc after ${took}s, stdout '$out', stderr '$err', left: $left"
    fi
done

# A worker process killed while the reader waits in open() for a FIFO's
# writer: the run ends at once, not when a writer comes.
rm -f "$TMP/nowriter"
mkfifo "$TMP/nowriter"
for prog in sharedhash esharedhash; do
    name="$prog -m: a worker killed while the reader waits for a FIFO"
    kill_a_worker "$name" $BIN/$prog -m -j 2 samples/one.bin "$TMP/nowriter" &&
        check "$name" eval '[ $rc -eq 1 ] && grep -q "killed by signal 9" "$TMP/err"'
done

# A run that fails part-way keeps what it finished: the first file's line
# is out, and stdout ends at a line boundary, never in a torn line.
for i in 1 2 3 4; do cat samples/xs1M.bin; done > "$TMP/xs4M"
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

# SIGINT or SIGTERM to the parent: every worker is gone within a second.
# A shell starts background jobs with SIGINT ignored, and whoever runs
# this script may have too: env(1) gives the program the default actions.
mkfifo "$TMP/fifo"
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
            sleep 0.5
            before=$(alive_with "$input")
            kill -$sig $parent
            sleep 1
            left=$(alive_with "$input")
            exec 3>&-
            wait $parent 2> /dev/null
            rc=$?
            expect=1
            [ $mode = -m ] && expect=3 # the parent and two workers
            if [ "$(echo $before | wc -w)" -eq $expect ] && [ -z "$left" ] && [ ! -s "$TMP/out" ]; then
                ok "$prog $mode: SIG$sig to the parent ends every worker"
            else
                not_ok "$prog $mode: SIG$sig to the parent ends every worker" \
                    "before: $before; after 1 s: $left; rc $rc; stdout $(cat "$TMP/out")"
                [ -z "$left" ] || kill -KILL $left 2> /dev/null
            fi
        done
    done
done

# A regular file is read by the workers themselves, here slowed to 100 ms
# a chunk (4 MiB: 64 chunks, over 3 s): a reader killed meanwhile leaves no
# worker process behind for longer than a chunk, and a worker process
# killed meanwhile ends the run at once with one line.
for prog in sharedhash esharedhash; do
    for sig in TERM KILL; do
        input="$TMP/feed-$prog-$sig"
        cp "$TMP/xs4M" "$input"
        exec 4>&2 2> /dev/null # not even the shell's notice that the parent was killed
        env FAULT=slow:100 LD_PRELOAD=$FAULTS $BIN/$prog -m -j 2 "$input" > "$TMP/out" &
        parent=$!
        sleep 0.4
        before=$(alive_with "$input")
        kill -$sig $parent
        sleep 0.5
        left=$(alive_with "$input")
        wait $parent
        exec 2>&4 4>&-
        if [ "$(echo $before | wc -w)" -eq 3 ] && [ -z "$left" ] && [ ! -s "$TMP/out" ]; then
            ok "$prog -m: SIG$sig to the parent while workers read a file ends them"
        else
            not_ok "$prog -m: SIG$sig to the parent while workers read a file ends them" \
                "before: $before; after 0.5 s: $left"
            [ -z "$left" ] || kill -KILL $left 2> /dev/null
        fi
    done
    input="$TMP/feed-$prog-worker"
    cp "$TMP/xs4M" "$input"
    name="$prog -m: a worker killed while the workers read a file"
    if kill_a_worker "$name" env FAULT=slow:100 LD_PRELOAD=$FAULTS $BIN/$prog -m -j 2 "$input"; then
        sleep 0.2
        left=$(alive_with "$input")
        check "$name" eval '[ $rc -eq 1 ] && [ ! -s "$TMP/out" ] && [ -z "$left" ] &&
            [ "$(grep -c . "$TMP/err")" -eq 1 ] && grep -q "killed by signal 9" "$TMP/err"'
    fi
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
        run $BIN/$prog $mode -j 256 samples/xs1M.bin
        check "$prog $mode -j 256" [ "$out" = "$XS_SIG" -a $rc -eq 0 ]
    done
done

# A FIFO, a character device, an unreadable file.
for prog in sharedhash esharedhash; do
    rm -f "$TMP/fifo2"
    mkfifo "$TMP/fifo2"
    cat samples/xs1M.bin > "$TMP/fifo2" &
    run $BIN/$prog -t "$TMP/fifo2"
    wait
    check "$prog reads a FIFO" [ "$out" = "$XS_SIG" ]
    run $BIN/$prog -m /dev/null
    check "$prog /dev/null is empty" [ "$out" = "Final signature: 0" -a $rc -eq 0 ]
done
cp samples/hello.txt "$TMP/secret"
chmod 000 "$TMP/secret"
as_user=()
if [ "$(id -u)" -eq 0 ]; then
    if command -v setpriv > /dev/null; then
        as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
        chmod 755 "$TMP"
    else
        as_user=(skip)
    fi
fi
for prog in sharedhash esharedhash; do
    if [ "${as_user[0]:-}" = skip ]; then
        ok "$prog: an unreadable file # SKIP no setpriv to run as a normal user"
        continue
    fi
    # A copy in $TMP: the checkout may not be open to the other user.
    cp $BIN/$prog "$TMP/$prog"
    expect_error "$prog: an unreadable file" "secret: Permission denied" \
        "${as_user[@]}" "$TMP/$prog" "$TMP/secret"
done
