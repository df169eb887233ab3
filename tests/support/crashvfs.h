/* crashvfs: an in-memory om_vfs that loses power on demand, for crash tests.
 *
 * In the manner of SQLite's crash VFS (src/test6.c): files live in memory, every change is
 * tracked as synced or not, and when the Nth sync call starts the power is lost. A reboot then
 * builds the disk image a real machine could come back with, and the VFS is usable again on
 * that image, so a test can reopen the engine on it and check what survived.
 *
 * Typical use in a crash harness:
 *
 *     crashvfs *disk = crashvfs_new(seed);
 *     ...prepare a database through crashvfs_vfs(disk)...
 *     for (n = 1; ; n++) {
 *         crashvfs *c = crashvfs_clone(disk);
 *         crashvfs_reseed(c, seed + n);
 *         crashvfs_crash_at_sync(c, n);
 *         rc = run_workload(crashvfs_vfs(c));    // stops on OM_E_Crashed
 *         if (!crashvfs_crashed(c)) { crashvfs_free(c); break; }  // n went past the workload
 *         crashvfs_reboot(c);
 *         check_recovery(crashvfs_vfs(c));        // reopen: only durable state is guaranteed
 *         crashvfs_free(c);
 *     }
 *
 * What is durable when (the contract of base/vfs.h, enforced strictly):
 * - File content and size: once om_sync() on that file returned 0. Until then a write is
 *   visible to reads (as in a page cache) but after a crash each 4 KiB-aligned block changed
 *   since the file's last sync is, independently and at random, kept (new content), dropped
 *   (the content of the last sync) or garbled (random bytes over part of what was changed
 *   in it; bytes of the block that were synced and not rewritten since are never touched).
 *   A pending size change comes back as the synced size or the current size; bytes past
 *   the synced size in a dropped block read as zeros.
 * - Names (open with OM_O_CREATE of a new file, rename, unlink, mkdir): once
 *   sync_dir() on the directory that holds the name returned 0 (for rename: either of its
 *   two directories). sync_dir(d) makes durable the pending name operations in d, together
 *   with the earlier pending operations they depend on (the ones on the same names, and the
 *   mkdir of the directories they live in); operations in other directories stay pending.
 *   At reboot a random prefix of the still-pending operations, in the order they were made,
 *   is applied to the durable names (a journaled filesystem: it never reorders them).
 *   A rename moves the file (its content state goes with it).
 * - The crashing sync call does not make anything durable.
 *
 * Paths are absolute and '/'-separated; repeated and trailing slashes are ignored, "." and
 * ".." components and relative paths fail with OM_E_InvalidPath. "/" always exists.
 * Directories can be created, removed when empty (rmdir_at), and renamed to a name that is
 * free (with everything below them; the rename is durable as any other, and depends on the
 * pending operations below the directory, which a reboot applies first); unlink of a
 * directory fails with OM_E_InvalidPath.
 *
 * Directory handles (dir_open and the *_at methods of base/vfs.h) name their directory by its
 * path: a name given to them is one component (else OM_E_InvalidPath), a create or rename
 * through them is durable only after dir_sync (or sync_dir) of that directory, as above.
 * There are no symbolic links in this VFS; OM_D_FOLLOW changes nothing. A handle to a
 * directory that was removed fails with OM_E_FileNotFound.
 *
 * Errors follow base/vfs.h: every method returns 0 or an error from errors.def with the path
 * in the detail. Once the power is lost every method on the VFS and on its files fails with
 * OM_E_Crashed ("simulated power loss"), except om_close(), which always releases the handle
 * and returns 0.
 *
 * One mutex protects the whole VFS, so an engine's threads can call it in parallel. All
 * results are deterministic for a given seed and a given order of calls.
 * No function here other than the om_vfs methods sets the error detail. */
#ifndef OM_TESTS_CRASHVFS_H
#define OM_TESTS_CRASHVFS_H

#include <stdint.h>

#include "base/vfs.h"

typedef struct crashvfs crashvfs;

/* Operations a failure can be injected into (crashvfs_fail_next). */
enum crashvfs_op {
    CRASHVFS_OPEN,
    CRASHVFS_READ,
    CRASHVFS_WRITE,
    CRASHVFS_SYNC,
    CRASHVFS_RESIZE,
    CRASHVFS_RENAME,
    CRASHVFS_UNLINK,
    CRASHVFS_SYNC_DIR,
    CRASHVFS_MKDIR,
    CRASHVFS_RMDIR,
    CRASHVFS_NOPS
};

/* An empty filesystem (only "/"), no space limit, no crash point; random choices come from
 * seed. NULL when out of memory. */
crashvfs *crashvfs_new(uint64_t seed);
/* Frees the filesystem. Close every file first: a handle left open is not freed here (so that
 * the leak checker reports it), and closing it afterwards is a use after free. NULL is a
 * no-op. */
void crashvfs_free(crashvfs *c);
/* The om_vfs to hand to the code under test; valid as long as c. */
om_vfs *crashvfs_vfs(crashvfs *c);

/* Power is lost when the n-th sync call from now starts (n = 1: the next one), counting
 * om_sync() and sync_dir() calls together; 0 disarms. */
void crashvfs_crash_at_sync(crashvfs *c, uint64_t n);
/* Sync calls (file and directory, the crashing one included, none after it) since
 * crashvfs_new(); a clone carries the count on. The difference over a dry run of a workload
 * is the number of crash points it has. */
uint64_t crashvfs_syncs(crashvfs *c);
/* The step of the loops that try every sync point of a workload: OMBRA_CRASH_EVERY=N tries
 * sync points 1, 1 + N, 1 + 2N, ... (make test's sanitizer pass sets 4: there the loops look
 * for memory errors, the plain build tries every point); 1 without it. */
uint64_t crashvfs_every(void);
/* 1 once the power is lost, until the reboot. */
int crashvfs_crashed(crashvfs *c);

/* Builds the disk image a reboot would see (see the top of this file for what survives) and
 * makes the VFS usable on it; the crash point and injected failures are cleared. Called when
 * the power was not lost, it loses it now (a crash between two syncs). Handles opened before
 * stay valid to close, but every other operation on them fails with OM_E_Crashed.
 * Returns 0. */
int crashvfs_reboot(crashvfs *c);

/* Limits the total size of all files (the ones with a name, and unlinked ones still open) to
 * bytes: a write or resize that would go past it fails with OM_E_DiskFull and changes
 * nothing, and free_space() reports what is left. 0 = unlimited (free_space() then reports
 * 1 TiB). A limit below the current total only refuses growth. */
void crashvfs_set_space_limit(crashvfs *c, uint64_t bytes);

/* The next call of op on this VFS fails with err (< 0) and changes nothing, as a failing
 * disk would; later calls succeed again. A sync call that fails this way still counts as a
 * sync call, and the crash point takes precedence over it. Returns 0, or
 * OM_E_InvalidParameter for an unknown op or a non-negative err. */
int crashvfs_fail_next(crashvfs *c, int op, int err);

/* A deep copy of the whole state: durable and pending content and names, the random state,
 * the space limit, the sync count, the crash point, injected failures and the crashed flag;
 * only the open handles stay with c. For snapshotting a prepared disk, or for rebooting one
 * crash several ways (clone, reseed, reboot). NULL when out of memory. */
crashvfs *crashvfs_clone(const crashvfs *c);
/* Restarts the random choices from seed (e.g. a different seed for each clone of a
 * snapshot). */
void crashvfs_reseed(crashvfs *c, uint64_t seed);
/* Makes every file sync take usec microseconds (outside the VFS lock), like a real disk's
 * flush, so tests can observe what overlaps a sync (group commit). 0 = instant. */
void crashvfs_set_sync_delay(crashvfs *c, unsigned usec);

#endif
