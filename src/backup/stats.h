/* What a repository holds, for `ombra repo stats`: its sets and chains, the bytes its packs take
 * on disk against the bytes its sets stand for (deduplication and compression together), and the
 * same per database. Reads only (the shared lock of an open handle is enough). */
#ifndef OM_BACKUP_STATS_H
#define OM_BACKUP_STATS_H

#include <jansson.h>

#include "backup/repo.h"

/* *stats: {"sets": listed sets, "damaged": set files that cannot be read, "chains": restore
 * chains (a whole chain per full or copy base, backup/chain.h), "not_restorable": sets whose
 * chain is broken, "packs": pack files, "bytes_on_disk": the bytes of every file under packs/
 * (what the data takes), "bytes": the sum of the sets' "bytes" (what they stand for),
 * "ratio": bytes / bytes_on_disk (null when nothing is on disk), "databases": [{"database":
 * {"id", "name"}, "sets", "fulls", "chains", "newest": the newest set's time (ISO, UTC; the time
 * retention and backups list use), "bytes": its sets' "bytes", "bytes_stored": what its sets
 * added to the repository (their "bytes_stored")}], by name. A set of several databases counts
 * for each. 0, or the error that stopped it. */
int bk_repo_stats(bk_repo *r, json_t **stats);

#endif
