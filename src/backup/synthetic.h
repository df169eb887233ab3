/* A synthetic full (docs/design.md, "Change tracking and synthetic fulls"): the .edb of a full
 * backup from the pages the engine's change map says were written since the previous full's
 * freeze, read and checked now, and the previous full's blocks for the rest, as slices of them
 * (repo.h: the regions form). Internal to the backup job. */
#ifndef OM_BACKUP_SYNTHETIC_H
#define OM_BACKUP_SYNTHETIC_H

#include <jansson.h>
#include <stdint.h>

#include "backup/repo.h"

/* Whether this full may be synthetic. sets: bk_sets of the repository; db_id: the database; md:
 * the writer's backup metadata (its "changemap", backup_record.h); every: a full that reads
 * everything at least every that many fulls (1: always); force: --read-all. Returns 1 and the
 * previous full's summary in *prev (borrowed from sets) with the changed data pages as runs
 * (first, count: 2 * *nruns numbers, malloc'd) when it may; 0 with why (one phrase) when it must
 * read everything. *since (either way) is how many synthetic fulls in a row the previous one
 * ends (-1: none; the new one is read-all when it reads all). */
int bk_synth_decide(json_t *sets, const char *db_id, json_t *md, unsigned every, int force,
                    json_t **prev, uint32_t **runs, uint32_t *nruns, int *since, char *why,
                    size_t wn);

/* Checks the pages of a buffer read from the .edb at file offset off (the job's check). */
typedef int (*bk_synth_check_fn)(void *arg, uint64_t off, const uint8_t *buf, size_t len);

typedef struct bk_synth_in {
    bk_repo *repo;
    bk_writer *w;
    const char *src, *name; /* the .edb in the shadow copy; its name in the set */
    uint64_t size;
    json_t *prev_file; /* the previous full's entry of the same name */
    const char *prev_set;
    const uint32_t *runs; /* changed data pages: first, count */
    uint32_t nruns;
    uint32_t db_pages; /* data pages the header counts */
    bk_synth_check_fn check;
    /* File pages [fp, fp + n) reused, not read: vouched for by the previous full. */
    void (*vouch)(void *arg, uint64_t fp, uint32_t n);
    void *check_arg;
    uint64_t *bytes_read; /* shared progress counter (atomic) */
    int threads;          /* the regions over this many workers (0 or 1: this thread) */
} bk_synth_in;

typedef struct bk_synth_out {
    uint64_t pages_now, pages_reused; /* data pages checked now; vouched for by prev_set */
    uint64_t stored;                  /* bytes of new blocks */
    uint64_t regions_reread; /* regions of the previous full read again: a block they refer to
                                is known damaged in every copy (damaged.json) */
} bk_synth_out;

/* Stores the .edb in the regions form and adds it to the set (bk_set_add_file_regions), with
 * meta {"source", "pages_checked_now", "pages_reused", "reused_from"}. Errors: reading
 * (DiskIO), the check's, the repository's; RepositoryCorrupt when the previous entry is not one
 * this can build on. */
int bk_synth_store(const bk_synth_in *in, bk_synth_out *out);

#endif
