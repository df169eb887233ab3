/* ombra check: is this server able to take its next backup, and are its last ones recent
 * (pgBackRest's check, as a Nagios plugin). The facts come from cli_health_gather (cli_health.c);
 * this file only judges them: one check per line, OK, WARNING or CRITICAL, and the worst of
 * them is the exit status (0, 1, 2; 3 UNKNOWN when the check itself could not run). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/error.h"
#include "base/proto.h"
#include "base/time.h"
#include "cli/cli.h"

/* The Nagios plugin statuses (also the exit statuses), in order of severity but UNKNOWN, which
 * ranks between WARNING and CRITICAL. */
enum { ST_OK = 0, ST_WARNING = 1, ST_CRITICAL = 2, ST_UNKNOWN = 3 };
static const char *const st_name[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};
static const int st_rank[] = {0, 1, 3, 2};

#define DEFAULT_FULL_AGE (8 * 86400u) /* a weekly full, a day late */
#define DEFAULT_INC_AGE  (2 * 86400u) /* a daily incremental, a day late */
#define DEFAULT_LOG_FREE 10u          /* percent */

typedef struct checks {
    json_t *list; /* [{"check", "status", "message", ...}] */
    int worst;
    int count[4];
    uint64_t now_ns;
} checks;

/* Adds one check; extra (stolen, may be NULL) adds its fields to the JSON. */
static void add(checks *c, int st, const char *name, json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void add(checks *c, int st, const char *name, json_t *extra, const char *fmt, ...)
{
    char msg[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s, s:s, s:s}", "check", name, "status", st_name[st], "message", msg);
    if (extra) json_object_update(o, extra);
    json_decref(extra);
    json_array_append_new(c->list, o);
    if (st_rank[st] > st_rank[c->worst]) c->worst = st;
    c->count[st]++;
}

/* "3d 4h", "2h 5m", "4m 10s", "12s" into buf. */
static const char *age_str(uint64_t s, char *buf, size_t n)
{
    if (s >= 86400)
        snprintf(buf, n, "%llud %lluh", (unsigned long long)(s / 86400),
                 (unsigned long long)(s % 86400 / 3600));
    else if (s >= 3600)
        snprintf(buf, n, "%lluh %llum", (unsigned long long)(s / 3600),
                 (unsigned long long)(s % 3600 / 60));
    else if (s >= 60)
        snprintf(buf, n, "%llum %llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
    else
        snprintf(buf, n, "%llus", (unsigned long long)s);
    return buf;
}

/* ---- the daemons ---- */

static void check_daemon(checks *c, json_t *d, const char *name, const char *hint)
{
    if (json_is_true(json_object_get(d, "up")))
        add(c, ST_OK, name, NULL, "%s answers on %s", name, om_json_str_or(d, "socket", "?"));
    else if (json_is_true(json_object_get(d, "timed_out")))
        add(c, ST_CRITICAL, name, NULL,
            "%s does not answer within %lld s on %s: it is stopped or hung. HINT: look at its "
            "log; restart it",
            name, (long long)om_json_int_or(d, "deadline_seconds", 0),
            om_json_str_or(d, "socket", "?"));
    else { /* one HINT a line: the error's own (how to reach the daemon), else ours */
        const char *e = om_json_str_or(d, "error", "?");
        add(c, ST_CRITICAL, name, NULL, "%s does not answer on %s: %s%s%s", name,
            om_json_str_or(d, "socket", "?"), e,
            strstr(e, "HINT:") ? "" : ". HINT: ", strstr(e, "HINT:") ? "" : hint);
    }
}

static void check_writers(checks *c, json_t *h)
{
    json_t *ws = json_object_get(json_object_get(h, "vssd"), "writers"), *w;
    if (!json_is_true(json_object_get(json_object_get(h, "vssd"), "up"))) return;
    size_t i;
    int store_writer = 0;
    json_array_foreach(ws, i, w)
    {
        const char *name = om_json_str_or(w, "name", "?"), *state = om_json_str_or(w, "state", "?");
        char what[300];
        snprintf(what, sizeof what, "writer %s", name);
        json_t *x = json_pack("{s:s, s:s}", "writer", name, "state", state);
        if (!strcmp(name, "Ombra Store Writer") && !json_is_false(json_object_get(w, "connected")))
            store_writer = 1;
        if (json_is_false(json_object_get(w, "connected")))
            add(c, ST_CRITICAL, what, x, "writer '%s' is registered but not connected (%s)", name,
                state);
        else if (!strcmp(state, "stable"))
            add(c, ST_OK, what, x, "writer '%s' is stable", name);
        else if (!strncmp(state, "failed", 6))
            add(c, ST_CRITICAL, what, x, "writer '%s' is %s: %s. HINT: ombra vss writers", name,
                state, om_json_str_or(w, "last_error", ""));
        else
            add(c, ST_WARNING, what, x,
                "writer '%s' is %s (a backup in progress, or one stuck there). HINT: ombra vss "
                "writers",
                name, state);
    }
    if (!store_writer && json_is_true(json_object_get(json_object_get(h, "store"), "up")))
        add(c, ST_CRITICAL, "writer Ombra Store Writer", NULL,
            "the store's writer is not registered with ombra-vssd: no backup can run. HINT: "
            "restart ombra-store after ombra-vssd");
}

/* ---- the repository and the backups ---- */

static void check_repo(checks *c, json_t *r)
{
    if (!r || json_is_null(r)) return;
    const char *path = om_json_str_or(r, "path", "?");
    if (!json_is_true(json_object_get(r, "reachable")))
        add(c, ST_CRITICAL, "repository", NULL, "repository %s cannot be opened: %s", path,
            om_json_str_or(r, "error", "?"));
    else if (!json_is_true(json_object_get(r, "writable")))
        add(c, ST_CRITICAL, "repository", NULL, "repository %s is not writable: %s", path,
            om_json_str_or(r, "error", "?"));
    else
        add(c, ST_OK, "repository", NULL, "repository %s is reachable and writable (%zu sets)",
            path, json_array_size(json_object_get(r, "sets")));
}

/* The name of the database a set summary holds (one database, or the first of several). */
static const char *set_db(json_t *s)
{
    json_t *d = json_object_get(s, "database");
    if (!d) d = json_array_get(json_object_get(s, "databases"), 0);
    return json_is_string(d) ? json_string_value(d) : om_json_str_or(d, "name", "");
}

/* Times recorded this far ahead of the clock are a clock's skew, not an error. */
#define CLOCK_SKEW_NS (300ull * 1000000000u)

/* Keeps ns in *best when newer, or in *future (the newest such) when later than now allows. */
static void consider(uint64_t ns, uint64_t now_ns, uint64_t *best, uint64_t *future)
{
    if (ns > now_ns + CLOCK_SKEW_NS) {
        if (ns > *future) *future = ns;
    } else if (ns > *best)
        *best = ns;
}

/* The newest successful backup of db of one of types ("full", or "full incremental
 * differential"): its time (ns; 0: none) from the repository's sets and the run record. A time
 * in the future (past the clock's skew) was recorded by a clock that was wrong: it does not
 * count, and the newest such is in *future (0: none). */
static uint64_t last_success(json_t *h, const char *db, const char *types, uint64_t now_ns,
                             uint64_t *future)
{
    uint64_t best = 0;
    size_t i;
    json_t *s;
    *future = 0;
    json_array_foreach(json_object_get(json_object_get(h, "repo"), "sets"), i, s)
    {
        const char *t = om_json_str_or(s, "type", "");
        if (json_object_get(s, "damaged") || strcmp(set_db(s), db) || !*t || !strstr(types, t))
            continue;
        consider((uint64_t)om_json_int_or(s, "committed_ns", 0), now_ns, &best, future);
    }
    json_array_foreach(json_object_get(h, "runs"), i, s)
    {
        const char *t = om_json_str_or(s, "type", "");
        json_t *ok = json_object_get(s, "last_success");
        if (strcmp(om_json_str_or(s, "database", ""), db) || !*t || !strstr(types, t) ||
            !json_is_object(ok))
            continue;
        consider((uint64_t)om_json_int_or(ok, "end_ns", 0), now_ns, &best, future);
    }
    return best;
}

static void check_age(checks *c, json_t *h, const char *db, const char *kind, const char *types,
                      uint64_t max_s, const char *opt)
{
    uint64_t future = 0, t = last_success(h, db, types, c->now_ns, &future);
    char name[200], ab[40], mb[40], tb[40];
    snprintf(name, sizeof name, "%s %s backup", db, kind);
    if (future) {
        char fname[220];
        snprintf(fname, sizeof fname, "%s %s backup time", db, kind);
        om_time_iso(future, tb, sizeof tb);
        add(c, ST_WARNING, fname,
            json_pack("{s:s, s:s, s:I}", "database", db, "type", kind, "recorded_ns",
                      (json_int_t)future),
            "a successful %s backup of %s is recorded at %s, %s in the future: the clock was "
            "wrong when it was recorded; it does not count as a recent backup",
            kind, db, tb, age_str((future - c->now_ns) / 1000000000u, ab, sizeof ab));
    }
    if (!t) {
        add(c, ST_CRITICAL, name, json_pack("{s:s, s:s}", "database", db, "type", kind),
            "%s has no successful %s backup%s. HINT: ombra backup --type full %s", db, kind,
            strcmp(kind, "full") ? " (nor a full one)" : "", db);
        return;
    }
    uint64_t age = c->now_ns > t ? (c->now_ns - t) / 1000000000u : 0;
    json_t *x = json_pack("{s:s, s:s, s:I, s:I}", "database", db, "type", kind, "age_seconds",
                          (json_int_t)age, "max_age_seconds", (json_int_t)max_s);
    om_time_iso(t, tb, sizeof tb);
    if (age > max_s)
        add(c, ST_CRITICAL, name, x,
            "the last successful %s backup of %s is %s old (%s), older than %s %s", kind, db,
            age_str(age, ab, sizeof ab), tb, opt, age_str(max_s, mb, sizeof mb));
    else
        add(c, ST_OK, name, x, "the last successful %s backup of %s is %s old (%s)", kind, db,
            age_str(age, ab, sizeof ab), tb);
}

/* The last recorded run of each type of db: a failure is CRITICAL until a run of that type
 * succeeds. */
static void check_runs(checks *c, json_t *h, const char *db)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(h, "runs"), i, e)
    {
        json_t *last = json_object_get(e, "last");
        const char *type = om_json_str_or(e, "type", "?");
        if (strcmp(om_json_str_or(e, "database", ""), db) || !json_is_object(last)) continue;
        char name[200];
        snprintf(name, sizeof name, "%s last %s run", db, type);
        json_t *x = json_pack("{s:s, s:s, s:s}", "database", db, "type", type, "result",
                              om_json_str_or(last, "result", "?"));
        if (!strcmp(om_json_str_or(last, "result", ""), "ok"))
            add(c, ST_OK, name, x, "the last %s backup of %s succeeded (%s)", type, db,
                om_json_str_or(last, "end", "?"));
        else
            add(c, ST_CRITICAL, name, x, "the last %s backup of %s failed (%s): %s (%lld %s)", type,
                db, om_json_str_or(last, "end", "?"), om_json_str_or(last, "message", ""),
                (long long)om_json_int_or(last, "error", 0),
                om_json_str_or(last, "error_name", ""));
    }
}

/* Every database this server has (but recovery databases), and those the run record names. */
static json_t *db_names(json_t *h)
{
    json_t *names = json_array(), *d;
    size_t i, k;
    json_array_foreach(json_object_get(h, "databases"), i, d)
    {
        if (!json_is_true(json_object_get(d, "recovery")))
            json_array_append_new(names, json_string(om_json_str_or(d, "name", "")));
    }
    json_array_foreach(json_object_get(h, "runs"), i, d)
    {
        const char *n = om_json_str_or(d, "database", "");
        int seen = 0;
        json_t *x;
        json_array_foreach(names, k, x) seen |= !strcmp(json_string_value(x), n);
        if (!seen && json_array_size(json_object_get(h, "databases")) == 0)
            json_array_append_new(names, json_string(n)); /* the store did not say */
    }
    return names;
}

/* ---- disks and copies ---- */

static void check_log_disks(checks *c, json_t *h, uint64_t min_pct)
{
    json_t *dbs = json_object_get(h, "databases"), *d;
    size_t i, k;
    json_array_foreach(dbs, i, d)
    {
        json_t *fs = json_object_get(d, "log_fs");
        int first = 1;
        for (k = 0; k < i && first; k++) /* one line per filesystem */
            first = om_json_int_or(json_object_get(json_array_get(dbs, k), "log_fs"), "dev", -1) !=
                        om_json_int_or(fs, "dev", -2) ||
                    json_object_get(fs, "error");
        if (!first) continue;
        char names[400] = "", name[500];
        json_t *e;
        json_array_foreach(dbs, k, e)
        {
            if (om_json_int_or(json_object_get(e, "log_fs"), "dev", -1) ==
                    om_json_int_or(fs, "dev", -2) &&
                strlen(names) + strlen(om_json_str_or(e, "name", "")) + 3 < sizeof names)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                         names[0] ? ", " : "", om_json_str_or(e, "name", ""));
        }
        if (!names[0]) snprintf(names, sizeof names, "%s", om_json_str_or(d, "name", ""));
        snprintf(name, sizeof name, "log disk %s", om_json_str_or(fs, "path", "?"));
        if (json_object_get(fs, "error")) {
            add(c, ST_CRITICAL, name, NULL, "the log folder of %s cannot be examined: %s",
                om_json_str_or(d, "name", ""), om_json_str_or(fs, "error", ""));
            continue;
        }
        uint64_t free_b = (uint64_t)om_json_int_or(fs, "free", 0),
                 size = (uint64_t)om_json_int_or(fs, "size", 0);
        double pct = size ? 100.0 * (double)free_b / (double)size : 0;
        char fb[32], sb[32];
        json_t *x =
            json_pack("{s:s, s:I, s:I, s:f}", "path", om_json_str_or(fs, "path", ""), "free_bytes",
                      (json_int_t)free_b, "size_bytes", (json_int_t)size, "free_percent", pct);
        cli_human_bytes(free_b, fb, sizeof fb);
        cli_human_bytes(size, sb, sizeof sb);
        if (pct < (double)min_pct)
            add(c, ST_CRITICAL, name, x,
                "the log disk of %s has %.1f%% free (%s of %s), below --min-log-free %llu%%. "
                "HINT: back up (a full or incremental backup truncates the logs) or add space",
                names, pct, fb, sb, (unsigned long long)min_pct);
        else
            add(c, ST_OK, name, x, "the log disk of %s has %.1f%% free (%s of %s)", names, pct, fb,
                sb);
    }
}

static void check_dag(checks *c, json_t *h)
{
    json_t *dag = json_object_get(h, "dag"), *r;
    if (!json_is_object(dag)) return;
    check_daemon(c, json_object_get(dag, "repld"), "ombra-repld",
                 "start ombra-repld --server NAME --listen ADDR:PORT --etcd URL");
    if (!json_is_null(json_object_get(dag, "error"))) {
        add(c, ST_CRITICAL, "dag", NULL, "the copies of DAG %s cannot be read: %s",
            om_json_str_or(dag, "name", "?"), om_json_str_or(dag, "error", "?"));
        return;
    }
    size_t i;
    json_array_foreach(json_object_get(dag, "copies"), i, r)
    {
        const char *db = om_json_str_or(r, "database", "?"),
                   *srv = om_json_str_or(r, "server", "?"),
                   *state = om_json_str_or(r, "state", "?");
        char name[200];
        snprintf(name, sizeof name, "copy %s on %s", db, srv);
        int st = !strcmp(state, "Healthy") || !strcmp(state, "Mounted") ? ST_OK
                 : strstr(state, "Failed") || !strcmp(state, "ServiceDown") ||
                         !strcmp(state, "Dismounted")
                     ? ST_CRITICAL
                     : ST_WARNING;
        json_t *x = json_pack("{s:s, s:s, s:s, s:I, s:I}", "database", db, "server", srv, "state",
                              state, "copy_queue", (json_int_t)om_json_int_or(r, "copy_queue", 0),
                              "replay_queue", (json_int_t)om_json_int_or(r, "replay_queue", 0));
        add(c, st, name, x, "the copy of %s on %s is %s (copy queue %lld, replay queue %lld)%s%s",
            db, srv, state, (long long)om_json_int_or(r, "copy_queue", 0),
            (long long)om_json_int_or(r, "replay_queue", 0),
            *om_json_str_or(r, "last_error", "") ? ": " : "", om_json_str_or(r, "last_error", ""));
    }
}

/* ---- the command ---- */

static int run_check(const cli_args *a)
{
    uint64_t full_age = DEFAULT_FULL_AGE, inc_age = DEFAULT_INC_AGE, log_free = DEFAULT_LOG_FREE;
    /* The options, else the configuration's [check] (checked when the file was read). */
    const char *fa =
        cli_val(a, "max-full-age") ? cli_val(a, "max-full-age") : om_conf("check", "max-full-age");
    const char *ia = cli_val(a, "max-incremental-age") ? cli_val(a, "max-incremental-age")
                                                       : om_conf("check", "max-incremental-age");
    /* A usage error is UNKNOWN here (CLI_CHECK_UNKNOWN), not CLI_USAGE: 2 would read CRITICAL. */
    if (fa && cli_duration(a, "--max-full-age", fa, &full_age)) return ST_UNKNOWN;
    if (ia && cli_duration(a, "--max-incremental-age", ia, &inc_age)) return ST_UNKNOWN;
    const char *lf =
        cli_val(a, "min-log-free") ? cli_val(a, "min-log-free") : om_conf("check", "min-log-free");
    char lfb[32];
    if (lf) {
        snprintf(lfb, sizeof lfb, "%s", lf);
        if (*lfb && lfb[strlen(lfb) - 1] == '%') lfb[strlen(lfb) - 1] = 0;
        if (cli_number(a, "--min-log-free", lfb, 0, 100, 0, &log_free)) return ST_UNKNOWN;
    }
    char pbuf[1024];
    const char *pass = NULL;
    char *repo = NULL;
    const char *repo_name;
    if (cli_repo_path_opt(a, &repo, &repo_name)) return ST_UNKNOWN; /* said why */
    int perr = cli_repo_passphrase(a, pbuf, sizeof pbuf, &pass);
    char perr_msg[1200] = "";
    if (perr) snprintf(perr_msg, sizeof perr_msg, "%s", om_err_detail());
    cli_health_opts ho = {.repo = perr ? NULL : repo, .passphrase = pass, .probe_write = 1};
    json_t *h = cli_health_gather(&ho);
    memset(pbuf, 0, sizeof pbuf);
    if (!h) {
        free(repo);
        fprintf(stderr, "ombra: out of memory\n");
        return ST_UNKNOWN;
    }
    checks c = {.list = json_array(), .now_ns = (uint64_t)om_json_int_or(h, "time_ns", 0)};
    check_daemon(&c, json_object_get(h, "store"), "ombra-store", "start ombra-store");
    check_daemon(&c, json_object_get(h, "vssd"), "ombra-vssd", "start ombra-vssd");
    check_writers(&c, h);
    check_dag(&c, h);
    if (perr) add(&c, ST_CRITICAL, "repository", NULL, "repository %s: %s", repo, perr_msg);
    check_repo(&c, json_object_get(h, "repo"));
    if (!json_is_null(json_object_get(h, "runs_error")))
        add(&c, ST_WARNING, "backup runs", NULL, "%s",
            om_json_str_or(h, "runs_error", "the record of backup runs cannot be read"));
    json_t *names = db_names(h), *n;
    size_t i;
    json_array_foreach(names, i, n)
    {
        const char *db = json_string_value(n);
        check_age(&c, h, db, "full", "full", full_age, "--max-full-age");
        check_age(&c, h, db, "incremental", "full incremental differential", inc_age,
                  "--max-incremental-age");
        check_runs(&c, h, db);
    }
    json_decref(names);
    check_log_disks(&c, h, log_free);

    char summary[200];
    snprintf(summary, sizeof summary, "OMBRA %s: %d critical, %d warning, %d unknown, %d ok",
             st_name[c.worst], c.count[ST_CRITICAL], c.count[ST_WARNING], c.count[ST_UNKNOWN],
             c.count[ST_OK]);
    int out;
    if (cli_flag(a, "json")) {
        json_t *doc =
            json_pack("{s:s, s:i, s:s, s:s, s:O, s:{s:I, s:I, s:I}}", "status", st_name[c.worst],
                      "exit", c.worst, "summary", summary, "server",
                      om_json_str_or(h, "server", ""), "checks", c.list, "thresholds",
                      "max_full_age_seconds", (json_int_t)full_age, "max_incremental_age_seconds",
                      (json_int_t)inc_age, "min_log_free_percent", (json_int_t)log_free);
        out = cli_print_json(doc);
        json_decref(doc);
    } else {
        printf("%s\n", summary);
        json_t *o;
        json_array_foreach(c.list, i, o)
            printf("%-8s %s: %s\n", om_json_str_or(o, "status", ""), om_json_str_or(o, "check", ""),
                   om_json_str_or(o, "message", ""));
        out = CLI_OK;
    }
    json_decref(c.list);
    json_decref(h);
    free(repo);
    return out == CLI_OK ? c.worst : ST_UNKNOWN;
}

static const cli_opt check_opts[] = {
    {"repo", "NAME|PATH",
     "the backup repository: opened, listed and written to (a probe file); default: "
     "$OMBRA_REPO, else the configuration's default-repo",
     0},
    CLI_PASS_OPT,
    {"max-full-age", "DURATION",
     "CRITICAL when a database's last successful full backup is older (default: [check] "
     "max-full-age, else 8d)",
     0},
    {"max-incremental-age", "DURATION",
     "CRITICAL when its last successful full, incremental or differential backup is older "
     "(default: [check] max-incremental-age, else 2d)",
     0},
    {"min-log-free", "PERCENT",
     "CRITICAL when a filesystem holding databases' logs has less free (default: [check] "
     "min-log-free, else 10)",
     0},
    CLI_JSON_OPT,
    {0}};

static const cli_cmd check_cmds[] = {
    {"", "", check_opts, "check that this server can back up and that its backups are recent",
     "One line per check, after a first line with the worst status (a Nagios plugin's output):\n"
     "  ombra-store, ombra-vssd   their sockets answer, each within 5 s (and ombra-repld's, in\n"
     "                            a DAG)\n"
     "  writer NAME               each writer of ombra-vssd is stable (the store's is registered)\n"
     "  repository                --repo opens (with --passphrase-file when encrypted), and a\n"
     "                            probe file can be written in it and removed\n"
     "  DB full backup            the last successful full backup of each database, and its age\n"
     "  DB incremental backup     the last successful full, incremental or differential one\n"
     "  DB TYPE backup time       WARNING: a backup recorded more than 5 min in the future (a\n"
     "                            clock that was wrong); it does not count as recent\n"
     "  DB last TYPE run          the last recorded run of each type (ombra backup records every\n"
     "                            run, failures too, in $OMBRA_HOME/backup-runs.json)\n"
     "  log disk PATH             free space of each filesystem holding databases' logs\n"
     "  copy DB on SERVER         in a DAG, each copy's state and queues\n"
     "Without --repo the backups' ages come from the record of runs alone.\n\n"
     "Exit status (the Nagios plugin convention, for monitoring): 0 OK, 1 WARNING (a writer busy\n"
     "or a copy seeding, suspended or resynchronizing, a record of runs that cannot be read, a\n"
     "backup recorded in the future), 2 CRITICAL (anything else that fails),\n"
     "3 UNKNOWN (the check could not run: a usage error such as an unknown option or a bad\n"
     "duration, a configuration file that cannot be read, out of memory, output not written;\n"
     "other ombra commands exit 2 and 1 for these). Thresholds: the [check] section of the\n"
     "configuration (max-full-age, max-incremental-age, min-log-free) when the options are not "
     "given.",
     run_check},
    {0},
};

const cli_group cli_check_group = {
    "check", "check the daemons, writers, repository, backup ages and disks (exit 0/1/2/3)",
    check_cmds};
