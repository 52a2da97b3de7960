#!/usr/bin/env bash
# Runs the tests named on the command line, by default every test program
# and script under tests/, and ends with the line "N passed, N failed".  Each test prints "ok - NAME" or "not ok - NAME";
# a program that dies or exits non-zero without saying "not ok" counts as
# one more failure, so a crash is never a silent pass.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
[ $# -gt 0 ] || set -- tests/test_*
for t in "$@"; do
    case "$t" in
        *.c | *.h | *.o) continue ;;
    esac
    [ -x "$t" ] || continue
    out=$(mktemp)
    "$t" > "$out"
    rc=$?
    cat "$out"
    ok=$(grep -c '^ok - ' "$out")
    bad=$(grep -c '^not ok - ' "$out")
    passed=$((passed + ok))
    failed=$((failed + bad))
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
        echo "not ok - $t exited with status $rc"
        failed=$((failed + 1))
    fi
    rm -f "$out"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
