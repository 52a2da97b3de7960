#!/usr/bin/env bash
# --progress and --no-progress: a progress line on stderr only, for an
# input that takes a while, by default only on a terminal.
. "$(dirname "$0")/lib.sh"

# A pipe that delivers its second MiB 1.2 s after the first: it takes over
# the half second after which progress shows, however fast the machine.
slow() { cat "$XS"; sleep 1.2; cat "$XS"; }
for mode in "" -t -m; do
    run $BIN/esharedhash $mode --progress - < <(slow)
    if [ "$out" = "$(xs_signature 2)" ] &&
        grep -q "standard input: [0-9.]* MiB, [0-9.]* MB/s" "$TMP/err"; then
        ok "--progress ${mode:-single}: a progress line on stderr, the result alone on stdout"
    else
        not_ok "--progress ${mode:-single}" "stdout '$out', stderr '$err'"
    fi
done
# --progress on a file that the workers read themselves (2 MiB, 32
# chunks): past its 4th read of the file, each process's reads stall
# (tests/faults.so) until the test has seen a progress line, so the main
# thread must show how far they are while they work (8 chunks of 32 at
# most), not only once the first is done.
xs_copies 2 "$TMP/xs2M"
for mode in -t -m; do
    name="--progress $mode on a file the workers read"
    rm -f "$TMP/go"
    start env FAULT=hold:4:$TMP/go LD_PRELOAD=$PWD/tests/faults.so $BIN/esharedhash $mode -j 2 \
        --progress "$TMP/xs2M"
    wait_for $LIMIT grep -q "xs2M: [0-9.]* [KM]iB of 2.0 MiB ([0-8]\?[0-9]%)" "$TMP/err"
    shown=$?
    touch "$TMP/go"
    if wait_for $LIMIT ended $parent; then
        wait $parent
        rc=$?
        out=$(cat "$TMP/out")
        if [ $shown -eq 0 ] && [ $rc -eq 0 ] && [ "$out" = "$(xs_signature 2)" ]; then
            ok "$name"
        else
            not_ok "$name" "rc $rc, stdout '$out', stderr '$(cat "$TMP/err")'"
        fi
    else
        not_ok "$name" "still running $LIMIT s after its reads went on"
        kill -KILL $parent $(children_of $parent) 2> /dev/null
        wait $parent
    fi
done
run $BIN/sharedhash - < <(slow)
check "no progress when stderr is not a terminal" [ -z "$err" ]
# One read, right after the open: a run that ends within half a second,
# timed from outside (so from before the program's clock starts), shows
# no progress.  A run that a busy machine held up for longer proves
# nothing, and is made again.
name="no progress for an input that is quickly done"
quick=""
for _ in $(seq 20); do
    before=$(date +%s%N)
    run $BIN/sharedhash --progress samples/hello.txt
    took=$((($(date +%s%N) - before) / 1000000))
    if [ $took -lt 500 ]; then
        quick=$took
        break
    fi
done
if [ -z "$quick" ]; then
    not_ok "$name" "none of 20 runs ended within half a second"
else
    check "$name" [ -z "$err" ]
fi
# Progress on a terminal by default, erased before the result: run under
# script(1), which gives the command a terminal.
if have script bsdutils "progress on a terminal"; then
    script -qec "sh -c '(cat $XS; sleep 1.2; cat $XS) | $BIN/esharedhash -t -'" \
        /dev/null > "$TMP/tty" 2>&1
    if grep -q "standard input: [0-9.]* MiB" "$TMP/tty" && grep -q $'\e\[K' "$TMP/tty"; then
        ok "progress by default on a terminal"
    else
        not_ok "progress by default on a terminal" "$(od -c "$TMP/tty" | head -5)"
    fi
    script -qec "sh -c '(cat $XS; sleep 1.2) | $BIN/esharedhash --no-progress -'" \
        /dev/null > "$TMP/tty" 2>&1
    check "--no-progress on a terminal" [ "$(tr -d '\r' < "$TMP/tty")" = "$XS_SIG" ]
fi
