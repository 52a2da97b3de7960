/*
 * umem/platform.h - what umem needs of the compiler, the tools and the
 * system (a part of umem.h).
 *
 * Compiler attributes (cold, hot, noinline paths), valgrind's client
 * requests and AddressSanitizer's poisoning where either is there, the
 * one-line misuse report, the process-wide state, mmap and the clock.
 *
 * THE PROCESS-WIDE STATE is defined here and in umem/layout.h (which
 * needs the heap's types), nowhere else: the list of private locked heaps
 * whose locks fork() holds (umem__forks...) here, each thread's pool
 * pointer (umem__tls) there.  The rule for several files is
 * in umem.h (PROCESS-WIDE STATE): weak symbols with gcc and clang, so
 * every file that includes umem.h shares one copy.
 */
#ifndef UMEM_H
#error "umem/platform.h is a part of umem.h: include umem.h instead"
#endif

/* ---- the tools that watch the heap (umem/debug.h) ----
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

#if defined(__GNUC__)
#define UMEM_COLD          __attribute__((cold, noinline, noreturn))
#define UMEM_NOINLINE      __attribute__((noinline))
#define UMEM_RARE          __attribute__((cold, noinline))
#define UMEM_HOT_INLINE    __attribute__((always_inline)) inline
#define UMEM_ASSUME(c)     ((c) ? (void)0 : __builtin_unreachable())
#define UMEM_LIKELY(x)     __builtin_expect(!!(x), 1)
#define UMEM__NO_TAIL()    __asm__ volatile("") /* the call before is no tail call */
#define UMEM_UNLIKELY(x)   __builtin_expect(!!(x), 0)
#else
#define UMEM_COLD
#define UMEM_NOINLINE
#define UMEM_RARE
#define UMEM_HOT_INLINE  inline
#define UMEM_ASSUME(c)   ((void)0)
#define UMEM_LIKELY(x)   (x)
#define UMEM__NO_TAIL()  ((void)0)
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

/* The private locked heaps, for fork(). */
UMEM_PROCESS_WIDE pthread_mutex_t umem__forks_lock = PTHREAD_MUTEX_INITIALIZER;
UMEM_PROCESS_WIDE umem_t *umem__forks; /* under umem__forks_lock */
UMEM_PROCESS_WIDE _Atomic(const void *) umem__forks_owner; /* the thread in fork() */
UMEM_PROCESS_WIDE int umem__forks_nested; /* a fork() inside its handlers, by the owner */
UMEM_PROCESS_WIDE atomic_int umem__forks_registered;

/* The watched heaps still alive, checked at exit (umem/debug.h), and
 * whether that check is registered with atexit. */
UMEM_PROCESS_WIDE pthread_mutex_t umem__exit_lock = PTHREAD_MUTEX_INITIALIZER;
UMEM_PROCESS_WIDE umem_t *umem__exit_heaps; /* under umem__exit_lock */
UMEM_PROCESS_WIDE atomic_int umem__exit_registered;

/* The guarded heaps' arenas, which the SIGSEGV handler searches, and the
 * handler that was there before it (umem/guard.h). */
#define UMEM__GUARD_HEAPS 16
UMEM_PROCESS_WIDE _Atomic(struct umem_guard *) umem__guards[UMEM__GUARD_HEAPS];
UMEM_PROCESS_WIDE pthread_mutex_t umem__guard_lock = PTHREAD_MUTEX_INITIALIZER;
UMEM_PROCESS_WIDE int umem__guard_installed; /* under umem__guard_lock */
UMEM_PROCESS_WIDE struct sigaction umem__guard_before;

/* Whether pc, a return address, lies in umem's own code: where umem is
 * the whole of a shared object (libumem.so defines UMEM_OWN_MODULE), the
 * span of that object, which the linker marks; elsewhere umem's calls
 * are inlined into the program's and no frame is umem's alone. */
#if defined(UMEM_OWN_MODULE) && defined(__GNUC__)
extern const char __ehdr_start[] __attribute__((visibility("hidden")));
extern const char _end[] __attribute__((visibility("hidden")));
static inline int umem__own_code(const void *pc)
{
    return (uintptr_t)pc - (uintptr_t)__ehdr_start < (uintptr_t)(_end - __ehdr_start);
}
#else
static inline int umem__own_code(const void *pc)
{
    (void)pc;
    return 0;
}
#endif

static inline void *umem__map(size_t bytes, int prot, int vis)
{
    void *p = mmap(NULL, bytes, prot, vis | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

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
