/* Leases of the etcd client (etcd.h): /v3/lease/grant, keepalive, revoke. */
#include "etcd/etcd_internal.h"

#include "base/error.h"

static json_t *id_json(int64_t id)
{
    return json_pack("{s:o}", "ID", etcd_i64_json(id));
}

int etcd_lease_grant(etcd *e, int ttl_s, int64_t *id)
{
    *id = 0;
    if (ttl_s <= 0) return om_errf(OM_E_InvalidParameter, "etcd: a lease of %d seconds", ttl_s);
    json_t *resp, *req = json_pack("{s:o}", "TTL", etcd_i64_json(ttl_s));
    if (!req) return om_errf(OM_E_OutOfMemory, "etcd: out of memory");
    int rc = etcd_call(e, "/v3/lease/grant", req, 0, &resp);
    if (rc) return om_err_ctx(rc, "lease grant: ");
    *id = etcd_json_i64(resp, "ID");
    const char *err = json_string_value(json_object_get(resp, "error"));
    json_decref(resp);
    if (err || !*id)
        return om_errf(OM_E_EtcdRequestFailed, "etcd: lease grant: %s", err ? err : "no lease id");
    return 0;
}

/* The gateway serves keepalive as a stream: one {"result": {...}} per request sent; the one
 * request this call sends gets one answer and the stream ends. A lease that is gone answers
 * with no TTL (0). Renewing twice is harmless: the call may go to the next endpoint. */
int etcd_lease_keepalive(etcd *e, int64_t id, int64_t *ttl_left)
{
    *ttl_left = 0;
    json_t *resp, *req = id_json(id);
    if (!req) return om_errf(OM_E_OutOfMemory, "etcd: out of memory");
    int rc = etcd_call(e, "/v3/lease/keepalive", req, 1, &resp);
    if (rc) return om_err_ctx(rc, "keepalive of lease %lld: ", (long long)id);
    json_t *r = json_object_get(resp, "result");
    if (!r) {
        const char *m =
            json_string_value(json_object_get(json_object_get(resp, "error"), "message"));
        rc = om_errf(OM_E_EtcdRequestFailed, "etcd: keepalive of lease %lld: %s", (long long)id,
                     m ? m : "no result");
    } else
        *ttl_left = etcd_json_i64(r, "TTL");
    json_decref(resp);
    return rc;
}

int etcd_lease_revoke(etcd *e, int64_t id)
{
    json_t *resp, *req = id_json(id);
    if (!req) return om_errf(OM_E_OutOfMemory, "etcd: out of memory");
    int rc = etcd_call(e, "/v3/lease/revoke", req, 0, &resp);
    json_decref(resp);
    return rc ? om_err_ctx(rc, "revoke of lease %lld: ", (long long)id) : 0;
}
