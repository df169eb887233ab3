/* bk_verify: reads back every block the sets reference and checks each file's content against
 * its SHA-256, on every core. The work is a list of (set, file); threads take the next one.
 * A file whose content and block list were already verified in another set is not read again
 * (full backups of one database share most files' blocks, not their checksums; logs share
 * both). */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/repo_internal.h"
#include "base/error.h"
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
    size_t njobs, next;
    uint64_t done, total, problems;
    uint64_t checked; /* block reads (done also counts blocks of files verified before) */
    bk_map good;      /* files verified: SHA-256 of (sha256, blocks) */
    int rc;           /* an error that stopped the run (not damage) */
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
    const char *sha = om_json_str_or(f, "sha256", ""), *bl = om_json_str_or(f, "blocks", "");
    unsigned n = 0;
    memset(key, 0, BK_ID_LEN);
    if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1) {
        EVP_DigestUpdate(c, sha, strlen(sha));
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

/* Checks one block of a file; 0 when good (its content fed to sha). */
static int check_block(verify *v, bk_reader *rd, uint8_t *data, const vjob *j, const char *hex,
                       EVP_MD_CTX *sha, uint64_t *sum)
{
    uint8_t id[BK_ID_LEN];
    const char *name = om_json_str_or(j->file, "name", "?");
    if (bk_unhex(hex, id, sizeof id)) {
        bk_damage d = {.set = j->set, .file = name, .block = hex, .what = "not a block id"};
        report(v, &d);
        return -1;
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
                 : bk_reader_read(rd, id, &e, pack, data);
    __atomic_add_fetch(&v->checked, 1, __ATOMIC_RELAXED);
    if (rc) {
        bk_damage d = {.set = j->set,
                       .file = name,
                       .block = hex,
                       .pack = pack,
                       .offset = e.off,
                       .what = om_err_detail()};
        report(v, &d);
        return -1;
    }
    EVP_DigestUpdate(sha, data, e.raw);
    *sum += e.raw;
    return 0;
}

static void check_file(verify *v, bk_reader *rd, uint8_t *data, const vjob *j)
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
        return;
    }
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    if (!sha || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(sha);
        pthread_mutex_lock(&v->m);
        if (!v->rc) v->rc = om_errf(OM_E_OutOfMemory, "out of memory");
        pthread_mutex_unlock(&v->m);
        return;
    }
    int bad = 0;
    uint64_t sum = 0;
    for (size_t i = 0; i < j->nblocks; i++) {
        char hex[65];
        memcpy(hex, blocks + 64 * i, 64);
        hex[64] = 0;
        bad |= check_block(v, rd, data, j, hex, sha, &sum) != 0;
        if (i % 16 == 15) progress(v, 16);
    }
    progress(v, j->nblocks % 16);
    unsigned n = 0;
    EVP_DigestFinal_ex(sha, got, &n);
    EVP_MD_CTX_free(sha);
    if (bad) return; /* the blocks were reported; the checksum would only repeat it */
    char what[160];
    if (sum != (uint64_t)om_json_int_or(j->file, "size", -1)) {
        snprintf(what, sizeof what, "its blocks hold %llu bytes, not the file's %lld",
                 (unsigned long long)sum, (long long)om_json_int_or(j->file, "size", -1));
        report_simple(v, j->set, name, what);
    } else if (bk_unhex(om_json_str_or(j->file, "sha256", ""), want, sizeof want) ||
               memcmp(want, got, sizeof want))
        report_simple(v, j->set, name, "its content does not match the file's SHA-256");
    else {
        bk_ent k = {0};
        memcpy(k.id, key, sizeof key);
        pthread_mutex_lock(&v->m);
        bk_map_put(&v->good, &k, NULL);
        pthread_mutex_unlock(&v->m);
    }
}

static void *worker(void *arg)
{
    verify *v = arg;
    bk_reader *rd = NULL;
    uint8_t *data = malloc(bk_repo_block_size(v->r));
    int rc = data ? bk_reader_new(v->r, &rd) : om_errf(OM_E_OutOfMemory, "out of memory");
    for (;;) {
        pthread_mutex_lock(&v->m);
        if (rc && !v->rc) v->rc = rc;
        size_t i = !rc && v->next < v->njobs ? v->next++ : v->njobs;
        pthread_mutex_unlock(&v->m);
        if (i >= v->njobs) break;
        check_file(v, rd, data, &v->jobs[i]);
    }
    bk_reader_free(rd);
    free(data);
    return NULL;
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
    int rc = bk_set_ids(r, &ids, &n);
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *s = NULL;
        int src = bk_set_read(r, ids[i], &s);
        if (src == OM_E_RepositoryCorrupt)
            report_simple(v, ids[i], NULL, om_err_detail());
        else if (src)
            rc = src;
        else
            json_array_append_new(sets, s);
    }
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

static int nthreads(size_t jobs)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 32) n = 32;
    if ((size_t)n > jobs) n = (long)(jobs ? jobs : 1);
    return (int)n;
}

int bk_verify(bk_repo *r, const char *set_id, bk_damage_cb cb, void *arg, uint64_t *blocks_checked)
{
    verify v = {.r = r, .cb = cb, .arg = arg};
    pthread_mutex_init(&v.m, NULL);
    json_t *sets = json_array();
    if (blocks_checked) *blocks_checked = 0;
    int rc = bk_index_refresh(r);
    if (!rc && set_id) {
        json_t *s = NULL;
        rc = bk_set_load(r, set_id, &s);
        if (rc == OM_E_RepositoryCorrupt) {
            report_simple(&v, set_id, NULL, om_err_detail());
            rc = 0;
        }
        if (s) json_array_append_new(sets, s);
    } else if (!rc)
        rc = load_all(&v, sets);
    size_t i;
    json_t *s;
    json_array_foreach(sets, i, s) if (!rc) rc = add_set(&v, s);
    if (!rc) {
        bk_progress(r, "verify", 0, v.total);
        int nt = nthreads(v.njobs);
        pthread_t th[32];
        int started = 0;
        for (int k = 1; k < nt; k++)
            started += pthread_create(&th[started], NULL, worker, &v) == 0;
        worker(&v);
        for (int k = 0; k < started; k++)
            pthread_join(th[k], NULL);
        rc = v.rc;
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
