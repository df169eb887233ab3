/* Helpers both benchmarks share (bench_commit.c, bench_mail.c): dying with one line, scratch
 * folders, machine description, threads started together, SQLite calls that die on error, the
 * options both have, table rows and JSON pairs. The benchmark defines BENCH_NAME (its name, which
 * starts its error lines) before including this. */
#ifndef OM_BENCH_UTIL_H
#define OM_BENCH_UTIL_H

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "base/error.h"
#include "base/time.h"
#include "engine/engine.h"

static char g_rundir[4300]; /* the scratch folder, named by die() when it is left behind */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs(BENCH_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (g_rundir[0]) fprintf(stderr, " (scratch files left in %s)", g_rundir);
    fputc('\n', stderr);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static void eng_ok(int rc, const char *what)
{
    char b[1024];
    if (rc) die("%s: %s", what, om_err_format(rc, b, sizeof b));
}

static double secs(uint64_t t0, uint64_t t1)
{
    return (double)(t1 - t0) / 1e9;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void sq_ok(sqlite3 *db, int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        die("sqlite: %s: %s (%d)", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
}

static void sq_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) die("sqlite: %s: %s (%d)", sql, msg ? msg : sqlite3_errstr(rc), rc);
}

static sqlite3_stmt *sq_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    sq_ok(db, sqlite3_prepare_v2(db, sql, -1, &s, NULL), sql);
    return s;
}

static sqlite3 *sq_open(const char *path)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        die("sqlite: opening %s: %s (%d)", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
    sq_ok(db, sqlite3_busy_timeout(db, 60000), "setting busy_timeout");
    return db;
}

static void stats_delta(const eng_stats *a, const eng_stats *b, eng_stats *d)
{
    d->commits = b->commits - a->commits;
    d->log_flushes = b->log_flushes - a->log_flushes;
    d->log_bytes = b->log_bytes - a->log_bytes;
    d->log_slots_written = b->log_slots_written - a->log_slots_written;
    d->page_images = b->page_images - a->page_images;
    d->checkpoints = b->checkpoints - a->checkpoints;
    d->pages_flushed = b->pages_flushed - a->pages_flushed;
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0) return (uint64_t)sb.st_size;
    if (errno == ENOENT) return 0;
    die("stat %s: %s", path, strerror(errno));
}

/* First line of a command's output, or "unknown". The path goes in single quotes. */
static void command_line(const char *cmd, const char *path, char *out, size_t n)
{
    char q[8400], full[8600];
    size_t j = 0;
    q[j++] = '\'';
    for (const char *s = path; *s && j < sizeof q - 6; s++) {
        if (*s == '\'') {
            memcpy(q + j, "'\\''", 4);
            j += 4;
        } else
            q[j++] = *s;
    }
    q[j++] = '\'';
    q[j] = 0;
    snprintf(full, sizeof full, "%s %s 2>/dev/null", cmd, q);
    snprintf(out, n, "unknown");
    FILE *f = popen(full, "r");
    if (!f) return;
    char line[256];
    if (fgets(line, sizeof line, f) && line[0] != '\n') {
        size_t l = strcspn(line, "\n");
        if (l >= n) l = n - 1;
        memcpy(out, line, l);
        out[l] = 0;
    }
    pclose(f);
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void row(const char *metric, double o, double s, int decimals)
{
    char a[32], b[32];
    snprintf(a, sizeof a, "%.*f", decimals, o);
    snprintf(b, sizeof b, "%.*f", decimals, s);
    printf("%-44s | %12s | %12s | %12.2f\n", metric, a, b, ratio(o, s));
}

static void json_pair(FILE *f, const char *name, double o, double s, const char *tail)
{
    fprintf(f, "    \"%s\": {\"ombra\": %.6g, \"sqlite\": %.6g, \"ratio\": %.4g}%s\n", name, o, s,
            ratio(o, s), tail);
}

static uint64_t num_arg(const char *name, const char *v, uint64_t lo, uint64_t hi)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = v ? strtoull(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi)
        die("%s needs a number from %llu to %llu, got '%s'", name, (unsigned long long)lo,
            (unsigned long long)hi, v ? v : "");
    return x;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)type, (void)ftw;
    return remove(path) == 0 ? 0 : -1;
}

static void rm_tree(const char *dir)
{
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        die("removing %s: %s", dir, strerror(errno));
}

/* Makes the scratch folder PARENT/run-PID into out; die() names it from then on. */
static void make_rundir(const char *parent, char *out, size_t n)
{
    snprintf(out, n, "%s/run-%ld", parent, (long)getpid());
    if (mkdir(out, 0750) != 0)
        die("creating %s: %s. HINT: --dir must be an existing, writable folder", out,
            strerror(errno));
    snprintf(g_rundir, sizeof g_rundir, "%s", out);
}

/* The scratch parent by default: $TMPDIR, else /tmp. */
static const char *scratch_parent(void)
{
    const char *tmp = getenv("TMPDIR");
    return tmp && *tmp ? tmp : "/tmp";
}

/* The options both benchmarks have: --help/-h (prints usage, exits 0), --keep, --dir DIR and
 * --json FILE. Returns 1 when argv[*i] was one of them (*i past its value), else 0. */
static int common_arg(int argc, char **argv, int *i, void (*usage)(FILE *), const char **dir,
                      const char **json, int *keep)
{
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        usage(stdout);
        exit(0);
    } else if (!strcmp(a, "--keep"))
        *keep = 1;
    else if (!strcmp(a, "--dir") && v)
        *dir = argv[++*i];
    else if (!strcmp(a, "--json") && v)
        *json = argv[++*i];
    else
        return 0;
    return 1;
}

static void bad_arg(const char *a, void (*usage)(FILE *))
{
    usage(stderr);
    die("unknown or incomplete option '%s'", a);
}

typedef struct machine {
    long nproc;
    char fs[64], fstype[64], sqlite[32], cpu[128];
} machine;

static void machine_info(const char *dir, machine *m)
{
    m->nproc = sysconf(_SC_NPROCESSORS_ONLN);
    command_line("stat -f -c %T", dir, m->fs, sizeof m->fs);
    command_line("findmnt -n -o FSTYPE -T", dir, m->fstype, sizeof m->fstype);
    command_line("sed -n 's/^model name[^:]*: //p;T;q'", "/proc/cpuinfo", m->cpu, sizeof m->cpu);
    snprintf(m->sqlite, sizeof m->sqlite, "%s", sqlite3_libversion());
}

/* A timed thread's share of the operations, [first, first + n), and the barrier that starts
 * them all together. Each thread's argument begins with one. */
typedef struct bench_share {
    uint64_t first, n;
    pthread_barrier_t *go;
} bench_share;

/* Runs fn on nw threads, fn's argument k at (char *)ws + k * size (beginning with its share of
 * [first, first + n)), released together by a barrier. *t0 is the time of the release; returns
 * the time the last one was joined. */
static uint64_t run_threads(void *ws, size_t size, unsigned nw, uint64_t first, uint64_t n,
                            void *(*fn)(void *), uint64_t *t0)
{
    pthread_barrier_t go;
    pthread_t *tid = xmalloc(nw * sizeof *tid);
    if (pthread_barrier_init(&go, NULL, nw + 1) != 0)
        die("creating a barrier: %s", strerror(errno));
    for (unsigned k = 0; k < nw; k++) {
        bench_share *s = (bench_share *)((char *)ws + k * size);
        s->first = first + n * k / nw;
        s->n = first + n * (k + 1) / nw - s->first;
        s->go = &go;
        int rc = pthread_create(&tid[k], NULL, fn, s);
        if (rc != 0) die("starting thread %u: %s", k, strerror(rc));
    }
    pthread_barrier_wait(&go);
    *t0 = om_mono_ns();
    for (unsigned k = 0; k < nw; k++)
        pthread_join(tid[k], NULL);
    uint64_t t1 = om_mono_ns();
    pthread_barrier_destroy(&go);
    free(tid);
    return t1;
}

#endif
