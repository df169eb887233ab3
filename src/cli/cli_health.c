/* What `ombra check` and `ombra metrics` report, gathered in one place (cli.h, "health"): the
 * daemons' answers, the repository (opened, listed and, for check, written to), the record of
 * backup runs (backup/runs.h), the databases' log folders and the DAG's copies. Nothing here
 * prints or judges: check turns the facts into OK/WARNING/CRITICAL lines, metrics into the
 * Prometheus text format. Every question is asked even when another one failed, and a failure
 * is a fact like any other ("up": false with its "error"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "backup/repo.h"
#include "backup/runs.h"
#include "base/config.h"
#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/vfs.h"
#include "cli/cli.h"

/* How long each daemon may take to answer all of a gathering's questions: a daemon stopped or
 * hung (kill -STOP, a deadlock) must not hang check and metrics with it. */
#define DAEMON_DEADLINE_MS 5000

/* Starts the deadline of one daemon's questions (om_proto_client_deadline). */
static void deadline_start(void)
{
    om_proto_client_deadline(DAEMON_DEADLINE_MS);
}

/* The error of a daemon's questions (err, stolen; NULL: none) in o: "error", and "timed_out" when
 * the daemon did not answer within its deadline. */
static void daemon_error(json_t *o, json_t *err)
{
    int late = om_proto_deadline_passed();
    if (late && err) {
        json_decref(err);
        err = json_sprintf("no answer within %d s: the daemon is stopped or hung",
                           DAEMON_DEADLINE_MS / 1000);
        om_err_clear();
    }
    json_object_set_new(o, "error", err ? err : json_null());
    json_object_set_new(o, "timed_out", json_boolean(late));
    if (late) json_object_set_new(o, "deadline_seconds", json_integer(DAEMON_DEADLINE_MS / 1000));
}

/* "ombra-store: <detail> (-1234 Name)" as a string for the facts. */
static json_t *err_json(int rc)
{
    char b[1300];
    snprintf(b, sizeof b, "%s (%d %s)", om_err_detail(), rc, om_err_name(rc));
    om_err_clear();
    return json_string(b);
}

/* <runtime>/name into out; 0 or an error. */
static int socket_path(const char *name, char *out, size_t n)
{
    char dir[4096];
    int rc = om_runtime_dir(dir, sizeof dir);
    return rc ? rc : om_path_join(out, n, dir, name);
}

/* One request on a daemon's socket: the reply (NULL on failure, with the error in *err). */
static json_t *ask(const char *sock, const char *op, json_t **err)
{
    json_t *req = json_pack("{s:s}", "op", op), *rep = NULL;
    int rc = om_proto_call(sock, req, NULL, 0, &rep, NULL, NULL);
    json_decref(req);
    if (!rc) {
        json_object_del(rep, "ok");
        return rep;
    }
    json_decref(rep);
    if (!*err) *err = err_json(rc);
    return NULL;
}

/* Free and total bytes of the filesystem holding path, into o. */
static void fs_facts(json_t *o, const char *path)
{
    struct statvfs v;
    struct stat st;
    json_object_set_new(o, "path", json_string(path));
    if (statvfs(path, &v) || stat(path, &st)) {
        json_object_set_new(o, "error", json_sprintf("%s: %s", path, strerror(errno)));
        return;
    }
    json_object_set_new(o, "dev", json_integer((json_int_t)st.st_dev));
    json_object_set_new(o, "free", json_integer((json_int_t)((uint64_t)v.f_bavail * v.f_frsize)));
    json_object_set_new(o, "size", json_integer((json_int_t)((uint64_t)v.f_blocks * v.f_frsize)));
}

/* ---- the daemons ---- */

static void store_facts(json_t *h, json_t **dbs_out)
{
    char sock[4200] = "";
    json_t *o = json_object(), *st = NULL, *err = NULL;
    store_client *sc = NULL;
    socket_path("store.sock", sock, sizeof sock);
    deadline_start();
    int rc = cli_store(&sc);
    if (!rc) rc = store_client_status(sc, &st);
    if (!rc) rc = store_client_db_list(sc, dbs_out);
    if (rc) err = err_json(rc);
    json_object_set_new(o, "up", json_boolean(!rc));
    json_object_set_new(o, "socket", json_string(sock));
    daemon_error(o, err);
    json_object_set_new(o, "status", st ? st : json_null());
    json_object_set_new(h, "server", json_string(om_json_str_or(st, "server", "")));
    json_object_set_new(h, "store", o);
}

static void vssd_facts(json_t *h)
{
    char sock[4200] = "";
    json_t *o = json_object(), *err = NULL, *st = NULL, *ws = NULL;
    int rc = socket_path("vss.sock", sock, sizeof sock);
    if (rc) err = err_json(rc);
    deadline_start();
    if (!rc) st = ask(sock, "status", &err);
    if (st) ws = ask(sock, "writers", &err);
    json_object_set_new(o, "up", json_boolean(st != NULL));
    json_object_set_new(o, "socket", json_string(sock));
    daemon_error(o, err);
    json_object_set_new(o, "status", st ? st : json_null());
    json_object_set(o, "writers", ws ? json_object_get(ws, "writers") : json_null());
    json_decref(ws);
    json_object_set_new(h, "vssd", o);
}

/* In a DAG (cli_local_dag): its name, this server's ombra-repld and every copy's row. */
static void dag_facts(json_t *h)
{
    rp_dag *d = NULL;
    char server[80] = "", sock[4200] = "";
    if (!json_is_true(json_object_get(json_object_get(h, "store"), "up"))) {
        /* The store says whether there is a DAG; without it, a repl.sock says so. */
        if (socket_path("repl.sock", sock, sizeof sock) || access(sock, F_OK)) {
            json_object_set_new(h, "dag", json_null());
            return;
        }
    }
    json_t *o = json_object(), *err = NULL, *rows = NULL;
    deadline_start(); /* the store's answers about the DAG, then ombra-repld's */
    int rc = json_is_true(json_object_get(json_object_get(h, "store"), "up"))
                 ? cli_local_dag(&d, server, sizeof server)
                 : om_errf(OM_E_DatabaseUnavailable, "ombra-store does not answer: the DAG's "
                                                     "copies are not known");
    if (!rc && !d) {
        json_decref(o);
        json_object_set_new(h, "dag", json_null());
        return;
    }
    if (!rc) rc = rp_dag_copy_rows(d, NULL, &rows);
    if (rc) err = err_json(rc);
    json_object_set_new(o, "name", json_string(d ? d->name : ""));
    json_object_set_new(o, "error", err ? err : json_null());
    json_object_set_new(o, "copies", rows ? rows : json_array());
    rp_dag_close(d);
    json_t *r = json_object(), *rerr = NULL, *st = NULL;
    if (!sock[0] && (rc = socket_path("repl.sock", sock, sizeof sock))) rerr = err_json(rc);
    deadline_start();
    if (!rerr) st = ask(sock, "status", &rerr);
    json_object_set_new(r, "up", json_boolean(st != NULL));
    json_object_set_new(r, "socket", json_string(sock));
    daemon_error(r, rerr);
    json_decref(st);
    json_object_set_new(o, "repld", r);
    json_object_set_new(h, "dag", o);
}

/* ---- the repository ---- */

/* Writes, syncs and removes a probe file in the repository's top folder: a repository that
 * can be read but not written (a read-only mount, a full disk, another owner) fails the next
 * backup, and check says so now. */
static int probe_write(const char *path)
{
    om_dir *d = NULL;
    char name[64];
    snprintf(name, sizeof name, ".ombra-check-%ld", (long)getpid());
    int rc = om_dir_open(om_vfs_posix(), NULL, path, OM_D_FOLLOW, &d);
    if (!rc) rc = om_durable_write_at(d, name, "ombra check\n", 12, OM_RENAME_REPLACE);
    if (!rc) rc = om_unlink_at(d, name);
    if (!rc) rc = om_dir_sync(d);
    om_dir_close(d);
    return rc ? om_err_ctx(rc, "writing a probe file in %s", path) : 0;
}

static void repo_facts(json_t *h, const cli_health_opts *ho)
{
    if (!ho->repo) {
        json_object_set_new(h, "repo", json_null());
        return;
    }
    json_t *o = json_object(), *sets = NULL, *err = NULL;
    bk_repo *r = NULL;
    int rc = bk_repo_open(ho->repo, ho->passphrase, &r);
    if (!rc) rc = bk_sets(r, &sets);
    bk_repo_close(r);
    if (rc) err = err_json(rc);
    json_object_set_new(o, "reachable", json_boolean(!rc));
    int wrc = !rc && ho->probe_write ? probe_write(ho->repo) : 0;
    if (wrc) err = err_json(wrc);
    json_object_set_new(o, "writable", !rc && ho->probe_write ? json_boolean(!wrc) : json_null());
    json_object_set_new(o, "path", json_string(ho->repo));
    json_object_set_new(o, "error", err ? err : json_null());
    json_object_set_new(o, "sets", sets ? sets : json_array());
    json_object_set_new(h, "repo", o);
}

/* ---- the databases and the data directory ---- */

static void db_facts(json_t *h, json_t *list)
{
    json_t *out = json_array(), *db;
    store_client *sc = NULL;
    size_t i;
    deadline_start(); /* the store's answers for all the databases */
    json_array_foreach(list, i, db)
    {
        const char *name = om_json_str_or(db, "name", "");
        json_t *o = json_pack(
            "{s:s, s:s, s:b, s:b, s:s, s:s}", "name", name, "id", om_json_str_or(db, "id", ""),
            "mounted", json_is_true(json_object_get(db, "mounted")), "recovery",
            json_is_true(json_object_get(db, "recovery")), "edb", om_json_str_or(db, "edb", ""),
            "logs", om_json_str_or(db, "logs", ""));
        json_t *show = NULL;
        if (json_is_true(json_object_get(db, "mounted")) && !cli_store(&sc) &&
            !store_client_db_show(sc, name, &show))
            json_object_set(o, "log_generations", json_object_get(show, "log_generations"));
        else
            om_err_clear();
        json_decref(show);
        json_t *fs = json_object();
        fs_facts(fs, om_json_str_or(db, "logs", ""));
        json_object_set_new(o, "log_fs", fs);
        json_array_append_new(out, o);
    }
    json_object_set_new(h, "databases", out);
}

static void local_facts(json_t *h)
{
    json_t *runs = NULL, *fs = json_object();
    int rc = bk_runs_load(NULL, &runs);
    json_object_set_new(h, "runs_error", rc ? err_json(rc) : json_null());
    json_t *list = runs ? json_object_get(runs, "runs") : NULL; /* none when it failed */
    json_object_set_new(h, "runs", list ? json_incref(list) : json_array());
    json_decref(runs);
    char dir[4096];
    if (om_data_dir(dir, sizeof dir)) {
        json_object_set_new(fs, "error", err_json(OM_E_InvalidPath));
    } else
        fs_facts(fs, dir);
    json_object_set_new(h, "data_fs", fs);
}

json_t *cli_health_gather(const cli_health_opts *o)
{
    json_t *h = json_object(), *dbs = NULL;
    if (!h) return NULL;
    json_object_set_new(h, "time_ns", json_integer((json_int_t)om_now_ns()));
    store_facts(h, &dbs);
    vssd_facts(h);
    dag_facts(h);
    repo_facts(h, o);
    db_facts(h, dbs);
    om_proto_client_deadline(0);
    json_decref(dbs);
    local_facts(h);
    return h;
}

int cli_duration(const cli_args *a, const char *what, const char *text, uint64_t *seconds)
{
    if (om_duration_parse(text, seconds) || *seconds > UINT64_MAX / 1000000000u)
        return cli_usage(a, "%s takes a duration such as 90s, 30m, 36h, 8d or 2w, not '%s'", what,
                         text);
    return CLI_OK;
}
