/*
 * check.h - the smallest test harness that does the job.
 *
 * A test is a function; RUN(fn) runs it and prints "ok - fn" or
 * "not ok - fn" (the format tests/run.sh counts), and CHECK records a
 * failed condition with its line without stopping the test.
 */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>

static int check_failures; /* failed CHECKs in the running test */
static int check_failed_tests;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                        \
        }                                                                            \
    } while (0)

#define RUN(fn)                                                     \
    do {                                                            \
        check_failures = 0;                                         \
        fn();                                                       \
        printf("%s - %s\n", check_failures ? "not ok" : "ok", #fn); \
        fflush(stdout);                                             \
        check_failed_tests += check_failures != 0;                  \
    } while (0)

#define CHECK_EXIT_STATUS() (check_failed_tests ? 1 : 0)

/* xorshift64*: a fixed seed makes every randomized test reproducible. */
static inline unsigned long long check_rand(unsigned long long *state)
{
    unsigned long long x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif
