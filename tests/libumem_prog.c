/*
 * libumem_prog - the programs tests/test_libumem.sh runs with and without
 * LD_PRELOAD=./libumem.so.  The first argument names one:
 *
 *   api            the malloc family behaves as glibc's does
 *   threads        many short threads; blocks freed after their thread ended
 *   fork           fork() while other threads allocate; the child allocates
 *   rss            the resident size falls once the memory is freed
 *   destructors    threads made before main, and pthread key destructors
 *                  that allocate after the allocator's own destructor ran
 *   touch          a few allocations, nothing printed (for UMEM_STATS)
 *   close-stderr   the same, then closes standard error, as GNU programs do
 *   reuse-fds FILE the same, then points every descriptor from 3 to 1023
 *                  at FILE, opened for writing
 *   free-stack     misuse: each prints the pointer it is about to pass to
 *   double-small   free, then does so; the allocator is expected to print
 *   double-medium  one line naming it and abort
 *   double-large
 *
 * Each test prints "ok - NAME" or "not ok - NAME".  With LIBUMEM=1 in the
 * environment, the first line says whether malloc is libumem's.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Sizes the compiler cannot see through, so that no call is folded away
 * (nor an odd alignment argued with). */
static volatile size_t huge = SIZE_MAX;
static volatile size_t half = SIZE_MAX / 2 + 1;

static size_t opaque(size_t x)
{
    volatile size_t v = x;
    return v;
}

/* A result the compiler must produce: an allocation whose only use is a
 * test against NULL may otherwise be assumed to succeed and left out. */
static void *volatile kept;
#define KEEP(call) (kept = (call), kept)

/* A sparse pattern that depends on the block's identity: every 256th
 * byte and the last, so that large blocks cost little to fill. */
static unsigned char pattern(unsigned tag, size_t i)
{
    return (unsigned char)(tag * 131u + i * 7u + i / 256);
}

static void fill(unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i += 256)
        p[i] = pattern(tag, i);
    if (n)
        p[n - 1] = pattern(tag, n - 1);
}

static int intact(const unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i += 256)
        if (p[i] != pattern(tag, i))
            return 0;
    return !n || p[n - 1] == pattern(tag, n - 1);
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Whether the malloc this program calls lives in a file named libumem.so. */
static int malloc_is_libumem(void)
{
    uintptr_t at = (uintptr_t)(void *)&malloc;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return 0;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && at >= lo && at < hi) {
            found = strstr(line, "/libumem.so\n") != NULL;
            break;
        }
    }
    fclose(f);
    return found;
}

static int libumem; /* LIBUMEM=1: running under libumem.so */

/* ---- api ---- */

static void malloc_zero_is_unique(void)
{
    void *a = malloc(0), *b = malloc(0);
    CHECK(a != NULL && b != NULL && a != b);
    free(a);
    free(b);
    free(NULL);
}

static void malloc_aligns_and_fits(void)
{
    static const size_t sizes[] = {
        1,      8,    15,   16,   17,    24,      100,
        1000,   1040, 1041, 4096, 65536, 1 << 20, (1 << 20) + 1,
        3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = malloc(sizes[i]);
        CHECK(p != NULL && (uintptr_t)p % 16 == 0);
        if (!p)
            continue;
        size_t usable = malloc_usable_size(p);
        CHECK(usable >= sizes[i]);
        memset(p, 0xee, usable);
        free(p);
    }
    CHECK(malloc_usable_size(NULL) == 0);
}

static void malloc_too_large_fails(void)
{
    errno = 0;
    CHECK(KEEP(malloc(huge)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(KEEP(malloc(huge / 2)) == NULL && errno == ENOMEM);
}

/* Blocks written and freed, then asked for again with calloc: whatever
 * comes back is zero, recycled or fresh. */
static void calloc_zeroes_recycled_blocks(void)
{
    static const size_t sizes[] = {1, 24, 100, 1000, 1040, 3000, 100000, 2 << 20};
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            void *dirty[16];
            for (int k = 0; k < 16; k++) {
                dirty[k] = malloc(sizes[i]);
                if (dirty[k])
                    memset(dirty[k], 0xa5, malloc_usable_size(dirty[k]));
            }
            for (int k = 0; k < 16; k++)
                free(dirty[k]);
            unsigned char *z[16];
            for (int k = 0; k < 16; k++) {
                z[k] = calloc(1, sizes[i]);
                CHECK(z[k] != NULL && all_zero(z[k], sizes[i]));
            }
            for (int k = 0; k < 16; k++)
                free(z[k]);
        }
    }
    unsigned char *p = calloc(1000, 3);
    CHECK(p != NULL && all_zero(p, 3000));
    free(p);
    void *a = calloc(0, 5), *b = calloc(5, 0);
    CHECK(a != NULL && b != NULL && a != b);
    free(a);
    free(b);
}

static void calloc_overflow_fails(void)
{
    errno = 0;
    CHECK(KEEP(calloc(half, 2)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(KEEP(calloc(huge / 3 + 1, 3)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(KEEP(calloc(huge / 2, 1)) == NULL && errno == ENOMEM);
}

/* Products that wrap to a size no smaller than either factor: an overflow
 * test of the form a * b < a takes them for sizes that fit (16 times
 * 2^60 + 1 wraps to 16). */
static void calloc_overflow_that_wraps_small_fails(void)
{
    size_t big = ((size_t)1 << (sizeof(size_t) * 8 - 4)) + 1;
    errno = 0;
    CHECK(KEEP(calloc(opaque(16), big)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(KEEP(calloc(big, opaque(16))) == NULL && errno == ENOMEM);
    void *p = malloc(100);
    CHECK(p != NULL);
    errno = 0;
    void *q = reallocarray(p, opaque(16), big);
    CHECK(q == NULL && errno == ENOMEM);
    free(q ? q : p); /* q: p moved or kept, wrongly */
}

/* Large blocks written and freed, then asked for again with calloc: a
 * mapping that served another block is not fresh from the system. */
static void calloc_zeroes_reused_mappings(void)
{
    static const size_t sizes[] = {(size_t)9 << 20, (size_t)16 << 20, (size_t)12 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = malloc(sizes[i]);
        CHECK(p != NULL);
        if (p)
            memset(p, 0xa5, sizes[i]);
        free(p);
        unsigned char *z = calloc(sizes[i], 1);
        CHECK(z != NULL && all_zero(z, sizes[i]));
        free(z);
    }
}

static void realloc_keeps_contents(void)
{
    unsigned char *p = realloc(NULL, 10);
    CHECK(p != NULL);
    if (!p)
        return;
    fill(p, 10, 1);
    static const size_t steps[] = {100,     1000,  5000, 50000, 3 << 20,
                                   5 << 20, 20000, 300,  7};
    size_t have = 10;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        size_t keep = have < steps[i] ? have : steps[i];
        unsigned char check[8];
        memcpy(check, p + keep - (keep < 8 ? keep : 8), keep < 8 ? keep : 8);
        unsigned char *q = realloc(p, steps[i]);
        CHECK(q != NULL);
        if (!q)
            break;
        CHECK(q[0] == pattern(1, 0) &&
              memcmp(q + keep - (keep < 8 ? keep : 8), check, keep < 8 ? keep : 8) == 0);
        CHECK(malloc_usable_size(q) >= steps[i]);
        memset(q + keep, 0x11, steps[i] - keep);
        q[0] = pattern(1, 0);
        p = q;
        have = steps[i];
    }
    CHECK(realloc(p, 0) == NULL); /* freed */
    void *z = realloc(NULL, 0);
    CHECK(z != NULL);
    free(z);
}


/* A large block shrunk to a small size gives its pages back. */
static void realloc_shrinks_large_blocks(void)
{
    size_t n = 64 << 20;
    unsigned char *p = malloc(n);
    CHECK(p != NULL);
    if (!p)
        return;
    memset(p, 0x3c, n);
    size_t before = check_resident_bytes();
    unsigned char *q = realloc(p, 100);
    size_t after = check_resident_bytes();
    CHECK(q != NULL && q[0] == 0x3c && q[99] == 0x3c);
    CHECK(q && malloc_usable_size(q) < (1 << 20));
    CHECK(after + (n / 2) < before);
    free(q ? q : p);
}

static void realloc_failure_keeps_block(void)
{
    unsigned char *p = malloc(100);
    CHECK(p != NULL);
    if (!p)
        return;
    fill(p, 100, 9);
    errno = 0;
    unsigned char *q = realloc(p, huge / 2);
    CHECK(q == NULL && errno == ENOMEM);
    if (q) {
        free(q);
        return;
    }
    errno = 0;
    q = reallocarray(p, half, 2);
    CHECK(q == NULL && errno == ENOMEM);
    if (q) {
        free(q);
        return;
    }
    CHECK(intact(p, 100, 9));
    q = reallocarray(p, 50, 4);
    CHECK(q != NULL && intact(q, 100, 9) && malloc_usable_size(q) >= 200);
    CHECK(reallocarray(q, 0, 4) == NULL); /* freed */
}

static void posix_memalign_checks_alignment(void)
{
    static const size_t bad[] = {0, 1, 3, 4, 12, 24, 100, 4095};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *p = &p;
        errno = 1234;
        CHECK(posix_memalign(&p, bad[i], 10) == EINVAL && errno == 1234 && p == &p);
    }
    /* Out of memory: ENOMEM, and in errno as well (glibc's behaviour,
     * which programs test). */
    void *p = NULL;
    errno = 1234;
    CHECK(posix_memalign(&p, 64, huge / 2) == ENOMEM && errno == ENOMEM && p == NULL);
}

static void posix_memalign_aligns(void)
{
    static const size_t sizes[] = {0,      1, 100, 5000, (1 << 20) - 40, (2 << 20) + 1,
                                   3 << 20};
    for (size_t align = sizeof(void *); align <= (2 << 20); align *= 2) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            void *p = NULL;
            errno = 1234;
            int r = posix_memalign(&p, align, sizes[i]);
            CHECK(r == 0 && p != NULL && (uintptr_t)p % align == 0 && errno == 1234);
            if (r != 0)
                continue;
            CHECK(malloc_usable_size(p) >= sizes[i]);
            memset(p, 0x77, sizes[i]); /* every byte asked for is there */
            free(p);
        }
    }
}

/* aligned_alloc at every power of two from 32 bytes to 2 MiB, for small,
 * medium and large sizes: two alignments alone may be met by chance. */
static void aligned_alloc_aligns(void)
{
    static const size_t sizes[] = {1, 100, 5000, (1 << 20) + 1, 9 << 20};
    for (size_t align = 32; align <= (2 << 20); align *= 2) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            unsigned char *p = aligned_alloc(align, sizes[i]);
            CHECK(p != NULL && (uintptr_t)p % align == 0);
            if (!p)
                continue;
            CHECK(malloc_usable_size(p) >= sizes[i]);
            p[0] = p[sizes[i] - 1] = 1;
            free(p);
        }
    }
}

static void other_aligned_allocators(void)
{
    size_t page = check_page_size();
    void *p = aligned_alloc(64, 100);
    CHECK(p != NULL && (uintptr_t)p % 64 == 0);
    free(p);
    p = aligned_alloc(4096, 3 << 20);
    CHECK(p != NULL && (uintptr_t)p % 4096 == 0);
    free(p);
    p = memalign(opaque(24), 100); /* rounded up to 32 */
    CHECK(p != NULL && (uintptr_t)p % 32 == 0);
    free(p);
    p = memalign(opaque(0), 10);
    CHECK(p != NULL);
    free(p);
    errno = 0;
    CHECK(KEEP(memalign(huge, 10)) == NULL && errno == EINVAL);
    p = valloc(10);
    CHECK(p != NULL && (uintptr_t)p % page == 0);
    free(p);
    p = pvalloc(page + 1);
    CHECK(p != NULL && (uintptr_t)p % page == 0 && malloc_usable_size(p) >= 2 * page);
    if (p)
        memset(p, 1, 2 * page);
    free(p);
    errno = 0;
    CHECK(KEEP(pvalloc(huge)) == NULL && errno == ENOMEM);
}

/* C17 (and glibc since 2.38): an alignment that is not a power of two is
 * an error.  Older glibc rounds it up, so this runs under libumem only. */
static void aligned_alloc_refuses_bad_alignment(void)
{
    errno = 0;
    CHECK(KEEP(aligned_alloc(opaque(3), 100)) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(KEEP(aligned_alloc(opaque(0), 100)) == NULL && errno == EINVAL);
}

/* The C library allocates on the program's behalf, and the program
 * frees what it got. */
static void libc_allocations_free(void)
{
    char *s = strdup("umem");
    CHECK(s != NULL && strcmp(s, "umem") == 0);
    free(s);
    char *line = NULL;
    CHECK(asprintf(&line, "%d-%s", 42, "x") == 4 && strcmp(line, "42-x") == 0);
    free(line);
    FILE *f = fopen("/proc/self/stat", "r");
    CHECK(f != NULL);
    if (f) {
        char *buf = NULL;
        size_t cap = 0;
        CHECK(getline(&buf, &cap, f) > 0);
        free(buf);
        fclose(f);
    }
}

static int api(void)
{
    RUN(malloc_zero_is_unique);
    RUN(malloc_aligns_and_fits);
    RUN(malloc_too_large_fails);
    RUN(calloc_zeroes_recycled_blocks);
    RUN(calloc_overflow_fails);
    RUN(calloc_overflow_that_wraps_small_fails);
    RUN(calloc_zeroes_reused_mappings);
    RUN(realloc_keeps_contents);
    RUN(realloc_shrinks_large_blocks);
    RUN(realloc_failure_keeps_block);
    RUN(posix_memalign_checks_alignment);
    RUN(posix_memalign_aligns);
    RUN(aligned_alloc_aligns);
    RUN(other_aligned_allocators);
    if (libumem)
        RUN(aligned_alloc_refuses_bad_alignment);
    RUN(libc_allocations_free);
    return CHECK_EXIT_STATUS();
}

/* ---- threads ---- */

enum { ROUNDS = 8, WORKERS = 16, BLOCKS = 2000, HANDED = BLOCKS / 4 };

struct handoff {
    unsigned char *p[HANDED];
    size_t n[HANDED];
    unsigned tag[HANDED];
};

static struct handoff handoffs[2][WORKERS]; /* by round parity */
static atomic_int thread_failures;

struct worker {
    int round, id;
};

/* Mostly small sizes; one in `large` needs a mapping of its own. */
static size_t random_size_1_in(unsigned long long *seed, unsigned large)
{
    unsigned long long r = check_rand(seed);
    if (r % large == 0)
        return (size_t)(1 << 20) + r % 300000; /* a mapping of its own */
    if (r % 10 == 0)
        return 1 + (r >> 8) % 20000;
    return 1 + (r >> 8) % 1100;
}

static size_t random_size(unsigned long long *seed)
{
    return random_size_1_in(seed, 100);
}

/* Frees what a thread of the last round handed over (it has ended), then
 * allocates, frees three blocks in four and hands the rest over. */
static void *worker_run(void *arg)
{
    const struct worker *w = arg;
    struct handoff *old = &handoffs[(w->round + 1) % 2][w->id];
    for (int i = 0; i < HANDED; i++) {
        if (!old->p[i])
            continue;
        if (!intact(old->p[i], old->n[i], old->tag[i]))
            atomic_fetch_add(&thread_failures, 1);
        free(old->p[i]);
        old->p[i] = NULL;
    }
    unsigned long long seed =
        0x7e5700ull + (unsigned long long)(w->round * WORKERS + w->id);
    unsigned char *mine[BLOCKS];
    size_t len[BLOCKS];
    struct handoff *out = &handoffs[w->round % 2][w->id];
    int handed = 0;
    for (int i = 0; i < BLOCKS; i++) {
        len[i] = random_size(&seed);
        mine[i] = malloc(len[i]);
        if (!mine[i]) {
            atomic_fetch_add(&thread_failures, 1);
            continue;
        }
        fill(mine[i], len[i], (unsigned)(w->id * BLOCKS + i));
    }
    for (int i = 0; i < BLOCKS; i++) {
        if (!mine[i])
            continue;
        unsigned tag = (unsigned)(w->id * BLOCKS + i);
        if (!intact(mine[i], len[i], tag))
            atomic_fetch_add(&thread_failures, 1);
        if (i % 4 == 0 && handed < HANDED) {
            out->p[handed] = mine[i];
            out->n[handed] = len[i];
            out->tag[handed] = tag;
            handed++;
        } else {
            free(mine[i]);
        }
    }
    return NULL;
}

static void threads_that_exit(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t t[WORKERS];
        struct worker w[WORKERS];
        int started = 0;
        for (int i = 0; i < WORKERS; i++) {
            w[i] = (struct worker){round, i};
            if (pthread_create(&t[i], NULL, worker_run, &w[i]) != 0)
                break;
            started++;
        }
        CHECK(started == WORKERS);
        for (int i = 0; i < started; i++)
            pthread_join(t[i], NULL);
    }
    /* The last round's blocks, freed by the main thread. */
    for (int i = 0; i < WORKERS; i++) {
        struct handoff *h = &handoffs[(ROUNDS - 1) % 2][i];
        for (int k = 0; k < HANDED; k++) {
            if (h->p[k] && !intact(h->p[k], h->n[k], h->tag[k]))
                atomic_fetch_add(&thread_failures, 1);
            free(h->p[k]);
            h->p[k] = NULL;
        }
    }
    CHECK(atomic_load(&thread_failures) == 0);
}

/* ---- fork ---- */

static atomic_int stop_churn;

/* Allocates and frees until told to stop, checking every block. */
static void *churn(void *arg)
{
    unsigned long long seed = 0xc4u + (uintptr_t)arg;
    enum { LIVE = 64 };
    unsigned char *p[LIVE] = {0};
    size_t n[LIVE] = {0};
    while (!atomic_load_explicit(&stop_churn, memory_order_relaxed)) {
        unsigned s = (unsigned)(check_rand(&seed) % LIVE);
        if (p[s]) {
            if (!intact(p[s], n[s], s))
                atomic_fetch_add(&thread_failures, 1);
            free(p[s]);
            p[s] = NULL;
        } else {
            n[s] = random_size_1_in(&seed, 1000);
            p[s] = malloc(n[s]);
            if (p[s])
                fill(p[s], n[s], s);
        }
    }
    for (int s = 0; s < LIVE; s++)
        free(p[s]);
    return NULL;
}

/* What a child does: allocation of every kind, in two threads. */
static void *child_work(void *arg)
{
    unsigned long long seed = 0xf0f0u + (uintptr_t)arg;
    enum { LIVE = 256 };
    unsigned char *p[LIVE] = {0};
    size_t n[LIVE] = {0};
    intptr_t bad = 0;
    for (int op = 0; op < 10000; op++) {
        unsigned s = (unsigned)(check_rand(&seed) % LIVE);
        if (p[s]) {
            bad += !intact(p[s], n[s], s);
            free(p[s]);
            p[s] = NULL;
        } else if (op % 3 == 0) {
            n[s] = random_size(&seed);
            p[s] = calloc(1, n[s]);
            bad += !p[s] || !all_zero(p[s], n[s] < 4096 ? n[s] : 4096);
            if (p[s])
                fill(p[s], n[s], s);
        } else {
            n[s] = random_size(&seed);
            p[s] = malloc(n[s]);
            bad += !p[s];
            if (p[s])
                fill(p[s], n[s], s);
        }
    }
    for (int s = 0; s < LIVE; s++) {
        if (p[s])
            bad += !intact(p[s], n[s], s);
        free(p[s]);
    }
    return (void *)bad;
}

static int child_main(int i)
{
    pthread_t t;
    if (pthread_create(&t, NULL, child_work, (void *)(uintptr_t)(i + 1)) != 0)
        return 2;
    void *mine = child_work((void *)(uintptr_t)(i + 1000));
    void *theirs;
    pthread_join(t, &theirs);
    return mine || theirs ? 3 : 0;
}

static void fork_while_threads_allocate(void)
{
    enum { CHURNERS = 4, FORKS = 24 };
    pthread_t t[CHURNERS];
    int started = 0;
    for (int i = 0; i < CHURNERS; i++)
        if (pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)i) == 0)
            started++;
    CHECK(started == CHURNERS);
    int children_ok = 0;
    for (int i = 0; i < FORKS; i++) {
        fflush(NULL);
        pid_t pid = check_fork();
        if (pid == 0)
            exit(child_main(i));
        CHECK(pid > 0);
        if (pid < 0)
            continue;
        int status;
        if (check_wait(pid, &status) == pid && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0)
            children_ok++;
        else
            fprintf(stderr, "child %d: status %#x\n", i, status);
    }
    CHECK(children_ok == FORKS);
    atomic_store(&stop_churn, 1);
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&thread_failures) == 0);
}

/* ---- rss ---- */

/* Calls on the heap, a little apart, until the resident size is under
 * `limit` or 60 s have passed (umem gives free pages back once they have
 * stayed unused for its purge delay, on a call that finds it due; glibc
 * at the free): the resident size at the end. */
static size_t resident_falls(size_t limit)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    size_t resident;
    while ((resident = check_resident_bytes()) >= limit) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 60)
            break;
        struct timespec nap = {0, 20 * 1000000};
        nanosleep(&nap, NULL);
        for (int i = 0; i < 64; i++)
            free(malloc(100000));
    }
    return resident;
}

/* About 200 MiB in small, medium and large blocks, freed in random
 * order: the resident size must fall below half of its peak, and a
 * second and third cycle must not climb above the first. */
static void resident_size_follows_use(void)
{
    enum { SMALL = 160000, MEDIUM = 2000, LARGE = 40 };
    enum { COUNT = SMALL + MEDIUM + LARGE };
    unsigned char **p = calloc(COUNT, sizeof *p);
    size_t *n = calloc(COUNT, sizeof *n);
    unsigned *order = calloc(COUNT, sizeof *order);
    CHECK(p && n && order);
    if (!p || !n || !order)
        return;
    unsigned long long seed = 0x255u;
    size_t base = check_resident_bytes(), first_peak = 0;
    for (int cycle = 0; cycle < 3; cycle++) {
        size_t total = 0;
        for (unsigned i = 0; i < COUNT; i++) {
            unsigned long long r = check_rand(&seed);
            n[i] = i < SMALL            ? 16 + r % 1000
                   : i < SMALL + MEDIUM ? 2000 + r % 30000
                                        : 2 << 20;
            p[i] = malloc(n[i]);
            CHECK(p[i] != NULL);
            if (p[i])
                memset(p[i], (int)i, n[i]);
            total += n[i];
            order[i] = i;
        }
        size_t peak = check_resident_bytes();
        for (unsigned i = COUNT - 1; i > 0; i--) {
            unsigned j = (unsigned)(check_rand(&seed) % (i + 1));
            unsigned k = order[i];
            order[i] = order[j];
            order[j] = k;
        }
        unsigned changed = 0;
        for (unsigned i = 0; i < COUNT; i++) {
            unsigned k = order[i];
            if (p[k] &&
                (p[k][0] != (unsigned char)k || p[k][n[k] - 1] != (unsigned char)k))
                changed++;
            free(p[k]);
        }
        CHECK(changed == 0);
        size_t after = resident_falls(base + (peak - base) / 2);
        fprintf(stderr,
                "cycle %d: %zu MiB allocated, resident %zu MiB before, %zu MiB peak, "
                "%zu MiB after\n",
                cycle, total >> 20, base >> 20, peak >> 20, after >> 20);
        CHECK(total > (200u << 20) - (20u << 20) && peak > base + total / 2);
        CHECK(after < base + (peak - base) / 2);
        if (cycle == 0)
            first_peak = peak;
        else
            CHECK(peak <= first_peak + first_peak / 8);
    }
    free(p);
    free(n);
    free(order);
}

/* ---- destructors ---- */

static atomic_int early_result = -1;
static pthread_t early_thread;

static void *early_run(void *arg)
{
    (void)arg;
    unsigned long long seed = 0xea21u;
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = random_size(&seed);
        unsigned char *p = malloc(n);
        if (!p) {
            bad++;
            continue;
        }
        fill(p, n, (unsigned)i);
        bad += !intact(p, n, (unsigned)i);
        free(p);
    }
    atomic_store(&early_result, bad);
    return NULL;
}

/* A thread made before main, while the C library and other constructors
 * may still be starting; main joins it before anything else. */
__attribute__((constructor)) static void start_early_thread(void)
{
    if (pthread_create(&early_thread, NULL, early_run, NULL) != 0)
        atomic_store(&early_result, 1000);
}

static void join_early_thread(void)
{
    if (atomic_load(&early_result) != 1000)
        pthread_join(early_thread, NULL);
}

static void thread_made_before_main(void)
{
    CHECK(atomic_load(&early_result) == 0);
}

/* Each value of this key is a block; its destructor checks and frees it
 * and allocates, frees and reallocates more, then sets a new value so
 * that it runs again in the next round, after every other destructor of
 * the thread, the allocator's own included. */
static pthread_key_t late_key;
static atomic_int late_calls, late_failures;
enum { LATE_ROUNDS = 3 };

struct late {
    int round;
    unsigned char *keep; /* allocated before the thread ended */
    size_t keep_n;
};

static void late_destructor(void *arg)
{
    struct late *l = arg;
    atomic_fetch_add(&late_calls, 1);
    int bad = 0;
    if (l->keep && !intact(l->keep, l->keep_n, 77))
        bad++;
    free(l->keep);
    for (int i = 0; i < 200; i++) {
        size_t n = 1 + (size_t)i * 37 % 5000;
        unsigned char *p = malloc(n);
        bad += !p;
        if (!p)
            continue;
        fill(p, n, (unsigned)i);
        unsigned char *q = realloc(p, n * 2);
        bad += !q || !intact(q, n, (unsigned)i);
        free(q ? q : p);
        unsigned char *z = calloc(n, 1);
        bad += !z || !all_zero(z, n);
        free(z);
    }
    if (bad)
        atomic_fetch_add(&late_failures, bad);
    int round = l->round + 1;
    free(l);
    if (round >= LATE_ROUNDS)
        return;
    struct late *next = malloc(sizeof *next);
    unsigned char *keep = malloc(3000);
    if (!next || !keep) {
        atomic_fetch_add(&late_failures, 1);
        free(next);
        free(keep);
        return;
    }
    fill(keep, 3000, 77);
    *next = (struct late){round, keep, 3000};
    pthread_setspecific(late_key, next);
}

static void *late_run(void *arg)
{
    (void)arg;
    /* Blocks in this thread's cache, then the key's first value. */
    void *warm[64];
    for (int i = 0; i < 64; i++)
        warm[i] = malloc((size_t)(16 + i * 16));
    for (int i = 0; i < 64; i++)
        free(warm[i]);
    struct late *l = malloc(sizeof *l);
    unsigned char *keep = malloc(500);
    if (!l || !keep) {
        atomic_fetch_add(&late_failures, 1);
        return NULL;
    }
    fill(keep, 500, 77);
    *l = (struct late){0, keep, 500};
    pthread_setspecific(late_key, l);
    return NULL;
}

static void key_destructors_allocate(void)
{
    enum { THREADS = 8 };
    CHECK(pthread_key_create(&late_key, late_destructor) == 0);
    pthread_t t[THREADS];
    int started = 0;
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, late_run, NULL) == 0)
            started++;
    CHECK(started == THREADS);
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&late_calls) == started * LATE_ROUNDS);
    CHECK(atomic_load(&late_failures) == 0);
}

/* ---- misuse ---- */

/* The pointer is printed first, so that stdout's buffer is not what a
 * later allocation reuses the freed block for. */
static int misuse(const char *what)
{
    char stack[64];
    char *p = stack + 16;
    size_t n = 0;
    if (strcmp(what, "free-stack") != 0) {
        n = strcmp(what, "double-small") == 0    ? 40
            : strcmp(what, "double-medium") == 0 ? 4000
                                                 : 3 << 20;
        p = malloc(n);
        if (!p)
            return 2;
        memset(p, 1, n);
    }
    printf("%p\n", (void *)p);
    fflush(stdout);
    void *volatile target = p; /* the compiler must not see the misuse */
    if (n)
        free(target);
    free(target);
    return 0; /* not reached when the allocator catches it */
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    const char *env = getenv("LIBUMEM");
    libumem = env && strcmp(env, "1") == 0;
    join_early_thread();
    if (libumem && (strcmp(mode, "api") == 0 || strcmp(mode, "threads") == 0 ||
                    strcmp(mode, "fork") == 0 || strcmp(mode, "rss") == 0 ||
                    strcmp(mode, "destructors") == 0))
        printf("%s - malloc is libumem's (%s)\n", malloc_is_libumem() ? "ok" : "not ok",
               mode);
    if (strcmp(mode, "api") == 0)
        return api();
    if (strcmp(mode, "threads") == 0) {
        RUN(threads_that_exit);
        return CHECK_EXIT_STATUS();
    }
    if (strcmp(mode, "fork") == 0) {
        RUN(fork_while_threads_allocate);
        return CHECK_EXIT_STATUS();
    }
    if (strcmp(mode, "rss") == 0) {
        RUN(resident_size_follows_use);
        return CHECK_EXIT_STATUS();
    }
    if (strcmp(mode, "destructors") == 0) {
        RUN(thread_made_before_main);
        RUN(key_destructors_allocate);
        return CHECK_EXIT_STATUS();
    }
    if (strcmp(mode, "touch") == 0 || strcmp(mode, "close-stderr") == 0 ||
        strcmp(mode, "reuse-fds") == 0) {
        for (int i = 0; i < 100; i++) {
            void *volatile p = malloc((size_t)i * 100);
            free(p);
        }
        if (strcmp(mode, "close-stderr") == 0)
            return fclose(stderr) == 0 ? 0 : 3;
        if (strcmp(mode, "reuse-fds") == 0) {
            int fd = argc > 2 ? open(argv[2], O_WRONLY) : -1;
            if (fd < 0)
                return 3;
            for (int other = 3; other < 1024; other++)
                if (other != fd)
                    dup2(fd, other);
        }
        return 0;
    }
    if (strcmp(mode, "free-stack") == 0 || strncmp(mode, "double-", 7) == 0)
        return misuse(mode);
    fprintf(stderr,
            "usage: libumem_prog api|threads|fork|rss|destructors|touch|close-stderr|"
            "reuse-fds FILE|free-stack|double-small|double-medium|double-large\n");
    return 2;
}
