/* What the providers share (common.c, tree.c): walking a tree without following links, copying a
 * file with large I/O, deleting a tree, making it read-only, placing storage on the original's
 * mount, and the prepare/commit/expose/remove steps common to the providers that build the
 * shadow tree themselves (held, reflink, copy). Not part of the public interface. */
#ifndef OM_VSS_PROVIDER_INTERNAL_H
#define OM_VSS_PROVIDER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "vss/provider/provider.h"

extern const vss_provider vss_btrfs_provider, vss_reflink_provider, vss_held_provider,
    vss_copy_provider;

/* The directory holding shadows on a filesystem other than shadow_root's. */
#define VSS_SHADOWS_DIR ".ombra-shadows"

/* --- Walking ------------------------------------------------------------------------------ */

/* A callback's answer for a directory (before its contents): do not descend. */
#define VSS_WALK_SKIP 1

typedef struct vss_entry {
    const char *path;      /* the full path */
    const char *rel;       /* relative to the walk's root; "" for the root */
    const struct stat *st; /* lstat of path (stat for the root when the walk follows it) */
    int post;              /* 1: a directory again, after its contents */
} vss_entry;

/* <0 stops the walk with that error; VSS_WALK_SKIP skips a directory's contents. */
typedef int (*vss_walk_fn)(void *arg, const vss_entry *e);

/* Calls fn for root, then for every entry below it in name order, directories before and
 * after their contents; never follows a symlink below root. Entries that vanish during the walk
 * are passed over; a root that does not exist is FileNotFound. */
int vss_walk(const char *root, int follow_root, vss_walk_fn fn, void *arg);

/* What a scan of a tree found, skipping the directory skip (NULL: none). */
typedef struct vss_scan {
    char first_file[VSS_PATH_MAX]; /* a regular file, for probes ("" when none) */
    char other_fs[VSS_PATH_MAX];   /* the first directory on another device ("" when none) */
    uint64_t copy_bytes;           /* sizes, rounded up to 4 KiB, of the files copies() takes */
    uint64_t entries;
} vss_scan;
/* copies(arg, rel): 1 when the provider will copy that regular file's data; NULL: none. */
typedef int (*vss_copies_fn)(void *arg, const char *rel);
int vss_scan_tree(const char *path, const char *skip, vss_copies_fn copies, void *arg,
                  vss_scan *sc);

/* --- Files and trees ---------------------------------------------------------------------- */

/* om_errf with the errno of the failed call: "<what> <path>: <strerror>". */
int vss_sys_err(const char *what, const char *path);
/* A failed link or clone of src to dst: DiskFull for ENOSPC/EDQUOT, else ProviderVeto. */
int vss_op_err(const char *op, const char *src, const char *dst);
/* Gives the open file fd the access and modification times of st. */
int vss_keep_times(int fd, const struct stat *st, const char *path);

/* HoldWritesTimeout naming what was being copied once om_mono_ns() > deadline_ns. */
int vss_check_deadline(uint64_t deadline_ns, const char *path);
/* Copies src (a regular file, never followed) to a new file dst with copy_file_range, or 1 MiB
 * reads and writes where it cannot, checking the deadline every 8 MiB; keeps the times. */
int vss_copy_file(const char *src, const char *dst, const struct stat *st, uint64_t deadline_ns);
/* The same bytes, read whole, with only the 4 KiB blocks that are not all zero written (the
 * others left as holes); *written adds the bytes written. For files the writer keeps mostly
 * zero (a log generation just started). */
int vss_copy_file_sparse(const char *src, const char *dst, const struct stat *st,
                         uint64_t deadline_ns, uint64_t *written);
/* Deletes path and everything below it without following links; makes directories writable
 * first, never changes a file's mode (held's links share the original's inode). Missing: 0. */
int vss_remove_tree(const char *path);
/* Directories 0555, regular files with one link 0444; sums sizes and counts regular files. */
int vss_make_readonly(const char *root, uint64_t *bytes, uint32_t *files);
/* Counts like vss_make_readonly without changing anything. */
int vss_count_tree(const char *root, uint64_t *bytes, uint32_t *files);

/* --- Where things are --------------------------------------------------------------------- */

/* The storage parent for a provider that needs the original's mount: shadow_root (created when
 * missing) when it is on that mount, else <top>/.ombra-shadows (created). */
int vss_storage_base(const char *original, const char *shadow_root, char *out, size_t n);
/* A name for the filesystem holding path ("ext4", "xfs"; "0x1234abcd" when unknown). */
const char *vss_fs_name(const char *path, char *buf, size_t n);
/* a + "/" + b into out, InvalidPath naming both when it does not fit. */
int vss_join(char *out, size_t n, const char *a, const char *b);
/* printf into out, InvalidPath when it does not fit. */
int vss_fmt_path(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* --- The common steps --------------------------------------------------------------------- */

/* Validates p->path and s->set_id, generates s->id when empty, fills provider and original. */
int vss_shadow_begin(const vss_shadow_path *p, vss_shadow *s, const char *provider);
/* InsufficientStorage when the filesystem of dir has less than need bytes free. */
int vss_check_space(const char *dir, uint64_t need, const char *original);
/* Creates <base>/<set> (0750, may exist) and <base>/<set>/<id> when mk_storage. */
int vss_make_storage(vss_shadow *s, const char *base, int mk_storage);
/* UnexpectedProviderError unless storage ends in <set_id>/<id> of valid uuids. */
int vss_check_storage_path(const vss_shadow *s);
/* rmdir of <set> above storage, when it is empty. */
void vss_remove_set_dir(const vss_shadow *s);

/* Copies, links or clones one regular file src to the new name dst. */
typedef int (*vss_file_fn)(void *arg, const char *src, const char *dst, const char *rel,
                           const struct stat *st, uint64_t deadline_ns);

typedef struct vss_tree_opts {
    int same_mount;       /* storage on the original's mount; the tree may not cross mounts */
    vss_copies_fn copies; /* which files' data is copied (for the space check) */
    void *arg;
} vss_tree_opts;

int vss_tree_prepare(const vss_shadow_path *p, const char *shadow_root, vss_shadow *s,
                     const char *provider, const vss_tree_opts *o);
/* Rebuilds the original's tree under s->exposed: directories, symlinks as symlinks, and each
 * regular file through fn, except the files p excludes. */
int vss_tree_commit(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns, vss_file_fn fn,
                    void *arg);
/* The same; with skip_existing, directories and files already in the tree are left as they are
 * (a second pass over a tree built in part before). */
int vss_tree_build(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns, vss_file_fn fn,
                   void *arg, int skip_existing);
int vss_tree_expose(vss_shadow *s);
int vss_tree_remove(const vss_shadow *s);
/* supports() for held and reflink: the tree stays on one mount, then probe(src, dst) of a file
 * of the tree (or of a temporary file) to a new name in the storage base must succeed. probe
 * returns 0 or an errno. The reason reads "<what> on <fs>: <op> of <src> into <base> failed
 * (<strerror>)", e.g. what "no reflink", op "FICLONE". */
typedef int (*vss_probe_fn)(const char *src, const char *dst);
int vss_probe_supports(const char *path, const char *shadow_root, vss_probe_fn probe,
                       const char *what, const char *op, char *why, size_t n);

#endif
