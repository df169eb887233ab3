/* om_vfs on the real filesystem: open/pread/pwrite/fdatasync, and directory handles on
 * openat/renameat2/unlinkat with O_NOFOLLOW. Errors carry the path and strerror. */
#include "base/vfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/error.h"

typedef struct pfile {
    om_file base;
    int fd;
    int direct; /* O_DIRECT is on (atomic: the file's writers share it) */
} pfile;

typedef struct pdir {
    om_dir base;
    int fd;
} pdir;

static int ioerr(const char *what, const char *path)
{
    int e = errno;
    return om_errf(om_err_from_errno(e), "%s %s: %s", what, path, strerror(e));
}

/* An open descriptor of a regular file made blocking again (files are opened O_NONBLOCK so that a
 * FIFO planted at a name never holds the opener: open(2) of a FIFO for reading waits for a
 * writer): 0, or -1 with fd closed when it is no regular file. */
static int regular_only(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return 0;
}

static int p_open(om_vfs *v, const char *path, int flags, om_file **out)
{
    /* Never through a link at the name: a root daemon would write wherever it points. The
     * folders on the way are the administrator's. */
    int of = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    of |= (flags & OM_O_RDONLY) ? O_RDONLY : O_RDWR;
    if (flags & OM_O_CREATE) of |= O_CREAT;
    if (flags & OM_O_EXCL) of |= O_EXCL;
    int fd = open(path, of, (flags & OM_O_PRIVATE) ? 0600 : 0640);
    if (fd < 0 && errno == ELOOP)
        return om_errf(OM_E_FileAccessDenied,
                       "opening %s: it is a symbolic link, which is never followed. HINT: put "
                       "the file itself there",
                       path);
    if (fd < 0) return ioerr("opening", path);
    if (regular_only(fd))
        return om_errf(OM_E_InvalidPath,
                       "opening %s: not a regular file (a FIFO, device or folder)", path);
    pfile *f = calloc(1, sizeof *f);
    if (!f || !(f->base.path = strdup(path))) {
        free(f);
        close(fd);
        return om_errf(OM_E_OutOfMemory, "opening %s: out of memory", path);
    }
    f->base.vfs = v;
    f->fd = fd;
    *out = &f->base;
    return 0;
}

static int p_close(om_file *bf)
{
    pfile *f = (pfile *)bf;
    int rc = close(f->fd) == 0 ? 0 : ioerr("closing", bf->path);
    free(bf->path);
    free(f);
    return rc;
}

/* O_DIRECT on or off for the file (its writers share the flag). */
static int set_direct(pfile *f, int on)
{
    int fl = fcntl(f->fd, F_GETFL);
    if (fl < 0 || fcntl(f->fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT) != 0) return -1;
    __atomic_store_n(&f->direct, on, __ATOMIC_RELAXED);
    return 0;
}

static int is_direct(pfile *f)
{
    return __atomic_load_n(&f->direct, __ATOMIC_RELAXED);
}

static uint64_t align_down(uint64_t x)
{
    return x / OM_DIRECT_ALIGN * OM_DIRECT_ALIGN;
}

static int aligned(const void *buf, size_t n, uint64_t off)
{
    return (uintptr_t)buf % OM_DIRECT_ALIGN == 0 && n % OM_DIRECT_ALIGN == 0 &&
           off % OM_DIRECT_ALIGN == 0;
}

static int p_pread(om_file *bf, void *buf, size_t n, uint64_t off, size_t *got);

/* A read the file's bypass cannot take as it is (O_DIRECT wants an aligned buffer, offset and
 * length): the aligned blocks around it into a buffer of its own, the asked part copied out. */
static int pread_bounce(om_file *bf, void *buf, size_t n, uint64_t off, size_t *got)
{
    uint64_t lo = align_down(off), hi = align_down(off + n + OM_DIRECT_ALIGN - 1);
    uint8_t *b = aligned_alloc(OM_DIRECT_ALIGN, (size_t)(hi - lo));
    if (!b) return om_errf(OM_E_OutOfMemory, "reading %s: out of memory", bf->path);
    size_t g = 0;
    int rc = p_pread(bf, b, (size_t)(hi - lo), lo, &g);
    *got = 0;
    if (!rc && g > off - lo) {
        *got = g - (size_t)(off - lo) < n ? g - (size_t)(off - lo) : n;
        memcpy(buf, b + (off - lo), *got);
    }
    free(b);
    return rc;
}

static int p_pread(om_file *bf, void *buf, size_t n, uint64_t off, size_t *got)
{
    pfile *f = (pfile *)bf;
    if (is_direct(f) && !aligned(buf, n, off)) return pread_bounce(bf, buf, n, off, got);
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(f->fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return ioerr("reading", bf->path);
        }
        if (r == 0) break;
        done += (size_t)r;
        /* around the cache a read is short only at the end of the file (and one more at an
         * unaligned offset would be refused) */
        if (is_direct(f) && done < n && done % OM_DIRECT_ALIGN) break;
    }
    *got = done;
    return 0;
}

static int p_pwrite(om_file *bf, const void *buf, size_t n, uint64_t off)
{
    pfile *f = (pfile *)bf;
    if (is_direct(f) && (uintptr_t)buf % OM_DIRECT_ALIGN && aligned(NULL, n, off) && n) {
        /* aligned blocks from an unaligned buffer: through an aligned copy */
        void *b = aligned_alloc(OM_DIRECT_ALIGN, n);
        if (!b) return om_errf(OM_E_OutOfMemory, "writing %s: out of memory", bf->path);
        memcpy(b, buf, n);
        int rc = p_pwrite(bf, b, n, off);
        free(b);
        return rc;
    }
    size_t done = 0;
    while (done < n) {
        const char *b = (const char *)buf + done;
        if (is_direct(f) && !aligned(b, n - done, off + done)) (void)set_direct(f, 0);
        ssize_t r = pwrite(f->fd, b, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            /* a device whose blocks are larger than OM_DIRECT_ALIGN: through the cache */
            if (errno == EINVAL && is_direct(f) && set_direct(f, 0) == 0) continue;
            return ioerr("writing", bf->path);
        }
        done += (size_t)r;
    }
    return 0;
}

static int p_sync(om_file *bf)
{
    pfile *f = (pfile *)bf;
    if (fdatasync(f->fd) != 0) return ioerr("syncing", bf->path);
    return 0;
}

static int p_size(om_file *bf, uint64_t *size)
{
    pfile *f = (pfile *)bf;
    struct stat st;
    if (fstat(f->fd, &st) != 0) return ioerr("stat of", bf->path);
    *size = (uint64_t)st.st_size;
    return 0;
}

static int p_stamp(om_file *bf, om_stamp *out)
{
    struct stat st;
    if (fstat(((pfile *)bf)->fd, &st) != 0) return ioerr("stat of", bf->path);
    out->ino = (uint64_t)st.st_ino;
    out->size = (uint64_t)st.st_size;
    out->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    out->ctime_ns = (uint64_t)st.st_ctim.tv_sec * 1000000000u + (uint64_t)st.st_ctim.tv_nsec;
    return 0;
}

static int p_resize(om_file *bf, uint64_t size)
{
    pfile *f = (pfile *)bf;
    uint64_t cur;
    int rc = p_size(bf, &cur);
    if (rc) return rc;
    if (size > cur) {
        /* Reserve the blocks now so that running out of space shows up here, where the
         * caller can refuse cleanly, and not in a later write. */
        int e = posix_fallocate(f->fd, (off_t)cur, (off_t)(size - cur));
        if (e == 0) return 0;
        if (e != EOPNOTSUPP && e != EINVAL) {
            errno = e;
            return ioerr("extending", bf->path);
        }
    }
    if (ftruncate(f->fd, (off_t)size) != 0) return ioerr("resizing", bf->path);
    return 0;
}

static int p_rename(om_vfs *v, const char *from, const char *to)
{
    (void)v;
    if (rename(from, to) != 0) {
        int e = errno;
        return om_errf(om_err_from_errno(e), "renaming %s to %s: %s", from, to, strerror(e));
    }
    return 0;
}

static int p_unlink(om_vfs *v, const char *path)
{
    (void)v;
    if (unlink(path) != 0) return ioerr("removing", path);
    return 0;
}

static int p_sync_dir(om_vfs *v, const char *dir)
{
    (void)v;
    /* A rename or create is only durable once the directory that holds the name is synced;
     * without this a crash can bring back the old name after the new file was acknowledged. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ioerr("opening directory", dir);
    int rc = fsync(fd) == 0 ? 0 : ioerr("syncing directory", dir);
    close(fd);
    return rc;
}

static int p_exists(om_vfs *v, const char *path)
{
    (void)v;
    struct stat st;
    if (stat(path, &st) != 0) return errno == ENOENT ? 0 : ioerr("stat of", path);
    return S_ISDIR(st.st_mode) ? 2 : 1;
}

static int p_mkdir(om_vfs *v, const char *path)
{
    (void)v;
    if (mkdir(path, 0750) != 0 && errno != EEXIST) return ioerr("creating directory", path);
    return 0;
}

/* Every name of an open directory but "." and "..", to cb until it says stop; closes d. */
static int list_names(DIR *d, om_list_cb cb, void *arg)
{
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        rc = cb(arg, de->d_name);
    }
    closedir(d);
    return rc;
}

static int p_list(om_vfs *v, const char *dir, om_list_cb cb, void *arg)
{
    (void)v;
    DIR *d = opendir(dir);
    if (!d) return ioerr("listing", dir);
    return list_names(d, cb, arg);
}

static int p_free_space(om_vfs *v, const char *path, uint64_t *bytes)
{
    (void)v;
    struct statvfs s;
    if (statvfs(path, &s) != 0) return ioerr("statvfs of", path);
    *bytes = (uint64_t)s.f_bavail * s.f_frsize;
    return 0;
}

static int p_lock(om_file *bf)
{
    pfile *f = (pfile *)bf;
    if (flock(f->fd, LOCK_EX | LOCK_NB) == 0) return 0;
    if (errno == EWOULDBLOCK)
        return om_errf(
            OM_E_DatabaseInUse,
            "%s is open in another process. HINT: dismount it there (ombra db dismount) first",
            bf->path);
    return ioerr("locking", bf->path);
}

/* ---- directory handles ---- */

/* One path component a handle's method may be given. */
static int name_check(om_dir *d, const char *name, const char *what)
{
    if (!name || !*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return om_errf(OM_E_InvalidPath, "%s %s/%s: not a single name", what, d->path,
                       name ? name : "");
    if (strlen(name) > 255)
        return om_errf(OM_E_InvalidPath, "%s %s/%s: name too long", what, d->path, name);
    return 0;
}

/* An error of an *at call on name in d: a link where a real file or folder was wanted is said
 * so, not as "too many levels of symbolic links". */
static int at_err(om_dir *d, const char *name, const char *what)
{
    int e = errno;
    struct stat st;
    if ((e == ELOOP || e == ENOTDIR || e == EMLINK) &&
        fstatat(((pdir *)d)->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        return om_errf(OM_E_InvalidPath,
                       "%s %s/%s: it is a symbolic link, which is never followed here. HINT: "
                       "remove the link (it is not what was asked for)",
                       what, d->path, name);
    return om_errf(om_err_from_errno(e), "%s %s/%s: %s", what, d->path, name, strerror(e));
}

static int dir_new(om_vfs *v, int fd, const char *path, const char *name, om_dir **out)
{
    pdir *d = calloc(1, sizeof *d);
    size_t pl = strlen(path), nl = name ? strlen(name) : 0;
    char *p = d ? malloc(pl + nl + 2) : NULL;
    if (!p) {
        free(d);
        close(fd);
        return om_errf(OM_E_OutOfMemory, "opening %s: out of memory", path);
    }
    memcpy(p, path, pl + 1);
    if (name) {
        if (pl && p[pl - 1] != '/') p[pl++] = '/';
        memcpy(p + pl, name, nl + 1);
    }
    d->base.vfs = v;
    d->base.path = p;
    d->fd = fd;
    *out = &d->base;
    return 0;
}

/* name in the directory fd (path for messages), made first with create; never through a link. */
static int open_sub(om_vfs *v, int fd, const char *path, const char *name, int flags, om_dir **out)
{
    pdir tmp = {.base = {.vfs = v, .path = (char *)path}, .fd = fd};
    if ((flags & OM_D_CREATE) && mkdirat(fd, name, 0750) != 0 && errno != EEXIST)
        return at_err(&tmp.base, name, "creating directory");
    int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) return at_err(&tmp.base, name, "opening directory");
    struct stat st;
    if ((flags & OM_D_OWN) &&
        (fstat(sub, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)))) {
        close(sub);
        return om_errf(OM_E_FileAccessDenied,
                       "%s/%s is not this process's own folder (another owner, or writable by "
                       "others), so others could change what is in it. HINT: move it away",
                       path, name);
    }
    return dir_new(v, sub, path, name, out);
}

/* An absolute (configured) path: its folders may be reached through links, its last component
 * only with OM_D_FOLLOW; missing ones are made with OM_D_CREATE, each opened without following
 * a link once made. */
static int open_abs(om_vfs *v, const char *path, int flags, om_dir **out)
{
    char p[4096];
    size_t l = strlen(path);
    if (l >= sizeof p) return om_errf(OM_E_InvalidPath, "path too long: %s", path);
    memcpy(p, path, l + 1);
    while (l > 1 && p[l - 1] == '/')
        p[--l] = 0;
    char *s = strrchr(p, '/');
    const char *name = s ? s + 1 : p;
    int fd;
    if (!strcmp(p, "/") || !strcmp(name, ".") || !strcmp(name, "..") || (flags & OM_D_FOLLOW)) {
        fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) return dir_new(v, fd, p, NULL, out);
        if (errno != ENOENT || !(flags & OM_D_CREATE) || !strcmp(p, "/") || !strcmp(name, ".") ||
            !strcmp(name, ".."))
            return ioerr("opening directory", p);
    }
    om_dir *parent = NULL;
    int rc;
    if (!s || s == p) {
        fd = open(s ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        rc = fd < 0 ? ioerr("opening directory", s ? "/" : ".")
                    : dir_new(v, fd, s ? "/" : ".", NULL, &parent);
    } else {
        *s = 0;
        rc = open_abs(v, p, (flags & OM_D_CREATE) | OM_D_FOLLOW, &parent);
        *s = '/';
    }
    if (!rc) rc = open_sub(v, ((pdir *)parent)->fd, parent->path, name, flags, out);
    om_dir_close(parent);
    return rc;
}

static int p_dir_open(om_vfs *v, om_dir *at, const char *path, int flags, om_dir **out)
{
    *out = NULL;
    if (!at) return open_abs(v, path, flags, out);
    int rc = name_check(at, path, "opening directory");
    return rc ? rc : open_sub(v, ((pdir *)at)->fd, at->path, path, flags, out);
}

static int p_dir_close(om_dir *bd)
{
    if (!bd) return 0;
    pdir *d = (pdir *)bd;
    close(d->fd);
    free(bd->path);
    free(d);
    return 0;
}

static int p_dir_sync(om_dir *bd)
{
    /* A create, rename or unlink is only durable once the directory holding the name is
     * synced. */
    if (fsync(((pdir *)bd)->fd) != 0) return ioerr("syncing directory", bd->path);
    return 0;
}

static int p_open_at(om_dir *bd, const char *name, int flags, om_file **out)
{
    int rc = name_check(bd, name, "opening");
    if (rc) return rc;
    int of = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    of |= (flags & OM_O_RDONLY) ? O_RDONLY : O_RDWR;
    if (flags & OM_O_CREATE) of |= O_CREAT;
    if (flags & OM_O_EXCL) of |= O_EXCL;
    int fd = openat(((pdir *)bd)->fd, name, of, (flags & OM_O_PRIVATE) ? 0600 : 0640);
    if (fd < 0) return at_err(bd, name, (flags & OM_O_CREATE) ? "creating" : "opening");
    if (regular_only(fd))
        return om_errf(OM_E_InvalidPath, "opening %s/%s: not a regular file", bd->path, name);
    size_t pl = strlen(bd->path), nl = strlen(name);
    pfile *f = calloc(1, sizeof *f);
    char *p = f ? malloc(pl + nl + 2) : NULL;
    if (!p) {
        free(f);
        close(fd);
        return om_errf(OM_E_OutOfMemory, "opening %s/%s: out of memory", bd->path, name);
    }
    snprintf(p, pl + nl + 2, "%s%s%s", bd->path, pl && bd->path[pl - 1] == '/' ? "" : "/", name);
    f->base.vfs = bd->vfs;
    f->base.path = p;
    f->fd = fd;
    *out = &f->base;
    return 0;
}

static int p_rename_at(om_dir *from, const char *fname, om_dir *to, const char *tname, int flags)
{
    int rc = name_check(from, fname, "renaming");
    if (!rc) rc = name_check(to, tname, "renaming to");
    if (rc) return rc;
    int ffd = ((pdir *)from)->fd, tfd = ((pdir *)to)->fd, r;
    if (flags & OM_RENAME_REPLACE) {
        r = renameat(ffd, fname, tfd, tname);
    } else {
        r = renameat2(ffd, fname, tfd, tname, RENAME_NOREPLACE);
        /* A filesystem without RENAME_NOREPLACE: a hard link fails just as atomically when the
         * name exists, then the old name goes. */
        if (r != 0 && (errno == EINVAL || errno == ENOSYS)) {
            r = linkat(ffd, fname, tfd, tname, 0);
            if (r == 0 && unlinkat(ffd, fname, 0) != 0) r = -1;
        }
    }
    if (r != 0) {
        int e = errno;
        return om_errf(om_err_from_errno(e), "renaming %s/%s to %s/%s: %s", from->path, fname,
                       to->path, tname, strerror(e));
    }
    return 0;
}

static int p_unlink_at(om_dir *bd, const char *name)
{
    int rc = name_check(bd, name, "removing");
    if (rc) return rc;
    if (unlinkat(((pdir *)bd)->fd, name, 0) != 0) return at_err(bd, name, "removing");
    return 0;
}

static int p_rmdir_at(om_dir *bd, const char *name)
{
    int rc = name_check(bd, name, "removing directory");
    if (rc) return rc;
    if (unlinkat(((pdir *)bd)->fd, name, AT_REMOVEDIR) != 0)
        return at_err(bd, name, "removing directory");
    return 0;
}

static int p_kind_at(om_dir *bd, const char *name)
{
    int rc = name_check(bd, name, "stat of");
    if (rc) return rc;
    struct stat st;
    if (fstatat(((pdir *)bd)->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? OM_KIND_NONE : at_err(bd, name, "stat of");
    return S_ISREG(st.st_mode) ? OM_KIND_FILE : S_ISDIR(st.st_mode) ? OM_KIND_DIR : OM_KIND_OTHER;
}

static int p_list_at(om_dir *bd, om_list_cb cb, void *arg)
{
    /* A new open file description: fdopendir of a dup would share (and move) the handle's
     * position. */
    int fd = openat(((pdir *)bd)->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return ioerr("listing", bd->path);
    }
    return list_names(d, cb, arg);
}

static void p_writeback(om_file *bf, uint64_t off, uint64_t n)
{
    (void)sync_file_range(((pfile *)bf)->fd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE);
}

static void p_willneed(om_file *bf, uint64_t off, uint64_t n)
{
    (void)posix_fadvise(((pfile *)bf)->fd, (off_t)off, (off_t)n, POSIX_FADV_WILLNEED);
}

static void p_dontneed(om_file *bf, uint64_t off, uint64_t n)
{
    (void)posix_fadvise(((pfile *)bf)->fd, (off_t)off, (off_t)n, POSIX_FADV_DONTNEED);
}

static int p_direct(om_file *bf, int on)
{
    return set_direct((pfile *)bf, on);
}

static om_vfs posix_vfs = {
    .open = p_open,
    .close = p_close,
    .pread = p_pread,
    .pwrite = p_pwrite,
    .sync = p_sync,
    .size = p_size,
    .resize = p_resize,
    .rename = p_rename,
    .unlink = p_unlink,
    .sync_dir = p_sync_dir,
    .exists = p_exists,
    .mkdir = p_mkdir,
    .list = p_list,
    .free_space = p_free_space,
    .lock = p_lock,
    .dir_open = p_dir_open,
    .dir_close = p_dir_close,
    .dir_sync = p_dir_sync,
    .open_at = p_open_at,
    .rename_at = p_rename_at,
    .unlink_at = p_unlink_at,
    .rmdir_at = p_rmdir_at,
    .kind_at = p_kind_at,
    .list_at = p_list_at,
    .writeback = p_writeback,
    .willneed = p_willneed,
    .dontneed = p_dontneed,
    .direct = p_direct,
    .stamp = p_stamp,
};

om_vfs *om_vfs_posix(void)
{
    return &posix_vfs;
}
