#!/usr/bin/env bash
# tests/check.h bounds every test from outside: tests/watchdog.c hangs on
# purpose (a child that blocks every signal, one that forks again and
# waits on a grandchild that holds the output, one that leaves a
# grandchild behind); each must end, named, within the harness's limits,
# with nothing left behind to hold a pipe open.
. "$(dirname "$0")/lib.sh"

prog=$TMP/watchdog-hangs
if ! ${CC:-cc} -Wall -Wextra -O2 -o "$prog" tests/watchdog.c 2> "$TMP/log"; then
    not_ok "tests/watchdog.c builds" "$(cat "$TMP/log")"
    exit 1
fi
# Through a pipe, as tests/run.sh reads a test: a process left holding it
# would keep cat waiting.  timeout bounds this script, not the test.  The
# program's own limits are its, not those a caller set for slow tools.
env -u CHECK_CHILD_LIMIT -u CHECK_TIME_LIMIT timeout -s KILL 120 bash -c 'set -o pipefail; "$1" 2> "$2" | cat' _ "$prog" "$TMP/err" > "$TMP/out"
status=$?
check "tests that hang end by themselves, with status 1 (not the outer time-out)" \
    [ "$status" -eq 1 ]
for t in child_blocks_every_signal grandchild_holds_the_output; do
    check "check.h names $t as not ok" grep -qx "not ok - $t" "$TMP/out"
    check "check.h says that $t's child was killed with its group" \
        grep -q "check: a child of $t outlived its time limit" "$TMP/err"
done
check "a child that exits leaving a grandchild is ok, the grandchild ended" \
    grep -qx "ok - grandchild_left_behind" "$TMP/out"
none_alive() {
    local p
    for p in $(alive_with "$prog"); do ended "$p" || return 1; done
}
check "no process of the hanging tests is left" wait_for 30 none_alive
