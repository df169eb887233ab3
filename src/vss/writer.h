/* The writer SDK: how a process that owns data (the store) takes part in shadow copies
 * (docs/vss-protocol.md, "Writers"; spec §4).
 *
 * A writer fills a vss_writer_ops with handlers and calls vss_writer_start. The SDK connects
 * to ombra-vssd, registers, and calls a handler for every event the coordinator sends:
 *
 *   Identify         describe yourself: put the metadata document (vss_wmd_*) in
 *                    e->result as "metadata". The only handler that must exist.
 *   PrepareBackup    args.type, args.components: refuse here when a backup cannot run
 *                    (another backup in progress, database dismounting).
 *   PrepareSnapshot  get ready to freeze (flush what can be flushed now).
 *   Freeze           stop every write to the files of args.components. args.hold: keep the
 *                    files marked `held` unchanged until BackupShutdown or Abort.
 *   Thaw             resume writing (the hold, if any, stays).
 *   PostSnapshot     args.shadows: the shadow copies exist; put per-component backup metadata
 *                    in e->result as "components": {"<name>": {...}}.
 *   BackupComplete   args.components [{name, succeeded}]: record the backup, truncate logs.
 *   Abort            undo everything the session put in effect: freeze, hold, "backup in
 *                    progress". Called at most once per session, and only for a session that
 *                    got PrepareBackup or Freeze; its failure is logged, never reported.
 *   BackupShutdown   the session is over: release the hold.
 *   PreRestore, PostRestore   args.components [{name, backup_metadata, restore_options,
 *                    new_target, additional_restores}].
 * A NULL handler succeeds. A handler returns 0, or fails with
 *     return vss_fail(e, VSS_FAIL_RETRYABLE, "database %s is dismounting", name);
 * A handler that returns an error without vss_fail is reported as non_retryable, its
 * om_err_detail() as the reason.
 *
 * Threads. vss_writer_start returns at once, whether or not ombra-vssd runs: a background
 * thread connects and registers, and after a refused or lost connection retries after 200 ms,
 * doubling up to 2 s (back to 200 ms once registered), so a writer outlives coordinator
 * restarts. Each event runs on its own thread, so events of different sessions run at the same
 * time (BackupComplete of one session while another freezes): handlers must be thread-safe.
 * Events of one session run one at a time, in the order they arrived (an Abort that arrives
 * while Freeze runs waits for Freeze to return). Answers are written under a mutex.
 *
 * Session states the SDK keeps (per session id, while a session is open):
 *
 *   (none) --PrepareBackup/Freeze--> open --Freeze ok--> frozen --Thaw--> open
 *                                                          |
 *                                   thaw_limit_ms passed --+--> auto-thawed: the SDK calls
 *                                   thaw (args.auto = true) and logs a warning; a later Thaw
 *                                   is answered `timeout` without calling the handler.
 *   open/frozen --BackupShutdown--> (none)     open/frozen --Abort--> abort handler, (none)
 *   open/frozen --connection lost or vss_writer_stop--> abort handler with
 *                 args.disconnected = true (the coordinator fails those sessions), (none)
 *   (none) --PreRestore--> open --PostRestore (once its handler returned)--> (none)
 *                          open --Abort (a restore that failed or was given up)--> abort
 *                          handler, (none)
 *
 * Events for the old connection still running when it drops finish, but their answers go
 * nowhere (ids are per connection).
 *
 * Every function returns 0 or an error of base/errors.def with om_err_detail() set. */
#ifndef OM_VSS_WRITER_H
#define OM_VSS_WRITER_H

#include <jansson.h>

/* The failure kinds of an answer, as VSS names them. */
typedef enum vss_failure {
    VSS_FAIL_NONE,
    VSS_FAIL_RETRYABLE,
    VSS_FAIL_NON_RETRYABLE,
    VSS_FAIL_TIMEOUT,
    VSS_FAIL_OUT_OF_RESOURCES,
    VSS_FAIL_INCONSISTENT_SNAPSHOT,
    VSS_FAIL_RECOVERY_FAILED,
} vss_failure;

/* "retryable", "non_retryable", ... as in the protocol; "none" for VSS_FAIL_NONE. */
const char *vss_failure_name(vss_failure f);
/* The inverse of vss_failure_name; InvalidParameter for an unknown name. */
int vss_failure_parse(const char *s, vss_failure *f);
/* WriterErrorRetryable (-9110) ... WriterErrorRecoveryFailed (-9115); 0 for NONE. */
int vss_failure_error(vss_failure f);

/* One event, as a handler sees it. */
typedef struct vss_event {
    const char *name;    /* "Freeze" */
    const char *session; /* the session's uuid */
    json_t *args;        /* the event's arguments (borrowed, never NULL) */
    json_t *result;      /* an empty object the handler may fill; sent as the answer's result */
    vss_failure failure; /* set by vss_fail */
    char reason[512];
} vss_event;

/* Marks e failed with kind and a reason (printf format); returns vss_failure_error(kind) so a
 * handler can return it directly. */
int vss_fail(vss_event *e, vss_failure kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* vss_fail with an error code's ESE number and name and the thread's detail as the reason
 * ("-1091 DatabaseUnavailable: ..."), as a requester prints it. */
int vss_fail_rc(vss_event *e, vss_failure kind, int rc);

/* What the event's arguments say of its components. The name of the i-th of "components" (a
 * string, or an object's "name"; NULL past the end). */
const char *vss_event_comp(const vss_event *e, size_t i);
/* The database id a component's full name names under a writer's logical path ("<logical>\<id>"
 * or its "<logical>\<id>\Logs", id 36 characters): 1 (*is_logs says which), or 0 for any other
 * name (another writer's or server's, another subcomponent, NULL). */
int vss_comp_split(const char *logical, const char *comp, char id[37], int *is_logs);
/* BackupComplete: 1 when the requester marked the component succeeded. */
int vss_event_succeeded(const vss_event *e, const char *comp);
/* BackupShutdown: 1 when "stored" names the component (the requester stored its backup). */
int vss_event_stored(const vss_event *e, const char *comp);

typedef int (*vss_handler)(void *ctx, vss_event *e);

typedef struct vss_writer_ops {
    vss_handler identify; /* required */
    vss_handler prepare_backup, prepare_snapshot, freeze, thaw, post_snapshot, backup_complete,
        abort, backup_shutdown, pre_restore, post_restore;
    /* Optional notifications, on the connection thread: after each successful registration,
     * and after a registered connection was lost (once its open sessions were aborted). */
    void (*registered)(void *ctx);
    void (*disconnected)(void *ctx, const char *why);
} vss_writer_ops;

typedef struct vss_writer_info {
    const char *class_id;    /* uuid: the kind of writer (every Ombra store has the same) */
    const char *instance_id; /* uuid: this writer; one connected writer per instance id */
    const char *name;        /* "Ombra Store Writer" */
    int can_hold;            /* it can keep its `held` files unchanged (the held provider) */
    const char *socket_path; /* NULL: <runtime>/vss.sock */
} vss_writer_info;

typedef struct vss_writer vss_writer;

/* Copies info, starts the connection thread and returns; InvalidParameter when a field is
 * missing or ops->identify is NULL. */
int vss_writer_start(const vss_writer_info *info, const vss_writer_ops *ops, void *ctx,
                     vss_writer **out);
/* 1 while registered with the coordinator. */
int vss_writer_connected(vss_writer *w);
/* Disconnects (calling abort for the open sessions), waits for the handlers in progress to
 * return, and frees w. NULL is fine. Must not be called from a handler. */
void vss_writer_stop(vss_writer *w);

/* The writer metadata document (docs/vss-protocol.md). backup_types: NULL-terminated, NULL for
 * all four; restore_method NULL: "restore_if_can_replace". Returns a new reference (NULL only
 * when out of memory). */
json_t *vss_wmd_new(const vss_writer_info *info, const char *const *backup_types,
                    const char *restore_method);
/* Adds a component; returns it (borrowed from md) for vss_wmd_add_file/_path. */
json_t *vss_wmd_add_component(json_t *md, const char *logical_path, const char *name,
                              const char *caption, int selectable);
/* A file (spec NULL), or the files of directory `path` matching the glob `spec`. */
int vss_wmd_add_file(json_t *comp, const char *path, const char *spec, int recursive, int held);
/* A directory the shadow copy set must cover. */
int vss_wmd_add_path(json_t *comp, const char *dir);
/* Files a shadow copy of the component need not hold (a page journal, prepared logs): the
 * held, copy and reflink providers leave them out. spec as in vss_wmd_add_file. */
int vss_wmd_add_exclude(json_t *comp, const char *path, const char *spec);

#endif
