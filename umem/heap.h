/*
 * umem/heap.h - the heap's free blocks: a list per small size, the tree
 * for large ones, merging and first fit (a part of umem.h).
 *
 * SEGREGATED FIRST FIT
 *   Free blocks of up to UMEM_SMALL_MAX (1,056) bytes sit on one list per
 *   exact size (48, 64, ... bytes; a block is its header plus the payload
 *   rounded up to 16).  A request takes the first block of the first
 *   non-empty list that fits, found through a 64-bit map of the non-empty
 *   lists in O(1): with exact sizes the first list that fits is the
 *   smallest fit.  Larger free blocks, and small requests when no list
 *   fits, use address-ordered first fit: the lowest-addressed large free
 *   block that fits, found in O(log n) through an AVL tree of the large
 *   free blocks by address in which each node knows the largest block
 *   below it (Stephenson's "fast fits"): go left while the left subtree
 *   holds a fit.  A block is carved from the low end of the one it comes
 *   from; the rest goes back as a free block.  A free merges the block
 *   with free neighbours at once, in O(1) through boundary tags (plus
 *   O(log n) when a large block enters or leaves the tree).  Worst case
 *   per call: O(log n) in the number of large free blocks, but for the
 *   call that starts a purge (UMEM_GROW, below), which walks the large
 *   free blocks of two pages or more: at most once per half purge delay,
 *   or once per UMEM_PURGE_MIN freed on a heap that has emptied.
 */
#ifndef UMEM_H
#error "umem/heap.h is a part of umem.h: include umem.h instead"
#endif

static inline unsigned umem__lowest_bit(uint64_t m)
{
#if defined(__GNUC__)
    return (unsigned)__builtin_ctzll(m);
#else
    unsigned i = 0;
    while (!(m & 1)) {
        m >>= 1;
        i++;
    }
    return i;
#endif
}

/* Files the free block at b: its header, its footer, and its list or its
 * place in the tree.  The caller sees to the next block's UMEM_PREV_FREE.
 * A list's head has no prev (its prev field is left as it was), so that
 * taking the head never touches the block behind it. */
static UMEM_NOINLINE void umem__file_tree(umem_t *h, char *b, size_t size);

static UMEM_HOT_INLINE void umem__file(umem_t *h, char *b, size_t size)
{
    umem__set_header(h, b, size);
    umem__set_footer(b, size);
    if (size <= UMEM_SMALL_MAX) {
        unsigned i = umem__bin_of(size);
        struct umem_free *f = (struct umem_free *)b, *next = h->bin[i];
        f->next = next;
        /* Whether a list was empty is as random as the program's sizes:
         * the store goes to the old head, or to the heap's sink, chosen
         * without a branch (on the random pattern, one that was
         * mispredicted two times in five; here and below). */
        (next ? next : &h->list_sink)->prev = f;
        h->bin[i] = f;
        h->binmap |= (uint64_t)1 << i;
        return;
    }
    umem__file_tree(h, b, size);
}

/* ... a block larger than UMEM_SMALL_MAX: its place in the tree. */
static UMEM_NOINLINE void umem__file_tree(umem_t *h, char *b, size_t size)
{
    struct umem_node **path[UMEM_PATH], **link = &h->root;
    unsigned depth = 0;
    while (*link) {
        if (depth == UMEM_PATH)
            umem__die("heap corruption: a free tree too deep at", *link);
        path[depth++] = link;
        link = b < (char *)*link ? &(*link)->left : &(*link)->right;
    }
    struct umem_node *x = (struct umem_node *)b;
    umem__tree_insert(path, depth, link, x);
    x->dirty_lo = b;
    x->dirty_hi = b + size;
    x->stamp = h->epoch;
}

/* Takes the free block at b off its list, or out of the tree. */
static UMEM_NOINLINE void umem__unfile_tree(umem_t *h, char *b);

static UMEM_HOT_INLINE void umem__unfile(umem_t *h, char *b, size_t size)
{
    if (size <= UMEM_SMALL_MAX) {
        unsigned i = umem__bin_of(size);
        struct umem_free *f = (struct umem_free *)b;
        if (h->bin[i] == f) {
            h->bin[i] = f->next;
            h->binmap &= ~((uint64_t)(f->next == NULL) << i);
            return;
        }
        if (!f->prev || f->prev->next != f)
            umem__die("heap corruption: a free block missing from its list at", b);
        f->prev->next = f->next;
        (f->next ? f->next : &h->list_sink)->prev = f->prev;
        return;
    }
    umem__unfile_tree(h, b);
}

/* ... a block larger than UMEM_SMALL_MAX: out of the tree. */
static UMEM_NOINLINE void umem__unfile_tree(umem_t *h, char *b)
{
    struct umem_node **path[UMEM_PATH];
    unsigned depth = umem__tree_path(&h->root, (struct umem_node *)b, path);
    if (depth == 0)
        umem__die("heap corruption: a free block missing from the free tree at", b);
    umem__tree_delete(path, depth);
}

/* The large free block x, in the tree, now spans `size` bytes from `at`
 * (x itself, or a lower address with nothing free between): it keeps its
 * place in the tree, and the largest sizes above it are refreshed. */
static inline void umem__tree_resize(umem_t *h, struct umem_node *x, char *at, size_t size,
                                     char *lo, char *hi, uint64_t stamp)
{
    struct umem_node **path[UMEM_PATH];
    unsigned depth = umem__tree_path(&h->root, x, path);
    if (depth == 0)
        umem__die("heap corruption: a free block missing from the free tree at", x);
    struct umem_node *y = (struct umem_node *)at;
    if (y != x) {
        y->left = x->left;
        y->right = x->right;
        y->height = x->height;
        y->max = x->max;
        *path[depth - 1] = y;
    }
    umem__set_header(h, y, size);
    umem__set_footer(y, size);
    y->dirty_lo = lo;
    y->dirty_hi = hi;
    y->stamp = stamp;
    umem__refresh(path, depth);
}

/* umem__merge_free's merge when a neighbour is large, in the tree: the
 * block at b of `size`, the free one before it (prev, psize; psize 0:
 * none) and the one after it (nsize bytes; 0: none) become one block
 * that keeps a large neighbour's node.  What may be resident: the block,
 * the small neighbours, and the large ones' own ranges (their clean
 * pages stay clean).  The range's age is its oldest part's: a block
 * freed next to pages unused for a while goes back with them, rather
 * than keeping them for another delay. */
static inline void umem__merge_large(umem_t *h, char *b, size_t size, char *prev, size_t psize,
                                     size_t nsize)
{
    char *next = b + size, *lo = b, *hi = b + size;
    size_t total = psize + size + nsize;
    uint64_t stamp = h->epoch;
    if (psize > UMEM_SMALL_MAX) {
        struct umem_node *x = (struct umem_node *)prev;
        if (x->dirty_lo != x->dirty_hi) {
            lo = x->dirty_lo;
            stamp = x->stamp;
        }
    } else if (psize) {
        lo = prev;
    }
    if (nsize > UMEM_SMALL_MAX) {
        struct umem_node *x = (struct umem_node *)next;
        if (x->dirty_lo != x->dirty_hi) {
            hi = x->dirty_hi;
            stamp = x->stamp < stamp ? x->stamp : stamp;
        }
    } else if (nsize) {
        hi = next + nsize;
    }
    if (psize > UMEM_SMALL_MAX) {
        if (nsize)
            umem__unfile(h, next, nsize);
        umem__tree_resize(h, (struct umem_node *)prev, prev, total, lo, hi, stamp);
    } else {
        if (psize)
            umem__unfile(h, prev, psize);
        umem__tree_resize(h, (struct umem_node *)next, psize ? prev : b, total, lo, hi, stamp);
    }
}

/* Frees the block at b, whose header holds its size and UMEM_PREV_FREE,
 * merging it with its free neighbours at once (boundary tags: a free
 * block's footer repeats its size).  `first` is its region's first block.
 * A large neighbour keeps its node in the tree. */
static inline void umem__merge_free(umem_t *h, char *b, const char *first)
{
    size_t word = umem__word(b), size = word & ~UMEM_FLAGS;
    char *next = b + size, *prev = NULL;
    size_t psize = 0, nsize = 0;
    if (word & UMEM_PREV_FREE) {
        /* Marked free: merged into the block before, its stale header
         * still says free, and a second free of it is a double free. */
        umem__set_header(h, b, size | UMEM_PREV_FREE);
        psize = umem__footer_before(b);
        prev = b - psize;
        if (psize < UMEM_MIN_BLOCK || psize % UMEM_ALIGN != 0 || psize > (size_t)(b - first) ||
            !umem__header_ok(h, prev) || umem__word(prev) & UMEM_USED || umem__size(prev) != psize)
            umem__die("heap corruption: the free block before is damaged, freeing", b + UMEM_HEADER);
    }
    size_t next_word = umem__word(next);
    if (!(next_word & UMEM_USED)) {
        if (!umem__header_ok(h, next))
            umem__die("heap corruption: free block header overwritten at", next);
        nsize = next_word & ~UMEM_FLAGS;
    } else {
        umem__set_prev_free(next, 1);
    }
    char *start = prev ? prev : b;
    size_t total = psize + size + nsize;
    if (psize > UMEM_SMALL_MAX || nsize > UMEM_SMALL_MAX) {
        umem__merge_large(h, b, size, prev, psize, nsize);
        return;
    }
    if (psize)
        umem__unfile(h, prev, psize);
    if (nsize)
        umem__unfile(h, next, nsize);
    umem__file(h, start, total);
}

/* The lowest-addressed large free block of at least `need` bytes: its
 * path's depth, or 0 when none fits. */
static inline unsigned umem__first_fit(umem_t *h, size_t need, struct umem_node ***path)
{
    struct umem_node **link = &h->root, *x = h->root;
    if (!x || x->max < need)
        return 0;
    for (unsigned depth = 0;;) {
        path[depth++] = link;
        if (x->left && x->left->max >= need)
            link = &x->left;
        else if (umem__size(x) >= need)
            return depth;
        else
            link = &x->right;
        x = *link;
        if (!x || depth == UMEM_PATH)
            umem__die("heap corruption: the free tree's sizes disagree at", path[depth - 1]);
    }
}

/* The first block of the smallest non-empty list whose size fits `need`
 * (at most UMEM_SMALL_MAX), taken off its list; NULL when none fits. */
static UMEM_HOT_INLINE char *umem__take_small(umem_t *h, size_t need, size_t *size)
{
    unsigned i = umem__bin_of(need);
    uint64_t fits = h->binmap >> i << i;
    if (!fits)
        return NULL;
    unsigned j = umem__lowest_bit(fits);
    struct umem_free *f = h->bin[j];
    *size = umem__bin_size(j);
    if (!umem__header_ok(h, f) || umem__word(f) != *size)
        umem__die("heap corruption: free block header overwritten at", f);
    h->bin[j] = f->next; /* the head: no prev to mend */
    h->binmap &= ~((uint64_t)(f->next == NULL) << j);
    return (char *)f;
}

/* Carves `need` bytes from the low end of the large free block at the end
 * of path, whose rest stays large (over UMEM_SMALL_MAX) and keeps its
 * place in the tree, as nothing lies between: the rest (which may overlap
 * the old node) keeps its age and what of its dirty range lies in it. */
static inline char *umem__carve_large(umem_t *h, struct umem_node ***path, unsigned depth,
                                      size_t need)
{
    struct umem_node *f = *path[depth - 1];
    char *b = (char *)f;
    size_t size = umem__size(f);
    uint64_t stamp = f->stamp;
    char *lo = f->dirty_lo, *hi = f->dirty_hi;
    struct umem_node *r = (struct umem_node *)(b + need);
    lo = lo < (char *)r ? (char *)r : lo;
    hi = hi < lo ? lo : hi;
    r->left = f->left;
    r->right = f->right;
    r->height = f->height;
    r->max = f->max;
    umem__set_header(h, r, size - need);
    umem__set_footer(r, size - need);
    r->dirty_lo = lo;
    r->dirty_hi = hi;
    r->stamp = stamp;
    *path[depth - 1] = r;
    umem__refresh(path, depth);
    umem__set_header(h, b, need | UMEM_USED);
    return b;
}

static UMEM_NOINLINE char *umem__take_tree(umem_t *h, size_t *need, int grow);

/* The block b of `size` bytes, taken from its list or the tree, made a
 * used block of *need bytes, its rest filed; or of all of it (*need set
 * to `size`) when the rest would be too small to be a block. */
static UMEM_HOT_INLINE char *umem__split(umem_t *h, char *b, size_t size, size_t *need)
{
    if (size - *need >= UMEM_MIN_BLOCK) {
        umem__set_header(h, b, *need | UMEM_USED);
        umem__file(h, b + *need, size - *need);
    } else {
        *need = size;
        umem__set_header(h, b, size | UMEM_USED);
        umem__set_prev_free(b + size, 0);
    }
    return b;
}

/* A block of *need bytes, marked used (lock held): from the smallest
 * non-empty list of a size that fits, else from the lowest-addressed
 * large block that fits (growing the heap, if `grow` and it may, when
 * none does).  *need grows by a remainder too small to be a block. */
static inline char *umem__take(umem_t *h, size_t *need, int grow)
{
    size_t size = 0;
    char *b;
    if (*need <= UMEM_SMALL_MAX && (b = umem__take_small(h, *need, &size)) != NULL)
        return umem__split(h, b, size, need);
    return umem__take_tree(h, need, grow);
}

/* ... from the tree, when no list had a block to fit. */
static UMEM_NOINLINE char *umem__take_tree(umem_t *h, size_t *need, int grow)
{
    struct umem_node **path[UMEM_PATH];
    unsigned depth = umem__first_fit(h, *need, path);
    if (depth == 0) {
        if (grow && h->flags & UMEM_GROW && umem__grow(h, *need) == 0)
            return umem__take(h, need, 0);
        return NULL;
    }
    struct umem_node *f = *path[depth - 1];
    if (!umem__header_ok(h, f))
        umem__die("heap corruption: free block header overwritten at", f);
    size_t size = umem__size(f);
    if (size - *need > UMEM_SMALL_MAX)
        return umem__carve_large(h, path, depth, *need);
    umem__tree_delete(path, depth);
    return umem__split(h, (char *)f, size, need);
}
