/* `ombra db ...`: the databases of the store (docs/protocol.md, db.* operations). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "cli/cli.h"
#include "base/time.h"
#include "base/uuid.h"
#include "repl/am.h"
#include "repl/dag.h"

/* The end of a store call that returned db (rc: its result, printed when it failed): the
 * database as JSON (--json) or through say(); the reply's warning (what failed beside a change
 * that was made: db.dismount on a full disk) goes to stderr as one line, and the exit stays 0:
 * the change was made. Releases db. */
static int say_db(const cli_args *a, store_client *sc, int rc, json_t *db, void (*say)(json_t *db))
{
    if (rc) return cli_fail(rc);
    if (cli_flag(a, "json"))
        rc = cli_print_json(db);
    else
        say(db);
    const char *warn = store_client_warning(sc);
    if (*warn) om_warn("%s", warn);
    json_decref(db);
    return rc;
}

static const char *str_or(json_t *db, const char *key)
{
    return om_json_str_or(db, key, "-");
}

static const char *onoff(json_t *db, const char *key)
{
    json_t *v = json_object_get(db, key);
    return json_is_boolean(v) ? (json_is_true(v) ? "on" : "off") : "-";
}

static const char *yesno(json_t *v)
{
    return json_is_boolean(v) ? (json_is_true(v) ? "yes" : "no") : "-";
}

/* A path option made absolute (*out malloc'd; NULL when not given): the daemon runs in another
 * directory. */
static int abs_opt(const cli_args *a, const char *name, char **out)
{
    const char *path = cli_val(a, name);
    *out = path ? cli_abs_path(path) : NULL;
    return path && !*out ? om_errf(OM_E_OutOfMemory, "out of memory") : 0;
}

/* ---- new, new-recovery ---- */

/* Says what the reply says: a database is mounted at creation, the recovery database is not
 * (it waits, dismounted and open to a restore, for the files it is made for). */
static void say_created(json_t *db)
{
    int mounted = json_is_true(json_object_get(db, "mounted"));
    printf("created database %s%s (%s)\n  edb:  %s\n  logs: %s (base %s)\n", str_or(db, "name"),
           json_is_true(json_object_get(db, "recovery")) ? " for recovery" : "",
           mounted ? "mounted" : "dismounted, open to a restore", str_or(db, "edb"),
           str_or(db, "logs"), str_or(db, "base"));
    if (!mounted && json_is_true(json_object_get(db, "recovery")))
        printf("restore into it: ombra restore DB --repo R --recovery %s --mount\n",
               str_or(db, "name"));
}

/* db new and db new-recovery: spec's paths from --edb and --logs. */
static int db_new(const cli_args *a, store_db_spec *spec)
{
    store_client *sc = NULL;
    json_t *db = NULL;
    char *edb = NULL, *logs = NULL;
    int rc = abs_opt(a, "edb", &edb);
    if (!rc) rc = abs_opt(a, "logs", &logs);
    if (!rc) rc = cli_store(&sc);
    spec->edb = edb;
    spec->logs = logs;
    if (!rc) rc = store_client_db_new(sc, a->pos[0], spec, &db);
    free(edb);
    free(logs);
    return say_db(a, sc, rc, db, say_created);
}

static int run_new(const cli_args *a)
{
    store_db_spec spec = {.base = cli_val(a, "base"),
                          .circular_logging = cli_flag(a, "circular-logging")};
    return db_new(a, &spec);
}

static int run_new_recovery(const cli_args *a)
{
    store_db_spec spec = {.recovery = 1};
    return db_new(a, &spec);
}

/* ---- list ---- */

enum { NCOLS = 5 };
static const char *const col_head[NCOLS] = {"NAME", "STATE", "MOUNTED", "BASE", "EDB"};

static void row_cells(json_t *db, const char *cell[NCOLS])
{
    cell[0] = str_or(db, "name");
    cell[1] = str_or(db, "state");
    cell[2] = yesno(json_object_get(db, "mounted"));
    cell[3] = str_or(db, "base");
    cell[4] = str_or(db, "edb");
}

/* The last column is not padded: no trailing blanks. */
static void put_row(const char *const cell[NCOLS], const int width[NCOLS])
{
    for (int c = 0; c < NCOLS - 1; c++)
        printf("%-*s  ", width[c], cell[c]);
    printf("%s\n", cell[NCOLS - 1]);
}

static int run_list(const cli_args *a)
{
    store_client *sc;
    json_t *dbs = NULL, *db;
    size_t i;
    int rc = cli_store(&sc);
    if (!rc) rc = store_client_db_list(sc, &dbs);
    if (rc) return cli_fail(rc);
    if (cli_flag(a, "json")) {
        json_t *o = json_pack("{s:O}", "databases", dbs); /* a document is an object */
        rc = cli_print_json(o);
        json_decref(o);
        goto out;
    }
    int width[NCOLS];
    const char *cell[NCOLS];
    for (int c = 0; c < NCOLS; c++)
        width[c] = (int)strlen(col_head[c]);
    json_array_foreach(dbs, i, db)
    {
        row_cells(db, cell);
        for (int c = 0; c < NCOLS; c++)
            if ((int)strlen(cell[c]) > width[c]) width[c] = (int)strlen(cell[c]);
    }
    put_row(col_head, width);
    json_array_foreach(dbs, i, db)
    {
        row_cells(db, cell);
        put_row(cell, width);
    }
out:
    json_decref(dbs);
    return rc;
}

/* ---- show ---- */

/* "label:" padded so the values line up; slots are indented under "backups:". */
static void put_label(const char *label, int indent)
{
    char l[64];
    snprintf(l, sizeof l, "%s:", label);
    printf("%*s%-*s ", indent, "", 24 - indent, l);
}

/* A value the show table does not know (a field added later): its JSON, compact. */
static void put_raw(json_t *v)
{
    if (json_is_string(v)) {
        fputs(json_string_value(v), stdout);
        return;
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    fputs(s ? s : "?", stdout);
    free(s);
}

static void put_slot(const char *label, json_t *slot)
{
    put_label(label, 2);
    if (!slot || json_is_null(slot)) {
        puts("never");
        return;
    }
    json_t *mark = json_object_get(slot, "mark");
    printf("generations %lld-%lld", (long long)om_json_int_or(slot, "first_gen", 0),
           (long long)om_json_int_or(slot, "last_gen", 0));
    if (json_is_array(mark) && json_array_size(mark) == 2)
        printf(", mark (%lld, %lld)", (long long)json_integer_value(json_array_get(mark, 0)),
               (long long)json_integer_value(json_array_get(mark, 1)));
    printf(", %s\n", om_json_str_or(slot, "time", "time unknown"));
}

static const char *const slot_keys[][2] = {
    {"previous_full", "previous full"},
    {"previous_incremental", "previous incremental"},
    {"previous_copy", "previous copy"},
    {"previous_differential", "previous differential"},
};

static void put_backups(json_t *b)
{
    printf("backups:\n");
    for (size_t i = 0; i < sizeof slot_keys / sizeof slot_keys[0]; i++)
        put_slot(slot_keys[i][1], json_object_get(b, slot_keys[i][0]));
    /* Slots this table does not name yet (current full, current snapshot...). */
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v)
    {
        int known = 0;
        for (size_t i = 0; i < sizeof slot_keys / sizeof slot_keys[0]; i++)
            known |= strcmp(k, slot_keys[i][0]) == 0;
        if (!known) put_slot(k, v);
    }
}

enum show_kind { S_STR, S_BOOL_YESNO, S_BOOL_ONOFF, S_INT, S_BYTES };
static const struct {
    const char *key, *label;
    enum show_kind kind;
} show_fields[] = {
    {"name", "name", S_STR},
    {"id", "id", S_STR},
    {"server", "server", S_STR},
    {"state", "state", S_STR},
    {"mounted", "mounted", S_BOOL_YESNO},
    {"recovery", "recovery database", S_BOOL_YESNO},
    {"circular_logging", "circular logging", S_BOOL_ONOFF},
    {"allow_restore", "allow restore", S_BOOL_ONOFF},
    {"edb", "edb", S_STR},
    {"logs", "logs", S_STR},
    {"base", "log base name", S_STR},
    {"size_bytes", "size", S_BYTES},
    {"pages", "pages", S_INT},
    {"log_generations", "log generations", S_INT},
    {"gen_oldest", "oldest generation", S_INT},
    {"gen_current", "current generation", S_INT},
    {"checkpoint_gen", "checkpoint generation", S_INT},
};
#define NSHOW (sizeof show_fields / sizeof show_fields[0])

static void say_show(json_t *db)
{
    for (size_t i = 0; i < NSHOW; i++) {
        json_t *v = json_object_get(db, show_fields[i].key);
        if (!v) continue;
        put_label(show_fields[i].label, 0);
        if (show_fields[i].kind == S_BOOL_YESNO && json_is_boolean(v))
            puts(json_is_true(v) ? "yes" : "no");
        else if (show_fields[i].kind == S_BOOL_ONOFF && json_is_boolean(v))
            puts(json_is_true(v) ? "on" : "off");
        else if (show_fields[i].kind == S_BYTES && json_is_integer(v))
            printf("%lld bytes\n", (long long)json_integer_value(v));
        else if (json_is_null(v))
            puts("-");
        else {
            put_raw(v);
            putchar('\n');
        }
    }
    /* Every other field too, so nothing the server reports is hidden. */
    const char *k;
    json_t *v;
    json_object_foreach(db, k, v)
    {
        int known = strcmp(k, "backups") == 0;
        for (size_t i = 0; i < NSHOW && !known; i++)
            known = strcmp(k, show_fields[i].key) == 0;
        if (known) continue;
        put_label(k, 0);
        put_raw(v);
        putchar('\n');
    }
    json_t *b = json_object_get(db, "backups");
    if (json_is_object(b) || json_is_null(b) || !b) put_backups(json_is_object(b) ? b : NULL);
}

static int run_show(const cli_args *a)
{
    store_client *sc;
    json_t *db = NULL;
    int rc = cli_store(&sc);
    if (!rc) rc = store_client_db_show(sc, a->pos[0], &db);
    return say_db(a, sc, rc, db, say_show);
}

/* ---- mount, dismount, set ---- */

static void say_mounted(json_t *db)
{
    printf("mounted %s\n", str_or(db, "name"));
}

static void say_dismounted(json_t *db)
{
    printf("dismounted %s\n", str_or(db, "name"));
}

static void say_set(json_t *db)
{
    printf("%s: circular logging %s, allow restore %s\n", str_or(db, "name"),
           onoff(db, "circular_logging"), onoff(db, "allow_restore"));
}

static int run_mount(const cli_args *a)
{
    store_client *sc;
    json_t *db = NULL;
    int rc = cli_store(&sc);
    if (!rc) rc = store_client_db_mount(sc, a->pos[0], &db);
    return say_db(a, sc, rc, db, say_mounted);
}

static int run_dismount(const cli_args *a)
{
    store_client *sc;
    json_t *db = NULL;
    int rc = cli_store(&sc);
    if (!rc) rc = store_client_db_dismount(sc, a->pos[0], &db);
    return say_db(a, sc, rc, db, say_dismounted);
}

/* ---- db set --sync-copies: the DAG's record ---- */

typedef struct sync_change {
    const char *db, *active;
    uint32_t n;
} sync_change;

/* In the transaction that writes it: n passive copies at least (the record as it is then; a
 * copy remove refuses to go below the setting the same way). */
static int change_sync(void *arg, json_t *rec, int exists)
{
    const sync_change *c = arg;
    if (!exists) return om_errf(OM_E_DatabaseNotFound, "the database was removed meanwhile");
    const char *server;
    size_t passive = 0;
    json_t *cfg;
    /* A suspended copy (or one whose seeding is postponed) acknowledges nothing. */
    json_object_foreach(json_object_get(rec, "copies"), server, cfg) passive +=
        strcmp(server, c->active) != 0 && !json_is_true(json_object_get(cfg, "suspended"));
    if (c->n > passive)
        return om_errf(OM_E_InvalidParameter,
                       "database %s has %zu passive cop%s not suspended: --sync-copies %u can "
                       "never be met. HINT: add copies first (ombra db copy add %s --server S) or "
                       "resume one, or ask for at most %zu",
                       c->db, passive, passive == 1 ? "y" : "ies", c->n, c->db, passive);
    json_object_set_new(rec, "sync_copies", json_integer(c->n));
    return 0;
}

/* The DAG: --etcd (or OMBRA_ETCD), else the one this server's store (or ombra-repld) is in. */
static int open_dag(const cli_args *a, rp_dag **d)
{
    const char *url = cli_val(a, "etcd");
    if (!url) url = om_conf_setting("OMBRA_ETCD", "ombra", "etcd");
    char server[128];
    *d = NULL;
    int rc = url && *url ? rp_dag_open(url, cli_val(a, "dag"), 1, d)
                         : cli_local_dag(d, server, sizeof server);
    if (!rc && !*d)
        rc = om_errf(
            OM_E_InvalidParameter,
            "this server is in no DAG. HINT: --etcd URL (or OMBRA_ETCD) names the DAG's etcd");
    return rc;
}

/* The DAG record of db asks for n synchronous copies; refused when db has fewer passive
 * copies. Prints its own error. */
static int set_sync_copies(const cli_args *a, const char *db, uint32_t n, char id[37])
{
    rp_dag *d = NULL;
    json_t *rec = NULL, *act = NULL;
    char k[200];
    int rc = open_dag(a, &d);
    if (!rc) rc = rp_dag_find_db(d, db, &rec, id);
    snprintf(k, sizeof k, "active/%s", id);
    if (!rc) rc = rp_dag_get(d, k, &act, NULL);
    sync_change c = {.db = db, .active = om_json_str_or(act, "server", ""), .n = n};
    snprintf(k, sizeof k, "databases/%s", id);
    if (!rc) rc = rp_dag_update(d, k, change_sync, &c);
    json_decref(rec);
    json_decref(act);
    rp_dag_close(d);
    return rc ? cli_fail(rc) : CLI_OK;
}

/* ---- db set --mount-dial: the DAG's record ---- */

static int change_dial(void *arg, json_t *rec, int exists)
{
    if (!exists) return om_errf(OM_E_DatabaseNotFound, "the database was removed meanwhile");
    json_object_set_new(rec, "mount_dial", json_string(arg));
    return 0;
}

static int set_mount_dial(const cli_args *a, const char *db, const char *dial, char id[37])
{
    rp_dag *d = NULL;
    json_t *rec = NULL;
    char k[200];
    int rc = open_dag(a, &d);
    if (!rc) rc = rp_dag_find_db(d, db, &rec, id);
    snprintf(k, sizeof k, "databases/%s", id);
    if (!rc) rc = rp_dag_update(d, k, change_dial, (void *)dial);
    json_decref(rec);
    rp_dag_close(d);
    return rc ? cli_fail(rc) : CLI_OK;
}

/* ---- db move: a switchover, done by the primary active manager (repl/am.h) ---- */

/* 1 while the move asked as req is pending (moves/<id> holds it, or lastmove/<id> is its own
 * and not answered yet: the target named, not yet taking mail).
 * Else the move was overtaken by a failover: 0 with *lm the move the database went through
 * ("ok" true) when the database is active where the move would have put it (on to, or off
 * from when to is NULL), else an error naming the failover. */
static int move_overtaken(rp_dag *d, const char *db, const char *id, const char *req,
                          const char *from, const char *to, json_t **lm)
{
    char k[200];
    json_t *mv = NULL, *act = NULL;
    snprintf(k, sizeof k, "moves/%s", id);
    int rc = rp_dag_get(d, k, &mv, NULL);
    int pending = !rc && !strcmp(om_json_str_or(mv, "request", ""), req);
    json_decref(mv);
    if (rc || pending) return rc ? rc : 1;
    json_t *again = NULL; /* the answer may have come between the two reads */
    snprintf(k, sizeof k, "lastmove/%s", id);
    rc = rp_dag_get(d, k, &again, NULL);
    if (!rc && !strcmp(om_json_str_or(again, "request", ""), req)) {
        /* This move's own: the target named (the transaction that drops the intent) and not
         * yet taking mail ("ok" comes then), or answered. */
        int done = json_object_get(again, "ok") != NULL;
        json_decref(*lm);
        *lm = again;
        return done ? 0 : 1;
    }
    json_decref(again);
    snprintf(k, sizeof k, "active/%s", id);
    if (!rc) rc = rp_dag_get(d, k, &act, NULL);
    if (rc) return rc;
    const char *now = om_json_str_or(act, "server", "");
    const char *kind = om_json_str_or(*lm, "kind", "failover");
    if (*now && (to ? !strcmp(now, to) : strcmp(now, from) != 0)) {
        if (!*lm) *lm = json_object();
        json_object_set_new(*lm, "ok", json_true());
        json_decref(act);
        return 0;
    }
    rc = om_errf(OM_E_DatabaseUnavailable,
                 "database %s was not moved: a %s came first (from %s to %s, epoch %lld: %s); it "
                 "is active on %s now. HINT: ombra db move %s again",
                 db, kind, om_json_str_or(*lm, "from", "?"), om_json_str_or(*lm, "to", "?"),
                 (long long)json_integer_value(json_object_get(*lm, "epoch")),
                 om_json_str_or(*lm, "why", "no reason given"), *now ? now : "no server", db);
    json_decref(act);
    return rc;
}

static int run_move(const cli_args *a)
{
    const char *db = a->pos[0], *to = cli_val(a, "to");
    uint64_t timeout = 120;
    int rc = cli_number(a, "--timeout", cli_val(a, "timeout") ? cli_val(a, "timeout") : "120", 1,
                        3600, 0, &timeout);
    if (rc) return rc;
    if (to && rp_name_check("--to", to)) return cli_fail(OM_E_InvalidParameter);
    rp_dag *d = NULL;
    json_t *rec = NULL, *act = NULL, *lm = NULL;
    char id[37], k[200], req[37];
    om_uuid u;
    om_uuid_new(&u);
    om_uuid_str(&u, req);
    rc = open_dag(a, &d);
    if (!rc) rc = rp_dag_find_db(d, db, &rec, id);
    snprintf(k, sizeof k, "active/%s", id);
    if (!rc) rc = rp_dag_get(d, k, &act, NULL);
    const char *from = om_json_str_or(act, "server", "");
    if (!rc && !*from)
        rc = om_errf(OM_E_DatabaseUnavailable, "database %s has no active copy in DAG %s", db,
                     d->name);
    if (!rc && to && !json_object_get(json_object_get(rec, "copies"), to))
        rc = om_errf(OM_E_DatabaseNotFound,
                     "database %s has no copy on server %s. HINT: ombra db copy status %s", db, to,
                     db);
    if (!rc && to && !strcmp(to, from))
        rc = om_errf(OM_E_InvalidParameter, "database %s is active on %s already", db, to);
    int created = 0;
    snprintf(k, sizeof k, "moves/%s", id);
    json_t *mv = json_pack("{s:s,s:s,s:I}", "to", to ? to : "", "request", req, "requested_ns",
                           (json_int_t)om_now_ns());
    if (!rc) rc = rp_dag_create(d, k, mv, &created);
    json_decref(mv);
    if (!rc && !created)
        rc = om_errf(OM_E_DatabaseInUse,
                     "a move of database %s is asked already and not done yet. HINT: ombra db "
                     "copy status %s",
                     db, db);
    uint64_t end = om_mono_ns() + timeout * 1000000000ull;
    snprintf(k, sizeof k, "lastmove/%s", id);
    while (!rc) {
        json_decref(lm);
        lm = NULL;
        rc = rp_dag_get(d, k, &lm, NULL);
        if (!rc && !strcmp(om_json_str_or(lm, "request", ""), req) && json_object_get(lm, "ok"))
            break;
        /* The intent gone with no answer of its own: a failover came first (it names the new
         * active and drops a pending move in one transaction). */
        if (!rc && (rc = move_overtaken(d, db, id, req, from, to, &lm)) != 1) break;
        rc = 0;
        if (om_mono_ns() > end) {
            /* Not taken up: withdrawn, so that no later primary moves it unasked. */
            snprintf(k, sizeof k, "moves/%s", id);
            json_t *now = NULL;
            if (!rp_dag_get(d, k, &now, NULL) && !strcmp(om_json_str_or(now, "request", ""), req))
                rp_dag_delete(d, k, 0);
            json_decref(now);
            rc = om_errf(OM_E_DatabaseUnavailable,
                         "the move of database %s was not done within %llu s (is a primary active "
                         "manager running? ombra dag status). HINT: --timeout SECONDS",
                         db, (unsigned long long)timeout);
            break;
        }
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    json_decref(rec);
    json_decref(act);
    rp_dag_close(d);
    if (!rc && !json_is_true(json_object_get(lm, "ok")))
        rc = om_errf(OM_E_DatabaseUnavailable, "database %s was not moved: %s", db,
                     om_json_str_or(lm, "error", "(no reason given)"));
    if (rc) {
        json_decref(lm);
        return cli_fail(rc);
    }
    int st = CLI_OK;
    if (cli_flag(a, "json"))
        st = cli_print_json(lm);
    else {
        const char *kind = om_json_str_or(lm, "kind", "switchover");
        printf("%s: moved from %s to %s (epoch %lld) in %.2f s", db, om_json_str_or(lm, "from", ""),
               om_json_str_or(lm, "to", ""),
               (long long)json_integer_value(json_object_get(lm, "epoch")),
               (double)json_integer_value(json_object_get(lm, "took_ms")) / 1000.0);
        if (strcmp(kind, "switchover"))
            printf(" by a %s that came before the move asked (%s)", kind,
                   om_json_str_or(lm, "why", "no reason given"));
        if (json_object_get(lm, "refused_ms"))
            printf("; mail waited or was refused for %.2f s",
                   (double)json_integer_value(json_object_get(lm, "refused_ms")) / 1000.0);
        printf("\n");
    }
    json_decref(lm);
    return st;
}

static int run_set(const cli_args *a)
{
    int circ, allow;
    uint64_t sync = 0;
    int rc = cli_onoff(a, "circular-logging", &circ);
    if (!rc) rc = cli_onoff(a, "allow-restore", &allow);
    if (!rc && cli_val(a, "sync-copies"))
        rc = cli_number(a, "--sync-copies", cli_val(a, "sync-copies"), 0, 16, 0, &sync);
    if (rc) return rc;
    const char *dial = cli_val(a, "mount-dial");
    if (dial && rp_am_dial_gens(dial) < 0)
        return cli_usage(a, "--mount-dial: lossless, good or best, not '%s'", dial);
    if (circ < 0 && allow < 0 && !cli_val(a, "sync-copies") && !dial)
        return cli_usage(a, "nothing to set: give --circular-logging, --allow-restore, "
                            "--sync-copies or --mount-dial");
    char id[37] = ""; /* the database's id in the DAG's record */
    if (cli_val(a, "sync-copies") && (rc = set_sync_copies(a, a->pos[0], (uint32_t)sync, id)))
        return rc;
    if (dial && (rc = set_mount_dial(a, a->pos[0], dial, id))) return rc;
    if ((cli_val(a, "sync-copies") || dial) && circ < 0 && allow < 0) {
        if (cli_flag(a, "json")) { /* a database: {"id", "name"} and what changed */
            json_t *o = json_pack("{s:s, s:s}", "id", id, "name", a->pos[0]);
            if (cli_val(a, "sync-copies"))
                json_object_set_new(o, "sync_copies", json_integer((json_int_t)sync));
            if (dial) json_object_set_new(o, "mount_dial", json_string(dial));
            int st = cli_print_json(o);
            json_decref(o);
            return st;
        }
        if (cli_val(a, "sync-copies"))
            printf("%s: sync copies %llu\n", a->pos[0], (unsigned long long)sync);
        if (dial)
            printf("%s: mount dial %s (a failover mounts a copy lacking at most %d generations)\n",
                   a->pos[0], dial, rp_am_dial_gens(dial));
        return CLI_OK;
    }
    store_client *sc;
    json_t *db = NULL;
    rc = cli_store(&sc);
    if (!rc) rc = store_client_db_set(sc, a->pos[0], circ, allow, &db);
    return say_db(a, sc, rc, db, say_set);
}

/* ---- the table ---- */

static const cli_opt new_opts[] = {
    {"edb", "PATH", "the database file (default $OMBRA_HOME/dbs/NAME/NAME.edb)", 0},
    {"logs", "DIR", "the log folder (default $OMBRA_HOME/dbs/NAME/logs)", 0},
    {"base", "E01", "the log base name: E00 to E99 (default E00)", 0},
    {"circular-logging", NULL, "delete log generations once checkpointed (no incremental backups)",
     0},
    {"json", NULL, "print the reply's database object as JSON", 0},
    {0},
};
static const cli_opt json_only[] = {
    {"json", NULL, "print the reply's database object as JSON", 0},
    {0},
};
static const cli_opt list_opts[] = {{"json", NULL, "print JSON: {\"databases\": [...]}", 0}, {0}};
static const cli_opt set_opts[] = {
    {"circular-logging", "on|off", "delete log generations once checkpointed", 0},
    {"allow-restore", "on|off", "let a restore overwrite this database", 0},
    {"sync-copies", "N",
     "a DAG database: acknowledge a commit only once N passive copies hold its log (0: off)", 0},
    {"mount-dial", "lossless|good|best",
     "a DAG database: how many generations a failover may lose (0, 6, 12; default best)", 0},
    {"etcd", "URL",
     "with --sync-copies or --mount-dial: the DAG's etcd (default $OMBRA_ETCD, else this "
     "server's DAG)",
     0},
    {"dag", "NAME", "the DAG, when the etcd holds several", 0},
    {"json", NULL, "print the reply's database object as JSON", 0},
    {0},
};
static const cli_opt move_opts[] = {
    {"to", "SERVER", "the server whose copy becomes active (default: the best healthy copy)", 0},
    {"timeout", "SECONDS", "how long to wait for the move (default 120)", 0},
    {"etcd", "URL", "the DAG's etcd (default $OMBRA_ETCD, else this server's DAG)", 0},
    {"dag", "NAME", "the DAG, when the etcd holds several", 0},
    {"json", NULL, "print the move's record as JSON", 0},
    {0},
};
static const cli_opt recovery_opts[] = {
    {"edb", "PATH", "the database file (new: a restore --recovery NAME lays it there)", 1},
    {"logs", "DIR", "its log folder", 1},
    {"json", NULL, "print the reply's database object as JSON", 0},
    {0},
};

static const cli_cmd db_cmds[] = {
    {"new", "NAME", new_opts, "Create a database and mount it",
     "Without --edb and --logs the files go to $OMBRA_HOME/dbs/NAME/. Relative paths are taken\n"
     "from the current directory.",
     run_new},
    {"list", "", list_opts, "List the databases: name, state, mounted, log base, edb", NULL,
     run_list},
    {"show", "NAME", json_only, "Show a database: its settings, state, files, logs and backups",
     "The backup slots say which generations the last full, incremental, copy and differential\n"
     "backups covered ('never' when there was none).",
     run_show},
    {"mount", "NAME", json_only, "Mount a database (recovering it from its logs if needed)", NULL,
     run_mount},
    {"dismount", "NAME", json_only, "Dismount a database (a clean shutdown)", NULL, run_dismount},
    {"set", "NAME", set_opts, "Change a database's settings", NULL, run_set},
    {"move", "NAME", move_opts, "Make another copy of a DAG database the active one (switchover)",
     "The primary active manager does it: the active copy stops taking mail (deliveries wait,\n"
     "or get a retryable refusal: exit 75), its last log generation is closed, copied to the\n"
     "target and replayed there, and the target mounts. Nothing committed is lost. Prints how\n"
     "long it took and how long mail waited.",
     run_move},
    {"new-recovery", "NAME", recovery_opts,
     "Create the recovery database: a database over restored files, to read mail from",
     "It is left dismounted and open to a restore: ombra restore DB --recovery NAME --mount.\n"
     "At most one recovery database is mounted at a time. Relative paths are taken from the\n"
     "current directory.",
     run_new_recovery},
    {0},
};

const cli_group cli_db_group = {"db", "Create, list, show, mount and configure databases", db_cmds};
