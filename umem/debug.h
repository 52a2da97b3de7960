/*
 * umem/debug.h - the watched path: valgrind's memcheck, AddressSanitizer
 * and UMEM_DEBUG, and a program's own pools (a part of umem.h).
 *
 * A heap that memcheck watches (UMEM__VG) announces each block it hands
 * out and takes back, and keeps the rest of the heap no-access; umem's
 * own work runs with memcheck's reports off, since it reads headers and
 * free blocks that memcheck holds no-access.  A heap with UMEM__KEEP
 * (UMEM_DEBUG, or an AddressSanitizer build) puts a record before each
 * payload (struct umem_rec) and guard bytes after it up to the end of
 * umem's block, checks both when the block is freed, and holds freed
 * blocks back, filled with a pattern, until the quarantine overflows:
 * the pattern is checked then.  Under AddressSanitizer the guards and
 * the held blocks are poisoned as well.  With none of these a call pays
 * one test of the heap's flags (umem/api.h).  What a user sees, and the
 * messages: umem(3), DEBUGGING.
 */
#ifndef UMEM_H
#error "umem/debug.h is a part of umem.h: include umem.h instead"
#endif

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

/* The calls that led here, innermost first, into frames[0..want) (want
 * at most UMEM__FRAMES_MOST): the `skip` innermost (at most 2) left out,
 * then umem's own; zero where unknown.  backtrace() may allocate on its
 * first use: an allocation made inside it records none.  Always inlined,
 * so that `skip` counts the same frames wherever it is called. */
#define UMEM__FRAMES_MOST 8
static UMEM_HOT_INLINE void umem__frames(void **frames, int want, int skip)
{
    memset(frames, 0, (size_t)want * sizeof *frames);
#ifdef UMEM__BACKTRACE
    if (umem__tls.tracing)
        return;
    void *all[UMEM__FRAMES_MOST + 2];
    umem__tls.tracing = 1;
    int got = backtrace(all, want + skip), k = 0;
    umem__tls.tracing = 0;
    for (int i = skip; i < got && k < want; i++)
        if (k > 0 || !umem__own_code(all[i]))
            frames[k++] = all[i];
#else
    (void)skip;
#endif
}

/* The calls that led to the allocation (frames[0] is the one that
 * called umem's: all[0] is in umem's own call). */
static UMEM_HOT_INLINE void umem__trace(void **frames)
{
    umem__frames(frames, UMEM_DEBUG_FRAMES, 1);
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

/* The guards of a live block's record r, as umem_check and a free test
 * them: how far before the payload the first written byte of the left
 * guard lies (1 to 8), or 0 when it is whole. */
static inline size_t umem__rec_under(const struct umem_rec *r)
{
    size_t bad = umem__first_not(r->guard, sizeof r->guard, UMEM__GUARD_BYTE);
    return bad < sizeof r->guard ? sizeof r->guard - bad : 0;
}

/* ... and the offset from the payload of the first written byte past its
 * end (at least the size asked for, so never 0), or 0 when none is. */
static inline size_t umem__rec_over(const struct umem_rec *r)
{
    const unsigned char *tail = (const unsigned char *)(r + 1) + r->size;
    size_t bad = umem__first_not(tail, r->room - r->size, UMEM__GUARD_BYTE);
    return bad < r->room - r->size ? r->size + bad : 0;
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
    size_t at = umem__rec_under(r);
    if (at)
        umem__report("%s of %p (%zu bytes): written before its start (underrun), at byte -%zu",
                     call, p, r->size, at);
    if ((at = umem__rec_over(r)) != 0)
        umem__report("%s of %p (%zu bytes): written past its end (overrun), at byte %zu", call, p,
                     r->size, at);
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
            if (umem__rec_under(r))
                return "a block was written before its start (underrun)";
            if (list && umem__first_not(user, r->room, UMEM__FREED_BYTE) < r->room)
                return "a freed block was written after its free";
            if (!list && umem__rec_over(r))
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
    size_t n;
    if (!p || (h->flags & UMEM__GUARDS && umem__guard_size(h, p, call, &n)))
        return p ? n : 0;
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

/* `align` 0: umem_alloc's, 16 bytes (a guarded block: as its size needs). */
static UMEM_NOINLINE void *umem__debug_alloc(umem_t *h, size_t align, size_t n)
{
    if (h->flags & UMEM__GUARDS && umem__guard_pick(h->guard)) {
        int guarded;
        void *p = umem__guard_try(h, align, n, &guarded);
        if (guarded)
            return p;
    }
    align = align ? align : UMEM_ALIGN;
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
    if (h->flags & UMEM__GUARDS && umem__guard_has(h, p)) {
        umem__guard_take(h, p);
        UMEM__NO_TAIL();
        return;
    }
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
 * pointer to the old one is caught (but UMEM_GUARD's alone). */
static UMEM_NOINLINE void *umem__debug_realloc(umem_t *h, void *p, size_t n)
{
    if (!p)
        return umem__debug_alloc(h, 0, n);
    if (n == 0) {
        umem__debug_free(h, p);
        return NULL;
    }
    size_t old = umem__debug_usable(h, p, "realloc");
    int saved = errno;
    void *q = umem__debug_alloc(h, 0, n);
    if (!q)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    umem__debug_free(h, p);
    errno = saved;
    return q;
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
