/* ombra-store: the store service. Hosts the databases of one server, mounts those the
 * directory marks mounted at start (recovering any in Dirty Shutdown), and serves the store
 * protocol (docs/protocol.md) on store.sock, a thread per connection.
 *
 * The databases, mounted or not, are a registry (registry.h has its rules); requests on a
 * database hold a reference on it, registry changes are serialised and saved in the directory
 * before they are acknowledged.
 * The directory is the file $OMBRA_HOME/directory.json, or etcd when that file says so (a
 * server that joined a DAG: ombra dag add-server). etcd is reached in the background, retried
 * with backoff (0.5 s doubling to 30 s) while it does not answer, each failure one error line in
 * the log; meanwhile the store serves "status" (which says why) and refuses everything else
 * with EtcdUnavailable. Only the databases whose active copy the DAG names on this server are
 * mounted.
 * SIGTERM or SIGINT: stop accepting, let running requests finish, dismount every database
 * (Clean Shutdown) keeping its "mounted" mark, so the next start mounts it again. */
#ifndef OM_STORE_SERVICE_H
#define OM_STORE_SERVICE_H

#include "base/server.h"

typedef struct store_opts {
    const char *server;       /* this server's name */
    const char *etcd;         /* the DAG's etcd endpoints, in place of directory.json's (the
                               * file keeps which DAG and server; NULL or "": the file's) */
    int server_given;         /* it came from --server (else the host name: the directory file's
                                 own name wins when it has one) */
    const char *runtime_dir;  /* store.sock goes here */
    const char *data_dir;     /* directory.json and default database folders */
    const char *group;        /* allowed group (NULL: the daemon's own group) */
    unsigned checkpoint_gens; /* checkpoint depth in log generations (0: the engine's default) */
    unsigned cache_mb;        /* dirty pages kept per database before a checkpoint (0: default) */
    om_server_limits limits;  /* connections (base/server.h; zeros: the defaults) */
} store_opts;

/* Runs until SIGTERM/SIGINT; 0 after a clean shutdown. */
int store_run(const store_opts *o);

#endif
