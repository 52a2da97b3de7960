/*
 * libumem_info - what a program asks of its malloc besides blocks, run by
 * tests/test_dropin.sh with and without LD_PRELOAD=./libumem.so.  The
 * first argument names what to do:
 *
 *   figures          mallinfo2 and mallinfo against the blocks the program
 *                    holds; malloc_stats and malloc_info against mallinfo2;
 *                    mallopt; the resident size after malloc_trim; glibc's
 *                    __libc_* entry points; C23's sized frees
 *   in-use           10,000 blocks of 100 bytes kept, then mallinfo2's
 *                    uordblks on stdout as the last thing done (for
 *                    UMEM_STATS, which reads the heap just after)
 *   sized            the sized frees of blocks of many sizes, each with
 *                    the size it was allocated with (no misuse: for
 *                    UMEM_DEBUG, which checks the size exactly)
 *   sized-over       misuse: free_sized with more than the block holds
 *   sized-under      free_sized with one byte less than asked for (a
 *                    misuse UMEM_DEBUG alone sees)
 *   sized-align      misuse: free_aligned_sized with an alignment that
 *                    is not a power of two
 *
 * Each test prints "ok - NAME" or "not ok - NAME".  With LIBUMEM=1 in the
 * environment the program holds libumem's answers to what libumem(3)
 * promises beyond glibc's; under glibc it checks that it asks the right
 * questions, with the answers glibc gives.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* glibc's own names for its allocator, and C23's sized frees (weak: the
 * C library may have none, and then the program still runs). */
void *__libc_malloc(size_t n);
void __libc_free(void *p);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void *__libc_valloc(size_t n);
void *__libc_pvalloc(size_t n);
void free_sized(void *p, size_t n) __attribute__((weak));
void free_aligned_sized(void *p, size_t align, size_t n) __attribute__((weak));

static int libumem; /* LIBUMEM=1: running under libumem.so */

static size_t in_use(void)
{
    return mallinfo2().uordblks;
}

/* ---- mallinfo2 and mallinfo ---- */

/* 10,000 live blocks of one size: uordblks grows by at least the bytes
 * asked for, and by no more than 1.25 times them plus a page. */
static void uordblks_follows_live_blocks(void)
{
    static const size_t sizes[] = {100, 1000, 5000, 40000};
    enum { COUNT = 10000 };
    void **p = malloc(COUNT * sizeof *p);
    CHECK(p != NULL);
    for (size_t s = 0; p && s < sizeof sizes / sizeof sizes[0]; s++) {
        check_where("%zu blocks of %zu bytes", (size_t)COUNT, sizes[s]);
        size_t before = in_use(), asked = COUNT * sizes[s];
        for (int i = 0; i < COUNT; i++) {
            p[i] = malloc(sizes[s]);
            CHECK(p[i] != NULL);
            if (p[i])
                memset(p[i], 1, sizes[s]);
        }
        size_t grew = in_use() - before;
        CHECK_GE(grew, asked);
        CHECK_LE(grew, asked + asked / 4 + check_page_size());
        for (int i = 0; i < COUNT; i++)
            free(p[i]);
        if (libumem) /* glibc counts the blocks of its thread cache in use */
            CHECK_LE(in_use(), before + check_page_size());
    }
    free(p);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static struct mallinfo old_mallinfo(void)
{
    return mallinfo();
}
#pragma GCC diagnostic pop

/* The fields add up as glibc's do; the old call says the same. */
static void mallinfo_fields_agree(void)
{
    void *kept = malloc(5000);
    struct mallinfo2 m = mallinfo2();
    struct mallinfo o = old_mallinfo();
    CHECK_EQ(m.arena, m.uordblks + m.fordblks);
    CHECK_LE(m.fsmblks, m.fordblks);
    CHECK_GE(m.uordblks, (size_t)5000);
    CHECK_EQ((size_t)o.uordblks, m.uordblks);
    CHECK_EQ((size_t)o.arena, m.arena);
    CHECK_EQ((size_t)o.hblkhd, m.hblkhd);
    if (libumem)
        CHECK_GE(m.usmblks, m.uordblks); /* the peak */
    free(kept);
}

/* A block of 16 MiB has a mapping of its own in both allocators. */
static void large_blocks_are_mapped_blocks(void)
{
    size_t n = (size_t)16 << 20;
    struct mallinfo2 before = mallinfo2();
    char *p = malloc(n);
    CHECK(p != NULL);
    if (!p)
        return;
    p[0] = p[n - 1] = 1;
    struct mallinfo2 during = mallinfo2();
    CHECK_EQ(during.hblks, before.hblks + 1);
    CHECK_GE(during.hblkhd - before.hblkhd, n);
    CHECK_LE(during.hblkhd - before.hblkhd, n + 2 * check_page_size());
    if (libumem) /* libumem's uordblks counts them; glibc's does not */
        CHECK_EQ(during.uordblks - before.uordblks, during.hblkhd - before.hblkhd);
    free(p);
    struct mallinfo2 after = mallinfo2();
    CHECK_EQ(after.hblks, before.hblks);
    CHECK_EQ(after.hblkhd, before.hblkhd);
}

/* ---- malloc_stats and malloc_info ---- */

/* What `fill` writes to standard error, or to the FILE it is given, read
 * back into buf (a temporary file), with mallinfo2's answer just before
 * in *m. */
static size_t capture(void (*fill)(FILE *), char *buf, size_t size, struct mallinfo2 *m)
{
    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (!f)
        return 0;
    fflush(stderr);
    *m = mallinfo2();
    int saved = dup(2);
    dup2(fileno(f), 2);
    fill(f);
    fflush(f);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t len = fread(buf, 1, size - 1, f);
    buf[len] = '\0';
    fclose(f);
    return len;
}

static void fill_stats(FILE *f)
{
    (void)f;
    malloc_stats();
}

static void fill_info(FILE *f)
{
    CHECK_EQ(malloc_info(0, f), 0);
}

/* The number after `key` at or after the n-th occurrence of `after`. */
static unsigned long long field(const char *text, const char *after, int n,
                                const char *key)
{
    const char *at = text;
    for (int i = 0; i < n && at; i++)
        at = strstr(i ? at + 1 : at, after);
    at = at ? strstr(at, key) : NULL;
    return at ? strtoull(at + strlen(key), NULL, 10) : ~0ull;
}

/* glibc's shape, with the figures mallinfo2 gives. */
static void malloc_stats_in_glibcs_shape(void)
{
    char text[4096];
    void *big = malloc((size_t)16 << 20);
    struct mallinfo2 m;
    capture(fill_stats, text, sizeof text, &m);
    CHECK(strncmp(text, "Arena 0:\nsystem bytes     = ", 28) == 0);
    CHECK(strstr(text, "Total (incl. mmap):\n") != NULL);
    unsigned long long total = field(text, "Total", 1, "in use bytes     =");
    unsigned long long maps = field(text, "Total", 1, "max mmap regions =");
    CHECK_EQ(total, (unsigned long long)(libumem ? m.uordblks : m.uordblks + m.hblkhd));
    CHECK_GE(field(text, "Arena 0", 1, "system bytes     ="), 1ull);
    CHECK_GE(maps, 1ull);
    if (libumem)
        CHECK_EQ(field(text, "Total", 1, "system bytes     ="),
                 (unsigned long long)m.arena);
    free(big);
}

static void malloc_info_in_glibcs_elements(void)
{
    char text[8192];
    void *big = malloc((size_t)16 << 20);
    struct mallinfo2 m;
    capture(fill_info, text, sizeof text, &m);
    CHECK(strncmp(text, "<malloc version=\"1\">\n<heap nr=\"0\">\n", 35) == 0);
    CHECK(strstr(text, "</heap>\n") != NULL);
    size_t len = strlen(text);
    CHECK(len > 10 && strcmp(text + len - 10, "</malloc>\n") == 0);
    CHECK_EQ(field(text, "<total type=\"mmap\"", 1, "count=\""),
             (unsigned long long)m.hblks);
    CHECK_EQ(field(text, "<total type=\"mmap\"", 1, "size=\""),
             (unsigned long long)m.hblkhd);
    /* The total's current system bytes: the second such element. */
    CHECK_EQ(field(text, "<system type=\"current\"", 2, "size=\""),
             (unsigned long long)m.arena);
    errno = 0;
    int r = malloc_info(1, stdout);
    if (libumem) { /* as malloc_info(3) says; glibc returns EINVAL */
        CHECK_EQ(r, -1);
        CHECK_EQ(errno, EINVAL);
    } else {
        CHECK_NE(r, 0);
    }
    free(big);
}

/* ---- mallopt and malloc_trim ---- */

static void mallopt_says_what_it_takes(void)
{
    CHECK_EQ(mallopt(M_TRIM_THRESHOLD, 128 << 10), 1);
    CHECK_EQ(mallopt(M_ARENA_MAX, 4), 1);
    /* Meaningless to umem: refused, as libumem(3) says. */
    CHECK_EQ(mallopt(M_MMAP_THRESHOLD, 1 << 20), libumem ? 0 : 1);
    CHECK_EQ(mallopt(M_PERTURB, 0), libumem ? 0 : 1);
    if (libumem) { /* glibc takes anything */
        CHECK_EQ(mallopt(12345, 1), 0);
        CHECK_EQ(mallopt(M_TRIM_THRESHOLD, -1), 0);
        CHECK_EQ(mallopt(M_ARENA_MAX, 0), 0);
    }
}

/* `mib` MiB of 100-byte blocks, chained, then freed. */
static void small_blocks_come_and_go(size_t mib, size_t *peak)
{
    void *head = NULL;
    for (size_t n = 0; n < (mib << 20) / 100; n++) {
        void **p = malloc(100);
        CHECK(p != NULL);
        if (!p)
            break;
        memset(p, 7, 100);
        p[0] = head;
        head = p;
    }
    *peak = check_resident_bytes();
    while (head) {
        void *next = *(void **)head;
        free(head);
        head = next;
    }
}

/* After 100 MiB of small blocks are freed and malloc_trim(0) called, the
 * resident size is within 10% of what it was before they were made.  A
 * first, smaller round brings every page of code and data the round
 * touches in, so that only the blocks differ. */
static void trim_gives_the_pages_back(void)
{
    CHECK_EQ(mallopt(M_TRIM_THRESHOLD, 128 << 10), 1); /* glibc's default, fixed */
    size_t peak;
    small_blocks_come_and_go(4, &peak);
    malloc_trim(0);
    size_t before = check_resident_bytes();
    small_blocks_come_and_go(100, &peak);
    int r = malloc_trim(0);
    size_t after = check_resident_bytes();
    fprintf(stderr,
            "resident: %zu KiB before, %zu KiB with 100 MiB, %zu KiB after (trim %d)\n",
            before >> 10, peak >> 10, after >> 10, r);
    CHECK_GE(peak, before + ((size_t)90 << 20));
    CHECK_LE(after, before + before / 10);
    if (libumem) {
        CHECK_EQ(r, 1);
        CHECK_EQ(mallinfo2().keepcost, (size_t)0);
    }
}

/* ---- the other entry points ---- */

static void libc_entry_points_share_the_heap(void)
{
    size_t before = in_use();
    char *a = __libc_malloc(3000);
    CHECK(a != NULL);
    CHECK_GE(in_use(), before + 3000);
    free(a); /* a block of __libc_malloc, freed by free */
    unsigned char *z = __libc_calloc(100, 10);
    CHECK(z != NULL);
    for (int i = 0; z && i < 1000; i++)
        CHECK_EQ(z[i], 0);
    char *r = __libc_realloc(malloc(10), 5000);
    CHECK(r != NULL);
    char *m = __libc_memalign(256, 100), *v = __libc_valloc(100),
         *pv = __libc_pvalloc(100);
    CHECK(m && v && pv);
    CHECK_EQ((uintptr_t)m % 256, 0);
    CHECK_EQ((uintptr_t)v % check_page_size(), 0);
    CHECK_EQ((uintptr_t)pv % check_page_size(), 0);
    CHECK_GE(malloc_usable_size(pv), check_page_size());
    __libc_free(z);
    __libc_free(r);
    __libc_free(m);
    free(v);
    __libc_free(pv);
    CHECK_LE(in_use(), before + check_page_size());
}

static void sized_frees_free(void)
{
    if (!free_sized || !free_aligned_sized) {
        CHECK(!libumem); /* libumem.so has them */
        return;
    }
    size_t before = in_use();
    for (size_t n = 0; n < 200000; n = n * 2 + 1) {
        free_sized(malloc(n), n);
        free_aligned_sized(aligned_alloc(64, n), 64, n);
        free_aligned_sized(aligned_alloc(4096, n), 4096, n);
        void *c = calloc(3, n);
        free_sized(c, 3 * n);
    }
    free_sized(NULL, 10);
    free_aligned_sized(NULL, 64, 10);
    if (!getenv("UMEM_DEBUG")) /* its quarantine holds freed blocks, in use */
        CHECK_LE(in_use(), before + check_page_size());
}

/* ---- the misuse modes ---- */

static int misuse(const char *mode)
{
    if (!free_sized || !free_aligned_sized)
        return 3;
    char *p = malloc(100);
    printf("%p\n", (void *)p);
    fflush(stdout);
    if (strcmp(mode, "sized-over") == 0)
        free_sized(p, 100 + 4096);
    else if (strcmp(mode, "sized-under") == 0)
        free_sized(p, 99);
    else
        free_aligned_sized(p, 48, 100);
    return 0;
}

/* The blocks stay; uordblks is read after every other call of the
 * program, and written without stdio. */
static int live_blocks_in_use(void)
{
    for (int i = 0; i < 10000; i++) {
        void *volatile p = malloc(100);
        (void)p;
    }
    char line[64];
    int len = snprintf(line, sizeof line, "%zu\n", mallinfo2().uordblks);
    return write(1, line, (size_t)len) == len ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    const char *env = getenv("LIBUMEM");
    libumem = env && strcmp(env, "1") == 0;
    if (strcmp(mode, "figures") == 0) {
        RUN(uordblks_follows_live_blocks);
        RUN(mallinfo_fields_agree);
        RUN(large_blocks_are_mapped_blocks);
        RUN(malloc_stats_in_glibcs_shape);
        RUN(malloc_info_in_glibcs_elements);
        RUN(mallopt_says_what_it_takes);
        RUN(trim_gives_the_pages_back);
        RUN(libc_entry_points_share_the_heap);
        RUN(sized_frees_free);
        return CHECK_EXIT_STATUS();
    }
    if (strcmp(mode, "in-use") == 0)
        return live_blocks_in_use();
    if (strcmp(mode, "sized") == 0) {
        RUN(sized_frees_free);
        return CHECK_EXIT_STATUS();
    }
    if (strncmp(mode, "sized-", 6) == 0)
        return misuse(mode);
    fprintf(
        stderr,
        "usage: libumem_info figures|in-use|sized|sized-over|sized-under|sized-align\n");
    return 2;
}
