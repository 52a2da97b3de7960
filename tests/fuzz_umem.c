/*
 * fuzz_umem.c - drives umem.h with operation sequences read from the
 * input, checked against a model of the live blocks and umem_check.
 *
 *   clang -fsanitize=fuzzer,address,undefined tests/fuzz_umem.c   libFuzzer
 *   cc -DFUZZ_STANDALONE tests/fuzz_umem.c                        replays
 *
 * The standalone build replays every file under tests/fuzz-corpus (the
 * corpus the fuzzer grew, and every input that ever crashed it), in the
 * order of their names, and ends with one "ok" line: make test runs it as
 * a regression test.  An input that fails names its file: a failed check
 * says "fuzz_umem: FILE: what failed", and a crash, an abort or a hang
 * prints "not ok - fuzz corpus input FILE" and the signal.
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

/* One input's run: its heap, the heap's flags and size, and the model of
 * the live blocks. */
struct run {
    umem_t *h;
    unsigned flags;
    size_t span;
    struct slot slot[SLOTS];
    uint64_t live;
};

/* The input being replayed, in the standalone build; NULL under libFuzzer,
 * which names a failing input itself. */
static const char *volatile replaying;

static void fail(const char *what)
{
    if (replaying)
        fprintf(stderr, "fuzz_umem: %s: %s\n", replaying, what);
    else
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

/* The heap of byte 0: its flags (every combination umem_create accepts)
 * and its size. */
static void run_start(struct run *r, uint8_t first)
{
    static const unsigned flags[] = {0,
                                     UMEM_SHARED,
                                     UMEM_NOLOCK,
                                     UMEM_GROW,
                                     UMEM_GROW | UMEM_NOLOCK,
                                     UMEM_CACHED,
                                     UMEM_CACHED | UMEM_GROW,
                                     0};
    size_t heap_bytes = (size_t)4096 << (first >> 3 & 7); /* 4 KiB .. 512 KiB */
    r->flags = flags[first & 7];
    r->h = umem_create(heap_bytes, r->flags);
    if (!r->h)
        fail("umem_create failed");
    umem_stats_t st;
    umem_get_stats(r->h, &st);
    r->span = st.heap_bytes;
}

static void op_realloc(struct run *r, struct slot *s, unsigned b)
{
    verify(s);
    size_t n = (size_t)b * 13 + 1;
    unsigned char *q = umem_realloc(r->h, s->p, n);
    if (!q)
        return; /* the old block stays, intact */
    s->p = q;
    if (n < s->len)
        s->len = n;
    verify(s);
    s->len = n;
    fill(s);
    if (umem_usable_size(r->h, q) < n)
        fail("realloc gave less than asked");
}

static void op_free(struct run *r, struct slot *s)
{
    verify(s);
    umem_free(r->h, s->p);
    s->p = NULL;
    r->live--;
}

/* Mostly small sizes, some large, some past what can fit; opcode 5 is an
 * aligned allocation.  The tag is the operation's offset in the input. */
static void op_alloc(struct run *r, struct slot *s, unsigned op, unsigned b, size_t at)
{
    size_t n = op < 4   ? (size_t)b + 1
               : op < 6 ? ((size_t)b << 6) + (size_t)op
                        : r->span - (size_t)b * 16;
    size_t align = op == 5 ? (size_t)32 << (b & 7) : 16;
    s->p = align > 16 ? umem_memalign(r->h, align, n) : umem_alloc(r->h, n);
    if (!s->p)
        return;
    if ((uintptr_t)s->p % align != 0)
        fail("misaligned block");
    if (umem_usable_size(r->h, s->p) < n)
        fail("a block smaller than asked");
    s->len = n;
    s->tag = (unsigned char)at;
    fill(s);
    r->live++;
}

/* The operation of the 3 bytes at data[at]: an opcode, a slot and a size
 * byte.  Opcode 7 is umem_check; an occupied slot is reallocated (opcode
 * 6) or freed, an empty one gets an allocation. */
static void run_op(struct run *r, const uint8_t *data, size_t at)
{
    struct slot *s = &r->slot[data[at + 1] % SLOTS];
    unsigned op = data[at] % 8, b = data[at + 2];
    if (op == 7) {
        if (umem_check(r->h) != 0)
            fail("umem_check failed");
    } else if (s->p && op == 6) {
        op_realloc(r, s, b);
    } else if (s->p) {
        op_free(r, s);
    } else {
        op_alloc(r, s, op, b, at);
    }
}

/* After the last operation: the counts agree with the model, every block
 * goes back, and the heap coalesces into one block again. */
static void run_finish(struct run *r)
{
    umem_stats_t st;
    if (umem_check(r->h) != 0)
        fail("umem_check failed at the end");
    umem_get_stats(r->h, &st);
    if (st.allocs - st.frees != r->live)
        fail("allocs - frees differs from the live blocks");
    for (int k = 0; k < SLOTS; k++)
        if (r->slot[k].p) {
            verify(&r->slot[k]);
            umem_free(r->h, r->slot[k].p);
        }
    umem_get_stats(r->h, &st);
    if (st.bytes_in_use != 0)
        fail("bytes in use after every block was freed");
    /* Blocks in this thread's cache stay in use to the heap. */
    if (!(r->flags & UMEM_CACHED)) {
        void *all = umem_alloc(r->h, r->span - 16);
        if (!all)
            fail("the heap did not coalesce back into one block");
        umem_free(r->h, all);
    }
    if (umem_check(r->h) != 0)
        fail("umem_check failed after the last free");
    umem_destroy(r->h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct run r = {0};
    run_start(&r, data[0]);
    for (size_t i = 1; i + 3 <= size; i += 3)
        run_op(&r, data, i);
    run_finish(&r);
    return 0;
}

#ifdef FUZZ_STANDALONE
/* What a signal that ends the replay says about the input. */
static const char *death_text(int sig)
{
    switch (sig) {
    case SIGALRM:
        return ": no result in 600 s, a hang?\n";
    case SIGABRT:
        return ": aborted\n";
    case SIGSEGV:
        return ": SIGSEGV\n";
    case SIGBUS:
        return ": SIGBUS\n";
    case SIGFPE:
        return ": SIGFPE\n";
    default:
        return ": SIGILL\n";
    }
}

/* A signal that ends the replay: the input being replayed is named on
 * stdout, as a "not ok" line, before the signal takes its course. */
static void replay_died(int sig)
{
    static const char head[] = "not ok - fuzz corpus input ", none[] = "(none)";
    const char *file = replaying, *what = death_text(sig);
    ssize_t w = write(1, head, sizeof head - 1);
    w = file ? write(1, file, strlen(file)) : write(1, none, sizeof none - 1);
    w = write(1, what, strlen(what));
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* replay_died for every signal that ends a failing input, on a stack of
 * its own (a stack overflow is one of them); the whole replay is given
 * 600 s. */
static void catch_deaths(void)
{
    static char alt[1 << 16];
    stack_t ss = {.ss_sp = alt, .ss_size = sizeof alt};
    sigaltstack(&ss, NULL);
    static const int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa = {0};
        sa.sa_handler = replay_died;
        sa.sa_flags = SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
    alarm(600);
}

static int visible(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

int main(void)
{
    const char *dir = "tests/fuzz-corpus";
    struct dirent **names;
    int count = scandir(dir, &names, visible, alphasort);
    if (count < 0) {
        printf("not ok - fuzz corpus %s: %s\n", dir, strerror(errno));
        return 1;
    }
    catch_deaths();
    int files = 0;
    for (int k = 0; k < count; k++) {
        static char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[k]->d_name);
        free(names[k]);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        replaying = path;
        LLVMFuzzerTestOneInput(buf, n); /* aborts on a failure */
        replaying = NULL;
        files++;
    }
    free(names);
    printf("%s - fuzz corpus replayed (%d inputs)\n", files > 0 ? "ok" : "not ok", files);
    return files > 0 ? 0 : 1;
}
#endif
