/* Shadow-copy providers: how ombra-vssd makes, exposes and deletes a shadow copy of one path
 * (ARCHITECTURE.md, "Shadow copies and providers"; spec §4, step 3).
 *
 * A shadow copy is a read-only tree, `exposed`, in which every file under the shadowed path
 * (`original`) has the same relative path and the bytes it had at commit: exposed/rel holds
 * what original/rel held while the writers were frozen. The requester reads it like any
 * directory and never needs to know which provider made it.
 *
 * The providers, in the order `auto` prefers them:
 *   btrfs    a read-only snapshot of the btrfs subvolume holding the path (root only);
 *   reflink  FICLONE of every file (XFS with reflink, btrfs);
 *   held     hard links to the files the writer holds unchanged (the .edb, finished logs),
 *            made at prepare (a link names the inode, which the writer keeps unchanged from
 *            Freeze on), and at commit links to held files that appeared since and copies of
 *            the others (checkpoint, current log); any filesystem with link(). When the
 *            writers name the held files that appeared since (held_new_only), commit touches
 *            only those and the files prepare found to copy (its plan), never the others:
 *            its work does not grow with the number of held files;
 *   copy     a plain copy of every file; any filesystem, bounded by the commit limit.
 *
 * The calls for one path, in the order the coordinator makes them:
 *   supports  any time       1, or 0 with the reason, or an error
 *   prepare   before Freeze  checks the path and the free space, creates the storage
 *                            directory (btrfs: its parent), fills storage and exposed; on
 *                            failure leaves nothing
 *   commit    during Freeze  makes the copy; HoldWritesTimeout once om_mono_ns() passes the
 *                            deadline (checked between files and between 8 MiB of a copy)
 *   settle    after Thaw     optional: finishes what no longer changes (held: writes what
 *                            commit read, links the held files named at Freeze)
 *   expose    after Thaw     makes the tree read-only, fills bytes and files
 *   remove    at release     deletes what the provider made
 * Once prepare has succeeded the caller must call remove, whatever happens next: a failed or
 * timed-out commit leaves a partial copy that remove deletes. remove works from the catalog
 * record alone (after a daemon restart) and is idempotent; it refuses a record whose storage
 * does not end in <set_id>/<id>, so a damaged catalog cannot make it delete anything else.
 *
 * Where storage goes (held and reflink need the original's filesystem, btrfs its subvolume):
 *   copy               <shadow_root>/<set>/<id>
 *   held, reflink      <shadow_root>/<set>/<id> when shadow_root is on the original's mount
 *                      (same device and mount id), else <top>/.ombra-shadows/<set>/<id>, top
 *                      being the highest directory above the original still on its mount
 *   btrfs              <subvolume root>/.ombra-shadows/<set>/<id> (the snapshot itself)
 * exposed is storage itself when the original is a directory, storage/<basename> when it is a
 * file, and for btrfs the snapshot plus the original's path inside its subvolume.
 *
 * Trees: the original path itself may be or pass through a symlink; below it nothing is ever
 * followed. A symlink is recreated as a symlink with the same target text (as a btrfs snapshot
 * keeps it), so a reader must not follow links out of the shadow copy; sockets, FIFOs and
 * devices are skipped (a btrfs snapshot keeps them). The directory holding the shadows is skipped
 * when it lies inside the original. held, reflink and btrfs refuse (supports 0, prepare
 * VolumeNotSupportedByProvider) a path that has another mount or btrfs subvolume below it; copy
 * crosses them.
 *
 * Permissions: after expose, directories are 0555 and the files the provider created 0444;
 * held's hard links keep the original inode's owner and mode (changing them would change the
 * original's); a btrfs snapshot keeps everything and is read-only as a subvolume. Directories
 * the provider creates on the way (<set>, .ombra-shadows) are 0750.
 *
 * Durability: nothing is fsynced. A shadow copy does not outlive the writer's hold or the
 * coordinator (both invalidate it), so after a crash it is only ever removed.
 *
 * Paths are absolute and shorter than VSS_PATH_MAX; a longer one fails with InvalidPath.
 * Every failure returns an error from base/errors.def with a detail naming the path and the
 * cause. Calls keep no state between them: different shadow copies may be worked on from
 * different threads at once. */
#ifndef OM_VSS_PROVIDER_H
#define OM_VSS_PROVIDER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define VSS_PATH_MAX 4096

/* One path to shadow: an absolute directory or file. held lists absolute paths of regular files
 * under it that the writer keeps unchanged while the shadow copy exists (the .edb whose page
 * writes are held, the finished log generations); only the held provider uses it, and it
 * fails the commit when one of them is missing. */
typedef struct vss_shadow_path {
    char *path;
    char **held;
    size_t nheld;
    char **exclude; /* absolute paths of files the copy leaves out (held, copy, reflink) */
    size_t nexclude;
    /* At commit: held lists only the held files that appeared since the writers' PrepareSnapshot
     * (each writer named them at Freeze), so those are all a commit needs besides what prepare
     * found. 0: held lists every held file, and commit walks the tree. */
    int held_new_only;
    /* At commit: files the writers say keep their first data_end bytes unchanged and hold zeros
     * from there to size at the freeze ([{"path", "size", "data_end"}], absolute paths; NULL:
     * none), so only data_end bytes need reading (a log generation just started). */
    json_t *stable;
    /* A provider's own record from prepare to settle (held: what to copy at commit, and what it
     * read then): prepare may set *plan; the caller keeps it, passes it back at commit and
     * settle, and frees it with drop_plan when the shadow copy is done with. NULL: none. */
    void **plan;
} vss_shadow_path;

/* A shadow copy of one path: the coordinator's catalog record. The caller zeroes it and sets
 * set_id; prepare generates id when it is empty and fills provider, original, storage and
 * exposed; commit sets created_ns; expose sets bytes and files. */
typedef struct vss_shadow {
    char id[37], set_id[37];     /* uuids (base/uuid.h) */
    char provider[16];           /* "btrfs" "reflink" "held" "copy" */
    char original[VSS_PATH_MAX]; /* the shadowed path, without a trailing slash */
    char storage[VSS_PATH_MAX];  /* what remove deletes: a directory or a btrfs snapshot */
    char exposed[VSS_PATH_MAX];  /* the read-only tree (or file) to read */
    uint64_t created_ns;         /* wall clock (om_now_ns) at commit: the copy's point in time */
    uint64_t bytes;              /* sum of the sizes of the regular files under exposed */
    uint32_t files;              /* number of regular files under exposed */
    /* What commit did during the freeze (not in the catalog): files linked, files copied and
     * bytes written for them. held: neither grows with the held files there already at
     * prepare. */
    uint32_t commit_links, commit_copies;
    uint64_t commit_bytes;
} vss_shadow;

typedef struct vss_provider {
    const char *name;
    /* 1 when it can shadow path with its storage placed as above for shadow_root (why empty);
     * 0 when it cannot, with the reason in why ("not btrfs (ext4)", "xfs has no reflink
     * (FICLONE: Operation not supported)"); <0 on error (path missing...). held and reflink
     * probe for real: they link or clone a file of the path (one block of it) into the storage
     * location and delete the probe, creating shadow_root or .ombra-shadows if missing. */
    int (*supports)(const char *path, const char *shadow_root, char *why, size_t n);
    /* Before Freeze. shadow_root: the coordinator's shadow directory ($OMBRA_HOME/shadows),
     * created when missing. InsufficientStorage when the storage's filesystem has less free
     * space than the files the provider copies (all for copy, those not held for held) plus
     * 4 KiB per entry; VolumeNotSupportedByProvider when supports would say 0; InvalidParameter
     * for a bad set_id or a held file that is not a regular file under the path. */
    int (*prepare)(const vss_shadow_path *p, const char *shadow_root, vss_shadow *s);
    /* During Freeze: makes the copy. deadline_ns is on the om_mono_ns() clock (UINT64_MAX:
     * none). */
    int (*commit)(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns);
    /* After Thaw, before expose (optional): the rest of the copy, from what commit kept in the
     * plan and the held files the writers named. */
    int (*settle)(const vss_shadow_path *p, vss_shadow *s);
    /* After Thaw: makes the tree read-only and fills bytes and files. */
    int (*expose)(vss_shadow *s);
    /* Deletes storage (and <set> when it becomes empty); already gone is success. */
    int (*remove)(const vss_shadow *s);
    /* Frees a plan prepare made (optional: NULL when prepare never makes one). */
    void (*drop_plan)(void *plan);
} vss_provider;

/* The provider named name, NULL for an unknown name ("auto" is not a provider: see below). */
const vss_provider *vss_provider_find(const char *name);
/* All providers, in auto's order of preference: btrfs, reflink, held, copy. */
const vss_provider *const *vss_providers(size_t *n);
/* auto: btrfs or reflink where the filesystem can, else held when writers_can_hold (every
 * writer of the path declared the hold capability), else copy. Returns the provider, with why
 * saying why each better one was passed over; NULL when none can (why says why). */
const vss_provider *vss_provider_auto(const char *path, const char *shadow_root,
                                      int writers_can_hold, char *why, size_t n);

/* The catalog record as a JSON object: id, set_id, provider, original, storage, exposed
 * (strings), created_ns, bytes, files (integers). NULL when out of memory. */
json_t *vss_shadow_to_json(const vss_shadow *s);
/* Reads a record written by vss_shadow_to_json; InvalidParameter naming the field when one is
 * missing, has the wrong type or does not fit. */
int vss_shadow_from_json(json_t *j, vss_shadow *s);

#endif
