/* Transactions: private page copies, the commit (log records, then every page published at
 * once), committed reads, and the page access the B+tree uses (db_internal.h). A transaction
 * holds the writer role from eng_txn_begin to its commit or rollback. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/time.h"
#include "engine/db_internal.h"

#define GROW_PAGES 32 /* the .edb grows by at least 1 MiB at a time */

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
    eng_role_acquire(db);
    int rc = 0;
    if (db->fatal)
        rc = eng_fatal_refuse(db);
    else if (eng_log_fatal(db->log))
        rc = eng_fatal_set(db, eng_fatal_refuse(db));
    else if (eng_log_disk_full(db->log))
        rc = eng_log_retry_space(db->log);
    eng_txn *t = NULL;
    if (!rc && !(t = calloc(1, sizeof *t)))
        rc = om_errf(OM_E_OutOfMemory, "transaction: out of memory");
    if (rc) {
        eng_role_release(db);
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
        eng_pagebuf_put(t->db, p->page);
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
    eng_role_release(db);
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
    p->page = eng_pagebuf_get(t->db);
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
    rc = eng_cache_get(t->db, pgno, 1, &f);
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
    frame *f = p->is_new ? NULL : eng_cache_lookup(db, p->pgno);
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

/* Encodes every page record of t and the COMMIT into *recs (malloc'd; *len 0 and no COMMIT
 * when every page came back to what it was); (*images)[i] says whether the i-th page was logged
 * whole. */
static int encode_txn(eng_txn *t, uint64_t txn, uint8_t **recs, size_t *len, int **images)
{
    eng_range *ranges = malloc(ENG_MAX_RANGES * sizeof *ranges);
    *images = calloc(t->npages, sizeof **images);
    *recs = malloc((size_t)t->npages * ENG_REC_MAX + 64);
    *len = 0;
    if (!*recs || !*images || !ranges) {
        free(ranges);
        return om_errf(OM_E_OutOfMemory, "commit: out of memory");
    }
    uint32_t i = 0;
    for (tpage *p = t->list; p; p = p->next, i++)
        *len += encode_tpage(t, p, txn, *recs + *len, ranges, &(*images)[i]);
    free(ranges);
    if (*len) *len += eng_rec_encode_commit(*recs + *len, txn, om_now_ns(), t->db->dbtime);
    return 0;
}

/* Swaps the transaction's pages into the cache as dirty frames whose log ends at `end`: every
 * page of the transaction changes at once for readers. */
static int publish(eng_txn *t, const int *images, uint64_t end)
{
    eng_db *db = t->db;
    int rc = 0;
    uint32_t i = 0;
    pthread_rwlock_wrlock(&db->plock);
    for (tpage *p = t->list; p; p = p->next, i++) {
        if (p->unchanged) continue;
        frame *f = eng_cache_lookup(db, p->pgno);
        if (!f) f = eng_cache_insert_new(db, p->pgno);
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
    db->published++;
    for (tpage *p = t->list; p && !rc; p = p->next)
        if (!p->unchanged) ENG_CHECK_PAGE(db, p->pgno);
    pthread_rwlock_unlock(&db->plock);
    return rc;
}

int eng_txn_commit(eng_txn *t, unsigned flags)
{
    eng_db *db = t->db;
    if (t->npages == 0) {
        eng_txn_rollback(t);
        return nothing_to_commit(db, flags);
    }
    if (db->fatal) {
        eng_txn_rollback(t);
        return eng_fatal_refuse(db);
    }
    uint64_t txn = db->txn_last + 1, end = 0;
    uint8_t *recs = NULL;
    size_t len = 0;
    int *images = NULL;
    int rc = encode_txn(t, txn, &recs, &len, &images);
    if (rc || !len) { /* out of memory, or every page came back to what it was */
        free(recs);
        free(images);
        eng_txn_rollback(t);
        return rc ? rc : nothing_to_commit(db, flags);
    }
    rc = eng_log_append(db->log, recs, (uint32_t)len, &end);
    free(recs);
    if (rc) {
        free(images);
        eng_fatal_set(db, rc);
        eng_txn_rollback(t);
        return rc;
    }
    db->txn_last = txn;
    rc = publish(t, images, end);
    free(images);
    db->st.commits++;
    int want_ckpt = !db->hold && (eng_log_gen(db->log) >= db->ckpt.gen + db->checkpoint_gens ||
                                  (uint64_t)db->ndirty * ENG_PAGE_SIZE >= db->cache_bytes);
    if (rc) eng_fatal_set(db, rc);
    txn_free(t);
    if (!rc && want_ckpt) rc = eng_ckpt_locked(db);
    if (!rc && db->hold) rc = eng_cache_spill(db);
    if (!rc) ENG_CHECK(db, ENG_AT_COMMIT);
    eng_role_release(db);
    if (rc) return rc;
    if (!(flags & ENG_COMMIT_LAZY)) {
        rc = eng_log_flush_to(db->log, end);
        if (rc) return eng_fatal_set(db, rc);
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
    if (!over || !eng_role_try(db)) return;
    eng_cache_trim_now(db);
    eng_role_release(db);
}

/* Copies what a reader outside a transaction wants of committed page pgno (its body, its
 * header's object id) under plock, then trims the cache as a read does. */
static int page_copy(eng_db *db, uint32_t pgno, void *body, uint32_t *objid)
{
    pthread_rwlock_rdlock(&db->plock);
    int rc = 0;
    if (pgno == 0 || pgno > db->pages)
        rc = om_errf(OM_E_InvalidParameter, "page %u does not exist (the database has %u pages)",
                     pgno, db->pages);
    frame *f = NULL;
    if (!rc) rc = eng_cache_get(db, pgno, 1, &f);
    if (!rc && body) memcpy(body, f->page + ENG_PAGE_HDR, ENG_PAGE_BODY);
    if (!rc && objid) {
        eng_pghdr h;
        eng_pghdr_get(f->page, &h);
        *objid = h.objid;
    }
    pthread_rwlock_unlock(&db->plock);
    trim_after_read(db);
    return rc;
}

int eng_page_read(eng_db *db, uint32_t pgno, void *body)
{
    return page_copy(db, pgno, body, NULL);
}

int eng_page_objid(eng_db *db, uint32_t pgno, uint32_t *objid)
{
    return page_copy(db, pgno, NULL, objid);
}

int eng_log_flush(eng_db *db)
{
    if (db->fatal) return eng_fatal_refuse(db);
    int rc = eng_log_flush_to(db->log, eng_log_end_lsn(db->log));
    return rc ? eng_fatal_set(db, rc) : 0;
}

eng_lgpos eng_log_durable_end(eng_db *db)
{
    return eng_log_lgpos(db->log, eng_log_durable_lsn(db->log));
}

eng_db *eng_txn_db(eng_txn *t)
{
    return t->db;
}

eng_view *eng_txn_view(eng_txn *t)
{
    return &t->view;
}

int eng_txn_page_ro(eng_txn *t, uint32_t pgno, const uint8_t **body)
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
    rc = eng_cache_get(t->db, pgno, 1, &f);
    if (!rc) *body = f->page + ENG_PAGE_HDR;
    return rc;
}

int eng_txn_page_mut(eng_txn *t, uint32_t pgno, uint8_t **body)
{
    tpage *p = NULL;
    int rc = tget(t, pgno, &p);
    if (!rc) *body = p->page + ENG_PAGE_HDR;
    return rc;
}

int eng_txn_page_reinit(eng_txn *t, uint32_t pgno, uint32_t objid, uint8_t **body)
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

int eng_txn_page_alloc(eng_txn *t, uint32_t objid, uint32_t *pgno, uint8_t **body)
{
    int rc = eng_page_alloc(t, objid, pgno);
    if (!rc) rc = eng_txn_page_mut(t, *pgno, body);
    return rc;
}

void eng_read_lock(eng_db *db)
{
    pthread_rwlock_rdlock(&db->plock);
}

void eng_read_unlock(eng_db *db)
{
    pthread_rwlock_unlock(&db->plock);
    trim_after_read(db);
}

int eng_view_page(eng_db *db, uint32_t pgno, const uint8_t **body)
{
    if (pgno == 0 || pgno > db->pages)
        return om_errf(OM_E_DatabaseCorrupted,
                       "%s: a tree points to page %u, past the end (%u pages)", db->edb, pgno,
                       db->pages);
    frame *f = NULL;
    int rc = eng_cache_get(db, pgno, 1, &f);
    if (!rc) *body = f->page + ENG_PAGE_HDR;
    return rc;
}

uint32_t eng_page_count(eng_db *db)
{
    return db->pages;
}
