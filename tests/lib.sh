# Helpers for the shell tests, sourced by each of them and by run.sh and
# check.sh.  Each check prints "ok - NAME" or "not ok - NAME", with details
# on stderr; tally counts those lines, summary ends a run with the total.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# The programs under test: the ones `make` builds, or a sanitizer build's.
BIN=${BIN:-.}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# ---- results -----------------------------------------------------------

ok() { echo "ok - $1"; }
not_ok() {
    echo "not ok - $1"
    shift
    [ $# -eq 0 ] || printf '  %s\n' "$@" >&2
}
# A condition of several commands goes in as one: check NAME eval '... && ...'
check() { # NAME CONDITION-COMMAND...
    local name=$1
    shift
    if "$@"; then ok "$name"; else not_ok "$name" "failed: $*"; fi
}

# The one count of ok and not ok lines, for tests/run.sh and tests/check.sh.
passed=0
failed=0
tally() { # passes test output through, counting its ok and not ok lines
    local line
    while IFS= read -r line; do
        case "$line" in
            [0-9]*" passed, "*" failed") continue ;; # a sub-run's own total
            "ok - "*) passed=$((passed + 1)) ;;
            "not ok - "*) failed=$((failed + 1)) ;;
        esac
        echo "$line"
    done
}
# tally_run TEST...: runs a test program or script and tallies its lines;
# one that exits non-zero without a "not ok" line is one more failure, so
# a crash is never a silent pass.
tally_run() {
    local before=$failed status
    "$@" > "$TMP/tally"
    status=$?
    tally < "$TMP/tally"
    if [ $status -ne 0 ] && [ $failed -eq $before ]; then
        tally <<< "not ok - $* exited with status $status"
    fi
}
summary() { # the last line of a run; its status is the run's
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# have TOOL PACKAGE NAME [PROBE...]: whether TOOL is installed (PROBE, when
# given, is run to tell; else `command -v TOOL`).  When it is not, the test
# NAME is skipped: "ok - NAME # SKIP no TOOL (apt-get install PACKAGE)";
# under CI=true, where .ci/run has installed every PACKAGE named here, a
# skip is a failure: "not ok - NAME # no TOOL (apt-get install PACKAGE)".
have() {
    local tool=$1 package=$2 name=$3
    shift 3
    if [ $# -gt 0 ]; then
        "$@" > /dev/null 2>&1 && return 0
    else
        command -v "$tool" > /dev/null && return 0
    fi
    if [ "${CI:-}" = true ]; then
        echo "not ok - $name # no $tool (apt-get install $package)"
    else
        echo "ok - $name # SKIP no $tool (apt-get install $package)"
    fi
    return 1
}

# ---- running the programs ----------------------------------------------

# run PROG ARGS...: sets $out, $err and $rc; never hangs past
# $RUN_LIMIT seconds (120 unless set), a limit only a hang comes near.
run() {
    timeout "${RUN_LIMIT:-120}" "$@" > "$TMP/out" 2> "$TMP/err"
    rc=$?
    out=$(cat "$TMP/out")
    err=$(cat "$TMP/err")
}

# reference COMMAND...: runs COMMAND, a test of glibc's malloc as the
# reference for libumem's, unless REFERENCE=0 (tests/mutants.sh, whose
# mutants cannot change glibc's behaviour).
reference() {
    [ "${REFERENCE:-1}" = 0 ] || "$@"
}

# expect_error NAME PATTERN COMMAND...: the command fails as every error
# must: exit 1, nothing on stdout, one line on stderr, matching PATTERN.
expect_error() {
    local name=$1 what=$2
    shift 2
    run "$@"
    if [ $rc -eq 1 ] && [ -z "$out" ] && [ "$(grep -c . "$TMP/err")" -eq 1 ] &&
        grep -q -- "$what" "$TMP/err"; then
        ok "$name"
    else
        not_ok "$name" "rc $rc, stdout '$out', stderr '$err'"
    fi
}

# expect_usage_errors PROG: for each line "ARGS|WORDS" on stdin, PROG ARGS
# is a usage error: exit 2, nothing on stdout, WORDS and the usage on
# stderr.
expect_usage_errors() {
    local prog=$1 args what
    while IFS='|' read -r args what; do
        run $BIN/$prog $args
        if [ $rc -eq 2 ] && [ -z "$out" ] && grep -q -- "$what" "$TMP/err" &&
            grep -q "^usage: $prog" "$TMP/err"; then
            ok "$prog usage error: $args"
        else
            not_ok "$prog usage error: $args" "rc $rc, stdout '$out', stderr '$err'"
        fi
    done
}

# ---- the known signatures (samples/SIGNATURES has every vector's) -------

XS=samples/xs1M.bin
XS_SIG="Final signature: 811138869"
signature_of() { # FILE: the line the programs print for a file of samples/
    awk -F'\t' -v f="${1##*/}" '$1 == f { print $2 }' samples/SIGNATURES
}
# Block hashes add modulo 2^31-1, so N copies of xs1M.bin end to end sign
# as N times xs1M.bin.
xs_copies() { # N FILE: writes the copies to FILE
    local i
    for i in $(seq "$1"); do cat "$XS"; done > "$2"
}
xs_signature() { # N: the line for N copies
    echo "Final signature: $((811138869 * $1 % 2147483647))"
}

# ---- documentation -----------------------------------------------------

# c_examples DIR FILE...: every C example of the FILEs that holds a main()
# (a fenced ```c block in Markdown, an .EX block in a manual page) goes to
# DIR/NAME-N.c, N from 1, with the roff escapes \e and \- undone.
c_examples() {
    local dir=$1 f c
    shift
    for f in "$@"; do
        awk -v out="$dir/${f##*/}" '
            /^```c$/ || /^\.EX$/ { inside = 1; buf = ""; next }
            (/^```$/ || /^\.EE$/) && inside {
                inside = 0
                if (buf ~ /int main/) printf "%s", buf > (out "-" ++n ".c")
            }
            inside { buf = buf $0 "\n" }' "$f"
    done
    for c in "$dir"/*.c; do
        case "$c" in
            *.[0-9]-*.c) sed -i 's/\\-/-/g; s/\\e/\\/g' "$c" ;;
        esac
    done
}

# ---- processes ---------------------------------------------------------

# How long a test waits for a state that comes at once on an idle
# machine (a process started, a signal acted on) before it calls that a
# failure.  Generous: a loaded machine may take seconds.  A test whose
# input could end by itself within this time proves nothing by waiting,
# so such inputs never end by themselves (a FIFO held open, or a file
# read slowly enough to take far longer).
LIMIT=60

# wait_for SECONDS COMMAND...: runs COMMAND every 20 ms until it succeeds;
# returns 1 if it has not within SECONDS, by the clock, however long each
# try takes.  Conditions are waited for, never slept for: how long they
# take is up to the machine.
wait_for() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.02
    done
}

# The pids whose parent is $1, from /proc, read by the shell itself: a
# process per /proc entry made one look take seconds on a busy machine,
# longer than some of the states it looked for lasted.
children_of() {
    local stat line found=""
    for stat in /proc/[0-9]*/stat; do
        { read -r line < "$stat"; } 2> /dev/null || continue
        line=${line##*) } # the fields after the name: state, then ppid
        line=${line#* }
        [ "${line%% *}" = "$1" ] || continue
        stat=${stat#/proc/}
        found="$found ${stat%/stat}"
    done
    echo $found
}

# Processes whose command line names the file $1: a run's parent and its
# workers all do (the workers are forks), and nothing else does.
alive_with() {
    # One grep over every command line, the name read from a pipe so that
    # grep's own command line does not hold it: on a busy machine, a
    # process per /proc entry made one poll take seconds, longer than
    # what it watched.
    local f found=""
    for f in $(grep -lasF -f <(printf '%s\n' "$1") /proc/[0-9]*/cmdline); do
        f=${f#/proc/}
        found="$found ${f%/cmdline}"
    done
    echo $found
}
count_alive_with() { # FILE N: whether exactly N processes name FILE
    [ "$(alive_with "$1" | wc -w)" -eq "$2" ]
}

ended() { # PID: whether it has exited (a zombie has too)
    ! kill -0 "$1" 2> /dev/null || [ "$(sed 's/.*) //' /proc/"$1"/stat 2> /dev/null | cut -c1)" = Z ]
}
has_children() { # PID N: whether PID has N children
    [ "$(children_of "$1" | wc -w)" -ge "$2" ]
}
waits_in_fifo_open() { # PID: whether it waits in open() for a FIFO's writer
    [ "$(cat /proc/"$1"/wchan 2> /dev/null)" = wait_for_partner ]
}

# start COMMAND...: runs it in the background, output in $TMP/out and
# $TMP/err; sets $parent.
start() {
    "$@" > "$TMP/out" 2> "$TMP/err" &
    parent=$!
}

# kill_a_worker NAME N: once $parent (see start) has its N worker
# processes, kills the first with SIGKILL and waits for the run to end;
# its input must not end by itself meanwhile (see LIMIT).  Sets $kids and
# $rc and returns 0 once it has ended; if it has not within $LIMIT
# seconds, reports NAME as failed, kills it all and returns 1.
kill_a_worker() {
    local name=$1 n=$2
    if wait_for $LIMIT has_children $parent $n; then
        kids=$(children_of $parent)
        kill -KILL ${kids%% *}
        wait_for $LIMIT ended $parent && {
            wait $parent
            rc=$?
            return 0
        }
        not_ok "$name" "still running $LIMIT s after a worker was killed"
    else
        not_ok "$name" "never had $n workers (children: $(children_of $parent))"
    fi
    kill -KILL $parent $(children_of $parent) 2> /dev/null
    wait $parent
    return 1
}

# skip_or_fail NAME TOOL PACKAGE: NAME cannot run because TOOL is missing
# (as have reports it).
skip_or_fail() {
    have "$2" "$3" "$1" false
}
