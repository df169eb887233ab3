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

static void a_pack_write_cut_at_every_sync_leaves_a_valid_repository(void **s)
{
    (void)s;
    om_log_min_level(OM_ERROR);
    crashvfs *disk = crashvfs_new(7);
    assert_non_null(disk);
    bk_init_opts io = {.block_size = BS, .pack_size = 64u << 10};
    assert_int_equal(bk_repo_init_vfs(crashvfs_vfs(disk), REPO, &io), 0);
    outcome a;
    assert_int_equal(write_set(crashvfs_vfs(disk), 1, 24, 5001, &a), 0);
    /* The second set shares 12 blocks with the first and brings 28 (2 packs and a bit). */
    int points = 0;
    for (int n = 1;; n++) {
        assert_true(n < MAX_POINT);
        int crashed = 0;
        for (int k = 0; k < REBOOTS; k++) {
            crashvfs *c = crashvfs_clone(disk);
            assert_non_null(c);
            crashvfs_reseed(c, (uint64_t)n * 1000 + (uint64_t)k);
            crashvfs_crash_at_sync(c, (uint64_t)n);
            outcome b;
            int rc = write_set(crashvfs_vfs(c), 13, 40, 5002, &b);
            crashed = crashvfs_crashed(c);
            if (crashed)
                assert_int_equal(rc, OM_E_Crashed);
            else
                assert_int_equal(rc, 0);
            crashvfs_reboot(c); /* without a crash: the power goes now, after the last sync */
            check_repository(crashvfs_vfs(c), n, a.id, &b);
            if (!crashed) assert_true(b.published);
            crashvfs_free(c);
            if (!crashed) break;
        }
        if (!crashed) break;
        points++;
    }
    /* Packs (content, name, folder), indexes, the set file and its publication: each has
     * its syncs. */
    assert_true(points >= 12);
    fprintf(stderr, "%d crash points, each rebooted %d ways\n", points, REBOOTS);
    crashvfs_free(disk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_pack_write_cut_at_every_sync_leaves_a_valid_repository),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
