/*
 * umem/lock.h - the heap's lock, and fork(), which holds every private
 * heap's lock and lends it (a part of umem.h).
 *
 * THE LOCK
 *   Every call the heap serves, not a pool, takes the lock (none with
 *   UMEM_NOLOCK; for UMEM_SHARED a process-shared robust mutex).  A
 *   caller that finds it taken spins briefly, then naps UMEM_NAP_NS
 *   between attempts instead of queueing on the mutex: a lock taken for
 *   every allocation is best left with the thread that holds it for a
 *   burst of calls, since handing it (and the heap's cache lines) to
 *   another core on every call costs more than the calls.  On a
 *   UMEM_CACHED heap, whose lock is taken rarely and briefly, a caller
 *   queues on the mutex after its spins instead, to be woken as soon as
 *   it is free, looking up every UMEM_WAIT_NS for a fork that holds it.
 *   The heap's counters live in the region and change only under the
 *   lock, so they are exact across threads and, for UMEM_SHARED, across
 *   processes.  Which calls take it how often, and what lock_count and
 *   lock_contended count: umem(3), Locking.
 *
 * FORK
 *   pthread_atfork handlers, registered once per process, hold the lock
 *   of every private locked heap across fork(), so a child finds each
 *   heap whole, with its lock made anew.  While a fork() holds a heap's
 *   lock, the lock is lent: a call that finds it busy does not wait,
 *   since its thread may hold a lock that fork() takes after the
 *   handlers (glibc's list of streams, held by a thread in fflush(NULL)
 *   that waits for a stream whose thread is in getline(), and so in
 *   realloc).  It does without: an allocation gets a mapping of its own,
 *   a free or a move waits on a list, and the next holder of the lock
 *   settles both (umem/locate.h).  Each thread notes the private heap
 *   whose lock it is taking or holds, so that a fork() from a signal
 *   handler that interrupted such a call does not wait for that lock:
 *   the call finishes, in the parent and in the child (where the lock
 *   is made anew and held again for it).  Which calls lend and which
 *   wait: umem(3), Fork.
 *
 * A PROCESS THAT DIES HOLDING THE LOCK (UMEM_SHARED)
 *   The mutex is robust: the next process to lock it is told the owner
 *   died.  The heap may have been left half-updated, so it is marked
 *   dead in the region, for good and for every process.
 */
#ifndef UMEM_H
#error "umem/lock.h is a part of umem.h: include umem.h instead"
#endif

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

/* umem__lock when the first attempt did not simply take the lock: r is
 * what pthread_mutex_trylock said (0 for a heap whose owner died);
 * `outer`, the heap an interrupted call of this thread was locking. */
static UMEM_NOINLINE int umem__lock_slow(umem_t *h, int how, int r, const umem_t *outer)
{
    int contended = 0;
    /* Contended: a short spin, then naps (THE LOCK, above); a lock
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
 * a fork settles what was done without the lock.  Always inlined: the
 * compiler's own choice for it shifts with whatever else the program
 * holds, and the plain path's cost with it. */
static UMEM_HOT_INLINE int umem__lock(umem_t *h, int how)
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
    umem__guard_fork_child();
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
