/*
 * umem/layout.h - the settings, the block layout and the types of umem
 * (a part of umem.h).
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
 *            [header | slot slot ... slot | rest];
 *            a free slot starts with its list's link and a tag, the
 *            heap's secret ^ its address, that marks it free.
 *   end mark: a header of size 0 marked used, so the last block never
 *            merges past the region.
 *   Other regions and large blocks start with a span, a node of a second
 *   AVL tree of the heap's mappings by address.  umem_alloc returns
 *   header + 16, so payloads are 16-byte aligned.
 *
 * The settings (umem(3), SETTINGS) that shape the layout have their
 * defaults here, beside the constants they shape; the lock's are in
 * umem/lock.h, the quarantine's in umem/debug.h.  The counters' helpers
 * sit with the control block: umem__grew is the one place the peak of
 * bytes in use is followed.
 */
#ifndef UMEM_H
#error "umem/layout.h is a part of umem.h: include umem.h instead"
#endif

/* Flags umem_create adds to a heap's own (never passed to it). */
#define UMEM__VG      (1u << 16) /* memcheck watches: blocks are announced to it */
#define UMEM__KEEP    (1u << 17) /* blocks carry a record and guards; frees wait (quarantine) */
#define UMEM__POISONS (1u << 18) /* AddressSanitizer: guards and freed blocks are poisoned */
#define UMEM__GUARDS  (1u << 19) /* UMEM_GUARD: blocks on pages of their own, sampled */
#define UMEM__WATCHED (UMEM__VG | UMEM__KEEP | UMEM__GUARDS)

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
#ifndef UMEM_POOL_AFTER
#define UMEM_POOL_AFTER 16u /* UMEM_CACHED: a thread's requests the lock serves before its pool */
#endif
#ifndef UMEM_PURGE_KEEP
#define UMEM_PURGE_KEEP ((size_t)32 << 20) /* UMEM_GROW: free bytes an emptied heap keeps resident */
#endif
#ifndef UMEM_PURGE_DELAY_MS
#define UMEM_PURGE_DELAY_MS 1000 /* UMEM_GROW: free pages go back after this long unused */
#endif
#ifndef UMEM_MAP_CACHE
#define UMEM_MAP_CACHE 8u /* UMEM_GROW: freed large mappings kept for reuse */
#endif
#ifndef UMEM_ONE_HEAP
#define UMEM_ONE_HEAP 0 /* 1: the program makes one heap and never destroys it */
#endif
#define UMEM_UNIT_SHIFT 16u /* UMEM_CACHED: pages are whole 64 KiB units, aligned */
#define UMEM_UNIT       ((size_t)1 << UMEM_UNIT_SHIFT)
#ifndef UMEM_POOL_SHIFT
#define UMEM_POOL_SHIFT 12 /* UMEM_CACHED: pools serve requests up to 2^12 bytes (10 to 16) */
#endif
_Static_assert(UMEM_POOL_SHIFT >= 10 && UMEM_POOL_SHIFT <= 16, "UMEM_POOL_SHIFT is 10 to 16");
#define UMEM_POOL_MAX ((size_t)1 << UMEM_POOL_SHIFT) /* the largest request a pool serves */
/* 16, 32, ... 128, then four per doubling to UMEM_POOL_MAX (28 to 4 KiB) */
#define UMEM_CLASSES (8u + (UMEM_POOL_SHIFT - 7u) * 4u)
/* Requests of 1 to UMEM_SERVE_MAX bytes find their page in one load, by
 * (n + 15) / 16: a pool's serve[] (entry 0, for n == 0, serves none). */
#define UMEM_SERVE_MAX ((size_t)1024)
#define UMEM_SERVE     (UMEM_SERVE_MAX / 16u + 1u)
/* UMEM_CACHED: a thread keeps the blocks with headers of more than
 * UMEM_POOL_MAX and at most UMEM_MID_MAX bytes that it frees, eight
 * classes per doubling, for its next requests of their class: at most
 * UMEM_MID_DEPTH of a class and UMEM_MID_BYTES in all. */
#ifndef UMEM_MID_SHIFT
#define UMEM_MID_SHIFT 16
#endif
_Static_assert(UMEM_MID_SHIFT >= UMEM_POOL_SHIFT && UMEM_MID_SHIFT <= 20, "UMEM_MID_SHIFT is UMEM_POOL_SHIFT to 20");
#define UMEM_MID_MAX ((size_t)1 << UMEM_MID_SHIFT)
#define UMEM_MID_CLASSES ((UMEM_MID_SHIFT - UMEM_POOL_SHIFT) * 8u)
_Static_assert(UMEM_MID_CLASSES <= 64, "a pool's map of classes of kept blocks is 64 bits");
#ifndef UMEM_MID_DEMAND
#define UMEM_MID_DEMAND 64u /* a thread keeps at most this many blocks after its last request */
#endif
#ifndef UMEM_MID_REACH
#define UMEM_MID_REACH 3u /* a request takes a kept block of its class or the next two */
#endif
#ifndef UMEM_MID_DEPTH
#define UMEM_MID_DEPTH 16u
#endif
_Static_assert(UMEM_MID_DEPTH >= 1 && UMEM_MID_DEPTH <= 255, "UMEM_MID_DEPTH is 1 to 255");
#ifndef UMEM_MID_BYTES
#define UMEM_MID_BYTES ((size_t)1 << 20)
#endif
#define UMEM_PAGE_HEAD  128u /* a page's own header, before its first slot */
#define UMEM_COLOURS    16u  /* a page's header lies 0 to 15 x 128 bytes into its unit */
#define UMEM_PAGE_SLOTS 7u   /* a page holds at least this many slots */
#define UMEM_EXTEND_BYTES 4096u /* slots a page's free list takes from its fresh end at a time */
#define UMEM_WATCH      ((uintptr_t)1) /* in a page's remote list: its owner waits for a free */
/* A page's remote word: UMEM_WATCH; in bits 1 to 15 the index + 1 of the
 * slot last freed by another thread (0: none), whose first word links to
 * the one freed before; from bit 16 up, how many the list holds. */
#define UMEM_REMOTE_HEAD  ((uintptr_t)0xFFFE)
#define UMEM_REMOTE_COUNT 16u
_Static_assert(UMEM_UNIT / 16u < (UMEM_REMOTE_HEAD >> 1), "a page's slot indexes fit the remote word");
#define UMEM_UNIT_MAPS  17u /* UMEM_CACHED: regions that may hold pages, the first included */
#ifndef UMEM_MAP_GUARD
#define UMEM_MAP_GUARD ((size_t)2 << 20) /* UMEM_CACHED: no-access bytes each side of a unit map */
#endif

/* A block header.  `word` is read without the lock by a thread freeing
 * a large block while the lock holder may flip UMEM_PREV_FREE in it, so
 * it is atomic (relaxed: a plain load or store) and the check leaves that
 * flag out.  A thread that keeps a block it frees (umem/pools.h, MID
 * BLOCKS) reads the next block's header without the lock while the lock
 * holder may rewrite it, so `check` is atomic too; a pair read half
 * before and half after such a write fails the check, and the free then
 * takes the lock. */
struct umem_block {
    _Atomic size_t word; /* size | flags */
    _Atomic size_t check;
};

/* A small free block, on the list of its exact size. */
struct umem_free {
    _Atomic size_t word;
    _Atomic size_t check;
    struct umem_free *next, *prev;
};

/* A large free block, a node of the free tree; also a span's node. */
struct umem_node {
    _Atomic size_t word;
    _Atomic size_t check;
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
    char *start;                     /* the first slot */
    uint64_t div;                    /* UINT64_MAX / slot + 1: an offset r below 2^32 is a
                                        slot's start when r * div, mod 2^64, is below div */
    struct umem_pool *_Atomic owner; /* UMEM_NO_OWNER: abandoned by a thread that ended */
    size_t handed;                   /* owner: bytes from start to the first slot never
                                        handed out (the bump) */
    _Atomic uint32_t used;           /* owner (statistics read it): slots out, remote frees
                                        not yet collected; | UMEM_SERVES while it is its
                                        class's first page with room, so that the free
                                        that brings the word to 0 empties a page that
                                        does not serve */
    uint64_t full_bit;               /* owner: on the full list, its class's bit, else 0 */
    uint8_t list;                    /* owner: which list holds it (UMEM_LIST_...) */
    uint8_t cls, units;              /* size class; length in units */
    /* The second: written by the frees of other threads; the rest is read
     * on slow paths only. */
    _Alignas(64) _Atomic uintptr_t remote; /* slots freed by other threads: UMEM_REMOTE_... */
    size_t magic;                          /* umem__page_magic while it is a page */
    struct umem_page *next;                /* in its list */
    struct umem_page *prev;                /* in its list (NULL: the first, which serves) */
    char *limit;                           /* the end of the last slot */
    uint64_t recip;                        /* 2^40 / slot + 1: an offset's index, no division */
    uint32_t slot;                         /* the slots' size */
    uint32_t capacity;
    uint32_t span; /* capacity * slot */
};

enum { UMEM_LIST_AVAIL, UMEM_LIST_FULL, UMEM_LIST_ABANDONED };
#define UMEM_SERVES ((uint32_t)1 << 31) /* in `used`: the page serves its class */
/* An abandoned page's owner: not NULL, the pool of a thread that has
 * none, so that the owner's free compares once, not twice (nor any other
 * value a thread's pool may hold: UMEM_POOL_GONE is 1, UMEM_POOL_LATER 3). */
#define UMEM_NO_OWNER ((struct umem_pool *)(uintptr_t)2)
_Static_assert(sizeof(struct umem_page) <= UMEM_PAGE_HEAD, "a page header fits before its map");
_Static_assert(offsetof(struct umem_page, units) < 64, "what the owner's calls read is one line");

/* A thread's pool for one heap: for each size class, the pages with room
 * (the first one serves) and the full ones, watched for remote frees.
 * Mapped once, never unmapped before umem_destroy: a thread that frees
 * into a page may still write its owner's `hint` after the owner ended
 * (a pool whose thread ended waits on the heap's spare list for another). */
struct umem_pool {
    /* What a small malloc reads: the page that serves each request size
     * of up to UMEM_SERVE_MAX, by (n + 15) / 16: the first page of its
     * class's list with room, or umem__no_page (no free slot, so the
     * request takes the slow way) when the list is empty; the heap's
     * tag_key, for the popped slot's tag; the slots handed out (an
     * owner-only counter, as those below). */
    struct umem_page *serve[UMEM_SERVE];
    size_t tag_key;
    _Atomic uint64_t allocs;
    struct umem_page *avail[UMEM_CLASSES];
    struct umem_page *full[UMEM_CLASSES];
    umem_t *heap;
    struct umem_pool *next, *prev; /* the heap's pools (or its spares), under its lock */
    unsigned sweeps;               /* slow paths taken, to sweep the full lists now and then */
    uint64_t full_freed;           /* bit c: the owner freed into a full page of class c */
    uint64_t classes;              /* bit c: the pool took a page of class c (since it was
                                      made or last given back whole) */
    /* Counters written by this pool's thread only: a load and a store, no
     * read-modify-write.  A free by the owner counts nothing: frees are
     * allocations less the slots the pages hold (umem_get_stats). */
    _Atomic uint64_t moves;                 /* reallocs that moved */
    _Atomic uint64_t remote_frees, remote_bytes; /* frees into other threads' pages */
    _Atomic uint64_t collected, collected_bytes; /* remote frees taken back by this pool */
    /* Blocks with headers this thread freed and keeps (umem/pools.h, MID
     * BLOCKS): each class's, linked through their payloads, and how many;
     * their bytes, headers included; the allocations they served and the
     * frees that kept them (owner-only counters, as above). */
    void *mid[UMEM_MID_CLASSES + 1];
    unsigned char mid_count[UMEM_MID_CLASSES + 1];
    uint64_t mid_map;    /* bit c: mid[c] is not empty */
    uint32_t mid_demand; /* blocks it may still keep before its next request of one */
    _Atomic uint64_t mid_bytes, mid_allocs, mid_frees;
    /* hint[c]: another thread freed into a watched page of class c. */
    _Alignas(64) _Atomic unsigned char hint[UMEM_CLASSES];
};

/* A region's unit map (UMEM_CACHED): for each unit from `base`, the
 * header of the page that covers it, NULL for a unit no page covers.  A
 * free finds its slot's page with one load, colour and all. */
struct umem_units {
    uintptr_t lo, hi; /* the region's mapping */
    uintptr_t base;   /* lo rounded down to a unit */
    size_t span;      /* hi - base */
    size_t count;     /* units from base to hi */
    struct umem_page *_Atomic *map;
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
    size_t tag_key; /* secret ^ 0xCAC4E: a free slot's tag is tag_key ^ its address */
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
    _Atomic int forking; /* a private heap's: a fork() holds the lock (umem/lock.h, FORK) */
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
    struct umem_free list_sink;    /* written, never read: see umem__file */
    struct umem_node *root;        /* large free blocks, by address */
    struct umem_node *spans;       /* other mappings, by address */
    struct umem_pool *pools;       /* UMEM_CACHED: the pools of running threads */
    struct umem_pool *spare_pools; /* ... and of threads that ended, for reuse */
    struct umem_page *abandoned[UMEM_CLASSES]; /* pages of threads that ended */
    uint64_t abandoned_classes;                /* bit c: abandoned[c] may hold a page */
    _Atomic uint64_t abandoned_freed; /* bit c: a free reached one since the last reclaim */
    uint64_t lock_count, lock_contended, allocs, frees, failed_allocs;
    uint64_t bytes_in_use, peak_bytes_in_use, heap_bytes, mapped_bytes;
    uint64_t large_blocks, released_bytes, purges;
    uint64_t pages, page_bytes, abandoned_pages; /* pool pages out now (heap view) */
    uint64_t pages_made, pages_freed;            /* carved, given back */
    /* The counters of pools whose threads ended. */
    uint64_t gone_allocs, gone_moves, gone_remote, gone_remote_bytes, gone_collected,
        gone_collected_bytes, gone_mid_allocs, gone_mid_frees;
    uint64_t mid_flushed; /* blocks threads kept that went back to the heap */
    /* Remote frees and moves by a thread with no pool (it is ending). */
    _Atomic uint64_t orphan_frees, orphan_bytes, orphan_moves;
    /* Giving memory back on a delay (UMEM_GROW). */
    uint64_t epoch;         /* advances each half delay, on calls that find it due */
    uint64_t tick_at;       /* CLOCK_MONOTONIC ns at which the epoch advances */
    uint64_t unpurged;      /* bytes freed into large free blocks since the last purge */
    uint64_t purge_min;     /* bytes freed that make an emptied heap purge */
    unsigned purge_calls;   /* calls, to read the clock on one in 16 */
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
    /* A watched heap still alive at exit is checked (umem/debug.h): the
     * next on the list, the title of its blocks still allocated, and
     * the exit status when there are any (-1: the program's own). */
    umem_t *exit_next;
    const char *exit_what;
    int exit_code;
    struct umem_guard *guard; /* UMEM_GUARD: the arena of guarded blocks */
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
    atomic_store_explicit(&blk->check, umem__check_of(h, b, word), memory_order_relaxed);
}

static inline int umem__header_ok(const umem_t *h, const void *b)
{
    struct umem_block *blk = (struct umem_block *)b;
    return atomic_load_explicit(&blk->check, memory_order_relaxed) ==
           umem__check_of(h, b, umem__word(b));
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

/* The list of free blocks of `size` bytes (at most UMEM_SMALL_MAX): one
 * per exact size, 48, 64, ... bytes. */
static inline unsigned umem__bin_of(size_t size)
{
    return (unsigned)((size - UMEM_MIN_BLOCK) >> 4);
}

/* The size of the blocks on list i. */
static inline size_t umem__bin_size(unsigned i)
{
    return UMEM_MIN_BLOCK + 16u * i;
}

/* The block size for n bytes, or 0 when n cannot fit in any address space. */
static inline size_t umem__need(size_t n)
{
    if (n > PTRDIFF_MAX / 2)
        return 0;
    size_t need = (n + UMEM_HEADER + UMEM_ALIGN - 1) & ~(size_t)(UMEM_ALIGN - 1);
    return need < UMEM_MIN_BLOCK ? UMEM_MIN_BLOCK : need;
}

/* ---- the process-wide state that needs the types above (see
 * umem/platform.h) ----
 * A page with no free slot, and a pool whose every serve[] entry is that
 * page: what a thread with no pool of a plain heap reads. */
UMEM_PROCESS_WIDE struct umem_page umem__no_page;
#define UMEM__NO_PAGE4 &umem__no_page, &umem__no_page, &umem__no_page, &umem__no_page
#define UMEM__NO_PAGE16 UMEM__NO_PAGE4, UMEM__NO_PAGE4, UMEM__NO_PAGE4, UMEM__NO_PAGE4
_Static_assert(UMEM_SERVE == 65, "umem__no_pool's initializer lists UMEM_SERVE pages");
UMEM_PROCESS_WIDE struct umem_pool umem__no_pool = {
    .serve = {UMEM__NO_PAGE16, UMEM__NO_PAGE16, UMEM__NO_PAGE16, UMEM__NO_PAGE16, &umem__no_page}};

/* The calling thread's pool for the heap it used last: one thread-local
 * variable, so that a shared library reaches it through one address.  Its
 * address also names the thread, as the one in fork(). */
struct umem_tls {
    umem_t *heap;
    size_t secret; /* the heap's: a new heap at a destroyed one's address differs */
    struct umem_pool *pool;
    /* The pool whose serve[] libumem's malloc reads without a look at the
     * heap: the thread's pool on a heap with pools that no tool watches,
     * else umem__no_pool, whose pages have no free slot. */
    struct umem_pool *serving;
    int exiting; /* a pool of this thread's went back: it is ending, make no other */
    uint32_t unpooled; /* requests the lock served before the thread's first pool */
    /* The private heap whose lock this thread is taking or holds: set
     * before the attempt and cleared after the unlock, so that a signal
     * handler on this thread never waits for it (umem/lock.h, FORK). */
    umem_t *locking;
    int tracing; /* in backtrace(), which may allocate (UMEM__KEEP) */
    /* UMEM_GUARD's sampling (umem/guard.h): allocations on guarded heaps
     * left before the next guarded block (0: not yet drawn), and the
     * state of the draws. */
    uint32_t guard_left, guard_draw;
};
UMEM_PROCESS_WIDE UMEM_TLS struct umem_tls umem__tls = {.serving = &umem__no_pool};

static inline const void *umem__me(void)
{
    return &umem__tls;
}
