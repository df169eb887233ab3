/* Inside the etcd client: the handle, the request core (http.c) and the JSON shapes of the
 * gateway, shared by kv.c, lease.c and watch.c. */
#ifndef OM_ETCD_INTERNAL_H
#define OM_ETCD_INTERNAL_H

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>

#include "etcd/etcd.h"

/* The largest answer kept in memory (a range of the whole directory is far below). */
#define ETCD_MAX_RESPONSE (64u << 20)

struct etcd {
    char **eps; /* the endpoints, without a trailing '/' */
    size_t neps;
    char *ca_file, *cert_file, *key_file;
    unsigned timeout_ms;
    pthread_mutex_t mu; /* everything below */
    size_t cur;         /* the endpoint tried first */
    int connected, ever_ok;
    unsigned failures, watches, watch_failures;
    uint64_t ok_ns; /* om_mono_ns of the last answer */
    char last_error[512];
};

/* ---- libcurl, loaded on demand (curl.c) ---- */

#define ETCD_CURL_SONAME "libcurl.so.4"

/* The libcurl functions the client calls, X(name) for curl_<name>. */
#define ETCD_CURL_FNS(X)                                                                           \
    X(global_init)                                                                                 \
    X(version_info)                                                                                \
    X(easy_init)                                                                                   \
    X(easy_setopt)                                                                                 \
    X(easy_perform)                                                                                \
    X(easy_getinfo)                                                                                \
    X(easy_cleanup)                                                                                \
    X(easy_strerror)                                                                               \
    X(slist_append)                                                                                \
    X(slist_free_all)                                                                              \
    X(multi_init)                                                                                  \
    X(multi_add_handle)                                                                            \
    X(multi_remove_handle)                                                                         \
    X(multi_perform)                                                                               \
    X(multi_poll)                                                                                  \
    X(multi_wakeup)                                                                                \
    X(multi_info_read)                                                                             \
    X(multi_cleanup)

/* etcd_curl.easy_init() is curl_easy_init(), with the prototype of curl's own header. The
 * table is filled by etcd_curl_load, which etcd_open calls: code that holds an etcd handle
 * may use it. (curl_easy_setopt through it loses curl's compile-time check of the option's
 * type, so pass long, pointers and callbacks exactly as curl's manual says.) */
typedef struct etcd_curl_api {
#define ETCD_CURL_FIELD(n) __typeof__(curl_##n) *n;
    ETCD_CURL_FNS(ETCD_CURL_FIELD)
#undef ETCD_CURL_FIELD
} etcd_curl_api;
extern etcd_curl_api etcd_curl;

/* Loads libcurl.so.4 and runs curl_global_init, once per process: 0, or FileNotFound naming
 * the library with dlerror's reason (or the function or version it lacks) and a HINT. A
 * failure is tried again by the next call. */
int etcd_curl_load(void);
/* Tests only: the name the next etcd_curl_load tries while nothing is loaded yet (NULL: the
 * real one). A test calls it before its first etcd_open to see the failure path. */
void etcd_curl_test_soname(const char *name);

/* A curl handle for url with the handle's TLS files, no signals, and TCP keepalive probes
 * that find a dead peer in a few seconds (a stream that waits for events sends nothing). */
CURL *etcd_curl_new(const etcd *e, const char *url);
/* The health state: etcd (endpoint ep) answered / a request failed with detail. */
void etcd_note_ok(etcd *e, size_t ep);
void etcd_note_fail(etcd *e, const char *detail);
/* The endpoint to try first. */
size_t etcd_first_ep(etcd *e);

/* POSTs body (stolen) to path and parses the answer into *resp (caller decrefs). idempotent:
 * the request may also be sent to the next endpoint after a failure that happened once it
 * was sent (reads only). */
int etcd_call(etcd *e, const char *path, json_t *body, int idempotent, json_t **resp);

/* Base64 (RFC 4648, with padding) of n bytes: a new string, NULL when out of memory. */
char *etcd_b64(const void *p, size_t n);
/* Decodes s into a new buffer (*out, with a zero byte after *n bytes). */
int etcd_unb64(const char *s, unsigned char **out, size_t *n);
/* The range end that makes [key, end) every key starting with key ("" when none: all keys
 * from key on, etcd's "\0"); a new string of *n bytes. */
unsigned char *etcd_prefix_end(const char *key, size_t *n);
/* A JSON string of base64(p, n), or NULL. */
json_t *etcd_b64_json(const void *p, size_t n);
/* An int64 field that the gateway sends as a string (or a number); 0 when absent. */
int64_t etcd_json_i64(json_t *o, const char *key);
/* A string of an int64 for a request. */
json_t *etcd_i64_json(int64_t v);
/* The gateway's "kvs" array into *kvs / *n (NULL / 0 when absent). */
int etcd_kvs_parse(json_t *arr, etcd_kv **kvs, size_t *n);
int etcd_kv_parse(json_t *o, etcd_kv *kv);
/* {"key": b64, "range_end": b64 when prefix}: a range, delete or compare's key part. */
json_t *etcd_key_json(const char *key, int prefix);

#endif
