/* The check library as the backup application relies on it: an intact set passes; each kind of
 * damage fails with ESE's error and names the page or generation; damage the set does not need
 * is reported without failing it; the sequence and completeness rules hold. Databases are made
 * by the engine on the in-memory VFS (tests/support/crashvfs.h). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/error.h"
#include "check/check.h"
#include "crashvfs.h"
#include "engine/engine.h"
#include "engine/format.h"

static const char *EDB = "/db/mail.edb";
static const char *LOGS = "/db/logs";

typedef struct fixture {
    crashvfs *c;
    om_vfs *v;
    uint32_t pages;    /* data pages the header counts */
    uint32_t last_gen; /* newest finished generation */
    uint32_t req_min;  /* the header's Log Required min after the crash */
} fixture;

static eng_opts opts(fixture *f, const char *edb, const char *logs)
{
    eng_opts o = {0};
    o.vfs = f->v;
    o.edb_path = edb;
    o.log_dir = logs;
    o.base = "E00";
    o.no_reserve_logs = 1;
    o.checkpoint_gens = 1000; /* only the explicit checkpoint below */
    return o;
}

/* A database of 40 pages over about 12 generations, left in Dirty Shutdown (the process died),
 * with a checkpoint well after the first generation so older generations are not needed. */
static void make_db(fixture *f, const char *edb, const char *logs, uint8_t seed)
{
    eng_opts o = opts(f, edb, logs);
    eng_db *db = NULL;
    uint8_t body[1000];
    assert_int_equal(eng_db_create(&o, &db), 0);
    for (int i = 0; i < 40; i++) {
        eng_txn *t = NULL;
        uint32_t pgno;
        memset(body, seed + i, sizeof body);
        assert_int_equal(eng_txn_begin(db, &t), 0);
        assert_int_equal(eng_page_alloc(t, 7, &pgno), 0);
        assert_int_equal(eng_page_write(t, pgno, 0, body, sizeof body), 0);
        assert_int_equal(eng_txn_commit(t, 0), 0);
        if (i % 4 == 3) assert_int_equal(eng_db_roll_log(db), 0);
        if (i == 23) assert_int_equal(eng_checkpoint(db), 0);
    }
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    f->last_gen = in.gen_current - 1;
    eng_db_abandon(db);
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(f->v, edb, &h, 0, NULL), 0);
    f->req_min = h.log_req_min;
    f->pages = h.pages; /* as of the checkpoint: what the header counts */
    assert_true(f->pages > 10);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->c = crashvfs_new(7);
    f->v = crashvfs_vfs(f->c);
    assert_int_equal(f->v->mkdir(f->v, "/db"), 0);
    make_db(f, EDB, LOGS, 1);
    assert_true(f->req_min > 2 && f->req_min + 2 < f->last_gen);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    crashvfs_free(f->c);
    free(f);
    return 0;
}

static void flip(fixture *f, const char *path, uint64_t off)
{
    om_file *h = NULL;
    uint8_t b;
    assert_int_equal(om_open(f->v, path, 0, &h), 0);
    assert_int_equal(om_pread_full(h, &b, 1, off), 0);
    b ^= 0x10;
    assert_int_equal(om_pwrite(h, &b, 1, off), 0);
    om_close(h);
}

static void gen_path(char *p, uint32_t gen)
{
    eng_log_path(p, 4200, LOGS, "E00", gen);
}

static chk_set *init(fixture *f)
{
    chk_set *s = NULL;
    const char *edb[] = {EDB};
    assert_int_equal(chk_init(edb, 1, LOGS, "E00", f->v, &s), 0);
    return s;
}

typedef struct seen_pages {
    uint32_t bad_pgno;
    int bad_err, bad_count;
    uint64_t expected, actual;
    uint32_t initialised;
} seen_pages;

static void on_page(void *arg, const chk_page_report *r)
{
    seen_pages *sp = arg;
    if (r->initialised) __atomic_fetch_add(&sp->initialised, 1, __ATOMIC_RELAXED);
    if (!r->err) return;
    sp->bad_pgno = r->pgno;
    sp->bad_err = r->err;
    sp->bad_count++;
    sp->expected = r->expected;
    sp->actual = r->actual;
}

/* The whole sequence; returns chk_term's verdict. */
static int run_all(fixture *f, chk_logs *lg)
{
    chk_set *s = init(f);
    chk_headers h;
    chk_logs dummy;
    if (chk_check_headers(s, &h) == 0)
        chk_check_pages(s, 0, 1, h.ndb ? chk_db(s, 0)->pages : 0, NULL, NULL);
    chk_check_logs(s, NULL, NULL, lg ? lg : &dummy);
    return chk_term(s);
}

static void init_refuses_an_empty_target_set_and_a_log_folder_without_base(void **state)
{
    fixture *f = *state;
    chk_set *s = NULL;
    assert_int_equal(chk_init(NULL, 0, NULL, NULL, f->v, &s), OM_E_InvalidParameter);
    assert_null(s);
    assert_int_equal(chk_init(NULL, 0, LOGS, NULL, f->v, &s), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "without a log base name"));
    assert_int_equal(chk_init(NULL, 0, LOGS, "E0", f->v, &s), OM_E_InvalidParameter);
}

typedef struct half {
    chk_set *s;
    uint32_t first, count;
    seen_pages *sp;
    int rc;
} half;

static void *check_half(void *arg)
{
    half *h = arg;
    h->rc = chk_check_pages(h->s, 0, h->first, h->count, on_page, h->sp);
    return NULL;
}

static void an_intact_set_passes_with_pages_checked_from_two_threads(void **state)
{
    fixture *f = *state;
    chk_set *s = init(f);
    chk_headers h;
    assert_int_equal(chk_check_headers(s, &h), 0);
    assert_int_equal(h.ndb, 1);
    assert_int_equal(h.page_size, 32768);
    assert_int_equal(h.header_pages, 2);
    assert_int_equal(h.need_min, f->req_min);
    const chk_db_info *d = chk_db(s, 0);
    assert_int_equal(d->state, ENG_STATE_DIRTY);
    assert_int_equal(d->pages, f->pages);
    /* two threads over overlapping halves: every page counts once */
    seen_pages sp = {0};
    half a = {s, 1, d->pages / 2 + 3, &sp, -1}, b = {s, d->pages / 2, d->pages / 2 + 1, &sp, -1};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, check_half, &a);
    pthread_create(&tb, NULL, check_half, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, 0);
    assert_int_equal(sp.bad_count, 0);
    uint64_t checked, total;
    chk_page_totals(s, &checked, &total);
    assert_int_equal(checked, d->pages);
    chk_logs lg;
    assert_int_equal(chk_check_logs(s, NULL, NULL, &lg), 0);
    assert_int_equal(lg.lowest, 1);
    assert_int_equal(lg.need_min, f->req_min);
    assert_true(lg.need_max >= f->last_gen);
    assert_int_equal(lg.bad_unneeded, 0);
    assert_int_equal(chk_term(s), 0);
}

static void a_flipped_bit_in_a_page_is_read_verify_failure_naming_the_page(void **state)
{
    fixture *f = *state;
    flip(f, EDB, eng_page_offset(5) + 4000);
    chk_set *s = init(f);
    chk_headers h;
    assert_int_equal(chk_check_headers(s, &h), 0);
    seen_pages sp = {0};
    assert_int_equal(chk_check_pages(s, 0, 1, f->pages, on_page, &sp), OM_E_ReadVerifyFailure);
    assert_non_null(strstr(om_err_detail(), "page 5"));
    assert_int_equal(sp.bad_count, 1);
    assert_int_equal(sp.bad_pgno, 5);
    assert_int_not_equal(sp.expected, sp.actual);
    chk_logs lg;
    assert_int_equal(chk_check_logs(s, NULL, NULL, &lg), 0);
    assert_int_equal(chk_term(s), OM_E_ReadVerifyFailure);
}

static void term_fails_when_pages_or_logs_were_not_all_checked(void **state)
{
    fixture *f = *state;
    chk_set *s = init(f);
    chk_headers h;
    chk_logs lg;
    assert_int_equal(chk_check_headers(s, &h), 0);
    assert_int_equal(chk_check_pages(s, 0, 1, f->pages - 1, NULL, NULL), 0);
    assert_int_equal(chk_check_logs(s, NULL, NULL, &lg), 0);
    assert_int_equal(chk_term(s), OM_E_DatabaseInvalidPages);
    char want[64];
    snprintf(want, sizeof want, "%u of its %u pages", f->pages - 1, f->pages);
    assert_non_null(strstr(om_err_detail(), want));

    s = init(f);
    assert_int_equal(chk_check_headers(s, &h), 0);
    assert_int_equal(chk_check_pages(s, 0, 1, f->pages, NULL, NULL), 0);
    assert_int_equal(chk_term(s), OM_E_LogFileNotCopied);
}

static void steps_out_of_order_are_refused(void **state)
{
    fixture *f = *state;
    chk_set *s = init(f);
    assert_int_equal(chk_check_pages(s, 0, 1, 1, NULL, NULL), OM_E_InvalidBackupSequence);
    assert_int_equal(chk_term(s), OM_E_InvalidBackupSequence);
    s = init(f);
    chk_headers h;
    assert_int_equal(chk_check_headers(s, &h), 0);
    assert_int_equal(chk_check_pages(s, 0, f->pages, 2, NULL, NULL), OM_E_InvalidParameter);
    chk_term(s);
}

static void damage_in_a_needed_generation_fails_and_in_an_older_one_is_only_reported(void **state)
{
    fixture *f = *state;
    char p[4200];
    gen_path(p, 1); /* older than the checkpoint: not needed */
    flip(f, p, 2 * ENG_SLOT_SIZE + 200);
    chk_logs lg;
    assert_int_equal(run_all(f, &lg), 0);
    assert_int_equal(lg.bad_unneeded, 1);
    gen_path(p, f->req_min);
    flip(f, p, 1 * ENG_SLOT_SIZE + 200);
    assert_int_equal(run_all(f, &lg), OM_E_LogFileCorrupt);
    char want[64];
    snprintf(want, sizeof want, "generation %u: segment in slot 1", f->req_min);
    assert_non_null(strstr(om_err_detail(), want));
}

static void a_missing_middle_generation_is_missing_log_file(void **state)
{
    fixture *f = *state;
    char p[4200];
    gen_path(p, f->req_min + 1);
    assert_int_equal(f->v->unlink(f->v, p), 0);
    assert_int_equal(run_all(f, NULL), OM_E_MissingLogFile);
    char want[64];
    snprintf(want, sizeof want, "generation %u missing", f->req_min + 1);
    assert_non_null(strstr(om_err_detail(), want));
}

static void a_truncated_generation_is_log_file_size_mismatch(void **state)
{
    fixture *f = *state;
    char p[4200];
    gen_path(p, f->req_min);
    om_file *h = NULL;
    assert_int_equal(om_open(f->v, p, 0, &h), 0);
    assert_int_equal(om_resize(h, 300000), 0);
    om_close(h);
    assert_int_equal(run_all(f, NULL), OM_E_LogFileSizeMismatch);
}

/* Rewrites the header of a log file through fn (a valid header: only what fn changes). */
static void edit_loghdr(fixture *f, const char *path, void (*fn)(eng_loghdr *))
{
    uint8_t slot[ENG_SLOT_SIZE];
    om_file *h = NULL;
    eng_loghdr lh;
    assert_int_equal(om_open(f->v, path, 0, &h), 0);
    assert_int_equal(om_pread_full(h, slot, sizeof slot, 0), 0);
    assert_int_equal(eng_loghdr_decode(slot, &lh), 0);
    fn(&lh);
    eng_loghdr_encode(&lh, slot);
    assert_int_equal(om_pwrite(h, slot, sizeof slot, 0), 0);
    om_close(h);
}

static void other_stream(eng_loghdr *h)
{
    h->log_sig.random ^= 0x5A5A;
}

static void a_generation_of_another_stream_of_this_database_is_bad_log_signature(void **state)
{
    fixture *f = *state;
    char p[4200];
    gen_path(p, f->req_min + 1);
    edit_loghdr(f, p, other_stream);
    assert_int_equal(run_all(f, NULL), OM_E_BadLogSignature);
    assert_non_null(strstr(om_err_detail(), p));
}

static void a_generation_and_a_database_of_another_log_set_fail(void **state)
{
    fixture *f = *state;
    assert_int_equal(f->v->mkdir(f->v, "/other"), 0);
    fixture g = *f;
    make_db(&g, "/other/mail.edb", "/other/logs", 9);
    /* the other database's generation in place of one of ours: of another stream too, the
     * database is the answer (log.h's order), as recovery and hard recovery say */
    char ours[4200], theirs[4200];
    gen_path(ours, f->req_min + 1);
    eng_log_path(theirs, sizeof theirs, "/other/logs", "E00", f->req_min + 1);
    assert_int_equal(f->v->unlink(f->v, ours), 0);
    assert_int_equal(f->v->rename(f->v, theirs, ours), 0);
    assert_int_equal(run_all(f, NULL), OM_E_DatabaseLogSetMismatch);
    assert_non_null(strstr(om_err_detail(), ours));
    /* the other database with our logs */
    chk_set *s = NULL;
    const char *edb[] = {"/other/mail.edb"};
    chk_headers h;
    chk_logs lg;
    assert_int_equal(chk_init(edb, 1, LOGS, "E00", f->v, &s), 0);
    assert_int_equal(chk_check_headers(s, &h), 0);
    assert_int_equal(chk_check_pages(s, 0, 1, chk_db(s, 0)->pages, NULL, NULL), 0);
    assert_int_equal(chk_check_logs(s, NULL, NULL, &lg), OM_E_DatabaseLogSetMismatch);
    assert_int_equal(chk_term(s), OM_E_DatabaseLogSetMismatch);
    /* two databases of different log sets in one check */
    const char *both[] = {EDB, "/other/mail.edb"};
    assert_int_equal(chk_init(both, 2, NULL, NULL, f->v, &s), 0);
    assert_int_equal(chk_check_headers(s, &h), OM_E_DatabaseLogSetMismatch);
    chk_term(s);
}

static void expected_generations_beyond_the_logs_are_required_log_files_missing(void **state)
{
    fixture *f = *state;
    chk_set *s = init(f);
    chk_headers h;
    chk_logs lg;
    assert_int_equal(chk_expect_logs(s, f->req_min, f->last_gen + 5), 0);
    assert_int_equal(chk_check_headers(s, &h), 0);
    assert_int_equal(chk_check_pages(s, 0, 1, f->pages, NULL, NULL), 0);
    assert_int_equal(chk_check_logs(s, NULL, NULL, &lg), OM_E_RequiredLogFilesMissing);
    assert_int_equal(chk_term(s), OM_E_RequiredLogFilesMissing);
}

static void a_damaged_header_copy_passes_and_both_copies_fail(void **state)
{
    fixture *f = *state;
    flip(f, EDB, 600);
    chk_set *s = init(f);
    chk_headers h;
    assert_int_equal(chk_check_headers(s, &h), 0);
    assert_int_equal(chk_db(s, 0)->damaged_header_copy, 0);
    chk_term(s);
    flip(f, EDB, ENG_PAGE_SIZE + 600);
    assert_int_equal(run_all(f, NULL), OM_E_ReadVerifyFailure);
}

static void a_database_cut_short_is_beyond_eof(void **state)
{
    fixture *f = *state;
    om_file *h = NULL;
    assert_int_equal(om_open(f->v, EDB, 0, &h), 0);
    assert_int_equal(om_resize(h, eng_page_offset(f->pages - 2)), 0);
    om_close(h);
    assert_int_equal(run_all(f, NULL), OM_E_FileIOBeyondEOF);
    assert_non_null(strstr(om_err_detail(), "cut short"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(init_refuses_an_empty_target_set_and_a_log_folder_without_base),
        T(an_intact_set_passes_with_pages_checked_from_two_threads),
        T(a_flipped_bit_in_a_page_is_read_verify_failure_naming_the_page),
        T(term_fails_when_pages_or_logs_were_not_all_checked),
        T(steps_out_of_order_are_refused),
        T(damage_in_a_needed_generation_fails_and_in_an_older_one_is_only_reported),
        T(a_missing_middle_generation_is_missing_log_file),
        T(a_truncated_generation_is_log_file_size_mismatch),
        T(a_generation_of_another_stream_of_this_database_is_bad_log_signature),
        T(a_generation_and_a_database_of_another_log_set_fail),
        T(expected_generations_beyond_the_logs_are_required_log_files_missing),
        T(a_damaged_header_copy_passes_and_both_copies_fail),
        T(a_database_cut_short_is_beyond_eof),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
