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

/* The policy's state: the heap, set by the main thread before any worker
 * starts, and each thread's own counts. */
static umem_t *global_heap;
static __thread struct alloc_counts global_counts;

static inline void *umalloc(size_t n)
{
    global_counts.umallocs++;
    return umem_alloc(global_heap, n);
}

static inline void ufree(void *p)
{
    global_counts.ufrees += p != NULL;
    umem_free(global_heap, p);
}

static int global_begin(const struct policy_env *env)
{
    global_heap = env->heap;
    return 0;
}

static void global_end(struct alloc_counts *counts)
{
    *counts = global_counts;
}

/* Nothing per thread but the counts. */
static const struct policy global_lock = {
    .reader_begin = global_begin,
    .worker_end = global_end,
    .reader_end = global_end,
};

int main(int argc, char **argv)
{
    return blocksig_main(argc, argv, &global_lock);
}
