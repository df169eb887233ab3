/* The store service (service.h): listener, access control, request handlers over the registry
 * (registry.h). */
#include "store/service.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/server.h"
#include "base/time.h"
#include "engine/format.h"
#include "store/backup_record.h"
#include "store/directory.h"
#include "store/mail.h"
#include "store/syncwait.h"
#include "store/registry.h"
#include "store/store_writer.h"

/* The service around a registry: the listener, the connections, the writer. */
typedef struct store {
    const store_opts *o;
    store_registry *reg;
    pthread_mutex_t mu; /* stopping, active */
    pthread_cond_t cond;
    gid_t group;
    int listen_fd;
    int stopping, active; /* connections being served */
    store_writer *writer; /* NULL when it did not start; read under reg->mu */
    const char *server;   /* this server's name (o->server, or the directory file's) */
    pthread_t connector;  /* reaches the etcd directory (when it is there) */
    int has_connector;
    store_syncwait *sync; /* --sync-copies: made at first use, under mu */
    /* mail.deliver since the daemon started (status reports them; ombra metrics shows them):
     * acknowledged, refused or failed, and the bytes acknowledged. */
    _Atomic uint64_t delivered, deliver_failed, delivered_bytes;
} store;

/* ---- replies ---- */

static json_t *db_json_of(const store_registry *r, const store_dbent *e, store_mounted *m,
                          int details);

/* A database as the replies show it (mu held on entry and on return). The engine is asked
 * without mu, with a reference held: eng_db_info waits while a backup holds the database
 * frozen, and the freeze's own thread needs mu to let its reference go, so waiting under mu
 * would wedge the whole store. */
static json_t *db_json(store *s, const store_dbent *e0, int details)
{
    store_dbent e = *e0;
    store_mounted *m = store_find_mounted(s->reg, e.name);
    if (m) m->refs++;
    pthread_mutex_unlock(&s->reg->mu);
    json_t *o = db_json_of(s->reg, &e, m, details);
    pthread_mutex_lock(&s->reg->mu);
    if (m) {
        m->refs--;
        pthread_cond_broadcast(&s->reg->cond);
    }
    return o;
}

static json_t *db_json_of(const store_registry *r, const store_dbent *e, store_mounted *m,
                          int details)
{
    char id[37];
    om_uuid_str(&e->id, id);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:b}", "name", e->name,
                          "id", id, "server", e->server, "edb", e->edb, "logs", e->logs, "base",
                          e->base, "circular_logging", e->circular, "allow_restore",
                          e->allow_restore, "recovery", e->recovery, "mounted", m != NULL);
    eng_info in;
    eng_opts eo = store_ent_opts(r, e);
    int rc = m ? eng_db_info(m->db, &in) : eng_db_inspect(&eo, &in);
    if (rc) {
        json_object_set_new(o, "state", json_string("unreadable"));
        json_object_set_new(o, "problem", json_string(om_err_detail()));
        return o;
    }
    json_object_set_new(o, "state", json_string(eng_state_name(in.state)));
    if (m) json_object_set_new(o, "mount_id", json_string(m->mount_id));
    if (!details) return o;
    struct stat st;
    json_object_set_new(o, "size_bytes",
                        json_integer(stat(e->edb, &st) == 0 ? (json_int_t)st.st_size : 0));
    json_object_set_new(o, "pages", json_integer(in.pages));
    json_object_set_new(o, "gen_current", json_integer(in.gen_current));
    json_object_set_new(o, "gen_oldest", json_integer(in.gen_oldest));
    json_object_set_new(
        o, "log_generations",
        json_integer(in.gen_current ? (json_int_t)(in.gen_current - in.gen_oldest + 1) : 0));
    json_object_set_new(o, "checkpoint_gen", json_integer(in.checkpoint.gen));
    /* Passive copies keep generations from it on (0: none; truncation across copies). */
    json_object_set_new(o, "truncation_floor", json_integer(in.truncate_floor));
    json_t *bk = json_object();
    for (int i = ENG_BK_PREV_FULL; i <= ENG_BK_PREV_DIFFERENTIAL; i++) {
        const eng_bkslot *b = &in.slots[i];
        char t[40];
        json_object_set_new(bk, eng_bkslot_name(i),
                            b->mark_time == 0 ? json_null()
                                              : json_pack("{s:i, s:i, s:[i,i], s:s}", "first_gen",
                                                          b->first_gen, "last_gen", b->last_gen,
                                                          "mark", b->mark.gen, b->mark.off, "time",
                                                          om_time_iso(b->mark_time, t, sizeof t)));
    }
    json_object_set_new(o, "backups", bk);
    return o;
}

/* ---- requests ---- */

/* Which lock a handler needs (the op table's lock column). */
enum op_lock {
    OP_REGISTRY, /* registry.mu held: the registry and the directory stay as they are */
    OP_DB_REF,   /* a reference on a mounted database, without mu: it stays mounted, and
                    requests on other databases (and db.*) go on meanwhile */
};

/* One request in the hands of its handler; the op table says what is resolved before. */
typedef struct op_req {
    store *s;
    int fd;              /* the connection: mail.load streams its progress on it */
    json_t *req, *rep;   /* the request; the reply being built */
    const uint8_t *data; /* the request's data frame */
    size_t dlen;
    uint8_t *rdata; /* the reply's data frame (malloc'd, sent after rep; freed on error) */
    size_t rdlen;
    store_dbent *ent; /* needs_db with OP_REGISTRY: the directory's entry named by "name" */
    store_mounted *m; /* needs_db with OP_DB_REF: a reference on the database named by "db" */
} op_req;

/* ---- database handlers (run under mu) ---- */

static int valid_name(const char *n)
{
    size_t l = strlen(n);
    if (l == 0 || l > STORE_MAX_NAME) return 0;
    for (size_t i = 0; i < l; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return n[0] != '.';
}

/* An absolute form of p (relative paths are the client's business: the CLI sends absolute
 * ones; the daemon refuses others rather than guess its own working directory). */
static int check_path(const char *p, const char *what)
{
    if (p[0] != '/') return om_errf(OM_E_InvalidPath, "%s '%s' must be an absolute path", what, p);
    if (strlen(p) >= 4000) return om_errf(OM_E_InvalidPath, "%s is too long", what);
    return 0;
}

static int next_base(store *s, char out[4])
{
    for (int i = 0; i < 256; i++) {
        snprintf(out, 4, "E%02X", i);
        int used = 0;
        for (size_t k = 0; k < s->reg->dir->n && !used; k++)
            used = !strcmp(s->reg->dir->ents[k].base, out);
        if (!used) return 0;
    }
    return om_errf(OM_E_TooManyOpenDatabases,
                   "every log base name E00..EFF is taken on this server");
}

static int db_new(op_req *r, int recovery)
{
    store *s = r->s;
    json_t *req = r->req;
    const char *name;
    int rc = om_json_str(req, "name", &name);
    if (rc) return rc;
    if (!valid_name(name))
        return om_errf(OM_E_InvalidName,
                       "'%s' is not a valid database name (1-%d letters, digits, '-', '_', '.')",
                       name, STORE_MAX_NAME);
    if (store_dir_find(s->reg->dir, name))
        return om_errf(OM_E_DatabaseDuplicate, "a database named '%s' already exists", name);
    store_dbent e = {0};
    snprintf(e.name, sizeof e.name, "%s", name);
    snprintf(e.server, sizeof e.server, "%s", s->server);
    const char *edb = om_json_str_or(req, "edb", NULL), *logs = om_json_str_or(req, "logs", NULL);
    if (recovery && (!edb || !logs))
        return om_errf(OM_E_InvalidParameter, "a recovery database needs --edb and --logs");
    if (edb) {
        if ((rc = check_path(edb, "--edb")) || (rc = store_check_edb_name(edb, "--edb"))) return rc;
        snprintf(e.edb, sizeof e.edb, "%s", edb);
    } else
        snprintf(e.edb, sizeof e.edb, "%s/dbs/%s/%s.edb", s->o->data_dir, name, name);
    if (logs) {
        if ((rc = check_path(logs, "--logs"))) return rc;
        snprintf(e.logs, sizeof e.logs, "%s", logs);
    } else {
        char d[4096];
        om_dirname(e.edb, d, sizeof d);
        snprintf(e.logs, sizeof e.logs, "%.4000s/logs", d);
    }
    const char *base = om_json_str_or(req, "base", NULL);
    if (base) {
        if (!eng_base_valid(base))
            return om_errf(OM_E_InvalidParameter,
                           "log base name '%s' must be three letters or digits", base);
        memcpy(e.base, base, 4);
    } else if ((rc = next_base(s, e.base)))
        return rc;
    e.circular = json_is_true(json_object_get(req, "circular_logging"));
    e.recovery = recovery;
    if (recovery && e.circular)
        return om_errf(OM_E_InvalidParameter, "a recovery database cannot use circular logging");
    char why[120];
    const store_dbent *o =
        store_dir_place_taken(s->reg->dir, e.edb, e.logs, e.base, NULL, why, sizeof why);
    if (o)
        return om_errf(OM_E_DatabaseDuplicate,
                       "--edb %s --logs %s would share a place with database '%s': %s. HINT: "
                       "give the new database a folder of its own",
                       e.edb, e.logs, o->name, why);
    char d[4096];
    om_dirname(e.edb, d, sizeof d);
    if ((rc = om_mkdirs(d)) || (rc = om_mkdirs(e.logs))) return rc;
    /* A recovery database is mounted only for the moment its files are made: that moment does
     * not count against the one mounted recovery database a server allows. */
    store_dbent made = e;
    made.recovery = 0;
    if ((rc = store_mount_locked(s->reg, &made, 1))) return rc;
    store_mounted *m = store_find_mounted(s->reg, e.name);
    eng_info in;
    eng_db_info(m->db, &in);
    e.id = in.db_id;
    e.mounted = 1;
    /* The recovery database waits for a restore (Exchange's RDB): dismounted, overwritable.
     * Dismounted even when the dismount fails (m is gone then). */
    if (recovery) {
        rc = store_dismount_locked(s->reg, m);
        e.mounted = 0;
        e.allow_restore = 1;
    }
    if (rc || (rc = store_dir_put(s->reg->dir, &e))) {
        if (e.mounted) store_dismount_locked(s->reg, m);
        return rc;
    }
    if (e.mounted) store_follow_entry_locked(s->reg, m); /* the epoch the put gave it */
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", e.name}),
                "created database %s at %s (logs %s, base %s)%s", e.name, e.edb, e.logs, e.base,
                recovery ? " as the recovery database" : "");
    json_object_set_new(r->rep, "db", db_json(s, &e, 0));
    return 0;
}

static int h_db_new(op_req *r)
{
    return db_new(r, 0);
}

static int h_db_new_recovery(op_req *r)
{
    return db_new(r, 1);
}

/* What a backup session is copying must not change under it (spec §5): `what` is refused
 * while the database is in one. */
static int refuse_in_backup(store *s, const store_dbent *e, const char *what)
{
    char sid[40];
    if (!s->writer || !store_writer_backing_up(s->writer, &e->id, sid)) return 0;
    return om_errf(OM_E_BackupInProgress,
                   "%s database '%s' is refused: it is in backup session %s (from PrepareBackup "
                   "to BackupComplete). HINT: try again when that backup has ended (or stop the "
                   "backup)",
                   what, e->name, sid);
}

static int db_mount(op_req *r, int mount)
{
    store *s = r->s;
    store_dbent *e = r->ent;
    int rc;
    if (!mount && (rc = refuse_in_backup(s, e, "dismounting"))) return rc;
    store_mounted *m = store_find_mounted(s->reg, e->name);
    if (mount && s->writer && store_writer_restoring(s->writer, e->name))
        return om_errf(OM_E_RestoreInProgress,
                       "database '%s' is being restored. HINT: mount it when the restore ends",
                       e->name);
    char pending[4200];
    struct stat pst;
    snprintf(pending, sizeof pending, "%.4000s/_restoredLogs", e->logs);
    if (mount && stat(pending, &pst) == 0)
        return om_errf(OM_E_RestoreInProgress,
                       "database '%s' has a restore laid down in %s that was not replayed (one "
                       "with --no-replay, or one that failed). HINT: ombra restore again (or the "
                       "next backup), or replay it with ombra dbutil recover %s",
                       e->name, pending, e->logs);
    if (mount && !e->active)
        return om_errf(OM_E_DatabaseUnavailable,
                       "database '%s' is not active on this server: DAG %s names %s active. HINT: "
                       "mount it there (a passive copy is replayed by ombra-repld, never mounted)",
                       e->name, s->reg->conf.dag, e->active_on[0] ? e->active_on : "no server");
    if (mount && (rc = store_mount_locked(s->reg, e, 0))) return rc;
    /* Past this point the database is mounted, or dismounted: a dismount cannot be undone (the
     * engine is closed whatever eng_db_close says), so what failed on the way is a warning
     * beside a success, never an error after the deed. A clean shutdown that failed (a full
     * disk) leaves a database whose commits are in its logs: the next mount recovers it. A
     * directory that could not record the change only mounts it differently at the next start. */
    char warn[1600] = "";
    if (!mount && m && (rc = store_dismount_locked(s->reg, m)))
        snprintf(warn, sizeof warn,
                 "'%s' is dismounted, but its clean shutdown failed (%s: %d %s): it recovers "
                 "from its logs at the next mount",
                 e->name, om_err_detail(), rc, om_err_name(rc));
    store_dbent ne = *e;
    ne.mounted = mount;
    if ((rc = store_dir_put(s->reg->dir, &ne)))
        snprintf(warn + strlen(warn), sizeof warn - strlen(warn),
                 "%s'%s' is %s, but the directory could not record it (%s: %d %s): the store %s "
                 "it at its next start",
                 warn[0] ? "; " : "", e->name, mount ? "mounted" : "dismounted", om_err_detail(),
                 rc, om_err_name(rc), mount ? "does not mount" : "mounts");
    if (warn[0]) {
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", e->name}), "%s", warn);
        json_object_set_new(r->rep, "warning", json_string(warn));
    }
    e = store_dir_find(s->reg->dir, ne.name);
    json_object_set_new(r->rep, "db", db_json(s, e, 0));
    return 0;
}

static int h_db_mount(op_req *r)
{
    return db_mount(r, 1);
}

static int h_db_dismount(op_req *r)
{
    return db_mount(r, 0);
}

static int h_db_set(op_req *r)
{
    store *s = r->s;
    store_dbent *e = r->ent;
    int rc;
    store_dbent ne = *e;
    json_t *c = json_object_get(r->req, "circular_logging"),
           *a = json_object_get(r->req, "allow_restore");
    if (c && (rc = refuse_in_backup(s, e, "setting --circular-logging of"))) return rc;
    if (a && (rc = refuse_in_backup(s, e, "setting --allow-restore of"))) return rc;
    if (c) {
        if (!json_is_boolean(c))
            return om_errf(OM_E_InvalidParameter, "circular_logging must be on or off");
        if (e->recovery && json_is_true(c))
            return om_errf(OM_E_InvalidParameter,
                           "a recovery database cannot use circular logging");
        ne.circular = json_is_true(c);
    }
    if (a) {
        if (!json_is_boolean(a))
            return om_errf(OM_E_InvalidParameter, "allow_restore must be on or off");
        ne.allow_restore = json_is_true(a);
    }
    if ((rc = store_dir_put(s->reg->dir, &ne))) return rc;
    json_t *d = db_json(s, &ne, 0);
    if (c && store_find_mounted(s->reg, ne.name))
        json_object_set_new(d, "note", json_string("circular logging changes at the next mount"));
    json_object_set_new(r->rep, "db", d);
    return 0;
}

static int h_db_list(op_req *r)
{
    store *s = r->s;
    json_t *arr = json_array();
    /* db_json lets mu go: the directory may change meanwhile, so index by a copy of the names */
    size_t n = s->reg->dir->n;
    char(*names)[STORE_MAX_NAME + 1] = calloc(n ? n : 1, sizeof *names);
    if (!names) return om_errf(OM_E_OutOfMemory, "out of memory");
    for (size_t i = 0; i < n; i++)
        snprintf(names[i], sizeof names[i], "%s", s->reg->dir->ents[i].name);
    for (size_t i = 0; i < n; i++) {
        store_dbent *e = store_dir_find(s->reg->dir, names[i]);
        if (e) json_array_append_new(arr, db_json(s, e, 0));
    }
    free(names);
    json_object_set_new(r->rep, "databases", arr);
    return 0;
}

static int h_db_show(op_req *r)
{
    json_object_set_new(r->rep, "db", db_json(r->s, r->ent, 1));
    return 0;
}

static int h_status(op_req *r)
{
    store *s = r->s;
    json_object_set_new(r->rep, "server", json_string(s->server));
    json_object_set_new(r->rep, "pid", json_integer(getpid()));
    json_object_set_new(r->rep, "mounted", json_integer(s->reg->nm));
    json_object_set_new(r->rep, "databases", json_integer((json_int_t)s->reg->dir->n));
    json_object_set_new(r->rep, "deliveries",
                        json_pack("{s:I, s:I, s:I}", "ok", (json_int_t)s->delivered, "failed",
                                  (json_int_t)s->deliver_failed, "bytes",
                                  (json_int_t)s->delivered_bytes));
    const store_registry *g = s->reg;
    json_object_set_new(r->rep, "directory",
                        g->conf.etcd ? json_pack("{s:s, s:s, s:s, s:b, s:s}", "backend", "etcd",
                                                 "etcd", g->conf.url, "dag", g->conf.dag, "ready",
                                                 g->dir_ready, "error", g->dir_error)
                                     : json_pack("{s:s, s:s, s:b}", "backend", "file", "path",
                                                 g->dir_path, "ready", g->dir_ready));
    json_object_set_new(r->rep, "restores",
                        s->writer ? store_writer_restores(s->writer) : json_array());
    return 0;
}

/* dag.join {"etcd", "dag", "check_only"} (ombra dag add-server on this server): the file
 * directory's databases go into the DAG's etcd directory once, and the store goes on with it.
 * -> {"databases": [{"id", "name"}]}. */
static int h_dag_join(op_req *r)
{
    const char *url, *dag;
    int rc = om_json_str(r->req, "etcd", &url);
    if (!rc) rc = om_json_str(r->req, "dag", &dag);
    if (rc) return rc;
    int check = json_is_true(json_object_get(r->req, "check_only")), already = 0;
    rc = store_registry_join_locked(r->s->reg, url, dag, check, &already);
    if (rc && already) {
        json_object_set_new(r->rep, "already", json_true());
        rc = 0;
    }
    if (rc) return rc;
    json_t *dbs = json_array();
    for (size_t i = 0; !check && i < r->s->reg->dir->n; i++) {
        char id[37];
        om_uuid_str(&r->s->reg->dir->ents[i].id, id);
        json_array_append_new(
            dbs, json_pack("{s:s,s:s}", "id", id, "name", r->s->reg->dir->ents[i].name));
    }
    json_object_set_new(r->rep, "databases", dbs);
    return 0;
}

/* ---- mail handlers (run with a reference, without mu) ---- */

/* --sync-copies: how long a commit waits for its copies before its retryable error. */
#define SYNC_WAIT_MS 5000

static store_syncwait *sync_of(store *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->sync && store_syncwait_new(&s->sync)) s->sync = NULL;
    store_syncwait *w = s->sync;
    pthread_mutex_unlock(&s->mu);
    return w;
}

/* After a durable commit on r's database: when the DAG's record of it asks for synchronous
 * copies, returns once that many hold the log up to the commit (store/syncwait.h), or the
 * retryable error. */
static int sync_after_commit(op_req *r)
{
    store *s = r->s;
    pthread_mutex_lock(&s->reg->mu);
    /* The setting is changed in the DAG's record by `db set` on any server; the directory's
     * watch applies it (on its own thread, with what else changed: an active copy that moved
     * is followed there, never here, where this request holds its database). */
    json_t *rec = store_dir_record(s->reg->dir, r->m->name);
    pthread_mutex_unlock(&s->reg->mu);
    json_int_t n = json_integer_value(json_object_get(rec, "sync_copies"));
    char id[40];
    snprintf(id, sizeof id, "%s", om_json_str_or(rec, "id", ""));
    store_syncwait *w = sync_of(s);
    int rc = w ? 0 : om_errf(OM_E_OutOfMemory, "sync wait");
    if (!rc &&
        !rec) { /* a directory without the DAG's records: what the replication service said */
        eng_info in;
        rc = eng_db_info(r->m->db, &in);
        if (!rc) om_uuid_str(&in.db_id, id);
        if (!rc) n = store_syncwait_wanted(w, id);
    }
    if (rc || n <= 0) {
        json_decref(rec);
        return rc;
    }
    /* Only the record's passive copies count: a position reported under any other name (made
     * up on this socket, a copy removed since, this server itself) acknowledges nothing. */
    const char *names[64];
    store_sync_copies only = {.servers = names}, *onlyp = rec ? &only : NULL;
    const char *server;
    json_t *cfg;
    json_object_foreach(json_object_get(rec, "copies"), server, cfg)
    {
        if (strcmp(server, s->server) && only.n < sizeof names / sizeof names[0])
            names[only.n++] = server;
    }
    eng_lgpos pos = eng_log_durable_end(r->m->db);
    const char *env = getenv("OMBRA_SYNC_WAIT_MS"); /* tests and benchmarks */
    uint32_t ms = env && atoi(env) > 0 ? (uint32_t)atoi(env) : SYNC_WAIT_MS;
    rc = store_syncwait_wait(w, id, r->m->name, onlyp, (uint32_t)n, pos, ms);
    json_decref(rec);
    return rc;
}

/* The "mailbox" field the mail.* requests on one mailbox carry. */
static int mailbox_of(op_req *r, const char **mailbox)
{
    return om_json_str(r->req, "mailbox", mailbox);
}

/* Before a commit of r's database: the fence lets it in (store/fence.h), or says why not. */
static int commit_enter(op_req *r, store_fence_ticket *t)
{
    pthread_mutex_lock(&r->s->reg->mu);
    json_t *rec = store_dir_record(r->s->reg->dir, r->m->name);
    pthread_mutex_unlock(&r->s->reg->mu);
    int replicated = json_object_size(json_object_get(rec, "copies")) > 1;
    json_decref(rec);
    return store_fence_enter(r->s->reg->fence, r->m->name, replicated, t);
}

/* After it (rc: how it went, its synchronous copies included): acknowledged only when the fence
 * says so; the reply then says which server acknowledged it, at which epoch and when (the
 * nemesis test checks with them that no two servers acknowledged at once). */
static int commit_ack(op_req *r, int rc, store_fence_ticket *t)
{
    if (rc) {
        store_fence_leave(r->s->reg->fence, t);
        return rc;
    }
    uint64_t acked = 0;
    int64_t epoch = 0;
    if ((rc = store_fence_ack(r->s->reg->fence, t, &acked, &epoch))) return rc;
    json_object_set_new(r->rep, "server", json_string(r->s->server));
    json_object_set_new(r->rep, "epoch", json_integer((json_int_t)epoch));
    json_object_set_new(r->rep, "acked_ns", json_integer((json_int_t)acked));
    return 0;
}

static int h_mail_deliver(op_req *r)
{
    mail_new n = {0};
    store_fence_ticket t;
    int rc = mailbox_of(r, &n.mailbox);
    if (rc) return rc;
    n.folder = om_json_str_or(r->req, "folder", NULL);
    n.subject = om_json_str_or(r->req, "subject", NULL);
    n.body = r->data;
    n.size = r->dlen;
    uint64_t id = 0;
    if (!(rc = commit_enter(r, &t))) {
        rc = store_mail_deliver(r->m->mail, &n, 0, &id);
        if (!rc) rc = sync_after_commit(r);
        rc = commit_ack(r, rc, &t);
    }
    if (rc) {
        r->s->deliver_failed++;
        return rc;
    }
    r->s->delivered++;
    r->s->delivered_bytes += n.size;
    json_object_set_new(r->rep, "id", json_integer((json_int_t)id));
    return 0;
}

static int h_mail_list(op_req *r)
{
    const char *mailbox;
    char tb[40];
    mail_listing l;
    int rc = mailbox_of(r, &mailbox);
    if (!rc)
        rc = store_mail_list(r->m->mail, mailbox, om_json_str_or(r->req, "folder", NULL), 0, 0, &l);
    if (rc) return rc;
    json_t *arr = json_array();
    for (size_t i = 0; i < l.n; i++)
        json_array_append_new(
            arr, json_pack("{s:I, s:s, s:s, s:I, s:s}", "id", (json_int_t)l.msgs[i].id, "folder",
                           l.msgs[i].folder, "time", om_time_iso(l.msgs[i].received, tb, sizeof tb),
                           "size", (json_int_t)l.msgs[i].size, "subject", l.msgs[i].subject));
    json_object_set_new(r->rep, "messages", arr);
    store_mail_listing_free(&l);
    return 0;
}

/* The mailbox and the message id of mail.get and mail.delete. */
static int message_of(op_req *r, const char **mailbox, uint64_t *id)
{
    int64_t v = 0;
    int rc = mailbox_of(r, mailbox);
    if (!rc && !(rc = om_json_int(r->req, "id", &v)) && v <= 0)
        rc = om_errf(OM_E_InvalidParameter, "message id %lld is not valid", (long long)v);
    *id = (uint64_t)v;
    return rc;
}

static int h_mail_get(op_req *r)
{
    const char *mailbox;
    uint64_t id;
    mail_message msg;
    char tb[40];
    int rc = message_of(r, &mailbox, &id);
    if (!rc) rc = store_mail_get(r->m->mail, mailbox, id, &msg);
    if (rc) return rc;
    json_object_set_new(r->rep, "id", json_integer((json_int_t)id));
    json_object_set_new(r->rep, "folder", json_string(msg.h.folder));
    json_object_set_new(r->rep, "time", json_string(om_time_iso(msg.h.received, tb, sizeof tb)));
    json_object_set_new(r->rep, "size", json_integer((json_int_t)msg.h.size));
    json_object_set_new(r->rep, "subject", json_string(msg.h.subject));
    r->rdata = msg.body;
    r->rdlen = msg.h.size;
    msg.body = NULL;
    store_mail_message_free(&msg);
    return 0;
}

static int h_mail_delete(op_req *r)
{
    const char *mailbox;
    uint64_t id;
    store_fence_ticket t;
    int rc = message_of(r, &mailbox, &id);
    if (!rc) rc = commit_enter(r, &t);
    if (rc) return rc;
    rc = store_mail_delete(r->m->mail, mailbox, id, 0);
    if (!rc) rc = sync_after_commit(r);
    return commit_ack(r, rc, &t);
}

static int h_mail_digest(op_req *r)
{
    char d[33];
    int rc = store_mail_digest(r->m->mail, d);
    if (!rc) json_object_set_new(r->rep, "digest", json_string(d));
    return rc;
}

/* mail.load streams {"progress": done, "total": n} objects before its reply. */
static void send_progress(void *arg, uint64_t done, uint64_t total)
{
    int fd = *(int *)arg;
    json_t *p = json_pack("{s:I, s:I}", "progress", (json_int_t)done, "total", (json_int_t)total);
    om_proto_send(fd, p, NULL, 0); /* a client gone away only loses its progress */
    json_decref(p);
}

static int h_mail_load(op_req *r)
{
    int64_t boxes, msgs, size, seed = om_json_int_or(r->req, "seed", 1);
    int rc;
    if ((rc = om_json_int(r->req, "mailboxes", &boxes)) ||
        (rc = om_json_int(r->req, "messages", &msgs)) || (rc = om_json_int(r->req, "size", &size)))
        return rc;
    if (boxes <= 0 || boxes > 1000000 || msgs < 0 || size < 0 || size > (1 << 26))
        return om_errf(OM_E_InvalidParameter,
                       "load: mailboxes 1..1000000, messages >= 0, size 0..64 MiB");
    uint64_t t0 = om_mono_ns();
    int fd = r->fd;
    store_fence_ticket t;
    if ((rc = commit_enter(r, &t))) return rc;
    /* Lazy transactions and one flush at the end: durable when the reply says done. */
    rc = store_mail_load(r->m->mail, (uint32_t)boxes, (uint64_t)msgs, (uint64_t)size,
                         (uint64_t)seed, 1, send_progress, &fd);
    double secs = (double)(om_mono_ns() - t0) / 1e9;
    if ((rc = commit_ack(r, rc, &t))) return rc;
    json_object_set_new(r->rep, "messages", json_integer(msgs));
    json_object_set_new(r->rep, "seconds", json_real(secs));
    json_object_set_new(r->rep, "rate", json_real(secs > 0 ? (double)msgs / secs : 0));
    return 0;
}

/* ---- replication ---- */

/* The database's header now, checked to be database id (its passive copies' requests name it by
 * id: a name reused by another database is refused). */
static int info_of_id(op_req *r, const char *id, eng_info *in)
{
    char have[37];
    int rc = eng_db_info(r->m->db, in);
    if (rc) return rc;
    om_uuid_str(&in->db_id, have);
    if (strcmp(id, have))
        return om_errf(OM_E_DatabaseNotFound,
                       "database '%s' of this server has id %s, not %s: that copy is another "
                       "database's",
                       r->m->name, have, id);
    return 0;
}

/* Percentage of the log folder's filesystem in use (0 when it cannot be told). */
static int disk_used_pct(const char *dir)
{
    struct statvfs v;
    if (statvfs(dir, &v) || v.f_blocks == 0) return 0;
    uint64_t used = (uint64_t)(v.f_blocks - v.f_bfree);
    uint64_t usable =
        used + (uint64_t)v.f_bavail; /* what the store may fill, root's reserve aside */
    return usable ? (int)((used * 100 + usable - 1) / usable) : 0;
}

/* db.replication_floor (from ombra-repld on this server, for a database whose active copy this
 * is): the floor of log truncation that its passive copies need, for hold_s seconds (renewed
 * every few seconds; a replication service that stops renewing it holds logs back no longer
 * than that). "released" names the copies that held truncation back too long and stop holding
 * (spec §8, decided): each gets one warning line in the store's log. */
static int h_db_replication_floor(op_req *r)
{
    int64_t floor = -1, hold = 0;
    const char *id = om_json_str_or(r->req, "id", "");
    int rc = om_json_int(r->req, "floor", &floor);
    if (!rc) rc = om_json_int(r->req, "hold_s", &hold);
    if (!rc && (floor < 0 || floor > UINT32_MAX || hold < 1 || hold > 10 * 366 * 86400))
        rc = om_errf(OM_E_InvalidParameter,
                     "replication floor %lld held %lld s: a generation and 1 s to 10 years",
                     (long long)floor, (long long)hold);
    eng_info in;
    char logs[4096] = "";
    if (!rc) rc = info_of_id(r, id, &in);
    if (rc) return rc;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r->req, "released"), i, c)
    {
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", r->m->name}),
                    "database %s: the passive copy on %s held log truncation back at generation "
                    "%lld %s: it is marked Failed (it needs a reseed) and holds the logs no longer",
                    r->m->name, om_json_str_or(c, "server", "?"),
                    (long long)json_integer_value(json_object_get(c, "gen")),
                    om_json_str_or(c, "reason", ""));
    }
    uint32_t deleted = 0, was = in.truncate_floor;
    rc = eng_db_set_truncate_floor(r->m->db, (uint32_t)floor,
                                   om_mono_ns() + (uint64_t)hold * 1000000000ull, &deleted);
    if (!rc && deleted)
        om_log_with(
            OM_INFO, OM_FIELDS({"DATABASE", r->m->name}),
            "database %s: %u log generations deleted that passive copies held back (floor %u "
            "-> %lld)",
            r->m->name, deleted, was, (long long)floor);
    if (!rc) rc = eng_db_info(r->m->db, &in);
    if (rc) return rc;
    pthread_mutex_lock(&r->s->reg->mu);
    store_dbent *e = store_dir_find(r->s->reg->dir, r->m->name);
    if (e) snprintf(logs, sizeof logs, "%s", e->logs);
    pthread_mutex_unlock(&r->s->reg->mu);
    json_t *st =
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:i}", "floor", (json_int_t)in.truncate_floor,
                  "truncate_point", (json_int_t)in.truncate_point, "checkpoint",
                  (json_int_t)in.checkpoint.gen, "oldest", (json_int_t)in.gen_oldest, "current",
                  (json_int_t)in.gen_current, "log_disk_pct", logs[0] ? disk_used_pct(logs) : 0);
    json_object_set_new(r->rep, "state", st);
    return 0;
}

/* ---- backups of passive copies, recorded by the active (backup_record.h) ---- */

/* Circular logging of the mounted database, from the directory. */
static int circular_of(op_req *r)
{
    pthread_mutex_lock(&r->s->reg->mu);
    store_dbent *e = store_dir_find(r->s->reg->dir, r->m->name);
    int circ = e && e->circular;
    pthread_mutex_unlock(&r->s->reg->mu);
    return circ;
}

static json_t *slot_json(const eng_bkslot *s)
{
    if (!s->mark_time) return json_null();
    return json_pack("{s:I,s:I,s:I}", "first_gen", (json_int_t)s->first_gen, "last_gen",
                     (json_int_t)s->last_gen, "mark_time_ns", (json_int_t)s->mark_time);
}

/* db.backup_prepare {id, type} (a passive copy's PrepareBackup, through the active's
 * ombra-repld): whether a backup of that type may be taken now, the header's slots the copy's
 * log range is counted from, and the generation the active closes now (the copy's backup holds
 * at least everything up to it: the active's time of now is the backup's mark time). */
static int h_db_backup_prepare(op_req *r)
{
    const char *id = om_json_str_or(r->req, "id", ""), *type = om_json_str_or(r->req, "type", "");
    eng_info in;
    if (!store_backup_type_ok(type)) return store_backup_type_error(type);
    int rc = info_of_id(r, id, &in);
    if (!rc) rc = store_backup_allowed(r->m->name, circular_of(r), &in, type);
    uint64_t now = om_now_ns();
    if (!rc) rc = eng_db_roll_log(r->m->db);
    if (rc) return rc;
    json_object_set_new(r->rep, "closed", json_integer((json_int_t)in.gen_current));
    json_object_set_new(r->rep, "circular_logging", json_boolean(circular_of(r)));
    json_object_set_new(r->rep, "time_ns", json_integer((json_int_t)now));
    json_object_set_new(r->rep, "previous_full", slot_json(&in.slots[ENG_BK_PREV_FULL]));
    json_object_set_new(r->rep, "previous_incremental",
                        slot_json(&in.slots[ENG_BK_PREV_INCREMENTAL]));
    return 0;
}

static int gen_arg(op_req *r, const char *key, uint32_t *out)
{
    int64_t v = -1;
    int rc = om_json_int(r->req, key, &v);
    if (!rc && (v < 0 || v > UINT32_MAX))
        rc = om_errf(OM_E_InvalidParameter, "%s %lld is not a log generation", key, (long long)v);
    if (!rc) *out = (uint32_t)v;
    return rc;
}

/* db.record_backup {id, type, first_gen, last_gen, mark_gen, mark_off, mark_time_ns, server}
 * (a passive copy's BackupComplete): the backup recorded in the active's header as one log
 * record, which reaches every copy by replay; the log rolls at once, so the copies get it now
 * rather than when the generation fills. */
static int h_db_record_backup(op_req *r)
{
    const char *id = om_json_str_or(r->req, "id", ""), *type = om_json_str_or(r->req, "type", ""),
               *server = om_json_str_or(r->req, "server", "?");
    eng_info in;
    eng_bkslot s = {0};
    int64_t t = 0;
    if (!store_backup_type_ok(type)) return store_backup_type_error(type);
    int rc = info_of_id(r, id, &in);
    if (!rc) rc = gen_arg(r, "first_gen", &s.first_gen);
    if (!rc) rc = gen_arg(r, "last_gen", &s.last_gen);
    if (!rc) rc = gen_arg(r, "mark_gen", &s.mark.gen);
    if (!rc) rc = gen_arg(r, "mark_off", &s.mark.off);
    if (!rc) rc = om_json_int(r->req, "mark_time_ns", &t);
    if (rc) return rc;
    if (!s.first_gen || s.first_gen > s.last_gen || s.last_gen >= in.gen_current || t <= 0)
        return om_errf(OM_E_InvalidParameter,
                       "the backup of '%s' from the copy on %s holds generations %u-%u: the "
                       "active has closed generations up to %u only",
                       r->m->name, server, s.first_gen, s.last_gen,
                       in.gen_current ? in.gen_current - 1 : 0);
    if ((rc = store_backup_allowed(r->m->name, circular_of(r), &in, type))) return rc;
    s.mark_time = (uint64_t)t;
    s.kind = store_backup_kind(type);
    char by[120];
    snprintf(by, sizeof by, "the passive copy on %s", server);
    rc = store_backup_record(r->m->db, r->m->name, type, &s, by);
    if (!rc) rc = eng_db_roll_log(r->m->db);
    return rc;
}

/* db.truncate_logs {id, below} (a passive copy's backup stored, BackupShutdown): the logs below
 * `below` may go, as far as the rules of truncation across copies let them (the floor of the
 * copies, the checkpoint: eng_truncate_logs). Never past what the header records as backed up
 * by a full or incremental backup. */
static int h_db_truncate_logs(op_req *r)
{
    const char *id = om_json_str_or(r->req, "id", "");
    eng_info in;
    uint32_t below = 0, deleted = 0;
    int rc = info_of_id(r, id, &in);
    if (!rc) rc = gen_arg(r, "below", &below);
    if (rc) return rc;
    uint32_t backed = in.slots[ENG_BK_PREV_FULL].last_gen;
    if (in.slots[ENG_BK_PREV_INCREMENTAL].mark_time &&
        in.slots[ENG_BK_PREV_INCREMENTAL].last_gen > backed)
        backed = in.slots[ENG_BK_PREV_INCREMENTAL].last_gen;
    if (!in.slots[ENG_BK_PREV_FULL].mark_time || below > backed)
        return om_errf(OM_E_InvalidParameter,
                       "truncating the logs of '%s' below generation %u: its header records "
                       "backups up to generation %u only",
                       r->m->name, below, in.slots[ENG_BK_PREV_FULL].mark_time ? backed : 0);
    rc = eng_truncate_logs(r->m->db, below, &deleted);
    if (!rc) rc = eng_db_info(r->m->db, &in);
    if (rc) return rc;
    if (in.truncate_floor && in.truncate_floor < below)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", r->m->name}),
                    "backup of %s from a passive copy stored: %u log generations deleted; "
                    "generations %u to %u wait for passive copies that still need them",
                    r->m->name, deleted, in.truncate_floor, below - 1);
    else
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", r->m->name}),
                    "backup of %s from a passive copy stored: %u log generations below %u deleted",
                    r->m->name, deleted, below);
    json_object_set_new(r->rep, "deleted", json_integer(deleted));
    json_object_set_new(r->rep, "oldest", json_integer((json_int_t)in.gen_oldest));
    return 0;
}

/* ---- fencing and handoff (store/fence.h, docs/design.md "Fencing and handoff in the store")
 * ---- */

/* dag.lease {"until_mono_ns", "confirm"} (this server's ombra-repld, after each etcd keepalive):
 * the replicated databases may acknowledge commits until that moment of CLOCK_MONOTONIC (one clock
 * for every process of the machine). An absolute deadline, so that a renewal the store reads
 * late (the store paused, the request waiting in the socket) cannot reach past what its sending
 * allowed: one already past renews nothing. {"valid_ms"}: for valid_ms from now (tests).
 * {"confirm": {id: epoch}}: only those databases, mounted at that epoch, take commits (the
 * others stop at once); without it, every one (tests, and before confirmation existed).
 * -> {"databases": [{"id", "name", "epoch", "mounted", "taking_commits"}]}: the databases the DAG
 * names active here, so that ombra-repld keeps activelease/<id> for those taking commits. */
static int h_dag_lease(op_req *r)
{
    store *s = r->s;
    int64_t ms = 0;
    int rc = 0;
    json_t *until = json_object_get(r->req, "until_mono_ns");
    if (until) {
        int64_t u = json_integer_value(until), now = (int64_t)om_mono_ns();
        if (!json_is_integer(until) || u <= 0 || u > now + 3600000000000LL)
            rc = om_errf(OM_E_InvalidParameter,
                         "until_mono_ns %lld: a moment of CLOCK_MONOTONIC within the next hour",
                         (long long)u);
        ms = u > now ? (u - now) / 1000000 : 0;
    } else {
        rc = om_json_int(r->req, "valid_ms", &ms);
        if (!rc && (ms < 1 || ms > 3600000))
            rc = om_errf(OM_E_InvalidParameter, "valid_ms %lld: 1 ms to an hour", (long long)ms);
    }
    json_t *confirm = json_object_get(r->req, "confirm");
    if (!rc && confirm && !json_is_object(confirm))
        rc = om_errf(OM_E_InvalidParameter, "confirm: an object {database id: epoch}");
    if (rc) return rc;
    if (ms > 0 && !confirm) store_fence_renew(s->reg->fence, (uint32_t)ms);
    if (ms > 0 && confirm) {
        /* The databases mounted here at the epoch ombra-repld read from active/<id> after its
         * keepalive (not being deposed): the others take no commit until it confirms them. */
        const char *names[STORE_MAX_MOUNTED + 1];
        size_t n = 0;
        for (int i = 0; i < s->reg->nm && n < STORE_MAX_MOUNTED + 1; i++) {
            store_mounted *m = s->reg->m[i];
            store_dbent *e = store_dir_find(s->reg->dir, m->name);
            char id[37];
            if (!e) continue;
            om_uuid_str(&e->id, id);
            json_t *ep = json_object_get(confirm, id);
            if (json_is_integer(ep) && json_integer_value(ep) == m->epoch) names[n++] = m->name;
        }
        store_fence_renew_some(s->reg->fence, (uint32_t)ms, names, n, 0);
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < s->reg->dir->n; i++) {
        const store_dbent *e = &s->reg->dir->ents[i];
        if (!e->active) continue;
        store_mounted *m = store_find_mounted(s->reg, e->name);
        int64_t epoch = e->active_epoch;
        int taking = m && !m->closing && store_fence_taking(s->reg->fence, e->name, &epoch);
        char id[37];
        om_uuid_str(&e->id, id);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:b, s:b}", "id", id, "name", e->name,
                                             "epoch", (json_int_t)(m ? m->epoch : epoch), "mounted",
                                             m != NULL, "taking_commits", taking));
    }
    json_object_set_new(r->rep, "databases", arr);
    return 0;
}

static store_dbent *ent_of_id(store *s, const char *id)
{
    om_uuid u;
    if (om_uuid_parse(id, &u)) return NULL;
    for (size_t i = 0; i < s->reg->dir->n; i++)
        if (!memcmp(&s->reg->dir->ents[i].id, &u, sizeof u)) return &s->reg->dir->ents[i];
    return NULL;
}

/* Whether database id is still what a handoff at epoch needs (mu held): active here at that
 * epoch, mounted. *m: it. */
static int handoff_check(store *s, const char *id, int64_t epoch, store_mounted **m)
{
    store_dbent *e = ent_of_id(s, id);
    *m = NULL;
    if (!e)
        return om_errf(OM_E_DatabaseNotFound, "no database with id %s on server %s", id, s->server);
    if (!s->reg->conf.etcd || e->active_epoch <= 0)
        return om_errf(OM_E_InvalidParameter,
                       "database '%s' is in no DAG: a handoff moves a DAG's active copy", e->name);
    if (!e->active || e->active_epoch != epoch)
        return om_errf(OM_E_InvalidParameter,
                       "handing off database '%s' at epoch %lld is refused: the DAG names %s "
                       "active at epoch %lld",
                       e->name, (long long)epoch, e->active_on[0] ? e->active_on : "no server",
                       (long long)e->active_epoch);
    *m = store_find_mounted(s->reg, e->name);
    if (!*m || (*m)->closing)
        return om_errf(OM_E_DatabaseUnavailable,
                       "database '%s' is not mounted on server %s: nothing to hand off", e->name,
                       s->server);
    return 0;
}

/* db.handoff {"id", "epoch", "timeout_ms"} (a switchover, from this server's ombra-repld): stops
 * taking commits of the database (new ones wait, then DatabaseMoving), lets the ones in flight
 * finish (up to timeout_ms, else refused and commits go on), dismounts it closing its last
 * generation, and marks it handed off at that epoch: it is not mounted here again until the DAG
 * names this server active at a greater epoch. -> {"last_gen", "refused_since_ns"}. Asked again
 * for the same epoch once done: the same answer. */
static int h_db_handoff(op_req *r)
{
    store *s = r->s;
    const char *id = om_json_str_or(r->req, "id", "");
    int64_t epoch = 0, tmo = om_json_int_or(r->req, "timeout_ms", 30000);
    int rc = om_json_int(r->req, "epoch", &epoch);
    if (!rc && (tmo < 1 || tmo > 600000))
        rc = om_errf(OM_E_InvalidParameter, "timeout_ms %lld: 1 ms to 10 minutes", (long long)tmo);
    if (rc) return rc;
    store_dbent *e = ent_of_id(s, id);
    json_t *h = e ? store_handed_off(s->reg, e) : NULL;
    if (h && json_integer_value(json_object_get(h, "epoch")) == epoch &&
        json_integer_value(json_object_get(h, "last_gen")) > 0) {
        json_object_set(r->rep, "last_gen", json_object_get(h, "last_gen"));
        json_object_set(r->rep, "refused_since_ns", json_object_get(h, "refused_since_ns"));
        json_decref(h);
        return 0;
    }
    json_decref(h);
    store_mounted *m;
    if ((rc = handoff_check(s, id, epoch, &m)) ||
        (rc = refuse_in_backup(s, ent_of_id(s, id), "handing off")))
        return rc;
    char name[STORE_MAX_NAME + 1];
    snprintf(name, sizeof name, "%s", m->name);
    uint64_t refused = 0;
    /* The commits in flight may need mu to finish (their synchronous copies): waited without. */
    pthread_mutex_unlock(&s->reg->mu);
    rc = store_fence_stop(s->reg->fence, name, (uint32_t)tmo, &refused);
    pthread_mutex_lock(&s->reg->mu);
    if (!rc) rc = handoff_check(s, id, epoch, &m);
    if (!rc) rc = store_handoff_mark_locked(s->reg, id, epoch, 0, refused);
    if (rc) {
        store_fence_resume(s->reg->fence, name);
        return rc;
    }
    uint32_t last = 0;
    if ((rc = store_dismount_why_locked(s->reg, m, "handed off to another server", &last)))
        return om_errf(rc,
                       "database '%s' is dismounted, but closing its last log generation failed: "
                       "%s. HINT: it stays dismounted here until the DAG names this server "
                       "active at a greater epoch",
                       name, om_err_detail());
    char lastg[16];
    snprintf(lastg, sizeof lastg, "%u", last);
    if (store_handoff_mark_locked(s->reg, id, epoch, last, refused))
        om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}),
                    "database %s: recording its handoff's last generation: %s", name,
                    om_err_detail());
    om_log_with(
        OM_INFO, OM_FIELDS({"DATABASE", name}, {"GENERATION", lastg}),
        "database %s handed off at epoch %lld: log generation %u closed, commits refused for "
        "%.3f s so far; not mounted here again until the DAG names this server active at a "
        "greater epoch",
        name, (long long)epoch, last, (double)(om_now_ns() - refused) / 1e9);
    json_object_set_new(r->rep, "last_gen", json_integer((json_int_t)last));
    json_object_set_new(r->rep, "refused_since_ns", json_integer((json_int_t)refused));
    return 0;
}

/* ---- the op table ---- */

/* A request is one row: the lock its handler needs and, with needs_db, the database it names,
 * resolved before the handler runs (one error for a database this store does not have). */
typedef struct store_op {
    const char *name;
    enum op_lock lock;
    int needs_db;
    int (*handler)(op_req *r);
    int own_only; /* called by this server's ombra-repld or the admin: root or the daemon's
                   * user only, not the socket's group (a copy's position decides which commits
                   * are acknowledged, a join which etcd the store trusts) */
    int mail;     /* a mail request: a database of the DAG that is not here gets a retryable
                   * answer (store_acquire_commit) */
} store_op;

/* A passive copy's durable position (store/syncwait.h), from the active's ombra-repld. */
static int h_db_sync_position(op_req *r)
{
    const char *id = om_json_str_or(r->req, "id", ""),
               *server = om_json_str_or(r->req, "server", "");
    int64_t gen = -1, len = -1;
    int rc = om_json_int(r->req, "gen", &gen);
    if (!rc) rc = om_json_int(r->req, "len", &len);
    if (!rc && (gen < 0 || gen > UINT32_MAX || len < 0 || len > UINT32_MAX))
        rc = om_errf(OM_E_InvalidParameter, "sync position %lld/%lld of %s", (long long)gen,
                     (long long)len, server);
    eng_info in;
    if (!rc) rc = info_of_id(r, id, &in);
    store_syncwait *w = rc ? NULL : sync_of(r->s);
    if (!rc && !w) rc = om_errf(OM_E_OutOfMemory, "sync wait");
    if (!rc) rc = store_syncwait_report(w, id, server, (eng_lgpos){(uint32_t)gen, (uint32_t)len});
    json_t *sc = json_object_get(r->req, "sync_copies");
    if (!rc && json_is_integer(sc) && json_integer_value(sc) >= 0)
        store_syncwait_set_wanted(w, id, (uint32_t)json_integer_value(sc));
    return rc;
}

static const store_op ops[] = {
    {"status", OP_REGISTRY, 0, h_status, 0, 0},
    {"db.new", OP_REGISTRY, 0, h_db_new, 0, 0},
    {"db.new_recovery", OP_REGISTRY, 0, h_db_new_recovery, 0, 0},
    {"db.list", OP_REGISTRY, 0, h_db_list, 0, 0},
    {"db.show", OP_REGISTRY, 1, h_db_show, 0, 0},
    {"db.mount", OP_REGISTRY, 1, h_db_mount, 0, 0},
    {"db.dismount", OP_REGISTRY, 1, h_db_dismount, 0, 0},
    {"db.set", OP_REGISTRY, 1, h_db_set, 0, 0},
    {"mail.deliver", OP_DB_REF, 1, h_mail_deliver, 0, 1},
    {"mail.list", OP_DB_REF, 1, h_mail_list, 0, 1},
    {"mail.get", OP_DB_REF, 1, h_mail_get, 0, 1},
    {"mail.delete", OP_DB_REF, 1, h_mail_delete, 0, 1},
    {"mail.digest", OP_DB_REF, 1, h_mail_digest, 0, 1},
    {"mail.load", OP_DB_REF, 1, h_mail_load, 0, 1},
    {"db.replication_floor", OP_DB_REF, 1, h_db_replication_floor, 1, 0},
    {"dag.join", OP_REGISTRY, 0, h_dag_join, 1, 0},
    {"dag.lease", OP_REGISTRY, 0, h_dag_lease, 1, 0},
    {"db.handoff", OP_REGISTRY, 0, h_db_handoff, 1, 0},
    {"db.sync_position", OP_DB_REF, 1, h_db_sync_position, 1, 0},
    {"db.backup_prepare", OP_DB_REF, 1, h_db_backup_prepare, 1, 0},
    {"db.record_backup", OP_DB_REF, 1, h_db_record_backup, 1, 0},
    {"db.truncate_logs", OP_DB_REF, 1, h_db_truncate_logs, 1, 0},
};
#define NOPS (sizeof ops / sizeof ops[0])

/* Runs op's handler under its lock, with its database resolved. */
static int run_op(const store_op *op, op_req *r)
{
    const char *name = NULL;
    int rc = 0;
    /* A directory in etcd not reached yet: no answer from it would be true. */
    pthread_mutex_lock(&r->s->reg->mu);
    if (!r->s->reg->dir_ready && op->handler != h_status)
        rc = om_errf(OM_E_EtcdUnavailable,
                     "this server's directory is in etcd, not reached yet: %s. HINT: the "
                     "store retries; ombra dag status says what etcd answers",
                     r->s->reg->dir_error);
    pthread_mutex_unlock(&r->s->reg->mu);
    if (rc) return rc;
    if (op->lock == OP_DB_REF) {
        /* needs_db: a reference, or the database's own refusal (not mounted, none). */
        if ((rc = om_json_str(r->req, "db", &name))) return rc;
        rc = op->mail ? store_acquire_commit(r->s->reg, name, &r->m)
                      : store_acquire(r->s->reg, name, &r->m);
        if (rc) return rc;
        rc = op->handler(r);
        store_release(r->s->reg, r->m);
        return rc;
    }
    pthread_mutex_lock(&r->s->reg->mu);
    if (op->needs_db && !(rc = om_json_str(r->req, "name", &name)))
        rc = store_find_ent(r->s->reg, name, &r->ent);
    if (!rc) rc = op->handler(r);
    pthread_mutex_unlock(&r->s->reg->mu);
    return rc;
}

/* ---- connections ---- */

/* The reply to one request; *rdata (malloc'd, may be NULL) goes after it. */
static json_t *dispatch(store *s, int fd, json_t *req, const uint8_t *data, size_t dlen,
                        uint8_t **rdata, size_t *rdlen)
{
    op_req r = {.s = s, .fd = fd, .req = req, .rep = om_proto_ok(), .data = data, .dlen = dlen};
    const char *name;
    int rc = om_json_str(req, "op", &name);
    const store_op *op = NULL;
    for (size_t i = 0; !rc && !op && i < NOPS; i++)
        if (!strcmp(ops[i].name, name)) op = &ops[i];
    if (!rc && !op) rc = om_errf(OM_E_InvalidParameter, "unknown operation '%s'", name);
    if (!rc && op->own_only && !om_peer_is_own(fd))
        rc = om_errf(OM_E_FileAccessDenied,
                     "%s is for this server's services: root or the store's own user only, not "
                     "the members of its group",
                     name);
    if (!rc) rc = run_op(op, &r);
    if (rc) {
        json_decref(r.rep);
        free(r.rdata);
        r.rdata = NULL;
        r.rdlen = 0;
        r.rep = om_proto_error(rc);
    }
    *rdata = r.rdata;
    *rdlen = r.rdlen;
    return r.rep;
}

typedef struct conn {
    store *s;
    int fd;
} conn;

static void *conn_new(void *ctx, int fd)
{
    conn *c = malloc(sizeof *c);
    if (c) *c = (conn){.s = ctx, .fd = fd};
    return c;
}

static void *serve(void *arg)
{
    conn *c = arg;
    store *s = c->s;
    char who[128] = "unknown peer";
    if (om_server_admit(c->fd, s->group, "this store", who, sizeof who)) {
        for (;;) {
            json_t *req = NULL;
            uint8_t *data = NULL, *rdata = NULL;
            size_t dlen = 0, rdlen = 0;
            int rc = om_proto_recv(c->fd, &req, &data, &dlen);
            if (rc) {
                /* A closed or idle connection is the normal end; anything else is a bad client. */
                if (!om_proto_ended_cleanly()) {
                    om_server_warn_client("client %s: %s", who, om_err_detail());
                    json_t *r = om_proto_error(rc);
                    om_proto_send(c->fd, r, NULL, 0);
                    json_decref(r);
                }
                break;
            }
            json_t *rep = dispatch(s, c->fd, req, data, dlen, &rdata, &rdlen);
            rc = om_proto_send(c->fd, rep, rdata, rdlen);
            json_decref(rep);
            json_decref(req);
            free(data);
            free(rdata);
            if (rc) break;
        }
    }
    close(c->fd);
    free(c);
    pthread_mutex_lock(&s->mu);
    s->active--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Whether the store is stopping (the connector's sleeps end early then). */
static int stopping(store *s)
{
    pthread_mutex_lock(&s->mu);
    int v = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* Reaches the etcd directory: an error line per failed attempt, backoff 0.5 s doubling to 30 s,
 * until it answers or the store stops. */
static void *connector(void *arg)
{
    store *s = arg;
    unsigned wait_ms = 500;
    for (int tries = 1; !stopping(s); tries++) {
        if (!store_registry_connect(s->reg)) {
            if (tries > 1) om_info("directory: etcd reached after %d attempts", tries);
            break;
        }
        om_error("directory: etcd not reached (attempt %d; again in %.1f s; nothing is mounted "
                 "meanwhile): %s",
                 tries, wait_ms / 1000.0, om_err_detail());
        for (unsigned t = 0; t < wait_ms && !stopping(s); t += 100)
            usleep(100000);
        wait_ms = wait_ms * 2 > 30000 ? 30000 : wait_ms * 2;
    }
    return NULL;
}

int store_run(const store_opts *o)
{
    static store st;
    store *s = &st;
    memset(s, 0, sizeof *s);
    s->o = o;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    int rc = om_group_id(o->group, &s->group);
    if (rc) return rc;
    char dirpath[4200], sock[4200];
    rc = om_mkdirs(o->data_dir);
    if (!rc) rc = om_mkdirs(o->runtime_dir);
    if (rc) return rc;
    snprintf(dirpath, sizeof dirpath, "%s/directory.json", o->data_dir);
    snprintf(sock, sizeof sock, "%s/store.sock", o->runtime_dir);
    store_dir_conf conf;
    if ((rc = store_dir_read_conf(dirpath, &conf))) return rc;
    if (conf.etcd && o->etcd && *o->etcd && strcmp(o->etcd, conf.url)) {
        if (strlen(o->etcd) >= sizeof conf.url)
            return om_errf(OM_E_InvalidParameter,
                           "--etcd: %zu characters of endpoints, at most %zu", strlen(o->etcd),
                           sizeof conf.url - 1);
        om_info("directory: etcd at %s (given), not %s (recorded at the join in %s)", o->etcd,
                conf.url, dirpath);
        snprintf(conf.url, sizeof conf.url, "%s", o->etcd);
    }
    s->server = o->server;
    if (conf.etcd && strcmp(conf.server, o->server)) {
        if (o->server_given)
            return om_errf(OM_E_InvalidParameter,
                           "this server joined DAG %s as %s (%s), not as %s. HINT: start "
                           "ombra-store --server %s",
                           conf.dag, conf.server, dirpath, o->server, conf.server);
        s->server = conf.server;
    }
    /* Fencing is armed from the start (DAC: a replicated database takes no commit before this
     * server's ombra-repld renewed the deadline); OMBRA_FENCE_ALWAYS=0 arms it only at the first
     * dag.lease (tests of the store alone). OMBRA_FENCE_WAIT_MS: the commits' wait for a renewal
     * or a handoff (tests). */
    const char *fa = getenv("OMBRA_FENCE_ALWAYS"), *fw = getenv("OMBRA_FENCE_WAIT_MS");
    store_registry_opts ro = {.server = s->server,
                              .conf = &conf,
                              .dir_path = dirpath,
                              .checkpoint_gens = o->checkpoint_gens,
                              .cache_mb = o->cache_mb,
                              .fence_always = !fa || strcmp(fa, "0"),
                              .fence_wait_ms = fw && atoi(fw) > 0 ? (uint32_t)atoi(fw) : 0};
    if ((rc = store_registry_open(&ro, &s->reg))) return rc;
    om_server_signals_block();
    if ((rc = om_server_listen(sock, s->group, "ombra-store", &s->listen_fd))) {
        store_registry_close(s->reg);
        return rc;
    }
    store_registry_mount_marked(s->reg);
    if (!s->reg->dir_ready) {
        if ((rc = pthread_create(&s->connector, NULL, connector, s))) {
            store_registry_close(s->reg);
            return om_errf(OM_E_OutOfMemory, "starting the directory's connector: %s",
                           strerror(rc));
        }
        s->has_connector = 1;
    }
    om_stopper stopper = {.mu = &s->mu, .stopping = &s->stopping, .listen_fd = s->listen_fd};
    if ((rc = om_stopper_start(&stopper))) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_mutex_unlock(&s->mu);
        if (s->has_connector) pthread_join(s->connector, NULL);
        store_registry_close(s->reg);
        return rc;
    }
    store_writer *wr = NULL;
    if ((rc = store_writer_start(s->reg, &wr)))
        om_error("the writer did not start (backups will fail): %s", om_err_detail());
    pthread_mutex_lock(&s->reg->mu);
    s->writer = wr;
    pthread_mutex_unlock(&s->reg->mu);
    om_info("server %s listening on %s (%d databases mounted; directory %s%s%s)", s->server, sock,
            s->reg->nm, conf.etcd ? "in etcd at " : dirpath, conf.etcd ? conf.url : "",
            conf.etcd && !s->reg->dir_ready ? ", being reached" : "");
    /* Ready for systemd once the databases that mount at start are mounted and the writer
     * runs: a unit ordered after this one finds them (the directory in etcd may still be
     * being reached: those mount when it answers). */
    char status[256];
    snprintf(status, sizeof status, "server %s: %d databases mounted%s", s->server, s->reg->nm,
             conf.etcd && !s->reg->dir_ready ? ", etcd being reached" : "");
    om_daemon_ready(status);
    om_server_accept(&stopper, "this store", &o->limits, &s->active, conn_new, s, serve);
    om_stopper_join(&stopper);
    close(s->listen_fd);
    unlink(sock);
    /* Backups in progress end here (the coordinator fails them): holds released first. */
    pthread_mutex_lock(&s->reg->mu);
    s->writer = NULL;
    pthread_mutex_unlock(&s->reg->mu);
    store_writer_stop(wr);
    if (s->has_connector) pthread_join(s->connector, NULL);
    /* Requests in progress finish; a client that keeps an idle connection open is not waited
     * for past a few seconds (it holds no database). */
    pthread_mutex_lock(&s->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    while (s->active > 0 && pthread_cond_timedwait(&s->cond, &s->mu, &until) == 0) {
    }
    pthread_mutex_unlock(&s->mu);
    /* Then every database is dismounted (the marks stay). */
    int failures = store_registry_close(s->reg);
    om_info("stopped%s", failures ? " (some databases need recovery at the next mount)" : "");
    return failures ? OM_E_FatalIO : 0;
}
