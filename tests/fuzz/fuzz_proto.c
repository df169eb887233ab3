/* libFuzzer target for the control-socket protocol (base/proto.h): the bytes a client or a
 * hostile peer puts on store.sock or vss.sock, read by the real frame reader (om_proto_recv) the
 * way a daemon reads them (limits bound: timeouts, max_data, a shared budget) and the way a
 * client reads a reply (no limits), then handed to what a daemon and a client do with a message
 * without a daemon behind them: the JSON accessors of the request handlers, the error reply
 * (om_proto_error), the client's reply check (om_proto_check), and a send of the message back
 * through om_proto_send that must read back the same. Built and run by tests/fuzz/run.sh.
 *
 * Input layout: byte 0 is the mode, the rest the stream.
 *   mode & 1   the stream is raw bytes, fed as they are (length prefixes and all);
 *              else it is a list of messages, each [u16 json length][json][u8 flags]
 *              [u32 announced data length][u16 data length][data], from which the frames are
 *              built with right length prefixes (flags & 1: put "data": announced in the
 *              object; flags & 2: send a data frame), so mutations reach past the framing.
 *   mode & 2   read as a client (no limits) instead of as a daemon.
 *
 * Besides "no crash, no sanitizer report, no leak": a message received with data has the
 * length it announced; a message sent back reads back equal; a daemon's budget is all given
 * back when its connection ends. The messages are written on a socketpair whose write end is
 * then shut, so no read ever waits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAX_WRITE (64u << 10) /* well under a socketpair's buffer: writes never block */

static void fz_fail(const char *what)
{
    fprintf(stderr, "fuzz_proto: %s\n", what);
    abort();
}

typedef struct fz_out {
    uint8_t *b;
    size_t n;
} fz_out;

static void put(fz_out *o, const void *p, size_t n)
{
    if (o->n + n > FZ_MAX_WRITE) n = FZ_MAX_WRITE - o->n;
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put_len(fz_out *o, uint32_t v)
{
    uint8_t h[4];
    om_put32(h, v);
    put(o, h, 4);
}

/* The structured layout turned into frames. */
static void build_frames(const uint8_t *d, size_t n, fz_out *o)
{
    size_t i = 0;
    while (i + 2 <= n && o->n < FZ_MAX_WRITE) {
        size_t jl = om_get16(d + i);
        i += 2;
        if (jl > n - i) jl = n - i;
        const uint8_t *json = d + i;
        i += jl;
        uint8_t flags = i < n ? d[i++] : 0;
        uint32_t announced = i + 4 <= n ? om_get32(d + i) : 0;
        i += i + 4 <= n ? 4 : n - i;
        size_t dl = i + 2 <= n ? om_get16(d + i) : 0;
        i += i + 2 <= n ? 2 : n - i;
        if (dl > n - i) dl = n - i;
        if (flags & 1) {
            /* The object with "data": announced, whatever the JSON said. */
            char tail[32];
            int tl = snprintf(tail, sizeof tail, ",\"data\":%u}", announced);
            size_t body = jl && json[jl - 1] == '}' ? jl - 1 : jl;
            put_len(o, (uint32_t)(body + (size_t)tl));
            put(o, json, body);
            put(o, tail, (size_t)tl);
        } else {
            put_len(o, (uint32_t)jl);
            put(o, json, jl);
        }
        if (flags & 2) {
            put_len(o, (uint32_t)dl);
            put(o, d + i, dl);
        }
        i += dl;
    }
}

/* What the request handlers read of a request, and the two replies a daemon may send. */
static void handle(json_t *req, const uint8_t *data, size_t dlen)
{
    const char *op = om_json_str_or(req, "op", "");
    const char *s;
    int64_t v;
    static const char *const keys[] = {"op", "name", "db",      "mailbox", "folder", "subject",
                                       "id", "seed", "session", "kind",    "data"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        om_json_str(req, keys[k], &s);
        om_json_int(req, keys[k], &v);
        (void)om_json_int_or(req, keys[k], 0);
    }
    /* A client reading this object as a reply. */
    int rc = om_proto_check(req);
    if (rc >= 0 && rc != 0) fz_fail("om_proto_check returned a positive error");
    if (!*op) {
        json_t *e = om_proto_error(om_errf(OM_E_InvalidParameter, "no op in %zu bytes", dlen));
        if (!e || om_proto_check(e) != OM_E_InvalidParameter) fz_fail("error reply unreadable");
        json_decref(e);
    }
    (void)data;
}

/* Sends req (and data) on a fresh socketpair and reads it back: it must be the same. */
static void round_trip(json_t *req, const uint8_t *data, size_t dlen)
{
    if (dlen > FZ_MAX_WRITE) return;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fz_fail("socketpair");
    json_t *copy = json_deep_copy(req);
    json_object_del(copy, "data");
    int rc = om_proto_send(sv[0], copy, data, dlen);
    shutdown(sv[0], SHUT_WR);
    json_t *back = NULL;
    uint8_t *bd = NULL;
    size_t bn = 0;
    if (!rc) {
        om_proto_bind_limits(NULL);
        if (om_proto_recv(sv[1], &back, &bd, &bn)) fz_fail("a sent message does not read back");
        if (bn != dlen || (dlen && memcmp(bd, data, dlen))) fz_fail("data changed on the way");
        if (!json_equal(back, copy)) fz_fail("the object changed on the way");
    }
    json_decref(copy);
    json_decref(back);
    free(bd);
    close(sv[0]);
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t mode = data[0];
    fz_out o = {.b = malloc(FZ_MAX_WRITE)};
    if (!o.b) fz_fail("out of memory");
    if (mode & 1)
        put(&o, data + 1, size - 1);
    else
        build_frames(data + 1, size - 1, &o);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fz_fail("socketpair");
    if (o.n && write(sv[0], o.b, o.n) != (ssize_t)o.n) fz_fail("short write on a socketpair");
    shutdown(sv[0], SHUT_WR);
    free(o.b);

    /* A daemon's connection: a small budget and data cap, so that refusals are reached. */
    om_proto_budget budget = OM_PROTO_BUDGET_INIT(48u << 10);
    om_proto_limits lim = {
        .idle_ms = 1000, .frame_ms = 1000, .max_data = 16u << 10, .budget = &budget};
    int daemon = !(mode & 2);
    for (int msgs = 0; msgs < 64; msgs++) {
        om_proto_bind_limits(daemon ? &lim : NULL);
        json_t *req = NULL;
        uint8_t *d = NULL;
        size_t dn = 0;
        int rc = om_proto_recv(sv[1], &req, &d, &dn);
        if (daemon && budget.used > budget.limit) fz_fail("the budget was overdrawn");
        if (rc) {
            if (rc >= 0) fz_fail("om_proto_recv failed with a non-negative code");
            if (req || d) fz_fail("a failed receive left a message");
            break;
        }
        json_t *dv = json_object_get(req, "data");
        if (dv && (!json_is_integer(dv) || (size_t)json_integer_value(dv) != dn))
            fz_fail("the data frame's length differs from the announcement");
        if (!dv && d) fz_fail("data without an announcement");
        handle(req, d, dn);
        round_trip(req, d, dn);
        json_decref(req);
        free(d);
    }
    om_proto_bind_limits(NULL);
    if (budget.used != 0) fz_fail("the connection's budget was not given back");
    close(sv[0]);
    close(sv[1]);
    return 0;
}
