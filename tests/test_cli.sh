#!/usr/bin/env bash
# The command line: help, version, where options go, and every error a
# user can cause, with its exit status, its one line on stderr and an empty
# stdout.
. "$(dirname "$0")/lib.sh"

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
    expect_usage_errors "$prog" << LIST
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
xs_copies 8 "$TMP/xs8M"
for mode in "" -t -m; do
    $BIN/sharedhash -v $mode "$TMP/xs8M" 2> "$TMP/err" | head -n 1 > /dev/null
    rc=${PIPESTATUS[0]}
    check "stdout closed early, ${mode:-single}: exit 1" \
        eval '[ $rc -eq 1 ] && grep -q "write error on standard output: Broken pipe" "$TMP/err"'
done

# Standard output closed (>&-): an error, not a result sent to nowhere.
for mode in "" -t -m; do
    expect_error "stdout closed, ${mode:-single}" "write error on standard output: Bad file descriptor" \
        sh -c "exec $BIN/esharedhash $mode $XS >&-"
done

