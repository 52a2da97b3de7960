/*
 * mallochash - the hasher of blocksig.h with umalloc/ufree mapped to the C
 * library's malloc/free, for the benchmark: run it under LD_PRELOAD to
 * compare glibc, jemalloc, mimalloc and tcmalloc with umem.h's pools.
 * Single and -t only: malloc'd memory is not shared across fork().
 */
#include "../blocksig.h"

static __thread struct alloc_counts malloc_counts;

static inline void *umalloc(size_t n)
{
    malloc_counts.umallocs++;
    return malloc(n);
}

static inline void ufree(void *p)
{
    malloc_counts.ufrees += p != NULL;
    free(p);
}

static void malloc_end(struct alloc_counts *counts)
{
    *counts = malloc_counts;
}

/* Nothing per thread but the counts; malloc'd memory is not shared
 * across fork(). */
static const struct policy libc_malloc = {
    .worker_end = malloc_end, .reader_end = malloc_end, .private_memory = 1};

int main(int argc, char **argv)
{
    return blocksig_main(argc, argv, &libc_malloc);
}
