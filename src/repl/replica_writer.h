/* The replica writer: the passive copies this server holds, offered for backup (spec §8;
 * docs/design.md, "The replica writer"). ombra-repld starts it; it registers with the server's
 * ombra-vssd through the writer SDK (vss/writer.h) and again whenever the coordinator comes back.
 *
 * Components: one per passive copy whose copier says Healthy when the coordinator asks
 * (Identify, at each session's gather), `Replica\<server>\<database id>` with the copy's .edb,
 * and its subcomponent `...\<id>\Logs` with the copy's generations and checkpoint. Types: full,
 * copy, incremental, differential. It can hold its files (the held provider): a replay is the
 * only writer of the .edb and checkpoint, and finished generations never change.
 *
 * Per copy it keeps, in memory only, which session is backing it up and the copy lock
 * (reseed.h) it holds for it. A copy named twice (or with its Logs) is handled once; its Logs
 * alone are refused at PrepareBackup.
 *   PrepareBackup    refuse a copy this server does not hold (-1203), one whose copier is not
 *                    Healthy (-1091, saying its state), one another session backs up (-505);
 *                    then ask the active (ask_active, "prepare"): whether the type may be taken
 *                    (-526, -560, -546 as for the active), the header's slots, and the
 *                    generation it closes now, which the backup will hold at least
 *   Freeze           take the copy lock (waiting at most 5 s for a replay or a seed read in
 *                    progress): the copier replays nothing while it is held, so the copy stays
 *                    at the generation boundary of its last replay; copying and inspecting go
 *                    on, the replay queue grows. Then wait (at most 10 s) until the copy has
 *                    inspected the generation the active closed at prepare
 *   Thaw             release it (replay catches up), unless the session holds (args.hold of
 *                    Freeze: the held provider's hard links are the .edb itself): then at
 *                    BackupShutdown or Abort
 *   PostSnapshot     the backup metadata, the store writer's shape: the copy's header as
 *                    frozen (signatures, Log Required), its checkpoint, the log range, the
 *                    mark (the active's time at prepare), the generation replayed
 *   BackupComplete   asks the active to record each succeeded copy's backup (a log record
 *                    that reaches every copy by replay); the active unreachable or refusing:
 *                    fails (retryable), nothing recorded, nothing truncated
 *   BackupShutdown   for each recorded full or incremental backup the requester says it
 *                    stored: asks the active to truncate (below min(checkpoint at freeze,
 *                    last generation held)); then as Abort
 *   Abort            release the copy lock, forget the session
 *   PreRestore       refused: a restore goes to the active's database (the store's writer)
 * A session naming several copies (ombra backup --all --from passive) prepares and freezes them
 * at once, and a copy whose PrepareBackup or Freeze fails is left out alone: the later events
 * skip it, PostSnapshot gives {"error", "code"} for it instead of its metadata, and the event
 * fails only when every copy failed (docs/design.md, "backup --all in a DAG").
 * An ombra-repld restart loses every backup in progress (the coordinator fails those sessions;
 * the lock is the process's: it goes with it). */
#ifndef OM_REPL_REPLICA_WRITER_H
#define OM_REPL_REPLICA_WRITER_H

#include <jansson.h>
#include <stdint.h>

/* One passive copy, as its copier knows it. */
typedef struct rp_replica {
    char db_id[40];
    char name[80]; /* the database's name ("" until the copier read its records) */
    char base[4];
    char state[16]; /* the copier's state: "Healthy", "Suspended", ... */
    uint32_t inspected, replayed;
    /* The copy's files when they are not in copies/<db id>/ (a deposed active's, replayed in
     * place: "Resync after a change of active"); "" for the copy folder. */
    char edb[4200], logs[4200];
} rp_replica;

/* Fills out with up to max of the passive copies this server holds; returns how many. Called
 * from the writer's event threads: must be thread-safe. */
typedef int (*rp_replica_list_fn)(void *ctx, rp_replica *out, int max);
/* Sends req (stolen; the replication protocol's "backup" request without db and name: wire.h)
 * about database db_id (named db_name) to the server of its active copy, and returns its reply
 * (or its error, with the detail naming that server). Thread-safe. */
typedef int (*rp_ask_active_fn)(void *ctx, const char *db_id, const char *db_name, json_t *req,
                                json_t **reply);

typedef struct rp_replica_writer_cfg {
    const char *server;      /* this server */
    const char *data_dir;    /* $OMBRA_HOME: copies/<db id> */
    const char *vss_socket;  /* NULL: <runtime>/vss.sock */
    rp_replica_list_fn list; /* the copies, and its ctx */
    rp_ask_active_fn ask_active;
    void *ctx;
    uint32_t replay_queue_limit; /* PrepareBackup refuses a copy further behind in replay */
} rp_replica_writer_cfg;

/* The default of --backup-replay-queue: a copy more generations behind in replay than this is
 * not backed up (its backup would hold what the active had long ago, and its replay, held by
 * the backup, would fall further behind). */
#define RP_BACKUP_REPLAY_QUEUE 12

typedef struct rp_replica_writer rp_replica_writer;

/* Starts the writer (it connects to ombra-vssd in the background: vss_writer_start). */
int rp_replica_writer_start(const rp_replica_writer_cfg *cfg, rp_replica_writer **out);
/* Aborts its open sessions (copy locks released) and frees w (NULL: nothing). Before the
 * copiers' list goes away. */
void rp_replica_writer_stop(rp_replica_writer *w);

#endif
