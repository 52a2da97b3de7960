/*
 * largerealloc - large blocks, the kind of workload of malloc-large in
 * mimalloc-bench, and blocks grown by realloc: what an allocator does with
 * memory it maps for one block, gives back and maps again, and whether it
 * can grow a block without copying it.
 *
 *   largerealloc THREADS [ROUNDS]
 *
 * ROUNDS (default 2) is the total work, split evenly across the threads,
 * at least one round each.  In a round a thread first replaces
 * LARGE_STEPS times a random one of its LIVE blocks with a new block of 5
 * to 25 MiB, then grows one block by realloc from 1 MiB to 64 MiB in
 * steps of 512 KiB to 2.5 MiB, and frees it.  Every block gets
 * bench_fill's pattern, which writes one word in every page; before a
 * block is grown or freed the pattern is checked.  The default is small
 * because on the 2-CPU VM this was written on a page fault costs 10 to
 * 25 us: it takes 1 to 2 s there under glibc.  Only malloc, realloc and
 * free are called, so any allocator can be preloaded.  stdout gets one
 * line: the counts, a checksum of every pattern read back (the same under
 * every allocator for the same arguments) and the throughput in calls to
 * the allocator per second.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

enum { MAX_THREADS = 256, LIVE = 3, LARGE_STEPS = 3 };

#define MIB ((size_t)1 << 20)

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
    unsigned long calls; /* mallocs, reallocs and frees */
    struct block live[LIVE];
};

static unsigned long rounds_per_thread; /* set by main before the threads start */

static void fail(const char *what, size_t size)
{
    fprintf(stderr, "largerealloc: %s (block of %zu bytes)\n", what, size);
    exit(1);
}

static void check(const struct block *b, size_t size, struct worker *w)
{
    if (bench_check(b->p, size, b->tag, &w->checksum))
        fail("a block was overwritten while it was live", size);
}

static void release(struct block *b, struct worker *w)
{
    check(b, b->size, w);
    free(b->p);
    b->p = NULL;
    w->calls++;
}

/* Replaces a random live block with one of 5 to 25 MiB. */
static void replace_large(struct worker *w)
{
    struct block *b = &w->live[bench_below(&w->rng, LIVE)];
    if (b->p)
        release(b, w);
    b->size = 5 * MIB + bench_below(&w->rng, 20 * MIB + 1);
    b->tag = bench_rand(&w->rng);
    b->p = malloc(b->size);
    if (!b->p)
        fail("malloc failed", b->size);
    bench_fill(b->p, b->size, b->tag);
    w->calls++;
}

/* One block grown by realloc from 1 MiB to 64 MiB, checked at each step. */
static void grow(struct worker *w)
{
    struct block b = {.size = MIB, .tag = bench_rand(&w->rng)};
    b.p = malloc(b.size);
    if (!b.p)
        fail("malloc failed", b.size);
    bench_fill(b.p, b.size, b.tag);
    w->calls++;
    while (b.size < 64 * MIB) {
        size_t size = b.size + MIB / 2 + bench_below(&w->rng, 2 * MIB);
        if (size > 64 * MIB)
            size = 64 * MIB;
        unsigned char *p = realloc(b.p, size);
        if (!p)
            fail("realloc failed", size);
        b.p = p;
        check(&b, b.size, w);
        b.size = size;
        bench_fill(b.p, b.size, b.tag);
        w->calls++;
    }
    release(&b, w);
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    for (unsigned long r = 0; r < rounds_per_thread; r++) {
        for (int i = 0; i < LARGE_STEPS; i++)
            replace_large(w);
        grow(w);
    }
    for (int i = 0; i < LIVE; i++)
        if (w->live[i].p)
            release(&w->live[i], w);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned long threads, rounds = 2;
    const struct bench_arg args[] = {
        {"THREADS", 1, MAX_THREADS, &threads},
        {"ROUNDS", 1, 1UL << 30, &rounds},
    };
    if (bench_args(argc, argv, "largerealloc", args, 2))
        return 2;
    rounds_per_thread = rounds > threads ? rounds / threads : 1;
    struct worker *workers = calloc(threads, sizeof *workers);
    if (!workers)
        fail("out of memory", threads * sizeof *workers);
    double t0 = bench_seconds();
    for (unsigned i = 0; i < threads; i++) {
        workers[i].index = i;
        workers[i].rng = 0x9E3779B97F4A7C15ULL * (i + 1);
        if (pthread_create(&workers[i].thread, NULL, run_worker, &workers[i]))
            fail("pthread_create failed", 0);
    }
    uint64_t checksum = 0;
    unsigned long calls = 0;
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        checksum += workers[i].checksum;
        calls += workers[i].calls;
    }
    double secs = bench_seconds() - t0;
    printf("largerealloc: %lu threads, %lu rounds, %lu calls, checksum %016" PRIx64
           ", %.0f ops/s\n", threads, rounds_per_thread * threads, calls, checksum,
           calls / secs);
    free(workers);
    return 0;
}
