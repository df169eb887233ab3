/* Diagnostics (logging.h): the tools' stderr lines, the daemons' file, stderr and journal
 * records, and their encodings. */
#include "base/logging.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/error.h"
#include "base/time.h"

#define MSG_MAX     4096 /* a message longer than this is cut */
#define JOURNAL_MAX (MSG_MAX + 2048)

static const char *const level_names[] = {"debug", "info", "warning", "error"};

/* The state: written by om_log_init/om_log_setup before threads log, then read under mu (the
 * file's descriptor changes on reopen). */
static struct {
    pthread_mutex_t mu;
    char prog[64];
    enum om_log_target target; /* JOURNAL, FILE or STDERR once set up */
    char path[PATH_MAX];       /* the file target's */
    int fd;                    /* the file target's descriptor */
    int stderr_to_file;
    int jfd;                        /* the journal's socket (non-blocking) */
    uint64_t journal_refused, lost; /* om_log_journal_refused's counts */
    struct sockaddr_un jaddr;
    socklen_t jlen;
} L = {
    .mu = PTHREAD_MUTEX_INITIALIZER, .prog = "ombra", .target = OM_LOG_STDERR, .fd = -1, .jfd = -1};

static _Atomic int daemon_mode;   /* om_log_setup was called: the daemons' forms */
static _Atomic int debug_on = -1; /* set on first use, from any thread */
static _Atomic int min_level = OM_DEBUG;
static volatile sig_atomic_t reopen_wanted;

void om_log_min_level(int lvl)
{
    min_level = lvl;
}

void om_log_init(const char *p)
{
    snprintf(L.prog, sizeof L.prog, "%s", p);
}

void om_log_reopen(void)
{
    reopen_wanted = 1;
}

enum om_log_target om_log_target_now(void)
{
    return L.target;
}

/* ---- names ---- */

int om_log_target_parse(const char *name, enum om_log_target *t)
{
    static const char *const names[] = {"auto", "journal", "file", "stderr"};
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, names[i])) {
            *t = (enum om_log_target)i;
            return 0;
        }
    return om_errf(OM_E_InvalidParameter, "log target '%s': auto, journal, file or stderr",
                   name ? name : "");
}

int om_log_level_parse(const char *name, int *lvl)
{
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, level_names[i])) {
            *lvl = i;
            return 0;
        }
    if (name && !strcmp(name, "warn")) {
        *lvl = OM_WARN;
        return 0;
    }
    return om_errf(OM_E_InvalidParameter, "log level '%s': debug, info, warning or error",
                   name ? name : "");
}

const char *om_log_level_name(int lvl)
{
    return lvl >= OM_DEBUG && lvl <= OM_ERROR ? level_names[lvl] : "?";
}

/* ---- encodings ---- */

/* A line break inside a message (a name or a detail that holds one) becomes a space: a log line
 * is one line, never two of which the second could pass for another daemon's record. */
static void one_line(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\n' || s[i] == '\r') s[i] = ' ';
}

size_t om_log_format_line(char *buf, size_t len, uint64_t now_ns, const char *prog, int pid,
                          enum om_level lvl, const char *msg)
{
    if (len < 2) return 0;
    char ts[40];
    int n = snprintf(buf, len - 1, "%s %s[%d] %s: %s", om_time_str(now_ns, ts, sizeof ts), prog,
                     pid, om_log_level_name(lvl), msg);
    size_t k = n < 0 ? 0 : (size_t)n < len - 1 ? (size_t)n : len - 2;
    one_line(buf, k);
    buf[k++] = '\n';
    buf[k] = 0;
    return k;
}

/* Appends one field to buf at *at; 0 when it does not fit. */
static int journal_field(char *buf, size_t len, size_t *at, const char *key, const char *value)
{
    size_t kl = strlen(key), vl = strlen(value);
    int binary = memchr(value, '\n', vl) != NULL;
    size_t need = kl + 1 + (binary ? 8 : 0) + vl + 1;
    if (len - *at < need) return 0;
    char *p = buf + *at;
    memcpy(p, key, kl);
    p += kl;
    if (binary) {
        /* journald reads the length as little-endian whatever the machine */
        *p++ = '\n';
        for (int i = 0; i < 8; i++)
            *p++ = (char)((uint64_t)vl >> (8 * i) & 0xff);
    } else
        *p++ = '=';
    memcpy(p, value, vl);
    p += vl;
    *p++ = '\n';
    *at += need;
    return 1;
}

size_t om_log_format_journal(char *buf, size_t len, const char *prog, enum om_level lvl,
                             const om_log_field *fields, const char *msg)
{
    static const char priority[][2] = {"7", "6", "4", "3"}; /* syslog's, by om_level */
    size_t at = 0;
    if (!journal_field(buf, len, &at, "MESSAGE", msg) ||
        !journal_field(buf, len, &at, "PRIORITY", priority[lvl]) ||
        !journal_field(buf, len, &at, "SYSLOG_IDENTIFIER", prog))
        return 0;
    for (const om_log_field *f = fields; f && f->key; f++) {
        if (!f->value || !*f->value) continue;
        /* journald takes keys of A-Z, 0-9 and '_', at most 64 characters */
        char key[65] = "OMBRA_";
        size_t k = 6;
        for (const char *c = f->key; *c && k < sizeof key - 1; c++)
            key[k++] = *c >= 'a' && *c <= 'z'                                 ? (char)(*c - 32)
                       : (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ? *c
                                                                              : '_';
        key[k] = 0;
        if (!journal_field(buf, len, &at, key, f->value)) return 0;
    }
    return at;
}

/* ---- setup ---- */

int om_log_stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st)) return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Opens the log file at path for appending: its descriptor, or -1 with *err an errno, or
 * NOT_REGULAR. The last component must be a regular file, not a symbolic link (ELOOP: a link
 * planted in a writable log directory would make the daemon, perhaps root, append to the
 * link's target) nor a FIFO, socket or device (O_NONBLOCK: a FIFO is not waited on). */
#define NOT_REGULAR (-1)
static int open_file(const char *path, int *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640);
    struct stat st;
    if (fd < 0) {
        *err = errno == ENXIO ? NOT_REGULAR : errno; /* ENXIO: a FIFO without reader, a socket */
        return -1;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        *err = NOT_REGULAR;
        return -1;
    }
    fcntl(fd, F_SETFL, O_APPEND); /* O_NONBLOCK off again */
    return fd;
}

/* Why open_file refused: an error code, and the words after "opening the log file PATH: ". */
static int open_error(int err)
{
    return err == ELOOP || err == NOT_REGULAR ? OM_E_InvalidPath : om_err_from_errno(err);
}

static const char *open_why(int err)
{
    return err == ELOOP         ? "it is a symbolic link (refused: the log is never written "
                                  "through a link)"
           : err == NOT_REGULAR ? "it is not a regular file (refused)"
                                : strerror(err);
}

int om_log_setup(const om_log_opts *o)
{
    enum om_log_target t = o->target;
    if (t == OM_LOG_AUTO)
        t = o->file && *o->file          ? OM_LOG_FILE
            : om_log_stderr_is_journal() ? OM_LOG_JOURNAL
                                         : OM_LOG_STDERR;
    int fd = -1, jfd = -1;
    struct sockaddr_un ja = {.sun_family = AF_UNIX};
    if (t == OM_LOG_FILE) {
        if (!o->file || !*o->file)
            return om_errf(OM_E_InvalidParameter, "log target file: no file given. HINT: add "
                                                  "--log-file PATH");
        if (strlen(o->file) >= sizeof L.path)
            return om_errf(OM_E_InvalidParameter, "log file %.64s...: path too long", o->file);
        int err;
        if ((fd = open_file(o->file, &err)) < 0)
            return om_errf(open_error(err), "opening the log file %s: %s", o->file, open_why(err));
    }
    if (t == OM_LOG_JOURNAL) {
        const char *sp = getenv("OMBRA_JOURNAL_SOCKET");
        if (!sp || !*sp) sp = "/run/systemd/journal/socket";
        if (strlen(sp) >= sizeof L.jaddr.sun_path)
            return om_errf(OM_E_InvalidParameter, "journal socket %s: path too long", sp);
        /* A socket that cannot be made now is not an error: every record falls back to the
         * stderr line, as for a journald that is down. */
        jfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        strcpy(ja.sun_path, sp);
    }
    pthread_mutex_lock(&L.mu);
    snprintf(L.prog, sizeof L.prog, "%s", o->prog);
    L.target = t;
    if (L.fd >= 0) close(L.fd);
    L.fd = fd;
    if (fd >= 0) snprintf(L.path, sizeof L.path, "%s", o->file);
    L.stderr_to_file = fd >= 0 && o->stderr_to_file;
    if (L.stderr_to_file) dup2(fd, 2);
    if (L.jfd >= 0) close(L.jfd);
    L.jfd = jfd;
    L.jaddr = ja;
    L.jlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(ja.sun_path) + 1);
    pthread_mutex_unlock(&L.mu);
    daemon_mode = 1;
    if (o->level >= OM_DEBUG) {
        min_level = o->level;
        debug_on = o->level == OM_DEBUG || getenv("OMBRA_DEBUG") != NULL;
    } else
        min_level = OM_DEBUG; /* debug_on decides whether debug records go out */
    return 0;
}

/* ---- writing ---- */

/* The whole of buf to fd (a short write to a pipe or a full disk: what went is kept). */
static void write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        buf += w;
        n -= (size_t)w;
    }
}

/* The journal's fallback: the line to stderr, without waiting when stderr is a socket
 * (journald's stream, which stalls with its datagram socket): a line it does not take at once
 * is lost and counted, the rest of one it took in part too (a stream has no records to keep
 * whole). Any other stderr (a file, a terminal, a pipe) is written as usual. */
static void stderr_nowait(const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = send(2, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == ENOTSOCK) {
            write_all(2, buf, n);
            return;
        }
        if (w <= 0) {
            L.lost++;
            return;
        }
        buf += w;
        n -= (size_t)w;
    }
}

uint64_t om_log_journal_refused(uint64_t *lost)
{
    pthread_mutex_lock(&L.mu);
    uint64_t r = L.journal_refused;
    if (lost) *lost = L.lost;
    pthread_mutex_unlock(&L.mu);
    return r;
}

/* Under mu: reopens the file target at its path (dup2 over the old descriptor in one step, so
 * no record sees it closed). 0, or open_file's error; the old file stays in use then. */
static int reopen_locked(void)
{
    reopen_wanted = 0;
    if (L.target != OM_LOG_FILE || L.fd < 0) return 0;
    int err, fd = open_file(L.path, &err);
    if (fd < 0) return err;
    dup2(fd, L.fd);
    if (L.stderr_to_file) dup2(fd, 2);
    close(fd);
    return 0;
}

int om_log_reopen_now(void)
{
    pthread_mutex_lock(&L.mu);
    int e = reopen_locked();
    pthread_mutex_unlock(&L.mu);
    return e ? om_errf(open_error(e),
                       "reopening the log file %s: %s (still writing to the old one)", L.path,
                       open_why(e))
             : 0;
}

static void daemon_record(enum om_level lvl, const om_log_field *fields, const char *msg)
{
    char line[MSG_MAX + 256];
    pthread_mutex_lock(&L.mu);
    int e = reopen_wanted ? reopen_locked() : 0;
    if (e) { /* said in the old file, which stays in use */
        char why[PATH_MAX + 100];
        snprintf(why, sizeof why, "reopening the log file %s: %s (still writing to the old one)",
                 L.path, open_why(e));
        size_t n = om_log_format_line(line, sizeof line, om_now_ns(), L.prog, (int)getpid(),
                                      OM_ERROR, why);
        write_all(L.fd, line, n);
    }
    if (L.target == OM_LOG_JOURNAL && L.jfd >= 0) {
        char rec[JOURNAL_MAX];
        size_t n = om_log_format_journal(rec, sizeof rec, L.prog, lvl, fields, msg);
        /* Never waits (the socket is non-blocking as well): a journald that stalls must not
         * stall every thread that logs, nor the signal thread's SIGTERM. A record it does not
         * take at once (EAGAIN: its queue is full) is written as the stderr line below. */
        if (n && sendto(L.jfd, rec, n, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&L.jaddr,
                        L.jlen) == (ssize_t)n) {
            pthread_mutex_unlock(&L.mu);
            return;
        }
        L.journal_refused++;
    }
    size_t n = om_log_format_line(line, sizeof line, om_now_ns(), L.prog, (int)getpid(), lvl, msg);
    if (L.target == OM_LOG_JOURNAL)
        stderr_nowait(line, n);
    else
        write_all(L.target == OM_LOG_FILE && L.fd >= 0 ? L.fd : 2, line, n);
    pthread_mutex_unlock(&L.mu);
}

const char *om_log_tool_prefix(enum om_level lvl)
{
    static _Atomic int journal = -1; /* fd 2 does not change under a tool */
    if (journal < 0) journal = om_log_stderr_is_journal();
    static const char *const pri[] = {"<7>", "<6>", "<4>", "<3>"};
    return journal && lvl >= OM_DEBUG && lvl <= OM_ERROR ? pri[lvl] : "";
}

static void logv(enum om_level lvl, const om_log_field *fields, const char *fmt, va_list ap)
{
    if (debug_on < 0) debug_on = getenv("OMBRA_DEBUG") != NULL;
    if (lvl == OM_DEBUG && !debug_on) return;
    if ((int)lvl < min_level) return;
    char msg[MSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (daemon_mode) {
        daemon_record(lvl, fields, msg);
        return;
    }
    /* One fprintf per line so lines from several threads do not interleave. */
    one_line(msg, strlen(msg));
    fprintf(stderr, "%s%s: %s: %s\n", om_log_tool_prefix(lvl), L.prog, level_names[lvl], msg);
}

void om_log(enum om_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    logv(lvl, NULL, fmt, ap);
    va_end(ap);
}

void om_log_with(enum om_level lvl, const om_log_field *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    logv(lvl, fields, fmt, ap);
    va_end(ap);
}
