/* The page journal (E00.pgj): torn-page protection for checkpoints.
 *
 * A checkpoint writes its dirty pages twice: first all of them, one after the other, into the
 * journal, which it syncs; then each at its place in the .edb, which it syncs. A crash while
 * the pages go to their places can tear some of them; the journal then holds a whole copy of
 * every one. Before replay, recovery copies the journal's version over any page that fails its
 * checksum. A crash while the journal itself is written leaves the .edb untouched (its pages
 * are written only after the journal is synced), so a damaged journal is simply not used.
 *
 * Only torn pages are repaired. A page that is whole but older than the journal's copy is left
 * alone: either the crash came before its write (replay from the old checkpoint brings it
 * forward) or the storage lost a write it had acknowledged, which replay reports as a lost
 * flush rather than hiding it.
 *
 * Layout: a header (padded to 4 KiB multiples), then the pages, 32 KiB each:
 *    0 u64 checksum (XXH3 of the rest of the header)   8 "OMBRAPGJ"   16 u32 version
 *   20 u32 count   24 db signature (16)   40 u32 header size   44 u32 0
 *   48 count x {u32 pgno, u32 0, u64 page checksum}
 * Entries past `count` are left over from an earlier, larger checkpoint and ignored; an entry
 * whose page does not carry the checksum the header recorded was not fully written. */
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/logging.h"
#include "engine/db_internal.h"

static const char PGJ_MAGIC[8] = {'O', 'M', 'B', 'R', 'A', 'P', 'G', 'J'};
#define PGJ_SEED  0x4f4d50474aull
#define PGJ_FIXED 48u
#define PGJ_ENTRY 16u

static uint32_t header_size(uint32_t n)
{
    return (PGJ_FIXED + PGJ_ENTRY * n + 4095u) & ~4095u;
}

int eng_pgj_write(eng_db *db, frame **pages, uint32_t n)
{
    char path[4200];
    eng_pgj_path(path, sizeof path, db->logdir, db->base);
    uint32_t hs = header_size(n);
    uint8_t *hdr = calloc(1, hs);
    if (!hdr) return om_errf(OM_E_OutOfMemory, "page journal: out of memory");
    memcpy(hdr + 8, PGJ_MAGIC, 8);
    om_put32(hdr + 16, ENG_FORMAT_VERSION);
    om_put32(hdr + 20, n);
    om_put64(hdr + 24, db->hdr.db_sig.random);
    om_put64(hdr + 32, db->hdr.db_sig.time);
    om_put32(hdr + 40, hs);
    for (uint32_t i = 0; i < n; i++) {
        om_put32(hdr + PGJ_FIXED + PGJ_ENTRY * i, pages[i]->pgno);
        om_put64(hdr + PGJ_FIXED + PGJ_ENTRY * i + 8, om_get64(pages[i]->page));
    }
    om_put64(hdr, om_xxh3(hdr + 8, hs - 8, PGJ_SEED));
    om_file *f = NULL;
    int existed = db->vfs->exists(db->vfs, path);
    int rc = existed < 0 ? existed : om_open(db->vfs, path, OM_O_CREATE, &f);
    if (!rc) rc = om_pwrite(f, hdr, hs, 0);
    if (!rc) rc = eng_cache_write_frames(f, pages, n, 0, hs);
    if (!rc) rc = om_sync(f);
    /* A new journal's name must be durable too, or a crash could take the file away while
     * the pages it protects are torn. */
    if (!rc && !existed) rc = db->vfs->sync_dir(db->vfs, db->logdir);
    om_close(f);
    free(hdr);
    return rc;
}

/* Reads and checks the header; 0 with *n = 0 when there is no usable journal. */
static int read_header(eng_db *db, om_file *f, uint8_t **hdr, uint32_t *n, uint32_t *hs)
{
    uint8_t first[4096];
    size_t got = 0;
    *n = 0;
    int rc = db->vfs->pread(f, first, sizeof first, 0, &got);
    if (rc || got < sizeof first || memcmp(first + 8, PGJ_MAGIC, 8) != 0) return rc;
    uint32_t cnt = om_get32(first + 20), size = om_get32(first + 40);
    if (size != header_size(cnt) || size > (64u << 20)) return 0;
    uint8_t *h = malloc(size);
    if (!h) return om_errf(OM_E_OutOfMemory, "page journal: out of memory");
    rc = db->vfs->pread(f, h, size, 0, &got);
    if (rc || got < size || om_get64(h) != om_xxh3(h + 8, size - 8, PGJ_SEED) ||
        om_get64(h + 24) != db->hdr.db_sig.random || om_get64(h + 32) != db->hdr.db_sig.time) {
        free(h);
        return rc;
    }
    *hdr = h;
    *n = cnt;
    *hs = size;
    return 0;
}

int eng_pgj_repair(eng_db *db, uint32_t *repaired)
{
    char path[4200];
    eng_pgj_path(path, sizeof path, db->logdir, db->base);
    *repaired = 0;
    om_file *f = NULL;
    int rc = om_open(db->vfs, path, OM_O_RDONLY, &f);
    if (rc == OM_E_FileNotFound) return 0;
    if (rc) return rc;
    uint8_t *hdr = NULL, *jp = NULL, *dp = NULL;
    uint32_t n = 0, hs = 0;
    rc = read_header(db, f, &hdr, &n, &hs);
    if (!rc && n && (!(jp = malloc(ENG_PAGE_SIZE)) || !(dp = malloc(ENG_PAGE_SIZE))))
        rc = om_errf(OM_E_OutOfMemory, "page journal: out of memory");
    for (uint32_t i = 0; i < n && !rc; i++) {
        uint32_t pgno = om_get32(hdr + PGJ_FIXED + PGJ_ENTRY * i);
        uint64_t sum = om_get64(hdr + PGJ_FIXED + PGJ_ENTRY * i + 8);
        size_t got = 0;
        if ((rc = db->vfs->pread(f, jp, ENG_PAGE_SIZE, hs + (uint64_t)i * ENG_PAGE_SIZE, &got)))
            break;
        if (got < ENG_PAGE_SIZE || eng_page_check(jp, pgno, NULL) != ENG_PAGE_OK ||
            om_get64(jp) != sum)
            continue; /* not fully written: its place in the .edb was not touched either */
        if ((rc = db->vfs->pread(db->edbf, dp, ENG_PAGE_SIZE, eng_page_offset(pgno), &got))) break;
        if (got < ENG_PAGE_SIZE) memset(dp + got, 0, ENG_PAGE_SIZE - got);
        enum eng_page_status st = eng_page_check(dp, pgno, NULL);
        if (st != ENG_PAGE_BAD_CHECKSUM && st != ENG_PAGE_WRONG_PGNO) continue;
        if ((rc = om_pwrite(db->edbf, jp, ENG_PAGE_SIZE, eng_page_offset(pgno)))) break;
        (*repaired)++;
    }
    if (!rc && *repaired) {
        rc = om_sync(db->edbf);
        om_warn("%s: %u page(s) torn by a crash during a checkpoint were restored from %s", db->edb,
                *repaired, path);
    }
    free(jp);
    free(dp);
    free(hdr);
    om_close(f);
    return rc;
}
