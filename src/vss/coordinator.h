/* ombra-vssd: the shadow copy coordinator (docs/vss-protocol.md is the protocol).
 *
 * Writers register on vss.sock and get events; requesters open sessions and drive the backup
 * and restore sequences of spec §4 and §6; providers (vss/provider/provider.h) make the shadow
 * copies. The coordinator owns the order, the time limits, the vetoes and the aborts.
 *
 * A backup session's states and the request that moves it on (anything else: BadState):
 *
 *   BEGUN --gather_metadata--> GATHERED --(set_backup_state, add_component)--> GATHERED
 *   GATHERED --prepare_backup--> PREPARED --start_snapshot_set--> SET_STARTED
 *   SET_STARTED --add_path--> SET_STARTED --do_snapshot_set--> SNAPSHOT_DONE
 *   SNAPSHOT_DONE --set_backup_succeeded--> SNAPSHOT_DONE --backup_complete--> COMPLETE
 *   any state before COMPLETE --abort, a failure, a disconnect--> ABORTED
 *   any --release or disconnect--> (gone: BackupShutdown, shadows deleted unless persistent)
 *
 * Rules kept here:
 * - A backup selects whole components (spec §5): a component its writer marks not selectable,
 *   part of a selectable one (a database's Logs), selected without that one is refused by
 *   prepare_backup (InvalidParameter; the session stays as it was). A component named twice, or
 *   with one that contains it (in either order), is selected once: the events name it once.
 * - A component belongs to at most one session from add_component until backup_complete,
 *   abort or release; another session asking for it gets BackupInProgress naming the owner.
 * - A writer handles one session at a time from PrepareBackup to PostSnapshot; another session
 *   waits for it (up to the event limit). After PostSnapshot sessions run in parallel.
 * - Freeze to Thaw is limited (freeze limit); the provider's commit is limited (commit limit)
 *   and must end before the freeze limit; a writer answers each event within the event limit.
 * - On any failure every involved writer gets Abort (Abort may come twice), the session's
 *   shadow copies are deleted, and the session accepts only gather_status and release.
 * - A writer that disconnects fails every session it is in; its held shadow copies become
 *   invalid. A requester that disconnects is aborted.
 * - The shadow copy catalog is saved (durable replace) in <data>/vss/shadows.json; at start,
 *   shadow copies a dead coordinator left behind are deleted unless persistent. */
#ifndef OM_VSS_COORDINATOR_H
#define OM_VSS_COORDINATOR_H

#include <stdint.h>

#include "base/server.h"

typedef struct vss_coord_opts {
    const char *runtime_dir;        /* vss.sock */
    const char *data_dir;           /* vss/shadows.json, shadows/ (the default shadow root) */
    const char *shadow_dir;         /* NULL: <data_dir>/shadows */
    const char *group;              /* the group allowed on the socket (NULL: the daemon's own) */
    uint32_t freeze_limit_ms;       /* 0: 60000 */
    uint32_t commit_limit_ms;       /* 0: 10000 */
    uint32_t event_limit_ms;        /* 0: 60000 */
    uint32_t restore_limit_ms;      /* PostRestore (replay runs in it; it grows with the logs):
                                       0: 86400000, a day */
    const char *fail_provider_step; /* tests: "prepare", "commit" or "expose" fails */
    om_server_limits limits;        /* connections (base/server.h; zeros: the defaults) */
} vss_coord_opts;

/* Runs until SIGTERM/SIGINT (sessions in progress are aborted). 0 after a clean stop. */
int vss_coord_run(const vss_coord_opts *o);

#endif
