/* A log folder: the generations of one base name in it (eng_log_list_gens, the sorted stream
 * of eng_stream_list / eng_stream_scan) and deleting the finished ones below a bound. Reads
 * only file names and log headers (eng_loghdr_read); the generations themselves are read by
 * logread.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "engine/log.h"

typedef struct gen_list {
    uint32_t *v;
    uint32_t n, cap;
} gen_list;

typedef struct list_ctx {
    const char *base;
    gen_list gl;
} list_ctx;

static int collect(void *arg, const char *name)
{
    list_ctx *c = arg;
    uint32_t g;
    if (!eng_parse_log_name(name, c->base, &g)) return 0;
    if (c->gl.n == c->gl.cap) {
        uint32_t nc = c->gl.cap ? c->gl.cap * 2 : 64;
        uint32_t *nv = realloc(c->gl.v, nc * sizeof *nv);
        if (!nv) return om_errf(OM_E_OutOfMemory, "listing logs: out of memory");
        c->gl.v = nv;
        c->gl.cap = nc;
    }
    c->gl.v[c->gl.n++] = g;
    return 0;
}

int eng_log_list_gens(om_vfs *v, const char *dir, const char *base, uint32_t **gens, uint32_t *n)
{
    list_ctx c = {base, {0}};
    int ex = v->exists(v, dir);
    if (ex == 0) {
        *gens = NULL;
        *n = 0;
        return 0;
    }
    int rc = ex < 0 ? ex : v->list(v, dir, collect, &c);
    if (rc) {
        free(c.gl.v);
        return rc;
    }
    *gens = c.gl.v;
    *n = c.gl.n;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* E00.log: whether it is there, and the generation its header holds. */
static int read_cur(eng_stream *s)
{
    char p[4200];
    eng_cur_log_path(p, sizeof p, s->dir, s->base);
    int ex = s->vfs->exists(s->vfs, p);
    if (ex <= 0) return ex;
    s->cur_present = 1;
    eng_loghdr h;
    int rc = eng_loghdr_read(s->vfs, p, &h);
    if (rc) {
        s->cur_err = rc;
        snprintf(s->cur_detail, sizeof s->cur_detail, "%s", om_err_detail());
        om_err_clear();
        return 0;
    }
    s->cur_holds = h.gen;
    if (s->n && s->gens[s->n - 1] >= h.gen) {
        s->cur_err = OM_E_InvalidLogSequence;
        snprintf(s->cur_detail, sizeof s->cur_detail,
                 "%.4200s holds generation %u but generation %u is already finished", p, h.gen,
                 s->gens[s->n - 1]);
        return 0;
    }
    s->cur_gen = h.gen;
    return 0;
}

int eng_stream_scan(om_vfs *v, const char *dir, const char *base, eng_stream *s)
{
    memset(s, 0, sizeof *s);
    s->vfs = v;
    if (snprintf(s->dir, sizeof s->dir, "%s", dir) >= (int)sizeof s->dir)
        return om_errf(OM_E_InvalidPath, "path too long: %s", dir);
    snprintf(s->base, sizeof s->base, "%s", base);
    int rc = eng_log_list_gens(v, dir, base, &s->gens, &s->n);
    if (!rc && s->n) qsort(s->gens, s->n, sizeof *s->gens, cmp_u32);
    if (!rc) rc = read_cur(s);
    if (rc) eng_stream_free(s);
    return rc;
}

int eng_stream_list(om_vfs *v, const char *dir, const char *base, eng_stream *s)
{
    int rc = eng_stream_scan(v, dir, base, s);
    if (!rc && s->cur_err) {
        rc = om_errf(s->cur_err, "%s", s->cur_detail);
        eng_stream_free(s);
    }
    return rc;
}

void eng_stream_free(eng_stream *s)
{
    free(s->gens);
    s->gens = NULL;
    s->n = 0;
}

uint32_t eng_stream_last(const eng_stream *s)
{
    return s->cur_gen ? s->cur_gen : s->n ? s->gens[s->n - 1] : 0;
}

uint32_t eng_stream_first(const eng_stream *s)
{
    return s->n ? s->gens[0] : s->cur_gen;
}

int eng_stream_has(const eng_stream *s, uint32_t g)
{
    if (g == 0) return 0;
    if (g == s->cur_gen) return 1;
    if (s->n == 0) return 0;
    return bsearch(&g, s->gens, s->n, sizeof *s->gens, cmp_u32) != NULL;
}

void eng_stream_path(const eng_stream *s, uint32_t g, char *p, size_t n)
{
    if (g == s->cur_gen)
        eng_cur_log_path(p, n, s->dir, s->base);
    else
        eng_log_path(p, n, s->dir, s->base, g);
}

int eng_log_delete_below(om_vfs *v, const char *dir, const char *base, uint32_t below,
                         const eng_sig *log_sig, uint32_t *deleted)
{
    uint32_t *gens = NULL, n = 0, cnt = 0;
    int rc = eng_log_list_gens(v, dir, base, &gens, &n);
    char p[4200];
    for (uint32_t i = 0; i < n && !rc; i++) {
        if (gens[i] >= below) continue;
        eng_log_path(p, sizeof p, dir, base, gens[i]);
        /* A name is not proof: a file the stream did not write (another database's .edb
         * named like a generation, a log of another stream) is never deleted. */
        if (log_sig && !eng_loghdr_is(v, p, gens[i], log_sig)) {
            om_warn("%s is named as generation %u of this log but is not one: left in place", p,
                    gens[i]);
            continue;
        }
        rc = v->unlink(v, p);
        if (!rc) cnt++;
    }
    if (!rc && cnt) rc = v->sync_dir(v, dir);
    free(gens);
    if (deleted) *deleted = cnt;
    return rc;
}
