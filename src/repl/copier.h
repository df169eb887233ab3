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

#endif
