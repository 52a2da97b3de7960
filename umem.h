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
 *              UMEM_CACHED  a pool of pages per thread in front of the
 *                           lock (see POOLS);
 *              UMEM_DEBUG   guards, a quarantine and leak reports, with
 *                           no tool (see DEBUGGING).
 *       UMEM_GROW and UMEM_CACHED combine with each other and GROW with
 *       NOLOCK; UMEM_DEBUG with every flag.  Refused with EINVAL: SHARED
 *       with NOLOCK, with GROW (a mapping added after fork() would exist
 *       in one process only) or with CACHED (a pool lives in one
 *       process's memory); NOLOCK with CACHED (one thread needs no pool
 *       in front of a lock it lacks).
 *       NULL with errno = EINVAL for those, unknown flags or a size too
 *       small for the control block and one block; ENOMEM when the mapping
 *       fails (or the size could not be mapped in any address space).
 *   void umem_destroy(umem_t *h);
 *       Unmaps the heap's every mapping.  In a process other than the
 *       creator of a UMEM_SHARED heap it only unmaps, leaving the heap to
 *       the others; the creator's destroys the mutex, so it comes last.
 *       No other thread may be using the heap, or exit while it is
 *       destroyed (its pool would go back to a heap being unmapped).
 *   void *umem_alloc(umem_t *h, size_t n);
 *       16-byte aligned.  NULL for n == 0, and NULL with errno = ENOMEM
 *       when nothing fits (counted in failed_allocs).
 *   void umem_free(umem_t *h, void *p);
 *       NULL is a no-op.  Merges p's block with free neighbours at once
 *       (a block in a pool's page goes back to its page).  A pointer
 *       umem_alloc did not return, or one already freed, prints one line
 *       naming it on stderr and calls abort().
 *   void *umem_realloc(umem_t *h, void *p, size_t n);
 *       NULL p: umem_alloc.  n == 0: frees p, returns NULL.  Otherwise
 *       grows the block in place into a free block after it, or shrinks it
 *       in place, else moves it; the contents are kept up to the smaller
 *       size.  NULL with errno = ENOMEM leaves p as it was.  A block in a
 *       pool's page stays where it is, without the lock, while the new
 *       size fits its slot and wastes less than half of it, else moves.
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
 *   int umem_watched(const umem_t *h);
 *   void umem_tell_pool(h, pool, bytes), umem_tell_alloc(h, pool, p, n),
 *        umem_tell_free(h, pool, p, room), umem_tell_pool_gone(h, pool, bytes);
 *       For a program that carves its own pieces from a umem block: tell
 *       valgrind or AddressSanitizer about them (see DEBUGGING).
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
 *   call that starts a purge (UMEM_GROW, below), which walks the large
 *   free blocks of two pages or more: at most once per half purge delay,
 *   or once per UMEM_PURGE_MIN freed on a heap that has emptied.
 *
 * LOCKING AND STATISTICS
 *   Every umem_alloc, umem_free, umem_realloc and umem_memalign that the
 *   heap serves, not a pool, takes its lock once (none with UMEM_NOLOCK);
 *   a large
 *   block (UMEM_GROW) takes it twice when no freed mapping can serve it,
 *   once to look and once to add the new one.  A caller that finds the
 *   lock taken spins briefly, then naps UMEM_NAP_NS between attempts
 *   instead of queueing on the mutex: a lock taken for every allocation
 *   is best left with the thread that holds it for a burst of calls,
 *   since handing it (and the heap's cache lines) to another core on
 *   every call costs more than the calls.  On a UMEM_CACHED heap, whose
 *   lock is taken rarely and briefly, a caller that finds it taken queues
 *   on the mutex after its spins instead, to be woken as soon as it is
 *   free, looking up every UMEM_WAIT_NS (1 ms) for a fork that holds it
 *   (see FORK).  A realloc that moves a block to a large block of its own
 *   takes the lock three times.  lock_count counts the acquisitions by
 *   those calls (a page carved, adopted or given back is one), and
 *   lock_contended the ones that found the lock taken.  umem_check,
 *   umem_get_stats and umem_usable_size (of a block with a header) take
 *   the lock as well but are not counted, so that looking at the heap
 *   does not change what is seen; nor are those a thread's pool takes to
 *   be set up and given back.  The heap's counters
 *   live in the region and change only under the lock (but for the
 *   atomic counts of frees by threads with no pool), so they are exact
 *   across threads and, for UMEM_SHARED, across processes; the pools'
 *   are read without stopping their threads, exact when those are quiet.
 *
 * POOLS (UMEM_CACHED): PAGES OWNED BY A THREAD
 *   The design is mimalloc's free list sharding (Leijen, Zorn and de
 *   Moura, 2019) in front of the first-fit heap; chosen over magazines
 *   and a depot (Bonwick and Adams, 2001) because a free from another
 *   thread then costs one compare-and-swap and never the lock, and over
 *   snmalloc's message queues because a page's own list needs no batching
 *   to be cheap.
 *   - A request of up to UMEM_POOL_MAX (64 KiB) has a size class: 16-byte
 *     steps to 128, then four classes per doubling (at most a quarter
 *     lost to rounding).  Each thread has a pool per heap: for each class,
 *     a list of pages with room, the first of which serves, and a list of
 *     full ones.
 *   - A page is a used block of the heap, cut where its payload starts on
 *     a 64 KiB unit boundary, one unit long (several for classes over
 *     8 KiB: seven slots at least).  It holds a header, a map of its slots
 *     in use (one bit each, the owner's), then slots of its class with no
 *     header of their own: a slot's page is found from its address
 *     through the heap's unit map (one byte per unit), with no lock.
 *   - The owner allocates by popping its first page's free list, which
 *     takes fresh slots from the page's end 4 KiB at a time; it frees by
 *     pushing onto the page's list and clearing the slot's bit.  No lock,
 *     no atomic read-modify-write; a free never reads the block itself.
 *   - Another thread's free pushes the slot onto the page's remote list
 *     with one compare-and-swap.  The owner takes that list whole when
 *     the page runs dry; a full page is marked watched, and a free into it
 *     sets a hint that sends its owner to sweep its full pages.
 *   - When a class runs dry, the pool takes, under the lock, a page a
 *     thread that ended left behind (adopted), else carves a new one.  A
 *     page its owner's free empties goes back to the heap under the lock,
 *     but a class keeps one empty page to serve; a page other threads'
 *     frees empty waits until its owner takes them back or ends.  A
 *     fixed-size heap keeps half its room for blocks with headers.
 *   - When a thread exits (a pthread key destructor), its empty pages go
 *     back to the heap and the others wait, abandoned, for a thread that
 *     needs a page of their class; those other threads' frees empty go
 *     back at the next thread exit, purge epoch or allocation that finds
 *     no room.  Its pool waits for a new thread (pools
 *     are never unmapped before umem_destroy, since a late remote free
 *     may write its hint).  Allocations the thread makes later take the
 *     lock; its frees of pooled blocks are remote frees.
 *   - Larger requests, aligned ones over UMEM_PAGE_HEAD (128) bytes, and
 *     requests a pool cannot place (its heap is out of room for a page,
 *     or the page would lie in a region past the first UMEM_UNIT_MAPS)
 *     get blocks with headers, under the lock.
 *   Statistics: cache_hits and cache_frees count the blocks the pools hand
 *   out and take back (realloc's moves included, which allocs and frees
 *   leave out), cache_refills and cache_flushes the pages carved and given
 *   back, cached_bytes the room in pages not handed out, remote_frees the
 *   frees into another thread's page; bytes_in_use counts a pooled block
 *   as its slot.  Limits: one pthread key per heap (at most
 *   PTHREAD_KEYS_MAX cached heaps at a time).
 *
 * GROWTH (UMEM_GROW)
 *   The heap sets aside UMEM_RESERVE (64 GiB) of address space, or as much
 *   as the system allows, and commits it with mprotect as it grows (at
 *   least 1 MiB or half the heap at a time).  When that is used up, it
 *   maps further regions.  A block that umem_realloc grows in place stays
 *   where it is, whatever its size.  Nothing is ever unmapped but large
 *   blocks' mappings: the address space of a grown heap stays until
 *   umem_destroy.
 *
 * LARGE BLOCKS (UMEM_GROW)
 *   Requests of UMEM_LARGE (1 MiB) or more (for umem_memalign, when the
 *   size plus the alignment are) get a mapping of their own; where that
 *   mapping fails they come from the regions.  A freed one is not
 *   unmapped at once: up to UMEM_MAP_CACHE (8) of them, and no more bytes
 *   than half the heap in use (at least 64 MiB), wait for the next large
 *   request, which takes the smallest that holds it (trimmed when it would
 *   waste over a quarter); where Linux's mremap is there, a request larger
 *   than all of them grows the largest, and umem_realloc grows or shrinks
 *   a large block with mremap instead of copying it.  A large block shrunk
 *   to half its size or less by umem_realloc moves (by mremap, or to a
 *   block of the new size), so that its pages go back.
 *
 * GIVING MEMORY BACK, ON A DELAY (UMEM_GROW)
 *   Each large free block records the range of its bytes that may be
 *   resident and the purge epoch in which that range last grew (a block
 *   freed next to an older range takes its age).  An epoch is half of
 *   UMEM_PURGE_DELAY_MS (1 s) long and advances only on a call that finds
 *   it due: one that takes the lock to allocate, free or move a block with
 *   a header, carves or gives back a page, or ends a thread (the clock is
 *   read on one in 16).  When it advances, the whole pages of ranges older
 *   than the delay go back with madvise(MADV_DONTNEED), and cached large
 *   mappings are unmapped: a program that frees and allocates again at
 *   once keeps its pages.  A heap that has emptied (an eighth of it in
 *   use, and UMEM_PURGE_MIN, 4 MiB, or more freed since the last purge)
 *   gives every free page and cached mapping back on the call that sees
 *   it, so that a
 *   program that frees its memory and goes idle shrinks with no call
 *   after.  released_bytes adds up every madvise; purges counts the
 *   purges that gave pages back.  Otherwise, a heap no call reaches keeps
 *   its pages.
 *
 * FORK
 *   pthread_atfork handlers, registered once per process (see LIMITS),
 *   hold the lock of every private locked heap across fork(), so a child
 *   of a threaded process finds each heap whole, with its lock made anew,
 *   and may allocate at once.  fork() never waits on a thread that waits
 *   for it:
 *   - While a fork() holds a heap's lock, the lock is lent: a call of
 *     umem_alloc, umem_free, umem_realloc, umem_memalign or
 *     umem_usable_size that finds it busy does not wait, since its thread
 *     may hold a lock that fork() takes after the handlers (glibc's list
 *     of streams, held by a thread in fflush(NULL) that waits for a
 *     stream whose thread is in getline(), and so in realloc).  It does
 *     without: an allocation gets a mapping of its own (even on a
 *     fixed-size heap), a free or a move waits on a list, checked as far
 *     as the block's own header allows, and the next holder of the lock
 *     settles both (the full checks of a free then run).  lent_calls
 *     counts them.  umem_check, umem_get_stats and a thread's exit wait.
 *   - Each thread notes the private heap whose lock it is taking or
 *     holds: a fork() from a signal handler that interrupted such a call
 *     does not wait for that lock; the call finishes, in the parent and
 *     in the child (where the lock is made anew and held again for it),
 *     and the handler's own calls on that heap do without it.  The same
 *     holds for a fork() from a handler that interrupted another fork()
 *     between its handlers.  As
 *     with glibc, this is for a process with one thread: with several, a
 *     fork() by another thread at that moment waits for the interrupted
 *     call, which waits for it.
 *   The pools of the parent's other threads stay in the child unused.
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
 *            | UMEM_REUSED (a large block whose mapping served another);
 *            `check` = word without UMEM_PREV_FREE ^ header address ^ the
 *            heap's secret.
 *   free block: its last 8 bytes (the footer) repeat its size; a small
 *            one's payload starts with its list links (next, prev), a
 *            large one's with its tree node (left, right, largest size
 *            below, height, the range that may be resident and its age).
 *   page:    a used block whose payload starts on a unit boundary:
 *            [header | map of slots in use | slot slot ... slot | rest];
 *            a free slot starts with its list's link and a tag, the
 *            heap's secret ^ its address, that marks it free.
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
 *   I7 allocs + pages carved - frees - pages given back = used blocks;
 *      bytes_in_use (heap view, pages whole) = their total size;
 *      peak_bytes_in_use >= bytes_in_use.
 *   I8 every unit map marks exactly the units of pages: each is a used
 *      block of its units, its header (class, slot size, layout) right;
 *      the pages and their bytes are those counted.
 *   I9 the pages of ended threads, and the calling thread's own, sit on
 *      the list their header names, with the owner it names; each free
 *      list holds tagged slots handed out before, clear in the page's map
 *      (remote ones set until collected), and free, untouched and used
 *      slots add up to the capacity, used ones to the map's bits.
 *
 * HOW A FREED POINTER IS CHECKED
 *   A block with a header: it must lie inside a region or be a large
 *   block's start, and be 16-byte aligned; its header's check must match
 *   (user data almost never forms header + address + secret, so interior
 *   pointers fail here); the block must be marked used (else: double
 *   free); and the next header must be intact and say its predecessor is
 *   used (else something wrote past the block's end).  A large block
 *   freed twice: its mapping may be cached or gone, when the second free
 *   is reported as a pointer outside the heap, unless the mapping serves
 *   another large block by then (a cached one reused, or the system
 *   mapping the same address again): that block is then freed, as with
 *   any allocator that reuses memory.
 *   A slot of a pool's page: it must start a slot of the page (else: not
 *   from umem_alloc); for its owner, its bit in the page's map must be
 *   set (else: double free, or a slot never handed out); for another
 *   thread, it must not carry the free tag.  A slot freed by another
 *   thread, then by its owner before the owner took the remote list, is
 *   caught when the owner takes that list, if the slot was not handed out
 *   again meanwhile (then it may be reported as written after its free,
 *   or not at all).  A slot taken from a free list must
 *   still carry its tag, or the allocation stops there: a write after
 *   free over the link cannot hand out an address of the writer's
 *   choosing without the heap's secret.  A write past a slot's end is not
 *   seen (slots have no header), unless it spoils a free neighbour's tag.
 *
 * DEBUGGING
 *   Under valgrind's memcheck (where <valgrind/memcheck.h> was found at
 *   build time, and unless UMEM_VALGRIND=0 is in the environment) every
 *   block is announced with client requests and the rest of the heap is
 *   no-access; umem's own work runs with memcheck's reports off.  Built
 *   with AddressSanitizer (unless UMEM_ASAN is defined to 0), or with the
 *   flag UMEM_DEBUG, each block carries a record before it (its size, the
 *   calls that allocated it, a seal and a left guard) and guard bytes
 *   after it, freed blocks wait in a quarantine (UMEM_QUARANTINE_BLOCKS,
 *   UMEM_QUARANTINE_BYTES) filled with a pattern, misuse is reported on
 *   one line with abort(), and umem_destroy lists the blocks still
 *   allocated; under AddressSanitizer the guards and the held blocks are
 *   poisoned too.  On a watched heap umem_realloc always moves the block
 *   and umem_usable_size returns the size asked for; a held block counts
 *   as in use (held_blocks).  A UMEM_SHARED heap gets UMEM_DEBUG's alone.
 *   With none of these, a call pays one test of the heap's flags.  See
 *   the section of that name below and umem(3).
 *
 * SETTINGS
 *   Each of these may be defined before the include: UMEM_LARGE,
 *   UMEM_RESERVE, UMEM_PURGE_MIN, UMEM_PURGE_DELAY_MS, UMEM_MAP_CACHE,
 *   UMEM_SPIN, UMEM_NAP_NS, UMEM_WAIT_NS, UMEM_QUARANTINE_BLOCKS and
 *   UMEM_QUARANTINE_BYTES; UMEM_ASAN (0: no AddressSanitizer support).
 *
 * ERRORS
 *   umem_create: EINVAL as above; ENOMEM; or what pthread_mutex_init or
 *   pthread_key_create said (EAGAIN: no pthread key left).  umem_free
 *   never changes errno, nor does umem_realloc unless it fails: both save
 *   it around the system calls they make (madvise, munmap, mremap,
 *   mprotect, mmap, a nap on a busy lock).  Every call
 *   on a UMEM_SHARED heap whose lock owner died: NULL and EOWNERDEAD, or
 *   nothing done (umem_free), or 0 (umem_usable_size).  umem_realloc that
 *   moves a block counts as neither an allocation nor a free, as the
 *   number of blocks does not change.
 *
 * LIMITS
 *   What every heap shares (the list of heaps for fork(), each thread's
 *   pool pointer) is defined once per program with gcc and clang, as
 *   weak symbols, so any number of files may include this header; with
 *   other compilers, use it from one file.  The fork() handlers are
 *   registered before main() (a constructor; elsewhere at the first
 *   umem_create); handlers registered earlier run while the fork holds
 *   the locks, and their allocations do without them (see FORK).  A
 *   private heap is copied by fork() like any memory; share it with
 *   UMEM_SHARED instead.  A UMEM_SHARED or fixed-size heap never grows
 *   (but for blocks mapped while a fork holds its lock).  A growing heap
 *   commits no more of its reservation than RLIMIT_AS allows; the system
 *   counts the whole reservation (UMEM_RESERVE) when it is made, so a
 *   limit set later, below it, leaves no room for other mappings (thread
 *   stacks): set the limit before the first umem_create.
 *   Define _DEFAULT_SOURCE (or compile in gcc's default gnu dialect) so
 *   that MAP_ANONYMOUS, madvise and robust mutexes are declared; this
 *   header defines it when it comes first.  On Linux it declares mremap
 *   itself where <sys/mman.h> did not (_GNU_SOURCE), with the same
 *   prototype.
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
    uint64_t cache_frees;       /* frees of blocks in pools' pages, without the lock */
    uint64_t cache_refills;     /* pages carved from the heap for pools (one lock each) */
    uint64_t cache_flushes;     /* empty pages given back to the heap (one lock each) */
    uint64_t cached_bytes;      /* bytes of pool pages not in blocks handed out, now */
    uint64_t mapped_bytes;      /* bytes mapped read-write now (unit maps left out) */
    uint64_t large_blocks;      /* blocks with a mapping of their own, now */
    uint64_t released_bytes;    /* bytes of free pages given back with madvise, in all */
    uint64_t remote_frees;      /* of cache_frees, those into another thread's page */
    uint64_t pool_pages;        /* pages the pools hold now (abandoned ones included) */
    uint64_t abandoned_pages;   /* of those, pages of ended threads, left for adoption */
    uint64_t purges;            /* purges that gave free pages back */
    uint64_t map_reuses;        /* large blocks served by a mapping freed before */
    uint64_t lent_calls;        /* calls that found the lock held by fork() and did
                                   without it (see FORK), once settled */
    uint64_t held_blocks;       /* freed blocks held back from reuse, counted in use
                                   (UMEM_DEBUG, AddressSanitizer: see DEBUGGING) */
} umem_stats_t;

/* ---- implementation ---------------------------------------------------- */

/* ---- the tools that watch the heap (see DEBUGGING) ----
 * valgrind's client requests, where <valgrind/memcheck.h> is installed
 * (each costs a few instructions outside valgrind, and umem makes them
 * only on a heap it found memcheck watching), and AddressSanitizer's
 * poisoning, in a build with -fsanitize=address (UMEM_ASAN defined to 0
 * before the include turns it off). */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define UMEM__VALGRIND 1
#endif
#if __has_include(<execinfo.h>)
#include <execinfo.h>
#define UMEM__BACKTRACE 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#define UMEM__ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UMEM__ASAN_BUILD 1
#endif
#endif
#if !defined(UMEM_ASAN) && defined(UMEM__ASAN_BUILD)
#define UMEM_ASAN 1
#endif
#if defined(UMEM_ASAN) && UMEM_ASAN && defined(UMEM__ASAN_BUILD)
#define UMEM__ASAN 1
void __asan_poison_memory_region(void const volatile *addr, size_t size);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#define UMEM__POISON(p, n)   __asan_poison_memory_region((p), (n))
#define UMEM__UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define UMEM__POISON(p, n)   ((void)(p), (void)(n))
#define UMEM__UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#ifdef UMEM__VALGRIND
#define UMEM__VG_QUIET(h)                                     \
    do {                                                      \
        if ((h)->flags & UMEM__VG)                            \
            VALGRIND_DISABLE_ERROR_REPORTING;                 \
    } while (0)
#define UMEM__VG_LOUD(h)                                      \
    do {                                                      \
        if ((h)->flags & UMEM__VG)                            \
            VALGRIND_ENABLE_ERROR_REPORTING;                  \
    } while (0)
#define UMEM__VG_HIDE(h, p, n)                                \
    do {                                                      \
        if ((h)->flags & UMEM__VG)                            \
            (void)VALGRIND_MAKE_MEM_NOACCESS((p), (n));       \
    } while (0)
#else
#define UMEM__VG_QUIET(h)      ((void)(h))
#define UMEM__VG_LOUD(h)       ((void)(h))
#define UMEM__VG_HIDE(h, p, n) ((void)(h), (void)(p), (void)(n))
#endif

/* Flags umem_create adds to a heap's own (never passed to it). */
#define UMEM__VG      (1u << 16) /* memcheck watches: blocks are announced to it */
#define UMEM__KEEP    (1u << 17) /* blocks carry a record and guards; frees wait (quarantine) */
#define UMEM__POISONS (1u << 18) /* AddressSanitizer: guards and freed blocks are poisoned */
#define UMEM__WATCHED (UMEM__VG | UMEM__KEEP)

/* What a block carries before its payload on a heap with UMEM__KEEP:
 * the payload handed out follows it at once.  `check` seals the record
 * (an underrun that reaches it, or a pointer that is no block, breaks
 * it); guard[] is the left guard, poisoned under AddressSanitizer. */
#define UMEM_DEBUG_FRAMES 3
struct umem_rec {
    struct umem_rec *next, *prev; /* the heap's live blocks, or its quarantine */
    void *frames[UMEM_DEBUG_FRAMES]; /* the allocating calls, innermost first */
    size_t size;  /* what was asked for */
    size_t room;  /* bytes from the payload to the end of umem's block */
    uint32_t shift, state; /* payload less umem's block; UMEM__LIVE, ... */
    size_t check;
    unsigned char guard[8];
};
_Static_assert(sizeof(struct umem_rec) % 16 == 0, "a record keeps payloads 16-byte aligned");

#define UMEM_ALIGN     16u
#define UMEM_HEADER    16u
#define UMEM_MIN_BLOCK 48u /* header + two links + footer, rounded to 16 */
#define UMEM_USED      ((size_t)1)
#define UMEM_PREV_FREE ((size_t)2) /* the block before this one is free */
#define UMEM_MAPPED    ((size_t)4) /* a large block's own mapping, or a region */
#define UMEM_REUSED    ((size_t)8) /* a large block's mapping served another block before */
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
#define UMEM_PURGE_MIN ((size_t)4 << 20) /* UMEM_GROW: freed bytes that make an emptied heap purge */
#endif
#ifndef UMEM_PURGE_DELAY_MS
#define UMEM_PURGE_DELAY_MS 1000 /* UMEM_GROW: free pages go back after this long unused */
#endif
#ifndef UMEM_MAP_CACHE
#define UMEM_MAP_CACHE 8u /* UMEM_GROW: freed large mappings kept for reuse */
#endif
#define UMEM_UNIT_SHIFT 16u /* UMEM_CACHED: pages are whole 64 KiB units, aligned */
#define UMEM_UNIT       ((size_t)1 << UMEM_UNIT_SHIFT)
#define UMEM_CLASSES    44u /* 16, 32, ... 128, then four per doubling to 64 KiB */
#define UMEM_POOL_MAX   ((size_t)64 << 10) /* the largest request a pool serves */
#define UMEM_PAGE_HEAD  128u /* a page's own header, before its first slot */
#define UMEM_COLOURS    16u  /* a page's header lies 0 to 15 x 128 bytes into its unit */
#define UMEM_PAGE_SLOTS 7u   /* a page holds at least this many slots */
#define UMEM_EXTEND_BYTES 4096u /* slots a page's free list takes from its fresh end at a time */
#define UMEM_WATCH      ((uintptr_t)1) /* in a page's remote list: its owner waits for a free */
#define UMEM_UNIT_MAPS  17u /* UMEM_CACHED: regions that may hold pages, the first included */

/* A block header.  `word` is read without the lock by a thread freeing
 * a large block while the lock holder may flip UMEM_PREV_FREE in it, so
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
    size_t max;     /* the largest block size in this subtree */
    size_t height;  /* a leaf is 1 */
    /* The free tree: the bytes that may be resident (none when lo == hi)
     * and the purge epoch in which that range last grew. */
    char *dirty_lo, *dirty_hi;
    uint64_t stamp;
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

struct umem_pool;

/* A page of a pool (UMEM_CACHED): a used block of a region with a unit map,
 * whose payload starts on a unit boundary and holds this header, then
 * `capacity` slots of one size class.  The first cache line is the owner
 * thread's; the second is read by every thread that frees into the page
 * and written by those of other threads (the remote list). */
struct umem_page {
    /* The first cache line: what a free reads to place a slot, and what
     * the owner changes on every call. */
    void **free;                     /* owner: freed slots (and fresh ones), linked */
    char *bump;                      /* owner: the first slot never handed out */
    char *start;                     /* the first slot */
    uint64_t recip;                  /* 2^40 / slot + 1: an offset's index, no division */
    struct umem_pool *_Atomic owner; /* NULL: abandoned by a thread that ended */
    struct umem_page *prev;          /* in its list (NULL: the first, which serves) */
    uint32_t span;                   /* capacity * slot */
    uint32_t slot;                   /* the slots' size */
    _Atomic uint32_t used;           /* owner (statistics read it): slots out, remote frees
                                        not yet collected */
    uint8_t list;                    /* owner: which list holds it (UMEM_LIST_...) */
    uint8_t cls, units;              /* size class; length in units */
    /* The second: written by the frees of other threads; the rest is read
     * on slow paths only. */
    _Alignas(64) _Atomic uintptr_t remote; /* slots freed by other threads | UMEM_WATCH */
    size_t magic;                          /* umem__page_magic while it is a page */
    struct umem_page *next;                /* in its list */
    char *limit;                           /* the end of the last slot */
    uint32_t capacity;
};

enum { UMEM_LIST_AVAIL, UMEM_LIST_FULL, UMEM_LIST_ABANDONED };
_Static_assert(sizeof(struct umem_page) <= UMEM_PAGE_HEAD, "a page header fits before its map");

/* A thread's pool for one heap: for each size class, the pages with room
 * (the first one serves) and the full ones, watched for remote frees.
 * Mapped once, never unmapped before umem_destroy: a thread that frees
 * into a page may still write its owner's `hint` after the owner ended
 * (a pool whose thread ended waits on the heap's spare list for another). */
struct umem_pool {
    struct umem_page *avail[UMEM_CLASSES];
    struct umem_page *full[UMEM_CLASSES];
    umem_t *heap;
    struct umem_pool *next, *prev; /* the heap's pools (or its spares), under its lock */
    unsigned sweeps;               /* slow paths taken, to sweep the full lists now and then */
    uint64_t full_freed;           /* bit c: the owner freed into a full page of class c */
    /* Counters written by this pool's thread only: a load and a store, no
     * read-modify-write.  A free by the owner counts nothing: frees are
     * allocations less the slots the pages hold (umem_get_stats). */
    _Atomic uint64_t allocs, moves;         /* slots handed out; reallocs that moved */
    _Atomic uint64_t remote_frees, remote_bytes; /* frees into other threads' pages */
    _Atomic uint64_t collected, collected_bytes; /* remote frees taken back by this pool */
    /* hint[c]: another thread freed into a watched page of class c. */
    _Alignas(64) _Atomic unsigned char hint[UMEM_CLASSES];
};

/* A region's unit map (UMEM_CACHED): one byte per unit from `base`, 0 for
 * a unit no page covers, k + 1 for the k-th unit of a page. */
struct umem_units {
    uintptr_t lo, hi; /* the region's mapping */
    uintptr_t base;   /* lo rounded down to a unit */
    size_t count;     /* units from base to hi */
    _Atomic unsigned char *map;
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
    pthread_key_t key;   /* UMEM_CACHED: each thread's pool */
    umem_t *fork_next;   /* private locked heaps, for fork() */
    /* UMEM_CACHED: the unit maps of the first region and of the next
     * regions, each set once under the lock, then published by umaps. */
    struct umem_units umap[UMEM_UNIT_MAPS];
    _Atomic unsigned umaps;
    _Alignas(64) pthread_mutex_t lock;
    _Atomic int forking; /* a private heap's: a fork() holds the lock (see FORK) */
    int fork_held; /* the thread in fork() took the lock */
    /* Left by calls that found the lock lent to a fork, for its next
     * holder: blocks mapped on their own (linked through node.left), and
     * blocks freed (| 1: moved by realloc; linked through their payload). */
    _Atomic(struct umem_span *) lent_maps;
    _Atomic uintptr_t lent_frees;
    _Atomic uint64_t lent_failed; /* allocations of those calls that failed */
    uint64_t lent_calls;          /* calls that did without the lock, settled */
    int owner_died;
    uint64_t binmap;               /* bit i: bin[i] is not empty */
    struct umem_free *bin[UMEM_BINS]; /* small free blocks by exact size */
    struct umem_node *root;        /* large free blocks, by address */
    struct umem_node *spans;       /* other mappings, by address */
    struct umem_pool *pools;       /* UMEM_CACHED: the pools of running threads */
    struct umem_pool *spare_pools; /* ... and of threads that ended, for reuse */
    struct umem_page *abandoned[UMEM_CLASSES]; /* pages of threads that ended */
    uint64_t lock_count, lock_contended, allocs, frees, failed_allocs;
    uint64_t bytes_in_use, peak_bytes_in_use, heap_bytes, mapped_bytes;
    uint64_t large_blocks, released_bytes, purges;
    uint64_t pages, page_bytes, abandoned_pages; /* pool pages out now (heap view) */
    uint64_t pages_made, pages_freed;            /* carved, given back */
    /* The counters of pools whose threads ended. */
    uint64_t gone_allocs, gone_moves, gone_remote, gone_remote_bytes, gone_collected,
        gone_collected_bytes;
    /* Remote frees and moves by a thread with no pool (it is ending). */
    _Atomic uint64_t orphan_frees, orphan_bytes, orphan_moves;
    /* Giving memory back on a delay (UMEM_GROW). */
    uint64_t epoch;         /* advances each half delay, on calls that find it due */
    uint64_t tick_at;       /* CLOCK_MONOTONIC ns at which the epoch advances */
    uint64_t unpurged;      /* bytes freed into large free blocks since the last purge */
    unsigned purge_calls;   /* calls since the clock was last read */
    unsigned map_cached;    /* mappings in map_cache */
    struct umem_span *map_cache[UMEM_MAP_CACHE]; /* freed large mappings, oldest first */
    uint64_t map_cache_bytes, map_reuses;
    /* UMEM__KEEP (UMEM_DEBUG, AddressSanitizer), under the lock: the
     * blocks handed out, and those freed but held back, oldest first;
     * each list is circular through its sentinel. */
    struct umem_rec live, held;
    uint64_t held_blocks, held_bytes;
    /* Blocks freed while a fork held the lock, for its next holder to
     * hold back (linked through frames[0], no lock). */
    _Atomic(struct umem_rec *) late;
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
#define UMEM_COLD          __attribute__((cold, noinline, noreturn))
#define UMEM_NOINLINE      __attribute__((noinline))
#define UMEM_RARE          __attribute__((cold, noinline))
#define UMEM_HOT_INLINE    __attribute__((always_inline)) inline
#define UMEM_LIKELY(x)     __builtin_expect(!!(x), 1)
#define UMEM_UNLIKELY(x)   __builtin_expect(!!(x), 0)
#else
#define UMEM_COLD
#define UMEM_NOINLINE
#define UMEM_RARE
#define UMEM_HOT_INLINE  inline
#define UMEM_LIKELY(x)   (x)
#define UMEM_UNLIKELY(x) (x)
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

/* ---- what every heap in the process shares ----
 * The state below is the process's, not a file's: where the compiler
 * allows (gcc, clang), weak definitions make every file that includes
 * this header share one copy; elsewhere, use the heap from one file. */
#if defined(__GNUC__)
#define UMEM_PROCESS_WIDE __attribute__((weak))
#define UMEM_TLS          _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define UMEM_PROCESS_WIDE static
#define UMEM_TLS          _Thread_local
#endif

/* The calling thread's pool for the heap it used last: one thread-local
 * variable, so that a shared library reaches it through one address.  Its
 * address also names the thread, as the one in fork(). */
struct umem_tls {
    umem_t *heap;
    size_t secret; /* the heap's: a new heap at a destroyed one's address differs */
    struct umem_pool *pool;
    int exiting; /* a pool of this thread's went back: it is ending, make no other */
    /* The private heap whose lock this thread is taking or holds: set
     * before the attempt and cleared after the unlock, so that a signal
     * handler on this thread never waits for it (see FORK). */
    umem_t *locking;
    int tracing; /* in backtrace(), which may allocate (UMEM__KEEP) */
};
UMEM_PROCESS_WIDE UMEM_TLS struct umem_tls umem__tls;

/* The private locked heaps, for fork(). */
UMEM_PROCESS_WIDE pthread_mutex_t umem__forks_lock = PTHREAD_MUTEX_INITIALIZER;
UMEM_PROCESS_WIDE umem_t *umem__forks; /* under umem__forks_lock */
UMEM_PROCESS_WIDE _Atomic(const void *) umem__forks_owner; /* the thread in fork() */
UMEM_PROCESS_WIDE int umem__forks_nested; /* a fork() inside its handlers, by the owner */
UMEM_PROCESS_WIDE atomic_int umem__forks_registered;

static inline const void *umem__me(void)
{
    return &umem__tls;
}

/* ---- the lock ---- */

#ifndef UMEM_SPIN
#define UMEM_SPIN 2 /* spins, of 8 then 16 pauses, before napping */
#endif
#ifndef UMEM_NAP_NS
#define UMEM_NAP_NS 20000 /* a nap between attempts on a busy lock */
#endif
#ifndef UMEM_WAIT_NS
#define UMEM_WAIT_NS 1000000 /* a cached heap's wait in the mutex, between looks at a fork */
#endif

#define UMEM_COUNTED 1 /* umem__lock: lock_count sees this acquisition */
#define UMEM_LEND    2 /* umem__lock: if a fork holds the lock, return 1 at once */
#define UMEM_QUIET   4 /* umem__lock: a failure leaves errno alone */

static inline void umem__relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A private heap's lock is lent out (see FORK): held by a fork() in
 * progress, or taken or held by a call of this very thread that a signal
 * handler interrupted (`outer`: the heap that call was locking).  Waiting
 * would never end. */
static inline int umem__lent(const umem_t *h, const umem_t *outer)
{
    return !(h->flags & UMEM_SHARED) &&
           (outer == h || atomic_load_explicit(&h->forking, memory_order_acquire));
}

/* One wait for a lock that was busy: spins, then naps, or for a cached
 * heap the mutex's own queue, for at most UMEM_WAIT_NS between looks at a
 * fork.  errno is left as it was. */
static inline int umem__lock_wait(umem_t *h, unsigned attempt)
{
    if (attempt < UMEM_SPIN) {
        for (unsigned k = 0; k < 8u << attempt; k++)
            umem__relax();
        return pthread_mutex_trylock(&h->lock);
    }
    int saved = errno, r;
    if (h->flags & UMEM_CACHED) {
        /* Caches take the lock rarely and briefly: wait in the mutex's
         * queue, to be woken when it is free. */
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        at.tv_nsec += UMEM_WAIT_NS;
        if (at.tv_nsec >= 1000000000) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000;
        }
        r = pthread_mutex_timedlock(&h->lock, &at);
        r = r == ETIMEDOUT ? EBUSY : r;
    } else {
        struct timespec nap = {0, UMEM_NAP_NS};
        nanosleep(&nap, NULL);
        r = pthread_mutex_trylock(&h->lock);
    }
    errno = saved;
    return r;
}

/* The lock: for UMEM_SHARED, process-shared and robust.  0, or the error
 * pthread_mutex_init gave. */
static inline int umem__lock_init(umem_t *h)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    if (h->flags & UMEM_SHARED) {
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    }
    int r = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    return r;
}

static UMEM_RARE void umem__settle(umem_t *h);

/* umem__lock when the first attempt did not simply take the lock: r is
 * what pthread_mutex_trylock said (0 for a heap whose owner died);
 * `outer`, the heap an interrupted call of this thread was locking. */
static UMEM_NOINLINE int umem__lock_slow(umem_t *h, int how, int r, const umem_t *outer)
{
    int contended = 0;
    /* Contended: a short spin, then naps (see LOCKING above); a lock
     * held by a fork is looked for once the spin is over. */
    for (unsigned attempt = 0; r == EBUSY; attempt++) {
        if ((attempt >= UMEM_SPIN || outer == h) && how & UMEM_LEND && umem__lent(h, outer))
            return 1;
        contended = 1;
        r = umem__lock_wait(h, attempt);
    }
    if (r == EOWNERDEAD) {
        h->owner_died = 1;
        pthread_mutex_consistent(&h->lock);
    } else if (r != 0) {
        if (!(how & UMEM_QUIET))
            errno = r;
        return -1;
    }
    if (how & UMEM_COUNTED) {
        h->lock_count++;
        h->lock_contended += (uint64_t)contended;
    }
    if (h->owner_died) {
        pthread_mutex_unlock(&h->lock);
        if (!(how & UMEM_QUIET))
            errno = EOWNERDEAD;
        return -1;
    }
    return 0;
}

/* Takes the lock; `how` is UMEM_COUNTED (lock_count sees it), UMEM_LEND
 * (the caller can do without the lock while a fork holds it) and
 * UMEM_QUIET (a failure leaves errno alone).  Returns 0 with the lock
 * held; 1, for UMEM_LEND, when the lock is lent (umem__lent) and not
 * taken; -1 with errno set and the lock not held.  The next holder after
 * a fork settles what was done without the lock. */
static inline int umem__lock(umem_t *h, int how)
{
    if (h->flags & UMEM_NOLOCK)
        return 0;
    umem_t *was = umem__tls.locking;
    if (!(h->flags & UMEM_SHARED) && !was)
        umem__tls.locking = h;
    int r = pthread_mutex_trylock(&h->lock);
    if (UMEM_LIKELY(r == 0 && !h->owner_died)) {
        if (how & UMEM_COUNTED)
            h->lock_count++;
    } else if ((r = umem__lock_slow(h, how, r, was)) != 0) {
        if (!was && umem__tls.locking == h)
            umem__tls.locking = NULL; /* lent, or failed: nothing taken */
        return r;
    }
    if (!(h->flags & UMEM_SHARED) &&
        UMEM_UNLIKELY(atomic_load_explicit(&h->lent_maps, memory_order_relaxed) ||
                      atomic_load_explicit(&h->lent_frees, memory_order_relaxed)))
        umem__settle(h);
    return 0;
}

static inline void umem__unlock(umem_t *h)
{
    if (h->flags & UMEM_NOLOCK)
        return;
    pthread_mutex_unlock(&h->lock);
    if (umem__tls.locking == h)
        umem__tls.locking = NULL;
}

/* ---- fork(): a fork holds every private heap's lock, and lends it ----
 * The prepare handler takes each private locked heap's lock, so that the
 * child gets every heap whole, then marks it `forking`: until fork()
 * returns, a call that finds that lock busy does not wait for it, since
 * the caller may hold a lock fork() waits for (stdio's, in glibc).  It
 * does without: an allocation gets a mapping of its own, a free and a
 * move by realloc are left on a list, and the next holder of the lock
 * adds them to the heap (umem__settle).  A lock held by the forking
 * thread itself (fork() from a signal handler that interrupted a call) is
 * not taken: the interrupted call finishes it, in the parent and in the
 * child alike.  The child makes the locks it took anew. */

static inline int umem__forked_heap(const umem_t *h)
{
    return !(h->flags & (UMEM_SHARED | UMEM_NOLOCK));
}

/* The list's lock, with every signal blocked while it is taken and let
 * go (and, in umem_create and umem_destroy, held): a fork() from a
 * signal handler never waits for its own thread. */
static inline void umem__forks_take(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, old);
    pthread_mutex_lock(&umem__forks_lock);
}

static inline void umem__forks_drop(const sigset_t *old)
{
    pthread_mutex_unlock(&umem__forks_lock);
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* A heap whose lock this thread is taking or holds (fork() from a signal
 * handler that interrupted a call on it) is left to that call.  The
 * thread in fork() is named while it holds the list: a fork() from a
 * handler that interrupted that fork() between its handlers is nested,
 * and finds every lock held by its own thread already. */
static inline void umem__fork_prepare(void)
{
    sigset_t old;
    if (atomic_load_explicit(&umem__forks_owner, memory_order_relaxed) == umem__me()) {
        umem__forks_nested = 1;
        return;
    }
    umem__forks_take(&old);
    atomic_store_explicit(&umem__forks_owner, umem__me(), memory_order_relaxed);
    for (umem_t *h = umem__forks; h; h = h->fork_next) {
        /* Its holder waits on nothing; this thread's own call finishes. */
        h->fork_held = umem__tls.locking != h && pthread_mutex_lock(&h->lock) == 0;
        if (h->fork_held)
            atomic_store_explicit(&h->forking, 1, memory_order_release);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* `child`: the one thread left, the one that took the locks, makes them
 * anew (as the C library does its own).  Those the fork took are free;
 * those this thread held before (an interrupted call's, or all of them
 * in a nested fork) are held again, for their holder to let go. */
static inline void umem__fork_done(int child)
{
    int nested = umem__forks_nested;
    umem__forks_nested = 0;
    if (nested && !child)
        return;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (umem_t *h = umem__forks; h; h = h->fork_next) {
        int held_before = nested || !h->fork_held;
        if (child) {
            /* Let go first, so that a tool that follows locks sees it. */
            pthread_mutex_unlock(&h->lock);
            umem__lock_init(h);
            if (held_before)
                pthread_mutex_lock(&h->lock);
        }
        if (held_before)
            continue;
        h->fork_held = 0;
        atomic_store_explicit(&h->forking, 0, memory_order_release);
        if (!child)
            pthread_mutex_unlock(&h->lock);
    }
    if (child)
        pthread_mutex_init(&umem__forks_lock, NULL);
    if (nested) {
        pthread_mutex_lock(&umem__forks_lock); /* the outer fork's, let go by it */
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return;
    }
    atomic_store_explicit(&umem__forks_owner, NULL, memory_order_relaxed);
    if (child)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    else
        umem__forks_drop(&old);
}

static inline void umem__fork_parent(void)
{
    umem__fork_done(0);
}

static inline void umem__fork_child(void)
{
    umem__fork_done(1);
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

/* A unit map for the mapping [lo, hi), reserved, not committed: only the
 * bytes of units pages cover are ever written.  0, or ENOMEM. */
static inline int umem__units_init(struct umem_units *m, uintptr_t lo, uintptr_t hi)
{
    m->lo = lo;
    m->hi = hi;
    m->base = lo & ~(uintptr_t)(UMEM_UNIT - 1);
    m->count = (hi - m->base + UMEM_UNIT - 1) >> UMEM_UNIT_SHIFT;
    m->map = (_Atomic unsigned char *)umem__map(m->count, PROT_READ | PROT_WRITE,
                                                 MAP_PRIVATE | MAP_NORESERVE);
    return m->map ? 0 : ENOMEM;
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

/* The purge epoch a free block must predate to be purged: an epoch is
 * half a delay long and advances only on calls, so a block stamped in
 * epoch e has been free a whole delay when epoch e + 3 begins. */
#define UMEM_PURGE_AGE 3u

/* Gives the whole pages of free blocks' dirty ranges back to the system,
 * for blocks of two pages or more whose range stayed unused for the delay
 * (the tree's largest sizes skip the rest).  Returns the bytes of ranges
 * too young. */
static inline uint64_t umem__purge(umem_t *h, struct umem_node *x, int all)
{
    uint64_t young = 0;
    uintptr_t pg = h->page - 1;
    while (x && x->max >= 2 * h->page) {
        young += umem__purge(h, x->left, all);
        size_t size = umem__size(x);
        char *lo = x->dirty_lo > (char *)(x + 1) ? x->dirty_lo : (char *)(x + 1);
        char *hi = x->dirty_hi < (char *)x + size - sizeof(size_t) ? x->dirty_hi
                                                                   : (char *)x + size - sizeof(size_t);
        uintptr_t from = ((uintptr_t)lo + pg) & ~pg, to = (uintptr_t)hi & ~pg;
        if (size >= 2 * h->page && x->dirty_lo != x->dirty_hi) {
            if (!all && x->stamp + UMEM_PURGE_AGE > h->epoch) {
                young += (uint64_t)(x->dirty_hi - x->dirty_lo);
            } else {
                if (to > from && madvise((void *)from, to - from, MADV_DONTNEED) == 0)
                    h->released_bytes += to - from;
                x->dirty_lo = x->dirty_hi = NULL;
            }
        }
        x = x->right;
    }
    return young;
}

static inline uint64_t umem__now_ns(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void umem__unmap_cached(umem_t *h, unsigned i);
static inline void umem__reclaim_abandoned(umem_t *h);

/* A private growable heap gives back, with the lock held, the free pages
 * and cached large mappings that stayed unused for UMEM_PURGE_DELAY_MS,
 * at most once per half delay (the clock is read on one call in 16 while
 * something waits to go back); and every free page at once when the heap
 * has emptied (an eighth of it in use) and UMEM_PURGE_MIN or more was
 * freed since the last purge, so that a program that frees its memory
 * and goes idle shrinks with no call after.  errno is left as it was. */
static inline void umem__maybe_purge(umem_t *h)
{
    if (!(h->flags & UMEM_GROW) || (h->unpurged == 0 && h->map_cached == 0))
        return;
    int emptied = h->bytes_in_use < h->heap_bytes / 8 && h->unpurged >= UMEM_PURGE_MIN;
    if (!emptied && (++h->purge_calls & 15u) != 0)
        return;
    uint64_t now = umem__now_ns();
    if (now >= h->tick_at) {
        h->tick_at = now + (uint64_t)UMEM_PURGE_DELAY_MS * 500000u;
        h->epoch++;
    } else if (!emptied) {
        return;
    }
    int saved = errno;
    if (h->abandoned_pages > 0)
        umem__reclaim_abandoned(h);
    while (h->map_cached > 0 &&
           (emptied || h->map_cache[0]->node.stamp + UMEM_PURGE_AGE <= h->epoch))
        umem__unmap_cached(h, 0);
    if (h->unpurged > 0) {
        uint64_t released = h->released_bytes;
        h->unpurged = umem__purge(h, h->root, emptied);
        h->purges += h->released_bytes != released;
    }
    errno = saved;
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
    struct umem_node *x = (struct umem_node *)b;
    umem__tree_insert(path, depth, link, x);
    x->dirty_lo = b;
    x->dirty_hi = b + size;
    x->stamp = h->epoch;
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
static inline void umem__tree_resize(umem_t *h, struct umem_node *x, char *at, size_t size,
                                     char *lo, char *hi, uint64_t stamp)
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
    y->dirty_lo = lo;
    y->dirty_hi = hi;
    y->stamp = stamp;
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
    if (psize > UMEM_SMALL_MAX || nsize > UMEM_SMALL_MAX) {
        /* What may be resident: the block, the small neighbours, and the
         * large ones' own ranges (their clean pages stay clean). */
        char *lo = b, *hi = b + size;
        uint64_t stamp = h->epoch;
        if (psize > UMEM_SMALL_MAX) {
            struct umem_node *x = (struct umem_node *)prev;
            if (x->dirty_lo != x->dirty_hi) {
                lo = x->dirty_lo;
                stamp = x->stamp;
            }
        } else if (psize) {
            lo = prev;
        }
        if (nsize > UMEM_SMALL_MAX) {
            struct umem_node *x = (struct umem_node *)next;
            if (x->dirty_lo != x->dirty_hi) {
                hi = x->dirty_hi;
                stamp = x->stamp < stamp ? x->stamp : stamp;
            }
        } else if (nsize) {
            hi = next + nsize;
        }
        /* The range's age is its oldest part's: a block freed next to
         * pages unused for a while goes back with them, rather than
         * keeping them for another delay. */
        if (psize > UMEM_SMALL_MAX) {
            if (nsize)
                umem__unfile(h, next, nsize);
            umem__tree_resize(h, (struct umem_node *)prev, prev, total, lo, hi, stamp);
        } else {
            if (psize)
                umem__unfile(h, prev, psize);
            umem__tree_resize(h, (struct umem_node *)next, start, total, lo, hi, stamp);
        }
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
            /* r may overlap f: the rest keeps f's age and what of f's
             * range lies in it. */
            uint64_t stamp = f->stamp;
            char *lo = f->dirty_lo, *hi = f->dirty_hi;
            struct umem_node *r = (struct umem_node *)(b + *need);
            lo = lo < (char *)r ? (char *)r : lo;
            hi = hi < lo ? lo : hi;
            r->left = f->left;
            r->right = f->right;
            r->height = f->height;
            r->max = f->max;
            umem__set_header(h, r, size - *need);
            umem__set_footer(r, size - *need);
            r->dirty_lo = lo;
            r->dirty_hi = hi;
            r->stamp = stamp;
            *path[depth - 1] = r;
            umem__refresh(path, depth);
            umem__set_header(h, b, *need | UMEM_USED);
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
    return b;
}

/* Whether committing `add` bytes more of the reservation keeps the heap
 * within RLIMIT_AS: the system counted the whole reservation when it was
 * made, so a limit set later would not stop growth inside it.  The heap's
 * own mappings are held to the limit; the rest of the process is not
 * counted. */
static inline int umem__within_limit(const umem_t *h, size_t add)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 1;
    return h->mapped_bytes + add <= (uint64_t)rl.rlim_cur;
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
            if (!umem__within_limit(h, (size_t)(to - from)) ||
                mprotect(from, (size_t)(to - from), PROT_READ | PROT_WRITE) != 0)
                return -1;
            h->mapped_bytes += (uint64_t)(to - from);
            UMEM__VG_HIDE(h, from, (size_t)(to - from));
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
    UMEM__VG_HIDE(h, s, bytes);
    s->is_region = 1;
    s->first = (char *)s + UMEM_SPAN_BYTES;
    s->end = s->first + ((bytes - UMEM_SPAN_BYTES - UMEM_HEADER) & ~(size_t)(UMEM_ALIGN - 1));
    umem__set_header(h, s->end, 0 | UMEM_USED);
    umem__set_header(h, s->first, (size_t)(s->end - s->first) | UMEM_USED);
    umem__span_add(h, s, bytes);
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_relaxed);
    if (h->flags & UMEM_CACHED && n < UMEM_UNIT_MAPS &&
        umem__units_init(&h->umap[n], (uintptr_t)s, (uintptr_t)s + bytes) == 0)
        atomic_store_explicit(&h->umaps, n + 1, memory_order_release);
    h->heap_bytes += (uint64_t)(s->end - s->first);
    umem__merge_free(h, s->first, s->first);
    return 0;
}

/* bytes more in use (lock held): the peak follows. */
static inline void umem__grew(umem_t *h, size_t bytes)
{
    h->bytes_in_use += bytes;
    if (h->bytes_in_use > h->peak_bytes_in_use)
        h->peak_bytes_in_use = h->bytes_in_use;
}

static inline void umem__count_alloc(umem_t *h, size_t bytes)
{
    h->allocs++;
    umem__grew(h, bytes);
}

/* ---- large blocks: a mapping each, kept a while after their free ----
 * A request of UMEM_LARGE bytes or more on a UMEM_GROW heap gets a mapping
 * of its own.  A freed one waits in map_cache (at most UMEM_MAP_CACHE, the
 * oldest goes first) for the next large request, until it has stayed
 * unused for the purge delay; a request it fits takes it (trimmed when it
 * would waste over a quarter), and where Linux's mremap is there a
 * request larger than every cached mapping grows the largest. */

#if defined(__linux__)
#ifndef MREMAP_MAYMOVE
/* Declared by <sys/mman.h> only under _GNU_SOURCE, which this header
 * leaves to the program: the same prototype, and Linux's flag. */
extern void *mremap(void *old_address, size_t old_size, size_t new_size, int flags, ...);
#define UMEM_MREMAP_MAYMOVE 1
#else
#define UMEM_MREMAP_MAYMOVE MREMAP_MAYMOVE
#endif
#endif

/* The mapping's size for a large block of n bytes aligned to `align`, or 0
 * when no address space could hold it. */
static inline size_t umem__large_bytes(const umem_t *h, size_t n, size_t align)
{
    if (n > PTRDIFF_MAX / 2 || align > PTRDIFF_MAX / 4)
        return 0;
    return umem__round_page(h, UMEM_SPAN_BYTES + UMEM_HEADER + n + (align > UMEM_ALIGN ? align : 0));
}

/* The mapping at s, of `bytes`, as one used block aligned to `align`. */
static inline void umem__large_init(umem_t *h, struct umem_span *s, size_t bytes, size_t align,
                                    size_t reused)
{
    uintptr_t payload = (uintptr_t)s + UMEM_SPAN_BYTES + UMEM_HEADER;
    if (align > UMEM_ALIGN)
        payload = (payload + align - 1) & ~(uintptr_t)(align - 1);
    s->is_region = 0;
    s->first = (char *)payload - UMEM_HEADER;
    s->end = (char *)s + bytes;
    umem__set_header(h, s->first,
                     (size_t)(s->end - s->first) | UMEM_USED | UMEM_MAPPED | reused);
}

/* A fresh mapping for a large block, made without the lock; NULL when
 * the system refuses it (errno left as it was). */
static inline struct umem_span *umem__map_large(umem_t *h, size_t bytes, size_t align)
{
    int saved = errno;
    struct umem_span *s = umem__map(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    errno = saved;
    if (s) {
        UMEM__VG_HIDE(h, s, bytes);
        umem__large_init(h, s, bytes, align, 0);
    }
    return s;
}

static inline void umem__unmap(void *p, size_t bytes)
{
    int saved = errno;
    munmap(p, bytes);
    errno = saved;
}

/* Takes map_cache[i] out of the cache (lock held); it stays mapped, and
 * counted in mapped_bytes. */
static inline struct umem_span *umem__map_cache_take(umem_t *h, unsigned i)
{
    struct umem_span *s = h->map_cache[i];
    h->map_cached--;
    memmove(&h->map_cache[i], &h->map_cache[i + 1], (h->map_cached - i) * sizeof h->map_cache[0]);
    h->map_cache_bytes -= umem__size(s);
    return s;
}

/* Drops map_cache[i] and unmaps it (lock held). */
static inline void umem__unmap_cached(umem_t *h, unsigned i)
{
    struct umem_span *s = umem__map_cache_take(h, i);
    size_t bytes = umem__size(s);
    h->mapped_bytes -= bytes;
    umem__unmap(s, bytes);
}

/* A cached mapping made into a large block of `bytes` aligned to `align`
 * (lock held; the caller adds it to the spans), or NULL. */
static inline struct umem_span *umem__reuse_map(umem_t *h, size_t bytes, size_t align)
{
    unsigned best = UMEM_MAP_CACHE, largest = 0;
    for (unsigned i = 0; i < h->map_cached; i++) {
        size_t have = umem__size(h->map_cache[i]);
        if (have >= bytes && (best == UMEM_MAP_CACHE || have < umem__size(h->map_cache[best])))
            best = i;
        if (have > umem__size(h->map_cache[largest]))
            largest = i;
    }
    unsigned i = best == UMEM_MAP_CACHE ? largest : best;
    if (h->map_cached == 0)
        return NULL;
    struct umem_span *s = h->map_cache[i];
    size_t have = umem__size(s);
    if (have < bytes) {
#ifdef UMEM_MREMAP_MAYMOVE
        int saved = errno;
        void *moved = mremap(s, have, bytes, UMEM_MREMAP_MAYMOVE);
        errno = saved;
        if (moved == MAP_FAILED)
            return NULL;
        h->mapped_bytes += bytes - have;
        h->map_cache_bytes += bytes - have;
        s = h->map_cache[i] = (struct umem_span *)moved;
        UMEM__VG_HIDE(h, s, bytes);
        umem__set_header(h, s, bytes | UMEM_MAPPED);
        have = bytes;
#else
        return NULL;
#endif
    } else if (have - bytes > have / 4) {
        umem__unmap((char *)s + bytes, have - bytes); /* trimmed: it would waste too much */
        h->mapped_bytes -= have - bytes;
        h->map_cache_bytes -= have - bytes;
        umem__set_header(h, s, bytes | UMEM_MAPPED);
        have = bytes;
    }
    umem__map_cache_take(h, i);
    h->mapped_bytes -= have; /* the span tree counts it again */
    h->map_reuses++;
    umem__large_init(h, s, have, align, UMEM_REUSED);
    return s;
}

/* A large block freed (lock held): its mapping waits in the cache, unless
 * it is larger than the cache may hold (half the heap in use, at least
 * 64 MiB), which unmaps it. */
static inline void umem__keep_map(umem_t *h, struct umem_span *s)
{
    size_t bytes = umem__size(s);
    uint64_t most = h->bytes_in_use / 2 > ((uint64_t)64 << 20) ? h->bytes_in_use / 2 : (uint64_t)64 << 20;
    if (bytes > most) {
        umem__unmap(s, bytes);
        return;
    }
    while (h->map_cached > 0 && (h->map_cached == UMEM_MAP_CACHE || h->map_cache_bytes + bytes > most))
        umem__unmap_cached(h, 0);
    s->node.stamp = h->epoch;
    h->map_cache[h->map_cached++] = s;
    h->map_cache_bytes += bytes;
    h->mapped_bytes += bytes;
}

/* A large block for n bytes aligned to `align` in a mapping of its own,
 * cached or fresh: its header, or NULL (the caller then tries the heap).
 * Takes the lock itself; *bytes is the mapping's size. */
static UMEM_NOINLINE char *umem__alloc_large(umem_t *h, size_t n, size_t align, size_t *bytes)
{
    size_t want = umem__large_bytes(h, n, align);
    if (want == 0)
        return NULL;
    if (umem__lock(h, UMEM_COUNTED | UMEM_LEND) != 0)
        return NULL; /* lent to a fork too: the caller does without */
    struct umem_span *s = umem__reuse_map(h, want, align);
    if (!s) {
        umem__unlock(h);
        s = umem__map_large(h, want, align);
        if (!s || umem__lock(h, UMEM_COUNTED | UMEM_LEND) != 0) {
            if (s)
                umem__unmap(s, want);
            return NULL;
        }
    }
    *bytes = (size_t)(s->end - (char *)s);
    umem__span_add(h, s, *bytes);
    h->large_blocks++;
    umem__count_alloc(h, *bytes);
    umem__maybe_purge(h);
    umem__unlock(h);
    return s->first;
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

static UMEM_HOT_INLINE void umem__locate(umem_t *h, const void *p, struct umem_where *w,
                                          const char *call)
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

/* A large block's mapping, freed (lock held): kept for reuse, or on a
 * fixed-size heap (one mapped while a fork held the lock) unmapped. */
static UMEM_NOINLINE void umem__give_back_large(umem_t *h, struct umem_span *s)
{
    size_t bytes = umem__size(s);
    umem__span_remove(h, s);
    h->bytes_in_use -= bytes;
    h->large_blocks--;
    if (h->flags & UMEM_GROW)
        umem__keep_map(h, s);
    else
        umem__unmap(s, bytes);
}

/* Gives a checked block back to the free tree (lock held). */
static inline void umem__give_back(umem_t *h, const struct umem_where *w)
{
    if (w->big) {
        umem__give_back_large(h, w->big);
        return;
    }
    size_t size = umem__size(w->block);
    h->bytes_in_use -= size;
    h->unpurged += size;
    umem__merge_free(h, w->block, w->first);
}

/* A free of a block with a header (lock held): checked, counted (a move,
 * `moved`, counts as no free) and given back. */
static UMEM_HOT_INLINE void umem__release(umem_t *h, void *p, int moved)
{
    struct umem_where w;
    umem__locate(h, p, &w, "free");
    if (moved)
        h->allocs--; /* a move: neither an allocation nor a free */
    else
        h->frees++;
    umem__give_back(h, &w);
}

/* ---- calls that find the lock lent to a fork (see FORK) ----
 * They read nothing of the heap but the block they are given, whose
 * header only its owner changes (a neighbour's free flips its
 * UMEM_PREV_FREE, which the check leaves out), and leave what they did on
 * the heap's lists with one compare-and-swap, for umem__settle. */

/* A mark in a block freed while the lock was lent: a second free of it
 * before the lists are settled is caught. */
static inline size_t umem__lent_tag(const umem_t *h, const void *p)
{
    return h->secret ^ (size_t)(uintptr_t)p ^ 0xF02Cu;
}

/* n bytes aligned to `align` in a mapping of their own, added to the
 * heap by the next holder of the lock; NULL with errno = ENOMEM. */
static UMEM_RARE void *umem__lent_alloc(umem_t *h, size_t n, size_t align)
{
    size_t bytes = umem__large_bytes(h, n, align);
    struct umem_span *s = bytes != 0 && n != 0 ? umem__map_large(h, bytes, align) : NULL;
    if (!s) {
        atomic_fetch_add_explicit(&h->lent_failed, 1, memory_order_relaxed);
        errno = ENOMEM;
        return NULL;
    }
    struct umem_span *old = atomic_load_explicit(&h->lent_maps, memory_order_relaxed);
    do
        s->node.left = old ? &old->node : NULL;
    while (!atomic_compare_exchange_weak_explicit(&h->lent_maps, &old, s, memory_order_release,
                                                  memory_order_relaxed));
    return s->first + UMEM_HEADER;
}

/* The header of p, a block handed out, checked as far as can be without
 * the lock; dies with one line naming p otherwise. */
static UMEM_RARE char *umem__lent_block(umem_t *h, const void *p, const char *call)
{
    char *b = (char *)p - UMEM_HEADER;
    if ((uintptr_t)p % UMEM_ALIGN != 0)
        umem__die_of(call, "%s of a pointer outside the heap or misaligned:", p);
    if (!umem__header_ok(h, b))
        umem__die_of(call, "bad %s (not from umem_alloc, or its header overwritten):", p);
    if (!(umem__word(b) & UMEM_USED) || ((size_t *)p)[1] == umem__lent_tag(h, p))
        umem__die_of(call, "%s of a block freed already (double free):", p);
    return b;
}

/* A free (moved: by realloc) left for the next holder of the lock. */
static UMEM_RARE void umem__lent_free(umem_t *h, void *p, int moved)
{
    umem__lent_block(h, p, "free");
    uintptr_t *q = (uintptr_t *)p, old = atomic_load_explicit(&h->lent_frees, memory_order_relaxed);
    q[1] = umem__lent_tag(h, p);
    do
        q[0] = old;
    while (!atomic_compare_exchange_weak_explicit(&h->lent_frees, &old, (uintptr_t)p | (moved != 0),
                                                  memory_order_release, memory_order_relaxed));
}

/* realloc: p stays if it holds n bytes, else moves to a mapping of its own. */
static UMEM_RARE void *umem__lent_realloc(umem_t *h, void *p, size_t n)
{
    size_t have = umem__size(umem__lent_block(h, p, "realloc")) - UMEM_HEADER;
    if (n <= have)
        return p;
    void *q = umem__lent_alloc(h, n, UMEM_ALIGN);
    if (q) {
        memcpy(q, p, have);
        umem__lent_free(h, p, 1);
    }
    return q;
}

/* What the calls that did without the lock left, added to the heap (lock
 * held), as they would have done with it: their blocks and their frees,
 * which are checked now. */
static UMEM_RARE void umem__settle(umem_t *h)
{
    /* Frees first: each was left after the mapping of its block (if it
     * has one), which is then on the list taken next, or settled before. */
    uintptr_t f = atomic_exchange_explicit(&h->lent_frees, 0, memory_order_acquire);
    struct umem_span *s = atomic_exchange_explicit(&h->lent_maps, NULL, memory_order_acquire);
    while (s) {
        struct umem_span *next = (struct umem_span *)s->node.left;
        size_t bytes = (size_t)(s->end - (char *)s);
        umem__span_add(h, s, bytes);
        h->large_blocks++;
        umem__count_alloc(h, bytes);
        h->lent_calls++;
        s = next;
    }
    while (f) {
        uintptr_t *q = (uintptr_t *)(f & ~(uintptr_t)1);
        int moved = (int)(f & 1);
        f = q[0];
        q[1] = 0; /* the mark goes: the block may be handed out again */
        umem__release(h, q, moved);
        h->lent_calls++;
    }
}

/* ---- pools of pages (UMEM_CACHED) ----
 * A thread's pool holds, per size class, pages carved from the heap.  The
 * owner allocates from a page's free list, else by bumping its pointer,
 * and frees onto the page's free list: plain code, no lock, no atomic.
 * Another thread's free is one compare-and-swap onto the page's remote
 * list, which the owner takes whole when the page runs dry.  The lock is
 * taken per page (carved, adopted, given back), never per block. */


#define UMEM_POOL_GONE ((void *)1) /* the thread is exiting: no new pool */

/* A freed slot's second word: marks it free, so a second free is caught. */
static inline size_t umem__tag(const umem_t *h, const void *p)
{
    return h->secret ^ (size_t)(uintptr_t)p ^ 0xCAC4Eu;
}

static inline size_t umem__page_magic(const umem_t *h, const void *pg)
{
    return h->secret ^ (size_t)(uintptr_t)pg ^ 0x9A6E5u;
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

/* A page's slots in use: written by its owner only, read by statistics. */
static inline uint32_t umem__used(const struct umem_page *pg)
{
    return atomic_load_explicit(&((struct umem_page *)pg)->used, memory_order_relaxed);
}

static inline void umem__set_used(struct umem_page *pg, uint32_t used)
{
    atomic_store_explicit(&pg->used, used, memory_order_relaxed);
}

/* The size class of a request of 1 to UMEM_POOL_MAX bytes: 16-byte steps
 * to 128, then four classes per doubling (at most 25% lost to rounding). */
static const unsigned char umem__small_class[64] = { /* for n up to 1024, by (n - 1) / 16 */
    0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 9, 10, 10, 11, 11,
    12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15,
    16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 17, 17, 17, 17,
    18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19,
};

static inline unsigned umem__class(size_t n)
{
    if (n <= 1024)
        return umem__small_class[(n - 1) >> 4];
#if defined(__GNUC__)
    unsigned b = 63u - (unsigned)__builtin_clzll((unsigned long long)(n - 1));
#else
    unsigned b = 7;
    while ((n - 1) >> (b + 1))
        b++;
#endif
    return 8u + (b - 7u) * 4u + (unsigned)((n - 1) >> (b - 2u)) - 4u;
}

static inline size_t umem__class_size(unsigned cls)
{
    if (cls < 8)
        return 16u * (cls + 1u);
    unsigned b = 7u + (cls - 8u) / 4u, k = (cls - 8u) % 4u + 1u;
    return (size_t)(4u + k) << (b - 2u);
}

/* A page's header, in the page's first unit at a: not at a itself but
 * 0 to UMEM_COLOURS - 1 times UMEM_PAGE_HEAD bytes in, by the unit's
 * number, so that the headers of many pages do not all fall in the one
 * set of the processor's caches that addresses 64 KiB apart share. */
static inline uintptr_t umem__colour(uintptr_t a)
{
    return ((a >> UMEM_UNIT_SHIFT) % UMEM_COLOURS) * UMEM_PAGE_HEAD;
}

static inline struct umem_page *umem__page_at(uintptr_t a)
{
    return (struct umem_page *)(a + umem__colour(a));
}

/* The heap block a page is: its header lies just before the page's unit. */
static inline char *umem__page_block(const struct umem_page *pg)
{
    return (char *)((uintptr_t)pg & ~(uintptr_t)(UMEM_UNIT - 1)) - UMEM_HEADER;
}

/* The slots a page of `units` holds, after its colour and its `head`. */
static inline uint32_t umem__page_capacity(const struct umem_page *pg, size_t slot, unsigned units,
                                           size_t head)
{
    size_t colour = umem__colour((uintptr_t)pg);
    return (uint32_t)((((size_t)units << UMEM_UNIT_SHIFT) - UMEM_HEADER - colour - head) / slot);
}

/* A page's length in units: room for its header and UMEM_PAGE_SLOTS slots. */
static inline unsigned umem__page_units(size_t slot)
{
    return (unsigned)((slot * UMEM_PAGE_SLOTS + UMEM_COLOURS * UMEM_PAGE_HEAD + UMEM_HEADER +
                       UMEM_UNIT - 1) >>
                      UMEM_UNIT_SHIFT);
}

static inline struct umem_page *umem__page_in(const struct umem_units *m, uintptr_t c)
{
    size_t unit = (c - m->base) >> UMEM_UNIT_SHIFT;
    unsigned k = atomic_load_explicit(&m->map[unit], memory_order_relaxed);
    if (k == 0)
        return NULL;
    return umem__page_at(m->base + ((unit - (k - 1u)) << UMEM_UNIT_SHIFT));
}

/* The page holding p, or NULL when p lies in none (any thread, no lock:
 * a page p lies in stays one while p is in use). */
static inline struct umem_page *umem__page_of(const umem_t *h, const void *p)
{
    uintptr_t c = (uintptr_t)p;
    if (UMEM_LIKELY(c - h->umap[0].lo < h->umap[0].hi - h->umap[0].lo))
        return umem__page_in(&h->umap[0], c);
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_acquire);
    for (unsigned i = 1; i < n; i++)
        if (c - h->umap[i].lo < h->umap[i].hi - h->umap[i].lo)
            return umem__page_in(&h->umap[i], c);
    return NULL;
}

/* The units of map m that may hold pages (lock held): the first region's
 * up to its committed end, not its whole reservation. */
static inline size_t umem__units_used(const umem_t *h, const struct umem_units *m)
{
    if (m != &h->umap[0])
        return m->count;
    uintptr_t end = (uintptr_t)atomic_load_explicit(&h->end, memory_order_relaxed);
    size_t n = ((end - m->base) >> UMEM_UNIT_SHIFT) + 1;
    return n < m->count ? n : m->count;
}

/* The unit map of the region holding address c (lock held), or NULL. */
static inline struct umem_units *umem__units_of(umem_t *h, uintptr_t c)
{
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++)
        if (c - h->umap[i].lo < h->umap[i].hi - h->umap[i].lo)
            return &h->umap[i];
    return NULL;
}

static inline void umem__set_units(struct umem_units *m, const struct umem_page *pg, int on)
{
    size_t unit = ((uintptr_t)pg - m->base) >> UMEM_UNIT_SHIFT;
    for (unsigned k = 0; k < pg->units; k++)
        atomic_store_explicit(&m->map[unit + k], (unsigned char)(on ? k + 1u : 0u),
                              memory_order_relaxed);
}

/* The index of the slot starting at p; dies naming p when no slot does. */
static inline size_t umem__slot_index(const struct umem_page *pg, const void *p, const char *call)
{
    size_t rel = (size_t)((const char *)p - pg->start), i = (size_t)((rel * pg->recip) >> 40);
    if (UMEM_UNLIKELY(rel >= pg->span || i * pg->slot != rel))
        umem__die_of(call, "bad %s (not from umem_alloc: not the start of a block):", p);
    return i;
}

/* Checks that p is a slot's start and does not carry the free tag; dies
 * naming p if not. */
static inline void umem__slot_check(const umem_t *h, const struct umem_page *pg, const void *p,
                                    const char *call)
{
    umem__slot_index(pg, p, call);
    if (UMEM_UNLIKELY((size_t)(uintptr_t)((void *const *)p)[1] == umem__tag(h, p)))
        umem__die_of(call, "%s of a block freed already (double free):", p);
}

/* The owner's map of its slots in use, one bit each, after the header. */
static inline unsigned char *umem__bits(const struct umem_page *pg)
{
    return (unsigned char *)pg + UMEM_PAGE_HEAD;
}

/* The bytes before a page's first slot: its header and its map of slots
 * in use, rounded up to UMEM_PAGE_HEAD (aligned slots start aligned). */
static inline size_t umem__page_head(size_t slot, unsigned units)
{
    size_t most = (((size_t)units << UMEM_UNIT_SHIFT) - UMEM_HEADER - UMEM_PAGE_HEAD) / slot;
    return UMEM_PAGE_HEAD + (((most + 7) / 8 + UMEM_PAGE_HEAD - 1) & ~(size_t)(UMEM_PAGE_HEAD - 1));
}

static inline void umem__page_unlink(struct umem_page **head, struct umem_page *pg)
{
    if (pg->prev)
        pg->prev->next = pg->next;
    else
        *head = pg->next;
    if (pg->next)
        pg->next->prev = pg->prev;
}

static inline void umem__page_push(struct umem_page **head, struct umem_page *pg, uint8_t list)
{
    pg->prev = NULL;
    pg->next = *head;
    if (*head)
        (*head)->prev = pg;
    *head = pg;
    pg->list = list;
}

/* The page's owner, or the lock holder for an abandoned page: moves its
 * remote frees to its free list; how many. */
static inline unsigned umem__take_remote(struct umem_page *pg)
{
    if ((atomic_load_explicit(&pg->remote, memory_order_relaxed) & ~UMEM_WATCH) == 0)
        return 0;
    uintptr_t r = atomic_exchange_explicit(&pg->remote, 0, memory_order_acquire);
    void **first = (void **)(r & ~UMEM_WATCH), **last = first;
    unsigned n = 1;
    for (;;) {
        /* Each was in use, or the owner freed it too (a double free). */
        size_t i = umem__slot_index(pg, last, "free");
        unsigned char bit = (unsigned char)(1u << (i % 8));
        if (!(umem__bits(pg)[i / 8] & bit))
            umem__die("free of a block freed already (double free):", last);
        umem__bits(pg)[i / 8] &= (unsigned char)~bit;
        if (!last[0])
            break;
        last = (void **)last[0];
        if (++n > umem__used(pg))
            umem__die("heap corruption: a page's remote frees outnumber its blocks at", pg);
    }
    last[0] = pg->free;
    pg->free = first;
    umem__set_used(pg, umem__used(pg) - n);
    return n;
}

/* Owner: umem__take_remote, counted in the pool. */
static inline unsigned umem__collect(struct umem_pool *pool, struct umem_page *pg)
{
    unsigned n = umem__take_remote(pg);
    if (n) {
        umem__add(&pool->collected, n);
        umem__add(&pool->collected_bytes, (uint64_t)n * pg->slot);
    }
    return n;
}

/* Owner: slots never handed out join the free list, UMEM_EXTEND_BYTES
 * worth at a time (at least one), in address order; how many. */
static inline unsigned umem__extend(const umem_t *h, struct umem_page *pg)
{
    size_t left = (size_t)(pg->limit - pg->bump) / pg->slot, want = UMEM_EXTEND_BYTES / pg->slot;
    want = want > 0 ? want : 1;
    unsigned n = (unsigned)(left < want ? left : want);
    void **tail = NULL;
    for (unsigned i = n; i > 0; i--) {
        void **p = (void **)(pg->bump + (size_t)(i - 1) * pg->slot);
        p[0] = tail;
        p[1] = (void *)umem__tag(h, p);
        tail = p;
    }
    if (n > 0) {
        ((void **)(pg->bump + (size_t)(n - 1) * pg->slot))[0] = pg->free;
        pg->free = tail;
        pg->bump += (size_t)n * pg->slot;
    }
    return n;
}

/* Owner: whether the page has a free slot, after taking its remote frees
 * back, else slots never handed out (memory already touched first). */
static inline int umem__page_refill(const umem_t *h, struct umem_pool *pool, struct umem_page *pg)
{
    return pg->free || umem__collect(pool, pg) || umem__extend(h, pg);
}

/* Owner: a slot from the page's free list, which is not empty. */
static inline void *umem__page_pop(umem_t *h, struct umem_pool *pool, struct umem_page *pg)
{
    void **p = pg->free;
    /* Still tagged: only who knows the heap's secret can forge the tag, so
     * a write after free over the link cannot hand out an address of the
     * writer's choosing. */
    if (UMEM_UNLIKELY((size_t)(uintptr_t)p[1] != umem__tag(h, p)))
        umem__die("heap corruption: a block was written after its free:", p);
    pg->free = (void **)p[0];
    p[1] = NULL; /* no longer tagged as free */
    size_t i = (size_t)(((uint64_t)((char *)p - pg->start) * pg->recip) >> 40);
    umem__bits(pg)[i / 8] |= (unsigned char)(1u << (i % 8));
    umem__set_used(pg, umem__used(pg) + 1);
    umem__add(&pool->allocs, 1);
    return p;
}

/* Owner: a page with no room goes to the full list, watched (a remote
 * free into it sets the owner's hint); 0 when a remote free came first,
 * collected, and the page has room after all. */
static inline int umem__watch(struct umem_pool *pool, struct umem_page *pg)
{
    /* The mark may be left from an earlier time on the full list: a page
     * that came back for its owner's frees keeps it (clearing it would
     * cost an atomic read-modify-write on every such free). */
    uintptr_t r = atomic_load_explicit(&pg->remote, memory_order_relaxed);
    while (r != UMEM_WATCH) {
        if (r & ~UMEM_WATCH) {
            umem__collect(pool, pg);
            return 0;
        }
        if (atomic_compare_exchange_weak_explicit(&pg->remote, &r, UMEM_WATCH,
                                                  memory_order_relaxed, memory_order_relaxed))
            break;
    }
    if (pg->list == UMEM_LIST_AVAIL)
        umem__page_unlink(&pool->avail[pg->cls], pg);
    umem__page_push(&pool->full[pg->cls], pg, UMEM_LIST_FULL);
    return 1;
}

/* Owner: the full pages of a class that remote frees gave room go back
 * among the pages with room. */
static inline void umem__sweep(struct umem_pool *pool, unsigned cls)
{
    atomic_store_explicit(&pool->hint[cls], 0, memory_order_relaxed);
    pool->full_freed &= ~((uint64_t)1 << cls);
    struct umem_page *pg = pool->full[cls], *next;
    for (; pg; pg = next) {
        next = pg->next;
        if (pg->free || umem__collect(pool, pg)) {
            umem__page_unlink(&pool->full[cls], pg);
            umem__page_push(&pool->avail[cls], pg, UMEM_LIST_AVAIL);
        }
    }
}

/* Owner: a page of the class with room, without the lock, or NULL. */
static inline struct umem_page *umem__pool_find(umem_t *h, struct umem_pool *pool, unsigned cls)
{
    for (;;) {
        struct umem_page *pg;
        while ((pg = pool->avail[cls]) != NULL) {
            if (umem__page_refill(h, pool, pg) || !umem__watch(pool, pg))
                return pg;
        }
        /* The owner freed into a full page, or a hint says another thread
         * did; once in 64 times the full pages are swept anyway, in case
         * a hint went to a pool that gave the page up meanwhile. */
        if (!(pool->full_freed >> cls & 1u) &&
            !atomic_load_explicit(&pool->hint[cls], memory_order_relaxed) &&
            (++pool->sweeps & 63u) != 0)
            return NULL;
        umem__sweep(pool, cls);
        if (!pool->avail[cls])
            return NULL;
    }
}

/* Files a piece of a large free block that was cut: a large piece keeps
 * what of the block's dirty range lies in it, and its age. */
static inline void umem__file_part(umem_t *h, char *b, size_t size, char *lo, char *hi,
                                   uint64_t stamp)
{
    umem__file(h, b, size);
    if (size <= UMEM_SMALL_MAX)
        return;
    struct umem_node *x = (struct umem_node *)b;
    lo = lo > b ? lo : b;
    hi = hi < b + size ? hi : b + size;
    x->dirty_lo = lo < hi ? lo : NULL;
    x->dirty_hi = lo < hi ? hi : NULL;
    x->stamp = stamp;
}

/* Where a block of `need` bytes with its payload aligned to `align` fits
 * in the free block x of `size` bytes: its header, or NULL.  What lies
 * before it must be nothing or a block of its own. */
static inline char *umem__window(struct umem_node *x, size_t size, size_t align, size_t need)
{
    uintptr_t f = (uintptr_t)x;
    uintptr_t at = ((f + UMEM_HEADER + align - 1) & ~(uintptr_t)(align - 1)) - UMEM_HEADER;
    if (at != f && at - f < UMEM_MIN_BLOCK)
        at += align;
    return at - f <= size && size - (at - f) >= need ? (char *)at : NULL;
}

/* The lowest-addressed large free block holding such a window: an
 * in-order walk of the subtrees whose largest block is big enough. */
static inline struct umem_node *umem__window_find(struct umem_node *x, size_t align, size_t need,
                                                  char **at, unsigned depth)
{
    for (; x && x->max >= need && depth < UMEM_PATH; x = x->right, depth++) {
        struct umem_node *y = umem__window_find(x->left, align, need, at, depth + 1);
        if (y)
            return y;
        size_t size = umem__size(x);
        if (size >= need && (*at = umem__window(x, size, align, need)) != NULL)
            return x;
    }
    return NULL;
}

/* A block of *need bytes (more than UMEM_SMALL_MAX) whose payload is
 * aligned to `align`, cut from the first large free block that holds one
 * (lock held); the pieces before and after it stay free.  Grows the heap
 * once when none does.  NULL when nothing fits. */
static inline char *umem__take_window(umem_t *h, size_t align, size_t *need)
{
    char *b = NULL;
    struct umem_node *x = umem__window_find(h->root, align, *need, &b, 0);
    if (!x) {
        if (!(h->flags & UMEM_GROW) || umem__grow(h, *need + align + UMEM_MIN_BLOCK) != 0)
            return NULL;
        x = umem__window_find(h->root, align, *need, &b, 0);
        if (!x)
            return NULL;
    }
    if (!umem__header_ok(h, x))
        umem__die("heap corruption: free block header overwritten at", x);
    size_t size = umem__size(x), lead = (size_t)(b - (char *)x);
    size_t tail = size - lead - *need;
    char *lo = x->dirty_lo, *hi = x->dirty_hi;
    uint64_t stamp = x->stamp;
    umem__unfile(h, (char *)x, size);
    if (tail < UMEM_MIN_BLOCK) {
        *need += tail;
        tail = 0;
        umem__set_prev_free(b + *need, 0);
    }
    umem__set_header(h, b, *need | UMEM_USED | (lead ? UMEM_PREV_FREE : 0));
    if (lead)
        umem__file_part(h, (char *)x, lead, lo, hi, stamp);
    if (tail)
        umem__file_part(h, b + *need, tail, lo, hi, stamp);
    return b;
}

/* A page of the class carved from the heap for the pool (lock held), its
 * payload on a unit boundary of a region with a unit map; NULL when none
 * fits. */
static inline struct umem_page *umem__page_carve(umem_t *h, struct umem_pool *pool, unsigned cls)
{
    size_t slot = umem__class_size(cls);
    unsigned units = umem__page_units(slot);
    size_t need = (size_t)units << UMEM_UNIT_SHIFT;
    /* A heap that cannot grow keeps half its room for blocks with headers:
     * mostly empty pages of many classes could take it all. */
    if (!(h->flags & UMEM_GROW) && h->page_bytes + need > h->heap_bytes / 2)
        return NULL;
    char *b = umem__take_window(h, UMEM_UNIT, &need);
    if (!b)
        return NULL;
    char *a = b + UMEM_HEADER;
    struct umem_units *m = umem__units_of(h, (uintptr_t)a);
    if (!m) {
        /* In a region with no unit map (past UMEM_UNIT_MAPS): no pages. */
        struct umem_span *s = umem__span_find(h, b);
        umem__merge_free(h, b, s ? s->first : b);
        return NULL;
    }
    struct umem_page *pg = umem__page_at((uintptr_t)a);
    memset(pg, 0, sizeof *pg);
    pg->magic = umem__page_magic(h, pg);
    atomic_store_explicit(&pg->owner, pool, memory_order_relaxed);
    atomic_store_explicit(&pg->remote, 0, memory_order_relaxed);
    pg->slot = (uint32_t)slot;
    pg->cls = (uint8_t)cls;
    pg->units = (uint8_t)units;
    size_t head = umem__page_head(slot, units);
    memset(umem__bits(pg), 0, head - UMEM_PAGE_HEAD);
    pg->start = (char *)pg + head;
    pg->capacity = umem__page_capacity(pg, slot, units, head);
    pg->span = (uint32_t)(pg->capacity * slot);
    pg->bump = pg->start;
    pg->limit = pg->start + pg->span;
    pg->recip = ((uint64_t)1 << 40) / slot + 1u;
    umem__set_units(m, pg, 1);
    h->pages++;
    h->pages_made++;
    h->page_bytes += need;
    umem__grew(h, need);
    umem__page_push(&pool->avail[cls], pg, UMEM_LIST_AVAIL);
    return pg;
}

/* An empty page goes back to the heap (lock held). */
static inline void umem__page_release(umem_t *h, struct umem_page *pg)
{
    struct umem_units *m = umem__units_of(h, (uintptr_t)pg);
    umem__set_units(m, pg, 0);
    pg->magic = 0;
    char *b = umem__page_block(pg);
    size_t size = umem__size(b);
    h->pages--;
    h->pages_freed++;
    h->page_bytes -= size;
    h->bytes_in_use -= size;
    h->unpurged += size;
    struct umem_span *s = m == &h->umap[0] ? NULL : umem__span_find(h, b);
    umem__merge_free(h, b, s ? s->first : h->first);
}

/* A page for the pool (lock held): one a thread that ended left behind,
 * adopted, else a new one; NULL when the heap has no room. */
static inline struct umem_page *umem__page_get(umem_t *h, struct umem_pool *pool, unsigned cls)
{
    struct umem_page *pg;
    while ((pg = h->abandoned[cls]) != NULL) {
        umem__page_unlink(&h->abandoned[cls], pg);
        h->abandoned_pages--;
        atomic_store_explicit(&pg->owner, pool, memory_order_relaxed);
        umem__page_push(&pool->avail[cls], pg, UMEM_LIST_AVAIL);
        if (umem__page_refill(h, pool, pg) || !umem__watch(pool, pg))
            return pg;
    }
    return umem__page_carve(h, pool, cls);
}

/* The pool's pages on one list leave it (lock held): the empty ones go
 * back to the heap, the others to the heap's abandoned pages. */
static inline void umem__pool_drop(umem_t *h, struct umem_pool *pool, struct umem_page **head,
                                   int keep_used)
{
    struct umem_page *pg = *head, *next;
    for (; pg; pg = next) {
        next = pg->next;
        atomic_fetch_and_explicit(&pg->remote, ~UMEM_WATCH, memory_order_relaxed);
        umem__collect(pool, pg);
        if (umem__used(pg) != 0 && keep_used)
            continue;
        umem__page_unlink(head, pg);
        if (umem__used(pg) == 0) {
            umem__page_release(h, pg);
            continue;
        }
        atomic_store_explicit(&pg->owner, NULL, memory_order_relaxed);
        umem__page_push(&h->abandoned[pg->cls], pg, UMEM_LIST_ABANDONED);
        h->abandoned_pages++;
    }
}

/* Pages of threads that ended, emptied by other threads' frees, go back
 * to the heap (lock held): no thread may ever need their class again. */
static inline void umem__reclaim_abandoned(umem_t *h)
{
    for (unsigned cls = 0; cls < UMEM_CLASSES && h->abandoned_pages > 0; cls++) {
        struct umem_page *pg = h->abandoned[cls], *next;
        for (; pg; pg = next) {
            next = pg->next;
            unsigned n = umem__take_remote(pg);
            h->gone_collected += n;
            h->gone_collected_bytes += (uint64_t)n * pg->slot;
            if (umem__used(pg) != 0)
                continue;
            umem__page_unlink(&h->abandoned[cls], pg);
            h->abandoned_pages--;
            umem__page_release(h, pg);
        }
    }
}

static inline void umem__unlock(umem_t *h);
static UMEM_NOINLINE void *umem__alloc_locked(umem_t *h, size_t n);

/* Owner: an allocation of class cls that its first page could not serve. */
static UMEM_NOINLINE void *umem__pool_alloc(umem_t *h, struct umem_pool *pool, unsigned cls,
                                            size_t n)
{
    struct umem_page *pg = umem__pool_find(h, pool, cls);
    if (pg)
        return umem__page_pop(h, pool, pg);
    int r = umem__lock(h, UMEM_COUNTED | UMEM_LEND);
    if (r == 1) /* lent to a fork; n == 0: the caller's to find */
        return n ? umem__lent_alloc(h, n, UMEM_ALIGN) : NULL;
    if (r != 0)
        return NULL;
    pg = umem__page_get(h, pool, cls);
    if (!pg) {
        /* Out of room: this thread's empty pages go back first, and those
         * of ended threads that other threads' frees emptied. */
        for (unsigned c = 0; c < UMEM_CLASSES; c++)
            umem__pool_drop(h, pool, &pool->avail[c], 1);
        umem__reclaim_abandoned(h);
        pg = umem__page_carve(h, pool, cls);
    }
    umem__maybe_purge(h);
    umem__unlock(h);
    if (pg && umem__page_refill(h, pool, pg))
        return umem__page_pop(h, pool, pg);
    /* A block with a header instead, or NULL; n == 0: the caller's to find. */
    return n ? umem__alloc_locked(h, n) : NULL;
}

/* Owner, after a free: a full page has room again, or a page that does
 * not serve its class is empty and goes back to the heap. */
static UMEM_NOINLINE void umem__page_changed(umem_t *h, struct umem_pool *pool,
                                             struct umem_page *pg)
{
    unsigned cls = pg->cls;
    if (pg->list == UMEM_LIST_FULL) {
        /* It stays there, its frees found by the next sweep, unless it is
         * empty now. */
        pool->full_freed |= (uint64_t)1 << cls;
        if (umem__used(pg) != 0)
            return;
        umem__page_unlink(&pool->full[cls], pg);
    } else if (umem__used(pg) != 0 || pool->avail[cls] == pg) {
        return;
    } else {
        umem__page_unlink(&pool->avail[cls], pg);
    }
    /* Empty, and off its list: the class keeps one empty page, which
     * serves from now on (an allocation right after goes to it, not to
     * the heap); a second goes back to the heap. */
    struct umem_page *first = pool->avail[cls];
    if (!first || umem__used(first) != 0 || umem__lock(h, UMEM_COUNTED | UMEM_LEND) != 0) {
        umem__page_push(&pool->avail[cls], pg, UMEM_LIST_AVAIL);
        return;
    }
    umem__page_release(h, pg);
    umem__maybe_purge(h);
    umem__unlock(h);
}

/* A free into a page another thread owns (or none): one compare-and-swap
 * onto its remote list.  What the push needs of the page is read first:
 * once pushed, the slot may be collected and the page given back. */
static UMEM_NOINLINE void umem__remote_free(umem_t *h, struct umem_page *pg, void **q,
                                            struct umem_pool *mine)
{
    struct umem_pool *owner = atomic_load_explicit(&pg->owner, memory_order_relaxed);
    unsigned cls = pg->cls;
    uint64_t slot = pg->slot;
    uintptr_t old = atomic_load_explicit(&pg->remote, memory_order_relaxed);
    do {
        q[0] = (void *)(old & ~UMEM_WATCH);
    } while (!atomic_compare_exchange_weak_explicit(&pg->remote, &old,
                                                    (uintptr_t)q | (old & UMEM_WATCH),
                                                    memory_order_release, memory_order_relaxed));
    if (old & UMEM_WATCH && owner &&
        !atomic_load_explicit(&owner->hint[cls], memory_order_relaxed))
        atomic_store_explicit(&owner->hint[cls], 1, memory_order_relaxed);
    if (mine) {
        umem__add(&mine->remote_frees, 1);
        umem__add(&mine->remote_bytes, slot);
    } else {
        atomic_fetch_add_explicit(&h->orphan_frees, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->orphan_bytes, slot, memory_order_relaxed);
    }
}

/* The thread is ending: its pages go back or are left for others to
 * adopt, and its pool waits for another thread. */
static inline void umem__pool_exit(void *arg)
{
    umem__tls.exiting = 1;
    if (arg == UMEM_POOL_GONE)
        return;
    struct umem_pool *pool = (struct umem_pool *)arg;
    umem_t *h = pool->heap;
    UMEM__VG_QUIET(h);
    if (umem__lock(h, 0) == 0) {
        for (unsigned cls = 0; cls < UMEM_CLASSES; cls++) {
            umem__pool_drop(h, pool, &pool->avail[cls], 0);
            umem__pool_drop(h, pool, &pool->full[cls], 0);
        }
        h->gone_allocs += umem__get(&pool->allocs);
        h->gone_moves += umem__get(&pool->moves);
        h->gone_remote += umem__get(&pool->remote_frees);
        h->gone_remote_bytes += umem__get(&pool->remote_bytes);
        h->gone_collected += umem__get(&pool->collected);
        h->gone_collected_bytes += umem__get(&pool->collected_bytes);
        if (pool->prev)
            pool->prev->next = pool->next;
        else
            h->pools = pool->next;
        if (pool->next)
            pool->next->prev = pool->prev;
        pool->next = h->spare_pools;
        h->spare_pools = pool;
        umem__reclaim_abandoned(h);
        umem__maybe_purge(h);
        umem__unlock(h);
    }
    UMEM__VG_LOUD(h);
    pthread_setspecific(h->key, UMEM_POOL_GONE);
    umem__tls.heap = h;
    umem__tls.secret = h->secret;
    umem__tls.pool = NULL;
}

static inline size_t umem__pool_bytes(const umem_t *h)
{
    return (sizeof(struct umem_pool) + h->page - 1) & ~(h->page - 1);
}

#define UMEM_POOL_LATER ((struct umem_pool *)2) /* the lock is lent to a fork: ask again */

/* A pool for the calling thread (a spare one, or a new one), or NULL. */
static inline struct umem_pool *umem__pool_new(umem_t *h)
{
    size_t bytes = umem__pool_bytes(h);
    int r = umem__lock(h, UMEM_LEND);
    if (r == 0 && !h->spare_pools) {
        umem__unlock(h);
        int saved = errno; /* a free may come here: it leaves errno alone */
        struct umem_pool *fresh = (struct umem_pool *)umem__map(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE);
        errno = saved;
        if (!fresh)
            return NULL;
        fresh->heap = h;
        if ((r = umem__lock(h, UMEM_LEND)) != 0) {
            umem__unmap(fresh, bytes);
        } else {
            fresh->next = h->spare_pools; /* a spare, taken below */
            h->spare_pools = fresh;
            h->mapped_bytes += bytes;
        }
    }
    if (r != 0)
        return r == 1 ? UMEM_POOL_LATER : NULL;
    struct umem_pool *pool = h->spare_pools;
    h->spare_pools = pool->next;
    /* A spare's counters were added to the heap's; its hints may still be
     * written by late remote frees, and are left alone. */
    memset(pool->avail, 0, sizeof pool->avail);
    memset(pool->full, 0, sizeof pool->full);
    pool->sweeps = 0;
    pool->full_freed = 0;
    _Atomic uint64_t *counters[] = {&pool->allocs,       &pool->moves,     &pool->remote_frees,
                                    &pool->remote_bytes, &pool->collected, &pool->collected_bytes};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        atomic_store_explicit(counters[i], 0, memory_order_relaxed);
    pool->prev = NULL;
    pool->next = h->pools;
    if (pool->next)
        pool->next->prev = pool;
    h->pools = pool;
    umem__unlock(h);
    return pool;
}

/* The calling thread's pool for h, made on first use; NULL when the
 * thread must go to the heap's lock instead. */
static UMEM_NOINLINE struct umem_pool *umem__pool_attach(umem_t *h)
{
    void *v = pthread_getspecific(h->key);
    /* A key's value is cleared before its destructor runs, and the
     * destructors of other keys may allocate afterwards: a thread that is
     * ending gets no new pool, which nothing would give back. */
    if (umem__tls.exiting)
        v = UMEM_POOL_GONE;
    struct umem_pool *pool = v == UMEM_POOL_GONE ? NULL : (struct umem_pool *)v;
    if (!pool && v != UMEM_POOL_GONE && (pool = umem__pool_new(h)) == UMEM_POOL_LATER)
        return NULL; /* the heap's lock (lent) serves this call; no pool yet */
    if (pool && !v) {
        /* Known to this thread first: pthread_setspecific may allocate,
         * and that allocation must find the pool, not make another. */
        umem__tls.heap = h;
        umem__tls.secret = h->secret;
        umem__tls.pool = pool;
        if (pthread_setspecific(h->key, pool) != 0)
            umem__pool_exit(pool); /* no key, no exit: the lock it is */
        return umem__tls.pool;
    }
    umem__tls.heap = h;
    umem__tls.secret = h->secret;
    umem__tls.pool = pool;
    return pool;
}

static inline struct umem_pool *umem__pool(umem_t *h)
{
    if (UMEM_LIKELY(umem__tls.heap == h && umem__tls.secret == h->secret))
        return umem__tls.pool;
    return umem__pool_attach(h);
}

/* A free of a slot, by its owner or by any other thread. */
static inline void umem__pool_free(umem_t *h, struct umem_page *pg, void *p)
{
    size_t i = umem__slot_index(pg, p, "free");
    void **q = (void **)p;
    struct umem_pool *mine = umem__pool(h);
    if (UMEM_LIKELY(mine && atomic_load_explicit(&pg->owner, memory_order_relaxed) == mine)) {
        /* The owner's map says whether the slot is in use: the block's
         * own memory is written, never read (a load that would wait for
         * a cache miss where the program left the block cold). */
        unsigned char *bits = umem__bits(pg) + i / 8, bit = (unsigned char)(1u << (i % 8));
        if (UMEM_UNLIKELY(!(*bits & bit))) {
            if ((char *)p >= pg->bump)
                umem__die("bad free (not from umem_alloc: never handed out):", p);
            umem__die("free of a block freed already (double free):", p);
        }
        *bits &= (unsigned char)~bit;
        q[1] = (void *)umem__tag(h, p);
        q[0] = pg->free;
        pg->free = q;
        uint32_t used = umem__used(pg) - 1;
        umem__set_used(pg, used);
        /* A page that serves its class (the first of its list: no prev)
         * stays even when empty. */
        if (UMEM_UNLIKELY((used == 0 && pg->prev) || pg->list != UMEM_LIST_AVAIL))
            umem__page_changed(h, mine, pg);
        return;
    }
    if (UMEM_UNLIKELY((size_t)(uintptr_t)q[1] == umem__tag(h, p)))
        umem__die("free of a block freed already (double free):", p);
    q[1] = (void *)umem__tag(h, p);
    umem__remote_free(h, pg, q, mine);
}

/* An allocation of n bytes aligned to `align` (at most UMEM_PAGE_HEAD) from
 * the pools: the first class whose slots are all aligned (slots start on
 * a UMEM_PAGE_HEAD boundary).  NULL when the thread has no pool. */
static inline void *umem__pool_aligned(umem_t *h, size_t align, size_t n)
{
    struct umem_pool *pool = umem__pool(h);
    if (!pool)
        return NULL;
    unsigned cls = umem__class(n);
    while (cls < UMEM_CLASSES && umem__class_size(cls) % align != 0)
        cls++;
    if (cls == UMEM_CLASSES)
        return NULL;
    struct umem_page *pg = pool->avail[cls];
    if (pg && pg->free)
        return umem__page_pop(h, pool, pg);
    return umem__pool_alloc(h, pool, cls, 0);
}

/* ---- the interface ---- */

static inline uint64_t umem__keep_leaks(umem_t *h, const char *what);
static inline void umem__keep_final(umem_t *h);
static inline void umem__unpoison_all(umem_t *h);
static inline void umem_get_stats(umem_t *h, umem_stats_t *out);

/* The tools that watch a new heap (see DEBUGGING): UMEM_DEBUG's records,
 * AddressSanitizer's in a build with it, memcheck when the program runs
 * under it (unless UMEM_VALGRIND=0 is in the environment).  A UMEM_SHARED
 * heap gets UMEM_DEBUG's alone: a tool sees one process's memory, and
 * that heap's blocks pass between processes. */
static inline unsigned umem__tools(unsigned flags)
{
    unsigned tools = flags & UMEM_DEBUG ? UMEM__KEEP : 0;
#ifdef UMEM__ASAN
    if (!(flags & UMEM_SHARED))
        tools |= UMEM__KEEP | UMEM__POISONS;
#endif
#ifdef UMEM__BACKTRACE
    /* backtrace() loads its unwinder, which allocates, on its first use:
     * here, rather than inside the heap's first allocation. */
    if (tools & UMEM__KEEP && !umem__tls.tracing) {
        void *frame[1];
        umem__tls.tracing = 1;
        (void)backtrace(frame, 1);
        umem__tls.tracing = 0;
    }
#endif
#ifdef UMEM__VALGRIND
    if (!(flags & UMEM_SHARED) && RUNNING_ON_VALGRIND) {
        const char *off = getenv("UMEM_VALGRIND");
        unsigned char probe = 0, vbits = 0;
        /* Only memcheck answers this request (helgrind and DRD do not). */
        if (!(off && strcmp(off, "0") == 0) && VALGRIND_GET_VBITS(&probe, &vbits, 1) == 1)
            tools |= UMEM__VG;
    }
#endif
    return tools;
}

static inline umem_t *umem_create(size_t bytes, unsigned flags)
{
    unsigned known = UMEM_SHARED | UMEM_NOLOCK | UMEM_GROW | UMEM_CACHED | UMEM_DEBUG;
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
    h->flags = flags | umem__tools(flags);
    h->live.next = h->live.prev = &h->live;
    h->held.next = h->held.prev = &h->held;
    h->creator = getpid();
    h->page = page;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    static _Atomic size_t heaps_made;
    size_t seed = (size_t)(uintptr_t)base ^ (size_t)ts.tv_nsec ^ ((size_t)ts.tv_sec << 20) ^
                  (size_t)h->creator ^ (size_t)((uint64_t)atomic_fetch_add(&heaps_made, 1) << 40);
    h->secret = (size_t)(seed * 0x9E3779B97F4A7C15ull) | 1u;

    if (!(flags & UMEM_NOLOCK)) {
        int r = umem__lock_init(h);
        if (r == 0 && flags & UMEM_CACHED) {
            r = umem__units_init(&h->umap[0], (uintptr_t)base, (uintptr_t)base + map_bytes);
            if (r == 0 && (r = pthread_key_create(&h->key, umem__pool_exit)) != 0)
                munmap((void *)h->umap[0].map, h->umap[0].count);
            if (r == 0)
                atomic_store_explicit(&h->umaps, 1, memory_order_release);
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
    UMEM__VG_HIDE(h, h->first, commit - UMEM_CONTROL_BYTES);

    if (umem__forked_heap(h)) {
        umem__forks_register();
        sigset_t old;
        umem__forks_take(&old);
        h->fork_next = umem__forks;
        umem__forks = h;
        umem__forks_drop(&old);
    }
    return h;
}

/* A mapping of a heap being destroyed, unmapped; or, for `keep`, left as
 * address space with no memory: memcheck still counts the blocks the
 * program left there, to report them as leaked at exit, and a mapping
 * made later at that address would overlap them. */
static inline void umem__drop(void *p, size_t bytes, int keep)
{
    if (!keep || mmap(p, bytes, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0) == MAP_FAILED)
        munmap(p, bytes);
}

static inline void umem_destroy(umem_t *h)
{
    if (!h)
        return;
    UMEM__VG_QUIET(h);
    int keep_space = 0;
    if (h->flags & UMEM__VG) {
        umem_stats_t st;
        umem_get_stats(h, &st);
        keep_space = st.allocs - st.frees > st.held_blocks; /* memcheck holds blocks here */
    }
    /* A shared heap's blocks are listed by its creator alone. */
    if (h->flags & UMEM__KEEP && (!(h->flags & UMEM_SHARED) || h->creator == getpid()))
        umem__keep_final(h);
    if (h->flags & UMEM__POISONS)
        umem__unpoison_all(h);
    if (umem__forked_heap(h)) {
        sigset_t old;
        umem__forks_take(&old);
        for (umem_t **link = &umem__forks; *link; link = &(*link)->fork_next)
            if (*link == h) {
                *link = h->fork_next;
                break;
            }
        umem__forks_drop(&old);
    }
    int owner = !(h->flags & UMEM_SHARED) || h->creator == getpid();
    if (h->flags & UMEM_CACHED) {
        pthread_key_delete(h->key);
        struct umem_pool *lists[2] = {h->pools, h->spare_pools};
        for (int i = 0; i < 2; i++)
            while (lists[i]) {
                struct umem_pool *pool = lists[i];
                lists[i] = pool->next;
                munmap(pool, umem__pool_bytes(h));
            }
        for (unsigned i = 0; i < atomic_load_explicit(&h->umaps, memory_order_relaxed); i++)
            munmap((void *)h->umap[i].map, h->umap[i].count);
        if (umem__tls.heap == h)
            umem__tls.heap = NULL;
    }
    while (h->map_cached > 0)
        umem__unmap_cached(h, 0);
    /* Blocks mapped while a fork held the lock, and never settled. */
    struct umem_span *lent = atomic_load_explicit(&h->lent_maps, memory_order_acquire);
    while (lent) {
        struct umem_span *next = (struct umem_span *)lent->node.left;
        munmap(lent, (size_t)(lent->end - (char *)lent));
        lent = next;
    }
    while (h->spans) {
        struct umem_span *s = (struct umem_span *)h->spans;
        size_t bytes = umem__size(s);
        struct umem_node **path[UMEM_PATH] = {&h->spans};
        umem__tree_delete(path, 1);
        umem__drop(s, bytes, keep_space);
    }
    if (owner && !(h->flags & UMEM_NOLOCK))
        pthread_mutex_destroy(&h->lock);
    UMEM__VG_LOUD(h);
    umem__drop(h, h->map_bytes, keep_space);
}

/* Any allocation the pools do not serve (lock taken here). */
static UMEM_NOINLINE void *umem__alloc_locked(umem_t *h, size_t n)
{
    size_t need = umem__need(n), bytes;
    if (h->flags & UMEM_GROW && n >= UMEM_LARGE && need != 0) {
        char *b = umem__alloc_large(h, n, UMEM_ALIGN, &bytes);
        if (b)
            return b + UMEM_HEADER;
    }
    int r = umem__lock(h, UMEM_COUNTED | UMEM_LEND);
    if (r != 0)
        return r == 1 ? umem__lent_alloc(h, n, UMEM_ALIGN) : NULL;
    char *b = need != 0 ? umem__take(h, &need, 1) : NULL;
    if (!b && need != 0 && h->abandoned_pages > 0) {
        umem__reclaim_abandoned(h); /* ended threads' pages that emptied */
        b = umem__take(h, &need, 1);
    }
    if (b)
        umem__count_alloc(h, need);
    else
        h->failed_allocs++;
    umem__maybe_purge(h);
    umem__unlock(h);
    if (!b) {
        errno = ENOMEM;
        return NULL;
    }
    return b + UMEM_HEADER;
}

/* umem_alloc with no tool watching (the debugging layer's own). */
static UMEM_HOT_INLINE void *umem__alloc(umem_t *h, size_t n)
{
    if (n == 0)
        return NULL;
    if (h->flags & UMEM_CACHED && n <= UMEM_POOL_MAX) {
        struct umem_pool *pool = umem__pool(h);
        if (UMEM_LIKELY(pool != NULL)) {
            unsigned cls = umem__class(n);
            struct umem_page *pg = pool->avail[cls];
            if (UMEM_LIKELY(pg && pg->free))
                return umem__page_pop(h, pool, pg);
            return umem__pool_alloc(h, pool, cls, n);
        }
    }
    return umem__alloc_locked(h, n);
}

/* A free of a block with a header (`moved`: the old block of a realloc,
 * which counts as no free).  errno is left as it was: every system call
 * on the way saves it. */
static UMEM_NOINLINE void umem__free_locked(umem_t *h, void *p, int moved)
{
    if ((uintptr_t)p % UMEM_ALIGN != 0)
        umem__die("free of a pointer outside the heap or misaligned:", p);
    int r = umem__lock(h, UMEM_COUNTED | UMEM_LEND | UMEM_QUIET);
    if (r == 1)
        umem__lent_free(h, p, moved);
    if (r != 0)
        return;
    umem__release(h, p, moved);
    umem__maybe_purge(h); /* errno kept, as by the lock and the unmaps */
    umem__unlock(h);
}

/* umem_free with no tool watching (the debugging layer's own). */
static UMEM_HOT_INLINE void umem__free(umem_t *h, void *p)
{
    if (!p)
        return;
    if (h->flags & UMEM_CACHED) {
        struct umem_page *pg = umem__page_of(h, p);
        if (pg) {
            umem__pool_free(h, pg, p);
            return;
        }
    }
    umem__free_locked(h, p, 0);
}

static inline size_t umem__usable_size(umem_t *h, const void *p)
{
    if (!p)
        return 0;
    if (h->flags & UMEM_CACHED) {
        struct umem_page *pg = umem__page_of(h, p);
        if (pg) {
            umem__slot_check(h, pg, p, "usable size");
            return pg->slot;
        }
    }
    int r = umem__lock(h, UMEM_LEND);
    if (r == 1)
        return umem__size(umem__lent_block(h, p, "usable size")) - UMEM_HEADER;
    if (r != 0)
        return 0;
    struct umem_where w;
    umem__locate(h, p, &w, "usable size");
    size_t size = w.big ? (size_t)(w.end - w.block) : umem__size(w.block);
    umem__unlock(h);
    return size - UMEM_HEADER;
}

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

/* A large block's mapping resized for n bytes by mremap (lock held): the
 * new payload, or NULL where Linux's mremap is missing or refuses. */
static inline char *umem__remap_large(umem_t *h, struct umem_where *w, size_t n)
{
#ifdef UMEM_MREMAP_MAYMOVE
    struct umem_span *s = w->big;
    size_t off = (size_t)(w->block - (char *)s) + UMEM_HEADER, have = umem__size(s);
    size_t reused = umem__word(w->block) & UMEM_REUSED;
    if (n > PTRDIFF_MAX / 2)
        return NULL;
    size_t bytes = umem__round_page(h, off + n);
    umem__span_remove(h, s);
    int saved = errno;
    void *moved = mremap(s, have, bytes, UMEM_MREMAP_MAYMOVE);
    errno = saved;
    if (moved == MAP_FAILED) {
        umem__span_add(h, s, have);
        return NULL;
    }
    s = (struct umem_span *)moved;
    s->first = (char *)s + off - UMEM_HEADER;
    s->end = (char *)s + bytes;
    umem__set_header(h, s->first, (size_t)(s->end - s->first) | UMEM_USED | UMEM_MAPPED | reused);
    umem__span_add(h, s, bytes);
    h->bytes_in_use -= have;
    umem__grew(h, bytes);
    return s->first + UMEM_HEADER;
#else
    (void)h, (void)w, (void)n;
    return NULL;
#endif
}

/* realloc of a block with a header (lock taken here).  errno is left as
 * it was unless it fails. */
static UMEM_NOINLINE void *umem__realloc_locked(umem_t *h, void *p, size_t n)
{
    size_t need = umem__need(n);
    int saved = errno, r = umem__lock(h, UMEM_COUNTED | UMEM_LEND);
    if (r != 0)
        return r == 1 ? umem__lent_realloc(h, p, n) : NULL;
    struct umem_where w;
    umem__locate(h, p, &w, "realloc");
    size_t old = (w.big ? (size_t)(w.end - w.block) : umem__size(w.block)) - UMEM_HEADER;
    char *b = NULL;
    if (need != 0 && umem__resize(h, &w, need) == 0)
        b = (char *)p - UMEM_HEADER;
    else if (need != 0 && w.big && n >= UMEM_LARGE && (b = umem__remap_large(h, &w, n)) != NULL)
        b -= UMEM_HEADER;
    if (!b && need != 0 && h->flags & UMEM_GROW && n >= UMEM_LARGE) {
        /* Moved to a large block of its own, mapped without the lock. */
        umem__unlock(h);
        size_t bytes;
        if ((b = umem__alloc_large(h, n, UMEM_ALIGN, &bytes)) != NULL) {
            memcpy(b + UMEM_HEADER, p, old < n ? old : n);
            umem__free_locked(h, p, 1);
            errno = saved;
            return b + UMEM_HEADER;
        }
        if ((r = umem__lock(h, UMEM_COUNTED | UMEM_LEND)) != 0)
            return r == 1 ? umem__lent_realloc(h, p, n) : NULL;
        umem__locate(h, p, &w, "realloc");
    } else if (b) {
        umem__maybe_purge(h);
        umem__unlock(h);
        errno = saved;
        return b + UMEM_HEADER;
    }
    /* Moved inside the heap: neither an allocation nor a free in the
     * counts, as the number of blocks does not change. */
    if (need != 0 && (b = umem__take(h, &need, 1)) != NULL)
        umem__grew(h, need);
    if (!b && need != 0 && n <= old) {
        umem__unlock(h);
        errno = saved;
        return p; /* a large block that found no room to move to a smaller one */
    }
    if (!b) {
        h->failed_allocs++;
        umem__unlock(h);
        errno = ENOMEM;
        return NULL; /* p is left as it was */
    }
    memcpy(b + UMEM_HEADER, p, old < n ? old : n);
    umem__give_back(h, &w);
    umem__maybe_purge(h);
    umem__unlock(h);
    errno = saved;
    return b + UMEM_HEADER;
}

/* realloc of a slot: it stays while the size fits and wastes less than
 * half, else it moves (umem_alloc, copy, umem_free), counted as a move. */
static UMEM_NOINLINE void *umem__pool_realloc(umem_t *h, struct umem_page *pg, void *p, size_t n)
{
    umem__slot_check(h, pg, p, "realloc");
    size_t slot = pg->slot;
    if (n <= slot && (n > slot / 2 || slot <= 32))
        return p;
    int saved = errno;
    void *q = umem__alloc(h, n);
    if (!q)
        return NULL;
    errno = saved;
    memcpy(q, p, n < slot ? n : slot);
    umem__free(h, p);
    struct umem_pool *pool = umem__pool(h);
    if (pool)
        umem__add(&pool->moves, 1);
    else
        atomic_fetch_add_explicit(&h->orphan_moves, 1, memory_order_relaxed);
    return q;
}

static inline void *umem__realloc(umem_t *h, void *p, size_t n)
{
    if (!p)
        return umem__alloc(h, n);
    if (n == 0) {
        umem__free(h, p);
        return NULL;
    }
    if (h->flags & UMEM_CACHED) {
        struct umem_page *pg = umem__page_of(h, p);
        if (pg)
            return umem__pool_realloc(h, pg, p, n);
    }
    return umem__realloc_locked(h, p, n);
}

/* A block of *need bytes whose payload is aligned to `align` (lock held),
 * carved from a free block with room for the alignment and a free block
 * before it: the lead and the tail go back as free blocks of their own.
 * NULL when nothing fits. */
static inline char *umem__take_aligned(umem_t *h, size_t align, size_t *need)
{
    if (align > PTRDIFF_MAX / 4)
        return NULL;
    size_t room = *need + align + UMEM_MIN_BLOCK;
    char *f = umem__take(h, &room, 1);
    if (!f)
        return NULL;
    uintptr_t at = ((uintptr_t)f + UMEM_HEADER + align - 1) & ~(uintptr_t)(align - 1);
    if (at - UMEM_HEADER != (uintptr_t)f && at - UMEM_HEADER - (uintptr_t)f < UMEM_MIN_BLOCK)
        at += align;
    char *b = (char *)at - UMEM_HEADER;
    size_t lead = (size_t)(b - f), tail = room - lead - *need;
    if (tail < UMEM_MIN_BLOCK) {
        *need += tail;
        tail = 0;
    }
    /* f's own neighbours are used or the rest of its free block: the
     * lead and the tail are freed as blocks of their own. */
    umem__set_header(h, b, *need | UMEM_USED);
    if (tail) {
        umem__set_header(h, b + *need, tail | UMEM_USED);
        umem__merge_free(h, b + *need, f);
    }
    if (lead) {
        umem__set_header(h, f, lead | UMEM_USED);
        umem__merge_free(h, f, f);
    }
    return b;
}

static inline void *umem__memalign(umem_t *h, size_t align, size_t n)
{
    if (align <= UMEM_ALIGN)
        return umem__alloc(h, n);
    if (n == 0)
        return NULL;
    if (h->flags & UMEM_CACHED && align <= UMEM_PAGE_HEAD && n <= UMEM_POOL_MAX) {
        void *p = umem__pool_aligned(h, align, n);
        if (p)
            return p;
    }
    size_t need = umem__need(n), bytes;
    if (h->flags & UMEM_GROW && need != 0 && n + align >= UMEM_LARGE) {
        char *b = umem__alloc_large(h, n, align, &bytes);
        if (b)
            return b + UMEM_HEADER;
    }
    int r = umem__lock(h, UMEM_COUNTED | UMEM_LEND);
    if (r != 0)
        return r == 1 ? umem__lent_alloc(h, n, align) : NULL;
    char *b = need != 0 ? umem__take_aligned(h, align, &need) : NULL;
    if (b)
        umem__count_alloc(h, need);
    else
        h->failed_allocs++;
    umem__maybe_purge(h);
    umem__unlock(h);
    if (!b) {
        errno = ENOMEM;
        return NULL;
    }
    return b + UMEM_HEADER;
}

/* ---- debugging: valgrind, AddressSanitizer and UMEM_DEBUG ----
 * A heap that memcheck watches (UMEM__VG) announces each block it hands
 * out and takes back; umem's own work runs with memcheck's reports off,
 * since it reads headers and free blocks that memcheck holds no-access.
 * A heap with UMEM__KEEP (UMEM_DEBUG, or an AddressSanitizer build) puts
 * a record before each payload and guard bytes after it up to the end of
 * umem's block, checks both when the block is freed, and holds freed
 * blocks back, filled with a pattern, until the quarantine overflows:
 * the pattern is checked then.  Under AddressSanitizer the guards and the
 * held blocks are poisoned as well. */

#ifndef UMEM_QUARANTINE_BLOCKS
#define UMEM_QUARANTINE_BLOCKS 1024u /* freed blocks held back from reuse, at most */
#endif
#ifndef UMEM_QUARANTINE_BYTES
#define UMEM_QUARANTINE_BYTES ((size_t)4 << 20) /* ... and their bytes, at most */
#endif
#define UMEM__LIVE       0x4c495645u /* handed out, on the live list */
#define UMEM__ALONE      0x414c4f4eu /* handed out while a fork held the lock: on no list */
#define UMEM__HELD       0x48454c44u /* freed, held back */
#define UMEM__LATE ((void *)(uintptr_t)0x4c415445u) /* frames[1] of a block on h->late */
#define UMEM__NEW_BYTE   0xaa /* a new block's payload */
#define UMEM__GUARD_BYTE 0xfd /* the guards */
#define UMEM__FREED_BYTE 0xdd /* a freed block held back */
#define UMEM__GUARD      16u  /* the right guard's least bytes */
#define UMEM__LEAKS_SHOWN 100u /* blocks listed one by one at umem_destroy */

#ifdef UMEM__ASAN
void *__asan_region_is_poisoned(void *beg, size_t size);
#endif

/* The seal covers every field but the frames: an underrun that reaches
 * the record, even its links, breaks it before a list is followed. */
static inline size_t umem__rec_seal(const umem_t *h, const struct umem_rec *r)
{
    return h->secret ^ (size_t)(uintptr_t)r ^ (size_t)(r->size * 0x9E3779B97F4A7C15ull) ^
           (r->room << 1) ^ ((size_t)r->shift * 65537u) ^ r->state ^
           ((size_t)(uintptr_t)r->next * 31u) ^ ((size_t)(uintptr_t)r->prev * 17u);
}

/* The offset of the first byte of p[0..n) other than c, or n.  It reads
 * guards and held blocks, which AddressSanitizer holds poisoned. */
#ifdef UMEM__ASAN
__attribute__((no_sanitize_address, noinline, unused)) static size_t umem__first_not(
#else
static inline size_t umem__first_not(
#endif
const unsigned char *p, size_t n, unsigned char c)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != c)
            return i;
    return n;
}

/* One line on stderr, "umem: " and the report, then abort(). */
#if defined(__GNUC__)
static UMEM_COLD void umem__report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
static UMEM_COLD void umem__report(const char *fmt, ...)
{
    char line[256] = "umem: ";
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line + 6, sizeof line - 7, fmt, ap);
    va_end(ap);
    size_t n = len < 0 ? 6 : 6 + ((size_t)len < sizeof line - 7 ? (size_t)len : sizeof line - 8);
    line[n++] = '\n';
    ssize_t ignored = write(2, line, n);
    (void)ignored;
    abort();
}

/* The calls that led to the allocation, innermost first (frames[0] is
 * the one that called umem's; zero where unknown).  backtrace() may
 * allocate on its first use: an allocation made inside it records none. */
static UMEM_HOT_INLINE void umem__trace(void **frames)
{
    memset(frames, 0, UMEM_DEBUG_FRAMES * sizeof *frames);
#ifdef UMEM__BACKTRACE
    if (umem__tls.tracing)
        return;
    void *all[UMEM_DEBUG_FRAMES + 1];
    umem__tls.tracing = 1;
    int got = backtrace(all, UMEM_DEBUG_FRAMES + 1);
    umem__tls.tracing = 0;
    for (int i = 1; i < got; i++) /* all[0] is in umem's own call */
        frames[i - 1] = all[i];
#endif
}

/* r's links changed: its seal follows (a sentinel's is never read). */
static inline void umem__rec_reseal(const umem_t *h, struct umem_rec *r)
{
    r->check = umem__rec_seal(h, r);
}

/* r at the end of a list, its state set (lock held). */
static inline void umem__rec_link(const umem_t *h, struct umem_rec *list, struct umem_rec *r)
{
    struct umem_rec *last = list->prev;
    r->prev = last;
    r->next = list;
    last->next = r;
    list->prev = r;
    umem__rec_reseal(h, r);
    umem__rec_reseal(h, last);
    umem__rec_reseal(h, list);
}

static inline void umem__rec_unlink(const umem_t *h, struct umem_rec *r)
{
    struct umem_rec *prev = r->prev, *next = r->next;
    prev->next = next;
    next->prev = prev;
    umem__rec_reseal(h, prev);
    umem__rec_reseal(h, next);
}

/* A live block, freed: filled with the pattern and held back (lock held). */
static inline void umem__keep_hold(umem_t *h, struct umem_rec *r)
{
    char *user = (char *)(r + 1);
    UMEM__UNPOISON(user, r->room);
    memset(user, UMEM__FREED_BYTE, r->room);
    UMEM__POISON(user, r->room);
    r->state = UMEM__HELD;
    umem__rec_link(h, &h->held, r);
    h->held_blocks++;
    h->held_bytes += r->room;
}

/* The blocks freed while a fork held the lock, off the live list and held
 * back (lock held). */
static UMEM_RARE void umem__keep_settle(umem_t *h)
{
    struct umem_rec *r = atomic_exchange_explicit(&h->late, NULL, memory_order_acquire);
    while (r) {
        struct umem_rec *next = (struct umem_rec *)r->frames[0];
        r->frames[0] = r->frames[1] = NULL;
        umem__rec_unlink(h, r);
        umem__keep_hold(h, r);
        r = next;
    }
}

/* The lists' lock: 0 when taken, 1 when a fork holds it (or a process
 * died holding a shared heap's): the caller does without the lists. */
static inline int umem__keep_lock(umem_t *h)
{
    if (umem__lock(h, UMEM_LEND | UMEM_QUIET) != 0)
        return 1;
    if (UMEM_UNLIKELY(atomic_load_explicit(&h->late, memory_order_relaxed) != NULL))
        umem__keep_settle(h);
    return 0;
}

/* Whether c lies in one of the heap's mappings (lock held). */
static inline int umem__owns(umem_t *h, const char *c)
{
    if (c >= h->first && c < atomic_load_explicit(&h->end, memory_order_relaxed))
        return 1;
    return umem__span_find(h, c) != NULL;
}

/* The oldest held blocks, taken off the quarantine while it is over its
 * limits (all of them for `all`), at most `max` (lock held). */
static inline unsigned umem__keep_evict(umem_t *h, struct umem_rec **out, unsigned max, int all)
{
    unsigned k = 0;
    while (k < max && h->held.next != &h->held &&
           (all || h->held_blocks > UMEM_QUARANTINE_BLOCKS ||
            h->held_bytes > UMEM_QUARANTINE_BYTES)) {
        struct umem_rec *r = h->held.next;
        umem__rec_unlink(h, r);
        h->held_blocks--;
        h->held_bytes -= r->room;
        out[k++] = r;
    }
    return k;
}

/* A held block's pattern, checked: a write after its free is reported. */
static inline void umem__keep_verify(const struct umem_rec *r)
{
    const unsigned char *user = (const unsigned char *)(r + 1);
    size_t bad = umem__first_not(user, r->room, UMEM__FREED_BYTE);
    if (bad < r->room)
        umem__report("block %p (%zu bytes) was written after its free, at byte %zu",
                     (const void *)user, r->size, bad);
}

/* A held block back to the heap for good, once its pattern is checked
 * (no lock: it is on no list). */
static inline void umem__keep_release(umem_t *h, struct umem_rec *r)
{
    char *user = (char *)(r + 1);
    umem__keep_verify(r);
    UMEM__UNPOISON(r->guard, sizeof r->guard + r->room);
    r->check = 0; /* a later free of it finds no record */
    umem__free(h, user - r->shift);
}

/* Every held block back to the heap: 1 if there was any. */
static inline int umem__keep_flush(umem_t *h)
{
    struct umem_rec *out[64];
    int any = 0;
    for (;;) {
        if (umem__keep_lock(h))
            return any;
        unsigned k = umem__keep_evict(h, out, 64, 1);
        umem__unlock(h);
        if (k == 0)
            return any;
        for (unsigned i = 0; i < k; i++)
            umem__keep_release(h, out[i]);
        any = 1;
    }
}

/* A block of n bytes aligned to `align` with its record and guards. */
static inline void *umem__keep_alloc(umem_t *h, size_t align, size_t n, void *const *frames)
{
    if (n == 0)
        return NULL;
    size_t head = sizeof(struct umem_rec), total = SIZE_MAX; /* SIZE_MAX fits nowhere */
    if (align > UMEM_ALIGN)
        head = align <= PTRDIFF_MAX / 4 ? (head + align - 1) & ~(align - 1) : SIZE_MAX / 2;
    if (n <= PTRDIFF_MAX / 4 && head <= UINT32_MAX)
        total = head + n + UMEM__GUARD;
    int saved = errno;
    char *q = umem__memalign(h, align, total);
    if (!q && total != SIZE_MAX && umem__keep_flush(h)) {
        /* Room held back by the quarantine: it goes back, and the heap is
         * asked again (failed_allocs counts the first attempt). */
        q = umem__memalign(h, align, total);
        if (q)
            errno = saved;
    }
    if (!q)
        return NULL;
    char *user = q + head;
    struct umem_rec *r = (struct umem_rec *)user - 1;
    r->size = n;
    r->room = umem__usable_size(h, q) - head;
    r->shift = (uint32_t)head;
    memcpy(r->frames, frames, sizeof r->frames);
    memset(r->guard, UMEM__GUARD_BYTE, sizeof r->guard);
    memset(user, UMEM__NEW_BYTE, n);
    memset(user + n, UMEM__GUARD_BYTE, r->room - n);
    int alone = umem__keep_lock(h);
    r->state = alone ? UMEM__ALONE : UMEM__LIVE;
    if (alone) {
        r->next = r->prev = r;
        umem__rec_reseal(h, r);
    } else {
        umem__rec_link(h, &h->live, r);
        umem__unlock(h);
    }
    UMEM__POISON(r->guard, sizeof r->guard);
    UMEM__POISON(user + n, r->room - n);
    return user;
}

/* The record of p, a block handed out, checked with its guards; the
 * lists' lock is held on return unless *alone (see umem__keep_lock).
 * Any misuse is reported, naming the call. */
static inline struct umem_rec *umem__keep_open(umem_t *h, const void *p, const char *call,
                                                int *alone)
{
    if ((uintptr_t)p % UMEM_ALIGN != 0)
        umem__report("%s of %p: misaligned, not a block from umem_alloc", call, p);
    *alone = umem__keep_lock(h);
    struct umem_rec *r = (struct umem_rec *)p - 1;
    if (!*alone && !umem__owns(h, (const char *)r))
        umem__report("%s of %p: outside the heap, not a block from umem_alloc", call, p);
    if (r->check != umem__rec_seal(h, r) ||
        (r->state != UMEM__LIVE && r->state != UMEM__ALONE && r->state != UMEM__HELD))
        umem__report("%s of %p: not a block from umem_alloc, freed long ago, or an underrun "
                     "overwrote its record",
                     call, p);
    if (r->state == UMEM__HELD || r->frames[1] == UMEM__LATE)
        umem__report("%s of %p (%zu bytes): freed already (double free)", call, p, r->size);
    size_t bad = umem__first_not(r->guard, sizeof r->guard, UMEM__GUARD_BYTE);
    if (bad < sizeof r->guard)
        umem__report("%s of %p (%zu bytes): written before its start (underrun), at byte -%zu",
                     call, p, r->size, sizeof r->guard - bad);
    const unsigned char *tail = (const unsigned char *)p + r->size;
    bad = umem__first_not(tail, r->room - r->size, UMEM__GUARD_BYTE);
    if (bad < r->room - r->size)
        umem__report("%s of %p (%zu bytes): written past its end (overrun), at byte %zu", call, p,
                     r->size, r->size + bad);
    return r;
}

/* A free with records: the block is filled with a pattern and held back;
 * what the quarantine lets go returns to the heap. */
static inline void umem__keep_free(umem_t *h, void *p)
{
    int alone;
    struct umem_rec *r = umem__keep_open(h, p, "free", &alone);
    if (alone && r->state == UMEM__LIVE) {
        /* On the live list, which needs the lock: left for its next holder. */
        struct umem_rec *head = atomic_load_explicit(&h->late, memory_order_relaxed);
        r->frames[1] = UMEM__LATE;
        do
            r->frames[0] = head;
        while (!atomic_compare_exchange_weak_explicit(&h->late, &head, r, memory_order_release,
                                                      memory_order_relaxed));
        return;
    }
    if (r->state == UMEM__LIVE)
        umem__rec_unlink(h, r);
    if (alone || r->state == UMEM__ALONE) {
        if (!alone)
            umem__unlock(h);
        UMEM__UNPOISON(r->guard, sizeof r->guard + r->room);
        r->check = 0;
        umem__free(h, (char *)p - r->shift);
        return;
    }
    umem__keep_hold(h, r);
    struct umem_rec *out[8];
    unsigned k = umem__keep_evict(h, out, 8, 0);
    umem__unlock(h);
    for (unsigned i = 0; i < k; i++)
        umem__keep_release(h, out[i]);
}

/* umem_check's part (lock held, or lent): every live block's record and
 * guards, every held block's pattern.  The broken rule, or NULL. */
static inline const char *umem__keep_check(umem_t *h, const void **at)
{
    for (int list = 0; list < 2; list++) {
        struct umem_rec *head = list ? &h->held : &h->live;
        unsigned state = list ? UMEM__HELD : UMEM__LIVE;
        for (struct umem_rec *r = head->next; r != head; r = r->next) {
            const unsigned char *user = (const unsigned char *)(r + 1);
            *at = user;
            if (r->check != umem__rec_seal(h, r) || r->state != state)
                return "a block's record was overwritten (an underrun?)";
            if (umem__first_not(r->guard, sizeof r->guard, UMEM__GUARD_BYTE) < sizeof r->guard)
                return "a block was written before its start (underrun)";
            if (list && umem__first_not(user, r->room, UMEM__FREED_BYTE) < r->room)
                return "a freed block was written after its free";
            if (!list && umem__first_not(user + r->size, r->room - r->size, UMEM__GUARD_BYTE) <
                             r->room - r->size)
                return "a block was written past its end (overrun)";
        }
    }
    return NULL;
}

/* Lists the blocks still allocated (no other thread may use the heap),
 * each with its size and the calls that allocated it, `what` naming
 * them ("leak"); returns how many there were. */
static inline uint64_t umem__keep_leaks(umem_t *h, const char *what)
{
    uint64_t blocks = 0, bytes = 0;
    char line[200];
    for (struct umem_rec *r = h->live.next; r != &h->live; r = r->next) {
        blocks++;
        bytes += r->size;
        if (blocks > UMEM__LEAKS_SHOWN)
            continue;
        int len = snprintf(line, sizeof line, "umem: %s: %zu bytes at %p, allocated from:\n", what,
                           r->size, (void *)(r + 1));
        ssize_t ignored = write(2, line, len > 0 ? (size_t)len : 0);
        (void)ignored;
        int frames = 0;
        while (frames < UMEM_DEBUG_FRAMES && r->frames[frames])
            frames++;
#ifdef UMEM__BACKTRACE
        backtrace_symbols_fd(r->frames, frames, 2);
#endif
    }
    if (blocks > 0) {
        int len = snprintf(line, sizeof line, "umem: %s: %llu blocks, %llu bytes in all\n", what,
                           (unsigned long long)blocks, (unsigned long long)bytes);
        ssize_t ignored = write(2, line, len > 0 ? (size_t)len : 0);
        (void)ignored;
    }
    return blocks;
}

/* At umem_destroy: the held blocks' pattern is checked (a write after
 * free is reported), and the blocks still allocated are listed. */
static inline void umem__keep_final(umem_t *h)
{
    umem__keep_settle(h);
    for (struct umem_rec *r = h->held.next; r != &h->held; r = r->next)
        umem__keep_verify(r);
    umem__keep_leaks(h, "leak");
}

/* At umem_destroy under AddressSanitizer: the marks on every byte of the
 * heap's mappings go (guards, held blocks, a program's pools), since the
 * sanitizer keeps them on memory unmapped and mapped again. */
static inline void umem__unpoison_all(umem_t *h)
{
    char *end = atomic_load_explicit(&h->end, memory_order_relaxed) + UMEM_HEADER;
    UMEM__UNPOISON(h, (size_t)(end - (char *)h));
    struct umem_node *stack[UMEM_PATH];
    unsigned depth = 0;
    if (h->spans)
        stack[depth++] = h->spans;
    while (depth > 0) {
        struct umem_node *x = stack[--depth];
        UMEM__UNPOISON(x, umem__size(x));
        if (x->left && depth < UMEM_PATH)
            stack[depth++] = x->left;
        if (x->right && depth < UMEM_PATH)
            stack[depth++] = x->right;
    }
}

/* The bytes the caller may use at p: what it asked for. */
static UMEM_NOINLINE size_t umem__debug_usable(umem_t *h, const void *p, const char *call)
{
    if (!p)
        return 0;
    size_t n;
    UMEM__VG_QUIET(h);
    if (h->flags & UMEM__KEEP) {
        int alone;
        n = umem__keep_open(h, p, call, &alone)->size;
        if (!alone)
            umem__unlock(h);
    } else {
        n = umem__usable_size(h, p);
#ifdef UMEM__VALGRIND
        /* What memcheck was told: it holds the rest no-access. */
        uintptr_t bad = VALGRIND_CHECK_MEM_IS_ADDRESSABLE(p, n);
        if (bad)
            n = (size_t)(bad - (uintptr_t)p);
#endif
    }
    UMEM__VG_LOUD(h);
    return n;
}

static UMEM_NOINLINE void *umem__debug_alloc(umem_t *h, size_t align, size_t n)
{
    void *frames[UMEM_DEBUG_FRAMES];
    if (h->flags & UMEM__KEEP)
        umem__trace(frames);
    UMEM__VG_QUIET(h);
    void *p;
    if (h->flags & UMEM__KEEP)
        p = umem__keep_alloc(h, align, n, frames);
    else
        p = umem__memalign(h, align, n);
    UMEM__VG_LOUD(h);
#ifdef UMEM__VALGRIND
    if (p && h->flags & UMEM__VG)
        VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, 0);
#endif
    return p;
}

static UMEM_NOINLINE void umem__debug_free(umem_t *h, void *p)
{
    if (!p)
        return;
#ifdef UMEM__VALGRIND
    if (h->flags & UMEM__VG)
        VALGRIND_FREELIKE_BLOCK(p, 0);
#endif
    UMEM__VG_QUIET(h);
    if (h->flags & UMEM__KEEP)
        umem__keep_free(h, p);
    else
        umem__free(h, p);
    UMEM__VG_LOUD(h);
}

/* A watched heap's realloc always moves the block, so that a stale
 * pointer to the old one is caught. */
static UMEM_NOINLINE void *umem__debug_realloc(umem_t *h, void *p, size_t n)
{
    if (!p)
        return umem__debug_alloc(h, UMEM_ALIGN, n);
    if (n == 0) {
        umem__debug_free(h, p);
        return NULL;
    }
    size_t old = umem__debug_usable(h, p, "realloc");
    int saved = errno;
    void *q = umem__debug_alloc(h, UMEM_ALIGN, n);
    if (!q)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    umem__debug_free(h, p);
    errno = saved;
    return q;
}

/* ---- the interface ---- */

static inline void *umem_alloc(umem_t *h, size_t n)
{
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        return umem__debug_alloc(h, UMEM_ALIGN, n);
    return umem__alloc(h, n);
}

static inline void umem_free(umem_t *h, void *p)
{
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        umem__debug_free(h, p);
    else
        umem__free(h, p);
}

static inline void *umem_realloc(umem_t *h, void *p, size_t n)
{
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        return umem__debug_realloc(h, p, n);
    return umem__realloc(h, p, n);
}

static inline void *umem_memalign(umem_t *h, size_t align, size_t n)
{
    if (align == 0 || (align & (align - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        return umem__debug_alloc(h, align, n);
    return umem__memalign(h, align, n);
}

static inline size_t umem_usable_size(umem_t *h, const void *p)
{
    if (UMEM_UNLIKELY(h->flags & UMEM__WATCHED))
        return umem__debug_usable(h, p, "usable size");
    return umem__usable_size(h, p);
}

/* ---- a program's own pools, carved from umem blocks ----
 * Where a tool watches the heap (umem_watched), a program that hands out
 * pieces of a umem block itself tells it so: the pool's bytes are
 * no-access until carved (umem_tell_pool, naming the pool by the address
 * of those bytes), each piece is announced when carved (umem_tell_alloc)
 * and when given back (umem_tell_free, with the bytes from the piece to
 * the pool's end as a bound), and umem_tell_pool_gone comes before the
 * pool's block is freed.  The program leaves UMEM_REDZONE bytes free
 * after each piece, so that an overrun lands in no other.  All are no-ops
 * on a heap no tool watches. */
#define UMEM_REDZONE 16u

static inline int umem_watched(const umem_t *h)
{
    return (h->flags & (UMEM__VG | UMEM__POISONS)) != 0;
}

static inline void umem_tell_pool(umem_t *h, void *pool, size_t bytes)
{
#ifdef UMEM__VALGRIND
    if (h->flags & UMEM__VG) {
        VALGRIND_CREATE_MEMPOOL(pool, 0, 0);
        (void)VALGRIND_MAKE_MEM_NOACCESS(pool, bytes);
    }
#endif
    if (h->flags & UMEM__POISONS)
        UMEM__POISON(pool, bytes);
    (void)pool, (void)bytes;
}

static inline void umem_tell_pool_gone(umem_t *h, void *pool, size_t bytes)
{
#ifdef UMEM__VALGRIND
    if (h->flags & UMEM__VG)
        VALGRIND_DESTROY_MEMPOOL(pool);
#endif
    if (h->flags & UMEM__POISONS)
        UMEM__UNPOISON(pool, bytes);
    (void)pool, (void)bytes;
}

static inline void umem_tell_alloc(umem_t *h, void *pool, void *p, size_t n)
{
#ifdef UMEM__VALGRIND
    if (h->flags & UMEM__VG)
        VALGRIND_MEMPOOL_ALLOC(pool, p, n);
#endif
    if (h->flags & UMEM__POISONS)
        UMEM__UNPOISON(p, n);
    (void)pool, (void)p, (void)n;
}

static inline void umem_tell_free(umem_t *h, void *pool, void *p, size_t room)
{
#ifdef UMEM__VALGRIND
    if (h->flags & UMEM__VG)
        VALGRIND_MEMPOOL_FREE(pool, p);
#endif
#ifdef UMEM__ASAN
    if (h->flags & UMEM__POISONS) {
        char *end = (char *)__asan_region_is_poisoned(p, room);
        if (end == (char *)p)
            umem__report("free of %p: not a block carved from its pool, or freed already "
                         "(double free)", p);
        if (end)
            UMEM__POISON(p, (size_t)(end - (char *)p));
    }
#endif
    (void)pool, (void)p, (void)room;
}

/* ---- umem_check and statistics ---- */

static inline int umem__fail(const char *what, const void *where)
{
    fprintf(stderr, "umem_check: %s (at %p)\n", what, where);
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
                (((struct umem_block *)s->first)->word & ~UMEM_REUSED) !=
                    ((size_t)(s->end - s->first) | UMEM_USED | UMEM_MAPPED) ||
                s->end != (char *)s + bytes)
                return "I6: a large block's header is wrong";
            (*large)++;
            w->used_bytes += bytes;
        }
    }
    return NULL;
}

/* I8: every page the unit map marks, through what was fixed when it was
 * carved (what its owner changes without the lock is I9's). */
static inline const char *umem__check_page(umem_t *h, const struct umem_page *pg)
{
    const char *b = umem__page_block(pg);
    size_t bytes = (size_t)pg->units << UMEM_UNIT_SHIFT;
    if (pg->magic != umem__page_magic(h, pg) || pg->cls >= UMEM_CLASSES ||
        pg->slot != umem__class_size(pg->cls) || pg->units != umem__page_units(pg->slot))
        return "I8: a unit the map marks is not a page's";
    if (!umem__header_ok(h, b) || !(umem__word(b) & UMEM_USED) ||
        umem__size(b) < bytes || umem__word(b) & UMEM_MAPPED)
        return "I8: a page's block is not a used block of its size";
    size_t head = umem__page_head(pg->slot, pg->units);
    if (pg->start != (const char *)pg + head ||
        pg->capacity != umem__page_capacity(pg, pg->slot, pg->units, head) ||
        pg->span != (size_t)pg->capacity * pg->slot || pg->limit != pg->start + pg->span ||
        pg->recip != ((uint64_t)1 << 40) / pg->slot + 1u)
        return "I8: a page's slots are laid out wrong";
    return NULL;
}

static inline const char *umem__check_map(umem_t *h, const struct umem_units *m, uint64_t *pages,
                                          uint64_t *bytes, const void **at)
{
    size_t count = umem__units_used(h, m);
    for (size_t u = 0; u < count;) {
        unsigned k = atomic_load_explicit(&m->map[u], memory_order_relaxed);
        if (k == 0) {
            u++;
            continue;
        }
        const struct umem_page *pg = umem__page_at(m->base + (u << UMEM_UNIT_SHIFT));
        *at = pg;
        if (k != 1)
            return "I8: the unit map marks a unit past a page's first without it";
        if ((uintptr_t)umem__page_block(pg) < m->lo)
            return "I8: a unit the map marks lies outside its region";
        const char *broken = umem__check_page(h, pg);
        if (broken)
            return broken;
        for (unsigned j = 1; j < pg->units; j++)
            if (u + j >= count ||
                atomic_load_explicit(&m->map[u + j], memory_order_relaxed) != j + 1u)
                return "I8: the unit map does not mark all of a page's units";
        (*pages)++;
        *bytes += umem__size(umem__page_block(pg));
        u += pg->units;
    }
    return NULL;
}

/* I8 over every unit map, against the pages counted. */
static inline const char *umem__check_units(umem_t *h, const void **at)
{
    uint64_t pages = 0, bytes = 0;
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        const char *broken = umem__check_map(h, &h->umap[i], &pages, &bytes, at);
        if (broken)
            return broken;
    }
    *at = h;
    if (pages != h->pages || bytes != h->page_bytes)
        return "I8: the pages the unit map marks differ from the pages counted";
    return NULL;
}

/* I9 for one page its owner (the caller) or nobody may change: its free
 * and remote lists hold slots handed out before, tagged, and with the
 * slots never handed out and those in use they make up its capacity. */
static inline const char *umem__check_slots(umem_t *h, const struct umem_page *pg)
{
    if (pg->bump < pg->start || pg->bump > pg->limit ||
        (size_t)(pg->bump - pg->start) % pg->slot != 0 || umem__used(pg) > pg->capacity)
        return "I9: a page's bump pointer or count of blocks in use is wrong";
    /* Remote frees count as in use until their owner collects them. */
    uint64_t n[2] = {(uint64_t)(pg->limit - pg->bump) / pg->slot + umem__used(pg), 0};
    uint64_t most[2] = {pg->capacity, umem__used(pg)};
    void **lists[2] = {pg->free,
                       (void **)(atomic_load_explicit(&pg->remote, memory_order_acquire) &
                                 ~UMEM_WATCH)};
    for (int i = 0; i < 2; i++)
        for (void **p = lists[i]; p; p = (void **)p[0]) {
            size_t rel = (size_t)((char *)p - pg->start);
            if ((char *)p < pg->start || (char *)p >= pg->bump || rel % pg->slot != 0)
                return "I9: a page's free list holds something other than its slots";
            if ((size_t)(uintptr_t)p[1] != umem__tag(h, p))
                return "I9: a free slot is not tagged (written after its free?)";
            if (++n[i] > most[i])
                return "I9: a page's free lists run past its slots (a cycle?)";
            /* In use to the owner until it collects a remote free. */
            size_t k = rel / pg->slot;
            if (!!(umem__bits(pg)[k / 8] & (1u << (k % 8))) != (i == 1))
                return "I9: a page's map of slots in use disagrees with its free lists";
        }
    if (n[0] != pg->capacity)
        return "I9: a page's free, untouched and used slots do not add up";
    uint64_t set = 0;
    for (size_t k = 0; k < pg->capacity; k++)
        set += (umem__bits(pg)[k / 8] >> (k % 8)) & 1u;
    if (set != umem__used(pg))
        return "I9: a page's map of slots in use disagrees with its count";
    return NULL;
}

/* I9 for one list of pages of class cls: its links, and each page's
 * owner, list and class, then its slots. */
static inline const char *umem__check_list(umem_t *h, struct umem_page *head,
                                           const struct umem_pool *owner, unsigned cls,
                                           unsigned list, const void **at)
{
    const struct umem_page *prev = NULL;
    uint64_t n = 0;
    for (struct umem_page *pg = head; pg; prev = pg, pg = pg->next) {
        *at = pg;
        if (umem__page_of(h, (char *)pg + UMEM_PAGE_HEAD) != pg || ++n > h->pages)
            return "I9: a page list holds something other than a page (or a cycle)";
        if (pg->prev != prev || pg->list != list || pg->cls != cls ||
            atomic_load_explicit(&pg->owner, memory_order_relaxed) != owner)
            return "I9: a page's links, list, class or owner disagree with its list";
        const char *broken = umem__check_slots(h, pg);
        if (broken)
            return broken;
    }
    return NULL;
}

/* I9: the pages of threads that ended, and the calling thread's own. */
static inline const char *umem__check_pools(umem_t *h, const void **at)
{
    if (!(h->flags & UMEM_CACHED))
        return NULL;
    const char *broken = umem__check_units(h, at);
    struct umem_pool *own = umem__tls.heap == h && umem__tls.secret == h->secret ? umem__tls.pool : NULL;
    uint64_t abandoned = 0;
    for (unsigned cls = 0; cls < UMEM_CLASSES && !broken; cls++) {
        broken = umem__check_list(h, h->abandoned[cls], NULL, cls, UMEM_LIST_ABANDONED, at);
        for (struct umem_page *pg = h->abandoned[cls]; pg && !broken; pg = pg->next)
            abandoned++;
        if (own && !broken)
            broken = umem__check_list(h, own->avail[cls], own, cls, UMEM_LIST_AVAIL, at);
        if (own && !broken)
            broken = umem__check_list(h, own->full[cls], own, cls, UMEM_LIST_FULL, at);
    }
    if (!broken && abandoned != h->abandoned_pages) {
        *at = h;
        broken = "I9: the abandoned pages listed differ from those counted";
    }
    return broken;
}

static inline int umem__check_all(umem_t *h);

static inline int umem_check(umem_t *h)
{
    if (!h || h->magic != UMEM_MAGIC) {
        fprintf(stderr, "umem_check: not a heap (at %p)\n", (void *)h);
        return -1;
    }
    /* A heap whose lock a fork holds is still: it is checked as it is.
     * The lock's holder may settle blocks freed meanwhile: memcheck is
     * told nothing of umem's own reads from here. */
    UMEM__VG_QUIET(h);
    int r = umem__lock(h, UMEM_LEND);
    if (r < 0) {
        UMEM__VG_LOUD(h);
        fprintf(stderr, "umem_check: %s\n",
                errno == EOWNERDEAD ? "a process died holding the heap's lock"
                                    : strerror(errno));
        return -1;
    }
    int broken = umem__check_all(h);
    if (r == 0)
        umem__unlock(h);
    UMEM__VG_LOUD(h);
    return broken;
}

/* umem_check's walk (lock held, or lent to a fork): 0, or -1 after
 * printing the first broken invariant. */
static inline int umem__check_all(umem_t *h)
{
    struct umem_tally free_tree = {0}, span_tree = {0};
    umem__check_tree(h, h->root, &free_tree, 0, 1);
    if (free_tree.broken)
        return umem__fail(free_tree.broken, free_tree.at);
    umem__check_tree(h, h->spans, &span_tree, 0, 0);
    if (span_tree.broken)
        return umem__fail(span_tree.broken, span_tree.at);

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
        broken = umem__check_pools(h, &at);
    if (broken)
        return umem__fail(broken, at);
    if (w.large_blocks != free_tree.nodes || w.large_bytes != free_tree.bytes)
        return umem__fail("I4: the free tree and the large free blocks differ", h->root);
    if (large != h->large_blocks)
        return umem__fail("I6: large blocks counted and found differ", h);
    if (h->allocs + h->pages_made - h->frees - h->pages_freed != w.used_blocks + large)
        return umem__fail("I7: allocs - frees differs from the used blocks", h);
    if (h->bytes_in_use != w.used_bytes)
        return umem__fail("I7: bytes_in_use differs from the used blocks", h);
    if (h->peak_bytes_in_use < h->bytes_in_use)
        return umem__fail("I7: peak_bytes_in_use below bytes_in_use", h);
    if (h->flags & UMEM__KEEP && (broken = umem__keep_check(h, &at)) != NULL)
        return umem__fail(broken, at);
    return 0;
}

/* The slots the pages count in use and their bytes (lock held: no page
 * is carved or given back meanwhile), remote frees not collected included. */
static inline void umem__pages_used(umem_t *h, uint64_t *slots, uint64_t *bytes)
{
    unsigned n = atomic_load_explicit(&h->umaps, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        const struct umem_units *m = &h->umap[i];
        size_t count = umem__units_used(h, m);
        for (size_t u = 0; u < count; u++) {
            if (atomic_load_explicit(&m->map[u], memory_order_relaxed) != 1)
                continue;
            const struct umem_page *pg = umem__page_at(m->base + (u << UMEM_UNIT_SHIFT));
            *slots += umem__used(pg);
            *bytes += (uint64_t)umem__used(pg) * pg->slot;
        }
    }
}

static inline void umem_get_stats(umem_t *h, umem_stats_t *out)
{
    memset(out, 0, sizeof *out);
    UMEM__VG_QUIET(h);
    int locked = umem__lock(h, UMEM_LEND) == 0; /* lent to a fork: read as it is */
    uint64_t allocs = h->gone_allocs, moves = h->gone_moves, remote = h->gone_remote;
    uint64_t remote_bytes = h->gone_remote_bytes, collected = h->gone_collected;
    uint64_t collected_bytes = h->gone_collected_bytes, slots = 0, slot_bytes = 0;
    for (struct umem_pool *pool = locked ? h->pools : NULL; pool; pool = pool->next) {
        allocs += umem__get(&pool->allocs);
        moves += umem__get(&pool->moves);
        remote += umem__get(&pool->remote_frees);
        remote_bytes += umem__get(&pool->remote_bytes);
        collected += umem__get(&pool->collected);
        collected_bytes += umem__get(&pool->collected_bytes);
    }
    remote += umem__get(&h->orphan_frees);
    remote_bytes += umem__get(&h->orphan_bytes);
    moves += umem__get(&h->orphan_moves);
    if (locked)
        umem__pages_used(h, &slots, &slot_bytes);
    /* Remote frees not collected yet are free, though their pages still
     * count them. */
    uint64_t pending = remote - collected, pending_bytes = remote_bytes - collected_bytes;
    slots = slots > pending ? slots - pending : 0; /* counters read a moment apart */
    slot_bytes = slot_bytes > pending_bytes ? slot_bytes - pending_bytes : 0;
    out->lock_count = h->lock_count;
    out->lock_contended = h->lock_contended;
    out->allocs = h->allocs + allocs - moves;
    uint64_t pool_frees = allocs > slots ? allocs - slots : 0;
    out->frees = h->frees + pool_frees - moves;
    out->failed_allocs = h->failed_allocs + atomic_load_explicit(&h->lent_failed, memory_order_relaxed);
    out->bytes_in_use = h->bytes_in_use - h->page_bytes + slot_bytes;
    out->peak_bytes_in_use = h->peak_bytes_in_use;
    out->heap_bytes = h->heap_bytes;
    out->owner_died = h->owner_died;
    out->cache_hits = allocs;
    out->cache_frees = pool_frees;
    out->cache_refills = h->pages_made;
    out->cache_flushes = h->pages_freed;
    out->cached_bytes = h->page_bytes - slot_bytes;
    out->mapped_bytes = h->mapped_bytes;
    out->large_blocks = h->large_blocks;
    out->released_bytes = h->released_bytes;
    out->remote_frees = remote;
    out->pool_pages = h->pages;
    out->abandoned_pages = h->abandoned_pages;
    out->purges = h->purges;
    out->map_reuses = h->map_reuses;
    out->lent_calls = h->lent_calls;
    out->held_blocks = h->held_blocks;
    if (locked)
        umem__unlock(h);
    UMEM__VG_LOUD(h);
}

#endif /* UMEM_H */
