/* src/base: the error table, details, the POSIX VFS and its durable helpers, encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/mem.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/uuid.h"
#include "base/vfs.h"

static void errors_print_with_ese_number_and_name(void **s)
{
    (void)s;
    char buf[256];
    assert_string_equal(om_err_name(-1018), "ReadVerifyFailure");
    assert_string_equal(om_err_name(-530), "BadLogSignature");
    assert_string_equal(om_err_name(-560), "MissingFullBackup");
    assert_string_equal(om_err_name(12345), "Unknown");
    om_errf(OM_E_ReadVerifyFailure, "page %u of %s", 7u, "a.edb");
    om_err_format(OM_E_ReadVerifyFailure, buf, sizeof buf);
    assert_string_equal(buf, "-1018 ReadVerifyFailure: page 7 of a.edb");
    om_err_ctx(OM_E_ReadVerifyFailure, "checking %s", "set 1");
    assert_string_equal(om_err_detail(), "checking set 1: page 7 of a.edb");
    om_err_clear();
    om_err_format(OM_E_DiskFull, buf, sizeof buf);
    assert_string_equal(buf, "-1808 DiskFull: no space left on the device");
    assert_int_equal(om_err_from_errno(28 /* ENOSPC */), OM_E_DiskFull);
}

/* A detail is valid UTF-8 whatever was put in it (a JSON document carries it): a character cut
 * by %.Ns, bytes that are no text, an overlong form, a surrogate become '?'; text stays. */
static void error_details_are_valid_utf8(void **s)
{
    (void)s;
    om_errf(OM_E_RepositoryCorrupt, "owner %.5s!", "ab\xc3\xa9\xc3\xa9"); /* cuts the 2nd */
    assert_string_equal(om_err_detail(), "owner ab\xc3\xa9?!");
    om_errf(OM_E_RepositoryCorrupt, "%s", "\xff x \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82");
    assert_string_equal(om_err_detail(), "? x ?? ??? ???? ??");
    om_errf(OM_E_RepositoryCorrupt, "%s", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7 ok");
    assert_string_equal(om_err_detail(), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7 ok");
    om_err_ctx(OM_E_RepositoryCorrupt, "set %.3s", "\xe2\x82\xac\xe2\x82\xac");
    assert_string_equal(om_err_detail(),
                        "set \xe2\x82\xac: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7 ok");
    om_err_clear();
}

static void a_saved_error_comes_back_after_another_detail(void **s)
{
    (void)s;
    om_err_saved e;
    assert_int_equal(om_err_save(&e, om_errf(OM_E_DiskFull, "writing %s", "a.edb")), OM_E_DiskFull);
    om_errf(OM_E_DiskIO, "closing a.edb"); /* a cleanup that fails too */
    assert_int_equal(om_err_restore(&e), OM_E_DiskFull);
    assert_string_equal(om_err_detail(), "writing a.edb");
    om_err_clear();
    om_err_save(&e, 0);
    om_errf(OM_E_DiskIO, "later");
    assert_int_equal(om_err_restore(&e), 0);
    assert_string_equal(om_err_detail(), "");
}

static void a_peer_that_closed_is_connection_closed_not_disk_io(void **s)
{
    (void)s;
    int sv[2];
    json_t *o = NULL;
    /* between two messages */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    assert_int_equal(om_proto_recv(sv[0], &o, NULL, NULL), OM_E_ConnectionClosed);
    assert_string_equal(om_err_detail(), "connection closed");
    assert_true(om_proto_ended_cleanly());
    json_t *m = json_pack("{s:s}", "op", "status");
    assert_int_equal(om_proto_send(sv[0], m, NULL, 0), OM_E_ConnectionClosed);
    close(sv[0]);
    /* in the middle of one: a length announcing more than came */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], "\x10\0\0\0{\"op\"", 9), 9);
    close(sv[1]);
    assert_int_equal(om_proto_recv(sv[0], &o, NULL, NULL), OM_E_ConnectionClosed);
    assert_string_equal(om_err_detail(), "connection closed in the middle of a message");
    assert_false(om_proto_ended_cleanly());
    close(sv[0]);
    assert_null(o);
    json_decref(m);
}

static void little_endian_cursor_round_trips_and_flags_overruns(void **s)
{
    (void)s;
    uint8_t buf[16];
    om_cur w = om_cur_make(buf, sizeof buf);
    om_w8(&w, 0x12);
    om_w16(&w, 0x3456);
    om_w32(&w, 0x789abcde);
    om_w64(&w, 0x0102030405060708ull);
    assert_false(w.bad);
    om_w16(&w, 1); /* 15 + 2 > 16 */
    assert_true(w.bad);
    assert_int_equal(buf[1], 0x56); /* little-endian on every host */
    om_cur r = om_cur_make(buf, sizeof buf);
    assert_int_equal(om_r8(&r), 0x12);
    assert_int_equal(om_r16(&r), 0x3456);
    assert_int_equal(om_r32(&r), 0x789abcde);
    assert_int_equal(om_r64(&r), 0x0102030405060708ull);
    assert_int_equal(om_r32(&r), 0); /* past the end: zero and bad */
    assert_true(r.bad);
}

static void checksum_depends_on_seed(void **s)
{
    (void)s;
    const char *t = "ombra";
    assert_int_not_equal(om_xxh3(t, 5, 1), om_xxh3(t, 5, 2));
    assert_int_equal(om_xxh3(t, 5, 1), om_xxh3(t, 5, 1));
}

static void uuid_and_time_format(void **s)
{
    (void)s;
    om_uuid a, b;
    char str[37];
    om_uuid_new(&a);
    om_uuid_str(&a, str);
    assert_int_equal(strlen(str), 36);
    assert_int_equal(om_uuid_parse(str, &b), 0);
    assert_memory_equal(a.b, b.b, 16);
    assert_int_equal(om_uuid_parse("not-a-uuid", &b), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "not-a-uuid"));
    char tb[64];
    assert_string_equal(om_time_iso(1700000000123000000ull, tb, sizeof tb),
                        "2023-11-14T22:13:20.123Z");
    assert_string_equal(om_time_str(0, tb, sizeof tb), "never");
}

/* ---- times: printed with their zone, read back as the same instant under any TZ ---- */

/* Named zones and POSIX rules (these need no tzdata), half-hour and 45-minute offsets, DST. */
static const char *const zones[] = {"UTC",
                                    "America/New_York",
                                    "Asia/Kolkata",
                                    "EST5EDT,M3.2.0,M11.1.0",
                                    "IST-5:30",
                                    "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
                                    NULL};

static void set_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static void printed_times_are_utc_with_z_under_any_tz(void **s)
{
    (void)s;
    char tb[64];
    for (int z = 0; zones[z]; z++) {
        set_tz(zones[z]);
        assert_string_equal(om_time_str(1700000000123456789ull, tb, sizeof tb),
                            "2023-11-14T22:13:20.123Z");
        assert_string_equal(om_time_iso(1700000000123000000ull, tb, sizeof tb),
                            "2023-11-14T22:13:20.123Z");
        assert_string_equal(om_time_str(0, tb, sizeof tb), "never");
    }
    unsetenv("TZ");
    tzset();
}

static void a_printed_time_read_back_covers_the_instant_under_any_tz(void **s)
{
    (void)s;
    /* New York's DST switches of 2026 (and the last ns before one), a leap day, the epoch's
     * first ms, now */
    const uint64_t when[] = {1772953200000000000ull,
                             1772953199999999999ull,
                             1793512800123456789ull,
                             1709164800000000001ull,
                             1000000ull,
                             1700000000123456789ull,
                             om_now_ns()};
    for (int z = 0; zones[z]; z++) {
        set_tz(zones[z]);
        for (size_t i = 0; i < sizeof when / sizeof when[0]; i++) {
            char tb[64];
            uint64_t first, last;
            om_time_str(when[i], tb, sizeof tb);
            assert_int_equal(om_time_parse(tb, &first, &last), 0);
            assert_true(first <= when[i] && when[i] <= last);
            assert_int_equal(first, when[i] - when[i] % 1000000);
            assert_int_equal(last - first, 999999);
            /* and with a space, as a person may type it */
            char *t = strchr(tb, 'T');
            *t = ' ';
            uint64_t f2, l2;
            assert_int_equal(om_time_parse(tb, &f2, &l2), 0);
            assert_int_equal(f2, first);
            assert_int_equal(l2, last);
        }
    }
    unsetenv("TZ");
    tzset();
}

static void times_with_offsets_name_the_same_instant(void **s)
{
    (void)s;
    static const char *const same[] = {
        "2023-11-14T22:13:20.123Z",      "2023-11-14 22:13:20.123z",
        "2023-11-14t22:13:20,123Z",      "2023-11-14T17:13:20.123-05:00",
        "2023-11-14T17:13:20.123-0500",  "2023-11-15T03:43:20.123+05:30",
        "2023-11-14T23:13:20.123+01",    "2023-11-15T11:58:20.123+13:45",
        "2023-11-14T22:13:20.123+00:00", NULL};
    for (int z = 0; zones[z]; z++) {
        set_tz(zones[z]);
        for (int i = 0; same[i]; i++) {
            uint64_t first, last;
            assert_int_equal(om_time_parse(same[i], &first, &last), 0);
            assert_int_equal(first, 1700000000123000000ull);
            assert_int_equal(last, 1700000000123999999ull);
        }
    }
    unsetenv("TZ");
    tzset();
    uint64_t first, last;
    /* the precision written is the span covered */
    assert_int_equal(om_time_parse("2023-11-14T22:13:20Z", &first, &last), 0);
    assert_int_equal(first, 1700000000000000000ull);
    assert_int_equal(last, 1700000000999999999ull);
    assert_int_equal(om_time_parse("2023-11-14T22:13:20.123456789Z", &first, &last), 0);
    assert_int_equal(first, 1700000000123456789ull);
    assert_int_equal(last, first);
    assert_int_equal(om_time_parse("2023-11-14T22:13:20.1234567Z", &first, &last), 0);
    assert_int_equal(first, 1700000000123456700ull);
    assert_int_equal(last, 1700000000123456799ull);
    assert_int_equal(om_time_parse("2024-02-29T00:00:00Z", &first, &last), 0);
    assert_int_equal(first, 1709164800000000000ull);
    assert_int_equal(om_time_parse("2262-04-11T23:47:15.999999999Z", &first, &last), 0);
}

static void unreadable_or_unzoned_times_are_refused_naming_them(void **s)
{
    (void)s;
    static const char *const bad[] = {"yesterday",
                                      "2023-11-14",
                                      "2023-11-14T22:13Z",
                                      "2023-11-14T22:13:20.Z",
                                      "2023-11-14T22:13:20.1234567890Z",
                                      "2023-11-14T22:13:20Zx",
                                      "2023-11-14T22:13:20 Z",
                                      "2023-11-14T22:13:20 EST",
                                      "2023-11-14T22:13:20+5",
                                      "2023-11-14T22:13:20+05:3",
                                      "2023-11-14T22:13:20+24:00",
                                      "2023-11-14T22:13:20+05:60",
                                      "2023-02-29T00:00:00Z",
                                      "2023-13-01T00:00:00Z",
                                      "2023-11-31T00:00:00Z",
                                      "2023-11-14T24:00:00Z",
                                      "2023-11-14T22:60:00Z",
                                      "2023-11-14T22:13:60Z",
                                      "1969-12-31T23:59:59Z",
                                      "1970-01-01T00:30:00+01:00",
                                      "2262-04-11T23:47:16Z",
                                      "9999-12-31T23:59:59Z",
                                      "2023-11-14T22:13:20Z\n",
                                      "",
                                      NULL};
    for (int i = 0; bad[i]; i++) {
        uint64_t first = 1, last = 1;
        assert_int_equal(om_time_parse(bad[i], &first, &last), OM_E_InvalidParameter);
        assert_int_equal(first, 0);
        assert_int_equal(last, 0);
        char want[80];
        snprintf(want, sizeof want, "'%s'", bad[i]);
        assert_non_null(strstr(om_err_detail(), want));
    }
    /* a time without a zone: the one way a pasted time used to change meaning */
    uint64_t first, last;
    assert_int_equal(om_time_parse("2026-12-04 08:45:19.668", &first, &last),
                     OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "'2026-12-04 08:45:19.668' names no time zone"));
    assert_non_null(strstr(om_err_detail(), "HINT: add Z"));
    assert_null(strchr(om_err_detail(), '\n'));
}

static char tmpdir[256];

static int setup_dir(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ombra-base-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **s)
{
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The names in dir, sorted, joined by ' ' (a listing to compare with a string). */
typedef struct name_list {
    char v[32][64];
    int n;
} name_list;

static int add_name(void *arg, const char *name)
{
    name_list *ns = arg;
    assert_true(ns->n < 32);
    snprintf(ns->v[ns->n++], sizeof ns->v[0], "%s", name);
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void listing(om_vfs *v, const char *dir, char *out)
{
    name_list ns = {.n = 0};
    assert_int_equal(v->list(v, dir, add_name, &ns), 0);
    qsort(ns.v, (size_t)ns.n, sizeof ns.v[0], cmp_name);
    out[0] = 0;
    for (int i = 0; i < ns.n; i++) {
        if (i) strcat(out, " ");
        strcat(out, ns.v[i]);
    }
}

static void durable_replace_leaves_new_content_and_no_temp_file(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    char p[512], names[1024];
    om_path_join(p, sizeof p, tmpdir, "config.json");
    assert_int_equal(om_write_file_durable(v, p, "old", 3), 0);
    assert_int_equal(om_write_file_durable(v, p, "newer", 5), 0);
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(om_read_file(v, p, &data, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(data, "newer", 5);
    free(data);
    listing(v, tmpdir, names);
    assert_string_equal(names, "config.json");
    assert_int_equal(v->exists(v, tmpdir), 2);
}

/* Writes path with s (a canary) and returns its mtime. */
static void canary(const char *path, const char *text, struct stat *st)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(stat(path, st), 0);
}

static void canary_untouched(const char *path, const char *text, const struct stat *before)
{
    struct stat st;
    char buf[256] = "";
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mtim.tv_sec, before->st_mtim.tv_sec);
    assert_int_equal(st.st_mtim.tv_nsec, before->st_mtim.tv_nsec);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, text);
}

/* Links planted at every name a writer uses: nothing is written or removed through them. */
static void directory_handles_never_follow_a_planted_link(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    char elsewhere[512], work[512], p[600], q[600], names[1024];
    struct stat cst;
    om_path_join(elsewhere, sizeof elsewhere, tmpdir, "elsewhere");
    om_path_join(work, sizeof work, tmpdir, "work");
    assert_int_equal(mkdir(elsewhere, 0700), 0);
    assert_int_equal(mkdir(work, 0700), 0);
    om_path_join(p, sizeof p, elsewhere, "canary");
    canary(p, "canary", &cst);

    om_dir *w = NULL, *d = NULL;
    assert_int_equal(om_dir_open(v, NULL, work, 0, &w), 0);
    assert_int_equal(symlink(elsewhere, (snprintf(q, sizeof q, "%s/dirlink", work), q)), 0);
    assert_int_equal(symlink(p, (snprintf(q, sizeof q, "%s/filelink", work), q)), 0);
    assert_int_equal(om_kind_at(w, "dirlink"), OM_KIND_OTHER);
    assert_int_equal(om_kind_at(w, "filelink"), OM_KIND_OTHER);
    assert_int_equal(om_kind_at(w, "nothing"), OM_KIND_NONE);

    /* a folder the writer makes or opens by name: a link there is refused */
    assert_int_equal(om_dir_open(v, w, "dirlink", OM_D_CREATE, &d), OM_E_InvalidPath);
    assert_non_null(strstr(om_err_detail(), "symbolic link"));
    assert_int_equal(om_dir_open(v, NULL, q, 0, &d), OM_E_InvalidPath); /* its last component */
    snprintf(q, sizeof q, "%s/dirlink", work);
    assert_int_equal(om_dir_open(v, NULL, q, 0, &d), OM_E_InvalidPath);
    assert_int_equal(om_dir_open(v, NULL, q, OM_D_FOLLOW, &d), 0); /* configured: followed */
    om_dir_close(d);
    /* a configured path may pass through a link on the way */
    snprintf(q, sizeof q, "%s/dirlink/sub", work);
    assert_int_equal(om_dir_open(v, NULL, q, OM_D_CREATE, &d), 0);
    assert_int_equal(om_dir_close(d), 0);
    assert_int_equal(rmdir((snprintf(q, sizeof q, "%s/sub", elsewhere), q)), 0);

    /* a file it creates or opens by name: never through the link */
    om_file *f = NULL;
    assert_int_equal(om_open_at(w, "filelink", OM_O_CREATE | OM_O_EXCL, &f),
                     OM_E_FileAlreadyExists);
    assert_int_equal(om_open_at(w, "filelink", OM_O_CREATE, &f), OM_E_InvalidPath);
    assert_int_equal(om_open_at(w, "filelink", OM_O_RDONLY, &f), OM_E_InvalidPath);
    /* names are one component */
    assert_int_equal(om_open_at(w, "../x", OM_O_CREATE, &f), OM_E_InvalidPath);
    assert_int_equal(om_open_at(w, "..", OM_O_CREATE, &f), OM_E_InvalidPath);
    assert_int_equal(om_dir_open(v, w, "a/b", OM_D_CREATE, &d), OM_E_InvalidPath);

    /* renames: never over a name unless told; over a link the link goes, not its target */
    assert_int_equal(om_durable_write_at(w, "new", "fresh", 5, 0), 0);
    assert_int_equal(om_rename_at(w, "new", w, "filelink", 0), OM_E_FileAlreadyExists);
    assert_int_equal(om_rename_at(w, "new", w, "filelink", OM_RENAME_REPLACE), 0);
    assert_int_equal(om_kind_at(w, "filelink"), OM_KIND_FILE);
    /* durable replace of a configured path where a link was planted replaces the link */
    assert_int_equal(symlink(p, (snprintf(q, sizeof q, "%s/config.json", work), q)), 0);
    assert_int_equal(om_write_file_durable(v, q, "mine", 4), 0);
    assert_int_equal(om_kind_at(w, "config.json"), OM_KIND_FILE);
    /* unlink and rmdir act on the link itself */
    assert_int_equal(om_rmdir_at(w, "dirlink"), OM_E_InvalidPath);
    assert_int_equal(om_unlink_at(w, "dirlink"), 0);
    listing(v, work, names);
    assert_string_equal(names, "config.json filelink");
    listing(v, elsewhere, names);
    assert_string_equal(names, "canary");
    canary_untouched(p, "canary", &cst);
    om_dir_close(w);
}

/* A temporary name the helper left (a crash between begin and commit) is swept; nothing else. */
static void durable_sweep_removes_only_the_helpers_leftovers(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    om_dir *w = NULL;
    char names[1024];
    assert_int_equal(om_dir_open(v, NULL, tmpdir, 0, &w), 0);
    om_durable a, b;
    assert_int_equal(om_durable_begin(w, "x.edb", &a), 0);
    assert_int_equal(om_durable_begin(w, "x.edb", &b), 0);
    assert_string_not_equal(a.tmp, b.tmp); /* unique to the call */
    assert_true(om_durable_is_tmp(a.tmp, "x.edb") && !om_durable_is_tmp(a.tmp, "y.edb"));
    assert_true(om_durable_is_tmp(a.tmp, NULL));
    assert_int_equal(om_pwrite(b.f, "bbb", 3, 0), 0);
    assert_int_equal(om_durable_commit(&b, 0), 0);
    assert_int_equal(om_durable_write_at(w, ".x.edb.tmp", "k", 1, 0), 0);
    assert_int_equal(om_durable_write_at(w, "x.edb.0123456789abcdef.tmp", "k", 1, 0), 0);
    om_close(a.f); /* the process "dies" before commit or abort */
    int removed = 0;
    assert_int_equal(om_durable_sweep(w, "x.edb", &removed), 0);
    assert_int_equal(removed, 1);
    listing(v, tmpdir, names);
    assert_string_equal(names, ".x.edb.tmp x.edb x.edb.0123456789abcdef.tmp");
    /* commit without REPLACE refuses an existing name and leaves no temporary file */
    assert_int_equal(om_durable_begin(w, "x.edb", &a), 0);
    assert_int_equal(om_durable_commit(&a, 0), OM_E_FileAlreadyExists);
    assert_int_equal(om_durable_begin(w, "x.edb", &a), 0);
    om_durable_abort(&a);
    listing(v, tmpdir, names);
    assert_string_equal(names, ".x.edb.tmp x.edb x.edb.0123456789abcdef.tmp");
    om_dir_close(w);
}

/* Replacing a name with the old file kept open: the name holds the new content at once, the
 * old content stays readable through the handle until it is closed; with nothing at the name
 * there is nothing to keep; a link at the name is replaced, never opened. */
static void durable_commit_keep_holds_the_replaced_file_open(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    om_dir *w = NULL;
    om_file *old = NULL, *f = NULL;
    char p[512], q[512];
    uint8_t buf[3];
    assert_int_equal(om_dir_open(v, NULL, tmpdir, 0, &w), 0);
    om_durable d;
    assert_int_equal(om_durable_begin(w, "k.edb", &d), 0);
    assert_int_equal(om_pwrite(d.f, "one", 3, 0), 0);
    assert_int_equal(om_durable_commit_keep(&d, &old), 0);
    assert_null(old); /* nothing was there */
    assert_int_equal(om_durable_begin(w, "k.edb", &d), 0);
    assert_int_equal(om_pwrite(d.f, "two", 3, 0), 0);
    assert_int_equal(om_durable_commit_keep(&d, &old), 0);
    assert_non_null(old);
    assert_int_equal(om_pread_full(old, buf, 3, 0), 0);
    assert_memory_equal(buf, "one", 3);
    om_path_join(p, sizeof p, tmpdir, "k.edb");
    assert_int_equal(om_open(v, p, OM_O_RDONLY, &f), 0);
    assert_int_equal(om_pread_full(f, buf, 3, 0), 0);
    assert_memory_equal(buf, "two", 3);
    om_close(f);
    om_close(old);
    om_path_join(q, sizeof q, tmpdir, "k.link");
    assert_int_equal(symlink(p, q), 0);
    assert_int_equal(om_durable_begin(w, "k.link", &d), 0);
    assert_int_equal(om_durable_commit_keep(&d, &old), 0);
    assert_null(old);
    assert_int_equal(om_kind_at(w, "k.link"), OM_KIND_FILE);
    assert_int_equal(om_kind_at(w, "k.edb"), OM_KIND_FILE);
    assert_int_equal(om_unlink_at(w, "k.link"), 0);
    assert_int_equal(om_unlink_at(w, "k.edb"), 0);
    om_dir_close(w);
}

/* om_durable_place: the name holds the whole file at once (no temporary name left), an existing
 * name is refused without REPLACE as by commit; and this boot's id, which a file placed so names
 * (store/writer.h), reads the same twice. */
static void durable_place_puts_the_whole_file_under_its_name(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    om_dir *w = NULL;
    om_file *f = NULL;
    char p[512], names[1024], b1[37], b2[37];
    uint8_t buf[5];
    assert_int_equal(om_dir_open(v, NULL, tmpdir, 0, &w), 0);
    om_durable d;
    assert_int_equal(om_durable_begin(w, "E0000000001.log", &d), 0);
    assert_int_equal(om_pwrite(d.f, "hello", 5, 0), 0);
    assert_int_equal(om_durable_place(&d, 0), 0);
    assert_null(d.f);
    listing(v, tmpdir, names);
    assert_string_equal(names, "E0000000001.log");
    om_path_join(p, sizeof p, tmpdir, "E0000000001.log");
    assert_int_equal(om_open(v, p, OM_O_RDONLY, &f), 0);
    assert_int_equal(om_pread_full(f, buf, 5, 0), 0);
    assert_memory_equal(buf, "hello", 5);
    om_close(f);
    assert_int_equal(om_durable_begin(w, "E0000000001.log", &d), 0);
    assert_int_equal(om_durable_place(&d, 0), OM_E_FileAlreadyExists);
    listing(v, tmpdir, names);
    assert_string_equal(names, "E0000000001.log");
    assert_int_equal(om_unlink_at(w, "E0000000001.log"), 0);
    om_dir_close(w);
    assert_int_equal(om_boot_id(b1), 0);
    assert_int_equal(om_boot_id(b2), 0);
    assert_int_equal(strlen(b1), 36);
    assert_string_equal(b1, b2);
}

static void posix_errors_name_the_file(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    om_file *f = NULL;
    char p[512];
    om_path_join(p, sizeof p, tmpdir, "missing/file");
    assert_int_equal(om_open(v, p, 0, &f), OM_E_FileNotFound);
    assert_non_null(strstr(om_err_detail(), p));
    om_path_join(p, sizeof p, tmpdir, "short");
    assert_int_equal(om_write_file_durable(v, p, "abc", 3), 0);
    assert_int_equal(om_open(v, p, OM_O_RDONLY, &f), 0);
    uint8_t buf[10];
    assert_int_equal(om_pread_full(f, buf, 10, 0), OM_E_FileIOBeyondEOF);
    assert_non_null(strstr(om_err_detail(), "short"));
    om_close(f);
    assert_int_equal(om_open(v, p, OM_O_CREATE | OM_O_EXCL, &f), OM_E_FileAlreadyExists);
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(om_path_join(p, sizeof p, tmpdir, big), OM_E_InvalidPath);
}

static void zeroed_file_has_its_size(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    char p[512];
    om_path_join(p, sizeof p, tmpdir, "zero.log");
    assert_int_equal(om_create_zeroed(v, p, 1 << 20), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 1 << 20);
    char d[512];
    om_dirname(p, d, sizeof d);
    assert_string_equal(d, tmpdir);
    om_dirname("name", d, sizeof d);
    assert_string_equal(d, ".");
}

/* A huge buffer (base/mem.h): aligned to 2 MiB, its length rounded up to it, every byte usable,
 * and a direct write from it (where the file system takes one) reads back the same. */
static void a_huge_buffer_is_aligned_whole_and_a_write_from_it_reads_back(void **s)
{
    (void)s;
    enum { MB2 = 2u << 20 };
    assert_int_equal(om_huge_len(1), MB2);
    assert_int_equal(om_huge_len(MB2), MB2);
    assert_int_equal(om_huge_len(4 * MB2 + 100), 5 * MB2);
    assert_null(om_huge_reserve(0));
    size_t n = 4 * MB2 + 100;
    uint8_t *b = om_huge_reserve(n);
    assert_non_null(b);
    assert_int_equal((uintptr_t)b % MB2, 0);
    for (size_t i = 0; i < om_huge_len(n); i++) /* the whole rounded length is ours */
        b[i] = (uint8_t)(i * 13 + i / 4099);
    om_vfs *v = om_vfs_posix();
    char p[512];
    om_path_join(p, sizeof p, tmpdir, "huge.edb");
    om_file *f = NULL;
    assert_int_equal(om_open(v, p, OM_O_CREATE | OM_O_EXCL, &f), 0);
    (void)om_direct(f, 1); /* where the file system has none (tmpfs before 6.6): the cache */
    assert_int_equal(om_pwrite(f, b, 4 * MB2, 0), 0);
    assert_int_equal(om_sync(f), 0);
    uint8_t *got = malloc(4 * MB2);
    size_t r = 0;
    assert_non_null(got);
    assert_int_equal(f->vfs->pread(f, got, 4 * MB2, 0, &r), 0);
    assert_int_equal(r, 4 * MB2);
    assert_memory_equal(got, b, 4 * MB2);
    free(got);
    om_close(f);
    om_huge_release(b, n);
    om_huge_release(NULL, n); /* ignored */
}

/* A file read and written around the page cache (om_direct) reads back what was written,
 * whatever the alignment of the caller's buffer, offset and length: aligned blocks go around
 * the cache, an unaligned buffer through a copy, an unaligned read through a buffer of its own
 * (also past the end of the file), and an unaligned write turns the bypass off. */
static void a_file_around_the_cache_reads_back_what_was_written(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    char p[512];
    om_path_join(p, sizeof p, tmpdir, "direct.edb");
    om_file *f = NULL;
    assert_int_equal(om_open(v, p, OM_O_CREATE | OM_O_EXCL, &f), 0);
    if (om_direct(f, 1) != 0) {
        om_close(f);
        skip(); /* this file system has no O_DIRECT (tmpfs before Linux 6.6) */
    }
    enum { A = OM_DIRECT_ALIGN };
    uint8_t *al = aligned_alloc(A, 4 * A), *want = malloc(4 * A + 100), got[4 * A + 200];
    for (size_t i = 0; i < 4 * A + 100; i++)
        want[i] = (uint8_t)(i * 7 + i / 251);
    memcpy(al, want, 2 * A);
    assert_int_equal(om_pwrite(f, al, 2 * A, 0), 0); /* aligned: around the cache */
    /* aligned offset and length from an unaligned buffer */
    memcpy(got + 1, want + 2 * A, 2 * A);
    assert_int_equal(om_pwrite(f, got + 1, 2 * A, 2 * A), 0);
    size_t n = 0;
    /* unaligned reads: inside, and across the end of the file */
    assert_int_equal(f->vfs->pread(f, got + 3, 5000, 100, &n), 0);
    assert_int_equal(n, 5000);
    assert_memory_equal(got + 3, want + 100, 5000);
    assert_int_equal(f->vfs->pread(f, got, 3 * A, 2 * A + 10, &n), 0);
    assert_int_equal(n, 2 * A - 10);
    assert_memory_equal(got, want + 2 * A + 10, 2 * A - 10);
    /* an unaligned write (a file's tail) goes through the cache, and so do later ones */
    assert_int_equal(om_pwrite(f, want + 4 * A, 100, 4 * A), 0);
    assert_int_equal(om_pwrite(f, al, A, 0), 0);
    assert_int_equal(om_sync(f), 0);
    uint64_t sz = 0;
    assert_int_equal(om_fsize(f, &sz), 0);
    assert_int_equal(sz, 4 * A + 100);
    /* on again: a read of the whole file, its end unaligned */
    assert_int_equal(om_direct(f, 1), 0);
    assert_int_equal(f->vfs->pread(f, got, sizeof got, 0, &n), 0);
    assert_int_equal(n, 4 * A + 100);
    assert_memory_equal(got, want, 4 * A + 100);
    assert_int_equal(om_direct(f, 0), 0);
    assert_int_equal(om_close(f), 0);
    free(al);
    free(want);
}

/* A FIFO planted at a file's name (E00.pgj after a crash, E00.cbt) is refused at once, never
 * waited on: open(2) of a FIFO for reading blocks until a writer comes, which held a daemon's
 * start for ever. Through a path and through a directory handle. */
static void a_fifo_at_a_files_name_is_refused_not_waited_on(void **s)
{
    (void)s;
    om_vfs *v = om_vfs_posix();
    char p[512];
    om_path_join(p, sizeof p, tmpdir, "E00.pgj");
    assert_int_equal(mkfifo(p, 0600), 0);
    alarm(10); /* a hang fails the test instead of holding it */
    om_file *f = NULL;
    assert_int_equal(om_open(v, p, OM_O_RDONLY, &f), OM_E_InvalidPath);
    assert_non_null(strstr(om_err_detail(), "not a regular file"));
    assert_int_equal(om_open(v, p, 0, &f), OM_E_InvalidPath);
    om_dir *d = NULL;
    assert_int_equal(om_dir_open(v, NULL, tmpdir, 0, &d), 0);
    assert_int_equal(om_open_at(d, "E00.pgj", OM_O_RDONLY, &f), OM_E_InvalidPath);
    om_dir_close(d);
    alarm(0);
    /* a regular file opens as before, and reads and writes wait as usual */
    om_path_join(p, sizeof p, tmpdir, "E00.chk");
    assert_int_equal(om_write_file_durable(v, p, "abc", 3), 0);
    assert_int_equal(om_open(v, p, 0, &f), 0);
    uint8_t b[3];
    assert_int_equal(om_pread_full(f, b, 3, 0), 0);
    assert_memory_equal(b, "abc", 3);
    om_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(errors_print_with_ese_number_and_name),
        cmocka_unit_test(error_details_are_valid_utf8),
        cmocka_unit_test(a_saved_error_comes_back_after_another_detail),
        cmocka_unit_test(a_peer_that_closed_is_connection_closed_not_disk_io),
        cmocka_unit_test(little_endian_cursor_round_trips_and_flags_overruns),
        cmocka_unit_test(checksum_depends_on_seed),
        cmocka_unit_test(uuid_and_time_format),
        cmocka_unit_test(printed_times_are_utc_with_z_under_any_tz),
        cmocka_unit_test(a_printed_time_read_back_covers_the_instant_under_any_tz),
        cmocka_unit_test(times_with_offsets_name_the_same_instant),
        cmocka_unit_test(unreadable_or_unzoned_times_are_refused_naming_them),
        cmocka_unit_test_setup_teardown(durable_replace_leaves_new_content_and_no_temp_file,
                                        setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(posix_errors_name_the_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(directory_handles_never_follow_a_planted_link, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(durable_sweep_removes_only_the_helpers_leftovers, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(durable_place_puts_the_whole_file_under_its_name, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(durable_commit_keep_holds_the_replaced_file_open, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(zeroed_file_has_its_size, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(
            a_huge_buffer_is_aligned_whole_and_a_write_from_it_reads_back, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(a_file_around_the_cache_reads_back_what_was_written,
                                        setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(a_fifo_at_a_files_name_is_refused_not_waited_on, setup_dir,
                                        teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
