#!/usr/bin/env bash
# The README's umem.h example compiles cleanly and runs as it says.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The fenced C block that holds a main().
awk '/^```c$/ {inside = 1; buf = ""; next}
     /^```$/ && inside {inside = 0; if (buf ~ /int main/) {printf "%s", buf; exit}}
     inside {buf = buf $0 "\n"}' README.md > "$tmp/example.c"
if ${CC:-cc} -Wall -Wextra -Werror -pthread -I. -o "$tmp/example" "$tmp/example.c" 2> "$tmp/log" &&
    out=$("$tmp/example") && [ "$out" = "hello from the parent" ]; then
    echo "ok - readme_umem_example"
else
    cat "$tmp/log" >&2
    echo "not ok - readme_umem_example"
fi
