/*
 * debug_bugs.c - one memory bug, planted on purpose, for the tools that
 * must catch it (tests/test_debug.sh runs it with UMEM_DEBUG, under
 * valgrind and built with AddressSanitizer):
 *
 *     tests/debug_bugs KIND BUG [debug|exit|guard|guard-debug]
 *
 * KIND is the heap: locked, cached or nolock (umem_create with 0,
 * UMEM_CACHED or UMEM_NOLOCK; "debug" adds UMEM_DEBUG, and so does
 * "exit", where the program never destroys the heap), or pool:
 * esharedhash's own pools, over a locked heap.  BUG is one of the names
 * in `bugs` below.  Before the bug the program prints "block P line N":
 * the block concerned and the line of the statement that does the harm
 * (for a leak, the one that allocates the block), so that the test can
 * look for both in the tool's report.  It then frees what it holds and
 * destroys the heap (but with "exit"), exiting 0 if nothing stopped it.
 */
#define main esharedhash_main
#include "../esharedhash.c"
#undef main

static umem_t *heap;
static int in_pools; /* KIND pool: umalloc and ufree, esharedhash's */
static volatile char sink;

static void *get(size_t n)
{
    return in_pools ? umalloc(n) : umem_alloc(heap, n);
}

static void put(void *p)
{
    if (in_pools)
        ufree(p);
    else
        umem_free(heap, p);
}

/* Pools have no realloc: a program moves a block itself. */
static char *move(char *p, size_t old, size_t n)
{
    if (!in_pools)
        return umem_realloc(heap, p, n);
    char *q = umalloc(n);
    memcpy(q, p, old);
    ufree(p);
    return q;
}

/* Says which block and which line, then does the harm on that line. */
#define AT(p, harm)                                                        \
    do {                                                                   \
        printf("block %p line %d\n", (void *)(p), __LINE__);               \
        fflush(stdout);                                                    \
        harm;                                                              \
    } while (0)

static void overrun(void)
{
    char *p = get(100);
    AT(p, p[100] = 1);
    put(p);
}

static void underrun(void)
{
    char *before = get(100), *p = get(100);
    AT(p, p[-1] = 1);
    put(p);
    put(before);
}

static void overread(void)
{
    char *p = get(100);
    memset(p, 0, 100);
    AT(p, sink = p[100]);
    put(p);
}

static void read_after_free(void)
{
    char *p = get(100);
    memset(p, 0, 100);
    put(p);
    AT(p, sink = p[10]);
}

static void write_after_free(void)
{
    char *p = get(100);
    put(p);
    AT(p, p[10] = 1);
}

static void stale_after_realloc(void)
{
    char *p = get(100);
    memset(p, 0, 100);
    char *q = move(p, 100, 5000);
    AT(p, p[10] = 1);
    put(q);
}

static void uninitialised_read(void)
{
    char *p = get(100);
    AT(p, if (p[10] == 42) puts("42"));
    put(p);
}

static void memalign_overrun(void)
{
    char *p = umem_memalign(heap, 64, 100);
    AT(p, p[100] = 1);
    put(p);
}

static void double_free(void)
{
    char *p = get(100);
    put(p);
    AT(p, put(p));
}

static void foreign_free(void)
{
    static _Alignas(16) char not_ours[64];
    AT(not_ours, put(not_ours));
}

/* Not static, so that a backtrace names it (the build adds -rdynamic). */
__attribute__((noinline)) void leak_one_block(void)
{
    int line = __LINE__ + 1;
    char *p = get(100);
    p[0] = 1;
    printf("block %p line %d\n", (void *)p, line);
    fflush(stdout);
}

static const struct {
    const char *name;
    void (*plant)(void);
} bugs[] = {
    {"overrun", overrun},
    {"underrun", underrun},
    {"overread", overread},
    {"read-after-free", read_after_free},
    {"write-after-free", write_after_free},
    {"stale-after-realloc", stale_after_realloc},
    {"uninitialised-read", uninitialised_read},
    {"memalign-overrun", memalign_overrun},
    {"double-free", double_free},
    {"foreign-free", foreign_free},
    {"leak", leak_one_block},
};

static int bugs_usage(void)
{
    fprintf(stderr, "usage: debug_bugs locked|cached|nolock|pool BUG [debug|exit|guard|guard-debug]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return bugs_usage();
    const char *mode = argc > 3 ? argv[3] : "";
    int at_exit = strcmp(mode, "exit") == 0;
    unsigned flags = at_exit || strcmp(mode, "debug") == 0 ? UMEM_DEBUG : 0;
    if (strcmp(mode, "guard") == 0)
        flags = UMEM_GUARD;
    else if (strcmp(mode, "guard-debug") == 0)
        flags = UMEM_GUARD | UMEM_DEBUG;
    if (strcmp(argv[1], "cached") == 0)
        flags |= UMEM_CACHED;
    else if (strcmp(argv[1], "nolock") == 0)
        flags |= UMEM_NOLOCK;
    else if (strcmp(argv[1], "pool") == 0)
        in_pools = 1;
    else if (strcmp(argv[1], "locked") != 0)
        return bugs_usage();
    heap = umem_create((size_t)4 << 20, flags);
    if (!heap) {
        perror("debug_bugs: umem_create");
        return 1;
    }
    struct policy_env env = {.heap = heap, .mode = MODE_SINGLE, .pool_bytes = (size_t)64 << 10};
    if (in_pools)
        pool_reader_begin(&env);
    for (size_t i = 0; i < sizeof bugs / sizeof bugs[0]; i++)
        if (strcmp(argv[2], bugs[i].name) == 0) {
            bugs[i].plant();
            if (in_pools) {
                struct alloc_counts counts;
                pool_end(&counts);
            }
            if (!at_exit)
                umem_destroy(heap);
            return 0;
        }
    return bugs_usage();
}
