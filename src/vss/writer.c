/* The writer SDK (writer.h): the connection thread, one thread per event, the per-session
 * state that auto-thaw and the abort-on-disconnect need, and the metadata builders.
 *
 * Invariants (w->mu guards everything below except the socket writes):
 *  - w->fd is the current connection or -1; w->gen counts connections. An event remembers the
 *    gen it came on, and its answer is written only while w->gen is still that gen, so an
 *    answer never reaches a later connection whose ids mean other events.
 *  - The fd is closed only by the connection thread holding send_mu and mu, so a writer of an
 *    answer (holding send_mu) never writes to a closed or reused descriptor. Lock order:
 *    send_mu, then mu.
 *  - A session record exists while the session is open (PrepareBackup, Freeze or PreRestore
 *    seen, no Abort, BackupShutdown or PostRestore yet) or while a thread uses it (refs > 0).
 *    A restore is open from PreRestore so that its Abort (a requester that failed or died
 *    before PostRestore) reaches the handler: the writer must forget the restore then.
 *    `busy` makes the handlers of one session run one at a time.
 *  - w->active counts event threads (including a Freeze thread waiting to auto-thaw);
 *    vss_writer_stop waits for it to reach 0 after the connection thread has ended. */
#include "vss/writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
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
#include "base/time.h"

#define RETRY_FIRST_MS 200
#define RETRY_MAX_MS   2000

/* ---- failure kinds ---- */

static const struct {
    vss_failure f;
    const char *name;
    int err;
} failures[] = {
    {VSS_FAIL_NONE, "none", 0},
    {VSS_FAIL_RETRYABLE, "retryable", OM_E_WriterErrorRetryable},
    {VSS_FAIL_NON_RETRYABLE, "non_retryable", OM_E_WriterErrorNonRetryable},
    {VSS_FAIL_TIMEOUT, "timeout", OM_E_WriterErrorTimeout},
    {VSS_FAIL_OUT_OF_RESOURCES, "out_of_resources", OM_E_WriterErrorOutOfResources},
    {VSS_FAIL_INCONSISTENT_SNAPSHOT, "inconsistent_snapshot", OM_E_WriterErrorInconsistentSnapshot},
    {VSS_FAIL_RECOVERY_FAILED, "recovery_failed", OM_E_WriterErrorRecoveryFailed},
};
#define NFAILURES (sizeof failures / sizeof failures[0])

const char *vss_failure_name(vss_failure f)
{
    for (size_t i = 0; i < NFAILURES; i++)
        if (failures[i].f == f) return failures[i].name;
    return "non_retryable";
}

int vss_failure_parse(const char *s, vss_failure *f)
{
    for (size_t i = 0; s && i < NFAILURES; i++)
        if (!strcmp(failures[i].name, s)) {
            *f = failures[i].f;
            return 0;
        }
    return om_errf(OM_E_InvalidParameter,
                   "unknown failure kind '%s' (retryable, non_retryable, timeout, "
                   "out_of_resources, inconsistent_snapshot, recovery_failed)",
                   s ? s : "(null)");
}

int vss_failure_error(vss_failure f)
{
    for (size_t i = 0; i < NFAILURES; i++)
        if (failures[i].f == f) return failures[i].err;
    return OM_E_WriterErrorNonRetryable;
}

int vss_fail(vss_event *e, vss_failure kind, const char *fmt, ...)
{
    if (kind == VSS_FAIL_NONE) kind = VSS_FAIL_NON_RETRYABLE;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->reason, sizeof e->reason, fmt, ap);
    va_end(ap);
    e->failure = kind;
    return om_errf(vss_failure_error(kind), "%s", e->reason);
}

int vss_fail_rc(vss_event *e, vss_failure kind, int rc)
{
    return vss_fail(e, kind, "%d %s: %s", rc, om_err_name(rc), om_err_detail());
}

const char *vss_event_comp(const vss_event *e, size_t i)
{
    json_t *c = json_array_get(json_object_get(e->args, "components"), i);
    return json_is_string(c) ? json_string_value(c) : json_string_value(json_object_get(c, "name"));
}

int vss_comp_split(const char *logical, const char *comp, char id[37], int *is_logs)
{
    size_t l = strlen(logical);
    if (!comp || strncmp(comp, logical, l) || comp[l] != '\\') return 0;
    const char *p = comp + l + 1, *bs = strchr(p, '\\');
    size_t n = bs ? (size_t)(bs - p) : strlen(p);
    if (n != 36 || (bs && strcmp(bs, "\\Logs"))) return 0;
    memcpy(id, p, 36);
    id[36] = 0;
    *is_logs = bs != NULL;
    return 1;
}

int vss_event_succeeded(const vss_event *e, const char *comp)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(e->args, "components"), i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && !strcmp(n, comp)) return json_is_true(json_object_get(c, "succeeded"));
    }
    return 0;
}

int vss_event_stored(const vss_event *e, const char *comp)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(e->args, "stored"), i, c)
    {
        if (json_is_string(c) && !strcmp(json_string_value(c), comp)) return 1;
    }
    return 0;
}

/* ---- the writer ---- */

typedef struct session {
    struct session *next;
    char id[64];
    int refs;
    int busy;        /* a handler of this session runs */
    int open;        /* PrepareBackup/Freeze seen, no Abort/BackupShutdown yet */
    int frozen;      /* Freeze succeeded, no Thaw/Abort yet */
    int auto_thawed; /* the SDK thawed it: the next Thaw is answered `timeout` */
    uint64_t thaw_deadline_ns, thaw_limit_ms;
    json_t *components; /* the last args.components seen, for the Abort the SDK makes */
} session;

struct vss_writer {
    char class_id[64], instance_id[64], name[256], socket_path[4096];
    int can_hold;
    vss_writer_ops ops;
    void *ctx;

    pthread_t thread;
    pthread_mutex_t mu, send_mu;
    pthread_cond_t cond; /* any change of the fields below */
    int fd;
    uint64_t gen;
    int registered, stopping, active;
    session *sessions;
};

/* An event on its way to a handler thread. */
typedef struct job {
    vss_writer *w;
    uint64_t gen;
    int64_t id;
    json_t *msg; /* the event message (owned) */
} job;

static void cond_deadline(struct timespec *ts, uint64_t deadline_ns)
{
    ts->tv_sec = (time_t)(deadline_ns / 1000000000u);
    ts->tv_nsec = (long)(deadline_ns % 1000000000u);
}

/* Waits on w->cond (mu held) until deadline (om_mono_ns clock); 1 once it has passed. */
static int wait_until(vss_writer *w, uint64_t deadline_ns)
{
    if (om_mono_ns() >= deadline_ns) return 1;
    struct timespec ts;
    cond_deadline(&ts, deadline_ns);
    pthread_cond_timedwait(&w->cond, &w->mu, &ts);
    return om_mono_ns() >= deadline_ns;
}

/* ---- sessions (mu held) ---- */

static session *session_get(vss_writer *w, const char *id)
{
    for (session *s = w->sessions; s; s = s->next)
        if (!strcmp(s->id, id)) {
            s->refs++;
            return s;
        }
    session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->refs = 1;
    s->next = w->sessions;
    w->sessions = s;
    return s;
}

/* Drops a reference; frees the record once nothing uses it and the session is closed. */
static void session_put(vss_writer *w, session *s)
{
    if (--s->refs > 0 || s->open) return;
    for (session **p = &w->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    json_decref(s->components);
    free(s);
}

static void session_lock(vss_writer *w, session *s)
{
    while (s->busy)
        pthread_cond_wait(&w->cond, &w->mu);
    s->busy = 1;
}

static void session_unlock(vss_writer *w, session *s)
{
    s->busy = 0;
    pthread_cond_broadcast(&w->cond);
}

static void session_close(vss_writer *w, session *s)
{
    s->open = 0;
    s->frozen = 0;
    pthread_cond_broadcast(&w->cond);
}

/* ---- answers ---- */

static void send_answer(vss_writer *w, uint64_t gen, json_t *ans)
{
    pthread_mutex_lock(&w->send_mu);
    pthread_mutex_lock(&w->mu);
    int fd = w->gen == gen ? w->fd : -1;
    pthread_mutex_unlock(&w->mu);
    if (fd >= 0 && om_proto_send(fd, ans, NULL, 0))
        om_debug("vss writer: answering: %s", om_err_detail());
    pthread_mutex_unlock(&w->send_mu);
    json_decref(ans);
}

static json_t *answer_of(int64_t id, const vss_event *e)
{
    if (e->failure == VSS_FAIL_NONE)
        return json_pack("{s:I, s:b, s:O}", "answer", (json_int_t)id, "ok", 1, "result", e->result);
    return json_pack("{s:I, s:b, s:s, s:s}", "answer", (json_int_t)id, "ok", 0, "failure",
                     vss_failure_name(e->failure), "reason", e->reason);
}

/* ---- handlers ---- */

static vss_handler handler_of(const vss_writer_ops *o, const char *name)
{
    static const struct {
        const char *name;
        size_t off;
    } map[] = {
        {"Identify", offsetof(vss_writer_ops, identify)},
        {"PrepareBackup", offsetof(vss_writer_ops, prepare_backup)},
        {"PrepareSnapshot", offsetof(vss_writer_ops, prepare_snapshot)},
        {"Freeze", offsetof(vss_writer_ops, freeze)},
        {"Thaw", offsetof(vss_writer_ops, thaw)},
        {"PostSnapshot", offsetof(vss_writer_ops, post_snapshot)},
        {"BackupComplete", offsetof(vss_writer_ops, backup_complete)},
        {"Abort", offsetof(vss_writer_ops, abort)},
        {"BackupShutdown", offsetof(vss_writer_ops, backup_shutdown)},
        {"PreRestore", offsetof(vss_writer_ops, pre_restore)},
        {"PostRestore", offsetof(vss_writer_ops, post_restore)},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i].name, name)) return *(const vss_handler *)((const char *)o + map[i].off);
    return NULL;
}

static int known_event(const char *name)
{
    static const char *const names[] = {"Identify",       "PrepareBackup", "PrepareSnapshot",
                                        "Freeze",         "Thaw",          "PostSnapshot",
                                        "BackupComplete", "Abort",         "BackupShutdown",
                                        "PreRestore",     "PostRestore"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(names[i], name)) return 1;
    return 0;
}

/* Calls the handler for e (outside mu) and turns its outcome into e->failure/reason. */
static void run_handler(vss_writer *w, vss_event *e)
{
    vss_handler h = handler_of(&w->ops, e->name);
    if (!h) return;
    om_err_clear();
    int rc = h(w->ctx, e);
    if (rc && e->failure == VSS_FAIL_NONE) {
        const char *d = om_err_detail();
        e->failure = VSS_FAIL_NON_RETRYABLE;
        if (d && *d)
            snprintf(e->reason, sizeof e->reason, "%s", d);
        else
            snprintf(e->reason, sizeof e->reason, "%s (%d %s)", om_err_msg(rc), rc,
                     om_err_name(rc));
    }
    if (!e->failure && !strcmp(e->name, "Identify") && !json_object_get(e->result, "metadata"))
        vss_fail(e, VSS_FAIL_NON_RETRYABLE, "the writer's Identify gave no metadata document");
}

/* The abort handler for a session the coordinator can no longer abort (mu held, s locked). */
static void abort_orphan(vss_writer *w, session *s, const char *why)
{
    json_t *args = json_pack("{s:O, s:b}", "components",
                             s->components ? s->components : json_array(), "disconnected", 1);
    session_close(w, s);
    pthread_mutex_unlock(&w->mu);
    om_warn("vss writer '%s': aborting session %s: %s", w->name, s->id, why);
    vss_event e = {.name = "Abort", .session = s->id, .args = args, .result = json_object()};
    run_handler(w, &e);
    if (e.failure) om_warn("vss writer '%s': abort of session %s: %s", w->name, s->id, e.reason);
    json_decref(e.result);
    json_decref(args);
    pthread_mutex_lock(&w->mu);
}

/* After a successful Freeze with a thaw limit: waits for Thaw/Abort, else thaws by itself.
 * mu held; s referenced, not locked. */
static void watch_thaw(vss_writer *w, session *s)
{
    while (s->frozen && !wait_until(w, s->thaw_deadline_ns))
        ;
    if (!s->frozen) return;
    session_lock(w, s);
    if (s->frozen) {
        s->frozen = 0;
        s->auto_thawed = 1;
        json_t *args = json_pack("{s:O, s:b}", "components",
                                 s->components ? s->components : json_array(), "auto", 1);
        pthread_mutex_unlock(&w->mu);
        om_warn("vss writer '%s': no Thaw for session %s within %llu ms: thawing by itself",
                w->name, s->id, (unsigned long long)s->thaw_limit_ms);
        vss_event e = {.name = "Thaw", .session = s->id, .args = args, .result = json_object()};
        run_handler(w, &e);
        if (e.failure) om_warn("vss writer '%s': thawing by itself: %s", w->name, e.reason);
        json_decref(e.result);
        json_decref(args);
        pthread_mutex_lock(&w->mu);
    }
    session_unlock(w, s);
}

/* The session bookkeeping around one event's handler (mu held, s locked). Returns 1 when the
 * handler must not run and e already holds the answer. */
static int before_handler(vss_writer *w, session *s, vss_event *e)
{
    const char *n = e->name;
    json_t *comps = json_object_get(e->args, "components");
    if (json_is_array(comps) &&
        (!strcmp(n, "PrepareBackup") || !strcmp(n, "Freeze") || !s->components)) {
        json_decref(s->components);
        s->components = json_incref(comps);
    }
    if (!strcmp(n, "PrepareBackup") || !strcmp(n, "Freeze") || !strcmp(n, "PreRestore")) {
        s->open = 1;
        s->auto_thawed = 0;
    } else if (!strcmp(n, "Thaw")) {
        s->frozen = 0;
        pthread_cond_broadcast(&w->cond);
        if (s->auto_thawed) {
            s->auto_thawed = 0;
            vss_fail(e, VSS_FAIL_TIMEOUT,
                     "no Thaw within thaw_limit_ms (%llu ms): the writer thawed by itself",
                     (unsigned long long)s->thaw_limit_ms);
            return 1;
        }
    } else if (!strcmp(n, "Abort")) {
        int was_open = s->open;
        session_close(w, s);
        s->auto_thawed = 0;
        if (!was_open) return 1; /* a second Abort, or one for a session we never saw */
    } else if (!strcmp(n, "BackupShutdown")) {
        session_close(w, s);
        s->auto_thawed = 0;
    }
    return 0;
}

static void *event_thread(void *arg)
{
    job *j = arg;
    vss_writer *w = j->w;
    json_t *args = json_object_get(j->msg, "args");
    vss_event e = {.name = om_json_str_or(j->msg, "event", ""),
                   .session = om_json_str_or(j->msg, "session", ""),
                   .args = json_is_object(args) ? json_incref(args) : json_object(),
                   .result = json_object()};
    int stateful = strcmp(e.name, "Identify") != 0 && *e.session;
    session *s = NULL;

    pthread_mutex_lock(&w->mu);
    if (stateful) {
        s = session_get(w, e.session);
        if (!s) vss_fail(&e, VSS_FAIL_OUT_OF_RESOURCES, "out of memory for session %s", e.session);
    }
    int skip = e.failure != VSS_FAIL_NONE;
    if (s) {
        session_lock(w, s);
        /* The connection this came on is gone and its open sessions were aborted: running
         * the handler now (a Freeze) would leave a state nobody ends. */
        skip = w->gen != j->gen || before_handler(w, s, &e);
    }
    pthread_mutex_unlock(&w->mu);

    if (!skip) run_handler(w, &e);
    if (!strcmp(e.name, "Abort") && e.failure) { /* Abort is always answered ok */
        om_warn("vss writer '%s': abort of session %s: %s", w->name, e.session, e.reason);
        e.failure = VSS_FAIL_NONE;
    }

    pthread_mutex_lock(&w->mu);
    int64_t limit = om_json_int_or(e.args, "thaw_limit_ms", 0);
    int watch = s && !strcmp(e.name, "Freeze") && !e.failure && s->open;
    if (watch) {
        s->frozen = 1;
        s->thaw_limit_ms = limit > 0 ? (uint64_t)limit : 0;
        s->thaw_deadline_ns = om_mono_ns() + s->thaw_limit_ms * 1000000u;
    }
    if (s && !strcmp(e.name, "PostRestore")) session_close(w, s); /* its handler ended it */
    pthread_mutex_unlock(&w->mu);

    /* Answer before letting the session's next event in: the coordinator may send Thaw the
     * moment it reads this. */
    send_answer(w, j->gen, answer_of(j->id, &e));

    pthread_mutex_lock(&w->mu);
    if (s) {
        session_unlock(w, s);
        if (watch && limit > 0) watch_thaw(w, s);
        session_put(w, s);
    }
    w->active--;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);

    json_decref(e.args);
    json_decref(e.result);
    json_decref(j->msg);
    free(j);
    return NULL;
}

/* Starts a thread for one event message (connection thread; takes msg). */
static void dispatch(vss_writer *w, uint64_t gen, json_t *msg)
{
    json_t *idv = json_object_get(msg, "id");
    const char *name = om_json_str_or(msg, "event", NULL);
    if (!json_is_integer(idv) || !name) {
        om_debug("vss writer: ignoring a message that is not an event");
        json_decref(msg);
        return;
    }
    int64_t id = json_integer_value(idv);
    if (!known_event(name)) {
        vss_event e = {.name = name, .result = json_object()};
        vss_fail(&e, VSS_FAIL_NON_RETRYABLE, "this writer does not know the event '%s'", name);
        send_answer(w, gen, answer_of(id, &e));
        json_decref(e.result);
        json_decref(msg);
        return;
    }
    job *j = malloc(sizeof *j);
    pthread_attr_t at;
    pthread_t t;
    int started = 0;
    if (j) {
        *j = (job){.w = w, .gen = gen, .id = id, .msg = msg};
        pthread_mutex_lock(&w->mu);
        w->active++;
        pthread_mutex_unlock(&w->mu);
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        started = pthread_create(&t, &at, event_thread, j) == 0;
        pthread_attr_destroy(&at);
        if (!started) {
            pthread_mutex_lock(&w->mu);
            w->active--;
            pthread_cond_broadcast(&w->cond);
            pthread_mutex_unlock(&w->mu);
            free(j);
        }
    }
    if (!started) {
        vss_event e = {.name = name, .result = json_object()};
        vss_fail(&e, VSS_FAIL_OUT_OF_RESOURCES, "cannot start a thread for %s", name);
        send_answer(w, gen, answer_of(id, &e));
        json_decref(e.result);
        json_decref(msg);
    }
}

/* ---- the connection ---- */

/* Connects and registers; 0 with w->fd set, or an error (the caller retries). */
static int connect_and_register(vss_writer *w)
{
    int fd = -1;
    int rc = om_proto_connect(w->socket_path, &fd);
    if (rc) return rc;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        pthread_mutex_unlock(&w->mu);
        close(fd);
        return om_errf(OM_E_Aborted, "the writer is stopping");
    }
    w->fd = fd; /* from here vss_writer_stop can shut it down */
    pthread_mutex_unlock(&w->mu);

    json_t *reg = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I}", "op", "writer.register", "class_id",
                            w->class_id, "instance_id", w->instance_id, "name", w->name, "can_hold",
                            w->can_hold, "pid", (json_int_t)getpid());
    json_t *reply = NULL;
    rc = reg ? om_proto_send(fd, reg, NULL, 0) : om_errf(OM_E_OutOfMemory, "out of memory");
    json_decref(reg);
    if (!rc) rc = om_proto_recv(fd, &reply, NULL, NULL);
    if (!rc) rc = om_proto_check(reply);
    json_decref(reply);
    return rc;
}

static void close_connection(vss_writer *w)
{
    pthread_mutex_lock(&w->send_mu);
    pthread_mutex_lock(&w->mu);
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    w->gen++;
    w->registered = 0;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_unlock(&w->send_mu);
}

/* Calls abort for every open session: the coordinator fails them when the connection drops,
 * and nobody else would release their holds. */
static void abort_open_sessions(vss_writer *w, const char *why)
{
    pthread_mutex_lock(&w->mu);
    for (;;) {
        session *s = w->sessions;
        while (s && !s->open)
            s = s->next;
        if (!s) break;
        s->refs++;
        session_lock(w, s);
        if (s->open) abort_orphan(w, s, why);
        session_unlock(w, s);
        session_put(w, s);
    }
    pthread_mutex_unlock(&w->mu);
}

/* Reads events until the connection fails or the writer stops; the reason into why. */
static void serve(vss_writer *w, char *why, size_t n)
{
    pthread_mutex_lock(&w->mu);
    uint64_t gen = w->gen;
    int fd = w->fd;
    pthread_mutex_unlock(&w->mu);
    for (;;) {
        json_t *msg = NULL;
        int rc = om_proto_recv(fd, &msg, NULL, NULL);
        if (rc) {
            snprintf(why, n, "%s", om_err_detail());
            return;
        }
        dispatch(w, gen, msg);
    }
}

static void *connection_thread(void *arg)
{
    vss_writer *w = arg;
    unsigned delay_ms = RETRY_FIRST_MS;
    char last_err[1024] = "";
    pthread_mutex_lock(&w->mu);
    while (!w->stopping) {
        pthread_mutex_unlock(&w->mu);
        int rc = connect_and_register(w);
        if (!rc) {
            pthread_mutex_lock(&w->mu);
            w->registered = !w->stopping;
            pthread_cond_broadcast(&w->cond);
            pthread_mutex_unlock(&w->mu);
            om_info("vss writer '%s' registered with the shadow copy service", w->name);
            last_err[0] = 0;
            delay_ms = RETRY_FIRST_MS;
            if (w->ops.registered) w->ops.registered(w->ctx);
            char why[1024];
            serve(w, why, sizeof why);
            close_connection(w);
            abort_open_sessions(w, "the connection to the shadow copy service was lost");
            pthread_mutex_lock(&w->mu);
            int stopping = w->stopping;
            pthread_mutex_unlock(&w->mu);
            if (!stopping) om_warn("vss writer '%s': connection lost: %s", w->name, why);
            if (w->ops.disconnected) w->ops.disconnected(w->ctx, stopping ? "stopping" : why);
        } else {
            close_connection(w);
            /* One line per distinct reason, not one every retry. */
            if (strcmp(last_err, om_err_detail()) != 0) {
                snprintf(last_err, sizeof last_err, "%s", om_err_detail());
                if (rc == OM_E_FileNotFound)
                    om_debug("vss writer '%s': %s", w->name, last_err);
                else
                    om_warn("vss writer '%s': registering: %s (%d %s); retrying", w->name, last_err,
                            rc, om_err_name(rc));
            }
        }
        pthread_mutex_lock(&w->mu);
        uint64_t until = om_mono_ns() + (uint64_t)delay_ms * 1000000u;
        while (!w->stopping && !wait_until(w, until))
            ;
        if (rc) delay_ms = delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay_ms * 2;
    }
    pthread_mutex_unlock(&w->mu);
    abort_open_sessions(w, "the writer is stopping");
    return NULL;
}

/* ---- public ---- */

static int copy_field(char *dst, size_t n, const char *src, const char *what)
{
    if (!src || !*src) return om_errf(OM_E_InvalidParameter, "the writer has no %s", what);
    if (strlen(src) >= n)
        return om_errf(OM_E_InvalidParameter, "the writer's %s is too long: %s", what, src);
    strcpy(dst, src);
    return 0;
}

int vss_writer_start(const vss_writer_info *info, const vss_writer_ops *ops, void *ctx,
                     vss_writer **out)
{
    *out = NULL;
    if (!ops || !ops->identify)
        return om_errf(OM_E_InvalidParameter, "a writer needs an identify handler");
    vss_writer *w = calloc(1, sizeof *w);
    if (!w) return om_errf(OM_E_OutOfMemory, "out of memory for a writer");
    int rc = copy_field(w->class_id, sizeof w->class_id, info->class_id, "class id");
    if (!rc)
        rc = copy_field(w->instance_id, sizeof w->instance_id, info->instance_id, "instance id");
    if (!rc) rc = copy_field(w->name, sizeof w->name, info->name, "name");
    if (!rc && info->socket_path)
        rc = copy_field(w->socket_path, sizeof w->socket_path, info->socket_path, "socket path");
    else if (!rc) {
        char dir[4000];
        rc = om_runtime_dir(dir, sizeof dir);
        if (!rc) snprintf(w->socket_path, sizeof w->socket_path, "%s/vss.sock", dir);
    }
    if (rc) {
        free(w);
        return rc;
    }
    w->can_hold = info->can_hold != 0;
    w->ops = *ops;
    w->ctx = ctx;
    w->fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->send_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* om_mono_ns's clock */
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    if ((errno = pthread_create(&w->thread, NULL, connection_thread, w)) != 0) {
        rc = om_errf(OM_E_OutOfMemory, "starting the writer's thread: %s", strerror(errno));
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->send_mu);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int vss_writer_connected(vss_writer *w)
{
    pthread_mutex_lock(&w->mu);
    int r = w->registered;
    pthread_mutex_unlock(&w->mu);
    return r;
}

void vss_writer_stop(vss_writer *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    if (w->fd >= 0) shutdown(w->fd, SHUT_RDWR); /* wakes the connection thread's recv */
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_lock(&w->mu);
    while (w->active > 0)
        pthread_cond_wait(&w->cond, &w->mu);
    pthread_mutex_unlock(&w->mu);
    while (w->sessions) { /* only closed records with no user are left: none, normally */
        session *s = w->sessions;
        w->sessions = s->next;
        json_decref(s->components);
        free(s);
    }
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->send_mu);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* ---- the metadata document ---- */

json_t *vss_wmd_new(const vss_writer_info *info, const char *const *backup_types,
                    const char *restore_method)
{
    static const char *const all[] = {"full", "copy", "incremental", "differential", NULL};
    json_t *types = json_array();
    for (const char *const *t = backup_types ? backup_types : all; types && *t; t++)
        json_array_append_new(types, json_string(*t));
    return json_pack("{s:{s:s, s:s, s:s}, s:o, s:s, s:b, s:[]}", "writer", "class_id",
                     info->class_id, "instance_id", info->instance_id, "name", info->name,
                     "backup_types", types, "restore_method",
                     restore_method ? restore_method : "restore_if_can_replace", "can_hold",
                     info->can_hold != 0, "components");
}

json_t *vss_wmd_add_component(json_t *md, const char *logical_path, const char *name,
                              const char *caption, int selectable)
{
    json_t *comps = json_object_get(md, "components");
    if (!json_is_array(comps) || !name) return NULL;
    json_t *c =
        json_pack("{s:s, s:s, s:b, s:[], s:[]}", "logical_path", logical_path ? logical_path : "",
                  "name", name, "selectable", selectable != 0, "files", "paths");
    if (!c) return NULL;
    if (caption) json_object_set_new(c, "caption", json_string(caption));
    if (json_array_append_new(comps, c)) return NULL;
    return c;
}

int vss_wmd_add_file(json_t *comp, const char *path, const char *spec, int recursive, int held)
{
    json_t *files = json_object_get(comp, "files");
    if (!json_is_array(files) || !path || !*path)
        return om_errf(OM_E_InvalidParameter, "adding a file to a component: bad arguments");
    json_t *f = spec ? json_pack("{s:s, s:s, s:b, s:b}", "path", path, "spec", spec, "recursive",
                                 recursive != 0, "held", held != 0)
                     : json_pack("{s:s}", "path", path);
    if (f && !spec && held) json_object_set_new(f, "held", json_true());
    if (!f || json_array_append_new(files, f))
        return om_errf(OM_E_OutOfMemory, "out of memory adding %s", path);
    return 0;
}

int vss_wmd_add_path(json_t *comp, const char *dir)
{
    json_t *paths = json_object_get(comp, "paths");
    if (!json_is_array(paths) || !dir || !*dir)
        return om_errf(OM_E_InvalidParameter, "adding a path to a component: bad arguments");
    if (json_array_append_new(paths, json_string(dir)))
        return om_errf(OM_E_OutOfMemory, "out of memory adding %s", dir);
    return 0;
}

int vss_wmd_add_exclude(json_t *comp, const char *path, const char *spec)
{
    if (!json_is_object(comp) || !path || !*path)
        return om_errf(OM_E_InvalidParameter, "adding an exclusion to a component: bad arguments");
    json_t *ex = json_object_get(comp, "excludes");
    if (!ex) {
        ex = json_array();
        json_object_set_new(comp, "excludes", ex);
    }
    json_t *e = json_pack("{s:s}", "path", path);
    if (spec) json_object_set_new(e, "spec", json_string(spec));
    if (!e || json_array_append_new(ex, e))
        return om_errf(OM_E_OutOfMemory, "out of memory adding %s", path);
    return 0;
}
