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

static int check_heap(void *h)
{
    return umem_check(h);
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

/* Blocks of 1000 bytes into p (room for `most`) until the class's first
 * page is full and a second one begun; how many, *st as they left it. */
static unsigned fill_to_second_page(umem_t *h, void **p, unsigned most, umem_stats_t *st)
{
    unsigned n = 0;
    do {
        p[n++] = umem_alloc(h, 1000);
        umem_get_stats(h, st);
    } while (n < most && st->pool_pages < 2);
    return n;
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
    unsigned n = fill_to_second_page(h, p, MOST, &st);
    unsigned second = n - 1; /* the first block of the second page */
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

/* The owner's frees into a full page are taken up before a page is
 * carved: the page that serves runs dry, and the full page comes back to
 * serve the slots freed into it. */
static void a_full_pages_freed_slots_come_back_first(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { MOST = 1000, FREED = 3 };
    static void *p[MOST];
    umem_stats_t st;
    unsigned n = fill_to_second_page(h, p, MOST, &st);
    CHECK_EQ(st.pool_pages, 2);
    for (unsigned k = 0; k < FREED; k++)
        umem_free(h, p[k]); /* into the full first page */
    unsigned back = 0;
    while (back < FREED && n < MOST) {
        void *q = p[n++] = umem_alloc(h, 1000);
        umem_get_stats(h, &st);
        if (st.pool_pages > 2)
            break;
        for (unsigned k = 0; k < FREED; k++)
            back += q == p[k];
    }
    check_where("the second page filled after %u frees into the first", (unsigned)FREED);
    CHECK_EQ(back, FREED);
    CHECK_EQ(st.pool_pages, 2);
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
    /* Three quarters of the delay at least: the heap's clock is coarse. */
    CHECK_GE((long)((now - freed_at) * 1000), UMEM_PURGE_DELAY_MS * 3 / 4);
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
    CHECK_EQ(umem_check(h), 0);
    const char *what[] = {"its header's magic", "its unit map's entry"};
    for (int which = 0; which < 2; which++) {
        check_where("%s damaged", what[which]);
        umem__hook_flip_page(h, p, which);
        CHECK_FAILS_SAYING(check_heap, h, "I8:");
        umem__hook_flip_page(h, p, which);
        CHECK_EQ(umem_check(h), 0);
    }
    umem_free(h, p);
    umem_destroy(h);
}

/* umem_check says `what` (a prefix) of h, or names the test. */
static void check_says(umem_t *h, const char *what)
{
    CHECK_FAILS_SAYING(check_heap, h, what);
}

/* umem_check finds a free block's footer damaged (I2), the tree of
 * mappings out of order and a large block's header damaged (I6), and
 * each count of I7 wrong. */
static void check_finds_damaged_footers_spans_and_counts(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    char *a = umem_alloc(h, 2000), *b = umem_alloc(h, 2000), *big = umem_alloc(h, 2 << 20);
    CHECK(a && b && big);
    if (!a || !b || !big)
        return;
    umem_free(h, a);
    CHECK_EQ(umem_check(h), 0);

    check_where("the footer of a free block damaged");
    size_t *footer = (size_t *)(b - UMEM_HEADER) - 1, was = *footer;
    *footer = was + UMEM_ALIGN;
    check_says(h, "I2:");
    *footer = was;
    CHECK_EQ(umem_check(h), 0);

    check_where("the tree of mappings out of order");
    void *big2 = umem_alloc(h, 2 << 20); /* two mappings: the root has a subtree */
    CHECK_NE(big2, NULL);
    umem__hook_swap_spans(h);
    check_says(h, "I6:");
    umem__hook_swap_spans(h);
    CHECK_EQ(umem_check(h), 0);
    umem_free(h, big2);

    check_where("a large block's header damaged");
    unsigned char *head = (unsigned char *)big - UMEM_HEADER, saved[UMEM_HEADER];
    memcpy(saved, head, sizeof saved);
    head[0] ^= UMEM_ALIGN;
    check_says(h, "I6:");
    memcpy(head, saved, sizeof saved);
    CHECK_EQ(umem_check(h), 0);

    const char *counts[] = {"allocs", "bytes_in_use", "peak_bytes_in_use"};
    umem_stats_t st;
    umem_get_stats(h, &st); /* the peak moved to just below the bytes in use */
    const int64_t by[] = {1, UMEM_ALIGN,
                          (int64_t)st.bytes_in_use - (int64_t)st.peak_bytes_in_use - 1};
    for (int which = 0; which < 3; which++) {
        check_where("%s moved by %lld", counts[which], (long long)by[which]);
        umem__hook_miscount(h, which, by[which]);
        check_says(h, "I7:");
        umem__hook_miscount(h, which, -by[which]);
        CHECK_EQ(umem_check(h), 0);
    }
    umem_free(h, b);
    umem_free(h, big);
    umem_destroy(h);
}

/* Size classes: 16-byte steps up to 128 bytes, then four per doubling to
 * 4 KiB (a pool's slots, losing at most a quarter to rounding), then eight
 * per doubling to 64 KiB (blocks with headers cut for their class, losing
 * at most an eighth): 28 and 32 classes. */
static void size_classes_lose_at_most_a_quarter(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t last = 0, classes = 0, slot_classes = 0, worst = 0;
    for (size_t n = 1; n <= (64 << 10); n++) {
        void *p = umem_alloc(h, n);
        size_t slot = umem_usable_size(h, p);
        if (slot != last && n > 4096)
            umem_trim(h, 0); /* the block kept of the class before goes back */
        umem_free(h, p);
        classes += slot != last;
        slot_classes += slot != last && n <= 4096;
        last = slot;
        /* what a class may lose, and one */
        size_t step = n <= 128 ? 16 : n <= 4096 ? slot / 4 + 1 : slot / 8 + 1;
        if (slot < n || slot - n >= step) {
            check_where("a request of %zu bytes", n);
            CHECK_GE(slot, n);
            CHECK_LT(slot - n, step);
            worst++;
            if (worst > 3)
                break;
        }
    }
    check_where_clear();
    CHECK_EQ(slot_classes, 28);
    CHECK_EQ(classes, 28 + 32);
    CHECK_EQ(last, 64 << 10);
    umem_stats_t st;
    umem_get_stats(h, &st);
    /* every one a slot of a pool's page or a block the thread kept, but
     * the first block of each class over 4 KiB */
    CHECK_EQ(st.allocs - st.cache_hits, 32);
    umem_destroy(h);
}

/* A request of up to 1 KiB finds its page in one load: the pool's serve[]
 * entry for its size is its class's first page with room, or a page with
 * no free slot when the class has none (0 bytes always); and the owner's
 * free tells a slot's start from every other offset in its page with one
 * multiply. */
static void small_requests_find_their_page_and_frees_their_slot(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *held[1025];
    size_t wrong = 0;
    for (size_t n = 1; n <= 1024; n++) {
        held[n] = umem_alloc(h, n);
        CHECK_NE(held[n], NULL);
        if (!held[n])
            break;
        if (umem__hook_serves(h, n, held[n]) != 1 && wrong++ < 3) {
            check_where("a request of %zu bytes", n);
            CHECK_EQ(umem__hook_serves(h, n, held[n]), 1);
        }
        if (n % 16 == 1) { /* each class's page once at least: every offset */
            check_where("the page of a request of %zu bytes", n);
            CHECK_EQ(umem__hook_slot_starts_wrong(h, held[n]), 0);
        }
    }
    check_where_clear();
    CHECK_EQ(umem__hook_serves(h, 0, NULL), 1);
    CHECK_EQ(umem_check(h), 0);
    for (size_t n = 1; n <= 1024; n++)
        umem_free(h, held[n]);
    umem_trim(h, 0); /* every page empty: each goes back, the first of its class included */
    size_t served = 0;
    for (size_t n = 0; n <= 1024; n++)
        served += umem__hook_serves(h, n, NULL) != 1;
    CHECK_EQ(served, 0);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A slot of a pool's page stays where it is under umem_realloc while the
 * new size fits in the slot and is more than half of it, and moves
 * otherwise. */
static void a_pooled_realloc_stays_while_more_than_half(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t sizes[] = {200, 1000, 4000};
    for (unsigned i = 0; i < 3; i++) {
        char *p = umem_alloc(h, sizes[i]);
        CHECK_NE(p, NULL);
        if (!p)
            continue;
        size_t slot = umem_usable_size(h, p);
        check_where("a slot of %zu bytes", slot);
        CHECK_EQ(umem_realloc(h, p, slot), p);
        CHECK_EQ(umem_realloc(h, p, slot / 2 + 1), p);
        char *q = umem_realloc(h, p, slot / 2);
        CHECK_NE(q, p); /* half the slot or less: moved */
        p = q;
        slot = umem_usable_size(h, p);
        q = umem_realloc(h, p, slot + 1);
        CHECK_NE(q, p); /* more than the slot: moved */
        umem_free(h, q);
    }
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A block of more than 4 KiB is cut for its class (10,000 bytes: 10 KiB);
 * the thread that frees it keeps it, no lock taken, as cached and not in
 * use, and its next request of that class or of the two below (9 KiB, 8
 * KiB) takes it back with no lock; a request three classes below (7 KiB)
 * does not.  A block not cut for a class is not kept. */
static void a_freed_block_over_4_kib_is_kept_for_its_class(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    char *p = umem_alloc(h, 10000);
    CHECK_EQ(umem_usable_size(h, p), 10 << 10);
    umem_stats_t was, st;
    umem_get_stats(h, &was);
    umem_free(h, p);
    umem_get_stats(h, &st);
    CHECK_EQ(st.lock_count, was.lock_count);
    CHECK_EQ(st.frees, was.frees + 1);
    CHECK_EQ(st.cached_bytes, was.cached_bytes + (10 << 10) + 16);
    CHECK_EQ(st.bytes_in_use, was.bytes_in_use - (10 << 10) - 16);
    static const size_t takes[] = {10000, 9000, 8192};
    for (unsigned i = 0; i < 3; i++) {
        check_where("a request of %zu bytes", takes[i]);
        char *r = umem_alloc(h, takes[i]);
        CHECK_EQ(r, p);
        umem_free(h, r);
    }
    check_where_clear();
    char *q = umem_alloc(h, 7000);
    CHECK_NE(q, p);
    umem_get_stats(h, &st);
    CHECK_EQ(st.lock_count, was.lock_count + 1); /* 7000 bytes: a block cut for it */
    CHECK_EQ(st.allocs, was.allocs + 4);
    CHECK_EQ(st.cache_hits, was.cache_hits + 3);
    umem_free(h, q);
    /* A block not cut for a class (10,000 bytes aligned to 4 KiB) goes
     * back to the heap at its free. */
    q = umem_memalign(h, 4096, 10000);
    umem_get_stats(h, &was);
    umem_free(h, q);
    umem_get_stats(h, &st);
    CHECK_EQ(st.lock_count, was.lock_count + 1);
    CHECK_EQ(st.cached_bytes, was.cached_bytes);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A thread keeps at most 16 blocks of a class, and 1 MiB in all:
 * the others go back to the heap at their free. */
static void kept_blocks_are_at_most_16_a_class_and_1_mib(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    static const size_t sizes[] = {10 << 10, 64 << 10};
    static const uint64_t kept[] = {16, 15}; /* 1 MiB holds 15 blocks of 64 KiB */
    for (unsigned k = 0; k < 2; k++) {
        check_where("blocks of %zu bytes", sizes[k]);
        void *p[20];
        for (unsigned i = 0; i < 20; i++)
            p[i] = umem_alloc(h, sizes[k]);
        umem_stats_t was, st;
        umem_get_stats(h, &was);
        for (unsigned i = 0; i < 20; i++)
            umem_free(h, p[i]);
        umem_get_stats(h, &st);
        CHECK_EQ(st.cached_bytes - was.cached_bytes, kept[k] * (sizes[k] + 16));
        CHECK_EQ(st.lock_count - was.lock_count, 20 - kept[k]);
        umem_trim(h, 0);
    }
    check_where_clear();
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* Fills h with blocks of 64 KiB (*big of them first in p), then of
 * 5,000 bytes, until it has no room, or p's `most`; returns how many. */
static unsigned fill_with_blocks(umem_t *h, void **p, unsigned most, unsigned *big)
{
    unsigned n = 0;
    while (n < most && (p[n] = umem_alloc(h, 64 << 10)) != NULL)
        n++;
    *big = n;
    while (n < most && (p[n] = umem_alloc(h, 5000)) != NULL)
        n++;
    return n;
}

/* A fixed heap with no room for a page of a new class gives the calling
 * thread's kept blocks back first: the page is carved from what they
 * leave. */
static void a_pool_out_of_room_takes_back_the_blocks_kept(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { MOST = 256 };
    void *p[MOST];
    unsigned big, n = fill_with_blocks(h, p, MOST, &big);
    CHECK_GE(big, 4);
    CHECK_LT(n, MOST);
    for (unsigned i = 0; i < 4 && i < big; i++)
        umem_free(h, p[i]); /* kept: 256 KiB, side by side */
    umem_stats_t was, st;
    umem_get_stats(h, &was);
    void *q = umem_alloc(h, 16); /* a class with no page yet */
    umem_get_stats(h, &st);
    CHECK_NE(q, NULL);
    CHECK_EQ(st.cache_refills, was.cache_refills + 1); /* a page carved */
    CHECK_EQ(st.cache_hits, was.cache_hits + 1);      /* q is its slot */
    CHECK_EQ(st.failed_allocs, was.failed_allocs);
    umem_free(h, q);
    for (unsigned i = 4; i < n; i++)
        umem_free(h, p[i]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* The calling thread's pool of h, made now if it has none: the lock
 * serves a thread's first UMEM_POOL_AFTER requests, and the next one
 * makes its pool (none over 4 KiB). */
static void make_own_pool(umem_t *h)
{
    for (unsigned i = 0; i <= UMEM_POOL_AFTER; i++)
        umem_free(h, umem_alloc(h, 16));
}

static umem_stats_t pool_made; /* the heap's statistics once free_all's pool was made */

static void *ask_a_few(void *arg)
{
    for (unsigned i = 0; i < UMEM_POOL_AFTER; i++)
        umem_free(arg, umem_alloc(arg, 48));
    return NULL;
}

static void *ask_for_a_pool(void *arg)
{
    umem_t *h = arg;
    void *p[UMEM_POOL_AFTER + 1];
    umem_stats_t was, st;
    umem_get_stats(h, &was);
    for (unsigned i = 0; i < UMEM_POOL_AFTER; i++)
        p[i] = umem_alloc(h, 48);
    umem_get_stats(h, &st);
    CHECK_EQ(st.lock_count - was.lock_count, UMEM_POOL_AFTER); /* each under the lock */
    CHECK_EQ(st.pool_pages, was.pool_pages);
    CHECK_EQ(st.cache_refills, was.cache_refills);
    p[UMEM_POOL_AFTER] = umem_alloc(h, 48); /* the next: its pool, and a page */
    umem_get_stats(h, &st);
    CHECK_EQ(st.pool_pages, was.pool_pages + 1);
    CHECK_EQ(st.cache_refills, was.cache_refills + 1);
    for (unsigned i = 0; i <= UMEM_POOL_AFTER; i++)
        umem_free(h, p[i]);
    return NULL;
}

/* The lock serves a thread's first UMEM_POOL_AFTER (16) requests, and the
 * next one makes its pool: a thread that ends after a few (a thread per
 * request, mleak) costs no pool, no page and no key destructor. */
static void a_thread_gets_its_pool_after_its_first_16_requests(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    CHECK_EQ(UMEM_POOL_AFTER, 16);
    umem_stats_t st;
    pthread_t tid;
    CHECK_EQ(pthread_create(&tid, NULL, ask_a_few, h), 0);
    pthread_join(tid, NULL);
    umem_get_stats(h, &st);
    CHECK_EQ(st.lock_count, 2 * UMEM_POOL_AFTER); /* each allocation and its free */
    CHECK_EQ(st.cache_refills, 0);
    CHECK_EQ(st.pool_pages, 0);
    CHECK_EQ(pthread_create(&tid, NULL, ask_for_a_pool, h), 0);
    pthread_join(tid, NULL);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

static void *free_all(void *arg)
{
    void **p = arg;
    make_own_pool(p[0]);
    umem_get_stats(p[0], &pool_made);
    for (unsigned i = 1; p[i]; i++)
        umem_free(p[0], p[i]);
    return NULL;
}

/* A thread keeps the blocks it frees only while it asks for such blocks
 * itself: none when it never did, and at most 64 after its last request. */
static void a_thread_keeps_blocks_only_after_its_own_requests(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { EACH = 16, CLASSES = 5 }; /* 80 blocks, 16 a class: none over a limit */
    void *p[2 + EACH * CLASSES] = {h};
    for (unsigned i = 0; i < EACH * CLASSES; i++)
        p[1 + i] = umem_alloc(h, 5000 + 512 * (i % CLASSES));
    umem_stats_t was, st;
    umem_get_stats(h, &was);
    pthread_t tid;
    CHECK_EQ(pthread_create(&tid, NULL, free_all, p), 0); /* asked for none */
    pthread_join(tid, NULL);
    umem_get_stats(h, &st);
    CHECK_EQ(st.lock_count - pool_made.lock_count, EACH * CLASSES);
    CHECK_EQ(st.cached_bytes, was.cached_bytes); /* its page went back when it ended */
    for (unsigned i = 0; i < EACH * CLASSES; i++)
        p[1 + i] = umem_alloc(h, 5000 + 512 * (i % CLASSES));
    free_all(p); /* this thread asked for blocks last */
    umem_get_stats(h, &st);
    CHECK_EQ(st.lock_count - pool_made.lock_count, EACH * CLASSES - 64);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

static void *keep_four(void *arg)
{
    umem_t *h = arg;
    void *p[4];
    for (unsigned i = 0; i < 4; i++)
        p[i] = umem_alloc(h, 20000);
    for (unsigned i = 0; i < 4; i++)
        umem_free(h, p[i]);
    return NULL;
}

/* The blocks a thread keeps go back to the heap when it ends, and when it
 * calls umem_trim. */
static void *keep_four_in_a_pool(void *arg)
{
    make_own_pool(arg); /* UMEM_POOL_AFTER + 1 blocks of 16 bytes */
    return keep_four(arg);
}
static void kept_blocks_go_back_at_exit_and_trim(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    umem_stats_t st;
    pthread_t tid;
    CHECK_EQ(pthread_create(&tid, NULL, keep_four_in_a_pool, h), 0);
    pthread_join(tid, NULL);
    umem_get_stats(h, &st);
    enum { EACH = 4 + UMEM_POOL_AFTER + 1 }; /* the thread's allocations */
    CHECK_EQ(st.cached_bytes, 0);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(st.allocs, EACH);
    CHECK_EQ(st.frees, EACH);
    CHECK_EQ(umem_check(h), 0);
    keep_four(h);
    umem_get_stats(h, &st);
    CHECK_EQ(st.cached_bytes, 4 * ((20 << 10) + 16));
    umem_trim(h, 0);
    umem_get_stats(h, &st);
    CHECK_EQ(st.cached_bytes, 0);
    CHECK_EQ(st.frees, EACH + 4);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A fixed heap with no room left gives the calling thread's kept blocks
 * back before a request of another class fails. */
static void a_full_heap_takes_back_the_blocks_kept(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { MOST = 256 };
    void *p[MOST];
    unsigned big, n = fill_with_blocks(h, p, MOST, &big);
    CHECK_GE(big, 3);
    CHECK_LT(n, MOST);
    umem_stats_t was, st;
    for (unsigned i = 0; i < 3 && i < n; i++)
        umem_free(h, p[i]);
    umem_get_stats(h, &was);
    CHECK_EQ(was.cached_bytes, 3 * ((64 << 10) + 16));
    void *q = umem_alloc(h, 40000); /* another class: none kept */
    CHECK_NE(q, NULL);
    umem_get_stats(h, &st);
    CHECK_EQ(st.failed_allocs, was.failed_allocs);
    CHECK_EQ(st.cached_bytes, 0);
    umem_free(h, q);
    for (unsigned i = 3; i < n; i++)
        umem_free(h, p[i]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A heap without UMEM_GROW keeps half its room for blocks with headers:
 * the pools' pages never take more, and what they leave still serves. */
static void a_fixed_heap_keeps_half_for_headers(void)
{
    umem_t *h = umem_create(4 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { MOST = 8000 };
    static void *p[MOST];
    umem_stats_t st;
    unsigned n = 0;
    uint64_t hits = 0;
    do { /* until the pool can no longer place a block */
        umem_get_stats(h, &st);
        hits = st.cache_hits;
        p[n] = umem_alloc(h, 1000);
        umem_get_stats(h, &st);
    } while (p[n++] && st.cache_hits > hits && n < MOST);
    CHECK_EQ(st.cache_hits, hits); /* the last one came with a header */
    CHECK_LE(st.pool_pages * (64 << 10), st.heap_bytes / 2);
    CHECK_GE(st.pool_pages * (64 << 10), st.heap_bytes / 2 - (128 << 10)); /* near it */
    void *big = umem_alloc(h, st.heap_bytes / 2 - (256 << 10));
    CHECK_NE(big, NULL); /* the half kept is there */
    umem_free(h, big);
    for (unsigned k = 0; k < n; k++)
        umem_free(h, p[k]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A UMEM_GROW heap commits at least 1 MiB, or half the heap, at a time. */
static void growth_takes_a_mib_or_half_the_heap(void)
{
    umem_t *h = umem_create(64 << 10, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { MOST = 200 };
    static void *p[MOST];
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t was = st.heap_bytes;
    unsigned n = 0, grew = 0;
    while (n < MOST && st.heap_bytes < (32 << 20)) {
        p[n++] = umem_alloc(h, 200 << 10);
        umem_get_stats(h, &st);
        if (st.heap_bytes == was)
            continue;
        check_where("growth %u, from %llu bytes", ++grew, (unsigned long long)was);
        CHECK_GE(st.heap_bytes - was, 1 << 20);
        CHECK_GE(st.heap_bytes - was, was / 2 - 16); /* half of it, to 16 bytes */
        CHECK_LT(st.heap_bytes - was, (was < (1 << 20) ? 1 << 20 : was) + (64 << 10));
        was = st.heap_bytes;
    }
    check_where_clear();
    CHECK_GE(grew, 4);
    for (unsigned k = 0; k < n; k++)
        umem_free(h, p[k]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* Pages given back are marked so until their block changes: later purges
 * pass them by, while the heap stays in use and purges go on. */
static void purged_pages_are_passed_by_later_purges(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *live = umem_alloc(h, 512 << 10);
    char *big = umem_alloc(h, 512 << 10);
    void *after = umem_alloc(h, 64);
    CHECK(live && big && after);
    if (big)
        memset(big, 1, 512 << 10);
    umem_free(h, big);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t before = st.released_bytes;
    double since = seconds_now();
    while (st.released_bytes < before + (256 << 10) && seconds_now() < since + 30) {
        umem_free(h, umem_alloc(h, 100));
        umem_get_stats(h, &st);
    }
    CHECK_GE(st.released_bytes, before + (256 << 10)); /* given back once */
    uint64_t once = st.released_bytes, tick = st.released_bytes;
    since = seconds_now(); /* three delays more: six epochs, each a purge */
    while (seconds_now() < since + 3 * UMEM_PURGE_DELAY_MS / 1000.0) {
        umem_free(h, umem_alloc(h, 100));
        umem_get_stats(h, &st);
        tick = st.released_bytes;
    }
    CHECK_LT(tick - once, 64 << 10); /* not big's pages again */
    umem_free(h, live);
    umem_free(h, after);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A freed large block's mapping is kept for the next large request, and
 * unmapped once it has stayed unused for the purge delay, on a heap that
 * stays in use. */
static void kept_mappings_go_after_the_delay_while_in_use(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *live = umem_alloc(h, 256 << 10);
    void *big = umem_alloc(h, 2 << 20);
    CHECK(live && big);
    umem_free(h, big);
    double freed_at = seconds_now(), now = freed_at;
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_GE(st.map_cache_bytes, 2 << 20); /* kept at the free */
    while (st.map_cache_bytes > 0 && (now = seconds_now()) < freed_at + 30) {
        umem_free(h, umem_alloc(h, 100));
        umem_get_stats(h, &st);
    }
    check_where("%.3f s after the free", now - freed_at);
    CHECK_EQ(st.map_cache_bytes, 0);
    /* Three quarters of the delay at least: the heap's clock is coarse. */
    CHECK_GE((long)((now - freed_at) * 1000), UMEM_PURGE_DELAY_MS * 3 / 4);
    CHECK_GE(st.bytes_in_use, 256 << 10);
    umem_free(h, live);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A large request takes the smallest kept mapping that holds it, not the
 * first nor the largest. */
static void a_large_request_takes_the_smallest_kept_mapping(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t sizes[] = {6 << 20, 2 << 20, 4 << 20};
    char *p[3];
    for (unsigned i = 0; i < 3; i++)
        p[i] = umem_alloc(h, sizes[i]);
    for (unsigned i = 0; i < 3; i++)
        umem_free(h, p[i]);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_GE(st.map_cache_bytes, 12 << 20);
    char *q = umem_alloc(h, (3 << 20) + (512 << 10)); /* the 4 MiB one fits best */
    umem_get_stats(h, &st);
    CHECK_EQ(st.map_reuses, 1);
    CHECK_EQ(q, p[2]);
    umem_free(h, q);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A kept mapping that would waste more than a quarter of itself on a
 * request is trimmed to it: its tail is unmapped. */
static void a_kept_mapping_is_trimmed_to_the_request(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    umem_free(h, umem_alloc(h, 8 << 20));
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t mapped = st.mapped_bytes;
    void *q = umem_alloc(h, 2 << 20);
    umem_get_stats(h, &st);
    CHECK_EQ(st.map_reuses, 1);
    CHECK_LE(st.large_bytes, (2 << 20) + (64 << 10));
    CHECK_LE(st.mapped_bytes + (6 << 20) - (64 << 10), mapped); /* 6 MiB unmapped */
    umem_free(h, q);
    umem_destroy(h);
}

/* The kept mappings hold at most half the bytes in use, or 64 MiB when
 * that is more: a mapping larger than that is unmapped at its free. */
static void kept_mappings_hold_at_most_half_in_use_or_64_mib(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    umem_stats_t st;
    umem_free(h, umem_alloc(h, 60 << 20)); /* under 64 MiB: kept */
    umem_get_stats(h, &st);
    check_where("60 MiB freed, nothing in use");
    CHECK_GE(st.map_cache_bytes, 60 << 20);
    umem_trim(h, 0);
    umem_free(h, umem_alloc(h, 80 << 20)); /* over 64 MiB, over half in use: unmapped */
    umem_get_stats(h, &st);
    check_where("80 MiB freed, nothing in use");
    CHECK_EQ(st.map_cache_bytes, 0);
    void *held = umem_alloc(h, 200 << 20); /* never touched: address space only */
    umem_free(h, umem_alloc(h, 80 << 20)); /* under half of 280 MiB: kept */
    umem_get_stats(h, &st);
    check_where("80 MiB freed, 200 MiB in use");
    CHECK_GE(st.map_cache_bytes, 80 << 20);
    umem_free(h, held);
    umem_destroy(h);
}

/* A purge that finds every range too young gives nothing back and is not
 * counted in purges: epochs pass on a heap in use whose frees are all
 * reused at once. */
static void a_purge_that_gives_nothing_back_is_not_counted(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *live = umem_alloc(h, 600 << 10); /* over an eighth: the heap has not emptied */
    umem_trim(h, 0);
    umem_stats_t st;
    umem_get_stats(h, &st);
    uint64_t released = st.released_bytes;
    double since = seconds_now();
    while (seconds_now() < since + 2 * UMEM_PURGE_DELAY_MS / 1000.0) {
        char *p = umem_alloc(h, 8 << 10); /* freed, then taken again at once */
        if (p)
            memset(p, 1, 8 << 10);
        umem_free(h, p);
    }
    umem_get_stats(h, &st);
    CHECK_GT(st.unpurged_bytes, 0); /* there was something to look at */
    CHECK_EQ(st.released_bytes, released);
    CHECK_EQ(st.purges, 0);
    umem_free(h, live);
    umem_destroy(h);
}

/* The quarantine holds at most UMEM_QUARANTINE_BLOCKS blocks, the oldest
 * leaving first. */
static void the_quarantine_holds_at_most_its_blocks_oldest_first(void)
{
    enum { N = UMEM_QUARANTINE_BLOCKS + 76 };
    static char *p[N];
    umem_t *h = umem_create(4 << 20, UMEM_DEBUG);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    for (unsigned i = 0; i < N; i++)
        p[i] = umem_alloc(h, 16);
    for (unsigned i = 0; i < N; i++)
        umem_free(h, p[i]);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.held_blocks, UMEM_QUARANTINE_BLOCKS);
    void *q = umem_alloc(h, 16);
    CHECK_EQ(q, p[0]); /* the oldest left first, and first fit finds it */
    umem_free(h, q);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* The quarantine holds at most UMEM_QUARANTINE_BYTES bytes. */
static void the_quarantine_holds_at_most_its_bytes(void)
{
    umem_t *h = umem_create(16 << 20, UMEM_DEBUG);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t big = 500 << 10;
    void *p[12];
    for (unsigned i = 0; i < 12; i++)
        p[i] = umem_alloc(h, big);
    for (unsigned i = 0; i < 12; i++)
        umem_free(h, p[i]);
    umem_stats_t st;
    umem_get_stats(h, &st);
    /* Eight blocks of 500 KiB and their guards: a ninth would pass 4 MiB. */
    CHECK_EQ(st.held_blocks, 8);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* On a watched heap, an allocation that finds no room gives the held
 * blocks back and asks again: it succeeds, failed_allocs counts the
 * first attempt, and errno is left as it was. */
static void a_full_watched_heap_empties_its_quarantine(void)
{
    umem_t *h = umem_create(2 << 20, UMEM_DEBUG);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t n = (3 << 20) / 2;
    umem_free(h, umem_alloc(h, n));
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.held_blocks, 1);
    errno = 1234;
    void *p = umem_alloc(h, n);
    CHECK_NE(p, NULL);
    CHECK_EQ(errno, 1234);
    umem_get_stats(h, &st);
    CHECK_EQ(st.failed_allocs, 1);
    CHECK_EQ(st.held_blocks, 0);
    umem_free(h, p);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* umem_check, umem_get_stats and umem_usable_size take the lock but are
 * not counted in lock_count, nor is a thread's pool set up: looking at
 * the heap does not change what is seen. */
static void looking_at_the_heap_is_not_counted(void)
{
    static const unsigned flags[] = {0, UMEM_GROW | UMEM_CACHED};
    for (unsigned f = 0; f < 2; f++) {
        check_where("flags %#x", flags[f]);
        umem_t *h = umem_create(1 << 20, flags[f]);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        void *slot = umem_alloc(h, 100); /* a pool set up and a page carved, or a block */
        void *block = umem_alloc(h, 100 << 10); /* a block with a header */
        umem_stats_t st;
        umem_get_stats(h, &st);
        uint64_t count = st.lock_count;
        CHECK_EQ(count, 1 + (f ? st.cache_refills : 1));
        CHECK_EQ(umem_check(h), 0);
        CHECK_GE(umem_usable_size(h, slot), 100);
        CHECK_GE(umem_usable_size(h, block), 100 << 10);
        umem_get_stats(h, &st);
        CHECK_EQ(st.lock_count, count);
        umem_free(h, slot);
        umem_free(h, block);
        umem_destroy(h);
    }
}

/* lock_count counts one acquisition per page a pool carves or a free
 * gives back, and two for a large block that needs a new mapping (once to
 * look, once to add it), one when a kept mapping serves it. */
static void the_lock_is_counted_per_page_and_large_block(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW | UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { N = 200 };
    void *p[N];
    for (unsigned i = 0; i < N; i++)
        p[i] = umem_alloc(h, 1000); /* three pages or more */
    for (unsigned i = 0; i < N; i++)
        umem_free(h, p[i]);
    umem_stats_t st;
    umem_get_stats(h, &st);
    check_where("%u slots of 1000 bytes", N);
    CHECK_GE(st.cache_refills, 3);
    CHECK_EQ(st.lock_count, st.cache_refills + st.cache_flushes);
    uint64_t count = st.lock_count;
    void *big = umem_alloc(h, 2 << 20);
    umem_get_stats(h, &st);
    check_where("a large block, a new mapping");
    CHECK_EQ(st.lock_count, count + 2);
    umem_free(h, big);
    big = umem_alloc(h, 2 << 20);
    umem_get_stats(h, &st);
    check_where("a large block, a kept mapping");
    CHECK_EQ(st.map_reuses, 1);
    CHECK_EQ(st.lock_count, count + 4);
    umem_free(h, big);
    umem_destroy(h);
}

/* A umem_realloc that resizes or moves a block is neither an allocation
 * nor a free in the counts; one that moves a block with a header to a
 * large block takes the lock four times (three when a kept mapping
 * serves it), one that stays in the regions once. */
static void a_realloc_is_no_alloc_nor_free(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t to[] = {2 << 20, 200 << 10, 300 << 10, 2 << 20};
    const uint64_t locks[] = {4, 1, 1, 3};
    umem_stats_t was, st;
    void *p = umem_alloc(h, 100 << 10);
    for (unsigned i = 0; i < 4; i++) {
        if (i == 3)
            umem_free(h, umem_alloc(h, 3 << 20)); /* a kept mapping for the last */
        check_where("realloc %u, from %zu to %zu bytes", i, umem_usable_size(h, p),
                    to[i]);
        umem_get_stats(h, &was);
        void *q = umem_realloc(h, p, to[i]);
        umem_get_stats(h, &st);
        CHECK_NE(q, NULL);
        if (!q)
            break;
        p = q; /* moved, or grown in place */
        CHECK_EQ(st.allocs, was.allocs);
        CHECK_EQ(st.frees, was.frees);
        CHECK_EQ(st.lock_count - was.lock_count, locks[i]);
    }
    umem_free(h, p);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* When the heap has no room for a page, the calling thread's own empty
 * pages go back to it first and the carve is tried again: a fixed heap
 * whose pages' half is taken by empty pages still serves new classes from
 * the pool. */
static void own_empty_pages_go_back_when_out_of_room(void)
{
    umem_t *h = umem_create(3 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { EMPTIED = 20, KEPT = 8 }; /* 28 classes of one-unit pages */
    void *kept[KEPT];
    umem_stats_t st, was;
    size_t n = 1;
    for (unsigned c = 0; c < EMPTIED + KEPT; c++) {
        umem_get_stats(h, &was);
        void *p = umem_alloc(h, n);
        umem_get_stats(h, &st);
        check_where("class %u, a request of %zu bytes", c, n);
        CHECK_EQ(st.cache_hits, was.cache_hits + 1); /* from the pool */
        n = umem_usable_size(h, p) + 1;
        if (c < EMPTIED)
            umem_free(h, p); /* its page stays, empty, to serve */
        else
            kept[c - EMPTIED] = p;
    }
    check_where_clear();
    CHECK_LE(st.pool_pages * (64 << 10), st.heap_bytes / 2);
    CHECK_GT(st.cache_flushes, 0); /* empty pages made room */
    for (unsigned k = 0; k < KEPT; k++)
        umem_free(h, kept[k]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* UMEM_DEBUG: each block has guard bytes, 0xfd, after it (16 at least)
 * and before it (the record's last 8 bytes). */
static void debug_guards_each_block(void)
{
    static const unsigned flags[] = {UMEM_DEBUG, UMEM_DEBUG | UMEM_CACHED};
    for (unsigned f = 0; f < 2; f++) {
        umem_t *h = umem_create(1 << 20, flags[f]);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        for (size_t n = 1; n <= 160; n++) {
            unsigned char *p = umem_alloc(h, n);
            if (!p)
                break;
            if (first_not(p + n, 16, 0xfd) != 16 || first_not(p - 8, 8, 0xfd) != 8) {
                check_where("flags %#x, a block of %zu bytes", flags[f], n);
                CHECK_EQ(first_not(p + n, 16, 0xfd), 16);
                CHECK_EQ(first_not(p - 8, 8, 0xfd), 8);
                break;
            }
            umem_free(h, p);
        }
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
}

/* fn(arg) on a thread of its own while this one holds the locks as
 * fork() does: it must end (setting *done) while they are held, else it
 * waited for the fork. */
static void run_while_forking(void *(*fn)(void *), void *arg, atomic_int *done)
{
    umem__hook_fork_prepare();
    pthread_t tid;
    int made = pthread_create(&tid, NULL, fn, arg) == 0;
    CHECK(made);
    double since = seconds_now();
    while (made && !atomic_load(done) && seconds_now() - since < 30)
        sched_yield();
    CHECK(atomic_load(done)); /* else it waited for the fork */
    umem__hook_fork_parent();
    if (made)
        pthread_join(tid, NULL);
}

/* umem_trim does not wait for a fork that holds the lock: it returns 0,
 * having given nothing back, and gives the pages back once the fork is
 * done. */
struct trim_call {
    umem_t *h;
    size_t got;
    atomic_int done;
};

static void *trim_while_forking(void *arg)
{
    struct trim_call *t = arg;
    t->got = umem_trim(t->h, 0);
    atomic_store(&t->done, 1);
    return NULL;
}

static void trim_does_not_wait_for_a_fork(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    char *big = umem_alloc(h, 512 << 10);
    void *after = umem_alloc(h, 64);
    if (big)
        memset(big, 1, 512 << 10);
    umem_free(h, big);
    struct trim_call t = {.h = h, .got = 1};
    run_while_forking(trim_while_forking, &t, &t.done);
    CHECK_EQ(t.got, 0);
    CHECK_GE(umem_trim(h, 0), 256 << 10); /* the fork done: given back */
    umem_free(h, after);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* umem_get_stats and umem_check do not wait for a fork that holds the
 * lock either: the statistics leave out what running threads' pools
 * counted, and have it again once the fork is done. */
struct look_call {
    umem_t *h;
    umem_stats_t st;
    int checked;
    atomic_int done;
};

static void *look_while_forking(void *arg)
{
    struct look_call *l = arg;
    umem_get_stats(l->h, &l->st);
    l->checked = umem_check(l->h);
    atomic_store(&l->done, 1);
    return NULL;
}

static void stats_and_check_do_not_wait_for_a_fork(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { POOLED = 10 };
    void *p[POOLED];
    for (unsigned k = 0; k < POOLED; k++)
        p[k] = umem_alloc(h, 40); /* counted by this thread's pool */
    umem_stats_t before, after;
    umem_get_stats(h, &before);
    struct look_call l = {.h = h, .checked = 1};
    run_while_forking(look_while_forking, &l, &l.done);
    CHECK_EQ(l.checked, 0);
    CHECK_EQ(l.st.allocs, before.allocs - POOLED); /* the pool's left out */
    umem_get_stats(h, &after);
    CHECK_EQ(after.allocs, before.allocs);
    for (unsigned k = 0; k < POOLED; k++)
        umem_free(h, p[k]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A thread that allocates `keep[0]`'s blocks of 48 bytes into keep[1..]
 * and exits, leaving its page abandoned; or (keep[1] NULL) one that uses
 * another class and exits, its own page going back. */
enum { KEEP = 60 };

static void *allocate_and_exit(void *arg)
{
    void **keep = arg;
    if (!keep[1]) { /* a thread with a pool, whose exit looks at the abandoned pages */
        make_own_pool(keep[0]);
        return NULL;
    }
    for (unsigned k = 1; k < KEEP; k++)
        keep[k] = umem_alloc(keep[0], 48);
    return NULL;
}

/* A page of a thread that ended, emptied by other threads' frees, goes
 * back to the heap at the next thread exit, or at the next purge epoch. */
static void an_abandoned_page_others_emptied_goes_back(void)
{
    for (int by_epoch = 0; by_epoch < 2; by_epoch++) {
        check_where(by_epoch ? "by a purge epoch" : "by a thread exit");
        umem_t *h = umem_create(1 << 20, UMEM_CACHED | UMEM_GROW);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        void *keep[KEEP] = {h, h};
        pthread_t tid;
        CHECK_EQ(pthread_create(&tid, NULL, allocate_and_exit, keep), 0);
        pthread_join(tid, NULL);
        for (unsigned k = 1; k < KEEP; k++)
            umem_free(h, keep[k]); /* remote frees: the abandoned page empties */
        umem_stats_t st;
        umem_get_stats(h, &st);
        CHECK_EQ(st.abandoned_pages, 1);
        if (by_epoch) {
            void *live = umem_alloc(h, 600 << 10); /* the heap does not empty */
            double since = seconds_now();
            while (st.abandoned_pages > 0 && seconds_now() < since + 30) {
                umem_free(h, umem_alloc(h, 100 << 10)); /* under the lock */
                umem_get_stats(h, &st);
            }
            umem_free(h, live);
        } else {
            void *other[KEEP] = {h, NULL};
            CHECK_EQ(pthread_create(&tid, NULL, allocate_and_exit, other), 0);
            pthread_join(tid, NULL);
            umem_get_stats(h, &st);
        }
        CHECK_EQ(st.abandoned_pages, 0);
        CHECK_EQ(st.pool_pages, 0);
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
}

/* ... and when a thread's pool finds the heap out of room for a page. */
static void an_abandoned_page_goes_back_when_out_of_room(void)
{
    umem_t *h = umem_create(4 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *keep[KEEP] = {h, h};
    pthread_t tid;
    CHECK_EQ(pthread_create(&tid, NULL, allocate_and_exit, keep), 0);
    pthread_join(tid, NULL);
    for (unsigned k = 1; k < KEEP; k++)
        umem_free(h, keep[k]); /* the abandoned page empties */
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.abandoned_pages, 1);
    enum { MOST = 8000 };
    static void *p[MOST];
    unsigned n = 0;
    uint64_t hits;
    do { /* until the pool can no longer place a block: out of room */
        hits = st.cache_hits;
        p[n] = umem_alloc(h, 1000);
        umem_get_stats(h, &st);
    } while (p[n++] && st.cache_hits > hits && n < MOST);
    CHECK_EQ(st.cache_hits, hits);
    CHECK_EQ(st.abandoned_pages, 0);
    for (unsigned k = 0; k < n; k++)
        umem_free(h, p[k]);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* On a UMEM_CACHED heap, an alignment of up to 128 bytes for up to 64 KiB
 * comes from the pool, from the first class that fits and whose slots are
 * a multiple of it; a larger one gets a block with a header. */
static void aligned_requests_up_to_128_come_from_the_pool(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    static const size_t align[] = {32, 64, 128, 256}, want[] = {96, 128, 128, 0};
    umem_stats_t was, st;
    for (unsigned i = 0; i < 4; i++) {
        check_where("90 bytes aligned to %zu", align[i]);
        umem_get_stats(h, &was);
        void *p = umem_memalign(h, align[i], 90);
        umem_get_stats(h, &st);
        CHECK_NE(p, NULL);
        CHECK_EQ((uintptr_t)p % align[i], 0);
        CHECK_EQ(st.cache_hits - was.cache_hits, want[i] ? 1 : 0);
        if (want[i])
            CHECK_EQ(umem_usable_size(h, p), want[i]);
        umem_free(h, p);
    }
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* At most UMEM_MAP_CACHE freed large mappings are kept: the oldest is
 * unmapped to make room for a newer one. */
static void at_most_eight_mappings_are_kept_oldest_out(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { N = UMEM_MAP_CACHE + 1 };
    void *p[N];
    for (unsigned i = 0; i < N; i++)
        p[i] = umem_alloc(h, (i == 0 ? 2 : 3) << 20); /* the oldest freed is smaller */
    for (unsigned i = 0; i < N; i++)
        umem_free(h, p[i]);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_EQ(st.map_cache_bytes / (1 << 20), UMEM_MAP_CACHE * 3); /* and a little */
    CHECK_EQ(st.large_blocks, 0);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* A page is one 64 KiB unit, which holds seven slots at least of every
 * class up to 4 KiB. */
static void a_page_holds_seven_slots_at_least(void)
{
    static const size_t sizes[] = {1024, 2048, 3000, 4096};
    for (unsigned i = 0; i < 4; i++) {
        check_where("slots of %zu bytes", sizes[i]);
        umem_t *h = umem_create(1 << 20, UMEM_GROW | UMEM_CACHED);
        CHECK_NE(h, NULL);
        if (!h)
            continue;
        enum { MOST = 64 };
        void *p[MOST];
        unsigned n = 0;
        umem_stats_t st;
        do { /* the first page filled, the second begun */
            p[n++] = umem_alloc(h, sizes[i]);
            umem_get_stats(h, &st);
        } while (n < MOST && st.cache_refills < 2);
        CHECK_GE(n - 1, 7);
        for (unsigned k = 0; k < n; k++)
            umem_free(h, p[k]);
        CHECK_EQ(umem_check(h), 0);
        umem_destroy(h);
    }
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
    RUN(a_full_pages_freed_slots_come_back_first);
    RUN(free_pages_go_back_after_the_delay_while_in_use);
    RUN(debug_fills_new_and_freed_blocks);
    RUN(check_finds_a_damaged_page_and_unit_map);
    RUN(check_finds_damaged_footers_spans_and_counts);
    RUN(a_lent_free_is_settled_on_its_own);
    RUN(size_classes_lose_at_most_a_quarter);
    RUN(small_requests_find_their_page_and_frees_their_slot);
    RUN(a_thread_gets_its_pool_after_its_first_16_requests);
    RUN(a_pooled_realloc_stays_while_more_than_half);
    RUN(a_freed_block_over_4_kib_is_kept_for_its_class);
    RUN(kept_blocks_are_at_most_16_a_class_and_1_mib);
    RUN(kept_blocks_go_back_at_exit_and_trim);
    RUN(a_thread_keeps_blocks_only_after_its_own_requests);
    RUN(a_full_heap_takes_back_the_blocks_kept);
    RUN(a_pool_out_of_room_takes_back_the_blocks_kept);
    RUN(a_fixed_heap_keeps_half_for_headers);
    RUN(growth_takes_a_mib_or_half_the_heap);
    RUN(purged_pages_are_passed_by_later_purges);
    RUN(kept_mappings_go_after_the_delay_while_in_use);
    RUN(a_large_request_takes_the_smallest_kept_mapping);
    RUN(a_kept_mapping_is_trimmed_to_the_request);
    RUN(kept_mappings_hold_at_most_half_in_use_or_64_mib);
    RUN(a_purge_that_gives_nothing_back_is_not_counted);
    RUN(the_quarantine_holds_at_most_its_blocks_oldest_first);
    RUN(the_quarantine_holds_at_most_its_bytes);
    RUN(a_full_watched_heap_empties_its_quarantine);
    RUN(looking_at_the_heap_is_not_counted);
    RUN(the_lock_is_counted_per_page_and_large_block);
    RUN(a_realloc_is_no_alloc_nor_free);
    RUN(own_empty_pages_go_back_when_out_of_room);
    RUN(debug_guards_each_block);
    RUN(trim_does_not_wait_for_a_fork);
    RUN(stats_and_check_do_not_wait_for_a_fork);
    RUN(an_abandoned_page_others_emptied_goes_back);
    RUN(an_abandoned_page_goes_back_when_out_of_room);
    RUN(aligned_requests_up_to_128_come_from_the_pool);
    RUN(at_most_eight_mappings_are_kept_oldest_out);
    RUN(a_page_holds_seven_slots_at_least);
    return CHECK_EXIT_STATUS();
}
