#!/usr/bin/env bash
# Mutation testing of the allocator's tests (make mutants; never part of
# make test).  Each mutant of tests/mutants.txt, a small bug in umem.h,
# umem/*.h or libumem.c, is planted in a copy of the tree under $TMPDIR;
# the copy builds what each test needs and runs the allocator's tests in
# turn until one fails: the mutant is killed.  One line per mutant:
#
#   killed ID by TEST: NAME      a test failed (NAME: its first not ok line)
#   HANG ID: DESCRIPTION ...     only a time limit ended the tests: a hang,
#                                which the tests should turn into a quick,
#                                named failure
#   SURVIVED ID: DESCRIPTION     every test passed
#   BROKEN ID: WHY               the snippet is not found exactly once, or
#                                the mutant does not build
#
# then "N mutants: K killed, S survived, H by hanging, B broken".  The
# exit status is 0 only when every mutant is killed, none by hanging.
#
#   tests/mutants.sh [ID...]   those mutants only (default: all)
#   tests/mutants.sh -l        lists the mutants
#   tests/mutants.sh -c        checks that every mutant applies to the tree
#                              as it is (nothing built)
#   tests/mutants.sh -b ID...  with the baseline (below) as well
#
# A whole run also runs the tests on the tree unchanged, the baseline,
# alongside the mutants: if any fails there, the kills it made are no
# proof, and the run fails (status 2).
#
#   MUTANTS_JOBS      mutants at a time (default 2: each test uses a core
#                     or more of its own, and the machine is shared)
#   MUTANTS_TIMEOUT   the bound, in seconds, on each test program or script
#                     (default 1800: test_preload.sh takes 4 minutes on an
#                     idle machine, 15 on a busy one); reaching it is a
#                     hang, but the tests' own time limits come first
#   CHECK_TIME_LIMIT  each C test's own watchdog (tests/check.h), in
#                     seconds (default here 120, not 600)
#   MUTANTS_KEEP=1    keeps the copies of the tree (under $TMPDIR)
#   MUTANTS_LOGS=DIR  keeps the output of the test that ended each mutant
#                     in DIR/ID.out and DIR/ID.err
#
# The tests run cheapest and most telling first, so that most mutants
# cost one build and a few seconds; a mutant of libumem.c skips the
# programs that do not use it.  The runs with glibc's malloc, a
# reference, are left out (REFERENCE=0): a mutant cannot change them.
set -u
. "$(dirname "$0")/lib.sh"
shopt -u patsub_replacement 2> /dev/null # "&" in a replacement is literal
export LC_ALL=C

LIST=tests/mutants.txt
JOBS=${MUTANTS_JOBS:-2}
BOUND=${MUTANTS_TIMEOUT:-1800}
export CHECK_TIME_LIMIT=${CHECK_TIME_LIMIT:-120}
export REFERENCE=0

# The tests in the order they run: the program or script, what it needs
# built (make targets), and whether it tests umem.h alone (a mutant of
# libumem.c cannot change it) or libumem.so too.
TESTS=(
    "tests/test_fuzz_corpus|tests/test_fuzz_corpus|umem"
    "tests/test_umem|tests/test_umem|umem"
    "tests/test_umem_files|tests/test_umem_files|umem"
    "tests/test_umem_trim|tests/test_umem_trim|umem"
    "tests/test_policies|tests/test_policies|umem"
    "tests/test_libumem.sh|libumem.so tests/libumem_prog tests/libumem_boot.so|both"
    "tests/test_dropin.sh|libumem.so tests/libumem_info|both"
    "tests/test_debug.sh|tests/debug_bugs libumem.so sharedhash|both"
    "tests/test_guard.sh|tests/guard_prog libumem.so sharedhash|both"
    "tests/test_umem_regions|tests/test_umem_regions|umem"
    "tests/test_stats.sh|sharedhash esharedhash|umem"
    "tests/test_forks.sh|libumem.so tests/forks tests/faults.so|both"
    "tests/test_preload.sh|libumem.so sharedhash esharedhash|both"
)

# ---- the list ----------------------------------------------------------

ids=()
declare -A desc snip repl nsnip nrepl
fail_list() { # LINE-NUMBER MESSAGE
    echo "$LIST:$1: $2" >&2
    exit 2
}
read_list() {
    local line n=0 id="" text
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        case "$line" in
            "" | "#"*) continue ;;
            "@ "*)
                line=${line#@ }
                id=${line%% *}
                [ -z "${desc[$id]+set}" ] || fail_list $n "mutant $id named twice"
                [ "$line" != "$id" ] || fail_list $n "mutant $id has no description"
                ids+=("$id")
                desc[$id]=${line#* }
                snip[$id]="" repl[$id]="" nsnip[$id]=0 nrepl[$id]=0
                ;;
            - | "- "* | + | "+ "*)
                [ -n "$id" ] || fail_list $n "a line before the first mutant"
                text=${line:2}
                if [ "${line:0:1}" = - ]; then
                    [ "${nrepl[$id]}" -eq 0 ] ||
                        fail_list $n "mutant $id: a snippet line after its replacement"
                    [ "${nsnip[$id]}" -eq 0 ] || text=$'\n'$text
                    snip[$id]+=$text
                    nsnip[$id]=$((nsnip[$id] + 1))
                else
                    [ "${nrepl[$id]}" -eq 0 ] || text=$'\n'$text
                    repl[$id]+=$text
                    nrepl[$id]=$((nrepl[$id] + 1))
                fi
                ;;
            *) fail_list $n "not a mutant line: $line" ;;
        esac
    done < "$LIST"
    for id in "${ids[@]}"; do
        [ -n "${snip[$id]}" ] || fail_list $n "mutant $id has no snippet"
    done
}

# plant DIR ID [dry]: puts the mutant in the copy at DIR (with "dry",
# only looks).  Prints the file it changed, relative to DIR; or, with
# status 1, why it cannot.
plant() {
    local dir=$1 id=$2 dry=${3:-} f text rest count found="" total=0
    local s=${snip[$id]} r=${repl[$id]}
    for f in "$dir"/umem.h "$dir"/umem/*.h "$dir"/libumem.c; do
        [ -f "$f" ] || continue
        IFS= read -r -d '' text < "$f"
        rest=${text//"$s"/}
        count=$(((${#text} - ${#rest}) / ${#s}))
        [ "$count" -eq 0 ] && continue
        total=$((total + count))
        found=$f
    done
    if [ $total -eq 0 ]; then
        echo "mutant $id: snippet not found"
        return 1
    elif [ $total -gt 1 ]; then
        echo "mutant $id: snippet found $total times"
        return 1
    fi
    if [ -z "$dry" ]; then
        IFS= read -r -d '' text < "$found"
        printf '%s' "${text/"$s"/"$r"}" > "$found"
    fi
    echo "${found#"$dir"/}"
}

# ---- one mutant --------------------------------------------------------

# verdict OUT RC: how one test's run ended.  Prints "pass", "hang WHAT"
# or "fail WHAT".  A failure is a not ok line other than a time limit's
# (check.h's watchdog, a script's own timeout, and the "runs to the end"
# a script adds to one), or a non-zero exit with no not ok line; a run
# that the bound ended, or with time limits' not ok lines alone, is a
# hang.
verdict() {
    local out=$1 rc=$2 notok real
    notok=$(grep '^not ok - ' "$out")
    real=$(grep -v -e 'no result within its time limit' -e 'ends within [0-9]* s' \
        -e 'runs to the end' <<< "$notok")
    if [ -n "$notok" ] && [ -z "$real" ] &&
        ! grep -q -e 'no result within its time limit' -e 'ends within [0-9]* s' <<< "$notok"; then
        real=$notok # "runs to the end" alone: a crash, not a hang
    fi
    if [ -n "$real" ]; then
        echo "fail ${real%%$'\n'*}"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "hang no result within $BOUND s"
    elif [ -n "$notok" ]; then
        echo "hang ${notok%%$'\n'*}"
    elif [ "$rc" -ne 0 ]; then
        echo "fail exit status $rc"
    else
        echo pass
    fi
}

# session SID: the processes of session SID, from /proc (a test runs in
# a session of its own, which its children keep when their parent ends).
session() {
    cat /proc/[0-9]*/stat 2> /dev/null |
        awk -v sid="$1" '{ line = $0; sub(/.*\) /, "", line); split(line, f, " ") }
            f[4] == sid { print $1 }'
}

# end SID: ends every process of the test's session: the test, and any
# child it left behind (a child that hangs after a watchdog ended its
# parent would hold the test's output open for ever).
end() {
    local pids
    pids=$(session "$1")
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086 # one pid a word
    kill -TERM $pids 2> /dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(session "$1")
        [ -n "$pids" ] || return 0
        sleep 0.2
    done
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2> /dev/null
}

# watch PIDFILE: copies a test's output, and ends the test (its session,
# named in PIDFILE) at its first failure; a time limit's not ok line is no
# failure: the run goes on, in case a failure follows.
watch() {
    local line
    while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in
            *"no result within its time limit"* | *" ends within "* | *"runs to the end"*) ;;
            "not ok - "*)
                until [ -s "$1" ]; do :; done
                end "$(cat "$1")"
                break
                ;;
        esac
    done
    cat > /dev/null # what it wrote while it ended
}

# run_test DIR TEST: runs the test in the copy at DIR, within the bound;
# its output in DIR/out and DIR/err.  Its exit status.
run_test() {
    local dir=$1 pid rc
    rm -f "$dir/fifo"
    mkfifo "$dir/fifo"
    # The test's temporary files in the copy, which goes with them even
    # when a test is ended before it can remove its own.
    mkdir -p "$dir/tmp"
    rm -f "$dir/pid" "$dir/rc"
    # The test in a session of its own (setsid: its pid is the session's
    # id), under a shell that waits for it, then ends what it left: a test
    # killed by a signal makes that shell, not this one, print "Aborted"
    # (to /dev/null).
    {
        (cd "$dir" && TMPDIR=$dir/tmp exec setsid timeout -k 10 "$BOUND" "$2") \
            > "$dir/fifo" 2> "$dir/err" &
        echo $! > "$dir/pid"
        wait $!
        echo $? > "$dir/rc"
        end "$(cat "$dir/pid")"
    } 2> /dev/null &
    pid=$!
    watch "$dir/pid" < "$dir/fifo" > "$dir/out"
    wait $pid
    rc=$(cat "$dir/rc")
    rm -f "$dir/pid" "$dir/fifo" "$dir/rc"
    return "$rc"
}

# result ID STATUS LINE: the mutant's line, and its status for the summary.
result() {
    echo "$2" > "$TMP/status.$1"
    echo "$3"
}

# mutant ID: plants it in a fresh copy, then builds and runs each test
# until one fails.  ID "baseline" plants nothing.
mutant() {
    local id=$1 dir=$TMP/m.$1 start=$SECONDS file=none entry t targets scope v name
    mkdir "$dir"
    cp -a "$TMP/src/." "$dir"
    if [ "$id" != baseline ] && ! file=$(plant "$dir" "$id"); then
        result "$id" broken "BROKEN $id: $file"
        return
    fi
    for entry in "${TESTS[@]}"; do
        IFS='|' read -r t targets scope <<< "$entry"
        [ "$scope" = umem ] && [ "$file" = libumem.c ] && continue
        # shellcheck disable=SC2086 # the targets are words
        if ! make -s -C "$dir" $targets > "$dir/build.log" 2>&1; then
            result "$id" broken \
                "BROKEN $id: does not build ($targets): $(grep -m1 -i error "$dir/build.log")"
            return
        fi
        run_test "$dir" "$t"
        v=$(verdict "$dir/out" $?)
        name="${t#tests/}: ${v#* }"
        name=${name/not ok - /}
        case "$v" in
            fail* | hang*)
                [ -z "${MUTANTS_LOGS:-}" ] || {
                    cp "$dir/out" "$MUTANTS_LOGS/$id.out"
                    cp "$dir/err" "$MUTANTS_LOGS/$id.err"
                }
                ;;&
            fail*)
                result "$id" killed "killed $id by $name ($((SECONDS - start)) s)"
                break
                ;;
            hang*)
                result "$id" hang "HANG $id: ${desc[$id]:-} ($name)"
                break
                ;;
        esac
    done
    [ -e "$TMP/status.$id" ] || result "$id" survived "SURVIVED $id: ${desc[$id]:-}"
    [ "${MUTANTS_KEEP:-}" = 1 ] || rm -rf "$dir"
}

# ---- the run -----------------------------------------------------------

read_list
baseline=$(($# == 0)) mode=run
while getopts lcb opt; do
    case $opt in
        l) mode=list ;;
        c) mode=check ;;
        b) baseline=1 ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
selected=("${ids[@]}")
if [ $# -gt 0 ]; then
    selected=("$@")
    for id in "${selected[@]}"; do
        [ -n "${desc[$id]+set}" ] || {
            echo "no mutant $id in $LIST" >&2
            exit 2
        }
    done
fi

case $mode in
    list)
        for id in "${selected[@]}"; do echo "$id: ${desc[$id]}"; done
        exit 0
        ;;
    check)
        status=0
        for id in "${selected[@]}"; do
            if file=$(plant . "$id" dry); then
                echo "$id: $file"
            else
                echo "BROKEN $file"
                status=1
            fi
        done
        exit $status
        ;;
esac

# The copies are open to every user: tests/test_inputs.sh runs the
# programs as nobody.
chmod 755 "$TMP"
[ -z "${MUTANTS_LOGS:-}" ] || mkdir -p "$MUTANTS_LOGS"
if [ "${MUTANTS_KEEP:-}" = 1 ]; then
    trap - EXIT
    echo "# the copies are kept in $TMP"
fi
# A snapshot of the sources: every file git knows of or would add, as
# they are now, so that a long run is not changed by edits meanwhile.
mkdir "$TMP/src"
if git rev-parse --git-dir > /dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -xf - -C "$TMP/src"
else
    cp -a . "$TMP/src" && make -s -C "$TMP/src" clean
fi

# Ctrl-C or a kill: the mutants under way stop, and their tests end.
stop() {
    local p
    trap - INT TERM
    # shellcheck disable=SC2046 # one pid a word
    kill $(jobs -p) 2> /dev/null
    for p in "$TMP"/m.*/pid; do
        [ -e "$p" ] && end "$(cat "$p")"
    done
    wait
    exit 130
}
trap stop INT TERM

# The baseline first, in one of the slots; its line comes with the others.
[ $baseline = 0 ] || (
    line=$(mutant baseline)
    if [ "$(cat "$TMP/status.baseline")" = survived ]; then
        echo "baseline: the tests pass on the tree unchanged ($SECONDS s)"
    else
        echo "baseline FAILS: $line"
    fi
) &
for id in "${selected[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
        wait -n
    done
    mutant "$id" &
done
wait

killed=0 survived=0 hung=0 broken=0
for id in "${selected[@]}"; do
    case "$(cat "$TMP/status.$id" 2> /dev/null)" in
        killed) killed=$((killed + 1)) ;;
        survived) survived=$((survived + 1)) ;;
        hang) hung=$((hung + 1)) ;;
        *) broken=$((broken + 1)) ;;
    esac
done
echo "# $((SECONDS / 60)) min $((SECONDS % 60)) s, $JOBS at a time"
echo "${#selected[@]} mutants: $((killed + hung)) killed, $survived survived," \
    "$hung by hanging, $broken broken"
if [ $baseline = 1 ] && [ "$(cat "$TMP/status.baseline" 2> /dev/null)" != survived ]; then
    echo "the tests fail on the tree unchanged: its kills are no proof" >&2
    exit 2
fi
[ $survived -eq 0 ] && [ $hung -eq 0 ] && [ $broken -eq 0 ]
