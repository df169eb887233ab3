/* The store's writer: Exchange's writer semantics for Ombra databases, on the writer SDK
 * (vss/writer.h), registered with ombra-vssd at store start and again whenever the coordinator
 * comes back.
 *
 * Components: one per mounted database (recovery databases and dismounted ones are left out),
 * `Ombra Store\<server>\<database id>` with the .edb, and its subcomponent `...\<id>\Logs` with
 * the logs and the checkpoint. Types: full, copy, incremental, differential. It can hold its
 * files (the held provider): the .edb's page writes are held from Freeze until the session
 * ends, and finished generations never change.
 *
 * Per database it keeps, in memory only, which session is backing it up. A database an event
 * names twice (or with its Logs) is handled once; its Logs alone are refused at PrepareBackup
 * (-1003: a backup selects whole databases, spec §5).
 *   PrepareBackup    refuse another session's database (-505), incremental or differential
 *                    without a previous full (-560) or under circular logging (-526), a
 *                    differential after an incremental truncated its logs (-521); mark it
 *   PrepareSnapshot  checkpoint (flush pages): the backup needs few logs, the freeze is short
 *   Freeze           backup record, roll to a new generation, writers held; with hold, page
 *                    writes to the .edb are held too; a database this session froze already
 *                    is left as it is (never a wait for its own hold)
 *   Thaw             writers go on (page writes stay held with hold)
 *   PostSnapshot     the backup metadata: log range for the type, signatures, checkpoint
 *   BackupComplete   succeeded components only: write the type's slot (Previous Full,
 *                    Incremental, Copy, Differential), truncating nothing yet; a full backup of
 *                    a database dismounted meanwhile is recorded as a copy; a succeeded
 *                    component this writer has no backup of in the session (the store
 *                    restarted: its shadow copy was not held) fails the event
 *                    (-9124 ShadowCopyInvalid)
 *   BackupShutdown   for a recorded full or incremental backup of a component in args.stored
 *                    (the requester stored the backup for good), truncate below min(checkpoint
 *                    at freeze, last copied generation); then as Abort
 *   Abort            thaw, release held pages, forget the backup; nothing truncated
 *
 * Restore (restore_options: target NAME, target_id ID, recovery, mount, roll_forward, stop_gen,
 * stop_time_ns, logs_arriving [FIRST, LAST], laid_range [FIRST, LAST], logs_unsynced; new_target:
 * {edb, logs} for new paths):
 *   PreRestore   the target exists, is dismounted and allows restore, and has the id the
 *                requester expects (unless the recovery database or new paths), and no other
 *                session restores it (-506); logs go to its log folder (the original) or
 *                <logs>/_restoredLogs; <logs>/_restoredLogs (made by the store, never through a
 *                link, its own: one already there is taken only when its .env says it is an
 *                unfinished restore of this target, whose names then go) holds
 *                <base>restore.env and marks the target as not restored until PostRestore; for
 *                new paths an existing file at the .edb path is refused unless it is such a
 *                leftover; the result says where the .edb goes (the target's own .edb path),
 *                where the logs go, their base name, whether the .edb and the logs may replace
 *                a file there (replace_edb: the target's own .edb; replace_logs: the original's
 *                own generations), whether the generations may be laid without a sync each
 *                (logs_unsynced: asked for, into _restoredLogs, with logs_arriving and no
 *                additional restores, continuing no earlier restore; the .env then names this
 *                boot, and dbutil recover takes them only in it), and names the progress file
 *                <logs>/_restoredLogs/<base>restore.laid, made empty (vss_laid_create);
 *                mounting it is refused until the session ends (PostRestore, or the Abort of a
 *                failed restore)
 *   PostRestore  unless additional restores follow: hard recovery (eng_db_hard_recover: replay,
 *                roll forward, point in time), Clean Shutdown, _restoredLogs retired (its
 *                names checked, then renamed to _retiredLogs.<16 hex> and the log folder
 *                synced: eng_restored_retire), mount when asked; the retired folder's names go
 *                on a thread after the answer (a failure a warning; the next PreRestore into
 *                that log folder removes what a crash left: eng_retired_sweep).
 *                With logs_arriving the requester is still laying generations FIRST..LAST down
 *                (the .edb and the first one are in place): replay reads each one only once
 *                the progress file says it is laid (vss/laid.h: the protocol, which the
 *                requester links too); a generation the requester stopped before fails the
 *                restore with -528 MissingLogFile; the target stays unmountable (-506) until a
 *                restore of it succeeds.
 * A store restart loses every backup in progress (the coordinator fails those sessions). */
#ifndef OM_STORE_WRITER_H
#define OM_STORE_WRITER_H

#include <jansson.h>

#include "engine/engine.h"
#include "store/registry.h"

typedef struct store_writer store_writer;

/* Starts the writer of the registry's databases (it connects to ombra-vssd, <runtime>/vss.sock,
 * in the background) and subscribes to the registry's "database closing": a database dismounted
 * during its backup thaws and releases its holds, and the backup is completed as a copy. */
int store_writer_start(store_registry *r, store_writer **out);
/* Aborts the open sessions (holds released), unsubscribes and frees w (NULL: nothing). */
void store_writer_stop(store_writer *w);
/* 1 while the database with this id is in a backup session, from its PrepareBackup until
 * BackupComplete or the session's abort (also when the requester dies: the coordinator aborts);
 * session (40 bytes) gets the session's id. Meanwhile the administrative actions that would
 * change what is being backed up are refused (spec §5): dismount, delete, moving its files,
 * circular logging, allowing restores. */
int store_writer_backing_up(store_writer *w, const om_uuid *db_id, char session[40]);
/* 1 while a restore session has this database as its target (mounting it is refused). */
int store_writer_restoring(store_writer *w, const char *name);
/* The restores in progress, for the status request: a new array of {"session", "target" (the
 * database's name, or the .edb path of new paths), and once hard recovery has replayed a
 * generation "replay": {"gen" (the last one replayed), "first_gen", "last_gen" (the ones it
 * replays)}}; the requester of a session draws its replay progress from it. NULL: out of
 * memory. */
json_t *store_writer_restores(store_writer *w);

#endif
