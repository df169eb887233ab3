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
 * "ratio": bytes / bytes_on_disk (null when nothing is on disk), and bytes_on_disk in four parts
 * that add up to it exactly:
 *   "bytes_used": the blocks some listed set uses (whole, or by a slice: a synthetic full's
 *     regions, repo.h), each block once (its record: header and payload);
 *   "bytes_unreferenced" ("blocks_unreferenced" blocks): indexed blocks no listed set uses
 *     (their sets expired, or their writer died; expire frees them);
 *   "bytes_pack_overhead": what the indexed pack files hold beyond their indexed blocks: each
 *     pack's header, a second copy of a block two writers stored at once;
 *   "bytes_not_indexed": files under packs/ no index lists (leftovers of killed writers, a pack
 *     being written right now; expire removes leftovers);
 * "blocks_missing": blocks a set uses that no index lists in a pack there is (damage: verify
 * names them; they count nowhere), "databases": [{"database": {"id", "name"}, "sets", "fulls",
 * "chains", "newest": the newest set's time (ISO, UTC; the time retention and backups list use),
 * "bytes": its sets' "bytes", "bytes_stored": the blocks counted for it: each used block counts
 * for the database of the oldest listed set that uses it (the first one it names, for a set of
 * several), so the databases' bytes_stored add up to bytes_used, "bytes_referenced": every block
 * its sets use, once (what it would take alone; a block shared with another database counts in
 * both)}], by name. A set of several databases counts for each in the other fields. Sets
 * committed while it runs may be missed (their blocks then count as unreferenced). 0, or the
 * error that stopped it. */
int bk_repo_stats(bk_repo *r, json_t **stats);

#endif
