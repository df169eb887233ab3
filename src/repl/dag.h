/* The DAG's records in etcd (ARCHITECTURE.md, "Several servers"): what the command line and
 * ombra-repld read and write, under /ombra/dag/<name>/:
 *
 *   config                  {"name", "created", "ca_fingerprint"}          (dag init)
 *   servers/<server>        {"name", "address", "fingerprint", "added"}    (dag add-server)
 *   alive/<server>          {"pid", "since"}, bound to the server's lease  (ombra-repld)
 *   databases/<db id>       {"name", "id", "base", "active_server", "copies": {<server>:
 *                            {"preference", "replay_lag", "suspended", "seeding_postponed",
 *                             "reseed", "source"}}}                        (db copy ...)
 *   active/<db id>          {"server", "epoch", "since_gen", "since_ns", "why"} (first copy add;
 *                           then only the primary active manager, am.h)
 *   activelease/<db id>     {"server", "epoch"}: bound to the active server's lease while its
 *                           store takes commits of the database (am.h)
 *   moves/<db id>           {"to", "request", "requested_ns"}: ombra db move asks (am.h)
 *   lastmove/<db id>        the last switchover or failover and how it went (am.h)
 *   pam                     {"server", "since_ns"}: the primary active manager, bound to its lease
 *   copies/<db id>/<server> {"state", "generated", "copied", "inspected", "replayed",
 *                            "copy_queue", "replay_queue", "edb", "logs", "last_error",
 *                            "updated"}                                      (ombra-repld)
 *
 * Values are JSON objects. A record is changed by a read-modify-write in one etcd transaction
 * that compares the record's mod revision (rp_dag_update), so two servers changing one record
 * at once never lose a change: the later one reads again and retries.
 *
 * Copy states (spec §8): Mounted (the active's own copy), Healthy, Initializing, Seeding,
 * Suspended, Failed, Disconnected. */
#ifndef OM_REPL_DAG_H
#define OM_REPL_DAG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "etcd/etcd.h"
#include "repl/ca.h"

typedef struct rp_dag {
    etcd *e;
    char name[RP_NAME_MAX + 1];
    char prefix[128]; /* "/ombra/dag/<name>/" */
} rp_dag;

/* Opens the DAG name in the etcd at endpoints (comma-separated URLs). name NULL: the only DAG
 * that etcd holds (InvalidParameter naming them when it holds several, DagNotFound when none).
 * must_exist: DagNotFound unless its config record is there. */
int rp_dag_open(const char *endpoints, const char *name, int must_exist, rp_dag **out);
void rp_dag_close(rp_dag *d);

/* The full key of a record: prefix + the formatted suffix. */
void rp_dag_key(const rp_dag *d, char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The record at suffix (-> NULL when absent) and its mod revision (0 when absent). */
int rp_dag_get(rp_dag *d, const char *suffix, json_t **val, int64_t *mod_rev);
/* Writes the record unconditionally (lease 0: none). */
int rp_dag_put(rp_dag *d, const char *suffix, json_t *val, int64_t lease);
/* Writes the record only when it does not exist: 1 when written, 0 when it was there. */
int rp_dag_create(rp_dag *d, const char *suffix, json_t *val, int *created);
int rp_dag_delete(rp_dag *d, const char *suffix, int prefix);
/* Every record under suffix: an object {key suffix after it: value}. */
int rp_dag_list(rp_dag *d, const char *suffix, json_t **obj);

/* Read-modify-write of one record in a transaction on its mod revision, retried when another
 * writer came between. change(arg, rec) edits rec in place (rec is {} for an absent record,
 * with *exists 0) and returns 0, or an error that ends the update with nothing written. */
typedef int (*rp_dag_change)(void *arg, json_t *rec, int exists);
int rp_dag_update(rp_dag *d, const char *suffix, rp_dag_change change, void *arg);

/* The database record whose name is name (-> NULL, DatabaseNotFound when none). */
int rp_dag_find_db(rp_dag *d, const char *name, json_t **rec, char id[37]);

/* ombra db copy status: one row per copy of database db_name (NULL: of every database), as the
 * DAG's records say now: {"database", "id", "server", "state" (Mounted for the active;
 * ServiceDown when the server's ombra-repld holds no lease), "active", "preference",
 * "replay_lag", "copy_queue", "replay_queue", "generated", "copied", "inspected", "replayed",
 * "last_error", "epoch" (active/<id>'s), for the active copy "last_move" (lastmove/<id> or
 * null), and for a passive copy "mode", "streamed_gen", "streamed_bytes",
 * "streamed_len"}. DatabaseNotFound for a name the DAG does not have. */
int rp_dag_copy_rows(rp_dag *d, const char *db_name, json_t **rows);

#endif
