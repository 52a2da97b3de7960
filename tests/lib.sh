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
