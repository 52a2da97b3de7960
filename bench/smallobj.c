/*
 * smallobj - small, short-lived blocks in tight loops: the kind of
 * workload of cfrac and espresso (mimalloc-bench) and of glibc's
 * bench-malloc-simple, where the speed of the fast path is all there is,
 * and of glibc's bench-malloc-thread, where each thread replaces random
 * blocks in an array of its own.
 *
 *   smallobj THREADS [BLOCKS]
 *
 * BLOCKS (default 40,000,000) is the total number of allocations, split
 * evenly across the threads; every thread spends a quarter of its share
 * on each of four patterns:
 *   lifo   batches of 1 to 64 blocks, freed in the reverse order
 *   fifo   a queue of QUEUE blocks: each new block frees the oldest
 *   pairs  a block freed as soon as it is allocated, one size at a time
 *          for RUN blocks, then the next size
 *   slots  an array of SLOTS blocks: each step frees a random one and
 *          allocates another in its place
 * Blocks are 16 to 512 bytes, most of them near 16; each carries
 * bench_fill's pattern (a tag in its first and last 8 bytes), checked
 * before it is freed.  The threads have nothing in common.  Only malloc
 * and free are called, so any allocator can be preloaded.  stdout gets
 * one line: the count, a checksum of every freed block (the same under
 * every allocator for the same arguments) and the throughput in
 * allocations and frees per second.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

enum { MAX_THREADS = 256, BATCH = 64, QUEUE = 256, RUN = 64, SLOTS = 1024 };

struct block {
    unsigned char *p;
    size_t size;
    uint64_t tag;
};

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t rng;
    uint64_t checksum;
    unsigned long allocs, frees;
    struct block b[SLOTS]; /* each pattern's blocks; SLOTS is the most */
};

static unsigned long share; /* allocations per pattern and thread, set by main */

static void fail(const char *what)
{
    fprintf(stderr, "smallobj: %s\n", what);
    exit(1);
}

/* 16 to 512 bytes: the smaller of two uniform draws, so most near 16. */
static size_t random_size(struct worker *w)
{
    uint64_t r = bench_rand(&w->rng);
    size_t a = (r >> 8) % 497, b = (r >> 32) % 497;
    return 16 + (a < b ? a : b);
}

static void new_block(struct block *b, size_t size, struct worker *w)
{
    b->size = size;
    b->tag = bench_rand(&w->rng);
    b->p = malloc(size);
    if (!b->p)
        fail("malloc failed");
    bench_fill(b->p, size, b->tag);
    w->allocs++;
}

static void free_block(struct block *b, struct worker *w)
{
    if (bench_check(b->p, b->size, b->tag, &w->checksum))
        fail("a block was overwritten while it was live");
    free(b->p);
    b->p = NULL;
    w->frees++;
}

static void lifo(struct worker *w)
{
    unsigned long left = share;
    while (left > 0) {
        unsigned long n = 1 + bench_below(&w->rng, BATCH);
        if (n > left)
            n = left;
        left -= n;
        for (unsigned long i = 0; i < n; i++)
            new_block(&w->b[i], random_size(w), w);
        while (n > 0)
            free_block(&w->b[--n], w);
    }
}

static void fifo(struct worker *w)
{
    for (unsigned long i = 0; i < share; i++) {
        struct block *b = &w->b[i % QUEUE];
        if (b->p)
            free_block(b, w);
        new_block(b, random_size(w), w);
    }
    for (size_t i = 0; i < QUEUE; i++)
        if (w->b[(share + i) % QUEUE].p)
            free_block(&w->b[(share + i) % QUEUE], w);
}

static void pairs(struct worker *w)
{
    size_t size = 0;
    for (unsigned long i = 0; i < share; i++) {
        if (i % RUN == 0)
            size = random_size(w);
        new_block(&w->b[0], size, w);
        free_block(&w->b[0], w);
    }
}

static void slots(struct worker *w)
{
    for (unsigned long i = 0; i < share; i++) {
        struct block *b = &w->b[bench_below(&w->rng, SLOTS)];
        if (b->p)
            free_block(b, w);
        new_block(b, random_size(w), w);
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (w->b[i].p)
            free_block(&w->b[i], w);
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    lifo(w);
    fifo(w);
    pairs(w);
    slots(w);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned long threads, blocks = 40000000;
    const struct bench_arg args[] = {
        {"THREADS", 1, MAX_THREADS, &threads},
        {"BLOCKS", 4, 1UL << 40, &blocks},
    };
    if (bench_args(argc, argv, "smallobj", args, 2))
        return 2;
    share = blocks / threads / 4;
    struct worker *workers = calloc(threads, sizeof *workers);
    if (!workers)
        fail("out of memory");
    double t0 = bench_seconds();
    for (unsigned i = 0; i < threads; i++) {
        workers[i].index = i;
        workers[i].rng = 0x9E3779B97F4A7C15ULL * (i + 1);
        if (pthread_create(&workers[i].thread, NULL, run_worker, &workers[i]))
            fail("pthread_create failed");
    }
    uint64_t checksum = 0;
    unsigned long allocs = 0, frees = 0;
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        checksum += workers[i].checksum;
        allocs += workers[i].allocs;
        frees += workers[i].frees;
    }
    double secs = bench_seconds() - t0;
    if (frees != allocs || allocs != share * 4 * threads)
        fail("not every block was allocated and freed once");
    printf("smallobj: %lu threads, %lu blocks, checksum %016" PRIx64 ", %.0f ops/s\n",
           threads, allocs, checksum, (allocs + frees) / secs);
    free(workers);
    return 0;
}
