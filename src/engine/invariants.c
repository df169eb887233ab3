/* The invariants of db_internal.h, checked at run time.
 *
 * Each layer checks its own state: the hold file its index (eng_hold_check), the cache its
 * frames and counters (eng_cache_check, eng_cache_check_page, eng_cache_check_durable); this
 * file adds what ties them to the writer role, the hold and the log, and is the one entry:
 * eng_db_check_point at the points db_internal.h names (debug builds: ENG_CHECK), and
 * eng_db_check_invariants for tests. A broken invariant at a check point is a bug in the
 * engine, not a condition to handle: it is logged and the process aborts, as assert() would. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/logging.h"
#include "engine/db_internal.h"

static const char *const AT_NAME[] = {
    [ENG_AT_COMMIT] = "after a commit",
    [ENG_AT_CHECKPOINT] = "after a checkpoint",
    [ENG_AT_FLUSH] = "before pages reach the .edb",
    [ENG_AT_RECOVERY] = "after recovery",
    [ENG_AT_RELEASE] = "after the release of held pages",
    [ENG_AT_MOUNT] = "after mount",
    [ENG_AT_CLOSE] = "before close",
    [ENG_AT_TEST] = "when asked",
};

/* Everything but the frame scan: the counters, the hold, the checkpoint. */
static int check_state(eng_db *db, enum eng_check_at at, char *why, size_t n)
{
    /* Recovery, mount and the flushes of recovery run before anyone else can have the
     * database; everything else holds the role. */
    int alone = at == ENG_AT_RECOVERY || at == ENG_AT_MOUNT || at == ENG_AT_FLUSH;
    if (!alone && !db->writer_active) return snprintf(why, n, "the writer role is not held"), 1;
    /* The counters are the cache's: readers add frames under cmu while the writer commits. */
    pthread_mutex_lock(&db->cmu);
    uint32_t ndirty = db->ndirty, nframes = db->nframes;
    pthread_mutex_unlock(&db->cmu);
    if (ndirty > nframes)
        return snprintf(why, n, "%u dirty frames counted among %u", ndirty, nframes), 1;
    /* Pages go to the hold file only while held, and the last release writes them back. */
    int between = at == ENG_AT_COMMIT || at == ENG_AT_FLUSH; /* a release may be under way */
    if (!db->hold && !db->fatal && !between && (db->hf.count || db->hf.f))
        return snprintf(why, n, "page writes are not held, yet the hold file has %u pages",
                        db->hf.count),
               1;
    if ((at == ENG_AT_CHECKPOINT || at == ENG_AT_RECOVERY) && !db->hold && ndirty)
        return snprintf(why, n, "%u dirty pages after the checkpoint", ndirty), 1;
    if (db->log && eng_lgpos_cmp(db->ckpt, eng_log_lgpos(db->log, eng_log_end_lsn(db->log))) > 0)
        return snprintf(why, n, "the checkpoint (%u, %u) is past the end of the log", db->ckpt.gen,
                        db->ckpt.off),
               1;
    return 0;
}

static int check(eng_db *db, enum eng_check_at at, char *why, size_t n)
{
    if (check_state(db, at, why, n)) return 1;
    if (at == ENG_AT_COMMIT) return 0; /* the pages it published: eng_db_check_page_point */
    if (at == ENG_AT_FLUSH)
        return db->log ? eng_cache_check_durable(db, eng_log_durable_lsn(db->log), why, n) : 0;
    return eng_cache_check(db, at == ENG_AT_RECOVERY || at == ENG_AT_TEST, why, n);
}

static void broken(eng_db *db, enum eng_check_at at, const char *why)
{
    om_error("%s: engine invariant broken %s: %s", db->edb, AT_NAME[at], why);
    abort();
}

void eng_db_check_point(eng_db *db, enum eng_check_at at)
{
    char why[300];
    if (check(db, at, why, sizeof why)) broken(db, at, why);
}

void eng_db_check_page_point(eng_db *db, uint32_t pgno)
{
    char why[300];
    if (eng_cache_check_page(db, pgno, why, sizeof why)) broken(db, ENG_AT_COMMIT, why);
}

int eng_db_check_invariants(eng_db *db)
{
    char why[300];
    eng_role_acquire(db);
    int bad = check(db, ENG_AT_TEST, why, sizeof why);
    eng_role_release(db);
    return bad ? om_errf(OM_E_Internal, "%s: engine invariant broken: %s", db->edb, why) : 0;
}
