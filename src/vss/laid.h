/* The restore's progress file: how a requester that is still laying log generations down tells
 * the writer, which replays them meanwhile, how far it got (restore option logs_arriving,
 * docs/vss-protocol.md). Both sides link this file; this header is the protocol's one
 * description.
 *
 * Why a file: the writer is another process behind the coordinator, and the answer to
 * PostRestore is the only message the protocol has for it, so the requester cannot send "one
 * more generation is in place". The file also carries the requester's liveness: the requester
 * holds an exclusive lock on it for as long as it lays files, and the kernel drops that lock
 * when the requester dies, which is what tells "not laid yet" from "never will be" without a
 * timeout.
 *
 * Order of calls:
 *   writer, PreRestore      vss_laid_create: the file, empty, in a folder of the writer's own
 *                           (never through a link); the PreRestore answer names it ("progress")
 *   requester, before       vss_laid_hold: opens it (never through a link at its name), takes
 *   PostRestore             the exclusive lock, says 0
 *   requester, laying       vss_laid_say(g) after each generation: every generation from the
 *                           first arriving one through g is whole, synced and in place
 *   requester, done/killed  vss_laid_release (or death): the lock goes
 *   writer, PostRestore     vss_laid_wait(g) before replay reads generation g: returns once the
 *                           file says g, or fails once the requester is gone without saying it
 *
 * The record, the whole file once written, VSS_LAID_RECORD bytes written at offset 0 with one
 * pwrite:
 *   "laid " <session: the restore session's uuid, 36 characters> " " <generation: 10 decimal
 *   digits, zero-padded> " " <check: XXH3-64 of the 53 bytes before it, seed 0, 16 lower-case
 *   hex digits> "\n"
 * An empty file says nothing yet (generation 0). A read that overlaps the requester's write may
 * see a mix of two records (the kernel does not make a small pwrite atomic against a pread on
 * every filesystem): the check tells it from a record, and the reader reads again. The session
 * makes a file written by another restore (a requester of an earlier session of the same
 * target that is still running) refused rather than taken for this one's progress.
 *
 * Durability: none is needed, and no call syncs. The file is a channel between two live
 * processes on one machine (the page cache is shared); after a crash neither is running, and a
 * rerun of the restore starts from PreRestore, which makes the file anew. What the number
 * promises (the generations are durable in place) the requester makes true before it says it.
 *
 * Threads: a vss_laid or vss_laid_waiter is used by one thread at a time. */
#ifndef OM_VSS_LAID_H
#define OM_VSS_LAID_H

#include <stddef.h>
#include <stdint.h>

#include "base/vfs.h"

#define VSS_LAID_RECORD 70 /* bytes: "laid " 36 " " 10 " " 16 "\n" */

/* The record of session (36 characters) for gen into out. */
void vss_laid_encode(const char *session, uint32_t gen, char out[VSS_LAID_RECORD]);
/* What the n bytes at the start of the file say: 0 and *gen (0 for an empty file: nothing said
 * yet); FileIOBeyondEOF for fewer bytes than a record (a write in progress, or a file cut
 * short), ReadVerifyFailure for bytes that are no record (a read that overlapped a write, or
 * damage), RestoreInProgress for a record of another session than session. *gen is 0 on any
 * error. Sets the detail on error (path names the file in it). */
int vss_laid_decode(const void *buf, size_t n, const char *session, const char *path,
                    uint32_t *gen);

/* ---- the writer ---- */

/* Creates name in d empty (CREATE | EXCL: FileAlreadyExists when anything, a link included, is
 * there). The name is durable only once the caller syncs d. */
int vss_laid_create(om_dir *d, const char *name);

/* Waits on the file at path for session. Set path, session and vfs; f stays NULL (it is opened
 * at the first wait, and closed by vss_laid_waiter_close). */
typedef struct vss_laid_waiter {
    om_vfs *vfs;
    const char *path, *session;
    const int *cancel; /* optional: set (atomically) by another thread, the wait gives up */
    om_dir *dir;       /* the file's folder (internal) */
    om_file *f;        /* the file (internal) */
} vss_laid_waiter;

/* Returns 0 once the file says gen or more. Polls about every millisecond while the requester
 * holds its lock; once the lock can be taken the requester is gone, the file is read once more,
 * and a number short of gen fails with MissingLogFile ("the restore stopped before laying down
 * log generation <gen> (<path>)"), as does a missing file, or *cancel set while it waits.
 * RestoreInProgress when the file is another session's. */
int vss_laid_wait(vss_laid_waiter *w, uint32_t gen);
void vss_laid_waiter_close(vss_laid_waiter *w);

/* ---- the requester ---- */

typedef struct vss_laid vss_laid;

/* Opens the file at path (the PreRestore answer's "progress"; its folder is opened without
 * following a link at its last component, and the file without following one at its name),
 * takes the exclusive lock (waiting out a writer's check of it, up to about 2 s: DatabaseInUse
 * after that) and says 0. */
int vss_laid_hold(om_vfs *v, const char *path, const char *session, vss_laid **out);
/* Says every generation through gen is laid (gen never goes down). */
int vss_laid_say(vss_laid *l, uint32_t gen);
/* Closes the file: the lock goes, and a writer still waiting sees the requester gone. NULL is a
 * no-op. */
void vss_laid_release(vss_laid *l);

#endif
