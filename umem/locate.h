/*
 * umem/locate.h - a pointer handed back: its block found and checked,
 * then given back with the lock, or, while a fork holds the lock, left
 * for the lock's next holder (a part of umem.h).
 *
 * HOW A FREED POINTER IS CHECKED
 *   A block with a header: it must lie inside a region or be a large
 *   block's start, and be 16-byte aligned; its header's check must match
 *   (user data almost never forms header + address + secret, so interior
 *   pointers fail here); the block must be marked used (else: double
 *   free); and the next header must be intact and say its predecessor is
 *   used (else something wrote past the block's end).  A large block
 *   freed twice: its mapping may be cached or gone, when the second free
 *   is reported as a pointer outside the heap, unless the mapping serves
 *   another large block by then (a cached one reused, or the system
 *   mapping the same address again): that block is then freed, as with
 *   any allocator that reuses memory.
 *   A slot of a pool's page: it must start a slot of the page (else: not
 *   from umem_alloc); it must lie below its page's bump (else: a slot
 *   never handed out) and must not carry the free tag (else: a double
 *   free), whichever thread frees it.  Two threads that free the same
 *   slot at the same moment may both find it untagged: such a race is
 *   not caught.  A slot taken from a free list must
 *   still carry its tag, or the allocation stops there: a write after
 *   free over the link cannot hand out an address of the writer's
 *   choosing without the heap's secret.  A write past a slot's end is not
 *   seen (slots have no header), unless it spoils a free neighbour's tag.
 */
#ifndef UMEM_H
#error "umem/locate.h is a part of umem.h: include umem.h instead"
#endif

/* ---- where a pointer's block lives ---- */

struct umem_where {
    char *block;           /* its header */
    char *first;           /* the first block of its region */
    char *end;             /* the end mark of its region */
    struct umem_span *big; /* a large block's span, else NULL */
};

/* Finds and checks the block of p, as every free, realloc and usable
 * size does; dies with one line naming p when it is not a live block.
 * With the lock held (UMEM_NOLOCK: always). */
static UMEM_COLD void umem__die_of(const char *call, const char *what, const void *p)
{
    char line[128];
    snprintf(line, sizeof line, what, call);
    umem__die(line, p);
}

/* The mark of a block with a header that a thread keeps for its next
 * request (umem/pools.h, MID BLOCKS), in its payload's second word: none
 * of the other tags (a free slot's, a block freed while the lock is lent). */
static inline size_t umem__mid_tag(const umem_t *h, const void *p)
{
    return h->secret ^ (size_t)(uintptr_t)p ^ 0x41D5u;
}

static UMEM_HOT_INLINE void umem__locate(umem_t *h, const void *p, struct umem_where *w,
                                          const char *call)
{
    const char *c = (const char *)p;
    if ((uintptr_t)c % UMEM_ALIGN != 0)
        umem__die_of(call, "%s of a pointer outside the heap or misaligned:", p);
    w->block = (char *)c - UMEM_HEADER;
    w->big = NULL;
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed);
    if (c >= h->first + UMEM_HEADER && c < end) {
        w->first = h->first;
        w->end = end;
    } else {
        struct umem_span *s = umem__span_find(h, w->block);
        if (!s || (s->is_region && (c < s->first + UMEM_HEADER || c >= s->end)))
            umem__die_of(call, "%s of a pointer outside the heap or misaligned:", p);
        w->first = s->first;
        w->end = s->end;
        if (!s->is_region && w->block == s->first)
            w->big = s; /* anywhere else in a large block, its check fails */
    }
    if (!umem__header_ok(h, w->block))
        umem__die_of(call, "bad %s (not from umem_alloc, or its header overwritten):", p);
    size_t word = umem__word(w->block);
    if (!(word & UMEM_USED) || ((const size_t *)p)[1] == umem__mid_tag(h, p))
        umem__die_of(call, "%s of a block freed already (double free):", p);
    if (w->big)
        return;
    size_t size = word & ~UMEM_FLAGS;
    char *next = w->block + size;
    if (size < UMEM_MIN_BLOCK || word & UMEM_MAPPED || next > w->end ||
        !umem__header_ok(h, next) || umem__word(next) & UMEM_PREV_FREE)
        umem__die("heap corruption: write past the end of the block at", p);
}

/* A large block's mapping, freed (lock held): kept for reuse, or on a
 * fixed-size heap (one mapped while a fork held the lock) unmapped. */
static UMEM_NOINLINE void umem__give_back_large(umem_t *h, struct umem_span *s)
{
    size_t bytes = umem__size(s);
    umem__span_remove(h, s);
    h->bytes_in_use -= bytes;
    h->large_blocks--;
    if (h->flags & UMEM_GROW)
        umem__keep_map(h, s);
    else
        umem__unmap(s, bytes);
}

/* Gives a checked block back to the free tree (lock held). */
static inline void umem__give_back(umem_t *h, const struct umem_where *w)
{
    if (w->big) {
        umem__give_back_large(h, w->big);
        return;
    }
    size_t size = umem__size(w->block);
    h->bytes_in_use -= size;
    h->unpurged += size;
    umem__merge_free(h, w->block, w->first);
}

/* A free of a block with a header (lock held): checked, counted (a move,
 * `moved`, counts as no free) and given back. */
static UMEM_HOT_INLINE void umem__release(umem_t *h, void *p, int moved)
{
    struct umem_where w;
    umem__locate(h, p, &w, "free");
    if (moved)
        h->allocs--; /* a move: neither an allocation nor a free */
    else
        h->frees++;
    umem__give_back(h, &w);
}

/* ---- calls that find the lock lent to a fork (umem/lock.h, FORK) ----
 * They read nothing of the heap but the block they are given, whose
 * header only its owner changes (a neighbour's free flips its
 * UMEM_PREV_FREE, which the check leaves out), and leave what they did on
 * the heap's lists with one compare-and-swap, for umem__settle. */

/* A mark in a block freed while the lock was lent: a second free of it
 * before the lists are settled is caught. */
static inline size_t umem__lent_tag(const umem_t *h, const void *p)
{
    return h->secret ^ (size_t)(uintptr_t)p ^ 0xF02Cu;
}

/* n bytes aligned to `align` in a mapping of their own, added to the
 * heap by the next holder of the lock; NULL with errno = ENOMEM. */
static UMEM_RARE void *umem__lent_alloc(umem_t *h, size_t n, size_t align)
{
    size_t bytes = umem__large_bytes(h, n, align);
    struct umem_span *s = bytes != 0 && n != 0 ? umem__map_large(h, bytes, align) : NULL;
    if (!s) {
        atomic_fetch_add_explicit(&h->lent_failed, 1, memory_order_relaxed);
        errno = ENOMEM;
        return NULL;
    }
    struct umem_span *old = atomic_load_explicit(&h->lent_maps, memory_order_relaxed);
    do
        s->node.left = old ? &old->node : NULL;
    while (!atomic_compare_exchange_weak_explicit(&h->lent_maps, &old, s, memory_order_release,
                                                  memory_order_relaxed));
    return s->first + UMEM_HEADER;
}

/* The header of p, a block handed out, checked as far as can be without
 * the lock; dies with one line naming p otherwise. */
static UMEM_RARE char *umem__lent_block(umem_t *h, const void *p, const char *call)
{
    char *b = (char *)p - UMEM_HEADER;
    if ((uintptr_t)p % UMEM_ALIGN != 0)
        umem__die_of(call, "%s of a pointer outside the heap or misaligned:", p);
    if (!umem__header_ok(h, b))
        umem__die_of(call, "bad %s (not from umem_alloc, or its header overwritten):", p);
    if (!(umem__word(b) & UMEM_USED) || ((size_t *)p)[1] == umem__lent_tag(h, p) ||
        ((size_t *)p)[1] == umem__mid_tag(h, p))
        umem__die_of(call, "%s of a block freed already (double free):", p);
    return b;
}

/* A free (moved: by realloc) left for the next holder of the lock. */
static UMEM_RARE void umem__lent_free(umem_t *h, void *p, int moved)
{
    umem__lent_block(h, p, "free");
    uintptr_t *q = (uintptr_t *)p, old = atomic_load_explicit(&h->lent_frees, memory_order_relaxed);
    q[1] = umem__lent_tag(h, p);
    do
        q[0] = old;
    while (!atomic_compare_exchange_weak_explicit(&h->lent_frees, &old, (uintptr_t)p | (moved != 0),
                                                  memory_order_release, memory_order_relaxed));
}

/* realloc: p stays if it holds n bytes, else moves to a mapping of its own. */
static UMEM_RARE void *umem__lent_realloc(umem_t *h, void *p, size_t n)
{
    size_t have = umem__size(umem__lent_block(h, p, "realloc")) - UMEM_HEADER;
    if (n <= have)
        return p;
    void *q = umem__lent_alloc(h, n, UMEM_ALIGN);
    if (q) {
        memcpy(q, p, have);
        umem__lent_free(h, p, 1);
    }
    return q;
}

/* What the calls that did without the lock left, added to the heap (lock
 * held), as they would have done with it: their blocks and their frees,
 * which are checked now. */
static UMEM_RARE void umem__settle(umem_t *h)
{
    /* Frees first: each was left after the mapping of its block (if it
     * has one), which is then on the list taken next, or settled before. */
    uintptr_t f = atomic_exchange_explicit(&h->lent_frees, 0, memory_order_acquire);
    struct umem_span *s = atomic_exchange_explicit(&h->lent_maps, NULL, memory_order_acquire);
    while (s) {
        struct umem_span *next = (struct umem_span *)s->node.left;
        size_t bytes = (size_t)(s->end - (char *)s);
        umem__span_add(h, s, bytes);
        h->large_blocks++;
        umem__count_alloc(h, bytes);
        h->lent_calls++;
        s = next;
    }
    while (f) {
        uintptr_t *q = (uintptr_t *)(f & ~(uintptr_t)1);
        int moved = (int)(f & 1);
        f = q[0];
        q[1] = 0; /* the mark goes: the block may be handed out again */
        umem__release(h, q, moved);
        h->lent_calls++;
    }
}
