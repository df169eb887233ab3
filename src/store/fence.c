/* Fencing of a store's replicated databases (fence.h).
 *
 * Why a commit is acknowledged only when no lapse came between its entry and its ack: the
 * deadline only moves forward, so "now < T at the ack, and no renewal found T passed since the
 * entry" means T was ahead of the clock at every moment between, the moment the commit became
 * durable included. A renewal that finds T passed counts a lapse (lapses), which refuses every
 * commit that entered before it. */
#include "store/fence.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"

#define DEFAULT_WAIT_MS 5000

typedef struct fdb {
    char name[72];
    int64_t epoch;
    int replicated;
    int seen;     /* a renewal came after its mount */
    int stopped;  /* store_fence_stop: no new commit enters */
    int taking;   /* what the log last said */
    int inflight; /* commits between enter and ack/leave */
    uint64_t stopped_ns;
    int confirmed;    /* the last renewal confirmed it (ombra-repld read active/<id> naming this
                         server at its epoch, not deposing) */
    uint64_t dlapses; /* times it lost its confirmation: refuses the commits that entered before */
} fdb;

struct store_fence {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* CLOCK_MONOTONIC; broadcast on every change */
    pthread_t watcher;
    int quit;
    char server[128];
    int armed;
    uint32_t wait_ms;
    uint64_t until_ns, renewed_ns; /* T and the last renewal (om_mono_ns) */
    uint64_t lapses;
    fdb **d;
    size_t n, cap;
};

static fdb *find(store_fence *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->d[i]->name, name)) return f->d[i];
    return NULL;
}

static int fenced(const store_fence *f, const fdb *d)
{
    return f->armed && d->replicated;
}

static int may_commit(const store_fence *f, const fdb *d, uint64_t now)
{
    return !d->stopped && (!fenced(f, d) || (d->seen && d->confirmed && now < f->until_ns));
}

/* Logs a change of whether d takes commits (databases of the etcd directory only: a file
 * directory has no epochs). why: of a stop. */
static void say(store_fence *f, fdb *d, int taking, const char *why)
{
    if (taking == d->taking) return;
    d->taking = taking;
    if (d->epoch <= 0) return;
    if (taking)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", d->name}),
                    "database %s: taking commits at epoch %lld on server %s", d->name,
                    (long long)d->epoch, f->server);
    else
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", d->name}),
                    "database %s: stopped taking commits at epoch %lld: %s", d->name,
                    (long long)d->epoch, why);
}

/* Why d does not take commits now (when it does not). */
static void why_not(const store_fence *f, const fdb *d, uint64_t now, char *out, size_t n)
{
    if (d->stopped)
        snprintf(out, n, "it is being handed off to another server");
    else if (!d->seen)
        snprintf(out, n, "no renewal of the fencing lease since its mount");
    else if (!d->confirmed)
        snprintf(out, n,
                 "ombra-repld's last renewal did not confirm it (the DAG deposes it here, or names "
                 "another server or epoch)");
    else
        snprintf(out, n,
                 "its fencing lease lapsed (ombra-repld renewed it last %.3f s ago, valid "
                 "until %.3f s ago)",
                 (double)(now - f->renewed_ns) / 1e9, (double)(now - f->until_ns) / 1e9);
}

static void reassess(store_fence *f, fdb *d, uint64_t now)
{
    char why[200] = "";
    int t = may_commit(f, d, now);
    if (!t) why_not(f, d, now, why, sizeof why);
    say(f, d, t, why);
}

static void reassess_all(store_fence *f)
{
    uint64_t now = om_mono_ns();
    for (size_t i = 0; i < f->n; i++)
        reassess(f, f->d[i], now);
}

static int wait_until(store_fence *f, uint64_t mono_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(mono_ns / 1000000000ull),
                          .tv_nsec = (long)(mono_ns % 1000000000ull)};
    return pthread_cond_timedwait(&f->cond, &f->mu, &ts);
}

/* Wakes at the deadline, so that the line saying a database stopped taking commits is written
 * when it stops, not when the next request happens to look. */
static void *watch(void *arg)
{
    store_fence *f = arg;
    pthread_mutex_lock(&f->mu);
    while (!f->quit) {
        reassess_all(f);
        int ahead = 0;
        for (size_t i = 0; i < f->n; i++)
            ahead |= f->d[i]->taking && fenced(f, f->d[i]);
        if (ahead && f->until_ns > om_mono_ns())
            wait_until(f, f->until_ns);
        else
            pthread_cond_wait(&f->cond, &f->mu);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int store_fence_new(const store_fence_opts *o, store_fence **out)
{
    *out = NULL;
    store_fence *f = calloc(1, sizeof *f);
    if (!f) return om_errf(OM_E_OutOfMemory, "fencing: out of memory");
    snprintf(f->server, sizeof f->server, "%s", o->server ? o->server : "");
    f->armed = o->always;
    f->wait_ms = o->wait_ms ? o->wait_ms : DEFAULT_WAIT_MS;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&f->mu, NULL);
    /* The thread takes no signal: the daemon's own (SIGTERM) go to the thread that waits for
     * them, whenever the fence was made. */
    sigset_t all, was;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &was);
    int rc = pthread_create(&f->watcher, NULL, watch, f);
    pthread_sigmask(SIG_SETMASK, &was, NULL);
    if (rc) {
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->mu);
        free(f);
        return om_errf(OM_E_OutOfMemory, "fencing: starting its thread: %s", strerror(rc));
    }
    *out = f;
    return 0;
}

void store_fence_free(store_fence *f)
{
    if (!f) return;
    pthread_mutex_lock(&f->mu);
    f->quit = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->watcher, NULL);
    for (size_t i = 0; i < f->n; i++)
        free(f->d[i]);
    free(f->d);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void store_fence_renew(store_fence *f, uint32_t valid_ms)
{
    store_fence_renew_some(f, valid_ms, NULL, 0, 1);
}

void store_fence_renew_some(store_fence *f, uint32_t valid_ms, const char *const *names, size_t n,
                            int all)
{
    pthread_mutex_lock(&f->mu);
    uint64_t now = om_mono_ns(), until = now + (uint64_t)valid_ms * 1000000ull;
    if (f->armed && f->until_ns <= now) f->lapses++;
    if (until > f->until_ns) f->until_ns = until;
    f->renewed_ns = now;
    f->armed = 1;
    for (size_t i = 0; i < f->n; i++) {
        fdb *d = f->d[i];
        int c = all;
        for (size_t j = 0; !c && j < n; j++)
            c = !strcmp(names[j], d->name);
        if (d->confirmed && !c) d->dlapses++; /* commits in flight are not acknowledged */
        d->confirmed = c;
        d->seen = 1;
    }
    reassess_all(f);
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

int store_fence_armed(store_fence *f)
{
    pthread_mutex_lock(&f->mu);
    int v = f->armed;
    pthread_mutex_unlock(&f->mu);
    return v;
}

int store_fence_track(store_fence *f, const char *name, int64_t epoch, int replicated)
{
    pthread_mutex_lock(&f->mu);
    int rc = 0;
    fdb *d = find(f, name);
    if (!d) {
        if (f->n == f->cap) {
            size_t nc = f->cap ? f->cap * 2 : 16;
            fdb **nd = realloc(f->d, nc * sizeof *nd);
            if (!nd) rc = om_errf(OM_E_OutOfMemory, "fencing: out of memory");
            if (nd) {
                f->d = nd;
                f->cap = nc;
            }
        }
        if (!rc && !(d = calloc(1, sizeof *d)))
            rc = om_errf(OM_E_OutOfMemory, "fencing: out of memory");
        if (!rc) {
            snprintf(d->name, sizeof d->name, "%s", name);
            f->d[f->n++] = d;
        }
    }
    if (!rc) {
        d->epoch = epoch;
        d->replicated = replicated;
        d->seen = 0;
        d->confirmed = 0;
        d->stopped = 0;
        reassess(f, d, om_mono_ns());
        pthread_cond_broadcast(&f->cond);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void store_fence_update(store_fence *f, const char *name, int64_t epoch, int replicated)
{
    pthread_mutex_lock(&f->mu);
    fdb *d = find(f, name);
    if (d && epoch != d->epoch) {
        char why[120];
        snprintf(why, sizeof why, "the DAG names this server active at epoch %lld now",
                 (long long)epoch);
        say(f, d, 0, why);
        d->epoch = epoch;
    }
    if (d) {
        d->replicated = replicated;
        reassess(f, d, om_mono_ns());
        pthread_cond_broadcast(&f->cond);
    }
    pthread_mutex_unlock(&f->mu);
}

void store_fence_untrack(store_fence *f, const char *name, const char *why)
{
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n; i++) {
        fdb *d = f->d[i];
        if (strcmp(d->name, name)) continue;
        say(f, d, 0, why);
        f->d[i] = f->d[--f->n];
        free(d);
        break;
    }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

int store_fence_taking(store_fence *f, const char *name, int64_t *epoch)
{
    pthread_mutex_lock(&f->mu);
    fdb *d = find(f, name);
    int v = d && may_commit(f, d, om_mono_ns());
    if (epoch) *epoch = d ? d->epoch : 0;
    pthread_mutex_unlock(&f->mu);
    return v;
}

int store_fence_enter(store_fence *f, const char *name, int replicated, store_fence_ticket *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    pthread_mutex_lock(&f->mu);
    uint64_t until = om_mono_ns() + (uint64_t)f->wait_ms * 1000000ull;
    int rc = 0;
    fdb *d;
    for (;;) {
        uint64_t now = om_mono_ns();
        if (!(d = find(f, name))) {
            rc = om_errf(OM_E_DatabaseMoving,
                         "database '%s' was dismounted on server %s while the commit waited. "
                         "HINT: deliver again",
                         name, f->server);
            break;
        }
        if (d->replicated != replicated) {
            d->replicated = replicated;
            reassess(f, d, now);
        }
        if (may_commit(f, d, now)) break;
        if (now >= until) {
            if (d->stopped)
                rc = om_errf(OM_E_DatabaseMoving,
                             "database '%s' is being handed off from server %s to another "
                             "server: nothing was committed. HINT: the database is moving to "
                             "another server; deliver again",
                             name, f->server);
            else
                rc = om_errf(OM_E_ActiveLeaseLapsed,
                             "server %s holds no valid lease on database '%s' (%s; waited %u ms "
                             "for a renewal): nothing was committed. HINT: ombra-repld renews "
                             "it while it reaches the DAG; deliver again",
                             f->server, name,
                             !d->seen ? "not renewed since the database mounted"
                                      : "ombra-repld did not renew it in time",
                             f->wait_ms);
            break;
        }
        wait_until(f, until);
    }
    if (!rc) {
        d->inflight++;
        t->fenced = fenced(f, d);
        t->lapses = f->lapses;
        t->dlapses = d->dlapses;
        t->epoch = d->epoch;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* A commit leaves (mu held). */
static void leave(store_fence *f, fdb *d)
{
    if (d && d->inflight > 0) d->inflight--;
    pthread_cond_broadcast(&f->cond);
}

int store_fence_ack(store_fence *f, store_fence_ticket *t, uint64_t *acked_ns, int64_t *epoch)
{
    pthread_mutex_lock(&f->mu);
    uint64_t now = om_mono_ns();
    fdb *d = find(f, t->name);
    int rc = 0;
    if (t->fenced && (!d || t->lapses != f->lapses || now >= f->until_ns ||
                      t->dlapses != d->dlapses || !d->confirmed))
        rc = om_errf(OM_E_ActiveLeaseLapsed,
                     "the commit is durable in database '%s' on server %s but not acknowledged: "
                     "%s before it was. HINT: deliver again (the message may then be there "
                     "twice)",
                     t->name, f->server,
                     !d ? "the database was dismounted" : "this server's fencing lease lapsed");
    *acked_ns = om_now_ns();
    *epoch = d ? d->epoch : t->epoch;
    leave(f, d);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void store_fence_leave(store_fence *f, store_fence_ticket *t)
{
    pthread_mutex_lock(&f->mu);
    leave(f, find(f, t->name));
    pthread_mutex_unlock(&f->mu);
}

int store_fence_stop(store_fence *f, const char *name, uint32_t timeout_ms, uint64_t *stopped_ns)
{
    pthread_mutex_lock(&f->mu);
    fdb *d = find(f, name);
    int rc = 0;
    if (d && !d->stopped) {
        d->stopped = 1;
        d->stopped_ns = om_now_ns();
        reassess(f, d, om_mono_ns());
    }
    *stopped_ns = d ? d->stopped_ns : om_now_ns();
    uint64_t until = om_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while ((d = find(f, name)) && d->inflight > 0 && !rc)
        if (om_mono_ns() >= until)
            rc = om_errf(OM_E_DatabaseMoving,
                         "handing off database '%s': %d commits in flight did not finish within "
                         "%u ms",
                         name, d->inflight, timeout_ms);
        else
            wait_until(f, until);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void store_fence_resume(store_fence *f, const char *name)
{
    pthread_mutex_lock(&f->mu);
    fdb *d = find(f, name);
    if (d) {
        d->stopped = 0;
        reassess(f, d, om_mono_ns());
    }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
}
