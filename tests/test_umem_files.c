/* umem.h included by two files of one program (this one and
 * umem_other_file.c): the heaps fork() must know about and each thread's
 * cache are the program's, whichever file makes, uses or destroys them.
 * Also: a fork() handler the program registers before it makes its first
 * heap may allocate from the heap in the child. */
#include "../umem.h"
/* A heap lock left held after fork() would hang a child: its time limit
 * makes that a failure.  Generous, since on a loaded machine or under a
 * sanitizer even a few calls may wait seconds for a CPU. */
#define CHECK_CHILD_SECONDS 60
#include "check.h"

#include <signal.h>
#include <sys/wait.h>

/* In umem_other_file.c. */
void *other_alloc(umem_t *h, size_t n);
void other_free(umem_t *h, void *p);
void other_destroy(umem_t *h);

/* The child `pid`, made by check_fork, exits with status 0. */
#define CHECK_CHILD_OK(pid)                          \
    do {                                             \
        int status = 0;                              \
        if (CHECK_GT(pid, 0))                        \
            CHECK_EQ(check_wait(pid, &status), pid); \
        CHECK_EXITED_0(status);                      \
    } while (0)

/* A heap destroyed by the other file is gone from the fork() list too. */
static void destroyed_in_other_file_then_fork(void)
{
    umem_t *h = umem_create(1 << 20, 0);
    CHECK_NE(h, NULL);
    if (!h)
        return;
    umem_free(h, umem_alloc(h, 100));
    other_destroy(h);
    umem_t *g = umem_create(1 << 20, 0); /* may reuse the address */
    pid_t pid = check_fork();
    if (pid == 0) {
        void *p = umem_alloc(g, 100);
        umem_free(g, p);
        _exit(p && umem_check(g) == 0 ? 0 : 1);
    }
    CHECK_CHILD_OK(pid);
    umem_destroy(g);
}

/* A thread uses its cache from both files, exits, and a key destructor
 * that runs after umem's allocates from both files again. */
static umem_t *cached_heap;
static pthread_key_t late_key;

static void late_destructor(void *v)
{
    (void)v;
    other_free(cached_heap, other_alloc(cached_heap, 64));
    umem_free(cached_heap, umem_alloc(cached_heap, 64));
}

static void *both_files(void *arg)
{
    (void)arg;
    pthread_setspecific(late_key, (void *)1);
    umem_free(cached_heap, umem_alloc(cached_heap, 64));
    other_free(cached_heap, other_alloc(cached_heap, 64));
    void *p = other_alloc(cached_heap, 200);
    umem_free(cached_heap, p); /* made in one file, freed in the other */
    return NULL;
}

static void thread_cache_shared_by_files(void)
{
    cached_heap = umem_create(1 << 20, UMEM_CACHED);
    CHECK_NE(cached_heap, NULL);
    if (!cached_heap)
        return;
    CHECK_EQ(pthread_key_create(&late_key, late_destructor), 0);
    for (int i = 0; i < 8; i++) {
        check_where("thread #%d", i);
        pthread_t tid;
        CHECK_EQ(pthread_create(&tid, NULL, both_files, NULL), 0);
        pthread_join(tid, NULL);
    }
    check_where("every thread joined");
    CHECK_EQ(umem_check(cached_heap), 0);
    umem_stats_t st;
    umem_get_stats(cached_heap, &st);
    CHECK_EQ(st.allocs, st.frees);
    CHECK_EQ(st.bytes_in_use, 0);
    pthread_key_delete(late_key);
    umem_destroy(cached_heap);
}

static umem_t *atfork_heap;
static void child_allocates(void)
{
    if (atfork_heap)
        umem_free(atfork_heap, umem_alloc(atfork_heap, 2000));
}

static void handler_registered_first_allocates_in_child(void)
{
    CHECK_EQ(pthread_atfork(NULL, NULL, child_allocates), 0);
    atfork_heap = umem_create(1 << 20, 0);
    CHECK_NE(atfork_heap, NULL);
    pid_t pid = check_fork();
    if (pid == 0) {
        _exit(umem_check(atfork_heap) == 0 ? 0 : 1);
    }
    CHECK_CHILD_OK(pid);
    umem_t *h = atfork_heap;
    atfork_heap = NULL;
    umem_destroy(h);
}

int main(void)
{
    RUN(destroyed_in_other_file_then_fork);
    RUN(thread_cache_shared_by_files);
    RUN(handler_registered_first_allocates_in_child);
    return CHECK_EXIT_STATUS();
}
