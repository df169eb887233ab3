/* Seeding a passive copy from another passive copy (`ombra db copy reseed DB --server S
 * --source S2`; docs/design.md, "Reseeding from another copy").
 *
 * A passive copy's files are written by one thread only, its copier (copier.h), and only at
 * three moments: its seed, the opening of its passive handle, and each replay. Between two
 * replays the copy on disk is a durable replay position (engine.h, eng_passive_replay: pages,
 * header, E00.chk): exactly what the copier itself reopens after a restart. So a consistent seed
 * of it is its .edb and the generations from its header's Log Required min on, read while the
 * copier writes nothing. The copy lock says so: an exclusive flock on the copy's folder
 * ($OMBRA_HOME/copies/<db id>), which the copier takes around each of those three moments and
 * the seed holds while it streams (the copier then skips its replays: it goes on copying and
 * inspecting, its replay queue grows, and it catches up once the seed is sent).
 *
 * The protocol (wire.h), answered by the replication service of the server of the source copy:
 *   {"op":"seed.copy","db":ID,"name":N}
 *        -> {"ok":true,"op":"seed.begin","size":S,"lo":L,"hi":H}, then {"op":"seed.data",
 *           "offset":O} + up to RP_SEED_CHUNK bytes each (the .edb), then for each generation g
 *           from L to H {"op":"seed.log","gen":g,"size":Z} + the file's bytes, then
 *           {"op":"seed.end","size":S,"logs":H - L + 1}.
 * Served only for a passive copy this server holds of that id and name whose record says
 * Healthy (copies/<id>/<server>); anything else is refused with one error reply. */
#ifndef OM_REPL_RESEED_H
#define OM_REPL_RESEED_H

#include <jansson.h>

#include "repl/dag.h"
#include "repl/source.h"
#include "repl/tls.h"

/* Takes the copy lock of $data_dir/copies/<db_id>: *fd gets the descriptor that holds it.
 * wait_ms 0: one try; < 0: until taken or *stop becomes non-zero (stop may be NULL); else at
 * most that long. DatabaseInUse when it is held, FileNotFound when the folder is missing,
 * InvalidPath when it is a link. */
int rp_copy_lock(const char *data_dir, const char *db_id, int wait_ms, volatile int *stop, int *fd);
/* Releases it (fd < 0: nothing). */
void rp_copy_unlock(int fd);

/* Serves one seed.copy request (above); 0 when the reply went out, its error or not (the
 * connection can go on), else the connection's error. */
int rp_reseed_serve(rp_source *s, rp_conn *c, json_t *req);

/* ---- a restore in a DAG (docs/design.md "Restore in a DAG") ----
 *
 * A restore of a DAG database goes to its active copy, through the active server's store; the
 * restored database's log stream is not the one the passive copies hold (a point in time, or a
 * roll forward that ended, starts a new one), so every passive copy is reseeded from the
 * restored active afterwards. A copy never replays the restored stream into its old .edb (the
 * inspection refuses a generation of another log stream: the copy is Failed until its reseed),
 * and the reseed wipes its old generations before it copies any of the new stream. */

/* Where a restore into database name may go in DAG d: in_dag 0 when the DAG has no database of
 * that name (nothing else set); else its id, its active server ("" when none) and how many
 * passive copies its record names. */
typedef struct rp_restore_target {
    int in_dag;
    char id[37];
    char active[RP_NAME_MAX + 1];
    int passives;
} rp_restore_target;
int rp_restore_where(rp_dag *d, const char *name, rp_restore_target *t);

/* After a restore to the active copy of database id on server active: every passive copy asked
 * to reseed from the active, in one transaction on the database's record (each copy's "reseed"
 * bumped, as `ombra db copy reseed` does, a --source of an earlier reseed forgotten); each
 * copier sees it through its watch, wipes its copy and seeds it from the active (copier.h). A
 * suspended copy stays suspended and reseeds when resumed. *copies: a new array of {"server",
 * "suspended"}, one per passive copy (empty when there is none). */
int rp_reseed_after_restore(rp_dag *d, const char *id, const char *active, json_t **copies);

#endif
