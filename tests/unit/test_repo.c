/* src/backup/repo: the backup repository. Blocks come back as they went in, are stored once,
 * stay secret and authenticated when encrypted, survive a writer that dies, and damage is found
 * and named; expire keeps whole chains and frees what nothing uses. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "backup/repo.h"
#include "backup/setfiles.h"
#include "backup/stats.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"

#define BS 4096u

static char tmpdir[256], repo[300];

static int setup_dir(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ombra-repo-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(repo, sizeof repo, "%s/repo", tmpdir);
    om_log_min_level(OM_ERROR); /* damage tests warn on purpose */
    return 0;
}

static int teardown_dir(void **s)
{
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- helpers ---- */

/* Block content from a seed: incompressible, or text that compresses well. */
static void fill(uint8_t *b, size_t n, uint64_t seed, int text)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = text ? "SECRET-MARKER "[i % 14] : (uint8_t)x;
    }
    if (text) memcpy(b, &seed, sizeof seed); /* distinct per seed */
}

static void sha256(const void *d, size_t n, uint8_t out[32])
{
    unsigned l = 0;
    EVP_Digest(d, n, out, &l, EVP_sha256(), NULL);
}

static bk_repo *make_repo(const char *path, int encrypt, const char *pass)
{
    bk_init_opts o = {
        .block_size = BS, .pack_size = 64 << 10, .encrypt = encrypt, .passphrase = pass};
    assert_int_equal(bk_repo_init(path, &o), 0);
    bk_repo *r = NULL;
    assert_int_equal(bk_repo_open(path, pass, &r), 0);
    return r;
}

/* Puts one file made of the blocks with these seeds and adds it to the set. Returns how many
 * blocks were new. */
static int put_file(bk_writer *w, const char *name, const uint64_t *seeds, size_t n, int text)
{
    uint8_t *all = malloc(n * BS + 1), (*ids)[BK_ID_LEN] = calloc(n + 1, BK_ID_LEN), sum[32];
    int fresh = 0;
    for (size_t i = 0; i < n; i++) {
        int isnew = 0;
        fill(all + i * BS, BS, seeds[i], text);
        assert_int_equal(bk_put_block(w, all + i * BS, BS, ids[i], &isnew), 0);
        fresh += isnew;
    }
    sha256(all, n * BS, sum);
    XXH128_canonical_t xc; /* as a backup records it (job.c) */
    XXH128_canonicalFromHash(&xc, XXH3_128bits(all, n * BS));
    assert_int_equal(bk_set_add_file(w, name, (uint64_t)n * BS, sum, xc.digest,
                                     (const uint8_t(*)[BK_ID_LEN])ids, n,
                                     json_pack("{s:s}", "source", name)),
                     0);
    free(all);
    free(ids);
    return fresh;
}

static void seeds_from(uint64_t *s, size_t n, uint64_t first)
{
    for (size_t i = 0; i < n; i++)
        s[i] = first + i;
}

/* Commits the set as a backup writes it, with log range lo-hi (the caller put its files), and
 * publishes it. */
static void commit_range(bk_writer *w, bk_repo *r, const char *type, const char *db, int lo, int hi,
                         char id[65])
{
    json_t *doc =
        json_pack("{s:s, s:{s:s, s:s, s:s}, s:s, s:[i,i], s:n}", "type", type, "database", "id", db,
                  "name", db, "base", "E00", "server", "srv1", "log_range", lo, hi, "parent");
    assert_int_equal(bk_set_commit(w, doc, id), 0);
    assert_int_equal(strlen(id), 64);
    assert_int_equal(bk_set_publish(r, id), 0);
}

/* Seeds no other block of the tests uses: each set's own log generation. */
static uint64_t log_seed = 1ull << 40;

/* Adds the set's log generation 1 (one block of its own), then commit_range 1-1. */
static void commit(bk_writer *w, bk_repo *r, const char *type, const char *db, char id[65])
{
    uint64_t seed = __atomic_fetch_add(&log_seed, 1, __ATOMIC_RELAXED);
    put_file(w, "logs/E0000000001.log", &seed, 1, 1);
    commit_range(w, r, type, db, 1, 1, id);
}

/* One set of one file with blocks seeds first..first+n-1; its id into id. */
static void one_set(bk_repo *r, const char *type, const char *db, uint64_t first, size_t n,
                    char id[65])
{
    uint64_t *s = calloc(n, sizeof *s);
    seeds_from(s, n, first);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    put_file(w, "edb/db.edb", s, n, 0);
    commit(w, r, type, db, id);
    free(s);
}

static void block_id(bk_repo *r, uint64_t seed, uint8_t id[BK_ID_LEN])
{
    /* The id a block gets, through a writer that is then dropped. */
    uint8_t b[BS];
    fill(b, BS, seed, 0);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(bk_put_block(w, b, BS, id, NULL), 0);
    bk_set_abort(w);
}

/* Files under dir (recursively) whose name ends with suffix ("" for all). */
static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    if (!d) return 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue; /* not .tmp names */
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st)) continue;
        size_t l = strlen(e->d_name), sl = strlen(suffix);
        if (S_ISDIR(st.st_mode))
            n += count_files(p, suffix);
        else if (l >= sl && !strcmp(e->d_name + l - sl, suffix))
            n++;
    }
    closedir(d);
    return n;
}

/* The first file under dir (recursively) whose name ends with suffix, into out. */
static int find_file(const char *dir, const char *suffix, char *out, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    if (!d) return 0;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st)) continue;
        size_t l = strlen(e->d_name), sl = strlen(suffix);
        if (S_ISDIR(st.st_mode))
            found = find_file(p, suffix, out, len);
        else if (l >= sl && !strcmp(e->d_name + l - sl, suffix)) {
            snprintf(out, len, "%s", p);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

static void flip_byte(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    struct stat st;
    fstat(fd, &st);
    if (off < 0) off += st.st_size;
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static int file_contains(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    size_t nl = strlen(needle);
    while (d && !found && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st)) continue;
        if (S_ISDIR(st.st_mode)) {
            found = file_contains(p, needle);
            continue;
        }
        FILE *f = fopen(p, "rb");
        char *buf = malloc((size_t)st.st_size + 1);
        size_t n = fread(buf, 1, (size_t)st.st_size, f);
        fclose(f);
        for (size_t i = 0; i + nl <= n && !found; i++)
            found = !memcmp(buf + i, needle, nl);
        free(buf);
    }
    if (d) closedir(d);
    return found;
}

/* Damage reports, kept for assertions. */
static void collect(void *arg, const bk_damage *d)
{
    json_array_append_new((json_t *)arg,
                          json_pack("{s:s?, s:s?, s:s?, s:s?, s:s, s:b}", "set", d->set, "file",
                                    d->file, "block", d->block, "pack", d->pack, "what", d->what,
                                    "marked", d->marked));
}

/* ---- round trip and dedup ---- */

static void blocks_and_sets_come_back_as_they_went_in(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    assert_int_equal(bk_repo_block_size(r), BS);
    uint64_t seeds[5] = {1, 2, 3, 4, 5};
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "edb/db.edb", seeds, 3, 0), 3);
    assert_int_equal(put_file(w, "logs/E0000000001.log", seeds + 3, 2, 1), 2);
    /* an empty file has no blocks (the repository takes one; verify says no backup writes it) */
    uint8_t none[32];
    sha256("", 0, none);
    assert_int_equal(bk_set_add_file(w, "logs/E00.chk", 0, none, NULL, NULL, 0, NULL), 0);
    char id[65];
    commit_range(w, r, "full", "db-1", 1, 1, id);
    bk_repo_close(r);

    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 1);
    json_t *sum = json_array_get(sets, 0);
    assert_string_equal(om_json_str_or(sum, "id", ""), id);
    /* the empty checkpoint entry is nothing a backup writes: the summary says it is damaged
     * (a restore never uses the set), naming why, and keeps the database for messages */
    assert_non_null(strstr(om_json_str_or(sum, "damaged", ""), "size is 0"));
    assert_string_equal(om_json_str_or(json_object_get(sum, "database"), "id", ""), "db-1");
    assert_null(json_object_get(sum, "files"));
    json_decref(sets);

    char prefix[9];
    snprintf(prefix, sizeof prefix, "%.8s", id);
    json_t *set = NULL;
    assert_int_equal(bk_set_load(r, prefix, &set), 0);
    assert_string_equal(om_json_str_or(set, "id", ""), id);
    json_t *f = json_array_get(json_object_get(set, "files"), 1);
    assert_string_equal(om_json_str_or(f, "name", ""), "logs/E0000000001.log");
    assert_string_equal(om_json_str_or(json_object_get(f, "meta"), "source", ""),
                        "logs/E0000000001.log");
    { /* its XXH3-128 as given, canonical hex; none for the entry given none */
        uint8_t *c = malloc(2 * BS);
        fill(c, BS, seeds[3], 1);
        fill(c + BS, BS, seeds[4], 1);
        XXH128_canonical_t xc;
        XXH128_canonicalFromHash(&xc, XXH3_128bits(c, 2 * BS));
        char hex[33];
        bk_hex(xc.digest, 16, hex);
        assert_string_equal(om_json_str_or(f, "xxh3_128", ""), hex);
        assert_null(json_object_get(json_array_get(json_object_get(set, "files"), 2), "xxh3_128"));
        free(c);
    }
    const char *blocks = om_json_str_or(f, "blocks", "");
    assert_int_equal(strlen(blocks), 2 * 64);
    for (int i = 0; i < 2; i++) {
        uint8_t bid[BK_ID_LEN], *data = NULL, want[BS];
        char hex[65];
        size_t len = 0;
        snprintf(hex, sizeof hex, "%.64s", blocks + 64 * i);
        for (int k = 0; k < BK_ID_LEN; k++)
            sscanf(hex + 2 * k, "%2hhx", &bid[k]);
        assert_int_equal(bk_get_block(r, bid, &data, &len), 0);
        fill(want, BS, seeds[3 + i], 1);
        assert_int_equal(len, BS);
        assert_memory_equal(data, want, BS);
        free(data);
    }
    assert_string_equal(om_json_str_or(set, "type", ""), "full");
    assert_int_equal(om_json_int_or(set, "bytes", 0), 5 * BS);
    assert_int_equal(json_array_size(json_object_get(set, "files")), 3);
    assert_int_equal(bk_set_check(r, set), OM_E_RepositoryCorrupt);
    json_decref(set);
    assert_int_equal(bk_set_load(r, "ffffffffff", &set), OM_E_SetNotFound);
    assert_int_equal(bk_set_load(r, "not-hex", &set), OM_E_InvalidParameter);
    uint64_t checked = 0;
    json_t *dmg = json_array();
    assert_int_equal(bk_verify(r, NULL, collect, dmg, &checked), OM_E_RepositoryCorrupt);
    assert_int_equal(checked, 5);
    assert_int_equal(json_array_size(dmg), 1);
    assert_string_equal(om_json_str_or(json_array_get(dmg, 0), "file", ""), "logs/E00.chk");
    assert_non_null(strstr(om_json_str_or(json_array_get(dmg, 0), "what", ""), "size is 0"));
    json_decref(dmg);
    bk_repo_close(r);
}

static void a_block_is_stored_once(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    uint64_t seeds[6] = {7, 7, 8, 9, 8, 7}; /* three distinct blocks */
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "a", seeds, 6, 0), 3);
    uint64_t in, stored, bn, br;
    bk_writer_stats(w, &in, &stored, &bn, &br);
    assert_int_equal(in, 6 * BS);
    assert_int_equal(bn, 3);
    assert_int_equal(br, 3);
    char id1[65], id2[65];
    commit_range(w, r, "full", "db-1", 1, 1, id1);
    char packs[400];
    snprintf(packs, sizeof packs, "%s/packs", repo);
    int npacks = count_files(packs, "");

    /* A second set of the same content stores nothing. */
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "a", seeds, 6, 0), 0);
    bk_writer_stats(w, &in, &stored, &bn, &br);
    assert_int_equal(stored, 0);
    assert_int_equal(bn, 0);
    commit_range(w, r, "full", "db-1", 1, 1, id2);
    assert_string_not_equal(id1, id2);
    assert_int_equal(count_files(packs, ""), npacks);
    bk_repo_close(r);

    /* Nor does a new process (the index on disk says where they are). */
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "b", seeds + 2, 2, 0), 0);
    bk_set_abort(w);
    assert_int_equal(count_files(packs, ""), npacks);
    bk_repo_close(r);
}

typedef struct putter {
    bk_writer *w;
    int t;
    int fresh;
} putter;

static void *put_thread(void *arg)
{
    putter *p = arg;
    uint64_t seeds[80];
    seeds_from(seeds, 64, 1);                     /* shared by every thread */
    seeds_from(seeds + 64, 16, 100 * (p->t + 1)); /* this thread's own */
    char name[40];
    if (p->t)
        snprintf(name, sizeof name, "logs/E00%08X.log", (unsigned)p->t);
    else
        snprintf(name, sizeof name, "edb/db.edb");
    p->fresh = put_file(p->w, name, seeds, 80, p->t & 1);
    return NULL;
}

static void four_threads_put_at_once_and_each_block_is_stored_once(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    putter p[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        p[t] = (putter){w, t, 0};
        assert_int_equal(pthread_create(&th[t], NULL, put_thread, &p[t]), 0);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    uint64_t in, stored, bn, br;
    bk_writer_stats(w, &in, &stored, &bn, &br);
    /* shared blocks: 64 text (odd threads) + 64 binary (even threads); own: 4 x 16 */
    assert_int_equal(bn, 64 + 64 + 64);
    assert_int_equal(br, 4 * 80 - bn);
    assert_int_equal(p[0].fresh + p[1].fresh + p[2].fresh + p[3].fresh, (int)bn);
    char id[65];
    commit_range(w, r, "full", "db-1", 1, 3, id);
    json_t *dmg = json_array();
    uint64_t checked = 0;
    assert_int_equal(bk_verify(r, id, collect, dmg, &checked), 0);
    assert_int_equal(json_array_size(dmg), 0);
    json_decref(dmg);
    bk_repo_close(r);
}

typedef struct setter {
    bk_repo *r;
    const char *db;
    uint64_t first;
    char id[65];
} setter;

static void *set_thread(void *arg)
{
    setter *st = arg;
    bk_writer *w = NULL;
    uint64_t seeds[40];
    seeds_from(seeds, 20, 1);              /* shared by both */
    seeds_from(seeds + 20, 20, st->first); /* its own */
    if (bk_set_begin(st->r, &w)) return NULL;
    put_file(w, "edb/db.edb", seeds, 40, 0);
    commit(w, st->r, "full", st->db, st->id);
    return NULL;
}

static void two_sets_written_at_once_share_blocks_and_both_verify(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    setter a = {r, "A", 1000, ""}, b = {r, "B", 2000, ""};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, set_thread, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, set_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(strlen(a.id), 64);
    assert_int_equal(strlen(b.id), 64);
    bk_repo_close(r);
    /* another process sees both, and every block once or (a race lost) twice */
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 2);
    json_decref(sets);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    bk_repo_close(r);
}

/* ---- encryption ---- */

static void an_encrypted_repository_round_trips_and_hides_content(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 1, "correct horse");
    uint64_t seeds[4] = {11, 12, 13, 14};
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "edb/secret-file.edb", seeds, 4, 1), 4);
    char id[65];
    commit(w, r, "full", "db-1", id);
    bk_repo_close(r);

    assert_false(file_contains(repo, "SECRET-MARKER"));
    assert_false(file_contains(repo, "secret-file.edb"));

    assert_int_equal(bk_repo_open(repo, "correct horse", &r), 0);
    json_t *set = NULL;
    assert_int_equal(bk_set_load(r, id, &set), 0);
    json_t *f = json_array_get(json_object_get(set, "files"), 0);
    assert_string_equal(om_json_str_or(f, "name", ""), "edb/secret-file.edb");
    uint8_t bid[BK_ID_LEN], *data = NULL, want[BS];
    size_t len = 0;
    const char *hex = om_json_str_or(f, "blocks", "");
    for (int k = 0; k < BK_ID_LEN; k++)
        sscanf(hex + 2 * k, "%2hhx", &bid[k]);
    assert_int_equal(bk_get_block(r, bid, &data, &len), 0);
    fill(want, BS, 11, 1);
    assert_memory_equal(data, want, BS);
    free(data);
    json_decref(set);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    json_t *info = bk_repo_info(r);
    assert_null(json_object_get(json_object_get(info, "encryption"), "key"));
    json_decref(info);
    bk_repo_close(r);
}

static void a_wrong_passphrase_is_one_clear_error(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 1, "correct horse");
    bk_repo_close(r);
    r = NULL;
    assert_int_equal(bk_repo_open(repo, "wrong horse", &r), OM_E_BadPassphrase);
    assert_null(r);
    assert_non_null(strstr(om_err_detail(), "wrong passphrase"));
    assert_int_equal(bk_repo_open(repo, NULL, &r), OM_E_BadPassphrase);
    assert_non_null(strstr(om_err_detail(), "passphrase is needed"));
    /* an encrypted repository cannot be made without one */
    char other[400];
    snprintf(other, sizeof other, "%s/other", tmpdir);
    bk_init_opts o = {.encrypt = 1};
    assert_int_equal(bk_repo_init(other, &o), OM_E_InvalidParameter);
}

static void block_ids_depend_on_the_repository_key(void **s)
{
    (void)s;
    char a[400], b[400], c[400];
    snprintf(a, sizeof a, "%s/a", tmpdir);
    snprintf(b, sizeof b, "%s/b", tmpdir);
    snprintf(c, sizeof c, "%s/c", tmpdir);
    bk_repo *ra = make_repo(a, 1, "same passphrase"), *rb = make_repo(b, 1, "same passphrase"),
            *rc = make_repo(c, 0, NULL);
    uint8_t ia[BK_ID_LEN], ib[BK_ID_LEN], ic[BK_ID_LEN], plain[BK_ID_LEN], blk[BS];
    block_id(ra, 42, ia);
    block_id(rb, 42, ib);
    block_id(rc, 42, ic);
    fill(blk, BS, 42, 0);
    sha256(blk, BS, plain);
    assert_memory_not_equal(ia, ib, BK_ID_LEN);
    assert_memory_not_equal(ia, plain, BK_ID_LEN);
    assert_memory_equal(ic, plain, BK_ID_LEN); /* plain: the SHA-256 */
    bk_repo_close(ra);
    bk_repo_close(rb);
    bk_repo_close(rc);
}

/* ---- crash safety ---- */

static void a_writer_that_dies_lists_no_set_and_its_finished_packs_are_reused(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    uint64_t seeds[40];
    seeds_from(seeds, 40, 500);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child dies without committing, as kill -9 would stop it: no cleanup at all. */
        bk_repo *cr = NULL;
        bk_writer *w = NULL;
        uint8_t b[BS], id[BK_ID_LEN];
        if (bk_repo_open(repo, NULL, &cr) || bk_set_begin(cr, &w)) _exit(1);
        for (int i = 0; i < 40; i++) {
            fill(b, BS, seeds[i], 0);
            if (bk_put_block(w, b, BS, id, NULL)) _exit(2);
        }
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 0);
    json_decref(sets);
    char packs[400];
    snprintf(packs, sizeof packs, "%s/packs", repo);
    assert_int_equal(count_files(packs, ".tmp"), 1); /* the pack it had open */

    /* 64 KiB packs of 4 KiB blocks: the first 32 blocks were in two finished packs. */
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "edb/db.edb", seeds, 40, 0), 40 - 32);
    char id[65];
    commit(w, r, "full", "db-1", id);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);

    /* An aborted set: nothing listed, every block it wrote reused. */
    uint64_t more[10];
    seeds_from(more, 10, 900);
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "x", more, 10, 0), 10);
    bk_set_abort(w);
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 1);
    json_decref(sets);
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "x", more, 10, 0), 0);
    bk_set_abort(w);

    /* expire removes the dead writer's leftover */
    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "leftovers_removed", 0), 1);
    assert_int_equal(count_files(packs, ".tmp"), 0);
    json_decref(rep);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    bk_repo_close(r);
}

static void a_truncated_pack_loses_its_tail_and_the_next_set_stores_it_again(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char first[65], second[65], packs[400], pack[1024];
    one_set(r, "full", "db-1", 100, 8, first);
    bk_repo_close(r);
    snprintf(packs, sizeof packs, "%s/packs", repo);
    assert_int_equal(count_files(packs, ""), 1);
    assert_true(find_file(packs, "", pack, sizeof pack));
    struct stat st;
    stat(pack, &st);
    assert_int_equal(truncate(pack, st.st_size / 2), 0); /* the last blocks are gone */

    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    bk_writer *w = NULL;
    uint64_t seeds[8];
    seeds_from(seeds, 8, 100);
    assert_int_equal(bk_set_begin(r, &w), 0);
    int fresh = put_file(w, "edb/db.edb", seeds, 8, 0);
    assert_true(fresh >= 4 && fresh < 8);
    commit(w, r, "full", "db-1", second);
    assert_int_equal(bk_verify(r, second, NULL, NULL, NULL), 0);
    /* the whole repository says the pack is short */
    json_t *dmg = json_array();
    assert_int_equal(bk_verify(r, NULL, collect, dmg, NULL), OM_E_RepositoryCorrupt);
    assert_true(json_array_size(dmg) >= 1);
    assert_non_null(strstr(om_json_str_or(json_array_get(dmg, 0), "what", ""), "ends at"));
    json_decref(dmg);
    bk_repo_close(r);
}

/* ---- verify ---- */

static json_t *verify_all(bk_repo *r, int want)
{
    json_t *dmg = json_array();
    assert_int_equal(bk_verify(r, NULL, collect, dmg, NULL), want);
    return dmg;
}

static void verify_names_a_flipped_byte_in_a_pack(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char id[65], pack[1024], packs[400];
    one_set(r, "full", "db-1", 1, 3, id);
    snprintf(packs, sizeof packs, "%s/packs", repo);
    assert_true(find_file(packs, "", pack, sizeof pack));
    /* its id before the damage: once verify lists the copy damaged, a writer stores it again */
    uint8_t bid[BK_ID_LEN], *data = NULL;
    size_t len;
    block_id(r, 1, bid);
    flip_byte(pack, 32 + 56 + 100); /* inside the first block */
    json_t *dmg = verify_all(r, OM_E_RepositoryCorrupt);
    assert_int_equal(json_array_size(dmg), 1);
    json_t *d = json_array_get(dmg, 0);
    assert_string_equal(om_json_str_or(d, "set", ""), id);
    assert_string_equal(om_json_str_or(d, "file", ""), "edb/db.edb");
    assert_int_equal(strlen(om_json_str_or(d, "block", "")), 64);
    assert_non_null(strstr(pack, om_json_str_or(d, "pack", "-")));
    assert_non_null(strstr(om_json_str_or(d, "what", ""), "does not match its id"));
    json_decref(dmg);
    /* a read of that block says so too */
    assert_int_equal(bk_get_block(r, bid, &data, &len), OM_E_RepositoryCorrupt);
    assert_null(data);
    /* a record header damaged the same way */
    flip_byte(pack, 32 + 10);
    dmg = verify_all(r, OM_E_RepositoryCorrupt);
    assert_non_null(strstr(om_json_str_or(json_array_get(dmg, 0), "what", ""), "checksum"));
    json_decref(dmg);
    bk_repo_close(r);
}

static void verify_names_a_flipped_byte_in_an_encrypted_pack(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 1, "pw");
    char id[65], pack[1024], packs[400];
    one_set(r, "full", "db-1", 1, 3, id);
    snprintf(packs, sizeof packs, "%s/packs", repo);
    assert_true(find_file(packs, "", pack, sizeof pack));
    flip_byte(pack, -5); /* the last block's tag */
    json_t *dmg = verify_all(r, OM_E_RepositoryCorrupt);
    assert_int_equal(json_array_size(dmg), 1);
    assert_non_null(strstr(om_json_str_or(json_array_get(dmg, 0), "what", ""), "authentication"));
    json_decref(dmg);
    bk_repo_close(r);
}

static void verify_names_a_flipped_byte_in_an_index(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char id[65], idx[1024], dir[400];
    one_set(r, "full", "db-1", 1, 3, id);
    bk_repo_close(r);
    snprintf(dir, sizeof dir, "%s/index", repo);
    assert_true(find_file(dir, ".json", idx, sizeof idx));
    flip_byte(idx, 40);
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    json_t *dmg = verify_all(r, OM_E_RepositoryCorrupt);
    /* the index itself, and each block of the set it no longer finds (3 and the log's) */
    assert_int_equal(json_array_size(dmg), 1 + 3 + 1);
    int index_named = 0, blocks_named = 0;
    size_t i;
    json_t *d;
    json_array_foreach(dmg, i, d)
    {
        const char *what = om_json_str_or(d, "what", "");
        if (strstr(what, "index/") && strstr(what, "does not match its name")) index_named++;
        if (!strcmp(om_json_str_or(d, "set", ""), id) &&
            !strcmp(om_json_str_or(d, "file", ""), "edb/db.edb") &&
            strlen(om_json_str_or(d, "block", "")) == 64 && strstr(what, "not in any index"))
            blocks_named++;
    }
    assert_int_equal(index_named, 1);
    assert_int_equal(blocks_named, 3);
    json_decref(dmg);
    /* expire deletes nothing on the word of a damaged index */
    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 1, &rep), OM_E_RepositoryCorrupt);
    assert_null(rep);
    char packs[400];
    snprintf(packs, sizeof packs, "%s/packs", repo);
    assert_int_equal(count_files(packs, ""), 1);
    bk_repo_close(r);
}

static void verify_names_a_flipped_byte_in_a_set_file(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char good[65], bad[65], path[600];
    one_set(r, "full", "db-1", 1, 3, bad);
    one_set(r, "full", "db-2", 10, 3, good);
    snprintf(path, sizeof path, "%s/sets/%s.json", repo, bad);
    flip_byte(path, 20);
    json_t *dmg = verify_all(r, OM_E_RepositoryCorrupt);
    assert_int_equal(json_array_size(dmg), 1);
    json_t *d = json_array_get(dmg, 0);
    assert_string_equal(om_json_str_or(d, "set", ""), bad);
    assert_non_null(strstr(om_json_str_or(d, "what", ""), "does not match its name"));
    json_decref(dmg);
    /* the good set still verifies; the list shows the damaged one as such */
    assert_int_equal(bk_verify(r, good, NULL, NULL, NULL), 0);
    json_t *sets = NULL, *set = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 2);
    int damaged = 0;
    size_t i;
    json_t *x;
    json_array_foreach(sets, i, x) damaged += json_object_get(x, "damaged") != NULL;
    assert_int_equal(damaged, 1);
    json_decref(sets);
    assert_int_equal(bk_set_load(r, bad, &set), OM_E_RepositoryCorrupt);
    /* and expire refuses to delete anything */
    assert_int_equal(bk_expire(r, 1, NULL), OM_E_RepositoryCorrupt);
    bk_repo_close(r);
}

/* ---- expire ---- */

static int has_block(bk_repo *r, uint64_t seed)
{
    uint8_t id[BK_ID_LEN], b[BS], *data = NULL;
    size_t len = 0;
    fill(b, BS, seed, 0);
    sha256(b, BS, id);
    int rc = bk_get_block(r, id, &data, &len);
    free(data);
    if (rc) assert_int_equal(rc, OM_E_ObjectNotFound);
    return rc == 0;
}

static void set_of_blocks(bk_repo *r, const char *type, const char *db, const uint64_t *seeds,
                          size_t n, char id[65])
{
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    if (!strcmp(type, "full") || !strcmp(type, "copy")) {
        put_file(w, "edb/f.edb", seeds, n, 0);
        commit(w, r, type, db, id);
    } else {
        put_file(w, "logs/E0000000001.log", seeds, n, 0);
        commit_range(w, r, type, db, 1, 1, id);
    }
}

static void expire_keeps_the_newest_chains_and_frees_what_nothing_uses(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char f1[65], i1[65], f2[65], i2[65], d2[65], f3[65], c3[65], i3[65], fb[65];
    /* database A: F1 I1 F2 I2 D2 F3 C3 I3; database B: FB (one full only) */
    uint64_t s_f1[5] = {1, 1001, 1002, 1003, 1004}; /* 1 is in every full */
    uint64_t s_i1[2] = {1101, 1102};
    uint64_t s_f2[3] = {1, 2001, 2002};
    uint64_t s_i2[1] = {2101}, s_d2[1] = {2201};
    uint64_t s_f3[3] = {1, 3001, 3002};
    uint64_t s_c3[2] = {3001, 3501}, s_i3[1] = {3101}, s_fb[2] = {5001, 5002};
    set_of_blocks(r, "full", "A", s_f1, 5, f1);
    set_of_blocks(r, "full", "B", s_fb, 2, fb);
    set_of_blocks(r, "incremental", "A", s_i1, 2, i1);
    set_of_blocks(r, "full", "A", s_f2, 3, f2);
    set_of_blocks(r, "incremental", "A", s_i2, 1, i2);
    set_of_blocks(r, "differential", "A", s_d2, 1, d2);
    set_of_blocks(r, "full", "A", s_f3, 3, f3);
    set_of_blocks(r, "copy", "A", s_c3, 2, c3);
    set_of_blocks(r, "incremental", "A", s_i3, 1, i3);

    /* another handle holds the repository: expire waits for nobody */
    bk_repo *other = NULL;
    assert_int_equal(bk_repo_open(repo, NULL, &other), 0);
    assert_int_equal(bk_expire(r, 2, NULL), OM_E_RepositoryInUse);
    bk_repo_close(other);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(bk_expire(r, 2, NULL), OM_E_RepositoryInUse);
    bk_set_abort(w);
    assert_int_equal(bk_expire(r, 0, NULL), OM_E_InvalidParameter);

    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 2, &rep), 0);
    json_t *del = json_object_get(rep, "sets_deleted");
    assert_int_equal(json_array_size(del), 2); /* F1 and I1 */
    int got_f1 = 0, got_i1 = 0;
    size_t i;
    json_t *x;
    json_array_foreach(del, i, x)
    {
        got_f1 += !strcmp(json_string_value(x), f1);
        got_i1 += !strcmp(json_string_value(x), i1);
    }
    assert_int_equal(got_f1 + got_i1, 2);
    assert_int_equal(om_json_int_or(rep, "sets_kept", 0), 7);
    assert_int_equal(om_json_int_or(rep, "packs_deleted", 0), 1);   /* I1's */
    assert_int_equal(om_json_int_or(rep, "packs_rewritten", 0), 1); /* F1's: 1 of 5 used */
    assert_true(om_json_int_or(rep, "bytes_freed", 0) > 0);
    json_decref(rep);
    assert_true(has_block(r, 1));
    assert_false(has_block(r, 1001));
    assert_false(has_block(r, 1101));
    assert_true(has_block(r, 5001));
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    bk_repo_close(r);

    /* keep one: F2, I2 and D2 go; the copy after F3 stays; B keeps its only full */
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(json_array_size(json_object_get(rep, "sets_deleted")), 3);
    json_decref(rep);
    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 4);
    const char *want[4] = {fb, f3, c3, i3}; /* oldest first */
    json_array_foreach(sets, i, x) assert_string_equal(om_json_str_or(x, "id", ""), want[i]);
    json_decref(sets);
    assert_true(has_block(r, 1));
    assert_false(has_block(r, 2001));
    assert_true(has_block(r, 3501));
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    (void)f2;
    (void)i2;
    (void)d2;
    bk_repo_close(r);
}

/* Small packs (each small backup's only one) are merged into full-sized ones once there are 32
 * of them, and not before: fewer index files for every open to load, every block still there,
 * and a merged repository is left as it is by the next expire. */
static void small_packs_are_merged_once_there_are_32_of_them(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char id[65];
    char index_dir[400];
    snprintf(index_dir, sizeof index_dir, "%s/index", repo);
    for (uint64_t i = 0; i < 31; i++) {
        uint64_t seed = 8000 + i;
        set_of_blocks(r, "incremental", "A", &seed, 1, id);
    }
    assert_int_equal(count_files(index_dir, ".json"), 31);
    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "packs_merged", 0), 0); /* 31: not yet */
    assert_int_equal(om_json_int_or(rep, "packs_rewritten", 0), 0);
    json_decref(rep);
    assert_int_equal(count_files(index_dir, ".json"), 31);
    uint64_t seed = 8031;
    set_of_blocks(r, "incremental", "A", &seed, 1, id);
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "packs_merged", 0), 32);
    assert_int_equal(om_json_int_or(rep, "packs_rewritten", 0), 32);
    assert_int_equal(om_json_int_or(rep, "sets_kept", 0), 32);
    /* the headers of 31 packs, net of the new packs' */
    assert_true(om_json_int_or(rep, "bytes_freed", 0) > 0);
    assert_true(om_json_int_or(rep, "bytes_freed", 0) < 32 * 1024);
    json_decref(rep);
    /* 32 blocks of 4 KiB in packs of 64 KiB */
    assert_true(count_files(index_dir, ".json") <= 3);
    bk_repo_close(r);
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    for (uint64_t i = 0; i < 32; i++)
        assert_true(has_block(r, 8000 + i));
    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 32);
    json_decref(sets);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    int left = count_files(index_dir, ".json");
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "packs_rewritten", 0), 0);
    json_decref(rep);
    assert_int_equal(count_files(index_dir, ".json"), left);
    bk_repo_close(r);
}

/* Bytes of the files under dir (recursively). */
static uint64_t tree_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t n = 0;
    struct dirent *e;
    if (!d) return 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st)) continue;
        n += S_ISDIR(st.st_mode) ? tree_bytes(p) : (uint64_t)st.st_size;
    }
    closedir(d);
    return n;
}

/* A merge killed after its new packs were durable leaves the old small packs beside them (put
 * back here by hand): the next expire drops them without copying their blocks a second time.
 * And a small pack whose copy is damaged (not yet listed) is left as it is and does not count
 * towards the 32: with 31 sound ones nothing is copied, and packs_merged counts only packs
 * that were merged. */
static void merges_copy_nothing_twice_and_damaged_small_packs_stay(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char id[65], cmd[1400], packs[400], pack[1024];
    snprintf(packs, sizeof packs, "%s/packs", repo);
    uint64_t seed = 40000;
    set_of_blocks(r, "incremental", "A", &seed, 1, id);
    assert_true(find_file(packs, "", pack, sizeof pack)); /* the first set's only pack */
    for (seed = 40001; seed < 40032; seed++)
        set_of_blocks(r, "incremental", "A", &seed, 1, id);
    snprintf(cmd, sizeof cmd, "cp -a %s %s.bak", repo, repo);
    assert_int_equal(system(cmd), 0);
    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "packs_merged", 0), 32);
    json_decref(rep);
    uint64_t merged = tree_bytes(packs);
    bk_repo_close(r);
    snprintf(cmd, sizeof cmd, "cp -an %s.bak/index/. %s/index/ && cp -an %s.bak/packs/. %s/packs/",
             repo, repo, repo, repo);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "packs_merged", 0), 32); /* dropped, nothing copied */
    json_decref(rep);
    assert_int_equal(tree_bytes(packs), merged);
    for (seed = 40000; seed < 40032; seed++)
        assert_true(has_block(r, seed));
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    bk_repo_close(r);

    /* the old repository again, its first pack damaged: 31 sound small packs */
    snprintf(cmd, sizeof cmd, "rm -rf %s && mv %s.bak %s", repo, repo, repo);
    assert_int_equal(system(cmd), 0);
    flip_byte(pack, 32 + 56 + 100);
    uint64_t before = tree_bytes(packs);
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    for (int run = 0; run < 2; run++) {
        assert_int_equal(bk_expire(r, 1, &rep), 0);
        assert_int_equal(om_json_int_or(rep, "packs_merged", 0), 0);
        assert_int_equal(om_json_int_or(rep, "packs_rewritten", 0), 0);
        json_decref(rep);
        assert_int_equal(tree_bytes(packs), before);
    }
    /* one more sound one: the 32 sound ones merge, the damaged one stays as it is */
    seed = 40100;
    set_of_blocks(r, "incremental", "A", &seed, 1, id);
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "packs_merged", 0), 32);
    assert_int_equal(om_json_int_or(rep, "packs_rewritten", 0), 32);
    json_decref(rep);
    assert_int_equal(access(pack, F_OK), 0);
    for (seed = 40001; seed < 40032; seed++)
        assert_true(has_block(r, seed));
    bk_repo_close(r);
}

/* A whole set id is read by its name, without listing sets/: in upper case too; a missing one
 * is SetNotFound with the listing's hint; and a set another handle published after this one
 * opened has its blocks readable (the index files written since are loaded after the read). */
static void a_whole_set_id_is_read_by_name_with_the_index_written_since(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL), *other = NULL;
    char id[65], later[65], upper[65];
    one_set(r, "full", "A", 100, 3, id);
    assert_int_equal(bk_repo_open(repo, NULL, &other), 0);
    one_set(other, "full", "A", 200, 3, later); /* after r opened */
    bk_repo_close(other);
    json_t *set = NULL;
    for (int i = 0; i < 65; i++)
        upper[i] = (char)toupper((unsigned char)later[i]);
    assert_int_equal(bk_set_load(r, upper, &set), 0);
    assert_string_equal(om_json_str_or(set, "type", ""), "full");
    assert_string_equal(om_json_str_or(set, "id", ""), later); /* lower case, as named */
    assert_string_equal(om_json_str_or(set, "id", ""), later); /* lower case, as named */
    json_decref(set);
    for (uint64_t k = 200; k < 203; k++)
        assert_true(has_block(r, k));
    char gone[65];
    snprintf(gone, sizeof gone, "%s", id);
    gone[0] = gone[0] == 'a' ? 'b' : 'a';
    assert_int_equal(bk_set_load(r, gone, &set), OM_E_SetNotFound);
    assert_null(set);
    assert_non_null(strstr(om_err_detail(), "HINT: ombra backups list"));
    om_err_clear();
    assert_int_equal(bk_set_load(r, id, &set), 0);
    json_decref(set);
    bk_repo_close(r);
}

/* ---- sets count once published ---- */

/* Whether sets/<id><suffix> exists. */
static int exists(const char *id, const char *suffix)
{
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/sets/%s%s", repo, id, suffix);
    return stat(p, &st) == 0;
}

static size_t nsets(bk_repo *r)
{
    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    size_t n = json_array_size(sets);
    json_decref(sets);
    return n;
}

/* A set committed but not published: one edb file of blocks first..first+n-1, log 1. */
static void pending_set(bk_repo *r, uint64_t first, size_t n, char id[65])
{
    uint64_t seeds[16];
    seeds_from(seeds, n, first);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    put_file(w, "edb/db.edb", seeds, n, 0);
    put_file(w, "logs/E0000000001.log", seeds, 1, 1);
    json_t *doc =
        json_pack("{s:s, s:{s:s, s:s, s:s}, s:[i,i], s:n}", "type", "full", "database", "id",
                  "db-1", "name", "db-1", "base", "E00", "log_range", 1, 1, "parent");
    assert_int_equal(bk_set_commit(w, doc, id), 0);
}

static void a_committed_set_counts_only_once_published(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char id[65], other[65];
    json_t *set = NULL;
    pending_set(r, 1, 4, id);
    assert_true(exists(id, ".pending"));
    assert_false(exists(id, ".json"));
    /* nobody sees it: the list, a load, verify, another process */
    assert_int_equal(nsets(r), 0);
    assert_int_equal(bk_set_load(r, id, &set), OM_E_SetNotFound);
    uint64_t checked = 1;
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, &checked), 0);
    assert_int_equal(checked, 0);
    bk_repo *r2 = NULL;
    assert_int_equal(bk_repo_open(repo, NULL, &r2), 0);
    assert_int_equal(nsets(r2), 0);

    /* published: listed, whole, in every handle; publishing twice is done already */
    assert_int_equal(bk_set_publish(r, id), 0);
    assert_false(exists(id, ".pending"));
    assert_int_equal(nsets(r2), 1);
    assert_int_equal(bk_set_load(r2, id, &set), 0);
    json_decref(set);
    assert_int_equal(bk_verify(r2, NULL, NULL, NULL, NULL), 0);
    assert_int_equal(bk_set_publish(r, id), 0);
    bk_repo_close(r2);

    /* discarded: gone, never listed; its blocks stay and are reused */
    pending_set(r, 100, 4, other);
    assert_int_equal(bk_set_discard(r, other), 0);
    assert_false(exists(other, ".pending"));
    assert_int_equal(nsets(r), 1);
    assert_int_equal(bk_set_discard(r, other), OM_E_SetNotFound);
    assert_int_equal(bk_set_publish(r, other), OM_E_SetNotFound);
    bk_writer *w = NULL;
    uint64_t seeds[4];
    seeds_from(seeds, 4, 100);
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "edb/db.edb", seeds, 4, 0), 0);
    bk_set_abort(w);
    /* a published set is not discarded; ids are checked */
    assert_int_equal(bk_set_discard(r, id), OM_E_SetNotFound);
    assert_non_null(strstr(om_err_detail(), "published"));
    assert_int_equal(nsets(r), 1);
    char bad[65] = "../sets/x", upper[65];
    assert_int_equal(bk_set_publish(r, bad), OM_E_InvalidParameter);
    for (int i = 0; i < 64; i++)
        upper[i] = id[i] >= 'a' ? (char)(id[i] - 32) : id[i];
    upper[64] = 0;
    assert_int_equal(bk_set_discard(r, upper), OM_E_InvalidParameter);
    bk_repo_close(r);
}

static void a_backup_killed_between_commit_and_publish_leaves_no_set_and_expire_removes_it(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char kept[65];
    one_set(r, "full", "db-1", 500, 3, kept);
    fflush(NULL);
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* Commits, then dies as kill -9 would stop it: before publishing. */
        bk_repo *cr = NULL;
        char id[65];
        if (bk_repo_open(repo, NULL, &cr)) _exit(1);
        pending_set(cr, 1, 4, id);
        if (write(fd[1], id, 64) != 64) _exit(2);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char id[65] = {0};
    assert_int_equal(read(fd[0], id, 64), 64);
    close(fd[0]);
    close(fd[1]);
    assert_true(exists(id, ".pending"));
    assert_int_equal(nsets(r), 1);
    bk_repo_close(r);
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    assert_int_equal(nsets(r), 1);
    json_t *set = NULL;
    assert_int_equal(bk_set_load(r, id, &set), OM_E_SetNotFound);

    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "pending_removed", 0), 1);
    assert_true(om_json_int_or(rep, "leftovers_removed", 0) >= 1);
    assert_int_equal(json_array_size(json_object_get(rep, "sets_deleted")), 0);
    json_decref(rep);
    assert_false(exists(id, ".pending"));
    assert_int_equal(bk_set_publish(r, id), OM_E_SetNotFound);
    /* the pending set's blocks counted for nothing: only the kept set's remain */
    assert_false(has_block(r, 2));
    assert_true(has_block(r, 500));
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    bk_repo_close(r);
}

/* ---- encryption bound to the repository ---- */

static json_t *load_config(const char *dir)
{
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *c = json_load_file(p, 0, NULL);
    assert_non_null(c);
    return c;
}

static void save_config(const char *dir, json_t *c)
{
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(json_dump_file(c, p, JSON_INDENT(2)), 0);
    json_decref(c);
}

/* What a careful attacker does after an edit: the plain checksum of the edited config. */
static void reseal_plain(json_t *c)
{
    json_t *x = json_deep_copy(c);
    json_object_del(x, "auth");
    char *text = json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS), hex[65];
    uint8_t sum[32];
    sha256(text, strlen(text), sum);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", sum[i]);
    json_object_set_new(c, "auth", json_string(hex));
    free(text);
    json_decref(x);
}

static void remove_dir_files(const char *sub)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -f %s/%s/*", repo, sub);
    assert_int_equal(system(cmd), 0);
}

static void an_encrypted_repository_is_never_opened_as_a_plain_one(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 1, "pw");
    char id[65], packs[400];
    one_set(r, "full", "db-1", 1, 3, id);
    bk_repo_close(r);
    snprintf(packs, sizeof packs, "%s/packs", repo);
    int npacks = count_files(packs, "");

    /* "encryption": null edited in: with the passphrase refused, without it too */
    json_t *c = load_config(repo);
    json_object_set_new(c, "encryption", json_null());
    save_config(repo, c);
    assert_int_equal(bk_repo_open(repo, "pw", &r), OM_E_BadPassphrase);
    assert_null(r);
    assert_non_null(strstr(om_err_detail(), "is not encrypted, but a passphrase was given"));
    assert_non_null(strstr(om_err_detail(), "HINT"));
    assert_int_equal(bk_repo_open(repo, NULL, &r), OM_E_RepositoryCorrupt);
    assert_non_null(strstr(om_err_detail(), "config.json is damaged or was edited"));

    /* its checksum made plain as well: the index files give it away */
    c = load_config(repo);
    reseal_plain(c);
    save_config(repo, c);
    assert_int_equal(bk_repo_open(repo, NULL, &r), OM_E_RepositoryCorrupt);
    assert_non_null(strstr(om_err_detail(), "is encrypted"));
    assert_non_null(strstr(om_err_detail(), "index/"));
    /* and without its index files, the sets */
    remove_dir_files("index");
    assert_int_equal(bk_repo_open(repo, NULL, &r), OM_E_RepositoryCorrupt);
    char want[120];
    snprintf(want, sizeof want, "sets/%s.json is encrypted", id);
    assert_non_null(strstr(om_err_detail(), want));
    assert_int_equal(count_files(packs, ""), npacks); /* nothing was written */
    assert_false(file_contains(repo, "SECRET-MARKER"));
}

static void config_edits_and_other_versions_are_refused(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 1, "pw");
    bk_repo_close(r);
    json_t *orig = load_config(repo);

    /* a setting of an encrypted repository: not without the key */
    json_t *c = json_deep_copy(orig);
    json_object_set_new(c, "block_size", json_integer(2 * BS));
    save_config(repo, c);
    assert_int_equal(bk_repo_open(repo, "pw", &r), OM_E_RepositoryCorrupt);
    assert_non_null(strstr(om_err_detail(), "config.json was altered"));
    /* the key's parameters are bound to the wrapped keys */
    c = json_deep_copy(orig);
    json_object_set_new(json_object_get(json_object_get(c, "encryption"), "kdf"), "n",
                        json_integer(16384));
    save_config(repo, c);
    assert_int_equal(bk_repo_open(repo, "pw", &r), OM_E_BadPassphrase);
    assert_non_null(strstr(om_err_detail(), "config.json was altered"));
    /* another id: the wrapped keys were made for this one */
    c = json_deep_copy(orig);
    json_object_set_new(c, "id", json_string("01234567-89ab-4def-8123-456789abcdef"));
    save_config(repo, c);
    assert_int_equal(bk_repo_open(repo, "pw", &r), OM_E_BadPassphrase);
    /* an older format: one clear line */
    c = json_deep_copy(orig);
    json_object_set_new(c, "version", json_integer(1));
    save_config(repo, c);
    assert_int_equal(bk_repo_open(repo, "pw", &r), OM_E_NotRepository);
    assert_non_null(strstr(om_err_detail(), "format version 1 is not supported"));
    save_config(repo, orig);
    assert_int_equal(bk_repo_open(repo, "pw", &r), 0);
    bk_repo_close(r);

    /* a plain repository: its checksum finds damage */
    char plain[400];
    snprintf(plain, sizeof plain, "%s/plain", tmpdir);
    r = make_repo(plain, 0, NULL);
    bk_repo_close(r);
    c = load_config(plain);
    json_object_set_new(c, "created", json_string("2020-01-01T00:00:00Z"));
    save_config(plain, c);
    assert_int_equal(bk_repo_open(plain, NULL, &r), OM_E_RepositoryCorrupt);
    assert_non_null(strstr(om_err_detail(), "config.json is damaged"));
}

static void a_plain_repository_opened_with_a_passphrase_is_refused(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char id[65];
    one_set(r, "full", "db-1", 1, 3, id);
    bk_repo_close(r);
    r = NULL;
    assert_int_equal(bk_repo_open(repo, "correct horse", &r), OM_E_BadPassphrase);
    assert_null(r);
    char want[400];
    snprintf(want, sizeof want, "%s is not encrypted, but a passphrase was given", repo);
    assert_non_null(strstr(om_err_detail(), want));
    assert_null(strchr(om_err_detail(), '\n'));
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    bk_repo_close(r);
}

static const char *repo_id(bk_repo *r, char out[37])
{
    json_t *info = bk_repo_info(r);
    snprintf(out, 37, "%s", om_json_str_or(info, "id", ""));
    json_decref(info);
    return out;
}

static void copy_file(const char *from, const char *to)
{
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "mkdir -p $(dirname %.1200s) && cp %.1200s %.1200s", to, from, to);
    assert_int_equal(system(cmd), 0);
}

/* Sets and index files copied from b into a are refused naming both repositories. */
static void check_foreign(const char *a, const char *b, const char *pass)
{
    bk_repo *ra = make_repo(a, pass != NULL, pass), *rb = make_repo(b, pass != NULL, pass);
    char mine[65], theirs[65], ida[37], idb[37], from[1200], to[1200];
    one_set(ra, "full", "db-1", 1, 3, mine);
    one_set(rb, "full", "db-1", 1000, 3, theirs);
    repo_id(ra, ida);
    repo_id(rb, idb);
    json_t *set = NULL;
    uint8_t bid[BK_ID_LEN];
    char hex[65];
    assert_int_equal(bk_set_load(rb, theirs, &set), 0);
    snprintf(hex, sizeof hex, "%.64s",
             om_json_str_or(json_array_get(json_object_get(set, "files"), 0), "blocks", ""));
    assert_int_equal(bk_unhex(hex, bid, BK_ID_LEN), 0);
    json_decref(set);
    bk_repo_close(rb);
    snprintf(from, sizeof from, "%s/sets/%s.json", b, theirs);
    snprintf(to, sizeof to, "%s/sets/%s.json", a, theirs);
    copy_file(from, to);
    assert_int_equal(bk_set_load(ra, theirs, &set), OM_E_RepositoryCorrupt);
    char want[300];
    snprintf(want, sizeof want, "sets/%s.json: it belongs to repository %s, not to this one (%s)",
             theirs, idb, ida);
    assert_non_null(strstr(om_err_detail(), want));
    json_t *dmg = verify_all(ra, OM_E_RepositoryCorrupt);
    assert_int_equal(json_array_size(dmg), 1);
    assert_string_equal(om_json_str_or(json_array_get(dmg, 0), "set", ""), theirs);
    assert_non_null(strstr(om_json_str_or(json_array_get(dmg, 0), "what", ""), idb));
    json_decref(dmg);
    assert_int_equal(bk_verify(ra, mine, NULL, NULL, NULL), 0);
    unlink(to);

    /* an index file (and its pack) */
    char idx[1024], pack[1024], dir[1200];
    snprintf(dir, sizeof dir, "%s/index", b);
    assert_true(find_file(dir, ".json", idx, sizeof idx));
    snprintf(to, sizeof to, "%s/index/%s", a, strrchr(idx, '/') + 1);
    copy_file(idx, to);
    snprintf(dir, sizeof dir, "%s/packs", b);
    assert_true(find_file(dir, "", pack, sizeof pack));
    const char *pn = strrchr(pack, '/') + 1;
    snprintf(to, sizeof to, "%s/packs/%.2s/%s", a, pn, pn);
    copy_file(pack, to);
    bk_repo_close(ra);
    assert_int_equal(bk_repo_open(a, pass, &ra), 0);
    dmg = verify_all(ra, OM_E_RepositoryCorrupt);
    int named = 0;
    size_t i;
    json_t *d;
    json_array_foreach(dmg, i, d)
    {
        const char *what = om_json_str_or(d, "what", "");
        named += strstr(what, "index/") && strstr(what, idb) && strstr(what, ida);
    }
    assert_int_equal(named, 1);
    json_decref(dmg);
    /* and its blocks are not this repository's */
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(bk_get_block(ra, bid, &data, &len), OM_E_ObjectNotFound);
    bk_repo_close(ra);
}

static void sets_and_indexes_of_another_repository_are_refused(void **s)
{
    (void)s;
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/a", tmpdir);
    snprintf(b, sizeof b, "%s/b", tmpdir);
    check_foreign(a, b, NULL);
    snprintf(a, sizeof a, "%s/ea", tmpdir);
    snprintf(b, sizeof b, "%s/eb", tmpdir);
    check_foreign(a, b, "same passphrase");
}

/* ---- the names a set holds ---- */

static void set_file_names_are_what_a_backup_writes_and_nothing_else(void **s)
{
    (void)s;
    uint32_t g = 99;
    assert_true(bk_base_ok("E00"));
    assert_true(bk_base_ok("R1a"));
    assert_false(bk_base_ok("E0"));
    assert_false(bk_base_ok("E0/"));
    assert_false(bk_base_ok("E000"));
    assert_false(bk_base_ok(NULL));
    assert_int_equal(bk_set_file_kind("edb/mail.edb", "E00", &g), BK_FILE_EDB);
    assert_int_equal(g, 0);
    assert_int_equal(bk_set_file_kind("edb/My-db_1.v2.edb", "E00", &g), BK_FILE_EDB);
    assert_int_equal(bk_set_file_kind("logs/E0000000001.log", "E00", &g), BK_FILE_LOG);
    assert_int_equal(g, 1);
    assert_int_equal(bk_set_file_kind("logs/E00000000FF.log", "E00", &g), BK_FILE_LOG);
    assert_int_equal(g, 255);
    assert_int_equal(bk_set_file_kind("logs/R1a.chk", "R1a", &g), BK_FILE_CHK);
    char longname[260];
    memset(longname, 'a', sizeof longname);
    memcpy(longname, "edb/", 4);
    snprintf(longname + 240, 20, ".edb");
    static const char *const bad[] = {"../../etc/passwd",
                                      "/etc/passwd",
                                      "edb/../mail.edb",
                                      "edb/.mail.edb",
                                      "edb/a/b.edb",
                                      "edb/mail.txt",
                                      "edb/.edb",
                                      "edb/ma il.edb",
                                      "logs/E0000000000.log",
                                      "logs/E00000000ff.log",
                                      "logs/E0100000001.log",
                                      "logs/E000000001.log",
                                      "logs/E00.chk/../x",
                                      "logs/E01.chk",
                                      "logs/../E00.chk",
                                      "E0000000001.log",
                                      "mail.edb",
                                      "",
                                      NULL};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        om_err_clear();
        assert_int_equal(bk_set_file_kind(bad[i], "E00", &g), 0);
        assert_non_null(strstr(om_err_detail(), "is not a name a backup set holds"));
    }
    assert_int_equal(bk_set_file_kind(longname, "E00", &g), 0);
    /* a bad base name makes every name bad */
    assert_int_equal(bk_set_file_kind("edb/mail.edb", "../", &g), 0);
    assert_int_equal(bk_set_file_kind("logs/E0000000001.log", NULL, &g), 0);
}

/* ---- verify holds sets to what a backup writes ---- */

/* Writes doc (a loaded set, "id" dropped) back as a new set file of the plain repository: what
 * anyone with write access can do. Its id into id. */
static void craft_set(json_t *doc, char id[65])
{
    json_t *d = json_deep_copy(doc);
    json_object_del(d, "id");
    char *text = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS), p[600];
    uint8_t sum[32];
    sha256(text, strlen(text), sum);
    for (int i = 0; i < 32; i++)
        snprintf(id + 2 * i, 3, "%02x", sum[i]);
    snprintf(p, sizeof p, "%s/sets/%s.json", repo, id);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    json_decref(d);
}

/* Verifies the crafted set: one damage line names it (and file when given) and says what. */
static void expect_damage(bk_repo *r, json_t *doc, const char *file, const char *what)
{
    char id[65];
    craft_set(doc, id);
    json_t *dmg = json_array();
    assert_int_equal(bk_verify(r, id, collect, dmg, NULL), OM_E_RepositoryCorrupt);
    size_t i, found = 0;
    json_t *d;
    json_array_foreach(dmg, i, d)
    {
        found += !strcmp(om_json_str_or(d, "set", ""), id) &&
                 (!file || !strcmp(om_json_str_or(d, "file", ""), file)) &&
                 strstr(om_json_str_or(d, "what", ""), what);
    }
    if (found != 1) {
        char *all = json_dumps(dmg, JSON_INDENT(1));
        print_error("wanted one '%s' (file %s) in %s\n", what, file ? file : "-", all);
        free(all);
    }
    assert_int_equal(found, 1);
    json_decref(dmg);
    json_decref(doc);
}

static json_t *file_entry(json_t *doc, size_t i)
{
    return json_array_get(json_object_get(doc, "files"), i);
}

static void verify_reports_set_documents_no_backup_writes(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char id[65], same[65];
    one_set(r, "full", "db-1", 1, 3, id); /* edb/db.edb, logs/E0000000001.log; logs 1-1 */
    json_t *base = NULL, *d;
    assert_int_equal(bk_set_load(r, id, &base), 0);
    json_object_set_new(base, "backup_metadata",
                        json_pack("{s:s, s:s, s:s, s:s}", "db_id", "db-1", "base", "E00", "edb",
                                  "/data/db-1/db.edb", "logs", "/data/db-1/logs"));
    json_object_set_new(base, "components_document",
                        json_pack("{s:[{s:s, s:O}]}", "components", "component", "db-1",
                                  "backup_metadata", json_object_get(base, "backup_metadata")));
    /* as a backup writes it: no damage */
    craft_set(base, same);
    assert_int_equal(bk_verify(r, same, NULL, NULL, NULL), 0);

    /* names that would steer a restore */
    d = json_deep_copy(base);
    json_object_set_new(file_entry(d, 0), "name", json_string("../../etc/passwd"));
    expect_damage(r, d, "../../etc/passwd", "is not a name a backup set holds");
    d = json_deep_copy(base);
    json_object_set_new(file_entry(d, 1), "name", json_string("/etc/E0000000001.log"));
    expect_damage(r, d, "/etc/E0000000001.log", "is not a name a backup set holds");
    d = json_deep_copy(base);
    json_object_set_new(json_object_get(d, "backup_metadata"), "edb",
                        json_string("/data/../etc/db.edb"));
    expect_damage(r, d, NULL, "its backup metadata names the database file '/data/../etc");
    d = json_deep_copy(base);
    json_object_set_new(json_object_get(d, "backup_metadata"), "edb",
                        json_string("/data/db-1/other.edb"));
    expect_damage(r, d, NULL, "names the database file other.edb, but the set holds edb/db.edb");
    d = json_deep_copy(base);
    json_t *cmd = json_object_get(
        json_array_get(json_object_get(json_object_get(d, "components_document"), "components"), 0),
        "backup_metadata");
    json_object_set_new(cmd, "edb", json_string("/data/db-1/victim.edb"));
    expect_damage(r, d, NULL, "components document's metadata names the database file victim.edb");
    d = json_deep_copy(base);
    json_object_set_new(json_object_get(d, "backup_metadata"), "base", json_string("E01"));
    expect_damage(r, d, NULL, "names log base 'E01'");
    d = json_deep_copy(base);
    json_object_set_new(
        cmd = json_object_get(
            json_array_get(json_object_get(json_object_get(d, "components_document"), "components"),
                           0),
            "backup_metadata"),
        "db_id", json_string("db-2"));
    expect_damage(r, d, NULL, "has no component of database db-1");

    /* sizes and blocks */
    d = json_deep_copy(base);
    json_object_set_new(file_entry(d, 1), "size", json_integer(0));
    json_object_set_new(file_entry(d, 1), "blocks", json_string(""));
    expect_damage(r, d, "logs/E0000000001.log", "its size is 0");
    d = json_deep_copy(base);
    json_object_set_new(file_entry(d, 0), "size", json_integer(4 * BS));
    expect_damage(r, d, "edb/db.edb", "in 3 blocks: a file of that size is 4 blocks");
    d = json_deep_copy(base);
    json_array_append(json_object_get(d, "files"), file_entry(d, 1));
    expect_damage(r, d, "logs/E0000000001.log", "holds this name twice");

    /* the set's own fields */
    d = json_deep_copy(base);
    json_object_del(d, "database");
    expect_damage(r, d, NULL, "names no database");
    d = json_deep_copy(base);
    json_object_set_new(d, "type", json_string("fulll"));
    expect_damage(r, d, NULL, "unknown type 'fulll'");
    d = json_deep_copy(base);
    json_object_del(d, "type");
    expect_damage(r, d, NULL, "has no type");
    d = json_deep_copy(base);
    json_object_del(d, "log_range");
    expect_damage(r, d, NULL, "no log range");
    d = json_deep_copy(base);
    json_object_set_new(d, "log_range", json_pack("[i,i]", 2, 2));
    expect_damage(r, d, "logs/E0000000001.log", "generation 1 is outside the set's log range 2-2");
    d = json_deep_copy(base);
    json_object_set_new(d, "log_range", json_pack("[i,i]", 1, 3));
    expect_damage(r, d, NULL, "no log file for 2 generations of its log range 1-3");
    d = json_deep_copy(base);
    json_t *second = json_deep_copy(file_entry(d, 0));
    json_object_set_new(second, "name", json_string("edb/other.edb"));
    json_array_append_new(json_object_get(d, "files"), second);
    expect_damage(r, d, NULL, "a set of type full holds 2 database files");
    d = json_deep_copy(base);
    json_array_remove(json_object_get(d, "files"), 0);
    expect_damage(r, d, NULL, "a set of type full holds 0 database files");
    d = json_deep_copy(base);
    json_object_set_new(d, "type", json_string("incremental"));
    expect_damage(r, d, NULL, "only a full or copy set holds one");
    d = json_deep_copy(base);
    json_object_set_new(json_object_get(d, "database"), "base", json_string("../"));
    expect_damage(r, d, NULL, "log base name '../' is not one");

    /* a set of another repository, crafted with a valid name */
    d = json_deep_copy(base);
    json_object_set_new(d, "repository", json_string("01234567-89ab-4def-8123-456789abcdef"));
    char foreign[65];
    craft_set(d, foreign);
    json_decref(d);
    json_t *dmg = json_array();
    assert_int_equal(bk_verify(r, foreign, collect, dmg, NULL), OM_E_RepositoryCorrupt);
    assert_non_null(strstr(om_json_str_or(json_array_get(dmg, 0), "what", ""),
                           "belongs to repository 01234567-89ab-4def-8123-456789abcdef"));
    json_decref(dmg);
    json_t *set = NULL;
    assert_int_equal(bk_set_load(r, foreign, &set), OM_E_RepositoryCorrupt);
    json_decref(base);
    bk_repo_close(r);
}

static void verify_reports_a_pack_whose_header_is_not_this_repositorys(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char id[65], pack[1024], packs[400];
    one_set(r, "full", "db-1", 1, 3, id);
    snprintf(packs, sizeof packs, "%s/packs", repo);
    assert_true(find_file(packs, "", pack, sizeof pack));
    uint8_t bid[BK_ID_LEN], *data = NULL;
    size_t len = 0;
    block_id(r, 1, bid); /* before the damage (see above) */
    flip_byte(pack, 20); /* in the repository id */
    json_t *dmg = verify_all(r, OM_E_RepositoryCorrupt);
    size_t i, whole = 0, blocks = 0;
    json_t *d;
    json_array_foreach(dmg, i, d)
    {
        const char *what = om_json_str_or(d, "what", "");
        if (!strstr(what, "the pack belongs to repository")) continue;
        whole += strstr(what, "pack packs/") != NULL && !json_is_string(json_object_get(d, "set"));
        blocks += json_is_string(json_object_get(d, "block"));
    }
    assert_int_equal(whole, 1);
    assert_int_equal(blocks, 4); /* the edb's three and the log's */
    json_decref(dmg);
    assert_int_equal(bk_get_block(r, bid, &data, &len), OM_E_RepositoryCorrupt);
    flip_byte(pack, 20);
    flip_byte(pack, 12); /* the flags: "encrypted" */
    dmg = verify_all(r, OM_E_RepositoryCorrupt);
    assert_non_null(strstr(om_json_str_or(json_array_get(dmg, 0), "what", ""), "encrypted"));
    json_decref(dmg);
    flip_byte(pack, 12);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    bk_repo_close(r);
}

/* ---- misuse ---- */

/* A .edb of two regions (regions form): region 0 the slices pieces names (ids[0] their id),
 * region 1 block ids[1] whole; with meta, the writer's metadata a backup gives. */
static int add_regions(bk_writer *w, uint8_t (*ids)[BK_ID_LEN], const char *pieces, int meta)
{
    return bk_set_add_file_regions(w, "edb/db.edb", 2 * BS, (const uint8_t(*)[BK_ID_LEN])ids, 2,
                                   json_pack("{s:s}", "0", pieces),
                                   meta ? json_pack("{s:s}", "source", "edb/db.edb") : NULL);
}

/* The regions form (a synthetic full's .edb): a region of slices of an older set's block and a
 * new one reads back byte for byte, verifies, survives the expiry of the set it slices, and a
 * slice outside its block or pieces whose id is not the region's are refused. */
static void regions_of_slices_read_back_verify_and_outlive_the_set_they_slice(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char first[65], second[65], pieces[400], hex1[65], hexx[65];
    one_set(r, "full", "db1", 100, 2, first);
    uint8_t b1[BS], x[BS / 2], want[BS], id1[BK_ID_LEN], idx[BK_ID_LEN], rid[BK_ID_LEN],
        ids[2][BK_ID_LEN];
    fill(b1, BS, 100, 0);
    fill(x, sizeof x, 999, 0);
    memcpy(want, b1, BS / 2);
    memcpy(want + BS / 2, x, sizeof x);
    block_id(r, 100, id1);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(bk_put_block(w, x, sizeof x, idx, NULL), 0);
    bk_hex(id1, BK_ID_LEN, hex1);
    bk_hex(idx, BK_ID_LEN, hexx);
    /* a slice past its block's end */
    snprintf(pieces, sizeof pieces, "%s:%u:%u,%s:0:%u", hex1, BS / 2 + 1, BS / 2, hexx, BS / 2);
    assert_int_equal(bk_pieces_id(r, pieces, rid), 0);
    memcpy(ids[0], rid, BK_ID_LEN);
    block_id(r, 101, ids[1]);
    assert_int_equal(add_regions(w, ids, pieces, 0), OM_E_InvalidParameter);
    /* pieces that are not the region's id */
    snprintf(pieces, sizeof pieces, "%s:0:%u,%s:0:%u", hex1, BS / 2, hexx, BS / 2);
    assert_int_equal(add_regions(w, ids, pieces, 0), OM_E_InvalidParameter);
    assert_int_equal(bk_pieces_id(r, pieces, ids[0]), 0);
    assert_int_equal(add_regions(w, ids, pieces, 1), 0);
    commit(w, r, "full", "db1", second);
    for (int round = 0; round < 2; round++) {
        bk_reader *rd = NULL;
        uint8_t got[BS];
        size_t n = 0;
        assert_int_equal(bk_reader_new(r, &rd), 0);
        assert_int_equal(bk_reader_get_ref(rd, ids[0], pieces, BS, got, BS, &n), 0);
        assert_int_equal(n, BS);
        assert_memory_equal(got, want, BS);
        /* another region's id with these pieces: refused */
        assert_int_equal(bk_reader_get_ref(rd, ids[1], pieces, BS, got, BS, &n),
                         OM_E_RepositoryCorrupt);
        bk_reader_free(rd);
        assert_int_equal(bk_verify(r, second, NULL, NULL, NULL), 0);
        if (round) break;
        json_t *rep = NULL;
        assert_int_equal(bk_expire(r, 1, &rep), 0);
        assert_int_equal(json_array_size(json_object_get(rep, "sets_deleted")), 1);
        json_decref(rep);
        assert_true(has_block(r, 100)); /* sliced by the kept set */
    }
    bk_repo_close(r);
}

static int64_t num(json_t *o, const char *k)
{
    return om_json_int_or(o, k, -1);
}

/* bk_repo_stats: stored bytes in four parts that add up to the files under packs/. */
static void parts_add_up(json_t *st)
{
    assert_int_equal(num(st, "bytes_used") + num(st, "bytes_unreferenced") +
                         num(st, "bytes_pack_overhead") + num(st, "bytes_not_indexed"),
                     num(st, "bytes_on_disk"));
}

/* repo stats: a block an older set stored and a newer one uses only by a slice counts once, for
 * the database, also after the older set expired (it counted for no one); the databases' stored
 * bytes add up to the used ones, and with the unreferenced blocks, the packs' headers and the
 * leftovers to what is on disk. */
static void stats_count_a_block_kept_by_a_slice_once_and_add_up(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char first[65], second[65], other[65], pieces[400], hex1[65], hexx[65];
    one_set(r, "full", "db1", 100, 2, first); /* blocks 100, 101 (incompressible) and a log */
    uint8_t x[BS / 2], id1[BK_ID_LEN], idx[BK_ID_LEN], ids[2][BK_ID_LEN];
    fill(x, sizeof x, 999, 0);
    block_id(r, 100, id1);
    block_id(r, 101, ids[1]);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(bk_put_block(w, x, sizeof x, idx, NULL), 0);
    bk_hex(id1, BK_ID_LEN, hex1);
    bk_hex(idx, BK_ID_LEN, hexx);
    /* region 0: half of block 100 and x; region 1: block 101 whole */
    snprintf(pieces, sizeof pieces, "%s:0:%u,%s:0:%u", hex1, BS / 2, hexx, BS / 2);
    assert_int_equal(bk_pieces_id(r, pieces, ids[0]), 0);
    assert_int_equal(add_regions(w, ids, pieces, 1), 0);
    commit(w, r, "full", "db1", second);
    one_set(r, "full", "db2", 500, 3, other);

    json_t *sets = NULL, *st = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    int64_t added[3];
    for (size_t i = 0; i < 3; i++)
        added[i] = num(json_array_get(sets, i), "bytes_stored");
    json_decref(sets);
    assert_int_equal(bk_repo_stats(r, &st), 0);
    json_t *d1 = json_array_get(json_object_get(st, "databases"), 0),
           *d2 = json_array_get(json_object_get(st, "databases"), 1);
    assert_string_equal(om_json_str_or(json_object_get(d1, "database"), "name", ""), "db1");
    /* every block once, for the set that stored it */
    assert_int_equal(num(d1, "bytes_stored"), added[0] + added[1]);
    assert_int_equal(num(d1, "bytes_referenced"), added[0] + added[1]);
    assert_int_equal(num(d2, "bytes_stored"), added[2]);
    assert_int_equal(num(st, "bytes_used"), added[0] + added[1] + added[2]);
    assert_int_equal(num(st, "blocks_unreferenced"), 0);
    assert_int_equal(num(st, "bytes_not_indexed"), 0);
    assert_int_equal(num(st, "bytes_pack_overhead"), 32 * num(st, "packs"));
    assert_int_equal(num(st, "blocks_missing"), 0);
    parts_add_up(st);
    json_decref(st);

    /* the first set expires: blocks 100 (by its slice) and 101 stay, db1's; its log does not */
    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(json_array_size(json_object_get(rep, "sets_deleted")), 1);
    json_decref(rep);
    assert_int_equal(bk_repo_stats(r, &st), 0);
    d1 = json_array_get(json_object_get(st, "databases"), 0);
    d2 = json_array_get(json_object_get(st, "databases"), 1);
    assert_int_equal(num(d1, "sets"), 1);
    assert_int_equal(num(d1, "bytes_stored"), added[1] + 2 * (56 + BS));
    assert_int_equal(num(d1, "bytes_referenced"), num(d1, "bytes_stored"));
    assert_int_equal(num(d2, "bytes_stored"), added[2]);
    assert_int_equal(num(st, "bytes_used"), num(d1, "bytes_stored") + num(d2, "bytes_stored"));
    assert_int_equal(num(st, "blocks_unreferenced"), 1); /* the expired set's log */
    assert_int_equal(num(st, "blocks_missing"), 0);
    parts_add_up(st);
    int64_t packs = num(st, "packs"), unref = num(st, "bytes_unreferenced");
    json_decref(st);

    /* a killed writer's leftover counts as not indexed, nowhere else */
    char junk[400];
    snprintf(junk, sizeof junk, "%s/packs/zz", repo);
    assert_int_equal(mkdir(junk, 0700), 0);
    strcat(junk, "/.leftover.tmp");
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    fwrite(x, 1, 100, f);
    fclose(f);
    assert_int_equal(bk_repo_stats(r, &st), 0);
    assert_int_equal(num(st, "bytes_not_indexed"), 100);
    assert_int_equal(num(st, "packs"), packs + 1);
    assert_int_equal(num(st, "bytes_unreferenced"), unref);
    parts_add_up(st);
    json_decref(st);
    bk_repo_close(r);
}

static void misuse_is_refused_with_a_reason(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    bk_repo_close(r);
    /* not over an existing repository, nor in a non-empty directory */
    assert_int_equal(bk_repo_init(repo, NULL), OM_E_FileAlreadyExists);
    bk_init_opts bad = {.block_size = 5000};
    char other[400];
    snprintf(other, sizeof other, "%s/other", tmpdir);
    assert_int_equal(bk_repo_init(other, &bad), OM_E_InvalidParameter);
    assert_int_equal(bk_repo_open(tmpdir, NULL, &r), OM_E_NotRepository);

    assert_int_equal(bk_repo_open(repo, "", &r), 0); /* an empty one is none */
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    uint8_t b[BS + 1] = {0}, id[BK_ID_LEN], sum[32] = {0};
    assert_int_equal(bk_put_block(w, b, BS + 1, id, NULL), OM_E_InvalidParameter);
    assert_int_equal(bk_put_block(w, b, BS, id, NULL), 0);
    uint8_t ids[2][BK_ID_LEN];
    memcpy(ids[0], id, BK_ID_LEN);
    memset(ids[1], 0xab, BK_ID_LEN);
    assert_int_equal(
        bk_set_add_file(w, "f", 2 * BS, sum, NULL, (const uint8_t(*)[BK_ID_LEN])ids, 2, NULL),
        OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "never stored"));
    assert_int_equal(
        bk_set_add_file(w, "f", BS + 1, sum, NULL, (const uint8_t(*)[BK_ID_LEN])ids, 1, NULL),
        OM_E_InvalidParameter);
    assert_int_equal(
        bk_set_add_file(w, "f", BS, sum, NULL, (const uint8_t(*)[BK_ID_LEN])ids, 1, NULL), 0);
    assert_int_equal(
        bk_set_add_file(w, "f", BS, sum, NULL, (const uint8_t(*)[BK_ID_LEN])ids, 1, NULL),
        OM_E_InvalidParameter); /* twice the same name */
    char set[65];
    assert_int_equal(bk_set_commit(w, json_string("not an object"), set), OM_E_InvalidParameter);
    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 0);
    json_decref(sets);
    bk_repo_close(r);
}

/* ---- damaged copies stored again (damaged.json) ---- */

static json_t *damaged_list(bk_repo *r)
{
    json_t *dl = NULL;
    assert_int_equal(bk_damaged_list(r, &dl), 0);
    return dl;
}

static const char *reopen_pass; /* the passphrase reopen gives (NULL: a plain repository) */

static bk_repo *reopen(bk_repo *r)
{
    bk_repo_close(r);
    assert_int_equal(bk_repo_open(repo, reopen_pass, &r), 0);
    return r;
}

/* A pack's header damaged: verify lists its copies in damaged.json; the next set with the same
 * blocks stores them again, and the older set reads the fresh copies (verify passes for it, in
 * any handle); the one block no later set had (the older set's log) stays damaged and named;
 * expire of the older set removes the damaged pack and its entries. */
static void damaged_copies_stored_again(const char *pass)
{
    reopen_pass = pass;
    bk_repo *r = make_repo(repo, pass != NULL, pass);
    char a[65], b[65], pack[1024], packs[400], path[600];
    uint8_t bid[BK_ID_LEN], *data = NULL;
    size_t len = 0;
    one_set(r, "full", "db-1", 1, 3, a);
    block_id(r, 2, bid);
    snprintf(packs, sizeof packs, "%s/packs", repo);
    assert_true(find_file(packs, "", pack, sizeof pack));
    flip_byte(pack, 20); /* the repository id in its header: every copy in it fails */
    json_t *dmg = verify_all(r, OM_E_RepositoryCorrupt), *d;
    size_t i, marked = 0;
    json_array_foreach(dmg, i, d) marked += json_is_true(json_object_get(d, "marked"));
    assert_int_equal(marked, 4); /* three of the .edb, one of the log */
    json_decref(dmg);
    snprintf(path, sizeof path, "%s/damaged.json", repo);
    assert_int_equal(access(path, F_OK), 0);
    r = reopen(r); /* durable: another handle knows it */
    json_t *dl = damaged_list(r);
    assert_int_equal(om_json_int_or(dl, "waiting", -1), 4);
    assert_true(json_is_null(json_object_get(dl, "problem")) || !json_object_get(dl, "problem"));
    json_decref(dl);
    one_set(r, "full", "db-1", 1, 3, b);
    json_t *set = NULL;
    assert_int_equal(bk_set_load(r, b, &set), 0);
    assert_int_equal(om_json_int_or(set, "blocks_stored_again", 0), 3);
    assert_int_equal(om_json_int_or(set, "blocks_new", 0), 4); /* and its own log */
    json_decref(set);
    assert_int_equal(bk_verify(r, b, NULL, NULL, NULL), 0);
    r = reopen(r);
    assert_int_equal(bk_get_block(r, bid, &data, &len), 0); /* the older set's block, fresh */
    free(data);
    dmg = verify_all(r, OM_E_RepositoryCorrupt);
    /* the pack's header, and the older set's log: nothing stored it again */
    size_t sets = 0;
    json_array_foreach(dmg, i, d)
    {
        if (!json_is_string(json_object_get(d, "set"))) continue;
        sets++;
        assert_string_equal(om_json_str_or(d, "set", ""), a);
        assert_string_equal(om_json_str_or(d, "file", ""), "logs/E0000000001.log");
    }
    assert_int_equal(sets, 1);
    json_decref(dmg);
    dl = damaged_list(r);
    assert_int_equal(om_json_int_or(dl, "waiting", -1), 1);
    assert_int_equal(json_array_size(json_object_get(dl, "blocks")), 4);
    json_decref(dl);
    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 1, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "damaged_copies_removed", -1), 4);
    assert_int_equal(om_json_int_or(rep, "packs_deleted", -1), 1);
    json_decref(rep);
    assert_int_equal(access(pack, F_OK), -1);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    dl = damaged_list(r);
    assert_int_equal(json_array_size(json_object_get(dl, "blocks")), 0);
    json_decref(dl);
    bk_repo_close(r);
    reopen_pass = NULL;
}

static void a_damaged_copy_is_listed_stored_again_and_serves_the_older_set(void **s)
{
    (void)s;
    damaged_copies_stored_again(NULL);
}

static void in_an_encrypted_repository_too(void **s)
{
    (void)s;
    damaged_copies_stored_again("pw");
}

/* Expire keeps a fresh copy and rewrites the damaged one away, whichever the index met first. */
static void expire_keeps_the_fresh_copy_when_both_sets_stay(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char a[65], b[65], pack[1024], packs[400];
    one_set(r, "full", "db-1", 1, 3, a);
    snprintf(packs, sizeof packs, "%s/packs", repo);
    assert_true(find_file(packs, "", pack, sizeof pack));
    flip_byte(pack, 32 + 56 + 100); /* the first block's content */
    json_decref(verify_all(r, OM_E_RepositoryCorrupt));
    one_set(r, "full", "db-1", 1, 3, b);
    r = reopen(r);
    assert_int_equal(bk_expire(r, 2, NULL), 0); /* both sets stay */
    r = reopen(r);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    bk_repo_close(r);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A damaged.json that cannot be used: one reason, never a crash or a hang; verify reports it
 * and writes it anew, and the next verify passes. */
static void a_garbled_or_crafted_damaged_list_is_ignored_and_written_again(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char a[65], path[600], text[800];
    one_set(r, "full", "db-1", 1, 2, a);
    snprintf(path, sizeof path, "%s/damaged.json", repo);
    json_t *info = bk_repo_info(r);
    const char *uuid = om_json_str_or(info, "id", "");
    const char *bad[6];
    char wrongsum[400], badentry[600], other[400];
    snprintf(wrongsum, sizeof wrongsum,
             "{\"format\":\"ombra-damaged-blocks\",\"version\":1,\"repository\":\"%s\","
             "\"blocks\":[],\"sha256\":\"00\"}",
             uuid);
    snprintf(other, sizeof other,
             "{\"format\":\"ombra-damaged-blocks\",\"version\":1,\"repository\":"
             "\"00000000-0000-4000-8000-000000000000\",\"blocks\":[],\"sha256\":\"00\"}");
    /* an entry whose offset is a string, under a checksum that matches it */
    json_t *blocks = json_pack("[{s:s, s:s, s:s, s:s, s:s, s:s}]", "block",
                               "aa00000000000000000000000000000000000000000000000000000000000000",
                               "pack", "bb000000000000000000000000000000", "offset", "12", "found",
                               "x", "by", "verify", "what", "x");
    char *bt = json_dumps(blocks, JSON_COMPACT | JSON_SORT_KEYS);
    uint8_t dg[32];
    char hex[65];
    unsigned dn = 0;
    EVP_Digest(bt, strlen(bt), dg, &dn, EVP_sha256(), NULL);
    bk_hex(dg, 32, hex);
    snprintf(badentry, sizeof badentry,
             "{\"format\":\"ombra-damaged-blocks\",\"version\":1,\"repository\":\"%s\","
             "\"blocks\":%s,\"sha256\":\"%s\"}",
             uuid, bt, hex);
    free(bt);
    json_decref(blocks);
    bad[0] = "{garbage";
    bad[1] = "[1,2,3]";
    bad[2] = wrongsum;
    bad[3] = other;
    bad[4] = badentry;
    bad[5] = "";
    const char *why[] = {"not JSON",    "not a list",           "checksum",
                         "repository ", "entry 0 is malformed", "not JSON"};
    for (size_t k = 0; k < 6; k++) {
        write_text(path, bad[k]);
        r = reopen(r);
        json_t *dl = damaged_list(r);
        const char *p = om_json_str_or(dl, "problem", "");
        snprintf(text, sizeof text, "case %zu: %s", k, p);
        if (!strstr(p, why[k]) || !strstr(p, "damaged.json")) fail_msg("%s", text);
        json_decref(dl);
        json_t *dmg = verify_all(r, OM_E_RepositoryCorrupt);
        assert_int_equal(json_array_size(dmg), 1);
        assert_non_null(strstr(om_json_str_or(json_array_get(dmg, 0), "what", ""), "ignored"));
        json_decref(dmg);
        assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0); /* written anew */
        r = reopen(r);
        assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    }
    json_decref(info);
    /* a fifo is never opened (it would wait for a writer for ever) */
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    r = reopen(r);
    json_t *dl = damaged_list(r);
    assert_non_null(strstr(om_json_str_or(dl, "problem", ""), "not a regular file"));
    json_decref(dl);
    bk_writer *w = NULL; /* a backup goes on */
    assert_int_equal(bk_set_begin(r, &w), 0);
    bk_set_abort(w);
    bk_repo_close(r);
}

/* A small pack with a copy verify found damaged, whose block a later set stored again: it is
 * merged like the others, its damaged copy left out, so the copy and its entry in damaged.json
 * go, and every block reads back. */
static void a_small_pack_with_a_damaged_copy_stored_again_is_merged(void **s)
{
    (void)s;
    bk_repo *r = make_repo(repo, 0, NULL);
    char a[65], b[65], id[65], pack[1024], packs[400];
    snprintf(packs, sizeof packs, "%s/packs", repo);
    one_set(r, "full", "A", 1, 2, a); /* its only pack: 2 blocks and a log block */
    assert_true(find_file(packs, "", pack, sizeof pack));
    flip_byte(pack, 32 + 56 + 100); /* the first record's payload */
    json_decref(verify_all(r, OM_E_RepositoryCorrupt));
    json_t *dl = damaged_list(r);
    assert_int_equal(json_array_size(json_object_get(dl, "blocks")), 1);
    json_decref(dl);
    one_set(r, "full", "A", 1, 2, b); /* stores the damaged block again */
    for (uint64_t i = 0; i < 30; i++) {
        uint64_t seed = 3000 + i;
        set_of_blocks(r, "incremental", "A", &seed, 1, id);
    }
    r = reopen(r);
    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 2, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "packs_merged", 0), 32);
    assert_int_equal(om_json_int_or(rep, "damaged_copies_removed", 0), 1);
    json_decref(rep);
    assert_int_equal(access(pack, F_OK), -1);
    r = reopen(r);
    dl = damaged_list(r);
    assert_int_equal(json_array_size(json_object_get(dl, "blocks")), 0);
    json_decref(dl);
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    assert_true(has_block(r, 1) && has_block(r, 2));
    for (uint64_t i = 0; i < 30; i++)
        assert_true(has_block(r, 3000 + i));
    bk_repo_close(r);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)
    const struct CMUnitTest tests[] = {
        T(blocks_and_sets_come_back_as_they_went_in),
        T(a_block_is_stored_once),
        T(four_threads_put_at_once_and_each_block_is_stored_once),
        T(two_sets_written_at_once_share_blocks_and_both_verify),
        T(an_encrypted_repository_round_trips_and_hides_content),
        T(a_wrong_passphrase_is_one_clear_error),
        T(block_ids_depend_on_the_repository_key),
        T(a_writer_that_dies_lists_no_set_and_its_finished_packs_are_reused),
        T(a_truncated_pack_loses_its_tail_and_the_next_set_stores_it_again),
        T(verify_names_a_flipped_byte_in_a_pack),
        T(verify_names_a_flipped_byte_in_an_encrypted_pack),
        T(verify_names_a_flipped_byte_in_an_index),
        T(verify_names_a_flipped_byte_in_a_set_file),
        T(expire_keeps_the_newest_chains_and_frees_what_nothing_uses),
        T(small_packs_are_merged_once_there_are_32_of_them),
        T(a_whole_set_id_is_read_by_name_with_the_index_written_since),
        T(merges_copy_nothing_twice_and_damaged_small_packs_stay),
        T(a_small_pack_with_a_damaged_copy_stored_again_is_merged),
        T(regions_of_slices_read_back_verify_and_outlive_the_set_they_slice),
        T(stats_count_a_block_kept_by_a_slice_once_and_add_up),
        T(misuse_is_refused_with_a_reason),
        T(a_committed_set_counts_only_once_published),
        T(a_backup_killed_between_commit_and_publish_leaves_no_set_and_expire_removes_it),
        T(an_encrypted_repository_is_never_opened_as_a_plain_one),
        T(config_edits_and_other_versions_are_refused),
        T(a_plain_repository_opened_with_a_passphrase_is_refused),
        T(sets_and_indexes_of_another_repository_are_refused),
        T(set_file_names_are_what_a_backup_writes_and_nothing_else),
        T(verify_reports_set_documents_no_backup_writes),
        T(verify_reports_a_pack_whose_header_is_not_this_repositorys),
        T(a_damaged_copy_is_listed_stored_again_and_serves_the_older_set),
        T(in_an_encrypted_repository_too),
        T(expire_keeps_the_fresh_copy_when_both_sets_stay),
        T(a_garbled_or_crafted_damaged_list_is_ignored_and_written_again),
    };
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
