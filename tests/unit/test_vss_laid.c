/* src/vss/laid.c: the restore's progress file, as the writer (create, wait) and the requester
 * (hold, say, release) use it, on the real file system in a temp directory. The requester's
 * lock is per open file, so both sides can run in this one process. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/vfs.h"
#include "vss/laid.h"

#define S1 "11111111-1111-4111-8111-111111111111"
#define S2 "22222222-2222-4222-8222-222222222222"

static char tmpdir[64], path[128];

static int setup(void **s)
{
    (void)s;
    om_log_min_level(OM_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ombra-laid-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(path, sizeof path, "%s/E00restore.laid", tmpdir);
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The writer's PreRestore: the file, made empty. */
static void create_file(void)
{
    om_dir *d = NULL;
    assert_int_equal(om_dir_open(om_vfs_posix(), NULL, tmpdir, 0, &d), 0);
    assert_int_equal(vss_laid_create(d, "E00restore.laid"), 0);
    om_dir_close(d);
}

static void write_raw(const void *b, size_t n)
{
    FILE *f = fopen(path, "r+");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void record_round_trips(void **s)
{
    (void)s;
    static const uint32_t gens[] = {0, 1, 9, 10, 4242, UINT32_MAX};
    for (size_t i = 0; i < sizeof gens / sizeof gens[0]; i++) {
        char rec[VSS_LAID_RECORD];
        uint32_t g = 7;
        vss_laid_encode(S1, gens[i], rec);
        assert_int_equal(rec[VSS_LAID_RECORD - 1], '\n');
        assert_int_equal(vss_laid_decode(rec, sizeof rec, S1, "p", &g), 0);
        assert_int_equal(g, gens[i]);
    }
    uint32_t g = 7;
    assert_int_equal(vss_laid_decode("", 0, S1, "p", &g), 0); /* nothing said yet */
    assert_int_equal(g, 0);
}

static void short_or_torn_record_is_no_number(void **s)
{
    (void)s;
    char nine[VSS_LAID_RECORD], ten[VSS_LAID_RECORD], mix[VSS_LAID_RECORD];
    uint32_t g = 0;
    vss_laid_encode(S1, 9, nine);
    vss_laid_encode(S1, 10, ten);
    /* Every prefix of a record: a write in progress, or a file cut short. */
    for (size_t n = 1; n < VSS_LAID_RECORD; n++)
        assert_int_equal(vss_laid_decode(ten, n, S1, "p", &g), OM_E_FileIOBeyondEOF);
    /* A read that saw the new record's head and the old one's tail (or the reverse) at every
     * cut: never a number, in particular never 19 or 0. */
    for (size_t cut = 1; cut < VSS_LAID_RECORD; cut++) {
        memcpy(mix, ten, cut);
        memcpy(mix + cut, nine + cut, VSS_LAID_RECORD - cut);
        if (!memcmp(mix, ten, sizeof mix) || !memcmp(mix, nine, sizeof mix)) continue;
        assert_int_equal(vss_laid_decode(mix, sizeof mix, S1, "p", &g), OM_E_ReadVerifyFailure);
        assert_int_equal(g, 0);
    }
    /* One changed digit; a longer file; the old format (a bare number). */
    memcpy(mix, ten, sizeof mix);
    mix[51] = '7';
    assert_int_equal(vss_laid_decode(mix, sizeof mix, S1, "p", &g), OM_E_ReadVerifyFailure);
    char longer[VSS_LAID_RECORD + 1];
    memcpy(longer, ten, sizeof ten);
    longer[VSS_LAID_RECORD] = 'x';
    assert_int_equal(vss_laid_decode(longer, sizeof longer, S1, "p", &g), OM_E_ReadVerifyFailure);
    assert_int_equal(vss_laid_decode("                  10\n", 21, S1, "p", &g),
                     OM_E_FileIOBeyondEOF);
}

static void record_of_another_restore_is_refused(void **s)
{
    (void)s;
    char rec[VSS_LAID_RECORD];
    uint32_t g = 5;
    vss_laid_encode(S2, 12, rec);
    assert_int_equal(vss_laid_decode(rec, sizeof rec, S1, "/x/E00restore.laid", &g),
                     OM_E_RestoreInProgress);
    assert_int_equal(g, 0);
    assert_non_null(strstr(om_err_detail(), S2));
    assert_non_null(strstr(om_err_detail(), S1));
    assert_non_null(strstr(om_err_detail(), "/x/E00restore.laid"));
}

typedef struct waiting {
    vss_laid_waiter w;
    uint32_t gen;
    int rc;
    char detail[512];
} waiting;

static void *wait_thread(void *arg)
{
    waiting *t = arg;
    t->rc = vss_laid_wait(&t->w, t->gen);
    snprintf(t->detail, sizeof t->detail, "%s", om_err_detail());
    return NULL;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void writer_waits_for_what_the_requester_says(void **s)
{
    (void)s;
    create_file();
    vss_laid *l = NULL;
    assert_int_equal(vss_laid_hold(om_vfs_posix(), path, S1, &l), 0);
    assert_int_equal(vss_laid_say(l, 3), 0);
    waiting t = {.w = {.vfs = om_vfs_posix(), .path = path, .session = S1}, .gen = 3};
    assert_int_equal(vss_laid_wait(&t.w, 3), 0);
    /* Generation 5 is not laid yet: the writer waits while the requester lays 4 and 5. */
    t.gen = 5;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wait_thread, &t), 0);
    sleep_ms(30);
    assert_int_equal(vss_laid_say(l, 4), 0);
    sleep_ms(30);
    /* A torn record meanwhile is read again, not taken for a number (or for the end). */
    char nine[VSS_LAID_RECORD];
    vss_laid_encode(S1, 9, nine);
    write_raw(nine, 60); /* its number, the old check */
    sleep_ms(30);
    assert_int_equal(vss_laid_say(l, 5), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t.rc, 0);
    /* The requester stops after 6: waiting for 8 ends, naming the generation. */
    assert_int_equal(vss_laid_say(l, 6), 0);
    t.gen = 8;
    assert_int_equal(pthread_create(&th, NULL, wait_thread, &t), 0);
    sleep_ms(30);
    vss_laid_release(l);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t.rc, OM_E_MissingLogFile);
    assert_non_null(strstr(t.detail, "log generation 8"));
    /* What it did lay is still said once it is gone. */
    assert_int_equal(vss_laid_wait(&t.w, 6), 0);
    vss_laid_waiter_close(&t.w);
}

static void writer_refuses_another_restores_file(void **s)
{
    (void)s;
    create_file();
    vss_laid *l = NULL;
    assert_int_equal(vss_laid_hold(om_vfs_posix(), path, S2, &l), 0);
    assert_int_equal(vss_laid_say(l, 20), 0);
    vss_laid_waiter w = {.vfs = om_vfs_posix(), .path = path, .session = S1};
    assert_int_equal(vss_laid_wait(&w, 2), OM_E_RestoreInProgress);
    vss_laid_waiter_close(&w);
    vss_laid_release(l);
}

static void missing_file_or_link_is_no_progress(void **s)
{
    (void)s;
    vss_laid_waiter w = {.vfs = om_vfs_posix(), .path = path, .session = S1};
    assert_int_equal(vss_laid_wait(&w, 2), OM_E_MissingLogFile);
    vss_laid_waiter_close(&w);
    vss_laid *l = NULL;
    assert_int_equal(vss_laid_hold(om_vfs_posix(), path, S1, &l), OM_E_FileNotFound);
    /* A link planted at the name is never opened, by either side. */
    char target[160];
    snprintf(target, sizeof target, "%s/elsewhere", tmpdir);
    assert_int_equal(symlink(target, path), 0);
    assert_int_equal(vss_laid_hold(om_vfs_posix(), path, S1, &l), OM_E_InvalidPath);
    assert_null(l);
    assert_int_equal(access(target, F_OK), -1);
    assert_int_not_equal(vss_laid_wait(&w, 2), 0);
    vss_laid_waiter_close(&w);
    om_dir *d = NULL;
    assert_int_equal(om_dir_open(om_vfs_posix(), NULL, tmpdir, 0, &d), 0);
    assert_int_equal(vss_laid_create(d, "E00restore.laid"), OM_E_FileAlreadyExists);
    om_dir_close(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(record_round_trips),
        cmocka_unit_test(short_or_torn_record_is_no_number),
        cmocka_unit_test(record_of_another_restore_is_refused),
        cmocka_unit_test_setup_teardown(writer_waits_for_what_the_requester_says, setup, teardown),
        cmocka_unit_test_setup_teardown(writer_refuses_another_restores_file, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_file_or_link_is_no_progress, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
