# Helpers for the shell tests: each check prints "ok - NAME" or
# "not ok - NAME" (counted by tests/run.sh), with details on stderr.
cd "$(dirname "$0")/.." || exit 1
# The programs under test: the ones `make` builds, or a sanitizer build's.
BIN=${BIN:-.}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

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

# run PROG ARGS...: sets $out, $err and $rc; never hangs past 60 s.
run() {
    timeout 60 "$@" > "$TMP/out" 2> "$TMP/err"
    rc=$?
    out=$(cat "$TMP/out")
    err=$(cat "$TMP/err")
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

children_of() { # the pids whose parent is $1, from /proc
    local stat
    for stat in /proc/[0-9]*/stat; do
        awk -v p="$1" '{ sub(/.*\) /, ""); if ($2 == p) printf "%s ", FILENAME }' "$stat" 2> /dev/null
    done | sed 's|/proc/||g; s|/stat||g'
}

# skip_or_fail NAME TOOL PACKAGE: NAME cannot run because TOOL is missing;
# a skip, except under CI=true, where everything must run.
skip_or_fail() {
    if [ "${CI:-}" = true ]; then
        echo "not ok - $1 # no $2 (apt-get install $3)"
    else
        echo "ok - $1 # SKIP no $2 (apt-get install $3)"
    fi
}
