/*
 * blocksig.h - what sharedhash and esharedhash share: the Huffman block
 * signature of files, the three run modes and the command line.  The two
 * programs differ only in where umalloc() and ufree() take memory from:
 * their allocation policy, which each passes to blocksig_main().
 *
 * CONTENTS, in the order they are included.  Each part uses only what
 * comes before it, and refuses to be included but from here.
 *
 *   blocksig.h   this page: the policy contract, the limits
 *   signature.h  the signature: the priority queue of tree nodes, the
 *                tree, the hash of a block and of a chunk, the sum
 *   cmdline.h    the command line: options, usage, usage errors
 *   inout.h      input, output and progress: fatal errors, whole reads
 *                and writes, inputs, the progress line, result lines,
 *                the lists of -c read back, verdicts and summaries
 *   workers.h    the workers, threads (-t) or processes (-m): what a
 *                worker does, tasks and results, the shared feed of a
 *                file's chunks, and the one interface that starts, feeds,
 *                stops and kills them whichever they are
 *   run.h        the run: single mode, the reader of the worker modes,
 *                the check of -c, --stats, blocksig_main
 *
 * The signature is defined in docs/design.md ("The signature"); the run
 * modes, and how a reader and its workers talk, are described once, in
 * docs/design.md ("The run modes").
 *
 * THE POLICY CONTRACT.  A program includes this header, then defines
 *
 *   static inline void *umalloc(size_t n);   the policy's allocation
 *   static inline void  ufree(void *p);      and free
 *   static const struct policy NAME = {...}; the hooks below
 *
 * and its main() returns blocksig_main(argc, argv, &NAME).  The hooks,
 * each optional (NULL: nothing to do), are called with what they need:
 *
 *   reader_begin(env)     the main thread, after the heap exists and
 *                         before any worker: 0, or -1 with errno set
 *   worker_begin(env)     each worker, before its first task: likewise
 *   worker_end(counts)    each worker, after its last task: fills in what
 *                         its umalloc and ufree did
 *   reader_end(counts)    the main thread, once the workers have stopped:
 *                         likewise for the main thread
 *
 * Define BLOCKSIG_POOLS before the include to accept --pool and to print
 * the pool figures of --stats.
 */
#ifndef BLOCKSIG_H
#define BLOCKSIG_H

#include "umem.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define MAX_WORKERS      256u
#define MAX_WINDOW       64u /* chunks in flight at most, whatever -j says */
#define TASKS_PER_WORKER 2u
#define VERSION          "1.0.0"

/* Helgrind and DRD do not take a pipe or a socket for synchronization, so
 * in a build for them (-DBLOCKSIG_VALGRIND, with valgrind's headers) each
 * hand-off of memory through one, or through an atomic counter, is
 * declared to them. */
#ifdef BLOCKSIG_VALGRIND
#include <valgrind/helgrind.h>
#define HANDOFF_SEND(p)    ANNOTATE_HAPPENS_BEFORE(p)
#define HANDOFF_RECEIVE(p) ANNOTATE_HAPPENS_AFTER(p)
#else
#define HANDOFF_SEND(p)    ((void)(p))
#define HANDOFF_RECEIVE(p) ((void)(p))
#endif

enum run_mode { MODE_SINGLE, MODE_THREADS, MODE_PROCESSES };

/* What one thread's (or worker process's) umalloc and ufree did; the run
 * adds up everyone's for --stats. */
struct alloc_counts {
    uint64_t umallocs, ufrees;
    uint64_t pool_hits, pool_fallbacks, pool_resets, remote_frees;
};

/* What the begin hooks are told. */
struct policy_env {
    umem_t *heap; /* the run's heap, shared by the reader and every worker */
    enum run_mode mode;
    unsigned window;   /* chunks the reader may have in flight (-t, -m) */
    size_t pool_bytes; /* --pool */
};

struct policy {
    int (*reader_begin)(const struct policy_env *env);
    int (*worker_begin)(const struct policy_env *env);
    void (*worker_end)(struct alloc_counts *counts);
    void (*reader_end)(struct alloc_counts *counts);
    int private_memory; /* memory not shared across fork(): no -m */
};

static inline void *umalloc(size_t n);
static inline void ufree(void *p);

#include "signature.h"
#include "cmdline.h"
#include "inout.h"
#include "workers.h"
#include "run.h"

#endif /* BLOCKSIG_H */
