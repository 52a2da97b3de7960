/*
 * umem/pages.h - the pages of a thread's pool: slots, their free lists,
 * remote frees (a part of umem.h).
 *
 * POOLS (UMEM_CACHED): PAGES OWNED BY A THREAD
 *   The design is mimalloc's free list sharding (Leijen, Zorn and de
 *   Moura, 2019) in front of the first-fit heap; chosen over magazines
 *   and a depot (Bonwick and Adams, 2001) because a free from another
 *   thread then costs one compare-and-swap and never the lock, and over
 *   snmalloc's message queues because a page's own list needs no batching
 *   to be cheap.
 *   - A request of up to UMEM_POOL_MAX (4 KiB) has a size class: 16-byte
 *     steps to 128, then four classes per doubling (at most a quarter
 *     lost to rounding).  Each thread has a pool per heap: for each class,
 *     a list of pages with room, the first of which serves, and a list of
 *     full ones.
 *   - A page is a used block of the heap, cut where its payload starts on
 *     a 64 KiB unit boundary, one unit long: seven slots at least (several
 *     units for classes over 8 KiB, when UMEM_POOL_SHIFT is raised).  It holds a header, then slots of its
 *     class with no header of their own: a slot's page is found from its
 *     address through the heap's unit map (the page's header for each
 *     unit), with no lock.
 *   - The owner allocates by popping its first page's free list, which
 *     takes fresh slots from the page's end 4 KiB at a time; it frees by
 *     pushing onto the page's list.  No lock, no atomic read-modify-write.
 *   - THE FAST PATH, instruction by instruction (bench/fastpath.sh counts
 *     them: 80 for a free and a malloc under libumem.so, the caller's
 *     loop included: malloc 24, free 38, the loop 18).  malloc
 *     (umem__alloc_served): the thread's serving pool (a thread-local
 *     load through the GOT: two); the size at most 1024 (a compare); the
 *     page that serves that size, from the pool's serve[] by (n + 15) /
 *     16 (three: no class table, and never NULL, as a class with no page
 *     reads umem__no_page, which has no free slot; so does a thread with
 *     no pool, whose serving pool is umem__no_pool, and so does a request
 *     of 0); the page's free list (a load, a test); the popped slot's tag
 *     (the misuse check that catches a write after free: the key from the
 *     pool, an xor, a compare); the pop and the untag (three); the page's
 *     count of slots in use and the pool's count of allocations (a load,
 *     an add and a store each: owner-only atomics, so that statistics read
 *     them without a data race).  free: the heap and the page (the heap's
 *     one load, the unit map's span, then its entry for the unit: the
 *     header's address, colour and all, or NULL); the owner (a
 *     thread-local load, a compare: an abandoned page's owner is not NULL,
 *     so a thread with no pool needs no test of its own); the checks that
 *     catch a bad or double free: below the bump (one compare), the start
 *     of a slot (one multiply and a compare, umem__slot_start), not tagged
 *     (a compare, on the line the push writes anyway); the tag, the push;
 *     the class's mark for the next sweep when the page is full (an OR of
 *     the page's full_bit, no branch); the count, decremented, and one
 *     branch on the word it leaves: the page's count carries UMEM_SERVES
 *     while the page serves its class, so only a page that does not
 *     serve leaves the fast path when it empties, and a free and malloc
 *     of one size in turn, which empty the serving page each time, do
 *     not.
 *   - A thread's first UMEM_POOL_AFTER (16) requests take the heap's lock,
 *     and its next makes its pool (umem__pool_attach): a thread that ends
 *     after a few pays for no pool, page or key destructor, whose cost
 *     (about 1,000 instructions, the C library's walk of the thread's
 *     keys at its exit included) had put a thread's start and end at
 *     1.36 times glibc's; 0.97 now (bench/fastpath.sh).
 *   - Another thread's free pushes the slot onto the page's remote list
 *     with one compare-and-swap of one word: the slot's index and the
 *     list's length.  The owner takes that list whole when the page runs
 *     dry, and makes it the page's free list without reading it: walking
 *     it, each slot's line coming in turn from the core that freed it,
 *     took 17% of the time of prodcons (every free remote) with one pair.
 *     A full page is marked watched, and a free into it sets a hint that
 *     sends its owner to sweep its full pages.
 *   - When a class runs dry, the pool takes, under the lock, a page a
 *     thread that ended left behind (adopted), else carves a new one.  A
 *     page its owner's free empties goes back to the heap under the lock,
 *     but a class keeps one empty page to serve; a page other threads'
 *     frees empty waits until its owner takes them back or ends.  A
 *     fixed-size heap keeps half its room for blocks with headers.
 *   - When a thread exits (a pthread key destructor), its empty pages go
 *     back to the heap and the others wait, abandoned, for a thread that
 *     needs a page of their class; those other threads' frees empty go
 *     back at the next thread exit, purge epoch or allocation that finds
 *     no room.  Its pool waits for a new thread (pools
 *     are never unmapped before umem_destroy, since a late remote free
 *     may write its hint).  Allocations the thread makes later take the
 *     lock; its frees of pooled blocks are remote frees.
 *   - Larger requests, aligned ones over UMEM_PAGE_HEAD (128) bytes, and
 *     requests a pool cannot place (its heap is out of room for a page,
 *     or the page would lie in a region past the first UMEM_UNIT_MAPS)
 *     get blocks with headers, under the lock; requests of up to
 *     UMEM_MID_MAX (64 KiB) are cut for a class, and the thread that
 *     frees one keeps it for its next request of the class (umem/pools.h,
 *     MID BLOCKS).  Pools of pages up to 64 KiB were faster by a little,
 *     but a class's pages hold its memory for that class alone: peak RSS
 *     was 1.42 times glibc's on larson with one thread, against 1.21 now
 *     (bench/preload.sh; docs/performance.md).
 */
#ifndef UMEM_H
#error "umem/pages.h is a part of umem.h: include umem.h instead"
#endif

#define UMEM_POOL_GONE ((void *)1) /* the thread is exiting: no new pool */

/* A freed slot's second word: marks it free, so a second free is caught. */
static inline size_t umem__tag(const umem_t *h, const void *p)
{
    return h->tag_key ^ (size_t)(uintptr_t)p;
}

/* A slot's free tag set, and cleared as it is handed out. */
static inline void umem__tag_free(const umem_t *h, void **slot)
{
    slot[1] = (void *)umem__tag(h, slot);
}

static inline int umem__tagged(const umem_t *h, void *const *slot)
{
    return (size_t)(uintptr_t)slot[1] == umem__tag(h, slot);
}

static inline void umem__untag(void **slot)
{
    slot[1] = NULL;
}

static inline size_t umem__page_magic(const umem_t *h, const void *pg)
{
    return h->secret ^ (size_t)(uintptr_t)pg ^ 0x9A6E5u;
}

static inline uint64_t umem__get(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Owner-only counters: a load and a store, no read-modify-write. */
static inline void umem__add(_Atomic uint64_t *v, uint64_t d)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/* A page's slots in use, and whether it serves its class (UMEM_SERVES):
 * one word, written by its owner only, read by statistics. */
static inline uint32_t umem__used_word(const struct umem_page *pg)
{
    return atomic_load_explicit(&((struct umem_page *)pg)->used, memory_order_relaxed);
}

static inline void umem__set_used_word(struct umem_page *pg, uint32_t word)
{
    atomic_store_explicit(&pg->used, word, memory_order_relaxed);
}

static inline uint32_t umem__used(const struct umem_page *pg)
{
    return umem__used_word(pg) & ~UMEM_SERVES;
}

static inline void umem__set_used(struct umem_page *pg, uint32_t used)
{
    umem__set_used_word(pg, used | (umem__used_word(pg) & UMEM_SERVES));
}

/* The size class of a request of 1 to UMEM_POOL_MAX bytes: 16-byte steps
 * to 128, then four classes per doubling (at most 25% lost to rounding). */
static const unsigned char umem__small_class[64] = { /* for n up to 1024, by (n - 1) / 16 */
    0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 9, 10, 10, 11, 11,
    12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15,
    16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 17, 17, 17, 17,
    18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19,
};

/* The highest bit set in x (x > 1). */
static inline unsigned umem__top_bit(size_t x)
{
#if defined(__GNUC__)
    return 63u - (unsigned)__builtin_clzll((unsigned long long)x);
#else
    unsigned b = 0;
    while (x >> (b + 1))
        b++;
    return b;
#endif
}

static inline unsigned umem__class(size_t n)
{
    if (n <= 1024)
        return umem__small_class[(n - 1) >> 4];
    unsigned b = umem__top_bit(n - 1);
    return 8u + (b - 7u) * 4u + (unsigned)((n - 1) >> (b - 2u)) - 4u;
}

static inline size_t umem__class_size(unsigned cls)
{
    if (cls < 8)
        return 16u * (cls + 1u);
    unsigned b = 7u + (cls - 8u) / 4u, k = (cls - 8u) % 4u + 1u;
    return (size_t)(4u + k) << (b - 2u);
}

/* The page that serves the requests of class cls of at most
 * UMEM_SERVE_MAX bytes: its list's first page with room, or umem__no_page;
 * written whenever that first page changes (by umem__page_push and
 * umem__page_unlink). */
static const unsigned char umem__serve_first[21] = { /* class c: serve[first[c] .. first[c + 1] - 1] */
    1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15, 17, 21, 25, 29, 33, 41, 49, 57, 65,
};
_Static_assert(UMEM_SERVE == 65, "classes 0 to 19 cover the sizes serve[] holds");

static inline void umem__serve_update(struct umem_pool *pool, unsigned cls)
{
    if (cls >= 20)
        return;
    struct umem_page *pg = pool->avail[cls] ? pool->avail[cls] : &umem__no_page;
    struct umem_page **k = &pool->serve[umem__serve_first[cls]];
    for (struct umem_page **end = &pool->serve[umem__serve_first[cls + 1]]; k < end; k++)
        *k = pg;
}

/* A page's header, in the page's first unit at a: not at a itself but
 * 0 to UMEM_COLOURS - 1 times UMEM_PAGE_HEAD bytes in, by the unit's
 * number, so that the headers of many pages do not all fall in the one
 * set of the processor's caches that addresses 64 KiB apart share. */
static inline uintptr_t umem__colour(uintptr_t a)
{
    return ((a >> UMEM_UNIT_SHIFT) % UMEM_COLOURS) * UMEM_PAGE_HEAD;
}

static inline struct umem_page *umem__page_at(uintptr_t a)
{
    return (struct umem_page *)(a + umem__colour(a));
}

/* The heap block a page is: its header lies just before the page's unit. */
static inline char *umem__page_block(const struct umem_page *pg)
{
    return (char *)((uintptr_t)pg & ~(uintptr_t)(UMEM_UNIT - 1)) - UMEM_HEADER;
}

/* The slots a page of `units` holds, after its colour and its `head`. */
static inline uint32_t umem__page_capacity(const struct umem_page *pg, size_t slot, unsigned units,
                                           size_t head)
{
    size_t colour = umem__colour((uintptr_t)pg);
    return (uint32_t)((((size_t)units << UMEM_UNIT_SHIFT) - UMEM_HEADER - colour - head) / slot);
}

/* A page's length in units: room for its header and UMEM_PAGE_SLOTS slots. */
static inline unsigned umem__page_units(size_t slot)
{
    return (unsigned)((slot * UMEM_PAGE_SLOTS + UMEM_COLOURS * UMEM_PAGE_HEAD + UMEM_HEADER +
                       UMEM_UNIT - 1) >>
                      UMEM_UNIT_SHIFT);
}

/* The page holding the address `off` bytes from m's base (below its
 * `span`), or NULL. */
static UMEM_HOT_INLINE struct umem_page *umem__page_in(const struct umem_units *m, size_t off)
{
    return atomic_load_explicit(&m->map[off >> UMEM_UNIT_SHIFT], memory_order_relaxed);
}

/* The page holding p, or NULL when p lies in none (any thread, no lock:
 * a page p lies in stays one while p is in use).  Addresses from a
 * map's base to its region's start hold no page: their units are 0. */
static UMEM_HOT_INLINE struct umem_page *umem__page_of(const umem_t *h, const void *p)
{
    uintptr_t c = (uintptr_t)p;
    size_t off = c - h->umap[0].base;
    if (UMEM_LIKELY(off < h->umap[0].span))
        return umem__page_in(&h->umap[0], off);
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_acquire);
    for (unsigned i = 1; i < n; i++) {
        off = c - h->umap[i].base;
        if (off < h->umap[i].span)
            return umem__page_in(&h->umap[i], off);
    }
    return NULL;
}

/* The units of map m that may hold pages (lock held): the first region's
 * up to its committed end, not its whole reservation. */
static inline size_t umem__units_used(const umem_t *h, const struct umem_units *m)
{
    if (m != &h->umap[0])
        return m->count;
    uintptr_t end = (uintptr_t)atomic_load_explicit(&h->end, memory_order_relaxed);
    size_t n = ((end - m->base) >> UMEM_UNIT_SHIFT) + 1;
    return n < m->count ? n : m->count;
}

/* The unit map of the region holding address c (lock held), or NULL. */
static inline struct umem_units *umem__units_of(umem_t *h, uintptr_t c)
{
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++)
        if (c - h->umap[i].lo < h->umap[i].hi - h->umap[i].lo)
            return &h->umap[i];
    return NULL;
}

static inline void umem__set_units(struct umem_units *m, const struct umem_page *pg, int on)
{
    size_t unit = ((uintptr_t)pg - m->base) >> UMEM_UNIT_SHIFT;
    for (unsigned k = 0; k < pg->units; k++)
        atomic_store_explicit(&m->map[unit + k], on ? (struct umem_page *)pg : NULL,
                              memory_order_relaxed);
}

/* Whether an offset below the page's bump is a slot's start: one
 * multiply, no division (Lemire, Kaser and Kurz, 2019: for r and a slot
 * size below 2^32, r * ceil(2^64 / slot) wraps below that ceiling
 * exactly when the slot size divides r). */
static UMEM_HOT_INLINE int umem__slot_start(const struct umem_page *pg, size_t rel)
{
    return rel * pg->div < pg->div;
}

/* The index of the slot starting at p; dies naming p when no slot does. */
static inline size_t umem__slot_index(const struct umem_page *pg, const void *p, const char *call)
{
    size_t rel = (size_t)((const char *)p - pg->start), i = (size_t)((rel * pg->recip) >> 40);
    if (UMEM_UNLIKELY(rel >= pg->span || i * pg->slot != rel))
        umem__die_of(call, "bad %s (not from umem_alloc: not the start of a block):", p);
    return i;
}

/* Checks that p is a slot's start and does not carry the free tag; dies
 * naming p if not. */
static inline void umem__slot_check(const umem_t *h, const struct umem_page *pg, const void *p,
                                    const char *call)
{
    umem__slot_index(pg, p, call);
    if (UMEM_UNLIKELY(umem__tagged(h, (void *const *)p)))
        umem__die_of(call, "%s of a block freed already (double free):", p);
}


/* What the owner's free tests in one compare, kept with the page's place:
 * the first page with room serves its class and stays even when empty;
 * any other page goes to umem__page_changed when its last slot comes
 * back (a full one also marks its class, by its full_bit). */
static inline void umem__page_placed(struct umem_page *pg)
{
    int serves = pg->list == UMEM_LIST_AVAIL && pg->prev == NULL;
    umem__set_used_word(pg, umem__used(pg) | (serves ? UMEM_SERVES : 0));
    pg->full_bit = pg->list == UMEM_LIST_FULL ? (uint64_t)1 << pg->cls : 0;
}

/* Off its list: a pool's (`pool`), or the heap's abandoned pages (NULL). */
static inline void umem__page_unlink(struct umem_pool *pool, struct umem_page **head,
                                     struct umem_page *pg)
{
    if (pg->prev)
        pg->prev->next = pg->next;
    else
        *head = pg->next;
    if (pg->next) {
        pg->next->prev = pg->prev;
        umem__page_placed(pg->next);
    }
    if (pool && pg->list == UMEM_LIST_AVAIL && !pg->prev)
        umem__serve_update(pool, pg->cls);
}

/* First on a list: a pool's, or the heap's abandoned pages (NULL). */
static inline void umem__page_push(struct umem_pool *pool, struct umem_page **head,
                                   struct umem_page *pg, uint8_t list)
{
    pg->prev = NULL;
    pg->next = *head;
    if (*head) {
        (*head)->prev = pg;
        umem__page_placed(*head);
    }
    *head = pg;
    pg->list = list;
    umem__page_placed(pg);
    if (pool && list == UMEM_LIST_AVAIL)
        umem__serve_update(pool, pg->cls);
}

/* The first slot of a remote list whose word is r, or NULL. */
static inline void **umem__remote_first(const struct umem_page *pg, uintptr_t r)
{
    size_t head = (r & UMEM_REMOTE_HEAD) >> 1;
    return head ? (void **)(pg->start + (head - 1) * pg->slot) : NULL;
}

/* The remote word r once slot `index` is pushed: first, one more. */
static inline uintptr_t umem__remote_pushed(uintptr_t r, size_t index)
{
    return (r & UMEM_WATCH) | (uintptr_t)(index + 1) << 1 |
           ((r >> UMEM_REMOTE_COUNT) + 1) << UMEM_REMOTE_COUNT;
}

/* The page's owner, or the lock holder for an abandoned page: moves its
 * remote frees to its free list; how many.  The remote word counts them,
 * so the list is not walked when the free list is empty (as it is when a
 * page runs out): its slots stay unread until they are handed out, each
 * then checked for its tag, and the owner does not wait on each in turn
 * for its line to come from the core that freed it. */
static inline unsigned umem__take_remote(struct umem_page *pg)
{
    if ((atomic_load_explicit(&pg->remote, memory_order_relaxed) & ~UMEM_WATCH) == 0)
        return 0;
    uintptr_t r = atomic_exchange_explicit(&pg->remote, 0, memory_order_acquire);
    void **first = umem__remote_first(pg, r), **last = first;
    unsigned n = (unsigned)(r >> UMEM_REMOTE_COUNT);
    if (!first || n == 0 || n > umem__used(pg))
        umem__die("heap corruption: a page's remote frees outnumber its blocks at", pg);
    if (pg->free) {
        /* Each was checked as it was pushed: a link that names no slot
         * was written over after that free. */
        for (unsigned k = 1; k < n; k++) {
            last = (void **)last[0];
            if (!last)
                break;
            umem__slot_index(pg, last, "free");
        }
        if (!last || last[0])
            umem__die("heap corruption: a page's remote list was written over at", pg);
        last[0] = pg->free;
    }
    pg->free = first;
    umem__set_used(pg, umem__used(pg) - n);
    return n;
}

/* Owner: umem__take_remote, counted in the pool. */
static inline unsigned umem__collect(struct umem_pool *pool, struct umem_page *pg)
{
    unsigned n = umem__take_remote(pg);
    if (n) {
        umem__add(&pool->collected, n);
        umem__add(&pool->collected_bytes, (uint64_t)n * pg->slot);
    }
    return n;
}

/* Owner: slots never handed out join the free list, UMEM_EXTEND_BYTES
 * worth at a time (at least one), in address order; how many. */
static inline unsigned umem__extend(const umem_t *h, struct umem_page *pg)
{
    char *bump = pg->start + pg->handed;
    size_t left = (size_t)(pg->limit - bump) / pg->slot, want = UMEM_EXTEND_BYTES / pg->slot;
    want = want > 0 ? want : 1;
    unsigned n = (unsigned)(left < want ? left : want);
    void **tail = NULL;
    for (unsigned i = n; i > 0; i--) {
        void **p = (void **)(bump + (size_t)(i - 1) * pg->slot);
        p[0] = tail;
        umem__tag_free(h, p);
        tail = p;
    }
    if (n > 0) {
        ((void **)(bump + (size_t)(n - 1) * pg->slot))[0] = pg->free;
        pg->free = tail;
        pg->handed += (uint32_t)(n * pg->slot);
    }
    return n;
}

/* Owner: whether the page has a free slot, after taking its remote frees
 * back, else slots never handed out (memory already touched first). */
static inline int umem__page_refill(const umem_t *h, struct umem_pool *pool, struct umem_page *pg)
{
    return pg->free || umem__collect(pool, pg) || umem__extend(h, pg);
}

/* Owner: a slot from the page's free list, which is not empty. */
static inline void *umem__page_pop(struct umem_pool *pool, struct umem_page *pg)
{
    void **p = pg->free;
    /* Still tagged: only who knows the heap's secret can forge the tag, so
     * a write after free over the link cannot hand out an address of the
     * writer's choosing.  The pool's copy of the heap's tag key: no load
     * of the heap on this path. */
    if (UMEM_UNLIKELY((size_t)(uintptr_t)p[1] != (pool->tag_key ^ (size_t)(uintptr_t)p)))
        umem__die("heap corruption: a block was written after its free:", p);
    pg->free = (void **)p[0];
    umem__untag(p);
    umem__set_used_word(pg, umem__used_word(pg) + 1);
    umem__add(&pool->allocs, 1);
    return p;
}

/* Owner: a page with no room goes to the full list, watched (a remote
 * free into it sets the owner's hint); 0 when a remote free came first,
 * collected, and the page has room after all. */
static inline int umem__watch(struct umem_pool *pool, struct umem_page *pg)
{
    /* The mark may be left from an earlier time on the full list: a page
     * that came back for its owner's frees keeps it (clearing it would
     * cost an atomic read-modify-write on every such free). */
    uintptr_t r = atomic_load_explicit(&pg->remote, memory_order_relaxed);
    while (r != UMEM_WATCH) {
        if (r & ~UMEM_WATCH) {
            umem__collect(pool, pg);
            return 0;
        }
        if (atomic_compare_exchange_weak_explicit(&pg->remote, &r, UMEM_WATCH,
                                                  memory_order_relaxed, memory_order_relaxed))
            break;
    }
    if (pg->list == UMEM_LIST_AVAIL)
        umem__page_unlink(pool, &pool->avail[pg->cls], pg);
    umem__page_push(pool, &pool->full[pg->cls], pg, UMEM_LIST_FULL);
    return 1;
}

/* Owner: the full pages of a class that remote frees gave room go back
 * among the pages with room. */
static inline void umem__sweep(struct umem_pool *pool, unsigned cls)
{
    atomic_store_explicit(&pool->hint[cls], 0, memory_order_relaxed);
    pool->full_freed &= ~((uint64_t)1 << cls);
    struct umem_page *pg = pool->full[cls], *next;
    for (; pg; pg = next) {
        next = pg->next;
        if (pg->free || umem__collect(pool, pg)) {
            umem__page_unlink(pool, &pool->full[cls], pg);
            umem__page_push(pool, &pool->avail[cls], pg, UMEM_LIST_AVAIL);
        }
    }
}

/* Owner: a page of the class with room, without the lock, or NULL. */
static inline struct umem_page *umem__pool_find(umem_t *h, struct umem_pool *pool, unsigned cls)
{
    for (;;) {
        struct umem_page *pg;
        while ((pg = pool->avail[cls]) != NULL) {
            if (umem__page_refill(h, pool, pg) || !umem__watch(pool, pg))
                return pg;
        }
        /* The owner freed into a full page, or a hint says another thread
         * did; once in 64 times the full pages are swept anyway, in case
         * a hint went to a pool that gave the page up meanwhile. */
        if (!(pool->full_freed >> cls & 1u) &&
            !atomic_load_explicit(&pool->hint[cls], memory_order_relaxed) &&
            (++pool->sweeps & 63u) != 0)
            return NULL;
        umem__sweep(pool, cls);
        if (!pool->avail[cls])
            return NULL;
    }
}
