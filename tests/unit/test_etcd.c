/* The etcd client (src/etcd/etcd.h) and the directory on etcd (store/directory.h), against a
 * real etcd (/usr/bin/etcd from Debian's etcd-server) started by the test in a temporary
 * folder on free ports. Without /usr/bin/etcd every test is skipped, saying so. */
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/time.h"
#include "etcd/etcd.h"
#include "etcd/etcd_internal.h"
#include "store/directory.h"

#define ETCD_BIN "/usr/bin/etcd"

/* ---- an etcd of the test's own ---- */

typedef struct etcd_proc {
    pid_t pid;
    char dir[300];
    int cport, pport;
    int tls; /* https with client certificates (the files in dir) */
    char url[64];
} etcd_proc;

static char tmpdir[] = "/tmp/ombra-test-etcd-XXXXXX";
static etcd_proc main_etcd;
static const char *skip_why;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &l))
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static etcd_tls proc_tls(const etcd_proc *p, char *ca, char *crt, char *key)
{
    sprintf(ca, "%s/ca.crt", tmpdir);
    sprintf(crt, "%s/client.crt", tmpdir);
    sprintf(key, "%s/client.key", tmpdir);
    return (etcd_tls){ca, crt, key};
}

/* Until etcd answers (10 s at most). */
static int wait_up(etcd_proc *p)
{
    char ca[400], crt[400], key[400];
    etcd_tls t = proc_tls(p, ca, crt, key);
    etcd *e;
    if (etcd_open(p->url, p->tls ? &t : NULL, &e)) return -1;
    etcd_set_timeout(e, 300);
    int rc = -1;
    for (int i = 0; i < 100 && rc; i++) {
        if (!(rc = etcd_ping(e, NULL, 0))) break;
        usleep(100000);
    }
    etcd_close(e);
    return rc;
}

static int spawn(etcd_proc *p)
{
    char data[400], log[400], curl[80], purl[80], cluster[120], cert[400], key[400], ca[400];
    snprintf(data, sizeof data, "%s/data", p->dir);
    snprintf(log, sizeof log, "%s/etcd.log", p->dir);
    snprintf(purl, sizeof purl, "http://127.0.0.1:%d", p->pport);
    snprintf(cluster, sizeof cluster, "t=%s", purl);
    snprintf(p->url, sizeof p->url, "%s://127.0.0.1:%d", p->tls ? "https" : "http", p->cport);
    snprintf(curl, sizeof curl, "%s", p->url);
    snprintf(cert, sizeof cert, "%s/server.crt", tmpdir);
    snprintf(key, sizeof key, "%s/server.key", tmpdir);
    snprintf(ca, sizeof ca, "%s/ca.crt", tmpdir);
    p->pid = fork();
    if (p->pid < 0) return -1;
    if (p->pid == 0) {
        /* A test that aborts takes its etcd with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *f = freopen(log, "a", stdout);
        (void)f;
        dup2(1, 2);
        /* Short heartbeats: the single member elects itself in a tenth of a second. */
        const char *argv[40] = {ETCD_BIN, "--name",
                                "t",      "--data-dir",
                                data,     "--listen-client-urls",
                                curl,     "--advertise-client-urls",
                                curl,     "--listen-peer-urls",
                                purl,     "--initial-advertise-peer-urls",
                                purl,     "--initial-cluster",
                                cluster,  "--heartbeat-interval",
                                "10",     "--election-timeout",
                                "100",    "--log-level",
                                "error"};
        int n = 21;
        if (p->tls) {
            const char *more[] = {
                "--cert-file",       cert, "--key-file", key, "--client-cert-auth",
                "--trusted-ca-file", ca};
            for (size_t i = 0; i < sizeof more / sizeof *more; i++)
                argv[n++] = more[i];
        }
        execv(ETCD_BIN, (char *const *)argv);
        _exit(127);
    }
    return wait_up(p);
}

static int start(etcd_proc *p, const char *name, int tls)
{
    snprintf(p->dir, sizeof p->dir, "%s/%s", tmpdir, name);
    if (mkdir(p->dir, 0700) && errno != EEXIST) return -1;
    p->cport = free_port();
    p->pport = free_port();
    p->tls = tls;
    return spawn(p);
}

static void stop(etcd_proc *p, int sig)
{
    if (p->pid <= 0) return;
    kill(p->pid, sig);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

static int group_setup(void **state)
{
    if (access(ETCD_BIN, X_OK)) {
        skip_why = ETCD_BIN " is missing (Debian package etcd-server)";
        return 0;
    }
    if (!mkdtemp(tmpdir)) return -1;
    if (start(&main_etcd, "main", 0)) {
        fprintf(stderr, "etcd did not start: see %s/main/etcd.log\n", tmpdir);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    stop(&main_etcd, SIGTERM);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (!skip_why && system(cmd)) return -1;
    return 0;
}

#define SKIP_WITHOUT_ETCD()                                                                        \
    do {                                                                                           \
        if (skip_why) {                                                                            \
            print_message("skipped: %s\n", skip_why);                                              \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static etcd *client(void)
{
    etcd *e;
    assert_int_equal(etcd_open(main_etcd.url, NULL, &e), 0);
    return e;
}

static int64_t ms_since(uint64_t t0)
{
    return (int64_t)((om_mono_ns() - t0) / 1000000);
}

/* ---- libcurl on demand ---- */

static int curl_mapped(void)
{
    void *h = dlopen(ETCD_CURL_SONAME, RTLD_NOW | RTLD_NOLOAD);
    if (h) dlclose(h);
    return h != NULL;
}

/* No binary links libcurl (every start of the CLI would map it and two dozen libraries): the
 * first etcd_open loads it, and a library that cannot be loaded is one error line naming it,
 * with the loader's reason and what to install, and no handle; once it can be loaded, the next
 * etcd_open works. Runs first, in a group of its own: nothing in this process has loaded libcurl
 * yet (the main group's setup opens a client to wait for its etcd). */
static void libcurl_is_loaded_by_etcd_open_and_its_absence_is_one_clear_error(void **state)
{
    assert_false(curl_mapped());
    etcd_curl_test_soname("libcurl-absent.so.4");
    for (int i = 0; i < 2; i++) {
        etcd *e = (etcd *)&e;
        assert_int_equal(etcd_open("http://127.0.0.1:1", NULL, &e), OM_E_FileNotFound);
        assert_null(e);
        const char *d = om_err_detail();
        assert_non_null(strstr(d, "the etcd client cannot load libcurl-absent.so.4 ("));
        assert_non_null(strstr(d, "cannot open shared object file"));
        assert_non_null(strstr(d, "HINT: install the libcurl4 package"));
        assert_null(strchr(d, '\n'));
    }
    assert_false(curl_mapped());
    etcd_curl_test_soname(NULL);
    etcd *e;
    assert_int_equal(etcd_open("http://127.0.0.1:1", NULL, &e), 0);
    assert_true(curl_mapped());
    etcd_status st;
    assert_int_equal(etcd_ping(e, NULL, 0), OM_E_EtcdUnavailable); /* curl ran: refused */
    etcd_health(e, &st);
    assert_non_null(strstr(st.last_error, "127.0.0.1:1"));
    etcd_close(e);
}

/* ---- keys ---- */

static void values_of_any_bytes_round_trip(void **state)
{
    SKIP_WITHOUT_ETCD();
    etcd *e = client();
    const unsigned char bin[] = {0, 1, 0xff, 0, '\n', '"', 0x80, 0};
    assert_int_equal(etcd_put(e, "/t/kv/b", bin, sizeof bin, 0), 0);
    assert_int_equal(etcd_put(e, "/t/kv/a", "one", 3, 0), 0);
    assert_int_equal(etcd_put(e, "/t/kv/c", "", 0, 0), 0);
    assert_int_equal(etcd_put(e, "/t/kvx", "outside", 7, 0), 0);
    etcd_kv *kv;
    int64_t rev;
    assert_int_equal(etcd_get(e, "/t/kv/b", &kv, &rev), 0);
    assert_non_null(kv);
    assert_int_equal(kv->len, sizeof bin);
    assert_memory_equal(kv->val, bin, sizeof bin);
    assert_int_equal(kv->version, 1);
    assert_true(kv->mod_rev > 0 && kv->mod_rev <= rev && kv->create_rev == kv->mod_rev);
    int64_t first = kv->mod_rev;
    etcd_kvs_free(kv, 1);
    assert_int_equal(etcd_put(e, "/t/kv/b", "two", 3, 0), 0);
    assert_int_equal(etcd_get(e, "/t/kv/b", &kv, NULL), 0);
    assert_int_equal(kv->version, 2);
    assert_int_equal(kv->create_rev, first);
    assert_true(kv->mod_rev > first);
    assert_string_equal((char *)kv->val, "two");
    etcd_kvs_free(kv, 1);

    etcd_kv *kvs;
    size_t n;
    assert_int_equal(etcd_range_prefix(e, "/t/kv/", &kvs, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_string_equal(kvs[0].key, "/t/kv/a");
    assert_string_equal(kvs[1].key, "/t/kv/b");
    assert_string_equal(kvs[2].key, "/t/kv/c");
    assert_int_equal(kvs[2].len, 0);
    etcd_kvs_free(kvs, n);

    int64_t deleted;
    assert_int_equal(etcd_delete(e, "/t/kv/a", 0, &deleted), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(etcd_get(e, "/t/kv/a", &kv, NULL), 0);
    assert_null(kv);
    assert_int_equal(etcd_delete(e, "/t/kv/", 1, &deleted), 0);
    assert_int_equal(deleted, 2);
    assert_int_equal(etcd_get(e, "/t/kvx", &kv, NULL), 0);
    assert_non_null(kv); /* a prefix ends at its last byte: /t/kvx is not under /t/kv/ */
    etcd_kvs_free(kv, 1);
    etcd_close(e);
}

static void a_txn_with_a_stale_revision_is_refused(void **state)
{
    SKIP_WITHOUT_ETCD();
    etcd *e = client();
    etcd_kv *kv;
    assert_int_equal(etcd_put(e, "/t/txn/k", "v1", 2, 0), 0);
    assert_int_equal(etcd_get(e, "/t/txn/k", &kv, NULL), 0);
    int64_t read = kv->mod_rev;
    etcd_kvs_free(kv, 1);

    etcd_txn *t = etcd_txn_new();
    etcd_txn_cmp_mod(t, "/t/txn/k", ETCD_EQUAL, read);
    etcd_txn_put(t, ETCD_THEN, "/t/txn/k", "v2", 2, 0);
    etcd_txn_put(t, ETCD_THEN, "/t/txn/other", "o", 1, 0);
    etcd_txn_range(t, ETCD_ELSE, "/t/txn/k", 0);
    int ok;
    assert_int_equal(etcd_txn_commit(e, t, &ok), 0);
    assert_int_equal(ok, 1);
    assert_int_equal(etcd_txn_nresults(t), 2);
    assert_int_equal(etcd_txn_result_at(t, 0)->kind, ETCD_OP_PUT);
    int64_t wrote = etcd_txn_revision(t);
    assert_true(wrote > read);
    /* The same txn again: the revision it compares is stale now. */
    assert_int_equal(etcd_txn_commit(e, t, &ok), 0);
    assert_int_equal(ok, 0);
    assert_int_equal(etcd_txn_nresults(t), 1);
    const etcd_txn_result *r = etcd_txn_result_at(t, 0);
    assert_int_equal(r->kind, ETCD_OP_RANGE);
    assert_int_equal(r->n, 1);
    assert_string_equal((char *)r->kvs[0].val, "v2");
    assert_int_equal(r->kvs[0].mod_rev, wrote);
    etcd_txn_free(t);

    /* absent, value, prefix and delete in one */
    t = etcd_txn_new();
    etcd_txn_cmp_absent(t, "/t/txn/new");
    etcd_txn_cmp_value(t, "/t/txn/k", ETCD_EQUAL, "v2", 2);
    etcd_txn_cmp_prefix_mod(t, "/t/txn/", ETCD_LESS, wrote + 1);
    etcd_txn_put(t, ETCD_THEN, "/t/txn/new", "n", 1, 0);
    etcd_txn_delete(t, ETCD_THEN, "/t/txn/other", 0);
    assert_int_equal(etcd_txn_commit(e, t, &ok), 0);
    assert_int_equal(ok, 1);
    assert_int_equal(etcd_txn_result_at(t, 1)->kind, ETCD_OP_DELETE);
    assert_int_equal(etcd_txn_result_at(t, 1)->deleted, 1);
    /* again: /t/txn/new exists now, and a key under the prefix changed after `wrote` */
    assert_int_equal(etcd_txn_commit(e, t, &ok), 0);
    assert_int_equal(ok, 0);
    etcd_txn_free(t);
    t = etcd_txn_new();
    etcd_txn_cmp_prefix_mod(t, "/t/txn/", ETCD_LESS, wrote + 1);
    assert_int_equal(etcd_txn_commit(e, t, &ok), 0);
    assert_int_equal(ok, 0);
    etcd_txn_free(t);
    assert_int_equal(etcd_delete(e, "/t/txn/", 1, NULL), 0);
    etcd_close(e);
}

/* ---- leases ---- */

static void a_lapsed_lease_takes_its_key(void **state)
{
    SKIP_WITHOUT_ETCD();
    etcd *e = client();
    int64_t id, ttl, revoked;
    assert_int_equal(etcd_lease_grant(e, 1, &id), 0);
    assert_int_equal(etcd_put(e, "/t/lease/alive", "x", 1, id), 0);
    etcd_kv *kv;
    assert_int_equal(etcd_get(e, "/t/lease/alive", &kv, NULL), 0);
    assert_int_equal(kv->lease, id);
    etcd_kvs_free(kv, 1);
    assert_int_equal(etcd_lease_keepalive(e, id, &ttl), 0);
    assert_true(ttl >= 1);
    /* Not kept alive any more: gone within a few seconds. */
    uint64_t t0 = om_mono_ns();
    do {
        usleep(100000);
        assert_int_equal(etcd_get(e, "/t/lease/alive", &kv, NULL), 0);
        etcd_kvs_free(kv, kv ? 1 : 0);
    } while (kv && ms_since(t0) < 6000);
    assert_null(kv);
    assert_int_equal(etcd_lease_keepalive(e, id, &ttl), 0);
    assert_int_equal(ttl, 0);
    assert_int_equal(etcd_lease_revoke(e, id), OM_E_EtcdRequestFailed);
    assert_non_null(strstr(om_err_detail(), "HTTP 404"));
    assert_int_equal(etcd_put(e, "/t/lease/late", "x", 1, id), OM_E_EtcdRequestFailed);

    /* A revoke takes the key at once. */
    assert_int_equal(etcd_lease_grant(e, 30, &revoked), 0);
    assert_int_equal(etcd_put(e, "/t/lease/r", "x", 1, revoked), 0);
    assert_int_equal(etcd_lease_revoke(e, revoked), 0);
    assert_int_equal(etcd_get(e, "/t/lease/r", &kv, NULL), 0);
    assert_null(kv);
    etcd_close(e);
}

/* ---- watches ---- */

typedef struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int n;
    struct {
        etcd_ev_type type;
        char key[64], val[64];
        int64_t rev;
        size_t nkvs;
    } ev[64];
} seen;

static void on_ev(void *arg, const etcd_event *ev)
{
    seen *s = arg;
    pthread_mutex_lock(&s->mu);
    if (s->n < 64) {
        s->ev[s->n].type = ev->type;
        s->ev[s->n].rev = ev->rev;
        s->ev[s->n].nkvs = ev->n;
        if (ev->kv) {
            snprintf(s->ev[s->n].key, 64, "%s", ev->kv->key);
            snprintf(s->ev[s->n].val, 64, "%s", (char *)ev->kv->val);
        }
        s->n++;
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static int wait_seen(seen *s, int n, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000 + 1;
    pthread_mutex_lock(&s->mu);
    while (s->n < n && pthread_cond_timedwait(&s->cond, &s->mu, &ts) == 0)
        ;
    int got = s->n;
    pthread_mutex_unlock(&s->mu);
    return got;
}

static void a_watch_misses_nothing_across_an_etcd_restart(void **state)
{
    SKIP_WITHOUT_ETCD();
    etcd *e = client();
    static seen s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {{0}}};
    etcd_watch *w;
    assert_int_equal(etcd_put(e, "/t/w/before", "b", 1, 0), 0); /* before the watch: not seen */
    assert_int_equal(etcd_watch_start(e, "/t/w/", 0, on_ev, &s, &w), 0);
    assert_int_equal(etcd_put(e, "/t/w/a", "1", 1, 0), 0);
    assert_int_equal(etcd_put(e, "/t/w/b", "2", 1, 0), 0);
    assert_int_equal(etcd_delete(e, "/t/w/a", 0, NULL), 0);
    assert_int_equal(wait_seen(&s, 3, 5000), 3);
    assert_int_equal(s.ev[0].type, ETCD_EV_PUT);
    assert_string_equal(s.ev[0].key, "/t/w/a");
    assert_string_equal(s.ev[0].val, "1");
    assert_string_equal(s.ev[1].key, "/t/w/b");
    assert_int_equal(s.ev[2].type, ETCD_EV_DELETE);
    assert_string_equal(s.ev[2].key, "/t/w/a");

    /* etcd dies hard and comes back on its data and port; changes are made before the watch
     * is back (its backoff has grown while etcd was away). */
    etcd_status st;
    stop(&main_etcd, SIGKILL);
    usleep(700000);
    assert_int_equal(spawn(&main_etcd), 0);
    for (int i = 0; i < 5; i++) {
        char k[32], v[16];
        snprintf(k, sizeof k, "/t/w/after%d", i);
        snprintf(v, sizeof v, "%d", i);
        assert_int_equal(etcd_put(e, k, v, strlen(v), 0), 0);
    }
    assert_int_equal(wait_seen(&s, 8, 8000), 8);
    usleep(200000);
    assert_int_equal(s.n, 8); /* nothing twice */
    for (int i = 0; i < 5; i++) {
        char k[32];
        snprintf(k, sizeof k, "/t/w/after%d", i);
        assert_string_equal(s.ev[3 + i].key, k);
    }
    for (int i = 1; i < s.n; i++)
        assert_true(s.ev[i].rev > s.ev[i - 1].rev);
    etcd_health(e, &st);
    assert_true(st.watch_failures >= 1);
    assert_int_equal(st.watches, 1);
    etcd_watch_stop(w);
    etcd_health(e, &st);
    assert_int_equal(st.watches, 0);
    assert_int_equal(etcd_delete(e, "/t/w/", 1, NULL), 0);
    etcd_close(e);
}

static void a_watch_from_a_compacted_revision_resyncs(void **state)
{
    SKIP_WITHOUT_ETCD();
    etcd *e = client();
    static seen s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {{0}}};
    etcd_kv *kv;
    int64_t rev;
    assert_int_equal(etcd_put(e, "/t/c/x", "1", 1, 0), 0);
    assert_int_equal(etcd_get(e, "/t/c/x", &kv, NULL), 0);
    int64_t from = kv->mod_rev;
    etcd_kvs_free(kv, 1);
    assert_int_equal(etcd_put(e, "/t/c/x", "2", 1, 0), 0);
    assert_int_equal(etcd_put(e, "/t/c/y", "3", 1, 0), 0);
    assert_int_equal(etcd_get(e, "/t/c/y", &kv, &rev), 0);
    etcd_kvs_free(kv, 1);
    assert_int_equal(etcd_compact(e, rev), 0);
    etcd_watch *w;
    assert_int_equal(etcd_watch_start(e, "/t/c/", from, on_ev, &s, &w), 0);
    assert_int_equal(wait_seen(&s, 1, 5000), 1);
    assert_int_equal(s.ev[0].type, ETCD_EV_RESYNC);
    assert_int_equal(s.ev[0].nkvs, 2);
    assert_true(s.ev[0].rev >= rev);
    assert_int_equal(etcd_put(e, "/t/c/z", "4", 1, 0), 0);
    assert_int_equal(wait_seen(&s, 2, 5000), 2);
    assert_string_equal(s.ev[1].key, "/t/c/z");
    etcd_watch_stop(w);
    assert_int_equal(etcd_delete(e, "/t/c/", 1, NULL), 0);
    etcd_close(e);
}

/* ---- endpoints ---- */

static void an_endpoint_that_never_answers_fails_within_the_timeout(void **state)
{
    SKIP_WITHOUT_ETCD();
    /* Accepts connections (the kernel does, from the backlog) and never answers. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    etcd *e;
    assert_int_equal(etcd_open(url, NULL, &e), 0);
    etcd_set_timeout(e, 800);
    uint64_t t0 = om_mono_ns();
    assert_int_equal(etcd_put(e, "/t/x", "x", 1, 0), OM_E_EtcdUnavailable);
    int64_t took = ms_since(t0);
    assert_true(took >= 700 && took < 2000);
    assert_non_null(strstr(om_err_detail(), url));
    assert_non_null(strstr(om_err_detail(), "/v3/kv/put"));
    assert_non_null(strstr(om_err_detail(), "HINT"));
    etcd_status st;
    etcd_health(e, &st);
    assert_int_equal(st.connected, 0);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.since_ok_ms, -1);
    assert_string_equal(st.endpoint, url);
    assert_non_null(strstr(st.last_error, url));
    /* A watch cannot start either: one error, in time. */
    etcd_watch *w;
    t0 = om_mono_ns();
    assert_int_equal(etcd_watch_start(e, "/t/", 0, on_ev, NULL, &w), OM_E_EtcdUnavailable);
    assert_true(ms_since(t0) < 2500);
    assert_non_null(strstr(om_err_detail(), url));
    etcd_close(e);
    close(fd);

    /* Nothing listening: refused at once, and said so. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d", free_port());
    assert_int_equal(etcd_open(url, NULL, &e), 0);
    t0 = om_mono_ns();
    etcd_kv *kv;
    assert_int_equal(etcd_get(e, "/t/x", &kv, NULL), OM_E_EtcdUnavailable);
    assert_true(ms_since(t0) < 1000);
    assert_non_null(strstr(om_err_detail(), "Couldn't connect"));
    etcd_close(e);
    assert_int_equal(etcd_open("etcd.example:2379", NULL, &e), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "etcd.example:2379"));
}

static void the_next_endpoint_serves_when_the_first_is_dead(void **state)
{
    SKIP_WITHOUT_ETCD();
    char eps[200];
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d, %s/", free_port(), main_etcd.url);
    etcd *e;
    assert_int_equal(etcd_open(eps, NULL, &e), 0);
    assert_int_equal(etcd_put(e, "/t/ep/k", "v", 1, 0), 0);
    etcd_status st;
    etcd_health(e, &st);
    assert_int_equal(st.connected, 1);
    assert_string_equal(st.endpoint, main_etcd.url);
    assert_true(st.since_ok_ms >= 0 && st.since_ok_ms < 1000);
    static seen s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {{0}}};
    etcd_watch *w;
    assert_int_equal(etcd_watch_start(e, "/t/ep/", 0, on_ev, &s, &w), 0);
    assert_int_equal(etcd_delete(e, "/t/ep/k", 0, NULL), 0);
    assert_int_equal(wait_seen(&s, 1, 5000), 1);
    assert_int_equal(s.ev[0].type, ETCD_EV_DELETE);
    etcd_watch_stop(w);
    etcd_close(e);
}

/* ---- TLS with client certificates ---- */

static int make_certs(void)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd %s && exec >openssl.log 2>&1 && "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca && "
             "for n in server client; do "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $n.key "
             "-out $n.csr -subj /CN=$n && "
             "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' "
             ">$n.ext && "
             "openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
             "-out $n.crt -extfile $n.ext || exit 1; done",
             tmpdir);
    return system(cmd);
}

static void https_with_a_client_certificate(void **state)
{
    SKIP_WITHOUT_ETCD();
    assert_int_equal(make_certs(), 0);
    etcd_proc p = {0};
    assert_int_equal(start(&p, "tls", 1), 0);
    char ca[400], crt[400], key[400];
    etcd_tls t = proc_tls(&p, ca, crt, key);
    etcd *e;
    assert_int_equal(etcd_open(p.url, &t, &e), 0);
    assert_int_equal(etcd_put(e, "/t/tls", "secret", 6, 0), 0);
    etcd_kv *kv;
    assert_int_equal(etcd_get(e, "/t/tls", &kv, NULL), 0);
    assert_string_equal((char *)kv->val, "secret");
    etcd_kvs_free(kv, 1);
    etcd_close(e);
    /* Without a certificate of this CA's: refused, nothing read. */
    etcd_tls ca_only = {ca, NULL, NULL};
    assert_int_equal(etcd_open(p.url, &ca_only, &e), 0);
    etcd_set_timeout(e, 2000);
    assert_int_not_equal(etcd_get(e, "/t/tls", &kv, NULL), 0);
    assert_non_null(strstr(om_err_detail(), p.url));
    etcd_close(e);
    etcd_tls missing = {"/nonexistent/ca.crt", NULL, NULL};
    assert_int_equal(etcd_open(p.url, &missing, &e), OM_E_FileNotFound);
    assert_non_null(strstr(om_err_detail(), "/nonexistent/ca.crt"));
    stop(&p, SIGTERM);
}

/* ---- the directory on etcd ---- */

static store_dbent db_ent(const char *name, const char *server, const char *id)
{
    store_dbent e = {0};
    snprintf(e.name, sizeof e.name, "%s", name);
    snprintf(e.server, sizeof e.server, "%s", server);
    snprintf(e.edb, sizeof e.edb, "/srv/%s/%s.edb", server, name);
    snprintf(e.logs, sizeof e.logs, "/srv/%s/%s-logs", server, name);
    snprintf(e.base, sizeof e.base, "E01");
    assert_int_equal(om_uuid_parse(id, &e.id), 0);
    e.mounted = 1;
    return e;
}

typedef struct notified {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int n;
} notified;

static void on_change(void *arg)
{
    notified *c = arg;
    pthread_mutex_lock(&c->mu);
    c->n++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* Refreshes d until cond holds (5 s at most), as the store does when told of a change. */
#define REFRESH_UNTIL(d, cond)                                                                     \
    do {                                                                                           \
        uint64_t t0_ = om_mono_ns();                                                               \
        while (!(cond) && ms_since(t0_) < 5000) {                                                  \
            usleep(20000);                                                                         \
            assert_int_equal(store_dir_refresh(d, NULL), 0);                                       \
        }                                                                                          \
        assert_true(cond);                                                                         \
    } while (0)

static void two_servers_share_the_directory(void **state)
{
    SKIP_WITHOUT_ETCD();
    etcd *ea = client(), *eb = client();
    store_dir *a, *b;
    assert_int_equal(store_dir_open_etcd(ea, "dag1", "A", &a), 0);
    assert_int_equal(store_dir_open_etcd(eb, "dag1", "B", &b), 0);
    static notified nb = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    store_dir_on_change(b, on_change, &nb);
    const char *id = "6f1c0d4e-8a2b-4c3d-9e5f-0a1b2c3d4e5f";

    store_dbent e = db_ent("db1", "A", id);
    assert_int_equal(store_dir_put(a, &e), 0);
    assert_non_null(store_dir_find(a, "db1"));
    /* B holds no copy: it does not see db1 as its own, but learns of it through the watch. */
    json_t *rec = NULL;
    REFRESH_UNTIL(b, (json_decref(rec), rec = store_dir_record(b, "db1")) != NULL);
    pthread_mutex_lock(&nb.mu);
    assert_true(nb.n >= 1); /* the hook told of the change */
    pthread_mutex_unlock(&nb.mu);
    assert_null(store_dir_find(b, "db1"));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(rec, "copies"), "A"), "edb")),
                        "/srv/A/db1.edb");
    json_decref(rec);

    /* B adds its copy (its own paths); A's settings stay. */
    store_dbent eb1 = db_ent("db1", "B", id);
    eb1.allow_restore = 1; /* a server adding a copy does not change the database's settings */
    assert_int_equal(store_dir_put(b, &eb1), 0);
    store_dbent *got = store_dir_find(b, "db1");
    assert_non_null(got);
    assert_string_equal(got->edb, "/srv/B/db1.edb");
    assert_string_equal(got->server, "B");
    assert_int_equal(got->allow_restore, 0);
    rec = store_dir_record(b, "db1");
    assert_int_equal(json_object_size(json_object_get(rec, "copies")), 2);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(rec, "copies"), "B"), "preference")),
                     2);
    json_decref(rec);

    /* A changes a setting; B sees it at its next refresh, with its own paths. */
    store_dbent ne = *store_dir_find(a, "db1");
    ne.allow_restore = 1;
    assert_int_equal(store_dir_put(a, &ne), 0);
    REFRESH_UNTIL(b, store_dir_find(b, "db1")->allow_restore == 1);
    assert_string_equal(store_dir_find(b, "db1")->edb, "/srv/B/db1.edb");
    assert_string_equal(store_dir_find(a, "db1")->edb, "/srv/A/db1.edb");

    /* One name per DAG: B cannot make another db1. */
    store_dbent dup = db_ent("db1", "B", "0b6a2b9e-3f4c-4d5e-8f60-718293a4b5c6");
    assert_int_equal(store_dir_put(b, &dup), OM_E_DatabaseDuplicate);
    dup = db_ent("other", "A", "0b6a2b9e-3f4c-4d5e-8f60-718293a4b5c6");
    assert_int_equal(store_dir_put(a, &dup), 0);
    store_dbent dup2 = db_ent("other", "B", "1c7b3c0f-4a5d-4e6f-9071-8293a4b5c6d7");
    assert_int_equal(store_dir_put(b, &dup2), OM_E_DatabaseDuplicate);
    assert_non_null(strstr(om_err_detail(), "copies on A"));

    /* B removes its copy: the record stays for A; A removes its own: the record goes. */
    assert_int_equal(store_dir_remove(b, "db1"), 0);
    assert_null(store_dir_find(b, "db1"));
    rec = NULL;
    REFRESH_UNTIL(a, (json_decref(rec), rec = store_dir_record(a, "db1")) &&
                         json_object_size(json_object_get(rec, "copies")) == 1);
    json_decref(rec);
    rec = NULL;
    assert_int_equal(store_dir_remove(a, "db1"), 0);
    assert_int_equal(store_dir_remove(a, "other"), 0);
    REFRESH_UNTIL(b, (json_decref(rec), rec = store_dir_record(b, "db1")) == NULL);
    etcd_kv *kvs;
    size_t n;
    assert_int_equal(etcd_range_prefix(ea, "/ombra/dag/dag1/", &kvs, &n, NULL), 0);
    assert_int_equal(n, 0);

    /* A directory opened later reads what is there. */
    e = db_ent("db3", "A", id);
    assert_int_equal(store_dir_put(a, &e), 0);
    store_dir *a2;
    assert_int_equal(store_dir_open_etcd(ea, "dag1", "A", &a2), 0);
    assert_int_equal(a2->n, 1);
    assert_string_equal(a2->ents[0].name, "db3");
    store_dir_close(a2);
    store_dir_on_change(b, NULL, NULL);
    store_dir_close(a);
    store_dir_close(b);
    assert_int_equal(etcd_put(ea, "/ombra/dag/dag1/databases/junk", "{", 1, 0), 0);
    assert_int_equal(store_dir_open_etcd(ea, "dag1", "A", &a), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "/ombra/dag/dag1/databases/junk"));
    assert_int_equal(store_dir_open_etcd(ea, "dag/1", "A", &a), OM_E_InvalidName);
    assert_int_equal(etcd_delete(ea, "/ombra/dag/dag1/", 1, NULL), 0);
    etcd_close(ea);
    etcd_close(eb);
}

typedef struct writer_arg {
    store_dir *d;
    const char *server;
    int rc;
} writer_arg;

/* Changes only this server's copy, 15 times, from an entry never refreshed. */
static void *copy_writer(void *arg)
{
    writer_arg *w = arg;
    for (int i = 0; i < 15 && !w->rc; i++) {
        store_dbent ne = *store_dir_find(w->d, "db2");
        snprintf(ne.logs, sizeof ne.logs, "/srv/%s/logs-%d", w->server, i);
        w->rc = store_dir_put(w->d, &ne);
    }
    return NULL;
}

static void concurrent_changes_of_two_servers_are_all_kept(void **state)
{
    SKIP_WITHOUT_ETCD();
    etcd *ea = client(), *eb = client();
    store_dir *a, *b;
    assert_int_equal(store_dir_open_etcd(ea, "dag2", "A", &a), 0);
    assert_int_equal(store_dir_open_etcd(eb, "dag2", "B", &b), 0);
    const char *id = "2d8c4d10-5b6e-4f70-8182-93a4b5c6d7e8";
    store_dbent e = db_ent("db2", "A", id);
    assert_int_equal(store_dir_put(a, &e), 0);
    e = db_ent("db2", "B", id);
    assert_int_equal(store_dir_put(b, &e), 0);

    /* A's entry is stale now (B's copy came after it): a setting changed from it keeps B's
     * copy, and B's stale entry changing another setting keeps A's. */
    store_dbent ne = *store_dir_find(a, "db2");
    ne.circular = 1;
    assert_int_equal(store_dir_put(a, &ne), 0);
    ne = *store_dir_find(b, "db2");
    assert_int_equal(ne.circular, 0); /* B has not refreshed */
    ne.allow_restore = 1;
    assert_int_equal(store_dir_put(b, &ne), 0);
    assert_int_equal(store_dir_find(b, "db2")->circular, 1); /* read back with A's change */

    /* Both servers at once, each on its own copy: every last change is there. */
    writer_arg wa = {a, "A", 0}, wb = {b, "B", 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, copy_writer, &wa);
    pthread_create(&tb, NULL, copy_writer, &wb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(wa.rc, 0);
    assert_int_equal(wb.rc, 0);
    etcd_kv *kv;
    assert_int_equal(
        etcd_get(ea, "/ombra/dag/dag2/databases/2d8c4d10-5b6e-4f70-8182-93a4b5c6d7e8", &kv, NULL),
        0);
    json_t *rec = json_loadb((char *)kv->val, kv->len, 0, NULL);
    etcd_kvs_free(kv, 1);
    json_t *copies = json_object_get(rec, "copies");
    assert_string_equal(json_string_value(json_object_get(json_object_get(copies, "A"), "logs")),
                        "/srv/A/logs-14");
    assert_string_equal(json_string_value(json_object_get(json_object_get(copies, "B"), "logs")),
                        "/srv/B/logs-14");
    assert_true(json_is_true(json_object_get(rec, "circular_logging")));
    assert_true(json_is_true(json_object_get(rec, "allow_restore")));
    json_decref(rec);

    /* A removal by another server is not undone by a stale put. */
    assert_int_equal(store_dir_remove(b, "db2"), 0);
    ne = *store_dir_find(a, "db2");
    assert_int_equal(etcd_delete(ea, "/ombra/dag/dag2/", 1, NULL), 0);
    ne.mounted = 0;
    assert_int_equal(store_dir_put(a, &ne), OM_E_DatabaseNotFound);
    assert_non_null(strstr(om_err_detail(), "removed from the DAG"));
    store_dir_close(a);
    store_dir_close(b);
    etcd_close(ea);
    etcd_close(eb);
}

/* Joining: a server's file directory goes into the DAG once, active there; a name the DAG has
 * with another id refuses the whole import, nothing written; an active copy moved elsewhere is
 * seen by the watch. */
static void a_file_directory_joins_once_and_a_duplicate_name_imports_nothing(void **state)
{
    SKIP_WITHOUT_ETCD();
    etcd *e = client();
    const char *id1 = "3e9d5e21-6c7f-4a81-9293-a4b5c6d7e8f9",
               *id2 = "4fae6f32-7d80-4b92-a3a4-b5c6d7e8f9a0",
               *id3 = "50bf7043-8e91-4ca3-b4b5-c6d7e8f9a0b1";
    char fa[300], fc[300];
    snprintf(fa, sizeof fa, "%s/dir-a.json", tmpdir);
    snprintf(fc, sizeof fc, "%s/dir-c.json", tmpdir);
    store_dir *a, *c, *ja = NULL, *jc = NULL;
    store_dir_conf conf;
    assert_int_equal(store_dir_read_conf(fa, &conf), 0); /* no file yet: a file directory */
    assert_int_equal(conf.etcd, 0);
    assert_int_equal(store_dir_open_file(fa, &a), 0);
    store_dbent m1 = db_ent("m1", "A", id1), m2 = db_ent("m2", "A", id2);
    assert_int_equal(store_dir_put(a, &m1), 0);
    assert_int_equal(store_dir_put(a, &m2), 0);
    assert_int_equal(store_dir_find(a, "m1")->active, 1);

    assert_int_equal(store_dir_join(a, e, main_etcd.url, "dag3", "A", 0, &ja), 0);
    assert_int_equal(ja->n, 2);
    store_dbent *got = store_dir_find(ja, "m2");
    assert_non_null(got);
    assert_int_equal(got->active, 1);
    assert_string_equal(got->active_on, "A");
    assert_string_equal(got->edb, "/srv/A/m2.edb");
    etcd_kv *kv;
    assert_int_equal(
        etcd_get(e, "/ombra/dag/dag3/active/3e9d5e21-6c7f-4a81-9293-a4b5c6d7e8f9", &kv, NULL), 0);
    assert_non_null(kv);
    json_t *act = json_loadb((char *)kv->val, kv->len, 0, NULL);
    etcd_kvs_free(kv, 1);
    assert_string_equal(json_string_value(json_object_get(act, "server")), "A");
    assert_int_equal(json_integer_value(json_object_get(act, "epoch")), 1);
    json_decref(act);
    /* The file says where the directory is now, and is no file directory any more. */
    assert_int_equal(store_dir_read_conf(fa, &conf), 0);
    assert_int_equal(conf.etcd, 1);
    assert_string_equal(conf.url, main_etcd.url);
    assert_string_equal(conf.dag, "dag3");
    assert_string_equal(conf.server, "A");
    store_dir *again;
    assert_int_equal(store_dir_open_file(fa, &again), OM_E_InvalidParameter);
    /* Importing again (a crash between the records and the file) changes nothing. */
    assert_int_equal(store_dir_join(a, e, main_etcd.url, "dag3", "A", 0, &again), 0);
    assert_int_equal(again->n, 2);
    store_dir_close(again);

    /* Server C has an m2 of its own and an m3: the whole import is refused, checked first. */
    assert_int_equal(store_dir_open_file(fc, &c), 0);
    store_dbent c3 = db_ent("m3", "C", "61c08154-9fa2-4db4-85c6-d7e8f9a0b1c2"),
                c2 = db_ent("m2", "C", id3);
    assert_int_equal(store_dir_put(c, &c3), 0);
    assert_int_equal(store_dir_put(c, &c2), 0);
    etcd_kv *kvs;
    size_t n0, n1;
    assert_int_equal(etcd_range_prefix(e, "/ombra/dag/dag3/", &kvs, &n0, NULL), 0);
    etcd_kvs_free(kvs, n0);
    assert_int_equal(store_dir_join(c, e, main_etcd.url, "dag3", "C", 1, &jc),
                     OM_E_DatabaseDuplicate);
    assert_int_equal(store_dir_join(c, e, main_etcd.url, "dag3", "C", 0, &jc),
                     OM_E_DatabaseDuplicate);
    assert_non_null(strstr(om_err_detail(), "'m2'"));
    assert_null(jc);
    assert_int_equal(etcd_range_prefix(e, "/ombra/dag/dag3/", &kvs, &n1, NULL), 0);
    etcd_kvs_free(kvs, n1);
    assert_int_equal(n1, n0);
    assert_int_equal(store_dir_read_conf(fc, &conf), 0);
    assert_int_equal(conf.etcd, 0);

    /* Another server's copy of m1 is not active there; the active moved to it is seen. */
    store_dir *b;
    etcd *eb = client();
    assert_int_equal(store_dir_open_etcd(eb, "dag3", "B", &b), 0);
    store_dbent b1 = db_ent("m1", "B", id1);
    assert_int_equal(store_dir_put(b, &b1), 0);
    assert_int_equal(store_dir_find(b, "m1")->active, 0);
    assert_string_equal(store_dir_find(b, "m1")->active_on, "A");
    const char *moved = "{\"epoch\":2,\"server\":\"B\"}";
    assert_int_equal(etcd_put(e, "/ombra/dag/dag3/active/3e9d5e21-6c7f-4a81-9293-a4b5c6d7e8f9",
                              moved, strlen(moved), 0),
                     0);
    REFRESH_UNTIL(b, store_dir_find(b, "m1")->active == 1);
    REFRESH_UNTIL(ja, store_dir_find(ja, "m1")->active == 0);
    assert_string_equal(store_dir_find(ja, "m1")->active_on, "B");
    store_dir_close(b);
    store_dir_close(ja);
    store_dir_close(a);
    store_dir_close(c);
    assert_int_equal(etcd_delete(e, "/ombra/dag/dag3/", 1, NULL), 0);
    etcd_close(e);
    etcd_close(eb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_of_any_bytes_round_trip),
        cmocka_unit_test(a_txn_with_a_stale_revision_is_refused),
        cmocka_unit_test(a_lapsed_lease_takes_its_key),
        cmocka_unit_test(a_watch_misses_nothing_across_an_etcd_restart),
        cmocka_unit_test(a_watch_from_a_compacted_revision_resyncs),
        cmocka_unit_test(an_endpoint_that_never_answers_fails_within_the_timeout),
        cmocka_unit_test(the_next_endpoint_serves_when_the_first_is_dead),
        cmocka_unit_test(https_with_a_client_certificate),
        cmocka_unit_test(two_servers_share_the_directory),
        cmocka_unit_test(concurrent_changes_of_two_servers_are_all_kept),
        cmocka_unit_test(a_file_directory_joins_once_and_a_duplicate_name_imports_nothing),
    };
    const struct CMUnitTest before_any_etcd_open[] = {
        cmocka_unit_test(libcurl_is_loaded_by_etcd_open_and_its_absence_is_one_clear_error),
    };
    int failed = cmocka_run_group_tests(before_any_etcd_open, NULL, NULL);
    return failed + cmocka_run_group_tests(tests, group_setup, group_teardown);
}
