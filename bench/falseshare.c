/*
 * falseshare - active false sharing, after the cache-thrash test of the
 * Hoard benchmarks (Berger et al., ASPLOS 2000): every thread allocates a
 * small object, writes to it many times, frees it, and starts again.  No
 * thread ever touches another's object, so an allocator that keeps each
 * thread's objects apart costs nothing here; one that hands neighbouring
 * objects to different threads puts them on one cache line, and every
 * write then takes that line from the other core.
 *
 *   falseshare THREADS [OBJECTS [SIZE [WRITES]]]
 *
 * OBJECTS (default 1,000,000) is the total, split evenly across the
 * threads; each object is SIZE bytes (default 8) and each of its bytes is
 * written WRITES times (default 500).  The threads start together, behind
 * a barrier.  Only malloc and free are called, so any allocator can be
 * preloaded.  stdout gets one line: a checksum of what was written, the
 * same under every allocator for the same arguments.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

enum { MAX_THREADS = 256 };

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t checksum; /* written by this worker only */
};

/* Set by main before the threads start, then only read. */
static struct {
    unsigned long objects; /* per thread */
    size_t size;
    unsigned long writes;
    pthread_barrier_t start;
} g;

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(&g.start);
    for (unsigned long n = 0; n < g.objects; n++) {
        volatile unsigned char *obj = malloc(g.size);
        if (!obj) {
            fprintf(stderr, "falseshare: malloc(%zu) failed\n", g.size);
            exit(1);
        }
        for (unsigned long r = 0; r < g.writes; r++)
            for (size_t i = 0; i < g.size; i++)
                obj[i] = (unsigned char)(r + i + w->index);
        for (size_t i = 0; i < g.size; i++)
            w->checksum = w->checksum * 31 + obj[i];
        free((void *)obj);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned long threads, objects = 1000000, size = 8, writes = 500;
    if (argc < 2 || argc > 5 || bench_parse(argv[1], 1, MAX_THREADS, &threads) ||
        (argc > 2 && bench_parse(argv[2], 1, 1UL << 40, &objects)) ||
        (argc > 3 && bench_parse(argv[3], 1, 1UL << 20, &size)) ||
        (argc > 4 && bench_parse(argv[4], 1, 1UL << 30, &writes))) {
        fprintf(stderr, "usage: falseshare THREADS(1-%d) [OBJECTS [SIZE [WRITES]]]\n",
                MAX_THREADS);
        return 2;
    }
    g.objects = objects / threads;
    g.size = size;
    g.writes = writes;
    struct worker *workers = calloc(threads, sizeof *workers);
    if (!workers) {
        fprintf(stderr, "falseshare: out of memory\n");
        return 1;
    }
    pthread_barrier_init(&g.start, NULL, threads);
    for (unsigned i = 0; i < threads; i++) {
        workers[i].index = i;
        int err = pthread_create(&workers[i].thread, NULL, run_worker, &workers[i]);
        if (err) {
            fprintf(stderr, "falseshare: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }
    uint64_t checksum = 0;
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        checksum = checksum * 1000003 + workers[i].checksum;
    }
    printf("falseshare: %lu threads, %lu objects of %zu bytes, checksum %016" PRIx64 "\n",
           threads, g.objects * threads, g.size, checksum);
    free(workers);
    return 0;
}
