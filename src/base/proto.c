/* Frames over Unix sockets: length-prefixed JSON, optional raw data frame (proto.h). */
#include "base/proto.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/time.h"
#include "base/vfs.h"

/* The error for a socket call that failed with errno e: ConnectionClosed when the peer is gone. */
static int sock_err(int e)
{
    return e == EPIPE || e == ECONNRESET ? OM_E_ConnectionClosed : OM_E_DiskIO;
}

/* ---- a client's deadline (om_proto_client_deadline) ---- */

static _Thread_local int64_t tl_deadline; /* monotonic ms; 0: none */
static _Thread_local uint32_t tl_deadline_ms;
static _Thread_local int tl_late;

static int64_t now_ms(void);

void om_proto_client_deadline(uint32_t ms)
{
    tl_deadline = ms ? now_ms() + ms : 0;
    tl_deadline_ms = ms;
    tl_late = 0;
}

int om_proto_deadline_passed(void)
{
    return tl_late;
}

/* deadline (monotonic ms, 0: none) brought forward to the client's deadline. */
static int64_t bounded(int64_t deadline)
{
    return tl_deadline && (!deadline || tl_deadline < deadline) ? tl_deadline : deadline;
}

/* The error when the client's deadline passed during what. */
static int late(const char *what)
{
    tl_late = 1;
    return om_errf(OM_E_DiskIO, "no answer within %u ms (%s)", tl_deadline_ms, what);
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        if (tl_deadline) {
            struct pollfd pw = {.fd = fd, .events = POLLOUT};
            int64_t left = tl_deadline - now_ms();
            if (left <= 0 || poll(&pw, 1, (int)(left > INT_MAX ? INT_MAX : left)) == 0)
                return late("sending the request");
        }
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return om_errf(sock_err(errno), "sending on the control socket: %s", strerror(errno));
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_frame(int fd, const void *p, size_t n)
{
    uint8_t len[4];
    om_put32(len, (uint32_t)n);
    int rc = write_all(fd, len, 4);
    return rc ? rc : write_all(fd, p, n);
}

int om_proto_send(int fd, json_t *obj, const void *data, size_t data_len)
{
    if (data_len) json_object_set_new(obj, "data", json_integer((json_int_t)data_len));
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s) return om_errf(OM_E_OutOfMemory, "encoding a message: out of memory");
    int rc = send_frame(fd, s, strlen(s));
    free(s);
    if (!rc && data_len) rc = send_frame(fd, data, data_len);
    return rc;
}

/* ---- receiving, within the limits of the thread's connection ---- */

static _Thread_local om_proto_limits *tl_lim;
static void release_held(om_proto_limits *lim);
static _Thread_local int tl_ended_cleanly;

void om_proto_bind_limits(om_proto_limits *lim)
{
    if (tl_lim && tl_lim != lim) release_held(tl_lim);
    tl_lim = lim;
}

om_proto_limits *om_proto_thread_limits(void)
{
    return tl_lim;
}

int om_proto_ended_cleanly(void)
{
    return tl_ended_cleanly;
}

/* Refuses a frame of n bytes (what: "a message", "a data frame") that the budget could not
 * hold even now, before anything is allocated for it. */
static int admit_frame(om_proto_limits *lim, size_t n, const char *what)
{
    if (!lim || !lim->budget) return 0;
    om_proto_budget *b = lim->budget;
    pthread_mutex_lock(&b->mu);
    size_t used = b->used, limit = b->limit;
    pthread_mutex_unlock(&b->mu);
    /* What this connection holds already (its message's JSON) stays counted. */
    if (used <= limit && n <= limit - used + lim->held) return 0;
    return om_errf(OM_E_OutOfMemory,
                   "%s of %zu bytes is refused: the daemon holds %zu MiB of messages being "
                   "received, its limit is %zu MiB. HINT: retry when other transfers are done",
                   what, n, used >> 20, limit >> 20);
}

/* Counts n more bytes of buffer for the connection's message as they are allocated. */
static int reserve(om_proto_limits *lim, size_t n)
{
    if (!lim || !lim->budget || !n) return 0;
    om_proto_budget *b = lim->budget;
    pthread_mutex_lock(&b->mu);
    size_t used = b->used;
    int ok = used <= b->limit && n <= b->limit - used;
    if (ok) b->used += n;
    pthread_mutex_unlock(&b->mu);
    if (!ok)
        return om_errf(OM_E_OutOfMemory,
                       "a message is refused in the middle: the daemon holds %zu MiB of messages "
                       "being received, its limit is %zu MiB. HINT: retry when other transfers "
                       "are done",
                       used >> 20, b->limit >> 20);
    lim->held += n;
    return 0;
}

/* Gives back what the connection's previous message held: its caller is done with it. */
static void release_held(om_proto_limits *lim)
{
    if (!lim || !lim->budget || !lim->held) return;
    pthread_mutex_lock(&lim->budget->mu);
    lim->budget->used -= lim->held;
    pthread_mutex_unlock(&lim->budget->mu);
    lim->held = 0;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* 1 when fd has bytes (or an error, or the end) to read before deadline (monotonic ms; 0: no
 * deadline), 0 when the deadline passed. */
static int wait_readable(int fd, int64_t deadline)
{
    if (!deadline) return 1;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return 1; /* recv says what is wrong */
    }
}

enum { RX_OK, RX_EOF, RX_LATE };

/* Reads exactly n bytes before deadline. RX_EOF: the peer closed first; RX_LATE: the deadline
 * passed; negative: recv's error (its detail set). *got: how many arrived. */
static int read_until(int fd, void *p, size_t n, int64_t deadline, size_t *got)
{
    uint8_t *b = p;
    *got = 0;
    while (*got < n) {
        if (!wait_readable(fd, deadline)) return RX_LATE;
        ssize_t r = recv(fd, b + *got, n - *got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return om_errf(sock_err(errno), "reading the control socket: %s", strerror(errno));
        }
        if (r == 0) return RX_EOF;
        *got += (size_t)r;
    }
    return RX_OK;
}

/* A message being received: its clock runs from its first byte. */
typedef struct rx {
    int fd;
    int64_t deadline; /* 0: none */
    uint32_t ms;      /* what the deadline allows, for the message */
} rx;

/* Exactly n bytes of a begun message. */
static int rx_read(const rx *x, void *p, size_t n)
{
    size_t got = 0;
    int st = read_until(x->fd, p, n, x->deadline, &got);
    if (st == RX_EOF)
        return om_errf(OM_E_ConnectionClosed, "connection closed in the middle of a message");
    if (st == RX_LATE && tl_deadline && now_ms() >= tl_deadline) return late("receiving a reply");
    if (st == RX_LATE)
        return om_errf(OM_E_DiskIO, "a message was not whole within %u ms: closing the connection",
                       x->ms);
    return st == RX_OK ? 0 : st;
}

/* A frame's n bytes after its length, in a buffer that grows with what arrives (one byte more
 * for a terminating 0) and is counted against the budget as it grows, so that announcing much
 * and sending little costs little. */
static int rx_body(const rx *x, om_proto_limits *lim, size_t n, uint8_t **out)
{
    size_t cap = n < 65536 ? n : 65536, got = 0;
    int rc = reserve(lim, cap + 1);
    uint8_t *b = rc ? NULL : malloc(cap + 1);
    if (!rc && !b) rc = om_errf(OM_E_OutOfMemory, "receiving %zu bytes: out of memory", n);
    while (!rc && got < n) {
        if (got == cap) {
            size_t ncap = cap > n / 2 ? n : cap * 2;
            if ((rc = reserve(lim, ncap - cap))) break;
            uint8_t *nb = realloc(b, ncap + 1);
            if (!nb) {
                rc = om_errf(OM_E_OutOfMemory, "receiving %zu bytes: out of memory", n);
                break;
            }
            b = nb;
            cap = ncap;
        }
        rc = rx_read(x, b + got, cap - got);
        got = cap;
    }
    if (rc) {
        free(b);
        return rc;
    }
    b[n] = 0;
    *out = b;
    return 0;
}

static int64_t deadline_in(uint32_t ms)
{
    return ms ? now_ms() + ms : 0;
}

/* The JSON object of a message whose length frame's first byte h0 has arrived. */
static int rx_json(const rx *x, om_proto_limits *lim, uint8_t h0, json_t **out)
{
    uint8_t h[4] = {h0};
    int rc = rx_read(x, h + 1, 3);
    if (rc) return rc;
    uint32_t l = om_get32(h);
    if (l > OM_PROTO_MAX_JSON)
        return om_errf(OM_E_InvalidParameter, "a message of %u bytes is larger than the %u allowed",
                       l, OM_PROTO_MAX_JSON);
    uint8_t *buf = NULL;
    if ((rc = admit_frame(lim, l, "a message")) || (rc = rx_body(x, lim, l, &buf))) return rc;
    json_error_t jerr;
    json_t *o = json_loadb((const char *)buf, l, 0, &jerr);
    free(buf);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return om_errf(OM_E_InvalidParameter, "malformed message: %s",
                       o ? "not a JSON object" : jerr.text);
    }
    *out = o;
    return 0;
}

/* The data frame of a message that announced `announced` bytes (checked against max_data and
 * the budget, and the frame's length against the announcement, before any buffer). */
static int rx_data(rx *x, om_proto_limits *lim, json_int_t announced, size_t max_data,
                   uint8_t **out, size_t *outn)
{
    if (announced > (json_int_t)max_data)
        return om_errf(OM_E_InvalidParameter,
                       "a data frame of %lld bytes is larger than the %zu a message may carry here",
                       (long long)announced, max_data);
    int rc = admit_frame(lim, (size_t)announced, "a data frame");
    if (rc) return rc;
    /* The data may take longer: a sender gets 1 s more per MiB. */
    if (x->deadline) {
        uint64_t more = ((uint64_t)announced >> 20) * 1000;
        x->deadline += (int64_t)more;
        x->ms = (uint32_t)(x->ms + more > UINT32_MAX ? UINT32_MAX : x->ms + more);
    }
    x->deadline = bounded(x->deadline);
    uint8_t h[4];
    if ((rc = rx_read(x, h, 4))) return rc;
    uint32_t dn = om_get32(h);
    if (dn != (uint64_t)announced)
        return om_errf(OM_E_InvalidParameter,
                       "malformed message: data frame of %u bytes, %lld announced", dn,
                       (long long)announced);
    if ((rc = rx_body(x, lim, dn, out))) return rc;
    *outn = dn;
    return 0;
}

int om_proto_recv(int fd, json_t **obj, uint8_t **data, size_t *data_len)
{
    om_proto_limits *lim = tl_lim;
    *obj = NULL;
    if (data) *data = NULL;
    if (data_len) *data_len = 0;
    tl_ended_cleanly = 0;
    release_held(lim);
    uint32_t idle_ms = lim ? lim->idle_ms : 0;
    uint8_t h0;
    size_t got;
    if (lim) atomic_store(&lim->idle_since_ms, now_ms());
    int st = read_until(fd, &h0, 1, bounded(deadline_in(idle_ms)), &got);
    if (lim && lim->idle_mu) pthread_mutex_lock(lim->idle_mu);
    if (lim) atomic_store(&lim->idle_since_ms, 0);
    if (lim && lim->idle_mu) pthread_mutex_unlock(lim->idle_mu);
    if (st == RX_LATE && tl_deadline && now_ms() >= tl_deadline) return late("waiting for a reply");
    if (st == RX_EOF || st == RX_LATE) {
        /* Between two messages: the peer is done, or silent past the bound. */
        tl_ended_cleanly = 1;
        if (st == RX_EOF) return om_errf(OM_E_ConnectionClosed, "connection closed");
        return om_errf(OM_E_DiskIO, "connection idle for %u ms: closed", idle_ms);
    }
    if (st != RX_OK) return st;
    rx x = {.fd = fd, .ms = lim ? lim->frame_ms : 0};
    x.deadline = bounded(deadline_in(x.ms));
    json_t *o = NULL;
    int rc = rx_json(&x, lim, h0, &o);
    json_t *d = rc ? NULL : json_object_get(o, "data");
    if (d) {
        size_t max = lim && lim->max_data < OM_PROTO_MAX_DATA ? lim->max_data : OM_PROTO_MAX_DATA;
        json_int_t announced = json_is_integer(d) ? json_integer_value(d) : -1;
        uint8_t *db = NULL;
        size_t dn = 0;
        if (announced < 0)
            rc = om_errf(OM_E_InvalidParameter, "malformed message: bad \"data\" length");
        else
            rc = rx_data(&x, lim, announced, max, &db, &dn);
        if (!rc && data) {
            *data = db;
            *data_len = dn;
        } else
            free(db);
    }
    if (rc) {
        json_decref(o);
        return rc;
    }
    *obj = o;
    return 0;
}

json_t *om_proto_ok(void)
{
    return json_pack("{s:b}", "ok", 1);
}

json_t *om_proto_error(int err)
{
    const char *d = om_err_detail();
    return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "error", err, "name", om_err_name(err),
                     "message", d && *d ? d : om_err_msg(err));
}

int om_proto_check(json_t *reply)
{
    json_t *ok = json_object_get(reply, "ok");
    if (json_is_true(ok)) return 0;
    int err = (int)om_json_int_or(reply, "error", OM_E_Internal);
    if (err >= 0) err = OM_E_Internal;
    om_errf(err, "%s", om_json_str_or(reply, "message", "the server refused the request"));
    return err;
}

/* ---- connecting: only to a daemon this user may trust ---- */

static int trusted_uid(uid_t u)
{
    return u == 0 || u == geteuid();
}

static int distrust(const char *what, const char *path, unsigned uid)
{
    return om_errf(OM_E_FileAccessDenied,
                   "%s %s belongs to uid %u, neither root nor this user (uid %u): another user "
                   "may have put it there. HINT: remove it as root, or set OMBRA_RUNTIME_DIR "
                   "to a directory of the daemon's",
                   what, path, uid, (unsigned)geteuid());
}

/* The socket's folder and the socket itself, before connecting. */
static int check_socket_path(const char *path)
{
    char dir[sizeof((struct sockaddr_un *)0)->sun_path];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!trusted_uid(st.st_uid)) return distrust("the runtime directory", dir, st.st_uid);
        if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))
            return om_errf(OM_E_FileAccessDenied,
                           "the runtime directory %s has mode %04o: other users may replace the "
                           "socket in it. HINT: chmod 0700 %s (0750 for the daemon's group), or "
                           "set OMBRA_RUNTIME_DIR to a directory of the daemon's",
                           dir, (unsigned)(st.st_mode & 07777), dir);
    }
    if (lstat(path, &st) == 0 && !trusted_uid(st.st_uid))
        return distrust("the socket", path, st.st_uid);
    return 0;
}

/* Plain connect(2) to a Unix socket path. */
static int connect_path(const char *path, int *fd)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return om_errf(OM_E_InvalidPath, "socket path too long: %s", path);
    strcpy(a.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return om_errf(OM_E_DiskIO, "socket: %s", strerror(errno));
    /* Under a client's deadline, a daemon whose backlog is full (stopped, hung) makes connect
     * wait no longer than the deadline (a Unix socket's connect waits SO_SNDTIMEO). */
    int64_t left = tl_deadline ? tl_deadline - now_ms() : 0;
    if (tl_deadline) {
        struct timeval tv = {.tv_sec = left > 0 ? left / 1000 : 0,
                             .tv_usec = left > 0 ? (left % 1000) * 1000 : 1};
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    int crc = connect(s, (struct sockaddr *)&a, sizeof a);
    if (tl_deadline) {
        struct timeval none = {0};
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    }
    if (crc != 0) {
        int e = errno;
        close(s);
        if (tl_deadline && (e == EAGAIN || e == EINPROGRESS)) return late("connecting");
        if (e == ENOENT || e == ECONNREFUSED)
            return om_errf(
                OM_E_FileNotFound,
                "nothing listens on %s. HINT: start the daemon, or set OMBRA_RUNTIME_DIR", path);
        if (e == EACCES || e == EPERM)
            return om_errf(
                OM_E_FileAccessDenied,
                "%s: permission denied. HINT: run as root or as a member of the daemon's group",
                path);
        return om_errf(OM_E_DiskIO, "connecting to %s: %s", path, strerror(e));
    }
    *fd = s;
    return 0;
}

int om_proto_connect(const char *path, int *fd)
{
    if (strlen(path) >= sizeof((struct sockaddr_un *)0)->sun_path)
        return om_errf(OM_E_InvalidPath, "socket path too long: %s", path);
    int s = -1;
    int rc = check_socket_path(path);
    if (!rc) rc = connect_path(path, &s);
    if (rc) return rc;
    /* The path can change under us; the process at the other end cannot. */
    struct ucred cr = {.uid = (uid_t)-1};
    socklen_t l = sizeof cr;
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &l) != 0 || !trusted_uid(cr.uid)) {
        unsigned uid = (unsigned)cr.uid;
        close(s);
        return om_errf(OM_E_FileAccessDenied,
                       "the daemon on %s runs as uid %u, neither root nor this user (uid %u): "
                       "nothing is sent to it. HINT: another user may have taken over the "
                       "socket; remove it as root, or set OMBRA_RUNTIME_DIR to the daemon's",
                       path, uid, (unsigned)geteuid());
    }
    *fd = s;
    return 0;
}

int om_proto_busy_retry(int rc, uint64_t *since_ns, unsigned *attempt)
{
    if (rc != OM_E_OutOfSessions) return 0;
    uint64_t now = om_mono_ns();
    if (!*since_ns) *since_ns = now;
    const char *env = getenv("OMBRA_BUSY_WAIT");
    char *end = NULL;
    double limit = env && *env ? strtod(env, &end) : 20.0;
    if (!env || !*env || *end || limit < 0 || limit > 86400) limit = 20.0;
    double waited = (double)(now - *since_ns) / 1e9;
    if (waited >= limit) {
        if (*attempt) om_err_ctx(rc, "still refused after %.0f s of retries", waited);
        return 0;
    }
    unsigned ms = *attempt >= 5 ? 1000 : 50u << *attempt; /* 50, 100, 200, 400, 800, 1000... */
    (*attempt)++;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return 1;
}

static int call_once(const char *path, json_t *req, const void *data, size_t data_len,
                     json_t **reply, uint8_t **rdata, size_t *rdata_len);

int om_proto_call(const char *path, json_t *req, const void *data, size_t data_len, json_t **reply,
                  uint8_t **rdata, size_t *rdata_len)
{
    uint64_t since = 0;
    unsigned attempt = 0;
    for (;;) {
        int rc = call_once(path, req, data, data_len, reply, rdata, rdata_len);
        if (!om_proto_busy_retry(rc, &since, &attempt)) return rc;
        json_decref(*reply);
        *reply = NULL;
        if (rdata && *rdata) {
            free(*rdata);
            *rdata = NULL;
        }
    }
}

static int call_once(const char *path, json_t *req, const void *data, size_t data_len,
                     json_t **reply, uint8_t **rdata, size_t *rdata_len)
{
    int fd = -1;
    int rc = om_proto_connect(path, &fd);
    if (rc) return rc;
    rc = om_proto_send(fd, req, data, data_len);
    /* A server that refuses us answers and closes before reading: its reply explains better
     * than our broken pipe. */
    om_err_saved senderr;
    om_err_save(&senderr, rc);
    int rrc = om_proto_recv(fd, reply, rdata, rdata_len);
    /* Progress objects (no "ok") come before a long operation's reply: skip them. */
    while (!rrc && !json_object_get(*reply, "ok") && json_object_get(*reply, "progress")) {
        json_decref(*reply);
        *reply = NULL;
        rrc = om_proto_recv(fd, reply, rdata, rdata_len);
    }
    if (rc && rrc)
        om_err_restore(&senderr);
    else
        rc = rrc;
    close(fd);
    if (!rc) rc = om_proto_check(*reply);
    return rc;
}

int om_json_str(json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return om_errf(OM_E_InvalidParameter, "field \"%s\" must be a string", key);
    *out = json_string_value(v);
    return 0;
}

int om_json_int(json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return om_errf(OM_E_InvalidParameter, "field \"%s\" must be an integer", key);
    *out = json_integer_value(v);
    return 0;
}

int om_json_read_file(om_file *f, size_t max, json_t **out)
{
    *out = NULL;
    uint64_t n = 0;
    char *buf = NULL;
    int rc = om_fsize(f, &n);
    if (!rc && n > max)
        rc = om_errf(OM_E_InvalidParameter, "%s: %llu bytes is more than the %zu it may have",
                     f->path, (unsigned long long)n, max);
    if (!rc && !(buf = malloc(n + 1)))
        rc = om_errf(OM_E_OutOfMemory, "reading %s: out of memory", f->path);
    if (!rc) rc = om_pread_full(f, buf, (size_t)n, 0);
    if (!rc) {
        json_error_t je;
        if (!(*out = json_loadb(buf, (size_t)n, 0, &je)))
            rc = om_errf(OM_E_InvalidParameter, "%s: %s (line %d)", f->path, je.text, je.line);
    }
    free(buf);
    return rc;
}

const char *om_json_str_or(json_t *obj, const char *key, const char *dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

int64_t om_json_int_or(json_t *obj, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}
