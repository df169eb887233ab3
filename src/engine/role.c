/* The writer role, the sticky fatal state, and groups logged outside a transaction: what
 * every layer above the page journal takes or checks before it changes the database.
 *
 * The writer role serialises transactions, checkpoints and backup hooks (one holder at a time);
 * while the database is frozen (eng_backup_freeze until eng_backup_thaw) nobody gets it.
 * Lock order: writer role -> plock -> cmu (db_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "engine/db_internal.h"

void eng_role_acquire(eng_db *db)
{
    pthread_mutex_lock(&db->wmu);
    while (db->writer_active || db->frozen)
        pthread_cond_wait(&db->wcond, &db->wmu);
    db->writer_active = 1;
    pthread_mutex_unlock(&db->wmu);
}

void eng_role_release(eng_db *db)
{
    pthread_mutex_lock(&db->wmu);
    db->writer_active = 0;
    pthread_cond_broadcast(&db->wcond);
    pthread_mutex_unlock(&db->wmu);
}

int eng_role_try(eng_db *db)
{
    pthread_mutex_lock(&db->wmu);
    int got = !db->writer_active && !db->frozen;
    if (got) db->writer_active = 1;
    pthread_mutex_unlock(&db->wmu);
    return got;
}

void eng_role_release_frozen(eng_db *db, int frozen)
{
    pthread_mutex_lock(&db->wmu);
    db->writer_active = 0;
    if (frozen) db->frozen = 1;
    pthread_cond_broadcast(&db->wcond);
    pthread_mutex_unlock(&db->wmu);
}

int eng_role_thaw(eng_db *db)
{
    pthread_mutex_lock(&db->wmu);
    int was = db->frozen;
    db->frozen = 0;
    pthread_cond_broadcast(&db->wcond);
    pthread_mutex_unlock(&db->wmu);
    return was;
}

int eng_fatal_set(eng_db *db, int rc)
{
    if (!db->fatal) {
        om_error("%s: %s; the database refuses writes until it is dismounted and recovered",
                 db->edb, om_err_detail());
        db->fatal = OM_E_FatalIO;
    }
    return rc;
}

int eng_fatal_refuse(eng_db *db)
{
    return om_errf(OM_E_FatalIO,
                   "%s: an earlier write or fsync failed; the database refuses writes. HINT: "
                   "dismount and mount it again to recover from its logs",
                   db->edb);
}

/* Appends one group (records + COMMIT) outside a user transaction and makes it durable.
 * Caller holds the writer role. *pos is where the group starts. */
int eng_role_log_group(eng_db *db, uint8_t *recs, uint32_t len, eng_lgpos *pos)
{
    uint64_t start = eng_log_end_lsn(db->log), end;
    len += eng_rec_encode_commit(recs + len, db->txn_last + 1, om_now_ns(), db->dbtime);
    int rc = eng_log_append(db->log, recs, len, &end);
    if (!rc) rc = eng_log_flush_to(db->log, end);
    if (rc) return eng_fatal_set(db, rc);
    db->txn_last++;
    if (pos) *pos = eng_log_lgpos(db->log, start);
    return 0;
}
