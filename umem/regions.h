/*
 * umem/regions.h - mappings: regions, growth, and free pages given back
 * on a delay (a part of umem.h).
 *
 * GROWTH (UMEM_GROW)
 *   The heap sets aside UMEM_RESERVE (64 GiB) of address space, or as much
 *   as the system allows, and commits it with mprotect as it grows (at
 *   least 1 MiB or half the heap at a time).  When that is used up, it
 *   maps further regions.  A block that umem_realloc grows in place stays
 *   where it is, whatever its size.  Nothing is ever unmapped but large
 *   blocks' mappings: the address space of a grown heap stays until
 *   umem_destroy.
 *
 * GIVING MEMORY BACK, ON A DELAY (UMEM_GROW)
 *   Each large free block records the range of its bytes that may be
 *   resident and the purge epoch in which that range last grew (a block
 *   freed next to an older range takes its age).  An epoch is half of
 *   UMEM_PURGE_DELAY_MS (1 s) long and advances only on a call that finds
 *   it due: one that takes the lock to allocate, free or move a block with
 *   a header, carves or gives back a page, or ends a thread (the clock is
 *   read on one in 16).  When it advances, the whole pages of ranges older
 *   than the delay go back with madvise(MADV_DONTNEED), and cached large
 *   mappings are unmapped: a program that frees and allocates again at
 *   once keeps its pages.  A heap that has emptied (an eighth of it in
 *   use, and UMEM_PURGE_MIN, 4 MiB, or more freed since the last purge)
 *   gives every free page and cached mapping back on the call that sees
 *   it, so that a program that frees its memory and goes idle shrinks
 *   with no call after, but for the first UMEM_PURGE_KEEP (32 MiB) of its
 *   free pages in address order: a program that frees everything and
 *   allocates again at once, round after round, does not fault those
 *   pages in again each round (mstress with one thread: 0.17 to 0.12 s).
 *   They go back with a later purge by age, or at umem_trim; none are
 *   kept when umem_set_purge_min set 0.  Otherwise, a heap no call
 *   reaches keeps its pages, until umem_trim gives back every whole page
 *   of its free blocks at once, whatever their age (umem__purge_keep).
 */
#ifndef UMEM_H
#error "umem/regions.h is a part of umem.h: include umem.h instead"
#endif

static inline size_t umem__round_page(const umem_t *h, size_t n)
{
    return (n + h->page - 1) & ~(h->page - 1);
}

/* The bytes of m's map. */
static inline size_t umem__units_bytes(const struct umem_units *m)
{
    return m->count * sizeof *m->map;
}

/* A unit map for the mapping [lo, hi), reserved, not committed: only the
 * entries of units pages cover are ever written.  It lies between two
 * no-access gaps of UMEM_MAP_GUARD: the system tends to place it right
 * below its region, and a write that runs below the heap (or above
 * whatever lies under the map) faults there instead of changing which
 * page a free finds.  0, or ENOMEM. */
static inline int umem__units_init(struct umem_units *m, uintptr_t lo, uintptr_t hi)
{
    m->lo = lo;
    m->hi = hi;
    m->base = lo & ~(uintptr_t)(UMEM_UNIT - 1);
    m->span = hi - m->base;
    m->count = (hi - m->base + UMEM_UNIT - 1) >> UMEM_UNIT_SHIFT;
    size_t bytes = umem__units_bytes(m), all = bytes + 2 * UMEM_MAP_GUARD;
    char *at = (char *)umem__map(all, PROT_NONE, MAP_PRIVATE | MAP_NORESERVE);
    if (at && mprotect(at + UMEM_MAP_GUARD, bytes, PROT_READ | PROT_WRITE) != 0) {
        munmap(at, all);
        at = NULL;
    }
    m->map = at ? (struct umem_page *_Atomic *)(at + UMEM_MAP_GUARD) : NULL;
    return m->map ? 0 : ENOMEM;
}

static inline void umem__units_unmap(struct umem_units *m)
{
    munmap((char *)m->map - UMEM_MAP_GUARD, umem__units_bytes(m) + 2 * UMEM_MAP_GUARD);
}

/* The span whose mapping holds address c, or NULL. */
static inline struct umem_span *umem__span_find(umem_t *h, const char *c)
{
    struct umem_node *x = h->spans, *best = NULL;
    for (unsigned depth = 0; x && depth < UMEM_PATH; depth++) {
        if ((const char *)x <= c) {
            best = x;
            x = x->right;
        } else {
            x = x->left;
        }
    }
    if (best && c < (const char *)best + umem__size(best))
        return (struct umem_span *)best;
    return NULL;
}

static inline void umem__span_add(umem_t *h, struct umem_span *s, size_t map_bytes)
{
    umem__set_header(h, s, map_bytes | UMEM_MAPPED);
    struct umem_node **path[UMEM_PATH], **link = &h->spans;
    unsigned depth = 0;
    while (*link && depth < UMEM_PATH) {
        path[depth++] = link;
        link = (char *)s < (char *)*link ? &(*link)->left : &(*link)->right;
    }
    umem__tree_insert(path, depth, link, &s->node);
    h->mapped_bytes += map_bytes;
}

static inline void umem__span_remove(umem_t *h, struct umem_span *s)
{
    struct umem_node **path[UMEM_PATH];
    unsigned depth = umem__tree_path(&h->spans, &s->node, path);
    if (depth == 0)
        umem__die("heap corruption: a mapping missing from the span tree at", s);
    umem__tree_delete(path, depth);
    h->mapped_bytes -= umem__size(s);
}

/* The purge epoch a free block must predate to be purged: an epoch is
 * half a delay long and advances only on calls, so a block stamped in
 * epoch e has been free a whole delay when epoch e + 3 begins. */
#define UMEM_PURGE_AGE 3u

/* Gives the whole pages of free blocks' dirty ranges back to the system,
 * for blocks of two pages or more whose range stayed unused for the delay
 * (the tree's largest sizes skip the rest).  Returns the bytes of ranges
 * too young. */
static inline uint64_t umem__purge(umem_t *h, struct umem_node *x, int all)
{
    uint64_t young = 0;
    uintptr_t pg = h->page - 1;
    while (x && x->max >= 2 * h->page) {
        young += umem__purge(h, x->left, all);
        size_t size = umem__size(x);
        char *lo = x->dirty_lo > (char *)(x + 1) ? x->dirty_lo : (char *)(x + 1);
        char *hi = x->dirty_hi < (char *)x + size - sizeof(size_t) ? x->dirty_hi
                                                                   : (char *)x + size - sizeof(size_t);
        uintptr_t from = ((uintptr_t)lo + pg) & ~pg, to = (uintptr_t)hi & ~pg;
        if (size >= 2 * h->page && x->dirty_lo != x->dirty_hi) {
            if (!all && x->stamp + UMEM_PURGE_AGE > h->epoch) {
                young += (uint64_t)(x->dirty_hi - x->dirty_lo);
            } else {
                if (to > from && madvise((void *)from, to - from, MADV_DONTNEED) == 0)
                    h->released_bytes += to - from;
                x->dirty_lo = x->dirty_hi = NULL;
            }
        }
        x = x->right;
    }
    return young;
}

/* The resident bytes of the whole pages [from, to), by mincore(2); all of
 * them where it cannot tell. */
static inline size_t umem__resident(const umem_t *h, uintptr_t from, uintptr_t to)
{
    unsigned char vec[512];
    size_t resident = 0;
    while (from < to) {
        size_t pages = (size_t)(to - from) / h->page;
        pages = pages < sizeof vec ? pages : sizeof vec;
        if (mincore((void *)from, pages * h->page, vec) != 0)
            return resident + (size_t)(to - from);
        for (size_t i = 0; i < pages; i++)
            resident += (vec[i] & 1) * h->page;
        from += pages * h->page;
    }
    return resident;
}

/* umem_trim: gives back at once every whole page inside each free block
 * of two pages or more, whatever its dirty range and its age (pages left
 * resident at the edges of blocks purged one by one included), but the
 * first *keep bytes of them in address order.  The resident bytes among
 * them count as released.  Returns the bytes of dirty ranges that stay. */
static inline uint64_t umem__purge_keep(umem_t *h, struct umem_node *x, size_t *keep)
{
    uint64_t kept = 0;
    uintptr_t pg = h->page - 1;
    while (x && x->max >= 2 * h->page) {
        kept += umem__purge_keep(h, x->left, keep);
        size_t size = umem__size(x);
        uintptr_t from = ((uintptr_t)(x + 1) + pg) & ~pg;
        uintptr_t to = ((uintptr_t)x + size - sizeof(size_t)) & ~pg;
        if (size >= 2 * h->page && to > from) {
            size_t whole = (size_t)(to - from);
            size_t skip = *keep >= whole ? whole : (*keep + pg) & ~pg; /* whole pages */
            *keep = *keep >= whole ? *keep - whole : 0;
            uintptr_t cut = from + skip;
            size_t resident = cut < to ? umem__resident(h, cut, to) : 0;
            if (cut < to && madvise((void *)cut, to - cut, MADV_DONTNEED) == 0) {
                h->released_bytes += resident;
                if (skip == 0 || (uintptr_t)x->dirty_lo >= cut)
                    x->dirty_lo = x->dirty_hi = NULL;
                else if ((uintptr_t)x->dirty_hi > cut)
                    x->dirty_hi = (char *)cut;
            }
            kept += (uint64_t)(x->dirty_hi - x->dirty_lo);
        }
        x = x->right;
    }
    return kept;
}

static inline uint64_t umem__now_ns(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A private growable heap gives back, with the lock held, the free pages
 * and cached large mappings that stayed unused for UMEM_PURGE_DELAY_MS,
 * at most once per half delay (the clock is read on one call in 16 while
 * something waits to go back); and every free page at once when the heap
 * has emptied (an eighth of it in use) and UMEM_PURGE_MIN or more was
 * freed since the last purge (h->purge_min, UMEM_PURGE_MIN unless
 * umem_set_purge_min changed it), so that a program that frees its memory
 * and goes idle shrinks with no call after.  errno is left as it was. */
static UMEM_NOINLINE void umem__purge_due(umem_t *h, int emptied);

/* ... on one call in 16, or where the heap may have emptied: */
static UMEM_NOINLINE void umem__purge_check(umem_t *h)
{
    if (!(h->flags & UMEM_GROW) || (h->unpurged == 0 && h->map_cached == 0))
        return;
    int emptied = h->bytes_in_use < h->heap_bytes / 8 && h->unpurged >= h->purge_min;
    if (!emptied && (h->purge_calls & 15u) != 0)
        return;
    umem__purge_due(h, emptied);
}

static UMEM_HOT_INLINE void umem__maybe_purge(umem_t *h)
{
    if (UMEM_LIKELY((++h->purge_calls & 15u) != 0) &&
        (h->bytes_in_use >= h->heap_bytes / 8 || h->unpurged < h->purge_min ||
         !(h->flags & UMEM_GROW)))
        return;
    umem__purge_check(h);
}

/* ... one call in 16, or at once when the heap has emptied: the clock
 * read, and the purge done when its epoch has come. */
static UMEM_NOINLINE void umem__purge_due(umem_t *h, int emptied)
{
    uint64_t now = umem__now_ns();
    if (now >= h->tick_at) {
        h->tick_at = now + (uint64_t)UMEM_PURGE_DELAY_MS * 500000u;
        h->epoch++;
    } else if (!emptied) {
        return;
    }
    int saved = errno;
    if (h->abandoned_pages > 0)
        umem__reclaim_abandoned(h);
    while (h->map_cached > 0 &&
           (emptied || h->map_cache[0]->node.stamp + UMEM_PURGE_AGE <= h->epoch))
        umem__unmap_cached(h, 0);
    if (h->unpurged > 0) {
        uint64_t released = h->released_bytes;
        /* An emptied heap keeps its first UMEM_PURGE_KEEP free bytes for
         * the allocations that may come back at once (none when
         * umem_set_purge_min asked for 0), and gives back every other
         * whole page, counted by what was resident (a kept range that
         * later frees widen may hold pages given back before).  What it
         * keeps is not counted as unpurged: it goes back with a later
         * purge by age, or at umem_trim. */
        size_t keep = UMEM_PURGE_KEEP;
        if (emptied && h->purge_min > 0 && keep > 0) {
            (void)umem__purge_keep(h, h->root, &keep);
            h->unpurged = 0;
        } else {
            h->unpurged = umem__purge(h, h->root, emptied);
        }
        h->purges += h->released_bytes != released;
    }
    errno = saved;
}

/* Whether committing `add` bytes more of the reservation keeps the heap
 * within RLIMIT_AS: the system counted the whole reservation when it was
 * made, so a limit set later would not stop growth inside it.  The heap's
 * own mappings are held to the limit; the rest of the process is not
 * counted. */
static inline int umem__within_limit(const umem_t *h, size_t add)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 1;
    return h->mapped_bytes + add <= (uint64_t)rl.rlim_cur;
}

/* UMEM_GROW: more room for at least `need` bytes, at the end of the first
 * region while its reservation lasts, then as a region of its own. */
static inline int umem__grow(umem_t *h, size_t need)
{
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed);
    size_t have = (size_t)(end - h->first);
    size_t want = need > have / 2 ? need : have / 2;
    if (want < ((size_t)1 << 20))
        want = (size_t)1 << 20;
    want &= ~(size_t)(UMEM_ALIGN - 1);
    size_t room = (size_t)(h->reserve_end - UMEM_HEADER - end) & ~(size_t)(UMEM_ALIGN - 1);
    if (h->reserve_end > end + UMEM_HEADER && room >= need) {
        size_t add = want < room ? want : room;
        char *new_end = end + add;
        /* The pages up to the old end mark's are committed already. */
        uintptr_t pg = h->page - 1;
        char *from = (char *)(((uintptr_t)end + UMEM_HEADER + pg) & ~pg);
        char *to = (char *)(((uintptr_t)new_end + UMEM_HEADER + pg) & ~pg);
        if (to > from) {
            if (!umem__within_limit(h, (size_t)(to - from)) ||
                mprotect(from, (size_t)(to - from), PROT_READ | PROT_WRITE) != 0)
                return -1;
            h->mapped_bytes += (uint64_t)(to - from);
            UMEM__VG_HIDE(h, from, (size_t)(to - from));
        }
        /* The old end mark becomes a used block of the new room, freed. */
        umem__set_header(h, new_end, 0 | UMEM_USED);
        umem__set_header(h, end, add | UMEM_USED | (umem__word(end) & UMEM_PREV_FREE));
        atomic_store_explicit(&h->end, new_end, memory_order_relaxed);
        h->heap_bytes += add;
        umem__merge_free(h, end, h->first);
        return 0;
    }
    size_t bytes = umem__round_page(h, UMEM_SPAN_BYTES + want + UMEM_HEADER);
    struct umem_span *s = (struct umem_span *)umem__map(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    if (!s)
        return -1;
    UMEM__VG_HIDE(h, s, bytes);
    s->is_region = 1;
    s->first = (char *)s + UMEM_SPAN_BYTES;
    s->end = s->first + ((bytes - UMEM_SPAN_BYTES - UMEM_HEADER) & ~(size_t)(UMEM_ALIGN - 1));
    umem__set_header(h, s->end, 0 | UMEM_USED);
    umem__set_header(h, s->first, (size_t)(s->end - s->first) | UMEM_USED);
    umem__span_add(h, s, bytes);
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_relaxed);
    if (h->flags & UMEM_CACHED && n < UMEM_UNIT_MAPS &&
        umem__units_init(&h->umap[n], (uintptr_t)s, (uintptr_t)s + bytes) == 0)
        atomic_store_explicit(&h->umaps, n + 1, memory_order_release);
    h->heap_bytes += (uint64_t)(s->end - s->first);
    umem__merge_free(h, s->first, s->first);
    return 0;
}
