/* Tests of umem.h's documented policies: each fails by name, with both
 * values, when the policy it is named after stops being true (umem(3) and
 * the parts of umem.h say where each is promised). */
/* A short purge delay, so that the delayed purge is seen within a second;
 * every other setting is the default. */
#define UMEM_PURGE_DELAY_MS 200
#include "../umem.h"
#define CHECK_CHILD_SECONDS 60
#include "check.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* umem_check's result, and the line it printed (if any) into `line`. */
static int check_saying(umem_t *h, char *line, size_t size)
{
    FILE *tmp = tmpfile();
    int saved = dup(2);
    line[0] = '\0';
    if (!tmp || saved < 0) {
        if (tmp)
            fclose(tmp);
        return umem_check(h);
    }
    fflush(stderr);
    dup2(fileno(tmp), 2);
    int r = umem_check(h);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    if (!fgets(line, (int)size, tmp))
        line[0] = '\0';
    fclose(tmp);
    return r;
}

/* The index of the first byte of p[0..n) that is not `byte`, n if none. */
static size_t first_not(const unsigned char *p, size_t n, unsigned char byte)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != byte)
            return i;
    return n;
}

/* First fit in the free tree takes the lowest-addressed block that fits,
 * not the first that fits on the way down: six free blocks that all fit,
 * so the tree's root (an AVL tree of six or more nodes never has its
 * lowest at the root) fits too. */
static void first_fit_takes_the_lowest_below_a_root_that_fits(void)
{
    static const unsigned flags[] = {0, UMEM_NOLOCK, UMEM_SHARED};
    for (unsigned f = 0; f < 3; f++) {
        check_where("flags %#x", flags[f]);
        umem_t *h = umem_create(1 << 20, flags[f]);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        enum { N = 6 };
        char *big[N], *gap[N];
        for (unsigned i = 0; i < N; i++) {
            big[i] = umem_alloc(h, 3000 + 1000 * (N - i)); /* the lowest is the largest */
            gap[i] = umem_alloc(h, 64);
            CHECK(big[i] && gap[i]);
            CHECK(i == 0 || big[i] > big[i - 1]);
        }
        for (unsigned i = 0; i < N; i++)
            umem_free(h, big[(i * 5) % N]); /* in an order of their own */
        CHECK_EQ(umem_check(h), 0);
        char *p = umem_alloc(h, 2900);
        CHECK_EQ(p, big[0]);
        umem_free(h, p);
        for (unsigned i = 0; i < N; i++)
            umem_free(h, gap[i]);
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
}

/* A class keeps one empty page: a page its owner's frees empty stays
 * while the page that serves the class is still in use, and goes back to
 * the heap once another empty page of the class can serve. */
static void a_class_keeps_one_empty_page(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { MOST = 1000 };
    static void *p[MOST];
    umem_stats_t st;
    unsigned n = 0, second = 0;
    do { /* the first page filled, the second begun */
        p[n++] = umem_alloc(h, 1000);
        umem_get_stats(h, &st);
    } while (n < MOST && st.pool_pages < 2);
    second = n - 1; /* the first block of the second page */
    for (unsigned k = 0; k < 5 && n < MOST; k++)
        p[n++] = umem_alloc(h, 1000);
    CHECK_EQ(st.pool_pages, 2);
    for (unsigned k = 0; k < second; k++)
        umem_free(h, p[k]);
    umem_get_stats(h, &st);
    check_where("the first page emptied, the second in use");
    CHECK_EQ(st.pool_pages, 2);
    CHECK_EQ(st.cache_flushes, 0);
    for (unsigned k = second; k < n; k++)
        umem_free(h, p[k]);
    umem_get_stats(h, &st);
    check_where("both pages emptied");
    CHECK_EQ(st.pool_pages, 1);
    CHECK_EQ(st.cache_flushes, 1);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* Free pages go back after the purge delay on a heap that stays in use:
 * not at the free (the heap has not emptied), and not before a delay has
 * passed, but while the program goes on calling. */
static void free_pages_go_back_after_the_delay_while_in_use(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { LIVE = 128 };
    static void *live[LIVE];
    for (unsigned i = 0; i < LIVE; i++)
        live[i] = umem_alloc(h, 4096); /* 512 KiB in use throughout */
    char *big = umem_alloc(h, 512 << 10);
    char *after = umem_alloc(h, 64); /* big does not join the heap's end */
    CHECK(big && after);
    if (big)
        memset(big, 1, 512 << 10);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t before = st.released_bytes;
    umem_free(h, big);
    double freed_at = seconds_now(), now = freed_at;
    umem_get_stats(h, &st);
    CHECK_EQ(st.released_bytes, before); /* not at once: the heap is in use */
    while (st.released_bytes == before && (now = seconds_now()) < freed_at + 30) {
        umem_free(h, umem_alloc(h, 100));
        umem_get_stats(h, &st);
    }
    check_where("%.3f s after the free", now - freed_at);
    CHECK_GE(st.released_bytes, before + (256 << 10)); /* most of big's pages */
    CHECK_GE((long)((now - freed_at) * 1000), UMEM_PURGE_DELAY_MS * 3 / 4); /* coarse clock */
    CHECK_GE(st.bytes_in_use, LIVE * 4096);
    for (unsigned i = 0; i < LIVE; i++)
        umem_free(h, live[i]);
    umem_free(h, after);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* UMEM_DEBUG fills a new block's payload with 0xaa and a freed block's,
 * held in the quarantine, with 0xdd. */
static void debug_fills_new_and_freed_blocks(void)
{
    static const unsigned flags[] = {UMEM_DEBUG, UMEM_DEBUG | UMEM_CACHED};
    for (unsigned f = 0; f < 2; f++) {
        check_where("flags %#x", flags[f]);
        umem_t *h = umem_create(1 << 20, flags[f]);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        size_t sizes[] = {1, 100, 3000};
        for (unsigned i = 0; i < 3; i++) {
            unsigned char *p = umem_alloc(h, sizes[i]);
            CHECK_NE(p, NULL);
            if (!p)
                continue;
            CHECK_EQ(first_not(p, sizes[i], 0xaa), sizes[i]);
            memset(p, 0x11, sizes[i]);
            umem_free(h, p);
            /* Read where the quarantine holds it, as a debugger would. */
            CHECK_EQ(first_not(p, sizes[i], 0xdd), sizes[i]);
        }
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
}

/* umem_check finds a damaged page header and a damaged unit map (I8). */
static void check_finds_a_damaged_page_and_unit_map(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *p = umem_alloc(h, 100);
    char line[256];
    CHECK_EQ(umem_check(h), 0);
    const char *what[] = {"its header's magic", "its unit map's byte"};
    for (int which = 0; which < 2; which++) {
        check_where("%s damaged", what[which]);
        umem__hook_flip_page(h, p, which);
        CHECK_EQ(check_saying(h, line, sizeof line), -1);
        if (!strstr(line, "I8:"))
            fprintf(stderr, "umem_check said: %s\n", line[0] ? line : "(nothing)\n");
        CHECK(strstr(line, "I8:") != NULL);
        umem__hook_flip_page(h, p, which);
        CHECK_EQ(umem_check(h), 0);
    }
    umem_free(h, p);
    umem_destroy(h);
}

/* While a fork holds the lock (between its prepare and parent handlers,
 * called here as fork() calls them), another thread's free of a block
 * with a header waits on a list, and the lock's next holder settles it,
 * whether or not any allocation was lent too. */
struct lent_free {
    umem_t *h;
    void *p;
    atomic_int done;
};

static void *free_while_forking(void *arg)
{
    struct lent_free *l = arg;
    umem_free(l->h, l->p);
    atomic_store(&l->done, 1);
    return NULL;
}

static void a_lent_free_is_settled_on_its_own(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    struct lent_free l = {.h = h, .p = umem_alloc(h, 100)};
    CHECK_NE(l.p, NULL);
    umem__hook_fork_prepare();
    pthread_t tid;
    int made = pthread_create(&tid, NULL, free_while_forking, &l) == 0;
    CHECK(made);
    double since = seconds_now();
    while (made && !atomic_load(&l.done) && seconds_now() - since < 60)
        sched_yield();
    CHECK(atomic_load(&l.done)); /* else the free waited for the fork */
    umem__hook_fork_parent();
    if (made)
        pthread_join(tid, NULL);
    umem_stats_t st;
    umem_get_stats(h, &st); /* takes the lock: settles the free */
    CHECK_EQ(st.lent_calls, 1);
    CHECK_EQ(st.allocs, 1);
    CHECK_EQ(st.frees, 1);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

int main(void)
{
    RUN(first_fit_takes_the_lowest_below_a_root_that_fits);
    RUN(a_class_keeps_one_empty_page);
    RUN(free_pages_go_back_after_the_delay_while_in_use);
    RUN(debug_fills_new_and_freed_blocks);
    RUN(check_finds_a_damaged_page_and_unit_map);
    RUN(a_lent_free_is_settled_on_its_own);
    return CHECK_EXIT_STATUS();
}
