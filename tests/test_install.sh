#!/usr/bin/env bash
# make install and make uninstall into a staging DESTDIR; the installed
# programs run, libumem.so runs one of them, the installed header compiles,
# the manual pages render without a warning (groff -man -ww).
. "$(dirname "$0")/lib.sh"

dest=$TMP/stage
prefix=/opt/umem-test
root=$dest$prefix
if make -s install DESTDIR="$dest" PREFIX="$prefix" > "$TMP/log" 2>&1; then
    ok "make install DESTDIR PREFIX"
else
    not_ok "make install DESTDIR PREFIX" "$(cat "$TMP/log")"
fi
for f in bin/sharedhash bin/esharedhash bin/umem-symbolize include/umem.h lib/libumem.so \
    share/man/man1/sharedhash.1 share/man/man1/esharedhash.1 share/man/man3/umem.3 \
    share/man/man3/libumem.3; do
    check "installed $f" [ -f "$root/$f" ]
done
missing=
for f in umem/*.h; do
    [ -f "$root/include/$f" ] || missing="$missing $f"
done
check "installed every part of umem.h (include/umem/)" [ -z "$missing" ]
for prog in sharedhash esharedhash; do
    run "$root/bin/$prog" -t samples/xs1M.bin
    check "installed $prog runs" [ "$out" = "$XS_SIG" ]
done
run env LD_PRELOAD="$root/lib/libumem.so" "$root/bin/esharedhash" -t samples/xs1M.bin
check "installed libumem.so runs a program" eval '[ "$out" = "$XS_SIG" ] && [ -z "$err" ]'

# The manual's own example, against the installed header.
mkdir "$TMP/examples"
c_examples "$TMP/examples" "$root/share/man/man3/umem.3"
if ${CC:-cc} -Wall -Wextra -Werror -pthread -I"$root/include" -o "$TMP/example" \
    "$TMP/examples/umem.3-1.c" \
    2> "$TMP/log" && "$TMP/example"; then
    ok "umem(3) example builds against the installed umem.h and runs"
else
    not_ok "umem(3) example builds against the installed umem.h and runs" "$(cat "$TMP/log")"
fi

if have groff groff-base "man pages render"; then
    for page in man1/sharedhash.1 man1/esharedhash.1 man3/umem.3 man3/libumem.3; do
        warnings=$(cd "$root/share/man" && groff -man -ww -Tutf8 "$page" 2>&1 > "$TMP/page")
        if [ -z "$warnings" ] && [ -s "$TMP/page" ]; then
            ok "man page $page renders without a warning"
        else
            not_ok "man page $page renders without a warning" "$warnings"
        fi
    done
    (cd "$root/share/man" && groff -man -Tutf8 man1/esharedhash.1 2> /dev/null) |
        sed 's/.\x08//g' > "$TMP/page"
    check "esharedhash(1) shows the page of both programs" grep -q "^ *sharedhash, *esharedhash" "$TMP/page"
fi

if make -s uninstall DESTDIR="$dest" PREFIX="$prefix" > "$TMP/log" 2>&1 &&
    [ -z "$(find "$dest" -type f)" ]; then
    ok "make uninstall removes every installed file"
else
    not_ok "make uninstall removes every installed file" "$(find "$dest" -type f)"
fi
