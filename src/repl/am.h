/* The active manager (spec §8; Exchange's Active Manager): one per ombra-repld.
 *
 * Every server's active manager, at each renewal of its server's lease (repld.c):
 *   - renews its store's fencing deadline (store op dag.lease: "may commit until T", T before
 *     etcd can expire the lease), and
 *   - keeps activelease/<db id> = {server, epoch}, bound to the server's lease, for each
 *     database its store has mounted and takes commits of at the epoch active/<db id> names
 *     (written only while active/<db id> names this server at that epoch, deleted only while
 *     the key is still this server's: a deposed store may say it takes commits a while).
 * It serves two requests of the primary over the replication port, to the pam holder only:
 * am.handoff (this server's store stops taking commits of a database, dismounts it and closes
 * its last generation) and am.activate (this server's copy copies, inspects and replays what it
 * can get, then waits for the directory to name it active) — am.resume gives the copy back to
 * copying. am.position (any member) says how far the copy is and whether the store answers.
 *
 * The primary active manager (the server holding the pam key) alone changes active/<db id>,
 * in an etcd transaction that compares the revision it read:
 *   switchover  moves/<db id> asked by `ombra db move`: the active hands off, the target copy
 *               replays through the handed-off generation, the directory names the target
 *               (epoch + 1, since_gen G + 1) and its copy folder as the active copy's files;
 *               any failure before that names the old active again (epoch + 1: it remounts).
 *   failover    activelease/<db id> gone (the active's server lease lapsed, its store died, or
 *               it stopped taking commits) for a lease while the record marks the active's
 *               copy mounted: the best copy (mountable under the mount dial, then shortest copy
 *               queue, replay queue, activation preference) copies what the lost server still
 *               gives, and is named active when what it lacks is within the dial
 *               (lossless 0, good 6, best 12 generations; nothing acknowledged is lacking when
 *               it held the streamed part under --sync-copies).
 * Each move ends in lastmove/<db id> {"kind", "from", "to", "epoch", "since_gen", "lost_gens",
 * "when_ns", "took_ms", "refused_ms", "why", "error"}. */
#ifndef OM_REPL_AM_H
#define OM_REPL_AM_H

#include <jansson.h>
#include <stdint.h>

#include "repl/copier.h"
#include "repl/dag.h"
#include "repl/tls.h"

typedef struct rp_am rp_am;

typedef struct rp_am_cfg {
    rp_dag *dag;
    rp_tls *tls;
    const char *server;       /* this server */
    const char *store_socket; /* NULL: <runtime>/store.sock */
    int lease_s;              /* the server's lease */
    /* repld's copiers: take_copier takes the copier of db_id out of repld's hands (its
     * reconciliation leaves the database alone until it is given back); NULL when there is
     * none. give_copier stops and frees it and lets reconciliation go on. */
    rp_copier *(*take_copier)(void *ctx, const char *db_id);
    void (*give_copier)(void *ctx, const char *db_id, rp_copier *c);
    /* The status of the copier of db_id now (0), or DatabaseNotFound when there is none. */
    int (*copy_status)(void *ctx, const char *db_id, rp_copy_status *st);
    void *ctx;
} rp_am_cfg;

int rp_am_start(const rp_am_cfg *cfg, rp_am **out);
/* Stops its thread and gives the activated copies back; a itself stays (a peer thread may be
 * in rp_am_serve until the process exits). NULL: nothing. */
void rp_am_stop(rp_am *a);

/* After a successful keepalive of lease (sent at sent_mono_ns, CLOCK_MONOTONIC): the store's
 * deadline and the activelease keys. */
void rp_am_lease_round(rp_am *a, int64_t lease, uint64_t sent_mono_ns);
/* Whether this server is the primary now (pam_round), and its term. */
void rp_am_set_primary(rp_am *a, int primary, int64_t term);
/* A change in the directory: the primary looks again. */
void rp_am_poke(rp_am *a);
/* A peer's request: 1 when op is the active manager's (then served on c, *rc its result). */
int rp_am_serve(rp_am *a, rp_conn *c, json_t *req, int *rc);

/* am.activate on this server: req {"db", "through_gen", "use_stream", "timeout_ms"} ->
 * {"last_gen", "used_stream", "lost_from", "edb", "logs"}: the copy activated (copier.h), waiting
 * to be named active (given back to copying after 30 s, or at am.resume). */
int rp_am_activate(rp_am *a, json_t *req, json_t **reply);

/* The mount dial's generations (lossless 0, good 6, best 12; -1 for another name). */
int rp_am_dial_gens(const char *dial);

#endif
