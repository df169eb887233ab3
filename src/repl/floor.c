/* Truncation across copies, the active's side (floor.h). */
#include "repl/floor.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/time.h"
#include "store/client.h"

#define MAX_HOLDS 512

/* A copy seen holding truncation back, since when (om_mono_ns). */
typedef struct hold {
    char db[40], server[RP_NAME_MAX + 1];
    uint64_t since;
    int seen; /* in this round */
} hold;

/* What the store said of a database last round. */
typedef struct dbstate {
    char db[40];
    uint32_t truncate_point, oldest;
    int disk_pct;
    uint32_t published_gen; /* the active's row of copy status, last written */
    uint64_t published_ns;
} dbstate;

struct rp_floor {
    rp_floor_cfg cfg;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, poked;
    /* the thread's own */
    store_client *sc;
    hold holds[MAX_HOLDS];
    int nholds;
    dbstate dbs[MAX_HOLDS];
    int ndbs;
};

/* One passive copy as this round sees it. */
typedef struct copy {
    const char *server;
    int64_t reseed;
    uint32_t need; /* the oldest generation it needs (0: none) */
    int all;       /* being seeded: every generation */
    int timed;     /* not Healthy, or its server down: the hold limit applies */
} copy;

static dbstate *state_of(rp_floor *f, const char *id, int add)
{
    for (int i = 0; i < f->ndbs; i++)
        if (!strcmp(f->dbs[i].db, id)) return &f->dbs[i];
    if (!add || f->ndbs >= MAX_HOLDS) return NULL;
    dbstate *s = &f->dbs[f->ndbs++];
    memset(s, 0, sizeof *s);
    snprintf(s->db, sizeof s->db, "%s", id);
    return s;
}

static hold *hold_of(rp_floor *f, const char *id, const char *server)
{
    for (int i = 0; i < f->nholds; i++)
        if (!strcmp(f->holds[i].db, id) && !strcmp(f->holds[i].server, server)) return &f->holds[i];
    if (f->nholds >= MAX_HOLDS) return NULL;
    hold *h = &f->holds[f->nholds++];
    memset(h, 0, sizeof *h);
    snprintf(h->db, sizeof h->db, "%s", id);
    snprintf(h->server, sizeof h->server, "%s", server);
    return h;
}

/* Forgets the copies not seen holding in this round (they caught up, or went). */
static void holds_sweep(rp_floor *f)
{
    for (int i = 0; i < f->nholds;) {
        if (f->holds[i].seen) {
            f->holds[i++].seen = 0;
            continue;
        }
        f->holds[i] = f->holds[--f->nholds];
    }
}

/* What the copy on server needs; cfg is its entry in databases/<id>, rec its copies/ record. */
static copy copy_of(const char *server, json_t *cfg, json_t *rec, int up)
{
    copy c = {.server = server};
    c.reseed = json_integer_value(json_object_get(cfg, "reseed"));
    json_t *mark = json_object_get(cfg, "truncation_failed");
    if (mark && json_integer_value(json_object_get(mark, "reseed")) == c.reseed) return c;
    if (!rec) return c;
    const char *state = om_json_str_or(rec, "state", "");
    c.timed = strcmp(state, "Healthy") || !up;
    if (!strcmp(state, "Seeding")) {
        c.all = 1;
        c.need = 1;
        return c;
    }
    json_t *seen = json_object_get(rec, "reseed_seen");
    if (json_is_integer(seen) && json_integer_value(seen) != c.reseed) return c; /* reseed due */
    int lagged = json_integer_value(json_object_get(cfg, "replay_lag")) > 0;
    json_int_t g = json_integer_value(json_object_get(rec, lagged ? "inspected" : "replayed"));
    if (g > 0 && g < UINT32_MAX) c.need = (uint32_t)g + 1;
    return c;
}

/* Records in etcd that the copy holds truncation back no longer (floor.h). */
typedef struct mark_arg {
    const char *server, *message;
    int64_t reseed;
    uint32_t gen;
} mark_arg;

static int mark_db(void *arg, json_t *rec, int exists)
{
    mark_arg *m = arg;
    json_t *cfg = json_object_get(json_object_get(rec, "copies"), m->server);
    if (!exists || !cfg || json_integer_value(json_object_get(cfg, "reseed")) != m->reseed)
        return om_errf(OM_E_DatabaseNotFound, "the copy on %s changed meanwhile", m->server);
    json_object_set_new(cfg, "truncation_failed",
                        json_pack("{s:I,s:I,s:s,s:I}", "reseed", (json_int_t)m->reseed, "gen",
                                  (json_int_t)m->gen, "message", m->message, "at_ns",
                                  (json_int_t)om_now_ns()));
    return 0;
}

static int mark_status(void *arg, json_t *rec, int exists)
{
    mark_arg *m = arg;
    (void)exists;
    char eb[1024];
    om_errf(OM_E_MissingLogFile, "%s", m->message);
    json_object_set_new(rec, "state", json_string("Failed"));
    json_object_set_new(rec, "last_error",
                        json_string(om_err_format(OM_E_MissingLogFile, eb, sizeof eb)));
    json_object_set_new(rec, "updated_ns", json_integer((json_int_t)om_now_ns()));
    return 0;
}

static int mark_failed(rp_floor *f, const char *id, const char *name, const copy *c,
                       const char *reason)
{
    char msg[600], k[200];
    snprintf(msg, sizeof msg,
             "the copy held log truncation back on %s (the active) at generation %u %s: it is "
             "Failed and the active no longer keeps its logs. HINT: ombra db copy reseed %s "
             "--server %s",
             f->cfg.server, c->need, reason, name, c->server);
    mark_arg m = {.server = c->server, .message = msg, .reseed = c->reseed, .gen = c->need};
    snprintf(k, sizeof k, "databases/%s", id);
    int rc = rp_dag_update(f->cfg.dag, k, mark_db, &m);
    snprintf(k, sizeof k, "copies/%s/%s", id, c->server);
    if (!rc) rc = rp_dag_update(f->cfg.dag, k, mark_status, &m);
    if (rc)
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}),
                    "copy of %s on %s: could not mark it Failed: %s", name, c->server,
                    om_err_detail());
    else
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}), "copy of %s on %s: %s", name, c->server,
                    msg);
    return rc;
}

/* One database of this server's: its copies, the ones that held too long, the floor. */
static void one_db(rp_floor *f, const char *id, json_t *db, json_t *copies, json_t *alive)
{
    const char *name = om_json_str_or(db, "name", "");
    json_t *cfgs = json_object_get(db, "copies");
    size_t n = json_object_size(cfgs);
    copy *cs = calloc(n ? n : 1, sizeof *cs);
    if (!cs || !name[0]) {
        free(cs);
        return;
    }
    dbstate *st = state_of(f, id, 1);
    json_t *released = json_array();
    uint64_t now = om_mono_ns();
    const char *server;
    json_t *cfg;
    size_t k = 0;
    json_object_foreach(cfgs, server, cfg)
    {
        if (!strcmp(server, f->cfg.server)) continue;
        char key[200];
        snprintf(key, sizeof key, "%s/%s", id, server);
        copy c = copy_of(server, cfg, json_object_get(copies, key),
                         json_object_get(alive, server) != NULL);
        /* A generation the active no longer has: only a reseed helps, holding would not. */
        if (c.need && !c.all && st && st->oldest && c.need < st->oldest) c.need = 0;
        int holding = c.need && st && c.need < st->truncate_point;
        if (c.timed && holding) {
            hold *h = hold_of(f, id, server);
            if (h && !h->since) h->since = now;
            if (h) h->seen = 1;
            char reason[160] = "";
            uint64_t held_s = h ? (now - h->since) / 1000000000ull : 0;
            if (st->disk_pct >= RP_HOLD_DISK_PCT)
                snprintf(reason, sizeof reason, "with the log disk %d%% full (limit %d%%)",
                         st->disk_pct, RP_HOLD_DISK_PCT);
            else if (h && held_s >= f->cfg.hold_limit_s)
                snprintf(reason, sizeof reason, "for %llu s (limit %u s)",
                         (unsigned long long)held_s, f->cfg.hold_limit_s);
            if (reason[0] && !mark_failed(f, id, name, &c, reason)) {
                json_array_append_new(released, json_pack("{s:s,s:I,s:s}", "server", server, "gen",
                                                          (json_int_t)c.need, "reason", reason));
                c.need = 0;
            }
        }
        cs[k++] = c;
    }
    uint32_t floor = 0;
    for (size_t i = 0; i < k; i++)
        if (cs[i].need && (!floor || cs[i].need < floor)) floor = cs[i].need;
    json_t *got = NULL;
    int rc = store_client_db_replication_floor(f->sc, name, id, floor, f->cfg.hold_limit_s,
                                               json_array_size(released) ? released : NULL, &got);
    if (!rc && st) {
        st->truncate_point = (uint32_t)json_integer_value(json_object_get(got, "truncate_point"));
        st->oldest = (uint32_t)json_integer_value(json_object_get(got, "oldest"));
        st->disk_pct = (int)json_integer_value(json_object_get(got, "log_disk_pct"));
        om_debug("floor of %s: %u (truncate point %u, oldest %u, disk %d%%)", name, floor,
                 st->truncate_point, st->oldest, st->disk_pct);
        /* The active's own row of copy status: the generation it writes, so every copy's copy
         * queue can be told from it, even a copy that is suspended or cut off. */
        uint32_t cur = (uint32_t)json_integer_value(json_object_get(got, "current"));
        if (cur != st->published_gen || om_mono_ns() - st->published_ns > 30000000000ull) {
            char rk[200];
            snprintf(rk, sizeof rk, "copies/%s/%s", id, f->cfg.server);
            json_t *row =
                json_pack("{s:s,s:I,s:I,s:I}", "state", "Mounted", "generated", (json_int_t)cur,
                          "oldest", (json_int_t)st->oldest, "updated_ns", (json_int_t)om_now_ns());
            if (!rp_dag_put(f->cfg.dag, rk, row, 0)) {
                st->published_gen = cur;
                st->published_ns = om_mono_ns();
            }
            json_decref(row);
        }
    } else if (rc && rc != OM_E_DatabaseUnavailable)
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}),
                    "the floor of log truncation of %s (%u): %s", name, floor, om_err_detail());
    json_decref(got);
    json_decref(released);
    free(cs);
}

/* A round: every database whose active copy is on this server. While etcd cannot be read no
 * floor is renewed: the store's lapse after the hold limit, as a copy's would. */
static void round_once(rp_floor *f)
{
    json_t *dbs = NULL, *act = NULL, *copies = NULL, *alive = NULL;
    int rc = rp_dag_list(f->cfg.dag, "databases/", &dbs);
    if (!rc) rc = rp_dag_list(f->cfg.dag, "active/", &act);
    if (!rc) rc = rp_dag_list(f->cfg.dag, "copies/", &copies);
    if (!rc) rc = rp_dag_list(f->cfg.dag, "alive/", &alive);
    if (!rc) {
        const char *id;
        json_t *a;
        json_object_foreach(act, id, a)
        {
            json_t *db = json_object_get(dbs, id);
            if (db && !strcmp(om_json_str_or(a, "server", ""), f->cfg.server))
                one_db(f, id, db, copies, alive);
        }
        holds_sweep(f);
    }
    json_decref(dbs);
    json_decref(act);
    json_decref(copies);
    json_decref(alive);
}

static void *floor_main(void *arg)
{
    rp_floor *f = arg;
    for (;;) {
        round_once(f);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ms = f->cfg.period_ms;
        ts.tv_sec += (time_t)(ms / 1000);
        ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&f->mu);
        while (!f->stop && !f->poked)
            if (pthread_cond_timedwait(&f->cv, &f->mu, &ts)) break;
        f->poked = 0;
        int stop = f->stop;
        pthread_mutex_unlock(&f->mu);
        if (stop) break;
    }
    return NULL;
}

int rp_floor_start(const rp_floor_cfg *cfg, rp_floor **out)
{
    rp_floor *f = calloc(1, sizeof *f);
    if (!f) return om_errf(OM_E_OutOfMemory, "truncation floor: out of memory");
    f->cfg = *cfg;
    if (!f->cfg.hold_limit_s) f->cfg.hold_limit_s = RP_HOLD_LIMIT_DEFAULT;
    if (!f->cfg.period_ms) f->cfg.period_ms = 2000;
    int rc = store_client_new(cfg->store_socket, &f->sc);
    if (rc) {
        free(f);
        return rc;
    }
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    if (pthread_create(&f->th, NULL, floor_main, f)) {
        store_client_free(f->sc);
        free(f);
        return om_errf(OM_E_OutOfMemory, "truncation floor: no thread");
    }
    *out = f;
    return 0;
}

void rp_floor_poke(rp_floor *f)
{
    if (!f) return;
    pthread_mutex_lock(&f->mu);
    f->poked = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

void rp_floor_stop(rp_floor *f)
{
    if (!f) return;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->th, NULL);
    store_client_free(f->sc);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}
