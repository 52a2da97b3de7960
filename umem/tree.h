/*
 * umem/tree.h - the AVL trees of free blocks and of mappings (a part of
 * umem.h).
 *
 * Both are keyed by the node's address and keep, in each node, the
 * largest block size below it: the free tree finds the lowest-addressed
 * block that fits by going left whenever the left subtree holds one.
 * Paths are kept as the links that lead to each node, root first, so
 * that a rotation anywhere on the path can rewrite its parent's link.
 */
#ifndef UMEM_H
#error "umem/tree.h is a part of umem.h: include umem.h instead"
#endif

static inline size_t umem__max_of(const struct umem_node *x)
{
    return x ? x->max : 0;
}

static inline size_t umem__height_of(const struct umem_node *x)
{
    return x ? x->height : 0;
}

static inline void umem__fix(struct umem_node *x)
{
    size_t hl = umem__height_of(x->left), hr = umem__height_of(x->right);
    x->height = 1 + (hl > hr ? hl : hr);
    size_t m = umem__size(x), ml = umem__max_of(x->left), mr = umem__max_of(x->right);
    x->max = m > ml ? (m > mr ? m : mr) : (ml > mr ? ml : mr);
}

static inline void umem__rotate_left(struct umem_node **link)
{
    struct umem_node *x = *link, *y = x->right;
    x->right = y->left;
    y->left = x;
    umem__fix(x);
    umem__fix(y);
    *link = y;
}

static inline void umem__rotate_right(struct umem_node **link)
{
    struct umem_node *x = *link, *y = x->left;
    x->left = y->right;
    y->right = x;
    umem__fix(x);
    umem__fix(y);
    *link = y;
}

static inline void umem__balance(struct umem_node **link)
{
    struct umem_node *x = *link;
    size_t hl = umem__height_of(x->left), hr = umem__height_of(x->right);
    if (hl > hr + 1) {
        if (umem__height_of(x->left->right) > umem__height_of(x->left->left))
            umem__rotate_left(&x->left);
        umem__rotate_right(link);
    } else if (hr > hl + 1) {
        if (umem__height_of(x->right->left) > umem__height_of(x->right->right))
            umem__rotate_right(&x->right);
        umem__rotate_left(link);
    } else {
        umem__fix(x);
    }
}

/* Rebalances and refreshes every node on the path, deepest first. */
static inline void umem__retrace(struct umem_node ***path, unsigned depth)
{
    while (depth > 0)
        umem__balance(path[--depth]);
}

/* The node at path[depth - 1] changed size, not shape: refresh the
 * largest sizes upwards while they change. */
static inline void umem__refresh(struct umem_node ***path, unsigned depth)
{
    while (depth > 0) {
        struct umem_node *x = *path[--depth];
        size_t old = x->max;
        umem__fix(x);
        if (x->max == old)
            break;
    }
}

/* Takes the node at path[depth - 1] out of its tree. */
static inline void umem__tree_delete(struct umem_node ***path, unsigned depth)
{
    struct umem_node **link = path[depth - 1], *x = *link;
    if (!x->left || !x->right) {
        *link = x->left ? x->left : x->right;
        depth--;
    } else {
        /* Its successor, the leftmost node on its right, takes its place. */
        unsigned at = depth - 1;
        struct umem_node **s = &x->right;
        path[depth++] = s;
        while ((*s)->left) {
            if (depth == UMEM_PATH)
                umem__die("heap corruption: a free tree too deep at", x);
            s = &(*s)->left;
            path[depth++] = s;
        }
        struct umem_node *y = *s;
        *s = y->right;
        y->left = x->left;
        y->right = x->right;
        y->height = x->height;
        *link = y;
        path[at + 1] = &y->right;
        depth--;
    }
    umem__retrace(path, depth);
}

/* Puts x at the empty link at the end of path[0 .. depth - 1]. */
static inline void umem__tree_insert(struct umem_node ***path, unsigned depth,
                                     struct umem_node **link, struct umem_node *x)
{
    x->left = x->right = NULL;
    x->height = 1;
    x->max = umem__size(x);
    *link = x;
    umem__retrace(path, depth);
}

/* The path to node x, found by its address; the depth, or 0. */
static inline unsigned umem__tree_path(struct umem_node **root, const struct umem_node *x,
                                       struct umem_node ***path)
{
    struct umem_node **link = root;
    unsigned depth = 0;
    while (*link && depth < UMEM_PATH) {
        path[depth++] = link;
        if (*link == x)
            return depth;
        link = (const char *)x < (const char *)*link ? &(*link)->left : &(*link)->right;
    }
    return 0;
}
