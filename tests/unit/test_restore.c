/* Hard recovery after a restore (eng_db_hard_recover): what a user gets back is every
 * transaction committed up to the point asked for, nothing after it, and a database that
 * mounts, takes new mail, survives a crash and recovers on its own log folder. Backups are
 * made here the way the store's writer makes them with the held provider (hold, freeze, copy
 * the .edb and checkpoint, thaw, copy the finished logs, release, record the slot), on the
 * in-memory crash VFS. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "crashvfs.h"
#include "vfsfile.h"
#include "engine/engine.h"
#include "engine/format.h"

/* Data pages; commit k writes its number at its own place in page 1 + k % NP. */
static uint32_t NP = 6;

static uint8_t body[ENG_PAGE_BODY];

static crashvfs *new_disk(uint64_t seed)
{
    crashvfs *c = crashvfs_new(seed);
    assert_non_null(c);
    om_vfs *v = crashvfs_vfs(c);
    assert_int_equal(v->mkdir(v, "/db"), 0);
    assert_int_equal(v->mkdir(v, "/bk"), 0);
    return c;
}

static eng_opts opts_of(crashvfs *c, const char *edb, const char *logs, const char *base)
{
    eng_opts o = {0};
    o.vfs = crashvfs_vfs(c);
    o.edb_path = edb;
    o.log_dir = logs;
    o.base = base;
    o.checkpoint_gens = 1000; /* checkpoints only where a test takes them */
    o.no_reserve_logs = 1;
    return o;
}

static eng_opts live_opts(crashvfs *c)
{
    return opts_of(c, "/db/mail.edb", "/db/logs", "E00");
}

/* A database with NP zeroed data pages. */
static eng_db *create_db(const eng_opts *o)
{
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(o, &db), 0);
    eng_txn *t = NULL;
    uint32_t pg;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    for (uint32_t i = 0; i < NP; i++)
        assert_int_equal(eng_page_alloc(t, 7, &pg), 0);
    memset(body, 0, 8);
    assert_int_equal(eng_page_write(t, 1, 0, body, 8), 0);
    body[0] = 1;
    assert_int_equal(eng_page_write(t, 1, ENG_PAGE_BODY - 1, body, 1), 0);
    assert_int_equal(eng_txn_commit(t, 0), 0);
    return db;
}

/* With BIG set, every third commit also rewrites most of its page (logged as an image, after
 * small changes to the page logged as byte ranges) and every seventh allocates a new page and
 * fills it (a new page's image): replay's rebuilt pages (db_internal.h). */
static int BIG;

/* Commit k (durable): value `tag + k + 1` at its place. */
static void commit_k(eng_db *db, uint32_t k, uint64_t tag)
{
    eng_txn *t = NULL;
    uint8_t v[8];
    static uint8_t big[ENG_PAGE_BODY / 2 + 512];
    om_put64(v, tag + k + 1);
    assert_int_equal(eng_txn_begin(db, &t), 0);
    assert_int_equal(eng_page_write(t, 1 + k % NP, (k / NP) * 8, v, 8), 0);
    if (BIG && k % 3 == 0) {
        memset(big, (int)(k & 0xff), sizeof big);
        assert_int_equal(eng_page_write(t, 1 + k % NP, 4096, big, sizeof big), 0);
    }
    if (BIG && k % 7 == 0) {
        uint32_t pg = 0;
        memset(big, (int)(~k & 0xff), sizeof big);
        assert_int_equal(eng_page_alloc(t, 9, &pg), 0);
        assert_int_equal(eng_page_write(t, pg, 0, big, sizeof big), 0);
    }
    assert_int_equal(eng_txn_commit(t, 0), 0);
}

static void commits(eng_db *db, uint32_t from, uint32_t to)
{
    for (uint32_t k = from; k < to; k++)
        commit_k(db, k, 0);
}

/* Commits [0, upto) are there, [upto, total) are not. */
static void assert_commits(eng_db *db, uint32_t upto, uint32_t total)
{
    for (uint32_t k = 0; k < total; k++) {
        assert_int_equal(eng_page_read(db, 1 + k % NP, body), 0);
        uint64_t have = om_get64(body + (k / NP) * 8), want = k < upto ? k + 1 : 0;
        if (have != want)
            fail_msg("commit %u: page %u holds %llu, expected %llu (commits before %u only)", k,
                     1 + k % NP, (unsigned long long)have, (unsigned long long)want, upto);
    }
}

static void gen_name(char *out, size_t n, const char *dir, const char *base, uint32_t g)
{
    assert_int_equal(eng_log_path(out, n, dir, base, g), 0);
}

/* Copies generations [first, last] of base from one folder to another. */
static void copy_gens(om_vfs *v, const char *from, const char *to, const char *base, uint32_t first,
                      uint32_t last)
{
    char a[512], b[512];
    for (uint32_t g = first; g <= last; g++) {
        gen_name(a, sizeof a, from, base, g);
        gen_name(b, sizeof b, to, base, g);
        assert_int_equal(tst_copy_file(v, a, b), 0);
    }
}

typedef struct backup {
    char dir[128];
    uint32_t first_gen, last_gen;
} backup;

/* A full backup as the writer makes it with the held provider. */
static void backup_full(om_vfs *v, eng_db *db, const char *dir, backup *b)
{
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    snprintf(b->dir, sizeof b->dir, "%s", dir);
    assert_int_equal(v->mkdir(v, dir), 0);
    assert_int_equal(eng_hold_pages(db), 0);
    eng_lgpos mark;
    uint32_t last = 0;
    assert_int_equal(eng_backup_freeze(db, ENG_BK_FULL, &mark, &last), 0);
    char to[256];
    snprintf(to, sizeof to, "%s/mail.edb", dir);
    assert_int_equal(tst_copy_file(v, "/db/mail.edb", to), 0);
    snprintf(to, sizeof to, "%s/E00.chk", dir);
    assert_int_equal(tst_copy_file(v, "/db/logs/E00.chk", to), 0);
    assert_int_equal(eng_backup_thaw(db), 0);
    b->first_gen = in.checkpoint.gen;
    b->last_gen = last;
    copy_gens(v, "/db/logs", dir, "E00", b->first_gen, b->last_gen);
    assert_int_equal(eng_release_pages(db), 0);
    eng_bkslot s = {b->first_gen, b->last_gen, mark, om_now_ns(), ENG_BK_FULL};
    assert_int_equal(eng_record_backup(db, ENG_BK_PREV_FULL, &s), 0);
}

/* An incremental: the logs after the previous backup's last generation. */
static void backup_incremental(om_vfs *v, eng_db *db, const char *dir, const backup *prev,
                               backup *b)
{
    snprintf(b->dir, sizeof b->dir, "%s", dir);
    assert_int_equal(v->mkdir(v, dir), 0);
    eng_lgpos mark;
    uint32_t last = 0;
    assert_int_equal(eng_backup_freeze(db, ENG_BK_INCREMENTAL, &mark, &last), 0);
    assert_int_equal(eng_backup_thaw(db), 0);
    b->first_gen = prev->last_gen + 1;
    b->last_gen = last;
    copy_gens(v, "/db/logs", dir, "E00", b->first_gen, b->last_gen);
    eng_bkslot s = {b->first_gen, b->last_gen, mark, om_now_ns(), ENG_BK_INCREMENTAL};
    assert_int_equal(eng_record_backup(db, ENG_BK_PREV_INCREMENTAL, &s), 0);
}

/* The restore's file copy for a target other than the original folder: the .edb to its place,
 * the logs to <logs>/_restoredLogs. */
static void lay_down(om_vfs *v, const backup *b, const char *edb, const char *logs, int with_edb)
{
    char rl[256], from[256];
    snprintf(rl, sizeof rl, "%s/_restoredLogs", logs);
    if (v->exists(v, logs) != 2) assert_int_equal(v->mkdir(v, logs), 0);
    if (v->exists(v, rl) != 2) assert_int_equal(v->mkdir(v, rl), 0);
    if (with_edb) {
        snprintf(from, sizeof from, "%s/mail.edb", b->dir);
        assert_int_equal(tst_copy_file(v, from, edb), 0);
    }
    copy_gens(v, b->dir, rl, "E00", b->first_gen, b->last_gen);
}

/* The replays of the tests below as a restore whose .edb is still being synced makes them
 * (eng_restore_opts.laid_unsynced): the references (replay_all_present) never. */
static int laid_unsynced;

static eng_restore_opts ropts(const eng_opts *target, const char *rdir)
{
    eng_restore_opts r = {0};
    r.target = *target;
    r.restored_dir = rdir;
    r.restored_base = "E00";
    r.laid_unsynced = laid_unsynced;
    return r;
}

/* Power loss with the database open, then a mount (which recovers from the log). */
static eng_db *crash_and_remount(crashvfs *c, const eng_opts *o, eng_db *db)
{
    eng_db_abandon(db);
    crashvfs_reboot(c);
    assert_int_equal(eng_db_open(o, &db), 0);
    assert_int_equal(eng_db_check_invariants(db), 0);
    return db;
}

/* After the restore the database takes new commits, loses power, recovers, and still holds
 * commits [0, upto) and the new ones, not [upto, total). */
static void assert_lives_on(crashvfs *c, const eng_opts *o, uint32_t upto, uint32_t total)
{
    eng_db *db = NULL;
    assert_int_equal(eng_db_open(o, &db), 0);
    assert_commits(db, upto, total);
    for (uint32_t k = 0; k < 12; k++)
        commit_k(db, 5000 + k, 1000000);
    db = crash_and_remount(c, o, db);
    assert_commits(db, upto, total);
    for (uint32_t k = 0; k < 12; k++) {
        uint32_t kk = 5000 + k;
        assert_int_equal(eng_page_read(db, 1 + kk % NP, body), 0);
        assert_int_equal(om_get64(body + (kk / NP) * 8), 1000000 + kk + 1);
    }
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(eng_db_open(o, &db), 0);
    assert_commits(db, upto, total);
    assert_int_equal(eng_db_close(db), 0);
}

static void assert_clean(om_vfs *v, const char *edb, const char *base)
{
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(v, edb, &h, 0, NULL), 0);
    assert_int_equal(h.state, ENG_STATE_CLEAN);
    assert_string_equal(h.base, base);
    assert_int_equal(h.flags & ENG_DBF_RESTORING, 0);
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(om_read_file(v, edb, &data, &n), 0);
    for (uint32_t p = 1; p <= h.pages; p++)
        if (eng_page_check(data + eng_page_offset(p), p, NULL) != ENG_PAGE_OK)
            fail_msg("page %u of %s fails its checksum", p, edb);
    free(data);
}

static eng_sig log_sig_of(om_vfs *v, const char *path)
{
    om_file *f = NULL;
    uint8_t slot[ENG_SLOT_SIZE];
    eng_loghdr h;
    assert_int_equal(om_open(v, path, OM_O_RDONLY, &f), 0);
    assert_int_equal(om_pread_full(f, slot, sizeof slot, 0), 0);
    om_close(f);
    assert_int_equal(eng_loghdr_decode(slot, &h), 0);
    return h.log_sig;
}

static int progress_calls;
static uint32_t progress_last;
static void on_progress(void *arg, uint32_t gen, uint32_t first, uint32_t last)
{
    (void)arg;
    (void)first;
    (void)last;
    progress_calls++;
    progress_last = gen;
}

/* The live database of the original-folder tests: commits 0..19 checkpointed, 20..34 only in
 * the log when the full backup is taken (over two generations); then 35..69 after it, with a
 * checkpoint in between, so the folder holds later generations and a newer E00.chk. */
#define A_BACKUP 35
#define A_TOTAL  70
static void original_folder_setup(crashvfs *c, backup *full, uint32_t *last_on_disk)
{
    eng_opts o = live_opts(c);
    om_vfs *v = o.vfs;
    eng_db *db = create_db(&o);
    commits(db, 0, 20);
    assert_int_equal(eng_checkpoint(db), 0);
    commits(db, 20, 28);
    assert_int_equal(eng_db_roll_log(db), 0);
    commits(db, 28, A_BACKUP);
    backup_full(v, db, "/bk/full", full);
    commits(db, A_BACKUP, 50);
    assert_int_equal(eng_db_roll_log(db), 0);
    commits(db, 50, 60);
    assert_int_equal(eng_checkpoint(db), 0);
    commits(db, 60, A_TOTAL);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    *last_on_disk = in.gen_current;
    assert_true(*last_on_disk > full->last_gen);
    eng_chkfile ck;
    assert_int_equal(eng_chk_read(v, "/db/logs/E00.chk", &ck, NULL), 0);
    assert_true(ck.checkpoint.gen > full->last_gen); /* the newer checkpoint file */
    /* The database file is lost; the log folder survives. Restore the backup into it. */
    eng_db_abandon(db);
    crashvfs_reboot(c);
    assert_int_equal(tst_copy_file(v, "/bk/full/mail.edb", "/db/mail.edb"), 0);
    copy_gens(v, "/bk/full", "/db/logs", "E00", full->first_gen, full->last_gen);
}

static void original_database_rolls_forward_through_the_later_logs_in_its_folder(void **s)
{
    (void)s;
    crashvfs *c = new_disk(1);
    eng_opts o = live_opts(c);
    backup full;
    uint32_t last_on_disk = 0;
    original_folder_setup(c, &full, &last_on_disk);
    eng_restore_opts ro = ropts(&o, "/db/logs");
    ro.roll_forward = 1;
    ro.target.replay_progress = on_progress;
    progress_calls = 0;
    eng_restore_result r;
    assert_int_equal(eng_db_hard_recover(&ro, &r), 0);
    assert_int_equal(r.first_gen, full.first_gen);
    assert_int_equal(r.last_gen, last_on_disk);
    assert_int_equal(progress_calls, last_on_disk - full.first_gen + 1);
    assert_int_equal(progress_last, last_on_disk);
    assert_false(r.stopped_at_point);
    assert_false(r.new_stream);
    assert_true(r.transactions > 0 && r.records > 0);
    assert_clean(o.vfs, o.edb_path, "E00");
    assert_lives_on(c, &o, A_TOTAL, A_TOTAL);
    crashvfs_free(c);
}

static void
original_database_without_roll_forward_stops_at_the_backup_and_starts_a_new_stream(void **s)
{
    (void)s;
    crashvfs *c = new_disk(2);
    eng_opts o = live_opts(c);
    om_vfs *v = o.vfs;
    backup full;
    uint32_t last_on_disk = 0;
    original_folder_setup(c, &full, &last_on_disk);
    eng_sig old_sig = log_sig_of(v, "/db/logs/E00.log");
    eng_restore_opts ro = ropts(&o, "/db/logs/"); /* the same folder, spelled differently */
    eng_restore_result r;
    /* Later logs in the folder: the engine cannot tell where the backup ended by itself. */
    assert_int_equal(eng_db_hard_recover(&ro, &r), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "roll forward"));
    ro.stop_gen = full.last_gen;
    assert_int_equal(eng_db_hard_recover(&ro, &r), 0);
    assert_int_equal(r.last_gen, full.last_gen);
    assert_true(r.stopped_at_point);
    assert_true(r.new_stream);
    assert_int_equal(r.stream_gen, last_on_disk + 1);
    assert_clean(v, o.edb_path, "E00");
    /* The abandoned later generations are still there, of another stream now. */
    eng_sig new_sig = log_sig_of(v, "/db/logs/E00.log");
    assert_false(eng_sig_eq(&old_sig, &new_sig));
    char p[256];
    gen_name(p, sizeof p, "/db/logs", "E00", last_on_disk);
    assert_int_equal(v->exists(v, p), 1);
    eng_info in;
    assert_int_equal(eng_db_inspect(&o, &in), 0);
    assert_int_equal(in.slots[ENG_BK_PREV_FULL].kind, ENG_BK_NONE); /* next backup: full */
    /* Commits 20..34 were only in the log: replay did not start at the newer E00.chk. */
    assert_lives_on(c, &o, A_BACKUP, A_TOTAL);
    crashvfs_free(c);
}

/* Another database B (E01, its own folder and data) is overwritten by A's backup. */
static void restore_to_another_database_adopts_its_log_stream(void **s)
{
    (void)s;
    crashvfs *c = new_disk(3);
    eng_opts o = live_opts(c);
    om_vfs *v = o.vfs;
    assert_int_equal(v->mkdir(v, "/other"), 0);
    eng_opts ob = opts_of(c, "/other/b.edb", "/other/logs", "E01");
    eng_db *b = create_db(&ob);
    for (uint32_t k = 0; k < 30; k++) {
        commit_k(b, k, 777000);
        if (k % 10 == 9) assert_int_equal(eng_db_roll_log(b), 0);
    }
    assert_int_equal(eng_db_close(b), 0);
    eng_sig b_sig = log_sig_of(v, "/other/logs/E01.log");
    eng_info bin;
    assert_int_equal(eng_db_inspect(&ob, &bin), 0);

    eng_db *db = create_db(&o);
    commits(db, 0, 10);
    assert_int_equal(eng_checkpoint(db), 0);
    commits(db, 10, 20);
    backup full;
    backup_full(v, db, "/bk/full", &full);
    commits(db, 20, 30); /* not in the backup */
    assert_int_equal(eng_db_close(db), 0);

    lay_down(v, &full, "/other/b.edb", "/other/logs", 1);
    eng_restore_opts ro = ropts(&ob, "/other/logs/_restoredLogs");
    ro.roll_forward = 1; /* changes nothing: the target's logs are another stream */
    eng_restore_result r;
    assert_int_equal(eng_db_hard_recover(&ro, &r), 0);
    assert_int_equal(r.first_gen, full.first_gen);
    assert_int_equal(r.last_gen, full.last_gen);
    assert_false(r.stopped_at_point);
    assert_true(r.new_stream);
    assert_int_equal(r.stream_gen, bin.gen_current + 1);
    assert_clean(v, ob.edb_path, "E01");
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(v, ob.edb_path, &h, 0, NULL), 0);
    assert_true(eng_sig_eq(&h.log_sig, &b_sig)); /* B's stream, continued */
    assert_int_equal(h.slots[ENG_BK_PREV_FULL].kind, ENG_BK_NONE);
    /* B's old data is gone with its file; its old logs were never replayed into A's data. */
    assert_lives_on(c, &ob, 20, 30);
    /* And the original still mounts on its own folder, untouched. */
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_commits(db, 30, 30);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

/* A recovery database in an empty folder, with the file renamed after the replay. */
static void recovery_database_in_an_empty_folder_starts_a_new_stream(void **s)
{
    (void)s;
    crashvfs *c = new_disk(4);
    eng_opts o = live_opts(c);
    om_vfs *v = o.vfs;
    eng_db *db = create_db(&o);
    commits(db, 0, 15);
    backup full;
    backup_full(v, db, "/bk/full", &full);
    commits(db, 15, 25);
    assert_int_equal(v->mkdir(v, "/rdb"), 0);
    lay_down(v, &full, "/rdb/restoring.edb", "/rdb/logs", 1);
    eng_opts orr = opts_of(c, "/rdb/restoring.edb", "/rdb/logs", "R00");
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    eng_restore_result r;
    assert_int_equal(eng_db_hard_recover(&ro, &r), 0);
    assert_true(r.new_stream);
    assert_int_equal(r.stream_gen, full.last_gen + 1);
    /* The original, still mounted, is not disturbed. */
    commits(db, 25, 30);
    assert_commits(db, 30, 30);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(v->rename(v, "/rdb/restoring.edb", "/rdb/recovery.edb"), 0);
    assert_int_equal(v->sync_dir(v, "/rdb"), 0);
    orr.edb_path = "/rdb/recovery.edb";
    assert_clean(v, orr.edb_path, "R00");
    assert_lives_on(c, &orr, 15, 25);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_commits(db, 30, 30);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

/* Full, then incrementals; commits per generation known. */
typedef struct chain {
    backup full, inc1, inc2;
    uint32_t upto_gen[64]; /* commits before this many were made when generation g ended */
    uint32_t total;
} chain;

static void make_chain(crashvfs *c, chain *ch)
{
    eng_opts o = live_opts(c);
    om_vfs *v = o.vfs;
    eng_db *db = create_db(&o);
    commits(db, 0, 10);
    assert_int_equal(eng_checkpoint(db), 0);
    backup_full(v, db, "/bk/full", &ch->full);
    uint32_t k = 10;
    for (int round = 0; round < 2; round++) {
        for (int g = 0; g < 3; g++) {
            commits(db, k, k + 7);
            k += 7;
            eng_info in;
            assert_int_equal(eng_db_info(db, &in), 0);
            ch->upto_gen[in.gen_current] = k;
            assert_int_equal(eng_db_roll_log(db), 0);
        }
        backup_incremental(v, db, round ? "/bk/inc2" : "/bk/inc1", round ? &ch->inc1 : &ch->full,
                           round ? &ch->inc2 : &ch->inc1);
    }
    commits(db, k, k + 10); /* in no backup */
    ch->total = k + 10;
    assert_int_equal(eng_db_close(db), 0);
}

/* The restore of a chain into a recovery database's folder: the full backup's files, then each
 * incremental's logs into the same folder (additional restores), then one replay. */
static eng_opts lay_down_chain(crashvfs *c, const chain *ch)
{
    om_vfs *v = crashvfs_vfs(c);
    if (v->exists(v, "/rdb") != 2) assert_int_equal(v->mkdir(v, "/rdb"), 0);
    lay_down(v, &ch->full, "/rdb/r.edb", "/rdb/logs", 1);
    lay_down(v, &ch->inc1, NULL, "/rdb/logs", 0);
    lay_down(v, &ch->inc2, NULL, "/rdb/logs", 0);
    return opts_of(c, "/rdb/r.edb", "/rdb/logs", "R00");
}

static void full_and_incrementals_restored_together_replay_in_one_go(void **s)
{
    (void)s;
    crashvfs *c = new_disk(5);
    chain ch;
    make_chain(c, &ch);
    eng_opts orr = lay_down_chain(c, &ch);
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    eng_restore_result r;
    assert_int_equal(eng_db_hard_recover(&ro, &r), 0);
    assert_int_equal(r.first_gen, ch.full.first_gen);
    assert_int_equal(r.last_gen, ch.inc2.last_gen);
    assert_false(r.stopped_at_point);
    assert_lives_on(c, &orr, ch.upto_gen[ch.inc2.last_gen - 1], ch.total);
    crashvfs_free(c);
}

static void point_in_time_by_generation_applies_no_later_generation(void **s)
{
    (void)s;
    crashvfs *c = new_disk(6);
    chain ch;
    make_chain(c, &ch);
    eng_opts orr = lay_down_chain(c, &ch);
    uint32_t stop = ch.inc1.last_gen + 1;
    assert_true(ch.upto_gen[stop] > 0);
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    ro.stop_gen = stop;
    eng_restore_result r;
    assert_int_equal(eng_db_hard_recover(&ro, &r), 0);
    assert_int_equal(r.last_gen, stop);
    assert_true(r.stopped_at_point);
    assert_lives_on(c, &orr, ch.upto_gen[stop], ch.total);
    crashvfs_free(c);
}

static void point_in_time_by_commit_time_stops_mid_generation(void **s)
{
    (void)s;
    crashvfs *c = new_disk(7);
    eng_opts o = live_opts(c);
    om_vfs *v = o.vfs;
    eng_db *db = create_db(&o);
    commits(db, 0, 10);
    uint64_t too_early = om_now_ns(); /* before changes the backup's pages hold */
    commits(db, 10, 20);
    assert_int_equal(eng_checkpoint(db), 0);
    backup full;
    backup_full(v, db, "/bk/full", &full);
    commits(db, 20, 45);
    uint64_t point = om_now_ns();
    commits(db, 45, 60); /* the same generation as 20..44 */
    backup inc;
    backup_incremental(v, db, "/bk/inc", &full, &inc);
    assert_int_equal(inc.first_gen, inc.last_gen);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(v->mkdir(v, "/rdb"), 0);
    lay_down(v, &full, "/rdb/r.edb", "/rdb/logs", 1);
    lay_down(v, &inc, NULL, "/rdb/logs", 0);
    eng_opts orr = opts_of(c, "/rdb/r.edb", "/rdb/logs", "R00");
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    eng_restore_result r;
    /* A point before the state the restored pages already hold cannot be reached. */
    ro.stop_time_ns = too_early;
    assert_int_equal(eng_db_hard_recover(&ro, &r), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "older backup"));
    ro.stop_time_ns = point;
    assert_int_equal(eng_db_hard_recover(&ro, &r), 0);
    assert_true(r.stopped_at_point);
    assert_int_equal(r.last_gen, inc.last_gen);
    assert_lives_on(c, &orr, 45, 60);
    crashvfs_free(c);
}

/* ---- errors ---- */

static void missing_generation_in_the_restored_range_is_named(void **s)
{
    (void)s;
    crashvfs *c = new_disk(8);
    om_vfs *v = crashvfs_vfs(c);
    chain ch;
    make_chain(c, &ch);
    eng_opts orr = lay_down_chain(c, &ch);
    uint32_t gone = ch.inc1.first_gen + 1;
    char p[256], keep[256];
    gen_name(p, sizeof p, "/rdb/logs/_restoredLogs", "E00", gone);
    snprintf(keep, sizeof keep, "/bk/kept.log");
    assert_int_equal(v->rename(v, p, keep), 0);
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    assert_int_equal(eng_db_hard_recover(&ro, NULL), OM_E_MissingLogFile);
    char want[64];
    snprintf(want, sizeof want, "log generation %u is missing", gone);
    assert_non_null(strstr(om_err_detail(), want));
    /* Put the log back and run the replay again. */
    assert_int_equal(v->rename(v, keep, p), 0);
    assert_int_equal(eng_db_hard_recover(&ro, NULL), 0);
    assert_lives_on(c, &orr, ch.upto_gen[ch.inc2.last_gen - 1], ch.total);
    crashvfs_free(c);
}

static void logs_of_another_database_are_refused(void **s)
{
    (void)s;
    crashvfs *c = new_disk(9);
    om_vfs *v = crashvfs_vfs(c);
    eng_opts o = live_opts(c);
    eng_db *db = create_db(&o);
    commits(db, 0, 10);
    backup full;
    backup_full(v, db, "/bk/full", &full);
    assert_int_equal(eng_db_close(db), 0);
    /* Another database with the same base name, its logs where the restore expects ours. */
    assert_int_equal(v->mkdir(v, "/x"), 0);
    eng_opts ox = opts_of(c, "/x/x.edb", "/x/logs", "E00");
    eng_db *x = create_db(&ox);
    for (uint32_t k = 0; k < 8; k++) {
        commit_k(x, k, 99);
        assert_int_equal(eng_db_roll_log(x), 0);
    }
    assert_int_equal(eng_db_close(x), 0);
    assert_int_equal(v->mkdir(v, "/rdb"), 0);
    lay_down(v, &full, "/rdb/r.edb", "/rdb/logs", 1);
    copy_gens(v, "/x/logs", "/rdb/logs/_restoredLogs", "E00", full.first_gen, full.last_gen);
    eng_opts orr = opts_of(c, "/rdb/r.edb", "/rdb/logs", "R00");
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    assert_int_equal(eng_db_hard_recover(&ro, NULL), OM_E_DatabaseLogSetMismatch);
    assert_non_null(strstr(om_err_detail(), "another database"));
    assert_non_null(strstr(om_err_detail(), "/rdb/logs/_restoredLogs/E00"));
    crashvfs_free(c);
}

static void logs_that_do_not_reach_what_the_header_requires_are_refused(void **s)
{
    (void)s;
    crashvfs *c = new_disk(10);
    om_vfs *v = crashvfs_vfs(c);
    chain ch;
    make_chain(c, &ch);
    assert_int_equal(v->mkdir(v, "/rdb"), 0);
    eng_opts orr = opts_of(c, "/rdb/r.edb", "/rdb/logs", "R00");
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    /* The full backup's database with only an incremental's logs. */
    lay_down(v, &ch.full, "/rdb/r.edb", "/rdb/logs", 1);
    for (uint32_t g = ch.full.first_gen; g <= ch.full.last_gen; g++) {
        char p[256];
        gen_name(p, sizeof p, "/rdb/logs/_restoredLogs", "E00", g);
        assert_int_equal(v->unlink(v, p), 0);
    }
    lay_down(v, &ch.inc1, NULL, "/rdb/logs", 0);
    assert_int_equal(eng_db_hard_recover(&ro, NULL), OM_E_RequiredLogFilesMissing);
    assert_non_null(strstr(om_err_detail(), "full backup"));
    /* No logs at all. */
    for (uint32_t g = ch.inc1.first_gen; g <= ch.inc1.last_gen; g++) {
        char p[256];
        gen_name(p, sizeof p, "/rdb/logs/_restoredLogs", "E00", g);
        assert_int_equal(v->unlink(v, p), 0);
    }
    assert_int_equal(eng_db_hard_recover(&ro, NULL), OM_E_RequiredLogFilesMissing);
    assert_non_null(strstr(om_err_detail(), "holds no logs"));
    /* Logs that end before the header's Log Required max. */
    lay_down(v, &ch.full, "/rdb/r.edb", "/rdb/logs", 1);
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(v, "/rdb/r.edb", &h, 0, NULL), 0);
    h.log_req_max = ch.full.last_gen + 2;
    om_file *f = NULL;
    assert_int_equal(om_open(v, "/rdb/r.edb", 0, &f), 0);
    assert_int_equal(eng_dbhdr_write(f, &h), 0);
    om_close(f);
    assert_int_equal(eng_db_hard_recover(&ro, NULL), OM_E_RequiredLogFilesMissing);
    char want[64];
    snprintf(want, sizeof want, "up to %u", ch.full.last_gen + 2);
    assert_non_null(strstr(om_err_detail(), want));
    crashvfs_free(c);
}

/* Garbles the last slot of data in generation g (file p): it looks like the end of the log,
 * and only the next generation's header tells otherwise. */
static void damage_last_data_slot(om_vfs *v, const char *p, uint32_t g)
{
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(om_read_file(v, p, &data, &n), 0);
    uint32_t last_slot = 0;
    for (uint32_t sl = 1; sl < ENG_LOG_SLOTS; sl++) {
        eng_seghdr sh;
        if (eng_seg_decode(data + (size_t)sl * ENG_SLOT_SIZE, g, (uint16_t)sl, &sh) == ENG_SEG_OK)
            last_slot = sl;
    }
    assert_true(last_slot > 1);
    memset(data + (size_t)last_slot * ENG_SLOT_SIZE + 100, 0x5A, 200);
    assert_int_equal(om_write_file_durable(v, p, data, n), 0);
    free(data);
}

static void damaged_restored_log_is_refused_naming_the_file(void **s)
{
    (void)s;
    crashvfs *c = new_disk(11);
    om_vfs *v = crashvfs_vfs(c);
    chain ch;
    make_chain(c, &ch);
    eng_opts orr = lay_down_chain(c, &ch);
    /* Damage the last slot of data in a generation in the middle: it looks like the end of
     * that log, but the next generation says where it really ended. */
    uint32_t g = ch.inc1.first_gen + 1;
    char p[256];
    gen_name(p, sizeof p, "/rdb/logs/_restoredLogs", "E00", g);
    damage_last_data_slot(v, p, g);
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    assert_int_equal(eng_db_hard_recover(&ro, NULL), OM_E_LogFileCorrupt);
    assert_non_null(strstr(om_err_detail(), p));
    /* Replay had begun: the database is marked, and mounting it as it is is refused. */
    eng_db *db = NULL;
    assert_int_equal(eng_db_open(&orr, &db), OM_E_RestoreInProgress);
    assert_non_null(strstr(om_err_detail(), "HINT"));
    /* Damage in the middle of the data, followed by later data. */
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(om_read_file(v, p, &data, &n), 0);
    memset(data + 1 * ENG_SLOT_SIZE + 100, 0x5A, 200);
    assert_int_equal(om_write_file_durable(v, p, data, n), 0);
    free(data);
    assert_int_equal(eng_db_hard_recover(&ro, NULL), OM_E_LogFileCorrupt);
    assert_non_null(strstr(om_err_detail(), p));
    crashvfs_free(c);
}

/* A crash at any sync of the hard recovery: running it again finishes the job. */
static void hard_recovery_interrupted_by_a_crash_finishes_when_run_again(void **s)
{
    (void)s;
    crashvfs *disk = new_disk(12);
    chain ch;
    NP = 40; /* more pages than the cache holds: replay flushes along the way */
    make_chain(disk, &ch);
    eng_opts orr = lay_down_chain(disk, &ch);
    orr.cache_bytes = 16 * ENG_PAGE_SIZE; /* replay flushes along the way */
    /* Old logs of the target's base in the folder: the crash may fall in the adoption of
     * their stream too. */
    eng_opts old = opts_of(disk, "/rdb/old.edb", "/rdb/logs", "R00");
    eng_db *b = create_db(&old);
    commit_k(b, 0, 5);
    assert_int_equal(eng_db_close(b), 0);
    int points = 0;
    const uint64_t every = crashvfs_every();
    for (uint64_t k = 1;; k += every) {
        crashvfs *c = crashvfs_clone(disk);
        assert_non_null(c);
        crashvfs_reseed(c, 100 + k);
        eng_opts o = orr;
        o.vfs = crashvfs_vfs(c);
        eng_restore_opts ro = ropts(&o, "/rdb/logs/_restoredLogs");
        crashvfs_crash_at_sync(c, k);
        int rc = eng_db_hard_recover(&ro, NULL);
        if (!crashvfs_crashed(c)) {
            assert_int_equal(rc, 0);
            crashvfs_free(c);
            break;
        }
        points++;
        crashvfs_reboot(c);
        eng_restore_result r;
        rc = eng_db_hard_recover(&ro, &r);
        if (rc)
            fail_msg("crash at sync %llu: the second run failed: %s", (unsigned long long)k,
                     om_err_detail());
        assert_clean(o.vfs, o.edb_path, "R00");
        assert_lives_on(c, &o, ch.upto_gen[ch.inc2.last_gen - 1], ch.total);
        crashvfs_free(c);
    }
    assert_true(points > 20 / (int)every);
    print_message("hard recovery survived a crash at each of its %d sync points\n", points);
    crashvfs_free(disk);
    NP = 6;
}

/* ---- the batched replay (recovery.c): batches, pages spread over the cores ---- */

static void assert_same_pages(om_vfs *a, om_vfs *b, const char *edb);

/* Pages changed by byte ranges and then by images (and new pages) within one generation, with
 * a cache of a few pages: many batches, recovery checkpoints and early write-backs of rebuilt
 * pages without the page journal. A crash at any sync of the replay, and for some a second one
 * during the rerun: the next run finishes with the very pages of a replay without a crash. */
static void replay_with_images_survives_crashes_at_every_sync_with_the_same_pages(void **s)
{
    (void)s;
    crashvfs *disk = new_disk(16);
    chain ch;
    NP = 8; /* each page changed by byte ranges, then by an image, and again */
    BIG = 1;
    make_chain(disk, &ch);
    BIG = 0; /* what assert_lives_on commits stays at its places */
    eng_opts orr = lay_down_chain(disk, &ch);
    orr.cache_bytes = 16 * ENG_PAGE_SIZE;
    crashvfs *ref = crashvfs_clone(disk);
    {
        eng_opts o = orr;
        o.vfs = crashvfs_vfs(ref);
        eng_restore_opts ro = ropts(&o, "/rdb/logs/_restoredLogs");
        assert_int_equal(eng_db_hard_recover(&ro, NULL), 0);
    }
    int points = 0, doubles = 0;
    const uint64_t every = crashvfs_every();
    for (uint64_t k = 1;; k += every) {
        crashvfs *c = crashvfs_clone(disk);
        crashvfs_reseed(c, 300 + k);
        eng_opts o = orr;
        o.vfs = crashvfs_vfs(c);
        eng_restore_opts ro = ropts(&o, "/rdb/logs/_restoredLogs");
        crashvfs_crash_at_sync(c, k);
        int rc = eng_db_hard_recover(&ro, NULL);
        if (!crashvfs_crashed(c)) {
            assert_int_equal(rc, 0);
            crashvfs_free(c);
            break;
        }
        points++;
        crashvfs_reboot(c);
        if (k % 3 == 0) { /* power lost again during the rerun */
            crashvfs_crash_at_sync(c, 1 + k % 5);
            (void)eng_db_hard_recover(&ro, NULL);
            doubles += crashvfs_crashed(c) != 0;
            crashvfs_reboot(c);
        }
        rc = eng_db_hard_recover(&ro, NULL);
        if (rc)
            fail_msg("crash at sync %llu: the rerun failed: %s", (unsigned long long)k,
                     om_err_detail());
        assert_same_pages(o.vfs, crashvfs_vfs(ref), o.edb_path);
        assert_lives_on(c, &o, ch.upto_gen[ch.inc2.last_gen - 1], ch.total);
        crashvfs_free(c);
    }
    print_message("replay with images: %d crash points, %d with a second crash in the rerun\n",
                  points, doubles);
    assert_true(points > 10 / (int)every && doubles > 2 / (int)every);
    crashvfs_free(ref);
    crashvfs_free(disk);
    NP = 6;
}

/* Records of several pages fail in one batch (two restored pages damaged): the error is the
 * one replaying record by record in log order would meet first, whatever page order the
 * workers take, and it names the generation it is in. */
static void the_first_failing_record_in_log_order_is_the_error(void **s)
{
    (void)s;
    crashvfs *c = new_disk(17);
    eng_opts o = live_opts(c);
    om_vfs *v = o.vfs;
    eng_db *db = create_db(&o);
    commits(db, 0, 10);
    /* The backup's checkpoint after the pages' first images: the logs to replay change them
     * by byte ranges only, which a damaged page cannot take. */
    assert_int_equal(eng_db_roll_log(db), 0);
    assert_int_equal(eng_checkpoint(db), 0);
    backup full, inc;
    backup_full(v, db, "/bk/full", &full);
    commits(db, 10, 40);
    backup_incremental(v, db, "/bk/inc", &full, &inc);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(v->mkdir(v, "/rdb"), 0);
    lay_down(v, &full, "/rdb/r.edb", "/rdb/logs", 1);
    lay_down(v, &inc, NULL, "/rdb/logs", 0);
    eng_opts orr = opts_of(c, "/rdb/r.edb", "/rdb/logs", "R00");
    /* Commit 10 changes page 5, commit 11 page 6, commit 13 page 2: pages 2 and 6 damaged,
     * page 6's record comes first in the log, page 2 first by number. */
    uint8_t junk[64];
    memset(junk, 0xA5, sizeof junk);
    om_file *f = NULL;
    assert_int_equal(om_open(v, orr.edb_path, 0, &f), 0);
    assert_int_equal(om_pwrite(f, junk, sizeof junk, eng_page_offset(2) + 2000), 0);
    assert_int_equal(om_pwrite(f, junk, sizeof junk, eng_page_offset(6) + 2000), 0);
    assert_int_equal(om_sync(f), 0);
    om_close(f);
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    eng_restore_result r;
    assert_int_equal(eng_db_hard_recover(&ro, &r), OM_E_ReadVerifyFailure);
    char p[256];
    gen_name(p, sizeof p, "/rdb/logs/_restoredLogs", "E00", inc.first_gen);
    if (!strstr(om_err_detail(), "page 6 ") || !strstr(om_err_detail(), p))
        fail_msg("expected page 6 and %s in: %s", p, om_err_detail());
    assert_true(r.last_gen < inc.first_gen);
    crashvfs_free(c);
}

/* A point in time that falls inside a batch (a cache of four pages, so batches of a few
 * records): the transactions before it are all there, none after it. */
static void a_point_in_time_inside_a_batch_keeps_exactly_the_commits_before_it(void **s)
{
    (void)s;
    crashvfs *c = new_disk(18);
    NP = 20;
    eng_opts o = live_opts(c);
    om_vfs *v = o.vfs;
    eng_db *db = create_db(&o);
    commits(db, 0, 20);
    assert_int_equal(eng_checkpoint(db), 0);
    backup full;
    backup_full(v, db, "/bk/full", &full);
    commits(db, 20, 53);
    uint64_t point = om_now_ns();
    commits(db, 53, 80);
    backup inc;
    backup_incremental(v, db, "/bk/inc", &full, &inc);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(v->mkdir(v, "/rdb"), 0);
    lay_down(v, &full, "/rdb/r.edb", "/rdb/logs", 1);
    lay_down(v, &inc, NULL, "/rdb/logs", 0);
    eng_opts orr = opts_of(c, "/rdb/r.edb", "/rdb/logs", "R00");
    orr.cache_bytes = 4 * ENG_PAGE_SIZE;
    eng_restore_opts ro = ropts(&orr, "/rdb/logs/_restoredLogs");
    ro.stop_time_ns = point;
    eng_restore_result r;
    assert_int_equal(eng_db_hard_recover(&ro, &r), 0);
    assert_true(r.stopped_at_point);
    assert_lives_on(c, &orr, 53, 80);
    crashvfs_free(c);
    NP = 6;
}

/* ---- logs still arriving: replay while the restore lays the logs down ---- */

#define RL    "/rdb/logs/_restoredLogs"
#define STAGE "/stage"

/* The restore's requester laying generations first..last (from STAGE) one by one into RL,
 * each under a temporary name, synced and renamed into place, with a small delay: it starts
 * once replay waits for one (replay then runs while files are missing), and stops before
 * stop_at when that is set (the restore died). No cmocka assertion here (another thread). */
typedef struct layer {
    om_vfs *v;
    uint32_t first, last, stop_at;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t laid;     /* every generation through this one is whole and in place */
    uint32_t asked;    /* the highest generation wait_laid was asked for */
    int stopped, quit; /* the layer is gone; the test is over (opens the gate) */
    int blocked;       /* wait_laid calls that had to wait */
    int out_of_order;  /* wait_laid asked for a lower generation than before */
    int ahead;         /* replay asked for more than ENG_READ_AHEAD generations past the one it
                          finished */
    int rc;            /* the layer's own failure */
    pthread_t th;
} layer;

static void nap_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static int lay_one(om_vfs *v, uint32_t g)
{
    char from[256], to[256];
    uint8_t *data = NULL;
    size_t n = 0;
    gen_name(from, sizeof from, STAGE, "E00", g);
    gen_name(to, sizeof to, RL, "E00", g);
    int rc = om_read_file(v, from, &data, &n);
    if (!rc) rc = om_write_file_durable(v, to, data, n);
    free(data);
    return rc;
}

static void *layer_main(void *arg)
{
    layer *L = arg;
    pthread_mutex_lock(&L->mu);
    while (!L->asked && !L->quit)
        pthread_cond_wait(&L->cv, &L->mu);
    uint32_t g = L->laid + 1;
    pthread_mutex_unlock(&L->mu);
    for (; g <= L->last && g != L->stop_at && !L->rc; g++) {
        nap_ms(2);
        L->rc = lay_one(L->v, g);
        pthread_mutex_lock(&L->mu);
        if (!L->rc) L->laid = g;
        pthread_cond_broadcast(&L->cv);
        pthread_mutex_unlock(&L->mu);
    }
    pthread_mutex_lock(&L->mu);
    L->stopped = 1;
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

/* wait_laid: waits on the layer's counter. */
static int wait_for_layer(void *arg, uint32_t gen)
{
    layer *L = arg;
    pthread_mutex_lock(&L->mu);
    if (gen < L->asked) L->out_of_order = 1;
    L->asked = gen;
    pthread_cond_broadcast(&L->cv);
    if (L->laid < gen) L->blocked++;
    while (L->laid < gen && !L->stopped)
        pthread_cond_wait(&L->cv, &L->mu);
    int ok = L->laid >= gen;
    pthread_mutex_unlock(&L->mu);
    return ok ? 0
              : om_errf(OM_E_MissingLogFile,
                        "the restore stopped before laying down log generation %u", gen);
}

/* replay_progress: generation gen is replayed; replay must not have asked past the read-ahead. */
static void layer_progress(void *arg, uint32_t gen, uint32_t first, uint32_t last)
{
    (void)first;
    (void)last;
    layer *L = arg;
    pthread_mutex_lock(&L->mu);
    if (L->asked > gen + ENG_READ_AHEAD) L->ahead = 1;
    pthread_mutex_unlock(&L->mu);
}

/* The chain is laid down in RL; generations first + 1 .. last move to STAGE (not there yet),
 * and the layer will bring them back. The first one is in place, as when the requester sends
 * PostRestore. */
static void layer_init(layer *L, crashvfs *c, uint32_t first, uint32_t last, uint32_t stop_at)
{
    memset(L, 0, sizeof *L);
    L->v = crashvfs_vfs(c);
    L->first = first;
    L->last = last;
    L->stop_at = stop_at;
    L->laid = first;
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv, NULL);
    if (L->v->exists(L->v, STAGE) != 2) assert_int_equal(L->v->mkdir(L->v, STAGE), 0);
    for (uint32_t g = first + 1; g <= last; g++) {
        char a[256], b[256];
        gen_name(a, sizeof a, RL, "E00", g);
        gen_name(b, sizeof b, STAGE, "E00", g);
        assert_int_equal(L->v->rename(L->v, a, b), 0);
    }
    assert_int_equal(pthread_create(&L->th, NULL, layer_main, L), 0);
}

static void layer_join(layer *L)
{
    pthread_mutex_lock(&L->mu);
    L->quit = 1;
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
    assert_int_equal(pthread_join(L->th, NULL), 0);
    assert_int_equal(L->rc, 0);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->cv);
}

/* Hard recovery with generations first..last arriving from the layer. */
static int replay_arriving(const eng_opts *orr, layer *L, eng_restore_result *r)
{
    eng_restore_opts ro = ropts(orr, RL);
    ro.arriving_first = L->first;
    ro.arriving_last = L->last;
    ro.wait_laid = wait_for_layer;
    ro.wait_arg = L;
    ro.target.replay_progress = layer_progress;
    ro.target.progress_arg = L;
    return eng_db_hard_recover(&ro, r);
}

/* The reference: the same restore replayed with every log in place (a copy of the disk). */
static crashvfs *replay_all_present(crashvfs *c, const eng_opts *orr, eng_restore_result *r)
{
    crashvfs *ref = crashvfs_clone(c);
    assert_non_null(ref);
    eng_opts o = *orr;
    o.vfs = crashvfs_vfs(ref);
    eng_restore_opts ro = ropts(&o, RL);
    ro.laid_unsynced = 0;
    assert_int_equal(eng_db_hard_recover(&ro, r), 0);
    assert_int_equal(r->held_back, 0);
    return ref;
}

/* Both restored databases hold the same pages. */
static void assert_same_pages(om_vfs *a, om_vfs *b, const char *edb)
{
    eng_dbhdr ha, hb;
    assert_int_equal(eng_dbhdr_read(a, edb, &ha, 0, NULL), 0);
    assert_int_equal(eng_dbhdr_read(b, edb, &hb, 0, NULL), 0);
    assert_int_equal(ha.pages, hb.pages);
    assert_int_equal(ha.dbtime, hb.dbtime);
    uint8_t *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(om_read_file(a, edb, &da, &na), 0);
    assert_int_equal(om_read_file(b, edb, &db, &nb), 0);
    for (uint32_t p = 1; p <= ha.pages; p++) {
        uint64_t off = eng_page_offset(p);
        assert_true(off + ENG_PAGE_SIZE <= na && off + ENG_PAGE_SIZE <= nb);
        if (memcmp(da + off, db + off, ENG_PAGE_SIZE))
            fail_msg("page %u differs from the restore with every log in place", p);
    }
    free(da);
    free(db);
}

static void assert_same_replay(const eng_restore_result *r, const eng_restore_result *ref)
{
    assert_int_equal(r->first_gen, ref->first_gen);
    assert_int_equal(r->last_gen, ref->last_gen);
    assert_int_equal(r->records, ref->records);
    assert_int_equal(r->transactions, ref->transactions);
    assert_int_equal(r->stream_gen, ref->stream_gen);
    assert_int_equal(r->new_stream, ref->new_stream);
}

/* The chain's restore replayed into orr is clean, page for page the reference's, and lives on
 * with every commit the chain holds; both disks freed. */
static void assert_as_ref(crashvfs *c, crashvfs *ref, const eng_opts *orr, const chain *ch)
{
    assert_clean(orr->vfs, orr->edb_path, "R00");
    assert_same_pages(orr->vfs, crashvfs_vfs(ref), orr->edb_path);
    assert_lives_on(c, orr, ch->upto_gen[ch->inc2.last_gen - 1], ch->total);
    crashvfs_free(ref);
    crashvfs_free(c);
}

static void replay_runs_while_the_logs_are_laid_down_and_gives_the_same_database(void **s)
{
    (void)s;
    crashvfs *c = new_disk(13);
    chain ch;
    make_chain(c, &ch);
    eng_opts orr = lay_down_chain(c, &ch);
    eng_restore_result want, r;
    crashvfs *ref = replay_all_present(c, &orr, &want);
    layer L;
    layer_init(&L, c, ch.full.first_gen, ch.inc2.last_gen, 0);
    int rc = replay_arriving(&orr, &L, &r);
    layer_join(&L);
    if (rc) fail_msg("hard recovery with the logs arriving: %s", om_err_detail());
    assert_same_replay(&r, &want);
    /* Replay ran while logs were missing, in order, within its read-ahead of the laying. */
    assert_true(L.blocked > 0);
    assert_false(L.out_of_order);
    assert_false(L.ahead);
    assert_int_equal(L.asked, ch.inc2.last_gen);
    assert_as_ref(c, ref, &orr, &ch);
}

static void laying_that_stops_midway_fails_the_replay_and_a_rerun_finishes_it(void **s)
{
    (void)s;
    crashvfs *c = new_disk(14);
    om_vfs *v = crashvfs_vfs(c);
    chain ch;
    make_chain(c, &ch);
    eng_opts orr = lay_down_chain(c, &ch);
    eng_restore_result want, r;
    crashvfs *ref = replay_all_present(c, &orr, &want);
    uint32_t k = ch.inc1.first_gen + 1;
    assert_true(k > ch.full.first_gen + 1 && k < ch.inc2.last_gen);
    layer L;
    layer_init(&L, c, ch.full.first_gen, ch.inc2.last_gen, k);
    int rc = replay_arriving(&orr, &L, &r);
    layer_join(&L);
    assert_int_equal(rc, OM_E_MissingLogFile);
    char name[64];
    snprintf(name, sizeof name, "log generation %u", k);
    assert_non_null(strstr(om_err_detail(), name));
    assert_int_equal(L.laid, k - 1);
    assert_true(r.last_gen < k);
    /* Replay had begun: the database is marked, and mounting it as it is is refused. */
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(v, orr.edb_path, &h, 0, NULL), 0);
    assert_true(h.flags & ENG_DBF_RESTORING);
    eng_db *db = NULL;
    assert_int_equal(eng_db_open(&orr, &db), OM_E_RestoreInProgress);
    /* The rest of the logs laid down (another restore of them), a rerun without any arriving
     * finishes the job with the same database. */
    for (uint32_t g = k; g <= ch.inc2.last_gen; g++)
        assert_int_equal(lay_one(v, g), 0);
    eng_restore_opts ro = ropts(&orr, RL);
    ro.laid_unsynced = 0; /* as dbutil recover runs it */
    rc = eng_db_hard_recover(&ro, &r);
    if (rc) fail_msg("the rerun: %s", om_err_detail());
    assert_int_equal(r.last_gen, want.last_gen);
    assert_clean(v, orr.edb_path, "R00");
    assert_same_pages(v, crashvfs_vfs(ref), orr.edb_path);
    assert_lives_on(c, &orr, ch.upto_gen[ch.inc2.last_gen - 1], ch.total);
    crashvfs_free(ref);
    crashvfs_free(c);
}

/* An .edb laid unsynced (a restore's, whose requester syncs it while the writer replays): the
 * records of pages within the laid file are applied after all the others, and the database is
 * page for page the one a replay in log order gives; with a cache of four pages the held-back
 * records are applied whenever they pass a quarter of it, and before each recovery checkpoint. */
static void laid_unsynced_replay(int small_cache)
{
    crashvfs *c = new_disk(small_cache ? 23 : 22);
    chain ch;
    make_chain(c, &ch);
    eng_opts orr = lay_down_chain(c, &ch);
    if (small_cache) orr.cache_bytes = 4 * ENG_PAGE_SIZE;
    eng_restore_result want, r;
    crashvfs *ref = replay_all_present(c, &orr, &want);
    laid_unsynced = 1;
    eng_restore_opts ro = ropts(&orr, RL);
    laid_unsynced = 0;
    /* the .edb's sync (on the recovery's thread for it) takes a while, as a disk's: nothing else
     * syncs before replay's end */
    crashvfs_set_sync_delay(c, 300 * 1000);
    int rc = eng_db_hard_recover(&ro, &r);
    crashvfs_set_sync_delay(c, 0);
    if (rc) fail_msg("hard recovery of an .edb laid unsynced: %s", om_err_detail());
    assert_same_replay(&r, &want);
    /* both kinds: records of laid pages held back, and of pages past the laid file not */
    if (!(r.held_back > 0 && r.held_back < r.records))
        fail_msg("held back %llu of %llu records", (unsigned long long)r.held_back,
                 (unsigned long long)r.records);
    assert_as_ref(c, ref, &orr, &ch);
}

static void an_edb_laid_unsynced_takes_its_laid_pages_last_and_gives_the_same_database(void **s)
{
    (void)s;
    laid_unsynced_replay(0);
}

static void the_same_with_a_cache_of_four_pages(void **s)
{
    (void)s;
    laid_unsynced_replay(1);
}

/* The held-back records are applied once they pass hold_max, whatever the cache (a store with a
 * cache of gigabytes would otherwise hold back gigabytes): held back without a cap, then with a
 * cap of an eighth of that peak; the same database both ways. A cache of 16 pages: batches of a
 * few records, and a quarter (128 KiB) far above what the chain holds back (3 KB). */
static void held_back_records_are_applied_at_the_cap_whatever_the_cache(void **s)
{
    (void)s;
    uint64_t peak[2] = {0};
    for (int capped = 0; capped < 2; capped++) {
        crashvfs *c = new_disk(24);
        chain ch;
        make_chain(c, &ch);
        eng_opts orr = lay_down_chain(c, &ch);
        orr.cache_bytes = 16 * ENG_PAGE_SIZE;
        eng_restore_result want, r;
        crashvfs *ref = replay_all_present(c, &orr, &want);
        laid_unsynced = 1;
        eng_restore_opts ro = ropts(&orr, RL);
        laid_unsynced = 0;
        ro.hold_max = capped ? peak[0] / 8 : 0;
        crashvfs_set_sync_delay(c, 300 * 1000); /* the flush outlasts the replay */
        int rc = eng_db_hard_recover(&ro, &r);
        crashvfs_set_sync_delay(c, 0);
        if (rc)
            fail_msg("hard recovery, hold_max %llu: %s", (unsigned long long)ro.hold_max,
                     om_err_detail());
        assert_same_replay(&r, &want);
        assert_as_ref(c, ref, &orr, &ch);
        peak[capped] = r.held_peak;
    }
    /* uncapped: nothing drained before the flush's end; capped: whenever it passed an eighth */
    if (!(peak[0] >= 1024 && peak[1] < peak[0] / 2))
        fail_msg("held back at most %llu bytes uncapped, %llu with a cap of %llu",
                 (unsigned long long)peak[0], (unsigned long long)peak[1],
                 (unsigned long long)(peak[0] / 8));
}

/* A laying that stops midway with the .edb laid unsynced: the rerun (dbutil recover's, with the
 * file synced by then) gives the same database. */
static void laid_unsynced_laying_that_stops_midway_is_finished_by_a_rerun(void **s)
{
    laid_unsynced = 1;
    laying_that_stops_midway_fails_the_replay_and_a_rerun_finishes_it(s);
    laid_unsynced = 0;
}

/* Held back, the damaged pages' records still give the first failing one in log order. */
static void laid_unsynced_the_first_failing_record_in_log_order_is_the_error(void **s)
{
    laid_unsynced = 1;
    the_first_failing_record_in_log_order_is_the_error(s);
    laid_unsynced = 0;
}

static void an_old_file_under_an_arriving_generations_name_is_never_read(void **s)
{
    (void)s;
    crashvfs *c = new_disk(15);
    om_vfs *v = crashvfs_vfs(c);
    chain ch;
    make_chain(c, &ch);
    /* Another database's logs, of the same base name and numbers. */
    assert_int_equal(v->mkdir(v, "/x"), 0);
    eng_opts ox = opts_of(c, "/x/x.edb", "/x/logs", "E00");
    eng_db *x = create_db(&ox);
    for (uint32_t k = 0; k <= ch.inc2.last_gen; k++) {
        commit_k(x, k, 99);
        assert_int_equal(eng_db_roll_log(x), 0);
    }
    assert_int_equal(eng_db_close(x), 0);
    eng_opts orr = lay_down_chain(c, &ch);
    eng_restore_result want, r;
    crashvfs *ref = replay_all_present(c, &orr, &want);
    layer L;
    layer_init(&L, c, ch.full.first_gen, ch.inc2.last_gen, 0);
    /* Left by an earlier restore: every generation still to come is there, a wrong one. The
     * layer starts only when replay waits, so reading any of them first would fail. */
    copy_gens(v, "/x/logs", RL, "E00", ch.full.first_gen + 1, ch.inc2.last_gen);
    int rc = replay_arriving(&orr, &L, &r);
    layer_join(&L);
    if (rc) fail_msg("hard recovery with old files in the way: %s", om_err_detail());
    assert_same_replay(&r, &want);
    assert_true(L.blocked > 0);
    assert_false(L.ahead);
    assert_same_pages(v, crashvfs_vfs(ref), orr.edb_path);
    assert_lives_on(c, &orr, ch.upto_gen[ch.inc2.last_gen - 1], ch.total);
    crashvfs_free(ref);
    crashvfs_free(c);
}

/* Replay checks each generation against the next one's header: with the next one still to
 * come, it waits for it rather than take the damage for the end of the log. */
static void a_damaged_generation_is_caught_when_the_next_one_is_still_arriving(void **s)
{
    (void)s;
    crashvfs *c = new_disk(16);
    om_vfs *v = crashvfs_vfs(c);
    chain ch;
    make_chain(c, &ch);
    eng_opts orr = lay_down_chain(c, &ch);
    uint32_t g = ch.inc1.first_gen + 1;
    char p[256];
    gen_name(p, sizeof p, RL, "E00", g);
    damage_last_data_slot(v, p, g);
    layer L;
    layer_init(&L, c, ch.full.first_gen, ch.inc2.last_gen, 0);
    eng_restore_result r;
    int rc = replay_arriving(&orr, &L, &r);
    layer_join(&L);
    assert_int_equal(rc, OM_E_LogFileCorrupt);
    assert_non_null(strstr(om_err_detail(), p));
    crashvfs_free(c);
}

/* ---- the restore's folder leaves in one rename (eng_restored_retire, eng_retired_*) ---- */

enum { RETIRE_GENS = 5 };

/* <logs>/_restoredLogs as a restore leaves it for PostRestore, everything durable. */
static void restored_folder(om_vfs *v, const char *logs)
{
    char p[256];
    assert_int_equal(v->mkdir(v, "/rdb"), 0);
    assert_int_equal(v->mkdir(v, logs), 0);
    snprintf(p, sizeof p, "%s/_restoredLogs", logs);
    assert_int_equal(v->mkdir(v, p), 0);
    assert_int_equal(v->sync_dir(v, "/rdb"), 0);
    assert_int_equal(v->sync_dir(v, logs), 0);
    for (uint32_t g = 1; g <= RETIRE_GENS + 2; g++) {
        char name[64];
        if (g <= RETIRE_GENS)
            snprintf(name, sizeof name, "E00%08X.log", g);
        else
            snprintf(name, sizeof name, "E00restore.%s", g == RETIRE_GENS + 1 ? "env" : "laid");
        snprintf(p, sizeof p, "%s/_restoredLogs/%s", logs, name);
        assert_int_equal(om_write_file_durable(v, p, name, strlen(name)), 0);
    }
}

typedef struct seen_names {
    int restored, retired;
    char retired_name[64];
} seen_names;

static int see_name(void *arg, const char *name)
{
    seen_names *s = arg;
    if (!strcmp(name, "_restoredLogs")) s->restored++;
    if (eng_retired_name(name)) {
        s->retired++;
        snprintf(s->retired_name, sizeof s->retired_name, "%s", name);
    }
    return 0;
}

static int count_names(void *arg, const char *name)
{
    (void)name;
    (*(int *)arg)++;
    return 0;
}

static int names_in(om_vfs *v, const char *dir)
{
    int n = 0;
    assert_int_equal(v->list(v, dir, count_names, &n), 0);
    return n;
}

static void retired_names_are_exactly_the_prefix_and_16_hex_digits(void **state)
{
    (void)state;
    assert_true(eng_retired_name("_retiredLogs.0123456789abcdef"));
    assert_false(eng_retired_name("_retiredLogs.0123456789ABCDEF"));
    assert_false(eng_retired_name("_retiredLogs.0123456789abcde"));
    assert_false(eng_retired_name("_retiredLogs.0123456789abcdef0"));
    assert_false(eng_retired_name("_restoredLogs"));
    assert_false(eng_retired_name("E0000000001.log"));
    /* no name of a log stream can be one: a base is three letters or digits */
    assert_false(eng_base_valid("_re"));
}

/* Power lost at every sync of the retirement and the removal after it, and after both:
 * afterwards the restore is either still pending (_restoredLogs whole, with its .env, and no
 * retired folder) or not (no _restoredLogs), never half; what a crash left retired is removed
 * by the next sweep. */
static void retiring_the_restore_folder_survives_a_crash_at_every_sync(void **state)
{
    (void)state;
    const char *logs = "/rdb/logs";
    crashvfs *disk = new_disk(40);
    restored_folder(crashvfs_vfs(disk), logs);
    uint64_t base_syncs = crashvfs_syncs(disk);
    crashvfs *dry = crashvfs_clone(disk);
    assert_int_equal(eng_restored_remove(crashvfs_vfs(dry), logs, "E00"), 0);
    uint64_t points = crashvfs_syncs(dry) - base_syncs;
    assert_int_equal(names_in(crashvfs_vfs(dry), logs), 0);
    crashvfs_free(dry);
    assert_true(points >= 1);
    int pending = 0, done = 0;
    /* each point (and none: n = points + 1), several ways of coming back (fewer under
     * OMBRA_CRASH_EVERY, never fewer points) */
    for (uint64_t k = 0; k < 8 * (points + 1); k += crashvfs_every() < 8 ? crashvfs_every() : 8) {
        uint64_t n = 1 + k / 8;
        crashvfs *c = crashvfs_clone(disk);
        om_vfs *v = crashvfs_vfs(c);
        crashvfs_reseed(c, 100 + k);
        if (n <= points) crashvfs_crash_at_sync(c, n);
        int rc = eng_restored_remove(v, logs, "E00");
        assert_true(n <= points ? rc == OM_E_Crashed : rc == 0);
        crashvfs_reboot(c);
        seen_names s = {0};
        assert_int_equal(v->list(v, logs, see_name, &s), 0);
        assert_true(s.restored + s.retired <= 1);
        if (s.restored) {
            /* still pending: whole, the .env with it */
            assert_int_equal(v->exists(v, "/rdb/logs/_restoredLogs/E00restore.env"), 1);
            assert_int_equal(names_in(v, "/rdb/logs/_restoredLogs"), RETIRE_GENS + 2);
            pending++;
        } else {
            done++;
        }
        if (s.retired) { /* the next restore into the folder removes it */
            om_dir *ld = NULL;
            int removed = 0;
            assert_int_equal(om_dir_open(v, NULL, logs, 0, &ld), 0);
            assert_int_equal(eng_retired_sweep(ld, &removed), 0);
            assert_int_equal(removed, 1);
            om_dir_close(ld);
            assert_int_equal(names_in(v, logs), 0);
        }
        crashvfs_free(c);
    }
    assert_true(pending > 0 && done > 0);
    crashvfs_free(disk);
}

/* A name no restore writes: in _restoredLogs the restore stays pending (refused, folder kept);
 * in a retired folder the folder stays (the sweep warns and goes on to the next one); a file
 * under a retired folder's name is left alone. */
static void only_restore_names_are_removed_from_restore_folders(void **state)
{
    (void)state;
    const char *logs = "/rdb/logs";
    crashvfs *c = new_disk(41);
    om_vfs *v = crashvfs_vfs(c);
    restored_folder(v, logs);
    assert_int_equal(om_write_file_durable(v, "/rdb/logs/_restoredLogs/notes.txt", "x", 1), 0);
    char retired[ENG_RETIRED_NAME_MAX];
    assert_int_equal(eng_restored_retire(v, logs, "E00", retired, sizeof retired),
                     OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "notes.txt"));
    assert_int_equal(retired[0], 0);
    assert_int_equal(names_in(v, "/rdb/logs/_restoredLogs"), RETIRE_GENS + 3);
    assert_int_equal(v->unlink(v, "/rdb/logs/_restoredLogs/notes.txt"), 0);

    assert_int_equal(eng_restored_retire(v, logs, "E00", retired, sizeof retired), 0);
    assert_true(eng_retired_name(retired));
    assert_int_equal(v->exists(v, "/rdb/logs/_restoredLogs"), 0);
    char p[256];
    snprintf(p, sizeof p, "%s/%s/E00restore.env", logs, retired);
    assert_int_equal(v->exists(v, p), 1);
    /* a stray file in it: the folder stays, with that file */
    snprintf(p, sizeof p, "%s/%s/keep.me", logs, retired);
    assert_int_equal(om_write_file_durable(v, p, "x", 1), 0);
    /* a second retired folder (of another base), and a file under a retired name */
    assert_int_equal(v->mkdir(v, "/rdb/logs/_retiredLogs.00000000000000aa"), 0);
    assert_int_equal(
        om_write_file_durable(v, "/rdb/logs/_retiredLogs.00000000000000aa/E01000000A1.log", "x", 1),
        0);
    assert_int_equal(om_write_file_durable(v, "/rdb/logs/_retiredLogs.00000000000000bb", "x", 1),
                     0);
    om_dir *ld = NULL;
    int removed = 0;
    assert_int_equal(om_dir_open(v, NULL, logs, 0, &ld), 0);
    assert_int_equal(eng_retired_sweep(ld, &removed), 0);
    om_dir_close(ld);
    assert_int_equal(removed, 1);
    assert_int_equal(v->exists(v, "/rdb/logs/_retiredLogs.00000000000000aa"), 0);
    assert_int_equal(v->exists(v, "/rdb/logs/_retiredLogs.00000000000000bb"), 1);
    assert_int_equal(v->exists(v, p), 1);
    snprintf(p, sizeof p, "%s/%s", logs, retired);
    assert_int_equal(names_in(v, p), 1); /* only the stray file */
    assert_int_equal(eng_retired_remove(v, logs, retired), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "keep.me"));
    assert_int_equal(eng_retired_remove(v, logs, "_restoredLogs"), OM_E_InvalidParameter);
    crashvfs_free(c);
}

int main(void)
{
    /* The failures these tests cause on purpose would fill the output. */
    if (!getenv("OMBRA_DEBUG")) om_log_min_level(OM_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(original_database_rolls_forward_through_the_later_logs_in_its_folder),
        cmocka_unit_test(
            original_database_without_roll_forward_stops_at_the_backup_and_starts_a_new_stream),
        cmocka_unit_test(restore_to_another_database_adopts_its_log_stream),
        cmocka_unit_test(recovery_database_in_an_empty_folder_starts_a_new_stream),
        cmocka_unit_test(full_and_incrementals_restored_together_replay_in_one_go),
        cmocka_unit_test(point_in_time_by_generation_applies_no_later_generation),
        cmocka_unit_test(point_in_time_by_commit_time_stops_mid_generation),
        cmocka_unit_test(missing_generation_in_the_restored_range_is_named),
        cmocka_unit_test(logs_of_another_database_are_refused),
        cmocka_unit_test(logs_that_do_not_reach_what_the_header_requires_are_refused),
        cmocka_unit_test(damaged_restored_log_is_refused_naming_the_file),
        cmocka_unit_test(hard_recovery_interrupted_by_a_crash_finishes_when_run_again),
        cmocka_unit_test(replay_with_images_survives_crashes_at_every_sync_with_the_same_pages),
        cmocka_unit_test(the_first_failing_record_in_log_order_is_the_error),
        cmocka_unit_test(a_point_in_time_inside_a_batch_keeps_exactly_the_commits_before_it),
        cmocka_unit_test(replay_runs_while_the_logs_are_laid_down_and_gives_the_same_database),
        cmocka_unit_test(laying_that_stops_midway_fails_the_replay_and_a_rerun_finishes_it),
        cmocka_unit_test(
            an_edb_laid_unsynced_takes_its_laid_pages_last_and_gives_the_same_database),
        cmocka_unit_test(the_same_with_a_cache_of_four_pages),
        cmocka_unit_test(held_back_records_are_applied_at_the_cap_whatever_the_cache),
        cmocka_unit_test(laid_unsynced_laying_that_stops_midway_is_finished_by_a_rerun),
        cmocka_unit_test(laid_unsynced_the_first_failing_record_in_log_order_is_the_error),
        cmocka_unit_test(an_old_file_under_an_arriving_generations_name_is_never_read),
        cmocka_unit_test(a_damaged_generation_is_caught_when_the_next_one_is_still_arriving),
        cmocka_unit_test(retired_names_are_exactly_the_prefix_and_16_hex_digits),
        cmocka_unit_test(retiring_the_restore_folder_survives_a_crash_at_every_sync),
        cmocka_unit_test(only_restore_names_are_removed_from_restore_folders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
