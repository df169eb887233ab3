/* A worker pool: fn(ctx, ws, i) once for every index i in [0, n), over a few threads. The
 * backup, the restore, verify and dbutil spread their work over the cores with it; what an
 * index stands for (a chunk of pages, a file, a block) is the caller's.
 *
 * Contract of om_pool_run:
 *  - Indexes are handed out in increasing order, one at a time; each runs at most once, and on
 *    success every one has run exactly once.
 *  - The first failure (fn or worker_begin returning non-zero) stops the handing out: the
 *    indexes already running finish, no other starts. om_pool_run returns that failure's code
 *    with its detail (base/error.h) set on the caller's thread, though it was set on a
 *    worker's. A later failure is dropped. On success om_pool_run sets no detail itself.
 *  - Threads: min(workers, n). A thread that cannot be started is no failure: the work runs on
 *    the threads that could be, or on the caller's thread when none could.
 *  - Without a progress callback the caller's thread is one of the workers. With one, the
 *    caller's thread calls progress(ctx, *count) every interval_ms while the work runs, and
 *    once more after the last index has finished (whatever the result, and also for n = 0), so
 *    that the last call sees the final count. When no thread could be started, the calls come
 *    between two indexes run on the caller's thread. A progress call that returns non-zero is
 *    a failure of the run like a worker's (the caller's side of the work failed: a thread it
 *    starts, a step it takes when the workers are far enough).
 *  - Per-worker state (a repository reader, a buffer): worker_begin makes it on the worker's
 *    thread before the worker's first index, worker_end frees it after its last (not when
 *    worker_begin failed). A worker whose worker_begin failed is a failure of the run.
 *
 * Workers share ctx: whatever fn touches in it besides its own index's share is the caller's
 * to lock. fn must not call om_pool_run on the same om_pool (a nested pool is fine). */
#ifndef OM_BASE_POOL_H
#define OM_BASE_POOL_H

#include <stddef.h>
#include <stdint.h>

#define OM_POOL_MAX_WORKERS 64

typedef struct om_pool {
    int workers; /* threads; 0: one per core. At most OM_POOL_MAX_WORKERS. */
    void *ctx;   /* passed to every callback */
    int (*fn)(void *ctx, void *ws, size_t index);
    int (*worker_begin)(void *ctx, void **ws);  /* optional; *ws is NULL without it */
    void (*worker_end)(void *ctx, void *ws);    /* optional */
    int (*progress)(void *ctx, uint64_t count); /* optional */
    const uint64_t *count; /* what progress is given: a counter the workers add to atomically
                              (__atomic_fetch_add); NULL: 0 */
    unsigned interval_ms;  /* between two progress calls; 0: 100 */
} om_pool;

/* Runs p->fn for every index in [0, n) (see the contract above): 0, or the first failure. */
int om_pool_run(const om_pool *p, size_t n);

/* The number of threads a pool with `workers` runs over n indexes: min(workers or the cores,
 * OM_POOL_MAX_WORKERS, n), at least 1 when n > 0. For the messages that name it. */
int om_pool_threads(int workers, size_t n);

#endif
