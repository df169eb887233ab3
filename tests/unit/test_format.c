/* The engine's on-disk formats, as a reader meets them: database header and data pages,
 * checkpoint file, log segments, whole log generations, log records, and the generation chain
 * recovery walks. Each test names the behaviour it proves and asserts the exact error number
 * (ESE's), since operators and tools act on that number. Files go to a fresh directory under
 * /tmp per test, on the real filesystem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/vfs.h"
#include "engine/engine.h"
#include "engine/format.h"
#include "engine/log.h"

#define PATH_LEN 512

/* ---- fixture: a scratch directory per test ---- */

typedef struct fx {
    char dir[64];
} fx;

static int fx_setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/ombra-format-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    return remove(path);
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    int rc = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

static const char *in_dir(const char *dir, const char *name, char *out)
{
    assert_int_equal(om_path_join(out, PATH_LEN, dir, name), 0);
    return out;
}

/* ---- assertions on error codes ---- */

static void check_err(int got, int want, const char *what, const char *file, int line)
{
    if (got == want) return;
    char buf[1024];
    if (got)
        om_err_format(got, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "0 (success)");
    fail_msg("%s:%d: %s returned %s; expected %d %s", file, line, what, buf, want,
             om_err_name(want));
}

static void check_detail(const char *want, const char *file, int line)
{
    const char *d = om_err_detail();
    if (!strstr(d, want))
        fail_msg("%s:%d: detail \"%s\" does not mention \"%s\"", file, line, d, want);
}

#define assert_err(expr, want) check_err((expr), (want), #expr, __FILE__, __LINE__)
#define assert_ok(expr)        check_err((expr), 0, #expr, __FILE__, __LINE__)
#define assert_detail_has(s)   check_detail((s), __FILE__, __LINE__)

/* ---- file helpers ---- */

static void put_file(const char *path, const void *data, size_t n)
{
    assert_ok(om_write_file_durable(om_vfs_posix(), path, data, n));
}

static void patch_file(const char *path, uint64_t off, const void *data, size_t n)
{
    om_file *f = NULL;
    assert_ok(om_open(om_vfs_posix(), path, 0, &f));
    assert_ok(om_pwrite(f, data, n, off));
    assert_ok(om_sync(f));
    assert_ok(om_close(f));
}

static void read_at(const char *path, uint64_t off, void *buf, size_t n)
{
    om_file *f = NULL;
    assert_ok(om_open(om_vfs_posix(), path, OM_O_RDONLY, &f));
    assert_ok(om_pread_full(f, buf, n, off));
    assert_ok(om_close(f));
}

/* XORs n bytes at off with a pattern, the way a torn or rotted sector reads back. */
static void garble_file(const char *path, uint64_t off, size_t n)
{
    uint8_t buf[256];
    assert_true(n <= sizeof buf);
    read_at(path, off, buf, n);
    for (size_t i = 0; i < n; i++)
        buf[i] ^= (uint8_t)(0x5A + i);
    patch_file(path, off, buf, n);
}

static void zero_file_range(const char *path, uint64_t off, size_t n)
{
    uint8_t *z = calloc(1, n);
    assert_non_null(z);
    patch_file(path, off, z, n);
    free(z);
}

static void copy_file(const char *from, const char *to)
{
    uint8_t *data = NULL;
    size_t n = 0;
    assert_ok(om_read_file(om_vfs_posix(), from, &data, &n));
    put_file(to, data, n);
    free(data);
}

static void fill(uint8_t *b, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        b[i] = (uint8_t)(seed >> 56);
    }
}

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return *s >> 33;
}

/* ---- database header ---- */

/* A header with every field set, and distinct values so a swapped field shows. */
static void sample_header(eng_dbhdr *h, uint32_t salt)
{
    memset(h, 0, sizeof *h);
    h->version = ENG_FORMAT_VERSION;
    h->page_size = ENG_PAGE_SIZE;
    for (int i = 0; i < 16; i++)
        h->db_id.b[i] = (uint8_t)(0xA0 + i + salt);
    h->db_sig = (eng_sig){0x1111222233334444ull + salt, 0x5555666677778888ull};
    h->log_sig = (eng_sig){0x9999aaaabbbbccccull, 0xddddeeeeffff0000ull + salt};
    h->state = ENG_STATE_DIRTY;
    h->pages = 123456 + salt;
    h->dbtime = 0x0102030405060708ull;
    h->log_req_min = 17;
    h->log_req_max = 42;
    h->log_committed = 41;
    h->flags = ENG_DBF_CIRCULAR;
    h->consistent = (eng_lgpos){40, 4064 * 3 + 7};
    h->consistent_time = 1700000000000000001ull;
    h->attach = (eng_lgpos){17, 56};
    h->attach_time = 1700000000000000002ull;
    h->detach = (eng_lgpos){16, 999};
    h->detach_time = 1700000000000000003ull;
    memcpy(h->base, "E0A", 4);
    h->objid_last = 77;
    h->txn_last = 0xfedcba9876543210ull;
    h->create_time = 1600000000000000000ull;
    h->repaired = 3;
    for (uint32_t i = 0; i < ENG_BK_NSLOTS; i++)
        h->slots[i] = (eng_bkslot){.first_gen = 100 * i + 1,
                                   .last_gen = 100 * i + 9,
                                   .mark = {100 * i + 9, 1000 + i},
                                   .mark_time = 1650000000000000000ull + i,
                                   .kind = ENG_BK_FULL + i % 4};
}

static void assert_sig_equal(const eng_sig *a, const eng_sig *b)
{
    assert_int_equal(a->random, b->random);
    assert_int_equal(a->time, b->time);
}

static void assert_pos_equal(eng_lgpos a, eng_lgpos b)
{
    assert_int_equal(a.gen, b.gen);
    assert_int_equal(a.off, b.off);
}

static void assert_header_equal(const eng_dbhdr *a, const eng_dbhdr *b)
{
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->page_size, b->page_size);
    assert_memory_equal(a->db_id.b, b->db_id.b, 16);
    assert_sig_equal(&a->db_sig, &b->db_sig);
    assert_sig_equal(&a->log_sig, &b->log_sig);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->pages, b->pages);
    assert_int_equal(a->dbtime, b->dbtime);
    assert_int_equal(a->log_req_min, b->log_req_min);
    assert_int_equal(a->log_req_max, b->log_req_max);
    assert_int_equal(a->log_committed, b->log_committed);
    assert_int_equal(a->flags, b->flags);
    assert_pos_equal(a->consistent, b->consistent);
    assert_pos_equal(a->attach, b->attach);
    assert_pos_equal(a->detach, b->detach);
    assert_int_equal(a->consistent_time, b->consistent_time);
    assert_int_equal(a->attach_time, b->attach_time);
    assert_int_equal(a->detach_time, b->detach_time);
    assert_string_equal(a->base, b->base);
    assert_int_equal(a->objid_last, b->objid_last);
    assert_int_equal(a->txn_last, b->txn_last);
    assert_int_equal(a->create_time, b->create_time);
    assert_int_equal(a->repaired, b->repaired);
    for (int i = 0; i < ENG_BK_NSLOTS; i++) {
        assert_int_equal(a->slots[i].first_gen, b->slots[i].first_gen);
        assert_int_equal(a->slots[i].last_gen, b->slots[i].last_gen);
        assert_pos_equal(a->slots[i].mark, b->slots[i].mark);
        assert_int_equal(a->slots[i].mark_time, b->slots[i].mark_time);
        assert_int_equal(a->slots[i].kind, b->slots[i].kind);
    }
}

static void test_header_round_trips_every_field_in_both_copies(void **state)
{
    uint8_t *page = malloc(ENG_PAGE_SIZE);
    assert_non_null(page);
    eng_dbhdr h, got;
    sample_header(&h, 0);
    for (int copy = 0; copy < 2; copy++) {
        eng_dbhdr_encode(&h, page, copy);
        assert_ok(eng_dbhdr_decode(page, copy, &got));
        assert_header_equal(&h, &got);
        /* Each copy is sealed for its own place: one read at the other's place fails. */
        assert_err(eng_dbhdr_decode(page, !copy, &got), OM_E_ReadVerifyFailure);
    }
    free(page);
}

static void test_header_of_another_version_or_page_size_is_refused(void **state)
{
    uint8_t *page = malloc(ENG_PAGE_SIZE);
    assert_non_null(page);
    eng_dbhdr h, got;
    sample_header(&h, 0);
    h.version = ENG_FORMAT_VERSION + 1;
    eng_dbhdr_encode(&h, page, 0);
    assert_err(eng_dbhdr_decode(page, 0, &got), OM_E_InvalidDatabase);
    assert_detail_has("version");
    sample_header(&h, 0);
    h.page_size = 8192;
    eng_dbhdr_encode(&h, page, 0);
    assert_err(eng_dbhdr_decode(page, 0, &got), OM_E_PageSizeMismatch);
    free(page);
}

static void write_header_file(const char *path, const eng_dbhdr *h0, const eng_dbhdr *h1)
{
    uint8_t *pages = calloc(2, ENG_PAGE_SIZE);
    assert_non_null(pages);
    eng_dbhdr_encode(h0, pages, 0);
    eng_dbhdr_encode(h1, pages + ENG_PAGE_SIZE, 1);
    put_file(path, pages, 2 * ENG_PAGE_SIZE);
    free(pages);
}

/* Decodes copy `copy` straight from the file. */
static int decode_copy(const char *path, int copy, eng_dbhdr *h)
{
    uint8_t *page = malloc(ENG_PAGE_SIZE);
    assert_non_null(page);
    read_at(path, (uint64_t)copy * ENG_PAGE_SIZE, page, ENG_PAGE_SIZE);
    int rc = eng_dbhdr_decode(page, copy, h);
    free(page);
    return rc;
}

enum damage { DMG_BODY, DMG_MAGIC, DMG_TORN_TAIL, DMG_ZEROED, DMG_COUNT };

static void damage_copy(const char *path, int copy, enum damage d)
{
    uint64_t at = (uint64_t)copy * ENG_PAGE_SIZE;
    switch (d) {
    case DMG_BODY: /* a few rotten bytes among the fields */
        garble_file(path, at + 100, 16);
        break;
    case DMG_MAGIC: /* the magic itself */
        garble_file(path, at + 8, 8);
        break;
    case DMG_TORN_TAIL: /* a write torn at a sector: the second half never landed */
        zero_file_range(path, at + ENG_PAGE_SIZE / 2, ENG_PAGE_SIZE / 2);
        garble_file(path, at + 300, 1);
        break;
    default: /* the copy was never written */
        zero_file_range(path, at, ENG_PAGE_SIZE);
        break;
    }
}

static void test_torn_header_copy_is_repaired_from_the_other(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "mail.edb", path);
    eng_dbhdr h, got;
    sample_header(&h, 0);
    for (int copy = 0; copy < 2; copy++) {
        for (int d = 0; d < DMG_COUNT; d++) {
            write_header_file(path, &h, &h);
            damage_copy(path, copy, (enum damage)d);
            assert_true(decode_copy(path, copy, &got) != 0);

            /* Read without repair: the good copy is returned, the file is left alone. */
            int repaired = 7;
            assert_ok(eng_dbhdr_read(om_vfs_posix(), path, &got, 0, &repaired));
            assert_int_equal(repaired, copy);
            assert_header_equal(&h, &got);
            assert_true(decode_copy(path, copy, &got) != 0);

            /* With repair: the bad copy is rewritten, both decode afterwards. */
            repaired = 7;
            assert_ok(eng_dbhdr_read(om_vfs_posix(), path, &got, 1, &repaired));
            assert_int_equal(repaired, copy);
            assert_header_equal(&h, &got);
            for (int c = 0; c < 2; c++) {
                assert_ok(decode_copy(path, c, &got));
                assert_header_equal(&h, &got);
            }
            assert_ok(eng_dbhdr_read(om_vfs_posix(), path, &got, 1, &repaired));
            assert_int_equal(repaired, -1);
        }
    }
}

static void test_header_copies_that_differ_resolve_to_the_primary(void **state)
{
    /* A crash between the two header writes: the primary is written first, so it is newer. */
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "mail.edb", path);
    eng_dbhdr older, newer, got;
    sample_header(&older, 0);
    sample_header(&newer, 0);
    newer.dbtime = older.dbtime + 1000;
    newer.state = ENG_STATE_CLEAN;
    write_header_file(path, &newer, &older);
    int repaired = 7;
    assert_ok(eng_dbhdr_read(om_vfs_posix(), path, &got, 1, &repaired));
    assert_int_equal(repaired, 1);
    assert_header_equal(&newer, &got);
    assert_ok(decode_copy(path, 1, &got));
    assert_header_equal(&newer, &got);
}

static void test_header_with_both_copies_damaged_is_refused_naming_the_file(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "mail.edb", path);
    eng_dbhdr h, got;
    sample_header(&h, 0);
    write_header_file(path, &h, &h);
    damage_copy(path, 0, DMG_BODY);
    damage_copy(path, 1, DMG_TORN_TAIL);
    int repaired = 7;
    assert_err(eng_dbhdr_read(om_vfs_posix(), path, &got, 1, &repaired), OM_E_ReadVerifyFailure);
    assert_detail_has(path);
    assert_detail_has("both header copies");
    /* Nothing was "repaired" from garbage. */
    assert_true(decode_copy(path, 0, &got) != 0);
    assert_true(decode_copy(path, 1, &got) != 0);
}

static void test_file_that_is_not_a_database_is_invalid_database(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    eng_dbhdr got;

    /* A small text file. */
    in_dir(f->dir, "notes.edb", path);
    static const char text[] = "these are my notes, not a database\n";
    put_file(path, text, sizeof text - 1);
    assert_err(eng_dbhdr_read(om_vfs_posix(), path, &got, 1, NULL), OM_E_InvalidDatabase);
    assert_detail_has(path);

    /* A log file given where the database was expected. */
    in_dir(f->dir, "E00.log", path);
    uint8_t *file = calloc(1, ENG_LOG_SIZE);
    assert_non_null(file);
    eng_loghdr lh = {.version = ENG_FORMAT_VERSION, .gen = 1, .page_size = ENG_PAGE_SIZE};
    memcpy(lh.base, "E00", 4);
    eng_loghdr_encode(&lh, file);
    put_file(path, file, ENG_LOG_SIZE);
    assert_err(eng_dbhdr_read(om_vfs_posix(), path, &got, 1, NULL), OM_E_InvalidDatabase);
    assert_detail_has(path);

    /* Random bytes as large as a database. */
    in_dir(f->dir, "random.edb", path);
    fill(file, 4 * ENG_PAGE_SIZE, 42);
    put_file(path, file, 4 * ENG_PAGE_SIZE);
    assert_err(eng_dbhdr_read(om_vfs_posix(), path, &got, 1, NULL), OM_E_InvalidDatabase);
    assert_detail_has(path);
    free(file);
}

/* ---- data pages ---- */

static void test_data_page_checksum_is_bound_to_its_page_number(void **state)
{
    uint8_t *page = malloc(ENG_PAGE_SIZE);
    assert_non_null(page);
    fill(page, ENG_PAGE_SIZE, 7);
    eng_pghdr_set(page, 9, 4, 1234, 2);
    eng_page_seal(page, 9);
    uint64_t actual = 0;
    assert_int_equal(eng_page_check(page, 9, &actual), ENG_PAGE_OK);
    eng_pghdr h;
    eng_pghdr_get(page, &h);
    assert_int_equal(h.checksum, actual);
    assert_int_equal(h.pgno, 9);
    assert_int_equal(h.objid, 4);
    assert_int_equal(h.dbtime, 1234);
    assert_int_equal(h.flags, 2);

    /* The same bytes read from another page's place: written at the wrong offset. */
    assert_int_equal(eng_page_check(page, 8, NULL), ENG_PAGE_BAD_CHECKSUM);
    assert_int_equal(eng_page_check(page, 10, NULL), ENG_PAGE_BAD_CHECKSUM);

    /* One flipped bit anywhere: every header byte, and a spread over the body. */
    for (uint32_t i = 0; i < ENG_PAGE_SIZE; i += i < ENG_PAGE_HDR ? 1 : 61) {
        uint8_t bit = (uint8_t)(1u << (i % 8));
        page[i] ^= bit;
        assert_int_equal(eng_page_check(page, 9, NULL), ENG_PAGE_BAD_CHECKSUM);
        page[i] ^= bit;
    }
    page[ENG_PAGE_SIZE - 1] ^= 0x80;
    assert_int_equal(eng_page_check(page, 9, NULL), ENG_PAGE_BAD_CHECKSUM);
    page[ENG_PAGE_SIZE - 1] ^= 0x80;
    assert_int_equal(eng_page_check(page, 9, NULL), ENG_PAGE_OK);

    /* Sealed for its place but naming another page: the page holds another page number. */
    eng_pghdr_set(page, 8, 4, 1234, 2);
    eng_page_seal(page, 9);
    assert_int_equal(eng_page_check(page, 9, NULL), ENG_PAGE_WRONG_PGNO);

    memset(page, 0, ENG_PAGE_SIZE);
    assert_int_equal(eng_page_check(page, 9, NULL), ENG_PAGE_ZERO);
    free(page);
}

/* ---- log segments ---- */

static void test_log_segment_round_trips_and_detects_damage(void **state)
{
    uint8_t slot[ENG_SLOT_SIZE], payload[ENG_SEG_PAYLOAD], again[ENG_SLOT_SIZE];
    fill(payload, sizeof payload, 3);
    const uint16_t lens[] = {1, 1000, ENG_SEG_PAYLOAD};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        fill(slot, sizeof slot, 99); /* encoding over old bytes leaves none of them */
        eng_seghdr h = {.gen = 5,
                        .slot = 3,
                        .data_len = lens[k],
                        .stream_off = 12345,
                        .flush_first = 2,
                        .flags = 0};
        eng_seg_encode(&h, payload, slot);
        eng_seghdr got;
        memset(&got, 0xEE, sizeof got);
        assert_int_equal(eng_seg_decode(slot, 5, 3, &got), ENG_SEG_OK);
        assert_int_equal(got.gen, 5);
        assert_int_equal(got.slot, 3);
        assert_int_equal(got.data_len, lens[k]);
        assert_int_equal(got.stream_off, 12345);
        assert_int_equal(got.flush_first, 2);
        assert_int_equal(got.flags, 0);
        assert_memory_equal(slot + ENG_SEG_HDR, payload, lens[k]);
        for (uint32_t i = ENG_SEG_HDR + lens[k]; i < ENG_SLOT_SIZE; i++)
            assert_int_equal(slot[i], 0);
        /* Encoding in place (payload already in the slot) gives the same bytes. */
        memcpy(again, slot, sizeof again);
        eng_seg_encode(&h, again + ENG_SEG_HDR, again);
        assert_memory_equal(again, slot, sizeof slot);
    }

    /* Every single flipped bit of a 4 KiB segment is caught. */
    for (uint32_t bit = 0; bit < ENG_SLOT_SIZE * 8; bit++) {
        slot[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        eng_seghdr got;
        enum eng_seg_status st = eng_seg_decode(slot, 5, 3, &got);
        if (st != ENG_SEG_BAD) fail_msg("bit %u flipped: status %d, expected BAD", bit, st);
        slot[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }

    eng_seghdr got;
    uint8_t zero[ENG_SLOT_SIZE] = {0};
    assert_int_equal(eng_seg_decode(zero, 5, 3, &got), ENG_SEG_EMPTY);

    /* A good segment of another position: another generation, or another slot. */
    assert_int_equal(eng_seg_decode(slot, 6, 3, &got), ENG_SEG_STALE);
    assert_int_equal(eng_seg_decode(slot, 5, 4, &got), ENG_SEG_STALE);
    assert_int_equal(eng_seg_decode(slot, 4, 3, &got), ENG_SEG_STALE);
    assert_int_equal(eng_seg_decode(slot, 5, 3, &got), ENG_SEG_OK);
}

/* A segment whose checksum is right but whose header cannot be true is not trusted: its
 * length would send the reader past the slot. */
static void test_log_segment_with_impossible_fields_is_bad_even_with_a_good_checksum(void **state)
{
    uint8_t slot[ENG_SLOT_SIZE], payload[ENG_SEG_PAYLOAD];
    fill(payload, sizeof payload, 4);
    eng_seghdr h = {.gen = 5, .slot = 3, .data_len = 100, .stream_off = 0, .flush_first = 3};
    struct {
        uint32_t at, size, value;
    } cases[] = {
        {14, 2, ENG_SEG_PAYLOAD + 1}, /* data_len past the slot */
        {14, 2, 0},                   /* empty data */
        {20, 2, 0},                   /* no flush */
        {20, 2, 4},                   /* a flush that starts after this slot */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        eng_seg_encode(&h, payload, slot);
        if (cases[k].size == 2) om_put16(slot + cases[k].at, (uint16_t)cases[k].value);
        om_put64(slot, om_xxh3(slot + 8, ENG_SLOT_SIZE - 8, (uint64_t)5 << 32 | 3));
        eng_seghdr got;
        assert_int_equal(eng_seg_decode(slot, 5, 3, &got), ENG_SEG_BAD);
    }
}

/* ---- log records: a test stream ---- */

#define NGROUPS 10
#define T0      1700000000000000000ull

static const eng_sig DB_SIG = {0x0123456789abcdefull, 0x1600000000000000ull};
static const eng_sig LOG_SIG = {0xfedcba9876543210ull, 0x1600000000000001ull};

static uint8_t range_byte(int g, int r, uint32_t i)
{
    return (uint8_t)(g * 31 + r * 7 + i * 13);
}

static eng_bkslot sample_bkslot(void)
{
    return (eng_bkslot){
        .first_gen = 3, .last_gen = 9, .mark = {9, 77}, .mark_time = T0 + 99, .kind = ENG_BK_FULL};
}

static uint8_t page_rec_flags(int g)
{
    return g == 1 ? ENG_RECF_IMAGE | ENG_RECF_NEW_PAGE : 0;
}

/* Encodes group g (one record of each kind across the groups, then its COMMIT) into buf. */
static uint32_t encode_group(uint8_t *buf, int g)
{
    uint64_t txn = 100 + (uint64_t)g;
    uint32_t n = 0;
    if (g == 0) {
        n = eng_rec_encode_attach(buf, txn, ENG_REC_ATTACH, T0, &DB_SIG);
    } else if (g <= 6) {
        static uint8_t data[2][2000];
        eng_range rg[2] = {{(uint16_t)(g * 8), 2000, data[0]},
                           {(uint16_t)(20000 + g), 700, data[1]}};
        for (int r = 0; r < 2; r++)
            for (uint32_t i = 0; i < rg[r].len; i++)
                data[r][i] = range_byte(g, r, i);
        n = eng_rec_encode_page(buf, txn, page_rec_flags(g), (uint32_t)g, 40 + (uint32_t)g,
                                (uint32_t)g & 1, 10 * (uint64_t)g, 10 * (uint64_t)g + 1, rg, 2);
    } else if (g == 7) {
        n = eng_rec_encode_mark(buf, txn, ENG_BK_FULL, T0 + 7);
    } else if (g == 8) {
        eng_bkslot v = sample_bkslot();
        n = eng_rec_encode_bkslot(buf, txn, ENG_BK_CUR_FULL, 1u << ENG_BK_PREV_INCREMENTAL, &v);
    } else {
        n = eng_rec_encode_attach(buf, txn, ENG_REC_TERM, T0 + 9, &DB_SIG);
    }
    return n + eng_rec_encode_commit(buf + n, txn, T0 + (uint64_t)g, 10 * (uint64_t)g + 1);
}

typedef struct tstream {
    uint8_t *buf;
    uint32_t len;
    uint32_t group_end[NGROUPS]; /* stream offset just past each group */
} tstream;

static void make_stream(tstream *s)
{
    s->buf = malloc(ENG_GEN_CAPACITY);
    assert_non_null(s->buf);
    s->len = 0;
    for (int g = 0; g < NGROUPS; g++) {
        s->len += encode_group(s->buf + s->len, g);
        s->group_end[g] = s->len;
    }
}

/* Decodes group g at *off and checks every field against what encode_group wrote. */
static void check_group(const uint8_t *stream, uint32_t len, uint32_t *off, int g)
{
    eng_rec *r = malloc(sizeof *r);
    assert_non_null(r);
    uint64_t txn = 100 + (uint64_t)g;
    uint32_t start = *off;
    int rc = eng_rec_decode(stream, len, off, r);
    if (rc != 1) fail_msg("group %d: decode returned %d (%s)", g, rc, om_err_detail());
    assert_int_equal(r->txn, txn);
    assert_int_equal(r->len, *off - start);
    if (g == 0 || g == NGROUPS - 1) {
        assert_int_equal(r->type, g == 0 ? ENG_REC_ATTACH : ENG_REC_TERM);
        assert_int_equal(r->u.attach.time, g == 0 ? T0 : T0 + 9);
        assert_sig_equal(&r->u.attach.db_sig, &DB_SIG);
    } else if (g <= 6) {
        assert_int_equal(r->type, ENG_REC_PAGE);
        assert_int_equal(r->flags, page_rec_flags(g));
        assert_int_equal(r->u.page.pgno, g);
        assert_int_equal(r->u.page.objid, 40 + g);
        assert_int_equal(r->u.page.pflags, g & 1);
        assert_int_equal(r->u.page.before, 10 * g);
        assert_int_equal(r->u.page.after, 10 * g + 1);
        assert_int_equal(r->u.page.nranges, 2);
        const uint16_t offs[2] = {(uint16_t)(g * 8), (uint16_t)(20000 + g)}, lens[2] = {2000, 700};
        for (int k = 0; k < 2; k++) {
            const eng_range *rg = &r->u.page.ranges[k];
            assert_int_equal(rg->off, offs[k]);
            assert_int_equal(rg->len, lens[k]);
            assert_true(rg->data >= stream + start && rg->data + rg->len <= stream + *off);
            for (uint32_t i = 0; i < rg->len; i++)
                assert_int_equal(rg->data[i], range_byte(g, k, i));
        }
    } else if (g == 7) {
        assert_int_equal(r->type, ENG_REC_BACKUP_MARK);
        assert_int_equal(r->u.mark.kind, ENG_BK_FULL);
        assert_int_equal(r->u.mark.time, T0 + 7);
    } else {
        eng_bkslot v = sample_bkslot();
        assert_int_equal(r->type, ENG_REC_BACKUP_SLOT);
        assert_int_equal(r->u.bkslot.slot, ENG_BK_CUR_FULL);
        assert_int_equal(r->u.bkslot.clear_mask, 1u << ENG_BK_PREV_INCREMENTAL);
        assert_int_equal(r->u.bkslot.value.first_gen, v.first_gen);
        assert_int_equal(r->u.bkslot.value.last_gen, v.last_gen);
        assert_pos_equal(r->u.bkslot.value.mark, v.mark);
        assert_int_equal(r->u.bkslot.value.mark_time, v.mark_time);
        assert_int_equal(r->u.bkslot.value.kind, v.kind);
    }
    start = *off;
    assert_int_equal(eng_rec_decode(stream, len, off, r), 1);
    assert_int_equal(r->type, ENG_REC_COMMIT);
    assert_int_equal(r->txn, txn);
    assert_int_equal(r->len, *off - start);
    assert_int_equal(r->u.commit.time, T0 + (uint64_t)g);
    assert_int_equal(r->u.commit.dbtime, 10 * (uint64_t)g + 1);
    free(r);
}

/* Decodes groups 0..ngroups-1 from the stream, then expects its clean end. */
static void check_stream_holds_groups(const uint8_t *stream, uint32_t len, int ngroups)
{
    uint32_t off = 0;
    for (int g = 0; g < ngroups; g++)
        check_group(stream, len, &off, g);
    eng_rec *r = malloc(sizeof *r);
    assert_non_null(r);
    assert_int_equal(eng_rec_decode(stream, len, &off, r), 0);
    free(r);
}

/* Reads path with eng_gen_read and checks the stream's extent and that it holds `groups`
 * whole groups. */
static void expect_clean_read(const char *path, uint32_t len, uint16_t end_slot, uint16_t torn_slot,
                              uint16_t segments, int groups)
{
    eng_genread g;
    assert_ok(eng_gen_read(om_vfs_posix(), path, &g));
    assert_int_equal(g.len, len);
    assert_int_equal(g.end_slot, end_slot);
    assert_int_equal(g.torn_slot, torn_slot);
    assert_int_equal(g.segments, segments);
    assert_int_equal(g.damaged_slot, 0);
    check_stream_holds_groups(g.stream, g.len, groups);
    eng_gen_free(&g);
}

/* ---- log records ---- */

static void test_records_decode_back_to_what_was_encoded(void **state)
{
    tstream s;
    make_stream(&s);
    /* An exact-size copy, so reading one byte too far is caught by ASan. */
    uint8_t *exact = malloc(s.len);
    assert_non_null(exact);
    memcpy(exact, s.buf, s.len);
    check_stream_holds_groups(exact, s.len, NGROUPS);
    free(exact);
    free(s.buf);
}

static void test_record_stream_cut_at_any_byte_ends_cleanly_after_its_whole_records(void **state)
{
    tstream s;
    make_stream(&s);
    uint32_t ends[2 * NGROUPS + 1], nends = 0;
    eng_rec *r = malloc(sizeof *r);
    assert_non_null(r);
    uint32_t off = 0;
    ends[nends++] = 0;
    while (eng_rec_decode(s.buf, s.len, &off, r) == 1)
        ends[nends++] = off;
    assert_int_equal(off, s.len);
    assert_int_equal(nends, 2 * NGROUPS + 1);

    for (uint32_t cut = 0; cut <= s.len; cut++) {
        uint8_t *exact = malloc(cut ? cut : 1);
        assert_non_null(exact);
        memcpy(exact, s.buf, cut);
        uint32_t want = 0;
        for (uint32_t k = 0; k < nends; k++)
            if (ends[k] <= cut) want = ends[k];
        off = 0;
        int rc;
        while ((rc = eng_rec_decode(exact, cut, &off, r)) == 1) {
        }
        if (rc != 0 || off != want)
            fail_msg("stream cut at %u: rc %d, stopped at %u, expected 0 at %u (%s)", cut, rc, off,
                     want, om_err_detail());
        free(exact);
    }
    free(r);
    free(s.buf);
}

/* Decodes the single record in rec[0..len) from an exact-size copy. */
static int decode_alone(const uint8_t *rec, uint32_t len)
{
    uint8_t *exact = malloc(len ? len : 1);
    assert_non_null(exact);
    memcpy(exact, rec, len);
    eng_rec *r = malloc(sizeof *r);
    assert_non_null(r);
    uint32_t off = 0;
    int rc = eng_rec_decode(exact, len, &off, r);
    if (rc != 1) assert_int_equal(off, 0);
    free(r);
    free(exact);
    return rc;
}

/* A page record with one range of `rlen` bytes at `roff`, into buf; returns its length. */
static uint32_t page_rec(uint8_t *buf, uint16_t roff, uint16_t rlen)
{
    static uint8_t data[ENG_PAGE_BODY];
    memset(data, 0xAB, sizeof data);
    eng_range rg = {roff, rlen, data};
    return eng_rec_encode_page(buf, 7, 0, 5, 2, 0, 10, 11, &rg, 1);
}

static void test_record_stream_ending_mid_record_is_its_end(void **state)
{
    uint8_t buf[256];
    uint32_t n = page_rec(buf, 0, 100);
    assert_int_equal(decode_alone(buf, n), 1);
    for (uint32_t cut = 0; cut < n; cut++)
        assert_int_equal(decode_alone(buf, cut), 0);
    /* Fewer than a header's worth of zeros: the unwritten tail of a flush. */
    memset(buf, 0, sizeof buf);
    assert_int_equal(decode_alone(buf, ENG_REC_HDR - 1), 0);
}

typedef struct bad_case {
    const char *name;
    uint32_t at;   /* where to patch (0: no patch) */
    uint32_t size; /* 1, 2 or 4 bytes */
    uint32_t value;
} bad_case;

static void test_garbage_where_a_record_should_start_is_log_corruption(void **state)
{
    uint8_t *buf = calloc(1, 2 * ENG_PAGE_SIZE);
    assert_non_null(buf);

    /* Zero bytes: an unwritten region inside the stream. */
    assert_err(decode_alone(buf, ENG_REC_HDR), OM_E_LogFileCorrupt);
    assert_detail_has("zero bytes");
    assert_err(decode_alone(buf, 4096), OM_E_LogFileCorrupt);

    /* Patches of a valid page record: 16-byte header (type, flags, reserved, len @4, txn), then
     * pgno @16, objid @20, pflags @24, nranges @28, before @32, after @40, range off @48,
     * range len @50, data @52. */
    const bad_case page_cases[] = {
        {"length below a header", 4, 4, 8},
        {"length above any record", 4, 4, ENG_REC_MAX + 1},
        {"length of 4 GiB", 4, 4, 0xFFFFFFFFu},
        {"unknown type", 0, 1, 0x77},
        {"type zero with a length", 0, 1, 0},
        {"page 0", 16, 4, 0},
        {"too many ranges", 28, 4, ENG_MAX_RANGES + 1},
        {"a range header past the record", 28, 4, 2},
        {"dbtime that does not advance", 40, 4, 10},
        {"range data past the record", 50, 2, 101},
        {"range past the page", 48, 2, ENG_PAGE_BODY - 50},
        {"record longer than its ranges", 4, 4, 52 + 100 + 4},
        {"page record shorter than its fixed part", 4, 4, ENG_REC_HDR + 31},
    };
    for (size_t k = 0; k < sizeof page_cases / sizeof page_cases[0]; k++) {
        const bad_case *c = &page_cases[k];
        uint32_t n = page_rec(buf, 0, 100);
        assert_int_equal(decode_alone(buf, n), 1);
        if (c->size == 1) buf[c->at] = (uint8_t)c->value;
        if (c->size == 2) om_put16(buf + c->at, (uint16_t)c->value);
        if (c->size == 4) om_put32(buf + c->at, c->value);
        /* Give the stream room for the length the record now claims, where it is sane. */
        uint32_t claim = om_get32(buf + 4), avail = claim <= 2 * ENG_PAGE_SIZE ? claim : n;
        if (avail < n) avail = n;
        int rc = decode_alone(buf, avail);
        if (rc != OM_E_LogFileCorrupt)
            fail_msg("%s: decode returned %d, expected %d LogFileCorrupt", c->name, rc,
                     OM_E_LogFileCorrupt);
        memset(buf, 0, 2 * ENG_PAGE_SIZE);
    }

    /* A range that runs past the page body, as the encoder would write it. */
    uint32_t n = page_rec(buf, ENG_PAGE_BODY - 10, 20);
    assert_err(decode_alone(buf, n), OM_E_LogFileCorrupt);
    assert_detail_has("range past the page");

    /* Fixed-size records with the wrong size, and a backup slot that does not exist. */
    n = eng_rec_encode_commit(buf, 1, T0, 5);
    om_put32(buf + 4, n + 8);
    assert_err(decode_alone(buf, n + 8), OM_E_LogFileCorrupt);
    n = eng_rec_encode_mark(buf, 1, ENG_BK_FULL, T0);
    om_put32(buf + 4, n - 4);
    assert_err(decode_alone(buf, n - 4), OM_E_LogFileCorrupt);
    eng_bkslot v = sample_bkslot();
    n = eng_rec_encode_bkslot(buf, 1, ENG_BK_NSLOTS, 0, &v);
    assert_err(decode_alone(buf, n), OM_E_LogFileCorrupt);
    assert_detail_has("backup slot");
    n = eng_rec_encode_attach(buf, 1, ENG_REC_ATTACH, T0, &DB_SIG);
    om_put32(buf + 4, n + 1);
    assert_err(decode_alone(buf, n + 1), OM_E_LogFileCorrupt);
    free(buf);
}

static void test_random_damage_to_records_never_reads_outside_the_stream(void **state)
{
    tstream s;
    make_stream(&s);
    eng_rec *r = malloc(sizeof *r);
    assert_non_null(r);
    uint32_t starts[2 * NGROUPS], nstarts = 0, off = 0;
    do
        starts[nstarts++] = off;
    while (eng_rec_decode(s.buf, s.len, &off, r) == 1 && off < s.len);
    uint64_t seed = 2024;
    for (int iter = 0; iter < 3000; iter++) {
        uint32_t len = iter % 4 == 0 ? (uint32_t)(rnd(&seed) % (s.len + 1)) : s.len;
        uint8_t *exact = malloc(len ? len : 1);
        assert_non_null(exact);
        memcpy(exact, s.buf, len);
        int nmut = 1 + (int)(rnd(&seed) % 8);
        for (int m = 0; m < nmut && len; m++) {
            /* Half the time aim at a record's header, page fields or first range header. */
            uint32_t at = m % 2 ? (uint32_t)(rnd(&seed) % len)
                                : starts[rnd(&seed) % nstarts] + (uint32_t)(rnd(&seed) % 52);
            if (at < len) exact[at] = (uint8_t)rnd(&seed);
        }
        off = 0;
        int rc;
        while ((rc = eng_rec_decode(exact, len, &off, r)) == 1) {
            assert_true(off <= len);
            if (r->type != ENG_REC_PAGE) continue;
            for (uint32_t k = 0; k < r->u.page.nranges; k++) {
                const eng_range *rg = &r->u.page.ranges[k];
                assert_true(rg->data >= exact && rg->data + rg->len <= exact + off);
                assert_true((uint32_t)rg->off + rg->len <= ENG_PAGE_BODY);
            }
        }
        if (rc != 0 && rc != OM_E_LogFileCorrupt)
            fail_msg("iteration %d: decode returned %d", iter, rc);
        free(exact);
    }
    free(r);
    free(s.buf);
}

/* ---- whole log generations ---- */

static uint8_t *new_log(uint32_t gen)
{
    uint8_t *file = calloc(1, ENG_LOG_SIZE);
    assert_non_null(file);
    eng_loghdr h = {.version = ENG_FORMAT_VERSION,
                    .gen = gen,
                    .log_sig = LOG_SIG,
                    .created = T0 + 1000 * gen,
                    .prev_created = T0 + 1000 * (gen - 1),
                    .checkpoint = {gen, 0},
                    .page_size = ENG_PAGE_SIZE,
                    .db_sig = DB_SIG,
                    .prev_end = 777};
    memcpy(h.base, "E00", 4);
    for (int i = 0; i < 16; i++)
        h.db_id.b[i] = (uint8_t)i;
    eng_loghdr_encode(&h, file);
    return file;
}

static void put_seg(uint8_t *file, uint32_t gen, uint16_t slot, uint32_t stream_off,
                    uint16_t flush_first, const uint8_t *data, uint32_t len)
{
    eng_seghdr h = {.gen = gen,
                    .slot = slot,
                    .data_len = (uint16_t)len,
                    .stream_off = stream_off,
                    .flush_first = flush_first};
    eng_seg_encode(&h, data, file + (size_t)slot * ENG_SLOT_SIZE);
}

/* Writes stream[from, to) as one flush starting in `slot`; returns the slot after it. */
static uint16_t put_flush(uint8_t *file, uint32_t gen, uint16_t slot, const uint8_t *stream,
                          uint32_t from, uint32_t to)
{
    uint16_t first = slot;
    for (uint32_t off = from; off < to; slot++) {
        uint32_t n = to - off < ENG_SEG_PAYLOAD ? to - off : ENG_SEG_PAYLOAD;
        put_seg(file, gen, slot, off, first, stream + off, n);
        off += n;
    }
    return slot;
}

/* Flushes of the test stream: A = group 0 in slot 1, B = groups 1-3 in slots 2-4,
 * C = groups 4-6 in slots 5-7, D = groups 7-9 in slot 8. */
static uint16_t put_flushes(uint8_t *file, uint32_t gen, const tstream *s, int nflushes)
{
    const uint32_t bounds[5] = {0, s->group_end[0], s->group_end[3], s->group_end[6],
                                s->group_end[9]};
    const uint16_t next_slot[4] = {2, 5, 8, 9};
    uint16_t slot = 1;
    for (int k = 0; k < nflushes; k++) {
        slot = put_flush(file, gen, slot, s->buf, bounds[k], bounds[k + 1]);
        assert_int_equal(slot, next_slot[k]);
    }
    return slot;
}

static void write_log(const char *path, uint8_t *file)
{
    put_file(path, file, ENG_LOG_SIZE);
}

static uint8_t *slot_of(uint8_t *file, uint16_t slot)
{
    return file + (size_t)slot * ENG_SLOT_SIZE;
}

static void garble_slot(uint8_t *file, uint16_t slot)
{
    for (int i = 0; i < 8; i++)
        slot_of(file, slot)[1500 + i] ^= 0xA5;
}

static void test_clean_log_generation_returns_its_whole_stream(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0000000005.log", path);
    tstream s;
    make_stream(&s);
    uint8_t *file = new_log(5);
    put_flushes(file, 5, &s, 4);
    write_log(path, file);

    eng_genread g;
    assert_ok(eng_gen_read(om_vfs_posix(), path, &g));
    assert_int_equal(g.hdr.gen, 5);
    assert_int_equal(g.hdr.version, ENG_FORMAT_VERSION);
    assert_sig_equal(&g.hdr.log_sig, &LOG_SIG);
    assert_sig_equal(&g.hdr.db_sig, &DB_SIG);
    assert_int_equal(g.hdr.created, T0 + 5000);
    assert_int_equal(g.hdr.prev_created, T0 + 4000);
    assert_pos_equal(g.hdr.checkpoint, (eng_lgpos){5, 0});
    assert_string_equal(g.hdr.base, "E00");
    assert_int_equal(g.hdr.page_size, ENG_PAGE_SIZE);
    assert_int_equal(g.hdr.prev_end, 777);
    assert_int_equal(g.len, s.len);
    assert_memory_equal(g.stream, s.buf, s.len);
    assert_int_equal(g.end_slot, 9);
    assert_int_equal(g.torn_slot, 0);
    assert_int_equal(g.segments, 8);
    assert_int_equal(g.damaged_slot, 0);
    check_stream_holds_groups(g.stream, g.len, NGROUPS);
    eng_gen_free(&g);
    free(file);
    free(s.buf);
}

static void test_log_generation_filled_to_its_last_slot_is_read_whole(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0000000005.log", path);
    uint8_t *stream = malloc(ENG_GEN_CAPACITY);
    assert_non_null(stream);
    static uint8_t data[30000];
    fill(data, sizeof data, 11);
    uint32_t len = 0, nrec = 0;
    while (len < ENG_GEN_CAPACITY) {
        uint32_t room = ENG_GEN_CAPACITY - len - (ENG_REC_HDR + 32 + 4);
        eng_range rg = {0, (uint16_t)(room < sizeof data ? room : sizeof data), data};
        len += eng_rec_encode_page(stream + len, 1, 0, 1 + nrec, 1, 0, nrec + 1, nrec + 2, &rg, 1);
        nrec++;
    }
    assert_int_equal(len, ENG_GEN_CAPACITY);
    uint8_t *file = new_log(5);
    assert_int_equal(put_flush(file, 5, 1, stream, 0, len), ENG_LOG_SLOTS);
    write_log(path, file);

    eng_genread g;
    assert_ok(eng_gen_read(om_vfs_posix(), path, &g));
    assert_int_equal(g.len, ENG_GEN_CAPACITY);
    assert_memory_equal(g.stream, stream, len);
    assert_int_equal(g.end_slot, ENG_LOG_SLOTS);
    assert_int_equal(g.segments, ENG_LOG_SLOTS - 1);
    assert_int_equal(g.torn_slot, 0);
    eng_rec *r = malloc(sizeof *r);
    assert_non_null(r);
    uint32_t off = 0, seen = 0;
    while (eng_rec_decode(g.stream, g.len, &off, r) == 1)
        seen++;
    assert_int_equal(seen, nrec);
    assert_int_equal(off, len);
    free(r);
    eng_gen_free(&g);
    free(file);
    free(stream);
}

static void test_log_stream_ends_before_stale_and_zeroed_segments(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0000000005.log", path);
    tstream s;
    make_stream(&s);
    for (int variant = 0; variant < 2; variant++) {
        uint8_t *file = new_log(5);
        put_flushes(file, 5, &s, 2);
        /* Leftovers of a recycled file: generation 4's segments at their own slots, a copy of
         * this generation's slot 2 sitting in slot 9, generation 3's in slot 11. Variant 1 starts
         * with a zeroed slot. */
        uint16_t from = variant ? 6 : 5;
        put_flush(file, 4, from, s.buf, 0, s.group_end[6] - s.group_end[0]);
        memcpy(slot_of(file, 9), slot_of(file, 2), ENG_SLOT_SIZE);
        put_seg(file, 3, 11, 0, 11, s.buf, 100);
        write_log(path, file);

        expect_clean_read(path, s.group_end[3], 5, 0, 4, 4);
        free(file);
    }
    free(s.buf);
}

static void test_torn_last_flush_is_dropped_whole(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0000000005.log", path);
    tstream s;
    make_stream(&s);
    /* The last flush wrote slots 5..7 (flush_first 5); the crash damaged one of its slots while
     * a later slot of the same flush landed: garbled 6, garbled 5, or 6 never written. */
    for (int variant = 0; variant < 3; variant++) {
        uint8_t *file = new_log(5);
        put_flushes(file, 5, &s, 3);
        if (variant == 0) garble_slot(file, 6);
        if (variant == 1) garble_slot(file, 5);
        if (variant == 2) memset(slot_of(file, 6), 0, ENG_SLOT_SIZE);
        write_log(path, file);

        expect_clean_read(path, s.group_end[3], 5, 5, 4, 4);
        free(file);
    }
    free(s.buf);
}

static void test_data_after_a_gap_from_a_later_flush_is_log_corruption(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0000000005.log", path);
    tstream s;
    make_stream(&s);
    /* Flushes: 1 | 2-4 | group 4 in slot 5 | group 5 in slot 6 | groups 6-9 from slot 7 on.
     * Slot 6 was acknowledged before slot 7 was written: losing it loses durable data. */
    for (int variant = 0; variant < 2; variant++) {
        uint8_t *file = new_log(5);
        put_flushes(file, 5, &s, 2);
        assert_int_equal(put_flush(file, 5, 5, s.buf, s.group_end[3], s.group_end[4]), 6);
        assert_int_equal(put_flush(file, 5, 6, s.buf, s.group_end[4], s.group_end[5]), 7);
        put_flush(file, 5, 7, s.buf, s.group_end[5], s.len);
        if (variant == 0)
            memset(slot_of(file, 6), 0, ENG_SLOT_SIZE);
        else
            garble_slot(file, 6);
        write_log(path, file);

        eng_genread g;
        assert_err(eng_gen_read(om_vfs_posix(), path, &g), OM_E_LogFileCorrupt);
        assert_int_equal(g.damaged_slot, 6);
        assert_detail_has(path);
        assert_detail_has("slot 6");
        /* What comes before the damage is still there for a tool to show. */
        assert_int_equal(g.hdr.gen, 5);
        assert_int_equal(g.len, s.group_end[4]);
        check_stream_holds_groups(g.stream, g.len, 5);
        eng_gen_free(&g);
        free(file);
    }
    free(s.buf);
}

static void test_segment_that_does_not_continue_the_stream_is_log_corruption(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0000000005.log", path);
    tstream s;
    make_stream(&s);
    const uint32_t b = s.group_end[3];
    const uint32_t wrong_offs[] = {b + 1, b - 1, 0, b + ENG_SEG_PAYLOAD};
    for (size_t k = 0; k < sizeof wrong_offs / sizeof wrong_offs[0]; k++) {
        uint8_t *file = new_log(5);
        put_flushes(file, 5, &s, 2);
        put_seg(file, 5, 5, wrong_offs[k], 5, s.buf + b, s.group_end[4] - b);
        write_log(path, file);
        eng_genread g;
        assert_err(eng_gen_read(om_vfs_posix(), path, &g), OM_E_LogFileCorrupt);
        assert_int_equal(g.damaged_slot, 5);
        assert_detail_has(path);
        eng_gen_free(&g);
        free(file);
    }
    free(s.buf);
}

static void test_log_file_of_the_wrong_size_is_refused(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0000000005.log", path);
    tstream s;
    make_stream(&s);
    uint8_t *file = new_log(5);
    put_flushes(file, 5, &s, 4);
    const size_t sizes[] = {ENG_LOG_SIZE - ENG_SLOT_SIZE, ENG_LOG_SIZE / 2, ENG_SLOT_SIZE, 0};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        put_file(path, file, sizes[k]);
        eng_genread g;
        assert_err(eng_gen_read(om_vfs_posix(), path, &g), OM_E_LogFileSizeMismatch);
        assert_detail_has(path);
        assert_null(g.stream);
    }
    uint8_t *big = calloc(1, ENG_LOG_SIZE + 1);
    assert_non_null(big);
    memcpy(big, file, ENG_LOG_SIZE);
    put_file(path, big, ENG_LOG_SIZE + 1);
    eng_genread g;
    assert_err(eng_gen_read(om_vfs_posix(), path, &g), OM_E_LogFileSizeMismatch);

    in_dir(f->dir, "E0000000006.log", path);
    assert_err(eng_gen_read(om_vfs_posix(), path, &g), OM_E_FileNotFound);
    free(big);
    free(file);
    free(s.buf);
}

static void test_log_file_with_a_damaged_header_is_log_corruption(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0000000005.log", path);
    tstream s;
    make_stream(&s);
    for (int variant = 0; variant < 3; variant++) {
        uint8_t *file = new_log(5);
        put_flushes(file, 5, &s, 4);
        if (variant == 0) file[40] ^= 0x10; /* a field */
        if (variant == 1) file[9] ^= 0x01;  /* the magic */
        if (variant == 2) memset(file, 0, ENG_SLOT_SIZE);
        write_log(path, file);
        eng_genread g;
        assert_err(eng_gen_read(om_vfs_posix(), path, &g), OM_E_LogFileCorrupt);
        assert_detail_has(path);
        assert_detail_has("header");
        eng_gen_free(&g);
        free(file);
    }
    free(s.buf);
}

/* ---- checkpoint file ---- */

static void sample_chk(eng_chkfile *c, uint32_t salt)
{
    memset(c, 0, sizeof *c);
    c->checkpoint = (eng_lgpos){12 + salt, 34567};
    c->log_sig = LOG_SIG;
    c->db_sig = DB_SIG;
    c->time = T0 + 5 + salt;
    c->last_full = (eng_lgpos){10, 5};
    c->last_incremental = (eng_lgpos){11, 6};
    memcpy(c->base, "E0B", 4);
}

static void assert_chk_equal(const eng_chkfile *a, const eng_chkfile *b)
{
    assert_pos_equal(a->checkpoint, b->checkpoint);
    assert_sig_equal(&a->log_sig, &b->log_sig);
    assert_sig_equal(&a->db_sig, &b->db_sig);
    assert_int_equal(a->time, b->time);
    assert_pos_equal(a->last_full, b->last_full);
    assert_pos_equal(a->last_incremental, b->last_incremental);
    assert_string_equal(a->base, b->base);
}

static void test_checkpoint_survives_one_damaged_copy_and_not_two(void **state)
{
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E0B.chk", path);
    om_vfs *v = om_vfs_posix();
    eng_chkfile c, got;
    sample_chk(&c, 0);
    int bad = 7;

    assert_err(eng_chk_read(v, path, &got, &bad), OM_E_CheckpointFileNotFound);
    assert_detail_has(path);

    assert_ok(eng_chk_write(v, path, &c));
    assert_ok(eng_chk_read(v, path, &got, &bad));
    assert_int_equal(bad, 0);
    assert_chk_equal(&c, &got);

    for (int copy = 0; copy < 2; copy++) {
        assert_ok(eng_chk_write(v, path, &c));
        garble_file(path, (uint64_t)copy * ENG_CHK_COPY + 40, 4);
        assert_ok(eng_chk_read(v, path, &got, &bad));
        assert_int_equal(bad, 1);
        assert_chk_equal(&c, &got);
    }

    /* Only the first copy ever reached the disk. */
    uint8_t buf[ENG_CHK_COPY];
    eng_chk_encode(&c, buf, 0);
    put_file(path, buf, sizeof buf);
    assert_ok(eng_chk_read(v, path, &got, &bad));
    assert_int_equal(bad, 1);
    assert_chk_equal(&c, &got);

    assert_ok(eng_chk_write(v, path, &c));
    garble_file(path, 40, 4);
    garble_file(path, ENG_CHK_COPY + 60, 4);
    assert_err(eng_chk_read(v, path, &got, &bad), OM_E_CheckpointCorrupt);
    assert_detail_has(path);
    assert_int_equal(bad, 2);
}

static void test_checkpoint_copies_that_differ_resolve_to_the_first(void **state)
{
    /* A crash between the two writes: copy 0 is written first, so it is the newer. */
    fx *f = *state;
    char path[PATH_LEN];
    in_dir(f->dir, "E00.chk", path);
    eng_chkfile older, newer, got;
    sample_chk(&older, 0);
    sample_chk(&newer, 5);
    uint8_t buf[2 * ENG_CHK_COPY];
    eng_chk_encode(&newer, buf, 0);
    eng_chk_encode(&older, buf + ENG_CHK_COPY, 1);
    put_file(path, buf, sizeof buf);
    int bad = 7;
    assert_ok(eng_chk_read(om_vfs_posix(), path, &got, &bad));
    assert_int_equal(bad, 0);
    assert_chk_equal(&newer, &got);
    /* A copy is sealed for its place. */
    assert_err(eng_chk_decode(buf, 1, &got), OM_E_CheckpointCorrupt);
}

/* ---- the generation chain, through the engine ---- */

#define HIST_TXNS 7

typedef struct history {
    char dir[PATH_LEN], edb[PATH_LEN], logs[PATH_LEN];
    eng_opts o;
    uint32_t pgno[HIST_TXNS];
    uint32_t need; /* the generation replay starts from (the checkpoint's) */
    uint32_t cur;  /* the generation in E00.log */
} history;

static void hist_commit(eng_db *db, history *h, uint32_t k)
{
    eng_txn *t = NULL;
    assert_ok(eng_txn_begin(db, &t));
    assert_ok(eng_page_alloc(t, 10 + k, &h->pgno[k]));
    char msg[64];
    int n = snprintf(msg, sizeof msg, "transaction %u", k);
    assert_ok(eng_page_write(t, h->pgno[k], 100, msg, (uint32_t)n + 1));
    if (k > 0) assert_ok(eng_page_write(t, h->pgno[0], 1000 + 8 * k, &k, sizeof k));
    assert_ok(eng_txn_commit(t, 0));
}

/* A database that crashed with generations 1..5 finished, 6 in E00.log, and the checkpoint in
 * generation 3: replay needs 3..6, one committed transaction per generation (two in 3). */
static void make_history(const char *dir, history *h)
{
    memset(h, 0, sizeof *h);
    snprintf(h->dir, sizeof h->dir, "%s", dir);
    assert_int_equal(mkdir(dir, 0750), 0);
    in_dir(dir, "mail.edb", h->edb);
    in_dir(dir, "logs", h->logs);
    h->o.edb_path = h->edb;
    h->o.log_dir = h->logs;
    h->o.no_reserve_logs = 1;
    eng_db *db = NULL;
    assert_ok(eng_db_create(&h->o, &db));
    hist_commit(db, h, 0);
    assert_ok(eng_db_roll_log(db));
    hist_commit(db, h, 1);
    assert_ok(eng_db_roll_log(db));
    hist_commit(db, h, 2);
    assert_ok(eng_checkpoint(db));
    hist_commit(db, h, 3);
    for (uint32_t k = 4; k < HIST_TXNS; k++) {
        assert_ok(eng_db_roll_log(db));
        hist_commit(db, h, k);
    }
    eng_db_abandon(db); /* the process dies */

    eng_dbhdr hdr;
    assert_ok(eng_dbhdr_read(om_vfs_posix(), h->edb, &hdr, 0, NULL));
    assert_int_equal(hdr.state, ENG_STATE_DIRTY);
    h->need = hdr.log_req_min;
    eng_chkfile ck;
    char chk[PATH_LEN];
    assert_ok(eng_chk_path(chk, sizeof chk, h->logs, "E00"));
    assert_ok(eng_chk_read(om_vfs_posix(), chk, &ck, NULL));
    assert_int_equal(ck.checkpoint.gen, h->need);
    assert_int_equal(h->need, 3);
    h->cur = 6;
}

static const char *gen_file(const history *h, uint32_t gen, char *out)
{
    assert_ok(eng_log_path(out, PATH_LEN, h->logs, "E00", gen));
    return out;
}

static void hist_sub(const fx *f, const char *name, char *out)
{
    in_dir(f->dir, name, out);
}

static void expect_open_fails(const history *h, int want)
{
    eng_db *db = NULL;
    assert_err(eng_db_open(&h->o, &db), want);
    assert_null(db);
}

static void expect_history_intact(const history *h)
{
    eng_db *db = NULL;
    assert_ok(eng_db_open(&h->o, &db));
    uint8_t *body = malloc(ENG_PAGE_BODY);
    assert_non_null(body);
    for (uint32_t k = 0; k < HIST_TXNS; k++) {
        char msg[64];
        snprintf(msg, sizeof msg, "transaction %u", k);
        assert_ok(eng_page_read(db, h->pgno[k], body));
        assert_string_equal((const char *)body + 100, msg);
    }
    assert_ok(eng_page_read(db, h->pgno[0], body));
    for (uint32_t k = 1; k < HIST_TXNS; k++) {
        uint32_t v;
        memcpy(&v, body + 1000 + 8 * k, sizeof v);
        assert_int_equal(v, k);
    }
    eng_info info;
    assert_ok(eng_db_info(db, &info));
    assert_int_equal(info.gen_current, h->cur + 1); /* a mount starts a new generation */
    free(body);
    assert_ok(eng_db_close(db));
}

static void test_crashed_database_recovers_every_committed_transaction(void **state)
{
    fx *f = *state;
    char dir[PATH_LEN];
    history h;
    hist_sub(f, "a", dir);
    make_history(dir, &h);
    expect_history_intact(&h);
}

static void test_generations_before_the_checkpoint_are_not_needed(void **state)
{
    fx *f = *state;
    char dir[PATH_LEN], p[PATH_LEN];
    history h;
    hist_sub(f, "a", dir);
    make_history(dir, &h);
    for (uint32_t g = 1; g < h.need; g++)
        assert_int_equal(unlink(gen_file(&h, g, p)), 0);
    expect_history_intact(&h);
}

static void test_generation_of_another_database_is_database_log_set_mismatch(void **state)
{
    fx *f = *state;
    char dir[PATH_LEN], p[PATH_LEN], q[PATH_LEN];
    history a, b;
    hist_sub(f, "a", dir);
    make_history(dir, &a);
    hist_sub(f, "b", dir);
    make_history(dir, &b);
    uint32_t g = a.need + 1;
    copy_file(gen_file(&b, g, q), gen_file(&a, g, p));
    /* Another database's generation is of another stream too: the database is the answer (the
     * log chain's order, log.h), as hard recovery and the check library say. */
    expect_open_fails(&a, OM_E_DatabaseLogSetMismatch);
    assert_detail_has(p);
}

static void
test_generation_that_does_not_chain_to_the_previous_is_invalid_log_sequence(void **state)
{
    fx *f = *state;
    char dir[PATH_LEN], p[PATH_LEN];
    history h;
    hist_sub(f, "a", dir);
    make_history(dir, &h);
    uint32_t g = h.need + 1;
    gen_file(&h, g, p);
    uint8_t slot[ENG_SLOT_SIZE];
    read_at(p, 0, slot, sizeof slot);
    eng_loghdr lh;
    assert_ok(eng_loghdr_decode(slot, &lh));
    assert_int_equal(lh.gen, g);
    lh.prev_created += 1;
    eng_loghdr_encode(&lh, slot);
    patch_file(p, 0, slot, sizeof slot);
    expect_open_fails(&h, OM_E_InvalidLogSequence);
    assert_detail_has(p);
}

static void test_missing_middle_generation_is_missing_log_file(void **state)
{
    fx *f = *state;
    char dir[PATH_LEN], p[PATH_LEN];
    history h;
    hist_sub(f, "a", dir);
    make_history(dir, &h);
    assert_int_equal(unlink(gen_file(&h, h.need + 1, p)), 0);
    expect_open_fails(&h, OM_E_MissingLogFile);
    assert_detail_has("generation 4");
}

static void test_missing_checkpoint_generation_is_required_log_files_missing(void **state)
{
    fx *f = *state;
    char dir[PATH_LEN], p[PATH_LEN];
    history h;
    hist_sub(f, "a", dir);
    make_history(dir, &h);
    assert_int_equal(unlink(gen_file(&h, h.need, p)), 0);
    expect_open_fails(&h, OM_E_RequiredLogFilesMissing);
    assert_detail_has("generation 3");
    assert_detail_has(h.edb);
}

static void test_generation_under_another_name_is_log_generation_mismatch(void **state)
{
    fx *f = *state;
    char dir[PATH_LEN], p[PATH_LEN], q[PATH_LEN], tmp[PATH_LEN];
    history h;
    hist_sub(f, "a", dir);
    make_history(dir, &h);
    /* Generations 4 and 5 swap names: every name is there, each holds the other. */
    gen_file(&h, h.need + 1, p);
    gen_file(&h, h.need + 2, q);
    in_dir(h.logs, "swap", tmp);
    assert_int_equal(rename(p, tmp), 0);
    assert_int_equal(rename(q, p), 0);
    assert_int_equal(rename(tmp, q), 0);
    expect_open_fails(&h, OM_E_LogGenerationMismatch);
    assert_detail_has(p);
    assert_detail_has("generation 5");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_header_round_trips_every_field_in_both_copies),
        T(test_header_of_another_version_or_page_size_is_refused),
        T(test_torn_header_copy_is_repaired_from_the_other),
        T(test_header_copies_that_differ_resolve_to_the_primary),
        T(test_header_with_both_copies_damaged_is_refused_naming_the_file),
        T(test_file_that_is_not_a_database_is_invalid_database),
        T(test_data_page_checksum_is_bound_to_its_page_number),
        T(test_log_segment_round_trips_and_detects_damage),
        T(test_log_segment_with_impossible_fields_is_bad_even_with_a_good_checksum),
        T(test_records_decode_back_to_what_was_encoded),
        T(test_record_stream_cut_at_any_byte_ends_cleanly_after_its_whole_records),
        T(test_record_stream_ending_mid_record_is_its_end),
        T(test_garbage_where_a_record_should_start_is_log_corruption),
        T(test_random_damage_to_records_never_reads_outside_the_stream),
        T(test_clean_log_generation_returns_its_whole_stream),
        T(test_log_generation_filled_to_its_last_slot_is_read_whole),
        T(test_log_stream_ends_before_stale_and_zeroed_segments),
        T(test_torn_last_flush_is_dropped_whole),
        T(test_data_after_a_gap_from_a_later_flush_is_log_corruption),
        T(test_segment_that_does_not_continue_the_stream_is_log_corruption),
        T(test_log_file_of_the_wrong_size_is_refused),
        T(test_log_file_with_a_damaged_header_is_log_corruption),
        T(test_checkpoint_survives_one_damaged_copy_and_not_two),
        T(test_checkpoint_copies_that_differ_resolve_to_the_first),
        T(test_crashed_database_recovers_every_committed_transaction),
        T(test_generations_before_the_checkpoint_are_not_needed),
        T(test_generation_of_another_database_is_database_log_set_mismatch),
        T(test_generation_that_does_not_chain_to_the_previous_is_invalid_log_sequence),
        T(test_missing_middle_generation_is_missing_log_file),
        T(test_missing_checkpoint_generation_is_required_log_files_missing),
        T(test_generation_under_another_name_is_log_generation_mismatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
