/* The hold file (E00.hold): where dirty pages go while page writes are held.
 *
 * While a shadow copy links the .edb (eng_hold_pages), no page may reach it, and the mail keeps
 * coming. Dirty pages first stay in memory; when they reach the cache budget, the commit that
 * got them there moves the oldest (by log position) to the hold file until they are under half
 * the budget, and drops clean frames over the budget. So memory stays bounded however long the
 * hold lasts; the log stays the only durable record of the changes.
 *
 * Invariants:
 * - A page's committed image is its frame when it has one, else its latest copy in the hold
 *   file when the index names one, else its place in the .edb. A frame loaded from the hold
 *   file (from_hold) is clean for the cache (it may be dropped again: the copy stays); a later
 *   commit makes it dirty, and spilling it again appends a new copy and moves the index.
 * - Nothing here is synced: the file only ever serves this process. After a crash it is
 *   garbage (the checkpoint did not move while held, so recovery replays every change it
 *   held from the log), and the next open deletes it.
 * - At the release, the checkpoint writes every page whose latest image is here back to the
 *   .edb in batches, each one journalled first (journal.c) and synced, then the file is
 *   deleted. A crash between batches leaves the .edb as a crash during any checkpoint does:
 *   pages newer than the checkpoint in the header, which replay skips.
 * - A failed write to the file is not fatal (the data is in the log and in memory): spilling
 *   stops, with a warning, and the dirty pages stay in memory until the release. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "engine/db_internal.h"

/* Pages per journalled batch at the release: half the cache budget, within 16..256 (8 MiB). */
static uint32_t batch_pages(eng_db *db)
{
    uint64_t b = db->cache_bytes / ENG_PAGE_SIZE / 2;
    return b < 16 ? 16 : b > 256 ? 256 : (uint32_t)b;
}

static uint32_t slot_of(uint32_t pgno, uint32_t cap)
{
    return (pgno * 2654435761u) & (cap - 1);
}

int hold_lookup(eng_db *db, uint32_t pgno, uint64_t *off)
{
    hold_file *h = &db->hf;
    if (!h->count) return 0;
    for (uint32_t i = slot_of(pgno, h->cap);; i = (i + 1) & (h->cap - 1)) {
        if (h->keys[i] == 0) return 0;
        if (h->keys[i] == pgno) {
            *off = h->offs[i];
            return 1;
        }
    }
}

static int index_grow(hold_file *h)
{
    uint32_t nc = h->cap ? h->cap * 2 : 1024;
    uint32_t *nk = calloc(nc, sizeof *nk);
    uint64_t *no = calloc(nc, sizeof *no);
    if (!nk || !no) {
        free(nk);
        free(no);
        return om_errf(OM_E_OutOfMemory, "hold file index: out of memory");
    }
    for (uint32_t i = 0; i < h->cap; i++) {
        if (!h->keys[i]) continue;
        uint32_t j = slot_of(h->keys[i], nc);
        while (nk[j])
            j = (j + 1) & (nc - 1);
        nk[j] = h->keys[i];
        no[j] = h->offs[i];
    }
    free(h->keys);
    free(h->offs);
    h->keys = nk;
    h->offs = no;
    h->cap = nc;
    return 0;
}

/* Points pgno's entry at off (a new copy); caller holds plock for writing and cmu. */
static int index_set(hold_file *h, uint32_t pgno, uint64_t off)
{
    if ((h->count + 1) * 2 > h->cap) {
        int rc = index_grow(h);
        if (rc) return rc;
    }
    uint32_t i = slot_of(pgno, h->cap);
    while (h->keys[i] && h->keys[i] != pgno)
        i = (i + 1) & (h->cap - 1);
    if (!h->keys[i]) h->count++;
    h->keys[i] = pgno;
    h->offs[i] = off;
    return 0;
}

int hold_read(eng_db *db, uint32_t pgno, uint64_t off, uint8_t *page)
{
    int rc = om_pread_full(db->hf.f, page, ENG_PAGE_SIZE, off);
    if (rc) return om_err_ctx(rc, "reading page %u from %s", pgno, db->holdp);
    if (eng_page_check(page, pgno, NULL) != ENG_PAGE_OK)
        return om_errf(OM_E_ReadVerifyFailure,
                       "%s: the copy of page %u at offset %llu fails its checksum", db->holdp, pgno,
                       (unsigned long long)off);
    return 0;
}

static int open_file(eng_db *db)
{
    if (db->hf.f) return 0;
    int rc = om_open(db->vfs, db->holdp, OM_O_CREATE, &db->hf.f);
    if (!rc) rc = om_resize(db->hf.f, 0);
    db->hf.end = 0;
    return rc;
}

static int cmp_lsn(const void *a, const void *b)
{
    const frame *x = *(frame *const *)a, *y = *(frame *const *)b;
    if (x->lsn != y->lsn) return x->lsn < y->lsn ? -1 : 1;
    return x->pgno < y->pgno ? -1 : x->pgno > y->pgno;
}

/* Appends the oldest dirty frames to the file and drops them (plock held for writing). */
static int spill_oldest(eng_db *db, uint32_t target)
{
    frame **v = NULL;
    uint32_t n = 0;
    int rc = cache_dirty_frames(db, &v, &n);
    if (rc) return rc;
    qsort(v, n, sizeof *v, cmp_lsn);
    rc = open_file(db);
    for (uint32_t i = 0; i + target < n && !rc; i++) {
        frame *f = v[i];
        eng_page_seal(f->page, f->pgno);
        uint64_t off = db->hf.end;
        rc = om_pwrite(db->hf.f, f->page, ENG_PAGE_SIZE, off);
        if (rc) break;
        db->hf.end += ENG_PAGE_SIZE;
        pthread_mutex_lock(&db->cmu);
        rc = index_set(&db->hf, f->pgno, off);
        if (!rc) cache_evict(db, f);
        pthread_mutex_unlock(&db->cmu);
        if (!rc) db->st.pages_spilled++;
    }
    free(v);
    return rc;
}

int hold_spill(eng_db *db)
{
    uint64_t limit = db->cache_bytes / ENG_PAGE_SIZE;
    if (db->hf.failed || (uint64_t)db->ndirty < limit) {
        pthread_mutex_lock(&db->cmu);
        uint32_t frames = db->nframes;
        pthread_mutex_unlock(&db->cmu);
        if (frames <= limit) return 0;
        pthread_rwlock_wrlock(&db->plock);
        cache_trim(db);
        pthread_rwlock_unlock(&db->plock);
        return 0;
    }
    pthread_rwlock_wrlock(&db->plock);
    int rc = spill_oldest(db, (uint32_t)(limit / 2));
    cache_trim(db);
    pthread_rwlock_unlock(&db->plock);
    if (rc) {
        db->hf.failed = 1;
        om_warn("%s: cannot spill held pages to %s (%s); they stay in memory until the release",
                db->edb, db->holdp, om_err_detail());
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* One batch: journal, in place, sync. */
static int write_batch(eng_db *db, frame *fr, frame **fp, uint32_t n)
{
    int rc = pj_write(db, fp, n);
    for (uint32_t i = 0; i < n && !rc; i++)
        rc = om_pwrite(db->edbf, fr[i].page, ENG_PAGE_SIZE, eng_page_offset(fr[i].pgno));
    if (!rc) rc = om_sync(db->edbf);
    if (!rc) db->st.pages_flushed += n;
    return rc;
}

int hold_write_back(eng_db *db)
{
    hold_file *h = &db->hf;
    if (!h->count) return 0;
    /* The pages to write: those whose latest image is here (a dirty frame is newer; the
     * checkpoint writes it with the others). The index does not change meanwhile: only the
     * writer role, which the caller holds, changes it. */
    uint32_t *pg = malloc((size_t)h->count * sizeof *pg), n = 0, batch = batch_pages(db);
    frame *fr = calloc(batch, sizeof *fr);
    frame **fp = calloc(batch, sizeof *fp);
    uint8_t *buf = aligned_alloc(4096, (size_t)batch * ENG_PAGE_SIZE);
    int rc = 0;
    if (!pg || !fr || !fp || !buf) {
        rc = om_errf(OM_E_OutOfMemory, "writing held pages back: out of memory");
        goto out;
    }
    pthread_mutex_lock(&db->cmu);
    for (uint32_t i = 0; i < h->cap; i++) {
        if (!h->keys[i]) continue;
        frame *f = cache_lookup(db, h->keys[i]);
        if (!f || !f->dirty) pg[n++] = h->keys[i];
    }
    pthread_mutex_unlock(&db->cmu);
    qsort(pg, n, sizeof *pg, cmp_u32);
    for (uint32_t done = 0; done < n && !rc;) {
        uint32_t b = n - done < batch ? n - done : batch;
        for (uint32_t i = 0; i < b && !rc; i++) {
            uint64_t off = 0;
            hold_lookup(db, pg[done + i], &off);
            fr[i].pgno = pg[done + i];
            fr[i].page = buf + (size_t)i * ENG_PAGE_SIZE;
            fp[i] = &fr[i];
            rc = hold_read(db, fr[i].pgno, off, fr[i].page);
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

static void index_free(hold_file *h)
{
    free(h->keys);
    free(h->offs);
    h->keys = NULL;
    h->offs = NULL;
    h->cap = h->count = 0;
}

void hold_discard(eng_db *db)
{
    pthread_rwlock_wrlock(&db->plock);
    pthread_mutex_lock(&db->cmu);
    /* Frames read back from the file now equal the .edb. */
    for (uint32_t i = 0; i < db->hsize; i++)
        for (frame *f = db->htab[i]; f; f = f->next)
            f->from_hold = 0;
    index_free(&db->hf);
    pthread_mutex_unlock(&db->cmu);
    pthread_rwlock_unlock(&db->plock);
    if (db->hf.f) {
        om_close(db->hf.f);
        db->hf.f = NULL;
        int rc = db->vfs->unlink(db->vfs, db->holdp);
        if (rc && rc != OM_E_FileNotFound) om_warn("deleting %s: %s", db->holdp, om_err_detail());
    }
    db->hf.end = 0;
    db->hf.failed = 0;
}

void hold_free(eng_db *db)
{
    om_close(db->hf.f);
    db->hf.f = NULL;
    index_free(&db->hf);
}

int hold_remove_stale(eng_db *db)
{
    int ex = db->vfs->exists(db->vfs, db->holdp);
    if (ex <= 0) return ex;
    /* Not synced: if the deletion is lost, the next open deletes it again. */
    return db->vfs->unlink(db->vfs, db->holdp);
}
