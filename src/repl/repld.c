/* ombra-repld (repld.h): the lease, the replication port, the copiers, the admin socket. */
#include "repl/repld.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
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
#include "repl/am.h"
#include "repl/copier.h"
#include "repl/ca.h"
#include "repl/dag.h"
#include "repl/floor.h"
#include "repl/replica_writer.h"
#include "repl/source.h"
#include "repl/tls.h"
#include "repl/wire.h"

#define MAX_COPIES 256

typedef struct repld {
    const rp_repld_opts *o;
    rp_dag *dag;
    rp_tls *tls;
    rp_source src;
    rp_floor *floor;           /* truncation across copies (floor.h) */
    rp_replica_writer *writer; /* the passive copies offered for backup (replica_writer.h) */
    pthread_mutex_t mu;        /* everything below */
    pthread_cond_t cv;
    int stopping, active, changed;
    gid_t group;
    int listen_fd, peer_fd;
    int64_t lease;
    int etcd_ok;
    char etcd_error[512];
    rp_copier *copies[MAX_COPIES];
    int ncopies;
    /* The databases whose copier the active manager took (an activation): reconcile leaves
     * them alone until it gives the copier back. */
    char taken[MAX_COPIES][40];
    int ntaken;
    rp_am *am;    /* the active manager (am.h) */
    int am_quiet; /* tests (OMBRA_REPL_TEST_NO_AM=1): no store deadline, no primary's acts */
    uint64_t peers_refused, peers_served;
    /* The primary active manager (pam: spec §8): the server holding the DAG's pam key, bound to
     * its alive lease; its term is the key's create revision (grows with each new primary). */
    char pam[RP_NAME_MAX + 1];
    int64_t pam_term;
} repld;

/* ---- the lease: alive/<server> ---- */

static int lease_up(repld *r)
{
    int64_t id = 0;
    int rc = etcd_lease_grant(r->dag->e, r->o->lease_s, &id);
    char key[200];
    snprintf(key, sizeof key, "alive/%s", r->o->server);
    json_t *v = json_pack("{s:i,s:I}", "pid", (int)getpid(), "since_ns", (json_int_t)om_now_ns());
    if (!rc) rc = rp_dag_put(r->dag, key, v, id);
    json_decref(v);
    if (!rc) r->lease = id;
    return rc;
}

static void etcd_state(repld *r, int rc)
{
    pthread_mutex_lock(&r->mu);
    int was = r->etcd_ok;
    r->etcd_ok = rc == 0;
    if (rc) snprintf(r->etcd_error, sizeof r->etcd_error, "%s", om_err_detail());
    pthread_mutex_unlock(&r->mu);
    if (was && rc) om_warn("etcd unreachable: %s (retrying)", om_err_detail());
    if (!was && !rc) om_info("etcd reachable again");
}

/* One round of the election of the primary active manager: the pam key is created with this
 * server's lease when no server holds it (etcd deletes it when the holder's lease lapses: its
 * ombra-repld died, paused or lost etcd), else read. Says when the primary changes. */
static void pam_round(repld *r)
{
    char key[512];
    rp_dag_key(r->dag, key, sizeof key, "pam");
    json_t *v = json_pack("{s:s,s:I}", "server", r->o->server, "since_ns", (json_int_t)om_now_ns());
    char *val = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    etcd_txn *t = val ? etcd_txn_new() : NULL;
    int won = 0, rc = t ? 0 : OM_E_OutOfMemory;
    if (!rc) {
        etcd_txn_cmp_absent(t, key);
        etcd_txn_put(t, ETCD_THEN, key, val, strlen(val), r->lease);
        etcd_txn_range(t, ETCD_THEN, key, 0);
        etcd_txn_range(t, ETCD_ELSE, key, 0);
        rc = etcd_txn_commit(r->dag->e, t, &won);
    }
    char holder[RP_NAME_MAX + 1] = "";
    int64_t term = 0;
    if (!rc) {
        const etcd_txn_result *res = etcd_txn_result_at(t, won ? 1 : 0);
        if (res && res->n) {
            json_t *h = json_loadb((const char *)res->kvs[0].val, res->kvs[0].len, 0, NULL);
            snprintf(holder, sizeof holder, "%s", om_json_str_or(h, "server", ""));
            term = res->kvs[0].create_rev;
            json_decref(h);
        }
    }
    etcd_txn_free(t);
    free(val);
    if (rc) return; /* etcd unreachable: the lease thread says so */
    pthread_mutex_lock(&r->mu);
    int changed = strcmp(holder, r->pam) || term != r->pam_term;
    snprintf(r->pam, sizeof r->pam, "%s", holder);
    r->pam_term = term;
    pthread_mutex_unlock(&r->mu);
    rp_am_set_primary(r->am, !r->am_quiet && !strcmp(holder, r->o->server), term);
    if (changed && !strcmp(holder, r->o->server))
        om_info("this server (%s) is the primary active manager of DAG %s (term %lld)",
                r->o->server, r->dag->name, (long long)term);
    else if (changed && holder[0])
        om_info("the primary active manager of DAG %s is %s (term %lld)", r->dag->name, holder,
                (long long)term);
}

/* Renews the lease every third of its time; a lapsed or unreachable lease is granted anew. */
/* Where the lease thread is (a watchdog says it when a step outlasts half the lease). */
static _Atomic(const char *) lease_stage = "start";
static _Atomic uint64_t lease_stage_ns;

static void stage(const char *what)
{
    lease_stage = what;
    lease_stage_ns = om_mono_ns();
}

static void *watchdog_main(void *arg)
{
    repld *r = arg;
    const char *told = NULL;
    for (;;) {
        struct timespec ts = {0, 250000000};
        nanosleep(&ts, NULL);
        if (__atomic_load_n(&r->stopping, __ATOMIC_RELAXED)) break; /* no lock: it may be held */
        const char *st = lease_stage;
        uint64_t at = lease_stage_ns, now = om_mono_ns();
        /* "waiting" lasts a third of the lease, the other steps a moment. */
        uint64_t limit =
            (uint64_t)r->o->lease_s * (strcmp(st, "waiting") ? 500000000ull : 600000000ull);
        if (now - at > limit && st != told) {
            om_warn("the lease thread has been in '%s' for %llu ms (the lease is %d s)", st,
                    (unsigned long long)((now - at) / 1000000), r->o->lease_s);
            told = st;
        } else if (now - at <= limit)
            told = NULL;
    }
    return NULL;
}

static void *lease_main(void *arg)
{
    repld *r = arg;
    uint64_t backoff = 100;
    for (;;) {
        stage("lock");
        pthread_mutex_lock(&r->mu);
        int stop = r->stopping;
        pthread_mutex_unlock(&r->mu);
        if (stop) break;
        int rc;
        int64_t left = 0;
        uint64_t sent = om_mono_ns();
        stage("keepalive");
        if (r->lease) {
            rc = etcd_lease_keepalive(r->dag->e, r->lease, &left);
            if (!rc && left <= 0) {
                om_warn("the lease of server %s lapsed: taking a new one", r->o->server);
                r->lease = 0;
            }
        } else
            rc = lease_up(r);
        etcd_state(r, rc);
        uint64_t kept = om_mono_ns();
        if (!rc && r->lease) {
            stage("pam");
            pam_round(r);
            stage("am");
            if (!r->am_quiet) rp_am_lease_round(r->am, r->lease, sent);
        }
        stage("waiting");
        /* A round that takes a good part of the lease puts it at risk: say where the time went. */
        uint64_t took = om_mono_ns() - sent;
        if (took > (uint64_t)r->o->lease_s * 250000000ull)
            om_warn("the lease round took %llu ms (keepalive %llu ms) of a %d s lease: etcd is "
                    "slow to answer",
                    (unsigned long long)(took / 1000000),
                    (unsigned long long)((kept - sent) / 1000000), r->o->lease_s);
        uint64_t ms = rc ? backoff : (uint64_t)r->o->lease_s * 1000 / 3;
        backoff = rc ? (backoff * 2 > 2000 ? 2000 : backoff * 2) : 100;
        struct timespec ts = om_deadline_ms(ms);
        pthread_mutex_lock(&r->mu);
        if (!r->stopping) pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

/* ---- the copiers, reconciled with the directory ---- */

static void reconcile(repld *r)
{
    json_t *dbs = NULL, *act = NULL;
    int rc = rp_dag_list(r->dag, "databases/", &dbs);
    if (!rc) rc = rp_dag_list(r->dag, "active/", &act);
    etcd_state(r, rc);
    if (rc) goto out;
    /* Stop the copiers of copies this server no longer holds as passive (the array under mu:
     * the active manager takes copiers out of it from other threads). */
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->ncopies;) {
        char id[40];
        snprintf(id, sizeof id, "%s", rp_copier_db(r->copies[i]));
        json_t *db = json_object_get(dbs, id);
        const char *active = om_json_str_or(json_object_get(act, id), "server", "");
        if (db && json_object_get(json_object_get(db, "copies"), r->o->server) &&
            strcmp(active, r->o->server)) {
            rp_copier_poke(r->copies[i]); /* its records may have changed */
            i++;
            continue;
        }
        om_info("copy of database %s: no longer a passive copy of this server", id);
        /* Out of the array under mu (status and the replica writer read it), stopped outside. */
        rp_copier *gone = r->copies[i];
        r->copies[i] = r->copies[--r->ncopies];
        pthread_mutex_unlock(&r->mu);
        rp_copier_stop(gone);
        pthread_mutex_lock(&r->mu);
        i = 0; /* the array may have changed meanwhile */
    }
    pthread_mutex_unlock(&r->mu);
    const char *id;
    json_t *db;
    json_object_foreach(dbs, id, db)
    {
        if (!json_object_get(json_object_get(db, "copies"), r->o->server)) continue;
        if (!strcmp(om_json_str_or(json_object_get(act, id), "server", ""), r->o->server)) continue;
        int have = 0;
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < r->ncopies && !have; i++)
            have = !strcmp(rp_copier_db(r->copies[i]), id);
        for (int i = 0; i < r->ntaken && !have; i++)
            have = !strcmp(r->taken[i], id);
        pthread_mutex_unlock(&r->mu);
        if (have || r->ncopies >= MAX_COPIES) continue;
        rp_copier_cfg cfg = {
            .dag = r->dag, .tls = r->tls, .server = r->o->server, .data_dir = r->o->data_dir};
        snprintf(cfg.db_id, sizeof cfg.db_id, "%s", id);
        om_info("copy of database %s (%s): starting", om_json_str_or(db, "name", "?"), id);
        rp_copier *c = NULL;
        if (rp_copier_start(&cfg, &c)) continue;
        pthread_mutex_lock(&r->mu);
        r->copies[r->ncopies++] = c;
        pthread_mutex_unlock(&r->mu);
    }
out:
    json_decref(dbs);
    json_decref(act);
}

/* The active manager's hold on a copier (am.h): out of the array, the database marked taken. */
static rp_copier *take_copier(void *ctx, const char *db_id)
{
    repld *r = ctx;
    rp_copier *c = NULL;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->ncopies && !c; i++)
        if (!strcmp(rp_copier_db(r->copies[i]), db_id) && r->ntaken < MAX_COPIES) {
            c = r->copies[i];
            r->copies[i] = r->copies[--r->ncopies];
            snprintf(r->taken[r->ntaken++], sizeof r->taken[0], "%s", db_id);
        }
    pthread_mutex_unlock(&r->mu);
    return c;
}

static int copy_status(void *ctx, const char *db_id, rp_copy_status *st)
{
    repld *r = ctx;
    int found = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->ncopies && !found; i++)
        if (!strcmp(rp_copier_db(r->copies[i]), db_id)) {
            rp_copier_status(r->copies[i], st);
            found = 1;
        }
    pthread_mutex_unlock(&r->mu);
    return found ? 0
                 : om_errf(OM_E_DatabaseNotFound, "server %s runs no copier of database %s",
                           r->o->server, db_id);
}

static void give_copier(void *ctx, const char *db_id, rp_copier *c)
{
    repld *r = ctx;
    rp_copier_stop(c);
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->ntaken; i++)
        if (!strcmp(r->taken[i], db_id)) {
            if (i != --r->ntaken) memcpy(r->taken[i], r->taken[r->ntaken], sizeof r->taken[i]);
            break;
        }
    r->changed = 1; /* reconcile: a copier again if it is still a passive copy here */
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int am_peer_op(void *ctx, rp_conn *c, json_t *req, int *rc)
{
    return rp_am_serve(ctx, c, req, rc);
}

static void on_change(void *arg, const etcd_event *ev)
{
    repld *r = arg;
    (void)ev;
    pthread_mutex_lock(&r->mu);
    r->changed = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    rp_floor_poke(r->floor);
    if (r->am) rp_am_poke(r->am);
}

/* Reconciles at every change of the directory (and every 10 s, in case a watch is between two
 * connections). */
static void *reconcile_main(void *arg)
{
    repld *r = arg;
    for (;;) {
        reconcile(r);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        pthread_mutex_lock(&r->mu);
        while (!r->stopping && !r->changed)
            if (pthread_cond_timedwait(&r->cv, &r->mu, &ts)) break;
        r->changed = 0;
        int stop = r->stopping;
        pthread_mutex_unlock(&r->mu);
        if (stop) break;
    }
    pthread_mutex_lock(&r->mu);
    int n = r->ncopies;
    r->ncopies = 0;
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n; i++)
        rp_copier_stop(r->copies[i]);
    return NULL;
}

/* The replica writer's list of copies (replica_writer.h): each copier's status. */
static int list_replicas(void *ctx, rp_replica *out, int max)
{
    repld *r = ctx;
    int n = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->ncopies && n < max; i++, n++) {
        rp_copy_status st;
        rp_copier_status(r->copies[i], &st);
        memset(&out[n], 0, sizeof out[n]);
        snprintf(out[n].db_id, sizeof out[n].db_id, "%s", rp_copier_db(r->copies[i]));
        snprintf(out[n].name, sizeof out[n].name, "%s", st.name);
        snprintf(out[n].base, sizeof out[n].base, "%s", st.base);
        snprintf(out[n].state, sizeof out[n].state, "%s", st.state);
        out[n].inspected = st.inspected;
        out[n].replayed = st.replayed;
        /* Its own folder unless its files are elsewhere (a deposed active's, in place). */
        char own[4300];
        snprintf(own, sizeof own, "%s/copies/%s/", r->o->data_dir, out[n].db_id);
        if (strncmp(st.edb, own, strlen(own))) {
            snprintf(out[n].edb, sizeof out[n].edb, "%s", st.edb);
            snprintf(out[n].logs, sizeof out[n].logs, "%s", st.logs);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* The replica writer's way to the active (replica_writer.h): the server active/<id> names, over
 * the replication port, one connection per request (a backup asks three times). */
static int ask_active(void *ctx, const char *db_id, const char *db_name, json_t *req,
                      json_t **reply)
{
    repld *r = ctx;
    json_t *act = NULL;
    rp_conn *c = NULL;
    char k[200], server[RP_NAME_MAX + 1] = "";
    *reply = NULL;
    snprintf(k, sizeof k, "active/%s", db_id);
    int rc = req ? rp_dag_get(r->dag, k, &act, NULL) : om_errf(OM_E_OutOfMemory, "request");
    snprintf(server, sizeof server, "%s", om_json_str_or(act, "server", ""));
    json_decref(act);
    if (!rc && !server[0])
        rc =
            om_errf(OM_E_DatabaseUnavailable, "database %s has no active copy in the DAG", db_name);
    if (!rc && !strcmp(server, r->o->server))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "database %s is active on this server now: its copy here is no passive one",
                     db_name);
    if (!rc) rc = rp_connect_server(r->dag, r->tls, server, 5000, &c);
    if (!rc) {
        json_object_set_new(req, "db", json_string(db_id));
        json_object_set_new(req, "name", json_string(db_name));
        rc = rp_call(c, req, 30000, reply, NULL, NULL);
        req = NULL;
    }
    json_decref(req);
    rp_close(c);
    return rc ? om_err_ctx(rc, "the active server %s", server[0] ? server : "(none)") : 0;
}

/* ---- the replication port ---- */

/* Peers served at once (connections being handshaken or served). */
#define RP_MAX_PEERS 128

typedef struct peer {
    repld *r;
    int fd;
} peer;

/* A connection accepted: the handshake (a refused peer is logged by rp_accept_fd and gets
 * nothing), then its requests. One thread each, so a slow handshake delays nobody else. */
static void *peer_main(void *arg)
{
    peer *p = arg;
    repld *r = p->r;
    rp_conn *c = NULL;
    int rc = rp_accept_fd(r->tls, p->fd, 5000, &c);
    pthread_mutex_lock(&r->mu);
    if (rc)
        r->peers_refused++;
    else
        r->peers_served++;
    pthread_mutex_unlock(&r->mu);
    if (!rc) {
        rp_source_serve(&r->src, c);
        rp_close(c);
    }
    pthread_mutex_lock(&r->mu);
    r->active--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(p);
    return NULL;
}

static void *accept_main(void *arg)
{
    repld *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int stop = r->stopping;
        int busy = r->active >= RP_MAX_PEERS;
        pthread_mutex_unlock(&r->mu);
        if (stop) break;
        struct pollfd pf = {.fd = r->peer_fd, .events = POLLIN};
        if (busy || poll(&pf, 1, 500) <= 0) {
            if (busy) usleep(50000);
            continue;
        }
        int fd = accept4(r->peer_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                usleep(100000);
            continue;
        }
        peer *p = malloc(sizeof *p);
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&r->mu);
        r->active++;
        pthread_mutex_unlock(&r->mu);
        if (!p || (*p = (peer){r, fd}, pthread_create(&th, &at, peer_main, p))) {
            free(p);
            close(fd);
            pthread_mutex_lock(&r->mu);
            r->active--;
            pthread_mutex_unlock(&r->mu);
        }
        pthread_attr_destroy(&at);
    }
    return NULL;
}

/* ---- the admin socket ---- */

static json_t *status_json(repld *r)
{
    json_t *copies = json_array();
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->ncopies; i++) {
        rp_copy_status st;
        rp_copier_status(r->copies[i], &st);
        json_array_append_new(
            copies, json_pack("{s:s,s:s,s:I,s:I,s:I,s:s}", "db", rp_copier_db(r->copies[i]),
                              "state", st.state, "copied", (json_int_t)st.copied, "inspected",
                              (json_int_t)st.inspected, "replayed", (json_int_t)st.replayed,
                              "last_error", st.last_error));
    }
    json_t *o =
        json_pack("{s:b,s:s,s:s,s:s,s:b,s:s,s:I,s:I,s:o,s:s,s:I}", "ok", 1, "server", r->o->server,
                  "dag", r->dag->name, "listen", r->o->listen, "etcd_ok", r->etcd_ok, "etcd_error",
                  r->etcd_ok ? "" : r->etcd_error, "peers_served", (json_int_t)r->peers_served,
                  "peers_refused", (json_int_t)r->peers_refused, "copies", copies, "primary",
                  r->pam, "primary_term", (json_int_t)r->pam_term);
    /* Where this server's DAG is, for `ombra restore` on a server whose store keeps a file
     * directory (docs/design.md "Restore in a DAG"). */
    json_object_set_new(o, "etcd", json_string(r->o->etcd));
    pthread_mutex_unlock(&r->mu);
    return o;
}

/* copy.activate {"db", "through_gen", "use_stream", "timeout_ms"}: the active manager's
 * am.activate asked on the admin socket (tests; root or this service's own user only). */
static json_t *activate_json(repld *r, int fd, json_t *req)
{
    if (!om_peer_is_own(fd))
        return om_proto_error(om_errf(OM_E_FileAccessDenied, "copy.activate is for root or "
                                                             "this service's own user only"));
    json_t *rep = NULL;
    int rc = rp_am_activate(r->am, req, &rep);
    return rc ? om_proto_error(rc) : rep;
}

typedef struct adm {
    repld *r;
    int fd;
} adm;

static void *adm_new(void *ctx, int fd)
{
    adm *a = malloc(sizeof *a);
    if (a) *a = (adm){ctx, fd};
    return a;
}

static void *adm_serve(void *arg)
{
    adm *a = arg;
    char who[128];
    if (om_server_admit(a->fd, a->r->group, "this replication service", who, sizeof who)) {
        for (;;) {
            json_t *req = NULL, *rep;
            uint8_t *data = NULL;
            size_t dlen = 0;
            if (om_proto_recv(a->fd, &req, &data, &dlen)) break;
            const char *op = om_json_str_or(req, "op", "");
            if (!strcmp(op, "status"))
                rep = status_json(a->r);
            else if (!strcmp(op, "copy.activate"))
                rep = activate_json(a->r, a->fd, req);
            else
                rep = om_proto_error(om_errf(OM_E_InvalidParameter, "unknown operation '%s'", op));
            int rc = om_proto_send(a->fd, rep, NULL, 0);
            json_decref(rep);
            json_decref(req);
            free(data);
            if (rc) break;
        }
    }
    close(a->fd);
    pthread_mutex_lock(&a->r->mu);
    a->r->active--;
    pthread_cond_broadcast(&a->r->cv);
    pthread_mutex_unlock(&a->r->mu);
    free(a);
    return NULL;
}

/* ---- the service ---- */

static int check_member(repld *r)
{
    json_t *srv = NULL;
    char k[128];
    snprintf(k, sizeof k, "servers/%s", r->o->server);
    int rc = rp_dag_get(r->dag, k, &srv, NULL);
    if (!rc && !srv)
        rc = om_errf(OM_E_InvalidParameter,
                     "server %s is not a member of DAG %s. HINT: ombra dag add-server %s "
                     "--address %s (on the server that keeps the DAG's certificate authority)",
                     r->o->server, r->dag->name, r->o->server, r->o->listen);
    json_decref(srv);
    return rc;
}

int rp_repld_run(const rp_repld_opts *o0)
{
    static repld st;
    repld *r = &st;
    rp_repld_opts o = *o0;
    if (o.lease_s <= 0) o.lease_s = 5;
    memset(r, 0, sizeof *r);
    r->o = &o;
    r->listen_fd = r->peer_fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    char dagdir[4200], sock[4200];
    snprintf(dagdir, sizeof dagdir, "%s/dag", o.data_dir);
    snprintf(sock, sizeof sock, "%s/repl.sock", o.runtime_dir);
    int rc = om_group_id(o.group, &r->group);
    if (!rc) rc = rp_name_check("server name", o.server);
    if (!rc) rc = rp_tls_load(dagdir, &r->tls);
    if (!rc) rc = rp_dag_open(o.etcd, o.dag, 1, &r->dag);
    if (!rc) rc = check_member(r);
    if (!rc) rc = rp_listen(o.listen, &r->peer_fd);
    if (rc) goto out;
    r->src = (rp_source){
        .dag = r->dag, .server = o.server, .store_socket = o.store_socket, .data_dir = o.data_dir};
    const char *dmg = getenv("OMBRA_REPL_TEST_DAMAGE");
    if (dmg) r->src.test_damage_gen = (uint32_t)strtoul(dmg, NULL, 10);
    const char *quiet = getenv("OMBRA_REPL_TEST_NO_AM");
    r->am_quiet = quiet && !strcmp(quiet, "1");
    const char *pause = getenv("OMBRA_REPL_TEST_SEED_PAUSE_MS");
    if (pause) r->src.test_seed_pause_ms = (uint32_t)strtoul(pause, NULL, 10);
    om_server_signals_block();
    if ((rc = om_server_listen(sock, r->group, "ombra-repld", &r->listen_fd))) goto out;
    r->etcd_ok = 1;
    etcd_watch *w1 = NULL, *w2 = NULL;
    char k1[200], k2[200];
    rp_dag_key(r->dag, k1, sizeof k1, "databases/");
    rp_dag_key(r->dag, k2, sizeof k2, "active/");
    /* Before the watches, which poke it. */
    rp_floor_cfg fc = {.dag = r->dag,
                       .server = o.server,
                       .store_socket = o.store_socket,
                       .hold_limit_s = o.hold_limit_s};
    if (!rc) rc = rp_floor_start(&fc, &r->floor);
    char vss_sock[4200];
    snprintf(vss_sock, sizeof vss_sock, "%s/vss.sock", o.runtime_dir);
    rp_replica_writer_cfg wc = {.server = o.server,
                                .data_dir = o.data_dir,
                                .vss_socket = vss_sock,
                                .list = list_replicas,
                                .ask_active = ask_active,
                                .replay_queue_limit = o.backup_replay_queue_set
                                                          ? o.backup_replay_queue
                                                          : RP_BACKUP_REPLAY_QUEUE,
                                .ctx = r};
    if (!rc) rc = rp_replica_writer_start(&wc, &r->writer);
    rp_am_cfg ac = {.dag = r->dag,
                    .tls = r->tls,
                    .server = o.server,
                    .store_socket = o.store_socket,
                    .lease_s = o.lease_s,
                    .take_copier = take_copier,
                    .give_copier = give_copier,
                    .copy_status = copy_status,
                    .ctx = r};
    if (!rc) rc = rp_am_start(&ac, &r->am);
    if (!rc) {
        r->src.peer_op = am_peer_op;
        r->src.peer_ctx = r->am;
    }
    if (!rc) rc = etcd_watch_start(r->dag->e, k1, 0, on_change, r, &w1);
    if (!rc) rc = etcd_watch_start(r->dag->e, k2, 0, on_change, r, &w2);
    pthread_t lease_th, rec_th, acc_th;
    om_stopper stopper = {.mu = &r->mu, .stopping = &r->stopping, .listen_fd = r->listen_fd};
    if (!rc) rc = om_stopper_start(&stopper);
    if (rc) {
        etcd_watch_stop(w1);
        etcd_watch_stop(w2);
        rp_am_stop(r->am);
        rp_replica_writer_stop(r->writer);
        rp_floor_stop(r->floor);
        goto out;
    }
    pthread_create(&lease_th, NULL, lease_main, r);
    pthread_t wd_th;
    pthread_create(&wd_th, NULL, watchdog_main, r);
    pthread_create(&rec_th, NULL, reconcile_main, r);
    pthread_create(&acc_th, NULL, accept_main, r);
    om_info("server %s of DAG %s: replication on %s, admin on %s", o.server, r->dag->name, o.listen,
            sock);
    char status[300];
    snprintf(status, sizeof status, "server %s of DAG %s: replication on %s", o.server,
             r->dag->name, o.listen);
    om_daemon_ready(status);
    om_server_accept(&stopper, "this replication service", &o.limits, &r->active, adm_new, r,
                     adm_serve);
    om_stopper_join(&stopper);
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    r->src.stopping = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    etcd_watch_stop(w1);
    etcd_watch_stop(w2);
    rp_replica_writer_stop(r->writer); /* its sessions aborted, copy locks released */
    pthread_join(acc_th, NULL);
    pthread_join(rec_th, NULL);
    pthread_join(lease_th, NULL);
    pthread_join(wd_th, NULL);
    rp_am_stop(r->am);       /* its activated copies given back (and stopped) */
    rp_floor_stop(r->floor); /* the store keeps the last floors until they lapse */
    if (r->lease) etcd_lease_revoke(r->dag->e, r->lease); /* the others see us gone at once */
    unlink(sock);
    /* Peers being served end with their next request (the source sees stopping). */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&r->mu);
    while (r->active > 0 && !pthread_cond_timedwait(&r->cv, &r->mu, &until)) {
    }
    pthread_mutex_unlock(&r->mu);
    om_info("stopped");
out:
    if (r->listen_fd >= 0) close(r->listen_fd);
    if (r->peer_fd >= 0) close(r->peer_fd);
    /* The DAG and TLS handles stay: detached peer threads may still hold them at exit. */
    return rc;
}
