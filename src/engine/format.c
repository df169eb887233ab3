/* Encoders and decoders of the engine's file formats (see format.h for the layouts). */
#include "engine/format.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"

static const char DB_MAGIC[8] = {'O', 'M', 'B', 'R', 'A', 'E', 'D', 'B'};
static const char CHK_MAGIC[8] = {'O', 'M', 'B', 'R', 'A', 'C', 'H', 'K'};
static const char LOG_MAGIC[8] = {'O', 'M', 'B', 'R', 'A', 'L', 'O', 'G'};

/* Seeds that keep a header copy, a checkpoint copy and a log header from passing as another. */
#define SEED_DBHDR  0x4f4d4244424844ull
#define SEED_CHK    0x4f4d43484b00ull
#define SEED_LOGHDR 0x4f4d4c4f4748ull

/* ---- pages ---- */

void eng_pghdr_get(const uint8_t *page, eng_pghdr *h)
{
    h->checksum = om_get64(page);
    h->pgno = om_get32(page + 8);
    h->objid = om_get32(page + 12);
    h->dbtime = om_get64(page + 16);
    h->flags = om_get32(page + 24);
}

void eng_pghdr_set(uint8_t *page, uint32_t pgno, uint32_t objid, uint64_t dbtime, uint32_t flags)
{
    om_put32(page + 8, pgno);
    om_put32(page + 12, objid);
    om_put64(page + 16, dbtime);
    om_put32(page + 24, flags);
    om_put32(page + 28, 0);
}

void eng_page_seal(uint8_t *page, uint32_t pgno)
{
    om_put64(page, om_xxh3(page + 8, ENG_PAGE_SIZE - 8, pgno));
}

static int all_zero(const uint8_t *p, size_t n)
{
    static const uint8_t z[256];
    while (n >= sizeof z) {
        if (memcmp(p, z, sizeof z)) return 0;
        p += sizeof z;
        n -= sizeof z;
    }
    return memcmp(p, z, n) == 0;
}

enum eng_page_status eng_page_check(const uint8_t *page, uint32_t pgno, uint64_t *actual)
{
    uint64_t sum = om_xxh3(page + 8, ENG_PAGE_SIZE - 8, pgno);
    if (actual) *actual = sum;
    if (om_get64(page) == sum)
        return om_get32(page + 8) == pgno ? ENG_PAGE_OK : ENG_PAGE_WRONG_PGNO;
    if (all_zero(page, ENG_PAGE_SIZE)) return ENG_PAGE_ZERO;
    return ENG_PAGE_BAD_CHECKSUM;
}

/* ---- database header ---- */

static void w_sig(om_cur *c, const eng_sig *s)
{
    om_w64(c, s->random);
    om_w64(c, s->time);
}
static void r_sig(om_cur *c, eng_sig *s)
{
    s->random = om_r64(c);
    s->time = om_r64(c);
}
static void w_pos(om_cur *c, eng_lgpos p)
{
    om_w32(c, p.gen);
    om_w32(c, p.off);
}
static eng_lgpos r_pos(om_cur *c)
{
    eng_lgpos p;
    p.gen = om_r32(c);
    p.off = om_r32(c);
    return p;
}
static void w_slot(om_cur *c, const eng_bkslot *s)
{
    om_w32(c, s->first_gen);
    om_w32(c, s->last_gen);
    w_pos(c, s->mark);
    om_w64(c, s->mark_time);
    om_w32(c, s->kind);
    om_w32(c, 0);
}
static void r_slot(om_cur *c, eng_bkslot *s)
{
    s->first_gen = om_r32(c);
    s->last_gen = om_r32(c);
    s->mark = r_pos(c);
    s->mark_time = om_r64(c);
    s->kind = om_r32(c);
    (void)om_r32(c);
}

void eng_dbhdr_encode(const eng_dbhdr *h, uint8_t *page, int copy)
{
    memset(page, 0, ENG_PAGE_SIZE);
    om_cur c = om_cur_make(page + 8, 4096);
    om_wbytes(&c, DB_MAGIC, 8);
    om_w32(&c, h->version);
    om_w32(&c, h->page_size);
    om_wbytes(&c, h->db_id.b, 16);
    w_sig(&c, &h->db_sig);
    w_sig(&c, &h->log_sig);
    om_w32(&c, h->state);
    om_w32(&c, h->pages);
    om_w64(&c, h->dbtime);
    om_w32(&c, h->log_req_min);
    om_w32(&c, h->log_req_max);
    om_w32(&c, h->log_committed);
    om_w32(&c, h->flags);
    w_pos(&c, h->consistent);
    om_w64(&c, h->consistent_time);
    w_pos(&c, h->attach);
    om_w64(&c, h->attach_time);
    w_pos(&c, h->detach);
    om_w64(&c, h->detach_time);
    om_wbytes(&c, h->base, 4);
    om_w32(&c, h->objid_last);
    om_w64(&c, h->txn_last);
    om_w64(&c, h->create_time);
    om_w32(&c, h->repaired);
    for (int i = 0; i < ENG_BK_NSLOTS; i++)
        w_slot(&c, &h->slots[i]);
    om_w64(&c, h->cbt_token);
    om_put64(page, om_xxh3(page + 8, ENG_PAGE_SIZE - 8, SEED_DBHDR + (uint64_t)copy));
}

int eng_dbhdr_decode(const uint8_t *page, int copy, eng_dbhdr *h)
{
    memset(h, 0, sizeof *h);
    if (memcmp(page + 8, DB_MAGIC, 8) != 0) {
        /* Not a checksum failure: a foreign page never matches our checksum, so checking it
         * here would call every non-database file a damaged database. */
        if (all_zero(page, ENG_PAGE_SIZE))
            return om_errf(OM_E_ReadVerifyFailure, "header copy %d is empty (all zeros)", copy);
        return om_errf(OM_E_InvalidDatabase, "header copy %d has no Ombra database magic", copy);
    }
    uint64_t sum = om_xxh3(page + 8, ENG_PAGE_SIZE - 8, SEED_DBHDR + (uint64_t)copy);
    if (om_get64(page) != sum)
        return om_errf(OM_E_ReadVerifyFailure,
                       "header copy %d fails its checksum (stored %016llx, computed %016llx)", copy,
                       (unsigned long long)om_get64(page), (unsigned long long)sum);
    om_cur c = om_cur_make((uint8_t *)page + 16, 4096);
    h->version = om_r32(&c);
    h->page_size = om_r32(&c);
    om_rbytes(&c, h->db_id.b, 16);
    r_sig(&c, &h->db_sig);
    r_sig(&c, &h->log_sig);
    h->state = om_r32(&c);
    h->pages = om_r32(&c);
    h->dbtime = om_r64(&c);
    h->log_req_min = om_r32(&c);
    h->log_req_max = om_r32(&c);
    h->log_committed = om_r32(&c);
    h->flags = om_r32(&c);
    h->consistent = r_pos(&c);
    h->consistent_time = om_r64(&c);
    h->attach = r_pos(&c);
    h->attach_time = om_r64(&c);
    h->detach = r_pos(&c);
    h->detach_time = om_r64(&c);
    om_rbytes(&c, h->base, 4);
    h->base[3] = 0;
    h->objid_last = om_r32(&c);
    h->txn_last = om_r64(&c);
    h->create_time = om_r64(&c);
    h->repaired = om_r32(&c);
    for (int i = 0; i < ENG_BK_NSLOTS; i++)
        r_slot(&c, &h->slots[i]);
    h->cbt_token = om_r64(&c);
    if (h->version != ENG_FORMAT_VERSION)
        return om_errf(OM_E_InvalidDatabase, "unsupported database format version %u", h->version);
    if (h->page_size != ENG_PAGE_SIZE)
        return om_errf(OM_E_PageSizeMismatch, "page size %u, this build uses %u", h->page_size,
                       ENG_PAGE_SIZE);
    if (h->state < ENG_STATE_JUST_CREATED || h->state > ENG_STATE_CLEAN)
        return om_errf(OM_E_InvalidDatabase, "unknown database state %u", h->state);
    return 0;
}

int eng_dbhdr_read(om_vfs *v, const char *edb, eng_dbhdr *h, int repair, int *repaired_copy)
{
    uint8_t *pages = malloc(2 * ENG_PAGE_SIZE);
    om_file *f = NULL;
    int rc, rc0, rc1;
    eng_dbhdr h1;
    char d0[512] = "", d1[512] = "";
    if (repaired_copy) *repaired_copy = -1;
    if (!pages) return om_errf(OM_E_OutOfMemory, "reading %s: out of memory", edb);
    rc = om_open(v, edb, repair ? 0 : OM_O_RDONLY, &f);
    if (rc == OM_E_FileAccessDenied || rc == OM_E_DatabaseFileReadOnly) {
        repair = 0;
        rc = om_open(v, edb, OM_O_RDONLY, &f);
    }
    if (rc) goto out;
    size_t got = 0;
    rc = v->pread(f, pages, 2 * ENG_PAGE_SIZE, 0, &got);
    if (rc) goto out;
    if (got < 2 * ENG_PAGE_SIZE) memset(pages + got, 0, 2 * ENG_PAGE_SIZE - got);
    rc0 = eng_dbhdr_decode(pages, 0, h);
    if (rc0) snprintf(d0, sizeof d0, "%s", om_err_detail());
    rc1 = eng_dbhdr_decode(pages + ENG_PAGE_SIZE, 1, &h1);
    if (rc1) snprintf(d1, sizeof d1, "%s", om_err_detail());
    if (rc0 && rc1) {
        /* Not a database at all reads better than two checksum failures. */
        rc = (rc0 == OM_E_InvalidDatabase || rc1 == OM_E_InvalidDatabase) && got < 2 * ENG_PAGE_SIZE
                 ? OM_E_InvalidDatabase
                 : rc0;
        rc = om_errf(rc, "%s: both header copies are unusable (%s; %s)", edb, d0, d1);
        goto out;
    }
    /* The primary is written first, so when both are good but differ it is the newer. */
    int bad = rc0 ? 0 : rc1 ? 1 : -1;
    if (rc0) *h = h1;
    if (bad < 0 && memcmp(pages + 8, pages + ENG_PAGE_SIZE + 8, ENG_PAGE_SIZE - 8) != 0) bad = 1;
    if (bad >= 0) {
        if (repaired_copy) *repaired_copy = bad;
        if (repair) {
            uint8_t *dst = pages + (size_t)bad * ENG_PAGE_SIZE;
            eng_dbhdr_encode(h, dst, bad);
            rc = om_pwrite(f, dst, ENG_PAGE_SIZE, (uint64_t)bad * ENG_PAGE_SIZE);
            if (!rc) rc = om_sync(f);
            if (rc) goto out;
        }
    }
    rc = 0;
out:
    om_close(f);
    free(pages);
    return rc;
}

static int dbhdr_write(om_file *f, const eng_dbhdr *h, int synced)
{
    uint8_t *page = aligned_alloc(4096, ENG_PAGE_SIZE);
    if (!page) return om_errf(OM_E_OutOfMemory, "writing header of %s: out of memory", f->path);
    int rc = 0;
    for (int copy = 0; copy < 2 && !rc; copy++) {
        eng_dbhdr_encode(h, page, copy);
        rc = om_pwrite(f, page, ENG_PAGE_SIZE, (uint64_t)copy * ENG_PAGE_SIZE);
        if (!rc && synced) rc = om_sync(f);
    }
    free(page);
    return rc;
}

int eng_dbhdr_write(om_file *f, const eng_dbhdr *h)
{
    return dbhdr_write(f, h, 1);
}

int eng_dbhdr_write_unsynced(om_file *f, const eng_dbhdr *h)
{
    return dbhdr_write(f, h, 0);
}

const char *eng_state_name(uint32_t state)
{
    switch (state) {
    case ENG_STATE_JUST_CREATED:
        return "Just Created";
    case ENG_STATE_DIRTY:
        return "Dirty Shutdown";
    case ENG_STATE_CLEAN:
        return "Clean Shutdown";
    }
    return "Unknown";
}

const char *eng_bkslot_name(int slot)
{
    static const char *names[] = {"previous_full", "previous_incremental",
                                  "previous_copy", "previous_differential",
                                  "current_full",  "current_snapshot"};
    return slot >= 0 && slot < ENG_BK_NSLOTS ? names[slot] : "unknown";
}

/* ---- checkpoint ---- */

void eng_chk_encode(const eng_chkfile *c, uint8_t *buf, int copy)
{
    memset(buf, 0, ENG_CHK_COPY);
    om_cur w = om_cur_make(buf + 8, ENG_CHK_COPY - 8);
    om_wbytes(&w, CHK_MAGIC, 8);
    om_w32(&w, ENG_FORMAT_VERSION);
    w_pos(&w, c->checkpoint);
    w_sig(&w, &c->log_sig);
    w_sig(&w, &c->db_sig);
    om_w64(&w, c->time);
    w_pos(&w, c->last_full);
    w_pos(&w, c->last_incremental);
    om_wbytes(&w, c->base, 4);
    om_w64(&w, c->edb.ino);
    om_w64(&w, c->edb.size);
    om_w64(&w, c->edb.mtime_ns);
    om_w64(&w, c->edb.ctime_ns);
    om_put64(buf, om_xxh3(buf + 8, ENG_CHK_COPY - 8, SEED_CHK + (uint64_t)copy));
}

int eng_chk_decode(const uint8_t *buf, int copy, eng_chkfile *c)
{
    memset(c, 0, sizeof *c);
    if (om_get64(buf) != om_xxh3(buf + 8, ENG_CHK_COPY - 8, SEED_CHK + (uint64_t)copy))
        return om_errf(OM_E_CheckpointCorrupt, "checkpoint copy %d fails its checksum", copy);
    if (memcmp(buf + 8, CHK_MAGIC, 8) != 0)
        return om_errf(OM_E_CheckpointCorrupt, "checkpoint copy %d has no checkpoint magic", copy);
    om_cur r = om_cur_make((uint8_t *)buf + 16, ENG_CHK_COPY - 16);
    uint32_t ver = om_r32(&r);
    c->checkpoint = r_pos(&r);
    r_sig(&r, &c->log_sig);
    r_sig(&r, &c->db_sig);
    c->time = om_r64(&r);
    c->last_full = r_pos(&r);
    c->last_incremental = r_pos(&r);
    om_rbytes(&r, c->base, 4);
    c->base[3] = 0;
    c->edb.ino = om_r64(&r); /* zeros in an older build's copy: matches no file */
    c->edb.size = om_r64(&r);
    c->edb.mtime_ns = om_r64(&r);
    c->edb.ctime_ns = om_r64(&r);
    if (ver != ENG_FORMAT_VERSION)
        return om_errf(OM_E_CheckpointCorrupt, "checkpoint format version %u is not supported",
                       ver);
    return 0;
}

int eng_chk_read(om_vfs *v, const char *path, eng_chkfile *c, int *bad_copies)
{
    uint8_t buf[2 * ENG_CHK_COPY];
    om_file *f = NULL;
    int rc = om_open(v, path, OM_O_RDONLY, &f);
    if (rc == OM_E_FileNotFound)
        return om_errf(OM_E_CheckpointFileNotFound, "%s does not exist", path);
    if (rc) return rc;
    size_t got = 0;
    rc = v->pread(f, buf, sizeof buf, 0, &got);
    om_close(f);
    if (rc) return rc;
    if (got < sizeof buf) memset(buf + got, 0, sizeof buf - got);
    eng_chkfile c1;
    int rc0 = eng_chk_decode(buf, 0, c);
    int rc1 = eng_chk_decode(buf + ENG_CHK_COPY, 1, &c1);
    if (bad_copies) *bad_copies = (rc0 != 0) + (rc1 != 0);
    if (rc0 && rc1) return om_errf(OM_E_CheckpointCorrupt, "%s: both copies are damaged", path);
    if (rc0) *c = c1;
    return 0;
}

int eng_chk_write(om_vfs *v, const char *path, const eng_chkfile *c)
{
    uint8_t buf[ENG_CHK_COPY];
    om_file *f = NULL;
    int rc = om_open(v, path, OM_O_CREATE, &f);
    for (int copy = 0; copy < 2 && !rc; copy++) {
        eng_chk_encode(c, buf, copy);
        rc = om_pwrite(f, buf, sizeof buf, (uint64_t)copy * ENG_CHK_COPY);
        if (!rc) rc = om_sync(f);
    }
    om_close(f);
    return rc;
}

/* ---- log file header ---- */

void eng_loghdr_encode(const eng_loghdr *h, uint8_t *slot)
{
    memset(slot, 0, ENG_SLOT_SIZE);
    om_cur c = om_cur_make(slot + 8, ENG_SLOT_SIZE - 8);
    om_wbytes(&c, LOG_MAGIC, 8);
    om_w32(&c, h->version);
    om_w32(&c, h->gen);
    w_sig(&c, &h->log_sig);
    om_w64(&c, h->created);
    om_w64(&c, h->prev_created);
    w_pos(&c, h->checkpoint);
    om_w32(&c, h->flags);
    om_wbytes(&c, h->base, 4);
    om_w32(&c, h->page_size);
    om_wbytes(&c, h->db_id.b, 16);
    w_sig(&c, &h->db_sig);
    om_w32(&c, h->prev_end);
    om_put64(slot, om_xxh3(slot + 8, ENG_SLOT_SIZE - 8, SEED_LOGHDR + h->gen));
}

int eng_loghdr_decode(const uint8_t *slot, eng_loghdr *h)
{
    memset(h, 0, sizeof *h);
    if (memcmp(slot + 8, LOG_MAGIC, 8) != 0) {
        if (all_zero(slot, ENG_SLOT_SIZE))
            return om_errf(OM_E_LogFileCorrupt, "log file header is empty (all zeros)");
        return om_errf(OM_E_LogFileCorrupt, "log file header has no Ombra log magic");
    }
    om_cur c = om_cur_make((uint8_t *)slot + 16, ENG_SLOT_SIZE - 16);
    h->version = om_r32(&c);
    h->gen = om_r32(&c);
    r_sig(&c, &h->log_sig);
    h->created = om_r64(&c);
    h->prev_created = om_r64(&c);
    h->checkpoint = r_pos(&c);
    h->flags = om_r32(&c);
    om_rbytes(&c, h->base, 4);
    h->base[3] = 0;
    h->page_size = om_r32(&c);
    om_rbytes(&c, h->db_id.b, 16);
    r_sig(&c, &h->db_sig);
    h->prev_end = om_r32(&c);
    uint64_t sum = om_xxh3(slot + 8, ENG_SLOT_SIZE - 8, SEED_LOGHDR + h->gen);
    if (om_get64(slot) != sum)
        return om_errf(OM_E_LogFileCorrupt, "log file header fails its checksum");
    if (h->version != ENG_FORMAT_VERSION)
        return om_errf(OM_E_BadLogVersion, "log format version %u is not supported", h->version);
    return 0;
}

/* ---- segments ---- */

static uint64_t seg_seed(uint32_t gen, uint16_t slot)
{
    return (uint64_t)gen << 32 | slot;
}

void eng_seg_encode(const eng_seghdr *h, const uint8_t *payload, uint8_t *slot)
{
    om_put32(slot + 8, h->gen);
    om_put16(slot + 12, h->slot);
    om_put16(slot + 14, h->data_len);
    om_put32(slot + 16, h->stream_off);
    om_put16(slot + 20, h->flush_first);
    om_put16(slot + 22, h->flags);
    om_put64(slot + 24, 0);
    if (payload != slot + ENG_SEG_HDR) memcpy(slot + ENG_SEG_HDR, payload, h->data_len);
    memset(slot + ENG_SEG_HDR + h->data_len, 0, ENG_SEG_PAYLOAD - h->data_len);
    om_put64(slot, om_xxh3(slot + 8, ENG_SLOT_SIZE - 8, seg_seed(h->gen, h->slot)));
}

enum eng_seg_status eng_seg_decode(const uint8_t *slot, uint32_t gen, uint16_t slotno,
                                   eng_seghdr *h)
{
    h->gen = om_get32(slot + 8);
    h->slot = om_get16(slot + 12);
    h->data_len = om_get16(slot + 14);
    h->stream_off = om_get32(slot + 16);
    h->flush_first = om_get16(slot + 20);
    h->flags = om_get16(slot + 22);
    uint64_t stored = om_get64(slot);
    if (stored == om_xxh3(slot + 8, ENG_SLOT_SIZE - 8, seg_seed(gen, slotno))) {
        if (h->gen != gen || h->slot != slotno || h->data_len == 0 ||
            h->data_len > ENG_SEG_PAYLOAD || h->flush_first == 0 || h->flush_first > slotno)
            return ENG_SEG_BAD;
        return ENG_SEG_OK;
    }
    if (all_zero(slot, ENG_SLOT_SIZE)) return ENG_SEG_EMPTY;
    if ((h->gen != gen || h->slot != slotno) &&
        stored == om_xxh3(slot + 8, ENG_SLOT_SIZE - 8, seg_seed(h->gen, h->slot)))
        return ENG_SEG_STALE;
    return ENG_SEG_BAD;
}

/* ---- records ---- */

static uint8_t *rec_hdr(uint8_t *buf, uint8_t type, uint8_t flags, uint32_t len, uint64_t txn)
{
    buf[0] = type;
    buf[1] = flags;
    om_put16(buf + 2, 0);
    om_put32(buf + 4, len);
    om_put64(buf + 8, txn);
    return buf + ENG_REC_HDR;
}

uint32_t eng_rec_encode_page(uint8_t *buf, uint64_t txn, uint8_t flags, uint32_t pgno,
                             uint32_t objid, uint32_t pflags, uint64_t before, uint64_t after,
                             const eng_range *ranges, uint32_t nranges)
{
    uint32_t len = ENG_REC_HDR + 32;
    for (uint32_t i = 0; i < nranges; i++)
        len += 4 + ranges[i].len;
    uint8_t *p = rec_hdr(buf, ENG_REC_PAGE, flags, len, txn);
    om_put32(p, pgno);
    om_put32(p + 4, objid);
    om_put32(p + 8, pflags);
    om_put32(p + 12, nranges);
    om_put64(p + 16, before);
    om_put64(p + 24, after);
    p += 32;
    for (uint32_t i = 0; i < nranges; i++) {
        om_put16(p, ranges[i].off);
        om_put16(p + 2, ranges[i].len);
        memcpy(p + 4, ranges[i].data, ranges[i].len);
        p += 4 + ranges[i].len;
    }
    return len;
}

uint32_t eng_rec_encode_commit(uint8_t *buf, uint64_t txn, uint64_t time, uint64_t dbtime)
{
    uint8_t *p = rec_hdr(buf, ENG_REC_COMMIT, 0, ENG_REC_HDR + 16, txn);
    om_put64(p, time);
    om_put64(p + 8, dbtime);
    return ENG_REC_HDR + 16;
}

uint32_t eng_rec_encode_mark(uint8_t *buf, uint64_t txn, uint32_t kind, uint64_t time)
{
    uint8_t *p = rec_hdr(buf, ENG_REC_BACKUP_MARK, 0, ENG_REC_HDR + 12, txn);
    om_put32(p, kind);
    om_put64(p + 4, time);
    return ENG_REC_HDR + 12;
}

uint32_t eng_rec_encode_bkslot(uint8_t *buf, uint64_t txn, uint32_t slot, uint32_t clear_mask,
                               const eng_bkslot *v)
{
    uint32_t len = ENG_REC_HDR + 8 + 32;
    uint8_t *p = rec_hdr(buf, ENG_REC_BACKUP_SLOT, 0, len, txn);
    om_put32(p, slot);
    om_put32(p + 4, clear_mask);
    om_cur c = om_cur_make(p + 8, 32);
    w_slot(&c, v);
    return len;
}

uint32_t eng_rec_encode_attach(uint8_t *buf, uint64_t txn, uint8_t type, uint64_t time,
                               const eng_sig *db_sig)
{
    uint8_t *p = rec_hdr(buf, type, 0, ENG_REC_HDR + 24, txn);
    om_put64(p, time);
    om_put64(p + 8, db_sig->random);
    om_put64(p + 16, db_sig->time);
    return ENG_REC_HDR + 24;
}

static int bad_rec(uint32_t off, const char *why)
{
    return om_errf(OM_E_LogFileCorrupt, "record at stream offset %u: %s", off, why);
}

int eng_rec_decode(const uint8_t *s, uint32_t len, uint32_t *offp, eng_rec *r)
{
    uint32_t off = *offp;
    if (off >= len) return 0;
    if (len - off < ENG_REC_HDR) return 0; /* a record cut off by the end of the stream */
    const uint8_t *p = s + off;
    r->type = p[0];
    r->flags = p[1];
    r->len = om_get32(p + 4);
    r->txn = om_get64(p + 8);
    if (r->type == 0 && r->len == 0) return bad_rec(off, "zero bytes where a record should start");
    if (r->len < ENG_REC_HDR || r->len > ENG_REC_MAX) return bad_rec(off, "impossible length");
    if (r->len > len - off) return 0;
    const uint8_t *b = p + ENG_REC_HDR;
    uint32_t blen = r->len - ENG_REC_HDR;
    switch (r->type) {
    case ENG_REC_PAGE: {
        if (blen < 32) return bad_rec(off, "page record too short");
        r->u.page.pgno = om_get32(b);
        r->u.page.objid = om_get32(b + 4);
        r->u.page.pflags = om_get32(b + 8);
        r->u.page.nranges = om_get32(b + 12);
        r->u.page.before = om_get64(b + 16);
        r->u.page.after = om_get64(b + 24);
        if (r->u.page.pgno == 0) return bad_rec(off, "page record for page 0");
        if (r->u.page.nranges > ENG_MAX_RANGES) return bad_rec(off, "too many ranges");
        if (r->u.page.after <= r->u.page.before) return bad_rec(off, "dbtime does not advance");
        uint32_t q = 32;
        for (uint32_t i = 0; i < r->u.page.nranges; i++) {
            if (blen - q < 4) return bad_rec(off, "range header past the record");
            eng_range *rg = &r->u.page.ranges[i];
            rg->off = om_get16(b + q);
            rg->len = om_get16(b + q + 2);
            q += 4;
            if (rg->len > blen - q) return bad_rec(off, "range data past the record");
            if ((uint32_t)rg->off + rg->len > ENG_PAGE_BODY)
                return bad_rec(off, "range past the page");
            rg->data = b + q;
            q += rg->len;
        }
        if (q != blen) return bad_rec(off, "page record length does not match its ranges");
        break;
    }
    case ENG_REC_COMMIT:
        if (blen != 16) return bad_rec(off, "commit record has the wrong length");
        r->u.commit.time = om_get64(b);
        r->u.commit.dbtime = om_get64(b + 8);
        break;
    case ENG_REC_BACKUP_MARK:
        if (blen != 12) return bad_rec(off, "backup record has the wrong length");
        r->u.mark.kind = om_get32(b);
        r->u.mark.time = om_get64(b + 4);
        break;
    case ENG_REC_BACKUP_SLOT: {
        if (blen != 40) return bad_rec(off, "backup slot record has the wrong length");
        r->u.bkslot.slot = om_get32(b);
        r->u.bkslot.clear_mask = om_get32(b + 4);
        om_cur c = om_cur_make((uint8_t *)b + 8, 32);
        r_slot(&c, &r->u.bkslot.value);
        if (r->u.bkslot.slot >= ENG_BK_NSLOTS) return bad_rec(off, "unknown backup slot");
        break;
    }
    case ENG_REC_ATTACH:
    case ENG_REC_TERM:
        if (blen != 24) return bad_rec(off, "attach/term record has the wrong length");
        r->u.attach.time = om_get64(b);
        r->u.attach.db_sig.random = om_get64(b + 8);
        r->u.attach.db_sig.time = om_get64(b + 16);
        break;
    default:
        return bad_rec(off, "unknown record type");
    }
    *offp = off + r->len;
    return 1;
}

const char *eng_rec_type_name(uint8_t type)
{
    switch (type) {
    case ENG_REC_PAGE:
        return "page";
    case ENG_REC_COMMIT:
        return "commit";
    case ENG_REC_BACKUP_MARK:
        return "backup-mark";
    case ENG_REC_BACKUP_SLOT:
        return "backup-slot";
    case ENG_REC_ATTACH:
        return "attach";
    case ENG_REC_TERM:
        return "term";
    }
    return "unknown";
}

/* ---- names ---- */

int eng_base_valid(const char *base)
{
    if (!base || strlen(base) != 3) return 0;
    for (int i = 0; i < 3; i++)
        if (!isalnum((unsigned char)base[i])) return 0;
    return 1;
}

static int name_path(char *out, size_t len, const char *dir, const char *name)
{
    return om_path_join(out, len, dir, name);
}

int eng_log_path(char *out, size_t len, const char *dir, const char *base, uint32_t gen)
{
    char name[32];
    snprintf(name, sizeof name, "%s%08X.log", base, gen);
    return name_path(out, len, dir, name);
}

int eng_cur_log_path(char *out, size_t len, const char *dir, const char *base)
{
    char name[32];
    snprintf(name, sizeof name, "%s.log", base);
    return name_path(out, len, dir, name);
}

int eng_tmp_log_path(char *out, size_t len, const char *dir, const char *base)
{
    char name[32];
    snprintf(name, sizeof name, "%stmp.log", base);
    return name_path(out, len, dir, name);
}

int eng_chk_path(char *out, size_t len, const char *dir, const char *base)
{
    char name[32];
    snprintf(name, sizeof name, "%s.chk", base);
    return name_path(out, len, dir, name);
}

int eng_pgj_path(char *out, size_t len, const char *dir, const char *base)
{
    char name[32];
    snprintf(name, sizeof name, "%s.pgj", base);
    return name_path(out, len, dir, name);
}

int eng_cbt_path(char *out, size_t len, const char *dir, const char *base)
{
    char name[32];
    snprintf(name, sizeof name, "%s.cbt", base);
    return name_path(out, len, dir, name);
}

int eng_hold_path(char *out, size_t len, const char *dir, const char *base)
{
    char name[32];
    snprintf(name, sizeof name, "%s.hold", base);
    return name_path(out, len, dir, name);
}

int eng_res_log_path(char *out, size_t len, const char *dir, const char *base, int n)
{
    char name[32];
    snprintf(name, sizeof name, "%sres%05d.jrs", base, n);
    return name_path(out, len, dir, name);
}

int eng_parse_log_name(const char *name, const char *base, uint32_t *gen)
{
    if (strncmp(name, base, 3) != 0 || strlen(name) != 3 + 8 + 4 || strcmp(name + 11, ".log") != 0)
        return 0;
    uint32_t g = 0;
    for (int i = 3; i < 11; i++) {
        char ch = name[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0) return 0;
        g = g << 4 | (uint32_t)d;
    }
    if (g == 0) return 0;
    *gen = g;
    return 1;
}

int eng_loghdr_read(om_vfs *v, const char *path, eng_loghdr *h)
{
    om_file *f = NULL;
    uint8_t slot[ENG_SLOT_SIZE];
    int rc = om_open(v, path, OM_O_RDONLY, &f);
    if (!rc) rc = om_pread_full(f, slot, sizeof slot, 0);
    om_close(f);
    if (!rc) rc = eng_loghdr_decode(slot, h);
    return rc ? om_err_ctx(rc, "%s", path) : 0;
}

int eng_loghdr_is(om_vfs *v, const char *path, uint32_t gen, const eng_sig *log_sig)
{
    eng_loghdr h;
    int rc = eng_loghdr_read(v, path, &h);
    om_err_clear();
    return !rc && h.gen == gen && eng_sig_eq(&h.log_sig, log_sig);
}
