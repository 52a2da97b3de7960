#!/usr/bin/env bash
# The C examples of the README and of the manual pages: every one that
# holds a main() (a fenced ```c block in README.md, an .EX block in man/)
# compiles without a warning against the checkout's headers and runs with
# exit status 0; the README's umem.h example prints what it says.
. "$(dirname "$0")/lib.sh"

c_examples "$TMP" README.md man/*.[0-9]
examples=$(ls "$TMP"/*.c 2> /dev/null)
check "the README and the manual have C examples" [ -n "$(ls "$TMP"/README.md-*.c 2> /dev/null)" -a \
    -n "$(ls "$TMP"/umem.3-*.c 2> /dev/null)" ]
for c in $examples; do
    name="example ${c#"$TMP/"} compiles cleanly and runs"
    if ${CC:-cc} -Wall -Wextra -Werror -pthread -I. -o "${c%.c}" "$c" 2> "$TMP/log" &&
        timeout 60 "${c%.c}" > "${c%.c}.out" 2> "$TMP/log"; then
        ok "$name"
    else
        not_ok "$name" "$(cat "$TMP/log")"
    fi
done
umem_example=$(grep -l "hello from the parent" $examples | head -1)
check "the README's umem.h example prints its message" \
    [ -n "$umem_example" -a "$(cat "${umem_example%.c}.out" 2> /dev/null)" = "hello from the parent" ]
