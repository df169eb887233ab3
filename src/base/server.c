/* Control sockets of the daemons (server.h). */
#include "base/server.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <limits.h>
#include <stdlib.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/error.h"
#include "base/log.h"
#include "base/paths.h"
#include "base/proto.h"

int om_server_listen(const char *path, gid_t group, const char *daemon, int *out)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return om_errf(OM_E_InvalidPath, "socket path too long: %s", path);
    strcpy(a.sun_path, path);
    /* A socket file left by a daemon that died: take it over only if nobody answers on it. */
    int probe = -1;
    if (om_proto_connect(path, &probe) == 0) {
        close(probe);
        return om_errf(OM_E_DatabaseInUse, "another %s already listens on %s", daemon, path);
    }
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return om_errf(OM_E_DiskIO, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || chmod(path, 0660) != 0 ||
        listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        return om_errf(om_err_from_errno(e), "listening on %s: %s", path, strerror(e));
    }
    if (group != getegid() && chown(path, (uid_t)-1, group) != 0)
        om_warn("could not give %s to group %u: %s", path, (unsigned)group, strerror(errno));
    *out = fd;
    return 0;
}

int om_peer_allowed(int fd, gid_t group, char *who, size_t wlen)
{
    struct ucred cr;
    socklen_t l = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) != 0) return 0;
    snprintf(who, wlen, "uid %u gid %u pid %d", (unsigned)cr.uid, (unsigned)cr.gid, (int)cr.pid);
    if (cr.uid == 0 || cr.uid == geteuid() || cr.gid == group) return 1;
    struct passwd pw, *pwp = NULL;
    char buf[4096];
    if (getpwuid_r(cr.uid, &pw, buf, sizeof buf, &pwp) != 0 || !pwp) return 0;
    gid_t groups[256];
    int ng = 256;
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &ng) < 0) return 0;
    for (int i = 0; i < ng; i++)
        if (groups[i] == group) return 1;
    return 0;
}

pid_t om_peer_pid(int fd)
{
    struct ucred cr;
    socklen_t l = sizeof cr;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == 0 ? cr.pid : 0;
}

int om_group_id(const char *name, gid_t *gid)
{
    *gid = getegid();
    if (!name) return 0;
    struct group *g = getgrnam(name);
    if (!g) return om_errf(OM_E_InvalidParameter, "no group named '%s'", name);
    *gid = g->gr_gid;
    return 0;
}

void om_server_signals_block(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void *stopper(void *arg)
{
    om_stopper *st = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    sigwait(&set, &sig);
    om_info("%s received: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    pthread_mutex_lock(st->mu);
    *st->stopping = 1;
    pthread_mutex_unlock(st->mu);
    shutdown(st->listen_fd, SHUT_RDWR);
    return NULL;
}

int om_stopper_start(om_stopper *st)
{
    int e = pthread_create(&st->th, NULL, stopper, st);
    return e ? om_errf(OM_E_OutOfMemory, "starting the signal thread: %s", strerror(e)) : 0;
}

void om_stopper_join(om_stopper *st)
{
    pthread_join(st->th, NULL);
}

int om_server_admit(int fd, gid_t group, const char *service, char *who, size_t wlen)
{
    snprintf(who, wlen, "unknown peer");
    if (om_peer_allowed(fd, group, who, wlen)) return 1;
    om_warn("refused a connection from %s: not root, not the daemon's user, not in its group", who);
    om_errf(OM_E_FileAccessDenied, "access denied: %s may not use %s", who, service);
    json_t *r = om_proto_error(OM_E_FileAccessDenied);
    om_proto_send(fd, r, NULL, 0);
    json_decref(r);
    return 0;
}

int om_daemon_start(const char *name, int foreground, char *arun, char *adata, size_t n)
{
    char run[4096], data[4096];
    int rc = om_runtime_dir(run, sizeof run);
    if (!rc) rc = om_data_dir(data, sizeof data);
    if (rc || om_mkdirs(run) || om_mkdirs(data) || n < PATH_MAX || !realpath(run, arun) ||
        !realpath(data, adata)) {
        fprintf(stderr, "%s: cannot use the runtime or data directory: %s\n", name,
                om_err_detail());
        return 1;
    }
    if (foreground) return 0;
    char logp[PATH_MAX + 64];
    snprintf(logp, sizeof logp, "%s/%s.log", adata, name);
    if (daemon(0, 1) != 0) {
        fprintf(stderr, "%s: cannot detach: %s\n", name, strerror(errno));
        return 1;
    }
    int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd >= 0) {
        dup2(fd, 2);
        close(fd);
    }
    return 0;
}

void om_server_accept(const om_stopper *st, int *active, void *(*conn_new)(void *ctx, int fd),
                      void *ctx, void *(*serve)(void *))
{
    for (;;) {
        int fd = accept4(st->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        pthread_mutex_lock(st->mu);
        int stop = *st->stopping;
        if (!stop && fd >= 0 && active) (*active)++;
        pthread_mutex_unlock(st->mu);
        if (stop) {
            if (fd >= 0) close(fd);
            return;
        }
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED) om_error("accept: %s", strerror(errno));
            continue;
        }
        void *arg = conn_new(ctx, fd);
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (!arg || pthread_create(&th, &at, serve, arg) != 0) {
            close(fd);
            free(arg);
            if (active) {
                pthread_mutex_lock(st->mu);
                (*active)--;
                pthread_mutex_unlock(st->mu);
            }
        }
        pthread_attr_destroy(&at);
    }
}
