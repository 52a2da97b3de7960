/*
 * arrayhash - the hasher of blocksig.h with no allocator at all: a block's
 * tree nodes, heap and array are bumped out of a per-thread array that is
 * rewound when the block's last node is freed.  This is the bound no
 * allocator can beat; the benchmark measures esharedhash against it.
 * Input buffers (the only large requests) still come from malloc.
 * Single and -t only.
 */
#include "../blocksig.h"

enum { ARENA_BYTES = 64 << 10 };

static __thread struct {
    char *bump;
    size_t live;
    _Alignas(16) char mem[ARENA_BYTES];
} arena;
static __thread struct alloc_counts arena_counts;

static inline void *umalloc(size_t n)
{
    arena_counts.umallocs++;
    size_t need = (n + 15) & ~(size_t)15;
    if (need >= ARENA_BYTES / 4)
        return malloc(n);
    if (!arena.bump)
        arena.bump = arena.mem;
    void *p = arena.bump;
    arena.bump += need;
    arena.live++;
    return p;
}

static inline void ufree(void *p)
{
    arena_counts.ufrees += p != NULL;
    char *c = p;
    if (c >= arena.mem && c < arena.mem + ARENA_BYTES) {
        if (--arena.live == 0)
            arena.bump = arena.mem;
        return;
    }
    free(p);
}

static void arena_end(struct alloc_counts *counts)
{
    *counts = arena_counts;
}

/* Nothing per thread but the counts; malloc'd memory is not shared
 * across fork(). */
static const struct policy no_allocator = {
    .worker_end = arena_end, .reader_end = arena_end, .private_memory = 1};

int main(int argc, char **argv)
{
    return blocksig_main(argc, argv, &no_allocator);
}
