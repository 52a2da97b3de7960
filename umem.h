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
 * WHERE THINGS ARE SAID
 *   The contract (every call, flag, setting, statistic, error and limit)
 *   is the manual page umem(3), and only there; the prototypes below
 *   carry two or three lines of it each.  docs/design.md gives the tour
 *   and docs/performance.md the measurements.  This comment gives the
 *   design in brief and the invariants; each part below opens with the
 *   design of its own concern.
 *
 * THE DESIGN IN BRIEF
 *   A heap is one mapping whose start holds its control block, then
 *   blocks with 16-byte headers carrying boundary tags.  Free blocks of up
 *   to 1,056 bytes sit on one list per exact size, larger ones in an AVL
 *   tree by address that finds the lowest-addressed fit (segregated first
 *   fit).  One lock guards it (process-shared and robust for UMEM_SHARED,
 *   none for UMEM_NOLOCK).  UMEM_GROW reserves address space and commits
 *   it as needed, maps further regions, gives large requests mappings of
 *   their own and gives free pages back on a delay.  UMEM_CACHED puts a
 *   pool of pages per thread in front of the lock: blocks of up to 4 KiB
 *   are slots of pages a thread owns, allocated and freed without the
 *   lock, and a thread keeps a few of the blocks of up to 64 KiB it frees
 *   for its next requests of their size.  fork()
 *   holds every private heap's lock and lends it to calls that cannot
 *   wait.  A watched heap (valgrind, AddressSanitizer, UMEM_DEBUG) puts a
 *   layer of records, guards and a quarantine in front of all that, and
 *   is checked at exit; UMEM_GUARD puts every block, or one in N, on
 *   pages of its own beside a no-access page.
 *
 * CONTENTS, in the order they are included.  Each part uses only what
 * comes before it, but for the calls into later parts that umem/internal.h
 * declares, each with the part that defines it (tests/test_layout.sh
 * checks both); and each refuses to be included but from here.
 *
 *   umem.h           this page: the public types, flags and calls, the
 *                    internal interface of libumem.c, the test hooks
 *   umem/platform.h  compiler attributes, valgrind and AddressSanitizer
 *                    glue, misuse reports, the process-wide state,
 *                    mappings and the clock
 *   umem/layout.h    settings, the block layout, headers, the control
 *                    block, pages and pools as types
 *   umem/internal.h  the calls a part makes into a later part
 *   umem/tree.h      the AVL trees of free blocks and of mappings
 *   umem/lock.h      the lock, and fork(): locks held and lent
 *   umem/heap.h      free blocks: lists, the tree, merging, first fit
 *   umem/regions.h   mappings of regions, growth, purges on a delay
 *   umem/large.h     large blocks: a mapping each, and their cache
 *   umem/locate.h    a pointer handed back: found, checked, given back;
 *                    calls made while a fork holds the lock
 *   umem/pages.h     a pool's pages: slots, free lists, remote frees
 *   umem/pools.h     pages carved and given back, a thread's pool
 *   umem/calls.h     allocation, free, realloc, memalign: the plain path
 *   umem/debug.h     the watched path: records, guards, quarantine,
 *                    tools, and a program's own pools
 *   umem/guard.h     UMEM_GUARD: blocks on pages of their own beside a
 *                    guard page, and the SIGSEGV handler that reports
 *                    a fault in one
 *   umem/exit.h      the check at exit of a watched heap still alive
 *   umem/api.h       umem_create, umem_destroy, the public wrappers,
 *                    umem_trim and umem_set_purge_min
 *   umem/check.h     umem_check and the statistics
 *   umem/hooks.h     the test hooks
 *
 * PROCESS-WIDE STATE
 *   What every heap in a process shares (the private heaps fork() must
 *   hold, each thread's pool) is defined in one place, umem/platform.h,
 *   as weak symbols (gcc, clang): any number of files of one program may
 *   include this header and share one copy, with no file singled out to
 *   hold it.  Why not stb's single UMEM_IMPLEMENTATION: every call here is
 *   static inline so that a program's hot path inlines the allocator;
 *   with one implementation file it would call across files instead.
 *   With other compilers the state is static: use the heap from one file.
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
 *   I7 allocs + pages carved - frees - pages given back = used blocks;
 *      bytes_in_use (heap view, pages whole) = their total size;
 *      peak_bytes_in_use >= bytes_in_use.
 *   I8 every unit map marks exactly the units of pages: each is a used
 *      block of its units, its header (class, slot size, layout) right;
 *      the pages and their bytes are those counted.
 *   I9 the pages of ended threads, and the calling thread's own, sit on
 *      the list their header names, with the owner it names and the marks
 *      that list gives (full_bit on the full list; UMEM_SERVES in the
 *      count of the first page with room, and of no other); the calling
 *      thread's serve[] names each class's first page with room, or
 *      umem__no_page (no slot) where there is none; each free list holds tagged
 *      slots handed out before (remote ones count as used until
 *      collected), a remote list is as long as its page's count of it,
 *      and free, untouched and used slots add up to the capacity.
 *   I10 each block the calling thread keeps (umem/pools.h, MID BLOCKS) is
 *      a used block cut for the class it is kept in, and carries its tag;
 *      the blocks and their bytes are those counted.
 */
#ifndef UMEM_H
#define UMEM_H

#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define UMEM_SHARED 1u
#define UMEM_NOLOCK 2u
#define UMEM_GROW   4u
#define UMEM_CACHED 8u
#define UMEM_DEBUG  16u
#define UMEM_GUARD  32u

typedef struct umem umem_t;

typedef struct umem_stats {
    uint64_t lock_count;        /* lock acquisitions by alloc, free, realloc, memalign */
    uint64_t lock_contended;    /* of those, the ones that had to wait */
    uint64_t allocs;            /* successful allocations (the pools' included) */
    uint64_t frees;             /* frees of a non-NULL pointer (the pools' included) */
    uint64_t failed_allocs;     /* allocations that returned NULL, n > 0 */
    uint64_t bytes_in_use;      /* blocks the program holds, headers included */
    uint64_t peak_bytes_in_use; /* highest bytes the heap had handed out (pages whole) */
    uint64_t heap_bytes;        /* bytes the regions hold for blocks */
    int owner_died;             /* a lock owner died: the heap is closed */
    uint64_t cache_hits;        /* allocations a thread's pool served, without the lock */
    uint64_t cache_frees;       /* frees into pools' pages or kept by the thread, no lock */
    uint64_t cache_refills;     /* pages carved from the heap for pools (one lock each) */
    uint64_t cache_flushes;     /* empty pages given back to the heap (see lock_count) */
    uint64_t cached_bytes;      /* bytes of pool pages not in blocks handed out, and of
                                   blocks threads keep (headers included), now */
    uint64_t mapped_bytes;      /* bytes mapped read-write now (unit maps left out) */
    uint64_t large_blocks;      /* blocks with a mapping of their own, now */
    uint64_t released_bytes;    /* bytes of free pages given back with madvise, in all */
    uint64_t remote_frees;      /* of cache_frees, those into another thread's page */
    uint64_t pool_pages;        /* pages the pools hold now (abandoned ones included) */
    uint64_t abandoned_pages;   /* of those, pages of ended threads, left for adoption */
    uint64_t purges;            /* purges that gave free pages back */
    uint64_t map_reuses;        /* large blocks served by a mapping freed before */
    uint64_t lent_calls;        /* calls that found the lock held by fork() and did
                                   without it (umem(3), Fork), once settled */
    uint64_t held_blocks;       /* freed blocks held back from reuse, counted in use
                                   (UMEM_DEBUG, AddressSanitizer: umem(3), DEBUGGING) */
    uint64_t large_bytes;       /* of bytes_in_use, the large blocks' own mappings */
    uint64_t map_cache_bytes;   /* freed large mappings kept for reuse, now */
    uint64_t unpurged_bytes;    /* bytes freed since the last purge, perhaps resident
                                   (umem(3), Statistics) */
} umem_stats_t;

/* ---- the calls (umem(3) has their whole contract) ---------------------- */

/* A heap of `bytes` (rounded up to pages; UMEM_GROW: a starting size) with
 * `flags`.  NULL with errno EINVAL (bad flags or a size too small for one
 * block) or ENOMEM; or the error pthread_mutex_init or pthread_key_create
 * gave. */
static inline umem_t *umem_create(size_t bytes, unsigned flags);

/* Unmaps every mapping of h.  No other thread may use h meanwhile; in a
 * process other than a UMEM_SHARED heap's creator it only unmaps. */
static inline void umem_destroy(umem_t *h);

/* n bytes, 16-byte aligned.  NULL for n == 0 (UMEM_GUARD: a no-access
 * pointer when the block is guarded); NULL with errno ENOMEM when
 * nothing fits (EOWNERDEAD: a shared heap whose lock owner died). */
static inline void *umem_alloc(umem_t *h, size_t n);

/* Gives p back (NULL: nothing).  A pointer umem_alloc did not return, or
 * one freed already, is reported on one line naming it, then abort().
 * errno is left alone. */
static inline void umem_free(umem_t *h, void *p);

/* p resized to n bytes, in place where it can, else moved; the contents
 * up to the smaller size are kept.  p NULL: umem_alloc; n == 0: frees p,
 * NULL.  NULL with errno ENOMEM leaves p as it was. */
static inline void *umem_realloc(umem_t *h, void *p, size_t n);

/* n bytes aligned to `align`, a power of two (else NULL, EINVAL); freed
 * by umem_free. */
static inline void *umem_memalign(umem_t *h, size_t align, size_t n);

/* The bytes the caller may use at p, at least what it asked for; 0 for
 * NULL. */
static inline size_t umem_usable_size(umem_t *h, const void *p);

/* 0 when every invariant holds (INVARIANTS, above), else prints the first
 * one broken on stderr and returns -1. */
static inline int umem_check(umem_t *h);

/* A snapshot of h's counters (umem_stats_t). */
static inline void umem_get_stats(umem_t *h, umem_stats_t *out);

/* UMEM_GROW: gives back now, rather than after the delay, the free pages
 * of h but the first `keep` bytes of them, and its cached large mappings;
 * the calling thread's empty pool pages and the blocks it keeps, and the
 * pages of ended threads, first go back to the heap.  Returns the bytes given back (0 on another
 * heap). */
static inline size_t umem_trim(umem_t *h, size_t keep);

/* UMEM_GROW: the bytes freed since the last purge that make a heap with
 * an eighth or less of it in use give its free pages back at once, all
 * but its first UMEM_PURGE_KEEP bytes (UMEM_PURGE_MIN until set; 0: at
 * each call that takes the lock, and every page, none kept).  Returns the
 * value it replaces. */
static inline size_t umem_set_purge_min(umem_t *h, size_t bytes);

/* For a program that carves pieces of its own from a umem block: whether
 * a tool watches h, and how to tell it of the pool and of each piece
 * (no-ops on a heap no tool watches).  See umem/debug.h. */
static inline int umem_watched(const umem_t *h);
static inline void umem_tell_pool(umem_t *h, void *pool, size_t bytes);
static inline void umem_tell_pool_gone(umem_t *h, void *pool, size_t bytes);
static inline void umem_tell_alloc(umem_t *h, void *pool, void *p, size_t n);
static inline void umem_tell_free(umem_t *h, void *pool, void *p, size_t room);

/* ---- the internal interface: what libumem.c uses besides the calls ----
 * These nine, the settings and UMEM_TLS (an initial-exec thread-local,
 * umem/platform.h); nothing else of umem's insides is meant for code
 * outside this header. */

/* One line on stderr, "umem: WHAT P", then abort(): misuse reports. */
static void umem__die(const char *what, const void *p);

/* Whether p, just allocated with n bytes, is known to hold zeros: a large
 * block in a mapping of its own fresh from mmap, on an unwatched heap. */
static inline int umem__fresh(const umem_t *h, const void *p, size_t n);

/* The fast ways of umem_alloc and umem_free on a heap with pools
 * (UMEM_CACHED) that no tool watches (umem_watched() is 0, and neither
 * UMEM_DEBUG nor AddressSanitizer is on): umem__alloc is umem_alloc;
 * umem__free_pooled frees p when it is a pooled slot and returns 1, else
 * returns 0 and does nothing (NULL, a block with a header, a pointer
 * umem never gave). */
static inline void *umem__alloc(umem_t *h, size_t n);
static inline int umem__free_pooled(umem_t *h, void *p);

/* Whether h has pools and no tool watches it: the heap those two serve. */
static inline int umem__plain_pools(const umem_t *h);

/* malloc's first look, for a program of one such heap that it never
 * destroys (another thread's look could find a destroyed heap's pool): a
 * request of at
 * most UMEM_SERVE_MAX bytes from the first free slot of the page that
 * serves its size in the calling thread's pool of the plain heap it uses,
 * with no look at the heap; NULL (nothing done) when there is none: a
 * request of 0 bytes or over UMEM_SERVE_MAX, a thread with no such pool
 * yet, a page with no free slot.  umem__alloc then serves it. */
static inline void *umem__alloc_served(size_t n);

/* Whether h has pools and only UMEM_GUARD=N (N > 1) watches it: one
 * block in N, drawn per thread, is guarded.  Those two serve it as well,
 * umem__alloc only when umem__guard_skip says (and counts) that this
 * thread's next allocation on it is not drawn; umem__free_pooled frees
 * any of its slots (a guarded block lies in no page). */
static inline int umem__sampled_pools(const umem_t *h);
static inline int umem__guard_skip(void);

/* A watched heap's check at exit (umem/debug.h): its blocks still
 * allocated are headed `what`, and the exit status becomes `code` (1 to
 * 255) when there are any; another code leaves the program's own. */
static inline void umem__exit_as(umem_t *h, const char *what, int code);

/* ---- test hooks: what the tests may reach besides the calls -----------
 * Each corrupts or inspects one thing on purpose, to show that umem_check
 * or a misuse check sees it; none is meant for a program. */

/* A pooled slot p: the end of its page's last slot. */
static inline char *umem__hook_page_limit(umem_t *h, const void *p);

/* Puts the block whose payload is `by` in the place of the free block
 * whose payload is `block` (of `size` bytes; 0: as its header says), at
 * the head of its small-size list or in the free tree, with its links.
 * Returns the size, or 0 when `block` is in neither place.  Called again
 * with the two swapped and that size, it undoes itself. */
static inline size_t umem__hook_replace_free(umem_t *h, void *block, void *by, size_t size);

/* Takes h's lock as umem's own calls do, uncounted, and keeps it until
 * umem__hook_drop_lock. */
static inline void umem__hook_hold_lock(umem_t *h);
static inline void umem__hook_drop_lock(umem_t *h);

/* The fork() handlers' prepare and parent halves, called as fork() calls
 * them: between the two, every private heap's lock is held and lent. */
static inline void umem__hook_fork_prepare(void);
static inline void umem__hook_fork_parent(void);

/* Whether the calling thread's pool of h serves a request of n bytes (0
 * to UMEM_SERVE_MAX) from the page of the pooled slot p (NULL: from a page
 * with no free slot, as a class with no page with room does): 1 if so, 0
 * if not, -1 when the thread has no pool of h. */
static inline int umem__hook_serves(umem_t *h, size_t n, const void *p);

/* The offsets in the page of the pooled slot p at which the free's test
 * of a slot's start disagrees with a division by the slot size. */
static inline size_t umem__hook_slot_starts_wrong(umem_t *h, const void *p);

/* The unit map of h's first region (UMEM_CACHED), and its bytes. */
static inline void *umem__hook_unit_map(umem_t *h, size_t *bytes);

/* The mappings of h other than its first. */
static inline size_t umem__hook_spans(umem_t *h);

/* The page of the pooled slot p: one bit of its header's magic word
 * flipped (which: 0), or one bit of the unit map's pointer for the unit
 * p lies in (1).  Called again the same way, each undoes itself; the
 * slots of that page must not be used meanwhile. */
static inline void umem__hook_flip_page(umem_t *h, const void *p, int which);

/* The two subtrees of the root of h's tree of mappings swapped: called
 * again, it undoes itself; nothing but umem_check may use h meanwhile. */
static inline void umem__hook_swap_spans(umem_t *h);

/* The end of the region, other than h's first, that holds p moved by
 * `by` bytes; moved back by -by.  Nothing but umem_check may use h
 * meanwhile. */
static inline void umem__hook_move_region_end(umem_t *h, const void *p, ptrdiff_t by);

/* One of h's counts moved by `by` (lock held by no one): allocs (which:
 * 0), bytes_in_use (1) or peak_bytes_in_use (2).  Moved back by -by. */
static inline void umem__hook_miscount(umem_t *h, int which, int64_t by);

#include "umem/platform.h"
#include "umem/layout.h"
#include "umem/internal.h"
#include "umem/tree.h"
#include "umem/lock.h"
#include "umem/heap.h"
#include "umem/regions.h"
#include "umem/large.h"
#include "umem/locate.h"
#include "umem/pages.h"
#include "umem/pools.h"
#include "umem/calls.h"
#include "umem/debug.h"
#include "umem/guard.h"
#include "umem/exit.h"
#include "umem/api.h"
#include "umem/check.h"
#include "umem/hooks.h"

#endif /* UMEM_H */
