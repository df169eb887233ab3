/* Truncation across copies (spec §8, "Log truncation in a DAG"), the active's side: for every
 * database whose active copy is on this server, the lowest generation one of its passive copies
 * still needs (the floor), told to the local store every few seconds
 * (store_client_db_replication_floor), which then deletes no generation from it on, by circular
 * logging or after a backup (the engine's eng_db_set_truncate_floor). The §5 rules and the
 * checkpoint still decide what may go; the floor only holds some of it back.
 *
 * What a passive copy needs, from its records (databases/<id> copies.<server>, and
 * copies/<id>/<server> as its copier publishes it):
 * - replaying without lag: every generation after the last it replayed (replayed + 1); with a
 *   replay lag: every generation after the last it inspected (it keeps the rest itself);
 * - being seeded (state Seeding): every generation (only the seed knows where it starts);
 * - nothing when it has no record yet or has replayed nothing (its seed is still to come, from
 *   the .edb of then), when a reseed is asked, when it already needs a generation the active no
 *   longer has (it needs a reseed anyway), or once marked Failed below (until a reseed).
 *
 * Holding truncation back, and the limit (spec §8, decided): a copy that is not Healthy
 * (Suspended, Disconnected, Failed, Seeding, or its server down: no alive/ key) and needs a
 * generation that truncation would otherwise delete holds truncation back. Once it has held it
 * for the hold limit (counted from when this service first saw it holding; a restart of the
 * service counts again), or at once while the log folder's disk is 90% full, it is marked
 * Failed: in databases/<id> copies.<server>.truncation_failed {"reseed", "gen", "message"} (its
 * copier keeps the copy Failed while that mark stands, and `db copy reseed` clears it by
 * bumping "reseed") and in copies/<id>/<server> (state Failed, last_error); it stops holding,
 * and the store's log says so in one warning line. A Healthy copy behind holds truncation back
 * without a limit: it is moving.
 *
 * The store keeps each floor for the hold limit and lets it lapse unless renewed: a replication
 * service that died or lost etcd holds logs back no longer than a copy may. */
#ifndef OM_REPL_FLOOR_H
#define OM_REPL_FLOOR_H

#include <stdint.h>

#include "repl/dag.h"

#define RP_HOLD_LIMIT_DEFAULT (24u * 3600u) /* seconds: one day */
#define RP_HOLD_DISK_PCT      90            /* log disk use at which holding copies fail */

typedef struct rp_floor_cfg {
    rp_dag *dag;
    const char *server;       /* this server */
    const char *store_socket; /* NULL: <runtime>/store.sock */
    uint32_t hold_limit_s;    /* 0: RP_HOLD_LIMIT_DEFAULT */
    uint32_t period_ms;       /* between two rounds; 0: 2000 */
} rp_floor_cfg;

typedef struct rp_floor rp_floor;

/* Starts the thread that computes and sends the floors. */
int rp_floor_start(const rp_floor_cfg *cfg, rp_floor **out);
/* A round now (the directory changed). */
void rp_floor_poke(rp_floor *f);
/* Stops the thread and frees f (NULL: nothing). The store keeps the last floors until they
 * lapse. */
void rp_floor_stop(rp_floor *f);

#endif
