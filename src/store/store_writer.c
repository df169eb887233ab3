/* The store's writer (writer.h has the contract). Backup state lives in a table of databases
 * by id, in memory only. Handlers take a reference on a mounted database through the registry
 * (registry.mu) before they take the writer's lock, never the other way round (registry.h has
 * the lock order); the registry tells the writer when a database closes (db_closing). */
#include "store/store_writer.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/proto.h"
#include "base/hash.h"
#include "base/logging.h"
#include "base/pool.h"
#include "base/paths.h"
#include "base/time.h"
#include "base/uuid.h"
#include "engine/format.h"
#include "store/backup_record.h"
#include "store/registry.h"
#include "vss/laid.h"
#include "vss/writer.h"

#define WRITER_CLASS "5d3c0a91-6b2e-4f17-8c4d-0e9a7b1f2c35"
#define WRITER_NAME  "Ombra Store Writer"
#define MAX_WDB      (2 * STORE_MAX_MOUNTED)

typedef struct wdb {
    char id[37], name[STORE_MAX_NAME + 1];
    char session[40]; /* the backup in progress; "" when none */
    char type[16];
    eng_db *db; /* while mounted, from Freeze on */
    int frozen, holding, dismounted;
    int completed; /* BackupComplete came: administrative actions are allowed again */
    eng_lgpos mark, ckpt;
    uint32_t last_gen;
    uint32_t gen_prep; /* the generation being written at PrepareSnapshot */
    uint64_t mark_time;
    uint64_t held_at; /* om_mono_ns() when Freeze held its writes */
    /* BackupComplete recorded the backup; logs below truncate_below may go once the requester
     * says, at BackupShutdown, that it stored the backup (0: nothing to truncate). */
    int recorded;
    uint32_t truncate_below;
} wdb;

/* A target being restored: from PreRestore until its component is done in PostRestore (replayed,
 * retired and mounted when asked), or the session ends (the end of PostRestore, or an Abort: a
 * restore that failed or whose requester died), mounts are refused and so is another restore to
 * it. One per target, as many as there are targets. */
typedef struct wrestore {
    struct wrestore *next;
    char session[40];
    char target[4300]; /* the database's name, or the .edb path of a restore to new paths */
    /* Hard recovery's progress (store_writer_restores): generation gen of first..last replayed
     * last; 0 before the first one is. */
    uint32_t gen, first, last;
    /* The target's .edb as PreRestore found it, when the restore may replace it: held open so
     * that the requester's close of the file it replaced is not the last one. The blocks of a
     * large file take a while to free (seconds on a disk mounted with discard); they are freed
     * when this is closed, on a thread, once the slot goes (unmark_session), not while the
     * requester waits for PostRestore's answer or its own exit. */
    om_file *old_edb;
    /* Its page journal (<base>.pgj) the same way: hard recovery's begin removes its name, and
     * freeing its blocks (a discard each on such a disk) would wait behind the .edb's sync. */
    om_file *old_pgj;
    /* The target's <base>restore.env, open and locked (flock) while the slot is held, so that
     * `ombra dbutil recover` of the folder refuses while this restore is in progress; the one
     * the last PreRestore wrote. */
    om_file *env_lock;
    /* PreRestore let the requester lay the logs unsynced (logs_unsynced): it then also puts the
     * .edb in place before its sync ends, and the replay waits on no sync (laid_unsynced). */
    int unsynced;
} wrestore;

struct store_writer {
    store_registry *reg;
    vss_writer *vw;
    pthread_mutex_t mu;
    wdb dbs[MAX_WDB];
    int stopping;              /* store_writer_stop began: replay waits no longer for logs */
    wrestore *restores;        /* under mu */
    struct retiring *retiring; /* removals of retired restore folders, under mu */
    char instance_id[37], logical[200];
};

/* ---- databases ---- */

/* The directory entry of a database id; NULL when none. Under registry.mu. */
static store_dbent *dir_find_id(store_registry *s, const char *id)
{
    for (size_t i = 0; i < s->dir->n; i++) {
        char sid[37];
        om_uuid_str(&s->dir->ents[i].id, sid);
        if (!strcmp(sid, id)) return &s->dir->ents[i];
    }
    return NULL;
}

/* A reference on the mounted, non-recovery database with that id, and its directory entry. */
static int acquire_by_id(store_writer *w, const char *id, store_mounted **out, store_dbent *ent)
{
    store_registry *s = w->reg;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    store_dbent *e = dir_find_id(s, id);
    store_mounted *m = e ? store_find_mounted(s, e->name) : NULL;
    if (!e)
        rc = om_errf(OM_E_DatabaseNotFound, "no database with id %s on server %s", id, s->server);
    else if (!m || m->closing)
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "database '%s' is not mounted: dismounted databases are not backed up",
                     e->name);
    else if (m->recovery)
        rc = om_errf(OM_E_InvalidParameter, "'%s' is a recovery database: it is never backed up",
                     e->name);
    else {
        m->refs++;
        *out = m;
        *ent = *e;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The table entry of a database id (created when asked). Under w->mu. */
static wdb *wdb_get(store_writer *w, const char *id, int create)
{
    wdb *free_slot = NULL;
    for (int i = 0; i < MAX_WDB; i++) {
        if (!strcmp(w->dbs[i].id, id)) return &w->dbs[i];
        if (!w->dbs[i].id[0] && !free_slot) free_slot = &w->dbs[i];
    }
    if (!create || !free_slot) return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    snprintf(free_slot->id, sizeof free_slot->id, "%s", id);
    return free_slot;
}

static void wdb_forget(wdb *d)
{
    memset(d, 0, sizeof *d);
}

/* The name of the i-th component of an event's "components" (a string, or {"name"}). */
static const char *arg_comp(json_t *comps, size_t i)
{
    json_t *c = json_array_get(comps, i);
    return json_is_string(c) ? json_string_value(c) : json_string_value(json_object_get(c, "name"));
}

/* 1 when a component of comps before the n-th names the database `id` (not its Logs). */
static int named_before(store_writer *w, json_t *comps, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++) {
        const char *comp = arg_comp(comps, i);
        char other[37];
        int is_logs = 0;
        if (comp && vss_comp_split(w->logical, comp, other, &is_logs) && !is_logs &&
            !strcmp(other, id))
            return 1;
    }
    return 0;
}

/* 1 when the i-th component of comps is a database's (not its Logs) named there first: its id
 * in id. Each database of an event is handled once (a second freeze would wait for the first
 * one's hold forever). */
static int db_comp(store_writer *w, json_t *comps, size_t i, char id[37])
{
    const char *comp = arg_comp(comps, i);
    int is_logs = 0;
    return comp && vss_comp_split(w->logical, comp, id, &is_logs) && !is_logs &&
           !named_before(w, comps, i, id);
}

/* Calls fn once for every database component the event names (Logs subcomponents go with their
 * database; a database named twice is handled once: a second freeze would wait for the first
 * one's hold forever), with a reference held; stops at the first failure. */
typedef int (*db_fn)(store_writer *w, vss_event *e, store_mounted *m, const store_dbent *ent,
                     const char *comp);

static int each_db(store_writer *w, vss_event *e, db_fn fn)
{
    json_t *comps = json_object_get(e->args, "components");
    for (size_t i = 0; i < json_array_size(comps); i++) {
        char id[37];
        if (!db_comp(w, comps, i, id)) continue;
        const char *comp = arg_comp(comps, i);
        store_mounted *m = NULL;
        store_dbent ent;
        int rc = acquire_by_id(w, id, &m, &ent);
        if (!rc) {
            rc = fn(w, e, m, &ent, comp);
            store_release(w->reg, m);
        }
        if (rc) return rc;
    }
    return 0;
}

/* ---- Identify ---- */

static int identify(void *ctx, vss_event *e)
{
    store_writer *w = ctx;
    static const char *const types[] = {"full", "copy", "incremental", "differential", NULL};
    vss_writer_info info = {.class_id = WRITER_CLASS,
                            .instance_id = w->instance_id,
                            .name = WRITER_NAME,
                            .can_hold = 1};
    json_t *md = vss_wmd_new(&info, types, "custom");
    store_registry *s = w->reg;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->nm; i++) {
        store_mounted *m = s->m[i];
        store_dbent *ent = store_dir_find(s->dir, m->name);
        if (!ent || m->recovery || m->closing) continue;
        char id[37], d[4096], sub[300], spec[16], chk[4200];
        om_uuid_str(&ent->id, id);
        json_t *c = vss_wmd_add_component(md, w->logical, id, ent->name, 1);
        vss_wmd_add_file(c, ent->edb, NULL, 0, 1);
        om_dirname(ent->edb, d, sizeof d);
        vss_wmd_add_path(c, d);
        snprintf(sub, sizeof sub, "%s\\%s", w->logical, id);
        json_t *l = vss_wmd_add_component(md, sub, "Logs", ent->name, 0);
        snprintf(spec, sizeof spec, "%s????????.log", ent->base);
        vss_wmd_add_file(l, ent->logs, spec, 0, 1); /* finished generations never change */
        eng_chk_path(chk, sizeof chk, ent->logs, ent->base);
        vss_wmd_add_file(l, chk, NULL, 0, 0);
        vss_wmd_add_path(l, ent->logs);
        /* Not needed to recover a shadow copy (no checkpoint is half written at freeze: it
         * runs under the writer role the freeze holds) and up to the cache's size. */
        char ex[16];
        snprintf(ex, sizeof ex, "%s.pgj", ent->base);
        vss_wmd_add_exclude(l, ent->logs, ex);
        snprintf(ex, sizeof ex, "%stmp.log", ent->base);
        vss_wmd_add_exclude(l, ent->logs, ex);
        snprintf(ex, sizeof ex, "%sres*.jrs", ent->base);
        vss_wmd_add_exclude(l, ent->logs, ex);
        snprintf(ex, sizeof ex, "%s.hold", ent->base);
        vss_wmd_add_exclude(l, ent->logs, ex);
        /* Nor is the change map: it describes this .edb, and a restored one would never be
         * trusted (engine/changemap.c); read during the freeze it would only cost time. */
        snprintf(ex, sizeof ex, "%s.cbt", ent->base);
        vss_wmd_add_exclude(l, ent->logs, ex);
        /* Nor the files of a finished restore, retired and being removed (a copy would meet
         * them vanishing). */
        vss_wmd_add_exclude(l, ent->logs, ENG_RETIRED_PREFIX "*/*");
    }
    pthread_mutex_unlock(&s->mu);
    json_object_set_new(e->result, "metadata", md);
    return 0;
}

/* ---- PrepareBackup ---- */

static int prepare_one(store_writer *w, vss_event *e, store_mounted *m, const store_dbent *ent,
                       const char *comp)
{
    const char *type = json_string_value(json_object_get(e->args, "type"));
    if (!type) type = "full";
    eng_info in;
    int rc = eng_db_info(m->db, &in);
    if (rc) return vss_fail_rc(e, VSS_FAIL_RETRYABLE, rc);
    if ((rc = store_backup_allowed(ent->name, ent->circular, &in, type)))
        return vss_fail_rc(e, VSS_FAIL_NON_RETRYABLE, rc);
    char id[37];
    om_uuid_str(&ent->id, id);
    pthread_mutex_lock(&w->mu);
    wdb *d = wdb_get(w, id, 1);
    if (d && d->session[0] && strcmp(d->session, e->session)) {
        rc = om_errf(OM_E_BackupInProgress, "database '%s' is being backed up by session %s",
                     ent->name, d->session);
    } else if (!d) {
        rc = om_errf(OM_E_OutOfMemory, "too many databases in backups at once");
    } else {
        snprintf(d->session, sizeof d->session, "%s", e->session);
        snprintf(d->type, sizeof d->type, "%s", type);
        snprintf(d->name, sizeof d->name, "%s", ent->name);
        d->dismounted = 0;
        d->completed = 0;
    }
    pthread_mutex_unlock(&w->mu);
    (void)comp;
    return rc ? vss_fail_rc(
                    e, rc == OM_E_BackupInProgress ? VSS_FAIL_RETRYABLE : VSS_FAIL_OUT_OF_RESOURCES,
                    rc)
              : 0;
}

/* A database's Logs selected without the database: a backup selects whole databases (spec
 * §5), and nothing would freeze, describe or record such a backup. The coordinator refuses the
 * selection; the writer does not count on it. */
static int logs_alone(store_writer *w, vss_event *e)
{
    json_t *comps = json_object_get(e->args, "components");
    for (size_t i = 0; i < json_array_size(comps); i++) {
        const char *comp = arg_comp(comps, i);
        char id[37], name[STORE_MAX_NAME + 1] = "?";
        int is_logs = 0;
        if (!comp || !vss_comp_split(w->logical, comp, id, &is_logs) || !is_logs ||
            named_before(w, comps, json_array_size(comps), id))
            continue;
        pthread_mutex_lock(&w->reg->mu);
        store_dbent *ent = dir_find_id(w->reg, id);
        if (ent) snprintf(name, sizeof name, "%s", ent->name);
        pthread_mutex_unlock(&w->reg->mu);
        return vss_fail_rc(e, VSS_FAIL_NON_RETRYABLE,
                           om_errf(OM_E_InvalidParameter,
                                   "component '%s' holds the logs of database '%s' only: a backup "
                                   "selects whole databases. HINT: select '%s\\%s' (with ombra "
                                   "backup: name the database)",
                                   comp, name, w->logical, id));
    }
    return 0;
}

static int prepare_backup(void *ctx, vss_event *e)
{
    int rc = logs_alone(ctx, e);
    return rc ? rc : each_db(ctx, e, prepare_one);
}

/* The session's entry of a database, or a failure (the coordinator sent an event for a
 * database this session never prepared, or the store restarted meanwhile). */
static int session_check(store_writer *w, vss_event *e, const store_dbent *ent, wdb **out)
{
    char id[37];
    *out = NULL;
    om_uuid_str(&ent->id, id);
    wdb *d = wdb_get(w, id, 0);
    if (!d || strcmp(d->session, e->session))
        return om_errf(OM_E_WriterErrorNonRetryable,
                       "database '%s' is not in backup session %s (did the store restart?)",
                       ent->name, e->session);
    *out = d;
    return 0;
}

static int session_wdb(store_writer *w, vss_event *e, const store_dbent *ent, wdb **out)
{
    int rc = session_check(w, e, ent, out);
    return rc ? vss_fail(e, VSS_FAIL_NON_RETRYABLE, "%s", om_err_detail()) : 0;
}

/* The databases an event names (as each_db finds them), each with a reference held, so that a
 * step can work on all of them at once (freeze_all). */
typedef struct dbref {
    store_mounted *m;
    store_dbent ent;
    const char *comp;
    wdb *d;
    int rc;
    vss_failure kind; /* of rc, for the event's answer */
    /* Freeze: the mark and roll (phase 1), the hold (phase 2). */
    int hold, again;
    eng_lgpos mark;
    uint32_t last, cur, written;
    eng_info in;
    uint64_t held_at; /* om_mono_ns() when its writes began to be held */
} dbref;

typedef struct dbset {
    store_writer *w;
    vss_event *e;
    dbref *v;
    size_t n;
} dbset;

static void dbset_free(dbset *s)
{
    for (size_t i = 0; i < s->n; i++)
        store_release(s->w->reg, s->v[i].m);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* Every database the event names, with a reference each; the first that cannot be had fails
 * the event (as each_db), unless tolerant: then the others are collected, and that failure is
 * returned in *missing. */
static int dbset_collect(store_writer *w, vss_event *e, int tolerant, int *missing, dbset *out)
{
    json_t *comps = json_object_get(e->args, "components");
    size_t n = json_array_size(comps);
    *out = (dbset){.w = w, .e = e, .v = calloc(n ? n : 1, sizeof(dbref))};
    if (!out->v) return om_errf(OM_E_OutOfMemory, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char id[37];
        if (!db_comp(w, comps, i, id)) continue;
        const char *comp = arg_comp(comps, i);
        dbref *r = &out->v[out->n];
        int rc = acquire_by_id(w, id, &r->m, &r->ent);
        if (rc && tolerant) {
            if (!*missing) *missing = rc;
            continue;
        }
        if (rc) {
            dbset_free(out);
            return rc;
        }
        r->comp = comp;
        out->n++;
    }
    return 0;
}

/* fn over every database of the set at once (a thread each, up to the pool's limit): freezing a
 * hundred databases one after another made the first one wait for all the others' fsyncs. fn
 * returns a plain error and leaves its kind in dbref.kind (vss_fail writes the event: only this
 * thread may); the first failure becomes the event's. */
static int dbset_parallel(dbset *s, int (*fn)(void *ctx, void *ws, size_t i))
{
    om_pool pool = {.workers = OM_POOL_MAX_WORKERS, .ctx = s, .fn = fn};
    int rc = om_pool_run(&pool, s->n);
    if (!rc) return 0;
    vss_failure kind = VSS_FAIL_RETRYABLE;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].rc) {
            kind = s->v[i].kind;
            break;
        }
    return vss_fail_rc(s->e, kind, rc);
}

/* ---- PrepareSnapshot, Freeze, Thaw ---- */

static int fail_at(dbref *r, vss_failure kind, int rc)
{
    r->kind = kind;
    return r->rc = rc;
}

static int prepare_snapshot_at(void *ctx, void *ws, size_t i)
{
    dbset *s = ctx;
    dbref *r = &s->v[i];
    wdb *d;
    eng_info in;
    pthread_mutex_lock(&s->w->mu);
    int rc = session_check(s->w, s->e, &r->ent, &d);
    pthread_mutex_unlock(&s->w->mu);
    if (rc) return fail_at(r, VSS_FAIL_NON_RETRYABLE, rc);
    /* Pages out and the checkpoint forward: fewer logs to copy, less to hold at freeze. */
    if ((rc = eng_checkpoint(r->m->db)) || (rc = eng_db_info(r->m->db, &in)))
        return fail_at(r, VSS_FAIL_RETRYABLE, rc);
    /* Generations finished from now on come after the provider's prepare: Freeze names them
     * (held_new). */
    pthread_mutex_lock(&s->w->mu);
    d->gen_prep = in.gen_current;
    pthread_mutex_unlock(&s->w->mu);
    return 0;
}

static int prepare_snapshot(void *ctx, vss_event *e)
{
    dbset s;
    int rc = dbset_collect(ctx, e, 0, NULL, &s);
    if (!rc) rc = dbset_parallel(&s, prepare_snapshot_at);
    dbset_free(&s);
    return rc;
}

/* Phase 1 of a freeze, for one database, all at once: pages held, the checkpoint read, the
 * backup record made durable and the log rolled (the fsyncs), writes still going on. */
static int freeze_mark_at(void *ctx, void *ws, size_t i)
{
    dbset *s = ctx;
    dbref *r = &s->v[i];
    store_writer *w = s->w;
    wdb *d = NULL;
    char type[16];
    pthread_mutex_lock(&w->mu);
    int rc = session_check(w, s->e, &r->ent, &d);
    if (!rc) snprintf(type, sizeof type, "%s", d->type);
    if (!rc) r->again = d->frozen || d->holding;
    pthread_mutex_unlock(&w->mu);
    r->d = d;
    if (rc) return fail_at(r, VSS_FAIL_NON_RETRYABLE, rc);
    /* Frozen already by this session: freezing again would wait for our own hold. */
    if (r->again) return 0;
    r->hold = json_is_true(json_object_get(s->e->args, "hold"));
    eng_db *db = r->m->db;
    /* Hold page writes first: once frozen, the engine's writer role (which eng_hold_pages
     * takes) waits for the thaw. */
    if (r->hold && (rc = eng_hold_pages(db))) return fail_at(r, VSS_FAIL_RETRYABLE, rc);
    /* The checkpoint before the freeze (it only moves forward: the range can only grow). */
    if (!rc) rc = eng_db_info(db, &r->in);
    if (!rc) rc = eng_backup_mark(db, store_backup_kind(type), &r->mark, &r->last);
    if (rc) {
        om_err_saved e;
        om_err_save(&e, rc);
        if (r->hold) eng_release_pages(db);
        return fail_at(r, VSS_FAIL_RETRYABLE, om_err_restore(&e));
    }
    uint64_t t = om_now_ns();
    pthread_mutex_lock(&w->mu);
    d->db = db;
    d->holding = r->hold;
    d->mark = r->mark;
    d->mark_time = t;
    d->last_gen = r->last;
    d->ckpt = r->in.checkpoint;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* The held files finished since PrepareSnapshot (after the provider's prepare linked what was
 * there): generations gen_prep to cur - 1, as "held_new" paths, so that the held provider links
 * those and never walks the others during the freeze. */
static void held_new(json_t *out, const dbref *r, uint32_t from)
{
    for (uint32_t g = from ? from : 1; g < r->cur; g++) {
        char p[4400];
        snprintf(p, sizeof p, "%.4300s/%s%08X.log", r->ent.logs, r->ent.base, g);
        json_array_append_new(out, json_string(p));
    }
}

/* The current log as "stable": the bytes written so far stay as they are in that file (slots are
 * never rewritten; a roll renames it, the inode stays) and the rest of it is zeros at the freeze;
 * and the checkpoint file, unchanged while pages are held. The held provider only opens them
 * during the freeze and reads them after the thaw. */
static void stable_log(json_t *out, const dbref *r)
{
    char p[4400];
    snprintf(p, sizeof p, "%.4300s/%s.log", r->ent.logs, r->ent.base);
    json_array_append_new(out,
                          json_pack("{s:s, s:I, s:I}", "path", p, "size", (json_int_t)ENG_LOG_SIZE,
                                    "data_end", (json_int_t)r->written));
}

static int freeze(void *ctx, vss_event *e)
{
    store_writer *w = ctx;
    dbset s;
    int rc = dbset_collect(w, e, 0, NULL, &s);
    if (!rc) rc = dbset_parallel(&s, freeze_mark_at);
    /* Phase 2: every database's writes held, one flag each (no I/O): they are held from about
     * the same moment, and thawed together. */
    json_t *fresh = json_array(), *stable = json_array();
    for (size_t i = 0; !rc && i < s.n; i++) {
        dbref *r = &s.v[i];
        if (r->again) continue;
        if ((rc = eng_backup_hold_writes(r->m->db, &r->cur, &r->written))) {
            rc = vss_fail_rc(e, VSS_FAIL_RETRYABLE, rc);
            break;
        }
        uint64_t now = om_mono_ns();
        pthread_mutex_lock(&w->mu);
        r->d->frozen = 1;
        r->d->held_at = now;
        uint32_t from = r->d->gen_prep;
        pthread_mutex_unlock(&w->mu);
        held_new(fresh, r, from);
        stable_log(stable, r);
    }
    if (!rc) {
        json_object_set_new(e->result, "held_new", fresh);
        json_object_set_new(e->result, "stable", stable);
    } else {
        json_decref(fresh);
        json_decref(stable);
    }
    dbset_free(&s);
    return rc;
}

/* Every database thawed (a flag each), all of them whatever fails, and the longest time one had
 * its writes held (from its hold to its thaw) as "held_ms": the coordinator reports the larger
 * of it and its own span. The first failure is the answer. */
static int thaw(void *ctx, vss_event *e)
{
    store_writer *w = ctx;
    dbset s;
    int missing = 0;
    int rc = dbset_collect(w, e, 1, &missing, &s);
    double held_max = 0;
    om_err_saved first = {0};
    int frc = missing ? om_err_save(&first, missing) : 0;
    for (size_t i = 0; !rc && i < s.n; i++) {
        dbref *r = &s.v[i];
        wdb *d;
        int was = 0, trc;
        uint64_t at = 0;
        pthread_mutex_lock(&w->mu);
        if (!(trc = session_check(w, e, &r->ent, &d))) {
            was = d->frozen;
            at = d->held_at;
            d->frozen = 0;
        }
        pthread_mutex_unlock(&w->mu);
        if (!trc && was) trc = eng_backup_thaw(r->m->db);
        double ms = at ? (double)(om_mono_ns() - at) / 1e6 : 0;
        if (was && ms > held_max) held_max = ms;
        if (trc && !frc) frc = om_err_save(&first, trc);
    }
    dbset_free(&s);
    if (rc) return rc;
    if (frc) return vss_fail_rc(e, VSS_FAIL_RETRYABLE, om_err_restore(&first));
    json_object_set_new(e->result, "held_ms", json_real(held_max));
    return 0;
}

/* ---- PostSnapshot ---- */

static json_t *sig_json(const eng_sig *s)
{
    char r[20];
    snprintf(r, sizeof r, "%016llx", (unsigned long long)s->random);
    return json_pack("{s:s, s:I}", "random", r, "time", (json_int_t)s->time);
}

/* The generations a backup of this type holds: full and copy from the checkpoint at freeze;
 * incremental since the last full or incremental; differential since the last full. */
static void log_range(const wdb *d, const eng_info *in, uint32_t *first, uint32_t *last)
{
    *last = d->last_gen;
    const eng_bkslot *full = &in->slots[ENG_BK_PREV_FULL],
                     *inc = &in->slots[ENG_BK_PREV_INCREMENTAL];
    if (!strcmp(d->type, "incremental"))
        *first =
            (inc->mark_time && inc->last_gen > full->last_gen ? inc->last_gen : full->last_gen) + 1;
    else if (!strcmp(d->type, "differential"))
        *first = full->last_gen + 1;
    else
        *first = d->ckpt.gen;
    if (*first > *last) *first = *last; /* no new log: the freeze's own generation */
}

static int post_one(store_writer *w, vss_event *e, store_mounted *m, const store_dbent *ent,
                    const char *comp)
{
    wdb *d;
    eng_info in;
    eng_dbhdr h;
    int rc = eng_db_info(m->db, &in);
    if (!rc) rc = eng_dbhdr_read(om_vfs_posix(), ent->edb, &h, 0, NULL);
    if (rc) return vss_fail_rc(e, VSS_FAIL_RETRYABLE, rc);
    pthread_mutex_lock(&w->mu);
    rc = session_wdb(w, e, ent, &d);
    wdb copy;
    if (!rc) copy = *d;
    pthread_mutex_unlock(&w->mu);
    if (rc) return rc;
    uint32_t first, last;
    log_range(&copy, &in, &first, &last);
    char t[40];
    json_t *md = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:[i,i], s:[i,i], s:s, s:I, s:[i,i], s:b}",
        "db_id", copy.id, "db_name", ent->name, "server", w->reg->server, "type", copy.type, "edb",
        ent->edb, "logs", ent->logs, "base", ent->base, "log_signature", sig_json(&h.log_sig),
        "db_signature", sig_json(&h.db_sig), "checkpoint", copy.ckpt.gen, copy.ckpt.off, "mark",
        copy.mark.gen, copy.mark.off, "mark_time", om_time_iso(copy.mark_time, t, sizeof t),
        "mark_time_ns", (json_int_t)copy.mark_time, "log_range", first, last, "circular_logging",
        ent->circular);
    /* changemap: which pages a full may read alone (docs/design.md, synthetic fulls) */
    if (!strcmp(copy.type, "full"))
        json_object_set_new(md, "changemap", store_backup_changemap(m->db));
    json_t *cs = json_object_get(e->result, "components");
    if (!cs) {
        cs = json_object();
        json_object_set_new(e->result, "components", cs);
    }
    json_object_set_new(cs, comp, md);
    return 0;
}

static int post_snapshot(void *ctx, vss_event *e)
{
    return each_db(ctx, e, post_one);
}

/* ---- BackupComplete ---- */

/* Records the backup in the header (through a log record); for full and incremental, *below
 * gets the generation logs below which may be truncated once the backup is stored (0: none). */
static int record(eng_db *db, const wdb *d, const eng_info *in, const char *type, uint32_t *below)
{
    uint32_t first, last;
    log_range(d, in, &first, &last);
    eng_bkslot slot = {.first_gen = first,
                       .last_gen = last,
                       .mark = d->mark,
                       .mark_time = d->mark_time,
                       .kind = store_backup_kind(type)};
    *below = 0;
    int rc = store_backup_record(db, d->name, type, &slot, "");
    if (rc) return rc;
    /* Below the checkpoint at freeze (the database needs nothing older) and never past what
     * the backup holds. */
    *below = store_backup_truncates_below(type, d->ckpt.gen, last);
    return 0;
}

/* Records one database's backup through the mounted database. One that closed during the
 * backup (the store stopping, a failure: an administrator's dismount is refused) lost its
 * backup (spec §5): nothing is recorded, and BackupComplete fails so nothing is truncated and
 * the requester keeps none of its sets. Returns 0 or an error with its detail. */
static int complete_db(store_writer *w, const wdb *d, uint32_t *below)
{
    *below = 0;
    if (d->dismounted)
        return om_errf(OM_E_DatabaseUnavailable,
                       "database '%s' closed during backup session %s: its backup is lost, "
                       "nothing is recorded or truncated. HINT: mount it and run the backup again",
                       d->name, d->session);
    store_mounted *m = NULL;
    store_dbent ent;
    int rc = acquire_by_id(w, d->id, &m, &ent);
    if (rc) return rc;
    eng_info in;
    rc = eng_db_info(m->db, &in);
    if (!rc) rc = record(m->db, d, &in, d->type, below);
    store_release(w->reg, m);
    return rc;
}

/* A component the requester says succeeded that this writer has no backup of: the store
 * restarted (or the database went) during the backup, so its shadow copy was not held. */
static int unknown_success(store_writer *w, vss_event *e)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(e->args, "components"), i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        char id[37];
        int is_logs = 0;
        if (!n || !json_is_true(json_object_get(c, "succeeded")) ||
            !vss_comp_split(w->logical, n, id, &is_logs))
            continue;
        pthread_mutex_lock(&w->mu);
        wdb *d = wdb_get(w, id, 0);
        int known = d && !strcmp(d->session, e->session);
        pthread_mutex_unlock(&w->mu);
        if (!known)
            return vss_fail_rc(
                e, VSS_FAIL_NON_RETRYABLE,
                om_errf(OM_E_ShadowCopyInvalid,
                        "the backup of %s in session %s is not known to this writer: "
                        "the store restarted or the database closed during the "
                        "backup, so its shadow copy was not held. HINT: run the "
                        "backup again",
                        id, e->session));
    }
    return 0;
}

/* Records each succeeded database's backup; truncation waits for BackupShutdown. The
 * session's databases are no longer in a backup (for the administrative actions), whatever the
 * outcome. */
static int backup_complete(void *ctx, vss_event *e)
{
    store_writer *w = ctx;
    int first = unknown_success(w, e);
    for (int i = 0; i < MAX_WDB && !first; i++) {
        pthread_mutex_lock(&w->mu);
        wdb copy = w->dbs[i];
        pthread_mutex_unlock(&w->mu);
        if (!copy.id[0] || strcmp(copy.session, e->session)) continue;
        char comp[300];
        snprintf(comp, sizeof comp, "%s\\%s", w->logical, copy.id);
        if (!vss_event_succeeded(e, comp)) {
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", copy.name}, {"SESSION", e->session}),
                        "backup of %s in session %s did not succeed: nothing recorded", copy.name,
                        e->session);
            continue;
        }
        uint32_t below = 0;
        int rc = complete_db(w, &copy, &below);
        if (rc && !first) first = vss_fail_rc(e, VSS_FAIL_RETRYABLE, rc);
        pthread_mutex_lock(&w->mu);
        if (!rc && !strcmp(w->dbs[i].session, e->session)) {
            w->dbs[i].recorded = 1;
            w->dbs[i].truncate_below = below;
        }
        pthread_mutex_unlock(&w->mu);
    }
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < MAX_WDB; i++)
        if (w->dbs[i].id[0] && !strcmp(w->dbs[i].session, e->session)) w->dbs[i].completed = 1;
    pthread_mutex_unlock(&w->mu);
    return first;
}

/* The logs a recorded full or incremental backup holds are deleted only now, once the requester
 * has said it stored the backup: a requester that died between BackupComplete and storing it
 * leaves every generation on disk (the next backup holds them). */
static void truncate_stored(store_writer *w, vss_event *e)
{
    for (int i = 0; i < MAX_WDB; i++) {
        pthread_mutex_lock(&w->mu);
        wdb copy = w->dbs[i];
        pthread_mutex_unlock(&w->mu);
        if (!copy.id[0] || strcmp(copy.session, e->session) || !copy.recorded) continue;
        char comp[300];
        snprintf(comp, sizeof comp, "%s\\%s", w->logical, copy.id);
        if (!vss_event_stored(e, comp)) {
            if (copy.truncate_below)
                om_log_with(OM_WARN, OM_FIELDS({"DATABASE", copy.name}, {"SESSION", e->session}),
                            "the requester did not say it stored the %s backup of %s (session %s): "
                            "no log is truncated",
                            copy.type, copy.name, e->session);
            continue;
        }
        if (!copy.truncate_below) continue;
        if (copy.dismounted) { /* what is mounted under its id now may be a restore of it */
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", copy.name}, {"SESSION", e->session}),
                        "%s closed after its %s backup was recorded (session %s): its logs are not "
                        "truncated",
                        copy.name, copy.type, e->session);
            continue;
        }
        store_mounted *m = NULL;
        store_dbent ent;
        uint32_t deleted = 0;
        int rc = acquire_by_id(w, copy.id, &m, &ent);
        eng_info in = {0};
        if (!rc) {
            rc = eng_truncate_logs(m->db, copy.truncate_below, &deleted);
            if (!rc) rc = eng_db_info(m->db, &in);
            store_release(w->reg, m);
        }
        if (rc)
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", copy.name}, {"SESSION", e->session}),
                        "truncating the logs of %s after its %s backup: %s", copy.name, copy.type,
                        om_err_detail());
        else if (in.truncate_floor && in.truncate_floor < copy.truncate_below)
            om_log_with(
                OM_INFO, OM_FIELDS({"DATABASE", copy.name}, {"SESSION", e->session}),
                "%s backup of %s stored: %u log generations below %u deleted; generations %u "
                "to %u wait for passive copies that still need them",
                copy.type, copy.name, deleted, in.truncate_floor, in.truncate_floor,
                copy.truncate_below - 1);
        else
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", copy.name}, {"SESSION", e->session}),
                        "%s backup of %s stored: %u log generations below %u deleted", copy.type,
                        copy.name, deleted, copy.truncate_below);
    }
}

/* ---- Abort, BackupShutdown ---- */

/* Forgets the restore slot of target in session, or every slot of the session when target is
 * NULL; a replaced .edb a slot held is closed on a thread. */
static void start_release(store_writer *w, om_file *f, int drop);

static void unmark_session(store_writer *w, const char *session, const char *target)
{
    wrestore *gone = NULL;
    pthread_mutex_lock(&w->mu);
    for (wrestore **p = &w->restores; *p;) {
        wrestore *r = *p;
        if (strcmp(r->session, session) || (target && strcmp(r->target, target))) {
            p = &r->next;
            continue;
        }
        *p = r->next;
        r->next = gone;
        gone = r;
    }
    pthread_mutex_unlock(&w->mu);
    while (gone) {
        wrestore *r = gone;
        gone = r->next;
        if (r->old_edb) start_release(w, r->old_edb, 0);
        if (r->old_pgj) start_release(w, r->old_pgj, 0);
        om_close(r->env_lock);
        free(r);
    }
}

/* Thaws and releases the holds of every database of the session; forgets the session (a
 * restore's too). */
static int end_session(void *ctx, vss_event *e)
{
    store_writer *w = ctx;
    unmark_session(w, e->session, NULL);
    for (int i = 0; i < MAX_WDB; i++) {
        pthread_mutex_lock(&w->mu);
        wdb copy = w->dbs[i];
        pthread_mutex_unlock(&w->mu);
        if (!copy.id[0] || strcmp(copy.session, e->session)) continue;
        store_mounted *m = NULL;
        store_dbent ent;
        if ((copy.frozen || copy.holding) && acquire_by_id(w, copy.id, &m, &ent) == 0) {
            pthread_mutex_lock(&w->mu);
            wdb *d = &w->dbs[i];
            int fr = d->frozen && d->db == m->db, ho = d->holding && d->db == m->db;
            d->frozen = d->holding = 0;
            pthread_mutex_unlock(&w->mu);
            if (fr) eng_backup_thaw(m->db);
            if (ho) eng_release_pages(m->db);
            store_release(w->reg, m);
        }
        pthread_mutex_lock(&w->mu);
        if (!strcmp(w->dbs[i].session, e->session)) wdb_forget(&w->dbs[i]);
        pthread_mutex_unlock(&w->mu);
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", copy.name}, {"SESSION", e->session}),
                    "%s of %s ended (session %s)", e->name, copy.name, e->session);
    }
    return 0;
}

static int backup_shutdown(void *ctx, vss_event *e)
{
    truncate_stored(ctx, e);
    return end_session(ctx, e);
}

/* The registry's "database closing" (registry.mu held): a backup of db thaws and releases its
 * holds; before BackupComplete that backup is lost (complete_db fails it), after it the backup
 * stands but nothing of it is truncated (truncate_stored). */
static void db_closing(void *arg, eng_db *db)
{
    store_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < MAX_WDB; i++) {
        wdb *d = &w->dbs[i];
        if (!d->id[0] || d->db != db) continue;
        if (d->frozen) eng_backup_thaw(db);
        if (d->holding) eng_release_pages(db);
        d->frozen = d->holding = 0;
        d->db = NULL;
        d->dismounted = 1;
        if (d->completed)
            om_log_with(
                OM_INFO, OM_FIELDS({"DATABASE", d->name}, {"SESSION", d->session}),
                "%s closed after backup session %s recorded its backup: its logs will not be "
                "truncated",
                d->name, d->session);
        else
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", d->name}, {"SESSION", d->session}),
                        "%s closed during backup session %s: that backup is lost (nothing will be "
                        "recorded or truncated)",
                        d->name, d->session);
    }
    pthread_mutex_unlock(&w->mu);
}

/* ---- PreRestore, PostRestore ---- */

/* Where one component is restored to: a database of the directory (the original, another one,
 * the recovery database) or new paths.
 *
 * What a restore may write (spec §6): only under the target's folders, never through a link,
 * never over a file it did not create, except the target's own files PreRestore checked. So:
 * - the .edb is laid down by the requester under a temporary name in the folder of the
 *   target's .edb and renamed to the target's .edb path, never to a name from the backup; it
 *   replaces what is there only for a database of the directory (its own dismounted .edb,
 *   marked allow-restore) or a leftover of an unfinished restore of this very target;
 * - logs go to the original's own log folder (replacing the generations the chain restores)
 *   or to <logs>/_restoredLogs, a folder of the store's own, made here (mkdirat, opened
 *   without following a link); one that is there already is taken only when its
 *   <base>restore.env says it is an unfinished restore of this target: one that asked for
 *   additional restores (--no-replay) is continued (its generations stay, this restore's may
 *   replace them), a killed or failed one is cleared first (its names go); anything else is
 *   refused;
 * - at the end the names are checked (only names a restore writes), the folder is renamed to
 *   a retired name (eng_restored_retire) before PostRestore answers, and its names go after
 *   that, on a thread (eng_retired_remove); a retired folder left by a crash is removed by the
 *   next restore into that log folder (eng_retired_sweep). */
typedef struct rtarget {
    store_dbent ent; /* the target (for new paths: made up from them) */
    int in_dir;      /* a database of the directory */
    int original;    /* the same database the backup is of */
    char orig_id[37], orig_base[4], orig_edb[4096];
    char key[4300];          /* the restore slot: the target's name, or its .edb path */
    char edb_dir[4096];      /* the folder of ent.edb */
    char edb_name[256];      /* its name in that folder */
    char restored_dir[4200]; /* where its logs go */
    char pending[4200];      /* <logs>/_restoredLogs: the restore is not finished while it exists */
    char progress[4300];     /* <pending>/<base>restore.laid: how far the requester has laid logs */
    char copy_of[STORE_MAX_NAME + 1]; /* the ordinary database of this server whose id the
                                       * restore gives the target: it becomes a recovery one */
} rtarget;

static const char *str_or(json_t *o, const char *k, const char *d)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : d;
}

/* The ordinary database of this server, other than the target, that carries id: as its
 * directory id, or in its .edb header (a database restored from another one's backup carries
 * that one's id). NULL when none does (registry.mu held). */
static const store_dbent *carrier_of(store_registry *s, const char *id, const store_dbent *target)
{
    for (size_t i = 0; i < s->dir->n; i++) {
        const store_dbent *e = &s->dir->ents[i];
        char did[37], hid[37];
        eng_dbhdr h;
        if (e == target || e->recovery) continue;
        om_uuid_str(&e->id, did);
        if (!strcmp(did, id)) return e;
        if (eng_dbhdr_read(om_vfs_posix(), e->edb, &h, 0, NULL)) continue;
        om_uuid_str(&h.db_id, hid);
        if (!strcmp(hid, id)) return e;
    }
    return NULL;
}

/* Resolves and checks the target of a restore component (registry.mu held).
 *
 * A restore into another database of this server gives it the id of the database the backup
 * is of. When an ordinary database of this server carries that id already (the live original,
 * most often: a restore "next to" it to read old mail), the target becomes a recovery database
 * (spec §6; Exchange's RDB): never backed up, no circular logging, one mounted at a time, so
 * that two ordinary databases never carry one id. t->copy_of names that database; PreRestore
 * records the change in the directory. */
static int resolve_target(store_writer *w, json_t *c, rtarget *t)
{
    store_registry *s = w->reg;
    json_t *md = json_object_get(c, "backup_metadata"), *ro = json_object_get(c, "restore_options"),
           *nt = json_object_get(c, "new_target");
    memset(t, 0, sizeof *t);
    snprintf(t->orig_id, sizeof t->orig_id, "%s", str_or(md, "db_id", ""));
    snprintf(t->orig_base, sizeof t->orig_base, "%s", str_or(md, "base", "E00"));
    snprintf(t->orig_edb, sizeof t->orig_edb, "%s", str_or(md, "edb", ""));
    if (!t->orig_id[0])
        return om_errf(OM_E_InvalidParameter, "the backup metadata of %s names no database (db_id)",
                       str_or(c, "name", "?"));
    if (!eng_base_valid(str_or(md, "base", "E00")))
        return om_errf(OM_E_InvalidParameter,
                       "the backup metadata of %s gives '%.20s' as its log base name, which is not "
                       "three letters or digits",
                       str_or(c, "name", "?"), str_or(md, "base", ""));
    if (json_is_object(nt)) { /* new paths: not a database of the directory */
        const char *edb = str_or(nt, "edb", NULL), *logs = str_or(nt, "logs", NULL);
        if (!edb || !logs || edb[0] != '/' || logs[0] != '/')
            return om_errf(OM_E_InvalidPath, "new paths need an absolute edb and logs");
        int rc = store_check_edb_name(edb, "--edb");
        if (rc) return rc;
        snprintf(t->ent.edb, sizeof t->ent.edb, "%s", edb);
        snprintf(t->ent.logs, sizeof t->ent.logs, "%s", logs);
        memcpy(t->ent.base, t->orig_base, 4);
        snprintf(t->ent.name, sizeof t->ent.name, "(new paths)");
        snprintf(t->key, sizeof t->key, "%s", edb);
        for (size_t i = 0; i < s->dir->n; i++) {
            const store_dbent *e = &s->dir->ents[i];
            if (store_same_place(e->logs, logs) || store_same_place(e->edb, edb))
                return om_errf(OM_E_FileAlreadyExists,
                               "%s is database '%s''s %s: a restore to new paths never writes "
                               "into another database's files. HINT: restore into '%s' with "
                               "--to %s, or give new paths of their own",
                               store_same_place(e->edb, edb) ? edb : logs, e->name,
                               store_same_place(e->edb, edb) ? "database file" : "log folder",
                               e->name, e->name);
        }
        char why[120];
        const store_dbent *o =
            store_dir_place_taken(s->dir, edb, logs, t->orig_base, NULL, why, sizeof why);
        if (o)
            return om_errf(OM_E_FileAlreadyExists,
                           "--edb %s --logs %s would share a place with database '%s': %s; a "
                           "restore to new paths never writes where another database's files "
                           "are. HINT: give new paths of their own",
                           edb, logs, o->name, why);
    } else {
        const char *name = str_or(ro, "target", NULL);
        store_dbent *e = NULL;
        for (size_t i = 0; i < s->dir->n && !e; i++) {
            char id[37];
            om_uuid_str(&s->dir->ents[i].id, id);
            if (name ? !strcmp(s->dir->ents[i].name, name) : !strcmp(id, t->orig_id))
                e = &s->dir->ents[i];
        }
        int to_recovery = json_is_true(json_object_get(ro, "recovery"));
        if (!e && name)
            return om_errf(OM_E_DatabaseNotFound,
                           to_recovery ? "no database named '%s' to restore to. HINT: create the "
                                         "recovery database first: ombra db new-recovery %s "
                                         "--edb PATH --logs DIR"
                                       : "no database named '%s' to restore to. HINT: ombra db "
                                         "new %s, then dismount it and allow restores",
                           name, name);
        if (!e)
            return om_errf(OM_E_DatabaseNotFound,
                           "database %s of the backup no longer exists. HINT: restore to "
                           "another database, the recovery database or new paths",
                           t->orig_id);
        /* A DAG database restores into its active copy only (docs/design.md "Restore in a
         * DAG"): a copy of this server's that the DAG names passive is replaced by a reseed. */
        if (!e->active)
            return om_errf(OM_E_DatabaseUnavailable,
                           "database '%s' is active on server %s, not on this one: a restore in a "
                           "DAG goes to the active copy. HINT: run ombra restore on %s",
                           e->name, e->active_on[0] ? e->active_on : "(none)",
                           e->active_on[0] ? e->active_on : "the active server");
        t->ent = *e;
        t->in_dir = 1;
        char id[37];
        om_uuid_str(&e->id, id);
        t->original = !strcmp(id, t->orig_id);
        const char *want = str_or(ro, "target_id", NULL);
        if (want && strcmp(want, id) && !e->recovery)
            return om_errf(OM_E_BadDbSignature,
                           "database '%s' is %s, not %s as the restore expects. HINT: restore "
                           "to it as another database",
                           e->name, id, want);
        store_mounted *m = store_find_mounted(s, e->name);
        if (m)
            return om_errf(OM_E_DatabaseInUse,
                           "database '%s' is mounted. HINT: ombra db dismount %s", e->name,
                           e->name);
        if (!e->allow_restore)
            return om_errf(OM_E_FileAccessDenied,
                           "database '%s' does not allow a restore over it. HINT: ombra db set "
                           "%s --allow-restore on",
                           e->name, e->name);
        if (json_is_true(json_object_get(ro, "recovery")) && !e->recovery)
            return om_errf(OM_E_InvalidParameter, "'%s' is not the recovery database", e->name);
        const store_dbent *o = t->original || e->recovery ? NULL : carrier_of(s, t->orig_id, e);
        if (o) {
            snprintf(t->copy_of, sizeof t->copy_of, "%s", o->name);
            t->ent.recovery = 1;
            t->ent.circular = 0;
        }
        snprintf(t->key, sizeof t->key, "%s", e->name);
    }
    const char *slash = strrchr(t->ent.edb, '/');
    if (!slash || !slash[1] || strlen(slash + 1) >= 200)
        return om_errf(OM_E_InvalidPath, "%s does not name a database file", t->ent.edb);
    snprintf(t->edb_name, sizeof t->edb_name, "%s", slash + 1);
    om_dirname(t->ent.edb, t->edb_dir, sizeof t->edb_dir);
    snprintf(t->pending, sizeof t->pending, "%.4000s/_restoredLogs", t->ent.logs);
    snprintf(t->restored_dir, sizeof t->restored_dir, "%s", t->original ? t->ent.logs : t->pending);
    snprintf(t->progress, sizeof t->progress, "%s/%srestore.laid", t->pending, t->orig_base);
    return 0;
}

/* Where the restore's replay ends (restore_options): roll forward through the later logs or
 * not, the generation and the commit time it stops at (0: none); the original without roll
 * forward stops at the backup's last generation. */
static void replay_point(json_t *c, const rtarget *t, eng_restore_opts *o)
{
    json_t *ro = json_object_get(c, "restore_options"), *md = json_object_get(c, "backup_metadata");
    json_t *rf = json_object_get(ro, "roll_forward");
    o->roll_forward = rf ? json_is_true(rf) : 1;
    o->stop_gen = (uint32_t)json_integer_value(json_object_get(ro, "stop_gen"));
    o->stop_time_ns = (uint64_t)json_integer_value(json_object_get(ro, "stop_time_ns"));
    if (t->original && !o->roll_forward && !o->stop_gen)
        o->stop_gen =
            (uint32_t)json_integer_value(json_array_get(json_object_get(md, "log_range"), 1));
}

/* <base>restore.env: what the restored logs are and where they go, where their replay ends (a
 * replay finished by dbutil recover stops where the restore would have), whether the
 * restore that wrote it asked for additional restores (the next one continues it), and the
 * boot the logs were laid down in without a sync each (boot: NULL when each is synced; dbutil
 * recover takes them only in that boot, cli_dbutil_hard.c). */
static json_t *env_of(const rtarget *t, json_t *c, const char *boot)
{
    json_t *md = json_object_get(c, "backup_metadata");
    char id[37] = "";
    if (t->in_dir) om_uuid_str(&t->ent.id, id);
    eng_restore_opts o = {0};
    replay_point(c, t, &o);
    /* the generations the restore lays down (dbutil recover refuses to end before the last) */
    json_t *laid = json_object_get(json_object_get(c, "restore_options"), "laid_range");
    return json_pack(
        "{s:{s:s, s:s, s:s, s:s, s:s}, s:{s:s, s:s, s:s, s:s, s:s}, s:O, s:s, s:b, s:b, s:{s:b, "
        "s:I, s:I}, s:O, s:s?}",
        "original", "id", t->orig_id, "name", str_or(md, "db_name", ""), "edb", t->orig_edb, "logs",
        str_or(md, "logs", ""), "base", t->orig_base, "target", "id", id, "name", t->ent.name,
        "edb", t->ent.edb, "logs", t->ent.logs, "base", t->ent.base, "log_signature",
        json_object_get(md, "log_signature") ? json_object_get(md, "log_signature") : json_null(),
        "base", t->orig_base, "recovery", t->ent.recovery, "additional_restores",
        json_is_true(json_object_get(c, "additional_restores")), "replay", "roll_forward",
        o.roll_forward, "stop_gen", (json_int_t)o.stop_gen, "stop_time_ns",
        (json_int_t)o.stop_time_ns, "laid_range",
        json_is_array(laid) && json_array_size(laid) == 2 ? laid : json_null(),
        "logs_unsynced_boot", boot);
}

/* Writes <base>restore.env and leaves it open and locked into *f: `ombra dbutil recover`
 * refuses a folder whose .env is locked (cli_dbutil_hard.c). The lock is taken on the new file
 * before its name shows it, so no dbutil recover can take the new .env in between. */
static int write_env(om_dir *pd, const rtarget *t, json_t *c, const char *boot, om_file **f)
{
    char name[32];
    om_durable d;
    *f = NULL;
    json_t *env = env_of(t, c, boot);
    char *text = env ? json_dumps(env, JSON_INDENT(2)) : NULL;
    json_decref(env);
    snprintf(name, sizeof name, "%srestore.env", t->orig_base);
    int rc = text ? om_durable_begin(pd, name, &d) : om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc) {
        rc = om_pwrite(d.f, text, strlen(text), 0);
        if (!rc && d.f->vfs->lock) rc = d.f->vfs->lock(d.f);
        if (rc)
            om_durable_abort(&d);
        else
            rc = om_durable_commit_open(&d, OM_RENAME_REPLACE, f);
    }
    free(text);
    return rc;
}

/* What an earlier restore left in _restoredLogs, found by its .env. */
typedef struct leftover {
    om_dir *pd;
    char env[64];    /* its <base>restore.env ("" when none) */
    char base[4];    /* that base */
    char stray[256]; /* a name that is no restore's */
    int keep;        /* the restore goes on: its generations stay */
    int nenv, nother, ntmp, rc;
} leftover;

static int look_left(void *arg, const char *name)
{
    leftover *l = arg;
    size_t n = strlen(name);
    if (n == 14 && !strcmp(name + 3, "restore.env") &&
        eng_base_valid((char[4]){name[0], name[1], name[2], 0})) {
        snprintf(l->env, sizeof l->env, "%s", name);
        memcpy(l->base, name, 3);
        l->base[3] = 0;
        l->nenv++;
    } else if (om_durable_is_tmp(name, NULL)) {
        l->ntmp++; /* a temporary name of a restore killed while it wrote a file */
    } else {
        l->nother++;
    }
    return 0;
}

static int drop_left(void *arg, const char *name)
{
    leftover *l = arg;
    if (!strcmp(name, l->env)) return 0;
    if (!eng_restored_name(name, l->base)) {
        if (!l->stray[0]) snprintf(l->stray, sizeof l->stray, "%s", name);
        return 0;
    }
    uint32_t g = 0;
    if (l->keep && eng_parse_log_name(name, l->base, &g) && g) return 0;
    int rc = om_unlink_at(l->pd, name);
    if (rc && rc != OM_E_FileNotFound && !l->rc) l->rc = rc;
    return 0;
}

/* The .env an earlier restore left (name in pd), open and locked into *f: refused while
 * another process holds it (ombra dbutil recover of the folder, cli_dbutil_hard.c, holds it for
 * as long as its recovery runs; a store's restore from PreRestore until it is done). */
static int lock_leftover_env(om_dir *pd, const char *name, om_file **f)
{
    int rc = om_open_at(pd, name, OM_O_RDONLY, f);
    if (!rc && (*f)->vfs->lock && (rc = (*f)->vfs->lock(*f)) == OM_E_DatabaseInUse)
        rc = om_errf(OM_E_RestoreInProgress,
                     "%s/%s is held by another process (an ombra dbutil recover of this folder, "
                     "or another restore): restoring now would race it. HINT: wait for it to "
                     "end, then restore again",
                     pd->path, name);
    if (rc) {
        om_close(*f);
        *f = NULL;
    }
    return rc;
}

/* _restoredLogs as this restore finds it: empty (just made, or left empty), or an unfinished
 * restore of this same target (*ours = 1): one that asked for additional restores goes on
 * (*keep = 1: its generations stay), another one's names go now. Anything else is refused:
 * it is not this restore's to overwrite or remove. *old_env: the earlier restore's .env, held
 * locked until the caller has locked its own (lock_leftover_env), so that a dbutil recover
 * never starts on what this restore is replacing. */
static int take_leftovers(om_dir *pd, const rtarget *t, int *ours, int *keep, om_file **old_env)
{
    leftover l = {.pd = pd};
    *ours = *keep = 0;
    *old_env = NULL;
    int rc = om_list_at(pd, look_left, &l);
    if (rc || (!l.nenv && !l.nother)) {
        /* Only temporary names: a restore that died before its .env was in place (the folder
         * is the store's own, and nothing was laid yet). */
        if (!rc && l.ntmp) rc = om_durable_sweep(pd, NULL, NULL);
        if (!rc && l.ntmp) rc = om_dir_sync(pd);
        return rc;
    }
    json_t *env = NULL;
    if (l.nenv == 1) rc = lock_leftover_env(pd, l.env, old_env);
    if (!rc && l.nenv == 1) rc = om_json_read_file(*old_env, 1u << 20, &env);
    if (rc) return rc;
    char id[37] = "";
    if (t->in_dir) om_uuid_str(&t->ent.id, id);
    json_t *tg = json_object_get(env, "target");
    int same = env && !strcmp(str_or(tg, "edb", ""), t->ent.edb) &&
               !strcmp(str_or(tg, "logs", ""), t->ent.logs) && !strcmp(str_or(tg, "id", ""), id);
    l.keep = json_is_true(json_object_get(env, "additional_restores")) &&
             !strncmp(l.base, t->orig_base, 3);
    json_decref(env);
    if (!same)
        return om_errf(OM_E_FileAlreadyExists,
                       "%s is there and holds %s. HINT: if no restore of that is still wanted, "
                       "move the folder away (ombra dbutil recover %s replays one laid down "
                       "with --no-replay)",
                       pd->path, l.nenv ? "a restore of another target" : "files of no restore",
                       t->ent.logs);
    rc = om_list_at(pd, drop_left, &l);
    if (!rc) rc = l.rc;
    /* The .env of an earlier restore of other logs: this one writes its own. */
    if (!rc && !l.stray[0] && strncmp(l.env, t->orig_base, 3)) rc = om_unlink_at(pd, l.env);
    if (!rc && l.stray[0])
        rc = om_errf(OM_E_FileAlreadyExists,
                     "%s holds %s, which no restore writes. HINT: move it away and restore again",
                     pd->path, l.stray);
    if (!rc) rc = om_dir_sync(pd);
    if (!rc) *ours = 1;
    if (!rc) *keep = l.keep;
    return rc;
}

/* A name of a log stream of base in a folder (its logs, checkpoint, prepared and reserve logs,
 * page journal, hold file). */
typedef struct stream_probe {
    const char *base;
    char found[256];
} stream_probe;

static int probe_stream(void *arg, const char *name)
{
    stream_probe *p = arg;
    static const char *const ends[] = {".log", ".chk", ".jrs", ".pgj", ".hold"};
    size_t l = strlen(name);
    if (strncmp(name, p->base, 3)) return 0;
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        size_t el = strlen(ends[i]);
        if (l > el && !strcmp(name + l - el, ends[i])) {
            snprintf(p->found, sizeof p->found, "%s", name);
            return 1;
        }
    }
    return 0;
}

/* New paths start a log stream of their own: a folder that holds one already (another
 * database's, live or not) is never written into. */
static int no_stream_there(om_dir *ld, const rtarget *t)
{
    stream_probe p = {.base = t->ent.base};
    int rc = om_list_at(ld, probe_stream, &p);
    if (rc == 1 || p.found[0])
        return om_errf(OM_E_FileAlreadyExists,
                       "%s holds %s, a file of a log stream %s: a restore to new paths starts its "
                       "own stream and never writes into another's. HINT: give --logs an empty "
                       "folder",
                       t->ent.logs, p.found, t->ent.base);
    return rc;
}

/* The folders and the marks of a restore (PreRestore, after the checks of resolve_target) of
 * component c: *replace_edb and *replace_logs say whether the .edb may replace what is at
 * ent.edb, and the generations what is in their folder; *unsynced whether the requester may
 * lay the generations without a sync each (restore_options.logs_unsynced): only into
 * _restoredLogs, when the replay here follows the laying (logs_arriving, no additional
 * restores) and the restore continues none that laid generations before it. Those logs are read by
 * that replay and then go; the .env names this boot, so that nothing takes them after the machine
 * restarted (a crash may have lost what was not yet written back). */
static int prepare_target(const rtarget *t, json_t *c, int *replace_edb, int *replace_logs,
                          int *unsynced, om_file **old_edb, om_file **drop_edb, om_file **env_lock)
{
    om_vfs *v = om_vfs_posix();
    om_dir *ed = NULL, *ld = NULL, *pd = NULL;
    int ours = 0, keep = 0, kind = 0;
    char laid[32], boot[37] = "";
    json_t *ro = json_object_get(c, "restore_options");
    *replace_edb = 0;
    *replace_logs = t->original;
    *unsynced = 0;
    /* Configured paths: links on the way are the administrator's; the last folder is not
     * followed, and whatever the restore makes is made by name in a folder it opened. */
    om_file *old_env = NULL; /* an earlier restore's .env, locked until ours is (take_leftovers) */
    int rc = om_dir_open(v, NULL, t->edb_dir, OM_D_CREATE, &ed);
    if (!rc) rc = om_dir_open(v, NULL, t->ent.logs, OM_D_CREATE, &ld);
    /* Retired folders of earlier restores that a crash or a stop left: each one that cannot go
     * is a warning, never a reason to refuse this restore. */
    if (!rc && eng_retired_sweep(ld, NULL)) {
        om_warn("%s", om_err_detail());
        om_err_clear();
    }
    /* _restoredLogs (with the .env) marks the target as not restored until PostRestore
     * finishes, for the original database too: a failed restore leaves it unmountable. */
    if (!rc) rc = om_dir_open(v, ld, "_restoredLogs", OM_D_CREATE | OM_D_OWN, &pd);
    if (!rc) rc = om_dir_sync(ld);
    if (!rc) rc = take_leftovers(pd, t, &ours, &keep, &old_env);
    if (keep) *replace_logs = 1; /* the generations the restore it continues laid */
    if (!rc && !t->in_dir && !ours) rc = no_stream_there(ld, t);
    if (!rc) kind = om_kind_at(ed, t->edb_name);
    if (!rc && kind < 0) rc = kind;
    if (!rc && kind != OM_KIND_NONE) {
        if (kind != OM_KIND_FILE && t->in_dir)
            rc = om_errf(OM_E_FileAccessDenied,
                         "%s, the database file of '%s', is not a regular file (a link or a "
                         "folder): a restore never writes through one. HINT: put the database "
                         "file itself at that path, or move it away",
                         t->ent.edb, t->ent.name);
        else if (kind != OM_KIND_FILE || (!t->in_dir && !ours))
            rc = om_errf(OM_E_FileAlreadyExists,
                         "%s is there already%s: a restore to new paths only creates files, "
                         "never replaces one it did not make. HINT: give --edb a path where "
                         "nothing is, or move that one away",
                         t->ent.edb, kind == OM_KIND_FILE ? "" : " (and is no regular file)");
        else
            *replace_edb = 1;
    }
    /* By name in the folder it opened (no link followed: it is a regular file, just checked);
     * a file that cannot be opened is only not held (its blocks are freed by the requester). */
    if (!rc && *replace_edb && om_open_at(ed, t->edb_name, OM_O_RDONLY, old_edb)) {
        *old_edb = NULL;
        om_err_clear();
    }
    /* Its pages in the page cache (all of it after a digest) made the replay's writes into the
     * new file cost twice the CPU (docs/design.md, Restore): they go, on a thread, through a
     * handle of its own (the held one may be closed first). */
    if (!rc && *old_edb && om_open_at(ed, t->edb_name, OM_O_RDONLY, drop_edb)) {
        *drop_edb = NULL;
        om_err_clear();
    }
    /* Temporary names of an earlier restore of this target that was killed while laying. */
    if (!rc && (t->in_dir || ours)) rc = om_durable_sweep(ed, t->edb_name, NULL);
    if (!rc && t->original) rc = om_durable_sweep(ld, NULL, NULL);
    /* Not with additional restores: that PostRestore replays nothing, and the logs stay for the
     * restore that continues them (which rewrites the .env), perhaps after a restart. */
    if (!rc && !t->original && !keep && json_is_true(json_object_get(ro, "logs_unsynced")) &&
        json_is_array(json_object_get(ro, "logs_arriving")) &&
        !json_is_true(json_object_get(c, "additional_restores"))) {
        if (om_boot_id(boot) == 0)
            *unsynced = 1;
        else /* each generation synced, as without the option */
            om_err_clear();
    }
    if (!rc) rc = write_env(pd, t, c, *unsynced ? boot : NULL, env_lock);
    om_close(old_env);
    snprintf(laid, sizeof laid, "%srestore.laid", t->orig_base);
    if (!rc) rc = vss_laid_create(pd, laid);
    if (!rc) rc = om_dir_sync(pd);
    om_dir_close(pd);
    om_dir_close(ld);
    om_dir_close(ed);
    if (rc) {
        om_close(*old_edb);
        *old_edb = NULL;
        om_close(*drop_edb);
        *drop_edb = NULL;
        om_close(*env_lock);
        *env_lock = NULL;
    }
    return rc;
}

/* The restore slot of target for session keeps f (closed on a thread when the slot goes); f is
 * closed now when there is no slot, or the slot holds a file already (a PreRestore again). The
 * slot keeps env, the .env's lock, in place of the one it held (the .env was written again). */
static void hold_files(store_writer *w, const char *session, const char *target, om_file *f,
                       om_file *pgj, om_file *env, int unsynced)
{
    om_file *gone = env;
    pthread_mutex_lock(&w->mu);
    wrestore *r = w->restores;
    while (r && (strcmp(r->target, target) || strcmp(r->session, session)))
        r = r->next;
    if (r) r->unsynced = unsynced;
    if (r && f && !r->old_edb) {
        r->old_edb = f;
        f = NULL;
    }
    if (r && pgj && !r->old_pgj) {
        r->old_pgj = pgj;
        pgj = NULL;
    }
    om_close(pgj);
    if (r && env) {
        gone = r->env_lock;
        r->env_lock = env;
    }
    pthread_mutex_unlock(&w->mu);
    om_close(f);
    om_close(gone);
}

/* The target's page journal, opened by name in its log folder (no link followed), or NULL. */
static om_file *open_pgj(const rtarget *t)
{
    om_dir *ld = NULL;
    om_file *f = NULL;
    char name[32];
    snprintf(name, sizeof name, "%s.pgj", t->ent.base);
    if (om_dir_open(om_vfs_posix(), NULL, t->ent.logs, 0, &ld) ||
        om_kind_at(ld, name) != OM_KIND_FILE || om_open_at(ld, name, OM_O_RDONLY, &f))
        f = NULL;
    om_err_clear();
    om_dir_close(ld);
    return f;
}

/* Holds the restore slot of target for session: another session's restore of it is refused. */
static int mark_restoring(store_writer *w, const char *session, const char *target)
{
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    wrestore *r = w->restores;
    while (r && strcmp(r->target, target))
        r = r->next;
    if (r && strcmp(r->session, session))
        rc = om_errf(OM_E_RestoreInProgress,
                     "%s is being restored already (session %s). HINT: wait for that restore to "
                     "end",
                     target, r->session);
    else if (!r && !(r = calloc(1, sizeof *r)))
        rc = om_errf(OM_E_OutOfMemory, "out of memory");
    else if (!r->session[0]) {
        snprintf(r->session, sizeof r->session, "%s", session);
        snprintf(r->target, sizeof r->target, "%s", target);
        r->next = w->restores;
        w->restores = r;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int store_writer_backing_up(store_writer *w, const om_uuid *db_id, char session[40])
{
    char id[37];
    om_uuid_str(db_id, id);
    pthread_mutex_lock(&w->mu);
    wdb *d = wdb_get(w, id, 0);
    int r = d && d->session[0] && !d->completed;
    if (r) snprintf(session, 40, "%s", d->session);
    pthread_mutex_unlock(&w->mu);
    return r;
}

int store_writer_restoring(store_writer *w, const char *name)
{
    int r = 0;
    pthread_mutex_lock(&w->mu);
    for (wrestore *x = w->restores; x && !r; x = x->next)
        r = !strcmp(x->target, name);
    pthread_mutex_unlock(&w->mu);
    return r;
}

/* A target to be mounted after the restore is refused now, not after the whole restore, while
 * another recovery database is mounted and it is one, or becomes one (registry.mu held). */
static int recovery_mountable(store_registry *s, json_t *c, const rtarget *t)
{
    json_t *ro = json_object_get(c, "restore_options");
    for (int i = 0; t->ent.recovery && json_is_true(json_object_get(ro, "mount")) && i < s->nm; i++)
        if (s->m[i]->recovery && strcmp(s->m[i]->name, t->ent.name))
            return om_errf(OM_E_TooManyOpenDatabases,
                           "recovery database '%s' is mounted, and a server mounts one at a time: "
                           "'%s'%s could not be mounted after the restore. HINT: ombra db "
                           "dismount %s, or restore without --mount",
                           s->m[i]->name, t->ent.name,
                           t->copy_of[0] ? ", a recovery database once restored," : "",
                           s->m[i]->name);
    return 0;
}

/* A target that becomes a recovery database (resolve_target) is one in the directory once
 * PreRestore has marked it as being restored and before a file is laid, so the copy is never
 * mounted as an ordinary database (registry.mu held). */
static int become_recovery(store_registry *s, const rtarget *t)
{
    store_dbent *e = store_dir_find(s->dir, t->ent.name);
    if (!e) return om_errf(OM_E_DatabaseNotFound, "no database named '%s'", t->ent.name);
    store_dbent ne = *e;
    ne.recovery = 1;
    ne.circular = 0;
    int rc = store_dir_put(s->dir, &ne);
    if (rc) return om_err_ctx(rc, "making '%s' a recovery database", t->ent.name);
    om_log_with(
        OM_INFO, OM_FIELDS({"DATABASE", t->ent.name}),
        "%s becomes a recovery database: the restore gives it the id of %s (%s), a database "
        "of this server",
        t->ent.name, t->copy_of, t->orig_id);
    return 0;
}

static int pre_restore(void *ctx, vss_event *e)
{
    store_writer *w = ctx;
    store_registry *s = w->reg;
    json_t *targets = json_object();
    json_object_set_new(e->result, "targets", targets);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(e->args, "components"), i, c)
    {
        rtarget t;
        int replace_edb = 0, replace_logs = 0, unsynced = 0;
        om_file *old_edb = NULL, *drop_edb = NULL, *env_lock = NULL, *old_pgj = NULL;
        pthread_mutex_lock(&s->mu);
        int rc = resolve_target(w, c, &t);
        if (!rc) rc = mark_restoring(w, e->session, t.key);
        if (!rc) rc = recovery_mountable(s, c, &t);
        pthread_mutex_unlock(&s->mu);
        if (!rc)
            rc = prepare_target(&t, c, &replace_edb, &replace_logs, &unsynced, &old_edb, &drop_edb,
                                &env_lock);
        if (!rc && replace_edb) old_pgj = open_pgj(&t);
        if (!rc)
            hold_files(w, e->session, t.key, old_edb, old_pgj, env_lock, unsynced);
        else
            om_close(old_pgj);
        if (drop_edb) start_release(w, drop_edb, 1);
        if (!rc && t.copy_of[0]) {
            pthread_mutex_lock(&s->mu);
            rc = become_recovery(s, &t);
            pthread_mutex_unlock(&s->mu);
        }
        if (rc) {
            int f = vss_fail_rc(e, VSS_FAIL_NON_RETRYABLE, rc);
            unmark_session(w, e->session, NULL);
            return f;
        }
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", t.ent.name}),
                    "restore to %s prepared: the .edb goes to %s, the logs to %s", t.ent.name,
                    t.ent.edb, t.restored_dir);
        json_object_set_new(targets, str_or(c, "name", "?"),
                            json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:b, s:b, s:s?}",
                                      "name", t.ent.name, "edb", t.ent.edb, "logs", t.restored_dir,
                                      "progress", t.progress, "base", t.orig_base, "replace_edb",
                                      replace_edb, "replace_logs", replace_logs, "logs_unsynced",
                                      unsynced, "original", t.original, "recovery", t.ent.recovery,
                                      "copy_of", t.copy_of[0] ? t.copy_of : NULL));
    }
    return 0;
}

/* The restore slot whose replay eng_opts.replay_progress reports. */
typedef struct replay_seen {
    store_writer *w;
    const char *session, *target;
} replay_seen;

/* eng_opts.replay_progress of a restore's hard recovery: kept in the target's restore slot for
 * store_writer_restores (the status request), so the requester can draw its progress bar. */
static void replay_progress(void *arg, uint32_t gen, uint32_t first, uint32_t last)
{
    replay_seen *rs = arg;
    pthread_mutex_lock(&rs->w->mu);
    for (wrestore *r = rs->w->restores; r; r = r->next)
        if (!strcmp(r->session, rs->session) && !strcmp(r->target, rs->target)) {
            r->gen = gen;
            r->first = first;
            r->last = last;
        }
    pthread_mutex_unlock(&rs->w->mu);
}

json_t *store_writer_restores(store_writer *w)
{
    json_t *a = json_array();
    pthread_mutex_lock(&w->mu);
    for (wrestore *r = w->restores; r && a; r = r->next) {
        json_t *x = json_pack("{s:s, s:s}", "session", r->session, "target", r->target);
        if (x && r->gen)
            json_object_set_new(x, "replay",
                                json_pack("{s:I, s:I, s:I}", "gen", (json_int_t)r->gen, "first_gen",
                                          (json_int_t)r->first, "last_gen", (json_int_t)r->last));
        json_array_append_new(a, x);
    }
    pthread_mutex_unlock(&w->mu);
    return a;
}

/* eng_restore_opts.wait_laid: replay waits on the requester's progress file (vss/laid.h). */
static int wait_laid(void *arg, uint32_t gen)
{
    return vss_laid_wait(arg, gen);
}

/* restore_options.logs_arriving: [first_gen, last_gen], or absent. */
static int logs_arriving(json_t *ro, uint32_t *first, uint32_t *last)
{
    json_t *a = json_object_get(ro, "logs_arriving");
    *first = *last = 0;
    if (!a || json_is_null(a)) return 0;
    json_t *f = json_array_get(a, 0), *l = json_array_get(a, 1);
    json_int_t fv = json_integer_value(f), lv = json_integer_value(l);
    if (!json_is_array(a) || json_array_size(a) != 2 || !json_is_integer(f) ||
        !json_is_integer(l) || fv < 1 || lv < fv || lv > UINT32_MAX)
        return om_errf(OM_E_InvalidParameter,
                       "restore_options.logs_arriving must be [first generation, last generation] "
                       "(1 <= first <= last)");
    *first = (uint32_t)fv;
    *last = (uint32_t)lv;
    return 0;
}

/* Replays the restored logs into the target (hard recovery) and brings it to Clean Shutdown. */
static int recover_target(store_writer *w, const char *session, json_t *c, const rtarget *t,
                          json_t *out)
{
    json_t *ro = json_object_get(c, "restore_options");
    uint32_t arriving_first, arriving_last;
    int rc = logs_arriving(ro, &arriving_first, &arriving_last);
    if (rc) return rc;
    eng_restore_opts o = {.target = store_ent_opts(w->reg, &t->ent),
                          .restored_dir = t->restored_dir,
                          .restored_base = t->orig_base};
    replay_point(c, t, &o);
    replay_seen seen = {.w = w, .session = session, .target = t->key};
    o.target.replay_progress = replay_progress;
    o.target.progress_arg = &seen;
    vss_laid_waiter lw = {
        .vfs = om_vfs_posix(), .path = t->progress, .session = session, .cancel = &w->stopping};
    if (arriving_first) {
        o.arriving_first = arriving_first;
        o.arriving_last = arriving_last;
        o.wait_laid = wait_laid;
        o.wait_arg = &lw;
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", t->ent.name}),
                    "restore to %s: replay starts while log generations %u-%u are laid down",
                    t->ent.name, o.arriving_first, o.arriving_last);
    }
    pthread_mutex_lock(&w->mu);
    for (wrestore *x = w->restores; x; x = x->next)
        if (!strcmp(x->target, t->key) && !strcmp(x->session, session))
            o.laid_unsynced = x->unsynced && arriving_first;
    pthread_mutex_unlock(&w->mu);
    eng_restore_result r = {0};
    rc = eng_db_hard_recover(&o, &r);
    vss_laid_waiter_close(&lw);
    /* The .edb's name, put in place before the requester's sync of the folder may have ended:
     * on the disk before the restore stops being pending (eng_restored_retire). */
    if (!rc && o.laid_unsynced) rc = om_vfs_posix()->sync_dir(om_vfs_posix(), t->edb_dir);
    if (rc) return rc;
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", t->ent.name}),
                "restored %s: generations %u-%u replayed (%llu transactions) in %.2f s%s",
                t->ent.name, r.first_gen, r.last_gen, (unsigned long long)r.transactions,
                (double)r.ns / 1e9, r.stopped_at_point ? ", stopped at the requested point" : "");
    json_object_set_new(out, "replay",
                        json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:b, s:s?}", "first_gen",
                                  r.first_gen, "last_gen", r.last_gen, "records",
                                  (json_int_t)r.records, "held_back", (json_int_t)r.held_back,
                                  "held_back_peak_bytes", (json_int_t)r.held_peak, "transactions",
                                  (json_int_t)r.transactions, "ns", (json_int_t)r.ns,
                                  "stopped_at_point", r.stopped_at_point, "roll_forward_ended",
                                  r.roll_end[0] ? r.roll_end : NULL));
    return 0;
}

/* ---- retired restore folders ----
 *
 * PostRestore retires <logs>/_restoredLogs (eng_restored_retire: one rename and a sync, after
 * which no restore is pending) before it answers, and removes the retired folder's files on a
 * thread of its own after that: the ~300 unlinks of a chain no longer wait in the answer. A
 * failure there is a warning (what is left is removed by the next restore into that folder,
 * eng_retired_sweep at PreRestore). The threads are joined at store_writer_stop. */
typedef struct retiring {
    pthread_t th;
    int done; /* under store_writer.mu */
    store_writer *w;
    char logs[4096], name[ENG_RETIRED_NAME_MAX];
    om_file *f; /* else: a restore's replaced .edb to close (wrestore.old_edb), or to drop from
                   the page cache first (drop: a handle of its own) */
    int drop;
    struct retiring *next;
} retiring;

static void *remove_retired(void *arg)
{
    retiring *r = arg;
    om_vfs *v = om_vfs_posix();
    if (r->f && r->drop && v->dontneed) v->dontneed(r->f, 0, 0);
    if (r->f)
        om_close(r->f);
    else if (eng_retired_remove(om_vfs_posix(), r->logs, r->name))
        om_warn("removing the finished restore's logs: %s", om_err_detail());
    om_err_clear();
    pthread_mutex_lock(&r->w->mu);
    r->done = 1;
    pthread_mutex_unlock(&r->w->mu);
    return NULL;
}

/* Joins the removals that are done (all of them when all), then frees them. */
static void reap_retiring(store_writer *w, int all)
{
    pthread_mutex_lock(&w->mu);
    retiring **pp = &w->retiring, *gone = NULL;
    while (*pp) {
        retiring *r = *pp;
        if (all || r->done) {
            *pp = r->next;
            r->next = gone;
            gone = r;
        } else {
            pp = &r->next;
        }
    }
    pthread_mutex_unlock(&w->mu);
    while (gone) {
        retiring *r = gone;
        gone = r->next;
        pthread_join(r->th, NULL);
        free(r);
    }
}

/* Starts r on a thread (remove_retired); 0, or r freed and non-zero when no thread can be had. */
static int start_retiring(store_writer *w, retiring *r)
{
    reap_retiring(w, 0);
    r->w = w;
    pthread_mutex_lock(&w->mu);
    int rc = pthread_create(&r->th, NULL, remove_retired, r);
    if (rc)
        free(r);
    else {
        r->next = w->retiring;
        w->retiring = r;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* Starts the removal of <logs>/<name>; when no thread can be had, it is left for the next
 * restore into that folder (a warning). */
static void start_removal(store_writer *w, const char *logs, const char *name)
{
    retiring *r = calloc(1, sizeof *r);
    if (r) {
        snprintf(r->logs, sizeof r->logs, "%s", logs);
        snprintf(r->name, sizeof r->name, "%s", name);
    }
    if (!r || start_retiring(w, r))
        om_warn("%s/%s stays (no thread to remove it): the next restore into %s removes it", logs,
                name, logs);
}

/* Closes a restore's replaced .edb on a thread; here when none can be had. drop: its cached
 * pages dropped first (a handle of its own, opened for that). */
static void start_release(store_writer *w, om_file *f, int drop)
{
    retiring *r = calloc(1, sizeof *r);
    if (r) r->f = f, r->drop = drop;
    if (!r || start_retiring(w, r)) om_close(f);
}

/* A log folder PostRestore retired: its files go after the answer (start_removal). */
typedef struct retired_folder {
    char logs[4096], name[ENG_RETIRED_NAME_MAX];
} retired_folder;

/* PostRestore of component c: its replay (none with additional restores), the retirement of its
 * restore folder (into *ret, its name "" when there was none) and its mount when asked. Its
 * restore slot goes once it is done, not before: a later component of the session keeps its
 * own until then (another restore of that target is refused, status shows its replay, its
 * replaced .edb stays held). */
static int post_restore_one(store_writer *w, const char *session, json_t *c, json_t *res,
                            retired_folder *ret)
{
    store_registry *s = w->reg;
    rtarget t;
    pthread_mutex_lock(&s->mu);
    int rc = resolve_target(w, c, &t);
    pthread_mutex_unlock(&s->mu);
    json_t *out = json_pack("{s:s}", "name", t.ent.name);
    json_object_set_new(res, str_or(c, "name", "?"), out);
    if (rc) return rc;
    if (json_is_true(json_object_get(c, "additional_restores"))) {
        json_object_set_new(out, "replayed", json_false());
        return 0; /* more backups come first: replay later (the slot goes at the session's end) */
    }
    if ((rc = recover_target(w, session, c, &t, out))) return rc;
    /* Retired (no restore pending from here on); its files go after the answer. */
    rc = eng_restored_retire(om_vfs_posix(), t.ent.logs, t.orig_base, ret->name, sizeof ret->name);
    if (rc) return rc;
    if (ret->name[0]) snprintf(ret->logs, sizeof ret->logs, "%s", t.ent.logs);
    /* The slot goes, and the mount follows, under registry.mu: no other restore of the target
     * starts in between (PreRestore marks it under registry.mu). */
    json_t *ro = json_object_get(c, "restore_options");
    int mount = t.in_dir && json_is_true(json_object_get(ro, "mount"));
    pthread_mutex_lock(&s->mu);
    unmark_session(w, session, t.key);
    store_dbent *ent = mount ? store_dir_find(s->dir, t.ent.name) : NULL;
    if (mount)
        rc = ent ? store_mount_locked(s, ent, 0)
                 : om_errf(OM_E_DatabaseNotFound,
                           "'%s' is no longer in the directory: restored, not mounted", t.ent.name);
    if (mount && !rc) {
        store_dbent ne = *ent;
        ne.mounted = 1;
        rc = store_dir_put(s->dir, &ne);
    }
    pthread_mutex_unlock(&s->mu);
    if (mount && !rc) json_object_set_new(out, "mounted", json_true());
    return rc;
}

/* Every component in order, stopping at the first that fails. The session's slots all go at
 * the one exit, whatever happened (a failed component's, those after it, and those of
 * components with additional restores), before the answer. */
static int post_restore(void *ctx, vss_event *e)
{
    store_writer *w = ctx;
    json_t *res = json_object();
    json_object_set_new(e->result, "targets", res);
    json_t *comps = json_object_get(e->args, "components"), *c;
    size_t i, nretired = 0;
    int rc = 0;
    retired_folder *retired = calloc(json_array_size(comps) + 1, sizeof *retired);
    if (!retired)
        rc = om_errf(OM_E_OutOfMemory, "PostRestore of session %s: out of memory", e->session);
    json_array_foreach(comps, i, c)
    {
        if (rc || (rc = post_restore_one(w, e->session, c, res, &retired[nretired]))) break;
        if (retired[nretired].name[0]) nretired++;
    }
    /* The requester hears why; the log says it too (a requester cut off by the store's stop
     * hears only that the writer went). */
    if (rc) om_warn("restore session %s: PostRestore failed: %s", e->session, om_err_detail());
    unmark_session(w, e->session, NULL);
    rc = rc ? vss_fail_rc(e, VSS_FAIL_RECOVERY_FAILED, rc) : 0;
    for (size_t k = 0; k < nretired; k++)
        start_removal(w, retired[k].logs, retired[k].name);
    free(retired);
    return rc;
}

/* ---- start, stop ---- */

/* One instance id per server name, the same across restarts. */
static void instance_of(const char *server, char out[37])
{
    char key[300];
    snprintf(key, sizeof key, "ombra-store writer instance: %s", server);
    uint64_t a = om_xxh3(key, strlen(key), 1), b = om_xxh3(key, strlen(key), 2);
    om_uuid u;
    memcpy(u.b, &a, 8);
    memcpy(u.b + 8, &b, 8);
    u.b[6] = (uint8_t)((u.b[6] & 0x0f) | 0x80); /* version 8: made up from a name */
    u.b[8] = (uint8_t)((u.b[8] & 0x3f) | 0x80);
    om_uuid_str(&u, out);
}

int store_writer_start(store_registry *s, store_writer **out)
{
    store_writer *w = calloc(1, sizeof *w);
    if (!w) return om_errf(OM_E_OutOfMemory, "starting the writer: out of memory");
    w->reg = s;
    pthread_mutex_init(&w->mu, NULL);
    instance_of(s->server, w->instance_id);
    snprintf(w->logical, sizeof w->logical, "Ombra Store\\%.180s", s->server);
    vss_writer_info info = {.class_id = WRITER_CLASS,
                            .instance_id = w->instance_id,
                            .name = WRITER_NAME,
                            .can_hold = 1};
    static const vss_writer_ops ops = {.identify = identify,
                                       .prepare_backup = prepare_backup,
                                       .prepare_snapshot = prepare_snapshot,
                                       .freeze = freeze,
                                       .thaw = thaw,
                                       .post_snapshot = post_snapshot,
                                       .backup_complete = backup_complete,
                                       .abort = end_session,
                                       .backup_shutdown = backup_shutdown,
                                       .pre_restore = pre_restore,
                                       .post_restore = post_restore};
    /* Told of every dismount from before the first event until after the last. */
    int rc = store_registry_on_closing(s, db_closing, w);
    if (!rc && (rc = vss_writer_start(&info, &ops, w, &w->vw)))
        store_registry_off_closing(s, db_closing, w);
    if (rc) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void store_writer_stop(store_writer *w)
{
    if (!w) return;
    /* A replay waiting for generations a stalled requester has not laid gives up (the restore
     * fails, as one the store's stop cuts off), so the sessions can end. */
    __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
    vss_writer_stop(w->vw); /* aborts open sessions: holds released */
    store_registry_off_closing(w->reg, db_closing, w);
    reap_retiring(w, 1);
    while (w->restores) {
        wrestore *r = w->restores;
        w->restores = r->next;
        om_close(r->old_edb);
        free(r);
    }
    pthread_mutex_destroy(&w->mu);
    free(w);
}
