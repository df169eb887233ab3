/* The close that closes its last generation (eng_db_close_gen), as a switchover uses it: the
 * active dismounts, every generation it wrote is a finished file, the passive copy gets them
 * all and replays them. What a user relies on: the copy, mounted, holds every commit the active
 * made and goes on with the next generation of the same stream; the old active, mounted again
 * (an aborted switchover), does the same; a crash anywhere in the close loses no commit and
 * leaves files that mount. */
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
#include "vfsfile.h"
#include "engine/engine.h"
#include "engine/format.h"

#define NP 16u /* data pages */

/* The last value each page got, as the committed transactions left it. */
typedef struct model {
    uint32_t val[NP + 1];
} model;

static eng_opts opts_at(om_vfs *v, const char *edb, const char *logs)
{
    eng_opts o = {0};
    o.vfs = v;
    o.edb_path = edb;
    o.log_dir = logs;
    o.base = "E00";
    o.no_reserve_logs = 1;
    return o;
}

/* Transaction k writes its number into page 1 + k % NP; 0 once durable. */
static int commit_k(eng_db *db, uint32_t k)
{
    eng_txn *t = NULL;
    int rc = eng_txn_begin(db, &t);
    if (rc) return rc;
    rc = eng_page_write(t, 1 + k % NP, 0, &k, sizeof k);
    if (rc) {
        eng_txn_rollback(t);
        return rc;
    }
    return eng_txn_commit(t, 0);
}

static void commit_into(eng_db *db, model *m, uint32_t k)
{
    assert_int_equal(commit_k(db, k), 0);
    m->val[1 + k % NP] = k;
}

/* The pages hold what m says; transaction maybe (0: none), whose commit did not return, may be
 * there or not. */
static void assert_holds_maybe(eng_db *db, const model *m, uint32_t maybe, const char *what)
{
    static uint8_t body[ENG_PAGE_BODY];
    for (uint32_t pg = 1; pg <= NP; pg++) {
        uint32_t v;
        assert_int_equal(eng_page_read(db, pg, body), 0);
        memcpy(&v, body, sizeof v);
        if (v != m->val[pg] && !(maybe && v == maybe && pg == 1 + maybe % NP))
            fail_msg("%s: page %u holds transaction %u's value, not %u's", what, pg, v, m->val[pg]);
    }
}

static void assert_holds(eng_db *db, const model *m, const char *what)
{
    assert_holds_maybe(db, m, 0, what);
}

static void create_with_pages(eng_opts *o, eng_db **db)
{
    assert_int_equal(eng_db_create(o, db), 0);
    eng_txn *t = NULL;
    uint32_t pg;
    assert_int_equal(eng_txn_begin(*db, &t), 0);
    for (uint32_t i = 0; i < NP; i++)
        assert_int_equal(eng_page_alloc(t, 7, &pg), 0);
    assert_int_equal(eng_txn_commit(t, 0), 0);
}

static uint32_t gen_now(eng_db *db)
{
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    return in.gen_current;
}

static void ship_gen(om_vfs *v, const char *from_dir, const char *to_dir, uint32_t g)
{
    char a[256], b[256];
    eng_log_path(a, sizeof a, from_dir, "E00", g);
    eng_log_path(b, sizeof b, to_dir, "E00", g);
    assert_int_equal(tst_copy_file(v, a, b), 0);
}

/* The folder's E00.log is generation g + 1 of stream sig, chained to numbered generation g. */
static void assert_goes_on(om_vfs *v, const char *logs, uint32_t g, const eng_sig *sig)
{
    char cur[256], prev[256];
    eng_loghdr h, p;
    eng_cur_log_path(cur, sizeof cur, logs, "E00");
    eng_log_path(prev, sizeof prev, logs, "E00", g);
    assert_int_equal(eng_loghdr_read(v, cur, &h), 0);
    assert_int_equal(eng_loghdr_read(v, prev, &p), 0);
    if (h.gen != g + 1) fail_msg("%s: generation %u started, not %u", logs, h.gen, g + 1);
    assert_true(eng_sig_eq(&h.log_sig, sig));
    assert_true(eng_sig_eq(&p.log_sig, sig));
    assert_int_equal(h.prev_created, p.created);
}

/* The switchover: the active closes its last generation, the passive copy (seeded from a clean
 * dismount) gets every generation after its seed and replays them; mounted, it holds every
 * commit and starts the next generation. The old active mounted again does the same. */
static void a_closed_last_generation_ships_and_both_sides_go_on(void **s)
{
    (void)s;
    crashvfs *c = crashvfs_new(5);
    assert_non_null(c);
    om_vfs *v = crashvfs_vfs(c);
    assert_int_equal(v->mkdir(v, "/a"), 0);
    assert_int_equal(v->mkdir(v, "/p"), 0);
    assert_int_equal(v->mkdir(v, "/p/logs"), 0);
    eng_opts ao = opts_at(v, "/a/mail.edb", "/a/logs"), po = opts_at(v, "/p/p.edb", "/p/logs");
    eng_db *db = NULL;
    model m = {0};
    uint32_t k = 1;
    create_with_pages(&ao, &db);
    for (; k < 20; k++)
        commit_into(db, &m, k);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(tst_copy_file(v, "/a/mail.edb", "/p/p.edb"),
                     0); /* the seed: a clean dismount */
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(v, "/p/p.edb", &h, 0, NULL), 0);
    uint32_t seed_gen = h.consistent.gen;

    assert_int_equal(eng_db_open(&ao, &db), 0);
    for (int r = 0; r < 3; r++) {
        for (uint32_t i = 0; i < 15; i++, k++)
            commit_into(db, &m, k);
        assert_int_equal(eng_db_roll_log(db), 0);
    }
    for (uint32_t i = 0; i < 7; i++, k++) /* the last generation holds commits */
        commit_into(db, &m, k);
    uint32_t cur = gen_now(db), G = 0;
    assert_int_equal(eng_db_close_gen(db, &G), 0);
    assert_int_equal(G, cur);

    /* The active's folder: no E00.log, the last generation under its numbered name. */
    char p[256];
    eng_cur_log_path(p, sizeof p, "/a/logs", "E00");
    assert_int_equal(v->exists(v, p), 0);
    eng_log_path(p, sizeof p, "/a/logs", "E00", G);
    assert_int_equal(v->exists(v, p), 1);
    eng_info in;
    assert_int_equal(eng_db_inspect(&ao, &in), 0);
    assert_int_equal(in.state, ENG_STATE_CLEAN);
    assert_int_equal(in.gen_current, G);

    /* The copy gets every generation after its seed, the last one included, and replays them. */
    for (uint32_t g = seed_gen + 1; g <= G; g++)
        ship_gen(v, "/a/logs", "/p/logs", g);
    eng_passive *pv = NULL;
    eng_passive_state st;
    assert_int_equal(eng_passive_open(&po, &pv), 0);
    assert_int_equal(eng_passive_replay(pv, 0, &st), 0);
    assert_int_equal(st.last_replayed, G);
    assert_int_equal(eng_passive_close(pv), 0);
    assert_int_equal(eng_db_open(&po, &db), 0);
    assert_holds(db, &m, "the copy mounted after the switchover");
    assert_int_equal(gen_now(db), G + 1);
    assert_goes_on(v, "/p/logs", G, &h.log_sig);
    model pm = m;
    commit_into(db, &pm, 1000);
    assert_int_equal(eng_db_close(db), 0);

    /* An aborted switchover: the old active mounts its own files again and goes on. */
    assert_int_equal(eng_db_open(&ao, &db), 0);
    assert_holds(db, &m, "the old active mounted again");
    assert_int_equal(gen_now(db), G + 1);
    assert_goes_on(v, "/a/logs", G, &h.log_sig);
    commit_into(db, &m, k++);
    /* Closed twice in a row: each close finishes the generation its mount started. */
    uint32_t G2 = 0;
    assert_int_equal(eng_db_close_gen(db, &G2), 0);
    assert_int_equal(G2, G + 1);
    assert_int_equal(eng_db_open(&ao, &db), 0);
    assert_holds(db, &m, "the old active after a second closing close");
    assert_int_equal(gen_now(db), G + 2);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

/* A crash at every sync of a mount, a commit and the closing close: each commit that returned
 * is there after the reboot, and the files mount and go on with a new generation after the last
 * one on disk. */
static void a_crash_in_the_closing_close_loses_no_commit(void **s)
{
    (void)s;
    crashvfs *disk = crashvfs_new(11);
    assert_non_null(disk);
    om_vfs *dv = crashvfs_vfs(disk);
    assert_int_equal(dv->mkdir(dv, "/a"), 0);
    eng_opts o = opts_at(dv, "/a/mail.edb", "/a/logs");
    eng_db *db = NULL;
    model base = {0};
    create_with_pages(&o, &db);
    for (uint32_t k = 1; k < 30; k++)
        commit_into(db, &base, k);
    assert_int_equal(eng_db_roll_log(db), 0);
    commit_into(db, &base, 30);
    assert_int_equal(eng_db_close(db), 0);
    int crashes = 0;
    for (uint64_t n = 1;; n++) {
        crashvfs *c = crashvfs_clone(disk);
        assert_non_null(c);
        crashvfs_reseed(c, 100 + n);
        crashvfs_crash_at_sync(c, n);
        om_vfs *v = crashvfs_vfs(c);
        eng_opts co = opts_at(v, "/a/mail.edb", "/a/logs");
        model m = base;
        uint32_t G = 0, maybe = 0;
        db = NULL;
        int rc = eng_db_open(&co, &db);
        for (uint32_t k = 31; !rc && k < 34; k++)
            if (!(rc = commit_k(db, k)))
                m.val[1 + k % NP] = k;
            else
                maybe = k;
        if (!rc)
            rc = eng_db_close_gen(db, &G);
        else if (db)
            eng_db_abandon(db);
        db = NULL;
        if (!crashvfs_crashed(c)) {
            assert_int_equal(rc, 0);
            crashvfs_free(c);
            break;
        }
        crashes++;
        crashvfs_reboot(c);
        if (eng_db_open(&co, &db))
            fail_msg("mount after a crash at sync %llu: %s", (unsigned long long)n,
                     om_err_detail());
        assert_holds_maybe(db, &m, maybe, "after the crash");
        /* The new generation follows the last one on disk, whichever name it had. */
        eng_info in;
        assert_int_equal(eng_db_info(db, &in), 0);
        char p[256];
        eng_log_path(p, sizeof p, "/a/logs", "E00", in.gen_current - 1);
        assert_int_equal(v->exists(v, p), 1);
        assert_int_equal(commit_k(db, 99), 0);
        assert_int_equal(eng_db_close(db), 0);
        db = NULL;
        crashvfs_free(c);
    }
    assert_true(crashes >= 5);
    crashvfs_free(disk);
}

/* The close refuses to put the last generation over a file that is not that generation: the
 * database is closed cleanly all the same, E00.log stays, and the next mount goes on from it. */
static void a_foreign_file_at_the_last_name_is_never_replaced(void **s)
{
    (void)s;
    crashvfs *c = crashvfs_new(7);
    assert_non_null(c);
    om_vfs *v = crashvfs_vfs(c);
    assert_int_equal(v->mkdir(v, "/a"), 0);
    eng_opts o = opts_at(v, "/a/mail.edb", "/a/logs");
    eng_db *db = NULL;
    model m = {0};
    create_with_pages(&o, &db);
    commit_into(db, &m, 1);
    uint32_t cur = gen_now(db), G = 0;
    char p[256];
    eng_log_path(p, sizeof p, "/a/logs", "E00", cur);
    assert_int_equal(om_write_file_durable(v, p, "not a log", 9), 0);
    int rc = eng_db_close_gen(db, &G);
    assert_int_equal(rc, OM_E_LogWriteFail);
    assert_non_null(strstr(om_err_detail(), p));
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(om_read_file(v, p, &data, &n), 0);
    assert_int_equal(n, 9);
    free(data);
    assert_int_equal(v->unlink(v, p), 0);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_holds(db, &m, "after the refused close");
    assert_int_equal(gen_now(db), cur + 1);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_closed_last_generation_ships_and_both_sides_go_on),
        cmocka_unit_test(a_crash_in_the_closing_close_loses_no_commit),
        cmocka_unit_test(a_foreign_file_at_the_last_name_is_never_replaced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
