/* The backup hooks the writer calls (engine.h): freeze and thaw, holding page writes, log
 * truncation, backup slots, rolling the log. Each takes the writer role for its work. */
#include <string.h>

#include "base/error.h"
#include "base/time.h"
#include "engine/db_internal.h"

/* The backup record, durable, and the roll; the writer role is taken for them (callers hold it
 * released or frozen as they need). */
static int mark_and_roll(eng_db *db, uint32_t kind, eng_lgpos *mark, uint32_t *last_gen)
{
    int rc = db->fatal ? eng_fatal_refuse(db) : 0;
    uint8_t rec[64];
    if (!rc) {
        uint32_t n = eng_rec_encode_mark(rec, db->txn_last + 1, kind, om_now_ns());
        rc = eng_role_log_group(db, rec, n, mark);
    }
    if (!rc) {
        *last_gen = eng_log_gen(db->log);
        rc = eng_log_roll(db->log);
        if (rc) eng_fatal_set(db, rc);
    }
    /* The change map's new epoch starts here, under the writer role (no page reaches the .edb
     * while it is held): at or before the moment the full's .edb is taken (the hold of page
     * writes comes later, eng_backup_hold_writes), so a page written in between is only marked
     * once too often. */
    if (!rc && kind == ENG_BK_FULL) eng_cbt_epoch_start(db);
    return rc;
}

int eng_backup_freeze(eng_db *db, uint32_t kind, eng_lgpos *mark, uint32_t *last_gen)
{
    eng_role_acquire(db);
    int rc = mark_and_roll(db, kind, mark, last_gen);
    eng_role_release_frozen(db, !rc);
    return rc;
}

int eng_backup_mark(eng_db *db, uint32_t kind, eng_lgpos *mark, uint32_t *last_gen)
{
    eng_role_acquire(db);
    int rc = mark_and_roll(db, kind, mark, last_gen);
    eng_role_release(db);
    return rc;
}

int eng_backup_hold_writes(eng_db *db, uint32_t *current_gen, uint32_t *written)
{
    eng_role_acquire(db);
    int rc = db->fatal ? eng_fatal_refuse(db) : 0;
    *current_gen = eng_log_gen(db->log);
    *written = eng_log_written(db->log);
    eng_role_release_frozen(db, !rc);
    return rc;
}

int eng_backup_thaw(eng_db *db)
{
    return eng_role_thaw(db) ? 0 : om_errf(OM_E_InvalidBackupSequence, "%s is not frozen", db->edb);
}

int eng_hold_pages(eng_db *db)
{
    eng_role_acquire(db);
    db->hold++;
    eng_role_release(db);
    return 0;
}

int eng_release_pages(eng_db *db)
{
    eng_role_acquire(db);
    int rc = 0;
    if (db->hold == 0)
        rc = om_errf(OM_E_InvalidBackupSequence, "%s: page writes are not held", db->edb);
    else
        db->hold--;
    /* Spilled pages go back to the .edb now (the hold file is deleted), and a header write a
     * backup record deferred is made. */
    if (!rc && db->hold == 0 && (db->hf.f || db->hf.count || db->hdr_deferred))
        rc = eng_ckpt_locked(db);
    if (!rc) ENG_CHECK(db, ENG_AT_RELEASE);
    eng_role_release(db);
    return rc;
}

int eng_truncate_logs(eng_db *db, uint32_t below, uint32_t *deleted)
{
    eng_role_acquire(db);
    /* Never past the checkpoint of now; remembered, so that what a floor holds back goes once
     * the floor rises or lapses. */
    if (below > db->ckpt.gen) below = db->ckpt.gen;
    if (below > db->trunc_backup) db->trunc_backup = below;
    int rc = eng_trunc_apply(db, deleted);
    eng_role_release(db);
    return rc;
}

int eng_db_set_truncate_floor(eng_db *db, uint32_t gen, uint64_t until_ns, uint32_t *deleted)
{
    eng_role_acquire(db);
    db->trunc_floor = gen;
    db->trunc_floor_until = gen ? until_ns : 0;
    int rc = eng_trunc_apply(db, deleted);
    eng_role_release(db);
    return rc;
}

int eng_record_backup(eng_db *db, enum eng_bkslot_id slot, const eng_bkslot *s)
{
    if ((unsigned)slot >= ENG_BK_NSLOTS)
        return om_errf(OM_E_InvalidParameter, "backup slot %d does not exist", slot);
    eng_role_acquire(db);
    int rc = db->fatal ? eng_fatal_refuse(db) : 0;
    uint32_t clear = slot == ENG_BK_PREV_FULL
                         ? (1u << ENG_BK_PREV_INCREMENTAL | 1u << ENG_BK_PREV_DIFFERENTIAL)
                         : 0;
    uint8_t rec[128];
    if (!rc)
        rc = eng_role_log_group(db, rec,
                                eng_rec_encode_bkslot(rec, db->txn_last + 1, slot, clear, s), NULL);
    if (!rc) {
        db->hdr.slots[slot] = *s;
        for (int i = 0; i < ENG_BK_NSLOTS; i++)
            if (clear & (1u << i)) memset(&db->hdr.slots[i], 0, sizeof db->hdr.slots[i]);
        db->hdr.txn_last = db->txn_last;
        /* While held the .edb must not change: the record is durable in the log (replay
         * rebuilds the slot), and the release's checkpoint writes the header. */
        if (db->hold)
            db->hdr_deferred = 1;
        else if ((rc = eng_dbhdr_write(db->edbf, &db->hdr)))
            eng_fatal_set(db, rc);
    }
    eng_role_release(db);
    return rc;
}

int eng_db_roll_log(eng_db *db)
{
    eng_role_acquire(db);
    int rc = db->fatal ? eng_fatal_refuse(db) : eng_log_roll(db->log);
    if (rc && !db->fatal) eng_fatal_set(db, rc);
    eng_role_release(db);
    return rc;
}
