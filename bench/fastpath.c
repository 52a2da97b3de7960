/*
 * bench/fastpath.c - the malloc family's fast path, for counting
 * instructions (bench/fastpath.sh runs it under callgrind).
 *
 *     fastpath STEPS
 *
 * Keeps 64 live blocks; each step frees one of them, chosen at random,
 * and allocates 16 to 271 bytes in its place: a thread freeing its own
 * small blocks, the case a thread cache is made for.  Two runs that
 * differ only in STEPS tell the cost of one free and one malloc, the
 * loop's own few instructions included.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define LIVE 64

int main(int argc, char **argv)
{
    long steps = argc > 1 ? atol(argv[1]) : 1000000;
    void *live[LIVE];
    uint32_t x = 12345;
    for (int i = 0; i < LIVE; i++)
        live[i] = malloc(16 + (size_t)i * 4);
    for (long k = 0; k < steps; k++) {
        x = x * 1664525u + 1013904223u;
        unsigned i = x >> 26, size = 16 + (x >> 8) % 256;
        free(live[i]);
        live[i] = malloc(size);
        if (!live[i]) {
            fprintf(stderr, "fastpath: out of memory\n");
            return 1;
        }
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
    return 0;
}
