/*
 * fuzz_umem.c - drives umem.h with operation sequences read from the
 * input, checked against a model of the live blocks and umem_check.
 *
 *   clang -fsanitize=fuzzer,address,undefined tests/fuzz_umem.c   libFuzzer
 *   cc -DFUZZ_STANDALONE tests/fuzz_umem.c                        replays
 *
 * The standalone build replays every file under tests/fuzz-corpus (the
 * corpus the fuzzer grew, and every input that ever crashed it), one "ok"
 * line each: make test runs it as a regression test.
 *
 * Input: byte 0 picks the flags (every combination umem_create accepts)
 * and the heap size, then 3 bytes per operation: an opcode, a slot and a
 * size byte.  An occupied slot is freed or reallocated; an empty one gets
 * an allocation, aligned or not; every live block's usable size is at
 * least what was asked.
 */
#include "../umem.h"

#include <dirent.h>

enum { SLOTS = 32 };

struct slot {
    unsigned char *p;
    size_t len;
    unsigned char tag;
};

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_umem: %s\n", what);
    abort();
}

static void fill(struct slot *s)
{
    for (size_t i = 0; i < s->len; i++)
        s->p[i] = (unsigned char)(s->tag + i);
}

static void verify(const struct slot *s)
{
    for (size_t i = 0; i < s->len; i++)
        if (s->p[i] != (unsigned char)(s->tag + i))
            fail("a live block's contents changed");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const unsigned flags[] = {0,
                                     UMEM_SHARED,
                                     UMEM_NOLOCK,
                                     UMEM_GROW,
                                     UMEM_GROW | UMEM_NOLOCK,
                                     UMEM_CACHED,
                                     UMEM_CACHED | UMEM_GROW,
                                     0};
    size_t heap_bytes = (size_t)4096 << (data[0] >> 3 & 7); /* 4 KiB .. 512 KiB */
    unsigned f = flags[data[0] & 7];
    umem_t *h = umem_create(heap_bytes, f);
    if (!h)
        fail("umem_create failed");
    umem_stats_t st;
    umem_get_stats(h, &st);
    size_t span = st.heap_bytes;

    struct slot slot[SLOTS] = {{0}};
    uint64_t live = 0;
    for (size_t i = 1; i + 3 <= size; i += 3) {
        struct slot *s = &slot[data[i + 1] % SLOTS];
        unsigned op = data[i] % 8, b = data[i + 2];
        if (op == 7) {
            if (umem_check(h) != 0)
                fail("umem_check failed");
            continue;
        }
        if (s->p && op == 6) {
            verify(s);
            size_t n = (size_t)b * 13 + 1;
            unsigned char *q = umem_realloc(h, s->p, n);
            if (!q)
                continue; /* the old block stays, intact */
            s->p = q;
            if (n < s->len)
                s->len = n;
            verify(s);
            s->len = n;
            fill(s);
            if (umem_usable_size(h, q) < n)
                fail("realloc gave less than asked");
            continue;
        }
        if (s->p) {
            verify(s);
            umem_free(h, s->p);
            s->p = NULL;
            live--;
            continue;
        }
        /* Mostly small sizes, some large, some past what can fit. */
        size_t n = op < 4   ? (size_t)b + 1
                   : op < 6 ? ((size_t)b << 6) + (size_t)op
                            : span - (size_t)b * 16;
        size_t align = op == 5 ? (size_t)32 << (b & 7) : 16;
        s->p = align > 16 ? umem_memalign(h, align, n) : umem_alloc(h, n);
        if (!s->p)
            continue;
        if ((uintptr_t)s->p % align != 0)
            fail("misaligned block");
        if (umem_usable_size(h, s->p) < n)
            fail("a block smaller than asked");
        s->len = n;
        s->tag = (unsigned char)i;
        fill(s);
        live++;
    }
    if (umem_check(h) != 0)
        fail("umem_check failed at the end");
    umem_get_stats(h, &st);
    if (st.allocs - st.frees != live)
        fail("allocs - frees differs from the live blocks");
    for (int k = 0; k < SLOTS; k++)
        if (slot[k].p) {
            verify(&slot[k]);
            umem_free(h, slot[k].p);
        }
    umem_get_stats(h, &st);
    if (st.bytes_in_use != 0)
        fail("bytes in use after every block was freed");
    /* Blocks in this thread's cache stay in use to the heap. */
    if (!(f & UMEM_CACHED)) {
        void *all = umem_alloc(h, span - 16);
        if (!all)
            fail("the heap did not coalesce back into one block");
        umem_free(h, all);
    }
    if (umem_check(h) != 0)
        fail("umem_check failed after the last free");
    umem_destroy(h);
    return 0;
}

#ifdef FUZZ_STANDALONE
int main(void)
{
    const char *dir = "tests/fuzz-corpus";
    DIR *d = opendir(dir);
    if (!d) {
        printf("not ok - fuzz corpus %s: %s\n", dir, strerror(errno));
        return 1;
    }
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n); /* aborts on a failure */
        files++;
    }
    closedir(d);
    printf("%s - fuzz corpus replayed (%d inputs)\n", files > 0 ? "ok" : "not ok", files);
    return files > 0 ? 0 : 1;
}
#endif
