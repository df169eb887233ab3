/* The passive side of replication: one copier per passive copy this server holds. It runs in
 * its own thread:
 *
 *   connect to the active's ombra-repld (TLS, the active's certificate checked by name)
 *   seed when the copy has no .edb yet, or a reseed was asked (the .edb under a shadow copy
 *     streamed whole, written as <edb>.seeding, checked page by page, renamed into place)
 *   loop: log.wait for the next closed generation (a long poll: no timer)
 *         block mode (the default, when the active's source knows log.stream): once caught up,
 *           the generation the active writes is streamed as it grows into <base>.stream in
 *           the copy's folder (never its log folder), appended and synced; when it closes the
 *           rest comes, the whole is checked against the closed file's hash and goes the way
 *           of a fetched one (a mismatch, e.g. bytes the active lost in a crash, is fetched
 *           whole instead)
 *         log.get each one -> written under a temporary name, synced, inspected (checksums,
 *           chain, log and database signatures: the engine's validator), renamed into the
 *           copy's log folder, the folder synced; a damaged one is fetched again
 *         replay every inspected generation older than the replay lag into the passive .edb
 *         status to the directory (copies/<db id>/<server>)
 *
 * States (spec §8): Initializing, Seeding, Healthy, Suspended (the directory's copy record
 * says so: nothing copied or replayed), Disconnected (the active cannot be reached: retried
 * with backoff), Failed (the copy cannot go on by itself: a divergent or missing generation;
 * a reseed replaces it). */
#ifndef OM_REPL_COPIER_H
#define OM_REPL_COPIER_H

#include <pthread.h>
#include <stdint.h>

#include "repl/dag.h"
#include "repl/tls.h"

typedef struct rp_copy_status {
    char state[16];
    char name[80], base[4]; /* the database's, from its record ("" until read) */
    uint32_t generated, copied, inspected, replayed; /* last generation of each */
    int block;               /* block mode: the open generation is streamed */
    uint32_t streamed_gen;   /* block mode: the open generation held in part (0: none) */
    uint64_t streamed_bytes; /* ... its file's bytes held durably */
    uint32_t streamed_len;   /* ... its record stream's bytes among them */
    char last_error[512];
    uint32_t epoch;             /* of active/<id>, which the copy follows (0: not yet known) */
    int activated;              /* rp_copier_activate succeeded: the copier copies no more */
    char edb[4200], logs[4200]; /* the copy's files ("" until the records are read) */
} rp_copy_status;

typedef struct rp_copier rp_copier;

typedef struct rp_copier_cfg {
    rp_dag *dag;
    rp_tls *tls;
    const char *server;   /* this server */
    const char *data_dir; /* $OMBRA_HOME: copies go under dbs/<name>/ */
    char db_id[40];
} rp_copier_cfg;

int rp_copier_start(const rp_copier_cfg *cfg, rp_copier **out);
/* Wakes the copier to reread its records (a change in the directory). */
void rp_copier_poke(rp_copier *c);
/* Stops the thread and frees c (its files stay). */
void rp_copier_stop(rp_copier *c);
void rp_copier_status(rp_copier *c, rp_copy_status *st);
const char *rp_copier_db(const rp_copier *c);

/* Activation (a switchover or a failover: the active manager calls it on the server whose copy
 * becomes the active, before the transaction that names it active/<id>).
 *
 *   1. the attempt to copy the remaining logs: from the active active/<id> names now, within
 *      timeout_ms (connecting included), the closed generations after the copy's newest,
 *      through through_gen (0: as many as it gives), each inspected as usual; with use_stream
 *      and through_gen 0 also what the active's open generation holds now (block mode). An
 *      active that does not answer is no error: the copy goes on with what it holds;
 *   2. every generation the copy holds is replayed (its replay lag does not apply);
 *   3. the passive handle is closed (the copy is durable: a Dirty .edb and its logs, which
 *      eng_db_open soft-recovers and mounts, continuing the same log stream);
 *   4. with use_stream (synchronous copies), when <base>.stream holds the beginning of the
 *      generation after the newest one held, it becomes the log folder's <base>.log, zero-filled
 *      to a generation's size and synced (rp_stream_promote), so the mount's recovery replays
 *      every commit it holds.
 * Then the copier copies nothing more (its status says activated) until rp_copier_stop.
 *
 * r->last_gen: the newest whole generation the copy holds (replayed); r->used_stream: step 4
 * happened; r->lost_from: the first generation of the old active this copy may not hold whole,
 * last_gen + 1, which is the since_gen of the new epoch (with used_stream too: the mount closes
 * that partial generation and starts the next one, so it is not the old active's). An error
 * (r->error says it, the return code is its number) leaves the copy's files as they were and the
 * copier going on as before: a copy suspended, waiting for a reseed, without a database yet, short
 * of through_gen, or one that cannot replay what it holds. Not concurrently with rp_copier_stop. */
typedef struct rp_activate_result {
    uint32_t last_gen;
    int used_stream;
    uint32_t lost_from;
    char error[512];
} rp_activate_result;
int rp_copier_activate(rp_copier *c, uint32_t through_gen, int use_stream, uint32_t timeout_ms,
                       rp_activate_result *r);

#endif
