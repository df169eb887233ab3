/* src/vss writer and requester SDKs, against a fake coordinator that lives in this test: a
 * Unix socket in a temp directory speaking docs/vss-protocol.md. For the writer, the test
 * thread plays the coordinator (the SDK has its own threads); for the requester (whose calls
 * block), a coordinator thread answers from a script and records every request. */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/time.h"
#include "fakecoord.h"
#include "vss/requester.h"
#include "vss/writer.h"

#define CLASS_ID    "5a1f0c2e-9d0b-4c55-8a39-1f4b8f1e0c01"
#define INSTANCE_ID "0c3a9b12-77e4-4d1a-9f0e-2b6de3a1c002"
#define S1          "11111111-1111-4111-8111-111111111111"
#define S2          "22222222-2222-4222-8222-222222222222"
#define S3          "33333333-3333-4333-8333-333333333333"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t ms_since(uint64_t t0)
{
    return (om_mono_ns() - t0) / 1000000u;
}

static int setup_dir(void **s)
{
    (void)s;
    om_log_min_level(OM_ERROR); /* the warnings these tests cause on purpose */
    return fc_setup_dir("vss-sdk");
}

/* ---- a writer whose handlers record what they saw ---- */

enum {
    EV_IDENTIFY,
    EV_PREPARE,
    EV_PREPSNAP,
    EV_FREEZE,
    EV_THAW,
    EV_POST,
    EV_COMPLETE,
    EV_ABORT,
    EV_SHUTDOWN,
    EV_PRERESTORE,
    EV_POSTRESTORE,
    NEV
};
static const char *const ev_names[NEV] = {"Identify",       "PrepareBackup", "PrepareSnapshot",
                                          "Freeze",         "Thaw",          "PostSnapshot",
                                          "BackupComplete", "Abort",         "BackupShutdown",
                                          "PreRestore",     "PostRestore"};

typedef struct tw {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int calls[NEV];
    char session[NEV][64];
    json_t *args[NEV];
    vss_failure fail[NEV]; /* fail with vss_fail */
    int fail_err[NEV];     /* fail with a plain error */
    int gate_ev;           /* the handler of this event waits while gate_closed */
    int gate_closed;
    int in_gate;
    int registrations;
} tw;

static tw T;
static vss_writer *W;

static int ev_index(const char *name)
{
    for (int i = 0; i < NEV; i++)
        if (!strcmp(ev_names[i], name)) return i;
    return -1;
}

static int handler(void *ctx, vss_event *e)
{
    tw *t = ctx;
    int i = ev_index(e->name);
    if (i < 0) return om_errf(OM_E_Internal, "no such event %s", e->name);
    pthread_mutex_lock(&t->mu);
    t->calls[i]++;
    snprintf(t->session[i], sizeof t->session[i], "%s", e->session);
    json_decref(t->args[i]);
    t->args[i] = json_deep_copy(e->args);
    vss_failure f = t->fail[i];
    int err = t->fail_err[i];
    if (i == t->gate_ev) {
        t->in_gate = 1;
        pthread_cond_broadcast(&t->cond);
        while (t->gate_closed)
            pthread_cond_wait(&t->cond, &t->mu);
    }
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
    if (f) return vss_fail(e, f, "database %s is dismounting", "db1");
    if (err) return om_errf(err, "reading the header of %s: short read", "db1.edb");
    if (i == EV_IDENTIFY) {
        vss_writer_info info = {.class_id = CLASS_ID, .instance_id = INSTANCE_ID, .name = "TW"};
        json_t *md = vss_wmd_new(&info, NULL, NULL);
        vss_wmd_add_component(md, "Test", "db1", NULL, 1);
        json_object_set_new(e->result, "metadata", md);
    }
    if (i == EV_POST)
        json_object_set_new(e->result, "components", json_pack("{s:{s:i}}", "db1", "first_log", 7));
    return 0;
}

static void on_registered(void *ctx)
{
    tw *t = ctx;
    pthread_mutex_lock(&t->mu);
    t->registrations++;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* PrepareSnapshot has no handler: it must succeed. */
static const vss_writer_ops ops = {
    .identify = handler,
    .prepare_backup = handler,
    .freeze = handler,
    .thaw = handler,
    .post_snapshot = handler,
    .backup_complete = handler,
    .abort = handler,
    .backup_shutdown = handler,
    .pre_restore = handler,
    .post_restore = handler,
    .registered = on_registered,
};

static void set_fail(int ev, vss_failure f, int err)
{
    pthread_mutex_lock(&T.mu);
    T.fail[ev] = f;
    T.fail_err[ev] = err;
    pthread_mutex_unlock(&T.mu);
}

static void close_gate(int ev)
{
    pthread_mutex_lock(&T.mu);
    T.gate_ev = ev;
    T.gate_closed = 1;
    pthread_mutex_unlock(&T.mu);
}

static void open_gate(void)
{
    pthread_mutex_lock(&T.mu);
    T.gate_closed = 0;
    pthread_cond_broadcast(&T.cond);
    pthread_mutex_unlock(&T.mu);
}

static void wait_in_gate(void)
{
    pthread_mutex_lock(&T.mu);
    while (!T.in_gate)
        pthread_cond_wait(&T.cond, &T.mu);
    pthread_mutex_unlock(&T.mu);
}

static int registrations(void)
{
    pthread_mutex_lock(&T.mu);
    int n = T.registrations;
    pthread_mutex_unlock(&T.mu);
    return n;
}

static int calls(int ev)
{
    pthread_mutex_lock(&T.mu);
    int n = T.calls[ev];
    pthread_mutex_unlock(&T.mu);
    return n;
}

/* 1 once the handler of ev was called n times, 0 after timeout_ms. */
static int wait_calls(int ev, int n, int timeout_ms)
{
    uint64_t t0 = om_mono_ns();
    pthread_mutex_lock(&T.mu);
    while (T.calls[ev] < n && ms_since(t0) < (uint64_t)timeout_ms) {
        pthread_mutex_unlock(&T.mu);
        sleep_ms(2);
        pthread_mutex_lock(&T.mu);
    }
    int ok = T.calls[ev] >= n;
    pthread_mutex_unlock(&T.mu);
    return ok;
}

static int wait_connected(int want, int timeout_ms)
{
    uint64_t t0 = om_mono_ns();
    while (vss_writer_connected(W) != want && ms_since(t0) < (uint64_t)timeout_ms)
        sleep_ms(2);
    return vss_writer_connected(W) == want;
}

static int setup_writer(void **s)
{
    if (setup_dir(s)) return -1;
    memset(&T, 0, sizeof T);
    T.gate_ev = -1;
    pthread_mutex_init(&T.mu, NULL);
    pthread_cond_init(&T.cond, NULL);
    W = NULL;
    return 0;
}

static int teardown_writer(void **s)
{
    (void)s;
    pthread_mutex_lock(&T.mu);
    T.gate_closed = 0;
    pthread_cond_broadcast(&T.cond);
    pthread_mutex_unlock(&T.mu);
    vss_writer_stop(W);
    W = NULL;
    for (int i = 0; i < NEV; i++)
        json_decref(T.args[i]);
    pthread_cond_destroy(&T.cond);
    pthread_mutex_destroy(&T.mu);
    fc_rm_dir();
    return 0;
}

static void start_writer(void)
{
    vss_writer_info info = {.class_id = CLASS_ID,
                            .instance_id = INSTANCE_ID,
                            .name = "Test Writer",
                            .can_hold = 1,
                            .socket_path = fc_sock};
    assert_int_equal(vss_writer_start(&info, &ops, &T, &W), 0);
}

/* Accepts the writer, checks its registration and accepts it; returns the connection. */
static int accept_writer(void)
{
    int fd = fc_accept(FC_WAIT_MS);
    assert_true(fd >= 0);
    json_t *reg = fc_recv(fd, FC_WAIT_MS);
    assert_non_null(reg);
    assert_string_equal(om_json_str_or(reg, "op", ""), "writer.register");
    assert_string_equal(om_json_str_or(reg, "class_id", ""), CLASS_ID);
    assert_string_equal(om_json_str_or(reg, "instance_id", ""), INSTANCE_ID);
    assert_string_equal(om_json_str_or(reg, "name", ""), "Test Writer");
    assert_true(json_is_true(json_object_get(reg, "can_hold")));
    assert_int_equal(om_json_int_or(reg, "pid", 0), getpid());
    json_decref(reg);
    fc_send(fd, om_proto_ok());
    assert_true(wait_connected(1, FC_WAIT_MS));
    uint64_t t0 = om_mono_ns(); /* the callback comes just after */
    while (registrations() < 1 && ms_since(t0) < FC_WAIT_MS)
        sleep_ms(2);
    return fd;
}

/* ---- writer tests ---- */

static void writer_registers_with_its_identity(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer(); /* checks every field of writer.register */
    assert_int_equal(registrations(), 1);
    close(fd);
}

static void writer_without_identify_is_refused(void **s)
{
    (void)s;
    vss_writer_ops none = {0};
    vss_writer_info info = {.class_id = CLASS_ID, .instance_id = INSTANCE_ID, .name = "x"};
    assert_int_equal(vss_writer_start(&info, &none, NULL, &W), OM_E_InvalidParameter);
    assert_null(W);
    vss_writer_ops o = {.identify = handler};
    info.instance_id = NULL;
    assert_int_equal(vss_writer_start(&info, &o, NULL, &W), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "instance id"));
}

static void writer_starts_before_the_coordinator_and_registers_when_it_comes(void **s)
{
    (void)s;
    uint64_t t0 = om_mono_ns();
    start_writer();
    assert_true(ms_since(t0) < 100); /* returns at once */
    sleep_ms(300);
    assert_false(vss_writer_connected(W));
    assert_int_equal(fc_listen(), 0);
    int fd = accept_writer();
    close(fd);
}

static void writer_registers_again_after_the_coordinator_restarts(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();
    close(fd); /* the coordinator dies */
    fc_unlisten();
    assert_true(wait_connected(0, FC_WAIT_MS));
    sleep_ms(500); /* a few refused attempts */
    assert_int_equal(fc_listen(), 0);
    fd = accept_writer(); /* the same identity again */
    uint64_t t0 = om_mono_ns();
    while (registrations() < 2 && ms_since(t0) < FC_WAIT_MS)
        sleep_ms(2);
    assert_int_equal(registrations(), 2);
    /* and events flow on the new connection */
    fc_send_event(fd, 1, "PrepareSnapshot", S1, NULL);
    fc_expect_ok(fd, 1);
    close(fd);
}

static void refused_registration_is_retried(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = fc_accept(FC_WAIT_MS);
    assert_true(fd >= 0);
    json_decref(fc_recv(fd, FC_WAIT_MS));
    om_errf(OM_E_DatabaseDuplicate, "a writer with instance id %s is connected", INSTANCE_ID);
    fc_send(fd, om_proto_error(OM_E_DatabaseDuplicate));
    close(fd);
    assert_false(vss_writer_connected(W));
    fd = accept_writer(); /* it tries again */
    close(fd);
}

static void events_reach_their_handler_and_answers_carry_id_and_result(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();

    fc_send_event(fd, 7, "Identify", S1, NULL);
    json_t *a = fc_answer(fd, 7);
    assert_true(json_is_true(json_object_get(a, "ok")));
    json_t *md = json_object_get(json_object_get(a, "result"), "metadata");
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "writer"), "name")),
                        "TW");
    json_decref(a);

    fc_send_event(fd, 8, "PrepareBackup", S1,
                  json_pack("{s:s, s:[s]}", "type", "full", "components", "Test\\db1"));
    fc_expect_ok(fd, 8);
    assert_int_equal(calls(EV_PREPARE), 1);
    assert_string_equal(T.session[EV_PREPARE], S1);
    assert_string_equal(om_json_str_or(T.args[EV_PREPARE], "type", ""), "full");

    fc_send_event(fd, 9, "PrepareSnapshot", S1, NULL); /* no handler: ok */
    fc_expect_ok(fd, 9);

    fc_send_event(fd, 10, "PostSnapshot", S1, json_pack("{s:[]}", "shadows"));
    a = fc_answer(fd, 10);
    json_t *want = json_pack("{s:{s:{s:i}}}", "components", "db1", "first_log", 7);
    assert_true(json_equal(json_object_get(a, "result"), want));
    json_decref(want);
    json_decref(a);

    set_fail(EV_COMPLETE, VSS_FAIL_RETRYABLE, 0);
    fc_send_event(fd, 11, "BackupComplete", S1, NULL);
    fc_expect_failure(fd, 11, "retryable", "database db1 is dismounting");

    set_fail(EV_PRERESTORE, VSS_FAIL_NONE, OM_E_DiskIO); /* failed without vss_fail */
    fc_send_event(fd, 12, "PreRestore", S2, NULL);
    fc_expect_failure(fd, 12, "non_retryable", "reading the header of db1.edb: short read");

    set_fail(EV_POSTRESTORE, VSS_FAIL_RECOVERY_FAILED, 0);
    fc_send_event(fd, 13, "PostRestore", S2, NULL);
    fc_expect_failure(fd, 13, "recovery_failed", "db1");

    fc_send_event(fd, 14, "Reboot", S1, NULL);
    fc_expect_failure(fd, 14, "non_retryable", "Reboot");
    close(fd);
}

static void events_of_different_sessions_are_answered_independently(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();
    close_gate(EV_COMPLETE);
    fc_send_event(fd, 1, "BackupComplete", S1, NULL);
    wait_in_gate();
    /* S1's BackupComplete is stuck in its handler; S2 freezes and thaws meanwhile. */
    fc_send_event(fd, 2, "Freeze", S2, json_pack("{s:[], s:b}", "components", "hold", 0));
    fc_expect_ok(fd, 2);
    fc_send_event(fd, 3, "Thaw", S2, NULL);
    fc_expect_ok(fd, 3);
    open_gate();
    fc_expect_ok(fd, 1);
    close(fd);
}

static void freeze_without_thaw_thaws_by_itself_and_late_thaw_times_out(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();
    uint64_t t0 = om_mono_ns();
    fc_send_event(
        fd, 1, "Freeze", S1,
        json_pack("{s:[s], s:b, s:i}", "components", "Test\\db1", "hold", 1, "thaw_limit_ms", 150));
    fc_expect_ok(fd, 1);
    assert_int_equal(calls(EV_THAW), 0);
    assert_true(wait_calls(EV_THAW, 1, FC_WAIT_MS));
    uint64_t waited = ms_since(t0);
    assert_true(waited >= 150);
    assert_true(json_is_true(json_object_get(T.args[EV_THAW], "auto")));
    assert_string_equal(T.session[EV_THAW], S1);
    fc_send_event(fd, 2, "Thaw", S1, NULL); /* too late */
    fc_expect_failure(fd, 2, "timeout", "thawed by itself");
    assert_int_equal(calls(EV_THAW), 1); /* not called again */
    /* the session is still open: BackupShutdown ends it normally */
    fc_send_event(fd, 3, "BackupShutdown", S1, NULL);
    fc_expect_ok(fd, 3);
    close(fd);
    sleep_ms(100);
    assert_int_equal(calls(EV_ABORT), 0);
}

static void thaw_in_time_cancels_the_auto_thaw(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();
    fc_send_event(fd, 1, "Freeze", S1,
                  json_pack("{s:[], s:i}", "components", "thaw_limit_ms", 600));
    fc_expect_ok(fd, 1);
    fc_send_event(fd, 2, "Thaw", S1, NULL); /* well within the limit, even on a loaded machine */
    fc_expect_ok(fd, 2);
    sleep_ms(800);
    assert_int_equal(calls(EV_THAW), 1);
    /* Abort during the freeze cancels it too */
    fc_send_event(fd, 3, "Freeze", S2,
                  json_pack("{s:[], s:i}", "components", "thaw_limit_ms", 600));
    fc_expect_ok(fd, 3);
    fc_send_event(fd, 4, "Abort", S2, NULL);
    fc_expect_ok(fd, 4);
    sleep_ms(800);
    assert_int_equal(calls(EV_THAW), 1);
    assert_int_equal(calls(EV_ABORT), 1);
    close(fd);
}

static void abort_during_freeze_waits_for_it_and_ends_the_freeze(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();
    close_gate(EV_FREEZE);
    fc_send_event(fd, 1, "Freeze", S1,
                  json_pack("{s:[], s:i}", "components", "thaw_limit_ms", 300));
    wait_in_gate();
    fc_send_event(fd, 2, "Abort", S1, NULL); /* the coordinator gave up on the Freeze */
    assert_null(fc_recv(fd, 200));           /* Abort waits for the Freeze handler */
    assert_int_equal(calls(EV_ABORT), 0);
    open_gate();
    fc_expect_ok(fd, 1);
    fc_expect_ok(fd, 2);
    assert_int_equal(calls(EV_ABORT), 1);
    sleep_ms(500);
    assert_int_equal(calls(EV_THAW), 0); /* the abort ended the freeze: no auto-thaw */
    close(fd);
}

static void lost_connection_aborts_the_open_sessions(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();
    fc_send_event(fd, 1, "PrepareBackup", S1,
                  json_pack("{s:s, s:[s]}", "type", "full", "components", "Test\\db1"));
    fc_expect_ok(fd, 1);
    fc_send_event(fd, 2, "Freeze", S1,
                  json_pack("{s:[s], s:b}", "components", "Test\\db1", "hold", 1));
    fc_expect_ok(fd, 2);
    fc_send_event(fd, 3, "PrepareBackup", S2,
                  json_pack("{s:s, s:[]}", "type", "copy", "components"));
    fc_expect_ok(fd, 3);
    fc_send_event(fd, 4, "BackupShutdown", S2, NULL); /* S2 is over */
    fc_expect_ok(fd, 4);
    fc_send_event(fd, 5, "Identify", S3, NULL); /* S3 never opened */
    json_decref(fc_answer(fd, 5));
    assert_int_equal(calls(EV_ABORT), 0);
    close(fd); /* the coordinator goes away while S1 is frozen */
    assert_true(wait_calls(EV_ABORT, 1, FC_WAIT_MS));
    assert_string_equal(T.session[EV_ABORT], S1);
    assert_true(json_is_true(json_object_get(T.args[EV_ABORT], "disconnected")));
    json_t *want = json_pack("[s]", "Test\\db1");
    assert_true(json_equal(json_object_get(T.args[EV_ABORT], "components"), want));
    json_decref(want);
    sleep_ms(300);
    assert_int_equal(calls(EV_ABORT), 1); /* S2 and S3 were not aborted */
    assert_int_equal(calls(EV_THAW), 0);
}

static void stopping_aborts_the_open_sessions(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();
    fc_send_event(fd, 1, "PrepareBackup", S1,
                  json_pack("{s:s, s:[]}", "type", "full", "components"));
    fc_expect_ok(fd, 1);
    fc_send_event(fd, 2, "Freeze", S1,
                  json_pack("{s:[], s:i}", "components", "thaw_limit_ms", 60000));
    fc_expect_ok(fd, 2);
    uint64_t t0 = om_mono_ns();
    vss_writer_stop(W); /* must not wait for the thaw limit */
    W = NULL;
    assert_true(ms_since(t0) < 2000);
    assert_int_equal(calls(EV_ABORT), 1);
    assert_int_equal(calls(EV_THAW), 0);
    close(fd);
}

static void abort_is_answered_ok_and_handled_once(void **s)
{
    (void)s;
    assert_int_equal(fc_listen(), 0);
    start_writer();
    int fd = accept_writer();
    fc_send_event(fd, 1, "Abort", S3, NULL); /* a session this writer never opened */
    fc_expect_ok(fd, 1);
    assert_int_equal(calls(EV_ABORT), 0);
    fc_send_event(fd, 2, "PrepareBackup", S1,
                  json_pack("{s:s, s:[]}", "type", "full", "components"));
    fc_expect_ok(fd, 2);
    set_fail(EV_ABORT, VSS_FAIL_NON_RETRYABLE, 0);
    fc_send_event(fd, 3, "Abort", S1, NULL);
    fc_expect_ok(fd, 3); /* even though the handler failed */
    fc_send_event(fd, 4, "Abort", S1, NULL);
    fc_expect_ok(fd, 4);
    assert_int_equal(calls(EV_ABORT), 1);
    close(fd);
    sleep_ms(200);
    assert_int_equal(calls(EV_ABORT), 1); /* not aborted again at disconnect */
}

static void failure_kinds_have_protocol_names_and_errors(void **s)
{
    (void)s;
    static const struct {
        vss_failure f;
        const char *name;
        int err;
    } k[] = {{VSS_FAIL_RETRYABLE, "retryable", -9110},
             {VSS_FAIL_NON_RETRYABLE, "non_retryable", -9111},
             {VSS_FAIL_TIMEOUT, "timeout", -9112},
             {VSS_FAIL_OUT_OF_RESOURCES, "out_of_resources", -9113},
             {VSS_FAIL_INCONSISTENT_SNAPSHOT, "inconsistent_snapshot", -9114},
             {VSS_FAIL_RECOVERY_FAILED, "recovery_failed", -9115}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        vss_failure f = VSS_FAIL_NONE;
        assert_string_equal(vss_failure_name(k[i].f), k[i].name);
        assert_int_equal(vss_failure_parse(k[i].name, &f), 0);
        assert_int_equal(f, k[i].f);
        assert_int_equal(vss_failure_error(k[i].f), k[i].err);
    }
    vss_failure f;
    assert_int_equal(vss_failure_parse("flaky", &f), OM_E_InvalidParameter);
    assert_int_equal(vss_failure_error(VSS_FAIL_NONE), 0);
    vss_event e = {.name = "Freeze"};
    assert_int_equal(vss_fail(&e, VSS_FAIL_TIMEOUT, "frozen %d s", 61), -9112);
    assert_int_equal(e.failure, VSS_FAIL_TIMEOUT);
    assert_string_equal(e.reason, "frozen 61 s");
}

static void metadata_builders_make_the_documented_document(void **s)
{
    (void)s;
    vss_writer_info info = {.class_id = CLASS_ID,
                            .instance_id = INSTANCE_ID,
                            .name = "Ombra Store Writer",
                            .can_hold = 1};
    json_t *md = vss_wmd_new(&info, NULL, NULL);
    json_t *c = vss_wmd_add_component(md, "Ombra Store\\srv1", "db-id", "db1", 1);
    assert_non_null(c);
    assert_int_equal(vss_wmd_add_file(c, "/data/db1/mail.edb", NULL, 0, 1), 0);
    assert_int_equal(vss_wmd_add_path(c, "/data/db1"), 0);
    json_t *l = vss_wmd_add_component(md, "Ombra Store\\srv1\\db-id", "Logs", NULL, 0);
    assert_int_equal(vss_wmd_add_file(l, "/data/db1/logs", "E00*.log", 0, 0), 0);
    assert_int_equal(vss_wmd_add_file(l, "/data/db1/logs/E00.chk", NULL, 0, 0), 0);
    assert_int_equal(vss_wmd_add_path(l, "/data/db1/logs"), 0);
    json_error_t je;
    json_t *want = json_loads(
        "{\"writer\":{\"class_id\":\"" CLASS_ID "\", \"instance_id\":\"" INSTANCE_ID "\","
        " \"name\":\"Ombra Store Writer\"},"
        " \"backup_types\":[\"full\",\"copy\",\"incremental\",\"differential\"],"
        " \"restore_method\":\"restore_if_can_replace\", \"can_hold\":true,"
        " \"components\":["
        "  {\"logical_path\":\"Ombra Store\\\\srv1\", \"name\":\"db-id\", \"caption\":\"db1\","
        "   \"selectable\":true, \"files\":[{\"path\":\"/data/db1/mail.edb\", \"held\":true}],"
        "   \"paths\":[\"/data/db1\"]},"
        "  {\"logical_path\":\"Ombra Store\\\\srv1\\\\db-id\", \"name\":\"Logs\","
        "   \"selectable\":false,"
        "   \"files\":[{\"path\":\"/data/db1/logs\", \"spec\":\"E00*.log\", \"recursive\":false,"
        "               \"held\":false}, {\"path\":\"/data/db1/logs/E00.chk\"}],"
        "   \"paths\":[\"/data/db1/logs\"]}]}",
        0, &je);
    assert_non_null(want);
    if (!json_equal(md, want)) {
        char *got = json_dumps(md, JSON_INDENT(1));
        fprintf(stderr, "got %s\n", got);
        free(got);
        fail();
    }
    json_decref(want);
    const char *const types[] = {"copy", NULL};
    json_t *md2 = vss_wmd_new(&info, types, "custom");
    want = json_pack("[s]", "copy");
    assert_true(json_equal(json_object_get(md2, "backup_types"), want));
    assert_string_equal(om_json_str_or(md2, "restore_method", ""), "custom");
    json_decref(want);
    json_decref(md2);
    json_decref(md);
}

/* ---- the requester against a scripted coordinator thread ---- */

typedef json_t *(*reply_fn)(const char *op, json_t *req);

typedef struct fake_coord {
    pthread_t thread;
    reply_fn reply;
    json_t *requests; /* every request received, in order */
    int fd;
} fake_coord;

static fake_coord C;

/* Serves one connection: each request gets reply(op, req); NULL closes the connection. */
static void *coord_thread(void *arg)
{
    (void)arg;
    C.fd = fc_accept(FC_WAIT_MS);
    if (C.fd < 0) return NULL;
    for (;;) {
        json_t *req = fc_recv(C.fd, FC_WAIT_MS);
        if (!req) break;
        json_array_append(C.requests, req);
        json_t *rep = C.reply(om_json_str_or(req, "op", ""), req);
        int last = !rep || !strcmp(om_json_str_or(req, "op", ""), "release");
        if (rep) om_proto_send(C.fd, rep, NULL, 0);
        json_decref(rep);
        json_decref(req);
        if (last) break;
    }
    close(C.fd);
    return NULL;
}

static void coord_start(reply_fn f)
{
    assert_int_equal(fc_listen(), 0);
    C.reply = f;
    C.requests = json_array();
    C.fd = -1;
    assert_int_equal(pthread_create(&C.thread, NULL, coord_thread, NULL), 0);
}

static json_t *coord_join(void)
{
    pthread_join(C.thread, NULL);
    json_t *r = C.requests;
    C.requests = NULL;
    return r;
}

static json_t *ok_with(const char *fmt, ...)
{
    json_t *r = om_proto_ok();
    if (!fmt) return r;
    va_list ap;
    va_start(ap, fmt);
    json_error_t je;
    json_t *f = json_vpack_ex(&je, 0, fmt, ap);
    va_end(ap);
    json_object_update(r, f);
    json_decref(f);
    return r;
}

static json_t *backup_script(const char *op, json_t *req)
{
    (void)req;
    if (!strcmp(op, "session.begin")) return ok_with("{s:s}", "session", S1);
    if (!strcmp(op, "gather_metadata"))
        return ok_with("{s:[{s:s, s:s, s:{}}]}", "writers", "instance_id", INSTANCE_ID, "name",
                       "Test Writer", "metadata");
    if (!strcmp(op, "start_snapshot_set")) return ok_with("{s:s}", "set", S2);
    if (!strcmp(op, "add_path"))
        return ok_with("{s:s, s:s}", "provider", "held", "why", "can hold");
    if (!strcmp(op, "do_snapshot_set"))
        return ok_with("{s:s, s:[{s:s, s:s, s:s}], s:i, s:i, s:{}}", "set", S2, "shadows",
                       "original", "/d", "exposed", "/s/d", "provider", "held", "freeze_ms", 12,
                       "snapshot_ms", 40, "components_document");
    if (!strcmp(op, "gather_status")) return ok_with("{s:[]}", "writers");
    if (!strcmp(op, "backup_complete"))
        return ok_with("{s:{s:s}}", "components_document", "session", S1);
    return om_proto_ok();
}

static int setup_req(void **s)
{
    memset(&C, 0, sizeof C);
    return setup_dir(s);
}

static int teardown_req(void **s)
{
    (void)s;
    json_decref(C.requests);
    fc_rm_dir();
    return 0;
}

static void requester_sends_the_documented_ops_in_order(void **s)
{
    (void)s;
    coord_start(backup_script);
    vss_req *r = NULL;
    assert_int_equal(vss_req_begin(fc_sock, VSS_SESSION_BACKUP, &r), 0);
    assert_string_equal(vss_req_session(r), S1);
    json_t *writers = NULL, *res = NULL, *doc = NULL, *st = NULL;
    assert_int_equal(vss_req_gather_metadata(r, &writers), 0);
    assert_int_equal(json_array_size(writers), 1);
    assert_int_equal(vss_req_set_backup_state(r, "incremental"), 0);
    assert_int_equal(vss_req_add_component(r, INSTANCE_ID, "Test\\db1"), 0);
    assert_int_equal(vss_req_prepare_backup(r), 0);
    char set[37], chosen[16];
    assert_int_equal(vss_req_start_snapshot_set(r, 1, set), 0);
    assert_string_equal(set, S2);
    assert_int_equal(vss_req_add_path(r, "/d", NULL, chosen, sizeof chosen), 0);
    assert_string_equal(chosen, "held");
    assert_int_equal(vss_req_do_snapshot_set(r, &res), 0);
    assert_int_equal(om_json_int_or(res, "freeze_ms", 0), 12);
    assert_int_equal(json_array_size(json_object_get(res, "shadows")), 1);
    assert_null(json_object_get(res, "ok"));
    assert_int_equal(vss_req_gather_status(r, &st), 0);
    assert_int_equal(vss_req_set_backup_succeeded(r, INSTANCE_ID, "Test\\db1", 0), 0);
    assert_int_equal(vss_req_backup_complete(r, &doc), 0);
    assert_string_equal(om_json_str_or(doc, "session", ""), S1);
    assert_int_equal(vss_req_release(r), 0);
    json_decref(writers);
    json_decref(res);
    json_decref(doc);
    json_decref(st);

    json_t *reqs = coord_join();
    json_error_t je;
    json_t *want = json_pack_ex(
        &je, 0,
        "[{s:s, s:s}, {s:s}, {s:s, s:s}, {s:s, s:s, s:s}, {s:s}, {s:s, s:b}, {s:s, s:s, s:s},"
        " {s:s}, {s:s}, {s:s, s:s, s:s, s:b}, {s:s}, {s:s}]",
        "op", "session.begin", "kind", "backup", "op", "gather_metadata", "op", "set_backup_state",
        "type", "incremental", "op", "add_component", "instance_id", INSTANCE_ID, "component",
        "Test\\db1", "op", "prepare_backup", "op", "start_snapshot_set", "persistent", 1, "op",
        "add_path", "path", "/d", "provider", "auto", "op", "do_snapshot_set", "op",
        "gather_status", "op", "set_backup_succeeded", "instance_id", INSTANCE_ID, "component",
        "Test\\db1", "succeeded", 0, "op", "backup_complete", "op", "release");
    assert_non_null(want);
    if (!json_equal(reqs, want)) {
        char *got = json_dumps(reqs, JSON_INDENT(1));
        fprintf(stderr, "requests: %s\n", got);
        free(got);
        fail();
    }
    json_decref(want);
    json_decref(reqs);
}

static json_t *restore_script(const char *op, json_t *req)
{
    (void)req;
    if (!strcmp(op, "session.begin")) return ok_with("{s:s}", "session", S3);
    return om_proto_ok();
}

static void requester_restore_ops_carry_the_documents_and_options(void **s)
{
    (void)s;
    coord_start(restore_script);
    vss_req *r = NULL;
    assert_int_equal(vss_req_begin(fc_sock, VSS_SESSION_RESTORE, &r), 0);
    json_t *mds = json_pack("[{s:{s:s}}]", "writer", "name", "W");
    json_t *doc = json_pack("{s:s}", "session", S1);
    json_t *opts = json_pack("{s:b}", "point_in_time", 0);
    json_t *target = json_pack("{s:s}", "database", "rdb");
    assert_int_equal(vss_req_load_documents(r, mds, doc), 0);
    assert_int_equal(vss_req_add_restore_component(r, INSTANCE_ID, "Test\\db1", opts, target), 0);
    assert_int_equal(vss_req_add_restore_component(r, INSTANCE_ID, "Test\\db2", NULL, NULL), 0);
    assert_int_equal(vss_req_set_additional_restores(r, 1), 0);
    assert_int_equal(vss_req_pre_restore(r, NULL), 0);
    assert_int_equal(vss_req_post_restore(r, NULL), 0);
    assert_int_equal(vss_req_release(r), 0);
    json_t *reqs = coord_join();
    json_t *want =
        json_pack("[{s:s, s:s}, {s:s, s:O, s:O}, {s:s, s:s, s:s, s:O, s:O}, {s:s, s:s, s:s, s:{}},"
                  " {s:s, s:b}, {s:s}, {s:s}, {s:s}]",
                  "op", "session.begin", "kind", "restore", "op", "load_documents", "metadata", mds,
                  "components_document", doc, "op", "add_restore_component", "instance_id",
                  INSTANCE_ID, "component", "Test\\db1", "restore_options", opts, "new_target",
                  target, "op", "add_restore_component", "instance_id", INSTANCE_ID, "component",
                  "Test\\db2", "restore_options", "op", "set_additional_restores", "value", 1, "op",
                  "pre_restore", "op", "post_restore", "op", "release");
    assert_non_null(want);
    assert_true(json_equal(reqs, want));
    json_decref(want);
    json_decref(reqs);
    json_decref(mds);
    json_decref(doc);
    json_decref(opts);
    json_decref(target);
}

#define REFUSAL                                                                                    \
    "writer 'Ombra Store Writer' refused PrepareBackup: database db1 is being backed "             \
    "up by session " S2

static json_t *refusing_script(const char *op, json_t *req)
{
    if (!strcmp(op, "prepare_backup"))
        return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "error", -505, "name", "BackupInProgress",
                         "message", REFUSAL);
    if (!strcmp(op, "do_snapshot_set"))
        return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "error", -9100, "name", "BadState",
                         "message", "the session is aborted: only gather_status and release");
    return backup_script(op, req);
}

static void requester_maps_error_replies_to_their_number_and_message(void **s)
{
    (void)s;
    coord_start(refusing_script);
    vss_req *r = NULL;
    assert_int_equal(vss_req_begin(fc_sock, VSS_SESSION_BACKUP, &r), 0);
    assert_int_equal(vss_req_add_component(r, INSTANCE_ID, "Test\\db1"), 0);
    assert_int_equal(vss_req_prepare_backup(r), OM_E_BackupInProgress);
    assert_string_equal(om_err_detail(), REFUSAL);
    assert_int_equal(vss_req_do_snapshot_set(r, NULL), OM_E_BadState);
    assert_non_null(strstr(om_err_detail(), "only gather_status"));
    assert_true(vss_req_connected(r)); /* an error reply keeps the session */
    assert_int_equal(vss_req_release(r), 0);
    json_decref(coord_join());
}

static json_t *vanishing_script(const char *op, json_t *req)
{
    if (!strcmp(op, "do_snapshot_set")) return NULL; /* the coordinator dies */
    return backup_script(op, req);
}

static void requester_reports_a_lost_connection_as_aborted(void **s)
{
    (void)s;
    coord_start(vanishing_script);
    vss_req *r = NULL;
    assert_int_equal(vss_req_begin(fc_sock, VSS_SESSION_BACKUP, &r), 0);
    assert_int_equal(vss_req_prepare_backup(r), 0);
    json_t *res = NULL;
    assert_int_equal(vss_req_do_snapshot_set(r, &res), OM_E_Aborted);
    assert_null(res);
    assert_string_equal(om_err_detail(),
                        "the shadow copy service closed the session (is ombra-vssd running?)");
    assert_false(vss_req_connected(r));
    om_err_clear();
    assert_int_equal(vss_req_backup_complete(r, NULL), OM_E_Aborted);
    assert_non_null(strstr(om_err_detail(), "ombra-vssd"));
    assert_int_equal(vss_req_release(r), 0); /* frees without a connection */
    json_t *reqs = coord_join();
    assert_int_equal(json_array_size(reqs), 3); /* nothing sent after the loss */
    json_decref(reqs);
}

static void requester_begin_without_the_service_says_to_start_it(void **s)
{
    (void)s;
    vss_req *r = NULL;
    assert_int_equal(vss_req_begin(fc_sock, VSS_SESSION_BACKUP, &r), OM_E_FileNotFound);
    assert_null(r);
    assert_non_null(strstr(om_err_detail(), fc_sock));
    assert_non_null(strstr(om_err_detail(), "HINT: start ombra-vssd"));
}

/* A component's database id under a writer's logical path: the database and its Logs only. */
static void component_names_split_into_a_database_id(void **state)
{
    const char *id = "0123abcd-0000-4000-8000-00000000abcd";
    char got[37], name[200];
    int logs = -1;
    snprintf(name, sizeof name, "Ombra Store\\a\\%s", id);
    assert_int_equal(vss_comp_split("Ombra Store\\a", name, got, &logs), 1);
    assert_string_equal(got, id);
    assert_int_equal(logs, 0);
    snprintf(name, sizeof name, "Ombra Store\\a\\%s\\Logs", id);
    assert_int_equal(vss_comp_split("Ombra Store\\a", name, got, &logs), 1);
    assert_int_equal(logs, 1);
    snprintf(name, sizeof name, "Ombra Store\\a\\%s\\Other", id);
    assert_int_equal(vss_comp_split("Ombra Store\\a", name, got, &logs), 0);
    snprintf(name, sizeof name, "Ombra Store\\ab\\%s", id);
    assert_int_equal(vss_comp_split("Ombra Store\\a", name, got, &logs), 0);
    assert_int_equal(vss_comp_split("Ombra Store\\a", "Ombra Store\\a\\short", got, &logs), 0);
    assert_int_equal(vss_comp_split("Ombra Store\\a", NULL, got, &logs), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define WT(t) cmocka_unit_test_setup_teardown(t, setup_writer, teardown_writer)
#define RT(t) cmocka_unit_test_setup_teardown(t, setup_req, teardown_req)
        WT(writer_registers_with_its_identity),
        WT(writer_without_identify_is_refused),
        WT(writer_starts_before_the_coordinator_and_registers_when_it_comes),
        WT(writer_registers_again_after_the_coordinator_restarts),
        WT(refused_registration_is_retried),
        WT(events_reach_their_handler_and_answers_carry_id_and_result),
        WT(events_of_different_sessions_are_answered_independently),
        WT(freeze_without_thaw_thaws_by_itself_and_late_thaw_times_out),
        WT(thaw_in_time_cancels_the_auto_thaw),
        WT(abort_during_freeze_waits_for_it_and_ends_the_freeze),
        WT(lost_connection_aborts_the_open_sessions),
        WT(stopping_aborts_the_open_sessions),
        WT(abort_is_answered_ok_and_handled_once),
        cmocka_unit_test(failure_kinds_have_protocol_names_and_errors),
        cmocka_unit_test(component_names_split_into_a_database_id),
        cmocka_unit_test(metadata_builders_make_the_documented_document),
        RT(requester_sends_the_documented_ops_in_order),
        RT(requester_restore_ops_carry_the_documents_and_options),
        RT(requester_maps_error_replies_to_their_number_and_message),
        RT(requester_reports_a_lost_connection_as_aborted),
        RT(requester_begin_without_the_service_says_to_start_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
