/* A passive copy's files across a change of active (repl/resync.h). What a user relies on: the
 * generations of a deposed active from the fork on are set aside whole and never lost (also
 * when the store's log folder is on another filesystem), nothing else is touched, the epoch the
 * copy follows survives a restart, a database that already replayed past the fork is told
 * apart from one that did not, and at activation an acknowledged commit held only in the
 * streamed part of the open generation is in the database the mount recovers. */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"
#include "engine/engine.h"
#include "engine/format.h"
#include "repl/resync.h"
#include "repl/wire.h"

static char tmpdir[256];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int exists(const char *dir, const char *name)
{
    char p[900];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return lstat(p, &sb) == 0;
}

static void read_text(const char *dir, const char *name, char *out, size_t n)
{
    char p[900];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    size_t got = fread(out, 1, n - 1, f);
    out[got] = 0;
    fclose(f);
}

static void epoch_survives_and_garbage_is_refused(void **state)
{
    (void)state;
    char work[300];
    path_in(work, sizeof work, "epoch");
    assert_int_equal(mkdir(work, 0750), 0);
    uint32_t e = 99;
    assert_int_equal(rp_epoch_read(work, &e), 0);
    assert_int_equal(e, 0); /* absent: not known yet */
    assert_int_equal(rp_epoch_write(work, 3), 0);
    assert_int_equal(rp_epoch_read(work, &e), 0);
    assert_int_equal(e, 3);
    write_file(work, "epoch", "3x\n");
    assert_int_equal(rp_epoch_read(work, &e), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "no epoch number"));
}

/* The generations of the deposed active from since on, its current log, the prepared next one
 * and the stream go; the older generations, the checkpoint, the reserve logs, a link planted
 * under a generation's name and foreign files stay. */
static void set_aside_in(const char *work, const char *logs)
{
    char name[32], body[16];
    for (uint32_t g = 1; g <= 10; g++) {
        snprintf(name, sizeof name, "E00%08X.log", g);
        snprintf(body, sizeof body, "gen %u", g);
        write_file(logs, name, body);
    }
    write_file(logs, "E00.log", "current");
    write_file(logs, "E00tmp.log", "prepared");
    write_file(logs, "E00.chk", "checkpoint");
    write_file(logs, "E00res00001.jrs", "reserve");
    write_file(logs, "notes.txt", "the administrator's");
    write_file(work, "E00.stream", "streamed");
    char link[600];
    snprintf(link, sizeof link, "%s/E000000000B.log", logs);
    assert_int_equal(symlink("/etc/passwd", link), 0);

    uint32_t moved = 0;
    char where[700];
    assert_int_equal(rp_set_aside(work, logs, "E00", NULL, 5, 7, &moved, where, sizeof where), 0);
    assert_int_equal(moved, 6 + 3); /* 5..10, E00.log, E00tmp.log, the stream */
    char prefix[400];
    snprintf(prefix, sizeof prefix, "%s/divergent/7-", work);
    assert_memory_equal(where, prefix, strlen(prefix));
    char text[64];
    for (uint32_t g = 1; g <= 10; g++) {
        snprintf(name, sizeof name, "E00%08X.log", g);
        assert_int_equal(exists(logs, name), g < 5);
        assert_int_equal(exists(where, name), g >= 5);
        char want[16];
        snprintf(want, sizeof want, "gen %u", g);
        read_text(g < 5 ? logs : where, name, text, sizeof text);
        assert_string_equal(text, want); /* whole, wherever it is */
    }
    read_text(where, "E00.log", text, sizeof text);
    assert_string_equal(text, "current");
    read_text(where, "E00.stream", text, sizeof text);
    assert_string_equal(text, "streamed");
    assert_true(exists(where, "E00tmp.log"));
    assert_false(exists(logs, "E00.log") || exists(logs, "E00tmp.log") ||
                 exists(work, "E00.stream"));
    assert_true(exists(logs, "E00.chk") && exists(logs, "E00res00001.jrs") &&
                exists(logs, "notes.txt") && exists(logs, "E000000000B.log"));
    assert_false(exists(where, "E000000000B.log"));

    /* Again: nothing left to move, no new folder. */
    assert_int_equal(rp_set_aside(work, logs, "E00", NULL, 5, 8, &moved, where, sizeof where), 0);
    assert_int_equal(moved, 0);
    assert_string_equal(where, "");
    char div[400];
    snprintf(div, sizeof div, "%s/divergent", work);
    DIR *d = opendir(div);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(n, 1);
}

static void divergent_generations_are_set_aside_whole(void **state)
{
    (void)state;
    char work[300], logs[300];
    path_in(work, sizeof work, "aside");
    path_in(logs, sizeof logs, "aside/logs");
    assert_int_equal(mkdir(work, 0750), 0);
    assert_int_equal(mkdir(logs, 0750), 0);
    set_aside_in(work, logs);
}

/* A deposed active whose store still has the database open (it has not seen the change of
 * active yet): not one file of its log folder moves; once the store let go, they do. */
static void nothing_moves_while_the_database_is_open(void **state)
{
    (void)state;
    char work[300], logs[300], edb[400];
    path_in(work, sizeof work, "inuse");
    path_in(logs, sizeof logs, "inuse/logs");
    assert_int_equal(mkdir(work, 0750), 0);
    assert_int_equal(mkdir(logs, 0750), 0);
    write_file(logs, "E0000000005.log", "gen 5");
    write_file(logs, "E00.log", "current");
    write_file(work, "db.edb", "the database");
    snprintf(edb, sizeof edb, "%s/db.edb", work);
    int fd = open(edb, O_RDONLY); /* another open file: the store's engine */
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
    uint32_t moved = 9;
    char where[700];
    assert_int_equal(rp_set_aside(work, logs, "E00", edb, 5, 2, &moved, where, sizeof where),
                     OM_E_DatabaseInUse);
    assert_int_equal(moved, 0);
    assert_non_null(strstr(om_err_detail(), "still open"));
    assert_true(exists(logs, "E0000000005.log") && exists(logs, "E00.log"));
    close(fd); /* the store dismounted */
    assert_int_equal(rp_set_aside(work, logs, "E00", edb, 5, 2, &moved, where, sizeof where), 0);
    assert_int_equal(moved, 2);
    assert_false(exists(logs, "E0000000005.log") || exists(logs, "E00.log"));
}

/* A deposed active's log folder is its store's, perhaps on another filesystem than
 * $OMBRA_HOME: the files are copied, then removed. */
static void across_filesystems_too(void **state)
{
    (void)state;
    struct stat a, b;
    if (stat("/dev/shm", &b) || stat(tmpdir, &a) || a.st_dev == b.st_dev) {
        skip(); /* no second filesystem here */
        return;
    }
    char work[300], logs[300] = "/dev/shm/ombra-resync-XXXXXX";
    path_in(work, sizeof work, "xfs");
    assert_int_equal(mkdir(work, 0750), 0);
    assert_non_null(mkdtemp(logs));
    set_aside_in(work, logs);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", logs);
    assert_int_equal(system(cmd), 0);
}

/* ---- databases ---- */

typedef struct db_at {
    char edb[320], logs[320];
    eng_opts o;
} db_at;

static void db_in(db_at *d, const char *name)
{
    char dir[300];
    path_in(dir, sizeof dir, name);
    assert_int_equal(mkdir(dir, 0750), 0);
    snprintf(d->edb, sizeof d->edb, "%s/db.edb", dir);
    snprintf(d->logs, sizeof d->logs, "%s/logs", dir);
    assert_int_equal(mkdir(d->logs, 0750), 0);
    d->o = (eng_opts){.edb_path = d->edb, .log_dir = d->logs, .no_reserve_logs = 1};
}

static void commit_fill(eng_db *db, uint32_t pgno, uint8_t byte)
{
    static uint8_t body[ENG_PAGE_BODY];
    memset(body, byte, sizeof body);
    eng_txn *t = NULL;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    assert_int_equal(eng_page_write(t, pgno, 0, body, sizeof body), 0);
    assert_int_equal(eng_txn_commit(t, 0), 0);
}

static uint32_t gen_now(eng_db *db)
{
    eng_info in;
    assert_int_equal(eng_db_info(db, &in), 0);
    return in.gen_current;
}

/* An active: pages 1..4 made, filled with 1, then generations rolled: gens generations. */
static eng_db *active(db_at *d, uint32_t gens)
{
    eng_db *db = NULL;
    assert_int_equal(eng_db_create(&d->o, &db), 0);
    eng_txn *t = NULL;
    assert_int_equal(eng_txn_begin(db, &t), 0);
    for (uint32_t i = 0; i < 4; i++) {
        uint32_t pg;
        assert_int_equal(eng_page_alloc(t, 1, &pg), 0);
    }
    assert_int_equal(eng_txn_commit(t, 0), 0);
    for (uint32_t i = 1; i < gens; i++) {
        commit_fill(db, 1 + i % 4, (uint8_t)i);
        assert_int_equal(eng_db_roll_log(db), 0);
    }
    return db;
}

static void past_the_fork_is_told_by_the_header(void **state)
{
    (void)state;
    db_at d;
    db_in(&d, "past");
    eng_db *db = active(&d, 4);
    uint32_t g = gen_now(db);
    assert_int_equal(eng_checkpoint(db), 0);
    eng_db_abandon(db); /* a crash: Dirty, Log Required max = g */
    int past = -1;
    uint32_t held = 0;
    assert_int_equal(rp_edb_past(d.edb, g, &past, &held), 0);
    assert_int_equal(past, 1);
    assert_int_equal(held, g);
    assert_int_equal(rp_edb_past(d.edb, g + 1, &past, &held), 0);
    assert_int_equal(past, 0);

    /* Clean Shutdown: consistent inside the last generation written */
    assert_int_equal(eng_db_open(&d.o, &db), 0);
    commit_fill(db, 2, 0x55);
    uint32_t last = gen_now(db);
    assert_int_equal(eng_db_close(db), 0);
    assert_int_equal(rp_edb_past(d.edb, last, &past, &held), 0);
    assert_int_equal(past, 1);
    assert_int_equal(rp_edb_past(d.edb, last + 1, &past, &held), 0);
    assert_int_equal(past, 0);

    char none[400];
    snprintf(none, sizeof none, "%s.none", d.edb);
    assert_int_not_equal(rp_edb_past(none, 1, &past, &held), 0);
}

static void copy_file(const char *from, const char *to, uint64_t n)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    assert_true(in >= 0 && out >= 0);
    static uint8_t buf[1 << 20];
    uint64_t done = 0;
    for (ssize_t k; (n == 0 || done < n) &&
                    (k = read(in, buf, n && n - done < sizeof buf ? n - done : sizeof buf)) > 0;)
        assert_int_equal(write(out, buf, (size_t)k), k), done += (uint64_t)k;
    close(in);
    close(out);
}

static uint8_t page_byte(const db_at *d, uint32_t pgno)
{
    eng_db *db = NULL;
    static uint8_t body[ENG_PAGE_BODY];
    assert_int_equal(eng_db_open(&d->o, &db), 0);
    assert_int_equal(eng_page_read(db, pgno, body), 0);
    assert_int_equal(eng_db_close(db), 0);
    return body[100];
}

/* The copy: the active's .edb and closed generations; with stream, the good slots of its open
 * generation as the copier streamed them (<work>/E00.stream), promoted to E00.log. */
static void make_copy(const db_at *act, uint32_t cur, db_at *c, const char *name, int stream)
{
    db_in(c, name);
    copy_file(act->edb, c->edb, 0);
    char from[400], to[400];
    for (uint32_t g = 1; g < cur; g++) {
        eng_log_path(from, sizeof from, act->logs, "E00", g);
        eng_log_path(to, sizeof to, c->logs, "E00", g);
        copy_file(from, to, 0);
    }
    if (!stream) return;
    static uint8_t buf[ENG_LOG_SIZE];
    snprintf(from, sizeof from, "%s/E00.log", act->logs);
    int fd = open(from, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, buf, sizeof buf), (ssize_t)sizeof buf);
    close(fd);
    uint32_t len = 0;
    uint64_t good = rp_log_good_end(buf, 0, ENG_LOG_SIZE, cur, &len);
    assert_true(good > ENG_SLOT_SIZE && len > 0);
    char work[400], dir[300];
    path_in(dir, sizeof dir, name);
    snprintf(work, sizeof work, "%s/E00.stream", dir);
    copy_file(from, work, good);
    /* refused: not whole slots, another generation's, over an E00.log */
    assert_int_equal(rp_stream_promote(dir, c->logs, "E00", cur, good - 1), OM_E_InvalidParameter);
    assert_int_equal(rp_stream_promote(dir, c->logs, "E00", cur + 1, good), OM_E_InvalidParameter);
    assert_int_equal(rp_stream_promote(dir, c->logs, "E00", cur, good + ENG_SLOT_SIZE),
                     OM_E_InvalidParameter);
    assert_int_equal(rp_stream_promote(dir, c->logs, "E00", cur, good), 0);
    assert_int_equal(rp_stream_promote(dir, c->logs, "E00", cur, good), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "exists already"));
}

static void a_commit_held_only_in_the_stream_is_there_after_activation(void **state)
{
    (void)state;
    db_at act, with, without;
    db_in(&act, "act");
    eng_db *db = active(&act, 3);
    uint32_t cur = gen_now(db);
    commit_fill(db, 3, 0xA5); /* acknowledged: durable in the open generation only */
    eng_db_abandon(db);       /* the active is lost */
    make_copy(&act, cur, &with, "with", 1);
    make_copy(&act, cur, &without, "without", 0);
    assert_int_equal(page_byte(&with, 3), 0xA5);
    assert_int_not_equal(page_byte(&without, 3), 0xA5); /* the stream is what holds it */
    /* The mount went on after it: the promoted generation closed, the next one started. */
    char p[400];
    eng_log_path(p, sizeof p, with.logs, "E00", cur);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
}

static int setup_tmp(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "%s/ombra-resync-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **s)
{
    (void)s;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd);
}

int main(void)
{
    if (!getenv("OMBRA_DEBUG")) om_log_min_level(OM_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(epoch_survives_and_garbage_is_refused),
        cmocka_unit_test(divergent_generations_are_set_aside_whole),
        cmocka_unit_test(nothing_moves_while_the_database_is_open),
        cmocka_unit_test(across_filesystems_too),
        cmocka_unit_test(past_the_fork_is_told_by_the_header),
        cmocka_unit_test(a_commit_held_only_in_the_stream_is_there_after_activation),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
