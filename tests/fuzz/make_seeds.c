/* Writes the seed corpus of fuzz_formats.c into a folder: one small valid input per parser,
 * built with format.c's own encoders, in the input layout described at the top of
 * fuzz_formats.c. Run by `tests/fuzz/run.sh seeds`; the output is committed in
 * tests/fuzz/seeds/. Trailing zero bytes are trimmed where the target pads them back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "engine/format.h"

enum { SEL_DBHDR, SEL_CHK, SEL_LOGHDR, SEL_SEG, SEL_REC, SEL_GEN };
enum { FIX_ALL = 7 };
#define FUZZ_HDR 10u
#define SEED_MAX (ENG_PAGE_SIZE + FUZZ_HDR)

static const char *outdir;
static uint8_t seed[SEED_MAX];

static void put_hdr(unsigned sel, unsigned mode, uint32_t gen, uint16_t arg, unsigned copy,
                    unsigned keep)
{
    memset(seed, 0, sizeof seed);
    seed[0] = (uint8_t)sel;
    seed[1] = (uint8_t)mode;
    om_put32(seed + 2, gen);
    om_put16(seed + 6, arg);
    seed[8] = (uint8_t)copy;
    seed[9] = (uint8_t)keep;
}

/* trim: drop the trailing zeros (not for a record stream, whose length is the input's). */
static void save(const char *name, size_t n, int trim)
{
    char path[4096];
    while (trim && n > FUZZ_HDR && seed[n - 1] == 0)
        n--;
    snprintf(path, sizeof path, "%s/%s", outdir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(seed, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
}

/* One record of every type; returns the stream length. */
static uint32_t records(uint8_t *buf, uint64_t txn)
{
    static const uint8_t a[8] = "abcdefgh", b[3] = "xyz";
    eng_range rg[2] = {{.off = 0, .len = sizeof a, .data = a}, {.off = 100, .len = 3, .data = b}};
    eng_bkslot slot = {.first_gen = 1, .last_gen = 2, .mark = {2, 64}, .mark_time = 9, .kind = 1};
    eng_sig sig = {42, 43};
    uint32_t n = 0;
    n += eng_rec_encode_attach(buf + n, 0, ENG_REC_ATTACH, 1000, &sig);
    n += eng_rec_encode_page(buf + n, txn, ENG_RECF_NEW_PAGE, 3, 7, 0, 1, 2, rg, 2);
    n += eng_rec_encode_commit(buf + n, txn, 1001, 2);
    n += eng_rec_encode_mark(buf + n, txn + 1, 1, 1002);
    n += eng_rec_encode_bkslot(buf + n, txn + 1, ENG_BK_CUR_FULL, 0, &slot);
    n += eng_rec_encode_commit(buf + n, txn + 1, 1003, 3);
    n += eng_rec_encode_attach(buf + n, 0, ENG_REC_TERM, 1004, &sig);
    return n;
}

static void dbhdr_seeds(void)
{
    eng_dbhdr h = {.version = ENG_FORMAT_VERSION,
                   .page_size = ENG_PAGE_SIZE,
                   .db_sig = {1, 2},
                   .log_sig = {3, 4},
                   .state = ENG_STATE_CLEAN,
                   .pages = 10,
                   .dbtime = 77,
                   .log_req_min = 1,
                   .log_req_max = 3,
                   .consistent = {3, 128},
                   .base = "E00",
                   .txn_last = 5};
    h.slots[ENG_BK_PREV_FULL] = (eng_bkslot){1, 2, {2, 64}, 9, ENG_BK_FULL};
    for (unsigned copy = 0; copy < 2; copy++) {
        put_hdr(SEL_DBHDR, copy ? FIX_ALL : 0, 0, 0, copy, 0);
        eng_dbhdr_encode(&h, seed + FUZZ_HDR, (int)copy);
        save(copy ? "dbhdr-copy1-fix" : "dbhdr-copy0", FUZZ_HDR + ENG_PAGE_SIZE, 1);
    }
}

static void chk_seeds(void)
{
    eng_chkfile c = {.checkpoint = {4, 512},
                     .log_sig = {3, 4},
                     .db_sig = {1, 2},
                     .time = 99,
                     .last_full = {2, 64},
                     .base = "E00"};
    for (unsigned copy = 0; copy < 2; copy++) {
        put_hdr(SEL_CHK, copy ? FIX_ALL : 0, 0, 0, copy, 0);
        eng_chk_encode(&c, seed + FUZZ_HDR, (int)copy);
        save(copy ? "chk-copy1-fix" : "chk-copy0", FUZZ_HDR + ENG_CHK_COPY, 1);
    }
}

static eng_loghdr loghdr(uint32_t gen)
{
    eng_loghdr h = {.version = ENG_FORMAT_VERSION,
                    .gen = gen,
                    .log_sig = {3, 4},
                    .created = 1000,
                    .prev_created = 900,
                    .checkpoint = {gen - 1, 32},
                    .flags = ENG_DBF_CIRCULAR,
                    .base = "E00",
                    .page_size = ENG_PAGE_SIZE,
                    .db_sig = {1, 2},
                    .prev_end = 4000};
    return h;
}

static void loghdr_seed(void)
{
    eng_loghdr h = loghdr(5);
    put_hdr(SEL_LOGHDR, 0, 0, 0, 0, 0);
    eng_loghdr_encode(&h, seed + FUZZ_HDR);
    save("loghdr", FUZZ_HDR + ENG_SLOT_SIZE, 1);
}

static void seg_rec_seeds(void)
{
    uint8_t stream[1024];
    uint32_t n = records(stream, 10);
    put_hdr(SEL_REC, 0, 0, 0, 0, 0);
    memcpy(seed + FUZZ_HDR, stream, n);
    save("records", FUZZ_HDR + n, 0);

    eng_seghdr h = {.gen = 5, .slot = 3, .data_len = (uint16_t)n, .flush_first = 2};
    put_hdr(SEL_SEG, 0, 5, 3, 0, 0);
    eng_seg_encode(&h, stream, seed + FUZZ_HDR);
    save("segment", FUZZ_HDR + ENG_SLOT_SIZE, 1);
}

/* A log file of generation 5 whose stream is cut into segments of at most `per` bytes, with
 * flush k starting at slot first[k]; every slot keeps only its first `stride` bytes. */
static void gen_seed(const char *name, unsigned mode, uint16_t stride, int tear_slot, int zero_slot)
{
    static const uint16_t first[] = {1, 2, 2, 4, 4, 4};
    uint8_t *file = calloc(1, ENG_LOG_SIZE);
    uint8_t stream[2048];
    if (!file) exit(1);
    uint32_t n = records(stream, 10);
    n += records(stream + n, 20);
    eng_loghdr lh = loghdr(5);
    eng_loghdr_encode(&lh, file);
    uint32_t per = stride - ENG_SEG_HDR, off = 0;
    for (uint16_t s = 1; off < n && s <= 6; s++) {
        uint32_t len = n - off < per ? n - off : per;
        eng_seghdr h = {.gen = 5,
                        .slot = s,
                        .data_len = (uint16_t)len,
                        .stream_off = off,
                        .flush_first = first[s - 1]};
        eng_seg_encode(&h, stream + off, file + (size_t)s * ENG_SLOT_SIZE);
        off += len;
    }
    if (tear_slot) file[(size_t)tear_slot * ENG_SLOT_SIZE + 40] ^= 0x55;
    if (zero_slot) memset(file + (size_t)zero_slot * ENG_SLOT_SIZE, 0, ENG_SLOT_SIZE);
    put_hdr(SEL_GEN, mode, 0, stride, 0, 0);
    size_t len = FUZZ_HDR;
    for (size_t s = 0; s < 8 && len + stride <= SEED_MAX; s++, len += stride)
        memcpy(seed + len, file + s * ENG_SLOT_SIZE, stride);
    save(name, len, 1);
    free(file);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    outdir = argv[1];
    dbhdr_seeds();
    chk_seeds();
    loghdr_seed();
    seg_rec_seeds();
    gen_seed("gen", 0, 256, 0, 0);
    gen_seed("gen-torn", 0, 256, 2, 0);
    gen_seed("gen-damaged", 0, 160, 0, 3);
    gen_seed("gen-fix", FIX_ALL, 128, 0, 0);
    return 0;
}
