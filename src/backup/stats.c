/* bk_repo_stats (stats.h): the sets' summaries and their chains (bk_plan), and a walk of packs/
 * for what is on disk: the sum of the files there, whatever the index says, so leftovers of
 * killed writers count until expire removes them. */
#include "backup/stats.h"

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
    usage in = {.r = u->r};
    int rc = bk_dir_open(u->r, sub, &in.d);
    if (!rc) rc = om_list_at(in.d, count_file, &in);
    om_dir_close(in.d);
    u->bytes += in.bytes;
    u->files += in.files;
    return rc;
}

static int on_disk(bk_repo *r, uint64_t *bytes, uint64_t *files)
{
    usage u = {.r = r};
    int rc = bk_dir_open(r, "packs", &u.d);
    if (!rc) rc = om_list_at(u.d, count_dir, &u);
    om_dir_close(u.d);
    *bytes = u.bytes;
    *files = u.files;
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
        e = json_pack("{s:{s:s, s:s}, s:i, s:i, s:i, s:n, s:I, s:I}", "database", "id", id, "name",
                      name, "sets", 0, "fulls", 0, "chains", 0, "newest", "bytes", (json_int_t)0,
                      "bytes_stored", (json_int_t)0);
        json_object_set_new(dbs, key, e);
        json_object_set_new(e, "newest_ns", json_integer(0));
    }
    return e;
}

static void add(json_t *e, const char *k, int64_t v)
{
    json_object_set_new(e, k, json_integer(om_json_int_or(e, k, 0) + v));
}

static void count_set(json_t *dbs, json_t *s)
{
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
        add(e, "sets", 1);
        add(e, "fulls", !strcmp(type, "full"));
        add(e, "chains", base);
        add(e, "bytes", om_json_int_or(s, "bytes", 0));
        add(e, "bytes_stored", om_json_int_or(s, "bytes_stored", 0));
        if (t > (uint64_t)om_json_int_or(e, "newest_ns", 0))
            json_object_set_new(e, "newest_ns", json_integer((json_int_t)t));
    }
    json_decref(all);
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
    uint64_t disk = 0, packs = 0, bytes = 0;
    int64_t nsets = 0, damaged = 0, chains = 0, broken = 0;
    int rc = bk_sets(r, &sums);
    if (!rc) rc = bk_plan(sums, &plan);
    if (!rc) rc = on_disk(r, &disk, &packs);
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
        count_set(dbs, s);
    }
    if (!rc)
        *stats =
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "sets", (json_int_t)nsets,
                      "damaged", (json_int_t)damaged, "chains", (json_int_t)chains,
                      "not_restorable", (json_int_t)broken, "packs", (json_int_t)packs,
                      "bytes_on_disk", (json_int_t)disk, "bytes", (json_int_t)bytes, "ratio",
                      disk ? json_real((double)bytes / (double)disk) : json_null(), "databases",
                      db_list(dbs));
    json_decref(sums);
    json_decref(plan);
    json_decref(dbs);
    return rc;
}
