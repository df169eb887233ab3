/* Connections between the servers of a DAG: TCP, TLS 1.3, both ends authenticated by a
 * certificate of the DAG's certificate authority (ca.h), and framed messages on top
 * (ARCHITECTURE.md, "Several servers: the DAG"; docs/design.md, "Between servers").
 *
 * Who gets in. A server loads its DAG directory once (rp_tls_load): ca.crt, server.crt,
 * server.key. Every connection, in both directions, then:
 *   - speaks TLS 1.3 and nothing older;
 *   - shows a certificate (a client too: mutual authentication), signed by this DAG's ca.crt
 *     directly (ca.crt is the only certificate trusted; the system's CAs are not), valid now;
 *   - whose subject O is this DAG's name (the O of our ca.crt);
 *   - and, for rp_connect with expect_server, whose CN is that server.
 * A peer that fails any of these is refused during the handshake: rp_accept logs the peer's
 * address and why (om_log, warning), returns FileAccessDenied with the same words, and
 * closes the socket without reading one byte of application data from it. No session is
 * resumed (no tickets, no cache): every connection shows its certificate.
 *
 * TLS 1.3 sends a client's certificate after the server's last handshake message, so a client
 * whose certificate the server refuses may see rp_connect succeed; its first rp_recv then
 * fails with FileAccessDenied ("the peer refused this connection: ..."). A client never sends
 * anything meaningful before it has heard from the server.
 *
 * Messages. Each message is two frames, each a 4-byte little-endian length and its bytes:
 *   [u32 h][h bytes: one JSON object, the header][u32 b][b bytes: the bulk, raw]
 * b may be 0. Bulk data (log generations, pages) never goes through JSON. A header longer than
 * RP_MAX_HDR or a bulk longer than RP_MAX_BULK is refused when its length arrives, before
 * anything is allocated for it; a bulk's buffer then grows with the bytes that really arrive
 * (as base/proto.c does for the local sockets), so a peer that announces much and sends
 * little costs little.
 *
 * Threads. One thread at a time receives on a connection; any thread may send at the same
 * time (sends are serialised whole, so two messages never interleave). rp_close comes after
 * every other call on the connection has returned; rp_conn_shutdown (any thread) makes a
 * blocked rp_recv return. An rp_tls serves any number of threads and connections, and may be
 * freed before its connections.
 *
 * Errors (errors.def, detail set): ConnectionClosed when the peer closed or reset the
 * connection; FileAccessDenied when a peer is refused; InvalidParameter for a frame that breaks
 * the rules above; DiskIO for a timeout or another socket error. After a failure in the middle
 * of a message the connection can carry nothing more (rp_conn_ok is 0): close it. */
#ifndef OM_REPL_TLS_H
#define OM_REPL_TLS_H

#include <jansson.h>
#include <stddef.h>

#define RP_MAX_HDR       (1u << 20)
#define RP_MAX_BULK      (64u << 20)
#define RP_SEND_STALL_MS 60000

typedef struct rp_tls rp_tls;
typedef struct rp_conn rp_conn;

/* Loads dagdir/ca.crt, dagdir/server.crt and dagdir/server.key for connections of this
 * server. Refused, one clear error each: a missing file (FileNotFound, with a HINT to issue the
 * certificate); a server.key that anyone but its owner can read or write (FileAccessDenied, the
 * mode named); a server.crt not signed by ca.crt, expired, or of another DAG (InvalidParameter);
 * a server.key that is not server.crt's (InvalidParameter). */
int rp_tls_load(const char *dagdir, rp_tls **out);
void rp_tls_free(rp_tls *t);
/* This DAG's name (the O of ca.crt) and this server's (the CN of server.crt). */
const char *rp_tls_dag(const rp_tls *t);
const char *rp_tls_server(const rp_tls *t);

/* A listening TCP socket on "A.B.C.D:PORT" or "[v6]:PORT" (0.0.0.0 and [::] for every
 * address; PORT 0 picks a free port: rp_local_port says which), close-on-exec and non-blocking.
 * InvalidParameter for a bad address, DiskIO naming the address when it is taken. */
int rp_listen(const char *addr_port, int *fd);
/* The port a socket is bound to, or -1. */
int rp_local_port(int fd);

/* Takes one connection from the listening socket lfd, waiting for one at most timeout_ms
 * (< 0: no bound; DiskIO when none came), then completes the handshake within timeout_ms of
 * its arrival, as rp_accept_fd. */
int rp_accept(rp_tls *t, int lfd, int timeout_ms, rp_conn **out);
/* The server's handshake on fd, a connection accepted already (the socket is taken over:
 * closed on failure), within timeout_ms (< 0: no bound): for a service that accepts in one
 * thread and hands each handshake to another, so a slow peer delays nobody else. A refused
 * peer is logged and gets FileAccessDenied (above); one that closes during the handshake
 * ConnectionClosed; one too slow DiskIO. */
int rp_accept_fd(rp_tls *t, int fd, int timeout_ms, rp_conn **out);
/* Connects to host_port ("A.B.C.D:PORT", "[v6]:PORT" or "name:PORT") and completes the
 * handshake, both within timeout_ms (< 0: no bound). The server must pass the checks above
 * and, when expect_server is not NULL, be that server (its certificate's CN): else
 * FileAccessDenied saying why, and nothing is sent. */
int rp_connect(rp_tls *t, const char *host_port, const char *expect_server, int timeout_ms,
               rp_conn **out);

/* The peer's server name (its certificate's CN) and its address ("A.B.C.D:PORT" or
 * "[v6]:PORT"), for as long as the connection is open. */
const char *rp_conn_peer(const rp_conn *c);
const char *rp_conn_addr(const rp_conn *c);

/* Sends one message: hdr (a JSON object; not stolen) and n bytes of bulk (bulk may be NULL
 * when n is 0). A header or bulk over the limits is refused before anything is sent
 * (InvalidParameter; the connection stays usable). A peer that takes no byte for the send
 * timeout (RP_SEND_STALL_MS unless set) fails the send with DiskIO. */
int rp_send(rp_conn *c, json_t *hdr, const void *bulk, size_t n);
/* Receives one message: *hdr (the caller decrefs it), *bulk (malloc'd, the caller frees it;
 * NULL when the bulk is empty) and *n. bulk and n may be NULL for a message that must carry
 * no bulk: one that does is refused (InvalidParameter). timeout_ms (< 0: no bound) is the
 * longest wait for the message to begin, and then for each further piece of it, so a long
 * transfer that keeps moving never times out. A timeout before the message began gives DiskIO
 * and leaves the connection usable (call again); any other failure leaves it unusable. */
int rp_recv(rp_conn *c, json_t **hdr, void **bulk, size_t *n, int timeout_ms);
/* 1 while the connection can carry more messages: no failure in the middle of a message, no
 * protocol error, not closed by the peer. */
int rp_conn_ok(const rp_conn *c);
/* The longest a send waits for the peer to take bytes (ms > 0). */
void rp_conn_set_send_timeout(rp_conn *c, int ms);
/* Shuts the socket down both ways (any thread): a blocked rp_recv or rp_send returns
 * (ConnectionClosed or a socket error); the connection is then unusable. */
void rp_conn_shutdown(rp_conn *c);
/* Says goodbye (a TLS close_notify, without waiting) when the connection is still sound,
 * closes the socket and frees c. NULL is a no-op. */
void rp_close(rp_conn *c);

#endif
