/* ombra backup: the backup application's backup command (backup/job.h does the work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/job.h"
#include "backup/runs.h"
#include "base/config.h"
#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "repl/remote_backup.h"
#include "store/client.h"
#include "cli/cli.h"

/* ---- in a DAG: which copy (spec §8) ---- */

typedef struct pick {
    const char *db;
    char server[80];
    int passive, local;
} pick;

/* The copy of db the backup reads: with from NULL or "passive" the Healthy passive copy with the
 * shortest replay queue, then the best activation preference (NULL: the active when there is
 * none, saying so); "active": the active; a server name: that server's copy. A database the DAG
 * does not have is this server's own (local). */
static int choose(rp_dag *d, const char *db, const char *from, const char *here, pick *p)
{
    json_t *rows = NULL, *r, *best = NULL, *active = NULL;
    size_t i;
    p->db = db;
    int rc = rp_dag_copy_rows(d, db, &rows);
    if (rc == OM_E_DatabaseNotFound) {
        if (from && strcmp(from, "passive") && strcmp(from, "active") && strcmp(from, here))
            return om_errf(OM_E_InvalidParameter,
                           "--from %s: database '%s' is not in DAG %s, so server %s holds no copy "
                           "of it. HINT: back it up without --from, on the server that has it",
                           from, db, d->name, from);
        snprintf(p->server, sizeof p->server, "%s", here);
        p->local = 1;
        return 0;
    }
    if (rc) return om_err_ctx(rc, "the copies of '%s'", db);
    json_array_foreach(rows, i, r)
    {
        const char *srv = om_json_str_or(r, "server", "");
        if (json_is_true(json_object_get(r, "active"))) active = r;
        if (from && strcmp(from, "passive") && strcmp(from, "active")) {
            if (!strcmp(srv, from)) best = r;
            continue;
        }
        if (json_is_true(json_object_get(r, "active")) ||
            strcmp(om_json_str_or(r, "state", ""), "Healthy"))
            continue;
        if (!best ||
            om_json_int_or(r, "replay_queue", 0) < om_json_int_or(best, "replay_queue", 0) ||
            (om_json_int_or(r, "replay_queue", 0) == om_json_int_or(best, "replay_queue", 0) &&
             om_json_int_or(r, "preference", 0) < om_json_int_or(best, "preference", 0)))
            best = r;
    }
    if (from && !strcmp(from, "active")) best = active;
    if (!best && !from && active) {
        best = active;
        fprintf(stderr,
                "ombra: %s has no Healthy passive copy: backing up its active copy on "
                "server %s\n",
                db, om_json_str_or(active, "server", "?"));
    }
    if (!best) {
        if (from && !strcmp(from, "passive"))
            rc = om_errf(OM_E_DatabaseUnavailable,
                         "database '%s' has no Healthy passive copy to back up. HINT: ombra db "
                         "copy status %s says why; --from active backs up the active copy",
                         db, db);
        else if (from && strcmp(from, "active"))
            rc = om_errf(OM_E_InvalidParameter,
                         "--from %s: server %s holds no copy of database '%s'. HINT: ombra db "
                         "copy status %s",
                         from, from, db, db);
        else
            rc = om_errf(OM_E_DatabaseUnavailable, "database '%s' has no active copy", db);
    } else {
        snprintf(p->server, sizeof p->server, "%s", om_json_str_or(best, "server", ""));
        p->passive = !json_is_true(json_object_get(best, "active"));
        p->local = !strcmp(p->server, here);
    }
    json_decref(rows);
    return rc;
}

/* Appends the arrays and adds the figures of one run's result to the whole's. */
static void merge(json_t *all, json_t *one)
{
    static const char *const arrays[] = {"sets", "databases", "failed", "copies"};
    static const char *const sums[] = {"bytes_read", "bytes_stored", "blocks_stored_again"};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) {
        json_t *to = json_object_get(all, arrays[i]);
        if (!to) json_object_set_new(all, arrays[i], to = json_array());
        json_array_extend(to, json_object_get(one, arrays[i]));
    }
    for (size_t i = 0; i < sizeof sums / sizeof sums[0]; i++)
        json_object_set_new(
            all, sums[i],
            json_integer(om_json_int_or(all, sums[i], 0) + om_json_int_or(one, sums[i], 0)));
    static const char *const maxima[] = {"seconds", "freeze_ms", "snapshot_ms"};
    for (size_t i = 0; i < sizeof maxima / sizeof maxima[0]; i++) {
        double a = json_number_value(json_object_get(all, maxima[i])),
               b = json_number_value(json_object_get(one, maxima[i]));
        json_object_set_new(all, maxima[i], json_real(b > a ? b : a));
    }
}

/* The databases whose chosen copy is on server (each once), for one run there. */
static size_t group(const pick *p, size_t n, const char *server, const char **out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p[i].server, server)) out[k++] = p[i].db;
    return k;
}

/* A run of databases dbs (m) on another server, by its ombra-repld (remote_backup.h), asked
 * through this server's DAG certificate (*tls: loaded at the first run, the caller's to free). */
static int remote_run(const bk_job_opts *o, rp_dag *d, rp_tls **tls, const char *server,
                      const char *const *dbs, size_t m, int each_alone, json_t **one)
{
    char dir[4096];
    int rc = *tls ? 0 : om_data_dir(dir, sizeof dir - 8);
    if (!rc && !*tls) {
        strcat(dir, "/dag");
        if ((rc = rp_tls_load(dir, tls)))
            return om_err_ctx(rc,
                              "a backup of the copy on server %s is asked through this server's "
                              "DAG certificate (run as root, run ombra backup on %s, or --from "
                              "here for this server's copy)",
                              server, server);
    }
    if (rc) return rc;
    json_t *names = json_array();
    for (size_t k = 0; k < m; k++)
        json_array_append_new(names, json_string(dbs[k]));
    json_t *req =
        json_pack("{s:s,s:o,s:s,s:s,s:s,s:i,s:s?,s:b}", "op", "backup.run", "dbs", names, "type",
                  o->type, "repo", o->repo, "provider", o->provider ? o->provider : "auto",
                  "threads", o->threads, "passphrase", o->passphrase, "each_alone", each_alone);
    return rp_remote_backup(d, *tls, server, req, one);
}

/* The runs: the databases whose copy is here, on this server; each other server's, there
 * (remote_backup.h). The first failure is returned (each run's result merged into *res). */
static int run_all(const bk_job_opts *o, rp_dag *d, const pick *p, size_t n, const char *here,
                   json_t *res)
{
    const char *dbs[BK_MAX_DBS];
    int first = 0;
    om_err_saved failed;
    rp_tls *tls = NULL;
    for (size_t i = 0; i < n; i++) {
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = !strcmp(p[k].server, p[i].server);
        if (seen) continue;
        size_t m = group(p, n, p[i].server, dbs);
        json_t *one = NULL;
        int rc;
        if (p[i].local) {
            bk_job_opts lo = *o;
            lo.dbs = dbs;
            lo.ndb = m;
            lo.from = NULL; /* the copy chosen is the one here */
            rc = bk_backup_run(&lo, &one);
        } else
            rc = remote_run(o, d, &tls, p[i].server, dbs, m, 0, &one);
        if (one) merge(res, one);
        json_decref(one);
        if (rc && !first) first = om_err_save(&failed, rc);
    }
    rp_tls_free(tls);
    if (first) om_err_restore(&failed);
    return first;
}

/* In a DAG, each database's copy chosen (and said: which server, passive or active) and the
 * backups run where the copies are; elsewhere the local run as it always was. */
static int backup_where(const bk_job_opts *o, json_t **res)
{
    rp_dag *d = NULL;
    char here[80] = "";
    int rc = o->from && !strcmp(o->from, "here") ? 0 : cli_local_dag(&d, here, sizeof here);
    if (rc)
        return om_err_ctx(rc, "asking this server's DAG which copy to back up (--from here backs "
                              "up this server's copy without asking)");
    if (!d) {
        bk_job_opts lo = *o;
        if (lo.from && !strcmp(lo.from, "here")) lo.from = NULL;
        return bk_backup_run(&lo, res);
    }
    /* Each database once (a name given twice is backed up once, as on one server); never more
     * than a run takes, and never one dropped. */
    pick p[BK_MAX_DBS];
    size_t n = 0;
    for (size_t i = 0; i < o->ndb && !rc; i++) {
        int seen = 0;
        for (size_t k = 0; k < n && !seen; k++)
            seen = !strcmp(p[k].db, o->dbs[i]);
        if (seen) continue;
        if (n == sizeof p / sizeof p[0])
            rc = om_errf(OM_E_InvalidParameter, "name 1 to %zu databases in one backup",
                         sizeof p / sizeof p[0]);
        else
            rc = choose(d, o->dbs[i], o->from, here, &p[n++]);
    }
    *res = json_pack("{s:s, s:[], s:[], s:[], s:[], s:s}", "type", o->type, "sets", "databases",
                     "failed", "copies", "dag", d->name);
    if (!rc) rc = run_all(o, d, p, n, here, *res);
    rp_dag_close(d);
    return rc;
}

/* --all: every ordinary mounted database of this server's store (not a recovery database: it is
 * never backed up), in one shadow copy. names (BK_MAX_DBS) are views into *list. */
static int all_mounted(json_t **list, const char **names, size_t *n)
{
    store_client *sc = NULL;
    json_t *dbs = NULL, *d;
    size_t i;
    *n = 0;
    int rc = store_client_new(NULL, &sc);
    if (!rc) rc = store_client_db_list(sc, &dbs);
    store_client_free(sc);
    if (rc) return om_err_ctx(rc, "--all: listing this server's databases");
    json_array_foreach(dbs, i, d)
    {
        if (!json_is_true(json_object_get(d, "mounted")) ||
            json_is_true(json_object_get(d, "recovery")))
            continue;
        if (*n == BK_MAX_DBS) {
            json_decref(dbs);
            return om_errf(OM_E_InvalidParameter, "--all: more than %d mounted databases",
                           BK_MAX_DBS);
        }
        names[(*n)++] = om_json_str_or(d, "name", "");
    }
    *list = dbs;
    if (!*n)
        return om_errf(OM_E_DatabaseNotFound,
                       "--all: this server has no mounted database to back up (recovery "
                       "databases are never backed up). HINT: ombra db list");
    return 0;
}

/* The copies of server that --all selects in a DAG, from its records: its passive copies
 * (passive_only), else every copy it holds. A passive copy that is not Healthy is not backed up:
 * it fails alone, its entry in failed with one line saying its state; the others' names go in
 * names (views into *rows), each once. */
static int dag_copies(rp_dag *d, const char *server, int passive_only, json_t **rows,
                      const char **names, size_t *n, json_t *failed)
{
    json_t *r;
    size_t i;
    int rc = rp_dag_copy_rows(d, NULL, rows);
    if (rc) return om_err_ctx(rc, "--all: the copies of DAG %s", d->name);
    json_array_foreach(*rows, i, r)
    {
        const char *db = om_json_str_or(r, "database", ""), *state = om_json_str_or(r, "state", "");
        int active = json_is_true(json_object_get(r, "active"));
        if (strcmp(om_json_str_or(r, "server", ""), server) || (passive_only && active)) continue;
        if (!active && strcmp(state, "Healthy")) {
            const char *why = om_json_str_or(r, "last_error", "");
            json_array_append_new(failed, json_pack("{s:{s:s,s:s}, s:i, s:s++++}", "database", "id",
                                                    om_json_str_or(r, "id", ""), "name", db,
                                                    "error", OM_E_DatabaseUnavailable, "message",
                                                    db, ": the passive copy on server ", server,
                                                    " is ", state));
            json_t *f = json_array_get(failed, json_array_size(failed) - 1);
            char line[1400];
            snprintf(
                line, sizeof line,
                "%s: not backed up: the passive copy on server %s is %s, not Healthy%s%.600s%s. "
                "HINT: ombra db copy status %s",
                db, server, state, *why ? " (" : "", why, *why ? ")" : "", db);
            json_object_set_new(f, "message", json_string(line));
            continue;
        }
        if (*n == BK_MAX_DBS)
            return om_errf(OM_E_InvalidParameter,
                           "--all: server %s holds more than %d copies; one backup takes at most "
                           "%d databases. HINT: name the databases, in several backups",
                           server, BK_MAX_DBS, BK_MAX_DBS);
        names[(*n)++] = db;
    }
    return 0;
}

/* The failures of copies not backed up (dag_copies) added to the run's result; the first is
 * the run's failure when the run itself did not fail. */
static int add_failed(json_t *res, json_t *failed, int rc)
{
    size_t i;
    json_t *f;
    json_array_foreach(failed, i, f)
    {
        json_array_append(json_object_get(res, "databases"), json_object_get(f, "database"));
        json_array_append(json_object_get(res, "failed"), f);
    }
    if (!rc && json_array_size(failed))
        rc = om_errf(OM_E_DatabaseUnavailable, "%s",
                     om_json_str_or(json_array_get(failed, 0), "message", "?"));
    return rc;
}

/* The run of --all over the copies of server: here, in one shadow copy; on another server, by
 * its ombra-repld (remote_backup.h), in one shadow copy there. */
static int all_run(const bk_job_opts *o, rp_dag *d, const char *server, const char *here,
                   json_t **res)
{
    bk_job_opts lo = *o;
    lo.from = NULL; /* the copies chosen are the server's own */
    lo.each_alone = 1;
    if (!d || !strcmp(server, here)) return bk_backup_run(&lo, res);
    rp_tls *tls = NULL;
    int rc = remote_run(o, d, &tls, server, o->dbs, o->ndb, 1, res);
    rp_tls_free(tls);
    return rc;
}

/* --all (ARCHITECTURE.md, "backup --all"): every database this server's store mounts (one server,
 * --from active or --from here), or in a DAG the copies --from selects: this server's passive
 * copies (passive), or every copy a server holds (its name: this server's, or another's, backed
 * up there), in one shadow copy of that server. The names backed up are left in *names, views
 * into *keep, for the record of the run (runs.h). */
static int all_where(bk_job_opts *o, json_t **keep, const char **names, json_t **res)
{
    rp_dag *d = NULL;
    char here[80] = "";
    const char *from = o->from;
    int rc = from && !strcmp(from, "here") ? 0 : cli_local_dag(&d, here, sizeof here);
    if (rc) return om_err_ctx(rc, "--all: asking this server's DAG which copies it holds");
    if (d && !from) {
        rp_dag_close(d);
        return om_errf(OM_E_InvalidParameter,
                       "--all in a DAG needs --from: active (this server's active copies), "
                       "passive (its passive copies) or a server's name (every copy it holds)");
    }
    int mounted = !d || !strcmp(from, "active") || !strcmp(from, here);
    json_t *rows = NULL, *failed = json_array();
    size_t n = 0;
    if (mounted && (rc = all_mounted(keep, names, &n)) == OM_E_DatabaseNotFound && d &&
        strcmp(from, "active")) {
        om_err_clear(); /* no active copy here: its passive copies may be all there is */
        rc = 0;
    }
    if (!rc && d && strcmp(from, "active"))
        rc = dag_copies(d, strcmp(from, "passive") ? from : here,
                        !strcmp(from, "passive") || !strcmp(from, here), &rows, names, &n, failed);
    o->dbs = names;
    o->ndb = n;
    if (!rc && !n && !json_array_size(failed))
        rc = om_errf(OM_E_DatabaseNotFound,
                     "--all --from %s: server %s holds no %scopy of a database of DAG %s. HINT: "
                     "ombra db copy status",
                     from, strcmp(from, "passive") ? from : here,
                     !strcmp(from, "passive") ? "passive " : "", d ? d->name : "?");
    if (!rc && n) /* one server: its store's databases, as they always were */
        rc = all_run(o, d, d && strcmp(from, "passive") ? from : here, here, res);
    if (!*res)
        *res = json_pack("{s:s, s:[], s:[], s:[], s:[]}", "type", o->type, "sets", "databases",
                         "failed", "copies");
    if (d) json_object_set_new(*res, "dag", json_string(d->name));
    rc = add_failed(*res, failed, rc);
    json_decref(failed);
    if (rows) { /* the names are views into rows: kept with the store's list */
        if (!*keep) *keep = json_array();
        json_array_append_new(*keep, rows);
    }
    rp_dag_close(d);
    return rc;
}

static int cmd_backup(const cli_args *a)
{
    const char *type = cli_val(a, "type");
    if (strcmp(type, "full") && strcmp(type, "copy") && strcmp(type, "incremental") &&
        strcmp(type, "differential"))
        return cli_usage(a, "--type must be full, copy, incremental or differential, not '%s'",
                         type);
    const char *prov = cli_val(a, "provider") ? cli_val(a, "provider") : "auto";
    if (strcmp(prov, "auto") && strcmp(prov, "held") && strcmp(prov, "reflink") &&
        strcmp(prov, "btrfs") && strcmp(prov, "copy"))
        return cli_usage(a, "--provider must be auto, held, reflink, btrfs or copy, not '%s'",
                         prov);
    uint64_t threads = 0;
    int rc;
    if (cli_val(a, "threads") &&
        (rc = cli_number(a, "--threads", cli_val(a, "threads"), 1, 64, 0, &threads)))
        return rc;
    char pbuf[1024];
    const char *pass = NULL;
    char *repo = NULL;
    const char *repo_name;
    if ((rc = cli_repo_path(a, &repo, &repo_name))) return rc;
    if ((rc = cli_repo_passphrase(a, pbuf, sizeof pbuf, &pass))) {
        free(repo);
        return cli_fail(rc);
    }
    const char *from = cli_val(a, "from");
    if (from && !*from) {
        free(repo);
        return cli_usage(a, "--from needs active, passive or a server name");
    }
    int all = cli_flag(a, "all");
    if (all && a->npos) {
        free(repo);
        return cli_usage(a, "--all backs up every mounted database: name none with it");
    }
    if (!all && !a->npos) {
        free(repo);
        return cli_usage(a, "name the databases to back up, or --all");
    }
    json_t *listed = NULL;            /* --all: what the names are views into */
    const char *allnames[BK_MAX_DBS]; /* --all: the databases selected (all_where) */
    /* A full that reads every page at least every N fulls: --read-all-every, else the
     * repository's read-all-every, else [ombra]'s, else 4 (docs/configuration.md). */
    char sect[300];
    snprintf(sect, sizeof sect, "repo:%s", repo_name ? repo_name : "");
    const char *every_s = cli_val(a, "read-all-every");
    if (!every_s && repo_name) every_s = om_conf(sect, "read-all-every");
    if (!every_s) every_s = om_conf("ombra", "read-all-every");
    uint64_t every = 4;
    if (every_s && (rc = cli_number(a, "--read-all-every", every_s, 1, 1000000, 0, &every))) {
        free(repo);
        json_decref(listed);
        return rc;
    }
    bk_job_opts o = {.repo = repo,
                     .passphrase = pass,
                     .type = type,
                     .provider = prov,
                     .dbs = a->pos,
                     .ndb = all ? 0 : (size_t)a->npos,
                     .threads = (int)threads,
                     .from = from,
                     .read_all = cli_flag(a, "read-all"),
                     .read_all_every = (unsigned)every,
                     .progress = isatty(2) && !cli_flag(a, "json")};
    json_t *res = NULL;
    om_err_saved failed; /* past the printing */
    uint64_t t0 = om_now_ns();
    rc =
        om_err_save(&failed, all ? all_where(&o, &listed, allnames, &res) : backup_where(&o, &res));
    /* Its outcome for ombra check and ombra metrics (backup/runs.h): failures too. */
    bk_run run = {o.dbs, o.ndb, type, repo, t0, om_now_ns(), rc, failed.detail, res};
    if (bk_runs_record(NULL, &run)) fprintf(stderr, "ombra: warning: %s\n", om_err_detail());
    memset(pbuf, 0, sizeof pbuf);
    free(repo);
    int out = CLI_OK;
    if (cli_flag(a, "json") && res) {
        /* a failure no database's entry in "failed" names (the repository, the shadow copy, a
         * database the store does not have) is the document's "error" */
        if (rc && !json_array_size(json_object_get(res, "failed"))) {
            om_err_restore(&failed);
            cli_json_add_error(res, rc);
        }
        out = cli_print_json(res);
    } else if (!cli_flag(a, "json")) {
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(res, "copies"), i, s)
        {
            if (!json_object_get(res, "dag")) break; /* one server: no choice of copy */
            printf("%s: backed up the %s copy on server %s\n",
                   om_json_str_or(json_object_get(s, "database"), "name", "?"),
                   om_json_str_or(s, "copy", "?"), om_json_str_or(s, "server", "?"));
        }
        json_array_foreach(json_object_get(res, "sets"), i, s)
        {
            json_t *lr = json_object_get(s, "log_range");
            char hb[32];
            printf("%s: %s backup set %s, log generations %lld-%lld, %s stored\n",
                   om_json_str_or(json_object_get(s, "database"), "name", "?"), type,
                   om_json_str_or(s, "id", "?"),
                   (long long)json_integer_value(json_array_get(lr, 0)),
                   (long long)json_integer_value(json_array_get(lr, 1)),
                   cli_human_bytes((uint64_t)json_integer_value(json_object_get(s, "bytes_stored")),
                                   hb, sizeof hb));
            if (om_json_int_or(s, "blocks_stored_again", 0))
                printf("  %lld block%s the repository held only as damaged copies stored again: "
                       "older sets that name them use the fresh copies\n",
                       (long long)om_json_int_or(s, "blocks_stored_again", 0),
                       om_json_int_or(s, "blocks_stored_again", 0) == 1 ? "" : "s");
            json_t *cm = json_object_get(s, "changemap");
            if (om_json_int_or(cm, "regions_read_again_damaged", 0))
                printf("  %lld region%s read again: the previous full's block%s there %s damaged\n",
                       (long long)om_json_int_or(cm, "regions_read_again_damaged", 0),
                       om_json_int_or(cm, "regions_read_again_damaged", 0) == 1 ? "" : "s",
                       om_json_int_or(cm, "regions_read_again_damaged", 0) == 1 ? "" : "s",
                       om_json_int_or(cm, "regions_read_again_damaged", 0) == 1 ? "is" : "are");
            if (json_is_true(json_object_get(cm, "read_all")))
                printf("  every page read and checked: %s\n", om_json_str_or(cm, "reason", "?"));
            else if (cm)
                printf("  synthetic full: %lld pages read and checked now, %lld reused from set "
                       "%.12s\n",
                       (long long)om_json_int_or(cm, "pages_checked_now", 0),
                       (long long)om_json_int_or(cm, "pages_reused", 0),
                       om_json_str_or(cm, "reused_from", "?"));
        }
        /* Each database that failed alone, one line each (the run's own failure last). */
        json_array_foreach(json_object_get(res, "failed"), i, s)
        {
            const char *m = om_json_str_or(s, "message", "?");
            if (!rc || strcmp(m, failed.detail)) fprintf(stderr, "ombra: %s\n", m);
        }
        double secs = json_real_value(json_object_get(res, "seconds"));
        double read = (double)json_integer_value(json_object_get(res, "bytes_read"));
        char hb[32];
        /* The summary of a backup that ran: a refusal before anything was read is one line. */
        if (!rc || json_array_size(json_object_get(res, "sets")) || read > 0)
            printf(
                "read %.1f MB in %.2f s (%.0f MB/s), stored %s; writes held %.1f ms\n", read / 1e6,
                secs, secs > 0 ? read / 1e6 / secs : 0.0,
                cli_human_bytes((uint64_t)json_integer_value(json_object_get(res, "bytes_stored")),
                                hb, sizeof hb),
                json_number_value(json_object_get(res, "freeze_ms")));
    }
    json_decref(res);
    json_decref(listed);
    if (rc) {
        om_err_restore(&failed);
        return cli_fail(rc);
    }
    return out;
}

static const cli_opt backup_opts[] = {
    CLI_REPO_OPT,
    {"type", "TYPE", "full, copy, incremental or differential", 1},
    {"provider", "P", "auto (default), held, reflink, btrfs or copy", 0},
    {"threads", "N",
     "threads reading, compressing and writing, for each database (default: two a core, shared "
     "among the databases, at least one a core each)",
     0},
    {"read-all", NULL, "full: read and check every page (no synthetic full)", 0},
    {"read-all-every", "N",
     "full: read every page at least every N fulls (default: read-all-every in ombra.conf, else "
     "4)",
     0},
    {"from", "COPY",
     "in a DAG: passive, active, a server's name, or here (default: the best Healthy passive "
     "copy on any server, else the active)",
     0},
    {"all", NULL,
     "every mounted database of this server (not recovery databases), in one shadow copy; in a "
     "DAG the copies --from selects: active, passive (this server's passive copies) or a "
     "server's name (every copy it holds)",
     0},
    CLI_PASS_OPT,
    {"json", NULL,
     "print JSON: sets, type, databases, log ranges, bytes, seconds, freeze_ms (writes held) "
     "and freeze (what the freeze cost)",
     0},
    {0}};

static const cli_cmd backup_cmds[] = {
    {"", "[DB]...", backup_opts, "back up databases of this server into a repository",
     "Drives the shadow copy sequence through ombra-vssd, checks the shadow copy (every page for "
     "full and copy backups, the log range for all), stores only blocks the repository does not "
     "have, and lets the writer truncate logs only for what was stored and verified. A database "
     "named twice is backed up once.\n\nIn a DAG the backup reads a passive copy (--from "
     "passive, the default): the Healthy one with the shortest replay queue, then the best "
     "activation preference, on whichever server holds it; the active's users feel nothing. A "
     "copy on another server is backed up there, by its ombra-repld, into the same repository "
     "path (it must reach the same repository: shared storage), and the output says which copy "
     "was read. The active records the backup in its header (a log record every copy replays) "
     "and truncates. With no Healthy passive copy the active is backed up, and it says so "
     "(--from passive refuses instead); --from active, --from SERVER and --from here choose.\n\n"
     "--all backs up up to 100 databases in one shadow copy, each in its own set; in a DAG it "
     "needs --from: active (this server's active copies), passive (every passive copy this "
     "server holds; the replica writer freezes them together) or a server's name (every copy "
     "that server holds, backed up there). A database that cannot be backed up (a copy not "
     "Healthy, one another backup holds, a type its active refuses) fails alone, one line each, "
     "and the others are backed up; the exit status is 1 when any failed.",
     cmd_backup},
    {0},
};

const cli_group cli_backup_group = {"backup",
                                    "back up databases (full, copy, incremental, "
                                    "differential)",
                                    backup_cmds};
