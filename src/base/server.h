/* What the daemons (ombra-store, ombra-vssd, ombra-repld) share: their start, logging options,
 * signals and sd_notify (below), and their control sockets: listening on a Unix socket of mode
 * 0660 owned by the allowed group, taking over a socket file a dead daemon left, checking each
 * peer with SO_PEERCRED, and the limits that keep a daemon serving when its clients are many,
 * slow, silent or hostile (docs/design.md, "The daemons' limits"):
 *
 *  - at most max_conns connections at once; one more takes the place of the connection silent
 *    the longest between two messages (at least OM_SERVER_EVICT_IDLE_MS; never a writer's or a
 *    session's, om_server_conn_may_idle), which is told why and closed; when there is none it
 *    gets one error frame (OutOfSessions, naming the limit) and is closed;
 *  - out of descriptors (EMFILE, ENFILE) the accept loop uses a reserve descriptor to accept
 *    and refuse the waiting connection the same way, and backs off when it cannot; other
 *    accept errors (ENOBUFS, ENOMEM) back off; each episode is logged once when it begins and
 *    once when it ends, with the count of connections refused;
 *  - a connection silent between messages for idle_ms is closed; a message begun must be whole
 *    within frame_ms (plus 1 s per MiB of its data);
 *  - a message's frames are refused before allocation when they exceed max_data, or when all
 *    connections together would hold more than total_mb (proto.h: om_proto_limits).
 * One accept loop per process: its state is the process's. */
#ifndef OM_BASE_SERVER_H
#define OM_BASE_SERVER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/logging.h"

#define OM_SERVER_MAX_CONNS     512 /* and at most half the process's descriptor limit */
#define OM_SERVER_IDLE_MS       60000
#define OM_SERVER_FRAME_MS      10000
#define OM_SERVER_TOTAL_MB      512
#define OM_SERVER_EVICT_IDLE_MS 1000

/* A zero field takes its default (above; max_data: OM_PROTO_MAX_DATA). */
typedef struct om_server_limits {
    unsigned max_conns; /* connections served at once */
    uint32_t idle_ms;   /* longest silence between two messages of a connection */
    uint32_t frame_ms;  /* longest a begun message may take, plus 1 s per MiB of data */
    size_t max_data;    /* largest data frame of one message */
    size_t total_mb;    /* MiB of frames all connections may be receiving or holding at once */
} om_server_limits;

/* The daemons' limit options, for their --help. */
#define OM_SERVER_LIMITS_USAGE                                                                     \
    "  --max-connections N    connections served at once (default 512, at most half the\n"         \
    "                         descriptor limit); one more is refused with an error\n"              \
    "  --idle-timeout-ms N    closes a connection silent that long between messages (60000)\n"     \
    "  --frame-timeout-ms N   a message begun must be whole within N ms, plus 1 s per MiB\n"       \
    "                         of its data (10000)\n"                                               \
    "  --max-receive-mb N     MiB of messages all connections may be sending at once (512)\n"
/* Parses argv[*i] when it is one of the options above (advancing *i past its value): 1 when it
 * was, 0 when it is another argument, -1 for a bad value (printed on stderr, prog: first). */
int om_server_limit_option(const char *prog, int argc, char **argv, int *i, om_server_limits *lim);

/* Listens on path. `daemon` names the daemon in the error when another one answers there
 * (DatabaseInUse). The socket gets mode 0660 and group `group`. */
int om_server_listen(const char *path, gid_t group, const char *daemon, int *fd);
/* 1 when the peer of fd is root, the daemon's own user, or a member of group; who gets
 * "uid U gid G pid P" for the log. */
int om_peer_allowed(int fd, gid_t group, char *who, size_t wlen);
/* 1 when the peer of fd is root or the daemon's own user: the operations one service of the
 * server calls on another (not the members of the socket's group). */
int om_peer_is_own(int fd);
/* om_peer_allowed, and for a peer that is not: logs the refusal and sends it one error reply
 * (FileAccessDenied naming the service). 1 when the peer may go on; who as in om_peer_allowed. */
int om_server_admit(int fd, gid_t group, const char *service, char *who, size_t wlen);
/* What a daemon's main does after reading its arguments: reads the configuration file (config
 * is --config's value or NULL: base/config.h) and takes its [log] settings into log where the
 * command line gave none. Prints its own error (one line naming the file
 * and line) on stderr; 0 or 1 (the exit status). */
int om_daemon_config(const char *name, const char *config, om_log_opts *log);
/* The daemons' logging options (base/logging.h), for their --help. */
#define OM_DAEMON_LOG_USAGE                                                                        \
    "  --log-target T         where the log goes: auto (default: the file when --log-file\n"       \
    "                         is given or the daemon detaches, else the journal when stderr\n"     \
    "                         is journald's (systemd), else stderr), journal, file, stderr\n"      \
    "  --log-file PATH        the log file (default when detached: $OMBRA_HOME/<daemon>.log);\n"   \
    "                         SIGHUP reopens it at that path (for logrotate); a relative\n"        \
    "                         path is taken from the directory the daemon starts in; a\n"          \
    "                         symbolic link or other non-regular file there is refused\n"          \
    "  --log-level L          the least level logged: debug, info (default), warning, error\n"     \
    "  --version              prints the daemon's version and exits\n"
/* Parses argv[*i] when it is --log-target, --log-file or --log-level (advancing *i past its
 * value) into log: 1 when it was, 0 when it is another argument, -1 for a bad or missing value
 * (printed on stderr, prog: first). A relative --log-file is made absolute against the current
 * directory (log->file then points at a static buffer): the daemon changes to / when it
 * detaches, and SIGHUP reopens the file at that path. */
int om_daemon_log_option(const char *prog, int argc, char **argv, int *i, om_log_opts *log);

/* What a daemon's main does before running: makes the runtime and data directories, makes them
 * absolute into arun/adata (the daemon changes directory when it detaches), sets its logging up
 * from log (NULL: the defaults; log->prog is set to name) and without foreground detaches. A
 * detached daemon whose target is auto and names no file logs to <data>/<name>.log, its stderr
 * following the file. SIGHUP is blocked from here on (the stopper takes it: a SIGHUP during the
 * start does not kill the daemon). The runtime directory is made and checked by
 * om_runtime_dir_make for group (the --group name; NULL: the daemon's own). Prints its own error
 * (one line) on stderr; 0 or 1 (the exit status). */
int om_daemon_start(const char *name, const char *group, int foreground, om_log_opts *log,
                    char *arun, char *adata, size_t n);
/* Tells the service manager how the daemon is (sd_notify(3), for Type=notify units): a
 * printf-formed list of "VAR=value" lines. Nothing happens without $NOTIFY_SOCKET. */
void om_daemon_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The daemon has done its startup work and accepts on its socket: READY=1, and status (one
 * line for `systemctl status`) as STATUS=. Called right before om_server_accept. */
void om_daemon_ready(const char *status);
/* The peer's pid (0 when unknown). */
pid_t om_peer_pid(int fd);
/* The gid of a group name (NULL: the daemon's own group); InvalidParameter for an unknown name. */
int om_group_id(const char *name, gid_t *gid);

/* Stopping on SIGTERM or SIGINT. om_server_signals_block() in the main thread before any
 * other thread starts (so only the stopper receives them; SIGPIPE is ignored); then
 * om_stopper_start() runs a thread that waits for one, tells the service manager STOPPING=1,
 * sets *stopping under mu and shuts the listening socket down so the accept loop returns.
 * om_stopper_join() after the loop. The same thread takes SIGHUP: the log file is reopened at
 * its path (logrotate renamed it), and the daemon goes on. */
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
 * serve(arg), arg = conn_new(ctx, fd) (malloc'd; serve closes fd and frees it), within lim
 * (NULL: the defaults), the thread's om_proto_recv bounded by them. service names the daemon in
 * refusals ("this store"). active (may be NULL): incremented under st->mu for each connection
 * accepted (serve decrements it). */
void om_server_accept(const om_stopper *st, const char *service, const om_server_limits *lim,
                      int *active, void *(*conn_new)(void *ctx, int fd), void *ctx,
                      void *(*serve)(void *));
/* For the connection the calling thread serves: its peer may stay silent between messages as
 * long as it likes (a registered writer, an open session), it is not a passing client. */
void om_server_conn_may_idle(void);
/* A warning about a client (refused, bad message, too slow), at most a few lines a second:
 * what is dropped is counted in the next line that gets through, so clients cannot flood the
 * log. */
void om_server_warn_client(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
