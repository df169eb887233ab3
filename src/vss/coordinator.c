/* ombra-vssd's connections, writer registry, events, shadow copy catalog and admin requests
 * (coordinator.h has the rules; session.c runs the requester sessions). */
#include "vss/coordinator.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/server.h"
#include "base/time.h"
#include "base/vfs.h"
#include "vss/coord_internal.h"

/* ---- writers ---- */

wconn *vss_coord_find_writer(coord *c, const char *instance_id)
{
    for (int i = 0; i < c->nw; i++)
        if (c->w[i]->fd >= 0 && !strcmp(c->w[i]->instance_id, instance_id)) return c->w[i];
    return NULL;
}

json_t *vss_coord_writer_json(const wconn *w)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:b, s:b}", "class_id", w->class_id,
                     "instance_id", w->instance_id, "name", w->name, "pid", w->pid, "state",
                     w->fd >= 0 ? w->state : "disconnected", "failure", w->failure, "last_error",
                     w->last_error, "can_hold", w->can_hold, "connected", w->fd >= 0);
}

void vss_coord_writer_state(coord *c, wconn *w, const char *state, int err)
{
    pthread_mutex_lock(&c->mu);
    snprintf(w->state, sizeof w->state, "%s", state);
    if (err) {
        const char *kind = err == OM_E_WriterErrorRetryable              ? "retryable"
                           : err == OM_E_WriterErrorNonRetryable         ? "non_retryable"
                           : err == OM_E_WriterErrorTimeout              ? "timeout"
                           : err == OM_E_WriterErrorOutOfResources       ? "out_of_resources"
                           : err == OM_E_WriterErrorInconsistentSnapshot ? "inconsistent_snapshot"
                           : err == OM_E_WriterErrorRecoveryFailed       ? "recovery_failed"
                                                                         : "non_retryable";
        snprintf(w->failure, sizeof w->failure, "%s", kind);
        snprintf(w->last_error, sizeof w->last_error, "%d %s: %s", err, om_err_name(err),
                 om_err_detail());
    }
    pthread_mutex_unlock(&c->mu);
}

static int failure_error(const char *kind)
{
    static const struct {
        const char *name;
        int err;
    } map[] = {{"retryable", OM_E_WriterErrorRetryable},
               {"non_retryable", OM_E_WriterErrorNonRetryable},
               {"timeout", OM_E_WriterErrorTimeout},
               {"out_of_resources", OM_E_WriterErrorOutOfResources},
               {"inconsistent_snapshot", OM_E_WriterErrorInconsistentSnapshot},
               {"recovery_failed", OM_E_WriterErrorRecoveryFailed}};
    for (size_t i = 0; kind && i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(kind, map[i].name)) return map[i].err;
    return OM_E_WriterErrorNonRetryable;
}

static void unlink_pending(wconn *w, pending *p)
{
    for (pending **pp = &w->calls; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

/* How long a writer may take to answer: PostRestore holds the replay of every restored log,
 * which grows with them, so it has its own limit. */
static uint32_t limit_of(const coord *c, const char *event)
{
    return !strcmp(event, "PostRestore") ? c->restore_limit_ms : c->event_limit_ms;
}

/* The answer (or its absence) as the call's result. Under coord.mu. */
static int call_outcome(coord *c, wconn *w, const char *event, pending *p, json_t **result)
{
    if (!p->done)
        return om_errf(OM_E_WriterErrorTimeout, "writer '%s' did not answer %s within %u ms",
                       w->name, event, limit_of(c, event));
    if (!p->answer)
        return om_errf(OM_E_WriterNotResponding, "writer '%s' disconnected during %s", w->name,
                       event);
    if (json_is_true(json_object_get(p->answer, "ok"))) {
        json_t *r = json_object_get(p->answer, "result");
        *result = r ? json_incref(r) : NULL;
        return 0;
    }
    const char *kind = om_json_str_or(p->answer, "failure", "non_retryable");
    return om_errf(failure_error(kind), "writer '%s' failed %s (%s): %s", w->name, event, kind,
                   om_json_str_or(p->answer, "reason", "no reason given"));
}

int vss_coord_call(coord *c, wconn *w, uint32_t gen, const char *sid, const char *event,
                   json_t *args, json_t **result)
{
    *result = NULL;
    pending p = {.done = 0};
    pthread_cond_init(&p.cond, NULL);
    pthread_mutex_lock(&c->mu);
    if (w->fd < 0 || w->conn_gen != gen) {
        pthread_mutex_unlock(&c->mu);
        pthread_cond_destroy(&p.cond);
        return om_errf(OM_E_WriterNotResponding, "writer '%s' is no longer connected", w->name);
    }
    p.id = ++w->next_id;
    p.next = w->calls;
    w->calls = &p;
    int fd = w->fd;
    pthread_mutex_unlock(&c->mu);

    json_t *msg = json_pack("{s:s, s:I, s:s, s:o}", "event", event, "id", (json_int_t)p.id,
                            "session", sid, "args", args ? json_incref(args) : json_object());
    pthread_mutex_lock(&w->send_mu);
    int src = om_proto_send(fd, msg, NULL, 0);
    pthread_mutex_unlock(&w->send_mu);
    json_decref(msg);
    if (src) shutdown(fd, SHUT_RDWR); /* the connection thread sees the end and fails us */

    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    uint64_t ns = (uint64_t)until.tv_nsec + (uint64_t)limit_of(c, event) * 1000000u;
    until.tv_sec += (time_t)(ns / 1000000000u);
    until.tv_nsec = (long)(ns % 1000000000u);
    pthread_mutex_lock(&c->mu);
    while (!p.done)
        if (pthread_cond_timedwait(&p.cond, &c->mu, &until) == ETIMEDOUT) break;
    if (!p.done) unlink_pending(w, &p);
    int rc = call_outcome(c, w, event, &p, result);
    pthread_mutex_unlock(&c->mu);
    json_decref(p.answer);
    pthread_cond_destroy(&p.cond);
    return rc;
}

/* An answer from the writer: hand it to the call waiting for it. */
static void deliver(coord *c, wconn *w, json_t *msg)
{
    json_int_t id = json_integer_value(json_object_get(msg, "answer"));
    pthread_mutex_lock(&c->mu);
    for (pending *p = w->calls; p; p = p->next)
        if ((json_int_t)p->id == id) {
            unlink_pending(w, p);
            p->answer = json_incref(msg);
            p->done = 1;
            pthread_cond_signal(&p->cond);
            break;
        }
    pthread_mutex_unlock(&c->mu);
}

/* Registers (or re-registers) a writer; the entry under coord.mu. */
static int register_writer(coord *c, int fd, json_t *req, wconn **out)
{
    const char *cls, *inst, *name;
    int rc = om_json_str(req, "class_id", &cls);
    if (!rc) rc = om_json_str(req, "instance_id", &inst);
    if (!rc) rc = om_json_str(req, "name", &name);
    if (rc) return rc;
    if (strlen(cls) >= 40 || strlen(inst) >= 40 || strlen(name) >= 128)
        return om_errf(OM_E_InvalidParameter, "writer ids or name too long");
    wconn *w = NULL;
    for (int i = 0; i < c->nw; i++)
        if (!strcmp(c->w[i]->instance_id, inst)) w = c->w[i];
    if (w && w->fd >= 0)
        return om_errf(OM_E_DatabaseDuplicate,
                       "a writer with instance id %s ('%s', pid %d) is already registered", inst,
                       w->name, w->pid);
    if (!w) {
        if (c->nw == VSS_MAX_WRITERS)
            return om_errf(OM_E_OutOfMemory, "too many writers (%d)", VSS_MAX_WRITERS);
        w = calloc(1, sizeof *w);
        if (!w) return om_errf(OM_E_OutOfMemory, "out of memory");
        pthread_mutex_init(&w->send_mu, NULL);
        pthread_cond_init(&w->snap_cond, NULL);
        snprintf(w->instance_id, sizeof w->instance_id, "%s", inst);
        snprintf(w->state, sizeof w->state, "stable");
        c->w[c->nw++] = w;
    }
    snprintf(w->class_id, sizeof w->class_id, "%s", cls);
    snprintf(w->name, sizeof w->name, "%s", name);
    w->can_hold = json_is_true(json_object_get(req, "can_hold"));
    w->pid = (int)om_json_int_or(req, "pid", om_peer_pid(fd));
    w->fd = fd;
    w->conn_gen++;
    if (!strncmp(w->state, "waiting", 7)) snprintf(w->state, sizeof w->state, "stable");
    *out = w;
    return 0;
}

/* A writer's connection: register, then answers until it closes. */
static void writer_serve(coord *c, int fd, json_t *req)
{
    wconn *w = NULL;
    pthread_mutex_lock(&c->mu);
    int rc = register_writer(c, fd, req, &w);
    pthread_mutex_unlock(&c->mu);
    json_t *rep = rc ? om_proto_error(rc) : om_proto_ok();
    if (rc) om_warn("writer refused: %s", om_err_detail());
    /* Events may follow the reply at once: send it under the writer's send lock. */
    if (w) pthread_mutex_lock(&w->send_mu);
    int src = om_proto_send(fd, rep, NULL, 0);
    if (w) pthread_mutex_unlock(&w->send_mu);
    json_decref(rep);
    if (rc) return;
    om_info("writer '%s' registered (instance %s, pid %d%s)", w->name, w->instance_id, w->pid,
            w->can_hold ? ", can hold its files" : "");
    while (!src) {
        json_t *msg = NULL;
        uint8_t *data = NULL;
        size_t dlen = 0;
        if (om_proto_recv(fd, &msg, &data, &dlen)) break;
        free(data);
        if (json_object_get(msg, "answer")) deliver(c, w, msg);
        json_decref(msg);
    }
    pthread_mutex_lock(&c->mu);
    om_warn("writer '%s' (instance %s) disconnected", w->name, w->instance_id);
    w->fd = -1;
    for (pending *p = w->calls; p; p = p->next) {
        p->done = 1;
        pthread_cond_signal(&p->cond);
    }
    w->calls = NULL;
    vss_session_writer_gone(c, w);
    w->snap_owner = NULL;
    pthread_cond_broadcast(&w->snap_cond);
    pthread_mutex_unlock(&c->mu);
}

/* ---- the shadow copy catalog ---- */

/* A catalog entry as JSON: the provider's record and the coordinator's fields. */
static json_t *shadow_json(const shadow_ent *e)
{
    json_t *j = vss_shadow_to_json(&e->s);
    json_object_set_new(j, "session", json_string(e->session));
    json_object_set_new(j, "persistent", json_boolean(e->persistent));
    json_object_set_new(j, "valid", json_boolean(e->valid));
    return j;
}

static int save_catalog(coord *c)
{
    json_t *arr = json_array();
    for (int i = 0; i < c->nshadows; i++)
        json_array_append_new(arr, shadow_json(c->shadows[i]));
    char *text = json_dumps(arr, JSON_INDENT(1));
    json_decref(arr);
    if (!text) return om_errf(OM_E_OutOfMemory, "saving the shadow copy catalog");
    int rc = om_write_file_durable(om_vfs_posix(), c->catalog, text, strlen(text));
    free(text);
    if (rc) om_error("saving %s: %s", c->catalog, om_err_detail());
    return rc;
}

shadow_ent *vss_coord_add_shadow(coord *c, const shadow_ent *e)
{
    if (c->nshadows == VSS_MAX_SHADOWS) {
        om_errf(OM_E_OutOfMemory, "too many shadow copies (%d)", VSS_MAX_SHADOWS);
        return NULL;
    }
    shadow_ent *n = malloc(sizeof *n);
    if (!n) {
        om_errf(OM_E_OutOfMemory, "out of memory");
        return NULL;
    }
    *n = *e;
    c->shadows[c->nshadows++] = n;
    save_catalog(c);
    return n;
}

void vss_coord_update_shadow(coord *c, shadow_ent *e, const vss_shadow *s)
{
    pthread_mutex_lock(&c->mu);
    e->s = *s;
    save_catalog(c);
    pthread_mutex_unlock(&c->mu);
}

static void remove_shadow_at(coord *c, int i)
{
    shadow_ent *e = c->shadows[i];
    const vss_provider *p = vss_provider_find(e->s.provider);
    if (p && p->remove(&e->s))
        om_error("deleting shadow copy %s (%s): %s", e->s.id, e->s.storage, om_err_detail());
    free(e);
    c->shadows[i] = c->shadows[--c->nshadows];
}

void vss_coord_drop_shadows(coord *c, const char *sid, int keep_persistent)
{
    pthread_mutex_lock(&c->mu);
    int changed = 0;
    for (int i = c->nshadows; i-- > 0;) {
        shadow_ent *e = c->shadows[i];
        if (strcmp(e->session, sid)) continue;
        if (keep_persistent && e->persistent && e->valid) {
            e->session[0] = 0; /* outlives its session */
            changed = 1;
            continue;
        }
        remove_shadow_at(c, i);
        changed = 1;
    }
    if (changed) save_catalog(c);
    pthread_mutex_unlock(&c->mu);
}

void vss_coord_expose_shadows(coord *c, const char *sid)
{
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nshadows; i++)
        if (!strcmp(c->shadows[i]->session, sid)) c->shadows[i]->exposed = 1;
    save_catalog(c);
    pthread_mutex_unlock(&c->mu);
}

/* At start: what a dead coordinator left. Persistent copies stay; the rest are deleted. */
static void load_catalog(coord *c)
{
    json_error_t je;
    json_t *arr = json_load_file(c->catalog, 0, &je);
    if (!arr) return;
    size_t i;
    json_t *j;
    int dropped = 0;
    json_array_foreach(arr, i, j)
    {
        shadow_ent e = {0};
        if (vss_shadow_from_json(j, &e.s)) {
            om_warn("%s: entry %zu: %s (ignored)", c->catalog, i, om_err_detail());
            continue;
        }
        e.persistent = json_is_true(json_object_get(j, "persistent"));
        e.valid = json_is_true(json_object_get(j, "valid")) && strcmp(e.s.provider, "held");
        e.exposed = 1;
        if (e.persistent && e.valid && c->nshadows < VSS_MAX_SHADOWS) {
            vss_coord_add_shadow(c, &e);
            continue;
        }
        const vss_provider *p = vss_provider_find(e.s.provider);
        if (p && p->remove(&e.s))
            om_error("deleting leftover shadow copy %s: %s", e.s.id, om_err_detail());
        dropped++;
    }
    json_decref(arr);
    if (dropped) om_info("deleted %d shadow copies a previous run left behind", dropped);
    save_catalog(c);
}

/* ---- admin ---- */

static int admin_writers(coord *c, json_t *req, json_t *rep)
{
    json_t *a = json_array();
    for (int i = 0; i < c->nw; i++)
        json_array_append_new(a, vss_coord_writer_json(c->w[i]));
    json_object_set_new(rep, "writers", a);
    return 0;
}

static int admin_providers(coord *c, json_t *req, json_t *rep)
{
    size_t n;
    const vss_provider *const *pv = vss_providers(&n);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char why[256] = "";
        int s = pv[i]->supports(c->shadow_root, c->shadow_root, why, sizeof why);
        json_array_append_new(a, json_pack("{s:s, s:b, s:s}", "name", pv[i]->name,
                                           "supports_shadow_dir", s == 1, "note", why));
    }
    json_object_set_new(rep, "providers", a);
    return 0;
}

static int admin_shadows(coord *c, json_t *req, json_t *rep)
{
    json_t *a = json_array();
    for (int i = 0; i < c->nshadows; i++)
        json_array_append_new(a, shadow_json(c->shadows[i]));
    json_object_set_new(rep, "shadows", a);
    return 0;
}

static int admin_shadow_delete(coord *c, json_t *req, json_t *rep)
{
    const char *id = om_json_str_or(req, "id", NULL), *set = om_json_str_or(req, "set", NULL);
    int n = 0, rc = 0;
    for (int i = c->nshadows; i-- > 0;) {
        shadow_ent *e = c->shadows[i];
        if ((id && !strcmp(e->s.id, id)) || (set && !strcmp(e->s.set_id, set))) {
            if (e->session[0]) {
                rc = om_errf(OM_E_BadState,
                             "shadow copy %s belongs to session %s, which "
                             "is still running",
                             e->s.id, e->session);
                break;
            }
            remove_shadow_at(c, i);
            n++;
        }
    }
    if (!rc && n == 0)
        rc = om_errf(OM_E_ObjectNotFound, "no shadow copy %s %s", id ? "with id" : "in set",
                     id    ? id
                     : set ? set
                           : "(none given)");
    if (n) save_catalog(c);
    json_object_set_new(rep, "deleted", json_integer(n));
    return rc;
}

static int admin_status(coord *c, json_t *req, json_t *rep)
{
    int ns = vss_session_count(c), nw = 0;
    for (int i = 0; i < c->nw; i++)
        nw += c->w[i]->fd >= 0;
    json_object_set_new(rep, "pid", json_integer(getpid()));
    json_object_set_new(rep, "writers", json_integer(nw));
    json_object_set_new(rep, "sessions", json_integer(ns));
    json_object_set_new(rep, "shadows", json_integer(c->nshadows));
    return 0;
}

/* An administrative request is one row. Every handler runs under coord.mu: they read or change
 * the writer registry and the catalog, and none waits for a writer. */
struct admin_op {
    const char *name;
    int (*handler)(coord *c, json_t *req, json_t *rep);
};
static const struct admin_op admin_ops[] = {
    {"writers", admin_writers}, {"providers", admin_providers},
    {"shadows", admin_shadows}, {"shadow.delete", admin_shadow_delete},
    {"status", admin_status},
};

static json_t *admin(coord *c, const char *op, json_t *req)
{
    const struct admin_op *a = NULL;
    for (size_t i = 0; !a && i < sizeof admin_ops / sizeof admin_ops[0]; i++)
        if (!strcmp(admin_ops[i].name, op)) a = &admin_ops[i];
    json_t *rep = om_proto_ok();
    int rc;
    if (!a)
        rc = om_errf(OM_E_InvalidParameter, "unknown operation '%s'", op);
    else {
        pthread_mutex_lock(&c->mu);
        rc = a->handler(c, req, rep);
        pthread_mutex_unlock(&c->mu);
    }
    if (rc) {
        json_decref(rep);
        rep = om_proto_error(rc);
    }
    return rep;
}

static void admin_serve(coord *c, int fd, json_t *req)
{
    for (;;) {
        json_t *rep = admin(c, om_json_str_or(req, "op", ""), req);
        int src = om_proto_send(fd, rep, NULL, 0);
        json_decref(rep);
        json_decref(req);
        req = NULL;
        uint8_t *data = NULL;
        size_t dlen = 0;
        if (src || om_proto_recv(fd, &req, &data, &dlen)) break;
        free(data);
    }
    json_decref(req);
}

/* ---- connections ---- */

typedef struct conn {
    coord *c;
    int fd;
    gid_t group;
} conn;

typedef struct conn_ctx {
    coord *c;
    gid_t group;
} conn_ctx;

static void *conn_new(void *ctx, int fd)
{
    conn_ctx *x = ctx;
    conn *cn = malloc(sizeof *cn);
    if (cn) *cn = (conn){.c = x->c, .fd = fd, .group = x->group};
    return cn;
}

/* The first request says what a connection is: a writer's, which then waits for events, or a
 * requester's session, which copies files between its calls; both may stay silent longer than a
 * passing client. Any other first request opens an administrative connection (admin_ops). */
struct conn_kind {
    const char *op;
    void (*serve)(coord *c, int fd, json_t *req);
};
static const struct conn_kind conn_kinds[] = {
    {"writer.register", writer_serve},
    {"session.begin", vss_session_serve},
};

static void *serve(void *arg)
{
    conn *cn = arg;
    coord *c = cn->c;
    json_t *req = NULL;
    uint8_t *data = NULL;
    size_t dlen = 0;
    char who[128];
    int admitted = om_server_admit(cn->fd, cn->group, "the shadow copy service", who, sizeof who);
    int rc = admitted ? om_proto_recv(cn->fd, &req, &data, &dlen) : 0;
    if (admitted && !rc) {
        const char *op = om_json_str_or(req, "op", "");
        const struct conn_kind *k = NULL;
        for (size_t i = 0; !k && i < sizeof conn_kinds / sizeof conn_kinds[0]; i++)
            if (!strcmp(conn_kinds[i].op, op)) k = &conn_kinds[i];
        if (k) {
            om_server_conn_may_idle();
            k->serve(c, cn->fd, req);
        } else {
            admin_serve(c, cn->fd, req);
            req = NULL;
        }
    } else if (admitted && !om_proto_ended_cleanly()) { /* a bad or late first message: say why */
        om_server_warn_client("client %s: %s", who, om_err_detail());
        json_t *r = om_proto_error(rc);
        om_proto_send(cn->fd, r, NULL, 0);
        json_decref(r);
    }
    json_decref(req);
    free(data);
    close(cn->fd);
    free(cn);
    return NULL;
}

static int listen_fd = -1;

static int setup(coord *c, const vss_coord_opts *o)
{
    c->o = *o;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->freeze_limit_ms = o->freeze_limit_ms ? o->freeze_limit_ms : 60000;
    c->commit_limit_ms = o->commit_limit_ms ? o->commit_limit_ms : 10000;
    c->event_limit_ms = o->event_limit_ms ? o->event_limit_ms : 60000;
    c->restore_limit_ms = o->restore_limit_ms ? o->restore_limit_ms : 86400000u;
    char vdir[4096];
    snprintf(vdir, sizeof vdir, "%.4000s/vss", o->data_dir);
    if (o->shadow_dir)
        snprintf(c->shadow_root, sizeof c->shadow_root, "%s", o->shadow_dir);
    else
        snprintf(c->shadow_root, sizeof c->shadow_root, "%s/shadows", o->data_dir);
    snprintf(c->catalog, sizeof c->catalog, "%s/shadows.json", vdir);
    int rc = om_mkdirs(vdir);
    if (!rc) rc = om_mkdirs(c->shadow_root);
    if (!rc) rc = om_mkdirs(o->runtime_dir);
    return rc;
}

int vss_coord_run(const vss_coord_opts *o)
{
    static coord cs;
    coord *c = &cs;
    gid_t group;
    int rc = om_group_id(o->group, &group);
    if (!rc) rc = setup(c, o);
    if (rc) return rc;
    char sock[4200];
    snprintf(sock, sizeof sock, "%s/vss.sock", o->runtime_dir);
    om_server_signals_block();
    if ((rc = om_server_listen(sock, group, "ombra-vssd", &listen_fd))) return rc;
    load_catalog(c);
    om_stopper stopper = {.mu = &c->mu, .stopping = &c->stopping, .listen_fd = listen_fd};
    if ((rc = om_stopper_start(&stopper))) return rc;
    om_info("listening on %s (freeze limit %u ms, commit limit %u ms, event limit %u ms; shadow "
            "copies in %s)",
            sock, c->freeze_limit_ms, c->commit_limit_ms, c->event_limit_ms, c->shadow_root);
    conn_ctx cx = {.c = c, .group = group};
    om_server_accept(&stopper, "the shadow copy service", &o->limits, NULL, conn_new, &cx, serve);
    om_stopper_join(&stopper);
    close(listen_fd);
    unlink(sock);
    /* Sessions still open: delete their shadow copies (their writers thaw by themselves). */
    pthread_mutex_lock(&c->mu);
    for (int i = c->nshadows; i-- > 0;)
        if (c->shadows[i]->session[0] || !c->shadows[i]->persistent) remove_shadow_at(c, i);
    save_catalog(c);
    pthread_mutex_unlock(&c->mu);
    om_info("stopped");
    return 0;
}
