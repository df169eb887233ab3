/* The file I/O interface. All of the engine's file access goes through an om_vfs, so a test
 * can put a different one underneath: tests/support/crashvfs.c keeps files in memory, tracks
 * which writes were synced, and at the Nth sync "loses power" (unsynced writes dropped, kept
 * or garbled), the way SQLite's crash VFS tests its pager.
 *
 * Durability contract, which the engine relies on and the crash VFS enforces:
 * - a write is durable once om_file_sync() on that file has returned 0;
 * - creating, renaming and unlinking a name is durable once om_vfs_sync_dir() on its
 *   directory has returned 0; until then a crash may undo any suffix of those operations;
 * - after a failed sync nothing is known about what reached the disk (fsyncgate): callers
 *   treat it as fatal.
 * Every function returns 0 or an error from errors.def, with the path in the detail. */
#ifndef OM_BASE_VFS_H
#define OM_BASE_VFS_H

#include <stddef.h>
#include <stdint.h>

typedef struct om_vfs om_vfs;
typedef struct om_file om_file;

enum {
    OM_O_RDONLY = 1 << 0, /* open for reading only */
    OM_O_CREATE = 1 << 1, /* create if missing */
    OM_O_EXCL = 1 << 2,   /* with CREATE: fail with FileAlreadyExists if it exists */
};

typedef int (*om_list_cb)(void *arg, const char *name);

struct om_vfs {
    int (*open)(om_vfs *v, const char *path, int flags, om_file **out);
    int (*close)(om_file *f);
    /* Reads up to n bytes at off; *got is what was read (short only at end of file). */
    int (*pread)(om_file *f, void *buf, size_t n, uint64_t off, size_t *got);
    int (*pwrite)(om_file *f, const void *buf, size_t n, uint64_t off);
    int (*sync)(om_file *f);
    int (*size)(om_file *f, uint64_t *size);
    /* Sets the size; growing fills with zeros (and reserves space where the system can). */
    int (*resize)(om_file *f, uint64_t size);
    int (*rename)(om_vfs *v, const char *from, const char *to);
    int (*unlink)(om_vfs *v, const char *path);
    int (*sync_dir)(om_vfs *v, const char *dir);
    /* 1 if a regular file exists at path, 2 for a directory, 0 if nothing, <0 on error. */
    int (*exists)(om_vfs *v, const char *path);
    int (*mkdir)(om_vfs *v, const char *path);
    /* Calls cb for every name in dir (no "." or ".."); a non-zero cb result stops and is
     * returned. */
    int (*list)(om_vfs *v, const char *dir, om_list_cb cb, void *arg);
    /* Free bytes on the filesystem holding path (for the disk-full policy). */
    int (*free_space)(om_vfs *v, const char *path, uint64_t *bytes);
    /* Takes an exclusive lock on an open file for as long as it stays open (and no longer
     * than the process lives): DatabaseInUse when another holder has it. Optional (NULL: no
     * locking, as in one process's in-memory tests). */
    int (*lock)(om_file *f);
};

/* Files carry their vfs so the wrappers below need only the file. */
struct om_file {
    om_vfs *vfs;
    char *path;
};

/* The real filesystem. */
om_vfs *om_vfs_posix(void);

static inline int om_open(om_vfs *v, const char *p, int fl, om_file **o)
{
    return v->open(v, p, fl, o);
}
static inline int om_close(om_file *f)
{
    return f ? f->vfs->close(f) : 0;
}
static inline int om_sync(om_file *f)
{
    return f->vfs->sync(f);
}
static inline int om_fsize(om_file *f, uint64_t *s)
{
    return f->vfs->size(f, s);
}
static inline int om_resize(om_file *f, uint64_t s)
{
    return f->vfs->resize(f, s);
}
static inline int om_pwrite(om_file *f, const void *b, size_t n, uint64_t off)
{
    return f->vfs->pwrite(f, b, n, off);
}
/* Reads exactly n bytes or fails with FileIOBeyondEOF. */
int om_pread_full(om_file *f, void *buf, size_t n, uint64_t off);

/* Durable replace: write data to path.tmp, sync it, rename over path, sync the directory.
 * After a crash the file holds either the old or the new content, never a mix. */
int om_write_file_durable(om_vfs *v, const char *path, const void *data, size_t n);
/* Reads a whole (small) file into a malloc'd buffer. */
int om_read_file(om_vfs *v, const char *path, uint8_t **data, size_t *n);
/* Creates a file of n zero bytes at path durably (tmp, sync, rename, sync dir). */
int om_create_zeroed(om_vfs *v, const char *path, uint64_t n);

/* dirname of path into out ("." when path has no slash). */
void om_dirname(const char *path, char *out, size_t len);
/* dir + "/" + name into out; InvalidPath when it does not fit. */
int om_path_join(char *out, size_t len, const char *dir, const char *name);

#endif
