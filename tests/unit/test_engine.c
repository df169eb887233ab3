/* Engine behaviour a user relies on: what commits survives, what does not commit never shows,
 * failures are sticky and clear, the disk filling up loses nothing, the backup hooks do what
 * the writer needs. Runs on the in-memory crash VFS (tests/support/crashvfs.h). */
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

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "crashvfs.h"
#include "engine/db_internal.h"
#include "engine/engine.h"
#include "engine/format.h"
#include "engine/table.h"

static eng_opts opts_on(crashvfs *c)
{
    eng_opts o = {0};
    o.vfs = crashvfs_vfs(c);
    o.edb_path = "/db/mail.edb";
    o.log_dir = "/db/logs";
    o.base = "E00";
    return o;
}

static crashvfs *new_disk(void)
{
    crashvfs *c = crashvfs_new(42);
    assert_non_null(c);
    assert_int_equal(crashvfs_vfs(c)->mkdir(crashvfs_vfs(c), "/db"), 0);
    return c;
}

static uint8_t body[ENG_PAGE_BODY], body2[ENG_PAGE_BODY];

/* Power loss with the database open, then a mount (which recovers). */
static eng_db *crash_and_remount(crashvfs *c, const eng_opts *o, eng_db *db)
{
    eng_db_abandon(db);
    crashvfs_reboot(c);
    assert_int_equal(eng_db_open(o, &db), 0);
    assert_int_equal(eng_db_check_invariants(db), 0);
    return db;
}

/* One transaction that fills `len` bytes of page pgno (allocating it when pgno is 0). */
static uint32_t put(eng_db *db, uint32_t pgno, uint8_t fill, uint32_t off, uint32_t len,
                    unsigned flags)
{
    eng_txn *t = NULL;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    if (pgno == 0) assert_int_equal(eng_page_alloc(t, 9, &pgno), 0);
    memset(body, fill, len);
    assert_int_equal(eng_page_write(t, pgno, off, body, len), 0);
    assert_int_equal(eng_txn_commit(t, flags), 0);
    return pgno;
}

static void assert_page_byte(eng_db *db, uint32_t pgno, uint32_t off, uint8_t want)
{
    assert_int_equal(eng_page_read(db, pgno, body2), 0);
    assert_int_equal(body2[off], want);
}

static void committed_data_survives_clean_shutdown_and_header_says_clean(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p1 = put(db, 0, 0xAB, 100, 4096, 0);
    uint32_t p2 = put(db, 0, 0xCD, 0, ENG_PAGE_BODY, 0);
    assert_int_equal(eng_db_close(db), 0);
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(o.vfs, o.edb_path, &h, 0, NULL), 0);
    assert_int_equal(h.state, ENG_STATE_CLEAN);
    assert_int_equal(h.pages, 2);
    assert_int_equal(h.log_req_min, 0);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_page_byte(db, p1, 100, 0xAB);
    assert_page_byte(db, p1, 99, 0);
    assert_page_byte(db, p2, ENG_PAGE_BODY - 1, 0xCD);
    assert_int_equal(eng_dbhdr_read(o.vfs, o.edb_path, &h, 0, NULL), 0);
    assert_int_equal(h.state, ENG_STATE_DIRTY);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void rolled_back_changes_never_appear(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 10, 0);
    eng_txn *t = NULL;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    memset(body, 7, 10);
    assert_int_equal(eng_page_write(t, p, 0, body, 10), 0);
    uint32_t np = 0;
    assert_int_equal(eng_page_alloc(t, 9, &np), 0);
    /* The transaction sees its own change; others do not. */
    assert_int_equal(eng_txn_page_read(t, p, body2), 0);
    assert_int_equal(body2[0], 7);
    assert_int_equal(eng_page_read(db, p, body2), 0);
    assert_int_equal(body2[0], 1);
    eng_txn_rollback(t);
    assert_page_byte(db, p, 0, 1);
    assert_int_equal(eng_page_read(db, np, body2), OM_E_InvalidParameter);
    /* And not after a crash either. */
    db = crash_and_remount(c, &o, db);
    assert_page_byte(db, p, 0, 1);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.pages, 1);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void durable_commit_survives_power_loss_lazy_may_not(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 0x11, 0, 100, 0);
    put(db, p, 0x22, 200, 100, 0);
    put(db, p, 0x33, 400, 100, ENG_COMMIT_LAZY); /* never flushed */
    db = crash_and_remount(c, &o, db);
    assert_page_byte(db, p, 0, 0x11);
    assert_page_byte(db, p, 200, 0x22);
    assert_page_byte(db, p, 400, 0); /* the lazy commit was never made durable */
    put(db, p, 0x44, 400, 100, ENG_COMMIT_LAZY);
    assert_int_equal(eng_log_flush(db), 0); /* now it is */
    db = crash_and_remount(c, &o, db);
    assert_page_byte(db, p, 400, 0x44);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void durable_commit_that_changes_nothing_still_makes_lazy_commits_durable(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 0x11, 0, 100, 0);
    put(db, p, 0x22, 0, 100, ENG_COMMIT_LAZY);
    eng_txn *t = NULL;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    memset(body, 0x22, 100); /* the bytes the page already has: nothing to log */
    assert_int_equal(eng_page_write(t, p, 0, body, 100), 0);
    assert_int_equal(eng_txn_commit(t, 0), 0);
    db = crash_and_remount(c, &o, db);
    assert_page_byte(db, p, 0, 0x22);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void create_refuses_existing_database_and_foreign_logs(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(eng_db_create(&o, &db), OM_E_DatabaseDuplicate);
    eng_opts o2 = o;
    o2.edb_path = "/db/other.edb"; /* same log folder and base name */
    assert_int_equal(eng_db_create(&o2, &db), OM_E_DatabaseDuplicate);
    assert_non_null(strstr(om_err_detail(), "/db/logs"));
    o2.base = "E01";
    assert_int_equal(eng_db_create(&o2, &db), 0);
    assert_int_equal(eng_db_close(db), 0);
    o2.base = "E0";
    assert_int_equal(eng_db_create(&o2, &db), OM_E_InvalidParameter);
    o.edb_path = "/nowhere/x.edb";
    assert_int_equal(eng_db_open(&o, &db), OM_E_FileNotFound);
    crashvfs_free(c);
}

static void failed_fsync_is_sticky_until_remount(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 0x10, 0, 64, 0);
    assert_int_equal(crashvfs_fail_next(c, CRASHVFS_SYNC, OM_E_DiskIO), 0);
    eng_txn *t = NULL;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    memset(body, 0x20, 64);
    assert_int_equal(eng_page_write(t, p, 0, body, 64), 0);
    assert_int_equal(eng_txn_commit(t, 0), OM_E_FatalIO);
    /* Everything after is refused, even though the disk works again. */
    assert_int_equal(eng_txn_begin(db, &t), OM_E_FatalIO);
    assert_non_null(strstr(om_err_detail(), "HINT"));
    assert_int_equal(eng_checkpoint(db), OM_E_FatalIO);
    assert_int_equal(eng_db_close(db), OM_E_FatalIO);
    /* Remount recovers. The acknowledged commit is there, or the unacknowledged one whose
     * fsync failed (its write may have reached the disk anyway), whole. */
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_int_equal(eng_page_read(db, p, body2), 0);
    assert_true(body2[0] == 0x10 || body2[0] == 0x20);
    assert_int_equal(body2[63], body2[0]);
    put(db, p, 0x30, 0, 64, 0);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void disk_full_uses_reserve_logs_refuses_writes_then_resumes(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 10, 0);
    /* No room for anything new: the next roll must take a reserve log. */
    crashvfs_set_space_limit(c, 1);
    int refused = 0, acked = 0;
    for (int i = 0; i < 2000 && !refused; i++) {
        eng_txn *t = NULL;
        int rc = eng_txn_begin(db, &t);
        if (rc) {
            assert_int_equal(rc, OM_E_LogDiskFull);
            assert_non_null(strstr(om_err_detail(), "HINT"));
            refused = 1;
            break;
        }
        memset(body, (uint8_t)i, 8000);
        assert_int_equal(eng_page_write(t, p, 0, body, 8000), 0);
        assert_int_equal(eng_txn_commit(t, 0), 0); /* every commit that began completes */
        acked = i;
    }
    assert_true(refused);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_true(in.log_disk_full);
    assert_false(in.fatal);
    assert_page_byte(db, p, 0, (uint8_t)acked);
    /* Space returns: writes resume by themselves. */
    crashvfs_set_space_limit(c, 0);
    put(db, p, 0xEE, 0, 10, 0);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_false(in.log_disk_full);
    db = crash_and_remount(c, &o, db);
    assert_page_byte(db, p, 0, 0xEE);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void database_growth_on_full_disk_fails_the_call_not_the_database(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    crashvfs_set_space_limit(c, 1);
    eng_txn *t = NULL;
    uint32_t pg;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    assert_int_equal(eng_page_alloc(t, 1, &pg), OM_E_DiskFull);
    eng_txn_rollback(t);
    crashvfs_set_space_limit(c, 0);
    put(db, 0, 5, 0, 5, 0);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

typedef struct reader_arg {
    eng_db *db;
    uint32_t p1, p2;
    _Atomic int stop;
    int torn;
    long reads;
} reader_arg;

static void *reader(void *a)
{
    reader_arg *r = a;
    static _Thread_local uint8_t b1[ENG_PAGE_BODY], b2[ENG_PAGE_BODY];
    while (!r->stop) {
        /* Both pages change in one transaction; a reader must never see one without the
         * other, nor a half-written page. */
        if (eng_page_read(r->db, r->p1, b1) || eng_page_read(r->db, r->p2, b2)) continue;
        if (b1[0] != b1[ENG_PAGE_BODY - 1] || b2[0] != b2[ENG_PAGE_BODY - 1]) r->torn++;
        if (b1[0] > b2[0]) r->torn++; /* p1 written after p2 was committed: never ahead */
        r->reads++;
    }
    return NULL;
}

static void readers_never_see_uncommitted_or_half_written_pages(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    reader_arg ra = {.db = db};
    ra.p1 = put(db, 0, 0, 0, ENG_PAGE_BODY, 0);
    ra.p2 = put(db, 0, 0, 0, ENG_PAGE_BODY, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader, &ra), 0);
    for (int i = 1; i < 200; i++) {
        eng_txn *t = NULL;
        assert_int_equal(eng_txn_begin(db, &t), 0);
        memset(body, i, ENG_PAGE_BODY);
        assert_int_equal(eng_page_write(t, ra.p2, 0, body, ENG_PAGE_BODY), 0);
        assert_int_equal(eng_page_write(t, ra.p1, 0, body, ENG_PAGE_BODY / 2), 0);
        assert_int_equal(eng_page_write(t, ra.p1, ENG_PAGE_BODY / 2, body, ENG_PAGE_BODY / 2), 0);
        if (i % 7 == 0)
            eng_txn_rollback(t);
        else
            assert_int_equal(eng_txn_commit(t, i % 2 ? ENG_COMMIT_LAZY : 0), 0);
    }
    ra.stop = 1;
    pthread_join(th, NULL);
    assert_int_equal(ra.torn, 0);
    assert_true(ra.reads > 0);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void freeze_rolls_generation_and_holds_writers_until_thaw(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    put(db, 0, 1, 0, 10, 0);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    uint32_t gen_before = in.gen_current, last = 0;
    eng_lgpos mark;
    assert_int_equal(eng_backup_freeze(db, ENG_BK_FULL, &mark, &last), 0);
    assert_int_equal(last, gen_before);
    assert_int_equal(mark.gen, gen_before);
    /* The finished generation is on disk under its numbered name. */
    char p[256];
    eng_log_path(p, sizeof p, "/db/logs", "E00", last);
    assert_int_equal(o.vfs->exists(o.vfs, p), 1);
    assert_int_equal(eng_backup_thaw(db), 0);
    assert_int_equal(eng_backup_thaw(db), OM_E_InvalidBackupSequence);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.gen_current, gen_before + 1);
    put(db, 1, 2, 0, 10, 0);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void truncation_never_deletes_at_or_above_the_checkpoint(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    o.checkpoint_gens = 1000; /* only explicit checkpoints */
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 10, 0);
    for (int i = 0; i < 5; i++) {
        put(db, p, (uint8_t)i, 0, 100, 0);
        assert_int_equal(eng_db_roll_log(db), 0);
    }
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    uint32_t deleted = 0;
    /* The checkpoint is still at the first generation: nothing may go. */
    assert_int_equal(eng_truncate_logs(db, in.gen_current, &deleted), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(eng_checkpoint(db), 0);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.checkpoint.gen, in.gen_current);
    assert_int_equal(eng_truncate_logs(db, in.gen_current - 2, &deleted), 0);
    assert_int_equal(deleted, in.gen_current - 3);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.gen_oldest, in.gen_current - 2);
    /* Recovery still works from what remains. */
    db = crash_and_remount(c, &o, db);
    assert_page_byte(db, p, 0, 4);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void backup_slot_is_logged_and_survives_recovery(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    eng_bkslot inc = {2, 3, {3, 0}, 111, ENG_BK_INCREMENTAL},
               full = {1, 4, {4, 72}, 222, ENG_BK_FULL};
    assert_int_equal(eng_record_backup(db, ENG_BK_PREV_INCREMENTAL, &inc), 0);
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(o.vfs, o.edb_path, &h, 0, NULL), 0);
    assert_int_equal(h.slots[ENG_BK_PREV_INCREMENTAL].last_gen, 3);
    assert_int_equal(eng_record_backup(db, ENG_BK_PREV_FULL, &full), 0);
    assert_int_equal(eng_dbhdr_read(o.vfs, o.edb_path, &h, 0, NULL), 0);
    assert_int_equal(h.slots[ENG_BK_PREV_FULL].mark_time, 222);
    assert_int_equal(h.slots[ENG_BK_PREV_INCREMENTAL].kind, 0); /* cleared by the full */
    assert_int_equal(eng_record_backup(db, ENG_BK_NSLOTS, &full), OM_E_InvalidParameter);
    /* Replay rebuilds the slot from the log even when the header write is lost: put back the
     * old header (as if the header write had never reached the disk) and recover. */
    eng_db_abandon(db);
    crashvfs_reboot(c);
    assert_int_equal(eng_dbhdr_read(o.vfs, o.edb_path, &h, 0, NULL), 0);
    memset(&h.slots, 0, sizeof h.slots);
    om_file *f = NULL;
    assert_int_equal(om_open(o.vfs, o.edb_path, 0, &f), 0);
    assert_int_equal(eng_dbhdr_write(f, &h), 0);
    om_close(f);
    assert_int_equal(eng_db_open(&o, &db), 0);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.slots[ENG_BK_PREV_FULL].mark_time, 222);
    assert_int_equal(in.slots[ENG_BK_PREV_FULL].last_gen, 4);
    assert_int_equal(in.slots[ENG_BK_PREV_INCREMENTAL].kind, 0);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void hold_keeps_pages_out_of_the_database_file(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 10, 0);
    assert_int_equal(eng_checkpoint(db), 0);
    uint8_t before[ENG_PAGE_SIZE], after[ENG_PAGE_SIZE];
    om_file *f = NULL;
    assert_int_equal(om_open(o.vfs, o.edb_path, OM_O_RDONLY, &f), 0);
    assert_int_equal(om_pread_full(f, before, sizeof before, eng_page_offset(p)), 0);
    assert_int_equal(eng_hold_pages(db), 0);
    put(db, p, 2, 0, 10, 0);
    assert_int_equal(eng_checkpoint(db), 0);
    assert_int_equal(om_pread_full(f, after, sizeof after, eng_page_offset(p)), 0);
    assert_memory_equal(before, after, sizeof before); /* held: the file did not change */
    assert_int_equal(eng_release_pages(db), 0);
    assert_int_equal(eng_release_pages(db), OM_E_InvalidBackupSequence);
    assert_int_equal(eng_checkpoint(db), 0);
    assert_int_equal(om_pread_full(f, after, sizeof after, eng_page_offset(p)), 0);
    assert_memory_not_equal(before, after, sizeof before);
    om_close(f);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

/* Rewrites one data page of the .edb directly. */
static void poke_page(om_vfs *v, const char *edb, uint32_t pgno, void (*edit)(uint8_t *page))
{
    uint8_t page[ENG_PAGE_SIZE];
    om_file *f = NULL;
    assert_int_equal(om_open(v, edb, 0, &f), 0);
    assert_int_equal(om_pread_full(f, page, sizeof page, eng_page_offset(pgno)), 0);
    edit(page);
    assert_int_equal(om_pwrite(f, page, sizeof page, eng_page_offset(pgno)), 0);
    assert_int_equal(om_sync(f), 0);
    om_close(f);
}

static void garble(uint8_t *page)
{
    memset(page + 5000, 0x5A, 3000);
}

static uint8_t saved_page[ENG_PAGE_SIZE];
static void restore_saved(uint8_t *page)
{
    memcpy(page, saved_page, ENG_PAGE_SIZE);
}
static void save(uint8_t *page)
{
    memcpy(saved_page, page, ENG_PAGE_SIZE);
}

static void torn_page_is_restored_from_the_page_journal(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    o.checkpoint_gens = 1000;
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 100, 0);
    assert_int_equal(eng_checkpoint(db), 0);
    put(db, p, 2, 0, 100, 0); /* logged as byte ranges: replay needs the page whole */
    put(db, p, 3, 50, 10, 0);
    /* Simulate a checkpoint that wrote the page and was torn before anything else. */
    assert_int_equal(eng_hold_pages(db), 0);
    eng_db_abandon(db);
    crashvfs_reboot(c);
    poke_page(o.vfs, o.edb_path, p, garble);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_page_byte(db, p, 0, 2);
    assert_page_byte(db, p, 50, 3);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void lost_flush_is_detected_at_recovery(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    o.checkpoint_gens = 1000;
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 100, 0);
    assert_int_equal(eng_checkpoint(db), 0);
    poke_page(o.vfs, o.edb_path, p, save); /* the page as of checkpoint 1 */
    put(db, p, 2, 0, 100, 0);
    assert_int_equal(eng_checkpoint(db), 0); /* written at checkpoint 2... */
    put(db, p, 3, 0, 100, 0);                /* first change after checkpoint 2 */
    eng_db_abandon(db);
    crashvfs_reboot(c);
    poke_page(o.vfs, o.edb_path, p, restore_saved); /* ...but the storage lost that write */
    assert_int_equal(eng_db_open(&o, &db), OM_E_ReadLostFlushVerifyFailure);
    assert_non_null(strstr(om_err_detail(), "page 1"));
    crashvfs_free(c);
}

/* Replay does not zero a page past the end of the .edb before its first record (an image writes
 * it whole): one whose first record only changes a range is refused, naming it, as before. */
static void page_cut_off_the_edb_and_changed_by_the_log_is_not_initialized(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    o.checkpoint_gens = 1000;
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    put(db, 0, 1, 0, 100, 0);
    uint32_t p = put(db, 0, 1, 0, 100, 0);
    assert_int_equal(eng_checkpoint(db), 0);
    put(db, p, 2, 0, 100, 0); /* a range record: the page was there at the checkpoint */
    eng_db_abandon(db);
    crashvfs_reboot(c);
    om_file *f = NULL;
    assert_int_equal(om_open(o.vfs, o.edb_path, 0, &f), 0);
    assert_int_equal(om_resize(f, eng_page_offset(p)), 0); /* the storage lost the file's end */
    assert_int_equal(om_sync(f), 0);
    om_close(f);
    assert_int_equal(eng_db_open(&o, &db), OM_E_PageNotInitialized);
    assert_non_null(strstr(om_err_detail(), "page 2 is empty on disk"));
    crashvfs_free(c);
}

static void damaged_page_outside_the_log_is_reported_with_its_number(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    put(db, 0, 1, 0, 100, 0);
    uint32_t p2 = put(db, 0, 1, 0, 100, 0);
    assert_int_equal(eng_db_close(db), 0);
    poke_page(o.vfs, o.edb_path, p2, garble);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_int_equal(eng_page_read(db, p2, body), OM_E_ReadVerifyFailure);
    assert_non_null(strstr(om_err_detail(), "page 2"));
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void circular_logging_deletes_logs_behind_the_checkpoint(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    o.circular_logging = 1;
    o.checkpoint_gens = 2;
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 10, 0);
    for (int i = 0; i < 900; i++)
        put(db, p, (uint8_t)i, 0, 8000, 0);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_true(in.gen_current > 4);
    assert_true(in.gen_oldest >= in.checkpoint.gen);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

/* Passive copies' floor (spec §8): circular logging keeps every generation from the floor on,
 * and deletes them once the floor rises, without waiting for another checkpoint. */
static void circular_logging_keeps_what_the_truncation_floor_holds(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    o.circular_logging = 1;
    o.checkpoint_gens = 2;
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 10, 0), deleted = 99;
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    uint32_t floor = in.gen_current;
    assert_int_equal(
        eng_db_set_truncate_floor(db, floor, om_mono_ns() + 3600ull * 1000000000ull, &deleted), 0);
    assert_int_equal(deleted, 0);
    for (int i = 0; i < 900; i++)
        put(db, p, (uint8_t)i, 0, 8000, 0);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_true(in.checkpoint.gen > floor + 2);
    assert_int_equal(in.gen_oldest, floor);
    assert_int_equal(in.truncate_floor, floor);
    assert_int_equal(in.truncate_point, in.checkpoint.gen);
    /* The copy moved on by two generations: exactly those two go, now. */
    assert_int_equal(
        eng_db_set_truncate_floor(db, floor + 2, om_mono_ns() + 3600ull * 1000000000ull, &deleted),
        0);
    assert_int_equal(deleted, 2);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.gen_oldest, floor + 2);
    /* Lifted: circular logging as before. */
    assert_int_equal(eng_db_set_truncate_floor(db, 0, 0, &deleted), 0);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.gen_oldest, in.checkpoint.gen);
    assert_int_equal(in.truncate_floor, 0);
    db = crash_and_remount(c, &o, db);
    assert_page_byte(db, p, 0, (uint8_t)899);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

/* A stored backup's truncation below a floor deletes only what is below it; the rest goes when
 * the floor rises (no second backup needed), never past the checkpoint. A floor nobody renews
 * lapses. */
static void backup_truncation_waits_for_the_floor_and_a_lapsed_floor_holds_nothing(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    o.checkpoint_gens = 1000;
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p = put(db, 0, 1, 0, 10, 0), deleted = 0;
    for (int i = 0; i < 8; i++) {
        put(db, p, (uint8_t)i, 0, 100, 0);
        assert_int_equal(eng_db_roll_log(db), 0);
    }
    assert_int_equal(eng_checkpoint(db), 0);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    uint32_t first = in.gen_oldest, ck = in.checkpoint.gen;
    assert_true(ck >= first + 8);
    uint64_t hour = om_mono_ns() + 3600ull * 1000000000ull;
    assert_int_equal(eng_db_set_truncate_floor(db, first + 3, hour, &deleted), 0);
    assert_int_equal(deleted, 0); /* nothing allows truncation yet */
    assert_int_equal(eng_truncate_logs(db, ck, &deleted), 0);
    assert_int_equal(deleted, 3);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.gen_oldest, first + 3);
    assert_int_equal(in.truncate_point, ck);
    /* A floor past the checkpoint does not let anything at or past the checkpoint go. */
    assert_int_equal(eng_db_set_truncate_floor(db, ck + 5, hour, &deleted), 0);
    assert_int_equal(deleted, ck - first - 3);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.gen_oldest, ck);
    /* More generations, a backup allowing them, a floor that lapses at once. */
    for (int i = 0; i < 3; i++) {
        put(db, p, (uint8_t)i, 0, 100, 0);
        assert_int_equal(eng_db_roll_log(db), 0);
    }
    assert_int_equal(eng_checkpoint(db), 0);
    assert_int_equal(eng_db_info(db, &in), 0);
    uint32_t ck2 = in.checkpoint.gen;
    assert_int_equal(eng_db_set_truncate_floor(db, ck, hour, &deleted), 0);
    assert_int_equal(eng_truncate_logs(db, ck2, &deleted), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(eng_db_set_truncate_floor(db, ck, om_mono_ns() + 20000000ull, &deleted), 0);
    assert_int_equal(deleted, 0);
    struct timespec ts = {0, 30000000};
    nanosleep(&ts, NULL);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.truncate_floor, 0);
    put(db, p, 9, 0, 100, 0);
    assert_int_equal(eng_checkpoint(db), 0);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.gen_oldest, ck2);
    db = crash_and_remount(c, &o, db);
    assert_page_byte(db, p, 0, 9);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void header_both_copies_damaged_is_refused(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    assert_int_equal(eng_db_close(db), 0);
    om_file *f = NULL;
    uint8_t junk[100];
    memset(junk, 0x77, sizeof junk);
    assert_int_equal(om_open(o.vfs, o.edb_path, 0, &f), 0);
    assert_int_equal(om_pwrite(f, junk, sizeof junk, 200), 0);
    assert_int_equal(om_sync(f), 0);
    assert_int_equal(eng_db_open(&o, &db), 0); /* one copy: repaired */
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(om_pwrite(f, junk, sizeof junk, 200), 0);
    assert_int_equal(om_pwrite(f, junk, sizeof junk, ENG_PAGE_SIZE + 200), 0);
    assert_int_equal(om_sync(f), 0);
    om_close(f);
    assert_int_equal(eng_db_open(&o, &db), OM_E_ReadVerifyFailure);
    assert_non_null(strstr(om_err_detail(), "both header copies"));
    crashvfs_free(c);
}

static void damaged_log_of_a_clean_database_is_refused_naming_the_slot(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    assert_int_equal(eng_db_close(db), 0);
    /* Slot 1 of E00.log is durable data (the ATTACH group); slot 2 holds the TERM after it. */
    uint8_t zero[ENG_SLOT_SIZE] = {0};
    om_file *f = NULL;
    assert_int_equal(om_open(o.vfs, "/db/logs/E00.log", 0, &f), 0);
    assert_int_equal(om_pwrite(f, zero, sizeof zero, ENG_SLOT_SIZE), 0);
    assert_int_equal(om_sync(f), 0);
    om_close(f);
    assert_int_equal(eng_db_open(&o, &db), OM_E_LogFileCorrupt);
    assert_non_null(strstr(om_err_detail(), "slot 1"));
    crashvfs_free(c);
}

/* Copies every file of src_dir into dst_dir (both flat folders). */
static void copy_dir(om_vfs *v, const char *src_dir, const char *dst_dir);

typedef struct copy_ctx {
    om_vfs *v;
    const char *src, *dst;
} copy_ctx;

static int copy_one(void *arg, const char *name)
{
    copy_ctx *cc = arg;
    char from[512], to[512];
    snprintf(from, sizeof from, "%s/%s", cc->src, name);
    snprintf(to, sizeof to, "%s/%s", cc->dst, name);
    if (cc->v->exists(cc->v, from) != 1) return 0;
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(om_read_file(cc->v, from, &data, &n), 0);
    assert_int_equal(om_write_file_durable(cc->v, to, data, n), 0);
    free(data);
    return 0;
}

static void copy_dir(om_vfs *v, const char *src_dir, const char *dst_dir)
{
    copy_ctx cc = {v, src_dir, dst_dir};
    assert_int_equal(v->mkdir(v, dst_dir), 0);
    assert_int_equal(v->list(v, src_dir, copy_one, &cc), 0);
}

/* The pages replay asked the storage for ahead of reading them (om_vfs.willneed). */
static uint64_t asked_pages, asked_runs, asked_unaligned;

static void count_willneed(om_file *f, uint64_t off, uint64_t n)
{
    (void)f;
    asked_runs++;
    asked_pages += n / ENG_PAGE_SIZE;
    if (off % ENG_PAGE_SIZE || n % ENG_PAGE_SIZE || !n) asked_unaligned++;
}

static void replaying_the_log_into_a_copy_gives_identical_pages(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    om_vfs *v = o.vfs;
    v->willneed = count_willneed; /* a hint: the replayed pages below must not depend on it */
    asked_pages = asked_runs = asked_unaligned = 0;
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    assert_int_equal(eng_catalog_create(db), 0);
    eng_txn *t = NULL;
    eng_tbl tb;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    assert_int_equal(eng_table_create(t, "mail", &tb), 0);
    assert_int_equal(eng_txn_commit(t, 0), 0);
    uint64_t r = 7;
    static uint8_t val[30000];
    for (int round = 0; round < 60; round++) {
        if (round == 20) {
            /* A copy of the files right after a checkpoint, while mounted: the starting point
             * of a passive copy (or of a restore). */
            assert_int_equal(eng_checkpoint(db), 0);
            assert_int_equal(v->mkdir(v, "/copy"), 0);
            uint8_t *data = NULL;
            size_t n = 0;
            assert_int_equal(om_read_file(v, "/db/mail.edb", &data, &n), 0);
            assert_int_equal(om_write_file_durable(v, "/copy/mail.edb", data, n), 0);
            free(data);
            copy_dir(v, "/db/logs", "/copy/logs");
        }
        assert_int_equal(eng_txn_begin(db, &t), 0);
        for (int i = 0; i < 20; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            char key[32];
            int kl = snprintf(key, sizeof key, "k%05u", (unsigned)(r >> 40) % 3000);
            uint32_t vl = (uint32_t)(r >> 20) % (r % 7 == 0 ? sizeof val : 2000);
            memset(val, (int)(r >> 8), vl);
            if (r % 5 == 0)
                eng_del(t, tb, key, (uint32_t)kl); /* may be absent: fine */
            else
                assert_int_equal(eng_put(t, tb, key, (uint32_t)kl, val, vl, 0), 0);
        }
        assert_int_equal(eng_txn_commit(t, round % 3 ? ENG_COMMIT_LAZY : 0), 0);
    }
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(eng_db_close(db), 0);
    /* Ship every log to the copy and replay them there. */
    copy_dir(v, "/db/logs", "/copy/logs");
    eng_opts oc = o;
    oc.edb_path = "/copy/mail.edb";
    oc.log_dir = "/copy/logs";
    eng_stats st;
    assert_int_equal(eng_db_recover(&oc, &st), 0);
    assert_true(st.replay_records > 100);
    /* the copy's pages the log changes were asked for ahead, in whole pages, in runs */
    assert_true(asked_pages > 0 && asked_runs > 0 && asked_runs <= asked_pages);
    assert_int_equal(asked_unaligned, 0);
    uint8_t *a = NULL, *b = NULL;
    size_t an = 0, bn = 0;
    assert_int_equal(om_read_file(v, "/db/mail.edb", &a, &an), 0);
    assert_int_equal(om_read_file(v, "/copy/mail.edb", &b, &bn), 0);
    for (uint32_t p = 1; p <= in.pages; p++) {
        uint64_t off = eng_page_offset(p);
        assert_true(off + ENG_PAGE_SIZE <= an && off + ENG_PAGE_SIZE <= bn);
        if (memcmp(a + off, b + off, ENG_PAGE_SIZE) != 0)
            fail_msg("page %u differs after replay", p);
    }
    free(a);
    free(b);
    crashvfs_free(c);
}

typedef struct writer_arg {
    eng_db *db;
    uint32_t page;
    int n;
} writer_arg;

static void *writer(void *a)
{
    writer_arg *w = a;
    static _Thread_local uint8_t b[4096];
    for (int i = 0; i < w->n; i++) {
        eng_txn *t = NULL;
        if (eng_txn_begin(w->db, &t)) return (void *)1;
        memset(b, i + 1, sizeof b); /* never the page's current bytes: no empty commits */
        if (eng_page_write(t, w->page, 0, b, sizeof b) || eng_txn_commit(t, 0)) return (void *)1;
    }
    return NULL;
}

/* The invariant checker (db_internal.h) is what the crash harnesses rely on after each
 * recovery: it must find a cache that breaks one, and name the page. */
static void invariant_checker_finds_a_frame_that_names_another_page(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    uint32_t p1 = put(db, 0, 1, 0, 100, 0), p2 = put(db, 0, 2, 0, 100, 0);
    assert_int_equal(eng_db_check_invariants(db), 0);
    frame *f = eng_cache_lookup(db, p1);
    assert_non_null(f);
    uint8_t saved[ENG_PAGE_HDR];
    memcpy(saved, f->page, sizeof saved);
    eng_pghdr h;
    eng_pghdr_get(f->page, &h);
    eng_pghdr_set(f->page, p2, h.objid, h.dbtime, h.flags);
    assert_int_equal(eng_db_check_invariants(db), OM_E_Internal);
    char want[64];
    snprintf(want, sizeof want, "page %u", p1);
    assert_non_null(strstr(om_err_detail(), want));
    memcpy(f->page, saved, sizeof saved);
    db->ndirty++; /* a dirty page the cache lost count of */
    assert_int_equal(eng_db_check_invariants(db), OM_E_Internal);
    assert_non_null(strstr(om_err_detail(), "dirty"));
    db->ndirty--;
    assert_int_equal(eng_checkpoint(db), 0);
    assert_int_equal(eng_db_check_invariants(db), 0);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void concurrent_committers_share_log_flushes(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = opts_on(c);
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    writer_arg w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        w[i] = (writer_arg){db, put(db, 0, 0, 0, 1, 0), 100};
    eng_stats st0, st1;
    crashvfs_set_sync_delay(c, 2000);
    eng_db_stats(db, &st0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, writer, &w[i]), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        assert_null(r);
    }
    eng_db_stats(db, &st1);
    assert_int_equal(st1.commits - st0.commits, 400);
    /* While one commit's fsync runs, the others queue up and share the next one. */
    assert_true(st1.log_flushes - st0.log_flushes <= 250);
    print_message("400 commits from 4 threads took %llu log flushes\n",
                  (unsigned long long)(st1.log_flushes - st0.log_flushes));
    for (int i = 0; i < 4; i++)
        assert_page_byte(db, w[i].page, 0, 100);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

/* ---- held pages that spill to the hold file ---- */

#define SPILL_BUDGET 32u /* cache pages */

static eng_opts spill_opts(crashvfs *c)
{
    eng_opts o = opts_on(c);
    o.cache_bytes = SPILL_BUDGET * ENG_PAGE_SIZE;
    o.checkpoint_gens = 1000;
    o.no_reserve_logs = 1;
    return o;
}

static uint8_t page_fill(uint32_t pgno, uint32_t version)
{
    return (uint8_t)(pgno * 13 + version * 31 + 1);
}

/* Writes a whole page body in one transaction, with a fill that names page and version. */
static void put_version(eng_db *db, uint32_t pgno, uint32_t version)
{
    put(db, pgno, page_fill(pgno, version), 0, ENG_PAGE_BODY, 0);
}

static void assert_versions(eng_db *db, const uint32_t *version, uint32_t pages)
{
    for (uint32_t p = 1; p <= pages; p++) {
        assert_int_equal(eng_page_read(db, p, body2), 0);
        uint8_t want = page_fill(p, version[p]);
        if (body2[0] != want || body2[ENG_PAGE_BODY - 1] != want)
            fail_msg("page %u holds %u, version %u should be %u", p, body2[0], version[p], want);
    }
}

/* Every data page of the .edb passes its checksum, and the header is Clean. */
static void assert_edb_checks_clean(om_vfs *v, const char *edb)
{
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(v, edb, &h, 0, NULL), 0);
    assert_int_equal(h.state, ENG_STATE_CLEAN);
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(om_read_file(v, edb, &data, &n), 0);
    for (uint32_t p = 1; p <= h.pages; p++) {
        assert_true(eng_page_offset(p) + ENG_PAGE_SIZE <= n);
        if (eng_page_check(data + eng_page_offset(p), p, NULL) != ENG_PAGE_OK)
            fail_msg("page %u of %s fails its checksum", p, edb);
    }
    free(data);
}

static int file_equals(om_vfs *v, const char *path, const uint8_t *want, size_t wn)
{
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(om_read_file(v, path, &data, &n), 0);
    int eq = n == wn && memcmp(data, want, n) == 0;
    free(data);
    return eq;
}

/* 60 pages, checkpointed; then, held, 5x the cache budget of page writes (rewrites and 40
 * new pages), durable commits. version[] says what each page must hold. The cache stays within
 * its budget and a few frames, plus reader_slack: the frames concurrent readers may add while
 * the writer holds the role (a reader that cannot take it leaves the trim to the next commit). */
#define SPILL_PAGES0 60u
#define SPILL_PAGES  100u
static void spill_workload(eng_db *db, uint32_t *version, uint32_t reader_slack, int check_edb,
                           om_vfs *v, const uint8_t *edb0, size_t edb0n)
{
    eng_stats st;
    uint32_t next_new = SPILL_PAGES0 + 1;
    for (uint32_t i = 0; i < 5 * SPILL_BUDGET; i++) {
        uint32_t p;
        if (i % 4 == 3 && next_new <= SPILL_PAGES) {
            p = put(db, 0, 0, 0, 1, 0);
            assert_int_equal(p, next_new++);
        } else
            p = 1 + (i * 7) % (next_new - 1);
        put_version(db, p, ++version[p]);
        if (i % 20 == 19) {
            eng_db_stats(db, &st);
            assert_true(st.cache_pages <= SPILL_BUDGET + 4 + reader_slack);
            if (check_edb) assert_true(file_equals(v, "/db/mail.edb", edb0, edb0n));
        }
    }
    assert_int_equal(next_new, SPILL_PAGES + 1);
}

static eng_db *spill_setup(const eng_opts *o, uint32_t *version)
{
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(o, &db), 0);
    for (uint32_t p = 1; p <= SPILL_PAGES0; p++) {
        assert_int_equal(put(db, 0, 0, 0, 1, 0), p);
        put_version(db, p, version[p] = 1);
    }
    assert_int_equal(eng_checkpoint(db), 0);
    return db;
}

static void held_pages_spill_to_a_side_file_and_the_edb_stays_unchanged_until_release(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = spill_opts(c);
    om_vfs *v = o.vfs;
    static uint32_t version[SPILL_PAGES + 1];
    memset(version, 0, sizeof version);
    eng_db *db = spill_setup(&o, version);
    assert_int_equal(eng_hold_pages(db), 0);
    uint8_t *edb0 = NULL;
    size_t edb0n = 0;
    assert_int_equal(om_read_file(v, "/db/mail.edb", &edb0, &edb0n), 0);
    spill_workload(db, version, 0, 1, v, edb0, edb0n);
    /* A backup recorded while held reaches the header only at the release. */
    eng_bkslot full = {1, 2, {2, 0}, 333, ENG_BK_FULL};
    assert_int_equal(eng_record_backup(db, ENG_BK_PREV_FULL, &full), 0);
    assert_int_equal(eng_checkpoint(db), 0); /* held: writes nothing */
    assert_true(file_equals(v, "/db/mail.edb", edb0, edb0n));
    eng_stats st;
    eng_db_stats(db, &st);
    assert_true(st.pages_spilled >= 3 * SPILL_BUDGET);
    assert_true(st.cache_pages <= SPILL_BUDGET + 4);
    assert_int_equal(v->exists(v, "/db/logs/E00.hold"), 1);
    /* Reads come from the hold file where the page was spilled. */
    assert_versions(db, version, SPILL_PAGES);
    assert_true(file_equals(v, "/db/mail.edb", edb0, edb0n));
    /* The release writes every page back through the journal, and deletes the hold file. */
    assert_int_equal(eng_release_pages(db), 0);
    assert_false(file_equals(v, "/db/mail.edb", edb0, edb0n));
    assert_int_equal(v->exists(v, "/db/logs/E00.hold"), 0);
    assert_versions(db, version, SPILL_PAGES);
    eng_dbhdr h;
    assert_int_equal(eng_dbhdr_read(v, o.edb_path, &h, 0, NULL), 0);
    assert_int_equal(h.slots[ENG_BK_PREV_FULL].mark_time, 333);
    assert_int_equal(eng_db_close(db), 0);
    assert_edb_checks_clean(v, o.edb_path);
    assert_int_equal(eng_db_open(&o, &db), 0);
    assert_versions(db, version, SPILL_PAGES);
    assert_int_equal(eng_db_close(db), 0);
    free(edb0);
    crashvfs_free(c);
}

static void reopen_and_check(crashvfs *c, const eng_opts *o, const uint32_t *version)
{
    om_vfs *v = o->vfs;
    eng_db *db = NULL;
    crashvfs_reboot(c);
    assert_int_equal(eng_db_open(o, &db), 0);
    assert_int_equal(eng_db_check_invariants(db), 0);
    assert_int_equal(v->exists(v, "/db/logs/E00.hold"), 0); /* garbage: deleted at open */
    assert_versions(db, version, SPILL_PAGES);
    assert_int_equal(eng_db_close(db), 0);
    assert_edb_checks_clean(v, o->edb_path);
}

static void crash_while_held_with_spilled_pages_loses_no_acknowledged_commit(void **s)
{
    (void)s;
    static uint32_t version[SPILL_PAGES + 1];
    /* A crash while held, after pages were spilled. */
    crashvfs *c = new_disk();
    eng_opts o = spill_opts(c);
    memset(version, 0, sizeof version);
    eng_db *db = spill_setup(&o, version);
    assert_int_equal(eng_hold_pages(db), 0);
    spill_workload(db, version, 0, 0, NULL, NULL, 0);
    eng_stats st;
    eng_db_stats(db, &st);
    assert_true(st.pages_spilled > 0);
    eng_db_abandon(db);
    reopen_and_check(c, &o, version);
    crashvfs_free(c);

    /* A crash at each sync of the release (journal, pages, header, checkpoint file). */
    c = new_disk();
    o = spill_opts(c);
    memset(version, 0, sizeof version);
    db = spill_setup(&o, version);
    assert_int_equal(eng_hold_pages(db), 0);
    spill_workload(db, version, 0, 0, NULL, NULL, 0);
    uint64_t s0 = crashvfs_syncs(c);
    assert_int_equal(eng_release_pages(db), 0);
    uint64_t release_syncs = crashvfs_syncs(c) - s0;
    assert_true(release_syncs >= 4);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
    for (uint64_t k = 1, every = crashvfs_every(); k <= release_syncs; k += every) {
        c = new_disk();
        crashvfs_reseed(c, 1000 + k);
        o = spill_opts(c);
        memset(version, 0, sizeof version);
        db = spill_setup(&o, version);
        assert_int_equal(eng_hold_pages(db), 0);
        spill_workload(db, version, 0, 0, NULL, NULL, 0);
        crashvfs_crash_at_sync(c, k);
        assert_int_not_equal(eng_release_pages(db), 0);
        eng_db_abandon(db);
        reopen_and_check(c, &o, version);
        crashvfs_free(c);
    }
}

typedef struct spill_reader {
    eng_db *db;
    _Atomic int stop;
    int torn;
    long reads;
} spill_reader;

static void *read_while_spilling(void *a)
{
    spill_reader *r = a;
    static _Thread_local uint8_t b[ENG_PAGE_BODY];
    while (!r->stop) {
        for (uint32_t p = 1; p <= SPILL_PAGES0 && !r->stop; p++) {
            if (eng_page_read(r->db, p, b)) {
                r->torn++;
                continue;
            }
            if (b[0] != b[ENG_PAGE_BODY - 1]) r->torn++; /* half of one version, half of another */
            r->reads++;
        }
    }
    return NULL;
}

/* Reads alone (no commit to trim the cache) keep it near its size: a mailbox only read must
 * not pull the whole database into memory. */
static void a_database_only_read_keeps_its_cache_within_its_size(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = spill_opts(c);
    static uint32_t version[SPILL_PAGES + 1];
    memset(version, 0, sizeof version);
    eng_db *db = spill_setup(&o, version);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(eng_db_open(&o, &db), 0);
    eng_stats st;
    for (int round = 0; round < 3; round++)
        for (uint32_t p = 1; p <= SPILL_PAGES0; p++) {
            assert_int_equal(eng_page_read(db, p, body2), 0);
            assert_int_equal(body2[0], page_fill(p, version[p]));
            eng_db_stats(db, &st);
            assert_true(st.cache_pages <= SPILL_BUDGET + 1);
        }
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

static void readers_see_whole_pages_while_held_pages_spill(void **s)
{
    (void)s;
    crashvfs *c = new_disk();
    eng_opts o = spill_opts(c);
    static uint32_t version[SPILL_PAGES + 1];
    memset(version, 0, sizeof version);
    eng_db *db = spill_setup(&o, version);
    assert_int_equal(eng_hold_pages(db), 0);
    spill_reader r = {.db = db};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, read_while_spilling, &r), 0);
    spill_workload(db, version, SPILL_PAGES0, 0, NULL, NULL, 0);
    assert_int_equal(eng_release_pages(db), 0);
    r.stop = 1;
    pthread_join(th, NULL);
    assert_int_equal(r.torn, 0);
    assert_true(r.reads > 0);
    eng_stats st;
    eng_db_stats(db, &st);
    assert_true(st.pages_spilled > 0);
    /* The readers gone, the next checkpoint brings the cache back within its budget. */
    assert_int_equal(eng_checkpoint(db), 0);
    eng_db_stats(db, &st);
    assert_true(st.cache_pages <= SPILL_BUDGET + 4);
    assert_versions(db, version, SPILL_PAGES);
    assert_int_equal(eng_db_close(db), 0);
    crashvfs_free(c);
}

int main(void)
{
    /* The failures these tests cause on purpose would fill the output. */
    if (!getenv("OMBRA_DEBUG")) om_log_min_level(OM_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(committed_data_survives_clean_shutdown_and_header_says_clean),
        cmocka_unit_test(invariant_checker_finds_a_frame_that_names_another_page),
        cmocka_unit_test(rolled_back_changes_never_appear),
        cmocka_unit_test(durable_commit_survives_power_loss_lazy_may_not),
        cmocka_unit_test(durable_commit_that_changes_nothing_still_makes_lazy_commits_durable),
        cmocka_unit_test(create_refuses_existing_database_and_foreign_logs),
        cmocka_unit_test(failed_fsync_is_sticky_until_remount),
        cmocka_unit_test(disk_full_uses_reserve_logs_refuses_writes_then_resumes),
        cmocka_unit_test(database_growth_on_full_disk_fails_the_call_not_the_database),
        cmocka_unit_test(readers_never_see_uncommitted_or_half_written_pages),
        cmocka_unit_test(freeze_rolls_generation_and_holds_writers_until_thaw),
        cmocka_unit_test(truncation_never_deletes_at_or_above_the_checkpoint),
        cmocka_unit_test(backup_slot_is_logged_and_survives_recovery),
        cmocka_unit_test(hold_keeps_pages_out_of_the_database_file),
        cmocka_unit_test(torn_page_is_restored_from_the_page_journal),
        cmocka_unit_test(lost_flush_is_detected_at_recovery),
        cmocka_unit_test(page_cut_off_the_edb_and_changed_by_the_log_is_not_initialized),
        cmocka_unit_test(damaged_page_outside_the_log_is_reported_with_its_number),
        cmocka_unit_test(circular_logging_deletes_logs_behind_the_checkpoint),
        cmocka_unit_test(circular_logging_keeps_what_the_truncation_floor_holds),
        cmocka_unit_test(backup_truncation_waits_for_the_floor_and_a_lapsed_floor_holds_nothing),
        cmocka_unit_test(header_both_copies_damaged_is_refused),
        cmocka_unit_test(damaged_log_of_a_clean_database_is_refused_naming_the_slot),
        cmocka_unit_test(concurrent_committers_share_log_flushes),
        cmocka_unit_test(replaying_the_log_into_a_copy_gives_identical_pages),
        cmocka_unit_test(held_pages_spill_to_a_side_file_and_the_edb_stays_unchanged_until_release),
        cmocka_unit_test(crash_while_held_with_spilled_pages_loses_no_acknowledged_commit),
        cmocka_unit_test(readers_see_whole_pages_while_held_pages_spill),
        cmocka_unit_test(a_database_only_read_keeps_its_cache_within_its_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
