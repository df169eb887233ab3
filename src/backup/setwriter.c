/* Writing one backup set (repo.h has the contract).
 *
 * bk_put_block runs on many threads at once. Each block goes: id (no lock) -> already in this
 * writer or in the repository's index? (reused) -> claimed in this writer's map (under m, so two
 * threads with the same new block store it once) -> compressed and encrypted (no lock) -> one
 * free pack taken from the writer's pool (under m), appended to by this thread alone, then
 * returned to the pool, or finished when full (made durable and indexed, no lock held).
 * A failure is sticky: the set can no longer be committed, since a claimed block may be
 * missing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <zstd.h>

#include "backup/repo_internal.h"
#include "base/error.h"
#include "base/pool.h"
#include "base/time.h"

struct bk_writer {
    bk_repo *r;
    pthread_mutex_t m;
    bk_map mine; /* blocks put by this writer (raw length) */
    bk_packw **pool;
    size_t npool, cappool;
    ZSTD_CCtx **zc;
    size_t nzc, capzc;
    json_t *files, *names;
    uint64_t bytes_in, bytes_stored, blocks_new, blocks_reused;
    uint64_t stored_again; /* new here, but in the repository as copies known damaged */
    uint64_t size;         /* of the files */
    /* the first failure of a worker: every later call returns it */
    om_err_saved failed;
};

int bk_set_begin(bk_repo *r, bk_writer **out)
{
    *out = NULL;
    int rc = bk_index_refresh(r);
    /* Read again: a verify may have listed damaged copies since, and those blocks are stored
     * again rather than referred to. */
    if (!rc) rc = bk_damaged_load(r, 1);
    if (rc) return rc;
    bk_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->files = json_array()) || !(w->names = json_object())) {
        if (w) {
            json_decref(w->files);
            free(w);
        }
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    w->r = r;
    pthread_mutex_init(&w->m, NULL);
    __atomic_add_fetch(&r->writers, 1, __ATOMIC_ACQ_REL);
    *out = w;
    return 0;
}

static void writer_free(bk_writer *w)
{
    for (size_t i = 0; i < w->npool; i++)
        bk_packw_discard(w->r, w->pool[i]);
    for (size_t i = 0; i < w->nzc; i++)
        ZSTD_freeCCtx(w->zc[i]);
    free(w->pool);
    free(w->zc);
    bk_map_free(&w->mine);
    json_decref(w->files);
    json_decref(w->names);
    __atomic_sub_fetch(&w->r->writers, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_destroy(&w->m);
    free(w);
}

/* Records the first failure (m held). */
static int fail_locked(bk_writer *w, int rc)
{
    if (!w->failed.code) om_err_save(&w->failed, rc);
    return rc;
}

static int fail(bk_writer *w, int rc)
{
    pthread_mutex_lock(&w->m);
    fail_locked(w, rc);
    pthread_mutex_unlock(&w->m);
    return rc;
}

static int push(void ***v, size_t *n, size_t *cap, void *x)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        void **nv = realloc(*v, c * sizeof *nv);
        if (!nv) return -1;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

static void count_reused(bk_writer *w, size_t len)
{
    w->blocks_reused++;
    w->bytes_in += len;
}

/* 1 when the block is already stored or claimed (counted as reused), 0 when this call claimed
 * it, <0 on error. A block the repository holds only as copies known damaged is claimed, and
 * *again set. */
static int claim(bk_writer *w, const uint8_t id[BK_ID_LEN], size_t len, int *again)
{
    bk_ent e = {0}, have;
    memcpy(e.id, id, BK_ID_LEN);
    e.raw = (uint32_t)len;
    pthread_mutex_lock(&w->m);
    int rc = w->failed.code ? om_err_restore(&w->failed) : 0;
    if (!rc && bk_map_get(&w->mine, id)) {
        count_reused(w, len);
        rc = 1;
    }
    pthread_mutex_unlock(&w->m);
    if (rc) return rc;
    int in_repo = bk_block_usable(w->r, id);
    *again = !in_repo && bk_index_find(w->r, id, &have, NULL) == 0;
    om_err_clear();
    int added = 0;
    pthread_mutex_lock(&w->m);
    if (!bk_map_put(&w->mine, &e, &added))
        rc = fail_locked(w, om_errf(OM_E_OutOfMemory, "out of memory"));
    else if (in_repo || !added) {
        count_reused(w, len);
        rc = 1;
    }
    pthread_mutex_unlock(&w->m);
    return rc;
}

static int encode(bk_writer *w, const uint8_t id[BK_ID_LEN], const void *data, size_t len,
                  uint8_t **payload, bk_rec *h)
{
    ZSTD_CCtx *z = NULL;
    pthread_mutex_lock(&w->m);
    if (w->nzc) z = w->zc[--w->nzc];
    pthread_mutex_unlock(&w->m);
    if (!z && !(z = ZSTD_createCCtx())) return om_errf(OM_E_OutOfMemory, "out of memory");
    memcpy(h->id, id, BK_ID_LEN);
    h->raw = (uint32_t)len;
    int rc = bk_block_encode(w->r, z, id, data, len, payload, &h->stored, &h->flags);
    pthread_mutex_lock(&w->m);
    if (push((void ***)&w->zc, &w->nzc, &w->capzc, z)) ZSTD_freeCCtx(z);
    pthread_mutex_unlock(&w->m);
    return rc;
}

/* Appends to a pack from the pool (or a new one); finishes it when full. */
static int append(bk_writer *w, const bk_rec *h, const uint8_t *payload)
{
    bk_packw *p = NULL;
    pthread_mutex_lock(&w->m);
    if (w->npool) p = w->pool[--w->npool];
    pthread_mutex_unlock(&w->m);
    int rc = p ? 0 : bk_packw_create(w->r, &p);
    if (!rc) rc = bk_packw_append(p, h, payload);
    if (rc) {
        bk_packw_discard(w->r, p);
        return rc;
    }
    if (p->off >= w->r->pack_size) return bk_packw_finish(w->r, p);
    pthread_mutex_lock(&w->m);
    if (push((void ***)&w->pool, &w->npool, &w->cappool, p)) {
        pthread_mutex_unlock(&w->m);
        return bk_packw_finish(w->r, p);
    }
    pthread_mutex_unlock(&w->m);
    return 0;
}

int bk_put_block(bk_writer *w, const void *data, size_t len, uint8_t id[BK_ID_LEN], int *stored_new)
{
    if (stored_new) *stored_new = 0;
    if (!len || len > w->r->block_size)
        return om_errf(OM_E_InvalidParameter, "a block of %zu bytes (the block size is %u)", len,
                       w->r->block_size);
    int again = 0;
    int rc = bk_id_of(w->r, data, len, id);
    if (!rc) rc = claim(w, id, len, &again);
    if (rc) return rc < 0 ? fail(w, rc) : 0;
    uint8_t *payload = NULL;
    bk_rec h = {0};
    rc = encode(w, id, data, len, &payload, &h);
    if (!rc) rc = append(w, &h, payload);
    free(payload);
    if (rc) return fail(w, rc);
    pthread_mutex_lock(&w->m);
    w->blocks_new++;
    w->stored_again += again != 0;
    w->bytes_in += len;
    w->bytes_stored += BK_REC_HDR + h.stored;
    pthread_mutex_unlock(&w->m);
    if (stored_new) *stored_new = 1;
    return 0;
}

/* The length of a block this writer put or the repository has; 0 when neither. */
static uint32_t block_len(bk_writer *w, const uint8_t id[BK_ID_LEN])
{
    pthread_mutex_lock(&w->m);
    const bk_ent *e = bk_map_get(&w->mine, id);
    uint32_t raw = e ? e->raw : 0;
    pthread_mutex_unlock(&w->m);
    bk_ent have;
    /* A block known damaged in every copy is as good as absent: a set must not refer to it. */
    if (!raw && bk_block_usable(w->r, id) && bk_index_find(w->r, id, &have, NULL) == 0)
        raw = have.raw;
    om_err_clear();
    return raw;
}

static int add_entry(bk_writer *w, int rc, const char *name, uint64_t size, json_t *f,
                     json_t *meta);

int bk_set_add_file(bk_writer *w, const char *name, uint64_t size, const uint8_t sha256[32],
                    const uint8_t xxh3_128[16], const uint8_t (*ids)[BK_ID_LEN], size_t nblocks,
                    json_t *meta)
{
    int rc = 0;
    char *blocks = malloc(nblocks * 64 + 1), sha[65], xxh[33];
    uint64_t sum = 0;
    if (!blocks) {
        json_decref(meta);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    blocks[0] = 0;
    if (!name || !*name)
        rc = om_errf(OM_E_InvalidParameter, "a file of a set needs a name");
    else if (meta && !json_is_object(meta))
        rc = om_errf(OM_E_InvalidParameter, "%s: meta must be a JSON object", name);
    for (size_t i = 0; i < nblocks && !rc; i++) {
        uint32_t raw = block_len(w, ids[i]);
        bk_hex(ids[i], BK_ID_LEN, blocks + 64 * i);
        if (!raw)
            rc = om_errf(OM_E_InvalidParameter, "%s: block %zu (%s) was never stored", name, i,
                         blocks + 64 * i);
        sum += raw;
    }
    if (!rc && sum != size)
        rc = om_errf(OM_E_InvalidParameter, "%s: its blocks hold %llu bytes, not its size %llu",
                     name, (unsigned long long)sum, (unsigned long long)size);
    json_t *f = NULL;
    if (!rc) {
        bk_hex(sha256, 32, sha);
        f = json_pack("{s:s, s:I, s:s, s:s}", "name", name, "size", (json_int_t)size, "sha256", sha,
                      "blocks", blocks);
        if (!f) rc = om_errf(OM_E_InvalidParameter, "%s: not a valid file name (UTF-8)", name);
        if (f && xxh3_128) {
            bk_hex(xxh3_128, 16, xxh);
            json_object_set_new(f, "xxh3_128", json_string(xxh));
        }
    }
    rc = add_entry(w, rc, name, size, f, meta);
    free(blocks);
    return rc;
}

/* The file entry f (NULL when rc) into the set, under a name not taken yet; f and meta
 * released. */
static int add_entry(bk_writer *w, int rc, const char *name, uint64_t size, json_t *f, json_t *meta)
{
    if (!rc && meta) json_object_set(f, "meta", meta);
    pthread_mutex_lock(&w->m);
    if (!rc && json_object_get(w->names, name))
        rc = om_errf(OM_E_InvalidParameter, "%s is already in the set", name);
    if (!rc) {
        json_object_set_new(w->names, name, json_true());
        json_array_append(w->files, f);
        w->size += size;
    }
    pthread_mutex_unlock(&w->m);
    json_decref(f);
    json_decref(meta);
    return rc;
}

/* Region i of a file of the regions form: its pieces (when it has some) name blocks there are,
 * slices inside them, lengths that make the region, and the pieces' id is ids[i]; else block
 * ids[i] is the region, whole. */
static int region_ok(bk_writer *w, const char *name, size_t i, const uint8_t id[BK_ID_LEN],
                     const char *pieces, uint32_t rl)
{
    if (!pieces) {
        uint32_t raw = block_len(w, id);
        return raw == rl ? 0
                         : om_errf(OM_E_InvalidParameter,
                                   "%s: region %zu is block of %u bytes (0: never stored), not %u",
                                   name, i, raw, rl);
    }
    bk_piece *v = NULL;
    size_t n = 0;
    uint8_t want[BK_ID_LEN];
    int rc = bk_pieces_parse(pieces, rl, &v, &n);
    if (!rc) rc = bk_pieces_id(w->r, pieces, want);
    if (!rc && memcmp(want, id, BK_ID_LEN))
        rc = om_errf(OM_E_InvalidParameter, "%s: region %zu: its id is not its pieces'", name, i);
    for (size_t k = 0; k < n && !rc; k++) {
        uint32_t raw = block_len(w, v[k].id);
        if ((uint64_t)v[k].off + v[k].len > raw)
            rc = om_errf(OM_E_InvalidParameter,
                         "%s: region %zu: piece %zu (bytes %u-%u) is not inside its block of %u "
                         "bytes (0: never stored)",
                         name, i, k, v[k].off, v[k].off + v[k].len, raw);
    }
    free(v);
    return rc ? om_err_ctx(rc, "%s, region %zu", name, i) : 0;
}

int bk_set_add_file_regions(bk_writer *w, const char *name, uint64_t size,
                            const uint8_t (*ids)[BK_ID_LEN], size_t nregions, json_t *pieces,
                            json_t *meta)
{
    uint32_t bs = w->r->block_size;
    char *blocks = malloc(nregions * 64 + 1), sha[65], key[24];
    uint8_t dg[32];
    unsigned dl = 0;
    int rc = blocks && name && *name && json_is_object(pieces) ? 0
             : blocks ? om_errf(OM_E_InvalidParameter, "a file of a set needs a name and pieces")
                      : om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc && (nregions != (size + bs - 1) / bs || !size))
        rc = om_errf(OM_E_InvalidParameter, "%s: %zu regions for %llu bytes", name, nregions,
                     (unsigned long long)size);
    EVP_MD_CTX *c = rc ? NULL : EVP_MD_CTX_new();
    if (!rc && (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1))
        rc = om_errf(OM_E_OutOfMemory, "out of memory");
    for (size_t i = 0; i < nregions && !rc; i++) {
        uint32_t rl = i + 1 < nregions ? bs : (uint32_t)(size - (uint64_t)i * bs);
        snprintf(key, sizeof key, "%zu", i);
        rc = region_ok(w, name, i, ids[i], json_string_value(json_object_get(pieces, key)), rl);
        bk_hex(ids[i], BK_ID_LEN, blocks + 64 * i);
        EVP_DigestUpdate(c, ids[i], BK_ID_LEN);
    }
    if (c) EVP_DigestFinal_ex(c, dg, &dl);
    EVP_MD_CTX_free(c);
    json_t *f = NULL;
    if (!rc) {
        bk_hex(dg, 32, sha);
        f = json_pack("{s:s, s:I, s:s, s:s, s:O}", "name", name, "size", (json_int_t)size,
                      "regions_sha256", sha, "blocks", blocks, "pieces", pieces);
        if (!f) rc = om_errf(OM_E_InvalidParameter, "%s: not a valid file name (UTF-8)", name);
    }
    rc = add_entry(w, rc, name ? name : "", size, f, meta);
    json_decref(pieces);
    free(blocks);
    return rc;
}

void bk_writer_stats(const bk_writer *w, uint64_t *bytes_in, uint64_t *bytes_stored,
                     uint64_t *blocks_new, uint64_t *blocks_reused)
{
    bk_writer *mw = (bk_writer *)w; /* the mutex, not the stats, changes */
    pthread_mutex_lock(&mw->m);
    if (bytes_in) *bytes_in = w->bytes_in;
    if (bytes_stored) *bytes_stored = w->bytes_stored;
    if (blocks_new) *blocks_new = w->blocks_new;
    if (blocks_reused) *blocks_reused = w->blocks_reused;
    pthread_mutex_unlock(&mw->m);
}

uint64_t bk_writer_stored_again(const bk_writer *w)
{
    bk_writer *mw = (bk_writer *)w; /* the mutex, not the count, changes */
    pthread_mutex_lock(&mw->m);
    uint64_t n = w->stored_again;
    pthread_mutex_unlock(&mw->m);
    return n;
}

/* The packs left in the pool at the end, one per worker that was appending: finished side by
 * side (each waits on the disk for its syncs and its index's), every one of them whatever the
 * others do; the first error is kept. */
typedef struct finishing {
    bk_writer *w;
    pthread_mutex_t mu;
    int rc;
    om_err_saved err;
} finishing;

static int finish_one(void *ctx, void *ws, size_t i)
{
    (void)ws;
    finishing *fi = ctx;
    int rc = bk_packw_finish(fi->w->r, fi->w->pool[i]);
    fi->w->pool[i] = NULL;
    pthread_mutex_lock(&fi->mu);
    if (rc && !fi->rc) fi->rc = om_err_save(&fi->err, rc);
    pthread_mutex_unlock(&fi->mu);
    return 0; /* the others are finished all the same */
}

/* Finishes every pack in the pool; the first error. */
static int finish_packs(bk_writer *w)
{
    finishing fi = {.w = w, .mu = PTHREAD_MUTEX_INITIALIZER};
    size_t n = w->npool;
    om_pool pool = {.workers = (int)(n < 1                     ? 1
                                     : n < OM_POOL_MAX_WORKERS ? n
                                                               : OM_POOL_MAX_WORKERS),
                    .ctx = &fi,
                    .fn = finish_one};
    (void)om_pool_run(&pool, n); /* finish_one keeps the first failure */
    w->npool = 0;
    pthread_mutex_destroy(&fi.mu);
    return fi.rc ? om_err_restore(&fi.err) : 0;
}

static char *b64(const uint8_t *b, size_t n)
{
    char *s = malloc((n + 2) / 3 * 4 + 1);
    if (s) EVP_EncodeBlock((unsigned char *)s, b, (int)n);
    return s;
}

/* The set file's content and id: the document itself, or sealed. */
static int set_file(bk_repo *r, const char *text, char id[65], char **file)
{
    uint8_t bid[BK_ID_LEN];
    size_t n = strlen(text);
    int rc = bk_id_of(r, text, n, bid);
    if (rc) return rc;
    bk_hex(bid, BK_ID_LEN, id);
    if (!r->encrypted) {
        *file = strdup(text);
        return *file ? 0 : om_errf(OM_E_OutOfMemory, "out of memory");
    }
    uint8_t *sealed = malloc(n + BK_SEAL_OVERHEAD);
    char *enc = NULL, aad[64];
    if (!sealed) return om_errf(OM_E_OutOfMemory, "out of memory");
    bk_set_aad(r, aad);
    rc = bk_seal(r->data_key, aad, strlen(aad), text, n, sealed);
    if (!rc && !(enc = b64(sealed, n + BK_SEAL_OVERHEAD)))
        rc = om_errf(OM_E_OutOfMemory, "out of memory");
    free(sealed);
    json_t *env = rc ? NULL
                     : json_pack("{s:s, s:s, s:s, s:i}", "encryption", "aes-256-gcm", "repository",
                                 r->uuid_str, "sealed", enc, "version", BK_FORMAT_VERSION);
    free(enc);
    /* Sorted keys: the file starts with BK_SEALED_SET_HEAD. */
    if (!rc && !(*file = json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS)))
        rc = om_errf(OM_E_OutOfMemory, "out of memory");
    json_decref(env);
    return rc;
}

int bk_set_commit(bk_writer *w, json_t *doc, char set_id[65])
{
    bk_repo *r = w->r;
    char *text = NULL, *file = NULL, name[80], t[40];
    om_dir *sets = NULL;
    set_id[0] = 0;
    int rc = w->failed.code ? om_err_restore(&w->failed) : 0;
    if (!rc && !json_is_object(doc))
        rc = om_errf(OM_E_InvalidParameter, "the set document must be a JSON object");
    /* the packs are finished whatever happened; the error said is the first one (its detail
     * kept across theirs) */
    om_err_saved first = {0};
    if (rc) om_err_save(&first, rc);
    int frc = finish_packs(w);
    rc = rc ? om_err_restore(&first) : frc;
    if (rc) goto out;
    uint64_t now = om_now_ns();
    json_object_set(doc, "files", w->files);
    json_object_set_new(doc, "bytes", json_integer((json_int_t)w->size));
    json_object_set_new(doc, "bytes_stored", json_integer((json_int_t)w->bytes_stored));
    json_object_set_new(doc, "blocks_new", json_integer((json_int_t)w->blocks_new));
    json_object_set_new(doc, "blocks_reused", json_integer((json_int_t)w->blocks_reused));
    if (w->stored_again)
        json_object_set_new(doc, "blocks_stored_again", json_integer((json_int_t)w->stored_again));
    json_object_set_new(doc, "committed_ns", json_integer((json_int_t)now));
    json_object_set_new(doc, "repository", json_string(r->uuid_str));
    json_object_del(doc, "id");
    if (!json_is_string(json_object_get(doc, "time")))
        json_object_set_new(doc, "time", json_string(om_time_iso(now, t, sizeof t)));
    if (!(text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS))) {
        rc = om_errf(OM_E_InvalidParameter, "the set document cannot be written as JSON");
        goto out;
    }
    rc = set_file(r, text, set_id, &file);
    snprintf(name, sizeof name, "%s.pending", set_id);
    if (!rc) rc = bk_dir_open(r, "sets", &sets);
    /* Last, after every pack and index it uses is durable; still pending: bk_set_publish lists
     * it once the caller knows the backup succeeded. Named by its content: a file already
     * there holds the same bytes. */
    if (!rc) rc = om_durable_write_at(sets, name, file, strlen(file), OM_RENAME_REPLACE);
    om_dir_close(sets);
    if (rc) set_id[0] = 0;
out:
    if (rc) om_err_ctx(rc, "committing the set");
    free(text);
    free(file);
    json_decref(doc);
    writer_free(w);
    return rc;
}

void bk_set_abort(bk_writer *w)
{
    if (!w) return;
    int rc = finish_packs(w);
    if (rc) om_err_clear();
    writer_free(w);
}

/* The names of a pending set and of its listed name in sets/, opened into *dir; InvalidParameter
 * for a malformed id. */
static int set_names(bk_repo *r, const char *set_id, char *pending, char *listed, om_dir **dir)
{
    size_t l = set_id ? strlen(set_id) : 0;
    *dir = NULL;
    for (size_t i = 0; i < l && l == 64; i++)
        if (!((set_id[i] >= '0' && set_id[i] <= '9') || (set_id[i] >= 'a' && set_id[i] <= 'f')))
            l = 0;
    if (l != 64)
        return om_errf(OM_E_InvalidParameter, "'%.80s' is not a set id (64 hex digits)",
                       set_id ? set_id : "");
    snprintf(pending, 80, "%s.pending", set_id);
    snprintf(listed, 80, "%s.json", set_id);
    return bk_dir_open(r, "sets", dir);
}

int bk_set_publish(bk_repo *r, const char set_id[65])
{
    char pending[80], listed[80];
    om_dir *d = NULL;
    int rc = set_names(r, set_id, pending, listed, &d);
    if (rc) return rc;
    if (om_kind_at(d, pending) != OM_KIND_FILE) {
        /* Published already (a second call) is done; anything else was never committed. */
        rc = om_kind_at(d, listed) == OM_KIND_FILE
                 ? 0
                 : om_errf(OM_E_SetNotFound, "no pending set %s in %s to publish", set_id, r->path);
        om_dir_close(d);
        return rc;
    }
    /* The rename is the publication; the directory's sync makes it survive a crash. The same id
     * is the same content: a listed file of it is replaced by itself. */
    rc = om_rename_at(d, pending, d, listed, OM_RENAME_REPLACE);
    if (!rc) rc = om_dir_sync(d);
    if (rc) om_err_ctx(rc, "publishing the set %s", set_id);
    om_dir_close(d);
    return rc;
}

int bk_set_discard(bk_repo *r, const char set_id[65])
{
    char pending[80], listed[80];
    om_dir *d = NULL;
    int rc = set_names(r, set_id, pending, listed, &d);
    if (rc) return rc;
    if (om_kind_at(d, pending) != OM_KIND_FILE)
        rc = om_errf(OM_E_SetNotFound, "no pending set %s in %s to discard%s", set_id, r->path,
                     om_kind_at(d, listed) == OM_KIND_FILE
                         ? ": it is published (bk_expire removes published sets)"
                         : "");
    else {
        rc = om_unlink_at(d, pending);
        if (!rc) rc = om_dir_sync(d);
        if (rc) om_err_ctx(rc, "discarding the set %s", set_id);
    }
    om_dir_close(d);
    return rc;
}
