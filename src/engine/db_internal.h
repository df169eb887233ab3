/* Internals shared by the engine's files: the database object, its page cache and the
 * writer role. Not for use outside src/engine.
 *
 * The files, top to bottom; each calls only files below it, and files on one line never call
 * each other (scripts/check-layers checks it; docs/design.md draws it):
 *   hard_recovery | passive       hard recovery after a restore | replay into a passive copy
 *   db                            open, create, close, soft recovery of a dismounted database, info
 *   table > btree > space         tables, the B+tree, where the trees' pages come from
 *   txn | recovery | backup_hooks transactions and reads | replay | freeze, hold, truncate, slots
 *   checkpoint                    pages to the .edb, header, E00.chk
 *   changemap                     pages written since each full's freeze, E00.cbt
 *   invariants                    the checks below, at run time
 *   role                          writer role, fatal state, groups logged outside a transaction
 *   journal > cache > hold        torn-page journal, page cache, hold file
 *   log | logread | logdir        log writer, generation reader, log folders (log.h)
 *   format                        on-disk layouts (format.h)
 *
 * Page cache invariants (checked in debug builds, ENG_CHECK below: after every commit for the
 * pages it published and the counters; every frame after a checkpoint, a recovery, the
 * release of held pages, a mount and before a close; the write-ahead rule before pages reach
 * the .edb):
 * - A frame holds the committed image of one page. Only a commit (holding the writer role
 *   and `plock` for writing) changes a frame's content, by swapping in the transaction's
 *   private copy; readers copy out under `plock` for reading, so they see a page before or
 *   after a commit, never during it, and every page of one commit changes at once.
 *   (Checked: each frame is alone in its page's bucket, loaded whole, its header names its
 *   page, no newer than the database, within its page count; a clean one carries its
 *   checksum.)
 * - A dirty frame is written to the .edb only by a checkpoint, after the log is durable past
 *   the frame's lsn (write-ahead), and after a copy of it is durable in the page journal
 *   (journal.c), so a page torn by a crash during the write can be restored. Dirty frames
 *   are never evicted, except while page writes are held (eng_hold_pages): then the oldest
 *   dirty frames may go to the hold file (hold.c) instead, and the committed image of a page
 *   is, in this order, its frame, its latest copy in the hold file, its place in the .edb.
 *   (Checked: the dirty and frame counters; no dirty frame past the durable log at a flush;
 *   none left after a checkpoint; a frame read from the hold file is still in its index; no
 *   hold file once page writes are no longer held.)
 * - The hold file's index changes only under the writer role, plock for writing and cmu;
 *   eng_cache_get reads it under cmu. (Checked: its count, its load, every offset a whole
 *   page inside the file.)
 * - Frames are freed only under the writer role and plock for writing (a writer reads frames
 *   without plock): clean ones by eng_cache_trim after a commit, or by a reader past the
 *   cache's size that could take both at once (trim_after_read in txn.c). (Checked: the
 *   writer role is held at every check point after mount.)
 * Lock order: writer role -> plock -> cmu. */
#ifndef OM_ENGINE_DB_INTERNAL_H
#define OM_ENGINE_DB_INTERNAL_H

#include <pthread.h>

#include "engine/engine.h"
#include "engine/format.h"
#include "engine/log.h"
#include "engine/table.h"

typedef struct frame {
    uint32_t pgno;
    uint8_t *page; /* ENG_PAGE_SIZE, page header included */
    uint64_t lsn;  /* LSN past the last group that changed it */
    uint8_t dirty;
    uint8_t status;    /* enum eng_page_status as loaded (replay needs it) */
    uint8_t from_hold; /* clean but newer than the .edb: equal to its copy in the hold file */
    uint8_t blank;     /* replay: past the end of the .edb, so zeros, but not yet written: the
                          first image applied to it writes every byte (eng_cache_get_owned) */
    uint8_t rebuilt;   /* replay: of the records a rerun after a crash would replay for this
                          page (from the start of the generation of the last recovery
                          checkpoint's position), the first is an image: a rerun rebuilds a torn
                          write of it, so it needs no page journal copy (checkpoint.c) */
    uint32_t met_gen;  /* replay: the generation of the last record met for it since the last
                          recovery checkpoint (0: none) */
    struct frame *next;
} frame;

/* Dirty pages spilled while page writes are held (hold.c): <log dir>/<base>.hold, sealed
 * pages appended, and in memory an index page number -> offset of the page's latest copy. */
typedef struct hold_file {
    om_file *f;
    uint64_t end;   /* bytes appended */
    uint32_t *keys; /* open addressing, 0 = empty slot */
    uint64_t *offs;
    uint32_t cap, count;
    int failed; /* a write to it failed: dirty pages stay in memory until the release */
} hold_file;

struct eng_db {
    om_vfs *vfs;
    char edb[4096], logdir[4096], base[4], chk[4200], holdp[4200];
    uint64_t cache_bytes;
    uint32_t checkpoint_gens;
    void (*replay_progress)(void *arg, uint32_t gen, uint32_t first, uint32_t last);
    void *progress_arg;
    int no_reserve;
    om_file *edbf;
    eng_dbhdr hdr; /* in-memory header; changed under the writer role */
    eng_log *log;  /* NULL while recovering */

    /* Writer role: one transaction, checkpoint or backup hook at a time. */
    pthread_mutex_t wmu;
    pthread_cond_t wcond;
    int writer_active, frozen, hold;
    int hdr_deferred; /* a header write waits for the release of held pages */

    pthread_rwlock_t plock;
    uint64_t published; /* transactions published (changed under plock held for writing, so a
                           view reads it unchanged while it lasts: eng_view_epoch) */
    pthread_mutex_t cmu;
    /* Page buffers of frames and transactions (eng_pagebuf_get): one reservation of the cache's
     * size, carved in order and then reused; pbmu is taken with no other lock needed inside. */
    pthread_mutex_t pbmu;
    uint8_t *pb_base;
    size_t pb_len;
    uint32_t pb_cap, pb_used, pb_nfree;
    uint8_t **pb_free;
    frame **htab;
    uint32_t hsize, nframes, ndirty;

    uint64_t dbtime, txn_last; /* under the writer role */
    uint32_t pages;            /* committed page count */
    uint64_t file_pages;       /* pages the .edb file has room for */
    uint64_t grow_to;          /* pages allocated while held: the .edb grows at the release */
    hold_file hf;              /* pages spilled while held */
    eng_lgpos ckpt;
    int fatal;    /* sticky: FatalIO once a write failed */
    int unsynced; /* replay wrote pages to the .edb that no sync has covered yet */
    eng_stats st;

    /* Log truncation (checkpoint.c, eng_trunc_apply), under the writer role: what a stored
     * backup allows (trunc_backup), and the floor passive copies set (eng_db_set_truncate_floor):
     * generations from trunc_floor on stay until om_mono_ns() passes trunc_floor_until. */
    uint32_t trunc_backup, trunc_floor;
    uint64_t trunc_floor_until;

    /* The change map (changemap.c), under the writer role; NULL: this open keeps none (hard
     * recovery, a passive copy, a recovery without mount), and writes clear the header's token. */
    struct eng_cbt *cbt;
};

/* ---- the layers, bottom up: each file calls only the files below it (docs/design.md) ---- */

/* The hold file (hold.c): the file and its index, nothing else.
 * eng_hold_lookup / eng_hold_read: whether a page has a copy there, and reading it (under cmu).
 * eng_hold_append: writes a sealed page at the end of the file (opened on first use); *off is
 *   where. eng_hold_index_set then points the page's entry at it (caller holds plock for writing
 *   and cmu, and the writer role).
 * eng_hold_list: the page numbers the index holds, sorted (malloc'd).
 * eng_hold_index_clear: forgets the index (writer role, plock for writing, cmu).
 * eng_hold_remove_file: closes and deletes the file (after the write-back).
 * eng_hold_free: closes the file and frees the index, leaving the file (eng_db_abandon).
 * eng_hold_remove_stale: deletes a hold file a dead process left behind (at open). */
int eng_hold_lookup(eng_db *db, uint32_t pgno, uint64_t *off);
int eng_hold_read(eng_db *db, uint32_t pgno, uint64_t off, uint8_t *page);
int eng_hold_append(eng_db *db, uint32_t pgno, const uint8_t *page, uint64_t *off);
int eng_hold_index_set(eng_db *db, uint32_t pgno, uint64_t off);
int eng_hold_list(eng_db *db, uint32_t **pages, uint32_t *n);
void eng_hold_index_clear(eng_db *db);
void eng_hold_remove_file(eng_db *db);
void eng_hold_free(eng_db *db);
int eng_hold_remove_stale(eng_db *db);
/* The index's own invariants: its count, its load, every offset a whole page inside the file
 * (0, or 1 with the broken one in why). Caller holds cmu. */
int eng_hold_check(eng_db *db, char *why, size_t n);

/* Page cache (cache.c). eng_cache_get loads the page (from the hold file when it has the latest
 * copy, else from the .edb) when it is not cached; pages past the end of the file load as
 * zeros. */
int eng_cache_init(eng_db *db);
void eng_cache_free(eng_db *db);
/* A page buffer (ENG_PAGE_SIZE, 4096-aligned, content undefined), NULL when out of memory, and
 * its return. Frames' and transactions' pages come from here (a commit swaps them): released
 * buffers are reused instead of freed, and the first ones come from a reservation of the
 * cache's size backed by huge pages where the kernel has them, so a cache that fills faults in
 * 2 MiB at a time rather than 4 KiB (on a paravirtualized machine a fault costs 10-30 us). Past
 * the reservation, buffers are malloc'd and freed one by one. Thread-safe; put(NULL) is fine. */
uint8_t *eng_pagebuf_get(eng_db *db);
void eng_pagebuf_put(eng_db *db, uint8_t *page);
frame *eng_cache_lookup(eng_db *db, uint32_t pgno);
int eng_cache_get(eng_db *db, uint32_t pgno, int verify, frame **out);
frame *eng_cache_insert_new(eng_db *db, uint32_t pgno);
/* eng_cache_get (verify 0) for replay's workers, each of which owns the pages it asks for (no
 * other thread asks for them meanwhile): a missing page is read and checked outside cmu, so the
 * workers read pages in parallel; only linking it into the table takes the lock. A page wholly
 * past the end of the file comes blank (status ZERO, frame.blank, its bytes unwritten): the
 * caller writes every byte (an image) or zeroes it before anything else sees the frame. */
int eng_cache_get_owned(eng_db *db, uint32_t pgno, frame **out);
/* The pages of the cached frames whose met_gen is gen or later, sorted (malloc'd). */
int eng_cache_met_since(eng_db *db, uint32_t gen, uint32_t **pages, uint32_t *n);
/* Collects the dirty frames sorted by page number into a malloc'd array. */
int eng_cache_dirty_frames(eng_db *db, frame ***out, uint32_t *n);
/* Writes the pages of v (n of them) with few large writes: in_place, each at its page's offset
 * in the .edb (v sorted by page number: runs of consecutive pages go together); else one after
 * another from offset base (the page journal). Up to 1 MiB a write. */
int eng_cache_write_frames(om_file *f, frame **v, uint32_t n, int in_place, uint64_t base);
/* Drops clean frames when the cache is over its size (caller holds plock for writing). */
void eng_cache_trim(eng_db *db);
/* The same when the cache is over its size and plock can be had for writing at once (a view
 * open anywhere: nothing). Caller holds the writer role (a writer reads frames without plock:
 * only the role frees them), and no view on its thread. */
void eng_cache_trim_now(eng_db *db);
/* Replay's working set: drops clean frames until target are left, except those whose page was
 * met since the last recovery checkpoint and not rebuilt (their met_gen is what says a rerun
 * would meet a record before an image: recovery.c). Caller holds plock for writing. */
void eng_cache_trim_replay(eng_db *db, uint64_t target);
/* Removes frame f from the cache and frees it (caller holds plock for writing and cmu). */
void eng_cache_evict(eng_db *db, frame *f);
/* While held: moves the oldest dirty frames to the hold file until the dirty pages are back
 * under half the cache budget, then drops clean frames over the budget. Called by a commit
 * holding the writer role (takes plock and cmu itself). A failed write to the hold file stops
 * spilling with a warning (the pages stay in memory); never an error. */
int eng_cache_spill(eng_db *db);
/* After the held pages went back to the .edb: frames read from the hold file are plain clean
 * frames again, the index is forgotten and the file deleted. Writer role held. */
void eng_cache_end_hold(eng_db *db);
/* The checks of the cache (0, or 1 with the broken invariant in why); they take cmu.
 * eng_cache_check: every frame (the first bullet at the top; deep: clean frames' checksums
 *   too), the counters, the hold file's index.
 * eng_cache_check_page: pgno was just committed: a dirty frame holds it, as the first bullet
 *   says (caller holds plock for writing).
 * eng_cache_check_durable: no dirty frame changed past LSN durable (write-ahead). */
int eng_cache_check(eng_db *db, int deep, char *why, size_t n);
int eng_cache_check_page(eng_db *db, uint32_t pgno, char *why, size_t n);
int eng_cache_check_durable(eng_db *db, uint64_t durable, char *why, size_t n);

/* Page journal (journal.c): eng_pgj_write puts sealed pages into E00.pgj and syncs it;
 * eng_pgj_repair restores torn .edb pages from it before replay. */
int eng_pgj_write(eng_db *db, frame **pages, uint32_t n);
int eng_pgj_repair(eng_db *db, uint32_t *repaired);

/* Invariant checks (invariants.c; the checks of each layer in cache.c and hold.c). In debug
 * builds (NDEBUG not defined: every build but --buildtype=release) ENG_CHECK runs them at the
 * points named at the top of this file and aborts with the broken invariant in the log; in
 * release builds it is nothing. eng_db_check_invariants (engine.h) runs them on demand. */
enum eng_check_at {
    ENG_AT_COMMIT,     /* counters and the role (the pages: ENG_CHECK_PAGE) */
    ENG_AT_CHECKPOINT, /* every frame; no dirty page, no hold file */
    ENG_AT_FLUSH,      /* write-ahead: no dirty frame past the durable log */
    ENG_AT_RECOVERY,   /* every frame, with checksums; no dirty page */
    ENG_AT_RELEASE,    /* every frame; no hold file once the last hold ends */
    ENG_AT_MOUNT,
    ENG_AT_CLOSE,
    ENG_AT_TEST
};
void eng_db_check_point(eng_db *db, enum eng_check_at at);
void eng_db_check_page_point(eng_db *db, uint32_t pgno);
#ifdef NDEBUG
#define ENG_CHECK(db, at)        ((void)0)
#define ENG_CHECK_PAGE(db, pgno) ((void)0)
#else
#define ENG_CHECK(db, at)        eng_db_check_point((db), (at))
#define ENG_CHECK_PAGE(db, pgno) eng_db_check_page_point((db), (pgno))
#endif

/* Writer role and fatal state (role.c).
 * eng_role_acquire waits for the role (and for a thaw); eng_role_try takes it only when it is
 * free now (1: taken); eng_role_release_frozen releases it and, when frozen is set, shuts the
 * door until eng_role_thaw (which returns whether the database was frozen).
 * eng_fatal_set marks the database fatal after a failed write (everything later is refused)
 * and returns rc; eng_fatal_refuse is the FatalIO error every refused change gets.
 * eng_role_log_group appends one group (recs, then a COMMIT) outside a user transaction and
 * makes it durable; *pos (may be NULL) is where it starts. Writer role held. */
void eng_role_acquire(eng_db *db);
void eng_role_release(eng_db *db);
int eng_role_try(eng_db *db);
void eng_role_release_frozen(eng_db *db, int frozen);
int eng_role_thaw(eng_db *db);
int eng_fatal_set(eng_db *db, int rc);
int eng_fatal_refuse(eng_db *db);
int eng_role_log_group(eng_db *db, uint8_t *recs, uint32_t len, eng_lgpos *pos);

/* The change map (changemap.c), writer role held. Its rules are at the top of changemap.c.
 * eng_cbt_open: loads E00.cbt for a mount (db->hdr read); a map that cannot be trusted starts
 *   empty (it knows no epoch). eng_cbt_free: forgets it.
 * eng_cbt_note: pages [pages, pages + n) go to the .edb next: marked in every epoch and E00.cbt
 *   made durable first when that changed it. Without a map, clears the header's token (durably)
 *   before the first page write.
 * eng_cbt_flush: writes E00.cbt when it is behind (a new epoch waiting).
 * eng_cbt_epoch_start: a full backup's freeze: a new epoch (the oldest of ENG_CBT_EPOCHS goes)
 *   and a new token; returns its id (0 without a map). */
#define ENG_CBT_EPOCHS 4
int eng_cbt_open(eng_db *db);
void eng_cbt_free(eng_db *db);
int eng_cbt_note(eng_db *db, const uint32_t *pages, uint32_t n);
int eng_cbt_flush(eng_db *db);
uint64_t eng_cbt_epoch_start(eng_db *db);

/* Checkpoints (checkpoint.c), writer role held.
 * eng_ckpt_flush_pages: grows the .edb to what was allocated while held, writes the held pages
 *   back, then the dirty frames (journalled first, sorted), syncs the .edb.
 * eng_ckpt_write_chk: writes E00.chk with checkpoint c and the backup positions of the header.
 * eng_ckpt_locked: a whole checkpoint (log durable -> pages -> header -> E00.chk), nothing
 *   while pages are held; circular logging deletes the generations below it. */
int eng_ckpt_flush_pages(eng_db *db);
/* The one function that writes data pages (sealed, sorted) to their places in the .edb, for
 * checkpoints, the held pages' write-back and replay's early write-back: a hook that must see
 * every changed page the .edb receives belongs here. (eng_pgj_repair also writes pages: it puts
 * back a copy of a page the .edb held before a crash tore it, no change.) */
int eng_ckpt_write_in_place(eng_db *db, frame **v, uint32_t n);
/* Replay's write-back between recovery checkpoints: the dirty frames that are rebuilt (frame
 * above) go to the .edb now, without journal or sync (a torn one is rebuilt by replay; the
 * next checkpoint's sync makes them durable before the header moves the resume position), and
 * their writing to the storage starts, overlapping the replay that goes on. They are clean
 * afterwards. *n: how many. */
int eng_ckpt_write_rebuilt(eng_db *db, uint32_t *n);
int eng_ckpt_write_chk(eng_db *db, eng_lgpos c);
int eng_ckpt_locked(eng_db *db);

/* Log truncation (checkpoint.c), writer role held: the one place finished generations of the
 * database's own stream are deleted. eng_trunc_point: below which circular logging or a stored
 * backup (trunc_backup) allow deleting, never past the checkpoint; eng_trunc_floor: the floor
 * of passive copies in force (0: none; a lapsed one is dropped here, with a warning).
 * eng_trunc_apply deletes below the lower of the two; *deleted (may be NULL) counts them. */
uint32_t eng_trunc_point(const eng_db *db);
uint32_t eng_trunc_floor(eng_db *db);
int eng_trunc_apply(eng_db *db, uint32_t *deleted);

/* Recovery (recovery.c): replays the logs from the checkpoint into the page cache, flushes,
 * and leaves the header in Clean Shutdown. end->gen, created and len describe the newest
 * generation found (0 when there are no logs); cur_exists says whether it is E00.log (so the
 * next generation must rename it). */
typedef struct eng_log_end {
    uint32_t gen;
    uint64_t created;
    uint32_t len;
    int cur_exists;
} eng_log_end;
int eng_recovery_run(eng_db *db, eng_log_end *end);
/* Finds the newest generation on disk and checks it belongs to this database. */
int eng_recovery_log_end(eng_db *db, eng_log_end *end);

/* Replay of generations into the page cache (recovery.c): the one replay path of soft recovery
 * (recovery.c), hard recovery (hard_recovery.c) and passive copies (passive.c).
 *
 * Groups may straddle generations: call eng_replay_gen for consecutive generations with the
 * same eng_replay. A transaction's records count at its COMMIT: then its header effects (dbtime,
 * backup slots, page count) are taken, and its page records join the batch. A batch is applied
 * when it is large (ENG_REPLAY_BATCH bytes of records) or when its records could take the dirty
 * pages past the cache budget: its records sorted by page (log order kept per page: the dbtime
 * rule needs it), the pages spread over the cores (base/pool.h), each page read once, all of its
 * records applied to it in memory, so it is written back once per batch. Records of different
 * pages are independent, so the result is that of applying them one by one in log order; when
 * records fail, the error is that of the first failing record in log order (the others were
 * only applied in memory, and a failed replay writes nothing), and err_gen names its
 * generation. A recovery checkpoint follows a batch when the dirty pages reach the cache budget.
 *
 * Page write-back: replay writes no page itself. Applied pages are dirty frames of the page
 * cache, and they reach the .edb only through eng_ckpt_flush_pages (checkpoint.c), the one
 * function that writes data pages to the .edb (journalled first), for a hook that must see
 * every changed page. */
#define ENG_REPLAY_BATCH (32u << 20)
typedef struct eng_replay_ent {
    uint32_t pgno; /* 0: a backup slot record, applied at its COMMIT */
    uint32_t gen;  /* the generation the record is in */
    uint32_t off;  /* in batch */
    uint32_t seq;  /* log order within the batch */
    uint64_t after;
} eng_replay_ent;
typedef struct eng_replay {
    eng_db *db;
    uint64_t stop_time;     /* 0: none; else stop at the first COMMIT later than this */
    int hard;               /* hard recovery: recovery checkpoints leave E00.chk alone */
    int stopped;            /* met a COMMIT past stop_time; nothing from it on was applied */
    eng_lgpos pos;          /* just past the last committed group (applied once the batch is) */
    uint64_t commit_dbtime; /* dbtime of the last committed group */
    uint32_t err_gen;       /* after an error applying records: the first failing one's gen */
    uint8_t *batch;         /* raw records: committed groups, then the open transaction's */
    uint32_t blen, bcap;
    int bmapped;          /* batch is the reservation of recovery.c's batch_grow, not malloc'd */
    uint32_t gstart;      /* the open transaction's records start here in batch */
    uint32_t grecs;       /* records in the open transaction */
    eng_replay_ent *ents; /* page and slot records of batch, in log order */
    uint32_t nent, ecap;
    uint32_t egstart;      /* the open transaction's entries start here */
    uint32_t early;        /* pages written back early since the last recovery checkpoint */
    uint32_t *met;         /* pages met before the last recovery checkpoint in the generation of its
                              position (a rerun replays them again), sorted: never rebuilt */
    uint32_t nmet, met_at; /* met_at: that generation */
    uint64_t gtxn;
    eng_rec rec;
    /* Pages at offsets below defer_below (0: none) take their records only at eng_replay_drain:
     * a hard recovery of a restore whose .edb the requester is still flushing replays the pages
     * past it meanwhile (the new ones a restore's logs make, read from nowhere) and the laid ones
     * once the flush is over (*flushed: the next batch drains and holds back no more), or at the
     * end. The waiting records' bytes (dbuf) and entries (dents, log order). */
    uint64_t defer_below;
    const int *flushed; /* once set (atomic), the file is on the disk: holding back ends */
    uint8_t *dbuf;
    uint32_t dlen, dcap;
    eng_replay_ent *dents;
    uint32_t ndent, decap;
    uint64_t held_back; /* records held back so far, all told */
    uint64_t hold_max;  /* bytes held back at most (0: HOLD_MAX, recovery.c) */
    uint64_t held_peak; /* the most bytes held back at once */
} eng_replay;
int eng_replay_gen(eng_replay *rp, eng_genread *g, uint32_t from);
/* Applies the batch's committed records (the open transaction's stay). Callers call it when
 * they have fed the generations they meant to: after it, everything through rp->pos is in the
 * cache. 0, or the error of the first failing record (rp->err_gen). */
int eng_replay_apply(eng_replay *rp);
/* Replay ends with rc (0, or the error that ended the reading): the batch is applied; when one
 * of its records fails, that error is the answer (it came first in the log; rp->err_gen), else
 * rc with its detail. */
int eng_replay_settle(eng_replay *rp, int rc);
/* The records defer_below held back, applied (in log order per page, as they came); the
 * settle, a recovery checkpoint and a full holding (more than a quarter of the cache) call it.
 * 0, or the error of the first failing one (rp->err_gen). */
int eng_replay_drain(eng_replay *rp);
void eng_replay_free(eng_replay *rp);
/* A recovery checkpoint: the batch applied, the replayed pages to the .edb (page journal first),
 * then the header (Log Required raised to at.gen .. last_gen), then, unless rp->hard, E00.chk at
 * `at`, where a crash resumes. eng_replay_gen takes one when the cache fills; a passive copy
 * after each replay (passive.c). */
int eng_replay_checkpoint(eng_replay *rp, eng_lgpos at, uint32_t last_gen);

/* Read-ahead of generations (recovery.c): a thread reads generations first..last in order with
 * the caller's read function (which waits for, reads and checks one generation: the caller's
 * chain checks and policy) into buffers it reuses, up to a few generations ahead of replay.
 * read returns 0 with *g filled, ENG_PREFETCH_END (nothing of that generation is to be used:
 * reading stops there, no error), or an error with its detail; reading stops after anything
 * but 0. eng_prefetch_next hands the generations out in order on the caller's thread, with the
 * read's result and *why, the detail of an error restored on the caller's thread; *g stays
 * valid until the next call. eng_prefetch_stop stops the reading and waits for the thread.
 * When no thread can be started, eng_prefetch_next reads itself. */
#define ENG_PREFETCH_END 1
typedef int (*eng_gen_reader)(void *arg, uint32_t gen, eng_genread *g, uint8_t *buf, int *why);
typedef struct eng_prefetch eng_prefetch;
int eng_prefetch_start(eng_prefetch **out, uint32_t first, uint32_t last, eng_gen_reader read,
                       void *arg);
int eng_prefetch_next(eng_prefetch *p, eng_genread **g, int *why);
void eng_prefetch_stop(eng_prefetch *p);
/* Where soft recovery (and a passive copy's replay) starts: E00.chk when it is good, of the
 * header's log stream and not past what the header requires; else the start of the header's
 * Log Required min generation. */
eng_lgpos eng_recovery_start(eng_db *db);

/* A view (table.h): a transaction's (t set) or a committed one (the read lock held). */
struct eng_view {
    eng_db *db;
    eng_txn *t;
};

/* Page access for the B+tree (txn.c). In a transaction: the page as the transaction sees it
 * (read-only), its private copy (writable; the commit logs what changed by comparing it with
 * the committed page), a page given a new life (zeroed, new object id, logged whole), or a new
 * page at the end of the file. In a committed view (the read lock held): the committed page.
 * Bodies are ENG_PAGE_BODY bytes; pointers stay valid until the transaction commits or rolls
 * back, or the read lock is released. */
eng_db *eng_txn_db(eng_txn *t);
int eng_txn_page_ro(eng_txn *t, uint32_t pgno, const uint8_t **body);
int eng_txn_page_mut(eng_txn *t, uint32_t pgno, uint8_t **body);
int eng_txn_page_reinit(eng_txn *t, uint32_t pgno, uint32_t objid, uint8_t **body);
int eng_txn_page_alloc(eng_txn *t, uint32_t objid, uint32_t *pgno, uint8_t **body);
void eng_read_lock(eng_db *db);
void eng_read_unlock(eng_db *db);
int eng_view_page(eng_db *db, uint32_t pgno, const uint8_t **body);
uint32_t eng_page_count(eng_db *db);

/* Database objects (db.c): eng_db_alloc makes one from the options (nothing opened yet);
 * eng_db_open_edb opens its .edb for writing and locks it. Hard recovery (hard_recovery.c)
 * opens its restored .edb with them. */
int eng_db_alloc(const eng_opts *o, eng_db **out);
int eng_db_open_edb(eng_db *db);

#endif
