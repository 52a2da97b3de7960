#!/usr/bin/env bash
# The documents: the C examples of the README, of docs/ and of the manual
# pages: every one that holds a main() (a fenced ```c block in a Markdown
# file, an .EX block in man/) compiles without a warning against the
# checkout's headers and runs with exit status 0; the README's umem.h
# example prints what it says.  The README stays short, and every
# relative link of the Markdown files leads somewhere.
. "$(dirname "$0")/lib.sh"

docs=(README.md docs/*.md)
c_examples "$TMP" "${docs[@]}" man/*.[0-9]
examples=$(ls "$TMP"/*.c 2> /dev/null)
check "the README, docs/ and the manual have C examples" \
    [ -n "$(ls "$TMP"/README.md-*.c 2> /dev/null)" -a \
    -n "$(ls "$TMP"/design.md-*.c 2> /dev/null)" -a \
    -n "$(ls "$TMP"/umem.3-*.c 2> /dev/null)" ]
for c in $examples; do
    name="example ${c#"$TMP/"} compiles cleanly and runs"
    if ${CC:-cc} -Wall -Wextra -Werror -pthread -I. -o "${c%.c}" "$c" 2> "$TMP/log" &&
        timeout 60 "${c%.c}" > "${c%.c}.out" 2> "$TMP/log"; then
        ok "$name"
    else
        not_ok "$name" "$(cat "$TMP/log")"
    fi
done
umem_example=$(grep -l "hello from the parent" $examples | head -1)
check "the README's umem.h example prints its message" \
    [ -n "$umem_example" -a "$(cat "${umem_example%.c}.out" 2> /dev/null)" = "hello from the parent" ]

lines=$(wc -l < README.md)
if [ "$lines" -lt 350 ]; then
    ok "README.md is under 350 lines"
else
    not_ok "README.md is under 350 lines" "README.md has $lines lines; the rest belongs in docs/"
fi

# md_anchors FILE: the anchor of each heading of a Markdown file, outside
# code blocks, as GitHub makes them: lower case, punctuation but hyphens
# and underscores dropped, spaces made hyphens.
md_anchors() {
    awk '/^```/ { code = !code; next }
        !code && /^#+ / {
            s = tolower($0)
            sub(/^#+ /, "", s)
            gsub(/[^a-z0-9 _-]/, "", s)
            gsub(/ /, "-", s)
            print s
        }' "$1"
}
# md_links FILE: the target of each link and image of a Markdown file,
# outside code blocks, one a line.
md_links() {
    awk '/^```/ { code = !code; next } !code' "$1" |
        grep -o '\]([^) ]*)' | sed 's/^](//; s/)$//'
}
# link_broken FILE LINK: why a relative LINK of FILE leads nowhere, or
# nothing if it leads to a file (and, with an #anchor, to a heading of it).
link_broken() {
    local file=$1 link=$2 path anchor target
    case "$link" in
        [a-z]*:*) return ;; # http:, https:, mailto:
    esac
    path=${link%%#*}
    anchor=
    [ "$path" = "$link" ] || anchor=${link#*#}
    target=$file
    [ -z "$path" ] || target=$(dirname "$file")/$path
    if [ ! -e "$target" ]; then
        echo "$file: $link: no file $target"
    elif [ -n "$anchor" ] && ! md_anchors "$target" | grep -qx -- "$anchor"; then
        echo "$file: $link: no heading of $target has the anchor #$anchor"
    fi
}
broken=()
links=0
for f in "${docs[@]}"; do
    while IFS= read -r link; do
        links=$((links + 1))
        why=$(link_broken "$f" "$link")
        [ -z "$why" ] || broken+=("$why")
    done < <(md_links "$f")
done
name="every relative link of README.md and docs/*.md leads to a file and heading"
if [ "$links" -gt 0 ] && [ ${#broken[@]} -eq 0 ]; then
    ok "$name"
else
    not_ok "$name" "$links links, ${#broken[@]} broken:" "${broken[@]}"
fi
