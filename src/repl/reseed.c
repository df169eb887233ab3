/* Seeding a passive copy from another passive copy (reseed.h). */
#include "repl/reseed.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/vfs.h"
#include "check/check.h"
#include "engine/log.h"
#include "repl/resync.h"
#include "repl/wire.h"

int rp_copy_lock(const char *data_dir, const char *db_id, int wait_ms, volatile int *stop, int *fd)
{
    char p[4200];
    *fd = -1;
    snprintf(p, sizeof p, "%s/copies/%s", data_dir, db_id);
    int f = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (f < 0)
        return om_errf(errno == ENOENT ? OM_E_FileNotFound : OM_E_InvalidPath,
                       "the copy folder %s: %s", p, strerror(errno));
    uint64_t end = om_mono_ns() + (uint64_t)(wait_ms > 0 ? wait_ms : 0) * 1000000ull;
    /* flock, not fcntl: it belongs to the open file, so two threads of one process that each
     * open the folder exclude each other. */
    while (flock(f, LOCK_EX | LOCK_NB)) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int e = errno;
            close(f);
            return om_errf(OM_E_DiskIO, "locking the copy folder %s: %s", p, strerror(e));
        }
        if (!wait_ms || (wait_ms > 0 && om_mono_ns() >= end) || (stop && *stop)) {
            close(f);
            return om_errf(OM_E_DatabaseInUse,
                           "the copy in %s is being written or read for a seed: try again", p);
        }
        usleep(50000);
    }
    *fd = f;
    return 0;
}

void rp_copy_unlock(int fd)
{
    if (fd >= 0) close(fd); /* closing the last descriptor of the open file releases it */
}

/* A database id is the hex and dashes of a UUID: it names a folder. */
static int id_ok(const char *id)
{
    size_t n = strlen(id);
    if (!n || n > 36) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdefABCDEF-", id[i])) return 0;
    return 1;
}

/* Where this server's copy of a database is (copier.h): the store's files when the record
 * gives them (a deposed active's, replayed in place), else the copy folder. */
typedef struct copy_at {
    char base[8], edb[4400], logs[4400];
} copy_at;

/* The copy may be a seed: this server holds a passive copy of id under that name, its record
 * says Healthy, and it follows the epoch of active/<id> that the asking copier follows too (a
 * copy of an older epoch, not resynced yet, may hold the deposed active's generations). Its
 * base and paths from the records. */
static int check_copy(rp_source *s, const char *id, const char *name, json_t *req, copy_at *at)
{
    json_t *db = NULL, *act = NULL, *st = NULL;
    char k[200];
    if (!id_ok(id))
        return om_errf(OM_E_DatabaseNotFound, "'%s' is not a database id of this DAG", id);
    snprintf(k, sizeof k, "databases/%s", id);
    int rc = rp_dag_get(s->dag, k, &db, NULL);
    if (!rc && (!db || !json_object_get(json_object_get(db, "copies"), s->server) ||
                strcmp(om_json_str_or(db, "name", ""), name)))
        rc = om_errf(OM_E_DatabaseNotFound, "server %s holds no copy of database %s (%s)",
                     s->server, name, id);
    snprintf(k, sizeof k, "active/%s", id);
    if (!rc) rc = rp_dag_get(s->dag, k, &act, NULL);
    if (!rc && act && !strcmp(om_json_str_or(act, "server", ""), s->server))
        rc = om_errf(OM_E_InvalidParameter,
                     "server %s holds the active copy of %s: a seed from it is an ordinary seed",
                     s->server, name);
    snprintf(k, sizeof k, "copies/%s/%s", id, s->server);
    if (!rc) rc = rp_dag_get(s->dag, k, &st, NULL);
    if (!rc && strcmp(om_json_str_or(st, "state", ""), "Healthy"))
        rc = om_errf(OM_E_InvalidParameter,
                     "the copy of %s on %s is %s, not Healthy: it cannot seed another copy", name,
                     s->server, st ? om_json_str_or(st, "state", "?") : "not started");
    json_int_t epoch = json_integer_value(json_object_get(act, "epoch"));
    if (epoch <= 0) epoch = 1;
    uint32_t followed = 0;
    char work[4100];
    snprintf(work, sizeof work, "%s/copies/%s", s->data_dir, id);
    if (!rc) rc = rp_epoch_read(work, &followed);
    json_t *asked = json_object_get(req, "epoch");
    if (!rc && (!json_is_integer(asked) || json_integer_value(asked) != epoch ||
                (followed ? followed : 1) != (uint32_t)epoch))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "the copy of %s on %s follows epoch %u, the seed is asked at epoch %lld and "
                     "active/%s is at epoch %lld: no seed across a change of active",
                     name, s->server, followed ? followed : 1, (long long)json_integer_value(asked),
                     id, (long long)epoch);
    if (!rc) {
        json_t *mine = json_object_get(json_object_get(db, "copies"), s->server);
        const char *edb = om_json_str_or(mine, "edb", ""), *logs = om_json_str_or(mine, "logs", "");
        snprintf(at->base, sizeof at->base, "%s", om_json_str_or(db, "base", "E00"));
        if (edb[0] == '/' && logs[0] == '/') {
            snprintf(at->edb, sizeof at->edb, "%s", edb);
            snprintf(at->logs, sizeof at->logs, "%s", logs);
        } else {
            snprintf(at->edb, sizeof at->edb, "%s/%s.edb", work, name);
            snprintf(at->logs, sizeof at->logs, "%s/logs", work);
        }
    }
    json_decref(db);
    json_decref(act);
    json_decref(st);
    return rc;
}

/* Sends file name of dir whole: the .edb (gen 0) as seed.begin (with the generations lo..hi
 * that follow it) and chunks of at most RP_SEED_CHUNK, a generation as one message. */
static int send_file(rp_conn *c, om_dir *dir, const char *name, uint32_t gen, uint32_t lo,
                     uint32_t hi, uint64_t *size, uint32_t pause_ms)
{
    om_file *f = NULL;
    uint64_t n = 0;
    int rc = om_open_at(dir, name, OM_O_RDONLY, &f);
    if (!rc) rc = om_fsize(f, &n);
    if (!rc && gen && n > RP_MAX_BULK)
        rc = om_errf(OM_E_LogFileCorrupt, "%s is not a log file of a sane size", name);
    size_t cap = gen ? (size_t)n : RP_SEED_CHUNK;
    unsigned char *buf = rc ? NULL : malloc(cap ? cap : 1);
    if (!rc && !buf) rc = om_errf(OM_E_OutOfMemory, "seed buffer");
    if (!rc && !gen)
        rc = rp_reply(c,
                      json_pack("{s:b,s:s,s:I,s:I,s:I}", "ok", 1, "op", "seed.begin", "size",
                                (json_int_t)n, "lo", (json_int_t)lo, "hi", (json_int_t)hi),
                      NULL, 0);
    for (uint64_t off = 0; !rc && (off < n || (gen && !n && !off));) {
        size_t want = n - off < cap ? (size_t)(n - off) : cap;
        if (want) rc = om_pread_full(f, buf, want, off);
        if (!rc && gen)
            rc = rp_reply(c,
                          json_pack("{s:b,s:s,s:I,s:I}", "ok", 1, "op", "seed.log", "gen",
                                    (json_int_t)gen, "size", (json_int_t)want),
                          buf, want);
        else if (!rc)
            rc = rp_reply(
                c,
                json_pack("{s:b,s:s,s:I}", "ok", 1, "op", "seed.data", "offset", (json_int_t)off),
                buf, want);
        off += want;
        if (!want) break;
        if (pause_ms) usleep(pause_ms * 1000u); /* tests: OMBRA_REPL_TEST_SEED_PAUSE_MS */
    }
    free(buf);
    om_close(f);
    if (size) *size = n;
    return rc;
}

/* Under the copy lock: the .edb, then the generations it needs that the copy holds. */
static int stream(rp_source *s, rp_conn *c, const char *id, const char *name, const copy_at *at)
{
    om_vfs *v = om_vfs_posix();
    om_dir *top = NULL, *dir = NULL, *logs = NULL;
    const char *base = at->base, *edb = at->edb, *logpath = at->logs;
    char p[4200], edbname[4400], own[8800];
    snprintf(p, sizeof p, "%s/copies", s->data_dir);
    snprintf(edbname, sizeof edbname, "%s.edb", name);
    snprintf(own, sizeof own, "%s/%s/%s", p, id, edbname);
    int rc = 0;
    if (!strcmp(own, edb)) { /* the copy folder: handles that refuse a link */
        rc = om_dir_open(v, NULL, p, 0, &top);
        if (!rc) rc = om_dir_open(v, top, id, 0, &dir);
        if (!rc) rc = om_dir_open(v, dir, "logs", 0, &logs);
        om_dir_close(top);
    } else { /* the store's files (a deposed active's copy, in place): configured paths */
        char d[4200];
        const char *slash = strrchr(edb, '/');
        om_dirname(edb, d, sizeof d);
        snprintf(edbname, sizeof edbname, "%s", slash ? slash + 1 : edb);
        rc = om_dir_open(v, NULL, d, 0, &dir);
        if (!rc) rc = om_dir_open(v, NULL, logpath, 0, &logs);
    }
    /* Where replay resumes: the header's Log Required min (0: a Clean Shutdown copy, which
     * needs only what comes after it, from the active). */
    chk_set *cs = NULL;
    chk_headers hh = {0};
    const char *one[1] = {edb};
    if (!rc) rc = chk_init(one, 1, NULL, NULL, NULL, &cs);
    if (!rc) rc = chk_check_headers(cs, &hh);
    chk_term(cs); /* it says the pages were not checked: the copy that gets the seed does */
    uint32_t *gens = NULL, ng = 0, lo = hh.need_min, hi = 0;
    if (!rc) rc = eng_log_list_gens(v, logpath, base, &gens, &ng);
    for (uint32_t i = 0; i < ng; i++)
        if (gens[i] > hi) hi = gens[i];
    free(gens);
    if (!lo || hi < lo) hi = lo ? lo - 1 : 0;
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", name}),
                "seeding the copy of %s (%s) to %s from this server's copy: %s and generations "
                "%u..%u",
                name, id, rp_conn_peer(c), edb, lo, hi);
    uint64_t size = 0;
    if (!rc) rc = send_file(c, dir, edbname, 0, lo, hi, &size, s->test_seed_pause_ms);
    for (uint32_t g = lo; !rc && g && g <= hi; g++) {
        char gname[64];
        snprintf(gname, sizeof gname, "%s%08X.log", base, g);
        rc = send_file(c, logs, gname, g, 0, 0, NULL, s->test_seed_pause_ms);
        if (rc == OM_E_FileNotFound)
            rc = om_errf(OM_E_MissingLogFile, "generation %u of %s is missing from the copy (%s)",
                         g, name, logpath);
    }
    if (!rc)
        rc = rp_reply(c,
                      json_pack("{s:b,s:s,s:I,s:I}", "ok", 1, "op", "seed.end", "size",
                                (json_int_t)size, "logs",
                                (json_int_t)(lo && hi >= lo ? hi - lo + 1 : 0)),
                      NULL, 0);
    om_dir_close(logs);
    om_dir_close(dir);
    return rc;
}

int rp_reseed_serve(rp_source *s, rp_conn *c, json_t *req)
{
    const char *id = om_json_str_or(req, "db", ""), *name = om_json_str_or(req, "name", "");
    copy_at at = {0};
    int lk = -1;
    int rc = s->data_dir
                 ? 0
                 : om_errf(OM_E_InvalidParameter, "server %s keeps no passive copies", s->server);
    /* The copier replays one generation range at a time: a few seconds at most. */
    if (!rc && id_ok(id)) rc = rp_copy_lock(s->data_dir, id, 30000, &s->stopping, &lk);
    /* Checked under the lock: the copier does not change state while a seed reads it. */
    if (!rc) rc = check_copy(s, id, name, req, &at);
    if (!rc) rc = stream(s, c, id, name, &at);
    rp_copy_unlock(lk);
    if (!rc) return 0;
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", name}), "seed of the copy of %s (%s) for %s: %s",
                name, id, rp_conn_peer(c), om_err_detail());
    return rp_send_error(c, rc);
}

/* ---- a restore in a DAG ---- */

int rp_restore_where(rp_dag *d, const char *name, rp_restore_target *t)
{
    json_t *rec = NULL, *act = NULL;
    memset(t, 0, sizeof *t);
    int rc = rp_dag_find_db(d, name, &rec, t->id);
    if (rc == OM_E_DatabaseNotFound) return 0;
    char k[100];
    snprintf(k, sizeof k, "active/%s", t->id);
    if (!rc) rc = rp_dag_get(d, k, &act, NULL);
    if (!rc) {
        t->in_dag = 1;
        snprintf(t->active, sizeof t->active, "%s", om_json_str_or(act, "server", ""));
        const char *srv;
        json_t *c;
        json_object_foreach(json_object_get(rec, "copies"), srv, c) t->passives +=
            strcmp(srv, t->active) != 0;
    }
    json_decref(rec);
    json_decref(act);
    return rc;
}

typedef struct after_restore {
    const char *active;
    json_t *copies; /* what the last try changed */
} after_restore;

static int bump_reseeds(void *arg, json_t *rec, int exists)
{
    after_restore *a = arg;
    json_array_clear(a->copies);
    if (!exists)
        return om_errf(OM_E_DatabaseNotFound, "the database's record is gone from the DAG");
    const char *srv;
    json_t *c;
    json_object_foreach(json_object_get(rec, "copies"), srv, c)
    {
        if (!strcmp(srv, a->active)) continue;
        json_object_set_new(c, "reseed",
                            json_integer(json_integer_value(json_object_get(c, "reseed")) + 1));
        json_object_del(c, "source");
        json_array_append_new(a->copies, json_pack("{s:s,s:b}", "server", srv, "suspended",
                                                   json_is_true(json_object_get(c, "suspended"))));
    }
    return 0;
}

int rp_reseed_after_restore(rp_dag *d, const char *id, const char *active, json_t **copies)
{
    after_restore a = {.active = active, .copies = json_array()};
    char k[100];
    snprintf(k, sizeof k, "databases/%s", id);
    int rc = a.copies ? rp_dag_update(d, k, bump_reseeds, &a)
                      : om_errf(OM_E_OutOfMemory, "out of memory");
    if (rc) {
        json_decref(a.copies);
        a.copies = NULL;
    }
    *copies = a.copies;
    return rc;
}
