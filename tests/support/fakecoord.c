/* The fake coordinator of the unit tests (fakecoord.h). */
#include "fakecoord.h"

#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/proto.h"

char fc_dir[64], fc_sock[96];
static int listen_fd = -1;

int fc_setup_dir(const char *name)
{
    snprintf(fc_dir, sizeof fc_dir, "/tmp/ombra-%.20s-XXXXXX", name);
    if (!mkdtemp(fc_dir)) return -1;
    snprintf(fc_sock, sizeof fc_sock, "%s/vss.sock", fc_dir);
    return 0;
}

void fc_rm_dir(void)
{
    fc_unlisten();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fc_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", fc_dir);
}

int fc_listen(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", fc_sock);
    unlink(fc_sock);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 8) != 0) {
        if (s >= 0) close(s);
        return -1;
    }
    listen_fd = s;
    return 0;
}

void fc_unlisten(void)
{
    if (listen_fd >= 0) close(listen_fd);
    listen_fd = -1;
    unlink(fc_sock);
}

int fc_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1;
}

int fc_accept(int timeout_ms)
{
    if (!fc_readable(listen_fd, timeout_ms)) return -1;
    return accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
}

json_t *fc_recv(int fd, int timeout_ms)
{
    json_t *m = NULL;
    if (!fc_readable(fd, timeout_ms) || om_proto_recv(fd, &m, NULL, NULL)) return NULL;
    return m;
}

void fc_send(int fd, json_t *m)
{
    assert_non_null(m);
    assert_int_equal(om_proto_send(fd, m, NULL, 0), 0);
    json_decref(m);
}

void fc_send_event(int fd, int64_t id, const char *name, const char *session, json_t *args)
{
    fc_send(fd, json_pack("{s:s, s:I, s:s, s:o}", "event", name, "id", (json_int_t)id, "session",
                          session, "args", args ? args : json_object()));
}

json_t *fc_answer(int fd, int64_t id)
{
    json_t *a = fc_recv(fd, FC_WAIT_MS);
    assert_non_null(a);
    assert_int_equal(om_json_int_or(a, "answer", -1), id);
    return a;
}

void fc_expect_ok(int fd, int64_t id)
{
    json_t *a = fc_answer(fd, id);
    if (!json_is_true(json_object_get(a, "ok")))
        fail_msg("event %lld failed: %s", (long long)id, om_json_str_or(a, "reason", "?"));
    json_decref(a);
}

void fc_expect_failure(int fd, int64_t id, const char *kind, const char *reason_part)
{
    json_t *a = fc_answer(fd, id);
    assert_true(json_is_false(json_object_get(a, "ok")));
    assert_string_equal(om_json_str_or(a, "failure", ""), kind);
    assert_non_null(strstr(om_json_str_or(a, "reason", ""), reason_part));
    json_decref(a);
}
