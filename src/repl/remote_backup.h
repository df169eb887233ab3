/* A backup run on another server of the DAG (spec §8: backups are taken from passive copies, and
 * the copy the backup application picks may be on any server). `ombra backup` picks the copy;
 * when it is another server's, it asks that server's ombra-repld over the replication port
 * (mutual TLS: only a member of the DAG asks) to run the backup job there (backup/job.h), in
 * its own process, against the copy it holds, into the same repository path:
 *
 *   {"op":"backup.run","dbs":[N...],"type":T,"repo":P,"provider":V,"threads":K,
 *    "passphrase":S|null,"each_alone":B}
 *     dbs: 1 to BK_MAX_DBS names (backup/job.h), backed up in one shadow copy there; each_alone
 *     (ombra backup --all): a database that cannot be backed up fails alone (job.h)
 *     -> {"ok":true,"op":"backup.running","seconds":X} every few seconds while it runs, then
 *        {"ok":true,"op":"backup.done","result":R,"error":E,"message":M}: R is the job's
 *        result (job.h), E its return code (0: every database backed up and recorded), M the
 *        detail of a failure.
 *
 * The repository path must be absolute and reach the same repository from that server (shared
 * storage); the passphrase of an encrypted repository travels inside the TLS connection only.
 * The job runs as ombra-repld's user, against that server's ombra-store and ombra-vssd; a
 * connection lost meanwhile does not stop it (its sets and truncation are what the job does
 * anyway: the repository and the writers are consistent either way). */
#ifndef OM_REPL_REMOTE_BACKUP_H
#define OM_REPL_REMOTE_BACKUP_H

#include <jansson.h>

#include "repl/dag.h"
#include "repl/tls.h"

/* The peer side: runs the request's backup (a validated "backup.run") on this server (named
 * server in dag), of databases of the DAG it holds a copy of only. */
int rp_remote_backup_serve(rp_dag *dag, const char *server, rp_conn *c, json_t *req);

/* The asking side: sends req ("backup.run", stolen) to DAG member server, waits for the end
 * (no limit while it says it runs; 60 s of silence is a lost connection), and returns the job's
 * result in *result (NULL when none came) and its return code, with its detail. */
int rp_remote_backup(rp_dag *dag, rp_tls *tls, const char *server, json_t *req, json_t **result);

#endif
