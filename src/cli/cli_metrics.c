/* ombra metrics: this server's health in the Prometheus text exposition format (version 0.0.4),
 * on stdout, or with --listen from a minimal HTTP/1.1 endpoint that gathers fresh values for
 * every scrape. The facts are cli_health_gather's (cli_health.c); this file only names them.
 *
 * The endpoint serves each connection on a thread of its own, up to 32 at once (more are
 * answered 503 at once and closed): a request line and headers of at most 8 KiB, whole within
 * 5 s of the connection's accept (a client sending a byte now and then is cut off there), GET
 * or HEAD of /metrics (200), anything else 404, 405 or 400, then the connection is closed. So
 * a slow or idle client delays no one else's scrape. The gathering itself is done by one
 * scrape at a time (the store's client is one per process, cli_store): scrapes that arrive
 * together wait for each other, each gathering fresh values. Nothing a client sends can end
 * the endpoint. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/config.h"
#include "base/error.h"
#include "base/proto.h"
#include "base/time.h"
#include "cli/cli.h"

#define HTTP_MAX_REQUEST 8192
#define HTTP_TIMEOUT_S   5
#define HTTP_MAX_CONNS   32

/* ---- the exposition format ---- */

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newlines escaped, as the format wants. */
static void label_value(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

/* name{k1="v1",...} value: labels are NULL-terminated name, value pairs. */
static void sample(FILE *f, const char *name, double value, ...)
{
    va_list ap;
    va_start(ap, value);
    fputs(name, f);
    const char *k;
    int n = 0;
    while ((k = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        fprintf(f, "%s%s=\"", n++ ? "," : "{", k);
        label_value(f, v ? v : "");
        fputc('"', f);
    }
    va_end(ap);
    if (n) fputc('}', f);
    if (value == (double)(int64_t)value && value < 9e15 && value > -9e15)
        fprintf(f, " %lld\n", (long long)value);
    else
        fprintf(f, " %.17g\n", value);
}

static double num(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

/* ---- the families ---- */

static void daemons(FILE *f, json_t *h)
{
    family(f, "ombra_up", "gauge", "1 when the daemon answers on its socket");
    sample(f, "ombra_up", json_is_true(json_object_get(json_object_get(h, "store"), "up")),
           "daemon", "ombra-store", NULL);
    sample(f, "ombra_up", json_is_true(json_object_get(json_object_get(h, "vssd"), "up")), "daemon",
           "ombra-vssd", NULL);
    json_t *dag = json_object_get(h, "dag");
    if (json_is_object(dag))
        sample(f, "ombra_up", json_is_true(json_object_get(json_object_get(dag, "repld"), "up")),
               "daemon", "ombra-repld", NULL);
    json_t *repo = json_object_get(h, "repo");
    if (json_is_object(repo)) {
        family(f, "ombra_repository_up", "gauge", "1 when the repository opens and lists its sets");
        sample(f, "ombra_repository_up", json_is_true(json_object_get(repo, "reachable")), "repo",
               om_json_str_or(repo, "path", ""), NULL);
    }
}

/* The record of runs (backup/runs.h): the last run and the last success per database and type. */
static void runs(FILE *f, json_t *h, const char *server)
{
    static const struct {
        const char *name, *help, *field;
        int success; /* of last_success, else of last */
        double scale;
    } fams[] = {
        {"ombra_backup_last_run_timestamp_seconds", "when the last backup run ended (Unix time)",
         "end_ns", 0, 1e-9},
        {"ombra_backup_last_run_success", "1 when the last backup run succeeded, 0 when it failed",
         NULL, 0, 1},
        {"ombra_backup_last_run_duration_seconds", "how long the last backup run took", "seconds",
         0, 1},
        {"ombra_backup_last_run_bytes_stored",
         "bytes the last backup run stored (0 when it failed)", "bytes_stored", 0, 1},
        {"ombra_backup_last_run_bytes_read", "bytes the last backup run read (all its databases)",
         "bytes_read", 0, 1},
        {"ombra_backup_last_run_writes_held_seconds",
         "how long the writers held writes (froze) for the last backup run's shadow copy",
         "freeze_ms", 0, 1e-3},
        {"ombra_backup_last_success_timestamp_seconds",
         "when the last successful backup run ended (Unix time)", "end_ns", 1, 1e-9},
        {"ombra_backup_last_success_duration_seconds", "how long the last successful run took",
         "seconds", 1, 1},
        {"ombra_backup_last_success_bytes_stored", "bytes the last successful backup run stored",
         "bytes_stored", 1, 1},
    };
    for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++) {
        family(f, fams[k].name, "gauge", fams[k].help);
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(h, "runs"), i, e)
        {
            json_t *r = json_object_get(e, fams[k].success ? "last_success" : "last");
            if (!json_is_object(r)) continue;
            double v = fams[k].field ? num(r, fams[k].field) * fams[k].scale
                                     : !strcmp(om_json_str_or(r, "result", ""), "ok");
            sample(f, fams[k].name, v, "database", om_json_str_or(e, "database", ""), "type",
                   om_json_str_or(e, "type", ""), "server", server, NULL);
        }
    }
}

/* The repository's sets: per database and type, how many, and the newest one's time and
 * bytes. */
static void repo_sets(FILE *f, json_t *h, const char *server)
{
    json_t *repo = json_object_get(h, "repo");
    if (!json_is_object(repo)) return;
    /* newest[key] = the newest set of that database and type; count[key] */
    json_t *newest = json_object(), *count = json_object(), *s;
    size_t i;
    json_array_foreach(json_object_get(repo, "sets"), i, s)
    {
        if (json_object_get(s, "damaged")) continue;
        json_t *d = json_object_get(s, "database");
        const char *db = json_is_string(d) ? json_string_value(d) : om_json_str_or(d, "name", "");
        char key[300];
        snprintf(key, sizeof key, "%s\n%s", db, om_json_str_or(s, "type", ""));
        json_t *old = json_object_get(newest, key);
        if (!old || om_json_int_or(s, "committed_ns", 0) >= om_json_int_or(old, "committed_ns", 0))
            json_object_set(newest, key, s);
        json_object_set_new(count, key, json_integer(om_json_int_or(count, key, 0) + 1));
    }
    static const struct {
        const char *name, *help, *field;
        double scale;
    } fams[] = {
        {"ombra_backup_sets", "backup sets in the repository", NULL, 1},
        {"ombra_backup_last_set_timestamp_seconds",
         "when the repository's newest set was committed (Unix time)", "committed_ns", 1e-9},
        {"ombra_backup_last_set_bytes", "bytes the newest set holds (read from the database)",
         "bytes", 1},
        {"ombra_backup_last_set_bytes_stored", "bytes the newest set added to the repository",
         "bytes_stored", 1},
    };
    for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++) {
        family(f, fams[k].name, "gauge", fams[k].help);
        const char *key;
        json_t *v;
        json_object_foreach(newest, key, v)
        {
            char db[300];
            snprintf(db, sizeof db, "%s", key);
            char *type = strchr(db, '\n');
            *type++ = 0;
            double val = fams[k].field ? num(v, fams[k].field) * fams[k].scale
                                       : (double)om_json_int_or(count, key, 0);
            sample(f, fams[k].name, val, "database", db, "type", type, "server", server, "repo",
                   om_json_str_or(repo, "path", ""), NULL);
        }
    }
    json_decref(newest);
    json_decref(count);
}

static void vss(FILE *f, json_t *h)
{
    json_t *vssd = json_object_get(h, "vssd");
    json_t *last = json_object_get(json_object_get(vssd, "status"), "last_snapshot");
    family(f, "ombra_vss_last_snapshot_timestamp_seconds", "gauge",
           "when ombra-vssd made its last shadow copy (Unix time; absent before the first)");
    if (json_is_object(last))
        sample(f, "ombra_vss_last_snapshot_timestamp_seconds", num(last, "time_ns") * 1e-9, NULL);
    family(f, "ombra_vss_last_snapshot_writes_held_seconds", "gauge",
           "how long the writers held writes (froze) for ombra-vssd's last shadow copy");
    if (json_is_object(last))
        sample(f, "ombra_vss_last_snapshot_writes_held_seconds", num(last, "freeze_ms") * 1e-3,
               NULL);
    family(f, "ombra_vss_writer_stable", "gauge",
           "1 when the writer is connected and stable, 0 otherwise (its state is in "
           "ombra_vss_writer_state)");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(vssd, "writers"), i, w)
    {
        sample(f, "ombra_vss_writer_stable",
               !json_is_false(json_object_get(w, "connected")) &&
                   !strcmp(om_json_str_or(w, "state", ""), "stable"),
               "writer", om_json_str_or(w, "name", ""), "instance",
               om_json_str_or(w, "instance_id", ""), NULL);
    }
    family(f, "ombra_vss_writer_state", "gauge", "1 for the writer's current state");
    json_array_foreach(json_object_get(vssd, "writers"), i, w)
    {
        sample(f, "ombra_vss_writer_state", 1, "writer", om_json_str_or(w, "name", ""), "instance",
               om_json_str_or(w, "instance_id", ""), "state", om_json_str_or(w, "state", ""), NULL);
    }
}

static void store(FILE *f, json_t *h, const char *server)
{
    json_t *st = json_object_get(json_object_get(h, "store"), "status");
    json_t *dl = json_object_get(st, "deliveries");
    if (json_is_object(dl)) {
        family(f, "ombra_store_deliveries_total", "counter",
               "mail.deliver requests since ombra-store started, by result");
        sample(f, "ombra_store_deliveries_total", num(dl, "ok"), "server", server, "result", "ok",
               NULL);
        sample(f, "ombra_store_deliveries_total", num(dl, "failed"), "server", server, "result",
               "failed", NULL);
        family(f, "ombra_store_delivered_bytes_total", "counter",
               "bytes of the messages delivered since ombra-store started");
        sample(f, "ombra_store_delivered_bytes_total", num(dl, "bytes"), "server", server, NULL);
    }
    json_t *dbs = json_object_get(h, "databases"), *d;
    size_t i;
    family(f, "ombra_database_mounted", "gauge", "1 when the database is mounted");
    json_array_foreach(dbs, i, d)
        sample(f, "ombra_database_mounted", json_is_true(json_object_get(d, "mounted")), "database",
               om_json_str_or(d, "name", ""), "server", server, NULL);
    family(f, "ombra_log_generations", "gauge",
           "log generation files on disk (mounted databases; a backup truncates them)");
    json_array_foreach(dbs, i, d)
    {
        if (json_is_integer(json_object_get(d, "log_generations")))
            sample(f, "ombra_log_generations", num(d, "log_generations"), "database",
                   om_json_str_or(d, "name", ""), "server", server, NULL);
    }
    static const char *const fs_fields[][3] = {
        {"ombra_log_disk_free_bytes", "free",
         "bytes free to the store on the log folder's filesystem"},
        {"ombra_log_disk_size_bytes", "size", "size of the log folder's filesystem"},
    };
    for (size_t k = 0; k < 2; k++) {
        family(f, fs_fields[k][0], "gauge", fs_fields[k][2]);
        json_array_foreach(dbs, i, d)
        {
            json_t *fs = json_object_get(d, "log_fs");
            if (json_is_integer(json_object_get(fs, fs_fields[k][1])))
                sample(f, fs_fields[k][0], num(fs, fs_fields[k][1]), "database",
                       om_json_str_or(d, "name", ""), "server", server, "path",
                       om_json_str_or(fs, "path", ""), NULL);
        }
    }
    json_t *fs = json_object_get(h, "data_fs");
    if (json_is_integer(json_object_get(fs, "free"))) {
        family(f, "ombra_data_disk_free_bytes", "gauge",
               "bytes free on the data directory's filesystem ($OMBRA_HOME)");
        sample(f, "ombra_data_disk_free_bytes", num(fs, "free"), "server", server, "path",
               om_json_str_or(fs, "path", ""), NULL);
        family(f, "ombra_data_disk_size_bytes", "gauge", "size of the data directory's filesystem");
        sample(f, "ombra_data_disk_size_bytes", num(fs, "size"), "server", server, "path",
               om_json_str_or(fs, "path", ""), NULL);
    }
}

static void dag(FILE *f, json_t *h)
{
    json_t *dag = json_object_get(h, "dag");
    if (!json_is_object(dag)) return;
    static const char *const q[][3] = {
        {"ombra_copy_queue_length", "copy_queue", "log generations the copy has yet to copy"},
        {"ombra_replay_queue_length", "replay_queue", "log generations the copy has yet to replay"},
    };
    size_t i;
    json_t *r;
    for (size_t k = 0; k < 2; k++) {
        family(f, q[k][0], "gauge", q[k][2]);
        json_array_foreach(json_object_get(dag, "copies"), i, r)
        {
            if (!json_is_true(json_object_get(r, "active")))
                sample(f, q[k][0], num(r, q[k][1]), "database", om_json_str_or(r, "database", ""),
                       "server", om_json_str_or(r, "server", ""), "dag",
                       om_json_str_or(dag, "name", ""), NULL);
        }
    }
    family(f, "ombra_copy_state", "gauge", "1 for the copy's current state (Mounted: the active)");
    json_array_foreach(json_object_get(dag, "copies"), i, r)
    {
        sample(f, "ombra_copy_state", 1, "database", om_json_str_or(r, "database", ""), "server",
               om_json_str_or(r, "server", ""), "dag", om_json_str_or(dag, "name", ""), "state",
               om_json_str_or(r, "state", ""), NULL);
    }
}

/* One gathering at a time: the store's client (cli_store) is one per process. */
static pthread_mutex_t gather_mu = PTHREAD_MUTEX_INITIALIZER;

/* Every family, from freshly gathered facts. */
static int expose(FILE *f, const cli_health_opts *o)
{
    pthread_mutex_lock(&gather_mu);
    uint64_t t0 = om_mono_ns();
    json_t *h = cli_health_gather(o);
    cli_store_close(); /* the next scrape connects anew: the store may have restarted */
    pthread_mutex_unlock(&gather_mu);
    if (!h) return om_errf(OM_E_OutOfMemory, "out of memory");
    const char *server = om_json_str_or(h, "server", "");
    daemons(f, h);
    runs(f, h, server);
    repo_sets(f, h, server);
    vss(f, h);
    store(f, h, server);
    dag(f, h);
    family(f, "ombra_scrape_duration_seconds", "gauge", "how long gathering these values took");
    sample(f, "ombra_scrape_duration_seconds", (double)(om_mono_ns() - t0) / 1e9, NULL);
    json_decref(h);
    return 0;
}

/* ---- the HTTP endpoint ---- */

static volatile sig_atomic_t stop_serving;
static void on_stop(int sig)
{
    (void)sig;
    stop_serving = 1;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return; /* the client went away: nothing to do */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void respond(int fd, int code, const char *reason, const char *type, const char *body,
                    size_t n, int head)
{
    char hdr[300];
    int l = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     code, reason, type, n);
    send_all(fd, hdr, (size_t)l);
    if (!head) send_all(fd, body, n);
}

static int64_t mono_ms(void)
{
    return (int64_t)(om_mono_ns() / 1000000u);
}

/* Reads the request head (up to the empty line), whole before deadline (monotonic ms): 0, or
 * the status to answer with, or -1 for no answer (closed, or too late). */
static int read_head(int fd, char *buf, size_t cap, int64_t deadline)
{
    size_t n = 0;
    for (;;) {
        if (n == cap - 1) return 431;
        int64_t left = deadline - mono_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0) return -1;
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return -1; /* the whole request was not there in time */
        ssize_t r = recv(fd, buf + n, cap - 1 - n, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0) return r == 0 && n ? 400 : -1; /* closed: no answer */
        n += (size_t)r;
        buf[n] = 0;
        if (memchr(buf, 0, n)) return 400;
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n")) return 0;
    }
}

/* One connection accepted at accepted_ms (monotonic). */
static void serve_one(int fd, const cli_health_opts *o, int64_t accepted_ms)
{
    struct timeval tv = {.tv_sec = HTTP_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char buf[HTTP_MAX_REQUEST], method[16], target[2048], version[16];
    int st = read_head(fd, buf, sizeof buf, accepted_ms + HTTP_TIMEOUT_S * 1000);
    if (st < 0) return;
    static const char text[] = "text/plain; charset=utf-8";
    if (st == 431) {
        respond(fd, 431, "Request Header Fields Too Large", text, "request too large\n", 18, 0);
        return;
    }
    const char *sp1 = st ? NULL : strchr(buf, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp2 && sp2 - sp1 > (long)sizeof target) {
        respond(fd, 414, "URI Too Long", text, "request target too long\n", 24, 0);
        return;
    }
    if (st || sscanf(buf, "%15s %2047s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7)) {
        respond(fd, 400, "Bad Request", text, "bad request\n", 12, 0);
        return;
    }
    int head = !strcmp(method, "HEAD");
    if (strcmp(method, "GET") && !head) {
        respond(fd, 405, "Method Not Allowed", text, "only GET\n", 9, 0);
        return;
    }
    size_t tl = strcspn(target, "?");
    if (tl != 8 || strncmp(target, "/metrics", 8)) {
        respond(fd, 404, "Not Found", text, "not found: try /metrics\n", 24, head);
        return;
    }
    char *body = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&body, &n);
    int rc = m ? expose(m, o) : om_errf(OM_E_OutOfMemory, "out of memory");
    if (m && fclose(m) && !rc) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    if (rc) {
        char msg[1200];
        int l = snprintf(msg, sizeof msg, "%s\n", om_err_detail());
        respond(fd, 500, "Internal Server Error", text, msg, (size_t)l, head);
    } else
        respond(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, n, head);
    free(body);
}

/* Closes after the answer: what the client still sends (the rest of a request too large) is
 * read and dropped for a moment first, else closing with unread data would reset the
 * connection and the client could lose the answer. Bounded: 64 KiB, 1 s. */
static void linger_close(int fd)
{
    struct timeval tv = {.tv_sec = 1};
    char sink[4096];
    shutdown(fd, SHUT_WR);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 16 && recv(fd, sink, sizeof sink, 0) > 0; i++)
        ;
    close(fd);
}

/* Binds ADDR:PORT ([v6]:PORT; an empty ADDR is every address; port 0 picks one): *fd, or an
 * error; says where it listens on stderr. */
static int listen_on(const char *spec, int *fd)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    /* The port a number to 65535: getaddrinfo takes 99999 as 34463 (it wraps) and a service
     * name as its port, so a typo would serve somewhere else than the scraper looks. */
    size_t digits = colon ? strspn(colon + 1, "0123456789") : 0;
    if (!colon || !colon[1] || (size_t)(colon - spec) >= sizeof host || colon[1 + digits] ||
        digits > 5 || atol(colon + 1) > 65535)
        return om_errf(OM_E_InvalidParameter,
                       "--listen takes ADDR:PORT (a port from 0 to 65535), not '%s'", spec);
    snprintf(host, sizeof host, "%.*s", (int)(colon - spec), spec);
    char *h = host;
    if (*h == '[' && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = 0;
        h++;
    }
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM},
                    *ai = NULL;
    int g = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &ai);
    if (g) return om_errf(OM_E_InvalidParameter, "--listen %s: %s", spec, gai_strerror(g));
    int rc = 0, one = 1;
    *fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0 || setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(*fd, ai->ai_addr, ai->ai_addrlen) || listen(*fd, 64))
        rc = om_errf(OM_E_InvalidParameter, "--listen %s: %s", spec, strerror(errno));
    freeaddrinfo(ai);
    if (rc) {
        if (*fd >= 0) close(*fd);
        return rc;
    }
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    char nh[NI_MAXHOST], np[NI_MAXSERV];
    if (!getsockname(*fd, (struct sockaddr *)&sa, &sl) &&
        !getnameinfo((struct sockaddr *)&sa, sl, nh, sizeof nh, np, sizeof np,
                     NI_NUMERICHOST | NI_NUMERICSERV))
        fprintf(stderr, "ombra metrics: serving http://%s%s%s:%s/metrics\n",
                strchr(nh, ':') ? "[" : "", nh, strchr(nh, ':') ? "]" : "", np);
    return 0;
}

/* The connections being served, each on its thread. */
static pthread_mutex_t conns_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t conns_done = PTHREAD_COND_INITIALIZER;
static int conns;

typedef struct conn {
    int fd;
    int64_t accepted_ms;
    const cli_health_opts *o;
} conn;

static void *conn_main(void *arg)
{
    conn *c = arg;
    serve_one(c->fd, c->o, c->accepted_ms);
    linger_close(c->fd);
    free(c);
    pthread_mutex_lock(&conns_mu);
    if (--conns == 0) pthread_cond_broadcast(&conns_done);
    pthread_mutex_unlock(&conns_mu);
    return NULL;
}

/* Serves fd on a thread of its own; beyond HTTP_MAX_CONNS (or without a thread), a 503 at once,
 * without waiting for the request. */
static void dispatch_conn(int fd, const cli_health_opts *o)
{
    conn *c = malloc(sizeof *c);
    pthread_mutex_lock(&conns_mu);
    int room = c && conns < HTTP_MAX_CONNS;
    if (room) conns++;
    pthread_mutex_unlock(&conns_mu);
    if (room) {
        *c = (conn){.fd = fd, .accepted_ms = mono_ms(), .o = o};
        pthread_attr_t at;
        pthread_t t;
        /* The threads leave SIGTERM and SIGINT to the accepting one. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int e = pthread_create(&t, &at, conn_main, c);
        pthread_attr_destroy(&at);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!e) return;
        pthread_mutex_lock(&conns_mu);
        if (--conns == 0) pthread_cond_broadcast(&conns_done);
        pthread_mutex_unlock(&conns_mu);
    }
    free(c);
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; "
                               "charset=utf-8\r\nContent-Length: 5\r\nRetry-After: 1\r\n"
                               "Connection: close\r\n\r\nbusy\n";
    send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT); /* a client gone: fine */
    shutdown(fd, SHUT_WR);
    close(fd);
}

static int serve(const char *spec, const cli_health_opts *o)
{
    int lfd = -1, rc = listen_on(spec, &lfd);
    if (rc) return rc;
    struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: accept returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    while (!stop_serving) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue; /* a signal (the loop's test ends it), or a client gone */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* A passing shortage: the connection waits in the backlog; retrying at once
                 * would spin a core until a descriptor is free. */
                usleep(100000);
                continue;
            }
            rc = om_errf(OM_E_DiskIO, "accepting on %s: %s", spec, strerror(errno));
            break;
        }
        dispatch_conn(fd, o);
    }
    close(lfd);
    /* The connections in progress end within their bounds (5 s for the request, the gathering's
     * deadlines): o and the repository's passphrase must live until they have. */
    pthread_mutex_lock(&conns_mu);
    while (conns > 0)
        pthread_cond_wait(&conns_done, &conns_mu);
    pthread_mutex_unlock(&conns_mu);
    return rc;
}

static int run_metrics(const cli_args *a)
{
    char pbuf[1024];
    const char *pass = NULL;
    char *repo = NULL;
    const char *repo_name, *listen = cli_val(a, "listen");
    int st = cli_repo_path_opt(a, &repo, &repo_name);
    if (st) return st;
    if (!listen && cli_flag(a, "serve") && !(listen = om_conf("metrics", "listen"))) {
        free(repo);
        return cli_usage(a,
                         "--serve listens where the configuration's [metrics] listen says, "
                         "and %s says nothing: give --listen ADDR:PORT",
                         om_conf_file() ? om_conf_file() : "no configuration file is read: it");
    }
    int rc = cli_repo_passphrase(a, pbuf, sizeof pbuf, &pass);
    cli_health_opts o = {.repo = repo, .passphrase = pass};
    if (!rc && listen)
        rc = serve(listen, &o);
    else if (!rc)
        rc = expose(stdout, &o);
    memset(pbuf, 0, sizeof pbuf);
    free(repo);
    return rc ? cli_fail(rc) : CLI_OK;
}

static const cli_opt metrics_opts[] = {
    {"repo", "NAME|PATH",
     "the backup repository: its sets per database and type (default: $OMBRA_REPO, else the "
     "configuration's default-repo)",
     0},
    CLI_PASS_OPT,
    {"listen", "ADDR:PORT",
     "serve GET /metrics over HTTP here ([::1]:9187, :9187 for every address; port 0 picks one, "
     "said on stderr) until SIGTERM",
     0},
    {"serve", NULL, "serve where the configuration's [metrics] listen says (a service's command)",
     0},
    {0}};

static const cli_cmd metrics_cmds[] = {
    {"", "", metrics_opts, "print this server's metrics in the Prometheus text format",
     "Families (labels: database, type, server; writer, state; dag):\n"
     "  ombra_up{daemon}                         ombra-store, ombra-vssd (ombra-repld in a DAG)\n"
     "  ombra_backup_last_run_*                  per database and type, the last run of ombra\n"
     "                                           backup (failures too): timestamp_seconds,\n"
     "                                           success (1/0), duration_seconds, bytes_stored,\n"
     "                                           bytes_read, writes_held_seconds\n"
     "  ombra_backup_last_success_*              the last successful run: timestamp_seconds,\n"
     "                                           duration_seconds, bytes_stored\n"
     "  ombra_backup_sets, ombra_backup_last_set_*  with --repo: the repository's sets, the\n"
     "                                           newest one's timestamp_seconds, bytes and\n"
     "                                           bytes_stored\n"
     "  ombra_vss_last_snapshot_*                ombra-vssd's last shadow copy: "
     "timestamp_seconds,\n"
     "                                           writes_held_seconds (the freeze)\n"
     "  ombra_vss_writer_stable, _state          each writer\n"
     "  ombra_store_deliveries_total{result}     mail.deliver since the store started (and\n"
     "                                           ombra_store_delivered_bytes_total)\n"
     "  ombra_database_mounted, ombra_log_generations, ombra_log_disk_{free,size}_bytes,\n"
     "  ombra_data_disk_{free,size}_bytes        per database; the data directory's filesystem\n"
     "  ombra_copy_queue_length, ombra_replay_queue_length, ombra_copy_state  in a DAG, per copy\n"
     "A daemon that does not answer leaves its families empty and ombra_up 0.\n\n"
     "With --listen the command stays and serves GET /metrics (404 for other paths), gathering\n"
     "fresh values for each scrape, until SIGTERM or SIGINT. Each connection is served on its\n"
     "own (at most 32 at once; more get 503) and its request must be whole within 5 s; each\n"
     "daemon has 5 s to answer a scrape's questions (else ombra_up 0). The configuration's\n"
     "[metrics] listen sets the address when --listen is not given.",
     run_metrics},
    {0},
};

const cli_group cli_metrics_group = {
    "metrics", "this server's metrics for Prometheus (stdout, or an HTTP endpoint)", metrics_cmds};
