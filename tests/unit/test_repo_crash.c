/* The backup repository under power loss: a set written (packs appended, finished, indexed; the
 * set file committed, then published) on the crash VFS (tests/support/crashvfs.h), which loses
 * power at every sync point in turn, and at each one reboots three ways (unsynced blocks kept,
 * dropped or garbled; a random prefix of the unsynced renames applied). After each reboot:
 *   - the repository opens, and the set written before is listed and whole;
 *   - the new set is listed only whole, and is listed if bk_set_publish had returned 0; a set
 *     whose bk_set_commit returned 0 is still there (pending, or listed);
 *   - bk_verify finds nothing wrong (no damaged index, set or pack);
 *   - bk_expire removes what the crash left (temporary names, a pending set) and the next set
 *     can be written and verified. */
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backup/repo.h"
#include "backup/stats.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "crashvfs.h"

#define REPO      "/srv/repo"
#define BS        4096u
#define REBOOTS   3   /* ways each crash point is rebooted */
#define MAX_POINT 400 /* more sync points than this: the workload changed, look at it */

static void fill(uint8_t *b, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (uint8_t)x;
    }
}

/* One file of n blocks with seeds first.. into the set; the first error (a crash) is returned. */
static int put_file(bk_writer *w, const char *name, uint64_t first, size_t n)
{
    uint8_t *all = malloc(n * BS), (*ids)[BK_ID_LEN] = calloc(n, BK_ID_LEN), sum[32];
    unsigned l = 0;
    int rc = all && ids ? 0 : OM_E_OutOfMemory;
    for (size_t i = 0; i < n && !rc; i++) {
        fill(all + i * BS, BS, first + i);
        rc = bk_put_block(w, all + i * BS, BS, ids[i], NULL);
    }
    if (!rc) EVP_Digest(all, n * BS, sum, &l, EVP_sha256(), NULL);
    if (!rc)
        rc = bk_set_add_file(w, name, (uint64_t)n * BS, sum, NULL, (const uint8_t(*)[BK_ID_LEN])ids,
                             n, NULL);
    free(all);
    free(ids);
    return rc;
}

typedef struct outcome {
    int committed, published; /* what returned 0 */
    char id[65];
} outcome;

/* A full backup set of a .edb of n blocks (seeds first..) and one log generation (its own
 * seed), committed and published. */
static int write_set(om_vfs *v, uint64_t first, size_t n, uint64_t log_seed, outcome *o)
{
    bk_repo *r = NULL;
    bk_writer *w = NULL;
    memset(o, 0, sizeof *o);
    int rc = bk_repo_open_vfs(v, REPO, NULL, &r);
    if (!rc) rc = bk_set_begin(r, &w);
    if (!rc) rc = put_file(w, "edb/db.edb", first, n);
    if (!rc) rc = put_file(w, "logs/E0000000001.log", log_seed, 1);
    if (!rc) {
        json_t *doc = json_pack("{s:s, s:{s:s, s:s, s:s}, s:s, s:[i,i], s:n}", "type", "full",
                                "database", "id", "db-1", "name", "db-1", "base", "E00", "server",
                                "srv1", "log_range", 1, 1, "parent");
        rc = bk_set_commit(w, doc, o->id); /* frees w */
        w = NULL;
        o->committed = !rc;
    }
    if (!rc) rc = bk_set_publish(r, o->id);
    o->published = o->committed && !rc;
    if (w) bk_set_abort(w);
    bk_repo_close(r);
    return rc;
}

static void print_damage(void *arg, const bk_damage *d)
{
    fprintf(stderr, "crash point %d: set %s file %s pack %s: %s\n", *(int *)arg,
            d->set ? d->set : "-", d->file ? d->file : "-", d->pack ? d->pack : "-", d->what);
}

static int listed(json_t *sets, const char *id)
{
    size_t i;
    json_t *s;
    json_array_foreach(sets, i, s)
    {
        assert_null(json_object_get(s, "damaged"));
        if (!strcmp(om_json_str_or(s, "id", ""), id)) return 1;
    }
    return 0;
}

/* What must hold after the reboot of crash point n (the first set, a_id, was durable before;
 * o says how far the second one got). */
static void check_repository(om_vfs *v, int n, const char *a_id, const outcome *o)
{
    bk_repo *r = NULL;
    json_t *sets = NULL;
    assert_int_equal(bk_repo_open_vfs(v, REPO, NULL, &r), 0);
    assert_int_equal(bk_sets(r, &sets), 0);
    assert_true(listed(sets, a_id));
    int b_listed = o->id[0] && listed(sets, o->id);
    assert_int_equal(json_array_size(sets), 1 + b_listed);
    if (o->published) assert_true(b_listed);
    if (o->committed && !b_listed) {
        char p[200];
        snprintf(p, sizeof p, REPO "/sets/%s.pending", o->id);
        assert_int_equal(v->exists(v, p), 1);
    }
    json_decref(sets);
    assert_int_equal(bk_verify(r, NULL, print_damage, &n, NULL), 0);
    json_t *rep = NULL;
    assert_int_equal(bk_expire(r, 5, &rep), 0);
    json_decref(rep);
    assert_int_equal(bk_verify(r, NULL, print_damage, &n, NULL), 0);
    bk_repo_close(r);
    /* And the repository takes the next backup. */
    outcome next;
    assert_int_equal(write_set(v, 300, 20, 5003, &next), 0);
    assert_int_equal(bk_repo_open_vfs(v, REPO, NULL, &r), 0);
    assert_int_equal(bk_verify(r, NULL, print_damage, &n, NULL), 0);
    bk_repo_close(r);
}

/* The workload of one crash test, run on a clone of the disk that loses power at sync n, then
 * rebooted (without a crash: the power goes after the last sync) and checked. */
typedef struct cut {
    int (*work)(om_vfs *v, void *arg);
    void (*check)(om_vfs *v, int n, int k, int crashed, void *arg);
    void *arg;
} cut;

/* Runs the workload cut at every sync in turn, each point rebooted REBOOTS ways, until it runs
 * past its last sync; returns the number of crash points. */
static int cut_at_every_sync(crashvfs *disk, const cut *t)
{
    int points = 0;
    for (int n = 1;; n++) {
        assert_true(n < MAX_POINT);
        int crashed = 0;
        for (int k = 0; k < REBOOTS; k++) {
            crashvfs *c = crashvfs_clone(disk);
            assert_non_null(c);
            crashvfs_reseed(c, (uint64_t)n * 1000 + (uint64_t)k);
            crashvfs_crash_at_sync(c, (uint64_t)n);
            int rc = t->work(crashvfs_vfs(c), t->arg);
            crashed = crashvfs_crashed(c);
            assert_int_equal(rc, crashed ? OM_E_Crashed : 0);
            crashvfs_reboot(c);
            t->check(crashvfs_vfs(c), n, k, crashed, t->arg);
            crashvfs_free(c);
            if (!crashed) break;
        }
        if (!crashed) return points;
        points++;
    }
}

/* A disk of its own (seed) with a new repository of 4 KiB blocks in packs of 64 KiB. */
static crashvfs *new_disk(uint64_t seed)
{
    om_log_min_level(OM_ERROR);
    crashvfs *disk = crashvfs_new(seed);
    assert_non_null(disk);
    bk_init_opts io = {.block_size = BS, .pack_size = 64u << 10};
    assert_int_equal(bk_repo_init_vfs(crashvfs_vfs(disk), REPO, &io), 0);
    return disk;
}

typedef struct second_set {
    const char *a_id; /* the set durable before */
    outcome b;
} second_set;

static int write_second(om_vfs *v, void *arg)
{
    return write_set(v, 13, 40, 5002, &((second_set *)arg)->b);
}

static void check_second(om_vfs *v, int n, int k, int crashed, void *arg)
{
    (void)k;
    second_set *t = arg;
    check_repository(v, n, t->a_id, &t->b);
    if (!crashed) assert_true(t->b.published);
}

static void a_pack_write_cut_at_every_sync_leaves_a_valid_repository(void **s)
{
    (void)s;
    crashvfs *disk = new_disk(7);
    outcome a;
    assert_int_equal(write_set(crashvfs_vfs(disk), 1, 24, 5001, &a), 0);
    /* The second set shares 12 blocks with the first and brings 28 (2 packs and a bit). */
    second_set t = {.a_id = a.id};
    int points = cut_at_every_sync(disk, &(cut){write_second, check_second, &t});
    /* Packs (content, name, folder), indexes, the set file and its publication: each has
     * its syncs. */
    assert_true(points >= 12);
    fprintf(stderr, "%d crash points, each rebooted %d ways\n", points, REBOOTS);
    crashvfs_free(disk);
}

/* Expire merging small packs (each small backup's only one), cut at every sync: every set
 * stays listed and whole, nothing is damaged, and the next expire finishes the merge. */
#define SMALL_SETS 34

static int expire_keep(om_vfs *v, unsigned keep_full, json_t **rep)
{
    bk_repo *r = NULL;
    int rc = bk_repo_open_vfs(v, REPO, NULL, &r);
    if (!rc) rc = bk_expire(r, keep_full, rep);
    bk_repo_close(r);
    return rc;
}

static int expire_all(om_vfs *v, json_t **rep)
{
    return expire_keep(v, 100, rep);
}

static int merge_all(om_vfs *v, void *arg)
{
    (void)arg;
    json_t *rep = NULL;
    int rc = expire_all(v, &rep);
    if (!rc) assert_int_equal(om_json_int_or(rep, "packs_merged", 0), SMALL_SETS);
    json_decref(rep);
    return rc;
}

/* After the reboot: every set listed and verified; after the first reboot of each point also the
 * next expire, then verify again. */
static void check_merge(om_vfs *v, int n, int k, int crashed, void *arg)
{
    (void)crashed;
    const outcome *sets = arg;
    bk_repo *r = NULL;
    json_t *listing = NULL;
    assert_int_equal(bk_repo_open_vfs(v, REPO, NULL, &r), 0);
    assert_int_equal(bk_sets(r, &listing), 0);
    assert_int_equal(json_array_size(listing), SMALL_SETS);
    for (int i = 0; i < SMALL_SETS; i++)
        assert_true(listed(listing, sets[i].id));
    json_decref(listing);
    assert_int_equal(bk_verify(r, NULL, print_damage, &n, NULL), 0);
    bk_repo_close(r);
    if (k) return;
    json_t *rep = NULL;
    assert_int_equal(expire_all(v, &rep), 0);
    json_decref(rep);
    assert_int_equal(bk_repo_open_vfs(v, REPO, NULL, &r), 0);
    assert_int_equal(bk_verify(r, NULL, print_damage, &n, NULL), 0);
    json_t *st = NULL;
    assert_int_equal(bk_repo_stats(r, &st), 0);
    /* Never more than the small packs and what merging them all makes (34 x 8 KiB in packs of
     * 64 KiB: 5). A run cut off may have made some new packs durable and removed some old ones;
     * the next run merges what is left when 32 small ones are there, else they wait for more
     * (blocks listed twice meanwhile are harmless, as after any rewrite cut off). */
    assert_true(om_json_int_or(st, "packs", 0) <= SMALL_SETS + 5);
    json_decref(st);
    bk_repo_close(r);
}

static void small_packs_merged_by_expire_cut_at_every_sync_lose_nothing(void **s)
{
    (void)s;
    crashvfs *disk = new_disk(11);
    outcome sets[SMALL_SETS];
    for (int i = 0; i < SMALL_SETS; i++)
        assert_int_equal(
            write_set(crashvfs_vfs(disk), 1000 + (uint64_t)i, 1, 9000 + (uint64_t)i, &sets[i]), 0);
    int points = cut_at_every_sync(disk, &(cut){merge_all, check_merge, sets});
    /* The new packs (content, name, folder), their index files, then each old index and pack. */
    assert_true(points >= 2 * SMALL_SETS);
    fprintf(stderr, "merge: %d crash points, each rebooted %d ways\n", points, REBOOTS);
    crashvfs_free(disk);
}

/* A full disk (the space limit of the crash VFS) while small packs are merged: expire still
 * removes the leftover that filled it (leftovers go first), the merge stops without failing
 * expire (rewrites_stopped says why), nothing is lost; with room again the next expire merges. */
static void a_full_disk_stops_the_merge_not_expire(void **s)
{
    (void)s;
    crashvfs *disk = new_disk(13);
    om_vfs *v = crashvfs_vfs(disk);
    outcome sets[SMALL_SETS];
    for (int i = 0; i < SMALL_SETS; i++)
        assert_int_equal(write_set(v, 1000 + (uint64_t)i, 1, 9000 + (uint64_t)i, &sets[i]), 0);
    /* a killed backup's temporary pack of 4 KiB */
    const char *tmp = REPO "/packs/00/00112233445566778899aabbccddeeff.tmp";
    assert_int_equal(v->mkdir(v, REPO "/packs/00"), 0);
    om_file *f = NULL;
    uint8_t zero[4096] = {0};
    assert_int_equal(om_open(v, tmp, OM_O_CREATE, &f), 0);
    assert_int_equal(om_pwrite(f, zero, sizeof zero, 0), 0);
    om_close(f);
    /* the disk is full: what is there and 4 KiB more (a merged pack takes 64 KiB) */
    uint64_t big = 1ull << 40, left = 0;
    crashvfs_set_space_limit(disk, big);
    assert_int_equal(v->free_space(v, REPO, &left), 0);
    crashvfs_set_space_limit(disk, big - left + 4096);
    json_t *rep = NULL;
    assert_int_equal(expire_all(v, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "leftovers_removed", 0), 1);
    assert_string_not_equal(om_json_str_or(rep, "rewrites_stopped", ""), "");
    assert_int_equal(om_json_int_or(rep, "packs_merged", -1), 0); /* none went */
    assert_int_equal(v->exists(v, tmp), 0);
    json_decref(rep);
    check_merge(v, 0, 1, 0, sets); /* every set listed and verified */
    crashvfs_set_space_limit(disk, 0);
    assert_int_equal(expire_all(v, &rep), 0);
    assert_true(json_is_null(json_object_get(rep, "rewrites_stopped")));
    assert_true(om_json_int_or(rep, "packs_merged", 0) >= 32);
    json_decref(rep);
    check_merge(v, 0, 0, 0, sets); /* and again after an expire, at most 5 + 34 packs */
    crashvfs_free(disk);
}

/* A full disk when an expired set leaves half-used packs and unused ones, in whatever order
 * their random names put them: the unused ones go first and make room, a rewrite that still
 * finds none stops without failing expire, and nothing the kept set uses is lost. */
static void a_full_disk_never_fails_expire_for_a_rewrite(void **s)
{
    (void)s;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        crashvfs *disk = new_disk(100 + seed);
        om_vfs *v = crashvfs_vfs(disk);
        outcome a, b;
        /* a: 60 blocks (4 packs and a bit); b: 4 blocks of a's and its own log */
        assert_int_equal(write_set(v, seed * 1000, 60, 5001, &a), 0);
        assert_int_equal(write_set(v, seed * 1000, 4, 5002, &b), 0);
        uint64_t big = 1ull << 40, left = 0;
        crashvfs_set_space_limit(disk, big);
        assert_int_equal(v->free_space(v, REPO, &left), 0);
        crashvfs_set_space_limit(disk, big - left + 512); /* 512 bytes left */
        for (int run = 0; run < 2; run++) {
            json_t *rep = NULL;
            assert_int_equal(expire_keep(v, 1, &rep), 0);
            json_decref(rep);
        }
        bk_repo *r = NULL;
        json_t *listing = NULL;
        assert_int_equal(bk_repo_open_vfs(v, REPO, NULL, &r), 0);
        assert_int_equal(bk_sets(r, &listing), 0);
        assert_int_equal(json_array_size(listing), 1);
        assert_true(listed(listing, b.id));
        json_decref(listing);
        int n = (int)seed;
        assert_int_equal(bk_verify(r, NULL, print_damage, &n, NULL), 0);
        json_t *st = NULL;
        assert_int_equal(bk_repo_stats(r, &st), 0);
        assert_true(om_json_int_or(st, "packs", 0) <= 2); /* a's unused packs went */
        json_decref(st);
        bk_repo_close(r);
        crashvfs_free(disk);
    }
}

/* A commit that fails before its packs are finished (here the document is no object) while
 * the pack left in the writer's pool fails too (its rename): the commit says the first failure,
 * its code with its own detail (the pack's detail once came with the first one's code). */
static void a_commit_after_a_failure_says_the_first_one(void **s)
{
    (void)s;
    crashvfs *disk = new_disk(77);
    om_vfs *v = crashvfs_vfs(disk);
    outcome a;
    assert_int_equal(write_set(v, 1, 3, 9001, &a), 0); /* the repository exists */
    bk_repo *r = NULL;
    bk_writer *w = NULL;
    assert_int_equal(bk_repo_open_vfs(v, REPO, NULL, &r), 0);
    assert_int_equal(bk_set_begin(r, &w), 0);
    assert_int_equal(put_file(w, "edb/db.edb", 500, 2), 0); /* a pack left in the pool */
    assert_int_equal(crashvfs_fail_next(disk, CRASHVFS_RENAME, OM_E_DiskFull), 0);
    char sid[65];
    json_t *doc = json_array();
    int rc = bk_set_commit(w, doc, sid); /* frees w, takes doc */
    assert_int_equal(rc, OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "the set document must be a JSON object"));
    assert_null(strstr(om_err_detail(), "renaming"));
    om_err_clear();
    bk_repo_close(r);
    crashvfs_free(disk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_pack_write_cut_at_every_sync_leaves_a_valid_repository),
        cmocka_unit_test(small_packs_merged_by_expire_cut_at_every_sync_lose_nothing),
        cmocka_unit_test(a_full_disk_stops_the_merge_not_expire),
        cmocka_unit_test(a_full_disk_never_fails_expire_for_a_rewrite),
        cmocka_unit_test(a_commit_after_a_failure_says_the_first_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
