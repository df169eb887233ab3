/* The active side of replication (wire.h): serves a peer's copier the closed generations of the
 * databases whose active copy is on this server, a long poll that returns as soon as a new
 * generation closes (inotify on the log folder: the engine renames E00.log to its numbered name
 * when it rolls, so a numbered name appearing is a generation closing), and the seed. */
#include "repl/source.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/shadow.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/vfs.h"
#include "engine/format.h"
#include "engine/log.h"
#include "repl/remote_backup.h"
#include "repl/reseed.h"
#include "repl/wire.h"
#include "store/client.h"

typedef struct srcdb {
    char id[40], name[80], logs[4096], base[4], edb[4096];
} srcdb;

/* The paths of the active copy of database id as the DAG's record gives them (copies[this
 * server]: "edb", "logs"), for the log requests of a copier when the store does not answer: a
 * store killed or stopped on the active leaves its closed generations (and the open one) in
 * its folder, and the copies' attempt to copy the remaining logs reads them there. */
static int record_paths(rp_source *s, const char *id, const char *name, json_t **info)
{
    json_t *rec = NULL;
    char k[128];
    snprintf(k, sizeof k, "databases/%s", id);
    int rc = rp_dag_get(s->dag, k, &rec, NULL);
    json_t *mine = json_object_get(json_object_get(rec, "copies"), s->server);
    const char *edb = om_json_str_or(mine, "edb", ""), *logs = om_json_str_or(mine, "logs", "");
    if (!rc && (strcmp(om_json_str_or(rec, "name", ""), name) || edb[0] != '/' || logs[0] != '/'))
        rc = om_errf(OM_E_DatabaseNotFound,
                     "the DAG's record gives no files of database %s (%s) "
                     "on server %s",
                     name, id, s->server);
    if (!rc)
        *info = json_pack("{s:s,s:s,s:s,s:s}", "id", id, "edb", edb, "logs", logs, "base",
                          om_json_str_or(rec, "base", "E00"));
    json_decref(rec);
    return rc;
}

/* The database the request names, if this server holds its active copy at the epoch the request
 * says (log requests and seeds: a copier that follows another epoch is refused): its paths from
 * the local store, checked against the directory's record (from the record alone for a log
 * request when the store does not answer). */
static int find_db(rp_source *s, store_client *sc, json_t *req, srcdb *d)
{
    const char *id = om_json_str_or(req, "db", ""), *name = om_json_str_or(req, "name", "");
    const char *op = om_json_str_or(req, "op", "");
    int log_op = !strncmp(op, "log.", 4) || !strcmp(op, "seed");
    json_t *act = NULL, *info = NULL;
    char suffix[128];
    snprintf(suffix, sizeof suffix, "active/%s", id);
    int rc = rp_dag_get(s->dag, suffix, &act, NULL);
    if (!rc && (!act || strcmp(om_json_str_or(act, "server", ""), s->server)))
        rc = om_errf(OM_E_DatabaseNotFound, "server %s holds no active copy of database %s (%s)",
                     s->server, name, id);
    json_int_t epoch = json_integer_value(json_object_get(act, "epoch"));
    if (epoch <= 0) epoch = 1;
    json_t *asked = json_object_get(req, "epoch");
    if (!rc && log_op && (!json_is_integer(asked) || json_integer_value(asked) != epoch))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "%s of database %s refused: it asks at epoch %s%lld, and active/%s is at "
                     "epoch %lld (server %s). HINT: the copy reads active/%s again and resyncs",
                     op, name, json_is_integer(asked) ? "" : "(none) ",
                     (long long)json_integer_value(asked), id, (long long)epoch, s->server, id);
    if (!rc) {
        rc = store_client_db_show(sc, name, &info);
        if (rc && log_op && strcmp(op, "seed")) {
            om_err_saved why;
            om_err_save(&why, rc);
            rc = record_paths(s, id, name, &info);
            if (rc) rc = om_err_restore(&why);
        }
    }
    if (!rc && strcmp(om_json_str_or(info, "id", ""), id))
        rc = om_errf(OM_E_DatabaseNotFound, "database '%s' of server %s has id %s, not %s", name,
                     s->server, om_json_str_or(info, "id", ""), id);
    if (!rc) {
        snprintf(d->id, sizeof d->id, "%s", id);
        snprintf(d->name, sizeof d->name, "%s", name);
        snprintf(d->logs, sizeof d->logs, "%s", om_json_str_or(info, "logs", ""));
        snprintf(d->edb, sizeof d->edb, "%s", om_json_str_or(info, "edb", ""));
        snprintf(d->base, sizeof d->base, "%s", om_json_str_or(info, "base", "E00"));
    }
    json_decref(act);
    json_decref(info);
    return rc;
}

/* The folder's closed generations: the oldest and the newest (0, 0: none), and the current. */
static int scan(const srcdb *d, uint32_t *first, uint32_t *closed, uint32_t *current)
{
    eng_stream st;
    *first = *closed = *current = 0;
    int rc = eng_stream_scan(om_vfs_posix(), d->logs, d->base, &st);
    if (rc) return rc;
    if (st.n) {
        *first = st.gens[0];
        *closed = st.gens[st.n - 1];
    }
    *current = st.cur_present ? st.cur_holds : 0;
    eng_stream_free(&st);
    return 0;
}

static int op_wait(rp_source *s, rp_conn *c, const srcdb *d, json_t *req)
{
    uint32_t after = (uint32_t)json_integer_value(json_object_get(req, "after"));
    json_int_t tmo = json_integer_value(json_object_get(req, "timeout_ms"));
    if (tmo < 0 || tmo > 60000) tmo = RP_WAIT_MS; /* 0: an answer at once */
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (in < 0) return om_errf(OM_E_OutOfMemory, "inotify: %s", strerror(errno));
    /* Watch before the first look, so a roll between the two is not missed. */
    if (inotify_add_watch(in, d->logs, IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE) < 0) {
        int e = errno;
        close(in);
        return om_errf(OM_E_FileNotFound, "watching log folder %s: %s", d->logs, strerror(e));
    }
    uint64_t end = (om_mono_ns() / 1000000) + (uint64_t)tmo;
    uint32_t first, closed, cur;
    int rc;
    for (;;) {
        if ((rc = scan(d, &first, &closed, &cur))) break;
        uint64_t now = (om_mono_ns() / 1000000);
        if (closed > after || now >= end || s->stopping) break;
        struct pollfd p = {.fd = in, .events = POLLIN};
        int left = (int)(end - now);
        poll(&p, 1, left > 500 ? 500 : left); /* 500 ms: to notice a stop */
        char buf[4096];
        while (read(in, buf, sizeof buf) > 0)
            ;
    }
    close(in);
    if (rc) return rc;
    om_debug("log.wait %s after %u: closed %u, current %u, first %u", d->name, after, closed, cur,
             first);
    json_t *r = json_pack("{s:b,s:I,s:I,s:I}", "ok", 1, "closed", (json_int_t)closed, "current",
                          (json_int_t)cur, "first", (json_int_t)first);
    return rp_reply(c, r, NULL, 0);
}

/* Reads a whole closed generation, without following a link at its name. */
static int read_gen(const srcdb *d, uint32_t gen, void **data, size_t *n)
{
    char path[4200];
    eng_log_path(path, sizeof path, d->logs, d->base, gen);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return om_errf(errno == ENOENT ? OM_E_MissingLogFile : OM_E_DiskIO,
                       "generation %u of %s (%s): %s", gen, d->name, path, strerror(errno));
    struct stat st;
    int rc = 0;
    void *buf = NULL;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > (64 << 20))
        rc = om_errf(OM_E_LogFileCorrupt, "%s is not a log file of a sane size", path);
    if (!rc && !(buf = malloc((size_t)st.st_size ? (size_t)st.st_size : 1)))
        rc = om_errf(OM_E_OutOfMemory, "%s", path);
    size_t got = 0;
    while (!rc && got < (size_t)st.st_size) {
        ssize_t k = pread(fd, (char *)buf + got, (size_t)st.st_size - got, (off_t)got);
        if (k <= 0)
            rc = om_errf(OM_E_DiskIO, "reading %s: %s", path, k ? strerror(errno) : "short");
        got += k > 0 ? (size_t)k : 0;
    }
    close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    *data = buf;
    *n = got;
    return 0;
}

static int op_get(rp_source *s, rp_conn *c, const srcdb *d, json_t *req)
{
    uint32_t gen = (uint32_t)json_integer_value(json_object_get(req, "gen"));
    void *data = NULL;
    size_t n = 0;
    int rc = read_gen(d, gen, &data, &n);
    if (!rc && s->test_damage_gen == gen) { /* OMBRA_REPL_TEST_DAMAGE: damage in transit, once */
        s->test_damage_gen = 0;
        if (n > 8192) ((unsigned char *)data)[n / 2] ^= 0x5a;
        om_warn("test: damaging generation %u of %s in transit", gen, d->name);
    }
    if (!rc)
        rc = rp_reply(
            c, json_pack("{s:b,s:I,s:I}", "ok", 1, "gen", (json_int_t)gen, "size", (json_int_t)n),
            data, n);
    free(data);
    return rc;
}

/* Reads [from, ENG_LOG_SIZE) of the current log (E00.log) when it holds generation gen: 1 when it
 * does (the bytes in buf), 0 when it holds another one or is not there (the caller looks again). */
static int read_current(const srcdb *d, uint32_t gen, uint64_t from, uint8_t *buf, int *holds)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.log", d->logs, d->base);
    *holds = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    /* One descriptor for the header and the data: a roll renames the file under it, and the
     * bytes read are then still those of the generation its header named. */
    uint8_t hdr[ENG_SLOT_SIZE];
    eng_loghdr h;
    int rc = 0;
    if (pread(fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr && !eng_loghdr_decode(hdr, &h) &&
        h.gen == gen) {
        size_t got = 0, want = ENG_LOG_SIZE - (size_t)from;
        while (got < want) {
            ssize_t k = pread(fd, buf + got, want - got, (off_t)(from + got));
            if (k < 0) {
                rc = om_errf(OM_E_DiskIO, "reading %s: %s", path, strerror(errno));
                break;
            }
            if (k == 0) break;
            got += (size_t)k;
        }
        memset(buf + got, 0, want - got); /* short: nothing written there yet */
        *holds = !rc;
    }
    close(fd);
    return rc;
}

/* Passes a copy's durable position to the store (--sync-copies counts it). A store that cannot
 * take it is logged, not fatal: the copy goes on, and commits that wait for it time out. */
/* What one connection last read of its database's --sync-copies from the DAG's record, and
 * when: a copier in block mode asks at every log write, etcd need not be asked that often. */
typedef struct sync_seen {
    char id[40];
    int sync;
    uint64_t at_ms;
} sync_seen;
#define SYNC_SEEN_MS 1000

static void report_position(rp_source *s, store_client *sc, rp_conn *c, const srcdb *d, json_t *req,
                            sync_seen *seen)
{
    json_t *hg = json_object_get(req, "held_gen"), *hl = json_object_get(req, "held_len");
    if (!json_is_integer(hg)) return;
    /* What a copy can hold: the generation it asks for, up to the bytes it was sent of it (the
     * record stream is never longer than the file's bytes). Anything else is not counted. */
    json_int_t gen = json_integer_value(json_object_get(req, "gen")),
               off = json_integer_value(json_object_get(req, "offset"));
    if (json_integer_value(hg) != gen || !json_is_integer(hl) || json_integer_value(hl) < 0 ||
        json_integer_value(hl) > off) {
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", d->name}),
                    "position of %s's copy of %s not counted: it says it holds %lld bytes of "
                    "generation %lld, asking for generation %lld from byte %lld",
                    rp_conn_peer(c), d->name, (long long)json_integer_value(hl),
                    (long long)json_integer_value(hg), (long long)gen, (long long)off);
        return;
    }
    /* With the database's --sync-copies as the DAG's record has it (the store's own directory
     * may hold no DAG record). */
    uint64_t now = om_mono_ns() / 1000000;
    if (strcmp(seen->id, d->id) || now - seen->at_ms >= SYNC_SEEN_MS) {
        json_t *rec = NULL;
        char k[160];
        snprintf(k, sizeof k, "databases/%s", d->id);
        seen->sync = -1;
        if (!rp_dag_get(s->dag, k, &rec, NULL) && rec)
            seen->sync = (int)json_integer_value(json_object_get(rec, "sync_copies"));
        json_decref(rec);
        snprintf(seen->id, sizeof seen->id, "%s", d->id);
        seen->at_ms = now;
    }
    int sync = seen->sync;
    int rc = store_client_db_sync_position(sc, d->name, d->id, rp_conn_peer(c),
                                           (uint32_t)json_integer_value(hg),
                                           (uint32_t)json_integer_value(hl), sync);
    if (rc) om_debug("position of %s's copy of %s: %s", rp_conn_peer(c), d->name, om_err_detail());
}

/* Block mode (wire.h): the bytes of generation gen past offset, as soon as there are some. */
static int op_stream(rp_source *s, store_client *sc, rp_conn *c, const srcdb *d, json_t *req,
                     sync_seen *seen)
{
    uint32_t gen = (uint32_t)json_integer_value(json_object_get(req, "gen"));
    json_int_t off = json_integer_value(json_object_get(req, "offset"));
    json_int_t tmo = json_integer_value(json_object_get(req, "timeout_ms"));
    if (tmo < 0 || tmo > 60000) tmo = RP_WAIT_MS;
    if (!gen || off < 0 || off > ENG_LOG_SIZE || off % ENG_SLOT_SIZE)
        return om_errf(OM_E_InvalidParameter, "log.stream of %s: generation %u, offset %lld",
                       d->name, gen, (long long)off);
    report_position(s, sc, c, d, req, seen);
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (in < 0) return om_errf(OM_E_OutOfMemory, "inotify: %s", strerror(errno));
    /* Writes into E00.log are IN_MODIFY of the folder; a roll is a rename into it. */
    if (inotify_add_watch(in, d->logs, IN_MODIFY | IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE) < 0) {
        int e = errno;
        close(in);
        return om_errf(OM_E_FileNotFound, "watching log folder %s: %s", d->logs, strerror(e));
    }
    uint8_t *buf = malloc(ENG_LOG_SIZE);
    uint64_t end = (om_mono_ns() / 1000000) + (uint64_t)tmo;
    uint32_t first = 0, closed = 0, cur = 0, len = 0;
    uint64_t good = (uint64_t)off;
    int rc = buf ? 0 : om_errf(OM_E_OutOfMemory, "stream buffer");
    int is_closed = 0;
    void *whole = NULL;
    size_t wn = 0;
    while (!rc) {
        if ((rc = scan(d, &first, &closed, &cur))) break;
        if (gen <= closed) { /* closed: the rest of the file, and what it all hashes to */
            if ((rc = read_gen(d, gen, &whole, &wn))) break;
            if (wn != ENG_LOG_SIZE)
                rc = om_errf(OM_E_LogFileSizeMismatch, "generation %u of %s is %zu bytes", gen,
                             d->name, wn);
            is_closed = 1;
            break;
        }
        int holds = 0;
        if (gen == cur && (rc = read_current(d, gen, (uint64_t)off, buf, &holds))) break;
        if (holds) {
            good = rp_log_good_end(buf, (uint64_t)off, ENG_LOG_SIZE - (uint64_t)off, gen, &len);
            if (good > (uint64_t)off) break;
        }
        uint64_t now = om_mono_ns() / 1000000;
        if (now >= end || s->stopping) break;
        struct pollfd p = {.fd = in, .events = POLLIN};
        int left = (int)(end - now);
        poll(&p, 1, left > 500 ? 500 : left); /* 500 ms: to notice a stop */
        char ev[4096];
        while (read(in, ev, sizeof ev) > 0)
            ;
    }
    close(in);
    if (!rc) {
        json_t *r = json_pack("{s:b,s:I,s:I,s:b,s:I,s:I,s:I}", "ok", 1, "gen", (json_int_t)gen,
                              "offset", off, "closed", is_closed, "first", (json_int_t)first,
                              "current", (json_int_t)cur, "closed_gen", (json_int_t)closed);
        const void *bytes = buf;
        size_t n = (size_t)(good - (uint64_t)off);
        if (is_closed) {
            char x[24];
            snprintf(x, sizeof x, "%016llx",
                     (unsigned long long)om_xxh3(whole, ENG_LOG_SIZE, (uint64_t)gen));
            len = 0;
            rp_log_good_end(whole, 0, ENG_LOG_SIZE, gen, &len);
            json_object_set_new(r, "xxh3", json_string(x));
            bytes = (const uint8_t *)whole + off;
            n = ENG_LOG_SIZE - (size_t)off;
            good = ENG_LOG_SIZE;
        }
        json_object_set_new(r, "end", json_integer((json_int_t)good));
        json_object_set_new(r, "len", json_integer((json_int_t)len));
        if (s->test_damage_gen == gen && n > 64) { /* OMBRA_REPL_TEST_DAMAGE, as in op_get */
            s->test_damage_gen = 0;
            ((uint8_t *)bytes)[n / 2] ^= 0x5a;
            om_warn("test: damaging generation %u of %s in transit (streamed bytes %llu..%llu)",
                    gen, d->name, (unsigned long long)off, (unsigned long long)(off + n));
        }
        rc = rp_reply(c, r, bytes, n);
    }
    free(whole);
    free(buf);
    return rc;
}

static int op_seed(rp_source *s, rp_conn *c, const srcdb *d)
{
    bk_shadow_db *sh = NULL;
    int rc = bk_shadow_db_take(d->name, NULL, &sh);
    if (rc) return rc;
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", d->name}), "seeding %s (%s) to %s from %s", d->name,
                d->id, rp_conn_peer(c), sh->edb);
    int fd = open(sh->edb, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) rc = om_errf(OM_E_FileNotFound, "%s: %s", sh->edb, strerror(errno));
    struct stat st;
    if (!rc && fstat(fd, &st)) rc = om_errf(OM_E_DiskIO, "%s: %s", sh->edb, strerror(errno));
    if (!rc)
        rc = rp_reply(c,
                      json_pack("{s:b,s:s,s:I,s:I,s:I}", "ok", 1, "op", "seed.begin", "size",
                                (json_int_t)st.st_size, "lo", (json_int_t)sh->lo, "hi",
                                (json_int_t)sh->hi),
                      NULL, 0);
    unsigned char *buf = rc ? NULL : malloc(RP_SEED_CHUNK);
    if (!rc && !buf) rc = om_errf(OM_E_OutOfMemory, "seed buffer");
    uint64_t off = 0;
    while (!rc && off < (uint64_t)st.st_size) {
        size_t want = (uint64_t)st.st_size - off < RP_SEED_CHUNK ? (size_t)(st.st_size - (off_t)off)
                                                                 : RP_SEED_CHUNK;
        ssize_t k = pread(fd, buf, want, (off_t)off);
        if (k <= 0) {
            rc = om_errf(OM_E_DiskIO, "reading %s: %s", sh->edb, k ? strerror(errno) : "short");
            break;
        }
        rc = rp_reply(
            c, json_pack("{s:b,s:s,s:I}", "ok", 1, "op", "seed.data", "offset", (json_int_t)off),
            buf, (size_t)k);
        off += (uint64_t)k;
        if (s->test_seed_pause_ms) usleep(s->test_seed_pause_ms * 1000u); /* tests */
    }
    /* A dismount during the read (a failover) released the hold: newer pages under the header
     * read first. Never sent as a seed: the copier seeds again. */
    if (!rc) rc = bk_shadow_db_check(sh);
    if (!rc)
        rc = rp_reply(
            c, json_pack("{s:b,s:s,s:I}", "ok", 1, "op", "seed.end", "size", (json_int_t)off), NULL,
            0);
    free(buf);
    if (fd >= 0) close(fd);
    bk_shadow_db_release(sh);
    return rc;
}

/* The backups of peers' copies this active prepared and has not seen end (wire.h "backup"). A
 * record is taken only as the end of a prepare of the same server, database and type, marked
 * with the time the active gave that prepare, up to at least the generation it closed; a
 * truncate only after such a record of a full or incremental, below its last generation, once.
 * So a member of the DAG records only the backups it prepared (never one out of thin air, nor
 * one marked in the future) and truncates only after one. In memory, for every source of the
 * process: the active's ombra-repld restarting, or a failover, between the events fails that
 * backup loudly, and nothing is recorded or truncated. */
#define MAX_PREPARED 128

typedef struct prepared {
    char peer[80], id[40], type[16];
    uint64_t time_ns, made; /* made: when (0: a free entry); the oldest goes when all are used */
    uint32_t closed, last;  /* last: recorded up to it (0: not recorded yet) */
} prepared;

static prepared g_prepared[MAX_PREPARED];
static pthread_mutex_t g_prepared_mu = PTHREAD_MUTEX_INITIALIZER;

static void prepared_put(const prepared *p)
{
    pthread_mutex_lock(&g_prepared_mu);
    prepared *slot = &g_prepared[0];
    for (int i = 0; i < MAX_PREPARED; i++)
        if (g_prepared[i].made < slot->made) slot = &g_prepared[i];
    *slot = *p;
    slot->made = om_mono_ns();
    pthread_mutex_unlock(&g_prepared_mu);
}

/* Takes (removes) the entry of peer and id that fits the request: a prepare of its type and mark
 * time, closed at or before last_gen ("record"); or a record reaching below ("truncate"). */
static int prepared_take(const char *peer, const char *id, const char *name, const char *action,
                         json_t *req, prepared *out)
{
    const char *type = om_json_str_or(req, "type", "");
    uint64_t t = (uint64_t)om_json_int_or(req, "mark_time_ns", 0);
    uint32_t last = (uint32_t)om_json_int_or(req, "last_gen", 0),
             below = (uint32_t)om_json_int_or(req, "below", 0);
    int rec = !strcmp(action, "record"), found = 0;
    pthread_mutex_lock(&g_prepared_mu);
    for (int i = 0; i < MAX_PREPARED && !found; i++) {
        prepared *p = &g_prepared[i];
        if (!p->made || strcmp(p->peer, peer) || strcmp(p->id, id)) continue;
        if (rec ? (!p->last && !strcmp(p->type, type) && p->time_ns == t && last >= p->closed)
                : (p->last && below <= p->last)) {
            *out = *p;
            memset(p, 0, sizeof *p);
            found = 1;
        }
    }
    pthread_mutex_unlock(&g_prepared_mu);
    if (found) return 0;
    if (rec)
        return om_errf(OM_E_InvalidParameter,
                       "server %s prepared no %s backup of '%s' here marked %llu and holding "
                       "generation %u: a backup is recorded only as the end of its prepare. HINT: "
                       "run the backup again (the active's ombra-repld restarted, or the database "
                       "moved, since its prepare)",
                       peer, type, name, (unsigned long long)t, last);
    return om_errf(OM_E_InvalidParameter,
                   "server %s recorded no full or incremental backup of '%s' here reaching "
                   "generation %u: logs are truncated only after one, once",
                   peer, name, below ? below - 1 : 0);
}

/* A backup of the peer's passive copy (wire.h "backup"): recorded by this server's store, the
 * active's, only for a server the directory lists as holding a copy of the database, and only
 * in the order prepare, record, truncate of one backup (prepared_take). */
static int op_backup(rp_source *s, store_client *sc, rp_conn *c, const srcdb *d, json_t *req)
{
    const char *action = om_json_str_or(req, "action", ""), *peer = rp_conn_peer(c);
    const char *op = !strcmp(action, "prepare")    ? "db.backup_prepare"
                     : !strcmp(action, "record")   ? "db.record_backup"
                     : !strcmp(action, "truncate") ? "db.truncate_logs"
                                                   : NULL;
    if (!op) return om_errf(OM_E_InvalidParameter, "unknown backup action '%s'", action);
    json_t *rec = NULL, *rep = NULL;
    char suffix[128];
    snprintf(suffix, sizeof suffix, "databases/%s", d->id);
    int rc = rp_dag_get(s->dag, suffix, &rec, NULL);
    if (!rc && !json_object_get(json_object_get(rec, "copies"), peer))
        rc = om_errf(OM_E_DatabaseNotFound,
                     "server %s holds no copy of database %s: its backups are not recorded here",
                     peer, d->name);
    json_decref(rec);
    prepared p = {0};
    if (!rc && strcmp(action, "prepare")) rc = prepared_take(peer, d->id, d->name, action, req, &p);
    if (rc) return rc;
    json_t *args = json_copy(req);
    if (!args) return om_errf(OM_E_OutOfMemory, "request");
    json_object_set_new(args, "id", json_string(d->id));
    json_object_set_new(args, "server", json_string(peer)); /* who, by its certificate */
    rc = store_client_db_backup_op(sc, op, d->name, args, &rep);
    json_decref(args);
    if (rc) return rc;
    if (!strcmp(action, "prepare")) {
        snprintf(p.peer, sizeof p.peer, "%s", peer);
        snprintf(p.id, sizeof p.id, "%s", d->id);
        snprintf(p.type, sizeof p.type, "%s", om_json_str_or(req, "type", ""));
        p.time_ns = (uint64_t)om_json_int_or(rep, "time_ns", 0);
        p.closed = (uint32_t)om_json_int_or(rep, "closed", 0);
        prepared_put(&p);
    } else if (!strcmp(action, "record") &&
               (!strcmp(p.type, "full") || !strcmp(p.type, "incremental"))) {
        p.last = (uint32_t)om_json_int_or(req, "last_gen", 0);
        prepared_put(&p); /* now its truncate may come */
    }
    json_object_set_new(rep, "ok", json_true());
    return rp_reply(c, rep, NULL, 0);
}

void rp_source_serve(rp_source *s, rp_conn *c)
{
    store_client *sc = NULL;
    if (store_client_new(s->store_socket, &sc)) {
        rp_send_error(c, OM_E_OutOfMemory);
        return;
    }
    store_client_retry_busy(sc, 1);
    sync_seen seen = {0};
    for (;;) {
        json_t *req = NULL;
        void *bulk = NULL;
        size_t n = 0;
        int rc = rp_recv(c, &req, &bulk, &n, 120000);
        free(bulk);
        if (rc) { /* the peer went away or is silent: its copier connects again */
            if (rc != OM_E_ConnectionClosed)
                om_info("peer %s (%s): %s", rp_conn_peer(c), rp_conn_addr(c), om_err_detail());
            break;
        }
        const char *op = om_json_str_or(req, "op", "");
        srcdb d;
        if (!strcmp(op, "hello")) {
            rc = rp_reply(c, json_pack("{s:b,s:s}", "ok", 1, "server", s->server), NULL, 0);
        } else if (!strcmp(op, "log.wait") || !strcmp(op, "log.get") || !strcmp(op, "seed") ||
                   !strcmp(op, "log.stream") || !strcmp(op, "backup")) {
            rc = find_db(s, sc, req, &d);
            if (!rc && !strcmp(op, "backup")) rc = op_backup(s, sc, c, &d, req);
            if (!rc && !strcmp(op, "log.stream")) rc = op_stream(s, sc, c, &d, req, &seen);
            if (!rc && !strcmp(op, "log.wait")) rc = op_wait(s, c, &d, req);
            if (!rc && !strcmp(op, "log.get")) rc = op_get(s, c, &d, req);
            if (!rc && !strcmp(op, "seed")) rc = op_seed(s, c, &d);
            if (rc) rc = rp_send_error(c, rc);
        } else if (!strcmp(op, "seed.copy")) { /* a seed from this server's passive copy */
            rc = rp_reseed_serve(s, c, req);
        } else if (!strcmp(op, "backup.run")) { /* a backup of a copy here (remote_backup.h) */
            rc = rp_remote_backup_serve(s->dag, s->server, c, req);
        } else if (s->peer_op && s->peer_op(s->peer_ctx, c, req, &rc)) {
        } else {
            om_errf(OM_E_InvalidParameter, "unknown request '%s'", op);
            rc = rp_send_error(c, OM_E_InvalidParameter);
        }
        json_decref(req);
        if (rc) {
            om_info("peer %s (%s): %s", rp_conn_peer(c), rp_conn_addr(c), om_err_detail());
            break;
        }
    }
    store_client_free(sc);
}
