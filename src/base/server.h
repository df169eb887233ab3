/* What the daemons (ombra-store, ombra-vssd) share about their control sockets: listening on a
 * Unix socket of mode 0660 owned by the allowed group, taking over a socket file a dead daemon
 * left, and checking each peer with SO_PEERCRED. */
#ifndef OM_BASE_SERVER_H
#define OM_BASE_SERVER_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

/* Listens on path. `daemon` names the daemon in the error when another one answers there
 * (DatabaseInUse). The socket gets mode 0660 and group `group`. */
int om_server_listen(const char *path, gid_t group, const char *daemon, int *fd);
/* 1 when the peer of fd is root, the daemon's own user, or a member of group; who gets
 * "uid U gid G pid P" for the log. */
int om_peer_allowed(int fd, gid_t group, char *who, size_t wlen);
/* om_peer_allowed, and for a peer that is not: logs the refusal and sends it one error reply
 * (FileAccessDenied naming the service). 1 when the peer may go on; who as in om_peer_allowed. */
int om_server_admit(int fd, gid_t group, const char *service, char *who, size_t wlen);
/* What a daemon's main does before running: makes the runtime and data directories, makes them
 * absolute into arun/adata (the daemon changes directory when it detaches), and without
 * foreground detaches with stderr appended to <data>/<name>.log. Prints its own error on
 * stderr; 0 or 1 (the exit status). */
int om_daemon_start(const char *name, int foreground, char *arun, char *adata, size_t n);
/* The peer's pid (0 when unknown). */
pid_t om_peer_pid(int fd);
/* The gid of a group name (NULL: the daemon's own group); InvalidParameter for an unknown name. */
int om_group_id(const char *name, gid_t *gid);

/* Stopping on SIGTERM or SIGINT. om_server_signals_block() in the main thread before any
 * other thread starts (so only the stopper receives them; SIGPIPE is ignored); then
 * om_stopper_start() runs a thread that waits for one, sets *stopping under mu and shuts the
 * listening socket down so the accept loop returns. om_stopper_join() after the loop. */
typedef struct om_stopper {
    pthread_mutex_t *mu;
    int *stopping;
    int listen_fd;
    pthread_t th;
} om_stopper;

void om_server_signals_block(void);
int om_stopper_start(om_stopper *st);
void om_stopper_join(om_stopper *st);

/* The accept loop, until *st->stopping: each connection is served in a detached thread by
 * serve(arg), arg = conn_new(ctx, fd) (malloc'd; serve closes fd and frees it). active (may be
 * NULL): incremented under st->mu for each connection accepted (serve decrements it). */
void om_server_accept(const om_stopper *st, int *active, void *(*conn_new)(void *ctx, int fd),
                      void *ctx, void *(*serve)(void *));

#endif
