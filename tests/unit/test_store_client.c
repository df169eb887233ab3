/* src/store/client.h against a fake store that lives in this test: a Unix socket in a temp
 * directory and a thread that answers each request from a script and records it, as ombra-store
 * would (docs/protocol.md). What is checked is what a caller relies on: each request reaches the
 * store once, with the documented fields; a connection the store closed while idle is replaced
 * before the next request; the store's refusal is the error a caller sees; a reply that does not
 * carry what it must is an error, never a short or empty result. */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "store/client.h"

#define WAIT_MS 5000

static char tmpdir[64], sock_path[96];

/* ---- the fake store ---- */

/* The reply to one request (a new reference); *data, *dlen: a data frame to send after it. */
typedef json_t *(*script_fn)(const char *op, json_t *req, const void **data, size_t *dlen);

typedef struct fake_store {
    int listen_fd;
    pthread_t th;
    script_fn script;
    int close_after; /* close each connection after this many requests, as the store closes an
                        idle one (0: keep it) */
    int refuse;      /* answer each connection at once with an error, read nothing, close */
    pthread_mutex_t mu;
    json_t *reqs; /* every request received, in order */
    int conns;    /* connections accepted */
    int stop;
} fake_store;

static fake_store F;

static int readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1;
}

static int stopping(void)
{
    pthread_mutex_lock(&F.mu);
    int s = F.stop;
    pthread_mutex_unlock(&F.mu);
    return s;
}

static void serve_conn(int fd)
{
    if (F.refuse) {
        json_t *r = json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "error", OM_E_FileAccessDenied,
                              "name", "FileAccessDenied", "message",
                              "uid 65534 may not use this store. HINT: ask for the group");
        om_proto_send(fd, r, NULL, 0);
        json_decref(r);
        return;
    }
    for (int n = 0; !F.close_after || n < F.close_after; n++) {
        json_t *req = NULL;
        uint8_t *data = NULL;
        size_t dlen = 0;
        while (!readable(fd, 50))
            if (stopping()) return;
        if (om_proto_recv(fd, &req, &data, &dlen)) return; /* the client closed it */
        if (data) json_object_set_new(req, "data_bytes", json_stringn((char *)data, dlen));
        free(data);
        pthread_mutex_lock(&F.mu);
        json_array_append(F.reqs, req);
        pthread_mutex_unlock(&F.mu);
        const void *rdata = NULL;
        size_t rdlen = 0;
        json_t *rep = F.script(json_string_value(json_object_get(req, "op")), req, &rdata, &rdlen);
        om_proto_send(fd, rep, rdata, rdlen);
        json_decref(rep);
        json_decref(req);
    }
}

static void *store_thread(void *arg)
{
    (void)arg;
    while (!stopping()) {
        if (!readable(F.listen_fd, 50)) continue;
        int fd = accept4(F.listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        pthread_mutex_lock(&F.mu);
        F.conns++;
        pthread_mutex_unlock(&F.mu);
        serve_conn(fd);
        close(fd);
    }
    return NULL;
}

static void store_start(script_fn fn, int close_after, int refuse)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
    F.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(F.listen_fd >= 0);
    assert_int_equal(bind(F.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(F.listen_fd, 8), 0);
    F.script = fn;
    F.close_after = close_after;
    F.refuse = refuse;
    F.reqs = json_array();
    assert_int_equal(pthread_create(&F.th, NULL, store_thread, NULL), 0);
}

static void store_stop(void)
{
    pthread_mutex_lock(&F.mu);
    F.stop = 1;
    pthread_mutex_unlock(&F.mu);
    pthread_join(F.th, NULL);
    close(F.listen_fd);
    unlink(sock_path);
}

/* The i-th request the store received. */
static json_t *req_at(size_t i)
{
    pthread_mutex_lock(&F.mu);
    json_t *r = json_array_get(F.reqs, i);
    pthread_mutex_unlock(&F.mu);
    return r;
}

static size_t nreqs(void)
{
    pthread_mutex_lock(&F.mu);
    size_t n = json_array_size(F.reqs);
    pthread_mutex_unlock(&F.mu);
    return n;
}

static int nconns(void)
{
    pthread_mutex_lock(&F.mu);
    int n = F.conns;
    pthread_mutex_unlock(&F.mu);
    return n;
}

static const char *req_str(size_t i, const char *key)
{
    return json_string_value(json_object_get(req_at(i), key));
}

static int setup(void **s)
{
    (void)s;
    om_log_min_level(OM_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ombra-store-client-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(sock_path, sizeof sock_path, "%s/store.sock", tmpdir);
    memset(&F, 0, sizeof F);
    pthread_mutex_init(&F.mu, NULL);
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    store_stop();
    json_decref(F.reqs);
    pthread_mutex_destroy(&F.mu);
    rmdir(tmpdir);
    return 0;
}

/* ---- scripts ---- */

static json_t *db_obj(const char *name)
{
    return json_pack("{s:s, s:s, s:b, s:s}", "name", name, "id",
                     "0c3a9b12-77e4-4d1a-9f0e-2b6de3a1c002", "mounted", 1, "state",
                     "Clean Shutdown");
}

/* A store that knows database "db1", mailbox "alice" with message 7 ("hello"). */
static json_t *good_store(const char *op, json_t *req, const void **data, size_t *dlen)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    if (!strcmp(op, "status"))
        return json_pack("{s:b, s:s, s:i, s:i, s:i}", "ok", 1, "server", "srv1", "pid", 42,
                         "mounted", 1, "databases", 1);
    if (!strncmp(op, "db.", 3) && strcmp(op, "db.list") && strcmp(name, "db1") &&
        strncmp(op, "db.new", 6))
        return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "error", OM_E_DatabaseNotFound, "name",
                         "DatabaseNotFound", "message", "no database named 'nope'");
    if (!strcmp(op, "db.list"))
        return json_pack("{s:b, s:[o]}", "ok", 1, "databases", db_obj("db1"));
    if (!strcmp(op, "db.dismount"))
        return json_pack("{s:b, s:o, s:s}", "ok", 1, "db", db_obj(name), "warning",
                         "'db1' is dismounted, but its clean shutdown failed");
    if (!strncmp(op, "db.", 3)) return json_pack("{s:b, s:o}", "ok", 1, "db", db_obj(name));
    if (!strcmp(op, "mail.deliver")) return json_pack("{s:b, s:i}", "ok", 1, "id", 7);
    if (!strcmp(op, "mail.get")) {
        *data = "hello";
        *dlen = 5;
        return json_pack("{s:b, s:i, s:s, s:i, s:s}", "ok", 1, "id", 7, "folder", "Inbox", "size",
                         5, "subject", "hi");
    }
    if (!strcmp(op, "mail.digest"))
        return json_pack("{s:b, s:s}", "ok", 1, "digest", "0123456789abcdef0123456789abcdef");
    return json_pack("{s:b}", "ok", 1);
}

/* ---- tests ---- */

static void each_request_carries_its_documented_fields(void **s)
{
    store_start(good_store, 0, 0);
    store_client *c;
    json_t *db = NULL;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    store_db_spec spec = {
        .edb = "/d/x.edb", .logs = "/d/logs", .base = "E01", .circular_logging = 1};
    assert_int_equal(store_client_db_new(c, "x", &spec, &db), 0);
    assert_string_equal(json_string_value(json_object_get(db, "name")), "x");
    json_decref(db);
    store_db_spec rec = {.edb = "/r/r.edb", .logs = "/r/logs", .recovery = 1};
    assert_int_equal(store_client_db_new(c, "r", &rec, &db), 0);
    json_decref(db);
    assert_int_equal(store_client_db_set(c, "db1", -1, 1, &db), 0);
    json_decref(db);
    store_mail_new m = {.mailbox = "alice", .subject = "hi", .body = "body\0bytes", .size = 10};
    uint64_t id = 0;
    assert_int_equal(store_client_mail_deliver(c, "db1", &m, &id), 0);
    assert_int_equal(id, 7);
    store_client_free(c);

    assert_int_equal(nreqs(), 4);
    assert_string_equal(req_str(0, "op"), "db.new");
    assert_string_equal(req_str(0, "edb"), "/d/x.edb");
    assert_string_equal(req_str(0, "logs"), "/d/logs");
    assert_string_equal(req_str(0, "base"), "E01");
    assert_true(json_is_true(json_object_get(req_at(0), "circular_logging")));
    assert_string_equal(req_str(1, "op"), "db.new_recovery");
    assert_null(json_object_get(req_at(1), "circular_logging"));
    assert_string_equal(req_str(2, "op"), "db.set");
    assert_null(json_object_get(req_at(2), "circular_logging")); /* -1: left as it is */
    assert_true(json_is_true(json_object_get(req_at(2), "allow_restore")));
    assert_string_equal(req_str(3, "op"), "mail.deliver");
    assert_string_equal(req_str(3, "db"), "db1");
    assert_string_equal(req_str(3, "mailbox"), "alice");
    assert_null(json_object_get(req_at(3), "folder"));
    json_t *body = json_object_get(req_at(3), "data_bytes");
    assert_int_equal(json_string_length(body), 10);
    assert_memory_equal(json_string_value(body), "body\0bytes", 10);
}

static void a_connection_closed_while_idle_is_replaced_and_nothing_is_sent_twice(void **s)
{
    store_start(good_store, 1, 0); /* the store closes every connection after one request */
    store_client *c;
    json_t *db = NULL;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_client_db_show(c, "db1", &db), 0);
        json_decref(db);
        /* The store closes the connection as soon as it has answered: let the close arrive
         * before the next call, as an idle timeout's would. */
        usleep(100000);
    }
    uint64_t id;
    store_mail_new m = {.mailbox = "alice", .body = "x", .size = 1};
    assert_int_equal(store_client_mail_deliver(c, "db1", &m, &id), 0);
    store_client_free(c);
    assert_int_equal(nreqs(), 4); /* each request once */
    assert_int_equal(nconns(), 4);
}

static void requests_share_one_connection_while_the_store_keeps_it(void **s)
{
    store_start(good_store, 0, 0);
    store_client *c;
    json_t *v = NULL;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    assert_int_equal(store_client_status(c, &v), 0);
    assert_string_equal(json_string_value(json_object_get(v, "server")), "srv1");
    assert_null(json_object_get(v, "ok"));
    json_decref(v);
    assert_int_equal(store_client_db_list(c, &v), 0);
    assert_int_equal(json_array_size(v), 1);
    json_decref(v);
    char d[33];
    assert_int_equal(store_client_mail_digest(c, "db1", d), 0);
    assert_string_equal(d, "0123456789abcdef0123456789abcdef");
    store_client_free(c);
    assert_int_equal(nreqs(), 3);
    assert_int_equal(nconns(), 1);
}

static void the_stores_error_is_the_callers_error(void **s)
{
    store_start(good_store, 0, 0);
    store_client *c;
    json_t *db = (json_t *)1;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    assert_int_equal(store_client_db_show(c, "nope", &db), OM_E_DatabaseNotFound);
    assert_null(db);
    assert_string_equal(om_err_detail(), "no database named 'nope'");
    /* The connection goes on serving after an error reply. */
    assert_int_equal(store_client_db_show(c, "db1", &db), 0);
    json_decref(db);
    assert_int_equal(nconns(), 1);
    store_client_free(c);
}

static void a_refusal_sent_before_reading_is_the_error_not_the_broken_pipe(void **s)
{
    store_start(good_store, 0, 1);
    store_client *c;
    uint64_t id;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    /* A large body: the store closes before reading it, so the send fails first. */
    size_t n = 8 << 20;
    uint8_t *big = calloc(1, n);
    assert_non_null(big);
    store_mail_new m = {.mailbox = "alice", .body = big, .size = n};
    assert_int_equal(store_client_mail_deliver(c, "db1", &m, &id), OM_E_FileAccessDenied);
    assert_non_null(strstr(om_err_detail(), "may not use this store"));
    free(big);
    store_client_free(c);
}

static void the_warning_beside_a_change_is_kept_until_the_next_call(void **s)
{
    store_start(good_store, 0, 0);
    store_client *c;
    json_t *db = NULL;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    assert_string_equal(store_client_warning(c), "");
    assert_int_equal(store_client_db_dismount(c, "db1", &db), 0);
    json_decref(db);
    assert_non_null(strstr(store_client_warning(c), "clean shutdown failed"));
    assert_int_equal(store_client_db_mount(c, "db1", &db), 0);
    json_decref(db);
    assert_string_equal(store_client_warning(c), "");
    store_client_free(c);
}

/* A store whose replies lack what they must carry. */
static json_t *short_store(const char *op, json_t *req, const void **data, size_t *dlen)
{
    if (!strcmp(op, "mail.get")) {
        *data = "hel";
        *dlen = 3;
        return json_pack("{s:b, s:i, s:i}", "ok", 1, "id", 7, "size", 5);
    }
    return json_pack("{s:b}", "ok", 1); /* no "db", no "databases", no "id" */
}

static void a_reply_without_what_it_must_carry_is_an_error(void **s)
{
    store_start(short_store, 0, 0);
    store_client *c;
    json_t *v = (json_t *)1;
    uint8_t *body = (uint8_t *)1;
    size_t n = 99;
    uint64_t id;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    assert_int_equal(store_client_mail_get(c, "db1", "alice", 7, NULL, &body, &n), OM_E_Internal);
    assert_null(body);
    assert_int_equal(n, 0);
    assert_string_equal(om_err_detail(), "the server sent 3 bytes of a 5-byte message");
    assert_int_equal(store_client_db_show(c, "db1", &v), OM_E_Internal);
    assert_null(v);
    assert_int_equal(store_client_db_list(c, &v), OM_E_Internal);
    store_mail_new m = {.mailbox = "alice", .body = "x", .size = 1};
    assert_int_equal(store_client_mail_deliver(c, "db1", &m, &id), OM_E_Internal);
    store_client_free(c);
}

static void mail_get_returns_the_body_byte_for_byte(void **s)
{
    store_start(good_store, 0, 0);
    store_client *c;
    json_t *info = NULL;
    uint8_t *body = NULL;
    size_t n = 0;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    assert_int_equal(store_client_mail_get(c, "db1", "alice", 7, &info, &body, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(body, "hello", 5);
    assert_string_equal(json_string_value(json_object_get(info, "folder")), "Inbox");
    assert_int_equal(json_integer_value(json_object_get(req_at(0), "id")), 7);
    free(body);
    json_decref(info);
    store_client_free(c);
}

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
    uint64_t *seen = arg;
    assert_int_equal(total, 30);
    assert_true(done >= seen[0]);
    seen[0] = done;
    seen[1]++;
}

/* A store that answers one mail.load with progress objects, then the reply (a script answers
 * with one reply only). */
static void *load_server(void *arg)
{
    (void)arg;
    int fd = -1;
    if (readable(F.listen_fd, WAIT_MS)) fd = accept4(F.listen_fd, NULL, NULL, SOCK_CLOEXEC);
    json_t *req = NULL;
    if (fd < 0 || !readable(fd, WAIT_MS) || om_proto_recv(fd, &req, NULL, NULL)) return NULL;
    pthread_mutex_lock(&F.mu);
    json_array_append_new(F.reqs, req);
    pthread_mutex_unlock(&F.mu);
    for (int i = 10; i <= 30; i += 10) {
        json_t *p = json_pack("{s:i, s:i}", "progress", i, "total", 30);
        om_proto_send(fd, p, NULL, 0);
        json_decref(p);
    }
    json_t *r =
        json_pack("{s:b, s:i, s:f, s:f}", "ok", 1, "messages", 30, "seconds", 0.5, "rate", 60.0);
    om_proto_send(fd, r, NULL, 0);
    json_decref(r);
    readable(fd, WAIT_MS); /* until the client closes */
    close(fd);
    return NULL;
}

static void mail_load_reports_progress_then_its_result(void **s)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
    F.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(F.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(F.listen_fd, 8), 0);
    F.reqs = json_array();
    assert_int_equal(pthread_create(&F.th, NULL, load_server, NULL), 0);
    store_client *c;
    json_t *res = NULL;
    uint64_t seen[2] = {0, 0};
    store_client_load l = {.mailboxes = 3, .messages = 30, .size = 100, .seed = 9};
    assert_int_equal(store_client_new(sock_path, &c), 0);
    assert_int_equal(store_client_mail_load(c, "db1", &l, on_progress, seen, &res), 0);
    assert_int_equal(seen[1], 3);
    assert_int_equal(seen[0], 30);
    assert_int_equal(json_integer_value(json_object_get(res, "messages")), 30);
    json_decref(res);
    store_client_free(c);
    assert_string_equal(req_str(0, "op"), "mail.load");
    assert_int_equal(json_integer_value(json_object_get(req_at(0), "mailboxes")), 3);
    assert_int_equal(json_integer_value(json_object_get(req_at(0), "seed")), 9);
}

static void nothing_listening_is_file_not_found(void **s)
{
    store_client *c;
    json_t *v = NULL;
    assert_int_equal(store_client_new(sock_path, &c), 0);
    assert_int_equal(store_client_status(c, &v), OM_E_FileNotFound);
    assert_non_null(strstr(om_err_detail(), "nothing listens"));
    store_client_free(c);
    /* teardown stops a store: give it one with nothing to do */
    store_start(good_store, 0, 0);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(each_request_carries_its_documented_fields),
        T(a_connection_closed_while_idle_is_replaced_and_nothing_is_sent_twice),
        T(requests_share_one_connection_while_the_store_keeps_it),
        T(the_stores_error_is_the_callers_error),
        T(a_refusal_sent_before_reading_is_the_error_not_the_broken_pipe),
        T(the_warning_beside_a_change_is_kept_until_the_next_call),
        T(a_reply_without_what_it_must_carry_is_an_error),
        T(mail_get_returns_the_body_byte_for_byte),
        T(mail_load_reports_progress_then_its_result),
        T(nothing_listening_is_file_not_found),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
