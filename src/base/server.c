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
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "base/bytes.h"
#include "base/config.h"
#include "base/error.h"
#include "base/logging.h"
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

int om_peer_is_own(int fd)
{
    struct ucred cr;
    socklen_t l = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) != 0) return 0;
    return cr.uid == 0 || cr.uid == geteuid();
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
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* SIGHUP: the log file reopened at its path, and one line in the new file (so it appears at
 * once, and says the reopen happened). */
static void log_reopen(void)
{
    static const char *const targets[] = {"auto", "the journal", "a file", "stderr"};
    enum om_log_target t = om_log_target_now();
    if (t != OM_LOG_FILE)
        om_info("SIGHUP received: logging to %s, no file to reopen", targets[t]);
    else if (om_log_reopen_now())
        om_error("SIGHUP received: %s", om_err_detail());
    else
        om_info("SIGHUP received: log file reopened");
}

static void *stopper(void *arg)
{
    om_stopper *st = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    int sig = 0;
    while (!sigwait(&set, &sig) && sig == SIGHUP)
        log_reopen();
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    om_daemon_notify("STOPPING=1\nSTATUS=stopping (%s)", name);
    om_info("%s received: shutting down", name);
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
    om_server_warn_client("refused a connection from %s: not root, not the daemon's user, not in "
                          "its group",
                          who);
    om_errf(OM_E_FileAccessDenied, "access denied: %s may not use %s", who, service);
    json_t *r = om_proto_error(OM_E_FileAccessDenied);
    om_proto_send(fd, r, NULL, 0);
    json_decref(r);
    return 0;
}

int om_daemon_config(const char *name, const char *config, om_log_opts *log)
{
    if (om_conf_load(config) != 0) {
        fprintf(stderr, "%s: %s\n", name, om_err_detail());
        return 1;
    }
    /* [log] below the command line's options (the values were checked when the file was
     * read; a target left at auto is taken as not given). */
    const char *v;
    if (log->target == OM_LOG_AUTO && (v = om_conf("log", "target")))
        om_log_target_parse(v, &log->target);
    if (log->level < 0 && (v = om_conf("log", "level"))) om_log_level_parse(v, &log->level);
    if (!log->file) log->file = om_conf("log", "file");
    return 0;
}

/* --log-file's path made absolute against the directory the daemon starts in: a detached
 * daemon changes to /, and a relative path would then be reopened there at SIGHUP. */
static int log_file_absolute(const char *v, const char **file)
{
    static char abs[PATH_MAX];
    if (*v == '/') {
        *file = v;
        return 0;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return om_errf(om_err_from_errno(errno), "%s: the current directory: %s", v,
                       strerror(errno));
    int n = snprintf(abs, sizeof abs, "%s%s%s", cwd, strcmp(cwd, "/") ? "/" : "", v);
    if (n < 0 || (size_t)n >= sizeof abs)
        return om_errf(OM_E_InvalidPath, "%.64s...: path too long", v);
    *file = abs;
    return 0;
}

int om_daemon_log_option(const char *prog, int argc, char **argv, int *i, om_log_opts *log)
{
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    int rc;
    if (!strcmp(a, "--log-target"))
        rc = v ? om_log_target_parse(v, &log->target) : -1;
    else if (!strcmp(a, "--log-level"))
        rc = v ? om_log_level_parse(v, &log->level) : -1;
    else if (!strcmp(a, "--log-file"))
        rc = v && *v ? log_file_absolute(v, &log->file) : -1;
    else
        return 0;
    if (rc) {
        fprintf(stderr, "%s: %s: %s\n", prog, a,
                v ? (*v ? om_err_detail() : "an empty path") : "a value is missing");
        return -1;
    }
    ++*i;
    return 1;
}

int om_daemon_start(const char *name, const char *group, int foreground, om_log_opts *log,
                    char *arun, char *adata, size_t n)
{
    char run[4096], data[4096];
    gid_t gid;
    /* Before any thread: each thread made from here inherits the mask, so SIGHUP (logrotate)
     * can only reach the stopper's sigwait, never kill the daemon by its default action. */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hup, NULL);
    int rc = om_group_id(group, &gid);
    if (!rc) rc = om_runtime_dir(run, sizeof run);
    if (!rc) rc = om_data_dir(data, sizeof data);
    if (!rc) rc = om_runtime_dir_make(run, gid);
    if (rc || om_mkdirs(data) || n < PATH_MAX || !realpath(run, arun) || !realpath(data, adata)) {
        fprintf(stderr, "%s: cannot use the runtime or data directory: %s\n", name,
                om_err_detail());
        return 1;
    }
    om_log_opts lo = log ? *log : (om_log_opts){.level = -1};
    lo.prog = name;
    char logp[PATH_MAX + 64];
    if (!foreground && (lo.target == OM_LOG_AUTO || lo.target == OM_LOG_FILE) &&
        (!lo.file || !*lo.file)) {
        snprintf(logp, sizeof logp, "%s/%s.log", adata, name);
        lo.file = logp;
    }
    /* Detached, the terminal goes away: stderr follows the file, whatever writes on it. */
    lo.stderr_to_file = !foreground;
    /* Set up before detaching, so a file that cannot be opened is said on the terminal. */
    if (om_log_setup(&lo)) {
        fprintf(stderr, "%s: %s\n", name, om_err_detail());
        return 1;
    }
    if (foreground) return 0;
    if (daemon(0, 1) != 0) {
        om_error("cannot detach: %s", strerror(errno));
        return 1;
    }
    /* stdin and stdout let go of the terminal or pipe the daemon was started from (a caller
     * that reads them to their end is not kept waiting); stderr is the log file already. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        close(null);
    }
    return 0;
}

void om_daemon_notify(const char *fmt, ...)
{
    if (!getenv("NOTIFY_SOCKET")) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int rc = sd_notify(0, msg);
    if (rc < 0) om_warn("sd_notify to $NOTIFY_SOCKET: %s", strerror(-rc));
}

void om_daemon_ready(const char *status)
{
    om_daemon_notify("READY=1\nSTATUS=%s", status);
}

/* ---- limits ---- */

int om_server_limit_option(const char *prog, int argc, char **argv, int *i, om_server_limits *lim)
{
    static const struct {
        const char *name;
        unsigned long max;
    } opts[] = {{"--max-connections", 1000000},
                {"--idle-timeout-ms", 604800000},
                {"--frame-timeout-ms", 604800000},
                {"--max-receive-mb", 1048576}};
    const char *a = argv[*i];
    size_t k = 0;
    while (k < sizeof opts / sizeof *opts && strcmp(a, opts[k].name))
        k++;
    if (k == sizeof opts / sizeof *opts) return 0;
    char *end = NULL;
    unsigned long v = *i + 1 < argc ? strtoul(argv[*i + 1], &end, 10) : 0;
    if (!end || *end || !*argv[*i + 1] || v < 1 || v > opts[k].max) {
        fprintf(stderr, "%s: %s takes a number from 1 to %lu, not '%s'\n", prog, a, opts[k].max,
                *i + 1 < argc ? argv[*i + 1] : "");
        return -1;
    }
    ++*i;
    if (k == 0) lim->max_conns = (unsigned)v;
    if (k == 1) lim->idle_ms = (uint32_t)v;
    if (k == 2) lim->frame_ms = (uint32_t)v;
    if (k == 3) lim->total_mb = v;
    return 1;
}

void om_server_conn_may_idle(void)
{
    om_proto_limits *l = om_proto_thread_limits();
    if (l) l->idle_ms = 0;
}

void om_server_warn_client(const char *fmt, ...)
{
    /* A few lines a second: a client that misbehaves in a loop costs one line per second, and
     * the count of what was dropped says how hard it tried. */
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static time_t window;
    static unsigned lines, dropped;
    enum { PER_SECOND = 5 };
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&mu);
    if (now.tv_sec != window) {
        window = now.tv_sec;
        lines = 0;
    }
    int print = lines < PER_SECOND;
    unsigned before = dropped;
    if (print) {
        lines++;
        dropped = 0;
    } else
        dropped++;
    pthread_mutex_unlock(&mu);
    if (!print) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (before)
        om_warn("%s (and %u more client warnings not logged)", msg, before);
    else
        om_warn("%s", msg);
}

/* ---- the accept loop ---- */

/* The process's connections (one accept loop per process): threads may outlive the loop. */
typedef struct conn_slot { /* on the stack of the thread that serves the connection */
    int fd;
    int evicted;
    om_proto_limits *lim;
    struct conn_slot *prev, *next;
} conn_slot;

static struct {
    pthread_mutex_t mu;
    unsigned n; /* connections being served, their threads not yet ended */
    conn_slot *conns;
    om_server_limits lim;
    om_proto_budget budget;
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER, .budget = OM_PROTO_BUDGET_INIT(0)};

typedef struct job {
    void *(*serve)(void *);
    void *arg;
    int fd;
} job;

static void *serve_bounded(void *p)
{
    job j = *(job *)p;
    free(p);
    om_proto_limits pl = {.idle_ms = srv.lim.idle_ms,
                          .frame_ms = srv.lim.frame_ms,
                          .max_data = srv.lim.max_data,
                          .budget = &srv.budget,
                          .idle_mu = &srv.mu};
    conn_slot me = {.fd = j.fd, .lim = &pl};
    pthread_mutex_lock(&srv.mu);
    me.next = srv.conns;
    if (srv.conns) srv.conns->prev = &me;
    srv.conns = &me;
    pthread_mutex_unlock(&srv.mu);
    om_proto_bind_limits(&pl);
    j.serve(j.arg);
    om_proto_bind_limits(NULL);
    pthread_mutex_lock(&srv.mu);
    if (me.prev)
        me.prev->next = me.next;
    else
        srv.conns = me.next;
    if (me.next) me.next->prev = me.prev;
    srv.n--;
    pthread_mutex_unlock(&srv.mu);
    return NULL;
}

static uint64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* At the connection limit: the connection silent the longest between two messages, for at
 * least OM_SERVER_EVICT_IDLE_MS, makes room for the new one (it is told why and its thread ends
 * at once), so that idle connections cannot keep every client out. Connections that may idle
 * (writers, sessions) are never chosen. Under srv.mu; 1 when one was closed. */
static int evict_idle(unsigned max)
{
    int64_t now = (int64_t)mono_ms(), oldest = 0;
    conn_slot *victim = NULL;
    for (conn_slot *c = srv.conns; c; c = c->next) {
        int64_t since = atomic_load(&c->lim->idle_since_ms);
        if (c->evicted || !c->lim->idle_ms || !since || now - since < OM_SERVER_EVICT_IDLE_MS)
            continue;
        if (!victim || since < oldest) {
            victim = c;
            oldest = since;
        }
    }
    if (!victim) return 0;
    victim->evicted = 1;
    om_errf(OM_E_OutOfSessions,
            "connection closed after %lld ms idle: the daemon serves at most %u connections "
            "at once and needed this one's place. HINT: connect again when you have a request",
            (long long)(now - oldest), max);
    json_t *r = om_proto_error(OM_E_OutOfSessions);
    char *s = r ? json_dumps(r, JSON_COMPACT) : NULL;
    if (s) { /* without blocking: the socket is another thread's, and idle */
        uint8_t h[4];
        om_put32(h, (uint32_t)strlen(s));
        if (send(victim->fd, h, 4, MSG_DONTWAIT | MSG_NOSIGNAL) == 4)
            send(victim->fd, s, strlen(s), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    free(s);
    json_decref(r);
    shutdown(victim->fd, SHUT_RDWR);
    return 1;
}

/* One error frame (the thread's error, err) to a connection not served, then close. The frame
 * is small and the socket new: it never blocks the accept loop. */
static void refuse(int fd, int err)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    json_t *r = om_proto_error(err);
    if (r) om_proto_send(fd, r, NULL, 0);
    json_decref(r);
    close(fd);
}

static void sleep_ms(unsigned ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static void limits_settle(const om_server_limits *in)
{
    om_server_limits l = in ? *in : (om_server_limits){0};
    /* Descriptors are shared with the databases, logs and backups: connections get half. */
    struct rlimit rl;
    unsigned by_fds = 1u << 30;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        by_fds = rl.rlim_cur / 2 > 4 ? (unsigned)(rl.rlim_cur / 2) : 4;
    if (!l.max_conns) l.max_conns = OM_SERVER_MAX_CONNS < by_fds ? OM_SERVER_MAX_CONNS : by_fds;
    if (!l.idle_ms) l.idle_ms = OM_SERVER_IDLE_MS;
    if (!l.frame_ms) l.frame_ms = OM_SERVER_FRAME_MS;
    if (!l.max_data || l.max_data > OM_PROTO_MAX_DATA) l.max_data = OM_PROTO_MAX_DATA;
    if (!l.total_mb) l.total_mb = OM_SERVER_TOTAL_MB;
    pthread_mutex_lock(&srv.mu);
    srv.lim = l;
    pthread_mutex_unlock(&srv.mu);
    pthread_mutex_lock(&srv.budget.mu);
    srv.budget.limit = l.total_mb << 20;
    pthread_mutex_unlock(&srv.budget.mu);
    om_info("connections: at most %u at once, closed after %u ms idle or %u ms for a message "
            "begun, %zu MiB of messages at once",
            l.max_conns, l.idle_ms, l.frame_ms, l.total_mb);
}

/* An episode of refusals (accept failing, or the connection limit reached): logged when it
 * begins and when it ends, never per connection. */
typedef struct episode {
    int on;
    unsigned refused;
    uint64_t since_ms, last_ms; /* began; last refusal */
} episode;

/* An episode ends after this long without a refusal: a limit reached again and again (a flood)
 * stays one episode. */
#define EPISODE_QUIET_MS 5000

static void episode_end(episode *e, const char *what)
{
    if (!e->on || mono_ms() - e->last_ms < EPISODE_QUIET_MS) return;
    om_info("%s: over after %llu ms, %u connections refused meanwhile", what,
            (unsigned long long)(mono_ms() - e->since_ms), e->refused);
    *e = (episode){0};
}

/* accept(2) failed with e. Out of descriptors, the reserve descriptor makes room to accept the
 * waiting connection: served when a descriptor is free again by then, else refused with an
 * error frame (the client learns why; the backlog does not fill with connections that would
 * time out). When that cannot be done the loop sleeps, so the error never spins. Returns the
 * connection to serve, or -1. */
static int accept_failed(int listen_fd, int e, int *reserve, episode *ep, unsigned *backoff)
{
    if (!ep->on) {
        om_error("accept: %s: refusing connections until it clears (logged once)", strerror(e));
        *ep = (episode){.on = 1, .since_ms = mono_ms()};
    }
    if ((e == EMFILE || e == ENFILE) && *reserve >= 0) {
        close(*reserve);
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        *reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && *reserve >= 0) return fd; /* room again */
        if (fd >= 0) {
            ep->refused++;
            ep->last_ms = mono_ms();
            om_errf(OM_E_OutOfSessions,
                    "the daemon is out of file descriptors (%s): connection refused. HINT: "
                    "retry later; raise its limit (ulimit -n) if this lasts",
                    strerror(e));
            refuse(fd, OM_E_OutOfSessions);
            *reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
            return -1; /* progress: no sleep while refusals drain the backlog */
        }
    }
    if (*reserve < 0) *reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ep->last_ms = mono_ms();
    sleep_ms(*backoff);
    *backoff = *backoff * 2 > 200 ? 200 : *backoff * 2;
    return -1;
}

void om_server_accept(const om_stopper *st, const char *service, const om_server_limits *lim,
                      int *active, void *(*conn_new)(void *ctx, int fd), void *ctx,
                      void *(*serve)(void *))
{
    limits_settle(lim);
    int reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
    episode fail = {0}, full = {0};
    unsigned backoff = 5;
    for (;;) {
        int fd = accept4(st->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        int e = errno;
        pthread_mutex_lock(st->mu);
        int stop = *st->stopping;
        pthread_mutex_unlock(st->mu);
        if (stop) {
            if (fd >= 0) close(fd);
            break;
        }
        if (fd < 0 && e != EINTR && e != ECONNABORTED && e != EAGAIN)
            fd = accept_failed(st->listen_fd, e, &reserve, &fail, &backoff);
        if (fd < 0) continue;
        episode_end(&fail, "accept");
        backoff = 5;
        /* A peer that stops reading must not hold a thread (and a reply's memory) forever. */
        struct timeval tv = {.tv_sec = srv.lim.frame_ms / 1000,
                             .tv_usec = (suseconds_t)(srv.lim.frame_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        pthread_mutex_lock(&srv.mu);
        unsigned max = srv.lim.max_conns;
        /* Evicted connections leave at once: until their threads end, the count may pass max by
         * those few. */
        int over = srv.n >= max && !evict_idle(max);
        if (!over) srv.n++;
        pthread_mutex_unlock(&srv.mu);
        if (over) {
            if (!full.on) {
                om_warn("%u connections at once, the limit: refusing new ones until some end "
                        "(logged once)",
                        max);
                full = (episode){.on = 1, .since_ms = mono_ms()};
            }
            full.refused++;
            full.last_ms = mono_ms();
            om_errf(OM_E_OutOfSessions,
                    "%s serves at most %u connections at once and has that many: connection "
                    "refused. HINT: retry later, or raise --max-connections",
                    service, max);
            refuse(fd, OM_E_OutOfSessions);
            continue;
        }
        episode_end(&full, "connection limit");
        if (active) {
            pthread_mutex_lock(st->mu);
            (*active)++;
            pthread_mutex_unlock(st->mu);
        }
        void *arg = conn_new(ctx, fd);
        job *j = arg ? malloc(sizeof *j) : NULL;
        if (j) *j = (job){.serve = serve, .arg = arg, .fd = fd};
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int te = j ? pthread_create(&th, &at, serve_bounded, j) : ENOMEM;
        pthread_attr_destroy(&at);
        if (te) {
            free(j);
            free(arg);
            om_server_warn_client("cannot start a thread for a connection: %s", strerror(te));
            om_errf(OM_E_OutOfMemory,
                    "%s cannot serve one more connection now (%s). HINT: "
                    "retry later",
                    service, strerror(te));
            refuse(fd, OM_E_OutOfMemory);
            pthread_mutex_lock(&srv.mu);
            srv.n--;
            pthread_mutex_unlock(&srv.mu);
            if (active) {
                pthread_mutex_lock(st->mu);
                (*active)--;
                pthread_mutex_unlock(st->mu);
            }
        }
    }
    if (reserve >= 0) close(reserve);
}
