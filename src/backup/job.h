/* The backup job: `ombra backup`, the requester of the system (spec §4-5).
 *
 * One run backs up one or more databases of the local store in one shadow copy set, in named
 * steps (job.c: one state, one cleanup path):
 *   1. plan: the store says where each database lives (store/client.h: db.show);
 *   2. snapshot: requester sequence on vss.sock: gather metadata, set the type, add the store
 *      writer's component of each database, prepare, snapshot set with the component paths, do
 *      it;
 *   3. list: per database, the set it continues (refused without it) and its files in the shadow
 *      copy; copy, check, commit: per database, in parallel, its files into the repository: one
 *      reader thread per file reads blocks in order, keeps the file's SHA-256 and checks the
 *      .edb's pages as it reads them (the check library: headers first, every page for full and
 *      copy, the log range at the end; the file is read once), while every core hashes, looks
 *      up, compresses, encrypts and writes the blocks (bk_put_block); the set (files, the writer
 *      metadata document, the backup components document, log range, parent) is committed last,
 *      and only when the check passed;
 *   4. complete: each component is marked succeeded only when its checks passed and its set is
 *      committed; BackupComplete (the writer truncates and records only those); the sets
 *      published; report: release, the result.
 * A failure anywhere before the set is committed leaves no set in the repository, and the writer
 * truncates nothing. kill -9 at any moment: the coordinator aborts the session; the repository
 * keeps the blocks already written for the next run.
 *
 * Test hook: OMBRA_BACKUP_PAUSE=<stage> stops the process at that stage (prints "paused <stage>"
 * on stderr, then SIGSTOP) so a test can damage files, kill it, or let it go on (SIGCONT).
 * Stages: prepared, snapshot, copying, copied, checked, committed, completed. */
#ifndef OM_BACKUP_JOB_H
#define OM_BACKUP_JOB_H

#include <jansson.h>
#include <stddef.h>

/* The most databases one backup takes: every database a store mounts (store/registry.h,
 * STORE_MAX_MOUNTED), in one shadow copy. */
#define BK_MAX_DBS 100

typedef struct bk_job_opts {
    const char *repo;       /* repository path */
    const char *passphrase; /* NULL: a plain repository */
    const char *type;       /* full, copy, incremental, differential */
    const char *provider;   /* auto, held, reflink, btrfs, copy */
    const char *const *dbs; /* database names */
    size_t ndb;
    int threads;  /* workers for each database; 0: two a core shared among them, at least one a core
                     each */
    int progress; /* draw a progress bar (a terminal) */
    /* Which copy of a database in a DAG (spec §8): NULL, whichever copy this server holds (its
     * active copy through the store's writer, or its passive copy through ombra-repld's replica
     * writer); "active" or "passive": only that one; a server name: this server's copy, and
     * this server must be the one named. */
    const char *from;
    /* Fulls (docs/design.md, "Change tracking and synthetic fulls"): read_all: read every page
     * of the .edb (no synthetic full); read_all_every: a full that reads every page at least
     * every that many fulls (0: 4; 1: every full reads everything). */
    int read_all;
    unsigned read_all_every;
    /* --all: a database that cannot be backed up in this run (no writer offers it, the store
     * refuses it, its writer leaves it out) fails alone, in "failed"; the others go on. Without
     * it such a database fails the run before the shadow copy (a writer leaving one out of
     * several fails it alone either way). */
    int each_alone;
} bk_job_opts;

/* Runs the backup. *result (always set, caller decrefs): {"sets": [{"id", "database",
 * "log_range", "bytes_stored", "blocks_new", "blocks_reused", "changemap" (fulls: the set's own,
 * repo.h)}], "type", "databases",
 * "copies": [{"database", "server", "copy": "active"|"passive"}], where a database is
 * {"id", "name"} (docs/cli.md),
 * "bytes_read", "bytes_stored", "seconds", "freeze_ms", "snapshot_ms", "failed": [...]}. Returns
 * 0 when every database was backed up and recorded, else the first failure (its detail names
 * the database and the step). */
int bk_backup_run(const bk_job_opts *o, json_t **result);

#endif
