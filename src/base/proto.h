/* The control-socket protocol of ombra-vssd and ombra-store.
 *
 * A message is a frame: a 4-byte little-endian length, then that many bytes of one JSON object
 * (jansson). Bulk data never goes through JSON: a message whose object has "data": N is
 * followed by a second frame of N raw bytes (a message body, a file range). Frames are at most
 * OM_PROTO_MAX_JSON (JSON) or OM_PROTO_MAX_DATA (data) bytes; anything larger is a protocol
 * error and the connection is closed.
 *
 * Replies carry "ok": true and their fields, or "ok": false, "error": <number>, "name":
 * <ESE-style name>, "message": <the detail>, which om_proto_reply_error builds from the
 * thread's error. */
#ifndef OM_BASE_PROTO_H
#define OM_BASE_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define OM_PROTO_MAX_JSON (1u << 20)
#define OM_PROTO_MAX_DATA (256u << 20)

/* Sends obj (and data when data_len > 0, setting "data" in obj). */
int om_proto_send(int fd, json_t *obj, const void *data, size_t data_len);
/* Receives one message: *obj (caller decrefs), and when it announces data, *data (malloc'd,
 * caller frees) and *data_len. A peer that closed the connection gives DiskIO, "connection
 * closed". */
int om_proto_recv(int fd, json_t **obj, uint8_t **data, size_t *data_len);

/* {"ok": true} plus fields (steals nothing; obj may be NULL for a bare ok). */
json_t *om_proto_ok(void);
/* {"ok": false, "error": err, "name": ..., "message": detail}. */
json_t *om_proto_error(int err);
/* For a client: when reply says ok=false, sets the thread's error detail from it and returns
 * its error number; else 0. */
int om_proto_check(json_t *reply);

/* Connects to a Unix socket path (FileNotFound with a HINT when nothing listens). */
int om_proto_connect(const char *path, int *fd);
/* One request, one reply (progress objects sent before it are skipped). */
int om_proto_call(const char *path, json_t *req, const void *data, size_t data_len, json_t **reply,
                  uint8_t **rdata, size_t *rdata_len);

/* Small JSON accessors that set a clear error when a field is missing or has the wrong type. */
int om_json_str(json_t *obj, const char *key, const char **out);
int om_json_int(json_t *obj, const char *key, int64_t *out);
const char *om_json_str_or(json_t *obj, const char *key, const char *dflt);
int64_t om_json_int_or(json_t *obj, const char *key, int64_t dflt);

#endif
