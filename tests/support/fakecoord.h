/* A fake ombra-vssd for unit tests: a Unix socket in a temp directory, on which the test plays
 * the coordinator of docs/vss-protocol.md by hand: it accepts a writer's connection, sends it
 * events and reads its answers (test_vss_sdk.c for the writer SDK, test_store_writer.c for the
 * store's writer). Every wait is bounded by FC_WAIT_MS, after which the test fails (cmocka
 * asserts), so a writer that never answers cannot hang the suite. */
#ifndef OM_TESTS_FAKECOORD_H
#define OM_TESTS_FAKECOORD_H

#include <jansson.h>
#include <stdint.h>

#define FC_WAIT_MS 5000

/* The temp directory and the socket path in it (fc_setup_dir). */
extern char fc_dir[64], fc_sock[96];

/* Makes /tmp/ombra-<name>-XXXXXX and names <dir>/vss.sock in it; 0 or -1. */
int fc_setup_dir(const char *name);
/* Stops listening and removes the directory and what is in it. */
void fc_rm_dir(void);

/* Listens on fc_sock; 0 or -1. */
int fc_listen(void);
void fc_unlisten(void);
/* 1 when fd is readable within timeout_ms. */
int fc_readable(int fd, int timeout_ms);
/* A connection within timeout_ms, or -1. */
int fc_accept(int timeout_ms);
/* The next message within timeout_ms, or NULL (timeout or closed). */
json_t *fc_recv(int fd, int timeout_ms);
/* Sends m (stolen); the send must succeed. */
void fc_send(int fd, json_t *m);

/* Sends event `name` of session with args (stolen; NULL: {}) and id. */
void fc_send_event(int fd, int64_t id, const char *name, const char *session, json_t *args);
/* The next answer, which must be the answer to id (caller decrefs). */
json_t *fc_answer(int fd, int64_t id);
/* The answer to id is ok. */
void fc_expect_ok(int fd, int64_t id);
/* The answer to id is a failure of that kind whose reason contains reason_part. */
void fc_expect_failure(int fd, int64_t id, const char *kind, const char *reason_part);

#endif
