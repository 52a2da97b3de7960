#!/usr/bin/env bash
# Real programs to run an allocator under, one function per workload,
# shared by tests/test_preload.sh (the output with LD_PRELOAD must match
# the output without) and bench/preload.sh (time and peak RSS under each
# allocator).  A workload prints only what every run of it prints alike:
# results and checksums, never times, addresses or sizes on disk.
#
#   tests/workloads.sh NAME DIR    runs workload NAME in the empty directory DIR
#
# Everything a workload starts inherits its environment, so one LD_PRELOAD
# on the command above puts the whole workload on that allocator.
# Sourced, this file defines WORKLOADS and workload_missing only.

WORKLOADS="bash python perl sqlite sort xz pigz git gcc lua redis"

# The TOOL:PACKAGE pairs each workload needs, as Debian names them.
declare -A WORKLOAD_NEEDS=(
    [bash]="bash:bash"
    [python]="python3:python3"
    [perl]="perl:perl"
    [sqlite]="sqlite3:sqlite3"
    [sort]="sort:coreutils"
    [xz]="xz:xz-utils"
    [pigz]="pigz:pigz"
    [git]="git:git"
    [gcc]="gcc:gcc"
    [lua]="lua5.4:lua5.4"
    [redis]="redis-server:redis-server redis-cli:redis-tools redis-benchmark:redis-tools"
)

# workload_missing NAME: prints "TOOL PACKAGE" and succeeds if a tool the
# workload needs is not installed.
workload_missing() {
    local need
    for need in ${WORKLOAD_NEEDS[$1]}; do
        if ! command -v "${need%%:*}" > /dev/null; then
            echo "${need%%:*} ${need#*:}"
            return 0
        fi
    done
    return 1
}

WL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# lines SEED COUNT: COUNT pseudo-random text lines, the same on every run
# (a 32-bit linear congruential generator, exact in awk's doubles).
lines() {
    awk -v x="$1" -v n="$2" 'BEGIN {
        for (i = 0; i < n; i++) {
            x = (x * 69069 + 1) % 4294967296
            w = ""
            for (k = x % 7; k >= 0; k--)
                w = w sprintf(" %x", (x * (k + 3)) % 1048573)
            printf "%010d%s line %d\n", x % 1000000007, w, i
        }
    }'
}

# Large indexed and associative arrays, unset, slices and string operations.
wl_bash() {
    cat > "$1/arrays.sh" << 'EOF'
declare -a a
declare -A h
n=200000
for ((i = 0; i < n; i++)); do a[i]=$(((i * 7919 + 13) % 1000003)); done
sum=0
for v in "${a[@]}"; do ((sum += v)); done
echo "indexed: ${#a[@]} elements, sum $sum"
for ((i = 0; i < 100000; i++)); do h["key$((i * 31 % 100003))"]="value $i ${a[i]}"; done
echo "associative: ${#h[@]} keys, key31 = ${h[key31]}"
for ((i = 0; i < 100000; i += 2)); do unset "h[key$((i * 31 % 100003))]"; done
echo "after unset: ${#h[@]} keys"
for ((i = 1; i < n; i += 3)); do unset "a[i]"; done
b=("${a[@]:1000:50000}")
echo "sparse: ${#a[@]} left, slice of ${#b[@]} from ${b[0]} to ${b[-1]}"
s=""
for ((i = 0; i < 6000; i++)); do s+="${a[i * 3]:-x},"; done
t=${s//,/;}
u=${s//[13579]/}
words=(${s//,/ })
echo "string: ${#s} chars, ${#t} after replace, ${#u} without odd digits, ${#words[@]} words"
echo "substring: ${s:1000:40} ${s: -20}"
printf '%s\n' "${words[@]}" | cksum
EOF
    bash "$1/arrays.sh"
}

# Millions of objects made and dropped, in two threads, then a fork while a
# third thread still allocates; the child allocates and reports through a
# pipe and its exit status.
wl_python() {
    cat > "$1/objects.py" << 'EOF'
import gc, hashlib, os, threading

def churn(seed, n, rounds):
    total = 0
    for r in range(rounds):
        d = {i: (str(i * seed + r), [i, float(i) / 3, (i, seed)]) for i in range(n)}
        total += sum(len(v[0]) + len(v[1]) for v in d.values())
        big = [bytearray(i % 512) for i in range(n // 4)]
        total += sum(map(len, big))
        del d, big
    return total

results = {}
def worker(name, seed):
    results[name] = churn(seed, 150000, 3)

threads = [threading.Thread(target=worker, args=("t%d" % i, 7 + i)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("threads:", sorted(results.items()))

background = threading.Thread(target=worker, args=("bg", 11))
background.start()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    words = ["%x" % (i * 2654435761 % 2**32) for i in range(300000)]
    words.sort()
    digest = hashlib.sha256("".join(words).encode()).hexdigest()
    os.write(w, ("%d %s %s\n" % (len(words), words[0], digest)).encode())
    os._exit(len(words) % 251)
os.close(w)
with os.fdopen(r) as pipe:
    report = pipe.read()
_, status = os.waitpid(pid, 0)
print("child:", report.strip(), "exit", os.waitstatus_to_exitcode(status))
background.join()
print("background:", results["bg"])

strings = ["%d-%s" % (i, "ab" * (i % 40)) for i in range(400000)]
joined = ",".join(strings)
del strings
gc.collect()
print("strings:", len(joined), hashlib.sha256(joined.encode()).hexdigest())
EOF
    PYTHONMALLOC=malloc PYTHONHASHSEED=0 python3 "$1/objects.py"
}

# Hashes, string building and matching, and sorts.
wl_perl() {
    perl -e '
        use strict;
        use Digest::MD5 qw(md5_hex);
        my %h;
        $h{"k$_"} = ("v" x ($_ % 50)) . $_ for 0 .. 299999;
        my @keys = sort keys %h;
        print scalar(@keys), " keys, first $keys[0], last $keys[-1]\n";
        my $len = 0;
        $len += length($h{$_}) for @keys;
        print "total value length $len\n";
        delete @h{grep { /7$/ } @keys};
        print scalar(keys %h), " keys after delete\n";
        my @nums = sort { $a <=> $b } map { ($_ * 7919) % 1000003 } 0 .. 299999;
        print "sorted: @nums[0 .. 4] ... $nums[-1]\n";
        my $s = join ",", @nums;
        my @parts = split /,/, $s;
        (my $t = $s) =~ s/(\d+)/<$1>/g;
        print length($s), " ", scalar(@parts), " ", length($t), " ", md5_hex($t), "\n";
    '
}

# Insert, index, delete, vacuum and query a database file.
wl_sqlite() {
    sqlite3 "$1/test.db" << 'EOF'
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, s TEXT);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200000)
INSERT INTO t SELECT i, (i * 7919) % 100003, printf('row-%d-%s', i, hex(i * 31)) FROM c;
CREATE INDEX t_k ON t(k);
CREATE INDEX t_s ON t(s);
DELETE FROM t WHERE id % 3 = 0;
UPDATE t SET s = s || '-updated' WHERE id % 5 = 0;
VACUUM;
SELECT count(*), sum(k), min(s), max(s) FROM t;
SELECT k, count(*) FROM t GROUP BY k ORDER BY count(*) DESC, k LIMIT 5;
SELECT id, s FROM t WHERE k BETWEEN 500 AND 503 ORDER BY k, id;
SELECT sum(length(s)) FROM (SELECT s FROM t ORDER BY s DESC LIMIT 100000);
SELECT count(*) FROM t a JOIN t b ON a.k = b.id WHERE a.id < 50000;
PRAGMA integrity_check;
EOF
}

# A parallel sort with a buffer far smaller than its input, so it merges
# temporary files.
wl_sort() {
    lines 1 150000 > "$1/input"
    LC_ALL=C sort --parallel=2 -S 1M -T "$1" "$1/input" | cksum
    LC_ALL=C sort --parallel=2 -S 1M -T "$1" -k3,3n -k1,1r "$1/input" | cksum
    LC_ALL=C sort --parallel=2 -S 1M -T "$1" -u -k2,2 "$1/input" | wc -l
}

# Input for the compressors: text and random bytes.
compress_input() {
    {
        lines 2 60000
        cat "$WL_ROOT/samples/xs1M.bin"
    } > "$1"
}

# xz with two threads and blocks small enough to use both.
wl_xz() {
    compress_input "$1/data"
    xz -T2 --block-size=1MiB -6 -c "$1/data" > "$1/data.xz"
    cksum < "$1/data.xz"
    xz -T2 -d -c "$1/data.xz" | cksum
    cksum < "$1/data"
}

# pigz with two threads, no name or time in the header.
wl_pigz() {
    compress_input "$1/data"
    pigz -p 2 -n -c "$1/data" > "$1/data.gz"
    cksum < "$1/data.gz"
    pigz -p 2 -d -c "$1/data.gz" | cksum
    pigz -p 2 -n -9 -c "$1/data" | pigz -d -c | cksum
}

# A repository built commit by commit, with a branch merged, then packed,
# checked and read back.  Names, dates and configuration are fixed.
wl_git() {
    export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 TZ=UTC LC_ALL=C
    export GIT_AUTHOR_NAME=Ada GIT_AUTHOR_EMAIL=ada@example.org
    export GIT_COMMITTER_NAME=Ada GIT_COMMITTER_EMAIL=ada@example.org
    local repo=$1/repo i f
    git init -q -b main "$repo" || return 1
    cd "$repo" || return 1
    commit() { # N MESSAGE
        GIT_AUTHOR_DATE="@$((1700000000 + $1 * 60)) +0000" \
            GIT_COMMITTER_DATE="@$((1700000000 + $1 * 60)) +0000" \
            git commit -q -m "$2"
    }
    for i in $(seq 1 40); do
        for f in $(seq $((i % 7)) 7 30); do
            lines $((i * 31 + f)) $((50 + f * 5)) > "file$f.txt"
        done
        git add -A
        commit $i "change $i"
        if [ $i -eq 20 ]; then
            git checkout -q -b side
            for f in 1 2 3; do lines $((f + 500)) 80 > "side$f.txt"; done
            git add -A
            commit 100 "side work"
            git checkout -q main
        fi
    done
    GIT_AUTHOR_DATE="@1700009000 +0000" GIT_COMMITTER_DATE="@1700009000 +0000" \
        git merge -q --no-ff -m "merge side" side
    git rev-parse HEAD
    git -c pack.threads=2 gc -q
    git fsck --full --strict --no-progress && echo "fsck clean"
    git count-objects -v | grep -E '^(count|in-pack|packs|garbage):'
    git log --stat --date=iso --format='%H %an %ad %s' | cksum
    git log -p | cksum
    git rev-list --all --objects | sort | cksum
    git -c pack.threads=2 repack -q -a -d -f
    git count-objects -v | grep -E '^in-pack:'
    git blame -s file5.txt | cksum
    git diff --stat HEAD~10 | tail -n 1
    git archive --format=tar HEAD | cksum
}

# The project's sharedhash built from source, then hashing a sample.
wl_gcc() {
    (cd "$WL_ROOT" && gcc -O2 -Wall -Wextra -c -o "$1/sharedhash.o" sharedhash.c) || return 1
    cksum < "$1/sharedhash.o"
    (cd "$WL_ROOT" && gcc -O2 -Wall -Wextra -pthread -o "$1/sharedhash" sharedhash.c) || return 1
    "$1/sharedhash" "$WL_ROOT/samples/xs1M.bin"
    "$1/sharedhash" -t -j 2 "$WL_ROOT/samples/xs1M.bin"
}

# Tables, strings, sorting, coroutines and full collections.
wl_lua() {
    cat > "$1/tables.lua" << 'EOF'
local t = {}
for i = 1, 300000 do t[i] = string.format("item-%07d", (i * 7919) % 1000003) end
table.sort(t)
print(#t, t[1], t[#t])
local h = {}
for i, s in ipairs(t) do h[s] = i end
local n = 0
for _, v in pairs(h) do n = n + v end
print("hash sum", n)
local s = table.concat(t, ",", 1, 50000)
local _, digits = s:gsub("%d", "")
local parts = {}
for w in s:gmatch("[^,]+") do parts[#parts + 1] = w:upper():rep(2) end
print(#s, digits, #parts, parts[100])
t, h, parts = nil, nil, nil
collectgarbage("collect")
local co = coroutine.wrap(function()
    for i = 1, 200000 do coroutine.yield({ i, tostring(i), { i * 2 } }) end
end)
local sum = 0
for _ = 1, 200000 do
    local v = co()
    sum = sum + v[1] + #v[2] + v[3][1]
end
print("coroutine sum", sum)
local tree = {}
for i = 1, 100000 do tree[i % 1000 + 1] = { next = tree[i % 1000 + 1], v = i } end
local depth = 0
for i = 1, 1000 do
    local node = tree[i]
    while node do depth, node = depth + 1, node.next end
end
print("nodes", depth)
EOF
    lua5.4 "$1/tables.lua"
}

# redis-server with I/O threads on a free loopback port, loaded by
# redis-benchmark (whose timings are not output), then data written here
# read back and checked.  The server is always shut down.  The benchmark
# pipelines 10 commands per request: without that, the I/O threads spin
# for the cores the benchmark needs and one run takes 10 to 30 s on two.
wl_redis() {
    # Globals, not locals: the EXIT trap runs after this function returns.
    local dir=$1 i
    redis_port=""
    redis_pid=""
    stop_server() {
        [ -n "$redis_pid" ] || return 0
        kill -TERM "$redis_pid" 2> /dev/null
        for i in $(seq 100); do kill -0 "$redis_pid" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$redis_pid" 2> /dev/null
        wait "$redis_pid" 2> /dev/null
        redis_pid=""
    }
    trap stop_server EXIT
    trap 'exit 143' TERM INT
    for _ in $(seq 20); do
        redis_port=$((20000 + RANDOM % 30000))
        # something listens there already
        (exec 3<> "/dev/tcp/127.0.0.1/$redis_port") 2> /dev/null && continue
        redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
            --io-threads 2 --io-threads-do-reads yes --enable-debug-command local \
            --dir "$dir" --logfile "$dir/redis.log" &
        redis_pid=$!
        # Until it answers, for a minute by the clock: a busy machine may
        # take seconds to start it.
        local end=$((SECONDS + 60))
        while [ $SECONDS -lt $end ]; do
            kill -0 "$redis_pid" 2> /dev/null || break
            redis-cli -p "$redis_port" info server 2> /dev/null | tr -d '\r' |
                grep -qx "process_id:$redis_pid" && break 2
            sleep 0.05
        done
        stop_server # it could not bind the port, or never answered
    done
    if [ -z "$redis_pid" ]; then
        echo "redis: no server started" >&2
        return 1
    fi
    cli() { redis-cli -p "$redis_port" "$@"; }

    redis-benchmark -p "$redis_port" -q -n 20000 -c 20 -P 10 -t set,get,lpush,lpop,incr > "$dir/benchmark" 2>&1 ||
        { echo "redis-benchmark failed" >&2; return 1; }
    echo "after redis-benchmark: dbsize $(cli dbsize), counter $(cli get counter:__rand_int__), list $(cli llen mylist)"
    cli flushall > /dev/null

    # 10,000 strings of 1 to 3,000 bytes, lists, small hashes, sets, sorted sets
    awk 'function cmd(n, a,   i, s) {
            s = "*" n "\r\n"
            for (i = 1; i <= n; i++) s = s "$" length(a[i]) "\r\n" a[i] "\r\n"
            printf "%s", s
        }
        BEGIN {
            for (i = 0; i < 300; i++) pad = pad "abcdefghij"
            for (i = 0; i < 10000; i++) {
                a[1] = "SET"; a[2] = "key:" i
                a[3] = i ":" substr(pad, 1, (i * 7919) % 3000)
                cmd(3, a)
            }
            for (i = 0; i < 1000; i++) {
                a[1] = "RPUSH"; a[2] = "list:" (i % 100); a[3] = "item" i; cmd(3, a)
                a[1] = "HSET"; a[2] = "hash:" (i % 50); a[3] = "field" i; a[4] = i * i; cmd(4, a)
                a[1] = "SADD"; a[2] = "set:" (i % 20); a[3] = "member" (i * 7 % 1000); cmd(3, a)
                a[1] = "ZADD"; a[2] = "zset"; a[3] = (i * 31) % 1009; a[4] = "z" i; cmd(4, a)
            }
            for (i = 0; i < 10000; i += 7) { a[1] = "DEL"; a[2] = "key:" i; cmd(2, a) }
            for (i = 1; i < 10000; i += 5) { a[1] = "APPEND"; a[2] = "key:" i; a[3] = "+tail" i; cmd(3, a) }
        }' > "$dir/commands"
    cli --pipe < "$dir/commands" 2>&1 | grep '^errors:'
    echo "dbsize $(cli dbsize)"
    echo "digest $(cli debug digest)"
    cli --scan | LC_ALL=C sort | cksum
    awk 'BEGIN { for (i = 0; i < 10000; i++) print "GET key:" i }' | cli | cksum
    awk 'BEGIN {
        for (i = 0; i < 100; i++) print "LRANGE list:" i " 0 -1"
        for (i = 0; i < 50; i++) print "HGETALL hash:" i
        for (i = 0; i < 20; i++) print "SCARD set:" i
        print "ZRANGE zset 0 -1 WITHSCORES"
    }' | cli | cksum
    cli get key:1 | cut -c 1-60
    cli shutdown nosave > /dev/null 2>&1
    wait "$redis_pid"
    echo "server exit $?"
    redis_pid=""
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    if [ $# -ne 2 ] || [ -z "${WORKLOAD_NEEDS[$1]:-}" ] || [ ! -d "$2" ]; then
        echo "usage: $0 NAME DIR (NAME: $WORKLOADS; DIR an existing directory)" >&2
        exit 2
    fi
    dir=$(cd "$2" && pwd)
    cd "$dir" || exit 1
    "wl_$1" "$dir"
fi
