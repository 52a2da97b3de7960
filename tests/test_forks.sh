#!/usr/bin/env bash
# The malloc family around fork(), errno and allocation failure, with
# libumem.so and, as the reference, with glibc's malloc: fork() while
# threads hold stdio's locks and allocate, fork() from a signal handler
# that interrupts malloc, errno across free and realloc (also while every
# munmap, madvise and mremap fails), allocations that fail in threads
# under RLIMIT_AS.  The program is tests/forks (see its header); each run
# has a time limit, so a deadlock is a failure, never a hang.  The limit
# is generous: oom fills 300 MiB in each of 19 children, which takes a
# minute of CPU time, and far longer on a loaded machine.
. "$(dirname "$0")/lib.sh"

LIB=$PWD/libumem.so
PROG=tests/forks
FAULTS=$PWD/tests/faults.so
for f in "$LIB" "$PROG" "$FAULTS"; do
    if [ ! -e "$f" ]; then
        not_ok "$f is built (make test builds it)"
        exit 1
    fi
done

head -c 50000 /dev/zero | tr '\0' x > "$TMP/line"
echo >> "$TMP/line"

# mode LABEL ARGS -- [VAR=VALUE...]: one run of the program, within 900 s,
# its ok / not ok lines labelled; a hang, a crash or a silent failure is
# one more not ok.
mode() {
    local label=$1 args=()
    shift
    while [ "$1" != -- ]; do
        args+=("$1")
        shift
    done
    shift
    timeout -k 5 900 env "$@" "$PROG" "${args[@]}" > "$TMP/out" 2> "$TMP/err"
    local rc=$?
    sed "s/^\(\(not \)\{0,1\}ok - \)/\1[$label] /" "$TMP/out"
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        not_ok "[$label] ${args[0]} ends within 900 s" "a hang: killed after 900 s"
    elif ! grep -q '^ok - ' "$TMP/out" || { [ $rc -ne 0 ] && ! grep -q '^not ok - ' "$TMP/out"; }; then
        not_ok "[$label] ${args[0]} runs to the end" "exit status $rc"
    fi
    [ $rc -eq 0 ] || sed 's/^/  /' "$TMP/err" | head -20 >&2
}

for run in 1 2 3; do
    mode "libumem, run $run" stdio "$TMP/line" -- LD_PRELOAD="$LIB"
done
reference mode glibc stdio "$TMP/line" --
for run in 1 2 3; do
    mode "libumem, run $run" signal -- LD_PRELOAD="$LIB"
done
reference mode glibc signal --
# The same with UMEM_DEBUG=1: records, guards and the quarantine under the
# heap's lock, which a fork lends.
mode "libumem, UMEM_DEBUG=1" stdio "$TMP/line" -- LD_PRELOAD="$LIB" UMEM_DEBUG=1
mode "libumem, UMEM_DEBUG=1" signal -- LD_PRELOAD="$LIB" UMEM_DEBUG=1
mode libumem errno -- LD_PRELOAD="$LIB"
mode "libumem, munmap, madvise and mremap failing" errno -- LD_PRELOAD="$LIB:$FAULTS" FAULT=unmap-fails
reference mode glibc errno --
mode libumem oom -- LD_PRELOAD="$LIB"
reference mode glibc oom --
