/*
 * umem/hooks.h - the test hooks (a part of umem.h).
 *
 * The tests reach the heap's insides through these alone: each either
 * reads one thing a test cannot see through the calls, or damages one
 * thing on purpose, to show that umem_check or a misuse check finds it.
 * Their contracts are with their prototypes, in umem.h.
 */
#ifndef UMEM_H
#error "umem/hooks.h is a part of umem.h: include umem.h instead"
#endif

static inline char *umem__hook_page_limit(umem_t *h, const void *p)
{
    return umem__page_of(h, p)->limit;
}

static inline int umem__hook_serves(umem_t *h, size_t n, const void *p)
{
    struct umem_pool *own = umem__pool_known(h);
    if (!own)
        return -1;
    const struct umem_page *pg = own->serve[(n + 15) / 16u];
    return p ? pg == umem__page_of(h, p) : pg == &umem__no_page && !pg->free;
}

static inline size_t umem__hook_slot_starts_wrong(umem_t *h, const void *p)
{
    const struct umem_page *pg = umem__page_of(h, p);
    size_t wrong = 0;
    for (size_t rel = 0; rel < pg->span; rel++)
        wrong += umem__slot_start(pg, rel) != (rel % pg->slot == 0);
    return wrong;
}

static inline void *umem__hook_unit_map(umem_t *h, size_t *bytes)
{
    *bytes = umem__units_bytes(&h->umap[0]);
    return (void *)h->umap[0].map;
}

static inline size_t umem__hook_replace_free(umem_t *h, void *block, void *by, size_t size)
{
    char *b = (char *)block - UMEM_HEADER, *y = (char *)by - UMEM_HEADER;
    size = size ? size : umem__size(b);
    if (size <= UMEM_SMALL_MAX) {
        struct umem_free **head = &h->bin[umem__bin_of(size)], *f = (struct umem_free *)b;
        struct umem_free *g = (struct umem_free *)y;
        if (*head != f)
            return 0;
        g->next = f->next;
        g->prev = NULL;
        *head = g;
        return size;
    }
    struct umem_node **path[UMEM_PATH], *x = (struct umem_node *)b, *z = (struct umem_node *)y;
    unsigned depth = umem__tree_path(&h->root, x, path);
    if (depth == 0)
        return 0;
    z->left = x->left;
    z->right = x->right;
    z->max = x->max;
    z->height = x->height;
    *path[depth - 1] = z;
    return size;
}

static inline void umem__hook_hold_lock(umem_t *h)
{
    umem__lock(h, 0);
}

static inline void umem__hook_drop_lock(umem_t *h)
{
    umem__unlock(h);
}

static inline void umem__hook_flip_page(umem_t *h, const void *p, int which)
{
    if (which == 0) {
        umem__page_of(h, p)->magic ^= 1u;
        return;
    }
    struct umem_units *m = umem__units_of(h, (uintptr_t)p);
    size_t unit = ((uintptr_t)p - m->base) >> UMEM_UNIT_SHIFT;
    uintptr_t pg = (uintptr_t)atomic_load_explicit(&m->map[unit], memory_order_relaxed);
    atomic_store_explicit(&m->map[unit], (struct umem_page *)(pg ^ 64u), memory_order_relaxed);
}

static inline void umem__hook_swap_spans(umem_t *h)
{
    struct umem_node *root = h->spans, *left = root->left;
    root->left = root->right;
    root->right = left;
}

static inline void umem__hook_move_region_end(umem_t *h, const void *p, ptrdiff_t by)
{
    umem__span_find(h, p)->end += by;
}

static inline void umem__hook_miscount(umem_t *h, int which, int64_t by)
{
    uint64_t *count = which == 0   ? &h->allocs
                      : which == 1 ? &h->bytes_in_use
                                   : &h->peak_bytes_in_use;
    *count += (uint64_t)by;
}

static inline size_t umem__hook_count(const struct umem_node *x)
{
    return x ? 1 + umem__hook_count(x->left) + umem__hook_count(x->right) : 0;
}

static inline size_t umem__hook_spans(umem_t *h)
{
    return umem__hook_count(h->spans);
}

static inline void umem__hook_fork_prepare(void)
{
    umem__fork_prepare();
}

static inline void umem__hook_fork_parent(void)
{
    umem__fork_parent();
}
