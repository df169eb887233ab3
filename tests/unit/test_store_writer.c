/* src/store/writer.c in-process: a registry of real databases in a temp directory, the store's
 * writer on it, and the test playing ombra-vssd through the fake coordinator (fakecoord.h),
 * without a store daemon. What is checked is what a backup relies on: the writer offers each
 * mounted database, a full backup is recorded in the database's header once it completes (and
 * only then), administrative actions are refused from PrepareBackup to BackupComplete, and a
 * database closing in the middle of a session (the registry tells the writer) releases what the
 * backup held of it, so the dismount does not wait for the backup, and the backup fails: nothing
 * recorded, nothing truncated. A restore's slot (one per target, from PreRestore) goes on every
 * way out of PostRestore, its failures included, not only at the session's Abort.
 *
 * The test links with --wrap=calloc (tests/unit/meson.build): __wrap_calloc fails one allocation
 * when a test arms it. */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "engine/engine.h"
#include "fakecoord.h"
#include "store/mail.h"
#include "store/registry.h"
#include "store/store_writer.h"

#define S1 "11111111-1111-4111-8111-111111111111"
#define S2 "22222222-2222-4222-8222-222222222222"

/* calloc for every object of this test (the store's code included): the C library's, except that
 * once armed it fails the first request for an array (more than one element) of elements over
 * 4 KiB, as PostRestore's list of retired folders is (one per component, and one more). */
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
static atomic_int fail_big_array_calloc;

void *__wrap_calloc(size_t n, size_t size)
{
    if (n > 1 && size > 4096 && atomic_exchange(&fail_big_array_calloc, 0)) return NULL;
    return __real_calloc(n, size);
}

typedef struct fixture {
    store_registry *reg;
    store_writer *w;
    int fd; /* the writer's connection to the fake coordinator */
    char id[37];
    char comp[300]; /* the database's component */
    om_uuid uuid;
} fixture;

static fixture F;

/* Creates database name (mounted) in the registry, as db.new does, with one message in it. */
static void make_db(const char *name)
{
    store_dbent e = {0};
    snprintf(e.name, sizeof e.name, "%s", name);
    snprintf(e.server, sizeof e.server, "srv1");
    snprintf(e.edb, sizeof e.edb, "%s/dbs/%s/%s.edb", fc_dir, name, name);
    snprintf(e.logs, sizeof e.logs, "%s/dbs/%s/logs", fc_dir, name);
    memcpy(e.base, "E00", 4);
    char d[4096];
    om_dirname(e.edb, d, sizeof d);
    assert_int_equal(om_mkdirs(d), 0);
    assert_int_equal(om_mkdirs(e.logs), 0);
    pthread_mutex_lock(&F.reg->mu);
    assert_int_equal(store_mount_locked(F.reg, &e, 1), 0);
    store_mounted *m = store_find_mounted(F.reg, name);
    eng_info in;
    assert_int_equal(eng_db_info(m->db, &in), 0);
    e.id = in.db_id;
    e.mounted = 1;
    assert_int_equal(store_dir_put(F.reg->dir, &e), 0);
    pthread_mutex_unlock(&F.reg->mu);
    F.uuid = e.id;
    om_uuid_str(&e.id, F.id);
    snprintf(F.comp, sizeof F.comp, "Ombra Store\\srv1\\%s", F.id);

    store_mounted *ref;
    assert_int_equal(store_acquire(F.reg, name, &ref), 0);
    mail_new msg = {.mailbox = "alice", .subject = "before the backup", .body = "hello", .size = 5};
    uint64_t mid;
    assert_int_equal(store_mail_deliver(ref->mail, &msg, 0, &mid), 0);
    store_release(F.reg, ref);
}

static int setup(void **s)
{
    (void)s;
    om_log_min_level(OM_ERROR);
    /* A dismount that waits for a frozen database never returns: end the run rather than hang
     * until the suite's timeout. */
    alarm(120);
    memset(&F, 0, sizeof F);
    F.fd = -1;
    if (fc_setup_dir("store-writer")) return -1;
    /* The writer finds the coordinator at <runtime>/vss.sock. */
    setenv("OMBRA_RUNTIME_DIR", fc_dir, 1);
    char path[200];
    snprintf(path, sizeof path, "%s/directory.json", fc_dir);
    store_registry_opts o = {.server = "srv1", .dir_path = path};
    if (store_registry_open(&o, &F.reg)) return -1;
    make_db("db1");
    assert_int_equal(fc_listen(), 0);
    assert_int_equal(store_writer_start(F.reg, &F.w), 0);
    F.fd = fc_accept(FC_WAIT_MS);
    assert_true(F.fd >= 0);
    json_t *reg = fc_recv(F.fd, FC_WAIT_MS);
    assert_non_null(reg);
    assert_string_equal(om_json_str_or(reg, "op", ""), "writer.register");
    assert_string_equal(om_json_str_or(reg, "name", ""), "Ombra Store Writer");
    assert_true(json_is_true(json_object_get(reg, "can_hold")));
    json_decref(reg);
    fc_send(F.fd, om_proto_ok());
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    store_writer_stop(F.w);
    if (F.fd >= 0) close(F.fd);
    assert_int_equal(store_registry_close(F.reg), 0);
    fc_rm_dir();
    alarm(0);
    return 0;
}

/* The backup slot of db1 as its header says, opened read-only beside the registry when it is
 * not mounted. */
static eng_bkslot slot_of(enum eng_bkslot_id id)
{
    eng_info in;
    pthread_mutex_lock(&F.reg->mu);
    store_mounted *m = store_find_mounted(F.reg, "db1");
    store_dbent *e = store_dir_find(F.reg->dir, "db1");
    eng_opts o = store_ent_opts(F.reg, e);
    assert_int_equal(m ? eng_db_info(m->db, &in) : eng_db_inspect(&o, &in), 0);
    pthread_mutex_unlock(&F.reg->mu);
    return in.slots[id];
}

static int in_backup(void)
{
    char sid[40];
    return store_writer_backing_up(F.w, &F.uuid, sid) && !strcmp(sid, S1);
}

static json_t *comps(void)
{
    return json_pack("[s]", F.comp);
}

/* Identify, PrepareBackup, PrepareSnapshot and Freeze (with hold) of a full backup of db1. */
static void prepare_and_freeze(void)
{
    fc_send_event(F.fd, 1, "Identify", S1, NULL);
    json_t *a = fc_answer(F.fd, 1);
    json_t *md = json_object_get(json_object_get(a, "result"), "metadata"), *c;
    size_t i;
    int offered = 0;
    json_array_foreach(json_object_get(md, "components"), i, c)
    {
        char full[400];
        snprintf(full, sizeof full, "%s\\%s", om_json_str_or(c, "logical_path", ""),
                 om_json_str_or(c, "name", ""));
        offered += !strcmp(full, F.comp);
    }
    assert_int_equal(offered, 1);
    json_decref(a);
    assert_false(in_backup());
    fc_send_event(F.fd, 2, "PrepareBackup", S1,
                  json_pack("{s:s, s:o}", "type", "full", "components", comps()));
    fc_expect_ok(F.fd, 2);
    assert_true(in_backup()); /* dismount and settings are refused from here on */
    fc_send_event(F.fd, 3, "PrepareSnapshot", S1, json_pack("{s:o}", "components", comps()));
    fc_expect_ok(F.fd, 3);
    fc_send_event(
        F.fd, 4, "Freeze", S1,
        json_pack("{s:o, s:b, s:i}", "components", comps(), "hold", 1, "thaw_limit_ms", 10000));
    fc_expect_ok(F.fd, 4);
}

/* Thaw and PostSnapshot -> the component's backup metadata. */
static json_t *thaw_and_post(void)
{
    fc_send_event(F.fd, 5, "Thaw", S1, json_pack("{s:o}", "components", comps()));
    fc_expect_ok(F.fd, 5);
    fc_send_event(F.fd, 6, "PostSnapshot", S1,
                  json_pack("{s:o, s:[]}", "components", comps(), "shadows"));
    json_t *a = fc_answer(F.fd, 6);
    assert_true(json_is_true(json_object_get(a, "ok")));
    json_t *md = json_incref(
        json_object_get(json_object_get(json_object_get(a, "result"), "components"), F.comp));
    json_decref(a);
    assert_non_null(md);
    return md;
}

static void backup_complete(void)
{
    fc_send_event(F.fd, 7, "BackupComplete", S1,
                  json_pack("{s:[{s:s, s:b}]}", "components", "name", F.comp, "succeeded", 1));
    fc_expect_ok(F.fd, 7);
}

/* Dismounts db1 as db dismount does; it must not wait for the backup (FC_WAIT_MS at most). */
static void dismount_db1(void)
{
    uint64_t t0 = om_mono_ns();
    pthread_mutex_lock(&F.reg->mu);
    store_mounted *m = store_find_mounted(F.reg, "db1");
    assert_non_null(m);
    assert_int_equal(store_dismount_locked(F.reg, m), 0);
    pthread_mutex_unlock(&F.reg->mu);
    assert_true((om_mono_ns() - t0) / 1000000u < FC_WAIT_MS);
    assert_null(store_find_mounted(F.reg, "db1"));
}

/* db1 mounts again and takes mail. */
static void serves_mail_again(void)
{
    pthread_mutex_lock(&F.reg->mu);
    if (!store_find_mounted(F.reg, "db1"))
        assert_int_equal(store_mount_locked(F.reg, store_dir_find(F.reg->dir, "db1"), 0), 0);
    pthread_mutex_unlock(&F.reg->mu);
    store_mounted *m;
    assert_int_equal(store_acquire(F.reg, "db1", &m), 0);
    mail_new msg = {.mailbox = "alice", .body = "after", .size = 5};
    uint64_t id;
    assert_int_equal(store_mail_deliver(m->mail, &msg, 0, &id), 0);
    store_release(F.reg, m);
}

static void a_full_backup_is_recorded_when_it_completes(void **s)
{
    (void)s;
    assert_int_equal(slot_of(ENG_BK_PREV_FULL).mark_time, 0);
    prepare_and_freeze();
    json_t *md = thaw_and_post();
    assert_string_equal(om_json_str_or(md, "db_id", ""), F.id);
    assert_string_equal(om_json_str_or(md, "type", ""), "full");
    json_t *range = json_object_get(md, "log_range");
    uint32_t first = (uint32_t)json_integer_value(json_array_get(range, 0)),
             last = (uint32_t)json_integer_value(json_array_get(range, 1));
    assert_true(first >= 1 && last >= first);
    json_decref(md);
    assert_int_equal(slot_of(ENG_BK_PREV_FULL).mark_time, 0); /* not before it completes */
    backup_complete();
    /* Recorded in the header: the next incremental continues from it. */
    eng_bkslot full = slot_of(ENG_BK_PREV_FULL);
    assert_true(full.mark_time != 0);
    assert_int_equal(full.first_gen, first);
    assert_int_equal(full.last_gen, last);
    assert_false(in_backup()); /* administrative actions are allowed again */
    fc_send_event(F.fd, 8, "BackupShutdown", S1,
                  json_pack("{s:o, s:[]}", "components", comps(), "stored"));
    fc_expect_ok(F.fd, 8);
    serves_mail_again();
}

static void an_aborted_backup_records_nothing(void **s)
{
    (void)s;
    prepare_and_freeze();
    fc_send_event(F.fd, 5, "Abort", S1, json_pack("{s:o}", "components", comps()));
    fc_expect_ok(F.fd, 5);
    assert_false(in_backup());
    assert_int_equal(slot_of(ENG_BK_PREV_FULL).mark_time, 0);
    dismount_db1(); /* nothing is left frozen or held */
    serves_mail_again();
}

static void a_database_dismounted_while_frozen_is_released_at_once(void **s)
{
    (void)s;
    prepare_and_freeze();
    /* Frozen and held: the registry tells the writer, which thaws the database and lets its
     * held pages go before it closes, so the dismount does not wait for the backup. */
    dismount_db1();
    /* The session cannot go on with it: Thaw says why, the abort that follows records
     * nothing. */
    fc_send_event(F.fd, 5, "Thaw", S1, json_pack("{s:o}", "components", comps()));
    json_t *a = fc_answer(F.fd, 5);
    assert_true(json_is_false(json_object_get(a, "ok")));
    assert_non_null(strstr(om_json_str_or(a, "reason", ""), "'db1' is not mounted"));
    json_decref(a);
    fc_send_event(F.fd, 6, "Abort", S1, json_pack("{s:o}", "components", comps()));
    fc_expect_ok(F.fd, 6);
    assert_false(in_backup());
    assert_int_equal(slot_of(ENG_BK_PREV_FULL).mark_time, 0);
    serves_mail_again();
}

static void a_database_closed_before_backup_complete_loses_that_backup(void **s)
{
    (void)s;
    prepare_and_freeze();
    json_decref(thaw_and_post());
    /* Its pages are still held for the shadow copy: the close releases them (a store stopping;
     * an administrator's dismount is refused until BackupComplete). */
    dismount_db1();
    /* Spec §5: the backup in progress is lost; BackupComplete fails, nothing is recorded. */
    fc_send_event(F.fd, 7, "BackupComplete", S1,
                  json_pack("{s:[{s:s, s:b}]}", "components", "name", F.comp, "succeeded", 1));
    fc_expect_failure(F.fd, 7, "retryable", "closed during backup session");
    assert_int_equal(slot_of(ENG_BK_PREV_FULL).mark_time, 0);
    assert_int_equal(slot_of(ENG_BK_PREV_COPY).mark_time, 0);
    fc_send_event(F.fd, 8, "BackupShutdown", S1,
                  json_pack("{s:o, s:[]}", "components", comps(), "stored"));
    fc_expect_ok(F.fd, 8);
    serves_mail_again();
}

/* Log generations of db1 on disk numbered below below. */
static unsigned gens_below(uint32_t below)
{
    char logs[4200], p[4300];
    snprintf(logs, sizeof logs, "%s/dbs/db1/logs", fc_dir);
    unsigned n = 0;
    for (uint32_t g = 1; g < below; g++) {
        snprintf(p, sizeof p, "%s/E00%08X.log", logs, g);
        n += access(p, F_OK) == 0;
    }
    return n;
}

/* Mail enough for several log generations (1 MiB each). */
static void fill_logs(void)
{
    store_mounted *m;
    assert_int_equal(store_acquire(F.reg, "db1", &m), 0);
    static char body[600 << 10];
    memset(body, 'x', sizeof body);
    for (int i = 0; i < 6; i++) {
        mail_new msg = {.mailbox = "alice", .body = body, .size = sizeof body};
        uint64_t id;
        assert_int_equal(store_mail_deliver(m->mail, &msg, 0, &id), 0);
    }
    store_release(F.reg, m);
}

static void a_database_closed_after_backup_complete_keeps_its_backup_and_its_logs(void **s)
{
    (void)s;
    fill_logs();
    prepare_and_freeze();
    json_decref(thaw_and_post());
    backup_complete();
    eng_bkslot full = slot_of(ENG_BK_PREV_FULL);
    assert_true(full.mark_time != 0); /* recorded */
    unsigned before = gens_below(full.last_gen);
    assert_true(before > 0); /* what a BackupShutdown would truncate */
    /* Closed (and mounted again: what is mounted under its id could be a restore of it) before
     * BackupShutdown: nothing of it is truncated. */
    dismount_db1();
    serves_mail_again();
    fc_send_event(F.fd, 8, "BackupShutdown", S1,
                  json_pack("{s:o, s:[s]}", "components", comps(), "stored", F.comp));
    fc_expect_ok(F.fd, 8);
    assert_int_equal(gens_below(full.last_gen), before);
}

static void the_writer_stopped_is_told_no_more(void **s)
{
    (void)s;
    prepare_and_freeze();
    /* Stopping aborts the session (holds released) and unsubscribes: a dismount afterwards
     * calls nothing of the freed writer. */
    store_writer_stop(F.w);
    F.w = NULL;
    assert_int_equal(F.reg->nclosing, 0);
    pthread_mutex_lock(&F.reg->mu);
    assert_int_equal(store_dismount_locked(F.reg, store_find_mounted(F.reg, "db1")), 0);
    pthread_mutex_unlock(&F.reg->mu);
    assert_int_equal(slot_of(ENG_BK_PREV_FULL).mark_time, 0);
}

/* How many restore slots the writer has (store_writer_restores, the status request's). */
static size_t slots(void)
{
    json_t *r = store_writer_restores(F.w);
    size_t n = json_array_size(r);
    json_decref(r);
    return n;
}

/* A restore component of db1's backup to new paths under the test's directory. */
static json_t *restore_to_new_paths(void)
{
    char edb[200], logs[200];
    snprintf(edb, sizeof edb, "%s/new/restored.edb", fc_dir);
    snprintf(logs, sizeof logs, "%s/new/logs", fc_dir);
    return json_pack("[{s:s, s:{s:s, s:s}, s:{}, s:{s:s, s:s}, s:b}]", "name", F.comp,
                     "backup_metadata", "db_id", F.id, "base", "E00", "restore_options",
                     "new_target", "edb", edb, "logs", logs, "additional_restores", 0);
}

static void a_post_restore_that_fails_before_any_component_lets_the_slots_go(void **s)
{
    (void)s;
    json_t *c = restore_to_new_paths();
    fc_send_event(F.fd, 1, "PreRestore", S1, json_pack("{s:O}", "components", c));
    fc_expect_ok(F.fd, 1);
    assert_int_equal(slots(), 1);
    /* Another session's restore of the same target is refused while the slot is held. */
    fc_send_event(F.fd, 2, "PreRestore", S2, json_pack("{s:O}", "components", c));
    fc_expect_failure(F.fd, 2, "non_retryable", "being restored already");
    atomic_store(&fail_big_array_calloc, 1);
    fc_send_event(F.fd, 3, "PostRestore", S1, json_pack("{s:O}", "components", c));
    json_t *a = fc_answer(F.fd, 3);
    assert_true(json_is_false(json_object_get(a, "ok")));
    assert_string_equal(om_json_str_or(a, "failure", ""), "recovery_failed");
    assert_int_equal(atomic_load(&fail_big_array_calloc), 0); /* that calloc was the one failed */
    /* Before any Abort: the answer came after the slot went. */
    assert_int_equal(slots(), 0);
    assert_non_null(
        strstr(om_json_str_or(a, "reason", ""), "PostRestore of session " S1 ": out of memory"));
    json_decref(a);
    fc_send_event(F.fd, 4, "PreRestore", S2, json_pack("{s:O}", "components", c));
    fc_expect_ok(F.fd, 4);
    assert_int_equal(slots(), 1);
    fc_send_event(F.fd, 5, "Abort", S2, json_pack("{s:[]}", "components"));
    fc_expect_ok(F.fd, 5);
    assert_int_equal(slots(), 0);
    json_decref(c);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(a_full_backup_is_recorded_when_it_completes),
        T(an_aborted_backup_records_nothing),
        T(a_database_dismounted_while_frozen_is_released_at_once),
        T(a_database_closed_before_backup_complete_loses_that_backup),
        T(a_database_closed_after_backup_complete_keeps_its_backup_and_its_logs),
        T(the_writer_stopped_is_told_no_more),
        T(a_post_restore_that_fails_before_any_component_lets_the_slots_go),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
