/* The requester SDK: how a backup or restore program drives a shadow copy session of
 * ombra-vssd (docs/vss-protocol.md, "Requester sessions"; spec §4 and §6).
 *
 * One vss_req is one connection and one session. A backup calls, in this order:
 *
 *   vss_req_begin(NULL, VSS_SESSION_BACKUP, &r)
 *   vss_req_gather_metadata        -> the writers and their metadata documents
 *   vss_req_set_backup_state       "full", "copy", "incremental", "differential"
 *   vss_req_add_component ...      by instance id and full component name
 *   vss_req_prepare_backup         writers may refuse (BackupInProgress, a writer's failure)
 *   vss_req_start_snapshot_set     -> the set id
 *   vss_req_add_path ...           the `paths` of the selected components
 *   vss_req_do_snapshot_set        -> {"set", "shadows", "freeze_ms", "snapshot_ms", ...}
 *   (copy and verify the files of the exposed shadow copies)
 *   vss_req_set_backup_succeeded ...
 *   vss_req_backup_complete        -> the backup components document to store
 *   (publish the stored backups)   vss_req_set_backup_stored ... for each
 *   vss_req_release                BackupShutdown; non-persistent shadows are deleted
 *
 * and a restore: vss_req_begin(.., VSS_SESSION_RESTORE, ..), vss_req_gather_metadata,
 * vss_req_load_documents, vss_req_add_restore_component ..., vss_req_set_additional_restores,
 * vss_req_pre_restore, (copy the files), vss_req_post_restore, vss_req_release.
 * vss_req_abort may come at any time before backup_complete; vss_req_gather_status any time.
 *
 * Errors. Every call returns 0 or the error the coordinator replied with (errors.def), and
 * sets the thread's detail (om_err_detail) to the coordinator's message, e.g.
 *   "writer 'Ombra Store Writer' refused PrepareBackup: ..." with -505 BackupInProgress.
 * After a failed prepare_backup, do_snapshot_set or backup_complete the coordinator has
 * aborted the session: only gather_status and release are accepted (BadState otherwise). The
 * exception: a writer's failure of BackupComplete, which backup_complete returns as its error,
 * is no abort (the coordinator reported it); release still sends BackupShutdown.
 * When the connection is lost, the call and every later one return Aborted with "the shadow
 * copy service closed the session (is ombra-vssd running?)". When nothing listens at begin:
 * FileNotFound with a HINT to start ombra-vssd.
 *
 * The calls block until the coordinator replies (do_snapshot_set waits for every writer's
 * Freeze, Thaw and PostSnapshot; the coordinator bounds each). A vss_req is used by one
 * thread at a time. JSON results are new references the caller decrefs. */
#ifndef OM_VSS_REQUESTER_H
#define OM_VSS_REQUESTER_H

#include <jansson.h>
#include <stddef.h>

typedef enum vss_session_kind { VSS_SESSION_BACKUP, VSS_SESSION_RESTORE } vss_session_kind;

typedef struct vss_req vss_req;

/* Connects to socket_path (NULL: <runtime>/vss.sock) and begins a session. */
int vss_req_begin(const char *socket_path, vss_session_kind kind, vss_req **out);
/* The session's uuid. */
const char *vss_req_session(const vss_req *r);
/* 1 while the connection is up. */
int vss_req_connected(const vss_req *r);

/* -> {"writers":[...]}'s array: {"class_id","instance_id","name","state","metadata"} each
 * (a writer that failed Identify has "error" and no metadata). */
int vss_req_gather_metadata(vss_req *r, json_t **writers);
int vss_req_set_backup_state(vss_req *r, const char *type);
int vss_req_add_component(vss_req *r, const char *instance_id, const char *component);
int vss_req_prepare_backup(vss_req *r);
int vss_req_start_snapshot_set(vss_req *r, int persistent, char set_id[37]);
/* provider NULL: "auto". The provider chosen goes into chosen (n bytes; chosen may be NULL). */
int vss_req_add_path(vss_req *r, const char *path, const char *provider, char *chosen, size_t n);
/* -> the whole reply without "ok": {"set","shadows","freeze_ms","snapshot_ms",
 * "components_document"}. */
int vss_req_do_snapshot_set(vss_req *r, json_t **result);
/* -> the "writers" array: {"instance_id","name","state","failure","last_error"} each. */
int vss_req_gather_status(vss_req *r, json_t **writers);
int vss_req_set_backup_succeeded(vss_req *r, const char *instance_id, const char *component,
                                 int succeeded);
/* -> the backup components document (components_doc may be NULL). A writer that failed
 * BackupComplete (it recorded nothing, e.g. it restarted during the backup and lost its hold)
 * is this call's error, with the writer's message. */
int vss_req_backup_complete(vss_req *r, json_t **components_doc);
/* After a successful backup_complete: the backup of this component is stored for good (its set
 * published). Sent with release; the writer truncates logs at BackupShutdown only for the
 * components named so, so a requester that dies before it stored a backup leaves every log in
 * place (docs/design.md, "Sets that count only when the backup succeeded"). */
int vss_req_set_backup_stored(vss_req *r, const char *instance_id, const char *component);
int vss_req_abort(vss_req *r);
/* Sends release when connected (BackupShutdown unless aborted), closes and frees r, whatever
 * happens; returns the reply's error, 0 for NULL. */
int vss_req_release(vss_req *r);

/* Restore. metadata: the array of writer metadata documents saved with the backup. */
int vss_req_load_documents(vss_req *r, json_t *metadata, json_t *components_doc);
/* restore_options: an object (NULL: {}); new_target: NULL to restore in place. */
int vss_req_add_restore_component(vss_req *r, const char *instance_id, const char *component,
                                  json_t *restore_options, json_t *new_target);
int vss_req_set_additional_restores(vss_req *r, int value);
/* targets (may be NULL): a new reference to what the writers said of each component, by full
 * name (PreRestore: where the .edb and the logs go; PostRestore: what was replayed). */
int vss_req_pre_restore(vss_req *r, json_t **targets);
int vss_req_post_restore(vss_req *r, json_t **targets);

#endif
