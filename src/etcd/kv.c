/* Keys and transactions of the etcd client (etcd.h): /v3/kv/range, put, deleterange, txn. */
#include "etcd/etcd_internal.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"

static int oom(void)
{
    return om_errf(OM_E_OutOfMemory, "etcd: out of memory");
}

static int64_t header_rev(json_t *resp)
{
    return etcd_json_i64(json_object_get(resp, "header"), "revision");
}

static int range(etcd *e, const char *key, int prefix, etcd_kv **kvs, size_t *n, int64_t *rev)
{
    json_t *req = etcd_key_json(key, prefix), *resp;
    if (!req) return oom();
    int rc = etcd_call(e, "/v3/kv/range", req, 1, &resp);
    if (rc) return rc;
    rc = etcd_kvs_parse(json_object_get(resp, "kvs"), kvs, n);
    if (!rc && rev) *rev = header_rev(resp);
    json_decref(resp);
    return rc ? om_err_ctx(rc, "range of %s: ", key) : 0;
}

int etcd_get(etcd *e, const char *key, etcd_kv **kv, int64_t *rev)
{
    size_t n;
    int rc = range(e, key, 0, kv, &n, rev);
    if (!rc && n > 1) {
        etcd_kvs_free(*kv, n);
        *kv = NULL;
        return om_errf(OM_E_InvalidParameter, "etcd: %zu keys for the one key %s", n, key);
    }
    return rc;
}

int etcd_range_prefix(etcd *e, const char *prefix, etcd_kv **kvs, size_t *n, int64_t *rev)
{
    return range(e, prefix, 1, kvs, n, rev);
}

static json_t *put_json(const char *key, const void *val, size_t len, int64_t lease)
{
    json_t *o = etcd_key_json(key, 0);
    if (o && json_object_set_new(o, "value", etcd_b64_json(val, len))) {
        json_decref(o);
        return NULL;
    }
    if (o && lease && json_object_set_new(o, "lease", etcd_i64_json(lease))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int etcd_put(etcd *e, const char *key, const void *val, size_t len, int64_t lease)
{
    json_t *req = put_json(key, val, len, lease), *resp;
    if (!req) return oom();
    int rc = etcd_call(e, "/v3/kv/put", req, 0, &resp);
    json_decref(resp);
    return rc ? om_err_ctx(rc, "put of %s: ", key) : 0;
}

int etcd_delete(etcd *e, const char *key, int prefix, int64_t *deleted)
{
    json_t *req = etcd_key_json(key, prefix), *resp;
    if (!req) return oom();
    int rc = etcd_call(e, "/v3/kv/deleterange", req, 0, &resp);
    if (rc) return om_err_ctx(rc, "delete of %s: ", key);
    if (deleted) *deleted = etcd_json_i64(resp, "deleted");
    json_decref(resp);
    return 0;
}

int etcd_compact(etcd *e, int64_t rev)
{
    json_t *resp, *req = json_pack("{s:o, s:b}", "revision", etcd_i64_json(rev), "physical", 1);
    if (!req) return oom();
    int rc = etcd_call(e, "/v3/kv/compaction", req, 0, &resp);
    json_decref(resp);
    return rc ? om_err_ctx(rc, "compaction at %lld: ", (long long)rev) : 0;
}

/* ---- transactions ---- */

struct etcd_txn {
    json_t *cmp, *ops[2]; /* the gateway's "compare", "failure" ([0]) and "success" ([1]) */
    int broken;           /* an allocation failed while building */
    etcd_txn_result *res;
    size_t nres;
    int64_t rev;
};

static void results_free(etcd_txn *t)
{
    for (size_t i = 0; i < t->nres; i++)
        etcd_kvs_free(t->res[i].kvs, t->res[i].n);
    free(t->res);
    t->res = NULL;
    t->nres = 0;
}

etcd_txn *etcd_txn_new(void)
{
    etcd_txn *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cmp = json_array();
    t->ops[0] = json_array();
    t->ops[1] = json_array();
    t->broken = !t->cmp || !t->ops[0] || !t->ops[1];
    return t;
}

void etcd_txn_free(etcd_txn *t)
{
    if (!t) return;
    results_free(t);
    json_decref(t->cmp);
    json_decref(t->ops[0]);
    json_decref(t->ops[1]);
    free(t);
}

static void append(etcd_txn *t, json_t *arr, json_t *item)
{
    if (!item || json_array_append_new(arr, item)) t->broken = 1;
}

static const char *const OPS[] = {"EQUAL", "NOT_EQUAL", "LESS", "GREATER"};

/* One comparison: target is the gateway's enum name, field its value's field. */
static void cmp(etcd_txn *t, const char *key, int prefix, etcd_cmp_op op, const char *target,
                const char *field, json_t *v)
{
    if (!t) {
        json_decref(v);
        return;
    }
    json_t *c = etcd_key_json(key, prefix);
    if (c && (json_object_set_new(c, "target", json_string(target)) ||
              json_object_set_new(c, "result", json_string(OPS[op])) ||
              json_object_set_new(c, field, v))) {
        json_decref(c);
        c = NULL;
    } else if (!c)
        json_decref(v);
    append(t, t->cmp, c);
}

void etcd_txn_cmp_mod(etcd_txn *t, const char *key, etcd_cmp_op op, int64_t n)
{
    cmp(t, key, 0, op, "MOD", "mod_revision", etcd_i64_json(n));
}

void etcd_txn_cmp_version(etcd_txn *t, const char *key, etcd_cmp_op op, int64_t n)
{
    cmp(t, key, 0, op, "VERSION", "version", etcd_i64_json(n));
}

void etcd_txn_cmp_create(etcd_txn *t, const char *key, etcd_cmp_op op, int64_t n)
{
    cmp(t, key, 0, op, "CREATE", "create_revision", etcd_i64_json(n));
}

void etcd_txn_cmp_value(etcd_txn *t, const char *key, etcd_cmp_op op, const void *val, size_t len)
{
    cmp(t, key, 0, op, "VALUE", "value", etcd_b64_json(val, len));
}

void etcd_txn_cmp_absent(etcd_txn *t, const char *key)
{
    etcd_txn_cmp_create(t, key, ETCD_EQUAL, 0);
}

void etcd_txn_cmp_prefix_mod(etcd_txn *t, const char *prefix, etcd_cmp_op op, int64_t n)
{
    cmp(t, prefix, 1, op, "MOD", "mod_revision", etcd_i64_json(n));
}

static void op(etcd_txn *t, etcd_branch b, const char *name, json_t *req)
{
    if (!t) {
        json_decref(req);
        return;
    }
    json_t *o = req ? json_pack("{s:o}", name, req) : NULL;
    append(t, t->ops[b == ETCD_THEN], o);
}

void etcd_txn_put(etcd_txn *t, etcd_branch b, const char *key, const void *val, size_t len,
                  int64_t lease)
{
    op(t, b, "request_put", put_json(key, val, len, lease));
}

void etcd_txn_delete(etcd_txn *t, etcd_branch b, const char *key, int prefix)
{
    op(t, b, "request_delete_range", etcd_key_json(key, prefix));
}

void etcd_txn_range(etcd_txn *t, etcd_branch b, const char *key, int prefix)
{
    op(t, b, "request_range", etcd_key_json(key, prefix));
}

/* One entry of "responses": {"response_range": {...}} or _put or _delete_range. */
static int result_parse(json_t *r, etcd_txn_result *out)
{
    json_t *v;
    memset(out, 0, sizeof *out);
    if ((v = json_object_get(r, "response_range"))) {
        out->kind = ETCD_OP_RANGE;
        return etcd_kvs_parse(json_object_get(v, "kvs"), &out->kvs, &out->n);
    }
    if ((v = json_object_get(r, "response_delete_range"))) {
        out->kind = ETCD_OP_DELETE;
        out->deleted = etcd_json_i64(v, "deleted");
        return 0;
    }
    if (json_object_get(r, "response_put")) {
        out->kind = ETCD_OP_PUT;
        return 0;
    }
    return om_errf(OM_E_InvalidParameter, "etcd: a txn response of no known kind");
}

int etcd_txn_commit(etcd *e, etcd_txn *t, int *succeeded)
{
    *succeeded = 0;
    if (!t || t->broken) return oom();
    results_free(t);
    json_t *req = json_pack("{s:O, s:O, s:O}", "compare", t->cmp, "success", t->ops[1], "failure",
                            t->ops[0]),
           *resp;
    if (!req) return oom();
    int rc = etcd_call(e, "/v3/kv/txn", req, 0, &resp);
    if (rc) return om_err_ctx(rc, "txn: ");
    *succeeded = json_is_true(json_object_get(resp, "succeeded"));
    t->rev = header_rev(resp);
    json_t *rs = json_object_get(resp, "responses");
    size_t n = json_array_size(rs);
    if (n && !(t->res = calloc(n, sizeof *t->res))) rc = oom();
    for (size_t i = 0; i < n && !rc; i++)
        if (!(rc = result_parse(json_array_get(rs, i), &t->res[i]))) t->nres++;
    json_decref(resp);
    return rc ? om_err_ctx(rc, "txn: ") : 0;
}

size_t etcd_txn_nresults(const etcd_txn *t)
{
    return t ? t->nres : 0;
}

const etcd_txn_result *etcd_txn_result_at(const etcd_txn *t, size_t i)
{
    return t && i < t->nres ? &t->res[i] : NULL;
}

int64_t etcd_txn_revision(const etcd_txn *t)
{
    return t ? t->rev : 0;
}
