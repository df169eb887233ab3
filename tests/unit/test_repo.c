/* src/backup/repo: the backup repository. Blocks come back as they went in, are stored once,
 * stay secret and authenticated when encrypted, survive a writer that dies, and damage is found
 * and named; expire keeps whole chains and frees what nothing uses. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "backup/repo.h"
#include "base/error.h"
#include "base/log.h"
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
    assert_int_equal(bk_set_add_file(w, name, (uint64_t)n * BS, sum,
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

static void commit(bk_writer *w, const char *type, const char *db, char id[65])
{
    json_t *doc = json_pack("{s:s, s:{s:s, s:s}, s:s, s:[i,i], s:n}", "type", type, "database",
                            "id", db, "name", db, "server", "srv1", "log_range", 1, 2, "parent");
    assert_int_equal(bk_set_commit(w, doc, id), 0);
    assert_int_equal(strlen(id), 64);
}

/* One set of one file with blocks seeds first..first+n-1; its id into id. */
static void one_set(bk_repo *r, const char *type, const char *db, uint64_t first, size_t n,
                    char id[65])
{
    uint64_t *s = calloc(n, sizeof *s);
    seeds_from(s, n, first);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    put_file(w, "db.edb", s, n, 0);
    commit(w, type, db, id);
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
        if (e->d_name[0] == '.') continue;
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
                          json_pack("{s:s?, s:s?, s:s?, s:s?, s:s}", "set", d->set, "file", d->file,
                                    "block", d->block, "pack", d->pack, "what", d->what));
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
    assert_int_equal(put_file(w, "db.edb", seeds, 3, 0), 3);
    assert_int_equal(put_file(w, "E00.log", seeds + 3, 2, 1), 2);
    /* an empty file has no blocks */
    uint8_t none[32];
    sha256("", 0, none);
    assert_int_equal(bk_set_add_file(w, "E00.chk", 0, none, NULL, 0, NULL), 0);
    char id[65];
    commit(w, "full", "db-1", id);
    bk_repo_close(r);

    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 1);
    json_t *sum = json_array_get(sets, 0);
    assert_string_equal(om_json_str_or(sum, "id", ""), id);
    assert_string_equal(om_json_str_or(sum, "type", ""), "full");
    assert_int_equal(om_json_int_or(sum, "bytes", 0), 5 * BS);
    assert_int_equal(om_json_int_or(sum, "nfiles", 0), 3);
    assert_null(json_object_get(sum, "files"));
    json_decref(sets);

    char prefix[9];
    snprintf(prefix, sizeof prefix, "%.8s", id);
    json_t *set = NULL;
    assert_int_equal(bk_set_load(r, prefix, &set), 0);
    assert_string_equal(om_json_str_or(set, "id", ""), id);
    json_t *f = json_array_get(json_object_get(set, "files"), 1);
    assert_string_equal(om_json_str_or(f, "name", ""), "E00.log");
    assert_string_equal(om_json_str_or(json_object_get(f, "meta"), "source", ""), "E00.log");
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
    json_decref(set);
    assert_int_equal(bk_set_load(r, "ffffffffff", &set), OM_E_SetNotFound);
    assert_int_equal(bk_set_load(r, "not-hex", &set), OM_E_InvalidParameter);
    uint64_t checked = 0;
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, &checked), 0);
    assert_int_equal(checked, 5);
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
    commit(w, "full", "db-1", id1);
    char packs[400];
    snprintf(packs, sizeof packs, "%s/packs", repo);
    int npacks = count_files(packs, "");

    /* A second set of the same content stores nothing. */
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "a", seeds, 6, 0), 0);
    bk_writer_stats(w, &in, &stored, &bn, &br);
    assert_int_equal(stored, 0);
    assert_int_equal(bn, 0);
    commit(w, "full", "db-1", id2);
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
    char name[20];
    snprintf(name, sizeof name, "file-%d", p->t);
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
    commit(w, "full", "db-1", id);
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
    put_file(w, "db.edb", seeds, 40, 0);
    commit(w, "full", st->db, st->id);
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
    assert_int_equal(put_file(w, "secret-file.edb", seeds, 4, 1), 4);
    char id[65];
    commit(w, "full", "db-1", id);
    bk_repo_close(r);

    assert_false(file_contains(repo, "SECRET-MARKER"));
    assert_false(file_contains(repo, "secret-file.edb"));

    assert_int_equal(bk_repo_open(repo, "correct horse", &r), 0);
    json_t *set = NULL;
    assert_int_equal(bk_set_load(r, id, &set), 0);
    json_t *f = json_array_get(json_object_get(set, "files"), 0);
    assert_string_equal(om_json_str_or(f, "name", ""), "secret-file.edb");
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
    assert_int_equal(put_file(w, "db.edb", seeds, 40, 0), 40 - 32);
    char id[65];
    commit(w, "full", "db-1", id);
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
    int fresh = put_file(w, "db.edb", seeds, 8, 0);
    assert_true(fresh >= 4 && fresh < 8);
    commit(w, "full", "db-1", second);
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
    flip_byte(pack, 32 + 56 + 100); /* inside the first block */
    json_t *dmg = verify_all(r, OM_E_RepositoryCorrupt);
    assert_int_equal(json_array_size(dmg), 1);
    json_t *d = json_array_get(dmg, 0);
    assert_string_equal(om_json_str_or(d, "set", ""), id);
    assert_string_equal(om_json_str_or(d, "file", ""), "db.edb");
    assert_int_equal(strlen(om_json_str_or(d, "block", "")), 64);
    assert_non_null(strstr(pack, om_json_str_or(d, "pack", "-")));
    assert_non_null(strstr(om_json_str_or(d, "what", ""), "does not match its id"));
    json_decref(dmg);
    /* a read of that block says so too */
    uint8_t bid[BK_ID_LEN], *data = NULL;
    size_t len;
    block_id(r, 1, bid);
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
    /* the index itself, and each block of the set it no longer finds */
    assert_int_equal(json_array_size(dmg), 1 + 3);
    int index_named = 0, blocks_named = 0;
    size_t i;
    json_t *d;
    json_array_foreach(dmg, i, d)
    {
        const char *what = om_json_str_or(d, "what", "");
        if (strstr(what, "index/") && strstr(what, "does not match its name")) index_named++;
        if (!strcmp(om_json_str_or(d, "set", ""), id) &&
            !strcmp(om_json_str_or(d, "file", ""), "db.edb") &&
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
    put_file(w, "f", seeds, n, 0);
    commit(w, type, db, id);
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

/* ---- misuse ---- */

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

    assert_int_equal(bk_repo_open(repo, "ignored for a plain repository", &r), 0);
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    uint8_t b[BS + 1] = {0}, id[BK_ID_LEN], sum[32] = {0};
    assert_int_equal(bk_put_block(w, b, BS + 1, id, NULL), OM_E_InvalidParameter);
    assert_int_equal(bk_put_block(w, b, BS, id, NULL), 0);
    uint8_t ids[2][BK_ID_LEN];
    memcpy(ids[0], id, BK_ID_LEN);
    memset(ids[1], 0xab, BK_ID_LEN);
    assert_int_equal(
        bk_set_add_file(w, "f", 2 * BS, sum, (const uint8_t(*)[BK_ID_LEN])ids, 2, NULL),
        OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "never stored"));
    assert_int_equal(
        bk_set_add_file(w, "f", BS + 1, sum, (const uint8_t(*)[BK_ID_LEN])ids, 1, NULL),
        OM_E_InvalidParameter);
    assert_int_equal(bk_set_add_file(w, "f", BS, sum, (const uint8_t(*)[BK_ID_LEN])ids, 1, NULL),
                     0);
    assert_int_equal(bk_set_add_file(w, "f", BS, sum, (const uint8_t(*)[BK_ID_LEN])ids, 1, NULL),
                     OM_E_InvalidParameter); /* twice the same name */
    char set[65];
    assert_int_equal(bk_set_commit(w, json_string("not an object"), set), OM_E_InvalidParameter);
    json_t *sets = NULL;
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_int_equal(json_array_size(sets), 0);
    json_decref(sets);
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
        T(misuse_is_refused_with_a_reason),
    };
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
