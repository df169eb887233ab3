/* The backup job (job.h has the sequence and the contract). */
#include "backup/job.h"
#include "backup/shadow.h"
#include "backup/synthetic.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "backup/repo.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/pool.h"
#include "base/progress.h"
#include "base/proto.h"
#include "base/time.h"
#include "check/check.h"
#include "engine/engine.h"
#include "store/client.h"
#include "vss/requester.h"

#define MAX_DBS   BK_MAX_DBS
#define MAX_FILES (1u << 20)

/* The test hook (job.h): OMBRA_BACKUP_PAUSE. */
static void pause_at(const char *stage)
{
    bk_pause_at("OMBRA_BACKUP_PAUSE", stage);
}

/* ---- one database ---- */

typedef struct bfile {
    char src[4400]; /* in the shadow copy */
    char name[300]; /* in the set */
    uint64_t size;
} bfile;

typedef struct dbjob {
    const bk_job_opts *o;
    bk_repo *repo;
    char name[80], id[40], component[300], instance[40];
    json_t *info; /* db.show (NULL: this server's store does not have it: a passive copy) */
    int passive;  /* backed up from this server's passive copy (the replica writer) */
    json_t *md;   /* the writer's backup metadata */
    json_t *doc;  /* the backup components document (shared, read only) */
    json_t *wmd;  /* the writer metadata document (shared, read only) */
    bfile *files;
    size_t nfiles, cap;
    char edb[4400], logs[4400]; /* in the shadow copy */
    uint32_t lo, hi;
    int rc;
    char err[1024];
    char set_id[65];      /* committed (pending until published) */
    json_t *parent;       /* the set this one continues (a string, or JSON null) */
    int published;        /* the set is listed: restores may use it */
    uint64_t *bytes_read; /* shared progress counter (atomic) */
    uint64_t bytes_stored, blocks_new, blocks_reused;
    uint64_t stored_again; /* blocks known damaged in the repository, stored again */
    json_t *sets;          /* the repository's published sets (borrowed) */
    json_t *cm;            /* the set's "changemap": what the full read, what it reused, why */
} dbjob;

static int fail_db(dbjob *j, int rc, const char *step)
{
    if (!j->rc) {
        j->rc = rc;
        snprintf(j->err, sizeof j->err, "%s: %s: %s", j->name, step, om_err_detail());
    }
    return rc;
}

static int add_file(dbjob *j, const char *src, const char *name)
{
    struct stat st;
    if (stat(src, &st) != 0)
        return om_errf(OM_E_FileNotFound, "%s (%s) is missing from the shadow copy", name, src);
    if (j->nfiles == j->cap) {
        size_t nc = j->cap ? j->cap * 2 : 64;
        bfile *nv = nc <= MAX_FILES ? realloc(j->files, nc * sizeof *nv) : NULL;
        if (!nv) return om_errf(OM_E_OutOfMemory, "too many files in one set");
        j->files = nv;
        j->cap = nc;
    }
    bfile *f = &j->files[j->nfiles++];
    snprintf(f->src, sizeof f->src, "%s", src);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->size = (uint64_t)st.st_size;
    return 0;
}

/* What the set holds: the .edb (full, copy), the log range, the checkpoint. */
static int list_files(dbjob *j, json_t *shadows, char *edb, size_t en, char *logs, size_t ln)
{
    const char *base = om_json_str_or(j->md, "base", "E00");
    int rc = bk_shadow_path(shadows, om_json_str_or(j->md, "edb", ""), edb, en);
    if (!rc) rc = bk_shadow_path(shadows, om_json_str_or(j->md, "logs", ""), logs, ln);
    if (rc) return rc;
    int whole = !strcmp(j->o->type, "full") || !strcmp(j->o->type, "copy");
    if (whole) {
        const char *slash = strrchr(edb, '/');
        char name[300];
        snprintf(name, sizeof name, "edb/%.290s", slash ? slash + 1 : edb);
        if ((rc = add_file(j, edb, name))) return rc;
    }
    for (uint32_t g = j->lo; g <= j->hi && !rc; g++) {
        char src[4400], name[64];
        snprintf(name, sizeof name, "logs/%s%08X.log", base, g);
        snprintf(src, sizeof src, "%.4300s/%s%08X.log", logs, base, g);
        rc = add_file(j, src, name);
    }
    char chk[4400], name[64];
    snprintf(chk, sizeof chk, "%.4300s/%s.chk", logs, base);
    snprintf(name, sizeof name, "logs/%s.chk", base);
    if (!rc) rc = add_file(j, chk, name);
    return rc;
}

/* The check library over the shadow copy's files: the headers first; the .edb's pages as the
 * copy reads them (store_file: the file is read once); the log range at the end. */
static int check_begin(dbjob *j, chk_set **out)
{
    int whole = !strcmp(j->o->type, "full") || !strcmp(j->o->type, "copy");
    const char *edbs[1] = {j->edb};
    chk_set *s = NULL;
    int rc = chk_init(edbs, whole ? 1 : 0, j->logs, om_json_str_or(j->md, "base", "E00"), NULL, &s);
    if (rc) return rc;
    chk_expect_logs(s, j->lo, j->hi);
    chk_headers h;
    if ((rc = chk_check_headers(s, &h))) {
        chk_term(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* The pages of the .edb in one block read at file offset off (page-aligned), checked. */
static int check_block(chk_set *cs, uint64_t off, const uint8_t *buf, size_t len)
{
    uint64_t fp = off / ENG_PAGE_SIZE, n = len / ENG_PAGE_SIZE, skip = fp < 2 ? 2 - fp : 0;
    if (skip >= n) return 0; /* the two header pages */
    uint64_t first = fp + skip - 1, count = n - skip, pages = chk_db(cs, 0)->pages;
    if (first > pages) return 0; /* room the file keeps past its last page */
    if (first + count - 1 > pages) count = pages - first + 1;
    return chk_check_page_buf(cs, 0, (uint32_t)first, buf + skip * ENG_PAGE_SIZE, (uint32_t)count,
                              NULL, NULL);
}

/* The rest of the check: pages the copy could not check in stream (a block size that is not a
 * multiple of the page size), the log range, the verdict. */
static int check_end(chk_set *cs, int pages_in_stream)
{
    const chk_db_info *d = chk_db(cs, 0);
    if (d && !pages_in_stream && d->pages) chk_check_pages(cs, 0, 1, d->pages, NULL, NULL);
    chk_logs lg;
    chk_check_logs(cs, NULL, NULL, &lg);
    return chk_term(cs);
}

/* ---- files into the repository ---- */

/* One file's blocks on the pool (base/pool.h), block b one index. The worker of block b waits
 * for b's turn to read it, so that the blocks are read, hashed into the file's SHA-256 and
 * checked in order, as one reader would; it stores it while the next worker reads. */
typedef struct pipe {
    dbjob *j;
    bk_writer *w;
    const bfile *f;
    chk_set *cs; /* NULL: no pages to check in stream */
    int fd;
    EVP_MD_CTX *sha;
    XXH3_state_t *xx; /* the file's XXH3-128 beside its SHA-256: the restore's check of the
                         file's content (repo.h) */
    uint32_t bs;
    size_t nblocks;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    size_t turn; /* the block to read next */
    int failed;  /* a read failed: no turn comes any more */
    uint8_t (*ids)[BK_ID_LEN];
    uint64_t stored; /* bytes of new blocks (atomic) */
} pipe_t;

/* Block b in its turn: read, hashed, its pages checked. */
static int read_block(pipe_t *p, size_t b, uint8_t **out, size_t *outlen)
{
    uint64_t off = (uint64_t)b * p->bs;
    size_t len = p->f->size - off < p->bs ? (size_t)(p->f->size - off) : p->bs;
    uint8_t *buf = malloc(len ? len : 1);
    ssize_t got = buf ? pread(p->fd, buf, len, (off_t)off) : -1;
    int rc = 0;
    if (got != (ssize_t)len)
        rc = om_errf(OM_E_DiskIO, "reading %s at %llu: short read", p->f->src,
                     (unsigned long long)off);
    if (!rc) EVP_DigestUpdate(p->sha, buf, len);
    if (!rc) XXH3_128bits_update(p->xx, buf, len);
    if (!rc && p->cs) rc = check_block(p->cs, off, buf, len);
    if (rc) {
        free(buf);
        return rc;
    }
    __atomic_fetch_add(p->j->bytes_read, len, __ATOMIC_RELAXED);
    if (b == 0 && p->nblocks > 4) pause_at("copying");
    *out = buf;
    *outlen = len;
    return 0;
}

static int put_worker(void *arg, void *ws, size_t b)
{
    pipe_t *p = arg;
    pthread_mutex_lock(&p->mu);
    while (p->turn != b && !p->failed)
        pthread_cond_wait(&p->cond, &p->mu);
    int failed = p->failed;
    pthread_mutex_unlock(&p->mu);
    if (failed) return 0; /* the failed read is the pool's failure */
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = read_block(p, b, &buf, &len);
    pthread_mutex_lock(&p->mu);
    if (rc)
        p->failed = 1;
    else
        p->turn++;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    if (rc) return rc;
    int isnew = 0;
    rc = bk_put_block(p->w, buf, len, p->ids[b], &isnew);
    free(buf);
    if (!rc && isnew) __atomic_fetch_add(&p->stored, len, __ATOMIC_RELAXED);
    return rc;
}

/* Reads one file in blocks (in order: the file's SHA-256) and stores them on `threads` workers;
 * adds the file to the set. */
static int store_file(dbjob *j, bk_writer *w, const bfile *f, int threads, chk_set *cs)
{
    uint32_t bs = bk_repo_block_size(j->repo);
    size_t nblocks = (size_t)((f->size + bs - 1) / bs);
    pipe_t p = {.j = j, .w = w, .f = f, .cs = cs, .bs = bs, .nblocks = nblocks};
    p.ids = calloc(nblocks + 1, sizeof *p.ids);
    p.sha = EVP_MD_CTX_new();
    p.xx = XXH3_createState();
    p.fd = open(f->src, O_RDONLY | O_CLOEXEC);
    if (!p.ids || !p.sha || !p.xx || p.fd < 0 || !EVP_DigestInit_ex(p.sha, EVP_sha256(), NULL) ||
        XXH3_128bits_reset(p.xx) != XXH_OK) {
        int rc = p.fd < 0 ? om_errf(OM_E_FileNotFound, "cannot open %s", f->src)
                          : om_errf(OM_E_OutOfMemory, "out of memory");
        if (p.fd >= 0) close(p.fd);
        EVP_MD_CTX_free(p.sha);
        XXH3_freeState(p.xx);
        free(p.ids);
        return rc;
    }
    posix_fadvise(p.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cond, NULL);
    om_pool pool = {.workers = nblocks < 2 ? 1 : threads, .ctx = &p, .fn = put_worker};
    int rc = om_pool_run(&pool, nblocks);
    close(p.fd);
    uint8_t digest[32];
    unsigned dl = 0;
    EVP_DigestFinal_ex(p.sha, digest, &dl);
    EVP_MD_CTX_free(p.sha);
    XXH128_canonical_t xc;
    XXH128_canonicalFromHash(&xc, XXH3_128bits_digest(p.xx));
    XXH3_freeState(p.xx);
    if (!rc)
        rc = bk_set_add_file(w, f->name, f->size, digest, xc.digest,
                             (const uint8_t(*)[BK_ID_LEN])p.ids, nblocks,
                             json_pack("{s:s}", "source", f->src));
    j->bytes_stored += p.stored;
    free(p.ids);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cond);
    return rc;
}

/* The summary of the newest set of this database the new one continues (incremental: the
 * newest full or incremental; differential: the newest full; a copy is never one), or NULL. */
static json_t *parent_of(dbjob *j, json_t *sets)
{
    json_t *parent = NULL, *s;
    size_t i;
    json_array_foreach(sets, i, s)
    {
        const char *id = om_json_str_or(s, "id", NULL), *t = om_json_str_or(s, "type", "");
        if (!id || json_object_get(s, "damaged") ||
            strcmp(om_json_str_or(json_object_get(s, "database"), "id", ""), j->id))
            continue;
        if (!strcmp(t, "full") || (!strcmp(j->o->type, "incremental") && !strcmp(t, "incremental")))
            parent = s;
    }
    return parent;
}

static uint32_t last_gen(json_t *s)
{
    return (uint32_t)json_integer_value(json_array_get(json_object_get(s, "log_range"), 1));
}

/* What the database's header says of the backup an incremental or differential continues (the
 * newer of the previous full and incremental; the previous full): one phrase. */
static void previous_backup(dbjob *j, char *out, size_t n)
{
    json_t *bk = json_object_get(j->info, "backups"), *full = json_object_get(bk, "previous_full"),
           *inc = json_object_get(bk, "previous_incremental"), *prev = full;
    const char *kind = "full";
    if (!strcmp(j->o->type, "incremental") && json_is_object(inc) &&
        (!json_is_object(full) ||
         om_json_int_or(inc, "last_gen", 0) > om_json_int_or(full, "last_gen", 0))) {
        prev = inc;
        kind = "incremental";
    }
    if (!json_is_object(prev)) {
        snprintf(out, n, "the database records no earlier full backup");
        return;
    }
    snprintf(out, n,
             "the database's previous %s backup (generations %lld-%lld, %s) is not in it: it went "
             "to another repository (the database header does not record which)",
             kind, (long long)om_json_int_or(prev, "first_gen", 0),
             (long long)om_json_int_or(prev, "last_gen", 0), om_json_str_or(prev, "time", "?"));
}

/* An incremental or differential goes only into a repository that holds the chain it continues
 * (spec §5): its parent, and no generation missing between the parent's last and its first.
 * Refused here, before BackupComplete, so nothing is truncated or recorded. */
static int check_continues(dbjob *j, json_t *sets)
{
    if (!strcmp(j->o->type, "full") || !strcmp(j->o->type, "copy")) {
        j->parent = json_null();
        return 0;
    }
    /* The parent read whole and checked: its summary may be one kept in the data directory
     * (bk_sets) of a set damaged in place since. One that fails is taken for damaged, as a
     * listing that read it would have, and the parent chosen again (each pass marks one set,
     * with a value that cannot fail to be set, so the passes end). What is decided is decided
     * by the set read, not by its summary. */
    json_t *p, *doc = NULL;
    char skipped[120] = ""; /* the newest set passed over, for the messages */
    while ((p = parent_of(j, sets))) {
        int rc = bk_set_load(j->repo, om_json_str_or(p, "id", ""), &doc);
        if (!rc) rc = bk_set_check(j->repo, doc);
        if (!rc) break;
        json_decref(doc);
        doc = NULL;
        if (rc != OM_E_RepositoryCorrupt) return rc;
        if (!skipped[0])
            snprintf(skipped, sizeof skipped, "set %.12s, newer, is damaged and was passed over",
                     om_json_str_or(p, "id", "?"));
        if (json_object_set_new(p, "damaged", json_true()))
            return om_errf(OM_E_OutOfMemory, "out of memory");
        om_err_clear();
    }
    char prev[400];
    previous_backup(j, prev, sizeof prev);
    if (!p)
        return om_errf(OM_E_MissingFullBackup,
                       "an %s backup of %s continues a full backup, and repository %s holds none "
                       "of this database%s%s; %s. HINT: make a full backup into %s first",
                       j->o->type, j->name, j->o->repo, skipped[0] ? " that is sound: " : "",
                       skipped, prev, j->o->repo);
    uint32_t have = last_gen(doc);
    int same = !strcmp(om_json_str_or(json_object_get(doc, "database"), "id", ""), j->id);
    json_decref(doc);
    if (!same)
        return om_errf(OM_E_RepositoryCorrupt,
                       "set %.12s is not of %s as the list of sets said: nothing was backed up. "
                       "HINT: remove the data directory's cache/sets-*.json",
                       om_json_str_or(p, "id", "?"), j->name);
    if (j->lo > have + 1)
        return om_errf(OM_E_MissingLogFile,
                       "%s backup of %s refused: it would hold generations %u-%u, but repository "
                       "%s ends this database's chain at %u (set %.12s%s%s): generations %u-%u "
                       "are in no set of it; %s. HINT: make a full backup into %s",
                       j->o->type, j->name, j->lo, j->hi, j->o->repo, have,
                       om_json_str_or(p, "id", "?"), skipped[0] ? "; " : "", skipped, have + 1,
                       j->lo - 1, prev, j->o->repo);
    if (skipped[0])
        om_warn("%s: continues set %.12s (%s). HINT: ombra verify --repo %s", j->name,
                om_json_str_or(p, "id", "?"), skipped, j->o->repo);
    j->parent = json_string(om_json_str_or(p, "id", ""));
    return 0;
}

/* ---- a full's .edb: every page, or the changed ones (synthetic.h) ---- */

static int check_cb(void *arg, uint64_t off, const uint8_t *buf, size_t len)
{
    return check_block(arg, off, buf, len);
}

/* File pages [fp, fp + n): data pages fp - 1 on (the two header pages are none). */
static void vouch_cb(void *arg, uint64_t fp, uint32_t n)
{
    uint64_t skip = fp < 2 ? 2 - fp : 0;
    if (skip < n) chk_vouch_pages(arg, 0, (uint32_t)(fp + skip - 1), (uint32_t)(n - skip));
}

/* The previous full's entry named name (a new reference), or NULL. */
static json_t *prev_entry(bk_repo *r, const char *set, const char *name)
{
    json_t *doc = NULL, *f, *out = NULL;
    size_t i;
    if (bk_set_load(r, set, &doc)) {
        om_err_clear();
        return NULL;
    }
    json_array_foreach(json_object_get(doc, "files"), i, f)
    {
        if (!strcmp(om_json_str_or(f, "name", ""), name)) out = json_incref(f);
    }
    json_decref(doc);
    return out;
}

/* A full's .edb: synthetic when the change map and the repository allow it (bk_synth_decide),
 * else read whole (store_file); j->cm says which, and why. A synthetic full that cannot build on
 * the previous one (its entry damaged, a block of it gone) reads everything instead. */
static int store_edb(dbjob *j, bk_writer *w, const bfile *f, chk_set *cs)
{
    json_t *prev = NULL, *pf = NULL;
    uint32_t *runs = NULL, nr = 0;
    int since = -1, rc = 0, syn = 0;
    char why[700] = "";
    unsigned every = j->o->read_all_every ? j->o->read_all_every : 4;
    const chk_db_info *d = cs ? chk_db(cs, 0) : NULL;
    if (!cs || !d)
        snprintf(why, sizeof why, "the block size is not a multiple of the page size");
    else
        syn = bk_synth_decide(j->sets, j->id, j->md, every, j->o->read_all, &prev, &runs, &nr,
                              &since, why, sizeof why);
    const char *pid = om_json_str_or(prev, "id", "");
    if (syn && !(pf = prev_entry(j->repo, pid, f->name))) {
        snprintf(why, sizeof why, "the previous full (set %.12s) holds no %s", pid, f->name);
        syn = 0;
    }
    const char *epoch = om_json_str_or(json_object_get(j->md, "changemap"), "epoch", NULL);
    if (syn) {
        bk_synth_in in = {.repo = j->repo,
                          .w = w,
                          .src = f->src,
                          .name = f->name,
                          .size = f->size,
                          .prev_file = pf,
                          .prev_set = pid,
                          .runs = runs,
                          .nruns = nr,
                          .db_pages = d->pages,
                          .check = check_cb,
                          .vouch = vouch_cb,
                          .check_arg = cs,
                          .bytes_read = j->bytes_read,
                          .threads = j->o->threads};
        bk_synth_out out;
        pause_at("copying");
        rc = bk_synth_store(&in, &out);
        j->bytes_stored += out.stored;
        if (!rc)
            j->cm = json_pack("{s:s?, s:b, s:i, s:I, s:I, s:s}", "epoch", epoch, "read_all", 0,
                              "fulls_since_read_all", since + 1, "pages_checked_now",
                              (json_int_t)out.pages_now, "pages_reused",
                              (json_int_t)out.pages_reused, "reused_from", pid);
        if (!rc && out.regions_reread)
            json_object_set_new(j->cm, "regions_read_again_damaged",
                                json_integer((json_int_t)out.regions_reread));
        else if (rc == OM_E_RepositoryCorrupt || rc == OM_E_InvalidParameter) {
            snprintf(why, sizeof why, "building on the previous full (set %.12s) failed: %.500s",
                     pid, om_err_detail());
            om_warn("%s: %s; reading every page", j->name, why);
            om_err_clear();
            syn = rc = 0;
        }
    }
    json_decref(pf);
    free(runs);
    if (syn || rc) return rc;
    rc = store_file(j, w, f, j->o->threads, cs);
    if (!rc)
        j->cm = json_pack("{s:s?, s:b, s:s, s:i, s:I, s:I}", "epoch", epoch, "read_all", 1,
                          "reason", why, "fulls_since_read_all", 0, "pages_checked_now",
                          (json_int_t)(d ? d->pages : 0), "pages_reused", (json_int_t)0);
    return rc;
}

/* ---- one database: copy → check → commit (run_db, on backup_copy's pool) ---- */

/* The .edb's pages are checked as the copy reads them when a block holds whole pages. */
static int pages_in_stream(const dbjob *j)
{
    return bk_repo_block_size(j->repo) % ENG_PAGE_SIZE == 0;
}

/* Copy: the shadow copy's headers checked (check_begin), a set begun, and every file of the
 * list stored in it, the .edb's pages checked as they are read (when pages_in_stream). On
 * success *cs (the check, to end) and *w (the set, to commit or abort) are the caller's. On
 * failure both are released, nothing is listed, and the failure is the database's (fail_db). */
static int db_copy(dbjob *j, chk_set **cs, bk_writer **w)
{
    int whole = !strcmp(j->o->type, "full") || !strcmp(j->o->type, "copy");
    int rc = check_begin(j, cs);
    if (rc) return fail_db(j, rc, "the check of the shadow copy failed");
    int in_stream = pages_in_stream(j);
    if ((rc = bk_set_begin(j->repo, w))) {
        fail_db(j, rc, "opening the set");
        chk_term(*cs);
        return rc;
    }
    for (size_t i = 0; i < j->nfiles && !rc; i++) {
        int is_edb = whole && i == 0; /* list_files puts the .edb first */
        if (is_edb && !strcmp(j->o->type, "full"))
            rc = store_edb(j, *w, &j->files[i], in_stream ? *cs : NULL);
        else
            rc = store_file(j, *w, &j->files[i], j->o->threads, is_edb && in_stream ? *cs : NULL);
    }
    if (rc) { /* the failure first: the cleanup may set another error detail */
        int page = rc == OM_E_ReadVerifyFailure || rc == OM_E_ReadPgnoVerifyFailure ||
                   rc == OM_E_DbTimeTooNew;
        fail_db(j, rc, page ? "the check of the shadow copy failed" : "copying");
        bk_set_abort(*w);
        chk_term(*cs);
        return rc;
    }
    pause_at("copied");
    return 0;
}

/* Check: the rest of the shadow copy's check (pages not checked in stream, the log range) and
 * its verdict; cs is ended either way. On failure the set is aborted (nothing listed) and the
 * failure is the database's; on success w is still the caller's, to commit. */
static int db_check(dbjob *j, chk_set *cs, bk_writer *w)
{
    int rc = check_end(cs, pages_in_stream(j));
    if (rc) {
        fail_db(j, rc, "the check of the shadow copy failed");
        bk_set_abort(w);
        return rc;
    }
    pause_at("checked");
    return 0;
}

static json_t *component_md(json_t *doc, const char *component);

/* Commit: the set's document (what it is a backup of, its log range, the set it continues, the
 * writer's documents, the freeze it stands for) and the set committed, pending until
 * BackupComplete succeeded (publish_sets). w is freed either way; on failure nothing is pending
 * and the failure is the database's. */
static void db_commit(dbjob *j, bk_writer *w)
{
    char t[40];
    /* The writer's pages lists served this backup only; the epoch is in "changemap". The
     * components document is the session's, shared by its databases (and dumped on their own
     * threads): the set gets a copy without the lists, the shared one is never changed. */
    json_t *cdoc = json_deep_copy(j->doc), *c;
    size_t k;
    json_array_foreach(json_object_get(cdoc, "components"), k, c)
    {
        json_object_del(json_object_get(json_object_get(c, "backup_metadata"), "changemap"),
                        "since");
    }
    json_t *md = component_md(cdoc, j->component);
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s}, s:[i,i], s:o, s:O, s:O, s:O}", "type",
        j->o->type, "time", om_time_iso(om_now_ns(), t, sizeof t), "server",
        om_json_str_or(j->md, "server", om_json_str_or(j->info, "server", "")), "database", "id",
        j->id, "name", j->name, "edb", om_json_str_or(j->md, "edb", ""), "logs",
        om_json_str_or(j->md, "logs", ""), "base", om_json_str_or(j->md, "base", "E00"),
        "log_range", j->lo, j->hi, "parent", json_incref(j->parent), "backup_metadata", md,
        "writer_metadata", j->wmd, "components_document", cdoc);
    json_decref(cdoc);
    json_object_set_new(doc, "copy", json_string(j->passive ? "passive" : "active"));
    if (j->cm) json_object_set(doc, "changemap", j->cm);
    /* The moment the set stands for (the freeze): restores by time pick sets with it. */
    json_object_set(doc, "mark_time_ns", json_object_get(j->md, "mark_time_ns"));
    uint64_t in = 0, stored = 0, bn = 0, br = 0;
    bk_writer_stats(w, &in, &stored, &bn, &br);
    j->bytes_stored = stored;
    j->blocks_new = bn;
    j->blocks_reused = br;
    j->stored_again = bk_writer_stored_again(w);
    int rc = bk_set_commit(w, doc, j->set_id);
    if (rc) fail_db(j, rc, "committing the set");
}

/* One database's backup, its failure its own (dbjob.rc): each step releases what it holds when
 * it fails. */
static void run_db(dbjob *j)
{
    chk_set *cs = NULL;
    bk_writer *w = NULL;
    if (db_copy(j, &cs, &w) || db_check(j, cs, w)) return;
    db_commit(j, w);
}

/* After BackupComplete: the sets of the databases whose backup the writer recorded are
 * published (listed: restores may use them), and the writer is told so, so that it truncates
 * their logs at BackupShutdown. When BackupComplete failed (a writer restarted during the
 * backup: its shadow copy was not held, the copy may be torn) every set is discarded: a
 * backup that did not succeed end to end is never used by a restore (spec §6). A crash before
 * the publication leaves pending sets, never listed, and every log on disk. */
static void publish_sets(dbjob *jobs, size_t n, bk_repo *repo, vss_req *r, int complete_rc)
{
    for (size_t i = 0; i < n; i++) {
        dbjob *j = &jobs[i];
        if (!j->set_id[0]) continue;
        int rc = j->rc || complete_rc ? OM_E_Aborted : bk_set_publish(repo, j->set_id);
        if (rc == OM_E_Aborted) {
            bk_set_discard(repo, j->set_id);
            if (complete_rc && !j->rc) {
                j->rc = complete_rc;
                snprintf(j->err, sizeof j->err,
                         "%s: BackupComplete failed: the set was "
                         "discarded",
                         j->name);
            }
            j->set_id[0] = 0;
            continue;
        }
        if (rc) {
            fail_db(j, rc, "publishing the set");
            j->set_id[0] = 0;
            continue;
        }
        j->published = 1;
        if (vss_req_set_backup_stored(r, j->instance, j->component))
            om_warn("%s: the writer will not truncate logs after this backup: %s", j->name,
                    om_err_detail());
    }
}

/* ---- the requester sequence ---- */

/* What the store says of a database that no writer offers, said before the shadow copy service
 * is asked: a recovery database is never backed up (spec §6), a dismounted one not now. */
static int backed_up_at_all(const dbjob *j)
{
    if (json_is_true(json_object_get(j->info, "recovery")))
        return om_errf(OM_E_InvalidParameter,
                       "'%s' is a recovery database: it is never backed up (it holds a restored "
                       "copy, spec §6). HINT: back up the database it was restored from",
                       j->name);
    if (json_is_false(json_object_get(j->info, "mounted")))
        return om_errf(OM_E_DatabaseNotFound,
                       "'%s' is dismounted: only a mounted database is backed up. HINT: ombra db "
                       "mount %s",
                       j->name, j->name);
    return 0;
}

#define REPLICA_WRITER "Ombra Replica Writer"

/* The component of a database on this server: its active copy (the store writer's component
 * named by its id) or its passive copy (the replica writer's, named by its id, or by its caption
 * when the store has no database of that name here), as o->from allows; its instance and
 * metadata document; j->id and j->passive set. */
static int find_component(json_t *writers, const bk_job_opts *o, dbjob *j)
{
    size_t i, k;
    json_t *w, *c;
    const char *other = NULL;
    json_array_foreach(writers, i, w)
    {
        json_t *md = json_object_get(w, "metadata");
        int replica = !strcmp(om_json_str_or(w, "name", ""), REPLICA_WRITER);
        json_array_foreach(json_object_get(md, "components"), k, c)
        {
            const char *name = om_json_str_or(c, "name", "");
            if (j->id[0] ? strcmp(name, j->id)
                         : (!replica || strcmp(om_json_str_or(c, "caption", ""), j->name)))
                continue;
            if (o->from && !strcmp(o->from, replica ? "active" : "passive")) {
                other = replica ? "a passive copy" : "the active copy";
                continue;
            }
            snprintf(j->id, sizeof j->id, "%s", name);
            snprintf(j->component, sizeof j->component, "%s\\%s",
                     om_json_str_or(c, "logical_path", ""), name);
            snprintf(j->instance, sizeof j->instance, "%s", om_json_str_or(w, "instance_id", ""));
            j->wmd = md;
            j->passive = replica;
            return 0;
        }
    }
    if (other)
        return om_errf(OM_E_ObjectNotFound,
                       "--from %s: this server holds %s of database '%s', not the %s one. HINT: "
                       "run ombra backup on a server that holds it (ombra db copy status %s)",
                       o->from, other, j->name, o->from, j->name);
    if (!j->id[0])
        return om_errf(OM_E_DatabaseNotFound,
                       "this server holds no copy of database '%s': neither its store nor a "
                       "Healthy passive copy offered by ombra-repld. HINT: ombra db copy status "
                       "%s says where its copies are and whether they are Healthy",
                       j->name, j->name);
    return om_errf(OM_E_ObjectNotFound,
                   "no writer offers database '%s' (%s): is it mounted, and is ombra-store "
                   "registered with ombra-vssd? HINT: ombra vss writers",
                   j->name, j->id);
}

static int covers(const char *a, const char *b)
{
    size_t l = strlen(a);
    return !strncmp(a, b, l) && (b[l] == 0 || b[l] == '/');
}

/* The component paths of every database, those under another dropped. */
static int add_paths(vss_req *r, dbjob *jobs, size_t n, json_t *writers, const char *provider)
{
    json_t *paths = json_array();
    size_t i, k, m;
    json_t *w, *c, *p;
    for (size_t d = 0; d < n; d++)
        if (!jobs[d].rc) /* a database that failed alone has no component */
            json_array_foreach(writers, i, w) json_array_foreach(
                json_object_get(json_object_get(w, "metadata"), "components"), k, c)
            {
                const char *lp = om_json_str_or(c, "logical_path", ""),
                           *nm = om_json_str_or(c, "name", "");
                char full[400];
                snprintf(full, sizeof full, "%s\\%s", lp, nm);
                if (strcmp(full, jobs[d].component) && !covers(jobs[d].component, lp) &&
                    strncmp(lp, jobs[d].component, strlen(jobs[d].component)))
                    continue;
                json_array_foreach(json_object_get(c, "paths"), m, p)
                {
                    const char *ps = json_string_value(p);
                    int skip = 0;
                    for (size_t q = json_array_size(paths); q-- > 0;) {
                        const char *o = json_string_value(json_array_get(paths, q));
                        if (covers(o, ps))
                            skip = 1;
                        else if (covers(ps, o))
                            json_array_remove(paths, q);
                    }
                    if (!skip) json_array_append(paths, p);
                }
            }
    int rc = 0;
    json_array_foreach(paths, i, p) if (!rc) rc =
        vss_req_add_path(r, json_string_value(p), provider, NULL, 0);
    json_decref(paths);
    return rc;
}

/* The databases on the pool (base/pool.h), one index each, all at once; the bar on the
 * caller's thread. A database's failure is its own (dbjob.rc): the others go on. */
typedef struct dbrun {
    dbjob *jobs;
    int draw;
    om_progress bar;
} dbrun;

static int run_db_at(void *arg, void *ws, size_t i)
{
    dbjob *j = &((dbrun *)arg)->jobs[i];
    if (!j->rc) run_db(j);
    return 0;
}

static int db_bar(void *arg, uint64_t bytes)
{
    dbrun *d = arg;
    if (d->draw) om_progress_update(&d->bar, bytes);
    return 0;
}

/* The names of in without repeats, in their first order (spec §5: a database named twice in
 * one backup is selected once). 0, or InvalidParameter past MAX_DBS distinct names. */
static int distinct_dbs(const bk_job_opts *in, const char **out, size_t *n)
{
    *n = 0;
    for (size_t i = 0; i < in->ndb; i++) {
        size_t k = 0;
        while (k < *n && strcmp(out[k], in->dbs[i]))
            k++;
        if (k < *n) continue;
        if (*n == MAX_DBS) return om_errf(OM_E_InvalidParameter, "name 1 to %d databases", MAX_DBS);
        out[(*n)++] = in->dbs[i];
    }
    return *n ? 0 : om_errf(OM_E_InvalidParameter, "name 1 to %d databases", MAX_DBS);
}

/* ---- the run: plan → snapshot → list → copy → complete → report ---- */

/* What the steps of one run share. A step that fails leaves what it opened here, for
 * backup_report, the one cleanup path. */
typedef struct bk_backup_state {
    bk_job_opts o; /* the caller's, its names made distinct (names) and its threads counted */
    const char *names[MAX_DBS];
    uint64_t t0;
    json_t *res;       /* the result (the caller's) */
    dbjob *jobs;       /* one per database, o.ndb */
    bk_repo *repo;     /* open from plan to report */
    vss_req *r;        /* the backup session (released by backup_report) */
    json_t *writers;   /* the writers' metadata (gathered) */
    json_t *snap;      /* DoSnapshotSet's answer: the components document, the shadows, times */
    json_t *repo_sets; /* the published sets when the snapshot was taken */
    uint64_t bytes;    /* read from the shadow copy (atomic) */
    uint64_t total;    /* to read */
} bk_backup_state;

/* A list of damaged copies (damaged.json) that cannot be used is ignored: one line says so,
 * since blocks it listed may be referred to again until a verify lists them anew. */
static void warn_damaged_list(bk_repo *r, const char *path)
{
    json_t *dl = NULL;
    if (!bk_damaged_list(r, &dl) && json_is_string(json_object_get(dl, "problem")))
        om_warn("%s: ignored. HINT: ombra verify --repo %s lists the damaged copies again",
                om_json_str_or(dl, "problem", "?"), path);
    om_err_clear();
    json_decref(dl);
}

/* Plan: the repository open, and what the store says of each database: its id, where it lives,
 * and whether it is backed up at all (refused before the shadow copy service is asked). On
 * success st->jobs holds one job per database, named. */
static int backup_plan(bk_backup_state *st)
{
    bk_job_opts *o = &st->o;
    o->dbs = st->names;
    /* Two workers a core, shared among the databases (each copied on its own thread): a
     * worker that finishes a pack waits for the disk (its fsyncs, the index's) while the other
     * of its core reads, hashes and compresses (docs/design.md, "Two workers a core"). */
    if (o->threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN), n = (long)(o->ndb ? o->ndb : 1);
        if (cores < 1) cores = 1;
        /* never fewer than one a core each (a large database beside small ones keeps them) */
        long each = (2 * cores + n - 1) / n;
        o->threads = (int)(each < cores ? cores : each > 64 ? 64 : each);
    }
    if (o->threads < 1) o->threads = 1;
    st->jobs = calloc(o->ndb, sizeof *st->jobs);
    store_client *sc = NULL;
    int rc = st->jobs ? bk_repo_open(o->repo, o->passphrase, &st->repo) : OM_E_OutOfMemory;
    if (!rc) warn_damaged_list(st->repo, o->repo);
    if (!rc) rc = store_client_new(NULL, &sc);
    if (!rc) store_client_retry_busy(sc, 1); /* a busy store is no reason to fail a backup */
    if (!rc && o->from && strcmp(o->from, "active") && strcmp(o->from, "passive")) {
        json_t *status = NULL;
        if (!(rc = store_client_status(sc, &status)) &&
            strcmp(om_json_str_or(status, "server", ""), o->from))
            rc = om_errf(OM_E_InvalidParameter,
                         "--from %s: this is server %s; a backup reads the copy of the server it "
                         "runs on. HINT: run ombra backup on %s, or say --from active or --from "
                         "passive",
                         o->from, om_json_str_or(status, "server", "?"), o->from);
        json_decref(status);
    }
    /* The store says where each database lives. */
    for (size_t i = 0; !rc && i < o->ndb; i++) {
        dbjob *j = &st->jobs[i];
        j->o = o;
        j->bytes_read = &st->bytes;
        snprintf(j->name, sizeof j->name, "%s", o->dbs[i]);
        /* A database this server's store does not have may be a passive copy of it here (a
         * DAG): the replica writer's components say, at the gather. */
        if ((rc = store_client_db_show(sc, j->name, &j->info)) == OM_E_DatabaseNotFound)
            rc = 0;
        else if (rc)
            rc = om_err_ctx(rc, "database '%s'", j->name);
        else
            snprintf(j->id, sizeof j->id, "%s", om_json_str_or(j->info, "id", ""));
        if (!rc && j->info) rc = backed_up_at_all(j);
        if (rc && o->each_alone && rc != OM_E_OutOfMemory) rc = !fail_db(j, rc, "not backed up");
    }
    store_client_free(sc);
    return rc;
}

/* Snapshot: the requester sequence on vss.sock up to the shadow copies: the writers' metadata
 * gathered, each database's component found (its writer instance and metadata document), the
 * backup type set, the components added, PrepareForBackup, a snapshot set of every component
 * path, DoSnapshotSet (the writers freeze, the shadows are made, they thaw). On success st->snap
 * holds the components document and the shadows. */
static int backup_snapshot(bk_backup_state *st)
{
    const bk_job_opts *o = &st->o;
    dbjob *jobs = st->jobs;
    int rc = vss_req_begin(NULL, VSS_SESSION_BACKUP, &st->r);
    if (!rc) rc = vss_req_gather_metadata(st->r, &st->writers);
    size_t left = 0; /* databases still in the run */
    for (size_t i = 0; !rc && i < o->ndb; i++) {
        if (jobs[i].rc) continue; /* failed alone at the plan (each_alone) */
        if ((rc = find_component(st->writers, o, &jobs[i])) && o->each_alone)
            rc = !fail_db(&jobs[i], rc, "not backed up");
        else if (!rc)
            left++;
    }
    if (!rc && !left) /* every one failed alone: the first one's failure is the run's */
        for (size_t i = 0; !rc && i < o->ndb; i++)
            rc = om_errf(jobs[i].rc, "%s", jobs[i].err);
    if (!rc) rc = vss_req_set_backup_state(st->r, o->type);
    for (size_t i = 0; !rc && i < o->ndb; i++) {
        if (jobs[i].rc) continue;
        /* Another backup holds it (each_alone): this one goes on without it. */
        if ((rc = vss_req_add_component(st->r, jobs[i].instance, jobs[i].component)) ==
                OM_E_BackupInProgress &&
            o->each_alone) {
            rc = !fail_db(&jobs[i], rc, "not backed up");
            jobs[i].component[0] = 0;
            left--;
        }
    }
    if (!rc && !left)
        for (size_t i = 0; !rc && i < o->ndb; i++)
            rc = om_errf(jobs[i].rc, "%s", jobs[i].err);
    if (!rc) rc = vss_req_prepare_backup(st->r);
    if (!rc) pause_at("prepared");
    char set[37];
    if (!rc) rc = vss_req_start_snapshot_set(st->r, 0, set);
    if (!rc) rc = add_paths(st->r, jobs, o->ndb, st->writers, o->provider ? o->provider : "auto");
    if (!rc) rc = vss_req_do_snapshot_set(st->r, &st->snap);
    if (!rc) pause_at("snapshot");
    return rc;
}

/* The backup metadata the writer gave for a component in the components document (NULL: none). */
static json_t *component_md(json_t *doc, const char *component)
{
    json_t *md = NULL, *c;
    size_t k;
    json_array_foreach(json_object_get(doc, "components"), k, c)
    {
        if (!strcmp(om_json_str_or(c, "component", ""), component))
            md = json_object_get(c, "backup_metadata");
    }
    return md;
}

/* A database its writer left out of a session of several (replica_writer.h: its copy could not
 * be prepared or frozen): its metadata is {"error", "code"}, and it fails alone. */
static int left_out(dbjob *j)
{
    const char *why = json_string_value(json_object_get(j->md, "error"));
    if (!why) return 0;
    int code = (int)om_json_int_or(j->md, "code", OM_E_DatabaseUnavailable);
    om_errf(code ? code : OM_E_DatabaseUnavailable, "%s", why);
    fail_db(j, code ? code : OM_E_DatabaseUnavailable, "left out of the shadow copy");
    j->md = NULL;
    return 1;
}

/* List: what each database's set is to hold, from the snapshot: the writer's backup metadata
 * and its log range; the set it continues among the repository's sets as they are now (an
 * incremental or differential without its chain is refused here, before anything is copied or
 * truncated); its files in the shadow copy. A database refused, without metadata or missing a
 * file fails alone (dbjob.rc) and the others go on; the step fails only when the repository's
 * sets cannot be listed. */
static int backup_list(bk_backup_state *st)
{
    int rc = bk_sets(st->repo, &st->repo_sets);
    if (rc) return rc;
    json_t *doc = json_object_get(st->snap, "components_document");
    json_object_set(st->res, "freeze_ms", json_object_get(st->snap, "freeze_ms"));
    json_object_set(st->res, "snapshot_ms", json_object_get(st->snap, "snapshot_ms"));
    json_object_set(st->res, "freeze", json_object_get(st->snap, "freeze"));
    for (size_t i = 0; i < st->o.ndb; i++) {
        dbjob *j = &st->jobs[i];
        if (j->rc) continue; /* failed alone before the shadow copy */
        j->md = component_md(doc, j->component);
        if (left_out(j)) continue;
        json_t *range = json_object_get(j->md, "log_range");
        j->lo = (uint32_t)json_integer_value(json_array_get(range, 0));
        j->hi = (uint32_t)json_integer_value(json_array_get(range, 1));
        j->doc = doc;
        j->repo = st->repo;
        int lrc = 0;
        j->sets = st->repo_sets;
        if (j->md && (lrc = check_continues(j, st->repo_sets)))
            fail_db(j, lrc, "refused");
        else if (j->md && list_files(j, json_object_get(doc, "shadows"), j->edb, sizeof j->edb,
                                     j->logs, sizeof j->logs))
            fail_db(j, OM_E_FileNotFound, "listing the shadow copy");
        for (size_t f = 0; f < j->nfiles; f++)
            st->total += j->files[f].size;
    }
    for (size_t i = 0; i < st->o.ndb; i++)
        if (!st->jobs[i].md && !st->jobs[i].rc) {
            om_errf(OM_E_Internal, "the writer gave no backup metadata");
            fail_db(&st->jobs[i], OM_E_Internal, "PostSnapshot");
        }
    return 0;
}

/* Copy (and check, and commit): the databases in parallel after PostSnapshot, each on its own
 * (run_db), the bar on this thread. Leaves each database's failure in its job, and each
 * committed set pending for backup_complete. */
static void backup_copy(bk_backup_state *st)
{
    const bk_job_opts *o = &st->o;
    dbrun d = {.jobs = st->jobs, .draw = o->progress};
    if (d.draw) om_progress_start(&d.bar, "backup", st->total, "bytes");
    om_pool pool = {.workers = (int)o->ndb,
                    .ctx = &d,
                    .fn = run_db_at,
                    .progress = db_bar,
                    .count = &st->bytes};
    om_pool_run(&pool, o->ndb); /* run_db keeps each database's failure */
    if (d.draw) om_progress_end(&d.bar);
}

/* Complete: each component marked succeeded only when its set is committed (the writer records
 * and truncates only those), BackupComplete, then the sets published, or all discarded when it
 * failed (publish_sets). The first refusal here is the session's failure (a writer that went
 * away during the copy: its shadow copy was not held), and BackupComplete is not sent; it is
 * returned with its detail. The publication's failures are the sets' own. */
static int backup_complete(bk_backup_state *st)
{
    dbjob *jobs = st->jobs;
    int crc = 0;
    for (size_t i = 0; i < st->o.ndb && !crc; i++)
        if (jobs[i].component[0])
            crc = vss_req_set_backup_succeeded(st->r, jobs[i].instance, jobs[i].component,
                                               jobs[i].rc == 0);
    if (!crc) pause_at("committed");
    json_t *final = NULL;
    if (!crc) crc = vss_req_backup_complete(st->r, &final);
    json_decref(final);
    char cdetail[1200] = "";
    if (crc) snprintf(cdetail, sizeof cdetail, "the backup did not complete: %s", om_err_detail());
    pause_at("completed");
    publish_sets(jobs, st->o.ndb, st->repo, st->r, crc);
    if (crc) om_errf(crc, "%s", cdetail); /* the publication's errors are the sets' own */
    return crc;
}

/* A database as every JSON output names one (docs/cli.md): {"id", "name"}; id null when the
 * run failed before it knew it. */
static json_t *db_ref(const dbjob *j)
{
    return json_pack("{s:s?, s:s}", "id", j->id[0] ? j->id : NULL, "name", j->name);
}

/* One database in the result: its name, its set (when one was committed), its failure. The
 * first failure becomes the run's when the run itself did not fail (*rc, detail). */
static void report_db(json_t *res, const dbjob *j, int *rc, char *detail, size_t dn)
{
    json_array_append_new(json_object_get(res, "databases"), db_ref(j));
    if (j->md)
        json_array_append_new(json_object_get(res, "copies"),
                              json_pack("{s:o, s:s, s:s}", "database", db_ref(j), "server",
                                        om_json_str_or(j->md, "server", ""), "copy",
                                        j->passive ? "passive" : "active"));
    if (j->set_id[0])
        json_array_append_new(json_object_get(res, "sets"),
                              json_pack("{s:s, s:o, s:[i,i], s:I, s:I, s:I, s:I}", "id", j->set_id,
                                        "database", db_ref(j), "log_range", j->lo, j->hi,
                                        "bytes_stored", (json_int_t)j->bytes_stored, "blocks_new",
                                        (json_int_t)j->blocks_new, "blocks_reused",
                                        (json_int_t)j->blocks_reused, "blocks_stored_again",
                                        (json_int_t)j->stored_again));
    if (j->set_id[0] && j->cm)
        json_object_set(json_array_get(json_object_get(res, "sets"),
                                       json_array_size(json_object_get(res, "sets")) - 1),
                        "changemap", j->cm);
    if (!j->rc) return;
    json_array_append_new(
        json_object_get(res, "failed"),
        json_pack("{s:o, s:i, s:s}", "database", db_ref(j), "error", j->rc, "message", j->err));
    if (!*rc) {
        *rc = j->rc;
        snprintf(detail, dn, "%s", j->err);
    }
}

/* Report, and the one cleanup path whatever failed: the session released (the failure's detail
 * kept first: the release may set another), the result's databases, sets, failures and figures,
 * everything freed. Returns rc, else the first database's failure, with its detail. */
static int backup_report(bk_backup_state *st, int rc)
{
    json_decref(st->repo_sets);
    char detail[1200] = "";
    if (rc) snprintf(detail, sizeof detail, "%s", om_err_detail());
    if (st->r) vss_req_release(st->r);
    uint64_t stored = 0, again = 0;
    for (size_t i = 0; i < st->o.ndb && st->jobs; i++) {
        dbjob *j = &st->jobs[i];
        report_db(st->res, j, &rc, detail, sizeof detail);
        stored += j->bytes_stored;
        if (j->set_id[0]) again += j->stored_again;
        json_decref(j->info);
        json_decref(j->parent);
        json_decref(j->cm);
        free(j->files);
    }
    json_object_set_new(st->res, "bytes_read", json_integer((json_int_t)st->bytes));
    json_object_set_new(st->res, "bytes_stored", json_integer((json_int_t)stored));
    json_object_set_new(st->res, "blocks_stored_again", json_integer((json_int_t)again));
    json_object_set_new(st->res, "seconds", json_real((double)(om_mono_ns() - st->t0) / 1e9));
    json_decref(st->writers);
    json_decref(st->snap);
    free(st->jobs);
    bk_repo_close(st->repo);
    if (rc) om_errf(rc, "%s", detail);
    return rc;
}

int bk_backup_run(const bk_job_opts *in, json_t **result)
{
    bk_backup_state st = {.o = *in, .t0 = om_mono_ns()};
    st.res = json_pack("{s:s, s:[], s:[], s:[], s:[]}", "type", in->type, "sets", "databases",
                       "failed", "copies");
    *result = st.res;
    int rc = distinct_dbs(in, st.names, &st.o.ndb);
    if (rc) return rc; /* nothing opened yet, nothing to report */
    rc = backup_plan(&st);
    if (!rc) rc = backup_snapshot(&st);
    if (!rc) rc = backup_list(&st);
    if (!rc) backup_copy(&st); /* a database's failure is its own: the others go on */
    if (!rc) rc = backup_complete(&st);
    return backup_report(&st, rc);
}
