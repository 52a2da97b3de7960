#!/usr/bin/env bash
# The inputs: several FILE operands (one line each, like sha256sum),
# standard input, FIFOs, devices and files that cannot be read.
. "$(dirname "$0")/lib.sh"

# Several files: "Final signature: N  FILE", in order, in every mode; a bad
# one is reported on stderr, the others still hashed, and the exit is 1.
expected() { # FILE...: the lines sha256sum-style output should have
    local f
    for f in "$@"; do
        printf '%s  %s\n' "$(signature_of "$f")" "$f"
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

# A FIFO, a character device, an unreadable file.
for prog in sharedhash esharedhash; do
    rm -f "$TMP/fifo"
    mkfifo "$TMP/fifo"
    cat "$XS" > "$TMP/fifo" &
    run $BIN/$prog -t "$TMP/fifo"
    wait
    check "$prog reads a FIFO" [ "$out" = "$XS_SIG" ]
    run $BIN/$prog -m /dev/null
    check "$prog /dev/null is empty" [ "$out" = "Final signature: 0" -a $rc -eq 0 ]
done
# As root, the file is read as a normal user (setpriv), from a copy in
# $TMP: the checkout may not be open to that user.
cp samples/hello.txt "$TMP/secret"
chmod 000 "$TMP/secret"
as_user=()
if [ "$(id -u)" -eq 0 ] && have setpriv util-linux "an unreadable file"; then
    as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    chmod 755 "$TMP"
fi
if [ "$(id -u)" -ne 0 ] || [ ${#as_user[@]} -gt 0 ]; then
    for prog in sharedhash esharedhash; do
        cp $BIN/$prog "$TMP/$prog"
        expect_error "$prog: an unreadable file" "secret: Permission denied" \
            "${as_user[@]}" "$TMP/$prog" "$TMP/secret"
    done
fi
