/* btrfs: a read-only snapshot of the subvolume holding the path, made by one ioctl during the
 * freeze (BTRFS_IOC_SNAP_CREATE_V2 with BTRFS_SUBVOL_RDONLY) into
 * <subvolume root>/.ombra-shadows/<set>/<id>. The snapshot holds the whole subvolume; exposed
 * is the original's place inside it. A subvolume has a device number of its own and its root
 * directory is inode BTRFS_FIRST_FREE_OBJECTID (256), which is how the root is found. Creating
 * and deleting snapshots needs root here (deleting does without only under the
 * user_subvol_rm_allowed mount option, which we do not rely on). */
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "base/error.h"
#include "base/time.h"
#include "base/vfs.h"
#include "vss/provider/provider_internal.h"

static int is_btrfs(const char *path, int *yes)
{
    struct statfs f;
    if (statfs(path, &f) != 0) return vss_sys_err("reading", path);
    *yes = (unsigned long)f.f_type == BTRFS_SUPER_MAGIC;
    return 0;
}

/* The root of the subvolume holding path (resolved) into sub, path's place in it into rel (""
 * for the root itself). */
static int find_subvolume(const char *path, char *sub, size_t sn, char *rel, size_t rn)
{
    char *real = realpath(path, NULL);
    if (!real) return vss_sys_err("resolving", path);
    struct stat st;
    dev_t dev = 0;
    int rc = vss_fmt_path(sub, sn, "%s", real);
    for (int first = 1; !rc; first = 0) {
        if (stat(sub, &st) != 0) {
            rc = vss_sys_err("reading", sub);
            break;
        }
        if (first) dev = st.st_dev;
        if (st.st_dev != dev || !strcmp(sub, "/"))
            rc = om_errf(OM_E_UnexpectedProviderError, "no btrfs subvolume root above %s", real);
        else if (S_ISDIR(st.st_mode) && st.st_ino == BTRFS_FIRST_FREE_OBJECTID)
            break;
        else
            strrchr(sub, '/')[strrchr(sub, '/') == sub ? 1 : 0] = 0; /* up one level */
    }
    const char *r = real + strlen(sub);
    while (*r == '/')
        r++;
    if (!rc) rc = vss_fmt_path(rel, rn, "%s", r);
    free(real);
    return rc;
}

/* 1 when btrfs can shadow path (sub and rel filled), 0 with the reason in why, <0 error. */
static int btrfs_check(const char *path, char *sub, char *rel, char *why, size_t n)
{
    char fs[64], top[VSS_PATH_MAX];
    int yes = 0, rc = is_btrfs(path, &yes);
    if (rc) return rc;
    if (!yes) {
        snprintf(why, n, "not btrfs (%s is on %s)", path, vss_fs_name(path, fs, sizeof fs));
        return 0;
    }
    if (geteuid() != 0) {
        snprintf(why, n, "btrfs snapshots need root (running as uid %u)", (unsigned)geteuid());
        return 0;
    }
    vss_scan *sc = malloc(sizeof *sc);
    if (!sc) return om_errf(OM_E_OutOfMemory, "probing %s: out of memory", path);
    rc = find_subvolume(path, sub, VSS_PATH_MAX, rel, VSS_PATH_MAX);
    if (!rc) rc = vss_join(top, sizeof top, sub, VSS_SHADOWS_DIR);
    if (!rc) rc = vss_scan_tree(path, top, NULL, NULL, sc);
    int ok = !rc && !sc->other_fs[0];
    if (!rc && !ok)
        snprintf(why, n,
                 "%s is another subvolume or filesystem, which a snapshot of %s would not hold",
                 sc->other_fs, sub);
    free(sc);
    return rc ? rc : ok;
}

static int btrfs_supports(const char *path, const char *shadow_root, char *why, size_t n)
{
    (void)shadow_root;
    char sub[VSS_PATH_MAX], rel[VSS_PATH_MAX];
    int rc = btrfs_check(path, sub, rel, why, n);
    if (rc == 1 && n) why[0] = 0;
    return rc;
}

static int btrfs_prepare(const vss_shadow_path *p, const char *shadow_root, vss_shadow *s)
{
    (void)shadow_root;
    char sub[VSS_PATH_MAX], rel[VSS_PATH_MAX], top[VSS_PATH_MAX], why[1024];
    struct stat st;
    int rc = vss_shadow_begin(p, s, "btrfs"), made = 0;
    int ok = rc ? 0 : btrfs_check(s->original, sub, rel, why, sizeof why);
    if (!rc && ok < 0) rc = ok;
    if (!rc && ok == 0)
        rc = om_errf(OM_E_VolumeNotSupportedByProvider, "btrfs cannot shadow %s: %s", s->original,
                     why);
    if (!rc) rc = vss_join(top, sizeof top, sub, VSS_SHADOWS_DIR);
    if (!rc && mkdir(top, 0750) != 0 && errno != EEXIST) rc = vss_sys_err("creating", top);
    if (!rc) rc = vss_check_space(top, 1u << 20, s->original);
    if (!rc) made = !(rc = vss_make_storage(s, top, 0));
    if (!rc && lstat(s->storage, &st) == 0)
        rc = om_errf(OM_E_FileAlreadyExists, "shadow storage %s already exists", s->storage);
    if (!rc && rel[0]) rc = vss_join(s->exposed, sizeof s->exposed, s->storage, rel);
    if (!rc && !rel[0]) memcpy(s->exposed, s->storage, sizeof s->exposed);
    if (rc && made) vss_remove_set_dir(s);
    if (rc) s->storage[0] = s->exposed[0] = 0;
    return rc;
}

static int btrfs_commit(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns)
{
    (void)p;
    char set[VSS_PATH_MAX], top[VSS_PATH_MAX], sub[VSS_PATH_MAX];
    om_dirname(s->storage, set, sizeof set);
    om_dirname(set, top, sizeof top);
    om_dirname(top, sub, sizeof sub);
    int rc = vss_check_deadline(deadline_ns, s->original), sfd = -1, dfd = -1;
    if (!rc && (sfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        rc = vss_sys_err("opening", sub);
    if (!rc && (dfd = open(set, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        rc = vss_sys_err("opening", set);
    uint64_t now = om_now_ns();
    if (!rc) {
        struct btrfs_ioctl_vol_args_v2 a;
        memset(&a, 0, sizeof a);
        a.fd = sfd;
        a.flags = BTRFS_SUBVOL_RDONLY;
        snprintf(a.name, sizeof a.name, "%s", s->id);
        if (ioctl(dfd, BTRFS_IOC_SNAP_CREATE_V2, &a) != 0)
            rc = vss_op_err("snapshotting (BTRFS_IOC_SNAP_CREATE_V2)", sub, s->storage);
    }
    if (sfd >= 0) close(sfd);
    if (dfd >= 0) close(dfd);
    if (!rc) s->created_ns = now;
    return rc;
}

/* A read-only subvolume needs no chmod. */
static int btrfs_expose(vss_shadow *s)
{
    return vss_count_tree(s->exposed, &s->bytes, &s->files);
}

static int destroy_snapshot(const vss_shadow *s)
{
    char set[VSS_PATH_MAX];
    om_dirname(s->storage, set, sizeof set);
    int fd = open(set, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return vss_sys_err("opening", set);
    struct btrfs_ioctl_vol_args a;
    memset(&a, 0, sizeof a);
    snprintf(a.name, sizeof a.name, "%s", s->id);
    int rc = ioctl(fd, BTRFS_IOC_SNAP_DESTROY, &a) == 0 ? 0 : errno;
    close(fd);
    if (rc)
        return om_errf(OM_E_ProviderVeto, "deleting the btrfs snapshot %s: %s", s->storage,
                       strerror(rc));
    return 0;
}

static int btrfs_remove(const vss_shadow *s)
{
    struct stat st;
    int yes = 0;
    if (!s->storage[0]) return 0; /* prepare failed: it left nothing */
    int rc = vss_check_storage_path(s);
    if (rc) return rc;
    if (lstat(s->storage, &st) != 0) {
        if (errno != ENOENT) return vss_sys_err("reading", s->storage);
        vss_remove_set_dir(s); /* the commit never made it */
        return 0;
    }
    if ((rc = is_btrfs(s->storage, &yes)) != 0) return rc;
    if (!yes || !S_ISDIR(st.st_mode) || st.st_ino != BTRFS_FIRST_FREE_OBJECTID)
        return om_errf(OM_E_UnexpectedProviderError,
                       "refusing to delete %s: it is not a btrfs snapshot", s->storage);
    if ((rc = destroy_snapshot(s)) == 0) vss_remove_set_dir(s);
    return rc;
}

const vss_provider vss_btrfs_provider = {
    .name = "btrfs",
    .supports = btrfs_supports,
    .prepare = btrfs_prepare,
    .commit = btrfs_commit,
    .expose = btrfs_expose,
    .remove = btrfs_remove,
};
