/* The top of the engine: opening, creating and closing a database, soft recovery of a
 * dismounted one, and what the header and the log folder say (info, inspect, stats).
 *
 * States of an open database and the functions that move between them:
 *
 *   (file)  --eng_db_create-->  mounted: Dirty Shutdown on disk, log open
 *   (file)  --eng_db_open-->    [eng_recovery_run if Dirty, or Clean with generations
 *                                after its consistent one] --> mount() --> mounted
 *   mounted --eng_db_close-->   TERM record, pages flushed, header Clean Shutdown
 *   mounted --eng_db_close_gen--> the same, then E00.log renamed to its numbered name
 *   mounted --a write or fsync fails--> fatal: every change refused; eng_db_close frees
 *                                       without writing; the next open recovers.
 *
 * Within "mounted", the writer role (role.c) serialises transactions (txn.c), checkpoints
 * (checkpoint.c) and backup hooks (backup_hooks.c); eng_backup_freeze keeps the role's door
 * shut (frozen) until eng_backup_thaw; eng_hold_pages stops checkpoints (pages stay in memory)
 * until eng_release_pages. The layers below are listed in db_internal.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "engine/db_internal.h"

#define DEFAULT_CACHE     (256ull << 20)
#define DEFAULT_CKPT_GENS 32

/* A hard recovery that was interrupted must be run again, not replaced by a soft recovery: its
 * logs may be in another folder, and replaying everything in this one may not be what the
 * restore asked for (a point in time). */
static int refuse_restoring(eng_db *db)
{
    if (!(db->hdr.flags & ENG_DBF_RESTORING)) return 0;
    return om_errf(OM_E_RestoreInProgress,
                   "%s: its hard recovery after a restore did not finish. HINT: run the restore's "
                   "log replay again (or restore the database again)",
                   db->edb);
}

/* One process at a time: a second opener (another store, dbutil recover) would replay and
 * write under the first one's feet. */
static int lock_edb(eng_db *db)
{
    return db->vfs->lock ? db->vfs->lock(db->edbf) : 0;
}

int eng_db_open_edb(eng_db *db)
{
    int rc = om_open(db->vfs, db->edb, 0, &db->edbf);
    return rc ? rc : lock_edb(db);
}

int eng_db_alloc(const eng_opts *o, eng_db **out)
{
    const char *base = o->base ? o->base : "E00";
    if (!o->edb_path || !o->log_dir)
        return om_errf(OM_E_InvalidParameter, "database path and log folder are required");
    if (!eng_base_valid(base))
        return om_errf(OM_E_InvalidParameter, "log base name '%s' must be three letters or digits",
                       base);
    eng_db *db = calloc(1, sizeof *db);
    if (!db) return om_errf(OM_E_OutOfMemory, "opening %s: out of memory", o->edb_path);
    db->vfs = o->vfs ? o->vfs : om_vfs_posix();
    if (snprintf(db->edb, sizeof db->edb, "%s", o->edb_path) >= (int)sizeof db->edb ||
        snprintf(db->logdir, sizeof db->logdir, "%s", o->log_dir) >= (int)sizeof db->logdir) {
        free(db);
        return om_errf(OM_E_InvalidPath, "path too long: %s", o->edb_path);
    }
    memcpy(db->base, base, 4);
    db->cache_bytes = o->cache_bytes ? o->cache_bytes : DEFAULT_CACHE;
    if (db->cache_bytes < 16 * ENG_PAGE_SIZE) db->cache_bytes = 16 * ENG_PAGE_SIZE;
    db->checkpoint_gens = o->checkpoint_gens ? o->checkpoint_gens : DEFAULT_CKPT_GENS;
    db->no_reserve = o->no_reserve_logs;
    db->replay_progress = o->replay_progress;
    db->progress_arg = o->progress_arg;
    eng_chk_path(db->chk, sizeof db->chk, db->logdir, db->base);
    eng_hold_path(db->holdp, sizeof db->holdp, db->logdir, db->base);
    pthread_mutex_init(&db->wmu, NULL);
    pthread_cond_init(&db->wcond, NULL);
    /* Writer-preferring: a steady stream of readers must not hold a commit's publication
     * off forever. (So nothing may take the read lock twice on one thread.) */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&db->plock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&db->cmu, NULL);
    int rc = eng_cache_init(db);
    if (rc) {
        eng_db_abandon(db);
        return rc;
    }
    *out = db;
    return 0;
}

void eng_db_abandon(eng_db *db)
{
    if (!db) return;
    eng_log_free(db->log);
    om_close(db->edbf);
    eng_cbt_free(db);
    eng_hold_free(db);
    eng_cache_free(db);
    pthread_mutex_destroy(&db->wmu);
    pthread_cond_destroy(&db->wcond);
    pthread_rwlock_destroy(&db->plock);
    pthread_mutex_destroy(&db->cmu);
    free(db);
}

static eng_log_cfg log_cfg(eng_db *db)
{
    eng_log_cfg c = {0};
    c.vfs = db->vfs;
    c.dir = db->logdir;
    c.base = db->base;
    c.log_sig = db->hdr.log_sig;
    c.db_sig = db->hdr.db_sig;
    c.db_id = db->hdr.db_id;
    c.flags = db->hdr.flags & ENG_DBF_CIRCULAR;
    c.no_reserve = db->no_reserve;
    return c;
}

/* Mount: log an ATTACH, checkpoint at the start of the new generation, header Dirty. */
static int mount(eng_db *db)
{
    uint8_t rec[128];
    eng_lgpos start = {eng_log_gen(db->log), 0}, at;
    uint64_t now = om_now_ns();
    uint32_t n = eng_rec_encode_attach(rec, db->txn_last + 1, ENG_REC_ATTACH, now, &db->hdr.db_sig);
    int rc = eng_role_log_group(db, rec, n, &at);
    if (rc) return rc;
    db->ckpt = start;
    eng_log_set_checkpoint(db->log, start);
    db->hdr.state = ENG_STATE_DIRTY;
    db->hdr.attach = at;
    db->hdr.attach_time = now;
    db->hdr.log_req_min = start.gen;
    db->hdr.log_req_max = start.gen;
    db->hdr.log_committed = start.gen;
    db->hdr.txn_last = db->txn_last;
    rc = eng_dbhdr_write(db->edbf, &db->hdr);
    if (!rc) rc = eng_ckpt_write_chk(db, start);
    return rc;
}

int eng_db_create(const eng_opts *o, eng_db **out)
{
    eng_db *db = NULL;
    uint8_t *pages = NULL;
    int rc = eng_db_alloc(o, &db);
    if (rc) return rc;
    om_vfs *v = db->vfs;
    char cur[4200];
    int ex = v->exists(v, db->edb);
    if (ex) {
        rc = ex < 0 ? ex : om_errf(OM_E_DatabaseDuplicate, "%s already exists", db->edb);
        goto fail;
    }
    if ((rc = v->mkdir(v, db->logdir))) goto fail;
    uint32_t *gens = NULL, ngens = 0;
    if ((rc = eng_log_list_gens(v, db->logdir, db->base, &gens, &ngens))) goto fail;
    free(gens);
    eng_cur_log_path(cur, sizeof cur, db->logdir, db->base);
    if (ngens || v->exists(v, cur) == 1) {
        rc = om_errf(OM_E_DatabaseDuplicate,
                     "%s already holds logs with base name %s. HINT: choose another log folder or "
                     "base name",
                     db->logdir, db->base);
        goto fail;
    }
    eng_dbhdr *h = &db->hdr;
    h->version = ENG_FORMAT_VERSION;
    h->page_size = ENG_PAGE_SIZE;
    om_uuid_new(&h->db_id);
    h->create_time = om_now_ns();
    om_random(&h->db_sig.random, sizeof h->db_sig.random);
    h->db_sig.time = h->create_time;
    om_random(&h->log_sig.random, sizeof h->log_sig.random);
    h->log_sig.time = h->create_time;
    h->state = ENG_STATE_JUST_CREATED;
    h->flags = o->circular_logging ? ENG_DBF_CIRCULAR : 0;
    memcpy(h->base, db->base, 4);
    pages = calloc(2, ENG_PAGE_SIZE);
    if (!pages) {
        rc = om_errf(OM_E_OutOfMemory, "creating %s: out of memory", db->edb);
        goto fail;
    }
    eng_dbhdr_encode(h, pages, 0);
    eng_dbhdr_encode(h, pages + ENG_PAGE_SIZE, 1);
    if ((rc = om_write_file_durable(v, db->edb, pages, 2 * ENG_PAGE_SIZE))) goto fail;
    if ((rc = om_open(v, db->edb, 0, &db->edbf)) || (rc = lock_edb(db))) goto fail;
    if ((rc = eng_cbt_open(db))) goto fail;
    db->file_pages = 0;
    eng_log_cfg lc = log_cfg(db);
    if ((rc = eng_log_start(&lc, 1, 0, 0, 0, (eng_lgpos){1, 0}, &db->log))) goto fail;
    if ((rc = mount(db))) goto fail;
    ENG_CHECK(db, ENG_AT_MOUNT);
    free(pages);
    *out = db;
    return 0;
fail:
    free(pages);
    eng_db_abandon(db);
    return rc;
}

/* A Clean database whose folder holds generations of its stream after the one it is consistent
 * in: another copy went on logging from its consistent point (a passive copy of a deposed
 * active, activated with the new active's streamed generation as its E00.log). The next mount
 * continues the stream after the last of them, so what they hold must be in the pages:
 * recovery replays them, from the generation after the consistent one. */
static int logged_after_clean(const eng_db *db, const eng_log_end *end)
{
    return db->hdr.consistent.gen && end->gen > db->hdr.consistent.gen;
}

int eng_db_open(const eng_opts *o, eng_db **out)
{
    eng_db *db = NULL;
    int rc = eng_db_alloc(o, &db);
    if (rc) return rc;
    eng_log_end end = {0};
    /* Lock first: the header read may repair a torn copy. */
    if ((rc = om_open(db->vfs, db->edb, 0, &db->edbf)) || (rc = lock_edb(db))) goto fail;
    if ((rc = eng_dbhdr_read(db->vfs, db->edb, &db->hdr, 1, NULL))) goto fail;
    if ((rc = refuse_restoring(db))) goto fail;
    if (strncmp(db->hdr.base, db->base, 3) != 0) {
        rc = om_errf(OM_E_DatabaseLogSetMismatch, "%s uses log base name %s, not %s", db->edb,
                     db->hdr.base, db->base);
        goto fail;
    }
    if ((rc = eng_hold_remove_stale(db))) goto fail;
    /* Circular logging is a mount option: the header records the setting of the last mount. */
    db->hdr.flags = (db->hdr.flags & ~(uint32_t)ENG_DBF_CIRCULAR) |
                    (o->circular_logging ? ENG_DBF_CIRCULAR : 0);
    uint64_t fsz = 0;
    if ((rc = om_fsize(db->edbf, &fsz))) goto fail;
    db->file_pages = fsz / ENG_PAGE_SIZE > 2 ? fsz / ENG_PAGE_SIZE - 2 : 0;
    db->dbtime = db->hdr.dbtime;
    db->pages = db->hdr.pages;
    db->txn_last = db->hdr.txn_last;
    /* Before recovery: the pages it replays are written since the map's epochs too. */
    if ((rc = eng_cbt_open(db))) goto fail;
    if (db->hdr.state != ENG_STATE_CLEAN)
        rc = eng_recovery_run(db, &end);
    else if (!(rc = eng_recovery_log_end(db, &end)) && logged_after_clean(db, &end))
        rc = eng_recovery_run(db, &end);
    if (rc) goto fail;
    if (end.gen == 0) {
        /* A clean database whose logs are gone starts a new log stream after the last
         * generation it knew, with a new signature: old logs can never be replayed into it. */
        end.gen = db->hdr.consistent.gen;
        om_random(&db->hdr.log_sig.random, sizeof db->hdr.log_sig.random);
        db->hdr.log_sig.time = om_now_ns();
    }
    eng_log_cfg lc = log_cfg(db);
    rc = eng_log_start(&lc, end.gen + 1, end.cur_exists, end.created, end.len,
                       (eng_lgpos){end.gen + 1, 0}, &db->log);
    if (!rc) rc = mount(db);
    if (rc) goto fail;
    ENG_CHECK(db, ENG_AT_MOUNT);
    *out = db;
    return 0;
fail:
    eng_db_abandon(db);
    return rc;
}

int eng_db_recover(const eng_opts *o, eng_stats *st)
{
    eng_db *db = NULL;
    int rc = eng_db_alloc(o, &db);
    if (rc) return rc;
    eng_log_end end;
    rc = om_open(db->vfs, db->edb, 0, &db->edbf);
    if (!rc) rc = lock_edb(db);
    if (!rc) rc = eng_dbhdr_read(db->vfs, db->edb, &db->hdr, 1, NULL);
    if (!rc) rc = refuse_restoring(db);
    if (!rc) rc = eng_hold_remove_stale(db);
    if (!rc) {
        db->dbtime = db->hdr.dbtime;
        db->pages = db->hdr.pages;
        db->txn_last = db->hdr.txn_last;
        if (db->hdr.state != ENG_STATE_CLEAN)
            rc = eng_recovery_run(db, &end);
        else if (!(rc = eng_recovery_log_end(db, &end)) && logged_after_clean(db, &end))
            rc = eng_recovery_run(db, &end);
    }
    if (st) *st = db->st;
    eng_db_abandon(db);
    return rc;
}

/* Clean shutdown; with last_gen, the last generation is closed too (eng_db_close_gen). */
static int close_db(eng_db *db, uint32_t *last_gen)
{
    eng_role_acquire(db);
    int rc = db->fatal;
    if (rc) {
        rc = eng_fatal_refuse(db);
        goto out;
    }
    ENG_CHECK(db, ENG_AT_CLOSE);
    db->hold = 0;
    uint8_t rec[128];
    uint64_t now = om_now_ns();
    uint32_t n = eng_rec_encode_attach(rec, db->txn_last + 1, ENG_REC_TERM, now, &db->hdr.db_sig);
    eng_lgpos at;
    if ((rc = eng_role_log_group(db, rec, n, &at))) goto out;
    eng_lgpos end = eng_log_lgpos(db->log, eng_log_end_lsn(db->log));
    if ((rc = eng_ckpt_flush_pages(db))) goto out;
    db->hdr.state = ENG_STATE_CLEAN;
    db->hdr.dbtime = db->dbtime;
    db->hdr.pages = db->pages;
    db->hdr.txn_last = db->txn_last;
    db->hdr.consistent = end;
    db->hdr.consistent_time = now;
    db->hdr.detach = at;
    db->hdr.detach_time = now;
    db->hdr.log_req_min = db->hdr.log_req_max = 0;
    db->hdr.log_committed = end.gen;
    if ((rc = eng_dbhdr_write(db->edbf, &db->hdr))) goto out;
    rc = eng_ckpt_write_chk(db, end);
    /* Last, once the database is in Clean Shutdown: a crash before the rename is an ordinary
     * dismount (the next mount closes the generation as it starts the next one). */
    if (!rc && last_gen) rc = eng_log_finish(db->log, last_gen);
out:
    eng_role_release(db);
    eng_db_abandon(db);
    return rc;
}

int eng_db_close(eng_db *db)
{
    return db ? close_db(db, NULL) : 0;
}

int eng_db_close_gen(eng_db *db, uint32_t *last_gen)
{
    *last_gen = 0;
    if (!db) return om_errf(OM_E_InvalidParameter, "closing a database that is not open");
    return close_db(db, last_gen);
}

int eng_db_info(eng_db *db, eng_info *info)
{
    memset(info, 0, sizeof *info);
    eng_role_acquire(db);
    info->db_id = db->hdr.db_id;
    info->state = db->hdr.state;
    info->dbtime = db->dbtime;
    info->pages = db->pages;
    info->checkpoint = db->ckpt;
    info->gen_current = eng_log_gen(db->log);
    memcpy(info->slots, db->hdr.slots, sizeof info->slots);
    info->log_disk_full = eng_log_disk_full(db->log);
    info->fatal = db->fatal != 0 || eng_log_fatal(db->log) != 0;
    info->truncate_point = eng_trunc_point(db);
    info->truncate_floor = eng_trunc_floor(db);
    uint32_t *gens = NULL, n = 0;
    int rc = eng_log_list_gens(db->vfs, db->logdir, db->base, &gens, &n);
    info->gen_oldest = info->gen_current;
    for (uint32_t i = 0; i < n; i++)
        if (gens[i] < info->gen_oldest) info->gen_oldest = gens[i];
    free(gens);
    eng_role_release(db);
    return rc;
}

int eng_db_inspect(const eng_opts *o, eng_info *info)
{
    memset(info, 0, sizeof *info);
    om_vfs *v = o->vfs ? o->vfs : om_vfs_posix();
    const char *base = o->base ? o->base : "E00";
    eng_dbhdr h;
    int rc = eng_dbhdr_read(v, o->edb_path, &h, 0, NULL);
    if (rc) return rc;
    info->db_id = h.db_id;
    info->state = h.state;
    info->dbtime = h.dbtime;
    info->pages = h.pages;
    memcpy(info->slots, h.slots, sizeof info->slots);
    char chk[4200], cur[4200];
    eng_chkfile ck;
    if (eng_chk_path(chk, sizeof chk, o->log_dir, base) == 0 &&
        eng_chk_read(v, chk, &ck, NULL) == 0)
        info->checkpoint = ck.checkpoint;
    uint32_t *gens = NULL, n = 0;
    if ((rc = eng_log_list_gens(v, o->log_dir, base, &gens, &n))) return rc;
    uint32_t lo = 0, hi = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!lo || gens[i] < lo) lo = gens[i];
        if (gens[i] > hi) hi = gens[i];
    }
    free(gens);
    eng_cur_log_path(cur, sizeof cur, o->log_dir, base);
    om_file *f = NULL;
    uint8_t slot[ENG_SLOT_SIZE];
    eng_loghdr lh;
    if (om_open(v, cur, OM_O_RDONLY, &f) == 0) {
        if (om_pread_full(f, slot, sizeof slot, 0) == 0 && eng_loghdr_decode(slot, &lh) == 0)
            hi = lh.gen;
        om_close(f);
    }
    info->gen_current = hi;
    info->gen_oldest = lo ? lo : hi;
    return 0;
}

void eng_db_stats(eng_db *db, eng_stats *st)
{
    *st = db->st;
    pthread_mutex_lock(&db->cmu);
    st->cache_pages = db->nframes;
    pthread_mutex_unlock(&db->cmu);
    if (db->log)
        eng_log_get_stats(db->log, &st->log_flushes, &st->log_bytes, &st->log_slots_written);
}
