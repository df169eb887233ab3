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
 *   stops, with a warning, and the dirty pages stay in memory until the release.
 *
 * This file is the file and its index only: which frames go there is the cache's choice
 * (eng_cache_spill), and writing them back is the checkpoint's (checkpoint.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "engine/db_internal.h"

static uint32_t slot_of(uint32_t pgno, uint32_t cap)
{
    return (pgno * 2654435761u) & (cap - 1);
}

int eng_hold_lookup(eng_db *db, uint32_t pgno, uint64_t *off)
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

int eng_hold_read(eng_db *db, uint32_t pgno, uint64_t off, uint8_t *page)
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

int eng_hold_append(eng_db *db, uint32_t pgno, const uint8_t *page, uint64_t *off)
{
    int rc = open_file(db);
    if (!rc) rc = om_pwrite(db->hf.f, page, ENG_PAGE_SIZE, db->hf.end);
    if (rc) return om_err_ctx(rc, "writing page %u to %s", pgno, db->holdp);
    *off = db->hf.end;
    db->hf.end += ENG_PAGE_SIZE;
    return 0;
}

int eng_hold_index_set(eng_db *db, uint32_t pgno, uint64_t off)
{
    return index_set(&db->hf, pgno, off);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int eng_hold_list(eng_db *db, uint32_t **pages, uint32_t *n)
{
    hold_file *h = &db->hf;
    uint32_t *v = malloc((h->count ? h->count : 1) * sizeof *v), k = 0;
    if (!v) return om_errf(OM_E_OutOfMemory, "hold file index: out of memory");
    for (uint32_t i = 0; i < h->cap; i++)
        if (h->keys[i]) v[k++] = h->keys[i];
    qsort(v, k, sizeof *v, cmp_u32);
    *pages = v;
    *n = k;
    return 0;
}

static void index_free(hold_file *h)
{
    free(h->keys);
    free(h->offs);
    h->keys = NULL;
    h->offs = NULL;
    h->cap = h->count = 0;
}

void eng_hold_index_clear(eng_db *db)
{
    index_free(&db->hf);
}

void eng_hold_remove_file(eng_db *db)
{
    if (db->hf.f) {
        om_close(db->hf.f);
        db->hf.f = NULL;
        int rc = db->vfs->unlink(db->vfs, db->holdp);
        if (rc && rc != OM_E_FileNotFound) om_warn("deleting %s: %s", db->holdp, om_err_detail());
    }
    db->hf.end = 0;
    db->hf.failed = 0;
}

int eng_hold_check(eng_db *db, char *why, size_t n)
{
    const hold_file *h = &db->hf;
    uint32_t keys = 0;
    if (h->count && (h->count * 2 > h->cap || !h->f))
        return snprintf(why, n, "hold file index: %u pages in %u slots, file %s", h->count, h->cap,
                        h->f ? "open" : "not open"),
               1;
    for (uint32_t i = 0; i < h->cap; i++) {
        if (!h->keys[i]) continue;
        keys++;
        if (h->offs[i] % ENG_PAGE_SIZE || h->offs[i] + ENG_PAGE_SIZE > h->end)
            return snprintf(why, n,
                            "hold file index: page %u at offset %llu, the file has %llu bytes",
                            h->keys[i], (unsigned long long)h->offs[i], (unsigned long long)h->end),
                   1;
    }
    if (keys != h->count)
        return snprintf(why, n, "hold file index: %u pages counted, %u in the slots", h->count,
                        keys),
               1;
    return 0;
}

void eng_hold_free(eng_db *db)
{
    om_close(db->hf.f);
    db->hf.f = NULL;
    index_free(&db->hf);
}

int eng_hold_remove_stale(eng_db *db)
{
    int ex = db->vfs->exists(db->vfs, db->holdp);
    if (ex <= 0) return ex;
    /* Not synced: if the deletion is lost, the next open deletes it again. */
    return db->vfs->unlink(db->vfs, db->holdp);
}
