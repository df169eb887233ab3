/* ombra dag init|add-server|status and ombra db copy add|status|suspend|resume|remove|reseed:
 * the DAG's records in etcd (repl/dag.h) and its certificates (repl/ca.h). The replication
 * services watch the records and act on them: `db copy add` writes the copy into the
 * directory, and the passive server's ombra-repld seeds it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/config.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "cli/cli.h"
#include "repl/ca.h"
#include "repl/dag.h"

#define ETCD_OPT                                                                                   \
    {                                                                                              \
        "etcd", "URL", "the DAG's etcd (default $OMBRA_ETCD)", 0                                   \
    }
#define DAG_OPT                                                                                    \
    {                                                                                              \
        "dag", "NAME", "the DAG, when the etcd holds several", 0                                   \
    }

/* One line on the last switchover or failover of a database (lastmove/<id>, repl/am.h). */
void cli_print_last_move(json_t *lm, const char *indent)
{
    if (!json_is_object(lm)) return;
    char when[64];
    om_time_str((uint64_t)json_integer_value(json_object_get(lm, "when_ns")), when, sizeof when);
    const char *kind = om_json_str_or(lm, "kind", "move");
    if (!json_is_true(json_object_get(lm, "ok"))) {
        printf("%slast %s %s from %s: not done: %s\n", indent, kind, when,
               om_json_str_or(lm, "from", "?"), om_json_str_or(lm, "error", "?"));
        return;
    }
    printf("%slast %s %s: %s -> %s (epoch %lld) in %.1f s", indent, kind, when,
           om_json_str_or(lm, "from", "?"), om_json_str_or(lm, "to", "?"),
           (long long)json_integer_value(json_object_get(lm, "epoch")),
           (double)json_integer_value(json_object_get(lm, "took_ms")) / 1000.0);
    if (!strcmp(kind, "failover"))
        printf(", %lld generation%s lost%s (%s)",
               (long long)json_integer_value(json_object_get(lm, "lost_gens")),
               json_integer_value(json_object_get(lm, "lost_gens")) == 1 ? "" : "s",
               json_is_integer(json_object_get(lm, "acked_lost")) ? ", no acknowledged mail" : "",
               om_json_str_or(lm, "why", ""));
    printf("\n");
}

static int open_dag(const cli_args *a, const char *name, int must_exist, rp_dag **d)
{
    const char *url = cli_val(a, "etcd");
    if (!url) url = om_conf_setting("OMBRA_ETCD", "ombra", "etcd");
    if (!url || !*url) return cli_usage(a, "no etcd named: --etcd URL or OMBRA_ETCD");
    int rc = rp_dag_open(url, name, must_exist, d);
    return rc ? cli_fail(rc) : CLI_OK;
}

static int dag_dir(char *out, size_t n)
{
    char home[4096];
    int rc = om_data_dir(home, sizeof home);
    if (!rc) snprintf(out, n, "%s/dag", home);
    return rc;
}

/* ---- dag init ---- */

static int run_init(const cli_args *a)
{
    const char *name = a->pos[0];
    if (rp_name_check("DAG name", name)) return cli_usage(a, "%s", om_err_detail());
    rp_dag *d = NULL;
    int st = open_dag(a, name, 0, &d);
    if (st) return st;
    char dir[4200];
    int rc = dag_dir(dir, sizeof dir);
    json_t *cfg = json_pack("{s:s,s:I}", "name", name, "created_ns", (json_int_t)om_now_ns());
    int created = 0;
    char fp[65] = "";
    if (!rc) rc = rp_dag_create(d, "config", cfg, &created);
    if (!rc && !created)
        rc = om_errf(OM_E_DatabaseDuplicate, "a DAG named '%s' already exists in this etcd", name);
    if (created) {
        rc = rp_ca_create(dir, name);
        char crt[4300];
        snprintf(crt, sizeof crt, "%s/ca.crt", dir);
        if (!rc) rc = rp_cert_fingerprint(crt, fp);
        if (!rc) {
            json_object_set_new(cfg, "ca_fingerprint", json_string(fp));
            rc = rp_dag_put(d, "config", cfg, 0);
        }
        if (rc) { /* no DAG without its authority */
            om_err_saved e;
            om_err_save(&e, rc);
            rp_dag_delete(d, "config", 0);
            rc = om_err_restore(&e);
        }
    }
    json_decref(cfg);
    rp_dag_close(d);
    if (rc) return cli_fail(rc);
    if (cli_flag(a, "json")) {
        json_t *o = json_pack("{s:s,s:s,s:s}", "dag", name, "ca_dir", dir, "ca_fingerprint", fp);
        int st2 = cli_print_json(o);
        json_decref(o);
        return st2;
    }
    printf("DAG %s created; its certificate authority is in %s (ca.key stays on this machine)\n"
           "next: ombra dag add-server NAME --address HOST:PORT for each server\n",
           name, dir);
    return CLI_OK;
}

/* ---- dag add-server ---- */

/* The etcd URL the command names (--etcd, else $OMBRA_ETCD). */
static const char *etcd_url(const cli_args *a)
{
    const char *url = cli_val(a, "etcd");
    return url ? url : om_conf_setting("OMBRA_ETCD", "ombra", "etcd");
}

/* This server's certificate, issued on the authority's machine with --out into this server's
 * dag folder: it must be the one the DAG records for name. */
static int check_issued(rp_dag *d, const char *dir, const char *name)
{
    char crt[4400], fp[65], k[128];
    json_t *srv = NULL;
    snprintf(crt, sizeof crt, "%s/server.crt", dir);
    snprintf(k, sizeof k, "servers/%s", name);
    int rc = access(crt, F_OK) ? om_errf(OM_E_InvalidParameter,
                                         "no certificate authority here (%s/ca.key) and no "
                                         "certificate of %s in %s. HINT: on the machine that ran "
                                         "ombra dag init: ombra dag add-server %s --address "
                                         "HOST:PORT --out DIR, DIR being %s here; then run this "
                                         "again",
                                         dir, name, dir, name, dir)
                               : rp_cert_fingerprint(crt, fp);
    if (!rc) rc = rp_dag_get(d, k, &srv, NULL);
    if (!rc && strcmp(om_json_str_or(srv, "fingerprint", ""), fp))
        rc = om_errf(OM_E_InvalidParameter,
                     "%s is not the certificate DAG %s records for server %s%s. HINT: issue it "
                     "again on the authority's machine (ombra dag add-server %s --out DIR)",
                     crt, d->name, name, srv ? "" : " (it records none)", name);
    json_decref(srv);
    return rc;
}

/* Joining: this server's store takes its databases into the DAG's directory (etcd), once.
 * check_only: the checks alone (a name the DAG has already refuses the whole import). */
static int join_store(store_client *sc, const char *url, const char *dag, int check_only,
                      json_t **rep)
{
    int rc = store_client_dag_join(sc, url, dag, check_only, rep);
    return rc ? om_err_ctx(rc, "server not added: ") : 0;
}

static void print_joined(const char *name, const char *dag, json_t *rep)
{
    if (json_is_true(json_object_get(rep, "already"))) {
        printf("the directory of %s is in DAG %s already\n", name, dag);
        return;
    }
    json_t *dbs = json_object_get(rep, "databases");
    printf("the directory of %s is in DAG %s now: %zu databases%s", name, dag, json_array_size(dbs),
           json_array_size(dbs) ? " (" : "");
    size_t i;
    json_t *v;
    json_array_foreach(dbs, i, v) printf("%s%s", i ? ", " : "", om_json_str_or(v, "name", "?"));
    printf("%s\n", json_array_size(dbs) ? "), active on this server" : "");
}

/* --json of dag add-server: {"server", "dag", "address", "cert_dir", "fingerprint" (of the
 * server's certificate), "issued" (false: a certificate issued before on the authority's
 * machine was found and checked), "joined": null (another server's certificate, issued with
 * --out) or {"already", "databases": [{"id", "name"}]} (this server's directory in the DAG). */
static int print_added_json(const char *name, const char *dag, const char *addr, const char *outdir,
                            const char *fp, int issued, json_t *joined)
{
    json_t *j = json_null();
    if (joined)
        j = json_pack("{s:b,s:O}", "already", json_is_true(json_object_get(joined, "already")),
                      "databases",
                      json_object_get(joined, "databases") ? json_object_get(joined, "databases")
                                                           : json_array());
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s?,s:b,s:o}", "server", name, "dag", dag, "address",
                          addr, "cert_dir", outdir, "fingerprint", fp, "issued", issued, "joined",
                          j ? j : json_null());
    int st = cli_print_json(o);
    json_decref(o);
    return st;
}

static int run_add_server(const cli_args *a)
{
    const char *name = a->pos[0], *addr = cli_val(a, "address"), *out = cli_val(a, "out");
    if (rp_name_check("server name", name)) return cli_usage(a, "%s", om_err_detail());
    const char *colon = strrchr(addr, ':');
    uint64_t port;
    if (!colon || colon == addr ||
        cli_number(a, "the port of --address", colon + 1, 1, 65535, 0, &port))
        return colon && colon != addr ? CLI_USAGE
                                      : cli_usage(a, "--address takes HOST:PORT, not '%s'", addr);
    char dir[4200], outdir[4200];
    int rc = dag_dir(dir, sizeof dir);
    if (rc) return cli_fail(rc);
    store_client *sc = NULL; /* this server's store, when NAME is this server */
    if (out) {
        char *abs = cli_abs_path(out);
        if (!abs) return cli_fail(om_errf(OM_E_OutOfMemory, "out of memory"));
        snprintf(outdir, sizeof outdir, "%s", abs);
        free(abs);
    } else {
        /* Only this server's own certificate goes next to the authority by default. */
        json_t *status = NULL;
        rc = cli_store(&sc);
        if (!rc) rc = store_client_status(sc, &status);
        int mine = !rc && !strcmp(om_json_str_or(status, "server", ""), name);
        json_decref(status);
        if (!mine)
            return cli_usage(a,
                             "%s is not this server (or its store is not running): name where "
                             "its certificate goes with --out DIR",
                             name);
        snprintf(outdir, sizeof outdir, "%s", dir);
    }
    rp_dag *d = NULL;
    int st = open_dag(a, cli_val(a, "dag"), 1, &d);
    if (st) return st;
    char crt[4400], fp[65], cakey[4300];
    json_t *joined = NULL;
    snprintf(crt, sizeof crt, "%s/server.crt", outdir);
    snprintf(cakey, sizeof cakey, "%s/ca.key", dir);
    /* This server joins: its databases are checked against the DAG's before anything is
     * written, imported once it is registered. */
    int issue = out || !access(cakey, F_OK);
    if (sc) rc = join_store(sc, etcd_url(a), d->name, 1, &joined);
    if (!rc && !issue) { /* issued on the authority's machine into this server's dag folder */
        char ifp[65];
        rc = check_issued(d, dir, name);
        if (!rc) rc = rp_cert_fingerprint(crt, ifp);
        if (!rc) {
            json_decref(joined);
            rc = join_store(sc, etcd_url(a), d->name, 0, &joined);
        }
        int jst = CLI_OK;
        if (!rc && cli_flag(a, "json"))
            jst = print_added_json(name, d->name, addr, outdir, ifp, 0, joined);
        else if (!rc)
            print_joined(name, d->name, joined);
        json_decref(joined);
        rp_dag_close(d);
        return rc ? cli_fail(rc) : jst;
    }
    if (!rc) rc = rp_ca_issue(dir, name, addr, outdir);
    if (!rc) rc = rp_cert_fingerprint(crt, fp);
    json_t *rec = rc ? NULL
                     : json_pack("{s:s,s:s,s:s,s:I}", "name", name, "address", addr, "fingerprint",
                                 fp, "added_ns", (json_int_t)om_now_ns());
    char key[128];
    snprintf(key, sizeof key, "servers/%s", name);
    if (!rc) rc = rp_dag_put(d, key, rec, 0);
    json_decref(rec);
    if (!rc && sc) {
        json_decref(joined);
        rc = join_store(sc, etcd_url(a), d->name, 0, &joined);
    }
    char dname[RP_NAME_MAX + 1];
    snprintf(dname, sizeof dname, "%s", d->name);
    rp_dag_close(d);
    if (rc) {
        json_decref(joined);
        return cli_fail(rc);
    }
    if (cli_flag(a, "json")) {
        int jst = print_added_json(name, dname, addr, outdir, fp, 1, sc ? joined : NULL);
        json_decref(joined);
        return jst;
    }
    printf("server %s added to DAG %s at %s; its certificate and key are in %s\n", name, dname,
           addr, outdir);
    if (sc) print_joined(name, dname, joined);
    json_decref(joined);
    return CLI_OK;
}

/* ---- dag status ---- */

/* The local ombra-repld's own view (its admin socket): NULL when none runs here. */
static json_t *local_repld(void)
{
    char run[4096], sock[4200];
    if (om_runtime_dir(run, sizeof run)) return NULL;
    snprintf(sock, sizeof sock, "%s/repl.sock", run);
    if (access(sock, F_OK)) return NULL;
    json_t *req = json_pack("{s:s}", "op", "status"), *rep = NULL;
    int rc = om_proto_call(sock, req, NULL, 0, &rep, NULL, NULL);
    json_decref(req);
    return rc ? NULL : rep;
}

static void print_local(json_t *l)
{
    if (!l) return;
    int ok = json_is_true(json_object_get(l, "etcd_ok"));
    printf("this server: ombra-repld of %s, etcd %s%s%s, %zu passive copies, %lld peers refused\n",
           om_json_str_or(l, "server", "?"), ok ? "reachable" : "unreachable (retrying)",
           ok ? "" : ": ", ok ? "" : om_json_str_or(l, "etcd_error", ""),
           json_array_size(json_object_get(l, "copies")),
           (long long)json_integer_value(json_object_get(l, "peers_refused")));
}

/* The primary active manager: {"server", "term" (the pam key's create revision), "since"}, or
 * JSON null while no server holds it (between a primary's lease lapsing and the next round). */
static json_t *primary_of(rp_dag *d)
{
    char key[512], t[40];
    etcd_kv *kv = NULL;
    rp_dag_key(d, key, sizeof key, "pam");
    if (etcd_get(d->e, key, &kv, NULL) || !kv) return json_null();
    json_t *v = json_loadb((const char *)kv->val, kv->len, 0, NULL);
    json_t *o = json_pack("{s:s,s:I,s:s}", "server", om_json_str_or(v, "server", "?"), "term",
                          (json_int_t)kv->create_rev, "since",
                          om_time_iso((uint64_t)om_json_int_or(v, "since_ns", 0), t, sizeof t));
    json_decref(v);
    etcd_kvs_free(kv, 1);
    return o ? o : json_null();
}

static int run_status(const cli_args *a)
{
    rp_dag *d = NULL;
    json_t *local = local_repld();
    int st = open_dag(a, cli_val(a, "dag"), 1, &d);
    if (st) { /* etcd cannot be read from here: what this server's service says still helps */
        if (!cli_flag(a, "json")) print_local(local);
        json_decref(local);
        return st;
    }
    json_t *servers = NULL, *alive = NULL, *dbs = NULL, *act = NULL, *copies = NULL, *al = NULL,
           *lm = NULL;
    int rc = rp_dag_list(d, "servers/", &servers);
    if (!rc) rc = rp_dag_list(d, "activelease/", &al);
    if (!rc) rc = rp_dag_list(d, "lastmove/", &lm);
    if (!rc) rc = rp_dag_list(d, "alive/", &alive);
    if (!rc) rc = rp_dag_list(d, "databases/", &dbs);
    if (!rc) rc = rp_dag_list(d, "active/", &act);
    if (!rc) rc = rp_dag_list(d, "copies/", &copies);
    etcd_status es;
    etcd_health(d->e, &es);
    if (rc) {
        rp_dag_close(d);
        if (!cli_flag(a, "json")) print_local(local);
        json_decref(local);
        return cli_fail(rc);
    }
    json_t *out = json_pack("{s:s,s:{s:b,s:s,s:s},s:[],s:[],s:o}", "dag", d->name, "etcd",
                            "connected", es.connected, "endpoint", es.endpoint, "last_error",
                            es.last_error, "servers", "databases", "primary", primary_of(d));
    if (local) json_object_set(out, "local", local);
    const char *k;
    json_t *v;
    json_object_foreach(servers, k, v)
    {
        json_t *s = json_deep_copy(v);
        json_object_set_new(s, "alive", json_boolean(json_object_get(alive, k) != NULL));
        json_array_append_new(json_object_get(out, "servers"), s);
    }
    json_object_foreach(dbs, k, v)
    {
        json_t *a1 = json_object_get(act, k);
        json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I}", "name", om_json_str_or(v, "name", ""), "id",
                              k, "active", om_json_str_or(a1, "server", ""), "epoch",
                              json_integer_value(json_object_get(a1, "epoch")), "copies",
                              (json_int_t)json_object_size(json_object_get(v, "copies")));
        json_t *l1 = json_object_get(al, k);
        json_object_set_new(o, "taking_commits",
                            json_boolean(l1 &&
                                         !strcmp(om_json_str_or(l1, "server", ""),
                                                 om_json_str_or(a1, "server", "")) &&
                                         json_integer_value(json_object_get(l1, "epoch")) ==
                                             json_integer_value(json_object_get(a1, "epoch"))));
        json_object_set_new(o, "mount_dial", json_string(om_json_str_or(v, "mount_dial", "best")));
        json_object_set_new(o, "sync_copies",
                            json_integer(json_integer_value(json_object_get(v, "sync_copies"))));
        json_object_set(o, "last_move",
                        json_object_get(lm, k) ? json_object_get(lm, k) : json_null());
        json_array_append_new(json_object_get(out, "databases"), o);
    }
    int status = CLI_OK;
    if (cli_flag(a, "json"))
        status = cli_print_json(out);
    else {
        printf("DAG %s, etcd %s (%s)%s%s\n", d->name, es.endpoint,
               es.connected ? "connected" : "unreachable", es.connected ? "" : ": ",
               es.connected ? "" : es.last_error);
        print_local(local);
        json_t *pam = json_object_get(out, "primary");
        if (json_is_object(pam))
            printf("primary active manager: %s (term %lld, since %s)\n",
                   om_json_str_or(pam, "server", "?"),
                   (long long)json_integer_value(json_object_get(pam, "term")),
                   om_json_str_or(pam, "since", "?"));
        else
            printf("primary active manager: none now (the last one's lease lapsed; another "
                   "server's ombra-repld takes it within a lease)\n");
        size_t i;
        json_array_foreach(json_object_get(out, "servers"), i, v)
            printf("  server %-16s %-22s %s\n", om_json_str_or(v, "name", ""),
                   om_json_str_or(v, "address", ""),
                   json_is_true(json_object_get(v, "alive")) ? "alive" : "down");
        json_array_foreach(json_object_get(out, "databases"), i, v)
        {
            printf("  database %-14s active on %s (epoch %lld%s), %lld copies, mount dial %s\n",
                   om_json_str_or(v, "name", ""), om_json_str_or(v, "active", "?"),
                   (long long)json_integer_value(json_object_get(v, "epoch")),
                   json_is_true(json_object_get(v, "taking_commits")) ? "" : ", not taking mail",
                   (long long)json_integer_value(json_object_get(v, "copies")),
                   om_json_str_or(v, "mount_dial", "best"));
            cli_print_last_move(json_object_get(v, "last_move"), "    ");
        }
    }
    json_decref(out);
    json_decref(servers);
    json_decref(alive);
    json_decref(dbs);
    json_decref(act);
    json_decref(copies);
    json_decref(al);
    json_decref(lm);
    json_decref(local);
    rp_dag_close(d);
    return status;
}

/* ---- db copy ---- */

typedef struct copy_change {
    const char *name, *id, *base, *active, *server;
    const char *source; /* reseed: the server whose passive copy seeds it (NULL: the active) */
    int add, remove, suspend, resume, reseed;
    int64_t source_seen; /* reseed: the last reseed of source's own copy it says it did */
    int64_t preference, replay_lag;
    int postponed;
} copy_change;

static int change_copy(void *arg, json_t *rec, int exists)
{
    copy_change *c = arg;
    json_t *copies = json_object_get(rec, "copies");
    if (!exists && !c->add)
        return om_errf(OM_E_DatabaseNotFound, "database %s has no copies in the DAG", c->name);
    if (!copies) json_object_set_new(rec, "copies", copies = json_object());
    json_t *mine = json_object_get(copies, c->server);
    if (c->add) {
        json_object_set_new(rec, "name", json_string(c->name));
        json_object_set_new(rec, "id", json_string(c->id));
        json_object_set_new(rec, "base", json_string(c->base));
        if (!json_object_get(copies, c->active))
            json_object_set_new(copies, c->active, json_pack("{s:i}", "preference", 1));
        if (mine)
            return om_errf(OM_E_DatabaseDuplicate, "server %s already holds a copy of %s",
                           c->server, c->name);
        int64_t pref = c->preference ? c->preference : (int64_t)json_object_size(copies) + 1;
        json_object_set_new(copies, c->server,
                            json_pack("{s:I,s:I,s:b,s:b,s:I}", "preference", (json_int_t)pref,
                                      "replay_lag", (json_int_t)c->replay_lag, "suspended",
                                      c->postponed, "seeding_postponed", c->postponed, "reseed",
                                      (json_int_t)0));
        return 0;
    }
    if (!mine)
        return om_errf(OM_E_DatabaseNotFound, "server %s holds no copy of %s", c->server, c->name);
    if (c->remove) {
        /* Checked in the same transaction as the removal: a commit then never waits for a copy
         * that is gone. */
        json_int_t sync = json_integer_value(json_object_get(rec, "sync_copies"));
        size_t left = 0;
        const char *srv;
        json_t *v;
        json_object_foreach(copies, srv, v) left +=
            strcmp(srv, c->active) && strcmp(srv, c->server);
        if (sync > 0 && (size_t)sync > left)
            return om_errf(OM_E_InvalidParameter,
                           "%s commits only once %lld passive copies hold its log, and without "
                           "the copy on %s it would have %zu. HINT: ombra db set %s --sync-copies "
                           "%zu first",
                           c->name, (long long)sync, c->server, left, c->name, left);
        return json_object_del(copies, c->server), 0;
    }
    if (c->suspend) json_object_set_new(mine, "suspended", json_true());
    if (c->resume) json_object_set_new(mine, "suspended", json_false());
    /* In the transaction: a source whose own copy was asked a reseed it has not done is
     * being wiped, or is waiting for a seed itself (two reseeds from each other would wait on
     * each other forever, both copies gone). */
    json_t *src = c->reseed && c->source ? json_object_get(copies, c->source) : NULL;
    if (c->reseed && c->source && !src)
        return om_errf(OM_E_InvalidParameter, "the copy on %s was removed meanwhile", c->source);
    if (src && json_integer_value(json_object_get(src, "reseed")) != c->source_seen)
        return om_errf(OM_E_InvalidParameter,
                       "the copy of %s on %s is being reseeded itself: it cannot seed another "
                       "copy. HINT: wait until it is Healthy (ombra db copy status %s), or reseed "
                       "without --source",
                       c->name, c->source, c->name);
    if (c->reseed) {
        json_object_set_new(mine, "reseed",
                            json_integer(json_integer_value(json_object_get(mine, "reseed")) + 1));
        json_object_set_new(mine, "suspended", json_false());
        if (c->source)
            json_object_set_new(mine, "source", json_string(c->source));
        else
            json_object_del(mine, "source");
    }
    return 0;
}

/* The database's record by name and its active server. */
static int find_db(rp_dag *d, const char *name, json_t **rec, char id[37], char *active, size_t n)
{
    int rc = rp_dag_find_db(d, name, rec, id);
    json_t *act = NULL;
    char k[100];
    snprintf(k, sizeof k, "active/%s", id);
    if (!rc) rc = rp_dag_get(d, k, &act, NULL);
    if (!rc) snprintf(active, n, "%s", om_json_str_or(act, "server", ""));
    json_decref(act);
    return rc;
}

/* Waits until the copy is Healthy (0), Failed (its error), or the time is up (Timeout-like
 * error), printing its state as it changes. */
static int wait_healthy(rp_dag *d, const char *id, const char *name, const char *server,
                        uint64_t seconds)
{
    char k[200], last[32] = "";
    snprintf(k, sizeof k, "copies/%s/%s", id, server);
    uint64_t end = om_mono_ns() + seconds * 1000000000ull;
    uint64_t since = om_now_ns();
    for (;;) {
        json_t *st = NULL;
        int rc = rp_dag_get(d, k, &st, NULL);
        if (rc) return rc;
        const char *state = om_json_str_or(st, "state", "");
        int64_t upd = json_integer_value(json_object_get(st, "updated_ns"));
        if (st && (uint64_t)upd >= since && strcmp(state, last)) {
            fprintf(stderr, "copy of %s on %s: %s\n", name, server, state);
            snprintf(last, sizeof last, "%s", state);
        }
        int done = st && (uint64_t)upd >= since && !strcmp(state, "Healthy");
        int failed = st && (uint64_t)upd >= since && !strcmp(state, "Failed");
        if (failed)
            rc = om_errf(OM_E_Internal, "the copy of %s on %s failed: %s", name, server,
                         om_json_str_or(st, "last_error", "?"));
        json_decref(st);
        if (done || failed) return rc;
        if (om_mono_ns() > end)
            return om_errf(OM_E_Internal,
                           "the copy of %s on %s is not Healthy after %llu s (state '%s'): is "
                           "ombra-repld running there? HINT: ombra db copy status %s",
                           name, server, (unsigned long long)seconds, last[0] ? last : "none",
                           name);
        usleep(200000);
    }
}

/* --json of the db copy commands, printed once the command is done (after its wait):
 * {"database": {"id", "name"}, "server", "action": "added", "suspended", "resumed", "removed"
 * or "reseeded", "source": the reseed's --source or null, "seeding_postponed" (add), "state":
 * "Healthy" when the command waited for it, else null}. */
static int print_copy_json(const char *id, const char *name, const char *server, const char *action,
                           const char *source, int postponed, int healthy)
{
    json_t *o =
        json_pack("{s:{s:s,s:s},s:s,s:s,s:s?,s:s?}", "database", "id", id, "name", name, "server",
                  server, "action", action, "source", source, "state", healthy ? "Healthy" : NULL);
    if (o && !strcmp(action, "added"))
        json_object_set_new(o, "seeding_postponed", json_boolean(postponed));
    int st = cli_print_json(o);
    json_decref(o);
    return st;
}

static int run_copy_add(const cli_args *a)
{
    const char *db = a->pos[0], *server = cli_val(a, "server");
    uint64_t pref = 0, lag = 0, wait = 600;
    if (cli_val(a, "preference") &&
        cli_number(a, "--preference", cli_val(a, "preference"), 1, 16, 0, &pref))
        return CLI_USAGE;
    if (cli_val(a, "replay-lag") &&
        cli_number(a, "--replay-lag", cli_val(a, "replay-lag"), 0, 14 * 86400, 0, &lag))
        return CLI_USAGE;
    if (cli_val(a, "wait-seconds") &&
        cli_number(a, "--wait-seconds", cli_val(a, "wait-seconds"), 0, 86400, 0, &wait))
        return CLI_USAGE;
    store_client *sc;
    json_t *info = NULL, *status = NULL;
    int rc = cli_store(&sc);
    if (!rc) rc = store_client_db_show(sc, db, &info);
    if (!rc) rc = store_client_status(sc, &status);
    if (rc) return cli_fail(rc);
    char me[RP_NAME_MAX + 1];
    snprintf(me, sizeof me, "%s", om_json_str_or(status, "server", ""));
    json_decref(status);
    if (!strcmp(server, me)) {
        json_decref(info);
        return cli_usage(a, "%s is this server, which holds the active copy of %s", server, db);
    }
    rp_dag *d = NULL;
    int st = open_dag(a, cli_val(a, "dag"), 1, &d);
    if (st) {
        json_decref(info);
        return st;
    }
    char id[40];
    snprintf(id, sizeof id, "%s", om_json_str_or(info, "id", ""));
    json_t *srv = NULL, *act = NULL;
    char k[200];
    snprintf(k, sizeof k, "servers/%s", server);
    rc = rp_dag_get(d, k, &srv, NULL);
    if (!rc && !srv)
        rc =
            om_errf(OM_E_InvalidParameter,
                    "server %s is not in DAG %s. HINT: ombra dag add-server %s --address HOST:PORT",
                    server, d->name, server);
    snprintf(k, sizeof k, "servers/%s", me);
    json_decref(srv);
    srv = NULL;
    if (!rc) rc = rp_dag_get(d, k, &srv, NULL);
    if (!rc && !srv)
        rc = om_errf(OM_E_InvalidParameter,
                     "this server (%s) is not in DAG %s. HINT: ombra dag add-server %s --address "
                     "HOST:PORT",
                     me, d->name, me);
    json_decref(srv);
    /* Names are unique in a DAG: another database of this name (on another server) is refused,
     * or every command that names it would be ambiguous. */
    if (!rc) {
        json_t *other = NULL;
        char oid[37];
        int frc = rp_dag_find_db(d, db, &other, oid);
        if (!frc && strcmp(oid, id))
            rc = om_errf(OM_E_DatabaseDuplicate,
                         "DAG %s already has a database named '%s' (id %s, on another server): "
                         "names are unique in a DAG",
                         d->name, db, oid);
        else if (frc && frc != OM_E_DatabaseNotFound)
            rc = frc;
        json_decref(other);
    }
    /* The active copy: this server, epoch 1, when the database is new to the DAG. */
    snprintf(k, sizeof k, "active/%s", id);
    json_t *want = json_pack("{s:s,s:i}", "server", me, "epoch", 1);
    int created = 0;
    if (!rc) rc = rp_dag_create(d, k, want, &created);
    json_decref(want);
    if (!rc && !created) {
        rc = rp_dag_get(d, k, &act, NULL);
        if (!rc && strcmp(om_json_str_or(act, "server", ""), me))
            rc = om_errf(OM_E_InvalidParameter,
                         "the active copy of %s is on server %s: add copies there", db,
                         om_json_str_or(act, "server", "?"));
        json_decref(act);
    }
    copy_change c = {.name = db,
                     .id = id,
                     .base = om_json_str_or(info, "base", "E00"),
                     .active = me,
                     .server = server,
                     .add = 1,
                     .preference = (int64_t)pref,
                     .replay_lag = (int64_t)lag,
                     .postponed = cli_flag(a, "seeding-postponed")};
    snprintf(k, sizeof k, "databases/%s", id);
    if (!rc) rc = rp_dag_update(d, k, change_copy, &c);
    int json = cli_flag(a, "json"), waited = !c.postponed && wait;
    if (!rc && !json)
        printf("copy of %s added on %s%s\n", db, server,
               c.postponed ? " (seeding postponed: ombra db copy resume to seed it)" : "");
    if (!rc && waited) rc = wait_healthy(d, id, db, server, wait);
    int jst = CLI_OK;
    if (!rc && json) jst = print_copy_json(id, db, server, "added", NULL, c.postponed, waited);
    json_decref(info);
    rp_dag_close(d);
    return rc ? cli_fail(rc) : jst;
}

/* A reseed's --source: another server's passive copy of the database, Healthy (its record says
 * so and its server is alive), not the copy being reseeded, not the active (whose seed is the
 * ordinary one). */
static int check_source(rp_dag *d, json_t *rec, const char *id, const char *db, const char *server,
                        const char *source, const char *active, int64_t *seen)
{
    if (!source) return 0;
    if (!strcmp(source, server))
        return om_errf(OM_E_InvalidParameter,
                       "--source %s is the copy being reseeded: name another server's copy",
                       source);
    if (!strcmp(source, active))
        return om_errf(OM_E_InvalidParameter,
                       "--source %s holds the active copy of %s: reseed without --source to "
                       "seed from it",
                       source, db);
    if (!json_object_get(json_object_get(rec, "copies"), source))
        return om_errf(OM_E_InvalidParameter, "server %s holds no copy of %s to seed from", source,
                       db);
    json_t *st = NULL, *alive = NULL;
    char k[200];
    snprintf(k, sizeof k, "copies/%s/%s", id, source);
    int rc = rp_dag_get(d, k, &st, NULL);
    snprintf(k, sizeof k, "alive/%s", source);
    if (!rc) rc = rp_dag_get(d, k, &alive, NULL);
    const char *state = !alive ? "down (its ombra-repld is not running)"
                        : st   ? om_json_str_or(st, "state", "?")
                               : "not started";
    /* The last reseed of the source's copy it did (what change_copy compares in the record). */
    json_t *js = json_object_get(st, "reseed_seen");
    *seen = json_is_integer(js)
                ? json_integer_value(js)
                : json_integer_value(json_object_get(
                      json_object_get(json_object_get(rec, "copies"), source), "reseed"));
    if (!rc && (!alive || strcmp(state, "Healthy")))
        rc = om_errf(OM_E_InvalidParameter,
                     "the copy of %s on %s is %s, not Healthy: it cannot seed another copy. "
                     "HINT: ombra db copy status %s",
                     db, source, state, db);
    json_decref(st);
    json_decref(alive);
    return rc;
}

/* suspend, resume, remove, reseed: one change of the copy's record. */
static int copy_action(const cli_args *a, copy_change c)
{
    rp_dag *d = NULL;
    int st = open_dag(a, cli_val(a, "dag"), 1, &d);
    if (st) return st;
    json_t *rec = NULL;
    char id[37], active[RP_NAME_MAX + 1], k[200];
    c.name = a->pos[0];
    c.server = cli_val(a, "server");
    int rc = find_db(d, c.name, &rec, id, active, sizeof active);
    if (!rc && !strcmp(active, c.server))
        rc = om_errf(OM_E_InvalidParameter,
                     "server %s holds the active copy of %s: only passive copies can be %s",
                     c.server, c.name,
                     c.remove    ? "removed"
                     : c.reseed  ? "reseeded"
                     : c.suspend ? "suspended"
                                 : "resumed");
    if (!rc && c.reseed)
        rc = check_source(d, rec, id, c.name, c.server, cli_val(a, "source"), active,
                          &c.source_seen);
    if (!rc && c.reseed) c.source = cli_val(a, "source");
    c.active = active;
    snprintf(k, sizeof k, "databases/%s", id);
    if (!rc) rc = rp_dag_update(d, k, change_copy, &c);
    if (!rc && c.remove) {
        snprintf(k, sizeof k, "copies/%s/%s", id, c.server);
        rc = rp_dag_delete(d, k, 0);
    }
    uint64_t wait = 600;
    if (!rc && c.reseed && cli_val(a, "wait-seconds") &&
        cli_number(a, "--wait-seconds", cli_val(a, "wait-seconds"), 0, 86400, 0, &wait))
        rc = OM_E_Usage;
    int json = cli_flag(a, "json");
    if (!rc && !json)
        printf("copy of %s on %s %s%s\n", c.name, c.server,
               c.remove    ? "removed (its files stay on that server)"
               : c.reseed  ? (c.source ? "to be reseeded from the copy on " : "to be reseeded")
               : c.suspend ? "suspended"
                           : "resumed",
               c.reseed && c.source ? c.source : "");
    if (!rc && c.reseed && wait) rc = wait_healthy(d, id, c.name, c.server, wait);
    int jst = CLI_OK;
    if (!rc && json)
        jst = print_copy_json(id, c.name, c.server,
                              c.remove    ? "removed"
                              : c.reseed  ? "reseeded"
                              : c.suspend ? "suspended"
                                          : "resumed",
                              c.source, 0, c.reseed && wait);
    json_decref(rec);
    rp_dag_close(d);
    if (rc == OM_E_Usage) return CLI_USAGE;
    return rc ? cli_fail(rc) : jst;
}

static int run_copy_suspend(const cli_args *a)
{
    return copy_action(a, (copy_change){.suspend = 1});
}
static int run_copy_resume(const cli_args *a)
{
    return copy_action(a, (copy_change){.resume = 1});
}
static int run_copy_remove(const cli_args *a)
{
    return copy_action(a, (copy_change){.remove = 1});
}
static int run_copy_reseed(const cli_args *a)
{
    return copy_action(a, (copy_change){.reseed = 1});
}

/* --json of db copy status: {"copies": [...]}, each row's database as every output names one,
 * {"id", "name"} (docs/cli.md), in place of the rows' "database" (name) and "id". */
static int print_copy_rows(json_t *rows)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        json_t *db = json_pack("{s:O?, s:O?}", "id", json_object_get(r, "id"), "name",
                               json_object_get(r, "database"));
        json_object_del(r, "id");
        json_object_set_new(r, "database", db);
    }
    json_t *o = json_pack("{s:O}", "copies", rows);
    int rc = cli_print_json(o);
    json_decref(o);
    return rc;
}

static int run_copy_status(const cli_args *a)
{
    rp_dag *d = NULL;
    int st = open_dag(a, cli_val(a, "dag"), 1, &d);
    if (st) return st;
    json_t *out = NULL;
    int rc = rp_dag_copy_rows(d, a->npos ? a->pos[0] : NULL, &out);
    int status = CLI_OK;
    if (rc)
        status = cli_fail(rc);
    else if (cli_flag(a, "json"))
        status = print_copy_rows(out);
    else {
        /* MODE: block (bytes of the open generation the copy holds, SI units), file, or - (the
         * active). */
        printf("%-16s %-12s %-13s %6s %6s %9s %9s %9s  %-12s %s\n", "DATABASE", "SERVER", "STATE",
               "COPYQ", "REPLQ", "COPIED", "INSPECTED", "REPLAYED", "MODE", "LAST ERROR");
        size_t i;
        json_t *o;
        json_array_foreach(out, i, o)
        {
            char mode[32] = "-";
            const char *m = om_json_str_or(o, "mode", "");
            if (!strcmp(m, "block")) {
                char hb[24];
                cli_human_bytes((uint64_t)json_integer_value(json_object_get(o, "streamed_bytes")),
                                hb, sizeof hb);
                char *sp = strchr(hb, ' '); /* "12.3 kB" -> "12.3kB": one column */
                if (sp) memmove(sp, sp + 1, strlen(sp));
                snprintf(mode, sizeof mode, "block:%s", hb);
            } else if (*m)
                snprintf(mode, sizeof mode, "%.20s", m);
            printf("%-16s %-12s %-13s %6lld %6lld %9lld %9lld %9lld  %-12s %s\n",
                   om_json_str_or(o, "database", ""), om_json_str_or(o, "server", ""),
                   om_json_str_or(o, "state", ""),
                   (long long)json_integer_value(json_object_get(o, "copy_queue")),
                   (long long)json_integer_value(json_object_get(o, "replay_queue")),
                   (long long)json_integer_value(json_object_get(o, "copied")),
                   (long long)json_integer_value(json_object_get(o, "inspected")),
                   (long long)json_integer_value(json_object_get(o, "replayed")), mode,
                   om_json_str_or(o, "last_error", ""));
        }
        json_array_foreach(out, i, o)
        {
            if (!json_is_true(json_object_get(o, "active"))) continue;
            printf("%s: active on %s, epoch %lld\n", om_json_str_or(o, "database", ""),
                   om_json_str_or(o, "server", ""),
                   (long long)json_integer_value(json_object_get(o, "epoch")));
            cli_print_last_move(json_object_get(o, "last_move"), "  ");
        }
    }
    json_decref(out);
    rp_dag_close(d);
    return status;
}

static const cli_opt init_opts[] = {
    ETCD_OPT, {"json", NULL, "print JSON: {\"dag\", \"ca_dir\", \"ca_fingerprint\"}", 0}, {0}};
static const cli_opt add_server_opts[] = {
    {"address", "HOST:PORT", "where its ombra-repld listens (--listen)", 1},
    {"out", "DIR", "where its certificate and key go (default: $OMBRA_HOME/dag, this server)", 0},
    ETCD_OPT,
    DAG_OPT,
    {"json", NULL,
     "print JSON: {\"server\", \"dag\", \"address\", \"cert_dir\", \"fingerprint\", \"issued\", "
     "\"joined\": null or {\"already\", \"databases\": [{id, name}]}}",
     0},
    {0},
};
static const cli_opt status_opts[] = {
    ETCD_OPT, DAG_OPT, {"json", NULL, "print the status as JSON", 0}, {0}};

static const cli_cmd dag_cmds[] = {
    {"init", "NAME", init_opts, "Create a DAG: its record in etcd and its certificate authority",
     "The authority's key stays in $OMBRA_HOME/dag/ca.key on this machine (mode 0600): run\n"
     "dag add-server here for every server.",
     run_init},
    {"add-server", "NAME", add_server_opts,
     "Register a server and issue its certificate and key (run where the authority is)", NULL,
     run_add_server},
    {"status", "", status_opts, "The DAG's servers (alive or not), databases and active copies",
     NULL, run_status},
    {0},
};
const cli_group cli_dag_group = {"dag", "Database availability group: servers, certificates",
                                 dag_cmds};

#define COPY_JSON_OPT                                                                              \
    {                                                                                              \
        "json", NULL,                                                                              \
            "print JSON, once done: {\"database\": {id, name}, \"server\", \"action\", "           \
            "\"source\", "                                                                         \
            "\"state\": \"Healthy\" when it waited, else null}",                                   \
            0                                                                                      \
    }
static const cli_opt copy_add_opts[] = {
    {"server", "S", "the server that gets the passive copy", 1},
    {"preference", "N", "activation preference, 1 first (default: after the others)", 0},
    {"replay-lag", "SECONDS", "replay generations only once this old (0 to 14 days)", 0},
    {"seeding-postponed", NULL, "add the copy suspended: no seed until copy resume", 0},
    {"wait-seconds", "N", "wait this long for the copy to be Healthy (default 600; 0: no wait)", 0},
    ETCD_OPT,
    DAG_OPT,
    COPY_JSON_OPT,
    {0},
};
static const cli_opt copy_server_opts[] = {
    {"server", "S", "the server of the passive copy", 1}, ETCD_OPT, DAG_OPT, COPY_JSON_OPT, {0}};
static const cli_opt copy_reseed_opts[] = {
    {"server", "S", "the server of the passive copy", 1},
    {"source", "S2", "seed it from the Healthy passive copy on S2 (default: the active)", 0},
    {"wait-seconds", "N", "wait this long for the copy to be Healthy (default 600; 0: no wait)", 0},
    ETCD_OPT,
    DAG_OPT,
    COPY_JSON_OPT,
    {0},
};
static const cli_opt copy_status_opts[] = {
    ETCD_OPT,
    DAG_OPT,
    {"json", NULL, "print JSON: {\"copies\": [...]}, each with its database {id, name}", 0},
    {0}};

static const cli_cmd copy_cmds[] = {
    {"add", "DB", copy_add_opts,
     "Add a passive copy on another server; its replication service seeds it (run on the active)",
     "The seed is the active's .edb under a shadow copy (the held provider: mail goes on), then\n"
     "the logs from the generation it needs. Waits until the copy is Healthy.",
     run_copy_add},
    {"status", "[DB]", copy_status_opts,
     "Per copy: state, copy and replay queues, last generation copied, inspected, replayed", NULL,
     run_copy_status},
    {"suspend", "DB", copy_server_opts, "Stop copying and replaying into a passive copy", NULL,
     run_copy_suspend},
    {"resume", "DB", copy_server_opts, "Resume a suspended passive copy (seeds it if it never was)",
     NULL, run_copy_resume},
    {"remove", "DB", copy_server_opts, "Remove a passive copy from the DAG (its files stay)", NULL,
     run_copy_remove},
    {"reseed", "DB", copy_reseed_opts,
     "Replace a failed or divergent passive copy with a new seed from the active",
     "With --source S2 the seed is S2's passive copy (its .edb and the generations it needs,\n"
     "read while S2 pauses its replay), then the copy goes on from the active.",
     run_copy_reseed},
    {0},
};
const cli_group cli_copy_group = {"db copy", "Passive copies of a database in a DAG", copy_cmds};
