/* The active manager (am.h): the lease round of every server, the primary's switchovers and
 * failovers, and the two requests it asks of other servers. */
#include "repl/am.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/time.h"
#include "store/client.h"
#include "repl/wire.h"

#define AM_MAX_DBS        256
#define AM_PENDING_S      30    /* an activated copy waits this long for the directory */
#define AM_HANDOFF_MS     10000 /* the active's store: commits in flight, dismount, close */
#define AM_CATCHUP_MS     30000 /* the target copy: the last generations, replayed */
#define AM_SALVAGE_MS     8000  /* a failover's attempt to copy what the lost server still has */
#define AM_MOUNT_MS       30000 /* the new active's store: mounted and taking commits */
#define AM_MAX_COPYQ      16    /* a switchover's target may be this many generations behind */
#define AM_FAILED_RETRY_S 10    /* a failover that could not be made is tried again after */

typedef struct owned { /* an activelease key this server wrote */
    char db[40];
    int64_t epoch;
} owned;

typedef struct pending { /* a copy activated here, waiting for the directory to name it */
    char db[40];
    rp_copier *c;
    uint64_t until;
} pending;

typedef struct track { /* the primary's view of one database */
    char db[40];
    uint64_t absent_since; /* activelease missing since (mono ns; 0: present) */
    uint64_t quiet_until;  /* after a move whose new active did not take commits in time: one
                              lease more before a failover is considered */
    uint64_t retry_at;     /* a failover that could not be made: when to try again */
    uint64_t deposed_at;   /* the failover's first step (active/<id> marked deposing) seen by
                              this primary (mono ns; 0: not yet) */
    char said[512];        /* why it could not: said once, until the reason changes */
} track;

struct rp_am {
    rp_am_cfg cfg;
    pthread_t th, renew_th;
    uint64_t renew_since;   /* the renewal's store call under way since (0: none) */
    int stale;              /* renew_watch gave the keys up while the store did not answer */
    owned snap[AM_MAX_DBS]; /* the renewal thread's keys, as of its last round */
    int nsnap;
    int posted; /* a keepalive posted for the renewal thread: */
    int64_t post_lease;
    uint64_t post_sent;
    pthread_mutex_t mu; /* the fields below */
    pthread_cond_t cv;
    int stopping, poked, primary;
    int64_t term;
    uint64_t primary_since;
    uint64_t primary_seen; /* the last lease round that found this server primary */
    pending pend[AM_MAX_DBS];
    int npend;
    /* the renewal thread's own */
    store_client *sc;
    owned own[AM_MAX_DBS];
    int nown;
    int64_t own_lease;
    int store_down;
    /* the am thread's own */
    track tr[AM_MAX_DBS];
    int ntr;
    etcd_watch *w_moves, *w_al, *w_alive;
};

int rp_am_dial_gens(const char *dial)
{
    if (!dial || !strcmp(dial, "best")) return 12;
    if (!strcmp(dial, "good")) return 6;
    if (!strcmp(dial, "lossless")) return 0;
    return -1;
}

static json_int_t jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* ---- every server: the lease round ---- */

/* activelease/<db> = {this server, epoch}, only while active/<db> names this server at that
 * epoch (in one transaction on what was read of it): a store that has not yet seen that it was
 * deposed (it was paused, its watch is behind) still says it takes commits, and its key must not
 * replace the new active's. */
static void al_put(rp_am *a, const char *db, int64_t epoch, int64_t lease)
{
    char k[200], ak[512], lk[512];
    snprintf(k, sizeof k, "active/%s", db);
    json_t *act = NULL;
    int64_t arev = 0;
    int rc = rp_dag_get(a->cfg.dag, k, &act, &arev);
    int ours = !rc && !strcmp(om_json_str_or(act, "server", ""), a->cfg.server) &&
               jint(act, "epoch") == epoch && !json_object_get(act, "deposing");
    json_decref(act);
    if (rc) {
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", db}), "activelease of database %s: %s", db,
                    om_err_detail());
        return;
    }
    if (!ours) return; /* deposed, and its store not told yet: the DAG's key is another's */
    rp_dag_key(a->cfg.dag, ak, sizeof ak, "active/%s", db);
    rp_dag_key(a->cfg.dag, lk, sizeof lk, "activelease/%s", db);
    json_t *v = json_pack("{s:s,s:I,s:I}", "server", a->cfg.server, "epoch", (json_int_t)epoch,
                          "since_ns", (json_int_t)om_now_ns());
    char *val = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    etcd_txn *t = val ? etcd_txn_new() : NULL;
    int won = 0;
    rc = t ? 0 : om_errf(OM_E_OutOfMemory, "activelease");
    if (!rc) {
        etcd_txn_cmp_mod(t, ak, ETCD_EQUAL, arev);
        etcd_txn_put(t, ETCD_THEN, lk, val, strlen(val), lease);
        rc = etcd_txn_commit(a->cfg.dag->e, t, &won);
    }
    etcd_txn_free(t);
    free(val);
    if (rc) {
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", db}), "activelease of database %s: %s", db,
                    om_err_detail());
    } else if (won) {
        int i = 0;
        while (i < a->nown && strcmp(a->own[i].db, db))
            i++;
        if (i == a->nown && a->nown < AM_MAX_DBS) a->nown++;
        if (i < a->nown) {
            snprintf(a->own[i].db, sizeof a->own[i].db, "%s", db);
            a->own[i].epoch = epoch;
        }
    }
}

/* Deletes activelease/<db> only while it is still this server's at the epoch it wrote: once
 * deposed, the key may be the new active's already (this server's ombra-repld may learn late
 * that its store stopped: it waited on a paused store). */
static void al_delete_ours(rp_am *a, const char *db, int64_t epoch)
{
    char k[200], lk[512];
    if (strlen(db) > sizeof k - sizeof "activelease/") return; /* no database has such a name */
    snprintf(k, sizeof k, "activelease/%.*s", (int)(sizeof k - sizeof "activelease/"), db);
    json_t *al = NULL;
    int64_t rev = 0;
    if (!rp_dag_get(a->cfg.dag, k, &al, &rev) && al &&
        !strcmp(om_json_str_or(al, "server", ""), a->cfg.server) && jint(al, "epoch") == epoch) {
        rp_dag_key(a->cfg.dag, lk, sizeof lk, "%s", k);
        etcd_txn *t = etcd_txn_new();
        int won = 0;
        etcd_txn_cmp_mod(t, lk, ETCD_EQUAL, rev);
        etcd_txn_delete(t, ETCD_THEN, lk, 0);
        if (etcd_txn_commit(a->cfg.dag->e, t, &won))
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", db}), "activelease of database %s: %s", db,
                        om_err_detail());
        etcd_txn_free(t);
    }
    json_decref(al);
}

static void al_drop(rp_am *a, int i, const char *why)
{
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", a->own[i].db}),
                "database %s: activelease given up (epoch %lld): %s", a->own[i].db,
                (long long)a->own[i].epoch, why);
    al_delete_ours(a, a->own[i].db, a->own[i].epoch);
    a->own[i] = a->own[--a->nown];
}

/* What the renewal thread holds, for the am thread (renew_watch). */
static void snap_own(rp_am *a)
{
    pthread_mutex_lock(&a->mu);
    a->nsnap = a->nown;
    memcpy(a->snap, a->own, (size_t)a->nown * sizeof *a->own);
    pthread_mutex_unlock(&a->mu);
}

/* What this renewal lets the store acknowledge: {id: epoch} of the databases active/<id> names
 * active on this server and does not mark "deposing", read after the keepalive. A failover's
 * first step marks its active deposing: from then on no renewal of that server lets it
 * acknowledge a commit of the database (docs/design.md "The active manager"). An unreadable
 * directory confirms nothing. */
static json_t *confirmed_here(rp_am *a)
{
    json_t *acts = NULL, *out = json_object();
    if (rp_dag_list(a->cfg.dag, "active/", &acts)) {
        om_debug("the store's commit deadline renewed for no database: %s", om_err_detail());
        return out;
    }
    const char *id;
    json_t *act;
    json_object_foreach(acts, id, act)
    {
        if (!strcmp(om_json_str_or(act, "server", ""), a->cfg.server) &&
            !json_object_get(act, "deposing"))
            json_object_set_new(out, id, json_integer(jint(act, "epoch")));
    }
    json_decref(acts);
    return out;
}

/* One renewal of the store's deadline and of the activelease keys (the renewal thread). */
static void renew(rp_am *a, int64_t lease, uint64_t sent_mono_ns)
{
    /* The store may take commits until a fifth of the lease before etcd could let it lapse
     * (counted from when the keepalive was sent: etcd renews it later than that). */
    uint64_t lease_ns = (uint64_t)a->cfg.lease_s * 1000000000ull;
    uint64_t until = sent_mono_ns + lease_ns - lease_ns / 5;
    json_t *dbs = NULL;
    pthread_mutex_lock(&a->mu);
    a->renew_since = om_mono_ns();
    pthread_mutex_unlock(&a->mu);
    json_t *confirm = confirmed_here(a);
    int rc = store_client_dag_lease(a->sc, until, confirm, &dbs);
    json_decref(confirm);
    pthread_mutex_lock(&a->mu);
    a->renew_since = 0;
    int stale = a->stale;
    a->stale = 0;
    pthread_mutex_unlock(&a->mu);
    if (stale) a->nown = 0; /* the keys went while the store did not answer: written again */
    if (rc) {
        if (!a->store_down)
            om_warn("the store does not renew its commit deadline: %s", om_err_detail());
        a->store_down = 1;
        while (a->nown)
            al_drop(a, 0, "the store cannot be reached");
        snap_own(a);
        return;
    }
    if (a->store_down) om_info("the store renews its commit deadline again");
    a->store_down = 0;
    if (lease != a->own_lease) a->nown = 0; /* keys of a lapsed lease are gone with it */
    a->own_lease = lease;
    /* Keep the keys of what the store takes commits of; drop the others. */
    for (int i = 0; i < a->nown;) {
        int keep = 0;
        size_t j;
        json_t *d;
        json_array_foreach(dbs, j, d)
        {
            if (!strcmp(om_json_str_or(d, "id", ""), a->own[i].db) &&
                json_is_true(json_object_get(d, "taking_commits")) &&
                jint(d, "epoch") == a->own[i].epoch)
                keep = 1;
        }
        if (keep)
            i++;
        else
            al_drop(a, i, "the store does not take its commits at that epoch");
    }
    size_t j;
    json_t *d;
    json_array_foreach(dbs, j, d)
    {
        if (!json_is_true(json_object_get(d, "taking_commits"))) continue;
        const char *id = om_json_str_or(d, "id", "");
        int have = 0;
        for (int i = 0; i < a->nown && !have; i++)
            have = !strcmp(a->own[i].db, id);
        if (!have && *id) al_put(a, id, jint(d, "epoch"), lease);
    }
    json_decref(dbs);
    snap_own(a);
}

/* The am thread: a store that has not answered the renewal for half a lease (paused, stuck)
 * cannot be said to take commits: the server's activelease keys go (while still its own), so
 * the primary fails the databases over; the renewal thread writes them again once the store
 * answers that it takes commits. */
static void renew_watch(rp_am *a)
{
    owned keys[AM_MAX_DBS];
    int n = 0;
    uint64_t since, now = om_mono_ns();
    pthread_mutex_lock(&a->mu);
    since = a->renew_since;
    int fire = since && !a->stale && now - since > (uint64_t)a->cfg.lease_s * 500000000ull;
    if (fire) {
        a->stale = 1;
        n = a->nsnap;
        memcpy(keys, a->snap, (size_t)n * sizeof *keys);
    }
    pthread_mutex_unlock(&a->mu);
    if (!fire) return;
    om_warn("the store has not answered the renewal of its commit deadline for %llu ms: the "
            "activelease of its %d database%s given up",
            (unsigned long long)((now - since) / 1000000), n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++)
        al_delete_ours(a, keys[i].db, keys[i].epoch);
}

/* The lease thread posts each keepalive here and goes on at once: a store that is slow to
 * answer (a dismount under way, a paused process) must never hold the server's lease back. The
 * renewal thread takes the newest one posted. */
void rp_am_lease_round(rp_am *a, int64_t lease, uint64_t sent_mono_ns)
{
    pthread_mutex_lock(&a->mu);
    a->post_lease = lease;
    a->post_sent = sent_mono_ns;
    a->posted = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void *renew_main(void *arg)
{
    rp_am *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stopping && !a->posted)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stopping) break;
        a->posted = 0;
        int64_t lease = a->post_lease;
        uint64_t sent = a->post_sent;
        pthread_mutex_unlock(&a->mu);
        renew(a, lease, sent);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- the requests between servers ---- */

static int ask(rp_am *a, const char *server, json_t *req, int timeout_ms, json_t **reply)
{
    rp_conn *c = NULL;
    *reply = NULL;
    int rc = rp_connect_server(a->cfg.dag, a->cfg.tls, server, 5000, &c);
    if (!rc) {
        rc = rp_call(c, req, timeout_ms, reply, NULL, NULL);
        req = NULL;
    }
    json_decref(req);
    rp_close(c);
    return rc ? om_err_ctx(rc, "server %s", server) : 0;
}

static int active_of(rp_am *a, const char *db, char server[RP_NAME_MAX + 1], int64_t *epoch)
{
    char k[200];
    json_t *act = NULL;
    snprintf(k, sizeof k, "active/%s", db);
    int rc = rp_dag_get(a->cfg.dag, k, &act, NULL);
    snprintf(server, RP_NAME_MAX + 1, "%s", om_json_str_or(act, "server", ""));
    *epoch = jint(act, "epoch");
    json_decref(act);
    return rc;
}

static int serve_handoff(rp_am *a, rp_conn *c, json_t *req)
{
    const char *db = om_json_str_or(req, "db", "");
    int64_t epoch = jint(req, "epoch");
    char server[RP_NAME_MAX + 1];
    int64_t cur;
    int rc = active_of(a, db, server, &cur);
    if (!rc && (strcmp(server, a->cfg.server) || cur != epoch))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "database %s: the DAG names %s active at epoch %lld, not this server (%s) at "
                     "epoch %lld",
                     db, server[0] ? server : "no server", (long long)cur, a->cfg.server,
                     (long long)epoch);
    store_client *sc = NULL;
    uint32_t last = 0;
    uint64_t refused = 0;
    if (!rc) rc = store_client_new(a->cfg.store_socket, &sc);
    if (!rc)
        rc = store_client_db_handoff(sc, db, epoch, (uint32_t)jint(req, "timeout_ms"), &last,
                                     &refused);
    store_client_free(sc);
    if (rc) return rp_send_error(c, rc);
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", db}),
                "database %s: handed off at epoch %lld, its last generation %u closed", db,
                (long long)epoch, last);
    return rp_reply(c,
                    json_pack("{s:b,s:I,s:I}", "ok", 1, "last_gen", (json_int_t)last,
                              "refused_since_ns", (json_int_t)refused),
                    NULL, 0);
}

int rp_am_activate(rp_am *a, json_t *req, json_t **reply)
{
    const char *db = om_json_str_or(req, "db", "");
    char server[RP_NAME_MAX + 1];
    int64_t cur;
    *reply = NULL;
    int rc = active_of(a, db, server, &cur);
    if (!rc && !strcmp(server, a->cfg.server))
        rc = om_errf(OM_E_DatabaseUnavailable, "database %s is active on this server (%s) already",
                     db, a->cfg.server);
    pthread_mutex_lock(&a->mu);
    for (int i = 0; !rc && i < a->npend; i++)
        if (!strcmp(a->pend[i].db, db))
            rc = om_errf(OM_E_DatabaseInUse,
                         "the copy of database %s here is activated already (waiting to be named "
                         "active)",
                         db);
    int full = a->npend >= AM_MAX_DBS;
    pthread_mutex_unlock(&a->mu);
    if (!rc && full) rc = om_errf(OM_E_OutOfMemory, "too many copies being activated");
    rp_copier *cp = rc ? NULL : a->cfg.take_copier(a->cfg.ctx, db);
    if (!rc && !cp)
        rc = om_errf(OM_E_DatabaseNotFound, "server %s runs no copier of database %s",
                     a->cfg.server, db);
    rp_activate_result res = {0};
    json_t *tg = json_object_get(req, "timeout_ms");
    if (!rc)
        rc = rp_copier_activate(cp, (uint32_t)jint(req, "through_gen"),
                                json_is_true(json_object_get(req, "use_stream")),
                                tg ? (uint32_t)json_integer_value(tg) : 10000, &res);
    if (rc) {
        if (cp) a->cfg.give_copier(a->cfg.ctx, db, cp);
        return rc;
    }
    rp_copy_status st;
    rp_copier_status(cp, &st);
    pthread_mutex_lock(&a->mu);
    pending *p = &a->pend[a->npend++];
    snprintf(p->db, sizeof p->db, "%s", db);
    p->c = cp;
    p->until = om_mono_ns() + AM_PENDING_S * 1000000000ull;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", st.name[0] ? st.name : db}),
                "copy of %s activated: it holds generations through %u%s",
                st.name[0] ? st.name : db, res.last_gen,
                res.used_stream ? " and the streamed part of the next" : "");
    *reply = json_pack("{s:b,s:I,s:b,s:I,s:s,s:s}", "ok", 1, "last_gen", (json_int_t)res.last_gen,
                       "used_stream", res.used_stream, "lost_from", (json_int_t)res.lost_from,
                       "edb", st.edb, "logs", st.logs);
    return *reply ? 0 : om_errf(OM_E_OutOfMemory, "reply");
}

static int serve_activate(rp_am *a, rp_conn *c, json_t *req)
{
    json_t *rep = NULL;
    int rc = rp_am_activate(a, req, &rep);
    return rc ? rp_send_error(c, rc) : rp_reply(c, rep, NULL, 0);
}

/* Gives the activated copy of db back to copying (index i of pend, mu held; let go inside). */
static void resume_locked(rp_am *a, int i, const char *why)
{
    pending p = a->pend[i];
    a->pend[i] = a->pend[--a->npend];
    pthread_mutex_unlock(&a->mu);
    if (why)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", p.db}), "copy of database %s: %s", p.db, why);
    a->cfg.give_copier(a->cfg.ctx, p.db, p.c);
    pthread_mutex_lock(&a->mu);
}

static int serve_resume(rp_am *a, rp_conn *c, json_t *req)
{
    const char *db = om_json_str_or(req, "db", "");
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->npend; i++)
        if (!strcmp(a->pend[i].db, db)) {
            resume_locked(a, i, "activation called off: copying again");
            break;
        }
    pthread_mutex_unlock(&a->mu);
    return rp_reply(c, NULL, NULL, 0);
}

/* am.position {"db"}: how far this server's copy is now (a failover's choice among copies:
 * the rows in etcd may be a round old, and with --sync-copies the one holding the last
 * acknowledged commit must be chosen), and whether this server's store answers now
 * ("store_up": a switchover's target must be able to mount; asked of the store, not of the last
 * lease round, which may be most of a third of a lease old). */
static int serve_position(rp_am *a, rp_conn *c, json_t *req)
{
    rp_copy_status st;
    int rc = a->cfg.copy_status(a->cfg.ctx, om_json_str_or(req, "db", ""), &st);
    if (rc) return rp_send_error(c, rc);
    store_client *sc = NULL;
    json_t *dbs = NULL;
    /* A deadline long past: the store renews nothing and lists its databases. */
    int up =
        !store_client_new(a->cfg.store_socket, &sc) && !store_client_dag_lease(sc, 1, NULL, &dbs);
    json_decref(dbs);
    store_client_free(sc);
    return rp_reply(c,
                    json_pack("{s:b,s:s,s:I,s:I,s:I,s:I,s:I,s:b}", "ok", 1, "state", st.state,
                              "copied", (json_int_t)st.copied, "replayed", (json_int_t)st.replayed,
                              "generated", (json_int_t)st.generated, "streamed_gen",
                              (json_int_t)st.streamed_gen, "streamed_len",
                              (json_int_t)st.streamed_len, "store_up", up),
                    NULL, 0);
}

/* The requests that change who takes commits come from the primary active manager only (the
 * holder of the pam key now): another member's certificate is a DAG server's, not the
 * primary's, and a handoff it asked would dismount the active database. */
static int from_primary(rp_am *a, rp_conn *c, const char *op)
{
    json_t *pam = NULL;
    int rc = rp_dag_get(a->cfg.dag, "pam", &pam, NULL);
    const char *holder = om_json_str_or(pam, "server", ""), *peer = rp_conn_peer(c);
    if (!rc && (!*holder || strcmp(holder, peer)))
        rc = om_errf(OM_E_FileAccessDenied,
                     "%s refused: server %s is not the primary active manager of DAG %s (%s is)",
                     op, peer, a->cfg.dag->name, *holder ? holder : "none");
    json_decref(pam);
    return rc;
}

int rp_am_serve(rp_am *a, rp_conn *c, json_t *req, int *rc)
{
    const char *op = om_json_str_or(req, "op", "");
    if ((!strcmp(op, "am.handoff") || !strcmp(op, "am.activate") || !strcmp(op, "am.resume")) &&
        (*rc = from_primary(a, c, op))) {
        om_warn("peer %s: %s", rp_conn_peer(c), om_err_detail());
        *rc = rp_send_error(c, *rc);
        return 1;
    }
    if (!strcmp(op, "am.position"))
        *rc = serve_position(a, c, req);
    else if (!strcmp(op, "am.handoff"))
        *rc = serve_handoff(a, c, req);
    else if (!strcmp(op, "am.activate"))
        *rc = serve_activate(a, c, req);
    else if (!strcmp(op, "am.resume"))
        *rc = serve_resume(a, c, req);
    else
        return 0;
    return 1;
}

/* The activated copies: the directory named this server (the copy is the store's now), or it
 * did not in time (copying again). */
static void pending_round(rp_am *a)
{
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->npend;) {
        char db[40], server[RP_NAME_MAX + 1] = "";
        int64_t epoch;
        snprintf(db, sizeof db, "%s", a->pend[i].db);
        pthread_mutex_unlock(&a->mu);
        int rc = active_of(a, db, server, &epoch);
        pthread_mutex_lock(&a->mu);
        if (i >= a->npend || strcmp(a->pend[i].db, db)) continue; /* resumed meanwhile */
        if (!rc && !strcmp(server, a->cfg.server))
            resume_locked(a, i, NULL); /* stopped: repld runs no copier of an active copy */
        else if (om_mono_ns() > a->pend[i].until)
            resume_locked(a, i, "activated, but not named active in time: copying again");
        else
            i++;
    }
    pthread_mutex_unlock(&a->mu);
}

/* ---- the primary ---- */

static track *track_of(rp_am *a, const char *db)
{
    for (int i = 0; i < a->ntr; i++)
        if (!strcmp(a->tr[i].db, db)) return &a->tr[i];
    if (a->ntr >= AM_MAX_DBS) return NULL;
    track *t = &a->tr[a->ntr++];
    memset(t, 0, sizeof *t);
    snprintf(t->db, sizeof t->db, "%s", db);
    return t;
}

/* What the primary read of the directory for one round. */
typedef struct view {
    json_t *dbs, *act, *al, *moves, *alive, *rows;
} view;

static void view_free(view *v)
{
    json_decref(v->dbs);
    json_decref(v->act);
    json_decref(v->al);
    json_decref(v->moves);
    json_decref(v->alive);
    json_decref(v->rows);
}

static int view_read(rp_am *a, view *v)
{
    memset(v, 0, sizeof *v);
    int rc = rp_dag_list(a->cfg.dag, "databases/", &v->dbs);
    if (!rc) rc = rp_dag_list(a->cfg.dag, "active/", &v->act);
    if (!rc) rc = rp_dag_list(a->cfg.dag, "activelease/", &v->al);
    if (!rc) rc = rp_dag_list(a->cfg.dag, "moves/", &v->moves);
    if (!rc) rc = rp_dag_list(a->cfg.dag, "alive/", &v->alive);
    if (!rc) rc = rp_dag_list(a->cfg.dag, "copies/", &v->rows);
    return rc;
}

static json_t *row_of(view *v, const char *db, const char *server)
{
    char k[200];
    snprintf(k, sizeof k, "%s/%s", db, server);
    return json_object_get(v->rows, k);
}

/* The newest generation the active wrote, as far as the directory knows: its own row, or what
 * a copy got of it. */
static uint32_t generated_of(view *v, const char *db, json_t *rec, const char *active)
{
    uint32_t g = (uint32_t)jint(row_of(v, db, active), "generated");
    const char *s;
    json_t *cp;
    json_object_foreach(json_object_get(rec, "copies"), s, cp)
    {
        json_t *row = row_of(v, db, s);
        uint32_t c = (uint32_t)jint(row, "copied");
        if (c > g) g = c;
    }
    return g;
}

typedef struct cand {
    char server[RP_NAME_MAX + 1];
    int over_dial;
    int no_store; /* failover: its store did not answer (it could not mount): last */
    uint32_t copyq, replayq, copied;
    uint64_t held; /* failover: how much of the log it holds, asked now (gen << 32 | stream) */
    int64_t pref;
} cand;

static int cand_cmp(const void *x, const void *y)
{
    const cand *p = x, *q = y;
    if (p->no_store != q->no_store) return p->no_store - q->no_store;
    if (p->over_dial != q->over_dial) return p->over_dial - q->over_dial;
    if (p->held != q->held) return p->held > q->held ? -1 : 1;
    if (p->copyq != q->copyq) return p->copyq < q->copyq ? -1 : 1;
    if (p->replayq != q->replayq) return p->replayq < q->replayq ? -1 : 1;
    if (p->pref != q->pref) return p->pref < q->pref ? -1 : 1;
    return strcmp(p->server, q->server);
}

/* The copies that could become active, best first (healthy only: a switchover). */
static int candidates(view *v, const char *db, json_t *rec, const char *active, int dial,
                      int healthy_only, cand *out, int max)
{
    uint32_t gen = generated_of(v, db, rec, active);
    int n = 0;
    const char *s;
    json_t *cp;
    json_object_foreach(json_object_get(rec, "copies"), s, cp)
    {
        if (!strcmp(s, active) || n >= max) continue;
        if (json_is_true(json_object_get(cp, "suspended"))) continue;
        if (!json_object_get(v->alive, s)) continue;
        json_t *row = row_of(v, db, s);
        const char *state = om_json_str_or(row, "state", "");
        if (healthy_only ? strcmp(state, "Healthy")
                         : (strcmp(state, "Healthy") && strcmp(state, "Disconnected")))
            continue;
        cand *c = &out[n++];
        snprintf(c->server, sizeof c->server, "%s", s);
        c->copied = (uint32_t)jint(row, "copied");
        c->held = 0; /* asked at a failover (a switchover's target is named) */
        c->no_store = 0;
        c->copyq = gen > c->copied ? gen - c->copied : 0;
        uint32_t insp = (uint32_t)jint(row, "inspected"), rep = (uint32_t)jint(row, "replayed");
        c->replayq = insp > rep ? insp - rep : 0;
        c->over_dial = (int)c->copyq > dial;
        c->pref = json_object_get(cp, "preference") ? jint(cp, "preference") : 1000;
    }
    qsort(out, (size_t)n, sizeof *out, cand_cmp);
    return n;
}

static void lastmove_put(rp_am *a, const char *db, json_t *lm)
{
    char k[200];
    snprintf(k, sizeof k, "lastmove/%s", db);
    if (rp_dag_put(a->cfg.dag, k, lm, 0))
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", db}), "lastmove of %s: %s", db,
                    om_err_detail());
}

/* Names server active (epoch + 1) in one transaction that compares what was read of active/<db>
 * and databases/<db>; the record gets the new active copy's files (edb, logs: "" keeps the
 * record's) and lm goes to lastmove/<db>; moves/<db> is deleted (switchover). *won 0: another
 * writer came between (nothing written). */
static int name_active(rp_am *a, const char *db, const char *server, int64_t epoch,
                       uint32_t since_gen, const char *why, const char *edb, const char *logs,
                       json_t *lm, int *won)
{
    char ak[512], dk[512], lk[512], mk[512], s_act[200], s_db[200];
    snprintf(s_act, sizeof s_act, "active/%s", db);
    snprintf(s_db, sizeof s_db, "databases/%s", db);
    rp_dag_key(a->cfg.dag, ak, sizeof ak, "%s", s_act);
    rp_dag_key(a->cfg.dag, dk, sizeof dk, "%s", s_db);
    rp_dag_key(a->cfg.dag, lk, sizeof lk, "lastmove/%s", db);
    rp_dag_key(a->cfg.dag, mk, sizeof mk, "moves/%s", db);
    json_t *act = NULL, *rec = NULL;
    int64_t arev = 0, drev = 0;
    *won = 0;
    int rc = rp_dag_get(a->cfg.dag, s_act, &act, &arev);
    if (!rc) rc = rp_dag_get(a->cfg.dag, s_db, &rec, &drev);
    if (!rc && (!act || !rec || jint(act, "epoch") != epoch)) {
        json_decref(act);
        json_decref(rec);
        return 0; /* changed since it was read: not ours to decide now */
    }
    if (rc) return rc;
    json_t *cp = json_object_get(json_object_get(rec, "copies"), server);
    if (!cp) {
        json_decref(act);
        json_decref(rec);
        return om_errf(OM_E_DatabaseNotFound, "database %s has no copy on server %s any more", db,
                       server);
    }
    if (edb && *edb) json_object_set_new(cp, "edb", json_string(edb));
    if (logs && *logs) json_object_set_new(cp, "logs", json_string(logs));
    json_object_set_new(cp, "mounted", json_true());
    json_t *na = json_pack("{s:s,s:I,s:I,s:I,s:s}", "server", server, "epoch",
                           (json_int_t)(epoch + 1), "since_gen", (json_int_t)since_gen, "since_ns",
                           (json_int_t)om_now_ns(), "why", why);
    json_object_set_new(lm, "epoch", json_integer(epoch + 1));
    json_object_set_new(lm, "since_gen", json_integer(since_gen));
    char *va = json_dumps(na, JSON_COMPACT), *vd = json_dumps(rec, JSON_COMPACT),
         *vl = json_dumps(lm, JSON_COMPACT);
    etcd_txn *t = va && vd && vl ? etcd_txn_new() : NULL;
    if (!t) rc = om_errf(OM_E_OutOfMemory, "transaction");
    if (!rc) {
        etcd_txn_cmp_mod(t, ak, ETCD_EQUAL, arev);
        etcd_txn_cmp_mod(t, dk, ETCD_EQUAL, drev);
        etcd_txn_put(t, ETCD_THEN, ak, va, strlen(va), 0);
        etcd_txn_put(t, ETCD_THEN, dk, vd, strlen(vd), 0);
        etcd_txn_put(t, ETCD_THEN, lk, vl, strlen(vl), 0);
        etcd_txn_delete(t, ETCD_THEN, mk, 0);
        rc = etcd_txn_commit(a->cfg.dag->e, t, won);
    }
    etcd_txn_free(t);
    free(va);
    free(vd);
    free(vl);
    json_decref(na);
    json_decref(act);
    json_decref(rec);
    if (!rc && *won)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", db}),
                    "database %s: %s is the active copy now (epoch %lld, from generation %u): %s",
                    db, server, (long long)(epoch + 1), since_gen, why);
    return rc;
}

/* Waits until server's store takes commits of db at epoch (its activelease): 0, or TimedOut. */
static int wait_taking(rp_am *a, const char *db, const char *server, int64_t epoch, int ms)
{
    char k[200];
    snprintf(k, sizeof k, "activelease/%s", db);
    uint64_t end = om_mono_ns() + (uint64_t)ms * 1000000ull;
    for (;;) {
        json_t *al = NULL;
        int rc = rp_dag_get(a->cfg.dag, k, &al, NULL);
        int ok =
            !rc && !strcmp(om_json_str_or(al, "server", ""), server) && jint(al, "epoch") == epoch;
        json_decref(al);
        if (ok) return 0;
        if (om_mono_ns() > end)
            return om_errf(OM_E_DatabaseUnavailable,
                           "database %s: the store of server %s did not take commits at epoch "
                           "%lld within %d ms",
                           db, server, (long long)epoch, ms);
        pthread_mutex_lock(&a->mu);
        int stop = a->stopping;
        pthread_mutex_unlock(&a->mu);
        if (stop) return om_errf(OM_E_DatabaseUnavailable, "stopping");
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
}

static void resume_remote(rp_am *a, const char *server, const char *db)
{
    json_t *rep = NULL;
    if (!ask(a, server, json_pack("{s:s,s:s}", "op", "am.resume", "db", db), 5000, &rep))
        json_decref(rep);
}

static json_t *lastmove_new(const char *kind, const char *from, const char *to, const char *why)
{
    return json_pack("{s:s,s:s,s:s,s:I,s:s}", "kind", kind, "from", from, "to", to, "when_ns",
                     (json_int_t)om_now_ns(), "why", why);
}

/* ombra db move: moves/<db> = {"to", "request"} ("to" "": the best healthy copy). */
static void switchover(rp_am *a, view *v, const char *db, json_t *rec, json_t *mv)
{
    json_t *act = json_object_get(v->act, db);
    const char *from = om_json_str_or(act, "server", "");
    int64_t epoch = jint(act, "epoch");
    const char *name = om_json_str_or(rec, "name", db);
    char to[RP_NAME_MAX + 1];
    snprintf(to, sizeof to, "%s", om_json_str_or(mv, "to", ""));
    json_t *lm = lastmove_new("switchover", from, to, "asked: ombra db move");
    json_object_set_new(lm, "request", json_string(om_json_str_or(mv, "request", "")));
    uint64_t t0 = om_mono_ns();
    int rc = 0;
    cand cs[32];
    int n = candidates(v, db, rec, from, 1 << 30, 1, cs, 32);
    if (!to[0] && n) snprintf(to, sizeof to, "%s", cs[0].server);
    const cand *c = NULL;
    for (int i = 0; i < n; i++)
        if (!strcmp(cs[i].server, to)) c = &cs[i];
    json_t *tocp = json_object_get(json_object_get(rec, "copies"), to);
    json_object_set_new(lm, "to", json_string(to));
    if (!to[0])
        rc = om_errf(OM_E_DatabaseUnavailable, "database %s has no healthy passive copy to move to",
                     name);
    else if (!strcmp(to, from))
        rc = om_errf(OM_E_InvalidParameter, "database %s is active on %s already", name, to);
    else if (!tocp)
        rc = om_errf(OM_E_DatabaseNotFound, "database %s has no copy on server %s", name, to);
    else if (!json_is_true(
                 json_object_get(json_object_get(json_object_get(rec, "copies"), from), "mounted")))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "database %s is dismounted on %s: mount it before moving it", name, from);
    else if (!c)
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "the copy of %s on %s is not Healthy (%s) or its server is down: only a "
                     "healthy copy becomes active in a switchover",
                     name, to, om_json_str_or(row_of(v, db, to), "state", "no status"));
    else if (c->copyq > AM_MAX_COPYQ)
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "the copy of %s on %s is %u generations behind (at most %d for a switchover: "
                     "mail would wait that long)",
                     name, to, c->copyq, AM_MAX_COPYQ);
    json_t *rep = NULL;
    uint32_t last = 0;
    uint64_t refused = 0;
    /* The target must answer and its store be there to mount it: asked before anything is
     * handed off (its copy row is kept by ombra-repld, which runs without the store; a paused
     * ombra-repld still holds its lease for a while). */
    if (!rc && ask(a, to, json_pack("{s:s,s:s}", "op", "am.position", "db", db), 5000, &rep))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "the replication service of server %s does not answer (%s): nothing was "
                     "handed off",
                     to, om_err_detail());
    else if (!rc && json_is_false(json_object_get(rep, "store_up")))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "the store of server %s is not running (its ombra-repld cannot reach it): "
                     "it could not mount %s. HINT: start ombra-store on %s, then move again",
                     to, name, to);
    json_decref(rep);
    rep = NULL;
    if (!rc) {
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", name}),
                    "database %s: switchover from %s to %s (epoch %lld)", name, from, to,
                    (long long)epoch);
        rc = ask(a, from,
                 json_pack("{s:s,s:s,s:I,s:i}", "op", "am.handoff", "db", db, "epoch",
                           (json_int_t)epoch, "timeout_ms", AM_HANDOFF_MS),
                 AM_HANDOFF_MS + 5000, &rep);
        last = (uint32_t)jint(rep, "last_gen");
        refused = (uint64_t)jint(rep, "refused_since_ns");
        json_decref(rep);
        rep = NULL;
        if (!rc && !last)
            rc = om_errf(OM_E_DatabaseUnavailable, "the handoff of %s closed no generation", name);
    }
    int handed = !rc;
    if (!rc) {
        rc = ask(a, to,
                 json_pack("{s:s,s:s,s:I,s:b,s:i}", "op", "am.activate", "db", db, "through_gen",
                           (json_int_t)last, "use_stream", 0, "timeout_ms", AM_CATCHUP_MS),
                 AM_CATCHUP_MS + 5000, &rep);
        if (!rc && (uint32_t)jint(rep, "last_gen") < last) {
            rc = om_errf(OM_E_DatabaseUnavailable,
                         "the copy of %s on %s holds generations through %u, not the %u handed "
                         "off",
                         name, to, (uint32_t)jint(rep, "last_gen"), last);
            resume_remote(a, to, db);
        }
    }
    int won = 0;
    if (!rc) {
        rc = name_active(a, db, to, epoch, last + 1, "switchover", om_json_str_or(rep, "edb", ""),
                         om_json_str_or(rep, "logs", ""), lm, &won);
        if (!rc && !won) {
            rc = om_errf(OM_E_WriteConflict, "active/%s changed during the switchover", db);
            resume_remote(a, to, db);
        }
    }
    json_decref(rep);
    if (!rc) {
        rc = wait_taking(a, db, to, epoch + 1, AM_MOUNT_MS);
        uint64_t now = om_now_ns();
        json_object_set_new(lm, "took_ms",
                            json_integer((json_int_t)((om_mono_ns() - t0) / 1000000)));
        if (refused && now > refused)
            json_object_set_new(lm, "refused_ms",
                                json_integer((json_int_t)((now - refused) / 1000000)));
        if (rc) json_object_set_new(lm, "error", json_string(om_err_detail()));
        json_object_set_new(lm, "ok", json_boolean(!rc));
        lastmove_put(a, db, lm);
        track *t = track_of(a, db);
        /* The new active took commits (its activelease is there): watched as any other from
         * now on; one that did not gets one lease more before a failover is considered. */
        if (t) {
            t->absent_since = 0;
            t->deposed_at = 0;
            t->quiet_until = rc ? om_mono_ns() + (uint64_t)a->cfg.lease_s * 1000000000ull : 0;
        }
        json_decref(lm);
        return;
    }
    /* Refused or failed: the old active takes commits again. After a handoff its store waits
     * for a greater epoch naming it. */
    char err[600];
    snprintf(err, sizeof err, "%s", om_err_detail());
    om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}), "database %s: switchover to %s failed: %s",
                name, to, err);
    json_object_set_new(lm, "error", json_string(err));
    json_object_set_new(lm, "ok", json_false());
    json_object_set_new(lm, "took_ms", json_integer((json_int_t)((om_mono_ns() - t0) / 1000000)));
    if (handed) {
        json_object_set_new(lm, "to", json_string(from));
        rc = name_active(a, db, from, epoch, last + 1, "switchover failed: the active again", "",
                         "", lm, &won);
    } else { /* the answer first: ombra db move takes the intent gone with no answer of its
                  own for a move overtaken by a failover */
        char mk[200];
        snprintf(mk, sizeof mk, "moves/%s", db);
        lastmove_put(a, db, lm);
        rp_dag_delete(a->cfg.dag, mk, 0);
    }
    json_decref(lm);
}

/* Marks active/<db> (naming from at epoch) deposing, or unmarks it (on 0), in one transaction on
 * what was read: *won 0 when it names another server or epoch now (nothing written). */
static int mark_deposing(rp_am *a, const char *db, const char *from, int64_t epoch, int on,
                         int *won)
{
    char k[200], ak[512];
    snprintf(k, sizeof k, "active/%s", db);
    rp_dag_key(a->cfg.dag, ak, sizeof ak, "%s", k);
    json_t *act = NULL;
    int64_t rev = 0;
    *won = 0;
    int rc = rp_dag_get(a->cfg.dag, k, &act, &rev);
    if (rc || !act || strcmp(om_json_str_or(act, "server", ""), from) ||
        jint(act, "epoch") != epoch || !json_object_get(act, "deposing") == !on) {
        json_decref(act);
        return rc;
    }
    if (on)
        json_object_set_new(
            act, "deposing",
            json_pack("{s:I,s:s}", "since_ns", (json_int_t)om_now_ns(), "by", a->cfg.server));
    else
        json_object_del(act, "deposing");
    char *val = json_dumps(act, JSON_COMPACT);
    etcd_txn *t = val ? etcd_txn_new() : NULL;
    rc = t ? 0 : om_errf(OM_E_OutOfMemory, "active/%s", db);
    if (!rc) {
        etcd_txn_cmp_mod(t, ak, ETCD_EQUAL, rev);
        etcd_txn_put(t, ETCD_THEN, ak, val, strlen(val), 0);
        rc = etcd_txn_commit(a->cfg.dag->e, t, won);
    }
    etcd_txn_free(t);
    free(val);
    json_decref(act);
    return rc;
}

/* A failover that cannot be made now: tried again in retry_s seconds; said (log line and
   lastmove/<id>) once, until the reason changes. An active whose server is alive again is no
   longer deposed meanwhile (it takes commits again once its store does: a short partition with
   no copy to fail over to costs no more than the partition). */
static void failover_refused(rp_am *a, view *v, track *t, const char *db, const char *name,
                             const char *from, int64_t epoch, const char *why, const char *err,
                             int retry_s)
{
    t->retry_at = om_mono_ns() + (uint64_t)retry_s * 1000000000ull;
    int won = 0;
    if (json_object_get(v->alive, from) && !mark_deposing(a, db, from, epoch, 0, &won) && won) {
        if (strncmp(t->said, err, sizeof t->said - 1))
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", name}),
                        "database %s: %s is alive: no longer deposed while no copy can take over",
                        name, from);
        t->deposed_at = 0;
    }
    if (!strncmp(t->said, err, sizeof t->said - 1)) {
        om_debug("database %s: still no failover: %s", name, err);
        return;
    }
    om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}),
                "database %s: no failover: %s (tried again every %d s; said again when the reason "
                "changes)",
                name, err, retry_s);
    snprintf(t->said, sizeof t->said, "%.511s", err);
    json_t *lm = lastmove_new("failover", from, "", why);
    json_object_set_new(lm, "error", json_string(err));
    json_object_set_new(lm, "ok", json_false());
    lastmove_put(a, db, lm);
    json_decref(lm);
}

static void failover(rp_am *a, view *v, const char *db, json_t *rec, track *t)
{
    json_t *act = json_object_get(v->act, db);
    const char *from = om_json_str_or(act, "server", "");
    int64_t epoch = jint(act, "epoch");
    const char *name = om_json_str_or(rec, "name", db);
    const char *dial_s = om_json_str_or(rec, "mount_dial", "best");
    int dial = rp_am_dial_gens(dial_s);
    if (dial < 0) dial = 12;
    int sync = (int)jint(rec, "sync_copies");
    char why[300];
    snprintf(why, sizeof why, "%s",
             json_object_get(v->alive, from) ? "its store stopped taking commits"
                                             : "its server's lease lapsed");
    /* First the active is deposed (active/<id> marked, same epoch): no renewal of its server
     * lets its store acknowledge a commit of the database from then on, and one lease later
     * every renewal granted before has run out. Only then are the copies' positions read: an
     * active coming back meanwhile (its link up again, its store resumed) cannot acknowledge a
     * commit the chosen copy lacks. */
    uint64_t now = om_mono_ns(), lease_ns = (uint64_t)a->cfg.lease_s * 1000000000ull;
    if (!json_object_get(act, "deposing")) {
        int won = 0;
        if (mark_deposing(a, db, from, epoch, 1, &won)) {
            om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}),
                        "database %s: the failover cannot depose %s: %s", name, from,
                        om_err_detail());
            t->retry_at = now + 1000000000ull;
            return;
        }
        if (won && !t->said[0]) /* said once, not at each attempt while it cannot be made */
            om_log_with(OM_INFO, OM_FIELDS({"DATABASE", name}),
                        "database %s: failover from %s (epoch %lld): deposed; the copies are asked "
                        "in %d s",
                        name, from, (long long)epoch, a->cfg.lease_s);
        t->deposed_at = now;
        t->retry_at = now + lease_ns;
        return;
    }
    if (!t->deposed_at) t->deposed_at = now; /* marked by another primary: a lease from now */
    if (now - t->deposed_at < lease_ns) {
        t->retry_at = t->deposed_at + lease_ns;
        return;
    }
    uint32_t gen = generated_of(v, db, rec, from);
    cand cs[32];
    int n = candidates(v, db, rec, from, dial, 0, cs, 32);
    /* Each candidate's position now: the one that holds the most of the log first (with
     * --sync-copies, the one holding the last acknowledged commit). One that does not answer
     * keeps its row's and goes after those that do. */
    int answered = 0;
    for (int i = 0; i < n; i++) {
        json_t *rep = NULL;
        if (ask(a, cs[i].server, json_pack("{s:s,s:s}", "op", "am.position", "db", db), 3000, &rep))
            continue;
        answered++;
        /* The newest generation a copy saw the active write (the active's own row may be rounds
         * old): the generations lost are counted from there. */
        uint32_t seen = (uint32_t)jint(rep, "generated");
        if (seen > gen) gen = seen;
        uint32_t copied = (uint32_t)jint(rep, "copied"), sg = (uint32_t)jint(rep, "streamed_gen");
        uint32_t sl = (uint32_t)jint(rep, "streamed_len");
        /* Generation copied whole, then the bytes of the next one streamed: a copy holding
         * generation g whole holds more than one holding g - 1 and part of g. */
        cs[i].held = ((uint64_t)copied + 1) << 32 | (sg == copied + 1 ? sl : 0);
        cs[i].copyq = gen > copied ? gen - copied : 0;
        cs[i].over_dial = (int)cs[i].copyq > dial;
        cs[i].no_store = json_is_false(json_object_get(rep, "store_up"));
        json_decref(rep);
    }
    qsort(cs, (size_t)n, sizeof *cs, cand_cmp);
    /* The most of the log any copy holds: with --sync-copies, only a copy holding that much is
     * known to hold every acknowledged commit (one holding more may be passed over: its store
     * is down, its activation failed). */
    uint64_t top = 0;
    for (int i = 0; i < n; i++)
        if (cs[i].held > top) top = cs[i].held;
    /* With --sync-copies N, each acknowledged commit is on N of the k passive copies: only
     * positions heard from k - N + 1 of them are sure to include one that holds the last
     * acknowledged commit. Fewer answer (servers down, paused): no failover yet. */
    int k = 0;
    const char *cs_name;
    json_t *cs_cfg;
    json_object_foreach(json_object_get(rec, "copies"), cs_name, cs_cfg) k +=
        strcmp(cs_name, from) && !json_is_true(json_object_get(cs_cfg, "suspended"));
    int need = sync > 0 ? k - sync + 1 : 0;
    if (sync > 0 && answered < need) {
        char err[600];
        snprintf(err, sizeof err,
                 "with --sync-copies %d a failover must hear from %d of the %d passive copies to "
                 "be sure it loses nothing acknowledged; %d answer%s. HINT: bring the copies' "
                 "servers back, or accept a loss with ombra db set %s --sync-copies 0",
                 sync, need, k, answered, answered == 1 ? "s" : "", name);
        failover_refused(a, v, t, db, name, from, epoch, why, err, 1); /* asked again each second */
        return;
    }
    /* Tried again every AM_FAILED_RETRY_S while no copy can be mounted: said the first time. */
    if (!t->said[0])
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}),
                    "database %s: the active copy on %s is lost (%s): failover among %d cop%s",
                    name, from, why, n, n == 1 ? "y" : "ies");
    char err[4000] = "";
    for (int i = 0; i < n; i++) {
        json_t *rep = NULL;
        if (sync > 0 && cs[i].held < top) {
            snprintf(err, sizeof err,
                     "the copy on %s holds less of the log than another copy that cannot become "
                     "active now: with --sync-copies %d it could lack acknowledged mail. HINT: "
                     "bring that copy's server and store back, or accept the loss with ombra db "
                     "set %s --sync-copies 0",
                     cs[i].server, sync, name);
            if (strncmp(t->said, err, sizeof t->said - 1))
                om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}), "database %s: %s", name, err);
            continue;
        }
        int rc =
            ask(a, cs[i].server,
                json_pack("{s:s,s:s,s:I,s:b,s:i}", "op", "am.activate", "db", db, "through_gen",
                          (json_int_t)0, "use_stream", 1, "timeout_ms", AM_SALVAGE_MS),
                AM_SALVAGE_MS + AM_CATCHUP_MS, &rep);
        if (rc) {
            snprintf(err, sizeof err, "%s", om_err_detail());
            if (strncmp(t->said, err, sizeof t->said - 1))
                om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}),
                            "database %s: the copy on %s cannot be activated: %s", name,
                            cs[i].server, err);
            continue;
        }
        uint32_t last = (uint32_t)jint(rep, "last_gen");
        int used = json_is_true(json_object_get(rep, "used_stream"));
        if (gen < last) gen = last;
        /* The lost active was writing a generation past what the copy holds whole (each mount
         * opens one, and the rows that say which may be a round old): at least that one is lost,
         * in part, unless the streamed part holds every acknowledged commit (--sync-copies). */
        uint32_t lost = gen - last;
        if (lost < 1) lost = 1;
        /* With synchronous copies the streamed part holds every acknowledged commit. */
        int acked_safe = sync > 0 && used;
        if ((int)lost > dial && !acked_safe) {
            snprintf(err, sizeof err,
                     "the copy on %s lacks %u generations (%u..%u), over the mount dial of %s "
                     "(%.12s: %d)",
                     cs[i].server, lost, last + 1, gen, name, dial_s, dial);
            if (strncmp(t->said, err, sizeof t->said - 1))
                om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}), "database %s: %s", name, err);
            resume_remote(a, cs[i].server, db);
            json_decref(rep);
            continue;
        }
        json_t *lm = lastmove_new("failover", from, cs[i].server, why);
        json_object_set_new(lm, "lost_gens", json_integer(lost));
        json_object_set_new(lm, "used_stream", json_boolean(used));
        json_object_set_new(lm, "acked_lost", acked_safe ? json_integer(0) : json_null());
        int won = 0;
        rc = name_active(a, db, cs[i].server, epoch, last + 1, "failover",
                         om_json_str_or(rep, "edb", ""), om_json_str_or(rep, "logs", ""), lm, &won);
        json_decref(rep);
        if (rc || !won) {
            resume_remote(a, cs[i].server, db);
            json_decref(lm);
            return;
        }
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}),
                    "database %s: failed over from %s to %s (epoch %lld), %u generation%s lost",
                    name, from, cs[i].server, (long long)(epoch + 1), lost, lost == 1 ? "" : "s");
        int wrc = wait_taking(a, db, cs[i].server, epoch + 1, AM_MOUNT_MS);
        json_object_set_new(lm, "took_ms",
                            json_integer((json_int_t)((om_mono_ns() - t->absent_since) / 1000000)));
        if (wrc) json_object_set_new(lm, "error", json_string(om_err_detail()));
        json_object_set_new(lm, "ok", json_boolean(!wrc));
        lastmove_put(a, db, lm);
        json_decref(lm);
        t->absent_since = 0;
        t->deposed_at = 0;
        t->said[0] = 0;
        t->quiet_until = wrc ? om_mono_ns() + (uint64_t)a->cfg.lease_s * 1000000000ull : 0;
        return;
    }
    if (!n)
        snprintf(err, sizeof err,
                 "no copy can become active (none Healthy or Disconnected on a "
                 "server that is up)");
    failover_refused(a, v, t, db, name, from, epoch, why, err, AM_FAILED_RETRY_S);
}

static void primary_round(rp_am *a)
{
    view v;
    if (view_read(a, &v)) {
        view_free(&v);
        return;
    }
    uint64_t now = om_mono_ns(), grace = (uint64_t)a->cfg.lease_s * 1000000000ull;
    pthread_mutex_lock(&a->mu);
    uint64_t since = a->primary_since;
    pthread_mutex_unlock(&a->mu);
    const char *db;
    json_t *rec;
    json_object_foreach(v.dbs, db, rec)
    {
        json_t *act = json_object_get(v.act, db);
        const char *server = om_json_str_or(act, "server", "");
        if (!act || !*server || json_object_size(json_object_get(rec, "copies")) < 2) continue;
        track *t = track_of(a, db);
        if (!t) continue;
        json_t *mv = json_object_get(v.moves, db);
        if (mv) {
            switchover(a, &v, db, rec, mv);
            continue;
        }
        json_t *al = json_object_get(v.al, db);
        if (al && !strcmp(om_json_str_or(al, "server", ""), server) &&
            jint(al, "epoch") == jint(act, "epoch")) {
            t->absent_since = 0;
            t->deposed_at = 0;
            t->retry_at = 0;
            t->said[0] = 0;
            continue;
        }
        /* Administratively dismounted: never failed over. An active with no copy in the record
         * any more (its copy removed in a race with a move, a hand-edited record) is lost, not
         * dismounted: its store has left the database. */
        json_t *acp = json_object_get(json_object_get(rec, "copies"), server);
        if (acp && !json_is_true(json_object_get(acp, "mounted"))) {
            t->absent_since = 0;
            t->deposed_at = 0;
            continue;
        }
        if (!t->absent_since) t->absent_since = now;
        if (now < t->quiet_until || now < t->retry_at) continue;
        /* A lease without the key (and a lease as primary: time to see the keys). Not less: a
         * database mounted again (an administrative dismount and mount) takes commits only at
         * its server's next renewal, up to a third of a lease later, and etcd may be slow. */
        if (now - t->absent_since < grace || now - since < grace) continue;
        failover(a, &v, db, rec, t);
    }
    view_free(&v);
}

static void on_event(void *arg, const etcd_event *ev)
{
    (void)ev;
    rp_am_poke(arg);
}

static void *am_main(void *arg)
{
    rp_am *a = arg;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        struct timespec ts = om_deadline_ms(500);
        while (!a->stopping && !a->poked)
            if (pthread_cond_timedwait(&a->cv, &a->mu, &ts)) break;
        a->poked = 0;
        /* A primary whose lease thread has not confirmed it for a lease (it waits on a paused
         * store, or etcd is away) may not be the primary any more: it does not act. */
        uint64_t lease_ns = (uint64_t)a->cfg.lease_s * 1000000000ull;
        int stop = a->stopping, npend = a->npend;
        int primary = a->primary && om_mono_ns() - a->primary_seen < lease_ns;
        pthread_mutex_unlock(&a->mu);
        if (stop) break;
        renew_watch(a);
        if (npend) pending_round(a);
        if (primary) primary_round(a);
    }
    return NULL;
}

void rp_am_poke(rp_am *a)
{
    pthread_mutex_lock(&a->mu);
    a->poked = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void rp_am_set_primary(rp_am *a, int primary, int64_t term)
{
    pthread_mutex_lock(&a->mu);
    if (primary && (!a->primary || term != a->term)) a->primary_since = om_mono_ns();
    if (primary) a->primary_seen = om_mono_ns();
    a->primary = primary;
    a->term = term;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

int rp_am_start(const rp_am_cfg *cfg, rp_am **out)
{
    rp_am *a = calloc(1, sizeof *a);
    if (!a) return om_errf(OM_E_OutOfMemory, "active manager");
    a->cfg = *cfg;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    int rc = store_client_new(cfg->store_socket, &a->sc);
    char k1[200], k2[200], k3[200];
    rp_dag_key(cfg->dag, k1, sizeof k1, "moves/");
    rp_dag_key(cfg->dag, k2, sizeof k2, "activelease/");
    rp_dag_key(cfg->dag, k3, sizeof k3, "alive/");
    if (!rc) rc = etcd_watch_start(cfg->dag->e, k1, 0, on_event, a, &a->w_moves);
    if (!rc) rc = etcd_watch_start(cfg->dag->e, k2, 0, on_event, a, &a->w_al);
    if (!rc) rc = etcd_watch_start(cfg->dag->e, k3, 0, on_event, a, &a->w_alive);
    if (!rc && pthread_create(&a->th, NULL, am_main, a))
        rc = om_errf(OM_E_OutOfMemory, "active manager thread");
    if (!rc && pthread_create(&a->renew_th, NULL, renew_main, a)) {
        pthread_mutex_lock(&a->mu);
        a->stopping = 1;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->th, NULL);
        rc = om_errf(OM_E_OutOfMemory, "active manager thread");
    }
    if (rc) {
        etcd_watch_stop(a->w_moves);
        etcd_watch_stop(a->w_al);
        etcd_watch_stop(a->w_alive);
        store_client_free(a->sc);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void rp_am_stop(rp_am *a)
{
    if (!a) return;
    etcd_watch_stop(a->w_moves);
    etcd_watch_stop(a->w_al);
    etcd_watch_stop(a->w_alive);
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->th, NULL);
    pthread_join(a->renew_th, NULL);
    while (a->npend) {
        a->npend--;
        a->cfg.give_copier(a->cfg.ctx, a->pend[a->npend].db, a->pend[a->npend].c);
    }
    /* a stays: a peer thread may still be in one of its requests until the process exits. */
}
