/* The page cache: frames in a hash table by page number. Invariants in db_internal.h.
 *
 * A page not in the cache loads from the hold file when it was spilled there while page writes
 * were held (hold.c), else from the .edb. While held, the cache also chooses what goes to the
 * hold file (eng_cache_spill): the oldest dirty frames. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/mem.h"
#include "engine/db_internal.h"

static uint32_t hash_pgno(uint32_t pgno, uint32_t size)
{
    return (pgno * 2654435761u) & (size - 1);
}

/* ---- page buffers (db_internal.h: eng_pagebuf_get) ---- */

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A released buffer is poisoned, so a use after eng_pagebuf_put is caught as after free(). */
#define PB_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define PB_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define PB_POISON(p, n)   ((void)(p), (void)(n))
#define PB_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Reserves address space for the cache's size and a quarter more (transactions' pages, dirty
 * frames past the budget): only what is touched takes memory, 2 MiB at a time where the kernel
 * gives huge pages (base/mem.h). No reservation (mmap refused, strict overcommit) is fine:
 * every buffer is malloc'd then. */
static void pb_reserve(eng_db *db)
{
    uint64_t want = db->cache_bytes + db->cache_bytes / 4;
    size_t len = om_huge_len((size_t)want);
    uint8_t *a = om_huge_reserve(len);
    if (!a) return;
    uint8_t **fl = calloc(len / ENG_PAGE_SIZE, sizeof *fl);
    if (!fl) {
        om_huge_release(a, len);
        return;
    }
    PB_POISON(a, len);
    db->pb_base = a;
    db->pb_len = len;
    db->pb_cap = (uint32_t)(len / ENG_PAGE_SIZE);
    db->pb_free = fl;
}

static int pb_owns(const eng_db *db, const uint8_t *p)
{
    return db->pb_base && p >= db->pb_base && p < db->pb_base + db->pb_len;
}

uint8_t *eng_pagebuf_get(eng_db *db)
{
    uint8_t *p = NULL;
    pthread_mutex_lock(&db->pbmu);
    if (db->pb_nfree)
        p = db->pb_free[--db->pb_nfree];
    else if (db->pb_used < db->pb_cap)
        p = db->pb_base + (size_t)db->pb_used++ * ENG_PAGE_SIZE;
    pthread_mutex_unlock(&db->pbmu);
    if (!p) return aligned_alloc(4096, ENG_PAGE_SIZE);
    PB_UNPOISON(p, ENG_PAGE_SIZE);
    return p;
}

void eng_pagebuf_put(eng_db *db, uint8_t *p)
{
    if (!pb_owns(db, p)) {
        free(p);
        return;
    }
    PB_POISON(p, ENG_PAGE_SIZE);
    pthread_mutex_lock(&db->pbmu);
    db->pb_free[db->pb_nfree++] = p; /* at most pb_cap: each buffer is out once */
    pthread_mutex_unlock(&db->pbmu);
}

int eng_cache_init(eng_db *db)
{
    db->hsize = 4096;
    db->htab = calloc(db->hsize, sizeof *db->htab);
    if (!db->htab) return om_errf(OM_E_OutOfMemory, "page cache: out of memory");
    pthread_mutex_init(&db->pbmu, NULL);
    pb_reserve(db);
    return 0;
}

static void free_frame(eng_db *db, frame *f)
{
    eng_pagebuf_put(db, f->page);
    free(f);
}

void eng_cache_free(eng_db *db)
{
    if (!db->htab) return;
    for (uint32_t i = 0; i < db->hsize; i++) {
        frame *f = db->htab[i];
        while (f) {
            frame *n = f->next;
            free_frame(db, f);
            f = n;
        }
    }
    free(db->htab);
    db->htab = NULL;
    if (db->pb_base) {
        PB_UNPOISON(db->pb_base, db->pb_len);
        om_huge_release(db->pb_base, db->pb_len);
    }
    free(db->pb_free);
    db->pb_base = NULL;
    db->pb_free = NULL;
    pthread_mutex_destroy(&db->pbmu);
}

static void grow(eng_db *db)
{
    uint32_t ns = db->hsize * 2;
    frame **nt = calloc(ns, sizeof *nt);
    if (!nt) return; /* longer chains, still correct */
    for (uint32_t i = 0; i < db->hsize; i++) {
        frame *f = db->htab[i];
        while (f) {
            frame *n = f->next;
            uint32_t h = hash_pgno(f->pgno, ns);
            f->next = nt[h];
            nt[h] = f;
            f = n;
        }
    }
    free(db->htab);
    db->htab = nt;
    db->hsize = ns;
}

frame *eng_cache_lookup(eng_db *db, uint32_t pgno)
{
    for (frame *f = db->htab[hash_pgno(pgno, db->hsize)]; f; f = f->next)
        if (f->pgno == pgno) return f;
    return NULL;
}

static frame *new_frame(eng_db *db, uint32_t pgno)
{
    frame *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->page = eng_pagebuf_get(db);
    if (!f->page) {
        free(f);
        return NULL;
    }
    f->pgno = pgno;
    return f;
}

/* Puts f into the table (cmu held). */
static void link_frame(eng_db *db, frame *f)
{
    if (db->nframes >= db->hsize) grow(db);
    uint32_t h = hash_pgno(f->pgno, db->hsize);
    f->next = db->htab[h];
    db->htab[h] = f;
    db->nframes++;
}

static frame *insert(eng_db *db, uint32_t pgno)
{
    frame *f = new_frame(db, pgno);
    if (f) link_frame(db, f);
    return f;
}

frame *eng_cache_insert_new(eng_db *db, uint32_t pgno)
{
    pthread_mutex_lock(&db->cmu);
    frame *f = insert(db, pgno);
    if (f) {
        memset(f->page, 0, ENG_PAGE_SIZE);
        f->status = ENG_PAGE_ZERO;
    }
    pthread_mutex_unlock(&db->cmu);
    return f;
}

/* blank_ok: a page wholly past the end of the file is left unwritten and marked blank
 * (frame.blank) instead of zeroed; its first user writes every byte. */
static int load(eng_db *db, frame *f, int blank_ok)
{
    uint64_t hoff;
    if (db->hf.count && eng_hold_lookup(db, f->pgno, &hoff)) {
        /* Spilled while held: the .edb has an older version. */
        int rc = eng_hold_read(db, f->pgno, hoff, f->page);
        if (rc) return rc;
        f->status = ENG_PAGE_OK;
        f->from_hold = 1;
        return 0;
    }
    size_t got = 0;
    int rc = db->vfs->pread(db->edbf, f->page, ENG_PAGE_SIZE, eng_page_offset(f->pgno), &got);
    if (rc) return rc;
    if (got == 0 && blank_ok) {
        f->status = ENG_PAGE_ZERO;
        f->blank = 1;
        return 0;
    }
    if (got < ENG_PAGE_SIZE) memset(f->page + got, 0, ENG_PAGE_SIZE - got);
    f->status = (uint8_t)eng_page_check(f->page, f->pgno, NULL);
    return 0;
}

static void unlink_frame(eng_db *db, frame *f)
{
    frame **pp = &db->htab[hash_pgno(f->pgno, db->hsize)];
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    db->nframes--;
    free_frame(db, f);
}

void eng_cache_evict(eng_db *db, frame *f)
{
    if (f->dirty) db->ndirty--;
    unlink_frame(db, f);
}

int eng_cache_get(eng_db *db, uint32_t pgno, int verify, frame **out)
{
    pthread_mutex_lock(&db->cmu);
    frame *f = eng_cache_lookup(db, pgno);
    int rc = 0;
    if (!f) {
        f = insert(db, pgno);
        if (!f)
            rc = om_errf(OM_E_OutOfMemory, "page cache: out of memory");
        else
            rc = load(db, f, 0);
        if (rc && f) {
            unlink_frame(db, f);
            f = NULL;
        } else if (!rc && verify && f->status != ENG_PAGE_OK) {
            uint8_t st = f->status;
            /* Leave no frame behind for a page that could not be read. */
            unlink_frame(db, f);
            f = NULL;
            if (st == ENG_PAGE_ZERO)
                rc = om_errf(OM_E_PageNotInitialized, "%s: page %u is not initialised", db->edb,
                             pgno);
            else
                rc = om_errf(st == ENG_PAGE_WRONG_PGNO ? OM_E_ReadPgnoVerifyFailure
                                                       : OM_E_ReadVerifyFailure,
                             "%s: page %u fails its checksum", db->edb, pgno);
        }
    }
    pthread_mutex_unlock(&db->cmu);
    if (!rc) *out = f;
    return rc;
}

int eng_cache_get_owned(eng_db *db, uint32_t pgno, frame **out)
{
    pthread_mutex_lock(&db->cmu);
    frame *f = eng_cache_lookup(db, pgno);
    int held = db->hf.count != 0;
    pthread_mutex_unlock(&db->cmu);
    if (f) {
        *out = f;
        return 0;
    }
    /* The hold file's index is read under cmu: the locked path (never during a replay). */
    if (held) return eng_cache_get(db, pgno, 0, out);
    if (!(f = new_frame(db, pgno))) return om_errf(OM_E_OutOfMemory, "page cache: out of memory");
    int rc = load(db, f, 1);
    if (rc) {
        free_frame(db, f);
        return rc;
    }
    pthread_mutex_lock(&db->cmu);
    link_frame(db, f);
    pthread_mutex_unlock(&db->cmu);
    *out = f;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int eng_cache_met_since(eng_db *db, uint32_t gen, uint32_t **pages, uint32_t *n)
{
    pthread_mutex_lock(&db->cmu);
    uint32_t k = 0, *v = malloc((db->nframes ? db->nframes : 1) * sizeof *v);
    for (uint32_t i = 0; v && i < db->hsize; i++)
        for (frame *f = db->htab[i]; f; f = f->next)
            if (f->met_gen && f->met_gen >= gen) v[k++] = f->pgno;
    pthread_mutex_unlock(&db->cmu);
    if (!v) return om_errf(OM_E_OutOfMemory, "replay: out of memory");
    qsort(v, k, sizeof *v, cmp_u32);
    *pages = v;
    *n = k;
    return 0;
}

static int cmp_frame(const void *a, const void *b)
{
    uint32_t x = (*(frame *const *)a)->pgno, y = (*(frame *const *)b)->pgno;
    return x < y ? -1 : x > y;
}

int eng_cache_dirty_frames(eng_db *db, frame ***out, uint32_t *n)
{
    pthread_mutex_lock(&db->cmu);
    uint32_t cnt = 0, cap = db->ndirty ? db->ndirty : 1;
    frame **v = malloc(cap * sizeof *v);
    if (!v) {
        pthread_mutex_unlock(&db->cmu);
        return om_errf(OM_E_OutOfMemory, "checkpoint: out of memory");
    }
    for (uint32_t i = 0; i < db->hsize; i++)
        for (frame *f = db->htab[i]; f; f = f->next)
            if (f->dirty && cnt < cap) v[cnt++] = f;
    pthread_mutex_unlock(&db->cmu);
    qsort(v, cnt, sizeof *v, cmp_frame);
    *out = v;
    *n = cnt;
    return 0;
}

/* Drops clean frames that keep(f) allows until at most target are left (cmu held). */
static void drop_clean(eng_db *db, uint64_t target, int (*may_go)(const frame *f))
{
    for (uint32_t i = 0; i < db->hsize && db->nframes > target; i++) {
        frame **pp = &db->htab[i];
        while (*pp) {
            frame *f = *pp;
            if (!f->dirty && may_go(f)) {
                *pp = f->next;
                free_frame(db, f);
                db->nframes--;
            } else
                pp = &f->next;
        }
    }
}

static int any_clean(const frame *f)
{
    (void)f;
    return 1;
}

uint64_t eng_cache_size(eng_db *db)
{
    return db->cache_bytes;
}

uint64_t eng_cache_pages(eng_db *db)
{
    pthread_mutex_lock(&db->cmu);
    uint64_t n = db->nframes;
    pthread_mutex_unlock(&db->cmu);
    return n;
}

void eng_cache_trim_now(eng_db *db)
{
    pthread_mutex_lock(&db->cmu);
    int over = (uint64_t)db->nframes * ENG_PAGE_SIZE > db->cache_bytes;
    pthread_mutex_unlock(&db->cmu);
    if (over && pthread_rwlock_trywrlock(&db->plock) == 0) {
        eng_cache_trim(db);
        pthread_rwlock_unlock(&db->plock);
    }
}

void eng_cache_trim(eng_db *db)
{
    uint64_t limit = db->cache_bytes / ENG_PAGE_SIZE;
    pthread_mutex_lock(&db->cmu);
    if (db->nframes > limit) drop_clean(db, limit / 2, any_clean);
    pthread_mutex_unlock(&db->cmu);
}

/* A frame whose page replay met since its last recovery checkpoint, not first by an image,
 * says so only while it is cached (met_gen; eng_cache_met_since): it stays. */
static int replay_may_go(const frame *f)
{
    return f->rebuilt || !f->met_gen;
}

void eng_cache_trim_replay(eng_db *db, uint64_t target)
{
    pthread_mutex_lock(&db->cmu);
    if (db->nframes > target) drop_clean(db, target, replay_may_go);
    pthread_mutex_unlock(&db->cmu);
}

int eng_cache_write_frames(om_file *f, frame **v, uint32_t n, int in_place, uint64_t base)
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

static int cmp_lsn(const void *a, const void *b)
{
    const frame *x = *(frame *const *)a, *y = *(frame *const *)b;
    if (x->lsn != y->lsn) return x->lsn < y->lsn ? -1 : 1;
    return x->pgno < y->pgno ? -1 : x->pgno > y->pgno;
}

/* Appends the oldest dirty frames to the hold file and drops them (plock held for writing). */
static int spill_oldest(eng_db *db, uint32_t target)
{
    frame **v = NULL;
    uint32_t n = 0;
    int rc = eng_cache_dirty_frames(db, &v, &n);
    if (rc) return rc;
    qsort(v, n, sizeof *v, cmp_lsn);
    for (uint32_t i = 0; i + target < n && !rc; i++) {
        frame *f = v[i];
        eng_page_seal(f->page, f->pgno);
        uint64_t off = 0;
        rc = eng_hold_append(db, f->pgno, f->page, &off);
        if (rc) break;
        pthread_mutex_lock(&db->cmu);
        rc = eng_hold_index_set(db, f->pgno, off);
        if (!rc) eng_cache_evict(db, f);
        pthread_mutex_unlock(&db->cmu);
        if (!rc) db->st.pages_spilled++;
    }
    free(v);
    return rc;
}

int eng_cache_spill(eng_db *db)
{
    uint64_t limit = db->cache_bytes / ENG_PAGE_SIZE;
    if (db->hf.failed || (uint64_t)db->ndirty < limit) {
        pthread_mutex_lock(&db->cmu);
        uint32_t frames = db->nframes;
        pthread_mutex_unlock(&db->cmu);
        if (frames <= limit) return 0;
        pthread_rwlock_wrlock(&db->plock);
        eng_cache_trim(db);
        pthread_rwlock_unlock(&db->plock);
        return 0;
    }
    pthread_rwlock_wrlock(&db->plock);
    int rc = spill_oldest(db, (uint32_t)(limit / 2));
    eng_cache_trim(db);
    pthread_rwlock_unlock(&db->plock);
    if (rc) {
        db->hf.failed = 1;
        om_warn("%s: cannot spill held pages to %s (%s); they stay in memory until the release",
                db->edb, db->holdp, om_err_detail());
    }
    return 0;
}

void eng_cache_end_hold(eng_db *db)
{
    pthread_rwlock_wrlock(&db->plock);
    pthread_mutex_lock(&db->cmu);
    /* Frames read back from the file now equal the .edb. */
    for (uint32_t i = 0; i < db->hsize; i++)
        for (frame *f = db->htab[i]; f; f = f->next)
            f->from_hold = 0;
    eng_hold_index_clear(db);
    pthread_mutex_unlock(&db->cmu);
    pthread_rwlock_unlock(&db->plock);
    eng_hold_remove_file(db);
}

/* One frame against the first bullet of db_internal.h: in its page's bucket and alone there,
 * a page loaded whole (status OK) whose header names it, no newer than the database; deep:
 * a clean frame (written by a checkpoint, read back, or spilled: sealed each time) also
 * carries its checksum. */
static int check_frame(eng_db *db, const frame *f, int deep, char *why, size_t n)
{
    eng_pghdr h;
    eng_pghdr_get(f->page, &h);
    if (eng_cache_lookup(db, f->pgno) != f)
        return snprintf(why, n, "page %u: its frame is not the one its bucket finds", f->pgno), 1;
    if (f->pgno == 0 || f->pgno > db->pages)
        return snprintf(why, n, "page %u is cached, the database has %u pages", f->pgno, db->pages),
               1;
    if (f->status != ENG_PAGE_OK || h.pgno != f->pgno)
        return snprintf(why, n, "page %u: cached with status %u, its header names page %u", f->pgno,
                        f->status, h.pgno),
               1;
    if (h.dbtime > db->dbtime)
        return snprintf(why, n, "page %u is at dbtime %llu, past the database's %llu", f->pgno,
                        (unsigned long long)h.dbtime, (unsigned long long)db->dbtime),
               1;
    if (f->from_hold && !eng_hold_lookup(db, f->pgno, &(uint64_t){0}))
        return snprintf(why, n, "page %u was read from the hold file, which no longer has it",
                        f->pgno),
               1;
    if (deep && !f->dirty && eng_page_check(f->page, f->pgno, NULL) != ENG_PAGE_OK)
        return snprintf(why, n, "page %u is clean in the cache but fails its checksum", f->pgno), 1;
    return 0;
}

int eng_cache_check_page(eng_db *db, uint32_t pgno, char *why, size_t n)
{
    pthread_mutex_lock(&db->cmu);
    const frame *f = eng_cache_lookup(db, pgno);
    int bad = !f || !f->dirty
                  ? snprintf(why, n, "page %u: committed, but no dirty frame holds it", pgno) > 0
                  : check_frame(db, f, 0, why, n);
    pthread_mutex_unlock(&db->cmu);
    return bad;
}

int eng_cache_check(eng_db *db, int deep, char *why, size_t n)
{
    pthread_mutex_lock(&db->cmu);
    uint32_t frames = 0, dirty = 0;
    int bad = 0;
    for (uint32_t i = 0; i < db->hsize && !bad; i++)
        for (const frame *f = db->htab[i]; f && !bad; f = f->next) {
            frames++;
            dirty += f->dirty;
            bad = check_frame(db, f, deep, why, n);
        }
    if (!bad && (frames != db->nframes || dirty != db->ndirty))
        bad = snprintf(why, n, "the cache counts %u frames, %u dirty; it holds %u, %u dirty",
                       db->nframes, db->ndirty, frames, dirty) > 0;
    if (!bad) bad = eng_hold_check(db, why, n);
    pthread_mutex_unlock(&db->cmu);
    return bad;
}

int eng_cache_check_durable(eng_db *db, uint64_t durable, char *why, size_t n)
{
    pthread_mutex_lock(&db->cmu);
    int bad = 0;
    for (uint32_t i = 0; i < db->hsize && !bad; i++)
        for (const frame *f = db->htab[i]; f && !bad; f = f->next)
            if (f->dirty && f->lsn > durable)
                bad =
                    snprintf(why, n,
                             "page %u would reach the .edb before its log: changed at LSN %llu, "
                             "the log is durable to %llu",
                             f->pgno, (unsigned long long)f->lsn, (unsigned long long)durable) > 0;
    pthread_mutex_unlock(&db->cmu);
    return bad;
}
