/*
 * umem.h - a first-fit heap allocator over one mmap'd region.
 *
 * Header-only, C11 + POSIX 2008, libc and pthreads only.
 *
 *     #include "umem.h"
 *
 *     umem_t *h = umem_create(64 << 20, 0);   // 64 MiB, private, locked
 *     char *p = umem_alloc(h, 100);            // 16-byte aligned, or NULL
 *     umem_free(h, p);
 *     umem_destroy(h);
 *
 * INTERFACE
 *   umem_t *umem_create(size_t bytes, unsigned flags);
 *       Maps `bytes` (rounded up to whole pages) and builds an empty heap in
 *       it; the heap's own control block lives at the start of the region.
 *       flags: 0            private mapping, a mutex around every call;
 *              UMEM_SHARED  MAP_SHARED mapping, a process-shared robust
 *                           mutex: create before fork() and the heap serves
 *                           the parent and every child;
 *              UMEM_NOLOCK  private mapping, no locking (one thread only).
 *       NULL with errno = EINVAL for unknown flags or a size too small for
 *       the control block and one block, ENOMEM when the mapping fails
 *       (or the size could not be mapped in any address space).
 *   void umem_destroy(umem_t *h);
 *       Unmaps the region.  In a process other than the creator of a
 *       UMEM_SHARED heap it only unmaps, leaving the heap to the others.
 *   void *umem_alloc(umem_t *h, size_t n);
 *       First fit.  16-byte aligned.  NULL for n == 0, and NULL with
 *       errno = ENOMEM when no free block fits (counted in failed_allocs).
 *   void umem_free(umem_t *h, void *p);
 *       NULL is a no-op.  Merges p's block with free neighbours at once, in
 *       O(1).  A pointer umem_alloc did not return, or one already freed,
 *       prints one line naming it on stderr and calls abort().
 *   int umem_check(umem_t *h);
 *       Walks every block and the free list: 0 when every invariant below
 *       holds, else prints the first broken one on stderr and returns -1.
 *   void umem_get_stats(umem_t *h, umem_stats_t *out);
 *       A consistent snapshot of the counters in umem_stats_t.
 *
 * LOCKING AND STATISTICS
 *   Every umem_alloc and umem_free takes the heap's lock once (none with
 *   UMEM_NOLOCK).  A caller that finds the lock taken spins briefly, then
 *   naps UMEM_NAP_NS between attempts instead of queueing on the mutex:
 *   a lock taken for every allocation is best left with the thread that
 *   holds it for a burst of calls, since handing it (and the heap's cache
 *   lines) to another core on every call costs more than the calls.
 *   lock_count counts the acquisitions by alloc and free, and
 *   lock_contended the ones that found the lock taken.  umem_check and
 *   umem_get_stats take the lock as well but are not counted, so that
 *   looking at the heap does not change what is seen.  The counters live
 *   in the region and change only under the lock, so they are exact across
 *   threads and, for UMEM_SHARED, across processes.
 *
 * A PROCESS THAT DIES HOLDING THE LOCK (UMEM_SHARED)
 *   The mutex is robust: the next process to lock it is told the owner
 *   died.  The heap may have been left half-updated, so it is marked dead
 *   for good: from then on, in every process, umem_alloc returns NULL with
 *   errno = EOWNERDEAD, umem_free does nothing, umem_check returns -1 and
 *   umem_get_stats sets owner_died.  Nothing ever waits for the dead.
 *
 * BLOCK LAYOUT
 *   region:  [struct umem | pad] [block] [block] ... [block] [end mark]
 *   block:   [header: word, check][payload ..................]
 *            `word` = block size (header included, a multiple of 16,
 *            at least UMEM_MIN_BLOCK) | UMEM_USED | UMEM_PREV_USED;
 *            `check` = word ^ header address ^ the heap's secret.
 *   free block: the payload starts with the free-list links (next, prev)
 *            and its last 8 bytes (the footer) repeat the size.
 *   end mark: a header of size 0 marked used, so the last block never
 *            merges past the region.
 *   umem_alloc returns header + 16, so payloads are 16-byte aligned.
 *
 * INVARIANTS (each checked by umem_check)
 *   I1 block sizes, walked from the first block, add up exactly to the
 *      end mark; every header's check matches.
 *   I2 each block's UMEM_PREV_USED tells whether the block before it is
 *      used (the first block's is set).
 *   I3 a free block's footer equals its size.
 *   I4 no two free blocks are adjacent (frees merge at once).
 *   I5 the free list holds every free block and only those, once each,
 *      with next and prev links that agree.
 *   I6 allocs - frees = used blocks, bytes_in_use = their total size,
 *      peak_bytes_in_use >= bytes_in_use.
 *
 * HOW A FREED POINTER IS CHECKED
 *   It must lie inside the region and be 16-byte aligned; its header's
 *   check must match (user data almost never forms header + address +
 *   secret, so interior pointers fail here); the block must be marked
 *   used (else: double free); and the next header must be intact and say
 *   its predecessor is used (else something wrote past the block's end).
 *
 * LIMITS
 *   One region, fixed at creation: the heap never grows.  A free is O(1);
 *   an allocation walks the free list until the first block that fits.
 *   A private heap is copied by fork() like any memory; share it with
 *   UMEM_SHARED instead.  Define _DEFAULT_SOURCE (or compile in gcc's
 *   default gnu dialect) so that MAP_ANONYMOUS and robust mutexes are
 *   declared; this header defines it when it comes first.
 */
#ifndef UMEM_H
#define UMEM_H

#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define UMEM_SHARED 1u
#define UMEM_NOLOCK 2u

typedef struct umem umem_t;

typedef struct umem_stats {
    uint64_t lock_count;        /* lock acquisitions by alloc and free */
    uint64_t lock_contended;    /* of those, the ones that had to wait */
    uint64_t allocs;            /* successful umem_alloc calls */
    uint64_t frees;             /* umem_free calls with a non-NULL pointer */
    uint64_t failed_allocs;     /* umem_alloc calls that returned NULL, n > 0 */
    uint64_t bytes_in_use;      /* total size of used blocks, headers included */
    uint64_t peak_bytes_in_use; /* highest bytes_in_use so far */
    uint64_t heap_bytes;        /* bytes available for blocks */
    int owner_died;             /* a lock owner died: the heap is closed */
} umem_stats_t;

/* ---- implementation ---------------------------------------------------- */

#define UMEM_ALIGN     16u
#define UMEM_HEADER    16u
#define UMEM_MIN_BLOCK 48u /* header + two links + footer, rounded to 16 */
#define UMEM_USED      ((size_t)1)
#define UMEM_PREV_USED ((size_t)2)
#define UMEM_FLAGS     ((size_t)15)
#define UMEM_MAGIC     0x756d656d68656170ull /* "umemheap" */

struct umem_block {
    size_t word;
    size_t check;
};

struct umem_free_block {
    struct umem_block head;
    struct umem_free_block *next, *prev;
};

/* The fields read on every call and never written after umem_create sit
 * on their own cache line, apart from what the lock holder writes, so
 * that threads on other cores keep reading them from their own caches. */
struct umem {
    uint64_t magic;
    size_t map_bytes;
    unsigned flags;
    pid_t creator;
    size_t secret;
    char *first; /* first block header */
    char *end;   /* end mark header */
    _Alignas(64) pthread_mutex_t lock;
    int owner_died;
    struct umem_free_block *free_list;
    uint64_t lock_count, lock_contended, allocs, frees, failed_allocs;
    uint64_t bytes_in_use, peak_bytes_in_use;
};

#define UMEM_CONTROL_BYTES \
    ((sizeof(struct umem) + UMEM_ALIGN - 1) & ~(size_t)(UMEM_ALIGN - 1))

static inline size_t umem__check_of(const umem_t *h, const void *b, size_t word)
{
    return word ^ (size_t)(uintptr_t)b ^ h->secret;
}

static inline void umem__set_header(const umem_t *h, void *b, size_t word)
{
    struct umem_block *blk = (struct umem_block *)b;
    blk->word = word;
    blk->check = umem__check_of(h, b, word);
}

static inline int umem__header_ok(const umem_t *h, const void *b)
{
    const struct umem_block *blk = (const struct umem_block *)b;
    return blk->check == umem__check_of(h, b, blk->word);
}

static inline size_t umem__size(const void *b)
{
    return ((const struct umem_block *)b)->word & ~UMEM_FLAGS;
}

static inline void umem__set_footer(void *b, size_t size)
{
    memcpy((char *)b + size - sizeof(size_t), &size, sizeof size);
}

static inline size_t umem__footer_before(const void *b)
{
    size_t size;
    memcpy(&size, (const char *)b - sizeof(size_t), sizeof size);
    return size;
}

/* One line on stderr, then abort(): used for misuse and corruption. */
static inline void umem__die(const char *what, const void *p)
{
    char line[160];
    int len = snprintf(line, sizeof line, "umem: %s %p\n", what, p);
    if (len > 0) {
        ssize_t ignored = write(2, line, (size_t)len);
        (void)ignored;
    }
    abort();
}

static inline void umem__list_push(umem_t *h, struct umem_free_block *f)
{
    f->prev = NULL;
    f->next = h->free_list;
    if (f->next)
        f->next->prev = f;
    h->free_list = f;
}

static inline void umem__list_remove(umem_t *h, struct umem_free_block *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        h->free_list = f->next;
    if (f->next)
        f->next->prev = f->prev;
}

#ifndef UMEM_SPIN
#define UMEM_SPIN 2 /* spins, of 8 then 16 pauses, before napping */
#endif
#ifndef UMEM_NAP_NS
#define UMEM_NAP_NS 20000 /* a nap between attempts on a busy lock */
#endif

static inline void umem__relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Takes the lock; `counted` says whether lock_count sees it.  Returns 0
 * with the lock held, or -1 with errno set and the lock not held. */
static inline int umem__lock(umem_t *h, int counted)
{
    if (h->flags & UMEM_NOLOCK)
        return 0;
    int contended = 0;
    int r = pthread_mutex_trylock(&h->lock);
    if (r == EBUSY) {
        /* Contended: a short spin, then naps.  See LOCKING above. */
        contended = 1;
        for (unsigned attempt = 0; r == EBUSY; attempt++) {
            if (attempt < UMEM_SPIN) {
                for (unsigned k = 0; k < 8u << attempt; k++)
                    umem__relax();
            } else {
                struct timespec nap = {0, UMEM_NAP_NS};
                nanosleep(&nap, NULL);
            }
            r = pthread_mutex_trylock(&h->lock);
        }
    }
    if (r == EOWNERDEAD) {
        h->owner_died = 1;
        pthread_mutex_consistent(&h->lock);
    } else if (r != 0) {
        errno = r;
        return -1;
    }
    if (counted) {
        h->lock_count++;
        h->lock_contended += (uint64_t)contended;
    }
    if (h->owner_died) {
        pthread_mutex_unlock(&h->lock);
        errno = EOWNERDEAD;
        return -1;
    }
    return 0;
}

static inline void umem__unlock(umem_t *h)
{
    if (!(h->flags & UMEM_NOLOCK))
        pthread_mutex_unlock(&h->lock);
}

static inline umem_t *umem_create(size_t bytes, unsigned flags)
{
    if (flags & ~(UMEM_SHARED | UMEM_NOLOCK) ||
        (flags & UMEM_SHARED && flags & UMEM_NOLOCK)) {
        errno = EINVAL;
        return NULL;
    }
    long page_size = sysconf(_SC_PAGESIZE);
    size_t page = page_size > 0 ? (size_t)page_size : 4096;
    size_t least = UMEM_CONTROL_BYTES + UMEM_MIN_BLOCK + UMEM_HEADER;
    if (bytes < least) {
        errno = EINVAL;
        return NULL;
    }
    if (bytes > SIZE_MAX - page) {
        errno = ENOMEM; /* more than any address space */
        return NULL;
    }
    size_t map_bytes = (bytes + page - 1) / page * page;
    int vis = flags & UMEM_SHARED ? MAP_SHARED : MAP_PRIVATE;
    void *base =
        mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, vis | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }

    umem_t *h = (umem_t *)base;
    h->magic = UMEM_MAGIC;
    h->map_bytes = map_bytes;
    h->flags = flags;
    h->creator = getpid();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    size_t seed = (size_t)(uintptr_t)base ^ (size_t)ts.tv_nsec ^
                  ((size_t)ts.tv_sec << 20) ^ (size_t)h->creator;
    h->secret = (size_t)(seed * 0x9E3779B97F4A7C15ull) | 1u;

    if (!(flags & UMEM_NOLOCK)) {
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        if (flags & UMEM_SHARED) {
            pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
            pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        }
        int r = pthread_mutex_init(&h->lock, &attr);
        pthread_mutexattr_destroy(&attr);
        if (r != 0) {
            munmap(base, map_bytes);
            errno = r;
            return NULL;
        }
    }

    /* Blocks span [first, end); the span is a multiple of 16. */
    h->first = (char *)base + UMEM_CONTROL_BYTES;
    size_t span =
        (map_bytes - UMEM_CONTROL_BYTES - UMEM_HEADER) & ~(size_t)(UMEM_ALIGN - 1);
    h->end = h->first + span;
    umem__set_header(h, h->end, 0 | UMEM_USED);
    umem__set_header(h, h->first, span | UMEM_PREV_USED);
    umem__set_footer(h->first, span);
    h->free_list = NULL;
    umem__list_push(h, (struct umem_free_block *)h->first);
    return h;
}

static inline void umem_destroy(umem_t *h)
{
    if (!h)
        return;
    int owner = !(h->flags & UMEM_SHARED) || h->creator == getpid();
    if (owner && !(h->flags & UMEM_NOLOCK))
        pthread_mutex_destroy(&h->lock);
    munmap(h, h->map_bytes);
}

static inline void *umem_alloc(umem_t *h, size_t n)
{
    if (n == 0)
        return NULL;
    size_t span = (size_t)(h->end - h->first);
    size_t need = 0;
    if (n <= span)
        need = (n + UMEM_HEADER + UMEM_ALIGN - 1) & ~(size_t)(UMEM_ALIGN - 1);
    if (need < UMEM_MIN_BLOCK && need != 0)
        need = UMEM_MIN_BLOCK;

    if (umem__lock(h, 1) != 0)
        return NULL;
    struct umem_free_block *f = h->free_list;
    if (need != 0)
        while (f && umem__size(f) < need)
            f = f->next;
    if (!f || need == 0) {
        h->failed_allocs++;
        umem__unlock(h);
        errno = ENOMEM;
        return NULL;
    }
    if (!umem__header_ok(h, f))
        umem__die("heap corruption: free block header overwritten at", f);

    size_t size = umem__size(f);
    char *block;
    if (size - need >= UMEM_MIN_BLOCK) {
        /* Carve the tail: the free block keeps its place in the list. */
        size_t rest = size - need;
        umem__set_header(h, f, rest | (f->head.word & UMEM_PREV_USED));
        umem__set_footer(f, rest);
        block = (char *)f + rest;
        umem__set_header(h, block, need | UMEM_USED);
    } else {
        umem__list_remove(h, f);
        need = size;
        block = (char *)f;
        umem__set_header(h, block, f->head.word | UMEM_USED);
    }
    char *next = block + need;
    umem__set_header(h, next, ((struct umem_block *)next)->word | UMEM_PREV_USED);

    h->allocs++;
    h->bytes_in_use += need;
    if (h->bytes_in_use > h->peak_bytes_in_use)
        h->peak_bytes_in_use = h->bytes_in_use;
    umem__unlock(h);
    return block + UMEM_HEADER;
}

static inline void umem_free(umem_t *h, void *p)
{
    if (!p)
        return;
    char *block = (char *)p - UMEM_HEADER;
    if ((uintptr_t)p % UMEM_ALIGN != 0 || (char *)p < h->first + UMEM_HEADER ||
        block >= h->end)
        umem__die("free of a pointer outside the heap or misaligned:", p);

    if (umem__lock(h, 1) != 0)
        return;
    if (!umem__header_ok(h, block))
        umem__die("bad free (not from umem_alloc, or its header overwritten):", p);
    size_t word = ((struct umem_block *)block)->word;
    if (!(word & UMEM_USED))
        umem__die("double free of", p);
    size_t size = word & ~UMEM_FLAGS;
    char *next = block + size;
    if (size < UMEM_MIN_BLOCK || next > h->end || !umem__header_ok(h, next) ||
        !(((struct umem_block *)next)->word & UMEM_PREV_USED))
        umem__die("heap corruption: write past the end of the block at", p);

    h->frees++;
    h->bytes_in_use -= size;

    size_t next_word = ((struct umem_block *)next)->word;
    if (!(next_word & UMEM_USED)) {
        umem__list_remove(h, (struct umem_free_block *)next);
        size += next_word & ~UMEM_FLAGS;
    }
    if (!(word & UMEM_PREV_USED)) {
        size_t prev_size = umem__footer_before(block);
        char *prev = block - prev_size;
        if (prev_size < UMEM_MIN_BLOCK || prev < h->first || !umem__header_ok(h, prev) ||
            umem__size(prev) != prev_size)
            umem__die("heap corruption: free block before", p);
        /* The previous block is already on the list: grow it in place. */
        size += prev_size;
        umem__set_header(h, prev, size | UMEM_PREV_USED);
        block = prev;
    } else {
        umem__set_header(h, block, size | UMEM_PREV_USED);
        umem__list_push(h, (struct umem_free_block *)block);
    }
    umem__set_footer(block, size);
    next = block + size;
    umem__set_header(h, next, ((struct umem_block *)next)->word & ~UMEM_PREV_USED);
    umem__unlock(h);
}

static inline int umem__fail(umem_t *h, const char *what, const void *where)
{
    fprintf(stderr, "umem_check: %s (at %p)\n", what, where);
    umem__unlock(h);
    return -1;
}

static inline int umem_check(umem_t *h)
{
    if (!h || h->magic != UMEM_MAGIC) {
        fprintf(stderr, "umem_check: not a heap (at %p)\n", (void *)h);
        return -1;
    }
    if (umem__lock(h, 0) != 0) {
        fprintf(stderr, "umem_check: %s\n",
                errno == EOWNERDEAD ? "a process died holding the heap's lock"
                                    : strerror(errno));
        return -1;
    }
    uint64_t used_blocks = 0, used_bytes = 0, free_blocks = 0, free_bytes = 0;
    int prev_used = 1;
    char *b = h->first;
    while (b < h->end) {
        if (!umem__header_ok(h, b))
            return umem__fail(h, "I1: header check does not match", b);
        size_t word = ((struct umem_block *)b)->word;
        size_t size = word & ~UMEM_FLAGS;
        if (size < UMEM_MIN_BLOCK || size % UMEM_ALIGN != 0 ||
            size > (size_t)(h->end - b))
            return umem__fail(h, "I1: block size out of range", b);
        if (!!(word & UMEM_PREV_USED) != prev_used)
            return umem__fail(h, "I2: PREV_USED flag disagrees with the block before", b);
        if (word & UMEM_USED) {
            used_blocks++;
            used_bytes += size;
        } else {
            if (umem__footer_before(b + size) != size)
                return umem__fail(h, "I3: free block footer differs from its size", b);
            if (!prev_used)
                return umem__fail(h, "I4: two adjacent free blocks", b);
            free_blocks++;
            free_bytes += size;
        }
        prev_used = (word & UMEM_USED) != 0;
        b += size;
    }
    if (b != h->end || !umem__header_ok(h, h->end) || umem__size(h->end) != 0 ||
        !(((struct umem_block *)h->end)->word & UMEM_USED))
        return umem__fail(h, "I1: block sizes do not end at the end mark", b);
    if (!!(((struct umem_block *)h->end)->word & UMEM_PREV_USED) != prev_used)
        return umem__fail(h, "I2: PREV_USED flag of the end mark is wrong", b);

    uint64_t listed = 0, listed_bytes = 0;
    struct umem_free_block *prev = NULL;
    for (struct umem_free_block *f = h->free_list; f; prev = f, f = f->next) {
        if ((char *)f < h->first || (char *)f >= h->end ||
            (uintptr_t)f % UMEM_ALIGN != 0 || !umem__header_ok(h, f))
            return umem__fail(h, "I5: free list points to a non-block", f);
        if (f->head.word & UMEM_USED)
            return umem__fail(h, "I5: used block on the free list", f);
        if (f->prev != prev)
            return umem__fail(h, "I5: free list prev link is wrong", f);
        size_t size = umem__size(f);
        if (size < UMEM_MIN_BLOCK || size > (size_t)(h->end - (char *)f) ||
            umem__footer_before((char *)f + size) != size)
            return umem__fail(h, "I5: free list holds a block whose footer disagrees", f);
        listed_bytes += size;
        if (++listed > free_blocks)
            return umem__fail(h, "I5: free list longer than the free blocks (cycle?)", f);
    }
    /* As many blocks and as many bytes as the walk found free: a stale
     * header inside a larger free block, listed in its place, differs. */
    if (listed != free_blocks || listed_bytes != free_bytes)
        return umem__fail(h, "I5: the free list and the free blocks differ",
                          h->free_list);
    if (h->allocs - h->frees != used_blocks)
        return umem__fail(h, "I6: allocs - frees differs from the used blocks", h);
    if (h->bytes_in_use != used_bytes)
        return umem__fail(h, "I6: bytes_in_use differs from the used blocks", h);
    if (h->peak_bytes_in_use < h->bytes_in_use)
        return umem__fail(h, "I6: peak_bytes_in_use below bytes_in_use", h);
    umem__unlock(h);
    return 0;
}

static inline void umem_get_stats(umem_t *h, umem_stats_t *out)
{
    memset(out, 0, sizeof *out);
    int locked = umem__lock(h, 0) == 0;
    out->lock_count = h->lock_count;
    out->lock_contended = h->lock_contended;
    out->allocs = h->allocs;
    out->frees = h->frees;
    out->failed_allocs = h->failed_allocs;
    out->bytes_in_use = h->bytes_in_use;
    out->peak_bytes_in_use = h->peak_bytes_in_use;
    out->heap_bytes = (uint64_t)(h->end - h->first);
    out->owner_died = h->owner_died;
    if (locked)
        umem__unlock(h);
}

#endif /* UMEM_H */
