/* The tests of umem.h again with UMEM_RESERVE at 1 MiB: a growing heap
 * soon maps regions of its own past its first, and every model, check
 * and count must hold across them.  Each test's name starts "regions: ",
 * so that none is the same as tests/test_umem's. */
#define UMEM_RESERVE      ((size_t)1 << 20)
#define CHECK_PREFIX      "regions: "
#define TEST_UMEM_NO_MAIN 1
#include "test_umem.c"

static void grown_heap_has_regions(void)
{
    umem_t *h = umem_create(4096, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *p[64];
    for (int i = 0; i < 64; i++) { /* 64 x 200 KiB: far past the first MiB */
        check_where("block #%d", i);
        p[i] = umem_alloc(h, 200 << 10);
        CHECK_NE(p[i], NULL);
    }
    check_where("64 blocks");
    CHECK_GT(umem__hook_spans(h), 0); /* regions of their own */
    CHECK_EQ(umem_check(h), 0);
    for (int i = 0; i < 64; i += 2)
        umem_free(h, p[i]);
    check_where("the even blocks freed");
    CHECK_EQ(umem_check(h), 0);
    for (int i = 1; i < 64; i += 2)
        umem_free(h, p[i]);
    umem_stats_t st;
    umem_get_stats(h, &st);
    check_where("every block freed");
    CHECK_EQ(st.bytes_in_use, 0);
    CHECK_GT(st.heap_bytes, (size_t)64 * (200 << 10));
    CHECK_EQ(umem_check(h), 0);
    umem_destroy(h);
}

static int check_heap(void *h)
{
    return umem_check(h);
}

/* umem_check finds a region's end moved past its mapping (I6). */
static void a_regions_bounds_damaged_are_found(void)
{
    umem_t *h = umem_create(4096, UMEM_GROW);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    void *fill = umem_alloc(h, 600 << 10), *grown = umem_alloc(h, 600 << 10);
    CHECK(fill && grown);
    CHECK_EQ(umem__hook_spans(h), 1); /* grown: in a region of its own */
    umem__hook_move_region_end(h, grown, (ptrdiff_t)64 << 20);
    CHECK_FAILS_SAYING(check_heap, h, "I6: a region's bounds");
    umem__hook_move_region_end(h, grown, -((ptrdiff_t)64 << 20));
    CHECK_EQ(umem_check(h), 0);
    umem_free(h, grown);
    umem_free(h, fill);
    umem_destroy(h);
}

int main(void)
{
    RUN(grown_heap_has_regions);
    RUN(a_regions_bounds_damaged_are_found);
    return run_all();
}
