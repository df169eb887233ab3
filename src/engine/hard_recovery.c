/* Hard recovery after a restore: eng_db_hard_recover (the contract is in engine.h).
 *
 * Steps, and what a crash after each leaves:
 *   1. open the restored .edb (locked) and check its base name; plan: the generations of
 *      restored_dir to replay, all checked to be there or still arriving (arriving_first..
 *      arriving_last: the requester is laying them down). Nothing is written before this
 *      succeeds: a refused call leaves the restored files as they were.
 *   2. first run: delete the target's page journal and hold file (they belong to whatever
 *      database ran there before: a journal page would "repair" the restored .edb with another
 *      state) and set RESTORING in the header, durably. A rerun (RESTORING already set) repairs
 *      torn pages from the journal, which only an earlier run of this hard recovery wrote.
 *      From here on eng_db_open refuses the database; only a rerun goes on.
 *   3. replay, flushing as the cache fills (pages, journal first, then the header with Log
 *      Required raised, never E00.chk): a rerun starts where the header says. An arriving
 *      generation is read only once wait_laid said it is laid (a file listed under its name
 *      before that may be an old one about to be replaced); when the laying stops short,
 *      replay stops with its error and a rerun, once the logs are all there, goes on.
 *   4. flush the pages.
 *   5. when the database leaves the restored stream: start the target stream's new generation
 *      (E00.log). A rerun sees it as one more generation of the target folder and starts
 *      another after it.
 *   6. the header: Clean Shutdown, the target's stream and base, RESTORING cleared. After this
 *      the database mounts; a rerun finds nothing more to replay.
 *   7. the target's E00.chk at the consistent position (a mount of a clean database does not
 *      read it, so a crash before it changes nothing).
 *
 * Why replay never starts at a checkpoint file: E00.chk in the folder may be the live
 * database's, written long after the backup; one past the restored header's checkpoint would
 * skip changes the restored pages do not have. The header's Log Required min is the generation
 * of the checkpoint the pages belong to, so replay starts at its beginning. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "base/uuid.h"
#include "engine/db_internal.h"

typedef struct hard {
    const eng_restore_opts *o;
    eng_db *db;
    om_vfs *v;
    eng_stream rs;       /* the generations in restored_dir */
    int same;            /* restored_dir is the target's own folder, with the same base */
    int optional;        /* the restored database is consistent without any log */
    eng_lgpos start;     /* replay starts here */
    uint32_t end;        /* last generation to replay; 0: nothing to replay */
    uint32_t chain_last; /* last generation in restored_dir, or still arriving */
    uint32_t must;       /* replay must reach this far (the header's needs, what is arriving) */
    uint32_t laid;       /* wait_laid said the arriving generations up to this one are laid */
    int cut;             /* stop_gen, or the end of the chain's logs in the folder (short:
                            roll forward met a gap or another stream), ends replay before the
                            generations on disk do */
    int short_roll;
    char roll_end[300];  /* why roll forward ended short */
    uint64_t hdr_dbtime; /* the restored pages hold every change up to this dbtime */
    uint64_t laid_size;  /* laid_unsynced: the .edb's size as laid (its pages replay last) */
    /* laid_unsynced: a thread syncs the .edb while replay begins; holding back ends with it */
    pthread_t flush_th;
    int flush_started, flushed, flush_rc;
    om_err_saved flush_err;
    eng_replay rp;
    eng_chain_want w; /* the next generation to read (the read-ahead thread's during replay) */
    uint32_t first_done, last_done, last_len; /* generations replayed, the last one's length */
} hard;

/* A path without repeated or trailing slashes. */
static void norm_path(const char *p, char *out, size_t n)
{
    size_t k = 0;
    for (; *p && k + 1 < n; p++)
        if (!(*p == '/' && k && out[k - 1] == '/')) out[k++] = *p;
    if (k > 1 && out[k - 1] == '/') k--;
    out[k] = 0;
}

static int same_folder(const char *a, const char *b)
{
    char x[4096], y[4096];
    norm_path(a, x, sizeof x);
    norm_path(b, y, sizeof y);
    return strcmp(x, y) == 0;
}

static int unlink_if_there(om_vfs *v, const char *p, int *gone)
{
    int ex = v->exists(v, p);
    if (ex <= 0) return ex;
    int rc = v->unlink(v, p);
    if (!rc) *gone = 1;
    return rc;
}

/* The target's checkpoint and prepared log are written anew after a hard recovery; whatever
 * is at their names (the target's own old files, or a link someone planted to steer the
 * write elsewhere) is removed by name first, never written through. */
static int fresh_name(hard *h, const char *p)
{
    int rc = h->v->unlink(h->v, p);
    if (rc == OM_E_FileNotFound) {
        om_err_clear();
        rc = 0;
    }
    return rc;
}

static int write_chk_fresh(hard *h, eng_lgpos c)
{
    int rc = fresh_name(h, h->db->chk);
    return rc ? rc : eng_ckpt_write_chk(h->db, c);
}

/* Step 2. */
static int begin(hard *h)
{
    eng_db *db = h->db;
    if (db->hdr.flags & ENG_DBF_RESTORING) {
        uint32_t repaired = 0;
        om_info("%s: resuming a hard recovery that did not finish", db->edb);
        return eng_pgj_repair(db, &repaired);
    }
    char pgj[4200];
    int gone = 0;
    eng_pgj_path(pgj, sizeof pgj, db->logdir, db->base);
    int rc = unlink_if_there(h->v, pgj, &gone);
    if (!rc) rc = unlink_if_there(h->v, db->holdp, &gone);
    /* Laid unsynced: nothing of this recovery counts after a restart (the restore is run
     * again, and its begin removes them again), and a sync now would wait for the .edb's. */
    if (!rc && gone && !h->o->laid_unsynced) rc = h->v->sync_dir(h->v, db->logdir);
    if (rc) return rc;
    db->hdr.flags |= ENG_DBF_RESTORING;
    db->hdr.cbt_token = 0; /* changemap: no change map vouches for a restored file */
    if (h->o->laid_unsynced) return eng_dbhdr_write_unsynced(db->edbf, &db->hdr);
    return eng_dbhdr_write(db->edbf, &db->hdr);
}

/* Generation g is still being laid down: it counts as present, and is read only after
 * wait_laid(g) returned 0. */
static int arriving(const hard *h, uint32_t g)
{
    return h->o->arriving_first && g >= h->o->arriving_first && g <= h->o->arriving_last;
}

static int present(const hard *h, uint32_t g)
{
    return arriving(h, g) || eng_stream_has(&h->rs, g);
}

/* An arriving generation is laid under its numbered name, whatever the listing saw. */
static void gen_path(const hard *h, uint32_t g, char *p, size_t n)
{
    if (arriving(h, g))
        (void)eng_log_path(p, n, h->rs.dir, h->rs.base, g);
    else
        eng_stream_path(&h->rs, g, p, n);
}

static int missing_start(hard *h)
{
    eng_db *db = h->db;
    uint32_t first = eng_stream_first(&h->rs);
    if (h->o->arriving_first && (!first || h->o->arriving_first < first))
        first = h->o->arriving_first;
    if (!h->chain_last)
        return om_errf(OM_E_RequiredLogFilesMissing,
                       "%s needs log generations %u to %u to recover, and %s holds no logs of "
                       "base name %s. HINT: restore the logs of the backup with the database",
                       db->edb, h->start.gen, db->hdr.log_req_max, h->rs.dir, h->rs.base);
    return om_errf(OM_E_RequiredLogFilesMissing,
                   "%s needs log generation %u to recover; the restored logs in %s run from %u "
                   "to %u. HINT: restore the full backup those logs follow, or the missing logs",
                   db->edb, h->start.gen, h->rs.dir, first, h->chain_last);
}

/* Generation g is one of the folder's later logs that roll forward goes on with while they
 * continue the chain: past what the database needs and what is being restored. */
static int rolls_on(const hard *h, uint32_t g)
{
    return h->same && h->o->roll_forward && !h->o->stop_gen && g > h->must;
}

/* Step 1: start, end, and every generation between present. */
static int plan(hard *h)
{
    const eng_restore_opts *o = h->o;
    eng_db *db = h->db;
    const eng_dbhdr *H = &db->hdr;
    int rc = eng_stream_list(h->v, o->restored_dir, o->restored_base, &h->rs);
    if (rc) return rc;
    h->chain_last = eng_stream_last(&h->rs);
    if (o->arriving_last > h->chain_last) h->chain_last = o->arriving_last;
    uint32_t need_max = 0;
    if (H->state == ENG_STATE_DIRTY) {
        if (!H->log_req_min)
            return om_errf(OM_E_InvalidDatabase,
                           "%s is in Dirty Shutdown but its header requires no log generation",
                           db->edb);
        h->start = (eng_lgpos){H->log_req_min, 0};
        need_max = H->log_req_max;
    } else {
        /* Clean (or never mounted): consistent as it is; later logs, if restored, roll it on. */
        h->optional = 1;
        h->start = H->state == ENG_STATE_CLEAN ? H->consistent : (eng_lgpos){1, 0};
        if (!h->start.gen) h->start.gen = 1;
    }
    if (h->same && !o->roll_forward && !o->stop_gen)
        return om_errf(OM_E_InvalidParameter,
                       "the restored logs of %s are in its own log folder %s, where later logs may "
                       "follow them: without roll forward, the last generation to replay (the "
                       "backup's last) must be given",
                       db->edb, h->rs.dir);
    if (o->stop_gen && o->stop_gen < need_max)
        return om_errf(OM_E_InvalidParameter,
                       "cannot stop at log generation %u: the restored %s already holds changes "
                       "up to generation %u. HINT: restore an older backup",
                       o->stop_gen, db->edb, need_max);
    if (h->optional && h->chain_last < h->start.gen) return 0; /* nothing to replay */
    if (!present(h, h->start.gen)) {
        if (h->optional)
            return om_errf(OM_E_MissingLogFile,
                           "log generation %u, where %s's logs continue, is missing from %s "
                           "(generations up to %u exist)",
                           h->start.gen, db->edb, h->rs.dir, h->chain_last);
        return missing_start(h);
    }
    h->end = h->chain_last;
    if (h->same && !o->roll_forward)
        h->end = o->stop_gen;
    else if (o->stop_gen && o->stop_gen < h->end)
        h->end = o->stop_gen;
    /* Rolling forward through the folder's later logs goes as far as they continue the chain:
     * past what the database needs and what is being restored, a gap ends it. */
    h->must = need_max > o->arriving_last ? need_max : o->arriving_last;
    for (uint32_t g = h->start.gen; g <= h->end; g++)
        if (rolls_on(h, g) && !present(h, g)) {
            snprintf(h->roll_end, sizeof h->roll_end,
                     "roll forward stopped after generation %u: generation %u is missing from "
                     "%.150s, the later ones there were not replayed",
                     g - 1, g, h->rs.dir);
            om_warn("%s: %s", db->edb, h->roll_end);
            h->end = g - 1;
            h->short_roll = 1;
        }
    h->cut = h->end < h->chain_last;
    for (uint32_t g = h->start.gen; g <= h->end; g++)
        if (!present(h, g))
            return om_errf(OM_E_MissingLogFile,
                           "log generation %u is missing from %s (the logs to replay run from %u "
                           "to %u)",
                           g, h->rs.dir, h->start.gen, h->end);
    if (h->end < need_max)
        return om_errf(OM_E_RequiredLogFilesMissing,
                       "%s needs log generations up to %u to recover, and the restored logs in %s "
                       "end at %u. HINT: restore the logs of the backup with the database",
                       db->edb, need_max, h->rs.dir, h->end);
    return 0;
}

/* A generation followed by another one must hold everything the next one says it did: checked
 * before it is replayed. */
static int check_whole(hard *h, uint32_t g, const eng_chain_want *w)
{
    if (g >= h->chain_last || !present(h, g + 1)) return 0;
    char next[4200];
    gen_path(h, g + 1, next, sizeof next);
    return eng_chain_check_ahead(h->v, w, next, arriving(h, g + 1) || g + 1 != h->rs.cur_gen);
}

/* Before generation g is read: waits until it is laid when it is arriving, and until g + 1 is
 * when that one is arriving too (check_whole reads its header). Replay so runs one generation
 * behind the laying; the last one waits for itself only. */
static int wait_arriving(hard *h, uint32_t g)
{
    uint32_t w = arriving(h, g + 1) ? g + 1 : arriving(h, g) ? g : 0;
    if (w <= h->laid) return 0;
    int rc = h->o->wait_laid(h->o->wait_arg, w); /* its detail names the generation */
    if (!rc) h->laid = w;
    return rc;
}

/* Reads generation g of the restored stream (the read-ahead thread, in order): laid, continuing
 * the chain h->w expects, whole as far as its successor tells. *why: the chain's verdict. */
static int read_restored(void *arg, uint32_t g, eng_genread *gr, uint8_t *buf, int *why)
{
    hard *h = arg;
    int rc = wait_arriving(h, g);
    if (rc) return rc;
    char p[4200];
    eng_chain_cause c = ENG_CHAIN_OK;
    gen_path(h, g, p, sizeof p);
    h->w.gen = g;
    h->w.named = arriving(h, g) || g != h->rs.cur_gen;
    rc = eng_gen_continues_into(h->v, p, &h->w, gr, &c, buf);
    *why = (int)c;
    if (rc) return rc;
    eng_chain_follow(&h->w, p, gr);
    return check_whole(h, g, &h->w);
}

/* Replay stopped with rc: the context of a record that failed names its generation, and the
 * generations replayed end before it. */
static int replay_failed(hard *h, int rc)
{
    uint32_t g = h->rp.err_gen;
    if (!g) return rc;
    char p[4200];
    gen_path(h, g, p, sizeof p);
    if (h->last_done >= g) h->last_done = g - 1;
    if (h->last_done < h->first_done) h->first_done = h->last_done = 0;
    return om_err_ctx(rc, "replaying %s", p);
}

static void *flush_main(void *arg)
{
    hard *h = arg;
    int rc = om_sync(h->db->edbf);
    if (rc) om_err_save(&h->flush_err, rc);
    h->flush_rc = rc;
    __atomic_store_n(&h->flushed, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* laid_unsynced: the .edb synced on a thread of its own, whose end stops the holding back
 * (eng_replay.flushed); without a thread, holding back lasts to the end. */
static void flush_start(hard *h)
{
    if (h->laid_size) h->flush_started = pthread_create(&h->flush_th, NULL, flush_main, h) == 0;
}

/* Joined; its failure (the .edb could not be synced) is the recovery's unless rc is one. */
static int flush_join(hard *h, int rc)
{
    if (!h->flush_started) return rc;
    pthread_join(h->flush_th, NULL);
    h->flush_started = 0;
    return rc || !h->flush_rc ? rc : om_err_restore(&h->flush_err);
}

/* Step 3. */
static int replay(hard *h)
{
    eng_db *db = h->db;
    eng_prefetch *pf = NULL;
    int rc = 0;
    h->rp = (eng_replay){.db = db,
                         .stop_time = h->o->stop_time_ns,
                         .hard = 1,
                         .defer_below = h->laid_size,
                         .hold_max = h->o->hold_max,
                         .flushed = h->flush_started ? &h->flushed : NULL};
    eng_chain_of_db(&h->w, &db->hdr, db->edb, h->start.gen);
    rc = eng_prefetch_start(&pf, h->start.gen, h->end, read_restored, h);
    for (uint32_t gen = h->start.gen; !rc && gen <= h->end && !h->rp.stopped; gen++) {
        eng_genread *g = NULL;
        int why = ENG_CHAIN_OK;
        if ((rc = eng_prefetch_next(pf, &g, &why))) {
            /* What came before in the log is applied first: a record of it that fails is the
             * error. */
            if ((rc = eng_replay_settle(&h->rp, rc)) && h->rp.err_gen) break;
            /* Roll forward goes on while the folder's later logs continue the chain; one of
             * another database or stream, or out of sequence, ends it there. */
            if (rolls_on(h, gen) && (why == ENG_CHAIN_OTHER_DB || why == ENG_CHAIN_OTHER_STREAM ||
                                     why == ENG_CHAIN_SEQUENCE)) {
                snprintf(h->roll_end, sizeof h->roll_end,
                         "roll forward stopped after generation %u: %.200s", gen - 1,
                         om_err_detail());
                om_warn("%s: %s", db->edb, h->roll_end);
                h->end = gen - 1;
                h->cut = h->short_roll = 1;
                rc = 0;
            }
            break;
        }
        if ((rc = eng_replay_gen(&h->rp, g, gen == h->start.gen ? h->start.off : 0))) break;
        if (!h->first_done) h->first_done = gen;
        h->last_done = gen;
        h->last_len = g->len;
        if (db->replay_progress) db->replay_progress(db->progress_arg, gen, h->start.gen, h->end);
    }
    rc = eng_replay_settle(&h->rp, rc);
    eng_prefetch_stop(pf);
    if (rc) return replay_failed(h, rc);
    if (h->optional) return 0;
    /* The restored pages may hold changes up to the checkpoint they were written at: replay
     * must get at least that far. */
    if (h->rp.commit_dbtime < h->hdr_dbtime) {
        if (h->rp.stopped)
            return om_errf(OM_E_InvalidParameter,
                           "cannot stop at that time: the restored %s already holds changes "
                           "committed after it (through dbtime %llu; the last transaction before "
                           "the point ends at %llu). HINT: restore an older backup",
                           db->edb, (unsigned long long)h->hdr_dbtime,
                           (unsigned long long)h->rp.commit_dbtime);
        return om_errf(OM_E_RequiredLogFilesMissing,
                       "the restored logs of %s end before the state its pages hold (dbtime "
                       "%llu, the logs reach %llu)",
                       db->edb, (unsigned long long)h->hdr_dbtime,
                       (unsigned long long)h->rp.commit_dbtime);
    }
    return 0;
}

/* Step 5: the database leaves the restored stream for a generation of the target's folder:
 * the next after the last one there, in that stream when there is one (another folder), else
 * in a new one. */
static int new_generation(hard *h, eng_lgpos *consistent, int *adopted)
{
    eng_db *db = h->db;
    const eng_opts *t = &h->o->target;
    eng_stream ts;
    int rc = h->v->mkdir(h->v, db->logdir); /* new paths: the folder may not exist yet */
    if (!rc) rc = eng_stream_list(h->v, db->logdir, db->base, &ts);
    if (rc) return rc;
    uint32_t last = eng_stream_last(&ts), gen;
    eng_sig sig;
    uint64_t prev_created = 0;
    uint32_t prev_end = 0;
    *adopted = 0;
    if (last && !h->same) {
        char p[4200];
        eng_genread lg;
        eng_chain_want any = {.gen = last, .named = last != ts.cur_gen};
        eng_stream_path(&ts, last, p, sizeof p);
        if (eng_gen_continues(h->v, p, &any, &lg, NULL) == 0) {
            *adopted = 1;
            sig = lg.hdr.log_sig;
            prev_created = lg.hdr.created;
            prev_end = lg.len;
        } else
            om_warn("%s: %s; the restored database starts a new log stream after it", p,
                    om_err_detail());
        eng_gen_free(&lg);
    }
    if (last)
        gen = last + 1;
    else {
        gen = h->last_done > db->hdr.log_committed ? h->last_done : db->hdr.log_committed;
        if (db->hdr.consistent.gen > gen) gen = db->hdr.consistent.gen;
        gen++;
    }
    if (!*adopted) {
        om_random(&sig.random, sizeof sig.random);
        sig.time = om_now_ns();
    }
    eng_log_cfg c = {0};
    c.vfs = h->v;
    c.dir = db->logdir;
    c.base = db->base;
    c.log_sig = sig;
    c.db_sig = db->hdr.db_sig;
    c.db_id = db->hdr.db_id;
    c.flags = t->circular_logging ? ENG_DBF_CIRCULAR : 0;
    c.no_reserve = t->no_reserve_logs;
    eng_log *l = NULL;
    char tmp[4200];
    rc = eng_tmp_log_path(tmp, sizeof tmp, db->logdir, db->base);
    if (!rc) rc = fresh_name(h, tmp);
    if (rc) {
        eng_stream_free(&ts);
        return rc;
    }
    rc = eng_log_start(&c, gen, last && last == ts.cur_gen, prev_created, prev_end,
                       (eng_lgpos){gen, 0}, &l);
    eng_log_free(l);
    eng_stream_free(&ts);
    if (rc) return om_err_ctx(rc, "starting log generation %u in %s", gen, db->logdir);
    db->hdr.log_sig = sig;
    *consistent = (eng_lgpos){gen, 0};
    return 0;
}

/* Steps 5 to 7. */
static int finish(hard *h, eng_restore_result *r)
{
    eng_db *db = h->db;
    eng_dbhdr *H = &db->hdr;
    int stopped = h->rp.stopped || h->cut;
    int keep = h->same && !stopped;
    eng_lgpos consistent = h->rp.pos;
    if (!consistent.gen)
        consistent = h->last_done ? (eng_lgpos){h->last_done, h->last_len} : H->consistent;
    uint32_t committed = h->last_done > H->log_committed ? h->last_done : H->log_committed;
    int adopted = 0, rc = 0;
    if (!keep) {
        if ((rc = new_generation(h, &consistent, &adopted))) return rc;
        committed = consistent.gen;
        /* The backups recorded describe generations of a stream the database left. */
        for (int i = ENG_BK_PREV_FULL; i <= ENG_BK_PREV_DIFFERENTIAL; i++)
            memset(&H->slots[i], 0, sizeof H->slots[i]);
    }
    memset(&H->slots[ENG_BK_CUR_FULL], 0, sizeof H->slots[ENG_BK_CUR_FULL]);
    memset(&H->slots[ENG_BK_CUR_SNAPSHOT], 0, sizeof H->slots[ENG_BK_CUR_SNAPSHOT]);
    H->state = ENG_STATE_CLEAN;
    H->dbtime = db->dbtime;
    H->pages = db->pages;
    H->txn_last = db->txn_last;
    H->consistent = consistent;
    H->consistent_time = om_now_ns();
    H->log_req_min = H->log_req_max = 0;
    H->log_committed = committed;
    memcpy(H->base, db->base, 4);
    H->flags = (H->flags & ~(uint32_t)(ENG_DBF_RESTORING | ENG_DBF_CIRCULAR)) |
               (h->o->target.circular_logging ? ENG_DBF_CIRCULAR : 0);
    if ((rc = eng_dbhdr_write(db->edbf, H))) return rc;
    if ((rc = write_chk_fresh(h, consistent))) return rc;
    if (r) {
        r->stopped_at_point = stopped && !h->short_roll;
        snprintf(r->roll_end, sizeof r->roll_end, "%s", h->roll_end);
        r->stream_gen = keep ? (h->chain_last > consistent.gen ? h->chain_last : consistent.gen)
                             : consistent.gen;
        r->new_stream = !keep;
    }
    if (!keep)
        om_info("%s: after hard recovery it %s log stream in %s/%s at generation %u", db->edb,
                adopted ? "continues the" : "starts a new", db->logdir, db->base, consistent.gen);
    return 0;
}

/* A .edb of another base than the restored logs': the job may be done already (an earlier run
 * finished its header and did not return: a crash), which the restored logs tell, as they were
 * written for this very database. */
static int already_done(hard *h, eng_restore_result *r)
{
    eng_db *db = h->db;
    const eng_dbhdr *H = &db->hdr;
    int rc = eng_stream_list(h->v, h->o->restored_dir, h->o->restored_base, &h->rs);
    uint32_t last = rc ? 0 : eng_stream_last(&h->rs);
    int ours = 0;
    if (last && H->state == ENG_STATE_CLEAN && !(H->flags & ENG_DBF_RESTORING) &&
        strncmp(H->base, db->base, 3) == 0) {
        /* Written for this database: the stream is the one it left, so only the database
         * counts. */
        char p[4200];
        eng_loghdr lh;
        eng_chain_want w;
        eng_stream_path(&h->rs, last, p, sizeof p);
        eng_chain_of_db(&w, H, db->edb, last);
        w.check_stream = 0;
        w.named = 0;
        if (eng_loghdr_read(h->v, p, &lh) == 0) {
            w.gen = lh.gen;
            ours = eng_loghdr_continues(&w, p, &lh, NULL) == 0;
        }
        om_err_clear();
    }
    if (!ours)
        return om_errf(OM_E_DatabaseLogSetMismatch,
                       "%s uses log base name %s; the restored logs are named %s", db->edb, H->base,
                       h->o->restored_base);
    om_info("%s: hard recovery had already finished", db->edb);
    if (r) {
        r->stream_gen = H->consistent.gen;
        r->new_stream = 1;
    }
    return write_chk_fresh(h, H->consistent);
}

static int check_opts(const eng_restore_opts *o)
{
    if (!o || !o->target.edb_path || !o->target.log_dir || !o->restored_dir)
        return om_errf(OM_E_InvalidParameter,
                       "hard recovery needs the database, its log folder and the restored logs' "
                       "folder");
    if (!eng_base_valid(o->restored_base))
        return om_errf(OM_E_InvalidParameter,
                       "the restored logs' base name '%s' must be three letters or digits",
                       o->restored_base ? o->restored_base : "");
    if ((o->arriving_first || o->arriving_last) &&
        (!o->arriving_first || o->arriving_first > o->arriving_last || !o->wait_laid))
        return om_errf(OM_E_InvalidParameter,
                       "log generations still arriving (%u to %u) need a range starting at 1 or "
                       "later and a wait_laid callback",
                       o->arriving_first, o->arriving_last);
    return 0;
}

int eng_db_hard_recover(const eng_restore_opts *o, eng_restore_result *r)
{
    uint64_t t0 = om_mono_ns();
    if (r) memset(r, 0, sizeof *r);
    int rc = check_opts(o);
    if (rc) return rc;
    hard h = {.o = o};
    if ((rc = eng_db_alloc(&o->target, &h.db))) return rc;
    eng_db *db = h.db;
    h.v = db->vfs;
    h.same = same_folder(o->restored_dir, db->logdir) && strcmp(o->restored_base, db->base) == 0;
    if ((rc = eng_db_open_edb(db)) || (rc = eng_dbhdr_read(h.v, db->edb, &db->hdr, 1, NULL)))
        goto out;
    if (strncmp(db->hdr.base, o->restored_base, 3) != 0) {
        rc = already_done(&h, r);
        goto out;
    }
    /* Laid unsynced: the laid pages are replayed last, and the end's sync covers the file. */
    if (o->laid_unsynced && (rc = db->edbf->vfs->size(db->edbf, &h.laid_size))) goto out;
    if (o->laid_unsynced) db->unsynced = 1;
    db->dbtime = h.hdr_dbtime = db->hdr.dbtime;
    db->pages = db->hdr.pages;
    db->txn_last = db->hdr.txn_last;
    if ((rc = plan(&h)) || (rc = begin(&h))) goto out;
    flush_start(&h);
    if (h.end && (rc = replay(&h))) goto out;
    /* Replay may stop before the last arriving generation (a point in time): the laying ends
     * first, so no generation lands in the folder after the new stream is started (step 5) or
     * after the caller has cleared the restore's folder. */
    if (o->arriving_last > h.laid && (rc = o->wait_laid(o->wait_arg, o->arriving_last))) goto out;
    if (o->arriving_last) h.laid = o->arriving_last;
    if ((rc = flush_join(&h, 0))) goto out;
    if ((rc = eng_ckpt_flush_pages(db))) goto out;
    rc = finish(&h, r);
out:
    rc = flush_join(&h, rc);
    if (r) {
        r->first_gen = h.first_done;
        r->last_gen = h.last_done;
        r->records = db->st.replay_records;
        r->transactions = db->st.replay_groups;
        r->held_back = h.rp.held_back;
        r->held_peak = h.rp.held_peak;
        r->ns = om_mono_ns() - t0;
    }
    eng_replay_free(&h.rp);
    eng_stream_free(&h.rs);
    eng_db_abandon(db);
    return rc;
}

/* ---- the restore's folder ---- */

int eng_restored_name(const char *name, const char *base)
{
    uint32_t g = 0;
    size_t bl = strlen(base);
    if (eng_parse_log_name(name, base, &g) && g) return 1;
    if (!strncmp(name, base, bl) &&
        (!strcmp(name + bl, "restore.env") || !strcmp(name + bl, "restore.laid")))
        return 1;
    return om_durable_is_tmp(name, NULL);
}

/* The names a restore writes, whatever their base (a retired folder's base is its names'). */
static int restored_any(const char *name)
{
    char base[4] = {0};
    if (strlen(name) < 3) return om_durable_is_tmp(name, NULL);
    memcpy(base, name, 3);
    return eng_base_valid(base) ? eng_restored_name(name, base) : om_durable_is_tmp(name, NULL);
}

int eng_retired_name(const char *name)
{
    static const char pre[] = ENG_RETIRED_PREFIX;
    size_t pl = sizeof pre - 1;
    if (strncmp(name, pre, pl) || strlen(name) != pl + 16) return 0;
    for (const char *c = name + pl; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return 0;
    return 1;
}

typedef struct rm_names {
    om_dir *d;
    const char *base; /* NULL: any base (a retired folder) */
    char stray[256];
    int unlink; /* 0: only look */
    int rc;
} rm_names;

static int remove_one(void *arg, const char *name)
{
    rm_names *r = arg;
    if (r->base ? !eng_restored_name(name, r->base) : !restored_any(name)) {
        if (!r->stray[0]) snprintf(r->stray, sizeof r->stray, "%s", name);
        return 0;
    }
    if (!r->unlink) return 0;
    int rc = om_unlink_at(r->d, name);
    if (rc && rc != OM_E_FileNotFound && !r->rc) r->rc = rc;
    return 0;
}

/* A name the listing found that no restore writes: the folder stays. */
static int stray_found(const rm_names *r)
{
    if (!r->stray[0]) return 0;
    return om_errf(OM_E_InvalidParameter,
                   "%s holds %s, which no restore writes: the folder stays. HINT: move it away, "
                   "then remove the folder",
                   r->d->path, r->stray);
}

int eng_restored_retire(om_vfs *v, const char *logs, const char *base, char *retired, size_t n)
{
    if (n) retired[0] = 0;
    if (!eng_base_valid(base))
        return om_errf(OM_E_InvalidParameter, "'%s' is not a log base name", base ? base : "");
    if (n < ENG_RETIRED_NAME_MAX)
        return om_errf(OM_E_InvalidParameter, "retiring %s/_restoredLogs: no room for the name",
                       logs);
    om_dir *ld = NULL, *pd = NULL;
    int rc = om_dir_open(v, NULL, logs, OM_D_FOLLOW, &ld);
    if (!rc && om_kind_at(ld, "_restoredLogs") == OM_KIND_NONE) {
        om_dir_close(ld);
        return 0;
    }
    if (!rc) rc = om_dir_open(v, ld, "_restoredLogs", 0, &pd);
    rm_names r = {.d = pd, .base = base};
    if (!rc) rc = om_list_at(pd, remove_one, &r);
    if (!rc) rc = stray_found(&r);
    om_dir_close(pd);
    /* One rename: the folder (and with it the .env that marks the restore unfinished) leaves
     * its name whole; a crash before the sync below leaves the restore pending as it was. */
    char name[ENG_RETIRED_NAME_MAX];
    for (int tries = 0; !rc; tries++) {
        uint8_t rnd[8];
        om_random(rnd, sizeof rnd);
        int k = snprintf(name, sizeof name, "%s", ENG_RETIRED_PREFIX);
        for (int i = 0; i < 8; i++)
            k += snprintf(name + k, sizeof name - (size_t)k, "%02x", rnd[i]);
        rc = om_rename_at(ld, "_restoredLogs", ld, name, 0);
        if (rc != OM_E_FileAlreadyExists || tries == 3) break;
        om_err_clear();
        rc = 0;
    }
    if (!rc) rc = om_dir_sync(ld);
    if (!rc) snprintf(retired, n, "%s", name);
    om_dir_close(ld);
    return rc;
}

/* Removes the retired folder name in ld: only restore names in it (a link among them goes as a
 * name), then the folder. */
static int remove_retired_at(om_dir *ld, const char *name)
{
    om_dir *d = NULL;
    int kind = om_kind_at(ld, name);
    if (kind < 0) return kind;
    if (kind == OM_KIND_NONE) return 0; /* gone already (another remover) */
    if (kind != OM_KIND_DIR)
        return om_errf(OM_E_InvalidParameter,
                       "%s/%s is not a folder (a link, or a file): left as it is. HINT: it is "
                       "no restore's; move it away",
                       ld->path, name);
    /* Its own, as _restoredLogs was (OM_D_OWN): a folder another user planted under a retired
     * name is not ours to empty. */
    int rc = om_dir_open(ld->vfs, ld, name, OM_D_OWN, &d);
    if (rc == OM_E_FileNotFound) {
        om_err_clear();
        return 0;
    }
    rm_names r = {.d = d, .unlink = 1};
    if (!rc) rc = om_list_at(d, remove_one, &r);
    if (!rc) rc = r.rc;
    if (!rc) rc = stray_found(&r);
    om_dir_close(d);
    if (!rc) rc = om_rmdir_at(ld, name);
    if (rc == OM_E_FileNotFound) {
        om_err_clear();
        rc = 0;
    }
    return rc;
}

int eng_retired_remove(om_vfs *v, const char *logs, const char *retired)
{
    if (!eng_retired_name(retired))
        return om_errf(OM_E_InvalidParameter, "'%s' is no retired folder's name", retired);
    om_dir *ld = NULL;
    int rc = om_dir_open(v, NULL, logs, OM_D_FOLLOW, &ld);
    if (!rc) rc = remove_retired_at(ld, retired);
    om_dir_close(ld);
    return rc;
}

typedef struct sweep {
    om_dir *ld;
    int removed, left;
} sweep;

static int sweep_one(void *arg, const char *name)
{
    sweep *s = arg;
    if (!eng_retired_name(name)) return 0;
    if (remove_retired_at(s->ld, name)) {
        om_warn("%s", om_err_detail());
        om_err_clear();
        s->left++;
    } else {
        s->removed++;
    }
    return 0;
}

int eng_retired_sweep(om_dir *ld, int *removed)
{
    sweep s = {.ld = ld};
    int rc = om_list_at(ld, sweep_one, &s);
    if (removed) *removed = s.removed;
    return rc;
}

typedef struct sync_names {
    om_dir *d;
    const char *base;
    int rc;
} sync_names;

static int sync_one(void *arg, const char *name)
{
    sync_names *s = arg;
    uint32_t g = 0;
    if (s->rc || !eng_parse_log_name(name, s->base, &g) || !g) return 0;
    om_file *f = NULL;
    int rc = om_open_at(s->d, name, OM_O_RDONLY, &f);
    if (!rc) rc = om_sync(f);
    om_close(f);
    if (rc) s->rc = om_err_ctx(rc, "syncing %s/%s", s->d->path, name);
    return 0;
}

int eng_restored_sync(om_vfs *v, const char *dir, const char *base)
{
    om_dir *d = NULL;
    int rc = om_dir_open(v, NULL, dir, 0, &d);
    sync_names s = {.d = d, .base = base};
    if (!rc) rc = om_list_at(d, sync_one, &s);
    if (!rc) rc = s.rc;
    if (!rc) rc = om_dir_sync(d);
    om_dir_close(d);
    return rc;
}

int eng_restored_remove(om_vfs *v, const char *logs, const char *base)
{
    char retired[ENG_RETIRED_NAME_MAX];
    int rc = eng_restored_retire(v, logs, base, retired, sizeof retired);
    if (rc || !retired[0]) return rc;
    /* No restore is pending any more: what is left is clean-up, a warning when it fails. */
    if (eng_retired_remove(v, logs, retired)) {
        om_warn("%s", om_err_detail());
        om_err_clear();
    }
    return 0;
}
