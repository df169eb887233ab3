/* The record of backup runs: what `ombra backup` leaves for `ombra check` and `ombra metrics`.
 *
 * A repository lists only the sets of backups that succeeded; a failed run leaves nothing there
 * (its pending set is discarded). So every run of `ombra backup` also writes its outcome into
 * one small file under the data directory (base/paths.h):
 *
 *   $OMBRA_HOME/backup-runs.json   {"format": 1, "runs": [entry...]}
 *   $OMBRA_HOME/backup-runs.lock   flock held exclusively around each read-modify-write
 *
 * with one entry per database and backup type:
 *
 *   {"database", "type", "last": run, "last_success": run or null}
 *   run: {"start", "end" (ISO 8601 UTC), "start_ns", "end_ns", "seconds", "result": "ok" or
 *         "failed", "error" (the error's number, 0 when ok), "error_name", "message", "set" (the
 *         set id, null when none), "bytes_stored" (the database's set), "bytes_read" (the whole
 *         run), "freeze_ms" (writes held), "repo", "server"}
 *
 * Crash safety: the file is replaced with the durable-file writer (base/vfs.h): after a crash
 * it holds the old record or the new one, whole. Concurrency: two backups that end together
 * take the lock in turn, so neither's entry is lost. A damaged file: bk_runs_load fails with
 * RepositoryCorrupt naming it (and a HINT), bk_runs_record starts a new record in its place.
 * Something there that is no regular file (a FIFO, a device, a folder, a symbolic link) is
 * never opened in a way that could block: both fail at once with InvalidPath naming it, and
 * the record replaces nothing it did not write. */
#ifndef OM_BACKUP_RUNS_H
#define OM_BACKUP_RUNS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define BK_RUNS_FILE "backup-runs.json"

/* One run of `ombra backup` as its caller saw it. */
typedef struct bk_run {
    const char *const *dbs; /* the databases named (each recorded once) */
    size_t ndb;
    const char *type; /* full, copy, incremental, differential */
    const char *repo; /* the repository's absolute path */
    uint64_t start_ns, end_ns;
    int err;            /* 0, or the run's error (its detail is om_err_detail's at the call) */
    const char *detail; /* the error's message (NULL: om_err_detail()) */
    json_t *result; /* the job's result (borrowed; may be NULL): "sets" [{"database" {"id", "name"},
                       "id", "bytes_stored"}], "bytes_read", "freeze_ms", "server" */
} bk_run;

/* Records the run in dir (NULL: the data directory): one "last" per database named, and its
 * "last_success" when that database has a set in the result; not a name that failed with
 * DatabaseNotFound about itself and has no entry yet (a typo is no database to monitor). A database
 * with a set succeeded even when the run as a whole failed (another database's failure). Returns 0
 * or an error (not printed). */
int bk_runs_record(const char *dir, const bk_run *r);
/* The record of dir (NULL: the data directory): *out = {"format", "runs": [...]}, with no runs
 * when there is no file yet; the caller decrefs. */
int bk_runs_load(const char *dir, json_t **out);

#endif
