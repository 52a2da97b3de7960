#!/usr/bin/env bash
# Runs the tests named on the command line, by default every test program
# and script under tests/, and ends with the line "N passed, N failed".
# Each test prints "ok - NAME" or "not ok - NAME"; tests/lib.sh counts
# them (tally_run), and a test that dies or exits non-zero without saying
# "not ok" counts as one more failure.
set -u
. "$(dirname "$0")/lib.sh"
[ $# -gt 0 ] || set -- tests/test_*
for t in "$@"; do
    case "$t" in
        *.c | *.h | *.o) continue ;;
    esac
    [ -x "$t" ] || continue
    tally_run "$t"
done
summary
