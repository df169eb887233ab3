/* The control-socket protocol of ombra-vssd and ombra-store.
 *
 * A message is a frame: a 4-byte little-endian length, then that many bytes of one JSON object
 * (jansson). Bulk data never goes through JSON: a message whose object has "data": N is
 * followed by a second frame of N raw bytes (a message body, a file range). Frames are at most
 * OM_PROTO_MAX_JSON (JSON) or OM_PROTO_MAX_DATA (data) bytes; anything larger is a protocol
 * error and the connection is closed.
 *
 * A daemon bounds what one connection may make it wait for and hold (om_proto_limits, set by
 * server.h for the thread that serves the connection): how long it waits for the next message,
 * how long a message once begun may take to arrive, and how many bytes of announced frames it
 * sets aside, per connection and for all connections together. A frame over a bound is refused
 * before its buffer is allocated; a buffer then grows with the bytes that really arrive, so a
 * peer that announces much and sends little costs little. Clients run without limits (a
 * backup's reply may take hours).
 *
 * Replies carry "ok": true and their fields, or "ok": false, "error": <number>, "name":
 * <ESE-style name>, "message": <the detail>, which om_proto_reply_error builds from the
 * thread's error. */
#ifndef OM_BASE_PROTO_H
#define OM_BASE_PROTO_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define OM_PROTO_MAX_JSON (1u << 20)
#define OM_PROTO_MAX_DATA (256u << 20)

/* The bytes of frames being received or held by all connections of a daemon together
 * (initialise with OM_PROTO_BUDGET_INIT(limit)). */
typedef struct om_proto_budget {
    pthread_mutex_t mu;
    size_t limit, used;
} om_proto_budget;
#define OM_PROTO_BUDGET_INIT(lim)                                                                  \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, (lim), 0                                                        \
    }

/* What one connection of a daemon may cost. A frame larger than max_data, or than what the
 * budget has left, is refused when it is announced, before any allocation. The buffers of a
 * message count against the budget as they grow with the bytes that arrive, until the thread
 * asks for its next message (the caller is done with the data by then) or the limits are
 * unbound: `held`, kept by om_proto. */
typedef struct om_proto_limits {
    uint32_t idle_ms;              /* longest wait for the first byte of a message; 0: no bound */
    uint32_t frame_ms;             /* a message begun must be whole within this, plus 1 s per MiB of
                                      its data frame (a client sends at least that fast); 0: no bound */
    size_t max_data;               /* largest data frame one message may announce */
    om_proto_budget *budget;       /* shared with the daemon's other connections; NULL: none */
    size_t held;                   /* bytes of budget this connection holds */
    _Atomic int64_t idle_since_ms; /* monotonic ms since when om_proto_recv waits for the
                                      first byte of a message; 0 while a message is received
                                      or served (kept by om_proto, read by the server) */
    pthread_mutex_t *idle_mu;      /* held while idle_since_ms goes back to 0, so that the
                                      server, holding it, sees a connection still waiting
                                      (its socket open) for as long as it looks; may be NULL */
} om_proto_limits;

/* Binds lim to the calling thread: its om_proto_recv calls apply it. NULL unbinds, giving back
 * what the connection still holds of its budget. */
void om_proto_bind_limits(om_proto_limits *lim);
/* The limits bound to the calling thread (NULL: none). */
om_proto_limits *om_proto_thread_limits(void);

/* Sends obj (and data when data_len > 0, setting "data" in obj). A peer that closed the
 * connection gives ConnectionClosed, another socket error DiskIO. */
int om_proto_send(int fd, json_t *obj, const void *data, size_t data_len);
/* Receives one message: *obj (caller decrefs), and when it announces data, *data (malloc'd,
 * caller frees) and *data_len. A peer that closed (or reset) the connection gives
 * ConnectionClosed, "connection closed" (between two messages) or "connection closed in the
 * middle of a message"; another socket error gives DiskIO. Under limits
 * (om_proto_bind_limits): a connection idle past idle_ms ends like a closed one, with DiskIO
 * ("connection idle for N ms: closed"); a message not whole in time gives DiskIO; a frame over
 * max_data or beyond the budget gives OutOfMemory, before anything is allocated for it. */
int om_proto_recv(int fd, json_t **obj, uint8_t **data, size_t *data_len);
/* After a failed om_proto_recv on this thread: 1 when the connection simply ended between two
 * messages (the peer closed it, or it stayed idle past the bound), 0 when a message was bad,
 * late or refused, which the peer deserves to be told. */
int om_proto_ended_cleanly(void);

/* {"ok": true} plus fields (steals nothing; obj may be NULL for a bare ok). */
json_t *om_proto_ok(void);
/* {"ok": false, "error": err, "name": ..., "message": detail}. */
json_t *om_proto_error(int err);
/* For a client: when reply says ok=false, sets the thread's error detail from it and returns
 * its error number; else 0. */
int om_proto_check(json_t *reply);

/* Connects to a daemon's Unix socket path (FileNotFound with a HINT when nothing listens).
 * Before anything is sent it checks that the daemon is one this user may trust: the socket's
 * folder and the socket belong to root or to this user, the folder is not writable by others
 * (unless sticky), and the process listening (SO_PEERCRED) runs as root or as this user;
 * otherwise FileAccessDenied naming the owner, with a HINT. */
int om_proto_connect(const char *path, int *fd);
/* A daemon that already serves all the connections it can refuses a new one with
 * OutOfSessions before it reads the request: nothing was served, and the request may be sent
 * again. Returns 1, after a pause that grows from 50 ms to 1 s, while rc is that refusal and
 * the wait begun at the first call (*since_ns 0: now) is shorter than OMBRA_BUSY_WAIT seconds
 * (default 20); else 0, and at the end of such a wait the detail says how long it waited. */
int om_proto_busy_retry(int rc, uint64_t *since_ns, unsigned *attempt);
/* One request, one reply (progress objects sent before it are skipped); a busy daemon's
 * refusal is retried (om_proto_busy_retry). */
int om_proto_call(const char *path, json_t *req, const void *data, size_t data_len, json_t **reply,
                  uint8_t **rdata, size_t *rdata_len);

/* A deadline for this thread's requests, as a client: every connect, send and receive of the
 * thread (om_proto_call, store_client, ...) from now on gives up ms milliseconds from now,
 * with DiskIO, "no answer within N ms (waiting for a reply)", so that a daemon stopped or hung
 * cannot hang its client (ombra check, ombra metrics). 0: no deadline (the default; a backup's
 * reply may take hours). A connection given up in the middle of an exchange must not be used
 * again (store_client disconnects after a failed exchange). */
void om_proto_client_deadline(uint32_t ms);
/* 1 when a call failed since the last om_proto_client_deadline because the deadline passed. */
int om_proto_deadline_passed(void);

/* Small JSON accessors that set a clear error when a field is missing or has the wrong type. */
int om_json_str(json_t *obj, const char *key, const char **out);
int om_json_int(json_t *obj, const char *key, int64_t *out);
const char *om_json_str_or(json_t *obj, const char *key, const char *dflt);
int64_t om_json_int_or(json_t *obj, const char *key, int64_t dflt);

/* The whole of the open file f parsed as JSON into *out: an error naming f when it is larger
 * than max bytes, cannot be read, or is not JSON. */
struct om_file;
int om_json_read_file(struct om_file *f, size_t max, json_t **out);

#endif
