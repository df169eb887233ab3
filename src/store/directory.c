/* The directory and its two backends, a file and etcd (directory.h). */
#include "store/directory.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/vfs.h"

#define DIR_VERSION 1

struct store_dir_ops {
    int (*put)(store_dir *d, const store_dbent *e);
    int (*remove)(store_dir *d, store_dbent *cur);
    int (*refresh)(store_dir *d, int *changed);
    void (*on_change)(store_dir *d, void (*fn)(void *arg), void *arg);
    json_t *(*record)(store_dir *d, const char *name);
    void (*close)(store_dir *d);
    /* NULL: the backend knows no database beyond its entries */
    int (*active)(store_dir *d, const char *name, char *server, size_t n, int64_t *epoch);
};

static int oom(void)
{
    return om_errf(OM_E_OutOfMemory, "directory: out of memory");
}

static int copy_str(char *dst, size_t len, json_t *o, const char *key)
{
    const char *s;
    int rc = om_json_str(o, key, &s);
    if (rc) return rc;
    if (strlen(s) >= len)
        return om_errf(OM_E_InvalidParameter, "directory: \"%s\" is too long", key);
    strcpy(dst, s);
    return 0;
}

static int grow(store_dir *d)
{
    if (d->n < d->cap) return 0;
    size_t nc = d->cap ? d->cap * 2 : 16;
    store_dbent *ne = realloc(d->ents, nc * sizeof *ne);
    if (!ne) return oom();
    d->ents = ne;
    d->cap = nc;
    return 0;
}

static store_dbent *find_id(store_dir *d, const om_uuid *id)
{
    for (size_t i = 0; i < d->n; i++)
        if (!memcmp(&d->ents[i].id, id, sizeof *id)) return &d->ents[i];
    return NULL;
}

/* ---- the file backend: one document, replaced whole ---- */

static int file_load(const char *path, json_t **doc)
{
    om_vfs *v = om_vfs_posix();
    *doc = NULL;
    if (v->exists(v, path) == 0) return 0;
    uint8_t *data = NULL;
    size_t n = 0;
    int rc = om_read_file(v, path, &data, &n);
    if (rc) return rc;
    json_error_t jerr;
    *doc = json_loadb((const char *)data, n, 0, &jerr);
    free(data);
    if (!*doc) return om_errf(OM_E_InvalidParameter, "%s: line %d: %s", path, jerr.line, jerr.text);
    return 0;
}

static json_t *ent_json(const store_dbent *e)
{
    char id[37];
    om_uuid_str(&e->id, id);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:b}", "name", e->name, "id",
                     id, "server", e->server, "edb", e->edb, "logs", e->logs, "base", e->base,
                     "circular_logging", e->circular, "allow_restore", e->allow_restore, "recovery",
                     e->recovery, "mounted", e->mounted);
}

static int ent_parse(json_t *o, store_dbent *e)
{
    memset(e, 0, sizeof *e);
    const char *id;
    int rc = copy_str(e->name, sizeof e->name, o, "name");
    if (!rc) rc = copy_str(e->server, sizeof e->server, o, "server");
    if (!rc) rc = copy_str(e->edb, sizeof e->edb, o, "edb");
    if (!rc) rc = copy_str(e->logs, sizeof e->logs, o, "logs");
    if (!rc) rc = copy_str(e->base, sizeof e->base, o, "base");
    if (!rc) rc = om_json_str(o, "id", &id);
    if (!rc) rc = om_uuid_parse(id, &e->id);
    e->circular = json_is_true(json_object_get(o, "circular_logging"));
    e->allow_restore = json_is_true(json_object_get(o, "allow_restore"));
    e->recovery = json_is_true(json_object_get(o, "recovery"));
    e->mounted = json_is_true(json_object_get(o, "mounted"));
    /* One server: its copy is the active one. */
    e->active = 1;
    snprintf(e->active_on, sizeof e->active_on, "%s", e->server);
    return rc;
}

/* Saves the directory as it would be with `e` put (or `remove` removed). */
static int file_save_with(store_dir *d, const store_dbent *e, const store_dbent *remove)
{
    json_t *arr = json_array();
    int replaced = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (&d->ents[i] == remove) continue;
        if (e && !strcmp(d->ents[i].name, e->name)) {
            json_array_append_new(arr, ent_json(e));
            replaced = 1;
        } else
            json_array_append_new(arr, ent_json(&d->ents[i]));
    }
    if (e && !replaced) json_array_append_new(arr, ent_json(e));
    json_t *doc = json_pack("{s:i, s:o}", "version", DIR_VERSION, "databases", arr);
    char *s = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!s) return oom();
    int rc = om_write_file_durable(om_vfs_posix(), d->be, s, strlen(s));
    free(s);
    return rc;
}

static int file_put(store_dir *d, const store_dbent *e)
{
    int rc = grow(d);
    if (!rc) rc = file_save_with(d, e, NULL);
    if (rc) return rc;
    store_dbent *cur = store_dir_find(d, e->name);
    if (!cur) cur = &d->ents[d->n++];
    *cur = *e;
    cur->active = 1;
    snprintf(cur->active_on, sizeof cur->active_on, "%s", e->server);
    return 0;
}

static int file_remove(store_dir *d, store_dbent *cur)
{
    int rc = file_save_with(d, NULL, cur);
    if (rc) return rc;
    *cur = d->ents[--d->n];
    return 0;
}

static int file_refresh(store_dir *d, int *changed)
{
    return 0;
}

static void file_on_change(store_dir *d, void (*fn)(void *arg), void *arg) {}

static json_t *file_record(store_dir *d, const char *name)
{
    return NULL;
}

static void file_close(store_dir *d)
{
    free(d->be);
}

static const store_dir_ops FILE_OPS = {file_put,    file_remove, file_refresh, file_on_change,
                                       file_record, file_close,  NULL};

/* A directory of ops whose backend state is a copy of text (the file's path, the reason of
 * none); NULL when out of memory. */
static store_dir *dir_with_text(const store_dir_ops *ops, const char *text)
{
    store_dir *d = calloc(1, sizeof *d);
    char *t = strdup(text);
    if (!d || !t) {
        free(d);
        free(t);
        return NULL;
    }
    d->ops = ops;
    d->be = t;
    return d;
}

int store_dir_open_file(const char *path, store_dir **out)
{
    store_dir *d = dir_with_text(&FILE_OPS, path);
    if (!d) return oom();
    json_t *doc = NULL;
    int rc = file_load(path, &doc);
    if (!rc && doc && json_object_get(doc, "etcd"))
        rc = om_errf(OM_E_InvalidParameter,
                     "%s says that the directory is in etcd (DAG %s): it is no file directory",
                     path, om_json_str_or(doc, "dag", "?"));
    else if (!rc && doc) {
        json_t *dbs = json_object_get(doc, "databases");
        if (json_integer_value(json_object_get(doc, "version")) != DIR_VERSION ||
            !json_is_array(dbs))
            rc = om_errf(OM_E_InvalidParameter, "%s is not a version %d directory", path,
                         DIR_VERSION);
        size_t i;
        json_t *o;
        json_array_foreach(dbs, i, o)
        {
            if (rc) break;
            if (!(rc = grow(d))) rc = ent_parse(o, &d->ents[d->n]);
            if (rc)
                rc = om_err_ctx(rc, "%s: database %zu", path, i);
            else
                d->n++;
        }
    }
    json_decref(doc);
    if (rc) {
        store_dir_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

int store_dir_read_conf(const char *path, store_dir_conf *c)
{
    memset(c, 0, sizeof *c);
    json_t *doc = NULL;
    int rc = file_load(path, &doc);
    json_t *url = json_object_get(doc, "etcd");
    if (!rc && doc && !json_is_object(doc))
        rc = om_errf(OM_E_InvalidParameter, "%s is not a directory file (not a JSON object)", path);
    else if (!rc && url) {
        const char *u = json_string_value(url), *dag = om_json_str_or(doc, "dag", ""),
                   *srv = om_json_str_or(doc, "server", "");
        if (!u || !*u || strlen(u) >= sizeof c->url || !*dag || strlen(dag) >= sizeof c->dag ||
            !*srv || strlen(srv) >= sizeof c->server)
            rc = om_errf(OM_E_InvalidParameter,
                         "%s says that the directory is in etcd, but not which (\"etcd\": URL, "
                         "\"dag\": NAME and \"server\": NAME, as ombra dag add-server writes "
                         "them)",
                         path);
        else {
            c->etcd = 1;
            strcpy(c->url, u);
            strcpy(c->dag, dag);
            strcpy(c->server, srv);
        }
    }
    json_decref(doc);
    return rc;
}

/* ---- no directory yet: refuses every change ---- */

static int none_put(store_dir *d, const store_dbent *e)
{
    return om_errf(OM_E_EtcdUnavailable, "%s", (const char *)d->be);
}

static int none_remove(store_dir *d, store_dbent *cur)
{
    return om_errf(OM_E_EtcdUnavailable, "%s", (const char *)d->be);
}

static const store_dir_ops NONE_OPS = {none_put,    none_remove, file_refresh, file_on_change,
                                       file_record, file_close,  NULL};

int store_dir_open_none(const char *why, store_dir **out)
{
    store_dir *d = dir_with_text(&NONE_OPS, why);
    if (!d) return oom();
    *out = d;
    return 0;
}

/* ---- the etcd backend: a record per database, a watch ----
 *
 * recs mirrors the records of the DAG as this directory last learnt them (its own writes and
 * the watch's events), each with the revision of its last change; a record another server
 * deleted stays as a tombstone (doc NULL) until the watch has gone past the delete, so that
 * an older event of it arriving late cannot bring it back. ents is made from recs: the records
 * with a copy on this server, in the order they were created. The watch's thread only queues
 * what it sees (pending, under mu); refresh applies it on the caller's thread. */

typedef struct dir_rec {
    char id[37];
    json_t *doc; /* NULL: deleted at mod_rev */
    int64_t mod_rev, create_rev;
} dir_rec;

typedef enum pend_kind {
    PEND_PUT,
    PEND_DEL,
    PEND_SNAP,
    PEND_APUT,
    PEND_ADEL,
    PEND_ASNAP
} pend_kind;

/* A change seen by a watch. PEND_SNAP: the whole state after a compaction, doc is then
 * {id: {"doc", "mod", "create"}} for every record at rev. PEND_A*: the same of active/<id>
 * (the active watch): doc is what the value says (act_value; NULL for a delete), {id: that}
 * for PEND_ASNAP. */
typedef struct pend {
    pend_kind kind;
    char id[37];
    json_t *doc;
    int64_t rev, create_rev;
    struct pend *next;
} pend;

typedef struct dir_etcd {
    etcd *e;
    char prefix[300];
    char dag[STORE_MAX_NAME + 1];
    char server[128];
    dir_rec *recs;
    size_t nrec, caprec;
    etcd_watch *w;
    /* active/<id>: {id: {"server": name or null, "epoch", "since_gen", "rev"}}, server null
     * when deleted (a tombstone that keeps a late event from bringing an older value back) */
    char aprefix[300];
    json_t *act;
    etcd_watch *aw;
    pthread_mutex_t mu; /* pending, hook */
    pend *head, **tail;
    void (*hook)(void *arg);
    void *hook_arg;
    int64_t watch_rev; /* the last revision refresh applied from the watch */
} dir_etcd;

static dir_rec *rec_find(dir_etcd *x, const char *id)
{
    for (size_t i = 0; i < x->nrec; i++)
        if (!strcmp(x->recs[i].id, id)) return &x->recs[i];
    return NULL;
}

/* Sets the record id (a new one goes in create_rev order); doc is stolen. */
static int rec_set(dir_etcd *x, const char *id, json_t *doc, int64_t mod_rev, int64_t create_rev)
{
    dir_rec *r = rec_find(x, id);
    if (!r) {
        if (x->nrec == x->caprec) {
            size_t nc = x->caprec ? x->caprec * 2 : 16;
            dir_rec *nr = realloc(x->recs, nc * sizeof *nr);
            if (!nr) {
                json_decref(doc);
                return oom();
            }
            x->recs = nr;
            x->caprec = nc;
        }
        size_t at = x->nrec;
        while (at > 0 && x->recs[at - 1].create_rev > create_rev)
            at--;
        memmove(&x->recs[at + 1], &x->recs[at], (x->nrec - at) * sizeof *x->recs);
        x->nrec++;
        r = &x->recs[at];
        memset(r, 0, sizeof *r);
        snprintf(r->id, sizeof r->id, "%s", id);
        r->create_rev = create_rev;
    }
    json_decref(r->doc);
    r->doc = doc;
    r->mod_rev = mod_rev;
    return 0;
}

/* The id a key under prefix names, or NULL for a key that is no record of ours. */
static const char *key_id_in(const char *prefix, const char *key)
{
    size_t l = strlen(prefix);
    om_uuid u;
    if (strncmp(key, prefix, l) || strlen(key + l) != 36 || om_uuid_parse(key + l, &u)) return NULL;
    return key + l;
}

static const char *key_id(const dir_etcd *x, const char *key)
{
    return key_id_in(x->prefix, key);
}

/* What an active/<id> value says (a new reference): {"server": its name, or null when it names
 * none (said in the log: it is not ombra's), "epoch", "since_gen"}. */
static json_t *act_value(const etcd_kv *kv)
{
    json_t *v = json_loadb((const char *)kv->val, kv->len, 0, NULL);
    const char *s = json_string_value(json_object_get(v, "server"));
    json_int_t epoch = json_integer_value(json_object_get(v, "epoch")),
               since = json_integer_value(json_object_get(v, "since_gen"));
    json_t *out = json_pack("{s:o, s:I, s:I}", "server", s && *s ? json_string(s) : json_null(),
                            "epoch", epoch, "since_gen", since);
    if (!s || !*s) om_warn("etcd key %s names no active server: taken as none", kv->key);
    json_decref(v);
    return out;
}

/* Sets what active/<id> says (v: act_value's, or json_null() when deleted) as of rev, unless
 * what is known is newer. 1 when it changed. */
static int act_set(dir_etcd *x, const char *id, json_t *v, int64_t rev)
{
    json_t *cur = json_object_get(x->act, id), *server = json_object_get(v, "server");
    if (cur && json_integer_value(json_object_get(cur, "rev")) >= rev) return 0;
    json_object_set_new(x->act, id,
                        json_pack("{s:O, s:I, s:I, s:I}", "server", server ? server : json_null(),
                                  "epoch", json_integer_value(json_object_get(v, "epoch")),
                                  "since_gen", json_integer_value(json_object_get(v, "since_gen")),
                                  "rev", (json_int_t)rev));
    return 1;
}

/* A record's value: a JSON object whose id is its key's. */
static int rec_parse(const dir_etcd *x, const etcd_kv *kv, json_t **doc)
{
    json_error_t je;
    const char *id = key_id(x, kv->key);
    *doc = json_loadb((const char *)kv->val, kv->len, 0, &je);
    const char *did = json_string_value(json_object_get(*doc, "id"));
    const char *why = !id                       ? "its name is no database id"
                      : !*doc                   ? je.text
                      : !json_is_object(*doc)   ? "not a JSON object"
                      : !did || strcmp(did, id) ? "its \"id\" is not its key's"
                      : !json_is_string(json_object_get(*doc, "name")) ? "no \"name\""
                                                                       : NULL;
    if (why) {
        json_decref(*doc);
        *doc = NULL;
        return om_errf(OM_E_InvalidParameter,
                       "etcd key %s is not a database record of the directory: %s. HINT: "
                       "records are written by ombra only; remove or repair the key",
                       kv->key, why);
    }
    return 0;
}

/* The entry of record doc on this server; 1 when it has a copy here, 0 when not. */
static int rec_ent(const dir_etcd *x, json_t *doc, store_dbent *e)
{
    memset(e, 0, sizeof *e);
    json_t *c = json_object_get(json_object_get(doc, "copies"), x->server);
    /* No paths: a passive copy that ombra-repld keeps, not the store's. */
    if (!json_is_object(c) || !json_object_get(c, "edb")) return 0;
    const char *id;
    int rc = copy_str(e->name, sizeof e->name, doc, "name");
    if (!rc) rc = copy_str(e->base, sizeof e->base, doc, "base");
    if (!rc) rc = om_json_str(doc, "id", &id);
    if (!rc) rc = om_uuid_parse(id, &e->id);
    if (!rc) rc = copy_str(e->edb, sizeof e->edb, c, "edb");
    if (!rc) rc = copy_str(e->logs, sizeof e->logs, c, "logs");
    if (rc)
        return om_err_ctx(rc,
                          "directory: record %s: ", json_string_value(json_object_get(doc, "id")));
    snprintf(e->server, sizeof e->server, "%s", x->server);
    e->circular = json_is_true(json_object_get(doc, "circular_logging"));
    e->allow_restore = json_is_true(json_object_get(doc, "allow_restore"));
    e->recovery = json_is_true(json_object_get(doc, "recovery"));
    e->mounted = json_is_true(json_object_get(c, "mounted"));
    json_t *a = json_object_get(x->act, json_string_value(json_object_get(doc, "id")));
    const char *on = json_string_value(json_object_get(a, "server"));
    snprintf(e->active_on, sizeof e->active_on, "%s", on ? on : "");
    e->active = on && !strcmp(on, x->server);
    e->active_epoch = on ? (int64_t)json_integer_value(json_object_get(a, "epoch")) : 0;
    json_int_t since = json_integer_value(json_object_get(a, "since_gen"));
    e->active_since_gen = on && since > 0 && since <= UINT32_MAX ? (uint32_t)since : 0;
    return 1;
}

/* ents from recs. A record that does not read as an entry is left out, said in the log. */
static int rebuild(store_dir *d)
{
    dir_etcd *x = d->be;
    d->n = 0;
    for (size_t i = 0; i < x->nrec; i++) {
        if (!x->recs[i].doc) continue;
        int rc = grow(d);
        if (rc) return rc;
        rc = rec_ent(x, x->recs[i].doc, &d->ents[d->n]);
        if (rc > 0)
            d->n++;
        else if (rc < 0)
            om_warn("%s: left out", om_err_detail());
    }
    return 0;
}

/* The settings of a database, and the fields of one copy, as a record holds them. */
static json_t *shared_json(const store_dbent *e)
{
    return json_pack("{s:s, s:s, s:b, s:b, s:b}", "name", e->name, "base", e->base,
                     "circular_logging", e->circular, "allow_restore", e->allow_restore, "recovery",
                     e->recovery);
}

static json_t *copy_json(const store_dbent *e)
{
    return json_pack("{s:s, s:s, s:b}", "edb", e->edb, "logs", e->logs, "mounted", e->mounted);
}

/* Onto into, the fields of ours that differ from base (every field without a base). */
static int apply_changes(json_t *into, json_t *ours, json_t *base)
{
    const char *k;
    json_t *v;
    json_object_foreach(ours, k, v)
    {
        if (base && json_equal(v, json_object_get(base, k))) continue;
        if (json_object_set(into, k, v)) return oom();
    }
    return 0;
}

/* The record to write: theirs (the record as etcd has it now, NULL when there is none) with
 * what ours changes from base (the entry as the caller saw it, NULL when it had none). */
static int merge(const dir_etcd *x, json_t *theirs, const store_dbent *base,
                 const store_dbent *ours, json_t **out)
{
    char id[37];
    om_uuid_str(&ours->id, id);
    json_t *doc = theirs ? json_deep_copy(theirs) : json_pack("{s:s}", "id", id);
    json_t *so = shared_json(ours), *co = copy_json(ours);
    json_t *sb = base ? shared_json(base) : NULL, *cb = base ? copy_json(base) : NULL;
    int rc = !doc || !so || !co || (base && (!sb || !cb)) ? oom() : 0;
    /* A server adding its copy of a database the DAG has takes its settings as they are. */
    if (!rc && (!theirs || base)) rc = apply_changes(doc, so, sb);
    json_t *copies = doc ? json_object_get(doc, "copies") : NULL;
    if (!rc && !json_is_object(copies)) {
        copies = json_object();
        if (!copies || json_object_set_new(doc, "copies", copies)) rc = oom();
    }
    json_t *mine = rc ? NULL : json_object_get(copies, x->server);
    if (!rc && !mine) {
        /* A new copy comes last in activation preference; replay lag 0 until set. */
        mine = json_pack("{s:I, s:I}", "preference", (json_int_t)json_object_size(copies) + 1,
                         "replay_lag", (json_int_t)0);
        if (!mine || json_object_set_new(copies, x->server, mine)) rc = oom();
        cb = (json_decref(cb), NULL);
    }
    if (!rc) rc = apply_changes(mine, co, cb);
    json_decref(so);
    json_decref(co);
    json_decref(sb);
    json_decref(cb);
    if (rc) {
        json_decref(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

/* The servers holding a copy of record doc, for a message. */
static void copy_servers(json_t *doc, char *buf, size_t n)
{
    const char *k;
    json_t *v;
    buf[0] = 0;
    json_object_foreach(json_object_get(doc, "copies"), k, v)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", buf[0] ? ", " : "", k);
    if (!buf[0]) snprintf(buf, n, "none");
}

#define PUT_TRIES 20

/* Between two tries that lost to another server's write: a random pause that grows (up to
 * 2^try ms, at most 128), so that servers changing one record at once stop meeting in step. */
static void conflict_pause(int try)
{
    static _Thread_local unsigned seed;
    if (!seed) seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
    unsigned span = 1u << (try < 7 ? try : 7);
    struct timespec ts = {0, (long)(rand_r(&seed) % span + 1) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One try of a put: reads every record (the names must stay unique), merges, and writes in a
 * txn that holds only if the record is still as read. *done 1 when written; *doc the record. */
static int put_try(store_dir *d, const store_dbent *e, const store_dbent *base, int *done,
                   json_t **written, int64_t *mod_rev, int64_t *create_rev)
{
    dir_etcd *x = d->be;
    char id[37], key[400], servers[300];
    om_uuid_str(&e->id, id);
    snprintf(key, sizeof key, "%s%s", x->prefix, id);
    etcd_kv *kvs, *cur = NULL;
    size_t n;
    int64_t rev;
    json_t *theirs = NULL, *doc = NULL;
    *done = 0;
    int rc = etcd_range_prefix(x->e, x->prefix, &kvs, &n, &rev);
    if (rc) return om_err_ctx(rc, "directory: reading the databases of the DAG: ");
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *o;
        const char *kid = key_id(x, kvs[i].key);
        if (!kid || rec_parse(x, &kvs[i], &o)) continue; /* not a record: no name to take */
        if (!strcmp(kid, id)) {
            theirs = o;
            cur = &kvs[i];
            continue;
        }
        if (!strcmp(json_string_value(json_object_get(o, "name")), e->name)) {
            copy_servers(o, servers, sizeof servers);
            rc = om_errf(OM_E_DatabaseDuplicate,
                         "a database named '%s' already exists in DAG %s (id %s, copies on %s)",
                         e->name, x->dag, kid, servers);
        }
        json_decref(o);
    }
    const char *tname = json_string_value(json_object_get(theirs, "name"));
    if (rc)
        ;
    else if (base && !theirs)
        rc = om_errf(OM_E_DatabaseNotFound,
                     "database '%s' was removed from the DAG by another server meanwhile", e->name);
    else if (base && !json_object_get(json_object_get(theirs, "copies"), x->server))
        rc = om_errf(OM_E_DatabaseNotFound,
                     "the copy of '%s' on %s was removed from the DAG by another server meanwhile",
                     e->name, x->server);
    else if (!base && theirs && strcmp(tname, e->name))
        rc = om_errf(OM_E_DatabaseDuplicate, "database id %s is named '%s' in the DAG, not '%s'",
                     id, tname, e->name);
    if (!rc) rc = merge(x, theirs, base, e, &doc);
    char *text = rc ? NULL : json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (!rc && !text) rc = oom();
    /* This server's copy is new here: a database the DAG names no active copy of gets this one
     * (epoch 1), in the same txn as the record, so that a crash leaves both or neither. */
    char akey[400], *aval = NULL;
    etcd_kv *akv = NULL;
    snprintf(akey, sizeof akey, "%s%s", x->aprefix, id);
    if (!rc && !base) rc = etcd_get(x->e, akey, &akv, NULL);
    if (!rc && !base && !akv) {
        json_t *a = json_pack("{s:i, s:s}", "epoch", 1, "server", x->server);
        aval = a ? json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(a);
        if (!aval) rc = oom();
    }
    if (!rc) {
        etcd_txn *t = etcd_txn_new();
        if (cur)
            etcd_txn_cmp_mod(t, key, ETCD_EQUAL, cur->mod_rev);
        else
            etcd_txn_cmp_absent(t, key);
        if (aval) {
            etcd_txn_cmp_absent(t, akey);
            etcd_txn_put(t, ETCD_THEN, akey, aval, strlen(aval), 0);
        } else if (akv)
            etcd_txn_cmp_mod(t, akey, ETCD_EQUAL, akv->mod_rev);
        /* A new name: no record may have been made or renamed since the read. */
        if (!theirs || strcmp(tname, json_string_value(json_object_get(doc, "name"))))
            etcd_txn_cmp_prefix_mod(t, x->prefix, ETCD_LESS, rev + 1);
        etcd_txn_put(t, ETCD_THEN, key, text, strlen(text), 0);
        rc = etcd_txn_commit(x->e, t, done);
        if (!rc && *done) {
            *mod_rev = etcd_txn_revision(t);
            *create_rev = cur ? cur->create_rev : *mod_rev;
            *written = doc;
            doc = NULL;
            if (aval) {
                json_t *me = json_pack("{s:s, s:i}", "server", x->server, "epoch", 1);
                act_set(x, id, me, *mod_rev);
                json_decref(me);
            }
        }
        etcd_txn_free(t);
        if (rc) rc = om_err_ctx(rc, "directory: recording database '%s': ", e->name);
    }
    free(text);
    free(aval);
    etcd_kvs_free(akv, akv ? 1 : 0);
    json_decref(doc);
    json_decref(theirs);
    etcd_kvs_free(kvs, n);
    return rc;
}

static int etcd_dir_put(store_dir *d, const store_dbent *e)
{
    dir_etcd *x = d->be;
    store_dbent *base = find_id(d, &e->id), *named = store_dir_find(d, e->name);
    if (named && named != base) {
        char id[37];
        om_uuid_str(&named->id, id);
        return om_errf(OM_E_DatabaseDuplicate,
                       "a database named '%s' already exists on %s (id %s). HINT: remove it "
                       "first",
                       e->name, x->server, id);
    }
    int rc = grow(d);
    for (int i = 0; i < PUT_TRIES && !rc; i++) {
        int done = 0;
        json_t *doc = NULL;
        int64_t mod_rev = 0, create_rev = 0;
        if ((rc = put_try(d, e, base, &done, &doc, &mod_rev, &create_rev))) continue;
        if (!done) {
            conflict_pause(i);
            continue;
        }
        char id[37];
        om_uuid_str(&e->id, id);
        store_dbent ne;
        if (rec_ent(x, doc, &ne) <= 0) {
            json_decref(doc);
            return om_errf(OM_E_Internal, "directory: record %s written without its copy", id);
        }
        if ((rc = rec_set(x, id, doc, mod_rev, create_rev))) return rc;
        if (base)
            *base = ne;
        else
            d->ents[d->n++] = ne;
        return 0;
    }
    if (rc) return rc;
    return om_errf(OM_E_WriteConflict,
                   "directory: database '%s' was changed by other servers through %d tries to "
                   "record this change. HINT: retry",
                   e->name, PUT_TRIES);
}

/* One try of a remove: this server's copy out of the record as it is now, in a txn that holds
 * only if it is still so. *done 1 when removed or gone already. */
static int remove_try(dir_etcd *x, const char *id, int *done)
{
    char key[400];
    snprintf(key, sizeof key, "%s%s", x->prefix, id);
    etcd_kv *kv = NULL;
    json_t *doc = NULL;
    char *text = NULL;
    etcd_txn *t = NULL;
    *done = 0;
    int rc = etcd_get(x->e, key, &kv, NULL);
    if (!rc && kv) rc = rec_parse(x, kv, &doc);
    json_t *copies = json_object_get(doc, "copies");
    if (rc) goto out;
    if (!kv || !json_object_get(copies, x->server)) {
        /* Gone already: another server removed it meanwhile. */
        *done = 1;
        rc = rec_set(x, id, NULL, kv ? kv->mod_rev : 0, 0);
        goto out;
    }
    json_object_del(copies, x->server);
    int last = json_object_size(copies) == 0;
    t = etcd_txn_new();
    etcd_txn_cmp_mod(t, key, ETCD_EQUAL, kv->mod_rev);
    if (last) { /* the database leaves the DAG: its active copy with it */
        char akey[400];
        snprintf(akey, sizeof akey, "%s%s", x->aprefix, id);
        etcd_txn_delete(t, ETCD_THEN, key, 0);
        etcd_txn_delete(t, ETCD_THEN, akey, 0);
    } else if ((text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS)))
        etcd_txn_put(t, ETCD_THEN, key, text, strlen(text), 0);
    else
        rc = oom();
    if (!rc) rc = etcd_txn_commit(x->e, t, done);
    if (!rc && *done)
        rc = rec_set(x, id, last ? NULL : json_incref(doc), etcd_txn_revision(t), kv->create_rev);
out:
    etcd_txn_free(t);
    free(text);
    json_decref(doc);
    etcd_kvs_free(kv, kv ? 1 : 0);
    return rc;
}

static int etcd_dir_remove(store_dir *d, store_dbent *cur)
{
    char id[37];
    om_uuid_str(&cur->id, id);
    int rc = 0, done = 0;
    for (int i = 0; i < PUT_TRIES && !rc && !done; i++)
        if (!(rc = remove_try(d->be, id, &done)) && !done) conflict_pause(i);
    if (rc) return om_err_ctx(rc, "directory: removing database '%s': ", cur->name);
    if (!done)
        return om_errf(OM_E_WriteConflict,
                       "directory: database '%s' was changed by other servers through %d tries "
                       "to remove this server's copy. HINT: retry",
                       cur->name, PUT_TRIES);
    memmove(cur, cur + 1, (size_t)(d->ents + d->n - (cur + 1)) * sizeof *cur);
    d->n--;
    return 0;
}

/* Queues p and tells the store (on a watch's thread). */
static void queue(dir_etcd *x, pend *p)
{
    pthread_mutex_lock(&x->mu);
    *x->tail = p;
    x->tail = &p->next;
    void (*hook)(void *) = x->hook;
    void *harg = x->hook_arg;
    pthread_mutex_unlock(&x->mu);
    if (hook) hook(harg);
}

/* On the watch's thread: queue the change, tell the store. */
static void on_event(void *arg, const etcd_event *ev)
{
    dir_etcd *x = arg;
    pend *p = calloc(1, sizeof *p);
    if (!p) {
        om_error("directory: out of memory: a change of the DAG is not seen until the next one");
        return;
    }
    p->rev = ev->rev;
    if (ev->type == ETCD_EV_RESYNC) {
        p->kind = PEND_SNAP;
        p->doc = json_object();
        for (size_t i = 0; i < ev->n && p->doc; i++) {
            json_t *doc;
            const char *id = key_id(x, ev->kvs[i].key);
            if (!id) continue;
            if (rec_parse(x, &ev->kvs[i], &doc)) {
                om_warn("%s", om_err_detail());
                continue;
            }
            json_object_set_new(p->doc, id,
                                json_pack("{s:o, s:I, s:I}", "doc", doc, "mod",
                                          (json_int_t)ev->kvs[i].mod_rev, "create",
                                          (json_int_t)ev->kvs[i].create_rev));
        }
    } else {
        const char *id = key_id(x, ev->kv->key);
        if (!id || (ev->type == ETCD_EV_PUT && rec_parse(x, ev->kv, &p->doc))) {
            if (id) om_warn("%s: left out", om_err_detail());
            free(p);
            return;
        }
        p->kind = ev->type == ETCD_EV_PUT ? PEND_PUT : PEND_DEL;
        snprintf(p->id, sizeof p->id, "%s", id);
        p->create_rev = ev->kv->create_rev;
    }
    queue(x, p);
}

/* On the active watch's thread: the same for active/<id>. */
static void on_active_event(void *arg, const etcd_event *ev)
{
    dir_etcd *x = arg;
    pend *p = calloc(1, sizeof *p);
    if (!p) {
        om_error("directory: out of memory: a change of the DAG is not seen until the next one");
        return;
    }
    p->rev = ev->rev;
    if (ev->type == ETCD_EV_RESYNC) {
        p->kind = PEND_ASNAP;
        p->doc = json_object();
        for (size_t i = 0; i < ev->n && p->doc; i++) {
            const char *id = key_id_in(x->aprefix, ev->kvs[i].key);
            if (id) json_object_set_new(p->doc, id, act_value(&ev->kvs[i]));
        }
    } else {
        const char *id = key_id_in(x->aprefix, ev->kv->key);
        if (!id) {
            free(p);
            return;
        }
        p->kind = ev->type == ETCD_EV_PUT ? PEND_APUT : PEND_ADEL;
        snprintf(p->id, sizeof p->id, "%s", id);
        p->doc = ev->type == ETCD_EV_PUT ? act_value(ev->kv) : NULL;
    }
    queue(x, p);
}

static int apply_snap(dir_etcd *x, const pend *p)
{
    for (size_t i = 0; i < x->nrec; i++) {
        dir_rec *r = &x->recs[i];
        if (r->mod_rev <= p->rev && !json_object_get(p->doc, r->id)) {
            json_decref(r->doc);
            r->doc = NULL;
            r->mod_rev = p->rev;
        }
    }
    const char *id;
    json_t *v;
    json_object_foreach(p->doc, id, v)
    {
        int64_t mod = json_integer_value(json_object_get(v, "mod"));
        dir_rec *r = rec_find(x, id);
        if (r && r->mod_rev >= mod) continue;
        int rc = rec_set(x, id, json_incref(json_object_get(v, "doc")), mod,
                         json_integer_value(json_object_get(v, "create")));
        if (rc) return rc;
    }
    return 0;
}

static int etcd_dir_refresh(store_dir *d, int *changed)
{
    dir_etcd *x = d->be;
    pthread_mutex_lock(&x->mu);
    pend *p = x->head;
    x->head = NULL;
    x->tail = &x->head;
    pthread_mutex_unlock(&x->mu);
    int n = 0, rc = 0;
    while (p) {
        dir_rec *r = p->kind == PEND_SNAP ? NULL : rec_find(x, p->id);
        if (rc)
            ;
        else if (p->kind == PEND_APUT || p->kind == PEND_ADEL) {
            json_t *none = json_null();
            n += act_set(x, p->id, p->doc ? p->doc : none, p->rev);
            json_decref(none);
            pend *next = p->next;
            json_decref(p->doc);
            free(p);
            p = next;
            continue;
        } else if (p->kind == PEND_ASNAP) {
            /* What the snapshot does not name was deleted before it; the rest is as it says. */
            const char *id;
            json_t *v, *none = json_null();
            json_object_foreach(x->act, id, v) if (!json_object_get(p->doc, id)) n +=
                act_set(x, id, none, p->rev);
            json_object_foreach(p->doc, id, v) n += act_set(x, id, v, p->rev);
            json_decref(none);
            pend *next = p->next;
            json_decref(p->doc);
            free(p);
            p = next;
            continue;
        } else if (p->kind == PEND_SNAP) {
            rc = apply_snap(x, p);
            n++;
        } else if (!r || r->mod_rev < p->rev) {
            /* A put newer than what this directory knows; a delete of a record it knows. */
            if (p->kind == PEND_PUT || r) {
                rc = rec_set(x, p->id, p->kind == PEND_PUT ? json_incref(p->doc) : NULL, p->rev,
                             p->create_rev);
                n++;
            }
        }
        if (p->rev > x->watch_rev) x->watch_rev = p->rev;
        pend *next = p->next;
        json_decref(p->doc);
        free(p);
        p = next;
    }
    /* Tombstones the watch has gone past: no older event of them can come any more. */
    size_t k = 0;
    for (size_t i = 0; i < x->nrec; i++)
        if (x->recs[i].doc || x->recs[i].mod_rev > x->watch_rev) x->recs[k++] = x->recs[i];
    x->nrec = k;
    if (!rc && n) rc = rebuild(d);
    if (changed) *changed = n;
    return rc;
}

static void etcd_dir_on_change(store_dir *d, void (*fn)(void *arg), void *arg)
{
    dir_etcd *x = d->be;
    pthread_mutex_lock(&x->mu);
    x->hook = fn;
    x->hook_arg = arg;
    pthread_mutex_unlock(&x->mu);
}

static json_t *etcd_dir_record(store_dir *d, const char *name)
{
    dir_etcd *x = d->be;
    for (size_t i = 0; i < x->nrec; i++) {
        const char *n = json_string_value(json_object_get(x->recs[i].doc, "name"));
        if (n && !strcmp(n, name)) return json_deep_copy(x->recs[i].doc);
    }
    return NULL;
}

static void etcd_dir_close(store_dir *d)
{
    dir_etcd *x = d->be;
    if (!x) return;
    etcd_watch_stop(x->w);
    etcd_watch_stop(x->aw);
    json_decref(x->act);
    for (size_t i = 0; i < x->nrec; i++)
        json_decref(x->recs[i].doc);
    free(x->recs);
    for (pend *p = x->head, *next; p; p = next) {
        next = p->next;
        json_decref(p->doc);
        free(p);
    }
    pthread_mutex_destroy(&x->mu);
    free(x);
}

static int etcd_dir_active(store_dir *d, const char *name, char *server, size_t n, int64_t *epoch)
{
    dir_etcd *x = d->be;
    for (size_t i = 0; i < x->nrec; i++) {
        const char *rn = json_string_value(json_object_get(x->recs[i].doc, "name"));
        if (!rn || strcmp(rn, name)) continue;
        json_t *a = json_object_get(x->act, x->recs[i].id);
        const char *on = json_string_value(json_object_get(a, "server"));
        snprintf(server, n, "%s", on ? on : "");
        *epoch = on ? (int64_t)json_integer_value(json_object_get(a, "epoch")) : 0;
        return 1;
    }
    return 0;
}

static const store_dir_ops ETCD_OPS = {etcd_dir_put,       etcd_dir_remove, etcd_dir_refresh,
                                       etcd_dir_on_change, etcd_dir_record, etcd_dir_close,
                                       etcd_dir_active};

static int valid_name(const char *s)
{
    size_t l = strlen(s);
    if (!l || l > STORE_MAX_NAME || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

int store_dir_open_etcd(etcd *e, const char *dag, const char *server, store_dir **out)
{
    *out = NULL;
    if (!valid_name(dag) || !valid_name(server))
        return om_errf(
            OM_E_InvalidName, "'%s' is not a valid %s name (1-%d letters, digits, '-', '_', '.')",
            valid_name(dag) ? server : dag, valid_name(dag) ? "server" : "DAG", STORE_MAX_NAME);
    store_dir *d = calloc(1, sizeof *d);
    dir_etcd *x = calloc(1, sizeof *x);
    if (!d || !x) {
        free(d);
        free(x);
        return oom();
    }
    d->ops = &ETCD_OPS;
    d->be = x;
    x->e = e;
    snprintf(x->prefix, sizeof x->prefix, "/ombra/dag/%s/databases/", dag);
    snprintf(x->aprefix, sizeof x->aprefix, "/ombra/dag/%s/active/", dag);
    x->act = json_object();
    snprintf(x->server, sizeof x->server, "%s", server);
    snprintf(x->dag, sizeof x->dag, "%s", dag);
    pthread_mutex_init(&x->mu, NULL);
    x->tail = &x->head;
    etcd_kv *kvs = NULL;
    size_t n = 0;
    int64_t rev = 0, arev = 0;
    /* The active copies first: the entries made from the records below say which are here. */
    int rc = x->act ? etcd_range_prefix(e, x->aprefix, &kvs, &n, &arev) : oom();
    for (size_t i = 0; i < n && !rc; i++) {
        const char *id = key_id_in(x->aprefix, kvs[i].key);
        json_t *srv = id ? act_value(&kvs[i]) : NULL;
        if (id) act_set(x, id, srv, kvs[i].mod_rev);
        json_decref(srv);
    }
    etcd_kvs_free(kvs, n);
    kvs = NULL;
    n = 0;
    if (!rc) rc = etcd_range_prefix(e, x->prefix, &kvs, &n, &rev);
    if (rc) rc = om_err_ctx(rc, "directory: reading the databases of DAG %s: ", dag);
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *doc;
        if (!(rc = rec_parse(x, &kvs[i], &doc)))
            rc = rec_set(x, key_id(x, kvs[i].key), doc, kvs[i].mod_rev, kvs[i].create_rev);
    }
    etcd_kvs_free(kvs, n);
    if (!rc) rc = rebuild(d);
    x->watch_rev = rev;
    /* From the revision read on: nothing made after the read is missed. */
    if (!rc) rc = etcd_watch_start(e, x->prefix, rev + 1, on_event, x, &x->w);
    if (!rc) rc = etcd_watch_start(e, x->aprefix, arev + 1, on_active_event, x, &x->aw);
    if (rc) {
        store_dir_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

/* ---- the interface ---- */

void store_dir_close(store_dir *d)
{
    if (!d) return;
    d->ops->close(d);
    free(d->ents);
    free(d);
}

store_dbent *store_dir_find(store_dir *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->ents[i].name, name)) return &d->ents[i];
    return NULL;
}

int store_dir_put(store_dir *d, const store_dbent *e)
{
    return d->ops->put(d, e);
}

int store_dir_remove(store_dir *d, const char *name)
{
    store_dbent *cur = store_dir_find(d, name);
    if (!cur) return om_errf(OM_E_DatabaseNotFound, "no database named '%s'", name);
    return d->ops->remove(d, cur);
}

int store_dir_refresh(store_dir *d, int *changed)
{
    if (changed) *changed = 0;
    return d->ops->refresh(d, changed);
}

void store_dir_on_change(store_dir *d, void (*fn)(void *arg), void *arg)
{
    d->ops->on_change(d, fn, arg);
}

json_t *store_dir_record(store_dir *d, const char *name)
{
    return d->ops->record(d, name);
}

int store_dir_active(store_dir *d, const char *name, char *server, size_t n, int64_t *epoch)
{
    server[0] = 0;
    *epoch = 0;
    return d->ops->active ? d->ops->active(d, name, server, n, epoch) : 0;
}

int store_same_place(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    const char *x = realpath(a, ra) ? ra : a, *y = realpath(b, rb) ? rb : b;
    return !strcmp(x, y);
}

const store_dbent *store_dir_place_taken(const store_dir *d, const char *edb, const char *logs,
                                         const char *base, const store_dbent *skip, char *why,
                                         size_t n)
{
    char edir[4096];
    om_dirname(edb, edir, sizeof edir);
    for (size_t i = 0; i < d->n; i++) {
        const store_dbent *o = &d->ents[i];
        char odir[4096];
        if (o == skip) continue;
        om_dirname(o->edb, odir, sizeof odir);
        const char *what = store_same_place(o->edb, edb) ? "its database file is that file"
                           : store_same_place(o->logs, logs) && !strcmp(o->base, base)
                               ? "its log stream is in that folder under that base name"
                           : store_same_place(o->logs, edir) ? "that folder is its log folder"
                           : store_same_place(odir, logs)    ? "its database file is in that folder"
                                                             : NULL;
        if (what) {
            snprintf(why, n, "%s", what);
            return o;
        }
    }
    return NULL;
}

int store_check_edb_name(const char *edb, const char *what)
{
    static const char *const LOG_SUFFIXES[] = {".log", ".chk", ".pgj", ".jrs", ".env"};
    size_t l = strlen(edb);
    for (size_t i = 0; i < sizeof LOG_SUFFIXES / sizeof *LOG_SUFFIXES; i++) {
        size_t k = strlen(LOG_SUFFIXES[i]);
        if (l >= k && !strcasecmp(edb + l - k, LOG_SUFFIXES[i]))
            return om_errf(OM_E_InvalidPath,
                           "%s %s is named as a log folder's own files are (*%s): a log roll or a "
                           "truncation could take it. HINT: name the database file *.edb",
                           what, edb, LOG_SUFFIXES[i]);
    }
    return 0;
}

/* ---- joining a DAG ---- */

/* Why f (an entry of this server's file directory) cannot go into the etcd directory to:
 * an error, or 0. */
static int join_check(store_dir *to, const store_dbent *f)
{
    dir_etcd *x = to->be;
    char id[37], servers[300];
    om_uuid_str(&f->id, id);
    dir_rec *r = rec_find(x, id);
    const char *rname = r && r->doc ? json_string_value(json_object_get(r->doc, "name")) : NULL;
    const char *aon = json_string_value(json_object_get(json_object_get(x->act, id), "server"));
    json_t *named = etcd_dir_record(to, f->name);
    const char *nid = json_string_value(json_object_get(named, "id"));
    int rc = 0;
    if (named && nid && strcmp(nid, id)) {
        copy_servers(named, servers, sizeof servers);
        rc = om_errf(OM_E_DatabaseDuplicate,
                     "DAG %s already has a database named '%s' (id %s, copies on %s): this "
                     "server's '%s' (id %s) cannot join under that name, and nothing was "
                     "imported. HINT: names are unique in a DAG; restore this one under another "
                     "name (ombra restore --to NEW) and remove it, then join again",
                     x->dag, f->name, nid, servers, f->name, id);
    } else if (rname && strcmp(rname, f->name))
        rc = om_errf(OM_E_DatabaseDuplicate,
                     "database id %s is named '%s' in DAG %s but '%s' on this server: nothing was "
                     "imported. HINT: one of them is a copy of the other's files; remove one",
                     id, rname, x->dag, f->name);
    else if (aon && strcmp(aon, x->server))
        rc = om_errf(OM_E_InvalidParameter,
                     "database '%s' (id %s) is active on server %s in DAG %s: this server's copy "
                     "cannot join as a second active one, and nothing was imported. HINT: its "
                     "copy here is a passive copy's business (ombra db copy add on %s)",
                     f->name, id, aon, x->dag, aon);
    json_decref(named);
    return rc;
}

int store_dir_join(store_dir *from, etcd *e, const char *url, const char *dag, const char *server,
                   int check_only, store_dir **out)
{
    *out = NULL;
    if (from->ops != &FILE_OPS)
        return om_errf(OM_E_InvalidParameter, "directory: only a file directory joins a DAG");
    const char *path = from->be;
    store_dir *to = NULL;
    int rc = store_dir_open_etcd(e, dag, server, &to);
    if (rc) return om_err_ctx(rc, "joining DAG %s: ", dag);
    /* Everything is checked before anything is written. */
    for (size_t i = 0; i < from->n && !rc; i++)
        if (!strcmp(from->ents[i].server, server)) rc = join_check(to, &from->ents[i]);
    for (size_t i = 0; i < from->n && !rc && !check_only; i++) {
        const store_dbent *f = &from->ents[i];
        if (strcmp(f->server, server)) {
            om_warn("directory: database %s is recorded for server %s, not %s: not imported into "
                    "DAG %s (it stays in %s under \"imported\")",
                    f->name, f->server, server, dag, path);
            continue;
        }
        if ((rc = store_dir_put(to, f)))
            rc = om_err_ctx(rc, "importing database '%s' into DAG %s: ", f->name, dag);
    }
    if (!rc && !check_only) {
        /* The old list stays in the file for the record: nothing reads it back. */
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < from->n; i++)
            json_array_append_new(arr, ent_json(&from->ents[i]));
        json_t *doc = json_pack("{s:i, s:s, s:s, s:s, s:o*}", "version", DIR_VERSION, "etcd", url,
                                "dag", dag, "server", server, "imported", arr);
        char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        json_decref(doc);
        rc = text ? om_write_file_durable(om_vfs_posix(), path, text, strlen(text)) : oom();
        free(text);
        if (rc) rc = om_err_ctx(rc, "joining DAG %s: the databases are in etcd, but ", dag);
    }
    if (rc || check_only) {
        store_dir_close(to);
        return rc;
    }
    *out = to;
    return 0;
}
