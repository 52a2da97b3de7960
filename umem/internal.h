/*
 * umem/internal.h - the calls a part makes into a later part (a part of
 * umem.h).
 *
 * The parts are read in umem.h's order, and each uses only what umem.h
 * and the parts before it define, but for the calls declared here: each
 * names the part that defines it and why an earlier part needs it.
 * tests/test_layout.sh checks that no other call reaches forward.
 */
#ifndef UMEM_H
#error "umem/internal.h is a part of umem.h: include umem.h instead"
#endif

struct umem_guard;

/* umem/regions.h: growth and purges.  umem/heap.h grows the heap when
 * no free block fits; the purge (itself in regions.h, before these) lets
 * cached large mappings go and takes back ended threads' emptied pages. */
static inline int umem__grow(umem_t *h, size_t need);
static inline void umem__unmap_cached(umem_t *h, unsigned i);

/* umem/locate.h: the lock's next holder (umem/lock.h) settles what calls
 * made while a fork held the lock left for it. */
static UMEM_RARE void umem__settle(umem_t *h);

/* umem/pools.h: ended threads' pages that other threads' frees emptied
 * go back at a purge epoch too (umem/regions.h). */
static inline void umem__reclaim_abandoned(umem_t *h);

/* umem/calls.h: a pool that cannot place a request (umem/pools.h) gives
 * it a block with a header under the lock, and a block with a header
 * that a thread does not keep (umem/pools.h, MID BLOCKS) goes back
 * under it. */
static UMEM_NOINLINE void *umem__alloc_locked(umem_t *h, size_t n);
static UMEM_NOINLINE void umem__free_locked(umem_t *h, void *p, int moved);

/* umem/debug.h: umem_destroy's end of a watched heap (umem/calls.h):
 * the leaks listed, the quarantine checked, the memory made addressable
 * again for AddressSanitizer. */
static inline uint64_t umem__keep_leaks(umem_t *h, const char *what);
static inline void umem__keep_final(umem_t *h);
static inline void umem__unpoison_all(umem_t *h);

/* umem/guard.h: a fork child's end of the sampling slots that threads of
 * the parent were taking or freeing (umem/lock.h's fork handler). */
static inline void umem__guard_fork_child(void);

/* umem/guard.h: UMEM_GUARD's part of the watched path (umem/debug.h):
 * whether this allocation is to be guarded, the guarded allocation
 * (*done: it was made), whether p is in the heap's guarded arena, and a
 * guarded block freed, or its size (1; 0 for another block). */
static UMEM_HOT_INLINE int umem__guard_pick(const struct umem_guard *g);
static UMEM_NOINLINE void *umem__guard_try(umem_t *h, size_t align, size_t n, int *done);
static inline int umem__guard_has(const umem_t *h, const void *p);
static UMEM_NOINLINE void umem__guard_take(umem_t *h, void *p);
static inline int umem__guard_size(umem_t *h, const void *p, const char *call, size_t *n);
