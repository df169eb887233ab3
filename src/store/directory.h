/* The directory (storage configuration): which databases exist on which server, their paths,
 * log base names and flags. The Active Directory analog of ARCHITECTURE.md.
 *
 * One interface, two backends; the store never knows which one it has.
 *
 * The file backend (one server, no DAG) keeps a JSON document in $OMBRA_HOME/directory.json
 * and replaces it durably on every change (write temp, fsync, rename, fsync the folder), so
 * after a crash it is the old or the new document, never a mix.
 *
 * The etcd backend (a DAG, docs/design.md "The directory on etcd") keeps one key per database,
 * /ombra/dag/<dag>/databases/<db id>, a JSON record {"id", "name", "base", "circular_logging",
 * "allow_restore", "recovery", "copies": {<server>: {"edb", "logs", "mounted", "preference",
 * "replay_lag"}}}: the settings of the database and, per server holding a copy, that copy's
 * paths. A store on server S sees the databases with a copy on S (ents), with S's paths, and
 * server set to S. A put is one etcd transaction that compares the revision of the record it
 * read: a change another server made meanwhile is read again and kept (the fields this put
 * changes from what the caller saw are applied onto the record as it now is), never
 * overwritten. A remove takes S's copy out of the record, and the record with its last copy.
 * A watch sees the other servers' changes as they are made; they reach ents at
 * store_dir_refresh, which the store calls under its lock (store_dir_on_change tells it when).
 * A copy in a record without "edb" is a passive copy that ombra-repld keeps (its paths are in
 * copies/<db id>/<server>): no entry of the store's.
 *
 * Active copies. The etcd backend also reads and watches /ombra/dag/<dag>/active/<db id>
 * ({"server", "epoch", "since_gen", ...}): an entry's active_on is the server the DAG names
 * active, active says whether that is this server, active_epoch and active_since_gen what the
 * key says; the store mounts only those (docs/design.md "The store on
 * the etcd directory"). A put that adds this server's copy of a database the DAG has no active
 * copy of (a new database, a joining server's) writes active/<db id> = {this server, epoch 1}
 * in the same transaction as the record, so a crash leaves both or neither. On the file
 * backend every entry is active (one server).
 *
 * Joining (store_dir_join): the file backend's databases are imported into etcd once, then the
 * file says where the directory is: {"version", "etcd", "dag", "server", "joined", "imported"}
 * ("imported": the database list as it was, for the record only; never read back).
 *
 * Not thread-safe: the store serialises the calls (and its reads of ents) under its own lock;
 * ents and the pointers into it change only in put, remove and refresh. */
#ifndef OM_STORE_DIRECTORY_H
#define OM_STORE_DIRECTORY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/uuid.h"
#include "etcd/etcd.h"

#define STORE_MAX_NAME 64

typedef struct store_dbent {
    char name[STORE_MAX_NAME + 1];
    om_uuid id;
    char server[128];
    char edb[4096], logs[4096];
    char base[4];
    int circular, allow_restore, recovery, mounted;
    int active;          /* this server holds the active copy (always on the file backend) */
    char active_on[128]; /* the server the DAG names active; "" when none */
    /* active/<id>'s "epoch" and "since_gen" (the first generation of that epoch's log stream);
     * 0 on the file backend and when the DAG names no active copy. */
    int64_t active_epoch;
    uint32_t active_since_gen;
} store_dbent;

typedef struct store_dir_ops store_dir_ops; /* the backend's calls (directory.c) */

typedef struct store_dir {
    const store_dir_ops *ops;
    void *be; /* the backend's state */
    store_dbent *ents;
    size_t n, cap;
} store_dir;

/* What the directory file says: a file backend (etcd 0), or that the directory is in etcd
 * at url, DAG dag, this server being server (etcd 1). A missing file is an empty file directory.
 * InvalidParameter naming the file when it is neither. */
typedef struct store_dir_conf {
    int etcd;
    char url[1024];
    char dag[STORE_MAX_NAME + 1];
    char server[128];
} store_dir_conf;
int store_dir_read_conf(const char *path, store_dir_conf *c);

/* The file backend over path (InvalidParameter when the file says the directory is in etcd). */
int store_dir_open_file(const char *path, store_dir **out);
/* A directory with no database that refuses every change with EtcdUnavailable and why: what a
 * store on etcd has until it reaches etcd. */
int store_dir_open_none(const char *why, store_dir **out);
/* The etcd backend: the databases of DAG dag (a name: letters, digits, '-', '_', '.') with a
 * copy on server. Reads every record once (an unreadable record is an error naming its key),
 * then watches them. e stays the caller's, and must outlive the directory. */
int store_dir_open_etcd(etcd *e, const char *dag, const char *server, store_dir **out);
void store_dir_close(store_dir *d);
/* Joins DAG dag: the databases of file directory from (this server's: those whose server is
 * server) go into the etcd directory of dag, then from's file says that the directory is in etcd
 * at url (written durably). Everything is checked first and nothing is written when one would
 * be refused: DatabaseDuplicate for a name the DAG has with another id (or an id it has under
 * another name), InvalidParameter for one the DAG names active on another server. Importing
 * again is harmless (a record with this server's copy is updated, not duplicated), so a crash
 * between the records and the file is mended by joining again. check_only: only the checks.
 * On success (and not check_only) *out is the etcd directory (from stays the caller's: close
 * it); e must outlive it. A directory already in etcd is not from: the caller says so. */
int store_dir_join(store_dir *from, etcd *e, const char *url, const char *dag, const char *server,
                   int check_only, store_dir **out);
/* NULL when there is no such database (on etcd: none with a copy on this server). */
store_dbent *store_dir_find(store_dir *d, const char *name);
/* Adds (or replaces by name) and saves. On a failed save the directory is unchanged.
 * On etcd, e is keyed by its id: a new id is a new database (DatabaseDuplicate when a database
 * of that name exists in the DAG, whichever servers hold it; a name of this server's with
 * another id is not replaced but refused the same way); an id the DAG has without a copy here
 * adds this server's copy, the settings staying as the DAG has them; an id this server has
 * changes what e changes from the entry as ents held it. A database another server removed
 * meanwhile gives DatabaseNotFound; WriteConflict when other servers kept changing the record
 * through every retry. */
int store_dir_put(store_dir *d, const store_dbent *e);
/* On etcd: removes this server's copy (the record goes with its last copy). */
int store_dir_remove(store_dir *d, const char *name);
/* On etcd: applies the changes of other servers that the watch has seen since the last refresh
 * (ents and pointers into it change); *changed (may be NULL): how many records changed. The
 * file backend has nothing to apply. */
int store_dir_refresh(store_dir *d, int *changed);
/* fn(arg) is called (on the watch's thread, no lock held) each time the watch has seen a
 * change, so that the store takes its lock and calls store_dir_refresh. NULL fn: no more
 * calls once this returns. The file backend never calls it. */
void store_dir_on_change(store_dir *d, void (*fn)(void *arg), void *arg);
/* The DAG's record of database name (a new reference), every copy included; NULL when there
 * is none, and always on the file backend (one server: ents say everything). */
json_t *store_dir_record(store_dir *d, const char *name);

/* Whether the DAG has a database of that name, whichever servers hold its copies (this one
 * perhaps only as a passive copy, which is no entry): 1, with the server active/<id> names
 * (server, "" when none) and its epoch; 0 when it has none, and always on the file backend. */
int store_dir_active(store_dir *d, const char *name, char *server, size_t n, int64_t *epoch);

/* 1 when two paths name one place: the same file or folder once links on the way are
 * resolved, or the same text where neither exists yet. */
int store_same_place(const char *a, const char *b);
/* InvalidPath when the name of the database file edb is one a log folder's own files take
 * (*.log, *.chk, *.pgj, *.jrs, *.env: a log roll or a truncation could meet it); else 0. */
int store_check_edb_name(const char *edb, const char *what);
/* Whether a database file at edb with its logs (base) in logs would share a place with a
 * database of the directory other than skip: the same .edb, the same log stream, an .edb
 * in another's log folder, or a log folder where another's .edb is (a log roll or a
 * truncation there would meet a file it did not write). Returns the first such database and
 * says which in why; NULL when none. */
const store_dbent *store_dir_place_taken(const store_dir *d, const char *edb, const char *logs,
                                         const char *base, const store_dbent *skip, char *why,
                                         size_t n);

#endif
