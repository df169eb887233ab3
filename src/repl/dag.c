/* The DAG's records in etcd (dag.h). */
#include "repl/dag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"
#include "repl/ca.h"

#define DAG_ROOT "/ombra/dag/"

void rp_dag_key(const rp_dag *d, char *out, size_t n, const char *fmt, ...)
{
    int k = snprintf(out, n, "%s", d->prefix);
    if (k < 0 || (size_t)k >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + k, n - (size_t)k, fmt, ap);
    va_end(ap);
}

/* The names of the DAGs this etcd holds (their config records), comma-separated into out. */
static int dag_names(etcd *e, char *out, size_t n, int *count)
{
    etcd_kv *kvs = NULL;
    size_t nk = 0;
    int64_t rev;
    *count = 0;
    out[0] = 0;
    int rc = etcd_range_prefix(e, DAG_ROOT, &kvs, &nk, &rev);
    if (rc) return rc;
    for (size_t i = 0; i < nk; i++) {
        const char *k = kvs[i].key + strlen(DAG_ROOT), *slash = strchr(k, '/');
        if (!slash || strcmp(slash, "/config")) continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%.*s", *count ? ", " : "", (int)(slash - k), k);
        (*count)++;
    }
    etcd_kvs_free(kvs, nk);
    return 0;
}

int rp_dag_open(const char *endpoints, const char *name, int must_exist, rp_dag **out)
{
    *out = NULL;
    if (!endpoints || !*endpoints)
        return om_errf(OM_E_InvalidParameter,
                       "no etcd named. HINT: --etcd http://HOST:2379 or OMBRA_ETCD");
    int rc0 = name ? rp_name_check("DAG name", name) : 0;
    if (rc0) return rc0;
    rp_dag *d = calloc(1, sizeof *d);
    if (!d) return om_errf(OM_E_OutOfMemory, "DAG handle");
    int rc = etcd_open_server(endpoints, &d->e);
    if (rc) {
        free(d);
        return rc;
    }
    if (!name) {
        char names[1024];
        int count;
        if ((rc = dag_names(d->e, names, sizeof names, &count))) goto fail;
        if (count == 0) {
            rc = om_errf(OM_E_DagNotFound, "etcd at %s holds no DAG. HINT: ombra dag init NAME",
                         endpoints);
            goto fail;
        }
        if (count > 1) {
            rc = om_errf(OM_E_InvalidParameter,
                         "etcd at %s holds several DAGs (%s). HINT: --dag NAME", endpoints, names);
            goto fail;
        }
        snprintf(d->name, sizeof d->name, "%.63s", names);
    } else {
        snprintf(d->name, sizeof d->name, "%s", name);
    }
    snprintf(d->prefix, sizeof d->prefix, DAG_ROOT "%s/", d->name);
    if (must_exist) {
        json_t *cfg = NULL;
        int64_t rev;
        if ((rc = rp_dag_get(d, "config", &cfg, &rev))) goto fail;
        if (!cfg) {
            rc = om_errf(OM_E_DagNotFound,
                         "no DAG named '%s' in etcd at %s. HINT: ombra dag init %s", d->name,
                         endpoints, d->name);
            goto fail;
        }
        json_decref(cfg);
    }
    *out = d;
    return 0;
fail:
    rp_dag_close(d);
    return rc;
}

void rp_dag_close(rp_dag *d)
{
    if (!d) return;
    etcd_close(d->e);
    free(d);
}

static int parse_rec(const char *key, const etcd_kv *kv, json_t **val)
{
    json_error_t je;
    *val = json_loadb((const char *)kv->val, kv->len, 0, &je);
    if (!*val || !json_is_object(*val)) {
        json_decref(*val);
        *val = NULL;
        return om_errf(OM_E_Internal, "etcd key %s holds no JSON object (%s)", key, je.text);
    }
    return 0;
}

int rp_dag_get(rp_dag *d, const char *suffix, json_t **val, int64_t *mod_rev)
{
    char key[512];
    rp_dag_key(d, key, sizeof key, "%s", suffix);
    etcd_kv *kv = NULL;
    int64_t rev;
    *val = NULL;
    if (mod_rev) *mod_rev = 0;
    int rc = etcd_get(d->e, key, &kv, &rev);
    if (rc || !kv) return rc;
    if (mod_rev) *mod_rev = kv->mod_rev;
    rc = parse_rec(key, kv, val);
    etcd_kvs_free(kv, 1);
    return rc;
}

int rp_dag_put(rp_dag *d, const char *suffix, json_t *val, int64_t lease)
{
    char key[512];
    rp_dag_key(d, key, sizeof key, "%s", suffix);
    char *s = json_dumps(val, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s) return om_errf(OM_E_OutOfMemory, "encoding %s", key);
    int rc = etcd_put(d->e, key, s, strlen(s), lease);
    free(s);
    return rc;
}

/* One transaction: put val at key when its mod revision is still rev (0: absent). */
static int put_if(rp_dag *d, const char *key, int64_t rev, json_t *val, int *done)
{
    char *s = json_dumps(val, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s) return om_errf(OM_E_OutOfMemory, "encoding %s", key);
    etcd_txn *t = etcd_txn_new();
    int rc = t ? 0 : om_errf(OM_E_OutOfMemory, "etcd transaction");
    if (!rc) {
        if (rev)
            etcd_txn_cmp_mod(t, key, ETCD_EQUAL, rev);
        else
            etcd_txn_cmp_absent(t, key);
        etcd_txn_put(t, ETCD_THEN, key, s, strlen(s), 0);
        rc = etcd_txn_commit(d->e, t, done);
    }
    etcd_txn_free(t);
    free(s);
    return rc;
}

int rp_dag_create(rp_dag *d, const char *suffix, json_t *val, int *created)
{
    char key[512];
    rp_dag_key(d, key, sizeof key, "%s", suffix);
    return put_if(d, key, 0, val, created);
}

int rp_dag_delete(rp_dag *d, const char *suffix, int prefix)
{
    char key[512];
    int64_t n;
    rp_dag_key(d, key, sizeof key, "%s", suffix);
    return etcd_delete(d->e, key, prefix, &n);
}

int rp_dag_list(rp_dag *d, const char *suffix, json_t **obj)
{
    char key[512];
    rp_dag_key(d, key, sizeof key, "%s", suffix);
    etcd_kv *kvs = NULL;
    size_t n = 0;
    int64_t rev;
    *obj = NULL;
    int rc = etcd_range_prefix(d->e, key, &kvs, &n, &rev);
    if (rc) return rc;
    json_t *o = json_object();
    size_t plen = strlen(key);
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *v;
        if (parse_rec(kvs[i].key, &kvs[i], &v)) continue; /* a foreign key: not ours to read */
        json_object_set_new(o, kvs[i].key + plen, v);
    }
    etcd_kvs_free(kvs, n);
    *obj = o;
    return 0;
}

int rp_dag_update(rp_dag *d, const char *suffix, rp_dag_change change, void *arg)
{
    char key[512];
    rp_dag_key(d, key, sizeof key, "%s", suffix);
    for (int attempt = 0; attempt < 50; attempt++) {
        json_t *rec;
        int64_t rev;
        int rc = rp_dag_get(d, suffix, &rec, &rev);
        if (rc) return rc;
        int exists = rec != NULL;
        if (!rec) rec = json_object();
        rc = change(arg, rec, exists);
        int done = 0;
        if (!rc) rc = put_if(d, key, rev, rec, &done);
        json_decref(rec);
        if (rc || done) return rc;
    }
    return om_errf(OM_E_WriteConflict, "etcd key %s kept changing under 50 attempts to update it",
                   key);
}

int rp_dag_find_db(rp_dag *d, const char *name, json_t **rec, char id[37])
{
    json_t *all;
    *rec = NULL;
    int rc = rp_dag_list(d, "databases/", &all);
    if (rc) return rc;
    const char *k;
    json_t *v;
    char first[37] = "";
    json_object_foreach(all, k, v)
    {
        if (strcmp(om_json_str_or(v, "name", ""), name)) continue;
        if (*rec) { /* names are unique in a DAG; two records of one name: say so, pick none */
            rc = om_errf(OM_E_InvalidParameter,
                         "two databases named '%s' in DAG %s (ids %s and %s): remove the copies of "
                         "one of them",
                         name, d->name, first, k);
            json_decref(*rec);
            *rec = NULL;
            break;
        }
        snprintf(first, sizeof first, "%s", k);
        *rec = json_incref(v);
    }
    json_decref(all);
    if (rc) return rc;
    if (!*rec)
        return om_errf(OM_E_DatabaseNotFound, "no database named '%s' in DAG %s", name, d->name);
    snprintf(id, 37, "%s", first);
    return 0;
}

int rp_dag_copy_rows(rp_dag *d, const char *db_name, json_t **rows)
{
    json_t *dbs = NULL, *act = NULL, *copies = NULL, *alive = NULL, *lm = NULL;
    int rc = rp_dag_list(d, "databases/", &dbs);
    if (!rc) rc = rp_dag_list(d, "active/", &act);
    if (!rc) rc = rp_dag_list(d, "copies/", &copies);
    if (!rc) rc = rp_dag_list(d, "alive/", &alive);
    if (!rc) rc = rp_dag_list(d, "lastmove/", &lm);
    json_t *out = json_array();
    const char *id;
    json_t *db;
    int found = 0;
    json_object_foreach(dbs, id, db)
    {
        const char *name = om_json_str_or(db, "name", "");
        if (db_name && strcmp(db_name, name)) continue;
        found = 1;
        const char *active = om_json_str_or(json_object_get(act, id), "server", "");
        /* What the active writes now (its own row, renewed by its ombra-repld): the copy queue
         * of every passive copy counts from it, whatever state the copy is in. */
        char ak[200];
        snprintf(ak, sizeof ak, "%s/%s", id, active);
        json_int_t made =
            json_integer_value(json_object_get(json_object_get(copies, ak), "generated"));
        const char *server;
        json_t *cfg;
        json_object_foreach(json_object_get(db, "copies"), server, cfg)
        {
            char k[200];
            snprintf(k, sizeof k, "%s/%s", id, server);
            json_t *s = json_object_get(copies, k);
            int is_active = !strcmp(server, active);
            int up = json_object_get(alive, server) != NULL;
            const char *state = is_active ? "Mounted" : om_json_str_or(s, "state", "Initializing");
            if (!is_active && !up) state = "ServiceDown";
            json_int_t copied = json_integer_value(json_object_get(s, "copied")),
                       inspected = json_integer_value(json_object_get(s, "inspected")),
                       replayed = json_integer_value(json_object_get(s, "replayed"));
            json_int_t copyq = is_active                       ? 0
                               : made > 1 && made - 1 > copied ? made - 1 - copied
                               : made > 1                      ? 0
                                          : json_integer_value(json_object_get(s, "copy_queue"));
            json_int_t replq = !is_active && inspected > replayed ? inspected - replayed : 0;
            json_t *o =
                json_pack("{s:s,s:s,s:s,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "database",
                          name, "id", id, "server", server, "state", state, "active", is_active,
                          "preference", json_integer_value(json_object_get(cfg, "preference")),
                          "replay_lag", json_integer_value(json_object_get(cfg, "replay_lag")),
                          "copy_queue", copyq, "replay_queue", replq, "generated",
                          made ? made : json_integer_value(json_object_get(s, "generated")),
                          "copied", copied, "inspected", inspected, "replayed", replayed,
                          "last_error", om_json_str_or(s, "last_error", ""));
            json_object_set_new(o, "epoch",
                                json_integer(json_integer_value(
                                    json_object_get(json_object_get(act, id), "epoch"))));
            if (is_active)
                json_object_set(o, "last_move",
                                json_object_get(lm, id) ? json_object_get(lm, id) : json_null());
            if (!is_active) { /* block mode: the open generation, held in part */
                json_object_set_new(o, "mode", json_string(om_json_str_or(s, "mode", "file")));
                json_object_set(o, "streamed_gen", json_object_get(s, "streamed_gen"));
                json_object_set(o, "streamed_bytes", json_object_get(s, "streamed_bytes"));
                json_object_set(o, "streamed_len", json_object_get(s, "streamed_len"));
            }
            json_array_append_new(out, o);
        }
    }
    if (!rc && db_name && !found)
        rc = om_errf(OM_E_DatabaseNotFound, "no database named '%s' in DAG %s", db_name, d->name);
    json_decref(dbs);
    json_decref(act);
    json_decref(copies);
    json_decref(alive);
    json_decref(lm);
    if (rc) {
        json_decref(out);
        out = NULL;
    }
    *rows = out;
    return rc;
}
