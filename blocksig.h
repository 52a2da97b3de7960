/*
 * blocksig.h - what sharedhash and esharedhash share: the block signature,
 * the three run modes and the command line.  The two programs differ only
 * in where umalloc() and ufree() take memory from (their "policy").
 *
 * A program includes this header, then defines
 *
 *   static inline void *umalloc(size_t n);   the policy's allocation
 *   static inline void  ufree(void *p);      and free
 *   static const struct policy bs_policy = {...};   the hooks below
 *
 * and calls blocksig_main(argc, argv) from main().  The hooks, each
 * optional (NULL: nothing to do), are reader_begin (in the main thread,
 * after the heap exists and before any worker), worker_begin and
 * worker_end (in each worker, around its work) and reader_end (in the main
 * thread, after the workers); the begin hooks return 0, or -1 with errno
 * set.  The policy counts what it does in `bs_counts` (one per thread);
 * the run adds up every worker's counts for --stats.  Define
 * BLOCKSIG_POOLS before the include to accept --pool.
 *
 * THE SIGNATURE (README.md has the whole definition; samples/ the vectors)
 *   Input is cut into 1024-byte blocks.  Per block: byte histogram; one
 *   leaf per present byte value, pushed in value order on a binary
 *   min-heap; pop two, push their parent, until one node is left; hash =
 *   preorder walk, h = (h * 31 + freq + symbol) mod 2^31-1.  The result is
 *   the sum of block hashes mod 2^31-1.  Per block, the heap, its array
 *   and every tree node come from umalloc and go back through ufree: that
 *   allocation pattern is the point of the exercise, and stays.
 *
 * THE RUN MODES
 *   single  the main thread reads a chunk (CHUNK_BYTES) into a umalloc'd
 *           buffer, hashes it, frees it.
 *   -t, -m  N workers: threads for -t, processes for -m.  A regular file
 *           (and not -v) is read by the workers themselves (run_feed):
 *           each takes the next chunk number from a shared atomic
 *           counter, pread()s that chunk into a buffer of its own and
 *           adds its block hashes to its own sum; sums add in any order,
 *           so no worker waits for another and a faster one takes more.
 *           The reader sends each worker the file (TASK_FILE; a worker
 *           process gets the open file by SCM_RIGHTS) and waits for the
 *           sums.  Any other input, and every input under -v, is read by
 *           the main thread (the reader): it fills umalloc'd buffers and
 *           hands each to one worker (TASK_CHUNK); the worker hashes it,
 *           frees the buffer and writes the block hashes back.  The
 *           reader keeps at most bs_window chunks in flight and prints
 *           results in input order.  With -m the heap is a MAP_SHARED
 *           region made before fork(), so the buffers the reader
 *           allocates are freed by the child that hashes them.
 *   Tasks go out on a socket per worker and results come back on a pipe
 *   per worker, so a worker process that dies shows up at once as
 *   end-of-file on its result pipe, and a reader that dies shows up to
 *   its workers as end-of-file on their task sockets (a worker reading a
 *   file looks between chunks): no one is left waiting and no child
 *   outlives the run by more than a chunk.
 */
#ifndef BLOCKSIG_H
#define BLOCKSIG_H

#include "umem.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define SIG_PRIME        2147483647u
#define BLOCK_BYTES      1024u
#define CHUNK_BLOCKS     64u
#define CHUNK_BYTES      (BLOCK_BYTES * CHUNK_BLOCKS)
#define MAX_WORKERS      256u
#define MAX_WINDOW       64u /* chunks in flight at most, whatever -j says */
#define TASKS_PER_WORKER 2u
#define VERSION          "1.0.0"

/* Helgrind and DRD do not take a pipe or a socket for synchronization, so
 * in a build for them (-DBLOCKSIG_VALGRIND, with valgrind's headers) each
 * hand-off of memory through one, or through an atomic counter, is
 * declared to them. */
#ifdef BLOCKSIG_VALGRIND
#include <valgrind/helgrind.h>
#define HANDOFF_SEND(p)    ANNOTATE_HAPPENS_BEFORE(p)
#define HANDOFF_RECEIVE(p) ANNOTATE_HAPPENS_AFTER(p)
#else
#define HANDOFF_SEND(p)    ((void)(p))
#define HANDOFF_RECEIVE(p) ((void)(p))
#endif

/* ---- the per-block signature ------------------------------------------ */

struct hnode {
    uint32_t freq;
    uint32_t symbol;
    struct hnode *left, *right;
};

/* The heap's array holds each node's frequency beside its pointer, so
 * that sifting compares keys in the array instead of chasing pointers. */
struct heap_entry {
    uint32_t freq;
    struct hnode *node;
};

struct minheap {
    uint32_t size;
    struct heap_entry *item;
};

/* What each thread's policy did; summed over workers for --stats. */
struct alloc_counts {
    uint64_t umallocs, ufrees;
    uint64_t pool_hits, pool_fallbacks, pool_resets, remote_frees;
};

static __thread struct alloc_counts bs_counts;
static umem_t *bs_heap;

struct policy {
    int (*reader_begin)(void);
    int (*worker_begin)(void);
    void (*worker_end)(void);
    void (*reader_end)(void);
    int private_memory; /* memory not shared across fork(): no -m */
};

static inline void *umalloc(size_t n);
static inline void ufree(void *p);
static const struct policy bs_policy;

/* x mod 2^31-1 for x < 2^36, without a division. */
static inline uint32_t sig_mod(uint64_t x)
{
    x = (x & SIG_PRIME) + (x >> 31);
    return (uint32_t)(x >= SIG_PRIME ? x - SIG_PRIME : x);
}

/* Push: append, then sift up; a parent of equal frequency moves down. */
static inline void heap_push(struct minheap *h, struct hnode *n)
{
    struct heap_entry e = {n->freq, n};
    uint32_t i = h->size++;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (h->item[p].freq < e.freq)
            break;
        h->item[i] = h->item[p];
        i = p;
    }
    h->item[i] = e;
}

/* Pop: take the root, move the last entry to the top and sift down.  The
 * definition picks the left child if strictly smaller than the moving
 * entry, then the right one if strictly smaller than that pick; the same
 * as taking the smaller child (the left on a tie) and moving it up if it
 * is strictly smaller than the moving entry, which needs no branch to
 * choose the child. */
static inline struct hnode *heap_pop(struct minheap *h)
{
    struct hnode *top = h->item[0].node;
    struct heap_entry last = h->item[--h->size];
    uint32_t n = h->size, i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c + 1 < n)
            c += h->item[c + 1].freq < h->item[c].freq;
        else if (c >= n)
            break;
        if (!(h->item[c].freq < last.freq))
            break;
        h->item[i] = h->item[c];
        i = c;
    }
    h->item[i] = last;
    return top;
}

/* Tree depth is at most 255 (256 leaves), so a preorder stack of 512
 * entries can never overflow. */
enum { WALK_STACK = 512 };

static void free_tree(struct hnode *root)
{
    struct hnode *stack[WALK_STACK];
    int sp = 0;
    if (root)
        stack[sp++] = root;
    while (sp > 0) {
        struct hnode *n = stack[--sp];
        if (n->right)
            stack[sp++] = n->right;
        if (n->left)
            stack[sp++] = n->left;
        ufree(n);
    }
}

/* Frees everything a block had allocated when an allocation failed:
 * every live node hangs below some node still in the heap. */
static int block_abandon(struct minheap *heap, struct hnode *a, struct hnode *b)
{
    int saved = errno;
    free_tree(a);
    free_tree(b);
    if (heap) {
        if (heap->item) {
            for (uint32_t i = 0; i < heap->size; i++)
                free_tree(heap->item[i].node);
            ufree(heap->item);
        }
        ufree(heap);
    }
    errno = saved ? saved : ENOMEM;
    return -1;
}

/* The hash of one block of 1..1024 bytes into *out: 0, or -1 with errno
 * set when umalloc failed (everything the block allocated is freed). */
static int block_signature(const unsigned char *data, size_t len, uint32_t *out)
{
    /* Four interleaved histograms break the store-to-load dependency
     * between equal bytes; 16-bit counts suffice for 1024 bytes. */
    uint16_t c[4][256];
    memset(c, 0, sizeof c);
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        c[0][data[i]]++;
        c[1][data[i + 1]]++;
        c[2][data[i + 2]]++;
        c[3][data[i + 3]]++;
    }
    for (; i < len; i++)
        c[0][data[i]]++;

    uint32_t distinct = 0;
    uint32_t freq[256];
    for (unsigned s = 0; s < 256; s++) {
        freq[s] = (uint32_t)c[0][s] + c[1][s] + c[2][s] + c[3][s];
        distinct += freq[s] != 0;
    }

    struct minheap *heap = umalloc(sizeof *heap);
    if (!heap)
        return block_abandon(NULL, NULL, NULL);
    heap->size = 0;
    heap->item = umalloc(distinct * sizeof *heap->item);
    if (!heap->item)
        return block_abandon(heap, NULL, NULL);

    for (unsigned s = 0; s < 256; s++) {
        if (!freq[s])
            continue;
        struct hnode *leaf = umalloc(sizeof *leaf);
        if (!leaf)
            return block_abandon(heap, NULL, NULL);
        *leaf = (struct hnode){.freq = freq[s], .symbol = s};
        heap_push(heap, leaf);
    }
    while (heap->size > 1) {
        struct hnode *a = heap_pop(heap);
        struct hnode *b = heap_pop(heap);
        struct hnode *parent = umalloc(sizeof *parent);
        if (!parent)
            return block_abandon(heap, a, b);
        *parent = (struct hnode){.freq = a->freq + b->freq, .left = a, .right = b};
        heap_push(heap, parent);
    }

    /* Preorder hash walk; each node is freed once its children are
     * on the stack, so the tree is walked and freed in one pass. */
    struct hnode *stack[WALK_STACK];
    int sp = 0;
    stack[sp++] = heap->item[0].node;
    uint32_t h = 0;
    while (sp > 0) {
        struct hnode *n = stack[--sp];
        h = sig_mod((uint64_t)h * 31 + n->freq + n->symbol);
        if (n->right)
            stack[sp++] = n->right;
        if (n->left)
            stack[sp++] = n->left;
        ufree(n);
    }
    ufree(heap->item);
    ufree(heap);
    *out = h;
    return 0;
}

/* Hashes a chunk block by block into hashes[]; returns 0 or -1/errno. */
static int chunk_signature(const unsigned char *buf, size_t len, uint32_t *hashes)
{
    for (size_t off = 0, k = 0; off < len; off += BLOCK_BYTES, k++) {
        size_t n = len - off < BLOCK_BYTES ? len - off : BLOCK_BYTES;
        if (block_signature(buf + off, n, &hashes[k]) != 0)
            return -1;
    }
    return 0;
}

/* ---- options ------------------------------------------------------------ */

enum run_mode { MODE_SINGLE, MODE_THREADS, MODE_PROCESSES };

enum progress_mode { PROGRESS_AUTO, PROGRESS_ON, PROGRESS_OFF };

struct options {
    char **paths; /* the FILE operands, in order */
    int npaths;
    enum run_mode mode;
    enum progress_mode progress;
    unsigned workers;
    int verbose, stats;
    size_t heap_bytes; /* 0: the default for the workers */
    size_t pool_bytes;
};

static struct options bs_opt;
static int bs_stdin_closed;  /* fd 0 was closed at start: '-' cannot be read */
static int bs_stdout_closed; /* fd 1 was closed at start: nothing can be written */
static const char *bs_prog = "blocksig";

static void usage(FILE *to)
{
    fprintf(
        to,
        "usage: %s [options] FILE...\n"
        "Prints the Huffman block signature of each FILE ('-' for standard input).\n"
        "With several files, each line ends with two spaces and the file's name.\n"
        "\n"
        "  -t            hash with a pool of worker threads\n"
        "  -m            hash with a pool of worker processes (shared heap)\n"
        "  -j N          number of workers for -t and -m, 1..%u (default: online CPUs)\n"
        "  -v            print every block's hash, in block order, before the result\n"
        "  --stats       print allocator and lock statistics on stderr after the run\n"
        "  --progress    show progress on stderr (default: only when it is a terminal)\n"
        "  --no-progress never show progress\n"
        "  --heap SIZE   size of the heap region (K, M, G suffixes; default: enough\n"
        "                for the workers, at least 64M)\n"
#ifdef BLOCKSIG_POOLS
        "  --pool SIZE   size of each worker's private pool (default 256K; 0: none)\n"
#endif
        "  -h, --help    print this help and exit\n"
        "  --version     print the version and exit\n"
        "\n"
        "Exit status: 0 success, 1 an error (an input, the heap, a worker),\n"
        "2 a usage error.\n",
        bs_prog, MAX_WORKERS);
}

/* "prog: message" on one line of stderr. */
static void complain(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", bs_prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    complain(fmt, ap);
    va_end(ap);
    usage(stderr);
    exit(2);
}

/* For --help and --version: exit 0, or 1 with a line if stdout failed. */
static _Noreturn void exit_after_stdout(void)
{
    if (fflush(stdout) == 0 && !ferror(stdout) && !bs_stdout_closed)
        exit(0);
    fprintf(stderr, "%s: write error on standard output: %s\n", bs_prog,
            strerror(bs_stdout_closed ? EBADF : errno));
    exit(1);
}

/* A size with an optional K, M or G suffix (powers of 1024); -1 if bad. */
static int parse_size(const char *s, size_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    size_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        size_t d = (size_t)(*s - '0');
        if (v > (SIZE_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    unsigned shift = 0;
    switch (*s) {
    case 'k':
    case 'K':
        shift = 10;
        s++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        s++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        s++;
        break;
    default:
        break;
    }
    if (*s != '\0' || (shift && v > (SIZE_MAX >> shift)))
        return -1;
    *out = v << shift;
    return 0;
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > (long)MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
}

/* Takes an option's value from "--opt=V", "--opt V", "-jV" or "-j V". */
static const char *option_value(int argc, char **argv, int *i, const char *inline_value)
{
    if (inline_value)
        return inline_value;
    if (*i + 1 >= argc)
        usage_error("option '%s' needs a value", argv[*i]);
    return argv[++*i];
}

/* An option that takes no value given one (--stats=no): a usage error. */
static int no_value(const char *name, const char *value)
{
    if (value)
        usage_error("option '%s' takes no value", name);
    return 1;
}

static void parse_options(int argc, char **argv)
{
    bs_opt.workers = online_cpus();
#ifdef BLOCKSIG_POOLS
    bs_opt.pool_bytes = 256u << 10;
#endif
    /* Operands are gathered at the front of argv, in order. */
    bs_opt.paths = argv + 1;
    int only_operands = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_operands || a[0] != '-' || strcmp(a, "-") == 0) {
            bs_opt.paths[bs_opt.npaths++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t name_len = a[1] == '-' && eq ? (size_t)(eq - a) : strlen(a);
        const char *inline_value = a[1] == '-' && eq ? eq + 1 : NULL;
#define IS(name)   (name_len == strlen(name) && strncmp(a, name, name_len) == 0)
#define FLAG(name) (IS(name) && no_value(name, inline_value))
        if (strcmp(a, "--") == 0) {
            only_operands = 1;
        } else if (IS("-t")) {
            if (bs_opt.mode == MODE_PROCESSES)
                usage_error("-t and -m exclude each other");
            bs_opt.mode = MODE_THREADS;
        } else if (IS("-m")) {
            if (bs_opt.mode == MODE_THREADS)
                usage_error("-t and -m exclude each other");
            bs_opt.mode = MODE_PROCESSES;
        } else if (IS("-v") || FLAG("--verbose")) {
            bs_opt.verbose = 1;
        } else if (FLAG("--stats")) {
            bs_opt.stats = 1;
        } else if (FLAG("--progress")) {
            bs_opt.progress = PROGRESS_ON;
        } else if (FLAG("--no-progress")) {
            bs_opt.progress = PROGRESS_OFF;
        } else if (IS("-h") || FLAG("--help")) {
            usage(stdout);
            exit_after_stdout();
        } else if (FLAG("--version")) {
            printf("%s %s\n", bs_prog, VERSION);
            exit_after_stdout();
        } else if (strncmp(a, "-j", 2) == 0 && a[1] == 'j') {
            const char *v = option_value(argc, argv, &i, a[2] ? a + 2 : NULL);
            size_t n;
            if (parse_size(v, &n) != 0 || strspn(v, "0123456789") != strlen(v) || n < 1 ||
                n > MAX_WORKERS)
                usage_error("-j wants a number of workers from 1 to %u, not '%s'",
                            MAX_WORKERS, v);
            bs_opt.workers = (unsigned)n;
        } else if (IS("--heap")) {
            const char *v = option_value(argc, argv, &i, inline_value);
            if (parse_size(v, &bs_opt.heap_bytes) != 0 || bs_opt.heap_bytes == 0)
                usage_error("--heap wants a size such as 64M, not '%s'", v);
#ifdef BLOCKSIG_POOLS
        } else if (IS("--pool")) {
            const char *v = option_value(argc, argv, &i, inline_value);
            if (parse_size(v, &bs_opt.pool_bytes) != 0 || bs_opt.pool_bytes > (1ul << 40))
                usage_error("--pool wants a size such as 256K, not '%s'", v);
#endif
        } else {
            usage_error("unknown option '%s'", a);
        }
#undef IS
#undef FLAG
    }
    if (bs_opt.npaths == 0)
        usage_error("no input FILE given");
    if (bs_opt.mode == MODE_PROCESSES && bs_policy.private_memory)
        usage_error("-m needs memory shared across processes, and this build's is not");
}

/* ---- errors ------------------------------------------------------------- */

static void abandon_workers(void);
static void progress_clear(void);

/* One line on stderr naming the cause; no child is left behind; exit 1. */
static _Noreturn void fatal(const char *fmt, ...)
{
    progress_clear();
    va_list ap;
    va_start(ap, fmt);
    complain(fmt, ap);
    va_end(ap);
    abandon_workers();
    _exit(1); /* unwritten output is dropped: it holds no finished result */
}

static const char *alloc_error(int err)
{
    if (err == EOWNERDEAD)
        return "the heap is unusable: a process died while holding its lock";
    if (err == ENOMEM)
        return "the heap is too small for the work (see --heap)";
    return strerror(err);
}

/* ---- input -------------------------------------------------------------- */

/* A worker that fails must be noticed even while the reader waits on a
 * slow input: a worker thread that fails, or SIGCHLD for a worker process
 * that ends, writes a byte to this pipe, which the reader polls beside
 * the input (the self-pipe trick). */
static int bs_event_pipe[2] = {-1, -1};
static void check_workers(void);

struct input {
    int fd;
    int is_stdin;
    const char *name;
    int sized; /* a regular file with a size to hold it to */
    off_t size, start;
    uint64_t bytes; /* read so far */
    int error;      /* errno of a failed read: the input ends there */
};

/* ---- whole reads and writes ------------------------------------------- */

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes: returns n, 0 at a clean end of file, or -1. */
static ssize_t read_all(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return (ssize_t)n;
}

/* ---- progress ------------------------------------------------------------ */

/* One line on stderr, rewritten in place (pv and zstd do the same): shown
 * when stderr is a terminal unless --no-progress, and when it is not only
 * with --progress; never before an input has taken PROGRESS_DELAY_NS, so
 * that short inputs show nothing. */
#define PROGRESS_DELAY_NS 500000000ll
#define PROGRESS_EVERY_NS 200000000ll

static struct {
    int enabled, tty, shown;
    int64_t start, last; /* nanoseconds */
} bs_progress;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void progress_setup(void)
{
    bs_progress.tty = isatty(2);
    /* Per-block lines on the same terminal would tear the progress line. */
    int auto_on = bs_progress.tty && !(bs_opt.verbose && isatty(1));
    bs_progress.enabled =
        bs_opt.progress == PROGRESS_ON || (bs_opt.progress == PROGRESS_AUTO && auto_on);
}

/* Removes the progress line (or ends it, when stderr is not a terminal). */
static void progress_clear(void)
{
    if (!bs_progress.shown)
        return;
    fputs(bs_progress.tty ? "\r\033[K" : "\n", stderr);
    bs_progress.shown = 0;
}

static void human_bytes(char *out, size_t len, double b)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    snprintf(out, len, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
}

static void progress_update(const struct input *in)
{
    if (!bs_progress.enabled)
        return;
    int64_t t = now_ns();
    if (in->bytes == 0 || t - bs_progress.start < PROGRESS_DELAY_NS ||
        t - bs_progress.last < PROGRESS_EVERY_NS)
        return;
    bs_progress.last = t;
    double secs = (double)(t - bs_progress.start) / 1e9;
    double rate = (double)in->bytes / secs;
    char done[32], total[32];
    human_bytes(done, sizeof done, (double)in->bytes);
    fprintf(stderr, "\r%s: %s", in->name, done);
    uint64_t whole = (uint64_t)(in->size - in->start);
    if (in->sized && whole >= in->bytes) {
        human_bytes(total, sizeof total, (double)whole);
        long left = (long)((double)(whole - in->bytes) / rate + 0.5);
        fprintf(stderr, " of %s (%.0f%%), %.1f MB/s, %ld:%02ld left", total,
                100.0 * (double)in->bytes / (double)whole, rate / 1e6, left / 60,
                left % 60);
    } else {
        fprintf(stderr, ", %.1f MB/s", rate / 1e6);
    }
    fputs(bs_progress.tty ? "\033[K" : "", stderr);
    bs_progress.shown = 1;
}

/* ---- input -------------------------------------------------------------- */

/* A problem with one input: reported, and the other inputs go on. */
static int input_error(const char *name, int err, const char *what)
{
    progress_clear();
    fprintf(stderr, "%s: %s: %s\n", bs_prog, name, what ? what : strerror(err));
    return -1;
}

static int input_open(struct input *in, const char *path)
{
    memset(in, 0, sizeof *in);
    in->is_stdin = strcmp(path, "-") == 0;
    in->name = in->is_stdin ? "standard input" : path;
    if (in->is_stdin && bs_stdin_closed)
        return input_error(in->name, EBADF, NULL);
    in->fd = 0;
    /* With -m, SIGCHLD interrupts an open() that waits for a FIFO's
     * writer, so that a worker's death is not missed meanwhile. */
    while (!in->is_stdin && (in->fd = open(path, O_RDONLY)) < 0 && errno == EINTR)
        check_workers();
    if (in->fd < 0)
        return input_error(path, errno, NULL);
    struct stat st;
    int err = fstat(in->fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (err) {
        if (!in->is_stdin)
            close(in->fd);
        return input_error(in->name, err, NULL);
    }
    /* Standard input may be a regular file read part-way already. */
    off_t start = lseek(in->fd, 0, SEEK_CUR);
    in->sized =
        S_ISREG(st.st_mode) && st.st_size > 0 && start >= 0 && start <= st.st_size;
    in->size = st.st_size;
    in->start = in->sized ? start : 0;
    bs_progress.start = bs_progress.last = now_ns();
    return 0;
}

/* The event pipe was readable: empties it and ends the run if a worker
 * has failed (check_workers). */
static void events_check(void)
{
    char drain[64];
    while (read(bs_event_pipe[0], drain, sizeof drain) > 0)
        ;
    check_workers();
}

/* Returns once fd is readable; with -m, a worker's death seen meanwhile
 * ends the run (check_workers). */
static void wait_readable(int fd)
{
    if (bs_event_pipe[0] < 0)
        return;
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
                              {.fd = bs_event_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return; /* read() will say what is wrong */
        }
        if (p[1].revents & POLLIN)
            events_check();
        if (p[0].revents)
            return;
    }
}

/* Fills buf with up to n bytes; fewer only at the end of the input, or
 * where a read failed (the error is kept for input_close). */
static size_t input_read(struct input *in, unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n && !in->error) {
        wait_readable(in->fd);
        ssize_t r = read(in->fd, buf + got, n - got);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            in->error = errno;
            break;
        }
        got += (size_t)r;
    }
    in->bytes += got;
    progress_update(in);
    return got;
}

/* At the end of an input: 0, or -1 and a message when it could not be
 * read whole, or when a regular file is no longer as long as what was read
 * (the signature would be of a file that no longer exists). */
static int input_close(struct input *in)
{
    progress_clear();
    struct stat st;
    int r = 0;
    if (in->error)
        r = input_error(in->name, in->error, NULL);
    else if (in->sized && (fstat(in->fd, &st) != 0 || st.st_size != in->size ||
                           in->bytes != (uint64_t)(in->size - in->start)))
        r = input_error(in->name, 0, "the file changed size while it was being read");
    if (!in->is_stdin)
        close(in->fd);
    return r;
}

/* ---- results, in block order -------------------------------------------- */

/* Results go to stdout through this buffer, which only ever holds whole
 * lines and is written out whole: a run that fails part-way leaves stdout
 * ending at a line boundary, with every finished file's line on it. */
static struct {
    char buf[1 << 16];
    size_t len;
} bs_out;

static void out_flush(void)
{
    if (bs_out.len > 0 && (bs_stdout_closed || write_all(1, bs_out.buf, bs_out.len) != 0))
        fatal("write error on standard output: %s",
              strerror(bs_stdout_closed ? EBADF : errno));
    bs_out.len = 0;
}

static void out_line(const char *fmt, ...)
{
    if (sizeof bs_out.buf - bs_out.len < PATH_MAX + 64)
        out_flush();
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(bs_out.buf + bs_out.len, sizeof bs_out.buf - bs_out.len, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof bs_out.buf - bs_out.len) {
        bs_out.len += (size_t)n;
    } else if (n > 0) { /* a line longer than the buffer: a very long name */
        out_flush();
        va_start(ap, fmt);
        vdprintf(1, fmt, ap);
        va_end(ap);
    }
}

struct tally {
    uint32_t signature;
    uint64_t next_block;
};

static void emit_chunk(struct tally *t, const uint32_t *hashes, size_t len)
{
    for (size_t k = 0; k * BLOCK_BYTES < len; k++) {
        if (bs_opt.verbose)
            out_line("Block %llu hash: %u\n", (unsigned long long)t->next_block,
                     hashes[k]);
        t->next_block++;
        uint32_t sum = t->signature + hashes[k];
        t->signature = sum >= SIG_PRIME ? sum - SIG_PRIME : sum;
    }
}

/* One file's line.  With several files the name follows, escaped as
 * sha256sum does: a name holding a newline, a carriage return or a
 * backslash has them as \n, \r and \\, and the line starts with a
 * backslash, so that every line stays one line. */
static void out_result(uint32_t signature, const char *name)
{
    if (bs_opt.npaths == 1) {
        out_line("Final signature: %u\n", signature);
        return;
    }
    static char esc[2 * PATH_MAX + 1];
    size_t n = 0;
    int escaped = 0;
    for (const char *c = name; *c && n + 2 < sizeof esc; c++) {
        const char *e = *c == '\n'   ? "\\n"
                        : *c == '\r' ? "\\r"
                        : *c == '\\' ? "\\\\"
                                     : NULL;
        if (e) {
            memcpy(esc + n, e, 2);
            n += 2;
            escaped = 1;
        } else {
            esc[n++] = *c;
        }
    }
    esc[n] = '\0';
    out_line("%sFinal signature: %u  %s\n", escaped ? "\\" : "", signature, esc);
}

/* ---- single-threaded mode ----------------------------------------------- */

static void run_single(struct input *in, struct tally *t)
{
    uint32_t hashes[CHUNK_BLOCKS];
    for (;;) {
        unsigned char *buf = umalloc(CHUNK_BYTES);
        if (!buf)
            fatal("%s", alloc_error(errno));
        size_t len = input_read(in, buf, CHUNK_BYTES);
        if (len > 0 && chunk_signature(buf, len, hashes) != 0)
            fatal("%s", alloc_error(errno));
        ufree(buf);
        emit_chunk(t, hashes, len);
        if (len < CHUNK_BYTES)
            break;
    }
}

/* ---- worker pools: threads (-t) or processes (-m) ----------------------- */

/* TASK_CHUNK: hash buf[0..len), chunk number seq, and free buf.
 * TASK_FILE: take chunks of the file that bs_feed describes until none is
 * left (a worker process gets the file itself along with the task). */
enum { TASK_CHUNK = 1, TASK_FILE };

struct task {
    uint32_t kind;
    uint32_t unused; /* named, so that an initializer zeroes it: no
                        uninitialised padding goes down the socket */
    uint64_t seq;
    unsigned char *buf;
    uint64_t len;
};

/* MSG_CHUNK answers TASK_CHUNK; MSG_FILE answers TASK_FILE with the sum
 * of the block hashes taken, the bytes read and the errno of a failed
 * read (0: none); MSG_DONE ends a worker's run with its counts. */
enum { MSG_CHUNK = 1, MSG_FILE, MSG_DONE, MSG_ERROR };

struct result {
    uint32_t kind;
    int32_t err;
    uint64_t seq;
    uint64_t len;
    union {
        uint32_t hashes[CHUNK_BLOCKS];
        uint32_t sum;
        struct alloc_counts counts;
    } u;
};

/* A regular file that the workers read for themselves: each takes the
 * next chunk number from `next` and reads that chunk with pread(), so no
 * one hands chunks out and any worker can take any chunk.  The reader
 * fills in the plain fields before it sends TASK_FILE; with -m this lives
 * in MAP_SHARED memory made before fork(). */
struct feed {
    _Atomic uint64_t next;    /* the next chunk to take */
    _Atomic uint64_t bytes;   /* read so far, for --progress */
    _Atomic int stop;         /* a read failed or came up short: end early */
    _Atomic unsigned working; /* workers that got a buffer to read into */
    int fd;                   /* the file, for worker threads */
    off_t start;              /* offset of chunk 0 */
    uint64_t size;            /* bytes from start to the end */
    uint64_t chunks;
};
static struct feed *bs_feed;

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2 &&
                   ATOMIC_INT_LOCK_FREE == 2,
               "the feed's atomics must be lock-free to work across processes");

/* One write() of at most PIPE_BUF bytes to a pipe is atomic, so the
 * reader never sees half a result, even from a worker that dies. */
_Static_assert(sizeof(struct result) <= PIPE_BUF, "a result fits one pipe write");

struct worker {
    int task_fd;   /* reader's end: tasks go out */
    int result_fd; /* reader's end: results come in; -1 once finished */
    int in_fds[2]; /* the worker's ends: task in, result out */
    unsigned outstanding;
    int done;
    pid_t pid;
    pthread_t thread;
    int reaped;             /* a process waited for */
    int thread_running;     /* a thread to join */
    _Atomic int thread_err; /* a worker thread's failure, for the reader */
    struct alloc_counts counts;
};

/* Every worker, for the error path and for check_workers. */
static struct worker *bs_workers;
static unsigned bs_nworkers;

/* Waits for a worker process; returns its status. */
static int reap(struct worker *w)
{
    int status = 0;
    while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
        ;
    w->reaped = 1;
    return status;
}

/* The task channel is a socket so that a file can travel with a task to a
 * worker process (SCM_RIGHTS): the process then holds the reader's open
 * file, the one it checked, not whatever the name points to by now. */
union fd_message {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int))];
};

/* Sends one task; fd >= 0 goes along as a file descriptor. */
static int task_send(int sock, const struct task *t, int fd)
{
    if (fd < 0)
        return write_all(sock, t, sizeof *t);
    union fd_message ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = (void *)t, .iov_len = sizeof *t};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.space,
                       .msg_controllen = sizeof ctl.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t n;
    while ((n = sendmsg(sock, &m, 0)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        return -1;
    return write_all(sock, (const char *)t + n, sizeof *t - (size_t)n);
}

/* Reads one task, as read_all does; a file descriptor that came with it
 * is stored in *fd (left alone otherwise). */
static ssize_t task_receive(int sock, struct task *t, int *fd)
{
    union fd_message ctl;
    struct iovec iov = {.iov_base = t, .iov_len = sizeof *t};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.space,
                       .msg_controllen = sizeof ctl.space};
    ssize_t n;
    while ((n = recvmsg(sock, &m, 0)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(fd, CMSG_DATA(c), sizeof *fd);
    if ((size_t)n < sizeof *t &&
        read_all(sock, (char *)t + n, sizeof *t - (size_t)n) != (ssize_t)(sizeof *t - (size_t)n))
        return -1;
    return (ssize_t)sizeof *t;
}

/* Whether the reader has gone, or given up: during a feed it sends
 * nothing, so anything to read on the task channel (an end of file) says
 * so.  Without this a worker process would read on to the end of the file
 * after the reader was killed. */
static int reader_gone(int task_fd)
{
    struct pollfd p = {.fd = task_fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

/* Reads chunks of the feed from fd until none is left, into r (MSG_FILE:
 * sum, bytes, err).  Returns 0, or -1 with errno set when hashing could
 * not allocate.  A chunk read short (the file shrank) or not at all (a
 * read error) is not counted, and tells every worker to stop.  A worker
 * that cannot get a buffer to read into (a tight --heap) takes no chunk
 * and leaves the file to the others (run_feed fails if none got one). */
static int feed_work(int fd, int task_fd, struct result *r)
{
    struct feed *f = bs_feed;
    uint32_t hashes[CHUNK_BLOCKS];
    uint64_t sum = 0, bytes = 0;
    r->kind = MSG_FILE;
    r->err = 0;
    r->len = 0;
    r->u.sum = 0;
    unsigned char *buf = umalloc(CHUNK_BYTES);
    if (!buf)
        return 0;
    atomic_fetch_add_explicit(&f->working, 1, memory_order_relaxed);
    while (!atomic_load_explicit(&f->stop, memory_order_relaxed)) {
        uint64_t k = atomic_fetch_add_explicit(&f->next, 1, memory_order_relaxed);
        if (k >= f->chunks)
            break;
        uint64_t at = k * CHUNK_BYTES;
        size_t want = f->size - at < CHUNK_BYTES ? (size_t)(f->size - at) : CHUNK_BYTES;
        size_t got = 0;
        while (got < want) {
            ssize_t n = pread(fd, buf + got, want - got, f->start + (off_t)(at + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                r->err = n < 0 ? errno : 0;
                break;
            }
            got += (size_t)n;
        }
        if (got < want) {
            atomic_store_explicit(&f->stop, 1, memory_order_relaxed);
            break;
        }
        if (chunk_signature(buf, want, hashes) != 0) {
            atomic_store_explicit(&f->stop, 1, memory_order_relaxed);
            int saved = errno;
            ufree(buf);
            errno = saved;
            return -1;
        }
        for (size_t b = 0; b * BLOCK_BYTES < want; b++)
            sum += hashes[b];
        sum %= SIG_PRIME;
        bytes += want;
        atomic_fetch_add_explicit(&f->bytes, want, memory_order_relaxed);
        if (reader_gone(task_fd))
            break;
    }
    ufree(buf);
    r->len = bytes;
    r->u.sum = (uint32_t)sum;
    return 0;
}

/* Returns 0 after a clean end (MSG_DONE sent), the errno of a failure
 * (sent as MSG_ERROR), or -1 when the reader has gone. */
static int worker_loop(int task_fd, int result_fd)
{
    struct result r;
    memset(&r, 0, sizeof r);
    if (bs_policy.worker_begin && bs_policy.worker_begin() != 0) {
        r.kind = MSG_ERROR;
        r.err = errno;
        write_all(result_fd, &r, sizeof r);
        return r.err;
    }
    struct task t;
    int fd = -1;
    while (task_receive(task_fd, &t, &fd) == (ssize_t)sizeof t) {
        int failed;
        r.seq = t.seq;
        if (t.kind == TASK_FILE) {
            HANDOFF_RECEIVE(bs_feed);
            /* A process without the file (it could not take another
             * descriptor) must not read the reader's number for it. */
            int file = fd >= 0 ? fd : bs_opt.mode == MODE_THREADS ? bs_feed->fd : -1;
            errno = EMFILE;
            failed = file < 0 || feed_work(file, task_fd, &r) != 0;
            if (fd >= 0)
                close(fd);
            fd = -1;
        } else {
            HANDOFF_RECEIVE(t.buf);
            r.kind = MSG_CHUNK;
            r.len = t.len;
            failed = chunk_signature(t.buf, t.len, r.u.hashes) != 0;
            int saved = errno;
            ufree(t.buf);
            errno = saved;
        }
        if (failed) {
            r.kind = MSG_ERROR;
            r.err = errno;
        }
        if (write_all(result_fd, &r, sizeof r) != 0)
            return -1;
        if (failed)
            return r.err;
    }
    if (bs_policy.worker_end)
        bs_policy.worker_end();
    r.kind = MSG_DONE;
    r.u.counts = bs_counts;
    return write_all(result_fd, &r, sizeof r) != 0 ? -1 : 0;
}

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    int err = worker_loop(w->in_fds[0], w->in_fds[1]);
    if (err > 0) { /* wake a reader that waits on its input */
        atomic_store(&w->thread_err, err);
        char c = 0;
        ssize_t n = write(bs_event_pipe[1], &c, 1);
        (void)n;
    }
    close(w->in_fds[0]);
    close(w->in_fds[1]);
    return NULL;
}

static void start_workers(struct worker *ws, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        struct worker *w = &ws[i];
        int task[2], result[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, task) != 0 || pipe(result) != 0)
            fatal("cannot create the channels to worker %u: %s", i, strerror(errno));
        *w = (struct worker){
            .task_fd = task[1], .result_fd = result[0], .in_fds = {task[0], result[1]}};
        if (bs_opt.mode == MODE_THREADS) {
            int e = pthread_create(&w->thread, NULL, worker_thread, w);
            if (e != 0)
                fatal("cannot start worker thread %u: %s", i, strerror(e));
            w->thread_running = 1;
            continue;
        }
        w->pid = fork();
        if (w->pid < 0)
            fatal("cannot start worker process %u: %s", i, strerror(errno));
        if (w->pid == 0) {
            /* Keep only this worker's own ends, so that the reader's death
             * is an end of file here and a sibling's death is one there. */
            for (unsigned k = 0; k <= i; k++) {
                close(ws[k].task_fd);
                close(ws[k].result_fd);
            }
            if (bs_event_pipe[0] >= 0) {
                close(bs_event_pipe[0]);
                close(bs_event_pipe[1]);
            }
            bs_nworkers = 0; /* never the reader's to kill or join */
            _exit(worker_loop(task[0], result[1]) != 0);
        }
        close(task[0]);
        close(result[1]);
    }
}

/* Reports a worker process that ended early; status -1: not reaped yet.
 * A worker that failed says why in its last message, which may still wait
 * in its result pipe: that reason comes first. */
static _Noreturn void worker_died(unsigned i, struct worker *w, int status)
{
    struct result r;
    fcntl(w->result_fd, F_SETFL, O_NONBLOCK);
    while (read_all(w->result_fd, &r, sizeof r) == (ssize_t)sizeof r)
        if (r.kind == MSG_ERROR)
            fatal("worker %u: %s", i, alloc_error(r.err));
    if (status == -1)
        status = reap(w);
    else
        w->reaped = 1;
    if (WIFSIGNALED(status))
        fatal("worker process %u (pid %d) was killed by signal %d (%s)", i, (int)w->pid,
              WTERMSIG(status), strsignal(WTERMSIG(status)));
    fatal("worker process %u (pid %d) ended before its work was done", i, (int)w->pid);
}

/* A worker process exits only when told to, so one that has exited
 * before that has failed; a worker thread that failed said so. */
static void check_workers(void)
{
    for (unsigned i = 0; i < bs_nworkers; i++) {
        struct worker *w = &bs_workers[i];
        int status, err;
        if (w->pid > 0 && !w->reaped && waitpid(w->pid, &status, WNOHANG) > 0)
            worker_died(i, w, status);
        if (w->pid == 0 && (err = atomic_load(&w->thread_err)) != 0)
            fatal("worker %u: %s", i, alloc_error(err));
    }
}

static void on_sigchld(int sig)
{
    (void)sig;
    int saved = errno;
    char c = 0;
    ssize_t w = write(bs_event_pipe[1], &c, 1); /* full pipe: already told */
    (void)w;
    errno = saved;
}

/* On an error: worker processes are killed and reaped, so none is left
 * behind; worker threads are told to stop (their task sockets closed) and
 * joined, each finishing at most the chunk it holds. */
static void abandon_workers(void)
{
    if (bs_feed)
        atomic_store(&bs_feed->stop, 1);
    for (unsigned i = 0; i < bs_nworkers; i++) {
        struct worker *w = &bs_workers[i];
        if (w->pid > 0 && !w->reaped)
            kill(w->pid, SIGKILL);
        if (w->thread_running && w->task_fd >= 0) {
            close(w->task_fd);
            w->task_fd = -1;
        }
    }
    for (unsigned i = 0; i < bs_nworkers; i++) {
        struct worker *w = &bs_workers[i];
        if (w->pid > 0 && !w->reaped)
            reap(w);
        if (w->thread_running) {
            pthread_join(w->thread, NULL);
            w->thread_running = 0;
        }
    }
}

/* Reads one message from worker i; returns its kind. */
static uint32_t worker_receive(struct worker *ws, unsigned i, struct result *r)
{
    struct worker *w = &ws[i];
    ssize_t got = read_all(w->result_fd, r, sizeof *r);
    if (got != (ssize_t)sizeof *r) {
        if (w->pid > 0)
            worker_died(i, w, -1);
        fatal("worker thread %u stopped unexpectedly", i);
    }
    if (r->kind == MSG_ERROR)
        fatal("worker %u: %s", i, alloc_error(r->err));
    if (r->kind == MSG_DONE) {
        w->counts = r->u.counts;
        w->done = 1;
    } else {
        w->outstanding--;
    }
    return r->kind;
}

/* A regular file: every worker reads chunks for itself (struct feed),
 * and answers once with its sum.  The reader only waits, waking for
 * --progress. */
static void run_feed(struct input *in, struct tally *t, struct worker *ws, unsigned n)
{
    struct feed *f = bs_feed;
    uint64_t size = (uint64_t)(in->size - in->start);
    atomic_store(&f->next, 0);
    atomic_store(&f->bytes, 0);
    atomic_store(&f->stop, 0);
    atomic_store(&f->working, 0);
    f->fd = in->fd;
    f->start = in->start;
    f->size = size;
    f->chunks = (size + CHUNK_BYTES - 1) / CHUNK_BYTES;
    unsigned use = f->chunks < n ? (unsigned)f->chunks : n;
    HANDOFF_SEND(f);
    for (unsigned i = 0; i < use; i++) {
        struct task task = {.kind = TASK_FILE, .seq = i};
        if (task_send(ws[i].task_fd, &task, ws[i].pid > 0 ? in->fd : -1) != 0) {
            struct result r;
            worker_receive(ws, i, &r); /* says why the worker is gone */
            fatal("worker %u stopped taking work", i);
        }
        ws[i].outstanding++;
    }

    /* The result pipes of the workers in use, and the event pipe: an idle
     * worker process that dies meanwhile is noticed at once too. */
    uint64_t sum = 0, bytes = 0;
    int err = 0;
    struct pollfd pfd[MAX_WORKERS + 1];
    for (unsigned i = 0; i < use; i++)
        pfd[i] = (struct pollfd){.fd = ws[i].result_fd, .events = POLLIN};
    pfd[use] = (struct pollfd){.fd = bs_event_pipe[0], .events = POLLIN};
    for (unsigned left = use; left > 0;) {
        int ready = poll(pfd, use + 1, bs_progress.enabled ? PROGRESS_EVERY_NS / 1000000 : -1);
        if (ready < 0 && errno != EINTR)
            fatal("poll: %s", strerror(errno));
        in->bytes = atomic_load_explicit(&f->bytes, memory_order_relaxed);
        progress_update(in);
        if (ready > 0 && pfd[use].revents)
            events_check();
        for (unsigned i = 0; ready > 0 && i < use; i++) {
            if (!pfd[i].revents)
                continue;
            struct result r;
            if (worker_receive(ws, i, &r) != MSG_FILE)
                fatal("worker %u returned a result that was not asked for", i);
            sum += r.u.sum;
            bytes += r.len;
            err = err ? err : r.err;
            pfd[i].fd = -1; /* answered */
            left--;
        }
    }
    if (use > 0 && atomic_load(&f->working) == 0)
        fatal("%s", alloc_error(ENOMEM)); /* no worker had room for a buffer */
    t->signature = (uint32_t)(sum % SIG_PRIME);
    in->bytes = bytes;
    in->error = err;
    /* Standard input read whole is left at its end, as read() leaves it;
     * after a failure, where it stood. */
    if (in->is_stdin && bytes == size)
        lseek(in->fd, in->start + (off_t)bytes, SEEK_SET);
}

static void run_workers(struct input *in, struct tally *t, struct worker *ws, unsigned n,
                        unsigned window)
{
    if (in->sized && !bs_opt.verbose) {
        run_feed(in, t, ws, n);
        return;
    }
    /* Results wait here until every earlier chunk has been emitted. */
    static struct {
        int ready;
        uint64_t len;
        uint32_t hashes[CHUNK_BLOCKS];
    } slot[MAX_WINDOW];
    uint64_t next_seq = 0, next_emit = 0;
    int eof = 0;
    unsigned rr = 0;
    struct pollfd pfd[MAX_WORKERS];

    while (!eof || next_emit < next_seq) {
        /* Hand out chunks while the window and some worker have room. */
        while (!eof && next_seq - next_emit < window) {
            unsigned k = 0;
            while (k < n && ws[rr].outstanding >= TASKS_PER_WORKER) {
                rr = (rr + 1) % n;
                k++;
            }
            if (k == n)
                break;
            unsigned char *buf = umalloc(CHUNK_BYTES);
            if (!buf) {
                if (next_emit < next_seq)
                    break; /* wait for a buffer to come back */
                fatal("%s", alloc_error(errno));
            }
            size_t len = input_read(in, buf, CHUNK_BYTES);
            if (len < CHUNK_BYTES)
                eof = 1;
            if (len == 0) {
                ufree(buf);
                break;
            }
            struct task task = {.kind = TASK_CHUNK, .seq = next_seq, .buf = buf, .len = len};
            HANDOFF_SEND(buf);
            if (write_all(ws[rr].task_fd, &task, sizeof task) != 0) {
                struct result r;
                worker_receive(ws, rr, &r); /* says why the worker is gone */
                fatal("worker %u stopped taking work", rr);
            }
            ws[rr].outstanding++;
            next_seq++;
            rr = (rr + 1) % n;
        }
        if (next_emit == next_seq)
            continue;

        for (unsigned i = 0; i < n; i++)
            pfd[i] = (struct pollfd){.fd = ws[i].result_fd, .events = POLLIN};
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR)
                continue;
            fatal("poll: %s", strerror(errno));
        }
        for (unsigned i = 0; i < n; i++) {
            if (!pfd[i].revents)
                continue;
            struct result r;
            if (worker_receive(ws, i, &r) != MSG_CHUNK)
                fatal("worker %u finished before its work was done", i);
            if (r.seq < next_emit || r.seq >= next_seq)
                fatal("worker %u returned a chunk that was not asked for", i);
            slot[r.seq % window].ready = 1;
            slot[r.seq % window].len = r.len;
            memcpy(slot[r.seq % window].hashes, r.u.hashes, sizeof r.u.hashes);
        }
        while (next_emit < next_seq && slot[next_emit % window].ready) {
            emit_chunk(t, slot[next_emit % window].hashes, slot[next_emit % window].len);
            slot[next_emit % window].ready = 0;
            next_emit++;
        }
    }
}

/* Closes the task sockets and collects every worker's final counts. */
static void stop_workers(struct worker *ws, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        close(ws[i].task_fd);
        ws[i].task_fd = -1;
    }
    for (unsigned i = 0; i < n; i++) {
        struct result r;
        while (!ws[i].done)
            if (worker_receive(ws, i, &r) == MSG_CHUNK)
                fatal("worker %u sent a result after the end", i);
        if (ws[i].pid > 0) {
            int status = reap(&ws[i]);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fatal("worker process %u (pid %d) failed at exit", i, (int)ws[i].pid);
        } else {
            pthread_join(ws[i].thread, NULL);
            ws[i].thread_running = 0;
        }
        close(ws[i].result_fd);
    }
}

/* ---- the whole run ------------------------------------------------------ */

static unsigned bs_window;

static size_t default_heap_bytes(unsigned workers, unsigned window)
{
    size_t need = (size_t)(window + 2) * (CHUNK_BYTES + 256) +
                  (size_t)workers * (bs_opt.pool_bytes + (128u << 10)) + (1u << 20);
    size_t least = (size_t)64 << 20;
    return need > least ? need : least;
}

static void add_counts(struct alloc_counts *sum, const struct alloc_counts *c)
{
    sum->umallocs += c->umallocs;
    sum->ufrees += c->ufrees;
    sum->pool_hits += c->pool_hits;
    sum->pool_fallbacks += c->pool_fallbacks;
    sum->pool_resets += c->pool_resets;
    sum->remote_frees += c->remote_frees;
}

static void print_stats(const struct alloc_counts *c, unsigned workers)
{
    umem_stats_t st;
    umem_get_stats(bs_heap, &st);
    static const char *const mode_name[] = {"single", "threads", "processes"};
    fprintf(stderr, "%s statistics (%s, %u worker%s)\n", bs_prog, mode_name[bs_opt.mode],
            workers, workers == 1 ? "" : "s");
#define STAT(name, value) \
    fprintf(stderr, "  %-18s %llu\n", name, (unsigned long long)(value))
    STAT("lock_count", st.lock_count);
    STAT("lock_contended", st.lock_contended);
    STAT("umalloc_calls", c->umallocs);
    STAT("ufree_calls", c->ufrees);
    STAT("heap_allocs", st.allocs);
    STAT("heap_frees", st.frees);
    STAT("heap_failed", st.failed_allocs);
#ifdef BLOCKSIG_POOLS
    STAT("pool_hits", c->pool_hits);
    STAT("pool_fallbacks", c->pool_fallbacks);
    STAT("pool_resets", c->pool_resets);
    STAT("remote_frees", c->remote_frees);
#endif
    STAT("peak_heap_bytes", st.peak_bytes_in_use);
    STAT("heap_bytes", st.heap_bytes);
#undef STAT
}

static int blocksig_main(int argc, char **argv)
{
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    bs_prog = slash ? slash + 1 : argc > 0 ? argv[0] : bs_prog;
    /* A closed standard descriptor would be handed out by pipe() or open()
     * and mistaken for one: hold each place with /dev/null. */
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        if (open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
            exit(1);
        bs_stdin_closed |= fd == 0;
        bs_stdout_closed |= fd == 1;
    }
    /* An unwritable stdout or a worker's closed pipe is an error to report
     * (EPIPE), not a silent death by SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    parse_options(argc, argv);

    unsigned workers = bs_opt.mode == MODE_SINGLE ? 1 : bs_opt.workers;
    unsigned window = workers * TASKS_PER_WORKER;
    bs_window = window > MAX_WINDOW ? MAX_WINDOW : window;
    size_t heap_bytes =
        bs_opt.heap_bytes ? bs_opt.heap_bytes : default_heap_bytes(workers, bs_window);
    unsigned flags = bs_opt.mode == MODE_SINGLE      ? UMEM_NOLOCK
                     : bs_opt.mode == MODE_PROCESSES ? UMEM_SHARED
                                                     : 0;

    bs_heap = umem_create(heap_bytes, flags);
    if (!bs_heap)
        fatal("cannot create a heap of %zu bytes: %s", heap_bytes,
              errno == EINVAL ? "too small for one block" : strerror(errno));
    progress_setup();

    struct alloc_counts total = {0};
    if (bs_policy.reader_begin && bs_policy.reader_begin() != 0)
        fatal("%s", alloc_error(errno));
    static struct worker ws[MAX_WORKERS];
    if (bs_opt.mode != MODE_SINGLE) {
        bs_workers = ws;
        bs_nworkers = workers;
        if (pipe(bs_event_pipe) != 0)
            fatal("cannot create a pipe: %s", strerror(errno));
        bs_feed = mmap(NULL, sizeof *bs_feed, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                       -1, 0);
        if (bs_feed == MAP_FAILED) {
            bs_feed = NULL;
            fatal("cannot map %zu bytes: %s", sizeof *bs_feed, strerror(errno));
        }
        for (int k = 0; k < 2; k++)
            fcntl(bs_event_pipe[k], F_SETFL, O_NONBLOCK);
        if (bs_opt.mode == MODE_PROCESSES) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_sigchld; /* no SA_RESTART: see input_open */
            sigemptyset(&sa.sa_mask);
            sigaction(SIGCHLD, &sa, NULL);
        }
        start_workers(ws, workers);
    }

    /* One line per input; a bad input is reported and the others go on,
     * as with sha256sum.  One input prints the reference's line alone. */
    int status = 0;
    for (int k = 0; k < bs_opt.npaths; k++) {
        struct input in;
        if (input_open(&in, bs_opt.paths[k]) != 0) {
            status = 1;
            continue;
        }
        struct tally t = {0, 0};
        if (bs_opt.mode == MODE_SINGLE)
            run_single(&in, &t);
        else
            run_workers(&in, &t, ws, workers, bs_window);
        if (input_close(&in) != 0) {
            status = 1;
            continue;
        }
        out_result(t.signature, bs_opt.paths[k]);
        out_flush();
    }

    if (bs_opt.mode != MODE_SINGLE) {
        stop_workers(ws, workers);
        for (unsigned i = 0; i < workers; i++)
            add_counts(&total, &ws[i].counts);
    }
    if (bs_policy.reader_end)
        bs_policy.reader_end();
    add_counts(&total, &bs_counts);
    if (bs_opt.stats)
        print_stats(&total, workers);
    umem_destroy(bs_heap);
    return status;
}

#endif /* BLOCKSIG_H */
