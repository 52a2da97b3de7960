/*
 * sharedhash - the Huffman block signature of a file, with every
 * allocation going to one heap behind one global lock.
 *
 * This is the baseline: each umalloc and ufree takes the heap's lock, so
 * with -t or -m every worker contends for it on every tree node, and
 * --stats shows that as lock_count and lock_contended.  Single-threaded,
 * the heap runs without a lock.  See blocksig.h for the rest.
 */
#include "blocksig.h"

static inline void *umalloc(size_t n)
{
    bs_counts.umallocs++;
    return umem_alloc(bs_heap, n);
}

static inline void ufree(void *p)
{
    bs_counts.ufrees += p != NULL;
    umem_free(bs_heap, p);
}

/* The global heap needs nothing per thread. */
static const struct policy bs_policy = {0};

int main(int argc, char **argv)
{
    return blocksig_main(argc, argv);
}
