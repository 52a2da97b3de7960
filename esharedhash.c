/*
 * esharedhash - the Huffman block signature of a file, with a private
 * pool per worker carved from the same heap region.
 *
 * Each thread (the reader and every worker) owns one pool, reached through
 * the __thread pointer `mine.pool`.  A pool is one umem block, cut into
 * power-of-two segments; it allocates by bumping a pointer in its current
 * segment, with no lock, and goes to the shared heap (under its lock) only
 * when no segment has room: per-worker heaps over a global heap, as in
 * Hoard.
 *
 * Reuse: each segment counts its allocations and its frees.  When they
 * meet, nothing in the segment is live and its bump pointer goes back to
 * the start; a worker's segment does so at the end of every block, so one
 * pool serves block after block without ever locking.
 *
 * Frees from another owner (the workers freeing the buffers the reader
 * filled from a pipe, in another thread or, with -m, another process;
 * a regular file the workers read into their own pools) are the only
 * path with atomics, as in mimalloc: the owner's allocs and local_frees
 * are plain fields it alone touches, and a foreign free only adds one to
 * the segment's atomic remote_frees (release, after the freer is done
 * with the memory).  The owner reads remote_frees (acquire) only when its
 * current segment is full, and reuses a segment when allocs == local_frees
 * + remote_frees.  No allocation is then live in it, so no further foreign
 * free can arrive for it and zeroing the counter is safe.  The atomics are
 * lock-free, so they work the same in MAP_SHARED memory across processes.
 *
 * Under valgrind's memcheck or in an AddressSanitizer build (umem_watched:
 * not with -m, whose heap is shared), each pool tells the tool about the
 * blocks it carves and takes back (umem.h's umem_tell_*), and leaves a
 * red zone after each, so that the seed's
 *     valgrind --leak-check=full ./esharedhash FILE -t
 * sees an overrun, a use after free or a leaked tree node as it would on
 * malloc's blocks.  Those calls take the slow path; the fast path is the
 * same with or without a tool.
 */
#define BLOCKSIG_POOLS 1
#include "blocksig.h"

#include <stdatomic.h>

struct pool_segment {
    char *base, *bump, *end;
    size_t allocs, local_frees;  /* the owner's alone */
    _Atomic size_t remote_frees; /* added to by other owners */
};

struct pool {
    char *base, *end; /* the segments' memory, contiguous */
    unsigned shift;   /* segment size is 1 << shift */
    unsigned nseg;
    struct pool_segment *cur; /* where umalloc bumps, and ufree looks first */
    /* Where a tool watches the heap (valgrind, AddressSanitizer): the
     * segment umalloc bumps, each block followed by UMEM_REDZONE bytes
     * left free.  cur is then `never`, always full and holding nothing, so
     * that every umalloc and ufree leaves the fast path for the one that
     * tells the tool, and the fast path pays nothing for it. */
    struct pool_segment *told;
    struct pool_segment never;
    struct pool_segment seg[];
};

/* The policy's state.  heap: set by the main thread (pool_reader_begin)
 * before any worker starts.  The registry holds every live pool, so that
 * a foreign free can find the pool it belongs to (a pointer in none of
 * them came from the heap as a fallback); each thread or process adds and
 * removes its own pool, and slots at and past registry_used have never
 * held one.  A worker process has its own copy, which holds the pools
 * made before it was forked (the reader's) and its own. */
static struct {
    umem_t *heap;
    int watched; /* valgrind or AddressSanitizer sees the heap: pools tell it */
    struct pool *_Atomic registry[MAX_WORKERS + 1];
    _Atomic unsigned registry_used;
} pools;

/* Each thread's own: its pool, and what its umalloc and ufree did. */
static __thread struct {
    struct pool *pool;
    struct alloc_counts counts;
} mine;

_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2,
               "pool atomics must be lock-free to work across processes");

static struct pool *pool_create(size_t segments, unsigned shift)
{
    size_t seg_bytes = (size_t)1 << shift;
    size_t head =
        (sizeof(struct pool) + segments * sizeof(struct pool_segment) + 15) & ~(size_t)15;
    if (segments == 0 || segments > (SIZE_MAX - head) / seg_bytes)
        return NULL;
    struct pool *p = umem_alloc(pools.heap, head + segments * seg_bytes);
    if (!p)
        return NULL;
    p->base = (char *)p + head;
    p->end = p->base + segments * seg_bytes;
    p->shift = shift;
    p->nseg = (unsigned)segments;
    p->cur = &p->seg[0];
    p->told = NULL;
    if (pools.watched) {
        p->never.base = p->never.bump = p->never.end = NULL;
        p->told = p->cur;
        p->cur = &p->never;
        umem_tell_pool(pools.heap, p->base, segments * seg_bytes);
    }
    for (size_t i = 0; i < segments; i++) {
        struct pool_segment *s = &p->seg[i];
        s->base = s->bump = p->base + i * seg_bytes;
        s->end = s->base + seg_bytes;
        s->allocs = s->local_frees = 0;
        atomic_init(&s->remote_frees, 0);
    }
    for (unsigned i = 0; i <= MAX_WORKERS; i++) {
        struct pool *expected = NULL;
        if (atomic_compare_exchange_strong(&pools.registry[i], &expected, p)) {
            unsigned used = atomic_load(&pools.registry_used);
            while (used < i + 1 &&
                   !atomic_compare_exchange_weak(&pools.registry_used, &used, i + 1))
                ;
            return p;
        }
    }
    umem_free(pools.heap, p); /* more pools than workers: cannot happen */
    return NULL;
}

static int segment_drained(struct pool_segment *s)
{
    size_t remote = atomic_load_explicit(&s->remote_frees, memory_order_acquire);
    if (s->allocs != s->local_frees + remote)
        return 0;
    HANDOFF_RECEIVE(s);
    return 1;
}

static inline struct pool_segment *segment_of(struct pool *p, const char *c)
{
    return &p->seg[(size_t)(c - p->base) >> p->shift];
}

/* Back to empty, when the owner's frees alone met the allocations (no
 * foreign free came, so remote_frees is 0 and needs no atomic store). */
static inline void segment_rewind(struct pool_segment *s)
{
    s->bump = s->base;
    s->allocs = s->local_frees = 0;
    mine.counts.pool_resets++;
}

/* Back to empty after segment_drained, foreign frees counted or not. */
static void segment_reset(struct pool_segment *s)
{
    segment_rewind(s);
    atomic_store_explicit(&s->remote_frees, 0, memory_order_relaxed);
}

/* Gives the pool back to the heap, if nothing in it is live. */
static void pool_destroy(struct pool *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->nseg; i++)
        if (!segment_drained(&p->seg[i]))
            return; /* still in use: leave it to the heap's end */
    unsigned used = atomic_load(&pools.registry_used);
    for (unsigned i = 0; i < used; i++) {
        struct pool *expected = p;
        atomic_compare_exchange_strong(&pools.registry[i], &expected, NULL);
    }
    umem_tell_pool_gone(pools.heap, p->base, (size_t)(p->end - p->base));
    umem_free(pools.heap, p);
}

/* The first drained segment after `from`, made empty, with need bytes
 * taken from its start; NULL if none. */
static struct pool_segment *segment_next(struct pool *p, struct pool_segment *from, size_t need)
{
    unsigned now = (unsigned)(from - p->seg);
    for (unsigned k = 1; k <= p->nseg; k++) {
        struct pool_segment *s = &p->seg[(now + k) % p->nseg];
        if (!segment_drained(s))
            continue;
        if (s->bump != s->base)
            segment_reset(s);
        s->bump += need;
        s->allocs++;
        mine.counts.pool_hits++;
        return s;
    }
    return NULL;
}

/* umalloc on a pool a tool watches: n bytes and a red zone after them,
 * announced to the tool. */
static void *pool_alloc_told(struct pool *p, size_t need, size_t n)
{
    need += UMEM_REDZONE;
    if (need - 1 >= ((size_t)1 << p->shift))
        return NULL;
    struct pool_segment *s = p->told;
    void *r = s->bump;
    if (need - 1 < (size_t)(s->end - s->bump)) {
        s->bump += need;
        s->allocs++;
        mine.counts.pool_hits++;
    } else if ((s = segment_next(p, s, need)) != NULL) {
        p->told = s;
        r = s->base;
    } else {
        return NULL;
    }
    umem_tell_alloc(pools.heap, p->base, r, n);
    return r;
}

/* The current segment is full: move to the next drained one, if any.
 * A need of 0 (n was 0, or so large that rounding wrapped) or of more
 * than a segment never fits. */
static void *pool_alloc_slow(struct pool *p, size_t need, size_t n)
{
    if (need - 1 >= ((size_t)1 << p->shift))
        return NULL;
    if (p->told)
        return pool_alloc_told(p, need, n);
    struct pool_segment *s = segment_next(p, p->cur, need);
    if (!s)
        return NULL;
    p->cur = s;
    return s->base;
}

/* The segment of c, a block of p's, off the fast path (out of line, so
 * that ufree stays small enough to inline): on a pool a tool watches,
 * every free comes here, and is told. */
static __attribute__((noinline)) struct pool_segment *segment_freed(struct pool *p, char *c)
{
    struct pool_segment *s = segment_of(p, c);
    if (UMEM_UNLIKELY(p->told != NULL))
        umem_tell_free(pools.heap, p->base, c, (size_t)(s->end - c));
    return s;
}

/* The heap, for what the pools do not serve.  umalloc and ufree are
 * always inlined into the hasher's loops, so what they rarely do (the
 * heap, a watched pool) stays out of line. */
static __attribute__((noinline)) void *heap_alloc(size_t n)
{
    mine.counts.pool_fallbacks++;
    return umem_alloc(pools.heap, n);
}

static __attribute__((noinline)) void heap_free(void *p)
{
    umem_free(pools.heap, p);
}

/* Counts pool_hits and pool_fallbacks; umallocs is their sum, filled in
 * when the thread's work ends, off the hot path. */
static inline __attribute__((always_inline)) void *umalloc(size_t n)
{
    struct pool *p = mine.pool;
    if (p) {
        /* need - 1 wraps for n == 0, and for an n so large that need
         * wrapped to 0: neither fits, both go to the heap. */
        size_t need = (n + 15) & ~(size_t)15;
        struct pool_segment *s = p->cur;
        if (need - 1 < (size_t)(s->end - s->bump)) {
            void *r = s->bump;
            s->bump += need;
            s->allocs++;
            mine.counts.pool_hits++;
            return r;
        }
        void *r = pool_alloc_slow(p, need, n);
        if (r)
            return r;
    }
    return heap_alloc(n);
}

static struct pool *pool_of(const char *c)
{
    unsigned used = atomic_load_explicit(&pools.registry_used, memory_order_acquire);
    for (unsigned i = 0; i < used; i++) {
        struct pool *p = atomic_load_explicit(&pools.registry[i], memory_order_acquire);
        if (p && c >= p->base && c < p->end)
            return p;
    }
    return NULL;
}

static inline __attribute__((always_inline)) void ufree(void *ptr)
{
    if (!ptr)
        return;
    mine.counts.ufrees++;
    char *c = ptr;
    struct pool *p = mine.pool;
    /* Mostly the current segment's: one comparison (the address's offset
     * from the segment's base, unsigned) finds it. */
    struct pool_segment *s = p ? p->cur : NULL;
    if (s && (uintptr_t)c - (uintptr_t)s->base >= ((uintptr_t)1 << p->shift))
        s = (uintptr_t)c - (uintptr_t)p->base < (uintptr_t)(p->end - p->base)
                ? segment_freed(p, c)
                : NULL;
    if (s) {
        if (++s->local_frees == s->allocs)
            segment_rewind(s);
        return;
    }
    struct pool *owner = pool_of(c);
    if (owner) {
        s = segment_freed(owner, c);
        HANDOFF_SEND(s);
        atomic_fetch_add_explicit(&s->remote_frees, 1, memory_order_release);
        mine.counts.remote_frees++;
        return;
    }
    heap_free(ptr);
}

/* Four power-of-two segments from --pool: as large as fit. */
static struct pool *worker_pool(size_t pool_bytes)
{
    size_t seg = pool_bytes / 4;
    if (seg < 64)
        return NULL; /* too small to be worth a segment: every call falls back */
    unsigned shift = 0;
    while (((size_t)2 << shift) <= seg)
        shift++;
    return pool_create(4, shift);
}

/* The reader's pool holds every input buffer it may hand out, one per
 * segment; single-threaded, the one thread reads and hashes from a
 * worker's pool. */
static int pool_reader_begin(const struct policy_env *env)
{
    pools.heap = env->heap;
    pools.watched = umem_watched(env->heap);
    if (env->mode == MODE_SINGLE) {
        mine.pool = worker_pool(env->pool_bytes);
    } else {
        unsigned shift = 0;
        while (((size_t)1 << shift) < CHUNK_BYTES)
            shift++;
        mine.pool = pool_create(env->window + 2, shift);
    }
    return 0;
}

static int pool_worker_begin(const struct policy_env *env)
{
    mine.pool = worker_pool(env->pool_bytes);
    return 0;
}

static void pool_end(struct alloc_counts *counts)
{
    pool_destroy(mine.pool);
    mine.pool = NULL;
    mine.counts.umallocs = mine.counts.pool_hits + mine.counts.pool_fallbacks;
    *counts = mine.counts;
}

static const struct policy pools_policy = {
    .reader_begin = pool_reader_begin,
    .worker_begin = pool_worker_begin,
    .worker_end = pool_end,
    .reader_end = pool_end,
};

int main(int argc, char **argv)
{
    return blocksig_main(argc, argv, &pools_policy);
}
