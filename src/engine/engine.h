/* The Ombra engine: a write-ahead-logged page store in the manner of ESE.
 *
 * One database is one `.edb` file of 32 KiB pages plus a log stream in a log folder: 1 MiB
 * generations named by a three-character base name (E00.log current, E00XXXXXXXX.log
 * finished, E00tmp.log prepared next, E00res0000N.jrs reserves) and a checkpoint E00.chk.
 * The formats are in eng_format.h; docs/design.md says why they are as they are.
 *
 * Contract:
 * - A transaction is begun by one writer at a time per database (eng_txn_begin waits for the
 *   previous writer). Its changes go to private copies of the pages; readers (eng_page_read)
 *   see only committed pages, never a half-applied transaction.
 * - eng_txn_commit returns 0 only once the transaction's log records are durable (unless
 *   ENG_COMMIT_LAZY; then a later durable commit or eng_log_flush makes it durable). Several
 *   committers waiting at once share one fsync (group commit).
 * - No page reaches the .edb before the log that changed it is durable, and pages are written
 *   to the .edb only when the checkpoint advances: flush pages -> sync -> header -> checkpoint.
 * - A failed write or fsync is sticky: every later change is refused with FatalIO until the
 *   database is closed and opened again (which runs recovery).
 * - eng_db_open recovers a database in Dirty Shutdown (soft recovery: replay from the
 *   checkpoint to the end of the log) before it mounts it.
 * All functions return 0 or an error from base/errors.def with a detail (om_err_detail()). */
#ifndef OM_ENGINE_H
#define OM_ENGINE_H

#include <stdint.h>

#include "base/uuid.h"
#include "base/vfs.h"
#include "engine/types.h"

typedef struct eng_db eng_db;
typedef struct eng_txn eng_txn;

typedef struct eng_opts {
    om_vfs *vfs;          /* NULL: the real filesystem */
    const char *edb_path; /* the .edb file */
    const char *log_dir;  /* the folder of the logs and the checkpoint */
    const char *base;     /* three characters, "E00" when NULL */
    int circular_logging; /* delete logs below the checkpoint as it advances (applies at
                             create and at every open) */
    uint64_t
        cache_bytes; /* committed dirty pages kept before a checkpoint is forced; 0 = 256 MiB */
    uint32_t checkpoint_gens; /* advance the checkpoint every this many generations; 0 = 32 */
    int no_reserve_logs;      /* tests: skip creating the two 1 MiB reserve logs */
    /* Recovery calls this after each generation it replays: `gen` done, of first..last. */
    void (*replay_progress)(void *arg, uint32_t gen, uint32_t first, uint32_t last);
    void *progress_arg;
} eng_opts;

/* What the header says and where the log stands; see eng_db_info. */
typedef struct eng_info {
    om_uuid db_id;
    uint32_t state;
    uint64_t dbtime;
    uint32_t pages;       /* data pages in the database */
    eng_lgpos checkpoint; /* replay would start here */
    uint32_t gen_current; /* generation of E00.log */
    uint32_t gen_oldest;  /* oldest generation on disk */
    eng_bkslot slots[ENG_BK_NSLOTS];
    int log_disk_full; /* writes refused until space returns */
    int fatal;         /* a write or fsync failed: refusing writes */
    /* Truncation (eng_db_set_truncate_floor): circular logging or a stored backup allow deleting
     * the generations below truncate_point (never past the checkpoint's); the floor of passive
     * copies in force keeps those from truncate_floor on (0: none). Both 0 from eng_db_inspect. */
    uint32_t truncate_point, truncate_floor;
} eng_info;

/* Counters for tests and benchmarks. */
typedef struct eng_stats {
    uint64_t commits, log_flushes, log_bytes, log_slots_written;
    uint64_t replay_bytes, replay_records, replay_ns, replay_groups;
    uint64_t pages_flushed, checkpoints, page_images;
    uint64_t pages_spilled; /* dirty pages written to the hold file while page writes were held */
    uint64_t cache_pages;   /* pages in the cache now */
} eng_stats;

/* The cache's size in bytes (eng_opts.cache_bytes, its default applied); the pages it holds now
 * (any thread). */
uint64_t eng_cache_size(eng_db *db);
uint64_t eng_cache_pages(eng_db *db);

/* Creates a new database (fails with DatabaseDuplicate if the .edb exists, or if the log
 * folder already holds logs of the base name) and leaves it open. */
int eng_db_create(const eng_opts *o, eng_db **out);
/* Opens (mounts) a database; runs soft recovery first when it is in Dirty Shutdown, or in Clean
 * Shutdown with generations of its stream after the one it is consistent in (logged by another
 * copy that went on from there: they are replayed, as the mount continues the stream after
 * them). */
int eng_db_open(const eng_opts *o, eng_db **out);
/* Clean shutdown: flushes everything, header to Clean Shutdown, frees db. If the database
 * hit a fatal error it is freed without writing and FatalIO is returned. */
int eng_db_close(eng_db *db);
/* eng_db_close, and then the last generation is closed: E00.log renamed to its numbered name
 * and the log folder synced, no next generation started (*last_gen: the generation closed).
 * Every generation the database wrote is then a finished file that can be shipped (a
 * switchover: the passive copies get the whole stream before one of them mounts). The next
 * eng_db_open of these files, or of a passive copy that replayed them (eng_passive_*), starts
 * generation *last_gen + 1 of the same stream. On an error db is freed all the same; when the
 * clean shutdown was done and only the rename failed, E00.log is still there and the next open
 * works as after eng_db_close. */
int eng_db_close_gen(eng_db *db, uint32_t *last_gen);
/* Frees db without writing anything, as if the process died (tests, fatal paths). */
void eng_db_abandon(eng_db *db);

/* Soft recovery of a dismounted database from its logs, leaving it in Clean Shutdown. */
int eng_db_recover(const eng_opts *o, eng_stats *st);

/* Hard recovery after a restore (spec §6): replays restored logs into a restored .edb and leaves
 * it in Clean Shutdown, ready to mount with eng_db_open(&target) on the target's own log folder.
 *
 * The restored .edb is target.edb_path (the caller may rename it before or after; nothing in it
 * names its path). Its logs are the generations of `restored_base` in `restored_dir`, the
 * original database's stream (its log signature):
 * - Original database, logs restored into its own folder (restored_dir names the same folder as
 *   target.log_dir, and the bases are equal): the folder may also hold the generations the
 *   database wrote after the backup, which the engine cannot tell from the restored ones. With
 *   roll_forward, replay goes on to the end of the chain on disk; without it, stop_gen must
 *   name the backup's last generation (InvalidParameter otherwise).
 * - Any other target (another database, the recovery database, new paths): restored_dir is
 *   <target log dir>/_restoredLogs (or any folder) and holds only what was restored, so replay
 *   goes to the end of its chain (roll_forward changes nothing: the target's own logs are
 *   another stream and are never replayed into the restored database).
 * Replay starts at the beginning of the header's Log Required min generation (for a database in
 * Clean Shutdown: at its consistent position), never at a checkpoint file: the folder's E00.chk
 * may belong to a later state of the database. Pages already newer than a record are skipped,
 * so the part of that generation before the checkpoint costs time, not correctness.
 * Point in time: stop_gen applies no generation past it (a transaction that ends in the next one
 * is left out); stop_time_ns applies every transaction whose COMMIT time is <= it and stops at
 * the first later one. A point before the state the restored .edb already holds is refused
 * (InvalidParameter): the database cannot be taken back before it was copied.
 *
 * Afterwards the header is in Clean Shutdown and its log stream is the target's:
 * - Same folder, and replay reached the end of the chain: the stream goes on as after a soft
 *   recovery (the next mount starts the next generation).
 * - Same folder, stopped before the end (point in time, or no roll forward): the later
 *   generations belong to a future that was abandoned. The database starts a new stream (a
 *   new log signature, so they can never be replayed into it) at the generation after the last
 *   one on disk, and its backup slots are cleared: the next backup must be a full one.
 * - Another folder or base: when target.log_dir holds generations of target.base, the database
 *   adopts that stream (its signature; a new generation after its last one, chained to it);
 *   when it holds none, a new stream starts. Either way the target's old logs are never
 *   replayed (the checkpoint is past them) and the backup slots are cleared.
 * In every case the Current Full / Current Snapshot slots are cleared, the target's E00.chk is
 * rewritten, and its stale page journal and hold file are deleted. _restoredLogs and the
 * restored logs are left where they are (the caller's). Nothing is mounted.
 *
 * Logs still arriving: replay may start while a restore is still laying the logs down (each
 * generation written under a temporary name and renamed into place whole, in ascending order).
 * Generations arriving_first..arriving_last count as present although the folder may not hold
 * them yet (the plan checks the others as usual; the chain reaches at least arriving_last), and
 * none of them is read before wait_laid(arg, g) returned 0 for it or a later one: a file listed
 * under its name before that may be an old one about to be replaced. As replay checks each
 * generation against the next one's header, it waits for g + 1 before it reads g (the last one
 * waits for itself only). Generations are read ahead of replay: while generation g is replayed,
 * wait_laid may be asked for generations up to g + ENG_READ_AHEAD. An error of wait_laid ends
 * replay with that error and its detail; the database stays marked (below), and a rerun once every
 * log is in place (arriving or not) finishes the job.
 *
 * Restartable: once hard recovery first writes the database it marks the header (a flag
 * eng_db_open and eng_db_recover refuse with RestoreInProgress); a crash or failure leaves the
 * mark, and calling eng_db_hard_recover again with the same options finishes the job.
 *
 * Errors (with the file or generation in the detail): -528 MissingLogFile (a gap in the
 * generations to replay), -539 DatabaseLogSetMismatch (logs written for another database, or a
 * .edb of another base name), -530 BadLogSignature (logs of another stream of this database),
 * -543 RequiredLogFilesMissing (the logs do not start at or do not reach what the header
 * requires), -501 LogFileCorrupt (a damaged restored log, also one that ends before the next
 * generation says it did), -515 InvalidLogSequence (a broken chain). replay_progress of
 * target is called after each generation replayed. */
typedef struct eng_restore_opts {
    eng_opts target;           /* the restored .edb, and the folder/base it will run with */
    const char *restored_dir;  /* the folder holding the restored logs */
    const char *restored_base; /* their base name (the original database's, e.g. "E00") */
    int roll_forward;          /* same folder: go on with the later logs that continue the chain */
    uint32_t stop_gen;         /* 0: none; else replay no generation past this one */
    uint64_t stop_time_ns;     /* 0: none; else stop before the first transaction that committed
                                  after this time (ns since the epoch, as om_now_ns) */
    /* 0, 0: every restored log is in place. Else generations arriving_first..arriving_last of
     * restored_dir are still being laid down while replay runs: replay calls wait_laid before
     * it reads any of them. */
    uint32_t arriving_first, arriving_last;
    /* 0 once generations arriving_first..gen are whole and in place; an error (with a detail
     * that names gen) to give up. Called from the thread of eng_db_hard_recover or from its
     * read-ahead thread, one call at a time, gen ascending. */
    int (*wait_laid)(void *arg, uint32_t gen);
    void *wait_arg;
    /* The .edb was laid in this boot and put in place without a sync, which the requester is
     * running now (a restore's, store/store_writer.c): the recovery syncs nothing before its
     * end and replays the pages within the laid file last (eng_replay.defer_below), so that its
     * work goes on while the disk takes the file; its end syncs the whole file. A crash before
     * then leaves the restore to be run again (the .env's boot, dbutil recover). */
    int laid_unsynced;
    /* laid_unsynced: bytes of held-back records at most, whatever the cache (0: 256 MiB); past
     * it, or past a quarter of the cache, they are applied (their reads then wait on the disk). */
    uint64_t hold_max;
} eng_restore_opts;

/* Generations replay reads ahead of the one it applies (1 MiB of memory each). */
#define ENG_READ_AHEAD 4

typedef struct eng_restore_result {
    uint32_t first_gen, last_gen; /* generations replayed (0, 0: none) */
    uint64_t records, transactions, ns;
    int stopped_at_point; /* stop_gen / stop_time_ns ended replay before the logs did */
    char roll_end[300];   /* roll forward through the folder's later logs ended before them:
                             why ("generation 15 is missing", ...); "" otherwise */
    uint32_t stream_gen;  /* the generation the target's stream continues after (its next mount
                             starts the one after it) */
    int new_stream;       /* the database got a new log signature or adopted the target's */
    uint64_t held_back;   /* laid_unsynced: records of laid pages applied after the others */
    uint64_t held_peak;   /* laid_unsynced: the most bytes of records held back at once */
} eng_restore_result;

int eng_db_hard_recover(const eng_restore_opts *o, eng_restore_result *r);

/* Passive copies (spec §8): a copy of a database on another server that replays the active's
 * closed log generations as they arrive, is never mounted while passive, and can become the
 * active (a failover) with an ordinary eng_db_open.
 *
 * Seeding. The copy starts from the active's .edb copied while its page writes are held
 * (eng_hold_pages, as a full backup's shadow copy takes it: the held provider), so it is a
 * Dirty Shutdown snapshot whose header's Log Required min..max says where replay starts; the
 * active's E00.chk may be copied with it under the same hold (then replay starts at its
 * position), but never one taken at another moment, nor E00.pgj or E00.hold. Into the copy's log
 * folder go the active's generations from Log Required min on, one by one as each is closed,
 * under their own names (same base name): the files are the active's, byte for byte, so the copy
 * replays the active's log stream (its log signature). A .edb in Clean Shutdown (copied from a
 * dismounted active) works too: it needs the generations after its consistent one.
 *
 * eng_passive_open: o names the copy's .edb, log folder and base (cache_bytes bounds the pages
 *   replay keeps dirty before it writes them; replay_progress is called after each generation
 *   replayed). Opens and locks the .edb (DatabaseInUse when it is open elsewhere: another
 *   process, or this one through another handle, on a filesystem with locks), repairs pages a
 *   crash tore from the page journal, and checks the logs in the folder are this database's and
 *   this stream's (-539 DatabaseLogSetMismatch, -530 BadLogSignature, -513). Replays nothing.
 *   Refused: a database marked by an unfinished hard recovery (RestoreInProgress), one of another
 *   base name (-539), one that was created and never mounted (InvalidDatabase).
 * eng_passive_replay: replays the generations present in the folder, in order, from where the
 *   copy stands through upto_gen (0: through the last one present); none past the last present.
 *   Each generation is checked by the log-chain validator (log.h) before anything of it is
 *   applied: -528 MissingLogFile (a gap before upto_gen), -539, -530, -513, -515
 *   InvalidLogSequence (does not follow the generation before it), -501 LogFileCorrupt (damaged,
 *   or the next generation says the one before it ended later), -541, each with the generation
 *   in the detail. A refused generation leaves the copy as it was before it (the ones before it
 *   in the same call are replayed and durable); once a good copy of the file is in place, the
 *   next call goes on. A generation that ends with a flush cut short (torn_slot of
 *   eng_gen_info: a crash of the active, or damage at its end, which look the same) is replayed
 *   only once the next generation is there, whose header says where it really ended; until
 *   then replay stops before it, without an error. Transactions are applied at their COMMIT, as
 * soft recovery does: one whose COMMIT is in a generation not replayed yet is not in the copy (its
 * first records wait in memory, and are read again after a reopen). At the end of every call that
 * replayed something, the pages go to the .edb (page journal first), then the header (Dirty
 * Shutdown, Log Required = the resume position's generation .. the last generation replayed), then
 *   E00.chk (the resume position): a crash at any point leaves a copy that eng_passive_open
 *   and eng_passive_replay take on from the last durable position (pages already newer than a
 *   record skip it). A failed write, or a log record that does not apply (a damaged copy:
 *   -1119, -1018, -1206), stops the handle: every later call fails with that error, close writes
 *   nothing; a new eng_passive_open goes on from the last durable position (or the copy needs a
 *   reseed). st (may be NULL) gets the state after the call, also on failure.
 * eng_passive_state_get: the state (as eng_passive_replay gives it), without replaying.
 * eng_passive_close: frees p; everything replayed is durable already. The copy stays Dirty with
 *   its E00.chk at the resume position, so eng_passive_open goes on where it stopped, and
 *   eng_db_open (activation) soft-recovers it from the generations present (the ones not yet
 *   replayed included) and mounts it continuing the same log stream: same log signature, the
 *   next generation after the last one present, chained to it. Returns the error that stopped
 *   the handle, if one did.
 * eng_passive_abandon: frees p without writing anything, as if the process died (tests).
 * eng_passive_inspect: checks generation gen (its numbered file in the copy's log folder) as
 *   replay will, without replaying and without a handle (any thread, while replay runs): the
 *   size, the header and every segment's checksum, this database and this stream (the .edb's
 *   header), the generation its name says, and, when generation gen - 1 of this stream is in the
 *   folder, that it follows it and that gen - 1 is as long as gen says; when gen + 1 is there
 *   already, that gen is as long as gen + 1 says (damage at the end of gen looks like a flush
 *   cut short, torn_slot, until gen + 1 comes). The errors of replay,
 *   with the generation in the detail; *out (may be NULL) describes the file. For the
 *   replication service, before it acknowledges a copied generation (replay may lag behind).
 * One thread at a time per handle. */
typedef struct eng_passive eng_passive;

typedef struct eng_passive_state {
    om_uuid db_id;
    eng_sig db_sig;         /* the database's signature */
    eng_sig log_sig;        /* the log stream it replays: the active's */
    uint32_t next_gen;      /* the generation replay needs next: last_replayed + 1 */
    uint32_t last_replayed; /* every transaction committed in this generation or an earlier
                               one is in the copy (durable) */
    eng_lgpos checkpoint;   /* durable resume position: after a crash or a reopen, replay
                               starts here, so the copy needs the generations from its
                               generation on (truncation may delete the ones before) */
    uint32_t last_present;  /* newest generation in the log folder (0: none) */
    uint64_t dbtime;        /* of the last change applied */
    uint32_t generations;   /* replayed through this handle (a generation read again after a
                               refusal or a reopen counts again) */
    uint64_t bytes, ns;     /* log bytes replayed through this handle, and the time it took */
} eng_passive_state;

/* A generation file as eng_passive_inspect found it. */
typedef struct eng_gen_info {
    uint32_t gen;
    uint64_t created, prev_created; /* its creation time, and its predecessor's */
    uint32_t len;                   /* bytes of record stream */
    uint32_t prev_end;              /* its predecessor's length, as it says */
    int prev_checked;               /* generation gen - 1 was in the folder and was checked */
    uint32_t torn_slot;             /* it ends with a flush cut short at this slot (0: no) */
    eng_sig log_sig, db_sig;
} eng_gen_info;

int eng_passive_open(const eng_opts *o, eng_passive **out);
int eng_passive_replay(eng_passive *p, uint32_t upto_gen, eng_passive_state *st);
int eng_passive_state_get(eng_passive *p, eng_passive_state *st);
int eng_passive_close(eng_passive *p);
void eng_passive_abandon(eng_passive *p);
int eng_passive_inspect(const eng_opts *o, uint32_t gen, eng_gen_info *out);

/* The names a restore writes in <log dir>/_restoredLogs for restored logs of base (see
 * store/writer.h): its generations <base>XXXXXXXX.log, <base>restore.env, <base>restore.laid,
 * and the temporary names of the durable-file helper (base/vfs.h). 1 when name is one. */
int eng_restored_name(const char *name, const char *base);
/* A restore's folder leaves the critical path in two steps (docs/design.md, "Restore"):
 * eng_restored_retire checks <logs>/_restoredLogs holds only the names eng_restored_name allows
 * (a name of anything else: InvalidParameter naming it, and the folder stays), then renames it
 * to a retired name unique to the call, ENG_RETIRED_PREFIX + 16 random hex digits (a name no
 * log or other file of the store can have), and syncs logs: from then on no restore is pending
 * there. *retired gets that name ("" when there was no _restoredLogs, which is fine); n at least
 * ENG_RETIRED_NAME_MAX. Never through a link: a link at _restoredLogs is refused.
 * eng_retired_remove removes a retired folder afterwards (at any time, from any thread): only
 * the names a restore writes (of any base; a link among them goes as a name, never what it
 * points to), then the folder; a folder already gone is fine; a name of anything else stays with
 * the folder (InvalidParameter naming it), as does a retired name that is no folder (a link)
 * or a folder that is not the caller's own (OM_D_OWN: FileAccessDenied).
 * eng_retired_sweep does that for every retired folder in ld (a crash or a killed store left
 * them), each failure a warning in the log; *removed (may be NULL) counts the ones removed.
 * eng_restored_remove is retire then remove (a failure of the removal only a warning). */
#define ENG_RETIRED_PREFIX   "_retiredLogs."
#define ENG_RETIRED_NAME_MAX 32
int eng_restored_retire(om_vfs *v, const char *logs, const char *base, char *retired, size_t n);
int eng_retired_name(const char *name);
int eng_retired_remove(om_vfs *v, const char *logs, const char *retired);
int eng_retired_sweep(om_dir *ld, int *removed);
int eng_restored_remove(om_vfs *v, const char *logs, const char *base);
/* Syncs every generation of base in dir (the restored logs a restore laid down without a sync
 * each, for its own replay), then dir: before a replay that is not the restore's own takes
 * them (dbutil recover, in the boot that laid them). A name that is a link or no regular file
 * is refused, as every open of the vfs refuses it. */
int eng_restored_sync(om_vfs *v, const char *dir, const char *base);

/* Transactions. eng_txn_begin waits for the database's previous writer to finish. */
enum { ENG_COMMIT_LAZY = 1 };
int eng_txn_begin(eng_db *db, eng_txn **out);
/* A new zero-filled page owned by objid, at the end of the database. */
int eng_page_alloc(eng_txn *t, uint32_t objid, uint32_t *pgno);
/* Changes len bytes at offset off of the page body (0 <= off, off + len <= ENG_PAGE_BODY). */
int eng_page_write(eng_txn *t, uint32_t pgno, uint32_t off, const void *data, uint32_t len);
/* The page body as this transaction sees it (its own changes included). */
int eng_txn_page_read(eng_txn *t, uint32_t pgno, void *body);
/* Commits and frees t. On failure the transaction is rolled back. */
int eng_txn_commit(eng_txn *t, unsigned flags);
/* Discards every change of t and frees it. */
void eng_txn_rollback(eng_txn *t);

/* Committed body of a page (ENG_PAGE_BODY bytes). */
int eng_page_read(eng_db *db, uint32_t pgno, void *body);
/* Object id of a committed page (0 for a free page). */
int eng_page_objid(eng_db *db, uint32_t pgno, uint32_t *objid);

/* Makes every commit so far durable (for lazy commits). */
int eng_log_flush(eng_db *db);
/* Where the durable log ends now: every commit that returned before this call is before it
 * (the store's --sync-copies waits until copies hold the log up to there). */
eng_lgpos eng_log_durable_end(eng_db *db);
/* Flushes the dirty pages and advances the checkpoint to the end of the log. */
int eng_checkpoint(eng_db *db);
int eng_db_info(eng_db *db, eng_info *info);
/* Checks the invariants written at the top of src/engine/db_internal.h on an open database,
 * the page checksums of the clean cached pages included: 0, or Internal with the first broken
 * one in the detail. Takes the writer role (waits for a running transaction, and for a thaw).
 * For tests; debug builds also check them at the points that header names, and abort. */
int eng_db_check_invariants(eng_db *db);
void eng_db_stats(eng_db *db, eng_stats *st);
/* What eng_db_info says, for a database that is not open: from its header, checkpoint file
 * and log folder, without mounting or changing anything. */
int eng_db_inspect(const eng_opts *o, eng_info *info);

/* Backup hooks for the writer.
 * eng_backup_freeze: logs a backup record, makes it durable and rolls to a new generation;
 *   *mark is the record's position, *last_gen the generation it closed. Until
 *   eng_backup_thaw, new transactions wait (writes to the .edb and the logs are held).
 * eng_backup_mark + eng_backup_hold_writes: the same in two steps, for a writer that freezes
 *   many databases at once: the record and the roll (a few fsyncs) first, transactions still
 *   going on (those after the roll go to the new generation, after the mark); then the hold,
 *   which does no I/O, so that every database's writes are held for about the same short
 *   span; *current_gen is the generation being written when the hold began (every one below
 *   it is finished) and *written the bytes of its file written so far: they stay as they are
 *   (slots are never rewritten) and the rest of the file is zeros until writes resume.
 *   Thawed by eng_backup_thaw.
 * eng_hold_pages: the .edb does not change at all (content or size) until eng_release_pages:
 *   the checkpoint does not advance, and dirty pages stay in memory up to the cache budget
 *   (eng_opts.cache_bytes); past it the oldest go to a side file <log_dir>/<base>.hold (read
 *   back from there when needed; eng_stats.pages_spilled counts them). Pages allocated while
 *   held grow the file only at the release (the room is checked at allocation: DiskFull).
 *   Holds nest. Call it before eng_backup_freeze (it needs the writer role, which a freeze
 *   keeps shut until the thaw).
 * eng_release_pages: ends one hold; at the last one, when pages were spilled (or a header
 *   write waits), a checkpoint writes them to the .edb (page journal first) and deletes the
 *   side file. After a crash while held the side file is garbage: the next open deletes it and
 *   recovery replays the log as usual.
 * eng_truncate_logs: deletes finished generations below `below` (never at or above the
 *   checkpoint's generation, nor the floor of eng_db_set_truncate_floor); *deleted counts them.
 *   What the floor holds back is remembered (until the database closes) and deleted once the
 *   floor rises or lapses.
 * eng_record_backup: writes a backup slot through a log record, then into the header;
 *   recording Previous Full clears Previous Incremental and Previous Differential. While pages
 *   are held the header is written at the release instead (the log record is durable, and
 *   eng_db_info shows the slot at once). */
/* Change tracking (changemap.c; docs/design.md "Change tracking and synthetic fulls"). A freeze
 * of kind full begins an epoch; the map knows, per epoch, every page written to the .edb since
 * (a superset). eng_db_change_epochs lists the epochs the map can vouch for, oldest first (none
 * when it is not trusted: *why says why; the newest is the last full freeze's);
 * eng_db_changed_pages gives the pages written since epoch as runs (first page, count) in
 * *runs (2 * *nruns numbers, malloc'd), or ObjectNotFound when the map does not know it. */
typedef struct eng_change_epoch {
    uint64_t id, dbtime, time;
} eng_change_epoch;
int eng_db_change_epochs(eng_db *db, eng_change_epoch *v, uint32_t cap, uint32_t *n, char *why,
                         size_t wn);
int eng_db_changed_pages(eng_db *db, uint64_t epoch, uint32_t **runs, uint32_t *nruns);
int eng_backup_freeze(eng_db *db, uint32_t kind, eng_lgpos *mark, uint32_t *last_gen);
int eng_backup_mark(eng_db *db, uint32_t kind, eng_lgpos *mark, uint32_t *last_gen);
int eng_backup_hold_writes(eng_db *db, uint32_t *current_gen, uint32_t *written);
int eng_backup_thaw(eng_db *db);
int eng_hold_pages(eng_db *db);
int eng_release_pages(eng_db *db);
int eng_truncate_logs(eng_db *db, uint32_t below, uint32_t *deleted);
/* The floor of log truncation that passive copies set (spec §8, through the replication
 * service): no generation at or above gen is deleted, by circular logging or by
 * eng_truncate_logs, until om_mono_ns() reaches until_ns; then the floor lapses (a warning
 * says so) and truncation goes on as if no copy needed the logs: whoever sets it renews it.
 * gen 0 lifts it; gen 1 keeps every generation. Whatever it no longer holds back (circular
 * logging below the checkpoint, a stored backup's generations) is deleted at once; *deleted
 * (may be NULL) counts them. The floor lives in memory: a database mounts without one.
 * Takes the writer role (waits for a running transaction, and for a thaw). */
int eng_db_set_truncate_floor(eng_db *db, uint32_t gen, uint64_t until_ns, uint32_t *deleted);
int eng_record_backup(eng_db *db, enum eng_bkslot_id slot, const eng_bkslot *s);
/* Rolls to a new log generation now. */
int eng_db_roll_log(eng_db *db);

#endif
