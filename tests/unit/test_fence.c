/* Fencing (store/fence.h): what a user relies on is that a store acknowledges a commit of a
 * replicated database only when it became durable while its lease was valid, waits a bounded
 * time for a renewal rather than failing at once, acknowledges nothing in DAC mode before the
 * DAG spoke, and that a handoff refuses new commits while letting those in flight finish. Real
 * time, with deadlines of tens of milliseconds. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "store/fence.h"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static store_fence *fence(int always, uint32_t wait_ms)
{
    store_fence_opts o = {.server = "b", .always = always, .wait_ms = wait_ms};
    store_fence *f = NULL;
    assert_int_equal(store_fence_new(&o, &f), 0);
    return f;
}

/* One commit through the fence: enter, then ack after work_ms (the commit's time). */
static int commit(store_fence *f, const char *db, int replicated, unsigned work_ms, int64_t *epoch)
{
    store_fence_ticket t;
    int rc = store_fence_enter(f, db, replicated, &t);
    if (rc) return rc;
    sleep_ms(work_ms);
    uint64_t acked = 0;
    int64_t ep = -1;
    rc = store_fence_ack(f, &t, &acked, &ep);
    if (!rc) assert_true(acked > 0);
    if (epoch) *epoch = ep;
    return rc;
}

/* A store whose ombra-repld never sent dag.lease acknowledges as before fencing; the first
 * renewal arms it, and from then on an unrenewed lease stops the commits. */
static void unarmed_until_the_first_renewal(void **s)
{
    (void)s;
    store_fence *f = fence(0, 100);
    assert_int_equal(store_fence_track(f, "db1", 3, 1), 0);
    int64_t ep = 0;
    assert_int_equal(commit(f, "db1", 1, 0, &ep), 0);
    assert_int_equal(ep, 3);
    assert_int_equal(store_fence_armed(f), 0);
    store_fence_renew(f, 80);
    assert_int_equal(store_fence_armed(f), 1);
    assert_int_equal(commit(f, "db1", 1, 0, NULL), 0);
    sleep_ms(100);
    uint64_t t0 = om_mono_ns();
    assert_int_equal(commit(f, "db1", 1, 0, NULL), OM_E_ActiveLeaseLapsed);
    assert_true(om_mono_ns() - t0 >= 90000000ull); /* it waited for a renewal first */
    assert_non_null(strstr(om_err_detail(), "nothing was committed"));
    assert_non_null(strstr(om_err_detail(), "HINT"));
    /* A database with one copy is not fenced. */
    assert_int_equal(commit(f, "db1", 0, 0, NULL), 0);
    store_fence_free(f);
}

/* DAC: armed from the start, nothing is acknowledged before the first renewal, and a database
 * that mounts after a renewal waits for the next one. */
static void dac_no_commit_before_the_dag_spoke(void **s)
{
    (void)s;
    store_fence *f = fence(1, 50);
    assert_int_equal(store_fence_track(f, "db1", 1, 1), 0);
    assert_int_equal(store_fence_taking(f, "db1", NULL), 0);
    assert_int_equal(commit(f, "db1", 1, 0, NULL), OM_E_ActiveLeaseLapsed);
    assert_non_null(strstr(om_err_detail(), "not renewed since the database mounted"));
    store_fence_renew(f, 5000);
    assert_int_equal(store_fence_taking(f, "db1", NULL), 1);
    assert_int_equal(commit(f, "db1", 1, 0, NULL), 0);
    assert_int_equal(store_fence_track(f, "db2", 1, 1), 0);
    assert_int_equal(commit(f, "db2", 1, 0, NULL), OM_E_ActiveLeaseLapsed);
    store_fence_renew(f, 5000);
    assert_int_equal(commit(f, "db2", 1, 0, NULL), 0);
    store_fence_free(f);
}

/* A commit that became durable after the deadline is not acknowledged, and says it is durable
 * here; so is one during which the lease lapsed, even when a renewal came since. */
static void durable_after_the_deadline_is_not_acknowledged(void **s)
{
    (void)s;
    store_fence *f = fence(1, 50);
    assert_int_equal(store_fence_track(f, "db1", 2, 1), 0);
    store_fence_renew(f, 60);
    assert_int_equal(commit(f, "db1", 1, 90, NULL), OM_E_ActiveLeaseLapsed);
    assert_non_null(strstr(om_err_detail(), "durable"));
    assert_non_null(strstr(om_err_detail(), "not acknowledged"));
    store_fence_renew(f, 60);
    store_fence_ticket t;
    assert_int_equal(store_fence_enter(f, "db1", 1, &t), 0);
    sleep_ms(90);               /* the lease lapses while the commit runs */
    store_fence_renew(f, 5000); /* and is renewed before it ends */
    uint64_t acked;
    int64_t ep;
    assert_int_equal(store_fence_ack(f, &t, &acked, &ep), OM_E_ActiveLeaseLapsed);
    /* A renewal with a shorter time does not take the deadline back. */
    store_fence_renew(f, 1);
    sleep_ms(20);
    assert_int_equal(commit(f, "db1", 1, 0, NULL), 0);
    store_fence_free(f);
}

typedef struct renewer {
    store_fence *f;
    unsigned after_ms;
} renewer;

static void *renew_later(void *arg)
{
    renewer *r = arg;
    sleep_ms(r->after_ms);
    store_fence_renew(r->f, 5000);
    return NULL;
}

/* A commit that finds the lease lapsed waits for the renewal and goes through. */
static void a_renewal_within_the_wait_lets_the_commit_through(void **s)
{
    (void)s;
    store_fence *f = fence(1, 2000);
    assert_int_equal(store_fence_track(f, "db1", 1, 1), 0);
    store_fence_renew(f, 10);
    sleep_ms(20);
    renewer r = {f, 100};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, renew_later, &r), 0);
    uint64_t t0 = om_mono_ns();
    assert_int_equal(commit(f, "db1", 1, 0, NULL), 0);
    uint64_t waited = om_mono_ns() - t0;
    assert_true(waited >= 80000000ull && waited < 1500000000ull);
    pthread_join(th, NULL);
    store_fence_free(f);
}

typedef struct committer {
    store_fence *f;
    int rc;
} committer;

static void *commit_now(void *arg)
{
    committer *c = arg;
    c->rc = commit(c->f, "db1", 1, 0, NULL);
    return NULL;
}

/* A handoff: new commits wait and then get DatabaseMoving; the stop waits for the one in flight,
 * which is acknowledged; a dismount wakes the waiting ones at once; a resume lets them in. */
static void a_handoff_refuses_new_commits_and_lets_those_in_flight_finish(void **s)
{
    (void)s;
    store_fence *f = fence(1, 3000);
    assert_int_equal(store_fence_track(f, "db1", 4, 1), 0);
    store_fence_renew(f, 60000);
    store_fence_ticket t;
    assert_int_equal(store_fence_enter(f, "db1", 1, &t), 0);
    uint64_t stopped = 0;
    assert_int_equal(store_fence_stop(f, "db1", 50, &stopped), OM_E_DatabaseMoving);
    assert_non_null(strstr(om_err_detail(), "in flight"));
    assert_true(stopped > 0);
    committer c = {f, -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, commit_now, &c), 0);
    sleep_ms(50);
    uint64_t acked;
    int64_t ep;
    assert_int_equal(store_fence_ack(f, &t, &acked, &ep), 0); /* in flight: acknowledged */
    assert_int_equal(ep, 4);
    assert_int_equal(store_fence_stop(f, "db1", 50, &stopped), 0);
    uint64_t t0 = om_mono_ns();
    store_fence_untrack(f, "db1", "handed off");
    pthread_join(th, NULL);
    assert_int_equal(c.rc, OM_E_DatabaseMoving);
    assert_true(om_mono_ns() - t0 < 1000000000ull); /* woken, not timed out */

    /* Stopped, then resumed (the handoff refused): commits go on; stopped and not resumed, they
     * wait out the bound and get DatabaseMoving. */
    store_fence_free(f);
    f = fence(1, 100);
    assert_int_equal(store_fence_track(f, "db1", 4, 1), 0);
    store_fence_renew(f, 60000);
    assert_int_equal(store_fence_stop(f, "db1", 50, &stopped), 0);
    t0 = om_mono_ns();
    assert_int_equal(commit(f, "db1", 1, 0, NULL), OM_E_DatabaseMoving);
    assert_true(om_mono_ns() - t0 >= 90000000ull);
    assert_non_null(strstr(om_err_detail(), "deliver again"));
    store_fence_resume(f, "db1");
    assert_int_equal(commit(f, "db1", 1, 0, NULL), 0);
    /* Not fenced (one copy), a handoff stops it all the same. */
    assert_int_equal(store_fence_stop(f, "db1", 50, &stopped), 0);
    assert_int_equal(commit(f, "db1", 0, 0, NULL), OM_E_DatabaseMoving);
    store_fence_free(f);
}

/* A commit in flight when its database is dismounted is not acknowledged when fenced. */
static void dismounted_in_flight_is_not_acknowledged(void **s)
{
    (void)s;
    store_fence *f = fence(1, 100);
    assert_int_equal(store_fence_track(f, "db1", 2, 1), 0);
    store_fence_renew(f, 60000);
    store_fence_ticket t;
    assert_int_equal(store_fence_enter(f, "db1", 1, &t), 0);
    store_fence_untrack(f, "db1", "the DAG names server c active now");
    uint64_t acked;
    int64_t ep;
    assert_int_equal(store_fence_ack(f, &t, &acked, &ep), OM_E_ActiveLeaseLapsed);
    assert_non_null(strstr(om_err_detail(), "dismounted"));
    store_fence_free(f);
}

/* A failover's first step deposes the active: ombra-repld's renewals stop confirming the
 * database, and from that renewal on its store acknowledges nothing of it (a commit in flight
 * included), while the server's other databases go on. Confirmed again, it takes commits. */
static void a_database_the_renewal_does_not_confirm_stops_at_once(void **s)
{
    (void)s;
    store_fence *f = fence(1, 50);
    assert_int_equal(store_fence_track(f, "db1", 4, 1), 0);
    assert_int_equal(store_fence_track(f, "db2", 2, 1), 0);
    const char *both[] = {"db1", "db2"}, *two[] = {"db2"};
    store_fence_renew_some(f, 10000, both, 2, 0);
    assert_int_equal(commit(f, "db1", 1, 0, NULL), 0);
    store_fence_ticket t;
    assert_int_equal(store_fence_enter(f, "db1", 1, &t), 0); /* in flight across the renewal */
    store_fence_renew_some(f, 10000, two, 1, 0);
    uint64_t acked = 0;
    int64_t ep = 0;
    assert_int_equal(store_fence_ack(f, &t, &acked, &ep), OM_E_ActiveLeaseLapsed);
    assert_non_null(strstr(om_err_detail(), "durable"));
    assert_int_equal(commit(f, "db1", 1, 0, NULL), OM_E_ActiveLeaseLapsed);
    assert_int_equal(store_fence_taking(f, "db1", NULL), 0);
    assert_int_equal(commit(f, "db2", 1, 0, NULL), 0); /* the other database goes on */
    store_fence_renew_some(f, 10000, both, 2, 0);
    assert_int_equal(commit(f, "db1", 1, 0, NULL), 0);
    /* A renewal without the list (tests, older ombra-repld) confirms every database. */
    store_fence_renew_some(f, 10000, two, 1, 0);
    store_fence_renew(f, 10000);
    assert_int_equal(commit(f, "db1", 1, 0, NULL), 0);
    store_fence_free(f);
}

int main(void)
{
    om_log_min_level(OM_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unarmed_until_the_first_renewal),
        cmocka_unit_test(dac_no_commit_before_the_dag_spoke),
        cmocka_unit_test(durable_after_the_deadline_is_not_acknowledged),
        cmocka_unit_test(a_renewal_within_the_wait_lets_the_commit_through),
        cmocka_unit_test(a_handoff_refuses_new_commits_and_lets_those_in_flight_finish),
        cmocka_unit_test(dismounted_in_flight_is_not_acknowledged),
        cmocka_unit_test(a_database_the_renewal_does_not_confirm_stops_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
