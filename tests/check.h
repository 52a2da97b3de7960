/*
 * check.h - the smallest test harness that does the job.
 *
 * A test is a function; RUN(fn) runs it, under a time limit, and prints
 * "ok - fn" or "not ok - fn" (the format tests/run.sh counts), and CHECK
 * records a failed condition with its line without stopping the test.
 */
#ifndef CHECK_H
#define CHECK_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_failures; /* failed CHECKs in the running test */
static int check_failed_tests;

/* Each test has a time limit, CHECK_TIME_LIMIT seconds (600 by default,
 * for valgrind's pace): a test that hangs is a "not ok" line naming it,
 * and the run goes on to the next program instead of hanging. */
static const char *volatile check_running;
static volatile pid_t check_runner; /* the process whose test is timed */

static void check_timed_out(int sig)
{
    (void)sig;
    if (getpid() != check_runner)
        _exit(1); /* a test's child: its test sees it fail */
    static const char head[] = "not ok - ", tail[] = " (no result within its time limit: a hang?)\n";
    const char *name = check_running ? check_running : "?";
    ssize_t w = write(1, head, sizeof head - 1);
    w = write(1, name, strlen(name));
    w = write(1, tail, sizeof tail - 1);
    (void)w;
    _exit(1);
}

static inline unsigned check_time_limit(void)
{
    const char *v = getenv("CHECK_TIME_LIMIT");
    long s = v ? atol(v) : 0;
    return s > 0 ? (unsigned)s : 600u;
}

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
        check_running = #fn;                                        \
        check_runner = getpid();                                    \
        signal(SIGALRM, check_timed_out);                           \
        alarm(check_time_limit());                                  \
        fn();                                                       \
        alarm(0);                                                   \
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
