/* Tests of umem.h: model, edge cases, misuse, threads and fork. */
#include "../umem.h"
/* Each child here does a few calls: one that hangs (a lock its heap never
 * let go after fork(), say) fails its test within a minute. */
#define CHECK_CHILD_SECONDS 60
#include "check.h"

#include <ctype.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

/* Fill and verify a block with a pattern that depends on its identity, so
 * overlapping blocks or a block moved under us show up as a mismatch. */
static void fill(unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tag * 131u + i * 7u);
}

/* The offset of the first byte that is not the pattern's, n if none:
 * CHECK_EQ(first_changed(p, n, tag), n) prints where a block went wrong. */
static size_t first_changed(const unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(tag * 131u + i * 7u))
            return i;
    return n;
}

static int intact(const unsigned char *p, size_t n, unsigned tag)
{
    return first_changed(p, n, tag) == n;
}

/* The names of a heap's flags, "GROW|NOLOCK", for a failure's context. */
static const char *flag_names(unsigned flags)
{
    static const char *const names[] = {"SHARED", "NOLOCK", "GROW", "CACHED", "DEBUG"};
    static char text[64];
    size_t n = 0;
    text[0] = '\0';
    for (unsigned bit = 0; bit < 5; bit++)
        if (flags & 1u << bit)
            n += (size_t)snprintf(text + n, sizeof text - n, "%s%s", n ? "|" : "",
                                  names[bit]);
    return n ? text : "none";
}

/* Says which heap the checks that follow are about. */
static void where_flags(unsigned flags)
{
    check_where("flags %#x %s", flags, flag_names(flags));
}

static const unsigned all_flags[] = {0, UMEM_SHARED, UMEM_NOLOCK};

/* Every combination umem_create accepts. */
static const unsigned every_flags[] = {0,
                                       UMEM_SHARED,
                                       UMEM_NOLOCK,
                                       UMEM_GROW,
                                       UMEM_GROW | UMEM_NOLOCK,
                                       UMEM_CACHED,
                                       UMEM_CACHED | UMEM_GROW};
#define EVERY_FLAGS (sizeof every_flags / sizeof every_flags[0])

/* ---- the randomized model ----
 * Random allocs, reallocs, aligned allocs and frees against a model of
 * the live blocks: for each slot, its block, the size asked for and the
 * tag of its pattern.  Each operation draws two numbers from the seed,
 * the slot and what to do with it. */
enum { MODEL_SLOTS = 512, MODEL_OPS = 40000, MODEL_HEAP = 4 << 20 };
struct model {
    umem_t *h;
    unsigned flags; /* as umem_create was given them */
    unsigned slots; /* the slots in use, MODEL_SLOTS at most */
    unsigned long long seed;
    unsigned char *ptr[MODEL_SLOTS];
    size_t len[MODEL_SLOTS];
    unsigned tag[MODEL_SLOTS];
    uint64_t allocs, frees, failed, calls; /* as umem_get_stats should count them */
    uint64_t live;                         /* blocks in the slots */
};

/* The context of operation `op`: the heap's flags, what the operation
 * does, its number, its slot and the size it asks for. */
static void model_where(const struct model *m, const char *what, int op, unsigned s,
                        size_t n)
{
    check_where("flags %#x %s, op %s #%d, slot %u, %zu bytes", m->flags,
                flag_names(m->flags), what, op, s, n);
}

/* A realloc: the contents up to the smaller size survive.  Returns 0
 * when it failed, as it may near the heap's size. */
static int model_realloc(struct model *m, int op, unsigned s, unsigned long long r)
{
    size_t n = 1 + (r >> 8) % (8 << 10);
    model_where(m, "realloc", op, s, n);
    CHECK_EQ(first_changed(m->ptr[s], m->len[s], m->tag[s]), m->len[s]);
    unsigned char *q = umem_realloc(m->h, m->ptr[s], n);
    m->calls++;
    if (!q) {
        CHECK_EQ(errno, ENOMEM);
        m->failed++;
        return 0;
    }
    size_t kept = m->len[s] < n ? m->len[s] : n;
    CHECK_EQ(first_changed(q, kept, m->tag[s]), kept);
    CHECK_GE(umem_usable_size(m->h, q), n);
    m->ptr[s] = q;
    m->len[s] = n;
    fill(q, n, m->tag[s]);
    return 1;
}

static void model_free(struct model *m, int op, unsigned s)
{
    model_where(m, "free", op, s, m->len[s]);
    CHECK_EQ(first_changed(m->ptr[s], m->len[s], m->tag[s]), m->len[s]);
    umem_free(m->h, m->ptr[s]);
    m->ptr[s] = NULL;
    m->frees++;
    m->calls++;
}

/* An allocation, aligned one time in seven, of 1 B to 16 KiB, or one
 * time in a hundred of nearly the whole heap.  Returns 0 when it failed. */
static int model_alloc(struct model *m, int op, unsigned s, unsigned long long r)
{
    size_t n = r % 100 == 0 ? MODEL_HEAP - r % 4096 : 1 + (r >> 8) % (16 << 10);
    size_t align = r % 7 == 0 ? (size_t)16 << (r >> 40) % 9 : 0;
    model_where(m, align ? "memalign" : "alloc", op, s, n);
    m->ptr[s] = align ? umem_memalign(m->h, align, n) : umem_alloc(m->h, n);
    m->calls++;
    if (!m->ptr[s]) {
        m->failed++;
        CHECK_EQ(errno, ENOMEM);
        return 0;
    }
    m->allocs++;
    CHECK_EQ((uintptr_t)m->ptr[s] % (align ? align : 16), 0);
    CHECK_GE(umem_usable_size(m->h, m->ptr[s]), n);
    m->len[s] = n;
    m->tag[s] = (unsigned)op;
    fill(m->ptr[s], n, m->tag[s]);
    return 1;
}

/* One operation on a random slot: an occupied one is reallocated one
 * time in four, else freed; an empty one gets a block.  Returns 0 when
 * the operation failed. */
static int model_step(struct model *m, int op)
{
    unsigned s = (unsigned)(check_rand(&m->seed) % m->slots);
    unsigned long long r = check_rand(&m->seed);
    if (m->ptr[s] && r % 4 == 0)
        return model_realloc(m, op, s, r);
    if (m->ptr[s]) {
        model_free(m, op, s);
        return 1;
    }
    return model_alloc(m, op, s, r);
}

/* umem_check every 500 operations, those that failed left out. */
static void model_check_now(const struct model *m, int op)
{
    if (op % 500 != 0)
        return;
    check_where("flags %#x %s, umem_check after op #%d", m->flags, flag_names(m->flags),
                op);
    CHECK_EQ(umem_check(m->h), 0);
}

/* After the run: the statistics count what the model did. */
static void model_check_stats(const struct model *m)
{
    unsigned flags = m->flags;
    check_where("flags %#x %s, after the run's %d ops", flags, flag_names(flags),
                MODEL_OPS);
    CHECK_EQ(umem_check(m->h), 0);
    umem_stats_t st;
    umem_get_stats(m->h, &st);
    CHECK_EQ(st.allocs, m->allocs);
    CHECK_EQ(st.frees, m->frees);
    CHECK_EQ(st.failed_allocs, m->failed);
    /* A growing heap never runs out; a fixed one does, for the sizes
     * near its whole size. */
    if (flags & UMEM_GROW)
        CHECK_EQ(m->failed, 0);
    else
        CHECK_GT(m->failed, 0);
    CHECK_GT(m->allocs, 10000);
    /* A large block takes the lock twice when no freed mapping is there
     * to reuse: once to look, once to add the new one. */
    if (!(flags & (UMEM_NOLOCK | UMEM_CACHED | UMEM_GROW)))
        CHECK_EQ(st.lock_count, m->calls);
    if ((flags & (UMEM_GROW | UMEM_NOLOCK | UMEM_CACHED)) == UMEM_GROW) {
        CHECK_GE(st.lock_count, m->calls);
        CHECK_LE(st.lock_count, 2 * m->calls);
    }
    if (flags & UMEM_NOLOCK)
        CHECK_EQ(st.lock_count, 0);
    if (flags & UMEM_CACHED) {
        CHECK_GT(st.cache_hits, 0);
        CHECK_GT(st.cache_frees, 0);
        CHECK_LT(st.lock_count, m->calls);
    }
}

/* Every block left in the model, verified and freed. */
static void model_free_all(struct model *m)
{
    for (unsigned s = 0; s < m->slots; s++) {
        if (m->ptr[s]) {
            check_where("flags %#x %s, free at the end, slot %u, %zu bytes", m->flags,
                        flag_names(m->flags), s, m->len[s]);
            CHECK_EQ(first_changed(m->ptr[s], m->len[s], m->tag[s]), m->len[s]);
            umem_free(m->h, m->ptr[s]);
            m->ptr[s] = NULL;
        }
    }
}

/* The model on a heap made with `flags`. */
static void model_run(unsigned flags)
{
    static struct model m;
    m = (struct model){.flags = flags, .slots = MODEL_SLOTS, .seed = 0x5eed0000u + flags};
    where_flags(flags);
    m.h = umem_create(flags & UMEM_GROW ? 4096 : MODEL_HEAP, flags);
    CHECK_NE(m.h, NULL);
    if (!m.h)
        return;
    for (int op = 0; op < MODEL_OPS; op++)
        if (model_step(&m, op))
            model_check_now(&m, op);
    model_check_stats(&m);
    model_free_all(&m);
    where_flags(flags);
    umem_stats_t st;
    umem_get_stats(m.h, &st);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_GT(st.peak_bytes_in_use, 0);
    CHECK_EQ(umem_check(m.h), 0);
    umem_destroy(m.h);
}

static void model_every_flag_combination(void)
{
    for (unsigned i = 0; i < EVERY_FLAGS; i++)
        model_run(every_flags[i]);
}

/* umem_create(size, flags) fails, and sets errno to `want`. */
static void create_fails(size_t size, unsigned flags, int want)
{
    check_where("umem_create(%zu, %#x)", size, flags);
    errno = 0;
    umem_t *h = umem_create(size, flags);
    int e = errno;
    CHECK_EQ(h, NULL);
    CHECK_EQ(e, want);
    umem_destroy(h);
}

static void create_rejects_bad_arguments(void)
{
    create_fails(16, 0, EINVAL);
    create_fails(SIZE_MAX, 0, ENOMEM);
    create_fails(1 << 20, 64, EINVAL); /* no such flag */
    create_fails(1 << 20, UMEM_SHARED | UMEM_NOLOCK, EINVAL);
    static const unsigned refused[] = {UMEM_SHARED | UMEM_GROW, UMEM_SHARED | UMEM_CACHED,
                                       UMEM_NOLOCK | UMEM_CACHED, UMEM_SHARED | UMEM_GUARD};
    for (unsigned i = 0; i < 4; i++)
        create_fails(1 << 20, refused[i], EINVAL);
    check_where("umem_create(4096, 0)");
    umem_t *h = umem_create(4096, 0);
    CHECK_NE(h, NULL);
    if (h)
        CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
    umem_destroy(NULL);
}

static void alignment_and_zero(void)
{
    for (unsigned i = 0; i < 3; i++) {
        where_flags(all_flags[i]);
        umem_t *h = umem_create(1 << 20, all_flags[i]);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        for (size_t n = 1; n <= 300; n++) {
            check_where("flags %#x %s, umem_alloc(%zu)", all_flags[i],
                        flag_names(all_flags[i]), n);
            void *p = umem_alloc(h, n);
            CHECK_NE(p, NULL);
            CHECK_EQ((uintptr_t)p % 16, 0);
            if (n % 3)
                umem_free(h, p);
        }
        where_flags(all_flags[i]);
        CHECK_EQ(umem_alloc(h, 0), NULL);
        CHECK_EQ(umem_alloc(h, SIZE_MAX), NULL);
        CHECK_EQ(umem_alloc(h, SIZE_MAX - 8), NULL);
        umem_stats_t st;
        umem_get_stats(h, &st);
        CHECK_EQ(st.failed_allocs, 2); /* n == 0 is not a failure */
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
}

static void exhaustion_then_recovery(void)
{
    umem_t *h = umem_create(64 << 10, 0);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *p[128];
    int n = 0;
    while (n < 128 && (p[n] = umem_alloc(h, 1000)) != NULL)
        n++;
    CHECK_GT(n, 10);
    CHECK_LT(n, 128);
    CHECK_EQ(errno, ENOMEM);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.failed_allocs, 1);
    CHECK_EQ(st.allocs, n);
    umem_free(h, p[n / 2]);
    p[n / 2] = umem_alloc(h, 1000);
    CHECK_NE(p[n / 2], NULL);
    for (int i = 0; i < n; i++)
        umem_free(h, p[i]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

static void full_coalescing(void)
{
    for (unsigned i = 0; i < 3; i++) {
        where_flags(all_flags[i]);
        umem_t *h = umem_create(1 << 20, all_flags[i]);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        enum { N = 300 };
        void *p[N];
        unsigned long long seed = 42;
        for (int k = 0; k < N; k++)
            p[k] = umem_alloc(h, 1 + check_rand(&seed) % 3000);
        for (int k = N - 1; k > 0; k--) { /* free in a shuffled order */
            int j = (int)(check_rand(&seed) % (unsigned)(k + 1));
            void *t = p[k];
            p[k] = p[j];
            p[j] = t;
        }
        for (int k = 0; k < N; k++) {
            umem_free(h, p[k]);
            if (k % 50 == 0) {
                check_where("flags %#x %s, umem_check after free #%d", all_flags[i],
                            flag_names(all_flags[i]), k);
                CHECK_EQ(umem_check(h), 0);
            }
        }
        where_flags(all_flags[i]);
        umem_stats_t st;
        umem_get_stats(h, &st);
        void *all = umem_alloc(h, st.heap_bytes - 16);
        CHECK_NE(all, NULL);
        CHECK_EQ(umem_alloc(h, 1), NULL);
        umem_free(h, all);
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
}

/* ---- death tests ----
 * A misuse runs in a child, which names the pointer it is about to
 * misuse (its "%p" text) in memory it shares with the test, then makes
 * the bad call.  The test passes when the child is killed by SIGABRT
 * after one line on stderr that holds the expected words and names that
 * pointer and no other.  A child whose misuse returns, or that names no
 * pointer, fails the test. */
enum { PTR_TEXT = 64 };

static void name_pointer(char *ptr_text, const void *p)
{
    snprintf(ptr_text, PTR_TEXT, "%p", p);
}

/* Whether `line` names the pointer `ptr` and no other: each number in it
 * written "0x..." is ptr, and there is one at least. */
static int names_only_pointer(const char *line, const char *ptr)
{
    size_t want = strlen(ptr);
    int named = 0, others = 0;
    for (const char *c = line; (c = strstr(c, "0x")) != NULL;) {
        size_t n = 2 + strspn(c + 2, "0123456789abcdefABCDEF");
        if (n > 2 && (c == line || !isalnum((unsigned char)c[-1]))) {
            if (n == want && strncmp(c, ptr, n) == 0)
                named++;
            else
                others++;
        }
        c += n;
    }
    return named > 0 && others == 0;
}

/* Whether `text` is one line, its newline included. */
static int one_line(const char *text)
{
    size_t n = strlen(text);
    return n > 0 && strchr(text, '\n') == text + n - 1;
}

/* Reads fd to its end (the child's death), keeping its first size - 1
 * bytes: a child that says more is never left blocked on a full pipe. */
static void read_to_end(int fd, char *text, size_t size)
{
    size_t got = 0;
    char rest[256];
    for (;;) {
        int keep = got < size - 1;
        ssize_t r =
            read(fd, keep ? text + got : rest, keep ? size - 1 - got : sizeof rest);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (keep)
            got += (size_t)r;
    }
    text[got] = '\0';
}

/* What a failed death test prints: what the child said and how it ended,
 * and what was expected of it. */
static void report_death(const char *err, const char *expect, const char *ptr_text,
                         int status)
{
    size_t n = strlen(err);
    fprintf(stderr, "  the child's message: %s%s", n ? err : "(none)",
            n && err[n - 1] == '\n' ? "" : "\n");
    fprintf(
        stderr,
        "  expected: one line holding \"%s\" and naming the pointer %s, then SIGABRT\n",
        expect, ptr_text[0] ? ptr_text : "(none: the child named no pointer)");
    check_describe_child(status);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        fprintf(stderr, "  (its misuse returned: not caught)\n");
}

/* The child's message, its pointer and its end, checked. */
static void judge_death(const char *err, const char *expect, const char *ptr_text,
                        int status)
{
    int before = check_failures;
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK(ptr_text[0] != '\0'); /* the child named its pointer */
    CHECK(strstr(err, expect) != NULL);
    CHECK(one_line(err));
    CHECK(names_only_pointer(err, ptr_text));
    if (check_failures != before)
        report_death(err, expect, ptr_text, status);
}

/* Runs `misuse` in a child, on a heap made with `flags`, and judges its
 * death. */
static void expect_death_on(unsigned flags, void (*misuse)(umem_t *, char *ptr_text),
                            const char *expect)
{
    check_where("death test, flags %#x %s, expecting \"%s\"", flags, flag_names(flags),
                expect);
    char *ptr_text =
        mmap(NULL, PTR_TEXT, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    umem_t *h = umem_create(1 << 20, flags);
    int fds[2] = {-1, -1};
    CHECK_NE(ptr_text, MAP_FAILED);
    CHECK_NE(h, NULL);
    CHECK_EQ(pipe(fds), 0);
    pid_t pid = ptr_text != MAP_FAILED && h && fds[0] >= 0 ? check_fork() : -1;
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        misuse(h, ptr_text);
        _exit(0); /* the misuse returned: not caught */
    }
    if (fds[1] >= 0)
        close(fds[1]);
    CHECK_GT(pid, 0);
    if (pid > 0) {
        char err[512];
        read_to_end(fds[0], err, sizeof err);
        int status = 0;
        CHECK_EQ(check_wait(pid, &status), pid);
        ptr_text[PTR_TEXT - 1] = '\0';
        judge_death(err, expect, ptr_text, status);
    }
    if (fds[0] >= 0)
        close(fds[0]);
    if (ptr_text != MAP_FAILED)
        munmap(ptr_text, PTR_TEXT);
    umem_destroy(h);
}

static void expect_death(void (*misuse)(umem_t *, char *ptr_text), const char *expect)
{
    expect_death_on(0, misuse, expect);
}

/* Each misuse names its pointer just before the bad call. */
static void free_foreign(umem_t *h, char *t)
{
    static char not_ours[64] __attribute__((aligned(16)));
    name_pointer(t, not_ours);
    umem_free(h, not_ours);
}
static void free_misaligned(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 100);
    name_pointer(t, p + 1);
    umem_free(h, p + 1);
}
static void free_interior(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 200);
    memset(p, 0xAB, 200);
    name_pointer(t, p + 64);
    umem_free(h, p + 64);
}
static void free_twice(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 100);
    umem_alloc(h, 100); /* keeps p from merging with the big free block */
    umem_free(h, p);
    name_pointer(t, p);
    umem_free(h, p);
}
static void overrun_then_free(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 64);
    char *q = umem_alloc(h, 64);
    (void)q;
    /* Overrun the lower block into the next one's header. */
    char *low = p < q ? p : q;
    memset(low, 0x5A, 64 + 16 + 8);
    name_pointer(t, low);
    umem_free(h, low);
}

static void free_aligned_twice(umem_t *h, char *t)
{
    char *p = umem_memalign(h, 256, 100), *q;
    /* Blocks up to the one after p: p's free merges with a small free
     * block at most, not with the large one, whose tree node could
     * cover p's stale header (first fit fills the gap before p first). */
    do
        q = umem_alloc(h, 100);
    while (q && q < p);
    umem_free(h, p);
    name_pointer(t, p);
    umem_free(h, p);
}
static void realloc_freed(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 100);
    umem_alloc(h, 100);
    umem_free(h, p);
    name_pointer(t, p);
    umem_realloc(h, p, 200);
}
/* With UMEM_CACHED: the second free finds the block's cache tag. */
static void free_twice_cached(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 100);
    umem_free(h, p);
    name_pointer(t, p);
    umem_free(h, p);
}
/* The calling thread's pool of h, made now if it has none: the lock
 * serves a thread's first UMEM_POOL_AFTER requests, and the next one
 * makes its pool. */
static void make_own_pool(umem_t *h)
{
    for (unsigned i = 0; i <= UMEM_POOL_AFTER; i++)
        umem_free(h, umem_alloc(h, 16));
}

/* A slot of the thread's pool. */
static void *allocate_one(void *arg)
{
    umem_t *h = *(umem_t **)arg;
    make_own_pool(h);
    *(void **)arg = umem_alloc(h, 100);
    return NULL;
}
/* With UMEM_CACHED: a block of a thread that has ended, freed twice by
 * another (two frees into a page the freeing thread does not own). */
static void free_twice_remote(umem_t *h, char *t)
{
    void *box = h;
    pthread_t tid;
    if (pthread_create(&tid, NULL, allocate_one, &box) != 0)
        return;
    pthread_join(tid, NULL);
    umem_free(h, box);
    name_pointer(t, box);
    umem_free(h, box);
}
/* A thread with two slots of one page that waits, then ends. */
struct remote_owner {
    umem_t *h;
    void *slot[2];
    pthread_barrier_t turn;
};
static void *own_two_then_end(void *arg)
{
    struct remote_owner *o = arg;
    make_own_pool(o->h);
    o->slot[0] = umem_alloc(o->h, 64);
    o->slot[1] = umem_alloc(o->h, 64);
    pthread_barrier_wait(&o->turn); /* the other thread frees them */
    pthread_barrier_wait(&o->turn);
    return NULL; /* its pool's exit takes its remote frees back */
}
/* With UMEM_CACHED: a write after free over the link of a slot another
 * thread freed, found when the owner, ending, takes its remote frees
 * back while the page's own free list holds slots (so that the list is
 * walked to its tail). */
static void write_remote_link(umem_t *h, char *t)
{
    struct remote_owner o = {.h = h};
    pthread_t tid;
    if (pthread_barrier_init(&o.turn, NULL, 2) != 0 ||
        pthread_create(&tid, NULL, own_two_then_end, &o) != 0)
        return;
    pthread_barrier_wait(&o.turn);
    umem_free(h, o.slot[0]);
    umem_free(h, o.slot[1]); /* the list: slot 1, then slot 0 */
    void *inside = (char *)o.slot[0] + 16;
    *(void **)o.slot[1] = inside; /* slot 1's link */
    name_pointer(t, inside);
    pthread_barrier_wait(&o.turn);
    pthread_join(tid, NULL);
}
/* With UMEM_CACHED: a pointer inside a pooled block, and the start of a
 * slot never handed out. */
static void free_interior_pooled(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 200);
    name_pointer(t, p + 16);
    umem_free(h, p + 16);
}
static void free_never_handed_out(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 200);
    char *next = umem__hook_page_limit(h, p) - umem_usable_size(h, p); /* its page's last */
    name_pointer(t, next);
    umem_free(h, next);
}
/* With UMEM_CACHED: a write after free over a cached block's link. */
static void forge_cache_link(umem_t *h, char *t)
{
    static char victim[64] __attribute__((aligned(16)));
    char *p = umem_alloc(h, 40);
    umem_free(h, p);
    *(void **)p = victim; /* the cache's link, overwritten */
    umem_alloc(h, 40);    /* p itself */
    name_pointer(t, victim);
    umem_alloc(h, 40); /* would be victim */
}
/* With UMEM_CACHED: a block over 4 KiB that the thread keeps, freed
 * again by it and by another thread, reallocated, and written over
 * before it is taken back. */
static void free_twice_kept(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 10000);
    umem_free(h, p);
    name_pointer(t, p);
    umem_free(h, p);
}
static void *free_boxed(void *arg)
{
    void **box = arg;
    umem_free(box[0], box[1]);
    return NULL;
}
static void free_kept_elsewhere(umem_t *h, char *t)
{
    void *box[2] = {h, umem_alloc(h, 10000)};
    umem_free(h, box[1]);
    name_pointer(t, box[1]);
    pthread_t tid;
    if (pthread_create(&tid, NULL, free_boxed, box) == 0)
        pthread_join(tid, NULL);
}
static void realloc_kept(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 10000);
    umem_free(h, p);
    name_pointer(t, p);
    umem_realloc(h, p, 20000);
}
#if !defined(__SANITIZE_THREAD__) /* see its RUN */
static void free_twice_while_forking(umem_t *h, char *t)
{
    void *p[17];
    for (int i = 0; i < 17; i++)
        p[i] = umem_alloc(h, 10000);
    for (int i = 0; i < 16; i++)
        umem_free(h, p[i]); /* kept: the class is full */
    umem__hook_fork_prepare();
    umem_free(h, p[16]); /* the lock lent: left for its next holder, marked */
    umem_alloc(h, 10000); /* a kept one: room in the class again */
    name_pointer(t, p[16]);
    umem_free(h, p[16]);
}
#endif
static void write_kept_link(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 10000), *q = umem_alloc(h, 10000);
    umem_free(h, p);
    umem_free(h, q); /* q, then p */
    *(uintptr_t *)q = 0x123450; /* q's link to p */
    umem_alloc(h, 10000);       /* q */
    name_pointer(t, (void *)0x123450);
    umem_alloc(h, 10000); /* would follow the link */
}
static void write_kept(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 10000);
    umem_free(h, p);
    memset(p, 0, 16);
    name_pointer(t, p);
    umem_alloc(h, 10000);
}
static void death_foreign(void)
{
    expect_death(free_foreign, "outside the heap");
}
static void death_misaligned(void)
{
    expect_death(free_misaligned, "misaligned");
}
static void death_interior(void)
{
    expect_death(free_interior, "not from umem_alloc");
}
static void death_double_free(void)
{
    expect_death(free_twice, "double free");
}
static void death_overrun(void)
{
    expect_death(overrun_then_free, "write past the end");
}

static void death_aligned_double_free(void)
{
    expect_death(free_aligned_twice, "double free");
}
static void death_realloc_of_freed(void)
{
    expect_death(realloc_freed, "double free");
}
static void death_cached_double_free(void)
{
    expect_death_on(UMEM_CACHED, free_twice_cached, "double free");
}
static void death_cached_forged_link(void)
{
    expect_death_on(UMEM_CACHED, forge_cache_link, "written after its free");
}
static void death_cached_remote_double_free(void)
{
    expect_death_on(UMEM_CACHED | UMEM_GROW, free_twice_remote, "double free");
}
static void death_cached_remote_link_written(void)
{
    expect_death_on(UMEM_CACHED | UMEM_GROW, write_remote_link, "not from umem_alloc");
}
static void death_cached_interior(void)
{
    expect_death_on(UMEM_CACHED, free_interior_pooled, "not from umem_alloc");
}
static void death_cached_never_handed_out(void)
{
    expect_death_on(UMEM_CACHED, free_never_handed_out, "never handed out");
}
static void death_cached_foreign(void)
{
    expect_death_on(UMEM_CACHED | UMEM_GROW, free_foreign, "outside the heap");
}

static void death_kept_double_free(void)
{
    expect_death_on(UMEM_CACHED, free_twice_kept, "double free");
}
static void death_kept_freed_elsewhere(void)
{
    expect_death_on(UMEM_CACHED | UMEM_GROW, free_kept_elsewhere, "double free");
}
static void death_kept_realloc(void)
{
    expect_death_on(UMEM_CACHED, realloc_kept, "double free");
}
static void death_kept_written(void)
{
    expect_death_on(UMEM_CACHED, write_kept, "write after free");
}
#if !defined(__SANITIZE_THREAD__)
static void death_kept_freed_twice_in_a_fork(void)
{
    expect_death_on(UMEM_CACHED | UMEM_GROW, free_twice_while_forking, "double free");
}
#endif
static void death_kept_link_written(void)
{
    expect_death_on(UMEM_CACHED, write_kept_link, "write after free");
}

static void check_finds_overrun(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    char *p = umem_alloc(h, 64);
    char *q = umem_alloc(h, 64);
    char *low = p < q ? p : q;
    CHECK_EQ(umem_check(h), 0);
    fprintf(stderr, "(the next umem_check message is expected)\n");
    low[64 + 3] ^= 1; /* one bit of the next block's header */
    CHECK_EQ(umem_check(h), -1);
    low[64 + 3] ^= 1;
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* I10: a block the thread keeps, written over after its free. */
static void check_finds_a_kept_block_written(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    char *p = umem_alloc(h, 10000);
    umem_free(h, p); /* kept */
    CHECK_EQ(umem_check(h), 0);
    fprintf(stderr, "(the next umem_check message is expected)\n");
    p[8] ^= 1; /* one bit of its tag */
    CHECK_EQ(umem_check(h), -1);
    p[8] ^= 1;
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A free block merged into the block before it leaves its old header in
 * the merged block's payload, check word intact: put on a list in the
 * merged block's place, it must still be found out. */
static void check_finds_stale_header_on_list(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    char *a = umem_alloc(h, 64), *b = umem_alloc(h, 64), *c = umem_alloc(h, 64);
    CHECK_LT(a, b); /* carved from the low end, upwards */
    CHECK_LT(b, c);
    umem_free(h, b);       /* b: free, on its list */
    umem_free(h, a);       /* a absorbs b; b's header is stale inside a */
    CHECK_EQ(umem_check(h), 0);
    /* a's block heads the list of its size; b's stale header goes there. */
    size_t size = umem__hook_replace_free(h, a, b, 0);
    CHECK_NE(size, 0);
    if (size) {
        fprintf(stderr, "(the next umem_check message is expected)\n");
        CHECK_EQ(umem_check(h), -1);
        CHECK_EQ(umem__hook_replace_free(h, b, a, size), size);
        CHECK_EQ(umem_check(h), 0);
    }
    umem_destroy(h);
    (void)c;
}

/* The same for a large free block in the free tree. */
static void check_finds_stale_header_in_tree(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    char *a = umem_alloc(h, 3000), *b = umem_alloc(h, 3000), *c = umem_alloc(h, 64);
    umem_free(h, b);
    umem_free(h, a); /* a absorbs b */
    CHECK_EQ(umem_check(h), 0);
    size_t size = umem__hook_replace_free(h, a, b, 0); /* b's stale node in a's place */
    CHECK_GT(size, 1056); /* a large block, in the tree */
    if (size) {
        fprintf(stderr, "(the next umem_check message is expected)\n");
        CHECK_EQ(umem_check(h), -1);
        CHECK_EQ(umem__hook_replace_free(h, b, a, size), size);
        CHECK_EQ(umem_check(h), 0);
    }
    umem_destroy(h);
    (void)c;
}

enum { THREADS = 8, THREAD_OPS = 20000 };
struct hammer {
    umem_t *h;
    unsigned id;
    uint64_t allocs, frees, failed;
    int bad;
};

static void *hammer_thread(void *arg)
{
    struct hammer *t = arg;
    enum { SLOTS = 64 };
    unsigned char *ptr[SLOTS] = {0};
    size_t len[SLOTS];
    unsigned long long seed = 1000 + t->id;
    for (int op = 0; op < THREAD_OPS; op++) {
        unsigned s = (unsigned)(check_rand(&seed) % SLOTS);
        if (ptr[s]) {
            t->bad += !intact(ptr[s], len[s], t->id * 64 + s);
            umem_free(t->h, ptr[s]);
            ptr[s] = NULL;
            t->frees++;
        } else {
            len[s] = 1 + check_rand(&seed) % 2048;
            ptr[s] = umem_alloc(t->h, len[s]);
            if (!ptr[s]) {
                t->failed++;
                continue;
            }
            t->allocs++;
            fill(ptr[s], len[s], t->id * 64 + s);
        }
    }
    for (unsigned s = 0; s < SLOTS; s++)
        if (ptr[s]) {
            umem_free(t->h, ptr[s]);
            t->frees++;
        }
    return NULL;
}

static void threads_hammer_one_heap(void)
{
    umem_t *h = umem_create(2 << 20, 0);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    pthread_t tid[THREADS];
    struct hammer t[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        t[i] = (struct hammer){.h = h, .id = i};
        CHECK_EQ(pthread_create(&tid[i], NULL, hammer_thread, &t[i]), 0);
    }
    uint64_t allocs = 0, frees = 0, failed = 0;
    for (unsigned i = 0; i < THREADS; i++) {
        check_where("thread #%u", i);
        pthread_join(tid[i], NULL);
        CHECK_EQ(t[i].bad, 0);
        allocs += t[i].allocs;
        frees += t[i].frees;
        failed += t[i].failed;
    }
    check_where("every thread joined");
    CHECK_EQ(umem_check(h), 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.allocs, allocs);
    CHECK_EQ(st.frees, frees);
    CHECK_EQ(st.failed_allocs, failed);
    CHECK_EQ(st.lock_count, allocs + frees + failed);
    CHECK_LE(st.lock_contended, st.lock_count);
    CHECK_EQ(st.bytes_in_use, 0);
    umem_destroy(h);
}

/* umem_alloc(h, n) fails, and sets errno to `want`. */
static void alloc_fails(umem_t *h, size_t n, int want)
{
    errno = 0;
    void *p = umem_alloc(h, n);
    int e = errno;
    CHECK_EQ(p, NULL);
    CHECK_EQ(e, want);
}

/* umem_memalign(h, align, 10) fails, and sets errno to `want`. */
static void memalign_fails(umem_t *h, size_t align, int want)
{
    errno = 0;
    void *p = umem_memalign(h, align, 10);
    int e = errno;
    CHECK_EQ(p, NULL);
    CHECK_EQ(e, want);
}

/* realloc on a heap made with `flags`: NULL and 0, growth into the free
 * block after, shrinking, a move, and refused alignments. */
static void realloc_on(unsigned flags)
{
    where_flags(flags);
    umem_t *h = umem_create(1 << 20, flags);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    CHECK_EQ(umem_realloc(h, NULL, 0), NULL);
    unsigned char *p = umem_realloc(h, NULL, 100); /* NULL: an allocation */
    unsigned char *q = umem_memalign(h, 16, 100);
    unsigned char *r = umem_memalign(h, 16, 100);
    CHECK(p && q && r);
    if (!p || !q || !r) {
        umem_destroy(h);
        return;
    }
    if (!(flags & UMEM_CACHED)) { /* carved upwards, first fit */
        CHECK_LT(p, q);
        CHECK_LT(q, r);
    }
    fill(p, 100, 1);
    umem_free(h, q);
    umem_free(h, r); /* in a cache, or merged with q */
    umem_stats_t before, after;
    umem_get_stats(h, &before);
    if (!(flags & UMEM_CACHED))
        CHECK_EQ(umem_realloc(h, p, 200), p); /* into the free block after it */
    p = umem_realloc(h, p, 200);
    if (CHECK_NE(p, NULL))
        CHECK_EQ(first_changed(p, 100, 1), 100);
    if (flags & UMEM_CACHED)
        p = umem_realloc(h, p, 40); /* to a smaller size class */
    else
        CHECK_EQ(umem_realloc(h, p, 40), p); /* shrinks where it is */
    if (CHECK_NE(p, NULL))
        CHECK_EQ(first_changed(p, 40, 1), 40);
    unsigned char *big = umem_realloc(h, p, 300000); /* moves */
    if (CHECK_NE(big, NULL))
        CHECK_EQ(first_changed(big, 40, 1), 40);
    umem_get_stats(h, &after);
    CHECK_EQ(after.allocs, before.allocs);
    CHECK_EQ(after.frees, before.frees);
    CHECK_EQ(umem_realloc(h, big, 0), NULL); /* frees */
    umem_get_stats(h, &after);
    CHECK_EQ(after.frees, before.frees + 1);
    CHECK_EQ(after.bytes_in_use, 0);
    memalign_fails(h, 0, EINVAL);
    memalign_fails(h, 24, EINVAL);
    CHECK_EQ(umem_usable_size(h, NULL), 0);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

static void realloc_in_place_and_moved(void)
{
    for (unsigned i = 0; i < EVERY_FLAGS; i++)
        realloc_on(every_flags[i]);
}

static long resident_kib(void)
{
    long pages = -1, resident = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = -1;
        fclose(f);
    }
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* From one page to UMEM_TEST_GROW_MIB (256) MiB in small, medium and
 * large blocks, then everything freed: the resident size stays while
 * half the heap is in use, for the purge delay at least, and falls back
 * as soon as the heap has emptied, with no call after. */
/* Blocks of `mib` MiB in all into p (room for `count`), each written
 * to; returns how many. */
static size_t grow_to(umem_t *h, unsigned char **p, size_t count, size_t mib)
{
    size_t total = 0, n = 0;
    unsigned long long seed = 7;
    while (total < (mib << 20) && n < count) {
        unsigned long long r = check_rand(&seed);
        size_t len = r % 512 == 0 ? (2 << 20) : r % 4 == 0 ? 4000 : 16 + r % 500;
        check_where("growing to %zu MiB, block #%zu, %zu bytes", mib, n, len);
        p[n] = umem_alloc(h, len);
        CHECK_NE(p[n], NULL);
        if (!p[n])
            break;
        memset(p[n], 0xA5, len);
        total += len;
        n++;
    }
    check_where("grown to %zu MiB in %zu blocks", mib, n);
    return n;
}

static void grow_then_give_back(void)
{
    const char *env = getenv("UMEM_TEST_GROW_MIB");
    size_t mib = env ? strtoul(env, NULL, 10) : 256;
    uint64_t made = monotonic_ms();
    umem_t *h = umem_create(4096, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t count = (mib << 20) / 1024;
    unsigned char **p = calloc(count, sizeof *p);
    long before = resident_kib();
    size_t n = grow_to(h, p, count, mib);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_GT(st.heap_bytes, (mib << 20) / 8);
    CHECK_GT(st.large_blocks, 0);
    CHECK_EQ(umem_check(h), 0);
    long peak = resident_kib();
    for (size_t i = 0; i < n; i += 2) /* every other block, then the rest */
        umem_free(h, p[i]);
    /* Half the heap in use: nothing goes back before it has stayed free
     * for the delay. */
    check_where("every other block freed");
    umem_get_stats(h, &st);
    if (monotonic_ms() - made < UMEM_PURGE_DELAY_MS)
        CHECK_EQ(st.released_bytes, 0);
    for (size_t i = 1; i < n; i += 2)
        umem_free(h, p[i]);
    /* Emptied, then idle: its pages went back, with no call after, all
     * but the first UMEM_PURGE_KEEP of them (so under memcheck, which
     * grows it to 32 MiB only, perhaps none). */
    long after = resident_kib();
    umem_get_stats(h, &st);
    check_where("emptied; resident KiB: %ld before, %ld at the peak, %ld after", before,
                peak, after);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(st.large_blocks, 0);
    long keep_kib = (long)(UMEM_PURGE_KEEP >> 10);
    if (peak - before > 2 * keep_kib)
        CHECK_GT(st.released_bytes, 0);
    CHECK_GT(before, 0);
    CHECK_GT(peak - before, (long)(mib << 10) / 2);
    CHECK_LT(after - before, (peak - before) / 2 + keep_kib);
    void *again = umem_alloc(h, 1000); /* still usable */
    CHECK_NE(again, NULL);
    umem_free(h, again);
    CHECK_EQ(umem_check(h), 0);
    free(p);
    umem_destroy(h);
}

/* Threads on one cached heap, each freeing the blocks its neighbour
 * allocated, round after round. */
enum { CT_THREADS = 4, CT_BLOCKS = 300, CT_ROUNDS = 40 };
struct cross {
    umem_t *h;
    pthread_barrier_t *bar;
    unsigned id;
    unsigned char *(*slot)[CT_BLOCKS];
    int bad;
};

static size_t cross_len(unsigned id, unsigned k, unsigned round)
{
    return 1 + (id * 131u + k * 17u + round * 7u) % 1000;
}

static void *cross_thread(void *arg)
{
    struct cross *c = arg;
    for (unsigned round = 0; round < CT_ROUNDS; round++) {
        for (unsigned k = 0; k < CT_BLOCKS; k++) {
            size_t n = cross_len(c->id, k, round);
            unsigned char *p = umem_alloc(c->h, n);
            c->bad += p == NULL;
            if (p)
                fill(p, n, c->id * 1000 + k);
            c->slot[c->id][k] = p;
        }
        pthread_barrier_wait(c->bar);
        unsigned from = (c->id + 1) % CT_THREADS;
        for (unsigned k = 0; k < CT_BLOCKS; k++) {
            unsigned char *p = c->slot[from][k];
            if (p)
                c->bad += !intact(p, cross_len(from, k, round), from * 1000 + k);
            umem_free(c->h, p);
        }
        pthread_barrier_wait(c->bar);
    }
    return NULL;
}

static void cached_threads_free_each_others_blocks(void)
{
    umem_t *h = umem_create(64 << 10, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    static unsigned char *slot[CT_THREADS][CT_BLOCKS];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, CT_THREADS);
    pthread_t tid[CT_THREADS];
    struct cross c[CT_THREADS];
    for (unsigned i = 0; i < CT_THREADS; i++) {
        c[i] = (struct cross){.h = h, .bar = &bar, .id = i, .slot = slot};
        CHECK_EQ(pthread_create(&tid[i], NULL, cross_thread, &c[i]), 0);
    }
    for (unsigned i = 0; i < CT_THREADS; i++) {
        check_where("thread #%u", i);
        pthread_join(tid[i], NULL);
        CHECK_EQ(c[i].bad, 0);
    }
    check_where("every thread joined");
    pthread_barrier_destroy(&bar);
    /* Every thread has exited: its cache went back to the heap. */
    CHECK_EQ(umem_check(h), 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t n = (uint64_t)CT_THREADS * CT_BLOCKS * CT_ROUNDS;
    CHECK_EQ(st.allocs, n);
    CHECK_EQ(st.frees, n);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(st.cached_bytes, 0);
    CHECK_GT(st.cache_hits, n / 2);
    CHECK_GT(st.cache_frees, n / 2);
    CHECK_LT(st.lock_count, n / 4); /* the caches spared most of the locking */
    umem_destroy(h);
}

/* A thread allocates and exits; the blocks it left are freed by another. */
static void *allocate_and_exit(void *arg)
{
    void **keep = arg;
    umem_t *h = keep[0];
    for (unsigned k = 1; k < 200; k++) {
        keep[k] = umem_alloc(h, k * 5);
        if (keep[k])
            fill(keep[k], k * 5, k);
    }
    return NULL;
}

static void thread_exits_holding_blocks(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *keep[200] = {h};
    for (int round = 0; round < 20; round++) {
        check_where("round #%d", round);
        pthread_t tid;
        CHECK_EQ(pthread_create(&tid, NULL, allocate_and_exit, keep), 0);
        pthread_join(tid, NULL);
        int bad = 0;
        for (unsigned k = 1; k < 200; k++) {
            bad += !keep[k] || !intact(keep[k], k * 5, k);
            umem_free(h, keep[k]);
        }
        CHECK_EQ(bad, 0);
    }
    check_where("after the rounds");
    CHECK_EQ(umem_check(h), 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.allocs, 20 * 199);
    CHECK_EQ(st.frees, 20 * 199);
    CHECK_EQ(st.bytes_in_use, 0);
    umem_destroy(h);
}

/* A producer allocates, a consumer frees: every free is into a page the
 * other thread owns, through its remote list, and the heap's lock is
 * taken per page, not per block. */
enum { PC_BLOCKS = 200000, PC_RING = 1024 };
struct ring {
    umem_t *h;
    void *slot[PC_RING];
    atomic_uint head, tail; /* written by the producer, the consumer */
    int bad;
};

static void *consume(void *arg)
{
    struct ring *r = arg;
    for (unsigned i = 0; i < PC_BLOCKS; i++) {
        while (atomic_load_explicit(&r->head, memory_order_acquire) == i)
            sched_yield();
        unsigned char *p = r->slot[i % PC_RING];
        r->bad += !intact(p, 1 + i % 700, i);
        umem_free(r->h, p);
        atomic_store_explicit(&r->tail, i + 1, memory_order_release);
    }
    return NULL;
}

static void producer_consumer_takes_the_lock_per_page(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    static struct ring r;
    r = (struct ring){.h = h};
    pthread_t tid;
    CHECK_EQ(pthread_create(&tid, NULL, consume, &r), 0);
    for (unsigned i = 0; i < PC_BLOCKS; i++) {
        while (i - atomic_load_explicit(&r.tail, memory_order_acquire) >= PC_RING)
            sched_yield();
        unsigned char *p = umem_alloc(h, 1 + i % 700);
        CHECK_NE(p, NULL);
        fill(p, 1 + i % 700, i);
        r.slot[i % PC_RING] = p;
        atomic_store_explicit(&r.head, i + 1, memory_order_release);
    }
    pthread_join(tid, NULL);
    CHECK_EQ(r.bad, 0);
    CHECK_EQ(umem_check(h), 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.allocs, PC_BLOCKS);
    CHECK_EQ(st.frees, PC_BLOCKS);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(st.remote_frees, PC_BLOCKS);
    CHECK_EQ(st.cache_hits, PC_BLOCKS);
    CHECK_LT(st.lock_count, PC_BLOCKS / 64);
    umem_destroy(h);
}

/* A thread that ends leaves its pages with live blocks to the heap; the
 * next thread to need a page of that class adopts one instead of carving
 * a new page. */
static void *allocate_one_size(void *arg)
{
    void **keep = arg;
    for (unsigned k = 1; k < 100; k++)
        keep[k] = umem_alloc(keep[0], 48);
    return NULL;
}

static void *allocate_again(void *arg)
{
    umem_t *h = arg;
    make_own_pool(h);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t carved = st.cache_refills;
    void *p = umem_alloc(h, 48);
    umem_get_stats(h, &st);
    CHECK_NE(p, NULL);
    CHECK_EQ(st.abandoned_pages, 0);
    CHECK_EQ(st.cache_refills, carved);
    CHECK_EQ(umem_check(h), 0); /* this thread's own pages, the adopted one included */
    umem_free(h, p);
    return NULL;
}

static void ended_threads_pages_are_adopted(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *keep[100] = {h};
    pthread_t tid;
    CHECK_EQ(pthread_create(&tid, NULL, allocate_one_size, keep), 0);
    pthread_join(tid, NULL);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.abandoned_pages, 1);
    CHECK_EQ(st.pool_pages, 1);
    for (unsigned k = 1; k < 100; k += 2) /* remote frees into the abandoned page */
        umem_free(h, keep[k]);
    CHECK_EQ(umem_check(h), 0);
    CHECK_EQ(pthread_create(&tid, NULL, allocate_again, h), 0);
    pthread_join(tid, NULL);
    for (unsigned k = 2; k < 100; k += 2)
        umem_free(h, keep[k]);
    umem_get_stats(h, &st);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(st.allocs, st.frees);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* umem_check sees what a write after free does to a pooled block. */
static void check_finds_untagged_free_slot(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    char *p = umem_alloc(h, 100), *q = umem_alloc(h, 100);
    umem_free(h, p);
    CHECK_EQ(umem_check(h), 0);
    fprintf(stderr, "(the next umem_check message is expected)\n");
    p[8] ^= 1; /* the free slot's tag */
    CHECK_EQ(umem_check(h), -1);
    p[8] ^= 1;
    CHECK_EQ(umem_check(h), 0);
    umem_free(h, q);
    umem_destroy(h);
}

/* Large blocks: a freed mapping serves the next large request, a grown
 * one keeps its contents, and free leaves errno alone. */
static void large_mappings_are_reused(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t big = (size_t)8 << 20;
    unsigned char *p = umem_alloc(h, big);
    CHECK_NE(p, NULL);
    fill(p, 4096, 7);
    errno = 12345;
    umem_free(h, p);
    CHECK_EQ(errno, 12345);
    unsigned char *q = umem_alloc(h, big - 4096); /* the same mapping again */
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_NE(q, NULL);
    CHECK_EQ(st.map_reuses, 1);
    CHECK_EQ(st.large_blocks, 1);
    fill(q, big - 4096, 9);
    unsigned char *r = umem_realloc(h, q, 3 * big); /* grown, by mremap where there is one */
    if (CHECK_NE(r, NULL)) {
        CHECK_EQ(first_changed(r, big - 4096, 9), big - 4096);
        CHECK_GE(umem_usable_size(h, r), 3 * big);
    }
    r = umem_realloc(h, r, big); /* shrunk */
    if (CHECK_NE(r, NULL))
        CHECK_EQ(first_changed(r, big - 4096, 9), big - 4096);
    CHECK_EQ(umem_check(h), 0);
    umem_free(h, r);
    umem_get_stats(h, &st);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(st.large_blocks, 0);
    CHECK_EQ(st.allocs, 2);
    CHECK_EQ(st.frees, 2);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* fork() while other threads allocate: the child allocates from every
 * private heap, locked or cached, and finds each whole. */
static atomic_int fork_stop;

static void *churn(void *arg)
{
    umem_t *h = arg;
    unsigned long long seed = (uintptr_t)arg;
    void *p[32] = {0};
    for (unsigned ops = 1; !atomic_load(&fork_stop); ops++) {
        unsigned k = (unsigned)(check_rand(&seed) % 32);
        umem_free(h, p[k]);
        p[k] = umem_alloc(h, 1 + check_rand(&seed) % 3000);
        /* A mutex is not fair: a thread that takes it again at once can
         * keep fork()'s handler waiting on it for as long as the
         * scheduler lets it (valgrind runs one thread at a time). */
        if (ops % 64 == 0)
            sched_yield();
    }
    for (unsigned k = 0; k < 32; k++)
        umem_free(h, p[k]);
    return NULL;
}

static void fork_from_threads_child_allocates(void)
{
    umem_t *locked = umem_create(1 << 20, 0);
    umem_t *cached = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(locked, NULL);
    CHECK_NE(cached, NULL);
    if (!locked || !cached)
        return;
    atomic_store(&fork_stop, 0);
    pthread_t tid[2];
    CHECK_EQ(pthread_create(&tid[0], NULL, churn, locked), 0);
    CHECK_EQ(pthread_create(&tid[1], NULL, churn, cached), 0);
    for (int i = 0; i < 20; i++) {
        check_where("fork #%d", i);
        pid_t pid = check_fork();
        if (pid == 0) {
            alarm(10); /* a lock left held would hang here */
            int bad = 0;
            umem_t *heaps[2] = {locked, cached};
            for (int k = 0; k < 2; k++) {
                void *p[100];
                for (int j = 0; j < 100; j++)
                    bad += (p[j] = umem_alloc(heaps[k], 1 + (size_t)j * 37)) == NULL;
                for (int j = 0; j < 100; j++)
                    umem_free(heaps[k], p[j]);
                bad += umem_check(heaps[k]) != 0;
            }
            _exit(bad ? 1 : 0);
        }
        int status = 0;
        if (CHECK_GT(pid, 0))
            CHECK_EQ(check_wait(pid, &status), pid);
        CHECK_EXITED_0(status);
    }
    atomic_store(&fork_stop, 1);
    pthread_join(tid[0], NULL);
    pthread_join(tid[1], NULL);
    check_where("after the forks");
    CHECK_EQ(umem_check(locked), 0);
    CHECK_EQ(umem_check(cached), 0);
    umem_destroy(locked);
    umem_destroy(cached);
}

static void shared_heap_across_fork(void)
{
    enum { CHILDREN = 4, EACH = 200, OWN = 300 };
    umem_t *h = umem_create(4 << 20, UMEM_SHARED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    unsigned char *p[CHILDREN * EACH];
    for (int i = 0; i < CHILDREN * EACH; i++) {
        p[i] = umem_alloc(h, 100 + (size_t)i);
        fill(p[i], 100 + (size_t)i, (unsigned)i);
    }
    pid_t pid[CHILDREN];
    for (int c = 0; c < CHILDREN; c++) {
        pid[c] = check_fork();
        if (pid[c] == 0) {
            int bad = 0;
            for (int i = c * EACH; i < (c + 1) * EACH; i++) {
                bad += !intact(p[i], 100 + (size_t)i, (unsigned)i);
                umem_free(h, p[i]);
            }
            void *own[OWN];
            for (int i = 0; i < OWN; i++)
                bad += (own[i] = umem_alloc(h, 64 + (size_t)i)) == NULL;
            for (int i = 0; i < OWN; i += 2) /* leave the odd ones live */
                umem_free(h, own[i]);
            _exit(bad ? 1 : 0);
        }
    }
    for (int c = 0; c < CHILDREN; c++) {
        check_where("child #%d", c);
        int status = 0;
        if (CHECK_GT(pid[c], 0))
            CHECK_EQ(check_wait(pid[c], &status), pid[c]);
        CHECK_EXITED_0(status);
    }
    check_where("after the children");
    CHECK_EQ(umem_check(h), 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t allocs = CHILDREN * EACH + CHILDREN * OWN;
    uint64_t frees = CHILDREN * EACH + CHILDREN * (OWN / 2);
    CHECK_EQ(st.allocs, allocs);
    CHECK_EQ(st.frees, frees);
    CHECK_EQ(st.lock_count, allocs + frees);
    CHECK_GT(st.bytes_in_use, 0);
    CHECK_EQ(st.owner_died, 0);
    umem_destroy(h);
}

/* In the judge of lock_owner_killed: a call that hangs ends it, and the
 * holder with it. */
static void sigalrm_exit(int sig)
{
    (void)sig;
    static const char msg[] = "a heap call hung after the lock owner died\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    check_kill_children();
    _exit(3);
}

/* The judge: a child of the test kills a process that holds the heap's
 * lock, then finds every call seeing the owner's death; its CHECKs print
 * what failed, and its exit status says whether any did. */
static void judge_owner_death(umem_t *h, void *kept)
{
    check_failures = 0;
    signal(SIGALRM, sigalrm_exit);
    alarm(5);
    int ready[2];
    if (pipe(ready) != 0)
        _exit(4);
    pid_t holder = check_fork();
    if (holder == 0) {
        umem__hook_hold_lock(h); /* the internal lock: hold it and die */
        ssize_t w = write(ready[1], "L", 1);
        (void)w;
        pause();
        _exit(0);
    }
    char c;
    if (read(ready[0], &c, 1) != 1)
        _exit(5);
    kill(holder, SIGKILL);
    check_wait(holder, NULL);
    alloc_fails(h, 10, EOWNERDEAD);
    umem_free(h, kept); /* does nothing, and does not hang */
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.owner_died, 1);
    fprintf(stderr, "(the next umem_check message is expected)\n");
    CHECK_EQ(umem_check(h), -1);
    alloc_fails(h, 10, EOWNERDEAD);
    _exit(check_failures ? 6 : 0);
}

/* The parent's calls after a lock holder is killed run in a child of the
 * test, under an alarm, so that a hang fails the test instead of the run. */
static void lock_owner_killed(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_SHARED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *kept = umem_alloc(h, 100);
    pid_t judge = check_fork();
    if (judge == 0)
        judge_owner_death(h, kept);
    int status = 0;
    if (CHECK_GT(judge, 0))
        CHECK_EQ(check_wait(judge, &status), judge);
    CHECK_EXITED_0(status);
    umem_stats_t st;
    umem_get_stats(h, &st); /* the death is seen by every process */
    CHECK_EQ(st.owner_died, 1);
    umem_destroy(h);
}

/* fork() while the allocating threads hold a lock that fork() takes
 * after the allocator's prepare handler: glibc takes its list of streams
 * there, which a thread in fflush(NULL) holds while it waits for a
 * stream whose thread, inside getline(), holds it while it reallocs.
 * Here the program's own prepare handler, registered before umem's (a
 * constructor that runs first) and so run after it, takes program_lock,
 * which the threads hold around their calls.  A fork() that kept the
 * heap's lock and waited for program_lock would wait for ever. */
static pthread_mutex_t program_lock = PTHREAD_MUTEX_INITIALIZER;
static void program_prepare(void)
{
    pthread_mutex_lock(&program_lock);
}
static void program_parent(void)
{
    pthread_mutex_unlock(&program_lock);
}
static void program_child(void)
{
    pthread_mutex_init(&program_lock, NULL);
}
__attribute__((constructor(101))) static void program_handlers_first(void)
{
    pthread_atfork(program_prepare, program_parent, program_child);
}

/* Calls that take the heap's lock, with program_lock held: blocks with
 * a header, grown by realloc past their room, and freed. */
static void *hold_and_allocate(void *arg)
{
    umem_t *h = arg;
    unsigned long long seed = (uintptr_t)arg | 1;
    void *p[16] = {0};
    for (unsigned ops = 1; !atomic_load(&fork_stop); ops++) {
        unsigned k = (unsigned)(check_rand(&seed) % 16);
        size_t n = 70000 + check_rand(&seed) % 50000; /* past the pools */
        pthread_mutex_lock(&program_lock);
        if (p[k] && ops % 3 == 0) {
            void *q = umem_realloc(h, p[k], n * 2);
            if (q)
                p[k] = q;
        } else {
            umem_free(h, p[k]);
            p[k] = umem_alloc(h, n);
        }
        pthread_mutex_unlock(&program_lock);
        if (ops % 64 == 0)
            sched_yield();
    }
    for (unsigned k = 0; k < 16; k++)
        umem_free(h, p[k]);
    return NULL;
}

static void fork_waits_for_no_allocating_thread(void)
{
    /* Room for every block the threads hold (2 x 16 of up to 240 KB on
     * the fixed heap), so that the child's allocations cannot fail. */
    umem_t *heaps[2] = {umem_create(64 << 20, 0), umem_create(1 << 20, UMEM_CACHED | UMEM_GROW)};
    CHECK_NE(heaps[0], NULL);
    CHECK_NE(heaps[1], NULL);
    if (!heaps[0] || !heaps[1])
        return;
    atomic_store(&fork_stop, 0);
    pthread_t tid[4];
    for (int t = 0; t < 4; t++)
        CHECK_EQ(pthread_create(&tid[t], NULL, hold_and_allocate, heaps[t % 2]), 0);
    for (int i = 0; i < 40; i++) {
        check_where("fork #%d", i);
        pid_t pid = check_fork();
        if (pid == 0) {
            int bad = 0;
            for (int k = 0; k < 2; k++) {
                void *p = umem_alloc(heaps[k], 100000), *q = umem_alloc(heaps[k], 100);
                bad += !p || !q;
                umem_free(heaps[k], p);
                umem_free(heaps[k], q);
                bad += umem_check(heaps[k]) != 0;
            }
            _exit(bad ? 1 : 0);
        }
        int status = 0;
        if (CHECK_GT(pid, 0))
            CHECK_EQ(check_wait(pid, &status), pid);
        CHECK_EXITED_0(status);
    }
    atomic_store(&fork_stop, 1);
    for (int t = 0; t < 4; t++)
        pthread_join(tid[t], NULL);
    for (int k = 0; k < 2; k++) {
        check_where("heap #%d, after the forks", k);
        umem_stats_t st;
        umem_get_stats(heaps[k], &st);
        CHECK_EQ(umem_check(heaps[k]), 0); /* what was done without the lock, settled */
        CHECK_EQ(st.allocs, st.frees);
        CHECK_EQ(st.bytes_in_use, 0);
        CHECK_EQ(st.large_blocks, 0);
        umem_destroy(heaps[k]);
    }
}

/* fork() from a signal handler that interrupts the allocator, as older
 * POSIX allowed (fork() was async-signal-safe), in a process with one
 * thread: another process sends the signals, the handler forks a child
 * that exits at once.  A prepare handler that waited for the lock the
 * interrupted call holds would wait for ever. */
static volatile sig_atomic_t handler_forks, handler_failures;

static void fork_in_handler(int sig)
{
    (void)sig;
    int saved = errno, status = 0;
    pid_t pid = check_fork();
    if (pid == 0)
        _exit(0);
    pid_t r = check_wait(pid, &status);
    if (pid < 0 || r != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        handler_failures++;
    handler_forks++;
    errno = saved;
}

/* The sender: SIGUSR1 to `me` every 500 us, until the test ends, or
 * dies. */
static void send_signals(pid_t me)
{
    while (getppid() == me) {
        kill(me, SIGUSR1);
        usleep(500);
    }
    _exit(0);
}

static void fork_from_signal_handler(void)
{
    umem_t *heaps[2] = {umem_create(4 << 20, 0), umem_create(1 << 20, UMEM_CACHED | UMEM_GROW)};
    CHECK_NE(heaps[0], NULL);
    CHECK_NE(heaps[1], NULL);
    if (!heaps[0] || !heaps[1])
        return;
    struct sigaction sa = {0}, old;
    sa.sa_handler = fork_in_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    /* Blocked until the sender exists: a signal inside that fork(),
     * between its handlers, would make the handler's fork() wait for the
     * C library's own fork lock in a process that has had threads. */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    sigaction(SIGUSR1, &sa, &old);
    handler_forks = handler_failures = 0;
    pid_t me = getpid(), sender = check_fork();
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    if (sender == 0)
        send_signals(me);
    CHECK_GT(sender, 0);
    void *p[2][64] = {{0}};
    unsigned long long seed = 7;
    while (sender > 0 && handler_forks < 200) {
        unsigned k = (unsigned)(check_rand(&seed) % 64), which = k % 2;
        umem_free(heaps[which], p[which][k]);
        p[which][k] = umem_alloc(heaps[which], 1 + check_rand(&seed) % 100000);
        CHECK_NE(p[which][k], NULL);
    }
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    if (sender > 0) { /* kill(-1) would be every process's end */
        kill(sender, SIGKILL);
        check_wait(sender, NULL);
    }
    signal(SIGUSR1, SIG_IGN); /* one still pending goes */
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    sigaction(SIGUSR1, &old, NULL);
    CHECK_EQ(handler_failures, 0);
    for (int which = 0; which < 2; which++) {
        check_where("heap #%d, after %d handler forks", which, (int)handler_forks);
        for (unsigned k = 0; k < 64; k++)
            umem_free(heaps[which], p[which][k]);
        umem_stats_t st;
        umem_get_stats(heaps[which], &st);
        CHECK_EQ(umem_check(heaps[which]), 0);
        CHECK_EQ(st.allocs, st.frees);
        CHECK_EQ(st.bytes_in_use, 0);
        umem_destroy(heaps[which]);
    }
}

/* free and realloc leave errno alone, around a purge, an unmap and a
 * trim included; a failing call sets it. */
static void errno_kept_by_free_and_realloc(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *small[240];
    for (int i = 0; i < 240; i++)
        small[i] = umem_alloc(h, 200000); /* 46 MiB inside the heap: over UMEM_PURGE_KEEP */
    char *huge = umem_alloc(h, (size_t)100 << 20); /* past the map cache's room */
    char *big = umem_alloc(h, (size_t)32 << 20);
    CHECK_NE(huge, NULL);
    CHECK_NE(big, NULL);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t purges = st.purges, mapped = st.mapped_bytes;
    errno = 1789;
    big = umem_realloc(h, big, (size_t)10 << 20); /* shrunk: mremap, or a move */
    int e = errno;
    CHECK_NE(big, NULL);
    CHECK_EQ(e, 1789);
    big = umem_realloc(h, big, (size_t)40 << 20); /* grown */
    e = errno;
    CHECK_NE(big, NULL);
    CHECK_EQ(e, 1789);
    umem_free(h, huge); /* unmapped at once */
    umem_get_stats(h, &st);
    CHECK_EQ(errno, 1789);
    CHECK_LT(st.mapped_bytes, mapped);
    umem_free(h, big);
    for (int i = 0; i < 240; i++)
        umem_free(h, small[i]); /* the heap empties: a purge */
    umem_get_stats(h, &st);
    CHECK_EQ(errno, 1789);
    CHECK_GT(st.purges, purges);
    umem_free(h, NULL);
    CHECK_EQ(errno, 1789);
    void *kept = umem_realloc(h, umem_alloc(h, 10), (size_t)1 << 62);
    e = errno;
    CHECK_EQ(kept, NULL);
    CHECK_EQ(e, ENOMEM);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* Every test above, in order. */
/* ---- UMEM_DEBUG ---- */

/* Random allocs, reallocs, aligned allocs and frees on a heap made with
 * `flags` and UMEM_DEBUG, on a model of fewer slots (struct model, its
 * flags UMEM_DEBUG included): the contents survive, each block's usable
 * size is what was asked for, a realloc moves the block, umem_check
 * passes, and allocs - frees counts the live blocks and those held back. */
enum { DEBUG_SLOTS = 256, DEBUG_OPS = 12000 };

static int debug_model_realloc(struct model *m, int op, unsigned s, unsigned long long r)
{
    size_t n = 1 + (r >> 8) % (8 << 10);
    model_where(m, "realloc", op, s, n);
    unsigned char *q = umem_realloc(m->h, m->ptr[s], n);
    if (!q) {
        CHECK_EQ(errno, ENOMEM);
        return 0;
    }
    CHECK_NE(q, m->ptr[s]);
    CHECK_EQ(umem_usable_size(m->h, q), n);
    size_t kept = m->len[s] < n ? m->len[s] : n;
    CHECK_EQ(first_changed(q, kept, m->tag[s]), kept);
    m->ptr[s] = q;
    m->len[s] = n;
    fill(q, n, m->tag[s]);
    return 1;
}

/* Allocations as the model's, but for a growing heap's one time in two
 * hundred of 3 MiB, and usable sizes exact. */
static int debug_model_alloc(struct model *m, int op, unsigned s, unsigned long long r)
{
    int grow = (m->flags & UMEM_GROW) != 0;
    size_t n = grow && r % 200 == 0 ? (size_t)3 << 20 : 1 + (r >> 8) % (16 << 10);
    size_t align = r % 7 == 0 ? (size_t)16 << (r >> 40) % 9 : 0;
    model_where(m, align ? "memalign" : "alloc", op, s, n);
    m->ptr[s] = align ? umem_memalign(m->h, align, n) : umem_alloc(m->h, n);
    if (!m->ptr[s]) {
        CHECK_EQ(errno, ENOMEM);
        CHECK_EQ(grow, 0); /* only a fixed heap runs out */
        return 0;
    }
    CHECK_EQ((uintptr_t)m->ptr[s] % (align ? align : 16), 0);
    CHECK_EQ(umem_usable_size(m->h, m->ptr[s]), n);
    m->len[s] = n;
    m->tag[s] = (unsigned)op;
    fill(m->ptr[s], n, m->tag[s]);
    m->live++;
    return 1;
}

/* One operation, drawn as model_step draws it. */
static int debug_model_step(struct model *m, int op)
{
    unsigned s = (unsigned)(check_rand(&m->seed) % m->slots);
    unsigned long long r = check_rand(&m->seed);
    if (m->ptr[s] && r % 4 == 0)
        return debug_model_realloc(m, op, s, r);
    if (m->ptr[s]) {
        model_where(m, "free", op, s, m->len[s]);
        CHECK_EQ(first_changed(m->ptr[s], m->len[s], m->tag[s]), m->len[s]);
        umem_free(m->h, m->ptr[s]);
        m->ptr[s] = NULL;
        m->live--;
        return 1;
    }
    return debug_model_alloc(m, op, s, r);
}

static void debug_model_run(unsigned flags)
{
    static struct model m;
    m = (struct model){
        .flags = flags | UMEM_DEBUG, .slots = DEBUG_SLOTS, .seed = 0xdeb60000u + flags};
    where_flags(m.flags);
    m.h = umem_create(flags & UMEM_GROW ? 4096 : 8 << 20, m.flags);
    CHECK_NE(m.h, NULL);
    if (!m.h)
        return;
    for (int op = 0; op < DEBUG_OPS; op++)
        if (debug_model_step(&m, op))
            model_check_now(&m, op);
    check_where("flags %#x %s, after the run's %d ops", m.flags, flag_names(m.flags),
                DEBUG_OPS);
    umem_stats_t st;
    umem_get_stats(m.h, &st);
    CHECK_GT(st.held_blocks, 0);
    if (!CHECK_EQ(st.allocs - st.frees, m.live + st.held_blocks))
        fprintf(stderr, "  allocs %llu frees %llu live %llu held %llu\n",
                (unsigned long long)st.allocs, (unsigned long long)st.frees,
                (unsigned long long)m.live, (unsigned long long)st.held_blocks);
    model_free_all(&m);
    where_flags(m.flags);
    CHECK_EQ(umem_check(m.h), 0);
    umem_destroy(m.h); /* nothing left to list */
}

static void debug_every_flag_combination(void)
{
    for (unsigned i = 0; i < EVERY_FLAGS; i++)
        debug_model_run(every_flags[i]);
}

/* umem_check finds a guard byte overwritten, and passes once it is put
 * back. */
static void debug_check_finds_overrun(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_DEBUG);
    unsigned char *p = umem_alloc(h, 100);
    CHECK_EQ(umem_check(h), 0);
    fprintf(stderr, "(the next umem_check message is expected)\n");
    unsigned char was = p[100];
    p[100] = (unsigned char)~was;
    CHECK_EQ(umem_check(h), -1);
    p[100] = was;
    CHECK_EQ(umem_check(h), 0);
    umem_free(h, p);
    umem_destroy(h);
}

/* A write after free is found when the block leaves the quarantine,
 * pushed out by the frees after it. */
static void write_after_free_leaves_quarantine(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 40);
    name_pointer(t, p);
    umem_free(h, p);
    p[7] = 1;
    for (unsigned i = 0; i < UMEM_QUARANTINE_BLOCKS + 10; i++)
        umem_free(h, umem_alloc(h, 16));
}

static void death_debug_write_after_free(void)
{
    expect_death_on(UMEM_DEBUG, write_after_free_leaves_quarantine, "was written after its free");
}

static void death_debug_cached_write_after_free(void)
{
    expect_death_on(UMEM_DEBUG | UMEM_CACHED, write_after_free_leaves_quarantine,
                    "was written after its free");
}

/* UMEM_DEBUG on a shared heap: a block the parent allocated is freed by
 * the child, and the parent's heap holds it back, its record whole. */
static void debug_shared_heap_across_fork(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_SHARED | UMEM_DEBUG);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    char *p = umem_alloc(h, 300);
    memset(p, 'x', 300);
    pid_t pid = check_fork();
    if (pid == 0) {
        umem_free(h, p);
        umem_free(h, umem_alloc(h, 50));
        _exit(umem_check(h) == 0 ? 0 : 1);
    }
    int status = 0;
    if (CHECK_GT(pid, 0))
        CHECK_EQ(check_wait(pid, &status), pid);
    CHECK_EXITED_0(status);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.held_blocks, 2);
    CHECK_EQ(st.allocs - st.frees, 2);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* ---- exact cases of the policy, the counters and the checks ---- */

/* Address-ordered first fit among the large free blocks: a request that
 * the lowest of them fits exactly takes it, though the tree's root is a
 * free block too small and the rest of the heap, above, would fit too. */
static void first_fit_takes_the_lowest_exact_fit(void)
{
    for (unsigned i = 0; i < 3; i++) {
        umem_t *h = umem_create(1 << 20, all_flags[i]);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        char *a = umem_alloc(h, 3000), *s1 = umem_alloc(h, 64);
        char *b = umem_alloc(h, 2000), *s2 = umem_alloc(h, 64);
        CHECK(a);
        CHECK_LT(a, s1);
        CHECK_LT(s1, b);
        CHECK_LT(b, s2); /* carved upwards */
        umem_free(h, b); /* the tree: b below the rest of the heap */
        umem_free(h, a); /* a below b: the root is b, a its left */
        CHECK_EQ(umem_check(h), 0);
        char *again = umem_alloc(h, 3000);
        CHECK_EQ(again, a);
        umem_free(h, again);
        umem_free(h, s1);
        umem_free(h, s2);
        umem_stats_t st;
        umem_get_stats(h, &st);
        CHECK_EQ(st.bytes_in_use, 0);
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
}

/* An overrun that writes zeros over the next block's header: the header's
 * UMEM_PREV_FREE bit stays clear, so only its check can find it. */
static void overrun_zeros_then_free(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 64), *q = umem_alloc(h, 64);
    char *low = p < q ? p : q;
    memset(low + 64, 0, UMEM_HEADER); /* a 64-byte block has no slack */
    snprintf(t, 64, "%p", (void *)low);
    umem_free(h, low);
}

static void death_overrun_of_zeros(void)
{
    expect_death(overrun_zeros_then_free, "write past the end");
}

/* realloc grows a block in place into the free block after it when the
 * two make exactly the room needed, keeping the contents and the counts. */
static void realloc_grows_into_an_exact_fit(void)
{
    for (unsigned i = 0; i < 3; i++) {
        umem_t *h = umem_create(1 << 20, all_flags[i]);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        /* Blocks of 128, 224 and 128 bytes, headers included. */
        unsigned char *p = umem_alloc(h, 100), *q = umem_alloc(h, 200), *r = umem_alloc(h, 100);
        CHECK(p);
        CHECK_LT(p, q);
        CHECK_LT(q, r);
        fill(p, 100, 5);
        umem_free(h, q);
        umem_stats_t before, after;
        umem_get_stats(h, &before);
        /* 336 bytes need a block of 352: p's and q's exactly. */
        unsigned char *grown = umem_realloc(h, p, 336);
        CHECK_EQ(grown, p);
        if (!grown)
            grown = p;
        CHECK(intact(grown, 100, 5));
        CHECK_EQ(umem_usable_size(h, grown), 336);
        umem_get_stats(h, &after);
        CHECK_EQ(after.bytes_in_use, before.bytes_in_use + 224);
        CHECK_EQ(after.allocs, before.allocs);
        CHECK_EQ(after.frees, before.frees);
        CHECK_EQ(umem_check(h), 0);
        umem_free(h, grown);
        umem_free(h, r);
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
}

/* ---- a lock found busy ---- */

#include <sys/syscall.h>

struct waiter {
    umem_t *h;
    atomic_int tid; /* the thread's id, once it is about to allocate */
    void *p;
};

static void *allocate_after_a_wait(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->tid, (int)syscall(SYS_gettid));
    w->p = umem_alloc(w->h, 100);
    return NULL;
}

/* The system call that thread `tid` of this process is blocked in; -1
 * while it runs, -2 where the system does not tell. */
static long blocked_in(int tid)
{
    char path[64], text[32] = "";
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -2;
    if (!fgets(text, sizeof text, f))
        text[0] = '\0';
    fclose(f);
    if (strncmp(text, "running", 7) == 0)
        return -1;
    char *end;
    long n = strtol(text, &end, 10);
    return end == text ? -2 : n;
}

static int is_nap(long call)
{
#ifdef SYS_nanosleep
    if (call == SYS_nanosleep)
        return 1;
#endif
    return call == SYS_clock_nanosleep;
}

/* An allocation that finds the lock busy counts in lock_contended as well
 * as in lock_count.  The lock is held here until the other thread naps
 * between its attempts, which it does only once it has found the lock
 * taken: no timing decides what is counted. */
static void lock_contended_counts_a_busy_lock(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    struct waiter w = {.h = h};
    umem__hook_hold_lock(h); /* the internal lock, taken uncounted */
    pthread_t tid;
    int made = pthread_create(&tid, NULL, allocate_after_a_wait, &w) == 0;
    CHECK(made);
    long in = -1;
    uint64_t since = monotonic_ms();
    while (made && !is_nap(in) && in != -2 && monotonic_ms() - since < 60000) {
        int t = atomic_load(&w.tid);
        in = t ? blocked_in(t) : -1;
        sched_yield();
    }
    umem__hook_drop_lock(h);
    if (made)
        pthread_join(tid, NULL);
    if (!made) {
        /* nothing to count */
    } else if (in == -2) {
        fprintf(stderr, "  no /proc/self/task/N/syscall here: lock_contended not checked\n");
    } else {
        CHECK(is_nap(in)); /* else it never waited within 60 s */
        umem_stats_t st;
        umem_get_stats(h, &st);
        CHECK_NE(w.p, NULL);
        CHECK_EQ(st.allocs, 1);
        CHECK_EQ(st.lock_count, 1);
        CHECK_EQ(st.lock_contended, 1);
    }
    umem_free(h, w.p);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* ---- the pools' figures ---- */

/* The permissions /proc/self/maps gives the page at a ("rw-p", "---p"),
 * into perms[5]; "" when no mapping holds it. */
static void perms_at(const void *a, char perms[5])
{
    perms[0] = '\0';
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && (uintptr_t)a >= lo &&
            (uintptr_t)a < hi) {
            memcpy(perms, p, 5);
            break;
        }
    }
    if (f)
        fclose(f);
}

/* A unit map lies between two no-access gaps of UMEM_MAP_GUARD (2 MiB),
 * so that a write running off the heap below, or off whatever lies under
 * the map, faults rather than change which page a free finds. */
static void unit_map_lies_between_no_access_gaps(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t bytes;
    char *map = umem__hook_unit_map(h, &bytes), perms[5];
    perms_at(map, perms);
    CHECK_EQ(strcmp(perms, "rw-p"), 0);
    /* The map's last page may hold less than a page of it. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *end = map + (bytes + page - 1) / page * page;
    const char *gaps[] = {map - 1, map - (2 << 20), end, end + (2 << 20) - 1};
    for (unsigned i = 0; i < 4; i++) {
        check_where("%u bytes from the unit map", i);
        perms_at(gaps[i], perms);
        CHECK_EQ(strcmp(perms, "---p"), 0);
    }
    check_where_clear();
    umem_destroy(h);
}

/* A block handed out from a pool's page moves its slot from cached_bytes
 * to bytes_in_use, and back when it is freed. */
static void cached_bytes_follow_each_block(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    umem_stats_t st[4];
    void *a = umem_alloc(h, 100); /* a slot of 112 bytes in a new page */
    umem_get_stats(h, &st[0]);
    void *b = umem_alloc(h, 100);
    umem_get_stats(h, &st[1]);
    umem_free(h, a);
    umem_get_stats(h, &st[2]);
    umem_free(h, b);
    umem_get_stats(h, &st[3]);
    CHECK_EQ(st[0].pool_pages, 1);
    CHECK_EQ(st[3].pool_pages, 1);
    CHECK_GT(st[0].cached_bytes, 0);
    CHECK_EQ(st[1].bytes_in_use, st[0].bytes_in_use + 112);
    CHECK_EQ(st[1].cached_bytes, st[0].cached_bytes - 112);
    CHECK_EQ(st[2].bytes_in_use, st[0].bytes_in_use);
    CHECK_EQ(st[2].cached_bytes, st[0].cached_bytes);
    CHECK_EQ(st[3].bytes_in_use, 0);
    CHECK_EQ(st[3].cached_bytes, st[0].cached_bytes + 112);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A thread's pages of one class, emptied by its own frees: the class
 * keeps one empty page to serve, and the others go back to the heap,
 * whichever list held them. */
static void owner_gives_back_emptied_pages(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { MOST = 1000 };
    static void *p[MOST];
    umem_stats_t st;
    unsigned n = 0;
    do { /* two pages filled, a third begun */
        p[n++] = umem_alloc(h, 1000);
        umem_get_stats(h, &st);
    } while (n < MOST && st.pool_pages < 3);
    for (unsigned k = 0; k < 5 && n < MOST; k++)
        p[n++] = umem_alloc(h, 1000);
    CHECK_EQ(st.pool_pages, 3);
    CHECK_EQ(st.cache_flushes, 0);
    for (unsigned k = 0; k < n; k++) {
        CHECK_NE(p[k], NULL);
        umem_free(h, p[k]);
    }
    umem_get_stats(h, &st);
    CHECK_EQ(st.pool_pages, 1);
    CHECK_EQ(st.cache_flushes, 2);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A thread's page of one class, full, emptied by another thread's frees:
 * the first free sets a hint, and the owner takes the page back the next
 * time it needs room, instead of carving a new one.  The threads take
 * turns (the other is joined before the owner goes on). */
struct remote_batch {
    umem_t *h;
    void **p;
    unsigned n;
};

static void *free_batch(void *arg)
{
    struct remote_batch *b = arg;
    for (unsigned k = 0; k < b->n; k++)
        umem_free(b->h, b->p[k]);
    return NULL;
}

static void owner_takes_back_a_page_others_emptied(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { MOST = 1000 };
    static void *p[MOST];
    umem_stats_t st;
    unsigned n = 0, first_page = 0;
    do { /* the first page full and watched, a second begun */
        p[n++] = umem_alloc(h, 1000);
        umem_get_stats(h, &st);
        if (st.pool_pages == 1)
            first_page = n;
    } while (n < MOST && st.pool_pages < 2);
    pthread_t tid;
    struct remote_batch b = {h, p, first_page};
    int made = pthread_create(&tid, NULL, free_batch, &b) == 0;
    CHECK(made);
    if (made)
        pthread_join(tid, NULL);
    else
        free_batch(&b); /* not remote, but the test goes on to its end */
    unsigned second = n; /* the second page's blocks, and as many more */
    while (n < MOST && n < second + first_page + 5) {
        p[n] = umem_alloc(h, 1000);
        CHECK_NE(p[n], NULL);
        n++;
    }
    umem_get_stats(h, &st);
    CHECK_EQ(st.cache_refills, 2);
    CHECK_EQ(st.pool_pages, 2);
    CHECK_EQ(st.remote_frees, first_page);
    for (unsigned k = first_page; k < n; k++)
        umem_free(h, p[k]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A heap that empties (an eighth of it in use) gives every free page back
 * on the call that sees it, those freed just before included; not before,
 * while more than an eighth is in use. */
static void emptied_heap_gives_back_every_free_page_past_its_keep(void)
{
    /* From before the heap: a range goes back for its age a whole delay
     * after it was freed at the soonest, never sooner. */
    uint64_t began = monotonic_ms();
    umem_t *h = umem_create(4096, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    /* each under UMEM_LARGE: in the heap; 43 MiB, over UMEM_PURGE_KEEP */
    enum { N = 48, BLOCK = 900 << 10 };
    unsigned char *p[N];
    for (unsigned i = 0; i < N; i++) {
        p[i] = umem_alloc(h, BLOCK);
        CHECK_NE(p[i], NULL);
        if (p[i])
            memset(p[i], 0x3c, BLOCK);
    }
    umem_stats_t st;
    for (unsigned i = 0; i + 1 < N; i++) {
        umem_free(h, p[i]);
        umem_get_stats(h, &st);
        /* Half the heap and more in use: only pages unused for the purge
         * delay go back (no range is that old yet). */
        if (i < N / 2 && monotonic_ms() - began < UMEM_PURGE_DELAY_MS / 2)
            CHECK_EQ(st.released_bytes, 0);
    }
    umem_get_stats(h, &st);
    /* What the blocks freed had resident (each was written whole). */
    uint64_t freed = (uint64_t)(N - 1) * BLOCK;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    /* Each free block keeps the page of its header and of its footer: two
     * such blocks at most in each region (the heap's first and the ones
     * it mapped past its reservation).  (A range that went back for its
     * age would have left too little to purge when the heap emptied.)
     * The first UMEM_PURGE_KEEP bytes of free pages stay, for
     * allocations to come (fewer resident ones where free blocks hold
     * pages never touched, as regions' ends do), and what was freed after
     * the last purge, under UMEM_PURGE_MIN, waits. */
    uint64_t edges = 4 * page * (1 + umem__hook_spans(h)), waits = UMEM_PURGE_MIN;
    if (monotonic_ms() - began < UMEM_PURGE_DELAY_MS / 2) {
        CHECK_GE(st.purges, 1);
        CHECK_GE(st.released_bytes + edges + UMEM_PURGE_KEEP + waits, freed);
        CHECK_LE(st.released_bytes + UMEM_PURGE_KEEP / 2, freed + edges);
    }
    if (st.released_bytes + edges + UMEM_PURGE_KEEP + waits < freed)
        fprintf(stderr, "  %llu bytes freed, %llu given back\n", (unsigned long long)freed,
                (unsigned long long)st.released_bytes);
    /* What was kept goes back at umem_trim. */
    umem_trim(h, 0);
    umem_get_stats(h, &st);
    CHECK_GE(st.released_bytes + edges, freed);
    umem_free(h, p[N - 1]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* ---- fork() ---- */

/* The child of fork() allocates at once from every private heap, locked
 * or cached, each lock made anew and free.  The child has its time limit
 * (CHECK_CHILD_SECONDS), so that a lock left held fails this test by name.
 * It runs first, so that such a bug is named by the test about it rather
 * than by the first death test whose child it hangs. */
static void child_of_fork_allocates_at_once(void)
{
    umem_t *heaps[2] = {umem_create(1 << 20, 0), umem_create(1 << 20, UMEM_CACHED)};
    CHECK(heaps[0]);
    CHECK(heaps[1]);
    if (!heaps[0] || !heaps[1]) {
        umem_destroy(heaps[0]);
        umem_destroy(heaps[1]);
        return;
    }
    void *kept = umem_alloc(heaps[0], 100);
    pid_t pid = check_fork();
    if (pid == 0) {
        int bad = 0;
        for (int k = 0; k < 2; k++) {
            void *p = umem_alloc(heaps[k], 100), *q = umem_alloc(heaps[k], 5000);
            bad += !p || !q;
            umem_free(heaps[k], p);
            umem_free(heaps[k], q);
            bad += umem_check(heaps[k]) != 0;
        }
        umem_free(heaps[0], kept);
        _exit(bad ? 1 : 0);
    }
    int status = 0;
    if (CHECK_GT(pid, 0))
        CHECK_EQ(check_wait(pid, &status), pid);
    CHECK_EXITED_0(status);
    umem_free(heaps[0], kept);
    CHECK_EQ(umem_check(heaps[0]), 0);
    CHECK_EQ(umem_check(heaps[1]), 0);
    umem_destroy(heaps[0]);
    umem_destroy(heaps[1]);
}

/* ---- a lock lent by a fork ---- */

struct borrower {
    umem_t *h;
    atomic_int done;
    int bad;
};

static void *allocate_while_forking(void *arg)
{
    struct borrower *b = arg;
    unsigned char *p = umem_alloc(b->h, 100);
    b->bad += p == NULL;
    if (p) {
        fill(p, 100, 8);
        unsigned char *q = umem_realloc(b->h, p, 200000); /* moves */
        b->bad += q == NULL || !intact(q, 100, 8);
        p = q ? q : p;
    }
    umem_free(b->h, p);
    atomic_store(&b->done, 1);
    return NULL;
}

/* While a fork holds a heap's lock (between its prepare and its parent
 * handler), a call that finds the lock busy does without it: allocations
 * get mappings of their own, frees and moves wait on a list, and the next
 * holder of the lock settles them.  The handlers are called here as
 * fork() calls them, and the other thread's calls are waited for within
 * a generous bound: a call that waited for the lock fails this test
 * instead of hanging (the lock is let go either way). */
static void fork_lends_the_lock_to_calls(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    struct borrower b = {.h = h};
    umem__hook_fork_prepare();
    pthread_t tid;
    int made = pthread_create(&tid, NULL, allocate_while_forking, &b) == 0;
    CHECK(made);
    uint64_t since = monotonic_ms();
    while (made && !atomic_load(&b.done) && monotonic_ms() - since < 60000)
        sched_yield();
    CHECK(atomic_load(&b.done)); /* else its calls waited for the fork */
    umem__hook_fork_parent();
    if (made)
        pthread_join(tid, NULL);
    CHECK_EQ(b.bad, 0);
    umem_stats_t st;
    umem_get_stats(h, &st); /* takes the lock: settles what was lent */
    /* Two mappings, a move and a free, each counted once settled. */
    CHECK_EQ(st.lent_calls, 4);
    CHECK_EQ(st.allocs, 1);
    CHECK_EQ(st.frees, 1);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(st.large_blocks, 0);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}


static int run_the_rest(void);

/* The tests of single calls: the model, arguments, misuse. */
static int run_all(void)
{
    /* First: if a fork's child cannot allocate, every test below that
     * forks hangs instead of failing. */
    RUN(child_of_fork_allocates_at_once);
    RUN(model_every_flag_combination);
    RUN(create_rejects_bad_arguments);
    RUN(alignment_and_zero);
    RUN(exhaustion_then_recovery);
    RUN(full_coalescing);
    RUN(death_foreign);
    RUN(death_misaligned);
    RUN(death_interior);
    RUN(death_double_free);
    RUN(death_overrun);
    RUN(death_aligned_double_free);
    RUN(death_realloc_of_freed);
    RUN(death_cached_double_free);
    RUN(death_cached_forged_link);
    RUN(death_cached_remote_double_free);
    RUN(death_cached_remote_link_written);
    RUN(death_cached_interior);
    RUN(death_cached_never_handed_out);
    RUN(death_cached_foreign);
    RUN(death_kept_double_free);
    RUN(death_kept_freed_elsewhere);
    RUN(death_kept_realloc);
    RUN(death_kept_written);
    RUN(death_kept_link_written);
#if !defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer sees the fork handlers' order of locks in the
     * child, after earlier tests took the program's lock and a heap's in
     * the other order: a lock-order warning, where one thread runs. */
    RUN(death_kept_freed_twice_in_a_fork);
#endif
    return run_the_rest();
}

/* The tests of the heap at work: threads, growth, pools, fork, the debug
 * layer, and the cases planted bugs showed missing. */
static int run_the_rest(void)
{
    RUN(check_finds_overrun);
    RUN(check_finds_a_kept_block_written);
    RUN(check_finds_stale_header_on_list);
    RUN(check_finds_stale_header_in_tree);
    RUN(threads_hammer_one_heap);
    RUN(realloc_in_place_and_moved);
    RUN(grow_then_give_back);
    RUN(cached_threads_free_each_others_blocks);
    RUN(thread_exits_holding_blocks);
    RUN(producer_consumer_takes_the_lock_per_page);
    RUN(ended_threads_pages_are_adopted);
    RUN(check_finds_untagged_free_slot);
    RUN(large_mappings_are_reused);
    RUN(fork_from_threads_child_allocates);
    /* Before the next: with a lock that is not lent, that one hangs. */
    RUN(fork_lends_the_lock_to_calls);
    RUN(fork_waits_for_no_allocating_thread);
#if !defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer sees the handler's fork() take the list's lock
     * while the interrupted call holds a heap's, the reverse of a fork()'s
     * order: a deadlock with a second thread forking at that moment, but
     * this process has one thread, the case this test is about.  Under
     * valgrind (UMEM_TEST_NO_HANDLER_FORK, set by tests/check.sh) the
     * test stopped making progress once earlier tests had made threads;
     * it runs natively and under AddressSanitizer. */
    if (!getenv("UMEM_TEST_NO_HANDLER_FORK"))
        RUN(fork_from_signal_handler);
#else
    (void)fork_from_signal_handler;
#endif
    RUN(errno_kept_by_free_and_realloc);
    RUN(shared_heap_across_fork);
    RUN(lock_owner_killed);
    RUN(debug_every_flag_combination);
    RUN(debug_check_finds_overrun);
    RUN(death_debug_write_after_free);
    RUN(death_debug_cached_write_after_free);
    RUN(debug_shared_heap_across_fork);
    RUN(first_fit_takes_the_lowest_exact_fit);
    RUN(death_overrun_of_zeros);
    RUN(realloc_grows_into_an_exact_fit);
    RUN(lock_contended_counts_a_busy_lock);
    RUN(cached_bytes_follow_each_block);
    RUN(unit_map_lies_between_no_access_gaps);
    RUN(owner_gives_back_emptied_pages);
    RUN(owner_takes_back_a_page_others_emptied);
    RUN(emptied_heap_gives_back_every_free_page_past_its_keep);
    return CHECK_EXIT_STATUS();
}

#ifndef TEST_UMEM_NO_MAIN
int main(void)
{
    return run_all();
}
#endif
