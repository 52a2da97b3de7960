/*
 * umem/check.h - umem_check and the statistics (a part of umem.h).
 *
 * umem_check walks every region, list, tree, span, unit map and the
 * calling thread's pool, and checks the invariants I1 to I10 stated in
 * umem.h; the first one broken is printed with its address.  The
 * statistics are read under the lock, the pools' counters without
 * stopping their threads (exact when those are quiet).
 */
#ifndef UMEM_H
#error "umem/check.h is a part of umem.h: include umem.h instead"
#endif

static inline int umem__fail(const char *what, const void *where)
{
    fprintf(stderr, "umem_check: %s (at %p)\n", what, where);
    return -1;
}

struct umem_tally {
    uint64_t nodes, bytes;
    const char *last; /* the previous node in address order */
    const char *broken;
    const void *at;
};

/* I5 (I6 for spans): checks the subtree under x, in address order. */
static inline size_t umem__check_tree(const umem_t *h, const struct umem_node *x,
                                      struct umem_tally *t, unsigned depth, int free_tree)
{
    if (!x || t->broken)
        return 0;
    if (depth >= UMEM_PATH || (uintptr_t)x % UMEM_ALIGN != 0 || !umem__header_ok(h, x)) {
        t->broken = "I5: a tree link points to a non-block (or a cycle)";
        t->at = x;
        return 0;
    }
    size_t hl = umem__check_tree(h, x->left, t, depth + 1, free_tree);
    if (t->broken)
        return 0;
    if ((const char *)x <= t->last) {
        t->broken = free_tree ? "I5: free tree out of address order" : "I6: span tree out of order";
        t->at = x;
        return 0;
    }
    t->last = (const char *)x;
    t->nodes++;
    t->bytes += umem__size(x);
    size_t hr = umem__check_tree(h, x->right, t, depth + 1, free_tree);
    if (t->broken)
        return 0;
    size_t m = umem__size(x), ml = umem__max_of(x->left), mr = umem__max_of(x->right);
    m = m > ml ? (m > mr ? m : mr) : (ml > mr ? ml : mr);
    size_t height = 1 + (hl > hr ? hl : hr);
    if (x->height != height || hl > hr + 1 || hr > hl + 1 || x->max != m) {
        t->broken = "I5: a tree node's height, balance or largest size is wrong";
        t->at = x;
        return 0;
    }
    size_t word = umem__word(x);
    if (free_tree ? (word & UMEM_USED) != 0 || umem__size(x) <= UMEM_SMALL_MAX
                  : !(word & UMEM_MAPPED)) {
        t->broken = free_tree ? "I4: a used or small block in the free tree" : "I6: a span without its mark";
        t->at = x;
    }
    return height;
}

struct umem_walk {
    uint64_t used_blocks, used_bytes;
    uint64_t small_blocks, small_bytes; /* free, on the lists */
    uint64_t large_blocks, large_bytes; /* free, in the tree */
};

/* I1, I2, I3 and the tree half of I4 for one region. */
static inline const char *umem__check_region(umem_t *h, char *first, char *end,
                                             struct umem_walk *w, const void **at)
{
    int prev_free = 0;
    char *b = first;
    while (b < end) {
        *at = b;
        if (!umem__header_ok(h, b))
            return "I1: header check does not match";
        size_t word = umem__word(b);
        size_t size = word & ~UMEM_FLAGS;
        if (size < UMEM_MIN_BLOCK || size % UMEM_ALIGN != 0 || size > (size_t)(end - b) ||
            word & UMEM_MAPPED)
            return "I1: block size out of range";
        if (!!(word & UMEM_PREV_FREE) != prev_free)
            return "I2: UMEM_PREV_FREE disagrees with the block before";
        if (word & UMEM_USED) {
            w->used_blocks++;
            w->used_bytes += size;
            prev_free = 0;
            b += size;
            continue;
        }
        if (umem__footer_before(b + size) != size)
            return "I2: free block footer differs from its size";
        if (prev_free)
            return "I3: two adjacent free blocks";
        if (size <= UMEM_SMALL_MAX) {
            w->small_blocks++;
            w->small_bytes += size;
        } else {
            struct umem_node **path[UMEM_PATH];
            if (umem__tree_path(&h->root, (struct umem_node *)b, path) == 0)
                return "I4: a large free block missing from the free tree";
            w->large_blocks++;
            w->large_bytes += size;
        }
        prev_free = 1;
        b += size;
    }
    *at = b;
    if (b != end || !umem__header_ok(h, end) || umem__size(end) != 0 ||
        !(umem__word(end) & UMEM_USED))
        return "I1: block sizes do not end at the end mark";
    if (!!(umem__word(end) & UMEM_PREV_FREE) != prev_free)
        return "I2: UMEM_PREV_FREE of the end mark is wrong";
    return NULL;
}

/* I4 for the lists: each holds free blocks of its size only, linked both
 * ways, its bit in binmap set when it is not empty. */
static inline const char *umem__check_bins(umem_t *h, struct umem_walk *w, const void **at)
{
    uint64_t blocks = 0, bytes = 0;
    for (unsigned i = 0; i < UMEM_BINS; i++) {
        size_t size = umem__bin_size(i);
        struct umem_free *prev = NULL;
        *at = &h->bin[i];
        if (!!h->bin[i] != !!(h->binmap & (uint64_t)1 << i))
            return "I4: binmap disagrees with a list";
        for (struct umem_free *f = h->bin[i]; f; prev = f, f = f->next) {
            *at = f;
            if ((uintptr_t)f % UMEM_ALIGN != 0 || !umem__header_ok(h, f) ||
                umem__word(f) != size)
                return "I4: a list holds something other than a free block of its size";
            if (prev && f->prev != prev)
                return "I4: a list's prev link is wrong";
            if (++blocks > w->small_blocks)
                return "I4: the lists hold more blocks than are free (a cycle?)";
            bytes += size;
        }
    }
    if (blocks != w->small_blocks || bytes != w->small_bytes)
        return "I4: the lists and the small free blocks differ";
    return NULL;
}

/* Every other mapping, in order: regions walked, large blocks checked. */
static inline const char *umem__check_spans(umem_t *h, struct umem_node *x, struct umem_walk *w,
                                            uint64_t *large, const void **at)
{
    for (; x; x = x->right) {
        const char *broken = umem__check_spans(h, x->left, w, large, at);
        if (broken)
            return broken;
        struct umem_span *s = (struct umem_span *)x;
        *at = s;
        if (s->is_region) {
            if (s->first != (char *)s + UMEM_SPAN_BYTES || s->end <= s->first ||
                s->end > (char *)s + umem__size(s))
                return "I6: a region's bounds are wrong";
            broken = umem__check_region(h, s->first, s->end, w, at);
            if (broken)
                return broken;
        } else {
            size_t bytes = umem__size(s);
            if (!umem__header_ok(h, s->first) ||
                (((struct umem_block *)s->first)->word & ~UMEM_REUSED) !=
                    ((size_t)(s->end - s->first) | UMEM_USED | UMEM_MAPPED) ||
                s->end != (char *)s + bytes)
                return "I6: a large block's header is wrong";
            (*large)++;
            w->used_bytes += bytes;
        }
    }
    return NULL;
}

/* I8: every page the unit map marks, through what was fixed when it was
 * carved (what its owner changes without the lock is I9's). */
static inline const char *umem__check_page(umem_t *h, const struct umem_page *pg)
{
    const char *b = umem__page_block(pg);
    size_t bytes = (size_t)pg->units << UMEM_UNIT_SHIFT;
    if (pg->magic != umem__page_magic(h, pg) || pg->cls >= UMEM_CLASSES ||
        pg->slot != umem__class_size(pg->cls) || pg->units != umem__page_units(pg->slot))
        return "I8: a unit the map marks is not a page's";
    if (!umem__header_ok(h, b) || !(umem__word(b) & UMEM_USED) ||
        umem__size(b) < bytes || umem__word(b) & UMEM_MAPPED)
        return "I8: a page's block is not a used block of its size";
    size_t head = UMEM_PAGE_HEAD;
    if (pg->start != (const char *)pg + head ||
        pg->capacity != umem__page_capacity(pg, pg->slot, pg->units, head) ||
        pg->span != (size_t)pg->capacity * pg->slot || pg->limit != pg->start + pg->span ||
        pg->recip != ((uint64_t)1 << 40) / pg->slot + 1u || pg->div != UINT64_MAX / pg->slot + 1u)
        return "I8: a page's slots are laid out wrong";
    return NULL;
}

static inline const char *umem__check_map(umem_t *h, const struct umem_units *m, uint64_t *pages,
                                          uint64_t *bytes, const void **at)
{
    size_t count = umem__units_used(h, m);
    for (size_t u = 0; u < count;) {
        const struct umem_page *k = atomic_load_explicit(&m->map[u], memory_order_relaxed);
        if (k == NULL) {
            u++;
            continue;
        }
        const struct umem_page *pg = umem__page_at(m->base + (u << UMEM_UNIT_SHIFT));
        *at = pg;
        if (k != pg)
            return "I8: the unit map marks a unit past a page's first without it";
        if ((uintptr_t)umem__page_block(pg) < m->lo)
            return "I8: a unit the map marks lies outside its region";
        const char *broken = umem__check_page(h, pg);
        if (broken)
            return broken;
        for (unsigned j = 1; j < pg->units; j++)
            if (u + j >= count ||
                atomic_load_explicit(&m->map[u + j], memory_order_relaxed) != pg)
                return "I8: the unit map does not mark all of a page's units";
        (*pages)++;
        *bytes += umem__size(umem__page_block(pg));
        u += pg->units;
    }
    return NULL;
}

/* I8 over every unit map, against the pages counted. */
static inline const char *umem__check_units(umem_t *h, const void **at)
{
    uint64_t pages = 0, bytes = 0;
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        const char *broken = umem__check_map(h, &h->umap[i], &pages, &bytes, at);
        if (broken)
            return broken;
    }
    *at = h;
    if (pages != h->pages || bytes != h->page_bytes)
        return "I8: the pages the unit map marks differ from the pages counted";
    return NULL;
}

/* I9 for one page its owner (the caller) or nobody may change: its free
 * and remote lists hold slots handed out before, tagged, and with the
 * slots never handed out and those in use they make up its capacity. */
static inline const char *umem__check_slots(umem_t *h, const struct umem_page *pg)
{
    const char *bump = pg->start + pg->handed;
    if (pg->handed > pg->span || pg->handed % pg->slot != 0 || umem__used(pg) > pg->capacity)
        return "I9: a page's bump pointer or count of blocks in use is wrong";
    /* Remote frees count as in use until their owner collects them. */
    uint64_t n[2] = {(uint64_t)(pg->limit - bump) / pg->slot + umem__used(pg), 0};
    uint64_t most[2] = {pg->capacity, umem__used(pg)};
    uintptr_t remote = atomic_load_explicit(&pg->remote, memory_order_acquire);
    void **lists[2] = {pg->free, umem__remote_first(pg, remote)};
    for (int i = 0; i < 2; i++)
        for (void **p = lists[i]; p; p = (void **)p[0]) {
            size_t rel = (size_t)((char *)p - pg->start);
            if ((char *)p < pg->start || (char *)p >= bump || rel % pg->slot != 0)
                return "I9: a page's free list holds something other than its slots";
            if (!umem__tagged(h, p))
                return "I9: a free slot is not tagged (written after its free?)";
            if (++n[i] > most[i])
                return "I9: a page's free lists run past its slots (a cycle?)";
        }
    if (n[0] != pg->capacity)
        return "I9: a page's free, untouched and used slots do not add up";
    if (n[1] != remote >> UMEM_REMOTE_COUNT)
        return "I9: a page's remote list is not as long as its count";
    return NULL;
}

/* I9 for one list of pages of class cls: its links, and each page's
 * owner, list and class, then its slots. */
static inline const char *umem__check_list(umem_t *h, struct umem_page *head,
                                           const struct umem_pool *owner, unsigned cls,
                                           unsigned list, const void **at)
{
    const struct umem_page *prev = NULL;
    uint64_t n = 0;
    for (struct umem_page *pg = head; pg; prev = pg, pg = pg->next) {
        *at = pg;
        if (umem__page_of(h, (char *)pg + UMEM_PAGE_HEAD) != pg || ++n > h->pages)
            return "I9: a page list holds something other than a page (or a cycle)";
        if (pg->prev != prev || pg->list != list || pg->cls != cls ||
            pg->full_bit != (list == UMEM_LIST_FULL ? (uint64_t)1 << cls : 0) ||
            !(umem__used_word(pg) & UMEM_SERVES) != !(list == UMEM_LIST_AVAIL && !prev) ||
            atomic_load_explicit(&pg->owner, memory_order_relaxed) != owner)
            return "I9: a page's links, list, class, marks or owner disagree with its list";
        const char *broken = umem__check_slots(h, pg);
        if (broken)
            return broken;
    }
    return NULL;
}

/* I10: the blocks the calling thread keeps. */
static inline const char *umem__check_kept(umem_t *h, struct umem_pool *own, const void **at)
{
    uint64_t bytes = 0;
    /* (no class at all when UMEM_MID_SHIFT is UMEM_POOL_SHIFT) */
    for (unsigned cls = 0; cls + 1 < UMEM_MID_CLASSES + 1u; cls++) {
        unsigned count = 0;
        void **q = (void **)own->mid[cls];
        for (; q && count < own->mid_count[cls]; q = (void **)q[0], count++) {
            char *b = (char *)q - UMEM_HEADER;
            const char *hi;
            *at = q;
            if (count >= UMEM_MID_DEPTH || !umem__mid_region(h, b, &hi) ||
                !umem__header_ok(h, b) ||
                (umem__word(b) & (UMEM_USED | UMEM_MAPPED)) != UMEM_USED ||
                umem__mid_kept_class(umem__size(b) - UMEM_HEADER) != (int)cls)
                return "I10: a kept block is not a used block of its class";
            if ((size_t)(uintptr_t)q[1] != umem__mid_tag(h, q))
                return "I10: a kept block is not tagged (written after its free?)";
            bytes += umem__size(b);
        }
        *at = own;
        if (q || count != own->mid_count[cls] || !(own->mid_map >> cls & 1) != !count)
            return "I10: the kept blocks of a class differ from those counted";
    }
    return bytes != umem__get(&own->mid_bytes)
               ? "I10: the kept blocks' bytes differ from those counted"
               : NULL;
}

/* I9, the calling thread's pool: each request size of up to
 * UMEM_SERVE_MAX reads, in serve[], its class's first page with room (or
 * umem__no_page, which has no slot, when there is none); 0 bytes read
 * umem__no_page. */
static inline const char *umem__check_serve(const struct umem_pool *own, const void **at)
{
    for (size_t k = 0; k < UMEM_SERVE; k++) {
        const struct umem_page *want = k ? own->avail[umem__class(16u * k)] : NULL;
        if (own->serve[k] != (want ? want : &umem__no_page)) {
            *at = own->serve[k];
            return "I9: a request size is served by another page than its class's first";
        }
    }
    return umem__no_page.free ? "I9: umem__no_page has a slot" : NULL;
}

/* I9: the pages of threads that ended, and the calling thread's own. */
static inline const char *umem__check_pools(umem_t *h, const void **at)
{
    if (!(h->flags & UMEM_CACHED))
        return NULL;
    const char *broken = umem__check_units(h, at);
    struct umem_pool *own = umem__tls.heap == h && umem__tls.secret == h->secret ? umem__tls.pool : NULL;
    uint64_t abandoned = 0;
    for (unsigned cls = 0; cls < UMEM_CLASSES && !broken; cls++) {
        broken = umem__check_list(h, h->abandoned[cls], UMEM_NO_OWNER, cls, UMEM_LIST_ABANDONED, at);
        for (struct umem_page *pg = h->abandoned[cls]; pg && !broken; pg = pg->next)
            abandoned++;
        if (own && !broken)
            broken = umem__check_list(h, own->avail[cls], own, cls, UMEM_LIST_AVAIL, at);
        if (own && !broken)
            broken = umem__check_list(h, own->full[cls], own, cls, UMEM_LIST_FULL, at);
    }
    if (!broken && abandoned != h->abandoned_pages) {
        *at = h;
        broken = "I9: the abandoned pages listed differ from those counted";
    }
    if (!broken && own)
        broken = umem__check_serve(own, at);
    if (!broken && own)
        broken = umem__check_kept(h, own, at);
    return broken;
}

static inline int umem__check_all(umem_t *h);

static inline int umem_check(umem_t *h)
{
    if (!h || h->magic != UMEM_MAGIC) {
        fprintf(stderr, "umem_check: not a heap (at %p)\n", (void *)h);
        return -1;
    }
    /* A heap whose lock a fork holds is still: it is checked as it is.
     * The lock's holder may settle blocks freed meanwhile: memcheck is
     * told nothing of umem's own reads from here. */
    UMEM__VG_QUIET(h);
    int r = umem__lock(h, UMEM_LEND);
    if (r < 0) {
        UMEM__VG_LOUD(h);
        fprintf(stderr, "umem_check: %s\n",
                errno == EOWNERDEAD ? "a process died holding the heap's lock"
                                    : strerror(errno));
        return -1;
    }
    int broken = umem__check_all(h);
    if (r == 0)
        umem__unlock(h);
    UMEM__VG_LOUD(h);
    return broken;
}

/* umem_check's walk (lock held, or lent to a fork): 0, or -1 after
 * printing the first broken invariant. */
static inline int umem__check_all(umem_t *h)
{
    struct umem_tally free_tree = {0}, span_tree = {0};
    umem__check_tree(h, h->root, &free_tree, 0, 1);
    if (free_tree.broken)
        return umem__fail(free_tree.broken, free_tree.at);
    umem__check_tree(h, h->spans, &span_tree, 0, 0);
    if (span_tree.broken)
        return umem__fail(span_tree.broken, span_tree.at);

    struct umem_walk w = {0};
    uint64_t large = 0;
    const void *at = h;
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed);
    const char *broken = umem__check_region(h, h->first, end, &w, &at);
    if (!broken)
        broken = umem__check_spans(h, h->spans, &w, &large, &at);
    if (!broken)
        broken = umem__check_bins(h, &w, &at);
    if (!broken)
        broken = umem__check_pools(h, &at);
    if (broken)
        return umem__fail(broken, at);
    if (w.large_blocks != free_tree.nodes || w.large_bytes != free_tree.bytes)
        return umem__fail("I4: the free tree and the large free blocks differ", h->root);
    if (large != h->large_blocks)
        return umem__fail("I6: large blocks counted and found differ", h);
    if (h->allocs + h->pages_made - h->frees - h->pages_freed != w.used_blocks + large)
        return umem__fail("I7: allocs - frees differs from the used blocks", h);
    if (h->bytes_in_use != w.used_bytes)
        return umem__fail("I7: bytes_in_use differs from the used blocks", h);
    if (h->peak_bytes_in_use < h->bytes_in_use)
        return umem__fail("I7: peak_bytes_in_use below bytes_in_use", h);
    if (h->flags & UMEM__KEEP && (broken = umem__keep_check(h, &at)) != NULL)
        return umem__fail(broken, at);
    return 0;
}

/* The slots the pages count in use and their bytes (lock held: no page
 * is carved or given back meanwhile), remote frees not collected included. */
static inline void umem__pages_used(umem_t *h, uint64_t *slots, uint64_t *bytes)
{
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        const struct umem_units *m = &h->umap[i];
        size_t count = umem__units_used(h, m);
        for (size_t u = 0; u < count; u++) {
            const struct umem_page *pg = umem__page_at(m->base + (u << UMEM_UNIT_SHIFT));
            if (atomic_load_explicit(&m->map[u], memory_order_relaxed) != pg)
                continue; /* no page, or not its first unit */
            *slots += umem__used(pg);
            *bytes += (uint64_t)umem__used(pg) * pg->slot;
        }
    }
}

/* The bytes of the large blocks' own mappings under x in the span tree. */
static inline uint64_t umem__large_bytes_under(const struct umem_node *x, unsigned depth)
{
    uint64_t bytes = 0;
    for (; x && depth < UMEM_PATH; x = x->right, depth++) {
        bytes += umem__large_bytes_under(x->left, depth + 1);
        if (!((const struct umem_span *)x)->is_region)
            bytes += umem__size(x);
    }
    return bytes;
}

/* The pools' counters, of running threads (lock held: `locked`) and of
 * ended ones, summed. */
struct umem_pool_sums {
    uint64_t allocs, moves, remote, remote_bytes, collected, collected_bytes;
    uint64_t mid_allocs, mid_frees, mid_bytes;
};

static inline void umem__pool_sums(umem_t *h, int locked, struct umem_pool_sums *t)
{
    *t = (struct umem_pool_sums){h->gone_allocs,          h->gone_moves,     h->gone_remote,
                                 h->gone_remote_bytes,    h->gone_collected, h->gone_collected_bytes,
                                 h->gone_mid_allocs,      h->gone_mid_frees, 0};
    for (struct umem_pool *pool = locked ? h->pools : NULL; pool; pool = pool->next) {
        t->allocs += umem__get(&pool->allocs);
        t->moves += umem__get(&pool->moves);
        t->remote += umem__get(&pool->remote_frees);
        t->remote_bytes += umem__get(&pool->remote_bytes);
        t->collected += umem__get(&pool->collected);
        t->collected_bytes += umem__get(&pool->collected_bytes);
        t->mid_allocs += umem__get(&pool->mid_allocs);
        t->mid_frees += umem__get(&pool->mid_frees);
        t->mid_bytes += umem__get(&pool->mid_bytes);
    }
    t->remote += umem__get(&h->orphan_frees);
    t->remote_bytes += umem__get(&h->orphan_bytes);
    t->moves += umem__get(&h->orphan_moves);
}

static inline void umem_get_stats(umem_t *h, umem_stats_t *out)
{
    memset(out, 0, sizeof *out);
    UMEM__VG_QUIET(h);
    int locked = umem__lock(h, UMEM_LEND) == 0; /* lent to a fork: read as it is */
    struct umem_pool_sums t;
    umem__pool_sums(h, locked, &t);
    uint64_t allocs = t.allocs, moves = t.moves, slots = 0, slot_bytes = 0;
    if (locked)
        umem__pages_used(h, &slots, &slot_bytes);
    /* Remote frees not collected yet are free, though their pages still
     * count them. */
    uint64_t pending = t.remote - t.collected, pending_bytes = t.remote_bytes - t.collected_bytes;
    slots = slots > pending ? slots - pending : 0; /* counters read a moment apart */
    slot_bytes = slot_bytes > pending_bytes ? slot_bytes - pending_bytes : 0;
    /* Blocks a thread keeps (umem/pools.h, MID BLOCKS) are used blocks to
     * the heap, freed to the program; those that went back to the heap
     * were counted freed twice. */
    uint64_t pool_frees = allocs > slots ? allocs - slots : 0;
    out->allocs = h->allocs + allocs - moves + t.mid_allocs;
    out->frees = h->frees + pool_frees - moves + t.mid_frees - h->mid_flushed;
    out->bytes_in_use = h->bytes_in_use - h->page_bytes + slot_bytes - t.mid_bytes;
    out->cache_hits = allocs + t.mid_allocs;
    out->cache_frees = pool_frees + t.mid_frees;
    out->cached_bytes = h->page_bytes - slot_bytes + t.mid_bytes;
    out->remote_frees = t.remote;
    out->lock_count = h->lock_count;
    out->lock_contended = h->lock_contended;
    out->failed_allocs = h->failed_allocs + atomic_load_explicit(&h->lent_failed, memory_order_relaxed);
    out->peak_bytes_in_use = h->peak_bytes_in_use;
    out->heap_bytes = h->heap_bytes;
    out->owner_died = h->owner_died;
    out->cache_refills = h->pages_made;
    out->cache_flushes = h->pages_freed;
    out->mapped_bytes = h->mapped_bytes;
    out->large_blocks = h->large_blocks;
    out->released_bytes = h->released_bytes;
    out->pool_pages = h->pages;
    out->abandoned_pages = h->abandoned_pages;
    out->purges = h->purges;
    out->map_reuses = h->map_reuses;
    out->lent_calls = h->lent_calls;
    out->held_blocks = h->held_blocks;
    out->large_bytes = locked ? umem__large_bytes_under(h->spans, 0) : 0;
    out->map_cache_bytes = h->map_cache_bytes;
    out->unpurged_bytes = h->unpurged;
    if (locked)
        umem__unlock(h);
    UMEM__VG_LOUD(h);
}
