/* Restore chains: which backup sets of one database a restore needs (spec §5: a full backup and
 * every incremental after it, or a full and the newest differential).
 *
 * sets: the repository's set summaries (bk_sets), each with "id", "type", "database": {"id"},
 * "log_range": [first, last] and "parent" (the set an incremental or differential follows).
 * The point to restore to:
 * - set_id: that set (a unique prefix); a full or copy alone, an incremental with every set back
 *   to its full (through the parents), a differential with its full;
 * - until_gen: the newest full whose logs end at or before the generation, then the sets after
 *   it until one reaches the generation (incrementals; or the differential that reaches it
 *   with the fewest logs);
 * - until_time_ns: the same by the sets' "mark_time_ns" (the freeze each set stands for): the
 *   newest full frozen at or before the time, then the sets after it until one was frozen at or
 *   after it;
 * - neither: the newest full, then the incrementals after it, or its newest differential when
 *   that reaches further.
 * The chain must be continuous: each set's first generation follows the previous set's last
 * one; a gap is MissingLogFile naming the generations no set holds. No set of the database:
 * SetNotFound. *chain: a new array of the chosen summaries, oldest first. */
#ifndef OM_BACKUP_CHAIN_H
#define OM_BACKUP_CHAIN_H

#include <jansson.h>
#include <stdint.h>

typedef struct bk_point {
    const char *set_id;     /* NULL: no set named */
    uint32_t until_gen;     /* 0: none */
    uint64_t until_time_ns; /* 0: none */
} bk_point;

int bk_chain(json_t *sets, const char *db_id, const bk_point *p, json_t **chain);

/* Which database's backups a restore of `name` means (id: 37 bytes). store_id: the id of the
 * store's database of that name, "" when the store has none (a new server, a database deleted):
 * then `name` is a database id of the sets, or the name of the newest set's database. A store
 * database with no set of its own while sets of an earlier database of that name exist (it was
 * created again): those, when the restore goes elsewhere (another database, the recovery
 * database, new paths); over the database itself BadDbSignature, with the hint to restore them
 * into it as another database. Nothing at all: SetNotFound. */
int bk_source_db(json_t *sets, const char *name, const char *store_id, int elsewhere, char id[37]);

#endif
