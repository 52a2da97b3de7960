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
# internal interface: the names umem.h declares in its section of that
# name, before the test hooks.
inside=$(grep -now 'umem__[a-z_]*' tests/*.c | grep -v ':umem__hook_')
check "the tests reach umem's insides through the test hooks alone" \
    eval '[ -z "$inside" ] || { echo "$inside" >&2; false; }'
internal=$(sed -n '/---- the internal interface/,/---- test hooks/p' umem.h |
    grep -o 'umem__[a-z_]*(' | tr -d '(' | sort -u)
check "umem.h declares an internal interface" [ -n "$internal" ]
inside=$(grep -ow 'umem__[a-z_]*\|UMEM__[A-Z_]*' libumem.c | sort -u |
    grep -vxF -f <(printf '%s\n' "$internal"))
check "libumem.c reaches umem's insides through its internal interface alone" \
    eval '[ -z "$inside" ] || { echo "$inside" >&2; false; }'

# Each part uses what umem.h and the parts before it define, and calls a
# later part only through a prototype of umem.h or umem/internal.h; no
# other part declares another part's function (a forward declaration of
# its own, to be defined further down, is its business).
declared=$(cat umem.h umem/internal.h | grep '^static.*;$' | grep -oE 'umem_[a-z_0-9]+\(' |
    tr -d '(' | sort -u)
declare -A part_of
n=0
for f in $parts; do
    n=$((n + 1))
    for fn in $(awk '/^static / && !/;[[:space:]]*$/ && match($0, /umem_[a-z_0-9]+\(/) {
                         print substr($0, RSTART, RLENGTH - 1) }' "$f"); do
        [ -n "${part_of[$fn]:-}" ] || part_of[$fn]=$n:$f
    done
done
forward=""
stray=""
n=0
for f in $parts; do
    n=$((n + 1))
    for fn in $(grep -oE 'umem_[a-z_0-9]+\(' "$f" | tr -d '(' | sort -u); do
        d=${part_of[$fn]:-}
        [ -n "$d" ] && [ "${d%%:*}" -gt "$n" ] || continue
        grep -qxF "$fn" <<< "$declared" || forward="$forward $f:$fn(${d#*:})"
    done
    [ "$f" = umem/internal.h ] && continue
    for fn in $(grep '^static.*;$' "$f" | grep -oE 'umem_[a-z_0-9]+\(' | tr -d '('); do
        d=${part_of[$fn]:-}
        [ -z "$d" ] || [ "${d#*:}" = "$f" ] || stray="$stray $f:$fn(${d#*:})"
    done
done
check "no part calls a later part's function but through umem.h or umem/internal.h" \
    eval '[ -z "$forward" ] || { echo "undeclared:$forward" >&2; false; }'
check "no part but umem/internal.h declares another part's function" \
    eval '[ -z "$stray" ] || { echo "declared outside umem/internal.h:$stray" >&2; false; }'
