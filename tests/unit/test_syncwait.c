/* The store's wait for synchronous copies (store/syncwait.h): positions counted per database,
 * a committer released by the report that makes N, and a bounded wait that fails retryably. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/time.h"
#include "store/syncwait.h"

static void positions_count_per_database_and_server(void **state)
{
    store_syncwait *w;
    assert_int_equal(store_syncwait_new(&w), 0);
    eng_lgpos want = {5, 1000};
    assert_int_equal(store_syncwait_count(w, "db1", NULL, want), 0);
    assert_int_equal(store_syncwait_report(w, "db1", "b", (eng_lgpos){5, 999}), 0);
    assert_int_equal(store_syncwait_count(w, "db1", NULL, want), 0);
    assert_int_equal(store_syncwait_report(w, "db1", "b", (eng_lgpos){5, 1000}), 0);
    assert_int_equal(store_syncwait_report(w, "db1", "c", (eng_lgpos){6, 0}), 0);
    assert_int_equal(store_syncwait_report(w, "db2", "d", (eng_lgpos){9, 0}), 0);
    assert_int_equal(store_syncwait_count(w, "db1", NULL, want), 2);
    /* The latest word counts: a copy that restarted with less holds less. */
    assert_int_equal(store_syncwait_report(w, "db1", "c", (eng_lgpos){4, 0}), 0);
    assert_int_equal(store_syncwait_count(w, "db1", NULL, want), 1);
    assert_int_equal(store_syncwait_count(w, "db2", NULL, want), 1);
    /* With the record's copies named, a position of any other name counts for nothing. */
    const char *copies[] = {"c", "x"};
    store_sync_copies only = {copies, 2};
    assert_int_equal(store_syncwait_report(w, "db1", "ghost", (eng_lgpos){0xffffffffu, 0}), 0);
    assert_int_equal(store_syncwait_count(w, "db1", NULL, want), 2);
    assert_int_equal(store_syncwait_count(w, "db1", &only, want), 0);
    assert_int_equal(store_syncwait_report(w, "db1", "c", (eng_lgpos){5, 1000}), 0);
    assert_int_equal(store_syncwait_count(w, "db1", &only, want), 1);
    assert_int_equal(store_syncwait_report(w, "db1", "", (eng_lgpos){4, 0}), OM_E_InvalidParameter);
    store_syncwait_set_wanted(w, "db1", 2);
    assert_int_equal(store_syncwait_wanted(w, "db1"), 2);
    assert_int_equal(store_syncwait_wanted(w, "db2"), 0);
    store_syncwait_free(w);
}

static void *report_later(void *arg)
{
    usleep(100000);
    store_syncwait_report(arg, "db1", "c", (eng_lgpos){3, 50});
    return NULL;
}

static void a_report_releases_the_waiting_committer(void **state)
{
    store_syncwait *w;
    assert_int_equal(store_syncwait_new(&w), 0);
    store_syncwait_report(w, "db1", "b", (eng_lgpos){3, 50});
    pthread_t t;
    pthread_create(&t, NULL, report_later, w);
    uint64_t t0 = om_mono_ns();
    assert_int_equal(store_syncwait_wait(w, "db1", "db1", NULL, 2, (eng_lgpos){3, 50}, 5000), 0);
    uint64_t took = (om_mono_ns() - t0) / 1000000;
    assert_true(took >= 90 && took < 3000);
    pthread_join(t, NULL);
    store_syncwait_free(w);
}

static void too_few_copies_fail_retryably_within_the_bound(void **state)
{
    store_syncwait *w;
    assert_int_equal(store_syncwait_new(&w), 0);
    store_syncwait_report(w, "db1", "b", (eng_lgpos){3, 50});
    uint64_t t0 = om_mono_ns();
    assert_int_equal(store_syncwait_wait(w, "db1", "db1", NULL, 1, (eng_lgpos){3, 51}, 300),
                     OM_E_SyncCopiesUnavailable);
    uint64_t took = (om_mono_ns() - t0) / 1000000;
    assert_true(took >= 290 && took < 2000);
    assert_non_null(strstr(om_err_detail(), "0 of the 1 synchronous copies"));
    assert_non_null(strstr(om_err_detail(), "HINT"));
    store_syncwait_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(positions_count_per_database_and_server),
        cmocka_unit_test(a_report_releases_the_waiting_committer),
        cmocka_unit_test(too_few_copies_fail_retryably_within_the_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
