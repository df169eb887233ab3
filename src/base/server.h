/* What the daemons (ombra-store, ombra-vssd) share about their control sockets: listening on a
 * Unix socket of mode 0660 owned by the allowed group, taking over a socket file a dead daemon
 * left, and checking each peer with SO_PEERCRED. */
#ifndef OM_BASE_SERVER_H
#define OM_BASE_SERVER_H

#include <stddef.h>
#include <sys/types.h>

/* Listens on path. `daemon` names the daemon in the error when another one answers there
 * (DatabaseInUse). The socket gets mode 0660 and group `group`. */
int om_server_listen(const char *path, gid_t group, const char *daemon, int *fd);
/* 1 when the peer of fd is root, the daemon's own user, or a member of group; who gets
 * "uid U gid G pid P" for the log. */
int om_peer_allowed(int fd, gid_t group, char *who, size_t wlen);
/* The peer's pid (0 when unknown). */
pid_t om_peer_pid(int fd);
/* The gid of a group name (NULL: the daemon's own group); InvalidParameter for an unknown name. */
int om_group_id(const char *name, gid_t *gid);

#endif
