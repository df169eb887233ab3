/* A client of etcd v3 through its JSON gateway (http(s)://host:2379/v3/...), for the directory
 * of a DAG, the servers' leases and the copies' status (ARCHITECTURE.md, "Several servers").
 *
 * Wire. Every call is one POST of a JSON object to /v3/kv/range, /v3/kv/put, /v3/kv/txn,
 * /v3/kv/deleterange, /v3/lease/grant|keepalive|revoke, /v3/maintenance/status, and the watch
 * a streaming POST to /v3/watch. Keys and values travel base64-encoded and int64 fields as
 * decimal strings; this client hides both: keys are C strings, values bytes of any kind
 * (zeros included), revisions and lease ids int64_t.
 *
 * Endpoints. etcd_open takes a comma-separated list of URLs ("http://10.0.0.1:2379,
 * http://10.0.0.2:2379", or https:// with etcd_tls). A call tries the endpoint that answered
 * last, and on a failure to connect (refused, no route, name not resolved, TLS handshake
 * refused: the request was never sent) the next one, each once. A request that was sent and
 * then failed (a timeout, a connection cut mid-answer) is not sent again elsewhere, so a put
 * or a txn never runs twice behind the caller's back: the caller gets EtcdUnavailable and
 * decides (a txn comparing revisions is safe to retry; it fails if the first one took).
 *
 * Time. Every call is bounded by the timeout (default ETCD_DEFAULT_TIMEOUT_MS, etcd_set_timeout),
 * for all the endpoints it tries together; the connect to each endpoint gets at most its share
 * of it, so one dead endpoint in front does not eat the whole budget.
 *
 * Errors. Every call returns 0 or an error of errors.def with the thread's detail
 * (om_err_detail) naming the endpoint and what failed:
 *   EtcdUnavailable    no endpoint answered: "etcd at http://127.0.0.1:2379: /v3/kv/put:
 *                      Couldn't connect to server (Connection refused)"; the detail lists
 *                      every endpoint tried and ends with a HINT;
 *   EtcdRequestFailed  etcd answered with an HTTP error: "etcd at URL: /v3/lease/revoke:
 *                      HTTP 404: etcdserver: requested lease not found";
 *   InvalidParameter   an answer that is not what the gateway sends (bad JSON, bad base64);
 *   OutOfMemory.
 * A txn whose comparisons fail is no error: etcd_txn_commit says so in *succeeded.
 *
 * Threads. An etcd handle is shared by any number of threads: each call uses a curl handle of
 * its own, and the health counters are kept under a mutex. A watch runs on a thread of its own.
 * etcd_close only after every watch of the handle is stopped and no call is running.
 *
 * Health. Every request and the watch's reconnections update one state (etcd_health): whether
 * the last request reached etcd, which endpoint, how many failed in a row, the last error and
 * how long ago etcd last answered: what `ombra dag status` shows. */
#ifndef OM_ETCD_ETCD_H
#define OM_ETCD_ETCD_H

#include <stddef.h>
#include <stdint.h>

#define ETCD_DEFAULT_TIMEOUT_MS 5000

typedef struct etcd etcd;

/* Client-certificate authentication (https endpoints): the CA that signed etcd's server
 * certificate, and this client's certificate and key (PEM). Any may be NULL: no CA means the
 * system's store, no certificate means none is offered. */
typedef struct etcd_tls {
    const char *ca_file, *cert_file, *key_file;
} etcd_tls;

/* endpoints: comma-separated http:// or https:// URLs (no path). tls: NULL for none. Opens no
 * connection yet: an etcd that is down is found by the first call (use etcd_ping to check). */
int etcd_open(const char *endpoints, const etcd_tls *tls, etcd **out);
/* etcd_open as a server of the DAG and its CLI use it: https endpoints are asked with this
 * server's certificate of the DAG ($OMBRA_HOME/dag/server.crt and server.key; etcd runs with
 * client-certificate authentication against the DAG's CA), and etcd's own certificate is checked
 * against the DAG's ca.crt, never the system's store. A missing file is an error naming it. */
int etcd_open_server(const char *endpoints, etcd **out);
/* Bounds every later call (ms, > 0). Set it before the handle is shared. */
void etcd_set_timeout(etcd *e, unsigned timeout_ms);
void etcd_close(etcd *e);
/* One cheap request (/v3/maintenance/status): 0 when etcd answers; its version into ver. */
int etcd_ping(etcd *e, char *ver, size_t n);

/* ---- keys ---- */

/* One key as etcd holds it. val has len bytes and one more zero byte after them (a value that
 * is text can be read as a string). create_rev: the revision that created the key; mod_rev:
 * that of its last change; version: changes since it was created (1 after the create); lease:
 * the lease it is bound to, 0 when none. In a DELETE event only key and mod_rev are set (the
 * revision of the delete). */
typedef struct etcd_kv {
    char *key;
    unsigned char *val;
    size_t len;
    int64_t create_rev, mod_rev, version, lease;
} etcd_kv;
/* Frees n kvs and the array (kvs may be NULL). */
void etcd_kvs_free(etcd_kv *kvs, size_t n);

/* *kv: the key (one etcd_kv, free with etcd_kvs_free(*kv, 1)), or NULL when it does not exist.
 * *rev (may be NULL): the store's revision the answer was read at. */
int etcd_get(etcd *e, const char *key, etcd_kv **kv, int64_t *rev);
/* Every key that starts with prefix, in key order (*kvs NULL when *n is 0), read at one
 * revision (*rev, may be NULL). */
int etcd_range_prefix(etcd *e, const char *prefix, etcd_kv **kvs, size_t *n, int64_t *rev);
/* Creates or replaces key; lease 0 for none (the key goes when a lease expires or is revoked;
 * a lease that no longer exists: EtcdRequestFailed). */
int etcd_put(etcd *e, const char *key, const void *val, size_t len, int64_t lease);
/* Deletes key, or every key starting with it when prefix; *deleted (may be NULL): how many. */
int etcd_delete(etcd *e, const char *key, int prefix, int64_t *deleted);

/* Forgets the history before rev (a watch from an older revision then starts with a RESYNC).
 * etcd compacts by itself only when configured to; an operator may call this. */
int etcd_compact(etcd *e, int64_t rev);

/* ---- transactions ----
 *
 * A transaction is "if every comparison holds, run the `then` ops, else the `else` ops", atomic
 * in etcd. Build it, commit it, read what it did, free it:
 *
 *   etcd_txn *t = etcd_txn_new();
 *   etcd_txn_cmp_mod(t, key, ETCD_EQUAL, rev_read);     // nobody changed it since I read it
 *   etcd_txn_put(t, ETCD_THEN, key, val, len, 0);
 *   etcd_txn_range(t, ETCD_ELSE, key, 0);                // else: what is there now
 *   int ok, rc = etcd_txn_commit(e, t, &ok);
 *   if (!rc && !ok) { const etcd_txn_result *r = etcd_txn_result_at(t, 0); r->kvs ... }
 *   etcd_txn_free(t);
 *
 * The builder calls never fail: an allocation failure is kept and returned by the commit
 * (OutOfMemory), and a NULL txn (etcd_txn_new out of memory) is accepted everywhere. A txn may
 * be committed again (e.g. after reading anew; the results are then the new ones). */
typedef struct etcd_txn etcd_txn;
typedef enum etcd_cmp_op { ETCD_EQUAL, ETCD_NOT_EQUAL, ETCD_LESS, ETCD_GREATER } etcd_cmp_op;
typedef enum etcd_branch { ETCD_ELSE = 0, ETCD_THEN = 1 } etcd_branch;
typedef enum etcd_op_kind { ETCD_OP_RANGE, ETCD_OP_PUT, ETCD_OP_DELETE } etcd_op_kind;

etcd_txn *etcd_txn_new(void);
void etcd_txn_free(etcd_txn *t);
/* key's mod_rev / version / create_rev compared with n ("key op n"). A key that does not exist
 * compares as 0 on all three. */
void etcd_txn_cmp_mod(etcd_txn *t, const char *key, etcd_cmp_op op, int64_t n);
void etcd_txn_cmp_version(etcd_txn *t, const char *key, etcd_cmp_op op, int64_t n);
void etcd_txn_cmp_create(etcd_txn *t, const char *key, etcd_cmp_op op, int64_t n);
/* key's value compared with val (bytes); a key that does not exist fails the comparison. */
void etcd_txn_cmp_value(etcd_txn *t, const char *key, etcd_cmp_op op, const void *val, size_t len);
/* key does not exist (create_rev == 0). */
void etcd_txn_cmp_absent(etcd_txn *t, const char *key);
/* Every key under prefix has mod_rev op n (holds when there is none): with ETCD_LESS and
 * rev + 1, "nothing under prefix was created or changed since revision rev" (a delete under it
 * is not seen). */
void etcd_txn_cmp_prefix_mod(etcd_txn *t, const char *prefix, etcd_cmp_op op, int64_t n);
void etcd_txn_put(etcd_txn *t, etcd_branch b, const char *key, const void *val, size_t len,
                  int64_t lease);
void etcd_txn_delete(etcd_txn *t, etcd_branch b, const char *key, int prefix);
void etcd_txn_range(etcd_txn *t, etcd_branch b, const char *key, int prefix);

/* Runs t. *succeeded: 1 when the comparisons held (the then ops ran), 0 when not (the else ops
 * ran). Both are success (0); an error means nothing is known of what etcd did when it is
 * EtcdUnavailable after the request was sent (a timeout), and nothing ran otherwise. */
int etcd_txn_commit(etcd *e, etcd_txn *t, int *succeeded);
/* After a commit: one result per op of the branch that ran, in the order they were added. */
typedef struct etcd_txn_result {
    etcd_op_kind kind;
    etcd_kv *kvs; /* ETCD_OP_RANGE: the keys read (owned by the txn) */
    size_t n;
    int64_t deleted; /* ETCD_OP_DELETE: how many keys went */
} etcd_txn_result;
size_t etcd_txn_nresults(const etcd_txn *t);
const etcd_txn_result *etcd_txn_result_at(const etcd_txn *t, size_t i);
/* The store's revision after the commit (the revision of its writes when it wrote). */
int64_t etcd_txn_revision(const etcd_txn *t);

/* ---- leases ----
 *
 * A lease lives ttl seconds unless kept alive; the keys put with it go when it expires or is
 * revoked (etcd checks expiry about every 500 ms; its smallest TTL is a few seconds and a
 * smaller one is raised to it). Keep a lease alive every ttl/3 seconds. */
int etcd_lease_grant(etcd *e, int ttl_s, int64_t *id);
/* Renews id: *ttl_left its new TTL in seconds, 0 when the lease is gone (expired or revoked;
 * its keys are gone too: grant a new one). */
int etcd_lease_keepalive(etcd *e, int64_t id, int64_t *ttl_left);
/* Ends id now, deleting its keys. A lease already gone: EtcdRequestFailed (HTTP 404). */
int etcd_lease_revoke(etcd *e, int64_t id);

/* ---- watches ----
 *
 * A watch delivers every change of the keys under a prefix, in revision order, exactly once,
 * to a callback on its own thread:
 *   ETCD_EV_PUT     kv: the key as written (value, revisions);
 *   ETCD_EV_DELETE  kv: the key and the revision of the delete (mod_rev);
 *   ETCD_EV_RESYNC  the changes since the last event can no longer be told (etcd compacted its
 *                   history past them while the watch was away): kvs/n are every key under the
 *                   prefix at revision rev, the whole state to take instead of what the caller
 *                   built; events after rev follow.
 * rev is the revision of the event (of the snapshot for RESYNC). The event and its kvs are
 * valid during the callback only.
 *
 * A lost connection (etcd restarted, the endpoint down, the stream cut) is reconnected with
 * backoff (100 ms doubling to 5 s, back to 100 ms once connected), on the next endpoint when
 * one will not answer, and the watch asks for the revisions after the last one it delivered:
 * nothing is missed and nothing comes twice. The failures count in etcd_health.
 *
 * The callback must not call etcd_watch_stop (it would wait for itself); it may call the other
 * calls of the handle. Keep it short: the stream waits while it runs. */
typedef enum etcd_ev_type { ETCD_EV_PUT, ETCD_EV_DELETE, ETCD_EV_RESYNC } etcd_ev_type;
typedef struct etcd_event {
    etcd_ev_type type;
    const etcd_kv *kv;
    const etcd_kv *kvs;
    size_t n;
    int64_t rev;
} etcd_event;
typedef void (*etcd_watch_fn)(void *arg, const etcd_event *ev);
typedef struct etcd_watch etcd_watch;

/* Watches the keys under prefix from revision from_rev (0: from now; a revision read with
 * etcd_range_prefix + 1 to miss nothing after that read). Returns once etcd has created the
 * watch, so a change made after the return is delivered; when etcd cannot be reached within
 * the timeout, the error (EtcdUnavailable) and no watch. A from_rev etcd has compacted away
 * starts with a RESYNC. */
int etcd_watch_start(etcd *e, const char *prefix, int64_t from_rev, etcd_watch_fn cb, void *arg,
                     etcd_watch **out);
/* Ends the stream, joins the thread (a callback under way finishes first), frees w. */
void etcd_watch_stop(etcd_watch *w);

/* ---- health ---- */

typedef struct etcd_status {
    int connected;           /* the last request (or watch connection) reached etcd */
    char endpoint[256];      /* the endpoint in use (the one tried first by the next call) */
    unsigned failures;       /* requests failed in a row since etcd last answered */
    char last_error[512];    /* the detail of the last failure ("" when none yet) */
    int64_t since_ok_ms;     /* ms since etcd last answered; -1 when it never has */
    unsigned watches;        /* watches running */
    unsigned watch_failures; /* watch connections lost or refused since the handle was opened */
} etcd_status;
/* The state without a request (etcd_ping first for a fresh one). */
void etcd_health(etcd *e, etcd_status *st);

#endif
