/* Replies and calls of the replication protocol (wire.h). */
#include "repl/wire.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/proto.h"
#include "engine/format.h"

int rp_send_error(rp_conn *c, int rc)
{
    json_t *h = json_pack("{s:b,s:i,s:s}", "ok", 0, "error", rc, "message", om_err_detail());
    int src = rp_send(c, h, NULL, 0);
    json_decref(h);
    return src;
}

int rp_reply(rp_conn *c, json_t *hdr, const void *bulk, size_t n)
{
    if (!hdr) hdr = json_pack("{s:b}", "ok", 1);
    if (!hdr) return om_errf(OM_E_OutOfMemory, "reply");
    int rc = rp_send(c, hdr, bulk, n);
    json_decref(hdr);
    return rc;
}

int rp_call(rp_conn *c, json_t *req, int timeout_ms, json_t **reply, void **bulk, size_t *n)
{
    if (!req) return om_errf(OM_E_OutOfMemory, "request");
    const char *op = om_json_str_or(req, "op", "?");
    char what[40];
    snprintf(what, sizeof what, "%s", op);
    int rc = rp_send(c, req, NULL, 0);
    json_decref(req);
    json_t *h = NULL;
    void *b = NULL;
    size_t bn = 0;
    if (!rc) rc = rp_recv(c, &h, &b, &bn, timeout_ms);
    if (!rc && !json_is_true(json_object_get(h, "ok"))) {
        int e = (int)json_integer_value(json_object_get(h, "error"));
        rc = om_errf(e ? e : OM_E_Internal, "%s (%s, from %s)", om_json_str_or(h, "message", "?"),
                     what, rp_conn_peer(c));
    }
    if (rc) {
        json_decref(h);
        free(b);
        return rc;
    }
    if (reply)
        *reply = h;
    else
        json_decref(h);
    if (bulk) {
        *bulk = b;
        *n = bn;
    } else
        free(b);
    return 0;
}

int rp_connect_server(rp_dag *dag, rp_tls *tls, const char *server, int timeout_ms, rp_conn **out)
{
    json_t *srv = NULL;
    char k[200];
    *out = NULL;
    snprintf(k, sizeof k, "servers/%s", server);
    int rc = rp_dag_get(dag, k, &srv, NULL);
    if (!rc && !srv)
        rc = om_errf(OM_E_InvalidParameter, "server %s is not in DAG %s", server, dag->name);
    if (!rc) rc = rp_connect(tls, om_json_str_or(srv, "address", ""), server, timeout_ms, out);
    json_decref(srv);
    return rc;
}

uint64_t rp_log_good_end(const void *buf, uint64_t off, uint64_t n, uint32_t gen, uint32_t *len)
{
    const uint8_t *p = buf;
    uint64_t at = off;
    while (at + ENG_SLOT_SIZE <= off + n && at < ENG_LOG_SIZE) {
        const uint8_t *slot = p + (at - off);
        uint16_t no = (uint16_t)(at / ENG_SLOT_SIZE);
        if (no == 0) {
            eng_loghdr h;
            if (eng_loghdr_decode(slot, &h) || h.gen != gen) break;
        } else {
            eng_seghdr h;
            if (eng_seg_decode(slot, gen, no, &h) != ENG_SEG_OK) break;
            *len = h.stream_off + h.data_len;
        }
        at += ENG_SLOT_SIZE;
    }
    return at;
}
