/* src/base/config.c: the configuration file is read whole or refused with the file, the line and
 * the key; the environment wins over it; durations parse one way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/config.h"
#include "base/error.h"

static char path[64];

/* Writes text as the configuration file and reads it; returns om_conf_load's code. */
static int load_text(const char *text)
{
    snprintf(path, sizeof path, "/tmp/ombra-test-config-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    int rc = om_conf_load(path);
    unlink(path);
    return rc;
}

/* The detail of the last refusal names the file and the line. */
static void refused_at(const char *text, int line, const char *what)
{
    assert_int_equal(load_text(text), OM_E_ConfigInvalid);
    char want[128];
    snprintf(want, sizeof want, "%s:%d: ", path, line);
    if (strncmp(om_err_detail(), want, strlen(want)) || !strstr(om_err_detail(), what))
        fail_msg("expected '%s...%s', got '%s'", want, what, om_err_detail());
    assert_null(om_conf_file()); /* a refused file leaves nothing half-read */
}

static void a_whole_file_is_read_with_named_sections(void **s)
{
    (void)s;
    assert_int_equal(
        load_text("# comment\n[ombra]\nserver = alpha\n  data-dir = /srv/ombra ; here\n"
                  "default-repo = main\n\n[repo:main]\npath = /backup/main\n"
                  "passphrase-file = /etc/ombra/main.pass\nkeep-daily = 7\n"
                  "[repo:offsite]\npath = /mnt/offsite\n"
                  "[schedule:nightly]\ndatabases = mail1, mail2\ntype = incremental\n"
                  "calendar = *-*-* 01:00:00\nrandomized-delay = 30m\n"
                  "persistent = no\n"),
        0);
    assert_string_equal(om_conf_file(), path);
    assert_string_equal(om_conf("ombra", "server"), "alpha");
    assert_string_equal(om_conf("ombra", "data-dir"), "/srv/ombra"); /* indented, inline comment */
    assert_int_equal(om_conf_line("ombra", "data-dir"), 4);
    assert_string_equal(om_conf("repo:main", "path"), "/backup/main");
    assert_null(om_conf("repo:main", "keep-weekly"));
    assert_string_equal(om_conf("schedule:nightly", "calendar"), "*-*-* 01:00:00");
    assert_int_equal(om_conf_bool("schedule:nightly", "persistent", 1), 0);
    assert_int_equal(om_conf_bool("schedule:nightly", "expire", 1), 1); /* the default */
    const char *const *names;
    assert_int_equal(om_conf_names("repo", &names), 2);
    assert_string_equal(names[0], "main");
    assert_string_equal(names[1], "offsite");
    assert_int_equal(om_conf_names("schedule", &names), 1);
    assert_string_equal(names[0], "nightly");
}

static void every_mistake_is_named_with_its_line(void **s)
{
    (void)s;
    refused_at("[ombra]\nserver = a\nsrever = b\n", 3,
               "unknown key 'srever' in [ombra] (did you mean 'server'?)");
    refused_at("[ombra]\n[databases]\n", 2, "unknown section [databases]");
    refused_at("[repo]\npath = /x\n", 1, "section [repo] needs a name");
    refused_at("[log:x]\n", 1, "section [log:x] takes no name");
    refused_at("[repo:a/b]\n", 1, "is not a name");
    refused_at("[repo:main]\npath = /a\n[repo:main]\n", 3, "section [repo:main] is given twice");
    refused_at("[ombra]\nserver = a\nserver = b\n", 3,
               "'server' in [ombra] is given twice (first at line 2)");
    refused_at("[repo:m]\npath = backups/m\n", 2,
               "path in [repo:m]: 'backups/m' is not an absolute path");
    refused_at("[repo:m]\nkeep-daily = seven\n", 2, "not a whole number");
    refused_at("[repo:m]\nkeep-within = 7\n", 2, "not a span");
    refused_at("[repo:m]\nkeep-within = 1d1d\n", 2, "not a span");
    refused_at("[check]\nmax-full-age = 7\n", 2, "not a duration");
    assert_int_equal(load_text("[repo:m]\npath = /m\nkeep-within = 1y6m\n"), 0);
    /* what expire refuses, refused here: counts to 100000, spans of numbers to 100000 */
    refused_at("[repo:m]\npath = /m\nkeep-last = 100001\n", 3, "from 1 to 100000");
    refused_at("[repo:m]\npath = /m\nkeep-within = 999999d\n", 3, "not a span");
    assert_int_equal(load_text("[repo:m]\npath = /m\nkeep-last = 100000\n"), 0);
    /* a section without what it cannot do without, at its header */
    refused_at("[ombra]\n[repo:m]\nkeep-last = 3\n", 2, "[repo:m] has no path");
    refused_at("[schedule:s]\ndatabases = a\ncalendar = daily\n", 1, "[schedule:s] has no type");
    refused_at("[metrics]\nlisten = 127.0.0.1:+80\n", 2, "not HOST:PORT");
    refused_at("[check]\nmin-log-free = 101\n", 2, "not a percentage");
    refused_at("[log]\nlevel = loud\n", 2, "'loud' is not one of debug,info,warning,error");
    refused_at("[schedule:s]\npersistent = maybe\n", 2, "neither yes nor no");
    refused_at("[ombra]\netcd = 10.0.0.1:2379\n", 2, "not a list of http(s):// URLs");
    refused_at("[metrics]\nlisten = localhost\n", 2, "not HOST:PORT");
    refused_at("server = a\n", 1, "outside any section");
    refused_at("[ombra]\nthis line is nothing\n", 2, "not a section header");
    refused_at("[ombra]\nserver =\n", 2, "is empty");
    char longline[400];
    snprintf(longline, sizeof longline, "[ombra]\ndata-dir = /%0300d\n", 0);
    refused_at(longline, 2, "longer than");
    /* A continuation line would silently extend the value above: lines are read unindented, so
     * an indented line is a line of its own (and here an error). */
    refused_at("[ombra]\nserver = a\n   b\n", 3, "not a section header");
}

/* Writes n bytes as the configuration file and reads it. */
static int load_bytes(const char *b, size_t n)
{
    snprintf(path, sizeof path, "/tmp/ombra-test-config-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fwrite(b, 1, n, f);
    fclose(f);
    int rc = om_conf_load(path);
    unlink(path);
    return rc;
}

static void a_damaged_or_crafted_file_is_refused_not_half_read(void **s)
{
    (void)s;
    /* a zero byte: a file zeroed by a crash is not an empty configuration */
    static const char zeroed[64] = {0};
    assert_int_equal(load_bytes(zeroed, sizeof zeroed), OM_E_ConfigInvalid);
    assert_non_null(strstr(om_err_detail(), ":1: a zero byte"));
    static const char cut[] = "[repo:main]\npath = /srv/re\0po\n";
    assert_int_equal(load_bytes(cut, sizeof cut - 1), OM_E_ConfigInvalid);
    assert_non_null(strstr(om_err_detail(), ":2: a zero byte"));
    /* a BOM: the first section is a section like the others */
    static const char bom[] =
        "\xEF\xBB\xBF[schedule:nightly]\ndatabases = db1\ntype = full\ncalendar = daily\n";
    assert_int_equal(load_bytes(bom, sizeof bom - 1), 0);
    const char *const *names;
    assert_int_equal(om_conf_names("schedule", &names), 1);
    static const char bom_bad[] = "\xEF\xBB\xBF[bogus]\nx = 1\n";
    assert_int_equal(load_bytes(bom_bad, sizeof bom_bad - 1), OM_E_ConfigInvalid);
    assert_non_null(strstr(om_err_detail(), ":1: unknown section [bogus]"));
    /* headers */
    refused_at("[ombra] junk\n", 1, "'junk' after the section header [ombra]");
    refused_at("[repo:a]b]\n", 1, "after the section header");
    refused_at("[ombra\nserver = a\n", 1, "has no ']'");
    assert_int_equal(load_text("[ombra] ; a comment\nserver = a\n"), 0);
    /* values */
    refused_at("[repo:m]\npath = /r # offsite\n", 2, "'#' starts a comment only");
    assert_int_equal(load_text("[repo:m]\npath = /r ; offsite\n"), 0);
    assert_string_equal(om_conf("repo:m", "path"), "/r");
    refused_at("[schedule:-x]\n", 1, "not starting with '-'");
    refused_at("[schedule:s]\ndatabases = db1,--help\n", 2,
               "'--help' in 'db1,--help' is not a name");
    refused_at("[schedule:s]\ncalendar = Sun 01:00 %n\n", 2, "is not a calendar");
    refused_at("[schedule:s]\ncalendar = daily \\\n", 2, "is not a calendar");
    refused_at("[repo:m]\nkeep-within = 0d\n", 2, "not a span");
    refused_at("[repo:m]\nkeep-within = 99999999999999999999y\n", 2, "not a span");
    /* not a regular file: never read, never blocked on */
    assert_int_equal(om_conf_load("/dev/zero"), OM_E_ConfigInvalid);
    assert_non_null(strstr(om_err_detail(), "a device"));
    char fifo[64];
    snprintf(fifo, sizeof fifo, "/tmp/ombra-test-config-%d.fifo", (int)getpid());
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(om_conf_load(fifo), OM_E_ConfigInvalid);
    assert_non_null(strstr(om_err_detail(), "a FIFO"));
    unlink(fifo);
    /* a huge file is not read to its end */
    snprintf(path, sizeof path, "/tmp/ombra-test-config-%d.big", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 2 << 20), 0);
    fclose(f);
    assert_int_equal(om_conf_load(path), OM_E_ConfigInvalid);
    assert_non_null(strstr(om_err_detail(), "not above 1 MiB"));
    unlink(path);
}

static void no_default_file_is_no_error_but_a_named_one_must_exist(void **s)
{
    (void)s;
    setenv("OMBRA_CONFIG", "/nonexistent/ombra.conf", 1);
    assert_int_equal(om_conf_load(NULL), OM_E_FileNotFound);
    assert_non_null(strstr(om_err_detail(), "$OMBRA_CONFIG"));
    assert_int_equal(om_conf_load("/nonexistent/x.conf"), OM_E_FileNotFound);
    assert_non_null(strstr(om_err_detail(), "--config"));
    unsetenv("OMBRA_CONFIG");
    /* /dev/null: no settings, no error (how one runs without the file). */
    assert_int_equal(om_conf_load("/dev/null"), 0);
    assert_null(om_conf("ombra", "server"));
    assert_int_equal(om_conf_load("/tmp"), OM_E_ConfigInvalid);
}

static void the_environment_wins_over_the_file(void **s)
{
    (void)s;
    assert_int_equal(load_text("[ombra]\ndata-dir = /from/file\n"), 0);
    unsetenv("OMBRA_HOME");
    assert_string_equal(om_conf_setting("OMBRA_HOME", "ombra", "data-dir"), "/from/file");
    setenv("OMBRA_HOME", "/from/env", 1);
    assert_string_equal(om_conf_setting("OMBRA_HOME", "ombra", "data-dir"), "/from/env");
    setenv("OMBRA_HOME", "", 1); /* empty is unset */
    assert_string_equal(om_conf_setting("OMBRA_HOME", "ombra", "data-dir"), "/from/file");
    unsetenv("OMBRA_HOME");
    assert_null(om_conf_setting("OMBRA_HOME", "ombra", "runtime-dir"));
}

static void durations_have_one_unit(void **s)
{
    (void)s;
    uint64_t v;
    assert_int_equal(om_duration_parse("90s", &v), 0);
    assert_int_equal(v, 90);
    assert_int_equal(om_duration_parse("36h", &v), 0);
    assert_int_equal(v, 36 * 3600);
    assert_int_equal(om_duration_parse("7d", &v), 0);
    assert_int_equal(v, 7 * 86400);
    assert_int_equal(om_duration_parse("2w", &v), 0);
    assert_int_equal(v, 14 * 86400);
    assert_int_equal(om_duration_parse("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(om_duration_parse("7", &v), -1); /* seconds or days? */
    assert_int_equal(om_duration_parse("7 d", &v), -1);
    assert_int_equal(om_duration_parse("-1d", &v), -1);
    assert_int_equal(om_duration_parse("1y", &v), -1);
    assert_int_equal(om_duration_parse("", &v), -1);
    assert_int_equal(om_duration_parse("99999999999999999999d", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_whole_file_is_read_with_named_sections),
        cmocka_unit_test(every_mistake_is_named_with_its_line),
        cmocka_unit_test(a_damaged_or_crafted_file_is_refused_not_half_read),
        cmocka_unit_test(no_default_file_is_no_error_but_a_named_one_must_exist),
        cmocka_unit_test(the_environment_wins_over_the_file),
        cmocka_unit_test(durations_have_one_unit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
