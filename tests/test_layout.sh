#!/usr/bin/env bash
# The layout of the code, as a reader meets it: umem.h is an umbrella
# whose parts under umem/ each refuse to be included alone and stay under
# 700 lines; no function anywhere is over 60 lines; each program builds
# alone with its one-line command; the tests and libumem.c reach umem's
# insides only through the interfaces umem.h declares for them.
. "$(dirname "$0")/lib.sh"

parts=$(sed -n 's/^#include "\(umem\/[a-z]*\.h\)"$/\1/p' umem.h)
check "umem.h includes its parts" [ -n "$parts" ]
for f in umem/*.h; do
    case " $(echo $parts) " in
        *" $f "*) ;;
        *) not_ok "$f is included by umem.h" ;;
    esac
    printf '#include "%s"\n' "$f" > "$TMP/alone.c"
    if ${CC:-cc} -fsyntax-only -I. "$TMP/alone.c" 2> "$TMP/log" ||
        ! grep -q "is a part of umem.h: include umem.h instead" "$TMP/log"; then
        not_ok "$f refuses to be included alone" "$(cat "$TMP/log")"
    else
        ok "$f refuses to be included alone"
    fi
    lines=$(wc -l < "$f")
    if [ "$lines" -lt 700 ]; then
        ok "$f is under 700 lines"
    else
        not_ok "$f is under 700 lines" "it has $lines"
    fi
done
installed=$(make -s -n install DESTDIR="$TMP/stage" | grep -c 'umem/')
check "make install installs the parts" [ "$installed" -gt 0 ]

long=$(awk -f tests/funclen.awk umem.h umem/*.h libumem.c ./*.c ./*.h tests/*.c tests/*.h bench/*.c |
    awk '$3 > 60')
check "no function is over 60 lines" eval '[ -z "$long" ] || { echo "$long" >&2; false; }'

for prog in sharedhash esharedhash; do
    if (cd "$TMP" && gcc -Wall -Wextra -pthread -o "$prog" "$OLDPWD/$prog.c" 2> log &&
        [ ! -s log ]); then
        ok "$prog builds alone with gcc -Wall -Wextra -pthread, no warning"
    else
        not_ok "$prog builds alone with gcc -Wall -Wextra -pthread, no warning" "$(cat "$TMP/log")"
    fi
done

# The tests use the calls and the test hooks; libumem.c the calls and the
# internal interface (umem__die, umem__fresh, umem__exit_as).
inside=$(grep -now 'umem__[a-z_]*' tests/*.c | grep -v ':umem__hook_')
check "the tests reach umem's insides through the test hooks alone" \
    eval '[ -z "$inside" ] || { echo "$inside" >&2; false; }'
inside=$(grep -now 'umem__[a-z_]*\|UMEM__[A-Z_]*' libumem.c |
    grep -v ':umem__die$\|:umem__fresh$\|:umem__exit_as$')
check "libumem.c reaches umem's insides through its internal interface alone" \
    eval '[ -z "$inside" ] || { echo "$inside" >&2; false; }'
