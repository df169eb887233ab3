/* The active side of replication: what a peer's copier is served (wire.h has the protocol). */
#ifndef OM_REPL_SOURCE_H
#define OM_REPL_SOURCE_H

#include <jansson.h>
#include <stdint.h>

#include "repl/dag.h"
#include "repl/tls.h"

typedef struct rp_source {
    rp_dag *dag;
    const char *server;       /* this server's name */
    const char *store_socket; /* NULL: <runtime>/store.sock */
    const char *data_dir;     /* $OMBRA_HOME: this server's passive copies, which may seed
                                 another server's copy (reseed.h); NULL: none */
    volatile int stopping;
    /* Requests of another part of ombra-repld (the active manager's am.*): 1 when op is one of
     * them (served on c, *rc its result), 0 to let the source say it is unknown. */
    int (*peer_op)(void *ctx, rp_conn *c, json_t *req, int *rc);
    void *peer_ctx;
    uint32_t test_damage_gen;    /* tests: this generation is damaged once in transit */
    uint32_t test_seed_pause_ms; /* tests: a pause after each part of a seed (a seed cut short) */
} rp_source;

/* Serves requests on c until the peer closes or fails; c stays the caller's. */
void rp_source_serve(rp_source *s, rp_conn *c);

#endif
