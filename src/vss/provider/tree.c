/* Trees for the providers: a walk that never follows a link below its root, a file copy with
 * large I/O and deadline checks, deletion, read-only marking, and where storage can go so that
 * link() and FICLONE work (the original's mount).
 * System calls here, not om_vfs (base/vfs.h): copy_file_range, link, FICLONE and mount ids have
 * no counterpart there, and a shadow tree needs no durability (provider.h, "Durability"). */
#include "vss/provider/provider_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "base/error.h"
#include "base/paths.h"
#include "base/time.h"

#define COPY_CHUNK (8u << 20) /* the deadline is checked between chunks */
#define RW_BUF     (1u << 20) /* read/write size where copy_file_range cannot be used */

int vss_sys_err(const char *what, const char *path)
{
    int e = errno;
    return om_errf(om_err_from_errno(e), "%s %s: %s", what, path, strerror(e));
}

int vss_fmt_path(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    if (r >= 0 && (size_t)r < n) return 0;
    return om_errf(OM_E_InvalidPath, "path too long (at most %zu bytes): %.300s...", n - 1, out);
}

int vss_join(char *out, size_t n, const char *a, const char *b)
{
    size_t la = strlen(a);
    return vss_fmt_path(out, n, "%s%s%s", a, la && a[la - 1] == '/' ? "" : "/", b);
}

/* --- Walking ------------------------------------------------------------------------------ */

typedef struct walker {
    char path[VSS_PATH_MAX];
    size_t rootlen; /* rel starts here */
    vss_walk_fn fn;
    void *arg;
} walker;

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int add_name(char ***v, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        char **nv = realloc(*v, c * sizeof *nv);
        if (!nv) return OM_E_OutOfMemory;
        *v = nv;
        *cap = c;
    }
    if (!((*v)[*n] = strdup(name))) return OM_E_OutOfMemory;
    (*n)++;
    return 0;
}

/* The names in dir, sorted. Read whole before descending, so no directory stays open while the
 * walk recurses or deletes. */
static int read_names(const char *dir, int follow, char ***out, size_t *count)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        int rc = vss_sys_err("opening directory", dir);
        if (fd >= 0) close(fd);
        return rc;
    }
    char **v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) rc = vss_sys_err("reading directory", dir);
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if ((rc = add_name(&v, &n, &cap, de->d_name)) != 0) {
            rc = om_errf(rc, "reading directory %s: out of memory", dir);
            break;
        }
    }
    closedir(d);
    if (rc) {
        free_names(v, n);
        return rc;
    }
    if (n) qsort(v, n, sizeof *v, cmp_names);
    *out = v;
    *count = n;
    return 0;
}

static int walk_visit(walker *w, const struct stat *st, int follow);

static int walk_entry(walker *w, size_t len, const char *name)
{
    const char *sep = w->path[len - 1] == '/' ? "" : "/";
    int r = snprintf(w->path + len, sizeof w->path - len, "%s%s", sep, name);
    if (r < 0 || (size_t)r >= sizeof w->path - len) {
        w->path[len] = 0;
        return om_errf(OM_E_InvalidPath, "path too long (at most %d bytes): %.300s%s%.300s",
                       VSS_PATH_MAX - 1, w->path, sep, name);
    }
    struct stat st;
    if (lstat(w->path, &st) != 0) return errno == ENOENT ? 0 : vss_sys_err("reading", w->path);
    return walk_visit(w, &st, 0);
}

static int walk_dir(walker *w, int follow)
{
    char **names = NULL;
    size_t n = 0, len = strlen(w->path);
    int rc = read_names(w->path, follow, &names, &n);
    if (rc) return (rc == OM_E_FileNotFound && len >= w->rootlen) ? 0 : rc; /* vanished */
    for (size_t i = 0; i < n && !rc; i++) {
        rc = walk_entry(w, len, names[i]);
        w->path[len] = 0;
    }
    free_names(names, n);
    return rc;
}

static int walk_visit(walker *w, const struct stat *st, int follow)
{
    size_t len = strlen(w->path);
    vss_entry e = {w->path, len >= w->rootlen ? w->path + w->rootlen : "", st, 0};
    int rc = w->fn(w->arg, &e);
    if (rc < 0) return rc;
    if (!S_ISDIR(st->st_mode) || rc == VSS_WALK_SKIP) return 0;
    if ((rc = walk_dir(w, follow)) != 0) return rc;
    e.post = 1;
    rc = w->fn(w->arg, &e);
    return rc < 0 ? rc : 0;
}

int vss_walk(const char *root, int follow_root, vss_walk_fn fn, void *arg)
{
    walker w = {.fn = fn, .arg = arg};
    int rc = vss_fmt_path(w.path, sizeof w.path, "%s", root);
    if (rc) return rc;
    size_t len = strlen(root);
    w.rootlen = len + (len && root[len - 1] == '/' ? 0 : 1);
    struct stat st;
    if ((follow_root ? stat(root, &st) : lstat(root, &st)) != 0)
        return vss_sys_err("reading", root);
    return walk_visit(&w, &st, follow_root);
}

typedef struct scanner {
    vss_scan *sc;
    dev_t dev;
    struct stat skip;
    int has_skip;
    vss_copies_fn copies;
    void *arg;
} scanner;

static int scan_cb(void *arg, const vss_entry *e)
{
    scanner *c = arg;
    const struct stat *st = e->st;
    if (e->post) return 0;
    if (!e->rel[0]) c->dev = st->st_dev;
    c->sc->entries++;
    if (S_ISDIR(st->st_mode)) {
        if (c->has_skip && e->rel[0] && st->st_dev == c->skip.st_dev &&
            st->st_ino == c->skip.st_ino)
            return VSS_WALK_SKIP;
        if (st->st_dev != c->dev && !c->sc->other_fs[0])
            snprintf(c->sc->other_fs, sizeof c->sc->other_fs, "%s", e->path);
        return 0;
    }
    if (!S_ISREG(st->st_mode)) return 0;
    if (!c->sc->first_file[0]) snprintf(c->sc->first_file, sizeof c->sc->first_file, "%s", e->path);
    if (c->copies && c->copies(c->arg, e->rel))
        c->sc->copy_bytes += ((uint64_t)st->st_size + 4095) & ~(uint64_t)4095;
    return 0;
}

int vss_scan_tree(const char *path, const char *skip, vss_copies_fn copies, void *arg, vss_scan *sc)
{
    memset(sc, 0, sizeof *sc);
    scanner c = {.sc = sc, .copies = copies, .arg = arg};
    c.has_skip = skip && stat(skip, &c.skip) == 0;
    return vss_walk(path, 1, scan_cb, &c);
}

/* --- Files and trees ---------------------------------------------------------------------- */

int vss_check_deadline(uint64_t deadline_ns, const char *path)
{
    if (om_mono_ns() <= deadline_ns) return 0;
    return om_errf(OM_E_HoldWritesTimeout,
                   "the commit time limit passed while copying %s; HINT: use a provider that "
                   "copies less (btrfs, reflink, held)",
                   path);
}

int vss_keep_times(int fd, const struct stat *st, const char *path)
{
    struct timespec ts[2] = {st->st_atim, st->st_mtim};
    return futimens(fd, ts) == 0 ? 0 : vss_sys_err("setting the times of", path);
}

typedef struct copier {
    int in, out;
    const char *src, *dst;
    int use_cfr; /* copy_file_range works between these two files */
    char *buf;   /* for read/write, allocated when needed */
} copier;

static int copy_rw(copier *c, uint64_t off, size_t n, size_t *got)
{
    if (!c->buf && !(c->buf = malloc(RW_BUF)))
        return om_errf(OM_E_OutOfMemory, "copying %s: out of memory", c->src);
    ssize_t r;
    do
        r = pread(c->in, c->buf, n < RW_BUF ? n : RW_BUF, (off_t)off);
    while (r < 0 && errno == EINTR);
    if (r < 0) return vss_sys_err("reading", c->src);
    for (ssize_t done = 0; done < r;) {
        ssize_t w = pwrite(c->out, c->buf + done, (size_t)(r - done), (off_t)off + done);
        if (w < 0 && errno != EINTR) return vss_sys_err("writing", c->dst);
        if (w > 0) done += w;
    }
    *got = (size_t)r;
    return 0;
}

/* Copies up to n bytes at off; *got is 0 at the end of the file. */
static int copy_some(copier *c, uint64_t off, size_t n, size_t *got)
{
    while (c->use_cfr) {
        off_t io = (off_t)off, oo = (off_t)off;
        ssize_t r = copy_file_range(c->in, &io, c->out, &oo, n, 0);
        if (r >= 0) {
            *got = (size_t)r;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP && errno != EINVAL)
            return vss_sys_err("copying to", c->dst);
        c->use_cfr = 0; /* e.g. across filesystems on older kernels: plain reads and writes */
    }
    return copy_rw(c, off, n, got);
}

static int copy_data(copier *c, uint64_t deadline_ns)
{
    uint64_t off = 0;
    for (;;) {
        int rc = vss_check_deadline(deadline_ns, c->src);
        size_t chunk = 0, got = 1;
        while (!rc && got && chunk < COPY_CHUNK) {
            rc = copy_some(c, off, COPY_CHUNK - chunk, &got);
            off += got;
            chunk += got;
        }
        if (rc || !got) return rc;
    }
}

int vss_copy_file(const char *src, const char *dst, const struct stat *st, uint64_t deadline_ns)
{
    copier c = {.in = -1, .out = -1, .src = src, .dst = dst, .use_cfr = 1};
    c.in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (c.in < 0) return vss_sys_err("opening", src);
    int rc = 0;
    c.out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (c.out < 0) rc = vss_sys_err("creating", dst);
    if (!rc) rc = copy_data(&c, deadline_ns);
    if (!rc) rc = vss_keep_times(c.out, st, dst);
    if (c.out >= 0 && close(c.out) != 0 && !rc) rc = vss_sys_err("closing", dst);
    close(c.in);
    free(c.buf);
    return rc;
}

static int all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Reads src in 64 KiB steps and writes only its blocks that are not all zero; the rest stay
 * holes, which read as zeros: the same bytes. A log the writer prepared zero-filled (the current
 * generation just after a roll) costs one 4 KiB write, not a 1 MiB copy, during the freeze. */
static int copy_sparse(copier *c, uint64_t size, uint64_t *written, uint64_t deadline_ns)
{
    enum { STEP = 64u << 10, BLK = 4096 };
    if (!(c->buf = malloc(STEP)))
        return om_errf(OM_E_OutOfMemory, "copying %s: out of memory", c->src);
    for (uint64_t off = 0; off < size;) {
        int rc = (off % COPY_CHUNK) ? 0 : vss_check_deadline(deadline_ns, c->src);
        if (rc) return rc;
        ssize_t r;
        do
            r = pread(c->in, c->buf, STEP, (off_t)off);
        while (r < 0 && errno == EINTR);
        if (r < 0) return vss_sys_err("reading", c->src);
        if (r == 0) break; /* shorter than its stat said: truncated meanwhile */
        for (ssize_t b = 0; b < r; b += BLK) {
            size_t n = (size_t)(r - b) < BLK ? (size_t)(r - b) : BLK;
            if (all_zero((const uint8_t *)c->buf + b, n)) continue;
            for (size_t done = 0; done < n;) {
                ssize_t w =
                    pwrite(c->out, c->buf + b + done, n - done, (off_t)(off + (uint64_t)b + done));
                if (w < 0 && errno != EINTR) return vss_sys_err("writing", c->dst);
                if (w > 0) done += (size_t)w;
            }
            *written += n;
        }
        off += (uint64_t)r;
        if (off > size) size = off; /* grew meanwhile: what was read is the copy */
    }
    return ftruncate(c->out, (off_t)size) == 0 ? 0 : vss_sys_err("sizing", c->dst);
}

int vss_copy_file_sparse(const char *src, const char *dst, const struct stat *st,
                         uint64_t deadline_ns, uint64_t *written)
{
    copier c = {.in = -1, .out = -1, .src = src, .dst = dst};
    c.in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (c.in < 0) return vss_sys_err("opening", src);
    int rc = 0;
    c.out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (c.out < 0) rc = vss_sys_err("creating", dst);
    if (!rc) rc = copy_sparse(&c, (uint64_t)st->st_size, written, deadline_ns);
    if (!rc) rc = vss_keep_times(c.out, st, dst);
    if (c.out >= 0 && close(c.out) != 0 && !rc) rc = vss_sys_err("closing", dst);
    close(c.in);
    free(c.buf);
    return rc;
}

static int remove_cb(void *arg, const vss_entry *e)
{
    (void)arg;
    if (!S_ISDIR(e->st->st_mode))
        return unlink(e->path) == 0 || errno == ENOENT ? 0 : vss_sys_err("deleting", e->path);
    if (!e->post) /* expose made it 0555 */
        return chmod(e->path, 0700) == 0 ? 0 : vss_sys_err("making writable", e->path);
    return rmdir(e->path) == 0 || errno == ENOENT ? 0 : vss_sys_err("deleting", e->path);
}

int vss_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : vss_sys_err("reading", path);
    return vss_walk(path, 0, remove_cb, NULL);
}

typedef struct counter {
    uint64_t bytes;
    uint32_t files;
    int chmod;
} counter;

static int count_cb(void *arg, const vss_entry *e)
{
    counter *c = arg;
    const struct stat *st = e->st;
    if (S_ISREG(st->st_mode)) {
        c->bytes += (uint64_t)st->st_size;
        c->files++;
        /* More than one link: held's link to the original inode, whose mode is not ours. */
        if (c->chmod && st->st_nlink == 1 && chmod(e->path, 0444) != 0)
            return vss_sys_err("making read-only", e->path);
    } else if (S_ISDIR(st->st_mode) && e->post && c->chmod && chmod(e->path, 0555) != 0) {
        return vss_sys_err("making read-only", e->path);
    }
    return 0;
}

int vss_make_readonly(const char *root, uint64_t *bytes, uint32_t *files)
{
    counter c = {.chmod = 1};
    int rc = vss_walk(root, 0, count_cb, &c);
    *bytes = c.bytes;
    *files = c.files;
    return rc;
}

int vss_count_tree(const char *root, uint64_t *bytes, uint32_t *files)
{
    counter c = {0};
    int rc = vss_walk(root, 0, count_cb, &c);
    *bytes = c.bytes;
    *files = c.files;
    return rc;
}

/* --- Where things are --------------------------------------------------------------------- */

/* A mount: the device and, where the kernel tells it, the mount id (a bind mount of the same
 * device is another mount, and link() across it fails with EXDEV like across devices). */
typedef struct mountid {
    unsigned maj, min;
    uint64_t mnt;
    int has_mnt;
} mountid;

static int get_mountid(const char *path, mountid *m)
{
    struct statx sx;
    *m = (mountid){0};
    if (statx(AT_FDCWD, path, 0, STATX_INO | STATX_MNT_ID, &sx) != 0)
        return vss_sys_err("reading", path);
    m->maj = sx.stx_dev_major;
    m->min = sx.stx_dev_minor;
    m->has_mnt = (sx.stx_mask & STATX_MNT_ID) != 0;
    m->mnt = sx.stx_mnt_id;
    return 0;
}

static int same_mount(const mountid *a, const mountid *b)
{
    return a->maj == b->maj && a->min == b->min && (!a->has_mnt || !b->has_mnt || a->mnt == b->mnt);
}

/* The highest directory above original (resolved) still on its mount. */
static int mount_top(const char *original, char *out, size_t n)
{
    char *real = realpath(original, NULL);
    if (!real) return vss_sys_err("resolving", original);
    struct stat st;
    mountid me = {0}, up = {0};
    int rc = stat(real, &st) == 0 ? 0 : vss_sys_err("reading", real);
    if (!rc && !S_ISDIR(st.st_mode)) {
        char *slash = strrchr(real, '/');
        slash[slash == real ? 1 : 0] = 0;
    }
    if (!rc) rc = get_mountid(real, &me);
    while (!rc && strcmp(real, "/") != 0) {
        char *slash = strrchr(real, '/');
        char *cut = slash == real ? slash + 1 : slash, saved = *cut;
        *cut = 0; /* real is now the parent */
        rc = get_mountid(real, &up);
        if (rc || !same_mount(&me, &up)) {
            *cut = saved;
            break;
        }
    }
    if (!rc) rc = vss_fmt_path(out, n, "%s", real);
    free(real);
    return rc;
}

int vss_storage_base(const char *original, const char *shadow_root, char *out, size_t n)
{
    mountid a, b;
    int rc = om_mkdirs(shadow_root);
    if (!rc) rc = get_mountid(original, &a);
    if (!rc) rc = get_mountid(shadow_root, &b);
    if (rc) return rc;
    if (same_mount(&a, &b)) return vss_fmt_path(out, n, "%s", shadow_root);
    char top[VSS_PATH_MAX];
    rc = mount_top(original, top, sizeof top);
    if (!rc) rc = vss_join(out, n, top, VSS_SHADOWS_DIR);
    if (!rc && mkdir(out, 0750) != 0 && errno != EEXIST) rc = vss_sys_err("creating", out);
    return rc;
}

static const struct {
    unsigned long magic;
    const char *name;
} fs_names[] = {
    {EXT4_SUPER_MAGIC, "ext4"},         {XFS_SUPER_MAGIC, "xfs"},
    {BTRFS_SUPER_MAGIC, "btrfs"},       {TMPFS_MAGIC, "tmpfs"},
    {OVERLAYFS_SUPER_MAGIC, "overlay"}, {NFS_SUPER_MAGIC, "nfs"},
    {F2FS_SUPER_MAGIC, "f2fs"},         {0x2fc12fc1UL, "zfs"},
    {0xca451a4eUL, "bcachefs"},         {0x65735546UL, "fuse"},
};

const char *vss_fs_name(const char *path, char *buf, size_t n)
{
    struct statfs f;
    if (statfs(path, &f) != 0) {
        snprintf(buf, n, "unknown filesystem");
        return buf;
    }
    for (size_t i = 0; i < sizeof fs_names / sizeof fs_names[0]; i++)
        if ((unsigned long)f.f_type == fs_names[i].magic) {
            snprintf(buf, n, "%s", fs_names[i].name);
            return buf;
        }
    snprintf(buf, n, "filesystem 0x%lx", (unsigned long)f.f_type);
    return buf;
}
