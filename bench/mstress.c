/*
 * mstress - the kind of workload of mimalloc's stress test (mstress in
 * mimalloc-bench): threads that come and go, each holding a rolling set
 * of objects of mixed sizes, passing some to other threads, then
 * allocating a burst of objects and freeing everything; over and over, so
 * that what an allocator keeps, gives back and faults in again is
 * measured with the speed of its calls.
 *
 *   mstress THREADS [ITERATIONS [STEPS]]
 *
 * Each of ITERATIONS (default 10) starts THREADS new threads and waits for
 * them.  A thread first takes its share of STEPS (default 4,000,000, split
 * evenly) steps on a rolling set of ROLL slots: a step frees the object in
 * a random slot (or, one time in SWAP_EVERY, swaps it into a random slot
 * of a table all threads share, freeing what was there) and allocates a
 * new one.  Then it allocates its share of BURST objects, frees them in
 * random order, frees its rolling set, and ends.  One object in 64 is 1
 * to 64 KiB; of the others, 1 in 8 is 256 bytes to 1 KiB and the rest 16
 * to 256 bytes.  Every object carries bench_fill's pattern (a word in
 * each of its pages), checked by whichever thread frees it.  Only malloc
 * and free are called, so any allocator can be preloaded.  stdout gets one
 * line: the counts, a checksum of every freed object (the same under every
 * allocator for the same arguments, whoever freed which) and the
 * throughput in allocations and frees per second.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

enum {
    MAX_THREADS = 256,
    ROLL = 2048,
    BURST = 20000,
    SWAP_EVERY = 16,
    SHARED = 1024,
    STRIPES = 64
};

/* An object and its tag; the size follows from the tag. */
struct object {
    unsigned char *p;
    uint64_t tag;
};

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t rng;
    uint64_t checksum;
    unsigned long allocs, frees;
    struct object roll[ROLL];
    struct object *burst; /* BURST / threads + 1 */
};

/* The table the threads pass objects through; slot i is under
 * lock[i % STRIPES].  Set up by main; what is left in it at the end main
 * frees. */
static struct {
    unsigned threads;
    unsigned long steps, burst; /* per thread and iteration */
    pthread_mutex_t lock[STRIPES];
    struct object shared[SHARED];
} g;

static void fail(const char *what)
{
    fprintf(stderr, "mstress: %s\n", what);
    exit(1);
}

static size_t object_size(uint64_t tag)
{
    uint64_t r = tag >> 9;
    if ((tag & 63) == 0)
        return 1024 + r % (65536 - 1024 + 1);
    if (((tag >> 6) & 7) == 0)
        return 256 + r % (1024 - 256);
    return 16 + r % (256 - 16);
}

static void new_object(struct object *o, struct worker *w)
{
    o->tag = bench_rand(&w->rng);
    size_t size = object_size(o->tag);
    o->p = malloc(size);
    if (!o->p)
        fail("malloc failed");
    bench_fill(o->p, size, o->tag);
    w->allocs++;
}

static void free_object(struct object *o, struct worker *w)
{
    if (bench_check(o->p, object_size(o->tag), o->tag, &w->checksum))
        fail("an object was overwritten while it was live");
    free(o->p);
    o->p = NULL;
    w->frees++;
}

/* Puts o in a random slot of the shared table and frees what was there. */
static void swap_shared(struct object *o, struct worker *w)
{
    size_t i = bench_below(&w->rng, SHARED);
    pthread_mutex_lock(&g.lock[i % STRIPES]);
    struct object old = g.shared[i];
    g.shared[i] = *o;
    pthread_mutex_unlock(&g.lock[i % STRIPES]);
    o->p = NULL;
    if (old.p)
        free_object(&old, w);
}

static void rolling(struct worker *w)
{
    for (unsigned long s = 0; s < g.steps; s++) {
        struct object *o = &w->roll[bench_below(&w->rng, ROLL)];
        if (o->p && bench_below(&w->rng, SWAP_EVERY) == 0)
            swap_shared(o, w);
        else if (o->p)
            free_object(o, w);
        new_object(o, w);
    }
}

/* A burst of objects, freed in random order (a Fisher-Yates walk). */
static void burst(struct worker *w)
{
    for (unsigned long i = 0; i < g.burst; i++)
        new_object(&w->burst[i], w);
    for (unsigned long n = g.burst; n > 0; n--) {
        unsigned long i = bench_below(&w->rng, n);
        free_object(&w->burst[i], w);
        w->burst[i] = w->burst[n - 1];
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    rolling(w);
    burst(w);
    for (size_t i = 0; i < ROLL; i++)
        if (w->roll[i].p)
            free_object(&w->roll[i], w);
    return NULL;
}

/* One iteration: THREADS new threads, each seeded by iteration and index. */
static void iterate(struct worker *workers, unsigned long it)
{
    for (unsigned i = 0; i < g.threads; i++) {
        struct worker *w = &workers[i];
        w->index = i;
        w->rng = 0x9E3779B97F4A7C15ULL * (it * MAX_THREADS + i + 1);
        if (pthread_create(&w->thread, NULL, run_worker, w))
            fail("pthread_create failed");
    }
    for (unsigned i = 0; i < g.threads; i++)
        pthread_join(workers[i].thread, NULL);
}

int main(int argc, char **argv)
{
    unsigned long threads, iterations = 10, steps = 4000000;
    const struct bench_arg args[] = {
        {"THREADS", 1, MAX_THREADS, &threads},
        {"ITERATIONS", 1, 1UL << 30, &iterations},
        {"STEPS", 0, 1UL << 40, &steps},
    };
    if (bench_args(argc, argv, "mstress", args, 3))
        return 2;
    g.threads = threads;
    g.steps = steps / threads / iterations;
    g.burst = BURST / threads;
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&g.lock[i], NULL);
    struct worker *workers = calloc(threads, sizeof *workers);
    if (!workers)
        fail("out of memory");
    for (unsigned i = 0; i < threads; i++)
        if (!(workers[i].burst = calloc(g.burst + 1, sizeof *workers[i].burst)))
            fail("out of memory");
    double t0 = bench_seconds();
    for (unsigned long it = 0; it < iterations; it++)
        iterate(workers, it);
    struct worker last = {.checksum = 0};
    for (size_t i = 0; i < SHARED; i++)
        if (g.shared[i].p)
            free_object(&g.shared[i], &last);
    double secs = bench_seconds() - t0;
    uint64_t checksum = last.checksum;
    unsigned long allocs = 0, frees = last.frees;
    for (unsigned i = 0; i < threads; i++) {
        checksum += workers[i].checksum;
        allocs += workers[i].allocs;
        frees += workers[i].frees;
        free(workers[i].burst);
    }
    if (frees != allocs)
        fail("not every object was freed once");
    printf("mstress: %lu threads, %lu iterations, %lu objects, checksum %016" PRIx64
           ", %.0f ops/s\n",
           threads, iterations, allocs, checksum, (allocs + frees) / secs);
    free(workers);
    return 0;
}
