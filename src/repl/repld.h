/* ombra-repld, the replication service of one server of a DAG (ARCHITECTURE.md, "Several
 * servers"): it keeps the server's lease in etcd (alive/<server>), serves the active copies of
 * this server to the other servers' copiers (source.h), runs a copier for every passive copy the
 * directory gives this server (copier.h), keeps the local store's logs that those copies
 * still need (floor.h: truncation across copies), and answers `status` on its local admin socket
 * (<runtime>/repl.sock, the store's socket conventions: mode 0660, SO_PEERCRED).
 *
 * The directory is watched, not polled: a change of databases/ or active/ reconciles the
 * copiers at once. A lost etcd connection is retried with backoff; the copies go on with what
 * they know, and `status` says that etcd is unreachable. */
#ifndef OM_REPL_REPLD_H
#define OM_REPL_REPLD_H

#include "base/server.h"

typedef struct rp_repld_opts {
    const char *server;           /* this server's name (its certificate's) */
    const char *listen;           /* ADDR:PORT of the replication port */
    const char *etcd;             /* etcd endpoints */
    const char *dag;              /* NULL: the only DAG of that etcd */
    const char *group;            /* the admin socket's group (NULL: the daemon's) */
    const char *data_dir;         /* $OMBRA_HOME: dag/ (certificates), dbs/ (passive copies) */
    const char *runtime_dir;      /* repl.sock */
    const char *store_socket;     /* NULL: <runtime>/store.sock */
    int lease_s;                  /* the server's lease (default 5 s) */
    unsigned backup_replay_queue; /* generations copied, not replayed, a backed-up copy may have */
    int backup_replay_queue_set;  /* (else RP_BACKUP_REPLAY_QUEUE) */
    unsigned hold_limit_s; /* how long a copy may hold log truncation back (floor.h; 0: 1 day) */
    om_server_limits limits;
} rp_repld_opts;

/* Runs until SIGTERM or SIGINT; 0, or the error that kept it from starting. */
int rp_repld_run(const rp_repld_opts *o);

#endif
