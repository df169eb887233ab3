/* Soft recovery: replay the log from the checkpoint into the page cache, then flush and mark
 * the database Clean Shutdown.
 *
 * Replay applies a transaction's records only when it reaches the transaction's COMMIT; a
 * group cut off by a crash (its COMMIT never written, or a newer transaction id starting) is
 * dropped. A page record applies when the page's dbtime equals the record's dbtime-before; a
 * page already at or past dbtime-after is skipped, so replaying the same log twice changes
 * nothing. A page older than dbtime-before means the storage lost a write it had acknowledged
 * (ReadLostFlushVerifyFailure). A page image (a new page, or one mostly rewritten) replaces the
 * page whatever it holds. Pages torn by a crash during a checkpoint are restored from the page
 * journal before replay starts (journal.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "engine/db_internal.h"

/* Reads generation g of the stream and checks that it continues the chain w expects. */
static int read_gen_checked(eng_db *db, const eng_stream *sf, uint32_t g, eng_chain_want *w,
                            eng_genread *gr, char *p, size_t pn)
{
    eng_stream_path(sf, g, p, pn);
    w->gen = g;
    w->named = g != sf->cur_gen;
    return eng_gen_continues(db->vfs, p, w, gr, NULL);
}

int eng_recovery_log_end(eng_db *db, eng_log_end *end)
{
    memset(end, 0, sizeof *end);
    eng_stream sf;
    int rc = eng_stream_list(db->vfs, db->logdir, db->base, &sf);
    if (rc) return rc;
    uint32_t last = eng_stream_last(&sf);
    if (last) {
        eng_genread g;
        eng_chain_want w;
        char p[4200];
        eng_chain_of_db(&w, &db->hdr, db->edb, last);
        rc = read_gen_checked(db, &sf, last, &w, &g, p, sizeof p);
        if (!rc) {
            end->gen = last;
            end->created = g.hdr.created;
            end->len = g.len;
            end->cur_exists = last == sf.cur_gen;
        }
        eng_gen_free(&g);
    }
    eng_stream_free(&sf);
    return rc;
}

/* ---- replay ---- */

static int lost_flush(eng_db *db, uint32_t pgno, uint64_t have, uint64_t want)
{
    return om_errf(OM_E_ReadLostFlushVerifyFailure,
                   "%s: page %u is at dbtime %llu on disk but the log expects %llu: a write to the "
                   "database was lost by the storage",
                   db->edb, pgno, (unsigned long long)have, (unsigned long long)want);
}

static int apply_page(eng_db *db, const eng_rec *r)
{
    uint32_t pgno = r->u.page.pgno;
    frame *f = NULL;
    int rc = eng_cache_get(db, pgno, 0, &f);
    if (rc) return rc;
    eng_pghdr h;
    eng_pghdr_get(f->page, &h);
    int ok = f->status == ENG_PAGE_OK;
    /* Counted even when the page is already there: a checkpoint may have written the page and
     * not yet the header that counts it. */
    if (pgno > db->pages) db->pages = pgno;
    if (ok && h.dbtime >= r->u.page.after) return 0; /* already there */
    if (r->flags & ENG_RECF_IMAGE) {
        memset(f->page + ENG_PAGE_HDR, 0, ENG_PAGE_BODY);
    } else {
        if (f->status == ENG_PAGE_ZERO)
            return om_errf(OM_E_PageNotInitialized,
                           "%s: page %u is empty on disk but the log changes it", db->edb, pgno);
        if (!ok)
            return om_errf(OM_E_ReadVerifyFailure,
                           "%s: page %u fails its checksum and the log holds no image of it",
                           db->edb, pgno);
        if (h.dbtime < r->u.page.before) return lost_flush(db, pgno, h.dbtime, r->u.page.before);
        if (h.dbtime != r->u.page.before)
            return om_errf(OM_E_DatabaseCorrupted,
                           "%s: page %u is at dbtime %llu, between the log record's %llu and %llu",
                           db->edb, pgno, (unsigned long long)h.dbtime,
                           (unsigned long long)r->u.page.before,
                           (unsigned long long)r->u.page.after);
    }
    for (uint32_t i = 0; i < r->u.page.nranges; i++)
        memcpy(f->page + ENG_PAGE_HDR + r->u.page.ranges[i].off, r->u.page.ranges[i].data,
               r->u.page.ranges[i].len);
    eng_pghdr_set(f->page, pgno, r->u.page.objid, r->u.page.after, r->u.page.pflags);
    f->status = ENG_PAGE_OK;
    if (!f->dirty) db->ndirty++;
    f->dirty = 1;
    return 0;
}

static int apply_group(eng_replay *rp)
{
    eng_db *db = rp->db;
    uint32_t off = 0;
    int rc;
    while ((rc = eng_rec_decode(rp->group, rp->glen, &off, &rp->rec)) == 1) {
        const eng_rec *r = &rp->rec;
        db->st.replay_records++;
        if (r->type == ENG_REC_PAGE && r->u.page.after > db->dbtime) db->dbtime = r->u.page.after;
        switch (r->type) {
        case ENG_REC_PAGE:
            if ((rc = apply_page(db, r))) return rc;
            break;
        case ENG_REC_BACKUP_SLOT:
            db->hdr.slots[r->u.bkslot.slot] = r->u.bkslot.value;
            for (int i = 0; i < ENG_BK_NSLOTS; i++)
                if (r->u.bkslot.clear_mask & (1u << i))
                    memset(&db->hdr.slots[i], 0, sizeof db->hdr.slots[i]);
            break;
        case ENG_REC_COMMIT:
            if (r->u.commit.dbtime > db->dbtime) db->dbtime = r->u.commit.dbtime;
            break;
        default:
            break;
        }
    }
    if (rc < 0) return rc;
    db->st.replay_groups++;
    return 0;
}

static int group_add(eng_replay *rp, const uint8_t *p, uint32_t len)
{
    if (rp->glen + len > rp->gcap) {
        uint32_t nc = rp->gcap ? rp->gcap * 2 : 1 << 20;
        while (nc < rp->glen + len)
            nc *= 2;
        uint8_t *ng = realloc(rp->group, nc);
        if (!ng) return om_errf(OM_E_OutOfMemory, "replay: out of memory");
        rp->group = ng;
        rp->gcap = nc;
    }
    memcpy(rp->group + rp->glen, p, len);
    rp->glen += len;
    return 0;
}

/* Writes the replayed pages and records how far replay got, so a crash during a long
 * recovery resumes from here. Hard recovery leaves the checkpoint file alone: it may belong to
 * another stream until the end, and the header's Log Required is where it resumes. */
int eng_replay_checkpoint(eng_replay *rp, eng_lgpos at, uint32_t last_gen)
{
    eng_db *db = rp->db;
    int rc = eng_ckpt_flush_pages(db);
    if (rc) return rc;
    db->hdr.dbtime = db->dbtime;
    db->hdr.pages = db->pages;
    db->hdr.txn_last = db->txn_last;
    if (at.gen > db->hdr.log_req_min) db->hdr.log_req_min = at.gen;
    if (last_gen > db->hdr.log_req_max) db->hdr.log_req_max = last_gen;
    rc = eng_dbhdr_write(db->edbf, &db->hdr);
    return rc || rp->hard ? rc : eng_ckpt_write_chk(db, at);
}

int eng_replay_gen(eng_replay *rp, eng_genread *g, uint32_t from)
{
    eng_db *db = rp->db;
    uint32_t off = from;
    int rc;
    while (!rp->stopped) {
        uint32_t at = off;
        rc = eng_rec_decode(g->stream, g->len, &off, &rp->rec);
        if (rc <= 0) return rc;
        if (rp->rec.type == ENG_REC_COMMIT && rp->stop_time &&
            rp->rec.u.commit.time > rp->stop_time) {
            /* The first transaction that committed after the point: it and everything after
             * it stay out. */
            rp->stopped = 1;
            rp->glen = 0;
            return 0;
        }
        db->st.replay_bytes += rp->rec.len;
        if (rp->rec.txn > db->txn_last) db->txn_last = rp->rec.txn;
        if (rp->glen && rp->rec.txn != rp->gtxn) rp->glen = 0; /* an unfinished transaction */
        rp->gtxn = rp->rec.txn;
        if ((rc = group_add(rp, g->stream + at, rp->rec.len))) return rc;
        if (rp->rec.type != ENG_REC_COMMIT) continue;
        uint64_t commit_dbtime = rp->rec.u.commit.dbtime;
        if ((rc = apply_group(rp))) return rc;
        rp->glen = 0;
        rp->pos = (eng_lgpos){g->hdr.gen, off};
        rp->commit_dbtime = commit_dbtime;
        if ((uint64_t)db->ndirty * ENG_PAGE_SIZE >= db->cache_bytes) {
            if ((rc = eng_replay_checkpoint(rp, rp->pos, g->hdr.gen))) return rc;
            pthread_rwlock_wrlock(&db->plock);
            eng_cache_trim(db);
            pthread_rwlock_unlock(&db->plock);
        }
    }
    return 0;
}

void eng_replay_free(eng_replay *rp)
{
    free(rp->group);
    rp->group = NULL;
    rp->glen = rp->gcap = 0;
}

/* Where replay starts: the checkpoint file when it is good and ours, else the header. */
eng_lgpos eng_recovery_start(eng_db *db)
{
    /* Consistent at the end of its generation: what came after is in the next ones (db.c). */
    if (db->hdr.state == ENG_STATE_CLEAN) return (eng_lgpos){db->hdr.consistent.gen + 1, 0};
    eng_chkfile ck;
    int bad = 0;
    int rc = eng_chk_read(db->vfs, db->chk, &ck, &bad);
    eng_lgpos hdr_start = {db->hdr.log_req_min, 0};
    if (rc) {
        om_warn("%s: %s; replaying from the generation the header requires (%u)", db->chk,
                om_err_detail(), hdr_start.gen);
        return hdr_start;
    }
    if (!eng_sig_eq(&ck.log_sig, &db->hdr.log_sig)) {
        om_warn("%s belongs to another log stream; replaying from generation %u", db->chk,
                hdr_start.gen);
        return hdr_start;
    }
    /* The header is written before the checkpoint file, so the checkpoint may lag it, never
     * lead it; a checkpoint past what the header requires would skip needed logs. */
    if (hdr_start.gen && ck.checkpoint.gen > db->hdr.log_req_max && db->hdr.log_req_max)
        return hdr_start;
    return ck.checkpoint;
}

/* The generation replay starts at is not in the folder: the folder's logs may be another
 * database's or another stream's altogether, which says more than "missing". */
static int start_missing(eng_db *db, const eng_stream *sf, uint32_t gen)
{
    uint32_t last = eng_stream_last(sf);
    if (!last)
        return om_errf(OM_E_RequiredLogFilesMissing,
                       "%s needs log generation %u to recover, and %s holds no logs of base %s. "
                       "HINT: restore the missing logs, or restore the database from a backup",
                       db->edb, gen, db->logdir, db->base);
    /* Whose the folder's logs are: its newest generation says (only who it is counts here). */
    char p[4200];
    eng_loghdr h;
    eng_chain_want w;
    eng_chain_cause why = ENG_CHAIN_OK;
    eng_stream_path(sf, last, p, sizeof p);
    eng_chain_of_db(&w, &db->hdr, db->edb, 0);
    if (eng_loghdr_read(db->vfs, p, &h) == 0) {
        w.gen = h.gen;
        w.named = 0;
        eng_loghdr_continues(&w, p, &h, &why);
    }
    om_err_clear();
    if (why == ENG_CHAIN_OTHER_DB)
        return om_errf(OM_E_DatabaseLogSetMismatch,
                       "the logs in %s were written for another database than %s (which needs "
                       "generation %u of its own logs). HINT: recover it with its own log folder",
                       db->logdir, db->edb, gen);
    if (why == ENG_CHAIN_OTHER_STREAM)
        return om_errf(OM_E_BadLogSignature,
                       "the logs in %s belong to another log stream than %s (which needs "
                       "generation %u of its own). HINT: logs from before a restore?",
                       db->logdir, db->edb, gen);
    return om_errf(OM_E_RequiredLogFilesMissing,
                   "%s needs log generation %u to recover, and %s holds generations %u to %u. "
                   "HINT: restore the missing logs, or restore the database from a backup",
                   db->edb, gen, db->logdir, eng_stream_first(sf), last);
}

/* Replays generations start.gen..last of the stream, each checked to follow the one before;
 * *end describes the last one replayed. */
static int replay_stream(eng_db *db, const eng_stream *sf, eng_lgpos start, uint32_t last,
                         eng_replay *rp, eng_log_end *end)
{
    eng_genread g = {0};
    eng_chain_want w;
    char p[4200];
    int rc = 0;
    eng_chain_of_db(&w, &db->hdr, db->edb, start.gen);
    for (uint32_t gen = start.gen; gen <= last && !rc; gen++) {
        if (!eng_stream_has(sf, gen)) {
            rc = om_errf(OM_E_MissingLogFile,
                         "log generation %u is missing from %s (generations "
                         "up to %u exist)",
                         gen, db->logdir, last);
            break;
        }
        if ((rc = read_gen_checked(db, sf, gen, &w, &g, p, sizeof p))) break;
        eng_chain_follow(&w, p, &g);
        if (gen < last && eng_stream_has(sf, gen + 1)) {
            /* Its successor says where it ended: damage that looks like its end is found
             * before it is replayed. */
            char next[4200];
            eng_stream_path(sf, gen + 1, next, sizeof next);
            if ((rc = eng_chain_check_ahead(db->vfs, &w, next, gen + 1 != sf->cur_gen))) break;
            if (g.torn_slot)
                om_warn("log generation %u ends with a flush that a crash interrupted", gen);
        }
        if ((rc = eng_replay_gen(rp, &g, gen == start.gen ? start.off : 0))) break;
        end->gen = gen;
        end->created = g.hdr.created;
        end->len = g.len;
        end->cur_exists = gen == sf->cur_gen;
        eng_gen_free(&g);
        if (db->replay_progress) db->replay_progress(db->progress_arg, gen, start.gen, last);
    }
    eng_gen_free(&g);
    return rc;
}

/* After replay: the pages flushed, the header in Clean Shutdown at the consistent position,
 * then E00.chk. */
static int finish_clean(eng_db *db, eng_replay *rp, const eng_log_end *end, uint64_t t0)
{
    if (rp->pos.gen == 0) rp->pos = (eng_lgpos){end->gen, end->len};
    int rc = eng_ckpt_flush_pages(db);
    if (rc) return rc;
    db->hdr.state = ENG_STATE_CLEAN;
    db->hdr.dbtime = db->dbtime;
    db->hdr.pages = db->pages;
    db->hdr.txn_last = db->txn_last;
    db->hdr.consistent = rp->pos;
    db->hdr.consistent_time = om_now_ns();
    db->hdr.log_req_min = db->hdr.log_req_max = 0;
    db->hdr.log_committed = end->gen;
    rc = eng_dbhdr_write(db->edbf, &db->hdr);
    db->st.replay_ns = om_mono_ns() - t0;
    if (!rc && end->gen) rc = eng_ckpt_write_chk(db, rp->pos);
    if (!rc) ENG_CHECK(db, ENG_AT_RECOVERY);
    return rc;
}

int eng_recovery_run(eng_db *db, eng_log_end *end)
{
    eng_stream sf = {0};
    eng_replay rp = {.db = db};
    uint64_t t0 = om_mono_ns();
    memset(end, 0, sizeof *end);
    uint32_t repaired = 0;
    int rc = eng_pgj_repair(db, &repaired);
    if (!rc) rc = eng_stream_list(db->vfs, db->logdir, db->base, &sf);
    if (rc) return rc;
    uint32_t last = eng_stream_last(&sf);
    eng_lgpos start = eng_recovery_start(db);
    if (start.gen == 0) start.gen = sf.n ? sf.gens[0] : sf.cur_gen;
    /* Created but never attached: nothing was logged. */
    int never_attached =
        last == 0 && db->hdr.log_req_max == 0 && db->hdr.state == ENG_STATE_JUST_CREATED;
    if (never_attached)
        rc = 0;
    else if (last == 0 || !eng_stream_has(&sf, start.gen))
        rc = start_missing(db, &sf, start.gen);
    else if (!(rc = replay_stream(db, &sf, start, last, &rp, end)) && last < db->hdr.log_req_max)
        rc = om_errf(OM_E_RequiredLogFilesMissing,
                     "%s needs log generations up to %u and the logs end at %u", db->edb,
                     db->hdr.log_req_max, last);
    if (!rc) rc = finish_clean(db, &rp, end, t0);
    eng_replay_free(&rp);
    eng_stream_free(&sf);
    return rc;
}
