/*
 * randpat - the random allocation pattern, for the benchmark.  Each of T
 * threads fills an array of L live blocks, then for S steps frees the block
 * at a random index and allocates a new one of 16 to 515 bytes in its place.
 *
 *     randpat BACKEND LIVE THREADS [STEPS]
 *     randpat --list        the backends this build offers, one a line
 *
 * BACKEND
 *   malloc        malloc and free: the C library's, or the allocator that
 *                 LD_PRELOAD puts in front of it;
 *   umem-nolock   a UMEM_NOLOCK heap for each thread;
 *   umem-locked   one locked heap shared by all the threads;
 *   umem-cached   one UMEM_CACHED heap shared by all the threads (only when
 *                 umem.h defines UMEM_CACHED).
 *   Where umem.h defines UMEM_GROW, a heap starts at 1 MiB and grows;
 *   otherwise it is fixed at 1200 bytes for each live block it serves
 *   (over twice the largest request) plus 16 MiB.
 * LIVE     live blocks per thread (a K suffix multiplies by 1024).
 * THREADS  threads, 1 to 256; the main thread is the first of them.
 * STEPS    steps per thread (default 4000000 / THREADS).
 *
 * Output, one line on stdout:
 *
 *     ns_per_step 23.4 maxrss_kb 5120
 *
 * ns_per_step is W / STEPS, where W is the wall-clock time from the
 * threads' leaving a common barrier to the moment the last of them has
 * finished its STEPS steps.  With T threads working at once it is the time
 * of one step per thread: T threads that each take 40 ns a step, all in
 * parallel on T cores, print 40, and print 80 when they share half as many
 * cores.  Before the barrier each thread fills its live set and takes
 * 4 * LIVE untimed steps, after which about 2% of the blocks from the fill
 * are left: the fresh heap has become the fragmented one the pattern keeps,
 * and the timed steps see its steady state.  Checking the live sets and
 * freeing them after the steps are not timed either.  maxrss_kb is
 * the process's peak resident set (getrusage ru_maxrss): the allocator's
 * memory plus the program itself and its arrays of live blocks (16 bytes a
 * block, the same for every backend).
 *
 * Every new block gets a tag byte at its start and another at its end, and
 * after the last step both bytes of every live block are checked, so blocks
 * that an allocator handed out overlapping are caught: the run then exits 1
 * with a message.  Nothing is read back during the steps: a read of the
 * block being freed would cost an allocator that keeps its metadata apart
 * from the blocks a cache miss it does not otherwise pay.
 * Exit status: 0 success, 2 usage error, 1 anything else.
 *
 * Each thread draws from its own xorshift64* generator, seeded from the
 * thread's number alone, so every run makes the same requests.
 */
#include "../umem.h"

#include <limits.h>
#include <sys/resource.h>
#include "bench.h"

enum backend { B_MALLOC, B_UMEM_NOLOCK, B_UMEM_LOCKED, B_UMEM_CACHED };

static const char *const backend_names[] = {"malloc", "umem-nolock", "umem-locked",
                                            "umem-cached"};

enum {
    MIN_SIZE = 16,   /* smallest request */
    SIZE_SPAN = 500, /* requests are MIN_SIZE to MIN_SIZE + SIZE_SPAN - 1 */
    MAX_THREADS = 256,
    WARMUP_ROUNDS = 4, /* untimed steps before the timed ones, per live block */
    DEFAULT_TOTAL_STEPS = 4000000,
};

#ifdef UMEM_CACHED
#define HAVE_CACHED 1
#else
#define HAVE_CACHED 0
#endif

/* A live block: where it is, the size asked for, and its tag. */
struct slot {
    unsigned char *p;
    uint32_t n;
    unsigned char tag;
};

/* One thread's state: set up by main, then written by that thread only
 * until main reads the results after the join. */
struct worker {
    int index;
    umem_t *heap; /* NULL: malloc and free */
    size_t live;
    uint64_t steps;
    struct slot *slots;
    pthread_barrier_t *start, *done;
    struct timespec t0, t1; /* around the steady-state steps */
    uint64_t bad_tags;      /* tag bytes found changed */
    size_t failed_size;     /* a request that failed, 0 if none did */
};

/* A fixed, distinct, non-zero seed for each thread (splitmix64). */
static uint64_t rng_seed(int thread)
{
    uint64_t z = (uint64_t)(thread + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 1;
}

static inline void *block_alloc(umem_t *heap, size_t n)
{
    return heap ? umem_alloc(heap, n) : malloc(n);
}

static inline void block_free(umem_t *heap, void *p)
{
    if (heap)
        umem_free(heap, p);
    else
        free(p);
}

/* The request of one draw: the top half picks the index (in the caller),
 * the bottom half the size, and the lowest byte the tag. */
static inline uint32_t size_of_draw(uint64_t r)
{
    return MIN_SIZE + (uint32_t)(((r & 0xffffffffu) * SIZE_SPAN) >> 32);
}

static inline int fill_slot(umem_t *heap, struct slot *s, uint64_t r)
{
    uint32_t n = size_of_draw(r);
    unsigned char *p = block_alloc(heap, n);
    if (!p)
        return -1;
    s->p = p;
    s->n = n;
    s->tag = (unsigned char)r;
    p[0] = s->tag;
    p[n - 1] = (unsigned char)~s->tag;
    return 0;
}

/* `steps` steps of the pattern, unless an allocation fails. */
static inline void run_steps(struct worker *w, uint64_t *rng, uint64_t steps)
{
    size_t live = w->live;
    umem_t *heap = w->heap;
    struct slot *slots = w->slots;
    if (w->failed_size)
        return;
    for (uint64_t i = 0; i < steps; i++) {
        uint64_t r = bench_rand(rng);
        struct slot *s = &slots[(size_t)(((r >> 32) * live) >> 32)];
        block_free(heap, s->p);
        if (fill_slot(heap, s, r) != 0) {
            w->failed_size = size_of_draw(r);
            s->p = NULL;
            return;
        }
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = rng_seed(w->index);
    size_t live = w->live;
    umem_t *heap = w->heap;
    struct slot *slots = w->slots;
    size_t filled = 0;
    for (; filled < live; filled++) {
        uint64_t r = bench_rand(&rng);
        if (fill_slot(heap, &slots[filled], r) != 0) {
            w->failed_size = size_of_draw(r);
            break;
        }
    }
    run_steps(w, &rng, (uint64_t)WARMUP_ROUNDS * live);

    pthread_barrier_wait(w->start);
    clock_gettime(CLOCK_MONOTONIC, &w->t0);
    run_steps(w, &rng, w->steps);
    clock_gettime(CLOCK_MONOTONIC, &w->t1);
    pthread_barrier_wait(w->done);

    /* Every thread has stopped allocating: check, then give back. */
    uint64_t bad = 0;
    for (size_t i = 0; i < filled; i++)
        if (slots[i].p)
            bad += (slots[i].p[0] != slots[i].tag) +
                   (slots[i].p[slots[i].n - 1] != (unsigned char)~slots[i].tag);
    w->bad_tags = bad;
    pthread_barrier_wait(w->done);
    for (size_t i = 0; i < filled; i++)
        block_free(heap, slots[i].p);
    return NULL;
}

static umem_t *heap_create(enum backend b, size_t live_blocks)
{
    unsigned flags = b == B_UMEM_NOLOCK ? UMEM_NOLOCK : 0;
#ifdef UMEM_CACHED
    if (b == B_UMEM_CACHED)
        flags |= UMEM_CACHED;
#endif
#ifdef UMEM_GROW
    (void)live_blocks;
    return umem_create((size_t)1 << 20, flags | UMEM_GROW);
#else
    return umem_create(live_blocks * 1200 + ((size_t)16 << 20), flags);
#endif
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: randpat BACKEND LIVE THREADS [STEPS]\n"
            "       randpat --list\n"
            "BACKEND: malloc, umem-nolock, umem-locked%s; LIVE: live blocks per\n"
            "thread (K suffix: x1024); THREADS: 1 to %d; STEPS: per thread\n"
            "(default %d / THREADS).  Prints 'ns_per_step N maxrss_kb N'.\n",
            HAVE_CACHED ? ", umem-cached" : "", MAX_THREADS, DEFAULT_TOTAL_STEPS);
}

static _Noreturn void usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "randpat: %s: '%s'\n", what, arg);
    usage(stderr);
    exit(2);
}

/* A positive count, with an optional K suffix; 0 if malformed. */
static unsigned long long parse_count(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return 0;
    if (*end == 'K' || *end == 'k') {
        if (v > ULLONG_MAX / 1024)
            return 0;
        v *= 1024;
        end++;
    }
    return *end ? 0 : v;
}

/* What the command line asks for. */
struct request {
    const char *name; /* the backend, as given */
    int backend;
    unsigned long long live, threads, steps;
};

/* --list or --help: prints what is asked and returns 1; 0 for anything
 * else. */
static int answered_option(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int b = B_MALLOC; b <= B_UMEM_CACHED; b++)
            if (b != B_UMEM_CACHED || HAVE_CACHED)
                printf("%s\n", backend_names[b]);
        return 1;
    }
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 1;
    }
    return 0;
}

/* BACKEND LIVE THREADS [STEPS] into *rq.  Returns 0, or the exit status
 * after a message (usage_error exits itself). */
static int parse_request(int argc, char **argv, struct request *rq)
{
    if (argc < 4 || argc > 5) {
        usage(stderr);
        return 2;
    }
    rq->name = argv[1];
    rq->backend = -1;
    for (int b = B_MALLOC; b <= B_UMEM_CACHED; b++)
        if (strcmp(argv[1], backend_names[b]) == 0)
            rq->backend = b;
    if (rq->backend < 0)
        usage_error("unknown backend", argv[1]);
    if (rq->backend == B_UMEM_CACHED && !HAVE_CACHED) {
        fprintf(stderr, "randpat: umem-cached: this umem.h has no UMEM_CACHED\n");
        return 1;
    }
    rq->live = parse_count(argv[2]);
    if (rq->live == 0 || rq->live > UINT32_MAX)
        usage_error("live blocks must be 1 to 4294967295", argv[2]);
    rq->threads = parse_count(argv[3]);
    if (rq->threads == 0 || rq->threads > MAX_THREADS)
        usage_error("threads must be 1 to 256", argv[3]);
    rq->steps = DEFAULT_TOTAL_STEPS / rq->threads;
    if (argc == 5 && (rq->steps = parse_count(argv[4])) == 0)
        usage_error("steps must be a positive count", argv[4]);
    return 0;
}

/* Each thread's heap, live set and barriers.  Returns 0, or 1 after a
 * message. */
static int set_up_workers(const struct request *rq, struct worker *w, umem_t *shared,
                          pthread_barrier_t *start, pthread_barrier_t *done)
{
    for (int t = 0; t < (int)rq->threads; t++) {
        w[t].index = t;
        w[t].live = (size_t)rq->live;
        w[t].steps = rq->steps;
        w[t].start = start;
        w[t].done = done;
        w[t].heap = rq->backend == B_UMEM_NOLOCK
                        ? heap_create(rq->backend, (size_t)rq->live)
                        : shared;
        if (!w[t].heap && rq->backend == B_UMEM_NOLOCK) {
            fprintf(stderr, "randpat: %s: umem_create for thread %d: %s\n", rq->name, t,
                    strerror(errno));
            return 1;
        }
        w[t].slots = calloc((size_t)rq->live, sizeof(struct slot));
        if (!w[t].slots) {
            fprintf(stderr, "randpat: %s: no memory for thread %d's live set of %llu\n",
                    rq->name, t, rq->live);
            return 1;
        }
    }
    return 0;
}

/* Threads 1 and up in threads of their own, thread 0 in this one, then
 * every one joined.  Returns 0, or 1 after a message. */
static int run_workers(struct worker *w, pthread_t *tid, int nthreads)
{
    for (int t = 1; t < nthreads; t++) {
        int r = pthread_create(&tid[t], NULL, run_worker, &w[t]);
        if (r != 0) {
            fprintf(stderr, "randpat: pthread_create: %s\n", strerror(r));
            return 1;
        }
    }
    run_worker(&w[0]);
    for (int t = 1; t < nthreads; t++)
        pthread_join(tid[t], NULL);
    return 0;
}

/* The result line, unless a thread's allocation failed or a tag byte
 * changed.  Returns 0, or 1 after a message. */
static int report(const struct request *rq, const struct worker *w)
{
    int nthreads = (int)rq->threads;
    int64_t first = INT64_MAX, last = INT64_MIN;
    uint64_t bad = 0;
    int status = 0;
    for (int t = 0; t < nthreads; t++) {
        int64_t t0 = (int64_t)w[t].t0.tv_sec * 1000000000 + w[t].t0.tv_nsec;
        int64_t t1 = (int64_t)w[t].t1.tv_sec * 1000000000 + w[t].t1.tv_nsec;
        first = t0 < first ? t0 : first;
        last = t1 > last ? t1 : last;
        bad += w[t].bad_tags;
        if (w[t].failed_size) {
            fprintf(stderr,
                    "randpat: %s: thread %d: allocation of %zu bytes failed (live %llu, "
                    "threads %d)\n",
                    rq->name, t, w[t].failed_size, rq->live, nthreads);
            status = 1;
        }
    }
    if (bad) {
        fprintf(stderr,
                "randpat: %s: %llu tag bytes changed: the allocator handed out "
                "overlapping blocks (live %llu, threads %d)\n",
                rq->name, (unsigned long long)bad, rq->live, nthreads);
        status = 1;
    }
    if (status)
        return status;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("ns_per_step %.1f maxrss_kb %ld\n", (double)(last - first) / (double)rq->steps,
           ru.ru_maxrss);
    return 0;
}

int main(int argc, char **argv)
{
    if (answered_option(argc, argv))
        return 0;
    struct request rq;
    int status = parse_request(argc, argv, &rq);
    if (status)
        return status;
    int nthreads = (int)rq.threads;
    struct worker *w = calloc((size_t)nthreads, sizeof *w);
    pthread_t *tid = calloc((size_t)nthreads, sizeof *tid);
    if (!w || !tid) {
        fprintf(stderr, "randpat: out of memory for %d threads\n", nthreads);
        return 1;
    }
    umem_t *shared = NULL;
    if (rq.backend == B_UMEM_LOCKED || rq.backend == B_UMEM_CACHED) {
        shared = heap_create(rq.backend, (size_t)rq.live * rq.threads);
        if (!shared) {
            fprintf(stderr, "randpat: %s: umem_create: %s\n", rq.name, strerror(errno));
            return 1;
        }
    }
    pthread_barrier_t start, done;
    pthread_barrier_init(&start, NULL, (unsigned)nthreads);
    pthread_barrier_init(&done, NULL, (unsigned)nthreads);
    if (set_up_workers(&rq, w, shared, &start, &done) || run_workers(w, tid, nthreads) ||
        report(&rq, w))
        return 1;
    for (int t = 0; t < nthreads; t++) {
        if (rq.backend == B_UMEM_NOLOCK)
            umem_destroy(w[t].heap);
        free(w[t].slots);
    }
    umem_destroy(shared);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
    free(w);
    free(tid);
    return fflush(stdout) == 0 ? 0 : 1;
}
