/*
 * libumem.c - umem as the malloc of any program:
 *
 *     make libumem.so
 *     LD_PRELOAD=./libumem.so PROGRAM ...
 *
 * Every allocation of the process comes from one heap made with
 * UMEM_GROW | UMEM_CACHED on the first call: small blocks from the calling
 * thread's cache, the others under the heap's lock, blocks of UMEM_LARGE
 * bytes and more in mappings of their own.  Exported, with glibc's
 * behaviour: malloc, free, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, valloc, pvalloc and malloc_usable_size, and
 * glibc's second names for seven of them (__libc_malloc ...); C23's
 * free_sized and free_aligned_sized; glibc's mallinfo2, mallinfo,
 * malloc_trim, malloc_stats, malloc_info and mallopt, answered from the
 * heap's statistics.  Nothing else (the library is built with
 * -fvisibility=hidden).
 *
 * THE FIRST CALL
 *   The heap is made under a mutex by the first thread to allocate, and
 *   published through one pointer; every later malloc pays one
 *   predictable test of that pointer (free none: see lu_pooled).
 *   umem_create itself calls into the C library (pthread_key_create,
 *   pthread_atfork, clock_gettime), which may allocate: a thread-local
 *   flag sends those allocations, and only those, to a static bootstrap
 *   arena.  Its blocks are never reused (free does
 *   nothing with them, realloc copies them into the heap), so they are
 *   zero when handed out, as calloc needs.
 *
 * CALLOC
 *   A compiler may turn "p = malloc(n); memset(p, 0, n)" into a call to
 *   calloc, which here would call itself.  Nothing in this file calls the
 *   functions it defines by their names: each exported function is a thin
 *   wrapper over static helpers and umem.h, and the Makefile adds
 *   -fno-builtin-malloc and friends as well.
 *
 * THREADS AND FORK
 *   umem.h does the work: a thread's cache goes back to the heap when the
 *   thread ends, allocations made later by the thread's other destructors
 *   take the heap's lock, and the heap's lock is held across fork() so
 *   that the child finds the heap whole.
 *
 * UMEM_DEBUG
 *   With UMEM_DEBUG set to anything but "" or "0", the heap is made with
 *   UMEM_DEBUG (guards, a quarantine, one-line reports: see umem.h), and
 *   the blocks still allocated at exit are listed on standard error.
 *
 * UMEM_STATS
 *   With UMEM_STATS set to anything but "" or "0" when the program
 *   starts, the heap's figures go to standard error when it exits, one
 *   "name value" per line, or one JSON object for "json" (through a copy
 *   of descriptor 2 made at start, since many programs close standard
 *   error before they exit).
 *
 * LARGE BLOCKS
 *   A block gets a mapping of its own from 8 MiB (umem.h's default is
 *   1 MiB): blocks of a few MiB that a program grows by realloc, as Perl
 *   does, then grow in place inside the heap, which was a little faster
 *   than growing mappings with mremap (the Perl workload of
 *   tests/workloads.sh: 1.65 s against 1.70 s, medians of 3 paired runs).
 *   A large free block inside the heap gives its pages back after the
 *   purge delay.
 */
#define UMEM_LARGE      ((size_t)8 << 20)
#define UMEM_ONE_HEAP   1 /* one heap, never destroyed: a thread's pool is its own */
#define UMEM_OWN_MODULE 1 /* reports leave this library's frames out */
#include "umem.h"

#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>

#if defined(__GNUC__)
#define LU_EXPORT      __attribute__((visibility("default")))
#define LU_SLOW        __attribute__((noinline, cold))
#define LU_NOINLINE    __attribute__((noinline))
#define LU_HOT         __attribute__((always_inline)) inline
#define LU_LIKELY(x)   __builtin_expect(!!(x), 1)
#define LU_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LU_EXPORT
#define LU_SLOW
#define LU_NOINLINE
#define LU_HOT         inline
#define LU_LIKELY(x)   (x)
#define LU_UNLIKELY(x) (x)
#endif

/* The size the heap starts with; it grows as the program needs. */
#define LU_INITIAL ((size_t)1 << 20)

/* The bootstrap arena: enough for what the C library allocates while
 * the heap is being made (usually nothing). */
#define LU_BOOT_BYTES ((size_t)64 << 10)

/* The heap, NULL until made.  Loaded with acquire so that a thread that
 * sees it also sees the heap's contents (a plain load on x86). */
static umem_t *_Atomic lu_heap;
static pthread_mutex_t lu_init_lock = PTHREAD_MUTEX_INITIALIZER;
static UMEM_TLS int lu_creating; /* this thread is inside umem_create */

static _Alignas(64) unsigned char lu_boot[LU_BOOT_BYTES];
static size_t lu_boot_used; /* by the creating thread, under lu_init_lock */

static int lu_stats_wanted;

/* The heap again, once made, when it has pools and no tool watches it:
 * malloc takes its fast way through it. */
static umem_t *_Atomic lu_plain;

/* Or, when UMEM_GUARD=N (N > 1) alone watches it: malloc counts down to
 * the next guarded block inline; the rest takes umem_alloc's way. */
static umem_t *_Atomic lu_sampled;

/* Either of the two: free gives a pooled slot back through it at once (a
 * guarded block lies in no page, and takes umem_free's way).  Until then
 * (or for good, when a tool watches the heap), a heap with no unit map,
 * in which no address lies in a page: free tests no pointer for NULL. */
static umem_t lu_no_pages;
static umem_t *_Atomic lu_pooled = &lu_no_pages;

static inline umem_t *lu_get(void)
{
    return atomic_load_explicit(&lu_heap, memory_order_acquire);
}

/* ---- the bootstrap arena ----
 * A block is [size][pad][payload]: the size the caller asked for sits in
 * the word just before the payload. */

static inline int lu_boot_owns(const void *p)
{
    return (uintptr_t)p - (uintptr_t)lu_boot < LU_BOOT_BYTES;
}

static inline size_t lu_boot_size(const void *p)
{
    return ((const size_t *)p)[-1];
}

static LU_SLOW void *lu_boot_alloc(size_t n, size_t align)
{
    if (align < UMEM_ALIGN)
        align = UMEM_ALIGN;
    uintptr_t base = (uintptr_t)lu_boot;
    if (align <= LU_BOOT_BYTES && n <= LU_BOOT_BYTES) {
        uintptr_t at =
            (base + lu_boot_used + sizeof(size_t) + align - 1) & ~(uintptr_t)(align - 1);
        if (at - base <= LU_BOOT_BYTES - n) {
            ((size_t *)at)[-1] = n;
            lu_boot_used = at - base + n;
            return (void *)at;
        }
    }
    errno = ENOMEM;
    return NULL;
}

/* ---- the heap ---- */

static int lu_debug; /* UMEM_DEBUG: list the blocks left at exit */

/* UMEM_DEBUG: the heap is checked at exit and the blocks still allocated
 * listed (the C library's own, such as stdio's buffers, among them), the
 * exit status left alone unless UMEM_EXITCODE names one. */
static void lu_debug_at_exit(umem_t *h)
{
    const char *code = getenv("UMEM_EXITCODE");
    umem__exit_as(h, "still allocated at exit", code ? atoi(code) : 0);
}

/* ---- UMEM_GUARD ----
 * Set to N (1: every block), the heap puts one block in N on pages of
 * its own beside a no-access page (umem.h reads N and UMEM_GUARD_BELOW),
 * and malloc(0) may return a pointer any access to which faults. */

static int lu_guard;

static unsigned lu_guard_flag(void)
{
    const char *guard = getenv("UMEM_GUARD");
    lu_guard = guard && *guard && strcmp(guard, "0") != 0;
    return lu_guard ? UMEM_GUARD : 0;
}

static LU_SLOW void *lu_malloc_zero(umem_t *h)
{
    void *p = lu_guard ? umem_alloc(h, 0) : NULL;
    return p ? p : umem_alloc(h, 1);
}

static LU_SLOW umem_t *lu_create(void)
{
    pthread_mutex_lock(&lu_init_lock);
    umem_t *h = atomic_load_explicit(&lu_heap, memory_order_relaxed);
    if (!h) {
        int saved = errno;
        lu_creating = 1;
        const char *debug = getenv("UMEM_DEBUG");
        unsigned flags = UMEM_GROW | UMEM_CACHED;
        lu_debug = debug && *debug && strcmp(debug, "0") != 0;
        if (lu_debug)
            flags |= UMEM_DEBUG;
        flags |= lu_guard_flag();
        h = umem_create(LU_INITIAL, flags);
        lu_creating = 0;
        if (h) {
            umem_t *_Atomic *fast = umem__plain_pools(h)     ? &lu_plain
                                    : umem__sampled_pools(h) ? &lu_sampled
                                                             : NULL;
            if (fast) {
                atomic_store_explicit(fast, h, memory_order_release);
                atomic_store_explicit(&lu_pooled, h, memory_order_release);
            }
            if (lu_debug)
                lu_debug_at_exit(h);
            atomic_store_explicit(&lu_heap, h, memory_order_release);
            errno = saved; /* a failed attempt on the way is no error */
        }
    }
    pthread_mutex_unlock(&lu_init_lock);
    return h;
}

/* n bytes (at least 1) aligned to `align`, a power of two. */
static inline void *lu_alloc(umem_t *h, size_t n, size_t align)
{
    n += n == 0;
    if (align <= UMEM_ALIGN)
        return umem_alloc(h, n);
    return umem_memalign(h, align, n);
}

/* Any allocation made before the heap exists. */
static LU_SLOW void *lu_alloc_slow(size_t n, size_t align)
{
    if (lu_creating)
        return lu_boot_alloc(n + (n == 0), align);
    umem_t *h = lu_create();
    if (!h) {
        errno = ENOMEM;
        return NULL;
    }
    return lu_alloc(h, n, align);
}

/* A pointer neither the heap nor the arena can have returned, while
 * there is no heap yet: misuse, reported as umem.h reports it. */
static _Noreturn LU_SLOW void lu_not_ours(const char *call, const void *p)
{
    char what[96];
    snprintf(what, sizeof what, "%s of a pointer outside the heap or misaligned:", call);
    umem__die(what, p);
}

static LU_SLOW void lu_free_slow(void *p)
{
    if (p && !lu_boot_owns(p))
        lu_not_ours("free", p);
}

/* realloc of a bootstrap block, or of anything before the heap exists. */
static LU_SLOW void *lu_realloc_slow(void *p, size_t n)
{
    if (!p)
        return lu_alloc_slow(n, 0);
    if (!lu_boot_owns(p))
        lu_not_ours("realloc", p);
    if (n == 0)
        return NULL; /* "freed": an arena block is never reused */
    umem_t *h = lu_get();
    void *q = h ? umem_alloc(h, n) : lu_alloc_slow(n, 0);
    if (q) {
        size_t old = lu_boot_size(p);
        memcpy(q, p, old < n ? old : n);
    }
    return q;
}

static inline void *lu_realloc(void *p, size_t n)
{
    umem_t *h = lu_get();
    if (LU_UNLIKELY(!h || lu_boot_owns(p)))
        return lu_realloc_slow(p, n);
    if (!p)
        return umem_alloc(h, n + (n == 0));
    return umem_realloc(h, p, n); /* n == 0: frees p, returns NULL */
}

/* `align` is a power of two. */
static inline void *lu_memalign(size_t align, size_t n)
{
    umem_t *h = lu_get();
    if (LU_UNLIKELY(!h))
        return lu_alloc_slow(n, align);
    return lu_alloc(h, n, align);
}

/* Whether a block just allocated is known to be zero: an arena block
 * (never reused), or a large block in a mapping of its own fresh from
 * mmap (not one that served another block).  Any other may have been used
 * before. */
static inline int lu_fresh(umem_t *h, const char *p, size_t n)
{
    if (lu_boot_owns(p))
        return 1;
    return h && umem__fresh(h, p, n);
}

static inline int lu_mul_overflows(size_t a, size_t b, size_t *product)
{
    if (b != 0 && a > SIZE_MAX / b)
        return 1;
    *product = a * b;
    return 0;
}

static inline size_t lu_page(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

/* ---- the malloc family ----
 * The bodies of the calls glibc also exports under a second name
 * (__libc_malloc and the rest, below) are static, each exported function
 * a call of one: a function's code keeps its one name. */

static LU_SLOW void *lu_malloc_rest(size_t n)
{
    umem_t *h = lu_get();
    if (LU_UNLIKELY(!h))
        return lu_alloc_slow(n, 0);
    if (LU_UNLIKELY(n == 0))
        return lu_malloc_zero(h);
    return umem_alloc(h, n);
}

/* A small request on a sampled heap that this thread's countdown does
 * not draw goes straight to its pool too. */
static LU_NOINLINE void *lu_malloc_sampled(size_t n)
{
    umem_t *h = atomic_load_explicit(&lu_sampled, memory_order_acquire);
    if (h && n - 1 < 1024 && umem__guard_skip())
        return umem__alloc(h, n);
    return lu_malloc_rest(n);
}

/* What malloc's first look did not serve: a small request on the plain
 * heap goes to its pool's slow way (which makes the thread's pool when
 * its time comes, umem(3) Pools), a sampled heap's to its countdown. */
static LU_NOINLINE void *lu_malloc_other(size_t n)
{
    umem_t *h = atomic_load_explicit(&lu_plain, memory_order_acquire);
    if (h != NULL && n - 1 < UMEM_SERVE_MAX)
        return umem__alloc(h, n);
    return lu_malloc_sampled(n);
}

/* A small request on the plain heap: the first free slot of the page
 * that serves its size in the thread's pool (none until the pool is made,
 * and none on a heap a tool watches). */
static LU_HOT void *lu_malloc(size_t n)
{
    void *p = umem__alloc_served(n);
    if (LU_LIKELY(p != NULL))
        return p;
    return lu_malloc_other(n);
}

/* Whatever free's fast ways did not take: NULL, an arena block, a block
 * with a header, any block of a watched heap; or no heap yet. */
static LU_SLOW void lu_free_rest(void *p)
{
    umem_t *h = lu_get();
    if (!h || lu_boot_owns(p))
        lu_free_slow(p);
    else
        umem_free(h, p);
}

/* NULL (the C library frees many at a thread's start and end), or no
 * pooled slot. */
static LU_NOINLINE void lu_free_other(void *p)
{
    if (p == NULL)
        return;
    lu_free_rest(p);
}

/* A pooled slot first: the arena lies in no page, so it is looked for
 * only after the page lookup failed. */
static LU_HOT void lu_free(void *p)
{
    umem_t *h = atomic_load_explicit(&lu_pooled, memory_order_acquire);
    if (LU_LIKELY(umem__free_pooled(h, p)))
        return;
    lu_free_other(p);
}

static inline void *lu_calloc(size_t count, size_t size)
{
    size_t n;
    if (lu_mul_overflows(count, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    umem_t *h = lu_get();
    char *p = LU_UNLIKELY(!h) ? lu_alloc_slow(n, 0) : umem_alloc(h, n + (n == 0));
    if (p && !lu_fresh(h, p, n))
        memset(p, 0, n);
    return p;
}

LU_EXPORT void *malloc(size_t n)
{
    return lu_malloc(n);
}

LU_EXPORT void free(void *p)
{
    lu_free(p);
}

LU_EXPORT void *calloc(size_t count, size_t size)
{
    return lu_calloc(count, size);
}

LU_EXPORT void *realloc(void *p, size_t n)
{
    return lu_realloc(p, n);
}

LU_EXPORT void *reallocarray(void *p, size_t count, size_t size)
{
    size_t n;
    if (lu_mul_overflows(count, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return lu_realloc(p, n);
}

LU_EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    void *p = lu_memalign(align, n);
    if (!p)
        return errno = ENOMEM; /* and errno too, as glibc's does */
    *out = p;
    return 0;
}

/* C17: an alignment the implementation does not support is an error. */
LU_EXPORT void *aligned_alloc(size_t align, size_t n)
{
    if (align == 0 || (align & (align - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    return lu_memalign(align, n);
}

/* Any alignment: rounded up to a power of two, as glibc does. */
static inline void *lu_memalign_any(size_t align, size_t n)
{
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    size_t a = 1;
    while (a < align)
        a <<= 1;
    return lu_memalign(a, n);
}

LU_EXPORT void *memalign(size_t align, size_t n)
{
    return lu_memalign_any(align, n);
}

LU_EXPORT void *valloc(size_t n)
{
    return lu_memalign(lu_page(), n);
}

/* n rounded up to whole pages, at least one. */
static inline void *lu_pvalloc(size_t n)
{
    size_t page = lu_page();
    if (n > SIZE_MAX - (page - 1)) {
        errno = ENOMEM;
        return NULL;
    }
    n = n == 0 ? page : (n + page - 1) & ~(page - 1);
    return lu_memalign(page, n);
}

LU_EXPORT void *pvalloc(size_t n)
{
    return lu_pvalloc(n);
}

LU_EXPORT size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    if (lu_boot_owns(p))
        return lu_boot_size(p);
    umem_t *h = lu_get();
    if (!h)
        lu_not_ours("usable size", p);
    return umem_usable_size(h, p);
}

/* ---- glibc's own entry points, and C23's sized frees ----
 * __libc_malloc and the rest are the names glibc gives its allocator
 * besides the standard ones; a program or a library that calls them
 * directly must reach the same heap as free().  Few do: they are cold,
 * so that the compiler spends its inlining on the standard names, whose
 * code stays as it was without them. */

LU_EXPORT LU_SLOW void *__libc_malloc(size_t n)
{
    return lu_malloc(n);
}

LU_EXPORT LU_SLOW void __libc_free(void *p)
{
    lu_free(p);
}

LU_EXPORT LU_SLOW void *__libc_calloc(size_t count, size_t size)
{
    return lu_calloc(count, size);
}

LU_EXPORT LU_SLOW void *__libc_realloc(void *p, size_t n)
{
    return lu_realloc(p, n);
}

LU_EXPORT LU_SLOW void *__libc_memalign(size_t align, size_t n)
{
    return lu_memalign_any(align, n);
}

LU_EXPORT LU_SLOW void *__libc_valloc(size_t n)
{
    return lu_memalign(lu_page(), n);
}

LU_EXPORT LU_SLOW void *__libc_pvalloc(size_t n)
{
    return lu_pvalloc(n);
}

/* A sized free whose size or alignment does not match the block: one
 * line naming both, then abort(). */
static _Noreturn LU_SLOW void lu_bad_size(const char *call, const void *p, size_t given,
                                          size_t holds)
{
    char what[160];
    snprintf(what, sizeof what,
             "%s of a block with a size it was not allocated with "
             "(%zu given, the block %s %zu):",
             call, given, lu_debug ? "was asked for" : "holds", holds);
    umem__die(what, p);
}

/* free_sized and free_aligned_sized: the checks, then the free; one
 * copy of the free path for both (free_sized's alignment is 1).  Under
 * UMEM_DEBUG, n must be the size the block was asked for (0 for a
 * request of 0); otherwise n must not exceed what the block can hold,
 * which costs no more than the free. */
static LU_NOINLINE void lu_sized_free(const char *call, void *p, size_t align, size_t n)
{
    umem_t *h = lu_get();
    if (LU_UNLIKELY(!h || lu_boot_owns(p))) {
        lu_free_slow(p);
        return;
    }
    if (!p)
        return;
    if (align == 0 || (align & (align - 1)) != 0 || (uintptr_t)p % align != 0) {
        char what[128];
        snprintf(what, sizeof what,
                 "%s of a block with an alignment it was not allocated with (%zu):", call,
                 align);
        umem__die(what, p);
    }
    size_t holds = umem_usable_size(h, p); /* UMEM_DEBUG: the size asked for */
    if (lu_debug ? n != holds && !(n == 0 && holds == 1) : n > holds)
        lu_bad_size(call, p, n, holds);
    umem_free(h, p);
}

LU_EXPORT void free_sized(void *p, size_t n)
{
    lu_sized_free("free_sized", p, 1, n);
}

LU_EXPORT void free_aligned_sized(void *p, size_t align, size_t n)
{
    lu_sized_free("free_aligned_sized", p, align, n);
}

/* ---- UMEM_STATS ----
 * Programs may close standard error before they exit (GNU programs do,
 * to report a failed write), so the figures go to a copy of it made at
 * start, placed high so as not to take the program's next descriptor,
 * and closed on exec; or to descriptor 2 if that copy was closed or now
 * names another file. */

#define LU_STATS_FD_MIN 512

static int lu_stats_fd = -1;
static int lu_stats_json; /* UMEM_STATS=json: one JSON object */
static struct stat lu_stats_st;

__attribute__((constructor)) static void lu_stats_init(void)
{
    const char *s = getenv("UMEM_STATS");
    lu_stats_wanted = s && *s && strcmp(s, "0") != 0;
    lu_stats_json = lu_stats_wanted && strcmp(s, "json") == 0;
    if (!lu_stats_wanted)
        return;
    lu_stats_fd = fcntl(2, F_DUPFD_CLOEXEC, LU_STATS_FD_MIN);
    if (lu_stats_fd < 0)
        lu_stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (lu_stats_fd >= 0 && fstat(lu_stats_fd, &lu_stats_st) != 0) {
        close(lu_stats_fd);
        lu_stats_fd = -1;
    }
}

static int lu_stats_out(void)
{
    struct stat st;
    if (lu_stats_fd >= 0 && fstat(lu_stats_fd, &st) == 0 &&
        st.st_dev == lu_stats_st.st_dev && st.st_ino == lu_stats_st.st_ino)
        return lu_stats_fd;
    return 2;
}

/* The process's minor page faults so far (its own and its waited-for
 * children's are apart: this is its own). */
static uint64_t lu_minor_faults(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (uint64_t)ru.ru_minflt : 0;
}

/* The heap's figures, all 0 before it exists. */
static LU_SLOW void lu_stats_get(umem_stats_t *st)
{
    umem_t *h = lu_get();
    if (h)
        umem_get_stats(h, st);
    else
        memset(st, 0, sizeof *st);
}

struct lu_row {
    const char *name;
    uint64_t value;
};

#define LU_ROWS 32

/* The figures UMEM_STATS prints, in their order; returns how many. */
static size_t lu_stats_rows(struct lu_row *rows)
{
    umem_stats_t st;
    lu_stats_get(&st);
    const struct lu_row all[] = {
        {"lock_count", st.lock_count},
        {"lock_contended", st.lock_contended},
        {"allocs", st.allocs},
        {"frees", st.frees},
        {"failed_allocs", st.failed_allocs},
        {"cache_hits", st.cache_hits},
        {"cache_frees", st.cache_frees},
        {"cache_refills", st.cache_refills},
        {"cache_flushes", st.cache_flushes},
        {"bytes_in_use", st.bytes_in_use},
        {"peak_bytes_in_use", st.peak_bytes_in_use},
        {"cached_bytes", st.cached_bytes},
        {"heap_bytes", st.heap_bytes},
        {"mapped_bytes", st.mapped_bytes},
        {"large_blocks", st.large_blocks},
        {"released_bytes", st.released_bytes},
        {"remote_frees", st.remote_frees},
        {"pool_pages", st.pool_pages},
        {"abandoned_pages", st.abandoned_pages},
        {"purges", st.purges},
        {"map_reuses", st.map_reuses},
        {"lent_calls", st.lent_calls},
        {"held_blocks", st.held_blocks},
        {"large_bytes", st.large_bytes},
        {"map_cache_bytes", st.map_cache_bytes},
        {"unpurged_bytes", st.unpurged_bytes},
        {"boot_bytes", lu_boot_used},
        {"minor_faults", lu_minor_faults()},
    };
    _Static_assert(sizeof all / sizeof all[0] <= LU_ROWS, "rows[] holds every figure");
    memcpy(rows, all, sizeof all);
    return sizeof all / sizeof all[0];
}

/* The figures as text: a heading and "name value" lines, or one JSON
 * object on one line.  Returns the length (at most `size`). */
static size_t lu_stats_format(char *text, size_t size, const struct lu_row *rows,
                              size_t n)
{
    long pid = (long)getpid();
    int r = lu_stats_json ? snprintf(text, size, "{\"pid\": %ld", pid)
                          : snprintf(text, size, "libumem statistics (pid %ld)\n", pid);
    size_t len = r > 0 ? (size_t)r : 0;
    for (size_t i = 0; i < n && len < size; i++) {
        r = lu_stats_json ? snprintf(text + len, size - len, ", \"%s\": %llu",
                                     rows[i].name, (unsigned long long)rows[i].value)
                          : snprintf(text + len, size - len, "  %-18s %llu\n",
                                     rows[i].name, (unsigned long long)rows[i].value);
        if (r > 0)
            len += (size_t)r;
    }
    if (lu_stats_json && len < size) {
        r = snprintf(text + len, size - len, "}\n");
        len += r > 0 ? (size_t)r : 0;
    }
    return len < size ? len : size;
}

__attribute__((destructor)) static void lu_stats_print(void)
{
    if (!lu_stats_wanted)
        return;
    struct lu_row rows[LU_ROWS];
    size_t n = lu_stats_rows(rows);
    /* One write, so that the figures of processes exiting together do
     * not interleave, and no stdio, which the program may have closed. */
    char text[4096];
    size_t len = lu_stats_format(text, sizeof text, rows, n);
    ssize_t ignored = write(lu_stats_out(), text, len);
    (void)ignored;
}

/* ---- glibc's extensions: what programs ask of malloc besides blocks ----
 * mallinfo2, mallinfo, malloc_trim, malloc_stats, malloc_info and mallopt,
 * answered from the heap's own statistics; libumem(3) says which of
 * umem's figures each field holds, and which fields have none (0).  The
 * one heap is glibc's arena 0.  A call made before the heap exists finds
 * it empty. */

struct lu_figures {
    uint64_t system;      /* the regions' blocks, large mappings, cached ones */
    uint64_t in_use;      /* bytes_in_use: every block handed out, large ones too */
    uint64_t free;        /* system - in_use */
    uint64_t pool_free;   /* of free, the pools' pages not handed out */
    uint64_t large;       /* large blocks in use */
    uint64_t large_bytes; /* their mappings' bytes */
    uint64_t peak;        /* peak_bytes_in_use */
    uint64_t trimmable;   /* about what malloc_trim(0) could give back */
    uint64_t heap;        /* heap_bytes: the regions' blocks alone */
    uint64_t mapped;      /* mapped_bytes */
};

static void lu_figures(struct lu_figures *f)
{
    umem_stats_t st;
    lu_stats_get(&st);
    f->system = st.heap_bytes + st.large_bytes + st.map_cache_bytes;
    f->in_use = st.bytes_in_use;
    f->free = f->system > f->in_use ? f->system - f->in_use : 0;
    f->pool_free = st.cached_bytes;
    f->large = st.large_blocks;
    f->large_bytes = st.large_bytes;
    f->peak = st.peak_bytes_in_use;
    f->trimmable = st.unpurged_bytes + st.map_cache_bytes;
    f->heap = st.heap_bytes;
    f->mapped = st.mapped_bytes;
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
LU_EXPORT struct mallinfo2 mallinfo2(void)
{
    struct lu_figures f;
    lu_figures(&f);
    struct mallinfo2 m;
    memset(&m, 0, sizeof m); /* ordblks and smblks: umem counts no free blocks */
    m.arena = (size_t)f.system;
    m.hblks = (size_t)f.large;
    m.hblkhd = (size_t)f.large_bytes;
    m.usmblks = (size_t)f.peak;
    m.fsmblks = (size_t)f.pool_free;
    m.uordblks = (size_t)f.in_use;
    m.fordblks = (size_t)f.free;
    m.keepcost = (size_t)f.trimmable;
    return m;
}
#endif

#ifdef __GLIBC__
static int lu_clamp(uint64_t v)
{
    return v > INT_MAX ? INT_MAX : (int)v;
}

/* The old call, its int fields clamped to INT_MAX. */
LU_EXPORT struct mallinfo mallinfo(void)
{
    struct lu_figures f;
    lu_figures(&f);
    struct mallinfo m;
    memset(&m, 0, sizeof m);
    m.arena = lu_clamp(f.system);
    m.hblks = lu_clamp(f.large);
    m.hblkhd = lu_clamp(f.large_bytes);
    m.usmblks = lu_clamp(f.peak);
    m.fsmblks = lu_clamp(f.pool_free);
    m.uordblks = lu_clamp(f.in_use);
    m.fordblks = lu_clamp(f.free);
    m.keepcost = lu_clamp(f.trimmable);
    return m;
}
#endif

/* Free pages and cached mappings back now, but `pad` bytes of free
 * pages; 1 when any went back, as glibc's. */
LU_EXPORT int malloc_trim(size_t pad)
{
    umem_t *h = lu_get();
    return h && umem_trim(h, pad) > 0;
}

/* glibc's shape: arena 0 (the regions), then the total with the large
 * blocks.  glibc's "max mmap" lines are the large blocks now: umem keeps
 * no peak of them. */
LU_EXPORT void malloc_stats(void)
{
    struct lu_figures f;
    lu_figures(&f);
    int saved = errno;
    fprintf(stderr,
            "Arena 0:\nsystem bytes     = %10llu\nin use bytes     = %10llu\n"
            "Total (incl. mmap):\nsystem bytes     = %10llu\nin use bytes     = %10llu\n"
            "max mmap regions = %10llu\nmax mmap bytes   = %10llu\n",
            (unsigned long long)f.heap, (unsigned long long)(f.in_use - f.large_bytes),
            (unsigned long long)f.system, (unsigned long long)f.in_use,
            (unsigned long long)f.large, (unsigned long long)f.large_bytes);
    errno = saved;
}

/* glibc's elements: one <heap>, its free bytes split as "fast" (the
 * pools' room) and "rest"; no <sizes> entries and no counts of free
 * blocks, which umem does not keep. */
LU_EXPORT int malloc_info(int options, FILE *out)
{
    if (options != 0 || !out) {
        errno = EINVAL;
        return -1;
    }
    struct lu_figures f;
    lu_figures(&f);
    unsigned long long fast = f.pool_free, rest = f.free - f.pool_free;
    unsigned long long heap = f.heap;
    fprintf(
        out,
        "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n</sizes>\n"
        "<total type=\"fast\" count=\"0\" size=\"%llu\"/>\n"
        "<total type=\"rest\" count=\"0\" size=\"%llu\"/>\n"
        "<system type=\"current\" size=\"%llu\"/>\n<system type=\"max\" size=\"%llu\"/>\n"
        "<aspace type=\"total\" size=\"%llu\"/>\n<aspace type=\"mprotect\" "
        "size=\"%llu\"/>\n"
        "</heap>\n",
        fast, rest, heap, heap, heap, heap);
    fprintf(
        out,
        "<total type=\"fast\" count=\"0\" size=\"%llu\"/>\n"
        "<total type=\"rest\" count=\"0\" size=\"%llu\"/>\n"
        "<total type=\"mmap\" count=\"%llu\" size=\"%llu\"/>\n"
        "<system type=\"current\" size=\"%llu\"/>\n<system type=\"max\" size=\"%llu\"/>\n"
        "<aspace type=\"total\" size=\"%llu\"/>\n<aspace type=\"mprotect\" "
        "size=\"%llu\"/>\n"
        "</malloc>\n",
        fast, rest, (unsigned long long)f.large, (unsigned long long)f.large_bytes,
        (unsigned long long)f.system, (unsigned long long)f.system,
        (unsigned long long)f.mapped, (unsigned long long)f.mapped);
    return 0;
}

/* M_TRIM_THRESHOLD sets umem's purge threshold (umem_set_purge_min);
 * M_ARENA_MAX of 1 or more is met already (one heap).  Any other
 * parameter, or value out of range: 0, nothing changed. */
LU_EXPORT int mallopt(int param, int value)
{
    umem_t *h = lu_get();
    if (!h && (param == M_TRIM_THRESHOLD) && !(h = lu_create()))
        return 0;
    switch (param) {
    case M_TRIM_THRESHOLD:
        if (value < 0)
            return 0;
        umem_set_purge_min(h, (size_t)value);
        return 1;
    case M_ARENA_MAX:
        return value >= 1;
    default:
        return 0;
    }
}
