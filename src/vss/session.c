/* Requester sessions of ombra-vssd: the backup and restore sequences, their order, their
 * failures and aborts (coordinator.h has the state diagram and the rules). A session is served
 * by its requester's connection thread; only a writer's disconnect touches it from elsewhere
 * (vss_session_writer_gone, under coord.mu). */
#include <fnmatch.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/pool.h"
#include "base/proto.h"
#include "base/server.h"
#include "base/time.h"
#include "base/uuid.h"
#include "vss/coord_internal.h"

enum sstate {
    S_BEGUN,
    S_GATHERED,
    S_PREPARED,
    S_SET_STARTED,
    S_SNAPSHOT_DONE,
    S_COMPLETE,
    S_ABORTED,
    R_BEGUN,
    R_LOADED,
    R_PRE_DONE,
    R_POST_DONE,
};

static const char *state_name[] = {"begun",
                                   "gathered",
                                   "prepared",
                                   "snapshot set started",
                                   "snapshot done",
                                   "complete",
                                   "aborted",
                                   "begun (restore)",
                                   "documents loaded",
                                   "pre-restore done",
                                   "post-restore done"};

typedef struct comp {
    wconn *w;
    char name[600];       /* full name: logical_path\name */
    int succeeded;        /* -1: not said */
    json_t *backup_md;    /* from PostSnapshot (backup) or the loaded document (restore) */
    json_t *restore_opts; /* restore */
    json_t *new_target;
    int stored; /* the requester released the session saying it stored this component's backup */
} comp;

typedef struct involved {
    wconn *w;
    uint32_t gen;
    int snap_locked;
    int failed; /* this writer failed the session */
} involved;

typedef struct spath {
    char path[VSS_PATH_MAX];
    const vss_provider *p;
    char why[256];
    shadow_ent *ent;
    void *plan; /* the provider's, from prepare to settle (vss_shadow_path.plan) */
} spath;

struct session {
    session *next;
    char id[40];
    int restore;
    enum sstate state;
    char type[16];
    comp comps[VSS_MAX_COMPS];
    int ncomp;
    involved inv[VSS_MAX_INVOLVED];
    int ninv;
    json_t *metadata; /* [{instance_id, metadata}] from gather_metadata or load_documents */
    char set_id[37];
    int persistent;
    spath paths[VSS_MAX_PATHS];
    int npaths;
    int hold;     /* the held provider is in the set */
    int gone_err; /* a writer of the session disconnected */
    char gone_detail[512];
    int additional_restores;
    json_t *loaded_doc;
    json_t *targets; /* restore: the writers' answers of the last step */
    double freeze_ms, snapshot_ms;
    /* The freeze: the held files the writers finished since PrepareSnapshot ("held_new" of their
     * Freeze answers), whether every writer named them, the longest hold a writer measured
     * ("held_ms" of Thaw), the coordinator's own span, and what the commit did. */
    json_t *held_new, *stable;
    int held_new_all;
    double writers_held_ms, coord_held_ms, commit_ms;
    uint64_t commit_links, commit_copies, commit_bytes;
};

int vss_session_count(coord *c)
{
    int n = 0;
    for (session *s = c->sessions; s; s = s->next)
        n++;
    return n;
}

void vss_session_writer_gone(coord *c, wconn *w)
{
    for (session *s = c->sessions; s; s = s->next)
        for (int i = 0; i < s->ninv; i++) {
            if (s->inv[i].w != w || s->inv[i].gen != w->conn_gen) continue;
            s->inv[i].failed = 1;
            s->inv[i].snap_locked = 0; /* the caller frees the writer's snapshot lock */
            if (!s->gone_err && s->state != S_COMPLETE && s->state != S_ABORTED &&
                s->state != R_POST_DONE) {
                s->gone_err = OM_E_WriterNotResponding;
                snprintf(s->gone_detail, sizeof s->gone_detail,
                         "writer '%s' (pid %d) disconnected during the session", w->name, w->pid);
            }
            for (int k = 0; k < c->nshadows; k++)
                if (!strcmp(c->shadows[k]->session, s->id) &&
                    !strcmp(c->shadows[k]->s.provider, "held"))
                    c->shadows[k]->valid = 0;
        }
}

/* ---- components and writers ---- */

static void comp_free(comp *k)
{
    json_decref(k->backup_md);
    json_decref(k->restore_opts);
    json_decref(k->new_target);
    memset(k, 0, sizeof *k);
}

static involved *involve(session *s, wconn *w)
{
    for (int i = 0; i < s->ninv; i++)
        if (s->inv[i].w == w) return &s->inv[i];
    if (s->ninv == VSS_MAX_INVOLVED) return NULL;
    involved *v = &s->inv[s->ninv++];
    memset(v, 0, sizeof *v);
    v->w = w;
    v->gen = w->conn_gen;
    return v;
}

/* The metadata document a writer gave this session. */
static json_t *writer_md(session *s, const char *instance_id)
{
    size_t i;
    json_t *e;
    json_array_foreach(s->metadata, i,
                       e) if (!strcmp(om_json_str_or(e, "instance_id", ""),
                                      instance_id)) return json_object_get(e, "metadata");
    return NULL;
}

static void full_name(json_t *k, char *out, size_t n)
{
    const char *lp = om_json_str_or(k, "logical_path", ""), *nm = om_json_str_or(k, "name", "");
    snprintf(out, n, "%s%s%s", lp, *lp ? "\\" : "", nm);
}

/* a is b, or one contains the other (a subcomponent). */
static int overlaps(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), l = la < lb ? la : lb;
    return !strncmp(a, b, l) && (la == lb || (la > lb ? a[l] : b[l]) == '\\');
}

/* The session that has this component (or one overlapping it) of this writer, other than s. */
static session *owner_of(coord *c, session *s, const char *instance_id, const char *name)
{
    for (session *o = c->sessions; o; o = o->next) {
        if (o == s || o->state == S_COMPLETE || o->state == S_ABORTED || o->state == R_POST_DONE)
            continue;
        for (int i = 0; i < o->ncomp; i++)
            if (!strcmp(o->comps[i].w->instance_id, instance_id) &&
                overlaps(o->comps[i].name, name))
                return o;
    }
    return NULL;
}

/* The components of s that writer w has, as the events' "components" list. */
static json_t *comp_names(session *s, wconn *w)
{
    json_t *a = json_array();
    for (int i = 0; i < s->ncomp; i++)
        if (s->comps[i].w == w) json_array_append_new(a, json_string(s->comps[i].name));
    return a;
}

/* ---- events to every involved writer ---- */

typedef json_t *(*args_fn)(session *s, wconn *w, void *arg);

static json_t *plain_args(session *s, wconn *w, void *arg)
{
    return json_pack("{s:o}", "components", comp_names(s, w));
}

/* Sends event to every involved writer in turn; stops at the first failure, which leaves that
 * writer "failed_at_<event>". ok_state: the writers' state after success. */
static int call_all(coord *c, session *s, const char *event, args_fn fn, void *arg,
                    const char *ok_state, int (*on_result)(session *, wconn *, json_t *))
{
    for (int i = 0; i < s->ninv; i++) {
        involved *v = &s->inv[i];
        json_t *args = fn(s, v->w, arg), *res = NULL;
        int rc = vss_coord_call(c, v->w, v->gen, s->id, event, args, &res);
        json_decref(args);
        if (!rc && on_result) rc = on_result(s, v->w, res);
        json_decref(res);
        if (rc) {
            char st[64];
            snprintf(st, sizeof st, "failed_at_%s", event);
            v->failed = 1;
            vss_coord_writer_state(c, v->w, st, rc);
            return rc;
        }
        if (ok_state) vss_coord_writer_state(c, v->w, ok_state, 0);
    }
    return 0;
}

/* ---- snapshot locks (one session per writer from PrepareBackup to PostSnapshot) ---- */

static void unlock_writers(coord *c, session *s)
{
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < s->ninv; i++) {
        involved *v = &s->inv[i];
        if (!v->snap_locked) continue;
        v->snap_locked = 0;
        if (v->w->snap_owner == s) v->w->snap_owner = NULL;
        pthread_cond_broadcast(&v->w->snap_cond);
    }
    pthread_mutex_unlock(&c->mu);
}

static int cmp_inv(const void *a, const void *b)
{
    return strcmp(((const involved *)a)->w->instance_id, ((const involved *)b)->w->instance_id);
}

/* Takes every involved writer's snapshot lock, in instance id order (no deadlock between two
 * sessions), waiting up to the event limit for each. */
static int lock_writers(coord *c, session *s)
{
    qsort(s->inv, (size_t)s->ninv, sizeof s->inv[0], cmp_inv);
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < s->ninv && !rc; i++) {
        involved *v = &s->inv[i];
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += c->event_limit_ms / 1000 + 1;
        while (v->w->snap_owner && v->w->snap_owner != s && v->w->fd >= 0)
            if (pthread_cond_timedwait(&v->w->snap_cond, &c->mu, &until)) break;
        if (v->w->fd < 0 || v->w->conn_gen != v->gen)
            rc = om_errf(OM_E_WriterNotResponding, "writer '%s' disconnected", v->w->name);
        else if (v->w->snap_owner && v->w->snap_owner != s)
            rc = om_errf(OM_E_SnapshotSetInProgress,
                         "writer '%s' is busy with session %s (between PrepareBackup and "
                         "PostSnapshot) for longer than %u ms",
                         v->w->name, v->w->snap_owner->id, c->event_limit_ms);
        else {
            v->w->snap_owner = s;
            v->snap_locked = 1;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (rc) unlock_writers(c, s);
    return rc;
}

/* s moves to state st. Other sessions' threads read a session's state under coord.mu (a
 * component's owner, the sessions' listing), so every change is made under it; the session's own
 * thread, the only writer, reads it without. */
static void set_state(coord *c, session *s, enum sstate st)
{
    pthread_mutex_lock(&c->mu);
    s->state = st;
    pthread_mutex_unlock(&c->mu);
}

/* ---- abort ---- */

/* Every involved writer gets Abort; shadow copies go; locks are released. The writers that did
 * not fail are stable again. */
static void abort_session(coord *c, session *s)
{
    if (s->state == S_ABORTED) return;
    for (int i = 0; i < s->ninv; i++) {
        involved *v = &s->inv[i];
        json_t *args = plain_args(s, v->w, NULL), *res = NULL;
        if (vss_coord_call(c, v->w, v->gen, s->id, "Abort", args, &res) == 0 && !v->failed)
            vss_coord_writer_state(c, v->w, "stable", 0);
        json_decref(args);
        json_decref(res);
    }
    unlock_writers(c, s);
    vss_coord_drop_shadows(c, s->id, 0);
    for (int i = 0; i < s->npaths; i++)
        s->paths[i].ent = NULL;
    set_state(c, s, S_ABORTED);
    om_log_with(OM_INFO, OM_FIELDS({"SESSION", s->id}), "session %s aborted", s->id);
}

/* A failure of a step: the session is aborted and the failure is the reply. */
static int fail_session(coord *c, session *s, int rc)
{
    om_err_saved e;
    om_err_save(&e, rc);
    om_log_with(OM_WARN, OM_FIELDS({"SESSION", s->id}), "session %s: %d %s: %s", s->id, rc,
                om_err_name(rc), e.detail);
    abort_session(c, s);
    return om_err_restore(&e);
}

/* ---- backup steps ---- */

static int need(session *s, enum sstate st, const char *op)
{
    if (s->state == st) return 0;
    if (s->state == S_ABORTED)
        return om_errf(OM_E_Aborted,
                       "session %s was aborted; only gather_status and release are "
                       "accepted",
                       s->id);
    return om_errf(OM_E_BadState, "%s is not allowed now: the session is %s (expected %s)", op,
                   state_name[s->state], state_name[st]);
}

static int gather(coord *c, session *s, json_t *req, json_t *rep)
{
    if (s->state != S_BEGUN && s->state != S_GATHERED && s->state != R_BEGUN &&
        s->state != R_LOADED)
        return need(s, S_BEGUN, "gather_metadata");
    wconn *ws[VSS_MAX_WRITERS];
    uint32_t gens[VSS_MAX_WRITERS];
    int n = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nw; i++)
        if (c->w[i]->fd >= 0) {
            ws[n] = c->w[i];
            gens[n++] = c->w[i]->conn_gen;
        }
    pthread_mutex_unlock(&c->mu);
    json_t *out = json_array(), *mds = json_array();
    for (int i = 0; i < n; i++) {
        json_t *res = NULL;
        int rc = vss_coord_call(c, ws[i], gens[i], s->id, "Identify", NULL, &res);
        pthread_mutex_lock(&c->mu);
        json_t *wj = vss_coord_writer_json(ws[i]);
        pthread_mutex_unlock(&c->mu);
        json_t *md = json_object_get(res, "metadata");
        if (rc || !json_is_object(md)) {
            if (!rc)
                rc = om_errf(OM_E_WriterErrorNonRetryable, "writer '%s' gave no metadata",
                             ws[i]->name);
            vss_coord_writer_state(c, ws[i], "failed_at_Identify", rc);
            json_object_set_new(wj, "error", json_string(om_err_detail()));
        } else {
            json_object_set(wj, "metadata", md);
            json_array_append_new(
                mds, json_pack("{s:s, s:O}", "instance_id", ws[i]->instance_id, "metadata", md));
        }
        json_decref(res);
        json_array_append_new(out, wj);
    }
    json_decref(s->metadata);
    s->metadata = mds;
    json_object_set_new(rep, "writers", out);
    if (s->state == S_BEGUN) set_state(c, s, S_GATHERED);
    return 0;
}

static int set_backup_state(coord *c, session *s, json_t *req, json_t *rep)
{
    int rc = need(s, S_GATHERED, "set_backup_state");
    const char *t = NULL;
    if (!rc) rc = om_json_str(req, "type", &t);
    if (rc) return rc;
    if (strcmp(t, "full") && strcmp(t, "copy") && strcmp(t, "incremental") &&
        strcmp(t, "differential"))
        return om_errf(OM_E_InvalidParameter,
                       "backup type '%s' is not full, copy, incremental or differential", t);
    snprintf(s->type, sizeof s->type, "%s", t);
    return 0;
}

/* The component `name` in writer md, or NULL. */
static json_t *find_comp(json_t *md, const char *name)
{
    size_t i;
    json_t *k;
    char fn[600];
    json_array_foreach(json_object_get(md, "components"), i, k)
    {
        full_name(k, fn, sizeof fn);
        if (!strcmp(fn, name)) return k;
    }
    return NULL;
}

/* A backup selects whole components (spec §5): a component the writer does not offer for
 * selection, part of one it does (a database's Logs), is refused on its own. Checked when the
 * selection is whole (prepare_backup): selected with its parent, in either order, it is dropped
 * (selected_already, drop_subcomponents). */
static int whole_only(json_t *md, const char *name)
{
    json_t *k = find_comp(md, name);
    if (!k || json_is_true(json_object_get(k, "selectable"))) return 0;
    size_t i;
    json_t *p, *parent = NULL;
    char fn[600], pn[600] = "";
    json_array_foreach(json_object_get(md, "components"), i, p)
    {
        full_name(p, fn, sizeof fn);
        if (json_is_true(json_object_get(p, "selectable")) && strlen(fn) < strlen(name) &&
            overlaps(fn, name) && strlen(fn) >= strlen(pn)) {
            parent = p;
            snprintf(pn, sizeof pn, "%s", fn);
        }
    }
    if (!parent) return 0;
    const char *cap = om_json_str_or(parent, "caption", "");
    return om_errf(OM_E_InvalidParameter,
                   "component '%s' is part of '%s'%s%s%s and cannot be backed up alone: a backup "
                   "selects whole components. HINT: select '%s' (with ombra backup: name the "
                   "database)",
                   name, pn, *cap ? " (" : "", cap, *cap ? ")" : "", pn);
}

/* 1 when backup session s has component name of writer w already, or a component that contains
 * it: naming it again selects it once. Under coord.mu. */
static int selected_already(session *s, wconn *w, const char *name)
{
    for (int i = 0; i < s->ncomp; i++)
        if (s->comps[i].w == w && overlaps(s->comps[i].name, name) &&
            strlen(s->comps[i].name) <= strlen(name))
            return 1;
    return 0;
}

/* Drops the components of writer w that name contains (its subcomponents, selected first):
 * selecting name selects them. Under coord.mu. */
static void drop_subcomponents(session *s, wconn *w, const char *name)
{
    int n = 0;
    for (int i = 0; i < s->ncomp; i++) {
        comp *k = &s->comps[i];
        if (k->w == w && overlaps(name, k->name) && strlen(k->name) > strlen(name)) {
            om_info("session %s: component '%s' is part of '%s', selected now", s->id, k->name,
                    name);
            comp_free(k);
            continue;
        }
        if (n != i) {
            s->comps[n] = *k;
            memset(k, 0, sizeof *k);
        }
        n++;
    }
    s->ncomp = n;
}

static int add_component(coord *c, session *s, json_t *req, int restore)
{
    int rc = restore ? (s->state == R_LOADED ? 0 : need(s, R_LOADED, "add_restore_component"))
                     : need(s, S_GATHERED, "add_component");
    const char *inst = NULL, *name = NULL;
    if (!rc) rc = om_json_str(req, "instance_id", &inst);
    if (!rc) rc = om_json_str(req, "component", &name);
    if (rc) return rc;
    json_t *md = writer_md(s, inst);
    if (!md)
        return om_errf(OM_E_ObjectNotFound,
                       "no writer with instance id %s in this session's "
                       "metadata",
                       inst);
    if (!find_comp(md, name))
        return om_errf(OM_E_ObjectNotFound, "writer %s has no component '%s'", inst, name);
    pthread_mutex_lock(&c->mu);
    wconn *w = vss_coord_find_writer(c, inst);
    session *o = w ? owner_of(c, s, inst, name) : NULL;
    int dup = w && !o && !restore && selected_already(s, w, name);
    if (w && !o && !dup && !restore) drop_subcomponents(s, w, name);
    involved *v = w && !o && !dup && s->ncomp < VSS_MAX_COMPS ? involve(s, w) : NULL;
    if (!w)
        rc = om_errf(OM_E_WriterNotResponding, "writer %s is not connected", inst);
    else if (o)
        rc = om_errf(OM_E_BackupInProgress,
                     "component '%s' of writer '%s' is already in session %s (%s)", name, w->name,
                     o->id, o->restore ? "a restore" : "a backup in progress");
    else if (dup)
        om_info("session %s: component '%s' is selected already (selected once)", s->id, name);
    else if (s->ncomp == VSS_MAX_COMPS)
        rc = om_errf(OM_E_InvalidParameter, "too many components (%d)", VSS_MAX_COMPS);
    else if (!v)
        rc = om_errf(OM_E_InvalidParameter, "too many writers in one session");
    if (!rc && !dup) {
        comp *k = &s->comps[s->ncomp++];
        memset(k, 0, sizeof *k);
        k->w = w;
        k->succeeded = -1;
        snprintf(k->name, sizeof k->name, "%s", name);
        if (restore) {
            k->restore_opts = json_incref(json_object_get(req, "restore_options"));
            k->new_target = json_incref(json_object_get(req, "new_target"));
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int prepare_backup(coord *c, session *s, json_t *req, json_t *rep)
{
    int rc = need(s, S_GATHERED, "prepare_backup");
    if (!rc && !s->ncomp) rc = om_errf(OM_E_BadState, "no component was added");
    if (!rc && !s->type[0]) rc = om_errf(OM_E_BadState, "set_backup_state was not called");
    for (int i = 0; i < s->ncomp && !rc; i++)
        rc = whole_only(writer_md(s, s->comps[i].w->instance_id), s->comps[i].name);
    if (rc) return rc;
    if ((rc = lock_writers(c, s))) return fail_session(c, s, rc);
    for (int i = 0; i < s->ninv && !rc; i++) {
        involved *v = &s->inv[i];
        json_t *args = json_pack("{s:s, s:o}", "type", s->type, "components", comp_names(s, v->w));
        json_t *res = NULL;
        rc = vss_coord_call(c, v->w, v->gen, s->id, "PrepareBackup", args, &res);
        json_decref(args);
        json_decref(res);
        if (rc) {
            v->failed = 1;
            vss_coord_writer_state(c, v->w, "failed_at_PrepareBackup", rc);
        } else
            vss_coord_writer_state(c, v->w, "stable", 0);
    }
    if (rc) return fail_session(c, s, rc);
    set_state(c, s, S_PREPARED);
    return 0;
}

static int start_set(coord *c, session *s, json_t *req, json_t *rep)
{
    int rc = need(s, S_PREPARED, "start_snapshot_set");
    if (rc) return rc;
    om_uuid u;
    om_uuid_new(&u);
    om_uuid_str(&u, s->set_id);
    s->persistent = json_is_true(json_object_get(req, "persistent"));
    set_state(c, s, S_SET_STARTED);
    json_object_set_new(rep, "set", json_string(s->set_id));
    return 0;
}

static int writers_can_hold(coord *c, session *s)
{
    pthread_mutex_lock(&c->mu);
    int all = s->ninv > 0;
    for (int i = 0; i < s->ninv; i++)
        all &= s->inv[i].w->can_hold;
    pthread_mutex_unlock(&c->mu);
    return all;
}

static int add_path(coord *c, session *s, json_t *req, json_t *rep)
{
    int rc = need(s, S_SET_STARTED, "add_path");
    const char *path = NULL;
    if (!rc) rc = om_json_str(req, "path", &path);
    if (rc) return rc;
    const char *pname = om_json_str_or(req, "provider", "auto");
    if (path[0] != '/') return om_errf(OM_E_InvalidPath, "path '%s' is not absolute", path);
    if (strlen(path) >= VSS_PATH_MAX) return om_errf(OM_E_InvalidPath, "path too long: %s", path);
    if (s->npaths == VSS_MAX_PATHS)
        return om_errf(OM_E_InvalidParameter, "too many paths (%d)", VSS_MAX_PATHS);
    for (int i = 0; i < s->npaths; i++)
        if (overlaps(s->paths[i].path, path) || !strcmp(s->paths[i].path, path))
            return om_errf(OM_E_InvalidParameter, "%s overlaps %s, already in the set", path,
                           s->paths[i].path);
    spath *sp = &s->paths[s->npaths];
    memset(sp, 0, sizeof *sp);
    snprintf(sp->path, sizeof sp->path, "%s", path);
    int hold = writers_can_hold(c, s);
    if (!strcmp(pname, "auto")) {
        sp->p = vss_provider_auto(path, c->shadow_root, hold, sp->why, sizeof sp->why);
        if (!sp->p)
            return om_errf(OM_E_VolumeNotSupportedByProvider, "no provider can shadow %s: %s", path,
                           sp->why);
    } else {
        sp->p = vss_provider_find(pname);
        if (!sp->p)
            return om_errf(OM_E_ProviderNotRegistered,
                           "no provider '%s' (auto, held, reflink, btrfs or copy)", pname);
        if (!strcmp(pname, "held") && !hold)
            return om_errf(OM_E_VolumeNotSupportedByProvider,
                           "the held provider needs writers that can hold their files, and a "
                           "writer of this session cannot");
        int ok = sp->p->supports(path, c->shadow_root, sp->why, sizeof sp->why);
        if (ok < 0) return ok;
        if (ok == 0)
            return om_errf(OM_E_VolumeNotSupportedByProvider, "provider %s cannot shadow %s: %s",
                           pname, path, sp->why);
    }
    if (!strcmp(sp->p->name, "held") && s->persistent)
        return om_errf(OM_E_InvalidParameter,
                       "a held shadow copy cannot be persistent: it lasts as long as the "
                       "writers hold their files");
    s->hold |= !strcmp(sp->p->name, "held");
    s->npaths++;
    json_object_set_new(rep, "provider", json_string(sp->p->name));
    json_object_set_new(rep, "why", json_string(sp->why));
    return 0;
}

/* ---- do_snapshot_set ---- */

/* Appends the files a component lists under key ("files" with "held": true, or "excludes"),
 * specs expanded, that lie under path. */
static void add_matches(json_t *k, const char *key, int held_only, const char *path, char ***v,
                        size_t *n, size_t *cap)
{
    size_t fi, pl = strlen(path);
    json_t *f;
    json_array_foreach(json_object_get(k, key), fi, f)
    {
        if (held_only && !json_is_true(json_object_get(f, "held"))) continue;
        const char *fp = om_json_str_or(f, "path", ""), *spec = om_json_str_or(f, "spec", NULL);
        char pat[VSS_PATH_MAX + 300];
        snprintf(pat, sizeof pat, "%s%s%s", fp, spec ? "/" : "", spec ? spec : "");
        glob_t g;
        if (glob(pat, GLOB_NOSORT, NULL, &g) != 0) continue;
        for (size_t gi = 0; gi < g.gl_pathc; gi++) {
            const char *m = g.gl_pathv[gi];
            if (strncmp(m, path, pl) || (m[pl] != '/' && m[pl] != 0)) continue;
            if (*n == *cap) {
                size_t nc = *cap ? *cap * 2 : 32;
                char **nv = realloc(*v, nc * sizeof *nv);
                if (!nv) break;
                *v = nv;
                *cap = nc;
            }
            if (((*v)[*n] = strdup(m))) (*n)++;
        }
        globfree(&g);
    }
}

/* The files the session's writers hold under path, and those they exclude from shadow copies
 * (from the selected components and their subcomponents). */
static void held_files(session *s, const char *path, vss_shadow_path *out)
{
    size_t hcap = 0, ecap = 0;
    for (int i = 0; i < s->ncomp; i++) {
        json_t *md = writer_md(s, s->comps[i].w->instance_id), *k;
        size_t ki;
        char fn[600];
        json_array_foreach(json_object_get(md, "components"), ki, k)
        {
            full_name(k, fn, sizeof fn);
            if (!overlaps(fn, s->comps[i].name) || strlen(fn) < strlen(s->comps[i].name)) continue;
            add_matches(k, "files", 1, path, &out->held, &out->nheld, &hcap);
            add_matches(k, "excludes", 0, path, &out->exclude, &out->nexclude, &ecap);
        }
    }
}

static void free_held(vss_shadow_path *p)
{
    for (size_t i = 0; i < p->nheld; i++)
        free(p->held[i]);
    for (size_t i = 0; i < p->nexclude; i++)
        free(p->exclude[i]);
    free(p->held);
    free(p->exclude);
    p->held = p->exclude = NULL;
    p->nheld = p->nexclude = 0;
}

/* The test hook: "STEP" fails every time, "STEP:N" the first N times. */
static int test_fault(coord *c, const char *step, const char *path)
{
    static int used;
    const char *f = c->o.fail_provider_step;
    size_t l = strlen(step);
    if (!f || strncmp(f, step, l) || (f[l] && f[l] != ':')) return 0;
    if (f[l] == ':' && __atomic_fetch_add(&used, 1, __ATOMIC_RELAXED) >= atoi(f + l + 1)) return 0;
    return om_errf(OM_E_ProviderVeto, "provider failed at %s of %s (test hook)", step, path);
}

/* The held files the writers named at Freeze (held_new) that lie under path. */
static void held_new_under(session *s, const char *path, vss_shadow_path *out)
{
    size_t i, pl = strlen(path), cap = 0;
    json_t *f;
    json_array_foreach(s->held_new, i, f)
    {
        const char *m = json_string_value(f);
        if (!m || strncmp(m, path, pl) || m[pl] != '/') continue;
        if (out->nheld == cap) {
            size_t nc = cap ? cap * 2 : 8;
            char **nv = realloc(out->held, nc * sizeof *nv);
            if (!nv) break;
            out->held = nv;
            cap = nc;
        }
        if ((out->held[out->nheld] = strdup(m))) out->nheld++;
    }
}

typedef struct stepctx {
    coord *c;
    session *s;
    const char *step;
    uint64_t deadline;
} stepctx;

/* One provider step for path i. */
static int provider_step_at(void *arg, void *ws, size_t i)
{
    stepctx *x = arg;
    coord *c = x->c;
    session *s = x->s;
    const char *step = x->step;
    spath *sp = &s->paths[i];
    vss_shadow_path p = {.path = sp->path, .plan = &sp->plan};
    vss_shadow work = {0};
    int rc = test_fault(c, step, sp->path);
    int fast = (!strcmp(step, "commit") || !strcmp(step, "settle")) && s->held_new_all && sp->plan;
    if (!strcmp(step, "settle") && (!fast || !sp->p->settle)) return 0;
    if (!rc && fast) {
        held_new_under(s, sp->path, &p);
        p.held_new_only = 1;
        p.stable = s->stable;
    } else if (!rc && strcmp(step, "expose")) {
        held_files(s, sp->path, &p);
    }
    if (!rc && !strcmp(step, "prepare")) {
        om_uuid u;
        om_uuid_new(&u);
        om_uuid_str(&u, work.id);
        snprintf(work.set_id, sizeof work.set_id, "%s", s->set_id);
        rc = sp->p->prepare(&p, c->shadow_root, &work);
        if (rc && work.storage[0]) sp->p->remove(&work);
        if (!rc) {
            shadow_ent e = {.s = work, .persistent = s->persistent, .valid = 1};
            snprintf(e.session, sizeof e.session, "%s", s->id);
            pthread_mutex_lock(&c->mu);
            sp->ent = vss_coord_add_shadow(c, &e);
            if (!sp->ent) rc = OM_E_OutOfMemory;
            pthread_mutex_unlock(&c->mu);
            if (rc) sp->p->remove(&work);
        }
    } else if (!rc) {
        pthread_mutex_lock(&c->mu);
        work = sp->ent->s;
        pthread_mutex_unlock(&c->mu);
        int commit = !strcmp(step, "commit");
        rc = commit                    ? sp->p->commit(&p, &work, x->deadline)
             : !strcmp(step, "settle") ? sp->p->settle(&p, &work)
                                       : sp->p->expose(&work);
        /* Not saved during the freeze: the catalog needs the storage (saved at prepare) to
         * delete it, and expose saves it right after the thaw. */
        vss_coord_update_shadow(c, sp->ent, &work, !commit);
        if (commit) {
            __atomic_fetch_add(&s->commit_links, work.commit_links, __ATOMIC_RELAXED);
            __atomic_fetch_add(&s->commit_copies, work.commit_copies, __ATOMIC_RELAXED);
            __atomic_fetch_add(&s->commit_bytes, work.commit_bytes, __ATOMIC_RELAXED);
        }
    }
    free_held(&p);
    if (rc) return om_err_ctx(rc, "provider %s, %s of %s", sp->p->name, step, sp->path);
    return 0;
}

/* One provider step over every path, the paths at once (a thread each, up to the pool's
 * limit): the shadow copies of a hundred databases are made side by side during the freeze.
 * step: "prepare", "commit", "settle" or "expose". The first failure is returned. */
static int provider_step(coord *c, session *s, const char *step, uint64_t deadline)
{
    stepctx x = {c, s, step, deadline};
    om_pool pool = {.workers = 8, .ctx = &x, .fn = provider_step_at};
    return om_pool_run(&pool, (size_t)s->npaths);
}

static json_t *freeze_args(session *s, wconn *w, void *arg)
{
    coord *c = arg;
    return json_pack("{s:o, s:b, s:i}", "components", comp_names(s, w), "hold", s->hold,
                     "thaw_limit_ms", (int)c->freeze_limit_ms);
}

static json_t *shadows_json(coord *c, session *s)
{
    json_t *a = json_array();
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < s->npaths; i++) {
        shadow_ent *e = s->paths[i].ent;
        if (!e) continue;
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s, s:I, s:i}", "id", e->s.id,
                                           "original", e->s.original, "exposed", e->s.exposed,
                                           "provider", e->s.provider, "bytes",
                                           (json_int_t)e->s.bytes, "files", (int)e->s.files));
    }
    pthread_mutex_unlock(&c->mu);
    return a;
}

static json_t *post_args(session *s, wconn *w, void *arg)
{
    return json_pack("{s:o, s:O}", "components", comp_names(s, w), "shadows", (json_t *)arg);
}

static int take_backup_md(session *s, wconn *w, json_t *res)
{
    json_t *cs = json_object_get(res, "components");
    for (int i = 0; i < s->ncomp; i++) {
        json_t *md = json_object_get(cs, s->comps[i].name);
        if (s->comps[i].w != w || !md) continue;
        json_decref(s->comps[i].backup_md);
        s->comps[i].backup_md = json_incref(md);
    }
    return 0;
}

static json_t *components_doc(coord *c, session *s)
{
    char t[40];
    json_t *cs = json_array();
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < s->ncomp; i++) {
        comp *k = &s->comps[i];
        json_array_append_new(
            cs, json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:O}", "instance_id", k->w->instance_id,
                          "class_id", k->w->class_id, "writer", k->w->name, "component", k->name,
                          "selected", 1, "succeeded",
                          k->succeeded < 0 ? json_null() : json_boolean(k->succeeded),
                          "backup_metadata", k->backup_md ? k->backup_md : json_null()));
    }
    pthread_mutex_unlock(&c->mu);
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "session", s->id, "type", s->type, "set",
                     s->set_id, "time", om_time_iso(om_now_ns(), t, sizeof t), "components", cs,
                     "shadows", shadows_json(c, s));
}

/* Freeze's answer: the held files the writer finished since PrepareSnapshot. A writer that does
 * not name them (an older one, or one that holds nothing) makes the commit walk the trees. */
static int take_held_new(session *s, wconn *w, json_t *res)
{
    json_t *a = json_object_get(res, "held_new");
    if (!json_is_array(a)) {
        s->held_new_all = 0;
        return 0;
    }
    json_array_extend(s->held_new, a);
    json_t *st = json_object_get(res, "stable");
    if (json_is_array(st)) json_array_extend(s->stable, st);
    return 0;
}

static int take_held_ms(session *s, wconn *w, json_t *res)
{
    double ms = json_number_value(json_object_get(res, "held_ms"));
    if (ms > s->writers_held_ms) s->writers_held_ms = ms;
    return 0;
}

/* PrepareSnapshot, provider prepare, Freeze, commit, Thaw, expose, PostSnapshot. Writes held
 * (freeze_ms): the larger of the coordinator's span, from every writer's Freeze answered to the
 * last Thaw answered, and the longest span a writer measured from one database's hold to its
 * thaw (docs/design.md, "Freezing many databases at once"). */
static int snapshot_steps(coord *c, session *s)
{
    int rc = call_all(c, s, "PrepareSnapshot", plain_args, NULL, "waiting_for_freeze", NULL);
    if (!rc) rc = provider_step(c, s, "prepare", UINT64_MAX);
    if (rc) return rc;
    json_decref(s->held_new);
    json_decref(s->stable);
    s->held_new = json_array();
    s->stable = json_array();
    s->held_new_all = s->hold;
    s->writers_held_ms = 0;
    s->commit_links = s->commit_copies = s->commit_bytes = 0;
    rc = call_all(c, s, "Freeze", freeze_args, c, "waiting_for_thaw", take_held_new);
    uint64_t tf = om_mono_ns();
    uint64_t limit = (uint64_t)(c->commit_limit_ms < c->freeze_limit_ms ? c->commit_limit_ms
                                                                        : c->freeze_limit_ms);
    if (!rc) rc = provider_step(c, s, "commit", tf + limit * 1000000u);
    s->commit_ms = (double)(om_mono_ns() - tf) / 1e6;
    if (rc) return rc; /* Abort thaws the writers */
    rc = call_all(c, s, "Thaw", plain_args, NULL, "waiting_for_post_snapshot", take_held_ms);
    s->coord_held_ms = (double)(om_mono_ns() - tf) / 1e6;
    s->freeze_ms = s->writers_held_ms > s->coord_held_ms ? s->writers_held_ms : s->coord_held_ms;
    if (!rc && s->freeze_ms > c->freeze_limit_ms)
        rc = om_errf(OM_E_FlushWritesTimeout,
                     "writes were held %.0f ms, past the freeze limit of %u ms (the writers "
                     "thawed by themselves)",
                     s->freeze_ms, c->freeze_limit_ms);
    if (!rc) rc = provider_step(c, s, "settle", UINT64_MAX);
    if (!rc) rc = provider_step(c, s, "expose", UINT64_MAX);
    if (rc) return rc;
    json_t *sh = shadows_json(c, s);
    rc = call_all(c, s, "PostSnapshot", post_args, sh, "waiting_for_backup_complete",
                  take_backup_md);
    json_decref(sh);
    return rc;
}

/* What the freeze cost, for the requester and the log: the two spans writes held is the larger
 * of, the commit, and the commit's work (links and copies made while writes were held). */
static json_t *freeze_json(session *s)
{
    return json_pack("{s:f, s:f, s:f, s:I, s:I, s:I, s:i, s:b}", "writers_held_ms",
                     s->writers_held_ms, "coordinator_ms", s->coord_held_ms, "commit_ms",
                     s->commit_ms, "links", (json_int_t)s->commit_links, "copies",
                     (json_int_t)s->commit_copies, "bytes_copied", (json_int_t)s->commit_bytes,
                     "paths", s->npaths, "held_new_named", s->hold && s->held_new_all);
}

static int do_snapshot_set(coord *c, session *s, json_t *req, json_t *rep)
{
    int rc = need(s, S_SET_STARTED, "do_snapshot_set");
    if (!rc && !s->npaths) rc = om_errf(OM_E_BadState, "no path was added to the snapshot set");
    if (rc) return rc;
    uint64_t t0 = om_mono_ns();
    if ((rc = snapshot_steps(c, s))) return fail_session(c, s, rc);
    unlock_writers(c, s);
    vss_coord_expose_shadows(c, s->id);
    s->snapshot_ms = (double)(om_mono_ns() - t0) / 1e6;
    set_state(c, s, S_SNAPSHOT_DONE);
    pthread_mutex_lock(&c->mu);
    c->last_ns = om_now_ns();
    c->last_freeze_ms = s->freeze_ms;
    c->last_snapshot_ms = s->snapshot_ms;
    snprintf(c->last_set, sizeof c->last_set, "%s", s->set_id);
    pthread_mutex_unlock(&c->mu);
    om_log_with(OM_INFO, OM_FIELDS({"SESSION", s->id}),
                "session %s: snapshot set %s done (writes held %.1f ms, %.1f ms in all; %d "
                "paths, %llu links and %llu copies during the freeze)",
                s->id, s->set_id, s->freeze_ms, s->snapshot_ms, s->npaths,
                (unsigned long long)s->commit_links, (unsigned long long)s->commit_copies);
    json_object_set_new(rep, "set", json_string(s->set_id));
    json_object_set_new(rep, "shadows", shadows_json(c, s));
    json_object_set_new(rep, "freeze_ms", json_real(s->freeze_ms));
    json_object_set_new(rep, "snapshot_ms", json_real(s->snapshot_ms));
    json_object_set_new(rep, "freeze", freeze_json(s));
    json_object_set_new(rep, "components_document", components_doc(c, s));
    return 0;
}

static int set_succeeded(coord *c, session *s, json_t *req, json_t *rep)
{
    int rc = need(s, S_SNAPSHOT_DONE, "set_backup_succeeded");
    const char *inst = NULL, *name = NULL;
    if (!rc) rc = om_json_str(req, "instance_id", &inst);
    if (!rc) rc = om_json_str(req, "component", &name);
    if (rc) return rc;
    int ok = json_is_true(json_object_get(req, "succeeded"));
    for (int i = 0; i < s->ncomp; i++)
        if (!strcmp(s->comps[i].w->instance_id, inst) && !strcmp(s->comps[i].name, name)) {
            s->comps[i].succeeded = ok;
            return 0;
        }
    /* A component selected with its parent (selected once, as the parent): its failure is the
     * parent's, its success changes nothing. */
    for (int i = 0; i < s->ncomp; i++)
        if (!strcmp(s->comps[i].w->instance_id, inst) && overlaps(s->comps[i].name, name) &&
            strlen(s->comps[i].name) < strlen(name)) {
            if (!ok) s->comps[i].succeeded = 0;
            return 0;
        }
    return om_errf(OM_E_ObjectNotFound, "component '%s' of writer %s is not in this session", name,
                   inst);
}

static json_t *complete_args(session *s, wconn *w, void *arg)
{
    json_t *a = json_array();
    for (int i = 0; i < s->ncomp; i++)
        if (s->comps[i].w == w)
            json_array_append_new(a, json_pack("{s:s, s:b}", "name", s->comps[i].name, "succeeded",
                                               s->comps[i].succeeded == 1));
    return json_pack("{s:o}", "components", a);
}

static int status_json(coord *c, session *s, json_t *req, json_t *rep)
{
    json_t *a = json_array();
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < s->ninv; i++)
        json_array_append_new(a, vss_coord_writer_json(s->inv[i].w));
    pthread_mutex_unlock(&c->mu);
    json_object_set_new(rep, "writers", a);
    json_object_set_new(rep, "state", json_string(state_name[s->state]));
    return 0;
}

/* BackupComplete goes to every writer; a writer's failure is reported, not an abort (the
 * backup is made; the writer did not truncate or record it). */
static int backup_complete(coord *c, session *s, json_t *req, json_t *rep)
{
    int rc = need(s, S_SNAPSHOT_DONE, "backup_complete");
    if (rc) return rc;
    json_t *errs = json_array();
    for (int i = 0; i < s->ninv; i++) {
        involved *v = &s->inv[i];
        json_t *args = complete_args(s, v->w, NULL), *res = NULL;
        int e = vss_coord_call(c, v->w, v->gen, s->id, "BackupComplete", args, &res);
        json_decref(args);
        json_decref(res);
        vss_coord_writer_state(c, v->w, e ? "failed_at_BackupComplete" : "stable", e);
        v->failed |= e != 0;
        if (e)
            json_array_append_new(errs,
                                  json_pack("{s:s, s:i, s:s, s:s}", "writer", v->w->name, "error",
                                            e, "name", om_err_name(e), "message", om_err_detail()));
    }
    set_state(c, s, S_COMPLETE);
    json_object_set_new(rep, "components_document", components_doc(c, s));
    json_object_set_new(rep, "writer_errors", errs);
    return 0;
}

/* ---- restore ---- */

static int load_documents(coord *c, session *s, json_t *req, json_t *rep)
{
    if (s->state != R_BEGUN) return need(s, R_BEGUN, "load_documents");
    json_t *md = json_object_get(req, "metadata"),
           *doc = json_object_get(req, "components_document");
    if (!json_is_array(md) || !json_is_object(doc))
        return om_errf(OM_E_InvalidParameter,
                       "load_documents needs \"metadata\" (an array) and \"components_document\"");
    json_decref(s->metadata);
    s->metadata = json_incref(md);
    s->loaded_doc = json_incref(doc);
    snprintf(s->type, sizeof s->type, "%s", om_json_str_or(doc, "type", ""));
    set_state(c, s, R_LOADED);
    return 0;
}

static json_t *restore_args(session *s, wconn *w, void *arg)
{
    json_t *a = json_array();
    for (int i = 0; i < s->ncomp; i++) {
        comp *k = &s->comps[i];
        if (k->w != w) continue;
        json_t *bmd = json_null();
        size_t j;
        json_t *dc;
        json_array_foreach(json_object_get(s->loaded_doc, "components"), j,
                           dc) if (!strcmp(om_json_str_or(dc, "component", ""), k->name)) bmd =
            json_object_get(dc, "backup_metadata");
        json_array_append_new(
            a, json_pack("{s:s, s:O, s:O, s:O, s:b}", "name", k->name, "backup_metadata",
                         bmd ? bmd : json_null(), "restore_options",
                         k->restore_opts ? k->restore_opts : json_null(), "new_target",
                         k->new_target ? k->new_target : json_null(), "additional_restores",
                         s->additional_restores));
    }
    return json_pack("{s:o}", "components", a);
}

/* What a writer said of each component at PreRestore / PostRestore (its "targets"). */
static int take_targets(session *s, wconn *w, json_t *res)
{
    json_object_update(s->targets, json_object_get(res, "targets"));
    return 0;
}

static int restore_step(coord *c, session *s, int post, json_t *rep)
{
    int rc = post ? (s->state == R_PRE_DONE ? 0 : need(s, R_PRE_DONE, "post_restore"))
                  : (s->state == R_LOADED ? 0 : need(s, R_LOADED, "pre_restore"));
    if (!rc && !s->ncomp) rc = om_errf(OM_E_BadState, "no component was added for restore");
    if (rc) return rc;
    json_decref(s->targets);
    s->targets = json_object();
    rc = call_all(c, s, post ? "PostRestore" : "PreRestore", restore_args, NULL, "stable",
                  take_targets);
    if (rc) return fail_session(c, s, rc);
    set_state(c, s, post ? R_POST_DONE : R_PRE_DONE);
    json_object_set(rep, "targets", s->targets);
    return 0;
}

/* ---- the connection ---- */

static int add_backup_component(coord *c, session *s, json_t *req, json_t *rep)
{
    return add_component(c, s, req, 0);
}

static int add_restore_component(coord *c, session *s, json_t *req, json_t *rep)
{
    return add_component(c, s, req, 1);
}

static int set_additional_restores(coord *c, session *s, json_t *req, json_t *rep)
{
    s->additional_restores = json_is_true(json_object_get(req, "value"));
    return 0;
}

static int pre_restore(coord *c, session *s, json_t *req, json_t *rep)
{
    return restore_step(c, s, 0, rep);
}

static int post_restore(coord *c, session *s, json_t *req, json_t *rep)
{
    return restore_step(c, s, 1, rep);
}

static int abort_op(coord *c, session *s, json_t *req, json_t *rep)
{
    if (s->state == S_COMPLETE || s->state == R_POST_DONE)
        return om_errf(OM_E_BadState, "the session is complete: nothing to abort");
    abort_session(c, s);
    return 0;
}

/* The sessions an op belongs to. */
enum { FOR_BACKUP = 1, FOR_RESTORE = 2, FOR_BOTH = 3 };

/* A requester's request is one row: the kinds of session it belongs to, whether it is answered
 * once a writer of the session has gone away (else that loss is the reply, and the session
 * fails), and its handler. Handlers run on the requester's connection thread without coord.mu:
 * they take it around what they share and never hold it while a writer answers an event. The
 * order each op is accepted in is the handler's (need()). release ends the session: it is
 * vss_session_serve's, not a row. */
typedef struct session_op {
    const char *name;
    int kinds;
    int when_gone;
    int (*handler)(coord *c, session *s, json_t *req, json_t *rep);
} session_op;

static const session_op ops[] = {
    {"gather_status", FOR_BOTH, 1, status_json},
    {"gather_metadata", FOR_BOTH, 0, gather},
    {"abort", FOR_BOTH, 0, abort_op},
    {"set_backup_state", FOR_BACKUP, 0, set_backup_state},
    {"add_component", FOR_BACKUP, 0, add_backup_component},
    {"prepare_backup", FOR_BACKUP, 0, prepare_backup},
    {"start_snapshot_set", FOR_BACKUP, 0, start_set},
    {"add_path", FOR_BACKUP, 0, add_path},
    {"do_snapshot_set", FOR_BACKUP, 0, do_snapshot_set},
    {"set_backup_succeeded", FOR_BACKUP, 0, set_succeeded},
    {"backup_complete", FOR_BACKUP, 0, backup_complete},
    {"load_documents", FOR_RESTORE, 0, load_documents},
    {"add_restore_component", FOR_RESTORE, 0, add_restore_component},
    {"set_additional_restores", FOR_RESTORE, 0, set_additional_restores},
    {"pre_restore", FOR_RESTORE, 0, pre_restore},
    {"post_restore", FOR_RESTORE, 0, post_restore},
};
#define NOPS (sizeof ops / sizeof ops[0])

static int dispatch(coord *c, session *s, const char *name, json_t *req, json_t *rep)
{
    const session_op *op = NULL;
    int kind = s->restore ? FOR_RESTORE : FOR_BACKUP;
    for (size_t i = 0; !op && i < NOPS; i++)
        if ((ops[i].kinds & kind) && !strcmp(ops[i].name, name)) op = &ops[i];
    if (!op || !op->when_gone) { /* an unknown op too: the loss is news the requester needs */
        pthread_mutex_lock(&c->mu);
        int gone = s->gone_err;
        char gd[512];
        snprintf(gd, sizeof gd, "%s", s->gone_detail);
        pthread_mutex_unlock(&c->mu);
        if (gone && s->state != S_ABORTED) {
            om_errf(gone, "%s", gd);
            return fail_session(c, s, gone);
        }
    }
    if (!op)
        return om_errf(OM_E_InvalidParameter, "unknown operation '%s' for a %s session", name,
                       s->restore ? "restore" : "backup");
    return op->handler(c, s, req, rep);
}

/* The components whose backup the requester says it stored (release's "stored": [{"instance_id",
 * "component"}]), after a BackupComplete: a writer truncates logs only for those (docs/design.md,
 * "Sets that count only when the backup succeeded"). */
static void take_stored(session *s, json_t *req)
{
    size_t i;
    json_t *x;
    if (s->state != S_COMPLETE) return;
    json_array_foreach(json_object_get(req, "stored"), i, x)
    {
        const char *inst = om_json_str_or(x, "instance_id", ""),
                   *name = om_json_str_or(x, "component", "");
        for (int k = 0; k < s->ncomp; k++)
            if (!strcmp(s->comps[k].w->instance_id, inst) && !strcmp(s->comps[k].name, name) &&
                s->comps[k].succeeded == 1)
                s->comps[k].stored = 1;
    }
}

/* BackupShutdown's arguments: the writer's components, and those it may truncate logs for. */
static json_t *shutdown_args(session *s, wconn *w)
{
    json_t *a = plain_args(s, w, NULL), *st = json_array();
    for (int i = 0; i < s->ncomp; i++)
        if (s->comps[i].w == w && s->comps[i].stored)
            json_array_append_new(st, json_string(s->comps[i].name));
    json_object_set_new(a, "stored", st);
    return a;
}

/* The end of a session (release or disconnect): abort what is unfinished, BackupShutdown to the
 * writers of a finished backup, shadow copies deleted unless persistent. */
static void end_session(coord *c, session *s)
{
    int finished = s->state == S_COMPLETE || s->state == S_SNAPSHOT_DONE ||
                   s->state == R_POST_DONE || s->state == S_ABORTED;
    if (!finished) abort_session(c, s);
    if (!s->restore && s->ninv) {
        for (int i = 0; i < s->ninv; i++) {
            involved *v = &s->inv[i];
            json_t *args = shutdown_args(s, v->w), *res = NULL;
            if (vss_coord_call(c, v->w, v->gen, s->id, "BackupShutdown", args, &res) == 0 &&
                !v->failed)
                vss_coord_writer_state(c, v->w, "stable", 0);
            json_decref(args);
            json_decref(res);
        }
    }
    unlock_writers(c, s);
    vss_coord_drop_shadows(c, s->id, 1);
    pthread_mutex_lock(&c->mu);
    for (session **pp = &c->sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < s->ncomp; i++)
        comp_free(&s->comps[i]);
    for (int i = 0; i < s->npaths; i++)
        if (s->paths[i].plan && s->paths[i].p->drop_plan)
            s->paths[i].p->drop_plan(s->paths[i].plan);
    json_decref(s->held_new);
    json_decref(s->stable);
    json_decref(s->metadata);
    json_decref(s->loaded_doc);
    json_decref(s->targets);
    om_log_with(OM_INFO, OM_FIELDS({"SESSION", s->id}), "session %s ended", s->id);
    free(s);
}

void vss_session_serve(coord *c, int fd, json_t *req)
{
    const char *kind = om_json_str_or(req, "kind", "backup");
    session *s = calloc(1, sizeof *s);
    json_t *rep;
    if (!s || (strcmp(kind, "backup") && strcmp(kind, "restore"))) {
        int rc =
            s ? om_errf(OM_E_InvalidParameter, "session kind '%s' is not backup or restore", kind)
              : om_errf(OM_E_OutOfMemory, "out of memory");
        rep = om_proto_error(rc);
        om_proto_send(fd, rep, NULL, 0);
        json_decref(rep);
        free(s);
        return;
    }
    om_uuid u;
    om_uuid_new(&u);
    om_uuid_str(&u, s->id);
    s->restore = !strcmp(kind, "restore");
    s->state = s->restore ? R_BEGUN : S_BEGUN;
    pthread_mutex_lock(&c->mu);
    s->next = c->sessions;
    c->sessions = s;
    pthread_mutex_unlock(&c->mu);
    om_log_with(OM_INFO, OM_FIELDS({"SESSION", s->id}), "session %s (%s) begun by pid %d", s->id,
                kind, (int)om_peer_pid(fd));
    rep = om_proto_ok();
    json_object_set_new(rep, "session", json_string(s->id));
    for (;;) {
        int src = om_proto_send(fd, rep, NULL, 0);
        json_decref(rep);
        json_t *r = NULL;
        uint8_t *data = NULL;
        size_t dlen = 0;
        if (src || om_proto_recv(fd, &r, &data, &dlen)) break;
        free(data);
        const char *op = om_json_str_or(r, "op", "");
        if (!strcmp(op, "release")) {
            take_stored(s, r);
            json_decref(r);
            end_session(c, s);
            rep = om_proto_ok();
            om_proto_send(fd, rep, NULL, 0);
            json_decref(rep);
            return;
        }
        rep = om_proto_ok();
        int rc = dispatch(c, s, op, r, rep);
        json_decref(r);
        if (rc) {
            json_decref(rep);
            rep = om_proto_error(rc);
        }
    }
    om_log_with(OM_WARN, OM_FIELDS({"SESSION", s->id}), "session %s: the requester disconnected",
                s->id);
    end_session(c, s);
}
