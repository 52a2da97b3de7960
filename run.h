/*
 * run.h - the run (a part of blocksig.h): the heap and the policy set
 * up, each input hashed in its mode (docs/design.md, "The run modes"),
 * one result line per input or, with -c, each list's files hashed in
 * turn and checked, --stats, blocksig_main.
 *
 *   run_single   the main thread reads and hashes
 *   run_feed     -t or -m on a regular file: the workers read it
 *   run_chunks   -t or -m on anything else, or under -v: the main thread
 *                (the reader) hands chunks out and emits them in order
 */
#ifndef BLOCKSIG_H
#error "run.h is a part of blocksig.h: include blocksig.h instead"
#endif

/* The run's state: the main thread alone writes it. */
static struct {
    const struct policy *policy;
    struct policy_env env; /* the heap, the mode, the window, --pool */
    unsigned workers;      /* 1 in single mode */
    int64_t start_ns;      /* when blocksig_main began, for wall_ms */
    uint64_t bytes;        /* read from every input, for mb_per_s */
    /* In run_chunks, results wait here until every earlier chunk has
     * been emitted. */
    struct {
        int ready;
        uint64_t len;
        uint32_t hashes[CHUNK_BLOCKS];
    } slot[MAX_WINDOW];
} run;

/* ---- single mode ---------------------------------------------------------- */

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

/* ---- workers reading a regular file ---------------------------------------- */

/* Waits for the sums of workers 0..use-1, folding them into t, and on the
 * self-pipe, so that an idle worker process that dies meanwhile is
 * noticed at once too; wakes for --progress.  Returns the bytes read; the
 * first read error goes to in->error. */
static uint64_t feed_collect(struct input *in, struct tally *t, unsigned use)
{
    struct pollfd pfd[MAX_WORKERS + 1];
    for (unsigned i = 0; i < use; i++)
        pfd[i] = (struct pollfd){.fd = workers_result_fd(i), .events = POLLIN};
    pfd[use] = (struct pollfd){.fd = workers_event_fd(), .events = POLLIN};
    uint64_t bytes = 0;
    for (unsigned left = use; left > 0;) {
        int ready = poll(pfd, use + 1, progress_poll_ms());
        if (ready < 0 && errno != EINTR)
            fatal("poll: %s", strerror(errno));
        in->bytes = feed_bytes();
        progress_update(in);
        if (ready > 0 && pfd[use].revents)
            workers_wake();
        for (unsigned i = 0; ready > 0 && i < use; i++) {
            if (!pfd[i].revents)
                continue;
            struct result r;
            if (workers_receive(i, &r) != MSG_FILE)
                fatal("worker %u returned a result that was not asked for", i);
            t->signature = sig_add(t->signature, r.u.sum);
            bytes += r.len;
            in->error = in->error ? in->error : r.err;
            pfd[i].fd = -1; /* answered */
            left--;
        }
    }
    return bytes;
}

/* A regular file: every worker reads chunks for itself (the feed) and
 * answers once with its sum.  The reader only waits. */
static void run_feed(struct input *in, struct tally *t)
{
    uint64_t size = (uint64_t)(in->size - in->start);
    uint64_t chunks = feed_begin(in->fd, in->start, size);
    unsigned use = chunks < run.workers ? (unsigned)chunks : run.workers;
    for (unsigned i = 0; i < use; i++) {
        struct task task = {.kind = TASK_FILE, .seq = i};
        workers_send(i, &task, in->fd);
    }
    uint64_t bytes = feed_collect(in, t, use);
    if (use > 0 && !feed_taken())
        fatal("%s", alloc_error(ENOMEM)); /* no worker had room for a buffer */
    in->bytes = bytes;
    /* Standard input read whole is left at its end, as read() leaves it;
     * after a failure, where it stood. */
    if (in->is_stdin && bytes == size)
        lseek(in->fd, in->start + (off_t)bytes, SEEK_SET);
}

/* ---- the reader handing chunks out ----------------------------------------- */

/* The chunks of one input: numbers handed out and emitted so far, the end
 * of the input, and the worker to try next. */
struct dealer {
    uint64_t next_seq, next_emit;
    int eof;
    unsigned next_worker;
};

/* Hands out chunks while the window and some worker have room: each is
 * read into a umalloc'd buffer, which the worker that hashes it frees. */
static void deal_chunks(struct input *in, struct dealer *d)
{
    unsigned n = run.workers;
    while (!d->eof && d->next_seq - d->next_emit < run.env.window) {
        unsigned k = 0;
        while (k < n && workers_outstanding(d->next_worker) >= TASKS_PER_WORKER) {
            d->next_worker = (d->next_worker + 1) % n;
            k++;
        }
        if (k == n)
            return;
        unsigned char *buf = umalloc(CHUNK_BYTES);
        if (!buf) {
            if (d->next_emit < d->next_seq)
                return; /* wait for a buffer to come back */
            fatal("%s", alloc_error(errno));
        }
        size_t len = input_read(in, buf, CHUNK_BYTES);
        d->eof = len < CHUNK_BYTES;
        if (len == 0) {
            ufree(buf);
            return;
        }
        struct task task = {
            .kind = TASK_CHUNK, .seq = d->next_seq, .buf = buf, .len = len};
        HANDOFF_SEND(buf);
        workers_send(d->next_worker, &task, -1);
        d->next_seq++;
        d->next_worker = (d->next_worker + 1) % n;
    }
}

/* Waits for results, keeps each in its slot, and emits those whose turn
 * has come, in block order. */
static void collect_chunks(struct tally *t, struct dealer *d)
{
    unsigned n = run.workers, window = run.env.window;
    struct pollfd pfd[MAX_WORKERS];
    for (unsigned i = 0; i < n; i++)
        pfd[i] = (struct pollfd){.fd = workers_result_fd(i), .events = POLLIN};
    if (poll(pfd, n, -1) < 0) {
        if (errno == EINTR)
            return;
        fatal("poll: %s", strerror(errno));
    }
    for (unsigned i = 0; i < n; i++) {
        if (!pfd[i].revents)
            continue;
        struct result r;
        if (workers_receive(i, &r) != MSG_CHUNK)
            fatal("worker %u finished before its work was done", i);
        if (r.seq < d->next_emit || r.seq >= d->next_seq)
            fatal("worker %u returned a chunk that was not asked for", i);
        run.slot[r.seq % window].ready = 1;
        run.slot[r.seq % window].len = r.len;
        memcpy(run.slot[r.seq % window].hashes, r.u.hashes, sizeof r.u.hashes);
    }
    while (d->next_emit < d->next_seq && run.slot[d->next_emit % window].ready) {
        emit_chunk(t, run.slot[d->next_emit % window].hashes,
                   run.slot[d->next_emit % window].len);
        run.slot[d->next_emit % window].ready = 0;
        d->next_emit++;
    }
}

/* Anything but a regular file, and any input under -v: the reader reads
 * it and hands chunks out, at most a window of them in flight. */
static void run_chunks(struct input *in, struct tally *t)
{
    struct dealer d = {0, 0, 0, 0};
    while (!d.eof || d.next_emit < d.next_seq) {
        deal_chunks(in, &d);
        if (d.next_emit < d.next_seq)
            collect_chunks(t, &d);
    }
}

/* ---- --stats ----------------------------------------------------------------- */

static size_t default_heap_bytes(unsigned workers, unsigned window, size_t pool_bytes)
{
    size_t need = (size_t)(window + 2) * (CHUNK_BYTES + 256) +
                  (size_t)workers * (pool_bytes + (128u << 10)) + (1u << 20);
    size_t least = (size_t)64 << 20;
    return need > least ? need : least;
}

static double timeval_ms(struct timeval tv)
{
    return (double)tv.tv_sec * 1e3 + (double)tv.tv_usec / 1e3;
}

#define STAT(name, value) \
    fprintf(stderr, "  %-18s %llu\n", name, (unsigned long long)(value))

/* The run's times: wall_ms since blocksig_main began; cpu_ms, the user
 * and system time of this process (every thread) and of its children
 * once reaped (the worker processes of -m); mb_per_s, every input's
 * bytes over the wall time. */
static void print_times(int64_t wall_ns)
{
    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    double cpu_ms = timeval_ms(self.ru_utime) + timeval_ms(self.ru_stime) +
                    timeval_ms(children.ru_utime) + timeval_ms(children.ru_stime);
    STAT("wall_ms", wall_ns / 1000000);
    STAT("cpu_ms", cpu_ms);
    fprintf(stderr, "  %-18s %.1f\n", "mb_per_s",
            wall_ns > 0 ? (double)run.bytes * 1e3 / (double)wall_ns : 0.0);
}

static void print_stats(const struct alloc_counts *c, int64_t wall_ns)
{
    umem_stats_t st;
    umem_get_stats(run.env.heap, &st);
    static const char *const mode_name[] = {"single", "threads", "processes"};
    fprintf(stderr, "%s statistics (%s, %u worker%s)\n", cmdline.prog,
            mode_name[run.env.mode], run.workers, run.workers == 1 ? "" : "s");
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
    print_times(wall_ns);
}

#undef STAT

/* ---- the whole run ------------------------------------------------------------ */

/* The heap, sized for the mode, the policy's reader hook, the workers. */
static void run_begin(const struct policy *policy)
{
    const struct options *o = &cmdline.opt;
    run.policy = policy;
    run.workers = o->mode == MODE_SINGLE ? 1 : o->workers;
    unsigned window = run.workers * TASKS_PER_WORKER;
    window = window > MAX_WINDOW ? MAX_WINDOW : window;
    size_t heap_bytes = o->heap_bytes
                            ? o->heap_bytes
                            : default_heap_bytes(run.workers, window, o->pool_bytes);
    unsigned flags = o->mode == MODE_SINGLE      ? UMEM_NOLOCK
                     : o->mode == MODE_PROCESSES ? UMEM_SHARED
                                                 : 0;
    umem_t *heap = umem_create(heap_bytes, flags);
    if (!heap)
        fatal("cannot create a heap of %zu bytes: %s", heap_bytes,
              errno == EINVAL ? "too small for one block" : strerror(errno));
    run.env = (struct policy_env){
        .heap = heap, .mode = o->mode, .window = window, .pool_bytes = o->pool_bytes};
    io_setup(o);
    if (policy->reader_begin && policy->reader_begin(&run.env) != 0)
        fatal("%s", alloc_error(errno));
    if (o->mode != MODE_SINGLE)
        workers_start(run.workers, o->mode == MODE_PROCESSES, policy, &run.env);
}

/* One input hashed in the run's mode: 0 and its signature, or -1 when
 * it could not be opened or read whole (reported). */
static int hash_file(const char *path, uint32_t *signature)
{
    struct input in;
    if (input_open(&in, path) != 0)
        return -1;
    struct tally t = {0, 0};
    if (run.env.mode == MODE_SINGLE)
        run_single(&in, &t);
    else if (in.sized && !cmdline.opt.verbose)
        run_feed(&in, &t);
    else
        run_chunks(&in, &t);
    run.bytes += in.bytes;
    *signature = t.signature;
    return input_close(&in);
}

/* One line per input; a bad input is reported and the others go on, as
 * with sha256sum.  Returns the exit status. */
static int hash_inputs(void)
{
    int status = 0;
    for (int k = 0; k < cmdline.opt.npaths; k++) {
        uint32_t signature;
        if (hash_file(cmdline.opt.paths[k], &signature) != 0) {
            status = 1;
            continue;
        }
        out_result(signature, cmdline.opt.paths[k]);
        out_flush();
    }
    return status;
}

/* ---- -c: checking lists ------------------------------------------------------ */

/* One line of a list: the file it names hashed, as every other, and its
 * verdict printed as --quiet and --status allow. */
static void check_line(struct list *l, struct check_counts *c)
{
    const struct options *o = &cmdline.opt;
    uint32_t want = 0, got = 0;
    char *name = NULL;
    enum list_line kind =
        l->bad ? LINE_MALFORMED : parse_list_line(l->line, &want, &name);
    if (kind == LINE_NOTHING)
        return;
    if (kind == LINE_MALFORMED) {
        c->malformed++;
        if (o->warn && !o->status)
            list_warn_malformed(l);
        return;
    }
    c->signatures++;
    const char *verdict = NULL;
    if (hash_file(name, &got) != 0) {
        c->unreadable++;
        verdict = "FAILED open or read";
    } else if (got != want) {
        c->mismatched++;
        verdict = "FAILED";
    } else if (!o->quiet) {
        verdict = "OK";
    }
    if (verdict && !o->status)
        out_check(name, verdict);
}

/* One list, a file at a time: 0 when every file it names matched, else 1. */
static int check_list(const char *path)
{
    static struct list l; /* the main thread's alone, and large */
    if (list_open(&l, path) != 0)
        return 1;
    struct check_counts c = {0, 0, 0, 0};
    while (list_next_line(&l))
        check_line(&l, &c);
    int failed = list_close(&l) != 0;
    if (c.signatures == 0 && !failed) {
        list_error(&l, "no properly formatted signature lines found");
        return 1;
    }
    if (!cmdline.opt.status)
        check_summary(&c);
    return failed || c.unreadable || c.mismatched || (cmdline.opt.strict && c.malformed);
}

/* -c: every list in turn.  Returns the exit status. */
static int check_lists(void)
{
    int status = 0;
    for (int k = 0; k < cmdline.opt.npaths; k++)
        status |= check_list(cmdline.opt.paths[k]);
    return status;
}

/* The workers stopped, everyone's counts added up, --stats, the heap gone. */
static void run_end(void)
{
    struct alloc_counts total = {0}, reader = {0};
    if (run.env.mode != MODE_SINGLE)
        workers_stop(&total);
    if (run.policy->reader_end)
        run.policy->reader_end(&reader);
    add_counts(&total, &reader);
    if (cmdline.opt.stats)
        print_stats(&total, now_ns() - run.start_ns);
    umem_destroy(run.env.heap);
}

static int blocksig_main(int argc, char **argv, const struct policy *policy)
{
    run.start_ns = now_ns();
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    cmdline.prog = slash ? slash + 1 : argc > 0 ? argv[0] : cmdline.prog;
    hold_std_fds();
    /* An unwritable stdout or a worker's closed pipe is an error to report
     * (EPIPE), not a silent death by SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    switch (parse_options(argc, argv, policy->private_memory)) {
    case CMDLINE_HELP:
        usage(stdout);
        exit_after_stdout();
    case CMDLINE_VERSION:
        printf("%s %s\n", cmdline.prog, VERSION);
        exit_after_stdout();
    case CMDLINE_RUN:
        break;
    }
    run_begin(policy);
    int status = cmdline.opt.check ? check_lists() : hash_inputs();
    run_end();
    return status;
}
