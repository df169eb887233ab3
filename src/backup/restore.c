/* The restore job (restore.h has the sequence). */
#include "backup/restore.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "backup/chain.h"
#include "backup/repo.h"
#include "backup/setfiles.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/mem.h"
#include "base/paths.h"
#include "base/pool.h"
#include "base/progress.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/vfs.h"
#include "engine/format.h"
#include "store/client.h"
#include "vss/laid.h"
#include "vss/requester.h"

enum { CHUNK_BLOCKS = 8, MAX_WORKERS = 16 };

/* The test hook (restore.h): OMBRA_RESTORE_PAUSE. */
static void pause_at(const char *stage)
{
    bk_pause_at("OMBRA_RESTORE_PAUSE", stage);
}

/* ---- laying the files down ---- */

/* One file to lay down through the durable-file helper (base/vfs.h): a temporary name unique
 * to this restore in its folder, written in chunks of consecutive blocks, hashed in order,
 * checked, synced, renamed to its name, the folder synced. Its name comes from the target and
 * the generation, never from the set (whose names are only checked for what they say). */
typedef struct rfile {
    const char *set, *name, *blocks, *sha_hex; /* name: the set's, for messages */
    int has_xxh; /* the set gives its XXH3-128 (repo.h): the file's check (take_chunk) */
    uint8_t xxh[16];
    json_t *pieces; /* regions form (repo.h): slices of blocks; sha_hex is over the ids */
    size_t nblocks;
    uint64_t size;
    uint32_t gen;     /* a log generation; 0: the .edb */
    char base[4];     /* the log base name of its set */
    om_dir *dir;      /* where it goes (lay_and_replay's) */
    char dst[256];    /* its name there */
    int replace;      /* the writer said the name may be replaced (OM_RENAME_REPLACE) */
    int unsynced;     /* a generation for the writer's own replay only, not the last: placed
                         unsynced (om_durable_place; the writer said logs_unsynced,
                         store/writer.h) */
    om_durable out;   /* out.f open from the first chunk handed out to the commit */
    EVP_MD_CTX *sha;  /* in block order: the worker whose turn it is updates it (or xx) */
    XXH3_state_t *xx; /* the same for a file checked by its XXH3-128 */
    int by_blocks;    /* a plain repository's file checked by its XXH3-128: each of its blocks is
                         checked against its id (SHA-256) as it is fetched (take_chunk) */
    size_t hashed;    /* blocks hashed so far */
    int chunk0_taken; /* its first chunk was taken: out and sha made (or that failed) */
    int done;         /* in place under its name */
} rfile;

struct post;

/* The files' chunks of CHUNK_BLOCKS blocks, numbered through all files in order, are the
 * indexes of a pool (base/pool.h); the caller's thread meanwhile draws the bar and starts the
 * writer's PostRestore (lay_watch). */
typedef struct lay {
    bk_repo *r;
    rfile *f;
    size_t n;
    size_t *first_chunk; /* file i's chunks: [first_chunk[i], first_chunk[i + 1]) */
    uint32_t bsize;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int failed;            /* a worker failed (the pool keeps its error): the others stop */
    int stop;              /* the writer failed: laying more is no use */
    size_t laid;           /* files [0, laid) are in place */
    size_t by_xxh, by_sha; /* files checked by their XXH3-128, by their SHA-256 (the result's) */
    size_t by_blocks;      /* files each of whose blocks was checked against its id as well */
    uint64_t bytes;        /* written and hashed (atomic) */
    vss_laid *prog;        /* the writer's progress file (NULL: none; vss/laid.h) */
    uint32_t laid_gen;     /* what it says */
    om_file *replaced;     /* the .edb the restore's took the name of, still open: closed (its
                              blocks freed) by lay_watch once PostRestore is on its way */
    /* lay_watch's, on the caller's thread */
    int streaming, draw, paused, post_started;
    om_progress bar;
    struct post *post;
    pthread_t post_thread;
} lay;

/* Stops the other workers (waiting for their turn to hash, or about to take a chunk); returns
 * rc for the pool to keep with its detail. */
static int lay_fail(lay *l, int rc)
{
    pthread_mutex_lock(&l->mu);
    l->failed = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

/* Tells the writer how far the logs are (vss/laid.h): every generation through gen is whole
 * and in place. */
static void say_laid(lay *l, uint32_t gen)
{
    if (l->prog && vss_laid_say(l->prog, gen) != 0)
        om_warn("writing the restore progress: %s", om_err_detail());
    l->laid_gen = gen;
}

static int fetch_chunk(lay *l, bk_reader *rd, rfile *f, size_t b0, size_t nb, uint8_t *buf,
                       size_t *len, int covered);

/* A file whose check (SHA-256 or XXH3-128) failed: its blocks read again, each checked against its
 * id, to name the damaged one (fetch_chunk's error); when every block matches its id, the set lists
 * the wrong blocks for the file. buf: room for CHUNK_BLOCKS blocks. */
static int file_damage(lay *l, bk_reader *rd, rfile *f, uint8_t *buf)
{
    for (size_t b0 = 0; b0 < f->nblocks; b0 += CHUNK_BLOCKS) {
        size_t len = 0, nb = f->nblocks - b0 < CHUNK_BLOCKS ? f->nblocks - b0 : CHUNK_BLOCKS;
        int rc = fetch_chunk(l, rd, f, b0, nb, buf, &len, 0);
        if (rc) return rc;
    }
    return om_errf(OM_E_RepositoryCorrupt,
                   "set %.12s, file %s: the restored content does not match its %s (every "
                   "block matches its id: the set lists the wrong blocks, or records a wrong "
                   "hash of the file)",
                   f->set, f->name, f->xx ? "XXH3-128" : "SHA-256");
}

/* A plain repository's file whose XXH3-128 is not the one its set records, though each of its
 * blocks matched its id as it was laid: its SHA-256 decides, over its blocks fetched again (each
 * checked against its id again, so these are the bytes laid). Equal, the set's XXH3-128 alone is
 * wrong (written by hand, or a fault in the set): the file is what the backup read, and a value
 * beside the check must neither make a sound set unrestorable nor be what it is restored by
 * (*sound 1, a warning); else the set lists the wrong blocks (the error). buf: room for
 * CHUNK_BLOCKS blocks. */
static int sha_decides(lay *l, bk_reader *rd, rfile *f, uint8_t *buf, int *sound)
{
    *sound = 0;
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    if (!sha || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(sha);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    int rc = 0;
    for (size_t b0 = 0; b0 < f->nblocks && !rc; b0 += CHUNK_BLOCKS) {
        size_t len = 0, nb = f->nblocks - b0 < CHUNK_BLOCKS ? f->nblocks - b0 : CHUNK_BLOCKS;
        rc = fetch_chunk(l, rd, f, b0, nb, buf, &len, 0);
        if (!rc) EVP_DigestUpdate(sha, buf, len);
    }
    uint8_t got[32];
    unsigned gl = 0;
    char hex[65];
    if (!rc) EVP_DigestFinal_ex(sha, got, &gl);
    EVP_MD_CTX_free(sha);
    if (rc) return rc;
    for (unsigned i = 0; i < gl; i++)
        snprintf(hex + 2 * i, 3, "%02x", got[i]);
    if (strcmp(hex, f->sha_hex) != 0)
        return om_errf(OM_E_RepositoryCorrupt,
                       "set %.12s, file %s: the restored content does not match its SHA-256 (every "
                       "block matches its id: the set lists the wrong blocks, or records wrong "
                       "hashes of the file)",
                       f->set, f->name);
    om_warn("set %.12s, file %s: its recorded XXH3-128 is wrong, its content matches its SHA-256 "
            "and every block its id: restored by the SHA-256. HINT: ombra verify names the set",
            f->set, f->name);
    *sound = 1;
    return 0;
}

/* The file's last chunk was hashed: check its hash (on a mismatch sha_decides, for a file whose
 * blocks were checked against their ids, or file_damage names what is wrong, with the worker's
 * reader and buffer), then sync, rename into place and sync the folder.
 * The .edb keeps the file it replaces open (l->replaced) for lay_watch to close. */
static int finish_file(lay *l, rfile *f, bk_reader *rd, uint8_t *buf)
{
    uint8_t got[32];
    unsigned gl = 0;
    char hex[65];
    if (f->xx) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(f->xx));
        memcpy(got, c.digest, gl = sizeof c.digest);
    } else
        EVP_DigestFinal_ex(f->sha, got, &gl);
    for (unsigned i = 0; i < gl; i++)
        snprintf(hex + 2 * i, 3, "%02x", got[i]);
    int rc = 0, by_sha = !f->xx;
    om_file *old = NULL, *placed = NULL;
    if (f->xx ? memcmp(got, f->xxh, sizeof f->xxh) != 0 : strcmp(hex, f->sha_hex) != 0) {
        int sound = 0;
        if (f->by_blocks && (rc = sha_decides(l, rd, f, buf, &sound))) {
            om_durable_abort(&f->out);
            return rc;
        }
        if (!sound) {
            om_durable_abort(&f->out);
            return file_damage(l, rd, f, buf);
        }
        by_sha = 1;
    }
    /* The last generation takes its name only after the .edb has taken its own: dbutil recover
     * takes a restore whose last generation is in place as laid whole, and would otherwise
     * finish the .edb the target had before (a restore killed in between). */
    if (f->gen && f == &l->f[l->n - 1] && !l->f[0].gen) {
        pthread_mutex_lock(&l->mu);
        while (!l->f[0].done && !l->failed && !l->stop)
            pthread_cond_wait(&l->cv, &l->mu);
        int go = l->f[0].done;
        pthread_mutex_unlock(&l->mu);
        if (!go) {
            om_durable_abort(&f->out);
            return 0; /* the failure is another worker's, or the writer's */
        }
        pause_at("last_log");
    }
    if (!f->gen && f->unsynced)
        rc = om_durable_place_open(&f->out, f->replace ? OM_RENAME_REPLACE : 0,
                                   f->replace ? &old : NULL, &placed);
    else if (f->replace && !f->gen)
        rc = om_durable_commit_keep(&f->out, &old);
    else if (f->unsynced)
        rc = om_durable_place(&f->out, f->replace ? OM_RENAME_REPLACE : 0);
    else
        rc = om_durable_commit(&f->out, f->replace ? OM_RENAME_REPLACE : 0);
    if (rc) return rc;
    pthread_mutex_lock(&l->mu);
    if (old) l->replaced = old; /* only the .edb's: a log finishing after it must not drop it */
    f->done = 1;
    if (by_sha)
        l->by_sha++;
    else
        l->by_xxh++;
    if (f->by_blocks) l->by_blocks++;
    while (l->laid < l->n && l->f[l->laid].done) {
        if (l->f[l->laid].gen) say_laid(l, l->f[l->laid].gen);
        l->laid++;
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (!placed) return 0;
    /* The .edb is in place and the writer may begin: the disk takes the file meanwhile (the
     * writer's replay reads none of its pages before its end, eng_restore_opts.laid_unsynced),
     * and the laying ends only once the file and its name are synced. */
    rc = om_sync(placed);
    if (!rc) rc = om_dir_sync(f->dir);
    int crc = om_close(placed);
    return rc ? rc : crc;
}

/* The block read and check step: blocks [b0, b0 + nb) of f into buf (decrypted, decompressed);
 * *len: the bytes. Every block but a file's last is one block size long. covered: the file's
 * SHA-256 (or, in an encrypted repository, its XXH3-128 over authenticated blocks), which the
 * caller checks before the file is used, covers the content, so it is not hashed against its id
 * here as well (bk_reader_get_covered; each byte is hashed once); else each block's id is
 * checked: a plain repository's file checked by its XXH3-128 (f->by_blocks, as it is laid and in
 * sha_decides), and file_damage, naming the block of a file whose check failed. */
static int fetch_chunk(lay *l, bk_reader *rd, rfile *f, size_t b0, size_t nb, uint8_t *buf,
                       size_t *len, int covered)
{
    *len = 0;
    for (size_t i = b0; i < b0 + nb; i++) {
        uint8_t id[BK_ID_LEN];
        size_t dl = 0;
        char hexid[2 * BK_ID_LEN + 1];
        memcpy(hexid, f->blocks + i * 2 * BK_ID_LEN, 2 * BK_ID_LEN);
        hexid[2 * BK_ID_LEN] = 0;
        if (bk_unhex(hexid, id, BK_ID_LEN))
            return om_errf(OM_E_RepositoryCorrupt, "set %.12s: %s: bad block id", f->set, f->name);
        char key[24];
        snprintf(key, sizeof key, "%zu", i);
        const char *pcs = json_string_value(json_object_get(f->pieces, key));
        /* changemap: a region of slices (repo.h), each block's id checked (its file's digest is
         * over the ids, so it covers no content) */
        int rc = pcs                     ? bk_reader_get_ref(rd, id, pcs,
                                                             (uint32_t)(f->size - (uint64_t)i * l->bsize < l->bsize
                                                                            ? f->size - (uint64_t)i * l->bsize
                                                                            : l->bsize),
                                                             buf + *len, l->bsize, &dl)
                 : covered && !f->pieces ? bk_reader_get_covered(rd, id, buf + *len, l->bsize, &dl)
                                         : bk_reader_get(rd, id, buf + *len, l->bsize, &dl);
        if (rc)
            return om_err_ctx(rc, "set %.12s, file %s, block %zu (%.16s)", f->set, f->name, i,
                              hexid);
        int last = i + 1 == f->nblocks;
        if (dl > l->bsize || (!last && dl != l->bsize) || (uint64_t)i * l->bsize + dl > f->size ||
            (last && (uint64_t)i * l->bsize + dl != f->size))
            rc = om_errf(OM_E_RepositoryCorrupt,
                         "set %.12s, file %s: block %zu holds %zu bytes, which does not fit a "
                         "file of %llu bytes in blocks of %u",
                         f->set, f->name, i, dl, (unsigned long long)f->size, l->bsize);
        if (rc) return rc;
        *len += dl;
    }
    return 0;
}

/* Chunk c: its file *fi, its blocks [*b0, *b0 + *nb). The first chunk of a file taken creates the
 * file (mu held; a failure to create it is to set failed under mu, so no other chunk of the file
 * goes on). */
static int take_chunk(lay *l, size_t c, size_t *fi, size_t *b0, size_t *nb)
{
    size_t lo = 0, hi = l->n; /* the last file whose first chunk is at or before c */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->first_chunk[mid] <= c)
            lo = mid;
        else
            hi = mid;
    }
    rfile *f = &l->f[lo];
    *fi = lo;
    *b0 = (c - l->first_chunk[lo]) * CHUNK_BLOCKS;
    *nb = f->nblocks - *b0 < CHUNK_BLOCKS ? f->nblocks - *b0 : CHUNK_BLOCKS;
    if (f->chunk0_taken) return 0;
    f->chunk0_taken = 1;
    int rc = om_durable_begin(f->dir, f->dst, &f->out);
    if (rc) return rc;
    /* The .edb is written once and only the pages the logs touch are read back: around the
     * page cache, whose filling costs more CPU than the restore's own work (docs/design.md,
     * "Laying down"); where the file system cannot, through it. */
    if (!f->gen) (void)om_direct(f->out.f, 1);
    /* The file's check (docs/design.md, "In an encrypted repository the file's check is its
     * XXH3-128" and "In a plain repository each block by its id, the file by its XXH3-128"):
     * where the set has its XXH3-128, that, for what is left to find once every block is known
     * sound (a set listing the wrong blocks): in an encrypted repository every block and the set
     * are authenticated under the key; in a plain one each block is checked against its id, the
     * SHA-256 of its content, which a set id given to the restore pins, on the worker that
     * fetches it. Else its SHA-256 (sets of earlier builds; the regions form's ids). */
    int ok = 0;
    if (f->has_xxh) {
        ok = (f->xx = XXH3_createState()) && XXH3_128bits_reset(f->xx) == XXH_OK;
        f->by_blocks = !bk_repo_encrypted(l->r);
    } else
        ok = (f->sha = EVP_MD_CTX_new()) && EVP_DigestInit_ex(f->sha, EVP_sha256(), NULL) == 1;
    if (!ok) {
        om_durable_abort(&f->out);
        EVP_MD_CTX_free(f->sha);
        XXH3_freeState(f->xx);
        f->sha = NULL;
        f->xx = NULL;
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    return 0;
}

/* A worker's chunk buffer and repository reader. */
typedef struct layer {
    uint8_t *buf;
    size_t cap; /* bytes of buf used */
    int heap;   /* buf is the heap's, not om_huge_reserve's */
    bk_reader *rd;
} layer;

static void layer_buf_free(layer *w)
{
    if (w->heap)
        free(w->buf);
    else
        om_huge_release(w->buf, w->cap);
}

static int lay_begin(void *arg, void **ws)
{
    lay *l = arg;
    layer *w = calloc(1, sizeof *w);
    if (w) {
        /* In huge pages: the direct writes from it go out in a few large segments
         * (base/mem.h); under AddressSanitizer from the heap, whose bounds it checks. */
        w->cap = (size_t)CHUNK_BLOCKS * l->bsize;
#if !defined(__SANITIZE_ADDRESS__)
        w->buf = om_huge_reserve(w->cap);
#endif
        if (!w->buf) { /* aligned for writes around the cache */
            w->heap = 1;
            w->buf = aligned_alloc(OM_DIRECT_ALIGN, (w->cap + OM_DIRECT_ALIGN - 1) /
                                                        OM_DIRECT_ALIGN * OM_DIRECT_ALIGN);
        }
    }
    int rc = w && w->buf ? bk_reader_new(l->r, &w->rd) : om_errf(OM_E_OutOfMemory, "out of memory");
    if (rc) {
        if (w) layer_buf_free(w);
        free(w);
        return lay_fail(l, rc);
    }
    *ws = w;
    return 0;
}

static void lay_end(void *arg, void *ws)
{
    layer *w = ws;
    bk_reader_free(w->rd);
    layer_buf_free(w);
    free(w);
}

/* One chunk: read, decrypt, decompress and check its blocks, write them with one pwrite, then,
 * in block order, add them to the file's hash; the file's last chunk finishes the file. */
static int lay_chunk(void *arg, void *ws, size_t c)
{
    lay *l = arg;
    layer *w = ws;
    size_t fi = 0, b0 = 0, nb = 0, len = 0;
    pthread_mutex_lock(&l->mu);
    int none = l->failed || l->stop, rc = none ? 0 : take_chunk(l, c, &fi, &b0, &nb);
    if (rc) {
        l->failed = 1;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    if (rc || none) return rc; /* 0: the failure is the pool's already, or the writer's */
    rfile *f = &l->f[fi];
    uint64_t off = (uint64_t)b0 * l->bsize;
    rc = fetch_chunk(l, w->rd, f, b0, nb, w->buf, &len, !f->by_blocks);
    if (!rc) rc = om_pwrite(f->out.f, w->buf, len, off);
    if (rc) return lay_fail(l, rc);
    /* The header the writer reads first, into the page cache now (the direct write left it
     * out), so that reading it does not wait behind the file's sync (finish_file). */
    if (!f->gen && !b0 && f->unsynced && f->out.f->vfs->willneed)
        f->out.f->vfs->willneed(f->out.f, 0, len < (1u << 20) ? len : 1u << 20);
    pthread_mutex_lock(&l->mu);
    /* The chunks before this one were all taken (in order) and hash unless they stop. */
    while (f->hashed != b0 && !l->failed && !l->stop)
        pthread_cond_wait(&l->cv, &l->mu);
    none = f->hashed != b0;
    pthread_mutex_unlock(&l->mu);
    if (none) return 0;
    /* our turn: nobody else touches f->sha; the regions form hashes the (checked) ids */
    if (f->pieces)
        for (size_t i = b0; i < b0 + nb; i++) {
            uint8_t id[BK_ID_LEN];
            char hexid[2 * BK_ID_LEN + 1];
            snprintf(hexid, sizeof hexid, "%.64s", f->blocks + i * 2 * BK_ID_LEN);
            bk_unhex(hexid, id, BK_ID_LEN);
            EVP_DigestUpdate(f->sha, id, BK_ID_LEN);
        }
    else if (f->xx)
        XXH3_128bits_update(f->xx, w->buf, len);
    else
        EVP_DigestUpdate(f->sha, w->buf, len);
    pthread_mutex_lock(&l->mu);
    f->hashed += nb;
    __atomic_fetch_add(&l->bytes, len, __ATOMIC_RELAXED);
    int whole = f->hashed == f->nblocks;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (whole && (rc = finish_file(l, f, w->rd, w->buf))) return lay_fail(l, rc);
    return 0;
}

static int cmp_gen(const void *a, const void *b)
{
    const rfile *x = a, *y = b;
    return x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* A set's file entry: blocks and sha256 present, and a size its blocks can hold exactly (a
 * file of 0 bytes, or blocks that do not make ceil(size / block size), would never be laid
 * down whole). */
static int entry_ok(const char *sid, const char *name, json_t *f, uint32_t bsize, rfile *x)
{
    json_t *sz = json_object_get(f, "size");
    x->blocks = om_json_str_or(f, "blocks", NULL);
    x->pieces = json_object_get(f, "pieces");
    x->sha_hex = om_json_str_or(f, x->pieces ? "regions_sha256" : "sha256", NULL);
    json_t *xh = x->pieces ? NULL : json_object_get(f, "xxh3_128");
    x->has_xxh = xh != NULL;
    if (!x->blocks || !x->sha_hex || (x->pieces && !json_is_object(x->pieces)) ||
        (xh && bk_unhex(json_string_value(xh), x->xxh, sizeof x->xxh)) ||
        strlen(x->blocks) % (2 * BK_ID_LEN) || !json_is_integer(sz) || json_integer_value(sz) < 0)
        return om_errf(OM_E_RepositoryCorrupt, "set %.12s: file entry %s is malformed", sid, name);
    x->size = (uint64_t)json_integer_value(sz);
    x->nblocks = strlen(x->blocks) / (2 * BK_ID_LEN);
    uint64_t want = (x->size + bsize - 1) / bsize;
    if (!x->size || x->nblocks != want)
        return om_errf(OM_E_RepositoryCorrupt,
                       "set %.12s: file %s says %llu bytes in %zu blocks of %u bytes, which cannot "
                       "be (%llu blocks needed). HINT: the set is damaged; ombra verify names what "
                       "else is",
                       sid, name, (unsigned long long)x->size, x->nblocks, bsize,
                       (unsigned long long)want);
    return 0;
}

/* File entry f of the chain's set number si (id sid, log base name b) into the plan v (m entries,
 * v[0] the .edb): the base set's .edb, a log generation (a later set's copy replaces an earlier
 * one's); the checkpoint and a later set's .edb are left out. */
static int plan_entry(rfile *v, size_t *m, int *have_edb, size_t si, const char *sid, const char *b,
                      json_t *f, uint32_t bsize)
{
    const char *name = om_json_str_or(f, "name", "");
    uint32_t g = 0;
    int kind = bk_set_file_kind(name, b, &g);
    if (!kind) return om_err_ctx(OM_E_RepositoryCorrupt, "set %.12s", sid);
    rfile *x = NULL;
    if (kind == BK_FILE_EDB) {
        if (si) return 0; /* only the base set holds the database file */
        if (*have_edb)
            return om_errf(OM_E_RepositoryCorrupt, "set %.12s holds two database files", sid);
        x = &v[0];
        *have_edb = 1;
    } else if (kind == BK_FILE_LOG) {
        for (size_t j = 1; j < *m && !x; j++)
            if (v[j].gen == g) x = &v[j]; /* a later set's copy replaces it */
        if (!x) x = &v[(*m)++];
    } else
        return 0;
    x->set = sid;
    x->name = name;
    x->gen = g;
    snprintf(x->base, sizeof x->base, "%s", b);
    return entry_ok(sid, name, f, bsize, x);
}

/* The files of the chain, in the order they are laid down: the .edb of the base set, then the
 * log generations ascending, each from the newest set that holds it (the checkpoint is left
 * out: hard recovery starts from the header). Every name is checked for what it says
 * (setfiles.h) before anything is laid down. */
static int plan_files(json_t *docs, uint32_t bsize, rfile **out, size_t *n)
{
    size_t cap = 1, i, k;
    json_t *d, *f;
    json_array_foreach(docs, i, d) cap += json_array_size(json_object_get(d, "files"));
    rfile *v = calloc(cap, sizeof *v);
    if (!v) return om_errf(OM_E_OutOfMemory, "out of memory");
    size_t m = 1;
    int have_edb = 0, rc = 0;
    const char *first = NULL;
    json_array_foreach(docs, i, d)
    {
        const char *sid = om_json_str_or(d, "id", "?");
        const char *b = om_json_str_or(json_object_get(d, "database"), "base", "E00");
        if (!bk_base_ok(b)) {
            rc = om_errf(OM_E_RepositoryCorrupt,
                         "set %.12s: its log base name '%.20s' is not three letters or digits", sid,
                         b);
            break;
        }
        if (first && strcmp(first, b)) {
            rc = om_errf(OM_E_RepositoryCorrupt,
                         "set %.12s: its logs are named %s, those of the sets before it %s: they "
                         "are not one chain",
                         sid, b, first);
            break;
        }
        first = b;
        json_array_foreach(json_object_get(d, "files"), k, f)
        {
            if ((rc = plan_entry(v, &m, &have_edb, i, sid, b, f, bsize))) break;
        }
        if (rc) break;
    }
    if (!rc && !have_edb)
        rc = om_errf(OM_E_RepositoryCorrupt, "set %.12s holds no database file",
                     om_json_str_or(json_array_get(docs, 0), "id", "?"));
    if (rc) {
        free(v);
        return rc;
    }
    qsort(v + 1, m - 1, sizeof *v, cmp_gen);
    *out = v;
    *n = m;
    return 0;
}

/* Where each file goes and under which name: the .edb to the target's .edb path (the name the
 * writer gave: its folder is ed), the generations into ld as the target's names for them. The
 * writer says what may be replaced there (PreRestore checked it is the target's own), and
 * whether the generations may be placed without a sync each (logs_unsynced). */
static int place_files(rfile *f, size_t n, om_dir *ed, const char *edb_name, om_dir *ld,
                       const char *base, json_t *target)
{
    int replace_edb = json_is_true(json_object_get(target, "replace_edb")),
        replace_logs = json_is_true(json_object_get(target, "replace_logs")),
        unsynced = json_is_true(json_object_get(target, "logs_unsynced"));
    for (size_t i = 0; i < n; i++) {
        char p[4400];
        if (i && strcmp(f[i].base, base))
            return om_errf(OM_E_RepositoryCorrupt,
                           "set %.12s names its logs %s, its writer documents %s: they do not "
                           "belong together",
                           f[i].set, f[i].base, base);
        f[i].dir = i ? ld : ed;
        f[i].replace = i ? replace_logs : replace_edb;
        /* all but the last: one whose bytes were lost is found by replay (its successor's header
         * says how long it was, its segments have checksums); nothing follows the last one to
         * say so, and it could read as a shorter, valid generation (an older state) */
        f[i].unsynced = i && i + 1 < n && unsynced;
        /* the .edb: put in place before its sync, which its worker runs while the writer
         * replays (finish_file) */
        if (!i) f[i].unsynced = n > 1 && unsynced;
        if (i && eng_log_path(p, sizeof p, ld->path, base, f[i].gen)) return OM_E_InvalidPath;
        snprintf(f[i].dst, sizeof f[i].dst, "%s", i ? strrchr(p, '/') + 1 : edb_name);
    }
    return 0;
}

/* ---- the writer's PostRestore, while the logs are laid down ---- */

typedef struct post {
    vss_req *q;
    lay *l;
    json_t *done;
    int rc;
    int answered; /* PostRestore returned (under l->mu): replay_watch stops */
    om_err_saved err;
} post;

static void *post_thread(void *arg)
{
    post *p = arg;
    p->rc = vss_req_post_restore(p->q, &p->done);
    if (p->rc) om_err_save(&p->err, p->rc);
    pthread_mutex_lock(&p->l->mu);
    if (p->rc) p->l->stop = 1; /* no use laying more down */
    p->answered = 1;
    /* a worker waiting (its hash turn, the last generation for the .edb) sees it */
    pthread_cond_broadcast(&p->l->cv);
    pthread_mutex_unlock(&p->l->mu);
    return NULL;
}

/* The id of the store's database of that name ("" when there is none). */
static int store_db_id(const char *name, char id[37])
{
    store_client *sc = NULL;
    json_t *db = NULL;
    id[0] = 0;
    int rc = store_client_new(NULL, &sc);
    if (!rc) store_client_retry_busy(sc, 1);
    if (!rc && (rc = store_client_db_show(sc, name, &db)))
        rc = om_err_ctx(rc, "database '%s'", name);
    if (!rc) snprintf(id, 37, "%s", om_json_str_or(db, "id", ""));
    json_decref(db);
    store_client_free(sc);
    return rc == OM_E_DatabaseNotFound ? 0 : rc;
}

/* The restore options the store writer understands (store/writer.h). */
static json_t *writer_options(const bk_restore_opts *o, const char *orig_id, const rfile *f,
                              size_t n)
{
    json_t *ro = json_object();
    if (o->recovery) {
        json_object_set_new(ro, "target", json_string(o->recovery));
        json_object_set_new(ro, "recovery", json_true());
    } else if (o->to)
        json_object_set_new(ro, "target", json_string(o->to));
    else if (!o->edb) {
        json_object_set_new(ro, "target", json_string(o->db));
        json_object_set_new(ro, "target_id", json_string(orig_id));
    }
    if (o->mount) json_object_set_new(ro, "mount", json_true());
    if (o->no_roll_forward) json_object_set_new(ro, "roll_forward", json_false());
    if (o->until_gen) json_object_set_new(ro, "stop_gen", json_integer(o->until_gen));
    if (o->until_time_ns)
        json_object_set_new(ro, "stop_time_ns", json_integer((json_int_t)o->until_time_ns));
    if (!o->no_replay && n > 1) { /* replay starts while the logs are still laid down */
        json_object_set_new(ro, "logs_arriving", json_pack("[i, i]", f[1].gen, f[n - 1].gen));
        /* and reads them before they go: they need not reach the disk one by one (the writer
         * decides, PreRestore's logs_unsynced) */
        json_object_set_new(ro, "logs_unsynced", json_true());
    }
    /* the generations this restore lays down: a replay finished by dbutil recover after the
     * restore was stopped must not end before the last of them (an older state than the set's) */
    if (n > 1) json_object_set_new(ro, "laid_range", json_pack("[i, i]", f[1].gen, f[n - 1].gen));
    return ro;
}

/* The folders the writer named (PreRestore's answer: target), opened without following a link
 * at their last component (the writer made or checked them), the files placed in them, and
 * while streaming the progress file the writer made, held for session (vss/laid.h). */
static int open_places(json_t *target, rfile *f, size_t n, const char *session, om_dir **ed,
                       om_dir **ld, vss_laid **progress)
{
    om_vfs *v = om_vfs_posix();
    const char *edb = om_json_str_or(target, "edb", NULL),
               *logs = om_json_str_or(target, "logs", NULL),
               *prog = om_json_str_or(target, "progress", NULL),
               *base = om_json_str_or(target, "base", NULL);
    const char *slash = edb ? strrchr(edb, '/') : NULL;
    char dir[4096];
    if (!slash || !slash[1] || !logs || !base || (session && !prog))
        return om_errf(OM_E_Internal, "the writer did not say where the files go");
    om_dirname(edb, dir, sizeof dir);
    int rc = om_dir_open(v, NULL, dir, 0, ed);
    if (!rc) rc = om_dir_open(v, NULL, logs, 0, ld);
    if (!rc) rc = place_files(f, n, *ed, slash + 1, *ld, base, target);
    if (!rc && session) rc = vss_laid_hold(v, prog, session, progress);
    if (rc) {
        vss_laid_release(*progress);
        *progress = NULL;
        om_dir_close(*ed);
        om_dir_close(*ld);
        *ed = *ld = NULL;
    }
    return rc;
}

/* The caller's side while the files are laid down (a progress call of the pool, every 10 ms and
 * once at the end): the bar, and PostRestore started once the .edb and the first generation are
 * in place, as long as laying goes on. A failure to start it fails the laying. */
static int lay_watch(void *arg, uint64_t bytes)
{
    lay *l = arg;
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    int going = !l->failed && !l->stop && (l->laid < l->n || (l->streaming && !l->post_started));
    if (going && l->laid >= 1 && !l->paused) {
        l->paused = 1;
        pthread_mutex_unlock(&l->mu);
        pause_at("edb");
        pthread_mutex_lock(&l->mu);
        going = !l->failed && !l->stop;
    }
    if (going && l->streaming && !l->post_started && l->laid >= 2) {
        pthread_mutex_unlock(&l->mu);
        l->post_started = pthread_create(&l->post_thread, NULL, post_thread, l->post) == 0;
        if (!l->post_started) rc = lay_fail(l, om_errf(OM_E_OutOfMemory, "cannot start a thread"));
        pause_at("replaying");
        pthread_mutex_lock(&l->mu);
    }
    om_file *old = NULL;
    if (l->post_started || !l->streaming) {
        old = l->replaced;
        l->replaced = NULL;
    }
    pthread_mutex_unlock(&l->mu);
    om_close(old); /* the replaced .edb's blocks freed, while the writer replays */
    if (l->draw) om_progress_update(&l->bar, bytes);
    return rc;
}

/* The name this server's ombra-store was started with (--server). */
static int local_server(char *out, size_t n)
{
    store_client *sc = NULL;
    json_t *st = NULL;
    int rc = store_client_new(NULL, &sc);
    if (!rc) store_client_retry_busy(sc, 1);
    if (!rc) rc = store_client_status(sc, &st);
    const char *srv = om_json_str_or(st, "server", "");
    if (!rc && !*srv) rc = om_errf(OM_E_Internal, "the store did not say its server's name");
    if (!rc) snprintf(out, n, "%s", srv);
    json_decref(st);
    store_client_free(sc);
    return rc ? om_err_ctx(rc, "asking ombra-store for this server's name") : 0;
}

/* The writer of class cls (named wname in messages) that this server's ombra-vssd has: *pick,
 * in *writers (gathered here; the caller's to decref, on failure too). Several of that class
 * are one too many unless one of them is the saved instance sinst. */
static int pick_writer(vss_req *q, const char *cls, const char *wname, const char *sinst,
                       const char *db_id, json_t **writers, json_t **pick)
{
    *pick = NULL;
    int rc = vss_req_gather_metadata(q, writers);
    size_t i, n = 0;
    json_t *w;
    json_array_foreach(*writers, i, w)
    {
        if (strcmp(om_json_str_or(w, "class_id", ""), cls) || !json_object_get(w, "metadata"))
            continue;
        n++;
        if (!*pick || !strcmp(om_json_str_or(w, "instance_id", ""), sinst)) *pick = w;
    }
    if (!rc && !*pick)
        rc = om_errf(OM_E_WriterNotResponding,
                     "no '%s' (class %s) is connected to ombra-vssd on this server to restore "
                     "database %s through. HINT: start ombra-store here; ombra vss writers lists "
                     "the writers",
                     wname, cls, db_id);
    else if (!rc && n > 1 && strcmp(om_json_str_or(*pick, "instance_id", ""), sinst))
        rc = om_errf(OM_E_InvalidParameter,
                     "%zu writers '%s' are connected to ombra-vssd on this server: which store "
                     "restores database %s is not clear. HINT: give each ombra-store its own "
                     "OMBRA_RUNTIME_DIR",
                     n, wname, db_id);
    return rc;
}

/* The writer metadata wmd for this server's writer pick: its class, name and instance id, and
 * the database's component (saved under slp) and its Logs (saved as slogs) renamed to lp and
 * logs; the other components left out. A new document. */
static json_t *renamed_metadata(json_t *wmd, json_t *pick, const char *db_id, const char *slp,
                                const char *lp, const char *slogs, const char *logs)
{
    json_t *m = json_deep_copy(wmd), *keep = json_array(), *k, *w = json_object_get(m, "writer");
    size_t i;
    json_object_set_new(w, "instance_id", json_string(om_json_str_or(pick, "instance_id", "")));
    json_object_set_new(w, "class_id", json_string(om_json_str_or(pick, "class_id", "")));
    json_object_set_new(w, "name", json_string(om_json_str_or(pick, "name", "")));
    json_array_foreach(json_object_get(m, "components"), i, k)
    {
        const char *klp = om_json_str_or(k, "logical_path", ""),
                   *kn = om_json_str_or(k, "name", "");
        if (!strcmp(klp, slp) && !strcmp(kn, db_id))
            json_object_set_new(k, "logical_path", json_string(lp));
        else if (!strcmp(klp, slogs))
            json_object_set_new(k, "logical_path", json_string(logs));
        else
            continue;
        json_array_append(keep, k);
    }
    json_object_set_new(m, "components", keep);
    return m;
}

/* The writer a restore goes through (spec §6: a database is not tied to a server). The set names
 * the writer instance and the component of the server the backup was made on; they are
 * information, not a requirement. The restore goes through this server's writer of the class
 * bk_restore_via_writer says (chain.h: the store writer for a set of the store writer or of the
 * replica writer), its instance id into inst, and the database's component under that writer's
 * own logical path into comp: "Ombra Store\<this server>\<database id>" (store/writer.h) for a
 * saved "Ombra Store\<the backup's server>\<database id>" or "Replica\<its server>\<database
 * id>". *md (the load_documents metadata array) and *doc (the components document) are the set's
 * documents with that writer's class, name and instance id and that component (and its Logs
 * subcomponent) in place of the saved ones; each component's backup_metadata, what the backup was
 * of, goes on as saved, and the saved names stay beside it ("backed_up_as"). The same server
 * and writer give back the saved names. */
static int local_writer(vss_req *q, json_t *set, json_t *saved, const char *db_id, char inst[37],
                        char *comp, size_t clen, json_t **md, json_t **doc)
{
    json_t *wmd = json_object_get(set, "writer_metadata"), *writers = NULL, *pick = NULL;
    const char *sinst = om_json_str_or(saved, "instance_id", ""),
               *scomp = om_json_str_or(saved, "component", ""),
               *scls = om_json_str_or(json_object_get(wmd, "writer"), "class_id", "");
    *md = *doc = NULL;
    char server[256] = "", logs[700] = "";
    bk_restore_via via;
    int rc = local_server(server, sizeof server);
    if (!rc)
        rc =
            bk_restore_via_writer(om_json_str_or(set, "id", "?"), scls, scomp, db_id, server, &via);
    if (!rc)
        rc = pick_writer(q, via.cls,
                         via.replica ? "Ombra Store Writer"
                                     : om_json_str_or(json_object_get(wmd, "writer"), "name", "?"),
                         sinst, db_id, &writers, &pick);
    if (rc) {
        json_decref(writers);
        return rc;
    }
    snprintf(inst, 37, "%s", om_json_str_or(pick, "instance_id", ""));
    snprintf(comp, clen, "%s", via.comp);
    snprintf(logs, sizeof logs, "%s", via.comp);
    *md = json_pack("[{s:s, s:o}]", "instance_id", inst, "metadata",
                    renamed_metadata(wmd, pick, db_id, via.saved_lp, via.lp, scomp, logs));
    /* The components document: this database's component only, for this writer. */
    json_t *one = json_copy(saved);
    json_object_set_new(one, "instance_id", json_string(inst));
    json_object_set_new(one, "component", json_string(comp));
    json_object_set_new(one, "backed_up_as",
                        json_pack("{s:s, s:s, s:s, s:s}", "server",
                                  om_json_str_or(set, "server", ""), "instance_id", sinst,
                                  "component", scomp, "writer_class", scls));
    *doc = json_copy(json_object_get(set, "components_document"));
    json_object_set_new(*doc, "components", json_pack("[o]", one));
    json_decref(writers);
    if (strcmp(inst, sinst) || strcmp(comp, scomp))
        om_debug("restoring database %s, backed up on server %s as %s (writer %s%s), through this "
                 "server's writer %s as %s",
                 db_id, om_json_str_or(set, "server", "?"), scomp, sinst,
                 via.replica ? ", a passive copy's" : "", inst, comp);
    return 0;
}

/* ---- the run: plan → prepare → lay down → replay → report ---- */

/* What the steps of one run share. A step that fails leaves what it opened here, for
 * restore_report, the one cleanup path. */
typedef struct bk_restore_state {
    const bk_restore_opts *o;
    uint64_t t0;
    json_t *res;           /* the result (the caller's) */
    bk_repo *r;            /* open from plan to report */
    char id[37], here[37]; /* the database's id | the id of the store's database of its name */
    json_t *sets, *chain;  /* the repository's set summaries | the chain for the point */
    json_t *docs;          /* the chain's sets, loaded whole and checked, base first */
    rfile *files;          /* in the order they are laid down (plan_files) */
    size_t nfiles;
    vss_req *q;               /* the restore session: released by report */
    char inst[37], comp[700]; /* this server's writer instance, the component restored */
    json_t *targets;          /* PreRestore's answer: where the files go, per component */
    lay lay;                  /* laying the files down (restore_lay) */
    post post;                /* the writer's PostRestore (its answer: post.done) */
    int laying;               /* lay and post are set up: restore_replay waits for PostRestore */
    uint64_t bytes, lay_ns;   /* laid down, and how long that took */
} bk_restore_state;

/* Each set of the chain loaded whole and checked (bk_set_check: a crafted document never steers
 * a restore), into st->docs, and named in the result's "sets". */
static int load_chain(bk_restore_state *st)
{
    size_t i;
    json_t *s;
    json_array_foreach(st->chain, i, s)
    {
        json_t *d = NULL;
        int rc = bk_set_load(st->r, om_json_str_or(s, "id", ""), &d);
        if (rc) return rc;
        if ((rc = bk_set_check(st->r, d))) {
            json_decref(d);
            return rc;
        }
        json_array_append_new(st->docs, d);
        json_array_append_new(json_object_get(st->res, "sets"),
                              json_pack("{s:s, s:s, s:O}", "id", om_json_str_or(s, "id", ""),
                                        "type", om_json_str_or(s, "type", ""), "log_range",
                                        json_object_get(s, "log_range")));
    }
    return 0;
}

/* Plan: which database the backups are of (its id: the store's when it is on this server, else
 * the one the repository's sets of that name say; a database that is not here needs a target),
 * the chain of sets for the point, loaded and checked (the caller's on_chain sees it), and the
 * files in the order they are laid down (plan_files: every name checked), none past a point by
 * generation. Nothing is asked of the writer yet. */
static int restore_plan(bk_restore_state *st)
{
    const bk_restore_opts *o = st->o;
    int rc = bk_repo_open(o->repo, o->passphrase, &st->r);
    if (!rc) pause_at("opened"); /* a backup may publish a set before the sets are read */
    if (!rc) rc = store_db_id(o->db, st->here);
    /* every set read now: the restore decides by the sets themselves, never by summaries kept
     * in the data directory (repo.h, bk_sets_whole) */
    if (!rc) rc = bk_sets_whole(st->r, &st->sets);
    if (!rc) rc = bk_source_db(st->sets, o->db, st->here, o->to || o->recovery || o->edb, st->id);
    if (!rc && !st->here[0] && !o->to && !o->recovery && !o->edb)
        rc = om_errf(OM_E_DatabaseNotFound,
                     "database '%s' is not on this server; its backups (of %s) are in the "
                     "repository. HINT: restore them with --to DB, --recovery NAME or "
                     "--edb PATH --logs DIR",
                     o->db, st->id);
    bk_point pt = {
        .set_id = o->set_id, .until_gen = o->until_gen, .until_time_ns = o->until_time_ns};
    if (!rc) rc = bk_chain(st->sets, st->id, &pt, &st->chain);
    if (!rc) rc = load_chain(st);
    if (!rc && o->on_chain) o->on_chain(o->arg, json_object_get(st->res, "sets"));
    if (!rc) rc = plan_files(st->docs, bk_repo_block_size(st->r), &st->files, &st->nfiles);
    /* A point by generation needs no log after it (files[0] is the .edb; logs ascend). */
    while (!rc && o->until_gen && st->nfiles > 2 && st->files[st->nfiles - 1].gen > o->until_gen)
        st->nfiles--;
    return rc;
}

/* The set's component of database id in its components document (a backup of several databases
 * saved the whole document), or NULL. */
static json_t *saved_component(json_t *set, const char *id)
{
    json_t *saved = NULL, *c;
    size_t i;
    json_array_foreach(json_object_get(json_object_get(set, "components_document"), "components"),
                       i, c)
    {
        if (!strcmp(om_json_str_or(json_object_get(c, "backup_metadata"), "db_id", ""), id))
            saved = c;
    }
    return saved;
}

/* Prepare the target: a restore session through this server's writer (local_writer) with the
 * newest set's documents, the component with the restore options and new paths, and PreRestore,
 * which says where the files go and which names may be replaced (st->targets), and refuses a
 * mounted target, one that does not allow restore, one with another id. Nothing is written. */
static int restore_prepare(bk_restore_state *st)
{
    const bk_restore_opts *o = st->o;
    json_t *last = json_array_get(st->docs, json_array_size(st->docs) - 1);
    json_t *saved = saved_component(last, st->id), *md = NULL, *cdoc = NULL;
    int rc = 0;
    if (!json_is_object(json_object_get(last, "writer_metadata")) || !saved)
        rc = om_errf(OM_E_RepositoryCorrupt, "set %s lacks its writer documents",
                     om_json_str_or(last, "id", "?"));
    if (!rc) rc = vss_req_begin(NULL, VSS_SESSION_RESTORE, &st->q);
    if (!rc)
        rc = local_writer(st->q, last, saved, st->id, st->inst, st->comp, sizeof st->comp, &md,
                          &cdoc);
    if (!rc) rc = vss_req_load_documents(st->q, md, cdoc);
    json_decref(md);
    json_decref(cdoc);
    if (!rc) {
        json_t *ro = writer_options(o, st->id, st->files, st->nfiles), *nt = NULL;
        if (o->edb) nt = json_pack("{s:s, s:s}", "edb", o->edb, "logs", o->logs);
        rc = vss_req_add_restore_component(st->q, st->inst, st->comp, ro, nt);
        json_decref(ro);
        json_decref(nt);
    }
    if (!rc && o->no_replay) rc = vss_req_set_additional_restores(st->q, 1);
    if (!rc) rc = vss_req_pre_restore(st->q, &st->targets);
    if (!rc) pause_at("prepared");
    return rc;
}

/* The laying set up: the files' chunks numbered (first_chunk; first_chunk[n] is the count), the
 * folders PreRestore named opened and the files placed in them (open_places: while streaming,
 * the writer's progress file held), the lock made. On failure nothing is left. */
static int lay_open(bk_restore_state *st, om_dir **ed, om_dir **ld)
{
    lay *l = &st->lay;
    size_t n = st->nfiles, nchunks = 0;
    *l = (lay){.r = st->r,
               .f = st->files,
               .n = n,
               .bsize = bk_repo_block_size(st->r),
               .streaming = !st->o->no_replay && n > 1,
               .draw = st->o->progress,
               .post = &st->post};
    st->post = (post){.q = st->q, .l = l};
    if (!(l->first_chunk = malloc((n + 1) * sizeof *l->first_chunk)))
        return om_errf(OM_E_OutOfMemory, "out of memory");
    for (size_t i = 0; i <= n; i++) {
        l->first_chunk[i] = nchunks;
        if (i < n) nchunks += (st->files[i].nblocks + CHUNK_BLOCKS - 1) / CHUNK_BLOCKS;
    }
    const char *session = l->streaming ? vss_req_session(st->q) : NULL;
    int rc = open_places(json_object_get(st->targets, st->comp), st->files, n, session, ed, ld,
                         &l->prog);
    if (rc) {
        free(l->first_chunk);
        l->first_chunk = NULL;
        return rc;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    st->laying = 1;
    return 0;
}

/* Lay down and check: the files on every core (lay_chunk: each block's id checked as it is read
 * back, each file's hash before it takes its name), the writer's PostRestore started by
 * lay_watch as soon as the .edb and the first generation are in place (when it replays while the
 * rest arrive). Whatever the result, what laying holds is released here: the progress file (a
 * writer still waiting for a generation sees the restore gone), the temporary names of files not
 * in place, the folders. A PostRestore started is left for restore_replay to wait for. */
static int restore_lay(bk_restore_state *st)
{
    uint64_t t0 = om_mono_ns();
    lay *l = &st->lay;
    om_dir *ed = NULL, *ld = NULL;
    int rc = lay_open(st, &ed, &ld);
    if (rc) return rc;
    uint64_t total = 0;
    for (size_t i = 0; i < l->n; i++)
        total += l->f[i].size;
    /* Two workers a core: the .edb's writes wait on the disk (they bypass the cache), and the
     * other worker of the core fetches and checks meanwhile. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int nw = cores < 1 ? 2 : 2 * cores > MAX_WORKERS ? MAX_WORKERS : 2 * (int)cores;
    if (l->draw) om_progress_start(&l->bar, "restore", total, "bytes");
    om_pool pool = {.workers = nw,
                    .ctx = l,
                    .fn = lay_chunk,
                    .worker_begin = lay_begin,
                    .worker_end = lay_end,
                    .progress = lay_watch,
                    .count = &l->bytes,
                    .interval_ms = 10};
    om_err_saved failed; /* kept past the cleanup below, which may set another detail */
    rc = om_err_save(&failed, om_pool_run(&pool, l->first_chunk[l->n]));
    if (l->draw) om_progress_end(&l->bar);
    vss_laid_release(l->prog);
    om_close(l->replaced);
    l->replaced = NULL;
    for (size_t i = 0; i < l->n; i++) {
        om_durable_abort(&l->f[i].out); /* a file begun and not put in place: its temporary name */
        if (l->f[i].sha) EVP_MD_CTX_free(l->f[i].sha);
        XXH3_freeState(l->f[i].xx);
    }
    om_dir_close(ed);
    om_dir_close(ld);
    free(l->first_chunk);
    l->first_chunk = NULL;
    st->bytes = l->bytes;
    st->lay_ns = om_mono_ns() - t0;
    return rc ? om_err_restore(&failed) : 0;
}

/* ---- the replay's progress bar ---- */

/* Generation gen of first..last replayed: the bar, started at the first call. */
static void replay_draw(om_progress *bar, int *drawn, json_t *rp, int last_is_done)
{
    json_int_t first = json_integer_value(json_object_get(rp, "first_gen")),
               last = json_integer_value(json_object_get(rp, "last_gen")),
               gen = last_is_done ? last : json_integer_value(json_object_get(rp, "gen"));
    if (first < 1 || last < first || gen < first || gen > last) return;
    if (!*drawn) om_progress_start(bar, "replay", (uint64_t)(last - first + 1), "generations");
    *drawn = 1;
    if (!last_is_done) bar->total = (uint64_t)(last - first + 1);
    om_progress_update(bar, (uint64_t)(gen - first + 1));
}

/* While the writer replays, until PostRestore answers: the replay's progress, which only the
 * store knows (it runs hard recovery), read from its status request (restores[].replay of this
 * session, store/store_writer.h) every 50 ms. The bar ends at the answer's figures, so a replay
 * too quick to be seen half way still shows what it did. Draws nothing when the store cannot be
 * asked: a bar is no reason to fail a restore. */
static void replay_watch(bk_restore_state *st)
{
    lay *l = &st->lay;
    const char *session = vss_req_session(st->q);
    store_client *sc = NULL;
    om_progress bar = {0};
    int drawn = 0, answered = 0;
    if (store_client_new(NULL, &sc)) sc = NULL;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        answered = st->post.answered;
        pthread_mutex_unlock(&l->mu);
        if (answered) break;
        json_t *status = NULL, *r;
        size_t i;
        if (sc && !store_client_status(sc, &status))
            json_array_foreach(json_object_get(status, "restores"), i, r)
            {
                if (!strcmp(om_json_str_or(r, "session", ""), session))
                    replay_draw(&bar, &drawn, json_object_get(r, "replay"), 0);
            }
        json_decref(status);
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    json_t *t = json_object_get(st->post.done, st->comp);
    if (!st->post.rc) replay_draw(&bar, &drawn, json_object_get(t, "replay"), 1);
    if (drawn) om_progress_end(&bar);
    store_client_free(sc);
}

/* Replay: when the files are laid down, PostRestore if laying did not start it (no_replay: the
 * writer only takes note; the .edb alone), then, whatever failed, PostRestore waited for when it
 * was started (and the laying's lock undone). rc: the failure so far, which comes first; then
 * PostRestore's. Its answer stays in st->post.done for the report. */
static int restore_replay(bk_restore_state *st, int rc)
{
    if (!st->laying) return rc;
    lay *l = &st->lay;
    om_err_saved failed;
    om_err_save(&failed, rc);
    if (!rc && l->laid == l->n) pause_at("laid");
    if (!rc && !l->post_started) {
        l->post_started = pthread_create(&l->post_thread, NULL, post_thread, &st->post) == 0;
        if (!l->post_started)
            rc = om_err_save(&failed, om_errf(OM_E_OutOfMemory, "cannot start a thread"));
    }
    if (st->o->progress && l->post_started && !rc && !st->o->no_replay) {
        fprintf(stderr, "files laid down; the writer finishes replaying the logs...\n");
        replay_watch(st);
    }
    if (l->post_started) pthread_join(l->post_thread, NULL);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    st->laying = 0;
    if (rc) return om_err_restore(&failed);
    if (st->post.rc) return om_err_restore(&st->post.err);
    return 0;
}

/* Report, and the one cleanup path whatever failed: the session released (the failure's detail
 * kept first: the release may set another), the result's target, replay, recovery, copy_of and
 * figures, everything freed. Returns rc with its detail. */
static int restore_report(bk_restore_state *st, int rc)
{
    const bk_restore_opts *o = st->o;
    json_t *res = st->res;
    char detail[1400] = "";
    if (rc) snprintf(detail, sizeof detail, "%s", om_err_detail());
    if (st->q) vss_req_release(st->q);
    json_t *t = json_object_get(st->post.done, st->comp);
    json_object_set_new(res, "target",
                        json_string(om_json_str_or(t, "name",
                                                   o->recovery ? o->recovery
                                                   : o->to     ? o->to
                                                               : o->db)));
    json_object_set(res, "replay",
                    json_object_get(t, "replay") ? json_object_get(t, "replay") : json_null());
    /* A restore next to a database of this server made the target a recovery database. */
    json_t *tg = json_object_get(st->targets, st->comp);
    json_object_set_new(res, "recovery",
                        json_boolean(json_is_true(json_object_get(tg, "recovery"))));
    if (json_is_string(json_object_get(tg, "copy_of")))
        json_object_set(res, "copy_of", json_object_get(tg, "copy_of"));
    if (st->id[0]) json_object_set_new(json_object_get(res, "database"), "id", json_string(st->id));
    json_object_set_new(res, "files", json_integer((json_int_t)st->nfiles));
    json_object_set_new(res, "bytes", json_integer((json_int_t)st->bytes));
    json_object_set_new(res, "lay_seconds", json_real((double)st->lay_ns / 1e9));
    json_object_set_new(res, "checked_by",
                        json_pack("{s:I, s:I, s:I}", "xxh3_128", (json_int_t)st->lay.by_xxh,
                                  "sha256", (json_int_t)st->lay.by_sha, "block_ids",
                                  (json_int_t)st->lay.by_blocks));
    json_object_set_new(res, "seconds", json_real((double)(om_mono_ns() - st->t0) / 1e9));
    free(st->files);
    json_decref(st->sets);
    json_decref(st->chain);
    json_decref(st->docs);
    json_decref(st->targets);
    json_decref(st->post.done);
    /* The copies this restore found damaged are listed (damaged.json): the next backup stores
     * those blocks again. Its own failure is only a line: the restore's result stands. */
    if (st->r && bk_damaged_save(st->r))
        om_warn("listing the damaged copies this restore found: %s", om_err_detail());
    bk_repo_close(st->r);
    if (rc) om_errf(rc, "%s", detail);
    return rc;
}

int bk_restore_run(const bk_restore_opts *o, json_t **result)
{
    bk_restore_state st = {.o = o, .t0 = om_mono_ns()};
    st.res = json_pack("{s:{s:n, s:s}, s:[]}", "database", "id", "name", o->db, "sets");
    *result = st.res;
    st.docs = json_array();
    int rc = restore_plan(&st);
    if (!rc) rc = restore_prepare(&st);
    if (!rc) rc = restore_lay(&st);
    rc = restore_replay(&st, rc); /* a PostRestore the laying started is waited for, always */
    return restore_report(&st, rc);
}
