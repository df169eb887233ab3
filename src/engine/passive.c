/* Passive copies: the active's closed generations replayed into a copy that is never mounted
 * (the contract is in engine.h; spec §8).
 *
 * A passive copy is a soft recovery cut into pieces. The seed is a Dirty Shutdown .edb; each
 * eng_passive_replay goes on with the generations that have arrived, with the replay soft
 * recovery uses (recovery.c), checks each one with the log-chain validator first (log.h), and
 * ends, instead of finishing, with a recovery checkpoint: the database stays Dirty, its header
 * and E00.chk at the position a soft recovery resumes from. So activation is an ordinary
 * eng_db_open: a soft recovery from there through the generations present, then a mount that
 * starts the next generation of the same stream.
 *
 * What is durable, in the order it is written (eng_replay_checkpoint):
 *   1. the replayed pages: page journal E00.pgj, synced, then their places in the .edb, synced;
 *   2. the header: Log Required min = the resume position's generation, max = the last
 *      generation replayed (the highest ever: it only rises);
 *   3. E00.chk: the resume position, just past the last transaction applied.
 * A crash between two steps leaves an older resume position; replay from there skips every
 * record whose page is already newer, as recovery does, so it changes nothing twice.
 *
 * In memory between calls: the replay (eng_replay) with the records of a transaction whose
 * COMMIT has not arrived yet (a group spans generations when it does not fit in the rest of
 * one), and the chain expectation (the next generation, and the one before it: its creation
 * time and length). The resume position stays before such a transaction, so a reopen reads it
 * again from its first record. A refused generation changes neither: once a good copy of the
 * file is there, the next call reads again from the resume position (the generation before it
 * may be the damaged one: the next one's header says it ended later than it was read).
 *
 * The last generation replayed after a reopen: the header's Log Required max is the highest
 * generation a replay read, but a seed's header says the same of the generation its
 * checkpoint is in, of which only the part before the checkpoint is in the pages. So it is
 * worked out from the logs: the generations from the resume position up to Log Required max
 * are replayed as long as they hold no COMMIT newer than the header's dbtime. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "engine/db_internal.h"

struct eng_passive {
    eng_db *db;
    eng_replay rp;
    eng_chain_want w; /* w.gen is read next; the generation before it when w.have_prev */
    eng_lgpos resume; /* durable: where replay starts again */
    uint32_t last;    /* every transaction committed in it or before is applied */
    int restart;      /* the next replay reads again from resume (rp and w are reset) */
    int at_resume;    /* the next generation read is resume.gen, read from resume.off */
    int broken;       /* a write failed or a record did not apply: the error; nothing more */
    char broken_why[600];
    uint32_t gens;
    uint64_t bytes, ns;
};

static int refuse_state(eng_db *db)
{
    const eng_dbhdr *h = &db->hdr;
    if (h->flags & ENG_DBF_RESTORING)
        return om_errf(OM_E_RestoreInProgress,
                       "%s: its hard recovery after a restore did not finish, it cannot be a "
                       "passive copy. HINT: finish the restore, or seed the copy again",
                       db->edb);
    if (strncmp(h->base, db->base, 3) != 0)
        return om_errf(OM_E_DatabaseLogSetMismatch, "%s uses log base name %s, not %s", db->edb,
                       h->base, db->base);
    if (h->state != ENG_STATE_DIRTY && h->state != ENG_STATE_CLEAN)
        return om_errf(OM_E_InvalidDatabase,
                       "%s was created and never mounted: it is no copy of an active database",
                       db->edb);
    if (h->state == ENG_STATE_DIRTY && !h->log_req_min)
        return om_errf(OM_E_InvalidDatabase,
                       "%s is in Dirty Shutdown but its header requires no log generation",
                       db->edb);
    return 0;
}

/* Who the logs in the folder are: the newest one and the one replay starts with (when
 * present) must be this database's, of its stream, and the generation their name says. Their
 * content is checked when they are replayed. */
static int check_identity(eng_passive *p, const eng_stream *sf)
{
    eng_db *db = p->db;
    uint32_t probe[2] = {eng_stream_last(sf), p->resume.gen};
    for (int i = 0; i < 2; i++) {
        uint32_t g = probe[i];
        if (!g || !eng_stream_has(sf, g) || (i == 1 && g == probe[0])) continue;
        char path[4200];
        eng_loghdr h;
        eng_chain_want w;
        eng_chain_cause why = ENG_CHAIN_OK;
        eng_stream_path(sf, g, path, sizeof path);
        eng_chain_of_db(&w, &db->hdr, db->edb, g);
        w.named = g != sf->cur_gen;
        int rc = eng_loghdr_read(db->vfs, path, &h);
        if (!rc) rc = eng_loghdr_continues(&w, path, &h, &why);
        if (why == ENG_CHAIN_OTHER_DB || why == ENG_CHAIN_OTHER_STREAM || why == ENG_CHAIN_NAME)
            return om_err_ctx(rc, "passive copy %s: log generation %u", db->edb, g);
        om_err_clear(); /* damage is replay's to report, with the file it is in */
    }
    return 0;
}

/* 1 when generation g, from byte `from` of its stream, holds a COMMIT newer than dbtime: a
 * transaction that is not in the database yet. */
static int holds_newer_commit(eng_passive *p, const eng_genread *g, uint32_t from, uint64_t dbtime)
{
    eng_rec *r = &p->rp.rec;
    uint32_t off = from;
    while (eng_rec_decode(g->stream, g->len, &off, r) == 1)
        if (r->type == ENG_REC_COMMIT && r->u.commit.dbtime > dbtime) return 1;
    om_err_clear();
    return 0;
}

/* The last generation whose every transaction is in the database (the top of this file). */
static uint32_t replayed_through(eng_passive *p, const eng_stream *sf)
{
    eng_db *db = p->db;
    uint32_t cap = db->hdr.log_req_max > p->resume.gen ? db->hdr.log_req_max : p->resume.gen;
    for (uint32_t g = p->resume.gen; g <= cap; g++) {
        char path[4200];
        eng_genread gr = {0};
        if (!eng_stream_has(sf, g)) return g - 1;
        eng_stream_path(sf, g, path, sizeof path);
        int rc = eng_gen_read(db->vfs, path, &gr);
        int newer = rc || holds_newer_commit(p, &gr, g == p->resume.gen ? p->resume.off : 0,
                                             db->hdr.dbtime);
        eng_gen_free(&gr);
        om_err_clear();
        if (newer) return g - 1;
    }
    return cap;
}

/* Where the copy stands: the resume position and the last generation replayed. */
static void find_position(eng_passive *p, const eng_stream *sf)
{
    eng_db *db = p->db;
    if (db->hdr.state == ENG_STATE_CLEAN) {
        /* Consistent at the end of its last generation: the active's next mount started the
         * one after it, where replay begins. */
        p->last = db->hdr.consistent.gen;
        p->resume = (eng_lgpos){db->hdr.consistent.gen + 1, 0};
        return;
    }
    p->resume = eng_recovery_start(db);
    p->last = replayed_through(p, sf);
}

int eng_passive_open(const eng_opts *o, eng_passive **out)
{
    *out = NULL;
    eng_passive *p = calloc(1, sizeof *p);
    if (!p) return om_errf(OM_E_OutOfMemory, "opening a passive copy: out of memory");
    int rc = eng_db_alloc(o, &p->db);
    if (rc) {
        free(p);
        return rc;
    }
    eng_db *db = p->db;
    eng_stream sf = {0};
    uint32_t repaired = 0;
    uint64_t fsz = 0;
    p->rp.db = db;
    /* Lock first: the header read may repair a torn copy. */
    if ((rc = eng_db_open_edb(db)) || (rc = eng_dbhdr_read(db->vfs, db->edb, &db->hdr, 1, NULL)) ||
        (rc = refuse_state(db)) || (rc = eng_hold_remove_stale(db)) ||
        (rc = eng_pgj_repair(db, &repaired)) || (rc = om_fsize(db->edbf, &fsz)) ||
        (rc = eng_stream_list(db->vfs, db->logdir, db->base, &sf)))
        goto fail;
    db->file_pages = fsz / ENG_PAGE_SIZE > 2 ? fsz / ENG_PAGE_SIZE - 2 : 0;
    db->dbtime = db->hdr.dbtime;
    db->pages = db->hdr.pages;
    db->txn_last = db->hdr.txn_last;
    find_position(p, &sf);
    if ((rc = check_identity(p, &sf))) goto fail;
    /* Any header written from here on says Dirty Shutdown: the logs after the resume position
     * must be replayed before the database is consistent (a Clean seed included). */
    db->hdr.state = ENG_STATE_DIRTY;
    p->restart = 1;
    eng_stream_free(&sf);
    *out = p;
    return 0;
fail:
    eng_stream_free(&sf);
    eng_passive_abandon(p);
    return rc;
}

/* Replay reads again from the durable resume position, with nothing in memory. */
static void begin_at_resume(eng_passive *p)
{
    eng_replay_free(&p->rp);
    p->rp = (eng_replay){.db = p->db};
    eng_chain_of_db(&p->w, &p->db->hdr, p->db->edb, p->resume.gen);
    p->at_resume = 1;
    p->restart = 0;
}

static int missing(eng_passive *p, const eng_stream *sf, uint32_t g)
{
    eng_db *db = p->db;
    uint32_t first = eng_stream_first(sf), last = eng_stream_last(sf);
    if (g < first || !first)
        return om_errf(OM_E_RequiredLogFilesMissing,
                       "passive copy %s needs log generation %u next, and %s holds %s%u to %u. "
                       "HINT: copy the missing generations from the active, or seed the copy again",
                       db->edb, g, db->logdir, first ? "generations " : "none: ", first, last);
    return om_errf(OM_E_MissingLogFile,
                   "log generation %u is missing from %s (passive copy %s; generations up to %u "
                   "are there). HINT: copy it from the active",
                   g, db->logdir, db->edb, last);
}

/* Reads generation g and checks it, and that its successor (when present) does not say it
 * ended later. Nothing is applied here. */
static int read_checked(eng_passive *p, const eng_stream *sf, uint32_t g, eng_genread *gr,
                        char *path, size_t pn, uint8_t *buf)
{
    eng_db *db = p->db;
    eng_stream_path(sf, g, path, pn);
    p->w.gen = g;
    p->w.named = g != sf->cur_gen;
    int rc = eng_gen_continues_into(db->vfs, path, &p->w, gr, NULL, buf);
    if (!rc && eng_stream_has(sf, g + 1)) {
        eng_chain_want after = p->w;
        char next[4200];
        eng_chain_follow(&after, path, gr);
        eng_stream_path(sf, g + 1, next, sizeof next);
        rc = eng_chain_check_ahead(db->vfs, &after, next, g + 1 != sf->cur_gen);
    }
    if (rc)
        return om_err_ctx(rc, "passive copy %s: log generation %u refused, nothing of it replayed",
                          db->edb, g);
    return 0;
}

static int stop(eng_passive *p, int rc)
{
    p->broken = rc;
    snprintf(p->broken_why, sizeof p->broken_why, "%s", om_err_detail());
    return rc;
}

/* The read-ahead thread's read of generation g (in order): there, checked (read_checked), and
 * whole. One that ends with a flush cut short and has no successor yet is not used: a crash of
 * the active, or damage at its end that only the next generation's header can tell (it says
 * where this one ended). The chain moves past each generation read. */
typedef struct passive_read {
    eng_passive *p;
    const eng_stream *sf;
} passive_read;

static int read_next(void *arg, uint32_t g, eng_genread *gr, uint8_t *buf, int *why)
{
    passive_read *r = arg;
    char path[4200];
    (void)why;
    if (!eng_stream_has(r->sf, g)) return missing(r->p, r->sf, g);
    int rc = read_checked(r->p, r->sf, g, gr, path, sizeof path, buf);
    if (rc) return rc;
    if (gr->torn_slot && !eng_stream_has(r->sf, g + 1)) return ENG_PREFETCH_END;
    eng_chain_follow(&r->p->w, path, gr);
    return 0;
}

/* A record failed: the error names its generation, which and those after it are not replayed. */
static int replay_failed(eng_passive *p, const eng_stream *sf, int rc)
{
    char path[4200] = "";
    uint32_t g = p->rp.err_gen;
    if (g) eng_stream_path(sf, g, path, sizeof path);
    if (g && p->last >= g) p->last = g - 1;
    return stop(p, om_err_ctx(rc, "passive copy %s: replaying %s", p->db->edb, path));
}

/* Generations w.gen..target, each checked, then applied. *did: something was applied. A refused
 * generation ends the range; what came before it is applied (the caller makes it durable). */
static int replay_range(eng_passive *p, const eng_stream *sf, uint32_t target, int *did)
{
    eng_db *db = p->db;
    uint32_t first = p->w.gen;
    passive_read r = {.p = p, .sf = sf};
    eng_prefetch *pf = NULL;
    int rc = eng_prefetch_start(&pf, first, target, read_next, &r);
    for (uint32_t g = first; g <= target && !rc; g++) {
        eng_genread *gr = NULL;
        if ((rc = eng_prefetch_next(pf, &gr, NULL))) {
            if (rc == ENG_PREFETCH_END) rc = 0;
            break;
        }
        uint32_t from = p->at_resume && g == p->resume.gen ? p->resume.off : 0;
        p->at_resume = 0;
        *did = 1;
        if ((rc = eng_replay_gen(&p->rp, gr, from))) break;
        if (g > p->last) p->last = g;
        p->gens++;
        p->bytes += gr->len > from ? gr->len - from : 0;
        if (db->replay_progress) db->replay_progress(db->progress_arg, g, first, target);
    }
    rc = eng_replay_settle(&p->rp, rc);
    eng_prefetch_stop(pf);
    if (rc && p->rp.err_gen) return replay_failed(p, sf, rc);
    return rc;
}

/* Step 1 to 3 at the top of this file; the resume position moves to just past the last
 * transaction applied. */
static int passive_checkpoint(eng_passive *p)
{
    eng_db *db = p->db;
    eng_lgpos at = p->rp.pos.gen ? p->rp.pos : p->resume;
    int rc = eng_replay_checkpoint(&p->rp, at, p->last);
    if (rc) return stop(p, om_err_ctx(rc, "passive copy %s: writing replayed pages", db->edb));
    p->resume = at;
    pthread_rwlock_wrlock(&db->plock);
    eng_cache_trim(db);
    pthread_rwlock_unlock(&db->plock);
    ENG_CHECK(db, ENG_AT_RECOVERY);
    return 0;
}

static int refuse_broken(eng_passive *p)
{
    return om_errf(p->broken,
                   "passive copy %s stopped: %s. HINT: open it again (replay goes on from its last "
                   "durable position), or seed it again",
                   p->db->edb, p->broken_why);
}

static void fill_state(eng_passive *p, const eng_stream *sf, eng_passive_state *st)
{
    eng_db *db = p->db;
    memset(st, 0, sizeof *st);
    st->db_id = db->hdr.db_id;
    st->db_sig = db->hdr.db_sig;
    st->log_sig = db->hdr.log_sig;
    st->last_replayed = p->last;
    st->next_gen = p->last + 1;
    st->checkpoint = p->resume;
    st->last_present = sf ? eng_stream_last(sf) : 0;
    st->dbtime = db->dbtime;
    st->generations = p->gens;
    st->bytes = p->bytes;
    st->ns = p->ns;
}

int eng_passive_replay(eng_passive *p, uint32_t upto_gen, eng_passive_state *st)
{
    if (p->broken) {
        if (st) fill_state(p, NULL, st);
        return refuse_broken(p);
    }
    eng_db *db = p->db;
    eng_stream sf = {0};
    int rc = eng_stream_list(db->vfs, db->logdir, db->base, &sf);
    int listed = rc == 0;
    uint32_t present = listed ? eng_stream_last(&sf) : 0;
    uint32_t target = upto_gen && upto_gen < present ? upto_gen : present;
    uint64_t t0 = om_mono_ns();
    if (listed && target > p->last) {
        int did = 0;
        if (p->restart) begin_at_resume(p);
        rc = replay_range(p, &sf, target, &did);
        if (!p->broken && did) {
            /* What was replayed before a refused generation is kept, and made durable. */
            om_err_saved why;
            om_err_save(&why, rc);
            int crc = passive_checkpoint(p);
            rc = crc ? crc : om_err_restore(&why);
        }
        if (rc && !p->broken) p->restart = 1;
    }
    p->ns += om_mono_ns() - t0;
    if (st) fill_state(p, listed ? &sf : NULL, st);
    eng_stream_free(&sf);
    return rc;
}

int eng_passive_state_get(eng_passive *p, eng_passive_state *st)
{
    eng_stream sf = {0};
    int rc = eng_stream_list(p->db->vfs, p->db->logdir, p->db->base, &sf);
    fill_state(p, rc ? NULL : &sf, st);
    eng_stream_free(&sf);
    return rc;
}

int eng_passive_close(eng_passive *p)
{
    if (!p) return 0;
    int rc = p->broken ? refuse_broken(p) : 0;
    /* Every replay ends with a checkpoint; pages are dirty here only when one failed. */
    if (!rc && p->db->ndirty) rc = passive_checkpoint(p);
    eng_passive_abandon(p);
    return rc;
}

void eng_passive_abandon(eng_passive *p)
{
    if (!p) return;
    eng_replay_free(&p->rp);
    eng_db_abandon(p->db);
    free(p);
}

/* ---- inspection of a copied generation, without a handle ---- */

/* The chain link to generation gen - 1 when the folder holds it as this stream's. */
static void link_previous(om_vfs *v, const eng_dbhdr *h, const char *edb, const char *dir,
                          const char *base, uint32_t gen, eng_chain_want *w)
{
    char prev[4200];
    eng_genread pg = {0};
    eng_chain_want pw;
    if (gen < 2 || eng_log_path(prev, sizeof prev, dir, base, gen - 1) || v->exists(v, prev) != 1) {
        om_err_clear();
        return;
    }
    eng_chain_of_db(&pw, h, edb, gen - 1);
    if (eng_gen_continues(v, prev, &pw, &pg, NULL) == 0) eng_chain_follow(w, prev, &pg);
    w->gen = gen;
    eng_gen_free(&pg);
    om_err_clear();
}

int eng_passive_inspect(const eng_opts *o, uint32_t gen, eng_gen_info *out)
{
    if (out) memset(out, 0, sizeof *out);
    const char *base = o && o->base ? o->base : "E00";
    if (!o || !o->edb_path || !o->log_dir || !gen || gen > ENG_MAX_GEN || !eng_base_valid(base))
        return om_errf(OM_E_InvalidParameter,
                       "inspecting a log generation needs the copy's database, its log folder, a "
                       "base name and a generation from 1");
    om_vfs *v = o->vfs ? o->vfs : om_vfs_posix();
    eng_dbhdr h;
    char path[4200];
    int rc = eng_dbhdr_read(v, o->edb_path, &h, 0, NULL);
    if (!rc) rc = eng_log_path(path, sizeof path, o->log_dir, base, gen);
    if (rc) return rc;
    eng_chain_want w;
    eng_genread g = {0};
    eng_chain_of_db(&w, &h, o->edb_path, gen);
    link_previous(v, &h, o->edb_path, o->log_dir, base, gen, &w);
    rc = eng_gen_continues(v, path, &w, &g, NULL);
    char next[4200];
    if (!rc && !eng_log_path(next, sizeof next, o->log_dir, base, gen + 1) &&
        v->exists(v, next) == 1) {
        /* A generation copied again after its successor: the successor says where it ends. */
        eng_chain_want after = w;
        eng_chain_follow(&after, path, &g);
        rc = eng_chain_check_ahead(v, &after, next, 1);
    }
    if (rc)
        rc = om_err_ctx(rc, "inspecting log generation %u of passive copy %s", gen, o->edb_path);
    else if (out) {
        out->gen = g.hdr.gen;
        out->created = g.hdr.created;
        out->prev_created = g.hdr.prev_created;
        out->len = g.len;
        out->prev_end = g.hdr.prev_end;
        out->prev_checked = w.have_prev;
        out->torn_slot = g.torn_slot;
        out->log_sig = g.hdr.log_sig;
        out->db_sig = g.hdr.db_sig;
    }
    eng_gen_free(&g);
    return rc;
}
