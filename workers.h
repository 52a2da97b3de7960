/*
 * workers.h - the workers (a part of blocksig.h): threads for -t,
 * processes for -m.  Everything that differs between the two is in this
 * file, behind one interface (pigz's yarn.c keeps every pthread call in
 * one module the same way); the reader (run.h) sees only
 *
 *   workers_start(n, processes, policy, env)  start n workers
 *   workers_send(i, task, file)               give worker i a task
 *   workers_receive(i, result)                take its next message
 *   workers_result_fd(i), workers_outstanding(i), workers_event_fd(),
 *   workers_wake()                            what the reader polls
 *   feed_begin, feed_bytes, feed_taken        a file the workers read
 *   workers_stop(total)                       end them after the run
 *   workers_kill()                            end them on an error
 *
 * A worker does the same either way (worker_loop): it takes tasks from
 * its task socket and answers on its result pipe, until the socket ends.
 * docs/design.md ("The run modes") tells how the reader and its workers
 * use these channels, and how a death on either side shows.
 */
#ifndef BLOCKSIG_H
#error "workers.h is a part of blocksig.h: include blocksig.h instead"
#endif

/* TASK_CHUNK: hash buf[0..len), chunk number seq, and free buf.
 * TASK_FILE: take chunks of the file that the feed describes until none
 * is left (a worker process gets the file itself along with the task). */
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
 * read (0: none); MSG_DONE ends a worker's run with its counts; MSG_ERROR
 * says why a worker gives up. */
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
 * fills in the plain fields before it sends TASK_FILE; the atomics are
 * written by the workers (and reset by the reader between files).  It
 * lives in MAP_SHARED memory made before any fork(). */
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

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2 &&
                   ATOMIC_INT_LOCK_FREE == 2,
               "the feed's atomics must be lock-free to work across processes");

/* One write() of at most PIPE_BUF bytes to a pipe is atomic, so the
 * reader never sees half a result, even from a worker that dies. */
_Static_assert(sizeof(struct result) <= PIPE_BUF, "a result fits one pipe write");

/* One worker, as the main thread sees it; the main thread writes every
 * field but thread_err. */
struct worker {
    int task_fd;                /* the reader's end: tasks go out; -1 once closed */
    int result_fd;              /* the reader's end: results come in */
    int own_fds[2];             /* the worker's ends: task in, result out */
    unsigned outstanding;       /* tasks sent and not yet answered */
    int done;                   /* its MSG_DONE has come */
    pid_t pid;                  /* a worker process; 0 for a thread */
    pthread_t thread;           /* a worker thread */
    int reaped;                 /* a process waited for */
    int thread_running;         /* a thread to join */
    _Atomic int thread_err;     /* written by a worker thread that fails */
    struct alloc_counts counts; /* from its MSG_DONE */
};

/* The workers' state.  The main thread writes it, at start unless said
 * otherwise; a worker process has a copy, of which it uses only its own
 * channel ends, the policy and the feed. */
static struct {
    struct worker w[MAX_WORKERS];
    unsigned n;        /* started (0 in a worker process: none to kill) */
    int processes;     /* -m */
    int events[2];     /* the self-pipe: worker threads and the SIGCHLD
                          handler write, the main thread reads */
    struct feed *feed; /* shared; see struct feed for its writers */
    const struct policy *policy;
    struct policy_env env;
} workers = {.events = {-1, -1}};

static void add_counts(struct alloc_counts *sum, const struct alloc_counts *c)
{
    sum->umallocs += c->umallocs;
    sum->ufrees += c->ufrees;
    sum->pool_hits += c->pool_hits;
    sum->pool_fallbacks += c->pool_fallbacks;
    sum->pool_resets += c->pool_resets;
    sum->remote_frees += c->remote_frees;
}

/* ---- the channels --------------------------------------------------------- */

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
    if ((size_t)n < sizeof *t && read_all(sock, (char *)t + n, sizeof *t - (size_t)n) !=
                                     (ssize_t)(sizeof *t - (size_t)n))
        return -1;
    return (ssize_t)sizeof *t;
}

/* ---- what a worker does ------------------------------------------------- */

/* Whether the reader has gone, or given up: during a feed it sends
 * nothing, so anything to read on the task channel (an end of file) says
 * so.  Without this a worker process would read on to the end of the file
 * after the reader was killed. */
static int reader_gone(int task_fd)
{
    struct pollfd p = {.fd = task_fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

/* Reads want bytes of the feed's file at offset at (from its start) into
 * buf: 0, or -1 for a read that failed (its errno in r->err) or came up
 * short (r->err 0: the file shrank). */
static int feed_read(int fd, unsigned char *buf, uint64_t at, size_t want,
                     struct result *r)
{
    size_t got = 0;
    while (got < want) {
        ssize_t n =
            pread(fd, buf + got, want - got, workers.feed->start + (off_t)(at + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r->err = n < 0 ? errno : 0;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Takes chunks of the feed from fd until none is left, into r (MSG_FILE:
 * sum, bytes, err).  Returns 0, or -1 with errno set when hashing could
 * not allocate.  A chunk read short or not at all is not counted, and
 * tells every worker to stop.  A worker that cannot get a buffer to read
 * into (a tight --heap) takes no chunk and leaves the file to the others
 * (the reader fails the run if none got one: feed_taken). */
static int feed_work(int fd, int task_fd, struct result *r)
{
    struct feed *f = workers.feed;
    uint32_t hashes[CHUNK_BLOCKS];
    uint32_t sum = 0;
    uint64_t bytes = 0;
    int failed = 0;
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
        if (feed_read(fd, buf, at, want, r) != 0 ||
            (failed = chunk_signature(buf, want, hashes) != 0)) {
            atomic_store_explicit(&f->stop, 1, memory_order_relaxed);
            break;
        }
        sum = chunk_fold(sum, hashes, want);
        bytes += want;
        atomic_fetch_add_explicit(&f->bytes, want, memory_order_relaxed);
        if (reader_gone(task_fd))
            break;
    }
    int saved = errno;
    ufree(buf);
    errno = saved;
    r->len = bytes;
    r->u.sum = sum;
    return failed ? -1 : 0;
}

/* One task: 0 with its answer in r, or -1 with errno set when it failed.
 * fd is a file that came with the task, or -1. */
static int worker_task(const struct task *t, int fd, int task_fd, struct result *r)
{
    r->seq = t->seq;
    if (t->kind == TASK_FILE) {
        HANDOFF_RECEIVE(workers.feed);
        /* A process without the file (it could not take another
         * descriptor) must not read the reader's number for it. */
        int file = fd >= 0 ? fd : workers.processes ? -1 : workers.feed->fd;
        errno = EMFILE;
        return file < 0 || feed_work(file, task_fd, r) != 0 ? -1 : 0;
    }
    HANDOFF_RECEIVE(t->buf);
    r->kind = MSG_CHUNK;
    r->len = t->len;
    int failed = chunk_signature(t->buf, t->len, r->u.hashes) != 0;
    int saved = errno;
    ufree(t->buf);
    errno = saved;
    return failed ? -1 : 0;
}

/* Returns 0 after a clean end (MSG_DONE sent), the errno of a failure
 * (sent as MSG_ERROR), or -1 when the reader has gone. */
static int worker_loop(int task_fd, int result_fd)
{
    const struct policy *p = workers.policy;
    struct result r;
    memset(&r, 0, sizeof r);
    if (p->worker_begin && p->worker_begin(&workers.env) != 0) {
        r.kind = MSG_ERROR;
        r.err = errno;
        write_all(result_fd, &r, sizeof r);
        return r.err;
    }
    struct task t;
    int fd = -1;
    while (task_receive(task_fd, &t, &fd) == (ssize_t)sizeof t) {
        int failed = worker_task(&t, fd, task_fd, &r) != 0;
        int err = errno;
        if (fd >= 0)
            close(fd);
        fd = -1;
        if (failed) {
            r.kind = MSG_ERROR;
            r.err = err;
        }
        if (write_all(result_fd, &r, sizeof r) != 0)
            return -1;
        if (failed)
            return r.err;
    }
    struct alloc_counts counts = {0};
    if (p->worker_end)
        p->worker_end(&counts);
    r.kind = MSG_DONE;
    r.u.counts = counts;
    return write_all(result_fd, &r, sizeof r) != 0 ? -1 : 0;
}

/* ---- threads and processes ---------------------------------------------- */

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    int err = worker_loop(w->own_fds[0], w->own_fds[1]);
    if (err > 0) { /* wake a reader that waits on its input */
        atomic_store(&w->thread_err, err);
        char c = 0;
        ssize_t n = write(workers.events[1], &c, 1);
        (void)n;
    }
    close(w->own_fds[0]);
    close(w->own_fds[1]);
    return NULL;
}

/* In a new worker process i: keeps only its own channel ends, so that the
 * reader's death is an end of file here and a sibling's death is one
 * there, and works until the reader is done with it. */
static _Noreturn void worker_process(unsigned i)
{
    for (unsigned k = 0; k <= i; k++) {
        close(workers.w[k].task_fd);
        close(workers.w[k].result_fd);
    }
    close(workers.events[0]);
    close(workers.events[1]);
    workers.n = 0; /* never this process's to kill or join */
    _exit(worker_loop(workers.w[i].own_fds[0], workers.w[i].own_fds[1]) != 0);
}

static void worker_launch(unsigned i)
{
    struct worker *w = &workers.w[i];
    int task[2], result[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, task) != 0 || pipe(result) != 0)
        fatal("cannot create the channels to worker %u: %s", i, strerror(errno));
    *w = (struct worker){
        .task_fd = task[1], .result_fd = result[0], .own_fds = {task[0], result[1]}};
    if (!workers.processes) {
        int e = pthread_create(&w->thread, NULL, worker_thread, w);
        if (e != 0)
            fatal("cannot start worker thread %u: %s", i, strerror(e));
        w->thread_running = 1;
        return;
    }
    w->pid = fork();
    if (w->pid < 0)
        fatal("cannot start worker process %u: %s", i, strerror(errno));
    if (w->pid == 0)
        worker_process(i);
    close(task[0]);
    close(result[1]);
}

/* Waits for a worker process; returns its status. */
static int reap(struct worker *w)
{
    int status = 0;
    while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
        ;
    w->reaped = 1;
    return status;
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
static void workers_check(void)
{
    for (unsigned i = 0; i < workers.n; i++) {
        struct worker *w = &workers.w[i];
        int status, err;
        if (w->pid > 0 && !w->reaped && waitpid(w->pid, &status, WNOHANG) > 0)
            worker_died(i, w, status);
        if (w->pid == 0 && (err = atomic_load(&w->thread_err)) != 0)
            fatal("worker %u: %s", i, alloc_error(err));
    }
}

/* The self-pipe was readable: empties it, then ends the run if a worker
 * has failed. */
static void workers_wake(void)
{
    char drain[64];
    while (read(workers.events[0], drain, sizeof drain) > 0)
        ;
    workers_check();
}

static void on_sigchld(int sig)
{
    (void)sig;
    int saved = errno;
    char c = 0;
    ssize_t w = write(workers.events[1], &c, 1); /* full pipe: already told */
    (void)w;
    errno = saved;
}

/* On an error: worker processes are killed and reaped, so none is left
 * behind; worker threads are told to stop (their task sockets closed) and
 * joined, each finishing at most the chunk it holds. */
static void workers_kill(void)
{
    if (workers.feed)
        atomic_store(&workers.feed->stop, 1);
    for (unsigned i = 0; i < workers.n; i++) {
        struct worker *w = &workers.w[i];
        if (w->pid > 0 && !w->reaped)
            kill(w->pid, SIGKILL);
        if (w->thread_running && w->task_fd >= 0) {
            close(w->task_fd);
            w->task_fd = -1;
        }
    }
    for (unsigned i = 0; i < workers.n; i++) {
        struct worker *w = &workers.w[i];
        if (w->pid > 0 && !w->reaped)
            reap(w);
        if (w->thread_running) {
            pthread_join(w->thread, NULL);
            w->thread_running = 0;
        }
    }
}

/* ---- the interface -------------------------------------------------------- */

/* Starts n workers, threads or processes, which run the policy's worker
 * hooks with env; from here on fatal() stops them, and a reader waiting
 * on its input notices one that fails. */
static void workers_start(unsigned n, int processes, const struct policy *policy,
                          const struct policy_env *env)
{
    workers.n = n;
    workers.processes = processes;
    workers.policy = policy;
    workers.env = *env;
    io.stop_workers = workers_kill;
    if (pipe(workers.events) != 0)
        fatal("cannot create a pipe: %s", strerror(errno));
    for (int k = 0; k < 2; k++)
        fcntl(workers.events[k], F_SETFL, O_NONBLOCK);
    io.wake_fd = workers.events[0];
    io.check_workers = workers_wake;
    workers.feed = mmap(NULL, sizeof *workers.feed, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (workers.feed == MAP_FAILED) {
        workers.feed = NULL;
        fatal("cannot map %zu bytes: %s", sizeof *workers.feed, strerror(errno));
    }
    if (processes) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigchld; /* no SA_RESTART: see input_open */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGCHLD, &sa, NULL);
    }
    for (unsigned i = 0; i < n; i++)
        worker_launch(i);
}

/* Reads one message from worker i; returns its kind.  A worker that is
 * gone, or that failed, ends the run with its reason. */
static uint32_t workers_receive(unsigned i, struct result *r)
{
    struct worker *w = &workers.w[i];
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

/* Gives worker i a task; file >= 0 (with TASK_FILE) goes along to a
 * worker process, while a thread reads the file through the feed.  A
 * worker that no longer takes tasks has failed: its reason ends the run. */
static void workers_send(unsigned i, const struct task *t, int file)
{
    struct worker *w = &workers.w[i];
    if (task_send(w->task_fd, t, w->pid > 0 ? file : -1) != 0) {
        struct result r;
        workers_receive(i, &r); /* says why the worker is gone */
        fatal("worker %u stopped taking work", i);
    }
    w->outstanding++;
}

static int workers_result_fd(unsigned i)
{
    return workers.w[i].result_fd;
}

/* Tasks sent to worker i and not yet answered. */
static unsigned workers_outstanding(unsigned i)
{
    return workers.w[i].outstanding;
}

/* Readable when a worker may have failed: then call workers_wake(). */
static int workers_event_fd(void)
{
    return workers.events[0];
}

/* Readies the feed for the size bytes of fd from offset start, before
 * TASK_FILE goes out; returns its number of chunks. */
static uint64_t feed_begin(int fd, off_t start, uint64_t size)
{
    struct feed *f = workers.feed;
    atomic_store(&f->next, 0);
    atomic_store(&f->bytes, 0);
    atomic_store(&f->stop, 0);
    atomic_store(&f->working, 0);
    f->fd = fd;
    f->start = start;
    f->size = size;
    f->chunks = (size + CHUNK_BYTES - 1) / CHUNK_BYTES;
    HANDOFF_SEND(f);
    return f->chunks;
}

/* Bytes of the feed read so far. */
static uint64_t feed_bytes(void)
{
    return atomic_load_explicit(&workers.feed->bytes, memory_order_relaxed);
}

/* Whether any worker had room for a buffer to read the feed into. */
static int feed_taken(void)
{
    return atomic_load(&workers.feed->working) != 0;
}

/* After the run: closes the task sockets, so that each worker ends, adds
 * up their counts into *total, and joins or reaps each. */
static void workers_stop(struct alloc_counts *total)
{
    for (unsigned i = 0; i < workers.n; i++) {
        close(workers.w[i].task_fd);
        workers.w[i].task_fd = -1;
    }
    for (unsigned i = 0; i < workers.n; i++) {
        struct worker *w = &workers.w[i];
        struct result r;
        while (!w->done)
            if (workers_receive(i, &r) == MSG_CHUNK)
                fatal("worker %u sent a result after the end", i);
        if (w->pid > 0) {
            int status = reap(w);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fatal("worker process %u (pid %d) failed at exit", i, (int)w->pid);
        } else {
            pthread_join(w->thread, NULL);
            w->thread_running = 0;
        }
        close(w->result_fd);
        add_counts(total, &w->counts);
    }
}
