/* Checkpoints: the dirty pages (and the pages held in the hold file) to the .edb, journalled
 * first; then the header; then E00.chk. Order of durable writes: log -> pages -> header ->
 * checkpoint file, so a crash anywhere leaves a checkpoint that replay can start from. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/pool.h"
#include "base/time.h"
#include "engine/db_internal.h"

int eng_ckpt_write_chk(eng_db *db, eng_lgpos c)
{
    eng_chkfile ck = {0};
    ck.checkpoint = c;
    ck.log_sig = db->hdr.log_sig;
    ck.db_sig = db->hdr.db_sig;
    ck.time = om_now_ns();
    ck.last_full = db->hdr.slots[ENG_BK_PREV_FULL].mark;
    ck.last_incremental = db->hdr.slots[ENG_BK_PREV_INCREMENTAL].mark;
    memcpy(ck.base, db->base, 4);
    /* Taken after the .edb's writes this checkpoint stands for (its header last), and only by an
     * open that keeps the change map, which compared the stamp when it opened (changemap.c): an
     * open without one (dbutil's recovery, a passive copy's replay) never checked what wrote the
     * file before it, and must not vouch for it. A stamp that is not taken, or cannot be had,
     * stays 0, which no file matches: the map is then not trusted at the next mount. */
    if (db->cbt && om_fstamp(db->edbf, &ck.edb)) {
        memset(&ck.edb, 0, sizeof ck.edb);
        om_err_clear();
    }
    return eng_chk_write(db->vfs, db->chk, &ck);
}

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

/* Pages per journalled batch when held pages go back: half the cache budget, within 16..256
 * (8 MiB). */
static uint32_t batch_pages(eng_db *db)
{
    uint64_t b = db->cache_bytes / ENG_PAGE_SIZE / 2;
    return b < 16 ? 16 : b > 256 ? 256 : (uint32_t)b;
}

/* One batch: journal, in place, sync. */
static int write_batch(eng_db *db, frame *fr, frame **fp, uint32_t n)
{
    (void)fr;
    int rc = eng_pgj_write(db, fp, n);
    if (!rc) rc = eng_ckpt_write_in_place(db, fp, n);
    if (!rc) rc = om_sync(db->edbf);
    if (!rc) db->st.pages_flushed += n;
    return rc;
}

/* Writes every page whose latest image is in the hold file to the .edb, in batches, each
 * journalled first (hold.c says why). A dirty frame is newer than the hold file's copy: the
 * checkpoint writes it with the others. The index does not change meanwhile: only the writer
 * role, which the caller holds, changes it. */
static int write_back_held(eng_db *db)
{
    if (!db->hf.count) return 0;
    uint32_t *pg = NULL, n = 0, batch = batch_pages(db);
    frame *fr = calloc(batch, sizeof *fr);
    frame **fp = calloc(batch, sizeof *fp);
    uint8_t *buf = aligned_alloc(4096, (size_t)batch * ENG_PAGE_SIZE);
    int rc = fr && fp && buf ? eng_hold_list(db, &pg, &n)
                             : om_errf(OM_E_OutOfMemory, "writing held pages back: out of memory");
    if (rc) goto out;
    uint32_t keep = 0;
    pthread_mutex_lock(&db->cmu);
    for (uint32_t i = 0; i < n; i++) {
        frame *f = eng_cache_lookup(db, pg[i]);
        if (!f || !f->dirty) pg[keep++] = pg[i];
    }
    pthread_mutex_unlock(&db->cmu);
    for (uint32_t done = 0; done < keep && !rc;) {
        uint32_t b = keep - done < batch ? keep - done : batch;
        for (uint32_t i = 0; i < b && !rc; i++) {
            uint64_t off = 0;
            eng_hold_lookup(db, pg[done + i], &off);
            fr[i].pgno = pg[done + i];
            fr[i].page = buf + (size_t)i * ENG_PAGE_SIZE;
            fp[i] = &fr[i];
            rc = eng_hold_read(db, fr[i].pgno, off, fr[i].page);
        }
        if (!rc) rc = write_batch(db, fr, fp, b);
        done += b;
    }
out:
    free(pg);
    free(fr);
    free(fp);
    free(buf);
    return rc;
}

/* The change map hears of every page that is about to reach the .edb, before it does
 * (changemap.c): the held ones and the dirty frames. */
static int note_changes(eng_db *db)
{
    uint32_t *pg = NULL, n = 0, nd = 0;
    frame **v = NULL;
    int rc = db->hf.count ? eng_hold_list(db, &pg, &n) : 0;
    if (!rc) rc = eng_cache_dirty_frames(db, &v, &nd);
    uint32_t *all = !rc && nd ? realloc(pg, (n + nd) * sizeof *pg) : pg;
    if (!rc && nd && !all) rc = om_errf(OM_E_OutOfMemory, "noting changed pages: out of memory");
    if (!rc) {
        for (uint32_t i = 0; i < nd; i++)
            all[n + i] = v[i]->pgno;
        rc = eng_cbt_note(db, all, n + nd);
        if (!rc && !n && !nd) rc = eng_cbt_flush(db);
    }
    free(all ? all : pg);
    free(v);
    return rc;
}

/* Pages are sealed and written by the cores, in runs of consecutive pages per worker. */
typedef struct page_run {
    eng_db *db;
    frame **v;
    uint32_t n, per;
    int seal, write;
} page_run;

static int run_chunk(void *ctx, void *ws, size_t i)
{
    (void)ws;
    page_run *r = ctx;
    uint32_t a = (uint32_t)i * r->per, b = a + r->per < r->n ? a + r->per : r->n;
    for (uint32_t k = a; k < b && r->seal; k++)
        eng_page_seal(r->v[k]->page, r->v[k]->pgno);
    if (!r->write) return 0;
    int rc = eng_cache_write_frames(r->db->edbf, r->v + a, b - a, 1, 0);
    om_vfs *v = r->db->vfs;
    if (!rc && v->writeback && b > a)
        v->writeback(r->db->edbf, eng_page_offset(r->v[a]->pgno),
                     eng_page_offset(r->v[b - 1]->pgno) + ENG_PAGE_SIZE -
                         eng_page_offset(r->v[a]->pgno));
    return rc;
}

static int over_pages(eng_db *db, frame **v, uint32_t n, int seal, int write)
{
    enum { PER = 64 }; /* 2 MiB of pages a chunk */
    if (!n) return 0;
    page_run r = {.db = db, .v = v, .n = n, .per = PER, .seal = seal, .write = write};
    om_pool pool = {.workers = n > PER ? 0 : 1, .ctx = &r, .fn = run_chunk};
    return om_pool_run(&pool, (n + PER - 1) / PER);
}

int eng_ckpt_write_in_place(eng_db *db, frame **v, uint32_t n)
{
    page_run r = {.db = db, .v = v, .n = n, .per = n, .write = 1};
    return n ? run_chunk(&r, NULL, 0) : 0;
}

/* Frames that are not rebuilt (db_internal.h): the page journal's share of v (malloc'd). */
static int journal_share(frame **v, uint32_t n, frame ***out, uint32_t *nj)
{
    frame **j = malloc((n ? n : 1) * sizeof *j);
    if (!j) return om_errf(OM_E_OutOfMemory, "checkpoint: out of memory");
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!v[i]->rebuilt) j[k++] = v[i];
    *out = j;
    *nj = k;
    return 0;
}

/* After a checkpoint the resume position moves: what replay met before it says nothing of what
 * a rerun replays (the replay keeps what it must, eng_replay_checkpoint). */
static void forget_rebuilt(eng_db *db)
{
    pthread_mutex_lock(&db->cmu);
    for (uint32_t i = 0; i < db->hsize; i++)
        for (frame *f = db->htab[i]; f; f = f->next)
            f->rebuilt = 0, f->met_gen = 0;
    pthread_mutex_unlock(&db->cmu);
}

int eng_ckpt_flush_pages(eng_db *db)
{
    frame **v = NULL, **jv = NULL;
    uint32_t n = 0, nj = 0;
    ENG_CHECK(db, ENG_AT_FLUSH);
    int rc = note_changes(db);
    if (!rc) rc = grow_deferred(db);
    /* Pages spilled while held first (in batches of their own), then the dirty frames. */
    if (!rc) rc = write_back_held(db);
    if (!rc) rc = eng_cache_dirty_frames(db, &v, &n);
    if (rc) return rc;
    rc = over_pages(db, v, n, 1, 0);
    /* Journal first (synced), then in place: a page torn by a crash here can be restored, or
     * (rebuilt) is rebuilt by replay. */
    if (!rc && n) rc = journal_share(v, n, &jv, &nj);
    if (!rc && n) rc = eng_pgj_write(db, jv, nj);
    if (!rc) rc = over_pages(db, v, n, 0, 1);
    if (!rc && (n || db->unsynced)) rc = om_sync(db->edbf);
    if (!rc) {
        db->unsynced = 0;
        pthread_mutex_lock(&db->cmu);
        for (uint32_t i = 0; i < n; i++)
            v[i]->dirty = 0;
        db->ndirty = 0;
        pthread_mutex_unlock(&db->cmu);
        forget_rebuilt(db);
        db->st.pages_flushed += n;
        if (db->hf.f || db->hf.count) eng_cache_end_hold(db);
    }
    free(v);
    free(jv);
    return rc;
}

int eng_ckpt_write_rebuilt(eng_db *db, uint32_t *n)
{
    frame **v = NULL;
    uint32_t k = 0, cnt = 0;
    *n = 0;
    int rc = eng_cache_dirty_frames(db, &v, &cnt);
    if (rc) return rc;
    for (uint32_t i = 0; i < cnt; i++)
        if (v[i]->rebuilt) v[k++] = v[i];
    /* The change map hears of them before they reach the .edb, as at a checkpoint. */
    uint32_t *pg = k ? malloc(k * sizeof *pg) : NULL;
    if (k && !pg) rc = om_errf(OM_E_OutOfMemory, "noting changed pages: out of memory");
    for (uint32_t i = 0; pg && i < k; i++)
        pg[i] = v[i]->pgno;
    if (!rc && k) rc = eng_cbt_note(db, pg, k);
    free(pg);
    if (!rc) rc = over_pages(db, v, k, 1, 1);
    if (!rc && k) {
        db->unsynced = 1;
        pthread_mutex_lock(&db->cmu);
        for (uint32_t i = 0; i < k; i++)
            v[i]->dirty = 0;
        db->ndirty -= k;
        pthread_mutex_unlock(&db->cmu);
        db->st.pages_flushed += k;
        *n = k;
    }
    free(v);
    return rc;
}

/* Caller holds the writer role. Order of durable writes: log -> pages -> header -> checkpoint. */
int eng_ckpt_locked(eng_db *db)
{
    if (db->fatal) return eng_fatal_refuse(db);
    if (db->hold) return 0;
    uint64_t end = eng_log_end_lsn(db->log);
    int rc = eng_log_flush_to(db->log, end);
    if (rc) return eng_fatal_set(db, rc);
    eng_lgpos c = eng_log_lgpos(db->log, end);
    if ((rc = eng_ckpt_flush_pages(db))) return eng_fatal_set(db, rc);
    uint32_t cur = eng_log_gen(db->log);
    db->hdr.dbtime = db->dbtime;
    db->hdr.pages = db->pages;
    db->hdr.txn_last = db->txn_last;
    db->hdr.log_req_min = c.gen;
    db->hdr.log_req_max = cur;
    db->hdr.log_committed = cur;
    if ((rc = eng_dbhdr_write(db->edbf, &db->hdr))) return eng_fatal_set(db, rc);
    db->hdr_deferred = 0;
    if ((rc = eng_ckpt_write_chk(db, c))) return eng_fatal_set(db, rc);
    db->ckpt = c;
    eng_log_set_checkpoint(db->log, c);
    pthread_rwlock_wrlock(&db->plock);
    eng_cache_trim(db);
    pthread_rwlock_unlock(&db->plock);
    db->st.checkpoints++;
    if ((db->hdr.flags & ENG_DBF_CIRCULAR) || db->trunc_backup) {
        rc = eng_trunc_apply(db, NULL);
        if (rc) om_warn("truncating the logs of %s: %s", db->edb, om_err_detail());
    }
    ENG_CHECK(db, ENG_AT_CHECKPOINT);
    return 0;
}

uint32_t eng_trunc_point(const eng_db *db)
{
    uint32_t p = (db->hdr.flags & ENG_DBF_CIRCULAR) ? db->ckpt.gen : 0;
    if (db->trunc_backup > p) p = db->trunc_backup;
    return p < db->ckpt.gen ? p : db->ckpt.gen;
}

uint32_t eng_trunc_floor(eng_db *db)
{
    if (db->trunc_floor && om_mono_ns() >= db->trunc_floor_until) {
        /* Whoever set it stopped renewing it (the replication service is gone): the copies it
         * held logs for have held them as long as they may. */
        om_warn("%s: the floor of log truncation for passive copies (generation %u) was not "
                "renewed in time: it no longer holds logs back",
                db->edb, db->trunc_floor);
        db->trunc_floor = 0;
    }
    return db->trunc_floor;
}

int eng_trunc_apply(eng_db *db, uint32_t *deleted)
{
    uint32_t below = eng_trunc_point(db), floor = eng_trunc_floor(db);
    if (floor && floor < below) below = floor;
    if (deleted) *deleted = 0;
    if (below <= 1) return 0;
    return eng_log_delete_below(db->vfs, db->logdir, db->base, below, &db->hdr.log_sig, deleted);
}

int eng_checkpoint(eng_db *db)
{
    eng_role_acquire(db);
    int rc = eng_ckpt_locked(db);
    eng_role_release(db);
    return rc;
}
