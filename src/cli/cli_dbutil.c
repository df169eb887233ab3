/* ombra dbutil: Ombra's Eseutil. Reads database, checkpoint and log files directly (no daemon),
 * reports every header field, verifies checksums, and runs soft recovery of a dismounted
 * database. Errors carry ESE's numbers (-1018 ReadVerifyFailure, -530 BadLogSignature...). */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/pool.h"
#include "base/progress.h"
#include "base/time.h"
#include "base/vfs.h"
#include "check/check.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "engine/format.h"
#include "engine/log.h"

/* ---- shared printing ---- */

/* cli_print_json borrows; these objects are built here. */
static int print_owned(json_t *o)
{
    int rc = cli_print_json(o);
    json_decref(o);
    return rc;
}

static const char *sig_str(const eng_sig *s, char *buf, size_t n)
{
    char t[40];
    snprintf(buf, n, "%016llx, created %s", (unsigned long long)s->random,
             om_time_str(s->time, t, sizeof t));
    return buf;
}

static json_t *sig_json(const eng_sig *s)
{
    char r[20], t[40];
    snprintf(r, sizeof r, "%016llx", (unsigned long long)s->random);
    return json_pack("{s:s, s:s}", "random", r, "created", om_time_iso(s->time, t, sizeof t));
}

static json_t *pos_json(eng_lgpos p)
{
    return json_pack("[i,i]", p.gen, p.off);
}

static json_t *slot_json(const eng_bkslot *b)
{
    char t[40];
    if (b->mark_time == 0) return json_null();
    return json_pack("{s:i, s:i, s:o, s:s}", "first_gen", b->first_gen, "last_gen", b->last_gen,
                     "mark", pos_json(b->mark), "time", om_time_iso(b->mark_time, t, sizeof t));
}

/* ---- header ---- */

static int cmd_header(const cli_args *a)
{
    eng_dbhdr h;
    int bad = -1;
    int rc = eng_dbhdr_read(om_vfs_posix(), a->pos[0], &h, 0, &bad);
    if (rc) return cli_fail(rc);
    char id[37], t[40], s1[80];
    om_uuid_str(&h.db_id, id);
    if (cli_flag(a, "json")) {
        json_t *bk = json_object();
        for (int i = ENG_BK_PREV_FULL; i <= ENG_BK_PREV_DIFFERENTIAL; i++)
            json_object_set_new(bk, eng_bkslot_name(i), slot_json(&h.slots[i]));
        json_t *o = json_pack(
            "{s:s, s:s, s:i, s:i, s:s, s:I, s:i, s:[i,i], s:i, s:o, s:s, s:o, s:o, s:o, s:o, s:s, "
            "s:b, s:o, s:i}",
            "file", a->pos[0], "state", eng_state_name(h.state), "format_version", h.version,
            "page_size", h.page_size, "db_id", id, "dbtime", (json_int_t)h.dbtime, "pages", h.pages,
            "log_required", h.log_req_min, h.log_req_max, "log_committed", h.log_committed,
            "log_consistent", pos_json(h.consistent), "log_consistent_time",
            om_time_iso(h.consistent_time, t, sizeof t), "attach", pos_json(h.attach), "detach",
            pos_json(h.detach), "db_signature", sig_json(&h.db_sig), "log_signature",
            sig_json(&h.log_sig), "base", h.base, "circular_logging",
            (h.flags & ENG_DBF_CIRCULAR) != 0, "backups", bk, "damaged_header_copy", bad);
        return print_owned(o);
    }
    printf("database:           %s\n", a->pos[0]);
    printf("state:              %s\n", eng_state_name(h.state));
    printf("format version:     %u\n", h.version);
    printf("page size:          %u\n", h.page_size);
    printf("db id:              %s\n", id);
    printf("db signature:       %s\n", sig_str(&h.db_sig, s1, sizeof s1));
    printf("log signature:      %s\n", sig_str(&h.log_sig, s1, sizeof s1));
    printf("dbtime:             %llu\n", (unsigned long long)h.dbtime);
    printf("pages:              %u\n", h.pages);
    printf("log base name:      %s\n", h.base);
    printf("circular logging:   %s\n", h.flags & ENG_DBF_CIRCULAR ? "on" : "off");
    printf("log required:       %u-%u\n", h.log_req_min, h.log_req_max);
    printf("log committed:      %u\n", h.log_committed);
    printf("log consistent:     (%u, %u) at %s\n", h.consistent.gen, h.consistent.off,
           om_time_str(h.consistent_time, t, sizeof t));
    printf("last attach:        (%u, %u) at %s\n", h.attach.gen, h.attach.off,
           om_time_str(h.attach_time, t, sizeof t));
    printf("last detach:        (%u, %u) at %s\n", h.detach.gen, h.detach.off,
           om_time_str(h.detach_time, t, sizeof t));
    static const char *labels[] = {"previous full", "previous incremental",
                                   "previous copy", "previous differential",
                                   "current full",  "current snapshot"};
    for (int i = 0; i < ENG_BK_NSLOTS; i++) {
        const eng_bkslot *b = &h.slots[i];
        if (b->mark_time == 0)
            printf("%-20s never\n", labels[i]);
        else
            printf("%-20s generations %u-%u, mark (%u, %u) at %s\n", labels[i], b->first_gen,
                   b->last_gen, b->mark.gen, b->mark.off, om_time_str(b->mark_time, t, sizeof t));
    }
    if (bad >= 0)
        printf("note: header copy %d is damaged (the other is good; mounting repairs it)\n", bad);
    return CLI_OK;
}

/* ---- checkpoint ---- */

static int cmd_checkpoint(const cli_args *a)
{
    eng_chkfile c;
    int bad = 0;
    int rc = eng_chk_read(om_vfs_posix(), a->pos[0], &c, &bad);
    if (rc) return cli_fail(rc);
    char t[40], s1[80];
    if (cli_flag(a, "json"))
        return print_owned(json_pack(
            "{s:s, s:o, s:o, s:o, s:s, s:o, s:o, s:s, s:i}", "file", a->pos[0], "checkpoint",
            pos_json(c.checkpoint), "log_signature", sig_json(&c.log_sig), "db_signature",
            sig_json(&c.db_sig), "written", om_time_iso(c.time, t, sizeof t), "last_full_backup",
            pos_json(c.last_full), "last_incremental_backup", pos_json(c.last_incremental), "base",
            c.base, "damaged_copies", bad));
    printf("checkpoint file:    %s\n", a->pos[0]);
    printf("checkpoint:         (%u, %u)\n", c.checkpoint.gen, c.checkpoint.off);
    printf("log signature:      %s\n", sig_str(&c.log_sig, s1, sizeof s1));
    printf("db signature:       %s\n", sig_str(&c.db_sig, s1, sizeof s1));
    printf("written:            %s\n", om_time_str(c.time, t, sizeof t));
    printf("last full backup:   (%u, %u)\n", c.last_full.gen, c.last_full.off);
    printf("last incremental:   (%u, %u)\n", c.last_incremental.gen, c.last_incremental.off);
    printf("log base name:      %s\n", c.base);
    if (bad) printf("note: %d of the 2 copies is damaged (the other is good)\n", bad);
    return CLI_OK;
}

/* ---- logs ---- */

typedef struct logs_run {
    int json, problems, first_err;
    char first_detail[1024];
    json_t *arr, *missing;
} logs_run;

static void logs_problem(logs_run *r, int err)
{
    if (!r->problems++) {
        r->first_err = err;
        snprintf(r->first_detail, sizeof r->first_detail, "%s", om_err_detail());
    }
}

/* One row: a file and what the log chain said of it (err 0: continues the stream). */
static void logs_row(logs_run *r, const char *path, const eng_genread *g, int have_hdr, int err,
                     eng_chain_cause why)
{
    const char *fname = strrchr(path, '/') + 1;
    char status[512] = "ok", t[40];
    if (err && why == ENG_CHAIN_DAMAGED)
        snprintf(status, sizeof status, "%d %s: slot %u damaged", err, om_err_name(err),
                 g->damaged_slot);
    else if (err && why != ENG_CHAIN_OK)
        snprintf(status, sizeof status, "%d %s: %s", err, om_err_name(err),
                 eng_chain_cause_name(why));
    else if (err)
        snprintf(status, sizeof status, "%d %s: %s", err, om_err_name(err), om_err_detail());
    else if (g->torn_slot)
        snprintf(status, sizeof status, "ok (ends with a flush torn by a crash at slot %u)",
                 g->torn_slot);
    uint32_t gen = have_hdr ? g->hdr.gen : 0;
    int whole = !err || why == ENG_CHAIN_DAMAGED; /* the stream was read */
    if (r->json)
        json_array_append_new(r->arr, json_pack("{s:s, s:i, s:s, s:i, s:i, s:i, s:b, s:s, s:s}",
                                                "file", fname, "generation", gen, "created",
                                                gen ? om_time_iso(g->hdr.created, t, sizeof t) : "",
                                                "stream_bytes", whole ? g->len : 0, "segments",
                                                whole ? g->segments : 0, "torn_slot",
                                                whole ? g->torn_slot : 0, "ok", err == 0, "status",
                                                status, "detail", err ? om_err_detail() : ""));
    else
        printf("%-16s %-10u %-24s %10u %8u  %s\n", fname, gen,
               gen ? om_time_str(g->hdr.created, t, sizeof t) : "-", whole ? g->len : 0,
               whole ? g->segments : 0, status);
    if (err) logs_problem(r, err);
}

/* One generation: read and judged by the engine's log chain (log.h's order of checks). */
static void logs_gen(logs_run *r, const eng_stream *st, eng_chain_want *w, uint32_t gen)
{
    char p[4200];
    eng_genread g = {0};
    eng_chain_cause why;
    eng_stream_path(st, gen, p, sizeof p);
    if (w->gen != gen) eng_chain_forget_prev(w);
    w->gen = gen;
    w->named = gen != st->cur_gen;
    int err = eng_gen_continues(st->vfs, p, w, &g, &why);
    logs_row(r, p, &g, !err || why >= ENG_CHAIN_OTHER_DB, err, why);
    if (!err || why == ENG_CHAIN_PREV_CUT)
        eng_chain_follow(w, p, &g);
    else
        eng_chain_forget_prev(w);
    eng_gen_free(&g);
}

static int cmd_logs(const cli_args *a)
{
    const char *base = cli_val(a, "base") ? cli_val(a, "base") : "E00";
    if (!eng_base_valid(base))
        return cli_usage(a, "--base '%s' must be three letters or digits", base);
    om_vfs *v = om_vfs_posix();
    int ex = v->exists(v, a->pos[0]);
    if (ex == 0) {
        om_errf(OM_E_FileNotFound, "log folder %s does not exist", a->pos[0]);
        return cli_fail(OM_E_FileNotFound);
    }
    eng_stream st;
    int rc = ex < 0 ? ex : eng_stream_scan(v, a->pos[0], base, &st);
    if (rc) return cli_fail(rc);
    logs_run r = {.json = cli_flag(a, "json"), .arr = json_array(), .missing = json_array()};
    eng_chain_want w;
    eng_chain_of_stream(&w, &st); /* the newest generation's database and stream */
    if (!r.json)
        printf("%-16s %-10s %-24s %10s %8s  %s\n", "file", "generation", "created", "bytes",
               "segments", "status");
    uint32_t prev = 0;
    for (uint32_t i = 0; i < st.n + (st.cur_gen != 0); i++) {
        uint32_t gen = i < st.n ? st.gens[i] : st.cur_gen;
        if (prev && gen > prev + 1) { /* a gap between two present ones */
            uint32_t lo = prev + 1, hi = gen - 1;
            if (hi > lo)
                om_errf(OM_E_MissingLogFile, "%s: log generations %u-%u missing", a->pos[0], lo,
                        hi);
            else
                om_errf(OM_E_MissingLogFile, "%s: log generation %u missing", a->pos[0], lo);
            logs_problem(&r, OM_E_MissingLogFile);
            if (r.json)
                json_array_append_new(r.missing, json_pack("[i,i]", lo, hi));
            else
                printf("%-16s %u-%u: -528 MissingLogFile\n", "(missing)", lo, hi);
        }
        logs_gen(&r, &st, &w, gen);
        prev = gen;
    }
    if (st.cur_present && !st.cur_gen) { /* the lister's verdict: unreadable, or a duplicate */
        char cur[4200];
        eng_genread g = {0};
        eng_cur_log_path(cur, sizeof cur, st.dir, st.base);
        om_errf(st.cur_err, "%s", st.cur_detail);
        logs_row(&r, cur, &g, 0, st.cur_err, ENG_CHAIN_OK);
    }
    size_t nfiles = st.n + (st.cur_present ? 1 : 0);
    eng_stream_free(&st);
    if (r.json) {
        int prc = print_owned(json_pack("{s:s, s:s, s:o, s:o, s:i}", "folder", a->pos[0], "base",
                                        base, "generations", r.arr, "missing", r.missing,
                                        "problems", r.problems));
        if (prc) return prc;
    } else {
        json_decref(r.arr);
        json_decref(r.missing);
        printf("%zu log files, %d problem%s\n", nfiles, r.problems, r.problems == 1 ? "" : "s");
    }
    if (r.problems) {
        /* The first problem is the error, as recovery and check-set would name it. */
        om_errf(r.first_err, "%s (%d problem%s in the %s logs)", r.first_detail, r.problems,
                r.problems == 1 ? "" : "s", base);
        return cli_fail(r.first_err);
    }
    return CLI_OK;
}

/* ---- checksum ---- */

typedef struct sum_job {
    int fd;
    uint32_t from, to; /* data pages [from, to) */
    uint32_t *bad, nbad, cap;
    uint32_t uninit;
    int err;
} sum_job;

/* One range of pages: an index of the pool (base/pool.h). A range's failure is kept in its job and
 * reported with the file, after the other ranges' bad pages: the pool is not stopped for it. */
static int sum_pages(void *ctx, void *ws, size_t range)
{
    sum_job *j = (sum_job *)ctx + range;
    const uint32_t batch = 32;
    uint8_t *buf = malloc((size_t)batch * ENG_PAGE_SIZE);
    if (!buf) {
        j->err = OM_E_OutOfMemory;
        return 0;
    }
    for (uint32_t p = j->from; p < j->to; p += batch) {
        uint32_t k = j->to - p < batch ? j->to - p : batch;
        ssize_t r = pread(j->fd, buf, (size_t)k * ENG_PAGE_SIZE, (off_t)eng_page_offset(p));
        if (r < (ssize_t)((size_t)k * ENG_PAGE_SIZE)) {
            j->err = OM_E_DiskIO;
            break;
        }
        for (uint32_t i = 0; i < k; i++) {
            enum eng_page_status st = eng_page_check(buf + (size_t)i * ENG_PAGE_SIZE, p + i, NULL);
            if (st == ENG_PAGE_ZERO)
                j->uninit++;
            else if (st != ENG_PAGE_OK) {
                if (j->nbad == j->cap) {
                    j->cap = j->cap ? j->cap * 2 : 64;
                    uint32_t *nb = realloc(j->bad, j->cap * sizeof *nb);
                    if (!nb) {
                        j->err = OM_E_OutOfMemory;
                        break;
                    }
                    j->bad = nb;
                }
                j->bad[j->nbad++] = p + i;
            }
        }
    }
    free(buf);
    return 0;
}

/* --json of checksum: {"files": [one per file checked], "problems"}. A file's error is
 * {"code", "name", "message"} (docs/cli.md's names), or null. */
static json_t *err_json(int rc)
{
    return json_pack("{s:i,s:s,s:s}", "code", rc, "name", om_err_name(rc), "message",
                     om_err_detail());
}

/* arr: --json's "files" (nothing printed), else NULL (lines printed). A database's entry:
 * {"file", "kind": "database", "ok", "error", "header_copy_damaged": 0, 1 or null,
 * "pages_checked", "pages_never_written", "bad_pages": [page numbers], "threads"}. */
static int checksum_edb(const char *path, int *problems, int threads, json_t *arr)
{
    eng_dbhdr h;
    int bad = -1;
    int rc = eng_dbhdr_read(om_vfs_posix(), path, &h, 0, &bad);
    if (rc) {
        if (arr)
            json_array_append_new(arr, json_pack("{s:s,s:s,s:b,s:o}", "file", path, "kind",
                                                 "database", "ok", 0, "error", err_json(rc)));
        else
            printf("%s: %d %s: %s\n", path, rc, om_err_name(rc), om_err_detail());
        (*problems)++;
        return 0;
    }
    if (bad >= 0) {
        if (!arr)
            printf("%s: header copy %d: -1018 ReadVerifyFailure (the other copy is good)\n", path,
                   bad);
        (*problems)++;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) return om_errf(OM_E_FileNotFound, "cannot open %s", path);
    uint64_t pages = (uint64_t)st.st_size / ENG_PAGE_SIZE;
    uint32_t npages = pages > 2 ? (uint32_t)(pages - 2) : 0;
    if (npages > h.pages) npages = h.pages; /* room reserved past the last page is not checked */
    long ncpu = threads > 0 ? threads : sysconf(_SC_NPROCESSORS_ONLN);
    int nt = ncpu > 1 ? (int)(ncpu > 16 ? 16 : ncpu) : 1;
    sum_job jobs[16] = {{0}};
    uint64_t t0 = om_mono_ns();
    for (int i = 0; i < nt; i++) {
        jobs[i].fd = fd;
        jobs[i].from = 1 + (uint32_t)((uint64_t)npages * i / nt);
        jobs[i].to = 1 + (uint32_t)((uint64_t)npages * (i + 1) / nt);
    }
    om_pool pool = {.workers = nt, .ctx = jobs, .fn = sum_pages};
    om_pool_run(&pool, (size_t)nt); /* sum_pages keeps each range's failure in its job */
    uint32_t nbad = 0, uninit = 0;
    json_t *badl = json_array();
    for (int i = 0; i < nt; i++) {
        if (jobs[i].err) rc = om_errf(jobs[i].err, "reading %s failed", path);
        for (uint32_t k = 0; k < jobs[i].nbad; k++)
            if (arr)
                json_array_append_new(badl, json_integer(jobs[i].bad[k]));
            else
                printf("%s: page %u: -1018 ReadVerifyFailure\n", path, jobs[i].bad[k]);
        nbad += jobs[i].nbad;
        uninit += jobs[i].uninit;
        free(jobs[i].bad);
    }
    close(fd);
    double secs = (double)(om_mono_ns() - t0) / 1e9;
    *problems += (int)nbad;
    if (arr)
        json_array_append_new(arr, json_pack("{s:s,s:s,s:b,s:n,s:o,s:i,s:i,s:o,s:i,s:f}", "file",
                                             path, "kind", "database", "ok", nbad == 0 && bad < 0,
                                             "error", "header_copy_damaged",
                                             bad >= 0 ? json_integer(bad) : json_null(),
                                             "pages_checked", npages, "pages_never_written", uninit,
                                             "bad_pages", badl, "threads", nt, "seconds", secs));
    else {
        json_decref(badl);
        printf("%s: %u pages checked (%u never written), %u bad; %.1f MB/s with %d thread%s\n",
               path, npages, uninit, nbad,
               secs > 0 ? (double)npages * ENG_PAGE_SIZE / 1e6 / secs : 0, nt, nt == 1 ? "" : "s");
    }
    return rc;
}

/* A log file's entry: {"file", "kind": "log", "ok", "error", "generation" (null when
 * unreadable), "segments", "damaged_slot" (0: none), "torn": its last flush torn by a crash}. */
static void checksum_log(const char *path, int *problems, json_t *arr)
{
    eng_genread g;
    int rc = eng_gen_read(om_vfs_posix(), path, &g);
    int known = !rc || (rc == OM_E_LogFileCorrupt && g.damaged_slot);
    if (arr)
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:b,s:o,s:o,s:i,s:i,s:b}", "file", path, "kind", "log", "ok",
                           rc == 0, "error", rc ? err_json(rc) : json_null(), "generation",
                           known ? json_integer(g.hdr.gen) : json_null(), "segments",
                           !rc ? g.segments : 0, "damaged_slot", known && rc ? g.damaged_slot : 0,
                           "torn", !rc && g.torn_slot));
    else if (rc == OM_E_LogFileCorrupt && g.damaged_slot)
        printf("%s: generation %u, slot %u: -501 LogFileCorrupt\n", path, g.hdr.gen,
               g.damaged_slot);
    else if (rc)
        printf("%s: %d %s: %s\n", path, rc, om_err_name(rc), om_err_detail());
    else
        printf("%s: generation %u, %u segments ok%s\n", path, g.hdr.gen, g.segments,
               g.torn_slot ? " (ends with a flush torn by a crash)" : "");
    if (rc) (*problems)++;
    if (!rc || rc == OM_E_LogFileCorrupt) eng_gen_free(&g);
}

static int cmd_checksum(const cli_args *a)
{
    int problems = 0, rc = 0;
    uint64_t threads = 0;
    json_t *arr = cli_flag(a, "json") ? json_array() : NULL;
    if (cli_val(a, "threads") &&
        (rc = cli_number(a, "--threads", cli_val(a, "threads"), 1, 16, 0, &threads)))
        return rc;
    for (int i = 0; i < a->npos && !rc; i++) {
        const char *p = a->pos[i];
        struct stat st;
        if (stat(p, &st) != 0) {
            json_decref(arr);
            om_errf(OM_E_FileNotFound, "%s does not exist", p);
            return cli_fail(OM_E_FileNotFound);
        }
        size_t l = strlen(p);
        if (S_ISDIR(st.st_mode)) {
            DIR *d = opendir(p);
            struct dirent *de;
            char fp[4300];
            while (d && (de = readdir(d))) {
                size_t nl = strlen(de->d_name);
                if (nl < 5 || strcmp(de->d_name + nl - 4, ".log") || strstr(de->d_name, "tmp.log"))
                    continue;
                snprintf(fp, sizeof fp, "%s/%s", p, de->d_name);
                checksum_log(fp, &problems, arr);
            }
            if (d) closedir(d);
        } else if (l > 4 && !strcmp(p + l - 4, ".log"))
            checksum_log(p, &problems, arr);
        else
            rc = checksum_edb(p, &problems, (int)threads, arr);
    }
    if (rc) {
        json_decref(arr);
        return cli_fail(rc);
    }
    if (arr) { /* the document, then (on problems) the error, with no second document */
        int prc = print_owned(json_pack("{s:o,s:i}", "files", arr, "problems", problems));
        if (prc) return prc;
    }
    if (problems) {
        om_errf(OM_E_ReadVerifyFailure, "%d checksum problem%s found", problems,
                problems == 1 ? "" : "s");
        return cli_fail(OM_E_ReadVerifyFailure);
    }
    return CLI_OK;
}

/* ---- recover ---- */

/* The database of base in dir or its parent, when --edb is not given. */
static int find_edb(const char *dir, const char *base, char *out, size_t n)
{
    const char *places[2] = {dir, NULL};
    char parent[4096];
    om_dirname(dir, parent, sizeof parent);
    places[1] = parent;
    int found = 0;
    for (int k = 0; k < 2; k++) {
        DIR *d = opendir(places[k]);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            size_t l = strlen(de->d_name);
            if (l < 5 || strcmp(de->d_name + l - 4, ".edb")) continue;
            char p[4300];
            snprintf(p, sizeof p, "%s/%s", places[k], de->d_name);
            eng_dbhdr h;
            if (eng_dbhdr_read(om_vfs_posix(), p, &h, 0, NULL) == 0 && !strcmp(h.base, base)) {
                if (found++ == 0) snprintf(out, n, "%s", p);
            }
        }
        if (d) closedir(d);
        if (found) break;
    }
    if (found == 1) return 0;
    return om_errf(
        OM_E_DatabaseNotFound,
        found ? "%s holds several databases of base %s. HINT: name one with --edb"
              : "no database of base %s found in %s or its parent. HINT: name it with --edb",
        found ? dir : base, found ? base : dir);
}

static void replay_progress(void *arg, uint32_t gen, uint32_t first, uint32_t last)
{
    om_progress *p = arg;
    if (p->total == 0) om_progress_start(p, "replaying", last - first + 1, "generations");
    om_progress_update(p, gen - first + 1);
}

static int cmd_recover(const cli_args *a)
{
    const char *base = cli_val(a, "base") ? cli_val(a, "base") : "E00";
    if (!eng_base_valid(base))
        return cli_usage(a, "--base '%s' must be three letters or digits", base);
    int json = cli_flag(a, "json");
    int restored = 0, out = cli_dbutil_hard_recover(a->pos[0], json, &restored);
    if (restored) return out;
    char edb[4300];
    int rc = 0;
    if (cli_val(a, "edb"))
        snprintf(edb, sizeof edb, "%s", cli_val(a, "edb"));
    else if ((rc = find_edb(a->pos[0], base, edb, sizeof edb)))
        return cli_fail(rc);
    eng_dbhdr h;
    int bad = -1;
    if ((rc = eng_dbhdr_read(om_vfs_posix(), edb, &h, 0, &bad))) return cli_fail(rc);
    om_progress pg = {0};
    eng_opts o = {.edb_path = edb,
                  .log_dir = a->pos[0],
                  .base = base,
                  .circular_logging = !!(h.flags & ENG_DBF_CIRCULAR),
                  .replay_progress = replay_progress,
                  .progress_arg = &pg};
    eng_stats st;
    /* Recovery of a database in Clean Shutdown replays nothing; it still repairs a damaged
     * header copy from the good one. */
    rc = eng_db_recover(&o, &st);
    if (pg.total) om_progress_end(&pg);
    if (rc) return cli_fail(rc);
    double secs = (double)st.replay_ns / 1e9;
    if (json) { /* recovery "none": it was in Clean Shutdown, nothing replayed */
        int clean = h.state == ENG_STATE_CLEAN;
        return print_owned(json_pack("{s:s,s:s,s:s,s:s,s:o,s:I,s:I,s:I,s:f,s:s}", "recovery",
                                     clean ? "none" : "soft", "file", edb, "logs", a->pos[0],
                                     "base", base, "header_copy_rewritten",
                                     bad >= 0 ? json_integer(bad) : json_null(), "records",
                                     (json_int_t)(clean ? 0 : st.replay_records), "replayed_bytes",
                                     (json_int_t)(clean ? 0 : st.replay_bytes), "transactions",
                                     (json_int_t)(clean ? 0 : st.replay_groups), "seconds",
                                     clean ? 0.0 : secs, "state", "Clean Shutdown"));
    }
    if (bad >= 0) printf("%s: header copy %d was damaged: rewritten from the other\n", edb, bad);
    if (h.state == ENG_STATE_CLEAN) {
        printf("%s is in Clean Shutdown: nothing to recover\n", edb);
        return CLI_OK;
    }
    printf("%s recovered: %llu log records (%.1f MB) replayed in %.2f s, %llu transactions; now "
           "Clean Shutdown\n",
           edb, (unsigned long long)st.replay_records, (double)st.replay_bytes / 1e6, secs,
           (unsigned long long)st.replay_groups);
    return CLI_OK;
}

/* ---- the group ---- */

static const cli_opt json_only[] = {{"json", NULL, "print JSON", 0}, {0}};
static const cli_opt logs_opts[] = {
    {"base", "E00", "log base name (default E00)", 0}, {"json", NULL, "print JSON", 0}, {0}};
static const cli_opt recover_opts[] = {
    {"base", "E00", "log base name (default E00)", 0},
    {"edb", "FILE", "the database (default: the one of that base in DIR or its parent)", 0},
    {"json", NULL,
     "print JSON: {\"recovery\": \"soft\", \"hard\" or \"none\", \"file\", \"logs\", \"records\", "
     "\"transactions\", \"seconds\", \"state\", ...}",
     0},
    {0}};
static const cli_opt checksum_opts[] = {
    {"threads", "N", "threads checking database pages (default: all cores)", 0},
    {"json", NULL,
     "print JSON: {\"files\": [{\"file\", \"kind\", \"ok\", \"error\", ...}], \"problems\"}", 0},
    {0}};

static const cli_opt check_set_opts[] = {
    {"edb", "FILE...", "the database files (none: a log-only set)", 0},
    {"logs", "DIR", "the folder of their logs and checkpoint", 0},
    {"base", "E00", "log base name (default: the first database's)", 0},
    {"first-gen", "N", "the set's first log generation (with --last-gen): it must be there", 0},
    {"last-gen", "N", "the set's last log generation", 0},
    {"threads", "N", "threads checking pages (default: all cores)", 0},
    {"json", NULL, "print JSON", 0},
    {0}};

static const cli_opt digest_opts[] = {
    {"logs", "DIR", "its log folder", 1},
    {"base", "E00", "the log base name (default E00)", 0},
    {"json", NULL, "print JSON: {\"file\", \"logs\", \"base\", \"digest\"}", 0},
    {0},
};

static const cli_cmd dbutil_cmds[] = {
    {"header", "FILE.edb", json_only, "every field of a database header (eseutil /mh)",
     "Reads both header copies; a damaged copy is reported and the good one shown.", cmd_header},
    {"checkpoint", "FILE.chk", json_only, "the checkpoint file (eseutil /mk)", NULL,
     cmd_checkpoint},
    {"logs", "DIR", logs_opts,
     "every log generation: header, signature, chain, damage, gaps (eseutil /ml)",
     "Exits 1 when a generation is missing, damaged, of another database or stream, or out of "
     "sequence, with the first problem's error (as recovery and check-set name it).",
     cmd_logs},
    {"checksum", "PATH...", checksum_opts,
     "verify every page of databases and every segment of logs (eseutil /k)",
     "PATH is a .edb, a .log, or a log folder. Names every failing page number or log generation "
     "and slot; "
     "exits 1 on any failure. Database pages are checked by all cores.",
     cmd_checksum},
    {"recover", "DIR", recover_opts,
     "soft recovery of a dismounted database from its logs (eseutil /r)",
     "Replays the logs in DIR from the checkpoint and leaves the database in Clean Shutdown. "
     "Refuses logs of another database (-539) or stream (-530). When DIR holds a restore laid "
     "down without replay (DIR/_restoredLogs with its restore.env), runs hard recovery instead "
     "(eseutil /cc): the restored logs, then the later ones in DIR; the database mounts "
     "afterwards.",
     cmd_recover},
    {"check-set", "", check_set_opts,
     "verify databases and their logs as a backup set (CHKSGFILES)",
     "Checks the headers (page size, one log signature, the logs needed for Clean Shutdown), every "
     "page of every database on all cores, and every log generation of the base name. Fails when a "
     "page is damaged (-1018), a needed generation is missing (-528, -543), cut short (-541), "
     "damaged (-501), of another database (-539) or stream (-530), misnamed (-513) or out of "
     "sequence (-515): the same errors, in the same order, as recovery. Damage in generations "
     "older than the oldest needed one and in the "
     "checkpoint is reported and does not fail the set. Without --edb, every generation present "
     "is part of the set unless --first-gen/--last-gen say which.",
     cli_dbutil_check_set},
    {"digest", "FILE.edb", digest_opts,
     "the mail digest of a database that is not mounted (a suspended passive copy)",
     "Copies the .edb and its logs into a scratch folder (the .edb locked meanwhile: a mounted\n"
     "database or a copy being replayed is refused), mounts the copy there as a failover would\n"
     "(soft recovery), prints what `ombra mail digest` would, and removes the copy. The files\n"
     "given are never changed.",
     cli_dbutil_digest},
    {0},
};

const cli_group cli_dbutil_group = {
    "dbutil", "look inside database, checkpoint and log files; verify; recover", dbutil_cmds};
