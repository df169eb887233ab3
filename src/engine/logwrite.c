/* The log writer: append, group commit, generation roll, reserve logs. Invariants and the
 * roll sequence are at the top of log.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "engine/log.h"

typedef struct genmap {
    uint64_t lsn; /* LSN at which generation gen starts */
    uint32_t gen;
} genmap;

struct eng_log {
    eng_log_cfg cfg;
    char dir[4096], base[4];
    pthread_mutex_t mu;
    pthread_cond_t cond;
    /* Appended, not yet taken by a flusher. Guarded by mu. */
    uint8_t *buf;
    uint32_t buf_len, buf_cap;
    uint64_t appended, flushed; /* LSNs */
    int flushing, fatal, disk_full;
    int finished; /* eng_log_finish: the current generation is closed, nothing more is written */
    /* Owned by the flusher (flushing == 1). */
    uint8_t *wbuf, *slots;
    uint32_t wbuf_cap;
    om_file *cur;
    uint32_t gen;
    uint16_t next_slot;
    uint32_t stream_off;
    uint64_t wlsn; /* LSN just past what the flusher has written (gen starts map from it) */
    uint64_t created;
    eng_lgpos checkpoint;
    genmap *map;
    uint32_t nmap, map_cap;
    uint64_t st_flushes, st_bytes, st_slots;
};

static int path_of(eng_log *l, char *out, size_t n, int which, uint32_t gen)
{
    switch (which) {
    case 0:
        return eng_cur_log_path(out, n, l->dir, l->base);
    case 1:
        return eng_tmp_log_path(out, n, l->dir, l->base);
    default:
        return eng_log_path(out, n, l->dir, l->base, gen);
    }
}

int eng_log_make_reserves(om_vfs *v, const char *dir, const char *base)
{
    char p[4200];
    for (int i = 1; i <= 2; i++) {
        int rc = eng_res_log_path(p, sizeof p, dir, base, i);
        if (rc) return rc;
        int ex = v->exists(v, p);
        if (ex < 0) return ex;
        if (ex) continue;
        rc = om_create_zeroed(v, p, ENG_LOG_SIZE);
        if (rc) return rc;
    }
    return 0;
}

/* Makes sure a zero-filled E00tmp.log is ready for the next roll. When the disk is full, a
 * reserve log takes its place and the log reports disk-full. */
static int prepare_tmp(eng_log *l)
{
    om_vfs *v = l->cfg.vfs;
    char tmp[4200], res[4200];
    int rc = path_of(l, tmp, sizeof tmp, 1, 0);
    if (rc) return rc;
    int ex = v->exists(v, tmp);
    if (ex < 0) return ex;
    if (ex) return 0;
    rc = om_create_zeroed(v, tmp, ENG_LOG_SIZE);
    if (rc != OM_E_DiskFull) return rc;
    om_warn("log disk full in %s: using a reserve log; new transactions are refused until space "
            "returns",
            l->dir);
    l->disk_full = 1;
    for (int i = 2; i >= 1; i--) {
        if ((rc = eng_res_log_path(res, sizeof res, l->dir, l->base, i))) return rc;
        if (v->exists(v, res) != 1) continue;
        rc = v->rename(v, res, tmp);
        if (!rc) rc = v->sync_dir(v, l->dir);
        return rc;
    }
    return 0; /* no reserve left: the next roll fails with LogDiskFull */
}

/* The finished generation's name must be free, or hold that very generation (a roll cut short
 * by a crash): a file of anything else there (another database's, an administrator's) is never
 * replaced. */
static int finish_name_free(eng_log *l, uint32_t gen, const char *fin)
{
    om_vfs *v = l->cfg.vfs;
    if (v->exists(v, fin) != 1 || eng_loghdr_is(v, fin, gen, &l->cfg.log_sig)) return 0;
    return om_errf(OM_E_LogWriteFail,
                   "cannot finish log generation %u: %s exists and is not that generation of "
                   "this log (another file is at its name). HINT: move that file away, then "
                   "mount again",
                   gen, fin);
}

/* Starts generation gen (the flusher role or exclusive access is held). */
static int start_gen(eng_log *l, uint32_t gen, int rename_current, uint32_t prev_end)
{
    om_vfs *v = l->cfg.vfs;
    char cur[4200], tmp[4200], fin[4200];
    om_file *f = NULL;
    int rc;
    if (gen >= ENG_MAX_GEN)
        return om_errf(OM_E_LogSequenceEnd, "log generation %u is the last", gen);
    if ((rc = path_of(l, cur, sizeof cur, 0, 0)) || (rc = path_of(l, tmp, sizeof tmp, 1, 0)) ||
        (rc = path_of(l, fin, sizeof fin, 2, gen - 1)))
        return rc;
    if (v->exists(v, tmp) != 1) {
        rc = prepare_tmp(l);
        if (rc) return rc;
        if (v->exists(v, tmp) != 1)
            return om_errf(OM_E_LogDiskFull,
                           "cannot start log generation %u in %s: the disk is full and no reserve "
                           "log is left. HINT: free space on that filesystem, then mount again",
                           gen, l->dir);
    }
    eng_loghdr h = {0};
    h.version = ENG_FORMAT_VERSION;
    h.gen = gen;
    h.log_sig = l->cfg.log_sig;
    h.created = om_now_ns();
    if (h.created <= l->created) h.created = l->created + 1; /* the chain needs distinct times */
    h.prev_created = l->created;
    h.checkpoint = l->checkpoint;
    h.flags = l->cfg.flags;
    memcpy(h.base, l->base, 4);
    h.page_size = ENG_PAGE_SIZE;
    h.db_id = l->cfg.db_id;
    h.db_sig = l->cfg.db_sig;
    h.prev_end = prev_end;
    eng_loghdr_encode(&h, l->slots);
    rc = om_open(v, tmp, 0, &f);
    if (!rc) rc = om_pwrite(f, l->slots, ENG_SLOT_SIZE, 0);
    if (!rc) rc = om_sync(f);
    if (!rc && rename_current) rc = finish_name_free(l, gen - 1, fin);
    if (!rc && rename_current) rc = v->rename(v, cur, fin);
    if (!rc) rc = v->rename(v, tmp, cur);
    if (!rc) rc = v->sync_dir(v, l->dir);
    if (rc) {
        om_close(f);
        return rc;
    }
    if (l->cur) om_close(l->cur);
    /* The file state is the flusher's own; gen and the map are also read by other threads
     * (eng_log_gen, eng_log_lgpos) under the mutex. */
    pthread_mutex_lock(&l->mu);
    l->cur = f;
    l->gen = gen;
    l->next_slot = 1;
    l->stream_off = 0;
    l->created = h.created;
    if (l->nmap == l->map_cap) {
        uint32_t nc = l->map_cap ? l->map_cap * 2 : 16;
        genmap *m = realloc(l->map, nc * sizeof *m);
        if (!m) {
            pthread_mutex_unlock(&l->mu);
            return om_errf(OM_E_OutOfMemory, "log: out of memory");
        }
        l->map = m;
        l->map_cap = nc;
    }
    l->map[l->nmap++] = (genmap){l->wlsn, gen};
    pthread_mutex_unlock(&l->mu);
    /* A failure to prepare the next file is not fatal here: the roll that needs it reports it. */
    rc = prepare_tmp(l);
    if (rc) om_warn("preparing the next log file in %s: %s", l->dir, om_err_detail());
    return 0;
}

/* Writes `take` bytes of records into fresh slots of the current generation and syncs. */
static int write_chunk(eng_log *l, const uint8_t *p, uint32_t take)
{
    uint16_t first = l->next_slot, n = 0;
    uint32_t done = 0;
    while (done < take) {
        uint32_t dl = take - done < ENG_SEG_PAYLOAD ? take - done : ENG_SEG_PAYLOAD;
        eng_seghdr h = {.gen = l->gen,
                        .slot = (uint16_t)(first + n),
                        .data_len = (uint16_t)dl,
                        .stream_off = l->stream_off + done,
                        .flush_first = first,
                        .flags = 0};
        eng_seg_encode(&h, p + done, l->slots + (size_t)n * ENG_SLOT_SIZE);
        done += dl;
        n++;
    }
    int rc =
        om_pwrite(l->cur, l->slots, (size_t)n * ENG_SLOT_SIZE, (uint64_t)first * ENG_SLOT_SIZE);
    if (!rc) rc = om_sync(l->cur);
    if (rc) return om_err_ctx(OM_E_LogWriteFail, "writing log generation %u", l->gen);
    l->next_slot = (uint16_t)(first + n);
    l->stream_off += take;
    l->wlsn += take;
    pthread_mutex_lock(&l->mu);
    l->st_flushes++;
    l->st_bytes += take;
    l->st_slots += n;
    pthread_mutex_unlock(&l->mu);
    return 0;
}

static int roll_now(eng_log *l)
{
    return start_gen(l, l->gen + 1, 1, l->stream_off);
}

/* Writes a taken buffer out, rolling whenever the next record does not fit. */
static int write_out(eng_log *l, const uint8_t *p, uint32_t len)
{
    uint32_t pos = 0;
    while (pos < len) {
        uint32_t cap = (uint32_t)(ENG_LOG_SLOTS - l->next_slot) * ENG_SEG_PAYLOAD, take = 0;
        while (pos + take < len) {
            uint32_t rl = om_get32(p + pos + take + 4);
            if (take + rl > cap) break;
            take += rl;
        }
        if (take) {
            int rc = write_chunk(l, p + pos, take);
            if (rc) return rc;
            pos += take;
        }
        if (pos < len) {
            if (!take && l->next_slot == 1)
                return om_errf(OM_E_Internal, "log record of %u bytes is larger than a generation",
                               om_get32(p + pos + 4));
            int rc = roll_now(l);
            if (rc) return rc;
        }
    }
    return 0;
}

int eng_log_start(const eng_log_cfg *cfg, uint32_t gen, int rename_current, uint64_t prev_created,
                  uint32_t prev_end, eng_lgpos checkpoint, eng_log **out)
{
    eng_log *l = calloc(1, sizeof *l);
    if (!l) return om_errf(OM_E_OutOfMemory, "log: out of memory");
    l->cfg = *cfg;
    snprintf(l->dir, sizeof l->dir, "%s", cfg->dir);
    snprintf(l->base, sizeof l->base, "%s", cfg->base);
    l->cfg.dir = l->dir;
    l->cfg.base = l->base;
    l->created = prev_created;
    l->checkpoint = checkpoint;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->slots = aligned_alloc(4096, ENG_LOG_SIZE);
    int rc = l->slots ? 0 : om_errf(OM_E_OutOfMemory, "log: out of memory");
    if (!rc && !cfg->no_reserve) rc = eng_log_make_reserves(cfg->vfs, l->dir, l->base);
    if (rc == OM_E_DiskFull) {
        l->disk_full = 1;
        rc = 0;
    }
    if (!rc) rc = start_gen(l, gen, rename_current, prev_end);
    if (rc) {
        eng_log_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int eng_log_append(eng_log *l, const uint8_t *recs, uint32_t len, uint64_t *end_lsn)
{
    pthread_mutex_lock(&l->mu);
    int rc = l->fatal;
    if (!rc && l->finished)
        rc =
            om_errf(OM_E_Internal, "log %s in %s: generation %u is closed: nothing more is written",
                    l->base, l->dir, l->gen);
    if (!rc && l->buf_len + len > l->buf_cap) {
        uint32_t nc = l->buf_cap ? l->buf_cap : 65536;
        while (nc < l->buf_len + len)
            nc *= 2;
        uint8_t *nb = realloc(l->buf, nc);
        if (!nb)
            rc = om_errf(OM_E_OutOfMemory, "log buffer: out of memory");
        else {
            l->buf = nb;
            l->buf_cap = nc;
        }
    }
    if (!rc) {
        memcpy(l->buf + l->buf_len, recs, len);
        l->buf_len += len;
        l->appended += len;
        *end_lsn = l->appended;
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

/* Takes the flusher role and the pending buffer, runs fn, publishes the result. Called with
 * mu held; returns with mu held. */
static int flush_round(eng_log *l, int roll_after)
{
    l->flushing = 1;
    uint8_t *tb = l->buf;
    uint32_t tl = l->buf_len, tc = l->buf_cap;
    l->buf = l->wbuf;
    l->buf_cap = l->wbuf_cap;
    l->buf_len = 0;
    uint64_t end = l->appended;
    pthread_mutex_unlock(&l->mu);
    int rc = write_out(l, tb, tl);
    if (!rc && roll_after) rc = roll_now(l);
    pthread_mutex_lock(&l->mu);
    l->wbuf = tb;
    l->wbuf_cap = tc;
    l->flushing = 0;
    if (rc) {
        l->fatal = rc == OM_E_LogDiskFull ? OM_E_LogDiskFull : OM_E_FatalIO;
        om_error("log of %s in %s: %s; the database refuses writes until it is recovered", l->base,
                 l->dir, om_err_detail());
    } else
        l->flushed = end;
    pthread_cond_broadcast(&l->cond);
    return rc;
}

int eng_log_flush_to(eng_log *l, uint64_t lsn)
{
    pthread_mutex_lock(&l->mu);
    while (l->flushed < lsn && !l->fatal) {
        if (l->flushing)
            pthread_cond_wait(&l->cond, &l->mu);
        else
            flush_round(l, 0);
    }
    int rc = l->fatal;
    pthread_mutex_unlock(&l->mu);
    if (rc && rc != OM_E_LogDiskFull)
        return om_errf(OM_E_FatalIO, "log %s in %s: an earlier write or sync failed", l->base,
                       l->dir);
    if (rc)
        return om_errf(rc, "log %s in %s: the disk is full and no reserve log is left", l->base,
                       l->dir);
    return 0;
}

int eng_log_roll(eng_log *l)
{
    pthread_mutex_lock(&l->mu);
    while (l->flushing)
        pthread_cond_wait(&l->cond, &l->mu);
    int rc = l->fatal;
    if (!rc) rc = flush_round(l, 1);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int eng_log_finish(eng_log *l, uint32_t *gen)
{
    pthread_mutex_lock(&l->mu);
    while (l->flushing)
        pthread_cond_wait(&l->cond, &l->mu);
    int rc = l->fatal;
    if (!rc && l->buf_len) rc = flush_round(l, 0);
    if (!rc) l->flushing = 1; /* the files are the flusher's */
    pthread_mutex_unlock(&l->mu);
    if (rc)
        return om_errf(OM_E_FatalIO, "log %s in %s: an earlier write or sync failed", l->base,
                       l->dir);
    /* Everything is synced already (each flush syncs): only the name changes, and the folder is
     * synced so that the name is durable. A crash before that leaves E00.log, which the next
     * mount finishes as after any dismount. */
    om_vfs *v = l->cfg.vfs;
    char cur[4200], fin[4200];
    rc = path_of(l, cur, sizeof cur, 0, 0);
    if (!rc) rc = path_of(l, fin, sizeof fin, 2, l->gen);
    if (!rc) rc = finish_name_free(l, l->gen, fin);
    if (!rc) rc = v->rename(v, cur, fin);
    if (!rc) rc = v->sync_dir(v, l->dir);
    pthread_mutex_lock(&l->mu);
    l->flushing = 0;
    if (!rc) l->finished = 1;
    *gen = l->gen;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

uint64_t eng_log_end_lsn(eng_log *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t v = l->appended;
    pthread_mutex_unlock(&l->mu);
    return v;
}

uint64_t eng_log_durable_lsn(eng_log *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t v = l->flushed;
    pthread_mutex_unlock(&l->mu);
    return v;
}

eng_lgpos eng_log_lgpos(eng_log *l, uint64_t lsn)
{
    pthread_mutex_lock(&l->mu);
    uint32_t i = l->nmap - 1;
    while (i > 0 && l->map[i].lsn > lsn)
        i--;
    eng_lgpos p = {l->map[i].gen, (uint32_t)(lsn - l->map[i].lsn)};
    pthread_mutex_unlock(&l->mu);
    return p;
}

uint32_t eng_log_written(eng_log *l)
{
    /* The flusher's own field: read with the log quiet (the caller holds writes). */
    pthread_mutex_lock(&l->mu);
    uint32_t n = (uint32_t)l->next_slot * ENG_SLOT_SIZE;
    pthread_mutex_unlock(&l->mu);
    return n;
}

uint32_t eng_log_gen(eng_log *l)
{
    pthread_mutex_lock(&l->mu);
    uint32_t g = l->gen;
    pthread_mutex_unlock(&l->mu);
    return g;
}

void eng_log_set_checkpoint(eng_log *l, eng_lgpos c)
{
    pthread_mutex_lock(&l->mu);
    l->checkpoint = c;
    pthread_mutex_unlock(&l->mu);
}

int eng_log_fatal(eng_log *l)
{
    pthread_mutex_lock(&l->mu);
    int v = l->fatal;
    pthread_mutex_unlock(&l->mu);
    return v;
}

int eng_log_disk_full(eng_log *l)
{
    pthread_mutex_lock(&l->mu);
    int v = l->disk_full;
    pthread_mutex_unlock(&l->mu);
    return v;
}

int eng_log_retry_space(eng_log *l)
{
    pthread_mutex_lock(&l->mu);
    while (l->flushing)
        pthread_cond_wait(&l->cond, &l->mu);
    l->flushing = 1; /* the files are the flusher's */
    pthread_mutex_unlock(&l->mu);
    int rc = l->cfg.no_reserve ? 0 : eng_log_make_reserves(l->cfg.vfs, l->dir, l->base);
    if (!rc) rc = prepare_tmp(l);
    char tmp[4200];
    if (!rc) rc = path_of(l, tmp, sizeof tmp, 1, 0);
    if (!rc && l->cfg.vfs->exists(l->cfg.vfs, tmp) != 1) rc = OM_E_DiskFull;
    pthread_mutex_lock(&l->mu);
    l->flushing = 0;
    if (!rc) l->disk_full = 0;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mu);
    if (rc == OM_E_DiskFull)
        return om_errf(OM_E_LogDiskFull,
                       "log disk full: %s has no room for the next log file. HINT: free space on "
                       "that filesystem; writes resume by themselves",
                       l->dir);
    return rc;
}

void eng_log_get_stats(eng_log *l, uint64_t *flushes, uint64_t *bytes, uint64_t *slots)
{
    pthread_mutex_lock(&l->mu);
    *flushes = l->st_flushes;
    *bytes = l->st_bytes;
    *slots = l->st_slots;
    pthread_mutex_unlock(&l->mu);
}

void eng_log_free(eng_log *l)
{
    if (!l) return;
    om_close(l->cur);
    free(l->buf);
    free(l->wbuf);
    free(l->slots);
    free(l->map);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cond);
    free(l);
}
