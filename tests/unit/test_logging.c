/* src/base/logging.c: the daemons' line, journald's native protocol as the bytes journald reads,
 * records sent to a journal socket the test listens on, the fallback to stderr when nothing
 * listens or when it stalls (never waited on), the file reopened after logrotate renamed it,
 * never opened through a symbolic link, and the option names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"

/* 2026-12-05T09:16:22.123456789Z */
#define T_NS (1796462182ull * 1000000000ull + 123456789ull)

static char dir[] = "/tmp/om-logtest-XXXXXX";

/* The whole of a file as a string (malloc'd), "" when it is missing. */
static char *slurp(const char *path)
{
    struct stat st;
    size_t size = stat(path, &st) ? 0 : (size_t)st.st_size;
    char *b = calloc(1, size + 1);
    FILE *f = fopen(path, "rb");
    if (f) {
        b[fread(b, 1, size, f)] = 0;
        fclose(f);
    }
    return b;
}

static void line_is_iso_utc_ms_program_pid_level(void **s)
{
    (void)s;
    char buf[256];
    size_t n = om_log_format_line(buf, sizeof buf, T_NS, "ombra-store", 4242, OM_WARN,
                                  "database mail1: full");
    assert_string_equal(
        buf, "2026-12-05T09:16:22.123Z ombra-store[4242] warning: database mail1: full\n");
    assert_int_equal(n, strlen(buf));
    om_log_format_line(buf, sizeof buf, T_NS, "ombra-vssd", 1, OM_ERROR, "x");
    assert_string_equal(buf, "2026-12-05T09:16:22.123Z ombra-vssd[1] error: x\n");
    om_log_format_line(buf, sizeof buf, T_NS, "p", 1, OM_INFO, "x");
    assert_non_null(strstr(buf, " info: x\n"));
    om_log_format_line(buf, sizeof buf, T_NS, "p", 1, OM_DEBUG, "x");
    assert_non_null(strstr(buf, " debug: x\n"));
}

static void a_line_break_in_a_message_never_makes_a_second_line(void **s)
{
    (void)s;
    char buf[256];
    size_t n = om_log_format_line(buf, sizeof buf, T_NS, "ombra-store", 7, OM_WARN,
                                  "restore of x\n2026-12-05T09:16:22.123Z ombra-store[7] info: "
                                  "forged\r");
    assert_int_equal(n, strlen(buf));
    assert_ptr_equal(strchr(buf, '\n'), buf + n - 1);
    assert_null(strchr(buf, '\r'));
    assert_non_null(
        strstr(buf, "restore of x 2026-12-05T09:16:22.123Z ombra-store[7] info: forged \n"));
}

static void a_long_line_is_cut_and_still_ends_its_line(void **s)
{
    (void)s;
    char buf[40];
    size_t n = om_log_format_line(buf, sizeof buf, T_NS, "ombra-store", 1, OM_INFO,
                                  "a message far longer than the buffer it goes into");
    assert_int_equal(n, sizeof buf - 1);
    assert_int_equal(buf[n - 1], '\n');
    assert_int_equal(buf[n], 0);
    assert_memory_equal(buf, "2026-12-05T09:16:22.123Z ombra-st", 33);
}

static void journal_record_is_key_value_lines_with_syslog_priority(void **s)
{
    (void)s;
    char buf[512];
    size_t n = om_log_format_journal(
        buf, sizeof buf, "ombra-store", OM_WARN,
        OM_FIELDS({"DATABASE", "mail1"}, {"SESSION", "s-1"}, {"GENERATION", "17"}),
        "database mail1: full");
    const char want[] = "MESSAGE=database mail1: full\n"
                        "PRIORITY=4\n"
                        "SYSLOG_IDENTIFIER=ombra-store\n"
                        "OMBRA_DATABASE=mail1\n"
                        "OMBRA_SESSION=s-1\n"
                        "OMBRA_GENERATION=17\n";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(buf, want, n);
    /* syslog's numbers: error 3, warning 4, info 6, debug 7 */
    static const struct {
        enum om_level l;
        const char *p;
    } pr[] = {{OM_ERROR, "PRIORITY=3\n"}, {OM_INFO, "PRIORITY=6\n"}, {OM_DEBUG, "PRIORITY=7\n"}};
    for (size_t i = 0; i < sizeof pr / sizeof *pr; i++) {
        n = om_log_format_journal(buf, sizeof buf, "p", pr[i].l, NULL, "m");
        assert_int_equal(n, strlen("MESSAGE=m\nPRIORITY=3\nSYSLOG_IDENTIFIER=p\n"));
        assert_memory_equal(buf + strlen("MESSAGE=m\n"), pr[i].p, strlen(pr[i].p));
    }
}

static void journal_value_with_newline_takes_the_binary_form(void **s)
{
    (void)s;
    char buf[512];
    size_t n = om_log_format_journal(buf, sizeof buf, "ombra-repld", OM_ERROR,
                                     OM_FIELDS({"DATABASE", "two\nlines"}), "first\nsecond");
    const char want[] = "MESSAGE\n\x0c\0\0\0\0\0\0\0first\nsecond\n"
                        "PRIORITY=3\n"
                        "SYSLOG_IDENTIFIER=ombra-repld\n"
                        "OMBRA_DATABASE\n\x09\0\0\0\0\0\0\0two\nlines\n";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(buf, want, n);
}

static void journal_keys_are_made_valid_and_empty_values_left_out(void **s)
{
    (void)s;
    char buf[512];
    size_t n = om_log_format_journal(
        buf, sizeof buf, "p", OM_INFO,
        OM_FIELDS({"database", "a"}, {"SESSION", NULL}, {"GENERATION", ""}, {"bad-key.1", "b"}),
        "m");
    const char want[] = "MESSAGE=m\nPRIORITY=6\nSYSLOG_IDENTIFIER=p\n"
                        "OMBRA_DATABASE=a\nOMBRA_BAD_KEY_1=b\n";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(buf, want, n);
    /* too small: nothing rather than a record cut in the middle of a field */
    assert_int_equal(om_log_format_journal(buf, 20, "p", OM_INFO, NULL, "m"), 0);
}

static void option_names_parse_and_wrong_ones_are_listed(void **s)
{
    (void)s;
    enum om_log_target t;
    int l;
    assert_int_equal(om_log_target_parse("journal", &t), 0);
    assert_int_equal(t, OM_LOG_JOURNAL);
    assert_int_equal(om_log_target_parse("auto", &t), 0);
    assert_int_equal(t, OM_LOG_AUTO);
    assert_int_equal(om_log_target_parse("syslog", &t), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "auto, journal, file or stderr"));
    assert_int_equal(om_log_level_parse("warning", &l), 0);
    assert_int_equal(l, OM_WARN);
    assert_int_equal(om_log_level_parse("warn", &l), 0);
    assert_int_equal(l, OM_WARN);
    assert_int_equal(om_log_level_parse("debug", &l), 0);
    assert_int_equal(l, OM_DEBUG);
    assert_int_equal(om_log_level_parse("loud", &l), OM_E_InvalidParameter);
}

static void journal_stream_is_recognised_by_device_and_inode(void **s)
{
    (void)s;
    struct stat st;
    assert_int_equal(fstat(2, &st), 0);
    char v[64];
    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", v, 1);
    assert_int_equal(om_log_stderr_is_journal(), 1);
    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", v, 1);
    assert_int_equal(om_log_stderr_is_journal(), 0);
    unsetenv("JOURNAL_STREAM");
    assert_int_equal(om_log_stderr_is_journal(), 0);
}

/* A datagram socket bound at dir/journal, as journald's. */
static int journal_listener(char *path, size_t len)
{
    snprintf(path, len, "%s/journal", dir);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%.100s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void records_reach_the_journal_socket_with_their_fields(void **s)
{
    (void)s;
    char path[200], buf[8192];
    int fd = journal_listener(path, sizeof path);
    setenv("OMBRA_JOURNAL_SOCKET", path, 1);
    om_log_opts o = {.prog = "ombra-store", .target = OM_LOG_JOURNAL, .level = OM_INFO};
    assert_int_equal(om_log_setup(&o), 0);
    assert_int_equal(om_log_target_now(), OM_LOG_JOURNAL);
    om_debug("below the level: not sent");
    om_log_with(OM_WARN, OM_FIELDS({"DATABASE", "mail1"}, {"GENERATION", "9"}),
                "database %s: generation %d damaged", "mail1", 9);
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = 0;
    assert_string_equal(buf, "MESSAGE=database mail1: generation 9 damaged\n"
                             "PRIORITY=4\n"
                             "SYSLOG_IDENTIFIER=ombra-store\n"
                             "OMBRA_DATABASE=mail1\n"
                             "OMBRA_GENERATION=9\n");
    /* nothing else queued: the debug record was not sent */
    assert_int_equal(recv(fd, buf, sizeof buf, MSG_DONTWAIT), -1);
    close(fd);
}

/* Runs fn with fd 2 sent to a file; returns what fn wrote there (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
    char p[200];
    snprintf(p, sizeof p, "%s/stderr", dir);
    fflush(stderr);
    int saved = dup(2), f = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(f, 2);
    close(f);
    fn();
    dup2(saved, 2);
    close(saved);
    return slurp(p);
}

static void warn_refused(void)
{
    om_log_with(OM_WARN, OM_FIELDS({"DATABASE", "mail2"}), "database mail2: refused");
}

static void a_refused_datagram_goes_to_stderr_as_a_line(void **s)
{
    (void)s;
    char path[200];
    snprintf(path, sizeof path, "%s/nobody-listens", dir);
    setenv("OMBRA_JOURNAL_SOCKET", path, 1);
    om_log_opts o = {.prog = "ombra-store", .target = OM_LOG_JOURNAL, .level = -1};
    assert_int_equal(om_log_setup(&o), 0);
    char *out = capture_stderr(warn_refused);
    char want[64];
    snprintf(want, sizeof want, " ombra-store[%d] warning: database mail2: refused\n",
             (int)getpid());
    assert_non_null(strstr(out, want));
    assert_int_equal(out[4], '-');
    assert_int_equal(out[23], 'Z');
    free(out);
}

enum { STALLED_RECORDS = 3000 };

static void log_into_a_stalled_journal(void)
{
    for (int i = 0; i < STALLED_RECORDS; i++)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", "mail3"}), "stalled record %d", i);
}

static void a_stalled_journal_never_blocks_and_the_lines_go_to_stderr(void **s)
{
    (void)s;
    char path[200];
    int fd = journal_listener(path, sizeof path); /* never read: its queue fills */
    setenv("OMBRA_JOURNAL_SOCKET", path, 1);
    om_log_opts o = {.prog = "ombra-store", .target = OM_LOG_JOURNAL, .level = -1};
    assert_int_equal(om_log_setup(&o), 0);
    uint64_t before = om_log_journal_refused(NULL);
    alarm(30); /* a send that waits for the reader never returns: SIGALRM ends the test */
    char *out = capture_stderr(log_into_a_stalled_journal);
    alarm(0);
    /* the first records fit the queue; the others are the stderr lines, none lost */
    uint64_t refused = om_log_journal_refused(NULL) - before;
    assert_true(refused > 0 && refused < STALLED_RECORDS);
    char want[64];
    snprintf(want, sizeof want, "] info: stalled record %d\n", STALLED_RECORDS - 1);
    assert_non_null(strstr(out, want));
    size_t lines = 0;
    for (char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, refused);
    free(out);
    close(fd);
}

/* Under systemd stderr is journald's stream, which stalls with its datagram socket: the
 * fallback line is not waited on either (lost and counted). */
static void a_stalled_journal_stream_on_stderr_is_not_waited_on_either(void **s)
{
    (void)s;
    char path[200];
    int fd = journal_listener(path, sizeof path), sp[2];
    setenv("OMBRA_JOURNAL_SOCKET", path, 1);
    om_log_opts o = {.prog = "ombra-store", .target = OM_LOG_JOURNAL, .level = -1};
    assert_int_equal(om_log_setup(&o), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0); /* sp[1] unread */
    uint64_t lost0, lost, refused0 = om_log_journal_refused(&lost0);
    fflush(stderr);
    int saved = dup(2);
    dup2(sp[0], 2);
    alarm(30);
    log_into_a_stalled_journal();
    alarm(0);
    dup2(saved, 2);
    close(saved);
    uint64_t refused = om_log_journal_refused(&lost) - refused0;
    assert_true(refused > 0);
    assert_true(lost - lost0 > 0 && lost - lost0 < refused); /* the stream took some lines */
    char buf[256];
    ssize_t got = recv(sp[1], buf, sizeof buf - 1, MSG_DONTWAIT);
    assert_true(got > 0);
    buf[got] = 0;
    assert_non_null(strstr(buf, " ombra-store["));
    close(sp[0]);
    close(sp[1]);
    close(fd);
}

static void the_file_is_reopened_at_its_path_after_a_rename(void **s)
{
    (void)s;
    char path[200], old[220];
    snprintf(path, sizeof path, "%s/ombra-store.log", dir);
    snprintf(old, sizeof old, "%s.1", path);
    om_log_opts o = {.prog = "ombra-store", .target = OM_LOG_FILE, .file = path, .level = -1};
    assert_int_equal(om_log_setup(&o), 0);
    assert_int_equal(om_log_target_now(), OM_LOG_FILE);
    om_info("before the rotation");
    assert_int_equal(rename(path, old), 0);
    om_info("still the old file: no reopen asked");
    om_log_reopen(); /* what a SIGHUP handler may call */
    om_info("after the rotation");
    char *a = slurp(old), *b = slurp(path);
    assert_non_null(strstr(a, "info: before the rotation\n"));
    assert_non_null(strstr(a, "info: still the old file: no reopen asked\n"));
    assert_null(strstr(a, "after the rotation"));
    assert_non_null(strstr(b, "info: after the rotation\n"));
    assert_null(strstr(b, "before"));
    free(a);
    free(b);
    /* the synchronous form, for the signal thread */
    assert_int_equal(rename(path, old), 0);
    assert_int_equal(om_log_reopen_now(), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    /* a file that cannot be made: an error naming it, the old one kept */
    om_log_opts bad = {.prog = "p", .target = OM_LOG_FILE, .file = "/nonexistent/dir/x.log"};
    assert_int_not_equal(om_log_setup(&bad), 0);
    assert_non_null(strstr(om_err_detail(), "/nonexistent/dir/x.log"));
    om_log_opts none = {.prog = "p", .target = OM_LOG_FILE};
    assert_int_equal(om_log_setup(&none), OM_E_InvalidParameter);
    om_info("the old file is still the target");
    b = slurp(path);
    assert_non_null(strstr(b, "ombra-store["));
    assert_non_null(strstr(b, "info: the old file is still the target\n"));
    free(b);
}

static void the_file_is_never_opened_through_a_link_nor_a_fifo(void **s)
{
    (void)s;
    char path[200], old[220], target[220], fifo[220];
    snprintf(path, sizeof path, "%s/linked.log", dir);
    snprintf(old, sizeof old, "%s.1", path);
    snprintf(target, sizeof target, "%s/precious", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo.log", dir);
    FILE *f = fopen(target, "w");
    fputs("precious\n", f);
    fclose(f);
    /* a link planted at the path: refused at setup, naming the path, the target untouched */
    assert_int_equal(symlink(target, path), 0);
    om_log_opts o = {.prog = "ombra-store", .target = OM_LOG_FILE, .file = path, .level = -1};
    assert_int_equal(om_log_setup(&o), OM_E_InvalidPath);
    assert_non_null(strstr(om_err_detail(), path));
    assert_non_null(strstr(om_err_detail(), "symbolic link"));
    /* a dangling link too: nothing is created at its target */
    char dangling[220];
    snprintf(dangling, sizeof dangling, "%s/made-through-the-link", dir);
    unlink(path);
    assert_int_equal(symlink(dangling, path), 0);
    assert_int_equal(om_log_setup(&o), OM_E_InvalidPath);
    assert_int_equal(access(dangling, F_OK), -1);
    /* a FIFO: refused at once, not waited on for a reader */
    assert_int_equal(mkfifo(fifo, 0600), 0);
    om_log_opts of = {.prog = "ombra-store", .target = OM_LOG_FILE, .file = fifo, .level = -1};
    alarm(30);
    assert_int_equal(om_log_setup(&of), OM_E_InvalidPath);
    alarm(0);
    assert_non_null(strstr(om_err_detail(), "not a regular file"));
    /* a regular file, then replaced by a link at the rotation: the reopen refuses it, the old
     * file stays in use and says why */
    unlink(path);
    assert_int_equal(om_log_setup(&o), 0);
    om_info("before the rotation");
    assert_int_equal(rename(path, old), 0);
    assert_int_equal(symlink(target, path), 0);
    assert_int_equal(om_log_reopen_now(), OM_E_InvalidPath);
    assert_non_null(strstr(om_err_detail(), "symbolic link"));
    om_log_reopen(); /* the signal handler's form: the refusal is logged in the old file */
    om_info("after the refused reopen");
    char *t = slurp(target), *a = slurp(old);
    assert_string_equal(t, "precious\n");
    assert_non_null(strstr(a, "info: before the rotation\n"));
    assert_non_null(strstr(a, "error: reopening the log file "));
    assert_non_null(strstr(a, "symbolic link"));
    assert_non_null(strstr(a, "info: after the refused reopen\n"));
    free(t);
    free(a);
}

enum { THREADS = 4, RECORDS = 2000 };

static void *log_many(void *arg)
{
    for (int i = 0; i < RECORDS; i++)
        om_log_with(OM_INFO, OM_FIELDS({"DATABASE", "db"}),
                    "thread %d record %d of a line long "
                    "enough to be cut in two by a careless writer",
                    (int)(intptr_t)arg, i);
    return NULL;
}

static void threads_log_whole_lines_while_the_file_is_rotated(void **s)
{
    (void)s;
    char path[200], old[220];
    snprintf(path, sizeof path, "%s/threads.log", dir);
    snprintf(old, sizeof old, "%s.1", path);
    om_log_opts o = {.prog = "ombra-store", .target = OM_LOG_FILE, .file = path, .level = -1};
    assert_int_equal(om_log_setup(&o), 0);
    pthread_t th[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_many, (void *)i), 0);
    usleep(2000);
    rename(path, old);
    om_log_reopen();
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    /* every record is one whole line, in one of the two files, none lost */
    int seen[THREADS] = {0};
    for (int f = 0; f < 2; f++) {
        char *text = slurp(f ? path : old), *save = NULL;
        for (char *ln = strtok_r(text, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
            int t, r;
            char *m = strstr(ln, "] info: thread ");
            assert_non_null(m);
            assert_int_equal(sscanf(m, "] info: thread %d record %d", &t, &r), 2);
            assert_non_null(strstr(m, "careless writer"));
            assert_true(t >= 0 && t < THREADS);
            seen[t]++;
        }
        free(text);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(seen[i], RECORDS);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(line_is_iso_utc_ms_program_pid_level),
        cmocka_unit_test(a_line_break_in_a_message_never_makes_a_second_line),
        cmocka_unit_test(a_long_line_is_cut_and_still_ends_its_line),
        cmocka_unit_test(journal_record_is_key_value_lines_with_syslog_priority),
        cmocka_unit_test(journal_value_with_newline_takes_the_binary_form),
        cmocka_unit_test(journal_keys_are_made_valid_and_empty_values_left_out),
        cmocka_unit_test(option_names_parse_and_wrong_ones_are_listed),
        cmocka_unit_test(journal_stream_is_recognised_by_device_and_inode),
        cmocka_unit_test(records_reach_the_journal_socket_with_their_fields),
        cmocka_unit_test(a_refused_datagram_goes_to_stderr_as_a_line),
        cmocka_unit_test(a_stalled_journal_never_blocks_and_the_lines_go_to_stderr),
        cmocka_unit_test(a_stalled_journal_stream_on_stderr_is_not_waited_on_either),
        cmocka_unit_test(the_file_is_reopened_at_its_path_after_a_rename),
        cmocka_unit_test(the_file_is_never_opened_through_a_link_nor_a_fifo),
        cmocka_unit_test(threads_log_whole_lines_while_the_file_is_rotated),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    return rc;
}
