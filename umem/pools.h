/*
 * umem/pools.h - pools: pages carved and given back under the lock, a
 * thread's pool made and ended, and the calls a pool serves (a part of
 * umem.h).
 *
 * The design is in umem/pages.h.  Carving looks for a free block that
 * holds a whole unit-aligned window (umem__take_window); a page its
 * owner's free empties goes back under the lock; a thread's exit gives
 * its empty pages back and abandons the rest for adoption.
 */
#ifndef UMEM_H
#error "umem/pools.h is a part of umem.h: include umem.h instead"
#endif

/* Files a piece of a large free block that was cut: a large piece keeps
 * what of the block's dirty range lies in it, and its age. */
static inline void umem__file_part(umem_t *h, char *b, size_t size, char *lo, char *hi,
                                   uint64_t stamp)
{
    umem__file(h, b, size);
    if (size <= UMEM_SMALL_MAX)
        return;
    struct umem_node *x = (struct umem_node *)b;
    lo = lo > b ? lo : b;
    hi = hi < b + size ? hi : b + size;
    x->dirty_lo = lo < hi ? lo : NULL;
    x->dirty_hi = lo < hi ? hi : NULL;
    x->stamp = stamp;
}

/* Where a block of `need` bytes with its payload aligned to `align` fits
 * in the free block x of `size` bytes: its header, or NULL.  What lies
 * before it must be nothing or a block of its own. */
static inline char *umem__window(struct umem_node *x, size_t size, size_t align, size_t need)
{
    uintptr_t f = (uintptr_t)x;
    uintptr_t at = ((f + UMEM_HEADER + align - 1) & ~(uintptr_t)(align - 1)) - UMEM_HEADER;
    if (at != f && at - f < UMEM_MIN_BLOCK)
        at += align;
    return at - f <= size && size - (at - f) >= need ? (char *)at : NULL;
}

/* The lowest-addressed large free block holding such a window: an
 * in-order walk of the subtrees whose largest block is big enough. */
static inline struct umem_node *umem__window_find(struct umem_node *x, size_t align, size_t need,
                                                  char **at, unsigned depth)
{
    for (; x && x->max >= need && depth < UMEM_PATH; x = x->right, depth++) {
        struct umem_node *y = umem__window_find(x->left, align, need, at, depth + 1);
        if (y)
            return y;
        size_t size = umem__size(x);
        if (size >= need && (*at = umem__window(x, size, align, need)) != NULL)
            return x;
    }
    return NULL;
}

/* A block of *need bytes (more than UMEM_SMALL_MAX) whose payload is
 * aligned to `align`, cut from the first large free block that holds one
 * (lock held); the pieces before and after it stay free.  Grows the heap
 * once when none does.  NULL when nothing fits. */
static inline char *umem__take_window(umem_t *h, size_t align, size_t *need)
{
    char *b = NULL;
    struct umem_node *x = umem__window_find(h->root, align, *need, &b, 0);
    if (!x) {
        if (!(h->flags & UMEM_GROW) || umem__grow(h, *need + align + UMEM_MIN_BLOCK) != 0)
            return NULL;
        x = umem__window_find(h->root, align, *need, &b, 0);
        if (!x)
            return NULL;
    }
    if (!umem__header_ok(h, x))
        umem__die("heap corruption: free block header overwritten at", x);
    size_t size = umem__size(x), lead = (size_t)(b - (char *)x);
    size_t tail = size - lead - *need;
    char *lo = x->dirty_lo, *hi = x->dirty_hi;
    uint64_t stamp = x->stamp;
    umem__unfile(h, (char *)x, size);
    if (tail < UMEM_MIN_BLOCK) {
        *need += tail;
        tail = 0;
        umem__set_prev_free(b + *need, 0);
    }
    umem__set_header(h, b, *need | UMEM_USED | (lead ? UMEM_PREV_FREE : 0));
    if (lead)
        umem__file_part(h, (char *)x, lead, lo, hi, stamp);
    if (tail)
        umem__file_part(h, b + *need, tail, lo, hi, stamp);
    return b;
}

/* A page of the class carved from the heap for the pool (lock held), its
 * payload on a unit boundary of a region with a unit map; NULL when none
 * fits. */
static inline struct umem_page *umem__page_carve(umem_t *h, struct umem_pool *pool, unsigned cls)
{
    size_t slot = umem__class_size(cls);
    unsigned units = umem__page_units(slot);
    size_t need = (size_t)units << UMEM_UNIT_SHIFT;
    /* A heap that cannot grow keeps half its room for blocks with headers:
     * mostly empty pages of many classes could take it all. */
    if (!(h->flags & UMEM_GROW) && h->page_bytes + need > h->heap_bytes / 2)
        return NULL;
    char *b = umem__take_window(h, UMEM_UNIT, &need);
    if (!b)
        return NULL;
    char *a = b + UMEM_HEADER;
    struct umem_units *m = umem__units_of(h, (uintptr_t)a);
    if (!m) {
        /* In a region with no unit map (past UMEM_UNIT_MAPS): no pages. */
        struct umem_span *s = umem__span_find(h, b);
        umem__merge_free(h, b, s ? s->first : b);
        return NULL;
    }
    struct umem_page *pg = umem__page_at((uintptr_t)a);
    memset(pg, 0, sizeof *pg);
    pg->magic = umem__page_magic(h, pg);
    atomic_store_explicit(&pg->owner, pool, memory_order_relaxed);
    atomic_store_explicit(&pg->remote, 0, memory_order_relaxed);
    pg->slot = (uint32_t)slot;
    pg->cls = (uint8_t)cls;
    pg->units = (uint8_t)units;
    size_t head = UMEM_PAGE_HEAD;
    pg->start = (char *)pg + head;
    pg->capacity = umem__page_capacity(pg, slot, units, head);
    pg->span = (uint32_t)(pg->capacity * slot);
    pg->handed = 0;
    pg->limit = pg->start + pg->span;
    pg->recip = ((uint64_t)1 << 40) / slot + 1u;
    pg->div = UINT64_MAX / slot + 1u;
    umem__set_units(m, pg, 1);
    h->pages++;
    h->pages_made++;
    h->page_bytes += need;
    umem__grew(h, need);
    umem__page_push(pool, &pool->avail[cls], pg, UMEM_LIST_AVAIL);
    pool->classes |= (uint64_t)1 << cls;
    return pg;
}

/* An empty page goes back to the heap (lock held). */
static inline void umem__page_release(umem_t *h, struct umem_page *pg)
{
    struct umem_units *m = umem__units_of(h, (uintptr_t)pg);
    umem__set_units(m, pg, 0);
    pg->magic = 0;
    char *b = umem__page_block(pg);
    size_t size = umem__size(b);
    h->pages--;
    h->pages_freed++;
    h->page_bytes -= size;
    h->bytes_in_use -= size;
    h->unpurged += size;
    struct umem_span *s = m == &h->umap[0] ? NULL : umem__span_find(h, b);
    umem__merge_free(h, b, s ? s->first : h->first);
}

/* A page for the pool (lock held): one a thread that ended left behind,
 * adopted, else a new one; NULL when the heap has no room. */
static inline struct umem_page *umem__page_get(umem_t *h, struct umem_pool *pool, unsigned cls)
{
    struct umem_page *pg;
    while ((pg = h->abandoned[cls]) != NULL) {
        umem__page_unlink(NULL, &h->abandoned[cls], pg);
        h->abandoned_pages--;
        atomic_store_explicit(&pg->owner, pool, memory_order_relaxed);
        umem__page_push(pool, &pool->avail[cls], pg, UMEM_LIST_AVAIL);
        pool->classes |= (uint64_t)1 << cls;
        if (umem__page_refill(h, pool, pg) || !umem__watch(pool, pg))
            return pg;
    }
    return umem__page_carve(h, pool, cls);
}

/* The pool's pages on one list leave it (lock held): the empty ones go
 * back to the heap, the others to the heap's abandoned pages. */
static inline void umem__pool_drop(umem_t *h, struct umem_pool *pool, struct umem_page **head,
                                   int keep_used)
{
    struct umem_page *pg = *head, *next;
    for (; pg; pg = next) {
        next = pg->next;
        atomic_fetch_and_explicit(&pg->remote, ~UMEM_WATCH, memory_order_relaxed);
        if (!keep_used) {
            /* Ownerless first, then its remote frees read (both seq_cst,
             * as umem__remote_free's push and its look at the owner): a
             * free this collect misses sees no owner, and marks the class
             * for umem__reclaim_abandoned. */
            atomic_store_explicit(&pg->owner, UMEM_NO_OWNER, memory_order_seq_cst);
            (void)atomic_load_explicit(&pg->remote, memory_order_seq_cst);
        }
        umem__collect(pool, pg);
        if (umem__used(pg) != 0 && keep_used)
            continue;
        umem__page_unlink(pool, head, pg);
        if (umem__used(pg) == 0) {
            umem__page_release(h, pg);
            continue;
        }
        umem__page_push(NULL, &h->abandoned[pg->cls], pg, UMEM_LIST_ABANDONED);
        h->abandoned_classes |= (uint64_t)1 << pg->cls;
        h->abandoned_pages++;
    }
}

/* The pool's empty pages with room go back to the heap, each class's
 * first included (lock held). */
static inline void umem__pool_drop_empty(umem_t *h, struct umem_pool *pool)
{
    for (uint64_t left = pool->classes; left; left &= left - 1)
        umem__pool_drop(h, pool, &pool->avail[umem__lowest_bit(left)], 1);
}

/* Pages of threads that ended, emptied by other threads' frees, go back
 * to the heap (lock held): no thread may ever need their class again.
 * Only the classes whose abandoned pages a free reached since the last
 * time are looked at. */
static inline void umem__reclaim_abandoned(umem_t *h)
{
    if (h->abandoned_pages == 0)
        return;
    uint64_t freed = atomic_exchange_explicit(&h->abandoned_freed, 0, memory_order_acquire);
    for (uint64_t left = h->abandoned_classes & freed; left && h->abandoned_pages > 0;
         left &= left - 1) {
        unsigned cls = umem__lowest_bit(left);
        struct umem_page *pg = h->abandoned[cls], *next;
        for (; pg; pg = next) {
            next = pg->next;
            unsigned n = umem__take_remote(pg);
            h->gone_collected += n;
            h->gone_collected_bytes += (uint64_t)n * pg->slot;
            if (umem__used(pg) != 0)
                continue;
            umem__page_unlink(NULL, &h->abandoned[cls], pg);
            h->abandoned_pages--;
            umem__page_release(h, pg);
        }
        if (!h->abandoned[cls])
            h->abandoned_classes &= ~((uint64_t)1 << cls);
    }
}

/* ---- MID BLOCKS ----
 * Requests of more than UMEM_POOL_MAX (4 KiB) and at most UMEM_MID_MAX
 * (64 KiB) bytes get blocks with headers, first fit, their sizes rounded
 * up to a class: eight per doubling, so at most an eighth is lost, where
 * a page of slots would hold its class's memory for that class alone.
 * A thread that frees such a block keeps it, as glibc's tcache does, on
 * its pool's list for the class, while the class has fewer than
 * UMEM_MID_DEPTH (16) and the pool keeps less than UMEM_MID_BYTES (1 MiB);
 * its next request of the class takes it back, with no lock.
 *   - A thread keeps blocks only while it asks for them itself: at most
 *     UMEM_MID_DEMAND (64) after its last request of one.  A consumer that
 *     frees what producers allocate would otherwise keep blocks that no
 *     request of its own takes back: prodcons with 8 pairs held 2.8 times
 *     glibc's peak, and 1.8 times before blocks were kept.
 *   - A kept block stays a used block of the heap, marked by a tag in its
 *     payload's second word: a second free, by any thread, and a realloc
 *     of it are caught (umem__locate checks the tag too), and a write after
 *     free over the tag is caught when the block is taken back.
 *   - The free checks the block without the lock: a 16-byte aligned
 *     pointer inside a region with a unit map, whose header is intact and
 *     says a used block of its own (not a mapping's, not an end mark),
 *     ending inside the region, before an intact header that does not
 *     say it is free.  A kept block's tag (or the mark of a block freed
 *     while a fork holds the lock) is reported as a double free at once;
 *     anything else that looks wrong takes the lock, where umem__locate
 *     checks again (a header the lock holder is rewriting may read as
 *     broken) and reports.
 *   - A block whose size is within UMEM_MIN_BLOCK bytes of a class's is
 *     kept; any other (grown or shrunk by realloc, aligned) goes back at
 *     once.
 *   - Taking one back checks its place, its header and its tag: a write
 *     after free over its link or tag is reported, not followed.  The
 *     walks of a class's list stop at its count.
 *   - Kept blocks go back to the heap when the thread ends, on umem_trim
 *     by the thread (a growable heap), and when an allocation of a block
 *     with a header, or the carving of a page, finds no room: the calling
 *     thread's only. */

static inline unsigned umem__mid_class(size_t n) /* n: UMEM_POOL_MAX + 1 to UMEM_MID_MAX */
{
    unsigned b = umem__top_bit(n - 1);
    return (b - UMEM_POOL_SHIFT) * 8u + (unsigned)((n - 1 - ((size_t)1 << b)) >> (b - 3u));
}

static inline size_t umem__mid_size(unsigned cls)
{
    unsigned b = UMEM_POOL_SHIFT + cls / 8u;
    return ((size_t)1 << b) + ((size_t)(cls % 8u + 1u) << (b - 3u));
}

/* The class a block of `usable` bytes was cut for, or -1 for none. */
static inline int umem__mid_kept_class(size_t usable)
{
    if (UMEM_MID_CLASSES == 0 || usable < umem__mid_size(0) ||
        usable >= UMEM_MID_MAX + UMEM_MIN_BLOCK)
        return -1;
    unsigned cls = usable >= UMEM_MID_MAX ? UMEM_MID_CLASSES - 1 : umem__mid_class(usable + 1) - 1;
    return usable - umem__mid_size(cls) < UMEM_MIN_BLOCK ? (int)cls : -1;
}

/* Whether a thread may read block header b without the lock: it lies in
 * a region with a unit map (the first up to its end mark); *hi: the end
 * of what may be read there. */
static inline int umem__mid_region(const umem_t *h, const char *b, const char **hi)
{
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed);
    if (b >= h->first && b < end) {
        *hi = end + UMEM_HEADER;
        return 1;
    }
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_acquire);
    for (unsigned i = 1; i < n; i++)
        if ((uintptr_t)b - h->umap[i].lo < h->umap[i].hi - h->umap[i].lo) {
            *hi = (const char *)h->umap[i].hi;
            return 1;
        }
    return 0;
}

/* q, a block taken from a kept list: dies naming it unless it lies in a
 * region with a unit map, with its header intact and its tag. */
static inline void **umem__mid_checked(const umem_t *h, void **q)
{
    const char *hi, *b = (const char *)q - UMEM_HEADER;
    if ((uintptr_t)q % UMEM_ALIGN != 0 || !umem__mid_region(h, b, &hi) ||
        (size_t)(uintptr_t)q[1] != umem__mid_tag(h, q))
        umem__die("heap corruption: a freed block written to (write after free) at", q);
    if (!umem__header_ok(h, b))
        umem__die("heap corruption: write past the end of the block before", q);
    return q;
}

/* The blocks pool keeps go back to the heap (lock held): frees to the
 * heap, counted in mid_flushed too, as the program's frees were counted
 * when the blocks were kept. */
static inline void umem__mid_flush(umem_t *h, struct umem_pool *pool)
{
    for (uint64_t left = pool->mid_map; left; left &= left - 1) { /* classes it keeps */
        unsigned cls = umem__lowest_bit(left);
        void **q = (void **)pool->mid[cls];
        for (unsigned k = pool->mid_count[cls]; k > 0; k--) {
            q = umem__mid_checked(h, q);
            void **next = (void **)q[0];
            q[1] = NULL;
            struct umem_where w;
            umem__locate(h, q, &w, "free");
            umem__give_back(h, &w);
            h->frees++;
            h->mid_flushed++;
            q = next;
        }
        pool->mid[cls] = NULL;
        pool->mid_count[cls] = 0;
    }
    pool->mid_map = 0;
    atomic_store_explicit(&pool->mid_bytes, 0, memory_order_relaxed);
}

/* Owner: an allocation of class cls that its first page could not serve. */
static UMEM_NOINLINE void *umem__pool_alloc(umem_t *h, struct umem_pool *pool, unsigned cls,
                                            size_t n)
{
    struct umem_page *pg = umem__pool_find(h, pool, cls);
    if (pg)
        return umem__page_pop(pool, pg);
    int r = umem__lock(h, UMEM_COUNTED | UMEM_LEND);
    if (r == 1) /* lent to a fork; n == 0: the caller's to find */
        return n ? umem__lent_alloc(h, n, UMEM_ALIGN) : NULL;
    if (r != 0)
        return NULL;
    pg = umem__page_get(h, pool, cls);
    if (!pg) {
        /* Out of room: this thread's empty pages and kept blocks go back
         * first, and the pages of ended threads that other threads' frees
         * emptied. */
        umem__pool_drop_empty(h, pool);
        umem__mid_flush(h, pool);
        umem__reclaim_abandoned(h);
        pg = umem__page_carve(h, pool, cls);
    }
    umem__maybe_purge(h);
    umem__unlock(h);
    if (pg && umem__page_refill(h, pool, pg))
        return umem__page_pop(pool, pg);
    /* A block with a header instead, or NULL; n == 0: the caller's to find. */
    return n ? umem__alloc_locked(h, n) : NULL;
}

/* Owner, after a free that emptied a page other than the one that serves
 * its class (its release_at): the page goes back to the heap, or becomes
 * the class's one empty page, which serves from then on. */
static UMEM_NOINLINE void umem__page_changed(umem_t *h, struct umem_pool *pool,
                                             struct umem_page *pg)
{
    unsigned cls = pg->cls;
    umem__page_unlink(pool, pg->list == UMEM_LIST_FULL ? &pool->full[cls] : &pool->avail[cls], pg);
    /* Empty, and off its list: the class keeps one empty page, which
     * serves from now on (an allocation right after goes to it, not to
     * the heap); a second goes back to the heap. */
    struct umem_page *first = pool->avail[cls];
    if (!first || umem__used(first) != 0 || umem__lock(h, UMEM_COUNTED | UMEM_LEND) != 0) {
        umem__page_push(pool, &pool->avail[cls], pg, UMEM_LIST_AVAIL);
        return;
    }
    umem__page_release(h, pg);
    umem__maybe_purge(h);
    umem__unlock(h);
}

/* A free into a page another thread owns (or none): one compare-and-swap
 * onto its remote list.  What the push needs of the page is read first:
 * once pushed, the slot may be collected and the page given back. */
static UMEM_NOINLINE void umem__remote_free(umem_t *h, struct umem_page *pg, void **q,
                                            size_t index, struct umem_pool *mine)
{
    struct umem_pool *owner = atomic_load_explicit(&pg->owner, memory_order_relaxed);
    unsigned cls = pg->cls;
    uint64_t slot = pg->slot;
    uintptr_t old = atomic_load_explicit(&pg->remote, memory_order_relaxed);
    do {
        q[0] = umem__remote_first(pg, old);
    } while (!atomic_compare_exchange_weak_explicit(&pg->remote, &old,
                                                    umem__remote_pushed(old, index),
                                                    memory_order_seq_cst, memory_order_relaxed));
    /* An abandoned page (see umem__pool_drop): its class is marked for
     * the lock's next reclaim of emptied pages. */
    if (atomic_load_explicit(&pg->owner, memory_order_seq_cst) == UMEM_NO_OWNER)
        atomic_fetch_or_explicit(&h->abandoned_freed, (uint64_t)1 << cls, memory_order_release);
    if (old & UMEM_WATCH && owner != UMEM_NO_OWNER &&
        !atomic_load_explicit(&owner->hint[cls], memory_order_relaxed))
        atomic_store_explicit(&owner->hint[cls], 1, memory_order_relaxed);
    if (mine) {
        umem__add(&mine->remote_frees, 1);
        umem__add(&mine->remote_bytes, slot);
    } else {
        atomic_fetch_add_explicit(&h->orphan_frees, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->orphan_bytes, slot, memory_order_relaxed);
    }
}

/* The thread is ending: its pages go back or are left for others to
 * adopt, and its pool waits for another thread. */
static inline void umem__pool_exit(void *arg)
{
    /* The flag, not the key, tells later calls that the thread is ending:
     * a key set again here would make the C library run every key's
     * destructor once more. */
    umem__tls.exiting = 1;
    struct umem_pool *pool = (struct umem_pool *)arg;
    umem_t *h = pool->heap;
    UMEM__VG_QUIET(h);
    if (umem__lock(h, 0) == 0) {
        for (uint64_t left = pool->classes; left; left &= left - 1) {
            umem__pool_drop(h, pool, &pool->avail[umem__lowest_bit(left)], 0);
            umem__pool_drop(h, pool, &pool->full[umem__lowest_bit(left)], 0);
        }
        pool->classes = 0;
        umem__mid_flush(h, pool);
        h->gone_mid_allocs += umem__get(&pool->mid_allocs);
        h->gone_mid_frees += umem__get(&pool->mid_frees);
        h->gone_allocs += umem__get(&pool->allocs);
        h->gone_moves += umem__get(&pool->moves);
        h->gone_remote += umem__get(&pool->remote_frees);
        h->gone_remote_bytes += umem__get(&pool->remote_bytes);
        h->gone_collected += umem__get(&pool->collected);
        h->gone_collected_bytes += umem__get(&pool->collected_bytes);
        if (pool->prev)
            pool->prev->next = pool->next;
        else
            h->pools = pool->next;
        if (pool->next)
            pool->next->prev = pool->prev;
        pool->next = h->spare_pools;
        h->spare_pools = pool;
        umem__reclaim_abandoned(h);
        umem__maybe_purge(h);
        umem__unlock(h);
    }
    UMEM__VG_LOUD(h);
    umem__tls.heap = h;
    umem__tls.secret = h->secret;
    umem__tls.pool = NULL;
    umem__tls.serving = &umem__no_pool;
}

static inline size_t umem__pool_bytes(const umem_t *h)
{
    return (sizeof(struct umem_pool) + h->page - 1) & ~(h->page - 1);
}

#define UMEM_POOL_LATER ((struct umem_pool *)3) /* the lock is lent to a fork: ask again */

/* A pool for the calling thread (a spare one, or a new one), or NULL. */
static inline struct umem_pool *umem__pool_new(umem_t *h)
{
    size_t bytes = umem__pool_bytes(h);
    int r = umem__lock(h, UMEM_LEND);
    if (r == 0 && !h->spare_pools) {
        umem__unlock(h);
        int saved = errno; /* a free may come here: it leaves errno alone */
        struct umem_pool *fresh = (struct umem_pool *)umem__map(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE);
        errno = saved;
        if (!fresh)
            return NULL;
        fresh->heap = h;
        fresh->tag_key = h->tag_key;
        for (size_t k = 0; k < UMEM_SERVE; k++)
            fresh->serve[k] = &umem__no_page;
        if ((r = umem__lock(h, UMEM_LEND)) != 0) {
            umem__unmap(fresh, bytes);
        } else {
            fresh->next = h->spare_pools; /* a spare, taken below */
            h->spare_pools = fresh;
            h->mapped_bytes += bytes;
        }
    }
    if (r != 0)
        return r == 1 ? UMEM_POOL_LATER : NULL;
    struct umem_pool *pool = h->spare_pools;
    h->spare_pools = pool->next;
    /* A spare's lists are empty (its thread's exit dropped every page;
     * a new one is zero), so every request size's page is umem__no_page;
     * its counters were added to the heap's; its
     * hints may still be written by late remote frees, and are left
     * alone. */
    pool->sweeps = 0;
    pool->mid_demand = 0;
    pool->full_freed = 0;
    pool->classes = 0;
    _Atomic uint64_t *counters[] = {&pool->allocs,          &pool->moves,     &pool->remote_frees,
                                    &pool->remote_bytes,    &pool->collected, &pool->collected_bytes,
                                    &pool->mid_allocs,      &pool->mid_frees};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        atomic_store_explicit(counters[i], 0, memory_order_relaxed);
    pool->prev = NULL;
    pool->next = h->pools;
    if (pool->next)
        pool->next->prev = pool;
    h->pools = pool;
    umem__unlock(h);
    return pool;
}

static inline int umem__plain_pools(const umem_t *h)
{
    return (h->flags & (UMEM__WATCHED | UMEM_CACHED)) == UMEM_CACHED;
}

/* pool (or NULL) is the calling thread's for h, the heap it uses now. */
static inline void umem__pool_known_now(umem_t *h, struct umem_pool *pool)
{
    umem__tls.heap = h;
    umem__tls.secret = h->secret;
    umem__tls.pool = pool;
    umem__tls.serving = pool && umem__plain_pools(h) ? pool : &umem__no_pool;
}

/* The calling thread's pool for h, made at its first request past the
 * UMEM_POOL_AFTER the lock serves; NULL when the
 * thread must go to the heap's lock instead. */
static UMEM_NOINLINE struct umem_pool *umem__pool_attach(umem_t *h)
{
    void *v = pthread_getspecific(h->key);
    /* A key's value is cleared before its destructor runs, and the
     * destructors of other keys may allocate afterwards: a thread that is
     * ending gets no new pool, which nothing would give back. */
    if (umem__tls.exiting)
        v = UMEM_POOL_GONE;
    struct umem_pool *pool = v == UMEM_POOL_GONE ? NULL : (struct umem_pool *)v;
    /* The lock serves a thread's first UMEM_POOL_AFTER requests: one that
     * ends after a few costs no pool, no page and no key destructor. */
    if (!pool && v != UMEM_POOL_GONE && umem__tls.unpooled < UMEM_POOL_AFTER) {
        umem__tls.unpooled++;
        return NULL;
    }
    if (!pool && v != UMEM_POOL_GONE && (pool = umem__pool_new(h)) == UMEM_POOL_LATER)
        return NULL; /* the heap's lock (lent) serves this call; no pool yet */
    if (pool && !v) {
        /* Known to this thread first: pthread_setspecific may allocate,
         * and that allocation must find the pool, not make another. */
        umem__pool_known_now(h, pool);
        if (pthread_setspecific(h->key, pool) != 0)
            umem__pool_exit(pool); /* no key, no exit: the lock it is */
        return umem__tls.pool;
    }
    umem__pool_known_now(h, pool);
    return pool;
}

/* The calling thread's pool for h.  A program of one heap that is never
 * destroyed (UMEM_ONE_HEAP) knows a pool it has is h's; others check that
 * the thread's pool is of h, and of this h, not of a destroyed heap that
 * lay at the same address. */
static UMEM_HOT_INLINE struct umem_pool *umem__pool_known(const umem_t *h)
{
#if UMEM_ONE_HEAP
    (void)h;
    return umem__tls.pool;
#else
    if (UMEM_LIKELY(umem__tls.heap == h && umem__tls.secret == h->secret))
        return umem__tls.pool;
    return NULL;
#endif
}

/* ... made when due (NULL: the thread must go to the heap's lock). */
static inline struct umem_pool *umem__pool(umem_t *h)
{
    struct umem_pool *pool = umem__pool_known(h);
    if (UMEM_LIKELY(pool != NULL))
        return pool;
    return umem__pool_attach(h);
}

/* A free of a slot by a thread whose pool is not known yet, or is not
 * the page's owner: the owner's path after all when the thread's pool,
 * made now, owns the page; else a remote free. */
static UMEM_NOINLINE void umem__foreign_free(void *p, umem_t *h, struct umem_page *pg);

/* The owner's free of p failed its checks: which misuse it is. */
static UMEM_COLD void umem__bad_owner_free(const struct umem_page *pg, void *p)
{
    umem__slot_index(pg, p, "free");
    if ((char *)p >= pg->start + pg->handed)
        umem__die("bad free (not from umem_alloc: never handed out):", p);
    umem__die("free of a block freed already (double free):", p);
}

/* A free of a slot, by its owner or by any other thread. */
static UMEM_HOT_INLINE void umem__pool_free(umem_t *h, struct umem_page *pg, void *p)
{
    void **q = (void **)p;
    struct umem_pool *mine = umem__pool_known(h);
    /* A page's owner is never NULL: a thread with no pool matches none. */
    if (UMEM_LIKELY(atomic_load_explicit(&pg->owner, memory_order_relaxed) == mine)) {
        /* The start of a slot handed out (below the bump), and
         * not tagged free: the line is written below, so reading its tag
         * costs no cache miss the write would not. */
        size_t rel = (size_t)((char *)p - pg->start);
        size_t tag = umem__tag(h, p);
        if (UMEM_UNLIKELY(rel >= pg->handed ||
                          !umem__slot_start(pg, rel) ||
                          (size_t)(uintptr_t)q[1] == tag))
            umem__bad_owner_free(pg, p);
        q[1] = (void *)tag;
        q[0] = pg->free;
        pg->free = q;
        /* A free into a full page marks its class for the next sweep, by
         * an OR and no branch: whether the page is full is as random as
         * the program's frees (a branch on it was mispredicted on 45% of
         * larson's frees). */
        mine->full_freed |= pg->full_bit;
        uint32_t word = umem__used_word(pg) - 1;
        umem__set_used_word(pg, word);
        /* A page that emptied, but for the one that serves its class. */
        if (UMEM_UNLIKELY(word == 0))
            umem__page_changed(h, mine, pg);
        return;
    }
    umem__foreign_free(p, h, pg);
}

static UMEM_NOINLINE void umem__foreign_free(void *p, umem_t *h, struct umem_page *pg)
{
    void **q = (void **)p;
    struct umem_pool *mine = umem__pool(h);
    if (mine && atomic_load_explicit(&pg->owner, memory_order_relaxed) == mine) {
        umem__pool_free(h, pg, p);
        return;
    }
    size_t index = umem__slot_index(pg, p, "free");
    if (UMEM_UNLIKELY(umem__tagged(h, q)))
        umem__die("free of a block freed already (double free):", p);
    umem__tag_free(h, q);
    umem__remote_free(h, pg, q, index, mine);
}

/* An allocation of n bytes aligned to `align` (at most UMEM_PAGE_HEAD) from
 * the pools: the first class whose slots are all aligned (slots start on
 * a UMEM_PAGE_HEAD boundary).  NULL when the thread has no pool. */
static inline void *umem__pool_aligned(umem_t *h, size_t align, size_t n)
{
    struct umem_pool *pool = umem__pool(h);
    if (!pool)
        return NULL;
    unsigned cls = umem__class(n);
    while (cls < UMEM_CLASSES && umem__class_size(cls) % align != 0)
        cls++;
    if (cls == UMEM_CLASSES)
        return NULL;
    struct umem_page *pg = pool->avail[cls];
    if (pg && pg->free)
        return umem__page_pop(pool, pg);
    return umem__pool_alloc(h, pool, cls, 0);
}
