#!/usr/bin/env bash
# -c: lists of signatures read back and checked, as sha256sum -c checks its
# own: every flag and exit status, lists written by either program checked
# by the other in every mode, bad lines, missing files, odd names, a list
# on standard input, the summary in sha256sum's words.
. "$(dirname "$0")/lib.sh"

# expect NAME STATUS STDOUT STDERR: the last run's, exactly.
expect() {
    if [ "$rc" = "$2" ] && [ "$out" = "$3" ] && [ "$err" = "$4" ]; then
        ok "$1"
    else
        not_ok "$1" "got:  rc $rc, stdout '$out', stderr '$err'" \
            "want: rc $2, stdout '$3', stderr '$4'"
    fi
}
list_of() { # FILE...: the list several files give, from samples/SIGNATURES
    local f
    for f in "$@"; do printf '%s  %s\n' "$(signature_of "$f")" "$f"; done
}
oks() { # NAME...: what a check of them all prints
    local f
    for f in "$@"; do printf '%s: OK\n' "$f"; done
}

bin=$(cd "$BIN" && pwd) # for runs in another directory
files=(samples/hello.txt samples/empty.bin samples/xs1M.bin samples/ties64k.bin samples/one.bin)
list_of "${files[@]}" > "$TMP/want.list"
ok_lines=$(oks "${files[@]}")

# Lists written by either program in each mode, checked by the other (and
# itself) in each mode.
modes=("" -t -m "-t -j 3" "-m -j 2")
for writer in sharedhash esharedhash; do
    for wmode in "" -t -m; do
        run $BIN/$writer $wmode "${files[@]}"
        cp "$TMP/out" "$TMP/list"
        check "$writer ${wmode:-single} writes the list" \
            cmp "$TMP/list" "$TMP/want.list"
        for checker in sharedhash esharedhash; do
            for cmode in "${modes[@]}"; do
                run $BIN/$checker -c $cmode "$TMP/list"
                expect "$writer ${wmode:-single} list, $checker -c ${cmode:-single}" \
                    0 "$ok_lines" ""
            done
        done
    done
done
for pool in 0 1K; do
    run $BIN/esharedhash -c -t -j 2 --pool $pool "$TMP/want.list"
    expect "esharedhash -c -t --pool $pool" 0 "$ok_lines" ""
done

# A list on standard input, among other lists; options after the lists.
run sh -c "$BIN/esharedhash -c $TMP/want.list - -m < $TMP/want.list"
expect "a list on standard input, after another" 0 "$ok_lines
$ok_lines" ""
run sh -c "cat $TMP/want.list | $BIN/sharedhash -t --check -"
expect "a list from a pipe, --check" 0 "$ok_lines" ""

# A list with every kind of line: matched, mismatched, malformed (text,
# the one-file form that names no file, a signature out of range, one
# space before the name, an escape escaped names never have), missing,
# a directory, and lines that are nothing to check (blank, comment, -v's
# block lines).
cat > "$TMP/mixed" << 'LIST'
Final signature: 1327664517  samples/hello.txt
Final signature: 1  samples/one.bin
garbage
Final signature: 66
Final signature: 0  no/such/file
Final signature: 0  samples
Final signature: 2147483647  samples/one.bin
Final signature: 66 samples/one.bin
\Final signature: 66  bad\q

# a comment
Block 0 hash: 66
Final signature: 0  samples/empty.bin
LIST
mixed_out='samples/hello.txt: OK
samples/one.bin: FAILED
no/such/file: FAILED open or read
samples: FAILED open or read
samples/empty.bin: OK'
failed_out=$(grep FAILED <<< "$mixed_out")
for prog in sharedhash esharedhash; do
    missing="$prog: no/such/file: No such file or directory
$prog: samples: Is a directory"
    summary="$prog: WARNING: 5 lines are improperly formatted
$prog: WARNING: 2 listed files could not be read
$prog: WARNING: 1 computed signature did NOT match"
    warn() { # LINE...: -w's warnings
        local n
        for n in "$@"; do echo "$prog: $TMP/mixed: $n: improperly formatted signature line"; done
    }
    for mode in "" -t -m; do
        run $BIN/$prog -c $mode "$TMP/mixed"
        expect "$prog -c ${mode:-single}: every kind of line" 1 "$mixed_out" "$missing
$summary"
    done
    run $BIN/$prog -c --quiet "$TMP/mixed"
    expect "$prog -c --quiet: the failures only" 1 "$failed_out" "$missing
$summary"
    run $BIN/$prog -c -t --status "$TMP/mixed"
    expect "$prog -c --status: nothing printed, exit 1" 1 "" ""
    run $BIN/$prog -c -m -w "$TMP/mixed"
    expect "$prog -c -w: a warning for each malformed line" 1 "$mixed_out" "$(warn 3 4)
$missing
$(warn 7 8 9)
$summary"
    run $BIN/$prog --warn --check --strict --quiet "$TMP/mixed"
    expect "$prog --warn --strict --quiet" 1 "$failed_out" "$(warn 3 4)
$missing
$(warn 7 8 9)
$summary"
done

# Each exit status on its own: 0 all matched, malformed lines only
# (1 with --strict), a mismatch, a missing file.
list_of samples/hello.txt samples/one.bin > "$TMP/good"
{ cat "$TMP/good"; echo "garbage"; } > "$TMP/malformed"
two_ok=$(oks samples/hello.txt samples/one.bin)
one_malformed="esharedhash: WARNING: 1 line is improperly formatted"
run $BIN/esharedhash -c --quiet "$TMP/good"
expect "--quiet, all matched: nothing printed, exit 0" 0 "" ""
run $BIN/esharedhash -c --status "$TMP/good"
expect "--status, all matched: exit 0" 0 "" ""
run $BIN/esharedhash -c --strict "$TMP/good"
expect "--strict, all well formed: exit 0" 0 "$two_ok" ""
run $BIN/esharedhash -c "$TMP/malformed"
expect "a malformed line without --strict: exit 0" 0 "$two_ok" "$one_malformed"
run $BIN/esharedhash -c -w "$TMP/malformed"
expect "a malformed line with -w: exit 0" 0 "$two_ok" \
    "esharedhash: $TMP/malformed: 3: improperly formatted signature line
$one_malformed"
run $BIN/esharedhash -c --strict "$TMP/malformed"
expect "a malformed line with --strict: exit 1" 1 "$two_ok" "$one_malformed"
run $BIN/esharedhash -c --strict --status "$TMP/malformed"
expect "a malformed line with --strict --status: exit 1, nothing printed" 1 "" ""
sed 's/: [0-9]*/: 7/' "$TMP/good" > "$TMP/mismatch"
run $BIN/sharedhash -c -t "$TMP/mismatch"
expect "two mismatches: exit 1" 1 "samples/hello.txt: FAILED
samples/one.bin: FAILED" "sharedhash: WARNING: 2 computed signatures did NOT match"
echo "Final signature: 0  no/such/file" > "$TMP/missing"
run $BIN/sharedhash -c -m "$TMP/missing" --status
expect "a missing file with --status: exit 1, nothing printed" 1 "" ""

# The summary in sha256sum -c's words, from a list of the same shape.
if have sha256sum coreutils "the summary is sha256sum's"; then
    (cd samples && sha256sum hello.txt) > "$TMP/sha"
    printf '%064d  one.bin\ngarbage\n%064d  no/such/file\n' 1 0 >> "$TMP/sha"
    (cd samples && sha256sum -c "$TMP/sha") > "$TMP/sha.out" 2> "$TMP/sha.err"
    printf 'Final signature: %s  hello.txt\nFinal signature: 1  one.bin\n' 1327664517 \
        > "$TMP/sig"
    printf 'garbage\nFinal signature: 0  no/such/file\n' >> "$TMP/sig"
    (cd samples && "$bin/sharedhash" -c "$TMP/sig") > "$TMP/sig.out" 2> "$TMP/sig.err"
    sed -i 's/^sha256sum:/sharedhash:/; s/checksum/signature/' "$TMP/sha.err"
    check "the lines on stdout are sha256sum -c's" cmp "$TMP/sha.out" "$TMP/sig.out"
    check "the messages on stderr are sha256sum -c's" diff "$TMP/sha.err" "$TMP/sig.err"
fi

# Odd names, written by one program and checked by the other: spaces
# (leading and trailing too), a leading '-', a newline and a backslash
# (escaped in the list and in the verdict), in a list whose own name
# starts with '-'.
mkdir "$TMP/odd"
odd=("with space" "-dash" " lead" "trail " "new
line" 'back\slash')
for f in "${odd[@]}"; do cp samples/hello.txt "$TMP/odd/$f"; done
(cd "$TMP/odd" && "$bin/sharedhash" -t -- "${odd[@]}") > "$TMP/odd/-odd list"
odd_out='with space: OK
-dash: OK
 lead: OK
trail : OK
\new\nline: OK
\back\\slash: OK'
(cd "$TMP/odd" && "$bin/esharedhash" -m --check -- "-odd list") > "$TMP/out" 2> "$TMP/err"
rc=$?
out=$(cat "$TMP/out")
err=$(cat "$TMP/err")
expect "odd names, a list named with a leading '-'" 0 "$odd_out" ""

# A name listed twice is hashed twice: '-' is standard input, empty the
# second time.
printf 'Final signature: 1327664517  -\n%.0s' 1 2 > "$TMP/stdin.list"
run sh -c "$BIN/sharedhash -c -t $TMP/stdin.list < samples/hello.txt"
expect "a name listed twice is hashed twice" 1 "-: OK
-: FAILED" "sharedhash: WARNING: 1 computed signature did NOT match"
list_of samples/one.bin samples/one.bin > "$TMP/twice"
run $BIN/esharedhash -c "$TMP/twice"
expect "a file listed twice is checked twice" 0 "$(oks samples/one.bin samples/one.bin)" ""

# Lines as other systems and editors leave them: CRLF, no newline at the
# end; a line longer than any name, or holding a NUL byte, is malformed
# and the next line is still read.
sed 's/$/\r/' "$TMP/good" > "$TMP/crlf"
run $BIN/sharedhash -c --strict "$TMP/crlf"
expect "a list with CRLF line ends" 0 "$two_ok" ""
printf '%s' "$(cat "$TMP/good")" > "$TMP/noeol"
run $BIN/sharedhash -c --strict "$TMP/noeol"
expect "a list without a newline at its end" 0 "$two_ok" ""
{
    printf 'Final signature: 0  %09000d\n' 0
    printf 'Final signature: 0  samples/empty.bin\0\n'
    list_of samples/one.bin
} > "$TMP/long"
run $BIN/sharedhash -c -w "$TMP/long"
expect "a very long line, a NUL byte: malformed" 0 "samples/one.bin: OK" \
    "sharedhash: $TMP/long: 1: improperly formatted signature line
sharedhash: $TMP/long: 2: improperly formatted signature line
sharedhash: WARNING: 2 lines are improperly formatted"

# Lists that cannot be read: each is one line on stderr, --status or not,
# and the next list is still checked; a list with no signature line.
for opt in "" --status; do
    run $BIN/esharedhash -c $opt no/such.list samples "$TMP/good" /dev/null
    want_out=$two_ok
    [ -z "$opt" ] || want_out=""
    expect "lists missing, a directory, empty ${opt:-}" 1 "$want_out" \
        "esharedhash: no/such.list: No such file or directory
esharedhash: samples: Is a directory
esharedhash: /dev/null: no properly formatted signature lines found"
done
run sh -c "exec $BIN/sharedhash -c - <&-"
expect "a list on a closed standard input" 1 "" \
    "sharedhash: standard input: Bad file descriptor"
run sh -c "$BIN/sharedhash -c $TMP/good > /dev/full"
expect "stdout full: exit 1" 1 "" "sharedhash: write error on standard output: No space left on device"

# Usage errors: exit 2, the message and the usage on stderr.
for prog in sharedhash esharedhash; do
    expect_usage_errors "$prog" << LIST
--quiet $XS|the --quiet option is meaningful only with -c
--status $XS|the --status option is meaningful only with -c
--strict $XS|the --strict option is meaningful only with -c
-w $XS|the --warn option is meaningful only with -c
--warn $XS|the --warn option is meaningful only with -c
-c -v $TMP/good|-v and -c exclude each other
-c|no LIST given
--check=yes $TMP/good|option '--check' takes no value
-c --status=no $TMP/good|option '--status' takes no value
LIST
done

# Memory stays bounded: a file at a time.  Single mode's heap peak is the
# same for a list of one file as for a list of eight; with workers, a heap
# smaller than any one of the files is enough for them all.
xs_copies 4 "$TMP/xs4M"
for i in 1 2 3 4 5 6 7 8; do ln -s "$TMP/xs4M" "$TMP/xs4M.$i"; done
printf 'Final signature: %s  %s\n' "$(xs_signature 4 | cut -d' ' -f3)" "$TMP/xs4M" > "$TMP/one.list"
for i in 1 2 3 4 5 6 7 8; do
    printf 'Final signature: %s  %s\n' "$(xs_signature 4 | cut -d' ' -f3)" "$TMP/xs4M.$i"
done > "$TMP/eight.list"
peak() { awk '$1 == "peak_heap_bytes" { print $2 }' "$TMP/err"; }
run $BIN/sharedhash -c --quiet --stats "$TMP/one.list"
one=$(peak)
run $BIN/sharedhash -c --quiet --stats "$TMP/eight.list"
eight=$(peak)
if [ $rc -eq 0 ] && [ -n "$one" ] && [ "$one" = "$eight" ]; then
    ok "single: the same heap peak for one file as for eight"
else
    not_ok "single: the same heap peak for one file as for eight" \
        "rc $rc, peak $one for one file, $eight for eight"
fi
for mode in -t -m; do
    run $BIN/esharedhash -c --quiet $mode -j 2 --heap 2M "$TMP/eight.list"
    expect "$mode: eight 4 MiB files checked in a 2 MiB heap" 0 "" ""
done

# A worker process killed while the reader waits for more of a list (a
# FIFO held open, its first line checked): the run ends at once, exit 1,
# one line; the verdict given before stays.
mkfifo "$TMP/list.fifo"
for prog in sharedhash esharedhash; do
    name="$prog -c -m: a worker killed while the list is slow to come"
    start $BIN/$prog -c -m -j 2 "$TMP/list.fifo"
    exec 3> "$TMP/list.fifo"
    list_of samples/one.bin >&3
    if ! wait_for $LIMIT grep -q OK "$TMP/out"; then
        not_ok "$name" "no verdict within $LIMIT s: stdout '$(cat "$TMP/out")'"
        kill -KILL $parent $(children_of $parent) 2> /dev/null
        wait $parent
    elif kill_a_worker "$name" 2; then
        out=$(cat "$TMP/out")
        err=$(cat "$TMP/err")
        if [ $rc -eq 1 ] && [ "$out" = "samples/one.bin: OK" ] &&
            [ "$(grep -c . <<< "$err")" -eq 1 ] && grep -q "killed by signal 9" <<< "$err"; then
            ok "$name"
        else
            not_ok "$name" "rc $rc, stdout '$out', stderr '$err'"
        fi
    fi
    exec 3>&-
done
