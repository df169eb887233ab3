/* bk_repo_stats (stats.h): the sets' summaries and their chains (bk_plan); each set's files for
 * the blocks it uses (bk_file_refs: a synthetic full's slices of older sets' blocks too), each
 * block counted once, for the database of the oldest set that uses it; the index for what every
 * block takes; and a walk of packs/ for what is on disk: the sum of the files there, whatever
 * the index says, so leftovers of killed writers count until expire removes them. */
#include "backup/stats.h"

#include <stdlib.h>
#include <string.h>

#include "backup/chain.h"
#include "backup/repo_internal.h"
#include "backup/retention.h"
#include "base/error.h"
#include "base/proto.h"
#include "base/time.h"

typedef struct usage {
    bk_repo *r;
    om_dir *d;
    uint64_t bytes, files;
    /* packs the index lists: found on disk (present[i], i < npacks) and their bytes; the rest
     * of the files are no index's (leftovers) */
    uint8_t *present;
    uint32_t npacks;
    uint64_t indexed;
} usage;

static int count_file(void *arg, const char *name)
{
    usage *u = arg;
    om_file *f = NULL;
    uint64_t size = 0;
    if (om_kind_at(u->d, name) == OM_KIND_FILE && !om_open_at(u->d, name, OM_O_RDONLY, &f) &&
        !om_fsize(f, &size)) {
        u->bytes += size;
        u->files++;
        pthread_rwlock_rdlock(&u->r->lk);
        int64_t k = bk_pack_find(u->r, name);
        pthread_rwlock_unlock(&u->r->lk);
        if (k >= 0 && (uint64_t)k < u->npacks) {
            u->present[k] = 1;
            u->indexed += size;
        }
    }
    om_close(f);
    om_err_clear();
    return 0;
}

static int count_dir(void *arg, const char *name)
{
    usage *u = arg;
    char sub[16];
    /* packs/ab only: a link there is nobody's packs */
    if (strlen(name) != 2 || om_kind_at(u->d, name) != OM_KIND_DIR) return 0;
    snprintf(sub, sizeof sub, "packs/%s", name);
    usage in = *u;
    in.bytes = in.files = in.indexed = 0;
    int rc = bk_dir_open(u->r, sub, &in.d);
    if (!rc) rc = om_list_at(in.d, count_file, &in);
    om_dir_close(in.d);
    u->bytes += in.bytes;
    u->files += in.files;
    u->indexed += in.indexed;
    return rc;
}

/* u->r and u->present (room for u->npacks) set: fills the rest. */
static int on_disk(usage *u)
{
    int rc = bk_dir_open(u->r, "packs", &u->d);
    if (!rc) rc = om_list_at(u->d, count_dir, u);
    om_dir_close(u->d);
    u->d = NULL;
    return rc;
}

/* The per-database entry for key, made on first use. */
static json_t *db_entry(json_t *dbs, json_t *d)
{
    const char *name = json_is_string(d) ? json_string_value(d) : om_json_str_or(d, "name", "");
    const char *id = json_is_string(d) ? "" : om_json_str_or(d, "id", "");
    const char *key = *id ? id : name;
    json_t *e = json_object_get(dbs, key);
    if (!e) {
        e = json_pack("{s:{s:s, s:s}, s:i, s:i, s:i, s:n, s:I, s:I, s:I}", "database", "id", id,
                      "name", name, "sets", 0, "fulls", 0, "chains", 0, "newest", "bytes",
                      (json_int_t)0, "bytes_stored", (json_int_t)0, "bytes_referenced",
                      (json_int_t)0);
        json_object_set_new(dbs, key, e);
        json_object_set_new(e, "newest_ns", json_integer(0));
    }
    return e;
}

static void add(json_t *e, const char *k, int64_t v)
{
    json_object_set_new(e, k, json_integer(om_json_int_or(e, k, 0) + v));
}

/* The set's counts into its databases' entries; returns those entries (a new array). */
static json_t *count_set(json_t *dbs, json_t *s)
{
    json_t *entries = json_array();
    json_t *all = json_array(), *one = json_object_get(s, "database"), *d;
    if (one) json_array_append(all, one);
    if (json_is_array(json_object_get(s, "databases")))
        json_array_extend(all, json_object_get(s, "databases"));
    const char *type = om_json_str_or(s, "type", "");
    json_t *chain = json_object_get(s, "chain");
    int base = json_is_true(json_object_get(s, "restorable")) && json_array_size(chain) == 1;
    uint64_t t = bk_set_time_ns(s);
    size_t i;
    json_array_foreach(all, i, d)
    {
        json_t *e = db_entry(dbs, d);
        json_array_append(entries, e);
        add(e, "sets", 1);
        add(e, "fulls", !strcmp(type, "full"));
        add(e, "chains", base);
        add(e, "bytes", om_json_int_or(s, "bytes", 0));
        if (t > (uint64_t)om_json_int_or(e, "newest_ns", 0))
            json_object_set_new(e, "newest_ns", json_integer((json_int_t)t));
    }
    json_decref(all);
    return entries;
}

/* ---- the blocks the sets use ---- */

typedef struct refs {
    bk_repo *r;
    const uint8_t *present; /* usage.present */
    uint32_t npacks;
    bk_map seen;    /* blocks used by some set: pack = the owner's number in dbs, stored = bytes */
    bk_map *dbmaps; /* per database (by number): the blocks its sets use */
    json_t **dbe;   /* per database: its entry */
    size_t ndb, capdb;
    /* the set being walked: its databases' numbers */
    size_t *cur, ncur;
    uint64_t used, missing;
} refs;

/* What block id takes on disk (its record: header and payload), 0 when no index lists it in a
 * pack there is. */
static uint64_t block_bytes(refs *x, const uint8_t id[BK_ID_LEN])
{
    pthread_rwlock_rdlock(&x->r->lk);
    const bk_ent *e = bk_map_get(&x->r->index, id);
    uint64_t n =
        e && e->pack < x->npacks && x->present[e->pack] ? BK_REC_HDR + (uint64_t)e->stored : 0;
    pthread_rwlock_unlock(&x->r->lk);
    return n;
}

static int on_ref(void *arg, const uint8_t id[BK_ID_LEN])
{
    refs *x = arg;
    bk_ent e = {0}, *got;
    int added = 0;
    memcpy(e.id, id, BK_ID_LEN);
    const bk_ent *was = bk_map_get(&x->seen, id);
    if (!was) {
        uint64_t n = block_bytes(x, id);
        e.pack = (uint32_t)x->cur[0];
        e.stored = (uint32_t)n;
        if (!(got = bk_map_put(&x->seen, &e, NULL)))
            return om_errf(OM_E_OutOfMemory, "out of memory");
        /* the oldest set that uses it: the first of its databases */
        if (n) add(x->dbe[x->cur[0]], "bytes_stored", (int64_t)n);
        x->used += n;
        x->missing += !n;
        was = got;
    }
    for (size_t i = 0; i < x->ncur; i++) {
        if (!bk_map_put(&x->dbmaps[x->cur[i]], &e, &added))
            return om_errf(OM_E_OutOfMemory, "out of memory");
        if (added) add(x->dbe[x->cur[i]], "bytes_referenced", (int64_t)was->stored);
    }
    return 0;
}

/* The number of entry e in x (added when new). */
static int db_number(refs *x, json_t *e, size_t *no)
{
    for (*no = 0; *no < x->ndb; (*no)++)
        if (x->dbe[*no] == e) return 0;
    if (x->ndb == x->capdb) {
        size_t cap = x->capdb ? x->capdb * 2 : 8;
        json_t **d = realloc(x->dbe, cap * sizeof *d);
        if (d) x->dbe = d;
        bk_map *m = d ? realloc(x->dbmaps, cap * sizeof *m) : NULL;
        if (m) x->dbmaps = m;
        if (!m) return om_errf(OM_E_OutOfMemory, "out of memory");
        x->capdb = cap;
    }
    x->dbe[x->ndb] = e;
    x->dbmaps[x->ndb] = (bk_map){0};
    x->ndb++;
    return 0;
}

/* The blocks set id uses, for the databases entries (its entries in dbs). */
static int walk_set(refs *x, const char *id, json_t *entries)
{
    json_t *set = NULL, *e, *f;
    size_t i, no;
    x->ncur = 0;
    free(x->cur);
    x->cur = calloc(json_array_size(entries) + 1, sizeof *x->cur);
    int rc = x->cur ? 0 : om_errf(OM_E_OutOfMemory, "out of memory");
    json_array_foreach(entries, i, e)
    {
        if (!rc) rc = db_number(x, e, &no);
        if (!rc) x->cur[x->ncur++] = no;
    }
    if (!rc && x->ncur) rc = bk_set_read(x->r, id, &set);
    json_array_foreach(json_object_get(set, "files"), i, f)
    {
        if (!rc) rc = bk_file_refs(f, on_ref, x);
    }
    json_decref(set);
    return rc;
}

static void refs_free(refs *x)
{
    for (size_t i = 0; i < x->ndb; i++)
        bk_map_free(&x->dbmaps[i]);
    free(x->dbmaps);
    free(x->dbe);
    free(x->cur);
    bk_map_free(&x->seen);
}

/* Over the index: the bytes of the blocks no set uses, and of every block in a pack there is. */
static void unused(refs *x, uint64_t *bytes, uint64_t *blocks, uint64_t *indexed)
{
    *bytes = *blocks = *indexed = 0;
    pthread_rwlock_rdlock(&x->r->lk);
    for (size_t i = 0; i < x->r->index.cap; i++) {
        const bk_ent *e = &x->r->index.slot[i];
        if (!e->used || e->pack >= x->npacks || !x->present[e->pack]) continue;
        *indexed += BK_REC_HDR + (uint64_t)e->stored;
        if (bk_map_get(&x->seen, e->id)) continue;
        *bytes += BK_REC_HDR + (uint64_t)e->stored;
        (*blocks)++;
    }
    pthread_rwlock_unlock(&x->r->lk);
}

/* The entries by name, with "newest" as ISO text. */
static json_t *db_list(json_t *dbs)
{
    json_t *out = json_array(), *e;
    const char *k;
    json_object_foreach(dbs, k, e)
    {
        char iso[40];
        uint64_t t = (uint64_t)om_json_int_or(e, "newest_ns", 0);
        if (t) json_object_set_new(e, "newest", json_string(om_time_iso(t, iso, sizeof iso)));
        json_object_del(e, "newest_ns");
        size_t at = 0;
        const char *name = om_json_str_or(json_object_get(e, "database"), "name", "");
        while (
            at < json_array_size(out) &&
            strcmp(om_json_str_or(json_object_get(json_array_get(out, at), "database"), "name", ""),
                   name) <= 0)
            at++;
        json_array_insert(out, at, e);
    }
    return out;
}

int bk_repo_stats(bk_repo *r, json_t **stats)
{
    *stats = NULL;
    json_t *sums = NULL, *plan = NULL, *dbs = json_object(), *s;
    uint64_t bytes = 0, unref = 0, nunref = 0, blocks = 0;
    int64_t nsets = 0, damaged = 0, chains = 0, broken = 0;
    usage u = {.r = r};
    refs x = {.r = r};
    /* the index first: a pack on disk it does not list counts as a leftover */
    int rc = bk_index_refresh(r);
    /* every set read whole (it reads each one's blocks below anyway): a set damaged in place
     * since its summary was kept is counted as damaged, not taken for sound */
    if (!rc) rc = bk_sets_whole(r, &sums);
    if (!rc) rc = bk_plan(sums, &plan);
    if (!rc) {
        pthread_rwlock_rdlock(&r->lk);
        u.npacks = r->npacks;
        pthread_rwlock_unlock(&r->lk);
        u.present = calloc(u.npacks + 1, 1);
        rc = u.present ? on_disk(&u) : om_errf(OM_E_OutOfMemory, "out of memory");
    }
    x.present = u.present;
    x.npacks = u.npacks;
    size_t i;
    json_array_foreach(plan, i, s)
    {
        if (rc) break;
        if (json_object_get(s, "damaged")) {
            damaged++;
            continue;
        }
        int ok = json_is_true(json_object_get(s, "restorable"));
        nsets++;
        broken += !ok;
        chains += ok && json_array_size(json_object_get(s, "chain")) == 1;
        bytes += (uint64_t)om_json_int_or(s, "bytes", 0);
        json_t *entries = count_set(dbs, s);
        rc = walk_set(&x, om_json_str_or(s, "id", ""), entries);
        json_decref(entries);
    }
    if (!rc) unused(&x, &unref, &nunref, &blocks);
    if (!rc)
        *stats = json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "sets",
            (json_int_t)nsets, "damaged", (json_int_t)damaged, "chains", (json_int_t)chains,
            "not_restorable", (json_int_t)broken, "packs", (json_int_t)u.files, "bytes_on_disk",
            (json_int_t)u.bytes, "bytes", (json_int_t)bytes, "ratio",
            u.bytes ? json_real((double)bytes / (double)u.bytes) : json_null(), "bytes_used",
            (json_int_t)x.used, "bytes_unreferenced", (json_int_t)unref, "blocks_unreferenced",
            (json_int_t)nunref, "bytes_pack_overhead", (json_int_t)u.indexed - (json_int_t)blocks,
            "bytes_not_indexed", (json_int_t)(u.bytes - u.indexed), "blocks_missing",
            (json_int_t)x.missing, "databases", db_list(dbs));
    refs_free(&x);
    free(u.present);
    json_decref(sums);
    json_decref(plan);
    json_decref(dbs);
    return rc;
}
