/* The record of backup runs (runs.h): backup-runs.json under the data directory, replaced
 * durably under an flock of backup-runs.lock. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/runs.h"
#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/vfs.h"

#define RUNS_LOCK   "backup-runs.lock"
#define RUNS_FORMAT 1

static int where(const char *dir, char *out, size_t n)
{
    if (!dir) return om_data_dir(out, n);
    if (snprintf(out, n, "%s", dir) >= (int)n)
        return om_errf(OM_E_InvalidPath, "path too long: %s", dir);
    return 0;
}

#define RUNS_MAX_BYTES (64u << 20) /* a record is a few kB per database */

/* The bytes of path, a regular file, into *text (malloc'd, caller frees); FileNotFound when
 * there is none. Anything else at that name (a FIFO, a device, a folder, a symbolic link) is
 * refused with InvalidPath without waiting: opening a FIFO for reading would block until
 * someone writes it, and check, metrics and every backup with it. */
static int read_regular(const char *path, uint8_t **text, size_t *n)
{
    *text = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ENOENT) return om_errf(OM_E_FileNotFound, "%s: no such file", path);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) != 0) {
        int rc = om_errf(OM_E_DiskIO, "%s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    if (fd < 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        const char *what = fd < 0                 ? (e == ELOOP ? "a symbolic link" : NULL)
                           : S_ISFIFO(st.st_mode) ? "a FIFO"
                           : S_ISDIR(st.st_mode)  ? "a folder"
                           : S_ISSOCK(st.st_mode) ? "a socket"
                                                  : "a device";
        if (fd >= 0) close(fd);
        if (!what) return om_errf(om_err_from_errno(e), "%s: %s", path, strerror(e));
        return om_errf(OM_E_InvalidPath,
                       "%s is %s, not a record of backup runs: not read, not replaced. HINT: "
                       "remove it; the next backup starts a new record",
                       path, what);
    }
    if (st.st_size > (off_t)RUNS_MAX_BYTES) {
        close(fd);
        return om_errf(OM_E_RepositoryCorrupt, "%s: %lld bytes, too large for a record of runs",
                       path, (long long)st.st_size);
    }
    size_t cap = (size_t)st.st_size + 1, got = 0;
    uint8_t *b = malloc(cap);
    if (!b) {
        close(fd);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    for (;;) {
        ssize_t r = read(fd, b + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int rc = om_errf(OM_E_DiskIO, "reading %s: %s", path, strerror(errno));
            free(b);
            close(fd);
            return rc;
        }
        if (r == 0) break;
        got += (size_t)r;
        if (got == cap) { /* it grew while read: read no more than the limit */
            uint8_t *nb = cap > RUNS_MAX_BYTES ? NULL : realloc(b, cap * 2);
            if (!nb) {
                free(b);
                close(fd);
                return om_errf(OM_E_RepositoryCorrupt, "%s: too large for a record of runs", path);
            }
            b = nb;
            cap *= 2;
        }
    }
    close(fd);
    *text = b;
    *n = got;
    return 0;
}

/* The record in d (no file: an empty one); RepositoryCorrupt for a file that is not one,
 * InvalidPath for something there that is no regular file. */
static int load_in(const char *d, json_t **out)
{
    char path[4200];
    uint8_t *text = NULL;
    size_t n = 0;
    *out = NULL;
    int rc = om_path_join(path, sizeof path, d, BK_RUNS_FILE);
    if (!rc) rc = read_regular(path, &text, &n);
    if (rc == OM_E_FileNotFound) {
        om_err_clear();
        *out = json_pack("{s:i, s:[]}", "format", RUNS_FORMAT, "runs");
        return *out ? 0 : om_errf(OM_E_OutOfMemory, "out of memory");
    }
    if (rc) return rc;
    json_error_t je;
    json_t *v = json_loadb((const char *)text, n, 0, &je);
    free(text);
    if (!v || !json_is_array(json_object_get(v, "runs")) ||
        om_json_int_or(v, "format", 0) != RUNS_FORMAT) {
        json_decref(v);
        return om_errf(OM_E_RepositoryCorrupt,
                       "%s is not a record of backup runs (format %d): %s. HINT: remove it; the "
                       "next backup starts a new one",
                       path, RUNS_FORMAT, v ? "no \"runs\" array" : je.text);
    }
    *out = v;
    return 0;
}

int bk_runs_load(const char *dir, json_t **out)
{
    char d[4096];
    int rc = where(dir, d, sizeof d);
    return rc ? rc : load_in(d, out);
}

/* The entry of db and type in runs, made when missing (make). */
static json_t *entry(json_t *runs, const char *db, const char *type, int make)
{
    size_t i;
    json_t *e;
    json_array_foreach(runs, i, e)
    {
        if (!strcmp(om_json_str_or(e, "database", ""), db) &&
            !strcmp(om_json_str_or(e, "type", ""), type))
            return e;
    }
    if (!make) return NULL;
    e = json_pack("{s:s, s:s, s:n, s:n}", "database", db, "type", type, "last", "last_success");
    json_array_append_new(runs, e);
    return e;
}

/* The element of the result's array key about database db (NULL: none): its "database" is
 * {"id", "name"} (docs/cli.md), or a name in results of older versions. */
static json_t *about(json_t *res, const char *key, const char *db)
{
    size_t i;
    json_t *s, *found = NULL;
    json_array_foreach(json_object_get(res, key), i, s)
    {
        json_t *d = json_object_get(s, "database");
        const char *name = json_is_string(d) ? json_string_value(d) : om_json_str_or(d, "name", "");
        if (!strcmp(name, db)) found = s;
    }
    return found;
}

/* 1 when the run's message names db ('db'): its DatabaseNotFound is about db, not another. */
static int names_db(json_t *run, const char *db)
{
    char quoted[300];
    snprintf(quoted, sizeof quoted, "'%s'", db);
    return strstr(om_json_str_or(run, "message", ""), quoted) != NULL;
}

/* One database's run as the record keeps it. */
static json_t *run_json(const bk_run *r, const char *db)
{
    json_t *set = about(r->result, "sets", db), *failed = about(r->result, "failed", db);
    json_t *copy = about(r->result, "copies", db); /* which server's copy was read */
    int err = failed ? (int)om_json_int_or(failed, "error", r->err) : set ? 0 : r->err;
    if (!err && !set) err = OM_E_Aborted; /* no set and no error: nothing was stored */
    const char *msg = failed ? om_json_str_or(failed, "message", "")
                      : err  ? (r->detail ? r->detail : om_err_detail())
                             : "";
    char ts[40], te[40];
    json_t *j = json_pack(
        "{s:s, s:s, s:I, s:I, s:f, s:s, s:i, s:s, s:s, s:s?, s:I, s:I, s:f, s:s, s:s}", "start",
        om_time_iso(r->start_ns, ts, sizeof ts), "end", om_time_iso(r->end_ns, te, sizeof te),
        "start_ns", (json_int_t)r->start_ns, "end_ns", (json_int_t)r->end_ns, "seconds",
        (double)(r->end_ns - r->start_ns) / 1e9, "result", err ? "failed" : "ok", "error", err,
        "error_name", err ? om_err_name(err) : "", "message", msg, "set",
        set ? om_json_str_or(set, "id", om_json_str_or(set, "set", NULL)) : NULL, "bytes_stored",
        (json_int_t)om_json_int_or(set, "bytes_stored", 0), "bytes_read",
        (json_int_t)om_json_int_or(r->result, "bytes_read", 0), "freeze_ms",
        json_number_value(json_object_get(r->result, "freeze_ms")), "repo", r->repo ? r->repo : "",
        "server", om_json_str_or(copy, "server", ""));
    if (j && !set) json_object_set_new(j, "set", json_null());
    return j;
}

/* Takes the lock (waiting for another backup's record to be written). *fd to close after. */
static int lock_in(const char *d, int *fd)
{
    char path[4200];
    int rc = om_path_join(path, sizeof path, d, RUNS_LOCK);
    if (rc) return rc;
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (*fd < 0) return om_errf(om_err_from_errno(errno), "%s: %s", path, strerror(errno));
    while (flock(*fd, LOCK_EX) != 0)
        if (errno != EINTR) {
            rc = om_errf(OM_E_DiskIO, "locking %s: %s", path, strerror(errno));
            close(*fd);
            *fd = -1;
            return rc;
        }
    return 0;
}

int bk_runs_record(const char *dir, const bk_run *r)
{
    char d[4096];
    int fd = -1;
    json_t *rec = NULL;
    om_dir *od = NULL;
    char *text = NULL;
    int rc = where(dir, d, sizeof d);
    if (!rc) rc = om_mkdirs(d);
    if (!rc) rc = lock_in(d, &fd);
    int lrc = rc ? 0 : load_in(d, &rec);
    if (lrc == OM_E_RepositoryCorrupt) {
        om_err_clear(); /* a damaged record is replaced: monitoring needs the runs from now on */
        rec = json_pack("{s:i, s:[]}", "format", RUNS_FORMAT, "runs");
    } else if (lrc)
        rc = lrc; /* not a regular file, or unreadable: left as it is */
    if (!rc && !rec) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    json_t *runs = json_object_get(rec, "runs");
    for (size_t i = 0; !rc && i < r->ndb; i++) {
        json_t *run = run_json(r, r->dbs[i]);
        /* A name no database has, never recorded before (a typo), starts no entry: it would be
         * a failed backup in metrics and check forever, a database nobody has. */
        if (run && om_json_int_or(run, "error", 0) == OM_E_DatabaseNotFound &&
            !entry(runs, r->dbs[i], r->type, 0) && names_db(run, r->dbs[i])) {
            json_decref(run);
            continue;
        }
        json_t *e = entry(runs, r->dbs[i], r->type, 1);
        if (!e || !run) {
            json_decref(run);
            rc = om_errf(OM_E_OutOfMemory, "out of memory");
            break;
        }
        if (!strcmp(om_json_str_or(run, "result", ""), "ok"))
            json_object_set(e, "last_success", run);
        json_object_set_new(e, "last", run);
    }
    if (!rc && !(text = json_dumps(rec, JSON_INDENT(1))))
        rc = om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc) rc = om_dir_open(om_vfs_posix(), NULL, d, OM_D_FOLLOW, &od);
    if (!rc) rc = om_durable_write_at(od, BK_RUNS_FILE, text, strlen(text), OM_RENAME_REPLACE);
    if (rc) rc = om_err_ctx(rc, "recording the backup run in %s/%s", d, BK_RUNS_FILE);
    om_dir_close(od);
    free(text);
    json_decref(rec);
    if (fd >= 0) close(fd); /* releases the lock, after the new record is in place */
    return rc;
}
