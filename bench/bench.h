/*
 * bench.h - what the benchmark's workloads share: a fixed-seed random
 * generator, so that every allocator sees the same requests, and the
 * parsing of their numeric arguments.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdint.h>
#include <stdlib.h>

/* xorshift64*: a state that is never 0 gives a long, repeatable stream. */
static inline uint64_t bench_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A decimal number from lo to hi into *out: 0, or -1 if s is not one. */
static inline int bench_parse(const char *s, unsigned long lo, unsigned long hi,
                              unsigned long *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

#endif
