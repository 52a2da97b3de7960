# Shared by tests/test_debug.sh and tests/check.sh: the bugs that
# tests/debug_bugs plants, and how one run's report is judged.
BUGS="overrun underrun overread read-after-free write-after-free stale-after-realloc
uninitialised-read memalign-overrun double-free foreign-free leak"
KINDS="locked cached nolock pool"

# applies KIND BUG: whether the bug can be planted on that kind (a
# program's own pool has no memalign).
applies() {
    [ "$1" != pool ] || [ "$2" != memalign-overrun ]
}

# caught OUTPUT-FILE: whether the run's output reports the bug at its
# line (a tool's stack names tests/debug_bugs.c:LINE), or umem reports it
# on one line naming the block.  The program prints "block P line N".
caught() {
    local block line
    block=$(sed -n 's/^block \(0x[0-9a-f]*\) line [0-9]*$/\1/p' "$1" | head -1)
    line=$(sed -n 's/^block 0x[0-9a-f]* line \([0-9]*\)$/\1/p' "$1" | head -1)
    [ -n "$line" ] || return 1
    grep -q "debug_bugs\.c:$line\b" "$1" && return 0
    grep '^umem: ' "$1" | grep -q -- "$block"
}
