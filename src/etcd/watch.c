/* Watches of the etcd client (etcd.h): a thread per watch holding a streaming POST /v3/watch.
 *
 * The gateway answers the stream with one JSON object per line: {"result": {"created": true}}
 * once the watch exists, then {"result": {"events": [...]}} as keys change, each event with
 * its kv ("type": "DELETE" for a delete; a put has no type). A watch whose start revision was
 * compacted away gets {"result": {"canceled": true, "compact_revision": N}} and ends.
 *
 * State, on the watch's thread: next_rev, the first revision not yet delivered. The stream is
 * always asked for next_rev on, and an event below it is dropped, so a reconnection neither
 * misses nor repeats an event. Events of one revision (a txn) arrive in one message; next_rev
 * moves past them once the message is delivered.
 *
 *   connect --created--> streaming --events--> streaming
 *      ^                     | cut, error              | compacted
 *      +-- backoff sleep <---+          resync (range, RESYNC event, next_rev = rev + 1)
 *
 * Stopping: etcd_watch_stop sets stop and wakes the thread wherever it waits (curl_multi_poll
 * through curl_multi_wakeup, the backoff sleep through the condition variable). */
#include "etcd/etcd_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/time.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct etcd_watch {
    etcd *e;
    char *prefix;
    etcd_watch_fn cb;
    void *arg;
    pthread_t th;
    pthread_mutex_t mu; /* stop, started, multi */
    pthread_cond_t cond;
    int stop;
    int started; /* 1 once a watch was created, -1 when the start gave up */
    om_err_saved start_err;
    CURLM *multi; /* the stream under way, for curl_multi_wakeup */
    /* the watch's thread only */
    size_t ep;
    int64_t next_rev;
    int created, compacted;
    char err[600]; /* why the stream ended, "" when it has not */
    char *line;
    size_t nline, capline;
};

static void set_err(etcd_watch *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(etcd_watch *w, const char *fmt, ...)
{
    if (w->err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
}

static int stopping(etcd_watch *w)
{
    pthread_mutex_lock(&w->mu);
    int s = w->stop;
    pthread_mutex_unlock(&w->mu);
    return s;
}

static void set_started(etcd_watch *w, int v)
{
    pthread_mutex_lock(&w->mu);
    if (!w->started) {
        w->started = v;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->mu);
}

/* ---- one message of the stream ---- */

static void deliver_events(etcd_watch *w, json_t *events)
{
    int64_t from = w->next_rev, last = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        etcd_kv kv;
        if (etcd_kv_parse(json_object_get(ev, "kv"), &kv)) {
            set_err(w, "an event etcd sent cannot be read: %s", om_err_detail());
            break;
        }
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (kv.mod_rev >= from) {
            etcd_event e = {type && !strcmp(type, "DELETE") ? ETCD_EV_DELETE : ETCD_EV_PUT, &kv,
                            NULL, 0, kv.mod_rev};
            w->cb(w->arg, &e);
            if (kv.mod_rev > last) last = kv.mod_rev;
        }
        free(kv.key);
        free(kv.val);
    }
    if (last >= w->next_rev) w->next_rev = last + 1;
}

/* Returns 0 to go on reading the stream, -1 to end it (w->err or w->compacted says why). */
static int on_message(etcd_watch *w, const char *text, size_t n)
{
    json_error_t je;
    json_t *m = json_loadb(text, n, 0, &je), *r = json_object_get(m, "result");
    int rc = 0;
    if (!m) {
        set_err(w, "etcd sent a line that is not JSON (%s)", je.text);
        return -1;
    }
    if (!r) {
        json_t *er = json_object_get(m, "error");
        const char *msg = json_string_value(er);
        if (!msg) msg = json_string_value(json_object_get(er, "message"));
        set_err(w, "etcd ended the watch: %.400s", msg ? msg : text);
        rc = -1;
    } else if (etcd_json_i64(r, "compact_revision") > 0) {
        w->compacted = 1;
        rc = -1;
    } else if (json_is_true(json_object_get(r, "canceled"))) {
        const char *why = json_string_value(json_object_get(r, "cancel_reason"));
        set_err(w, "etcd canceled the watch: %s", why ? why : "no reason given");
        rc = -1;
    } else {
        if (json_is_true(json_object_get(r, "created"))) {
            w->created = 1;
            etcd_note_ok(w->e, w->ep);
            /* "From now" is the revision etcd created the watch at: what follows it. */
            if (!w->next_rev)
                w->next_rev = etcd_json_i64(json_object_get(r, "header"), "revision") + 1;
            set_started(w, 1);
        }
        deliver_events(w, json_object_get(r, "events"));
        if (w->err[0]) rc = -1;
    }
    json_decref(m);
    return rc;
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg)
{
    etcd_watch *w = arg;
    size_t n = size * nmemb;
    if (w->nline + n + 1 > ETCD_MAX_RESPONSE) {
        set_err(w, "a message of the watch is larger than 64 MiB");
        return 0;
    }
    if (w->nline + n + 1 > w->capline) {
        size_t nc = w->capline ? w->capline : 4096;
        while (nc < w->nline + n + 1)
            nc *= 2;
        char *np = realloc(w->line, nc);
        if (!np) {
            set_err(w, "out of memory");
            return 0;
        }
        w->line = np;
        w->capline = nc;
    }
    memcpy(w->line + w->nline, data, n);
    w->nline += n;
    /* The gateway ends each message with a newline; JSON strings cannot hold a raw one. */
    size_t start = 0;
    for (size_t i = w->nline - n; i < w->nline; i++) {
        if (w->line[i] != '\n') continue;
        if (i > start && on_message(w, w->line + start, i - start)) return 0;
        start = i + 1;
    }
    memmove(w->line, w->line + start, w->nline - start);
    w->nline -= start;
    return n;
}

/* ---- one connection ---- */

static json_t *create_request(etcd_watch *w)
{
    json_t *c = etcd_key_json(w->prefix, 1);
    if (c && w->next_rev) json_object_set_new(c, "start_revision", etcd_i64_json(w->next_rev));
    return c ? json_pack("{s:o}", "create_request", c) : NULL;
}

/* Holds one stream until it ends; w->err says why (nothing when stopped or compacted). */
static void run_stream(etcd_watch *w)
{
    w->created = w->compacted = 0;
    w->err[0] = 0;
    w->nline = 0;
    etcd *e = w->e;
    char url[512];
    snprintf(url, sizeof url, "%s/v3/watch", e->eps[w->ep]);
    json_t *req = create_request(w);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    struct curl_slist *hdr = etcd_curl.slist_append(NULL, "Content-Type: application/json");
    CURL *c = etcd_curl_new(e, url);
    CURLM *m = etcd_curl.multi_init();
    if (!body || !hdr || !c || !m) {
        set_err(w, "out of memory");
        goto out;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    etcd_curl.easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    etcd_curl.easy_setopt(c, CURLOPT_POSTFIELDS, body);
    etcd_curl.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    etcd_curl.easy_setopt(c, CURLOPT_WRITEDATA, w);
    etcd_curl.easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    etcd_curl.easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)e->timeout_ms);
    etcd_curl.multi_add_handle(m, c);
    pthread_mutex_lock(&w->mu);
    w->multi = w->stop ? NULL : m;
    pthread_mutex_unlock(&w->mu);
    int running = 1;
    CURLcode cr = CURLE_OK;
    uint64_t t0 = om_mono_ns();
    while (running && !stopping(w)) {
        if (etcd_curl.multi_perform(m, &running) != CURLM_OK) break;
        if (!running) break;
        /* A watch that etcd has not created within the timeout is as good as refused. */
        if (!w->created && om_mono_ns() - t0 > (uint64_t)e->timeout_ms * 1000000) {
            set_err(w, "no answer within %u ms", e->timeout_ms);
            break;
        }
        etcd_curl.multi_poll(m, NULL, 0, 1000, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = etcd_curl.multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE) cr = msg->data.result;
    pthread_mutex_lock(&w->mu);
    w->multi = NULL;
    pthread_mutex_unlock(&w->mu);
    long code = 0;
    etcd_curl.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (!stopping(w) && !w->compacted) {
        if (cr != CURLE_OK && cr != CURLE_WRITE_ERROR)
            set_err(w, "%s%s%s%s", etcd_curl.easy_strerror(cr), cerr[0] ? " (" : "", cerr,
                    cerr[0] ? ")" : "");
        else if (code && code != 200)
            set_err(w, "HTTP %ld", code);
        else
            set_err(w, "the stream ended");
    }
    etcd_curl.multi_remove_handle(m, c);
out:
    if (c) etcd_curl.easy_cleanup(c);
    if (m) etcd_curl.multi_cleanup(m);
    etcd_curl.slist_free_all(hdr);
    free(body);
}

/* After a compaction: the whole state under the prefix, delivered as one RESYNC. */
static int resync(etcd_watch *w)
{
    etcd_kv *kvs;
    size_t n;
    int64_t rev;
    if (etcd_range_prefix(w->e, w->prefix, &kvs, &n, &rev)) {
        set_err(w, "resync after a compaction: %s", om_err_detail());
        return -1;
    }
    etcd_event ev = {ETCD_EV_RESYNC, NULL, kvs, n, rev};
    w->cb(w->arg, &ev);
    etcd_kvs_free(kvs, n);
    w->next_rev = rev + 1;
    w->compacted = 0;
    return 0;
}

/* Sleeps ms unless stopped; returns 1 when stopped. */
static int nap(etcd_watch *w, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    pthread_mutex_lock(&w->mu);
    while (!w->stop && pthread_cond_timedwait(&w->cond, &w->mu, &ts) == 0)
        ;
    int s = w->stop;
    pthread_mutex_unlock(&w->mu);
    return s;
}

static void *watch_main(void *arg)
{
    etcd_watch *w = arg;
    etcd *e = w->e;
    unsigned backoff = BACKOFF_MIN_MS;
    uint64_t start_by = om_mono_ns() + (uint64_t)e->timeout_ms * 1000000;
    int pending_resync = 0;
    while (!stopping(w)) {
        if (pending_resync && resync(w) == 0) pending_resync = 0;
        if (!pending_resync) {
            run_stream(w);
            if (w->created) backoff = BACKOFF_MIN_MS;
            if (w->compacted) {
                pending_resync = 1;
                continue; /* at once: nothing failed */
            }
        }
        if (stopping(w)) break;
        char d[800];
        snprintf(d, sizeof d, "etcd watch of %s at %s: %s", w->prefix, e->eps[w->ep], w->err);
        pthread_mutex_lock(&e->mu);
        e->watch_failures++;
        pthread_mutex_unlock(&e->mu);
        etcd_note_fail(e, d);
        if (!w->created) w->ep = (w->ep + 1) % e->neps; /* refused here: the next one */
        if (w->started == 0 && om_mono_ns() >= start_by) {
            om_errf(OM_E_EtcdUnavailable,
                    "%s. HINT: check that etcd runs there and that this host reaches it "
                    "(--etcd, OMBRA_ETCD)",
                    d);
            om_err_save(&w->start_err, OM_E_EtcdUnavailable);
            set_started(w, -1);
            break;
        }
        if (nap(w, backoff)) break;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return NULL;
}

/* ---- the calls ---- */

static void watch_free(etcd_watch *w)
{
    free(w->prefix);
    free(w->line);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int etcd_watch_start(etcd *e, const char *prefix, int64_t from_rev, etcd_watch_fn cb, void *arg,
                     etcd_watch **out)
{
    *out = NULL;
    etcd_watch *w = calloc(1, sizeof *w);
    if (!w || !(w->prefix = strdup(prefix))) {
        free(w);
        return om_errf(OM_E_OutOfMemory, "etcd: out of memory");
    }
    w->e = e;
    w->cb = cb;
    w->arg = arg;
    w->next_rev = from_rev > 0 ? from_rev : 0;
    w->ep = etcd_first_ep(e);
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    int err = pthread_create(&w->th, NULL, watch_main, w);
    if (err) {
        watch_free(w);
        return om_errf(OM_E_OutOfMemory, "etcd: starting the watch of %s: %s", prefix,
                       strerror(err));
    }
    pthread_mutex_lock(&w->mu);
    while (!w->started)
        pthread_cond_wait(&w->cond, &w->mu);
    int ok = w->started > 0;
    pthread_mutex_unlock(&w->mu);
    if (!ok) {
        pthread_join(w->th, NULL);
        int rc = om_err_restore(&w->start_err);
        watch_free(w);
        return rc;
    }
    pthread_mutex_lock(&e->mu);
    e->watches++;
    pthread_mutex_unlock(&e->mu);
    *out = w;
    return 0;
}

void etcd_watch_stop(etcd_watch *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    if (w->multi) etcd_curl.multi_wakeup(w->multi);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    pthread_mutex_lock(&w->e->mu);
    w->e->watches--;
    pthread_mutex_unlock(&w->e->mu);
    watch_free(w);
}
