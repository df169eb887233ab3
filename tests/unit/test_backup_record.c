/* What a backup leaves in a database (store/backup_record.h): which types may be taken (the
 * rules both writers share: the active's own backups and a passive copy's recorded by the
 * active), the slot a record writes and what it clears, the truncation point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "store/backup_record.h"

static void types_and_slots(void **state)
{
    assert_true(store_backup_type_ok("full") && store_backup_type_ok("copy") &&
                store_backup_type_ok("incremental") && store_backup_type_ok("differential"));
    assert_false(store_backup_type_ok("Full") || store_backup_type_ok("") ||
                 store_backup_type_ok(NULL));
    assert_int_equal(store_backup_type_error("log"), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "'log'"));
    assert_int_equal(store_backup_slot("incremental"), ENG_BK_PREV_INCREMENTAL);
    assert_int_equal(store_backup_slot("differential"), ENG_BK_PREV_DIFFERENTIAL);
    assert_int_equal(store_backup_kind("copy"), ENG_BK_COPY);
}

static void which_backups_may_be_taken(void **state)
{
    eng_info in;
    memset(&in, 0, sizeof in);
    assert_int_equal(store_backup_allowed("db1", 0, &in, "full"), 0);
    assert_int_equal(store_backup_allowed("db1", 0, &in, "copy"), 0);
    assert_int_equal(store_backup_allowed("db1", 0, &in, "incremental"), OM_E_MissingFullBackup);
    assert_int_equal(store_backup_allowed("db1", 0, &in, "differential"), OM_E_MissingFullBackup);
    in.slots[ENG_BK_PREV_FULL] = (eng_bkslot){.first_gen = 3, .last_gen = 5, .mark_time = 100};
    assert_int_equal(store_backup_allowed("db1", 0, &in, "incremental"), 0);
    assert_int_equal(store_backup_allowed("db1", 0, &in, "differential"), 0);
    /* circular logging: only whole backups */
    assert_int_equal(store_backup_allowed("db1", 1, &in, "incremental"), OM_E_InvalidBackup);
    assert_int_equal(store_backup_allowed("db1", 1, &in, "full"), 0);
    /* an incremental since the full truncated what a differential would need */
    in.slots[ENG_BK_PREV_INCREMENTAL] =
        (eng_bkslot){.first_gen = 6, .last_gen = 8, .mark_time = 200};
    assert_int_equal(store_backup_allowed("db1", 0, &in, "differential"),
                     OM_E_InvalidBackupSequence);
    assert_non_null(strstr(om_err_detail(), "generations from 6"));
    assert_int_equal(store_backup_allowed("db1", 0, &in, "incremental"), 0);
}

static void truncation_point(void **state)
{
    assert_int_equal(store_backup_truncates_below("full", 7, 9), 7);
    assert_int_equal(store_backup_truncates_below("incremental", 12, 9), 9);
    assert_int_equal(store_backup_truncates_below("copy", 7, 9), 0);
    assert_int_equal(store_backup_truncates_below("differential", 7, 9), 0);
}

/* A record is a log record: after it, the header says so, and a full clears the incremental and
 * differential slots (spec §5). */
static void a_record_writes_its_slot_and_a_full_clears_the_others(void **state)
{
    char dir[] = "/tmp/ombra-bkrec-XXXXXX", edb[200], logs[200];
    assert_non_null(mkdtemp(dir));
    snprintf(edb, sizeof edb, "%s/db.edb", dir);
    snprintf(logs, sizeof logs, "%s/logs", dir);
    eng_opts o = {.edb_path = edb, .log_dir = logs, .no_reserve_logs = 1};
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&o, &db), 0);
    eng_bkslot f = {
        .first_gen = 1, .last_gen = 1, .mark = {2, 0}, .mark_time = 10, .kind = ENG_BK_FULL};
    eng_bkslot i = {
        .first_gen = 2, .last_gen = 2, .mark = {3, 0}, .mark_time = 20, .kind = ENG_BK_INCREMENTAL};
    assert_int_equal(store_backup_record(db, "db", "full", &f, ""), 0);
    assert_int_equal(store_backup_record(db, "db", "incremental", &i, "the copy on b"), 0);
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.slots[ENG_BK_PREV_FULL].last_gen, 1);
    assert_int_equal(in.slots[ENG_BK_PREV_INCREMENTAL].last_gen, 2);
    f.last_gen = 3;
    f.mark_time = 30;
    assert_int_equal(store_backup_record(db, "db", "full", &f, ""), 0);
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.slots[ENG_BK_PREV_FULL].last_gen, 3);
    assert_int_equal(in.slots[ENG_BK_PREV_INCREMENTAL].mark_time, 0);
    /* an older full, finished after the newer one was recorded: overtaken, refused */
    eng_bkslot old = f;
    old.last_gen = 2;
    old.mark_time = 25;
    assert_int_equal(store_backup_record(db, "db", "full", &old, "the copy on c"),
                     OM_E_InvalidBackupSequence);
    assert_non_null(strstr(om_err_detail(), "overtaken"));
    assert_int_equal(eng_db_info(db, &in), 0);
    assert_int_equal(in.slots[ENG_BK_PREV_FULL].last_gen, 3);
    assert_int_equal(eng_db_close(db), 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(types_and_slots),
        cmocka_unit_test(which_backups_may_be_taken),
        cmocka_unit_test(truncation_point),
        cmocka_unit_test(a_record_writes_its_slot_and_a_full_clears_the_others),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
