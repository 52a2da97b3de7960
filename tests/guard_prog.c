/*
 * guard_prog.c - a guarded heap (UMEM_GUARD) beside a program's own
 * fault handling, for tests/test_guard.sh:
 *
 *     tests/guard_prog chain     its own SIGSEGV handler, installed before
 *                                the heap, still sees its own faults; then
 *                                a use after free is reported
 *     tests/guard_prog chain-info  the same, the handler an SA_SIGINFO one
 *     tests/guard_prog after     the same, the handler installed after
 *     tests/guard_prog fork      a fork child's use after free is reported
 *                                in the child; the parent goes on
 *     tests/guard_prog zero      umem_alloc(h, 0) returns a pointer that
 *                                faults when read
 *     tests/guard_prog first-under  sampling, one slot: the first guarded
 *                                block of a page written before its start
 *     tests/guard_prog first-under-far  the same, 1 MiB before its start
 *     tests/guard_prog calls     every call on guarded heaps of each kind,
 *                                and four threads at once
 *     tests/guard_prog threads   the four threads alone (sampling: their
 *                                guarded blocks share the slots)
 *     tests/guard_prog sample M  M blocks allocated and freed; prints how
 *                                many were guarded (UMEM_GUARD=N: 1 in N)
 *     tests/guard_prog hold M    the same, but all M held until the count
 *                                is taken (a guarded one then fills a slot)
 *
 * Before a planted fault it prints "block P line N" as tests/debug_bugs
 * does.  Exit 0 when what should go on went on.
 */
#include "../umem.h"

#include <setjmp.h>
#include <sys/wait.h>

static sigjmp_buf back;
static volatile sig_atomic_t own_faults;
static volatile char sink;

static void own_handler(int sig)
{
    (void)sig;
    own_faults++;
    siglongjmp(back, 1);
}

static volatile void *own_fault_at; /* where the SA_SIGINFO handler saw it */

static void own_handler_info(int sig, siginfo_t *info, void *context)
{
    (void)context;
    own_fault_at = info->si_addr;
    own_handler(sig);
}

static int own_with_info; /* the handler installed is the SA_SIGINFO one */

static void own_handler_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (own_with_info) {
        sa.sa_sigaction = own_handler_info;
        sa.sa_flags = SA_SIGINFO;
    } else {
        sa.sa_handler = own_handler;
    }
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

/* A fault of the program's own, on a page it made no-access: its handler
 * sees it and the program goes on. */
static int own_fault(void)
{
    char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return 1;
    if (sigsetjmp(back, 1) == 0)
        sink = page[5];
    munmap(page, 4096);
    printf("own faults %d\n", (int)own_faults);
    fflush(stdout);
    if (own_with_info && own_fault_at != page + 5)
        return 1;
    return own_faults == 1 ? 0 : 1;
}

__attribute__((noinline)) void use_after_free(umem_t *h)
{
    char *p = umem_alloc(h, 64);
    memset(p, 1, 64);
    umem_free(h, p);
    printf("block %p line %d\n", (void *)p, __LINE__ + 2);
    fflush(stdout);
    p[7] = 2;
}

static int chain(int handler_first)
{
    if (handler_first)
        own_handler_install();
    umem_t *h = umem_create((size_t)1 << 20, UMEM_GUARD);
    if (!h)
        return 1;
    if (!handler_first)
        own_handler_install();
    if (own_fault() != 0)
        return 1;
    if (!handler_first) /* the program's handler took the place of umem's */
        return 0;
    use_after_free(h); /* umem's handler: reported, not passed on */
    return 0;
}

static int forked(void)
{
    umem_t *h = umem_create((size_t)1 << 20, UMEM_GUARD);
    if (!h)
        return 1;
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        return 1;
    if (child == 0) {
        use_after_free(h);
        _exit(0);
    }
    int status;
    if (waitpid(child, &status, 0) != child)
        return 1;
    printf("child %s %d\n", WIFSIGNALED(status) ? "signal" : "exit",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    char *p = umem_alloc(h, 10); /* the parent's heap still serves */
    umem_free(h, p);
    umem_destroy(h);
    return p ? 0 : 1;
}

static int zero(void)
{
    umem_t *h = umem_create((size_t)1 << 20, UMEM_GUARD);
    char *p = h ? umem_alloc(h, 0) : NULL;
    if (!p)
        return 1;
    printf("block %p line %d\n", (void *)p, __LINE__ + 2);
    fflush(stdout);
    sink = p[0];
    return 0;
}

/* Sampling (UMEM_GUARD=N): the first guarded block of a page, in slot 0
 * with one slot (UMEM_GUARD_SLOTS=1), written a byte before its start:
 * on the arena's first page, which is no block's. */
static int first_under(ptrdiff_t by)
{
    umem_t *h = umem_create((size_t)1 << 20, UMEM_GUARD | UMEM_GROW);
    for (int i = 0; h && i < 100000; i++) {
        umem_stats_t before, after;
        umem_get_stats(h, &before);
        char *p = umem_alloc(h, 4096);
        umem_get_stats(h, &after);
        if (!p || after.allocs != before.allocs) /* not guarded */
            continue;
        printf("block %p line %d\n", (void *)p, __LINE__ + 2);
        fflush(stdout);
        p[-by] = 1;
        return 0;
    }
    return 1;
}

static int sample(long count, int hold)
{
    umem_t *h = umem_create((size_t)1 << 20, UMEM_GUARD | UMEM_GROW);
    void **held = hold ? calloc((size_t)(count > 0 ? count : 1), sizeof *held) : NULL;
    if (!h || count <= 0 || (hold && !held))
        return 1;
    for (long i = 0; i < count; i++) {
        void *p = umem_alloc(h, 32);
        if (!p)
            return 1;
        if (hold)
            held[i] = p;
        else
            umem_free(h, p);
    }
    umem_stats_t st;
    umem_get_stats(h, &st);
    printf("guarded %llu\n", (unsigned long long)(count - (long)st.allocs));
    for (long i = 0; hold && i < count; i++)
        umem_free(h, held[i]);
    free(held);
    umem_destroy(h);
    return 0;
}

/* Each call on a heap that guards every block: sizes, alignment,
 * contents across realloc, memalign; 0 when all held. */
static int calls_on(unsigned flags)
{
    static const size_t sizes[] = {1, 7, 8, 24, 100, 4096, 5000, 70000};
    umem_t *h = umem_create((size_t)1 << 20, flags);
    int bad = !h;
    for (size_t i = 0; !bad && i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i], want = n % 8 == 0 ? (n % 16 == 0 ? 16 : 8) : n < 8 ? 1 : 8;
        unsigned char *p = umem_alloc(h, n);
        bad |= !p || (uintptr_t)p % want != 0 || umem_usable_size(h, p) != n;
        if (bad)
            break;
        memset(p, (int)i, n);
        unsigned char *q = umem_realloc(h, p, 2 * n);
        bad |= !q || q[0] != i || q[n - 1] != i || umem_usable_size(h, q) != 2 * n;
        memset(q, 1, 2 * n);
        umem_free(h, q);
        char *a = umem_memalign(h, 64, n);
        bad |= !a || (uintptr_t)a % 64 != 0;
        if (a)
            memset(a, 2, n);
        umem_free(h, a);
    }
    bad |= h && umem_check(h) != 0;
    umem_destroy(h);
    if (bad)
        printf("calls on flags %u: wrong\n", flags);
    return bad;
}

static void *churn(void *arg)
{
    umem_t *h = arg;
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(i % 300) + 1;
        char *p = umem_alloc(h, n);
        if (!p)
            return (void *)1;
        memset(p, 1, n);
        umem_free(h, p);
    }
    return NULL;
}

/* Four threads allocating and freeing at once on one guarded heap: 0
 * when all went well. */
static int threads(void)
{
    int bad = 0;
    umem_t *h = umem_create((size_t)1 << 20, UMEM_GUARD | UMEM_CACHED);
    pthread_t t[4];
    int made = 0;
    for (; h && made < 4 && pthread_create(&t[made], NULL, churn, h) == 0; made++)
        ;
    for (int i = 0; i < made; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= r != NULL;
    }
    bad |= !h || umem_check(h) != 0;
    umem_destroy(h);
    return bad;
}

/* The calls, on heaps of several kinds, then four threads at once. */
static int calls(void)
{
    static const unsigned kinds[] = {UMEM_GUARD, UMEM_GUARD | UMEM_CACHED | UMEM_GROW,
                                     UMEM_GUARD | UMEM_NOLOCK, UMEM_GUARD | UMEM_DEBUG};
    int bad = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        bad |= calls_on(kinds[k]);
    bad |= threads();
    puts(bad ? "calls wrong" : "calls right");
    return bad;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    own_with_info = strcmp(what, "chain-info") == 0;
    if (own_with_info)
        what = "chain";
    if (strcmp(what, "chain") == 0 || strcmp(what, "after") == 0)
        return chain(strcmp(what, "chain") == 0);
    if (strcmp(what, "fork") == 0)
        return forked();
    if (strcmp(what, "zero") == 0)
        return zero();
    if (strcmp(what, "calls") == 0)
        return calls();
    if (strcmp(what, "first-under") == 0)
        return first_under(1);
    if (strcmp(what, "first-under-far") == 0)
        return first_under((ptrdiff_t)1 << 20);
    if (strcmp(what, "threads") == 0) {
        int bad = threads();
        puts(bad ? "threads wrong" : "threads right");
        return bad;
    }
    if ((strcmp(what, "sample") == 0 || strcmp(what, "hold") == 0) && argc > 2)
        return sample(atol(argv[2]), strcmp(what, "hold") == 0);
    fprintf(stderr, "usage: guard_prog chain|after|fork|zero|first-under|first-under-far|calls|threads|sample|hold COUNT\n");
    return 2;
}
