/* bench_commit: the engine's durable core against SQLite, side by side in one run.
 *
 * Both stores hold the same data set of 4 KiB units (64 MiB by default) on the same
 * filesystem, and both replay the same random sequence of changes, one unit per transaction:
 *  1. durable commits/s with one writer;
 *  2. the same with several writer threads (Ombra's committers share log fsyncs: group
 *     commit; SQLite's connections take turns on the WAL write lock, one fsync each);
 *  3. log replay after a crash: Ombra's soft recovery (eng_db_recover) of >= 64 MiB of log
 *     against SQLite opening and checkpointing a WAL of the same size left by a process that
 *     died without closing.
 * Ombra packs eight units in a 32 KiB page (the eighth at ENG_PAGE_BODY - 4 KiB, since the
 * page header takes 32 bytes); SQLite keeps one unit per row of `t(id, data BLOB)`.
 * Operation i changes unit op_unit(i) to the bytes op_payload(i): stateless functions of the
 * seed, so the workers, the forked SQLite writer and the recovery checks all agree on them.
 * bench/README.md says how to read the figures. Any failure prints one line and exits 1. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "base/error.h"
#include "base/time.h"
#include "engine/engine.h"

#define BENCH_NAME "bench_commit"
#include "bench_util.h"

#define UNIT           4096u
#define UNITS_PER_PAGE 8u
#define ALLOC_BATCH    32u /* pages per transaction while filling the Ombra database */
#define CHECK_EVERY    64u /* commits between log-size checks in the replay workloads */
#define MB             1e6
#define MAX_THREADS    64u

typedef struct params {
    const char *dir, *json;
    uint64_t commits, seed;
    unsigned threads, rounds;
    uint32_t data_mb, replay_mb;
    uint32_t units, pages;
    int cold, keep;
} params;

/* Set once the run directory exists, so a failure says where its files are. */
/* ---- the shared random sequence ---- */

static void fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t s = mix64(seed);
    for (size_t k = 0; k < len; k += 8) {
        uint64_t v = mix64(s + k);
        memcpy(buf + k, &v, len - k < 8 ? len - k : 8);
    }
}

/* Operation i changes unit op_unit(i) to op_payload(i). Domains keep the streams apart. */
static uint32_t op_unit(const params *p, uint64_t i)
{
    return (uint32_t)(mix64(p->seed ^ mix64(i)) % p->units);
}
static void op_payload(const params *p, uint64_t i, uint8_t *buf)
{
    fill_random(buf, UNIT, p->seed * 3 + 2 * i + 1);
}
static uint64_t fill_seed(const params *p, uint64_t what)
{
    return mix64(p->seed + 0x0F111ull) ^ what;
}

/* ---- Ombra ---- */

typedef struct ombra {
    char dir[4200], edb[4300], logs[4300];
    eng_opts opts; /* as created: default cache and checkpoint interval */
    eng_db *db;
    uint32_t *pgno; /* page of each group of UNITS_PER_PAGE units */
} ombra;

static void ombra_unit(const ombra *o, uint32_t u, uint32_t *pgno, uint32_t *off)
{
    uint32_t x = (u % UNITS_PER_PAGE) * UNIT;
    *pgno = o->pgno[u / UNITS_PER_PAGE];
    *off = x + UNIT <= ENG_PAGE_BODY ? x : ENG_PAGE_BODY - UNIT;
}

/* Creates the database and commits its pages, full of random bytes, then checkpoints so the
 * timed phases start with nothing dirty. */
static void ombra_create(ombra *o, const params *p)
{
    uint8_t *body = xmalloc(ENG_PAGE_BODY);
    o->pgno = xmalloc(p->pages * sizeof *o->pgno);
    o->opts = (eng_opts){.edb_path = o->edb, .log_dir = o->logs};
    eng_ok(eng_db_create(&o->opts, &o->db), "creating the Ombra database");
    for (uint32_t done = 0; done < p->pages;) {
        eng_txn *t = NULL;
        eng_ok(eng_txn_begin(o->db, &t), "beginning a transaction to fill the Ombra database");
        for (uint32_t k = 0; k < ALLOC_BATCH && done < p->pages; k++, done++) {
            eng_ok(eng_page_alloc(t, 1, &o->pgno[done]), "allocating a page");
            fill_random(body, ENG_PAGE_BODY, fill_seed(p, done));
            eng_ok(eng_page_write(t, o->pgno[done], 0, body, ENG_PAGE_BODY), "filling a page");
        }
        eng_ok(eng_txn_commit(t, 0), "committing the initial pages");
    }
    eng_ok(eng_checkpoint(o->db), "checkpointing the filled Ombra database");
    free(body);
}

/* Changes unit op_unit(i) in its own transaction. */
static void ombra_change(const ombra *o, const params *p, uint64_t i, unsigned flags, uint8_t *buf)
{
    uint32_t pg, off;
    eng_txn *t = NULL;
    ombra_unit(o, op_unit(p, i), &pg, &off);
    op_payload(p, i, buf);
    eng_ok(eng_txn_begin(o->db, &t), "beginning a transaction");
    eng_ok(eng_page_write(t, pg, off, buf, UNIT), "writing 4 KiB to a page");
    eng_ok(eng_txn_commit(t, flags), "committing a transaction");
}

/* After recovery: the last operation's bytes are in its page. */
static void ombra_verify(const ombra *o, const params *p, uint64_t last)
{
    uint32_t pg, off;
    uint8_t *body = xmalloc(ENG_PAGE_BODY), want[UNIT];
    eng_db *db = NULL;
    ombra_unit(o, op_unit(p, last), &pg, &off);
    op_payload(p, last, want);
    eng_ok(eng_db_open(&o->opts, &db), "opening the recovered Ombra database");
    eng_ok(eng_page_read(db, pg, body), "reading a recovered page");
    if (memcmp(body + off, want, UNIT) != 0)
        die("Ombra lost a committed change: page %u offset %u after recovery is not what operation "
            "%llu wrote",
            pg, off, (unsigned long long)last);
    eng_ok(eng_db_close(db), "closing the recovered Ombra database");
    free(body);
}

/* ---- SQLite ---- */

typedef struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *begin, *update, *commit;
    int wal_prev;        /* frames in the WAL after the previous commit (1 writer only) */
    uint64_t wal_frames; /* frames this connection appended (1 writer only) */
} sq_conn;

/* Runs a statement that returns one row and copies its first column as text. */
static void sq_text(sqlite3 *db, const char *sql, char *out, size_t n)
{
    sqlite3_stmt *s = sq_prepare(db, sql);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) die("sqlite: %s returned no row: %s (%d)", sql, sqlite3_errmsg(db), rc);
    snprintf(out, n, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
}

/* SQLite's own autocheckpoint (a PASSIVE checkpoint once the WAL holds 1000 frames), plus a
 * count of the frames each commit appended, to compare log bytes per commit. */
static int sq_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    sq_conn *c = arg;
    c->wal_frames += (uint64_t)(frames > c->wal_prev ? frames - c->wal_prev : frames);
    c->wal_prev = frames;
    if (frames >= 1000) sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

static void sq_conn_open(sq_conn *c, const char *path, const char *sync_pragma)
{
    memset(c, 0, sizeof *c);
    c->db = sq_open(path);
    sq_exec(c->db, sync_pragma);
    c->begin = sq_prepare(c->db, "BEGIN IMMEDIATE");
    c->update = sq_prepare(c->db, "UPDATE t SET data = ?1 WHERE id = ?2");
    c->commit = sq_prepare(c->db, "COMMIT");
}

static void sq_conn_close(sq_conn *c)
{
    sqlite3_finalize(c->begin);
    sqlite3_finalize(c->update);
    sqlite3_finalize(c->commit);
    sq_ok(c->db, sqlite3_close(c->db), "closing a connection");
    c->db = NULL;
}

static void sq_step(sqlite3 *db, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) die("sqlite: %s: %s (%d)", what, sqlite3_errmsg(db), rc);
    sqlite3_reset(s);
}

/* The equivalent of ombra_change: BEGIN IMMEDIATE / UPDATE one 4 KiB blob / COMMIT. IMMEDIATE
 * so that concurrent writers queue on busy_timeout instead of failing a lock upgrade. */
static void sq_change(sq_conn *c, const params *p, uint64_t i, uint8_t *buf)
{
    op_payload(p, i, buf);
    sq_step(c->db, c->begin, "BEGIN IMMEDIATE");
    sq_ok(c->db, sqlite3_bind_blob(c->update, 1, buf, UNIT, SQLITE_STATIC), "binding the blob");
    sq_ok(c->db, sqlite3_bind_int64(c->update, 2, (sqlite3_int64)op_unit(p, i) + 1),
          "binding the id");
    sq_step(c->db, c->update, "UPDATE");
    if (sqlite3_changes(c->db) != 1)
        die("sqlite: UPDATE of row %u changed no row", op_unit(p, i) + 1);
    sq_step(c->db, c->commit, "COMMIT");
}

/* Creates the table with one random 4 KiB blob per unit, then empties the WAL. */
static void sq_create(const char *path, const params *p)
{
    char mode[32];
    uint8_t buf[UNIT];
    sqlite3 *db = sq_open(path);
    sq_text(db, "PRAGMA journal_mode=WAL", mode, sizeof mode);
    if (strcmp(mode, "wal") != 0) die("sqlite: journal_mode is %s, not wal", mode);
    sq_exec(db,
            "PRAGMA synchronous=FULL; CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB); BEGIN");
    sqlite3_stmt *ins = sq_prepare(db, "INSERT INTO t(id, data) VALUES (?1, ?2)");
    for (uint32_t u = 0; u < p->units; u++) {
        fill_random(buf, UNIT, fill_seed(p, 1000000000ull + u));
        sq_ok(db, sqlite3_bind_int64(ins, 1, (sqlite3_int64)u + 1), "binding the id");
        sq_ok(db, sqlite3_bind_blob(ins, 2, buf, UNIT, SQLITE_STATIC), "binding the blob");
        sq_step(db, ins, "INSERT");
    }
    sqlite3_finalize(ins);
    sq_exec(db, "COMMIT; PRAGMA wal_checkpoint(TRUNCATE)");
    sq_ok(db, sqlite3_close(db), "closing after the fill");
}

/* ---- timed writers ---- */

typedef struct worker {
    bench_share s; /* first */
    const params *p;
    ombra *o;    /* Ombra worker */
    sq_conn *sq; /* or SQLite worker */
} worker;

static void *ombra_worker(void *arg)
{
    worker *w = arg;
    uint8_t buf[UNIT];
    pthread_barrier_wait(w->s.go);
    for (uint64_t i = w->s.first; i < w->s.first + w->s.n; i++)
        ombra_change(w->o, w->p, i, 0, buf);
    return NULL;
}

static void *sq_worker(void *arg)
{
    worker *w = arg;
    uint8_t buf[UNIT];
    pthread_barrier_wait(w->s.go);
    for (uint64_t i = w->s.first; i < w->s.first + w->s.n; i++)
        sq_change(w->sq, w->p, i, buf);
    return NULL;
}

/* Splits operations [first, first + n) between the workers, starts them together and returns
 * the seconds until the last one finished. */
static double run_workers(worker *ws, unsigned nw, uint64_t first, uint64_t n, void *(*fn)(void *))
{
    uint64_t t0, t1 = run_threads(ws, sizeof *ws, nw, first, n, fn, &t0);
    return secs(t0, t1);
}

typedef struct commit_result {
    double o_secs, s_secs;
    double lo_ratio, hi_ratio; /* spread of the per-round Ombra/SQLite rate ratios */
    eng_stats o_delta;         /* Ombra counters over the phase */
    uint64_t s_frames;         /* SQLite WAL frames appended (1 writer only) */
} commit_result;

/* One timed phase: operations [first, first + commits) by nw writers on each store. A shared
 * disk's fsync latency drifts by a factor of several within seconds, so the phase runs in
 * rounds that alternate which store goes first; both meet the same weather. */
static void commit_phase(ombra *o, const char *sq_path, const params *p, unsigned nw,
                         uint64_t first, commit_result *r)
{
    worker ow[MAX_THREADS], sw[MAX_THREADS];
    sq_conn conns[MAX_THREADS];
    eng_stats a, b;
    eng_ok(eng_checkpoint(o->db), "checkpointing before a timed phase");
    eng_db_stats(o->db, &a);
    for (unsigned k = 0; k < nw; k++) {
        sq_conn_open(&conns[k], sq_path, "PRAGMA synchronous=FULL");
        /* With several connections the frame counts of one connection mean nothing. */
        if (nw == 1) sqlite3_wal_hook(conns[k].db, sq_wal_hook, &conns[k]);
        ow[k] = (worker){.p = p, .o = o};
        sw[k] = (worker){.p = p, .sq = &conns[k]};
    }
    unsigned rounds = p->rounds < p->commits / nw ? p->rounds : (unsigned)(p->commits / nw);
    for (unsigned j = 0; j < rounds; j++) {
        uint64_t lo = first + p->commits * j / rounds,
                 n = first + p->commits * (j + 1) / rounds - lo;
        double os = 0, ss = 0;
        for (unsigned e = 0; e < 2; e++) {
            if ((e + j) % 2)
                ss = run_workers(sw, nw, lo, n, sq_worker);
            else
                os = run_workers(ow, nw, lo, n, ombra_worker);
        }
        double q = ss / os;
        if (j == 0 || q < r->lo_ratio) r->lo_ratio = q;
        if (j == 0 || q > r->hi_ratio) r->hi_ratio = q;
        r->o_secs += os;
        r->s_secs += ss;
    }
    eng_db_stats(o->db, &b);
    stats_delta(&a, &b, &r->o_delta);
    r->s_frames = conns[0].wal_frames;
    for (unsigned k = 0; k < nw; k++)
        sq_conn_close(&conns[k]);
}

/* ---- replay after a crash ---- */

typedef struct replay_result {
    uint64_t o_commits, o_log, o_records, o_engine_ns;
    double o_secs;
    uint64_t s_commits, s_wal, s_frames, s_page;
    double s_secs;
    int cold; /* the page cache was dropped before timing */
} replay_result;

static int drop_caches(const params *p)
{
    if (!p->cold || geteuid() != 0) return 0;
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (!f || fputs("3\n", f) == EOF || fclose(f) != 0)
        die("dropping the page cache (--cold): %s. HINT: run without --cold", strerror(errno));
    return 1;
}

/* Reopens with a 1 GiB cache and no checkpoint, changes units (commits lazy, the log flushed
 * every CHECK_EVERY commits) until >= replay_mb MiB of log, "crashes" and times recovery. */
static void ombra_replay(ombra *o, const params *p, uint64_t first, replay_result *r)
{
    uint8_t buf[UNIT];
    eng_stats s = {0}, st = {0};
    eng_opts big = o->opts;
    big.cache_bytes = 1ull << 30;
    big.checkpoint_gens = 100000;
    eng_ok(eng_db_close(o->db), "closing the Ombra database");
    eng_ok(eng_db_open(&big, &o->db), "reopening the Ombra database with a 1 GiB cache");
    uint64_t i = first, target = (uint64_t)p->replay_mb << 20;
    while (s.log_bytes < target) {
        ombra_change(o, p, i++, ENG_COMMIT_LAZY, buf);
        if ((i - first) % CHECK_EVERY) continue;
        eng_ok(eng_log_flush(o->db), "flushing the log");
        eng_db_stats(o->db, &s);
    }
    if (s.checkpoints) die("a checkpoint ran during the replay workload; replay would be short");
    eng_db_abandon(o->db);
    o->db = NULL;
    r->cold = drop_caches(p);
    uint64_t t0 = om_mono_ns();
    eng_ok(eng_db_recover(&big, &st), "recovering the Ombra database");
    r->o_secs = secs(t0, om_mono_ns());
    r->o_commits = i - first;
    r->o_log = st.replay_bytes;
    r->o_records = st.replay_records;
    r->o_engine_ns = st.replay_ns;
    ombra_verify(o, p, i - 1);
}

/* The forked writer: commits without checkpointing until the WAL holds target bytes, tells
 * the parent how many commits it made, and dies with the database open. */
static void sq_crash_child(const char *path, const char *wal, const params *p, uint64_t first,
                           uint64_t target, int fd)
{
    sq_conn c;
    uint8_t buf[UNIT];
    uint64_t i = first;
    sq_conn_open(&c, path, "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0");
    do {
        sq_change(&c, p, i++, buf);
    } while ((i - first) % CHECK_EVERY || file_size(wal) < target);
    uint64_t n = i - first;
    if (write(fd, &n, sizeof n) != (ssize_t)sizeof n)
        die("child: reporting to the parent: %s", strerror(errno));
    _exit(0);
}

static uint64_t sq_spawn_crash(const char *path, const char *wal, const params *p, uint64_t first,
                               uint64_t target)
{
    int fds[2];
    uint64_t n = 0;
    if (pipe(fds) != 0) die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        sq_crash_child(path, wal, p, first, target, fds[1]);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], &n, sizeof n);
    close(fds[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) die("waiting for the SQLite writer: %s", strerror(errno));
    if (got != (ssize_t)sizeof n || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the forked SQLite writer failed (status %d)", status);
    return n;
}

static uint32_t wal_page_size(const char *wal)
{
    uint8_t h[32];
    int fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h)
        die("reading the WAL header of %s: %s", wal, strerror(errno));
    close(fd);
    return (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
}

/* Times open + first query + wal_checkpoint(TRUNCATE) on the WAL the child left. */
static void sq_replay(const char *path, const char *wal, const params *p, uint64_t first,
                      uint64_t target, replay_result *r)
{
    uint8_t got[UNIT], want[UNIT];
    if (file_size(wal) != 0) die("sqlite: %s is not empty before the crash workload", wal);
    r->s_commits = sq_spawn_crash(path, wal, p, first, target);
    r->s_wal = file_size(wal);
    r->s_page = wal_page_size(wal);
    r->s_frames = (r->s_wal - 32) / (r->s_page + 24);
    r->cold = drop_caches(p);
    uint64_t last = first + r->s_commits - 1, t0 = om_mono_ns();
    sqlite3 *db = sq_open(path);
    sq_exec(db, "PRAGMA synchronous=FULL");
    sqlite3_stmt *q = sq_prepare(db, "SELECT data FROM t WHERE id = ?1");
    sq_ok(db, sqlite3_bind_int64(q, 1, (sqlite3_int64)op_unit(p, last) + 1), "binding the id");
    if (sqlite3_step(q) != SQLITE_ROW || sqlite3_column_bytes(q, 0) != (int)UNIT)
        die("sqlite: row %u is missing after the crash: %s", op_unit(p, last) + 1,
            sqlite3_errmsg(db));
    memcpy(got, sqlite3_column_blob(q, 0), UNIT);
    sqlite3_finalize(q);
    sqlite3_stmt *ck = sq_prepare(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    if (sqlite3_step(ck) != SQLITE_ROW || sqlite3_column_int(ck, 0) != 0)
        die("sqlite: wal_checkpoint(TRUNCATE) did not complete: %s", sqlite3_errmsg(db));
    sqlite3_finalize(ck);
    r->s_secs = secs(t0, om_mono_ns());
    sq_ok(db, sqlite3_close(db), "closing after recovery");
    op_payload(p, last, want);
    if (memcmp(got, want, UNIT) != 0)
        die("sqlite lost a committed change: row %u", op_unit(p, last) + 1);
    if (file_size(wal) != 0) die("sqlite: the WAL is not empty after wal_checkpoint(TRUNCATE)");
}

/* ---- machine, output ---- */

static void print_table(const params *p, const machine *m, const commit_result *c1,
                        const commit_result *cn, const replay_result *r)
{
    double n = (double)p->commits, pay = n * UNIT / MB;
    char w[64];
    printf("\nmachine: %ld CPUs; %s: filesystem %s (%s); SQLite %s\n", m->nproc, p->dir, m->fs,
           m->fstype, m->sqlite);
    printf("parameters: %llu commits of 4 KiB per phase in %u alternating rounds; %u writers; data "
           "%u MiB (%u Ombra pages of 32 KiB, "
           "%u SQLite rows); replay log >= %u MiB, page cache %s; seed %llu\n\n",
           (unsigned long long)p->commits, p->rounds, p->threads, p->data_mb, p->pages, p->units,
           p->replay_mb, r->cold ? "dropped (cold)" : "warm", (unsigned long long)p->seed);
    printf("%-44s | %12s | %12s | %12s\n", "metric", "Ombra", "SQLite", "Ombra/SQLite");
    printf("%.44s-+-%.12s-+-%.12s-+-%.12s\n",
           "----------------------------------------------------", "--------------",
           "--------------", "--------------");
    row("durable commits/s, 1 writer", n / c1->o_secs, n / c1->s_secs, 0);
    row("payload MB/s, 1 writer", pay / c1->o_secs, pay / c1->s_secs, 2);
    snprintf(w, sizeof w, "durable commits/s, %u writers", p->threads);
    row(w, n / cn->o_secs, n / cn->s_secs, 0);
    snprintf(w, sizeof w, "payload MB/s, %u writers", p->threads);
    row(w, pay / cn->o_secs, pay / cn->s_secs, 2);
    row("log replay MB/s at recovery", r->o_log / MB / r->o_secs, r->s_wal / MB / r->s_secs, 1);
    row("log records/s at recovery (SQLite: frames)", r->o_records / r->o_secs,
        r->s_frames / r->s_secs, 0);
    row("recovery seconds (lower is better)", r->o_secs, r->s_secs, 3);

    const eng_stats *a = &c1->o_delta, *b = &cn->o_delta;
    printf("\ndetails:\n");
    printf("  commit ratio per round: 1 writer %.2f..%.2f, %u writers %.2f..%.2f\n", c1->lo_ratio,
           c1->hi_ratio, p->threads, cn->lo_ratio, cn->hi_ratio);
    printf("  1 writer:  Ombra %.2f log fsyncs/commit, %.1f KiB of log slots written/commit, %.2f "
           "full "
           "page images/commit, %llu checkpoints (%llu pages written); SQLite %.1f KiB of "
           "WAL/commit\n",
           (double)a->log_flushes / n, a->log_slots_written * 4.0 / n, (double)a->page_images / n,
           (unsigned long long)a->checkpoints, (unsigned long long)a->pages_flushed,
           c1->s_frames * (UNIT + 24) / 1024.0 / n);
    printf("  %u writers: Ombra %.2f commits per log fsync, %.1f KiB of log slots written/commit, "
           "%.2f "
           "full page images/commit, %llu checkpoints\n",
           p->threads, n / (double)(b->log_flushes ? b->log_flushes : 1),
           b->log_slots_written * 4.0 / n, (double)b->page_images / n,
           (unsigned long long)b->checkpoints);
    printf(
        "  recovery:  Ombra replayed %.1f MB (%llu records, %llu commits) in %.3f s (engine's own "
        "replay_ns %.3f s); SQLite WAL %.1f MB (%llu frames of %u bytes, %llu commits) in %.3f s\n",
        r->o_log / MB, (unsigned long long)r->o_records, (unsigned long long)r->o_commits,
        r->o_secs, r->o_engine_ns / 1e9, r->s_wal / MB, (unsigned long long)r->s_frames,
        (unsigned)r->s_page, (unsigned long long)r->s_commits, r->s_secs);
}

/* A commit phase's engine counters as a JSON member of "details". */
static void json_ombra_delta(FILE *f, const char *name, const eng_stats *d)
{
    fprintf(f,
            "    \"%s\": {\"log_fsyncs\": %llu, \"log_slot_bytes\": %llu, \"page_images\": %llu, "
            "\"checkpoints\": %llu},\n",
            name, (unsigned long long)d->log_flushes,
            (unsigned long long)d->log_slots_written * 4096, (unsigned long long)d->page_images,
            (unsigned long long)d->checkpoints);
}

static void write_json(const params *p, const machine *m, const commit_result *c1,
                       const commit_result *cn, const replay_result *r)
{
    char tmp[4200], now[64];
    double n = (double)p->commits, pay = n * UNIT / MB;
    snprintf(tmp, sizeof tmp, "%s.tmp", p->json);
    FILE *f = fopen(tmp, "w");
    if (!f) die("writing %s: %s", tmp, strerror(errno));
    fprintf(f, "{\n  \"time\": \"%s\",\n", om_time_iso(om_now_ns(), now, sizeof now));
    fprintf(f,
            "  \"machine\": {\"nproc\": %ld, \"fs\": \"%s\", \"fstype\": \"%s\", \"sqlite\": "
            "\"%s\"},\n",
            m->nproc, m->fs, m->fstype, m->sqlite);
    fprintf(
        f,
        "  \"params\": {\"commits\": %llu, \"threads\": %u, \"data_mib\": %u, \"ombra_pages\": %u, "
        "\"sqlite_rows\": %u, \"change_bytes\": %u, \"rounds\": %u, \"replay_target_mib\": %u, "
        "\"cache\": \"%s\", "
        "\"seed\": %llu},\n",
        (unsigned long long)p->commits, p->threads, p->data_mb, p->pages, p->units, UNIT, p->rounds,
        p->replay_mb, r->cold ? "cold" : "warm", (unsigned long long)p->seed);
    fprintf(f, "  \"results\": {\n");
    json_pair(f, "commits_per_s_1w", n / c1->o_secs, n / c1->s_secs, ",");
    json_pair(f, "payload_mb_per_s_1w", pay / c1->o_secs, pay / c1->s_secs, ",");
    json_pair(f, "commits_per_s_nw", n / cn->o_secs, n / cn->s_secs, ",");
    json_pair(f, "payload_mb_per_s_nw", pay / cn->o_secs, pay / cn->s_secs, ",");
    json_pair(f, "replay_mb_per_s", r->o_log / MB / r->o_secs, r->s_wal / MB / r->s_secs, ",");
    json_pair(f, "replay_records_per_s", r->o_records / r->o_secs, r->s_frames / r->s_secs, ",");
    json_pair(f, "recovery_seconds", r->o_secs, r->s_secs, "");
    fprintf(f, "  },\n  \"details\": {\n");
    json_ombra_delta(f, "ombra_1w", &c1->o_delta);
    json_ombra_delta(f, "ombra_nw", &cn->o_delta);
    fprintf(f, "    \"sqlite_1w\": {\"wal_frames\": %llu},\n", (unsigned long long)c1->s_frames);
    fprintf(f, "    \"round_ratio_1w\": [%.4g, %.4g],\n    \"round_ratio_nw\": [%.4g, %.4g],\n",
            c1->lo_ratio, c1->hi_ratio, cn->lo_ratio, cn->hi_ratio);
    fprintf(f,
            "    \"ombra_replay\": {\"log_bytes\": %llu, \"records\": %llu, \"commits\": %llu, "
            "\"seconds\": %.6f, "
            "\"engine_replay_ns\": %llu},\n",
            (unsigned long long)r->o_log, (unsigned long long)r->o_records,
            (unsigned long long)r->o_commits, r->o_secs, (unsigned long long)r->o_engine_ns);
    fprintf(f,
            "    \"sqlite_replay\": {\"wal_bytes\": %llu, \"frames\": %llu, \"page_size\": %llu, "
            "\"commits\": %llu, "
            "\"seconds\": %.6f}\n  }\n}\n",
            (unsigned long long)r->s_wal, (unsigned long long)r->s_frames,
            (unsigned long long)r->s_page, (unsigned long long)r->s_commits, r->s_secs);
    if (ferror(f) | (fclose(f) != 0)) die("writing %s: %s", tmp, strerror(errno));
    if (rename(tmp, p->json) != 0) die("renaming %s to %s: %s", tmp, p->json, strerror(errno));
}

/* ---- command line, scratch directory ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_commit [--dir DIR] [--commits N] [--threads T] [--rounds R]\n"
               "                    [--data-mb M] [--replay-mb M] [--seed S] [--cold] [--keep] "
               "[--json FILE]\n"
               "  --dir DIR      scratch parent (default $TMPDIR or /tmp); a run-PID folder is "
               "made inside\n"
               "  --commits N    durable commits per phase (default 5000)\n"
               "  --threads T    writers of the concurrent phase (default 4)\n"
               "  --rounds R     alternate the stores R times within a phase (default 5)\n"
               "  --data-mb M    data set in MiB (default 64)\n"
               "  --replay-mb M  log to replay at recovery, MiB (default 64)\n"
               "  --cold         drop the page cache before timing recovery (root only)\n"
               "  --keep         keep the scratch files\n"
               "  --json FILE    write the figures as JSON\n");
}

static void parse_args(int argc, char **argv, params *p)
{
    *p = (params){.dir = scratch_parent(),
                  .commits = 5000,
                  .threads = 4,
                  .rounds = 5,
                  .data_mb = 64,
                  .replay_mb = 64,
                  .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (common_arg(argc, argv, &i, usage, &p->dir, &p->json, &p->keep)) continue;
        if (!strcmp(a, "--cold"))
            p->cold = 1;
        else if (!strcmp(a, "--commits"))
            p->commits = num_arg(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--threads"))
            p->threads = (unsigned)num_arg(a, v, 1, MAX_THREADS), i++;
        else if (!strcmp(a, "--rounds"))
            p->rounds = (unsigned)num_arg(a, v, 1, 1000), i++;
        else if (!strcmp(a, "--data-mb"))
            p->data_mb = (uint32_t)num_arg(a, v, 1, 65536), i++;
        else if (!strcmp(a, "--replay-mb"))
            p->replay_mb = (uint32_t)num_arg(a, v, 1, 65536), i++;
        else if (!strcmp(a, "--seed"))
            p->seed = num_arg(a, v, 0, UINT64_MAX), i++;
        else
            bad_arg(a, usage);
    }
    if (p->commits < p->threads)
        die("--commits (%llu) must be at least --threads (%u)", (unsigned long long)p->commits,
            p->threads);
    p->units = p->data_mb * (1048576 / UNIT);
    p->pages = p->units / UNITS_PER_PAGE;
}

int main(int argc, char **argv)
{
    params p;
    machine m;
    ombra o = {0};
    char sq_path[4300], wal[4400];
    commit_result c1 = {0}, cn = {0};
    replay_result r = {0};
    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_args(argc, argv, &p);
    machine_info(p.dir, &m);
    make_rundir(p.dir, o.dir, sizeof o.dir);
    snprintf(o.edb, sizeof o.edb, "%s/ombra.edb", o.dir);
    snprintf(o.logs, sizeof o.logs, "%s/ombra-logs", o.dir);
    snprintf(sq_path, sizeof sq_path, "%s/sqlite.db", o.dir);
    snprintf(wal, sizeof wal, "%s-wal", sq_path);

    printf("filling %u MiB in each store...\n", p.data_mb);
    ombra_create(&o, &p);
    sq_create(sq_path, &p);
    printf("1 writer, %llu durable commits each...\n", (unsigned long long)p.commits);
    commit_phase(&o, sq_path, &p, 1, 0, &c1);
    printf("%u writers, %llu durable commits in all...\n", p.threads,
           (unsigned long long)p.commits);
    commit_phase(&o, sq_path, &p, p.threads, p.commits, &cn);
    printf("crash and recovery of >= %u MiB of log...\n", p.replay_mb);
    ombra_replay(&o, &p, 2 * p.commits, &r);
    sq_replay(sq_path, wal, &p, 2 * p.commits, r.o_log, &r);

    print_table(&p, &m, &c1, &cn, &r);
    if (p.json) {
        write_json(&p, &m, &c1, &cn, &r);
        printf("\nfigures written to %s\n", p.json);
    }
    if (!p.keep) rm_tree(o.dir);
    free(o.pgno);
    return 0;
}
