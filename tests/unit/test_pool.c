/* src/base/pool.h: every index once, the first failure with its detail on the caller's thread,
 * nothing started after a failure, progress on the caller's thread, and a pool that still does
 * the work when threads cannot be started (pthread_create is interposed below). */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/pool.h"

/* ---- pthread_create that fails on demand ---- */

static int creates_allowed = -1; /* -1: all; n: the next n, then EAGAIN */
static int creates_refused;

int pthread_create(pthread_t *restrict t, const pthread_attr_t *restrict a, void *(*fn)(void *),
                   void *restrict arg)
{
    static int (*real)(pthread_t *restrict, const pthread_attr_t *restrict, void *(*)(void *),
                       void *restrict);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "pthread_create");
    if (creates_allowed == 0) {
        creates_refused++;
        return EAGAIN;
    }
    if (creates_allowed > 0) creates_allowed--;
    return real(t, a, fn, arg);
}

/* ---- a job whose indexes say what happened to them ---- */

#define MAX_N 2000

typedef struct job {
    size_t n;
    int hits[MAX_N];        /* how many times each index ran (atomic) */
    size_t fail_at;         /* this index fails at once (MAX_N: none) */
    unsigned later_fail_ms; /* indexes after fail_at sleep this long, then fail otherwise */
    unsigned sleep_us;      /* every other index sleeps this long */
    uint64_t count;         /* indexes done (atomic): the progress counter */
    pthread_t caller;
    int begins, ends;      /* worker_begin / worker_end calls (atomic) */
    int begin_fails;       /* worker_begin fails */
    pthread_t fail_thread; /* where fail_at ran */
    uint64_t seen[256];    /* the counts progress was given */
    int progress_calls;
    int progress_elsewhere;     /* progress calls not on the caller's thread */
    uint64_t progress_fails_at; /* progress fails once the count reaches it (0: never) */
} job;

static int fn(void *ctx, void *ws, size_t i)
{
    job *j = ctx;
    if (ws != j) return om_errf(OM_E_Internal, "index %zu: not the worker's state", i);
    __atomic_fetch_add(&j->hits[i], 1, __ATOMIC_RELAXED);
    if (i == j->fail_at) {
        j->fail_thread = pthread_self();
        return om_errf(OM_E_DiskIO, "index %zu failed on its own thread", i);
    }
    if (i > j->fail_at && j->later_fail_ms) {
        usleep(j->later_fail_ms * 1000);
        return om_errf(OM_E_Internal, "index %zu failed later", i);
    }
    if (j->sleep_us) usleep(j->sleep_us);
    __atomic_fetch_add(&j->count, 1, __ATOMIC_RELAXED);
    return 0;
}

static int begin(void *ctx, void **ws)
{
    job *j = ctx;
    __atomic_fetch_add(&j->begins, 1, __ATOMIC_RELAXED);
    if (j->begin_fails) return om_errf(OM_E_OutOfMemory, "no reader for this worker");
    *ws = j;
    return 0;
}

static void end(void *ctx, void *ws)
{
    job *j = ctx;
    if (ws == j) __atomic_fetch_add(&j->ends, 1, __ATOMIC_RELAXED);
}

static int progress(void *ctx, uint64_t count)
{
    job *j = ctx;
    if (!pthread_equal(pthread_self(), j->caller)) j->progress_elsewhere++;
    if (j->progress_calls < 256) j->seen[j->progress_calls] = count;
    j->progress_calls++;
    if (j->progress_fails_at && count >= j->progress_fails_at)
        return om_errf(OM_E_OutOfMemory, "the caller's side failed at %llu",
                       (unsigned long long)count);
    return 0;
}

static om_pool pool_of(job *j, int workers, int with_progress)
{
    j->caller = pthread_self();
    if (!j->fail_at) j->fail_at = MAX_N;
    return (om_pool){.workers = workers,
                     .ctx = j,
                     .fn = fn,
                     .worker_begin = begin,
                     .worker_end = end,
                     .progress = with_progress ? progress : NULL,
                     .count = &j->count,
                     .interval_ms = 10};
}

static size_t ran(const job *j)
{
    size_t k = 0;
    for (size_t i = 0; i < MAX_N; i++)
        k += j->hits[i] != 0;
    return k;
}

static void each_ran_once(const job *j, size_t n)
{
    for (size_t i = 0; i < MAX_N; i++)
        assert_int_equal(j->hits[i], i < n ? 1 : 0);
}

/* ---- tests ---- */

static void every_index_runs_exactly_once(void **s)
{
    (void)s;
    for (int with_progress = 0; with_progress < 2; with_progress++) {
        static job j;
        memset(&j, 0, sizeof j);
        om_pool p = pool_of(&j, 4, with_progress);
        om_errf(OM_E_Usage, "the caller's own detail");
        assert_int_equal(om_pool_run(&p, MAX_N), 0);
        each_ran_once(&j, MAX_N);
        assert_int_equal(j.count, MAX_N);
        assert_true(j.begins >= 1 && j.begins <= 4);
        assert_int_equal(j.ends, j.begins);
        assert_string_equal(om_err_detail(), "the caller's own detail"); /* left alone */
    }
}

static void the_first_failure_comes_back_with_its_detail(void **s)
{
    (void)s;
    static job j;
    memset(&j, 0, sizeof j);
    j.fail_at = 10;
    j.later_fail_ms = 100; /* failures after it come later, with another code and detail */
    om_pool p = pool_of(&j, 4, 1);
    om_errf(OM_E_Usage, "the caller's own detail");
    assert_int_equal(om_pool_run(&p, MAX_N), OM_E_DiskIO);
    /* Set on a worker's thread, read on the caller's. */
    assert_false(pthread_equal(j.fail_thread, pthread_self()));
    assert_string_equal(om_err_detail(), "index 10 failed on its own thread");
    assert_int_equal(j.ends, j.begins);
}

static void no_index_starts_after_a_failure(void **s)
{
    (void)s;
    static job j;
    memset(&j, 0, sizeof j);
    j.fail_at = 5;
    om_pool one = pool_of(&j, 1, 1);
    assert_int_equal(om_pool_run(&one, 100), OM_E_DiskIO);
    each_ran_once(&j, 6); /* 0..5, then nothing */

    memset(&j, 0, sizeof j);
    j.fail_at = 20;
    j.sleep_us = 2000;
    om_pool four = pool_of(&j, 4, 0);
    assert_int_equal(om_pool_run(&four, MAX_N), OM_E_DiskIO);
    size_t m = ran(&j);
    each_ran_once(&j, m); /* handed out in order: what ran is a prefix */
    /* At most what the other three workers had begun when index 20 failed (with room for a
     * busy machine), not the thousands after. */
    assert_true(m >= 21 && m <= 21 + 2 * 3);
}

static void no_index_runs_no_worker_starts_for_n_zero(void **s)
{
    (void)s;
    static job j;
    memset(&j, 0, sizeof j);
    om_pool p = pool_of(&j, 4, 1);
    assert_int_equal(om_pool_run(&p, 0), 0);
    assert_int_equal(ran(&j), 0);
    assert_int_equal(j.begins, 0);
    assert_int_equal(j.progress_calls, 1); /* the final count, once */
    assert_int_equal(j.seen[0], 0);
    p.progress = NULL;
    assert_int_equal(om_pool_run(&p, 0), 0);
    assert_int_equal(j.begins, 0);
    assert_int_equal(om_pool_threads(8, 0), 0);
}

static void fewer_indexes_than_workers_use_as_many_threads(void **s)
{
    (void)s;
    static job j;
    memset(&j, 0, sizeof j);
    om_pool p = pool_of(&j, 8, 1);
    assert_int_equal(om_pool_threads(8, 3), 3);
    assert_int_equal(om_pool_run(&p, 3), 0);
    each_ran_once(&j, 3);
    assert_true(j.begins >= 1 && j.begins <= 3);
    assert_int_equal(om_pool_threads(500, 1000), OM_POOL_MAX_WORKERS);
    assert_true(om_pool_threads(0, 1000) >= 1);
}

static void progress_comes_on_the_callers_thread_and_ends_at_the_total(void **s)
{
    (void)s;
    static job j;
    memset(&j, 0, sizeof j);
    j.sleep_us = 5000;
    om_pool p = pool_of(&j, 2, 1);
    assert_int_equal(om_pool_run(&p, 40), 0); /* about 100 ms of work, 10 ms interval */
    assert_true(j.progress_calls >= 3);
    assert_int_equal(j.progress_elsewhere, 0);
    for (int k = 1; k < j.progress_calls && k < 256; k++)
        assert_true(j.seen[k] >= j.seen[k - 1]);
    assert_int_equal(j.seen[j.progress_calls - 1], 40);
}

static void the_work_is_done_when_threads_cannot_be_started(void **s)
{
    (void)s;
    static job j;
    for (int allowed = 0; allowed < 2; allowed++)
        for (int with_progress = 0; with_progress < 2; with_progress++) {
            memset(&j, 0, sizeof j);
            j.sleep_us = with_progress ? 1000 : 0;
            creates_allowed = allowed;
            creates_refused = 0;
            om_pool p = pool_of(&j, 4, with_progress);
            assert_int_equal(om_pool_run(&p, 50), 0);
            creates_allowed = -1;
            assert_true(creates_refused > 0);
            each_ran_once(&j, 50);
            if (with_progress) {
                assert_true(j.progress_calls >= 2); /* also between indexes run here */
                assert_int_equal(j.progress_elsewhere, 0);
                assert_int_equal(j.seen[j.progress_calls - 1], 50);
            }
        }
    memset(&j, 0, sizeof j);
    j.fail_at = 7;
    creates_allowed = 0;
    om_pool p = pool_of(&j, 4, 1);
    assert_int_equal(om_pool_run(&p, 50), OM_E_DiskIO);
    creates_allowed = -1;
    assert_string_equal(om_err_detail(), "index 7 failed on its own thread");
    each_ran_once(&j, 8);
}

static void a_failed_progress_call_stops_the_run_like_a_worker(void **s)
{
    (void)s;
    static job j;
    memset(&j, 0, sizeof j);
    j.sleep_us = 1000;
    j.progress_fails_at = 1;
    om_pool p = pool_of(&j, 2, 1);
    assert_int_equal(om_pool_run(&p, MAX_N), OM_E_OutOfMemory);
    assert_true(strncmp(om_err_detail(), "the caller's side failed at ", 28) == 0);
    size_t m = ran(&j);
    each_ran_once(&j, m);
    assert_true(m < MAX_N / 2); /* stopped early: 2 s of work otherwise */
}

static void a_worker_that_cannot_begin_fails_the_run(void **s)
{
    (void)s;
    static job j;
    memset(&j, 0, sizeof j);
    j.begin_fails = 1;
    om_pool p = pool_of(&j, 3, 1);
    assert_int_equal(om_pool_run(&p, 100), OM_E_OutOfMemory);
    assert_string_equal(om_err_detail(), "no reader for this worker");
    assert_int_equal(ran(&j), 0);
    assert_int_equal(j.ends, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_index_runs_exactly_once),
        cmocka_unit_test(the_first_failure_comes_back_with_its_detail),
        cmocka_unit_test(no_index_starts_after_a_failure),
        cmocka_unit_test(no_index_runs_no_worker_starts_for_n_zero),
        cmocka_unit_test(fewer_indexes_than_workers_use_as_many_threads),
        cmocka_unit_test(progress_comes_on_the_callers_thread_and_ends_at_the_total),
        cmocka_unit_test(the_work_is_done_when_threads_cannot_be_started),
        cmocka_unit_test(a_failed_progress_call_stops_the_run_like_a_worker),
        cmocka_unit_test(a_worker_that_cannot_begin_fails_the_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
