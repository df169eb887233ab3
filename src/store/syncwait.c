/* Synchronous copies: the copies' positions and the committers' wait (syncwait.h). */
#include "store/syncwait.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/time.h"

typedef struct copy_pos {
    char db[40], server[128];
    eng_lgpos pos;
} copy_pos;

typedef struct wanted {
    char db[40];
    uint32_t n;
} wanted;

struct store_syncwait {
    wanted *want;
    size_t nwant;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a position changed */
    copy_pos *v;
    size_t n, cap;
};

static int at_or_past(eng_lgpos have, eng_lgpos want)
{
    return have.gen > want.gen || (have.gen == want.gen && have.off >= want.off);
}

int store_syncwait_new(store_syncwait **out)
{
    store_syncwait *w = calloc(1, sizeof *w);
    if (!w) return om_errf(OM_E_OutOfMemory, "sync wait");
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = w;
    return 0;
}

void store_syncwait_free(store_syncwait *w)
{
    if (!w) return;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->v);
    free(w->want);
    free(w);
}

int store_syncwait_report(store_syncwait *w, const char *db_id, const char *server, eng_lgpos pos)
{
    if (strlen(db_id) >= sizeof w->v->db || strlen(server) >= sizeof w->v->server || !*server)
        return om_errf(OM_E_InvalidParameter, "sync position of copy '%s' of database %s", server,
                       db_id);
    pthread_mutex_lock(&w->mu);
    size_t i = 0;
    while (i < w->n && (strcmp(w->v[i].db, db_id) || strcmp(w->v[i].server, server)))
        i++;
    if (i == w->n && w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 8;
        copy_pos *v = realloc(w->v, nc * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&w->mu);
            return om_errf(OM_E_OutOfMemory, "sync positions");
        }
        w->v = v;
        w->cap = nc;
    }
    if (i == w->n) {
        snprintf(w->v[i].db, sizeof w->v[i].db, "%s", db_id);
        snprintf(w->v[i].server, sizeof w->v[i].server, "%s", server);
        w->n++;
    }
    w->v[i].pos = pos;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

void store_syncwait_set_wanted(store_syncwait *w, const char *db_id, uint32_t n)
{
    pthread_mutex_lock(&w->mu);
    size_t i = 0;
    while (i < w->nwant && strcmp(w->want[i].db, db_id))
        i++;
    if (i == w->nwant) {
        wanted *v = realloc(w->want, (w->nwant + 1) * sizeof *v);
        if (v) {
            w->want = v;
            snprintf(v[i].db, sizeof v[i].db, "%s", db_id);
            w->nwant++;
        }
    }
    if (i < w->nwant) w->want[i].n = n;
    pthread_mutex_unlock(&w->mu);
}

uint32_t store_syncwait_wanted(store_syncwait *w, const char *db_id)
{
    uint32_t n = 0;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->nwant; i++)
        if (!strcmp(w->want[i].db, db_id)) n = w->want[i].n;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static int counts(const store_sync_copies *only, const char *server)
{
    if (!only) return 1;
    for (size_t i = 0; i < only->n; i++)
        if (!strcmp(only->servers[i], server)) return 1;
    return 0;
}

static uint32_t count_locked(store_syncwait *w, const char *db_id, const store_sync_copies *only,
                             eng_lgpos pos)
{
    uint32_t k = 0;
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->v[i].db, db_id) && at_or_past(w->v[i].pos, pos) &&
            counts(only, w->v[i].server))
            k++;
    return k;
}

uint32_t store_syncwait_count(store_syncwait *w, const char *db_id, const store_sync_copies *only,
                              eng_lgpos pos)
{
    pthread_mutex_lock(&w->mu);
    uint32_t k = count_locked(w, db_id, only, pos);
    pthread_mutex_unlock(&w->mu);
    return k;
}

int store_syncwait_wait(store_syncwait *w, const char *db_id, const char *name,
                        const store_sync_copies *only, uint32_t n, eng_lgpos pos,
                        uint32_t timeout_ms)
{
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += timeout_ms / 1000;
    end.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    uint32_t k;
    while ((k = count_locked(w, db_id, only, pos)) < n)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &end)) break;
    k = count_locked(w, db_id, only, pos);
    pthread_mutex_unlock(&w->mu);
    if (k >= n) return 0;
    return om_errf(OM_E_SyncCopiesUnavailable,
                   "database %s: %u of the %u synchronous copies hold the commit's log (generation "
                   "%u, offset %u) after %u ms; it is committed on this server but not "
                   "acknowledged. HINT: see 'ombra db copy status %s'; deliver again later (the "
                   "message may then be there twice), or lower --sync-copies",
                   name, k, n, pos.gen, pos.off, timeout_ms, name);
}
