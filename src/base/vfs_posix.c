/* om_vfs on the real filesystem: open/pread/pwrite/fdatasync. Errors carry the path and
 * strerror. */
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
} pfile;

static int ioerr(const char *what, const char *path)
{
    int e = errno;
    return om_errf(om_err_from_errno(e), "%s %s: %s", what, path, strerror(e));
}

static int p_open(om_vfs *v, const char *path, int flags, om_file **out)
{
    int of = O_CLOEXEC;
    of |= (flags & OM_O_RDONLY) ? O_RDONLY : O_RDWR;
    if (flags & OM_O_CREATE) of |= O_CREAT;
    if (flags & OM_O_EXCL) of |= O_EXCL;
    int fd = open(path, of, 0640);
    if (fd < 0) return ioerr("opening", path);
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

static int p_pread(om_file *bf, void *buf, size_t n, uint64_t off, size_t *got)
{
    pfile *f = (pfile *)bf;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(f->fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return ioerr("reading", bf->path);
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

static int p_pwrite(om_file *bf, const void *buf, size_t n, uint64_t off)
{
    pfile *f = (pfile *)bf;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(f->fd, (const char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
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

static int p_list(om_vfs *v, const char *dir, om_list_cb cb, void *arg)
{
    (void)v;
    DIR *d = opendir(dir);
    if (!d) return ioerr("listing", dir);
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        rc = cb(arg, de->d_name);
    }
    closedir(d);
    return rc;
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
};

om_vfs *om_vfs_posix(void)
{
    return &posix_vfs;
}
