/* The change map (src/engine/changemap.c): the pages written since a full backup's freeze, as a
 * superset, and never trusted when it could be wrong.
 *
 * A "full" here is what a backup copies: the .edb's bytes right after eng_backup_freeze (pages
 * held, as the held provider does). A synthetic full is that copy with the pages the map names
 * read again from the .edb; it must equal the .edb.
 *
 * The crash harness (OMBRA_CBT_CRASH_POINTS, default 300; make crash-long runs more): power
 * lost at every sync of a workload that changes pages, checkpoints, remounts and takes a second
 * full (a second epoch) - so at every step of the map's update (E00.cbt written durably before
 * pages reach the .edb, the new token before the header gets it); after the reboot and
 * recovery, for every full whose epoch the map still knows, the synthetic full equals the
 * database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"
#include "crashvfs.h"
#include "engine/engine.h"
#include "engine/format.h"

#define EDB      "/db/mail.edb"
#define MAXPAGES 48

static const eng_opts base_opts = {
    .edb_path = EDB,
    .log_dir = "/db/logs",
    .base = "E00",
    .cache_bytes = 16 * ENG_PAGE_SIZE, /* small: checkpoints from cache pressure */
    .checkpoint_gens = 2,
};

typedef struct full {
    uint64_t epoch;
    uint8_t *edb; /* the copy */
    size_t n;
} full;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static eng_opts opts(om_vfs *v)
{
    eng_opts o = base_opts;
    o.vfs = v;
    return o;
}

/* One transaction writing n random pages (allocating while there are fewer than MAXPAGES). */
static int change(eng_db *db, uint64_t *s, int n)
{
    eng_txn *t = NULL;
    eng_info in;
    int rc = eng_db_info(db, &in);
    if (!rc) rc = eng_txn_begin(db, &t);
    if (rc) return rc;
    uint8_t buf[512];
    for (int i = 0; i < n && !rc; i++) {
        uint32_t pg = 0;
        if (in.pages < MAXPAGES && rnd(s) % 3 == 0)
            rc = eng_page_alloc(t, 1, &pg);
        else
            pg = in.pages ? 1 + (uint32_t)(rnd(s) % in.pages) : 0;
        if (!pg && !rc) rc = eng_page_alloc(t, 1, &pg);
        if (pg > in.pages) in.pages = pg;
        for (size_t b = 0; b < sizeof buf; b++)
            buf[b] = (uint8_t)rnd(s);
        if (!rc) rc = eng_page_write(t, pg, (uint32_t)(rnd(s) % 1000), buf, sizeof buf);
    }
    if (rc) {
        eng_txn_rollback(t);
        return rc;
    }
    return eng_txn_commit(t, 0);
}

/* A full backup's copy: hold, freeze (a new epoch), the .edb's bytes, thaw, release. */
static int take_full(eng_db *db, om_vfs *v, full *f)
{
    eng_lgpos mark;
    uint32_t last;
    eng_change_epoch ep[8];
    uint32_t n = 0;
    int rc = eng_hold_pages(db);
    if (rc) return rc;
    rc = eng_backup_freeze(db, ENG_BK_FULL, &mark, &last);
    if (!rc) {
        free(f->edb);
        f->edb = NULL;
        rc = om_read_file(v, EDB, &f->edb, &f->n);
        int rt = eng_backup_thaw(db);
        if (!rc) rc = rt;
    }
    if (!rc) rc = eng_db_change_epochs(db, ep, 8, &n, NULL, 0);
    f->epoch = !rc && n ? ep[n - 1].id : 0;
    int rr = eng_release_pages(db);
    return rc ? rc : rr;
}

/* 1 when the map knows f's epoch; then the synthetic full (f's copy, with the pages the map
 * names read from now) must equal the .edb now. *why gets a difference. The database is open,
 * checkpointed. */
static int synthetic_equal(eng_db *db, om_vfs *v, const full *f, int *known, char *why, size_t wn)
{
    uint32_t *runs = NULL, nr = 0;
    *known = 0;
    if (!f->epoch || eng_db_changed_pages(db, f->epoch, &runs, &nr)) {
        om_err_clear();
        return 1;
    }
    *known = 1;
    uint8_t *now = NULL;
    size_t nn = 0;
    int rc = om_read_file(v, EDB, &now, &nn), ok = 1;
    if (rc) {
        snprintf(why, wn, "reading the .edb: %s", om_err_detail());
        free(runs);
        return 0;
    }
    eng_info in;
    eng_db_info(db, &in);
    for (uint32_t p = 1; p <= in.pages && ok; p++) {
        int changed = 0;
        for (uint32_t r = 0; r < nr && !changed; r++)
            changed = p >= runs[2 * r] && p < runs[2 * r] + runs[2 * r + 1];
        uint64_t off = eng_page_offset(p);
        if (changed || off + ENG_PAGE_SIZE > nn) continue;
        if (off + ENG_PAGE_SIZE > f->n || memcmp(f->edb + off, now + off, ENG_PAGE_SIZE)) {
            snprintf(why, wn,
                     "page %u changed since the full (epoch %016llx) but the map does "
                     "not name it",
                     p, (unsigned long long)f->epoch);
            ok = 0;
        }
    }
    free(now);
    free(runs);
    return ok;
}

static crashvfs *prepare(uint64_t seed, full *f0)
{
    crashvfs *c = crashvfs_new(seed);
    om_vfs *v = crashvfs_vfs(c);
    eng_opts o = opts(v);
    eng_db *db = NULL;
    uint64_t s = seed * 7919 + 3;
    assert_int_equal(v->mkdir(v, "/db"), 0);
    assert_int_equal(eng_db_create(&o, &db), 0);
    for (int i = 0; i < 12; i++)
        assert_int_equal(change(db, &s, 3), 0);
    assert_int_equal(eng_checkpoint(db), 0);
    assert_int_equal(take_full(db, v, f0), 0);
    assert_true(f0->epoch != 0);
    assert_int_equal(eng_db_close(db), 0);
    return c;
}

/* ---- plain tests ---- */

static void map_names_every_changed_page_across_remounts(void **state)
{
    (void)state;
    full f0 = {0};
    crashvfs *c = prepare(1, &f0);
    om_vfs *v = crashvfs_vfs(c);
    eng_opts o = opts(v);
    eng_db *db = NULL;
    uint64_t s = 99;
    assert_int_equal(eng_db_open(&o, &db), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(change(db, &s, 2), 0);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_int_equal(change(db, &s, 2), 0);
    assert_int_equal(eng_checkpoint(db), 0);
    int known = 0;
    char why[300] = "";
    if (!synthetic_equal(db, v, &f0, &known, why, sizeof why)) fail_msg("%s", why);
    assert_true(known);
    /* Not everything: the map is a useful superset. */
    uint32_t *runs = NULL, nr = 0, marked = 0;
    assert_int_equal(eng_db_changed_pages(db, f0.epoch, &runs, &nr), 0);
    for (uint32_t r = 0; r < nr; r++)
        marked += runs[2 * r + 1];
    eng_info in;
    eng_db_info(db, &in);
    assert_true(marked > 0 && marked <= in.pages);
    free(runs);
    assert_int_equal(eng_db_close(db), 0);
    free(f0.edb);
    crashvfs_free(c);
}

/* Page pgno of the .edb written again with its own bytes by something other than the engine. */
static void rewrite_page(om_vfs *v, uint32_t pgno)
{
    uint8_t pg[ENG_PAGE_SIZE];
    om_file *ef = NULL;
    assert_int_equal(om_open(v, EDB, 0, &ef), 0);
    assert_int_equal(om_pread_full(ef, pg, sizeof pg, eng_page_offset(pgno)), 0);
    assert_int_equal(om_pwrite(ef, pg, sizeof pg, eng_page_offset(pgno)), 0);
    assert_int_equal(om_sync(ef), 0);
    assert_int_equal(om_close(ef), 0);
}

/* Opens the database and finds its map trusting nothing, for a reason that says reason (NULL: any
 * reason); then a new full (into f) and changes after it, and a clean close: trust starts
 * again. */
static void untrusted_then_full(const eng_opts *o, om_vfs *v, uint64_t *s, full *f,
                                const char *reason)
{
    eng_db *db = NULL;
    eng_change_epoch ep[8];
    uint32_t n = 0;
    char why[400] = "";
    assert_int_equal(eng_db_open(o, &db), 0);
    assert_int_equal(eng_db_change_epochs(db, ep, 8, &n, why, sizeof why), 0);
    assert_int_equal(n, 0);
    if (reason) assert_non_null(strstr(why, reason));
    assert_int_equal(take_full(db, v, f), 0);
    assert_int_equal(change(db, s, 3), 0);
    assert_int_equal(eng_db_close(db), 0);
}

/* An .edb put back from before the epoch (a restore, a copy) is never taken for the database the
 * map follows; nor one a recovery without the map wrote, nor one written by something else while
 * closed; nor a damaged map. */
static void map_untrusted_when_it_could_be_wrong(void **state)
{
    (void)state;
    full f0 = {0};
    crashvfs *c = prepare(2, &f0);
    om_vfs *v = crashvfs_vfs(c);
    eng_opts o = opts(v);
    eng_db *db = NULL;
    uint64_t s = 5;
    eng_change_epoch ep[8];
    uint32_t n = 0;
    char why[400];
    /* 1. the copy of the full put back in place of the .edb */
    uint8_t *old = malloc(f0.n);
    memcpy(old, f0.edb, f0.n);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_int_equal(change(db, &s, 3), 0);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(om_write_file_durable(v, EDB, old, f0.n), 0);
    /* the copy is in Dirty Shutdown (taken while mounted): recovery replays the logs; a new
     * full starts trust again */
    full f1 = {0};
    untrusted_then_full(&o, v, &s, &f1, "token");
    /* 2. a recovery without the map (dbutil's, a hard recovery's way): crash, recover, mount */
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_int_equal(change(db, &s, 3), 0);
    eng_db_abandon(db); /* a crash: dirty pages never written */
    assert_int_equal(eng_db_recover(&o, NULL), 0);
    untrusted_then_full(&o, v, &s, &f1, NULL);
    /* 3. a page of the .edb written by something else while it was closed (the same bytes
     * even: what counts is that a write happened), header and token untouched; and after a
     * clean close and open alone, the map is trusted again */
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_int_equal(eng_db_change_epochs(db, ep, 8, &n, NULL, 0), 0);
    assert_int_equal(n, 1);
    assert_int_equal(eng_db_close(db), 0);
    rewrite_page(v, 3);
    untrusted_then_full(&o, v, &s, &f1, "something other than the store");
    /* 3b. the same after a crash with nothing dirty, followed by a recovery without the map
     * (dbutil's), which writes E00.chk: it must not vouch for the file it found */
    assert_int_equal(eng_db_open(&o, &db), 0);
    eng_db_abandon(db);
    rewrite_page(v, 3);
    assert_int_equal(eng_db_recover(&o, NULL), 0);
    untrusted_then_full(&o, v, &s, &f1, "something other than the store");
    /* 4. a damaged map */
    uint8_t *m = NULL;
    size_t mn = 0;
    assert_int_equal(om_read_file(v, "/db/logs/E00.cbt", &m, &mn), 0);
    m[mn / 2] ^= 1;
    assert_int_equal(om_write_file_durable(v, "/db/logs/E00.cbt", m, mn), 0);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_int_equal(eng_db_change_epochs(db, ep, 8, &n, why, sizeof why), 0);
    assert_int_equal(n, 0);
    assert_non_null(strstr(why, "checksum"));
    assert_int_equal(eng_db_close(db), 0);
    free(m);
    free(old);
    free(f0.edb);
    free(f1.edb);
    crashvfs_free(c);
}

/* An older copy of E00.cbt put back (an administrator restoring the log folder from a
 * file-level copy; a copy tool that took E00.cbt before the .edb) while the .edb went on: the
 * copy names fewer pages than reached the .edb since. At every sync of the checkpoint that wrote
 * those pages a crash, then the old copy put back: the map must not vouch for pages it does not
 * name (trusting it would make a synthetic full reuse the old blocks of pages that changed). */
static void an_older_copy_of_the_map_is_never_trusted(void **state)
{
    (void)state;
    full f0 = {0};
    crashvfs *disk0 = prepare(3, &f0);
    long violations = 0, trusted = 0;
    uint64_t syncs = 0;
    /* n == 0: no crash, the old copy put back after a clean close; then a crash at each sync
     * of the checkpoint that writes the pages the copy does not name */
    for (uint64_t n = 0; n == 0 || n <= syncs; n++) {
        crashvfs *disk = crashvfs_clone(disk0);
        om_vfs *v = crashvfs_vfs(disk);
        eng_opts o = opts(v);
        eng_db *db = NULL;
        uint64_t s = 17;
        uint8_t *old = NULL;
        size_t on = 0;
        assert_int_equal(eng_db_open(&o, &db), 0);
        assert_int_equal(change(db, &s, 3), 0);
        assert_int_equal(eng_checkpoint(db), 0);
        assert_int_equal(om_read_file(v, "/db/logs/E00.cbt", &old, &on), 0);
        for (int i = 0; i < 6; i++) /* pages the copy does not name */
            assert_int_equal(change(db, &s, 4), 0);
        if (n) {
            crashvfs_crash_at_sync(disk, n);
            eng_checkpoint(db);
            assert_true(crashvfs_crashed(disk));
            eng_db_abandon(db);
            crashvfs_reboot(disk);
        } else {
            uint64_t s0 = crashvfs_syncs(disk);
            assert_int_equal(eng_checkpoint(db), 0);
            syncs = crashvfs_syncs(disk) - s0;
            assert_int_equal(eng_db_close(db), 0);
        }
        assert_int_equal(om_write_file_durable(v, "/db/logs/E00.cbt", old, on), 0);
        char why[300] = "", eb[600];
        int known = 0, rc = eng_db_open(&o, &db);
        if (!rc) rc = eng_checkpoint(db);
        if (rc)
            fail_msg("mount after crash at sync %llu: %s", (unsigned long long)n,
                     om_err_format(rc, eb, sizeof eb));
        if (!synthetic_equal(db, v, &f0, &known, why, sizeof why)) {
            violations++;
            print_message("violation: old map put back after a crash at sync %llu of %llu: %s\n",
                          (unsigned long long)n, (unsigned long long)syncs, why);
        }
        trusted += known;
        assert_int_equal(eng_db_close(db), 0);
        free(old);
        crashvfs_free(disk);
    }
    print_message("older map put back: %llu crash points and a clean close, %ld trusted, %ld "
                  "violations\n",
                  (unsigned long long)syncs, trusted, violations);
    assert_int_equal(violations, 0);
    free(f0.edb);
    crashvfs_free(disk0);
}

/* Pages changed while a full holds page writes spill to the hold file and reach the .edb at the
 * release, after the thaw: a power loss at every sync of that release, then recovery; the map
 * names every page the first full's and the held full's copies miss. */
static void pages_spilled_while_held_are_named(void **state)
{
    (void)state;
    full f0 = {0};
    crashvfs *disk0 = prepare(4, &f0);
    long violations = 0, checked = 0, spilled = 0;
    uint64_t syncs = 0;
    for (uint64_t n = 0; n == 0 || n <= syncs; n++) {
        crashvfs *disk = crashvfs_clone(disk0);
        om_vfs *v = crashvfs_vfs(disk);
        eng_opts o = opts(v);
        eng_db *db = NULL;
        eng_lgpos mark;
        uint32_t last, ne = 0;
        eng_change_epoch ep[8];
        full f1 = {0};
        uint64_t s = 23;
        assert_int_equal(eng_db_open(&o, &db), 0);
        assert_int_equal(change(db, &s, 2), 0);
        assert_int_equal(eng_hold_pages(db), 0);
        assert_int_equal(eng_backup_freeze(db, ENG_BK_FULL, &mark, &last), 0);
        assert_int_equal(om_read_file(v, EDB, &f1.edb, &f1.n), 0);
        assert_int_equal(eng_backup_thaw(db), 0);
        assert_int_equal(eng_db_change_epochs(db, ep, 8, &ne, NULL, 0), 0);
        f1.epoch = ep[ne - 1].id;
        for (int i = 0; i < 12; i++) /* more pages than the cache holds: they spill */
            assert_int_equal(change(db, &s, 4), 0);
        eng_stats st;
        eng_db_stats(db, &st);
        spilled += st.pages_spilled > 0;
        if (n) {
            crashvfs_crash_at_sync(disk, n);
            eng_release_pages(db);
            assert_true(crashvfs_crashed(disk));
            eng_db_abandon(db);
            crashvfs_reboot(disk);
            assert_int_equal(eng_db_open(&o, &db), 0);
        } else {
            uint64_t s0 = crashvfs_syncs(disk);
            assert_int_equal(eng_release_pages(db), 0);
            syncs = crashvfs_syncs(disk) - s0;
        }
        assert_int_equal(eng_checkpoint(db), 0);
        const full *fs[2] = {&f0, &f1};
        for (int k = 0; k < 2; k++) {
            char why[300] = "";
            int known = 0;
            if (!synthetic_equal(db, v, fs[k], &known, why, sizeof why)) {
                violations++;
                print_message("violation: crash at sync %llu of the release, full %d: %s\n",
                              (unsigned long long)n, k, why);
            }
            checked += known;
        }
        assert_int_equal(eng_db_close(db), 0);
        free(f1.edb);
        crashvfs_free(disk);
    }
    print_message("held pages: %llu crash points and none, %ld synthetic fulls checked, %ld "
                  "violations\n",
                  (unsigned long long)syncs, checked, violations);
    assert_true(spilled > 0 && checked > 0);
    assert_int_equal(violations, 0);
    free(f0.edb);
    crashvfs_free(disk0);
}

/* The map cannot be written (the log folder's disk full: E00.cbt is written whole, through a
 * new file, at the checkpoint that first writes a page it does not name): the database goes on
 * without it, as one that keeps none (the header's token cleared before the page reaches the
 * .edb, so the old E00.cbt is never trusted for it), instead of refusing writes until it is
 * remounted; a full after that reads everything. */
static void a_map_that_cannot_be_written_does_not_stop_the_database(void **state)
{
    (void)state;
    full f0 = {0};
    crashvfs *c = prepare(5, &f0);
    om_vfs *v = crashvfs_vfs(c);
    eng_opts o = opts(v);
    eng_db *db = NULL;
    uint64_t s = 41;
    assert_int_equal(eng_db_open(&o, &db), 0);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    /* every page written once, so that a write below needs no new page; then checkpointed */
    for (uint32_t p = 1; p <= in.pages; p++) {
        eng_txn *t = NULL;
        uint8_t b[64] = {1};
        assert_int_equal(eng_txn_begin(db, &t), 0);
        assert_int_equal(eng_page_write(t, p, 0, b, sizeof b), 0);
        assert_int_equal(eng_txn_commit(t, 0), 0);
    }
    assert_int_equal(eng_checkpoint(db), 0);
    full f1 = {0};
    assert_int_equal(take_full(db, v, &f1), 0); /* a new epoch: no page marked in it */
    assert_int_equal(eng_checkpoint(db), 0);
    /* no room for a new E00.cbt: the next changed page cannot be recorded */
    crashvfs_set_space_limit(c, 1);
    eng_txn *t = NULL;
    uint8_t b[64];
    memset(b, 0x5a, sizeof b);
    assert_int_equal(eng_txn_begin(db, &t), 0);
    assert_int_equal(eng_page_write(t, 1 + (uint32_t)(rnd(&s) % in.pages), 0, b, sizeof b), 0);
    assert_int_equal(eng_txn_commit(t, 0), 0);
    int rc = eng_checkpoint(db);
    char eb[600];
    assert_int_equal(eng_db_info(db, &in), 0);
    if (rc || in.fatal)
        fail_msg("a change map that cannot be written stopped the database: %s",
                 rc ? om_err_format(rc, eb, sizeof eb) : "fatal");
    eng_change_epoch ep[8];
    uint32_t n = 0;
    char why[400] = "";
    assert_int_equal(eng_db_change_epochs(db, ep, 8, &n, why, sizeof why), 0);
    assert_int_equal(n, 0);
    assert_non_null(strstr(why, "could not be written"));
    crashvfs_set_space_limit(c, 0);
    assert_int_equal(change(db, &s, 2), 0);
    assert_int_equal(eng_checkpoint(db), 0);
    /* the map vouches for nothing it missed: either it forgot the epochs, or it names the page */
    const full *fs[2] = {&f0, &f1};
    for (int k = 0; k < 2; k++) {
        char w[300] = "";
        int known = 0;
        if (!synthetic_equal(db, v, fs[k], &known, w, sizeof w)) fail_msg("%s", w);
    }
    assert_int_equal(eng_db_close(db), 0);
    /* and after a remount; a new full is trusted again */
    assert_int_equal(eng_db_open(&o, &db), 0);
    for (int k = 0; k < 2; k++) {
        char w[300] = "";
        int known = 0;
        if (!synthetic_equal(db, v, fs[k], &known, w, sizeof w)) fail_msg("%s", w);
    }
    assert_int_equal(take_full(db, v, &f1), 0);
    assert_int_equal(change(db, &s, 3), 0);
    assert_int_equal(eng_checkpoint(db), 0);
    int known = 0;
    if (!synthetic_equal(db, v, &f1, &known, why, sizeof why)) fail_msg("%s", why);
    assert_true(known);
    assert_int_equal(eng_db_close(db), 0);
    free(f0.edb);
    free(f1.edb);
    crashvfs_free(c);
}

/* ---- the crash harness ---- */

typedef struct run {
    full f1; /* the second full, when the workload got there */
} run;

static int workload(om_vfs *v, uint64_t seed, run *r)
{
    eng_opts o = opts(v);
    eng_db *db = NULL;
    uint64_t s = seed * 31 + 7;
    int rc = eng_db_open(&o, &db);
    for (int i = 0; i < 24 && !rc; i++) {
        rc = change(db, &s, 1 + (int)(rnd(&s) % 3));
        if (!rc && i % 5 == 4) rc = eng_checkpoint(db);
        if (!rc && i == 9) {
            rc = eng_db_close(db);
            db = NULL;
            if (!rc) rc = eng_db_open(&o, &db);
        }
        if (!rc && i == 14) rc = take_full(db, v, &r->f1);
    }
    if (!rc) {
        rc = eng_db_close(db);
        db = NULL;
    }
    if (db) eng_db_abandon(db);
    return rc;
}

/* OMBRA_CBT_CRASH_POINTS: how many crash points a loop tries (default 300). */
static long crash_points(void)
{
    const char *env = getenv("OMBRA_CBT_CRASH_POINTS");
    long points = env ? atol(env) : 300;
    return points > 0 ? points : 300;
}

/* The syncs of the workload from the prepared disk, run without a crash. */
static uint64_t dry_syncs(const crashvfs *disk, uint64_t seed)
{
    crashvfs *c = crashvfs_clone(disk);
    uint64_t s0 = crashvfs_syncs(c);
    run dry = {0};
    char eb[1024];
    int rc = workload(crashvfs_vfs(c), seed, &dry);
    if (rc) fail_msg("dry run: %s", om_err_format(rc, eb, sizeof eb));
    uint64_t n = crashvfs_syncs(c) - s0;
    crashvfs_free(c);
    free(dry.f1.edb);
    return n;
}

/* The database recovered on the rebooted disk c, then each full the map still knows checked
 * (synthetic_equal); a violation is printed with where. Closes the database. */
static void recover_and_check(crashvfs *c, const full *f0, const full *f1, const char *where,
                              long *violations, long *checked, long *untrusted)
{
    om_vfs *v = crashvfs_vfs(c);
    eng_opts o = opts(v);
    eng_db *db = NULL;
    char eb[1024];
    int rc = eng_db_open(&o, &db);
    if (rc || (rc = eng_checkpoint(db)))
        fail_msg("recovery after %s: %s", where, om_err_format(rc, eb, sizeof eb));
    const full *fs[2] = {f0, f1};
    for (int k = 0; k < 2; k++) {
        char why[300] = "";
        int known = 0;
        if (!fs[k]->epoch) continue;
        if (!synthetic_equal(db, v, fs[k], &known, why, sizeof why)) {
            (*violations)++;
            print_message("violation: %s, full %d: %s\n", where, k, why);
        }
        known ? (*checked)++ : (*untrusted)++;
    }
    eng_db_close(db);
}

/* A clone of disk that lost power at its nth sync while the workload of seed ran (the workload's
 * second full in *r), rebooted. */
static crashvfs *crash_workload_at(crashvfs *disk, uint64_t seed, uint64_t n, uint64_t reseed,
                                   run *r)
{
    crashvfs *c = crashvfs_clone(disk);
    crashvfs_reseed(c, reseed);
    crashvfs_crash_at_sync(c, n);
    workload(crashvfs_vfs(c), seed, r);
    if (!crashvfs_crashed(c)) fail_msg("crash point %llu not reached", (unsigned long long)n);
    crashvfs_reboot(c);
    return c;
}

static void crash_at_every_point_of_the_map_update(void **state)
{
    (void)state;
    long points = crash_points(), tried = 0, violations = 0, checked = 0, untrusted = 0;
    for (uint64_t seed = 1; tried < points; seed++) {
        full f0 = {0};
        crashvfs *disk = prepare(100 + seed, &f0);
        uint64_t syncs = dry_syncs(disk, seed);
        for (uint64_t n = 1; n <= syncs && tried < points; n++, tried++) {
            run r = {0};
            crashvfs *c = crash_workload_at(disk, seed, n, seed * 1000003u + n, &r);
            char where[120];
            snprintf(where, sizeof where, "seed %llu, crash at sync %llu of %llu",
                     (unsigned long long)seed, (unsigned long long)n, (unsigned long long)syncs);
            recover_and_check(c, &f0, &r.f1, where, &violations, &checked, &untrusted);
            free(r.f1.edb);
            crashvfs_free(c);
        }
        free(f0.edb);
        crashvfs_free(disk);
    }
    print_message("change map crash harness: %ld crash points, %ld synthetic fulls checked, %ld "
                  "fulls the map no longer vouched for, %ld violations\n",
                  tried, checked, untrusted, violations);
    assert_true(checked > 0);
    assert_int_equal(violations, 0);
}

/* A second power loss during the recovery after the first (soft recovery writes pages too: the
 * page journal's repairs, rebuilt pages written back early, its checkpoints): the first at
 * points spread over the workload, the second at every sync of that recovery; after the
 * recovery that follows, the map still names every page that changed since each full it knows.
 * OMBRA_CBT_CRASH_POINTS bounds the pairs tried. */
static void crash_during_the_recovery_too(void **state)
{
    (void)state;
    long points = crash_points(), tried = 0, violations = 0, checked = 0, untrusted = 0;
    uint64_t every = crashvfs_every();
    for (uint64_t seed = 1; tried < points; seed++) {
        full f0 = {0};
        crashvfs *disk = prepare(200 + seed, &f0);
        uint64_t syncs = dry_syncs(disk, seed);
        for (uint64_t n = 1 + seed % 3; n <= syncs && tried < points; n += 3 + every) {
            run r = {0};
            crashvfs *first = crash_workload_at(disk, seed, n, seed * 7777u + n, &r);
            /* the syncs of the recovery, run without a crash */
            crashvfs *d = crashvfs_clone(first);
            eng_opts o = opts(crashvfs_vfs(d));
            eng_db *db = NULL;
            uint64_t r0 = crashvfs_syncs(d);
            if (!eng_db_open(&o, &db)) {
                eng_checkpoint(db);
                eng_db_close(db);
            }
            uint64_t rsyncs = crashvfs_syncs(d) - r0;
            crashvfs_free(d);
            for (uint64_t m = 1; m <= rsyncs && tried < points; m += every, tried++) {
                d = crashvfs_clone(first);
                crashvfs_reseed(d, seed * 1000003u + n * 131u + m);
                o = opts(crashvfs_vfs(d));
                crashvfs_crash_at_sync(d, m);
                if (!eng_db_open(&o, &db)) {
                    eng_checkpoint(db);
                    eng_db_abandon(db);
                }
                crashvfs_reboot(d);
                char where[160];
                snprintf(where, sizeof where,
                         "seed %llu, crash at sync %llu, then at sync %llu of the recovery",
                         (unsigned long long)seed, (unsigned long long)n, (unsigned long long)m);
                recover_and_check(d, &f0, &r.f1, where, &violations, &checked, &untrusted);
                crashvfs_free(d);
            }
            free(r.f1.edb);
            crashvfs_free(first);
        }
        free(f0.edb);
        crashvfs_free(disk);
    }
    print_message("change map, crashes during recovery: %ld crash pairs, %ld synthetic fulls "
                  "checked, %ld fulls the map no longer vouched for, %ld violations\n",
                  tried, checked, untrusted, violations);
    assert_true(checked > 0);
    assert_int_equal(violations, 0);
}

int main(void)
{
    if (!getenv("OMBRA_DEBUG")) om_log_min_level(OM_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(map_names_every_changed_page_across_remounts),
        cmocka_unit_test(map_untrusted_when_it_could_be_wrong),
        cmocka_unit_test(an_older_copy_of_the_map_is_never_trusted),
        cmocka_unit_test(pages_spilled_while_held_are_named),
        cmocka_unit_test(a_map_that_cannot_be_written_does_not_stop_the_database),
        cmocka_unit_test(crash_at_every_point_of_the_map_update),
        cmocka_unit_test(crash_during_the_recovery_too),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
