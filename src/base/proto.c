/* Frames over Unix sockets: length-prefixed JSON, optional raw data frame (proto.h). */
#include "base/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/bytes.h"
#include "base/error.h"

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return om_errf(OM_E_DiskIO, "sending on the control socket: %s", strerror(errno));
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes; *eof is set when the peer closed before the first byte. */
static int read_all(int fd, void *p, size_t n, int *eof)
{
    uint8_t *b = p;
    size_t got = 0;
    if (eof) *eof = 0;
    while (got < n) {
        ssize_t r = recv(fd, b + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return om_errf(OM_E_DiskIO, "reading the control socket: %s", strerror(errno));
        }
        if (r == 0) {
            if (got == 0 && eof) *eof = 1;
            return om_errf(OM_E_DiskIO, "connection closed%s",
                           got ? " in the middle of a message" : "");
        }
        got += (size_t)r;
    }
    return 0;
}

static int send_frame(int fd, const void *p, size_t n)
{
    uint8_t len[4];
    om_put32(len, (uint32_t)n);
    int rc = write_all(fd, len, 4);
    return rc ? rc : write_all(fd, p, n);
}

int om_proto_send(int fd, json_t *obj, const void *data, size_t data_len)
{
    if (data_len) json_object_set_new(obj, "data", json_integer((json_int_t)data_len));
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s) return om_errf(OM_E_OutOfMemory, "encoding a message: out of memory");
    int rc = send_frame(fd, s, strlen(s));
    free(s);
    if (!rc && data_len) rc = send_frame(fd, data, data_len);
    return rc;
}

static int recv_frame(int fd, uint8_t **out, size_t *n, size_t max, int *eof)
{
    uint8_t len[4];
    int rc = read_all(fd, len, 4, eof);
    if (rc) return rc;
    uint32_t l = om_get32(len);
    if (l > max)
        return om_errf(OM_E_InvalidParameter,
                       "a message of %u bytes is larger than the %zu allowed", l, max);
    uint8_t *b = malloc((size_t)l + 1);
    if (!b) return om_errf(OM_E_OutOfMemory, "receiving %u bytes: out of memory", l);
    if ((rc = read_all(fd, b, l, NULL))) {
        free(b);
        return rc;
    }
    b[l] = 0;
    *out = b;
    *n = l;
    return 0;
}

int om_proto_recv(int fd, json_t **obj, uint8_t **data, size_t *data_len)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    int eof = 0;
    *obj = NULL;
    if (data) *data = NULL;
    if (data_len) *data_len = 0;
    int rc = recv_frame(fd, &buf, &n, OM_PROTO_MAX_JSON, &eof);
    if (rc) return rc;
    json_error_t jerr;
    json_t *o = json_loadb((const char *)buf, n, 0, &jerr);
    free(buf);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return om_errf(OM_E_InvalidParameter, "malformed message: %s",
                       o ? "not a JSON object" : jerr.text);
    }
    json_t *d = json_object_get(o, "data");
    if (d) {
        if (!json_is_integer(d) || json_integer_value(d) < 0 ||
            json_integer_value(d) > OM_PROTO_MAX_DATA) {
            json_decref(o);
            return om_errf(OM_E_InvalidParameter, "malformed message: bad \"data\" length");
        }
        uint8_t *db = NULL;
        size_t dn = 0;
        if ((rc = recv_frame(fd, &db, &dn, OM_PROTO_MAX_DATA, NULL))) {
            json_decref(o);
            return rc;
        }
        if (dn != (size_t)json_integer_value(d)) {
            free(db);
            json_decref(o);
            return om_errf(OM_E_InvalidParameter,
                           "malformed message: data frame of %zu bytes, %lld announced", dn,
                           (long long)json_integer_value(d));
        }
        if (data) {
            *data = db;
            *data_len = dn;
        } else
            free(db);
    }
    *obj = o;
    return 0;
}

json_t *om_proto_ok(void)
{
    return json_pack("{s:b}", "ok", 1);
}

json_t *om_proto_error(int err)
{
    const char *d = om_err_detail();
    return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "error", err, "name", om_err_name(err),
                     "message", d && *d ? d : om_err_msg(err));
}

int om_proto_check(json_t *reply)
{
    json_t *ok = json_object_get(reply, "ok");
    if (json_is_true(ok)) return 0;
    int err = (int)om_json_int_or(reply, "error", OM_E_Internal);
    if (err >= 0) err = OM_E_Internal;
    om_errf(err, "%s", om_json_str_or(reply, "message", "the server refused the request"));
    return err;
}

int om_proto_connect(const char *path, int *fd)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return om_errf(OM_E_InvalidPath, "socket path too long: %s", path);
    strcpy(a.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return om_errf(OM_E_DiskIO, "socket: %s", strerror(errno));
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(s);
        if (e == ENOENT || e == ECONNREFUSED)
            return om_errf(
                OM_E_FileNotFound,
                "nothing listens on %s. HINT: start the daemon, or set OMBRA_RUNTIME_DIR", path);
        if (e == EACCES || e == EPERM)
            return om_errf(
                OM_E_FileAccessDenied,
                "%s: permission denied. HINT: run as root or as a member of the daemon's group",
                path);
        return om_errf(OM_E_DiskIO, "connecting to %s: %s", path, strerror(e));
    }
    *fd = s;
    return 0;
}

int om_proto_call(const char *path, json_t *req, const void *data, size_t data_len, json_t **reply,
                  uint8_t **rdata, size_t *rdata_len)
{
    int fd = -1;
    int rc = om_proto_connect(path, &fd);
    if (rc) return rc;
    rc = om_proto_send(fd, req, data, data_len);
    /* A server that refuses us answers and closes before reading: its reply explains better
     * than our broken pipe. */
    char senderr[512];
    snprintf(senderr, sizeof senderr, "%s", rc ? om_err_detail() : "");
    int rrc = om_proto_recv(fd, reply, rdata, rdata_len);
    /* Progress objects (no "ok") come before a long operation's reply: skip them. */
    while (!rrc && !json_object_get(*reply, "ok") && json_object_get(*reply, "progress")) {
        json_decref(*reply);
        *reply = NULL;
        rrc = om_proto_recv(fd, reply, rdata, rdata_len);
    }
    if (rc && rrc)
        om_errf(rc, "%s", senderr);
    else
        rc = rrc;
    close(fd);
    if (!rc) rc = om_proto_check(*reply);
    return rc;
}

int om_json_str(json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return om_errf(OM_E_InvalidParameter, "field \"%s\" must be a string", key);
    *out = json_string_value(v);
    return 0;
}

int om_json_int(json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return om_errf(OM_E_InvalidParameter, "field \"%s\" must be an integer", key);
    *out = json_integer_value(v);
    return 0;
}

const char *om_json_str_or(json_t *obj, const char *key, const char *dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

int64_t om_json_int_or(json_t *obj, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}
