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
 * aligned_alloc, memalign, valloc, pvalloc and malloc_usable_size; nothing
 * else (the library is built with -fvisibility=hidden).
 *
 * THE FIRST CALL
 *   The heap is made under a mutex by the first thread to allocate, and
 *   published through one pointer; every later call pays one predictable
 *   test of that pointer.  umem_create itself calls into the C library
 *   (pthread_key_create, pthread_atfork, clock_gettime), which may
 *   allocate: a thread-local flag sends those allocations, and only those,
 *   to a static bootstrap arena.  Its blocks are never reused (free does
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
 *   "name value" per line (through a copy of descriptor 2 made at start,
 *   since many programs close standard error before they exit).
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
#define UMEM_OWN_MODULE 1 /* reports leave this library's frames out */
#include "umem.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>

#if defined(__GNUC__)
#define LU_EXPORT      __attribute__((visibility("default")))
#define LU_SLOW        __attribute__((noinline, cold))
#define LU_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LU_EXPORT
#define LU_SLOW
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

/* ---- the malloc family ---- */

LU_EXPORT void *malloc(size_t n)
{
    umem_t *h = lu_get();
    if (LU_UNLIKELY(!h))
        return lu_alloc_slow(n, 0);
    if (LU_UNLIKELY(n == 0))
        return lu_malloc_zero(h);
    return umem_alloc(h, n);
}

LU_EXPORT void free(void *p)
{
    umem_t *h = lu_get();
    if (LU_UNLIKELY(!h || lu_boot_owns(p))) {
        lu_free_slow(p);
        return;
    }
    umem_free(h, p);
}

LU_EXPORT void *calloc(size_t count, size_t size)
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
LU_EXPORT void *memalign(size_t align, size_t n)
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

LU_EXPORT void *valloc(size_t n)
{
    return lu_memalign(lu_page(), n);
}

/* n rounded up to whole pages, at least one. */
LU_EXPORT void *pvalloc(size_t n)
{
    size_t page = lu_page();
    if (n > SIZE_MAX - (page - 1)) {
        errno = ENOMEM;
        return NULL;
    }
    n = n == 0 ? page : (n + page - 1) & ~(page - 1);
    return lu_memalign(page, n);
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

/* ---- UMEM_STATS ----
 * Programs may close standard error before they exit (GNU programs do,
 * to report a failed write), so the figures go to a copy of it made at
 * start, placed high so as not to take the program's next descriptor,
 * and closed on exec; or to descriptor 2 if that copy was closed or now
 * names another file. */

#define LU_STATS_FD_MIN 512

static int lu_stats_fd = -1;
static struct stat lu_stats_st;

__attribute__((constructor)) static void lu_stats_init(void)
{
    const char *s = getenv("UMEM_STATS");
    lu_stats_wanted = s && *s && strcmp(s, "0") != 0;
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

__attribute__((destructor)) static void lu_stats_print(void)
{
    if (!lu_stats_wanted)
        return;
    umem_stats_t st;
    umem_t *h = lu_get();
    if (h)
        umem_get_stats(h, &st);
    else
        memset(&st, 0, sizeof st);
    struct {
        const char *name;
        uint64_t value;
    } rows[] = {
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
        {"boot_bytes", lu_boot_used},
        {"minor_faults", lu_minor_faults()},
    };
    /* One write, so that the figures of processes exiting together do
     * not interleave, and no stdio, which the program may have closed. */
    char text[2048];
    size_t len = 0;
    int r = snprintf(text, sizeof text, "libumem statistics (pid %ld)\n", (long)getpid());
    len = r > 0 ? (size_t)r : 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0] && len < sizeof text; i++) {
        r = snprintf(text + len, sizeof text - len, "  %-18s %llu\n", rows[i].name,
                     (unsigned long long)rows[i].value);
        if (r > 0)
            len += (size_t)r;
    }
    if (len > sizeof text)
        len = sizeof text;
    ssize_t ignored = write(lu_stats_out(), text, len);
    (void)ignored;
}
