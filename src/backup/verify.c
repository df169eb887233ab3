/* bk_verify: reads back every block the sets reference and checks each file's content against
 * its SHA-256, on every core. The work is a list of (set, file); threads take the next one.
 * A file whose content and block list were already verified in another set is not read again
 * (full backups of one database share most files' blocks, not their checksums; logs share
 * both).
 *
 * Before that, each set document is held to what a backup writes (repo.h lists the rules):
 * a set file is data anyone with write access to the repository can craft, and what a restore
 * does follows from it; whatever verify lets pass, a restore must be able to trust. bk_sets,
 * the listing every command starts from, is here because it holds each set to the same check
 * (bk_set_check) and lists one that fails it as damaged. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "backup/repo_internal.h"
#include "backup/setfiles.h"
#include "base/error.h"
#include "base/pool.h"
#include "base/proto.h"

typedef struct vjob {
    const char *set;
    json_t *file;
    size_t nblocks;
} vjob;

typedef struct verify {
    bk_repo *r;
    bk_damage_cb cb;
    void *arg;
    pthread_mutex_t m;
    vjob *jobs;
    size_t njobs;
    uint64_t done, total, problems;
    uint64_t checked; /* block reads (done also counts blocks of files verified before) */
    bk_map good;      /* files verified: SHA-256 of (sha256, blocks) */
} verify;

static void report(verify *v, const bk_damage *d)
{
    pthread_mutex_lock(&v->m);
    v->problems++;
    if (v->cb) v->cb(v->arg, d);
    pthread_mutex_unlock(&v->m);
}

static void report_simple(verify *v, const char *set, const char *file, const char *what)
{
    bk_damage d = {.set = set, .file = file, .what = what};
    report(v, &d);
}

/* The key under which a verified file is remembered. */
static void file_key(json_t *f, uint8_t key[BK_ID_LEN])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    const char *sha = om_json_str_or(f, "sha256", om_json_str_or(f, "regions_sha256", "")),
               *xxh = om_json_str_or(f, "xxh3_128", ""), *bl = om_json_str_or(f, "blocks", "");
    unsigned n = 0;
    memset(key, 0, BK_ID_LEN);
    if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1) {
        EVP_DigestUpdate(c, sha, strlen(sha));
        EVP_DigestUpdate(c, ":", 1);
        EVP_DigestUpdate(c, xxh, strlen(xxh));
        EVP_DigestUpdate(c, ":", 1);
        EVP_DigestUpdate(c, bl, strlen(bl));
        EVP_DigestFinal_ex(c, key, &n);
    }
    EVP_MD_CTX_free(c);
}

static void progress(verify *v, uint64_t blocks)
{
    pthread_mutex_lock(&v->m);
    v->done += blocks;
    bk_progress(v->r, "verify", v->done, v->total);
    pthread_mutex_unlock(&v->m);
}

/* Checks block i of a file; 0 when good (its content fed to sha). */
static int check_block(verify *v, bk_reader *rd, uint8_t *data, const vjob *j, size_t i,
                       const char *hex, EVP_MD_CTX *sha, XXH3_state_t *xx, uint64_t *sum)
{
    uint8_t id[BK_ID_LEN];
    const char *name = om_json_str_or(j->file, "name", "?");
    if (bk_unhex(hex, id, sizeof id)) {
        bk_damage d = {.set = j->set, .file = name, .block = hex, .what = "not a block id"};
        report(v, &d);
        return -1;
    }
    json_t *pcs = json_object_get(j->file, "pieces");
    if (pcs) {
        /* The regions form (repo.h): region i from its pieces, or block i whole; the file's
         * digest is over the ids, each of which the read checked. */
        uint32_t bs = bk_repo_block_size(v->r);
        uint64_t size = (uint64_t)om_json_int_or(j->file, "size", 0);
        uint32_t rl = size - (uint64_t)i * bs < bs ? (uint32_t)(size - (uint64_t)i * bs) : bs;
        char key[24];
        size_t got = 0;
        snprintf(key, sizeof key, "%zu", i);
        int rc = bk_reader_get_ref(rd, id, json_string_value(json_object_get(pcs, key)), rl, data,
                                   bs, &got);
        __atomic_add_fetch(&v->checked, 1, __ATOMIC_RELAXED);
        if (!rc && got != rl)
            rc = om_errf(OM_E_RepositoryCorrupt, "region %zu holds %zu bytes, not %u", i, got, rl);
        if (rc) {
            bk_damage d = {.set = j->set, .file = name, .block = hex, .what = om_err_detail()};
            report(v, &d);
            return -1;
        }
        EVP_DigestUpdate(sha, id, BK_ID_LEN);
        *sum += got;
        return 0;
    }
    bk_ent e;
    char pack[33];
    if (bk_index_find(v->r, id, &e, pack)) {
        bk_damage d = {.set = j->set,
                       .file = name,
                       .block = hex,
                       .what = "the block is not in any index (lost, or its index is damaged)"};
        report(v, &d);
        return -1;
    }
    int rc = e.raw > bk_repo_block_size(v->r)
                 ? om_errf(OM_E_RepositoryCorrupt,
                           "the index says it holds %u bytes, more than "
                           "a block",
                           e.raw)
                 : bk_reader_read_any(rd, id, &e, pack, data);
    __atomic_add_fetch(&v->checked, 1, __ATOMIC_RELAXED);
    if (rc) {
        pthread_rwlock_rdlock(&v->r->lk);
        int marked = bk_loc_bad(v->r, id, pack, e.off);
        pthread_rwlock_unlock(&v->r->lk);
        bk_damage d = {.set = j->set,
                       .file = name,
                       .block = hex,
                       .pack = pack,
                       .offset = e.off,
                       .what = om_err_detail(),
                       .marked = marked};
        report(v, &d);
        return -1;
    }
    EVP_DigestUpdate(sha, data, e.raw);
    if (xx) XXH3_128bits_update(xx, data, e.raw);
    *sum += e.raw;
    uint32_t bs = bk_repo_block_size(v->r);
    if (i + 1 < j->nblocks && e.raw != bs) {
        /* A restore lays block i at i times the block size. */
        char what[160];
        snprintf(what, sizeof what,
                 "block %zu holds %u bytes: every block but a file's last holds %u", i, e.raw, bs);
        bk_damage d = {
            .set = j->set, .file = name, .block = hex, .pack = pack, .offset = e.off, .what = what};
        report(v, &d);
        return -1;
    }
    return 0;
}

/* Damage is reported, not returned: 0 unless the check itself could not be made. */
static int check_file(verify *v, bk_reader *rd, uint8_t *data, const vjob *j)
{
    const char *name = om_json_str_or(j->file, "name", "?");
    const char *blocks = om_json_str_or(j->file, "blocks", "");
    uint8_t key[BK_ID_LEN], want[32], got[32];
    file_key(j->file, key);
    pthread_mutex_lock(&v->m);
    int seen = bk_map_get(&v->good, key) != NULL;
    pthread_mutex_unlock(&v->m);
    if (seen) {
        progress(v, j->nblocks);
        return 0;
    }
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    /* the file's XXH3-128, the restore's check, when the entry gives one (repo.h) */
    int has_xxh = json_object_get(j->file, "xxh3_128") && !json_object_get(j->file, "pieces");
    XXH3_state_t *xx = has_xxh ? XXH3_createState() : NULL;
    if (!sha || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1 || (has_xxh && !xx) ||
        (xx && XXH3_128bits_reset(xx) != XXH_OK)) {
        EVP_MD_CTX_free(sha);
        XXH3_freeState(xx);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    int bad = 0;
    uint64_t sum = 0;
    for (size_t i = 0; i < j->nblocks; i++) {
        char hex[65];
        memcpy(hex, blocks + 64 * i, 64);
        hex[64] = 0;
        bad |= check_block(v, rd, data, j, i, hex, sha, xx, &sum) != 0;
        if (i % 16 == 15) progress(v, 16);
    }
    progress(v, j->nblocks % 16);
    unsigned n = 0;
    EVP_DigestFinal_ex(sha, got, &n);
    EVP_MD_CTX_free(sha);
    XXH128_canonical_t xgot;
    uint8_t xwant[16];
    if (xx) XXH128_canonicalFromHash(&xgot, XXH3_128bits_digest(xx));
    XXH3_freeState(xx);
    if (bad) return 0; /* the blocks were reported; the checksum would only repeat it */
    char what[160];
    if (sum != (uint64_t)om_json_int_or(j->file, "size", -1)) {
        snprintf(what, sizeof what, "its blocks hold %llu bytes, not the file's %lld",
                 (unsigned long long)sum, (long long)om_json_int_or(j->file, "size", -1));
        report_simple(v, j->set, name, what);
    } else if (bk_unhex(om_json_str_or(
                            j->file,
                            json_object_get(j->file, "pieces") ? "regions_sha256" : "sha256", ""),
                        want, sizeof want) ||
               memcmp(want, got, sizeof want))
        report_simple(v, j->set, name, "its content does not match the file's SHA-256");
    else if (has_xxh && !bk_unhex(om_json_str_or(j->file, "xxh3_128", ""), xwant, sizeof xwant) &&
             memcmp(xwant, xgot.digest, sizeof xwant)) /* malformed: check_entry says so */
        report_simple(v, j->set, name,
                      "its content does not match the file's XXH3-128 (a restore from an encrypted "
                      "repository would refuse it; a plain one restores it by its SHA-256, with a "
                      "warning)");
    else {
        bk_ent k = {0};
        memcpy(k.id, key, sizeof key);
        pthread_mutex_lock(&v->m);
        bk_map_put(&v->good, &k, NULL);
        pthread_mutex_unlock(&v->m);
    }
    return 0;
}

/* A worker of the pool (base/pool.h): its reader and block buffer, then job after job. */
typedef struct vworker {
    bk_reader *rd;
    uint8_t *data;
} vworker;

static int worker_begin(void *arg, void **ws)
{
    verify *v = arg;
    vworker *w = calloc(1, sizeof *w);
    if (w) w->data = malloc(bk_repo_block_size(v->r));
    int rc =
        w && w->data ? bk_reader_new(v->r, &w->rd) : om_errf(OM_E_OutOfMemory, "out of memory");
    if (rc && w) {
        free(w->data);
        free(w);
    }
    *ws = rc ? NULL : w;
    return rc;
}

static void worker_end(void *arg, void *ws)
{
    vworker *w = ws;
    bk_reader_free(w->rd);
    free(w->data);
    free(w);
}

static int worker(void *arg, void *ws, size_t i)
{
    verify *v = arg;
    vworker *w = ws;
    return check_file(v, w->rd, w->data, &v->jobs[i]);
}

/* ---- the set document ---- */

static const char *const set_types[] = {"full", "copy", "incremental", "differential"};

/* The log range [*lo, *hi], or 0 when the set has none that a backup writes. */
static int log_range(json_t *set, uint32_t *lo, uint32_t *hi)
{
    json_t *lr = json_object_get(set, "log_range");
    json_t *a = json_array_get(lr, 0), *b = json_array_get(lr, 1);
    if (json_array_size(lr) != 2 || !json_is_integer(a) || !json_is_integer(b)) return 0;
    json_int_t x = json_integer_value(a), y = json_integer_value(b);
    if (x < 1 || y < x || y > UINT32_MAX) return 0;
    *lo = (uint32_t)x;
    *hi = (uint32_t)y;
    return 1;
}

/* 1 when p is an absolute path without "." or ".." components. */
static int clean_abs_path(const char *p)
{
    if (!p || p[0] != '/') return 0;
    for (const char *c = p; *c;) {
        while (*c == '/')
            c++;
        size_t l = strcspn(c, "/");
        if ((l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.')) return 0;
        c += l;
    }
    return 1;
}

/* The writer's metadata of this database (what a restore hands the writer: the paths and names
 * it restores to come from here): its database, base name and files agree with the set's.
 * edb: the set's database file name ("edb/<name>"), or NULL when it holds none. */
static void check_md(verify *v, const char *id, const char *label, json_t *md, const char *dbid,
                     const char *base, const char *edb)
{
    char what[600];
    if (!json_is_object(md)) {
        snprintf(what, sizeof what, "its %s is not an object", label);
        report_simple(v, id, NULL, what);
        return;
    }
    const char *mid = om_json_str_or(md, "db_id", ""), *mbase = om_json_str_or(md, "base", ""),
               *medb = om_json_str_or(md, "edb", ""), *mlogs = om_json_str_or(md, "logs", "");
    const char *slash = strrchr(medb, '/');
    char ename[300];
    uint32_t g;
    snprintf(ename, sizeof ename, "edb/%.250s", slash ? slash + 1 : medb);
    if (strcmp(mid, dbid))
        snprintf(what, sizeof what, "its %s names database '%.60s', not the set's %.60s", label,
                 mid, dbid);
    else if (strcmp(mbase, base))
        snprintf(what, sizeof what, "its %s names log base '%.20s', not the set's %s", label, mbase,
                 base);
    else if (!clean_abs_path(medb) || !clean_abs_path(mlogs) ||
             bk_set_file_kind(ename, base, &g) != BK_FILE_EDB)
        snprintf(what, sizeof what,
                 "its %s names the database file '%.200s' and the log folder '%.200s': not "
                 "absolute paths to a database file's name",
                 label, medb, mlogs);
    else if (edb && strcmp(ename, edb))
        snprintf(what, sizeof what,
                 "its %s names the database file %.250s, but the set holds %.250s", label,
                 slash + 1, edb);
    else
        return;
    report_simple(v, id, NULL, what);
}

/* The writer's documents, when the set holds them (a backup stores both). */
static void check_documents(verify *v, const char *id, json_t *set, const char *dbid,
                            const char *base, const char *edb)
{
    json_t *md = json_object_get(set, "backup_metadata"),
           *cdoc = json_object_get(set, "components_document");
    if (md) check_md(v, id, "backup metadata", md, dbid, base, edb);
    if (!cdoc) return;
    size_t i;
    json_t *c, *mine = NULL;
    json_array_foreach(json_object_get(cdoc, "components"), i, c)
    {
        json_t *cmd = json_object_get(c, "backup_metadata");
        if (!strcmp(om_json_str_or(cmd, "db_id", ""), dbid)) mine = cmd;
    }
    if (mine)
        check_md(v, id, "components document's metadata", mine, dbid, base, edb);
    else {
        char what[200];
        snprintf(what, sizeof what, "its components document has no component of database %.60s",
                 dbid);
        report_simple(v, id, NULL, what);
    }
}

/* One file entry: its name (a set's kind of file), size and block list agree. Returns its
 * kind (0 when its name is not one). */
static int check_entry(verify *v, const char *id, json_t *f, const char *base, uint32_t *gen)
{
    const char *name = om_json_str_or(f, "name", NULL);
    char what[400];
    *gen = 0;
    if (!name) {
        report_simple(v, id, NULL, "a file entry has no name");
        return 0;
    }
    int kind = base ? bk_set_file_kind(name, base, gen) : 0;
    if (base && !kind) report_simple(v, id, name, om_err_detail());
    om_err_clear();
    json_t *size = json_object_get(f, "size");
    uint64_t bs = bk_repo_block_size(v->r);
    size_t bl = strlen(om_json_str_or(f, "blocks", "")), nb = bl / 64;
    uint8_t sha[32];
    what[0] = 0;
    if (!json_is_integer(size) || json_integer_value(size) < 0)
        snprintf(what, sizeof what, "the entry has no size");
    else if (json_integer_value(size) == 0)
        snprintf(what, sizeof what,
                 "its size is 0: a database, log or checkpoint file is never empty");
    else if (bl % 64 == 0 && nb != ((uint64_t)json_integer_value(size) + bs - 1) / bs)
        snprintf(what, sizeof what,
                 "%lld bytes in %zu blocks: a file of that size is %llu blocks of %llu bytes",
                 (long long)json_integer_value(size), nb,
                 (unsigned long long)(((uint64_t)json_integer_value(size) + bs - 1) / bs),
                 (unsigned long long)bs);
    else if (bk_unhex(
                 om_json_str_or(f, json_object_get(f, "pieces") ? "regions_sha256" : "sha256", ""),
                 sha, sizeof sha))
        snprintf(what, sizeof what, "its SHA-256 is malformed");
    else if (json_object_get(f, "xxh3_128") && !json_object_get(f, "pieces") &&
             bk_unhex(om_json_str_or(f, "xxh3_128", ""), sha, 16))
        snprintf(what, sizeof what, "its XXH3-128 is malformed");
    else if (json_object_get(f, "pieces") && !json_is_object(json_object_get(f, "pieces")))
        snprintf(what, sizeof what, "its pieces are not an object");
    if (what[0]) report_simple(v, id, name, what);
    return kind;
}

/* The set document against what a backup writes; every problem reported. */
static void check_doc(verify *v, json_t *set)
{
    const char *id = om_json_str_or(set, "id", "?");
    const char *type = om_json_str_or(set, "type", "");
    char what[400];
    size_t t = 0;
    while (t < 4 && strcmp(type, set_types[t]))
        t++;
    if (t == 4) {
        snprintf(what, sizeof what, "%s%.40s%s", *type ? "unknown type '" : "the set has no type",
                 type, *type ? "'" : "");
        report_simple(v, id, NULL, what);
    }
    int whole = t < 2;
    json_t *db = json_object_get(set, "database");
    const char *dbid = om_json_str_or(db, "id", ""), *dbname = om_json_str_or(db, "name", "");
    const char *base = om_json_str_or(db, "base", "E00");
    if (!*dbid || !*dbname)
        report_simple(v, id, NULL, "the set names no database (its id and name)");
    if (!bk_base_ok(base)) {
        snprintf(what, sizeof what,
                 "its log base name '%.20s' is not one (three letters or digits): its files' "
                 "names cannot be checked",
                 base);
        report_simple(v, id, NULL, what);
        base = NULL;
    }
    uint32_t lo = 0, hi = 0;
    int range = log_range(set, &lo, &hi);
    if (!range) report_simple(v, id, NULL, "the set has no log range [first, last] (from 1)");
    /* Which generations of the range the set holds (a bounded range: one byte each). */
    uint8_t *held = range && hi - lo < (1u << 24) ? calloc((size_t)(hi - lo) + 1, 1) : NULL;
    json_t *seen = json_object();
    const char *edb = NULL;
    size_t nedb = 0, i;
    json_t *f;
    json_array_foreach(json_object_get(set, "files"), i, f)
    {
        uint32_t gen = 0;
        int kind = check_entry(v, id, f, base, &gen);
        const char *name = om_json_str_or(f, "name", NULL);
        if (name && json_object_get(seen, name))
            report_simple(v, id, name, "the set holds this name twice");
        else if (name)
            json_object_set_new(seen, name, json_true());
        if (kind == BK_FILE_EDB) {
            nedb++;
            edb = name;
        }
        if (kind != BK_FILE_LOG || !range) continue;
        if (gen < lo || gen > hi) {
            snprintf(what, sizeof what, "generation %u is outside the set's log range %u-%u", gen,
                     lo, hi);
            report_simple(v, id, name, what);
        } else if (held)
            held[gen - lo] = 1;
    }
    if (t < 4 && whole != (nedb == 1) && (whole || nedb)) {
        snprintf(
            what, sizeof what, "a set of type %s holds %zu database files (edb/): %s", type, nedb,
            whole ? "a full or copy set holds exactly one" : "only a full or copy set holds one");
        report_simple(v, id, NULL, what);
    }
    size_t missing = 0;
    uint32_t first_missing = 0;
    for (uint64_t g = lo; held && base && g <= hi; g++)
        if (!held[g - lo] && !missing++) first_missing = (uint32_t)g;
    if (missing) {
        snprintf(what, sizeof what,
                 "it holds no log file for %zu generation%s of its log range %u-%u (the first: "
                 "%u)",
                 missing, missing == 1 ? "" : "s", lo, hi, first_missing);
        report_simple(v, id, NULL, what);
    }
    if (*dbid && base) check_documents(v, id, set, dbid, base, nedb == 1 ? edb : NULL);
    free(held);
    json_decref(seen);
}

/* bk_set_check: the first problem is the answer. */
static void first_problem(void *arg, const bk_damage *d)
{
    char *out = arg;
    if (!out[0])
        snprintf(out, 600, "%s%s%s", d->file ? d->file : "", d->file ? ": " : "",
                 d->what ? d->what : "damaged");
}

int bk_set_check(bk_repo *r, json_t *set)
{
    char what[600] = "";
    verify v = {.r = r, .cb = first_problem, .arg = what};
    pthread_mutex_init(&v.m, NULL);
    if (!json_is_array(json_object_get(set, "files")))
        snprintf(what, sizeof what, "the set has no list of files");
    else
        check_doc(&v, set);
    pthread_mutex_destroy(&v.m);
    if (!what[0]) return 0;
    return om_errf(OM_E_RepositoryCorrupt, "set %.12s is not what a backup writes: %s",
                   om_json_str_or(set, "id", "?"), what);
}

/* ---- the sets listed, each checked (bk_set_check) ---- */

static int summary_order(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t tx = om_json_int_or(x, "committed_ns", 0), ty = om_json_int_or(y, "committed_ns", 0);
    if (tx != ty) return tx < ty ? -1 : 1;
    return strcmp(om_json_str_or(x, "id", ""), om_json_str_or(y, "id", ""));
}

static int is_document_key(const char *k)
{
    size_t l = strlen(k);
    return (l >= 9 && !strcmp(k + l - 9, "_metadata")) ||
           (l >= 9 && !strcmp(k + l - 9, "_document"));
}

/* A set read whole (with its "id") made its summary in place: "files" and the documents left
 * out, "nfiles" added. */
static void summarize(json_t *s)
{
    json_object_set_new(s, "nfiles",
                        json_integer((json_int_t)json_array_size(json_object_get(s, "files"))));
    json_object_del(s, "files");
    const char *k;
    json_t *val, *tmp;
    json_object_foreach_safe(s, tmp, k, val)
    {
        if (is_document_key(k)) json_object_del(s, k);
    }
}

/* The summary kept for id (an object naming that id) when its file still has the size it had
 * then (a set file rewritten or cut short is read again, and listed as damaged), or NULL. */
static json_t *kept_summary(bk_repo *r, json_t *kept, const char *id)
{
    json_t *k = json_object_get(kept, id), *s = json_object_get(k, "summary");
    uint64_t size = 0;
    if (!json_is_object(s) || strcmp(om_json_str_or(s, "id", ""), id) ||
        !json_is_integer(json_object_get(k, "size")))
        return NULL;
    if (bk_set_file_size(r, id, &size)) {
        om_err_clear();
        return NULL;
    }
    return (json_int_t)size == json_integer_value(json_object_get(k, "size")) ? k : NULL;
}

/* How list_sets lists: with the summaries kept in the data directory (bk_sets); every set read
 * whole, as summaries (bk_sets_whole) or as the whole sets (bk_sets_full). */
enum { SETS_KEPT, SETS_WHOLE, SETS_FULL };

static int list_sets(bk_repo *r, int how, json_t **out)
{
    char(*ids)[65] = NULL;
    size_t n = 0;
    *out = NULL;
    int rc = bk_set_ids(r, &ids, &n);
    if (rc) return rc;
    json_t **v = calloc(n + 1, sizeof *v);
    /* read whole, what is kept is not loaded: its thousands of small objects, freed, made the
     * reads after it (repo stats reads every set again) a third slower */
    json_t *kept = how == SETS_KEPT ? bk_summaries_load(r) : json_object(), *keep = json_object();
    if (!v || !kept || !keep) {
        free(v);
        free(ids);
        json_decref(kept);
        json_decref(keep);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    int oom = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *k = how == SETS_KEPT ? kept_summary(r, kept, ids[i]) : NULL, *s = NULL;
        if (k) {
            v[i] = json_deep_copy(json_object_get(k, "summary")); /* the caller may change it */
            oom |= !v[i];
            json_object_set(keep, ids[i], k);
            continue;
        }
        int src = bk_set_read(r, ids[i], &s);
        if (!src && (src = bk_set_check(r, s))) {
            json_t *db = json_incref(json_object_get(s, "database"));
            json_decref(s);
            v[i] = json_pack("{s:s, s:s}", "id", ids[i], "damaged", om_err_detail());
            oom |= !v[i];
            if (v[i] && json_is_object(db)) json_object_set(v[i], "database", db); /* messages */
            json_decref(db);
            continue;
        }
        if (src == OM_E_SetNotFound) { /* removed since it was listed (an expire beside us) */
            om_err_clear();
            continue;
        }
        if (src && src != OM_E_RepositoryCorrupt) { /* unreadable here (a permission, the disk) */
            rc = om_err_ctx(src, "set file sets/%s.json", ids[i]);
            break;
        }
        if (src) {
            v[i] = json_pack("{s:s, s:s}", "id", ids[i], "damaged", om_err_detail());
            oom |= !v[i];
            continue;
        }
        /* the summary shares its values with the set (keep is saved and gone before the
         * caller sees either): a shallow copy for a whole set, the set itself made one else */
        json_t *sum = how == SETS_FULL ? json_copy(s) : json_incref(s);
        if (sum) summarize(sum);
        uint64_t size = 0;
        if (sum && !bk_set_file_size(r, ids[i], &size))
            json_object_set_new(keep, ids[i],
                                json_pack("{s:I, s:O}", "size", (json_int_t)size, "summary", sum));
        om_err_clear();
        json_decref(sum);
        v[i] = s;
    }
    /* written again when it changed: a set summarized now, one gone (expired), one found damaged
     * (every set read whole: what was read is all there is to keep; the save writes nothing when
     * the file holds that already) */
    if (!rc && (how != SETS_KEPT || !json_equal(keep, kept))) {
        bk_pause_at("OMBRA_SUMMARIES_PAUSE", "save"); /* the test hook (repo.h) */
        bk_summaries_save(r, keep, how == SETS_KEPT ? kept : NULL);
    }
    json_decref(kept);
    json_decref(keep);
    /* a set that went is left out (NULL); an entry that could not be made (memory) fails the
     * list: a set dropped from it would be taken for one that is not there */
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i]) v[m++] = v[i];
    if (!rc && oom) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    json_t *a = rc ? NULL : json_array();
    if (!rc && !a) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    qsort(v, m, sizeof *v, summary_order);
    for (size_t i = 0; i < m; i++) {
        if (rc)
            json_decref(v[i]);
        else if (json_array_append_new(a, v[i])) /* it takes v[i] even when it fails */
            rc = om_errf(OM_E_OutOfMemory, "out of memory");
    }
    free(v);
    free(ids);
    if (rc) {
        json_decref(a);
        a = NULL;
    }
    *out = a;
    return rc;
}

int bk_sets(bk_repo *r, json_t **out)
{
    return list_sets(r, SETS_KEPT, out);
}

int bk_sets_whole(bk_repo *r, json_t **out)
{
    return list_sets(r, SETS_WHOLE, out);
}

int bk_sets_full(bk_repo *r, json_t **out)
{
    return list_sets(r, SETS_FULL, out);
}

/* Adds the files of one loaded set to the work list. */
static int add_set(verify *v, json_t *set)
{
    const char *id = om_json_str_or(set, "id", "?");
    size_t i;
    json_t *f;
    json_t *files = json_object_get(set, "files");
    if (!json_is_array(files)) {
        report_simple(v, id, NULL, "the set has no list of files");
        return 0;
    }
    check_doc(v, set);
    vjob *nj = realloc(v->jobs, (v->njobs + json_array_size(files) + 1) * sizeof *nj);
    if (!nj) return om_errf(OM_E_OutOfMemory, "out of memory");
    v->jobs = nj;
    json_array_foreach(files, i, f)
    {
        size_t bl = strlen(om_json_str_or(f, "blocks", ""));
        if (bl % 64) {
            report_simple(v, id, om_json_str_or(f, "name", "?"), "its block list is malformed");
            continue;
        }
        v->jobs[v->njobs++] = (vjob){id, f, bl / 64};
        v->total += bl / 64;
    }
    return 0;
}

/* Every set (damaged set files and index files reported), into sets. */
static int load_all(verify *v, json_t *sets)
{
    bk_repo *r = v->r;
    char(*ids)[65] = NULL;
    size_t n = 0;
    size_t nbad = 0; /* the damaged ones moved to the front of ids */
    int rc = bk_set_ids(r, &ids, &n);
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *s = NULL;
        int src = bk_set_read(r, ids[i], &s);
        if (src == OM_E_RepositoryCorrupt) {
            report_simple(v, ids[i], NULL, om_err_detail());
            memmove(ids[nbad++], ids[i], sizeof ids[i]);
        } else if (src)
            rc = src;
        else
            json_array_append_new(sets, s);
    }
    bk_summaries_forget(r, ids, nbad); /* listings take them for damaged from now on */
    free(ids);
    pthread_rwlock_rdlock(&r->lk);
    json_t *dmg = json_deep_copy(r->damage);
    pthread_rwlock_unlock(&r->lk);
    size_t i;
    json_t *d;
    json_array_foreach(dmg, i, d)
    {
        char what[600];
        snprintf(what, sizeof what, "index file index/%s.json: %s", om_json_str_or(d, "index", "?"),
                 om_json_str_or(d, "what", "?"));
        bk_damage x = {.pack = om_json_str_or(d, "pack", NULL), .what = what};
        report(v, &x);
    }
    json_decref(dmg);
    return rc;
}

/* Every pack the index lists starts with this repository's header. */
static int check_packs(verify *v)
{
    bk_repo *r = v->r;
    pthread_rwlock_rdlock(&r->lk);
    uint32_t n = r->npacks;
    char(*names)[33] = calloc(n + 1, sizeof *names);
    for (uint32_t i = 0; names && i < n; i++)
        memcpy(names[i], r->packs[i].name, 33);
    pthread_rwlock_unlock(&r->lk);
    if (!names) return om_errf(OM_E_OutOfMemory, "out of memory");
    int rc = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        char p[BK_PATH_MAX], what[400];
        om_file *f = NULL;
        rc = bk_path(r, p, sizeof p, "packs/%.2s/%s", names[i], names[i]);
        int orc = rc ? rc : om_open(r->vfs, p, OM_O_RDONLY, &f);
        if (orc == OM_E_FileNotFound) { /* its index file's damage says so */
            om_err_clear();
            continue;
        }
        if (!orc) orc = bk_pack_header_check(r, f);
        om_close(f);
        if (orc == OM_E_RepositoryCorrupt) {
            snprintf(what, sizeof what, "pack packs/%.2s/%s: %s", names[i], names[i],
                     om_err_detail());
            bk_damage d = {.pack = names[i], .what = what};
            report(v, &d);
        } else
            rc = orc;
    }
    free(names);
    return rc;
}

int bk_verify(bk_repo *r, const char *set_id, bk_damage_cb cb, void *arg, uint64_t *blocks_checked)
{
    verify v = {.r = r, .cb = cb, .arg = arg};
    pthread_mutex_init(&v.m, NULL);
    json_t *sets = json_array();
    if (blocks_checked) *blocks_checked = 0;
    int rc = bk_index_refresh(r);
    if (!rc) rc = bk_damaged_load(r, 1);
    json_t *dl = NULL;
    if (!rc) rc = bk_damaged_list(r, &dl);
    if (!rc && json_is_string(json_object_get(dl, "problem"))) {
        char what[600];
        snprintf(what, sizeof what,
                 "%s: ignored; written again with the damaged copies this verify finds",
                 om_json_str_or(dl, "problem", "?"));
        report_simple(&v, NULL, NULL, what);
    }
    json_decref(dl);
    r->finder = "verify";
    if (!rc && set_id) {
        json_t *s = NULL;
        rc = bk_set_load(r, set_id, &s);
        if (rc == OM_E_RepositoryCorrupt) {
            report_simple(&v, set_id, NULL, om_err_detail());
            rc = 0;
        }
        if (s) json_array_append_new(sets, s);
    } else if (!rc) {
        rc = load_all(&v, sets);
        if (!rc) rc = check_packs(&v);
    }
    size_t i;
    json_t *s;
    json_array_foreach(sets, i, s) if (!rc) rc = add_set(&v, s);
    if (!rc) {
        bk_progress(r, "verify", 0, v.total);
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        om_pool pool = {.workers = cores > 32 ? 32 : (int)cores,
                        .ctx = &v,
                        .fn = worker,
                        .worker_begin = worker_begin,
                        .worker_end = worker_end};
        rc = om_pool_run(&pool, v.njobs);
    }
    r->finder = NULL;
    /* What it found damaged is listed (damaged.json) even when the run stopped: a backup
     * stores those blocks again. */
    int src = bk_damaged_save(r);
    if (src && !rc) {
        char what[1200];
        snprintf(what, sizeof what, "the damaged copies found could not be listed: %s",
                 om_err_detail());
        report_simple(&v, NULL, NULL, what);
    }
    if (blocks_checked) *blocks_checked = v.checked;
    if (!rc && v.problems)
        rc = om_errf(OM_E_RepositoryCorrupt, "%s: %llu problem%s found in %zu set%s", r->path,
                     (unsigned long long)v.problems, v.problems == 1 ? "" : "s",
                     json_array_size(sets), json_array_size(sets) == 1 ? "" : "s");
    json_decref(sets);
    free(v.jobs);
    bk_map_free(&v.good);
    pthread_mutex_destroy(&v.m);
    return rc;
}
