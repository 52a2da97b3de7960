/*
 * bench.h - what the benchmark's workloads share: a fixed-seed random
 * generator, so that every allocator sees the same requests, the parsing
 * of their numeric arguments, a monotonic clock for the programs that
 * report a throughput, and a pattern written into a block and checked
 * before it is freed.
 *
 * A program that reports a throughput prints it on its result line as
 * "N ops/s"; bench/preload.sh takes that figure and leaves it out when it
 * compares the line with glibc's.  Include this after defining
 * _POSIX_C_SOURCE (for clock_gettime).
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* A number from 0 to n - 1 (n > 0), from the generator's upper bits. */
static inline uint64_t bench_below(uint64_t *state, uint64_t n)
{
    return (bench_rand(state) >> 16) % n;
}

/* One numeric argument: its name in the usage line, its bounds, and where
 * it goes (which holds its default when it is optional). */
struct bench_arg {
    const char *name;
    unsigned long lo, hi;
    unsigned long *value;
};

/* Parses argv[1] .. argv[argc - 1] into args[0] .. args[n - 1]: the first
 * is required, the rest optional.  On a missing, extra or bad argument
 * prints the usage line to stderr and returns -1; otherwise 0. */
static inline int bench_args(int argc, char **argv, const char *prog,
                             const struct bench_arg *args, int n)
{
    int ok = argc >= 2 && argc <= n + 1;
    for (int i = 1; ok && i < argc; i++)
        ok = !bench_parse(argv[i], args[i - 1].lo, args[i - 1].hi, args[i - 1].value);
    if (ok)
        return 0;
    fprintf(stderr, "usage: %s %s(%lu-%lu)", prog, args[0].name, args[0].lo, args[0].hi);
    for (int i = 1; i < n; i++)
        fprintf(stderr, " [%s", args[i].name);
    for (int i = 1; i < n; i++)
        fputc(']', stderr);
    fputc('\n', stderr);
    return -1;
}

/* Seconds on the monotonic clock, for a throughput. */
static inline double bench_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

enum { BENCH_PAGE = 4096 };

static inline uint64_t bench_page_word(uint64_t tag, size_t page)
{
    return (tag ^ page) * 0x100000001B3ULL;
}

/* The pattern of a block of size bytes (at least 16): tag in its first 8
 * bytes, ~tag in its last 8 and, in between, a word at every BENCH_PAGE
 * bytes from its start, so that every page of the block is written. */
static inline void bench_fill(unsigned char *p, size_t size, uint64_t tag)
{
    uint64_t tail = ~tag;
    memcpy(p, &tag, sizeof tag);
    for (size_t off = BENCH_PAGE; off + 16 <= size; off += BENCH_PAGE) {
        uint64_t w = bench_page_word(tag, off / BENCH_PAGE);
        memcpy(p + off, &w, sizeof w);
    }
    memcpy(p + size - sizeof tail, &tail, sizeof tail);
}

/* Checks bench_fill's pattern and adds what it read to *sum: 0 if the
 * pattern is whole, -1 if any word of it was overwritten. */
static inline int bench_check(const unsigned char *p, size_t size, uint64_t tag,
                              uint64_t *sum)
{
    uint64_t head, tail, acc = size;
    memcpy(&head, p, sizeof head);
    memcpy(&tail, p + size - sizeof tail, sizeof tail);
    int bad = head != tag || tail != ~tag;
    for (size_t off = BENCH_PAGE; off + 16 <= size; off += BENCH_PAGE) {
        uint64_t w;
        memcpy(&w, p + off, sizeof w);
        bad |= w != bench_page_word(tag, off / BENCH_PAGE);
        acc += w;
    }
    *sum += (acc ^ head) * 31 + tail;
    return bad ? -1 : 0;
}

#endif
