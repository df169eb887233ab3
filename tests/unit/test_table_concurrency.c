/* Readers during a writer (src/engine/table.h views): a committed view shows one committed
 * state, whole, while the writer splits and merges pages under it.
 *
 * One writer thread commits random inserts, deletes and rewrites on the table "data". Keys
 * share a 900-byte prefix, so separators are long and the tree is three levels deep with a
 * couple of thousand records; growing and shrinking phases take it from 1500 records down to
 * a handful (one leaf) and back. Values run from 48 bytes to a few KiB, some are long values.
 * The records form a doubly linked list in key order: each record's value holds its index,
 * the version of the transaction that last wrote it, its neighbours' indexes and a hash of
 * itself; a deleted record's neighbours are rewritten in the same transaction. Every
 * transaction also writes "version" in the table "meta": its version, the record count, the
 * first and last index, and a sum over all records of (index, version, length). About one
 * transaction in eight writes records marked as rolled back and rolls back. The writer
 * checkpoints every 15 commits with a small cache, so readers also miss the cache.
 * Three reader threads repeatedly open a committed view (eng_view_begin) and check, inside it:
 * - full scans: the list is consistent from the first to the last record (no record missing,
 *   as a half-done split would leave), count and sum equal "version"'s (no mix of versions),
 *   every value is whole, and no record is newer than the view's version or marked rolled back;
 * - gets and short range scans from random keys: a record's neighbours exist and point back,
 *   found both along the leaves and down the tree;
 * - "version" does not change within a view, never goes back between views, and includes
 *   every commit that returned before the view began;
 * - now and then eng_table_check.
 * Time bound: OMBRA_CONCURRENCY_SECONDS (default 6). Passes under ThreadSanitizer
 * (make test-tsan). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/hash.h"
#include "base/logging.h"
#include "crashvfs.h"
#include "engine/engine.h"
#include "engine/table.h"

#define KEYSPACE   6000u
#define PREFIX_LEN 900u
#define NONE       UINT32_MAX
#define ROLLED     (1ull << 63) /* version bit of writes that are rolled back */
#define MAGIC      0x0C0FFEE5u
#define VHDR       40u
#define NREADERS   3
/* ThreadSanitizer makes a commit some 100 times slower (~150 ms): there the test is about
 * races, and the writer gets through far fewer transactions in the same time. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifdef UNDER_TSAN
#define MIN_COMMITS      10
#define CHECKPOINT_EVERY 4 /* evictions under the readers even in a short run */
#else
#define MIN_COMMITS      50
#define CHECKPOINT_EVERY 15
#endif
#define PREFILL 1500u

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ---- records ---- */

/* Key of index i: the shared prefix, i big-endian (so key order is index order), a tail of
 * 0..100 bytes. */
static uint32_t make_key(uint32_t i, uint8_t *k)
{
    memset(k, 'p', PREFIX_LEN);
    k[PREFIX_LEN] = (uint8_t)(i >> 24);
    k[PREFIX_LEN + 1] = (uint8_t)(i >> 16);
    k[PREFIX_LEN + 2] = (uint8_t)(i >> 8);
    k[PREFIX_LEN + 3] = (uint8_t)i;
    uint32_t tail = (i * 2654435761u >> 20) % 101;
    memset(k + PREFIX_LEN + 4, 't', tail);
    return PREFIX_LEN + 4 + tail;
}

static int parse_key(const uint8_t *k, uint32_t kl, uint32_t *i)
{
    if (kl < PREFIX_LEN + 4) return 0;
    *i = (uint32_t)k[PREFIX_LEN] << 24 | (uint32_t)k[PREFIX_LEN + 1] << 16 |
         (uint32_t)k[PREFIX_LEN + 2] << 8 | k[PREFIX_LEN + 3];
    uint8_t want[ENG_MAX_KEY];
    return *i < KEYSPACE && make_key(*i, want) == kl && !memcmp(want, k, kl);
}

typedef struct rec {
    uint32_t i, prev, next, len;
    uint64_t ver;
} rec;

/* Value: a hash of the rest, magic, index, prev, next, version, length, then filler from
 * (index, version). */
static void make_value(const rec *r, uint8_t *v)
{
    put32(v + 8, MAGIC);
    put32(v + 12, r->i);
    put32(v + 16, r->prev);
    put32(v + 20, r->next);
    put64(v + 24, r->ver);
    put32(v + 32, r->len);
    put32(v + 36, 0);
    memset(v + VHDR, (int)(r->ver * 31 + r->i), r->len - VHDR);
    put64(v, om_xxh3(v + 8, r->len - 8, 0));
}

/* 0 when v (vlen bytes) is a whole value for index i; else a description. */
static const char *parse_value(const uint8_t *v, uint64_t vlen, uint32_t i, rec *r)
{
    if (vlen < VHDR) return "value shorter than its header";
    if (get64(v) != om_xxh3(v + 8, vlen - 8, 0)) return "value content is torn";
    if (get32(v + 8) != MAGIC) return "bad magic";
    r->i = get32(v + 12);
    r->prev = get32(v + 16);
    r->next = get32(v + 20);
    r->ver = get64(v + 24);
    r->len = get32(v + 32);
    if (r->i != i) return "value of another key";
    if (r->len != vlen) return "value length differs from its header";
    return NULL;
}

static uint64_t mix(uint32_t i, uint64_t ver, uint32_t len)
{
    uint64_t x[2] = {(uint64_t)i << 32 | len, ver};
    return om_xxh3(x, sizeof x, 99);
}

typedef struct meta {
    uint64_t ver, sum;
    uint32_t count, first, last;
} meta;

static void make_meta(const meta *m, uint8_t *v)
{
    put32(v, MAGIC);
    put64(v + 4, m->ver);
    put64(v + 12, m->sum);
    put32(v + 20, m->count);
    put32(v + 24, m->first);
    put32(v + 28, m->last);
}

/* ---- shared state ---- */

typedef struct shared {
    eng_db *db;
    eng_tbl data, metat;
    atomic_int stop;
    atomic_ullong committed_ver; /* highest version whose commit returned */
    pthread_mutex_t lock;        /* guards the failure text */
    atomic_int failures;
    char failure[1024];
    double seconds;
} shared;

static void failf(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(shared *sh, const char *fmt, ...)
{
    pthread_mutex_lock(&sh->lock);
    if (!atomic_load(&sh->failures)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sh->failure, sizeof sh->failure, fmt, ap);
        va_end(ap);
    }
    atomic_fetch_add(&sh->failures, 1);
    pthread_mutex_unlock(&sh->lock);
    atomic_store(&sh->stop, 1);
}

static const char *errs(int rc, char *buf, size_t len)
{
    return om_err_format(rc, buf, (unsigned)len);
}

/* ---- the writer ---- */

typedef struct wstate {
    uint8_t present[KEYSPACE];
    uint64_t ver[KEYSPACE];
    uint32_t len[KEYSPACE];
    meta m;
} wstate;

static uint32_t tree_depth(eng_db *db, uint32_t root)
{
    static uint8_t body[ENG_PAGE_BODY];
    uint32_t pg = root, depth = 1;
    /* node header of src/engine/btree.h: u8 kind (2: internal), u32 leftmost child at 8 */
    while (depth < 32 && eng_page_read(db, pg, body) == 0 && body[0] == 2) {
        pg = get32(body + 8);
        depth++;
    }
    return depth;
}

typedef struct writer_out {
    uint64_t commits, lazy, rollbacks, inserts, deletes, rewrites, checkpoints, long_values;
    uint32_t count_max, count_min, depth_min, depth_max;
} writer_out;

static uint32_t neighbour(const wstate *w, uint32_t i, int dir)
{
    for (int64_t j = (int64_t)i + dir; j >= 0 && j < KEYSPACE; j += dir)
        if (w->present[j]) return (uint32_t)j;
    return NONE;
}

static uint32_t value_len(uint64_t *s)
{
    uint64_t r = below(s, 100);
    if (r < 50) return VHDR + 8 + (uint32_t)below(s, 200);
    if (r < 95) return 240 + (uint32_t)below(s, 2500);
    return ENG_MAX_INLINE + (uint32_t)below(s, 2 * ENG_MAX_INLINE); /* long value */
}

static uint8_t wval[3 * ENG_MAX_INLINE + 64];

/* Writes record i as the writer's state has it, at version ver. */
static int write_rec(shared *sh, eng_txn *t, wstate *w, uint32_t i, uint64_t ver, uint32_t len,
                     writer_out *out)
{
    uint8_t k[ENG_MAX_KEY];
    uint32_t kl = make_key(i, k);
    if (w->present[i]) w->m.sum -= mix(i, w->ver[i], w->len[i]);
    rec r = {i, neighbour(w, i, -1), neighbour(w, i, 1), len, ver};
    make_value(&r, wval);
    int rc = eng_put(t, sh->data, k, kl, wval, len, 0);
    if (rc) return rc;
    w->present[i] = 1;
    w->ver[i] = ver;
    w->len[i] = len;
    w->m.sum += mix(i, ver, len);
    out->long_values += len + kl > ENG_MAX_INLINE;
    return 0;
}

static int rewrite_neighbours(shared *sh, eng_txn *t, wstate *w, uint32_t i, uint64_t ver,
                              writer_out *out)
{
    int rc = 0;
    uint32_t p = neighbour(w, i, -1), n = neighbour(w, i, 1);
    if (p != NONE) rc = write_rec(sh, t, w, p, ver, w->len[p], out);
    if (!rc && n != NONE) rc = write_rec(sh, t, w, n, ver, w->len[n], out);
    return rc;
}

/* One transaction of `nops` inserts, deletes and rewrites at version ver, then "version". */
static int writer_txn(shared *sh, eng_txn *t, wstate *w, uint64_t ver, uint64_t *s, int growing,
                      int nops, writer_out *out)
{
    int rc = 0;
    for (int op = 0; op < nops && !rc; op++) {
        uint32_t i = (uint32_t)below(s, KEYSPACE);
        uint64_t r = below(s, 100);
        if (r < (growing ? 70u : 10u)) { /* insert, if i is free */
            if (w->present[i]) continue;
            w->present[i] = 1; /* so the neighbours' links include it */
            w->ver[i] = 0;
            w->len[i] = 0;
            w->m.sum += mix(i, 0, 0);
            w->m.count++;
            rc = write_rec(sh, t, w, i, ver, value_len(s), out);
            if (!rc) rc = rewrite_neighbours(sh, t, w, i, ver, out);
            out->inserts++;
            continue;
        }
        /* deletes and rewrites take the first record at or after i */
        if (!w->present[i]) i = neighbour(w, i, 1);
        if (i == NONE) continue;
        if (r < (growing ? 85u : 90u)) { /* delete */
            uint8_t k[ENG_MAX_KEY];
            uint32_t kl = make_key(i, k);
            if ((rc = eng_del(t, sh->data, k, kl))) break;
            w->present[i] = 0;
            w->m.sum -= mix(i, w->ver[i], w->len[i]);
            w->m.count--;
            rc = rewrite_neighbours(sh, t, w, i, ver, out);
            out->deletes++;
        } else { /* rewrite with a new length */
            rc = write_rec(sh, t, w, i, ver, value_len(s), out);
            out->rewrites++;
        }
    }
    if (rc) return rc;
    w->m.ver = ver;
    w->m.first = w->present[0] ? 0 : neighbour(w, 0, 1);
    w->m.last = neighbour(w, KEYSPACE, -1);
    uint8_t mv[64];
    make_meta(&w->m, mv);
    return eng_put(t, sh->metat, "version", 7, mv, 32, 0);
}

typedef struct writer_arg {
    shared *sh;
    writer_out out;
    wstate w;     /* the last committed state */
    uint64_t ver; /* its version */
    uint64_t s;   /* random state */
} writer_arg;

/* The time bound, stretched (up to ten times) until the writer has made MIN_COMMITS
 * commits, so a loaded machine still tests something (under the sanitizers at a load of 13 on
 * 2 cores, four times was 37 commits). */
static int more_time(const shared *sh, double t0, const writer_out *out)
{
    double el = now_s() - t0;
    return el < sh->seconds || (out->commits < MIN_COMMITS && el < 10 * sh->seconds);
}

/* Commits transactions until the time is up (or, with fill, until `fill` records exist). */
static void writer_run(writer_arg *wa, uint32_t fill)
{
    static wstate saved;
    shared *sh = wa->sh;
    writer_out *out = &wa->out;
    wstate *w = &wa->w;
    char eb[1024];
    double t0 = now_s();
    int growing = 1;
    while (!atomic_load(&sh->stop) && (fill ? w->m.count < fill : more_time(sh, t0, out))) {
        /* The record count swings (growing and shrinking phases of about 1.5 s, between 100
         * and 2500 records): pages split and merge, the tree gains a level and loses it. */
        if (!fill) growing = (int)((now_s() - t0) / 1.5) % 2 == 1;
        if (w->m.count > 2500) growing = 0;
        if (w->m.count < 100) growing = 1;
        int rollback = !fill && below(&wa->s, 8) == 0;
        int nops = fill ? 400 : 1 + (int)below(&wa->s, below(&wa->s, 10) == 0 ? 300 : 40);
        uint64_t v = rollback ? (wa->ver + 1) | ROLLED : wa->ver + 1;
        memcpy(&saved, w, sizeof *w);
        eng_txn *t = NULL;
        int rc = eng_txn_begin(sh->db, &t);
        if (rc) {
            failf(sh, "writer: begin: %s", errs(rc, eb, sizeof eb));
            break;
        }
        rc = writer_txn(sh, t, w, v, &wa->s, growing, nops, out);
        if (rc) {
            eng_txn_rollback(t);
            failf(sh, "writer: version %llu: %s", (unsigned long long)(wa->ver + 1),
                  errs(rc, eb, sizeof eb));
            break;
        }
        if (rollback) {
            eng_txn_rollback(t);
            memcpy(w, &saved, sizeof *w);
            out->rollbacks++;
            continue;
        }
        unsigned flags = below(&wa->s, 4) == 0 ? ENG_COMMIT_LAZY : 0;
        rc = eng_txn_commit(t, flags);
        if (rc) {
            failf(sh, "writer: commit of version %llu: %s", (unsigned long long)v,
                  errs(rc, eb, sizeof eb));
            break;
        }
        wa->ver = v;
        atomic_store(&sh->committed_ver, v);
        out->commits++;
        out->lazy += flags != 0;
        if (w->m.count > out->count_max) out->count_max = w->m.count;
        if (w->m.count < out->count_min && !fill) out->count_min = w->m.count;
        uint32_t d = tree_depth(sh->db, sh->data.root);
        if (d < out->depth_min) out->depth_min = d;
        if (d > out->depth_max) out->depth_max = d;
        if (out->commits % CHECKPOINT_EVERY ==
            0) { /* evicts clean pages: readers then miss the cache */
            if ((rc = eng_checkpoint(sh->db))) {
                failf(sh, "writer: checkpoint: %s", errs(rc, eb, sizeof eb));
                break;
            }
            out->checkpoints++;
        }
    }
}

static void *writer_main(void *a)
{
    writer_arg *wa = a;
    writer_run(wa, 0);
    atomic_store(&wa->sh->stop, 1);
    return NULL;
}

/* ---- the readers ---- */

typedef struct reader_out {
    uint64_t views, full_scans, records, gets, range_scans, checks;
    uint64_t last_ver;
} reader_out;

typedef struct view_ctx {
    shared *sh;
    eng_view *v;
    meta m;
    int id;
    char eb[1024];
} view_ctx;

static int read_meta(view_ctx *vc, meta *m)
{
    void *val = NULL;
    uint64_t vl = 0;
    int rc = eng_get(vc->v, vc->sh->metat, "version", 7, &val, &vl);
    if (rc) {
        failf(vc->sh, "reader %d: get version: %s", vc->id, errs(rc, vc->eb, sizeof vc->eb));
        return -1;
    }
    const uint8_t *p = val;
    if (vl != 32 || get32(p) != MAGIC) {
        free(val);
        failf(vc->sh, "reader %d: version record of %llu bytes is damaged", vc->id,
              (unsigned long long)vl);
        return -1;
    }
    m->ver = get64(p + 4);
    m->sum = get64(p + 12);
    m->count = get32(p + 20);
    m->first = get32(p + 24);
    m->last = get32(p + 28);
    free(val);
    return 0;
}

static uint8_t *reader_buf(void)
{
    static _Thread_local uint8_t buf[3 * ENG_MAX_INLINE + 64];
    return buf;
}

/* The record under the cursor, checked whole. */
static int cursor_rec(view_ctx *vc, eng_cursor *c, rec *r)
{
    const void *k;
    uint32_t kl, i;
    uint64_t vl;
    int rc = eng_cursor_key(c, &k, &kl);
    if (!rc) rc = eng_cursor_vlen(c, &vl);
    if (rc) {
        failf(vc->sh, "reader %d: cursor: %s", vc->id, errs(rc, vc->eb, sizeof vc->eb));
        return -1;
    }
    if (!parse_key(k, kl, &i)) {
        failf(vc->sh, "reader %d: a key of %u bytes that the writer never wrote", vc->id, kl);
        return -1;
    }
    if (vl > 3 * ENG_MAX_INLINE + 64) {
        failf(vc->sh, "reader %d: record %u: value of %llu bytes", vc->id, i,
              (unsigned long long)vl);
        return -1;
    }
    uint8_t *buf = reader_buf();
    if ((rc = eng_cursor_read(c, 0, buf, vl))) {
        failf(vc->sh, "reader %d: record %u: read: %s", vc->id, i, errs(rc, vc->eb, sizeof vc->eb));
        return -1;
    }
    const char *bad = parse_value(buf, vl, i, r);
    if (bad) {
        failf(vc->sh, "reader %d: record %u: %s", vc->id, i, bad);
        return -1;
    }
    if (r->ver & ROLLED) {
        failf(vc->sh, "reader %d: record %u holds a rolled-back write (version %llu)", vc->id, i,
              (unsigned long long)(r->ver & ~ROLLED));
        return -1;
    }
    if (r->ver > vc->m.ver) {
        failf(vc->sh, "reader %d: record %u is at version %llu in a view of version %llu", vc->id,
              i, (unsigned long long)r->ver, (unsigned long long)vc->m.ver);
        return -1;
    }
    return 0;
}

/* Record i by get; 1 if absent, 0 if found (checked), -1 on failure. */
static int get_rec(view_ctx *vc, uint32_t i, rec *r)
{
    uint8_t k[ENG_MAX_KEY];
    uint32_t kl = make_key(i, k);
    void *val = NULL;
    uint64_t vl = 0;
    int rc = eng_get(vc->v, vc->sh->data, k, kl, &val, &vl);
    if (rc == OM_E_RecordNotFound) return 1;
    if (rc) {
        failf(vc->sh, "reader %d: get %u: %s", vc->id, i, errs(rc, vc->eb, sizeof vc->eb));
        return -1;
    }
    const char *bad = parse_value(val, vl, i, r);
    free(val);
    if (bad) {
        failf(vc->sh, "reader %d: get %u: %s", vc->id, i, bad);
        return -1;
    }
    if ((r->ver & ROLLED) || r->ver > vc->m.ver) {
        failf(vc->sh, "reader %d: get %u: version %llu in a view of version %llu", vc->id, i,
              (unsigned long long)r->ver, (unsigned long long)vc->m.ver);
        return -1;
    }
    return 0;
}

/* The whole list, first to last: links, count, sum. */
static int full_scan(view_ctx *vc, reader_out *out)
{
    eng_cursor *c = NULL;
    int rc = eng_cursor_open(vc->v, vc->sh->data, &c);
    if (rc) {
        failf(vc->sh, "reader %d: cursor open: %s", vc->id, errs(rc, vc->eb, sizeof vc->eb));
        return -1;
    }
    uint32_t n = 0, prev = NONE;
    uint64_t sum = 0;
    int bad = 0;
    for (rc = eng_cursor_first(c); !rc && !bad; rc = eng_cursor_next(c)) {
        rec r;
        if (cursor_rec(vc, c, &r)) {
            bad = 1;
            break;
        }
        if (r.prev != prev) {
            failf(vc->sh,
                  "reader %d, view of version %llu: record %u says its predecessor is %u, the "
                  "scan found %u before it (a record missing or a mix of versions)",
                  vc->id, (unsigned long long)vc->m.ver, r.i, r.prev, prev);
            bad = 1;
        }
        n++;
        sum += mix(r.i, r.ver, r.len);
        prev = r.i;
        /* the successor it names must come next: checked by the next record's prev */
    }
    eng_cursor_close(c);
    if (bad) return -1;
    if (rc != OM_E_RecordNotFound) {
        failf(vc->sh, "reader %d: scan: %s", vc->id, errs(rc, vc->eb, sizeof vc->eb));
        return -1;
    }
    if (n != vc->m.count || sum != vc->m.sum || prev != vc->m.last) {
        failf(vc->sh,
              "reader %d, view of version %llu: scan found %u records (last %u), version "
              "record says %u (last %u)%s",
              vc->id, (unsigned long long)vc->m.ver, n, prev, vc->m.count, vc->m.last,
              sum != vc->m.sum ? "; the versions of the records do not add up" : "");
        return -1;
    }
    out->full_scans++;
    out->records += n;
    return 0;
}

/* From a random key: the records met agree with their neighbours, found by get and by the
 * cursor. */
static int probe(view_ctx *vc, uint64_t *s, reader_out *out)
{
    uint32_t i = (uint32_t)below(s, KEYSPACE);
    uint8_t k[ENG_MAX_KEY];
    uint32_t kl = make_key(i, k);
    eng_cursor *c = NULL;
    int rc = eng_cursor_open(vc->v, vc->sh->data, &c);
    if (!rc) rc = eng_cursor_seek(c, k, kl);
    if (rc == OM_E_RecordNotFound) {
        eng_cursor_close(c);
        if (vc->m.last != NONE && vc->m.last >= i) {
            failf(vc->sh, "reader %d: seek %u finds nothing, but the last record is %u", vc->id, i,
                  vc->m.last);
            return -1;
        }
        return 0;
    }
    if (rc) {
        eng_cursor_close(c);
        failf(vc->sh, "reader %d: seek %u: %s", vc->id, i, errs(rc, vc->eb, sizeof vc->eb));
        return -1;
    }
    rec r, q;
    uint32_t steps = 1 + (uint32_t)below(s, 30), prev = NONE;
    for (uint32_t st = 0; st < steps; st++) {
        if (cursor_rec(vc, c, &r)) {
            eng_cursor_close(c);
            return -1;
        }
        if (st == 0 && r.i > i && r.prev != NONE && r.prev >= i) {
            eng_cursor_close(c);
            failf(vc->sh, "reader %d: seek %u lands on %u whose predecessor %u was skipped", vc->id,
                  i, r.i, r.prev);
            return -1;
        }
        if (st > 0 && r.prev != prev) {
            eng_cursor_close(c);
            failf(vc->sh, "reader %d: range scan: %u follows %u but names %u as predecessor",
                  vc->id, r.i, prev, r.prev);
            return -1;
        }
        prev = r.i;
        rc = eng_cursor_next(c);
        if (rc == OM_E_RecordNotFound) {
            if (r.next != NONE) {
                eng_cursor_close(c);
                failf(vc->sh, "reader %d: scan ends at %u, which names %u as successor", vc->id,
                      r.i, r.next);
                return -1;
            }
            break;
        }
        if (rc) {
            eng_cursor_close(c);
            failf(vc->sh, "reader %d: next: %s", vc->id, errs(rc, vc->eb, sizeof vc->eb));
            return -1;
        }
    }
    eng_cursor_close(c);
    out->range_scans++;
    /* Point lookups go down the tree, not along the leaves: the neighbours of the last record
     * met exist and point back at it. */
    uint32_t nb[2] = {r.prev, r.next};
    for (int d = 0; d < 2; d++) {
        if (nb[d] == NONE) continue;
        int g = get_rec(vc, nb[d], &q);
        if (g < 0) return -1;
        if (g == 1 || (d == 0 ? q.next : q.prev) != r.i) {
            failf(vc->sh,
                  "reader %d, view of version %llu: record %u names %u as its %s, which is %s",
                  vc->id, (unsigned long long)vc->m.ver, r.i, nb[d],
                  d ? "successor" : "predecessor", g == 1 ? "missing" : "not pointing back");
            return -1;
        }
        out->gets++;
    }
    return 0;
}

typedef struct reader_arg {
    shared *sh;
    int id;
    reader_out out;
} reader_arg;

static void *reader_main(void *a)
{
    reader_arg *ra = a;
    shared *sh = ra->sh;
    uint64_t s = 1000u + (uint64_t)ra->id;
    view_ctx vc = {.sh = sh, .id = ra->id};
    while (!atomic_load(&sh->stop)) {
        /* every version whose commit returned before the view began is visible in it */
        uint64_t floor = atomic_load(&sh->committed_ver);
        int rc = eng_view_begin(sh->db, &vc.v);
        if (rc) {
            failf(sh, "reader %d: view: %s", ra->id, errs(rc, vc.eb, sizeof vc.eb));
            break;
        }
        int bad = read_meta(&vc, &vc.m);
        if (!bad && (vc.m.ver & ROLLED)) {
            failf(sh, "reader %d: the version record of a rolled-back transaction (%llu)", ra->id,
                  (unsigned long long)(vc.m.ver & ~ROLLED));
            bad = 1;
        }
        if (!bad && (vc.m.ver < ra->out.last_ver || vc.m.ver < floor)) {
            failf(sh, "reader %d: view of version %llu after one of %llu (committed: %llu)", ra->id,
                  (unsigned long long)vc.m.ver, (unsigned long long)ra->out.last_ver,
                  (unsigned long long)floor);
            bad = 1;
        }
        /* Views stay short (a commit's publishing step waits for the open ones): a full scan
         * in one view of six, a few probes in the others. */
        int full = below(&s, 6) == 0;
        if (!bad && full) bad = full_scan(&vc, &ra->out);
        for (int p = 0; !bad && p < (full ? 1 : 6); p++)
            bad = probe(&vc, &s, &ra->out);
        if (!bad && below(&s, 60) == 0) {
            uint64_t n = 0;
            rc = eng_table_check(vc.v, sh->data, &n);
            if (rc || n != vc.m.count) {
                failf(sh, "reader %d: table check: %s, %llu records (version record: %u)", ra->id,
                      errs(rc, vc.eb, sizeof vc.eb), (unsigned long long)n, vc.m.count);
                bad = 1;
            }
            ra->out.checks++;
        }
        meta again;
        if (!bad && !read_meta(&vc, &again) &&
            (again.ver != vc.m.ver || again.sum != vc.m.sum || again.count != vc.m.count ||
             again.first != vc.m.first || again.last != vc.m.last)) {
            failf(sh, "reader %d: the version record changed from %llu to %llu inside one view",
                  ra->id, (unsigned long long)vc.m.ver, (unsigned long long)again.ver);
            bad = 1;
        }
        eng_view_end(vc.v);
        if (bad) break;
        ra->out.last_ver = vc.m.ver;
        ra->out.views++;
        /* a short pause, as between a real client's requests: on a small machine three
         * spinning readers would leave the writer no processor */
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return NULL;
}

/* ---- the test ---- */

static void check_final(shared *sh, const wstate *w)
{
    eng_view *v = NULL;
    assert_int_equal(eng_view_begin(sh->db, &v), 0);
    view_ctx vc = {.sh = sh, .v = v, .id = -1};
    reader_out ro = {0};
    assert_int_equal(read_meta(&vc, &vc.m), 0);
    assert_true(vc.m.ver == w->m.ver && vc.m.count == w->m.count && vc.m.sum == w->m.sum);
    assert_int_equal(full_scan(&vc, &ro), 0);
    for (uint32_t i = 0; i < KEYSPACE; i++) {
        rec r;
        int g = get_rec(&vc, i, &r);
        assert_int_equal(g, w->present[i] ? 0 : 1);
        if (!g) assert_true(r.ver == w->ver[i] && r.len == w->len[i]);
    }
    uint64_t n = 0;
    assert_int_equal(eng_table_check(v, sh->data, &n), 0);
    assert_int_equal(n, w->m.count);
    eng_view_end(v);
    assert_int_equal(atomic_load(&sh->failures), 0);
}

static void readers_see_only_whole_committed_states_during_splits_and_merges(void **state)
{
    (void)state;
    const char *env = getenv("OMBRA_CONCURRENCY_SECONDS");
    double seconds = env && atof(env) > 0 ? atof(env) : 6;
    crashvfs *c = crashvfs_new(11);
    assert_non_null(c);
    assert_int_equal(crashvfs_vfs(c)->mkdir(crashvfs_vfs(c), "/db"), 0);
    eng_opts o = {0};
    o.vfs = crashvfs_vfs(c);
    o.edb_path = "/db/mail.edb";
    o.log_dir = "/db/logs";
    o.no_reserve_logs = 1;
    o.cache_bytes = 48 * ENG_PAGE_SIZE; /* checkpoints and evictions under the readers */
    o.checkpoint_gens = 4;
    static shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.lock, NULL);
    sh.seconds = seconds;
    assert_int_equal(eng_db_create(&o, &sh.db), 0);
    assert_int_equal(eng_catalog_create(sh.db), 0);
    /* version 0: both tables, no records */
    eng_txn *t = NULL;
    assert_int_equal(eng_txn_begin(sh.db, &t), 0);
    assert_int_equal(eng_table_create(t, "data", &sh.data), 0);
    assert_int_equal(eng_table_create(t, "meta", &sh.metat), 0);
    meta m0 = {.first = NONE, .last = NONE};
    uint8_t mv[64];
    make_meta(&m0, mv);
    assert_int_equal(eng_put(t, sh.metat, "version", 7, mv, 32, 0), 0);
    assert_int_equal(eng_txn_commit(t, 0), 0);

    static writer_arg wa;
    static reader_arg ra[NREADERS];
    memset(&wa, 0, sizeof wa);
    wa.sh = &sh;
    wa.w.m.first = wa.w.m.last = NONE;
    wa.out.count_min = wa.out.depth_min = UINT32_MAX;
    wa.s = 7;
    /* start three levels deep */
    writer_run(&wa, PREFILL);
    if (atomic_load(&sh.failures)) fail_msg("prefill: %s", sh.failure);
    uint32_t depth0 = tree_depth(sh.db, sh.data.root);
    uint64_t commits0 = wa.out.commits;
    wa.out = (writer_out){.count_min = UINT32_MAX, .depth_min = UINT32_MAX};
    pthread_t wt, rt[NREADERS];
    double t0 = now_s();
    for (int i = 0; i < NREADERS; i++) {
        ra[i] = (reader_arg){.sh = &sh, .id = i};
        assert_int_equal(pthread_create(&rt[i], NULL, reader_main, &ra[i]), 0);
    }
    assert_int_equal(pthread_create(&wt, NULL, writer_main, &wa), 0);
    pthread_join(wt, NULL);
    for (int i = 0; i < NREADERS; i++)
        pthread_join(rt[i], NULL);
    double el = now_s() - t0;
    if (atomic_load(&sh.failures)) fail_msg("%d failures; first: %s", sh.failures, sh.failure);

    eng_space sp;
    eng_view *v = NULL;
    assert_int_equal(eng_view_begin(sh.db, &v), 0);
    assert_int_equal(eng_space_info(v, &sp), 0);
    eng_view_end(v);
    uint32_t depth = tree_depth(sh.db, sh.data.root);
    print_message("concurrency: prefill of %u records in %llu commits: data tree %u levels\n",
                  PREFILL, (unsigned long long)commits0, depth0);
    print_message("concurrency: %.1f s; writer: %llu commits (%llu lazy), %llu rolled back, %llu "
                  "inserts, %llu deletes, %llu rewrites, %llu long values, %llu checkpoints; "
                  "records between %u and %u; data tree %u to %u levels (%u at the end), %u pages "
                  "(%u free)\n",
                  el, (unsigned long long)wa.out.commits, (unsigned long long)wa.out.lazy,
                  (unsigned long long)wa.out.rollbacks, (unsigned long long)wa.out.inserts,
                  (unsigned long long)wa.out.deletes, (unsigned long long)wa.out.rewrites,
                  (unsigned long long)wa.out.long_values, (unsigned long long)wa.out.checkpoints,
                  wa.out.count_min, wa.out.count_max, wa.out.depth_min, wa.out.depth_max, depth,
                  sp.pages, sp.free_pages);
    uint64_t views = 0;
    for (int i = 0; i < NREADERS; i++) {
        print_message(
            "  reader %d: %llu views, %llu full scans (%llu records), %llu range scans, "
            "%llu neighbour gets, %llu tree checks\n",
            i, (unsigned long long)ra[i].out.views, (unsigned long long)ra[i].out.full_scans,
            (unsigned long long)ra[i].out.records, (unsigned long long)ra[i].out.range_scans,
            (unsigned long long)ra[i].out.gets, (unsigned long long)ra[i].out.checks);
        views += ra[i].out.views;
        assert_true(ra[i].out.views >= 10);
    }
    assert_true(wa.out.commits >= MIN_COMMITS);
    assert_true(depth0 >= 3);
    assert_true(wa.out.inserts >= MIN_COMMITS && wa.out.deletes >= MIN_COMMITS);
    check_final(&sh, &wa.w);
    /* and it all survives a clean shutdown */
    assert_int_equal(eng_db_close(sh.db), 0);
    assert_int_equal(eng_db_open(&o, &sh.db), 0);
    check_final(&sh, &wa.w);
    assert_int_equal(eng_db_close(sh.db), 0);
    pthread_mutex_destroy(&sh.lock);
    crashvfs_free(c);
    (void)views;
}

int main(void)
{
    if (!getenv("OMBRA_DEBUG")) om_log_min_level(OM_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(readers_see_only_whole_committed_states_during_splits_and_merges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
