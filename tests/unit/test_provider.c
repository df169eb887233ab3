/* src/vss/provider: a shadow copy keeps the bytes its files had at commit, whatever happens to
 * the originals afterwards; it is read-only; remove deletes it (twice is fine) and nothing
 * else; auto picks the provider the filesystem can do. The reflink and btrfs tests run on
 * loop-mounted XFS and btrfs images and the placement tests on tmpfs, so they need root and
 * mkfs.xfs/mkfs.btrfs: without them they are skipped with the reason printed. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/hash.h"
#include "base/logging.h"
#include "base/time.h"
#include "base/uuid.h"
#include "base/vfs.h"
#include "vss/provider/provider.h"

#define assert_ok(e)                                                                               \
    do {                                                                                           \
        int rc_ = (e);                                                                             \
        if (rc_) print_message("%s: %d %s\n", #e, rc_, om_err_detail());                           \
        assert_int_equal(rc_, 0);                                                                  \
    } while (0)

/* The shadowed tree: a database, finished logs (held), the current log and the checkpoint
 * (copied by held), a nested directory, a symlink and a FIFO. */
#define NFILES 7
enum { EDB, LOG1, LOG2, CURLOG, CHK, NOTES, EMPTY };
static const char *const files[NFILES] = {
    "db/priv.edb",  "logs/E0000000001.log",    "logs/E0000000002.log", "logs/E00.log",
    "logs/E00.chk", "nested/deeper/notes.txt", "nested/empty"};
static const size_t sizes[NFILES] = {4u << 20, 1u << 20, 1u << 20, 1u << 20, 8192, 300, 0};

typedef struct fixture {
    char dir[256];     /* the test's temporary directory */
    char shadows[512]; /* the coordinator's shadow root */
    char data[512];    /* the tree to shadow */
    char mnt[300];     /* where a test filesystem is mounted */
    char img[512], dev[64];
    int mounted;
    const char *skip; /* why this test cannot run here */
    uint64_t hash[NFILES];
    char heldbuf[3][600];
    char *held[3];
    vss_shadow_path sp;
} fixture;

/* --- helpers ------------------------------------------------------------------------------ */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void path_of(char *out, size_t n, const char *root, const char *rel)
{
    assert_true((size_t)snprintf(out, n, "%s/%s", root, rel) < n);
}

static void write_random(const char *path, size_t n, int flags)
{
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    om_random(buf, (unsigned)n);
    int fd = open(path, O_WRONLY | O_CREAT | flags, 0640);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
    close(fd);
    free(buf);
}

/* XXH3 of a file's contents; 0 when it cannot be read. */
static uint64_t file_hash(const char *path)
{
    uint8_t *data = NULL;
    size_t n = 0;
    if (om_read_file(om_vfs_posix(), path, &data, &n) != 0) return 0;
    uint64_t h = om_xxh3(data, n, 0);
    free(data);
    return h;
}

static uint64_t hash_at(const char *root, const char *rel)
{
    char p[VSS_PATH_MAX];
    path_of(p, sizeof p, root, rel);
    return file_hash(p);
}

static unsigned mode_at(const char *root, const char *rel)
{
    char p[VSS_PATH_MAX];
    struct stat st;
    path_of(p, sizeof p, root, rel);
    assert_int_equal(lstat(p, &st), 0);
    return st.st_mode & 07777;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void make_tree(fixture *f)
{
    static const char *const dirs[] = {"", "db", "logs", "nested", "nested/deeper"};
    char p[VSS_PATH_MAX];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        path_of(p, sizeof p, f->data, dirs[i]);
        assert_int_equal(mkdir(p, 0750), 0);
    }
    for (int i = 0; i < NFILES; i++) {
        path_of(p, sizeof p, f->data, files[i]);
        write_random(p, sizes[i], O_EXCL);
        f->hash[i] = file_hash(p);
    }
    path_of(p, sizeof p, f->data, "link");
    assert_int_equal(symlink("db/priv.edb", p), 0);
    path_of(p, sizeof p, f->data, "pipe");
    assert_int_equal(mkfifo(p, 0600), 0);
    for (int i = 0; i < 3; i++) { /* the .edb and the finished logs */
        path_of(f->heldbuf[i], sizeof f->heldbuf[i], f->data, files[i]);
        f->held[i] = f->heldbuf[i];
    }
    f->sp = (vss_shadow_path){.path = f->data, .held = f->held, .nheld = 3};
}

/* What the writer does after Thaw: the checkpoint and the current log change, a finished log is
 * truncated away; the .edb is written in place (or, when held, deleted: its name goes, its
 * bytes must stay in the shadow copy). */
static void change_tree(fixture *f, int held)
{
    char p[VSS_PATH_MAX];
    path_of(p, sizeof p, f->data, files[CHK]);
    write_random(p, sizes[CHK], O_TRUNC);
    path_of(p, sizeof p, f->data, files[CURLOG]);
    write_random(p, 4096, O_APPEND);
    path_of(p, sizeof p, f->data, files[NOTES]);
    write_random(p, 100, O_TRUNC);
    path_of(p, sizeof p, f->data, files[LOG1]);
    assert_int_equal(unlink(p), 0);
    path_of(p, sizeof p, f->data, files[EDB]);
    if (held) {
        assert_int_equal(unlink(p), 0);
    } else {
        int fd = open(p, O_WRONLY);
        assert_true(fd >= 0);
        char junk[65536];
        om_random(junk, sizeof junk);
        assert_int_equal(pwrite(fd, junk, sizeof junk, 1 << 20), (ssize_t)sizeof junk);
        close(fd);
        assert_int_not_equal(hash_at(f->data, files[EDB]), f->hash[EDB]);
    }
    assert_int_not_equal(hash_at(f->data, files[CHK]), f->hash[CHK]);
    assert_int_not_equal(hash_at(f->data, files[CURLOG]), f->hash[CURLOG]);
}

/* The exposed tree holds every file with its bytes at commit, the symlink as a symlink, and no
 * FIFO (except in a btrfs snapshot, which keeps everything). */
static void check_exposed(const fixture *f, const vss_shadow *s)
{
    int snapshot = !strcmp(s->provider, "btrfs");
    char p[VSS_PATH_MAX], target[64];
    for (int i = 0; i < NFILES; i++) {
        path_of(p, sizeof p, s->exposed, files[i]);
        if (!exists(p) || file_hash(p) != f->hash[i]) print_message("differs: %s\n", files[i]);
        assert_true(exists(p));
        assert_true(file_hash(p) == f->hash[i]);
    }
    path_of(p, sizeof p, s->exposed, "link");
    ssize_t n = readlink(p, target, sizeof target - 1);
    assert_true(n > 0);
    target[n] = 0;
    assert_string_equal(target, "db/priv.edb");
    path_of(p, sizeof p, s->exposed, "pipe");
    assert_int_equal(exists(p), snapshot);
}

/* Directories 0555, created files 0444; held's links keep the original inode and its mode. */
static void check_readonly(const fixture *f, const vss_shadow *s, int held)
{
    static const char *const dirs[] = {".", "logs", "nested/deeper"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        assert_int_equal(mode_at(s->exposed, dirs[i]), 0555);
    assert_int_equal(mode_at(s->exposed, files[CHK]), 0444);
    assert_int_equal(mode_at(s->exposed, files[CURLOG]), 0444);
    assert_int_equal(mode_at(s->exposed, files[NOTES]), 0444);
    assert_int_equal(mode_at(s->exposed, files[EDB]), held ? 0640 : 0444);
    char a[VSS_PATH_MAX], b[VSS_PATH_MAX];
    struct stat sa, sb;
    path_of(a, sizeof a, s->exposed, files[EDB]);
    path_of(b, sizeof b, f->data, files[EDB]);
    assert_int_equal(stat(a, &sa), 0);
    assert_int_equal(stat(b, &sb), 0);
    assert_int_equal(sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev, held);
}

static void new_shadow(vss_shadow *s)
{
    om_uuid u;
    memset(s, 0, sizeof *s);
    om_uuid_new(&u);
    om_uuid_str(&u, s->set_id);
}

static void make_shadow(const vss_provider *pv, fixture *f, vss_shadow *s)
{
    new_shadow(s);
    assert_ok(pv->prepare(&f->sp, f->shadows, s));
    assert_string_equal(s->provider, pv->name);
    assert_ok(pv->commit(&f->sp, s, om_mono_ns() + 30000000000ull));
    assert_ok(pv->expose(s));
    assert_int_equal(s->files, NFILES);
    uint64_t bytes = 0;
    for (int i = 0; i < NFILES; i++)
        bytes += sizes[i];
    assert_int_equal(s->bytes, bytes);
    assert_true(s->created_ns > 0);
}

/* remove, from the catalog record read back as after a restart, deletes the storage and its set
 * directory, and a second remove is fine. */
static void check_remove(const vss_provider *pv, const vss_shadow *s)
{
    char set[VSS_PATH_MAX];
    vss_shadow rec;
    json_t *j = vss_shadow_to_json(s);
    assert_non_null(j);
    assert_ok(vss_shadow_from_json(j, &rec));
    json_decref(j);
    om_dirname(s->storage, set, sizeof set);
    assert_true(exists(s->storage));
    assert_ok(pv->remove(&rec));
    assert_false(exists(s->storage));
    assert_false(exists(set));
    assert_ok(pv->remove(s));
}

/* The full proof for one provider on the tree made by make_tree: shadow, change the originals,
 * compare, remove. */
static void shadow_survives_changes(const vss_provider *pv, fixture *f, int held)
{
    vss_shadow s;
    make_shadow(pv, f, &s);
    if (strcmp(pv->name, "btrfs") != 0) check_readonly(f, &s, held);
    change_tree(f, held);
    check_exposed(f, &s);
    check_remove(pv, &s);
    assert_true(hash_at(f->data, files[LOG2]) == f->hash[LOG2]); /* originals untouched */
}

/* --- fixtures ----------------------------------------------------------------------------- */

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/ombra-provider-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->shadows, sizeof f->shadows, "%s/shadows", f->dir);
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    snprintf(f->mnt, sizeof f->mnt, "%s/mnt", f->dir);
    snprintf(f->img, sizeof f->img, "%s/fs.img", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int rc = 0;
    if (f->mounted && sh("umount %s 2>/dev/null", f->mnt) != 0)
        rc |= sh("umount -l %s", f->mnt); /* still busy: detach it anyway */
    if (f->dev[0]) rc |= sh("losetup -d %s", f->dev);
    rc |= sh("rm -rf %s", f->dir);
    free(f);
    return rc ? -1 : 0;
}

/* Mounts a new filesystem at f->mnt: "xfs", "xfs-noreflink", "btrfs" (300 MiB loop images) or
 * "tmpfs:SIZE". Returns NULL, or why it cannot (the test is then skipped). */
static const char *mount_fs(fixture *f, const char *kind)
{
    if (geteuid() != 0) return "needs root to mount a test filesystem";
    if (mkdir(f->mnt, 0755) != 0) return "cannot create the mount point";
    if (!strncmp(kind, "tmpfs:", 6)) {
        if (sh("mount -t tmpfs -o size=%s tmpfs %s", kind + 6, f->mnt) != 0)
            return "mount -t tmpfs failed";
        f->mounted = 1;
        return NULL;
    }
    const char *tool = !strcmp(kind, "btrfs") ? "mkfs.btrfs" : "mkfs.xfs";
    if (sh("command -v %s >/dev/null", tool) != 0)
        return !strcmp(kind, "btrfs") ? "mkfs.btrfs is not installed" : "mkfs.xfs is not installed";
    const char *opts = !strcmp(kind, "btrfs") ? "-q -f"
                       : !strcmp(kind, "xfs") ? "-q -f -m reflink=1"
                                              : "-q -f -m reflink=0";
    if (sh("truncate -s 300M %s && %s %s %s >/dev/null 2>&1", f->img, tool, opts, f->img) != 0)
        return "mkfs failed";
    char cmd[700];
    snprintf(cmd, sizeof cmd, "losetup --find --show %s", f->img);
    FILE *p = popen(cmd, "r");
    if (!p) return "losetup failed";
    if (!fgets(f->dev, sizeof f->dev, p)) f->dev[0] = 0;
    pclose(p);
    f->dev[strcspn(f->dev, "\n")] = 0;
    if (!f->dev[0]) return "no free loop device (losetup --find failed)";
    if (sh("mount %s %s", f->dev, f->mnt) != 0) return "mount of the loop device failed";
    f->mounted = 1;
    return NULL;
}

static int setup_xfs(void **state)
{
    int rc = setup(state);
    fixture *f = *state;
    if (!rc && !(f->skip = mount_fs(f, "xfs")))
        snprintf(f->data, sizeof f->data, "%s/data", f->mnt);
    return rc;
}

static int setup_xfs_noreflink(void **state)
{
    int rc = setup(state);
    fixture *f = *state;
    if (!rc && !(f->skip = mount_fs(f, "xfs-noreflink")))
        snprintf(f->data, sizeof f->data, "%s/data", f->mnt);
    return rc;
}

/* The tree lives in a subvolume "vol", as a store's data directory would. */
static int setup_btrfs(void **state)
{
    int rc = setup(state);
    fixture *f = *state;
    if (rc || (f->skip = mount_fs(f, "btrfs")) != NULL) return rc;
    if (sh("btrfs subvolume create %s/vol >/dev/null", f->mnt) != 0) return -1;
    snprintf(f->data, sizeof f->data, "%s/vol/data", f->mnt);
    return 0;
}

/* The tree on tmpfs (no reflink, no btrfs); the shadow root stays on the temp directory's
 * filesystem, so held must put its storage on the tmpfs. */
static int setup_tmpfs(void **state)
{
    int rc = setup(state);
    fixture *f = *state;
    if (!rc && !(f->skip = mount_fs(f, "tmpfs:64m")))
        snprintf(f->data, sizeof f->data, "%s/data", f->mnt);
    return rc;
}

/* A 1 MiB tmpfs as the shadow root: too small for a copy of the tree. */
static int setup_small_shadow_root(void **state)
{
    int rc = setup(state);
    fixture *f = *state;
    if (!rc && !(f->skip = mount_fs(f, "tmpfs:1m")))
        snprintf(f->shadows, sizeof f->shadows, "%s", f->mnt);
    return rc;
}

#define SKIP_UNLESS_READY(f)                                                                       \
    do {                                                                                           \
        if ((f)->skip) {                                                                           \
            print_message("skipped: %s\n", (f)->skip);                                             \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* --- tests -------------------------------------------------------------------------------- */

static void copy_shadow_keeps_the_bytes_of_commit_time(void **state)
{
    make_tree(*state);
    shadow_survives_changes(vss_provider_find("copy"), *state, 0);
}

static void held_shadow_links_held_files_and_copies_the_rest(void **state)
{
    make_tree(*state);
    shadow_survives_changes(vss_provider_find("held"), *state, 1);
}

static void held_storage_goes_on_the_original_mount(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS_READY(f);
    const vss_provider *held = vss_provider_find("held");
    vss_shadow s;
    make_tree(f);
    new_shadow(&s);
    assert_ok(held->prepare(&f->sp, f->shadows, &s));
    char want[VSS_PATH_MAX];
    snprintf(want, sizeof want, "%s/.ombra-shadows/%s/%s", f->mnt, s.set_id, s.id);
    assert_string_equal(s.storage, want);
    assert_ok(held->remove(&s));
    shadow_survives_changes(held, f, 1);
}

static void commit_past_its_deadline_times_out_and_remove_leaves_nothing(void **state)
{
    fixture *f = *state;
    make_tree(f);
    const char *names[] = {"copy", "held"};
    for (int i = 0; i < 2; i++) {
        const vss_provider *pv = vss_provider_find(names[i]);
        vss_shadow s;
        new_shadow(&s);
        assert_ok(pv->prepare(&f->sp, f->shadows, &s));
        assert_int_equal(pv->commit(&f->sp, &s, 0), OM_E_HoldWritesTimeout);
        assert_non_null(strstr(om_err_detail(), f->data));
        check_remove(pv, &s);
    }
    assert_int_equal(sh("test -z \"$(ls -A %s)\"", f->shadows), 0);
}

static void prepare_refuses_when_the_copy_does_not_fit(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS_READY(f);
    make_tree(f);
    vss_shadow s;
    new_shadow(&s);
    assert_int_equal(vss_provider_find("copy")->prepare(&f->sp, f->shadows, &s),
                     OM_E_InsufficientStorage);
    assert_non_null(strstr(om_err_detail(), f->data));
    assert_non_null(strstr(om_err_detail(), "MiB free"));
    assert_int_equal(sh("test -z \"$(ls -A %s)\"", f->shadows), 0);
    assert_ok(vss_provider_find("copy")->remove(&s)); /* nothing to do */
}

static void reflink_on_xfs_clones_and_auto_picks_it(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS_READY(f);
    const vss_provider *rl = vss_provider_find("reflink");
    char why[1024];
    make_tree(f);
    assert_int_equal(rl->supports(f->data, f->shadows, why, sizeof why), 1);
    assert_ptr_equal(vss_provider_auto(f->data, f->shadows, 1, why, sizeof why), rl);
    print_message("auto on xfs: %s\n", why);
    shadow_survives_changes(rl, f, 0);
}

static void reflink_refused_on_xfs_without_reflink(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS_READY(f);
    char why[1024];
    make_tree(f);
    assert_int_equal(vss_provider_find("reflink")->supports(f->data, f->shadows, why, sizeof why),
                     0);
    print_message("reflink: %s\n", why);
    assert_non_null(strstr(why, "no reflink on xfs"));
    assert_ptr_equal(vss_provider_auto(f->data, f->shadows, 1, why, sizeof why),
                     vss_provider_find("held"));
    assert_ptr_equal(vss_provider_auto(f->data, f->shadows, 0, why, sizeof why),
                     vss_provider_find("copy"));
}

static void btrfs_snapshot_is_read_only_and_auto_picks_it(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS_READY(f);
    const vss_provider *bt = vss_provider_find("btrfs");
    char why[1024], p[VSS_PATH_MAX];
    make_tree(f);
    assert_int_equal(bt->supports(f->data, f->shadows, why, sizeof why), 1);
    assert_ptr_equal(vss_provider_auto(f->data, f->shadows, 1, why, sizeof why), bt);
    vss_shadow s;
    make_shadow(bt, f, &s);
    char want[VSS_PATH_MAX];
    snprintf(want, sizeof want, "%s/vol/.ombra-shadows/%s/%s/data", f->mnt, s.set_id, s.id);
    assert_string_equal(s.exposed, want);
    path_of(p, sizeof p, s.exposed, files[CHK]);
    assert_int_equal(open(p, O_WRONLY), -1);
    assert_int_equal(errno, EROFS);
    change_tree(f, 0);
    check_exposed(f, &s);
    check_remove(bt, &s);
}

static void btrfs_refuses_a_tree_holding_another_subvolume(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS_READY(f);
    char why[1024];
    make_tree(f);
    assert_int_equal(sh("btrfs subvolume create %s/inner >/dev/null", f->data), 0);
    assert_int_equal(vss_provider_find("btrfs")->supports(f->data, f->shadows, why, sizeof why), 0);
    assert_non_null(strstr(why, "inner"));
    vss_shadow s;
    new_shadow(&s);
    assert_int_equal(vss_provider_find("btrfs")->prepare(&f->sp, f->shadows, &s),
                     OM_E_VolumeNotSupportedByProvider);
    assert_ok(vss_provider_find("btrfs")->remove(&s));
}

static void auto_picks_held_or_copy_where_there_is_no_cheap_snapshot(void **state)
{
    fixture *f = *state;
    SKIP_UNLESS_READY(f);
    char why[1024];
    make_tree(f);
    assert_ptr_equal(vss_provider_auto(f->data, f->shadows, 1, why, sizeof why),
                     vss_provider_find("held"));
    print_message("auto on tmpfs: %s\n", why);
    assert_non_null(strstr(why, "not btrfs"));
    assert_non_null(strstr(why, "no reflink"));
    assert_ptr_equal(vss_provider_auto(f->data, f->shadows, 0, why, sizeof why),
                     vss_provider_find("copy"));
    assert_non_null(strstr(why, "held: a writer cannot hold"));
}

static void supports_says_why_on_an_unsupported_filesystem(void **state)
{
    fixture *f = *state;
    char why[1024];
    struct statfs fs;
    make_tree(f);
    assert_int_equal(statfs(f->data, &fs), 0);
    if ((unsigned long)fs.f_type == BTRFS_SUPER_MAGIC) {
        print_message("skipped: %s is on btrfs\n", f->dir);
        skip();
    }
    assert_int_equal(vss_provider_find("btrfs")->supports(f->data, f->shadows, why, sizeof why), 0);
    assert_non_null(strstr(why, "not btrfs"));
    assert_non_null(strstr(why, f->data));
    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing", f->dir);
    assert_true(vss_provider_find("copy")->supports(missing, f->shadows, why, sizeof why) < 0);
    assert_non_null(strstr(om_err_detail(), missing));
}

static void a_file_is_shadowed_on_its_own(void **state)
{
    fixture *f = *state;
    make_tree(f);
    char edb[VSS_PATH_MAX];
    path_of(edb, sizeof edb, f->data, files[EDB]);
    vss_shadow_path one = {.path = edb, .held = f->held, .nheld = 1};
    const char *names[] = {"copy", "held"};
    for (int i = 0; i < 2; i++) {
        const vss_provider *pv = vss_provider_find(names[i]);
        vss_shadow s;
        new_shadow(&s);
        assert_ok(pv->prepare(&one, f->shadows, &s));
        assert_ok(pv->commit(&one, &s, UINT64_MAX));
        assert_ok(pv->expose(&s));
        assert_non_null(strstr(s.exposed, "/priv.edb"));
        assert_true(file_hash(s.exposed) == f->hash[EDB]);
        assert_int_equal(s.files, 1);
        check_remove(pv, &s);
    }
}

static void held_checks_its_held_files(void **state)
{
    fixture *f = *state;
    const vss_provider *held = vss_provider_find("held");
    make_tree(f);
    char outside[] = "/etc/passwd";
    vss_shadow s;
    f->held[1] = outside;
    new_shadow(&s);
    assert_int_equal(held->prepare(&f->sp, f->shadows, &s), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "/etc/passwd"));
    f->held[1] = f->heldbuf[1];
    new_shadow(&s);
    assert_ok(held->prepare(&f->sp, f->shadows, &s));
    /* Held files are linked at prepare: one whose name vanishes before the freeze (a log
     * truncated meanwhile) is still in the shadow copy with its content. */
    assert_int_equal(unlink(f->held[2]), 0);
    assert_ok(held->commit(&f->sp, &s, UINT64_MAX));
    char p[VSS_PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", s.exposed, files[LOG2]);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(st.st_size > 0);
    check_remove(held, &s);
}

static void overlong_paths_are_refused_clearly(void **state)
{
    fixture *f = *state;
    char *path = malloc(VSS_PATH_MAX + 100);
    assert_non_null(path);
    memset(path, 'a', VSS_PATH_MAX + 99);
    path[0] = '/';
    path[VSS_PATH_MAX + 99] = 0;
    vss_shadow_path p = {.path = path};
    vss_shadow s;
    new_shadow(&s);
    assert_int_equal(vss_provider_find("copy")->prepare(&p, f->shadows, &s), OM_E_InvalidPath);
    assert_non_null(strstr(om_err_detail(), "too long"));
    assert_ok(vss_provider_find("copy")->remove(&s));
    free(path);
}

static void remove_refuses_a_record_that_is_not_a_shadow_copy(void **state)
{
    fixture *f = *state;
    make_tree(f);
    vss_shadow s;
    new_shadow(&s);
    om_uuid u;
    om_uuid_new(&u);
    om_uuid_str(&u, s.id);
    snprintf(s.storage, sizeof s.storage, "%s", f->data);
    for (size_t i = 0; i < 4; i++) {
        size_t n;
        const vss_provider *pv = vss_providers(&n)[i];
        assert_int_equal(pv->remove(&s), OM_E_UnexpectedProviderError);
    }
    assert_true(hash_at(f->data, files[EDB]) == f->hash[EDB]);
}

static void providers_are_found_by_name_in_auto_order(void **state)
{
    (void)state;
    size_t n = 0;
    const vss_provider *const *all = vss_providers(&n);
    const char *order[] = {"btrfs", "reflink", "held", "copy"};
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(all[i]->name, order[i]);
        assert_ptr_equal(vss_provider_find(order[i]), all[i]);
    }
    assert_null(vss_provider_find("auto"));
    assert_null(vss_provider_find("zfs"));
}

static void catalog_record_round_trips_through_json(void **state)
{
    (void)state;
    vss_shadow s, back;
    new_shadow(&s);
    om_uuid u;
    om_uuid_new(&u);
    om_uuid_str(&u, s.id);
    strcpy(s.provider, "reflink");
    strcpy(s.original, "/srv/ombra/db1");
    snprintf(s.storage, sizeof s.storage, "/srv/.ombra-shadows/%s/%s", s.set_id, s.id);
    strcpy(s.exposed, s.storage);
    s.created_ns = 1700000000123456789ull;
    s.bytes = 5ull << 40;
    s.files = 123456;
    json_t *j = vss_shadow_to_json(&s);
    assert_non_null(j);
    assert_ok(vss_shadow_from_json(j, &back));
    assert_memory_equal(&s, &back, sizeof s);
    json_object_del(j, "storage");
    assert_int_equal(vss_shadow_from_json(j, &back), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "storage"));
    json_decref(j);
}

int main(void)
{
    om_log_min_level(OM_ERROR); /* the symlink warnings are expected */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(providers_are_found_by_name_in_auto_order),
        cmocka_unit_test(catalog_record_round_trips_through_json),
        cmocka_unit_test_setup_teardown(copy_shadow_keeps_the_bytes_of_commit_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(held_shadow_links_held_files_and_copies_the_rest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(held_storage_goes_on_the_original_mount, setup_tmpfs,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_file_is_shadowed_on_its_own, setup, teardown),
        cmocka_unit_test_setup_teardown(held_checks_its_held_files, setup, teardown),
        cmocka_unit_test_setup_teardown(
            commit_past_its_deadline_times_out_and_remove_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(prepare_refuses_when_the_copy_does_not_fit,
                                        setup_small_shadow_root, teardown),
        cmocka_unit_test_setup_teardown(overlong_paths_are_refused_clearly, setup, teardown),
        cmocka_unit_test_setup_teardown(remove_refuses_a_record_that_is_not_a_shadow_copy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(supports_says_why_on_an_unsupported_filesystem, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(reflink_on_xfs_clones_and_auto_picks_it, setup_xfs,
                                        teardown),
        cmocka_unit_test_setup_teardown(reflink_refused_on_xfs_without_reflink, setup_xfs_noreflink,
                                        teardown),
        cmocka_unit_test_setup_teardown(btrfs_snapshot_is_read_only_and_auto_picks_it, setup_btrfs,
                                        teardown),
        cmocka_unit_test_setup_teardown(btrfs_refuses_a_tree_holding_another_subvolume, setup_btrfs,
                                        teardown),
        cmocka_unit_test_setup_teardown(auto_picks_held_or_copy_where_there_is_no_cheap_snapshot,
                                        setup_tmpfs, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
