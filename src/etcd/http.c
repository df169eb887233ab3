/* The request core of the etcd client (etcd.h): endpoints, one POST with its timeout and
 * failover, the health state, and the gateway's encodings (base64, int64 strings, kvs). */
#include "etcd/etcd_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/error.h"
#include "base/paths.h"
#include "base/time.h"

static int oom(void)
{
    return om_errf(OM_E_OutOfMemory, "etcd: out of memory");
}

/* ---- the handle ---- */

static int add_endpoint(etcd *e, const char *s, size_t len)
{
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '/'))
        len--;
    if (!len) return 0;
    if (!((len > 7 && !strncmp(s, "http://", 7)) || (len > 8 && !strncmp(s, "https://", 8))))
        return om_errf(OM_E_InvalidParameter,
                       "etcd endpoint '%.*s' is not an http:// or https:// URL. HINT: give "
                       "--etcd as http://HOST:2379[,http://HOST2:2379...]",
                       (int)len, s);
    char **ne = realloc(e->eps, (e->neps + 1) * sizeof *ne);
    if (!ne) return oom();
    e->eps = ne;
    if (!(e->eps[e->neps] = strndup(s, len))) return oom();
    e->neps++;
    return 0;
}

static int tls_file(const char *path, const char *what, char **out)
{
    if (!path) return 0;
    if (access(path, R_OK))
        return om_errf(om_err_from_errno(errno), "etcd TLS %s %s: %s", what, path, strerror(errno));
    return (*out = strdup(path)) ? 0 : oom();
}

int etcd_open(const char *endpoints, const etcd_tls *tls, etcd **out)
{
    *out = NULL;
    int rc = etcd_curl_load();
    if (rc) return rc;
    etcd *e = calloc(1, sizeof *e);
    if (!e) return oom();
    pthread_mutex_init(&e->mu, NULL);
    e->timeout_ms = ETCD_DEFAULT_TIMEOUT_MS;
    for (const char *p = endpoints ? endpoints : ""; !rc;) {
        const char *c = strchr(p, ',');
        rc = add_endpoint(e, p, c ? (size_t)(c - p) : strlen(p));
        if (!c) break;
        p = c + 1;
    }
    if (!rc && !e->neps)
        rc = om_errf(OM_E_InvalidParameter,
                     "no etcd endpoint given. HINT: --etcd http://HOST:2379 or OMBRA_ETCD");
    if (!rc && tls)
        if (!(rc = tls_file(tls->ca_file, "CA file", &e->ca_file)) &&
            !(rc = tls_file(tls->cert_file, "certificate", &e->cert_file)))
            rc = tls_file(tls->key_file, "key", &e->key_file);
    if (rc) {
        etcd_close(e);
        return rc;
    }
    *out = e;
    return 0;
}

/* The certificate files of this server in $OMBRA_HOME/dag (docs/design.md, "etcd with client
 * certificates"); 0 for plain http endpoints, 1 with t filled, or an error naming the missing
 * file. */
static int server_tls(const char *endpoints, etcd_tls *t, char ca[4200], char crt[4200],
                      char key[4200])
{
    if (!strstr(endpoints, "https://")) return 0;
    char home[4096];
    int rc = om_data_dir(home, sizeof home);
    if (rc) return rc;
    snprintf(ca, 4200, "%s/dag/ca.crt", home);
    snprintf(crt, 4200, "%s/dag/server.crt", home);
    snprintf(key, 4200, "%s/dag/server.key", home);
    const char *miss = access(ca, R_OK)    ? ca
                       : access(crt, R_OK) ? crt
                       : access(key, R_OK) ? key
                                           : 0;
    if (miss)
        return om_errf(OM_E_FileNotFound,
                       "etcd at %s takes clients with a certificate of the DAG, and %s cannot be "
                       "read. HINT: ombra dag add-server NAME --address HOST:PORT --out "
                       "$OMBRA_HOME/dag (on the server that keeps the DAG's authority)",
                       endpoints, miss);
    *t = (etcd_tls){.ca_file = ca, .cert_file = crt, .key_file = key};
    return 1;
}

int etcd_open_server(const char *endpoints, etcd **out)
{
    *out = NULL;
    if (!endpoints || !*endpoints)
        return om_errf(OM_E_InvalidParameter,
                       "no etcd named. HINT: --etcd http://HOST:2379 or OMBRA_ETCD");
    etcd_tls tls;
    char ca[4200], crt[4200], key[4200];
    int rc = server_tls(endpoints, &tls, ca, crt, key);
    if (rc >= 0) rc = etcd_open(endpoints, rc ? &tls : NULL, out);
    return rc;
}

void etcd_set_timeout(etcd *e, unsigned timeout_ms)
{
    e->timeout_ms = timeout_ms ? timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
}

void etcd_close(etcd *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->neps; i++)
        free(e->eps[i]);
    free(e->eps);
    free(e->ca_file);
    free(e->cert_file);
    free(e->key_file);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* ---- health ---- */

size_t etcd_first_ep(etcd *e)
{
    pthread_mutex_lock(&e->mu);
    size_t c = e->cur;
    pthread_mutex_unlock(&e->mu);
    return c;
}

void etcd_note_ok(etcd *e, size_t ep)
{
    pthread_mutex_lock(&e->mu);
    e->cur = ep;
    e->connected = e->ever_ok = 1;
    e->failures = 0;
    e->ok_ns = om_mono_ns();
    pthread_mutex_unlock(&e->mu);
}

void etcd_note_fail(etcd *e, const char *detail)
{
    pthread_mutex_lock(&e->mu);
    e->connected = 0;
    e->failures++;
    snprintf(e->last_error, sizeof e->last_error, "%s", detail);
    pthread_mutex_unlock(&e->mu);
}

void etcd_health(etcd *e, etcd_status *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&e->mu);
    st->connected = e->connected;
    snprintf(st->endpoint, sizeof st->endpoint, "%s", e->eps[e->cur]);
    st->failures = e->failures;
    snprintf(st->last_error, sizeof st->last_error, "%s", e->last_error);
    st->since_ok_ms = e->ever_ok ? (int64_t)((om_mono_ns() - e->ok_ns) / 1000000) : -1;
    st->watches = e->watches;
    st->watch_failures = e->watch_failures;
    pthread_mutex_unlock(&e->mu);
}

/* ---- one request ---- */

/* A stream that waits for events sends nothing for minutes: keepalive probes after 2 s of
 * silence, 1 s apart, 3 unanswered ones end the connection; TCP_USER_TIMEOUT bounds how long
 * sent bytes may stay unacknowledged. A peer that vanished (a partition, a host gone) is found
 * in about 5 s instead of the kernel's two hours. */
static int sockopt(void *arg, curl_socket_t fd, curlsocktype purpose)
{
    int one = 1, idle = 2, intvl = 1, cnt = 3;
    unsigned user_ms = 5000;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof user_ms);
    return CURL_SOCKOPT_OK;
}

CURL *etcd_curl_new(const etcd *e, const char *url)
{
    CURL *c = etcd_curl.easy_init();
    if (!c) return NULL;
    etcd_curl.easy_setopt(c, CURLOPT_URL, url);
    etcd_curl.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    etcd_curl.easy_setopt(c, CURLOPT_SOCKOPTFUNCTION, sockopt);
    etcd_curl.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (e->ca_file) etcd_curl.easy_setopt(c, CURLOPT_CAINFO, e->ca_file);
    if (e->cert_file) etcd_curl.easy_setopt(c, CURLOPT_SSLCERT, e->cert_file);
    if (e->key_file) etcd_curl.easy_setopt(c, CURLOPT_SSLKEY, e->key_file);
    etcd_curl.easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    return c;
}

typedef struct buf {
    char *p;
    size_t n, cap;
    int over;
} buf;

static size_t buf_write(char *data, size_t size, size_t nmemb, void *arg)
{
    buf *b = arg;
    size_t n = size * nmemb;
    if (b->n + n + 1 > ETCD_MAX_RESPONSE) {
        b->over = 1;
        return 0;
    }
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) return 0;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

/* The gateway's error answer {"error": ..., "code": grpc code, "message": ...}. HTTP 5xx are
 * etcd unable to serve (no leader, a request timed out inside the cluster): unavailable. */
static int http_error(etcd *e, const char *ep, const char *path, long code, const buf *b)
{
    json_t *o = b->p ? json_loadb(b->p, b->n, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(o, "message"));
    if (!msg) msg = json_string_value(json_object_get(o, "error"));
    char d[700];
    snprintf(d, sizeof d, "etcd at %s: %s: HTTP %ld: %.400s", ep, path, code,
             msg    ? msg
             : b->p ? b->p
                    : "no answer");
    json_decref(o);
    if (code >= 500) {
        etcd_note_fail(e, d);
        return om_errf(OM_E_EtcdUnavailable, "%s", d);
    }
    return om_errf(OM_E_EtcdRequestFailed, "%s", d);
}

int etcd_call(etcd *e, const char *path, json_t *body, int idempotent, json_t **resp)
{
    *resp = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) return oom();
    uint64_t deadline = om_mono_ns() + (uint64_t)e->timeout_ms * 1000000;
    unsigned share = e->timeout_ms / (unsigned)e->neps;
    if (share < 250) share = 250;
    size_t first = etcd_first_ep(e);
    char tried[1400] = "";
    int rc = OM_E_EtcdUnavailable;
    struct curl_slist *hdr = etcd_curl.slist_append(NULL, "Content-Type: application/json");
    for (size_t i = 0; i < e->neps; i++) {
        size_t ep = (first + i) % e->neps;
        uint64_t now = om_mono_ns();
        if (now >= deadline) {
            snprintf(tried + strlen(tried), sizeof tried - strlen(tried),
                     "%s%s: not tried, the "
                     "%u ms were spent",
                     tried[0] ? "; " : "", e->eps[ep], e->timeout_ms);
            break;
        }
        long left = (long)((deadline - now) / 1000000) + 1;
        char url[512], err[CURL_ERROR_SIZE] = "";
        snprintf(url, sizeof url, "%s%s", e->eps[ep], path);
        CURL *c = etcd_curl_new(e, url);
        if (!c || !hdr) {
            if (c) etcd_curl.easy_cleanup(c);
            rc = oom();
            goto out;
        }
        buf b = {0};
        etcd_curl.easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        etcd_curl.easy_setopt(c, CURLOPT_POSTFIELDS, text);
        etcd_curl.easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write);
        etcd_curl.easy_setopt(c, CURLOPT_WRITEDATA, &b);
        etcd_curl.easy_setopt(c, CURLOPT_ERRORBUFFER, err);
        etcd_curl.easy_setopt(c, CURLOPT_TIMEOUT_MS, left);
        etcd_curl.easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                              left < (long)share ? left : (long)share);
        CURLcode cr = etcd_curl.easy_perform(c);
        long code = 0;
        curl_off_t sent_at = 0;
        etcd_curl.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        etcd_curl.easy_getinfo(c, CURLINFO_PRETRANSFER_TIME_T, &sent_at);
        etcd_curl.easy_cleanup(c);
        if (cr == CURLE_OK) {
            if (code == 200) {
                json_error_t je;
                *resp = json_loadb(b.p ? b.p : "", b.n, 0, &je);
                etcd_note_ok(e, ep);
                rc = *resp ? 0
                           : om_errf(OM_E_InvalidParameter,
                                     "etcd at %s: %s: the answer is not "
                                     "JSON (%s)",
                                     e->eps[ep], path, je.text);
            } else {
                if (code < 500) etcd_note_ok(e, ep);
                rc = http_error(e, e->eps[ep], path, code, &b);
            }
            free(b.p);
            goto out;
        }
        free(b.p);
        snprintf(tried + strlen(tried), sizeof tried - strlen(tried), "%s%s: %s%s%s%s",
                 tried[0] ? "; " : "", e->eps[ep],
                 b.over ? "the answer is larger than 64 MiB" : etcd_curl.easy_strerror(cr),
                 err[0] ? " (" : "", err, err[0] ? ")" : "");
        /* Sent (the transfer began) and not a read: another endpoint could run it twice. */
        if (sent_at > 0 && !idempotent) break;
    }
    rc = om_errf(OM_E_EtcdUnavailable,
                 "etcd at %s: %s. HINT: check that etcd runs there and that this host reaches "
                 "it (--etcd, OMBRA_ETCD)",
                 path, tried);
    etcd_note_fail(e, om_err_detail());
out:
    etcd_curl.slist_free_all(hdr);
    free(text);
    return rc;
}

int etcd_ping(etcd *e, char *ver, size_t n)
{
    json_t *r;
    int rc = etcd_call(e, "/v3/maintenance/status", json_object(), 1, &r);
    if (rc) return rc;
    const char *v = json_string_value(json_object_get(r, "version"));
    if (ver && n) snprintf(ver, n, "%s", v ? v : "");
    json_decref(r);
    return 0;
}

/* ---- encodings ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *etcd_b64(const void *p, size_t n)
{
    const unsigned char *s = p;
    char *o = malloc((n + 2) / 3 * 4 + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        *w++ = B64[v >> 18 & 63];
        *w++ = B64[v >> 12 & 63];
        *w++ = i + 1 < n ? B64[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? B64[v & 63] : '=';
    }
    *w = 0;
    return o;
}

static int b64_val(char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

int etcd_unb64(const char *s, unsigned char **out, size_t *n)
{
    size_t l = strlen(s);
    *out = NULL;
    *n = 0;
    if (l % 4) return om_errf(OM_E_InvalidParameter, "etcd: %zu characters of base64", l);
    unsigned char *o = malloc(l / 4 * 3 + 1);
    if (!o) return oom();
    size_t k = 0;
    for (size_t i = 0; i < l; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            if (s[i + j] == '=' && i + 4 == l && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad || (v[j] = b64_val(s[i + j])) < 0) {
                free(o);
                return om_errf(OM_E_InvalidParameter, "etcd: bad base64 at character %zu", i + j);
            }
        }
        uint32_t x =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        o[k++] = (unsigned char)(x >> 16);
        if (pad < 2) o[k++] = (unsigned char)(x >> 8);
        if (pad < 1) o[k++] = (unsigned char)x;
    }
    o[k] = 0;
    *out = o;
    *n = k;
    return 0;
}

unsigned char *etcd_prefix_end(const char *key, size_t *n)
{
    size_t l = strlen(key);
    unsigned char *end = malloc(l + 1);
    if (!end) return NULL;
    memcpy(end, key, l + 1);
    /* The first key after every key with this prefix: the last byte that can grow, grown,
     * and what follows it cut; a prefix of only 0xff bytes has no end ("\0": to the last). */
    while (l > 0 && end[l - 1] == 0xff)
        l--;
    if (l > 0) end[l - 1]++;
    *n = l;
    if (!l) *n = 1, end[0] = 0;
    return end;
}

json_t *etcd_b64_json(const void *p, size_t n)
{
    char *s = etcd_b64(p, n);
    json_t *j = s ? json_string(s) : NULL;
    free(s);
    return j;
}

json_t *etcd_key_json(const char *key, int prefix)
{
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "key", etcd_b64_json(key, strlen(key)));
    if (prefix) {
        size_t n;
        unsigned char *end = etcd_prefix_end(key, &n);
        json_object_set_new(o, "range_end", end ? etcd_b64_json(end, n) : NULL);
        free(end);
    }
    if (json_object_size(o) != (prefix ? 2u : 1u)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int64_t etcd_json_i64(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v)) return json_integer_value(v);
    const char *s = json_string_value(v);
    return s ? strtoll(s, NULL, 10) : 0;
}

json_t *etcd_i64_json(int64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)v);
    return json_string(s);
}

int etcd_kv_parse(json_t *o, etcd_kv *kv)
{
    memset(kv, 0, sizeof *kv);
    const char *k = json_string_value(json_object_get(o, "key")),
               *v = json_string_value(json_object_get(o, "value"));
    size_t kl;
    if (!k) return om_errf(OM_E_InvalidParameter, "etcd: a key-value without a key");
    int rc = etcd_unb64(k, (unsigned char **)&kv->key, &kl);
    if (!rc) rc = etcd_unb64(v ? v : "", &kv->val, &kv->len);
    if (rc) {
        free(kv->key);
        kv->key = NULL;
        return rc;
    }
    kv->create_rev = etcd_json_i64(o, "create_revision");
    kv->mod_rev = etcd_json_i64(o, "mod_revision");
    kv->version = etcd_json_i64(o, "version");
    kv->lease = etcd_json_i64(o, "lease");
    return 0;
}

int etcd_kvs_parse(json_t *arr, etcd_kv **kvs, size_t *n)
{
    *kvs = NULL;
    *n = 0;
    size_t len = json_array_size(arr);
    if (!len) return 0;
    etcd_kv *a = calloc(len, sizeof *a);
    if (!a) return oom();
    for (size_t i = 0; i < len; i++) {
        int rc = etcd_kv_parse(json_array_get(arr, i), &a[i]);
        if (rc) {
            etcd_kvs_free(a, i);
            return rc;
        }
    }
    *kvs = a;
    *n = len;
    return 0;
}

void etcd_kvs_free(etcd_kv *kvs, size_t n)
{
    if (!kvs) return;
    for (size_t i = 0; i < n; i++) {
        free(kvs[i].key);
        free(kvs[i].val);
    }
    free(kvs);
}
