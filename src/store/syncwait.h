/* Synchronous copies (`ombra db set DB --sync-copies N`, docs/design.md "Block mode and
 * synchronous copies"): a commit of a database with N > 0 is acknowledged only once N of its
 * passive copies hold its log durably.
 *
 * The passive copies stream the log as it is written (block mode); each stream request of a
 * copier carries its durable position, which the active's ombra-repld passes on here
 * (store_syncwait_report, the store op db.sync_position). A committer, after the engine's
 * durable commit, waits (a condition variable, bounded) until N copies report a position at or
 * past the commit's: the durable end of the log when its commit returned, which may include
 * other commits' records (never fewer than its own).
 *
 * When fewer than N copies get there within the bound, the committer gets
 * SyncCopiesUnavailable (retryable: the CLI exits 75). The commit is then durable on this
 * server all the same (like PostgreSQL's canceled synchronous wait): what the error says is
 * that it is not known to be on N copies. An acknowledged commit always is.
 *
 * A position is the copy's latest word: a copier that restarted with less (its unsynced bytes
 * lost) says so, and counts for less. Thread-safe. */
#ifndef OM_STORE_SYNCWAIT_H
#define OM_STORE_SYNCWAIT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/types.h"

typedef struct store_syncwait store_syncwait;

int store_syncwait_new(store_syncwait **out);
void store_syncwait_free(store_syncwait *w);
/* Copy `server` of database db_id holds every generation before pos.gen and pos.off bytes of
 * pos.gen's record stream durably. */
int store_syncwait_report(store_syncwait *w, const char *db_id, const char *server, eng_lgpos pos);
/* The --sync-copies of db_id as the active's ombra-repld read it in the DAG's record (used when
 * the store's own directory has no DAG record of it); store_syncwait_wanted returns it (0 when
 * never said). */
void store_syncwait_set_wanted(store_syncwait *w, const char *db_id, uint32_t n);
uint32_t store_syncwait_wanted(store_syncwait *w, const char *db_id);
/* Which servers' positions count: with a DAG record, its passive copies only (a name reported
 * for no copy of it, a copy removed since, or the active itself never acknowledges a commit);
 * NULL: every server reported (no record names the copies). */
typedef struct store_sync_copies {
    const char *const *servers;
    size_t n;
} store_sync_copies;
/* How many copies of db_id among `only` hold pos. */
uint32_t store_syncwait_count(store_syncwait *w, const char *db_id, const store_sync_copies *only,
                              eng_lgpos pos);
/* Returns once n copies of db_id among `only` (db_id named name, for messages) hold pos: 0;
 * after timeout_ms without them: SyncCopiesUnavailable, saying how many did. */
int store_syncwait_wait(store_syncwait *w, const char *db_id, const char *name,
                        const store_sync_copies *only, uint32_t n, eng_lgpos pos,
                        uint32_t timeout_ms);

#endif
