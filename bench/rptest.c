/*
 * rptest - the kind of workload of rpmalloc's benchmark (rptest in
 * mimalloc-bench): every thread keeps a working set of blocks of random
 * sizes and lifetimes, replacing one at a time, and hands some of the
 * blocks it is done with to the next thread, which frees them.
 *
 *   rptest THREADS [STEPS [SLOTS]]
 *
 * STEPS (default 10,000,000) is the total work, split evenly across the
 * threads; SLOTS (default 8192) is the size of each thread's working set.
 * A step picks a slot, half the time among the first SLOTS / 16 (blocks
 * that live a short while), else among all (blocks that live long); the
 * block in it, if any, is freed or, one time in HAND_EVERY, queued for the
 * next thread (the only thread's own queue when there is one), and a new
 * block takes its place.  Sizes run from 16 to 16,000 bytes: 7 in 8 under
 * 512, and most of those near 16.  Every block carries bench_fill's
 * pattern, checked by whichever thread frees it.  Only malloc and free are
 * called, so any allocator can be preloaded.  stdout gets one line: the
 * counts, a checksum of every freed block (the same under every allocator
 * for the same arguments, whoever freed which block) and the throughput
 * in allocations and frees per second.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

enum { MAX_THREADS = 256, HAND_EVERY = 8, BATCH = 32, INBOX = 4096, DRAIN_EVERY = 64 };

/* A live block and its tag; the size follows from the tag, so that the
 * thread that frees a block can check it with the tag alone. */
struct block {
    unsigned char *p;
    uint64_t tag;
};

/* Blocks handed to a thread, waiting to be freed by it. */
struct inbox {
    pthread_mutex_t lock;
    size_t count;
    struct block block[INBOX];
};

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t rng;
    uint64_t checksum;           /* of the blocks this thread freed */
    unsigned long allocs, frees, handed;
    struct block *slot;          /* the working set */
    struct block out[BATCH];     /* handed over, not yet queued */
    size_t nout;
    struct inbox inbox;
    struct block taken[INBOX]; /* the inbox's blocks, being freed */
};

/* Set by main before the threads start, then only read (the workers'
 * inboxes excepted, each under its lock). */
static struct {
    unsigned threads;
    unsigned long steps; /* per thread */
    size_t slots, hot;
    struct worker *workers;
    pthread_barrier_t done;
} g;

static void fail(const char *what)
{
    fprintf(stderr, "rptest: %s\n", what);
    exit(1);
}

/* 16 to 16,000 bytes: 1 in 32 from 4 KiB, 3 in 32 from 512 bytes, the rest
 * under 512 as the smaller of two uniform draws, so most near 16. */
static size_t block_size(uint64_t tag)
{
    uint64_t r = tag >> 8;
    unsigned pick = tag & 31;
    if (pick == 0)
        return 4096 + r % (16000 - 4096 + 1);
    if (pick <= 3)
        return 512 + r % (4096 - 512);
    size_t a = r % 496, b = (r >> 16) % 496;
    return 16 + (a < b ? a : b);
}

static void new_block(struct block *b, struct worker *w)
{
    b->tag = bench_rand(&w->rng);
    size_t size = block_size(b->tag);
    b->p = malloc(size);
    if (!b->p)
        fail("malloc failed");
    bench_fill(b->p, size, b->tag);
    w->allocs++;
}

static void free_block(struct block *b, struct worker *w)
{
    if (bench_check(b->p, block_size(b->tag), b->tag, &w->checksum))
        fail("a block was overwritten while it was live");
    free(b->p);
    b->p = NULL;
    w->frees++;
}

/* Queues the handed-over blocks on the next thread; what does not fit
 * there is freed here. */
static void send_out(struct worker *w)
{
    struct inbox *in = &g.workers[(w->index + 1) % g.threads].inbox;
    size_t n = 0;
    pthread_mutex_lock(&in->lock);
    while (n < w->nout && in->count < INBOX)
        in->block[in->count++] = w->out[n++];
    pthread_mutex_unlock(&in->lock);
    while (n < w->nout)
        free_block(&w->out[n++], w);
    w->nout = 0;
}

/* Frees every block handed to this thread. */
static void drain(struct worker *w)
{
    struct inbox *in = &w->inbox;
    pthread_mutex_lock(&in->lock);
    size_t n = in->count;
    memcpy(w->taken, in->block, n * sizeof w->taken[0]);
    in->count = 0;
    pthread_mutex_unlock(&in->lock);
    for (size_t i = 0; i < n; i++)
        free_block(&w->taken[i], w);
}

static void step(struct worker *w)
{
    uint64_t r = bench_rand(&w->rng);
    struct block *b = &w->slot[(r >> 8) % (r & 1 ? g.hot : g.slots)];
    if (b->p && (r >> 1) % HAND_EVERY == 0) {
        w->out[w->nout++] = *b;
        w->handed++;
        if (w->nout == BATCH)
            send_out(w);
    } else if (b->p) {
        free_block(b, w);
    }
    new_block(b, w);
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    for (unsigned long s = 1; s <= g.steps; s++) {
        step(w);
        if (s % DRAIN_EVERY == 0)
            drain(w);
    }
    send_out(w);
    pthread_barrier_wait(&g.done);
    drain(w);
    for (size_t i = 0; i < g.slots; i++)
        if (w->slot[i].p)
            free_block(&w->slot[i], w);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned long threads, steps = 10000000, slots = 8192;
    const struct bench_arg args[] = {
        {"THREADS", 1, MAX_THREADS, &threads},
        {"STEPS", 1, 1UL << 40, &steps},
        {"SLOTS", 16, 1UL << 24, &slots},
    };
    if (bench_args(argc, argv, "rptest", args, 3))
        return 2;
    g.threads = threads;
    g.steps = steps / threads;
    g.slots = slots;
    g.hot = slots / 16;
    g.workers = calloc(threads, sizeof *g.workers);
    if (!g.workers)
        fail("out of memory");
    for (unsigned i = 0; i < threads; i++) {
        struct worker *w = &g.workers[i];
        w->index = i;
        w->rng = 0x9E3779B97F4A7C15ULL * (i + 1);
        w->slot = calloc(slots, sizeof *w->slot);
        if (!w->slot)
            fail("out of memory");
        pthread_mutex_init(&w->inbox.lock, NULL);
    }
    pthread_barrier_init(&g.done, NULL, threads);
    double t0 = bench_seconds();
    for (unsigned i = 0; i < threads; i++)
        if (pthread_create(&g.workers[i].thread, NULL, run_worker, &g.workers[i]))
            fail("pthread_create failed");
    uint64_t checksum = 0;
    unsigned long allocs = 0, frees = 0, handed = 0;
    for (unsigned i = 0; i < threads; i++) {
        struct worker *w = &g.workers[i];
        pthread_join(w->thread, NULL);
        checksum += w->checksum;
        allocs += w->allocs;
        frees += w->frees;
        handed += w->handed;
    }
    double secs = bench_seconds() - t0;
    if (frees != allocs)
        fail("not every block was freed once");
    printf("rptest: %lu threads, %lu blocks, %lu handed over, checksum %016" PRIx64
           ", %.0f ops/s\n", threads, allocs, handed, checksum, (allocs + frees) / secs);
    for (unsigned i = 0; i < threads; i++)
        free(g.workers[i].slot);
    free(g.workers);
    return 0;
}
