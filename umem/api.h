/*
 * umem/api.h - the public calls: umem_create, umem_destroy, the
 * wrappers that take the plain path or the watched one, and umem_trim
 * and umem_set_purge_min, which give memory back now (a part of umem.h).
 *
 * Their contracts are with their prototypes in umem.h, in full in
 * umem(3).  umem_create and umem_destroy are written as their steps:
 * the first mapping, the secret, the lock and the pools' key, the first
 * region, the list of heaps fork() holds.
 */
#ifndef UMEM_H
#error "umem/api.h is a part of umem.h: include umem.h instead"
#endif

/* The tools that watch a new heap (umem/debug.h): UMEM_DEBUG's records,
 * AddressSanitizer's in a build with it, memcheck when the program runs
 * under it (unless UMEM_VALGRIND=0 is in the environment).  A UMEM_SHARED
 * heap gets UMEM_DEBUG's alone: a tool sees one process's memory, and
 * that heap's blocks pass between processes. */
static inline unsigned umem__tools(unsigned flags)
{
    unsigned tools = flags & UMEM_DEBUG ? UMEM__KEEP : 0;
    if (flags & UMEM_GUARD)
        tools |= UMEM__GUARDS;
#ifdef UMEM__ASAN
    if (!(flags & UMEM_SHARED))
        tools |= UMEM__KEEP | UMEM__POISONS;
#endif
#ifdef UMEM__BACKTRACE
    /* backtrace() loads its unwinder, which allocates, on its first use:
     * here, rather than inside the heap's first allocation. */
    if (tools & (UMEM__KEEP | UMEM__GUARDS) && !umem__tls.tracing) {
        void *frame[1];
        umem__tls.tracing = 1;
        (void)backtrace(frame, 1);
        umem__tls.tracing = 0;
    }
#endif
#ifdef UMEM__VALGRIND
    if (!(flags & UMEM_SHARED) && RUNNING_ON_VALGRIND) {
        const char *off = getenv("UMEM_VALGRIND");
        unsigned char probe = 0, vbits = 0;
        /* Only memcheck answers this request (helgrind and DRD do not). */
        if (!(off && strcmp(off, "0") == 0) && VALGRIND_GET_VBITS(&probe, &vbits, 1) == 1)
            tools |= UMEM__VG;
    }
#endif
    return tools;
}

/* Whether `flags` name known flags in a combination umem_create takes. */
static inline int umem__flags_ok(unsigned flags)
{
    unsigned known = UMEM_SHARED | UMEM_NOLOCK | UMEM_GROW | UMEM_CACHED | UMEM_DEBUG | UMEM_GUARD;
    return !(flags & ~known) &&
           !(flags & UMEM_SHARED &&
             flags & (UMEM_NOLOCK | UMEM_GROW | UMEM_CACHED | UMEM_GUARD)) &&
           !(flags & UMEM_NOLOCK && flags & UMEM_CACHED);
}

/* A new heap's first mapping, `commit` bytes read-write: for UMEM_GROW at
 * the start of UMEM_RESERVE of address space set aside (or as much as the
 * system allows), whose size goes to *map_bytes.  NULL when it fails. */
static inline void *umem__map_first(size_t commit, unsigned flags, size_t *map_bytes)
{
    *map_bytes = commit;
    if (!(flags & UMEM_GROW))
        return umem__map(commit, PROT_READ | PROT_WRITE,
                         flags & UMEM_SHARED ? MAP_SHARED : MAP_PRIVATE);
    void *base = NULL;
    size_t reserve = UMEM_RESERVE > commit ? UMEM_RESERVE : commit;
    for (; !base && reserve >= commit; reserve /= 2) {
        base = umem__map(reserve, PROT_NONE, MAP_PRIVATE | MAP_NORESERVE);
        *map_bytes = reserve;
    }
    if (!base)
        base = umem__map(*map_bytes = commit, PROT_NONE, MAP_PRIVATE | MAP_NORESERVE);
    if (base && mprotect(base, commit, PROT_READ | PROT_WRITE) != 0) {
        munmap(base, *map_bytes);
        base = NULL;
    }
    return base;
}

/* A secret no two heaps share: the key of every header's check. */
static inline size_t umem__new_secret(const umem_t *h)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    static _Atomic size_t heaps_made;
    size_t seed = (size_t)(uintptr_t)h ^ (size_t)ts.tv_nsec ^ ((size_t)ts.tv_sec << 20) ^
                  (size_t)h->creator ^ (size_t)((uint64_t)atomic_fetch_add(&heaps_made, 1) << 40);
    return (size_t)(seed * 0x9E3779B97F4A7C15ull) | 1u;
}

/* The lock, and for UMEM_CACHED the first unit map and the pthread key of
 * the pools.  0, or an error number with nothing left made. */
static inline int umem__sync_init(umem_t *h)
{
    if (h->flags & UMEM_NOLOCK)
        return 0;
    int r = umem__lock_init(h);
    if (r == 0 && h->flags & UMEM_CACHED) {
        uintptr_t base = (uintptr_t)h;
        r = umem__units_init(&h->umap[0], base, base + h->map_bytes);
        if (r == 0 && (r = pthread_key_create(&h->key, umem__pool_exit)) != 0)
            umem__units_unmap(&h->umap[0]);
        if (r == 0)
            atomic_store_explicit(&h->umaps, 1, memory_order_release);
        if (r != 0)
            pthread_mutex_destroy(&h->lock);
    }
    return r;
}

/* The first region's blocks: [first, end), a multiple of 16, one free
 * block before the end mark. */
static inline void umem__first_region(umem_t *h, size_t commit)
{
    h->first = (char *)h + UMEM_CONTROL_BYTES;
    size_t span = (commit - UMEM_CONTROL_BYTES - UMEM_HEADER) & ~(size_t)(UMEM_ALIGN - 1);
    char *end = h->first + span;
    atomic_init(&h->end, end);
    h->reserve_end = (char *)h + h->map_bytes;
    h->heap_bytes = span;
    h->mapped_bytes = commit;
    umem__set_header(h, end, 0 | UMEM_USED);
    umem__set_header(h, h->first, span | UMEM_USED);
    umem__merge_free(h, h->first, h->first);
    UMEM__VG_HIDE(h, h->first, commit - UMEM_CONTROL_BYTES);
}

/* A private locked heap joins the list whose locks fork() holds. */
static inline void umem__forks_join(umem_t *h)
{
    if (!umem__forked_heap(h))
        return;
    umem__forks_register();
    sigset_t old;
    umem__forks_take(&old);
    h->fork_next = umem__forks;
    umem__forks = h;
    umem__forks_drop(&old);
}

static inline umem_t *umem_create(size_t bytes, unsigned flags)
{
    long page_size = sysconf(_SC_PAGESIZE);
    size_t page = page_size > 0 ? (size_t)page_size : 4096;
    if (!umem__flags_ok(flags) || bytes < UMEM_CONTROL_BYTES + UMEM_MIN_BLOCK + UMEM_HEADER) {
        errno = EINVAL;
        return NULL;
    }
    size_t commit = 0, map_bytes = 0;
    umem_t *h = NULL;
    if (bytes <= PTRDIFF_MAX - page) { /* else more than any address space */
        commit = (bytes + page - 1) / page * page;
        h = (umem_t *)umem__map_first(commit, flags, &map_bytes);
    }
    if (!h) {
        errno = ENOMEM;
        return NULL;
    }
    h->magic = UMEM_MAGIC;
    h->map_bytes = map_bytes;
    h->flags = flags | umem__tools(flags);
    h->live.next = h->live.prev = &h->live;
    h->held.next = h->held.prev = &h->held;
    h->creator = getpid();
    h->page = page;
    h->purge_min = UMEM_PURGE_MIN;
    h->secret = umem__new_secret(h);
    h->tag_key = h->secret ^ 0xCAC4Eu;
    int r = h->flags & UMEM__GUARDS ? umem__guard_init(h) : 0;
    if (r == 0 && (r = umem__sync_init(h)) != 0 && h->guard)
        umem__guard_unmap(h->guard);
    if (r != 0) {
        munmap(h, map_bytes);
        errno = r;
        return NULL;
    }
    umem__first_region(h, commit);
    umem__forks_join(h);
    umem__exit_join(h);
    return h;
}

/* A mapping of a heap being destroyed, unmapped; or, for `keep`, left as
 * address space with no memory: memcheck still counts the blocks the
 * program left there, to report them as leaked at exit, and a mapping
 * made later at that address would overlap them. */
static inline void umem__drop(void *p, size_t bytes, int keep)
{
    if (!keep || mmap(p, bytes, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0) == MAP_FAILED)
        munmap(p, bytes);
}

/* A heap being destroyed leaves the list whose locks fork() holds. */
static inline void umem__forks_leave(umem_t *h)
{
    if (!umem__forked_heap(h))
        return;
    sigset_t old;
    umem__forks_take(&old);
    for (umem_t **link = &umem__forks; *link; link = &(*link)->fork_next)
        if (*link == h) {
            *link = h->fork_next;
            break;
        }
    umem__forks_drop(&old);
}

/* UMEM_CACHED: the pools, of running threads and of ended ones, the
 * pthread key and the unit maps go. */
static inline void umem__pools_unmap(umem_t *h)
{
    pthread_key_delete(h->key);
    struct umem_pool *lists[2] = {h->pools, h->spare_pools};
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            struct umem_pool *pool = lists[i];
            lists[i] = pool->next;
            munmap(pool, umem__pool_bytes(h));
        }
    for (unsigned i = 0; i < atomic_load_explicit(&h->umaps, memory_order_relaxed); i++)
        umem__units_unmap(&h->umap[i]);
    if (umem__tls.heap == h) {
        umem__tls.heap = NULL;
        umem__tls.serving = &umem__no_pool;
    }
}

/* Every mapping but the first: cached ones, those of blocks mapped while
 * a fork held the lock and never settled, regions and large blocks. */
static inline void umem__spans_unmap(umem_t *h, int keep_space)
{
    while (h->map_cached > 0)
        umem__unmap_cached(h, 0);
    struct umem_span *lent = atomic_load_explicit(&h->lent_maps, memory_order_acquire);
    while (lent) {
        struct umem_span *next = (struct umem_span *)lent->node.left;
        munmap(lent, (size_t)(lent->end - (char *)lent));
        lent = next;
    }
    while (h->spans) {
        struct umem_span *s = (struct umem_span *)h->spans;
        size_t bytes = umem__size(s);
        struct umem_node **path[UMEM_PATH] = {&h->spans};
        umem__tree_delete(path, 1);
        umem__drop(s, bytes, keep_space);
    }
}

static inline void umem_destroy(umem_t *h)
{
    if (!h)
        return;
    UMEM__VG_QUIET(h);
    int keep_space = 0;
    if (h->flags & UMEM__VG) {
        umem_stats_t st;
        umem_get_stats(h, &st);
        keep_space = st.allocs - st.frees > st.held_blocks; /* memcheck holds blocks here */
    }
    int owner = !(h->flags & UMEM_SHARED) || h->creator == getpid();
    /* A shared heap's blocks are listed by its creator alone. */
    umem__exit_leave(h);
    if (h->flags & UMEM__KEEP && owner) {
        umem__keep_final(h);
        if (h->guard)
            umem__guard_leaks(h, "leak");
    }
    if (h->flags & UMEM__POISONS)
        umem__unpoison_all(h);
    umem__forks_leave(h);
    if (h->flags & UMEM_CACHED)
        umem__pools_unmap(h);
    umem__spans_unmap(h, keep_space);
    if (h->guard)
        umem__guard_unmap(h->guard);
    if (owner && !(h->flags & UMEM_NOLOCK))
        pthread_mutex_destroy(&h->lock);
    UMEM__VG_LOUD(h);
    umem__drop(h, h->map_bytes, keep_space);
}

/* ---- the interface ---- */

/* A heap UMEM_GUARD alone watches takes a shorter way than the others
 * (UMEM__SAMPLED, umem/guard.h): the plain path, but for the blocks drawn. */
static inline void *umem_alloc(umem_t *h, size_t n)
{
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        return UMEM__SAMPLED(h) ? umem__sampled_alloc(h, n) : umem__debug_alloc(h, 0, n);
    return umem__alloc(h, n);
}

static inline void umem_free(umem_t *h, void *p)
{
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        UMEM__SAMPLED(h) ? umem__sampled_free(h, p) : umem__debug_free(h, p);
    else
        umem__free(h, p);
}

static inline void *umem_realloc(umem_t *h, void *p, size_t n)
{
    /* A block UMEM_GUARD alone watches but did not draw: as on a plain heap. */
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED) &&
        !(UMEM__SAMPLED(h) && p && n && !umem__guard_has(h, p)))
        return umem__debug_realloc(h, p, n);
    return umem__realloc(h, p, n);
}

static inline void *umem_memalign(umem_t *h, size_t align, size_t n)
{
    if (align == 0 || (align & (align - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        return umem__debug_alloc(h, align, n);
    return umem__memalign(h, align, n);
}

static inline size_t umem_usable_size(umem_t *h, const void *p)
{
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        return umem__debug_usable(h, p, "usable size");
    return umem__usable_size(h, p);
}

/* ---- giving memory back now ---- */

static inline size_t umem_trim(umem_t *h, size_t keep)
{
    if (!(h->flags & UMEM_GROW))
        return 0;
    int saved = errno;
    UMEM__VG_QUIET(h);
    if (umem__lock(h, UMEM_LEND | UMEM_QUIET) != 0) {
        UMEM__VG_LOUD(h);
        errno = saved;
        return 0; /* lent to a fork, or a dead owner: nothing given back */
    }
    uint64_t before = h->released_bytes;
    size_t unmapped = 0;
    struct umem_pool *pool = umem__pool_known(h); /* none made for this */
    if (h->flags & UMEM_CACHED && pool) {
        umem__mid_flush(h, pool);
        umem__pool_drop_empty(h, pool);
    }
    if (h->abandoned_pages > 0)
        umem__reclaim_abandoned(h);
    while (h->map_cached > 0) {
        unmapped += umem__size(h->map_cache[0]);
        umem__unmap_cached(h, 0);
    }
    h->unpurged = umem__purge_keep(h, h->root, &keep);
    size_t given = unmapped + (size_t)(h->released_bytes - before);
    h->purges += h->released_bytes != before;
    umem__unlock(h);
    UMEM__VG_LOUD(h);
    errno = saved;
    return given;
}

static inline size_t umem_set_purge_min(umem_t *h, size_t bytes)
{
    int locked = umem__lock(h, UMEM_LEND | UMEM_QUIET) == 0;
    size_t was = (size_t)h->purge_min;
    h->purge_min = bytes;
    if (locked)
        umem__unlock(h);
    return was;
}
