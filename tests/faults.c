/*
 * faults.so - fault injection for the end-to-end tests, loaded with
 * LD_PRELOAD so that the programs carry no test code.  FAULT selects one:
 *
 *   FAULT=die-holding-lock:N   a worker process (any process but the one
 *                              that loaded this first) kills itself with
 *                              SIGKILL right after its Nth acquisition of
 *                              a mutex, i.e. while it holds the heap's lock
 *   FAULT=shrink:PATH          after the first read() or pread() of a
 *                              regular file that returns data, PATH is
 *                              truncated to half its size
 *   FAULT=grow:PATH            after the first read() or pread() of a
 *                              regular file that returns data, 1 KiB is
 *                              appended to PATH
 *   FAULT=eio                  the second read() or pread() of a regular
 *                              file fails with EIO, as from a failing disk
 *   FAULT=slow:MS              every read() or pread() of a regular file
 *                              takes MS milliseconds longer, as from a
 *                              slow disk
 *   FAULT=hold:N:PATH          every read() or pread() of a regular file
 *                              after the Nth waits until PATH exists, as
 *                              from a disk that stalls until the test
 *                              lets it go on
 *   FAULT=unmap-fails          every munmap(), madvise() and mremap()
 *                              fails with ENOMEM, as munmap does when a
 *                              process has as many mappings as it may
 *
 * Counts are per process: with -m, each worker's own.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static pid_t first_pid;
static long die_after;
static const char *shrink_path, *grow_path;
static int eio;
static long slow_ms;
static long hold_after;
static const char *hold_path;
static int unmap_fails;

__attribute__((constructor)) static void faults_init(void)
{
    first_pid = getpid();
    const char *f = getenv("FAULT");
    if (!f)
        return;
    if (strncmp(f, "die-holding-lock:", 17) == 0)
        die_after = atol(f + 17);
    else if (strncmp(f, "shrink:", 7) == 0)
        shrink_path = f + 7;
    else if (strncmp(f, "grow:", 5) == 0)
        grow_path = f + 5;
    else if (strcmp(f, "eio") == 0)
        eio = 1;
    else if (strncmp(f, "slow:", 5) == 0)
        slow_ms = atol(f + 5);
    else if (strncmp(f, "hold:", 5) == 0 && strchr(f + 5, ':')) {
        hold_after = atol(f + 5);
        hold_path = strchr(f + 5, ':') + 1;
    } else if (strcmp(f, "unmap-fails") == 0)
        unmap_fails = 1;
}

int munmap(void *p, size_t n)
{
    static int (*real)(void *, size_t);
    if (!real)
        real = (int (*)(void *, size_t))dlsym(RTLD_NEXT, "munmap");
    if (unmap_fails) {
        errno = ENOMEM;
        return -1;
    }
    return real(p, n);
}

int madvise(void *p, size_t n, int advice)
{
    static int (*real)(void *, size_t, int);
    if (!real)
        real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "madvise");
    if (unmap_fails) {
        errno = ENOMEM;
        return -1;
    }
    return real(p, n, advice);
}

void *mremap(void *p, size_t old_size, size_t new_size, int flags, ...)
{
    static void *(*real)(void *, size_t, size_t, int, ...);
    if (!real)
        real = (void *(*)(void *, size_t, size_t, int, ...))dlsym(RTLD_NEXT, "mremap");
    if (unmap_fails) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *at = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        at = va_arg(ap, void *);
        va_end(ap);
    }
    return real(p, old_size, new_size, flags, at);
}

static void after_lock(int r)
{
    static __thread long taken;
    if (r == 0 && die_after > 0 && getpid() != first_pid && ++taken == die_after)
        kill(getpid(), SIGKILL);
}

int pthread_mutex_trylock(pthread_mutex_t *m)
{
    static int (*real)(pthread_mutex_t *);
    if (!real)
        real = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_trylock");
    int r = real(m);
    after_lock(r);
    return r;
}

int pthread_mutex_lock(pthread_mutex_t *m)
{
    static int (*real)(pthread_mutex_t *);
    if (!real)
        real = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
    int r = real(m);
    after_lock(r);
    return r;
}

/* What read() and pread() share: the count of reads of regular files
 * (FAULT=eio, FAULT=hold) and the one change of size (FAULT=shrink or
 * grow).  Worker threads read at once, so both are atomic. */
static atomic_int file_reads, resized;

/* Before a read of fd: -1 when this read is to fail, else whether fd is
 * a regular file (its status in *st). */
static int before_read(int fd, struct stat *st)
{
    int regular = fstat(fd, st) == 0 && S_ISREG(st->st_mode);
    if (slow_ms > 0 && regular) {
        struct timespec nap = {slow_ms / 1000, slow_ms % 1000 * 1000000};
        while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
            ;
    }
    if (eio && regular && atomic_fetch_add(&file_reads, 1) + 1 == 2) {
        errno = EIO;
        return -1;
    }
    if (hold_path && regular && atomic_fetch_add(&file_reads, 1) >= hold_after) {
        struct timespec nap = {0, 10 * 1000000};
        while (access(hold_path, F_OK) != 0)
            nanosleep(&nap, NULL);
    }
    return regular;
}

static void after_read(ssize_t r, int regular, const struct stat *st)
{
    if (r <= 0 || !regular || !(shrink_path || grow_path) || atomic_exchange(&resized, 1))
        return;
    if (shrink_path && truncate(shrink_path, st->st_size / 2) != 0)
        abort();
    if (grow_path) {
        static const char more[1024];
        int fd = open(grow_path, O_WRONLY | O_APPEND);
        if (fd < 0 || write(fd, more, sizeof more) != (ssize_t)sizeof more)
            abort();
        close(fd);
    }
}

ssize_t read(int fd, void *buf, size_t n)
{
    static ssize_t (*real)(int, void *, size_t);
    if (!real)
        real = (ssize_t(*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    struct stat st;
    int regular = before_read(fd, &st);
    if (regular < 0)
        return -1;
    ssize_t r = real(fd, buf, n);
    after_read(r, regular, &st);
    return r;
}

ssize_t pread(int fd, void *buf, size_t n, off_t at)
{
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (!real)
        real = (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread");
    struct stat st;
    int regular = before_read(fd, &st);
    if (regular < 0)
        return -1;
    ssize_t r = real(fd, buf, n, at);
    after_read(r, regular, &st);
    return r;
}
