/*
 * libumem_boot.so - loaded after libumem.so in LD_PRELOAD, it makes the
 * C library allocate while libumem's heap is being created: the first
 * pthread_key_create of the process (umem_create's) uses the whole malloc
 * family, and looks the real function up with dlsym, which may allocate
 * too.  The blocks it gets then are checked, and one is kept; at exit,
 * after the heap exists, the kept block is checked again, grown with
 * realloc, and freed, and another one is freed by a thread of its own.
 *
 * Prints on stderr "libumem_boot: N checks, N failed" at exit.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int checks, failed;
static unsigned char *kept, *kept_for_thread;
static int first_call_done;

static void check(int ok, const char *what)
{
    checks++;
    if (!ok) {
        failed++;
        char line[160];
        int len = snprintf(line, sizeof line, "libumem_boot: check failed: %s\n", what);
        if (len > 0) {
            ssize_t ignored = write(2, line, (size_t)len);
            (void)ignored;
        }
    }
}

static int all(const unsigned char *p, size_t n, unsigned char c)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != c)
            return 0;
    return 1;
}

/* Allocations of every kind while the caller (the allocator) is busy
 * making its heap. */
static void allocate_everything(void)
{
    unsigned char *p = malloc(100);
    check(p && (uintptr_t)p % 16 == 0, "malloc during creation");
    if (p)
        memset(p, 'a', 100);
    unsigned char *z = calloc(50, 4);
    check(z && all(z, 200, 0), "calloc during creation is zero");
    unsigned char *q = p ? realloc(p, 300) : NULL;
    check(q && all(q, 100, 'a'), "realloc during creation keeps the contents");
    if (q)
        memset(q + 100, 'b', 200);
    check(q && malloc_usable_size(q) >= 300, "malloc_usable_size during creation");
    void *a = NULL;
    check(posix_memalign(&a, 256, 10) == 0 && (uintptr_t)a % 256 == 0,
          "posix_memalign during creation");
    void *m = memalign(64, 1000);
    check(m && (uintptr_t)m % 64 == 0, "memalign during creation");
    void *zero = malloc(0);
    check(zero != NULL, "malloc(0) during creation");
    free(zero);
    free(a);
    free(m);
    free(z);
    kept = q;
    kept_for_thread = malloc(64);
    check(kept_for_thread != NULL, "a second malloc during creation");
    if (kept_for_thread)
        memset(kept_for_thread, 'c', 64);
}

int pthread_key_create(pthread_key_t *key, void (*destructor)(void *))
{
    static int (*real)(pthread_key_t *, void (*)(void *));
    if (!first_call_done) {
        first_call_done = 1;
        allocate_everything();
    }
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "pthread_key_create");
    return real ? real(key, destructor) : 11;
}

static void *free_in_thread(void *arg)
{
    unsigned char *p = arg;
    check(all(p, 64, 'c') && malloc_usable_size(p) >= 64,
          "an early block seen by a thread");
    free(p);
    return NULL;
}

__attribute__((destructor)) static void check_later(void)
{
    check(kept != NULL, "the allocations ran during creation");
    if (kept) {
        check(all(kept, 100, 'a') && all(kept + 100, 200, 'b'),
              "an early block kept its contents");
        unsigned char *grown = realloc(kept, 100000);
        check(grown && all(grown, 100, 'a') && all(grown + 100, 200, 'b'),
              "an early block grown with realloc after creation");
        if (grown)
            memset(grown, 0, 100000);
        free(grown);
    }
    if (kept_for_thread) {
        pthread_t t;
        if (pthread_create(&t, NULL, free_in_thread, kept_for_thread) == 0)
            pthread_join(t, NULL);
        else
            check(0, "pthread_create");
    }
    char line[80];
    int len = snprintf(line, sizeof line, "libumem_boot: %d checks, %d failed\n", checks,
                       failed);
    if (len > 0) {
        ssize_t ignored = write(2, line, (size_t)len);
        (void)ignored;
    }
}
