/* The registry of a store (registry.h). */
#include "store/registry.h"

#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <time.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/vfs.h"

/* ---- handoffs ---- */

static int handoffs_load(store_registry *r)
{
    om_vfs *v = om_vfs_posix();
    uint8_t *data = NULL;
    size_t n = 0;
    json_error_t je;
    int ex = v->exists(v, r->handoff_path);
    if (ex < 0) return ex;
    if (!ex) {
        r->handoffs = json_object();
        return r->handoffs ? 0 : om_errf(OM_E_OutOfMemory, "out of memory");
    }
    int rc = om_read_file(v, r->handoff_path, &data, &n);
    if (rc) return rc;
    r->handoffs = json_loadb((const char *)data, n, 0, &je);
    free(data);
    if (json_is_object(r->handoffs)) return 0;
    json_decref(r->handoffs);
    r->handoffs = NULL;
    return om_errf(OM_E_InvalidParameter,
                   "%s is not the store's record of handed-off databases (%s). HINT: it names the "
                   "databases this server handed off in a switchover; restore it, or remove it "
                   "once ombra dag status shows them active elsewhere",
                   r->handoff_path, je.text);
}

static int handoffs_save(store_registry *r)
{
    char *text = json_dumps(r->handoffs, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text) return om_errf(OM_E_OutOfMemory, "out of memory");
    int rc = om_write_file_durable(om_vfs_posix(), r->handoff_path, text, strlen(text));
    free(text);
    return rc;
}

int store_handoff_mark_locked(store_registry *r, const char *id, int64_t epoch, uint32_t last_gen,
                              uint64_t refused_since_ns)
{
    json_t *was = json_incref(json_object_get(r->handoffs, id));
    json_object_set_new(r->handoffs, id,
                        json_pack("{s:I, s:I, s:I}", "epoch", (json_int_t)epoch, "last_gen",
                                  (json_int_t)last_gen, "refused_since_ns",
                                  (json_int_t)refused_since_ns));
    int rc = handoffs_save(r);
    if (rc && was)
        json_object_set(r->handoffs, id, was);
    else if (rc)
        json_object_del(r->handoffs, id);
    json_decref(was);
    return rc;
}

json_t *store_handed_off(store_registry *r, const store_dbent *e)
{
    char id[37];
    om_uuid_str(&e->id, id);
    json_t *h = json_object_get(r->handoffs, id);
    if (!h || !e->active ||
        e->active_epoch > (int64_t)json_integer_value(json_object_get(h, "epoch")))
        return NULL;
    return json_incref(h);
}

/* Marks that keep nothing from being mounted any more go: the DAG names another server, or
 * this one at a greater epoch (mu held, the directory ready). */
static void handoffs_prune_locked(store_registry *r)
{
    const char *id;
    json_t *h;
    void *tmp;
    int changed = 0;
    json_object_foreach_safe(r->handoffs, tmp, id, h)
    {
        om_uuid u;
        store_dbent *e = NULL;
        if (!om_uuid_parse(id, &u))
            for (size_t i = 0; i < r->dir->n && !e; i++)
                if (!memcmp(&r->dir->ents[i].id, &u, sizeof u)) e = &r->dir->ents[i];
        json_t *still = e ? store_handed_off(r, e) : NULL;
        if (still) {
            json_decref(still);
            continue;
        }
        json_object_del(r->handoffs, id);
        changed = 1;
    }
    if (changed && handoffs_save(r))
        om_warn("saving %s: %s (the marks it still holds are out of date: harmless)",
                r->handoff_path, om_err_detail());
}

/* Whether the DAG's record of database name lists more than one copy (fencing applies). */
static int replicated_of(store_registry *r, const char *name)
{
    json_t *rec = store_dir_record(r->dir, name);
    int n = (int)json_object_size(json_object_get(rec, "copies"));
    json_decref(rec);
    return n > 1;
}

int store_registry_open(const store_registry_opts *o, store_registry **out)
{
    *out = NULL;
    store_registry *r = calloc(1, sizeof *r);
    if (!r) return om_errf(OM_E_OutOfMemory, "opening the registry: out of memory");
    snprintf(r->server, sizeof r->server, "%s", o->server);
    snprintf(r->dir_path, sizeof r->dir_path, "%s", o->dir_path);
    r->checkpoint_gens = o->checkpoint_gens;
    r->cache_mb = o->cache_mb;
    int rc = 0;
    if (o->conf)
        r->conf = *o->conf;
    else if ((rc = store_dir_read_conf(o->dir_path, &r->conf))) {
        free(r);
        return rc;
    }
    if (r->conf.etcd) {
        snprintf(r->dir_error, sizeof r->dir_error,
                 "the store's first attempt to reach etcd at %s (DAG %s) is under way", r->conf.url,
                 r->conf.dag);
        rc = store_dir_open_none(r->dir_error, &r->dir);
    } else {
        rc = store_dir_open_file(o->dir_path, &r->dir);
        r->dir_ready = !rc;
    }
    char dir[4096];
    om_dirname(o->dir_path, dir, sizeof dir);
    snprintf(r->handoff_path, sizeof r->handoff_path, "%.4000s/handoffs.json", dir);
    store_fence_opts fo = {
        .server = o->server, .always = o->fence_always, .wait_ms = o->fence_wait_ms};
    r->fence_wait_ms = o->fence_wait_ms ? o->fence_wait_ms : 5000;
    if (!rc) rc = handoffs_load(r);
    if (!rc) rc = store_fence_new(&fo, &r->fence);
    if (rc) {
        store_dir_close(r->dir);
        json_decref(r->handoffs);
        free(r);
        return rc;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    *out = r;
    return 0;
}

void store_registry_mount_marked(store_registry *r)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->dir->n; i++) {
        store_dbent *e = &r->dir->ents[i];
        if (!e->mounted || !e->active || strcmp(e->server, r->server)) continue;
        json_t *h = store_handed_off(r, e);
        if (h)
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", e->name}),
                        "database %s was handed off at epoch %lld: not mounted until the DAG names "
                        "this server active at a greater epoch",
                        e->name, (long long)json_integer_value(json_object_get(h, "epoch")));
        else if (store_mount_locked(r, e, 0))
            om_log_with(OM_ERROR, OM_FIELDS({"DATABASE", e->name}), "%s", om_err_detail());
        json_decref(h);
    }
    pthread_mutex_unlock(&r->mu);
}

/* After the watch's changes: what is mounted follows the active copies (mu held). */
static void follow_actives_locked(store_registry *r)
{
    for (int i = 0; i < r->nm; i++) {
        store_mounted *m = r->m[i];
        store_dbent *e = store_dir_find(r->dir, m->name);
        if (e && e->active) {
            store_follow_entry_locked(r, m);
            continue;
        }
        char why[300];
        if (e)
            snprintf(why, sizeof why, "the DAG names server %s active now (epoch %lld)",
                     e->active_on[0] ? e->active_on : "(none)", (long long)e->active_epoch);
        else
            snprintf(why, sizeof why, "it left the directory (another server removed it)");
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", m->name}), "database %s: %s: dismounted here",
                    m->name, why);
        store_dismount_why_locked(r, m, why, NULL);
        i = -1; /* r->m changed (and mu was let go): from the start */
    }
    handoffs_prune_locked(r);
    for (size_t i = 0; i < r->dir->n; i++) {
        store_dbent e = r->dir->ents[i];
        if (!e.mounted || !e.active || store_find_mounted(r, e.name)) continue;
        json_t *h = store_handed_off(r, &e);
        json_decref(h);
        if (h) continue; /* a switchover under way: the DAG decides where it mounts */
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", e.name}),
                    "database %s is active on this server now: mounting it", e.name);
        if (store_mount_locked(r, &e, 0))
            om_log_with(OM_ERROR, OM_FIELDS({"DATABASE", e.name}), "%s", om_err_detail());
    }
}

/* On the directory watch's thread: the changes of other servers, under mu. */
static void on_dir_change(void *arg)
{
    store_registry *r = arg;
    pthread_mutex_lock(&r->mu);
    int changed = 0;
    if (r->shutting || !r->dir_ready)
        ;
    else if (store_dir_refresh(r->dir, &changed))
        om_warn("directory: %s", om_err_detail());
    else if (changed)
        follow_actives_locked(r);
    pthread_cond_broadcast(&r->cond); /* commits waiting out a handoff look again */
    pthread_mutex_unlock(&r->mu);
}

int store_registry_connect(store_registry *r)
{
    pthread_mutex_lock(&r->mu);
    int ready = r->dir_ready;
    pthread_mutex_unlock(&r->mu);
    if (ready) return 0;
    /* etcd is asked without mu: the requests to the placeholder go on meanwhile. */
    etcd *e = NULL;
    store_dir *d = NULL;
    int rc = etcd_open_server(r->conf.url, &e);
    if (!rc) rc = store_dir_open_etcd(e, r->conf.dag, r->server, &d);
    pthread_mutex_lock(&r->mu);
    if (rc) {
        snprintf(r->dir_error, sizeof r->dir_error, "%s", om_err_detail());
        pthread_mutex_unlock(&r->mu);
        etcd_close(e);
        return om_errf(rc, "%s", r->dir_error);
    }
    store_dir_close(r->dir);
    r->dir = d;
    r->etcd = e;
    r->dir_ready = 1;
    r->dir_error[0] = 0;
    pthread_mutex_unlock(&r->mu);
    store_dir_on_change(d, on_dir_change, r);
    on_dir_change(r); /* what the watch saw before the hook was there */
    om_info("directory: etcd at %s, DAG %s: %zu databases of this server", r->conf.url, r->conf.dag,
            d->n);
    store_registry_mount_marked(r);
    return 0;
}

int store_registry_join_locked(store_registry *r, const char *url, const char *dag, int check_only,
                               int *already)
{
    *already = 0;
    if (r->conf.etcd) {
        *already = !strcmp(r->conf.dag, dag);
        return om_errf(OM_E_InvalidParameter,
                       "this server's directory is in DAG %s already (etcd at %s)%s", r->conf.dag,
                       r->conf.url, *already ? "" : ": a server is in one DAG");
    }
    /* What the directory file will say must fit what the store reads back at its next start
     * (store_dir_read_conf), or the store would join now and refuse to start then. */
    if (strlen(url) >= sizeof r->conf.url || strlen(r->server) >= sizeof r->conf.server)
        return om_errf(OM_E_InvalidParameter,
                       "joining DAG %s: the etcd endpoints (%zu bytes) or this server's name (%zu) "
                       "are longer than the directory file holds (%zu, %zu): nothing was "
                       "imported. HINT: name fewer endpoints (ombra-store --etcd can name others "
                       "later)",
                       dag, strlen(url), strlen(r->server), sizeof r->conf.url - 1,
                       sizeof r->conf.server - 1);
    etcd *e = NULL;
    store_dir *d = NULL;
    int rc = etcd_open_server(url, &e);
    if (!rc) rc = store_dir_join(r->dir, e, url, dag, r->server, check_only, &d);
    if (rc || check_only) {
        etcd_close(e);
        return rc;
    }
    store_dir_close(r->dir);
    r->dir = d;
    r->etcd = e;
    r->conf.etcd = 1;
    snprintf(r->conf.url, sizeof r->conf.url, "%s", url);
    snprintf(r->conf.dag, sizeof r->conf.dag, "%s", dag);
    snprintf(r->conf.server, sizeof r->conf.server, "%.127s", r->server);
    store_dir_on_change(d, on_dir_change, r);
    om_info("joined DAG %s (etcd at %s): %zu databases imported; the directory is in etcd now", dag,
            url, d->n);
    return 0;
}

int store_registry_close(store_registry *r)
{
    pthread_mutex_lock(&r->mu);
    r->shutting = 1;
    for (int i = 0; i < r->nm; i++)
        while (r->m[i]->refs > 0)
            pthread_cond_wait(&r->cond, &r->mu);
    int failures = 0;
    while (r->nm > 0)
        failures += store_dismount_locked(r, r->m[0]) != 0;
    pthread_mutex_unlock(&r->mu);
    store_dir_on_change(r->dir, NULL, NULL);
    store_dir_close(r->dir);
    etcd_close(r->etcd);
    store_fence_free(r->fence);
    json_decref(r->handoffs);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return failures;
}

/* ---- observers ---- */

int store_registry_on_closing(store_registry *r, store_closing_fn fn, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    if (r->nclosing == STORE_MAX_OBSERVERS)
        rc = om_errf(OM_E_Internal, "the registry has %d observers already", STORE_MAX_OBSERVERS);
    else {
        r->closing[r->nclosing].fn = fn;
        r->closing[r->nclosing++].arg = arg;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void store_registry_off_closing(store_registry *r, store_closing_fn fn, void *arg)
{
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->nclosing; i++)
        if (r->closing[i].fn == fn && r->closing[i].arg == arg) {
            r->closing[i] = r->closing[--r->nclosing];
            break;
        }
    pthread_mutex_unlock(&r->mu);
}

/* ---- databases ---- */

static int no_such_db(const char *name)
{
    return om_errf(OM_E_DatabaseNotFound, "no database named '%s'", name);
}

int store_find_ent(store_registry *r, const char *name, store_dbent **e)
{
    *e = store_dir_find(r->dir, name);
    return *e ? 0 : no_such_db(name);
}

store_mounted *store_find_mounted(store_registry *r, const char *name)
{
    for (int i = 0; i < r->nm; i++)
        if (!strcmp(r->m[i]->name, name)) return r->m[i];
    return NULL;
}

eng_opts store_ent_opts(const store_registry *r, const store_dbent *e)
{
    eng_opts o = {0};
    o.checkpoint_gens = r->checkpoint_gens;
    o.cache_bytes = (uint64_t)r->cache_mb << 20;
    o.edb_path = e->edb;
    o.log_dir = e->logs;
    o.base = e->base;
    o.circular_logging = e->circular;
    return o;
}

int store_mount_locked(store_registry *r, const store_dbent *e, int create)
{
    if (store_find_mounted(r, e->name)) return 0;
    json_t *h = store_handed_off(r, e);
    if (h) {
        int64_t ep = (int64_t)json_integer_value(json_object_get(h, "epoch"));
        json_decref(h);
        return om_errf(OM_E_DatabaseMoving,
                       "database '%s' was handed off at epoch %lld: it mounts here again only "
                       "when the DAG names this server active at a greater epoch. HINT: the "
                       "database is moving to another server; ombra dag status says where",
                       e->name, (long long)ep);
    }
    if (r->nm >= STORE_MAX_MOUNTED)
        return om_errf(OM_E_TooManyOpenDatabases,
                       "server %s already has %d mounted databases. HINT: dismount one first",
                       r->server, STORE_MAX_MOUNTED);
    for (int i = 0; e->recovery && i < r->nm; i++)
        if (r->m[i]->recovery)
            return om_errf(
                OM_E_TooManyOpenDatabases,
                "recovery database '%s' is already mounted; a server mounts one at a time",
                r->m[i]->name);
    store_mounted *m = calloc(1, sizeof *m);
    if (!m) return om_errf(OM_E_OutOfMemory, "mounting %s: out of memory", e->name);
    snprintf(m->name, sizeof m->name, "%s", e->name);
    m->recovery = e->recovery;
    eng_opts o = store_ent_opts(r, e);
    uint64_t t0 = om_mono_ns();
    int rc = create ? eng_db_create(&o, &m->db) : eng_db_open(&o, &m->db);
    if (!rc) rc = store_mail_open(m->db, &m->mail);
    if (rc) {
        char msg[1200];
        snprintf(msg, sizeof msg, "%s", om_err_detail());
        if (m->db) eng_db_abandon(m->db);
        free(m);
        return om_errf(rc, "mounting '%s': %s", e->name, msg);
    }
    eng_stats st;
    eng_db_stats(m->db, &st);
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", e->name}), "mounted %s (%s) in %.3f s%s", e->name,
                e->edb, (double)(om_mono_ns() - t0) / 1e9,
                st.replay_records ? ", after replaying its logs" : "");
    m->epoch = e->active_epoch;
    if ((rc = store_fence_track(r->fence, m->name, m->epoch, replicated_of(r, e->name)))) {
        store_mail_close(m->mail);
        eng_db_close(m->db);
        free(m);
        return rc;
    }
    om_uuid mid;
    om_uuid_new(&mid);
    om_uuid_str(&mid, m->mount_id);
    r->m[r->nm++] = m;
    pthread_cond_broadcast(&r->cond);
    return 0;
}

void store_follow_entry_locked(store_registry *r, store_mounted *m)
{
    store_dbent *e = store_dir_find(r->dir, m->name);
    if (!e) return;
    m->epoch = e->active_epoch;
    store_fence_update(r->fence, m->name, m->epoch, replicated_of(r, m->name));
}

int store_dismount_why_locked(store_registry *r, store_mounted *m, const char *why,
                              uint32_t *last_gen)
{
    m->closing = 1;
    /* First: commits waiting for the fence give up now, and let their references go. */
    store_fence_untrack(r->fence, m->name, why);
    while (m->refs > 0)
        pthread_cond_wait(&r->cond, &r->mu);
    for (int i = 0; i < r->nclosing; i++)
        r->closing[i].fn(r->closing[i].arg, m->db);
    store_mail_close(m->mail);
    int rc = last_gen ? eng_db_close_gen(m->db, last_gen) : eng_db_close(m->db);
    /* Its cache's memory goes back to the system now, not when malloc next finds a use for it:
     * a long read (a digest) grows the cache past its budget, and what the threads' arenas
     * keep of it stays in the store's size otherwise (1.1 GB after a 1.4 GB database's
     * digest). */
    malloc_trim(0);
    for (int i = 0; i < r->nm; i++)
        if (r->m[i] == m) {
            r->m[i] = r->m[--r->nm];
            break;
        }
    char g[16];
    snprintf(g, sizeof g, "%u", last_gen ? *last_gen : 0);
    if (last_gen && !rc)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", m->name}, {"GENERATION", g}),
                    "dismounted %s, its last log generation %u closed", m->name, *last_gen);
    else
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", m->name}), "dismounted %s%s", m->name,
                    rc ? " after an earlier failure: it recovers at the next mount" : "");
    free(m);
    pthread_cond_broadcast(&r->cond);
    return rc;
}

int store_dismount_locked(store_registry *r, store_mounted *m)
{
    return store_dismount_why_locked(r, m, "dismounted", NULL);
}

int store_acquire(store_registry *r, const char *name, store_mounted **out)
{
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    store_mounted *m = store_find_mounted(r, name);
    if (!m || m->closing) {
        if (store_dir_find(r->dir, name))
            rc = om_errf(OM_E_DatabaseUnavailable,
                         "database '%s' is not mounted. HINT: ombra db mount %s", name, name);
        else
            rc = no_such_db(name);
    } else {
        m->refs++;
        *out = m;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static int wrong_server(const char *name, const char *on, int64_t epoch)
{
    return om_errf(OM_E_WrongServer,
                   "database '%s' is active on server %s (epoch %lld), not here. HINT: deliver "
                   "to %s (ombra dag status names the active copy of each database)",
                   name, on, (long long)epoch, on);
}

int store_acquire_commit(store_registry *r, const char *name, store_mounted **out)
{
    pthread_mutex_lock(&r->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += r->fence_wait_ms / 1000;
    until.tv_nsec += (long)(r->fence_wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    int rc = 0, timed_out = 0;
    for (;;) {
        store_mounted *m = store_find_mounted(r, name);
        if (m && !m->closing) {
            m->refs++;
            *out = m;
            break;
        }
        store_dbent *e = store_dir_find(r->dir, name);
        char on[128];
        int64_t ep = 0;
        if (!e && store_dir_active(r->dir, name, on, sizeof on, &ep) && on[0] &&
            strcmp(on, r->server)) {
            rc = wrong_server(name, on, ep); /* a passive copy here, or none */
            break;
        }
        if (e && !e->active && e->active_on[0]) {
            rc = wrong_server(name, e->active_on, e->active_epoch);
            break;
        }
        json_t *h = e ? store_handed_off(r, e) : NULL;
        if (h && timed_out) {
            rc = om_errf(OM_E_DatabaseMoving,
                         "database '%s' was handed off by server %s at epoch %lld and is not "
                         "active on another server yet. HINT: the database is moving to "
                         "another server; deliver again",
                         name, r->server,
                         (long long)json_integer_value(json_object_get(h, "epoch")));
            json_decref(h);
            break;
        }
        if (h) {
            json_decref(h);
            timed_out = pthread_cond_timedwait(&r->cond, &r->mu, &until) == ETIMEDOUT;
            continue;
        }
        rc = e ? om_errf(OM_E_DatabaseUnavailable,
                         "database '%s' is not mounted. HINT: ombra db mount %s", name, name)
               : no_such_db(name);
        break;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void store_release(store_registry *r, store_mounted *m)
{
    pthread_mutex_lock(&r->mu);
    m->refs--;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}
