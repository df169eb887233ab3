/* The restore job: `ombra restore` (spec §6), the requester of a restore session, in named
 * steps (restore.c: one state, one cleanup path):
 *   1. plan: the chain (backup/chain.h) of the database's sets in the repository for the
 *      point; every file name of its sets checked (backup/setfiles.h) and each size against its
 *      blocks;
 *   2. prepare: restore session on vss.sock through this server's store writer (its instance
 *      id, the component under its own logical path; the saved ones are information): the saved
 *      documents of the newest set of the chain, the component with the restore options
 *      (target, target id, recovery database, mount, roll forward, stop generation), new paths
 *      if any; PreRestore says where the .edb and the logs go and which names may be replaced
 *      (and refuses a mounted target, one that does not allow restore, one with another id);
 *   3. lay: the files, on every core, through directory handles of the folders PreRestore named
 *      (base/vfs.h: no link followed): the .edb of the chain's base set (a full or a copy) at
 *      the target's .edb path, then the log generations ascending (each from the newest set
 *      holding it) under the target's names. Workers take chunks of 8 consecutive blocks in
 *      that order, read each block back through the repository (decrypted, decompressed; its
 *      content left to the file's check, which covers every byte: each byte is hashed once),
 *      write the chunk with one pwrite into the file's temporary name (the durable-file helper:
 *      .<name>.<16 hex>.tmp, created O_EXCL), then add it to the file's hash in block order (its
 *      SHA-256; in an encrypted repository its XXH3-128 where the set has one: repo.h); the worker
 *      hashing a file's last chunk checks it (on a mismatch it reads the
 *      blocks again against their ids to name the damaged one), then syncs it, renames it into
 *      place (replacing a name only where PreRestore allowed it; a replaced .edb is freed off
 *      the critical path) and syncs the folder. A damaged block or file stops the restore with
 *      the set, file and block named; temporary files are removed;
 *   4. replay: PostRestore as soon as the .edb and the first generation are in place: the writer
 *      replays while the rest are laid down (restore option logs_arriving), following the
 *      PreRestore answer's progress file, which this process holds locked while it lays files
 *      and into which it writes the last generation laid (a dead or failed restore releases the
 *      lock, and the writer stops: the target stays marked not restored). Without replay
 *      (no_replay: additional restores follow) PostRestore comes after every file. The writer
 *      mounts when asked; report: release, the result.
 * Test hook: OMBRA_RESTORE_PAUSE=opened|prepared|edb|replaying|laid|last_log stops the process
 * (SIGSTOP) there (last_log: the .edb is in place, the last generation about to take its name). */
#ifndef OM_BACKUP_RESTORE_H
#define OM_BACKUP_RESTORE_H

#include <jansson.h>
#include <stdint.h>

typedef struct bk_restore_opts {
    const char *repo, *passphrase;
    const char *db;         /* the database the backups are of */
    const char *set_id;     /* NULL: the newest chain */
    uint32_t until_gen;     /* 0: none */
    uint64_t until_time_ns; /* 0: none; ns since the epoch */
    const char *to;         /* another database (NULL: the original) */
    const char *recovery;   /* the recovery database's name */
    const char *edb, *logs; /* new paths */
    int no_replay, mount;
    int no_roll_forward; /* replay the restored logs only, not the later ones on disk */
    int progress;        /* draw a progress bar (a terminal) */
    /* Called (may be NULL) with the chain's sets ({"id", "type", "log_range"}) before the files
     * are laid down. */
    void (*on_chain)(void *arg, json_t *sets);
    void *arg;
} bk_restore_opts;

/* *result (always set): {"sets": [...], "database": {"id", "name"} (the backup's database; id
 * null when the restore failed before it knew it), "target" (the name restored into), "files",
 * "bytes", "lay_seconds" (laying the files down), "checked_by": {"xxh3_128", "sha256", "block_ids"}
 * (how many of the files laid were checked by their XXH3-128, by their SHA-256, and how many of
 * them had each block checked against its id as it was laid: a plain repository's: repo.h),
 * "seconds" (all of it), "replay": the writer's
 * {"first_gen", "last_gen", "records", "transactions", "ns", "stopped_at_point"} or null,
 * "recovery": whether the target is a recovery database, "copy_of" (only when the restore made it
 * one): the name of the database of this server that carries the id it was given (spec §6: two
 * ordinary databases never carry one id)}. */
int bk_restore_run(const bk_restore_opts *o, json_t **result);

#endif
