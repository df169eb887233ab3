/* TLS 1.3 connections between the servers of a DAG, and their framed messages (tls.h).
 *
 * Sockets are non-blocking from the start; every wait is a poll with the caller's bound. The
 * SSL object of a connection is touched only under its mutex (OpenSSL allows one thread at a
 * time on it), which is held for one non-blocking SSL call and never across a wait, so a
 * sender is never stuck behind a reader that waits for bytes. A second mutex keeps a whole
 * message of one sender together. The socket is driven through our own BIO, which sends with
 * MSG_NOSIGNAL: a peer that vanished gives an error, never a SIGPIPE that would kill a process
 * that did not ignore it. */
#include "repl/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "base/vfs.h"
#include "repl/ca.h"

struct rp_tls {
    SSL_CTX *ctx;
    char dag[RP_NAME_MAX + 1], server[RP_NAME_MAX + 1];
};

struct rp_conn {
    int fd;
    SSL *ssl;
    pthread_mutex_t ssl_mu;  /* every call on ssl */
    pthread_mutex_t send_mu; /* one message at a time */
    _Atomic int broken;      /* rp_conn_ok == 0 */
    int fatal;               /* OpenSSL failed: no close_notify may be sent */
    int send_ms;
    /* The handshake: what the verify callback needs and finds. */
    const rp_tls *tls;
    const char *expect; /* the server rp_connect wants, or NULL */
    char why[320];      /* the first reason the peer's certificate was refused */
    char peer[RP_NAME_MAX + 1];
    char addr[INET6_ADDRSTRLEN + 8];
};

/* ---- the socket BIO, and one-time setup ---- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static BIO_METHOD *sock_meth;
static int conn_idx = -1;

static int sock_write(BIO *b, const char *p, size_t n, size_t *done)
{
    rp_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    *done = 0;
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w >= 0) {
        *done = (size_t)w;
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(b);
    return 0;
}

static int sock_read(BIO *b, char *p, size_t n, size_t *done)
{
    rp_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    *done = 0;
    ssize_t r = recv(c->fd, p, n, 0);
    if (r > 0) {
        *done = (size_t)r;
        return 1;
    }
    if (r == 0) errno = 0; /* the end: SSL sees it as the peer's close */
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(b);
    return 0;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* send() does not buffer */
}

static int sock_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void init_once(void)
{
    sock_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ombra socket");
    if (sock_meth) {
        BIO_meth_set_write_ex(sock_meth, sock_write);
        BIO_meth_set_read_ex(sock_meth, sock_read);
        BIO_meth_set_ctrl(sock_meth, sock_ctrl);
        BIO_meth_set_create(sock_meth, sock_create);
    }
    conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int64_t now_ms(void)
{
    return (int64_t)(om_mono_ns() / 1000000);
}

/* 1 when fd is ready for ev before deadline (monotonic ms; 0: no deadline), 0 when the deadline
 * passed. Errors and hang-ups count as ready: the next call says what is wrong. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline ? deadline - now_ms() : -1;
        if (deadline && left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return 1;
    }
}

static int64_t deadline_in(int ms)
{
    return ms < 0 ? 0 : now_ms() + (ms ? ms : 1);
}

/* ---- loading a server's DAG directory ---- */

static int dag_file(const char *dagdir, const char *name, char *p, size_t len)
{
    return om_path_join(p, len, dagdir, name);
}

static int missing(int rc, const char *dagdir, const char *name)
{
    if (rc != OM_E_FileNotFound) return rc;
    return om_errf(rc,
                   "%s/%s is missing: this server has no certificate of its DAG. HINT: "
                   "`ombra dag add-server NAME --address HOST:PORT` issues it",
                   dagdir, name);
}

/* server.crt must be signed by ca.crt, valid now, and of ca.crt's DAG. */
static int check_own_cert(const char *dagdir, X509 *ca, X509 *crt, rp_tls *t)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *x = X509_STORE_CTX_new();
    int rc = 0;
    if (!st || !x || !X509_STORE_add_cert(st, ca) || !X509_STORE_CTX_init(x, st, crt, NULL))
        rc = om_errf(OM_E_OutOfMemory, "checking %s/server.crt: out of memory", dagdir);
    if (!rc && X509_verify_cert(x) != 1)
        rc = om_errf(OM_E_InvalidParameter,
                     "%s/server.crt is not a valid certificate of this DAG's CA (%s/ca.crt): %s. "
                     "HINT: issue this server's certificate again with `ombra dag add-server`",
                     dagdir, dagdir, X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
    X509_STORE_CTX_free(x);
    X509_STORE_free(st);
    ERR_clear_error();
    char dag[RP_NAME_MAX + 1];
    if (!rc) rc = rp_cert_name(crt, NID_organizationName, "server.crt", dag);
    if (!rc && strcmp(dag, t->dag))
        rc = om_errf(OM_E_InvalidParameter, "%s/server.crt is of DAG %s, its ca.crt of DAG %s",
                     dagdir, dag, t->dag);
    if (!rc) rc = rp_cert_name(crt, NID_commonName, "server.crt", t->server);
    return rc;
}

static int verify_cb(int ok, X509_STORE_CTX *x);

static int make_ctx(rp_tls *t, X509 *ca, X509 *crt, EVP_PKEY *key, const char *dagdir)
{
    SSL_CTX *ctx = t->ctx = SSL_CTX_new(TLS_method());
    if (!ctx) return om_errf(OM_E_OutOfMemory, "making a TLS context: out of memory");
    if (X509_check_private_key(crt, key) != 1) {
        ERR_clear_error();
        return om_errf(OM_E_InvalidParameter,
                       "%s/server.key is not the key of %s/server.crt (an interrupted `dag "
                       "add-server`?). HINT: issue this server's certificate again",
                       dagdir, dagdir);
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) || !SSL_CTX_use_certificate(ctx, crt) ||
        !SSL_CTX_use_PrivateKey(ctx, key)) {
        char e[256];
        return om_errf(OM_E_Internal, "setting up TLS: %s", rp_ssl_error(e, sizeof e));
    }
    /* The only trust anchor is this DAG's CA: the context's store starts empty (no system
     * CAs are loaded), and a peer's certificate must be signed by it directly (depth 0). */
    if (!X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca)) {
        char e[256];
        return om_errf(OM_E_Internal, "setting up TLS: %s", rp_ssl_error(e, sizeof e));
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_verify_depth(ctx, 0);
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_X509_STRICT);
    /* Every connection shows its certificate: no resumption. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return 0;
}

int rp_tls_load(const char *dagdir, rp_tls **out)
{
    pthread_once(&once, init_once);
    if (!sock_meth || conn_idx < 0) return om_errf(OM_E_Internal, "setting up TLS failed");
    rp_tls *t = calloc(1, sizeof *t);
    if (!t) return om_errf(OM_E_OutOfMemory, "loading %s: out of memory", dagdir);
    X509 *ca = NULL, *crt = NULL;
    EVP_PKEY *key = NULL;
    char p[4096];
    int rc = dag_file(dagdir, "ca.crt", p, sizeof p);
    if (!rc) rc = missing(rp_cert_read(p, &ca), dagdir, "ca.crt");
    if (!rc) rc = rp_cert_name(ca, NID_organizationName, "ca.crt", t->dag);
    if (!rc) rc = dag_file(dagdir, "server.crt", p, sizeof p);
    if (!rc) rc = missing(rp_cert_read(p, &crt), dagdir, "server.crt");
    if (!rc) rc = dag_file(dagdir, "server.key", p, sizeof p);
    if (!rc) rc = missing(rp_key_read(p, &key), dagdir, "server.key");
    if (!rc) rc = check_own_cert(dagdir, ca, crt, t);
    if (!rc) rc = make_ctx(t, ca, crt, key, dagdir);
    X509_free(ca);
    X509_free(crt);
    EVP_PKEY_free(key);
    if (rc) {
        rp_tls_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void rp_tls_free(rp_tls *t)
{
    if (!t) return;
    SSL_CTX_free(t->ctx); /* connections hold their own reference */
    free(t);
}

const char *rp_tls_dag(const rp_tls *t)
{
    return t->dag;
}

const char *rp_tls_server(const rp_tls *t)
{
    return t->server;
}

/* ---- the handshake: who is let in ---- */

static void set_why(rp_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(rp_conn *c, const char *fmt, ...)
{
    if (c->why[0]) return; /* the first reason is the one */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
}

/* OpenSSL's chain check first (ok), then ours on the peer's own certificate (depth 0): its
 * DAG, and for a client the server it expects. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    rp_conn *c = ssl ? SSL_get_ex_data(ssl, conn_idx) : NULL;
    if (!c) return 0;
    if (!ok) {
        int e = X509_STORE_CTX_get_error(x);
        switch (e) {
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_CERT_CHAIN_TOO_LONG:
            set_why(c, "its certificate is not signed by the CA of DAG %s (%s)", c->tls->dag,
                    X509_verify_cert_error_string(e));
            break;
        default:
            set_why(c, "its certificate is refused: %s", X509_verify_cert_error_string(e));
        }
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(x) != 0) return 1;
    X509 *crt = X509_STORE_CTX_get_current_cert(x);
    char dag[RP_NAME_MAX + 1], cn[RP_NAME_MAX + 1];
    if (rp_cert_name(crt, NID_organizationName, "its certificate", dag) ||
        rp_cert_name(crt, NID_commonName, "its certificate", cn)) {
        set_why(c, "%s", om_err_detail());
    } else if (strcmp(dag, c->tls->dag)) {
        set_why(c,
                "its certificate is of DAG %s, not %s (signed by this DAG's CA all the same: "
                "the CA's key may have been used outside `ombra dag add-server`)",
                dag, c->tls->dag);
    } else if (c->expect && strcmp(cn, c->expect)) {
        set_why(c, "it is server %s, not the expected %s", cn, c->expect);
    } else {
        snprintf(c->peer, sizeof c->peer, "%s", cn);
        return 1;
    }
    X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

/* Why a handshake failed, in words (for the log and the error), and its error code. */
static int handshake_failure(rp_conn *c, int sslerr, int sys_errno)
{
    unsigned long e = ERR_peek_error();
    int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
    char buf[256];
    int rc = OM_E_FileAccessDenied;
    if (!c->why[0]) {
        if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
            set_why(c, "it sent no certificate");
        else if (reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_PROTOCOLS_AVAILABLE ||
                 reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)
            set_why(c, "it does not speak TLS 1.3");
        else if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_HTTP_REQUEST ||
                 reason == SSL_R_HTTPS_PROXY_REQUEST || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
                 reason == SSL_R_RECORD_LENGTH_MISMATCH || reason == SSL_R_UNEXPECTED_RECORD ||
                 reason == SSL_R_UNEXPECTED_MESSAGE)
            set_why(c, "it does not speak TLS (%s)", ERR_reason_error_string(e));
        else if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
                 reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
                 reason == SSL_R_TLSV1_ALERT_ACCESS_DENIED)
            set_why(c, "it refused this server's certificate (%s): it is not of this DAG",
                    ERR_reason_error_string(e));
        else if (reason >= SSL_AD_REASON_OFFSET)
            set_why(c, "it ended the handshake (%s)", ERR_reason_error_string(e));
        else if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING ||
                 (sslerr == SSL_ERROR_SYSCALL && !e) || sslerr == SSL_ERROR_ZERO_RETURN) {
            rc = sys_errno && sys_errno != ECONNRESET && sys_errno != EPIPE ? OM_E_DiskIO
                                                                            : OM_E_ConnectionClosed;
            set_why(c, "it closed the connection during the handshake%s%s", sys_errno ? ": " : "",
                    sys_errno ? strerror(sys_errno) : "");
        } else
            set_why(c, "TLS handshake failed (%s)", e ? ERR_error_string(e, buf) : "no detail");
    }
    ERR_clear_error();
    return rc;
}

/* Runs the handshake of c (server or client side) until it ends or deadline passes. */
static int handshake(rp_conn *c, int server, int timeout_ms)
{
    int64_t deadline = deadline_in(timeout_ms);
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
        if (r == 1) break;
        int e = SSL_get_error(c->ssl, r), se = errno;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (!wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                c->fatal = 1;
                set_why(c, "no TLS handshake within %d ms", timeout_ms);
                return OM_E_DiskIO;
            }
            continue;
        }
        c->fatal = 1;
        return handshake_failure(c, e, se);
    }
    /* The callback has named the peer; a certificate it never saw would be a bug. */
    if (!c->peer[0] || SSL_get_verify_result(c->ssl) != X509_V_OK ||
        SSL_version(c->ssl) != TLS1_3_VERSION) {
        c->fatal = 1;
        set_why(c, "its handshake ended without a checked certificate");
        return OM_E_FileAccessDenied;
    }
    return 0;
}

static void conn_free(rp_conn *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    SSL_free(c->ssl);
    pthread_mutex_destroy(&c->ssl_mu);
    pthread_mutex_destroy(&c->send_mu);
    free(c);
}

static void addr_str(const struct sockaddr_storage *a, char *out, size_t len)
{
    char h[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)a;
        inet_ntop(AF_INET, &s->sin_addr, h, sizeof h);
        port = ntohs(s->sin_port);
        snprintf(out, len, "%s:%u", h, port);
    } else if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)a;
        inet_ntop(AF_INET6, &s->sin6_addr, h, sizeof h);
        port = ntohs(s->sin6_port);
        snprintf(out, len, "[%s]:%u", h, port);
    } else
        snprintf(out, len, "?");
}

/* A connection object around the connected socket fd (taken over: closed on failure). */
static int conn_new(rp_tls *t, int fd, int server, const char *expect, rp_conn **out)
{
    rp_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return om_errf(OM_E_OutOfMemory, "a connection: out of memory");
    }
    c->fd = fd;
    c->tls = t;
    c->expect = expect;
    c->send_ms = RP_SEND_STALL_MS;
    pthread_mutex_init(&c->ssl_mu, NULL);
    pthread_mutex_init(&c->send_mu, NULL);
    struct sockaddr_storage a;
    socklen_t al = sizeof a;
    if (getpeername(fd, (struct sockaddr *)&a, &al) == 0)
        addr_str(&a, c->addr, sizeof c->addr);
    else
        snprintf(c->addr, sizeof c->addr, "?");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* headers go out at once */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->ssl = SSL_new(t->ctx);
    BIO *b = c->ssl ? BIO_new(sock_meth) : NULL;
    if (!b) {
        conn_free(c);
        return om_errf(OM_E_OutOfMemory, "a TLS connection: out of memory");
    }
    BIO_set_data(b, c);
    SSL_set_bio(c->ssl, b, b);
    SSL_set_ex_data(c->ssl, conn_idx, c);
    if (server)
        SSL_set_accept_state(c->ssl);
    else
        SSL_set_connect_state(c->ssl);
    *out = c;
    return 0;
}

int rp_accept_fd(rp_tls *t, int fd, int timeout_ms, rp_conn **out)
{
    rp_conn *c = NULL;
    int rc = conn_new(t, fd, 1, NULL, &c);
    if (rc) return rc;
    if ((rc = handshake(c, 1, timeout_ms))) {
        /* Refused: closed at once, and nothing of its data was read. */
        om_warn("refused a connection from %s: %s", c->addr, c->why);
        rc = om_errf(rc, "refused a connection from %s: %s", c->addr, c->why);
        conn_free(c);
        return rc;
    }
    c->expect = NULL;
    om_debug("connection from %s: server %s of DAG %s", c->addr, c->peer, t->dag);
    *out = c;
    return 0;
}

int rp_accept(rp_tls *t, int lfd, int timeout_ms, rp_conn **out)
{
    int64_t deadline = deadline_in(timeout_ms);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) return rp_accept_fd(t, fd, timeout_ms, out);
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return om_errf(om_err_from_errno(errno), "accepting a connection: %s", strerror(errno));
        if (!wait_fd(lfd, POLLIN, deadline))
            return om_errf(OM_E_DiskIO, "no connection within %d ms", timeout_ms);
    }
}

/* ---- connecting ---- */

/* A TCP connection to one of host's addresses, within deadline. */
static int tcp_connect(const char *host_port, const char *host, unsigned port, int family,
                       int64_t deadline, int *out)
{
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    struct addrinfo hints = {.ai_family = family,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (family ? AI_NUMERICHOST : 0)};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g)
        return om_errf(OM_E_DiskIO, "connecting to %s: %s", host_port,
                       g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    int e = ETIMEDOUT, fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            socklen_t l = sizeof e;
            if (!wait_fd(fd, POLLOUT, deadline))
                e = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0)
                e = errno;
            r = e ? -1 : 0;
        } else if (r != 0)
            e = errno;
        if (r != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return om_errf(OM_E_DiskIO, "connecting to %s: %s%s", host_port, strerror(e),
                       e == ECONNREFUSED
                           ? ". HINT: is the replication service (ombra-repld) running there?"
                           : "");
    *out = fd;
    return 0;
}

int rp_connect(rp_tls *t, const char *host_port, const char *expect_server, int timeout_ms,
               rp_conn **out)
{
    char host[256];
    unsigned port = 0;
    int family = 0, fd = -1;
    int rc = rp_addr_parse(host_port, host, sizeof host, &port, &family);
    if (!rc && expect_server) rc = rp_name_check("server name", expect_server);
    if (rc) return rc;
    int64_t deadline = deadline_in(timeout_ms);
    if ((rc = tcp_connect(host_port, host, port, family, deadline, &fd))) return rc;
    rp_conn *c = NULL;
    if ((rc = conn_new(t, fd, 0, expect_server, &c))) return rc;
    int64_t left = deadline - now_ms();
    if ((rc = handshake(c, 0, timeout_ms < 0 ? -1 : left > 0 ? (int)left : 1))) {
        rc = om_errf(rc, "connecting to %s: the server is refused: %s", host_port, c->why);
        conn_free(c);
        return rc;
    }
    c->expect = NULL;
    *out = c;
    return 0;
}

const char *rp_conn_peer(const rp_conn *c)
{
    return c->peer;
}

const char *rp_conn_addr(const rp_conn *c)
{
    return c->addr;
}

int rp_conn_ok(const rp_conn *c)
{
    return !atomic_load(&c->broken);
}

void rp_conn_set_send_timeout(rp_conn *c, int ms)
{
    if (ms > 0) c->send_ms = ms;
}

void rp_conn_shutdown(rp_conn *c)
{
    atomic_store(&c->broken, 1);
    shutdown(c->fd, SHUT_RDWR);
}

void rp_close(rp_conn *c)
{
    if (!c) return;
    if (!c->fatal) {
        pthread_mutex_lock(&c->ssl_mu);
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* one try: the close_notify goes if the socket takes it */
        ERR_clear_error();
        pthread_mutex_unlock(&c->ssl_mu);
    }
    conn_free(c);
}

/* ---- moving bytes ---- */

/* The error of an SSL call that failed with e (not a retry). Under ssl_mu. */
static int io_failure(rp_conn *c, int e, int sys_errno, const char *doing)
{
    unsigned long x = ERR_peek_error();
    int reason = ERR_GET_LIB(x) == ERR_LIB_SSL ? ERR_GET_REASON(x) : 0;
    char buf[256];
    int rc;
    if (e != SSL_ERROR_ZERO_RETURN) c->fatal = 1;
    if (e == SSL_ERROR_ZERO_RETURN || reason == SSL_R_UNEXPECTED_EOF_WHILE_READING ||
        (e == SSL_ERROR_SYSCALL && !x &&
         (!sys_errno || sys_errno == ECONNRESET || sys_errno == EPIPE)))
        rc = om_errf(OM_E_ConnectionClosed, "%s %s (server %s): the peer closed the connection",
                     doing, c->addr, c->peer);
    else if (e == SSL_ERROR_SYSCALL && !x)
        rc = om_errf(OM_E_DiskIO, "%s %s (server %s): %s", doing, c->addr, c->peer,
                     strerror(sys_errno));
    else if (reason >= SSL_AD_REASON_OFFSET)
        rc = om_errf(OM_E_FileAccessDenied, "%s %s: the peer refused this connection: %s", doing,
                     c->addr, ERR_reason_error_string(x));
    else
        rc = om_errf(OM_E_DiskIO, "%s %s (server %s): %s", doing, c->addr, c->peer,
                     x ? ERR_error_string(x, buf) : "TLS failure");
    ERR_clear_error();
    return rc;
}

enum { IO_OK = 0, IO_LATE = 1 };

/* Reads exactly n bytes, waiting at most timeout_ms for each piece. IO_LATE when a wait ran
 * out (*got says how much came); else 0 or an error. */
static int read_full(rp_conn *c, void *p, size_t n, int timeout_ms, size_t *got)
{
    uint8_t *b = p;
    *got = 0;
    while (*got < n) {
        size_t r = 0;
        pthread_mutex_lock(&c->ssl_mu);
        ERR_clear_error();
        errno = 0;
        int ok = SSL_read_ex(c->ssl, b + *got, n - *got, &r);
        int e = ok ? SSL_ERROR_NONE : SSL_get_error(c->ssl, 0), se = errno;
        int rc = 0;
        if (!ok && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            rc = io_failure(c, e, se, "receiving from");
        pthread_mutex_unlock(&c->ssl_mu);
        if (rc) return rc;
        if (ok) {
            *got += r;
            continue;
        }
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        if (!wait_fd(c->fd, ev, deadline_in(timeout_ms))) return IO_LATE;
    }
    return IO_OK;
}

/* Writes all n bytes, failing when the peer takes nothing for the send timeout. */
static int write_full(rp_conn *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        /* One call per MiB at most: the mutex is never held for long. */
        size_t chunk = n < (1u << 20) ? n : (1u << 20), w = 0;
        pthread_mutex_lock(&c->ssl_mu);
        ERR_clear_error();
        errno = 0;
        int ok = SSL_write_ex(c->ssl, b, chunk, &w);
        int e = ok ? SSL_ERROR_NONE : SSL_get_error(c->ssl, 0), se = errno;
        int rc = 0;
        if (!ok && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            rc = io_failure(c, e, se, "sending to");
        pthread_mutex_unlock(&c->ssl_mu);
        if (rc) return rc;
        if (ok) {
            b += w;
            n -= w;
            continue;
        }
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        if (!wait_fd(c->fd, ev, deadline_in(c->send_ms)))
            return om_errf(OM_E_DiskIO, "sending to %s (server %s): it took nothing for %d ms",
                           c->addr, c->peer, c->send_ms);
    }
    return 0;
}

static int unusable(rp_conn *c)
{
    return om_errf(OM_E_ConnectionClosed,
                   "the connection with %s (server %s) failed earlier and carries nothing more. "
                   "HINT: close it and connect again",
                   c->addr, c->peer);
}

int rp_send(rp_conn *c, json_t *hdr, const void *bulk, size_t n)
{
    if (!json_is_object(hdr))
        return om_errf(OM_E_InvalidParameter, "a message header must be a JSON object");
    if (n > RP_MAX_BULK)
        return om_errf(OM_E_InvalidParameter,
                       "a bulk of %zu bytes is larger than the %u a message may carry. HINT: "
                       "send it in pieces",
                       n, RP_MAX_BULK);
    char *s = json_dumps(hdr, JSON_COMPACT);
    if (!s) return om_errf(OM_E_OutOfMemory, "encoding a message header: out of memory");
    size_t hl = strlen(s);
    if (hl > RP_MAX_HDR) {
        free(s);
        return om_errf(OM_E_InvalidParameter,
                       "a message header of %zu bytes is larger than the %u allowed", hl,
                       RP_MAX_HDR);
    }
    /* Both lengths and the header in one write: one TLS record for a small message. */
    uint8_t *f = malloc(hl + 8);
    if (!f) {
        free(s);
        return om_errf(OM_E_OutOfMemory, "sending a message: out of memory");
    }
    om_put32(f, (uint32_t)hl);
    memcpy(f + 4, s, hl);
    om_put32(f + 4 + hl, (uint32_t)n);
    free(s);
    pthread_mutex_lock(&c->send_mu);
    int rc = rp_conn_ok(c) ? write_full(c, f, hl + 8) : unusable(c);
    if (!rc && n) rc = write_full(c, bulk, n);
    if (rc) atomic_store(&c->broken, 1); /* a message cut short: the stream is lost */
    pthread_mutex_unlock(&c->send_mu);
    free(f);
    return rc;
}

/* The rest of a begun message: exactly n bytes, or the connection is broken. */
static int read_rest(rp_conn *c, void *p, size_t n, int timeout_ms)
{
    size_t got = 0;
    int rc = read_full(c, p, n, timeout_ms, &got);
    if (rc == IO_LATE)
        return om_errf(OM_E_DiskIO, "receiving from %s (server %s): a message stalled for %d ms",
                       c->addr, c->peer, timeout_ms);
    return rc;
}

/* A frame body of n bytes (within its cap, checked by the caller) in a buffer that grows with
 * what arrives, one byte more for a terminating 0. */
static int read_body(rp_conn *c, size_t n, int timeout_ms, uint8_t **out)
{
    size_t cap = n < 65536 ? n : 65536, got = 0;
    uint8_t *b = malloc(cap + 1);
    int rc = b ? 0 : om_errf(OM_E_OutOfMemory, "receiving %zu bytes: out of memory", n);
    while (!rc && got < n) {
        if (got == cap) {
            size_t ncap = cap > n / 2 ? n : cap * 2;
            uint8_t *nb = realloc(b, ncap + 1);
            if (!nb) {
                rc = om_errf(OM_E_OutOfMemory, "receiving %zu bytes: out of memory", n);
                break;
            }
            b = nb;
            cap = ncap;
        }
        rc = read_rest(c, b + got, cap - got, timeout_ms);
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

/* The message after its first byte h0 arrived; everything failing here breaks the stream. */
static int recv_rest(rp_conn *c, uint8_t h0, json_t **hdr, void **bulk, size_t *n, int timeout_ms)
{
    uint8_t h[4] = {h0};
    int rc = read_rest(c, h + 1, 3, timeout_ms);
    if (rc) return rc;
    uint32_t hl = om_get32(h);
    if (hl == 0)
        return om_errf(OM_E_InvalidParameter, "from %s (server %s): a message without a header",
                       c->addr, c->peer);
    if (hl > RP_MAX_HDR)
        return om_errf(OM_E_InvalidParameter,
                       "from %s (server %s): a message header of %u bytes (at most %u are "
                       "allowed): refused before reading it",
                       c->addr, c->peer, hl, RP_MAX_HDR);
    uint8_t *buf = NULL;
    if ((rc = read_body(c, hl, timeout_ms, &buf))) return rc;
    json_error_t jerr;
    json_t *o = json_loadb((const char *)buf, hl, 0, &jerr);
    free(buf);
    if (!o || !json_is_object(o)) {
        rc = om_errf(OM_E_InvalidParameter, "from %s (server %s): malformed message header: %s",
                     c->addr, c->peer, o ? "not a JSON object" : jerr.text);
        json_decref(o);
        return rc;
    }
    uint32_t bl = 0;
    if (!(rc = read_rest(c, h, 4, timeout_ms))) bl = om_get32(h);
    if (!rc && bl > RP_MAX_BULK)
        rc = om_errf(OM_E_InvalidParameter,
                     "from %s (server %s): a bulk of %u bytes (at most %u are allowed): refused "
                     "before reading it",
                     c->addr, c->peer, bl, RP_MAX_BULK);
    if (!rc && bl && !bulk)
        rc = om_errf(OM_E_InvalidParameter,
                     "from %s (server %s): a message with a bulk of %u bytes where none is "
                     "expected",
                     c->addr, c->peer, bl);
    uint8_t *data = NULL;
    if (!rc && bl) rc = read_body(c, bl, timeout_ms, &data);
    if (rc) {
        json_decref(o);
        return rc;
    }
    *hdr = o;
    if (bulk) *bulk = data;
    if (n) *n = bl;
    return 0;
}

int rp_recv(rp_conn *c, json_t **hdr, void **bulk, size_t *n, int timeout_ms)
{
    *hdr = NULL;
    if (bulk) *bulk = NULL;
    if (n) *n = 0;
    if (!rp_conn_ok(c)) return unusable(c);
    uint8_t h0;
    size_t got = 0;
    int rc = read_full(c, &h0, 1, timeout_ms, &got);
    if (rc == IO_LATE)
        /* Nothing of a message has come: the stream is intact, the caller may wait again. */
        return om_errf(OM_E_DiskIO, "no message from %s (server %s) within %d ms", c->addr, c->peer,
                       timeout_ms);
    if (!rc) rc = recv_rest(c, h0, hdr, bulk, n, timeout_ms);
    if (rc) atomic_store(&c->broken, 1);
    return rc;
}

int rp_local_port(int fd)
{
    struct sockaddr_storage a;
    socklen_t l = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &l) != 0) return -1;
    if (a.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&a)->sin_port);
    if (a.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    return -1;
}

int rp_listen(const char *addr_port, int *fd)
{
    char host[256];
    unsigned port = 0;
    int family = 0;
    int rc = rp_addr_parse(addr_port, host, sizeof host, &port, &family);
    if (!rc && family == AF_UNSPEC)
        rc = om_errf(OM_E_InvalidParameter,
                     "\"%s\": a listening address is an IP address. HINT: A.B.C.D:PORT, "
                     "0.0.0.0:PORT for all, or [v6]:PORT",
                     addr_port);
    if (rc) return rc;
    struct sockaddr_storage a = {0};
    socklen_t al;
    if (family == AF_INET) {
        struct sockaddr_in *s = (void *)&a;
        s->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &s->sin_addr);
        al = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (void *)&a;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, host, &s->sin6_addr);
        al = sizeof *s;
    }
    int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) return om_errf(OM_E_DiskIO, "socket for %s: %s", addr_port, strerror(errno));
    int one = 1;
    /* A restarted service takes its port back at once, past the old connections' TIME_WAIT. */
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, al) != 0 || listen(s, 64) != 0) {
        int e = errno;
        close(s);
        return om_errf(OM_E_DiskIO, "listening on %s: %s%s", addr_port, strerror(e),
                       e == EADDRINUSE      ? ". HINT: another process has this port; stop it or "
                                              "choose another"
                       : e == EADDRNOTAVAIL ? ". HINT: this machine has no such address"
                                            : "");
    }
    *fd = s;
    return 0;
}
