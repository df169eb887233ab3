/* libFuzzer target for the on-disk format parsers (format.h, log.h): the database header, the
 * checkpoint copy, the log file header, a log segment, the record stream and a whole log
 * generation read through eng_gen_read(). Built and run by tests/fuzz/run.sh.
 *
 * Input layout (FUZZ_HDR bytes, zero-filled when the input is shorter, then the data):
 *   0 u8  selector   which parser (enum fz_sel, taken modulo FZ_NSEL)
 *   1 u8  mode       FZ_FIX | FZ_MAGIC | FZ_SANE, see below
 *   2 u32 gen        generation a segment is expected at (FZ_SEG)
 *   6 u16 arg        FZ_SEG: slot number; FZ_GEN: stride (bytes of input per 4 KiB slot)
 *   8 u8  copy       header / checkpoint copy (0 or 1)
 *   9 u8  keep       FZ_GEN: the one slot whose checksum is not fixed up (0 = none)
 * The data is padded with zeros (or truncated) to the size the parser reads.
 *
 * Checksums make almost every mutation fail at the first check, so the mode asks for the
 * damage to be made plausible before parsing: FZ_MAGIC writes the right magic, FZ_SANE the
 * right version, page size and state (segments: the expected generation and slot, a payload
 * length in range), and FZ_FIX recomputes the checksum the way format.c does. Mode 0 feeds
 * the bytes raw.
 *
 * Besides "no crash, no sanitizer report" the target checks that a header or checkpoint that
 * decodes re-encodes to something that decodes to the same values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "base/hash.h"
#include "crashvfs.h"
#include "engine/format.h"
#include "engine/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum fz_sel { FZ_DBHDR, FZ_CHK, FZ_LOGHDR, FZ_SEG, FZ_REC, FZ_GEN, FZ_NSEL };
enum { FZ_FIX = 1, FZ_MAGIC = 2, FZ_SANE = 4 };
#define FUZZ_HDR 10u

/* The checksum seeds are private to format.c; fz_selfcheck() fails loudly when they drift, so
 * the fix-up mode cannot silently stop reaching past the checksum. */
#define SEED_DBHDR  0x4f4d4244424844ull
#define SEED_CHK    0x4f4d43484b00ull
#define SEED_LOGHDR 0x4f4d4c4f4748ull

typedef struct fz_in {
    unsigned sel, mode, copy, keep;
    uint32_t gen;
    uint16_t arg;
    const uint8_t *data;
    size_t len;
} fz_in;

static void fz_fail(const char *what)
{
    fprintf(stderr, "fuzz_formats: %s\n", what);
    abort();
}

/* A zeroed heap buffer of n bytes holding the first n bytes of the data: heap, and exactly
 * n, so that ASan sees a read past what the parser was given. */
static uint8_t *fz_buf(const fz_in *in, size_t n)
{
    uint8_t *b = calloc(1, n);
    if (!b) fz_fail("out of memory");
    memcpy(b, in->data, in->len < n ? in->len : n);
    return b;
}

/* ---- fix-ups: the checksum computations of format.c ---- */

static void fix_dbhdr(uint8_t *page, int copy, unsigned mode)
{
    if (mode & FZ_MAGIC) memcpy(page + 8, "OMBRAEDB", 8);
    if (mode & FZ_SANE) {
        om_put32(page + 16, ENG_FORMAT_VERSION);
        om_put32(page + 20, ENG_PAGE_SIZE);
        om_put32(page + 72, ENG_STATE_JUST_CREATED + om_get32(page + 72) % 3);
    }
    if (mode & FZ_FIX) om_put64(page, om_xxh3(page + 8, ENG_PAGE_SIZE - 8, SEED_DBHDR + copy));
}

static void fix_chk(uint8_t *buf, int copy, unsigned mode)
{
    if (mode & FZ_MAGIC) memcpy(buf + 8, "OMBRACHK", 8);
    if (mode & FZ_SANE) om_put32(buf + 16, ENG_FORMAT_VERSION);
    if (mode & FZ_FIX) om_put64(buf, om_xxh3(buf + 8, ENG_CHK_COPY - 8, SEED_CHK + copy));
}

static void fix_loghdr(uint8_t *slot, unsigned mode)
{
    if (mode & FZ_MAGIC) memcpy(slot + 8, "OMBRALOG", 8);
    if (mode & FZ_SANE) om_put32(slot + 16, ENG_FORMAT_VERSION);
    if (mode & FZ_FIX)
        om_put64(slot, om_xxh3(slot + 8, ENG_SLOT_SIZE - 8, SEED_LOGHDR + om_get32(slot + 20)));
}

/* Re-seals a segment from its own header fields, through eng_seg_encode(). */
static void fix_seg(uint8_t *slot, uint32_t gen, uint16_t slotno, unsigned mode)
{
    if (mode & FZ_SANE) {
        uint16_t first = om_get16(slot + 20), dlen = om_get16(slot + 14);
        om_put32(slot + 8, gen);
        om_put16(slot + 12, slotno);
        if (dlen == 0 || dlen > ENG_SEG_PAYLOAD) om_put16(slot + 14, 1 + dlen % ENG_SEG_PAYLOAD);
        if (first == 0 || first > slotno) om_put16(slot + 20, slotno);
    }
    if (mode & FZ_FIX) {
        eng_seghdr h;
        (void)eng_seg_decode(slot, gen, slotno, &h);
        /* eng_seg_encode() trusts data_len (its callers produce it); the decoder must not. */
        if (h.data_len > ENG_SEG_PAYLOAD) h.data_len = ENG_SEG_PAYLOAD;
        eng_seg_encode(&h, slot + ENG_SEG_HDR, slot);
    }
}

/* Encodes known values with format.c and checks the fix-ups compute the same checksums. */
static void fz_selfcheck(void)
{
    static int done;
    if (done) return;
    done = 1;
    uint8_t *b = calloc(1, ENG_PAGE_SIZE);
    if (!b) fz_fail("out of memory");
    eng_dbhdr h = {.version = ENG_FORMAT_VERSION, .page_size = ENG_PAGE_SIZE, .state = 1};
    for (int copy = 0; copy < 2; copy++) {
        eng_dbhdr_encode(&h, b, copy);
        uint64_t want = om_get64(b);
        fix_dbhdr(b, copy, FZ_FIX);
        if (om_get64(b) != want) fz_fail("database header seed differs from format.c");
    }
    eng_chkfile c = {.time = 1};
    for (int copy = 0; copy < 2; copy++) {
        eng_chk_encode(&c, b, copy);
        uint64_t want = om_get64(b);
        fix_chk(b, copy, FZ_FIX);
        if (om_get64(b) != want) fz_fail("checkpoint seed differs from format.c");
    }
    eng_loghdr l = {.version = ENG_FORMAT_VERSION, .gen = 7};
    eng_loghdr_encode(&l, b);
    uint64_t want = om_get64(b);
    fix_loghdr(b, FZ_FIX);
    if (om_get64(b) != want) fz_fail("log header seed differs from format.c");
    free(b);
}

/* ---- one target per parser ---- */

static void fz_dbhdr(const fz_in *in)
{
    uint8_t *page = fz_buf(in, ENG_PAGE_SIZE);
    eng_dbhdr h, h2;
    int copy = (int)(in->copy & 1);
    fix_dbhdr(page, copy, in->mode);
    if (eng_dbhdr_decode(page, copy, &h) == 0) {
        eng_dbhdr_encode(&h, page, copy);
        if (eng_dbhdr_decode(page, copy, &h2) != 0 || memcmp(&h, &h2, sizeof h) != 0)
            fz_fail("database header does not survive decode, encode, decode");
    }
    free(page);
}

static void fz_chk(const fz_in *in)
{
    uint8_t *buf = fz_buf(in, ENG_CHK_COPY);
    eng_chkfile c, c2;
    int copy = (int)(in->copy & 1);
    fix_chk(buf, copy, in->mode);
    if (eng_chk_decode(buf, copy, &c) == 0) {
        eng_chk_encode(&c, buf, copy);
        if (eng_chk_decode(buf, copy, &c2) != 0 || memcmp(&c, &c2, sizeof c) != 0)
            fz_fail("checkpoint does not survive decode, encode, decode");
    }
    free(buf);
}

static void fz_loghdr(const fz_in *in)
{
    uint8_t *slot = fz_buf(in, ENG_SLOT_SIZE);
    eng_loghdr h, h2;
    fix_loghdr(slot, in->mode);
    if (eng_loghdr_decode(slot, &h) == 0) {
        eng_loghdr_encode(&h, slot);
        if (eng_loghdr_decode(slot, &h2) != 0 || memcmp(&h, &h2, sizeof h) != 0)
            fz_fail("log header does not survive decode, encode, decode");
    }
    free(slot);
}

static void fz_seg(const fz_in *in)
{
    uint8_t *slot = fz_buf(in, ENG_SLOT_SIZE);
    eng_seghdr h;
    fix_seg(slot, in->gen, in->arg, in->mode);
    enum eng_seg_status st = eng_seg_decode(slot, in->gen, in->arg, &h);
    if (st == ENG_SEG_OK && (h.data_len == 0 || h.data_len > ENG_SEG_PAYLOAD))
        fz_fail("segment decoded OK with an impossible payload length");
    free(slot);
}

/* Decodes records until the end or an error, from an exactly sized heap copy. */
static void fz_records(const uint8_t *s, uint32_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    eng_rec *r = malloc(sizeof *r);
    if (!copy || !r) fz_fail("out of memory");
    if (len) memcpy(copy, s, len);
    uint32_t off = 0, prev = 0;
    while (eng_rec_decode(copy, len, &off, r) > 0) {
        if (off <= prev || off > len) fz_fail("record decoder did not advance within the stream");
        prev = off;
    }
    free(r);
    free(copy);
}

static void fz_rec(const fz_in *in)
{
    uint32_t len = in->len > ENG_GEN_CAPACITY ? ENG_GEN_CAPACITY : (uint32_t)in->len;
    fz_records(in->data, len);
}

/* Spreads the data over the slots of a log file, `stride` bytes of it per slot, so that a
 * small input can fill many slots; stride 4096 is the file as it is. */
static void fz_logfile(const fz_in *in, uint8_t *file)
{
    size_t stride = in->arg < ENG_SEG_HDR || in->arg > ENG_SLOT_SIZE ? ENG_SLOT_SIZE : in->arg;
    memset(file, 0, ENG_LOG_SIZE);
    for (size_t s = 0; s < ENG_LOG_SLOTS && s * stride < in->len; s++) {
        size_t n = in->len - s * stride < stride ? in->len - s * stride : stride;
        memcpy(file + s * ENG_SLOT_SIZE, in->data + s * stride, n);
    }
    fix_loghdr(file, in->mode);
    uint32_t gen = om_get32(file + 20);
    static const uint8_t zero[ENG_SEG_HDR];
    for (uint16_t s = 1; s < ENG_LOG_SLOTS; s++) {
        uint8_t *slot = file + (size_t)s * ENG_SLOT_SIZE;
        /* Leave empty slots empty (the end of the stream) and one slot as the input has it. */
        if (s == in->keep || memcmp(slot, zero, sizeof zero) == 0) continue;
        fix_seg(slot, gen, s, in->mode);
    }
}

/* The log file lives in one crash VFS for the whole run and is overwritten in place: a fresh
 * VFS and buffer per input spent most of the time faulting in new megabytes. */
static om_vfs *fz_logvfs(void)
{
    static crashvfs *c;
    if (!c) {
        c = crashvfs_new(1);
        if (!c || om_create_zeroed(crashvfs_vfs(c), "/E00.log", ENG_LOG_SIZE) != 0)
            fz_fail("cannot create the log file in the crash VFS");
    }
    return crashvfs_vfs(c);
}

static void fz_gen(const fz_in *in)
{
    static uint8_t *file;
    if (!file && !(file = malloc(ENG_LOG_SIZE))) fz_fail("out of memory");
    fz_logfile(in, file);
    om_vfs *v = fz_logvfs();
    om_file *f = NULL;
    if (om_open(v, "/E00.log", 0, &f) != 0 || om_pwrite(f, file, ENG_LOG_SIZE, 0) != 0 ||
        om_sync(f) != 0)
        fz_fail("cannot write the log file into the crash VFS");
    om_close(f);
    eng_genread g;
    int rc = eng_gen_read(v, "/E00.log", &g);
    if (rc == 0 || g.stream) {
        if (g.len > ENG_GEN_CAPACITY || g.end_slot > ENG_LOG_SLOTS)
            fz_fail("generation reader reports data past the file");
        fz_records(g.stream, g.len);
    }
    eng_gen_free(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t hdr[FUZZ_HDR] = {0};
    memcpy(hdr, data, size < FUZZ_HDR ? size : FUZZ_HDR);
    fz_in in = {
        .sel = hdr[0] % FZ_NSEL,
        .mode = hdr[1],
        .gen = om_get32(hdr + 2),
        .arg = om_get16(hdr + 6),
        .copy = hdr[8],
        .keep = hdr[9],
        .data = size > FUZZ_HDR ? data + FUZZ_HDR : data,
        .len = size > FUZZ_HDR ? size - FUZZ_HDR : 0,
    };
    fz_selfcheck();
    switch (in.sel) {
    case FZ_DBHDR:
        fz_dbhdr(&in);
        break;
    case FZ_CHK:
        fz_chk(&in);
        break;
    case FZ_LOGHDR:
        fz_loghdr(&in);
        break;
    case FZ_SEG:
        fz_seg(&in);
        break;
    case FZ_REC:
        fz_rec(&in);
        break;
    case FZ_GEN:
        fz_gen(&in);
        break;
    }
    return 0;
}
