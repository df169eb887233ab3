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
 * Every function returns 0 or an error from errors.def, with the path in the detail.
 *
 * Directory handles (om_dir) are for code that writes where others can write too (a restore
 * run as root into folders an administrator named): every name is then made relative to a
 * directory that was opened without following a symbolic link, so nobody can steer a write
 * elsewhere by planting a link, and a name is one path component (no '/', not "." or "..",
 * else InvalidPath). The rules of the *_at methods:
 * - no method follows a symbolic link at the name it is given: opening one fails with
 *   InvalidPath ("is a symbolic link"), unlink_at and rename_at act on the link itself;
 * - dir_open relative to a directory opens that name only if it is a real directory; an
 *   absolute path (one an administrator configured) may pass through links, except at its
 *   last component unless OM_D_FOLLOW says that one may be a link too;
 * - rename_at never replaces an existing name unless OM_RENAME_REPLACE says so (an existing
 *   name then fails with FileAlreadyExists and nothing changes);
 * - names are made durable by dir_sync on the handle of their directory, as by sync_dir. */
#ifndef OM_BASE_VFS_H
#define OM_BASE_VFS_H

#include <stddef.h>
#include <stdint.h>

typedef struct om_vfs om_vfs;
typedef struct om_file om_file;
typedef struct om_dir om_dir;

enum {
    OM_O_RDONLY = 1 << 0,  /* open for reading only */
    OM_O_CREATE = 1 << 1,  /* create if missing */
    OM_O_EXCL = 1 << 2,    /* with CREATE: fail with FileAlreadyExists if it exists */
    OM_O_PRIVATE = 1 << 3, /* with CREATE: readable and writable by its owner only (mode 0600,
                              a key); else mode 0640 */
};

/* dir_open flags. */
enum {
    OM_D_CREATE = 1 << 0, /* make the directory (and, for an absolute path, its missing parents;
                             mode 0750) when it does not exist */
    OM_D_FOLLOW = 1 << 1, /* an absolute path's last component may be a symbolic link */
    OM_D_OWN = 1 << 2,    /* opening a name in at: the directory must be the caller's own,
                             owned by its effective user and writable by nobody else
                             (FileAccessDenied otherwise), so no other user can put or swap
                             names in it */
};

/* rename_at flags. */
enum {
    OM_RENAME_REPLACE = 1 << 0, /* the destination name may exist and is replaced */
};

/* kind_at results. */
enum {
    OM_KIND_NONE = 0,  /* nothing has that name */
    OM_KIND_FILE = 1,  /* a regular file */
    OM_KIND_DIR = 2,   /* a directory (not a link to one) */
    OM_KIND_OTHER = 3, /* a symbolic link, a device, a fifo or a socket */
};

/* What tells, without reading it, that a file's content may have changed: its inode, its size,
 * and its modification and status-change times (ns). Any write or resize changes the times;
 * the status-change time (ctime) cannot be set back by any call (touch, utimensat and copies
 * that keep times set only the others), and a copy put in the file's place is another inode.
 * Two equal stamps of one file say no one wrote it between them, short of the system's clock
 * set back or a write within one tick of the clock of the one before (kernels without
 * fine-grained change times). */
typedef struct om_stamp {
    uint64_t ino, size, mtime_ns, ctime_ns;
} om_stamp;

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

    /* Directory handles (the rules are at the top). at NULL: path is absolute (or, on the real
     * filesystem, relative to the working directory); else path is one name in at. */
    int (*dir_open)(om_vfs *v, om_dir *at, const char *path, int flags, om_dir **out);
    /* Releases the handle; NULL is a no-op. Always 0. */
    int (*dir_close)(om_dir *d);
    /* Makes the name operations in d durable (fsync of the directory). */
    int (*dir_sync)(om_dir *d);
    /* As open, for the name in d; never follows a link (with CREATE | EXCL nothing that exists
     * at the name, a link included, is ever opened). */
    int (*open_at)(om_dir *d, const char *name, int flags, om_file **out);
    /* Renames fname in `from` to tname in `to` (the same handle or another one on the same
     * filesystem); flags: OM_RENAME_REPLACE. FileNotFound when fname is not there. */
    int (*rename_at)(om_dir *from, const char *fname, om_dir *to, const char *tname, int flags);
    /* Removes the name (a file or a link, never what a link points to). */
    int (*unlink_at)(om_dir *d, const char *name);
    /* Removes the empty directory name. */
    int (*rmdir_at)(om_dir *d, const char *name);
    /* OM_KIND_* of the name itself (a link is OM_KIND_OTHER), or <0 on error. */
    int (*kind_at)(om_dir *d, const char *name);
    /* As list, for d. */
    int (*list_at)(om_dir *d, om_list_cb cb, void *arg);
    /* Starts writing bytes off..off + n of f to the storage without waiting (sync_file_range
     * WRITE): a hint, so that a later sync finds less to do; durable only after sync. Optional
     * (NULL: nothing), never an error. */
    void (*writeback)(om_file *f, uint64_t off, uint64_t n);
    /* Asks the storage for bytes off..off + n of f without waiting (POSIX_FADV_WILLNEED), so a
     * later read finds them in the page cache: a hint. Optional (NULL: nothing), never an
     * error. */
    void (*willneed)(om_file *f, uint64_t off, uint64_t n);
    /* Drops the clean cached pages of bytes off..off + n of f (n 0: to its end;
     * POSIX_FADV_DONTNEED): for a file about to be replaced, whose pages in the cache only cost
     * the kernel while the new one is written. A hint: optional (NULL: nothing), never an
     * error. */
    void (*dontneed)(om_file *f, uint64_t off, uint64_t n);
    /* on: from now on, reads and writes of f bypass the page cache (O_DIRECT): for a large
     * file written once, or read and written over by replay, whose pages would otherwise fill
     * the cache at a CPU cost greater than the work's own. 0 when they do, else non-zero and
     * nothing changed (no error set: the file system cannot). Any read still succeeds (an
     * unaligned one through an aligned buffer of its own); a write whose offset or length is
     * not a multiple of OM_DIRECT_ALIGN turns bypassing off for the file. off: through the
     * cache again. Durability is unchanged (sync as always). Optional (NULL: never). */
    int (*direct)(om_file *f, int on);
    /* f's stamp (om_stamp): 0, or an error. Optional (NULL: the file system gives none, and
     * nothing that compares stamps may trust it). */
    int (*stamp)(om_file *f, om_stamp *out);
};

/* What writes that bypass the cache must be aligned to (a multiple of any device's logical
 * block size in use). */
#define OM_DIRECT_ALIGN 4096

/* Handles carry their vfs; path is for messages (at's path + "/" + name when opened in at). */
struct om_dir {
    om_vfs *vfs;
    char *path;
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
/* The direct method: 0 when f's reads and writes bypass the page cache from now on (on), or
 * go through it again (off). */
static inline int om_direct(om_file *f, int on)
{
    return f->vfs->direct ? f->vfs->direct(f, on) : -1;
}
/* The stamp method; an error naming f when the file system gives none. */
int om_fstamp(om_file *f, om_stamp *s);
/* Reads exactly n bytes or fails with FileIOBeyondEOF. */
int om_pread_full(om_file *f, void *buf, size_t n, uint64_t off);

static inline int om_dir_open(om_vfs *v, om_dir *at, const char *p, int fl, om_dir **o)
{
    return v->dir_open(v, at, p, fl, o);
}
static inline int om_dir_close(om_dir *d)
{
    return d ? d->vfs->dir_close(d) : 0;
}
static inline int om_dir_sync(om_dir *d)
{
    return d->vfs->dir_sync(d);
}
static inline int om_open_at(om_dir *d, const char *name, int fl, om_file **o)
{
    return d->vfs->open_at(d, name, fl, o);
}
static inline int om_rename_at(om_dir *from, const char *fn, om_dir *to, const char *tn, int fl)
{
    return from->vfs->rename_at(from, fn, to, tn, fl);
}
static inline int om_unlink_at(om_dir *d, const char *name)
{
    return d->vfs->unlink_at(d, name);
}
static inline int om_rmdir_at(om_dir *d, const char *name)
{
    return d->vfs->rmdir_at(d, name);
}
static inline int om_kind_at(om_dir *d, const char *name)
{
    return d->vfs->kind_at(d, name);
}
static inline int om_list_at(om_dir *d, om_list_cb cb, void *arg)
{
    return d->vfs->list_at(d, cb, arg);
}

/* ---- durable files: the one way a file is put in place whole ----
 *
 *   om_durable_begin   creates a temporary file in dir under a name unique to the call,
 *                      ".<name>.<16 random hex digits>.tmp", with CREATE | EXCL and without
 *                      following a link (a name planted there is never opened or written);
 *   (write d.f)        with om_pwrite, from as many threads as the caller likes;
 *   om_durable_commit  syncs the file (its content is durable), closes it, renames it to name
 *                      (replacing an existing name only with OM_RENAME_REPLACE), and syncs
 *                      the directory (the name is durable): each step is needed, or a crash
 *                      could leave the name pointing at a file whose content never reached
 *                      the disk, or bring back the old name after success was reported.
 *
 * After a crash at any point, name holds the old content (or does not exist, as before) or the
 * new content, whole; never a mix. What a crash can leave is a temporary name, which
 * om_durable_sweep removes. On any failure the temporary file is removed before the call
 * returns (commit and abort finish d whatever happens); the old content stays. */
typedef struct om_durable {
    om_dir *dir; /* the caller's: it must outlive d */
    om_file *f;  /* the temporary file, empty; NULL once finished */
    char name[256], tmp[300];
} om_durable;

int om_durable_begin(om_dir *dir, const char *name, om_durable *d);
/* As om_durable_begin, the temporary file made OM_O_PRIVATE: a key, which no other user may
 * ever open, not even while it is still being written. */
int om_durable_begin_private(om_dir *dir, const char *name, om_durable *d);
int om_durable_commit(om_durable *d, int flags);
/* As om_durable_commit with OM_RENAME_REPLACE, the file the name held before (if any: NULL
 * when there was none) kept open into *replaced for the caller to close. Renaming over a big
 * file makes the filesystem free its blocks during the rename; with the file still open they
 * are freed at the caller's close instead, off the path that waits for the name. */
int om_durable_commit_keep(om_durable *d, om_file **replaced);
/* As om_durable_commit without either sync: while the machine runs, the name shows the whole
 * file or nothing (never a partial one, to any reader); after a crash it may hold a file whose
 * bytes never reached the disk. Only for a file that is read and then removed while the
 * machine runs, and whose later use after a restart is refused by whoever would use it: the
 * logs a restore lays down for its own replay (docs/design.md, "Laying down"); a cache whose
 * reader checks a checksum of it and rebuilds it when that fails (backup/summaries.c). */
int om_durable_place(om_durable *d, int flags);
/* As om_durable_place (the file the name held kept open into *replaced when replaced is not
 * NULL, as om_durable_commit_keep), the file left open into *f for the caller, who syncs it and
 * the folder next, and closes it: a restore's .edb, put in place for the writer's replay to
 * start while the disk takes it (docs/design.md, "Replay while the .edb is flushed"); its use
 * after a restart is refused as the logs' is. */
int om_durable_place_open(om_durable *d, int flags, om_file **replaced, om_file **f);
/* As om_durable_commit (both syncs), the file left open into *f for the caller to close: a
 * file whose lock (om_vfs.lock, taken before the commit) must hold from the moment its name
 * shows it (a restore's .env, store/store_writer.c). */
int om_durable_commit_open(om_durable *d, int flags, om_file **f);
/* Closes and removes the temporary file (a failure before commit); d is finished. */
void om_durable_abort(om_durable *d);
/* Creates name in dir with these n bytes (data NULL: n zero bytes), begin to commit. */
int om_durable_write_at(om_dir *dir, const char *name, const void *data, uint64_t n, int flags);
/* 1 when name is one om_durable_begin makes (for target, or for any name when target is
 * NULL). */
int om_durable_is_tmp(const char *name, const char *target);
/* Removes what om_durable_begin calls for target (any name when NULL) left in dir: the
 * temporary files of a process that died between begin and commit. *removed (may be NULL)
 * counts them. Only call it where no other writer of such names can be at work. */
int om_durable_sweep(om_dir *dir, const char *target, int *removed);

/* Durable replace of the file at path (its folder may be reached through links: it is a
 * configured path), on the durable-file helper above: after a crash the file holds either the
 * old or the new content, never a mix; a link at path is replaced, never followed. */
int om_write_file_durable(om_vfs *v, const char *path, const void *data, size_t n);
/* Reads a whole (small) file into a malloc'd buffer. */
int om_read_file(om_vfs *v, const char *path, uint8_t **data, size_t *n);
/* Creates (or replaces) a file of n zero bytes at path durably, as om_write_file_durable. */
int om_create_zeroed(om_vfs *v, const char *path, uint64_t n);

/* dirname of path into out ("." when path has no slash). */
void om_dirname(const char *path, char *out, size_t len);
/* dir + "/" + name into out; InvalidPath when it does not fit. */
int om_path_join(char *out, size_t len, const char *dir, const char *name);

#endif
