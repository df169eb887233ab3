/* The crash VFS: what survives a simulated power loss, and that the VFS behaves like a
 * filesystem the engine can run on. Each test names the behaviour it proves; the ones about
 * crashes loop over seeds, since every outcome of a crash is a random choice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "base/error.h"
#include "base/vfs.h"
#include "crashvfs.h"

#define SEEDS 64

/* ---- helpers ---- */

static crashvfs *disk(uint64_t seed)
{
    crashvfs *c = crashvfs_new(seed);
    assert_non_null(c);
    return c;
}

/* Writes path with n bytes of data, then syncs the file and/or its directory. */
static void put(om_vfs *v, const char *path, const void *data, size_t n, int sync_file,
                int sync_dir)
{
    om_file *f = NULL;
    assert_int_equal(om_open(v, path, OM_O_CREATE, &f), 0);
    assert_int_equal(om_resize(f, 0), 0);
    if (n) assert_int_equal(om_pwrite(f, data, n, 0), 0);
    if (sync_file) assert_int_equal(om_sync(f), 0);
    assert_int_equal(om_close(f), 0);
    if (sync_dir) {
        char dir[256];
        om_dirname(path, dir, sizeof dir);
        assert_int_equal(v->sync_dir(v, dir), 0);
    }
}

static void put_str(om_vfs *v, const char *path, const char *s, int sync_file, int sync_dir)
{
    put(v, path, s, strlen(s), sync_file, sync_dir);
}

/* 1 when path holds exactly data[0..n). */
static int holds(om_vfs *v, const char *path, const void *data, size_t n)
{
    uint8_t *buf = NULL;
    size_t got = 0;
    if (om_read_file(v, path, &buf, &got)) return 0;
    int same = got == n && (n == 0 || memcmp(buf, data, n) == 0);
    free(buf);
    return same;
}

static int holds_str(om_vfs *v, const char *path, const char *s)
{
    return holds(v, path, s, strlen(s));
}

static void fill(uint8_t *b, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        b[i] = (uint8_t)(seed >> 56);
    }
}

/* Loses the power at the next sync (of a scratch file, so that nothing under test is synced
 * by it), then reboots. */
static void crash_now(crashvfs *c)
{
    om_vfs *v = crashvfs_vfs(c);
    om_file *f = NULL;
    assert_int_equal(om_open(v, "/scratch", OM_O_CREATE, &f), 0);
    crashvfs_crash_at_sync(c, 1);
    assert_int_equal(om_sync(f), OM_E_Crashed);
    assert_int_equal(om_close(f), 0);
    assert_true(crashvfs_crashed(c));
    assert_int_equal(crashvfs_reboot(c), 0);
    assert_false(crashvfs_crashed(c));
}

static int all_bytes(const uint8_t *b, size_t n, uint8_t v)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != v) return 0;
    return 1;
}

/* ---- content ---- */

static void test_synced_data_survives_a_crash_exactly(void **state)
{
    (void)state;
    static uint8_t big[100000], small[4096];
    fill(big, sizeof big, 1);
    fill(small, sizeof small, 2);
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        assert_int_equal(v->mkdir(v, "/d"), 0);
        assert_int_equal(v->sync_dir(v, "/"), 0);
        put(v, "/d/big", big, sizeof big, 1, 0);
        put(v, "/d/small", small, sizeof small, 1, 0);
        put(v, "/d/one", "x", 1, 1, 1);
        /* Unsynced changes elsewhere must not disturb them. */
        put(v, "/d/other", big, sizeof big, 0, 0);
        crash_now(c);
        assert_true(holds(v, "/d/big", big, sizeof big));
        assert_true(holds(v, "/d/small", small, sizeof small));
        assert_true(holds_str(v, "/d/one", "x"));
        crashvfs_free(c);
    }
}

static void test_unsynced_overwrite_comes_back_old_new_or_garbled(void **state)
{
    (void)state;
    uint8_t a[4096], b[4096];
    memset(a, 'A', sizeof a);
    memset(b, 'B', sizeof b);
    int old = 0, fresh = 0, garbled = 0;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        put(v, "/f", a, sizeof a, 1, 1);
        om_file *f = NULL;
        assert_int_equal(om_open(v, "/f", 0, &f), 0);
        assert_int_equal(om_pwrite(f, b, sizeof b, 0), 0);
        /* The crash hits the very sync meant to make the overwrite durable: it must not. */
        crashvfs_crash_at_sync(c, 1);
        assert_int_equal(om_sync(f), OM_E_Crashed);
        assert_int_equal(om_close(f), 0);
        assert_int_equal(crashvfs_reboot(c), 0);

        uint8_t *buf = NULL;
        size_t n = 0;
        assert_int_equal(om_read_file(v, "/f", &buf, &n), 0);
        assert_int_equal(n, sizeof a);
        if (!memcmp(buf, a, n))
            old++;
        else if (!memcmp(buf, b, n))
            fresh++;
        else
            garbled++;
        free(buf);
        crashvfs_free(c);
    }
    assert_true(old > 0);
    assert_true(fresh > 0);
    assert_true(garbled > 0);
}

static void test_unsynced_write_never_garbles_synced_bytes_of_its_block(void **state)
{
    (void)state;
    uint8_t a[100], b[100], buf[200];
    memset(a, 'A', sizeof a);
    memset(b, 'B', sizeof b);
    int sizes[2] = {0, 0};
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        put(v, "/log", a, sizeof a, 1, 1);
        /* A log appends a record to a block whose start is already synced. */
        om_file *f = NULL;
        assert_int_equal(om_open(v, "/log", 0, &f), 0);
        assert_int_equal(om_pwrite(f, b, sizeof b, sizeof a), 0);
        assert_int_equal(om_close(f), 0);
        crash_now(c);

        uint64_t size = 0;
        size_t got = 0;
        assert_int_equal(om_open(v, "/log", OM_O_RDONLY, &f), 0);
        assert_int_equal(om_fsize(f, &size), 0);
        assert_true(size == 100 || size == 200);
        sizes[size == 200]++;
        assert_int_equal(v->pread(f, buf, sizeof buf, 0, &got), 0);
        assert_int_equal(got, size);
        assert_true(all_bytes(buf, 100, 'A'));
        assert_int_equal(om_close(f), 0);
        crashvfs_free(c);
    }
    assert_true(sizes[0] > 0 && sizes[1] > 0);
}

static void
test_unsynced_append_comes_back_with_old_or_new_size_and_zeros_when_dropped(void **state)
{
    (void)state;
    uint8_t a[4096], b[8192], buf[12288];
    memset(a, 'A', sizeof a);
    memset(b, 'B', sizeof b);
    int short_size = 0, full_size = 0, zero_block = 0;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        put(v, "/f", a, sizeof a, 1, 1);
        om_file *f = NULL;
        assert_int_equal(om_open(v, "/f", 0, &f), 0);
        assert_int_equal(om_pwrite(f, b, sizeof b, sizeof a), 0);
        assert_int_equal(om_close(f), 0);
        crash_now(c);

        uint64_t size = 0;
        size_t got = 0;
        assert_int_equal(om_open(v, "/f", OM_O_RDONLY, &f), 0);
        assert_int_equal(om_fsize(f, &size), 0);
        assert_int_equal(v->pread(f, buf, sizeof buf, 0, &got), 0);
        assert_int_equal(om_close(f), 0);
        assert_int_equal(got, size);
        assert_true(all_bytes(buf, 4096, 'A'));
        if (size == 4096) {
            short_size++;
        } else {
            assert_int_equal(size, 12288);
            full_size++;
            for (size_t blk = 1; blk < 3; blk++)
                if (all_bytes(buf + blk * 4096, 4096, 0)) zero_block++;
        }
        crashvfs_free(c);
    }
    assert_true(short_size > 0 && full_size > 0 && zero_block > 0);
}

static void test_unsynced_shrink_comes_back_with_old_or_new_size(void **state)
{
    (void)state;
    uint8_t a[10000];
    fill(a, sizeof a, 3);
    int sizes[2] = {0, 0};
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        put(v, "/f", a, sizeof a, 1, 1);
        om_file *f = NULL;
        assert_int_equal(om_open(v, "/f", 0, &f), 0);
        assert_int_equal(om_resize(f, 10), 0);
        assert_int_equal(om_close(f), 0);
        crash_now(c);
        uint8_t *buf = NULL;
        size_t n = 0;
        assert_int_equal(om_read_file(v, "/f", &buf, &n), 0);
        assert_true(n == 10 || n == sizeof a);
        assert_memory_equal(buf, a, n);
        sizes[n == 10]++;
        free(buf);
        crashvfs_free(c);
    }
    assert_true(sizes[0] > 0 && sizes[1] > 0);
}

/* ---- names ---- */

/* Runs a name change over SEEDS seeds, crashing after it: once without the directory sync
 * (run returns 0 for the old state, 1 for the new one; both must be seen) and once with it
 * (always the new one). */
static void old_or_new(int (*run)(uint64_t seed, int with_sync))
{
    for (int with_sync = 0; with_sync <= 1; with_sync++) {
        int seen[2] = {0, 0};
        for (uint64_t seed = 1; seed <= SEEDS; seed++)
            seen[run(seed, with_sync)]++;
        if (with_sync) {
            assert_int_equal(seen[1], SEEDS);
        } else {
            assert_true(seen[0] > 0 && seen[1] > 0);
        }
    }
}

static int rename_file(uint64_t seed, int with_sync)
{
    crashvfs *c = disk(seed);
    om_vfs *v = crashvfs_vfs(c);
    put_str(v, "/f", "old", 1, 1);
    put_str(v, "/f.new", "new", 1, 0);
    assert_int_equal(v->rename(v, "/f.new", "/f"), 0);
    if (with_sync) assert_int_equal(v->sync_dir(v, "/"), 0);
    crash_now(c);
    int r = holds_str(v, "/f", "new");
    if (!r && !holds_str(v, "/f", "old"))
        fail_msg("seed %llu: /f holds neither the old nor the new content",
                 (unsigned long long)seed);
    crashvfs_free(c);
    return r;
}

static void test_rename_may_be_undone_without_sync_dir_and_survives_with_it(void **state)
{
    (void)state;
    old_or_new(rename_file);
}

/* A folder renamed moves whole: after a crash its files are all under the old name or all
 * under the new one (a file made in it unsynced before the rename goes first with it). */
static int rename_folder(uint64_t seed, int with_sync)
{
    crashvfs *c = disk(seed);
    om_vfs *v = crashvfs_vfs(c);
    om_dir *root = NULL;
    assert_int_equal(v->mkdir(v, "/a"), 0);
    put_str(v, "/a/f", "one", 1, 1);
    assert_int_equal(v->sync_dir(v, "/"), 0);
    put_str(v, "/a/g", "two", 1, 0); /* its name not synced yet */
    assert_int_equal(om_dir_open(v, NULL, "/", 0, &root), 0);
    assert_int_equal(om_rename_at(root, "a", root, "b", 0), 0);
    assert_int_equal(v->exists(v, "/a"), 0);
    assert_true(holds_str(v, "/b/f", "one") && holds_str(v, "/b/g", "two"));
    if (with_sync) assert_int_equal(om_dir_sync(root), 0);
    om_dir_close(root);
    crash_now(c);
    int r = -1;
    if (v->exists(v, "/a") == 2 && v->exists(v, "/b") == 0 && holds_str(v, "/a/f", "one")) r = 0;
    if (v->exists(v, "/a") == 0 && holds_str(v, "/b/f", "one") && holds_str(v, "/b/g", "two"))
        r = 1;
    if (r < 0)
        fail_msg("seed %llu: the folder is neither whole at /a nor whole at /b",
                 (unsigned long long)seed);
    crashvfs_free(c);
    return r;
}

static void test_directory_rename_moves_the_folder_whole(void **state)
{
    (void)state;
    old_or_new(rename_folder);
}

static void test_create_may_vanish_without_sync_dir_and_survives_with_it(void **state)
{
    (void)state;
    for (int with_sync = 0; with_sync <= 1; with_sync++) {
        int present = 0, absent = 0;
        for (uint64_t seed = 1; seed <= SEEDS; seed++) {
            crashvfs *c = disk(seed);
            om_vfs *v = crashvfs_vfs(c);
            put_str(v, "/f", "data", 1, with_sync);
            crash_now(c);
            if (v->exists(v, "/f") == 1) {
                /* The file's content was synced: a surviving name shows all of it. */
                assert_true(holds_str(v, "/f", "data"));
                present++;
            } else {
                absent++;
            }
            crashvfs_free(c);
        }
        if (with_sync) {
            assert_int_equal(present, SEEDS);
        } else {
            assert_true(present > 0 && absent > 0);
        }
    }
}

static void test_unlink_may_be_undone_without_sync_dir_and_survives_with_it(void **state)
{
    (void)state;
    for (int with_sync = 0; with_sync <= 1; with_sync++) {
        int present = 0;
        for (uint64_t seed = 1; seed <= SEEDS; seed++) {
            crashvfs *c = disk(seed);
            om_vfs *v = crashvfs_vfs(c);
            put_str(v, "/f", "data", 1, 1);
            assert_int_equal(v->unlink(v, "/f"), 0);
            assert_int_equal(v->exists(v, "/f"), 0);
            if (with_sync) assert_int_equal(v->sync_dir(v, "/"), 0);
            crash_now(c);
            if (v->exists(v, "/f")) {
                assert_true(holds_str(v, "/f", "data"));
                present++;
            }
            crashvfs_free(c);
        }
        if (with_sync) {
            assert_int_equal(present, 0);
        } else {
            assert_true(present > 0 && present < SEEDS);
        }
    }
}

static void test_sync_dir_makes_only_its_own_directory_durable(void **state)
{
    (void)state;
    int a_lost = 0;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        assert_int_equal(v->mkdir(v, "/a"), 0);
        assert_int_equal(v->mkdir(v, "/b"), 0);
        assert_int_equal(v->sync_dir(v, "/"), 0);
        put_str(v, "/a/x", "x", 1, 0);
        put_str(v, "/b/y", "y", 1, 0);
        assert_int_equal(v->sync_dir(v, "/b"), 0);
        crash_now(c);
        assert_true(holds_str(v, "/b/y", "y"));
        if (v->exists(v, "/a/x") == 0) a_lost++;
        crashvfs_free(c);
    }
    assert_true(a_lost > 0);
}

static void test_sync_dir_also_makes_the_new_directory_it_lives_in_durable(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        /* "/" is never synced: the mkdir becomes durable because /n/x needs it. */
        assert_int_equal(v->mkdir(v, "/n"), 0);
        assert_int_equal(v->mkdir(v, "/n/m"), 0);
        put_str(v, "/n/m/x", "x", 1, 1);
        crash_now(c);
        assert_int_equal(v->exists(v, "/n"), 2);
        assert_true(holds_str(v, "/n/m/x", "x"));
        crashvfs_free(c);
    }
}

static void test_rename_moves_the_file_with_its_open_handle_and_content_state(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        om_file *f = NULL;
        assert_int_equal(om_open(v, "/a", OM_O_CREATE, &f), 0);
        assert_int_equal(v->rename(v, "/a", "/b"), 0);
        assert_int_equal(v->sync_dir(v, "/"), 0);
        /* Written and synced through the handle opened under the old name. */
        assert_int_equal(om_pwrite(f, "moved", 5, 0), 0);
        assert_int_equal(om_sync(f), 0);
        assert_int_equal(om_close(f), 0);
        crash_now(c);
        assert_int_equal(v->exists(v, "/a"), 0);
        assert_true(holds_str(v, "/b", "moved"));
        crashvfs_free(c);
    }
}

/* ---- power loss ---- */

static int count_names(void *arg, const char *name)
{
    (void)name;
    (*(int *)arg)++;
    return 0;
}

static void test_every_operation_after_the_crash_fails_with_crashed(void **state)
{
    (void)state;
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    om_file *f = NULL;
    assert_int_equal(om_open(v, "/f", OM_O_CREATE, &f), 0);
    uint64_t s0 = crashvfs_syncs(c);
    crashvfs_crash_at_sync(c, 2);
    assert_int_equal(om_sync(f), 0);
    assert_false(crashvfs_crashed(c));
    assert_int_equal(v->sync_dir(v, "/"), OM_E_Crashed);
    assert_non_null(strstr(om_err_detail(), "simulated power loss"));
    assert_true(crashvfs_crashed(c));
    assert_int_equal(crashvfs_syncs(c), s0 + 2);

    uint8_t buf[8];
    size_t got;
    uint64_t size;
    int n = 0;
    om_file *g = NULL;
    assert_int_equal(om_open(v, "/f", 0, &g), OM_E_Crashed);
    assert_int_equal(om_open(v, "/new", OM_O_CREATE, &g), OM_E_Crashed);
    assert_null(g);
    assert_int_equal(v->pread(f, buf, sizeof buf, 0, &got), OM_E_Crashed);
    assert_int_equal(om_pwrite(f, buf, sizeof buf, 0), OM_E_Crashed);
    assert_int_equal(om_sync(f), OM_E_Crashed);
    assert_int_equal(om_fsize(f, &size), OM_E_Crashed);
    assert_int_equal(om_resize(f, 100), OM_E_Crashed);
    assert_int_equal(v->rename(v, "/f", "/g"), OM_E_Crashed);
    assert_int_equal(v->unlink(v, "/f"), OM_E_Crashed);
    assert_int_equal(v->sync_dir(v, "/"), OM_E_Crashed);
    assert_int_equal(v->exists(v, "/f"), OM_E_Crashed);
    assert_int_equal(v->mkdir(v, "/d"), OM_E_Crashed);
    assert_int_equal(v->list(v, "/", count_names, &n), OM_E_Crashed);
    assert_int_equal(v->free_space(v, "/", &size), OM_E_Crashed);
    assert_int_equal(n, 0);
    /* Calls after the power is gone are not sync calls. */
    assert_int_equal(crashvfs_syncs(c), s0 + 2);
    /* The engine must still be able to let go of its files. */
    assert_int_equal(om_close(f), 0);
    crashvfs_free(c);
}

static void test_handles_from_before_the_reboot_fail_but_can_be_closed(void **state)
{
    (void)state;
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    put_str(v, "/f", "data", 1, 1);
    om_file *f = NULL, *g = NULL;
    assert_int_equal(om_open(v, "/f", 0, &f), 0);
    /* A reboot without a crash point loses the power there and then. */
    assert_int_equal(crashvfs_reboot(c), 0);
    uint8_t buf[4];
    size_t got;
    assert_int_equal(v->pread(f, buf, sizeof buf, 0, &got), OM_E_Crashed);
    assert_int_equal(om_pwrite(f, "x", 1, 0), OM_E_Crashed);
    assert_int_equal(om_sync(f), OM_E_Crashed);
    assert_int_equal(om_close(f), 0);
    assert_int_equal(om_open(v, "/f", 0, &g), 0);
    assert_int_equal(om_pread_full(g, buf, 4, 0), 0);
    assert_memory_equal(buf, "data", 4);
    assert_int_equal(om_close(g), 0);
    crashvfs_free(c);
}

static int list_into(void *arg, const char *name)
{
    strcat((char *)arg, name);
    strcat((char *)arg, ",");
    return 0;
}

/* After the sweep of what the durable helper may have left for name, dir holds exactly
 * `want` (names with a ',' after each). */
static void only_name_after_sweep(om_vfs *v, const char *dir, const char *name, const char *want)
{
    om_dir *d = NULL;
    char got[1024] = "";
    assert_int_equal(om_dir_open(v, NULL, dir, 0, &d), 0);
    assert_int_equal(om_durable_sweep(d, name, NULL), 0);
    assert_int_equal(om_list_at(d, list_into, got), 0);
    om_dir_close(d);
    if (strcmp(got, want)) fail_msg("%s holds '%s' after the sweep, not '%s'", dir, got, want);
}

/* The helper the engine uses for its small files: after a crash at any of its sync points,
 * under any seed, the file holds the old or the new content, whole. */
static void test_durable_replace_is_old_or_new_after_a_crash_at_any_of_its_syncs(void **state)
{
    (void)state;
    static uint8_t old[5000], fresh[9000];
    fill(old, sizeof old, 4);
    fill(fresh, sizeof fresh, 5);

    crashvfs *prepared = disk(1);
    om_vfs *pv = crashvfs_vfs(prepared);
    assert_int_equal(pv->mkdir(pv, "/d"), 0);
    assert_int_equal(pv->sync_dir(pv, "/"), 0);
    assert_int_equal(om_write_file_durable(pv, "/d/f", old, sizeof old), 0);

    /* A dry run counts the crash points. */
    crashvfs *dry = crashvfs_clone(prepared);
    assert_non_null(dry);
    uint64_t s0 = crashvfs_syncs(dry);
    assert_int_equal(om_write_file_durable(crashvfs_vfs(dry), "/d/f", fresh, sizeof fresh), 0);
    uint64_t points = crashvfs_syncs(dry) - s0;
    assert_true(points >= 2);
    crashvfs_free(dry);

    int saw_old = 0, saw_new = 0;
    for (uint64_t k = 1; k <= points + 1; k++) {
        for (uint64_t seed = 1; seed <= SEEDS; seed++) {
            crashvfs *c = crashvfs_clone(prepared);
            assert_non_null(c);
            om_vfs *v = crashvfs_vfs(c);
            crashvfs_reseed(c, seed * 1000 + k);
            crashvfs_crash_at_sync(c, k);
            int rc = om_write_file_durable(v, "/d/f", fresh, sizeof fresh);
            assert_int_equal(rc, k <= points ? OM_E_Crashed : 0);
            assert_int_equal(crashvfs_reboot(c), 0);
            if (holds(v, "/d/f", old, sizeof old)) {
                assert_true(k <= points); /* once it returned 0, the new content is promised */
                saw_old++;
            } else if (holds(v, "/d/f", fresh, sizeof fresh)) {
                saw_new++;
            } else {
                fail_msg("crash at sync %llu, seed %llu: /d/f is neither old nor new",
                         (unsigned long long)k, (unsigned long long)seed);
            }
            only_name_after_sweep(v, "/d", "f", "f,");
            crashvfs_free(c);
        }
    }
    assert_true(saw_old > 0 && saw_new > 0);
    crashvfs_free(prepared);
}

/* ---- space ---- */

static void test_space_limit_refuses_growth_with_disk_full_and_changes_nothing(void **state)
{
    (void)state;
    static uint8_t a[10000], b[10000], buf[10000];
    fill(a, sizeof a, 6);
    memset(b, 'b', sizeof b);
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    crashvfs_set_space_limit(c, 10000);
    uint64_t free_bytes = 0, size = 0;
    size_t got = 0;

    om_file *f = NULL, *g = NULL;
    assert_int_equal(om_open(v, "/a", OM_O_CREATE, &f), 0);
    assert_int_equal(om_pwrite(f, a, 6000, 0), 0);
    assert_int_equal(v->free_space(v, "/", &free_bytes), 0);
    assert_int_equal(free_bytes, 4000);

    assert_int_equal(om_pwrite(f, b, 5000, 5001), OM_E_DiskFull);
    assert_int_equal(om_resize(f, 10001), OM_E_DiskFull);
    assert_int_equal(om_fsize(f, &size), 0);
    assert_int_equal(size, 6000);
    assert_int_equal(v->pread(f, buf, sizeof buf, 0, &got), 0);
    assert_int_equal(got, 6000);
    assert_memory_equal(buf, a, 6000); /* nothing of the refused write landed */

    /* Overwrites need no space; the limit itself can be reached exactly. */
    assert_int_equal(om_pwrite(f, b, 6000, 0), 0);
    assert_int_equal(om_pwrite(f, a, 4000, 6000), 0);
    assert_int_equal(v->free_space(v, "/", &free_bytes), 0);
    assert_int_equal(free_bytes, 0);

    /* Space is shared by all files. */
    assert_int_equal(om_open(v, "/b", OM_O_CREATE, &g), 0);
    assert_int_equal(om_pwrite(g, "x", 1, 0), OM_E_DiskFull);

    /* An unlinked file still takes space while it is open, and frees it when closed. */
    assert_int_equal(v->unlink(v, "/a"), 0);
    assert_int_equal(om_pwrite(g, "x", 1, 0), OM_E_DiskFull);
    assert_int_equal(om_close(f), 0);
    assert_int_equal(om_pwrite(g, "x", 1, 0), 0);

    /* Shrinking gives space back. */
    assert_int_equal(om_resize(g, 0), 0);
    assert_int_equal(v->free_space(v, "/", &free_bytes), 0);
    assert_int_equal(free_bytes, 10000);
    assert_int_equal(om_close(g), 0);

    crashvfs_set_space_limit(c, 0);
    assert_int_equal(v->free_space(v, "/", &free_bytes), 0);
    assert_true(free_bytes >= ((uint64_t)1 << 30));
    crashvfs_free(c);
}

/* ---- clone, determinism, injection ---- */

static void test_clone_is_independent_of_the_original(void **state)
{
    (void)state;
    crashvfs *orig = disk(9);
    om_vfs *ov = crashvfs_vfs(orig);
    assert_int_equal(ov->mkdir(ov, "/d"), 0);
    assert_int_equal(ov->sync_dir(ov, "/"), 0);
    put_str(ov, "/d/f", "durable", 1, 1);
    put_str(ov, "/d/pending", "pending", 0, 0); /* neither content nor name synced */

    crashvfs *copy = crashvfs_clone(orig);
    assert_non_null(copy);
    om_vfs *cv = crashvfs_vfs(copy);
    assert_true(cv != ov);
    assert_true(holds_str(cv, "/d/f", "durable"));
    assert_true(holds_str(cv, "/d/pending", "pending"));

    /* Changes to either side stay on that side. */
    put_str(ov, "/d/f", "changed in the original", 1, 1);
    assert_int_equal(ov->unlink(ov, "/d/pending"), 0);
    assert_int_equal(cv->rename(cv, "/d/f", "/d/g"), 0);
    assert_true(holds_str(cv, "/d/g", "durable"));
    assert_int_equal(cv->exists(cv, "/d/pending"), 1);
    assert_int_equal(ov->exists(ov, "/d/g"), 0);
    assert_true(holds_str(ov, "/d/f", "changed in the original"));

    /* Crashing the original does not touch the copy, which outlives it. */
    crash_now(orig);
    crashvfs_free(orig);
    assert_true(holds_str(cv, "/d/g", "durable"));
    crashvfs_free(copy);
}

static void test_clone_keeps_pending_state_and_makes_the_same_choices(void **state)
{
    (void)state;
    static uint8_t data[20000];
    fill(data, sizeof data, 7);
    int differs = 0;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *orig = disk(seed);
        om_vfs *ov = crashvfs_vfs(orig);
        put(ov, "/a", data, sizeof data, 1, 1);
        put(ov, "/b", data, sizeof data, 0, 0);
        om_file *f = NULL;
        assert_int_equal(om_open(ov, "/a", 0, &f), 0);
        assert_int_equal(om_pwrite(f, "overwrite", 9, 4090), 0);
        assert_int_equal(om_close(f), 0);
        crashvfs *copy = crashvfs_clone(orig);
        assert_non_null(copy);
        om_vfs *cv = crashvfs_vfs(copy);

        assert_int_equal(crashvfs_reboot(orig), 0);
        assert_int_equal(crashvfs_reboot(copy), 0);
        for (int i = 0; i < 2; i++) {
            const char *p = i ? "/b" : "/a";
            uint8_t *x = NULL, *y = NULL;
            size_t nx = 0, ny = 0;
            int ex = om_read_file(ov, p, &x, &nx), ey = om_read_file(cv, p, &y, &ny);
            assert_int_equal(ex, ey);
            if (!ex) {
                assert_int_equal(nx, ny);
                assert_memory_equal(x, y, nx);
                if (i == 0 && memcmp(x, data, sizeof data)) differs++;
            }
            free(x);
            free(y);
        }
        crashvfs_free(orig);
        crashvfs_free(copy);
    }
    assert_true(differs > 0); /* the unsynced overwrite was in the copy too */
}

static void test_a_crashed_disk_can_be_cloned_and_rebooted_several_ways(void **state)
{
    (void)state;
    uint8_t a[4096], b[4096];
    memset(a, 'A', sizeof a);
    memset(b, 'B', sizeof b);
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    put(v, "/f", a, sizeof a, 1, 1);
    om_file *f = NULL;
    assert_int_equal(om_open(v, "/f", 0, &f), 0);
    assert_int_equal(om_pwrite(f, b, sizeof b, 0), 0);
    crashvfs_crash_at_sync(c, 1);
    assert_int_equal(om_sync(f), OM_E_Crashed);
    assert_int_equal(om_close(f), 0);

    int old = 0, fresh = 0;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *copy = crashvfs_clone(c);
        assert_non_null(copy);
        assert_true(crashvfs_crashed(copy));
        crashvfs_reseed(copy, seed);
        assert_int_equal(crashvfs_reboot(copy), 0);
        om_vfs *cv = crashvfs_vfs(copy);
        old += holds(cv, "/f", a, sizeof a);
        fresh += holds(cv, "/f", b, sizeof b);
        crashvfs_free(copy);
    }
    assert_true(old > 0 && fresh > 0);
    assert_true(crashvfs_crashed(c)); /* the original is still waiting for its reboot */
    crashvfs_free(c);
}

static void test_a_rebooted_disk_works_and_can_crash_again(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        crashvfs *c = disk(seed);
        om_vfs *v = crashvfs_vfs(c);
        put_str(v, "/first", "one", 1, 1);
        crash_now(c);
        put_str(v, "/second", "two", 1, 1);
        put_str(v, "/first", "changed", 0, 0);
        crash_now(c);
        assert_true(holds_str(v, "/second", "two"));
        assert_int_equal(v->exists(v, "/first"), 1);
        crashvfs_free(c);
    }
}

/* Runs a fixed workload with a crash in the middle; returns the files' bytes after reboot. */
static void scripted_crash(uint64_t seed, uint8_t **out, size_t *n)
{
    static uint8_t data[50000];
    fill(data, sizeof data, 8);
    crashvfs *c = disk(seed);
    om_vfs *v = crashvfs_vfs(c);
    put(v, "/x", data, sizeof data, 1, 1);
    om_file *f = NULL;
    assert_int_equal(om_open(v, "/x", 0, &f), 0);
    for (uint64_t off = 0; off < sizeof data; off += 5000)
        assert_int_equal(om_pwrite(f, data + 100, 3000, off), 0);
    assert_int_equal(om_resize(f, 70000), 0);
    assert_int_equal(om_close(f), 0);
    put(v, "/y", data, 3333, 1, 0);
    crash_now(c);
    uint8_t *x = NULL;
    size_t nx = 0;
    assert_int_equal(om_read_file(v, "/x", &x, &nx), 0);
    int y = v->exists(v, "/y");
    *out = malloc(nx + 1);
    assert_non_null(*out);
    memcpy(*out, x, nx);
    (*out)[nx] = (uint8_t)y;
    *n = nx + 1;
    free(x);
    crashvfs_free(c);
}

static void test_same_seed_gives_the_same_disk_after_a_crash(void **state)
{
    (void)state;
    uint8_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int differ = 0;
    scripted_crash(42, &a, &na);
    scripted_crash(42, &b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(b);
    for (uint64_t seed = 1; seed <= 8; seed++) {
        scripted_crash(seed, &b, &nb);
        if (nb != na || memcmp(a, b, na)) differ++;
        free(b);
    }
    free(a);
    assert_true(differ > 0);
}

static void test_injected_failure_fails_once_and_changes_nothing(void **state)
{
    (void)state;
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    put_str(v, "/f", "abc", 1, 1);
    om_file *f = NULL;
    uint8_t buf[3];
    assert_int_equal(om_open(v, "/f", 0, &f), 0);

    assert_int_equal(crashvfs_fail_next(c, CRASHVFS_WRITE, OM_E_DiskIO), 0);
    assert_int_equal(om_pwrite(f, "xyz", 3, 0), OM_E_DiskIO);
    assert_int_equal(om_pread_full(f, buf, 3, 0), 0);
    assert_memory_equal(buf, "abc", 3);
    assert_int_equal(om_pwrite(f, "xyz", 3, 0), 0);

    uint64_t s0 = crashvfs_syncs(c);
    assert_int_equal(crashvfs_fail_next(c, CRASHVFS_SYNC, OM_E_DiskIO), 0);
    assert_int_equal(om_sync(f), OM_E_DiskIO);
    assert_int_equal(crashvfs_syncs(c), s0 + 1); /* still a crash point */
    assert_int_equal(om_sync(f), 0);

    assert_int_equal(crashvfs_fail_next(c, CRASHVFS_RENAME, OM_E_DiskFull), 0);
    assert_int_equal(v->rename(v, "/f", "/g"), OM_E_DiskFull);
    assert_int_equal(v->exists(v, "/f"), 1);
    assert_int_equal(v->exists(v, "/g"), 0);

    assert_int_equal(crashvfs_fail_next(c, CRASHVFS_OPEN, OM_E_FileAccessDenied), 0);
    om_file *g = NULL;
    assert_int_equal(om_open(v, "/h", OM_O_CREATE, &g), OM_E_FileAccessDenied);
    assert_int_equal(v->exists(v, "/h"), 0);

    assert_int_equal(crashvfs_fail_next(c, CRASHVFS_NOPS, OM_E_DiskIO), OM_E_InvalidParameter);
    assert_int_equal(crashvfs_fail_next(c, CRASHVFS_READ, 0), OM_E_InvalidParameter);
    assert_int_equal(om_close(f), 0);
    crashvfs_free(c);
}

/* ---- filesystem behaviour ---- */

static int collect(void *arg, const char *name)
{
    char *s = arg;
    strcat(s, name);
    strcat(s, ",");
    return 0;
}

static int stop_at_first(void *arg, const char *name)
{
    (void)name;
    (*(int *)arg)++;
    return 7;
}

static void test_names_behave_like_a_filesystem(void **state)
{
    (void)state;
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    om_file *f = NULL;

    assert_int_equal(v->exists(v, "/"), 2);
    assert_int_equal(v->exists(v, "/d"), 0);
    assert_int_equal(v->mkdir(v, "/d"), 0);
    assert_int_equal(v->mkdir(v, "/d/"), 0); /* an existing directory is fine */
    assert_int_equal(v->exists(v, "/d//"), 2);
    assert_int_equal(v->mkdir(v, "/x/y"), OM_E_FileNotFound);

    assert_int_equal(om_open(v, "/d/f", 0, &f), OM_E_FileNotFound);
    assert_int_equal(om_open(v, "/nodir/f", OM_O_CREATE, &f), OM_E_FileNotFound);
    assert_int_equal(om_open(v, "d/f", OM_O_CREATE, &f), OM_E_InvalidPath);
    assert_int_equal(om_open(v, "/d/../f", OM_O_CREATE, &f), OM_E_InvalidPath);
    assert_int_equal(om_open(v, "/d", 0, &f), OM_E_InvalidPath);

    put_str(v, "/d//f", "one", 0, 0);
    assert_int_equal(v->exists(v, "/d/f"), 1);
    assert_int_equal(om_open(v, "/d/f", OM_O_CREATE | OM_O_EXCL, &f), OM_E_FileAlreadyExists);
    assert_int_equal(v->mkdir(v, "/d/f"), OM_E_FileAlreadyExists);
    assert_int_equal(om_open(v, "/d/f/g", OM_O_CREATE, &f), OM_E_InvalidPath);
    assert_int_equal(om_open(v, "/d/f", OM_O_RDONLY, &f), 0);
    assert_int_equal(om_pwrite(f, "x", 1, 0), OM_E_FileAccessDenied);
    assert_int_equal(om_close(f), 0);

    put_str(v, "/d/g", "two", 0, 0);
    assert_int_equal(v->mkdir(v, "/d/sub"), 0);
    char names[256] = "";
    assert_int_equal(v->list(v, "/d", collect, names), 0);
    assert_string_equal(names, "f,g,sub,");
    names[0] = 0;
    assert_int_equal(v->list(v, "/", collect, names), 0);
    assert_string_equal(names, "d,");
    int calls = 0;
    assert_int_equal(v->list(v, "/d", stop_at_first, &calls), 7);
    assert_int_equal(calls, 1);
    assert_int_equal(v->list(v, "/nodir", collect, names), OM_E_FileNotFound);

    /* rename over an existing file replaces it */
    assert_int_equal(v->rename(v, "/d/g", "/d/f"), 0);
    assert_true(holds_str(v, "/d/f", "two"));
    assert_int_equal(v->exists(v, "/d/g"), 0);
    assert_int_equal(v->rename(v, "/d/g", "/d/h"), OM_E_FileNotFound);
    assert_int_equal(v->rename(v, "/d/f", "/nodir/f"), OM_E_FileNotFound);
    assert_int_equal(v->rename(v, "/d/f", "/d/sub"), OM_E_InvalidPath);
    assert_int_equal(v->rename(v, "/d/f", "/d/f"), 0);
    assert_true(holds_str(v, "/d/f", "two"));

    assert_int_equal(v->unlink(v, "/d/sub"), OM_E_InvalidPath);
    assert_int_equal(v->unlink(v, "/d/f"), 0);
    assert_int_equal(v->unlink(v, "/d/f"), OM_E_FileNotFound);
    assert_int_equal(v->sync_dir(v, "/nodir"), OM_E_FileNotFound);
    crashvfs_free(c);
}

static void test_resize_zero_fills_and_reads_are_short_at_the_end(void **state)
{
    (void)state;
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    om_file *f = NULL;
    static uint8_t buf[30000];
    size_t got = 0;
    uint64_t size = 0;
    assert_int_equal(om_open(v, "/f", OM_O_CREATE, &f), 0);
    assert_int_equal(om_pwrite(f, "0123456789", 10, 0), 0);
    assert_int_equal(v->pread(f, buf, 100, 0, &got), 0);
    assert_int_equal(got, 10);
    assert_int_equal(v->pread(f, buf, 100, 50, &got), 0);
    assert_int_equal(got, 0);
    assert_int_equal(om_pread_full(f, buf, 11, 0), OM_E_FileIOBeyondEOF);

    assert_int_equal(om_resize(f, 8192), 0);
    assert_int_equal(om_pread_full(f, buf, 8192, 0), 0);
    assert_memory_equal(buf, "0123456789", 10);
    assert_true(all_bytes(buf + 10, 8182, 0));

    /* A write past the end leaves a hole of zeros. */
    assert_int_equal(om_pwrite(f, "z", 1, 20000), 0);
    assert_int_equal(om_fsize(f, &size), 0);
    assert_int_equal(size, 20001);
    assert_int_equal(om_pread_full(f, buf, 20001, 0), 0);
    assert_true(all_bytes(buf + 10, 20000 - 10, 0));
    assert_int_equal(buf[20000], 'z');

    /* Shrink then grow: the cut bytes do not come back. */
    assert_int_equal(om_resize(f, 5), 0);
    assert_int_equal(v->pread(f, buf, 100, 0, &got), 0);
    assert_int_equal(got, 5);
    assert_int_equal(om_resize(f, 100), 0);
    assert_int_equal(om_pread_full(f, buf, 100, 0), 0);
    assert_memory_equal(buf, "01234", 5);
    assert_true(all_bytes(buf + 5, 95, 0));
    assert_int_equal(om_close(f), 0);
    crashvfs_free(c);
}

static void test_unlinked_open_file_stays_usable_until_closed(void **state)
{
    (void)state;
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    put_str(v, "/f", "data", 1, 1);
    om_file *f = NULL;
    uint8_t buf[4];
    assert_int_equal(om_open(v, "/f", 0, &f), 0);
    assert_int_equal(v->unlink(v, "/f"), 0);
    assert_int_equal(v->exists(v, "/f"), 0);
    assert_int_equal(om_pwrite(f, "DA", 2, 0), 0);
    assert_int_equal(om_sync(f), 0);
    assert_int_equal(om_pread_full(f, buf, 4, 0), 0);
    assert_memory_equal(buf, "DAta", 4);
    /* A new file under the name is a different file. */
    put_str(v, "/f", "fresh", 0, 0);
    assert_int_equal(om_pread_full(f, buf, 4, 0), 0);
    assert_memory_equal(buf, "DAta", 4);
    assert_int_equal(om_close(f), 0);
    assert_true(holds_str(v, "/f", "fresh"));
    crashvfs_free(c);
}

/* ---- threads ---- */

struct writer {
    om_vfs *v;
    char path[32];
    int rc;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    om_file *f = NULL;
    uint8_t page[32768];
    w->rc = om_open(w->v, w->path, OM_O_CREATE, &f);
    for (uint32_t i = 0; !w->rc && i < 64; i++) {
        memset(page, (int)i, sizeof page);
        w->rc = om_pwrite(f, page, sizeof page, (uint64_t)i * sizeof page);
        if (!w->rc && i % 8 == 7) w->rc = om_sync(f);
    }
    int crc = om_close(f);
    if (!w->rc) w->rc = crc;
    return NULL;
}

static void test_parallel_writers_and_syncers_see_their_own_data(void **state)
{
    (void)state;
    crashvfs *c = disk(1);
    om_vfs *v = crashvfs_vfs(c);
    struct writer w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){.v = v};
        snprintf(w[i].path, sizeof w[i].path, "/w%d", i);
        assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(w[i].rc, 0);
    }
    assert_int_equal(crashvfs_syncs(c), 4 * 8);
    crash_now(c);
    for (int i = 0; i < 4; i++) {
        om_file *f = NULL;
        uint8_t page[32768];
        /* Their names were never synced: a file may be gone, but one that is there holds
         * every synced page. */
        if (v->exists(v, w[i].path) != 1) continue;
        assert_int_equal(om_open(v, w[i].path, OM_O_RDONLY, &f), 0);
        for (uint32_t p = 0; p < 64; p++) {
            assert_int_equal(om_pread_full(f, page, sizeof page, (uint64_t)p * sizeof page), 0);
            assert_true(all_bytes(page, sizeof page, (uint8_t)p));
        }
        assert_int_equal(om_close(f), 0);
    }
    crashvfs_free(c);
}

/* ---- directory handles and the durable-file helper on them ---- */

/* A file laid down through the helper in pieces (as a restore streams it) and put in place
 * without replacing anything: after a crash at any sync point, and the sweep, the name is
 * absent or holds the whole content, and nothing else is in the folder. */
static void test_durable_new_file_is_absent_or_whole_after_a_crash_at_any_sync(void **state)
{
    (void)state;
    static uint8_t data[3 * 4096 + 123];
    fill(data, sizeof data, 9);
    crashvfs *prepared = disk(3);
    om_vfs *pv = crashvfs_vfs(prepared);
    assert_int_equal(pv->mkdir(pv, "/d"), 0);
    assert_int_equal(pv->sync_dir(pv, "/"), 0);

    uint64_t points = 0;
    int saw_none = 0, saw_whole = 0;
    for (uint64_t k = 0; k <= points + 1; k++) {
        for (uint64_t seed = 1; seed <= (k ? SEEDS : 1); seed++) {
            crashvfs *c = crashvfs_clone(prepared);
            assert_non_null(c);
            om_vfs *v = crashvfs_vfs(c);
            crashvfs_reseed(c, seed * 7919 + k);
            uint64_t s0 = crashvfs_syncs(c);
            if (k) crashvfs_crash_at_sync(c, k);
            om_dir *d = NULL;
            om_durable w;
            int rc = om_dir_open(v, NULL, "/d", 0, &d);
            if (!rc) rc = om_durable_begin(d, "E0000000001.log", &w);
            for (size_t off = 0; !rc && off < sizeof data; off += 4096) {
                size_t n = sizeof data - off < 4096 ? sizeof data - off : 4096;
                rc = om_pwrite(w.f, data + off, n, off);
            }
            if (!rc) rc = om_durable_commit(&w, 0);
            om_dir_close(d);
            if (!k) { /* the dry run counts the crash points */
                assert_int_equal(rc, 0);
                points = crashvfs_syncs(c) - s0;
                assert_true(points >= 2);
                crashvfs_free(c);
                continue;
            }
            assert_int_equal(rc, k <= points ? OM_E_Crashed : 0);
            assert_int_equal(crashvfs_reboot(c), 0);
            if (v->exists(v, "/d/E0000000001.log") == 0) {
                assert_true(k <= points);
                saw_none++;
                only_name_after_sweep(v, "/d", "E0000000001.log", "");
            } else {
                if (!holds(v, "/d/E0000000001.log", data, sizeof data))
                    fail_msg("crash at sync %llu, seed %llu: the file is there but not whole",
                             (unsigned long long)k, (unsigned long long)seed);
                saw_whole++;
                only_name_after_sweep(v, "/d", "E0000000001.log", "E0000000001.log,");
            }
            crashvfs_free(c);
        }
    }
    assert_true(saw_none > 0 && saw_whole > 0);
    crashvfs_free(prepared);
}

/* The name rules and no-replace of the handles hold in the crash VFS as on a real disk. */
static void test_directory_handles_take_one_name_and_replace_only_when_told(void **state)
{
    (void)state;
    crashvfs *c = disk(4);
    om_vfs *v = crashvfs_vfs(c);
    om_dir *d = NULL, *sub = NULL, *bad = NULL;
    om_file *f = NULL;
    assert_int_equal(om_dir_open(v, NULL, "/a/b", 0, &d), OM_E_FileNotFound);
    assert_int_equal(om_dir_open(v, NULL, "/a/b", OM_D_CREATE, &d), 0);
    assert_int_equal(om_dir_open(v, d, "sub", OM_D_CREATE, &sub), 0);
    assert_int_equal(om_dir_open(v, d, "x/y", OM_D_CREATE, &bad), OM_E_InvalidPath);
    assert_int_equal(om_open_at(d, "..", OM_O_CREATE, &f), OM_E_InvalidPath);
    assert_int_equal(om_open_at(d, "", OM_O_CREATE, &f), OM_E_InvalidPath);
    assert_int_equal(om_durable_write_at(d, "one", "1", 1, 0), 0);
    assert_int_equal(om_durable_write_at(d, "two", "2", 1, 0), 0);
    assert_int_equal(om_durable_write_at(d, "one", "3", 1, 0), OM_E_FileAlreadyExists);
    assert_true(holds_str(v, "/a/b/one", "1"));
    assert_int_equal(om_rename_at(d, "two", d, "one", 0), OM_E_FileAlreadyExists);
    assert_int_equal(om_rename_at(d, "two", sub, "one", 0), 0);
    assert_int_equal(om_durable_write_at(d, "one", "4", 1, OM_RENAME_REPLACE), 0);
    assert_true(holds_str(v, "/a/b/one", "4"));
    assert_true(holds_str(v, "/a/b/sub/one", "2"));
    assert_int_equal(om_kind_at(d, "sub"), OM_KIND_DIR);
    assert_int_equal(om_kind_at(d, "one"), OM_KIND_FILE);
    assert_int_equal(om_kind_at(d, "none"), OM_KIND_NONE);
    assert_int_equal(om_rmdir_at(d, "sub"), OM_E_InvalidParameter); /* not empty */
    assert_int_equal(om_unlink_at(sub, "one"), 0);
    assert_int_equal(om_rmdir_at(d, "sub"), 0);
    assert_int_equal(om_durable_write_at(sub, "late", "x", 1, 0), OM_E_FileNotFound);
    om_dir_close(sub);
    om_dir_close(d);
    crashvfs_free(c);
}

/* Removing a folder's names and then the folder is durable only after the parent's sync, and
 * a crash before it never leaves a name without its folder. */
static void test_rmdir_is_durable_after_the_parents_sync_and_never_orphans_a_name(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        for (int with_sync = 0; with_sync < 2; with_sync++) {
            crashvfs *c = disk(seed);
            om_vfs *v = crashvfs_vfs(c);
            om_dir *d = NULL, *sub = NULL;
            assert_int_equal(om_dir_open(v, NULL, "/d", OM_D_CREATE, &d), 0);
            assert_int_equal(v->sync_dir(v, "/"), 0);
            assert_int_equal(om_dir_open(v, d, "_r", OM_D_CREATE, &sub), 0);
            assert_int_equal(om_durable_write_at(sub, "f", "restored", 8, 0), 0);
            assert_int_equal(om_dir_sync(d), 0);
            assert_int_equal(om_unlink_at(sub, "f"), 0);
            assert_int_equal(om_rmdir_at(d, "_r"), 0);
            if (with_sync) assert_int_equal(om_dir_sync(d), 0);
            om_dir_close(sub);
            om_dir_close(d);
            assert_int_equal(crashvfs_reboot(c), 0);
            int dir = v->exists(v, "/d/_r"), file = v->exists(v, "/d/_r/f");
            if (with_sync) assert_int_equal(dir, 0);
            assert_true(dir == 2 || file == 0);
            if (file) assert_true(holds_str(v, "/d/_r/f", "restored"));
            crashvfs_free(c);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synced_data_survives_a_crash_exactly),
        cmocka_unit_test(test_unsynced_overwrite_comes_back_old_new_or_garbled),
        cmocka_unit_test(test_unsynced_write_never_garbles_synced_bytes_of_its_block),
        cmocka_unit_test(
            test_unsynced_append_comes_back_with_old_or_new_size_and_zeros_when_dropped),
        cmocka_unit_test(test_unsynced_shrink_comes_back_with_old_or_new_size),
        cmocka_unit_test(test_rename_may_be_undone_without_sync_dir_and_survives_with_it),
        cmocka_unit_test(test_directory_rename_moves_the_folder_whole),
        cmocka_unit_test(test_create_may_vanish_without_sync_dir_and_survives_with_it),
        cmocka_unit_test(test_unlink_may_be_undone_without_sync_dir_and_survives_with_it),
        cmocka_unit_test(test_sync_dir_makes_only_its_own_directory_durable),
        cmocka_unit_test(test_sync_dir_also_makes_the_new_directory_it_lives_in_durable),
        cmocka_unit_test(test_rename_moves_the_file_with_its_open_handle_and_content_state),
        cmocka_unit_test(test_every_operation_after_the_crash_fails_with_crashed),
        cmocka_unit_test(test_handles_from_before_the_reboot_fail_but_can_be_closed),
        cmocka_unit_test(test_durable_replace_is_old_or_new_after_a_crash_at_any_of_its_syncs),
        cmocka_unit_test(test_space_limit_refuses_growth_with_disk_full_and_changes_nothing),
        cmocka_unit_test(test_clone_is_independent_of_the_original),
        cmocka_unit_test(test_clone_keeps_pending_state_and_makes_the_same_choices),
        cmocka_unit_test(test_a_crashed_disk_can_be_cloned_and_rebooted_several_ways),
        cmocka_unit_test(test_a_rebooted_disk_works_and_can_crash_again),
        cmocka_unit_test(test_same_seed_gives_the_same_disk_after_a_crash),
        cmocka_unit_test(test_injected_failure_fails_once_and_changes_nothing),
        cmocka_unit_test(test_names_behave_like_a_filesystem),
        cmocka_unit_test(test_resize_zero_fills_and_reads_are_short_at_the_end),
        cmocka_unit_test(test_unlinked_open_file_stays_usable_until_closed),
        cmocka_unit_test(test_parallel_writers_and_syncers_see_their_own_data),
        cmocka_unit_test(test_durable_new_file_is_absent_or_whole_after_a_crash_at_any_sync),
        cmocka_unit_test(test_directory_handles_take_one_name_and_replace_only_when_told),
        cmocka_unit_test(test_rmdir_is_durable_after_the_parents_sync_and_never_orphans_a_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
