/* ombra dbutil check-set: the check library's whole sequence (check/check.h) over database files
 * and a log folder, as the backup application runs it over a shadow copy: headers, every page
 * of every database on all cores, every log generation, then the verdict. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/pool.h"
#include "base/progress.h"
#include "base/time.h"
#include "check/check.h"
#include "cli/cli.h"

#define CHUNK_PAGES 256u /* 8 MiB: the unit a thread takes */
#define MAX_LISTED  1000 /* bad pages or log problems kept for the report */

typedef struct page_run {
    chk_set *set;
    const chk_headers *h;
    uint64_t done; /* pages checked (atomic) */
    om_progress bar;
    pthread_mutex_t mu;
    uint64_t uninit;
    json_t *bad; /* [{file (the .edb), page, ...}] */
    size_t nbad;
    om_err_saved io; /* the first failure to read (the check goes on past it) */
} page_run;

/* Chunk c of all databases' pages: its database and first page; 0 past the end. */
static int chunk_at(page_run *r, uint64_t c, size_t *db, uint32_t *first, uint32_t *count)
{
    for (size_t i = 0; i < r->h->ndb; i++) {
        uint32_t pages = chk_db(r->set, i)->pages;
        uint64_t nchunks = ((uint64_t)pages + CHUNK_PAGES - 1) / CHUNK_PAGES;
        if (c < nchunks) {
            *db = i;
            *first = 1 + (uint32_t)(c * CHUNK_PAGES);
            *count = pages - (*first - 1) < CHUNK_PAGES ? pages - (*first - 1) : CHUNK_PAGES;
            return 1;
        }
        c -= nchunks;
    }
    return 0;
}

static void on_page(void *arg, const chk_page_report *p)
{
    page_run *r = arg;
    if (p->err == 0 && p->initialised) return;
    pthread_mutex_lock(&r->mu);
    if (!p->initialised)
        r->uninit++;
    else if (r->nbad++ < MAX_LISTED) {
        char e[20], a[20];
        snprintf(e, sizeof e, "%016llx", (unsigned long long)p->expected);
        snprintf(a, sizeof a, "%016llx", (unsigned long long)p->actual);
        json_array_append_new(
            r->bad, json_pack("{s:s, s:i, s:s, s:s, s:I, s:i, s:s, s:s}", "file",
                              chk_db(r->set, p->db)->path, "page", p->pgno, "expected", e, "actual",
                              a, "dbtime", (json_int_t)p->dbtime, "error", p->err, "error_name",
                              om_err_name(p->err), "detail", om_err_detail()));
    }
    pthread_mutex_unlock(&r->mu);
}

/* Chunk c of the pool (base/pool.h). A failure to read is kept and the check goes on with the
 * other chunks: the pool is not stopped for it. */
static int page_chunk(void *arg, void *ws, size_t c)
{
    page_run *r = arg;
    size_t db;
    uint32_t first, count;
    if (!chunk_at(r, c, &db, &first, &count)) return 0;
    int rc = chk_check_pages(r->set, db, first, count, on_page, r);
    if (rc && rc != OM_E_ReadVerifyFailure && rc != OM_E_ReadPgnoVerifyFailure &&
        rc != OM_E_DbTimeTooNew) {
        pthread_mutex_lock(&r->mu);
        if (!r->io.code) om_err_save(&r->io, rc);
        pthread_mutex_unlock(&r->mu);
    }
    __atomic_fetch_add(&r->done, count, __ATOMIC_RELAXED);
    return 0;
}

static int page_bar(void *arg, uint64_t done)
{
    om_progress_update(&((page_run *)arg)->bar, done);
    return 0;
}

/* Every page of every database, on nt threads, with a progress bar on a terminal. */
static void check_all_pages(page_run *r, int nt)
{
    uint64_t total = 0, checked, nchunks = 0;
    chk_page_totals(r->set, &checked, &total);
    for (size_t i = 0; i < r->h->ndb; i++)
        nchunks += ((uint64_t)chk_db(r->set, i)->pages + CHUNK_PAGES - 1) / CHUNK_PAGES;
    om_progress_start(&r->bar, "pages", total, "pages");
    om_pool pool = {.workers = nt,
                    .ctx = r,
                    .fn = page_chunk,
                    .progress = page_bar,
                    .count = &r->done,
                    .interval_ms = 50};
    om_pool_run(&pool, (size_t)nchunks); /* page_chunk keeps the failures */
    om_progress_end(&r->bar);
}

typedef struct log_run {
    json_t *problems, *checkpoint;
    int json;
} log_run;

static void on_log(void *arg, const chk_log_report *l)
{
    log_run *r = arg;
    if (l->is_checkpoint) {
        r->checkpoint =
            json_pack("{s:s, s:b, s:s}", "file", l->file, "ok", l->err == 0, "detail", l->detail);
        if (r->json) return;
        if (l->err)
            printf("checkpoint %s: %d %s: %s\n", l->file, l->err, om_err_name(l->err), l->detail);
        else
            printf("checkpoint %s: ok%s%s\n", l->file, l->detail[0] ? "; " : "", l->detail);
        return;
    }
    if (!l->err) return;
    if (json_array_size(r->problems) < MAX_LISTED)
        json_array_append_new(r->problems,
                              json_pack("{s:s, s:i, s:b, s:i, s:s, s:s}", "file", l->file,
                                        "generation", l->gen, "needed", l->needed, "error", l->err,
                                        "error_name", om_err_name(l->err), "detail", l->detail));
    if (!r->json)
        printf("  %d %s: %s%s\n", l->err, om_err_name(l->err), l->detail,
               l->needed ? "" : " (older than the oldest needed generation: not a failure)");
}

static json_t *db_json(const chk_db_info *d)
{
    return json_pack("{s:s, s:s, s:i, s:[i,i], s:i, s:i}", "file", d->path, "state",
                     eng_state_name(d->state), "pages", d->pages, "log_required", d->log_req_min,
                     d->log_req_max, "log_committed", d->log_committed, "damaged_header_copy",
                     d->damaged_header_copy);
}

static void print_db(const chk_db_info *d)
{
    printf("database %s: %s, %u pages, ", d->path, eng_state_name(d->state), d->pages);
    if (d->state == ENG_STATE_CLEAN)
        printf("no logs required\n");
    else
        printf("needs log generations %u-%u\n", d->log_req_min, d->log_req_max);
    if (d->damaged_header_copy >= 0)
        printf("  header copy %d: -1018 ReadVerifyFailure (the other copy is good)\n",
               d->damaged_header_copy);
}

/* The base name: --base, else the first database's, else none (the library says so). */
static const char *pick_base(const cli_args *a, const char *const *edb, int nedb, char *buf)
{
    if (cli_val(a, "base")) return cli_val(a, "base");
    eng_dbhdr h;
    if (nedb > 0 && eng_dbhdr_read(om_vfs_posix(), edb[0], &h, 0, NULL) == 0) {
        memcpy(buf, h.base, 4);
        return buf;
    }
    om_err_clear();
    return nedb > 0 ? "E00" : NULL;
}

/* A log-only set without --first-gen: every generation present is part of the set. */
static int expect_present(chk_set *s, const char *dir, const char *base)
{
    chk_log_file *v = NULL;
    size_t n = 0;
    int rc = chk_list_logs(om_vfs_posix(), dir, base, &v, &n);
    uint32_t lo = 0, hi = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        if (v[i].gen == UINT32_MAX) continue;
        if (!lo) lo = v[i].gen;
        hi = v[i].gen;
    }
    free(v);
    if (!rc && !lo) rc = om_errf(OM_E_MissingLogFile, "%s holds no %s logs", dir, base);
    return rc ? rc : chk_expect_logs(s, lo, hi);
}

static int set_expected(const cli_args *a, chk_set *s, int nedb, const char *base)
{
    uint64_t first = 0, last = 0;
    int rc;
    if (cli_val(a, "first-gen") &&
        (rc = cli_number(a, "--first-gen", cli_val(a, "first-gen"), 1, ENG_MAX_GEN, 0, &first)))
        return rc;
    if (cli_val(a, "last-gen") &&
        (rc = cli_number(a, "--last-gen", cli_val(a, "last-gen"), 1, ENG_MAX_GEN, 0, &last)))
        return rc;
    if (!!first != !!last) return cli_usage(a, "--first-gen and --last-gen go together");
    if (first && last < first) return cli_usage(a, "--last-gen is below --first-gen");
    if (first)
        rc = chk_expect_logs(s, (uint32_t)first, (uint32_t)last);
    else if (nedb == 0 && cli_val(a, "logs"))
        rc = expect_present(s, cli_val(a, "logs"), base);
    else
        rc = 0;
    return rc ? cli_fail(rc) : CLI_OK;
}

/* After chk_term: the set is gone, the totals were taken before. */
static int report_json(json_t *dbs, uint64_t checked, uint64_t total, page_run *pr,
                       const chk_logs *lg, log_run *lr, int verdict, const char *detail)
{
    char err[1200] = "";
    if (verdict) snprintf(err, sizeof err, "%d %s: %s", verdict, om_err_name(verdict), detail);
    json_t *o = json_pack(
        "{s:o, s:{s:I, s:I, s:I, s:I, s:O}, s:{s:i, s:i, s:[i,i], s:i, s:i, s:O}, s:O, s:b, s:s?}",
        "databases", dbs, "pages", "checked", (json_int_t)checked, "total", (json_int_t)total,
        "uninitialised", (json_int_t)pr->uninit, "bad_count", (json_int_t)pr->nbad, "bad", pr->bad,
        "logs", "lowest", lg->lowest, "highest", lg->highest, "needed", lg->need_min, lg->need_max,
        "checked", lg->checked, "bad_unneeded", lg->bad_unneeded, "problems", lr->problems,
        "checkpoint", lr->checkpoint ? lr->checkpoint : json_null(), "ok", verdict == 0, "error",
        verdict ? err : NULL);
    int rc = cli_print_json(o);
    json_decref(o);
    return rc;
}

int cli_dbutil_check_set(const cli_args *a)
{
    const char *const *edb = NULL;
    int nedb = cli_list(a, "edb", &edb), rc;
    uint64_t threads = 0;
    if (cli_val(a, "threads") &&
        (rc = cli_number(a, "--threads", cli_val(a, "threads"), 1, 16, 0, &threads)))
        return rc;
    char basebuf[4];
    const char *base = pick_base(a, edb, nedb, basebuf);
    chk_set *s = NULL;
    if ((rc = chk_init(edb, (size_t)nedb, cli_val(a, "logs"), base, NULL, &s))) return cli_fail(rc);
    if ((rc = set_expected(a, s, nedb, base))) {
        chk_term(s);
        return rc;
    }
    int json = cli_flag(a, "json");
    uint64_t t0 = om_mono_ns();
    chk_headers h;
    int hrc = chk_check_headers(s, &h);
    json_t *dbs = json_array();
    for (size_t i = 0; chk_db(s, i); i++) {
        if (!json) print_db(chk_db(s, i));
        json_array_append_new(dbs, db_json(chk_db(s, i)));
    }
    if (hrc && !json) printf("headers: %d %s: %s\n", hrc, om_err_name(hrc), om_err_detail());
    page_run pr = {.set = s, .h = &h, .bad = json_array()};
    pthread_mutex_init(&pr.mu, NULL);
    if (!hrc) {
        long ncpu = threads ? (long)threads : sysconf(_SC_NPROCESSORS_ONLN);
        check_all_pages(&pr, ncpu < 1 ? 1 : ncpu > 16 ? 16 : (int)ncpu);
    }
    uint64_t checked, total;
    chk_page_totals(s, &checked, &total);
    double secs = (double)(om_mono_ns() - t0) / 1e9;
    if (!json && !hrc && h.ndb) {
        for (size_t i = 0; i < json_array_size(pr.bad); i++) {
            json_t *b = json_array_get(pr.bad, i);
            printf("  %s: page %d: %d %s\n", json_string_value(json_object_get(b, "file")),
                   (int)json_integer_value(json_object_get(b, "page")),
                   (int)json_integer_value(json_object_get(b, "error")),
                   json_string_value(json_object_get(b, "error_name")));
        }
        printf("pages: %llu of %llu checked (%llu never written), %zu bad, %.0f MB/s\n",
               (unsigned long long)checked, (unsigned long long)total,
               (unsigned long long)pr.uninit, pr.nbad,
               secs > 0 ? (double)checked * ENG_PAGE_SIZE / 1e6 / secs : 0.0);
    }
    if (pr.io.code && !json)
        printf("pages: %d %s: %s\n", pr.io.code, om_err_name(pr.io.code), pr.io.detail);
    log_run lr = {.problems = json_array(), .json = json};
    chk_logs lg = {0};
    if (cli_val(a, "logs")) {
        if (!json) printf("logs in %s (%s):\n", cli_val(a, "logs"), base ? base : "?");
        chk_check_logs(s, on_log, &lr, &lg);
        if (!json && lg.checked)
            printf("logs: generations %u-%u present (%u files read), %s%u-%u needed\n", lg.lowest,
                   lg.highest, lg.checked, lg.need_min ? "" : "none ", lg.need_min, lg.need_max);
    }
    om_err_saved vd; /* the verdict, past the printing */
    int verdict = om_err_save(&vd, chk_term(s));
    int out = CLI_OK;
    if (json)
        out = report_json(dbs, checked, total, &pr, &lg, &lr, verdict, vd.detail);
    else {
        json_decref(dbs);
        if (!verdict) printf("check-set: ok: the set can be recovered\n");
    }
    json_decref(pr.bad);
    json_decref(lr.problems);
    json_decref(lr.checkpoint);
    pthread_mutex_destroy(&pr.mu);
    if (verdict) return cli_fail(om_err_restore(&vd));
    return out;
}
