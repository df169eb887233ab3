/* The replication protocol between two ombra-repld (over tls.h's connections: a JSON header,
 * then raw bulk bytes; bulk data never goes through JSON). The passive's copier asks, the
 * active's source answers, one request at a time on a connection:
 *
 *   {"op":"hello","server":S,"dag":D}           -> {"ok":true,"server":A}
 *   {"op":"log.wait","db":ID,"name":N,"after":G,"timeout_ms":T}
 *        -> {"ok":true,"closed":L,"current":C,"first":F}  as soon as a generation past G is
 *           closed (L > G), or when T passed (L == G or less); C is the generation the active
 *           is writing (0: dismounted), F the oldest one its folder still holds.
 *   {"op":"log.get","db":ID,"name":N,"gen":G}   -> {"ok":true,"gen":G,"size":S} + the file's bytes
 *   {"op":"seed","db":ID,"name":N}
 *        -> {"ok":true,"op":"seed.begin","size":S}, then {"op":"seed.data","offset":O} + up
 *           to RP_SEED_CHUNK bytes each, then {"op":"seed.end","size":S,"sha256":H}: the .edb
 *           as the shadow copy (held provider) holds it; the logs it needs come by log.get.
 *   {"op":"seed.copy","db":ID,"name":N}   -> the same from a passive copy of this server, with
 *           the generations it needs (reseed.h)
 *   {"op":"log.stream","db":ID,"name":N,"gen":G,"offset":O,"timeout_ms":T,
 *    "held_gen":HG,"held_len":HL}                                      (block mode)
 *        -> {"ok":true,"gen":G,"offset":O,"end":E,"len":L,"closed":B,"xxh3":X,
 *            "first":F,"current":C,"closed_gen":CL} + the bytes [O, E) of generation G's file
 *           The copier holds bytes [0, O) of generation G's file durably, and the record
 *           stream of generations before HG whole and HL bytes of HG's (its durable position,
 *           which the active's store counts for --sync-copies). While G is the generation
 *           the active writes, the answer comes as soon as its file holds good slots past O
 *           (E: the end of the last of them, L: the record stream bytes up to E), or after T
 *           with none (E == O). Once G is closed, B is true and the bytes are the rest of the
 *           closed file up to its full size, X its XXH3-64 as a hex string: the copier checks
 *           what it streamed against it before the generation goes where the engine reads it.
 *   {"op":"backup","db":ID,"name":N,"action":A, ...}      (the replica writer)
 *        a backup of the asking server's passive copy, recorded by the active's store
 *        (store/backup_record.h): A "prepare" {type} -> {"closed":G,"time_ns":T,
 *        "previous_full":S,"previous_incremental":S} (the active closes generation G now; S
 *        null or {first_gen,last_gen,mark_time_ns}); "record" {type,first_gen,last_gen,
 *        mark_gen,mark_off,mark_time_ns} -> {}; "truncate" {below} -> {"deleted":K,"oldest":O}.
 *        Only for a server the directory lists as holding a copy of the database.
 * Errors: {"ok":false,"error":N,"message":M} (errors.def numbers). A source serves a database
 * only while it is the active copy of it on this server (the directory's active/<id>) and only
 * under its id and name: a request for another is DatabaseNotFound. */
#ifndef OM_REPL_WIRE_H
#define OM_REPL_WIRE_H

#include <jansson.h>
#include <stdint.h>

#include "repl/dag.h"
#include "repl/tls.h"

#define RP_SEED_CHUNK (4u << 20)
#define RP_WAIT_MS    10000

/* The good slots of generation gen in buf, the bytes [off, off + n) of its log file (off and n
 * multiples of the slot size): where the first slot that is not a good one of gen (its header
 * for slot 0, else a segment) begins, as a file offset (off when none is good), and in *len the
 * record stream bytes up to there (unchanged when no segment is good). */
uint64_t rp_log_good_end(const void *buf, uint64_t off, uint64_t n, uint32_t gen, uint32_t *len);

/* Sends {"ok":false,"error":rc,"message":the thread's detail}. */
int rp_send_error(rp_conn *c, int rc);
/* Sends hdr (stolen) with bulk; NULL hdr: {"ok":true}. */
int rp_reply(rp_conn *c, json_t *hdr, const void *bulk, size_t n);
/* A connection to DAG member server, at the address its record (servers/<name>) gives, checked
 * to be that server by its certificate. */
int rp_connect_server(rp_dag *dag, rp_tls *tls, const char *server, int timeout_ms, rp_conn **out);
/* One request-reply exchange: sends req (stolen), returns the reply (its error as the return
 * code, its message as the detail, prefixed by what). */
int rp_call(rp_conn *c, json_t *req, int timeout_ms, json_t **reply, void **bulk, size_t *n);

#endif
