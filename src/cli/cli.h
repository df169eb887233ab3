/* The `ombra` command line: what every group (cli_db.c, cli_mail.c, ...) shares.
 *
 * A group is a table of commands; a command declares its positional arguments and options, and
 * ombra.c parses argv against that declaration before the command runs, so every command gets
 * --help, the same usage errors and the same exit statuses for free:
 *
 *   0  success
 *   1  failure: one line on stderr, "ombra: <message> (<error> <name>)"
 *   2  usage error: one line on stderr, "ombra: <what is wrong>. See 'ombra <group> <cmd> --help'."
 *  75  a retryable failure (cli_retryable)
 *
 * With --json a failure is also a document on stdout (cli_set_json): {"error": {"code": the
 * error number (2 for a usage error), "name", "message", "hint" (or null), "exit": the status}},
 * and every document printed carries "json_version" (CLI_JSON_VERSION: the version of the
 * documents' shape; docs/cli.md). A command that printed its own document before failing
 * prints no error document: stdout holds one document.
 *
 * A command's run function returns one of these; the helpers below that print return the status
 * to pass on, so a failure reads `return cli_fail(rc);`. The helpers are cli_common.c's, below
 * every group; ombra.c, above them, only parses and dispatches. Adding a group: write
 * cli_<group>.c with a `const cli_group cli_<group>_group`, declare it at the end of this file,
 * list it in ombra.c's table, in meson.build and in the cli table of docs/design.md. */
#ifndef OM_CLI_CLI_H
#define OM_CLI_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "repl/dag.h"
#include "store/client.h"

/* CLI_TEMPFAIL (EX_TEMPFAIL): the error is retryable (cli_retryable). */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2, CLI_TEMPFAIL = 75 };

typedef struct cli_opt {
    const char *name; /* "edb" for --edb */
    const char *arg;  /* the value's name in the help ("PATH"); NULL for a flag; "PATH..." for a
                         list: repeatable, and the arguments after it up to the next option are
                         values too (read them with cli_list) */
    const char *help; /* one line */
    int required;     /* a missing required option is a usage error */
} cli_opt;

typedef struct cli_args cli_args;

typedef struct cli_cmd {
    const char *name;
    /* Positional arguments as the usage line shows them: "DB MAILBOX ID". "[X]" is optional,
     * "X..." takes one or more; the parser derives the counts from this string. */
    const char *pos;
    const cli_opt *opts; /* ends with {0}; --help is implicit */
    const char *summary; /* one line for the group's help */
    const char *help;    /* paragraphs after the usage line (may be NULL) */
    int (*run)(const cli_args *a);
} cli_cmd;

typedef struct cli_group {
    const char *name;
    const char *summary;
    const cli_cmd *cmds; /* ends with {0}. A group whose only command is named "" is a command
                            itself: `ombra backup --repo R DB` runs it. */
} cli_group;

#define CLI_MAX_OPTS 24

/* What the parser found; valid while the command runs. */
struct cli_args {
    const cli_group *group;
    const cli_cmd *cmd;
    int npos;
    const char **pos;                /* npos positional arguments, in order */
    const char *val[CLI_MAX_OPTS];   /* by index in cmd->opts: NULL = not given, "" = flag given */
    const char **list[CLI_MAX_OPTS]; /* list options: their values */
    int nlist[CLI_MAX_OPTS];
};

/* The value of option name (NULL when not given), or whether a flag was given. name must be one
 * of the command's options (anything else is a bug and aborts). */
const char *cli_val(const cli_args *a, const char *name);
int cli_flag(const cli_args *a, const char *name);
/* The values of a list option (0 when not given); *out is valid while the command runs. */
int cli_list(const cli_args *a, const char *name, const char *const **out);

/* Parses text (an option's value or a positional argument, shown as what in messages) as an
 * unsigned decimal number in [min, max]; with suffixes when allow_suffix (K, M, G: KiB, MiB,
 * GiB). Returns CLI_OK, or prints a usage error and returns CLI_USAGE. */
int cli_number(const cli_args *a, const char *what, const char *text, uint64_t min, uint64_t max,
               int allow_suffix, uint64_t *out);
/* Option name given as on|off: *out = 1 or 0, -1 when absent. CLI_OK or CLI_USAGE. */
int cli_onoff(const cli_args *a, const char *name, int *out);

/* Prints "ombra: <fmt...>. See 'ombra <group> <cmd> --help'." and returns CLI_USAGE. */
/* One line on the last switchover or failover of a database (a lastmove record; nothing for
 * NULL or null), each line starting with indent. */
void cli_print_last_move(json_t *lm, const char *indent);
int cli_usage(const cli_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same before a command is known: "... See '<see> --help'." (see: "ombra", "ombra db"). */
int cli_usage_at(const char *see, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "ombra: <detail> (<err> <name>)" from the thread's error and returns CLI_FAIL, or
 * CLI_TEMPFAIL when err is retryable. */
int cli_fail(int err);
/* 1 when the same request may succeed if made again, here or on the server the DAG names
 * active: SyncCopiesUnavailable, ActiveLeaseLapsed, DatabaseMoving, WrongServer. */
int cli_retryable(int err);

/* This run's client of the store (store/client.h), made at the first call and freed when the
 * command ends: *out, or an error code (not printed). Its calls return error codes with the
 * store's message as the detail: a command prints them with cli_fail. */
int cli_store(store_client **out);
/* Frees this run's client of the store, if one was made (main, after the command). */
void cli_store_close(void);
/* This server's DAG, when it is in one (its store keeps its directory in the DAG's etcd, or an
 * ombra-repld runs here): *d open (the caller closes it), else NULL; server: this server's name
 * (from its store). An error code (not printed) when the store or the DAG cannot be asked. */
int cli_local_dag(rp_dag **d, char *server, size_t n);
/* One request, one reply on <runtime>/vss.sock (the shadow copy service). Steals req. On
 * success *reply (decref it); on failure prints the error (the server's message, or the
 * connection's, with its HINT) and returns CLI_FAIL, with nothing to release. */
int cli_vss_call(json_t *req, json_t **reply);

/* --json: prints v indented, with a final newline, "json_version" added to an object (v itself
 * is not changed). CLI_OK, or CLI_FAIL when stdout fails. */
#define CLI_JSON_VERSION 1
int cli_print_json(json_t *v);
/* A list is printed as {"<key>": list, "json_version"}: every document is an object. */
int cli_print_json_list(const char *key, json_t *list);
/* A command's own document that reports a failure its entries do not name (a backup refused
 * as a whole, a restore that failed): err as "error": {"code", "name", "message", "hint",
 * "exit"}, as the error document has it; cli_fail then prints no second document. */
void cli_json_add_error(json_t *doc, int err);
/* Errors go to stdout as JSON documents too (main sets it when --json is among the arguments). */
void cli_set_json(int on);
/* path made absolute against the current directory (the daemon has another one), without
 * requiring it to exist. malloc'd; NULL when out of memory. */
char *cli_abs_path(const char *path);
/* The options every command on a repository takes. */
#define CLI_REPO_OPT                                                                               \
    {                                                                                              \
        "repo", "NAME|PATH",                                                                       \
            "the backup repository: a [repo:NAME] of the configuration or a path (default: "       \
            "$OMBRA_REPO, else the configuration's default-repo)",                                 \
            0                                                                                      \
    }
#define CLI_PASS_OPT                                                                               \
    {                                                                                              \
        "passphrase-file", "F",                                                                    \
            "an encrypted repository's passphrase file (or OMBRA_REPO_PASSPHRASE)", 0              \
    }
#define CLI_JSON_OPT                                                                               \
    {                                                                                              \
        "json", NULL, "print JSON", 0                                                              \
    }

/* 1.2 MB, 345.0 kB, 12 B (powers of 1000, as ombra vss shows sizes) into buf; returns buf. */
const char *cli_human_bytes(uint64_t n, char *buf, size_t len);
/* Writes n bytes to stdout; CLI_OK or (printed) CLI_FAIL. */
int cli_write_stdout(const void *p, size_t n);

/* err DatabaseNotFound or SetNotFound whose detail names a database that is not there ("no
 * database named 'x'", "no copy of database 'x'", "no backup set of a database named 'x'"):
 * asks the store for its databases (db.list) and, when one is near x, adds "HINT: did you mean
 * 'y'?" to the thread's detail (or "; or did you mean 'y'?" after a HINT it has). Anything else,
 * or a store that cannot be asked: the detail as it was. cli_fail calls it. */
void cli_suggest_db(int err);

/* dbutil check-set (cli_dbutil_check.c). */
int cli_dbutil_check_set(const cli_args *a);
/* dbutil recover DIR when DIR/_restoredLogs holds a restore's .env: hard recovery (*found 1);
 * *found 0 and nothing done otherwise. Returns the exit code. json: the result is one document
 * (dbutil recover --json: {"recovery": "hard", "file", "logs", "restore_env", "log_range",
 * "records", "transactions", "seconds", "state"}). */
int cli_dbutil_hard_recover(const char *dir, int json, int *found);

/* The repository the command names (its option "repo"): --repo's value, else $OMBRA_REPO, else
 * the configuration's [ombra] default-repo, else its only [repo:NAME]. A value without a '/'
 * that the configuration names as [repo:VALUE] is that repository's path; anything else is a
 * path. *path: malloc'd, absolute; *name: the configuration's name for it or NULL (valid while
 * the command runs). CLI_OK, or the printed error's status (usage when there is none). */
int cli_repo_path(const cli_args *a, char **path, const char **name);
/* The same for a command whose repository is optional (check, metrics): *path NULL and CLI_OK
 * when nothing names one. */
int cli_repo_path_opt(const cli_args *a, char **path, const char **name);
/* The configuration's name of the repository the command names ([repo:NAME]), or NULL. */
const char *cli_repo_name(const cli_args *a);
/* The repository wanted when nothing on the command line names one: $OMBRA_REPO, else the
 * configuration's default-repo, else its only [repo:NAME]; NULL when none. */
const char *cli_repo_default(void);
/* For a command whose repository is an argument, not --repo (repo init): the NAME|PATH given,
 * so that cli_repo_passphrase finds a configured repository's passphrase-file. */
void cli_repo_choose(const char *wanted);
/* The passphrase of an encrypted backup repository: the first line of --passphrase-file F, else
 * $OMBRA_REPO_PASSPHRASE, else the first line of the configuration's passphrase-file for the
 * repository (cli_repo_path), never an argument (cli_common.c). The command must have the option
 * "passphrase-file". buf holds a file's passphrase; *out is NULL when neither is given. An error
 * code (not printed). */
int cli_repo_passphrase(const cli_args *a, char *buf, size_t n, const char **out);

/* ombra dbutil digest (cli_dbutil_digest.c). */
int cli_dbutil_digest(const cli_args *a);

/* ---- health (cli_health.c): what ombra check and ombra metrics report ---- */

/* What cli_health_gather asks. */
typedef struct cli_health_opts {
    const char *repo;       /* the repository to open (NULL: none) */
    const char *passphrase; /* an encrypted repository's (NULL: none) */
    int probe_write;        /* write and remove a probe file in the repository */
} cli_health_opts;
/* Asks every part of this server what a health check needs and never fails: what could not be
 * asked is in the result with its error. Each daemon gets 5 s for all its questions: one
 * stopped or hung is "up": false with "timed_out": true and "deadline_seconds": 5. A JSON object
 * (the caller decrefs; NULL only when out of memory): "time_ns", "server" (the store's name for
 * this server, "" when unknown), "store": {"up", "socket", "error", "timed_out", "status"}, "vssd":
 * {"up", "socket", "error", "timed_out", "status", "writers"}, "dag": null or {"name", "error",
 * "repld": {"up", "socket", "error", "timed_out"}, "copies" (rp_dag_copy_rows' rows)}, "repo": null
 * or {"path", "reachable", "writable", "error", "sets" (bk_sets' summaries)}, "databases":
 * [{"name", "id", "mounted", "recovery", "edb", "logs", "log_generations", "log_fs": {"path",
 * "dev", "free", "size", "error"}}], "runs" (backup/runs.h's entries), "runs_error", "data_fs":
 * {"path", "free", "size"}. */
json_t *cli_health_gather(const cli_health_opts *o);
/* Parses a duration: seconds, or a number with s, m, h, d or w ("90s", "36h", "8d"). CLI_OK,
 * or prints a usage error naming what and returns CLI_USAGE. */
int cli_duration(const cli_args *a, const char *what, const char *text, uint64_t *seconds);
/* `ombra --generate man DIR [PAGE...]` or `ombra --generate bash-completion` (argv after
 * --generate): the manual pages and the bash completion from the tables of groups (ombra.c's, in
 * its order) and their subgroups (cli_generate.c). Returns the exit code. */
int cli_generate(const cli_group *const *groups, size_t n, int argc, char **argv);

/* The groups, in the order `ombra --help` lists them. */
extern const cli_group cli_db_group;
extern const cli_group cli_mail_group;
extern const cli_group cli_dbutil_group;
extern const cli_group cli_vss_group;
extern const cli_group cli_backup_group;
extern const cli_group cli_restore_group;
extern const cli_group cli_repo_group;
extern const cli_group cli_backups_group;
extern const cli_group cli_verify_group;
extern const cli_group cli_expire_group;
extern const cli_group cli_dag_group;
extern const cli_group cli_schedule_group;
extern const cli_group cli_check_group;
/* `ombra check` is a monitoring plugin: what keeps it from checking (a usage error, a broken
 * configuration file) exits 3, UNKNOWN, not 2 (CRITICAL) or 1 (WARNING). */
#define CLI_CHECK_UNKNOWN 3
extern const cli_group cli_metrics_group;
/* `ombra db copy ...`: a group under db (ombra.c dispatches it). */
extern const cli_group cli_copy_group;

#endif
