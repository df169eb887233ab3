/* ombra-vssd's connections, writers' connections and admin requests (coordinator.h has the
 * rules; session.c runs the requester sessions, coord_writers.c the writer registry and its
 * events, coord_catalog.c the shadow copy catalog). */
#include "vss/coordinator.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/server.h"
#include "base/time.h"
#include "vss/coord_internal.h"

/* ---- writers ---- */

/* A writer's connection: register, then answers until it closes. */
static void writer_serve(coord *c, int fd, json_t *req)
{
    wconn *w = NULL;
    pthread_mutex_lock(&c->mu);
    int rc = vss_coord_register_writer(c, fd, req, &w);
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
        if (json_object_get(msg, "answer"))
            vss_coord_deliver(c, w, msg);
        else
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
        json_array_append_new(a, vss_coord_shadow_json(c->shadows[i]));
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
            vss_coord_remove_shadow(c, i);
            n++;
        }
    }
    if (!rc && n == 0)
        rc = om_errf(OM_E_ObjectNotFound, "no shadow copy %s %s", id ? "with id" : "in set",
                     id    ? id
                     : set ? set
                           : "(none given)");
    if (n) vss_coord_save_catalog(c);
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
    char t[40];
    json_object_set_new(
        rep, "last_snapshot",
        c->last_ns ? json_pack("{s:s, s:I, s:s, s:f, s:f}", "set", c->last_set, "time_ns",
                               (json_int_t)c->last_ns, "time", om_time_iso(c->last_ns, t, sizeof t),
                               "freeze_ms", c->last_freeze_ms, "snapshot_ms", c->last_snapshot_ms)
                   : json_null());
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
    vss_coord_load_catalog(c);
    om_stopper stopper = {.mu = &c->mu, .stopping = &c->stopping, .listen_fd = listen_fd};
    if ((rc = om_stopper_start(&stopper))) return rc;
    om_info("listening on %s (freeze limit %u ms, commit limit %u ms, event limit %u ms; shadow "
            "copies in %s)",
            sock, c->freeze_limit_ms, c->commit_limit_ms, c->event_limit_ms, c->shadow_root);
    conn_ctx cx = {.c = c, .group = group};
    om_daemon_ready("coordinating shadow copies");
    om_server_accept(&stopper, "the shadow copy service", &o->limits, NULL, conn_new, &cx, serve);
    om_stopper_join(&stopper);
    close(listen_fd);
    unlink(sock);
    /* Sessions still open: delete their shadow copies (their writers thaw by themselves). */
    pthread_mutex_lock(&c->mu);
    for (int i = c->nshadows; i-- > 0;)
        if (c->shadows[i]->session[0] || !c->shadows[i]->persistent) vss_coord_remove_shadow(c, i);
    vss_coord_save_catalog(c);
    pthread_mutex_unlock(&c->mu);
    om_info("stopped");
    return 0;
}
