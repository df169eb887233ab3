/* A backup run on another server of the DAG (remote_backup.h). */
#include "repl/remote_backup.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/job.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/time.h"
#include "repl/wire.h"

#define MAX_DBS      BK_MAX_DBS
#define KEEPALIVE_MS 5000
#define SILENCE_MS   60000

typedef struct run {
    bk_job_opts o;
    const char *names[MAX_DBS];
    json_t *result;
    int rc, done;
    char detail[1200];
    pthread_mutex_t mu;
    pthread_cond_t cv;
} run;

static void *run_main(void *arg)
{
    run *r = arg;
    json_t *res = NULL;
    int rc = bk_backup_run(&r->o, &res);
    pthread_mutex_lock(&r->mu);
    r->rc = rc;
    r->result = res;
    if (rc) snprintf(r->detail, sizeof r->detail, "%s", om_err_detail());
    r->done = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* A database name as the store allows it: one the job's messages (and this service's log) can
 * quote on one line, and no path. */
static int name_ok(const char *n)
{
    size_t l = n ? strlen(n) : 0;
    if (!l || l > 64 || !strcmp(n, ".") || !strcmp(n, "..")) return 0;
    for (; *n; n++)
        if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') ||
              *n == '-' || *n == '_' || *n == '.'))
            return 0;
    return 1;
}

/* The request's options, checked: one error naming the field. */
static int parse(json_t *req, run *r)
{
    json_t *dbs = json_object_get(req, "dbs");
    const char *type = om_json_str_or(req, "type", ""), *repo = om_json_str_or(req, "repo", ""),
               *prov = om_json_str_or(req, "provider", "auto");
    if (!json_is_array(dbs) || !json_array_size(dbs) || json_array_size(dbs) > MAX_DBS)
        return om_errf(OM_E_InvalidParameter, "backup.run: dbs must name 1 to %d databases",
                       MAX_DBS);
    for (size_t i = 0; i < json_array_size(dbs); i++) {
        const char *n = json_string_value(json_array_get(dbs, i));
        if (!name_ok(n))
            return om_errf(OM_E_InvalidName,
                           "backup.run: database %zu is no database name (1-64 letters, digits, "
                           "'-', '_', '.')",
                           i);
        r->names[i] = n;
    }
    if (strcmp(type, "full") && strcmp(type, "copy") && strcmp(type, "incremental") &&
        strcmp(type, "differential"))
        return om_errf(OM_E_InvalidParameter, "backup.run: type '%s'", type);
    if (repo[0] != '/')
        return om_errf(OM_E_InvalidParameter,
                       "backup.run: the repository path '%s' is not absolute", repo);
    if (strcmp(prov, "auto") && strcmp(prov, "held") && strcmp(prov, "reflink") &&
        strcmp(prov, "btrfs") && strcmp(prov, "copy"))
        return om_errf(OM_E_InvalidParameter, "backup.run: provider '%s'", prov);
    int64_t threads = om_json_int_or(req, "threads", 0);
    r->o = (bk_job_opts){.repo = repo,
                         .passphrase = json_string_value(json_object_get(req, "passphrase")),
                         .type = type,
                         .provider = prov,
                         .dbs = r->names,
                         .ndb = json_array_size(dbs),
                         .threads = threads > 0 && threads <= 64 ? (int)threads : 0,
                         .each_alone = json_is_true(json_object_get(req, "each_alone"))};
    return 0;
}

/* Only databases of the DAG that this server holds a copy of: the asker is a member of the DAG,
 * not an administrator of this server's other databases. */
static int in_dag_here(rp_dag *dag, const char *server, const run *r)
{
    for (size_t i = 0; i < r->o.ndb; i++) {
        json_t *rec = NULL;
        char id[37];
        int rc = rp_dag_find_db(dag, r->names[i], &rec, id);
        int here = !rc && json_object_get(json_object_get(rec, "copies"), server);
        json_decref(rec);
        if (rc == OM_E_DatabaseNotFound || (!rc && !here))
            return om_errf(OM_E_DatabaseNotFound,
                           "backup.run: server %s holds no copy of a database '%s' of DAG %s",
                           server, r->names[i], dag->name);
        if (rc) return rc;
    }
    return 0;
}

int rp_remote_backup_serve(rp_dag *dag, const char *server, rp_conn *c, json_t *req)
{
    run r = {.result = NULL};
    int rc = parse(req, &r);
    if (!rc) rc = in_dag_here(dag, server, &r);
    if (rc) return rp_send_error(c, rc);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    om_info("backup of %zu database%s asked by server %s (%s, into %s)", r.o.ndb,
            r.o.ndb == 1 ? "" : "s", rp_conn_peer(c), r.o.type, r.o.repo);
    uint64_t t0 = om_mono_ns();
    pthread_t th;
    if (pthread_create(&th, NULL, run_main, &r)) {
        pthread_mutex_destroy(&r.mu);
        pthread_cond_destroy(&r.cv);
        return rp_send_error(c, om_errf(OM_E_OutOfMemory, "no thread for the backup"));
    }
    int sent = 0; /* a send failed: the asker is gone; the backup ends all the same */
    pthread_mutex_lock(&r.mu);
    while (!r.done) {
        struct timespec ts = om_deadline_ms(KEEPALIVE_MS);
        pthread_cond_timedwait(&r.cv, &r.mu, &ts);
        if (r.done || sent) continue;
        pthread_mutex_unlock(&r.mu);
        sent = rp_reply(c,
                        json_pack("{s:b,s:s,s:f}", "ok", 1, "op", "backup.running", "seconds",
                                  (double)(om_mono_ns() - t0) / 1e9),
                        NULL, 0);
        pthread_mutex_lock(&r.mu);
    }
    pthread_mutex_unlock(&r.mu);
    pthread_join(th, NULL);
    if (r.rc)
        om_warn("backup asked by server %s failed: %s", rp_conn_peer(c), r.detail);
    else
        om_info("backup asked by server %s done", rp_conn_peer(c));
    if (!sent)
        sent = rp_reply(c,
                        json_pack("{s:b,s:s,s:o,s:i,s:s}", "ok", 1, "op", "backup.done", "result",
                                  r.result ? r.result : json_object(), "error", r.rc, "message",
                                  r.detail),
                        NULL, 0);
    else
        json_decref(r.result);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
    return sent;
}

int rp_remote_backup(rp_dag *dag, rp_tls *tls, const char *server, json_t *req, json_t **result)
{
    rp_conn *c = NULL;
    *result = NULL;
    int rc =
        req ? rp_connect_server(dag, tls, server, 5000, &c) : om_errf(OM_E_OutOfMemory, "request");
    if (!rc) rc = rp_send(c, req, NULL, 0);
    json_decref(req);
    while (!rc) {
        json_t *h = NULL;
        void *bulk = NULL;
        size_t n = 0;
        rc = rp_recv(c, &h, &bulk, &n, SILENCE_MS);
        free(bulk);
        if (rc) break;
        const char *op = om_json_str_or(h, "op", "");
        if (!json_is_true(json_object_get(h, "ok"))) {
            int e = (int)json_integer_value(json_object_get(h, "error"));
            rc = om_errf(e ? e : OM_E_Internal, "%s", om_json_str_or(h, "message", "?"));
        } else if (!strcmp(op, "backup.done")) {
            *result = json_incref(json_object_get(h, "result"));
            int e = (int)json_integer_value(json_object_get(h, "error"));
            if (e) om_errf(e, "%s", om_json_str_or(h, "message", "?"));
            json_decref(h);
            rp_close(c);
            return e;
        }
        json_decref(h);
    }
    rp_close(c);
    return om_err_ctx(rc, "the backup on server %s", server);
}
