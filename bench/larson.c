/*
 * larson - a server's allocation pattern, after Larson and Krishnan
 * ("Memory allocation for long-running server applications", ISMM 1998):
 * each thread keeps an array of live blocks and, step after step, frees a
 * random one and allocates a block of random size in its place.  The
 * steps run in rounds; after each round every array moves on to the next
 * thread, so from then on most frees are of blocks another thread
 * allocated.
 *
 *   larson THREADS [STEPS [SLOTS]]
 *
 * STEPS (default 20,000,000) is the total work, split evenly across the
 * threads; SLOTS (default 4096) is the length of each array.  Sizes are 16
 * to 1024 bytes, with one block in 64 up to 32 KiB and one in 4096 up to
 * 256 KiB.  Each block carries a tag in its first and last 8 bytes,
 * checked before it is freed.  Only malloc and free are called, so any
 * allocator can be preloaded.  stdout gets one line: a checksum of every
 * tag and size, the same under every allocator for the same arguments.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

enum { ROUNDS = 64, MAX_THREADS = 256 };

struct slot {
    unsigned char *block;
    size_t size;
    uint64_t tag;
};

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t rng;      /* this worker's generator, touched by it only */
    uint64_t checksum; /* of the blocks it freed */
};

/* Set by main before the threads start; the arrays are handed from thread
 * to thread at the round barrier, so one thread at a time owns each. */
static struct {
    unsigned threads;
    unsigned long steps_per_round; /* per thread */
    size_t slots;
    struct slot **arrays; /* [threads][slots] */
    pthread_barrier_t round_end;
} g;

static size_t random_size(uint64_t *rng)
{
    uint64_t r = bench_rand(rng);
    if (r % 4096 == 1)
        return 32768 + (r >> 20) % (262144 - 32768);
    if (r % 64 == 0)
        return 1024 + (r >> 20) % (32768 - 1024);
    return 16 + (r >> 20) % (1024 - 16 + 1);
}

/* A failure ends the whole run at once: the other threads would wait for
 * this one at the next barrier. */
static void fail(const char *what, size_t size)
{
    fprintf(stderr, "larson: %s (block of %zu bytes)\n", what, size);
    exit(1);
}

static void fill(struct slot *s, struct worker *w)
{
    s->size = random_size(&w->rng);
    s->tag = bench_rand(&w->rng);
    s->block = malloc(s->size);
    if (!s->block)
        fail("malloc failed", s->size);
    memcpy(s->block, &s->tag, sizeof s->tag);
    memcpy(s->block + s->size - sizeof s->tag, &s->tag, sizeof s->tag);
}

static void release(struct slot *s, struct worker *w)
{
    uint64_t head, tail;
    memcpy(&head, s->block, sizeof head);
    memcpy(&tail, s->block + s->size - sizeof tail, sizeof tail);
    if (head != s->tag || tail != s->tag)
        fail("a block was overwritten while it was live", s->size);
    w->checksum += (head ^ s->size) * 31 + tail;
    free(s->block);
    s->block = NULL;
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    struct slot *own = g.arrays[w->index];
    for (size_t i = 0; i < g.slots; i++)
        fill(&own[i], w);
    pthread_barrier_wait(&g.round_end);
    for (unsigned r = 0; r < ROUNDS; r++) {
        struct slot *a = g.arrays[(w->index + r) % g.threads];
        for (unsigned long s = 0; s < g.steps_per_round; s++) {
            struct slot *victim = &a[bench_rand(&w->rng) % g.slots];
            release(victim, w);
            fill(victim, w);
        }
        pthread_barrier_wait(&g.round_end);
    }
    struct slot *last = g.arrays[(w->index + ROUNDS) % g.threads];
    for (size_t i = 0; i < g.slots; i++)
        release(&last[i], w);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned long threads, steps = 20000000, slots = 4096;
    if (argc < 2 || argc > 4 || bench_parse(argv[1], 1, MAX_THREADS, &threads) ||
        (argc > 2 && bench_parse(argv[2], 1, 1UL << 40, &steps)) ||
        (argc > 3 && bench_parse(argv[3], 1, 1UL << 24, &slots))) {
        fprintf(stderr, "usage: larson THREADS(1-%d) [STEPS [SLOTS]]\n", MAX_THREADS);
        return 2;
    }
    g.threads = threads;
    g.slots = slots;
    g.steps_per_round = steps / threads / ROUNDS;
    g.arrays = calloc(threads, sizeof *g.arrays);
    struct worker *workers = calloc(threads, sizeof *workers);
    if (!g.arrays || !workers) {
        fprintf(stderr, "larson: out of memory\n");
        return 1;
    }
    for (unsigned i = 0; i < threads; i++) {
        g.arrays[i] = calloc(slots, sizeof **g.arrays);
        if (!g.arrays[i]) {
            fprintf(stderr, "larson: out of memory\n");
            return 1;
        }
    }
    pthread_barrier_init(&g.round_end, NULL, threads);
    for (unsigned i = 0; i < threads; i++) {
        workers[i].index = i;
        workers[i].rng = 0x9E3779B97F4A7C15ULL * (i + 1);
        int err = pthread_create(&workers[i].thread, NULL, run_worker, &workers[i]);
        if (err) {
            fprintf(stderr, "larson: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }
    uint64_t checksum = 0;
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        checksum += workers[i].checksum;
    }
    printf("larson: %lu threads, %lu steps, checksum %016" PRIx64 "\n", threads,
           g.steps_per_round * ROUNDS * threads, checksum);
    for (unsigned i = 0; i < threads; i++)
        free(g.arrays[i]);
    free(g.arrays);
    free(workers);
    return 0;
}
