/*
 * umem/calls.h - the plain path: allocation, free, realloc, memalign and
 * usable size on a heap no tool watches (a part of umem.h).
 *
 * Each call tries the calling thread's pool first (UMEM_CACHED), then a
 * block with a header under the lock.  Every allocation of a block with
 * a header begins and ends the same way (umem__alloc_begin, _end): a
 * large request's own mapping, the lock or a lent block; then the count,
 * a purge if one is due, the unlock.
 */
#ifndef UMEM_H
#error "umem/calls.h is a part of umem.h: include umem.h instead"
#endif

/* How every allocation of a block with a header begins: a request of
 * `span` bytes or more (UMEM_LARGE) on a growing heap tries a mapping of
 * its own first; else the lock is taken.  0: the lock is held, go on.
 * 1: the allocation is over and *out its result (a large block; one
 * mapped while a fork holds the lock; NULL and errno). */
static UMEM_HOT_INLINE int umem__alloc_begin(umem_t *h, size_t n, size_t align, size_t span,
                                              void **out)
{
    size_t bytes;
    if (h->flags & UMEM_GROW && span >= UMEM_LARGE && umem__need(n) != 0) {
        char *b = umem__alloc_large(h, n, align, &bytes);
        if (b) {
            *out = b + UMEM_HEADER;
            return 1;
        }
    }
    int r = umem__lock(h, UMEM_COUNTED | UMEM_LEND);
    if (r == 0)
        return 0;
    *out = r == 1 ? umem__lent_alloc(h, n, align) : NULL;
    return 1;
}

/* ... and how it ends (lock held): the block b of `need` bytes counted,
 * or the failure (NULL b: ENOMEM); a purge if one is due; the lock let
 * go.  The payload, or NULL. */
static UMEM_HOT_INLINE void *umem__alloc_end(umem_t *h, char *b, size_t need)
{
    if (b)
        umem__count_alloc(h, need);
    else
        h->failed_allocs++;
    umem__maybe_purge(h);
    umem__unlock(h);
    if (!b) {
        errno = ENOMEM;
        return NULL;
    }
    return b + UMEM_HEADER;
}

/* Any allocation the pools do not serve (lock taken here). */
static UMEM_NOINLINE void *umem__alloc_locked(umem_t *h, size_t n)
{
    void *out;
    if (umem__alloc_begin(h, n, UMEM_ALIGN, n, &out))
        return out;
    size_t need = umem__need(n);
    char *b = need != 0 ? umem__take(h, &need, 1) : NULL;
    if (!b && need != 0 && h->abandoned_pages > 0) {
        umem__reclaim_abandoned(h); /* ended threads' pages that emptied */
        b = umem__take(h, &need, 1);
    }
    struct umem_pool *pool;
    if (!b && need != 0 && h->flags & UMEM_CACHED && (pool = umem__pool_known(h)) != NULL &&
        umem__get(&pool->mid_bytes) != 0) {
        umem__mid_flush(h, pool); /* the blocks this thread kept */
        b = umem__take(h, &need, 1);
    }
    return umem__alloc_end(h, b, need);
}

/* umem_alloc of a request a pool may serve but not a small one, or
 * with no pool at hand. */
static UMEM_NOINLINE void *umem__alloc_pooled(umem_t *h, size_t n)
{
    struct umem_pool *pool = umem__pool(h);
    if (!pool)
        return umem__alloc_locked(h, n);
    unsigned cls = umem__class(n);
    struct umem_page *pg = pool->avail[cls];
    if (pg && pg->free)
        return umem__page_pop(pool, pg);
    return umem__pool_alloc(h, pool, cls, n);
}

/* A request of UMEM_POOL_MAX + 1 to UMEM_MID_MAX bytes: a block the
 * thread keeps for its class, else one cut for the class under the lock. */
static UMEM_NOINLINE void *umem__mid_alloc(umem_t *h, size_t n)
{
    struct umem_pool *pool = umem__pool(h);
    unsigned cls = umem__mid_class(n);
    if (!pool)
        return umem__alloc_locked(h, umem__mid_size(cls));
    pool->mid_demand = UMEM_MID_DEMAND;
    uint64_t near = (pool->mid_map >> cls) & (((uint64_t)1 << UMEM_MID_REACH) - 1);
    if (near) {
        unsigned got = cls + umem__lowest_bit(near);
        void **q = umem__mid_checked(h, (void **)pool->mid[got]);
        pool->mid[got] = q[0];
        if (--pool->mid_count[got] == 0) {
            pool->mid[got] = NULL; /* whatever the last one's link says */
            pool->mid_map &= ~((uint64_t)1 << got);
        }
        q[1] = NULL;
        umem__add(&pool->mid_bytes, (uint64_t)0 - umem__size((char *)q - UMEM_HEADER));
        umem__add(&pool->mid_allocs, 1);
        return q;
    }
    return umem__alloc_locked(h, umem__mid_size(cls));
}

/* A free of p, no slot, on a heap with pools: kept by the thread when it
 * is a block cut for a class of MID BLOCKS and the checks pass without the
 * lock; else given back under the lock. */
static UMEM_NOINLINE void umem__mid_free(umem_t *h, void *p)
{
    char *b = (char *)p - UMEM_HEADER;
    const char *hi;
    struct umem_pool *pool = umem__pool_known(h);
    if (UMEM_MID_CLASSES > 0 && pool && (uintptr_t)p % UMEM_ALIGN == 0 &&
        umem__mid_region(h, b, &hi) && umem__header_ok(h, b)) {
        size_t word = umem__word(b), size = word & ~UMEM_FLAGS;
        void **q = (void **)p;
        const char *next = b + size;
        /* A used block of its own (not a mapping, not an end mark) that
         * ends inside its region: its payload may be read. */
        int whole = (word & (UMEM_USED | UMEM_MAPPED)) == UMEM_USED && size >= UMEM_MIN_BLOCK &&
                    size + UMEM_HEADER <= (size_t)(hi - b);
        if (whole && ((size_t)(uintptr_t)q[1] == umem__mid_tag(h, q) ||
                      (size_t)(uintptr_t)q[1] == umem__lent_tag(h, q)))
            umem__die("free of a block freed already (double free):", p);
        int cls = whole ? umem__mid_kept_class(size - UMEM_HEADER) : -1;
        if (cls >= 0 && pool->mid_demand > 0 && pool->mid_count[cls] < UMEM_MID_DEPTH &&
            umem__get(&pool->mid_bytes) + size <= UMEM_MID_BYTES && umem__header_ok(h, next) &&
            !(umem__word(next) & UMEM_PREV_FREE)) {
            q[0] = pool->mid[cls];
            q[1] = (void *)umem__mid_tag(h, q);
            pool->mid[cls] = q;
            pool->mid_count[cls]++;
            pool->mid_map |= (uint64_t)1 << cls;
            pool->mid_demand--;
            umem__add(&pool->mid_bytes, size);
            umem__add(&pool->mid_frees, 1);
            return;
        }
    }
    umem__free_locked(h, p, 0);
}

/* umem_alloc with no tool watching (the debugging layer's own).  A small
 * request (1 to 1024 bytes) on a heap with pools takes the shortest way:
 * the pool, the page serve[] names for its size, that page's free list. */
static UMEM_HOT_INLINE void *umem__alloc(umem_t *h, size_t n)
{
    /* A thread with a pool known for h: h has pools. */
    struct umem_pool *pool;
    if (UMEM_LIKELY(n - 1 < UMEM_SERVE_MAX) && UMEM_LIKELY((pool = umem__pool_known(h)) != NULL)) {
        struct umem_page *pg = pool->serve[(n + 15) >> 4];
        if (UMEM_LIKELY(pg->free != NULL))
            return umem__page_pop(pool, pg);
        /* The class and the pool found again there: kept here for the
         * slow way, they would cost a register move on the fast one. */
        return umem__alloc_pooled(h, n);
    }
    if (h->flags & UMEM_CACHED && n - 1 < UMEM_MID_MAX)
        return n <= UMEM_POOL_MAX ? umem__alloc_pooled(h, n) : umem__mid_alloc(h, n);
    if (n == 0)
        return NULL;
    return umem__alloc_locked(h, n);
}

/* The pool read here is umem__tls.serving: umem__no_pool, whose pages
 * have no free slot, until the thread's pool of a plain heap is made. */
static UMEM_HOT_INLINE void *umem__alloc_served(size_t n)
{
    struct umem_pool *pool = umem__tls.serving;
    if (UMEM_LIKELY(n <= UMEM_SERVE_MAX)) {
        struct umem_page *pg = pool->serve[(n + 15) >> 4];
        if (UMEM_LIKELY(pg->free != NULL))
            return umem__page_pop(pool, pg);
    }
    return NULL;
}

/* A free of a block with a header (`moved`: the old block of a realloc,
 * which counts as no free).  errno is left as it was: every system call
 * on the way saves it. */
static UMEM_NOINLINE void umem__free_locked(umem_t *h, void *p, int moved)
{
    if ((uintptr_t)p % UMEM_ALIGN != 0)
        umem__die("free of a pointer outside the heap or misaligned:", p);
    int r = umem__lock(h, UMEM_COUNTED | UMEM_LEND | UMEM_QUIET);
    if (r == 1)
        umem__lent_free(h, p, moved);
    if (r != 0)
        return;
    umem__release(h, p, moved);
    umem__maybe_purge(h); /* errno kept, as by the lock and the unmaps */
    umem__unlock(h);
}

/* A free on a heap with pools that no tool watches, of a pooled slot:
 * 1 when p was one (and is free now), else 0 and nothing done.  NULL is
 * no slot. */
static UMEM_HOT_INLINE int umem__free_pooled(umem_t *h, void *p)
{
    struct umem_page *pg = umem__page_of(h, p);
    if (UMEM_UNLIKELY(pg == NULL))
        return 0;
    umem__pool_free(h, pg, p);
    return 1;
}

/* umem_free with no tool watching (the debugging layer's own). */
static UMEM_HOT_INLINE void umem__free(umem_t *h, void *p)
{
    if (h->flags & UMEM_CACHED) {
        struct umem_page *pg = umem__page_of(h, p);
        if (UMEM_LIKELY(pg != NULL))
            umem__pool_free(h, pg, p);
        else if (p)
            umem__mid_free(h, p);
        return;
    }
    if (p)
        umem__free_locked(h, p, 0);
}

static inline size_t umem__usable_size(umem_t *h, const void *p)
{
    if (!p)
        return 0;
    if (h->flags & UMEM_CACHED) {
        struct umem_page *pg = umem__page_of(h, p);
        if (pg) {
            umem__slot_check(h, pg, p, "usable size");
            return pg->slot;
        }
    }
    int r = umem__lock(h, UMEM_LEND);
    if (r == 1)
        return umem__size(umem__lent_block(h, p, "usable size")) - UMEM_HEADER;
    if (r != 0)
        return 0;
    struct umem_where w;
    umem__locate(h, p, &w, "usable size");
    size_t size = w.big ? (size_t)(w.end - w.block) : umem__size(w.block);
    umem__unlock(h);
    return size - UMEM_HEADER;
}

static inline int umem__resize(umem_t *h, struct umem_where *w, size_t need)
{
    size_t word = umem__word(w->block), size = word & ~UMEM_FLAGS;
    if (w->big) {
        /* Shrunk to half its size or less, it moves, and its pages go back. */
        size_t have = (size_t)(w->end - w->block);
        return need <= have && need > have / 2 ? 0 : -1;
    }
    size_t keep = word & UMEM_PREV_FREE;
    if (need <= size) {
        if (size - need >= UMEM_MIN_BLOCK) {
            umem__set_header(h, w->block, need | UMEM_USED | keep);
            umem__set_header(h, w->block + need, (size - need) | UMEM_USED);
            h->bytes_in_use -= size - need;
            umem__merge_free(h, w->block + need, w->first);
        }
        return 0;
    }
    char *next = w->block + size;
    size_t next_word = umem__word(next);
    if (next_word & UMEM_USED || size + (next_word & ~UMEM_FLAGS) < need)
        return -1;
    size_t total = size + (next_word & ~UMEM_FLAGS);
    umem__unfile(h, next, next_word & ~UMEM_FLAGS);
    if (total - need >= UMEM_MIN_BLOCK) {
        umem__file(h, w->block + need, total - need);
    } else {
        need = total;
        umem__set_prev_free(w->block + total, 0);
    }
    umem__set_header(h, w->block, need | UMEM_USED | keep);
    umem__grew(h, need - size);
    return 0;
}

/* A large block's mapping resized for n bytes by mremap (lock held): the
 * new payload, or NULL where Linux's mremap is missing or refuses. */
static inline char *umem__remap_large(umem_t *h, struct umem_where *w, size_t n)
{
#ifdef UMEM_MREMAP_MAYMOVE
    struct umem_span *s = w->big;
    size_t off = (size_t)(w->block - (char *)s) + UMEM_HEADER, have = umem__size(s);
    size_t reused = umem__word(w->block) & UMEM_REUSED;
    if (n > PTRDIFF_MAX / 2)
        return NULL;
    size_t bytes = umem__round_page(h, off + n);
    umem__span_remove(h, s);
    int saved = errno;
    void *moved = mremap(s, have, bytes, UMEM_MREMAP_MAYMOVE);
    errno = saved;
    if (moved == MAP_FAILED) {
        umem__span_add(h, s, have);
        return NULL;
    }
    s = (struct umem_span *)moved;
    s->first = (char *)s + off - UMEM_HEADER;
    s->end = (char *)s + bytes;
    umem__set_header(h, s->first, (size_t)(s->end - s->first) | UMEM_USED | UMEM_MAPPED | reused);
    umem__span_add(h, s, bytes);
    h->bytes_in_use -= have;
    umem__grew(h, bytes);
    return s->first + UMEM_HEADER;
#else
    (void)h, (void)w, (void)n;
    return NULL;
#endif
}

/* realloc of a block with a header (lock taken here).  errno is left as
 * it was unless it fails. */
static UMEM_NOINLINE void *umem__realloc_locked(umem_t *h, void *p, size_t n)
{
    size_t need = umem__need(n);
    int saved = errno, r = umem__lock(h, UMEM_COUNTED | UMEM_LEND);
    if (r != 0)
        return r == 1 ? umem__lent_realloc(h, p, n) : NULL;
    struct umem_where w;
    umem__locate(h, p, &w, "realloc");
    size_t old = (w.big ? (size_t)(w.end - w.block) : umem__size(w.block)) - UMEM_HEADER;
    char *b = NULL;
    if (need != 0 && umem__resize(h, &w, need) == 0)
        b = (char *)p - UMEM_HEADER;
    else if (need != 0 && w.big && n >= UMEM_LARGE && (b = umem__remap_large(h, &w, n)) != NULL)
        b -= UMEM_HEADER;
    if (!b && need != 0 && h->flags & UMEM_GROW && n >= UMEM_LARGE) {
        /* Moved to a large block of its own, mapped without the lock. */
        umem__unlock(h);
        size_t bytes;
        if ((b = umem__alloc_large(h, n, UMEM_ALIGN, &bytes)) != NULL) {
            memcpy(b + UMEM_HEADER, p, old < n ? old : n);
            umem__free_locked(h, p, 1);
            errno = saved;
            return b + UMEM_HEADER;
        }
        if ((r = umem__lock(h, UMEM_COUNTED | UMEM_LEND)) != 0)
            return r == 1 ? umem__lent_realloc(h, p, n) : NULL;
        umem__locate(h, p, &w, "realloc");
    } else if (b) {
        umem__maybe_purge(h);
        umem__unlock(h);
        errno = saved;
        return b + UMEM_HEADER;
    }
    /* Moved inside the heap: neither an allocation nor a free in the
     * counts, as the number of blocks does not change. */
    if (need != 0 && (b = umem__take(h, &need, 1)) != NULL)
        umem__grew(h, need);
    if (!b && need != 0 && n <= old) {
        umem__unlock(h);
        errno = saved;
        return p; /* a large block that found no room to move to a smaller one */
    }
    if (!b) {
        h->failed_allocs++;
        umem__unlock(h);
        errno = ENOMEM;
        return NULL; /* p is left as it was */
    }
    memcpy(b + UMEM_HEADER, p, old < n ? old : n);
    umem__give_back(h, &w);
    umem__maybe_purge(h);
    umem__unlock(h);
    errno = saved;
    return b + UMEM_HEADER;
}

/* realloc of a slot: it stays while the size fits and wastes less than
 * half, else it moves (umem_alloc, copy, umem_free), counted as a move. */
static UMEM_NOINLINE void *umem__pool_realloc(umem_t *h, struct umem_page *pg, void *p, size_t n)
{
    umem__slot_check(h, pg, p, "realloc");
    size_t slot = pg->slot;
    if (n <= slot && (n > slot / 2 || slot <= 32))
        return p;
    int saved = errno;
    void *q = umem__alloc(h, n);
    if (!q)
        return NULL;
    errno = saved;
    memcpy(q, p, n < slot ? n : slot);
    umem__free(h, p);
    struct umem_pool *pool = umem__pool(h);
    if (pool)
        umem__add(&pool->moves, 1);
    else
        atomic_fetch_add_explicit(&h->orphan_moves, 1, memory_order_relaxed);
    return q;
}

static inline void *umem__realloc(umem_t *h, void *p, size_t n)
{
    if (!p)
        return umem__alloc(h, n);
    if (n == 0) {
        umem__free(h, p);
        return NULL;
    }
    if (h->flags & UMEM_CACHED) {
        struct umem_page *pg = umem__page_of(h, p);
        if (pg)
            return umem__pool_realloc(h, pg, p, n);
    }
    return umem__realloc_locked(h, p, n);
}

/* A block of *need bytes whose payload is aligned to `align` (lock held),
 * carved from a free block with room for the alignment and a free block
 * before it: the lead and the tail go back as free blocks of their own.
 * NULL when nothing fits. */
static inline char *umem__take_aligned(umem_t *h, size_t align, size_t *need)
{
    if (align > PTRDIFF_MAX / 4)
        return NULL;
    size_t room = *need + align + UMEM_MIN_BLOCK;
    char *f = umem__take(h, &room, 1);
    if (!f)
        return NULL;
    uintptr_t at = ((uintptr_t)f + UMEM_HEADER + align - 1) & ~(uintptr_t)(align - 1);
    if (at - UMEM_HEADER != (uintptr_t)f && at - UMEM_HEADER - (uintptr_t)f < UMEM_MIN_BLOCK)
        at += align;
    char *b = (char *)at - UMEM_HEADER;
    size_t lead = (size_t)(b - f), tail = room - lead - *need;
    if (tail < UMEM_MIN_BLOCK) {
        *need += tail;
        tail = 0;
    }
    /* f's own neighbours are used or the rest of its free block: the
     * lead and the tail are freed as blocks of their own. */
    umem__set_header(h, b, *need | UMEM_USED);
    if (tail) {
        umem__set_header(h, b + *need, tail | UMEM_USED);
        umem__merge_free(h, b + *need, f);
    }
    if (lead) {
        umem__set_header(h, f, lead | UMEM_USED);
        umem__merge_free(h, f, f);
    }
    return b;
}

static inline void *umem__memalign(umem_t *h, size_t align, size_t n)
{
    if (align <= UMEM_ALIGN)
        return umem__alloc(h, n);
    if (n == 0)
        return NULL;
    if (h->flags & UMEM_CACHED && align <= UMEM_PAGE_HEAD && n <= UMEM_POOL_MAX) {
        void *p = umem__pool_aligned(h, align, n);
        if (p)
            return p;
    }
    void *out;
    if (umem__alloc_begin(h, n, align, n + align, &out))
        return out;
    size_t need = umem__need(n);
    char *b = need != 0 ? umem__take_aligned(h, align, &need) : NULL;
    return umem__alloc_end(h, b, need);
}
