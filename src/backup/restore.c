/* The restore job (restore.h has the sequence). */
#include "backup/restore.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/chain.h"
#include "backup/job.h"
#include "backup/repo.h"
#include "backup/setfiles.h"
#include "base/error.h"
#include "base/logging.h"
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

/* A test hook, as the backup's: stop at a stage (SIGSTOP) for the test to kill or go on. */
static void pause_at(const char *stage)
{
    const char *want = getenv("OMBRA_RESTORE_PAUSE");
    if (!want || strcmp(want, stage)) return;
    fprintf(stderr, "paused %s\n", stage);
    fflush(stderr);
    raise(SIGSTOP);
}

/* ---- laying the files down ---- */

/* One file to lay down through the durable-file helper (base/vfs.h): a temporary name unique
 * to this restore in its folder, written in chunks of consecutive blocks, hashed in order,
 * checked, synced, renamed to its name, the folder synced. Its name comes from the target and
 * the generation, never from the set (whose names are only checked for what they say). */
typedef struct rfile {
    const char *set, *name, *blocks, *sha_hex; /* name: the set's, for messages */
    size_t nblocks;
    uint64_t size;
    uint32_t gen;     /* a log generation; 0: the .edb */
    char base[4];     /* the log base name of its set */
    om_dir *dir;      /* where it goes (lay_and_replay's) */
    char dst[256];    /* its name there */
    int replace;      /* the writer said the name may be replaced (OM_RENAME_REPLACE) */
    om_durable out;   /* out.f open from the first chunk handed out to the commit */
    EVP_MD_CTX *sha;  /* in block order: the worker whose turn it is updates it */
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
    int failed;        /* a worker failed (the pool keeps its error): the others stop */
    int stop;          /* the writer failed: laying more is no use */
    size_t laid;       /* files [0, laid) are in place */
    uint64_t bytes;    /* written and hashed (atomic) */
    vss_laid *prog;    /* the writer's progress file (NULL: none; vss/laid.h) */
    uint32_t laid_gen; /* what it says */
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

/* The file's last chunk was hashed: check its SHA-256, then sync, rename into place and sync
 * the folder. */
static int finish_file(lay *l, rfile *f)
{
    uint8_t got[32];
    unsigned gl = 0;
    char hex[65];
    EVP_DigestFinal_ex(f->sha, got, &gl);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", got[i]);
    int rc = 0;
    if (strcmp(hex, f->sha_hex))
        rc = om_errf(OM_E_RepositoryCorrupt,
                     "set %.12s, file %s: the restored content does not match its SHA-256", f->set,
                     f->name);
    if (rc)
        om_durable_abort(&f->out);
    else
        rc = om_durable_commit(&f->out, f->replace ? OM_RENAME_REPLACE : 0);
    if (rc) return rc;
    pthread_mutex_lock(&l->mu);
    f->done = 1;
    while (l->laid < l->n && l->f[l->laid].done) {
        if (l->f[l->laid].gen) say_laid(l, l->f[l->laid].gen);
        l->laid++;
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* Reads blocks [b0, b0 + nb) of f into buf (decrypted, decompressed, ids checked); *len: the
 * bytes. Every block but a file's last is one block size long. */
static int fetch_chunk(lay *l, bk_reader *rd, rfile *f, size_t b0, size_t nb, uint8_t *buf,
                       size_t *len)
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
        int rc = bk_reader_get(rd, id, buf + *len, l->bsize, &dl);
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
    f->sha = EVP_MD_CTX_new();
    if (!f->sha || EVP_DigestInit_ex(f->sha, EVP_sha256(), NULL) != 1) {
        om_durable_abort(&f->out);
        EVP_MD_CTX_free(f->sha);
        f->sha = NULL;
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    return 0;
}

/* A worker's chunk buffer and repository reader. */
typedef struct layer {
    uint8_t *buf;
    bk_reader *rd;
} layer;

static int lay_begin(void *arg, void **ws)
{
    lay *l = arg;
    layer *w = calloc(1, sizeof *w);
    if (w) w->buf = malloc((size_t)CHUNK_BLOCKS * l->bsize);
    int rc = w && w->buf ? bk_reader_new(l->r, &w->rd) : om_errf(OM_E_OutOfMemory, "out of memory");
    if (rc) {
        if (w) free(w->buf);
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
    free(w->buf);
    free(w);
}

/* One chunk: read, decrypt, decompress and check its blocks, write them with one pwrite, then,
 * in block order, add them to the file's SHA-256; the file's last chunk finishes the file. */
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
    rc = fetch_chunk(l, w->rd, f, b0, nb, w->buf, &len);
    if (!rc) rc = om_pwrite(f->out.f, w->buf, len, (uint64_t)b0 * l->bsize);
    if (rc) return lay_fail(l, rc);
    pthread_mutex_lock(&l->mu);
    /* The chunks before this one were all taken (in order) and hash unless they stop. */
    while (f->hashed != b0 && !l->failed && !l->stop)
        pthread_cond_wait(&l->cv, &l->mu);
    none = f->hashed != b0;
    pthread_mutex_unlock(&l->mu);
    if (none) return 0;
    EVP_DigestUpdate(f->sha, w->buf, len); /* our turn: nobody else touches f->sha */
    pthread_mutex_lock(&l->mu);
    f->hashed += nb;
    __atomic_fetch_add(&l->bytes, len, __ATOMIC_RELAXED);
    int whole = f->hashed == f->nblocks;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (whole && (rc = finish_file(l, f))) return lay_fail(l, rc);
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
    x->sha_hex = om_json_str_or(f, "sha256", NULL);
    if (!x->blocks || !x->sha_hex || strlen(x->blocks) % (2 * BK_ID_LEN) || !json_is_integer(sz) ||
        json_integer_value(sz) < 0)
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
            const char *name = om_json_str_or(f, "name", "");
            uint32_t g = 0;
            int kind = bk_set_file_kind(name, b, &g);
            if (!kind) {
                rc = om_err_ctx(OM_E_RepositoryCorrupt, "set %.12s", sid);
                break;
            }
            rfile *x = NULL;
            if (kind == BK_FILE_EDB) {
                if (i) continue; /* only the base set holds the database file */
                if (have_edb) {
                    rc = om_errf(OM_E_RepositoryCorrupt, "set %.12s holds two database files", sid);
                    break;
                }
                x = &v[0];
                have_edb = 1;
            } else if (kind == BK_FILE_LOG) {
                for (size_t j = 1; j < m && !x; j++)
                    if (v[j].gen == g) x = &v[j]; /* a later set's copy replaces it */
                if (!x) x = &v[m++];
            } else
                continue;
            x->set = sid;
            x->name = name;
            x->gen = g;
            snprintf(x->base, sizeof x->base, "%s", b);
            if ((rc = entry_ok(sid, name, f, bsize, x))) break;
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
 * writer says what may be replaced there (PreRestore checked it is the target's own). */
static int place_files(rfile *f, size_t n, om_dir *ed, const char *edb_name, om_dir *ld,
                       const char *base, int replace_edb, int replace_logs)
{
    for (size_t i = 0; i < n; i++) {
        char p[4400];
        if (i && strcmp(f[i].base, base))
            return om_errf(OM_E_RepositoryCorrupt,
                           "set %.12s names its logs %s, its writer documents %s: they do not "
                           "belong together",
                           f[i].set, f[i].base, base);
        f[i].dir = i ? ld : ed;
        f[i].replace = i ? replace_logs : replace_edb;
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
    om_err_saved err;
} post;

static void *post_thread(void *arg)
{
    post *p = arg;
    p->rc = vss_req_post_restore(p->q, &p->done);
    if (p->rc) {
        om_err_save(&p->err, p->rc);
        pthread_mutex_lock(&p->l->mu);
        p->l->stop = 1; /* no use laying more down */
        pthread_mutex_unlock(&p->l->mu);
    }
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
    if (!o->no_replay && n > 1) /* replay starts while the logs are still laid down */
        json_object_set_new(ro, "logs_arriving", json_pack("[i, i]", f[1].gen, f[n - 1].gen));
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
    if (!rc)
        rc = place_files(f, n, *ed, slash + 1, *ld, base,
                         json_is_true(json_object_get(target, "replace_edb")),
                         json_is_true(json_object_get(target, "replace_logs")));
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
    pthread_mutex_unlock(&l->mu);
    if (l->draw) om_progress_update(&l->bar, bytes);
    return rc;
}

/* Lays the files down on every core and has the writer replay as soon as the .edb and the
 * first generation are in place. *done: the PostRestore answer (with no_replay the writer only
 * takes note). */
static int lay_and_replay(const bk_restore_opts *o, bk_repo *r, vss_req *q, rfile *f, size_t n,
                          json_t *target, uint64_t *bytes, uint64_t *lay_ns, json_t **done)
{
    uint64_t t0 = om_mono_ns();
    lay l = {.r = r,
             .f = f,
             .n = n,
             .bsize = bk_repo_block_size(r),
             .streaming = !o->no_replay && n > 1,
             .draw = o->progress};
    size_t nchunks = 0;
    if (!(l.first_chunk = malloc((n + 1) * sizeof *l.first_chunk)))
        return om_errf(OM_E_OutOfMemory, "out of memory");
    for (size_t i = 0; i <= n; i++) {
        l.first_chunk[i] = nchunks;
        if (i < n) nchunks += (f[i].nblocks + CHUNK_BLOCKS - 1) / CHUNK_BLOCKS;
    }
    om_dir *ed = NULL, *ld = NULL;
    const char *session = l.streaming ? vss_req_session(q) : NULL;
    int rc = open_places(target, f, n, session, &ed, &ld, &l.prog);
    if (rc) {
        free(l.first_chunk);
        return rc;
    }
    pthread_mutex_init(&l.mu, NULL);
    pthread_cond_init(&l.cv, NULL);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += f[i].size;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int nw = cores < 2 ? 2 : cores > MAX_WORKERS ? MAX_WORKERS : (int)cores;
    post p = {.q = q, .l = &l};
    l.post = &p;
    if (l.draw) om_progress_start(&l.bar, "restore", total, "bytes");
    om_pool pool = {.workers = nw,
                    .ctx = &l,
                    .fn = lay_chunk,
                    .worker_begin = lay_begin,
                    .worker_end = lay_end,
                    .progress = lay_watch,
                    .count = &l.bytes,
                    .interval_ms = 10};
    om_err_saved failed; /* kept past the cleanup below, which may set another detail */
    rc = om_err_save(&failed, om_pool_run(&pool, nchunks));
    if (l.draw) om_progress_end(&l.bar);
    /* Release the progress file: a writer still waiting for a generation sees the restore gone. */
    vss_laid_release(l.prog);
    for (size_t i = 0; i < n; i++) {
        om_durable_abort(&f[i].out); /* a file begun and not put in place: its temporary name */
        if (f[i].sha) EVP_MD_CTX_free(f[i].sha);
    }
    om_dir_close(ed);
    om_dir_close(ld);
    free(l.first_chunk);
    *bytes = l.bytes;
    *lay_ns = om_mono_ns() - t0;
    if (!rc && l.laid == n) pause_at("laid");
    if (!rc && !l.post_started) {
        l.post_started = pthread_create(&l.post_thread, NULL, post_thread, &p) == 0;
        if (!l.post_started)
            rc = om_err_save(&failed, om_errf(OM_E_OutOfMemory, "cannot start a thread"));
    }
    if (o->progress && l.post_started && !rc && !o->no_replay)
        fprintf(stderr, "files laid down; the writer finishes replaying the logs...\n");
    if (l.post_started) pthread_join(l.post_thread, NULL);
    pthread_cond_destroy(&l.cv);
    pthread_mutex_destroy(&l.mu);
    *done = p.done;
    if (rc) return om_err_restore(&failed);
    if (p.rc) return om_err_restore(&p.err);
    return 0;
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

/* The writer a restore goes through (spec §6: a database is not tied to a server). The set names
 * the writer instance and the component of the server the backup was made on; they are
 * information, not a requirement. The restore goes through this server's writer: the one of the
 * saved writer's class that this server's ombra-vssd has (the store's writer), its instance id
 * into inst, and the database's component under that writer's own logical path into comp:
 * "Ombra Store\<this server>\<database id>" (store/writer.h) for a saved "Ombra Store\<the
 * backup's server>\<database id>". *md (the load_documents metadata array) and *doc (the
 * components document) are the set's documents with that writer's instance id and that
 * component (and its Logs subcomponent) in place of the saved ones; each component's
 * backup_metadata, what the backup was of, goes on as saved, and the saved names stay beside it
 * ("backed_up_as"). The same server gives back the saved names. */
static int local_writer(vss_req *q, json_t *set, json_t *saved, const char *db_id, char inst[37],
                        char *comp, size_t clen, json_t **md, json_t **doc)
{
    json_t *wmd = json_object_get(set, "writer_metadata"), *writers = NULL;
    const char *cls = om_json_str_or(json_object_get(wmd, "writer"), "class_id", ""),
               *wname = om_json_str_or(json_object_get(wmd, "writer"), "name", "?"),
               *sinst = om_json_str_or(saved, "instance_id", ""),
               *scomp = om_json_str_or(saved, "component", "");
    *md = *doc = NULL;
    int rc = vss_req_gather_metadata(q, &writers);
    size_t i, n = 0;
    json_t *w, *pick = NULL;
    json_array_foreach(writers, i, w)
    {
        if (strcmp(om_json_str_or(w, "class_id", ""), cls) || !json_object_get(w, "metadata"))
            continue;
        n++;
        if (!pick || !strcmp(om_json_str_or(w, "instance_id", ""), sinst)) pick = w;
    }
    if (!rc && !pick)
        rc = om_errf(OM_E_WriterNotResponding,
                     "no '%s' (class %s) is connected to ombra-vssd on this server to restore "
                     "database %s through. HINT: start ombra-store here; ombra vss writers lists "
                     "the writers",
                     wname, cls, db_id);
    else if (!rc && n > 1 && strcmp(om_json_str_or(pick, "instance_id", ""), sinst))
        rc = om_errf(OM_E_InvalidParameter,
                     "%zu writers '%s' are connected to ombra-vssd on this server: which store "
                     "restores database %s is not clear. HINT: give each ombra-store its own "
                     "OMBRA_RUNTIME_DIR",
                     n, wname, db_id);
    /* The saved component's logical path is "<root>\<server>": the root stays, the server is
     * this one. */
    char server[256] = "", lp[600] = "", slp[600] = "", logs[700] = "", slogs[700] = "";
    size_t sl = strlen(scomp), il = strlen(db_id);
    const char *bs = strchr(scomp, '\\');
    if (!rc && (sl <= il + 1 || strcmp(scomp + sl - il, db_id) || scomp[sl - il - 1] != '\\' ||
                !bs || bs >= scomp + sl - il - 1))
        rc = om_errf(OM_E_RepositoryCorrupt,
                     "set %s names component '%s' for database %s, not <root>\\<server>\\%s",
                     om_json_str_or(set, "id", "?"), scomp, db_id, db_id);
    if (!rc) rc = local_server(server, sizeof server);
    if (rc) {
        json_decref(writers);
        return rc;
    }
    snprintf(slp, sizeof slp, "%.*s", (int)(sl - il - 1), scomp);
    snprintf(lp, sizeof lp, "%.*s\\%.255s", (int)(bs - scomp), scomp, server);
    snprintf(inst, 37, "%s", om_json_str_or(pick, "instance_id", ""));
    snprintf(comp, clen, "%s\\%s", lp, db_id);
    snprintf(slogs, sizeof slogs, "%s", scomp);
    snprintf(logs, sizeof logs, "%s", comp);
    /* The writer metadata: the database's component and its Logs, renamed. */
    json_t *m = json_deep_copy(wmd), *keep = json_array(), *k;
    json_object_set_new(json_object_get(m, "writer"), "instance_id", json_string(inst));
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
    *md = json_pack("[{s:s, s:o}]", "instance_id", inst, "metadata", m);
    /* The components document: this database's component only, for this writer. */
    json_t *one = json_copy(saved);
    json_object_set_new(one, "instance_id", json_string(inst));
    json_object_set_new(one, "component", json_string(comp));
    json_object_set_new(one, "backed_up_as",
                        json_pack("{s:s, s:s, s:s}", "server", om_json_str_or(set, "server", ""),
                                  "instance_id", sinst, "component", scomp));
    *doc = json_copy(json_object_get(set, "components_document"));
    json_object_set_new(*doc, "components", json_pack("[o]", one));
    json_decref(writers);
    if (strcmp(inst, sinst) || strcmp(comp, scomp))
        om_debug("restoring database %s, backed up on server %s as %s (writer %s), through this "
                 "server's writer %s as %s",
                 db_id, om_json_str_or(set, "server", "?"), scomp, sinst, inst, comp);
    return 0;
}

int bk_restore_run(const bk_restore_opts *o, json_t **result)
{
    uint64_t t0 = om_mono_ns();
    json_t *res = json_pack("{s:s, s:[]}", "database", o->db, "sets");
    *result = res;
    bk_repo *r = NULL;
    vss_req *q = NULL;
    json_t *sets = NULL, *chain = NULL, *docs = json_array(), *targets = NULL, *done = NULL;
    rfile *files = NULL;
    size_t nfiles = 0;
    char id[37] = "", here[37] = "";
    uint64_t bytes = 0;
    int rc = bk_repo_open(o->repo, o->passphrase, &r);
    if (!rc) rc = store_db_id(o->db, here);
    if (!rc) rc = bk_sets(r, &sets);
    if (!rc) rc = bk_source_db(sets, o->db, here, o->to || o->recovery || o->edb, id);
    if (!rc && !here[0] && !o->to && !o->recovery && !o->edb)
        rc = om_errf(OM_E_DatabaseNotFound,
                     "database '%s' is not on this server; its backups (of %s) are in the "
                     "repository. HINT: restore them with --to DB, --recovery NAME or "
                     "--edb PATH --logs DIR",
                     o->db, id);
    bk_point pt = {
        .set_id = o->set_id, .until_gen = o->until_gen, .until_time_ns = o->until_time_ns};
    if (!rc) rc = bk_chain(sets, id, &pt, &chain);
    size_t i;
    json_t *s;
    json_array_foreach(chain, i, s)
    {
        json_t *d = NULL;
        if (rc || (rc = bk_set_load(r, om_json_str_or(s, "id", ""), &d))) break;
        if ((rc = bk_set_check(r, d))) {
            json_decref(d);
            break;
        }
        json_array_append_new(docs, d);
        json_array_append_new(json_object_get(res, "sets"),
                              json_pack("{s:s, s:s, s:O}", "set", om_json_str_or(s, "id", ""),
                                        "type", om_json_str_or(s, "type", ""), "log_range",
                                        json_object_get(s, "log_range")));
    }
    if (!rc && o->on_chain) o->on_chain(o->arg, json_object_get(res, "sets"));
    if (!rc) rc = plan_files(docs, bk_repo_block_size(r), &files, &nfiles);
    /* A point by generation needs no log after it (files[0] is the .edb; logs ascend). */
    while (!rc && o->until_gen && nfiles > 2 && files[nfiles - 1].gen > o->until_gen)
        nfiles--;
    json_t *last = json_array_get(docs, json_array_size(docs) - 1);
    json_t *wmd = json_object_get(last, "writer_metadata"), *saved = NULL, *md = NULL, *cdoc = NULL;
    /* The set's component: a backup of several databases saved the whole document. */
    json_t *c;
    json_array_foreach(
        json_object_get(json_object_get(last, "components_document"), "components"), i,
        c) if (!strcmp(om_json_str_or(json_object_get(c, "backup_metadata"), "db_id", ""), id))
        saved = c;
    if (!rc && (!json_is_object(wmd) || !saved))
        rc = om_errf(OM_E_RepositoryCorrupt, "set %s lacks its writer documents",
                     om_json_str_or(last, "id", "?"));
    char inst[37] = "", comp[700] = "";
    if (!rc) rc = vss_req_begin(NULL, VSS_SESSION_RESTORE, &q);
    if (!rc) rc = local_writer(q, last, saved, id, inst, comp, sizeof comp, &md, &cdoc);
    if (!rc) rc = vss_req_load_documents(q, md, cdoc);
    json_decref(md);
    json_decref(cdoc);
    if (!rc) {
        json_t *ro = writer_options(o, id, files, nfiles), *nt = NULL;
        if (o->edb) nt = json_pack("{s:s, s:s}", "edb", o->edb, "logs", o->logs);
        rc = vss_req_add_restore_component(q, inst, comp, ro, nt);
        json_decref(ro);
        json_decref(nt);
    }
    if (!rc && o->no_replay) rc = vss_req_set_additional_restores(q, 1);
    if (!rc) rc = vss_req_pre_restore(q, &targets);
    if (!rc) pause_at("prepared");
    uint64_t lay_ns = 0;
    if (!rc)
        rc = lay_and_replay(o, r, q, files, nfiles, json_object_get(targets, comp), &bytes, &lay_ns,
                            &done);
    char detail[1400] = "";
    if (rc) snprintf(detail, sizeof detail, "%s", om_err_detail());
    if (q) vss_req_release(q);
    json_t *t = json_object_get(done, comp);
    json_object_set_new(res, "target",
                        json_string(om_json_str_or(t, "name", o->to ? o->to : o->db)));
    json_object_set(res, "replay",
                    json_object_get(t, "replay") ? json_object_get(t, "replay") : json_null());
    /* A restore next to a database of this server made the target a recovery database. */
    json_t *tg = json_object_get(targets, comp);
    json_object_set_new(res, "recovery",
                        json_boolean(json_is_true(json_object_get(tg, "recovery"))));
    if (json_is_string(json_object_get(tg, "copy_of")))
        json_object_set(res, "copy_of", json_object_get(tg, "copy_of"));
    json_object_set_new(res, "files", json_integer((json_int_t)nfiles));
    json_object_set_new(res, "bytes", json_integer((json_int_t)bytes));
    json_object_set_new(res, "lay_seconds", json_real((double)lay_ns / 1e9));
    json_object_set_new(res, "seconds", json_real((double)(om_mono_ns() - t0) / 1e9));
    free(files);
    json_decref(sets);
    json_decref(chain);
    json_decref(docs);
    json_decref(targets);
    json_decref(done);
    bk_repo_close(r);
    if (rc) om_errf(rc, "%s", detail);
    return rc;
}
