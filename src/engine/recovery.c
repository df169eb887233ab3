/* Soft recovery: replay the log from the checkpoint into the page cache, then flush and mark
 * the database Clean Shutdown.
 *
 * Replay applies a transaction's records only when it reaches the transaction's COMMIT; a
 * group cut off by a crash (its COMMIT never written, or a newer transaction id starting) is
 * dropped. A page record applies when the page's dbtime equals the record's dbtime-before; a
 * page already at or past dbtime-after is skipped, so replaying the same log twice changes
 * nothing. A page older than dbtime-before means the storage lost a write it had acknowledged
 * (ReadLostFlushVerifyFailure). A page image (a new page, or one mostly rewritten) replaces the
 * page whatever it holds. Pages torn by a crash during a checkpoint are restored from the page
 * journal before replay starts (journal.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/mem.h"
#include "base/pool.h"
#include "base/time.h"
#include "engine/db_internal.h"

/* Reads generation g of the stream and checks that it continues the chain w expects. */
static int read_gen_checked(eng_db *db, const eng_stream *sf, uint32_t g, eng_chain_want *w,
                            eng_genread *gr, char *p, size_t pn)
{
    eng_stream_path(sf, g, p, pn);
    w->gen = g;
    w->named = g != sf->cur_gen;
    return eng_gen_continues(db->vfs, p, w, gr, NULL);
}

int eng_recovery_log_end(eng_db *db, eng_log_end *end)
{
    memset(end, 0, sizeof *end);
    eng_stream sf;
    int rc = eng_stream_list(db->vfs, db->logdir, db->base, &sf);
    if (rc) return rc;
    uint32_t last = eng_stream_last(&sf);
    if (last) {
        eng_genread g;
        eng_chain_want w;
        char p[4200];
        eng_chain_of_db(&w, &db->hdr, db->edb, last);
        rc = read_gen_checked(db, &sf, last, &w, &g, p, sizeof p);
        if (!rc) {
            end->gen = last;
            end->created = g.hdr.created;
            end->len = g.len;
            end->cur_exists = last == sf.cur_gen;
        }
        eng_gen_free(&g);
    }
    eng_stream_free(&sf);
    return rc;
}

/* ---- replay ---- */

static int lost_flush(eng_db *db, uint32_t pgno, uint64_t have, uint64_t want)
{
    return om_errf(OM_E_ReadLostFlushVerifyFailure,
                   "%s: page %u is at dbtime %llu on disk but the log expects %llu: a write to the "
                   "database was lost by the storage",
                   db->edb, pgno, (unsigned long long)have, (unsigned long long)want);
}

/* Applies one page record to f, which holds its page (the rule at the top of this file). */
static int apply_page(eng_db *db, frame *f, const eng_rec *r, uint32_t *newly_dirty)
{
    uint32_t pgno = r->u.page.pgno;
    eng_pghdr h;
    eng_pghdr_get(f->page, &h);
    int ok = f->status == ENG_PAGE_OK;
    if (ok && h.dbtime >= r->u.page.after) return 0; /* already there */
    if (r->flags & ENG_RECF_IMAGE) {
        /* A blank frame's bytes were never written: the image defines them all (the header's
         * checksum field too, until the checkpoint seals it). */
        memset(f->page + (f->blank ? 0 : ENG_PAGE_HDR), 0,
               f->blank ? ENG_PAGE_SIZE : ENG_PAGE_BODY);
        f->blank = 0;
    } else {
        if (f->status == ENG_PAGE_ZERO)
            return om_errf(OM_E_PageNotInitialized,
                           "%s: page %u is empty on disk but the log changes it", db->edb, pgno);
        if (!ok)
            return om_errf(OM_E_ReadVerifyFailure,
                           "%s: page %u fails its checksum and the log holds no image of it",
                           db->edb, pgno);
        if (h.dbtime < r->u.page.before) return lost_flush(db, pgno, h.dbtime, r->u.page.before);
        if (h.dbtime != r->u.page.before)
            return om_errf(OM_E_DatabaseCorrupted,
                           "%s: page %u is at dbtime %llu, between the log record's %llu and %llu",
                           db->edb, pgno, (unsigned long long)h.dbtime,
                           (unsigned long long)r->u.page.before,
                           (unsigned long long)r->u.page.after);
    }
    for (uint32_t i = 0; i < r->u.page.nranges; i++)
        memcpy(f->page + ENG_PAGE_HDR + r->u.page.ranges[i].off, r->u.page.ranges[i].data,
               r->u.page.ranges[i].len);
    eng_pghdr_set(f->page, pgno, r->u.page.objid, r->u.page.after, r->u.page.pflags);
    f->status = ENG_PAGE_OK;
    if (!f->dirty) {
        f->dirty = 1;
        (*newly_dirty)++;
    }
    return 0;
}

/* ---- the batch ---- */

/* The batch's buffer: address space for a few batches reserved once, advised to take huge
 * pages, so that filling it costs a fault per 2 MiB instead of one per 4 KiB (a 32 MiB batch
 * took 8,000 faults, a fifth of replay's time). Past the reservation (a transaction larger
 * than that), or where it is refused, a malloc'd buffer that doubles. */
enum { BATCH_MAP = 4 * ENG_REPLAY_BATCH };

static uint8_t *batch_map(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return NULL; /* a heap buffer, whose bounds the sanitizer checks (decoding reads past none) */
#endif
    return om_huge_reserve(BATCH_MAP);
}

static void batch_release(eng_replay *rp)
{
    if (rp->bmapped)
        om_huge_release(rp->batch, BATCH_MAP);
    else
        free(rp->batch);
    rp->batch = NULL;
    rp->bmapped = 0;
}

static int batch_grow(eng_replay *rp, uint64_t need)
{
    if (!rp->batch && need <= BATCH_MAP && (rp->batch = batch_map())) {
        rp->bmapped = 1;
        rp->bcap = BATCH_MAP;
        return 0;
    }
    if (need > UINT32_MAX / 2)
        return om_errf(OM_E_OutOfMemory, "replay: a transaction of over 2 GiB of records");
    uint32_t nc = rp->bcap ? rp->bcap * 2 : 1 << 20;
    while (nc < need)
        nc *= 2;
    uint8_t *nb = rp->bmapped ? malloc(nc) : realloc(rp->batch, nc);
    if (!nb) return om_errf(OM_E_OutOfMemory, "replay: out of memory");
    if (rp->bmapped) {
        memcpy(nb, rp->batch, rp->blen);
        batch_release(rp);
    }
    rp->batch = nb;
    rp->bcap = nc;
    return 0;
}

static int batch_add(eng_replay *rp, const uint8_t *p, uint32_t len)
{
    int rc;
    if ((uint64_t)rp->blen + len > rp->bcap && (rc = batch_grow(rp, (uint64_t)rp->blen + len)))
        return rc;
    memcpy(rp->batch + rp->blen, p, len);
    rp->blen += len;
    return 0;
}

/* Room in *v (n used of *cap) for one more entry. */
static int ent_room(eng_replay_ent **v, uint32_t n, uint32_t *cap)
{
    if (n < *cap) return 0;
    uint32_t nc = *cap ? *cap * 2 : 4096;
    eng_replay_ent *ne = realloc(*v, nc * sizeof *ne);
    if (!ne) return om_errf(OM_E_OutOfMemory, "replay: out of memory");
    *v = ne;
    *cap = nc;
    return 0;
}

static int ent_add(eng_replay *rp, uint32_t pgno, uint32_t gen, uint32_t off, uint64_t after)
{
    int rc = ent_room(&rp->ents, rp->nent, &rp->ecap);
    if (rc) return rc;
    rp->ents[rp->nent++] = (eng_replay_ent){.pgno = pgno, .gen = gen, .off = off, .after = after};
    return 0;
}

/* An unfinished transaction (cut off by a crash, or a newer one started) is dropped. */
static void drop_open(eng_replay *rp)
{
    rp->blen = rp->gstart;
    rp->nent = rp->egstart;
    rp->grecs = 0;
}

/* The open transaction committed: its header effects now, its page records stay for the
 * batch (its slot records go: applied here). */
static int commit_open(eng_replay *rp)
{
    eng_db *db = rp->db;
    uint32_t keep = rp->egstart;
    for (uint32_t i = rp->egstart; i < rp->nent; i++) {
        eng_replay_ent e = rp->ents[i];
        if (e.pgno) {
            /* Counted even when the page is already there: a checkpoint may have written the
             * page and not yet the header that counts it. */
            if (e.pgno > db->pages) db->pages = e.pgno;
            if (e.after > db->dbtime) db->dbtime = e.after;
            rp->ents[keep++] = e;
            continue;
        }
        eng_rec *r = &rp->rec;
        uint32_t off = e.off;
        int rc = eng_rec_decode(rp->batch, rp->blen, &off, r);
        if (rc != 1)
            return rc < 0 ? rc : om_errf(OM_E_Internal, "replay: a record of the batch is gone");
        db->hdr.slots[r->u.bkslot.slot] = r->u.bkslot.value;
        for (int k = 0; k < ENG_BK_NSLOTS; k++)
            if (r->u.bkslot.clear_mask & (1u << k))
                memset(&db->hdr.slots[k], 0, sizeof db->hdr.slots[k]);
    }
    rp->nent = rp->egstart = keep;
    rp->gstart = rp->blen;
    db->st.replay_records += rp->grecs;
    db->st.replay_groups++;
    rp->grecs = 0;
    return 0;
}

typedef struct apply_res {
    uint32_t dirty;   /* frames this chunk made dirty */
    uint32_t err_seq; /* its first failing record in log order (UINT32_MAX: none) */
    uint32_t err_gen;
    om_err_saved err;
} apply_res;

typedef struct apply_run {
    eng_replay *rp;
    uint32_t *cut; /* chunk i: entries cut[i] .. cut[i + 1] - 1, whole pages */
    apply_res *res;
} apply_run;

static int apply_begin(void *ctx, void **ws)
{
    (void)ctx;
    *ws = malloc(sizeof(eng_rec));
    return *ws ? 0 : om_errf(OM_E_OutOfMemory, "replay: out of memory");
}

static void apply_end(void *ctx, void *ws)
{
    (void)ctx;
    free(ws);
}

/* The page was met before the last recovery checkpoint in the generation a rerun starts at. */
static int met_before(const eng_replay *rp, uint32_t pgno)
{
    uint32_t lo = 0, hi = rp->nmet;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (rp->met[mid] < pgno)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < rp->nmet && rp->met[lo] == pgno;
}

/* One chunk of pages, each read once and given all of its records of the batch in log order.
 * A page whose record fails takes no more; the other pages go on, so the first failure in log
 * order is found whichever worker meets it. */
static int apply_chunk(void *ctx, void *ws, size_t i)
{
    apply_run *a = ctx;
    eng_replay *rp = a->rp;
    eng_rec *r = ws;
    apply_res *res = &a->res[i];
    for (uint32_t k = a->cut[i], end; k < a->cut[i + 1]; k = end) {
        uint32_t pgno = rp->ents[k].pgno, bad = k;
        for (end = k; end < a->cut[i + 1] && rp->ents[end].pgno == pgno; end++)
            ;
        frame *f = NULL;
        int rc = eng_cache_get_owned(rp->db, pgno, &f);
        for (uint32_t j = k; !rc && j < end; j++) {
            uint32_t off = rp->ents[j].off;
            bad = j;
            rc = eng_rec_decode(rp->batch, rp->blen, &off, r);
            if (rc != 1) {
                if (!rc) rc = om_errf(OM_E_Internal, "replay: a record of the batch is gone");
                break;
            }
            /* Rebuilt: the first record a rerun would meet for the page is an image (applied
             * or not: a torn page takes it whatever it holds). */
            if (!f->met_gen && !met_before(rp, pgno)) f->rebuilt = (r->flags & ENG_RECF_IMAGE) != 0;
            f->met_gen = rp->ents[j].gen;
            rc = apply_page(rp->db, f, r, &res->dirty);
        }
        if (f && f->blank) {
            /* No image reached it (its first record failed): the zeros it stands for. */
            memset(f->page, 0, ENG_PAGE_SIZE);
            f->blank = 0;
        }
        if (rc && rp->ents[bad].seq < res->err_seq) {
            res->err_seq = rp->ents[bad].seq;
            res->err_gen = rp->ents[bad].gen;
            om_err_save(&res->err, rc);
        }
    }
    return 0;
}

static int cmp_ent(const void *x, const void *y)
{
    const eng_replay_ent *a = x, *b = y;
    if (a->pgno != b->pgno) return a->pgno < b->pgno ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Whole pages per chunk, a few chunks per thread so that a page with many records does not
 * leave the other threads idle. */
static uint32_t cut_chunks(const eng_replay_ent *e, uint32_t n, uint32_t want, uint32_t *cut)
{
    uint32_t per = (n + want - 1) / want, c = 0;
    cut[c++] = 0;
    for (uint32_t k = per; k < n && c < want; k += per) {
        while (k < n && e[k].pgno == e[k - 1].pgno)
            k++;
        if (k >= n) break;
        if (k > cut[c - 1]) cut[c++] = k;
    }
    cut[c] = n;
    return c;
}

/* The batch's pages that are not in the cache (e: sorted by page) are asked of the storage at
 * once, in runs of consecutive pages: the workers' reads then find them in the page cache
 * instead of each waiting on the disk for one page. A hint, never an error. */
static void read_ahead(eng_db *db, const eng_replay_ent *e, uint32_t n)
{
    void (*willneed)(om_file *, uint64_t, uint64_t) = db->vfs->willneed;
    uint32_t first = 0, last = 0;
    int run = 0; /* [first, last] is a run to ask for */
    if (!willneed) return;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t pg = e[k].pgno;
        if (k && pg == e[k - 1].pgno) continue;
        pthread_mutex_lock(&db->cmu);
        int cached = eng_cache_lookup(db, pg) != NULL;
        pthread_mutex_unlock(&db->cmu);
        if (cached) continue;
        if (run && pg == last + 1) {
            last = pg;
            continue;
        }
        if (run)
            willneed(db->edbf, eng_page_offset(first),
                     (uint64_t)(last - first + 1) * ENG_PAGE_SIZE);
        first = last = pg;
        run = 1;
    }
    if (run)
        willneed(db->edbf, eng_page_offset(first), (uint64_t)(last - first + 1) * ENG_PAGE_SIZE);
}

enum { HOLD_MAX = 256u << 20 }; /* bytes of records held back at most, whatever the cache */

/* The committed entries [0, *n) of pages below rp->defer_below, and their records' bytes, move
 * to the held-back ones (log order kept); the others close up in [0, *n). */
static int hold_back(eng_replay *rp, uint32_t *n)
{
    uint32_t keep = 0;
    for (uint32_t k = 0; k < *n; k++) {
        eng_replay_ent e = rp->ents[k];
        if (eng_page_offset(e.pgno) >= rp->defer_below) {
            rp->ents[keep++] = e;
            continue;
        }
        uint32_t off = e.off;
        int rc = eng_rec_decode(rp->batch, rp->blen, &off, &rp->rec);
        if (rc != 1)
            return rc < 0 ? rc : om_errf(OM_E_Internal, "replay: a record of the batch is gone");
        uint32_t len = off - e.off;
        if (rp->dlen + (uint64_t)len > rp->dcap) {
            uint64_t nc = rp->dcap ? (uint64_t)rp->dcap * 2 : 1u << 20;
            while (nc < rp->dlen + (uint64_t)len)
                nc *= 2;
            uint8_t *nb = nc <= UINT32_MAX ? realloc(rp->dbuf, nc) : NULL;
            if (!nb) return om_errf(OM_E_OutOfMemory, "replay: out of memory");
            rp->dbuf = nb;
            rp->dcap = (uint32_t)nc;
        }
        if ((rc = ent_room(&rp->dents, rp->ndent, &rp->decap))) return rc;
        memcpy(rp->dbuf + rp->dlen, rp->batch + e.off, len);
        e.off = rp->dlen;
        rp->dents[rp->ndent++] = e;
        rp->dlen += len;
        rp->held_back++;
        if (rp->dlen > rp->held_peak) rp->held_peak = rp->dlen;
    }
    *n = keep;
    return 0;
}

static int apply_sorted(eng_replay *rp, uint32_t n);

static int apply_committed(eng_replay *rp, uint32_t n)
{
    if (rp->defer_below && rp->flushed && __atomic_load_n(rp->flushed, __ATOMIC_ACQUIRE)) {
        /* The laid file is on the disk: its pages are read without waiting from here on. */
        int rc = eng_replay_drain(rp);
        if (rc) return rc;
        rp->defer_below = 0;
    }
    if (!rp->defer_below) return apply_sorted(rp, n);
    int rc = hold_back(rp, &n);
    if (!rc && n) rc = apply_sorted(rp, n);
    if (rc && rp->err_gen && rp->ndent) {
        /* The error is the first failing record in log order: a held-back one of an earlier
         * generation comes first. */
        om_err_saved e;
        uint32_t gen = rp->err_gen;
        om_err_save(&e, rc);
        int drc = eng_replay_drain(rp);
        if (drc && rp->err_gen && rp->err_gen < gen) return drc;
        rp->err_gen = gen;
        return om_err_restore(&e);
    }
    /* Held back past a quarter of the cache, or past hold_max (HOLD_MAX): applied now (their
     * reads may wait on the disk). */
    uint64_t cap = rp->hold_max ? rp->hold_max : HOLD_MAX,
             most = rp->db->cache_bytes / 4 < cap ? rp->db->cache_bytes / 4 : cap;
    if (!rc && rp->dlen > most) rc = eng_replay_drain(rp);
    return rc;
}

int eng_replay_drain(eng_replay *rp)
{
    if (!rp->ndent) return 0;
    uint8_t *batch = rp->batch;
    uint32_t blen = rp->blen;
    eng_replay_ent *ents = rp->ents;
    rp->batch = rp->dbuf;
    rp->blen = rp->dlen;
    rp->ents = rp->dents;
    int rc = apply_sorted(rp, rp->ndent);
    rp->batch = batch;
    rp->blen = blen;
    rp->ents = ents;
    rp->ndent = rp->dlen = 0;
    return rc;
}

static int apply_sorted(eng_replay *rp, uint32_t n)
{
    eng_db *db = rp->db;
    for (uint32_t k = 0; k < n; k++)
        rp->ents[k].seq = k;
    qsort(rp->ents, n, sizeof *rp->ents, cmp_ent);
    read_ahead(db, rp->ents, n);
    int threads = n >= 64 ? om_pool_threads(0, n) : 1;
    uint32_t want = threads > 1 ? (uint32_t)threads * 4 : 1;
    uint32_t *cut = malloc((want + 1) * sizeof *cut);
    apply_res *res = calloc(want, sizeof *res);
    int rc = cut && res ? 0 : om_errf(OM_E_OutOfMemory, "replay: out of memory");
    if (!rc) {
        uint32_t chunks = cut_chunks(rp->ents, n, want, cut);
        for (uint32_t i = 0; i < chunks; i++)
            res[i].err_seq = UINT32_MAX;
        apply_run a = {.rp = rp, .cut = cut, .res = res};
        om_pool pool = {.workers = threads,
                        .ctx = &a,
                        .fn = apply_chunk,
                        .worker_begin = apply_begin,
                        .worker_end = apply_end};
        rc = om_pool_run(&pool, chunks);
        const apply_res *first = NULL;
        for (uint32_t i = 0; i < chunks; i++) {
            db->ndirty += res[i].dirty;
            if (res[i].err_seq != UINT32_MAX && (!first || res[i].err_seq < first->err_seq))
                first = &res[i];
        }
        if (first) {
            rp->err_gen = first->err_gen;
            rc = om_err_restore(&first->err);
        } else if (rc)
            rp->err_gen = rp->ents[0].gen;
    }
    free(cut);
    free(res);
    return rc;
}

int eng_replay_apply(eng_replay *rp)
{
    uint32_t n = rp->egstart;
    int rc = 0;
    if (n) {
        rp->err_gen = 0;
        rc = apply_committed(rp, n);
    }
    /* The open transaction's records move to the front. */
    if (rp->gstart) memmove(rp->batch, rp->batch + rp->gstart, rp->blen - rp->gstart);
    for (uint32_t k = rp->egstart; k < rp->nent; k++) {
        rp->ents[k - n] = rp->ents[k];
        rp->ents[k - n].off -= rp->gstart;
    }
    rp->blen -= rp->gstart;
    rp->gstart = 0;
    rp->nent -= n;
    rp->egstart = 0;
    return rc;
}

/* Writes the replayed pages and records how far replay got, so a crash during a long
 * recovery resumes from here. Hard recovery leaves the checkpoint file alone: it may belong to
 * another stream until the end, and the header's Log Required is where it resumes. */
static int cmp_pgno(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* An earlier checkpoint in the same generation: the pages met before it count too. */
static int merge_met(eng_replay *rp, uint32_t **met, uint32_t *n)
{
    uint32_t *m = realloc(*met, ((size_t)*n + rp->nmet) * sizeof *m);
    if (!m) return om_errf(OM_E_OutOfMemory, "replay: out of memory");
    memcpy(m + *n, rp->met, rp->nmet * sizeof *m);
    *n += rp->nmet;
    qsort(m, *n, sizeof *m, cmp_pgno);
    *met = m;
    return 0;
}

int eng_replay_checkpoint(eng_replay *rp, eng_lgpos at, uint32_t last_gen)
{
    eng_db *db = rp->db;
    uint32_t *met = NULL, nmet = 0;
    int rc = eng_replay_apply(rp);
    if (!rc) rc = eng_replay_drain(rp); /* everything through `at` applied */
    /* A rerun after a crash from here on starts at the beginning of at's generation (hard
     * recovery; soft recovery at `at` itself): the pages met in it so far stay met. */
    if (!rc) rc = eng_cache_met_since(db, at.gen, &met, &nmet);
    if (!rc && rp->nmet && rp->met_at == at.gen) rc = merge_met(rp, &met, &nmet);
    if (!rc) rc = eng_ckpt_flush_pages(db);
    if (rc) {
        free(met);
        return rc;
    }
    free(rp->met);
    rp->met = met;
    rp->nmet = nmet;
    rp->met_at = at.gen;
    rp->early = 0;
    db->hdr.dbtime = db->dbtime;
    db->hdr.pages = db->pages;
    db->hdr.txn_last = db->txn_last;
    if (at.gen > db->hdr.log_req_min) db->hdr.log_req_min = at.gen;
    if (last_gen > db->hdr.log_req_max) db->hdr.log_req_max = last_gen;
    rc = eng_dbhdr_write(db->edbf, &db->hdr);
    return rc || rp->hard ? rc : eng_ckpt_write_chk(db, at);
}

/* The pages just written back early are rarely met again (a mail body is logged once): their
 * frames go back to the buffers the next batch takes (half a batch's worth of clean frames stays, a
 * quarter of a smaller cache), so replay's memory stays about one batch of pages however long the
 * log, instead of filling the whole cache with memory the kernel must fault in and zero first. */
static void keep_working_set(eng_db *db)
{
    uint64_t target = ENG_REPLAY_BATCH / 2 / ENG_PAGE_SIZE,
             quarter = db->cache_bytes / ENG_PAGE_SIZE / 4;
    if (quarter < target) target = quarter;
    pthread_rwlock_wrlock(&db->plock);
    eng_cache_trim_replay(db, target);
    pthread_rwlock_unlock(&db->plock);
}

/* After a COMMIT: the batch is applied when it is large or could take the pages changed since
 * the last recovery checkpoint past the cache budget (each record counted as a page of its
 * own). Then a recovery checkpoint when they reached the budget, else the rebuilt pages are
 * written back early (eng_ckpt_write_rebuilt): the storage writes them while replay goes on.
 * The pages written early count for soft recovery and passive copies, whose checkpoints move
 * the resume position (a passive copy's logs below it may go). In a hard recovery only its
 * dirty frames, the memory, count: a checkpoint in its middle would mostly wait for the disk to
 * take the pages written early; a hard recovery cut off by a crash is run again (the restore,
 * or dbutil recover) from its last checkpoint, which is then more often its start
 * (docs/design.md, "Restore"). */
static int after_commit(eng_replay *rp, uint32_t gen)
{
    eng_db *db = rp->db;
    uint64_t early = rp->hard ? 0 : rp->early;
    if (rp->gstart < ENG_REPLAY_BATCH &&
        ((uint64_t)db->ndirty + early + rp->egstart) * ENG_PAGE_SIZE < db->cache_bytes)
        return 0;
    int rc = eng_replay_apply(rp);
    if (rc) return rc;
    if (((uint64_t)db->ndirty + early) * ENG_PAGE_SIZE < db->cache_bytes) {
        uint32_t n = 0;
        rc = eng_ckpt_write_rebuilt(db, &n);
        rp->early += n;
        if (!rc) keep_working_set(db);
        return rc;
    }
    if ((rc = eng_replay_checkpoint(rp, rp->pos, gen))) return rc;
    pthread_rwlock_wrlock(&db->plock);
    eng_cache_trim(db);
    pthread_rwlock_unlock(&db->plock);
    return 0;
}

static int replay_records(eng_replay *rp, eng_genread *g, uint32_t from)
{
    eng_db *db = rp->db;
    eng_rec *r = &rp->rec;
    uint32_t off = from;
    int rc;
    while (!rp->stopped) {
        uint32_t at = off;
        rc = eng_rec_decode(g->stream, g->len, &off, r);
        if (rc <= 0) return rc;
        if (r->type == ENG_REC_COMMIT && rp->stop_time && r->u.commit.time > rp->stop_time) {
            /* The first transaction that committed after the point: it and everything after
             * it stay out. */
            rp->stopped = 1;
            drop_open(rp);
            return 0;
        }
        db->st.replay_bytes += r->len;
        if (r->txn > db->txn_last) db->txn_last = r->txn;
        if (rp->blen > rp->gstart && r->txn != rp->gtxn) drop_open(rp);
        rp->gtxn = r->txn;
        uint32_t boff = rp->blen;
        if ((rc = batch_add(rp, g->stream + at, r->len))) return rc;
        rp->grecs++;
        if (r->type == ENG_REC_PAGE)
            rc = ent_add(rp, r->u.page.pgno, g->hdr.gen, boff, r->u.page.after);
        else if (r->type == ENG_REC_BACKUP_SLOT)
            rc = ent_add(rp, 0, g->hdr.gen, boff, 0);
        if (rc) return rc;
        if (r->type != ENG_REC_COMMIT) continue;
        uint64_t commit_dbtime = r->u.commit.dbtime;
        if (commit_dbtime > db->dbtime) db->dbtime = commit_dbtime;
        if ((rc = commit_open(rp))) return rc;
        rp->pos = (eng_lgpos){g->hdr.gen, off};
        rp->commit_dbtime = commit_dbtime;
        if ((rc = after_commit(rp, g->hdr.gen))) return rc;
    }
    return 0;
}

int eng_replay_gen(eng_replay *rp, eng_genread *g, uint32_t from)
{
    rp->err_gen = 0;
    int rc = replay_records(rp, g, from);
    if (rc && !rp->err_gen) {
        /* Records of earlier generations waiting in the batch came first in the log: a
         * failure among them is the error, as it would have been one by one. */
        om_err_saved why;
        om_err_save(&why, rc);
        int arc = eng_replay_apply(rp);
        rc = arc ? arc : om_err_restore(&why);
        if (!arc) rp->err_gen = g->hdr.gen;
    }
    return rc;
}

int eng_replay_settle(eng_replay *rp, int rc)
{
    if (!rc) {
        rc = eng_replay_apply(rp);
        return rc ? rc : eng_replay_drain(rp);
    }
    om_err_saved why;
    om_err_save(&why, rc);
    int arc = eng_replay_apply(rp);
    if (!arc) arc = eng_replay_drain(rp);
    return arc ? arc : om_err_restore(&why);
}

void eng_replay_free(eng_replay *rp)
{
    batch_release(rp);
    free(rp->ents);
    free(rp->met);
    free(rp->dbuf);
    free(rp->dents);
    rp->dbuf = NULL;
    rp->dents = NULL;
    rp->dlen = rp->dcap = rp->ndent = rp->decap = 0;
    rp->batch = NULL;
    rp->ents = NULL;
    rp->met = NULL;
    rp->nmet = 0;
    rp->blen = rp->bcap = rp->gstart = rp->nent = rp->ecap = rp->egstart = rp->grecs = 0;
}

/* ---- read-ahead of generations ---- */

enum { PF_DEPTH = ENG_READ_AHEAD }; /* a 1 MiB buffer each */

typedef struct pf_slot {
    eng_genread g;
    uint8_t *buf;
    int rc, why;
    om_err_saved err;
} pf_slot;

struct eng_prefetch {
    eng_gen_reader read;
    void *arg;
    uint32_t first, last;
    uint32_t next_use; /* the generation eng_prefetch_next hands out next */
    uint32_t low;      /* generations below it are released: their slots may be reused */
    uint32_t read_to;  /* generations below it are read (their slots filled) */
    int stop, ended, threaded;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    pf_slot slot[PF_DEPTH];
};

static pf_slot *pf_slot_of(eng_prefetch *p, uint32_t gen)
{
    return &p->slot[(gen - p->first) % PF_DEPTH];
}

static int pf_read(eng_prefetch *p, uint32_t gen)
{
    pf_slot *s = pf_slot_of(p, gen);
    s->why = 0;
    s->rc = p->read(p->arg, gen, &s->g, s->buf, &s->why);
    if (s->rc && s->rc != ENG_PREFETCH_END) om_err_save(&s->err, s->rc);
    return s->rc;
}

static void *pf_thread(void *arg)
{
    eng_prefetch *p = arg;
    for (uint32_t gen = p->first; gen <= p->last; gen++) {
        pthread_mutex_lock(&p->mu);
        while (!p->stop && gen >= p->low + PF_DEPTH)
            pthread_cond_wait(&p->cv, &p->mu);
        int stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        int rc = pf_read(p, gen);
        pthread_mutex_lock(&p->mu);
        p->read_to = gen + 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (rc) break;
    }
    pthread_mutex_lock(&p->mu);
    p->ended = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int eng_prefetch_start(eng_prefetch **out, uint32_t first, uint32_t last, eng_gen_reader read,
                       void *arg)
{
    *out = NULL;
    eng_prefetch *p = calloc(1, sizeof *p);
    if (!p) return om_errf(OM_E_OutOfMemory, "replay: out of memory");
    p->read = read;
    p->arg = arg;
    p->first = p->next_use = p->low = p->read_to = first;
    p->last = last;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    *out = p;
    for (int i = 0; i < PF_DEPTH; i++)
        if (!(p->slot[i].buf = malloc(ENG_LOG_SIZE)))
            return om_errf(OM_E_OutOfMemory, "replay: out of memory");
    /* Without a thread, eng_prefetch_next reads each generation itself. */
    p->threaded = first <= last && pthread_create(&p->th, NULL, pf_thread, p) == 0;
    return 0;
}

int eng_prefetch_next(eng_prefetch *p, eng_genread **g, int *why)
{
    uint32_t gen = p->next_use;
    if (gen > p->last || gen < p->first)
        return om_errf(OM_E_Internal, "replay: generation %u asked of a read-ahead of %u to %u",
                       gen, p->first, p->last);
    pf_slot *s = pf_slot_of(p, gen);
    if (!p->threaded) {
        eng_gen_free(&s->g);
        pf_read(p, gen);
    } else {
        pthread_mutex_lock(&p->mu);
        p->low = gen; /* the generation handed out before is done with */
        pthread_cond_broadcast(&p->cv);
        while (p->read_to <= gen && !p->ended)
            pthread_cond_wait(&p->cv, &p->mu);
        int there = p->read_to > gen;
        pthread_mutex_unlock(&p->mu);
        if (!there)
            return om_errf(OM_E_Internal, "replay: the read-ahead stopped before generation %u",
                           gen);
    }
    p->next_use = gen + 1;
    *g = &s->g;
    if (why) *why = s->why;
    if (s->rc && s->rc != ENG_PREFETCH_END) return om_err_restore(&s->err);
    return s->rc;
}

void eng_prefetch_stop(eng_prefetch *p)
{
    if (!p) return;
    if (p->threaded) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->th, NULL);
    }
    for (int i = 0; i < PF_DEPTH; i++) {
        eng_gen_free(&p->slot[i].g);
        free(p->slot[i].buf);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/* Where replay starts: the checkpoint file when it is good and ours, else the header. */
eng_lgpos eng_recovery_start(eng_db *db)
{
    /* Consistent at the end of its generation: what came after is in the next ones (db.c). */
    if (db->hdr.state == ENG_STATE_CLEAN) return (eng_lgpos){db->hdr.consistent.gen + 1, 0};
    eng_chkfile ck;
    int bad = 0;
    int rc = eng_chk_read(db->vfs, db->chk, &ck, &bad);
    eng_lgpos hdr_start = {db->hdr.log_req_min, 0};
    if (rc) {
        om_warn("%s: %s; replaying from the generation the header requires (%u)", db->chk,
                om_err_detail(), hdr_start.gen);
        return hdr_start;
    }
    if (!eng_sig_eq(&ck.log_sig, &db->hdr.log_sig)) {
        om_warn("%s belongs to another log stream; replaying from generation %u", db->chk,
                hdr_start.gen);
        return hdr_start;
    }
    /* The header is written before the checkpoint file, so the checkpoint may lag it, never
     * lead it; a checkpoint past what the header requires would skip needed logs. */
    if (hdr_start.gen && ck.checkpoint.gen > db->hdr.log_req_max && db->hdr.log_req_max)
        return hdr_start;
    return ck.checkpoint;
}

/* The generation replay starts at is not in the folder: the folder's logs may be another
 * database's or another stream's altogether, which says more than "missing". */
static int start_missing(eng_db *db, const eng_stream *sf, uint32_t gen)
{
    uint32_t last = eng_stream_last(sf);
    if (!last)
        return om_errf(OM_E_RequiredLogFilesMissing,
                       "%s needs log generation %u to recover, and %s holds no logs of base %s. "
                       "HINT: restore the missing logs, or restore the database from a backup",
                       db->edb, gen, db->logdir, db->base);
    /* Whose the folder's logs are: its newest generation says (only who it is counts here). */
    char p[4200];
    eng_loghdr h;
    eng_chain_want w;
    eng_chain_cause why = ENG_CHAIN_OK;
    eng_stream_path(sf, last, p, sizeof p);
    eng_chain_of_db(&w, &db->hdr, db->edb, 0);
    if (eng_loghdr_read(db->vfs, p, &h) == 0) {
        w.gen = h.gen;
        w.named = 0;
        eng_loghdr_continues(&w, p, &h, &why);
    }
    om_err_clear();
    if (why == ENG_CHAIN_OTHER_DB)
        return om_errf(OM_E_DatabaseLogSetMismatch,
                       "the logs in %s were written for another database than %s (which needs "
                       "generation %u of its own logs). HINT: recover it with its own log folder",
                       db->logdir, db->edb, gen);
    if (why == ENG_CHAIN_OTHER_STREAM)
        return om_errf(OM_E_BadLogSignature,
                       "the logs in %s belong to another log stream than %s (which needs "
                       "generation %u of its own). HINT: logs from before a restore?",
                       db->logdir, db->edb, gen);
    return om_errf(OM_E_RequiredLogFilesMissing,
                   "%s needs log generation %u to recover, and %s holds generations %u to %u. "
                   "HINT: restore the missing logs, or restore the database from a backup",
                   db->edb, gen, db->logdir, eng_stream_first(sf), last);
}

/* Soft recovery's read of one generation (the read-ahead thread): there, of this stream,
 * following the one before, and whole as far as its successor's header can tell. */
typedef struct soft_read {
    eng_db *db;
    const eng_stream *sf;
    uint32_t last;
    eng_chain_want w;
} soft_read;

static int soft_read_gen(void *arg, uint32_t gen, eng_genread *g, uint8_t *buf, int *why)
{
    soft_read *s = arg;
    eng_db *db = s->db;
    char p[4200];
    (void)why;
    if (!eng_stream_has(s->sf, gen))
        return om_errf(OM_E_MissingLogFile,
                       "log generation %u is missing from %s (generations up to %u exist)", gen,
                       db->logdir, s->last);
    eng_stream_path(s->sf, gen, p, sizeof p);
    s->w.gen = gen;
    s->w.named = gen != s->sf->cur_gen;
    int rc = eng_gen_continues_into(db->vfs, p, &s->w, g, NULL, buf);
    if (rc) return rc;
    eng_chain_follow(&s->w, p, g);
    if (gen < s->last && eng_stream_has(s->sf, gen + 1)) {
        /* Its successor says where it ended: damage that looks like its end is found before it
         * is replayed. */
        char next[4200];
        eng_stream_path(s->sf, gen + 1, next, sizeof next);
        rc = eng_chain_check_ahead(db->vfs, &s->w, next, gen + 1 != s->sf->cur_gen);
    }
    return rc;
}

/* Replays generations start.gen..last of the stream, each checked to follow the one before;
 * *end describes the last one replayed. */
static int replay_stream(eng_db *db, const eng_stream *sf, eng_lgpos start, uint32_t last,
                         eng_replay *rp, eng_log_end *end)
{
    soft_read s = {.db = db, .sf = sf, .last = last};
    eng_prefetch *pf = NULL;
    eng_chain_of_db(&s.w, &db->hdr, db->edb, start.gen);
    int rc = eng_prefetch_start(&pf, start.gen, last, soft_read_gen, &s);
    for (uint32_t gen = start.gen; gen <= last && !rc; gen++) {
        eng_genread *g = NULL;
        if ((rc = eng_prefetch_next(pf, &g, NULL))) break;
        if (g->torn_slot && gen < last && eng_stream_has(sf, gen + 1))
            om_warn("log generation %u ends with a flush that a crash interrupted", gen);
        if ((rc = eng_replay_gen(rp, g, gen == start.gen ? start.off : 0))) break;
        end->gen = gen;
        end->created = g->hdr.created;
        end->len = g->len;
        end->cur_exists = gen == sf->cur_gen;
        if (db->replay_progress) db->replay_progress(db->progress_arg, gen, start.gen, last);
    }
    rc = eng_replay_settle(rp, rc);
    eng_prefetch_stop(pf);
    return rc;
}

/* After replay: the pages flushed, the header in Clean Shutdown at the consistent position,
 * then E00.chk. */
static int finish_clean(eng_db *db, eng_replay *rp, const eng_log_end *end, uint64_t t0)
{
    if (rp->pos.gen == 0) rp->pos = (eng_lgpos){end->gen, end->len};
    int rc = eng_ckpt_flush_pages(db);
    if (rc) return rc;
    db->hdr.state = ENG_STATE_CLEAN;
    db->hdr.dbtime = db->dbtime;
    db->hdr.pages = db->pages;
    db->hdr.txn_last = db->txn_last;
    db->hdr.consistent = rp->pos;
    db->hdr.consistent_time = om_now_ns();
    db->hdr.log_req_min = db->hdr.log_req_max = 0;
    db->hdr.log_committed = end->gen;
    rc = eng_dbhdr_write(db->edbf, &db->hdr);
    db->st.replay_ns = om_mono_ns() - t0;
    if (!rc && end->gen) rc = eng_ckpt_write_chk(db, rp->pos);
    if (!rc) ENG_CHECK(db, ENG_AT_RECOVERY);
    return rc;
}

int eng_recovery_run(eng_db *db, eng_log_end *end)
{
    eng_stream sf = {0};
    eng_replay rp = {.db = db};
    uint64_t t0 = om_mono_ns();
    memset(end, 0, sizeof *end);
    uint32_t repaired = 0;
    int rc = eng_pgj_repair(db, &repaired);
    if (!rc) rc = eng_stream_list(db->vfs, db->logdir, db->base, &sf);
    if (rc) return rc;
    uint32_t last = eng_stream_last(&sf);
    eng_lgpos start = eng_recovery_start(db);
    if (start.gen == 0) start.gen = sf.n ? sf.gens[0] : sf.cur_gen;
    /* Created but never attached: nothing was logged. */
    int never_attached =
        last == 0 && db->hdr.log_req_max == 0 && db->hdr.state == ENG_STATE_JUST_CREATED;
    if (never_attached)
        rc = 0;
    else if (last == 0 || !eng_stream_has(&sf, start.gen))
        rc = start_missing(db, &sf, start.gen);
    else if (!(rc = replay_stream(db, &sf, start, last, &rp, end)) && last < db->hdr.log_req_max)
        rc = om_errf(OM_E_RequiredLogFilesMissing,
                     "%s needs log generations up to %u and the logs end at %u", db->edb,
                     db->hdr.log_req_max, last);
    if (!rc) rc = finish_clean(db, &rp, end, t0);
    eng_replay_free(&rp);
    eng_stream_free(&sf);
    return rc;
}
