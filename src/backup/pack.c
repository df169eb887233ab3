/* Packs: the files blocks live in (repo.h has the layout). A pack is written by one thread at a
 * time, appended to under a temporary name by the durable-file helper (base/vfs.h), and becomes
 * visible in two durable steps, in this order:
 *   1. om_durable_commit (fsync the pack, rename it to <pack>, fsync packs/ab): the blocks exist;
 *   2. its index file, by the same helper (tmp, fsync, rename, fsync index/): they can be found.
 * A crash before 2 leaves a pack no index lists, which nothing reads and bk_expire removes; a
 * set is written only after 2 for every pack it uses. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "backup/repo_internal.h"
#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"

/* ---- records ---- */

void bk_rec_encode(const bk_rec *h, uint64_t off, uint8_t out[BK_REC_HDR])
{
    om_put32(out, BK_REC_MAGIC);
    om_put32(out + 4, h->flags);
    om_put32(out + 8, h->raw);
    om_put32(out + 12, h->stored);
    memcpy(out + 16, h->id, BK_ID_LEN);
    /* Seeded with the offset: a record copied to the wrong place fails like a damaged one. */
    om_put64(out + 48, om_xxh3(out, 48, off));
}

int bk_rec_decode(const uint8_t in[BK_REC_HDR], uint64_t off, bk_rec *h)
{
    if (om_get32(in) != BK_REC_MAGIC)
        return om_errf(OM_E_RepositoryCorrupt, "no block record at this offset (bad magic)");
    if (om_get64(in + 48) != om_xxh3(in, 48, off))
        return om_errf(OM_E_RepositoryCorrupt, "the block record's header fails its checksum");
    h->flags = om_get32(in + 4);
    h->raw = om_get32(in + 8);
    h->stored = om_get32(in + 12);
    memcpy(h->id, in + 16, BK_ID_LEN);
    if (h->flags & ~(BK_REC_ZSTD | BK_REC_AESGCM))
        return om_errf(OM_E_RepositoryCorrupt, "unknown block flags %#x", h->flags);
    return 0;
}

int bk_block_encode(const bk_repo *r, void *zctx, const uint8_t id[BK_ID_LEN], const void *data,
                    size_t len, uint8_t **payload, uint32_t *stored, uint32_t *flags)
{
    size_t cap = ZSTD_compressBound(len);
    uint8_t *z = malloc(cap), *out = NULL;
    const uint8_t *body = data;
    size_t blen = len;
    *flags = 0;
    if (!z) return om_errf(OM_E_OutOfMemory, "out of memory");
    size_t zn = ZSTD_compressCCtx(zctx, z, cap, data, len, r->zstd_level);
    if (!ZSTD_isError(zn) && zn < len) {
        body = z;
        blen = zn;
        *flags |= BK_REC_ZSTD;
    }
    if (r->encrypted) {
        out = malloc(blen + BK_SEAL_OVERHEAD);
        int rc = out ? bk_seal(r->data_key, id, BK_ID_LEN, body, blen, out)
                     : om_errf(OM_E_OutOfMemory, "out of memory");
        free(z);
        if (rc) {
            free(out);
            return rc;
        }
        *flags |= BK_REC_AESGCM;
        *stored = (uint32_t)(blen + BK_SEAL_OVERHEAD);
    } else if (body == z) {
        out = z;
        *stored = (uint32_t)blen;
    } else {
        free(z);
        out = malloc(len);
        if (!out) return om_errf(OM_E_OutOfMemory, "out of memory");
        memcpy(out, data, len);
        *stored = (uint32_t)len;
    }
    *payload = out;
    return 0;
}

/* The header every pack of this repository starts with. */
static void pack_header(const bk_repo *r, uint8_t hdr[BK_PACK_HDR])
{
    memset(hdr, 0, BK_PACK_HDR);
    memcpy(hdr, "OMBRAPAK", 8);
    om_put32(hdr + 8, BK_FORMAT_VERSION);
    om_put32(hdr + 12, r->encrypted ? BK_PACK_ENCRYPTED : 0);
    memcpy(hdr + 16, r->uuid.b, 16);
}

int bk_pack_header_check(const bk_repo *r, om_file *f)
{
    uint8_t have[BK_PACK_HDR], want[BK_PACK_HDR];
    int rc = om_pread_full(f, have, sizeof have, 0);
    if (rc == OM_E_FileIOBeyondEOF)
        return om_errf(OM_E_RepositoryCorrupt, "the pack is shorter than its header");
    if (rc) return rc;
    pack_header(r, want);
    if (!memcmp(have, want, sizeof have)) return 0;
    if (memcmp(have, want, 8)) return om_errf(OM_E_RepositoryCorrupt, "not a pack (bad magic)");
    if (om_get32(have + 8) != BK_FORMAT_VERSION)
        return om_errf(OM_E_RepositoryCorrupt, "the pack's format version is %u, not %d",
                       om_get32(have + 8), BK_FORMAT_VERSION);
    if (memcmp(have + 16, want + 16, 16)) {
        om_uuid u;
        char s[37];
        memcpy(u.b, have + 16, 16);
        om_uuid_str(&u, s);
        return om_errf(OM_E_RepositoryCorrupt,
                       "the pack belongs to repository %s, not to this one (%s)", s, r->uuid_str);
    }
    return om_errf(OM_E_RepositoryCorrupt, "the pack's header says %s in a%s repository",
                   om_get32(have + 12) == BK_PACK_ENCRYPTED ? "encrypted"
                   : om_get32(have + 12)                    ? "unknown flags"
                                                            : "not encrypted",
                   r->encrypted ? "n encrypted" : " plain");
}

/* Opens a pack for reading; its header checked (this repository's, this format). */
static int open_pack(const bk_repo *r, const char *pack, om_file **f)
{
    char p[BK_PATH_MAX];
    int rc = bk_path(r, p, sizeof p, "packs/%.2s/%s", pack, pack);
    if (!rc) rc = om_open(r->vfs, p, OM_O_RDONLY, f);
    if (rc == OM_E_FileNotFound) return om_errf(OM_E_RepositoryCorrupt, "the pack is missing");
    if (!rc) rc = bk_pack_header_check(r, *f);
    if (rc) {
        om_close(*f);
        *f = NULL;
    }
    return rc;
}

/* The checks of a record read at off whose index entry says stored/raw (b: its header and
 * payload). */
static int record_check(const bk_repo *r, const uint8_t *b, uint64_t off,
                        const uint8_t id[BK_ID_LEN], uint32_t stored, uint32_t raw)
{
    bk_rec h;
    int rc = bk_rec_decode(b, off, &h);
    if (!rc && memcmp(h.id, id, BK_ID_LEN))
        rc = om_errf(OM_E_RepositoryCorrupt, "the record there holds another block");
    if (!rc && (h.stored != stored || h.raw != raw))
        rc = om_errf(OM_E_RepositoryCorrupt, "the record's lengths differ from the index's");
    if (!rc && !!(h.flags & BK_REC_AESGCM) != !!r->encrypted)
        rc = om_errf(OM_E_RepositoryCorrupt, "the record is %s in a%s repository",
                     r->encrypted ? "not encrypted" : "encrypted",
                     r->encrypted ? "n encrypted" : " plain");
    return rc;
}

static int record_pread(const bk_repo *r, om_file *f, uint64_t off, const uint8_t id[BK_ID_LEN],
                        uint32_t stored, uint32_t raw, uint8_t *b)
{
    int rc = om_pread_full(f, b, BK_REC_HDR + (size_t)stored, off);
    if (rc == OM_E_FileIOBeyondEOF) rc = om_errf(OM_E_RepositoryCorrupt, "the pack ends first");
    return rc ? rc : record_check(r, b, off, id, stored, raw);
}

int bk_record_read(const bk_repo *r, const char *pack, uint64_t off, const uint8_t id[BK_ID_LEN],
                   uint32_t stored, uint32_t raw, uint8_t **rec)
{
    om_file *f = NULL;
    uint8_t *b = malloc(BK_REC_HDR + (size_t)stored);
    *rec = NULL;
    if (!b) return om_errf(OM_E_OutOfMemory, "out of memory");
    int rc = open_pack(r, pack, &f);
    if (!rc) rc = record_pread(r, f, off, id, stored, raw, b);
    om_close(f);
    if (rc) {
        free(b);
        return rc;
    }
    *rec = b;
    return 0;
}

/* Whether the block's content is hashed against its id (BK_ID_CHECK), or left to a hash of the
 * caller's that covers every byte of it (BK_ID_COVERED: bk_reader_get_covered). */
enum { BK_ID_CHECK = 1, BK_ID_COVERED = 0 };

/* The content out (raw bytes) against its id. */
static int id_check(const bk_repo *r, const uint8_t *out, uint32_t raw, const uint8_t id[BK_ID_LEN])
{
    uint8_t got_id[BK_ID_LEN];
    int rc = bk_id_of(r, out, raw, got_id);
    if (rc) return rc;
    if (memcmp(got_id, id, BK_ID_LEN))
        return om_errf(OM_E_RepositoryCorrupt, "the block's content does not match its id");
    return 0;
}

/* A checked record's payload to the block: decrypted into plain (room for stored bytes),
 * decompressed (with dz when given) into out (room for raw bytes), its id checked unless
 * check is BK_ID_COVERED. */
static int record_decode(const bk_repo *r, void *dz, const uint8_t *rec,
                         const uint8_t id[BK_ID_LEN], uint32_t stored, uint32_t raw, uint8_t *plain,
                         uint8_t *out, int check)
{
    uint32_t flags = om_get32(rec + 4);
    const uint8_t *body = rec + BK_REC_HDR;
    size_t blen = stored;
    int rc = 0;
    if (flags & BK_REC_AESGCM) {
        if (blen < BK_SEAL_OVERHEAD) return om_errf(OM_E_RepositoryCorrupt, "record too short");
        if ((rc = bk_open_sealed(r->data_key, id, BK_ID_LEN, body, blen, plain))) return rc;
        body = plain;
        blen -= BK_SEAL_OVERHEAD;
    }
    if (flags & BK_REC_ZSTD) {
        size_t got = dz ? ZSTD_decompressDCtx(dz, out, raw, body, blen)
                        : ZSTD_decompress(out, raw, body, blen);
        if (ZSTD_isError(got) || got != raw)
            return om_errf(OM_E_RepositoryCorrupt, "the block does not decompress (%s)",
                           ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong length");
    } else if (blen != raw)
        return om_errf(OM_E_RepositoryCorrupt, "stored length %zu for a block of %u", blen, raw);
    else
        memcpy(out, body, raw);
    return check == BK_ID_CHECK ? id_check(r, out, raw, id) : 0;
}

int bk_block_read(const bk_repo *r, const char *pack, uint64_t off, const uint8_t id[BK_ID_LEN],
                  uint32_t stored, uint32_t raw, uint8_t **data)
{
    uint8_t *rec = NULL, *plain = NULL, *out = NULL;
    *data = NULL;
    int rc = bk_record_read(r, pack, off, id, stored, raw, &rec);
    if (rc) return rc;
    if (!(plain = malloc((size_t)stored + 1)) || !(out = malloc((size_t)raw + 1)))
        rc = om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc) rc = record_decode(r, NULL, rec, id, stored, raw, plain, out, BK_ID_CHECK);
    if (!rc) {
        *data = out;
        out = NULL;
    }
    free(out);
    if (plain) OPENSSL_cleanse(plain, stored);
    free(plain);
    free(rec);
    return rc;
}

/* ---- a reader of many blocks ---- */

struct bk_reader {
    bk_repo *r;
    char pack[33]; /* the pack f is open on */
    om_file *f;
    uint8_t *rec, *plain;
    size_t cap; /* of rec and plain */
    ZSTD_DCtx *dz;
};

int bk_reader_new(bk_repo *r, bk_reader **out)
{
    bk_reader *rd = calloc(1, sizeof *rd);
    if (rd) rd->dz = ZSTD_createDCtx();
    if (!rd || !rd->dz) {
        free(rd);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    rd->r = r;
    /* The copies known damaged, so a read goes to a good copy where there is one. */
    int rc = bk_damaged_load(r, 0);
    if (rc) {
        bk_reader_free(rd);
        return rc;
    }
    *out = rd;
    return 0;
}

void bk_reader_free(bk_reader *rd)
{
    if (!rd) return;
    om_close(rd->f);
    if (rd->plain) OPENSSL_cleanse(rd->plain, rd->cap);
    free(rd->plain);
    free(rd->rec);
    ZSTD_freeDCtx(rd->dz);
    free(rd);
}

/* A record stored as it is (not compressed, not encrypted: stored == raw in a plain
 * repository) read with its payload straight into buf, no copy; its header into rd->rec. A
 * header that says otherwise (no writer makes one) gets its payload copied back behind it
 * (*direct 0) for record_decode. */
static int record_pread_direct(bk_reader *rd, const uint8_t id[BK_ID_LEN], const bk_ent *e,
                               uint8_t *buf, int *direct)
{
    int rc = om_pread_full(rd->f, rd->rec, BK_REC_HDR, e->off);
    if (!rc) rc = om_pread_full(rd->f, buf, e->stored, e->off + BK_REC_HDR);
    if (rc == OM_E_FileIOBeyondEOF) rc = om_errf(OM_E_RepositoryCorrupt, "the pack ends first");
    if (!rc) rc = record_check(rd->r, rd->rec, e->off, id, e->stored, e->raw);
    *direct = !rc && om_get32(rd->rec + 4) == 0;
    if (!rc && !*direct) memcpy(rd->rec + BK_REC_HDR, buf, e->stored);
    return rc;
}

static int reader_read(bk_reader *rd, const uint8_t id[BK_ID_LEN], const bk_ent *e,
                       const char *pack, uint8_t *buf, int check)
{
    size_t need = BK_REC_HDR + (size_t)e->stored;
    if (need > rd->cap) {
        uint8_t *a = realloc(rd->rec, need), *b = a ? realloc(rd->plain, need) : NULL;
        if (a) rd->rec = a;
        if (b) rd->plain = b;
        if (!a || !b) return om_errf(OM_E_OutOfMemory, "out of memory");
        rd->cap = need;
    }
    int rc = 0;
    if (!rd->f || strcmp(rd->pack, pack)) {
        om_close(rd->f);
        rd->f = NULL;
        if ((rc = open_pack(rd->r, pack, &rd->f))) return rc;
        snprintf(rd->pack, sizeof rd->pack, "%s", pack);
    }
    if (!rd->r->encrypted && e->stored == e->raw) {
        int direct = 0;
        rc = record_pread_direct(rd, id, e, buf, &direct);
        if (!rc && direct) return check == BK_ID_CHECK ? id_check(rd->r, buf, e->raw, id) : 0;
    } else
        rc = record_pread(rd->r, rd->f, e->off, id, e->stored, e->raw, rd->rec);
    if (!rc)
        rc = record_decode(rd->r, rd->dz, rd->rec, id, e->stored, e->raw, rd->plain, buf, check);
    return rc;
}

/* A copy that fails its checks (RepositoryCorrupt: the pack, the record, the authentication,
 * the decompression, the id; not an I/O error, which may pass) is listed as damaged. 1 when the
 * index then points at another copy, not known damaged. */
static int note_damage(bk_reader *rd, int rc, const uint8_t id[BK_ID_LEN], const bk_ent *e,
                       const char *pack)
{
    if (rc != OM_E_RepositoryCorrupt) return 0;
    return bk_damaged_note(rd->r, id, pack, e->off, rd->r->finder ? rd->r->finder : "restore",
                           om_err_detail());
}

int bk_reader_read(bk_reader *rd, const uint8_t id[BK_ID_LEN], const bk_ent *e, const char *pack,
                   uint8_t *buf)
{
    int rc = reader_read(rd, id, e, pack, buf, BK_ID_CHECK);
    if (rc) note_damage(rd, rc, id, e, pack);
    return rc;
}

/* Every copy the index knows is listed damaged and the one it points at failed (rc): the
 * others are tried, since a copy may be listed by a fault that passed (a pack read while it
 * was being copied back) and every read is checked against the id. 0 with *e and pack the copy
 * read, else rc with its detail. */
static int read_listed_copy(bk_reader *rd, const uint8_t id[BK_ID_LEN], uint8_t *buf, size_t cap,
                            int check, int rc, bk_ent *e, char pack[33])
{
    bk_ent c[8];
    char cp[8][33];
    size_t n = bk_index_copies(rd->r, id, c, cp, 8);
    om_err_saved first;
    om_err_save(&first, rc);
    for (size_t i = 0; i < n && i < 8; i++) {
        if ((c[i].off == e->off && !strcmp(cp[i], pack)) || c[i].raw > cap) continue;
        int got = reader_read(rd, id, &c[i], cp[i], buf, check);
        if (!got) {
            om_err_clear();
            *e = c[i];
            memcpy(pack, cp[i], 33);
            return 0;
        }
        note_damage(rd, got, id, &c[i], cp[i]);
    }
    return om_err_restore(&first);
}

int bk_reader_read_any(bk_reader *rd, const uint8_t id[BK_ID_LEN], bk_ent *e, char pack[33],
                       uint8_t *buf)
{
    int rc = bk_reader_read(rd, id, e, pack, buf);
    if (rc == OM_E_RepositoryCorrupt)
        rc = read_listed_copy(rd, id, buf, bk_repo_block_size(rd->r), BK_ID_CHECK, rc, e, pack);
    return rc;
}

static int reader_get(bk_reader *rd, const uint8_t id[BK_ID_LEN], uint8_t *buf, size_t cap,
                      size_t *len, int check)
{
    bk_ent e = {0};
    char pack[33] = "";
    *len = 0;
    int rc = 0;
    /* A copy that fails is listed as damaged; when the index then knows another copy (a fresh
     * one a backup stored), that one is read, once. */
    for (int again = 0; again < 2; again++) {
        if (again) om_err_clear();
        rc = bk_index_find(rd->r, id, &e, pack);
        if (!rc && e.raw > cap)
            rc = om_errf(OM_E_RepositoryCorrupt,
                         "the index says the block holds %u bytes, more "
                         "than the block size %zu",
                         e.raw, cap);
        if (!rc) rc = reader_read(rd, id, &e, pack, buf, check);
        if (!rc || rc == OM_E_ObjectNotFound || !note_damage(rd, rc, id, &e, pack)) break;
    }
    if (rc && rc != OM_E_ObjectNotFound)
        rc = read_listed_copy(rd, id, buf, cap, check, rc, &e, pack);
    if (rc) {
        char hex[65];
        bk_hex(id, BK_ID_LEN, hex);
        if (rc != OM_E_ObjectNotFound)
            om_err_ctx(rc, "block %s in pack %s at offset %llu", hex, pack,
                       (unsigned long long)e.off);
        return rc;
    }
    *len = e.raw;
    return 0;
}

int bk_reader_get(bk_reader *rd, const uint8_t id[BK_ID_LEN], uint8_t *buf, size_t cap, size_t *len)
{
    return reader_get(rd, id, buf, cap, len, BK_ID_CHECK);
}

int bk_reader_get_covered(bk_reader *rd, const uint8_t id[BK_ID_LEN], uint8_t *buf, size_t cap,
                          size_t *len)
{
    return reader_get(rd, id, buf, cap, len, BK_ID_COVERED);
}

/* ---- regions made of slices of blocks (repo.h: "pieces") ---- */

int bk_pieces_parse(const char *s, uint32_t region_len, bk_piece **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    bk_piece *v = calloc(cap, sizeof *v);
    uint64_t sum = 0;
    *out = NULL;
    *n = 0;
    if (!v) return om_errf(OM_E_OutOfMemory, "out of memory");
    const char *p = s;
    size_t k = 0;
    for (; k < cap; k++) {
        char hex[65];
        unsigned long off, len;
        int used = 0;
        if (strlen(p) < 64 + 4 || p[64] != ':') break;
        memcpy(hex, p, 64);
        hex[64] = 0;
        if (bk_unhex(hex, v[k].id, BK_ID_LEN) ||
            sscanf(p + 65, "%lu:%lu%n", &off, &len, &used) != 2 || !len || off > UINT32_MAX ||
            len > UINT32_MAX || (p[65 + used] && p[65 + used] != ','))
            break;
        v[k].off = (uint32_t)off;
        v[k].len = (uint32_t)len;
        sum += len;
        p += 65 + used;
        if (*p == ',') p++;
    }
    if (k != cap || *p || sum != region_len) {
        free(v);
        return om_errf(OM_E_RepositoryCorrupt,
                       "a region's pieces are malformed or do not add up to its %u bytes",
                       region_len);
    }
    *out = v;
    *n = k;
    return 0;
}

int bk_pieces_id(const bk_repo *r, const char *s, uint8_t id[BK_ID_LEN])
{
    size_t n = strlen(s);
    char *b = malloc(n + 16);
    if (!b) return om_errf(OM_E_OutOfMemory, "out of memory");
    memcpy(b, "ombra-pieces:", 13);
    memcpy(b + 13, s, n);
    int rc = bk_id_of(r, b, n + 13, id);
    free(b);
    return rc;
}

int bk_reader_get_ref(bk_reader *rd, const uint8_t id[BK_ID_LEN], const char *pieces,
                      uint32_t region_len, uint8_t *buf, size_t cap, size_t *len)
{
    if (!pieces) return bk_reader_get(rd, id, buf, cap, len);
    uint8_t want[BK_ID_LEN], *blk = NULL, last[BK_ID_LEN];
    bk_piece *v = NULL;
    size_t n = 0, pos = 0, bl = 0;
    *len = 0;
    int rc = region_len > cap
                 ? om_errf(OM_E_RepositoryCorrupt, "a region larger than the block size")
                 : bk_pieces_id(rd->r, pieces, want);
    if (!rc && memcmp(want, id, BK_ID_LEN))
        rc = om_errf(OM_E_RepositoryCorrupt, "a region's pieces do not match its id");
    if (!rc) rc = bk_pieces_parse(pieces, region_len, &v, &n);
    if (!rc && !(blk = malloc(rd->r->block_size))) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        if (!i || memcmp(last, v[i].id, BK_ID_LEN)) {
            rc = bk_reader_get(rd, v[i].id, blk, rd->r->block_size, &bl);
            memcpy(last, v[i].id, BK_ID_LEN);
        }
        if (!rc && (uint64_t)v[i].off + v[i].len > bl)
            rc = om_errf(OM_E_RepositoryCorrupt,
                         "a region's piece %zu (bytes %u-%u) lies outside its block of %zu bytes",
                         i, v[i].off, v[i].off + v[i].len, bl);
        if (!rc) memcpy(buf + pos, blk + v[i].off, v[i].len);
        pos += v[i].len;
    }
    free(blk);
    free(v);
    if (!rc) *len = pos;
    return rc;
}

/* ---- writing a pack ---- */

int bk_packw_create(bk_repo *r, bk_packw **out)
{
    char sub[16];
    uint8_t rnd[16], hdr[BK_PACK_HDR];
    bk_packw *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p) return om_errf(OM_E_OutOfMemory, "out of memory");
    om_random(rnd, sizeof rnd);
    bk_hex(rnd, sizeof rnd, p->name);
    pack_header(r, hdr);
    snprintf(sub, sizeof sub, "packs/%.2s", p->name);
    int rc = bk_dir_open(r, sub, &p->dir);
    if (!rc) rc = om_durable_begin(p->dir, p->name, &p->file);
    if (!rc) rc = om_pwrite(p->file.f, hdr, sizeof hdr, 0);
    if (rc) {
        bk_packw_discard(r, p);
        return rc;
    }
    p->off = BK_PACK_HDR;
    *out = p;
    return 0;
}

int bk_packw_append(bk_packw *p, const bk_rec *h, const uint8_t *payload)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        bk_ent *e = realloc(p->ents, cap * sizeof *e);
        if (!e) return om_errf(OM_E_OutOfMemory, "out of memory");
        p->ents = e;
        p->cap = cap;
    }
    uint8_t hdr[BK_REC_HDR];
    bk_rec_encode(h, p->off, hdr);
    int rc = om_pwrite(p->file.f, hdr, sizeof hdr, p->off);
    if (!rc) rc = om_pwrite(p->file.f, payload, h->stored, p->off + BK_REC_HDR);
    if (rc) return rc;
    bk_ent *e = &p->ents[p->n++];
    memset(e, 0, sizeof *e);
    memcpy(e->id, h->id, BK_ID_LEN);
    e->off = p->off;
    e->stored = h->stored;
    e->raw = h->raw;
    p->off += BK_REC_HDR + h->stored;
    return 0;
}

/* Removes the temporary file when the pack was not put in place. */
static void packw_free(bk_packw *p)
{
    if (p->dir) om_durable_abort(&p->file);
    om_dir_close(p->dir);
    free(p->ents);
    free(p);
}

void bk_packw_discard(bk_repo *r, bk_packw *p)
{
    (void)r;
    if (p) packw_free(p);
}

/* The index file of a finished pack, written durably; its name into name. */
static int write_index(bk_repo *r, const bk_packw *p, char name[65])
{
    json_t *blocks = json_array();
    for (size_t i = 0; i < p->n && blocks; i++) {
        char hex[65];
        bk_hex(p->ents[i].id, BK_ID_LEN, hex);
        json_array_append_new(blocks, json_pack("[s, I, i, i]", hex, (json_int_t)p->ents[i].off,
                                                (int)p->ents[i].stored, (int)p->ents[i].raw));
    }
    json_t *j = json_pack("{s:i, s:s, s:s?, s:s, s:o}", "version", BK_FORMAT_VERSION, "repository",
                          r->uuid_str, "encryption", r->encrypted ? "aes-256-gcm" : NULL, "pack",
                          p->name, "blocks", blocks);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) return om_errf(OM_E_OutOfMemory, "out of memory");
    uint8_t id[BK_ID_LEN];
    char file[80];
    om_dir *d = NULL;
    int rc = bk_id_of(r, text, strlen(text), id);
    if (!rc) {
        bk_hex(id, BK_ID_LEN, name);
        snprintf(file, sizeof file, "%s.json", name);
        rc = bk_dir_open(r, "index", &d);
    }
    /* Named by its content: a file already there holds the same bytes. */
    if (!rc) rc = om_durable_write_at(d, file, text, strlen(text), OM_RENAME_REPLACE);
    om_dir_close(d);
    free(text);
    return rc;
}

int bk_packw_finish(bk_repo *r, bk_packw *p)
{
    char idx[65];
    if (!p->n) {
        bk_packw_discard(r, p);
        return 0;
    }
    /* The blocks exist (content, then name, durable), then they can be found (the index). A
     * random name is never anyone else's: nothing is replaced. */
    int rc = om_durable_commit(&p->file, 0);
    if (!rc) rc = write_index(r, p, idx);
    if (!rc) rc = bk_index_add(r, p->name, idx, p->ents, p->n);
    if (rc) om_err_ctx(rc, "finishing pack %s", p->name);
    packw_free(p);
    return rc;
}

/* One block through a reader of its own (repo.h). */
int bk_get_block(bk_repo *r, const uint8_t id[BK_ID_LEN], uint8_t **data, size_t *len)
{
    bk_reader *rd = NULL;
    uint8_t *buf = malloc(r->block_size);
    *data = NULL;
    int rc = buf ? bk_reader_new(r, &rd) : om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc) rc = bk_reader_get(rd, id, buf, r->block_size, len);
    bk_reader_free(rd);
    if (rc) {
        free(buf);
        return rc;
    }
    *data = buf;
    return 0;
}
