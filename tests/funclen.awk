# Prints "FILE:LINE: NAME LENGTH" for each function definition in the C
# files given: its length counts the lines from its signature's first line
# to its closing brace, in the layout this project's code has (a function
# begins at column 0 and its closing brace is at column 0).
FNR == 1 { sig = 0; inbody = 0 }
{
    if (!inbody) {
        if ($0 ~ /^[A-Za-z_][A-Za-z0-9_ \*\(\),]*\(/ && $0 !~ /;[ \t]*$/ && $0 !~ /^(typedef|struct [a-z_]+ \{|enum|#)/) { sig = FNR; name = $0 }
        else if ($0 ~ /^__attribute__/) { if (!sig) sig = FNR }
        if ($0 ~ /^\{/ && sig) { inbody = 1; start = sig }
        else if ($0 ~ /^[A-Za-z_].*\)[ \t]*\{[ \t]*$/ && $0 ~ /\(/) { inbody = 1; start = FNR; name = $0 }
        if ($0 ~ /^$/ || $0 ~ /;[ \t]*$/ && !inbody) sig = 0
    } else if ($0 ~ /^\}/) {
        n = FNR - start + 1
        sub(/\(.*/, "", name); k = split(name, a, /[ \*]+/)
        print FILENAME ":" start ": " a[k] " " n
        inbody = 0; sig = 0
    }
}
