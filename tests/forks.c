/*
 * forks.c - the malloc family around fork(), errno and allocation
 * failure, for tests/test_forks.sh, which runs it with and without
 * libumem.so (LD_PRELOAD).  One mode per run; each prints "ok - NAME" or
 * "not ok - NAME" lines, and a hang is the script's to catch (timeout).
 *
 *   forks stdio FILE   fork() in 4 threads, for 2 s, while 8 threads read
 *                      FILE (one long line) with getline() and one calls
 *                      fflush(NULL): fork() takes the C library's list of
 *                      streams after the allocator's fork handlers, while
 *                      a thread in fflush(NULL) holds it and waits for a
 *                      stream whose reader, inside getline(), reallocs.
 *   forks signal       fork() from a signal handler that interrupts malloc
 *                      and free, in a process with one thread; the signals
 *                      come from another process.
 *   forks errno        free() and realloc() leave errno alone: free of NULL,
 *                      of a block with a mapping of its own, of the blocks
 *                      whose free empties the heap (a purge), a realloc
 *                      that shrinks and one that grows; run again with
 *                      FAULT=unmap-fails (tests/faults.so), where every
 *                      munmap, madvise and mremap fails.
 *   forks oom          every function of the family, in 4 threads and the
 *                      main thread, allocates under RLIMIT_AS until it
 *                      fails: NULL (or posix_memalign's ENOMEM) with errno
 *                      ENOMEM, every block returned writable and aligned;
 *                      then all is freed, and the threads end.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- stdio ---- */

enum { FORKERS = 4, READERS = 8, STDIO_SECONDS = 2 };
static const char *line_file;
static atomic_int readers_stop, forks_failed, forks_done;

static void *forker(void *arg)
{
    (void)arg;
    while (!atomic_load(&readers_stop)) {
        pid_t pid = check_fork();
        if (pid == 0) {
            char *p = malloc(100); /* the child allocates at once */
            free(p);
            _exit(p ? 17 : 1);
        }
        int status = 0;
        if (pid < 0 || check_wait(pid, &status) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 17)
            atomic_fetch_add(&forks_failed, 1);
        atomic_fetch_add(&forks_done, 1);
    }
    return NULL;
}

static void *reader(void *arg)
{
    FILE *f = fopen(line_file, "r");
    if (!f) {
        atomic_fetch_add(&forks_failed, 1);
        return arg;
    }
    while (!atomic_load(&readers_stop)) {
        rewind(f);
        char *line = NULL;
        size_t room = 0;
        if (getline(&line, &room, f) < 0)
            atomic_fetch_add(&forks_failed, 1);
        free(line);
    }
    fclose(f);
    return NULL;
}

static void *flusher(void *arg)
{
    while (!atomic_load(&readers_stop))
        if (fflush(NULL) != 0)
            atomic_fetch_add(&forks_failed, 1);
    return arg;
}

static void fork_while_streams_are_locked(void)
{
    pthread_t forkers[FORKERS], others[READERS + 1];
    for (int i = 0; i < READERS; i++)
        CHECK(pthread_create(&others[i], NULL, reader, NULL) == 0);
    CHECK(pthread_create(&others[READERS], NULL, flusher, NULL) == 0);
    for (int i = 0; i < FORKERS; i++)
        CHECK(pthread_create(&forkers[i], NULL, forker, NULL) == 0);
    /* The length of the run, not a wait for anything: a deadlock keeps
     * the joins below from returning, and the script's limit ends it. */
    sleep(STDIO_SECONDS);
    atomic_store(&readers_stop, 1);
    for (int i = 0; i < FORKERS; i++)
        pthread_join(forkers[i], NULL);
    for (int i = 0; i <= READERS; i++)
        pthread_join(others[i], NULL);
    CHECK(atomic_load(&forks_failed) == 0);
    fprintf(stderr, "  %d forks\n", atomic_load(&forks_done));
}

/* ---- signal ---- */

enum { SLOTS = 1009, HANDLER_FORKS = 300 };
static volatile sig_atomic_t handler_forks, handler_failures;

static void fork_in_handler(int sig)
{
    (void)sig;
    int saved = errno, status = 0;
    pid_t pid = check_fork(), r;
    if (pid == 0)
        _exit(0);
    r = check_wait(pid, &status);
    if (pid < 0 || r != pid || status != 0)
        handler_failures++;
    handler_forks++;
    errno = saved;
}

static void fork_from_signal_handler(void)
{
    static void *slots[SLOTS];
    struct sigaction sa = {0};
    sa.sa_handler = fork_in_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    /* Blocked until the sender exists: a signal inside that fork(),
     * between its handlers, would make the handler's fork() wait for the
     * C library's own fork lock once the process has had threads. */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    pid_t me = getpid(), sender = check_fork();
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    if (sender == 0) {
        while (getppid() == me) { /* until the test ends, or dies */
            kill(me, SIGUSR1);
            sched_yield();
        }
        _exit(0);
    }
    CHECK(sender > 0);
    unsigned seed = 1;
    while (sender > 0 && handler_forks < HANDLER_FORKS) {
        int k = rand_r(&seed) % SLOTS;
        free(slots[k]);
        slots[k] = malloc((size_t)(rand_r(&seed) % 70000));
        if (!slots[k]) {
            CHECK(slots[k] != NULL);
            break;
        }
    }
    signal(SIGUSR1, SIG_IGN);
    if (sender > 0) {
        kill(sender, SIGKILL);
        check_wait(sender, NULL);
    }
    for (int k = 0; k < SLOTS; k++)
        free(slots[k]);
    CHECK(handler_failures == 0);
}

/* ---- errno ---- */

/* Not inlined, so that the compiler cannot assume what free does to it. */
__attribute__((noinline, weak)) int errno_now(void)
{
    return errno;
}

static void errno_kept_by_free_and_realloc(void)
{
    errno = 1789;
    free(NULL);
    CHECK(errno_now() == 1789);
    char *huge = malloc((size_t)100 << 20); /* a mapping of its own */
    char *big = malloc((size_t)32 << 20);
    void *small[64];
    for (int i = 0; i < 64; i++)
        small[i] = malloc(200000);
    CHECK(huge && big);
    if (!huge || !big)
        return;
    memset(big, 7, (size_t)32 << 20);
    errno = 1789;
    big = realloc(big, (size_t)10 << 20); /* shrinks: mremap, or a move */
    CHECK(big != NULL && errno_now() == 1789);
    big = realloc(big, (size_t)40 << 20); /* grows */
    CHECK(big != NULL && errno_now() == 1789);
    CHECK(big && big[0] == 7 && big[(10 << 20) - 1] == 7);
    free(huge);
    CHECK(errno_now() == 1789);
    free(big);
    CHECK(errno_now() == 1789);
    for (int i = 0; i < 64; i++) {
        free(small[i]); /* the heap empties: pages go back */
        CHECK(errno_now() == 1789);
    }
    errno = 1789;
    void *p = malloc(100);
    CHECK(realloc(p, SIZE_MAX / 2) == NULL && errno_now() == ENOMEM);
    free(p);
}

/* ---- oom ---- */

enum { FN_MALLOC, FN_REALLOC, FN_CALLOC, FN_MEMALIGN, FN_POSIX_MEMALIGN, FN_ALIGNED_ALLOC,
       FN_VALLOC, FN_PVALLOC, FNS };
static const char *const fn_names[FNS] = {"malloc",         "realloc",       "calloc",
                                          "memalign",       "posix_memalign", "aligned_alloc",
                                          "valloc",         "pvalloc"};
static int oom_fn;
static size_t oom_size, oom_align, page;
static pthread_barrier_t oom_start, oom_end;
static atomic_int oom_errors;

/* One block of the function under test, or NULL after checking how it
 * failed; a block must be aligned and writable. */
static void *allocate_one(void)
{
    void *p = NULL;
    size_t align = _Alignof(max_align_t);
    errno = 0;
    switch (oom_fn) {
    case FN_MALLOC: p = malloc(oom_size); break;
    case FN_REALLOC: {
        void *q = realloc(NULL, 16);
        p = q ? realloc(q, oom_size) : NULL;
        if (q && !p)
            free(q);
        break;
    }
    case FN_CALLOC: p = calloc(1, oom_size); break;
    case FN_MEMALIGN: p = memalign(align = oom_align, oom_size); break;
    case FN_POSIX_MEMALIGN: {
        int r = posix_memalign(&p, align = oom_align, oom_size);
        if (r != 0 && (r != ENOMEM || errno != ENOMEM))
            atomic_fetch_add(&oom_errors, 1);
        if (r != 0)
            return NULL;
        break;
    }
    case FN_ALIGNED_ALLOC: p = aligned_alloc(align = oom_align, oom_size); break;
    case FN_VALLOC: p = valloc(oom_size); align = page; break;
    case FN_PVALLOC: p = pvalloc(oom_size); align = page; break;
    }
    if (!p && errno != ENOMEM)
        atomic_fetch_add(&oom_errors, 1);
    if (p && ((uintptr_t)p % align != 0 || (oom_fn == FN_CALLOC && ((char *)p)[oom_size - 1])))
        atomic_fetch_add(&oom_errors, 1);
    if (p)
        memset(p, 0x5A, oom_size);
    return p;
}

static void *allocate_until_failure(void *arg)
{
    pthread_barrier_wait(&oom_start);
    void *head = NULL, *p;
    unsigned long count = 0;
    while ((p = allocate_one()) != NULL) {
        *(void **)p = head;
        head = p;
        count++;
    }
    pthread_barrier_wait(&oom_end);
    while (head) {
        p = *(void **)head;
        free(head);
        head = p;
    }
    if (count == 0)
        atomic_fetch_add(&oom_errors, 1); /* the limit leaves room for some */
    return arg;
}

/* In a child, so that each function starts with the memory free. */
static int fails_under_limit(int fn, size_t size, size_t align)
{
    pid_t pid = check_fork();
    if (pid == 0) {
        oom_fn = fn, oom_size = size, oom_align = align;
        enum { THREADS = 4 };
        pthread_attr_t small;
        pthread_attr_init(&small);
        pthread_attr_setstacksize(&small, 256 << 10);
        pthread_barrier_init(&oom_start, NULL, THREADS + 1);
        pthread_barrier_init(&oom_end, NULL, THREADS + 1);
        pthread_t tid[THREADS];
        for (int i = 0; i < THREADS; i++)
            if (pthread_create(&tid[i], &small, allocate_until_failure, NULL) != 0)
                _exit(3);
        allocate_until_failure(NULL);
        for (int i = 0; i < THREADS; i++)
            pthread_join(tid[i], NULL);
        _exit(atomic_load(&oom_errors) ? 4 : 0);
    }
    int status = 0;
    if (pid < 0 || check_wait(pid, &status) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
        fprintf(stderr, "  %s of %zu bytes (alignment %zu) under RLIMIT_AS: status %#x\n",
                fn_names[fn], size, align, (unsigned)status);
        return 0;
    }
    return 1;
}

static void allocations_fail_cleanly_in_threads(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_AS, &rl) == 0);
    rl.rlim_cur = (rlim_t)300 << 20;
    CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
    const size_t sizes[] = {144, page, 512, page, 17 * page};
    const size_t aligns[] = {0, 0, 128, 128, 128};
    for (int i = 0; i < 5; i++)
        for (int fn = 0; fn < FNS; fn++) {
            int aligned = fn == FN_MEMALIGN || fn == FN_POSIX_MEMALIGN || fn == FN_ALIGNED_ALLOC;
            if (aligned != (aligns[i] != 0))
                continue;
            CHECK(fails_under_limit(fn, sizes[i], aligns[i]));
        }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "stdio") == 0 && argc > 2) {
        line_file = argv[2];
        RUN(fork_while_streams_are_locked);
    } else if (strcmp(mode, "signal") == 0) {
        RUN(fork_from_signal_handler);
    } else if (strcmp(mode, "errno") == 0) {
        RUN(errno_kept_by_free_and_realloc);
    } else if (strcmp(mode, "oom") == 0) {
        RUN(allocations_fail_cleanly_in_threads);
    } else {
        fprintf(stderr, "usage: forks stdio FILE | signal | errno | oom\n");
        return 2;
    }
    return CHECK_EXIT_STATUS();
}
