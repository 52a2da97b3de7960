/* Tests of umem.h: model, edge cases, misuse, threads and fork. */
#include "../umem.h"
#include "check.h"

#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

/* Fill and verify a block with a pattern that depends on its identity, so
 * overlapping blocks or a block moved under us show up as a mismatch. */
static void fill(unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tag * 131u + i * 7u);
}

static int intact(const unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(tag * 131u + i * 7u))
            return 0;
    return 1;
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

/* Random allocs, reallocs, aligned allocs and frees against a model of
 * the live blocks, on a heap made with `flags`. */
static void model_run(unsigned flags)
{
    enum { SLOTS = 512, OPS = 40000, HEAP = 4 << 20 };
    static unsigned char *ptr[SLOTS];
    static size_t len[SLOTS];
    static unsigned tag[SLOTS];
    unsigned long long seed = 0x5eed0000u + flags;
    umem_t *h = umem_create(flags & UMEM_GROW ? 4096 : HEAP, flags);
    CHECK(h != NULL);
    if (!h)
        return;
    uint64_t allocs = 0, frees = 0, failed = 0, calls = 0;
    for (int op = 0; op < OPS; op++) {
        unsigned s = (unsigned)(check_rand(&seed) % SLOTS);
        unsigned long long r = check_rand(&seed);
        if (ptr[s] && r % 4 == 0) {
            /* realloc: the contents up to the smaller size survive */
            size_t n = 1 + (r >> 8) % (8 << 10);
            CHECK(intact(ptr[s], len[s], tag[s]));
            unsigned char *q = umem_realloc(h, ptr[s], n);
            calls++;
            if (!q) {
                CHECK(errno == ENOMEM);
                failed++;
                continue;
            }
            CHECK(intact(q, len[s] < n ? len[s] : n, tag[s]));
            CHECK(umem_usable_size(h, q) >= n);
            ptr[s] = q;
            len[s] = n;
            fill(ptr[s], n, tag[s]);
        } else if (ptr[s]) {
            CHECK(intact(ptr[s], len[s], tag[s]));
            umem_free(h, ptr[s]);
            ptr[s] = NULL;
            frees++;
            calls++;
        } else {
            size_t n = r % 100 == 0 ? HEAP - r % 4096 : 1 + (r >> 8) % (16 << 10);
            size_t align = r % 7 == 0 ? (size_t)16 << (r >> 40) % 9 : 0;
            ptr[s] = align ? umem_memalign(h, align, n) : umem_alloc(h, n);
            calls++;
            if (!ptr[s]) {
                failed++;
                CHECK(errno == ENOMEM);
                continue;
            }
            allocs++;
            CHECK((uintptr_t)ptr[s] % (align ? align : 16) == 0);
            CHECK(umem_usable_size(h, ptr[s]) >= n);
            len[s] = n;
            tag[s] = (unsigned)op;
            fill(ptr[s], n, tag[s]);
        }
        if (op % 500 == 0)
            CHECK(umem_check(h) == 0);
    }
    CHECK(umem_check(h) == 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.allocs == allocs && st.frees == frees && st.failed_allocs == failed);
    /* A growing heap never runs out; a fixed one does, for the sizes
     * near its whole size. */
    CHECK(flags & UMEM_GROW ? failed == 0 : failed > 0);
    CHECK(allocs > 10000);
    /* A large block takes the lock twice when no freed mapping is there
     * to reuse: once to look, once to add the new one. */
    if (!(flags & (UMEM_NOLOCK | UMEM_CACHED | UMEM_GROW)))
        CHECK(st.lock_count == calls);
    if ((flags & (UMEM_GROW | UMEM_NOLOCK | UMEM_CACHED)) == UMEM_GROW)
        CHECK(st.lock_count >= calls && st.lock_count <= 2 * calls);
    if (flags & UMEM_NOLOCK)
        CHECK(st.lock_count == 0);
    if (flags & UMEM_CACHED)
        CHECK(st.cache_hits > 0 && st.cache_frees > 0 && st.lock_count < calls);
    for (unsigned s = 0; s < SLOTS; s++) {
        if (ptr[s]) {
            CHECK(intact(ptr[s], len[s], tag[s]));
            umem_free(h, ptr[s]);
            ptr[s] = NULL;
        }
    }
    umem_get_stats(h, &st);
    CHECK(st.bytes_in_use == 0 && st.peak_bytes_in_use > 0);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

static void model_every_flag_combination(void)
{
    for (unsigned i = 0; i < EVERY_FLAGS; i++)
        model_run(every_flags[i]);
}

static void create_rejects_bad_arguments(void)
{
    errno = 0;
    CHECK(umem_create(16, 0) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(umem_create(SIZE_MAX, 0) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(umem_create(1 << 20, 64) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(umem_create(1 << 20, UMEM_SHARED | UMEM_NOLOCK) == NULL && errno == EINVAL);
    static const unsigned refused[] = {UMEM_SHARED | UMEM_GROW, UMEM_SHARED | UMEM_CACHED,
                                       UMEM_NOLOCK | UMEM_CACHED, 32};
    for (unsigned i = 0; i < 4; i++) {
        errno = 0;
        CHECK(umem_create(1 << 20, refused[i]) == NULL && errno == EINVAL);
    }
    umem_t *h = umem_create(4096, 0);
    CHECK(h != NULL && umem_check(h) == 0);
    umem_destroy(h);
    umem_destroy(NULL);
}

static void alignment_and_zero(void)
{
    for (unsigned i = 0; i < 3; i++) {
        umem_t *h = umem_create(1 << 20, all_flags[i]);
        CHECK(h != NULL);
        if (!h)
            continue;
        for (size_t n = 1; n <= 300; n++) {
            void *p = umem_alloc(h, n);
            CHECK(p != NULL && (uintptr_t)p % 16 == 0);
            if (n % 3)
                umem_free(h, p);
        }
        CHECK(umem_alloc(h, 0) == NULL);
        CHECK(umem_alloc(h, SIZE_MAX) == NULL);
        CHECK(umem_alloc(h, SIZE_MAX - 8) == NULL);
        umem_stats_t st;
        umem_get_stats(h, &st);
        CHECK(st.failed_allocs == 2); /* n == 0 is not a failure */
        CHECK(umem_check(h) == 0);
        umem_destroy(h);
    }
}

static void exhaustion_then_recovery(void)
{
    umem_t *h = umem_create(64 << 10, 0);
    CHECK(h != NULL);
    if (!h)
        return;
    void *p[128];
    int n = 0;
    while (n < 128 && (p[n] = umem_alloc(h, 1000)) != NULL)
        n++;
    CHECK(n > 10 && n < 128);
    CHECK(errno == ENOMEM);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.failed_allocs == 1 && st.allocs == (uint64_t)n);
    umem_free(h, p[n / 2]);
    p[n / 2] = umem_alloc(h, 1000);
    CHECK(p[n / 2] != NULL);
    for (int i = 0; i < n; i++)
        umem_free(h, p[i]);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

static void full_coalescing(void)
{
    for (unsigned i = 0; i < 3; i++) {
        umem_t *h = umem_create(1 << 20, all_flags[i]);
        CHECK(h != NULL);
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
            if (k % 50 == 0)
                CHECK(umem_check(h) == 0);
        }
        umem_stats_t st;
        umem_get_stats(h, &st);
        void *all = umem_alloc(h, st.heap_bytes - 16);
        CHECK(all != NULL);
        CHECK(umem_alloc(h, 1) == NULL);
        umem_free(h, all);
        CHECK(umem_check(h) == 0);
        umem_destroy(h);
    }
}

/* Runs `misuse` in a child; passes when the child aborts and its stderr
 * holds `expect` and the offending pointer. */
static void expect_death_on(unsigned flags, void (*misuse)(umem_t *, char *ptr_text),
                            const char *expect)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    umem_t *h = umem_create(1 << 20, flags);
    char ptr_text[64] = "";
    /* The child tells the parent the pointer it will misuse. */
    int ptr_pipe[2];
    CHECK(pipe(ptr_pipe) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(ptr_pipe[0]);
        misuse(h, ptr_text);
        ssize_t w = write(ptr_pipe[1], ptr_text, strlen(ptr_text));
        (void)w;
        close(ptr_pipe[1]);
        _exit(0); /* misuse returned: not caught */
    }
    close(fds[1]);
    close(ptr_pipe[1]);
    char err[512] = "";
    size_t got = 0;
    ssize_t r;
    while (got < sizeof err - 1 &&
           (r = read(fds[0], err + got, sizeof err - 1 - got)) > 0)
        got += (size_t)r;
    err[got] = '\0';
    r = read(ptr_pipe[0], ptr_text, sizeof ptr_text - 1);
    ptr_text[r > 0 ? r : 0] = '\0';
    close(fds[0]);
    close(ptr_pipe[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK(strstr(err, expect) != NULL);
    CHECK(strchr(err, '\n') == err + strlen(err) - 1); /* one line */
    if (!strstr(err, expect))
        fprintf(stderr, "  child said: %s", err);
    umem_destroy(h);
}

static void expect_death(void (*misuse)(umem_t *, char *ptr_text), const char *expect)
{
    expect_death_on(0, misuse, expect);
}

/* Each misuse writes the pointer into ptr_text before the bad call, and
 * sends it only if the call returns: a surviving child is a failure. */
static void free_foreign(umem_t *h, char *t)
{
    static char not_ours[64] __attribute__((aligned(16)));
    snprintf(t, 64, "%p", (void *)not_ours);
    umem_free(h, not_ours);
}
static void free_misaligned(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 100);
    snprintf(t, 64, "%p", (void *)(p + 1));
    umem_free(h, p + 1);
}
static void free_interior(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 200);
    memset(p, 0xAB, 200);
    snprintf(t, 64, "%p", (void *)(p + 64));
    umem_free(h, p + 64);
}
static void free_twice(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 100);
    umem_alloc(h, 100); /* keeps p from merging with the big free block */
    umem_free(h, p);
    snprintf(t, 64, "%p", (void *)p);
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
    snprintf(t, 64, "%p", (void *)low);
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
    snprintf(t, 64, "%p", (void *)p);
    umem_free(h, p);
}
static void realloc_freed(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 100);
    umem_alloc(h, 100);
    umem_free(h, p);
    snprintf(t, 64, "%p", (void *)p);
    umem_realloc(h, p, 200);
}
/* With UMEM_CACHED: the second free finds the block's cache tag. */
static void free_twice_cached(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 100);
    umem_free(h, p);
    snprintf(t, 64, "%p", (void *)p);
    umem_free(h, p);
}
/* With UMEM_CACHED: a block of a thread that has ended, freed twice by
 * another (two frees into a page the freeing thread does not own). */
static void *allocate_one(void *arg)
{
    *(void **)arg = umem_alloc(*(umem_t **)arg, 100);
    return NULL;
}
static void free_twice_remote(umem_t *h, char *t)
{
    void *box = h;
    pthread_t tid;
    if (pthread_create(&tid, NULL, allocate_one, &box) != 0)
        return;
    pthread_join(tid, NULL);
    umem_free(h, box);
    snprintf(t, 64, "%p", box);
    umem_free(h, box);
}
/* With UMEM_CACHED: a pointer inside a pooled block, and the start of a
 * slot never handed out. */
static void free_interior_pooled(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 200);
    snprintf(t, 64, "%p", (void *)(p + 16));
    umem_free(h, p + 16);
}
static void free_never_handed_out(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 200);
    char *next = umem__page_of(h, p)->limit - umem_usable_size(h, p); /* its page's last */
    snprintf(t, 64, "%p", (void *)next);
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
    snprintf(t, 64, "%p", (void *)victim);
    umem_alloc(h, 40); /* would be victim */
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

static void check_finds_overrun(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    char *p = umem_alloc(h, 64);
    char *q = umem_alloc(h, 64);
    char *low = p < q ? p : q;
    CHECK(umem_check(h) == 0);
    fprintf(stderr, "(the next umem_check message is expected)\n");
    low[64 + 3] ^= 1; /* one bit of the next block's header */
    CHECK(umem_check(h) == -1);
    low[64 + 3] ^= 1;
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

/* A free block merged into the block before it leaves its old header in
 * the merged block's payload, check word intact: put on a list in the
 * merged block's place, it must still be found out. */
static void check_finds_stale_header_on_list(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    char *a = umem_alloc(h, 64), *b = umem_alloc(h, 64), *c = umem_alloc(h, 64);
    CHECK(a < b && b < c); /* carved from the low end, upwards */
    umem_free(h, b);       /* b: free, on its list */
    umem_free(h, a);       /* a absorbs b; b's header is stale inside a */
    CHECK(umem_check(h) == 0);
    struct umem_free *merged = (struct umem_free *)(a - UMEM_HEADER);
    struct umem_free *stale = (struct umem_free *)(b - UMEM_HEADER);
    unsigned i = (unsigned)((umem__size(merged) - UMEM_MIN_BLOCK) / 16);
    CHECK(h->bin[i] == merged);
    stale->next = merged->next;
    stale->prev = NULL;
    h->bin[i] = stale;
    fprintf(stderr, "(the next umem_check message is expected)\n");
    CHECK(umem_check(h) == -1);
    h->bin[i] = merged;
    CHECK(umem_check(h) == 0);
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
    CHECK(umem_check(h) == 0);
    struct umem_node *merged = (struct umem_node *)(a - UMEM_HEADER);
    struct umem_node *stale = (struct umem_node *)(b - UMEM_HEADER);
    struct umem_node **path[UMEM_PATH];
    unsigned depth = umem__tree_path(&h->root, merged, path);
    CHECK(depth > 0);
    if (depth > 0) {
        stale->left = merged->left;
        stale->right = merged->right;
        stale->max = merged->max;
        stale->height = merged->height;
        *path[depth - 1] = stale;
        fprintf(stderr, "(the next umem_check message is expected)\n");
        CHECK(umem_check(h) == -1);
        *path[depth - 1] = merged;
        CHECK(umem_check(h) == 0);
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
    CHECK(h != NULL);
    if (!h)
        return;
    pthread_t tid[THREADS];
    struct hammer t[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        t[i] = (struct hammer){.h = h, .id = i};
        CHECK(pthread_create(&tid[i], NULL, hammer_thread, &t[i]) == 0);
    }
    uint64_t allocs = 0, frees = 0, failed = 0;
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        CHECK(t[i].bad == 0);
        allocs += t[i].allocs;
        frees += t[i].frees;
        failed += t[i].failed;
    }
    CHECK(umem_check(h) == 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.allocs == allocs && st.frees == frees && st.failed_allocs == failed);
    CHECK(st.lock_count == allocs + frees + failed);
    CHECK(st.lock_contended <= st.lock_count);
    CHECK(st.bytes_in_use == 0);
    umem_destroy(h);
}

static void realloc_in_place_and_moved(void)
{
    for (unsigned i = 0; i < EVERY_FLAGS; i++) {
        umem_t *h = umem_create(1 << 20, every_flags[i]);
        CHECK(h != NULL);
        if (!h)
            continue;
        CHECK(umem_realloc(h, NULL, 0) == NULL);
        unsigned char *p = umem_realloc(h, NULL, 100); /* NULL: an allocation */
        unsigned char *q = umem_memalign(h, 16, 100);
        unsigned char *r = umem_memalign(h, 16, 100);
        CHECK(p && q && r);
        if (!(every_flags[i] & UMEM_CACHED))
            CHECK(p < q && q < r); /* carved upwards, first fit */
        fill(p, 100, 1);
        umem_free(h, q);
        umem_free(h, r); /* in a cache, or merged with q */
        umem_stats_t before, after;
        umem_get_stats(h, &before);
        if (!(every_flags[i] & UMEM_CACHED))
            CHECK(umem_realloc(h, p, 200) == p); /* into the free block after it */
        p = umem_realloc(h, p, 200);
        CHECK(p && intact(p, 100, 1));
        if (every_flags[i] & UMEM_CACHED) {
            p = umem_realloc(h, p, 40); /* to a smaller size class */
            CHECK(p != NULL);
        } else {
            CHECK(umem_realloc(h, p, 40) == p); /* shrinks where it is */
        }
        CHECK(intact(p, 40, 1));
        unsigned char *big = umem_realloc(h, p, 300000); /* moves */
        CHECK(big && intact(big, 40, 1));
        umem_get_stats(h, &after);
        CHECK(after.allocs == before.allocs && after.frees == before.frees);
        CHECK(umem_realloc(h, big, 0) == NULL); /* frees */
        umem_get_stats(h, &after);
        CHECK(after.frees == before.frees + 1 && after.bytes_in_use == 0);
        errno = 0;
        CHECK(umem_memalign(h, 0, 10) == NULL && errno == EINVAL);
        errno = 0;
        CHECK(umem_memalign(h, 24, 10) == NULL && errno == EINVAL);
        CHECK(umem_usable_size(h, NULL) == 0);
        CHECK(umem_check(h) == 0);
        umem_destroy(h);
    }
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
static void grow_then_give_back(void)
{
    const char *env = getenv("UMEM_TEST_GROW_MIB");
    size_t mib = env ? strtoul(env, NULL, 10) : 256;
    uint64_t made = monotonic_ms();
    umem_t *h = umem_create(4096, UMEM_GROW);
    CHECK(h != NULL);
    if (!h)
        return;
    size_t count = (mib << 20) / 1024;
    unsigned char **p = calloc(count, sizeof *p);
    long before = resident_kib();
    size_t total = 0, n = 0;
    unsigned long long seed = 7;
    while (total < (mib << 20) && n < count) {
        unsigned long long r = check_rand(&seed);
        size_t len = r % 512 == 0 ? (2 << 20) : r % 4 == 0 ? 4000 : 16 + r % 500;
        p[n] = umem_alloc(h, len);
        CHECK(p[n] != NULL);
        if (!p[n])
            break;
        memset(p[n], 0xA5, len);
        total += len;
        n++;
    }
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.heap_bytes > (mib << 20) / 8 && st.large_blocks > 0);
    CHECK(umem_check(h) == 0);
    long peak = resident_kib();
    for (size_t i = 0; i < n; i += 2) /* every other block, then the rest */
        umem_free(h, p[i]);
    /* Half the heap in use: nothing goes back before it has stayed free
     * for the delay. */
    umem_get_stats(h, &st);
    if (monotonic_ms() - made < UMEM_PURGE_DELAY_MS)
        CHECK(st.released_bytes == 0);
    for (size_t i = 1; i < n; i += 2)
        umem_free(h, p[i]);
    /* Emptied, then idle: its pages went back, with no call after. */
    long after = resident_kib();
    umem_get_stats(h, &st);
    CHECK(st.bytes_in_use == 0 && st.large_blocks == 0 && st.released_bytes > 0);
    CHECK(before > 0 && peak - before > (long)(mib << 10) / 2);
    CHECK(after - before < (peak - before) / 2);
    if (!(after - before < (peak - before) / 2))
        fprintf(stderr, "  resident KiB: %ld before, %ld at the peak, %ld after\n", before, peak,
                after);
    void *again = umem_alloc(h, 1000); /* still usable */
    CHECK(again != NULL);
    umem_free(h, again);
    CHECK(umem_check(h) == 0);
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
    CHECK(h != NULL);
    if (!h)
        return;
    static unsigned char *slot[CT_THREADS][CT_BLOCKS];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, CT_THREADS);
    pthread_t tid[CT_THREADS];
    struct cross c[CT_THREADS];
    for (unsigned i = 0; i < CT_THREADS; i++) {
        c[i] = (struct cross){.h = h, .bar = &bar, .id = i, .slot = slot};
        CHECK(pthread_create(&tid[i], NULL, cross_thread, &c[i]) == 0);
    }
    for (unsigned i = 0; i < CT_THREADS; i++) {
        pthread_join(tid[i], NULL);
        CHECK(c[i].bad == 0);
    }
    pthread_barrier_destroy(&bar);
    /* Every thread has exited: its cache went back to the heap. */
    CHECK(umem_check(h) == 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t n = (uint64_t)CT_THREADS * CT_BLOCKS * CT_ROUNDS;
    CHECK(st.allocs == n && st.frees == n);
    CHECK(st.bytes_in_use == 0 && st.cached_bytes == 0);
    CHECK(st.cache_hits > n / 2 && st.cache_frees > n / 2);
    CHECK(st.lock_count < n / 4); /* the caches spared most of the locking */
    if (st.lock_count >= n / 4)
        fprintf(stderr, "  lock_count %llu for %llu allocations\n",
                (unsigned long long)st.lock_count, (unsigned long long)n);
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
    CHECK(h != NULL);
    if (!h)
        return;
    void *keep[200] = {h};
    for (int round = 0; round < 20; round++) {
        pthread_t tid;
        CHECK(pthread_create(&tid, NULL, allocate_and_exit, keep) == 0);
        pthread_join(tid, NULL);
        int bad = 0;
        for (unsigned k = 1; k < 200; k++) {
            bad += !keep[k] || !intact(keep[k], k * 5, k);
            umem_free(h, keep[k]);
        }
        CHECK(bad == 0);
    }
    CHECK(umem_check(h) == 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.allocs == 20 * 199 && st.frees == 20 * 199);
    CHECK(st.bytes_in_use == 0);
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
    CHECK(h != NULL);
    if (!h)
        return;
    static struct ring r;
    r = (struct ring){.h = h};
    pthread_t tid;
    CHECK(pthread_create(&tid, NULL, consume, &r) == 0);
    for (unsigned i = 0; i < PC_BLOCKS; i++) {
        while (i - atomic_load_explicit(&r.tail, memory_order_acquire) >= PC_RING)
            sched_yield();
        unsigned char *p = umem_alloc(h, 1 + i % 700);
        CHECK(p != NULL);
        fill(p, 1 + i % 700, i);
        r.slot[i % PC_RING] = p;
        atomic_store_explicit(&r.head, i + 1, memory_order_release);
    }
    pthread_join(tid, NULL);
    CHECK(r.bad == 0);
    CHECK(umem_check(h) == 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.allocs == PC_BLOCKS && st.frees == PC_BLOCKS && st.bytes_in_use == 0);
    CHECK(st.remote_frees == PC_BLOCKS && st.cache_hits == PC_BLOCKS);
    CHECK(st.lock_count < PC_BLOCKS / 64);
    if (st.lock_count >= PC_BLOCKS / 64)
        fprintf(stderr, "  lock_count %llu for %u allocations\n",
                (unsigned long long)st.lock_count, PC_BLOCKS);
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
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t carved = st.cache_refills;
    void *p = umem_alloc(h, 48);
    umem_get_stats(h, &st);
    CHECK(p != NULL && st.abandoned_pages == 0 && st.cache_refills == carved);
    CHECK(umem_check(h) == 0); /* this thread's own pages, the adopted one included */
    umem_free(h, p);
    return NULL;
}

static void ended_threads_pages_are_adopted(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK(h != NULL);
    if (!h)
        return;
    void *keep[100] = {h};
    pthread_t tid;
    CHECK(pthread_create(&tid, NULL, allocate_one_size, keep) == 0);
    pthread_join(tid, NULL);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.abandoned_pages == 1 && st.pool_pages == 1);
    for (unsigned k = 1; k < 100; k += 2) /* remote frees into the abandoned page */
        umem_free(h, keep[k]);
    CHECK(umem_check(h) == 0);
    CHECK(pthread_create(&tid, NULL, allocate_again, h) == 0);
    pthread_join(tid, NULL);
    for (unsigned k = 2; k < 100; k += 2)
        umem_free(h, keep[k]);
    umem_get_stats(h, &st);
    CHECK(st.bytes_in_use == 0 && st.allocs == st.frees);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

/* umem_check sees what a write after free does to a pooled block. */
static void check_finds_untagged_free_slot(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK(h != NULL);
    if (!h)
        return;
    char *p = umem_alloc(h, 100), *q = umem_alloc(h, 100);
    umem_free(h, p);
    CHECK(umem_check(h) == 0);
    fprintf(stderr, "(the next umem_check message is expected)\n");
    p[8] ^= 1; /* the free slot's tag */
    CHECK(umem_check(h) == -1);
    p[8] ^= 1;
    CHECK(umem_check(h) == 0);
    umem_free(h, q);
    umem_destroy(h);
}

/* Large blocks: a freed mapping serves the next large request, a grown
 * one keeps its contents, and free leaves errno alone. */
static void large_mappings_are_reused(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK(h != NULL);
    if (!h)
        return;
    size_t big = (size_t)8 << 20;
    unsigned char *p = umem_alloc(h, big);
    CHECK(p != NULL);
    fill(p, 4096, 7);
    errno = 12345;
    umem_free(h, p);
    CHECK(errno == 12345);
    unsigned char *q = umem_alloc(h, big - 4096); /* the same mapping again */
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(q != NULL && st.map_reuses == 1 && st.large_blocks == 1);
    fill(q, big - 4096, 9);
    unsigned char *r = umem_realloc(h, q, 3 * big); /* grown, by mremap where there is one */
    CHECK(r != NULL && intact(r, big - 4096, 9) && umem_usable_size(h, r) >= 3 * big);
    r = umem_realloc(h, r, big); /* shrunk */
    CHECK(r != NULL && intact(r, big - 4096, 9));
    CHECK(umem_check(h) == 0);
    umem_free(h, r);
    umem_get_stats(h, &st);
    CHECK(st.bytes_in_use == 0 && st.large_blocks == 0 && st.allocs == 2 && st.frees == 2);
    CHECK(umem_check(h) == 0);
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
    CHECK(locked && cached);
    if (!locked || !cached)
        return;
    atomic_store(&fork_stop, 0);
    pthread_t tid[2];
    CHECK(pthread_create(&tid[0], NULL, churn, locked) == 0);
    CHECK(pthread_create(&tid[1], NULL, churn, cached) == 0);
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
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
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    atomic_store(&fork_stop, 1);
    pthread_join(tid[0], NULL);
    pthread_join(tid[1], NULL);
    CHECK(umem_check(locked) == 0 && umem_check(cached) == 0);
    umem_destroy(locked);
    umem_destroy(cached);
}

static void shared_heap_across_fork(void)
{
    enum { CHILDREN = 4, EACH = 200, OWN = 300 };
    umem_t *h = umem_create(4 << 20, UMEM_SHARED);
    CHECK(h != NULL);
    if (!h)
        return;
    unsigned char *p[CHILDREN * EACH];
    for (int i = 0; i < CHILDREN * EACH; i++) {
        p[i] = umem_alloc(h, 100 + (size_t)i);
        fill(p[i], 100 + (size_t)i, (unsigned)i);
    }
    pid_t pid[CHILDREN];
    for (int c = 0; c < CHILDREN; c++) {
        pid[c] = fork();
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
        int status = 0;
        waitpid(pid[c], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK(umem_check(h) == 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t allocs = CHILDREN * EACH + CHILDREN * OWN;
    uint64_t frees = CHILDREN * EACH + CHILDREN * (OWN / 2);
    CHECK(st.allocs == allocs && st.frees == frees);
    CHECK(st.lock_count == allocs + frees);
    CHECK(st.bytes_in_use > 0 && st.owner_died == 0);
    umem_destroy(h);
}

static void sigalrm_exit(int sig)
{
    (void)sig;
    static const char msg[] = "a heap call hung after the lock owner died\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

/* The parent's calls after a lock holder is killed run in a child of the
 * test, under an alarm, so that a hang fails the test instead of the run. */
static void lock_owner_killed(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_SHARED);
    CHECK(h != NULL);
    if (!h)
        return;
    void *kept = umem_alloc(h, 100);
    pid_t judge = fork();
    if (judge == 0) {
        signal(SIGALRM, sigalrm_exit);
        alarm(5);
        int ready[2];
        if (pipe(ready) != 0)
            _exit(4);
        pid_t holder = fork();
        if (holder == 0) {
            umem__lock(h, 1); /* the internal lock: hold it and die */
            ssize_t w = write(ready[1], "L", 1);
            (void)w;
            pause();
            _exit(0);
        }
        char c;
        if (read(ready[0], &c, 1) != 1)
            _exit(5);
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);
        errno = 0;
        void *p = umem_alloc(h, 10);
        int fails = p != NULL || errno != EOWNERDEAD;
        umem_free(h, kept); /* does nothing, and does not hang */
        umem_stats_t st;
        umem_get_stats(h, &st);
        fails += st.owner_died != 1;
        fprintf(stderr, "(the next umem_check message is expected)\n");
        fails += umem_check(h) != -1;
        errno = 0;
        fails += umem_alloc(h, 10) != NULL || errno != EOWNERDEAD;
        _exit(fails ? 6 : 0);
    }
    int status = 0;
    waitpid(judge, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    umem_stats_t st;
    umem_get_stats(h, &st); /* the death is seen by every process */
    CHECK(st.owner_died == 1);
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
    CHECK(heaps[0] && heaps[1]);
    if (!heaps[0] || !heaps[1])
        return;
    atomic_store(&fork_stop, 0);
    pthread_t tid[4];
    for (int t = 0; t < 4; t++)
        CHECK(pthread_create(&tid[t], NULL, hold_and_allocate, heaps[t % 2]) == 0);
    for (int i = 0; i < 40; i++) {
        pid_t pid = fork();
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
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    atomic_store(&fork_stop, 1);
    for (int t = 0; t < 4; t++)
        pthread_join(tid[t], NULL);
    for (int k = 0; k < 2; k++) {
        umem_stats_t st;
        umem_get_stats(heaps[k], &st);
        CHECK(umem_check(heaps[k]) == 0); /* what was done without the lock, settled */
        CHECK(st.allocs == st.frees && st.bytes_in_use == 0 && st.large_blocks == 0);
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
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    pid_t r;
    do
        r = waitpid(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    if (pid < 0 || r != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        handler_failures++;
    handler_forks++;
    errno = saved;
}

static void fork_from_signal_handler(void)
{
    umem_t *heaps[2] = {umem_create(4 << 20, 0), umem_create(1 << 20, UMEM_CACHED | UMEM_GROW)};
    CHECK(heaps[0] && heaps[1]);
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
    pid_t me = getpid(), sender = fork();
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    if (sender == 0) {
        while (getppid() == me) { /* until the test ends, or dies */
            kill(me, SIGUSR1);
            usleep(500);
        }
        _exit(0);
    }
    CHECK(sender > 0);
    void *p[2][64] = {{0}};
    unsigned long long seed = 7;
    while (sender > 0 && handler_forks < 200) {
        unsigned k = (unsigned)(check_rand(&seed) % 64), which = k % 2;
        umem_free(heaps[which], p[which][k]);
        p[which][k] = umem_alloc(heaps[which], 1 + check_rand(&seed) % 100000);
        CHECK(p[which][k] != NULL);
    }
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    kill(sender, SIGKILL);
    waitpid(sender, NULL, 0);
    signal(SIGUSR1, SIG_IGN); /* one still pending goes */
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    sigaction(SIGUSR1, &old, NULL);
    CHECK(handler_failures == 0);
    for (int which = 0; which < 2; which++) {
        for (unsigned k = 0; k < 64; k++)
            umem_free(heaps[which], p[which][k]);
        umem_stats_t st;
        umem_get_stats(heaps[which], &st);
        CHECK(umem_check(heaps[which]) == 0);
        CHECK(st.allocs == st.frees && st.bytes_in_use == 0);
        umem_destroy(heaps[which]);
    }
}

/* free and realloc leave errno alone, around a purge, an unmap and a
 * trim included; a failing call sets it. */
static void errno_kept_by_free_and_realloc(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK(h != NULL);
    if (!h)
        return;
    void *small[64];
    for (int i = 0; i < 64; i++)
        small[i] = umem_alloc(h, 200000); /* 12 MiB inside the heap */
    char *huge = umem_alloc(h, (size_t)100 << 20); /* past the map cache's room */
    char *big = umem_alloc(h, (size_t)32 << 20);
    CHECK(huge && big);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t purges = st.purges, mapped = st.mapped_bytes;
    errno = 1789;
    big = umem_realloc(h, big, (size_t)10 << 20); /* shrunk: mremap, or a move */
    CHECK(big != NULL && errno == 1789);
    big = umem_realloc(h, big, (size_t)40 << 20); /* grown */
    CHECK(big != NULL && errno == 1789);
    umem_free(h, huge); /* unmapped at once */
    umem_get_stats(h, &st);
    CHECK(errno == 1789 && st.mapped_bytes < mapped);
    umem_free(h, big);
    for (int i = 0; i < 64; i++)
        umem_free(h, small[i]); /* the heap empties: a purge */
    umem_get_stats(h, &st);
    CHECK(errno == 1789 && st.purges > purges);
    umem_free(h, NULL);
    CHECK(errno == 1789);
    CHECK(umem_realloc(h, umem_alloc(h, 10), (size_t)1 << 62) == NULL && errno == ENOMEM);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

/* Every test above, in order. */
/* ---- UMEM_DEBUG ---- */

/* Random allocs, reallocs, aligned allocs and frees on a heap made with
 * `flags` and UMEM_DEBUG: the contents survive, each block's usable size
 * is what was asked for, a realloc moves the block, umem_check passes, and
 * allocs - frees counts the live blocks and those held back. */
static void debug_model_run(unsigned flags)
{
    enum { SLOTS = 256, OPS = 12000 };
    static unsigned char *ptr[SLOTS];
    static size_t len[SLOTS];
    static unsigned tag[SLOTS];
    unsigned long long seed = 0xdeb60000u + flags;
    umem_t *h = umem_create(flags & UMEM_GROW ? 4096 : 8 << 20, flags | UMEM_DEBUG);
    CHECK(h != NULL);
    if (!h)
        return;
    uint64_t live = 0;
    for (int op = 0; op < OPS; op++) {
        unsigned s = (unsigned)(check_rand(&seed) % SLOTS);
        unsigned long long r = check_rand(&seed);
        if (ptr[s] && r % 4 == 0) {
            size_t n = 1 + (r >> 8) % (8 << 10);
            unsigned char *q = umem_realloc(h, ptr[s], n);
            if (!q) {
                CHECK(errno == ENOMEM);
                continue;
            }
            CHECK(q != ptr[s] && umem_usable_size(h, q) == n);
            CHECK(intact(q, len[s] < n ? len[s] : n, tag[s]));
            ptr[s] = q;
            len[s] = n;
            fill(q, n, tag[s]);
        } else if (ptr[s]) {
            CHECK(intact(ptr[s], len[s], tag[s]));
            umem_free(h, ptr[s]);
            ptr[s] = NULL;
            live--;
        } else {
            size_t n = flags & UMEM_GROW && r % 200 == 0 ? (size_t)3 << 20 : 1 + (r >> 8) % (16 << 10);
            size_t align = r % 7 == 0 ? (size_t)16 << (r >> 40) % 9 : 0;
            ptr[s] = align ? umem_memalign(h, align, n) : umem_alloc(h, n);
            if (!ptr[s]) {
                CHECK(errno == ENOMEM && !(flags & UMEM_GROW));
                continue;
            }
            CHECK((uintptr_t)ptr[s] % (align ? align : 16) == 0);
            CHECK(umem_usable_size(h, ptr[s]) == n);
            len[s] = n;
            tag[s] = (unsigned)op;
            fill(ptr[s], n, tag[s]);
            live++;
        }
        if (op % 500 == 0)
            CHECK(umem_check(h) == 0);
    }
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.held_blocks > 0 && st.allocs - st.frees == live + st.held_blocks);
    if (st.allocs - st.frees != live + st.held_blocks)
        fprintf(stderr, "  flags %#x: allocs %llu frees %llu live %llu held %llu\n", flags,
                (unsigned long long)st.allocs, (unsigned long long)st.frees,
                (unsigned long long)live, (unsigned long long)st.held_blocks);
    for (unsigned s = 0; s < SLOTS; s++)
        if (ptr[s]) {
            CHECK(intact(ptr[s], len[s], tag[s]));
            umem_free(h, ptr[s]);
            ptr[s] = NULL;
        }
    CHECK(umem_check(h) == 0);
    umem_destroy(h); /* nothing left to list */
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
    CHECK(umem_check(h) == 0);
    fprintf(stderr, "(the next umem_check message is expected)\n");
    unsigned char was = p[100];
    p[100] = (unsigned char)~was;
    CHECK(umem_check(h) == -1);
    p[100] = was;
    CHECK(umem_check(h) == 0);
    umem_free(h, p);
    umem_destroy(h);
}

/* A write after free is found when the block leaves the quarantine,
 * pushed out by the frees after it. */
static void write_after_free_leaves_quarantine(umem_t *h, char *t)
{
    char *p = umem_alloc(h, 40);
    snprintf(t, 64, "%p", (void *)p);
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
    CHECK(h != NULL);
    if (!h)
        return;
    char *p = umem_alloc(h, 300);
    memset(p, 'x', 300);
    pid_t pid = fork();
    if (pid == 0) {
        umem_free(h, p);
        umem_free(h, umem_alloc(h, 50));
        _exit(umem_check(h) == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK(st.held_blocks == 2 && st.allocs - st.frees == 2);
    CHECK(umem_check(h) == 0);
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
        CHECK(h != NULL);
        if (!h)
            continue;
        char *a = umem_alloc(h, 3000), *s1 = umem_alloc(h, 64);
        char *b = umem_alloc(h, 2000), *s2 = umem_alloc(h, 64);
        CHECK(a && a < s1 && s1 < b && b < s2); /* carved upwards */
        umem_free(h, b); /* the tree: b below the rest of the heap */
        umem_free(h, a); /* a below b: the root is b, a its left */
        CHECK(umem_check(h) == 0);
        char *again = umem_alloc(h, 3000);
        CHECK(again == a);
        umem_free(h, again);
        umem_free(h, s1);
        umem_free(h, s2);
        umem_stats_t st;
        umem_get_stats(h, &st);
        CHECK(st.bytes_in_use == 0 && umem_check(h) == 0);
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
        CHECK(h != NULL);
        if (!h)
            continue;
        /* Blocks of 128, 224 and 128 bytes, headers included. */
        unsigned char *p = umem_alloc(h, 100), *q = umem_alloc(h, 200), *r = umem_alloc(h, 100);
        CHECK(p && p < q && q < r);
        fill(p, 100, 5);
        umem_free(h, q);
        umem_stats_t before, after;
        umem_get_stats(h, &before);
        /* 336 bytes need a block of 352: p's and q's exactly. */
        unsigned char *grown = umem_realloc(h, p, 336);
        CHECK(grown == p);
        if (!grown)
            grown = p;
        CHECK(intact(grown, 100, 5) && umem_usable_size(h, grown) == 336);
        umem_get_stats(h, &after);
        CHECK(after.bytes_in_use == before.bytes_in_use + 224);
        CHECK(after.allocs == before.allocs && after.frees == before.frees);
        CHECK(umem_check(h) == 0);
        umem_free(h, grown);
        umem_free(h, r);
        CHECK(umem_check(h) == 0);
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
    CHECK(h != NULL);
    if (!h)
        return;
    struct waiter w = {.h = h};
    CHECK(umem__lock(h, 0) == 0); /* the internal lock, taken uncounted */
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
    umem__unlock(h);
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
        CHECK(w.p != NULL && st.allocs == 1);
        CHECK(st.lock_count == 1 && st.lock_contended == 1);
    }
    umem_free(h, w.p);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

/* ---- the pools' figures ---- */

/* A block handed out from a pool's page moves its slot from cached_bytes
 * to bytes_in_use, and back when it is freed. */
static void cached_bytes_follow_each_block(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK(h != NULL);
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
    CHECK(st[0].pool_pages == 1 && st[3].pool_pages == 1 && st[0].cached_bytes > 0);
    CHECK(st[1].bytes_in_use == st[0].bytes_in_use + 112);
    CHECK(st[1].cached_bytes == st[0].cached_bytes - 112);
    CHECK(st[2].bytes_in_use == st[0].bytes_in_use && st[2].cached_bytes == st[0].cached_bytes);
    CHECK(st[3].bytes_in_use == 0 && st[3].cached_bytes == st[0].cached_bytes + 112);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

/* A thread's pages of one class, emptied by its own frees: the class
 * keeps one empty page to serve, and the others go back to the heap,
 * whichever list held them. */
static void owner_gives_back_emptied_pages(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK(h != NULL);
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
    CHECK(st.pool_pages == 3 && st.cache_flushes == 0);
    for (unsigned k = 0; k < n; k++) {
        CHECK(p[k] != NULL);
        umem_free(h, p[k]);
    }
    umem_get_stats(h, &st);
    CHECK(st.pool_pages == 1 && st.cache_flushes == 2 && st.bytes_in_use == 0);
    CHECK(umem_check(h) == 0);
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
    CHECK(h != NULL);
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
        CHECK(p[n] != NULL);
        n++;
    }
    umem_get_stats(h, &st);
    CHECK(st.cache_refills == 2 && st.pool_pages == 2);
    CHECK(st.remote_frees == first_page);
    for (unsigned k = first_page; k < n; k++)
        umem_free(h, p[k]);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

/* A heap that empties (an eighth of it in use) gives every free page back
 * on the call that sees it, those freed just before included; not before,
 * while more than an eighth is in use. */
static void emptied_heap_gives_back_every_free_page(void)
{
    /* From before the heap: a range goes back for its age a whole delay
     * after it was freed at the soonest, never sooner. */
    uint64_t began = monotonic_ms();
    umem_t *h = umem_create(4096, UMEM_GROW);
    CHECK(h != NULL);
    if (!h)
        return;
    enum { N = 10, BLOCK = 900 << 10 }; /* each under UMEM_LARGE: in the heap */
    unsigned char *p[N];
    for (unsigned i = 0; i < N; i++) {
        p[i] = umem_alloc(h, BLOCK);
        CHECK(p[i] != NULL);
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
            CHECK(st.released_bytes == 0);
    }
    umem_get_stats(h, &st);
    uint64_t free_bytes = st.heap_bytes - st.bytes_in_use;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    /* Each free block keeps the pages of its header and of its footer (a
     * heap of several regions has more free blocks than blocks freed):
     * a few pages a block, where four blocks left resident are 3.6 MB.
     * (A range that went back for its age would have left too little to
     * purge when the heap emptied.) */
    uint64_t kept = (uint64_t)8 * N * page;
    if (monotonic_ms() - began < UMEM_PURGE_DELAY_MS / 2)
        CHECK(st.purges >= 1 && st.released_bytes + kept >= free_bytes);
    if (st.released_bytes + kept < free_bytes)
        fprintf(stderr, "  %llu bytes free, %llu given back\n", (unsigned long long)free_bytes,
                (unsigned long long)st.released_bytes);
    umem_free(h, p[N - 1]);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

/* ---- fork() ---- */

/* The child of fork() allocates at once from every private heap, locked
 * or cached, each lock made anew and free.  The child must finish within
 * a generous bound, so that a lock left held fails this test by name (the
 * alarm ends the child: see check.h).  It runs first: the death tests fork
 * children with no such bound, which would hang instead. */
static void child_of_fork_allocates_at_once(void)
{
    umem_t *heaps[2] = {umem_create(1 << 20, 0), umem_create(1 << 20, UMEM_CACHED)};
    CHECK(heaps[0] && heaps[1]);
    if (!heaps[0] || !heaps[1]) {
        umem_destroy(heaps[0]);
        umem_destroy(heaps[1]);
        return;
    }
    void *kept = umem_alloc(heaps[0], 100);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
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
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    umem_free(heaps[0], kept);
    CHECK(umem_check(heaps[0]) == 0 && umem_check(heaps[1]) == 0);
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
    CHECK(h != NULL);
    if (!h)
        return;
    struct borrower b = {.h = h};
    umem__fork_prepare();
    pthread_t tid;
    int made = pthread_create(&tid, NULL, allocate_while_forking, &b) == 0;
    CHECK(made);
    uint64_t since = monotonic_ms();
    while (made && !atomic_load(&b.done) && monotonic_ms() - since < 60000)
        sched_yield();
    CHECK(atomic_load(&b.done)); /* else its calls waited for the fork */
    umem__fork_parent();
    if (made)
        pthread_join(tid, NULL);
    CHECK(b.bad == 0);
    umem_stats_t st;
    umem_get_stats(h, &st); /* takes the lock: settles what was lent */
    /* Two mappings, a move and a free, each counted once settled. */
    CHECK(st.lent_calls == 4 && st.allocs == 1 && st.frees == 1);
    CHECK(st.bytes_in_use == 0 && st.large_blocks == 0);
    CHECK(umem_check(h) == 0);
    umem_destroy(h);
}

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
    RUN(death_cached_interior);
    RUN(death_cached_never_handed_out);
    RUN(death_cached_foreign);
    RUN(check_finds_overrun);
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
    RUN(owner_gives_back_emptied_pages);
    RUN(owner_takes_back_a_page_others_emptied);
    RUN(emptied_heap_gives_back_every_free_page);
    return CHECK_EXIT_STATUS();
}

#ifndef TEST_UMEM_NO_MAIN
int main(void)
{
    return run_all();
}
#endif
