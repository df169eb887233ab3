/* The requester SDK (requester.h): one request, one reply, on the session's connection. */
#include "vss/requester.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"

#define LOST_DETAIL "the shadow copy service closed the session (is ombra-vssd running?)"

struct vss_req {
    int fd; /* -1 once the connection is lost or closed */
    char session[64];
    json_t *stored; /* components whose backup is stored: sent with release */
};

static int lost(vss_req *r)
{
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    return om_errf(OM_E_Aborted, LOST_DETAIL);
}

/* Sends {"op": op, ...req} (takes req; NULL: no fields) and waits for the reply. On success
 * *reply (may be NULL) gets the reply; on an error reply, returns its error with the detail. */
static int call(vss_req *r, const char *op, json_t *req, json_t **reply)
{
    if (reply) *reply = NULL;
    if (!req) req = json_object();
    if (!req) return om_errf(OM_E_OutOfMemory, "out of memory for %s", op);
    if (r->fd < 0) {
        json_decref(req);
        return om_errf(OM_E_Aborted, LOST_DETAIL);
    }
    json_object_set_new(req, "op", json_string(op));
    /* A send that fails is not reported: a coordinator that refuses answers before it closes,
     * and otherwise the receive below finds the connection closed. */
    om_proto_send(r->fd, req, NULL, 0);
    json_decref(req);
    json_t *rep = NULL;
    int rc = om_proto_recv(r->fd, &rep, NULL, NULL);
    /* Progress objects (no "ok") may precede a long operation's reply. */
    while (!rc && !json_object_get(rep, "ok")) {
        json_decref(rep);
        rep = NULL;
        rc = om_proto_recv(r->fd, &rep, NULL, NULL);
    }
    if (rc == OM_E_ConnectionClosed || rc == OM_E_DiskIO) return lost(r);
    if (rc) { /* a malformed frame: the stream cannot be trusted any more */
        close(r->fd);
        r->fd = -1;
        return rc;
    }
    rc = om_proto_check(rep);
    if (!rc && reply)
        *reply = rep;
    else
        json_decref(rep);
    return rc;
}

/* A call whose reply has one field of interest: *out gets a new reference to it. */
static int call_get(vss_req *r, const char *op, json_t *req, const char *field, json_t **out)
{
    json_t *rep = NULL;
    if (out) *out = NULL;
    int rc = call(r, op, req, &rep);
    if (rc) return rc;
    json_t *v = json_object_get(rep, field);
    if (!v) {
        json_decref(rep);
        return om_errf(OM_E_InvalidParameter, "the reply to %s has no \"%s\"", op, field);
    }
    if (out) *out = json_incref(v);
    json_decref(rep);
    return 0;
}

int vss_req_begin(const char *socket_path, vss_session_kind kind, vss_req **out)
{
    *out = NULL;
    char path[4096];
    int rc = 0;
    if (socket_path)
        snprintf(path, sizeof path, "%s", socket_path);
    else {
        char dir[4000];
        if ((rc = om_runtime_dir(dir, sizeof dir))) return rc;
        snprintf(path, sizeof path, "%s/vss.sock", dir);
    }
    vss_req *r = calloc(1, sizeof *r);
    if (!r) return om_errf(OM_E_OutOfMemory, "out of memory for a session");
    r->fd = -1;
    json_t *rep = NULL;
    uint64_t since = 0;
    unsigned attempt = 0;
    do { /* a busy service's refusal (OutOfSessions) comes before it read session.begin */
        json_decref(rep);
        rep = NULL;
        if (r->fd >= 0) close(r->fd);
        r->fd = -1;
        if ((rc = om_proto_connect(path, &r->fd))) {
            if (rc == OM_E_FileNotFound)
                om_errf(rc,
                        "the shadow copy service is not running: nothing listens on %s. HINT: "
                        "start ombra-vssd, or set OMBRA_RUNTIME_DIR to the directory it uses",
                        path);
            free(r);
            return rc;
        }
        rc = call(r, "session.begin",
                  json_pack("{s:s}", "kind", kind == VSS_SESSION_RESTORE ? "restore" : "backup"),
                  &rep);
    } while (om_proto_busy_retry(rc, &since, &attempt));
    const char *sid = NULL;
    if (!rc && om_json_str(rep, "session", &sid))
        rc = om_err_ctx(OM_E_InvalidParameter, "the reply to session.begin");
    if (!rc) snprintf(r->session, sizeof r->session, "%s", sid);
    json_decref(rep);
    if (rc) {
        if (r->fd >= 0) close(r->fd);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

const char *vss_req_session(const vss_req *r)
{
    return r->session;
}

int vss_req_connected(const vss_req *r)
{
    return r->fd >= 0;
}

int vss_req_gather_metadata(vss_req *r, json_t **writers)
{
    return call_get(r, "gather_metadata", NULL, "writers", writers);
}

int vss_req_set_backup_state(vss_req *r, const char *type)
{
    return call(r, "set_backup_state", json_pack("{s:s}", "type", type ? type : "full"), NULL);
}

int vss_req_add_component(vss_req *r, const char *instance_id, const char *component)
{
    if (!instance_id || !component)
        return om_errf(OM_E_InvalidParameter, "add_component needs an instance id and a name");
    return call(r, "add_component",
                json_pack("{s:s, s:s}", "instance_id", instance_id, "component", component), NULL);
}

int vss_req_prepare_backup(vss_req *r)
{
    return call(r, "prepare_backup", NULL, NULL);
}

int vss_req_start_snapshot_set(vss_req *r, int persistent, char set_id[37])
{
    json_t *set = NULL;
    int rc = call_get(r, "start_snapshot_set", json_pack("{s:b}", "persistent", persistent != 0),
                      "set", &set);
    if (rc) return rc;
    if (!json_is_string(set) || strlen(json_string_value(set)) != 36)
        rc = om_errf(OM_E_InvalidParameter, "the reply to start_snapshot_set has no set uuid");
    else if (set_id)
        memcpy(set_id, json_string_value(set), 37);
    json_decref(set);
    return rc;
}

int vss_req_add_path(vss_req *r, const char *path, const char *provider, char *chosen, size_t n)
{
    if (chosen && n) *chosen = 0;
    if (!path) return om_errf(OM_E_InvalidParameter, "add_path needs a path");
    json_t *p = NULL;
    int rc =
        call_get(r, "add_path",
                 json_pack("{s:s, s:s}", "path", path, "provider", provider ? provider : "auto"),
                 "provider", &p);
    if (!rc && chosen && n)
        snprintf(chosen, n, "%s", json_is_string(p) ? json_string_value(p) : "");
    json_decref(p);
    return rc;
}

int vss_req_do_snapshot_set(vss_req *r, json_t **result)
{
    json_t *rep = NULL;
    int rc = call(r, "do_snapshot_set", NULL, &rep);
    if (rc) return rc;
    json_object_del(rep, "ok");
    if (result)
        *result = rep;
    else
        json_decref(rep);
    return 0;
}

int vss_req_gather_status(vss_req *r, json_t **writers)
{
    return call_get(r, "gather_status", NULL, "writers", writers);
}

int vss_req_set_backup_succeeded(vss_req *r, const char *instance_id, const char *component,
                                 int succeeded)
{
    if (!instance_id || !component)
        return om_errf(OM_E_InvalidParameter,
                       "set_backup_succeeded needs an instance id and a component");
    return call(r, "set_backup_succeeded",
                json_pack("{s:s, s:s, s:b}", "instance_id", instance_id, "component", component,
                          "succeeded", succeeded != 0),
                NULL);
}

int vss_req_backup_complete(vss_req *r, json_t **components_doc)
{
    json_t *rep = NULL;
    if (components_doc) *components_doc = NULL;
    int rc = call(r, "backup_complete", NULL, &rep);
    if (rc) return rc;
    /* A writer that failed BackupComplete recorded nothing: the backup did not succeed. */
    json_t *e = json_array_get(json_object_get(rep, "writer_errors"), 0);
    if (e) {
        int code = (int)json_integer_value(json_object_get(e, "error"));
        rc = om_errf(code ? code : OM_E_Internal, "writer '%s' failed BackupComplete: %s",
                     om_json_str_or(e, "writer", "?"), om_json_str_or(e, "message", "?"));
    }
    if (!rc && components_doc)
        *components_doc = json_incref(json_object_get(rep, "components_document"));
    json_decref(rep);
    return rc;
}

int vss_req_set_backup_stored(vss_req *r, const char *instance_id, const char *component)
{
    if (!r->stored && !(r->stored = json_array()))
        return om_errf(OM_E_OutOfMemory, "out of memory");
    json_t *x = json_pack("{s:s, s:s}", "instance_id", instance_id, "component", component);
    if (!x || json_array_append_new(r->stored, x))
        return om_errf(OM_E_OutOfMemory, "out of memory");
    return 0;
}

int vss_req_abort(vss_req *r)
{
    return call(r, "abort", NULL, NULL);
}

int vss_req_release(vss_req *r)
{
    if (!r) return 0;
    json_t *req = r->stored ? json_pack("{s:O}", "stored", r->stored) : NULL;
    int rc = r->fd >= 0 ? call(r, "release", req, NULL) : 0;
    if (r->fd < 0) json_decref(req);
    if (r->fd >= 0) close(r->fd);
    json_decref(r->stored);
    free(r);
    return rc;
}

int vss_req_load_documents(vss_req *r, json_t *metadata, json_t *components_doc)
{
    if (!json_is_array(metadata) || !json_is_object(components_doc))
        return om_errf(OM_E_InvalidParameter,
                       "load_documents needs the array of writer metadata documents and the "
                       "backup components document");
    return call(
        r, "load_documents",
        json_pack("{s:O, s:O}", "metadata", metadata, "components_document", components_doc), NULL);
}

int vss_req_add_restore_component(vss_req *r, const char *instance_id, const char *component,
                                  json_t *restore_options, json_t *new_target)
{
    if (!instance_id || !component)
        return om_errf(OM_E_InvalidParameter,
                       "add_restore_component needs an instance id and a component");
    json_t *req = json_pack("{s:s, s:s}", "instance_id", instance_id, "component", component);
    if (req) {
        json_object_set_new(req, "restore_options",
                            restore_options ? json_incref(restore_options) : json_object());
        if (new_target) json_object_set(req, "new_target", new_target);
    }
    return call(r, "add_restore_component", req, NULL);
}

int vss_req_set_additional_restores(vss_req *r, int value)
{
    return call(r, "set_additional_restores", json_pack("{s:b}", "value", value != 0), NULL);
}

/* PreRestore or PostRestore: the writers' answers per component ("targets"). */
static int restore_step(vss_req *r, const char *op, json_t **targets)
{
    json_t *rep = NULL;
    int rc = call(r, op, NULL, targets ? &rep : NULL);
    if (targets) {
        *targets = rc ? NULL : json_incref(json_object_get(rep, "targets"));
        json_decref(rep);
    }
    return rc;
}

int vss_req_pre_restore(vss_req *r, json_t **targets)
{
    return restore_step(r, "pre_restore", targets);
}

int vss_req_post_restore(vss_req *r, json_t **targets)
{
    return restore_step(r, "post_restore", targets);
}
