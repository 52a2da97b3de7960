/*
 * mallochash - the hasher of blocksig.h with umalloc/ufree mapped to the C
 * library's malloc/free, for the benchmark: run it under LD_PRELOAD to
 * compare glibc, jemalloc, mimalloc and tcmalloc with umem.h's pools.
 * Single and -t only: malloc'd memory is not shared across fork().
 */
#include "../blocksig.h"

static inline void *umalloc(size_t n)
{
    bs_counts.umallocs++;
    return malloc(n);
}

static inline void ufree(void *p)
{
    bs_counts.ufrees += p != NULL;
    free(p);
}

/* Nothing per thread; malloc'd memory is not shared across fork(). */
static const struct policy bs_policy = {.private_memory = 1};

int main(int argc, char **argv)
{
    return blocksig_main(argc, argv);
}
