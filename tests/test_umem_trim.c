/* umem_trim and umem_set_purge_min: free pages and cached mappings given
 * back now, but the bytes asked to be kept; the statistics that follow
 * them (large_bytes, map_cache_bytes, unpurged_bytes).  What is resident
 * is read with mincore(2), which answers for the pages themselves, and
 * the purge delay is set longer than any run: no test here depends on
 * how long anything takes. */
#define UMEM_PURGE_DELAY_MS 1000000000 /* 11 days: no purge on the delay */
#include "check.h"
#include "../umem.h"

#include <sys/mman.h>

/* The resident pages' bytes in [lo, hi). */
static size_t resident_in(const char *lo, const char *hi)
{
    uintptr_t pg = check_page_size() - 1;
    uintptr_t from = (uintptr_t)lo & ~pg, to = ((uintptr_t)hi + pg) & ~pg;
    size_t pages = (to - from) / check_page_size(), resident = 0;
    unsigned char *vec = malloc(pages);
    CHECK(vec != NULL);
    if (vec && mincore((void *)from, to - from, vec) == 0)
        for (size_t i = 0; i < pages; i++)
            resident += vec[i] & 1;
    free(vec);
    return resident * check_page_size();
}

enum { BLOCKS = 160, BLOCK = 100 << 10 }; /* 16 MiB, each block under UMEM_LARGE */

/* BLOCKS blocks of BLOCK bytes written, then freed; [*lo, *hi) spans them. */
static void blocks_come_and_go(umem_t *h, char **lo, char **hi)
{
    *lo = (char *)UINTPTR_MAX;
    *hi = NULL;
    char *p[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        p[i] = umem_alloc(h, BLOCK);
        CHECK_NE(p[i], NULL);
        if (!p[i])
            continue;
        memset(p[i], 1, BLOCK);
        *lo = p[i] < *lo ? p[i] : *lo;
        *hi = p[i] + BLOCK > *hi ? p[i] + BLOCK : *hi;
    }
    for (int i = 0; i < BLOCKS; i++)
        umem_free(h, p[i]);
}

static void trim_keeps_what_it_is_asked_to(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    CHECK_EQ(umem_set_purge_min(h, SIZE_MAX), UMEM_PURGE_MIN); /* no purge at once */
    char *lo, *hi;
    blocks_come_and_go(h, &lo, &hi);
    size_t keep = (size_t)4 << 20, slack = 4 * check_page_size();
    size_t total = (size_t)BLOCKS * BLOCK;
    CHECK_GE(resident_in(lo, hi), total - slack); /* nothing went back at the frees */
    size_t given = umem_trim(h, keep);
    umem_stats_t st;
    umem_get_stats(h, &st);
    check_where("umem_trim(h, 4 MiB) gave %zu", given);
    CHECK_GE(given, total - keep - slack);
    CHECK_LE(given, total - keep + slack);
    CHECK_LE(resident_in(lo, hi), keep + slack);
    CHECK_GE(resident_in(lo, hi), keep - slack);
    CHECK_LE(st.unpurged_bytes, keep + slack);
    CHECK_EQ(st.bytes_in_use, 0);
    given = umem_trim(h, 0);
    umem_get_stats(h, &st);
    check_where("umem_trim(h, 0) gave %zu", given);
    CHECK_LE(resident_in(lo, hi), slack);
    CHECK_EQ(st.unpurged_bytes, 0);
    CHECK_GE(st.released_bytes, (uint64_t)total - slack);
    CHECK_EQ(umem_trim(h, 0), 0); /* nothing left */
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

/* With the threshold at 0, an emptied heap gives its free pages back at
 * the frees that empty it (but pages at the edges of blocks given back
 * one by one, which umem_trim then takes). */
static void purge_min_zero_gives_back_at_the_free(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    CHECK_EQ(umem_set_purge_min(h, 0), UMEM_PURGE_MIN);
    CHECK_EQ(umem_set_purge_min(h, 0), 0);
    char *lo, *hi;
    blocks_come_and_go(h, &lo, &hi);
    CHECK_LE(resident_in(lo, hi), (size_t)BLOCKS * BLOCK / 8);
    CHECK_GT(umem_trim(h, 0), 0);
    CHECK_LE(resident_in(lo, hi), 4 * check_page_size());
    umem_destroy(h);
}

/* A thread's empty pool pages go back to the heap, and their pages to
 * the system. */
static void trim_takes_back_empty_pool_pages(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW | UMEM_CACHED);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    enum { N = 20000 };
    void **p = malloc(N * sizeof *p);
    CHECK(p != NULL);
    for (int i = 0; p && i < N; i++) {
        p[i] = umem_alloc(h, 100);
        CHECK_NE(p[i], NULL);
    }
    for (int i = 0; p && i < N; i++)
        umem_free(h, p[i]);
    free(p);
    umem_stats_t st;
    umem_get_stats(h, &st);
    CHECK_GT(st.pool_pages, 0); /* the class keeps its empty page */
    CHECK_GT(umem_trim(h, 0), 0);
    umem_get_stats(h, &st);
    CHECK_EQ(st.pool_pages, 0);
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_EQ(st.unpurged_bytes, 0);
    CHECK_EQ(umem_check(h), 0);
    void *again = umem_alloc(h, 100); /* the pool carves a page anew */
    CHECK_NE(again, NULL);
    umem_free(h, again);
    umem_destroy(h);
}

/* A large block's mapping: counted in large_bytes while it lives, in
 * map_cache_bytes once freed, unmapped by umem_trim. */
static void trim_unmaps_cached_mappings(void)
{
    umem_t *h = umem_create(1 << 20, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    size_t n = (size_t)4 << 20;
    umem_stats_t st;
    char *p = umem_alloc(h, n);
    CHECK_NE(p, NULL);
    umem_get_stats(h, &st);
    CHECK_EQ(st.large_blocks, 1);
    CHECK_GE(st.large_bytes, n);
    CHECK_LE(st.large_bytes, n + 2 * check_page_size());
    uint64_t mapped = st.mapped_bytes, large = st.large_bytes;
    umem_free(h, p);
    umem_get_stats(h, &st);
    CHECK_EQ(st.large_bytes, 0);
    CHECK_EQ(st.map_cache_bytes, large);
    CHECK_GE(umem_trim(h, 0), large);
    umem_get_stats(h, &st);
    CHECK_EQ(st.map_cache_bytes, 0);
    CHECK_EQ(st.mapped_bytes, mapped - large);
    umem_destroy(h);
}

/* A heap that does not grow gives nothing back, and says so. */
static void trim_of_a_fixed_heap_is_nothing(void)
{
    umem_t *h = umem_create(4 << 20, 0);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *p = umem_alloc(h, 1 << 20);
    umem_free(h, p);
    CHECK_EQ(umem_trim(h, 0), 0);
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

int main(void)
{
    RUN(trim_keeps_what_it_is_asked_to);
    RUN(purge_min_zero_gives_back_at_the_free);
    RUN(trim_takes_back_empty_pool_pages);
    RUN(trim_unmaps_cached_mappings);
    RUN(trim_of_a_fixed_heap_is_nothing);
    return CHECK_EXIT_STATUS();
}
