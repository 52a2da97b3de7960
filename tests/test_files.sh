#!/usr/bin/env bash
# Several FILE operands (one line each, like sha256sum) and --progress.
. "$(dirname "$0")/lib.sh"

# Several files: "Final signature: N  FILE", in order, in every mode; a bad
# one is reported on stderr, the others still hashed, and the exit is 1.
expected() { # FILE...: the lines sha256sum-style output should have
    local f
    for f in "$@"; do
        printf 'Final signature: %s  %s\n' \
            "$(awk -F'\t' -v f="${f##*/}" '$1 == f { sub(/Final signature: /, "", $2); print $2 }' samples/SIGNATURES)" "$f"
    done
}
files=(samples/hello.txt samples/empty.bin samples/xs1M.bin samples/ties64k.bin)
for prog in sharedhash esharedhash; do
    for mode in "" -t -m; do
        run $BIN/$prog $mode "${files[@]}"
        check "$prog ${mode:-single}: several files, a line each" \
            [ "$out" = "$(expected "${files[@]}")" -a $rc -eq 0 -a -z "$err" ]
        run $BIN/$prog $mode samples/one.bin no/such samples samples/zero1k.bin
        if [ "$out" = "$(expected samples/one.bin samples/zero1k.bin)" ] && [ $rc -eq 1 ] &&
            [ "$(grep -c . "$TMP/err")" -eq 2 ] && grep -q "no/such: No such file" "$TMP/err" &&
            grep -q "samples: Is a directory" "$TMP/err"; then
            ok "$prog ${mode:-single}: bad files among good ones"
        else
            not_ok "$prog ${mode:-single}: bad files among good ones" "rc $rc, stdout '$out', stderr '$err'"
        fi
    done
done
run sh -c "$BIN/esharedhash -t samples/one.bin - < samples/hello.txt"
check "standard input among files is named '-'" \
    [ "$out" = "$(printf 'Final signature: 66  samples/one.bin\nFinal signature: 1327664517  -')" ]
run $BIN/sharedhash -v samples/one.bin samples/hello.txt
check "-v with several files: block lines before each file's line" [ "$out" = "$(printf '%s\n' \
    'Block 0 hash: 66' 'Final signature: 66  samples/one.bin' \
    'Block 0 hash: 1327664517' 'Final signature: 1327664517  samples/hello.txt')" ]

# Names with a newline or a backslash are escaped as sha256sum does.
cp samples/one.bin "$TMP/a
b"
cp samples/one.bin "$TMP/c\\d"
run $BIN/sharedhash "$TMP/a
b" "$TMP/c\\d"
check "names with a newline or a backslash are escaped" [ "$out" = "$(printf '%s\n' \
    "\\Final signature: 66  $TMP/a\\nb" "\\Final signature: 66  $TMP/c\\\\d")" ]

# --progress: on stderr only, and only for an input that takes a while
# (here a pipe that delivers its second MiB a second after the first).
slow() { cat samples/xs1M.bin; sleep 1.2; cat samples/xs1M.bin; }
for mode in "" -t -m; do
    run $BIN/esharedhash $mode --progress - < <(slow)
    if [ "$out" = "Final signature: $(( 811138869 * 2 % 2147483647 ))" ] &&
        grep -q "standard input: [0-9.]* MiB, [0-9.]* MB/s" "$TMP/err"; then
        ok "--progress ${mode:-single}: a progress line on stderr, the result alone on stdout"
    else
        not_ok "--progress ${mode:-single}" "stdout '$out', stderr '$err'"
    fi
done
# --progress on a file that the workers read themselves, slowed to 200 ms
# a chunk (tests/faults.so): the main thread shows how far they are
# while they work, not only once the first is done.
for mode in -t -m; do
    run env FAULT=slow:200 LD_PRELOAD=$PWD/tests/faults.so $BIN/esharedhash $mode -j 2 \
        --progress samples/xs1M.bin
    if [ "$out" = "Final signature: 811138869" ] &&
        grep -q "samples/xs1M.bin: [0-9.]* [KM]iB of 1.0 MiB ([0-8]\?[0-9]%)" "$TMP/err"; then
        ok "--progress $mode on a file the workers read"
    else
        not_ok "--progress $mode on a file the workers read" "stdout '$out', stderr '$err'"
    fi
done
run $BIN/sharedhash - < <(slow)
check "no progress when stderr is not a terminal" [ -z "$err" ]
run $BIN/sharedhash --progress samples/xs1M.bin
check "no progress for an input that is quickly done" [ -z "$err" ]
# Progress on a terminal by default, erased before the result: run under
# script(1), which gives the command a terminal (util-linux).
if command -v script > /dev/null; then
    script -qec "sh -c '(cat samples/xs1M.bin; sleep 1.2; cat samples/xs1M.bin) | $BIN/esharedhash -t -'" \
        /dev/null > "$TMP/tty" 2>&1
    if grep -q "standard input: [0-9.]* MiB" "$TMP/tty" && grep -q $'\e\[K' "$TMP/tty"; then
        ok "progress by default on a terminal"
    else
        not_ok "progress by default on a terminal" "$(od -c "$TMP/tty" | head -5)"
    fi
    script -qec "sh -c '(cat samples/xs1M.bin; sleep 1.2) | $BIN/esharedhash --no-progress -'" \
        /dev/null > "$TMP/tty" 2>&1
    check "--no-progress on a terminal" [ "$(tr -d '\r' < "$TMP/tty")" = "Final signature: 811138869" ]
else
    ok "progress on a terminal # SKIP script(1) is not installed"
fi
