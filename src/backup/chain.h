/* Restore chains: which backup sets a restore uses (spec §6, "Which sets a restore uses").
 *
 * sets: the repository's set summaries (bk_sets), each with "id", "type", "database": {"id"},
 * "log_range": [first, last], "parent" (the set an incremental or differential continues) and
 * "mark_time_ns" (the freeze the set stands for); a set file that cannot be read is
 * {"id", "damaged": why}.
 *
 * Chains. A full backup is the base of a chain; each incremental continues its parent (the
 * previous full or incremental), a differential continues its full and nothing continues a
 * differential. A copy backup is a restore point of its own: a chain of one set, never a
 * parent. A set is restorable when its chain back to the base is whole: every parent is in the
 * repository, readable, of the same database and of a type it may continue, and each set's
 * first generation follows its parent's last one (generations no set holds are a gap). A set
 * that is not restorable says why, and the restore names it.
 *
 * Reach. A chain reaches the point of its last set: its last generation (a point by generation
 * and the default), or its freeze time "mark_time_ns" (a point in time); it starts at its base's.
 *
 * The point to restore to (bk_point):
 * - set_id: that set (a unique id prefix) and the chain back to its base, which must be whole
 *   (else the error names the set in it that breaks it);
 * - until_gen / until_time_ns: of the chains that start at or before the point, the one that
 *   reaches it with the fewest logs past it (a copy serves when its own point is the one that
 *   reaches it closest); when none reaches it, the one that reaches closest below it;
 * - neither: the chain that reaches furthest, the newest state any whole chain reaches.
 * Ties go to a full-based chain over a copy, then to the newest base, then to fewer sets.
 *
 * Never in silence: without set_id, a damaged set file (its database and generations cannot be
 * known) and a set of the database that cannot be restored yet reaches further than the chosen
 * chain (when that chain stops short of the point) refuse the restore: the error names the set
 * and why, and its HINT names the --set that restores the chosen, older point on purpose.
 *
 * Errors: SetNotFound (no set of the database; no chain starts before the point; a named set
 * that is not there or is another database's, or a parent that is), InvalidParameter (an
 * ambiguous prefix), MissingLogFile (a gap, or a parent not in the repository: the generations
 * no set holds when they can be named), MissingFullBackup (an incremental or differential that
 * names no parent), InvalidBackupSequence (a parent of a type the set cannot continue),
 * RepositoryCorrupt (a damaged set file, a parent loop, a set whose type or log range is not
 * one). *chain: a new array of the chosen summaries, oldest first; NULL on error. */
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

/* Every set's chain, for a listing. *annotated: a new array, one object per entry of sets in the
 * same order: a copy of the summary plus "restorable": true or false, "why" (when false: the
 * reason, naming the set that breaks its chain) and "chain": the ids from its base to it, oldest
 * first (for a set that is not restorable, as far back as its parents are known). 0, or
 * OutOfMemory. */
int bk_plan(json_t *sets, json_t **annotated);

/* Which database's backups a restore of `name` means (id: 37 bytes). store_id: the id of the
 * store's database of that name, "" when the store has none (a new server, a database deleted):
 * then `name` is a database id of the sets, or the name of the newest set's database. A store
 * database with no set of its own while sets of an earlier database of that name exist (it was
 * created again): those, when the restore goes elsewhere (another database, the recovery
 * database, new paths); over the database itself BadDbSignature, with the hint to restore them
 * into it as another database. Nothing at all: SetNotFound (naming the damaged set files, whose
 * database cannot be known, when there are). */
int bk_source_db(json_t *sets, const char *name, const char *store_id, int elsewhere, char id[37]);

/* The writer a saved component is restored through (spec §6: a database is not tied to a server;
 * docs/design.md "Restore in a DAG"). A set names the writer class and the component it was taken
 * with; the restore goes through this server's writer of that class, the component under that
 * writer's own logical path. Two writers take whole databases with one shape of component,
 * "<root>\<server>\<db id>" and its "...\<db id>\Logs":
 *   the store writer    "Ombra Store\<server>\<db id>" (an active copy, or one server alone);
 *   the replica writer  "Replica\<server>\<db id>" (a passive copy of a DAG), class
 *                       BK_REPLICA_WRITER_CLASS.
 * A set of either restores through the store writer (a passive copy is never a restore's target:
 * the store's databases are), so a chain may mix sets of both. A set of any other class restores
 * through the writer of its own class, under its own root. */
#define BK_STORE_WRITER_CLASS   "5d3c0a91-6b2e-4f17-8c4d-0e9a7b1f2c35" /* store/store_writer.c */
#define BK_STORE_WRITER_ROOT    "Ombra Store"
#define BK_REPLICA_WRITER_CLASS "8f1e6c27-3a9d-4b52-9e07-c4d1a2b35f68" /* repl/replica_writer.c */

typedef struct bk_restore_via {
    char cls[40];       /* the class of the writer the restore goes through */
    char saved_lp[600]; /* the saved component's logical path: "<root>\<its server>" */
    char lp[600];       /* the component's logical path through that writer: "<root>\<server>" */
    char comp[700];     /* ... and its full name: "<lp>\<db id>" */
    int replica;        /* the set was taken from a passive copy (the replica writer) */
} bk_restore_via;

/* saved_cls, scomp: the set's writer class and component (set_id names the set in messages);
 * server: this server. RepositoryCorrupt when scomp is not "<root>\<server>\<db_id>" or too
 * long. */
int bk_restore_via_writer(const char *set_id, const char *saved_cls, const char *scomp,
                          const char *db_id, const char *server, bk_restore_via *v);

#endif
