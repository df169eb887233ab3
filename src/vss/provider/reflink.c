/* reflink: every regular file is cloned (FICLONE) into the shadow tree during the freeze. A
 * clone shares the original's blocks until either side writes, so it costs metadata only and
 * later writes to the original copy-on-write away from it. The clone needs the original's
 * filesystem, so storage goes on its mount (provider.h). The deadline is checked between files:
 * one clone is a single call. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "vss/provider/provider_internal.h"

/* Raw descriptors: FICLONE is an ioctl om_vfs has no counterpart of (tree.c). */
static int clone_file(void *arg, const char *src, const char *dst, const char *rel,
                      const struct stat *st, uint64_t deadline_ns)
{
    (void)arg, (void)rel, (void)deadline_ns;
    int in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) return vss_sys_err("opening", src);
    int rc = 0, out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) rc = vss_sys_err("creating", dst);
    if (!rc && ioctl(out, FICLONE, in) != 0) rc = vss_op_err("cloning (FICLONE)", src, dst);
    if (!rc) rc = vss_keep_times(out, st, dst);
    if (out >= 0 && close(out) != 0 && !rc) rc = vss_sys_err("closing", dst);
    close(in);
    return rc;
}

/* Clones the first block of src (the whole file when smaller), so probing a large .edb costs
 * no more than a small file. */
static int probe_clone(const char *src, const char *dst)
{
    struct stat st;
    int e = 0, in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) return errno;
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0 || fstat(in, &st) != 0) e = errno;
    if (!e) {
        uint64_t len = st.st_size >= st.st_blksize ? (uint64_t)st.st_blksize : 0; /* 0: to EOF */
        struct file_clone_range r = {.src_fd = in, .src_offset = 0, .src_length = len};
        if (ioctl(out, FICLONERANGE, &r) != 0) e = errno;
    }
    if (out >= 0) close(out);
    close(in);
    return e;
}

static int reflink_supports(const char *path, const char *shadow_root, char *why, size_t n)
{
    return vss_probe_supports(path, shadow_root, probe_clone, "no reflink", "FICLONE", why, n);
}

static int reflink_prepare(const vss_shadow_path *p, const char *shadow_root, vss_shadow *s)
{
    vss_tree_opts o = {.same_mount = 1};
    return vss_tree_prepare(p, shadow_root, s, "reflink", &o);
}

static int reflink_commit(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns)
{
    return vss_tree_commit(p, s, deadline_ns, clone_file, NULL);
}

const vss_provider vss_reflink_provider = {
    .name = "reflink",
    .supports = reflink_supports,
    .prepare = reflink_prepare,
    .commit = reflink_commit,
    .expose = vss_tree_expose,
    .remove = vss_tree_remove,
};
