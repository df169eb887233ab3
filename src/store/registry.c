/* The registry of a store (registry.h). */
#include "store/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"

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
                 "the directory is in etcd at %s (DAG %s) and was not reached yet", r->conf.url,
                 r->conf.dag);
        rc = store_dir_open_none(r->dir_error, &r->dir);
    } else {
        rc = store_dir_open_file(o->dir_path, &r->dir);
        r->dir_ready = !rc;
    }
    if (rc) {
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
        if (store_mount_locked(r, e, 0)) om_error("%s", om_err_detail());
    }
    pthread_mutex_unlock(&r->mu);
}

/* After the watch's changes: what is mounted follows the active copies (mu held). */
static void follow_actives_locked(store_registry *r)
{
    for (int i = 0; i < r->nm; i++) {
        store_mounted *m = r->m[i];
        store_dbent *e = store_dir_find(r->dir, m->name);
        if (e && e->active) continue;
        if (e)
            om_warn("database %s: the DAG names server %s active now: dismounted here", m->name,
                    e->active_on[0] ? e->active_on : "(none)");
        else
            om_warn("database %s left the directory (another server removed it): dismounted",
                    m->name);
        store_dismount_locked(r, m);
        i = -1; /* r->m changed (and mu was let go): from the start */
    }
    for (size_t i = 0; i < r->dir->n; i++) {
        store_dbent e = r->dir->ents[i];
        if (!e.mounted || !e.active || store_find_mounted(r, e.name)) continue;
        om_info("database %s is active on this server now: mounting it", e.name);
        if (store_mount_locked(r, &e, 0)) om_error("%s", om_err_detail());
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
    om_info("mounted %s (%s) in %.3f s%s", e->name, e->edb, (double)(om_mono_ns() - t0) / 1e9,
            st.replay_records ? ", after replaying its logs" : "");
    r->m[r->nm++] = m;
    return 0;
}

int store_dismount_locked(store_registry *r, store_mounted *m)
{
    m->closing = 1;
    while (m->refs > 0)
        pthread_cond_wait(&r->cond, &r->mu);
    for (int i = 0; i < r->nclosing; i++)
        r->closing[i].fn(r->closing[i].arg, m->db);
    store_mail_close(m->mail);
    int rc = eng_db_close(m->db);
    for (int i = 0; i < r->nm; i++)
        if (r->m[i] == m) {
            r->m[i] = r->m[--r->nm];
            break;
        }
    om_info("dismounted %s%s", m->name,
            rc ? " after an earlier failure: it recovers at the next mount" : "");
    free(m);
    return rc;
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

void store_release(store_registry *r, store_mounted *m)
{
    pthread_mutex_lock(&r->mu);
    m->refs--;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}
