/* Database lifecycle, transactions, checkpoints and the backup hooks.
 *
 * States of an open database and the functions that move between them:
 *
 *   (file)  --eng_db_create-->  mounted: Dirty Shutdown on disk, log open
 *   (file)  --eng_db_open-->    [db_recover if Dirty] --> mount() --> mounted
 *   mounted --eng_db_close-->   TERM record, pages flushed, header Clean Shutdown
 *   mounted --a write or fsync fails--> fatal: every change refused; eng_db_close frees
 *                                       without writing; the next open recovers.
 *
 * Within "mounted", the writer role (db_role_acquire) serialises transactions, checkpoints and
 * backup hooks; eng_backup_freeze keeps the role's door shut (frozen) until eng_backup_thaw;
 * eng_hold_pages stops checkpoints (pages stay in memory) until eng_release_pages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "base/time.h"
#include "engine/db_internal.h"

#define DEFAULT_CACHE     (256ull << 20)
#define DEFAULT_CKPT_GENS 32
#define GROW_PAGES        32 /* the .edb grows by at least 1 MiB at a time */

/* ---- writer role ---- */

void db_role_acquire(eng_db *db)
{
    pthread_mutex_lock(&db->wmu);
    while (db->writer_active || db->frozen)
        pthread_cond_wait(&db->wcond, &db->wmu);
    db->writer_active = 1;
    pthread_mutex_unlock(&db->wmu);
}

void db_role_release(eng_db *db)
{
    pthread_mutex_lock(&db->wmu);
    db->writer_active = 0;
    pthread_cond_broadcast(&db->wcond);
    pthread_mutex_unlock(&db->wmu);
}

int db_set_fatal(eng_db *db, int rc)
{
    if (!db->fatal) {
        om_error("%s: %s; the database refuses writes until it is dismounted and recovered",
                 db->edb, om_err_detail());
        db->fatal = OM_E_FatalIO;
    }
    return rc;
}

static int refuse_fatal(eng_db *db)
{
    return om_errf(OM_E_FatalIO,
                   "%s: an earlier write or fsync failed; the database refuses writes. HINT: "
                   "dismount and mount it again to recover from its logs",
                   db->edb);
}

/* ---- open, create, close ---- */

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

int db_open_edb(eng_db *db)
{
    int rc = om_open(db->vfs, db->edb, 0, &db->edbf);
    return rc ? rc : lock_edb(db);
}

int db_alloc(const eng_opts *o, eng_db **out)
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
    int rc = cache_init(db);
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
    hold_free(db);
    cache_free(db);
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

int db_write_chk(eng_db *db, eng_lgpos c)
{
    eng_chkfile ck = {0};
    ck.checkpoint = c;
    ck.log_sig = db->hdr.log_sig;
    ck.db_sig = db->hdr.db_sig;
    ck.time = om_now_ns();
    ck.last_full = db->hdr.slots[ENG_BK_PREV_FULL].mark;
    ck.last_incremental = db->hdr.slots[ENG_BK_PREV_INCREMENTAL].mark;
    memcpy(ck.base, db->base, 4);
    return eng_chk_write(db->vfs, db->chk, &ck);
}

/* Appends one group (records + COMMIT) outside a user transaction and makes it durable.
 * Caller holds the writer role. *pos is where the group starts. */
static int log_group(eng_db *db, uint8_t *recs, uint32_t len, eng_lgpos *pos)
{
    uint64_t start = eng_log_end_lsn(db->log), end;
    len += eng_rec_encode_commit(recs + len, db->txn_last + 1, om_now_ns(), db->dbtime);
    int rc = eng_log_append(db->log, recs, len, &end);
    if (!rc) rc = eng_log_flush_to(db->log, end);
    if (rc) return db_set_fatal(db, rc);
    db->txn_last++;
    if (pos) *pos = eng_log_lgpos(db->log, start);
    return 0;
}

/* Mount: log an ATTACH, checkpoint at the start of the new generation, header Dirty. */
static int mount(eng_db *db)
{
    uint8_t rec[128];
    eng_lgpos start = {eng_log_gen(db->log), 0}, at;
    uint64_t now = om_now_ns();
    uint32_t n = eng_rec_encode_attach(rec, db->txn_last + 1, ENG_REC_ATTACH, now, &db->hdr.db_sig);
    int rc = log_group(db, rec, n, &at);
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
    if (!rc) rc = db_write_chk(db, start);
    return rc;
}

int eng_db_create(const eng_opts *o, eng_db **out)
{
    eng_db *db = NULL;
    uint8_t *pages = NULL;
    int rc = db_alloc(o, &db);
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
    db->file_pages = 0;
    eng_log_cfg lc = log_cfg(db);
    if ((rc = eng_log_start(&lc, 1, 0, 0, 0, (eng_lgpos){1, 0}, &db->log))) goto fail;
    if ((rc = mount(db))) goto fail;
    free(pages);
    *out = db;
    return 0;
fail:
    free(pages);
    eng_db_abandon(db);
    return rc;
}

int eng_db_open(const eng_opts *o, eng_db **out)
{
    eng_db *db = NULL;
    int rc = db_alloc(o, &db);
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
    if ((rc = hold_remove_stale(db))) goto fail;
    /* Circular logging is a mount option: the header records the setting of the last mount. */
    db->hdr.flags = (db->hdr.flags & ~(uint32_t)ENG_DBF_CIRCULAR) |
                    (o->circular_logging ? ENG_DBF_CIRCULAR : 0);
    uint64_t fsz = 0;
    if ((rc = om_fsize(db->edbf, &fsz))) goto fail;
    db->file_pages = fsz / ENG_PAGE_SIZE > 2 ? fsz / ENG_PAGE_SIZE - 2 : 0;
    db->dbtime = db->hdr.dbtime;
    db->pages = db->hdr.pages;
    db->txn_last = db->hdr.txn_last;
    if (db->hdr.state != ENG_STATE_CLEAN)
        rc = db_recover(db, &end);
    else
        rc = db_find_log_end(db, &end);
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
    *out = db;
    return 0;
fail:
    eng_db_abandon(db);
    return rc;
}

int eng_db_recover(const eng_opts *o, eng_stats *st)
{
    eng_db *db = NULL;
    int rc = db_alloc(o, &db);
    if (rc) return rc;
    eng_log_end end;
    rc = om_open(db->vfs, db->edb, 0, &db->edbf);
    if (!rc) rc = lock_edb(db);
    if (!rc) rc = eng_dbhdr_read(db->vfs, db->edb, &db->hdr, 1, NULL);
    if (!rc) rc = refuse_restoring(db);
    if (!rc) rc = hold_remove_stale(db);
    if (!rc) {
        db->dbtime = db->hdr.dbtime;
        db->pages = db->hdr.pages;
        db->txn_last = db->hdr.txn_last;
        if (db->hdr.state != ENG_STATE_CLEAN) rc = db_recover(db, &end);
    }
    if (st) *st = db->st;
    eng_db_abandon(db);
    return rc;
}

/* ---- pages and checkpoints ---- */

/* Grows the .edb to the pages allocated while it was held. */
static int grow_deferred(eng_db *db)
{
    if (db->grow_to <= db->file_pages) return 0;
    int rc = om_resize(db->edbf, (db->grow_to + 2) * ENG_PAGE_SIZE);
    if (rc)
        return om_err_ctx(rc, "growing %s to %llu pages", db->edb, (unsigned long long)db->grow_to);
    db->file_pages = db->grow_to;
    return 0;
}

int db_write_frames(om_file *f, frame **v, uint32_t n, int in_place, uint64_t base)
{
    enum { RUN = 32 }; /* pages a write: 1 MiB */
    uint8_t *stage = n > 1 ? malloc((size_t)RUN * ENG_PAGE_SIZE) : NULL;
    int rc = 0;
    for (uint32_t i = 0, k; i < n && !rc; i += k) {
        uint64_t off = in_place ? eng_page_offset(v[i]->pgno) : base + (uint64_t)i * ENG_PAGE_SIZE;
        for (k = 1;
             stage && i + k < n && k < RUN && (!in_place || v[i + k]->pgno == v[i]->pgno + k); k++)
            ;
        if (k == 1) {
            rc = om_pwrite(f, v[i]->page, ENG_PAGE_SIZE, off);
            continue;
        }
        for (uint32_t j = 0; j < k; j++)
            memcpy(stage + (size_t)j * ENG_PAGE_SIZE, v[i + j]->page, ENG_PAGE_SIZE);
        rc = om_pwrite(f, stage, (size_t)k * ENG_PAGE_SIZE, off);
    }
    free(stage);
    return rc;
}

int db_flush_pages(eng_db *db)
{
    frame **v = NULL;
    uint32_t n = 0;
    int rc = grow_deferred(db);
    /* Pages spilled while held first (in batches of their own), then the dirty frames. */
    if (!rc) rc = hold_write_back(db);
    if (!rc) rc = cache_dirty_frames(db, &v, &n);
    if (rc) return rc;
    for (uint32_t i = 0; i < n; i++)
        eng_page_seal(v[i]->page, v[i]->pgno);
    /* Journal first (synced), then in place: a page torn by a crash here can be restored. */
    if (n) rc = pj_write(db, v, n);
    if (!rc) rc = db_write_frames(db->edbf, v, n, 1, 0);
    if (!rc && n) rc = om_sync(db->edbf);
    if (!rc) {
        pthread_mutex_lock(&db->cmu);
        for (uint32_t i = 0; i < n; i++)
            v[i]->dirty = 0;
        db->ndirty = 0;
        pthread_mutex_unlock(&db->cmu);
        db->st.pages_flushed += n;
        if (db->hf.f || db->hf.count) hold_discard(db);
    }
    free(v);
    return rc;
}

/* Caller holds the writer role. Order of durable writes: log -> pages -> header -> checkpoint. */
static int checkpoint_locked(eng_db *db)
{
    if (db->fatal) return refuse_fatal(db);
    if (db->hold) return 0;
    uint64_t end = eng_log_end_lsn(db->log);
    int rc = eng_log_flush_to(db->log, end);
    if (rc) return db_set_fatal(db, rc);
    eng_lgpos c = eng_log_lgpos(db->log, end);
    if ((rc = db_flush_pages(db))) return db_set_fatal(db, rc);
    uint32_t cur = eng_log_gen(db->log);
    db->hdr.dbtime = db->dbtime;
    db->hdr.pages = db->pages;
    db->hdr.txn_last = db->txn_last;
    db->hdr.log_req_min = c.gen;
    db->hdr.log_req_max = cur;
    db->hdr.log_committed = cur;
    if ((rc = eng_dbhdr_write(db->edbf, &db->hdr))) return db_set_fatal(db, rc);
    db->hdr_deferred = 0;
    if ((rc = db_write_chk(db, c))) return db_set_fatal(db, rc);
    db->ckpt = c;
    eng_log_set_checkpoint(db->log, c);
    pthread_rwlock_wrlock(&db->plock);
    cache_trim(db);
    pthread_rwlock_unlock(&db->plock);
    db->st.checkpoints++;
    if (db->hdr.flags & ENG_DBF_CIRCULAR) {
        rc = eng_log_delete_below(db->vfs, db->logdir, db->base, c.gen, NULL);
        if (rc) om_warn("circular logging: %s", om_err_detail());
    }
    return 0;
}

int eng_checkpoint(eng_db *db)
{
    db_role_acquire(db);
    int rc = checkpoint_locked(db);
    db_role_release(db);
    return rc;
}

/* ---- transactions ---- */

typedef struct tpage {
    uint32_t pgno, objid;
    uint64_t base_dbtime;
    uint8_t *page;
    uint8_t is_new, image, unchanged;
    struct tpage *next;  /* every page of the transaction */
    struct tpage *hnext; /* bucket chain by page number */
} tpage;

#define TBUCKETS 256

struct eng_txn {
    eng_db *db;
    eng_view view;
    tpage *buckets[TBUCKETS];
    tpage *list;
    uint32_t npages, pages_after;
};

int eng_txn_begin(eng_db *db, eng_txn **out)
{
    db_role_acquire(db);
    int rc = 0;
    if (db->fatal)
        rc = refuse_fatal(db);
    else if (eng_log_fatal(db->log))
        rc = db_set_fatal(db, refuse_fatal(db));
    else if (eng_log_disk_full(db->log))
        rc = eng_log_retry_space(db->log);
    eng_txn *t = NULL;
    if (!rc && !(t = calloc(1, sizeof *t)))
        rc = om_errf(OM_E_OutOfMemory, "transaction: out of memory");
    if (rc) {
        db_role_release(db);
        return rc;
    }
    t->db = db;
    t->view = (eng_view){db, t};
    t->pages_after = db->pages;
    *out = t;
    return 0;
}

static void txn_free(eng_txn *t)
{
    tpage *p = t->list;
    while (p) {
        tpage *n = p->next;
        free(p->page);
        free(p);
        p = n;
    }
    free(t);
}

void eng_txn_rollback(eng_txn *t)
{
    if (!t) return;
    eng_db *db = t->db;
    txn_free(t);
    db_role_release(db);
}

static tpage *tfind(eng_txn *t, uint32_t pgno)
{
    for (tpage *p = t->buckets[pgno % TBUCKETS]; p; p = p->hnext)
        if (p->pgno == pgno) return p;
    return NULL;
}

static tpage *tadd(eng_txn *t, uint32_t pgno)
{
    tpage *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->page = aligned_alloc(4096, ENG_PAGE_SIZE);
    if (!p->page) {
        free(p);
        return NULL;
    }
    p->pgno = pgno;
    p->next = t->list;
    t->list = p;
    p->hnext = t->buckets[pgno % TBUCKETS];
    t->buckets[pgno % TBUCKETS] = p;
    t->npages++;
    return p;
}

static int check_pgno(eng_txn *t, uint32_t pgno)
{
    if (pgno == 0 || pgno > t->pages_after)
        return om_errf(OM_E_InvalidParameter, "page %u does not exist (the database has %u pages)",
                       pgno, t->pages_after);
    return 0;
}

static int tget(eng_txn *t, uint32_t pgno, tpage **out)
{
    tpage *p = tfind(t, pgno);
    if (p) {
        *out = p;
        return 0;
    }
    int rc = check_pgno(t, pgno);
    if (rc) return rc;
    frame *f = NULL;
    pthread_rwlock_rdlock(&t->db->plock);
    rc = cache_get(t->db, pgno, 1, &f);
    if (!rc && !(p = tadd(t, pgno))) rc = om_errf(OM_E_OutOfMemory, "transaction: out of memory");
    if (!rc) {
        memcpy(p->page, f->page, ENG_PAGE_SIZE);
        eng_pghdr h;
        eng_pghdr_get(p->page, &h);
        p->base_dbtime = h.dbtime;
        p->objid = h.objid;
    }
    pthread_rwlock_unlock(&t->db->plock);
    if (!rc) *out = p;
    return rc;
}

/* While held the .edb must keep its size too (a shadow copy links it): the growth waits for the
 * release, and only the room for it is checked now. */
static int check_room(eng_db *db, uint64_t want)
{
    uint64_t have = db->grow_to > db->file_pages ? db->grow_to : db->file_pages, free_b = 0;
    if (!db->vfs->free_space || want <= have) return 0;
    int rc = db->vfs->free_space(db->vfs, db->edb, &free_b);
    if (rc) return rc;
    if (free_b / ENG_PAGE_SIZE < want - have)
        return om_errf(OM_E_DiskFull, "%s: no room to grow by %llu pages (%llu bytes free)",
                       db->edb, (unsigned long long)(want - have), (unsigned long long)free_b);
    return 0;
}

int eng_page_alloc(eng_txn *t, uint32_t objid, uint32_t *pgno)
{
    eng_db *db = t->db;
    uint32_t n = t->pages_after + 1;
    if (n >= 0x7FFFFFF0u)
        return om_errf(OM_E_OutOfDatabaseSpace, "%s has reached its maximum size", db->edb);
    if (n > db->file_pages && n > db->grow_to) {
        /* Reserve room in the file now: running out of space must fail this call, not a
         * checkpoint write later. */
        uint64_t want = n + (n / 8 > GROW_PAGES ? n / 8 : GROW_PAGES);
        int rc = db->hold ? check_room(db, want) : om_resize(db->edbf, (want + 2) * ENG_PAGE_SIZE);
        if (rc)
            return om_err_ctx(rc, "growing %s to %llu pages", db->edb, (unsigned long long)want);
        if (db->hold)
            db->grow_to = want;
        else
            db->file_pages = want;
    }
    tpage *p = tadd(t, n);
    if (!p) return om_errf(OM_E_OutOfMemory, "transaction: out of memory");
    memset(p->page, 0, ENG_PAGE_SIZE);
    p->objid = objid;
    p->is_new = 1;
    p->image = 1;
    t->pages_after = n;
    *pgno = n;
    return 0;
}

int eng_page_write(eng_txn *t, uint32_t pgno, uint32_t off, const void *data, uint32_t len)
{
    if (off > ENG_PAGE_BODY || len > ENG_PAGE_BODY - off)
        return om_errf(OM_E_InvalidParameter,
                       "write of %u bytes at offset %u is past the page body (%u)", len, off,
                       ENG_PAGE_BODY);
    if (len == 0) return 0;
    tpage *p = NULL;
    int rc = tget(t, pgno, &p);
    if (rc) return rc;
    memcpy(p->page + ENG_PAGE_HDR + off, data, len);
    return 0;
}

int eng_txn_page_read(eng_txn *t, uint32_t pgno, void *body)
{
    tpage *q = tfind(t, pgno);
    if (q) {
        memcpy(body, q->page + ENG_PAGE_HDR, ENG_PAGE_BODY);
        return 0;
    }
    int rc = check_pgno(t, pgno);
    return rc ? rc : eng_page_read(t->db, pgno, body);
}

static uint32_t trimmed_len(const uint8_t *body)
{
    uint32_t n = ENG_PAGE_BODY;
    while (n > 0 && body[n - 1] == 0)
        n--;
    return n;
}

/* The changed byte ranges of a page body against its committed version. Ranges closer than
 * DIFF_GAP bytes are merged (a range costs 4 bytes of header). Returns the count, or -1 when
 * there are more than max (log the whole page instead). */
#define DIFF_GAP 16
static int diff_ranges(const uint8_t *old, const uint8_t *cur, eng_range *out, int max,
                       uint32_t *total)
{
    int n = 0;
    uint32_t i = 0;
    *total = 0;
    while (i < ENG_PAGE_BODY) {
        /* Skip equal bytes 8 at a time where possible. */
        while (i + 8 <= ENG_PAGE_BODY && memcmp(old + i, cur + i, 8) == 0)
            i += 8;
        while (i < ENG_PAGE_BODY && old[i] == cur[i])
            i++;
        if (i >= ENG_PAGE_BODY) break;
        uint32_t start = i, end = i + 1, same = 0;
        for (i = end; i < ENG_PAGE_BODY && same <= DIFF_GAP; i++) {
            if (old[i] == cur[i])
                same++;
            else {
                same = 0;
                end = i + 1;
            }
        }
        i = end;
        if (n == max) return -1;
        out[n++] = (eng_range){(uint16_t)start, (uint16_t)(end - start), cur + start};
        *total += end - start;
    }
    return n;
}

/* Encodes the page record of p into buf; sets *image when it logged the whole page. A page
 * whose body did not change logs nothing and keeps its dbtime (p->unchanged). */
static uint32_t encode_tpage(eng_txn *t, tpage *p, uint64_t txn, uint8_t *buf, eng_range *ranges,
                             int *image)
{
    eng_db *db = t->db;
    /* Readers may insert frames (and grow the table) meanwhile: look up under the mutex. The
     * frame itself stays: only the writer role, which we hold, evicts or replaces it. */
    pthread_mutex_lock(&db->cmu);
    frame *f = p->is_new ? NULL : cache_lookup(db, p->pgno);
    pthread_mutex_unlock(&db->cmu);
    int img = p->image || !f;
    int nr = 0;
    uint32_t total = 0;
    const uint8_t *body = p->page + ENG_PAGE_HDR;
    if (!img) {
        nr = diff_ranges(f->page + ENG_PAGE_HDR, body, ranges, ENG_MAX_RANGES, &total);
        if (nr == 0) {
            p->unchanged = 1;
            *image = 0;
            return 0;
        }
        if (nr < 0 || total > ENG_PAGE_BODY / 2) img = 1;
    }
    uint64_t after = ++db->dbtime;
    eng_pghdr_set(p->page, p->pgno, p->objid, after, 0);
    uint8_t flags = 0;
    if (img) {
        /* An image is the page's non-zero ranges: a slotted page keeps its cells at the end, so
         * a half-full page is mostly a run of zeros in the middle. */
        static const uint8_t zeros[ENG_PAGE_BODY];
        flags = ENG_RECF_IMAGE | (p->is_new ? ENG_RECF_NEW_PAGE : 0);
        nr = diff_ranges(zeros, body, ranges, ENG_MAX_RANGES, &total);
        if (nr < 0) {
            ranges[0] = (eng_range){0, (uint16_t)trimmed_len(body), body};
            nr = ranges[0].len ? 1 : 0;
        }
    }
    *image = img;
    return eng_rec_encode_page(buf, txn, flags, p->pgno, p->objid, 0, p->base_dbtime, after, ranges,
                               (uint32_t)nr);
}

/* A durable commit that changed nothing still keeps the promise that it makes every earlier
 * lazy commit durable. */
static int nothing_to_commit(eng_db *db, unsigned flags)
{
    return flags & ENG_COMMIT_LAZY ? 0 : eng_log_flush(db);
}

int eng_txn_commit(eng_txn *t, unsigned flags)
{
    eng_db *db = t->db;
    uint8_t *recs = NULL;
    int rc = 0;
    if (t->npages == 0) {
        eng_txn_rollback(t);
        return nothing_to_commit(db, flags);
    }
    if (db->fatal) {
        eng_txn_rollback(t);
        return refuse_fatal(db);
    }
    uint64_t txn = db->txn_last + 1;
    size_t cap = (size_t)t->npages * ENG_REC_MAX + 64, len = 0;
    int *images = calloc(t->npages, sizeof *images);
    eng_range *ranges = malloc(ENG_MAX_RANGES * sizeof *ranges);
    recs = malloc(cap);
    if (!recs || !images || !ranges) {
        free(images);
        free(recs);
        free(ranges);
        eng_txn_rollback(t);
        return om_errf(OM_E_OutOfMemory, "commit: out of memory");
    }
    uint32_t i = 0;
    for (tpage *p = t->list; p; p = p->next, i++)
        len += encode_tpage(t, p, txn, recs + len, ranges, &images[i]);
    free(ranges);
    if (len == 0) { /* every page came back to what it was */
        free(recs);
        free(images);
        eng_txn_rollback(t);
        return nothing_to_commit(db, flags);
    }
    len += eng_rec_encode_commit(recs + len, txn, om_now_ns(), db->dbtime);
    uint64_t end = 0;
    rc = eng_log_append(db->log, recs, (uint32_t)len, &end);
    free(recs);
    if (rc) {
        free(images);
        db_set_fatal(db, rc);
        eng_txn_rollback(t);
        return rc;
    }
    db->txn_last = txn;
    /* Publish: every page of the transaction changes at once for readers. */
    pthread_rwlock_wrlock(&db->plock);
    i = 0;
    for (tpage *p = t->list; p; p = p->next, i++) {
        if (p->unchanged) continue;
        frame *f = cache_lookup(db, p->pgno);
        if (!f) f = cache_insert_new(db, p->pgno);
        if (!f) {
            rc = om_errf(OM_E_OutOfMemory, "commit: out of memory");
            break;
        }
        uint8_t *old = f->page;
        f->page = p->page;
        p->page = old;
        if (!f->dirty) db->ndirty++;
        f->dirty = 1;
        f->status = ENG_PAGE_OK;
        f->lsn = end;
        db->st.page_images += (uint64_t)images[i];
    }
    if (t->pages_after > db->pages) db->pages = t->pages_after;
    pthread_rwlock_unlock(&db->plock);
    free(images);
    db->st.commits++;
    int want_ckpt = !db->hold && (eng_log_gen(db->log) >= db->ckpt.gen + db->checkpoint_gens ||
                                  (uint64_t)db->ndirty * ENG_PAGE_SIZE >= db->cache_bytes);
    if (rc) db_set_fatal(db, rc);
    txn_free(t);
    if (!rc && want_ckpt) rc = checkpoint_locked(db);
    if (!rc && db->hold) rc = hold_spill(db);
    db_role_release(db);
    if (rc) return rc;
    if (!(flags & ENG_COMMIT_LAZY)) {
        rc = eng_log_flush_to(db->log, end);
        if (rc) return db_set_fatal(db, rc);
    }
    return 0;
}

/* Reads add clean frames and only commits trimmed them: a database only read would grow its
 * cache to its size. Past the cache's size a reader drops the clean frames once it is done,
 * when it can take the writer role (a writer reads frames without plock: only the role frees
 * them) and plock for writing at once; it never waits (the same thread may hold another view,
 * or the role), the next reader or commit does it otherwise. */
static void trim_after_read(eng_db *db)
{
    pthread_mutex_lock(&db->cmu);
    int over = (uint64_t)db->nframes * ENG_PAGE_SIZE > db->cache_bytes;
    pthread_mutex_unlock(&db->cmu);
    if (!over) return;
    pthread_mutex_lock(&db->wmu);
    int role = !db->writer_active && !db->frozen;
    if (role) db->writer_active = 1;
    pthread_mutex_unlock(&db->wmu);
    if (!role) return;
    if (pthread_rwlock_trywrlock(&db->plock) == 0) {
        cache_trim(db);
        pthread_rwlock_unlock(&db->plock);
    }
    db_role_release(db);
}

int eng_page_read(eng_db *db, uint32_t pgno, void *body)
{
    pthread_rwlock_rdlock(&db->plock);
    int rc = 0;
    if (pgno == 0 || pgno > db->pages)
        rc = om_errf(OM_E_InvalidParameter, "page %u does not exist (the database has %u pages)",
                     pgno, db->pages);
    frame *f = NULL;
    if (!rc) rc = cache_get(db, pgno, 1, &f);
    if (!rc) memcpy(body, f->page + ENG_PAGE_HDR, ENG_PAGE_BODY);
    pthread_rwlock_unlock(&db->plock);
    trim_after_read(db);
    return rc;
}

int eng_page_objid(eng_db *db, uint32_t pgno, uint32_t *objid)
{
    pthread_rwlock_rdlock(&db->plock);
    int rc = 0;
    if (pgno == 0 || pgno > db->pages)
        rc = om_errf(OM_E_InvalidParameter, "page %u does not exist (the database has %u pages)",
                     pgno, db->pages);
    frame *f = NULL;
    if (!rc) rc = cache_get(db, pgno, 1, &f);
    if (!rc) {
        eng_pghdr h;
        eng_pghdr_get(f->page, &h);
        *objid = h.objid;
    }
    pthread_rwlock_unlock(&db->plock);
    trim_after_read(db);
    return rc;
}

int eng_log_flush(eng_db *db)
{
    if (db->fatal) return refuse_fatal(db);
    int rc = eng_log_flush_to(db->log, eng_log_end_lsn(db->log));
    return rc ? db_set_fatal(db, rc) : 0;
}

/* ---- close ---- */

int eng_db_close(eng_db *db)
{
    if (!db) return 0;
    db_role_acquire(db);
    int rc = db->fatal;
    if (rc) {
        rc = refuse_fatal(db);
        goto out;
    }
    db->hold = 0;
    uint8_t rec[128];
    uint64_t now = om_now_ns();
    uint32_t n = eng_rec_encode_attach(rec, db->txn_last + 1, ENG_REC_TERM, now, &db->hdr.db_sig);
    eng_lgpos at;
    if ((rc = log_group(db, rec, n, &at))) goto out;
    eng_lgpos end = eng_log_lgpos(db->log, eng_log_end_lsn(db->log));
    if ((rc = db_flush_pages(db))) goto out;
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
    rc = db_write_chk(db, end);
out:
    pthread_mutex_lock(&db->wmu);
    db->writer_active = 0;
    pthread_mutex_unlock(&db->wmu);
    eng_db_abandon(db);
    return rc;
}

/* ---- information ---- */

int eng_db_info(eng_db *db, eng_info *info)
{
    memset(info, 0, sizeof *info);
    db_role_acquire(db);
    info->db_id = db->hdr.db_id;
    info->state = db->hdr.state;
    info->dbtime = db->dbtime;
    info->pages = db->pages;
    info->checkpoint = db->ckpt;
    info->gen_current = eng_log_gen(db->log);
    memcpy(info->slots, db->hdr.slots, sizeof info->slots);
    info->log_disk_full = eng_log_disk_full(db->log);
    info->fatal = db->fatal != 0 || eng_log_fatal(db->log) != 0;
    uint32_t *gens = NULL, n = 0;
    int rc = eng_log_list_gens(db->vfs, db->logdir, db->base, &gens, &n);
    info->gen_oldest = info->gen_current;
    for (uint32_t i = 0; i < n; i++)
        if (gens[i] < info->gen_oldest) info->gen_oldest = gens[i];
    free(gens);
    db_role_release(db);
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

/* ---- backup hooks ---- */

int eng_backup_freeze(eng_db *db, uint32_t kind, eng_lgpos *mark, uint32_t *last_gen)
{
    db_role_acquire(db);
    int rc = db->fatal ? refuse_fatal(db) : 0;
    uint8_t rec[64];
    if (!rc) {
        uint32_t n = eng_rec_encode_mark(rec, db->txn_last + 1, kind, om_now_ns());
        rc = log_group(db, rec, n, mark);
    }
    if (!rc) {
        *last_gen = eng_log_gen(db->log);
        rc = eng_log_roll(db->log);
        if (rc) db_set_fatal(db, rc);
    }
    pthread_mutex_lock(&db->wmu);
    db->writer_active = 0;
    if (!rc) db->frozen = 1;
    pthread_cond_broadcast(&db->wcond);
    pthread_mutex_unlock(&db->wmu);
    return rc;
}

int eng_backup_thaw(eng_db *db)
{
    pthread_mutex_lock(&db->wmu);
    int was = db->frozen;
    db->frozen = 0;
    pthread_cond_broadcast(&db->wcond);
    pthread_mutex_unlock(&db->wmu);
    return was ? 0 : om_errf(OM_E_InvalidBackupSequence, "%s is not frozen", db->edb);
}

int eng_hold_pages(eng_db *db)
{
    db_role_acquire(db);
    db->hold++;
    db_role_release(db);
    return 0;
}

int eng_release_pages(eng_db *db)
{
    db_role_acquire(db);
    int rc = 0;
    if (db->hold == 0)
        rc = om_errf(OM_E_InvalidBackupSequence, "%s: page writes are not held", db->edb);
    else
        db->hold--;
    /* Spilled pages go back to the .edb now (the hold file is deleted), and a header write a
     * backup record deferred is made. */
    if (!rc && db->hold == 0 && (db->hf.f || db->hf.count || db->hdr_deferred))
        rc = checkpoint_locked(db);
    db_role_release(db);
    return rc;
}

int eng_truncate_logs(eng_db *db, uint32_t below, uint32_t *deleted)
{
    db_role_acquire(db);
    uint32_t bound = below < db->ckpt.gen ? below : db->ckpt.gen;
    int rc = eng_log_delete_below(db->vfs, db->logdir, db->base, bound, deleted);
    db_role_release(db);
    return rc;
}

int eng_record_backup(eng_db *db, enum eng_bkslot_id slot, const eng_bkslot *s)
{
    if ((unsigned)slot >= ENG_BK_NSLOTS)
        return om_errf(OM_E_InvalidParameter, "backup slot %d does not exist", slot);
    db_role_acquire(db);
    int rc = db->fatal ? refuse_fatal(db) : 0;
    uint32_t clear = slot == ENG_BK_PREV_FULL
                         ? (1u << ENG_BK_PREV_INCREMENTAL | 1u << ENG_BK_PREV_DIFFERENTIAL)
                         : 0;
    uint8_t rec[128];
    if (!rc)
        rc = log_group(db, rec, eng_rec_encode_bkslot(rec, db->txn_last + 1, slot, clear, s), NULL);
    if (!rc) {
        db->hdr.slots[slot] = *s;
        for (int i = 0; i < ENG_BK_NSLOTS; i++)
            if (clear & (1u << i)) memset(&db->hdr.slots[i], 0, sizeof db->hdr.slots[i]);
        db->hdr.txn_last = db->txn_last;
        /* While held the .edb must not change: the record is durable in the log (replay
         * rebuilds the slot), and the release's checkpoint writes the header. */
        if (db->hold)
            db->hdr_deferred = 1;
        else if ((rc = eng_dbhdr_write(db->edbf, &db->hdr)))
            db_set_fatal(db, rc);
    }
    db_role_release(db);
    return rc;
}

int eng_db_roll_log(eng_db *db)
{
    db_role_acquire(db);
    int rc = db->fatal ? refuse_fatal(db) : eng_log_roll(db->log);
    if (rc && !db->fatal) db_set_fatal(db, rc);
    db_role_release(db);
    return rc;
}

/* ---- page access for the tree (db_internal.h) ---- */

eng_db *db_txn_db(eng_txn *t)
{
    return t->db;
}

eng_view *eng_txn_view(eng_txn *t)
{
    return &t->view;
}

int db_txn_page_ro(eng_txn *t, uint32_t pgno, const uint8_t **body)
{
    tpage *p = tfind(t, pgno);
    if (p) {
        *body = p->page + ENG_PAGE_HDR;
        return 0;
    }
    int rc = check_pgno(t, pgno);
    if (rc) return rc;
    /* Only this transaction's commit can replace a frame, and only the writer role (which
     * it holds) evicts: the committed page stays put while the transaction runs. */
    frame *f = NULL;
    rc = cache_get(t->db, pgno, 1, &f);
    if (!rc) *body = f->page + ENG_PAGE_HDR;
    return rc;
}

int db_txn_page_mut(eng_txn *t, uint32_t pgno, uint8_t **body)
{
    tpage *p = NULL;
    int rc = tget(t, pgno, &p);
    if (!rc) *body = p->page + ENG_PAGE_HDR;
    return rc;
}

int db_txn_page_reinit(eng_txn *t, uint32_t pgno, uint32_t objid, uint8_t **body)
{
    tpage *p = NULL;
    int rc = tget(t, pgno, &p);
    if (rc) return rc;
    memset(p->page + ENG_PAGE_HDR, 0, ENG_PAGE_BODY);
    p->objid = objid;
    p->image = 1; /* a new life for the page: log all of it */
    *body = p->page + ENG_PAGE_HDR;
    return 0;
}

int db_txn_page_alloc(eng_txn *t, uint32_t objid, uint32_t *pgno, uint8_t **body)
{
    int rc = eng_page_alloc(t, objid, pgno);
    if (!rc) rc = db_txn_page_mut(t, *pgno, body);
    return rc;
}

void db_read_lock(eng_db *db)
{
    pthread_rwlock_rdlock(&db->plock);
}
void db_read_unlock(eng_db *db)
{
    pthread_rwlock_unlock(&db->plock);
    trim_after_read(db);
}

int db_view_page(eng_db *db, uint32_t pgno, const uint8_t **body)
{
    if (pgno == 0 || pgno > db->pages)
        return om_errf(OM_E_DatabaseCorrupted,
                       "%s: a tree points to page %u, past the end (%u pages)", db->edb, pgno,
                       db->pages);
    frame *f = NULL;
    int rc = cache_get(db, pgno, 1, &f);
    if (!rc) *body = f->page + ENG_PAGE_HDR;
    return rc;
}

uint32_t db_page_count(eng_db *db)
{
    return db->pages;
}
