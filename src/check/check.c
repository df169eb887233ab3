/* The check library (check.h has the contract). Pages are checked in batches of 1 MiB reads
 * with one file handle per call, so threads never share a file offset; which pages have been
 * checked is a bitmap per database set with atomic ORs, so overlapping ranges from several
 * threads count each page once. The first failure of any step is kept for chk_term. */
#include "check/check.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "engine/log.h"

enum { STAGE_INIT, STAGE_HEADERS, STAGE_LOGS };

struct chk_set {
    om_vfs *vfs;
    size_t ndb;
    char **edb;
    chk_db_info *db;
    uint8_t **seen; /* per database: bit p set when data page p has been checked */
    char *log_dir;
    char base[4];
    int stage;
    uint32_t exp_first, exp_last; /* chk_expect_logs; 0, 0: none */
    chk_headers hdrs;
    chk_logs logs;
    pthread_mutex_t mu;
    int first_err;
    char first_detail[1024];
    char logs_detail[1024]; /* the log check's first failure */
};

#define PAGE_BATCH 32u

/* Keeps the first failure (its detail too) for chk_term and returns rc. */
static int remember(chk_set *s, int rc)
{
    if (!rc) return 0;
    pthread_mutex_lock(&s->mu);
    if (!s->first_err) {
        s->first_err = rc;
        snprintf(s->first_detail, sizeof s->first_detail, "%s", om_err_detail());
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int chk_init(const char *const *edb, size_t nedb, const char *log_dir, const char *base,
             om_vfs *vfs, chk_set **out)
{
    *out = NULL;
    if (nedb == 0 && !log_dir)
        return om_errf(OM_E_InvalidParameter,
                       "nothing to check: no database file and no log folder given");
    if (log_dir && !base)
        return om_errf(OM_E_InvalidParameter, "log folder %s given without a log base name",
                       log_dir);
    if (base && !eng_base_valid(base))
        return om_errf(OM_E_InvalidParameter,
                       "log base name '%s' is not a letter and two letters or hex digits", base);
    chk_set *s = calloc(1, sizeof *s);
    if (!s) return om_errf(OM_E_OutOfMemory, "check: out of memory");
    s->vfs = vfs ? vfs : om_vfs_posix();
    s->ndb = nedb;
    pthread_mutex_init(&s->mu, NULL);
    s->edb = calloc(nedb + 1, sizeof *s->edb);
    s->db = calloc(nedb + 1, sizeof *s->db);
    s->seen = calloc(nedb + 1, sizeof *s->seen);
    int oom = !s->edb || !s->db || !s->seen;
    for (size_t i = 0; i < nedb && !oom; i++) {
        s->edb[i] = strdup(edb[i]);
        s->db[i].path = s->edb[i];
        s->db[i].damaged_header_copy = -1;
        oom = !s->edb[i];
    }
    if (log_dir && !oom) {
        s->log_dir = strdup(log_dir);
        oom = !s->log_dir;
    }
    if (base) snprintf(s->base, sizeof s->base, "%s", base);
    if (oom) {
        chk_term(s);
        return om_errf(OM_E_OutOfMemory, "check: out of memory");
    }
    *out = s;
    return 0;
}

int chk_expect_logs(chk_set *s, uint32_t first, uint32_t last)
{
    if (!s->log_dir)
        return remember(s, om_errf(OM_E_InvalidParameter,
                                   "log generations %u-%u expected, but no log folder was given",
                                   first, last));
    if (first == 0 || last < first)
        return remember(
            s, om_errf(OM_E_InvalidParameter, "expected log range %u-%u is empty", first, last));
    s->exp_first = first;
    s->exp_last = last;
    return 0;
}

/* ---- headers ---- */

static int check_one_header(chk_set *s, size_t i)
{
    chk_db_info *d = &s->db[i];
    eng_dbhdr h;
    int rc = eng_dbhdr_read(s->vfs, d->path, &h, 0, &d->damaged_header_copy);
    if (rc) return rc;
    d->state = h.state;
    d->pages = h.pages;
    d->log_req_min = h.log_req_min;
    d->log_req_max = h.log_req_max;
    d->log_committed = h.log_committed;
    d->dbtime = h.dbtime;
    d->db_sig = h.db_sig;
    d->log_sig = h.log_sig;
    memcpy(d->base, h.base, sizeof d->base);
    om_file *f = NULL;
    uint64_t size = 0;
    rc = om_open(s->vfs, d->path, OM_O_RDONLY, &f);
    if (!rc) rc = om_fsize(f, &size);
    om_close(f);
    if (rc) return om_err_ctx(rc, "%s", d->path);
    uint64_t need = ((uint64_t)h.pages + 2) * ENG_PAGE_SIZE;
    if (size < need)
        return om_errf(OM_E_FileIOBeyondEOF,
                       "%s is %llu bytes, but its header counts %u pages after the 2 header pages "
                       "(%llu bytes): the file was cut short",
                       d->path, (unsigned long long)size, h.pages, (unsigned long long)need);
    if (s->log_dir && strcmp(h.base, s->base))
        return om_errf(OM_E_DatabaseLogSetMismatch, "%s logs with base name %s, not %s", d->path,
                       h.base, s->base);
    s->seen[i] = calloc((size_t)h.pages / 8 + 1, 1);
    if (!s->seen[i]) return om_errf(OM_E_OutOfMemory, "check: out of memory");
    return 0;
}

int chk_check_headers(chk_set *s, chk_headers *out)
{
    memset(out, 0, sizeof *out);
    if (s->stage != STAGE_INIT)
        return remember(s, om_errf(OM_E_InvalidBackupSequence, "headers already checked"));
    s->stage = STAGE_HEADERS;
    chk_headers *hd = &s->hdrs;
    hd->ndb = s->ndb;
    hd->page_size = ENG_PAGE_SIZE;
    hd->header_pages = 2;
    for (size_t i = 0; i < s->ndb; i++) {
        int rc = check_one_header(s, i);
        if (rc) return remember(s, rc);
        const chk_db_info *d = &s->db[i];
        if (i > 0 && !eng_sig_eq(&d->log_sig, &hd->log_sig))
            return remember(s, om_errf(OM_E_DatabaseLogSetMismatch,
                                       "%s uses another log stream than %s (log signatures differ)",
                                       d->path, s->db[0].path));
        hd->log_sig = d->log_sig;
        if (d->state == ENG_STATE_CLEAN || d->log_req_min == 0) continue;
        if (!hd->need_min || d->log_req_min < hd->need_min) hd->need_min = d->log_req_min;
        if (d->log_req_max > hd->need_max) hd->need_max = d->log_req_max;
    }
    *out = *hd;
    return 0;
}

const chk_db_info *chk_db(const chk_set *s, size_t i)
{
    return i < s->ndb && s->stage >= STAGE_HEADERS ? &s->db[i] : NULL;
}

/* ---- pages ---- */

static int check_page(chk_set *s, size_t db, const uint8_t *page, uint32_t pgno, chk_page_report *r)
{
    eng_pghdr ph;
    eng_pghdr_get(page, &ph);
    memset(r, 0, sizeof *r);
    r->db = db;
    r->pgno = pgno;
    r->expected = ph.checksum;
    r->dbtime = ph.dbtime;
    enum eng_page_status st = eng_page_check(page, pgno, &r->actual);
    const chk_db_info *d = &s->db[db];
    switch (st) {
    case ENG_PAGE_ZERO:
        return 0;
    case ENG_PAGE_BAD_CHECKSUM:
        r->initialised = 1;
        return r->err = om_errf(OM_E_ReadVerifyFailure,
                                "%s: page %u: checksum mismatch (stored %016llx, computed %016llx)",
                                d->path, pgno, (unsigned long long)r->expected,
                                (unsigned long long)r->actual);
    case ENG_PAGE_WRONG_PGNO:
        r->initialised = 1;
        return r->err = om_errf(OM_E_ReadPgnoVerifyFailure, "%s: page %u holds page %u", d->path,
                                pgno, ph.pgno);
    case ENG_PAGE_OK:
        break;
    }
    r->initialised = 1;
    if (d->state == ENG_STATE_CLEAN && ph.dbtime > d->dbtime)
        return r->err = om_errf(OM_E_DbTimeTooNew,
                                "%s: page %u has dbtime %llu, newer than the header's %llu in a "
                                "database in Clean Shutdown",
                                d->path, pgno, (unsigned long long)ph.dbtime,
                                (unsigned long long)d->dbtime);
    return 0;
}

static void mark_seen(uint8_t *bits, uint32_t pgno)
{
    __atomic_fetch_or(&bits[pgno / 8], (uint8_t)(1u << (pgno % 8)), __ATOMIC_RELAXED);
}

/* The range [first, first + count) of database db may be checked now. */
static int range_ok(chk_set *s, size_t db, uint32_t first, uint32_t count)
{
    if (s->stage != STAGE_HEADERS)
        return remember(s, om_errf(OM_E_InvalidBackupSequence,
                                   "pages are checked after the headers and before the logs"));
    if (db >= s->ndb)
        return om_errf(OM_E_InvalidParameter, "no database %zu in this check (it has %zu)", db,
                       s->ndb);
    const chk_db_info *d = &s->db[db];
    if (!s->seen[db])
        return om_errf(OM_E_InvalidBackupSequence, "%s: its header did not pass the check",
                       d->path);
    if (first == 0 || first > d->pages + 1 || count > d->pages + 1 - first)
        return om_errf(OM_E_InvalidParameter, "%s: pages %u..%u are outside 1..%u", d->path, first,
                       first + count - 1, d->pages);
    return 0;
}

/* Checks k pages in memory; keeps the first page error (and its detail) in *err. */
static void check_buf(chk_set *s, size_t db, uint32_t first, const uint8_t *buf, uint32_t k,
                      chk_page_cb cb, void *arg, int *err, char *detail, size_t dn)
{
    for (uint32_t i = 0; i < k; i++) {
        chk_page_report r;
        int e = check_page(s, db, buf + (size_t)i * ENG_PAGE_SIZE, first + i, &r);
        if (e && !*err) {
            *err = e;
            snprintf(detail, dn, "%s", om_err_detail());
        }
        mark_seen(s->seen[db], first + i);
        if (cb) cb(arg, &r);
    }
}

int chk_check_pages(chk_set *s, size_t db, uint32_t first, uint32_t count, chk_page_cb cb,
                    void *arg)
{
    int rc = range_ok(s, db, first, count);
    if (rc) return rc;
    const chk_db_info *d = &s->db[db];
    uint8_t *buf = malloc((size_t)PAGE_BATCH * ENG_PAGE_SIZE);
    om_file *f = NULL;
    rc = buf ? om_open(s->vfs, d->path, OM_O_RDONLY, &f)
             : om_errf(OM_E_OutOfMemory, "check: out of memory");
    int page_err = 0;
    char page_detail[512] = "";
    for (uint32_t p = first; !rc && p < first + count; p += PAGE_BATCH) {
        uint32_t k = first + count - p < PAGE_BATCH ? first + count - p : PAGE_BATCH;
        rc = om_pread_full(f, buf, (size_t)k * ENG_PAGE_SIZE, eng_page_offset(p));
        if (rc) {
            rc = om_err_ctx(rc, "%s: reading pages %u..%u", d->path, p, p + k - 1);
            break;
        }
        check_buf(s, db, p, buf, k, cb, arg, &page_err, page_detail, sizeof page_detail);
    }
    om_close(f);
    free(buf);
    if (!rc && page_err) rc = om_errf(page_err, "%s", page_detail);
    return remember(s, rc);
}

int chk_check_page_buf(chk_set *s, size_t db, uint32_t first, const uint8_t *pages, uint32_t count,
                       chk_page_cb cb, void *arg)
{
    int rc = range_ok(s, db, first, count);
    if (rc) return rc;
    int page_err = 0;
    char page_detail[512] = "";
    check_buf(s, db, first, pages, count, cb, arg, &page_err, page_detail, sizeof page_detail);
    if (page_err) rc = om_errf(page_err, "%s", page_detail);
    return remember(s, rc);
}

void chk_vouch_pages(chk_set *s, size_t db, uint32_t first, uint32_t count)
{
    if (db >= s->ndb || !s->seen || !s->seen[db] || !first) return;
    for (uint64_t p = first; p < (uint64_t)first + count && p <= s->db[db].pages; p++)
        mark_seen(s->seen[db], (uint32_t)p);
}

void chk_page_totals(const chk_set *s, uint64_t *checked, uint64_t *total)
{
    *checked = *total = 0;
    for (size_t i = 0; i < s->ndb && s->stage >= STAGE_HEADERS; i++) {
        *total += s->db[i].pages;
        for (uint32_t p = 1; s->seen[i] && p <= s->db[i].pages; p++)
            *checked += (__atomic_load_n(&s->seen[i][p / 8], __ATOMIC_RELAXED) >> (p % 8)) & 1;
    }
}

/* ---- log listing ---- */

static int cmp_log(const void *x, const void *y)
{
    const chk_log_file *a = x, *b = y;
    if (a->gen != b->gen) return a->gen < b->gen ? -1 : 1;
    return a->is_current - b->is_current;
}

/* The files of a scanned stream (eng_stream_scan, the engine's lister), in generation order. */
static int files_of(const eng_stream *st, chk_log_file **out, size_t *n)
{
    size_t k = st->n + (st->cur_present ? 1 : 0);
    chk_log_file *v = calloc(k ? k : 1, sizeof *v);
    if (!v) return om_errf(OM_E_OutOfMemory, "listing %s: out of memory", st->dir);
    for (uint32_t i = 0; i < st->n; i++) {
        v[i].gen = st->gens[i];
        eng_log_path(v[i].path, sizeof v[i].path, st->dir, st->base, st->gens[i]);
    }
    if (st->cur_present) {
        chk_log_file *e = &v[st->n];
        e->is_current = 1;
        e->gen = st->cur_holds ? st->cur_holds : UINT32_MAX;
        eng_cur_log_path(e->path, sizeof e->path, st->dir, st->base);
    }
    if (k) qsort(v, k, sizeof *v, cmp_log);
    *out = v;
    *n = k;
    return 0;
}

static int scan(om_vfs *vfs, const char *dir, const char *base, eng_stream *st)
{
    int ex = vfs->exists(vfs, dir);
    if (ex == 0) return om_errf(OM_E_FileNotFound, "log folder %s does not exist", dir);
    int rc = ex < 0 ? ex : eng_stream_scan(vfs, dir, base, st);
    return rc ? om_err_ctx(rc, "listing %s", dir) : 0;
}

int chk_list_logs(om_vfs *vfs, const char *dir, const char *base, chk_log_file **out, size_t *n)
{
    eng_stream st;
    *out = NULL;
    *n = 0;
    int rc = scan(vfs ? vfs : om_vfs_posix(), dir, base, &st);
    if (rc) return rc;
    rc = files_of(&st, out, n);
    eng_stream_free(&st);
    return rc;
}

/* ---- logs ---- */

typedef struct log_walk {
    chk_set *s;
    chk_log_cb cb;
    void *arg;
    const eng_stream *st;
    eng_chain_want want; /* the stream, and the generation after the last good one read */
} log_walk;

static void report(log_walk *w, const chk_log_file *lf, uint32_t gen, int needed, int err,
                   uint16_t slot)
{
    if (!w->cb) return;
    chk_log_report r = {.file = lf ? lf->path : "",
                        .gen = gen,
                        .needed = needed,
                        .err = err,
                        .detail = err ? om_err_detail() : "",
                        .slot = slot};
    w->cb(w->arg, &r);
}

/* Reads one generation and asks the engine whether it continues the chain (log.h's order). */
static int check_gen(log_walk *w, const chk_log_file *lf, uint16_t *slot)
{
    *slot = 0;
    if (lf->is_current && w->st->cur_err) /* the lister's verdict: unreadable, or a duplicate */
        return om_errf(w->st->cur_err, "%s", w->st->cur_detail);
    eng_genread g = {0};
    eng_chain_cause why;
    if (!w->want.have_prev || w->want.gen != lf->gen) eng_chain_forget_prev(&w->want);
    w->want.gen = lf->gen;
    w->want.named = !lf->is_current;
    int rc = eng_gen_continues(w->s->vfs, lf->path, &w->want, &g, &why);
    if (why == ENG_CHAIN_DAMAGED) *slot = g.damaged_slot;
    if (!rc || why == ENG_CHAIN_PREV_CUT) /* (that names the generation before this one) */
        eng_chain_follow(&w->want, lf->path, &g);
    else /* the chain is judged again from the next good one */
        eng_chain_forget_prev(&w->want);
    eng_gen_free(&g);
    return rc;
}

/* The log check's failure: kept for chk_term and for chk_check_logs's own return. */
static int fail_logs(chk_set *s, int rc)
{
    snprintf(s->logs_detail, sizeof s->logs_detail, "%s", om_err_detail());
    return remember(s, rc);
}

/* The needed range from the headers, the expected range and the newest generation present. */
static void needed_range(chk_set *s, const chk_log_file *v, size_t n, uint32_t *lo, uint32_t *hi)
{
    uint32_t newest = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].gen != UINT32_MAX && v[i].gen > newest) newest = v[i].gen;
    *lo = s->hdrs.need_min;
    if (s->exp_first && (!*lo || s->exp_first < *lo)) *lo = s->exp_first;
    *hi = 0;
    if (!*lo) return;
    *hi = newest > s->hdrs.need_max ? newest : s->hdrs.need_max;
    if (s->exp_last > *hi) *hi = s->exp_last;
}

/* A gap inside the needed range (-528), or needed generations absent from its start: those
 * recovery starts with, -543 as recovery says. */
static int missing(chk_set *s, uint32_t from, uint32_t to, uint32_t lowest_needed)
{
    char range[32];
    if (to > from)
        snprintf(range, sizeof range, "s %u-%u", from, to);
    else
        snprintf(range, sizeof range, " %u", from);
    if (from == lowest_needed)
        return remember(s, om_errf(OM_E_RequiredLogFilesMissing,
                                   "%s: log generation%s missing: recovery needs generation %u "
                                   "first",
                                   s->log_dir, range, lowest_needed));
    return remember(s,
                    om_errf(OM_E_MissingLogFile, "%s: log generation%s missing from the sequence",
                            s->log_dir, range));
}

static void check_checkpoint(log_walk *w)
{
    chk_set *s = w->s;
    char p[4200];
    eng_chkfile c;
    eng_chk_path(p, sizeof p, s->log_dir, s->base);
    int bad = 0, rc = eng_chk_read(s->vfs, p, &c, &bad);
    if (!rc && w->want.check_stream && !eng_sig_eq(&c.log_sig, &w->want.log_sig))
        rc = om_errf(OM_E_BadCheckpointSignature, "%s belongs to another log stream", p);
    if (!rc && bad) om_errf(0, "%s: %d of its 2 copies is damaged; the other is good", p, bad);
    if (rc) {
        char d[900];
        snprintf(d, sizeof d, "%s", om_err_detail());
        om_errf(rc, "%s (not needed: recovery starts from the header's Log Required instead)", d);
        s->logs.checkpoint_bad = 1;
    }
    if (w->cb) {
        chk_log_report r = {
            .file = p, .is_checkpoint = 1, .err = rc, .detail = rc || bad ? om_err_detail() : ""};
        w->cb(w->arg, &r);
    }
}

/* The stream is what the databases say, or for a log-only set what its newest readable
 * generation says (eng_chain_of_stream). A folder whose newest generation is already of another
 * database or stream than the databases' (their logs from before a restore, another database's
 * folder) is one failure, not one per generation. */
static int stream_signature(log_walk *w, const chk_log_file *v, size_t n)
{
    chk_set *s = w->s;
    if (!s->ndb) {
        eng_chain_of_stream(&w->want, w->st);
        return 0;
    }
    eng_dbhdr dh = {.db_sig = s->db[0].db_sig, .log_sig = s->hdrs.log_sig};
    eng_chain_of_db(&w->want, &dh, s->db[0].path, 0);
    eng_loghdr h;
    size_t i = n;
    while (i-- > 0)
        if (v[i].gen != UINT32_MAX && eng_loghdr_read(s->vfs, v[i].path, &h) == 0) break;
    om_err_clear();
    if (i >= n) return 0;
    eng_chain_want who = w->want;
    who.gen = h.gen;
    who.named = 0;
    int rc = eng_loghdr_continues(&who, v[i].path, &h, NULL);
    if (!rc) return 0;
    char why[600];
    snprintf(why, sizeof why, "%s", om_err_detail());
    rc = remember(s, om_errf(rc,
                             "%s does not belong to the log set in %s: %s. HINT: check the "
                             "database with its own log folder",
                             s->db[0].path, s->log_dir, why));
    report(w, NULL, 0, 1, rc, 0);
    return rc;
}

int chk_check_logs(chk_set *s, chk_log_cb cb, void *arg, chk_logs *out)
{
    memset(out, 0, sizeof *out);
    if (s->stage != STAGE_HEADERS)
        return remember(
            s, om_errf(OM_E_InvalidBackupSequence, "logs are checked once, after the headers"));
    s->stage = STAGE_LOGS;
    if (!s->log_dir) return 0;
    chk_log_file *v = NULL;
    size_t n = 0;
    eng_stream st;
    int rc = scan(s->vfs, s->log_dir, s->base, &st);
    if (rc) return remember(s, rc);
    rc = files_of(&st, &v, &n);
    if (rc) {
        eng_stream_free(&st);
        return remember(s, rc);
    }
    chk_logs *L = &s->logs;
    needed_range(s, v, n, &L->need_min, &L->need_max);
    log_walk w = {.s = s, .cb = cb, .arg = arg, .st = &st};
    int fail = stream_signature(&w, v, n);
    int walk = !fail;
    if (fail) fail = fail_logs(s, fail);
    uint32_t expect = L->need_min; /* next needed generation */
    for (size_t i = 0; i < n && walk; i++) {
        const chk_log_file *lf = &v[i];
        if (lf->gen == UINT32_MAX) {
            rc = om_errf(st.cur_err, "%s", st.cur_detail);
            if (L->need_min && !fail) fail = fail_logs(s, rc);
            report(&w, lf, 0, L->need_min != 0, rc, 0);
            continue;
        }
        int needed = L->need_min && lf->gen >= L->need_min;
        if (needed && lf->gen > expect && !fail)
            report(&w, NULL, expect, 1,
                   fail = fail_logs(s, missing(s, expect, lf->gen - 1, L->need_min)), 0);
        if (!L->lowest) L->lowest = lf->gen;
        L->highest = lf->gen;
        L->checked++;
        uint16_t slot = 0;
        int e = check_gen(&w, lf, &slot);
        if (e && needed && !fail) fail = fail_logs(s, e);
        report(&w, lf, lf->gen, needed, e, slot);
        if (e && !needed) L->bad_unneeded++;
        if (needed && lf->gen >= expect) expect = lf->gen + 1;
    }
    if (L->need_min && expect <= L->need_max && !fail) {
        fail = fail_logs(
            s, expect == L->need_min
                   ? missing(s, expect, L->need_max, L->need_min)
                   : remember(s, om_errf(OM_E_RequiredLogFilesMissing,
                                         "%s: log generations %u-%u are needed and the logs end "
                                         "at %u",
                                         s->log_dir, expect, L->need_max, expect - 1)));
        report(&w, NULL, expect, 1, fail, 0);
    }
    check_checkpoint(&w);
    free(v);
    eng_stream_free(&st);
    *out = *L;
    return fail ? om_errf(fail, "%s", s->logs_detail) : 0;
}

/* ---- term ---- */

static int verdict(chk_set *s)
{
    if (s->first_err) return om_errf(s->first_err, "%s", s->first_detail);
    if (!s->edb || !s->seen) return OM_E_OutOfMemory;
    if (s->stage < STAGE_HEADERS)
        return om_errf(OM_E_InvalidBackupSequence, "the headers were never checked");
    for (size_t i = 0; i < s->ndb; i++) {
        uint64_t got = 0;
        for (uint32_t p = 1; p <= s->db[i].pages; p++)
            got += (s->seen[i][p / 8] >> (p % 8)) & 1;
        if (got < s->db[i].pages)
            return om_errf(OM_E_DatabaseInvalidPages, "%s: %llu of its %u pages were checked",
                           s->db[i].path, (unsigned long long)got, s->db[i].pages);
    }
    if (s->log_dir && s->stage < STAGE_LOGS)
        return om_errf(OM_E_LogFileNotCopied, "the logs in %s were never checked", s->log_dir);
    return 0;
}

int chk_term(chk_set *s)
{
    if (!s) return 0;
    int rc = verdict(s);
    for (size_t i = 0; s->edb && s->seen && i < s->ndb; i++) {
        free(s->edb[i]);
        free(s->seen[i]);
    }
    free(s->edb);
    free(s->db);
    free(s->seen);
    free(s->log_dir);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return rc;
}
