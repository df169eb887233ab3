/* On-disk formats of the engine: database header and pages, checkpoint file, log file header,
 * log segments and log records. Encoding is explicit little-endian, field by field; each
 * decode function checks bounds and checksums and never trusts a length it read. Shared with
 * the check library and dbutil.
 *
 * Database file (.edb): page size 32 KiB. File pages 0 and 1 hold the header twice (primary,
 * then secondary, each with its own checksum seeded by its index); data page n (n >= 1) lives
 * at offset (n + 1) * 32 KiB. Every data page starts with a 32-byte page header:
 *   0 u64 checksum   XXH3-64 of bytes 8..32767, seeded with the page number
 *   8 u32 pgno       12 u32 objid       16 u64 dbtime       24 u32 flags      28 u32 reserved
 *
 * Log file (1 MiB): slot 0 is the 4 KiB file header; slots 1..255 are 4 KiB segments:
 *   0 u64 checksum   XXH3-64 of bytes 8..4095, seeded with (generation << 32 | slot)
 *   8 u32 generation 12 u16 slot        14 u16 data_len     16 u32 stream_off
 *  20 u16 flush_first_slot  22 u16 flags 24 u64 reserved    32 payload (4064 bytes)
 * A generation's record stream is the concatenation of its segments' payloads. Every flush
 * starts in a fresh slot and no slot that holds acknowledged data is ever written again
 * (docs/design.md: "log flushes"), so a torn write can only damage the flush in progress.
 *
 * Log records: a 16-byte header (u8 type, u8 flags, u16 reserved, u32 length including the
 * header, u64 transaction id) and a body. A transaction is a group of records ending with a
 * COMMIT of the same id; replay applies a group only when it sees its COMMIT. Records never
 * straddle two generations; groups may. */
#ifndef OM_ENGINE_FORMAT_H
#define OM_ENGINE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "base/uuid.h"
#include "base/vfs.h"
#include "engine/types.h"

#define ENG_FORMAT_VERSION 1u
#define ENG_SLOT_SIZE      4096u
#define ENG_LOG_SLOTS      (ENG_LOG_SIZE / ENG_SLOT_SIZE) /* 256: slot 0 = header */
#define ENG_SEG_HDR        32u
#define ENG_SEG_PAYLOAD    (ENG_SLOT_SIZE - ENG_SEG_HDR)
#define ENG_GEN_CAPACITY   ((ENG_LOG_SLOTS - 1) * ENG_SEG_PAYLOAD)
#define ENG_CHK_COPY       4096u
#define ENG_MAX_GEN        0xFFFFFFF0u

/* ---- pages ---- */

enum eng_page_status { ENG_PAGE_OK, ENG_PAGE_ZERO, ENG_PAGE_BAD_CHECKSUM, ENG_PAGE_WRONG_PGNO };

typedef struct eng_pghdr {
    uint64_t checksum;
    uint32_t pgno, objid;
    uint64_t dbtime;
    uint32_t flags;
} eng_pghdr;

void eng_pghdr_get(const uint8_t *page, eng_pghdr *h);
void eng_pghdr_set(uint8_t *page, uint32_t pgno, uint32_t objid, uint64_t dbtime, uint32_t flags);
/* Computes and stores the page's checksum (seeded with pgno). */
void eng_page_seal(uint8_t *page, uint32_t pgno);
/* Verifies a page read from data page number pgno. *actual gets the computed checksum. */
enum eng_page_status eng_page_check(const uint8_t *page, uint32_t pgno, uint64_t *actual);
static inline uint64_t eng_page_offset(uint32_t pgno)
{
    return (uint64_t)(pgno + 1) * ENG_PAGE_SIZE;
}

/* ---- database header ---- */

typedef struct eng_dbhdr {
    uint32_t version, page_size;
    om_uuid db_id;
    eng_sig db_sig, log_sig;
    uint32_t state, pages;
    uint64_t dbtime;
    uint32_t log_req_min, log_req_max, log_committed, flags;
    eng_lgpos consistent, attach, detach;
    uint64_t consistent_time, attach_time, detach_time;
    char base[4];
    uint32_t objid_last;
    uint64_t txn_last;
    uint64_t create_time;
    uint32_t repaired; /* times a bad header copy was rewritten from the other */
    eng_bkslot slots[ENG_BK_NSLOTS];
    /* The change map's token (changemap.c): equal to the token of E00.cbt only while the map
     * holds every page written since its epochs began; 0: no map vouches for this file. Headers
     * of older builds read 0 here. */
    uint64_t cbt_token;
} eng_dbhdr;

/* Header flags. RESTORING (header only): hard recovery has begun changing the database; it is
 * cleared when hard recovery brings it to Clean Shutdown, and a database that carries it is not
 * mounted or soft-recovered (its logs may be in another folder, or not all meant to apply). */
enum { ENG_DBF_CIRCULAR = 1, ENG_DBF_RESTORING = 2 };

/* Encodes into a whole page (ENG_PAGE_SIZE) with the checksum for copy `copy` (0 or 1). */
void eng_dbhdr_encode(const eng_dbhdr *h, uint8_t *page, int copy);
/* InvalidDatabase when the magic is wrong, ReadVerifyFailure when the checksum is (or the
 * copy is all zeros), InvalidDatabase for an unknown version, PageSizeMismatch for another
 * page size. */
int eng_dbhdr_decode(const uint8_t *page, int copy, eng_dbhdr *h);

/* Reads both header copies. A bad copy is reported in *repaired_copy (-1 when both were good)
 * and rewritten from the good one when `repair` is set and the file is writable. Both bad:
 * ReadVerifyFailure / InvalidDatabase naming the file. */
int eng_dbhdr_read(om_vfs *v, const char *edb, eng_dbhdr *h, int repair, int *repaired_copy);
/* Writes the primary copy, syncs, then the secondary, syncs: a crash tears at most one. */
int eng_dbhdr_write(om_file *f, const eng_dbhdr *h);
/* The same with no sync at all: for a file whose every write a later sync covers before
 * anything relies on it (a restore's hard recovery of an .edb laid unsynced, hard_recovery.c). */
int eng_dbhdr_write_unsynced(om_file *f, const eng_dbhdr *h);

const char *eng_state_name(uint32_t state);
const char *eng_bkslot_name(int slot);

/* ---- checkpoint file ---- */

typedef struct eng_chkfile {
    eng_lgpos checkpoint;
    eng_sig log_sig, db_sig;
    uint64_t time;
    eng_lgpos last_full, last_incremental;
    char base[4];
    /* The .edb's stamp once everything before this write of E00.chk reached it (all 0 when the
     * file system gives none, or in a file from an older build): what the change map compares
     * at the next mount (changemap.c). */
    om_stamp edb;
} eng_chkfile;

/* Reads E00.chk: the newer good copy. BadCheckpointSignature is not checked here. */
int eng_chk_read(om_vfs *v, const char *path, eng_chkfile *c, int *bad_copies);
/* Writes copy 0, syncs, copy 1, syncs. Creates the file if missing. */
int eng_chk_write(om_vfs *v, const char *path, const eng_chkfile *c);
void eng_chk_encode(const eng_chkfile *c, uint8_t *buf, int copy);
int eng_chk_decode(const uint8_t *buf, int copy, eng_chkfile *c);

/* ---- log file header ---- */

typedef struct eng_loghdr {
    uint32_t version, gen;
    eng_sig log_sig;
    uint64_t created, prev_created;
    eng_lgpos checkpoint; /* at creation */
    uint32_t flags;       /* ENG_DBF_CIRCULAR */
    char base[4];
    uint32_t page_size;
    om_uuid db_id;
    eng_sig db_sig;
    uint32_t prev_end; /* length of the previous generation's record stream */
} eng_loghdr;

void eng_loghdr_encode(const eng_loghdr *h, uint8_t *slot);
/* LogFileCorrupt on a bad checksum or magic, BadLogVersion on an unknown version. */
int eng_loghdr_decode(const uint8_t *slot, eng_loghdr *h);
/* Reads only a log file's header (its first slot): I/O errors, LogFileCorrupt, BadLogVersion,
 * each naming the file. */
int eng_loghdr_read(om_vfs *v, const char *path, eng_loghdr *h);
/* 1 when the file at path is generation gen of the stream log_sig (its header says so); 0 for
 * anything else (missing, unreadable, another stream's, not a log), with no error kept. */
int eng_loghdr_is(om_vfs *v, const char *path, uint32_t gen, const eng_sig *log_sig);

/* ---- log segments ---- */

typedef struct eng_seghdr {
    uint32_t gen;
    uint16_t slot, data_len;
    uint32_t stream_off;
    uint16_t flush_first;
    uint16_t flags;
} eng_seghdr;

enum eng_seg_status { ENG_SEG_OK, ENG_SEG_EMPTY, ENG_SEG_STALE, ENG_SEG_BAD };

void eng_seg_encode(const eng_seghdr *h, const uint8_t *payload, uint8_t *slot);
/* OK: checksum right for (gen, slot); EMPTY: all zero; STALE: a good segment of another
 * position (another generation or slot); BAD: anything else (torn or damaged). */
enum eng_seg_status eng_seg_decode(const uint8_t *slot, uint32_t gen, uint16_t slotno,
                                   eng_seghdr *h);

/* ---- log records ---- */

enum eng_rec_type {
    ENG_REC_PAGE = 1,        /* page change: image or byte ranges */
    ENG_REC_COMMIT = 2,      /* ends a transaction's group */
    ENG_REC_BACKUP_MARK = 3, /* written at freeze */
    ENG_REC_BACKUP_SLOT = 4, /* a backup slot update */
    ENG_REC_ATTACH = 5,      /* database mounted */
    ENG_REC_TERM = 6,        /* clean shutdown */
};

enum {
    ENG_RECF_IMAGE = 1,    /* PAGE: zero the body, then apply the ranges */
    ENG_RECF_NEW_PAGE = 4, /* PAGE: newly allocated */
};

#define ENG_REC_HDR 16u
#define ENG_REC_MAX (ENG_REC_HDR + 40u + 8u + ENG_PAGE_BODY + 1024u)

typedef struct eng_range {
    uint16_t off, len;
    const uint8_t *data; /* points into the record */
} eng_range;

#define ENG_MAX_RANGES 256

typedef struct eng_rec {
    uint8_t type, flags;
    uint32_t len;
    uint64_t txn;
    union {
        struct {
            uint32_t pgno, objid, pflags, nranges;
            uint64_t before, after;
            eng_range ranges[ENG_MAX_RANGES];
        } page;
        struct {
            uint64_t time, dbtime;
        } commit;
        struct {
            uint32_t kind;
            uint64_t time;
        } mark;
        struct {
            uint32_t slot, clear_mask;
            eng_bkslot value;
        } bkslot;
        struct {
            uint64_t time;
            eng_sig db_sig;
        } attach;
    } u;
} eng_rec;

/* Decodes the record at stream[*off]. Returns 1 and sets *off past it; 0 at a clean end or a
 * truncated record at the end of the stream (the rest is an unfinished flush); LogFileCorrupt
 * when the bytes are not a record. */
int eng_rec_decode(const uint8_t *stream, uint32_t len, uint32_t *off, eng_rec *r);
/* Encoders append to buf (capacity checked by caller against ENG_REC_MAX); return bytes. */
uint32_t eng_rec_encode_page(uint8_t *buf, uint64_t txn, uint8_t flags, uint32_t pgno,
                             uint32_t objid, uint32_t pflags, uint64_t before, uint64_t after,
                             const eng_range *ranges, uint32_t nranges);
uint32_t eng_rec_encode_commit(uint8_t *buf, uint64_t txn, uint64_t time, uint64_t dbtime);
uint32_t eng_rec_encode_mark(uint8_t *buf, uint64_t txn, uint32_t kind, uint64_t time);
uint32_t eng_rec_encode_bkslot(uint8_t *buf, uint64_t txn, uint32_t slot, uint32_t clear_mask,
                               const eng_bkslot *v);
uint32_t eng_rec_encode_attach(uint8_t *buf, uint64_t txn, uint8_t type, uint64_t time,
                               const eng_sig *db_sig);
const char *eng_rec_type_name(uint8_t type);

/* ---- file names ---- */

/* E00.log, E00tmp.log, E00.chk, E00.pgj, E00XXXXXXXX.log, E00res0000N.jrs inside dir. */
int eng_log_path(char *out, size_t len, const char *dir, const char *base, uint32_t gen);
int eng_cur_log_path(char *out, size_t len, const char *dir, const char *base);
int eng_tmp_log_path(char *out, size_t len, const char *dir, const char *base);
int eng_chk_path(char *out, size_t len, const char *dir, const char *base);
/* E00.pgj: the page journal of checkpoints (journal.c). */
int eng_pgj_path(char *out, size_t len, const char *dir, const char *base);
int eng_res_log_path(char *out, size_t len, const char *dir, const char *base, int n);
/* E00.cbt: the change map (changemap.c). */
int eng_cbt_path(char *out, size_t len, const char *dir, const char *base);
/* E00.hold: pages spilled while page writes are held (hold.c); garbage after a crash. */
int eng_hold_path(char *out, size_t len, const char *dir, const char *base);
/* If name is a finished generation of base ("E000000001A.log"), returns 1 and sets *gen. */
int eng_parse_log_name(const char *name, const char *base, uint32_t *gen);
/* A base name is three characters: a letter and two hex digits or letters ("E00", "E0A"). */
int eng_base_valid(const char *base);

#endif
