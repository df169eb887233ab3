/* The record of backup runs (backup/runs.h): what a run leaves per database and type (a failure
 * keeps the last success), a damaged record, and processes that record at the same moment (the
 * lock: no run is lost). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "backup/runs.h"
#include "base/error.h"
#include "base/proto.h"

static char dir[64];

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/ombra-runs-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

/* The entry of db and type in the record (borrowed from rec), NULL when none. */
static json_t *entry(json_t *rec, const char *db, const char *type)
{
    size_t i;
    json_t *e, *found = NULL;
    json_array_foreach(json_object_get(rec, "runs"), i, e)
    {
        if (!strcmp(om_json_str_or(e, "database", ""), db) &&
            !strcmp(om_json_str_or(e, "type", ""), type)) {
            assert_null(found); /* one entry per database and type */
            found = e;
        }
    }
    return found;
}

static void record(const char *const *dbs, size_t n, const char *type, int err, json_t *res)
{
    bk_run r = {dbs, n, type, "/repo", 1000000000, 3500000000, err, err ? "it broke" : NULL, res};
    assert_int_equal(bk_runs_record(dir, &r), 0);
}

static void failures_keep_the_last_success(void **state)
{
    json_t *rec = NULL;
    assert_int_equal(bk_runs_load(dir, &rec), 0); /* no file yet: an empty record */
    assert_int_equal(json_array_size(json_object_get(rec, "runs")), 0);
    json_decref(rec);

    const char *both[] = {"db1", "db2"};
    json_t *res = json_pack("{s:[{s:s, s:s, s:I}], s:I, s:f}", "sets", "database", "db1", "set",
                            "abc", "bytes_stored", (json_int_t)1234, "bytes_read",
                            (json_int_t)99999, "freeze_ms", 12.5);
    /* db1 has a set, db2 none: db1 succeeded, db2 failed with the run's error. */
    record(both, 2, "full", OM_E_DiskIO, res);
    json_decref(res);
    assert_int_equal(bk_runs_load(dir, &rec), 0);
    json_t *e1 = entry(rec, "db1", "full"), *e2 = entry(rec, "db2", "full");
    assert_non_null(e1);
    assert_non_null(e2);
    assert_string_equal(om_json_str_or(json_object_get(e1, "last"), "result", ""), "ok");
    assert_int_equal(om_json_int_or(json_object_get(e1, "last_success"), "bytes_stored", 0), 1234);
    assert_string_equal(om_json_str_or(json_object_get(e1, "last_success"), "set", ""), "abc");
    assert_string_equal(om_json_str_or(json_object_get(e2, "last"), "result", ""), "failed");
    assert_string_equal(om_json_str_or(json_object_get(e2, "last"), "error_name", ""), "DiskIO");
    assert_string_equal(om_json_str_or(json_object_get(e2, "last"), "message", ""), "it broke");
    assert_true(json_is_null(json_object_get(e2, "last_success")));
    assert_true(json_real_value(json_object_get(json_object_get(e1, "last"), "seconds")) == 2.5);
    json_decref(rec);

    /* A later failure of db1's full: last is the failure, last_success still the set. */
    record(both, 1, "full", OM_E_NotRepository, NULL);
    assert_int_equal(bk_runs_load(dir, &rec), 0);
    e1 = entry(rec, "db1", "full");
    assert_string_equal(om_json_str_or(json_object_get(e1, "last"), "result", ""), "failed");
    assert_string_equal(om_json_str_or(json_object_get(e1, "last_success"), "set", ""), "abc");
    assert_null(entry(rec, "db1", "incremental"));
    json_decref(rec);
}

static void a_damaged_record_is_named_then_replaced(void **state)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, BK_RUNS_FILE);
    FILE *f = fopen(path, "w");
    fputs("{not json", f);
    fclose(f);
    json_t *rec = NULL;
    assert_int_equal(bk_runs_load(dir, &rec), OM_E_RepositoryCorrupt);
    assert_non_null(strstr(om_err_detail(), BK_RUNS_FILE));
    const char *db[] = {"db9"};
    record(db, 1, "copy", OM_E_DiskIO, NULL);
    assert_int_equal(bk_runs_load(dir, &rec), 0);
    assert_non_null(entry(rec, "db9", "copy"));
    json_decref(rec);
}

/* 8 processes, each recording 10 runs of its own database at once: all 80 land. */
static void concurrent_backups_lose_no_run(void **state)
{
    enum { PROCS = 8, RUNS = 10 };
    pid_t kids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        if ((kids[p] = fork()) == 0) {
            char name[16];
            snprintf(name, sizeof name, "par%d", p);
            const char *db[] = {name};
            for (int i = 0; i < RUNS; i++) {
                char type[16];
                snprintf(type, sizeof type, "t%d", i);
                bk_run r = {db, 1, type, "/repo", 1, 2, OM_E_DiskIO, "x", NULL};
                if (bk_runs_record(dir, &r)) _exit(1);
            }
            _exit(0);
        }
        assert_true(kids[p] > 0);
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        assert_int_equal(waitpid(kids[p], &st, 0), kids[p]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    json_t *rec = NULL;
    assert_int_equal(bk_runs_load(dir, &rec), 0);
    for (int p = 0; p < PROCS; p++)
        for (int i = 0; i < RUNS; i++) {
            char name[16], type[16];
            snprintf(name, sizeof name, "par%d", p);
            snprintf(type, sizeof type, "t%d", i);
            assert_non_null(entry(rec, name, type));
        }
    json_decref(rec);
}

/* A FIFO (or a folder, a symbolic link) in the record's place: reading it must not wait for a
 * writer that never comes. Load and record fail at once naming it, and the FIFO is left as it
 * is (the record replaces nothing it did not write). Without the fix, open() blocks: the alarm
 * kills the test. */
static void a_fifo_in_place_of_the_record_never_blocks(void **state)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, BK_RUNS_FILE);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(10);
    json_t *rec = NULL;
    assert_int_equal(bk_runs_load(dir, &rec), OM_E_InvalidPath);
    assert_null(rec);
    assert_non_null(strstr(om_err_detail(), "is a FIFO"));
    assert_non_null(strstr(om_err_detail(), BK_RUNS_FILE));
    const char *dbs[] = {"a"};
    bk_run r = {dbs, 1, "full", "/repo", 1000000000, 3500000000, 0, NULL, NULL};
    assert_int_equal(bk_runs_record(dir, &r), OM_E_InvalidPath);
    assert_non_null(strstr(om_err_detail(), "is a FIFO"));
    alarm(0);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    /* A symbolic link is refused too (O_NOFOLLOW), and a folder. */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(symlink("/etc/hostname", path), 0);
    assert_int_equal(bk_runs_load(dir, &rec), OM_E_InvalidPath);
    assert_non_null(strstr(om_err_detail(), "a symbolic link"));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(bk_runs_load(dir, &rec), OM_E_InvalidPath);
    assert_non_null(strstr(om_err_detail(), "a folder"));
    assert_int_equal(rmdir(path), 0);
    /* Gone: an empty record again, and the next run records. */
    assert_int_equal(bk_runs_load(dir, &rec), 0);
    json_decref(rec);
    assert_int_equal(bk_runs_record(dir, &r), 0);
    assert_int_equal(bk_runs_load(dir, &rec), 0);
    assert_non_null(entry(rec, "a", "full"));
    json_decref(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(failures_keep_the_last_success, setup, teardown),
        cmocka_unit_test_setup_teardown(a_damaged_record_is_named_then_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_backups_lose_no_run, setup, teardown),
        cmocka_unit_test_setup_teardown(a_fifo_in_place_of_the_record_never_blocks, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
