/* The replica writer (replica_writer.h). Backup state lives in a table of copies by database id,
 * in memory only, under w->mu; the copy lock is taken and released outside it (taking it may
 * wait for a replay). The copies themselves come from ombra-repld's copiers through cfg.list. */
#include "repl/replica_writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/hash.h"
#include "base/logging.h"
#include "base/pool.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/uuid.h"
#include "base/vfs.h"
#include "engine/format.h"
#include "repl/reseed.h"
#include "vss/writer.h"

#define WRITER_CLASS "8f1e6c27-3a9d-4b52-9e07-c4d1a2b35f68"
#define WRITER_NAME  "Ombra Replica Writer"
#define MAX_COPIES   256
/* How long Freeze waits for a replay (or a seed read from the copy) to finish. */
#define FREEZE_WAIT_MS 5000
/* How long Freeze waits for the copy to inspect the generation the active closed at prepare. */
#define CLOSED_WAIT_MS 10000

typedef struct wcopy {
    char id[40], name[80];
    char session[40]; /* the backup in progress; "" when none */
    char type[16];
    int lock;    /* the copy lock while frozen or held (-1: not held) */
    int holding; /* the session froze with hold: the lock stays until the session ends */
    /* At freeze, under the lock: what the shadow copy holds. */
    uint32_t replayed, lr_min, lr_max;
    eng_sig log_sig, db_sig;
    /* From the active at prepare: the generation it closed then (the backup holds at least
     * up to it), its clock then (the backup's mark time), the header's previous full and
     * incremental (last generations; inc_newer: the incremental is the later one). */
    uint32_t closed, full_last, inc_last;
    int inc_newer, circular;
    uint64_t prep_time;
    /* At freeze: the generations the backup holds, the copy's checkpoint. */
    uint32_t first, last;
    eng_lgpos ckpt;
    /* BackupComplete: recorded by the active; what its BackupShutdown may truncate below. */
    int recorded;
    uint32_t below;
} wcopy;

/* A copy left out of a session that names several (its PrepareBackup or Freeze failed): the
 * others go on, and PostSnapshot gives its failure instead of its metadata. */
typedef struct wleft {
    char session[40], id[40];
    int rc;
    char why[512];
} wleft;

struct rp_replica_writer {
    rp_replica_writer_cfg cfg;
    char server[80], data_dir[4096];
    vss_writer *vw;
    pthread_mutex_t mu;
    wcopy copies[MAX_COPIES];
    wleft left[MAX_COPIES];
    char instance_id[37], logical[200];
};

/* ---- copies ---- */

/* The copy with that id as its copier knows it; 0 when this server holds none. */
static int find_copy(rp_replica_writer *w, const char *id, rp_replica *out)
{
    rp_replica *all = calloc(MAX_COPIES, sizeof *all);
    if (!all) return 0;
    int n = w->cfg.list(w->cfg.ctx, all, MAX_COPIES), found = 0;
    for (int i = 0; i < n && !found; i++)
        if (!strcmp(all[i].db_id, id)) {
            *out = all[i];
            found = 1;
        }
    free(all);
    return found;
}

/* The table entry of a database id (created when asked). Under w->mu. */
static wcopy *wcopy_get(rp_replica_writer *w, const char *id, int create)
{
    wcopy *free_slot = NULL;
    for (int i = 0; i < MAX_COPIES; i++) {
        if (!strcmp(w->copies[i].id, id)) return &w->copies[i];
        if (!w->copies[i].id[0] && !free_slot) free_slot = &w->copies[i];
    }
    if (!create || !free_slot) return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    free_slot->lock = -1;
    snprintf(free_slot->id, sizeof free_slot->id, "%s", id);
    return free_slot;
}

static void copy_paths(rp_replica_writer *w, const rp_replica *c, char *dir, size_t nd, char *edb,
                       size_t ne, char *logs, size_t nl)
{
    if (c->edb[0] && c->logs[0]) { /* replayed in place: the folder of its .edb */
        snprintf(edb, ne, "%s", c->edb);
        snprintf(logs, nl, "%s", c->logs);
        const char *slash = strrchr(c->edb, '/');
        snprintf(dir, nd, "%.*s", slash && slash != c->edb ? (int)(slash - c->edb) : 1,
                 slash ? c->edb : ".");
        return;
    }
    snprintf(dir, nd, "%s/copies/%s", w->data_dir, c->db_id);
    snprintf(edb, ne, "%s/%s.edb", dir, c->name);
    snprintf(logs, nl, "%s/logs", dir);
}

/* The name of the i-th component of an event's "components" (a string, or {"name"}). */
static const char *arg_comp(json_t *comps, size_t i)
{
    json_t *c = json_array_get(comps, i);
    return json_is_string(c) ? json_string_value(c) : json_string_value(json_object_get(c, "name"));
}

/* 1 when a component of comps before the n-th names the copy `id` (not its Logs). */
static int named_before(rp_replica_writer *w, json_t *comps, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++) {
        char other[37];
        int is_logs = 0;
        if (vss_comp_split(w->logical, arg_comp(comps, i), other, &is_logs) && !is_logs &&
            !strcmp(other, id))
            return 1;
    }
    return 0;
}

/* The entry of a copy left out of session (NULL: it is not). Under w->mu. */
static wleft *left_get(rp_replica_writer *w, const char *session, const char *id)
{
    for (int i = 0; i < MAX_COPIES; i++)
        if (w->left[i].id[0] && !strcmp(w->left[i].session, session) && !strcmp(w->left[i].id, id))
            return &w->left[i];
    return NULL;
}

static int is_left(rp_replica_writer *w, const char *session, const char *id)
{
    pthread_mutex_lock(&w->mu);
    int left = left_get(w, session, id) != NULL;
    pthread_mutex_unlock(&w->mu);
    return left;
}

/* The copies the event names, each once (Logs go with their copy; a copy named twice is handled
 * once; a copy left out of the session is not named any more): their ids and component names,
 * up to MAX_COPIES. */
static size_t named_copies(rp_replica_writer *w, vss_event *e, char (*ids)[37], const char **comps)
{
    json_t *all = json_object_get(e->args, "components");
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(all) && n < MAX_COPIES; i++) {
        const char *comp = arg_comp(all, i);
        int is_logs = 0;
        if (!vss_comp_split(w->logical, comp, ids[n], &is_logs) || is_logs ||
            named_before(w, all, i, ids[n]) || is_left(w, e->session, ids[n]))
            continue;
        comps[n++] = comp;
    }
    return n;
}

/* Calls fn once for every copy the event names (named_copies), one after another; stops at the
 * first failure. */
typedef int (*copy_fn)(rp_replica_writer *w, vss_event *e, const char *id, const char *comp);

static int each_copy(rp_replica_writer *w, vss_event *e, copy_fn fn)
{
    char(*ids)[37] = calloc(MAX_COPIES, sizeof *ids);
    const char **comps = calloc(MAX_COPIES, sizeof *comps);
    int rc = ids && comps ? 0 : vss_fail(e, VSS_FAIL_OUT_OF_RESOURCES, "out of memory");
    size_t n = rc ? 0 : named_copies(w, e, ids, comps);
    for (size_t i = 0; i < n && !rc; i++)
        rc = fn(w, e, ids[i], comps[i]);
    free(ids);
    free(comps);
    return rc;
}

/* PrepareBackup and Freeze of several copies (docs/design.md, "backup --all from passive
 * copies"): fn runs for every copy at once (a freeze waits for a replay to end, a prepare for
 * the active: copies never wait for one another), each on its own event. A copy that fails is
 * left out of the session (wleft) and the others go on; the event fails only when every copy
 * failed (with the first one's failure). One copy alone: fn on the event itself, its failure
 * the session's, as always. */
typedef struct apart {
    rp_replica_writer *w;
    vss_event *e;
    copy_fn fn;
    char (*ids)[37];
    const char **comps;
    vss_event *subs;
    int *rcs;
} apart;

static int apart_one(void *arg, void *ws, size_t i)
{
    apart *a = arg;
    (void)ws;
    vss_event *sub = &a->subs[i];
    *sub = (vss_event){.name = a->e->name, .session = a->e->session, .args = a->e->args};
    sub->result = json_object();
    a->rcs[i] = a->fn(a->w, sub, a->ids[i], a->comps[i]);
    if (a->rcs[i] && !sub->reason[0])
        snprintf(sub->reason, sizeof sub->reason, "%s", om_err_detail());
    json_decref(sub->result);
    return 0; /* a copy's failure is its own */
}

static void leave_out(rp_replica_writer *w, vss_event *e, const char *id, int rc, const char *why)
{
    pthread_mutex_lock(&w->mu);
    wleft *l = NULL;
    for (int i = 0; i < MAX_COPIES && !l; i++)
        if (!w->left[i].id[0]) l = &w->left[i];
    if (l) {
        snprintf(l->session, sizeof l->session, "%s", e->session);
        snprintf(l->id, sizeof l->id, "%s", id);
        snprintf(l->why, sizeof l->why, "%s", why);
        l->rc = rc;
    }
    pthread_mutex_unlock(&w->mu);
    om_log_with(OM_WARN, OM_FIELDS({"SESSION", e->session}),
                "replica writer: the copy of database %s is left out of backup session %s at %s: "
                "%s",
                id, e->session, e->name, why);
}

static int each_copy_apart(rp_replica_writer *w, vss_event *e, copy_fn fn)
{
    char(*ids)[37] = calloc(MAX_COPIES, sizeof *ids);
    const char **comps = calloc(MAX_COPIES, sizeof *comps);
    vss_event *subs = calloc(MAX_COPIES, sizeof *subs);
    int *rcs = calloc(MAX_COPIES, sizeof *rcs);
    int rc =
        ids && comps && subs && rcs ? 0 : vss_fail(e, VSS_FAIL_OUT_OF_RESOURCES, "out of memory");
    size_t n = rc ? 0 : named_copies(w, e, ids, comps);
    if (n == 1) rc = fn(w, e, ids[0], comps[0]);
    if (n > 1) {
        apart a = {w, e, fn, ids, comps, subs, rcs};
        om_pool pool = {.workers = (int)n, .ctx = &a, .fn = apart_one};
        om_pool_run(&pool, n); /* apart_one never fails: each copy's outcome is in rcs */
        size_t failed = 0;
        for (size_t i = 0; i < n; i++)
            if (rcs[i]) {
                leave_out(w, e, ids[i], rcs[i], subs[i].reason);
                failed++;
            }
        if (failed == n)
            rc = vss_fail(e, subs[0].failure ? subs[0].failure : VSS_FAIL_NON_RETRYABLE, "%s",
                          subs[0].reason);
    }
    free(ids);
    free(comps);
    free(subs);
    free(rcs);
    return rc;
}

/* The session's entry of a copy, or a failure (an event for a copy this session never
 * prepared, or ombra-repld restarted meanwhile). Under w->mu. */
static int session_copy(rp_replica_writer *w, vss_event *e, const char *id, wcopy **out)
{
    wcopy *d = wcopy_get(w, id, 0);
    *out = d;
    if (!d || strcmp(d->session, e->session))
        return vss_fail(e, VSS_FAIL_NON_RETRYABLE,
                        "the copy of database %s on server %s is not in backup session %s (did "
                        "ombra-repld restart?)",
                        id, w->server, e->session);
    return 0;
}

/* ---- Identify ---- */

static int identify(void *ctx, vss_event *e)
{
    rp_replica_writer *w = ctx;
    vss_writer_info info = {.class_id = WRITER_CLASS,
                            .instance_id = w->instance_id,
                            .name = WRITER_NAME,
                            .can_hold = 1};
    json_t *md = vss_wmd_new(&info, NULL, "custom");
    rp_replica *all = calloc(MAX_COPIES, sizeof *all);
    if (!md || !all) {
        json_decref(md);
        free(all);
        return vss_fail(e, VSS_FAIL_OUT_OF_RESOURCES, "out of memory");
    }
    int n = w->cfg.list(w->cfg.ctx, all, MAX_COPIES);
    for (int i = 0; i < n; i++) {
        const rp_replica *c = &all[i];
        /* Only a Healthy copy is what the active holds, up to its replay queue. */
        if (strcmp(c->state, "Healthy") || !c->name[0]) continue;
        char dir[4200], edb[4300], logs[4300], sub[300], spec[32], chk[4400], ex[32];
        copy_paths(w, c, dir, sizeof dir, edb, sizeof edb, logs, sizeof logs);
        json_t *comp = vss_wmd_add_component(md, w->logical, c->db_id, c->name, 1);
        vss_wmd_add_file(comp, edb, NULL, 0, 1); /* only a replay writes it: held from Freeze */
        vss_wmd_add_path(comp, dir);
        /* The open generation streamed in block mode: copying state, not the copy. */
        snprintf(ex, sizeof ex, "%s.stream", c->base);
        vss_wmd_add_exclude(comp, dir, ex);
        snprintf(sub, sizeof sub, "%s\\%s", w->logical, c->db_id);
        json_t *l = vss_wmd_add_component(md, sub, "Logs", c->name, 0);
        snprintf(spec, sizeof spec, "%s????????.log", c->base);
        vss_wmd_add_file(l, logs, spec, 0, 1); /* finished generations never change */
        snprintf(chk, sizeof chk, "%s/%s.chk", logs, c->base);
        vss_wmd_add_file(l, chk, NULL, 0, 1); /* written by a replay only */
        vss_wmd_add_path(l, logs);
        snprintf(ex, sizeof ex, "%s.pgj", c->base);
        vss_wmd_add_exclude(l, logs, ex);
    }
    free(all);
    json_object_set_new(e->result, "metadata", md);
    return 0;
}

/* ---- PrepareBackup ---- */

/* A refusal of the active's that trying again does not cure (the type cannot be taken now). */
static vss_failure active_failure(int rc)
{
    return rc == OM_E_InvalidBackup || rc == OM_E_MissingFullBackup ||
                   rc == OM_E_InvalidBackupSequence || rc == OM_E_InvalidParameter
               ? VSS_FAIL_NON_RETRYABLE
               : VSS_FAIL_RETRYABLE;
}

/* The active's part of PrepareBackup ("prepare", wire.h): whether a backup of type may be taken
 * (it says so for its own database: circular logging, no full backup), the header's slots the
 * log range is counted from (the copy's own header may not have replayed the newest yet), and
 * the generation it closes now. The copy is backed up only as the active sees it now. */
static int ask_prepare(rp_replica_writer *w, vss_event *e, const char *id, const char *name,
                       const char *type)
{
    json_t *rep = NULL;
    int rc = w->cfg.ask_active(
        w->cfg.ctx, id, name,
        json_pack("{s:s,s:s,s:s}", "op", "backup", "action", "prepare", "type", type), &rep);
    if (rc) {
        rc = om_err_ctx(rc,
                        "a backup of the copy of '%s' on server %s is recorded by the active "
                        "server, which did not agree to it",
                        name, w->server);
        return vss_fail_rc(e, active_failure(rc), rc);
    }
    json_t *full = json_object_get(rep, "previous_full"),
           *inc = json_object_get(rep, "previous_incremental");
    pthread_mutex_lock(&w->mu);
    wcopy *d = wcopy_get(w, id, 0);
    if (d && !strcmp(d->session, e->session)) {
        d->closed = (uint32_t)om_json_int_or(rep, "closed", 0);
        d->circular = json_is_true(json_object_get(rep, "circular_logging"));
        d->prep_time = (uint64_t)om_json_int_or(rep, "time_ns", 0);
        d->full_last = (uint32_t)om_json_int_or(full, "last_gen", 0);
        d->inc_last = (uint32_t)om_json_int_or(inc, "last_gen", 0);
        d->inc_newer = json_is_object(inc) && om_json_int_or(inc, "mark_time_ns", 0) >
                                                  om_json_int_or(full, "mark_time_ns", 0);
    }
    pthread_mutex_unlock(&w->mu);
    json_decref(rep);
    return 0;
}

static int prepare_one(rp_replica_writer *w, vss_event *e, const char *id, const char *comp)
{
    rp_replica c;
    (void)comp;
    if (!find_copy(w, id, &c))
        return vss_fail_rc(e, VSS_FAIL_NON_RETRYABLE,
                           om_errf(OM_E_DatabaseNotFound,
                                   "server %s holds no passive copy of database %s. HINT: ombra db "
                                   "copy status shows where its copies are",
                                   w->server, id));
    if (strcmp(c.state, "Healthy")) {
        int susp = !strcmp(c.state, "Suspended");
        char hint[300];
        if (susp)
            snprintf(hint, sizeof hint,
                     "ombra db copy resume %s --server %s, or back up another copy", c.name,
                     w->server);
        else
            snprintf(hint, sizeof hint,
                     "wait until ombra db copy status %s says Healthy, or back up another copy",
                     c.name);
        return vss_fail_rc(e, susp ? VSS_FAIL_NON_RETRYABLE : VSS_FAIL_RETRYABLE,
                           om_errf(OM_E_DatabaseUnavailable,
                                   "the copy of '%s' on server %s is %s, not Healthy: only a "
                                   "Healthy copy is backed up. HINT: %s",
                                   c.name, w->server, c.state, hint));
    }
    uint32_t queue = c.inspected > c.replayed ? c.inspected - c.replayed : 0;
    if (queue > w->cfg.replay_queue_limit)
        return vss_fail_rc(e, VSS_FAIL_RETRYABLE,
                           om_errf(OM_E_DatabaseUnavailable,
                                   "the copy of '%s' on server %s has %u generations copied but "
                                   "not replayed, more than the %u a backup allows "
                                   "(--backup-replay-queue). HINT: back up another copy, or wait "
                                   "until it replays (a copy with a replay lag stays behind on "
                                   "purpose)",
                                   c.name, w->server, queue, w->cfg.replay_queue_limit));
    const char *type = json_string_value(json_object_get(e->args, "type"));
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    wcopy *d = wcopy_get(w, id, 1);
    if (!d)
        rc = om_errf(OM_E_OutOfMemory, "too many copies in backups at once");
    else if (d->session[0] && strcmp(d->session, e->session))
        rc = om_errf(OM_E_BackupInProgress,
                     "the copy of '%s' on server %s is being backed up by session %s", c.name,
                     w->server, d->session);
    else {
        snprintf(d->session, sizeof d->session, "%s", e->session);
        snprintf(d->type, sizeof d->type, "%s", type ? type : "full");
        snprintf(d->name, sizeof d->name, "%s", c.name);
    }
    pthread_mutex_unlock(&w->mu);
    if (rc)
        return vss_fail_rc(
            e, rc == OM_E_BackupInProgress ? VSS_FAIL_RETRYABLE : VSS_FAIL_OUT_OF_RESOURCES, rc);
    return ask_prepare(w, e, id, c.name, type ? type : "full");
}

/* A copy's Logs selected without the copy: a backup selects whole databases (spec §5). */
static int logs_alone(rp_replica_writer *w, vss_event *e)
{
    json_t *comps = json_object_get(e->args, "components");
    for (size_t i = 0; i < json_array_size(comps); i++) {
        const char *comp = arg_comp(comps, i);
        char id[37];
        int is_logs = 0;
        if (!vss_comp_split(w->logical, comp, id, &is_logs) || !is_logs ||
            named_before(w, comps, json_array_size(comps), id))
            continue;
        return vss_fail_rc(e, VSS_FAIL_NON_RETRYABLE,
                           om_errf(OM_E_InvalidParameter,
                                   "component '%s' holds the logs of a copy only: a backup selects "
                                   "whole databases. HINT: select '%s\\%s'",
                                   comp, w->logical, id));
    }
    return 0;
}

static int prepare_backup(void *ctx, vss_event *e)
{
    int rc = logs_alone(ctx, e);
    return rc ? rc : each_copy_apart(ctx, e, prepare_one);
}

/* ---- Freeze, Thaw ---- */

/* Waits (the copy lock held: replay waits, copying and inspecting go on) until the copy has
 * inspected the generation the active closed at prepare; c: the copy then. */
static int wait_closed(rp_replica_writer *w, const char *id, const wcopy *d, rp_replica *c)
{
    pthread_mutex_lock(&w->mu);
    uint32_t closed = d->closed;
    pthread_mutex_unlock(&w->mu);
    uint64_t until = om_mono_ns() + (uint64_t)CLOSED_WAIT_MS * 1000000u;
    for (;;) {
        if (!find_copy(w, id, c))
            return om_errf(OM_E_DatabaseNotFound, "server %s no longer holds a copy of %s",
                           w->server, id);
        if (c->inspected >= closed) return 0;
        if (om_mono_ns() > until)
            return om_errf(OM_E_DatabaseUnavailable,
                           "the copy of '%s' on server %s has not received generation %u, which "
                           "the active closed for this backup, within %d s (it has %u). HINT: "
                           "ombra db copy status %s says why; try again, or back up another copy",
                           c->name, w->server, closed, CLOSED_WAIT_MS / 1000, c->inspected,
                           c->name);
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* The generations a backup of the copy holds (the store writer's rule, spec §5, with the
 * active's slots from prepare): full and copy from the copy's checkpoint; incremental since the
 * last full or incremental; differential since the last full; up to the last generation the
 * copy has inspected. Under w->mu. */
static void log_range(const wcopy *d, uint32_t ckpt_gen, uint32_t inspected, uint32_t *first,
                      uint32_t *last)
{
    *last = inspected;
    if (!strcmp(d->type, "incremental"))
        *first = (d->inc_newer && d->inc_last > d->full_last ? d->inc_last : d->full_last) + 1;
    else if (!strcmp(d->type, "differential"))
        *first = d->full_last + 1;
    else
        *first = ckpt_gen;
    if (*first > *last) *first = *last; /* nothing new: the last generation alone */
}

static int freeze_one(rp_replica_writer *w, vss_event *e, const char *id, const char *comp)
{
    wcopy *d;
    (void)comp;
    pthread_mutex_lock(&w->mu);
    int rc = session_copy(w, e, id, &d), again = !rc && d->lock >= 0;
    pthread_mutex_unlock(&w->mu);
    if (rc) return rc;
    if (again) return 0; /* frozen by this session already: never a wait for our own lock */
    rp_replica c;
    if (!find_copy(w, id, &c) || strcmp(c.state, "Healthy"))
        return vss_fail_rc(e, VSS_FAIL_RETRYABLE,
                           om_errf(OM_E_DatabaseUnavailable,
                                   "the copy of database %s on server %s stopped being Healthy "
                                   "before the freeze (%s). HINT: try again once it is Healthy",
                                   id, w->server, find_copy(w, id, &c) ? c.state : "removed"));
    /* The copier replays under this lock: once we hold it, no replay runs and none starts, so
     * the .edb, its header and the checkpoint stand at the end of the last one. */
    int lk = -1;
    if ((rc = rp_copy_lock(w->data_dir, id, FREEZE_WAIT_MS, NULL, &lk)))
        return vss_fail_rc(e, VSS_FAIL_RETRYABLE, rc);
    /* What the copy holds now (the copier counts after each replay, under the same lock), read
     * before a thaw lets replay change it. */
    char dir[4200], edb[4300], logs[4300], chk[4400];
    eng_dbhdr h;
    eng_chkfile cf;
    uint32_t first, last;
    rc = wait_closed(w, id, d, &c);
    copy_paths(w, &c, dir, sizeof dir, edb, sizeof edb, logs, sizeof logs);
    snprintf(chk, sizeof chk, "%s/%s.chk", logs, c.base);
    if (!rc) rc = eng_dbhdr_read(om_vfs_posix(), edb, &h, 0, NULL);
    if (!rc) rc = eng_chk_read(om_vfs_posix(), chk, &cf, NULL);
    if (rc) {
        rp_copy_unlock(lk);
        return vss_fail_rc(e, VSS_FAIL_RETRYABLE, rc);
    }
    pthread_mutex_lock(&w->mu);
    log_range(d, cf.checkpoint.gen, c.inspected, &first, &last);
    d->first = first;
    d->last = last;
    d->ckpt = cf.checkpoint;
    d->lock = lk;
    d->holding = json_is_true(json_object_get(e->args, "hold"));
    d->replayed = c.replayed;
    d->lr_min = h.log_req_min;
    d->lr_max = h.log_req_max;
    d->log_sig = h.log_sig;
    d->db_sig = h.db_sig;
    pthread_mutex_unlock(&w->mu);
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", d->name}, {"SESSION", e->session}),
                "replica writer: copy of %s frozen at generation %u (session %s%s)", d->name,
                c.replayed, e->session, d->holding ? ", held" : "");
    return 0;
}

static int freeze(void *ctx, vss_event *e)
{
    return each_copy_apart(ctx, e, freeze_one);
}

static int thaw_one(rp_replica_writer *w, vss_event *e, const char *id, const char *comp)
{
    wcopy *d;
    (void)comp;
    int lk = -1;
    pthread_mutex_lock(&w->mu);
    int rc = session_copy(w, e, id, &d);
    if (!rc && !d->holding) { /* held: the shadow copy's hard links are the .edb itself */
        lk = d->lock;
        d->lock = -1;
    }
    pthread_mutex_unlock(&w->mu);
    rp_copy_unlock(lk);
    return rc;
}

static int thaw(void *ctx, vss_event *e)
{
    return each_copy(ctx, e, thaw_one);
}

/* ---- PostSnapshot ---- */

static json_t *sig_json(const eng_sig *s)
{
    char r[20];
    snprintf(r, sizeof r, "%016llx", (unsigned long long)s->random);
    return json_pack("{s:s, s:I}", "random", r, "time", (json_int_t)s->time);
}

static int post_one(rp_replica_writer *w, vss_event *e, const char *id, const char *comp)
{
    wcopy *d;
    pthread_mutex_lock(&w->mu);
    int rc = session_copy(w, e, id, &d);
    wcopy copy;
    if (!rc) copy = *d;
    pthread_mutex_unlock(&w->mu);
    if (rc) return rc;
    rp_replica c;
    if (!find_copy(w, id, &c))
        return vss_fail_rc(e, VSS_FAIL_NON_RETRYABLE,
                           om_errf(OM_E_DatabaseNotFound,
                                   "server %s no longer holds a copy of database %s", w->server,
                                   id));
    char dir[4200], edb[4300], logs[4300];
    copy_paths(w, &c, dir, sizeof dir, edb, sizeof edb, logs, sizeof logs);
    char t[40];
    json_t *md = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:[i,i], s:i, s:[i,i], s:[i,i], "
        "s:s, s:I, s:[i,i], s:b}",
        "db_id", id, "db_name", copy.name, "server", w->server, "copy", "passive", "type",
        copy.type, "edb", edb, "logs", logs, "base", c.base, "log_signature",
        sig_json(&copy.log_sig), "db_signature", sig_json(&copy.db_sig), "log_required",
        copy.lr_min, copy.lr_max, "replayed", copy.replayed, "checkpoint", copy.ckpt.gen,
        copy.ckpt.off, "mark", copy.last + 1, 0, "mark_time",
        om_time_iso(copy.prep_time, t, sizeof t), "mark_time_ns", (json_int_t)copy.prep_time,
        "log_range", copy.first, copy.last, "circular_logging", copy.circular);
    json_t *cs = json_object_get(e->result, "components");
    if (!cs) {
        cs = json_object();
        json_object_set_new(e->result, "components", cs);
    }
    json_object_set_new(cs, comp, md);
    return 0;
}

/* PostSnapshot of a copy left out of the session: its failure where its metadata would be
 * (the requester fails it alone: backup/job.c). */
static void post_left(rp_replica_writer *w, vss_event *e)
{
    json_t *cs = json_object_get(e->result, "components");
    for (int i = 0; i < MAX_COPIES; i++) {
        pthread_mutex_lock(&w->mu);
        wleft l = w->left[i];
        pthread_mutex_unlock(&w->mu);
        if (!l.id[0] || strcmp(l.session, e->session)) continue;
        if (!cs) json_object_set_new(e->result, "components", cs = json_object());
        char comp[300];
        snprintf(comp, sizeof comp, "%s\\%s", w->logical, l.id);
        json_object_set_new(cs, comp,
                            json_pack("{s:s, s:i, s:s, s:s}", "error", l.why, "code", l.rc,
                                      "server", w->server, "copy", "passive"));
    }
}

static int post_snapshot(void *ctx, vss_event *e)
{
    int rc = each_copy(ctx, e, post_one);
    if (!rc) post_left(ctx, e);
    return rc;
}

/* ---- BackupComplete, the end of a session ---- */

/* A component the requester says succeeded that is not this session's here: ombra-repld
 * restarted during the backup (its copy lock went with it: the copy may have replayed). */
static int unknown_success(rp_replica_writer *w, vss_event *e)
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
        wcopy *d = wcopy_get(w, id, 0);
        int known = d && !strcmp(d->session, e->session);
        pthread_mutex_unlock(&w->mu);
        if (!known)
            return vss_fail_rc(e, VSS_FAIL_NON_RETRYABLE,
                               om_errf(OM_E_ShadowCopyInvalid,
                                       "the backup of the copy of %s on server %s in session %s is "
                                       "not known to its writer: ombra-repld restarted during the "
                                       "backup, so the copy was not held. HINT: run the backup "
                                       "again",
                                       id, w->server, e->session));
    }
    return 0;
}

/* A passive never writes its own header (spec §8): each succeeded copy's backup is recorded by
 * the active ("record", wire.h), as a log record that reaches every copy by replay. The active
 * unreachable or refusing fails BackupComplete: the requester keeps no set of it, and nothing is
 * truncated anywhere. */
static int backup_complete(void *ctx, vss_event *e)
{
    rp_replica_writer *w = ctx;
    int first = unknown_success(w, e);
    for (int i = 0; i < MAX_COPIES && !first; i++) {
        pthread_mutex_lock(&w->mu);
        wcopy d = w->copies[i];
        pthread_mutex_unlock(&w->mu);
        if (!d.id[0] || strcmp(d.session, e->session)) continue;
        char comp[300];
        snprintf(comp, sizeof comp, "%s\\%s", w->logical, d.id);
        if (!vss_event_succeeded(e, comp)) {
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", d.name}, {"SESSION", e->session}),
                        "replica writer: the backup of the copy of %s in session %s did not "
                        "succeed: nothing recorded",
                        d.name, e->session);
            continue;
        }
        json_t *rep = NULL;
        int rc = w->cfg.ask_active(
            w->cfg.ctx, d.id, d.name,
            json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "op", "backup", "action", "record",
                      "type", d.type, "first_gen", (json_int_t)d.first, "last_gen",
                      (json_int_t)d.last, "mark_gen", (json_int_t)d.last + 1, "mark_off",
                      (json_int_t)0, "mark_time_ns", (json_int_t)d.prep_time),
            &rep);
        json_decref(rep);
        if (rc) {
            rc = om_err_ctx(rc,
                            "the %s backup of the copy of '%s' on server %s was not recorded by "
                            "the active server, so it does not count and nothing is truncated",
                            d.type, d.name, w->server);
            om_warn("replica writer: %s", om_err_detail());
            first = vss_fail_rc(e, VSS_FAIL_RETRYABLE, rc);
            break;
        }
        om_log_with(
            OM_INFO, OM_FIELDS({"DATABASE", d.name}, {"SESSION", e->session}),
            "replica writer: %s backup of the copy of %s (generations %u-%u) recorded by the "
            "active",
            d.type, d.name, d.first, d.last);
        pthread_mutex_lock(&w->mu);
        if (!strcmp(w->copies[i].session, e->session)) {
            w->copies[i].recorded = 1;
            w->copies[i].below = (!strcmp(d.type, "full") || !strcmp(d.type, "incremental"))
                                     ? (d.ckpt.gen < d.last ? d.ckpt.gen : d.last)
                                     : 0;
        }
        pthread_mutex_unlock(&w->mu);
    }
    return first;
}

/* The logs a recorded full or incremental backup of a copy holds go only once the requester
 * says it stored the backup, and only where the rules of truncation across copies let them:
 * the active deletes (its floor keeps what a copy still needs) and every copy follows it. */
static void truncate_stored(rp_replica_writer *w, vss_event *e)
{
    for (int i = 0; i < MAX_COPIES; i++) {
        pthread_mutex_lock(&w->mu);
        wcopy d = w->copies[i];
        pthread_mutex_unlock(&w->mu);
        if (!d.id[0] || strcmp(d.session, e->session) || !d.recorded || !d.below) continue;
        char comp[300];
        snprintf(comp, sizeof comp, "%s\\%s", w->logical, d.id);
        if (!vss_event_stored(e, comp)) {
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", d.name}, {"SESSION", e->session}),
                        "replica writer: the requester did not say it stored the %s backup of the "
                        "copy of %s (session %s): no log is truncated",
                        d.type, d.name, e->session);
            continue;
        }
        json_t *rep = NULL;
        int rc = w->cfg.ask_active(w->cfg.ctx, d.id, d.name,
                                   json_pack("{s:s,s:s,s:I}", "op", "backup", "action", "truncate",
                                             "below", (json_int_t)d.below),
                                   &rep);
        if (rc)
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", d.name}, {"SESSION", e->session}),
                        "replica writer: truncating the logs of %s after the %s backup of its copy "
                        "on %s: %s (the next backup truncates them)",
                        d.name, d.type, w->server, om_err_detail());
        else
            om_log_with(
                OM_INFO, OM_FIELDS({"DATABASE", d.name}, {"SESSION", e->session}),
                "replica writer: %s backup of the copy of %s stored: the active deleted %lld "
                "generations below %u",
                d.type, d.name, (long long)om_json_int_or(rep, "deleted", 0), d.below);
        json_decref(rep);
    }
}

/* Releases the copy locks of the session and forgets it (BackupShutdown, Abort). */
static int end_session(void *ctx, vss_event *e)
{
    rp_replica_writer *w = ctx;
    for (int i = 0; i < MAX_COPIES; i++) {
        int lk = -1;
        pthread_mutex_lock(&w->mu);
        wcopy *d = &w->copies[i];
        if (d->id[0] && !strcmp(d->session, e->session)) {
            lk = d->lock;
            memset(d, 0, sizeof *d);
            d->lock = -1;
        }
        if (w->left[i].id[0] && !strcmp(w->left[i].session, e->session))
            memset(&w->left[i], 0, sizeof w->left[i]);
        pthread_mutex_unlock(&w->mu);
        rp_copy_unlock(lk);
    }
    return 0;
}

static int backup_shutdown(void *ctx, vss_event *e)
{
    truncate_stored(ctx, e);
    return end_session(ctx, e);
}

static int pre_restore(void *ctx, vss_event *e)
{
    rp_replica_writer *w = ctx;
    return vss_fail(e, VSS_FAIL_NON_RETRYABLE,
                    "a passive copy on server %s is not a restore target: restore to the active "
                    "database (the Ombra Store Writer of its server); its copies follow it",
                    w->server);
}

/* ---- start, stop ---- */

/* One instance id per server name, the same across restarts. */
static void instance_of(const char *server, char out[37])
{
    char key[300];
    snprintf(key, sizeof key, "ombra-repld replica writer instance: %s", server);
    uint64_t a = om_xxh3(key, strlen(key), 1), b = om_xxh3(key, strlen(key), 2);
    om_uuid u;
    memcpy(u.b, &a, 8);
    memcpy(u.b + 8, &b, 8);
    u.b[6] = (uint8_t)((u.b[6] & 0x0f) | 0x80); /* version 8: made up from a name */
    u.b[8] = (uint8_t)((u.b[8] & 0x3f) | 0x80);
    om_uuid_str(&u, out);
}

int rp_replica_writer_start(const rp_replica_writer_cfg *cfg, rp_replica_writer **out)
{
    if (!cfg->server || !cfg->data_dir || !cfg->list || !cfg->ask_active)
        return om_errf(OM_E_InvalidParameter, "the replica writer needs a server, a data "
                                              "directory and a list of copies");
    rp_replica_writer *w = calloc(1, sizeof *w);
    if (!w) return om_errf(OM_E_OutOfMemory, "starting the replica writer: out of memory");
    w->cfg = *cfg;
    snprintf(w->server, sizeof w->server, "%s", cfg->server);
    snprintf(w->data_dir, sizeof w->data_dir, "%s", cfg->data_dir);
    for (int i = 0; i < MAX_COPIES; i++)
        w->copies[i].lock = -1;
    pthread_mutex_init(&w->mu, NULL);
    instance_of(w->server, w->instance_id);
    snprintf(w->logical, sizeof w->logical, "Replica\\%.180s", w->server);
    vss_writer_info info = {.class_id = WRITER_CLASS,
                            .instance_id = w->instance_id,
                            .name = WRITER_NAME,
                            .can_hold = 1,
                            .socket_path = cfg->vss_socket};
    static const vss_writer_ops ops = {.identify = identify,
                                       .prepare_backup = prepare_backup,
                                       .freeze = freeze,
                                       .thaw = thaw,
                                       .post_snapshot = post_snapshot,
                                       .backup_complete = backup_complete,
                                       .abort = end_session,
                                       .backup_shutdown = backup_shutdown,
                                       .pre_restore = pre_restore};
    int rc = vss_writer_start(&info, &ops, w, &w->vw);
    if (rc) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void rp_replica_writer_stop(rp_replica_writer *w)
{
    if (!w) return;
    vss_writer_stop(w->vw); /* aborts open sessions: locks released */
    for (int i = 0; i < MAX_COPIES; i++)
        rp_copy_unlock(w->copies[i].lock);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
