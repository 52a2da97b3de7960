/*
 * bench/threadchurn.c - a thread's start and end, for counting
 * instructions (bench/fastpath.sh runs it under callgrind).
 *
 *     threadchurn THREADS
 *
 * Starts THREADS threads one after another; each allocates one block of
 * 64 to 568 bytes, which it leaves to the main thread, and ends: the
 * cost of a thread's first allocation and of its exit, as in a server
 * that starts a thread per request.  Two runs that differ only in THREADS
 * tell the cost of one thread, the C library's own included.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *run(void *arg)
{
    void **slot = arg;
    *slot = malloc(64 + ((size_t)(uintptr_t)slot & 511));
    return NULL;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000;
    void **kept = calloc((size_t)(n > 0 ? n : 1), sizeof *kept);
    if (!kept) {
        fprintf(stderr, "threadchurn: out of memory\n");
        return 1;
    }
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, run, &kept[i]) != 0) {
            fprintf(stderr, "threadchurn: cannot make a thread\n");
            return 1;
        }
        pthread_join(t, NULL);
    }
    for (long i = 0; i < n; i++)
        free(kept[i]);
    free(kept);
    return 0;
}
