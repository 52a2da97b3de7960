/*
 * inout.h - input, output and progress (a part of blocksig.h): fatal
 * errors, whole reads and writes, the inputs, the progress line, the
 * result lines, and for -c the lists read back, the verdicts and the
 * summary.  All of it runs in the main thread (the reader); workers use
 * only write_all and read_all.
 *
 * Two things here depend on the workers, which come later: fatal() must
 * stop them before it exits, and a reader waiting on a slow input must
 * notice a worker that failed meanwhile.  The workers hand both in when
 * they start (io.stop_workers, io.wake_fd and io.check_workers), as
 * pigz's yarn.c takes its abort handler, so no call goes back up.
 */
#ifndef BLOCKSIG_H
#error "inout.h is a part of blocksig.h: include blocksig.h instead"
#endif

/* One progress line on stderr, rewritten in place (pv and zstd do the
 * same): shown when stderr is a terminal unless --no-progress, and when
 * it is not only with --progress; never before an input has taken
 * PROGRESS_DELAY_NS, so that short inputs show nothing. */
#define PROGRESS_DELAY_NS 500000000ll
#define PROGRESS_EVERY_NS 200000000ll

/* The state of input, output and progress: the main thread alone writes
 * it (a worker process has a copy it never uses). */
static struct {
    int stdin_closed;  /* fd 0 was closed at start: '-' cannot be read */
    int stdout_closed; /* fd 1 was closed at start: nothing can be written */
    int verbose;       /* -v: a line per block */
    int named;         /* several inputs: each result line names its file */
    int silent;        /* -c --status: nothing is said of a file */
    /* Set by the workers when they start (workers.h). */
    void (*stop_workers)(void);  /* fatal() calls it before it exits */
    int wake_fd;                 /* readable once a worker may have failed; -1: none */
    void (*check_workers)(void); /* empties wake_fd; ends the run if a worker failed */
    struct {
        int enabled, tty, shown;
        int64_t start, last; /* nanoseconds */
    } progress;
    /* Results go to stdout through this buffer, which only ever holds
     * whole lines and is written out whole: a run that fails part-way
     * leaves stdout ending at a line boundary, with every finished
     * file's line on it. */
    struct {
        char buf[1 << 16];
        size_t len;
    } out;
} io = {.wake_fd = -1};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct input {
    int fd;
    int is_stdin;
    const char *name;
    int sized; /* a regular file with a size to hold it to */
    off_t size, start;
    uint64_t bytes; /* read so far */
    int error;      /* errno of a failed read: the input ends there */
};

/* ---- progress ------------------------------------------------------------ */

/* What input and output take from the options, once they are parsed. */
static void io_setup(const struct options *o)
{
    io.verbose = o->verbose;
    io.named = o->npaths > 1;
    io.silent = o->check && o->status;
    io.progress.tty = isatty(2);
    /* Per-block lines on the same terminal would tear the progress line. */
    int auto_on = io.progress.tty && !(o->verbose && isatty(1));
    io.progress.enabled =
        o->progress == PROGRESS_ON || (o->progress == PROGRESS_AUTO && auto_on);
}

/* Removes the progress line (or ends it, when stderr is not a terminal). */
static void progress_clear(void)
{
    if (!io.progress.shown)
        return;
    fputs(io.progress.tty ? "\r\033[K" : "\n", stderr);
    io.progress.shown = 0;
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
    if (!io.progress.enabled)
        return;
    int64_t t = now_ns();
    if (in->bytes == 0 || t - io.progress.start < PROGRESS_DELAY_NS ||
        t - io.progress.last < PROGRESS_EVERY_NS)
        return;
    io.progress.last = t;
    double secs = (double)(t - io.progress.start) / 1e9;
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
    fputs(io.progress.tty ? "\033[K" : "", stderr);
    io.progress.shown = 1;
}

/* How long a reader waiting on its workers may sleep before the progress
 * line is due again (-1: for ever, no progress line). */
static int progress_poll_ms(void)
{
    return io.progress.enabled ? (int)(PROGRESS_EVERY_NS / 1000000) : -1;
}

/* ---- errors ------------------------------------------------------------- */

/* One line on stderr naming the cause; no child is left behind; exit 1. */
static _Noreturn void fatal(const char *fmt, ...)
{
    progress_clear();
    va_list ap;
    va_start(ap, fmt);
    complain(fmt, ap);
    va_end(ap);
    if (io.stop_workers)
        io.stop_workers();
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

/* ---- whole reads and writes --------------------------------------------- */

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

/* A closed standard descriptor would be handed out by pipe() or open()
 * and mistaken for one: each place is held with /dev/null, and what was
 * closed is remembered. */
static void hold_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        if (open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
            exit(1);
        io.stdin_closed |= fd == 0;
        io.stdout_closed |= fd == 1;
    }
}

/* For --help and --version: exit 0, or 1 with a line if stdout failed. */
static _Noreturn void exit_after_stdout(void)
{
    if (fflush(stdout) == 0 && !ferror(stdout) && !io.stdout_closed)
        exit(0);
    fprintf(stderr, "%s: write error on standard output: %s\n", cmdline.prog,
            strerror(io.stdout_closed ? EBADF : errno));
    exit(1);
}

/* ---- input -------------------------------------------------------------- */

/* A problem with one input: reported (but under -c --status), and the
 * other inputs go on. */
static int input_error(const char *name, int err, const char *what)
{
    progress_clear();
    if (!io.silent)
        fprintf(stderr, "%s: %s: %s\n", cmdline.prog, name, what ? what : strerror(err));
    return -1;
}

static int input_open(struct input *in, const char *path)
{
    memset(in, 0, sizeof *in);
    in->is_stdin = strcmp(path, "-") == 0;
    in->name = in->is_stdin ? "standard input" : path;
    if (in->is_stdin && io.stdin_closed)
        return input_error(in->name, EBADF, NULL);
    in->fd = 0;
    /* With -m, SIGCHLD interrupts an open() that waits for a FIFO's
     * writer, so that a worker's death is not missed meanwhile. */
    while (!in->is_stdin && (in->fd = open(path, O_RDONLY)) < 0 && errno == EINTR)
        if (io.check_workers)
            io.check_workers();
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
    io.progress.start = io.progress.last = now_ns();
    return 0;
}

/* Returns once fd is readable; a worker's failure seen meanwhile (on
 * io.wake_fd) ends the run. */
static void wait_readable(int fd)
{
    if (io.wake_fd < 0)
        return;
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
                              {.fd = io.wake_fd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return; /* read() will say what is wrong */
        }
        if (p[1].revents & POLLIN)
            io.check_workers();
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

static void out_flush(void)
{
    if (io.out.len > 0 && (io.stdout_closed || write_all(1, io.out.buf, io.out.len) != 0))
        fatal("write error on standard output: %s",
              strerror(io.stdout_closed ? EBADF : errno));
    io.out.len = 0;
}

static void out_line(const char *fmt, ...)
{
    if (sizeof io.out.buf - io.out.len < PATH_MAX + 64)
        out_flush();
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(io.out.buf + io.out.len, sizeof io.out.buf - io.out.len, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof io.out.buf - io.out.len) {
        io.out.len += (size_t)n;
    } else if (n > 0) { /* a line longer than the buffer: a very long name */
        out_flush();
        va_start(ap, fmt);
        vdprintf(1, fmt, ap);
        va_end(ap);
    }
}

/* One input's signature so far, and the number of its next block. */
struct tally {
    uint32_t signature;
    uint64_t next_block;
};

/* The hashes of the next chunk of an input, in order: with -v a line
 * each, and into the signature. */
static void emit_chunk(struct tally *t, const uint32_t *hashes, size_t len)
{
    for (size_t k = 0; io.verbose && k * BLOCK_BYTES < len; k++)
        out_line("Block %llu hash: %u\n", (unsigned long long)(t->next_block + k),
                 hashes[k]);
    t->next_block += (len + BLOCK_BYTES - 1) / BLOCK_BYTES;
    t->signature = chunk_fold(t->signature, hashes, len);
}

/* A name escaped as sha256sum does: a newline, a carriage return or a
 * backslash become \n, \r and \\, so that every line stays one line.
 * Returns whether anything was escaped. */
static int escape_name(char *esc, size_t size, const char *name)
{
    size_t n = 0;
    int escaped = 0;
    for (const char *c = name; *c && n + 2 < size; c++) {
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
    return escaped;
}

/* One file's line.  With several files the name follows, escaped, and a
 * line with an escaped name starts with a backslash. */
static void out_result(uint32_t signature, const char *name)
{
    if (!io.named) {
        out_line("Final signature: %u\n", signature);
        return;
    }
    char esc[2 * PATH_MAX + 1];
    int escaped = escape_name(esc, sizeof esc, name);
    out_line("%sFinal signature: %u  %s\n", escaped ? "\\" : "", signature, esc);
}

/* ---- lists of signatures (-c) -------------------------------------------- */

/* A list's line holds at most an escaped name as long as any path, and
 * the signature before it; a longer line is malformed. */
#define LIST_LINE_MAX (2 * PATH_MAX + 64)

/* A list of signatures, read a line at a time through a buffer of its own
 * rather than stdio's, so that a read a worker's SIGCHLD interrupts is
 * taken again and a worker that fails while the list is slow to come ends
 * the run (wait_readable), as with an input.  Memory stays the same
 * whatever the list's length. */
struct list {
    int fd, is_stdin;
    const char *name; /* for messages: the LIST operand, or "standard input" */
    uint64_t line_no; /* of the line in `line` */
    int error;        /* errno of a failed read: the list ends there */
    int eof;
    size_t pos, len; /* the unread bytes of buf */
    char buf[1 << 14];
    int bad; /* the line was too long or held a NUL byte */
    char line[LIST_LINE_MAX + 1];
};

/* What a list says of its own trouble: always one line, --status or not. */
static int list_error(const struct list *l, const char *what)
{
    progress_clear();
    fprintf(stderr, "%s: %s: %s\n", cmdline.prog, l->name, what);
    return -1;
}

static int list_open(struct list *l, const char *path)
{
    l->is_stdin = strcmp(path, "-") == 0;
    l->name = l->is_stdin ? "standard input" : path;
    l->line_no = 0;
    l->error = l->eof = 0;
    l->pos = l->len = 0;
    l->fd = 0;
    if (l->is_stdin && io.stdin_closed)
        return list_error(l, strerror(EBADF));
    while (!l->is_stdin && (l->fd = open(path, O_RDONLY)) < 0 && errno == EINTR)
        if (io.check_workers)
            io.check_workers();
    return l->fd < 0 ? list_error(l, strerror(errno)) : 0;
}

/* Refills the buffer; sets eof or error at the end. */
static void list_fill(struct list *l)
{
    for (;;) {
        wait_readable(l->fd);
        ssize_t r = read(l->fd, l->buf, sizeof l->buf);
        if (r < 0 && errno == EINTR)
            continue;
        l->pos = 0;
        l->len = r > 0 ? (size_t)r : 0;
        l->eof = r == 0;
        l->error = r < 0 ? errno : 0;
        return;
    }
}

/* The next line into l->line, without its newline nor a carriage return
 * before it (a list written on another system): 1, or 0 at the end of
 * the list or at a read error (kept for list_close). */
static int list_next_line(struct list *l)
{
    size_t n = 0;
    int any = 0;
    l->bad = 0;
    for (;;) {
        if (l->pos == l->len) {
            if (l->eof || l->error)
                break;
            list_fill(l);
            continue;
        }
        char c = l->buf[l->pos++];
        any = 1;
        if (c == '\n')
            break;
        l->bad |= c == '\0' || n == LIST_LINE_MAX;
        if (n < LIST_LINE_MAX)
            l->line[n++] = c;
    }
    if (n > 0 && l->line[n - 1] == '\r')
        n--;
    l->line[n] = '\0';
    l->line_no += any;
    return any;
}

/* -w: the line just read is malformed. */
static void list_warn_malformed(const struct list *l)
{
    progress_clear();
    fprintf(stderr, "%s: %s: %llu: improperly formatted signature line\n", cmdline.prog,
            l->name, (unsigned long long)l->line_no);
}

/* 0, or -1 and a message when the list could not be read to its end. */
static int list_close(struct list *l)
{
    int r = l->error ? list_error(l, strerror(l->error)) : 0;
    if (!l->is_stdin)
        close(l->fd);
    return r;
}

/* The digits at *s as a number below limit, *s moved past them: 0, or
 * -1 if there are none or the number is too large. */
static int parse_number(const char **s, uint64_t limit, uint64_t *out)
{
    uint64_t v = 0;
    const char *c = *s;
    for (; *c >= '0' && *c <= '9'; c++) {
        uint64_t d = (uint64_t)(*c - '0');
        if (v > (limit - 1 - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (c == *s)
        return -1;
    *s = c;
    *out = v;
    return 0;
}

/* Whether s starts with prefix: then *s moves past it. */
static int skip_prefix(const char **s, const char *prefix)
{
    size_t n = strlen(prefix);
    if (strncmp(*s, prefix, n) != 0)
        return 0;
    *s += n;
    return 1;
}

/* Undoes escape_name in place: 0, or -1 for a backslash it never writes. */
static int unescape_name(char *name)
{
    char *to = name;
    for (const char *c = name; *c; c++) {
        if (*c != '\\') {
            *to++ = *c;
            continue;
        }
        c++;
        if (*c != 'n' && *c != 'r' && *c != '\\')
            return -1;
        *to++ = *c == 'n' ? '\n' : *c == 'r' ? '\r' : '\\';
    }
    *to = '\0';
    return 0;
}

/* What a line of a list is. */
enum list_line { LINE_SIGNATURE, LINE_NOTHING, LINE_MALFORMED };

/* One line of a list.  A result line with a name, as out_result writes it
 * for several files, is a signature to check: its signature and its name,
 * unescaped in place in line.  Blank lines, comments (#) and the block
 * lines of -v are nothing to check.  Anything else is malformed, the
 * one-file result line too: it names no file. */
static enum list_line parse_list_line(char *line, uint32_t *signature, char **name)
{
    const char *s = line;
    uint64_t v;
    if (*s == '\0' || *s == '#')
        return LINE_NOTHING;
    if (skip_prefix(&s, "Block ") && parse_number(&s, UINT64_MAX, &v) == 0 &&
        skip_prefix(&s, " hash: ") && parse_number(&s, SIG_PRIME, &v) == 0 && *s == '\0')
        return LINE_NOTHING;
    s = line;
    int escaped = skip_prefix(&s, "\\");
    if (!skip_prefix(&s, "Final signature: ") || parse_number(&s, SIG_PRIME, &v) != 0 ||
        !skip_prefix(&s, "  ") || *s == '\0')
        return LINE_MALFORMED;
    *signature = (uint32_t)v;
    *name = line + (s - line);
    return escaped && unescape_name(*name) != 0 ? LINE_MALFORMED : LINE_SIGNATURE;
}

/* The check of one file, as sha256sum -c prints it: "NAME: OK", "NAME:
 * FAILED" or "NAME: FAILED open or read", the name escaped as in a list. */
static void out_check(const char *name, const char *verdict)
{
    char esc[2 * PATH_MAX + 1];
    int escaped = escape_name(esc, sizeof esc, name);
    out_line("%s%s: %s\n", escaped ? "\\" : "", esc, verdict);
    out_flush();
}

/* What the check of one list found, for its summary. */
struct check_counts {
    uint64_t signatures; /* well-formed signature lines */
    uint64_t malformed, unreadable, mismatched;
};

static void check_warning(uint64_t n, const char *one, const char *many)
{
    if (n > 0)
        fprintf(stderr, "%s: WARNING: %llu %s\n", cmdline.prog, (unsigned long long)n,
                n == 1 ? one : many);
}

/* The summary after a list, in sha256sum's words, on stderr. */
static void check_summary(const struct check_counts *c)
{
    progress_clear();
    check_warning(c->malformed, "line is improperly formatted",
                  "lines are improperly formatted");
    check_warning(c->unreadable, "listed file could not be read",
                  "listed files could not be read");
    check_warning(c->mismatched, "computed signature did NOT match",
                  "computed signatures did NOT match");
}
