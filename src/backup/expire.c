/* bk_expire: retention (repo.h has the rules). Under the exclusive lock, in this order, so a
 * crash anywhere leaves a valid repository:
 *   0. pending sets are removed: under the exclusive lock no writer is mid-backup, so each is
 *      one whose backup died before it was published (nothing will ever publish it, and its
 *      blocks must not count as used);
 *   1. set files of expired sets are removed (directory fsynced): what remains listed is whole;
 *   2. leftovers of killed writers: *.tmp files (the durable-file helper's temporary names,
 *      base/vfs.h, and older repositories' <pack>.tmp), packs no index lists (before the packs'
 *      steps: they are what fills a disk, and a rewrite needs room);
 *   3. unused packs: the index file first, then the pack (a pack without an index is garbage;
 *      an index without its pack would be damage, so that order never happens);
 *   4. packs less than half used, then small packs once MERGE_MIN of them read back: their used
 *      blocks are copied into new packs, which are made durable and indexed before the old
 *      index and pack are removed (until then the blocks are listed twice, which is harmless).
 * Damaged set or index files stop it before step 1: deleting packs on the word of a damaged
 * index, or while a damaged set's references are unknown, could destroy the only copy of
 * something. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

#include "backup/repo_internal.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "backup/retention.h"

/* Small packs (under a quarter of the pack size: a backup's last pack, or each small
 * incremental's only one) are merged into full-sized ones once MERGE_MIN of them read back.
 * Every pack has its index file, and every command loads every index file when it opens the
 * repository: a year of hourly incrementals of one database left 8,760 of each. Waiting for
 * MERGE_MIN bounds the copying: a pack is copied again only while it is still small, and each
 * merge brings in at least MERGE_MIN - 1 other packs. */
#define MERGE_MIN 32

/* MERGE_MIN, or the test hook OMBRA_EXPIRE_MERGE_MIN (2 to 1000000; repo.h): the campaign that
 * kills expire lowers it so that its few sets are merged at almost every run. */
static uint32_t merge_min(void)
{
    const char *e = getenv("OMBRA_EXPIRE_MERGE_MIN");
    char *end = NULL;
    unsigned long v = e ? strtoul(e, &end, 10) : 0;
    return e && *e && end && !*end && v >= 2 && v <= 1000000 ? (uint32_t)v : MERGE_MIN;
}

typedef struct expire {
    bk_repo *r;
    json_t *sets; /* every set, oldest first */
    bk_map used;  /* blocks the remaining sets reference */
    json_t *deleted;
    uint64_t bytes_freed, packs_deleted, packs_rewritten, packs_merged, leftovers, pending;
    uint64_t bytes_written; /* the rewrites' new packs: bytes_freed is net of them */
    /* Used blocks' copies in packs this run leaves as they are (id -> pack in packs[], offset,
     * lengths): a merge drops a small pack's copy of one after checking it, instead of copying
     * it again (a merge or rewrite killed after its new pack was durable leaves both). */
    bk_map stay;
    const bk_pack *packs;
    uint64_t step, steps;   /* the progress after the first pass: packs rewritten or merged */
    char *rewrites_stopped; /* why rewrites and merges stopped (disk full), for the report */
    int merging;            /* the packs flush_rewrites removes are merged small ones */
    /* the pack being filled by rewrites, and the old packs whose blocks it holds */
    bk_packw *out;
    char (*moved)[33];
    size_t nmoved, capmoved;
} expire;

/* ---- the lock ---- */

static int lock_exclusive(bk_repo *r)
{
    if (__atomic_load_n(&r->writers, __ATOMIC_ACQUIRE))
        return om_errf(OM_E_RepositoryInUse,
                       "%s: a backup set is being written through this handle", r->path);
    if (r->lock_fd < 0) return 0; /* a file system of this process alone (bk_repo_open_vfs) */
    if (flock(r->lock_fd, LOCK_EX | LOCK_NB) == 0) return 0;
    int e = errno;
    /* A failed conversion may have dropped the shared lock: take it back. */
    while (flock(r->lock_fd, LOCK_SH) != 0 && errno == EINTR)
        ;
    if (e == EWOULDBLOCK)
        return om_errf(OM_E_RepositoryInUse,
                       "%s is in use by another process (a backup, restore or verify); expire "
                       "needs it alone. HINT: run it again once they are done",
                       r->path);
    return om_errf(om_err_from_errno(e), "locking %s/locks/repo.lock: %s", r->path, strerror(e));
}

static void lock_shared(bk_repo *r)
{
    while (r->lock_fd >= 0 && flock(r->lock_fd, LOCK_SH) != 0 && errno == EINTR)
        ;
}

/* ---- which sets go ---- */

static int load_sets(expire *x)
{
    bk_repo *r = x->r;
    pthread_rwlock_rdlock(&r->lk);
    json_t *d = json_array_get(r->damage, 0);
    int rc = d ? om_errf(OM_E_RepositoryCorrupt,
                         "index/%s.json: %s; expire deletes nothing while an index file is "
                         "damaged. HINT: ombra verify --repo %s",
                         om_json_str_or(d, "index", "?"), om_json_str_or(d, "what", "?"), r->path)
               : 0;
    pthread_rwlock_unlock(&r->lk);
    if (rc) return rc;
    /* every set read whole now (bk_sets_full), once: what is deleted is decided by the sets
     * themselves, in their own commit order, never by summaries kept in the data directory */
    json_t *all = NULL;
    rc = bk_sets_full(r, &all);
    size_t i;
    json_t *s;
    json_array_foreach(all, i, s)
    {
        if (rc) break;
        if (json_object_get(s, "damaged")) {
            rc = om_errf(OM_E_RepositoryCorrupt, "%s", om_json_str_or(s, "damaged", ""));
            om_err_ctx(rc,
                       "expire deletes nothing while a set cannot be read. HINT: ombra "
                       "verify --repo %s; then remove the damaged set file",
                       r->path);
        } else
            json_array_append(x->sets, s);
    }
    json_decref(all);
    return rc;
}

/* keep[i] = 1 for every set the plan keeps (backup/retention.h decides; the dry run prints the
 * same plan). */
static int choose(expire *x, const bk_policy *p, size_t np, char *keep, json_t **plan)
{
    int rc = bk_retention_plan_n(x->sets, p, np, plan);
    if (rc) return rc;
    json_t *ids = json_object(), *e;
    size_t i;
    json_array_foreach(json_object_get(*plan, "kept"), i, e)
        json_object_set_new(ids, om_json_str_or(e, "id", ""), json_true());
    for (i = 0; i < json_array_size(x->sets); i++)
        keep[i] =
            json_object_get(ids, om_json_str_or(json_array_get(x->sets, i), "id", "")) != NULL;
    json_decref(ids);
    return 0;
}

/* Newest first: a set is committed after the sets it depends on, so an expire killed between
 * two removals leaves the older part of a chain, whole, never an incremental or differential
 * whose full is gone (oldest first, a kill left sets listed "not restorable" until the next
 * expire). */
static int delete_sets(expire *x, const char *keep)
{
    char name[80];
    om_dir *d = NULL;
    int rc = bk_dir_open(x->r, "sets", &d), any = 0;
    for (size_t i = json_array_size(x->sets); i-- > 0 && !rc;) {
        if (keep[i]) continue;
        const char *id = om_json_str_or(json_array_get(x->sets, i), "id", "");
        snprintf(name, sizeof name, "%.64s.json", id);
        rc = om_unlink_at(d, name);
        if (!rc) json_array_append_new(x->deleted, json_string(id));
        if (!rc && !any) bk_pause_at("OMBRA_EXPIRE_PAUSE", "deleting");
        any = 1;
    }
    if (!rc && any) rc = om_dir_sync(d);
    om_dir_close(d);
    return rc;
}

static int mark_one(void *arg, const uint8_t id[BK_ID_LEN])
{
    expire *x = arg;
    bk_ent e = {0};
    memcpy(e.id, id, BK_ID_LEN);
    return bk_map_put(&x->used, &e, NULL) ? 0 : om_errf(OM_E_OutOfMemory, "out of memory");
}

/* A listed copy counts as unused when its block has a copy not listed (live_entry). That copy
 * is read first: a copy may be listed by a fault that passed (a pack read while it was copied
 * back), and the fresh one may have rotted unseen; dropping the listed copy for it would lose
 * the only good one. A copy that fails is listed (damaged.json), and the listed ones of its
 * block stay. Any other failure stops expire before anything goes. */
static int check_good_copies(expire *x)
{
    bk_repo *r = x->r;
    pthread_mutex_lock(&r->dmg_m);
    json_t *all = json_deep_copy(r->dmg_all), *e;
    pthread_mutex_unlock(&r->dmg_m);
    uint32_t bs = bk_repo_block_size(r);
    uint8_t *buf = malloc(bs);
    bk_reader *rd = NULL;
    bk_map seen = {0};
    int rc = all && buf ? 0 : om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc && json_array_size(all)) rc = bk_reader_new(r, &rd);
    size_t i;
    r->finder = "expire";
    json_array_foreach(all, i, e)
    {
        bk_ent k = {0};
        int added = 0;
        size_t len = 0;
        if (rc || bk_unhex(om_json_str_or(e, "block", ""), k.id, BK_ID_LEN) ||
            !bk_map_get(&x->used, k.id))
            continue;
        if (!bk_map_put(&seen, &k, &added)) rc = om_errf(OM_E_OutOfMemory, "out of memory");
        if (rc || !added || !bk_block_usable(r, k.id)) continue;
        int got = bk_reader_get(rd, k.id, buf, bs, &len);
        if (got == OM_E_RepositoryCorrupt)
            om_err_clear(); /* listed by the read; the listed copies stay */
        else
            rc = got;
    }
    r->finder = NULL;
    bk_reader_free(rd);
    bk_map_free(&seen);
    free(buf);
    json_decref(all);
    int src = bk_damaged_save(r);
    return rc ? rc : src;
}

/* Every block a kept set uses is used: a synthetic full's slices name blocks of older sets,
 * which stay (bk_file_refs). */
static int mark_used(expire *x, const char *keep)
{
    for (size_t i = 0; i < json_array_size(x->sets); i++) {
        if (!keep[i]) continue;
        size_t k;
        json_t *f;
        json_array_foreach(json_object_get(json_array_get(x->sets, i), "files"), k, f)
        {
            int rc = bk_file_refs(f, mark_one, x);
            if (rc) return rc;
        }
    }
    return 0;
}

/* ---- packs ---- */

/* One pack's blocks, from its index files. */
static int pack_entries(bk_repo *r, const bk_pack *p, json_t **blocks)
{
    *blocks = json_array();
    for (int i = 0; i < p->nindex; i++) {
        char path[BK_PATH_MAX];
        json_error_t je;
        uint8_t *data = NULL;
        size_t n = 0;
        int rc = bk_path(r, path, sizeof path, "index/%s.json", p->index[i]);
        if (!rc) rc = om_read_file(r->vfs, path, &data, &n);
        if (rc) return rc;
        json_t *j = json_loadb((const char *)data, n, 0, &je);
        free(data);
        if (!j) return om_errf(OM_E_RepositoryCorrupt, "reading %s: %s", path, je.text);
        json_array_extend(*blocks, json_object_get(j, "blocks"));
        json_decref(j);
    }
    return 0;
}

/* The size of the regular file name in d; 0 when it is no regular file. */
static uint64_t size_at(om_dir *d, const char *name)
{
    om_file *f = NULL;
    uint64_t size = 0;
    if (om_kind_at(d, name) != OM_KIND_FILE || om_open_at(d, name, OM_O_RDONLY, &f) ||
        om_fsize(f, &size))
        size = 0;
    om_close(f);
    om_err_clear();
    return size;
}

static int remove_pack(expire *x, const bk_pack *p)
{
    bk_repo *r = x->r;
    char name[80], sub[16];
    om_dir *d = NULL;
    int rc = bk_dir_open(r, "index", &d);
    for (int i = 0; i < p->nindex && !rc; i++) {
        snprintf(name, sizeof name, "%.64s.json", p->index[i]);
        rc = om_unlink_at(d, name);
    }
    if (!rc) rc = om_dir_sync(d); /* the index goes before the pack */
    om_dir_close(d);
    d = NULL;
    snprintf(sub, sizeof sub, "packs/%.2s", p->name);
    if (!rc) rc = bk_dir_open(r, sub, &d);
    if (!rc) x->bytes_freed += size_at(d, p->name);
    if (!rc) rc = om_unlink_at(d, p->name);
    if (!rc) rc = om_dir_sync(d);
    om_dir_close(d);
    return rc;
}

/* The rewrite pack is full (or the run is over): make it durable, then drop the old packs
 * whose used blocks it now holds. */
static int flush_rewrites(expire *x)
{
    int rc = 0;
    if (x->out) {
        uint64_t size = x->out->off;
        rc = bk_packw_finish(x->r, x->out);
        x->out = NULL;
        if (!rc) x->bytes_written += size;
    }
    for (size_t i = 0; i < x->nmoved && !rc; i++) {
        pthread_rwlock_rdlock(&x->r->lk);
        int64_t k = bk_pack_find(x->r, x->moved[i]);
        const bk_pack *p = k >= 0 ? &x->r->packs[k] : NULL;
        bk_pack copy = p ? *p : (bk_pack){0};
        pthread_rwlock_unlock(&x->r->lk);
        if (p) rc = remove_pack(x, &copy);
        if (!rc) x->packs_rewritten++;
        if (!rc && x->merging) x->packs_merged++;
    }
    x->nmoved = 0;
    return rc;
}

/* Whether entry b ([id, offset, stored, raw]) of pack p holds a block a remaining set uses (the
 * entry of x->used, else NULL). A copy known damaged (damaged.json) whose block the repository
 * holds in a good copy too is not: the good one serves, the damaged one goes with its pack or
 * is left out of its rewrite. A damaged copy with no good one stays (verify keeps naming it). */
static bk_ent *live_entry(expire *x, const bk_pack *p, json_t *b)
{
    uint8_t id[BK_ID_LEN];
    if (bk_unhex(json_string_value(json_array_get(b, 0)), id, BK_ID_LEN)) return NULL;
    bk_ent *u = bk_map_get(&x->used, id);
    if (!u) return NULL;
    uint64_t off = (uint64_t)json_integer_value(json_array_get(b, 1));
    pthread_rwlock_rdlock(&x->r->lk);
    int bad = bk_loc_bad(x->r, id, p->name, off);
    pthread_rwlock_unlock(&x->r->lk);
    return bad && bk_block_usable(x->r, id) ? NULL : u;
}

/* Whether block u (id) has a copy in a pack this run leaves as it is, that checks out now. */
static int stays_elsewhere(expire *x, const uint8_t id[BK_ID_LEN])
{
    bk_ent *s = bk_map_get(&x->stay, id);
    if (!s || !s->raw) return 0;
    uint8_t *data = NULL;
    if (bk_block_read(x->r, x->packs[s->pack].name, s->off, id, s->stored, s->raw, &data)) {
        om_err_clear();
        s->raw = 0; /* not asked again */
        return 0;
    }
    free(data);
    return 1;
}

/* Whether every used block of pack p reads back sound (a rewrite copies nothing otherwise). */
static int reads_back(expire *x, const bk_pack *p, json_t *blocks)
{
    size_t i;
    json_t *b;
    uint8_t *data;
    json_array_foreach(blocks, i, b)
    {
        bk_ent e = {0};
        bk_unhex(json_string_value(json_array_get(b, 0)), e.id, BK_ID_LEN);
        if (!live_entry(x, p, b)) continue;
        uint64_t off = (uint64_t)json_integer_value(json_array_get(b, 1));
        uint32_t st = (uint32_t)json_integer_value(json_array_get(b, 2)),
                 raw = (uint32_t)json_integer_value(json_array_get(b, 3));
        if (bk_block_read(x->r, p->name, off, e.id, st, raw, &data)) {
            om_err_clear();
            return 0;
        }
        free(data);
    }
    return 1;
}

/* Copies the used blocks of one pack into the rewrite pack; the old one goes at the next
 * flush (*queued). A used block that does not check out leaves the pack as it is (checked: the
 * caller read them back already). A block with a sound copy in a pack that stays (noted by the
 * pass that decided which packs stay) is not copied. */
static int rewrite(expire *x, const bk_pack *p, json_t *blocks, int checked, int *queued)
{
    bk_repo *r = x->r;
    size_t i;
    json_t *b;
    *queued = 0;
    if (!checked && !reads_back(x, p, blocks)) return 0;
    int rc = 0;
    json_array_foreach(blocks, i, b)
    {
        bk_rec h = {0};
        uint8_t *rec = NULL;
        bk_unhex(json_string_value(json_array_get(b, 0)), h.id, BK_ID_LEN);
        bk_ent *u = live_entry(x, p, b);
        if (!u || u->raw == 1) continue; /* unused, or copied already from another pack */
        if (stays_elsewhere(x, h.id)) {
            u->raw = 1; /* as if copied: its other copies go too */
            continue;
        }
        uint64_t off = (uint64_t)json_integer_value(json_array_get(b, 1));
        h.stored = (uint32_t)json_integer_value(json_array_get(b, 2));
        h.raw = (uint32_t)json_integer_value(json_array_get(b, 3));
        if (!x->out && (rc = bk_packw_create(r, &x->out))) return rc;
        rc = bk_record_read(r, p->name, off, h.id, h.stored, h.raw, &rec);
        if (!rc) {
            h.flags = rec[4] | rec[5] << 8 | rec[6] << 16 | (uint32_t)rec[7] << 24;
            rc = bk_packw_append(x->out, &h, rec + BK_REC_HDR);
        }
        free(rec);
        if (rc) return rc;
        /* Mark it done, so a duplicate elsewhere is not copied twice. */
        u->raw = 1;
    }
    if (x->nmoved == x->capmoved) {
        size_t cap = x->capmoved ? x->capmoved * 2 : 16;
        char(*m)[33] = realloc(x->moved, cap * sizeof *m);
        if (!m) return om_errf(OM_E_OutOfMemory, "out of memory");
        x->moved = m;
        x->capmoved = cap;
    }
    memcpy(x->moved[x->nmoved++], p->name, 33);
    *queued = 1;
    if (x->out && x->out->off >= r->pack_size) rc = flush_rewrites(x);
    return rc;
}

/* Pack i, which this run leaves as it is: its sound copies of used blocks go into x->stay. */
static int note_staying(expire *x, uint32_t i, json_t *blocks)
{
    size_t k;
    json_t *b;
    json_array_foreach(blocks, k, b)
    {
        bk_ent e = {0};
        if (!live_entry(x, &x->packs[i], b)) continue;
        bk_unhex(json_string_value(json_array_get(b, 0)), e.id, BK_ID_LEN);
        e.pack = i;
        e.off = (uint64_t)json_integer_value(json_array_get(b, 1));
        e.stored = (uint32_t)json_integer_value(json_array_get(b, 2));
        e.raw = (uint32_t)json_integer_value(json_array_get(b, 3));
        pthread_rwlock_rdlock(&x->r->lk);
        int bad = bk_loc_bad(x->r, e.id, x->packs[i].name, e.off);
        pthread_rwlock_unlock(&x->r->lk);
        if (!bad && e.raw && !bk_map_put(&x->stay, &e, NULL))
            return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    return 0;
}

/* Whether pack p holds a copy damaged.json lists that is the only one of a used block: it
 * cannot be merged (its read would fail), so it neither counts towards MERGE_MIN nor is read at
 * every run. A listed copy whose block is stored sound elsewhere does not stop it: the merge
 * leaves that copy out and it goes with the pack (and from the list). */
static int holds_listed_damage(expire *x, const bk_pack *p, json_t *blocks)
{
    size_t k;
    json_t *b;
    json_array_foreach(blocks, k, b)
    {
        uint8_t id[BK_ID_LEN];
        if (bk_unhex(json_string_value(json_array_get(b, 0)), id, BK_ID_LEN)) continue;
        pthread_rwlock_rdlock(&x->r->lk);
        int bad = bk_loc_bad(x->r, id, p->name, (uint64_t)json_integer_value(json_array_get(b, 1)));
        pthread_rwlock_unlock(&x->r->lk);
        if (bad && live_entry(x, p, b)) return 1;
    }
    return 0;
}

/* A full disk stops the rewrites and merges, not expire: what was flushed stays done, the pack
 * being filled is discarded and the packs whose blocks it held stay (x->rewrites_stopped says
 * why); sets, unused packs and leftovers are done by then. Any other error is returned. */
static int stop_on_full_disk(expire *x, int rc)
{
    if (rc != OM_E_DiskFull) return rc;
    x->rewrites_stopped = strdup(om_err_detail());
    om_warn("rewriting packs stopped, the disk is full (expire goes on): %s", om_err_detail());
    om_err_clear();
    if (x->out) bk_packw_discard(x->r, x->out);
    x->out = NULL;
    x->nmoved = 0; /* the pack that held their blocks is gone: they stay */
    return 0;
}

/* The half-used packs rewritten (each read back first, in rewrite). */
static int rewrite_half_used(expire *x, const uint32_t *half, json_t **blocks, uint32_t n)
{
    int rc = 0;
    for (uint32_t k = 0; k < n && !rc; k++) {
        int queued = 0;
        bk_progress(x->r, "expire", x->step++, x->steps);
        rc = rewrite(x, &x->packs[half[k]], blocks[k], 0, &queued);
        if (!rc && !queued) rc = note_staying(x, half[k], blocks[k]); /* left as it is */
    }
    if (!rc) rc = flush_rewrites(x);
    return stop_on_full_disk(x, rc);
}

/* The small packs merged, when merge_min() of them read back: a damaged one is left as it is,
 * and with fewer nothing is copied (not the same few packs again at every run). */
static int merge_small(expire *x, const uint32_t *small, json_t **blocks, uint32_t n)
{
    uint32_t good = 0;
    char *ok = calloc(n + 1, 1);
    if (!ok) return om_errf(OM_E_OutOfMemory, "out of memory");
    for (uint32_t k = 0; k < n; k++)
        good += (uint32_t)(ok[k] = (char)reads_back(x, &x->packs[small[k]], blocks[k]));
    int rc = 0;
    x->merging = 1;
    for (uint32_t k = 0; k < n && !rc && good >= merge_min(); k++) {
        int queued = 0;
        bk_progress(x->r, "expire", x->step++, x->steps);
        if (ok[k]) rc = rewrite(x, &x->packs[small[k]], blocks[k], 1, &queued);
    }
    free(ok);
    if (!rc) rc = flush_rewrites(x);
    return stop_on_full_disk(x, rc);
}

/* A list of packs (indexes into x->packs) with their entries. */
typedef struct pack_list {
    uint32_t *i, n;
    json_t **blocks;
} pack_list;

static void pack_list_free(pack_list *l)
{
    for (uint32_t k = 0; k < l->n; k++)
        json_decref(l->blocks[k]);
    free(l->i);
    free(l->blocks);
}

/* First every pack is looked at: unused ones go at once (they free room for the rest), the
 * others are sorted into half-used (rewritten), small (merged) and staying ones (their copies
 * noted). Then the rewrites, then the merge. */
static int sweep_packs(expire *x)
{
    bk_repo *r = x->r;
    pthread_rwlock_rdlock(&r->lk);
    uint32_t n = r->npacks;
    bk_pack *packs = calloc(n + 1, sizeof *packs);
    for (uint32_t i = 0; packs && i < n; i++)
        packs[i] = r->packs[i]; /* names and index names stay valid until the reload */
    pthread_rwlock_unlock(&r->lk);
    if (!packs) return om_errf(OM_E_OutOfMemory, "out of memory");
    x->packs = packs;
    pack_list half = {calloc(n + 1, sizeof *half.i), 0, calloc(n + 1, sizeof *half.blocks)},
              small = {calloc(n + 1, sizeof *small.i), 0, calloc(n + 1, sizeof *small.blocks)};
    int rc = half.i && half.blocks && small.i && small.blocks
                 ? 0
                 : om_errf(OM_E_OutOfMemory, "out of memory");
    for (uint32_t i = 0; i < n && !rc; i++) {
        json_t *blocks = NULL;
        bk_progress(r, "expire", i, n);
        rc = pack_entries(r, &packs[i], &blocks);
        uint64_t all = 0, live = 0;
        size_t k;
        json_t *b;
        json_array_foreach(blocks, k, b)
        {
            uint64_t sz = BK_REC_HDR + (uint64_t)json_integer_value(json_array_get(b, 2));
            all += sz;
            if (live_entry(x, &packs[i], b)) live += sz;
        }
        pack_list *to = NULL;
        if (!rc && live == 0) {
            rc = remove_pack(x, &packs[i]);
            if (!rc) x->packs_deleted++;
        } else if (!rc && live * 2 < all)
            to = &half;
        else if (!rc && all < r->pack_size / 4 && !holds_listed_damage(x, &packs[i], blocks))
            to = &small;
        else if (!rc)
            rc = note_staying(x, i, blocks);
        if (to) {
            to->i[to->n] = i;
            to->blocks[to->n++] = blocks;
            blocks = NULL;
        }
        json_decref(blocks);
    }
    /* The bar goes on over the rewrites and the merge. */
    x->step = n;
    x->steps = (uint64_t)n + half.n + (small.n >= merge_min() ? small.n : 0);
    if (!rc) rc = rewrite_half_used(x, half.i, half.blocks, half.n);
    if (!rc && !x->rewrites_stopped && small.n >= merge_min())
        rc = merge_small(x, small.i, small.blocks, small.n);
    pack_list_free(&half);
    pack_list_free(&small);
    bk_progress(r, "expire", x->steps, x->steps);
    x->packs = NULL;
    free(packs);
    return rc;
}

/* ---- leftovers ---- */

typedef struct sweep {
    expire *x;
    om_dir *d;
    int packs; /* in packs/ab: names no index lists go too */
} sweep;

static int known_pack(bk_repo *r, const char *name)
{
    pthread_rwlock_rdlock(&r->lk);
    int found = bk_pack_find(r, name) >= 0;
    pthread_rwlock_unlock(&r->lk);
    return found;
}

/* Removes the regular file name in d (a leftover): 1 when it went. */
static int remove_file(expire *x, om_dir *d, const char *name)
{
    uint64_t size = size_at(d, name);
    int gone = om_kind_at(d, name) == OM_KIND_FILE && om_unlink_at(d, name) == 0;
    om_err_clear();
    if (gone) x->bytes_freed += size;
    return gone;
}

static int sweep_one(void *arg, const char *name)
{
    sweep *s = arg;
    size_t l = strlen(name);
    int tmp = l > 4 && !strcmp(name + l - 4, ".tmp");
    int stray = s->packs && !tmp && !known_pack(s->x->r, name);
    if ((tmp || stray) && remove_file(s->x, s->d, name)) s->x->leftovers++;
    return 0;
}

static int sweep_dir(expire *x, om_dir *d, int packs)
{
    sweep s = {x, d, packs};
    int rc = om_list_at(d, sweep_one, &s);
    if (!rc) rc = om_dir_sync(d);
    return rc;
}

typedef struct pack_dirs {
    expire *x;
    om_dir *packs;
} pack_dirs;

static int sweep_pack_dir(void *arg, const char *name)
{
    pack_dirs *p = arg;
    char sub[16];
    om_dir *d = NULL;
    /* Only a real folder: a link there is nobody's packs, and is not followed. */
    if (strlen(name) != 2 || om_kind_at(p->packs, name) != OM_KIND_DIR) return 0;
    snprintf(sub, sizeof sub, "packs/%s", name);
    int rc = bk_dir_open(p->x->r, sub, &d);
    if (!rc) rc = sweep_dir(p->x, d, 1);
    om_dir_close(d);
    return rc;
}

static int sweep_leftovers(expire *x)
{
    static const char *const dirs[] = {"index", "sets"};
    int rc = sweep_dir(x, x->r->root, 0);
    for (size_t i = 0; i < 2 && !rc; i++) {
        om_dir *d = NULL;
        rc = bk_dir_open(x->r, dirs[i], &d);
        if (!rc) rc = sweep_dir(x, d, 0);
        om_dir_close(d);
    }
    pack_dirs p = {.x = x};
    if (!rc) rc = bk_dir_open(x->r, "packs", &p.packs);
    if (!rc) rc = om_list_at(p.packs, sweep_pack_dir, &p);
    om_dir_close(p.packs);
    return rc;
}

/* ---- pending sets ---- */

static int is_pending(const char *name)
{
    size_t l = strlen(name);
    return l == 64 + 8 && !strcmp(name + 64, ".pending");
}

typedef struct pending {
    expire *x;
    om_dir *d;
} pending;

static int remove_pending_one(void *arg, const char *name)
{
    pending *p = arg;
    if (is_pending(name) && remove_file(p->x, p->d, name)) {
        p->x->pending++;
        p->x->leftovers++;
    }
    return 0;
}

static int remove_pending(expire *x)
{
    pending p = {.x = x};
    int rc = bk_dir_open(x->r, "sets", &p.d);
    if (!rc) rc = om_list_at(p.d, remove_pending_one, &p);
    if (!rc && x->pending) rc = om_dir_sync(p.d);
    om_dir_close(p.d);
    return rc;
}

/* ---- the whole run ---- */

/* The policies as the report gives them back. */
static json_t *policy_json(const bk_policy *p)
{
    json_t *o = json_object(), *dbs = json_array();
    const char *name[] = {"keep_full",   "keep_last",    "keep_daily",
                          "keep_weekly", "keep_monthly", "keep_yearly"};
    unsigned v[] = {p->keep_full,   p->keep_last,    p->keep_daily,
                    p->keep_weekly, p->keep_monthly, p->keep_yearly};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        if (v[i]) json_object_set_new(o, name[i], json_integer(v[i]));
    if (p->keep_within) json_object_set_new(o, "keep_within", json_string(p->keep_within));
    for (size_t i = 0; i < p->ndbs; i++)
        json_array_append_new(dbs, json_string(p->dbs[i]));
    json_object_set_new(o, "databases", dbs);
    return o;
}

static json_t *policies_json(const bk_policy *p, size_t np)
{
    json_t *a = json_array();
    for (size_t i = 0; i < np; i++)
        json_array_append_new(a, policy_json(&p[i]));
    return a;
}

/* The dry run: the same sets read the same way and the same plan, under the shared lock only;
 * nothing is written or removed (pending sets and leftovers stay where they are). */
static int plan_only(bk_repo *r, const bk_policy *p, size_t np, json_t **report)
{
    expire x = {.r = r, .sets = json_array()};
    json_t *plan = NULL;
    int rc = load_sets(&x);
    if (!rc) rc = bk_retention_plan_n(x.sets, p, np, &plan);
    if (!rc && report) {
        json_object_set_new(plan, "dry_run", json_true());
        json_object_set_new(plan, "policies", policies_json(p, np));
        *report = plan;
        plan = NULL;
    }
    json_decref(plan);
    json_decref(x.sets);
    return rc;
}

int bk_expire(bk_repo *r, unsigned keep_full, json_t **report)
{
    if (keep_full < 1) {
        if (report) *report = NULL;
        return om_errf(OM_E_InvalidParameter, "keep at least one full backup (--keep-full 1)");
    }
    bk_policy p = {.keep_full = keep_full};
    return bk_expire_policy(r, &p, 1, 0, report);
}

int bk_expire_policy(bk_repo *r, const bk_policy *pol, size_t np, int dry_run, json_t **report)
{
    if (report) *report = NULL;
    if (dry_run) return plan_only(r, pol, np, report);
    json_t *plan = NULL;
    /* A policy that cannot be applied (no rule, a bad duration) fails before anything goes. */
    int rc = np ? 0 : om_errf(OM_E_InvalidParameter, "no retention policy given");
    for (size_t k = 0; k < np && !rc; k++)
        rc = bk_policy_check(&pol[k]);
    if (!rc) rc = lock_exclusive(r);
    if (rc) return rc;
    expire x = {.r = r, .sets = json_array(), .deleted = json_array()};
    char *keep = NULL;
    rc = remove_pending(&x);
    if (!rc) rc = bk_index_reload(r);
    if (!rc) rc = bk_damaged_load(r, 1);
    if (!rc) rc = load_sets(&x);
    size_t n = json_array_size(x.sets);
    if (!rc && !(keep = calloc(n + 1, 1))) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc) rc = choose(&x, pol, np, keep, &plan);
    if (!rc) rc = delete_sets(&x, keep);
    if (!rc) rc = mark_used(&x, keep);
    if (!rc) rc = check_good_copies(&x);
    /* Leftovers first: they are what fills a disk, and a merge needs room. */
    if (!rc) rc = sweep_leftovers(&x);
    if (!rc) rc = sweep_packs(&x);
    if (x.out) bk_packw_discard(r, x.out);
    int rrc = bk_index_reload(r);
    if (!rc) rc = rrc;
    /* The damaged copies that went with their packs leave the list. */
    size_t dropped = 0;
    if (!rc) rc = bk_damaged_prune(r, &dropped);
    lock_shared(r);
    if (!rc && report) {
        *report = json_pack(
            "{s:i, s:O, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "keep_full", (int)pol->keep_full,
            "sets_deleted", x.deleted, "sets_kept", (json_int_t)(n - json_array_size(x.deleted)),
            "packs_deleted", (json_int_t)x.packs_deleted, "packs_rewritten",
            (json_int_t)x.packs_rewritten, "packs_merged", (json_int_t)x.packs_merged,
            "bytes_freed",
            (json_int_t)(x.bytes_freed > x.bytes_written ? x.bytes_freed - x.bytes_written : 0),
            "leftovers_removed", (json_int_t)x.leftovers, "pending_removed", (json_int_t)x.pending);
        json_object_set_new(*report, "damaged_copies_removed", json_integer((json_int_t)dropped));
        json_object_set_new(*report, "rewrites_stopped",
                            x.rewrites_stopped ? json_string(x.rewrites_stopped) : json_null());
        json_object_set_new(*report, "dry_run", json_false());
        json_object_set_new(*report, "policies", policies_json(pol, np));
        json_object_set(*report, "kept", json_object_get(plan, "kept"));
        json_object_set(*report, "removed", json_object_get(plan, "removed"));
    }
    json_decref(plan);
    free(keep);
    free(x.moved);
    bk_map_free(&x.used);
    bk_map_free(&x.stay);
    free(x.rewrites_stopped);
    json_decref(x.sets);
    json_decref(x.deleted);
    return rc;
}
