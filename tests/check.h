/*
 * check.h - the smallest test harness that does the job.
 *
 * A test is a function; RUN(fn) runs it, under a time limit, and prints
 * "ok - fn" or "not ok - fn" (the format tests/run.sh counts).  CHECK(cond)
 * records a failed condition with its line without stopping the test;
 * CHECK_EQ(a, b), CHECK_NE, CHECK_LT, CHECK_LE, CHECK_GT and CHECK_GE
 * compare two integers or two pointers, each side evaluated once, and a
 * failure prints both expressions and both values:
 *
 *     tests/test_umem.c:123: CHECK failed: st.allocs == allocs (41 vs 40) [flags 0x9]
 *
 * The part in brackets is the test's context, set by check_where("flags
 * %#x", flags) (printf's format) to say what the test is doing: a heap's
 * flags, an operation and its number.  Every failure prints it, plain
 * CHECKs included, until the next check_where, check_where_clear or RUN.
 *
 * A program that runs the same tests again under other conditions
 * defines CHECK_PREFIX, a string literal, before it includes this file:
 * its lines then read "ok - PREFIXfn", so that the names stay unique
 * across programs.
 *
 * A test that forks makes its children with check_fork and reaps them
 * with check_wait: when the test's time runs out, the children it still
 * waits for are killed with it, so that a hung child is never left behind.
 * A program whose children each do little defines CHECK_CHILD_SECONDS
 * before it includes this file: each child then has that time limit of
 * its own (CHECK_CHILD_LIMIT in the environment overrides it, for
 * valgrind's pace), and a child that hangs (on a lock its heap never let
 * go, say) prints one line naming its test and exits with status 124,
 * so that its test fails within that time instead of at its own limit.
 * Each child leads a process group of its own: a child that blocks every
 * signal, or leaves a child of its own behind, is killed with its group
 * by check_wait, CHECK_GRACE seconds after its own limit, or by the
 * test's time-out, and the line that says so names the test.
 */
#ifndef CHECK_H
#define CHECK_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CHECK_PREFIX
#define CHECK_PREFIX ""
#endif

static int check_failures; /* failed CHECKs in the running test */
static int check_failed_tests;

/* ---- the context a failure is reported in ---- */

static char check_context[256];

static inline void check_where(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static inline void check_where(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(check_context, sizeof check_context, fmt, ap);
    va_end(ap);
}

static inline void check_where_clear(void)
{
    check_context[0] = '\0';
}

/* One failure: where, what, the values compared (empty for a plain
 * CHECK) and the context. */
static inline void check_failed(const char *file, int line, const char *what,
                                const char *values)
{
    if (check_context[0])
        fprintf(stderr, "%s:%d: CHECK failed: %s%s [%s]\n", file, line, what, values,
                check_context);
    else
        fprintf(stderr, "%s:%d: CHECK failed: %s%s\n", file, line, what, values);
    check_failures++;
}

#define CHECK(cond)                                      \
    do {                                                 \
        if (!(cond))                                     \
            check_failed(__FILE__, __LINE__, #cond, ""); \
    } while (0)

/* ---- comparisons ----
 * Each side becomes a check_value: a signed or an unsigned integer, or a
 * pointer, chosen by its type.  The comparison is of the numbers the two
 * sides hold (a negative value is below every unsigned one), and pointers
 * compare by address. */

struct check_value {
    enum { CHECK_SIGNED, CHECK_UNSIGNED, CHECK_POINTER } kind;
    long long s;          /* CHECK_SIGNED */
    unsigned long long u; /* CHECK_UNSIGNED, and a pointer's address */
};

static inline struct check_value check_signed(long long v)
{
    return (struct check_value){.kind = CHECK_SIGNED, .s = v};
}

static inline struct check_value check_unsigned(unsigned long long v)
{
    return (struct check_value){.kind = CHECK_UNSIGNED, .u = v};
}

static inline struct check_value check_pointer(const volatile void *p)
{
    return (struct check_value){.kind = CHECK_POINTER, .u = (uintptr_t)p};
}

/* Only the function is chosen by type, then called: a pointer never
 * reaches an integer's function, nor an integer a pointer's. */
#define CHECK_VALUE(x)                      \
    _Generic((x),                           \
        _Bool: check_unsigned,              \
        char: check_signed,                 \
        signed char: check_signed,          \
        short: check_signed,                \
        int: check_signed,                  \
        long: check_signed,                 \
        long long: check_signed,            \
        unsigned char: check_unsigned,      \
        unsigned short: check_unsigned,     \
        unsigned int: check_unsigned,       \
        unsigned long: check_unsigned,      \
        unsigned long long: check_unsigned, \
        default: check_pointer)(x)

enum check_op {
    CHECK_OP_EQ,
    CHECK_OP_NE,
    CHECK_OP_LT,
    CHECK_OP_LE,
    CHECK_OP_GT,
    CHECK_OP_GE
};

/* -1, 0 or 1 as a is below, equal to or above b. */
static inline int check_order(struct check_value a, struct check_value b)
{
    int a_negative = a.kind == CHECK_SIGNED && a.s < 0;
    int b_negative = b.kind == CHECK_SIGNED && b.s < 0;
    if (a_negative != b_negative)
        return a_negative ? -1 : 1;
    if (a_negative)
        return a.s < b.s ? -1 : a.s > b.s;
    unsigned long long x = a.kind == CHECK_SIGNED ? (unsigned long long)a.s : a.u;
    unsigned long long y = b.kind == CHECK_SIGNED ? (unsigned long long)b.s : b.u;
    return x < y ? -1 : x > y;
}

static inline int check_value_text(char *to, size_t size, struct check_value v)
{
    if (v.kind == CHECK_SIGNED)
        return snprintf(to, size, "%lld", v.s);
    if (v.kind == CHECK_UNSIGNED)
        return snprintf(to, size, "%llu", v.u);
    return snprintf(to, size, "%p", (void *)(uintptr_t)v.u);
}

/* Whether `a op b` holds; a failure prints both sides and their values. */
static inline int check_compare(const char *file, int line, const char *a_text,
                                const char *b_text, enum check_op op,
                                struct check_value a, struct check_value b)
{
    static const char *const op_text[] = {"==", "!=", "<", "<=", ">", ">="};
    int order = check_order(a, b);
    int holds = op == CHECK_OP_EQ   ? order == 0
                : op == CHECK_OP_NE ? order != 0
                : op == CHECK_OP_LT ? order < 0
                : op == CHECK_OP_LE ? order <= 0
                : op == CHECK_OP_GT ? order > 0
                                    : order >= 0;
    if (holds)
        return 1;
    char what[512], a_value[64], b_value[64], values[160];
    snprintf(what, sizeof what, "%s %s %s", a_text, op_text[op], b_text);
    check_value_text(a_value, sizeof a_value, a);
    check_value_text(b_value, sizeof b_value, b);
    snprintf(values, sizeof values, " (%s vs %s)", a_value, b_value);
    check_failed(file, line, what, values);
    return 0;
}

#define CHECK_CMP_(a, op, b) \
    check_compare(__FILE__, __LINE__, #a, #b, op, CHECK_VALUE(a), CHECK_VALUE(b))
#define CHECK_EQ(a, b) CHECK_CMP_(a, CHECK_OP_EQ, b)
#define CHECK_NE(a, b) CHECK_CMP_(a, CHECK_OP_NE, b)
#define CHECK_LT(a, b) CHECK_CMP_(a, CHECK_OP_LT, b)
#define CHECK_LE(a, b) CHECK_CMP_(a, CHECK_OP_LE, b)
#define CHECK_GT(a, b) CHECK_CMP_(a, CHECK_OP_GT, b)
#define CHECK_GE(a, b) CHECK_CMP_(a, CHECK_OP_GE, b)

/* fn(arg) run with stderr sent to a file: its result, and the first line
 * it printed (or "") in `line`. */
static inline int check_stderr_of(int (*fn)(void *), void *arg, char *line, size_t size)
{
    FILE *tmp = tmpfile();
    int saved = dup(2);
    line[0] = '\0';
    if (!tmp || saved < 0) {
        if (tmp)
            fclose(tmp);
        if (saved >= 0)
            close(saved);
        return fn(arg);
    }
    fflush(stderr);
    dup2(fileno(tmp), 2);
    int r = fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    if (!fgets(line, (int)size, tmp))
        line[0] = '\0';
    fclose(tmp);
    return r;
}

/* fn(arg) fails (-1), and the first line it prints on stderr holds
 * `what`; else both are recorded as failures, with what it printed. */
#define CHECK_FAILS_SAYING(fn, arg, what)                                        \
    do {                                                                         \
        char check_line_[256];                                                   \
        CHECK_EQ(check_stderr_of(fn, arg, check_line_, sizeof check_line_), -1); \
        if (!strstr(check_line_, what))                                          \
            fprintf(stderr, "it said: %s\n",                                     \
                    check_line_[0] ? check_line_ : "(nothing)");                 \
        CHECK(strstr(check_line_, what) != NULL);                                \
    } while (0)

/* ---- children, and the time limit ---- */

/* The children the running test has made and not yet reaped. */
enum { CHECK_CHILDREN = 64 };
static _Atomic pid_t check_children[CHECK_CHILDREN];

/* Each child leads a process group of its own (check_fork), which its
 * own children join: killing the group ends them all, even a grandchild
 * that holds the test's output open or a child that blocks every signal. */
static inline void check_kill_children(void)
{
    for (int i = 0; i < CHECK_CHILDREN; i++) {
        pid_t pid = atomic_load(&check_children[i]);
        if (pid > 0) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
        }
    }
}

/* Each test has a time limit, CHECK_TIME_LIMIT seconds (600 by default,
 * for valgrind's pace): a test that hangs is a "not ok" line naming it,
 * its children are killed, and the run goes on to the next program
 * instead of hanging. */
static const char *volatile check_running;
static volatile pid_t check_runner; /* the process whose test is timed */

/* Writes head, name and tail to fd with write(2) alone (a signal handler
 * calls it). */
static void check_say(int fd, const char *head, const char *name, const char *tail)
{
    ssize_t w = write(fd, head, strlen(head));
    w = write(fd, name, strlen(name));
    w = write(fd, tail, strlen(tail));
    (void)w;
}

/* Interrupted (a ^C, a kill): the children go too, then the default. */
static void check_interrupted(int sig)
{
    check_kill_children();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void check_timed_out(int sig)
{
    (void)sig;
    check_kill_children();
    /* A test's child says so on its stderr (which a death test reads) and
     * ends with a status its test sees fail; the test itself is a "not ok"
     * line. */
    int child = getpid() != check_runner;
    const char *name = check_running ? check_running : "?";
    check_say(child ? 2 : 1, child ? "check: a child of " : "not ok - ", name,
              child ? " got no result within its time limit (a hang?)\n"
                    : " (no result within its time limit: a hang?)\n");
    _exit(child ? 124 : 1);
}

static inline unsigned check_time_limit(void)
{
    const char *v = getenv("CHECK_TIME_LIMIT");
    long s = v ? atol(v) : 0;
    return s > 0 ? (unsigned)s : 600u;
}

#ifdef CHECK_CHILD_SECONDS
static inline unsigned check_child_limit(void)
{
    const char *v = getenv("CHECK_CHILD_LIMIT");
    long s = v ? atol(v) : 0;
    return s > 0 ? (unsigned)s : (unsigned)(CHECK_CHILD_SECONDS);
}
#endif

/* fork(), the child remembered until check_wait reaps it.  SIGALRM waits
 * until it is remembered, so that a time-out cannot miss it; the child
 * starts with no children of its own to kill. */
static inline pid_t check_fork(void)
{
    sigset_t alrm, old;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    sigprocmask(SIG_BLOCK, &alrm, &old);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        for (int i = 0; i < CHECK_CHILDREN; i++)
            atomic_store(&check_children[i], 0);
#ifdef CHECK_CHILD_SECONDS
        alarm(check_child_limit());
#endif
    } else if (pid > 0) {
        setpgid(pid, pid); /* both sides, whichever runs first */
        for (int i = 0; i < CHECK_CHILDREN; i++) {
            pid_t none = 0;
            if (atomic_compare_exchange_strong(&check_children[i], &none, pid))
                break;
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return pid;
}

/* waitpid() for a child of check_fork, through interruptions; the child
 * is forgotten once reaped.  With CHECK_CHILD_SECONDS the wait itself is
 * the watchdog of last resort: a child that outlives its own alarm by
 * CHECK_GRACE seconds (it blocked SIGALRM, or waits on a child of its
 * own) is killed with its process group, and one line names the test. */
#ifndef CHECK_GRACE
#define CHECK_GRACE 10
#endif
static inline pid_t check_wait(pid_t pid, int *status)
{
    pid_t r;
#ifdef CHECK_CHILD_SECONDS
    struct timespec nap = {0, 20000}, now, until; /* 20 us, doubling to 5 ms */
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)check_child_limit() + CHECK_GRACE;
    while ((r = waitpid(pid, status, WNOHANG)) == 0 || (r < 0 && errno == EINTR)) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > until.tv_sec ||
            (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec)) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            check_say(2, "check: a child of ", check_running ? check_running : "?",
                      " outlived its time limit and was killed with its group (a hang?)\n");
            do
                r = waitpid(pid, status, 0);
            while (r < 0 && errno == EINTR);
            break;
        }
        nanosleep(&nap, NULL);
        nap.tv_nsec = nap.tv_nsec < 2500000 ? nap.tv_nsec * 2 : 5000000;
    }
#else
    do
        r = waitpid(pid, status, 0);
    while (r < 0 && errno == EINTR);
#endif
    if (r == pid)
        kill(-pid, SIGKILL); /* whatever it left in its group */
    for (int i = 0; i < CHECK_CHILDREN && pid > 0; i++) {
        pid_t mine = pid;
        atomic_compare_exchange_strong(&check_children[i], &mine, 0);
    }
    return r;
}

/* How a child ended, for a failure's report. */
static inline void check_describe_child(int status)
{
    if (WIFSIGNALED(status))
        fprintf(stderr, "  the child was killed by signal %d (%s)\n", WTERMSIG(status),
                strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status))
        fprintf(stderr, "  the child exited with status %d\n", WEXITSTATUS(status));
}

/* A child's wait status: it exited with status 0, or how it ended is
 * printed. */
#define CHECK_EXITED_0(status)            \
    do {                                  \
        if (!CHECK_EQ(status, 0))         \
            check_describe_child(status); \
    } while (0)

#define RUN(fn)                                                                  \
    do {                                                                         \
        check_failures = 0;                                                      \
        check_where_clear();                                                     \
        check_running = CHECK_PREFIX #fn;                                        \
        check_runner = getpid();                                                 \
        signal(SIGALRM, check_timed_out);                                        \
        signal(SIGINT, check_interrupted);                                       \
        signal(SIGTERM, check_interrupted);                                      \
        signal(SIGHUP, check_interrupted);                                       \
        alarm(check_time_limit());                                               \
        fn();                                                                    \
        alarm(0);                                                                \
        printf("%s - %s\n", check_failures ? "not ok" : "ok", CHECK_PREFIX #fn); \
        fflush(stdout);                                                          \
        check_failed_tests += check_failures != 0;                               \
    } while (0)

#define CHECK_EXIT_STATUS() (check_failed_tests ? 1 : 0)

/* ---- the process's memory ---- */

static inline size_t check_page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* The bytes the process holds resident (/proc/self/statm), 0 if unknown. */
static inline size_t check_resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * check_page_size();
}

/* xorshift64*: a fixed seed makes every randomized test reproducible. */
static inline unsigned long long check_rand(unsigned long long *state)
{
    unsigned long long x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif
