/*
 * umem/exit.h - the check at exit of a watched heap (a part of umem.h).
 *
 * Most programs never destroy their heap.  A watched heap (UMEM_DEBUG,
 * or an AddressSanitizer build) still alive when the process exits is
 * checked from an atexit handler as umem_destroy checks it: the
 * quarantine's pattern, every live block's guards (either broken:
 * reported on one line, then abort()), then the blocks still allocated,
 * listed by the process that made the heap; if there are any, the
 * process exits with the heap's exit_code: UMEM_EXITCODE, else 23, as
 * LeakSanitizer's (umem(3), DEBUGGING).  The handler is registered when
 * the first watched heap is made, so handlers the program registered
 * before then are skipped when it ends the process that way.
 */
#ifndef UMEM_H
#error "umem/exit.h is a part of umem.h: include umem.h instead"
#endif

#define UMEM__EXIT_LEAKED 23

/* One heap (other threads may still run): how many blocks it left. */
static UMEM_RARE uint64_t umem__exit_check_heap(umem_t *h)
{
    UMEM__VG_QUIET(h);
    int alone = umem__keep_lock(h); /* lent to a fork: checked without it */
    uint64_t leaks = 0;
    {
        for (struct umem_rec *r = h->held.next; r != &h->held; r = r->next)
            umem__keep_verify(r);
        for (struct umem_rec *r = h->live.next; r != &h->live; r = r->next) {
            size_t at = umem__rec_under(r), over = umem__rec_over(r);
            if (at || over)
                umem__report("at exit: block %p (%zu bytes): written %s, at byte %s%zu",
                             (void *)(r + 1), r->size,
                             at ? "before its start (underrun)"
                                : "past its end (overrun)",
                             at ? "-" : "", at ? at : over);
        }
        if (h->creator == getpid())
            leaks = umem__keep_leaks(h, h->exit_what) +
                    (h->guard ? umem__guard_leaks(h, h->exit_what) : 0);
        if (!alone)
            umem__unlock(h);
    }
    UMEM__VG_LOUD(h);
    return leaks;
}

static UMEM_RARE void umem__exit_check(void)
{
    int code = -1;
    pthread_mutex_lock(&umem__exit_lock);
    for (umem_t *h = umem__exit_heaps; h; h = h->exit_next)
        if (umem__exit_check_heap(h) > 0 && h->exit_code >= 0)
            code = h->exit_code;
    pthread_mutex_unlock(&umem__exit_lock);
    if (code >= 0) {
        fflush(NULL);
        _exit(code);
    }
}

/* The exit status of a process whose watched heaps leaked: UMEM_EXITCODE
 * from 1 to 255, 0 for the program's own (-1 here), else 23. */
static inline int umem__exit_code_set(void)
{
    const char *s = getenv("UMEM_EXITCODE");
    char *end;
    long code = s && *s ? strtol(s, &end, 10) : -2;
    if (code < 0 || code > 255 || *end != '\0')
        return UMEM__EXIT_LEAKED;
    return code == 0 ? -1 : (int)code;
}

/* A new watched heap joins the list checked at exit. */
static inline void umem__exit_join(umem_t *h)
{
    if (!(h->flags & UMEM__KEEP))
        return;
    h->exit_what = "leak";
    h->exit_code = umem__exit_code_set();
    int no = 0;
    if (atomic_compare_exchange_strong(&umem__exit_registered, &no, 1))
        atexit(umem__exit_check);
    pthread_mutex_lock(&umem__exit_lock);
    h->exit_next = umem__exit_heaps;
    umem__exit_heaps = h;
    pthread_mutex_unlock(&umem__exit_lock);
}

static inline void umem__exit_leave(umem_t *h)
{
    if (!(h->flags & UMEM__KEEP))
        return;
    pthread_mutex_lock(&umem__exit_lock);
    for (umem_t **link = &umem__exit_heaps; *link; link = &(*link)->exit_next)
        if (*link == h) {
            *link = h->exit_next;
            break;
        }
    pthread_mutex_unlock(&umem__exit_lock);
}

static inline void umem__exit_as(umem_t *h, const char *what, int code)
{
    h->exit_what = what;
    h->exit_code = code > 0 && code <= 255 ? code : -1;
}
