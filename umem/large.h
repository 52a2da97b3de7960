/*
 * umem/large.h - large blocks: a mapping each, kept a while after their
 * free (a part of umem.h).
 *
 * LARGE BLOCKS (UMEM_GROW)
 *   Requests of UMEM_LARGE (1 MiB) or more (for umem_memalign, when the
 *   size plus the alignment are) get a mapping of their own; where that
 *   mapping fails they come from the regions.  A freed one is not
 *   unmapped at once: up to UMEM_MAP_CACHE (8) of them, and no more bytes
 *   than half the heap in use (at least 64 MiB), wait for the next large
 *   request, which takes the smallest that holds it (trimmed when it would
 *   waste over a quarter); where Linux's mremap is there, a request larger
 *   than all of them grows the largest, and umem_realloc grows or shrinks
 *   a large block with mremap instead of copying it.  A large block shrunk
 *   to half its size or less by umem_realloc moves (by mremap, or to a
 *   block of the new size), so that its pages go back.
 */
#ifndef UMEM_H
#error "umem/large.h is a part of umem.h: include umem.h instead"
#endif

/* The mapping's size for a large block of n bytes aligned to `align`, or 0
 * when no address space could hold it. */
static inline size_t umem__large_bytes(const umem_t *h, size_t n, size_t align)
{
    if (n > PTRDIFF_MAX / 2 || align > PTRDIFF_MAX / 4)
        return 0;
    return umem__round_page(h, UMEM_SPAN_BYTES + UMEM_HEADER + n + (align > UMEM_ALIGN ? align : 0));
}

/* The mapping at s, of `bytes`, as one used block aligned to `align`. */
static inline void umem__large_init(umem_t *h, struct umem_span *s, size_t bytes, size_t align,
                                    size_t reused)
{
    uintptr_t payload = (uintptr_t)s + UMEM_SPAN_BYTES + UMEM_HEADER;
    if (align > UMEM_ALIGN)
        payload = (payload + align - 1) & ~(uintptr_t)(align - 1);
    s->is_region = 0;
    s->first = (char *)payload - UMEM_HEADER;
    s->end = (char *)s + bytes;
    umem__set_header(h, s->first,
                     (size_t)(s->end - s->first) | UMEM_USED | UMEM_MAPPED | reused);
}

/* A fresh mapping for a large block, made without the lock; NULL when
 * the system refuses it (errno left as it was). */
static inline struct umem_span *umem__map_large(umem_t *h, size_t bytes, size_t align)
{
    int saved = errno;
    struct umem_span *s = umem__map(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    errno = saved;
    if (s) {
        UMEM__VG_HIDE(h, s, bytes);
        umem__large_init(h, s, bytes, align, 0);
    }
    return s;
}

static inline void umem__unmap(void *p, size_t bytes)
{
    int saved = errno;
    munmap(p, bytes);
    errno = saved;
}

/* Takes map_cache[i] out of the cache (lock held); it stays mapped, and
 * counted in mapped_bytes. */
static inline struct umem_span *umem__map_cache_take(umem_t *h, unsigned i)
{
    struct umem_span *s = h->map_cache[i];
    h->map_cached--;
    memmove(&h->map_cache[i], &h->map_cache[i + 1], (h->map_cached - i) * sizeof h->map_cache[0]);
    h->map_cache_bytes -= umem__size(s);
    return s;
}

/* Drops map_cache[i] and unmaps it (lock held). */
static inline void umem__unmap_cached(umem_t *h, unsigned i)
{
    struct umem_span *s = umem__map_cache_take(h, i);
    size_t bytes = umem__size(s);
    h->mapped_bytes -= bytes;
    umem__unmap(s, bytes);
}

/* A cached mapping made into a large block of `bytes` aligned to `align`
 * (lock held; the caller adds it to the spans), or NULL. */
static inline struct umem_span *umem__reuse_map(umem_t *h, size_t bytes, size_t align)
{
    unsigned best = UMEM_MAP_CACHE, largest = 0;
    for (unsigned i = 0; i < h->map_cached; i++) {
        size_t have = umem__size(h->map_cache[i]);
        if (have >= bytes && (best == UMEM_MAP_CACHE || have < umem__size(h->map_cache[best])))
            best = i;
        if (have > umem__size(h->map_cache[largest]))
            largest = i;
    }
    unsigned i = best == UMEM_MAP_CACHE ? largest : best;
    if (h->map_cached == 0)
        return NULL;
    struct umem_span *s = h->map_cache[i];
    size_t have = umem__size(s);
    if (have < bytes) {
#ifdef UMEM_MREMAP_MAYMOVE
        int saved = errno;
        void *moved = mremap(s, have, bytes, UMEM_MREMAP_MAYMOVE);
        errno = saved;
        if (moved == MAP_FAILED)
            return NULL;
        h->mapped_bytes += bytes - have;
        h->map_cache_bytes += bytes - have;
        s = h->map_cache[i] = (struct umem_span *)moved;
        UMEM__VG_HIDE(h, s, bytes);
        umem__set_header(h, s, bytes | UMEM_MAPPED);
        have = bytes;
#else
        return NULL;
#endif
    } else if (have - bytes > have / 4) {
        umem__unmap((char *)s + bytes, have - bytes); /* trimmed: it would waste too much */
        h->mapped_bytes -= have - bytes;
        h->map_cache_bytes -= have - bytes;
        umem__set_header(h, s, bytes | UMEM_MAPPED);
        have = bytes;
    }
    umem__map_cache_take(h, i);
    h->mapped_bytes -= have; /* the span tree counts it again */
    h->map_reuses++;
    umem__large_init(h, s, have, align, UMEM_REUSED);
    return s;
}

/* A large block freed (lock held): its mapping waits in the cache, unless
 * it is larger than the cache may hold (half the heap in use, at least
 * 64 MiB), which unmaps it. */
static inline void umem__keep_map(umem_t *h, struct umem_span *s)
{
    size_t bytes = umem__size(s);
    uint64_t most = h->bytes_in_use / 2 > ((uint64_t)64 << 20) ? h->bytes_in_use / 2 : (uint64_t)64 << 20;
    if (bytes > most) {
        umem__unmap(s, bytes);
        return;
    }
    while (h->map_cached > 0 && (h->map_cached == UMEM_MAP_CACHE || h->map_cache_bytes + bytes > most))
        umem__unmap_cached(h, 0);
    s->node.stamp = h->epoch;
    h->map_cache[h->map_cached++] = s;
    h->map_cache_bytes += bytes;
    h->mapped_bytes += bytes;
}

/* A large block for n bytes aligned to `align` in a mapping of its own,
 * cached or fresh: its header, or NULL (the caller then tries the heap).
 * Takes the lock itself; *bytes is the mapping's size. */
static UMEM_NOINLINE char *umem__alloc_large(umem_t *h, size_t n, size_t align, size_t *bytes)
{
    size_t want = umem__large_bytes(h, n, align);
    if (want == 0)
        return NULL;
    if (umem__lock(h, UMEM_COUNTED | UMEM_LEND) != 0)
        return NULL; /* lent to a fork too: the caller does without */
    struct umem_span *s = umem__reuse_map(h, want, align);
    if (!s) {
        umem__unlock(h);
        s = umem__map_large(h, want, align);
        if (!s || umem__lock(h, UMEM_COUNTED | UMEM_LEND) != 0) {
            if (s)
                umem__unmap(s, want);
            return NULL;
        }
    }
    *bytes = (size_t)(s->end - (char *)s);
    umem__span_add(h, s, *bytes);
    h->large_blocks++;
    umem__count_alloc(h, *bytes);
    umem__maybe_purge(h);
    umem__unlock(h);
    return s->first;
}

static inline int umem__fresh(const umem_t *h, const void *p, size_t n)
{
    if (n < UMEM_LARGE || h->flags & UMEM__WATCHED) /* a watched heap fills its blocks */
        return 0;
    size_t word = umem__word((const char *)p - UMEM_HEADER);
    return (word & UMEM_MAPPED) && !(word & UMEM_REUSED);
}
