#!/usr/bin/env bash
# Every shared vector, for both programs, in every mode and worker count;
# the verbose output in every mode; the 5 GiB sparse file in -t.
. "$(dirname "$0")/lib.sh"

for prog in sharedhash esharedhash; do
    for mode in single -t -m; do
        for j in 1 2 3 8; do
            [ "$mode" = single ] && [ "$j" != 1 ] && continue
            flags=""
            [ "$mode" = single ] || flags="$mode -j $j"
            bad=()
            while IFS=$'\t' read -r file want; do
                # options after FILE, as the reference takes them
                run $BIN/$prog samples/$file $flags
                [ "$out" = "$want" ] && [ $rc -eq 0 ] && [ -z "$err" ] ||
                    bad+=("$file: got '$out' rc $rc ${err:+stderr '$err'}, want '$want'")
            done < samples/SIGNATURES
            name="vectors $prog $mode"
            [ "$mode" = single ] || name="$name -j $j"
            if [ ${#bad[@]} -eq 0 ]; then ok "$name"; else not_ok "$name" "${bad[@]}"; fi
        done
        run $BIN/$prog -v ${mode/single/} -j 3 samples/ties64k.bin
        check "verbose $prog $mode" cmp -s "$TMP/out" samples/ties64k.verbose
    done
done

# Standard input, and the same from a pipe that delivers odd-sized pieces.
run sh -c "$BIN/esharedhash -t - < $XS"
check "stdin esharedhash -t" [ "$out" = "$XS_SIG" ]
run sh -c "cat $XS | $BIN/sharedhash -m -j 3 -"
check "pipe sharedhash -m" [ "$out" = "$XS_SIG" ]

# More blocks than the reference's one-process-per-block -m survives:
# 8 copies of xs1M.bin, 8,192 blocks.
xs_copies 8 "$TMP/xs8M"
for prog in sharedhash esharedhash; do
    run $BIN/$prog -m "$TMP/xs8M"
    check "8 MiB $prog -m" [ "$out" = "$(xs_signature 8)" ]
done

# 5 GiB sparse file: every block is 1024 zero bytes, hashing to 1024, so
# the signature is 1024 * 5 GiB / 1024 = 5 * 2^30 modulo 2^31-1.  Left out
# of sanitizer runs (SKIP_SLOW=1), where it would take many minutes.  It
# takes seconds on an idle machine and may take a minute on a busy one:
# its time limit is ten minutes.
if [ -n "${SKIP_SLOW:-}" ]; then
    ok "5 GiB sparse file esharedhash -t # SKIP SKIP_SLOW is set"
elif truncate -s 5G "$TMP/sparse" 2> /dev/null; then
    want=$(( (5 << 30) % 2147483647 ))
    RUN_LIMIT=600 run $BIN/esharedhash -t "$TMP/sparse"
    check "5 GiB sparse file esharedhash -t" [ "$out" = "Final signature: $want" ]
else
    not_ok "5 GiB sparse file" "cannot create a sparse file in $TMP"
fi
