# Sourced by the bench scripts (after $work is set): installs jemalloc,
# mimalloc, tcmalloc and gnuplot where this machine lets us (root and
# apt-get), and sets `preload`, each allocator's LD_PRELOAD library ("" for
# glibc).  A library that is not there is for the caller to report.
bench_pkgs="libjemalloc2 libmimalloc2.0 libgoogle-perftools4 gnuplot-nox"
if command -v apt-get > /dev/null && [ "$(id -u)" -eq 0 ]; then
    apt-get install -y $bench_pkgs > "$work/apt.log" 2>&1 ||
        { apt-get update > /dev/null 2>&1 && apt-get install -y $bench_pkgs > "$work/apt.log" 2>&1; } ||
        echo "bench: could not install $bench_pkgs; going on without what is missing" >&2
fi
bench_libdir=/usr/lib/$(gcc -print-multiarch 2> /dev/null || echo x86_64-linux-gnu)
declare -A preload=([glibc]="" [jemalloc]=$bench_libdir/libjemalloc.so.2
    [mimalloc]=$bench_libdir/libmimalloc.so.2 [tcmalloc]=$bench_libdir/libtcmalloc.so.4)
