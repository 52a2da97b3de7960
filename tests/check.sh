#!/usr/bin/env bash
# make check: the tests again under AddressSanitizer + UndefinedBehavior-
# Sanitizer and under ThreadSanitizer, valgrind memcheck in every mode,
# helgrind and DRD on -t, the planted bugs of tests/debug_bugs.c under
# memcheck and AddressSanitizer, and a short libFuzzer run on umem.h.  A tool
# that is missing is a skip (a failure under CI=true: .ci/run installs
# them); ends with "N passed, N failed", counted as tests/run.sh counts.
set -u
. "$(dirname "$0")/lib.sh"
# Under valgrind and the sanitizers a test's child takes longer than the
# minute tests/test_umem.c gives it natively.
export CHECK_CHILD_LIMIT=${CHECK_CHILD_LIMIT:-600}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
result() { # NAME STATUS: one ok or not ok line
    if [ "$2" -eq 0 ]; then echo "ok - $1"; else echo "not ok - $1"; fi
}
needs() { # as have (tests/lib.sh), its line counted here
    have "$@" > "$TMP/have"
    local status=$?
    tally < "$TMP/have"
    return $status
}

CC=${CC:-cc}
# The tests check the plain heap's figures, sizes and layout: they are
# built without umem's AddressSanitizer support (its records, guards and
# quarantine change all three), which is tested below on its own.
build() { # DIR FLAGS...: both programs and the umem tests, each built alone
    local dir=$1
    shift
    mkdir -p "$dir"
    for p in sharedhash esharedhash; do
        $CC -Wall -Wextra -Werror -pthread -DUMEM_ASAN=0 "$@" -o "$dir/$p" $p.c || return 1
    done
    $CC -Wall -Wextra -pthread -DUMEM_ASAN=0 "$@" -o "$dir/test_umem" tests/test_umem.c &&
        $CC -Wall -Wextra -pthread -DUMEM_ASAN=0 "$@" -o "$dir/test_umem_regions" \
            tests/test_umem_regions.c &&
        $CC -Wall -Wextra -pthread -DUMEM_ASAN=0 "$@" -o "$dir/test_umem_files" \
            tests/test_umem_files.c tests/umem_other_file.c
}

# Sanitizers: the unit tests and the end-to-end suite, without a report.
# A report makes a run exit non-zero or print to stderr, and so fail.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:verify_asan_link_order=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
# Every test of the programs (install and the documentation's examples
# build nothing of their own to check).
end_to_end=$(ls tests/test_*.sh | grep -v -e test_install -e test_readme)
for san in "asan -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
    "tsan -fsanitize=thread"; do
    set -- $san
    dir=build/$1
    shift
    if build "$dir" -O1 -g "$@"; then
        tally < <(BIN=$dir SKIP_SLOW=1 tests/run.sh "$dir/test_umem" "$dir/test_umem_regions" \
            "$dir/test_umem_files" $end_to_end 2>&1 |
            sed "s/^\(\(not \)\{0,1\}ok - \)/\1[$(basename $dir)] /")
    else
        echo "not ok - [$(basename $dir)] build"
        failed=$((failed + 1))
    fi
done

# valgrind: memcheck (no error and no leak) in every mode, helgrind and
# DRD on -t.  Each runs twice: on a file of four chunks, which the workers
# read themselves, and on a pipe, whose chunks the reader hands out.  The
# -DBLOCKSIG_VALGRIND build tells helgrind and DRD about the hand-offs
# through pipes and sockets, which they cannot see.
if needs valgrind valgrind "[valgrind]"; then
    head -c 256K samples/xs1M.bin > build/xs256K.bin
    want=$(./sharedhash build/xs256K.bin)
    # TOOL-ARGS... -- PROGRAM ARGS...: runs it on both inputs, one result each
    under_valgrind() {
        local name=$1 how out rc
        shift
        for how in file pipe; do
            if [ $how = file ]; then
                out=$(valgrind -q --error-exitcode=99 "$@" build/xs256K.bin 2> build/vg.log)
            else
                out=$(valgrind -q --error-exitcode=99 "$@" - < <(cat build/xs256K.bin) 2> build/vg.log)
            fi
            [ "$out" = "$want" ] && [ ! -s build/vg.log ]
            rc=$?
            [ $rc -eq 0 ] || head -40 build/vg.log >&2
            tally < <(result "$name, from a $how" $rc)
        done
    }
    for p in sharedhash esharedhash; do
        for mode in "" -t -m; do
            under_valgrind "[memcheck] $p ${mode:-single}" --leak-check=full \
                --show-leak-kinds=all --errors-for-leak-kinds=all ./$p $mode -j 2
        done
    done
    if build build/valgrind -O1 -g -DBLOCKSIG_VALGRIND; then
        for tool in helgrind drd; do
            for p in sharedhash esharedhash; do
                under_valgrind "[$tool] $p -t" --tool=$tool build/valgrind/$p -t -j 3
            done
        done
    else
        tally <<< "not ok - [valgrind] build with -DBLOCKSIG_VALGRIND (valgrind's headers missing?)"
    fi
fi

# memcheck on the allocator's own tests (growth kept to 32 MiB: memcheck
# is slow); the death tests' children abort, as they should, quietly.
# UMEM_VALGRIND=0: umem tells memcheck nothing, so that the tests' own
# looks at headers and freed blocks are allowed (the planted bugs below
# test what memcheck is told).
# fork() from a signal handler is left to the native and ASan runs (see
# tests/test_umem.c).
if command -v valgrind > /dev/null; then
    UMEM_VALGRIND=0 UMEM_TEST_NO_HANDLER_FORK=1 UMEM_TEST_GROW_MIB=32 valgrind -q --error-exitcode=99 tests/test_umem \
        > build/vg-umem.out 2> build/vg-umem.log
    rc=$?
    grep -q '^not ok' build/vg-umem.out && rc=1
    [ $rc -eq 0 ] || { grep '^not ok' build/vg-umem.out; grep -v 'expected)$\|^umem_check' build/vg-umem.log | head -40; } >&2
    tally < <(result "[memcheck] tests/test_umem ($(grep -c '^ok' build/vg-umem.out) tests)" $rc)
fi

# The planted bugs of tests/debug_bugs.c on every kind of heap and in
# esharedhash's pools: memcheck must report each at its line (11 of 11,
# 10 in a pool, which has no memalign), AddressSanitizer each but the
# read of uninitialised memory, at its line or in umem's one-line report
# naming the block (a pool's leaked block is seen only as its pool's).
. tests/bugs.sh
# under_tool LABEL EXPECTED-MISSES RUNNER...: every bug on every kind.
under_tool() {
    local label=$1 misses=$2 kind bug found total rc
    shift 2
    for kind in $KINDS; do
        found=0 total=0
        for bug in $BUGS; do
            applies $kind $bug || continue
            total=$((total + 1))
            (timeout -k 5 300 "$@" $kind $bug; exit $?) > build/bug.out 2>&1
            if caught build/bug.out; then
                found=$((found + 1))
            elif ! grep -qw -- "$bug" <<< "$misses"; then
                echo "$label: $kind $bug not reported at its line:" >&2
                head -30 build/bug.out >&2
            fi
        done
        expected=$total
        for bug in $misses; do
            case "$kind:$bug" in
                pool:leak | *:uninitialised-read) applies $kind $bug && expected=$((expected - 1)) ;;
            esac
        done
        [ $found -ge $expected ]
        tally < <(result "[$label] planted bugs on a $kind heap: $found of $total reported" $?)
    done
}
if command -v valgrind > /dev/null; then
    under_tool memcheck "" valgrind -q --leak-check=full tests/debug_bugs
    # The seed's own command on the hasher, with a tree node never freed.
    rm -rf build/leaky && mkdir -p build/leaky && cp ./*.c ./*.h build/leaky/
    sed -i 's/^        ufree(n);$/        if (n->left) ufree(n); \/\* leaves leak \*\//' build/leaky/signature.h
    if ! grep -q 'leaves leak' build/leaky/signature.h; then
        tally <<< "not ok - [memcheck] the hasher with a planted leak (the sed found no ufree(n))"
    elif $CC -g -O1 -pthread -o build/leaky/esharedhash build/leaky/esharedhash.c; then
        valgrind --leak-check=full build/leaky/esharedhash build/xs256K.bin -t > /dev/null 2> build/leaky.log
        grep -q 'definitely lost' build/leaky.log && grep -q 'signature.h' build/leaky.log
        tally < <(result "[memcheck] valgrind --leak-check=full ./esharedhash FILE -t: a planted leak is definitely lost" $?)
        valgrind --leak-check=full ./esharedhash build/xs256K.bin -t > /dev/null 2> build/clean.log
        grep -q 'All heap blocks were freed\|definitely lost: 0 bytes' build/clean.log &&
            ! grep -q 'definitely lost: [1-9]' build/clean.log
        tally < <(result "[memcheck] valgrind --leak-check=full ./esharedhash FILE -t: no leak without it" $?)
    fi
fi
# Both programs with umem's AddressSanitizer support, as a user's ASan
# build gets them: the right signature in every mode and no report.
mkdir -p build/asan-umem
head -c 256K samples/xs1M.bin > build/xs256K.bin
for p in sharedhash esharedhash; do
    if ! $CC -Wall -Wextra -Werror -pthread -O1 -g -fsanitize=address,undefined \
        -fno-sanitize-recover=all -o build/asan-umem/$p $p.c; then
        tally <<< "not ok - [asan+umem] build $p"
        continue
    fi
    for mode in "" -t -m; do
        out=$(build/asan-umem/$p $mode -j 3 build/xs256K.bin 2> build/asan-umem/err)
        [ "$out" = "$(./sharedhash build/xs256K.bin)" ] && [ ! -s build/asan-umem/err ]
        rc=$?
        [ $rc -eq 0 ] || head -20 build/asan-umem/err >&2
        tally < <(result "[asan+umem] $p ${mode:-single}: the signature, no report" $rc)
    done
done
if $CC -g -O1 -rdynamic -fno-optimize-sibling-calls -fsanitize=address -fno-omit-frame-pointer -pthread \
    -o build/asan/debug_bugs tests/debug_bugs.c; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 under_tool asan "uninitialised-read leak" \
        build/asan/debug_bugs
    # A heap never destroyed: its leak is listed at exit, the status 23.
    (ASAN_OPTIONS=detect_leaks=1 timeout -k 5 300 build/asan/debug_bugs locked leak exit
        exit $?) > build/bug.out 2>&1
    rc=$?
    [ $rc -eq 23 ] && grep -q '^umem: leak: 100 bytes at' build/bug.out
    tally < <(result "[asan] a leak on a heap never destroyed is listed at exit, status 23" $?)
else
    tally <<< "not ok - [asan] build tests/debug_bugs.c"
fi

# libFuzzer on umem.h, from the committed corpus; a crash leaves its input
# in build/fuzz, to be added to tests/fuzz-corpus as a regression test.
fuzz_build() {
    clang -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -pthread -DUMEM_ASAN=0 \
        -o build/fuzz_umem tests/fuzz_umem.c 2> build/fuzz-build.log
}
if needs clang clang "[libFuzzer]" && needs libFuzzer libclang-rt-14-dev "[libFuzzer]" fuzz_build; then
    rm -rf build/fuzz && mkdir -p build/fuzz/corpus
    cp tests/fuzz-corpus/* build/fuzz/corpus/
    (cd build/fuzz && ../fuzz_umem -max_total_time="$FUZZ_SECONDS" -max_len=4096 \
        -print_final_stats=1 corpus > fuzz.log 2>&1)
    rc=$?
    [ $rc -eq 0 ] || { tail -30 build/fuzz/fuzz.log >&2; ls build/fuzz/crash-* >&2; }
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' build/fuzz/fuzz.log | grep -o '[0-9]*$')
    tally < <(result "[libFuzzer] umem.h for ${FUZZ_SECONDS}s (${runs:-no} inputs)" $rc)
fi

summary
