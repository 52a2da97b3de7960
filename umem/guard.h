/*
 * umem/guard.h - guarded blocks: UMEM_GUARD (a part of umem.h).
 *
 * A heap made with UMEM_GUARD reserves an arena of address space, no-access,
 * and puts every block, or one in N drawn at random (the UMEM_GUARD
 * setting), on pages of its own there, beside a guard page no one may
 * touch:
 *
 *     after (default):  [slack | block | slack < 16][guard]
 *     below:            [guard][block | slack ........]
 *
 * The arena's first 2 MiB (UMEM_MAP_GUARD, the lead) are no block's: an
 * underflow of the first blocks by up to that much faults there, not in
 * whatever lies below the arena, and is blamed on the first block.
 * After, the block ends at most 15 bytes before the guard (it stays
 * 16-byte aligned), so an overflow faults on the first byte past the
 * page; below (UMEM_GUARD_BELOW=1), an underflow faults on the byte
 * before the block.  The slack is filled and checked when the block is
 * freed.  A freed block's pages become no-access, so that a read or write
 * after free faults.  Guarding every block (a debugging mode), the arena
 * hands out each address once and a freed block's memory goes back to
 * the system: its pages stay no-access as long as the heap lives.
 * Sampling (one in N), a block of a page or less takes one of a fixed
 * ring of slots after the lead (UMEM_GUARD_SLOTS, 512 unless set),
 * two pages each, as GWP-ASan does: a freed slot keeps its memory and
 * stays no-access until the ring comes round to it again, and when the
 * next four slots of the ring all hold live blocks the block drawn is
 * not guarded.  That bounds what sampling holds (a page per slot) and
 * saves a mapping, a page fault and the memory's return per block: each
 * costs two mprotect calls and two stack captures.  A request of 0 bytes
 * gets a pointer to a guard page.
 *
 * Each guarded block has a record (its size, the calls that allocated
 * and freed it) in a table beside the arena, and each page of the arena
 * names its block's record; all of it is taken with atomics, no lock,
 * so that a fork, a signal or a thread changes nothing.  A SIGSEGV
 * handler, installed with the first guarded heap, looks the faulting
 * address up in the arenas: a fault there is reported (one line: use
 * after free, overflow or underflow, the block, its size, the offset;
 * then the calls that allocated and freed it), the default action is
 * put back and the handler returns, so the fault ends the process with
 * its core; any other fault goes to the handler that was there before.
 * A heap without UMEM_GUARD pays nothing: its calls never come here.
 */
#ifndef UMEM_H
#error "umem/guard.h is a part of umem.h: include umem.h instead"
#endif

#ifndef UMEM_GUARD_ARENA /* address space for guarded blocks, per heap */
#define UMEM_GUARD_ARENA (sizeof(void *) >= 8 ? (size_t)16 << 30 : (size_t)64 << 20)
#endif
#ifndef UMEM_GUARD_BLOCKS /* guarded blocks a heap makes, at most */
#define UMEM_GUARD_BLOCKS ((size_t)1 << 20)
#endif
#define UMEM__GUARD_FRAMES UMEM__FRAMES_MOST
#ifndef UMEM_GUARD_SLOTS /* sampling: slots for blocks of a page or less, unless set */
#define UMEM_GUARD_SLOTS 512u
#endif
#define UMEM__GUARD_LIVE  1u
#define UMEM__GUARD_FREED 2u
#define UMEM__GUARD_BUSY  3u /* a slot being taken or freed */

struct umem_grec {
    char *user;  /* the pointer handed out */
    size_t size; /* what was asked for */
    char *start; /* the block's pages, guard included */
    size_t bytes;
    _Atomic unsigned state; /* 0 (a slot never used), UMEM__GUARD_LIVE, _FREED, _BUSY */
    void *alloc[UMEM__GUARD_FRAMES], *freed[UMEM__GUARD_FRAMES];
};

struct umem_guard {
    char *arena;
    size_t arena_bytes, page;
    _Atomic size_t next;      /* bytes of the arena handed out */
    _Atomic size_t recs_used; /* records handed out (the slots' first) */
    _Atomic size_t slot_next; /* sampling: the slot tried next, modulo `slots` */
    unsigned slots;           /* sampling: slots (records 0 to slots - 1), or 0 */
    _Atomic uint32_t *owner;  /* per page of the arena: 1 + its block's record, or 0 */
    struct umem_grec *recs;
    size_t owner_bytes, recs_bytes;
    unsigned every;     /* one block in `every` is guarded */
    int below;          /* the guard page before the block */
    size_t least_align; /* UMEM_GUARD_ALIGN */
    size_t lead;        /* no-access bytes before the first slot or block */
};

/* The calls that led here (umem__frames, umem/debug.h), from
 * umem__guard_try or _take, never inlined, whose callers are the
 * watched path's (umem/debug.h) or umem__sampled_..., never inlined
 * either, and never calling them last (UMEM__NO_TAIL): a call made last
 * may become a jump, and its frame would be missing. */
static UMEM_HOT_INLINE void umem__guard_trace(void **frames)
{
    umem__frames(frames, UMEM__GUARD_FRAMES, 2);
}

/* One line on stderr. */
static void umem__guard_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void umem__guard_say(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    size_t n = len < 0                         ? 0
               : (size_t)len < sizeof line - 1 ? (size_t)len
                                               : sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(2, line, n);
    (void)ignored;
}

/* A stack, one frame a line as "module(symbol+offset) [address]", which
 * umem-symbolize resolves to function, file and line. */
static void umem__frames_print(const char *title, void *const *frames, int max)
{
    if (!frames[0])
        return;
    umem__guard_say("  %s:", title);
    for (int i = 0; i < max && frames[i]; i++) {
        char at[16];
        int len = snprintf(at, sizeof at, "    #%d ", i);
        ssize_t ignored = write(2, at, len > 0 ? (size_t)len : 0);
        (void)ignored;
#ifdef UMEM__BACKTRACE
        backtrace_symbols_fd((void *const *)&frames[i], 1, 2);
#else
        umem__guard_say("%p", frames[i]);
#endif
    }
}

/* The stacks of a report: where the misuse happened (`now`, or none),
 * then where the block was allocated and freed. */
static void umem__guard_stacks(const struct umem_grec *r, void *const *now)
{
    if (now)
        umem__frames_print("at", now, UMEM__GUARD_FRAMES);
    umem__frames_print("allocated from", r->alloc, UMEM__GUARD_FRAMES);
    if (atomic_load_explicit(&r->state, memory_order_relaxed) == UMEM__GUARD_FREED)
        umem__frames_print("freed from", r->freed, UMEM__GUARD_FRAMES);
}

/* A misuse found at a free: its line, the stacks, abort(). */
static UMEM_COLD void umem__guard_die(const struct umem_grec *r, void *const *now,
                                      const char *what, long long at)
{
    umem__guard_say("umem: free of %p (%zu bytes): %s%lld", (void *)r->user, r->size,
                    what, at);
    umem__guard_stacks(r, now);
    abort();
}

/* The offset of the first byte of p[0..n) other than the guard byte,
 * or n: a word at a time, since the slack may be most of a page. */
static inline size_t umem__guard_first_not(const unsigned char *p, size_t n)
{
    const uint64_t all = 0x0101010101010101ull * UMEM__GUARD_BYTE;
    size_t i = 0;
    for (uint64_t w; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        if (w != all)
            break;
    }
    return i + umem__first_not(p + i, n - i, UMEM__GUARD_BYTE);
}

/* The record of the block whose pages hold c, in g's arena, or NULL;
 * `near`: a page that is no block's belongs to the nearest block below
 * it (an overflow past the last block). */
static inline struct umem_grec *umem__guard_rec(const struct umem_guard *g, const void *c,
                                                int near)
{
    size_t off = (size_t)((uintptr_t)c - (uintptr_t)g->arena);
    if (off >= g->arena_bytes)
        return NULL;
    size_t page = off / g->page;
    for (unsigned back = 0; back <= (near ? 64u : 0u) && back <= page; back++) {
        uint32_t k = atomic_load_explicit(&g->owner[page - back], memory_order_acquire);
        if (k)
            return &g->recs[k - 1];
    }
    return NULL;
}

/* The countdown of the thread ran out, or was never drawn: whether this
 * allocation is guarded, and the next interval, at random from 1 to
 * 2 * every - 1 (its mean: every). */
static UMEM_NOINLINE int umem__guard_redraw(const struct umem_guard *g, uint32_t left)
{
    uint32_t x = umem__tls.guard_draw;
    if (x == 0)
        x = (uint32_t)(uintptr_t)&umem__tls ^ (uint32_t)time(NULL) ^ 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    umem__tls.guard_draw = x;
    umem__tls.guard_left = 1 + x % (2 * g->every - 1);
    return left == 1;
}

/* Whether the thread's next allocation on a sampled heap is certainly
 * not drawn, counted down if so; if not, umem__guard_pick decides. */
static UMEM_HOT_INLINE int umem__guard_skip(void)
{
    uint32_t left = umem__tls.guard_left;
    if (UMEM_LIKELY(left > 1)) {
        umem__tls.guard_left = left - 1;
        return 1;
    }
    return 0;
}

/* Whether this allocation is guarded: every one, or one in `every`,
 * counted down per thread. */
static UMEM_HOT_INLINE int umem__guard_pick(const struct umem_guard *g)
{
    if (g->every <= 1)
        return 1;
    if (umem__guard_skip())
        return 0;
    return umem__guard_redraw(g, umem__tls.guard_left);
}

/* The alignment of a guarded block of n bytes, right against the guard
 * page: as an object of n bytes needs (the largest power of two dividing
 * n, up to 16), but at least UMEM_GUARD_ALIGN (8 unless set: a header
 * with pointers before an array of odd size), or n's own below that. */
static inline size_t umem__guard_align(const struct umem_guard *g, size_t n)
{
    size_t natural = n & (0 - n), least = g->least_align;
    while (least > 1 && least > n)
        least >>= 1;
    natural = natural == 0 || natural > UMEM_ALIGN ? UMEM_ALIGN : natural;
    return natural > least ? natural : least;
}

/* Sampling: a slot not in use, taken (its record BUSY), trying the next
 * few of the ring; or -1. */
static inline long umem__guard_claim(struct umem_guard *g)
{
    for (unsigned tries = 0; tries < 4; tries++) {
        size_t k =
            atomic_fetch_add_explicit(&g->slot_next, 1, memory_order_relaxed) % g->slots;
        _Atomic unsigned *state = &g->recs[k].state;
        unsigned was = atomic_load_explicit(state, memory_order_acquire);
        if (was != UMEM__GUARD_LIVE && was != UMEM__GUARD_BUSY &&
            atomic_compare_exchange_strong(state, &was, UMEM__GUARD_BUSY))
            return (long)k;
    }
    return -1;
}

/* Whether a block of n bytes aligned to `align` takes a slot. */
static inline int umem__guard_slotted(const struct umem_guard *g, size_t align, size_t n)
{
    return g->slots && n <= g->page && align <= g->page;
}

/* n bytes aligned to `align` (0: see above) on pages of their own, in
 * the slot taken (umem__guard_claim) or else past the slots; or NULL
 * (too large or too aligned, the arena or its records used up). */
static inline void *umem__guard_alloc(struct umem_guard *g, size_t align, size_t n,
                                      void *const *frames, long slot)
{
    size_t page = g->page, pages = n / page + (n % page != 0);
    if (align > page || n > g->arena_bytes / 4)
        return NULL;
    size_t bytes = (pages + 1) * page, at, i;
    if (slot >= 0) {
        i = (size_t)slot;
        at = g->lead + i * 2 * page;
    } else {
        at = atomic_fetch_add_explicit(&g->next, bytes, memory_order_relaxed);
        if (at > g->arena_bytes - bytes)
            return NULL;
        i = atomic_fetch_add_explicit(&g->recs_used, 1, memory_order_relaxed);
        if (i >= g->recs_bytes / sizeof(struct umem_grec))
            return NULL;
    }
    char *start = g->arena + at, *body = g->below ? start + page : start;
    char *guard = g->below ? start : start + pages * page;
    if (pages && mprotect(body, pages * page, PROT_READ | PROT_WRITE) != 0) {
        if (i < g->slots) /* given back as it was found, but freed */
            atomic_store_explicit(&g->recs[i].state, UMEM__GUARD_FREED,
                                  memory_order_release);
        return NULL;
    }
    align = align ? align : umem__guard_align(g, n);
    char *user = n == 0     ? guard
                 : g->below ? body
                            : (char *)((uintptr_t)(guard - n) & ~(align - 1));
    if (n) {
        memset(body, UMEM__GUARD_BYTE, (size_t)(user - body));
        memset(user + n, UMEM__GUARD_BYTE, (size_t)(body + pages * page - user - n));
    }
    struct umem_grec *r = &g->recs[i];
    r->user = user;
    r->size = n;
    r->start = start;
    r->bytes = bytes;
    memcpy(r->alloc, frames, sizeof r->alloc);
    atomic_store_explicit(&r->state, UMEM__GUARD_LIVE, memory_order_release);
    for (size_t k = 0; k <= pages; k++)
        atomic_store_explicit(&g->owner[at / page + k], (uint32_t)(i + 1),
                              memory_order_release);
    return user;
}

/* p, whose record is r, freed already (or being freed): reported. */
static UMEM_COLD void umem__guard_twice(const struct umem_grec *r, const void *p,
                                        const char *call, void *const *now)
{
    umem__guard_say("umem: %s of %p (%zu bytes): freed already (double free)", call, p,
                    r->size);
    umem__guard_stacks(r, now);
    abort();
}

/* The record of p, a guarded block handed out and not freed; a pointer
 * into one, or one freed, is reported naming the call. */
static inline struct umem_grec *umem__guard_open(struct umem_guard *g, const void *p,
                                                 const char *call, void *const *now)
{
    struct umem_grec *r = umem__guard_rec(g, p, 0);
    if (!r || r->user != p)
        umem__report("%s of %p: not a block from umem_alloc (inside a guarded block)",
                     call, p);
    if (atomic_load_explicit(&r->state, memory_order_acquire) != UMEM__GUARD_LIVE)
        umem__guard_twice(r, p, call, now);
    return r;
}

/* A guarded block freed: its slack checked, its pages no-access; a
 * slot's memory kept for the slot's next block, any other's given back
 * for good. */
static inline void umem__guard_free(struct umem_guard *g, void *p, void *const *frames)
{
    struct umem_grec *r = umem__guard_open(g, p, "free", frames);
    size_t page = g->page, room = r->bytes - page;
    char *body = g->below ? r->start + page : r->start;
    if (r->size) {
        size_t before = (size_t)(r->user - body), after = room - before - r->size;
        size_t bad = umem__guard_first_not((unsigned char *)body, before);
        if (bad < before)
            umem__guard_die(r, frames, "written before its start (underrun), at byte -",
                            (long long)(before - bad));
        bad = umem__guard_first_not((unsigned char *)r->user + r->size, after);
        if (bad < after)
            umem__guard_die(r, frames, "written past its end (overrun), at byte ",
                            (long long)(r->size + bad));
    }
    memcpy(r->freed, frames, sizeof r->freed);
    unsigned live = UMEM__GUARD_LIVE;
    if ((size_t)(r - g->recs) < g->slots) {
        /* BUSY until no-access: a slot taken again meanwhile would be
         * closed under its new block.  Not LIVE: another thread freed it
         * meanwhile (looking again, the slot might hold a new block). */
        if (!atomic_compare_exchange_strong(&r->state, &live, UMEM__GUARD_BUSY))
            umem__guard_twice(r, p, "free", frames);
        if (room)
            mprotect(body, room, PROT_NONE);
        atomic_store_explicit(&r->state, UMEM__GUARD_FREED, memory_order_release);
        return;
    }
    if (!atomic_compare_exchange_strong(&r->state, &live, UMEM__GUARD_FREED))
        umem__guard_twice(r, p, "free", frames); /* freed meanwhile by another thread */
    /* Fresh no-access pages in place of the block's, in one call: its
     * memory goes back, and any access faults. */
    if (room && mmap(body, room, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                     -1, 0) == MAP_FAILED) {
        mprotect(body, room, PROT_NONE);
        madvise(body, room, MADV_DONTNEED);
    }
}

/* ---- the fault handler ---- */

/* How far c lies from r's block (0: inside it). */
static inline size_t umem__guard_gap(const struct umem_grec *r, const char *c)
{
    return c < r->user              ? (size_t)(r->user - c)
           : c >= r->user + r->size ? (size_t)(c - r->user - r->size) + 1
                                    : 0;
}

/* The block a fault at c concerns: the one whose pages hold c, or, for a
 * guard page between two blocks, the nearer of the two (an overflow of
 * the one, or an underflow of the other). */
static struct umem_grec *umem__guard_blame(const struct umem_guard *g, const char *c)
{
    size_t page = g->page;
    struct umem_grec *r = umem__guard_rec(g, c, 1), *other = NULL;
    /* The arena's lead, no block's: an underflow of the first block
     * after it (the guard page after each block, the default). */
    if (!r && !g->below && (uintptr_t)c - (uintptr_t)g->arena < g->lead)
        r = umem__guard_rec(g, g->arena + g->lead, 0);
    if (!r)
        return NULL;
    if (!g->below && c >= r->start + r->bytes - page)
        other = umem__guard_rec(g, r->start + r->bytes, 0);
    else if (g->below && c < r->start + page && r->start > g->arena)
        other = umem__guard_rec(g, r->start - 1, 0);
    if (other && other != r && umem__guard_gap(other, c) < umem__guard_gap(r, c))
        r = other;
    return r;
}

/* A fault at `addr` in a guarded heap's arena, reported: 1; else 0. */
static int umem__guard_fault(const void *addr)
{
    for (unsigned i = 0; i < UMEM__GUARD_HEAPS; i++) {
        struct umem_guard *g =
            atomic_load_explicit(&umem__guards[i], memory_order_acquire);
        struct umem_grec *r = g ? umem__guard_blame(g, addr) : NULL;
        if (!r)
            continue;
        long long at = (long long)((intptr_t)addr - (intptr_t)r->user);
        unsigned state = atomic_load_explicit(&r->state, memory_order_acquire);
        const char *what = state == UMEM__GUARD_FREED || state == UMEM__GUARD_BUSY
                               ? "use after free"
                           : at < 0                ? "underflow"
                           : (size_t)at >= r->size ? "overflow"
                                                   : NULL;
        if (!what)
            return 0;
        umem__guard_say("umem: %s: block %p (%zu bytes), at offset %lld", what,
                        (void *)r->user, r->size, at);
        void *now[UMEM__GUARD_FRAMES];
        umem__frames(now, UMEM__GUARD_FRAMES, 2); /* this handler, the kernel's return to it */
        /* The faulting instruction itself, shown as a return address is
         * (a resolver steps back a byte from each): one byte on. */
        now[0] = now[0] ? (char *)now[0] + 1 : NULL;
        umem__guard_stacks(r, now);
        return 1;
    }
    return 0;
}

static void umem__guard_handler(int sig, siginfo_t *info, void *context)
{
    int saved = errno;
    if (umem__guard_fault(info->si_addr)) {
        /* The default action, raised now: it comes as the handler returns,
         * before the instruction runs again (by then a slot may have been
         * taken and opened by another thread), and ends the process with
         * its core. */
        signal(sig, SIG_DFL);
        raise(sig);
    } else if (umem__guard_before.sa_flags & SA_SIGINFO) {
        umem__guard_before.sa_sigaction(sig, info, context);
    } else if (umem__guard_before.sa_handler == SIG_DFL ||
               umem__guard_before.sa_handler == SIG_IGN) {
        signal(sig, SIG_DFL);
    } else {
        umem__guard_before.sa_handler(sig);
    }
    errno = saved;
}

/* In a fork child, every slot a thread was taking or freeing when the
 * process forked (BUSY, for good: the thread is not in the child) made
 * no-access and freed. */
static inline void umem__guard_fork_child(void)
{
    for (unsigned i = 0; i < UMEM__GUARD_HEAPS; i++) {
        struct umem_guard *g = atomic_load_explicit(&umem__guards[i], memory_order_acquire);
        for (size_t k = 0; g && k < g->slots; k++) {
            if (atomic_load_explicit(&g->recs[k].state, memory_order_relaxed) !=
                UMEM__GUARD_BUSY)
                continue;
            mprotect(g->arena + g->lead + k * 2 * g->page, 2 * g->page, PROT_NONE);
            atomic_store_explicit(&g->recs[k].state, UMEM__GUARD_FREED, memory_order_relaxed);
        }
    }
}

/* g joins the arenas the handler searches (installed with the first);
 * -1 when there is no room or no handler. */
static inline int umem__guard_join(struct umem_guard *g)
{
    int r = -1;
    pthread_mutex_lock(&umem__guard_lock);
    if (!umem__guard_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = umem__guard_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        umem__guard_installed = sigaction(SIGSEGV, &sa, &umem__guard_before) == 0;
    }
    for (unsigned i = 0; umem__guard_installed && r < 0 && i < UMEM__GUARD_HEAPS; i++) {
        struct umem_guard *none = NULL;
        if (atomic_compare_exchange_strong(&umem__guards[i], &none, g))
            r = 0;
    }
    pthread_mutex_unlock(&umem__guard_lock);
    return r;
}

/* ---- a guarded heap's arena: made, and gone ---- */

static inline void umem__guard_unmap(struct umem_guard *g)
{
    for (unsigned i = 0; i < UMEM__GUARD_HEAPS; i++) {
        struct umem_guard *was = g;
        atomic_compare_exchange_strong(&umem__guards[i], &was, NULL);
    }
    if (g->arena)
        munmap(g->arena, g->arena_bytes);
    if (g->owner)
        munmap((void *)g->owner, g->owner_bytes);
    if (g->recs)
        munmap(g->recs, g->recs_bytes);
    munmap(g, sizeof *g);
}

/* The setting of a positive number named `name`, or `otherwise`. */
static inline unsigned umem__guard_setting(const char *name, unsigned otherwise)
{
    const char *s = getenv(name);
    char *end;
    unsigned long v = s && *s ? strtoul(s, &end, 10) : 0;
    return v > 0 && v <= UINT32_MAX / 2 && *end == '\0' ? (unsigned)v : otherwise;
}

/* UMEM_GUARD: h's arena, its records and its pages' owners, all
 * address space until used; 0, or ENOMEM. */
static inline int umem__guard_init(umem_t *h)
{
    struct umem_guard *g =
        (struct umem_guard *)umem__map(sizeof *g, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    if (!g)
        return ENOMEM;
    g->page = h->page;
    g->arena_bytes = UMEM_GUARD_ARENA / h->page * h->page;
    g->owner_bytes = g->arena_bytes / h->page * sizeof(uint32_t);
    g->recs_bytes = UMEM_GUARD_BLOCKS * sizeof(struct umem_grec);
    g->every = umem__guard_setting("UMEM_GUARD", 1);
    g->below = umem__guard_setting("UMEM_GUARD_BELOW", 0) != 0;
    g->least_align = umem__guard_setting("UMEM_GUARD_ALIGN", 8);
    if (g->least_align > UMEM_ALIGN || (g->least_align & (g->least_align - 1)))
        g->least_align = 8;
    g->arena = (char *)umem__map(g->arena_bytes, PROT_NONE, MAP_PRIVATE | MAP_NORESERVE);
    /* The lead guards the first block's start (a slot's or not), and is
     * as long as a unit map's gap: an underflow by up to 2 MiB of the
     * first blocks faults there, not in whatever lies below the arena. */
    g->lead = (UMEM_MAP_GUARD + h->page - 1) / h->page * h->page;
    g->lead = g->lead > h->page ? g->lead : h->page;
    if (g->every > 1) {
        size_t room = g->arena_bytes / 4 > g->lead ? g->arena_bytes / 4 - g->lead : 0;
        size_t most = room / (2 * h->page), recs = UMEM_GUARD_BLOCKS / 2;
        most = most < recs ? most : recs; /* half the records left for the rest */
        g->slots = umem__guard_setting("UMEM_GUARD_SLOTS", UMEM_GUARD_SLOTS);
        g->slots = g->slots < most ? g->slots : (unsigned)most;
    }
    atomic_init(&g->recs_used, g->slots);
    atomic_init(&g->next, g->lead + (size_t)g->slots * 2 * h->page);
    g->owner = (_Atomic uint32_t *)umem__map(g->owner_bytes, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_NORESERVE);
    g->recs = (struct umem_grec *)umem__map(g->recs_bytes, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_NORESERVE);
    if (!g->arena || !g->owner || !g->recs || umem__guard_join(g) != 0) {
        umem__guard_unmap(g);
        return ENOMEM;
    }
    h->guard = g;
    return 0;
}

/* The guarded blocks still allocated, listed as umem__keep_leaks lists
 * the others (no other thread may free one meanwhile): how many. */
static inline uint64_t umem__guard_leaks(umem_t *h, const char *what)
{
    struct umem_guard *g = h->guard;
    size_t used = atomic_load_explicit(&g->recs_used, memory_order_acquire);
    size_t cap = g->recs_bytes / sizeof(struct umem_grec);
    uint64_t blocks = 0, bytes = 0;
    for (size_t i = 0; i < used && i < cap; i++) {
        struct umem_grec *r = &g->recs[i];
        if (atomic_load_explicit(&r->state, memory_order_acquire) != UMEM__GUARD_LIVE)
            continue;
        blocks++;
        bytes += r->size;
        if (blocks > UMEM__LEAKS_SHOWN)
            continue;
        umem__guard_say("umem: %s: %zu bytes at %p (guarded)", what, r->size,
                        (void *)r->user);
        umem__frames_print("allocated from", r->alloc, UMEM__GUARD_FRAMES);
    }
    if (blocks > 0)
        umem__guard_say("umem: %s: %llu guarded blocks, %llu bytes in all", what,
                        (unsigned long long)blocks, (unsigned long long)bytes);
    return blocks;
}

/* ---- the watched path's part (umem/debug.h calls these) ---- */

/* A guarded block, or NULL with *done 0; the slot (when one is needed)
 * taken before the stack is captured, which is the dearer. */
static UMEM_NOINLINE void *umem__guard_try(umem_t *h, size_t align, size_t n, int *done)
{
    struct umem_guard *g = h->guard;
    long slot = -1;
    *done = 0;
    if (umem__guard_slotted(g, align, n) && (slot = umem__guard_claim(g)) < 0)
        return NULL;
    void *frames[UMEM__GUARD_FRAMES];
    umem__guard_trace(frames);
    void *p = umem__guard_alloc(g, align, n, frames, slot);
    *done = p != NULL;
    return p;
}

/* Whether a watched heap is watched by UMEM_GUARD alone. */
#define UMEM__SAMPLED(h) (!((h)->flags & (UMEM__KEEP | UMEM__VG)))

static inline int umem__sampled_pools(const umem_t *h)
{
    return (h->flags & (UMEM__WATCHED | UMEM_CACHED)) == (UMEM__GUARDS | UMEM_CACHED) &&
           h->guard->every > 1;
}

static inline int umem__guard_has(const umem_t *h, const void *p)
{
    const struct umem_guard *g = h->guard;
    return (uintptr_t)p - (uintptr_t)g->arena < g->arena_bytes;
}

static UMEM_NOINLINE void umem__guard_take(umem_t *h, void *p)
{
    void *frames[UMEM__GUARD_FRAMES];
    umem__guard_trace(frames);
    umem__guard_free(h->guard, p, frames);
}

/* The calls of a heap UMEM_GUARD alone watches (umem/api.h): the plain
 * path, but for the blocks drawn. */
static UMEM_NOINLINE void *umem__sampled_alloc(umem_t *h, size_t n)
{
    if (umem__guard_pick(h->guard)) {
        int guarded;
        void *p = umem__guard_try(h, 0, n, &guarded);
        if (guarded)
            return p;
    }
    return umem__alloc(h, n);
}

static UMEM_NOINLINE void umem__sampled_free(umem_t *h, void *p)
{
    if (umem__guard_has(h, p)) {
        umem__guard_take(h, p);
        UMEM__NO_TAIL();
        return;
    }
    umem__free(h, p);
}

static inline int umem__guard_size(umem_t *h, const void *p, const char *call, size_t *n)
{
    if (!umem__guard_has(h, p))
        return 0;
    *n = umem__guard_open(h->guard, p, call, NULL)->size;
    return 1;
}
