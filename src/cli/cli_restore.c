/* ombra restore: bring a database back from the repository (backup/restore.h does the work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/restore.h"
#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "cli/cli.h"
#include "repl/dag.h"
#include "repl/reseed.h"
#include "store/client.h"

static void print_set(json_t *s)
{
    printf("using %s set %.12s (log generations %lld-%lld)\n",
           json_string_value(json_object_get(s, "type")),
           json_string_value(json_object_get(s, "id")),
           (long long)json_integer_value(json_array_get(json_object_get(s, "log_range"), 0)),
           (long long)json_integer_value(json_array_get(json_object_get(s, "log_range"), 1)));
}

/* Says which sets the restore uses before it lays the files down. */
static void say_chain(void *arg, json_t *sets)
{
    size_t i;
    json_t *s;
    json_array_foreach(sets, i, s) print_set(s);
    fflush(stdout);
}

/* ---- a restore in a DAG (docs/design.md "Restore in a DAG"; repl/reseed.h) ---- */

typedef struct dag_restore {
    rp_dag *d;           /* open when the target is a database of this server's DAG */
    char server[256];    /* this server */
    rp_restore_target t; /* the target in the DAG */
} dag_restore;

/* Before the restore: when this server is in a DAG (its store keeps its directory in the DAG's
 * etcd, or an ombra-repld runs here) and the target is a database of that DAG (a restore over the
 * database itself, or --to one), the target must be its active copy here: a restore on another
 * server (a passive copy's, whose store does not hold the database) is refused in one line naming
 * the active server. --to a replicated database is refused: the restore would give it the id of the
 * backup's database, and its passive copies a database that is not theirs. The recovery database
 * and new paths are never replicated: no check. */
static int dag_before(const bk_restore_opts *o, dag_restore *dr)
{
    const char *name = o->to ? o->to : o->db;
    if (o->recovery || o->edb) return 0;
    int rc = cli_local_dag(&dr->d, dr->server, sizeof dr->server);
    if (rc || !dr->d)
        return rc ? om_err_ctx(rc, "learning where database '%s' is active in this server's DAG",
                               name)
                  : 0;
    rc = rp_restore_where(dr->d, name, &dr->t);
    if (!rc && dr->t.in_dag && strcmp(dr->t.active, dr->server))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "database '%s' is in DAG %s and its active copy is %s%s, not on this server "
                     "(%s): a restore in a DAG goes to the active copy. HINT: run ombra restore on "
                     "%s (its passive copies are then reseeded from it), or restore here into a "
                     "recovery database with --recovery NAME",
                     name, dr->d->name, dr->t.active[0] ? "on server " : "on no server",
                     dr->t.active, dr->server, dr->t.active[0] ? dr->t.active : "the active");
    else if (!rc && dr->t.in_dag && o->to && dr->t.passives)
        rc =
            om_errf(OM_E_InvalidParameter,
                    "database '%s' has %d passive cop%s in DAG %s: a restore --to it would give it "
                    "and its copies the id of the backup's database. HINT: restore into a "
                    "recovery database with --recovery NAME, or remove its copies first",
                    name, dr->t.passives, dr->t.passives == 1 ? "y" : "ies", dr->d->name);
    if (rc || !dr->t.in_dag) {
        rp_dag_close(dr->d);
        dr->d = NULL;
    }
    return rc;
}

/* After a restore that replayed into the active copy: every passive copy of it asked to reseed
 * from it (res "reseeding": [{"server", "suspended"}]). A request that fails leaves the copies
 * Failed (they refuse the restored log stream), and the command fails saying how to mend it. */
static int dag_after(dag_restore *dr, json_t *res)
{
    json_t *copies = NULL;
    int rc = rp_reseed_after_restore(dr->d, dr->t.id, dr->server, &copies);
    if (rc)
        rc = om_err_ctx(rc,
                        "the database is restored, but its passive copies could not be asked to "
                        "reseed from it (they refuse its log stream until they are). HINT: ombra "
                        "db copy reseed %s --server S for each copy",
                        json_string_value(json_object_get(res, "target")));
    else
        json_object_set_new(res, "reseeding", copies);
    return rc;
}

static void print_reseeding(json_t *res)
{
    json_t *copies = json_object_get(res, "reseeding"), *c;
    size_t i;
    if (!json_array_size(copies)) return;
    printf("passive copies of %s being reseeded from this server's restored copy:",
           json_string_value(json_object_get(res, "target")));
    json_array_foreach(copies, i, c)
    {
        int sus = json_is_true(json_object_get(c, "suspended"));
        printf("%s %s%s", i ? "," : "", json_string_value(json_object_get(c, "server")),
               sus ? " (suspended: when resumed)" : "");
    }
    printf("\n(ombra db copy status %s shows them)\n",
           json_string_value(json_object_get(res, "target")));
}

static int cmd_restore(const cli_args *a)
{
    bk_restore_opts o = {.db = a->pos[0],
                         .set_id = cli_val(a, "set"),
                         .to = cli_val(a, "to"),
                         .recovery = cli_val(a, "recovery"),
                         .no_replay = cli_flag(a, "no-replay"),
                         .mount = cli_flag(a, "mount"),
                         .no_roll_forward = cli_flag(a, "no-roll-forward"),
                         .progress = isatty(2) && !cli_flag(a, "json")};
    if (!cli_flag(a, "json")) o.on_chain = say_chain;
    uint64_t gen = 0;
    int rc;
    if (cli_val(a, "until-gen") &&
        (rc = cli_number(a, "--until-gen", cli_val(a, "until-gen"), 1, 0xFFFFFFF0u, 0, &gen)))
        return rc;
    o.until_gen = (uint32_t)gen;
    /* The whole span the time names: a time printed to the millisecond (truncated) then covers
     * the instant printed (base/time.h). */
    uint64_t first_ns;
    if (cli_val(a, "until-time") &&
        om_time_parse(cli_val(a, "until-time"), &first_ns, &o.until_time_ns))
        return cli_usage(a, "--until-time %s", om_err_detail());
    if (!!o.set_id + !!o.until_gen + !!o.until_time_ns > 1)
        return cli_usage(a, "--set, --until-gen and --until-time exclude each other");
    int targets = !!o.to + !!o.recovery + !!cli_val(a, "edb");
    if (targets > 1) return cli_usage(a, "give one of --to, --recovery or --edb/--logs");
    if (!!cli_val(a, "edb") != !!cli_val(a, "logs"))
        return cli_usage(a, "--edb and --logs go together");
    char pbuf[1024];
    const char *pass = NULL, *repo_name;
    char *repo = NULL;
    if ((rc = cli_repo_path(a, &repo, &repo_name))) return rc;
    if ((rc = cli_repo_passphrase(a, pbuf, sizeof pbuf, &pass))) {
        free(repo);
        return cli_fail(rc);
    }
    o.passphrase = pass;
    char *edb = cli_val(a, "edb") ? cli_abs_path(cli_val(a, "edb")) : NULL;
    char *logs = cli_val(a, "logs") ? cli_abs_path(cli_val(a, "logs")) : NULL;
    o.repo = repo;
    o.edb = edb;
    o.logs = logs;
    json_t *res = NULL;
    om_err_saved failed; /* past the printing */
    dag_restore dr = {0};
    rc = om_err_save(&failed, dag_before(&o, &dr));
    if (!rc) rc = om_err_save(&failed, bk_restore_run(&o, &res));
    int restored = !rc && res; /* what it did is printed even when the reseed request fails */
    /* Additional restores to come: the copies are reseeded after the one that replays. */
    if (!rc && dr.d && json_is_object(json_object_get(res, "replay")))
        rc = om_err_save(&failed, dag_after(&dr, res));
    rp_dag_close(dr.d);
    memset(pbuf, 0, sizeof pbuf);
    free(repo);
    free(edb);
    free(logs);
    int out = CLI_OK;
    if (cli_flag(a, "json") && res) {
        if (rc) { /* what it did, and why it failed */
            om_err_restore(&failed);
            cli_json_add_error(res, rc);
        }
        out = cli_print_json(res);
    } else if (restored) {
        json_t *rp = json_object_get(res, "replay");
        double mb = (double)json_integer_value(json_object_get(res, "bytes")) / 1e6,
               lay = json_real_value(json_object_get(res, "lay_seconds"));
        printf("restored %s into %s: %lld files, %.1f MB laid down in %.2f s (%.0f MB/s)", o.db,
               json_string_value(json_object_get(res, "target")),
               (long long)json_integer_value(json_object_get(res, "files")), mb, lay,
               lay > 0 ? mb / lay : 0.0);
        if (json_is_object(rp))
            printf("; generations %lld-%lld replayed (%lld transactions)%s; %.2f s in all\n",
                   (long long)json_integer_value(json_object_get(rp, "first_gen")),
                   (long long)json_integer_value(json_object_get(rp, "last_gen")),
                   (long long)json_integer_value(json_object_get(rp, "transactions")),
                   json_is_true(json_object_get(rp, "stopped_at_point")) ? ", stopped at the point"
                                                                         : "",
                   json_real_value(json_object_get(res, "seconds")));
        else
            printf("; not replayed (additional restores to come: restore the next backup with "
                   "--set, or ombra dbutil recover)\n");
        const char *end = json_string_value(json_object_get(rp, "roll_forward_ended"));
        if (end) printf("note: %s\n", end);
        const char *copy_of = json_string_value(json_object_get(res, "copy_of"));
        if (copy_of)
            printf("note: %s is now a recovery database: it holds a copy of %s, a database of "
                   "this server, and carries its id (never backed up, one mounted at a time)\n",
                   json_string_value(json_object_get(res, "target")), copy_of);
        print_reseeding(res);
    }
    json_decref(res);
    if (rc) {
        om_err_restore(&failed);
        return cli_fail(rc);
    }
    return out;
}

static const cli_opt restore_opts[] = {
    CLI_REPO_OPT,
    {"set", "ID", "restore up to this set (an id prefix); default: the newest chain", 0},
    {"until-gen", "N", "replay no log generation past N", 0},
    {"until-time", "T",
     "replay no transaction committed after T: ISO 8601 with its zone (2026-12-04T08:45:19.668Z, "
     "...+05:30), as ombra prints times; T covers the whole millisecond (or second) it is "
     "written to",
     0},
    {"to", "DB",
     "restore into another database (dismounted, allowing restore); it becomes a recovery "
     "database when a database of this server carries the backup's id",
     0},
    {"recovery", "NAME", "restore into the recovery database", 0},
    {"edb", "PATH", "restore to new paths: the database file", 0},
    {"logs", "DIR", "restore to new paths: the log folder", 0},
    {"no-replay", NULL, "lay the files down only (additional restores follow)", 0},
    {"no-roll-forward", NULL,
     "replay only the restored logs, not the later ones still in the log folder", 0},
    {"mount", NULL, "mount the database afterwards", 0},
    CLI_PASS_OPT,
    {"json", NULL, "print JSON: sets used, bytes, seconds, generations replayed", 0},
    {0}};

static const cli_cmd restore_cmds[] = {
    {"", "DB", restore_opts, "restore a database from the repository",
     "DB is the database whose backups to restore: a database of this server, or the name or id "
     "of one in the repository (a database gone from this server: restore it --to another, "
     "--recovery or --edb/--logs). A backup made on another server restores here, through this "
     "server's writer. Two ordinary databases never carry one id: a restore --to a database "
     "next to one that carries the backup's id (the live original) makes the target a recovery "
     "database, and says so.\n"
     "Picks the chain (the newest full backup and the incrementals after it, or its newest "
     "differential) and says which sets it uses, lays the files down on every core through the "
     "store's writer, checking every block and file, and lets the writer replay the logs while "
     "they are laid down. Over the original database replay rolls forward through the later "
     "logs in its folder while they continue the chain. A failed restore leaves the target "
     "unmountable (-506) until a restore, or ombra dbutil recover, finishes it.\n"
     "On a terminal (stderr a tty, no --json) two progress bars on stderr: the bytes laid down, "
     "then the log generations the store's writer has replayed.\n"
     "In a DAG a database is restored on the server of its active copy (elsewhere the restore is "
     "refused, naming that server; a recovery database takes a set on any server); once the "
     "restore has replayed, every passive copy is reseeded from the restored active by its own "
     "ombra-repld, and the command says which (a suspended copy once it is resumed).",
     cmd_restore},
    {0},
};

const cli_group cli_restore_group = {"restore", "restore a database from a repository",
                                     restore_cmds};
