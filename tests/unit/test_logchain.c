/* The log chain (engine/log.h): one error per cause, and one fixed order of checks, whatever
 * else is wrong with the file; the stream lister's verdicts on the current log. Generation files
 * are written by hand (header and segments) on the in-memory VFS, so each one has exactly the
 * faults a test gives it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/error.h"
#include "crashvfs.h"
#include "engine/log.h"

#define DIR "/logs"

static const eng_sig DB = {0x1111, 100}, STREAM = {0x2222, 200};
static const eng_sig OTHER_DB = {0x3333, 300}, OTHER_STREAM = {0x4444, 400};

typedef struct gen_spec {
    uint32_t gen;    /* in the header */
    eng_sig db, log; /* signatures in the header */
    uint64_t created, prev_created;
    uint32_t prev_end;
    int segments;     /* good segments of 100 bytes, one flush each */
    int damage_first; /* garble segment 1 (the later ones stay good: durable data damaged) */
    int bad_header;   /* flip a byte of the header */
    uint64_t size;    /* file size (0: 1 MiB) */
} gen_spec;

/* Generation g of the good chain: created at 1000 * g, following g - 1 and its 3 segments. */
static gen_spec good(uint32_t g)
{
    return (gen_spec){.gen = g,
                      .db = DB,
                      .log = STREAM,
                      .created = 1000ull * g,
                      .prev_created = g > 1 ? 1000ull * (g - 1) : 0,
                      .prev_end = g > 1 ? 300 : 0,
                      .segments = 3};
}

static void write_gen(om_vfs *v, const char *path, const gen_spec *s)
{
    uint8_t *f = calloc(1, ENG_LOG_SIZE);
    eng_loghdr h = {.version = ENG_FORMAT_VERSION,
                    .gen = s->gen,
                    .log_sig = s->log,
                    .created = s->created,
                    .prev_created = s->prev_created,
                    .page_size = ENG_PAGE_SIZE,
                    .db_sig = s->db,
                    .prev_end = s->prev_end};
    memcpy(h.base, "E00", 4);
    eng_loghdr_encode(&h, f);
    uint8_t payload[100];
    for (int i = 0; i < s->segments; i++) {
        uint16_t slot = (uint16_t)(1 + i);
        memset(payload, 'a' + i, sizeof payload);
        eng_seghdr sh = {.gen = s->gen,
                         .slot = slot,
                         .data_len = sizeof payload,
                         .stream_off = (uint32_t)(100 * i),
                         .flush_first = slot};
        eng_seg_encode(&sh, payload, f + (size_t)slot * ENG_SLOT_SIZE);
    }
    if (s->damage_first) f[ENG_SLOT_SIZE + 50] ^= 0x40;
    if (s->bad_header) f[60] ^= 0x40;
    assert_int_equal(om_write_file_durable(v, path, f, s->size ? s->size : ENG_LOG_SIZE), 0);
    free(f);
}

static char *gen_path(uint32_t g)
{
    static char p[8][256];
    static int k;
    char *out = p[k++ % 8];
    eng_log_path(out, 256, DIR, "E00", g);
    return out;
}

typedef struct fx {
    crashvfs *c;
    om_vfs *v;
    eng_chain_want w; /* expects generation 5 of DB/STREAM after generation 4 (300 bytes) */
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->c = crashvfs_new(3);
    f->v = crashvfs_vfs(f->c);
    assert_int_equal(f->v->mkdir(f->v, DIR), 0);
    eng_dbhdr h = {.db_sig = DB, .log_sig = STREAM};
    eng_chain_of_db(&f->w, &h, "/db/mail.edb", 4);
    gen_spec four = good(4);
    write_gen(f->v, gen_path(4), &four);
    eng_genread g;
    assert_int_equal(eng_gen_continues(f->v, gen_path(4), &f->w, &g, NULL), 0);
    eng_chain_follow(&f->w, gen_path(4), &g);
    eng_gen_free(&g);
    assert_int_equal(f->w.gen, 5);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    crashvfs_free(f->c);
    free(f);
    return 0;
}

/* Writes generation 5's file as s says and asks the chain about it. */
static int ask(fx *f, const gen_spec *s, eng_chain_cause *why)
{
    write_gen(f->v, gen_path(5), s);
    eng_genread g;
    int rc = eng_gen_continues(f->v, gen_path(5), &f->w, &g, why);
    eng_gen_free(&g);
    return rc;
}

static void expect(fx *f, const gen_spec *s, int err, eng_chain_cause cause, const char *names)
{
    eng_chain_cause why = ENG_CHAIN_OK;
    int rc = ask(f, s, &why);
    if (rc != err || why != cause)
        fail_msg("got %d (%s), expected %d (%s): %s", rc, eng_chain_cause_name(why), err,
                 eng_chain_cause_name(cause), om_err_detail());
    if (names && !strstr(om_err_detail(), names))
        fail_msg("the detail does not name %s: %s", names, om_err_detail());
}

/* ---- one error per cause ---- */

static void the_next_generation_continues_the_chain(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    expect(f, &s, 0, ENG_CHAIN_OK, NULL);
}

static void a_missing_file_is_missing_log_file(void **state)
{
    fx *f = *state;
    eng_genread g;
    eng_chain_cause why;
    assert_int_equal(eng_gen_continues(f->v, gen_path(5), &f->w, &g, &why), OM_E_MissingLogFile);
    eng_gen_free(&g);
    assert_int_equal(why, ENG_CHAIN_MISSING);
    assert_non_null(strstr(om_err_detail(), gen_path(5)));
    assert_non_null(strstr(om_err_detail(), "generation 5"));
}

static void a_file_cut_short_is_log_file_size_mismatch(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.size = 700000;
    expect(f, &s, OM_E_LogFileSizeMismatch, ENG_CHAIN_SIZE, gen_path(5));
}

static void a_damaged_header_is_log_file_corrupt(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.bad_header = 1;
    expect(f, &s, OM_E_LogFileCorrupt, ENG_CHAIN_HEADER, gen_path(5));
}

static void another_databases_file_is_database_log_set_mismatch(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.db = OTHER_DB;
    expect(f, &s, OM_E_DatabaseLogSetMismatch, ENG_CHAIN_OTHER_DB, gen_path(5));
    assert_non_null(strstr(om_err_detail(), "/db/mail.edb"));
}

static void another_stream_of_the_database_is_bad_log_signature(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.log = OTHER_STREAM;
    expect(f, &s, OM_E_BadLogSignature, ENG_CHAIN_OTHER_STREAM, gen_path(5));
}

static void another_generation_under_the_name_is_log_generation_mismatch(void **state)
{
    fx *f = *state;
    gen_spec s = good(6);
    expect(f, &s, OM_E_LogGenerationMismatch, ENG_CHAIN_NAME, gen_path(5));
    assert_non_null(strstr(om_err_detail(), "holds generation 6"));
}

static void a_file_following_another_generation_is_invalid_log_sequence(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.prev_created += 1;
    expect(f, &s, OM_E_InvalidLogSequence, ENG_CHAIN_SEQUENCE, gen_path(5));
    /* The current log (E00.log) has no name to say its generation: another one than the chain
     * expects is out of sequence. */
    f->w.named = 0;
    s = good(6);
    expect(f, &s, OM_E_InvalidLogSequence, ENG_CHAIN_SEQUENCE, gen_path(5));
}

static void a_previous_generation_cut_short_is_log_file_corrupt_naming_it(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.prev_end = 400; /* generation 4 was read with 300 bytes */
    expect(f, &s, OM_E_LogFileCorrupt, ENG_CHAIN_PREV_CUT, gen_path(4));
    assert_non_null(strstr(om_err_detail(), "ended at 400"));
    /* Checked ahead, before generation 4 is used: the same error, nothing else. */
    assert_int_equal(eng_chain_check_ahead(f->v, &f->w, gen_path(5), 1), OM_E_LogFileCorrupt);
    s.prev_end = 300;
    s.log = OTHER_STREAM; /* reported when generation 5 itself is read */
    write_gen(f->v, gen_path(5), &s);
    assert_int_equal(eng_chain_check_ahead(f->v, &f->w, gen_path(5), 1), 0);
}

static void damaged_data_is_log_file_corrupt_naming_the_slot(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.damage_first = 1;
    expect(f, &s, OM_E_LogFileCorrupt, ENG_CHAIN_DAMAGED, gen_path(5));
    assert_non_null(strstr(om_err_detail(), "slot 1"));
}

/* ---- the order ---- */

static void who_the_file_is_comes_before_what_it_holds(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    /* another database, another stream, out of sequence, misnamed, damaged: the database */
    s.db = OTHER_DB;
    s.log = OTHER_STREAM;
    s.prev_created += 7;
    s.damage_first = 1;
    expect(f, &s, OM_E_DatabaseLogSetMismatch, ENG_CHAIN_OTHER_DB, gen_path(5));
    s.gen = 9;
    expect(f, &s, OM_E_DatabaseLogSetMismatch, ENG_CHAIN_OTHER_DB, gen_path(5));
    /* of this database: the stream */
    s.db = DB;
    expect(f, &s, OM_E_BadLogSignature, ENG_CHAIN_OTHER_STREAM, gen_path(5));
    /* of this stream: the name, then the sequence, then the previous one's end, then damage */
    s.log = STREAM;
    s.prev_end = 999;
    expect(f, &s, OM_E_LogGenerationMismatch, ENG_CHAIN_NAME, gen_path(5));
    s.gen = 5;
    expect(f, &s, OM_E_InvalidLogSequence, ENG_CHAIN_SEQUENCE, gen_path(5));
    s.prev_created = good(5).prev_created;
    expect(f, &s, OM_E_LogFileCorrupt, ENG_CHAIN_PREV_CUT, gen_path(4));
    s.prev_end = 300;
    expect(f, &s, OM_E_LogFileCorrupt, ENG_CHAIN_DAMAGED, gen_path(5));
}

static void a_file_that_is_not_a_log_says_so_before_whose_it_is(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.db = OTHER_DB;
    s.size = 4096 * 3;
    expect(f, &s, OM_E_LogFileSizeMismatch, ENG_CHAIN_SIZE, gen_path(5));
    s.size = 0;
    s.bad_header = 1;
    expect(f, &s, OM_E_LogFileCorrupt, ENG_CHAIN_HEADER, gen_path(5));
}

static void without_a_previous_generation_only_the_file_itself_is_judged(void **state)
{
    fx *f = *state;
    gen_spec s = good(5);
    s.prev_created = 12345; /* its predecessor is not known: not judged */
    s.prev_end = 99999;
    eng_chain_forget_prev(&f->w);
    expect(f, &s, 0, ENG_CHAIN_OK, NULL);
    /* nor the database or stream when the caller has none to give */
    f->w.check_db = f->w.check_stream = 0;
    s.db = OTHER_DB;
    s.log = OTHER_STREAM;
    expect(f, &s, 0, ENG_CHAIN_OK, NULL);
}

/* ---- the lister ---- */

static void the_lister_describes_a_current_log_that_does_not_end_the_stream(void **state)
{
    fx *f = *state;
    char cur[256];
    eng_cur_log_path(cur, sizeof cur, DIR, "E00");
    eng_stream st;
    /* E00.log holding generation 4, which is already finished */
    gen_spec s = good(4);
    write_gen(f->v, cur, &s);
    assert_int_equal(eng_stream_scan(f->v, DIR, "E00", &st), 0);
    assert_true(st.cur_present && st.cur_gen == 0 && st.cur_holds == 4);
    assert_int_equal(st.cur_err, OM_E_InvalidLogSequence);
    eng_stream_free(&st);
    assert_int_equal(eng_stream_list(f->v, DIR, "E00", &st), OM_E_InvalidLogSequence);
    assert_non_null(strstr(om_err_detail(), "already finished"));
    /* an unreadable one */
    s = good(5);
    s.bad_header = 1;
    write_gen(f->v, cur, &s);
    assert_int_equal(eng_stream_scan(f->v, DIR, "E00", &st), 0);
    assert_true(st.cur_present && st.cur_gen == 0 && st.cur_holds == 0);
    assert_int_equal(st.cur_err, OM_E_LogFileCorrupt);
    assert_int_equal(st.n, 1);
    eng_stream_free(&st);
    assert_int_equal(eng_stream_list(f->v, DIR, "E00", &st), OM_E_LogFileCorrupt);
    assert_non_null(strstr(om_err_detail(), cur));
    /* the next generation: it ends the stream */
    s.bad_header = 0;
    write_gen(f->v, cur, &s);
    assert_int_equal(eng_stream_list(f->v, DIR, "E00", &st), 0);
    assert_true(st.cur_gen == 5 && eng_stream_last(&st) == 5 && eng_stream_first(&st) == 4);
    eng_chain_want w;
    assert_int_equal(eng_chain_of_stream(&w, &st), 1); /* a folder read without its database */
    assert_true(w.check_db && w.check_stream && eng_sig_eq(&w.db_sig, &DB) &&
                eng_sig_eq(&w.log_sig, &STREAM));
    eng_stream_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(the_next_generation_continues_the_chain),
        T(a_missing_file_is_missing_log_file),
        T(a_file_cut_short_is_log_file_size_mismatch),
        T(a_damaged_header_is_log_file_corrupt),
        T(another_databases_file_is_database_log_set_mismatch),
        T(another_stream_of_the_database_is_bad_log_signature),
        T(another_generation_under_the_name_is_log_generation_mismatch),
        T(a_file_following_another_generation_is_invalid_log_sequence),
        T(a_previous_generation_cut_short_is_log_file_corrupt_naming_it),
        T(damaged_data_is_log_file_corrupt_naming_the_slot),
        T(who_the_file_is_comes_before_what_it_holds),
        T(a_file_that_is_not_a_log_says_so_before_whose_it_is),
        T(without_a_previous_generation_only_the_file_itself_is_judged),
        T(the_lister_describes_a_current_log_that_does_not_end_the_stream),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
