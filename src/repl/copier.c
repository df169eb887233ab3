/* The passive side of replication (copier.h). */
#include "repl/copier.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/hash.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/vfs.h"
#include "check/check.h"
#include "engine/engine.h"
#include "engine/format.h"
#include "engine/log.h"
#include "repl/reseed.h"
#include "repl/resync.h"
#include "repl/wire.h"

/* Seeds from a reseed's --source copy that may fail in a row before the active seeds it. */
#define RP_SOURCE_TRIES 3

struct rp_copier {
    rp_copier_cfg cfg;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, poked;
    rp_copy_status st; /* under mu */
    /* the thread's own */
    char name[80], base[4], active[RP_NAME_MAX + 1], address[300];
    char source[RP_NAME_MAX + 1]; /* the reseed asked is from this server's copy ("": active) */
    char dir[4096], edb[4200], logs[4200]; /* dir: the work folder, copies/<db id> */
    int inplace;                           /* edb and logs are the store's (the record's) */
    uint32_t epoch, since_gen;             /* of active/<id> as last read */
    int since_known;                       /* active/<id> gives since_gen */
    int suspended;
    int trunc_failed; /* the active marked it Failed: it held truncation back too long (floor.h) */
    char trunc_msg[600];
    int64_t reseed_seen, reseed_asked;
    int64_t source_failed_for; /* the reseed whose --source failed source_fails times */
    int source_fails;
    uint32_t replay_lag_s;
    uint32_t closed, current, first; /* what the active said last */
    int no_block;                    /* the active's source does not know log.stream */
    uint32_t sgen, slen;             /* block mode: generation streamed, its stream bytes held */
    uint64_t soff;                   /* ... its file bytes held in <base>.stream */
    uint64_t published_ns;
    char published[1024], published_state[16];
    eng_passive *p;
    char p_edb[4200]; /* the .edb p was opened on */
    char warned[512]; /* the last trouble logged, and when */
    uint64_t warned_ns;
    uint64_t deadline_ns; /* activation: requests to the active end by then (0: none) */
    /* activation (rp_copier_activate), under mu */
    rp_conn *conn; /* the connection to the active in use, so that a request can cut it */
    int act_pending, act_done, act_rc, activated;
    uint32_t act_through, act_timeout_ms;
    int act_stream;
    rp_activate_result act_res;
};

static void close_passive(rp_copier *c);
static uint32_t last_copied(rp_copier *c, uint32_t *first);

/* The wait for an answer of the active: ms, or what is left of an activation's time. */
static int tmo(const rp_copier *c, int ms)
{
    if (!c->deadline_ns) return ms;
    uint64_t now = om_mono_ns();
    uint64_t left = c->deadline_ns > now ? (c->deadline_ns - now) / 1000000 : 0;
    return left < (uint64_t)ms ? (int)(left ? left : 1) : ms;
}

static void set_state(rp_copier *c, const char *state, int rc)
{
    pthread_mutex_lock(&c->mu);
    snprintf(c->st.state, sizeof c->st.state, "%s", state);
    if (rc) {
        char eb[600];
        snprintf(c->st.last_error, sizeof c->st.last_error, "%s", om_err_format(rc, eb, sizeof eb));
    } else if (!strcmp(state, "Healthy")) {
        c->st.last_error[0] = 0; /* a trouble that is over is not shown beside Healthy */
    }
    pthread_mutex_unlock(&c->mu);
}

/* Waits ms or until poked or stopped; 1 when it should stop. */
static int nap(rp_copier *c, uint64_t ms)
{
    struct timespec ts = om_deadline_ms(ms);
    pthread_mutex_lock(&c->mu);
    while (!c->stop && !c->poked)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts)) break;
    c->poked = 0;
    int stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

static int stopping(rp_copier *c)
{
    pthread_mutex_lock(&c->mu);
    int s = c->stop;
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* The copy's records: the database, this server's copy of it, the active server and its
 * address. DatabaseNotFound when this server holds no copy any more. */
static int read_records(rp_copier *c)
{
    json_t *db = NULL, *act = NULL, *srv = NULL;
    char k[160];
    snprintf(k, sizeof k, "databases/%s", c->cfg.db_id);
    int rc = rp_dag_get(c->cfg.dag, k, &db, NULL);
    json_t *mine = db ? json_object_get(json_object_get(db, "copies"), c->cfg.server) : NULL;
    if (!rc && !mine)
        rc = om_errf(OM_E_DatabaseNotFound, "server %s holds no copy of database %s", c->cfg.server,
                     c->cfg.db_id);
    if (!rc) {
        snprintf(c->name, sizeof c->name, "%s", om_json_str_or(db, "name", ""));
        snprintf(c->base, sizeof c->base, "%s", om_json_str_or(db, "base", "E00"));
        c->suspended = json_is_true(json_object_get(mine, "suspended"));
        c->reseed_asked = json_integer_value(json_object_get(mine, "reseed"));
        snprintf(c->source, sizeof c->source, "%s", om_json_str_or(mine, "source", ""));
        c->replay_lag_s = (uint32_t)json_integer_value(json_object_get(mine, "replay_lag"));
        /* Until a reseed (which bumps "reseed") replaces the copy. */
        json_t *tf = json_object_get(mine, "truncation_failed");
        c->trunc_failed =
            tf && json_integer_value(json_object_get(tf, "reseed")) == c->reseed_asked;
        snprintf(c->trunc_msg, sizeof c->trunc_msg, "%s", om_json_str_or(tf, "message", ""));
        /* A deposed active's copy is its store's files, where the record says they are. */
        const char *edb = om_json_str_or(mine, "edb", ""), *logs = om_json_str_or(mine, "logs", "");
        c->inplace = edb[0] == '/' && logs[0] == '/';
        if (c->inplace) {
            snprintf(c->edb, sizeof c->edb, "%s", edb);
            snprintf(c->logs, sizeof c->logs, "%s", logs);
        }
        snprintf(k, sizeof k, "active/%s", c->cfg.db_id);
        rc = rp_dag_get(c->cfg.dag, k, &act, NULL);
    }
    if (!rc) {
        snprintf(c->active, sizeof c->active, "%s", act ? om_json_str_or(act, "server", "") : "");
        /* Epoch 1 (a record written before epochs had since_gen): the stream from its start. */
        json_t *ep = json_object_get(act, "epoch"), *sg = json_object_get(act, "since_gen");
        c->epoch = json_is_integer(ep) && json_integer_value(ep) > 0
                       ? (uint32_t)json_integer_value(ep)
                       : 1;
        c->since_known = json_is_integer(sg) && json_integer_value(sg) >= 0;
        c->since_gen = c->since_known ? (uint32_t)json_integer_value(sg) : 0;
        snprintf(k, sizeof k, "servers/%s", c->active);
        rc = c->active[0] ? rp_dag_get(c->cfg.dag, k, &srv, NULL) : 0;
        snprintf(c->address, sizeof c->address, "%s",
                 srv ? om_json_str_or(srv, "address", "") : "");
    }
    if (!rc && (!c->name[0] || !c->active[0] || !c->address[0]))
        rc = om_errf(OM_E_DatabaseNotFound, "database %s has no active server with an address",
                     c->cfg.db_id);
    if (!rc) {
        /* Keyed by the database's id, never by its name: a server's own database of that
         * name, or another DAG database of that name, is never this copy's folder. */
        snprintf(c->dir, sizeof c->dir, "%s/copies/%s", c->cfg.data_dir, c->cfg.db_id);
        if (!c->inplace) {
            snprintf(c->edb, sizeof c->edb, "%s/%s.edb", c->dir, c->name);
            snprintf(c->logs, sizeof c->logs, "%s/logs", c->dir);
        }
        pthread_mutex_lock(&c->mu); /* for the replica writer (replica_writer.h) */
        snprintf(c->st.name, sizeof c->st.name, "%s", c->name);
        snprintf(c->st.base, sizeof c->st.base, "%s", c->base);
        snprintf(c->st.edb, sizeof c->st.edb, "%s", c->edb);
        snprintf(c->st.logs, sizeof c->st.logs, "%s", c->logs);
        pthread_mutex_unlock(&c->mu);
    }
    json_decref(db);
    json_decref(act);
    json_decref(srv);
    return rc;
}

/* copies/<db id>/<server> when it changed, or every 5 s as a sign of life. */
static void publish(rp_copier *c, int force)
{
    rp_copy_status st;
    rp_copier_status(c, &st);
    uint32_t made = c->current ? c->current - 1 : c->closed;
    json_t *rec = json_pack(
        "{s:s,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:s,s:s}", "state", st.state, "reseed_seen",
        (json_int_t)c->reseed_seen, "active", c->active, "generated",
        (json_int_t)(c->current ? c->current : c->closed), "copied", (json_int_t)st.copied,
        "inspected", (json_int_t)st.inspected, "replayed", (json_int_t)st.replayed, "copy_queue",
        (json_int_t)(made > st.copied ? made - st.copied : 0), "replay_queue",
        (json_int_t)(st.inspected > st.replayed ? st.inspected - st.replayed : 0), "edb", c->edb,
        "logs", c->logs, "last_error", st.last_error);
    json_object_set_new(rec, "mode", json_string(st.block ? "block" : "file"));
    json_object_set_new(rec, "epoch", json_integer((json_int_t)st.epoch));
    json_object_set_new(rec, "streamed_gen", json_integer((json_int_t)st.streamed_gen));
    json_object_set_new(rec, "streamed_bytes", json_integer((json_int_t)st.streamed_bytes));
    json_object_set_new(rec, "streamed_len", json_integer((json_int_t)st.streamed_len));
    char *s = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t now = om_mono_ns();
    /* A change at most twice a second (a copy catching up changes with every generation), a
     * new state at once, and a sign of life every 5 s. */
    int changed = s && strcmp(s, c->published);
    int new_state = strcmp(st.state, c->published_state);
    if (s && (force || (changed && (new_state || now - c->published_ns > 500000000ull)) ||
              now - c->published_ns > 5000000000ull)) {
        char k[200];
        snprintf(k, sizeof k, "copies/%s/%s", c->cfg.db_id, c->cfg.server);
        json_object_set_new(rec, "updated_ns", json_integer((json_int_t)om_now_ns()));
        if (!rp_dag_put(c->cfg.dag, k, rec, 0)) {
            snprintf(c->published, sizeof c->published, "%s", s);
            snprintf(c->published_state, sizeof c->published_state, "%s", st.state);
            c->published_ns = now;
        }
    }
    free(s);
    json_decref(rec);
}

/* The copy's folders as handles opened without following a link: $OMBRA_HOME/copies (the
 * data directory is the administrator's: links on its way are theirs), then <db id> and logs
 * inside it, each of which must be a real directory (InvalidPath for a link: nothing behind a
 * planted link is ever read, written or deleted). */
static int open_dirs(rp_copier *c, om_dir **dir, om_dir **logs)
{
    om_vfs *v = om_vfs_posix();
    om_dir *top = NULL;
    char p[4200];
    *dir = *logs = NULL;
    snprintf(p, sizeof p, "%s/copies", c->cfg.data_dir);
    int rc = om_dir_open(v, NULL, p, OM_D_CREATE, &top);
    if (!rc) rc = om_dir_open(v, top, c->cfg.db_id, OM_D_CREATE, dir);
    /* The store's log folder of a copy in place: a path the store was configured with. */
    if (!rc)
        rc = c->inplace ? om_dir_open(v, NULL, c->logs, 0, logs)
                        : om_dir_open(v, *dir, "logs", OM_D_CREATE, logs);
    om_dir_close(top);
    if (rc) {
        om_dir_close(*dir);
        *dir = NULL;
    }
    return rc;
}

/* The folders made, and what a copier killed between writing and renaming left in them (a
 * half-written seed or generation under its temporary name) removed: only this copier writes
 * there. Once per connection, before anything is written. */
static int mkdirs(rp_copier *c)
{
    om_dir *dir, *logs;
    int rc = open_dirs(c, &dir, &logs);
    if (!rc) rc = om_durable_sweep(dir, NULL, NULL);
    if (!rc) rc = om_durable_sweep(logs, NULL, NULL);
    om_dir_close(logs);
    om_dir_close(dir);
    return rc;
}

typedef struct wipe_arg {
    om_dir *logs;
    const char *base;
    int rc;
} wipe_arg;

static int wipe_one(void *arg, const char *name)
{
    wipe_arg *w = arg;
    uint32_t g;
    char cur[16], chk[16];
    snprintf(cur, sizeof cur, "%s.log", w->base);
    snprintf(chk, sizeof chk, "%s.chk", w->base);
    if (!eng_parse_log_name(name, w->base, &g) && strcmp(name, cur) && strcmp(name, chk)) return 0;
    int rc = om_unlink_at(w->logs, name);
    if (rc && rc != OM_E_FileNotFound && !w->rc) w->rc = rc;
    return 0;
}

/* The copy's files gone (a reseed starts from nothing), through the handles only. Never the
 * store's files of a copy in place (an administrator's): the reseed leaves them first. */
static int wipe(rp_copier *c)
{
    if (c->inplace)
        return om_errf(OM_E_Internal, "the copy of %s is the store's files at %s: not wiped",
                       c->name, c->edb);
    om_dir *dir = NULL, *logs = NULL;
    om_file *held = NULL; /* a store that still has these files mounted keeps them */
    int rc = rp_edb_hold(c->edb, c->dir, &held);
    if (!rc) rc = open_dirs(c, &dir, &logs);
    if (!rc) {
        wipe_arg w = {.logs = logs, .base = c->base};
        rc = om_list_at(logs, wipe_one, &w);
        if (!rc) rc = w.rc;
    }
    char edbname[128];
    snprintf(edbname, sizeof edbname, "%s.edb", c->name);
    if (!rc) {
        rc = om_unlink_at(dir, edbname);
        if (rc == OM_E_FileNotFound) rc = 0;
    }
    char sname[32];
    snprintf(sname, sizeof sname, "%s.stream", c->base);
    if (!rc) {
        rc = om_unlink_at(dir, sname);
        if (rc == OM_E_FileNotFound) rc = 0;
    }
    c->sgen = c->slen = 0;
    c->soff = 0;
    if (!rc) rc = om_dir_sync(logs);
    if (!rc) rc = om_dir_sync(dir);
    om_dir_close(logs);
    om_dir_close(dir);
    om_close(held);
    return rc;
}

/* ---- epochs (resync.h) ---- */

typedef struct reseed_ask {
    const char *server;
    int bump; /* ask a reseed too (else only the store's paths go) */
} reseed_ask;

static int ask_change(void *arg, json_t *rec, int exists)
{
    reseed_ask *a = arg;
    json_t *mine = json_object_get(json_object_get(rec, "copies"), a->server);
    if (!exists || !mine)
        return om_errf(OM_E_DatabaseNotFound, "server %s holds no copy of the database any more",
                       a->server);
    if (a->bump) {
        json_object_set_new(mine, "reseed",
                            json_integer(json_integer_value(json_object_get(mine, "reseed")) + 1));
        json_object_del(mine, "source"); /* from the new active */
    }
    /* The store's files of a deposed active stay where they are, no longer the copy's. */
    json_object_del(mine, "edb");
    json_object_del(mine, "logs");
    json_object_del(mine, "mounted");
    return 0;
}

/* One update of the database's record: this server's copy leaves the store's paths (the next
 * seed goes into copies/<db id>/) and, with bump, asks its own reseed; then the records again. */
static int leave_store_paths(rp_copier *c, int bump)
{
    reseed_ask a = {.server = c->cfg.server, .bump = bump};
    char k[160];
    snprintf(k, sizeof k, "databases/%s", c->cfg.db_id);
    int rc = rp_dag_update(c->cfg.dag, k, ask_change, &a);
    if (!rc && c->inplace)
        om_log_with(
            OM_INFO, OM_FIELDS({"DATABASE", c->name}),
            "copy of %s: the store's files at %s and %s left where they are; the copy goes to "
            "%s",
            c->name, c->edb, c->logs, c->dir);
    if (!rc) rc = read_records(c);
    return rc;
}

/* The resync step before copying from an active of a greater epoch than the one the copy
 * followed (resync.h): its divergent files set aside, its reseed asked when its database
 * already holds changes of them, then the new epoch written. Under the copy lock, the handle
 * closed. */
static int follow_epoch(rp_copier *c)
{
    uint32_t had = 0;
    int rc = rp_epoch_read(c->dir, &had);
    if (rc) return rc;
    if (had == c->epoch || (!had && c->epoch <= 1)) {
        if (!had) rc = rp_epoch_write(c->dir, c->epoch);
        if (!rc) {
            pthread_mutex_lock(&c->mu);
            c->st.epoch = c->epoch;
            pthread_mutex_unlock(&c->mu);
        }
        return rc;
    }
    if (had > c->epoch)
        return om_errf(OM_E_InvalidLogSequence,
                       "active/%s says epoch %u (server %s), older than epoch %u, which this copy "
                       "of %s followed already: nothing is copied from it. HINT: the DAG's records "
                       "went back in time (etcd restored?): check active/%s",
                       c->cfg.db_id, c->epoch, c->active, had, c->name, c->cfg.db_id);
    if (!c->since_known)
        return om_errf(OM_E_InvalidParameter,
                       "active/%s is at epoch %u but says no since_gen: the copy of %s cannot tell "
                       "which of its generations are the new active's",
                       c->cfg.db_id, c->epoch, c->name);
    close_passive(c);
    int lk = -1;
    rc = rp_copy_lock(c->cfg.data_dir, c->cfg.db_id, -1, &c->stop, &lk);
    uint32_t moved = 0, held = 0;
    char where[4400] = "";
    if (!rc)
        rc = rp_set_aside(c->dir, c->logs, c->base, c->edb, c->since_gen, c->epoch, &moved, where,
                          sizeof where);
    c->sgen = c->slen = 0; /* the stream went too */
    c->soff = 0;
    if (!rc && moved)
        om_log_with(
            OM_WARN, OM_FIELDS({"DATABASE", c->name}),
            "copy of %s: the active is now %s at epoch %u from generation %u on: %u files of "
            "the deposed active's set aside in %s (kept, never replayed)",
            c->name, c->active, c->epoch, c->since_gen, moved, where);
    int past = 0;
    struct stat sb;
    if (!rc && !lstat(c->edb, &sb) && rp_edb_past(c->edb, c->since_gen, &past, &held)) {
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", c->name}), "copy of %s: %s (reseeding it)",
                    c->name, om_err_detail());
        past = 1; /* a header that cannot be read cannot say it is before the fork */
    }
    if (!rc && past) {
        int why = om_errf(OM_E_InvalidLogSequence,
                          "the copy of %s diverged from the new active (%s, epoch %u) at "
                          "generation %u: reseeding (its database holds changes through "
                          "generation %u of the deposed active)",
                          c->name, c->active, c->epoch, c->since_gen, held);
        om_warn("%s", om_err_detail());
        set_state(c, "Failed", why);
        publish(c, 1);
        rc = leave_store_paths(c, 1);
    }
    if (!rc) rc = rp_epoch_write(c->dir, c->epoch);
    rp_copy_unlock(lk);
    if (!rc) {
        pthread_mutex_lock(&c->mu);
        c->st.epoch = c->epoch;
        c->st.copied = c->st.inspected = last_copied(c, NULL);
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

/* A generation is installed only while active/<id> names the server and epoch it came from:
 * an answer of a deposed active is never put where the engine reads it. */
static int still_active(rp_copier *c, uint32_t gen)
{
    json_t *act = NULL;
    char k[160];
    snprintf(k, sizeof k, "active/%s", c->cfg.db_id);
    int rc = rp_dag_get(c->cfg.dag, k, &act, NULL);
    if (rc) return rc;
    const char *srv = om_json_str_or(act, "server", "");
    json_int_t ep = json_integer_value(json_object_get(act, "epoch"));
    if (ep <= 0) ep = 1;
    if (strcmp(srv, c->active) || (uint32_t)ep != c->epoch)
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "generation %u of %s from %s (epoch %u) refused: active/%s now names %s at "
                     "epoch %lld",
                     gen, c->name, c->active, c->epoch, c->cfg.db_id, srv[0] ? srv : "no server",
                     (long long)ep);
    json_decref(act);
    return rc;
}

/* The connection to the server whose copy seeds this one (a reseed with --source: reseed.h),
 * checked to be that server by its certificate. */
static int connect_source(rp_copier *c, rp_conn **out)
{
    int rc = rp_connect_server(c->cfg.dag, c->cfg.tls, c->source, 5000, out);
    return rc == OM_E_InvalidParameter
               ? om_errf(rc, "the seed's source server %s is not in the DAG", c->source)
               : rc;
}

/* One generation of a seed from another copy, put in the copy's log folder the durable way
 * (inspected once the .edb is in place). */
static int seed_log(om_dir *ldir, const char *base, uint32_t gen, const void *data, size_t n)
{
    char name[64];
    om_durable d = {0};
    snprintf(name, sizeof name, "%s%08X.log", base, gen);
    int rc = om_durable_begin(ldir, name, &d);
    if (!rc) rc = om_pwrite(d.f, data, n, 0);
    if (!rc)
        rc = om_durable_commit(&d, OM_RENAME_REPLACE);
    else if (d.f)
        om_durable_abort(&d);
    return rc;
}

/* The seed: the active's .edb under a shadow copy (or, for a reseed with a source, another
 * server's passive copy and the generations it needs: reseed.h), written whole as a temporary
 * file, its pages checked, then renamed into place; the generations of a copy's seed are
 * inspected once it is. Under the copy lock: nothing reads this copy for a seed meanwhile. A
 * seed cut short leaves no .edb (the next connection seeds again). */
static int seed(rp_copier *c, rp_conn *conn)
{
    set_state(c, "Seeding", 0);
    publish(c, 1);
    int from_copy =
        c->source[0] && strcmp(c->source, c->active) && c->reseed_asked != c->reseed_seen;
    if (c->source_failed_for != c->reseed_asked) c->source_fails = 0;
    if (from_copy && c->source_fails >= RP_SOURCE_TRIES) {
        /* A --source that keeps failing (its server gone, its copy no longer Healthy) leaves
         * the copy wiped: the active seeds it, as a reseed without --source would. */
        if (c->source_fails++ == RP_SOURCE_TRIES)
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", c->name}),
                        "copy of %s: the seed from %s's copy failed %d times: seeding from the "
                        "active (%s) instead",
                        c->name, c->source, RP_SOURCE_TRIES, c->active);
        from_copy = 0;
    }
    const char *from = from_copy ? c->source : c->active;
    rp_conn *own = NULL;
    int lk = -1;
    int rc = rp_copy_lock(c->cfg.data_dir, c->cfg.db_id, -1, &c->stop, &lk);
    if (!rc) rc = wipe(c);
    if (!rc && from_copy) rc = connect_source(c, &own);
    if (own) conn = own;
    om_dir *dir = NULL, *ldir = NULL;
    om_durable d = {0};
    if (!rc) rc = open_dirs(c, &dir, &ldir);
    char edbname[128];
    snprintf(edbname, sizeof edbname, "%s.edb", c->name);
    if (!rc) rc = om_durable_begin(dir, edbname, &d);
    if (!rc)
        rc = rp_send(conn,
                     json_pack("{s:s,s:s,s:s,s:I}", "op", from_copy ? "seed.copy" : "seed", "db",
                               c->cfg.db_id, "name", c->name, "epoch", (json_int_t)c->epoch),
                     NULL, 0);
    uint64_t size = 0, got = 0;
    uint32_t lo = 0, hi = 0, next = 0;
    int done = 0;
    while (!rc && !done) {
        json_t *h = NULL;
        void *bulk = NULL;
        size_t n = 0;
        rc = rp_recv(conn, &h, &bulk, &n, 120000);
        if (!rc && !json_is_true(json_object_get(h, "ok")))
            rc = om_errf(json_integer_value(json_object_get(h, "error"))
                             ? (int)json_integer_value(json_object_get(h, "error"))
                             : OM_E_Internal,
                         "seeding from %s: %s", from, om_json_str_or(h, "message", "?"));
        const char *op = rc ? "" : om_json_str_or(h, "op", "");
        if (!strcmp(op, "seed.begin")) {
            size = (uint64_t)json_integer_value(json_object_get(h, "size"));
            lo = (uint32_t)json_integer_value(json_object_get(h, "lo"));
            hi = (uint32_t)json_integer_value(json_object_get(h, "hi"));
            next = lo;
        } else if (!strcmp(op, "seed.data")) {
            uint64_t off = (uint64_t)json_integer_value(json_object_get(h, "offset"));
            if (off != got || got + n > size)
                rc = om_errf(OM_E_Internal, "seed data from %s out of order at %llu", from,
                             (unsigned long long)off);
            else
                rc = om_pwrite(d.f, bulk, n, off);
            got += n;
        } else if (from_copy && !strcmp(op, "seed.log")) {
            uint32_t g = (uint32_t)json_integer_value(json_object_get(h, "gen"));
            if (got != size || !next || g != next || g > hi)
                rc = om_errf(OM_E_Internal, "generation %u of the seed from %s out of order", g,
                             from);
            else
                rc = seed_log(ldir, c->base, g, bulk, n);
            next++;
        } else if (!strcmp(op, "seed.end")) {
            done = 1;
            if (got != size || (uint64_t)json_integer_value(json_object_get(h, "size")) != size)
                rc = om_errf(OM_E_Internal, "the seed from %s ended at %llu of %llu bytes", from,
                             (unsigned long long)got, (unsigned long long)size);
            else if (from_copy && lo && hi >= lo && next != hi + 1)
                rc = om_errf(OM_E_Internal, "the seed from %s ended before generation %u of %u..%u",
                             from, next, lo, hi);
        } else if (!rc)
            rc = om_errf(OM_E_Internal, "unexpected '%s' while seeding from %s", op, from);
        free(bulk);
        json_decref(h);
    }
    /* Page by page, before the name is in place. */
    if (!rc) {
        char tmp[4400];
        snprintf(tmp, sizeof tmp, "%s/%s", c->dir, d.tmp);
        rc = om_sync(d.f);
        const char *one[1] = {tmp};
        chk_set *cs = NULL;
        chk_headers hh;
        if (!rc) rc = chk_init(one, 1, NULL, NULL, NULL, &cs);
        if (!rc) rc = chk_check_headers(cs, &hh);
        if (!rc) rc = chk_check_pages(cs, 0, 1, chk_db(cs, 0)->pages, NULL, NULL);
        if (cs) {
            int trc = chk_term(cs);
            if (!rc) rc = trc;
        }
        if (rc) rc = om_err_ctx(rc, "the seed of %s from %s", c->name, from);
    }
    if (!rc)
        rc = om_durable_commit(&d, 0);
    else if (d.f)
        om_durable_abort(&d);
    /* The seed's generations, as each copied one is: this database's, this stream's, whole. */
    for (uint32_t g = lo; !rc && from_copy && g && g <= hi; g++) {
        eng_opts o = {.edb_path = c->edb, .log_dir = c->logs, .base = c->base};
        rc = eng_passive_inspect(&o, g, NULL);
        if (rc) {
            rc = om_err_ctx(rc, "the seed of %s from %s", c->name, from);
            om_err_saved e;
            om_err_save(&e, rc);
            wipe(c); /* not a copy to replay from: seeded again next time */
            rc = om_err_restore(&e);
        }
    }
    om_dir_close(ldir);
    om_dir_close(dir);
    rp_close(own);
    rp_copy_unlock(lk);
    if (rc && from_copy && !c->stop) {
        c->source_failed_for = c->reseed_asked;
        c->source_fails++;
    }
    /* The seed is of the epoch it was asked at (the source checks it). */
    if (!rc) rc = rp_epoch_write(c->dir, c->epoch);
    if (!rc) {
        c->reseed_seen = c->reseed_asked;
        if (from_copy)
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", c->name}),
                        "seeded %s (%s) from the copy on %s: %llu bytes and generations %u..%u; "
                        "going on from the active (%s)",
                        c->name, c->cfg.db_id, from, (unsigned long long)got, lo, hi, c->active);
        else
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", c->name}),
                        "seeded %s (%s) from %s: %llu bytes", c->name, c->cfg.db_id, from,
                        (unsigned long long)got);
    }
    return rc;
}

/* The newest numbered generation in the copy's folder (0: none). */
static uint32_t last_copied(rp_copier *c, uint32_t *first)
{
    uint32_t *gens = NULL, n = 0, hi = 0, lo = 0;
    if (!eng_log_list_gens(om_vfs_posix(), c->logs, c->base, &gens, &n))
        for (uint32_t i = 0; i < n; i++) {
            if (gens[i] > hi) hi = gens[i];
            if (!lo || gens[i] < lo) lo = gens[i];
        }
    free(gens);
    if (first) *first = lo;
    return hi;
}

/* A whole generation's file (fetched, or streamed and checked): written under a temporary
 * name, synced, renamed into the copy's log folder, inspected there. */
static int install(rp_copier *c, uint32_t gen, const void *bulk, size_t n)
{
    int rc = 0;
    om_dir *dir = NULL;
    om_durable d = {0};
    char name[64];
    snprintf(name, sizeof name, "%s%08X.log", c->base, gen);
    om_dir *cdir = NULL;
    if (!rc) rc = still_active(c, gen);
    if (!rc) rc = open_dirs(c, &cdir, &dir);
    om_dir_close(cdir);
    if (!rc) rc = om_durable_begin(dir, name, &d);
    if (!rc) rc = om_pwrite(d.f, bulk, n, 0);
    if (!rc)
        rc = om_durable_commit(&d, OM_RENAME_REPLACE);
    else if (d.f)
        om_durable_abort(&d);
    /* Inspected in place (the engine reads generations by name); one that fails goes again. */
    if (!rc) {
        eng_opts o = {.edb_path = c->edb, .log_dir = c->logs, .base = c->base};
        eng_gen_info gi;
        rc = eng_passive_inspect(&o, gen, &gi);
        if (rc) {
            om_err_saved e;
            om_err_save(&e, rc);
            om_unlink_at(dir, name);
            om_dir_sync(dir);
            rc = om_err_restore(&e);
        }
    }
    om_dir_close(dir);
    if (!rc) {
        pthread_mutex_lock(&c->mu);
        c->st.copied = c->st.inspected = gen;
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

/* One generation fetched whole (log.get) and installed. */
static int fetch(rp_copier *c, rp_conn *conn, uint32_t gen)
{
    json_t *h = NULL;
    void *bulk = NULL;
    size_t n = 0;
    int rc = rp_call(conn,
                     json_pack("{s:s,s:s,s:s,s:I,s:I}", "op", "log.get", "db", c->cfg.db_id, "name",
                               c->name, "gen", (json_int_t)gen, "epoch", (json_int_t)c->epoch),
                     tmo(c, 30000), &h, &bulk, &n);
    if (!rc) rc = install(c, gen, bulk, n);
    free(bulk);
    json_decref(h);
    return rc;
}

/* ---- block mode ---- */

static void stream_status(rp_copier *c)
{
    pthread_mutex_lock(&c->mu);
    c->st.block = !c->no_block;
    c->st.streamed_gen = c->soff ? c->sgen : 0;
    c->st.streamed_bytes = c->soff;
    c->st.streamed_len = c->slen;
    pthread_mutex_unlock(&c->mu);
}

/* The partial file of the generation being streamed: <base>.stream in the copy's folder. */
static void stream_name(const rp_copier *c, char *name, size_t n)
{
    snprintf(name, n, "%s.stream", c->base);
}

/* Reads [0, want) of the partial file into buf (zeros past its end). */
static int stream_read(rp_copier *c, om_dir *dir, uint8_t *buf, uint64_t want, uint64_t *have)
{
    char name[32];
    stream_name(c, name, sizeof name);
    om_file *f = NULL;
    *have = 0;
    memset(buf, 0, want);
    int rc = om_open_at(dir, name, OM_O_RDONLY, &f);
    if (rc == OM_E_FileNotFound) return 0;
    uint64_t size = 0;
    if (!rc) rc = om_fsize(f, &size);
    if (!rc) {
        *have = size < want ? size : want;
        rc = om_pread_full(f, buf, *have, 0);
    }
    om_close(f);
    return rc;
}

/* Starts streaming generation gen: what the partial file already holds of it (a copier that
 * stopped while streaming goes on from its good slots; a file of another generation counts
 * for nothing and is written over). */
static int stream_begin(rp_copier *c, om_dir *dir, uint32_t gen)
{
    uint8_t *buf = malloc(ENG_LOG_SIZE);
    if (!buf) return om_errf(OM_E_OutOfMemory, "stream buffer");
    uint64_t have = 0;
    int rc = stream_read(c, dir, buf, ENG_LOG_SIZE, &have);
    c->sgen = gen;
    c->slen = 0;
    c->soff = rc ? 0 : rp_log_good_end(buf, 0, have - have % ENG_SLOT_SIZE, gen, &c->slen);
    if (c->soff)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", c->name}),
                    "copy of %s: generation %u goes on from %llu bytes streamed before", c->name,
                    gen, (unsigned long long)c->soff);
    free(buf);
    return rc;
}

/* Appends n bytes at the partial file's offset off and syncs them (the name too, when new). */
static int stream_append(rp_copier *c, om_dir *dir, const void *data, size_t n, uint64_t off)
{
    char name[32];
    stream_name(c, name, sizeof name);
    om_file *f = NULL;
    int rc = om_open_at(dir, name, OM_O_CREATE, &f);
    if (!rc) rc = om_pwrite(f, data, n, off);
    if (!rc) rc = om_sync(f);
    om_close(f);
    if (!rc && off == 0) rc = om_dir_sync(dir);
    return rc;
}

/* One log.stream exchange for generation gen (copied + 1): the bytes past what the partial
 * file holds are appended; once gen is closed, the whole is checked against the closed file
 * and installed (or fetched whole when it differs). OM_E_InvalidParameter "unknown request":
 * the source has no block mode. */
static int stream_step(rp_copier *c, rp_conn *conn, uint32_t gen, int timeout_ms)
{
    om_dir *dir = NULL, *ldir = NULL;
    int rc = open_dirs(c, &dir, &ldir);
    om_dir_close(ldir);
    if (!rc && c->sgen != gen) rc = stream_begin(c, dir, gen);
    json_t *r = NULL;
    void *bulk = NULL;
    size_t n = 0;
    if (!rc)
        rc = rp_call(conn,
                     json_pack("{s:s,s:s,s:s,s:I,s:I,s:i,s:I,s:I,s:I}", "op", "log.stream", "db",
                               c->cfg.db_id, "name", c->name, "gen", (json_int_t)gen, "offset",
                               (json_int_t)c->soff, "timeout_ms", timeout_ms, "held_gen",
                               (json_int_t)gen, "held_len", (json_int_t)c->slen, "epoch",
                               (json_int_t)c->epoch),
                     tmo(c, timeout_ms + 30000), &r, &bulk, &n);
    uint64_t off = 0, end = 0;
    if (!rc) {
        c->closed = (uint32_t)json_integer_value(json_object_get(r, "closed_gen"));
        c->current = (uint32_t)json_integer_value(json_object_get(r, "current"));
        c->first = (uint32_t)json_integer_value(json_object_get(r, "first"));
        off = (uint64_t)json_integer_value(json_object_get(r, "offset"));
        end = (uint64_t)json_integer_value(json_object_get(r, "end"));
        if ((uint32_t)json_integer_value(json_object_get(r, "gen")) != gen || off != c->soff ||
            end < off || end > ENG_LOG_SIZE || end - off != n)
            rc = om_errf(OM_E_Internal,
                         "log.stream of generation %u of %s from %s: %zu bytes for [%llu, %llu)",
                         gen, c->name, c->active, n, (unsigned long long)off,
                         (unsigned long long)end);
    }
    if (!rc && json_is_true(json_object_get(r, "closed"))) {
        /* Closed: what was streamed and the rest, checked whole before it goes anywhere. */
        uint8_t *whole = malloc(ENG_LOG_SIZE);
        uint64_t have = 0;
        rc = whole ? stream_read(c, dir, whole, off, &have) : om_errf(OM_E_OutOfMemory, "stream");
        if (!rc && have != off)
            rc = om_errf(OM_E_DiskIO,
                         "the partial copy of generation %u of %s is %llu bytes, not %llu", gen,
                         c->name, (unsigned long long)have, (unsigned long long)off);
        char x[24] = "";
        if (!rc) {
            if (n) memcpy(whole + off, bulk, n); /* a closed answer may bring no byte */
            snprintf(x, sizeof x, "%016llx",
                     (unsigned long long)om_xxh3(whole, ENG_LOG_SIZE, (uint64_t)gen));
        }
        if (!rc && strcmp(x, om_json_str_or(r, "xxh3", ""))) {
            char gs[12];
            snprintf(gs, sizeof gs, "%u", gen);
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", c->name}, {"GENERATION", gs}),
                        "copy of %s: the %llu bytes of generation %u streamed from %s differ from "
                        "the closed generation (damaged in transit, or written again by the active "
                        "after a crash): fetching it whole",
                        c->name, (unsigned long long)off, gen, c->active);
            rc = fetch(c, conn, gen);
        } else if (!rc) {
            rc = install(c, gen, whole, ENG_LOG_SIZE);
        }
        free(whole);
        if (!rc) {
            char name[32];
            stream_name(c, name, sizeof name);
            om_unlink_at(dir, name); /* a leftover is only written over: no sync needed */
            c->sgen = c->slen = 0;
            c->soff = 0;
        }
    } else if (!rc && n) {
        rc = stream_append(c, dir, bulk, n, off);
        if (!rc) {
            c->soff = end;
            c->slen = (uint32_t)json_integer_value(json_object_get(r, "len"));
        }
    }
    stream_status(c);
    om_dir_close(dir);
    free(bulk);
    json_decref(r);
    return rc;
}

/* Replays the inspected generations older than the lag. */
static int replay(rp_copier *c)
{
    uint32_t upto = c->st.inspected;
    if (c->replay_lag_s) {
        time_t cutoff = time(NULL) - (time_t)c->replay_lag_s;
        while (upto) {
            char p[4300];
            struct stat sb;
            eng_log_path(p, sizeof p, c->logs, c->base, upto);
            if (!stat(p, &sb) && sb.st_mtime <= cutoff) break;
            upto--;
        }
    }
    if (!upto) return 0;
    /* A seed of another server's copy is being read from this one (reseed.h): replay waits,
     * the generations stay queued. */
    int lk = -1;
    if (rp_copy_lock(c->cfg.data_dir, c->cfg.db_id, 0, NULL, &lk)) return 0;
    eng_passive_state ps;
    int rc = eng_passive_replay(c->p, upto, &ps);
    pthread_mutex_lock(&c->mu);
    c->st.replayed = ps.last_replayed;
    pthread_mutex_unlock(&c->mu);
    /* The copy's own truncation follows the active's: a generation the active no longer holds
     * (its backups or circular logging let it go) and that the copy's checkpoint has passed is
     * not needed here either. Only files whose header says they are that generation of this
     * stream are deleted. */
    uint32_t below = c->first < ps.checkpoint.gen ? c->first : ps.checkpoint.gen;
    if (!rc && below > 1) {
        uint32_t deleted = 0;
        if (eng_log_delete_below(om_vfs_posix(), c->logs, c->base, below, &ps.log_sig, &deleted))
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", c->name}),
                        "copy of %s: deleting generations below %u: %s", c->name, below,
                        om_err_detail());
        else if (deleted)
            om_debug("copy of %s: %u generations below %u deleted", c->name, deleted, below);
    }
    rp_copy_unlock(lk);
    return rc;
}

static int open_passive(rp_copier *c)
{
    eng_opts o = {.edb_path = c->edb, .log_dir = c->logs, .base = c->base};
    eng_passive_state ps;
    int lk = -1;
    int rc = rp_copy_lock(c->cfg.data_dir, c->cfg.db_id, -1, &c->stop, &lk);
    if (!rc) rc = eng_passive_open(&o, &c->p);
    if (!rc) snprintf(c->p_edb, sizeof c->p_edb, "%s", c->edb);
    if (!rc) rc = eng_passive_replay(c->p, 0, &ps);
    rp_copy_unlock(lk);
    if (!rc) {
        /* A fresh seed holds no log yet: the copy starts at the generation it needs. */
        uint32_t hi = last_copied(c, NULL);
        if (ps.next_gen && hi < ps.next_gen - 1) hi = ps.next_gen - 1;
        pthread_mutex_lock(&c->mu);
        c->st.copied = c->st.inspected = hi;
        c->st.replayed = ps.last_replayed;
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

static void close_passive(rp_copier *c)
{
    if (c->p) eng_passive_close(c->p);
    c->p = NULL;
}

/* An error that copying again does not cure: the copy is Failed (it retries all the same,
 * slowly: a full disk may get space back). Anything else is the connection's: Disconnected. */
static int copy_failed(int rc)
{
    switch (rc) {
    case OM_E_MissingLogFile:
    case OM_E_LogFileCorrupt:
    case OM_E_InvalidLogSequence:
    case OM_E_BadLogSignature:
    case OM_E_DatabaseLogSetMismatch:
    case OM_E_LogGenerationMismatch:
    case OM_E_RequiredLogFilesMissing:
    case OM_E_LogFileSizeMismatch:
    case OM_E_DiskFull:
    case OM_E_LogDiskFull:
    case OM_E_ReadVerifyFailure:
    case OM_E_ReadPgnoVerifyFailure:
    case OM_E_DbTimeTooNew:
    case OM_E_InvalidDatabase:
    case OM_E_DatabaseCorrupted:
    case OM_E_CheckpointCorrupt:
    case OM_E_CommittedLogFileCorrupt:
    case OM_E_RestoreInProgress:
    case OM_E_InvalidPath:
        return 1;
    default:
        return 0;
    }
}

/* Connected and seeded: copies and replays until the records change, the connection fails or
 * the copy cannot go on. */
static int run_copy(rp_copier *c, rp_conn *conn)
{
    /* quick: the last round streamed, so the next one asks without waiting (else a database
     * with nothing to stream, e.g. dismounted, would be asked in a loop). */
    int rc = 0, damaged = 0, need_wait = 1, quick = 1;
    set_state(c, "Healthy", 0);
    stream_status(c);
    publish(c, 1); /* connected: no longer Suspended, Disconnected or Seeding */
    while (!rc && !stopping(c)) {
        pthread_mutex_lock(&c->mu);
        int poked = c->poked, act = c->act_pending;
        c->poked = 0;
        pthread_mutex_unlock(&c->mu);
        if (act) return 0; /* activation: copier_main does it */
        if (poked) {       /* the records changed: go on unless they say otherwise */
            char active[sizeof c->active], edb[sizeof c->edb];
            uint32_t epoch = c->epoch;
            snprintf(active, sizeof active, "%s", c->active);
            snprintf(edb, sizeof edb, "%s", c->edb);
            if ((rc = read_records(c))) break;
            if (c->suspended || c->trunc_failed || c->reseed_asked != c->reseed_seen ||
                strcmp(active, c->active) || epoch != c->epoch || strcmp(edb, c->edb))
                return 0;
        }
        /* Block mode asks what is closed only when the last stream answer did not say. */
        if (need_wait) {
            json_t *r = NULL;
            rc =
                rp_call(conn,
                        json_pack("{s:s,s:s,s:s,s:I,s:i,s:I}", "op", "log.wait", "db", c->cfg.db_id,
                                  "name", c->name, "after", (json_int_t)c->st.copied, "timeout_ms",
                                  c->no_block || !quick ? 2000 : 0, "epoch", (json_int_t)c->epoch),
                        30000, &r, NULL, NULL);
            if (rc) break;
            c->closed = (uint32_t)json_integer_value(json_object_get(r, "closed"));
            c->current = (uint32_t)json_integer_value(json_object_get(r, "current"));
            c->first = (uint32_t)json_integer_value(json_object_get(r, "first"));
            json_decref(r);
        }
        need_wait = 1;
        quick = 0;
        uint32_t first = c->first;
        om_debug("copy of %s: closed %u, current %u, first %u, copied %u", c->name, c->closed,
                 c->current, first, c->st.copied);
        if (c->st.copied + 1 < first && c->closed > c->st.copied) {
            /* Behind what the active holds (an active that was a copy seeded later than this
             * one's last generation, or truncation while it was away): its history is a part of
             * the active's, nothing of its own to lose (divergent files were set aside at the
             * change of epoch), so it reseeds itself rather than waiting for an administrator. */
            rc = om_errf(OM_E_MissingLogFile,
                         "the active (%s) no longer holds generation %u of %s (its oldest is %u): "
                         "reseeding the copy",
                         c->active, c->st.copied + 1, c->name, first);
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", c->name}), "copy of %s: %s", c->name,
                        om_err_detail());
            set_state(c, "Failed", rc);
            publish(c, 1);
            return leave_store_paths(c, 1);
        }
        for (uint32_t g = c->st.copied + 1; !rc && g <= c->closed && !stopping(c); g++) {
            /* A generation streamed in part is completed (and checked) rather than fetched. */
            rc = !c->no_block && c->sgen == g && c->soff ? stream_step(c, conn, g, 0)
                                                         : fetch(c, conn, g);
            if (rc == OM_E_LogFileCorrupt && damaged++ < 3) { /* damaged in transit: again */
                char gs[12];
                snprintf(gs, sizeof gs, "%u", g);
                om_log_with(OM_WARN, OM_FIELDS({"DATABASE", c->name}, {"GENERATION", gs}),
                            "generation %u of %s from %s was damaged in transit: fetching it again "
                            "(%s)",
                            g, c->name, c->active, om_err_detail());
                rc = 0;
                g--;
                continue;
            }
            if (!rc) {
                damaged = 0;
                publish(c, 0); /* the queue as it shrinks */
            }
        }
        if (!rc) rc = replay(c);
        if (rc && copy_failed(rc)) {
            set_state(c, "Failed", rc);
            publish(c, 1);
            return rc;
        }
        if (!rc) {
            set_state(c, "Healthy", 0);
            publish(c, 0);
        }
        /* Caught up with the closed generations: the open one streams as it grows (a long
         * poll, answered as soon as the active writes). */
        if (!rc && !c->no_block && c->current && c->current == c->st.copied + 1 && !stopping(c)) {
            rc = stream_step(c, conn, c->current, 2000);
            if (rc == OM_E_InvalidParameter && strstr(om_err_detail(), "unknown request")) {
                om_log_with(OM_INFO, OM_FIELDS({"DATABASE", c->name}),
                            "copy of %s: %s has no block mode: copying closed generations only",
                            c->name, c->active);
                c->no_block = 1;
                stream_status(c);
                rc = 0;
            } else if (!rc) {
                need_wait = 0;
                quick = 1;
                publish(c, 0);
            }
        }
    }
    return rc;
}

/* ---- activation (copier.h) ---- */

static int act_pending(rp_copier *c)
{
    pthread_mutex_lock(&c->mu);
    int p = c->act_pending;
    pthread_mutex_unlock(&c->mu);
    return p;
}

/* The connection in use, where rp_copier_activate can cut it. */
static void set_conn(rp_copier *c, rp_conn *conn)
{
    pthread_mutex_lock(&c->mu);
    c->conn = conn;
    pthread_mutex_unlock(&c->mu);
}

/* Step 1: what the active still gives, until the deadline; no error (a lost active is what a
 * failover is about): the copy goes on with what it holds. */
static void act_copy(rp_copier *c, uint32_t through, int use_stream)
{
    if (!strcmp(c->active, c->cfg.server) || tmo(c, 5000) <= 1) return;
    rp_conn *conn = NULL;
    int rc = rp_connect(c->cfg.tls, c->address, c->active, tmo(c, 5000), &conn);
    for (int progress = 1; !rc && progress && tmo(c, 2) > 1;) {
        progress = 0;
        json_t *r = NULL;
        rc = rp_call(conn,
                     json_pack("{s:s,s:s,s:s,s:I,s:i,s:I}", "op", "log.wait", "db", c->cfg.db_id,
                               "name", c->name, "after", (json_int_t)c->st.copied, "timeout_ms", 0,
                               "epoch", (json_int_t)c->epoch),
                     tmo(c, 30000), &r, NULL, NULL);
        if (rc) break;
        c->closed = (uint32_t)json_integer_value(json_object_get(r, "closed"));
        c->current = (uint32_t)json_integer_value(json_object_get(r, "current"));
        json_decref(r);
        uint32_t upto = through && through < c->closed ? through : c->closed;
        for (uint32_t g = c->st.copied + 1; !rc && g <= upto && tmo(c, 2) > 1; g++) {
            rc = !c->no_block && c->sgen == g && c->soff ? stream_step(c, conn, g, 0)
                                                         : fetch(c, conn, g);
            progress = !rc;
        }
        /* The open generation as it is now: the acknowledged commits of a synchronous copy are
         * in it (the stream has them already; the active may hold a little more). */
        if (!rc && use_stream && !through && !c->no_block && c->current &&
            c->current == c->st.copied + 1 && tmo(c, 2) > 1) {
            uint64_t had = c->soff;
            uint32_t copied = c->st.copied;
            rc = stream_step(c, conn, c->current, 0);
            progress = !rc && (c->soff > had || c->st.copied > copied);
        }
    }
    if (rc)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", c->name}),
                    "activating the copy of %s: the active (%s) gave what it could: %s", c->name,
                    c->active, om_err_detail());
    rp_close(conn);
}

/* Steps 1 to 4 of rp_copier_activate, in the copier's thread (its connection, handle and stream
 * are its own). */
static int activate(rp_copier *c, uint32_t through, int use_stream, uint32_t timeout_ms,
                    rp_activate_result *r)
{
    int rc = read_records(c);
    if (!rc && !strcmp(c->active, c->cfg.server))
        rc = om_errf(OM_E_InvalidParameter, "the copy of %s on %s is the active one already",
                     c->name, c->cfg.server);
    if (!rc && c->suspended)
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "the copy of %s on %s is suspended: not activated. HINT: ombra db copy "
                     "resume %s --server %s",
                     c->name, c->cfg.server, c->name, c->cfg.server);
    if (!rc && (c->reseed_asked != c->reseed_seen || c->trunc_failed))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "the copy of %s on %s waits for a reseed: it cannot be activated", c->name,
                     c->cfg.server);
    if (!rc) rc = mkdirs(c);
    if (!rc) rc = follow_epoch(c); /* a copy of an older epoch resyncs first */
    if (!rc && c->reseed_asked != c->reseed_seen)
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "the copy of %s on %s diverged: it is reseeded, "
                     "not activated",
                     c->name, c->cfg.server);
    struct stat sb;
    if (!rc && lstat(c->edb, &sb))
        rc = om_errf(OM_E_FileNotFound,
                     "the copy of %s on %s has no database yet (%s): it is "
                     "being seeded",
                     c->name, c->cfg.server, c->edb);
    if (!rc && c->p && strcmp(c->p_edb, c->edb)) close_passive(c);
    if (!rc && !c->p) rc = open_passive(c);
    if (!rc) {
        c->deadline_ns = om_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
        act_copy(c, through, use_stream);
        c->deadline_ns = 0;
    }
    uint32_t held = rc ? 0 : last_copied(c, NULL);
    if (!rc && through && held < through)
        rc = om_errf(OM_E_MissingLogFile,
                     "the copy of %s on %s holds generations through %u, not through %u: the "
                     "active (%s) did not give the rest within %u ms",
                     c->name, c->cfg.server, held, through, c->active, timeout_ms);
    /* Everything held, whatever the replay lag; a seed of another copy read from this one (the
     * copy lock) finishes first. */
    int lk = -1;
    if (!rc) rc = rp_copy_lock(c->cfg.data_dir, c->cfg.db_id, 60000, &c->stop, &lk);
    eng_passive_state ps;
    if (!rc) rc = eng_passive_replay(c->p, 0, &ps);
    if (!rc) {
        pthread_mutex_lock(&c->mu);
        c->st.replayed = ps.last_replayed;
        pthread_mutex_unlock(&c->mu);
        rc = eng_passive_close(c->p);
        c->p = NULL;
    }
    int stream = !rc && use_stream && c->sgen == held + 1 && c->soff >= ENG_SLOT_SIZE;
    if (stream) rc = rp_stream_promote(c->dir, c->logs, c->base, c->sgen, c->soff);
    rp_copy_unlock(lk);
    if (rc) {
        snprintf(r->error, sizeof r->error, "%s", om_err_detail());
        return rc;
    }
    r->last_gen = held;
    r->lost_from = held + 1;
    r->used_stream = stream;
    om_log_with(
        OM_INFO, OM_FIELDS({"DATABASE", c->name}),
        "copy of %s activated: generations through %u replayed%s; the active (%s, epoch %u) "
        "may have held more from generation %u on",
        c->name, held, stream ? ", the streamed part of the next one made the current log" : "",
        c->active, c->epoch, held + 1);
    return 0;
}

static void *copier_main(void *arg)
{
    rp_copier *c = arg;
    uint64_t backoff = 200;
    int first = 1;
    while (!stopping(c)) {
        if (act_pending(c)) {
            rp_activate_result res = {0};
            pthread_mutex_lock(&c->mu);
            uint32_t through = c->act_through, tm = c->act_timeout_ms;
            int use_stream = c->act_stream;
            pthread_mutex_unlock(&c->mu);
            int rc = activate(c, through, use_stream, tm, &res);
            pthread_mutex_lock(&c->mu);
            c->act_res = res;
            c->act_rc = rc;
            c->act_pending = 0;
            c->act_done = 1;
            c->activated = rc == 0;
            c->st.activated = rc == 0;
            pthread_cond_broadcast(&c->cv);
            pthread_mutex_unlock(&c->mu);
            if (!rc) publish(c, 1);
            continue;
        }
        if (c->activated) { /* the store mounts it next: nothing more to copy */
            if (nap(c, 5000)) break;
            continue;
        }
        int rc = read_records(c);
        if (!rc && first) { /* which reseed the copy on disk answers (none asked: the last) */
            json_t *mine = NULL;
            char k[200];
            snprintf(k, sizeof k, "copies/%s/%s", c->cfg.db_id, c->cfg.server);
            rc = rp_dag_get(c->cfg.dag, k, &mine, NULL);
            json_t *seen = json_object_get(mine, "reseed_seen");
            c->reseed_seen = json_is_integer(seen) ? json_integer_value(seen) : c->reseed_asked;
            json_decref(mine);
            if (!rc) first = 0;
        }
        if (rc == OM_E_DatabaseNotFound) {
            set_state(c, "Removed", 0);
            if (nap(c, 2000)) break;
            continue;
        }
        if (rc) {
            set_state(c, "Disconnected", rc);
            if (nap(c, backoff)) break;
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        if (c->trunc_failed) {
            close_passive(c);
            set_state(c, "Failed", om_errf(OM_E_MissingLogFile, "%s", c->trunc_msg));
            publish(c, 0);
            if (nap(c, 2000)) break;
            continue;
        }
        if (c->suspended) {
            close_passive(c);
            set_state(c, "Suspended", 0);
            publish(c, 0);
            if (nap(c, 2000)) break;
            continue;
        }
        /* A handle on files the copy no longer is (it left the store's paths). */
        if (c->p && strcmp(c->p_edb, c->edb)) close_passive(c);
        rp_conn *conn = NULL;
        rc = mkdirs(c);
        if (!rc) rc = follow_epoch(c);
        if (!rc && act_pending(c)) continue;
        if (!rc) rc = rp_connect(c->cfg.tls, c->address, c->active, 5000, &conn);
        if (rc) {
            set_state(c, copy_failed(rc) ? "Failed" : "Disconnected", rc);
            publish(c, 0);
            if (nap(c, backoff)) break;
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        set_conn(c, conn);
        struct stat sb;
        int need_seed = lstat(c->edb, &sb) != 0 || c->reseed_asked != c->reseed_seen;
        if (need_seed && !act_pending(c)) {
            if (c->reseed_asked != c->reseed_seen)
                om_log_with(OM_INFO, OM_FIELDS({"DATABASE", c->name}),
                            "copy of %s: a reseed was asked (%lld, the copy answers %lld)", c->name,
                            (long long)c->reseed_asked, (long long)c->reseed_seen);
            else
                om_log_with(OM_INFO, OM_FIELDS({"DATABASE", c->name}),
                            "copy of %s: no database file at %s: seeding", c->name, c->edb);
            close_passive(c);
            /* Never into the store's files: the copy leaves them first. */
            rc = c->inplace ? leave_store_paths(c, 0) : 0;
            if (!rc) rc = seed(c, conn);
        }
        if (!rc && !c->p && !act_pending(c)) {
            set_state(c, "Initializing", 0);
            rc = open_passive(c);
        }
        uint32_t before = c->st.copied + c->st.replayed;
        if (!rc && !act_pending(c)) rc = run_copy(c, conn);
        set_conn(c, NULL);
        rp_close(conn);
        if (c->st.copied + c->st.replayed != before) backoff = 200; /* it got somewhere */
        if (rc && act_pending(c)) continue; /* cut for an activation: no trouble of the copy's */
        if (rc) {
            set_state(c, copy_failed(rc) ? "Failed" : "Disconnected", rc);
            /* One line per new trouble (and one a minute while it lasts), not one per retry. */
            uint64_t now = om_mono_ns();
            if (strcmp(c->warned, om_err_detail()) || now - c->warned_ns > 60000000000ull) {
                om_log_with(OM_WARN, OM_FIELDS({"DATABASE", c->name}), "copy of %s from %s: %s",
                            c->name, c->active, om_err_detail());
                snprintf(c->warned, sizeof c->warned, "%s", om_err_detail());
                c->warned_ns = now;
            }
            close_passive(c);
            publish(c, 1);
            if (nap(c, backoff)) break;
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
        }
    }
    close_passive(c);
    pthread_mutex_lock(&c->mu);
    if (c->act_pending) { /* stopped first */
        c->act_rc = om_errf(OM_E_DatabaseUnavailable, "the copier of %s stopped", c->cfg.db_id);
        snprintf(c->act_res.error, sizeof c->act_res.error, "%s", om_err_detail());
        c->act_pending = 0;
        c->act_done = 1;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int rp_copier_start(const rp_copier_cfg *cfg, rp_copier **out)
{
    rp_copier *c = calloc(1, sizeof *c);
    if (!c) return om_errf(OM_E_OutOfMemory, "copier");
    c->cfg = *cfg;
    c->reseed_seen = -1;
    snprintf(c->st.state, sizeof c->st.state, "Initializing");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->th, NULL, copier_main, c)) {
        free(c);
        return om_errf(OM_E_OutOfMemory, "copier thread");
    }
    *out = c;
    return 0;
}

void rp_copier_poke(rp_copier *c)
{
    pthread_mutex_lock(&c->mu);
    c->poked = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void rp_copier_stop(rp_copier *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->th, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

void rp_copier_status(rp_copier *c, rp_copy_status *st)
{
    pthread_mutex_lock(&c->mu);
    *st = c->st;
    /* The active's generation as the last log answer said (the copier thread's; a word). */
    st->generated = __atomic_load_n(&c->current, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->mu);
}

const char *rp_copier_db(const rp_copier *c)
{
    return c->cfg.db_id;
}

int rp_copier_activate(rp_copier *c, uint32_t through_gen, int use_stream, uint32_t timeout_ms,
                       rp_activate_result *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_lock(&c->mu);
    if (c->activated || c->act_pending) {
        pthread_mutex_unlock(&c->mu);
        int rc = om_errf(OM_E_InvalidParameter, "the copy of %s is %s already", c->cfg.db_id,
                         c->activated ? "activated" : "being activated");
        snprintf(r->error, sizeof r->error, "%s", om_err_detail());
        return rc;
    }
    c->act_through = through_gen;
    c->act_stream = use_stream;
    c->act_timeout_ms = timeout_ms;
    c->act_pending = 1;
    c->act_done = 0;
    c->poked = 1;
    /* A long poll (or a dead active's silence) would hold the copier up to its timeout. */
    if (c->conn) rp_conn_shutdown(c->conn);
    pthread_cond_broadcast(&c->cv);
    while (!c->act_done)
        pthread_cond_wait(&c->cv, &c->mu);
    *r = c->act_res;
    int rc = c->act_rc;
    pthread_mutex_unlock(&c->mu);
    /* The detail was the copier thread's. */
    return rc ? om_errf(rc, "%s", r->error) : 0;
}
