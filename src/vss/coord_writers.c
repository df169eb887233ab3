/* ombra-vssd's writer registry and the events sent to writers (coord_internal.h): what a
 * session and a writer's connection share, below both. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/error.h"
#include "base/proto.h"
#include "base/server.h"
#include "vss/coord_internal.h"

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

void vss_coord_deliver(coord *c, wconn *w, json_t *msg)
{
    json_int_t id = json_integer_value(json_object_get(msg, "answer"));
    pthread_mutex_lock(&c->mu);
    for (pending *p = w->calls; p; p = p->next)
        if ((json_int_t)p->id == id) {
            unlink_pending(w, p);
            p->answer = msg; /* the caller's thread now holds the only reference */
            msg = NULL;
            p->done = 1;
            pthread_cond_signal(&p->cond);
            break;
        }
    pthread_mutex_unlock(&c->mu);
    json_decref(msg); /* an answer nobody waits for any more (its call timed out) */
}

int vss_coord_register_writer(coord *c, int fd, json_t *req, wconn **out)
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
