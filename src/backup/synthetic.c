/* A synthetic full (synthetic.h; docs/design.md, "Change tracking and synthetic fulls"). */
#include "backup/synthetic.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/pool.h"
#include "base/proto.h"
#include "engine/types.h"

int bk_synth_decide(json_t *sets, const char *db_id, json_t *md, unsigned every, int force,
                    json_t **prev, uint32_t **runs, uint32_t *nruns, int *since, char *why,
                    size_t wn)
{
    json_t *cm = json_object_get(md, "changemap"), *s, *p = NULL;
    size_t i;
    *prev = NULL;
    *runs = NULL;
    *nruns = 0;
    *since = -1;
    json_array_foreach(sets, i, s)
    {
        if (!strcmp(om_json_str_or(s, "type", ""), "full") && !json_object_get(s, "damaged") &&
            !strcmp(om_json_str_or(json_object_get(s, "database"), "id", ""), db_id))
            p = s;
    }
    json_t *pcm = json_object_get(p, "changemap");
    if (p) *since = (int)om_json_int_or(pcm, "fulls_since_read_all", 0);
    const char *pepoch = om_json_str_or(pcm, "epoch", NULL);
    const char *pid = om_json_str_or(p, "id", "?");
    const char *ranges =
        pepoch ? json_string_value(json_object_get(json_object_get(cm, "since"), pepoch)) : NULL;
    if (force)
        snprintf(why, wn, "asked to read every page (--read-all)");
    else if (every <= 1)
        snprintf(why, wn, "every full reads every page (read_all_every = 1)");
    else if (!json_is_object(cm))
        snprintf(why, wn,
                 "the writer keeps no change map (a passive copy's backup, or an older "
                 "store)");
    else if (json_object_get(cm, "untrusted"))
        snprintf(why, wn, "the change map cannot be trusted: %s",
                 om_json_str_or(cm, "untrusted", "?"));
    else if (!p)
        snprintf(why, wn, "this repository holds no earlier full backup of this database");
    else if (*since + 1 >= (int)every)
        snprintf(why, wn,
                 "every %u fulls one reads every page (read_all_every); the %d before it reused "
                 "pages",
                 every, *since);
    else if (!pepoch)
        snprintf(why, wn, "the previous full (set %.12s) has no change-map epoch", pid);
    else if (!ranges && json_object_get(cm, "started_again"))
        snprintf(why, wn,
                 "the change map cannot be trusted for the previous full (set %.12s): it was "
                 "started again: %s",
                 pid, om_json_str_or(cm, "started_again", "?"));
    else if (!ranges)
        snprintf(why, wn,
                 "the change map does not know the previous full's freeze (set %.12s): a full "
                 "went elsewhere since, or the map was started again",
                 pid);
    else {
        size_t cap = 1;
        for (const char *c = ranges; *c; c++)
            cap += *c == ',';
        uint32_t *v = malloc(2 * cap * sizeof *v);
        const char *c = ranges;
        size_t k = 0;
        while (v && *c && k < cap) {
            unsigned a, n;
            int used = 0;
            if (sscanf(c, "%u:%u%n", &a, &n, &used) != 2) break;
            v[2 * k] = a;
            v[2 * k + 1] = n;
            k++;
            c += used;
            if (*c == ',') c++;
        }
        if (!v || *c) {
            free(v);
            snprintf(why, wn, "the writer's list of changed pages is malformed");
            return 0;
        }
        *runs = v;
        *nruns = (uint32_t)k;
        *prev = p;
        return 1;
    }
    return 0;
}

/* ---- the regions ---- */

typedef struct piece {
    bk_piece p;
    uint32_t blen; /* the block's length when known (0: unknown) */
} piece;

typedef struct synth {
    const bk_synth_in *in;
    bk_synth_out *out;
    int fd;
    uint32_t bs, ppr;
    const char *pblocks; /* the previous entry's ids */
    json_t *ppieces;     /* its pieces (NULL: every region whole) */
    size_t pregions;
    uint64_t psize;
    uint8_t *changed; /* per file page */
    piece *v;         /* the region being built (each worker's own) */
    size_t nv, cap;
    pthread_mutex_t *mu; /* what the pool's workers share (out, the pieces object, the check's
                            callbacks) is under it */
} synth;

static void shared_lock(synth *s)
{
    pthread_mutex_lock(s->mu);
}

static void shared_unlock(synth *s)
{
    pthread_mutex_unlock(s->mu);
}

static int push(synth *s, const uint8_t id[BK_ID_LEN], uint32_t off, uint32_t len, uint32_t blen)
{
    if (s->nv && !memcmp(s->v[s->nv - 1].p.id, id, BK_ID_LEN) &&
        s->v[s->nv - 1].p.off + s->v[s->nv - 1].p.len == off) {
        s->v[s->nv - 1].p.len += len; /* one slice: the next bytes of the same block */
        return 0;
    }
    if (s->nv == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 16;
        piece *x = realloc(s->v, nc * sizeof *x);
        if (!x) return om_errf(OM_E_OutOfMemory, "out of memory");
        s->v = x;
        s->cap = nc;
    }
    s->v[s->nv++] = (piece){{.off = off, .len = len}, blen};
    memcpy(s->v[s->nv - 1].p.id, id, BK_ID_LEN);
    return 0;
}

/* Bytes [a, b) of the previous entry's region r, as pieces. */
static int reuse(synth *s, size_t r, uint32_t a, uint32_t b)
{
    uint32_t prl =
        s->psize - (uint64_t)r * s->bs < s->bs ? (uint32_t)(s->psize - (uint64_t)r * s->bs) : s->bs;
    char key[24], hex[65];
    snprintf(key, sizeof key, "%zu", r);
    snprintf(hex, sizeof hex, "%.64s", s->pblocks + 64 * r);
    const char *ps = json_string_value(json_object_get(s->ppieces, key));
    bk_piece one, *v = &one;
    size_t n = 1;
    int rc = 0;
    if (ps)
        rc = bk_pieces_parse(ps, prl, &v, &n);
    else if (bk_unhex(hex, one.id, BK_ID_LEN))
        rc = om_errf(OM_E_RepositoryCorrupt, "the previous full's block %zu has a bad id", r);
    one.off = 0;
    one.len = prl;
    uint32_t at = 0;
    for (size_t k = 0; k < n && !rc; at += v[k].len, k++) {
        uint32_t lo = a > at ? a : at, hi = b < at + v[k].len ? b : at + v[k].len;
        if (lo < hi) rc = push(s, v[k].id, v[k].off + (lo - at), hi - lo, ps ? 0 : prl);
    }
    if (v != &one) free(v);
    return rc;
}

/* File pages [fp, fp + n) read, checked and stored as one block. */
static int read_run(synth *s, uint64_t fp, uint32_t n)
{
    size_t len = (size_t)n * ENG_PAGE_SIZE;
    uint64_t off = fp * ENG_PAGE_SIZE;
    uint8_t *buf = malloc(len), id[BK_ID_LEN];
    ssize_t got = buf ? pread(s->fd, buf, len, (off_t)off) : -1;
    int rc = !buf                  ? om_errf(OM_E_OutOfMemory, "out of memory")
             : got != (ssize_t)len ? om_errf(OM_E_DiskIO, "reading %s at %llu: short read",
                                             s->in->src, (unsigned long long)off)
                                   : 0;
    if (!rc && s->in->check) {
        shared_lock(s);
        rc = s->in->check(s->in->check_arg, off, buf, len);
        shared_unlock(s);
    }
    int isnew = 0;
    if (!rc) rc = bk_put_block(s->in->w, buf, len, id, &isnew);
    free(buf);
    if (rc) return rc;
    __atomic_fetch_add(s->in->bytes_read, len, __ATOMIC_RELAXED);
    shared_lock(s);
    if (isnew) s->out->stored += len;
    for (uint64_t p = fp; p < fp + n; p++)
        if (p >= 2 && p - 1 <= s->in->db_pages) s->out->pages_now++;
    shared_unlock(s);
    return push(s, id, 0, (uint32_t)len, (uint32_t)len);
}

/* Region r: the previous entry's reference when none of its pages changed, else its changed
 * runs read and the rest sliced from the previous entry. ids[r] and, when it is not one whole
 * block, pieces["r"]. */
static int region(synth *s, size_t r, uint8_t id[BK_ID_LEN], json_t *pieces)
{
    uint64_t fp0 = (uint64_t)r * s->ppr, fpages = s->in->size / ENG_PAGE_SIZE;
    uint32_t npg = fpages - fp0 < s->ppr ? (uint32_t)(fpages - fp0) : s->ppr;
    uint32_t rl = npg * ENG_PAGE_SIZE;
    char key[24], hex[65];
    snprintf(key, sizeof key, "%zu", r);
    int any = 0;
    for (uint32_t k = 0; k < npg && !any; k++)
        any = s->changed[fp0 + k];
    uint32_t prl = 0;
    if (r < s->pregions)
        prl = s->psize - (uint64_t)r * s->bs < s->bs ? (uint32_t)(s->psize - (uint64_t)r * s->bs)
                                                     : s->bs;
    if (!any && prl == rl) {
        shared_lock(s);
        s->in->vouch(s->in->check_arg, fp0, npg);
        json_t *ps = json_object_get(s->ppieces, key);
        if (ps) json_object_set(pieces, key, ps);
        shared_unlock(s);
        snprintf(hex, sizeof hex, "%.64s", s->pblocks + 64 * r);
        return bk_unhex(hex, id, BK_ID_LEN)
                   ? om_errf(OM_E_RepositoryCorrupt, "the previous full's block %zu has a bad id",
                             r)
                   : 0;
    }
    s->nv = 0;
    int rc = 0;
    for (uint32_t k = 0; k < npg && !rc;) {
        int ch = s->changed[fp0 + k] || (uint64_t)(k + 1) * ENG_PAGE_SIZE > prl;
        uint32_t e = k + 1;
        while (e < npg && (s->changed[fp0 + e] || (uint64_t)(e + 1) * ENG_PAGE_SIZE > prl) == ch)
            e++;
        if (!ch) {
            shared_lock(s);
            s->in->vouch(s->in->check_arg, fp0 + k, e - k);
            shared_unlock(s);
        }
        rc = ch ? read_run(s, fp0 + k, e - k) : reuse(s, r, k * ENG_PAGE_SIZE, e * ENG_PAGE_SIZE);
        k = e;
    }
    if (rc) return rc;
    if (s->nv == 1 && s->v[0].p.off == 0 && s->v[0].blen == rl) {
        memcpy(id, s->v[0].p.id, BK_ID_LEN); /* the region is one whole block */
        return 0;
    }
    size_t cap = s->nv * 90 + 1, len = 0;
    char *str = malloc(cap);
    if (!str) return om_errf(OM_E_OutOfMemory, "out of memory");
    for (size_t k = 0; k < s->nv; k++) {
        bk_hex(s->v[k].p.id, BK_ID_LEN, hex);
        len += (size_t)snprintf(str + len, cap - len, "%s%s:%u:%u", k ? "," : "", hex,
                                s->v[k].p.off, s->v[k].p.len);
    }
    rc = bk_pieces_id(s->in->repo, str, id);
    shared_lock(s);
    if (!rc) json_object_set_new(pieces, key, json_string(str));
    shared_unlock(s);
    free(str);
    return rc;
}

/* The regions on a pool (in->threads workers, at least one): each worker builds its regions in a
 * synth of its own (its pieces buffer), the rest shared as synth.mu says. */
typedef struct synth_run {
    const synth *s; /* the set-up state, shared */
    uint8_t (*ids)[BK_ID_LEN];
    json_t *pieces;
} synth_run;

static int region_begin(void *ctx, void **ws)
{
    const synth_run *run = ctx;
    synth *w = malloc(sizeof *w);
    if (!w) return om_errf(OM_E_OutOfMemory, "out of memory");
    *w = *run->s;
    w->v = NULL;
    w->nv = w->cap = 0;
    *ws = w;
    return 0;
}

static void region_end(void *ctx, void *ws)
{
    (void)ctx;
    synth *w = ws;
    free(w->v);
    free(w);
}

static int region_at(void *ctx, void *ws, size_t r)
{
    synth_run *run = ctx;
    return region(ws, r, run->ids[r], run->pieces);
}

/* 1 when region r of the previous entry refers to a block the repository holds only as copies
 * known damaged (damaged.json): its pages are then read again, never sliced from it. A region
 * whose pieces do not parse is left to reuse (), which fails on them. */
static int prev_region_damaged(synth *s, size_t r)
{
    char key[24], hex[65];
    uint8_t id[BK_ID_LEN];
    snprintf(key, sizeof key, "%zu", r);
    const char *ps = json_string_value(json_object_get(s->ppieces, key));
    if (!ps) {
        snprintf(hex, sizeof hex, "%.64s", s->pblocks + 64 * r);
        return !bk_unhex(hex, id, BK_ID_LEN) && !bk_block_usable(s->in->repo, id);
    }
    uint32_t prl =
        s->psize - (uint64_t)r * s->bs < s->bs ? (uint32_t)(s->psize - (uint64_t)r * s->bs) : s->bs;
    bk_piece *v = NULL;
    size_t n = 0;
    int bad = 0;
    if (bk_pieces_parse(ps, prl, &v, &n)) {
        om_err_clear();
        return 0;
    }
    for (size_t k = 0; k < n && !bad; k++)
        bad = !bk_block_usable(s->in->repo, v[k].id);
    free(v);
    return bad;
}

/* Marks every page of the previous entry's regions that refer to a damaged block as changed. */
static void reread_damaged(synth *s, uint64_t fpages)
{
    for (size_t r = 0; r < s->pregions; r++) {
        if (!prev_region_damaged(s, r)) continue;
        s->out->regions_reread++;
        for (uint64_t p = (uint64_t)r * s->ppr; p < (uint64_t)(r + 1) * s->ppr && p < fpages; p++)
            s->changed[p] = 1;
    }
}

int bk_synth_store(const bk_synth_in *in, bk_synth_out *out)
{
    memset(out, 0, sizeof *out);
    synth s = {.in = in, .out = out, .bs = bk_repo_block_size(in->repo)};
    s.ppr = s.bs / ENG_PAGE_SIZE;
    s.pblocks = om_json_str_or(in->prev_file, "blocks", "");
    s.ppieces = json_object_get(in->prev_file, "pieces");
    s.psize = (uint64_t)om_json_int_or(in->prev_file, "size", 0);
    s.pregions = strlen(s.pblocks) / 64;
    uint64_t fpages = in->size / ENG_PAGE_SIZE;
    size_t nregions = (size_t)((in->size + s.bs - 1) / s.bs);
    if (s.bs % ENG_PAGE_SIZE || in->size % ENG_PAGE_SIZE || s.psize % ENG_PAGE_SIZE ||
        s.pregions != (s.psize + s.bs - 1) / s.bs || (s.ppieces && !json_is_object(s.ppieces)))
        return om_errf(OM_E_RepositoryCorrupt,
                       "%s: the previous full's entry (set %.12s) is not one a synthetic full can "
                       "build on",
                       in->name, in->prev_set);
    s.changed = calloc(fpages + 1, 1);
    uint8_t(*ids)[BK_ID_LEN] = calloc(nregions + 1, sizeof *ids);
    json_t *pieces = json_object();
    s.fd = open(in->src, O_RDONLY | O_CLOEXEC);
    int rc = !s.changed || !ids || !pieces ? om_errf(OM_E_OutOfMemory, "out of memory")
             : s.fd < 0                    ? om_errf(OM_E_FileNotFound, "cannot open %s", in->src)
                                           : 0;
    if (!rc) {
        /* The header pages always; the pages the map names (data page p is file page p + 1);
         * every page past the previous full's end. */
        s.changed[0] = s.changed[1 < fpages ? 1 : 0] = 1;
        for (uint32_t k = 0; k < in->nruns; k++)
            for (uint64_t p = (uint64_t)in->runs[2 * k] + 1;
                 p < (uint64_t)in->runs[2 * k] + 1 + in->runs[2 * k + 1] && p < fpages; p++)
                s.changed[p] = 1;
        for (uint64_t p = s.psize / ENG_PAGE_SIZE; p < fpages; p++)
            s.changed[p] = 1;
        reread_damaged(&s, fpages);
    }
    if (!rc) {
        /* Regions are independent: each is its previous entry's reference or its changed runs
         * read and stored with the rest sliced; their ids go to their own slots. One worker runs
         * them on this thread. */
        pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        s.mu = &mu;
        synth_run run = {.s = &s, .ids = ids, .pieces = pieces};
        om_pool pool = {.workers = in->threads > 1 ? in->threads : 1,
                        .ctx = &run,
                        .fn = region_at,
                        .worker_begin = region_begin,
                        .worker_end = region_end};
        rc = om_pool_run(&pool, nregions);
        pthread_mutex_destroy(&mu);
    }
    if (s.fd >= 0) close(s.fd);
    free(s.changed);
    free(s.v);
    out->pages_reused = in->db_pages > out->pages_now ? in->db_pages - out->pages_now : 0;
    if (!rc)
        rc = bk_set_add_file_regions(
            in->w, in->name, in->size, (const uint8_t(*)[BK_ID_LEN])ids, nregions, pieces,
            json_pack("{s:s, s:I, s:I, s:s}", "source", in->src, "pages_checked_now",
                      (json_int_t)out->pages_now, "pages_reused", (json_int_t)out->pages_reused,
                      "reused_from", in->prev_set));
    else
        json_decref(pieces);
    free(ids);
    return rc;
}
