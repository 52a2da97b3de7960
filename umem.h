/*
 * umem.h - a first-fit heap allocator over mmap'd regions.
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
 *              UMEM_NOLOCK  private mapping, no locking (one thread only);
 *              UMEM_GROW    `bytes` is only the starting size: the heap maps
 *                           more when nothing fits (see GROWTH);
 *              UMEM_CACHED  a cache per thread in front of the lock (see
 *                           CACHES).
 *       UMEM_GROW and UMEM_CACHED combine with each other and GROW with
 *       NOLOCK.  Refused with EINVAL: SHARED with NOLOCK, with GROW (a
 *       mapping added after fork() would exist in one process only) or
 *       with CACHED (a cache lives in one process's memory); NOLOCK with
 *       CACHED (one thread needs no cache in front of a lock it lacks).
 *       NULL with errno = EINVAL for those, unknown flags or a size too
 *       small for the control block and one block; ENOMEM when the mapping
 *       fails (or the size could not be mapped in any address space).
 *   void umem_destroy(umem_t *h);
 *       Unmaps the heap's every mapping.  In a process other than the
 *       creator of a UMEM_SHARED heap it only unmaps, leaving the heap to
 *       the others; the creator's destroys the mutex, so it comes last.
 *       No other thread may be using the heap, or exit while it is
 *       destroyed (its cache would go back to a heap being unmapped).
 *   void *umem_alloc(umem_t *h, size_t n);
 *       16-byte aligned.  NULL for n == 0, and NULL with errno = ENOMEM
 *       when nothing fits (counted in failed_allocs).
 *   void umem_free(umem_t *h, void *p);
 *       NULL is a no-op.  Merges p's block with free neighbours at once.
 *       A pointer umem_alloc did not return, or one already freed, prints
 *       one line naming it on stderr and calls abort().
 *   void *umem_realloc(umem_t *h, void *p, size_t n);
 *       NULL p: umem_alloc.  n == 0: frees p, returns NULL.  Otherwise
 *       grows the block in place into a free block after it, or shrinks it
 *       in place, else moves it; the contents are kept up to the smaller
 *       size.  NULL with errno = ENOMEM leaves p as it was.  On a
 *       UMEM_CACHED heap a block that still fits, wasting less than half,
 *       stays where it is without the lock.
 *   void *umem_memalign(umem_t *h, size_t align, size_t n);
 *       A block aligned to `align`, a power of two (else NULL, EINVAL);
 *       freed by umem_free.
 *   size_t umem_usable_size(umem_t *h, const void *p);
 *       The bytes the caller may use at p, at least what it asked for;
 *       0 for NULL.
 *   int umem_check(umem_t *h);
 *       Walks every block, list, tree and mapping: 0 when every invariant
 *       below holds, else prints the first broken one on stderr and
 *       returns -1.
 *   void umem_get_stats(umem_t *h, umem_stats_t *out);
 *       A snapshot of the counters in umem_stats_t.
 *
 * THE POLICY: SEGREGATED FIRST FIT
 *   Free blocks of up to UMEM_SMALL_MAX (1,056) bytes sit on one list per
 *   exact size (48, 64, ... bytes; a block is its header plus the payload
 *   rounded up to 16).  A request takes the first block of the first
 *   non-empty list that fits, found through a 64-bit map of the non-empty
 *   lists in O(1): with exact sizes the first list that fits is the
 *   smallest fit.  Larger free blocks, and small requests when no list
 *   fits, use address-ordered first fit: the lowest-addressed large free
 *   block that fits, found in O(log n) through an AVL tree of the large
 *   free blocks by address in which each node knows the largest block
 *   below it (Stephenson's "fast fits"): go left while the left subtree
 *   holds a fit.  A block is carved from the low end of the one it comes
 *   from; the rest goes back as a free block.  A free merges the block
 *   with free neighbours at once, in O(1) through boundary tags (plus
 *   O(log n) when a large block enters or leaves the tree).  Worst case
 *   per call: O(log n) in the number of large free blocks, but for the
 *   free that starts a purge (UMEM_GROW, below), which walks the large
 *   free blocks of two pages or more: its cost is spread over the eighth
 *   of the heap freed since the last one.
 *
 * LOCKING AND STATISTICS
 *   Every umem_alloc, umem_free, umem_realloc and umem_memalign that the
 *   heap serves takes its lock once (none with UMEM_NOLOCK).  A caller
 *   that finds the lock taken spins briefly, then naps UMEM_NAP_NS between
 *   attempts instead of queueing on the mutex: a lock taken for every
 *   allocation is best left with the thread that holds it for a burst of
 *   calls, since handing it (and the heap's cache lines) to another core
 *   on every call costs more than the calls.  On a UMEM_CACHED heap,
 *   whose lock is taken rarely and briefly, a caller that finds it taken
 *   queues on the mutex after its spins instead, to be woken as soon as
 *   it is free.  lock_count counts the
 *   acquisitions by those calls (a cache's refill or flush is one), and
 *   lock_contended the ones that found the lock taken.  umem_check,
 *   umem_get_stats and umem_usable_size take the lock as well but are not
 *   counted, so that looking at the heap does not change what is seen;
 *   nor are the two a thread's cache takes to be set up and given back.
 *   The heap's counters live in the region and change only under the lock,
 *   so they are exact across threads and, for UMEM_SHARED, across
 *   processes.
 *
 * CACHES (UMEM_CACHED)
 *   Each thread gets, on its first call, a cache (one page, mapped for it)
 *   holding about UMEM_CACHE_BIN (32) blocks per small size and about
 *   UMEM_CACHE_BYTES (256 KiB) in all.  An allocation of up to 1,040
 *   bytes pops a block from its list and a free pushes one: no lock and
 *   no atomic read-modify-write.  An empty list is refilled with up to
 *   UMEM_CACHE_REFILL (2) blocks under one lock; a full list gives half
 *   back under one lock (a flush), and a cache over its bytes gives back
 *   half of every list.  When the heap has no room for a refill, the
 *   thread's own cached blocks go back first (other threads' caches
 *   cannot be reached without stopping them: a fixed-size cached heap can
 *   say ENOMEM while they hold free blocks).  Any thread may free any
 *   block: it goes to the freeing thread's cache.  A free into a cache
 *   recognises blocks of the first region and of the next
 *   UMEM_FAST_REGIONS (16) without the lock; a block elsewhere, or over
 *   1,040 bytes, is freed through the lock.  When a thread exits, its cache goes
 *   back to the heap and is unmapped (a pthread key destructor); calls the
 *   thread makes after that go to the lock.  A cached block counts as in
 *   use for the heap (umem_check sees it used; peak_bytes_in_use includes
 *   it) and as cached_bytes, not bytes_in_use, in umem_get_stats.  The
 *   caches' counters are read without stopping their threads: exact when
 *   those threads are quiet.  Limits: one pthread key per heap (at most
 *   PTHREAD_KEYS_MAX cached heaps at a time).
 *
 * GROWTH (UMEM_GROW)
 *   The heap sets aside UMEM_RESERVE (64 GiB) of address space, or as much
 *   as the system allows, and commits it with mprotect as it grows (at
 *   least 1 MiB or half the heap at a time).  When that is used up, it
 *   maps further regions.  Requests of UMEM_LARGE (1 MiB) or more (for
 *   umem_memalign, when the size plus the alignment are) get a mapping of
 *   their own, unmapped when freed; where that mapping fails they come
 *   from the regions.  A block that umem_realloc grows in place stays
 *   where it is, whatever its size; a large block it shrinks keeps its
 *   whole mapping (umem_usable_size says so) unless it shrinks to half or
 *   less, when it moves to a block of the new size.  After an eighth of the
 *   heap (at least UMEM_PURGE_MIN, 4 MiB) has been freed since the last
 *   time, the whole pages inside large free blocks go back to the system
 *   with madvise(MADV_DONTNEED), so the resident size falls after a
 *   program frees.  A block whose pages went back is marked so
 *   (UMEM_RELEASED) until it changes; released_bytes adds up every
 *   madvise, so pages given back, reused and given back again count
 *   again.  Nothing is ever unmapped but large blocks: the
 *   address space of a grown heap stays until umem_destroy.
 *
 * FORK
 *   pthread_atfork handlers, registered once per process (see LIMITS),
 *   hold the lock of every private locked heap across fork(), so a child
 *   of a threaded process finds each heap whole, with its lock free, and
 *   may allocate.
 *   The caches of the parent's other threads stay in the child unused.
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
 *            `word` = block size (header included, a multiple of 16, at
 *            least UMEM_MIN_BLOCK) | UMEM_USED | UMEM_PREV_FREE (the block
 *            before is free) | UMEM_MAPPED (a large block's own mapping)
 *            | UMEM_RELEASED (a free block whose pages went back);
 *            `check` = word without UMEM_PREV_FREE ^ header address ^ the
 *            heap's secret.
 *   free block: its last 8 bytes (the footer) repeat its size; a small
 *            one's payload starts with its list links (next, prev), a
 *            large one's with its tree node (left, right, largest size
 *            below, height).
 *   cached block: its payload starts with the cache's link and a tag, the
 *            heap's secret ^ its address, that marks it cached.
 *   end mark: a header of size 0 marked used, so the last block never
 *            merges past the region.
 *   Other regions and large blocks start with a span, a node of a second
 *   AVL tree of the heap's mappings by address.  umem_alloc returns
 *   header + 16, so payloads are 16-byte aligned.
 *
 * INVARIANTS (each checked by umem_check)
 *   I1 block sizes, walked from each region's first block, add up exactly
 *      to its end mark; every header's check matches.
 *   I2 each block's UMEM_PREV_FREE tells whether the block before it is
 *      free; a free block's footer equals its size.
 *   I3 no two free blocks are adjacent (frees merge at once).
 *   I4 every free block of up to UMEM_SMALL_MAX bytes is on the list of
 *      its size and every larger one in the free tree, once each, and
 *      nothing else is; the lists' links agree and the map of non-empty
 *      lists is right.
 *   I5 the free tree is in address order, and each node's height and
 *      largest size below are right, its subtrees' heights differing by
 *      at most one.
 *   I6 the same holds for the span tree; each region walks as in I1 and
 *      each large block's header matches its mapping.
 *   I7 allocs + blocks moved into caches - frees - blocks moved back =
 *      used blocks; bytes_in_use (heap view) = their total size;
 *      peak_bytes_in_use >= bytes_in_use.
 *   I8 the calling thread's own cached blocks are used blocks of their
 *      list's size, tagged, with the next block's header intact.
 *
 * HOW A FREED POINTER IS CHECKED
 *   It must lie inside a region or be a large block's start, and be
 *   16-byte aligned; its header's check must match (user data almost
 *   never forms header + address + secret, so interior pointers fail
 *   here); the block must be marked used (else: double free); and the
 *   next header must be intact and say its predecessor is used (else
 *   something wrote past the block's end).  A free into a cache checks
 *   the block's own header and its tag at once (a second free of a cached
 *   block is caught then), and the next header only when the block goes
 *   back to the heap: a write past the end of a block freed into a cache
 *   is caught when a flush takes that block or its thread exits; if the
 *   block is allocated again from the cache first, only its tag is
 *   checked, and an overrun that left the tag alone goes unseen.  A block taken from
 *   a cache must still carry its tag, or the allocation stops there: a
 *   write after free over the cache's link cannot hand out an address of
 *   the writer's choosing without the heap's secret.  After a large
 *   block's mapping is gone, freeing it again is reported as a pointer
 *   outside the heap, unless the system has since mapped the same
 *   address for another large block (mmap often does): that block is
 *   then freed, as with any allocator that gives memory back.
 *
 * SETTINGS
 *   Each of these may be defined before the include: UMEM_LARGE,
 *   UMEM_RESERVE, UMEM_PURGE_MIN, UMEM_CACHE_BIN, UMEM_CACHE_BYTES,
 *   UMEM_SPIN and UMEM_NAP_NS.
 *
 * ERRORS
 *   umem_create: EINVAL as above; ENOMEM; or what pthread_mutex_init or
 *   pthread_key_create said (EAGAIN: no pthread key left).  Every call
 *   on a UMEM_SHARED heap whose lock owner died: NULL and EOWNERDEAD, or
 *   nothing done (umem_free), or 0 (umem_usable_size).  umem_realloc that
 *   moves a block counts as neither an allocation nor a free, as the
 *   number of blocks does not change.
 *
 * LIMITS
 *   What every heap shares (the list of heaps for fork(), each thread's
 *   cache pointer) is defined once per program with gcc and clang, as
 *   weak symbols, so any number of files may include this header; with
 *   other compilers, use it from one file.  The fork() handlers are
 *   registered before main() (a constructor; elsewhere at the first
 *   umem_create): handlers registered earlier than that must not
 *   allocate from a heap.  A private heap is copied by fork() like any
 *   memory; share it with UMEM_SHARED instead.  A UMEM_SHARED or fixed-size heap never grows.
 *   Define _DEFAULT_SOURCE (or compile in gcc's default gnu dialect) so
 *   that MAP_ANONYMOUS, madvise and robust mutexes are declared; this
 *   header defines it when it comes first.
 */
#ifndef UMEM_H
#define UMEM_H

#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
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
#define UMEM_GROW   4u
#define UMEM_CACHED 8u

typedef struct umem umem_t;

typedef struct umem_stats {
    uint64_t lock_count;        /* lock acquisitions by alloc, free, realloc, memalign */
    uint64_t lock_contended;    /* of those, the ones that had to wait */
    uint64_t allocs;            /* successful allocations (cache hits included) */
    uint64_t frees;             /* frees of a non-NULL pointer (into caches included) */
    uint64_t failed_allocs;     /* allocations that returned NULL, n > 0 */
    uint64_t bytes_in_use;      /* blocks the program holds, headers included */
    uint64_t peak_bytes_in_use; /* highest bytes the heap had handed out (caches included) */
    uint64_t heap_bytes;        /* bytes the regions hold for blocks */
    int owner_died;             /* a lock owner died: the heap is closed */
    uint64_t cache_hits;        /* allocations a thread cache served, without the lock */
    uint64_t cache_frees;       /* frees a thread cache kept, without the lock */
    uint64_t cache_refills;     /* batches a cache took from the heap (one lock each) */
    uint64_t cache_flushes;     /* batches a cache gave back to the heap (one lock each) */
    uint64_t cached_bytes;      /* bytes in blocks the caches hold now */
    uint64_t mapped_bytes;      /* bytes mapped read-write from the system now */
    uint64_t large_blocks;      /* blocks with a mapping of their own, now */
    uint64_t released_bytes;    /* bytes of free pages given back with madvise, in all */
} umem_stats_t;

/* ---- implementation ---------------------------------------------------- */

#define UMEM_ALIGN     16u
#define UMEM_HEADER    16u
#define UMEM_MIN_BLOCK 48u /* header + two links + footer, rounded to 16 */
#define UMEM_USED      ((size_t)1)
#define UMEM_PREV_FREE ((size_t)2) /* the block before this one is free */
#define UMEM_MAPPED    ((size_t)4) /* a large block's own mapping, or a region */
#define UMEM_RELEASED  ((size_t)8) /* a large free block whose pages went back */
#define UMEM_FLAGS     ((size_t)15)
#define UMEM_MAGIC     0x756d656d68656170ull /* "umemheap" */
#define UMEM_PATH      128 /* deeper than any AVL tree in 64-bit memory */
#define UMEM_BINS      64u /* exact sizes 48, 64, ... 1056 */
#define UMEM_SMALL_MAX (UMEM_MIN_BLOCK + 16u * (UMEM_BINS - 1))

#ifndef UMEM_LARGE
#define UMEM_LARGE ((size_t)1 << 20) /* UMEM_GROW: a mapping of its own from here */
#endif
#ifndef UMEM_RESERVE
/* UMEM_GROW: address space set aside; 64 GiB (256 MiB in 32-bit memory) */
#define UMEM_RESERVE (((size_t)64 << 20) * (SIZE_MAX > 0xFFFFFFFFu ? 1024u : 4u))
#endif
#ifndef UMEM_PURGE_MIN
#define UMEM_PURGE_MIN ((size_t)4 << 20) /* UMEM_GROW: bytes freed between purges, at least */
#endif
#ifndef UMEM_CACHE_BIN
#define UMEM_CACHE_BIN 32u /* UMEM_CACHED: blocks a cache keeps per size */
#endif
#ifndef UMEM_CACHE_BYTES
#define UMEM_CACHE_BYTES ((size_t)256 << 10) /* UMEM_CACHED: bytes a cache keeps at most */
#endif
#define UMEM_CACHE_REFILL 2u
#define UMEM_FAST_REGIONS 16u

/* A block header.  `word` is read without the lock by a thread freeing
 * into its cache while the lock holder may flip UMEM_PREV_FREE in it, so
 * it is atomic (relaxed: a plain load or store) and the check leaves that
 * flag out. */
struct umem_block {
    _Atomic size_t word; /* size | flags */
    size_t check;
};

/* A small free block, on the list of its exact size. */
struct umem_free {
    _Atomic size_t word;
    size_t check;
    struct umem_free *next, *prev;
};

/* A large free block, a node of the free tree; also a span's node. */
struct umem_node {
    _Atomic size_t word;
    size_t check;
    struct umem_node *left, *right;
    size_t max;    /* the largest block size in this subtree */
    size_t height; /* a leaf is 1 */
};

/* A mapping other than the first: a region of blocks, or one large block.
 * It lives at the start of its mapping and is a node of the span tree,
 * keyed by address; its word is the mapping's size | UMEM_MAPPED. */
struct umem_span {
    struct umem_node node;
    char *first; /* a region: its first block; a large block: its header */
    char *end;   /* a region: its end mark; a large block: the mapping's end */
    int is_region;
};

struct umem_cache {
    void *bin[UMEM_BINS]; /* blocks, linked through their payload */
    unsigned count[UMEM_BINS];
    umem_t *heap;
    struct umem_cache *next, *prev; /* the heap's caches, under its lock */
    _Atomic uint64_t hits, frees;   /* written by the owner thread only */
    _Atomic uint64_t bytes;         /* size of the blocks held */
};

/* The fields read on every call and never written after umem_create sit
 * on their own cache line, apart from what the lock holder writes, so
 * that threads on other cores keep reading them from their own caches. */
struct umem {
    uint64_t magic;
    size_t map_bytes; /* the first mapping, reserved or not */
    unsigned flags;
    pid_t creator;
    size_t secret;
    size_t page;
    char *first;         /* first block header of the first region */
    char *reserve_end;   /* UMEM_GROW: end of the address space set aside */
    _Atomic(char *) end; /* end mark of the first region; grows, never shrinks */
    pthread_key_t key;   /* UMEM_CACHED: each thread's cache */
    umem_t *fork_next;   /* private locked heaps, for fork() */
    /* The first UMEM_FAST_REGIONS regions past the first, for a free into
     * a cache to recognise without the lock: set once each, under it. */
    _Atomic unsigned fast_regions;
    char *_Atomic fast_first[UMEM_FAST_REGIONS], *_Atomic fast_end[UMEM_FAST_REGIONS];
    _Alignas(64) pthread_mutex_t lock;
    int owner_died;
    uint64_t binmap;               /* bit i: bin[i] is not empty */
    struct umem_free *bin[UMEM_BINS]; /* small free blocks by exact size */
    struct umem_node *root;        /* large free blocks, by address */
    struct umem_node *spans;       /* other mappings, by address */
    struct umem_cache *caches;
    uint64_t lock_count, lock_contended, allocs, frees, failed_allocs;
    uint64_t bytes_in_use, peak_bytes_in_use, heap_bytes, mapped_bytes;
    uint64_t large_blocks, released_bytes, since_purge;
    uint64_t refill_blocks, flush_blocks, cache_refills, cache_flushes;
    uint64_t gone_hits, gone_frees; /* counts of caches whose threads ended */
};

#define UMEM_CONTROL_BYTES \
    ((sizeof(struct umem) + UMEM_ALIGN - 1) & ~(size_t)(UMEM_ALIGN - 1))
#define UMEM_SPAN_BYTES \
    ((sizeof(struct umem_span) + UMEM_ALIGN - 1) & ~(size_t)(UMEM_ALIGN - 1))

/* ---- headers and misuse ---- */

static inline size_t umem__word(const void *b)
{
    return atomic_load_explicit(&((struct umem_block *)b)->word, memory_order_relaxed);
}

static inline size_t umem__check_of(const umem_t *h, const void *b, size_t word)
{
    return (word & ~UMEM_PREV_FREE) ^ (size_t)(uintptr_t)b ^ h->secret;
}

static inline void umem__set_header(const umem_t *h, void *b, size_t word)
{
    struct umem_block *blk = (struct umem_block *)b;
    atomic_store_explicit(&blk->word, word, memory_order_relaxed);
    blk->check = umem__check_of(h, b, word);
}

static inline int umem__header_ok(const umem_t *h, const void *b)
{
    const struct umem_block *blk = (const struct umem_block *)b;
    return blk->check == umem__check_of(h, b, umem__word(b));
}

static inline size_t umem__size(const void *b)
{
    return umem__word(b) & ~UMEM_FLAGS;
}

/* Sets or clears UMEM_PREV_FREE in the header at b (the check is unchanged). */
static inline void umem__set_prev_free(void *b, int prev_free)
{
    size_t word = umem__word(b);
    word = prev_free ? word | UMEM_PREV_FREE : word & ~UMEM_PREV_FREE;
    atomic_store_explicit(&((struct umem_block *)b)->word, word, memory_order_relaxed);
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

#if defined(__GNUC__)
#define UMEM_COLD     __attribute__((cold, noinline, noreturn))
#define UMEM_NOINLINE __attribute__((noinline))
#else
#define UMEM_COLD
#define UMEM_NOINLINE
#endif

/* One line on stderr, then abort(): used for misuse and corruption. */
static UMEM_COLD void umem__die(const char *what, const void *p)
{
    char line[160];
    int len = snprintf(line, sizeof line, "umem: %s %p\n", what, p);
    if (len > 0) {
        ssize_t ignored = write(2, line, (size_t)len);
        (void)ignored;
    }
    abort();
}

/* The block size for n bytes, or 0 when n cannot fit in any address space. */
static inline size_t umem__need(size_t n)
{
    if (n > PTRDIFF_MAX / 2)
        return 0;
    size_t need = (n + UMEM_HEADER + UMEM_ALIGN - 1) & ~(size_t)(UMEM_ALIGN - 1);
    return need < UMEM_MIN_BLOCK ? UMEM_MIN_BLOCK : need;
}

/* ---- the AVL trees: free blocks and spans --------------------------------
 * Both are keyed by the node's address and keep, in each node, the largest
 * block size below it: the free tree finds the lowest-addressed block that
 * fits by going left whenever the left subtree holds one.  Paths are kept
 * as the links that lead to each node, root first, so that a rotation
 * anywhere on the path can rewrite its parent's link. */

static inline size_t umem__max_of(const struct umem_node *x)
{
    return x ? x->max : 0;
}

static inline size_t umem__height_of(const struct umem_node *x)
{
    return x ? x->height : 0;
}

static inline void umem__fix(struct umem_node *x)
{
    size_t hl = umem__height_of(x->left), hr = umem__height_of(x->right);
    x->height = 1 + (hl > hr ? hl : hr);
    size_t m = umem__size(x), ml = umem__max_of(x->left), mr = umem__max_of(x->right);
    x->max = m > ml ? (m > mr ? m : mr) : (ml > mr ? ml : mr);
}

static inline void umem__rotate_left(struct umem_node **link)
{
    struct umem_node *x = *link, *y = x->right;
    x->right = y->left;
    y->left = x;
    umem__fix(x);
    umem__fix(y);
    *link = y;
}

static inline void umem__rotate_right(struct umem_node **link)
{
    struct umem_node *x = *link, *y = x->left;
    x->left = y->right;
    y->right = x;
    umem__fix(x);
    umem__fix(y);
    *link = y;
}

static inline void umem__balance(struct umem_node **link)
{
    struct umem_node *x = *link;
    size_t hl = umem__height_of(x->left), hr = umem__height_of(x->right);
    if (hl > hr + 1) {
        if (umem__height_of(x->left->right) > umem__height_of(x->left->left))
            umem__rotate_left(&x->left);
        umem__rotate_right(link);
    } else if (hr > hl + 1) {
        if (umem__height_of(x->right->left) > umem__height_of(x->right->right))
            umem__rotate_right(&x->right);
        umem__rotate_left(link);
    } else {
        umem__fix(x);
    }
}

/* Rebalances and refreshes every node on the path, deepest first. */
static inline void umem__retrace(struct umem_node ***path, unsigned depth)
{
    while (depth > 0)
        umem__balance(path[--depth]);
}

/* The node at path[depth - 1] changed size, not shape: refresh the
 * largest sizes upwards while they change. */
static inline void umem__refresh(struct umem_node ***path, unsigned depth)
{
    while (depth > 0) {
        struct umem_node *x = *path[--depth];
        size_t old = x->max;
        umem__fix(x);
        if (x->max == old)
            break;
    }
}

/* Takes the node at path[depth - 1] out of its tree. */
static inline void umem__tree_delete(struct umem_node ***path, unsigned depth)
{
    struct umem_node **link = path[depth - 1], *x = *link;
    if (!x->left || !x->right) {
        *link = x->left ? x->left : x->right;
        depth--;
    } else {
        /* Its successor, the leftmost node on its right, takes its place. */
        unsigned at = depth - 1;
        struct umem_node **s = &x->right;
        path[depth++] = s;
        while ((*s)->left) {
            if (depth == UMEM_PATH)
                umem__die("heap corruption: a free tree too deep at", x);
            s = &(*s)->left;
            path[depth++] = s;
        }
        struct umem_node *y = *s;
        *s = y->right;
        y->left = x->left;
        y->right = x->right;
        y->height = x->height;
        *link = y;
        path[at + 1] = &y->right;
        depth--;
    }
    umem__retrace(path, depth);
}

/* Puts x at the empty link at the end of path[0 .. depth - 1]. */
static inline void umem__tree_insert(struct umem_node ***path, unsigned depth,
                                     struct umem_node **link, struct umem_node *x)
{
    x->left = x->right = NULL;
    x->height = 1;
    x->max = umem__size(x);
    *link = x;
    umem__retrace(path, depth);
}

/* The path to node x, found by its address; the depth, or 0. */
static inline unsigned umem__tree_path(struct umem_node **root, const struct umem_node *x,
                                       struct umem_node ***path)
{
    struct umem_node **link = root;
    unsigned depth = 0;
    while (*link && depth < UMEM_PATH) {
        path[depth++] = link;
        if (*link == x)
            return depth;
        link = (const char *)x < (const char *)*link ? &(*link)->left : &(*link)->right;
    }
    return 0;
}

/* ---- the lock ---- */

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
        /* Contended: a short spin, then naps (see LOCKING above), or
         * for a cached heap the mutex's own wait. */
        contended = 1;
        for (unsigned attempt = 0; r == EBUSY; attempt++) {
            if (attempt < UMEM_SPIN) {
                for (unsigned k = 0; k < 8u << attempt; k++)
                    umem__relax();
            } else if (h->flags & UMEM_CACHED) {
                /* Caches take the lock rarely and briefly: wait in the
                 * mutex's queue, to be woken when it is free. */
                r = pthread_mutex_lock(&h->lock);
                break;
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

/* ---- fork(): every private locked heap's lock is held across it ---- */

/* The state below is the process's, not a file's: where the compiler
 * allows (gcc, clang), weak definitions make every file that includes
 * this header share one copy; elsewhere, use the heap from one file. */
#if defined(__GNUC__)
#define UMEM_PROCESS_WIDE __attribute__((weak))
#else
#define UMEM_PROCESS_WIDE static
#endif

UMEM_PROCESS_WIDE pthread_mutex_t umem__forks_lock = PTHREAD_MUTEX_INITIALIZER;
UMEM_PROCESS_WIDE umem_t *umem__forks; /* under umem__forks_lock */
UMEM_PROCESS_WIDE atomic_int umem__forks_registered;

static inline void umem__fork_prepare(void)
{
    pthread_mutex_lock(&umem__forks_lock);
    for (umem_t *h = umem__forks; h; h = h->fork_next)
        pthread_mutex_lock(&h->lock);
}

static inline void umem__fork_parent(void)
{
    for (umem_t *h = umem__forks; h; h = h->fork_next)
        pthread_mutex_unlock(&h->lock);
    pthread_mutex_unlock(&umem__forks_lock);
}

/* The child has one thread, the one that took the locks: it lets them go. */
static inline void umem__fork_child(void)
{
    umem__fork_parent();
}

/* Once per process.  Not pthread_once: pthread_atfork may allocate, and
 * an allocator built on this header (libumem.so) would come back here. */
static inline void umem__forks_register(void)
{
    int no = 0;
    if (atomic_load_explicit(&umem__forks_registered, memory_order_acquire) == 0 &&
        atomic_compare_exchange_strong(&umem__forks_registered, &no, 1))
        pthread_atfork(umem__fork_prepare, umem__fork_parent, umem__fork_child);
}

#if defined(__GNUC__)
/* Registered before main(), so that handlers the program registers later
 * run while the heaps are whole: their prepare before the locks are
 * taken, their child and parent after they are let go. */
__attribute__((constructor)) static void umem__forks_early(void)
{
    umem__forks_register();
}
#endif

static inline int umem__forked_heap(const umem_t *h)
{
    return !(h->flags & (UMEM_SHARED | UMEM_NOLOCK));
}

/* ---- mappings: regions, growth, large blocks, giving pages back ---- */

static inline void *umem__map(size_t bytes, int prot, int vis)
{
    void *p = mmap(NULL, bytes, prot, vis | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static inline size_t umem__round_page(const umem_t *h, size_t n)
{
    return (n + h->page - 1) & ~(h->page - 1);
}

/* The span whose mapping holds address c, or NULL. */
static inline struct umem_span *umem__span_find(umem_t *h, const char *c)
{
    struct umem_node *x = h->spans, *best = NULL;
    for (unsigned depth = 0; x && depth < UMEM_PATH; depth++) {
        if ((const char *)x <= c) {
            best = x;
            x = x->right;
        } else {
            x = x->left;
        }
    }
    if (best && c < (const char *)best + umem__size(best))
        return (struct umem_span *)best;
    return NULL;
}

static inline void umem__span_add(umem_t *h, struct umem_span *s, size_t map_bytes)
{
    umem__set_header(h, s, map_bytes | UMEM_MAPPED);
    struct umem_node **path[UMEM_PATH], **link = &h->spans;
    unsigned depth = 0;
    while (*link && depth < UMEM_PATH) {
        path[depth++] = link;
        link = (char *)s < (char *)*link ? &(*link)->left : &(*link)->right;
    }
    umem__tree_insert(path, depth, link, &s->node);
    h->mapped_bytes += map_bytes;
}

static inline void umem__span_remove(umem_t *h, struct umem_span *s)
{
    struct umem_node **path[UMEM_PATH];
    unsigned depth = umem__tree_path(&h->spans, &s->node, path);
    if (depth == 0)
        umem__die("heap corruption: a mapping missing from the span tree at", s);
    umem__tree_delete(path, depth);
    h->mapped_bytes -= umem__size(s);
}

/* Gives the whole pages inside free blocks back to the system, for
 * blocks of two pages or more (the tree's largest sizes skip the rest). */
static inline void umem__purge(umem_t *h, struct umem_node *x)
{
    while (x && x->max >= 2 * h->page) {
        umem__purge(h, x->left);
        size_t size = umem__size(x);
        if (size >= 2 * h->page && !(umem__word(x) & UMEM_RELEASED)) {
            uintptr_t from = ((uintptr_t)x + sizeof *x + h->page - 1) & ~(uintptr_t)(h->page - 1);
            uintptr_t to = ((uintptr_t)x + size - sizeof(size_t)) & ~(uintptr_t)(h->page - 1);
            if (to > from && madvise((void *)from, to - from, MADV_DONTNEED) == 0) {
                h->released_bytes += to - from;
                umem__set_header(h, x, size | UMEM_RELEASED); /* until it changes */
            }
        }
        x = x->right;
    }
}

/* A private growable heap purges after freeing an eighth of its size,
 * and at least UMEM_PURGE_MIN, since the last purge. */
static inline void umem__maybe_purge(umem_t *h)
{
    if (!(h->flags & UMEM_GROW))
        return;
    size_t due = (size_t)(h->heap_bytes / 8);
    if (h->since_purge < (due > UMEM_PURGE_MIN ? due : UMEM_PURGE_MIN))
        return;
    h->since_purge = 0;
    umem__purge(h, h->root);
}

/* ---- free blocks: a list per small size, the tree for large ones ---- */

static inline unsigned umem__lowest_bit(uint64_t m)
{
#if defined(__GNUC__)
    return (unsigned)__builtin_ctzll(m);
#else
    unsigned i = 0;
    while (!(m & 1)) {
        m >>= 1;
        i++;
    }
    return i;
#endif
}

/* Files the free block at b: its header, its footer, and its list or its
 * place in the tree.  The caller sees to the next block's UMEM_PREV_FREE.
 * A list's head has no prev (its prev field is left as it was), so that
 * taking the head never touches the block behind it. */
static inline void umem__file(umem_t *h, char *b, size_t size)
{
    umem__set_header(h, b, size);
    umem__set_footer(b, size);
    if (size <= UMEM_SMALL_MAX) {
        unsigned i = (unsigned)((size - UMEM_MIN_BLOCK) >> 4);
        struct umem_free *f = (struct umem_free *)b;
        f->next = h->bin[i];
        if (f->next)
            f->next->prev = f;
        h->bin[i] = f;
        h->binmap |= (uint64_t)1 << i;
        return;
    }
    struct umem_node **path[UMEM_PATH], **link = &h->root;
    unsigned depth = 0;
    while (*link) {
        if (depth == UMEM_PATH)
            umem__die("heap corruption: a free tree too deep at", *link);
        path[depth++] = link;
        link = b < (char *)*link ? &(*link)->left : &(*link)->right;
    }
    umem__tree_insert(path, depth, link, (struct umem_node *)b);
}

/* Takes the free block at b off its list, or out of the tree. */
static inline void umem__unfile(umem_t *h, char *b, size_t size)
{
    if (size <= UMEM_SMALL_MAX) {
        unsigned i = (unsigned)((size - UMEM_MIN_BLOCK) >> 4);
        struct umem_free *f = (struct umem_free *)b;
        if (h->bin[i] == f) {
            h->bin[i] = f->next;
            if (!f->next)
                h->binmap &= ~((uint64_t)1 << i);
            return;
        }
        if (!f->prev || f->prev->next != f)
            umem__die("heap corruption: a free block missing from its list at", b);
        f->prev->next = f->next;
        if (f->next)
            f->next->prev = f->prev;
        return;
    }
    struct umem_node **path[UMEM_PATH];
    unsigned depth = umem__tree_path(&h->root, (struct umem_node *)b, path);
    if (depth == 0)
        umem__die("heap corruption: a free block missing from the free tree at", b);
    umem__tree_delete(path, depth);
}

/* The large free block x, in the tree, now spans `size` bytes from `at`
 * (x itself, or a lower address with nothing free between): it keeps its
 * place in the tree, and the largest sizes above it are refreshed. */
static inline void umem__tree_resize(umem_t *h, struct umem_node *x, char *at, size_t size)
{
    struct umem_node **path[UMEM_PATH];
    unsigned depth = umem__tree_path(&h->root, x, path);
    if (depth == 0)
        umem__die("heap corruption: a free block missing from the free tree at", x);
    struct umem_node *y = (struct umem_node *)at;
    if (y != x) {
        y->left = x->left;
        y->right = x->right;
        y->height = x->height;
        y->max = x->max;
        *path[depth - 1] = y;
    }
    umem__set_header(h, y, size);
    umem__set_footer(y, size);
    umem__refresh(path, depth);
}

/* Frees the block at b, whose header holds its size and UMEM_PREV_FREE,
 * merging it with its free neighbours at once (boundary tags: a free
 * block's footer repeats its size).  `first` is its region's first block.
 * A large neighbour keeps its node in the tree. */
static inline void umem__merge_free(umem_t *h, char *b, const char *first)
{
    size_t word = umem__word(b), size = word & ~UMEM_FLAGS;
    char *next = b + size, *prev = NULL;
    size_t psize = 0, nsize = 0;
    if (word & UMEM_PREV_FREE) {
        /* Marked free: merged into the block before, its stale header
         * still says free, and a second free of it is a double free. */
        umem__set_header(h, b, size | UMEM_PREV_FREE);
        psize = umem__footer_before(b);
        prev = b - psize;
        if (psize < UMEM_MIN_BLOCK || psize % UMEM_ALIGN != 0 || psize > (size_t)(b - first) ||
            !umem__header_ok(h, prev) || umem__word(prev) & UMEM_USED || umem__size(prev) != psize)
            umem__die("heap corruption: the free block before is damaged, freeing", b + UMEM_HEADER);
    }
    size_t next_word = umem__word(next);
    if (!(next_word & UMEM_USED)) {
        if (!umem__header_ok(h, next))
            umem__die("heap corruption: free block header overwritten at", next);
        nsize = next_word & ~UMEM_FLAGS;
    } else {
        umem__set_prev_free(next, 1);
    }
    char *start = prev ? prev : b;
    size_t total = psize + size + nsize;
    if (psize > UMEM_SMALL_MAX) {
        if (nsize)
            umem__unfile(h, next, nsize);
        umem__tree_resize(h, (struct umem_node *)prev, prev, total);
    } else if (nsize > UMEM_SMALL_MAX) {
        if (psize)
            umem__unfile(h, prev, psize);
        umem__tree_resize(h, (struct umem_node *)next, start, total);
    } else {
        if (psize)
            umem__unfile(h, prev, psize);
        if (nsize)
            umem__unfile(h, next, nsize);
        umem__file(h, start, total);
    }
}

/* The lowest-addressed large free block of at least `need` bytes: its
 * path's depth, or 0 when none fits. */
static inline unsigned umem__first_fit(umem_t *h, size_t need, struct umem_node ***path)
{
    struct umem_node **link = &h->root, *x = h->root;
    if (!x || x->max < need)
        return 0;
    for (unsigned depth = 0;;) {
        path[depth++] = link;
        if (x->left && x->left->max >= need)
            link = &x->left;
        else if (umem__size(x) >= need)
            return depth;
        else
            link = &x->right;
        x = *link;
        if (!x || depth == UMEM_PATH)
            umem__die("heap corruption: the free tree's sizes disagree at", path[depth - 1]);
    }
}

static inline int umem__grow(umem_t *h, size_t need);

/* A block of *need bytes, marked used (lock held): from the smallest
 * non-empty list of a size that fits, else from the lowest-addressed
 * large block that fits (growing the heap, if `grow` and it may, when
 * none does).  *need grows by a remainder too small to be a block. */
static inline char *umem__take(umem_t *h, size_t *need, int grow)
{
    char *b = NULL;
    size_t size = 0;
    if (*need <= UMEM_SMALL_MAX) {
        unsigned i = (unsigned)((*need - UMEM_MIN_BLOCK) >> 4);
        uint64_t fits = h->binmap >> i << i;
        if (fits) {
            unsigned j = umem__lowest_bit(fits);
            struct umem_free *f = h->bin[j];
            b = (char *)f;
            size = UMEM_MIN_BLOCK + 16u * j;
            if (!umem__header_ok(h, b) || umem__word(b) != size)
                umem__die("heap corruption: free block header overwritten at", b);
            h->bin[j] = f->next; /* the head: no prev to mend */
            if (!f->next)
                h->binmap &= ~((uint64_t)1 << j);
        }
    }
    if (!b) {
        struct umem_node **path[UMEM_PATH];
        unsigned depth = umem__first_fit(h, *need, path);
        if (depth == 0) {
            if (grow && h->flags & UMEM_GROW && umem__grow(h, *need) == 0)
                return umem__take(h, need, 0);
            return NULL;
        }
        struct umem_node *f = *path[depth - 1];
        if (!umem__header_ok(h, f))
            umem__die("heap corruption: free block header overwritten at", f);
        b = (char *)f;
        size = umem__size(f);
        if (size - *need > UMEM_SMALL_MAX) {
            /* The rest stays large and keeps f's place: nothing lies between. */
            struct umem_node *r = (struct umem_node *)(b + *need);
            r->left = f->left;
            r->right = f->right;
            r->height = f->height;
            r->max = f->max;
            umem__set_header(h, r, size - *need);
            umem__set_footer(r, size - *need);
            *path[depth - 1] = r;
            umem__refresh(path, depth);
            umem__set_header(h, b, *need | UMEM_USED);
            ((size_t *)b)[3] = 0;
            return b;
        }
        umem__tree_delete(path, depth);
    }
    if (size - *need >= UMEM_MIN_BLOCK) {
        umem__set_header(h, b, *need | UMEM_USED);
        umem__file(h, b + *need, size - *need);
    } else {
        *need = size;
        umem__set_header(h, b, size | UMEM_USED);
        umem__set_prev_free(b + size, 0);
    }
    ((size_t *)b)[3] = 0; /* a stale cache tag must not outlive the block */
    return b;
}

/* UMEM_GROW: more room for at least `need` bytes, at the end of the first
 * region while its reservation lasts, then as a region of its own. */
static inline int umem__grow(umem_t *h, size_t need)
{
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed);
    size_t have = (size_t)(end - h->first);
    size_t want = need > have / 2 ? need : have / 2;
    if (want < ((size_t)1 << 20))
        want = (size_t)1 << 20;
    want &= ~(size_t)(UMEM_ALIGN - 1);
    size_t room = (size_t)(h->reserve_end - UMEM_HEADER - end) & ~(size_t)(UMEM_ALIGN - 1);
    if (h->reserve_end > end + UMEM_HEADER && room >= need) {
        size_t add = want < room ? want : room;
        char *new_end = end + add;
        /* The pages up to the old end mark's are committed already. */
        uintptr_t pg = h->page - 1;
        char *from = (char *)(((uintptr_t)end + UMEM_HEADER + pg) & ~pg);
        char *to = (char *)(((uintptr_t)new_end + UMEM_HEADER + pg) & ~pg);
        if (to > from) {
            if (mprotect(from, (size_t)(to - from), PROT_READ | PROT_WRITE) != 0)
                return -1;
            h->mapped_bytes += (uint64_t)(to - from);
        }
        /* The old end mark becomes a used block of the new room, freed. */
        umem__set_header(h, new_end, 0 | UMEM_USED);
        umem__set_header(h, end, add | UMEM_USED | (umem__word(end) & UMEM_PREV_FREE));
        atomic_store_explicit(&h->end, new_end, memory_order_relaxed);
        h->heap_bytes += add;
        umem__merge_free(h, end, h->first);
        return 0;
    }
    size_t bytes = umem__round_page(h, UMEM_SPAN_BYTES + want + UMEM_HEADER);
    struct umem_span *s = (struct umem_span *)umem__map(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    if (!s)
        return -1;
    s->is_region = 1;
    s->first = (char *)s + UMEM_SPAN_BYTES;
    s->end = s->first + ((bytes - UMEM_SPAN_BYTES - UMEM_HEADER) & ~(size_t)(UMEM_ALIGN - 1));
    umem__set_header(h, s->end, 0 | UMEM_USED);
    umem__set_header(h, s->first, (size_t)(s->end - s->first) | UMEM_USED);
    umem__span_add(h, s, bytes);
    unsigned k = atomic_load_explicit(&h->fast_regions, memory_order_relaxed);
    if (k < UMEM_FAST_REGIONS) {
        atomic_store_explicit(&h->fast_first[k], s->first, memory_order_relaxed);
        atomic_store_explicit(&h->fast_end[k], s->end, memory_order_relaxed);
        atomic_store_explicit(&h->fast_regions, k + 1, memory_order_release);
    }
    h->heap_bytes += (uint64_t)(s->end - s->first);
    umem__merge_free(h, s->first, s->first);
    return 0;
}

/* UMEM_GROW: a large block in a mapping of its own, aligned to `align`.
 * Mapped before the lock is taken; the caller adds it to the spans. */
static inline struct umem_span *umem__map_large(umem_t *h, size_t n, size_t align)
{
    if (n > PTRDIFF_MAX / 2 || align > PTRDIFF_MAX / 4)
        return NULL;
    size_t bytes = umem__round_page(h, UMEM_SPAN_BYTES + UMEM_HEADER + n +
                                           (align > UMEM_ALIGN ? align : 0));
    struct umem_span *s = umem__map(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    if (!s)
        return NULL;
    uintptr_t payload = (uintptr_t)s + UMEM_SPAN_BYTES + UMEM_HEADER;
    if (align > UMEM_ALIGN)
        payload = (payload + align - 1) & ~(uintptr_t)(align - 1);
    s->is_region = 0;
    s->first = (char *)payload - UMEM_HEADER;
    s->end = (char *)s + bytes;
    umem__set_header(h, s->first, (size_t)(s->end - s->first) | UMEM_USED | UMEM_MAPPED);
    return s;
}

/* ---- where a pointer's block lives ---- */

struct umem_where {
    char *block;           /* its header */
    char *first;           /* the first block of its region */
    char *end;             /* the end mark of its region */
    struct umem_span *big; /* a large block's span, else NULL */
};

/* Finds and checks the block of p, as every free, realloc and usable
 * size does; dies with one line naming p when it is not a live block.
 * With the lock held (UMEM_NOLOCK: always). */
static UMEM_COLD void umem__die_of(const char *call, const char *what, const void *p)
{
    char line[128];
    snprintf(line, sizeof line, what, call);
    umem__die(line, p);
}

static inline void umem__locate(umem_t *h, const void *p, struct umem_where *w, const char *call)
{
    const char *c = (const char *)p;
    if ((uintptr_t)c % UMEM_ALIGN != 0)
        umem__die_of(call, "%s of a pointer outside the heap or misaligned:", p);
    w->block = (char *)c - UMEM_HEADER;
    w->big = NULL;
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed);
    if (c >= h->first + UMEM_HEADER && c < end) {
        w->first = h->first;
        w->end = end;
    } else {
        struct umem_span *s = umem__span_find(h, w->block);
        if (!s || (s->is_region && (c < s->first + UMEM_HEADER || c >= s->end)))
            umem__die_of(call, "%s of a pointer outside the heap or misaligned:", p);
        w->first = s->first;
        w->end = s->end;
        if (!s->is_region && w->block == s->first)
            w->big = s; /* anywhere else in a large block, its check fails */
    }
    if (!umem__header_ok(h, w->block))
        umem__die_of(call, "bad %s (not from umem_alloc, or its header overwritten):", p);
    size_t word = umem__word(w->block);
    if (!(word & UMEM_USED))
        umem__die_of(call, "%s of a block freed already (double free):", p);
    if (w->big)
        return;
    size_t size = word & ~UMEM_FLAGS;
    char *next = w->block + size;
    if (size < UMEM_MIN_BLOCK || word & UMEM_MAPPED || next > w->end ||
        !umem__header_ok(h, next) || umem__word(next) & UMEM_PREV_FREE)
        umem__die("heap corruption: write past the end of the block at", p);
}

/* Gives a checked block back to the free tree (lock held). */
static inline void umem__give_back(umem_t *h, const struct umem_where *w)
{
    if (w->big) {
        size_t bytes = umem__size(w->big);
        umem__span_remove(h, w->big);
        h->bytes_in_use -= bytes;
        h->large_blocks--;
        munmap(w->big, bytes);
        return;
    }
    size_t size = umem__size(w->block);
    h->bytes_in_use -= size;
    h->since_purge += size;
    umem__merge_free(h, w->block, w->first);
}

static inline void umem__count_alloc(umem_t *h, size_t bytes)
{
    h->allocs++;
    h->bytes_in_use += bytes;
    if (h->bytes_in_use > h->peak_bytes_in_use)
        h->peak_bytes_in_use = h->bytes_in_use;
}

/* ---- per-thread caches (UMEM_CACHED) ----
 * Each thread has one cache per heap: a list of blocks per size class,
 * linked through the first word of their payload; the second word holds
 * a tag (the heap's secret ^ the address) that marks the block as cached,
 * so that a second free of it is caught at once.  To the heap, a cached
 * block is still in use; its header is never written while cached. */

#if defined(__GNUC__)
#define UMEM_TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define UMEM_TLS _Thread_local
#endif
UMEM_PROCESS_WIDE UMEM_TLS umem_t *umem__tls_heap;
UMEM_PROCESS_WIDE UMEM_TLS size_t umem__tls_secret;
UMEM_PROCESS_WIDE UMEM_TLS struct umem_cache *umem__tls_cache;

#define UMEM_CACHE_GONE ((void *)1) /* the thread is exiting: no new cache */

static inline size_t umem__tag(const umem_t *h, const void *p)
{
    return h->secret ^ (size_t)(uintptr_t)p ^ 0xCAC4Eu;
}

static inline uint64_t umem__get(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Owner-only counters: a load and a store, no read-modify-write. */
static inline void umem__add(_Atomic uint64_t *v, uint64_t d)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/* Returns up to `count` blocks of class `cls` to the heap (lock held);
 * each is checked as a free would, so an overrun into the next block is
 * caught here at the latest. */
static inline void umem__cache_drain(umem_t *h, struct umem_cache *c, unsigned cls,
                                     unsigned count)
{
    for (; count > 0 && c->bin[cls]; count--) {
        void **p = (void **)c->bin[cls];
        c->bin[cls] = p[0];
        c->count[cls]--;
        struct umem_where w;
        umem__locate(h, p, &w, "free");
        size_t size = umem__size(w.block);
        umem__add(&c->bytes, (uint64_t)0 - size);
        h->flush_blocks++;
        umem__give_back(h, &w);
    }
}

/* A full list gives half its blocks back; a cache over UMEM_CACHE_BYTES
 * gives back half of every list.  One lock either way. */
static UMEM_NOINLINE void umem__cache_flush(umem_t *h, struct umem_cache *c, unsigned cls)
{
    if (umem__lock(h, 1) != 0)
        return;
    h->cache_flushes++;
    if (c->count[cls] >= UMEM_CACHE_BIN) {
        umem__cache_drain(h, c, cls, (UMEM_CACHE_BIN + 1) / 2);
    } else {
        for (unsigned i = 0; i < UMEM_BINS; i++)
            umem__cache_drain(h, c, i, (c->count[i] + 1) / 2);
    }
    umem__maybe_purge(h);
    umem__unlock(h);
}

/* The thread is ending: its blocks go back and its cache is unmapped. */
static inline void umem__cache_exit(void *arg)
{
    if (arg == UMEM_CACHE_GONE)
        return;
    struct umem_cache *c = (struct umem_cache *)arg;
    umem_t *h = c->heap;
    if (umem__lock(h, 0) == 0) {
        for (unsigned cls = 0; cls < UMEM_BINS; cls++)
            umem__cache_drain(h, c, cls, ~0u);
        if (c->prev)
            c->prev->next = c->next;
        else
            h->caches = c->next;
        if (c->next)
            c->next->prev = c->prev;
        h->gone_hits += umem__get(&c->hits);
        h->gone_frees += umem__get(&c->frees);
        h->mapped_bytes -= h->page;
        umem__unlock(h);
        munmap(c, h->page);
    }
    pthread_setspecific(h->key, UMEM_CACHE_GONE);
    umem__tls_heap = h;
    umem__tls_secret = h->secret;
    umem__tls_cache = NULL;
}

/* The calling thread's cache for h, made on first use; NULL when the
 * thread must go to the heap's lock instead. */
static UMEM_NOINLINE struct umem_cache *umem__cache_attach(umem_t *h)
{
    void *v = pthread_getspecific(h->key);
    struct umem_cache *c = v == UMEM_CACHE_GONE ? NULL : (struct umem_cache *)v;
    if (!c && v != UMEM_CACHE_GONE &&
        (c = umem__map(h->page, PROT_READ | PROT_WRITE, MAP_PRIVATE)) != NULL) {
        c->heap = h;
        if (umem__lock(h, 0) != 0) {
            munmap(c, h->page);
            return NULL;
        }
        c->prev = NULL;
        c->next = h->caches;
        if (c->next)
            c->next->prev = c;
        h->caches = c;
        h->mapped_bytes += h->page;
        umem__unlock(h);
        /* Known to this thread first: pthread_setspecific may allocate,
         * and that allocation must find the cache, not make another. */
        umem__tls_heap = h;
        umem__tls_secret = h->secret;
        umem__tls_cache = c;
        if (pthread_setspecific(h->key, c) != 0)
            umem__cache_exit(c); /* no key, no exit: the lock it is */
        return umem__tls_cache;
    }
    umem__tls_heap = h;
    umem__tls_secret = h->secret;
    umem__tls_cache = c;
    return c;
}

static inline struct umem_cache *umem__cache(umem_t *h)
{
    if (umem__tls_heap == h && umem__tls_secret == h->secret)
        return umem__tls_cache;
    return umem__cache_attach(h);
}

/* An empty bin: up to UMEM_CACHE_REFILL blocks from the heap under one
 * lock; one is returned, the others are cached. */
static UMEM_NOINLINE void *umem__cache_refill(umem_t *h, struct umem_cache *c, unsigned cls)
{
    size_t size = UMEM_MIN_BLOCK + 16u * cls;
    if (umem__lock(h, 1) != 0)
        return NULL;
    h->cache_refills++;
    char *got[UMEM_CACHE_REFILL];
    size_t got_size[UMEM_CACHE_REFILL];
    unsigned n = 0;
    for (; n < UMEM_CACHE_REFILL; n++) {
        size_t need = size;
        char *b = umem__take(h, &need, n == 0);
        if (!b && n == 0 && umem__get(&c->bytes) > 0) {
            /* The heap is out of room: this thread's own cached blocks
             * go back first (other threads' caches it cannot touch). */
            for (unsigned i = 0; i < UMEM_BINS; i++)
                umem__cache_drain(h, c, i, ~0u);
            b = umem__take(h, &need, 1);
        }
        if (!b)
            break;
        h->bytes_in_use += need;
        got[n] = b;
        got_size[n] = need;
    }
    /* The first block is the caller's; the others are cached last to
     * first, so that they come out in the order they were carved (mostly
     * rising addresses): blocks allocated one after another lie one after
     * another, as a program walking them in that order would like. */
    while (n > 1) {
        n--;
        /* A remainder too small for a block may have come along: the
         * block goes to the list of its own size. */
        unsigned bc = (unsigned)((got_size[n] - UMEM_MIN_BLOCK) >> 4);
        if (bc >= UMEM_BINS) {
            h->bytes_in_use -= got_size[n];
            umem__merge_free(h, got[n], got[n]);
            continue;
        }
        h->refill_blocks++;
        void **p = (void **)(got[n] + UMEM_HEADER);
        p[0] = c->bin[bc];
        p[1] = (void *)umem__tag(h, p);
        c->bin[bc] = p;
        c->count[bc]++;
        umem__add(&c->bytes, got_size[n]);
    }
    if (n == 1)
        h->allocs++;
    else
        h->failed_allocs++;
    if (h->bytes_in_use > h->peak_bytes_in_use)
        h->peak_bytes_in_use = h->bytes_in_use;
    umem__unlock(h);
    if (n == 0) {
        errno = ENOMEM;
        return NULL;
    }
    return got[0] + UMEM_HEADER;
}

/* ---- the interface ---- */

static inline umem_t *umem_create(size_t bytes, unsigned flags)
{
    unsigned known = UMEM_SHARED | UMEM_NOLOCK | UMEM_GROW | UMEM_CACHED;
    if (flags & ~known || (flags & UMEM_SHARED && flags & (UMEM_NOLOCK | UMEM_GROW | UMEM_CACHED)) ||
        (flags & UMEM_NOLOCK && flags & UMEM_CACHED)) {
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
    if (bytes > PTRDIFF_MAX - page) {
        errno = ENOMEM; /* more than any address space */
        return NULL;
    }
    size_t commit = (bytes + page - 1) / page * page;
    size_t map_bytes = commit;
    void *base;
    if (flags & UMEM_GROW) {
        /* Address space set aside, committed as the heap grows; where
         * the system refuses that much, as much as it allows. */
        size_t reserve = UMEM_RESERVE > commit ? UMEM_RESERVE : commit;
        for (base = NULL; !base && reserve >= commit; reserve /= 2) {
            base = umem__map(reserve, PROT_NONE, MAP_PRIVATE | MAP_NORESERVE);
            map_bytes = reserve;
        }
        if (!base)
            base = umem__map(map_bytes = commit, PROT_NONE, MAP_PRIVATE | MAP_NORESERVE);
        if (base && mprotect(base, commit, PROT_READ | PROT_WRITE) != 0) {
            munmap(base, map_bytes);
            base = NULL;
        }
    } else {
        base = umem__map(commit, PROT_READ | PROT_WRITE,
                         flags & UMEM_SHARED ? MAP_SHARED : MAP_PRIVATE);
    }
    if (!base) {
        errno = ENOMEM;
        return NULL;
    }

    umem_t *h = (umem_t *)base;
    h->magic = UMEM_MAGIC;
    h->map_bytes = map_bytes;
    h->flags = flags;
    h->creator = getpid();
    h->page = page;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    static _Atomic size_t heaps_made;
    size_t seed = (size_t)(uintptr_t)base ^ (size_t)ts.tv_nsec ^ ((size_t)ts.tv_sec << 20) ^
                  (size_t)h->creator ^ (size_t)((uint64_t)atomic_fetch_add(&heaps_made, 1) << 40);
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
        if (r == 0 && flags & UMEM_CACHED) {
            r = pthread_key_create(&h->key, umem__cache_exit);
            if (r != 0)
                pthread_mutex_destroy(&h->lock);
        }
        if (r != 0) {
            munmap(base, map_bytes);
            errno = r;
            return NULL;
        }
    }

    /* Blocks span [first, end); the span is a multiple of 16. */
    h->first = (char *)base + UMEM_CONTROL_BYTES;
    size_t span = (commit - UMEM_CONTROL_BYTES - UMEM_HEADER) & ~(size_t)(UMEM_ALIGN - 1);
    char *end = h->first + span;
    atomic_init(&h->end, end);
    h->reserve_end = (char *)base + map_bytes;
    h->heap_bytes = span;
    h->mapped_bytes = commit;
    umem__set_header(h, end, 0 | UMEM_USED);
    umem__set_header(h, h->first, span | UMEM_USED);
    umem__merge_free(h, h->first, h->first);

    if (umem__forked_heap(h)) {
        umem__forks_register();
        pthread_mutex_lock(&umem__forks_lock);
        h->fork_next = umem__forks;
        umem__forks = h;
        pthread_mutex_unlock(&umem__forks_lock);
    }
    return h;
}

static inline void umem_destroy(umem_t *h)
{
    if (!h)
        return;
    if (umem__forked_heap(h)) {
        pthread_mutex_lock(&umem__forks_lock);
        for (umem_t **link = &umem__forks; *link; link = &(*link)->fork_next)
            if (*link == h) {
                *link = h->fork_next;
                break;
            }
        pthread_mutex_unlock(&umem__forks_lock);
    }
    int owner = !(h->flags & UMEM_SHARED) || h->creator == getpid();
    if (h->flags & UMEM_CACHED) {
        pthread_key_delete(h->key);
        while (h->caches) {
            struct umem_cache *c = h->caches;
            h->caches = c->next;
            munmap(c, h->page);
        }
        if (umem__tls_heap == h)
            umem__tls_heap = NULL;
    }
    while (h->spans) {
        struct umem_span *s = (struct umem_span *)h->spans;
        size_t bytes = umem__size(s);
        struct umem_node **path[UMEM_PATH] = {&h->spans};
        umem__tree_delete(path, 1);
        munmap(s, bytes);
    }
    if (owner && !(h->flags & UMEM_NOLOCK))
        pthread_mutex_destroy(&h->lock);
    munmap(h, h->map_bytes);
}

/* Any allocation the caches do not serve (lock taken here). */
static UMEM_NOINLINE void *umem__alloc_locked(umem_t *h, size_t n)
{
    size_t need = umem__need(n);
    struct umem_span *big = NULL;
    if (h->flags & UMEM_GROW && n >= UMEM_LARGE && need != 0)
        big = umem__map_large(h, n, UMEM_ALIGN);
    if (umem__lock(h, 1) != 0) {
        if (big)
            munmap(big, (size_t)(big->end - (char *)big));
        return NULL;
    }
    char *b = NULL;
    if (big) {
        size_t bytes = (size_t)(big->end - (char *)big);
        umem__span_add(h, big, bytes);
        h->large_blocks++;
        b = big->first;
        need = bytes;
    } else if (need != 0) {
        b = umem__take(h, &need, 1);
    }
    if (!b) {
        h->failed_allocs++;
        umem__unlock(h);
        errno = ENOMEM;
        return NULL;
    }
    umem__count_alloc(h, need);
    umem__unlock(h);
    return b + UMEM_HEADER;
}

static inline void *umem_alloc(umem_t *h, size_t n)
{
    if (n == 0)
        return NULL;
    if (h->flags & UMEM_CACHED && n <= UMEM_SMALL_MAX - UMEM_HEADER) {
        struct umem_cache *c = umem__cache(h);
        if (c) {
            unsigned cls = (unsigned)((umem__need(n) - UMEM_MIN_BLOCK) >> 4);
            void **p = (void **)c->bin[cls];
            if (!p)
                return umem__cache_refill(h, c, cls);
            /* Still tagged (the tag is on the link's cache line, and only
             * who knows the heap's secret can forge it): a write after
             * free over the link would otherwise hand out any address. */
            if ((size_t)(uintptr_t)p[1] != umem__tag(h, p))
                umem__die("heap corruption: a cached block was written after its free:", p);
            c->bin[cls] = p[0];
            c->count[cls]--;
            p[1] = NULL; /* no longer tagged as cached */
            umem__add(&c->hits, 1);
            umem__add(&c->bytes, (uint64_t)0 - (UMEM_MIN_BLOCK + 16u * cls));
            return p;
        }
    }
    return umem__alloc_locked(h, n);
}

/* The lock-free half of a free into the calling thread's cache: checks
 * the block's own header (its neighbours may be changing under the lock)
 * and its tag.  Returns 0 when the block went to the heap instead. */
/* Whether p lies in a region a cache may take it from without the lock:
 * the first, or one of the next UMEM_FAST_REGIONS. */
static inline int umem__in_fast_region(umem_t *h, const char *c)
{
    if (c >= h->first + UMEM_HEADER && c < atomic_load_explicit(&h->end, memory_order_relaxed))
        return 1;
    unsigned n = atomic_load_explicit(&h->fast_regions, memory_order_acquire);
    for (unsigned k = 0; k < n; k++)
        if (c >= atomic_load_explicit(&h->fast_first[k], memory_order_relaxed) + UMEM_HEADER &&
            c < atomic_load_explicit(&h->fast_end[k], memory_order_relaxed))
            return 1;
    return 0;
}

static inline int umem__cache_free(umem_t *h, void *p)
{
    char *c = (char *)p, *b = c - UMEM_HEADER;
    if ((uintptr_t)c % UMEM_ALIGN != 0 || !umem__in_fast_region(h, c))
        return 0;
    if (!umem__header_ok(h, b))
        umem__die("bad free (not from umem_alloc, or its header overwritten):", p);
    size_t word = ((struct umem_block *)b)->word;
    if (!(word & UMEM_USED))
        umem__die("free of a block freed already (double free):", p);
    size_t size = word & ~UMEM_FLAGS;
    if (size > UMEM_SMALL_MAX)
        return 0;
    struct umem_cache *cache = umem__cache(h);
    if (!cache)
        return 0;
    void **q = (void **)p;
    if ((size_t)(uintptr_t)q[1] == umem__tag(h, p))
        umem__die("free of a block freed already (double free):", p);
    unsigned cls = (unsigned)((size - UMEM_MIN_BLOCK) >> 4);
    if (cache->count[cls] >= UMEM_CACHE_BIN || umem__get(&cache->bytes) + size > UMEM_CACHE_BYTES) {
        umem__cache_flush(h, cache, cls);
    }
    q[0] = cache->bin[cls];
    q[1] = (void *)umem__tag(h, p);
    cache->bin[cls] = q;
    cache->count[cls]++;
    umem__add(&cache->frees, 1);
    umem__add(&cache->bytes, size);
    return 1;
}

/* A block sitting in a cache is free to its owner: realloc and usable
 * size of it are a use after free, reported as a double free would be. */
static inline void umem__not_cached(umem_t *h, const void *p, const char *call)
{
    if (h->flags & UMEM_CACHED && (size_t)(uintptr_t)((void *const *)p)[1] == umem__tag(h, p))
        umem__die_of(call, "%s of a block freed already (double free):", p);
}

static UMEM_NOINLINE void umem__free_locked(umem_t *h, void *p)
{
    if ((uintptr_t)p % UMEM_ALIGN != 0)
        umem__die("free of a pointer outside the heap or misaligned:", p);
    if (umem__lock(h, 1) != 0)
        return;
    struct umem_where w;
    umem__locate(h, p, &w, "free");
    umem__not_cached(h, p, "free");
    h->frees++;
    umem__give_back(h, &w);
    umem__maybe_purge(h);
    umem__unlock(h);
}

static inline void umem_free(umem_t *h, void *p)
{
    if (!p)
        return;
    if (h->flags & UMEM_CACHED && umem__cache_free(h, p))
        return;
    umem__free_locked(h, p);
}

static inline size_t umem_usable_size(umem_t *h, const void *p)
{
    if (!p || umem__lock(h, 0) != 0)
        return 0;
    struct umem_where w;
    umem__locate(h, p, &w, "usable size");
    umem__not_cached(h, p, "usable size");
    size_t size = w.big ? (size_t)(w.end - w.block) : umem__size(w.block);
    umem__unlock(h);
    return size - UMEM_HEADER;
}

/* Grows or shrinks the block in place (lock held): 0, or -1 when it
 * cannot grow where it is. */
static inline int umem__resize(umem_t *h, struct umem_where *w, size_t need)
{
    size_t word = umem__word(w->block), size = word & ~UMEM_FLAGS;
    if (w->big) {
        /* Shrunk to half its size or less, it moves, and its pages go back. */
        size_t have = (size_t)(w->end - w->block);
        return need <= have && need > have / 2 ? 0 : -1;
    }
    size_t keep = word & UMEM_PREV_FREE;
    if (need <= size) {
        if (size - need >= UMEM_MIN_BLOCK) {
            umem__set_header(h, w->block, need | UMEM_USED | keep);
            umem__set_header(h, w->block + need, (size - need) | UMEM_USED);
            h->bytes_in_use -= size - need;
            umem__merge_free(h, w->block + need, w->first);
        }
        return 0;
    }
    char *next = w->block + size;
    size_t next_word = umem__word(next);
    if (next_word & UMEM_USED || size + (next_word & ~UMEM_FLAGS) < need)
        return -1;
    size_t total = size + (next_word & ~UMEM_FLAGS);
    umem__unfile(h, next, next_word & ~UMEM_FLAGS);
    if (total - need >= UMEM_MIN_BLOCK) {
        umem__file(h, w->block + need, total - need);
    } else {
        need = total;
        umem__set_prev_free(w->block + total, 0);
    }
    umem__set_header(h, w->block, need | UMEM_USED | keep);
    h->bytes_in_use += need - size;
    if (h->bytes_in_use > h->peak_bytes_in_use)
        h->peak_bytes_in_use = h->bytes_in_use;
    return 0;
}

static inline void *umem_realloc(umem_t *h, void *p, size_t n)
{
    if (!p)
        return umem_alloc(h, n);
    if (n == 0) {
        umem_free(h, p);
        return NULL;
    }
    size_t need = umem__need(n);
    if (h->flags & UMEM_CACHED && need != 0 && (uintptr_t)p % UMEM_ALIGN == 0 &&
        umem__in_fast_region(h, (const char *)p)) {
        /* A block that still fits, wasting less than half, stays where it
         * is without the lock: its header is the caller's to read. */
        char *b = (char *)p - UMEM_HEADER;
        size_t word = umem__word(b), size = word & ~UMEM_FLAGS;
        if (umem__header_ok(h, b) && word & UMEM_USED && need <= size && need > size / 2 &&
            (size_t)(uintptr_t)((void **)p)[1] != umem__tag(h, p))
            return p;
    }
    /* A large block's mapping is made before the lock is taken, in case
     * the block moves, and unmade if it does not. */
    struct umem_span *big = NULL;
    if (need != 0 && h->flags & UMEM_GROW && n >= UMEM_LARGE)
        big = umem__map_large(h, n, UMEM_ALIGN);
    if (umem__lock(h, 1) != 0) {
        if (big)
            munmap(big, (size_t)(big->end - (char *)big));
        return NULL;
    }
    struct umem_where w;
    umem__locate(h, p, &w, "realloc");
    umem__not_cached(h, p, "realloc");
    if (need != 0 && umem__resize(h, &w, need) == 0) {
        umem__unlock(h);
        if (big)
            munmap(big, (size_t)(big->end - (char *)big));
        return p;
    }
    /* Moved, under the same lock: neither an allocation nor a free in
     * the counts, as the number of blocks does not change. */
    size_t old = w.big ? (size_t)(w.end - w.block) : umem__size(w.block);
    char *b = NULL;
    if (big) {
        need = (size_t)(big->end - (char *)big);
        umem__span_add(h, big, need);
        h->large_blocks++;
        b = big->first;
    } else if (need != 0) {
        b = umem__take(h, &need, 1); /* as umem_alloc, when the mapping fails */
    }
    if (!b && need != 0 && n <= old - UMEM_HEADER) {
        umem__unlock(h);
        return p; /* a large block that found no room to move to a smaller one */
    }
    if (!b) {
        h->failed_allocs++;
        umem__unlock(h);
        errno = ENOMEM;
        return NULL; /* p is left as it was */
    }
    h->bytes_in_use += need;
    if (h->bytes_in_use > h->peak_bytes_in_use)
        h->peak_bytes_in_use = h->bytes_in_use;
    old -= UMEM_HEADER;
    memcpy(b + UMEM_HEADER, p, old < n ? old : n);
    umem__give_back(h, &w);
    umem__maybe_purge(h);
    umem__unlock(h);
    return b + UMEM_HEADER;
}

static inline void *umem_memalign(umem_t *h, size_t align, size_t n)
{
    if (align == 0 || (align & (align - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    if (align <= UMEM_ALIGN)
        return umem_alloc(h, n);
    if (n == 0)
        return NULL;
    size_t need = umem__need(n);
    struct umem_span *big = NULL;
    if (h->flags & UMEM_GROW && need != 0 && n + align >= UMEM_LARGE)
        big = umem__map_large(h, n, align);
    if (umem__lock(h, 1) != 0) {
        if (big)
            munmap(big, (size_t)(big->end - (char *)big));
        return NULL;
    }
    char *b = NULL;
    if (big) {
        size_t bytes = (size_t)(big->end - (char *)big);
        umem__span_add(h, big, bytes);
        h->large_blocks++;
        b = big->first;
        need = bytes;
    } else if (need != 0 && align <= PTRDIFF_MAX / 4) {
        /* Room for the block, an aligned start and a free block before it. */
        size_t room = need + align + UMEM_MIN_BLOCK;
        char *f = umem__take(h, &room, 1);
        if (f) {
            uintptr_t at = ((uintptr_t)f + UMEM_HEADER + align - 1) & ~(uintptr_t)(align - 1);
            if (at - UMEM_HEADER != (uintptr_t)f && at - UMEM_HEADER - (uintptr_t)f < UMEM_MIN_BLOCK)
                at += align;
            b = (char *)at - UMEM_HEADER;
            size_t lead = (size_t)(b - f), tail = room - lead - need;
            if (tail < UMEM_MIN_BLOCK) {
                need += tail;
                tail = 0;
            }
            /* f's own neighbours are used or the rest of its free block:
             * the lead and the tail are freed as blocks of their own. */
            umem__set_header(h, b, need | UMEM_USED);
            ((size_t *)b)[3] = 0;
            if (tail) {
                umem__set_header(h, b + need, tail | UMEM_USED);
                umem__merge_free(h, b + need, f);
            }
            if (lead) {
                umem__set_header(h, f, lead | UMEM_USED);
                umem__merge_free(h, f, f);
            }
        }
    }
    if (!b) {
        h->failed_allocs++;
        umem__unlock(h);
        errno = ENOMEM;
        return NULL;
    }
    umem__count_alloc(h, need);
    umem__unlock(h);
    return b + UMEM_HEADER;
}

/* ---- umem_check and statistics ---- */

static inline int umem__fail(umem_t *h, const char *what, const void *where)
{
    fprintf(stderr, "umem_check: %s (at %p)\n", what, where);
    umem__unlock(h);
    return -1;
}

struct umem_tally {
    uint64_t nodes, bytes;
    const char *last; /* the previous node in address order */
    const char *broken;
    const void *at;
};

/* I5 (I6 for spans): checks the subtree under x, in address order. */
static inline size_t umem__check_tree(const umem_t *h, const struct umem_node *x,
                                      struct umem_tally *t, unsigned depth, int free_tree)
{
    if (!x || t->broken)
        return 0;
    if (depth >= UMEM_PATH || (uintptr_t)x % UMEM_ALIGN != 0 || !umem__header_ok(h, x)) {
        t->broken = "I5: a tree link points to a non-block (or a cycle)";
        t->at = x;
        return 0;
    }
    size_t hl = umem__check_tree(h, x->left, t, depth + 1, free_tree);
    if (t->broken)
        return 0;
    if ((const char *)x <= t->last) {
        t->broken = free_tree ? "I5: free tree out of address order" : "I6: span tree out of order";
        t->at = x;
        return 0;
    }
    t->last = (const char *)x;
    t->nodes++;
    t->bytes += umem__size(x);
    size_t hr = umem__check_tree(h, x->right, t, depth + 1, free_tree);
    if (t->broken)
        return 0;
    size_t m = umem__size(x), ml = umem__max_of(x->left), mr = umem__max_of(x->right);
    m = m > ml ? (m > mr ? m : mr) : (ml > mr ? ml : mr);
    size_t height = 1 + (hl > hr ? hl : hr);
    if (x->height != height || hl > hr + 1 || hr > hl + 1 || x->max != m) {
        t->broken = "I5: a tree node's height, balance or largest size is wrong";
        t->at = x;
        return 0;
    }
    size_t word = umem__word(x);
    if (free_tree ? (word & UMEM_USED) != 0 || umem__size(x) <= UMEM_SMALL_MAX
                  : !(word & UMEM_MAPPED)) {
        t->broken = free_tree ? "I4: a used or small block in the free tree" : "I6: a span without its mark";
        t->at = x;
    }
    return height;
}

struct umem_walk {
    uint64_t used_blocks, used_bytes;
    uint64_t small_blocks, small_bytes; /* free, on the lists */
    uint64_t large_blocks, large_bytes; /* free, in the tree */
};

/* I1, I2, I3 and the tree half of I4 for one region. */
static inline const char *umem__check_region(umem_t *h, char *first, char *end,
                                             struct umem_walk *w, const void **at)
{
    int prev_free = 0;
    char *b = first;
    while (b < end) {
        *at = b;
        if (!umem__header_ok(h, b))
            return "I1: header check does not match";
        size_t word = umem__word(b);
        size_t size = word & ~UMEM_FLAGS;
        if (size < UMEM_MIN_BLOCK || size % UMEM_ALIGN != 0 || size > (size_t)(end - b) ||
            word & UMEM_MAPPED)
            return "I1: block size out of range";
        if (!!(word & UMEM_PREV_FREE) != prev_free)
            return "I2: UMEM_PREV_FREE disagrees with the block before";
        if (word & UMEM_USED) {
            w->used_blocks++;
            w->used_bytes += size;
            prev_free = 0;
            b += size;
            continue;
        }
        if (umem__footer_before(b + size) != size)
            return "I2: free block footer differs from its size";
        if (prev_free)
            return "I3: two adjacent free blocks";
        if (size <= UMEM_SMALL_MAX) {
            w->small_blocks++;
            w->small_bytes += size;
        } else {
            struct umem_node **path[UMEM_PATH];
            if (umem__tree_path(&h->root, (struct umem_node *)b, path) == 0)
                return "I4: a large free block missing from the free tree";
            w->large_blocks++;
            w->large_bytes += size;
        }
        prev_free = 1;
        b += size;
    }
    *at = b;
    if (b != end || !umem__header_ok(h, end) || umem__size(end) != 0 ||
        !(umem__word(end) & UMEM_USED))
        return "I1: block sizes do not end at the end mark";
    if (!!(umem__word(end) & UMEM_PREV_FREE) != prev_free)
        return "I2: UMEM_PREV_FREE of the end mark is wrong";
    return NULL;
}

/* I4 for the lists: each holds free blocks of its size only, linked both
 * ways, its bit in binmap set when it is not empty. */
static inline const char *umem__check_bins(umem_t *h, struct umem_walk *w, const void **at)
{
    uint64_t blocks = 0, bytes = 0;
    for (unsigned i = 0; i < UMEM_BINS; i++) {
        size_t size = UMEM_MIN_BLOCK + 16u * i;
        struct umem_free *prev = NULL;
        *at = &h->bin[i];
        if (!!h->bin[i] != !!(h->binmap & (uint64_t)1 << i))
            return "I4: binmap disagrees with a list";
        for (struct umem_free *f = h->bin[i]; f; prev = f, f = f->next) {
            *at = f;
            if ((uintptr_t)f % UMEM_ALIGN != 0 || !umem__header_ok(h, f) ||
                umem__word(f) != size)
                return "I4: a list holds something other than a free block of its size";
            if (prev && f->prev != prev)
                return "I4: a list's prev link is wrong";
            if (++blocks > w->small_blocks)
                return "I4: the lists hold more blocks than are free (a cycle?)";
            bytes += size;
        }
    }
    if (blocks != w->small_blocks || bytes != w->small_bytes)
        return "I4: the lists and the small free blocks differ";
    return NULL;
}

/* Every other mapping, in order: regions walked, large blocks checked. */
static inline const char *umem__check_spans(umem_t *h, struct umem_node *x, struct umem_walk *w,
                                            uint64_t *large, const void **at)
{
    for (; x; x = x->right) {
        const char *broken = umem__check_spans(h, x->left, w, large, at);
        if (broken)
            return broken;
        struct umem_span *s = (struct umem_span *)x;
        *at = s;
        if (s->is_region) {
            if (s->first != (char *)s + UMEM_SPAN_BYTES || s->end <= s->first ||
                s->end > (char *)s + umem__size(s))
                return "I6: a region's bounds are wrong";
            broken = umem__check_region(h, s->first, s->end, w, at);
            if (broken)
                return broken;
        } else {
            size_t bytes = umem__size(s);
            if (!umem__header_ok(h, s->first) ||
                ((struct umem_block *)s->first)->word !=
                    ((size_t)(s->end - s->first) | UMEM_USED | UMEM_MAPPED) ||
                s->end != (char *)s + bytes)
                return "I6: a large block's header is wrong";
            (*large)++;
            w->used_bytes += bytes;
        }
    }
    return NULL;
}

/* I8: the calling thread's own cached blocks, which only it may touch. */
static inline const char *umem__check_own_cache(umem_t *h, const void **at)
{
    if (!(h->flags & UMEM_CACHED) || umem__tls_heap != h || umem__tls_secret != h->secret ||
        !umem__tls_cache)
        return NULL;
    struct umem_cache *c = umem__tls_cache;
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed);
    for (unsigned cls = 0; cls < UMEM_BINS; cls++) {
        unsigned n = 0;
        for (void **p = (void **)c->bin[cls]; p; p = (void **)p[0]) {
            char *b = (char *)p - UMEM_HEADER;
            *at = p;
            struct umem_span *sp = NULL;
            int inside = (b >= h->first && (char *)p < end) ||
                         ((sp = umem__span_find(h, b)) != NULL && sp->is_region &&
                          b >= sp->first && (char *)p < sp->end);
            if (++n > c->count[cls] || !inside)
                return "I8: a cache list runs past its count or out of the heap";
            if (!umem__header_ok(h, b) || !(((struct umem_block *)b)->word & UMEM_USED) ||
                umem__size(b) != UMEM_MIN_BLOCK + 16u * cls ||
                (size_t)(uintptr_t)p[1] != umem__tag(h, p))
                return "I8: a cached block is not a used, tagged block of its class";
            if (!umem__header_ok(h, b + umem__size(b)))
                return "I8: a write past the end of a cached block";
        }
        if (n != c->count[cls])
            return "I8: a cache list is shorter than its count";
    }
    return NULL;
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
    struct umem_tally free_tree = {0}, span_tree = {0};
    umem__check_tree(h, h->root, &free_tree, 0, 1);
    if (free_tree.broken)
        return umem__fail(h, free_tree.broken, free_tree.at);
    umem__check_tree(h, h->spans, &span_tree, 0, 0);
    if (span_tree.broken)
        return umem__fail(h, span_tree.broken, span_tree.at);

    struct umem_walk w = {0};
    uint64_t large = 0;
    const void *at = h;
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed);
    const char *broken = umem__check_region(h, h->first, end, &w, &at);
    if (!broken)
        broken = umem__check_spans(h, h->spans, &w, &large, &at);
    if (!broken)
        broken = umem__check_bins(h, &w, &at);
    if (!broken)
        broken = umem__check_own_cache(h, &at);
    if (broken)
        return umem__fail(h, broken, at);
    if (w.large_blocks != free_tree.nodes || w.large_bytes != free_tree.bytes)
        return umem__fail(h, "I4: the free tree and the large free blocks differ", h->root);
    if (large != h->large_blocks)
        return umem__fail(h, "I6: large blocks counted and found differ", h);
    if (h->allocs + h->refill_blocks - h->frees - h->flush_blocks != w.used_blocks + large)
        return umem__fail(h, "I7: allocs - frees differs from the used blocks", h);
    if (h->bytes_in_use != w.used_bytes)
        return umem__fail(h, "I7: bytes_in_use differs from the used blocks", h);
    if (h->peak_bytes_in_use < h->bytes_in_use)
        return umem__fail(h, "I7: peak_bytes_in_use below bytes_in_use", h);
    umem__unlock(h);
    return 0;
}

static inline void umem_get_stats(umem_t *h, umem_stats_t *out)
{
    memset(out, 0, sizeof *out);
    int locked = umem__lock(h, 0) == 0;
    uint64_t hits = h->gone_hits, cache_frees = h->gone_frees, cached = 0;
    for (struct umem_cache *c = locked ? h->caches : NULL; c; c = c->next) {
        hits += umem__get(&c->hits);
        cache_frees += umem__get(&c->frees);
        cached += umem__get(&c->bytes);
    }
    out->lock_count = h->lock_count;
    out->lock_contended = h->lock_contended;
    out->allocs = h->allocs + hits;
    out->frees = h->frees + cache_frees;
    out->failed_allocs = h->failed_allocs;
    out->bytes_in_use = h->bytes_in_use > cached ? h->bytes_in_use - cached : 0;
    out->peak_bytes_in_use = h->peak_bytes_in_use;
    out->heap_bytes = h->heap_bytes;
    out->owner_died = h->owner_died;
    out->cache_hits = hits;
    out->cache_frees = cache_frees;
    out->cache_refills = h->cache_refills;
    out->cache_flushes = h->cache_flushes;
    out->cached_bytes = cached;
    out->mapped_bytes = h->mapped_bytes;
    out->large_blocks = h->large_blocks;
    out->released_bytes = h->released_bytes;
    if (locked)
        umem__unlock(h);
}

#endif /* UMEM_H */
