/* The registry of a store: its directory (directory.h) and the databases mounted from it. The
 * service (service.c) serves requests on it; the writer (writer.c) backs its databases up and
 * restores them; neither calls the other through it.
 *
 * Rules:
 * - at most STORE_MAX_MOUNTED databases mounted at once, at most one of them a recovery
 *   database;
 * - a request that uses a mounted database holds a reference (store_acquire); dismount waits
 *   until the last one is let go, and a database being dismounted (closing) is not handed out;
 * - registry changes (mount, dismount, new, set) are made under mu and saved in the directory
 *   before they are acknowledged;
 * - before a database is closed, the observers of "database closing" are told (under mu, the
 *   database still open): the writer thaws and releases what a backup holds of it.
 *
 * Lock order: registry.mu, then an observer's own lock. An observer never takes mu while it
 * holds its own lock. mu is let go only where a function says so (dismount waiting for users,
 * and callers that ask the engine something that may wait on a frozen database). */
#ifndef OM_STORE_REGISTRY_H
#define OM_STORE_REGISTRY_H

#include <pthread.h>

#include "engine/engine.h"
#include "store/directory.h"
#include "store/fence.h"
#include "store/mail.h"

#define STORE_MAX_MOUNTED   100
#define STORE_MAX_OBSERVERS 4

/* A mounted database. */
typedef struct store_mounted {
    char name[STORE_MAX_NAME + 1];
    eng_db *db;
    mail_store *mail;
    int refs;          /* requests using it (under mu) */
    int closing;       /* being dismounted: no new reference */
    int recovery;      /* the recovery database */
    int64_t epoch;     /* of active/<id> it is mounted under (0: the file backend) */
    char mount_id[37]; /* this mount (a new uuid each time, across restarts of the store): a
                          reader of a held file tells by it that no dismount came between */
} store_mounted;

/* Told that db is about to be closed (mu held): nothing of it may be used afterwards. */
typedef void (*store_closing_fn)(void *arg, eng_db *db);

typedef struct store_registry_opts {
    const char *server;         /* this server's name */
    const char *dir_path;       /* the directory file (directory.json) */
    const store_dir_conf *conf; /* what it says (NULL: read here, store_dir_read_conf) */
    unsigned checkpoint_gens;   /* checkpoint depth in log generations (0: the engine's default) */
    unsigned cache_mb;          /* dirty pages kept per database before a checkpoint (0: default) */
    int fence_always;       /* fencing armed from the start (fence.h; 0: at the first dag.lease) */
    uint32_t fence_wait_ms; /* how long a commit waits for a renewal or a handoff (0: 5000) */
} store_registry_opts;

typedef struct store_registry {
    pthread_mutex_t mu;  /* everything below, and the directory */
    pthread_cond_t cond; /* broadcast when a reference is let go */
    store_dir *dir;      /* never NULL: a placeholder (store_dir_open_none) until etcd answers */
    store_dir_conf conf; /* where the directory is */
    char dir_path[4200];
    etcd *etcd;           /* the directory's etcd (NULL: the file backend, or not reached yet) */
    int dir_ready;        /* the directory is the real one */
    char dir_error[1400]; /* why etcd was not reached at the last attempt ("" none) */
    int shutting;         /* store_registry_close has begun: no more changes from the watch */
    char server[256];
    unsigned checkpoint_gens, cache_mb;
    store_mounted *m[STORE_MAX_MOUNTED + 1];
    int nm;
    store_fence *fence; /* fencing of the replicated databases (fence.h) */
    uint32_t fence_wait_ms;
    /* Databases handed off (db.handoff): {id: {"epoch", "last_gen", "refused_since_ns"}}, saved
     * in handoff_path; not mounted again while the DAG names this server active at that epoch
     * or an older one. */
    json_t *handoffs;
    char handoff_path[4200];
    struct {
        store_closing_fn fn;
        void *arg;
    } closing[STORE_MAX_OBSERVERS];
    int nclosing;
} store_registry;

/* Opens the directory (created empty when missing); nothing is mounted yet. A directory in etcd
 * is not reached here: dir is a placeholder and dir_ready 0 until store_registry_connect. */
int store_registry_open(const store_registry_opts *o, store_registry **out);
/* One attempt to reach the etcd directory (takes mu): 0 and dir_ready once there (the databases
 * marked mounted and active here are then mounted), else the error, kept in dir_error. A
 * directory that is ready already: 0. Once ready, the watch's changes are applied under mu: a
 * database that becomes active here and is marked mounted is mounted, a mounted one that is no
 * longer active here (or no longer in the directory) is dismounted, said in the log. */
int store_registry_connect(store_registry *r);
/* Joins DAG dag in the etcd at url (store_dir_join; mu held): the file directory's databases go
 * into etcd and the registry goes on with the etcd directory, its mounted databases staying
 * mounted. check_only: the checks alone. InvalidParameter when the directory is in etcd already
 * (*already 1 when it is this DAG's: nothing to do). */
int store_registry_join_locked(store_registry *r, const char *url, const char *dag, int check_only,
                               int *already);
/* Mounts what the directory marks mounted and active on this server, recovering any database in
 * Dirty Shutdown; one that fails is logged and does not stop the others. Takes mu. */
void store_registry_mount_marked(store_registry *r);
/* Waits for every reference to go, dismounts every database (Clean Shutdown; the directory's
 * marks stay, so the next start mounts them again), closes the directory and frees r. The number
 * of databases whose clean shutdown failed (they recover at their next mount). */
int store_registry_close(store_registry *r);

/* Adds an observer of "database closing" (at most STORE_MAX_OBSERVERS); takes mu. */
int store_registry_on_closing(store_registry *r, store_closing_fn fn, void *arg);
/* Removes it; once this returns, fn is not called with arg again. Takes mu. */
void store_registry_off_closing(store_registry *r, store_closing_fn fn, void *arg);

/* The mounted database of that name (NULL: none). Under mu. */
store_mounted *store_find_mounted(store_registry *r, const char *name);
/* The directory's entry of that name; DatabaseNotFound, "no database named '<name>'" (the one
 * answer to a name this store does not have) when none. Under mu. */
int store_find_ent(store_registry *r, const char *name, store_dbent **e);
/* A reference on a mounted database, for one request (takes and lets go mu): DatabaseNotFound
 * for a name the directory does not have, DatabaseUnavailable (with a HINT to mount it) for one
 * not mounted or being dismounted. */
int store_acquire(store_registry *r, const char *name, store_mounted **out);
/* The same for a request that commits (mail): the retryable answers of a DAG database that is
 * not here (the CLI exits 75 on them): WrongServer "database 'x' is active on server S, not
 * here" for one the DAG names active on another server (a passive copy here, or a deposed
 * active); for one handed off here (or being dismounted), waits up to fence_wait_ms for it to
 * be mounted again (an aborted switchover), then DatabaseMoving. */
int store_acquire_commit(store_registry *r, const char *name, store_mounted **out);
void store_release(store_registry *r, store_mounted *m);
/* Opens a database of the directory and registers it (create: a new one). Under mu. */
int store_mount_locked(store_registry *r, const store_dbent *e, int create);
/* Marks m closing, waits for its users (letting mu go meanwhile), tells the observers, closes
 * it (Clean Shutdown) and frees m. The database is dismounted whatever the result; an error says
 * its clean shutdown failed (it recovers at its next mount). Under mu. */
int store_dismount_locked(store_registry *r, store_mounted *m);
/* The same, saying why in the log line of the commits it stops taking; with last_gen, the
 * engine also closes the last generation (eng_db_close_gen: a handoff) and *last_gen is it. */
int store_dismount_why_locked(store_registry *r, store_mounted *m, const char *why,
                              uint32_t *last_gen);
/* m's epoch and copies as the directory says now (after a change of the DAG). Under mu. */
void store_follow_entry_locked(store_registry *r, store_mounted *m);

/* Handoffs (db.handoff). The mark of database id handed off at epoch (saved durably before
 * the dismount, so that a restart does not mount it either); last_gen 0 until known. */
int store_handoff_mark_locked(store_registry *r, const char *id, int64_t epoch, uint32_t last_gen,
                              uint64_t refused_since_ns);
/* The mark of e (a new reference, {"epoch", "last_gen", "refused_since_ns"}) when it keeps e
 * from being mounted: the DAG names this server active at the mark's epoch or an older one.
 * NULL otherwise. Under mu. */
json_t *store_handed_off(store_registry *r, const store_dbent *e);
/* The engine options of a directory entry (the registry's cache and checkpoint settings). */
eng_opts store_ent_opts(const store_registry *r, const store_dbent *e);

#endif
