/* The store client: the store protocol (docs/protocol.md) from the client's side, for everything
 * that talks to ombra-store (the command line, the backup and restore jobs and, next, the
 * replication service). It is to ombra-store what vss/requester.h is to ombra-vssd.
 *
 * One store_client is one connection to the store's socket, used by one thread at a time:
 *
 *   store_client_new(NULL, &c)     <runtime>/store.sock; nothing is connected yet
 *   store_client_status, store_client_db_..., store_client_mail_...   any number, any order
 *   store_client_free(c)
 *
 * The first call connects, checking before anything is sent that the socket, its folder and
 * the process listening belong to root or to this user (om_proto_connect). Calls then go one
 * after the other on that connection. The store closes a connection left idle past its bound
 * (ombra-store --idle-timeout-ms); a call that finds it closed connects again before it sends,
 * so a request is never sent twice, nor lost to a connection closed before it. A call whose
 * exchange failed half way (the store went away mid-reply) leaves the client unconnected; the
 * next call connects again.
 *
 * Errors. Every call returns 0 or the error the store replied with (errors.def), and sets the
 * thread's detail (om_err_detail) to the store's message, e.g. "no database named 'x'" with
 * DatabaseNotFound, "database 'x' is not mounted. HINT: ombra db mount x" with
 * DatabaseUnavailable. A store that refuses this user answers and closes without reading the
 * request: its answer is the error, not the broken pipe. Nothing listening: FileNotFound with a
 * HINT; a socket, folder or daemon of another user: FileAccessDenied naming it. A reply without
 * what it should carry: Internal, "the server's reply ...".
 *
 * Databases are JSON objects as the store sends them: {"name", "id", "server", "edb", "logs",
 * "base", "circular_logging", "allow_restore", "recovery", "mounted", "state"} (and "problem"
 * when the store cannot read it); db_show adds "size_bytes", "pages", the generations and
 * "backups". JSON results are new references the caller decrefs. */
#ifndef OM_STORE_CLIENT_H
#define OM_STORE_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store_client store_client;

/* A client of the store listening on socket_path (NULL: <runtime>/store.sock, base/paths.h).
 * Only OutOfMemory or a runtime directory that cannot be named fail here. */
int store_client_new(const char *socket_path, store_client **out);
/* Closes the connection and frees c (NULL: nothing). */
void store_client_free(store_client *c);
/* The warning of the last reply, "" when none: what failed beside a change that was made (a
 * dismount whose clean shutdown failed on a full disk: dismounted all the same). */
const char *store_client_warning(const store_client *c);
/* on: a request refused by a busy store (OutOfSessions, before it read anything) is sent again
 * (om_proto_busy_retry: up to OMBRA_BUSY_WAIT seconds), as the backup and restore jobs want;
 * off (the default): the refusal is the answer, as a mail server wants of a temporary failure. */
void store_client_retry_busy(store_client *c, int on);

/* -> {"server", "pid", "mounted", "databases", "directory", "restores"} (this server's name,
 * the daemon's pid, how many databases are mounted and known, where the directory is, the
 * restores in progress with their replay's progress: store_writer_restores). */
int store_client_status(store_client *c, json_t **status);

/* ---- databases ---- */

/* -> the array of every database of the directory. */
int store_client_db_list(store_client *c, json_t **dbs);
/* -> the database, with its details. */
int store_client_db_show(store_client *c, const char *name, json_t **db);

/* What db_new makes. Paths are absolute (the store refuses others: it runs in another
 * directory); NULL for the store's defaults, $OMBRA_HOME/dbs/NAME/NAME.edb and .../logs. */
typedef struct store_db_spec {
    const char *edb, *logs;
    const char *base;     /* the log base name, "E01"; NULL: the first free one */
    int circular_logging; /* delete generations once checkpointed */
    int recovery;         /* the recovery database (edb and logs required): left dismounted and
                             open to a restore */
} store_db_spec;

/* Creates the database (mounted, unless the recovery database) -> the new database. */
int store_client_db_new(store_client *c, const char *name, const store_db_spec *spec, json_t **db);
/* -> the database as it is after the change. Dismounting is refused while the database is in a
 * backup session (BackupInProgress), mounting while a restore targets it (RestoreInProgress). */
int store_client_db_mount(store_client *c, const char *name, json_t **db);
int store_client_db_dismount(store_client *c, const char *name, json_t **db);
/* circular_logging, allow_restore: 1 on, 0 off, -1 unchanged (not both -1). -> the database;
 * a change of circular logging on a mounted database carries "note": it applies at the next
 * mount. Refused while the database is in a backup session. */
int store_client_db_set(store_client *c, const char *name, int circular_logging, int allow_restore,
                        json_t **db);

/* ---- replication (ombra-repld, on the server of a database's active copy) ---- */

/* The floor of log truncation that the passive copies of mounted database db (whose id must
 * be id: DatabaseNotFound otherwise) need (spec §8): no generation from floor on is deleted,
 * by circular logging or a backup, for hold_s seconds (1 s to 10 years) unless renewed;
 * floor 0: none, 1: keep every generation. released (NULL, or borrowed: an array of {"server",
 * "gen", "reason"}) names the copies that held truncation back too long and hold it no more:
 * the store logs one warning line for each. -> *state {"floor" (in force), "truncate_point"
 * (circular logging or a stored backup would delete below it, floor aside), "checkpoint",
 * "oldest", "current" (generations), "log_disk_pct" (the log folder's filesystem, % used)}. */
int store_client_db_replication_floor(store_client *c, const char *db, const char *id,
                                      uint32_t floor, uint32_t hold_s, json_t *released,
                                      json_t **state);
/* --sync-copies: passive copy `server` of mounted database db (whose id must be id) holds
 * durably the log of every generation before gen and len bytes of gen's record stream. The
 * store's commits that wait for synchronous copies count it (store/syncwait.h). sync_copies:
 * the database's --sync-copies as the DAG's record says (-1: not known). */
int store_client_db_sync_position(store_client *c, const char *db, const char *id,
                                  const char *server, uint32_t gen, uint32_t len, int sync_copies);

/* A passive copy's backup, recorded by the active (store/backup_record.h): op is
 * "db.backup_prepare" {id, type}, "db.record_backup" {id, type, first_gen, last_gen, mark_gen,
 * mark_off, mark_time_ns, server} or "db.truncate_logs" {id, below}; args (borrowed) holds those
 * fields (anything else in it is dropped). -> *rep the reply without "ok". */
int store_client_db_backup_op(store_client *c, const char *op, const char *db, json_t *args,
                              json_t **rep);

/* dag.join: this server's file directory goes into DAG dag's etcd directory (etcd_url), once;
 * check_only: the checks alone, nothing written. -> *rep {"databases": [{"id", "name"} of each
 * database in the directory now]}, or {"already": true} when the server is in that DAG already. */
int store_client_dag_join(store_client *c, const char *etcd_url, const char *dag, int check_only,
                          json_t **rep);

/* ---- fencing and handoff (ombra-repld; store/fence.h, docs/design.md "Fencing and handoff in
 * the store") ---- */

/* dag.lease: this server's replicated databases may acknowledge commits until until_mono_ns
 * (CLOCK_MONOTONIC, om_mono_ns): ombra-repld calls it right after each successful etcd
 * keepalive, with the moment it sent the keepalive + most of the lease, so that the store's
 * deadline always comes before etcd can expire the lease (a deadline already past when the
 * store reads it renews nothing). The first call arms the store's fencing (before it, the store
 * acknowledges as it always did); armed, a database that mounted takes no commit before the
 * next call. -> *dbs (a new reference) the array of the databases the DAG names active on this
 * server: {"id", "name", "epoch" (of active/<id> it is mounted under, or the DAG's when not
 * mounted), "mounted", "taking_commits"}: ombra-repld keeps activelease/<id> for those taking
 * commits. confirm (borrowed; NULL: every database): {database id: epoch}, the databases
 * active/<id> names active on this server at that epoch and not being deposed, read from etcd
 * after the keepalive; the others take no commit until a renewal confirms them. */
int store_client_dag_lease(store_client *c, uint64_t until_mono_ns, json_t *confirm, json_t **dbs);
/* db.handoff (a switchover, on the active): database id, active here at epoch (else refused:
 * InvalidParameter), stops taking commits (new ones wait, then get DatabaseMoving), lets those
 * in flight finish (within timeout_ms, 1 ms to 10 minutes; else DatabaseMoving, and the
 * database goes on taking commits), is dismounted cleanly with its last log generation closed
 * (eng_db_close_gen), and is marked handed off at epoch: the store does not mount it again
 * until active/<id> names this server at a greater epoch (an aborted switchover), nor after a
 * restart. -> *last_gen: the last generation of this epoch (every generation up to it is a
 * finished file), *refused_since_ns: since when commits were refused (CLOCK_REALTIME ns). Asked
 * again for the same epoch once done, the same answer. Refused while a backup session holds the
 * database (BackupInProgress); DatabaseUnavailable when it is not mounted. */
int store_client_db_handoff(store_client *c, const char *id, int64_t epoch, uint32_t timeout_ms,
                            uint32_t *last_gen, uint64_t *refused_since_ns);

/* ---- mail ---- */

/* What store_mail_deliver stores: the body byte for byte (at most OM_PROTO_MAX_DATA bytes). */
typedef struct store_mail_new {
    const char *mailbox; /* created on first delivery */
    const char *folder;  /* NULL: Inbox */
    const char *subject; /* UTF-8; NULL: none (the CLI takes the Subject: header) */
    const void *body;
    size_t size;
} store_mail_new;

/* Delivers into database db -> *id, once the message is durable. */
int store_client_mail_deliver(store_client *c, const char *db, const store_mail_new *m,
                              uint64_t *id);
/* Who acknowledged a commit: the server, the epoch of active/<id> its copy was mounted under
 * (0: no DAG) and when (CLOCK_REALTIME ns). */
typedef struct store_mail_ack {
    uint64_t id;
    char server[128];
    int64_t epoch;
    uint64_t acked_ns;
} store_mail_ack;
/* store_client_mail_deliver, with the acknowledgement. Retryable errors (a delivery that may
 * succeed when made again, here or on the server now active; the CLI exits 75):
 * SyncCopiesUnavailable, ActiveLeaseLapsed (nothing committed, or committed here but not
 * acknowledged: delivered again, the message may be there twice), DatabaseMoving (a
 * switchover), WrongServer (the DAG names another server active). */
int store_client_mail_deliver_ack(store_client *c, const char *db, const store_mail_new *m,
                                  store_mail_ack *ack);
/* folder NULL: every folder -> the array of {"id", "folder", "time", "size", "subject"}. */
int store_client_mail_list(store_client *c, const char *db, const char *mailbox, const char *folder,
                           json_t **messages);
/* -> *body (malloc'd, the caller frees it) of *size bytes, exactly as delivered, and *info
 * {"id", "folder", "time", "size", "subject"} (info may be NULL). */
int store_client_mail_get(store_client *c, const char *db, const char *mailbox, uint64_t id,
                          json_t **info, uint8_t **body, size_t *size);
int store_client_mail_delete(store_client *c, const char *db, const char *mailbox, uint64_t id);
/* -> one hash (32 hex digits) of every mailbox's contents: equal exactly when the mail is. */
int store_client_mail_digest(store_client *c, const char *db, char digest[33]);

/* What a load delivers (the store runs store_mail_load): generated messages, the same for the
 * same arguments. */
typedef struct store_client_load {
    uint32_t mailboxes; /* spread over user00000 ... */
    uint64_t messages;
    uint64_t size; /* of each body */
    uint64_t seed;
} store_client_load;
/* Called with the messages delivered so far, as the store reports them. */
typedef void (*store_client_progress)(void *arg, uint64_t done, uint64_t total);
/* Delivers them, durable when it returns -> {"messages", "seconds", "rate"} (result may be
 * NULL); progress (may be NULL) is called as the store reports. */
int store_client_mail_load(store_client *c, const char *db, const store_client_load *l,
                           store_client_progress progress, void *arg, json_t **result);

#endif
