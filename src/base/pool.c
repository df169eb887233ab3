/* The worker pool (pool.h): one mutex hands out the indexes and keeps the first failure, so
 * that once a failure is kept no index starts; the caller's thread either works too or waits
 * on the condition the workers signal when they end, waking at each progress interval. */
#include "base/pool.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/time.h"

typedef struct run {
    const om_pool *p;
    size_t n, next; /* indexes [0, next) are handed out */
    pthread_mutex_t mu;
    pthread_cond_t ended; /* a worker thread ended (running went down) */
    int running;          /* worker threads not yet ended */
    int failed;
    om_err_saved err;    /* the first failure, with the detail of the thread it happened on */
    int inline_progress; /* the caller's thread works alone and calls progress itself */
    uint64_t last_ns;    /* the last progress call */
} run;

int om_pool_threads(int workers, size_t n)
{
    long w = workers > 0 ? workers : sysconf(_SC_NPROCESSORS_ONLN);
    if (w < 1) w = 1;
    if (w > OM_POOL_MAX_WORKERS) w = OM_POOL_MAX_WORKERS;
    if ((size_t)w > n) w = (long)n;
    return (int)w;
}

static uint64_t interval_ns(const om_pool *p)
{
    return (uint64_t)(p->interval_ms ? p->interval_ms : 100) * 1000000u;
}

static void fail(run *r, int rc)
{
    pthread_mutex_lock(&r->mu);
    if (!r->failed) {
        r->failed = 1;
        om_err_save(&r->err, rc); /* on the failing thread: its detail */
    }
    pthread_mutex_unlock(&r->mu);
}

static void call_progress(run *r)
{
    const om_pool *p = r->p;
    int rc = p->progress(p->ctx, p->count ? __atomic_load_n(p->count, __ATOMIC_RELAXED) : 0);
    if (rc) fail(r, rc);
    r->last_ns = om_mono_ns();
}

/* The next index into *i; 0 when there is none left or a failure was kept. */
static int take(run *r, size_t *i)
{
    pthread_mutex_lock(&r->mu);
    int ok = !r->failed && r->next < r->n;
    if (ok) *i = r->next++;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* One worker: its state, then indexes until none is left. */
static void work(run *r)
{
    const om_pool *p = r->p;
    void *ws = NULL;
    int rc = p->worker_begin ? p->worker_begin(p->ctx, &ws) : 0;
    if (rc) {
        fail(r, rc);
        return;
    }
    size_t i;
    while (take(r, &i)) {
        if ((rc = p->fn(p->ctx, ws, i))) {
            fail(r, rc);
            break;
        }
        if (r->inline_progress && om_mono_ns() - r->last_ns >= interval_ns(p)) call_progress(r);
    }
    if (p->worker_end) p->worker_end(p->ctx, ws);
}

static void *worker_thread(void *arg)
{
    run *r = arg;
    work(r);
    pthread_mutex_lock(&r->mu);
    r->running--;
    pthread_cond_broadcast(&r->ended);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* The caller's thread while the workers run: progress at each interval until they all end. */
static void watch(run *r)
{
    uint64_t step = interval_ns(r->p);
    r->last_ns = om_mono_ns();
    pthread_mutex_lock(&r->mu);
    while (r->running > 0) {
        uint64_t due = r->last_ns + step, now = om_mono_ns();
        if (now >= due) {
            pthread_mutex_unlock(&r->mu);
            call_progress(r);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (due - now);
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&r->ended, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
}

int om_pool_run(const om_pool *p, size_t n)
{
    run r = {.p = p, .n = n};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.ended, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r.mu, NULL);
    int nt = om_pool_threads(p->workers, n);
    /* Without progress to call, the caller's thread is one of the workers. */
    int want = p->progress || !nt ? nt : nt - 1, started = 0;
    pthread_t th[OM_POOL_MAX_WORKERS];
    r.running = want;
    for (int k = 0; k < want; k++)
        started += pthread_create(&th[started], NULL, worker_thread, &r) == 0;
    pthread_mutex_lock(&r.mu);
    r.running -= want - started; /* the threads that could not be started */
    pthread_mutex_unlock(&r.mu);
    if (n && !p->progress)
        work(&r);
    else if (n && !started) {
        r.inline_progress = 1; /* no thread could be started: the work runs here */
        r.last_ns = om_mono_ns();
        work(&r);
    } else if (started)
        watch(&r);
    for (int k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    if (p->progress) call_progress(&r);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.ended);
    return r.failed ? om_err_restore(&r.err) : 0;
}
