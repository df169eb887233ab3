/* The restore job: `ombra restore` (spec §6), the requester of a restore session.
 *
 *   1. the chain (backup/chain.h) of the database's sets in the repository for the point;
 *   2. restore session on vss.sock: the saved documents of the newest set of the chain, the
 *      store writer's component with the restore options (target, target id, recovery database,
 *      mount, roll forward, stop generation), new paths if any; PreRestore says where the .edb
 *      and the logs go (and refuses a mounted target, one that does not allow restore, one with
 *      another id);
 *   3. the files: the .edb of the chain's full set, the logs of every set, each block read back
 *      through the repository (its id checked) and each file's SHA-256 checked; a damaged block
 *      or file stops the restore with the set, file and block named, before any replay;
 *   4. PostRestore: the writer replays (unless no_replay: additional restores follow) and mounts
 *      when asked; release.
 * This first version writes the files one after another, block by block. */
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
} bk_restore_opts;

/* *result (always set): {"sets": [...], "database", "target", "bytes", "seconds", "replay"}. */
int bk_restore_run(const bk_restore_opts *o, json_t **result);

#endif
