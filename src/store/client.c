/* The store client (client.h): one connection, one request and one reply at a time. */
#include "store/client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"

struct store_client {
    char path[4200];
    int fd;         /* -1: not connected */
    int used;       /* the connection has carried a request: the store may close it as idle */
    int retry_busy; /* store_client_retry_busy */
    char warning[1600];
};

int store_client_new(const char *socket_path, store_client **out)
{
    *out = NULL;
    store_client *c = calloc(1, sizeof *c);
    if (!c) return om_errf(OM_E_OutOfMemory, "out of memory for a store client");
    c->fd = -1;
    int n;
    if (socket_path)
        n = snprintf(c->path, sizeof c->path, "%s", socket_path);
    else {
        char dir[4096];
        int rc = om_runtime_dir(dir, sizeof dir);
        if (rc) {
            free(c);
            return rc;
        }
        n = snprintf(c->path, sizeof c->path, "%s/store.sock", dir);
    }
    if (n < 0 || (size_t)n >= sizeof c->path) {
        free(c);
        return om_errf(OM_E_InvalidPath, "the store's socket path is too long");
    }
    *out = c;
    return 0;
}

static void disconnect(store_client *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->used = 0;
}

void store_client_free(store_client *c)
{
    if (!c) return;
    disconnect(c);
    free(c);
}

const char *store_client_warning(const store_client *c)
{
    return c->warning;
}

void store_client_retry_busy(store_client *c, int on)
{
    c->retry_busy = on;
}

/* Between two requests the store sends nothing: a connection that is readable then was closed
 * by the store (idle past its bound), before it could read anything of ours. */
static int closed_while_idle(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) != 0;
}

/* Sends req (stolen) with data, and reads the reply into *reply, calling progress for the
 * progress objects a long request sends before it. 0, or the error of the exchange or of the
 * reply (the store's message in the thread's detail); *reply is set only on success. */
static int call_once(store_client *c, json_t *req, const void *data, size_t dlen,
                     store_client_progress progress, void *arg, json_t **reply, uint8_t **rdata,
                     size_t *rdlen, int *fresh);

static int call(store_client *c, json_t *req, const void *data, size_t dlen,
                store_client_progress progress, void *arg, json_t **reply, uint8_t **rdata,
                size_t *rdlen)
{
    uint64_t since = 0;
    unsigned attempt = 0;
    for (;;) {
        int fresh = 0;
        int rc =
            call_once(c, json_incref(req), data, dlen, progress, arg, reply, rdata, rdlen, &fresh);
        /* Only a connection this call made can have been refused before anything was read. */
        if (!c->retry_busy || !fresh || !om_proto_busy_retry(rc, &since, &attempt)) {
            json_decref(req);
            return rc;
        }
    }
}

static int call_once(store_client *c, json_t *req, const void *data, size_t dlen,
                     store_client_progress progress, void *arg, json_t **reply, uint8_t **rdata,
                     size_t *rdlen, int *fresh)
{
    *reply = NULL;
    c->warning[0] = 0;
    if (c->fd >= 0 && c->used && closed_while_idle(c->fd)) disconnect(c);
    *fresh = c->fd < 0;
    int rc = c->fd >= 0 ? 0 : om_proto_connect(c->path, &c->fd);
    if (rc) {
        c->fd = -1;
        json_decref(req);
        return rc;
    }
    c->used = 1;
    /* A store that refuses this user answers and closes before it reads: a failed send is
     * kept, the reply read anyway, and the send's error counts only when none comes. */
    char senderr[512] = "";
    int src = om_proto_send(c->fd, req, data, dlen);
    if (src) snprintf(senderr, sizeof senderr, "%s", om_err_detail());
    json_decref(req);
    json_t *r = NULL;
    uint8_t *d = NULL;
    size_t dn = 0;
    for (;;) {
        if ((rc = om_proto_recv(c->fd, &r, &d, &dn))) break;
        json_t *done = json_object_get(r, "progress");
        if (json_object_get(r, "ok") || !json_is_integer(done)) break;
        if (progress)
            progress(arg, (uint64_t)json_integer_value(done),
                     (uint64_t)json_integer_value(json_object_get(r, "total")));
        json_decref(r);
        r = NULL;
        free(d);
        d = NULL;
    }
    if (rc && src) rc = om_errf(src, "%s", senderr);
    if (src || rc) disconnect(c);
    if (!rc) rc = om_proto_check(r);
    if (rc == OM_E_OutOfSessions) disconnect(c); /* the store closed it after saying so */
    if (rc) {
        json_decref(r);
        free(d);
        return rc;
    }
    snprintf(c->warning, sizeof c->warning, "%s", om_json_str_or(r, "warning", ""));
    *reply = r;
    if (rdata) {
        *rdata = d;
        *rdlen = dn;
    } else
        free(d);
    return 0;
}

/* A request whose reply carries one field of interest: *out gets a new reference to it, of
 * the JSON type is_type checks. */
static int call_get(store_client *c, json_t *req, const char *field, int (*is_type)(const json_t *),
                    const char *what, json_t **out)
{
    json_t *rep;
    *out = NULL;
    int rc = call(c, req, NULL, 0, NULL, NULL, &rep, NULL, NULL);
    if (rc) return rc;
    json_t *v = json_object_get(rep, field);
    if (!is_type(v))
        rc = om_errf(OM_E_Internal, "the server's reply has no %s", what);
    else
        *out = json_incref(v);
    json_decref(rep);
    return rc;
}

static int is_object(const json_t *v)
{
    return json_is_object(v);
}

static int is_array(const json_t *v)
{
    return json_is_array(v);
}

/* The request {"op": op, "name": name}. */
static json_t *named(const char *op, const char *name)
{
    return json_pack("{s:s, s:s}", "op", op, "name", name);
}

static int call_db(store_client *c, json_t *req, json_t **db)
{
    return call_get(c, req, "db", is_object, "database object", db);
}

int store_client_status(store_client *c, json_t **status)
{
    json_t *rep;
    *status = NULL;
    int rc = call(c, json_pack("{s:s}", "op", "status"), NULL, 0, NULL, NULL, &rep, NULL, NULL);
    if (rc) return rc;
    json_object_del(rep, "ok");
    *status = rep;
    return 0;
}

/* ---- databases ---- */

int store_client_db_list(store_client *c, json_t **dbs)
{
    return call_get(c, json_pack("{s:s}", "op", "db.list"), "databases", is_array,
                    "list of databases", dbs);
}

int store_client_db_show(store_client *c, const char *name, json_t **db)
{
    return call_db(c, named("db.show", name), db);
}

int store_client_db_new(store_client *c, const char *name, const store_db_spec *spec, json_t **db)
{
    json_t *req = named(spec->recovery ? "db.new_recovery" : "db.new", name);
    if (spec->edb) json_object_set_new(req, "edb", json_string(spec->edb));
    if (spec->logs) json_object_set_new(req, "logs", json_string(spec->logs));
    if (spec->base) json_object_set_new(req, "base", json_string(spec->base));
    if (spec->circular_logging) json_object_set_new(req, "circular_logging", json_true());
    return call_db(c, req, db);
}

int store_client_db_mount(store_client *c, const char *name, json_t **db)
{
    return call_db(c, named("db.mount", name), db);
}

int store_client_db_dismount(store_client *c, const char *name, json_t **db)
{
    return call_db(c, named("db.dismount", name), db);
}

int store_client_db_set(store_client *c, const char *name, int circular_logging, int allow_restore,
                        json_t **db)
{
    json_t *req = named("db.set", name);
    if (circular_logging >= 0)
        json_object_set_new(req, "circular_logging", json_boolean(circular_logging));
    if (allow_restore >= 0) json_object_set_new(req, "allow_restore", json_boolean(allow_restore));
    return call_db(c, req, db);
}

/* ---- replication ---- */

int store_client_db_replication_floor(store_client *c, const char *db, const char *id,
                                      uint32_t floor, uint32_t hold_s, json_t *released,
                                      json_t **state)
{
    json_t *req = json_pack("{s:s,s:s,s:s,s:I,s:I}", "op", "db.replication_floor", "db", db, "id",
                            id, "floor", (json_int_t)floor, "hold_s", (json_int_t)hold_s);
    if (req && released) json_object_set(req, "released", released);
    return call_get(c, req, "state", is_object, "replication state", state);
}

int store_client_dag_join(store_client *c, const char *etcd_url, const char *dag, int check_only,
                          json_t **rep)
{
    *rep = NULL;
    json_t *req = json_pack("{s:s,s:s,s:s,s:b}", "op", "dag.join", "etcd", etcd_url, "dag", dag,
                            "check_only", check_only);
    int rc = call(c, req, NULL, 0, NULL, NULL, rep, NULL, NULL);
    if (!rc) json_object_del(*rep, "ok");
    return rc;
}

int store_client_dag_lease(store_client *c, uint64_t until_mono_ns, json_t *confirm, json_t **dbs)
{
    json_t *req =
        json_pack("{s:s, s:I}", "op", "dag.lease", "until_mono_ns", (json_int_t)until_mono_ns);
    if (req && confirm) json_object_set(req, "confirm", confirm);
    return call_get(c, req, "databases", is_array, "list of databases", dbs);
}

int store_client_db_handoff(store_client *c, const char *id, int64_t epoch, uint32_t timeout_ms,
                            uint32_t *last_gen, uint64_t *refused_since_ns)
{
    json_t *rep = NULL;
    int64_t g = -1, t = -1;
    *last_gen = 0;
    *refused_since_ns = 0;
    int rc = call(c,
                  json_pack("{s:s, s:s, s:I, s:I}", "op", "db.handoff", "id", id, "epoch",
                            (json_int_t)epoch, "timeout_ms", (json_int_t)timeout_ms),
                  NULL, 0, NULL, NULL, &rep, NULL, NULL);
    if (rc) return rc;
    if (om_json_int(rep, "last_gen", &g) || om_json_int(rep, "refused_since_ns", &t) || g < 1 ||
        g > UINT32_MAX || t < 0)
        rc = om_errf(OM_E_Internal, "the server's reply to db.handoff has no last generation");
    else {
        *last_gen = (uint32_t)g;
        *refused_since_ns = (uint64_t)t;
    }
    json_decref(rep);
    return rc;
}

int store_client_db_sync_position(store_client *c, const char *db, const char *id,
                                  const char *server, uint32_t gen, uint32_t len, int sync_copies)
{
    json_t *req = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I}", "op", "db.sync_position", "db", db, "id",
                            id, "server", server, "gen", (json_int_t)gen, "len", (json_int_t)len),
           *rep = NULL;
    if (!req) return om_errf(OM_E_OutOfMemory, "request");
    if (sync_copies >= 0) json_object_set_new(req, "sync_copies", json_integer(sync_copies));
    int rc = call(c, req, NULL, 0, NULL, NULL, &rep, NULL, NULL);
    json_decref(rep);
    return rc;
}

int store_client_db_backup_op(store_client *c, const char *op, const char *db, json_t *args,
                              json_t **rep)
{
    static const char *const fields[] = {"id",           "type",     "first_gen",
                                         "last_gen",     "mark_gen", "mark_off",
                                         "mark_time_ns", "server",   "below"};
    *rep = NULL;
    if (strcmp(op, "db.backup_prepare") && strcmp(op, "db.record_backup") &&
        strcmp(op, "db.truncate_logs"))
        return om_errf(OM_E_InvalidParameter, "'%s' is not a backup operation", op);
    json_t *req = json_pack("{s:s,s:s}", "op", op, "db", db);
    if (!req) return om_errf(OM_E_OutOfMemory, "request");
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_t *v = json_object_get(args, fields[i]);
        if (v) json_object_set(req, fields[i], v);
    }
    int rc = call(c, req, NULL, 0, NULL, NULL, rep, NULL, NULL);
    if (!rc) json_object_del(*rep, "ok");
    return rc;
}

/* ---- mail ---- */

/* The request {"op": op, "db": db, "mailbox": mailbox} (mailbox NULL: without it). */
static json_t *mail_req(const char *op, const char *db, const char *mailbox)
{
    json_t *req = json_pack("{s:s, s:s}", "op", op, "db", db);
    if (mailbox) json_object_set_new(req, "mailbox", json_string(mailbox));
    return req;
}

int store_client_mail_deliver(store_client *c, const char *db, const store_mail_new *m,
                              uint64_t *id)
{
    store_mail_ack a;
    int rc = store_client_mail_deliver_ack(c, db, m, &a);
    *id = rc ? 0 : a.id;
    return rc;
}

int store_client_mail_deliver_ack(store_client *c, const char *db, const store_mail_new *m,
                                  store_mail_ack *ack)
{
    memset(ack, 0, sizeof *ack);
    json_t *req = mail_req("mail.deliver", db, m->mailbox), *rep;
    if (m->folder) json_object_set_new(req, "folder", json_string(m->folder));
    if (m->subject) {
        json_t *s = json_string(m->subject);
        if (!s) {
            json_decref(req);
            return om_errf(OM_E_InvalidParameter, "the subject must be UTF-8 text");
        }
        json_object_set_new(req, "subject", s);
    }
    int rc = call(c, req, m->body, m->size, NULL, NULL, &rep, NULL, NULL);
    if (rc) return rc;
    int64_t v;
    if (om_json_int(rep, "id", &v))
        rc = om_err_ctx(OM_E_Internal, "the server's reply");
    else
        ack->id = (uint64_t)v;
    /* A store from before fencing says none of these: "", 0, 0. */
    snprintf(ack->server, sizeof ack->server, "%s", om_json_str_or(rep, "server", ""));
    ack->epoch = om_json_int_or(rep, "epoch", 0);
    ack->acked_ns = (uint64_t)om_json_int_or(rep, "acked_ns", 0);
    json_decref(rep);
    return rc;
}

int store_client_mail_list(store_client *c, const char *db, const char *mailbox, const char *folder,
                           json_t **messages)
{
    json_t *req = mail_req("mail.list", db, mailbox);
    if (folder) json_object_set_new(req, "folder", json_string(folder));
    return call_get(c, req, "messages", is_array, "list of messages", messages);
}

/* The request on one message of a mailbox. */
static json_t *message_req(const char *op, const char *db, const char *mailbox, uint64_t id)
{
    json_t *req = mail_req(op, db, mailbox);
    json_object_set_new(req, "id", json_integer((json_int_t)id));
    return req;
}

int store_client_mail_get(store_client *c, const char *db, const char *mailbox, uint64_t id,
                          json_t **info, uint8_t **body, size_t *size)
{
    json_t *rep;
    uint8_t *d = NULL;
    size_t n = 0;
    *body = NULL;
    *size = 0;
    if (info) *info = NULL;
    int rc = call(c, message_req("mail.get", db, mailbox, id), NULL, 0, NULL, NULL, &rep, &d, &n);
    if (rc) return rc;
    /* The body comes as a data frame beside the reply: the reply says how long it must be. */
    int64_t want = om_json_int_or(rep, "size", (int64_t)n);
    if (want != (int64_t)n) {
        rc = om_errf(OM_E_Internal, "the server sent %zu bytes of a %lld-byte message", n,
                     (long long)want);
        free(d);
        json_decref(rep);
        return rc;
    }
    *body = d;
    *size = n;
    json_object_del(rep, "ok");
    json_object_del(rep, "data");
    if (info)
        *info = rep;
    else
        json_decref(rep);
    return 0;
}

int store_client_mail_delete(store_client *c, const char *db, const char *mailbox, uint64_t id)
{
    json_t *rep;
    int rc =
        call(c, message_req("mail.delete", db, mailbox, id), NULL, 0, NULL, NULL, &rep, NULL, NULL);
    json_decref(rep);
    return rc;
}

int store_client_mail_digest(store_client *c, const char *db, char digest[33])
{
    json_t *rep;
    const char *d;
    int rc = call(c, mail_req("mail.digest", db, NULL), NULL, 0, NULL, NULL, &rep, NULL, NULL);
    if (rc) return rc;
    if (om_json_str(rep, "digest", &d))
        rc = om_err_ctx(OM_E_Internal, "the server's reply");
    else
        snprintf(digest, 33, "%s", d);
    json_decref(rep);
    return rc;
}

int store_client_mail_load(store_client *c, const char *db, const store_client_load *l,
                           store_client_progress progress, void *arg, json_t **result)
{
    json_t *rep, *req = mail_req("mail.load", db, NULL);
    json_object_set_new(req, "mailboxes", json_integer((json_int_t)l->mailboxes));
    json_object_set_new(req, "messages", json_integer((json_int_t)l->messages));
    json_object_set_new(req, "size", json_integer((json_int_t)l->size));
    json_object_set_new(req, "seed", json_integer((json_int_t)l->seed));
    if (result) *result = NULL;
    int rc = call(c, req, NULL, 0, progress, arg, &rep, NULL, NULL);
    if (rc) return rc;
    json_object_del(rep, "ok");
    if (result)
        *result = rep;
    else
        json_decref(rep);
    return 0;
}
