/* Tables (src/engine/table.h): what a user of the B+tree relies on.
 *
 * - The randomised model test runs thousands of random operations on several tables at once
 *   against an in-memory model (sorted arrays), in transactions some of which roll back, and
 *   after every commit compares everything the committed view shows (ordered scan, gets,
 *   eng_table_check) with the model. Keys of 1..ENG_MAX_KEY bytes share prefixes (so splits
 *   cut between keys that differ late), values run from 0 bytes to a few times
 *   ENG_MAX_INLINE (so some are long values). Trees grow several levels deep and shrink back,
 *   so pages split and merge many times. OMBRA_TABLE_OPS sets the number of operations.
 * - The crash test runs the same operations on the crash VFS and loses power at each sync
 *   point: the recovered tables must equal the model after some commit between the last
 *   acknowledged one and the last attempted one (OMBRA_TABLE_CRASH_POINTS;
 *   OMBRA_TABLE_CRASH_ONLY=W:N reruns one point, OMBRA_TABLE_TRACE=1 prints each
 *   transaction with its sync calls).
 * - Long values at the sizes where the layout changes, a delete-heavy workload whose file
 *   stops growing (OMBRA_TABLE_DELETE_ROUNDS), the table lifecycle, and bad input (arguments,
 *   damaged pages, OMBRA_TABLE_FUZZ_ROUNDS of random bit flips).
 * Everything is deterministic from its seed (OMBRA_TABLE_SEED for the model test). Default
 * sizes are halved under AddressSanitizer. */
#include <setjmp.h>
#include <stdarg.h>
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
#include "engine/format.h"
#include "engine/table.h"

/* ------------------------------------------------------------------------------------------
 * Helpers: randomness, values, disks
 * ---------------------------------------------------------------------------------------- */

static uint64_t rnd(uint64_t *s)
{
    /* splitmix64: every seed (0 included) gives a good stream */
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

/* Default sizes are halved under AddressSanitizer, which makes these tests ~7 times slower. */
#if defined(__SANITIZE_ADDRESS__)
#define SCALE_DOWN 2
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SCALE_DOWN 2
#endif
#endif
#ifndef SCALE_DOWN
#define SCALE_DOWN 1
#endif

static long env_long(const char *name, long dflt)
{
    const char *e = getenv(name);
    long v = e ? atol(e) : 0;
    return v > 0 ? v : dflt;
}

/* A value is a pure function of (vseed, vlen), so the model keeps 16 bytes per record. */
static void gen_value(uint64_t vseed, uint64_t vlen, uint8_t *out)
{
    uint64_t s = vseed;
    uint64_t i = 0;
    for (; i + 8 <= vlen; i += 8) {
        uint64_t x = rnd(&s);
        memcpy(out + i, &x, 8);
    }
    if (i < vlen) {
        uint64_t x = rnd(&s);
        memcpy(out + i, &x, vlen - i);
    }
}

static const char *errs(int rc)
{
    static char buf[2048];
    return om_err_format(rc, buf, sizeof buf);
}

#define OK(expr)                                                                                   \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_) fail_msg("%s:%d: %s -> %s", __FILE__, __LINE__, #expr, errs(rc_));                \
    } while (0)

#define EXPECT(expr, want)                                                                         \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != (want))                                                                         \
            fail_msg("%s:%d: %s -> %s, expected %s", __FILE__, __LINE__, #expr, errs(rc_),         \
                     om_err_name(want));                                                           \
    } while (0)

static eng_opts opts_vfs(om_vfs *vfs)
{
    eng_opts o = {0};
    o.vfs = vfs;
    o.edb_path = "/db/mail.edb";
    o.log_dir = "/db/logs";
    o.base = "E00";
    o.no_reserve_logs = 1;
    return o;
}

static eng_opts opts_on(crashvfs *c)
{
    return opts_vfs(crashvfs_vfs(c));
}

static crashvfs *new_disk(uint64_t seed)
{
    crashvfs *c = crashvfs_new(seed);
    assert_non_null(c);
    assert_int_equal(crashvfs_vfs(c)->mkdir(crashvfs_vfs(c), "/db"), 0);
    return c;
}

/* A new database with its catalog. */
static eng_db *new_db(const eng_opts *o)
{
    eng_db *db = NULL;
    OK(eng_db_create(o, &db));
    assert_int_equal(eng_catalog_exists(db), 0);
    OK(eng_catalog_create(db));
    assert_int_equal(eng_catalog_exists(db), 1);
    return db;
}

static eng_tbl create_table(eng_db *db, const char *name)
{
    eng_txn *t = NULL;
    eng_tbl tb;
    OK(eng_txn_begin(db, &t));
    OK(eng_table_create(t, name, &tb));
    OK(eng_txn_commit(t, 0));
    return tb;
}

static eng_space space_of(eng_db *db)
{
    eng_view *v = NULL;
    eng_space s;
    OK(eng_view_begin(db, &v));
    OK(eng_space_info(v, &s));
    eng_view_end(v);
    return s;
}

static uint64_t check_table(eng_db *db, eng_tbl tb)
{
    eng_view *v = NULL;
    uint64_t n = 0;
    OK(eng_view_begin(db, &v));
    int rc = eng_table_check(v, tb, &n);
    eng_view_end(v);
    if (rc) fail_msg("eng_table_check: %s", errs(rc));
    return n;
}

/* Pages of the database owned by objid (its tree's pages). */
static uint32_t pages_of(eng_db *db, uint32_t objid)
{
    eng_info info;
    OK(eng_db_info(db, &info));
    uint32_t n = 0;
    for (uint32_t p = 1; p <= info.pages; p++) {
        uint32_t o = 0;
        OK(eng_page_objid(db, p, &o));
        n += o == objid;
    }
    return n;
}

/* Levels of a table's tree (1: the root is a leaf), read from committed pages: the node
 * header of src/engine/btree.h (u8 kind at 0: 1 leaf, 2 internal; u32 link at 8: an
 * internal node's leftmost child). Only for the figures the tests print. */
static uint32_t tree_depth(eng_db *db, uint32_t root)
{
    static uint8_t body[ENG_PAGE_BODY];
    uint32_t pg = root;
    for (uint32_t depth = 1; depth < 32; depth++) {
        OK(eng_page_read(db, pg, body));
        if (body[0] != 2) return depth;
        pg = (uint32_t)body[8] | (uint32_t)body[9] << 8 | (uint32_t)body[10] << 16 |
             (uint32_t)body[11] << 24;
    }
    fail_msg("tree of root %u deeper than 32 levels", root);
    return 0;
}

static eng_db *crash_and_recover(crashvfs *c, const eng_opts *o, eng_db *db)
{
    eng_db_abandon(db);
    crashvfs_reboot(c);
    db = NULL;
    OK(eng_db_open(o, &db));
    OK(eng_db_check_invariants(db));
    return db;
}

static eng_db *close_and_reopen(const eng_opts *o, eng_db *db)
{
    OK(eng_db_close(db));
    db = NULL;
    OK(eng_db_open(o, &db));
    return db;
}

/* ------------------------------------------------------------------------------------------
 * The model: per table, a sorted array of (key, value length, value seed, value hash)
 * ---------------------------------------------------------------------------------------- */

static int keycmp(const uint8_t *a, uint32_t al, const uint8_t *b, uint32_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

typedef struct ment {
    uint8_t *key;
    uint32_t klen, vlen;
    uint64_t vseed, vhash;
} ment;

enum { KS_SHORT, KS_MIXED, KS_LONG, KS_BINARY };

#define NTAB 5
typedef struct mtab {
    const char *name;
    int style;       /* key style */
    unsigned weight; /* share of the operations */
    int exists;
    eng_tbl tb;
    ment *e;
    size_t n, cap;
} mtab;

/* What a rollback must undo, newest last. */
typedef struct undo {
    int kind; /* 0: a record, 1: a whole table (drop or create) */
    int tab;
    ment old; /* record: old.key is the key; had says whether it existed */
    int had;
    mtab saved; /* table: its state before */
} undo;

typedef struct model {
    mtab t[NTAB];
    undo *u;
    size_t nu, capu;
} model;

static const mtab table_defs[NTAB] = {
    {.name = "short", .style = KS_SHORT, .weight = 15},
    {.name = "mixed", .style = KS_MIXED, .weight = 30},
    {.name = "long-prefix", .style = KS_LONG, .weight = 35},
    {.name = "binary", .style = KS_BINARY, .weight = 15},
    {.name = "spare", .style = KS_MIXED, .weight = 5},
};

/* First index with key >= k; *found when equal. */
static size_t mfind(const mtab *t, const uint8_t *k, uint32_t kl, int *found)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (keycmp(t->e[mid].key, t->e[mid].klen, k, kl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < t->n && keycmp(t->e[lo].key, t->e[lo].klen, k, kl) == 0;
    return lo;
}

static uint8_t *dupkey(const uint8_t *k, uint32_t kl)
{
    uint8_t *p = malloc(kl);
    assert_non_null(p);
    memcpy(p, k, kl);
    return p;
}

static void push_undo(model *m, const undo *u)
{
    if (m->nu == m->capu) {
        m->capu = m->capu ? 2 * m->capu : 256;
        m->u = realloc(m->u, m->capu * sizeof *m->u);
        assert_non_null(m->u);
    }
    m->u[m->nu++] = *u;
}

static void mset_raw(mtab *t, const ment *r)
{
    int found;
    size_t i = mfind(t, r->key, r->klen, &found);
    if (found) {
        free(t->e[i].key);
        t->e[i] = *r;
        return;
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->e = realloc(t->e, t->cap * sizeof *t->e);
        assert_non_null(t->e);
    }
    memmove(t->e + i + 1, t->e + i, (t->n - i) * sizeof *t->e);
    t->e[i] = *r;
    t->n++;
}

static void mdel_raw(mtab *t, const uint8_t *k, uint32_t kl)
{
    int found;
    size_t i = mfind(t, k, kl, &found);
    if (!found) return;
    free(t->e[i].key);
    memmove(t->e + i, t->e + i + 1, (t->n - i - 1) * sizeof *t->e);
    t->n--;
}

static void undo_record(model *m, int ti, const uint8_t *k, uint32_t kl)
{
    int found;
    mtab *t = &m->t[ti];
    size_t i = mfind(t, k, kl, &found);
    undo u = {.kind = 0, .tab = ti, .had = found};
    if (found) u.old = t->e[i];
    u.old.key = dupkey(k, kl);
    u.old.klen = kl;
    push_undo(m, &u);
}

static void mput(model *m, int ti, const uint8_t *k, uint32_t kl, uint32_t vlen, uint64_t vseed,
                 uint64_t vhash)
{
    undo_record(m, ti, k, kl);
    ment r = {dupkey(k, kl), kl, vlen, vseed, vhash};
    mset_raw(&m->t[ti], &r);
}

static void mdel(model *m, int ti, const uint8_t *k, uint32_t kl)
{
    undo_record(m, ti, k, kl);
    mdel_raw(&m->t[ti], k, kl);
}

static void mtab_clear(mtab *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->e[i].key);
    free(t->e);
    t->e = NULL;
    t->n = t->cap = 0;
}

static mtab mtab_copy(const mtab *t)
{
    mtab c = *t;
    c.cap = t->n ? t->n : 1;
    c.e = malloc(c.cap * sizeof *c.e);
    assert_non_null(c.e);
    for (size_t i = 0; i < t->n; i++) {
        c.e[i] = t->e[i];
        c.e[i].key = dupkey(t->e[i].key, t->e[i].klen);
    }
    return c;
}

/* Drop and create: the whole table state goes to the undo log. */
static void mtable_replace(model *m, int ti, int exists, eng_tbl tb)
{
    undo u = {.kind = 1, .tab = ti, .saved = m->t[ti]};
    push_undo(m, &u);
    mtab *t = &m->t[ti];
    t->e = NULL;
    t->n = t->cap = 0;
    t->exists = exists;
    t->tb = tb;
}

static void model_commit(model *m)
{
    for (size_t i = 0; i < m->nu; i++) {
        if (m->u[i].kind == 0)
            free(m->u[i].old.key);
        else
            mtab_clear(&m->u[i].saved);
    }
    m->nu = 0;
}

static void model_rollback(model *m)
{
    while (m->nu) {
        undo *u = &m->u[--m->nu];
        mtab *t = &m->t[u->tab];
        if (u->kind == 1) {
            mtab_clear(t);
            *t = u->saved;
        } else if (u->had) {
            mset_raw(t, &u->old); /* takes the key */
        } else {
            mdel_raw(t, u->old.key, u->old.klen);
            free(u->old.key);
        }
    }
}

static void model_init(model *m)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < NTAB; i++)
        m->t[i] = table_defs[i];
}

static void model_free(model *m)
{
    model_commit(m);
    free(m->u);
    for (int i = 0; i < NTAB; i++)
        mtab_clear(&m->t[i]);
    memset(m, 0, sizeof *m);
}

static model model_copy(const model *m)
{
    model c;
    model_init(&c);
    for (int i = 0; i < NTAB; i++)
        c.t[i] = mtab_copy(&m->t[i]);
    return c;
}

/* Digest of a table's contents in key order; the recovered side computes the same from
 * what it reads. */
static uint64_t digest_step(uint64_t h, const uint8_t *k, uint32_t kl, uint64_t vlen,
                            uint64_t vhash)
{
    uint64_t v[3] = {h, vlen, vhash};
    return om_xxh3(k, kl, om_xxh3(v, sizeof v, kl));
}

static uint64_t model_state(const model *m)
{
    uint64_t h = 0x5eed;
    for (int i = 0; i < NTAB; i++) {
        const mtab *t = &m->t[i];
        uint64_t th = om_xxh3(t->name, strlen(t->name), t->exists);
        for (size_t j = 0; t->exists && j < t->n; j++)
            th = digest_step(th, t->e[j].key, t->e[j].klen, t->e[j].vlen, t->e[j].vhash);
        uint64_t v[3] = {h, th, t->exists ? t->n : ~0ull};
        h = om_xxh3(v, sizeof v, 7);
    }
    return h;
}

/* ------------------------------------------------------------------------------------------
 * Random keys and values
 * ---------------------------------------------------------------------------------------- */

#define MAX_TEST_VALUE (3u * ENG_MAX_INLINE)
#define NPREFIX        6

static uint8_t prefixes[4][NPREFIX][ENG_MAX_KEY];
static uint32_t prefix_len[4][NPREFIX];

static const char *const alphabets[4] = {"abcd", "abcdefghijklmnop", "abcdefghijklmnopqrstuvwxyz",
                                         "\x00\x01\x7f\x80\xff"};
static const uint32_t alphabet_len[4] = {4, 16, 26, 5};

static void init_prefixes(void)
{
    static const uint32_t lens[NPREFIX] = {0, 2, 8, 30, 300, 1000};
    uint64_t s = 12345;
    for (int st = 0; st < 4; st++)
        for (int p = 0; p < NPREFIX; p++) {
            prefix_len[st][p] = lens[p];
            for (uint32_t i = 0; i < ENG_MAX_KEY; i++)
                prefixes[st][p][i] = (uint8_t)alphabets[st][below(&s, alphabet_len[st])];
        }
}

static uint32_t key_len(uint64_t *s, int style)
{
    uint64_t r = below(s, 100);
    switch (style) {
    case KS_SHORT:
        return 1 + (uint32_t)below(s, 12);
    case KS_LONG:
        /* all share a prefix of at least 900 bytes: separators cannot be shortened */
        return r < 50 ? ENG_MAX_KEY - (uint32_t)below(s, 4) : 900 + (uint32_t)below(s, 125);
    case KS_BINARY:
        return r < 80 ? 1 + (uint32_t)below(s, 6) : 1 + (uint32_t)below(s, 60);
    default:
        if (r < 70) return 1 + (uint32_t)below(s, 24);
        if (r < 92) return 25 + (uint32_t)below(s, 176);
        return 201 + (uint32_t)below(s, ENG_MAX_KEY - 200);
    }
}

static void gen_key(uint64_t *s, int style, uint8_t *k, uint32_t *kl)
{
    uint32_t len = key_len(s, style);
    int p = style == KS_LONG ? NPREFIX - 1 : (int)below(s, NPREFIX);
    uint32_t pl = prefix_len[style][p] < len ? prefix_len[style][p] : len;
    if (style == KS_LONG) pl = 900;
    memcpy(k, prefixes[style][p], pl);
    for (uint32_t i = pl; i < len; i++)
        k[i] = (uint8_t)alphabets[style][below(s, alphabet_len[style])];
    *kl = len;
}

static uint32_t val_len(uint64_t *s)
{
    uint64_t r = below(s, 1000);
    if (r < 40) return 0;
    if (r < 550) return 1 + (uint32_t)below(s, 64);
    if (r < 850) return 65 + (uint32_t)below(s, 1000);
    if (r < 970) return 1065 + (uint32_t)below(s, ENG_MAX_INLINE - 1065);
    /* around the inline limit and well beyond it: long values */
    return ENG_MAX_INLINE - 64 + (uint32_t)below(s, MAX_TEST_VALUE - ENG_MAX_INLINE + 64);
}

/* ------------------------------------------------------------------------------------------
 * Comparing the database with the model
 * ---------------------------------------------------------------------------------------- */

static uint8_t vbuf[MAX_TEST_VALUE + 16];
static uint8_t vexp[MAX_TEST_VALUE + 16];

/* Reads the value under the cursor: whole, or in pieces at odd offsets. */
static int cursor_value_hash(eng_cursor *c, uint64_t vlen, uint64_t *s, uint64_t *h)
{
    if (vlen > MAX_TEST_VALUE)
        return om_errf(OM_E_Internal, "value of %llu bytes", (unsigned long long)vlen);
    int rc = 0;
    if (s && vlen > 2 && below(s, 4) == 0) {
        uint64_t off = 0;
        while (off < vlen && !rc) {
            uint64_t n = 1 + below(s, vlen - off < 5000 ? vlen - off : 5000);
            rc = eng_cursor_read(c, off, vbuf + off, n);
            off += n;
        }
    } else if (vlen) {
        rc = eng_cursor_read(c, 0, vbuf, vlen);
    }
    *h = om_xxh3(vbuf, vlen, 0);
    return rc;
}

typedef struct cmpstat {
    uint64_t scans, records, gets;
} cmpstat;

static void describe_key(const uint8_t *k, uint32_t kl, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "%u bytes '", kl);
    for (uint32_t i = 0; i < kl && n + 8 < len; i++) {
        if (i == 24 && kl > 40) {
            n += (size_t)snprintf(out + n, len - n, "...");
            i = kl - 12;
        }
        uint8_t ch = k[i];
        n += (size_t)snprintf(out + n, len - n, ch >= 0x20 && ch < 0x7f ? "%c" : "\\x%02x", ch);
    }
    snprintf(out + n, len - n, "'");
}

/* Everything the view shows of table t equals the model: order, keys, values, gets, check. */
static void compare_table(eng_view *v, const mtab *t, uint64_t *s, int all_gets, cmpstat *st)
{
    char kd[256], kd2[256];
    eng_tbl tb;
    int rc = eng_table_open(v, t->name, &tb);
    if (!t->exists) {
        if (rc != OM_E_ObjectNotFound)
            fail_msg("table %s should not exist: open -> %s", t->name, errs(rc));
        return;
    }
    if (rc) fail_msg("opening table %s: %s", t->name, errs(rc));
    if (tb.root != t->tb.root || tb.objid != t->tb.objid)
        fail_msg("table %s: open gives root %u objid %u, the handle had root %u objid %u", t->name,
                 tb.root, tb.objid, t->tb.root, t->tb.objid);
    uint64_t nrec = 0;
    rc = eng_table_check(v, tb, &nrec);
    if (rc) fail_msg("eng_table_check(%s): %s", t->name, errs(rc));
    if (nrec != t->n)
        fail_msg("table %s: check counts %llu records, model has %zu", t->name,
                 (unsigned long long)nrec, t->n);
    eng_cursor *c = NULL;
    OK(eng_cursor_open(v, tb, &c));
    rc = eng_cursor_first(c);
    for (size_t i = 0; i < t->n; i++) {
        if (rc) {
            describe_key(t->e[i].key, t->e[i].klen, kd, sizeof kd);
            fail_msg("table %s: scan ended after %zu of %zu records (%s); next should be %s",
                     t->name, i, t->n, errs(rc), kd);
        }
        const void *k;
        uint32_t kl;
        uint64_t vl, h;
        OK(eng_cursor_key(c, &k, &kl));
        if (keycmp(k, kl, t->e[i].key, t->e[i].klen)) {
            describe_key(k, kl, kd, sizeof kd);
            describe_key(t->e[i].key, t->e[i].klen, kd2, sizeof kd2);
            fail_msg("table %s: record %zu has key %s, model has %s", t->name, i, kd, kd2);
        }
        OK(eng_cursor_vlen(c, &vl));
        if (vl != t->e[i].vlen)
            fail_msg("table %s: record %zu: value of %llu bytes, model has %u", t->name, i,
                     (unsigned long long)vl, t->e[i].vlen);
        OK(cursor_value_hash(c, vl, s, &h));
        if (h != t->e[i].vhash) {
            describe_key(t->e[i].key, t->e[i].klen, kd, sizeof kd);
            fail_msg("table %s: record %zu (%s): value of %u bytes differs", t->name, i, kd,
                     t->e[i].vlen);
        }
        rc = eng_cursor_next(c);
        st->records++;
    }
    if (rc != OM_E_RecordNotFound) {
        const void *k = NULL;
        uint32_t kl = 0;
        if (!rc) eng_cursor_key(c, &k, &kl);
        if (k) describe_key(k, kl, kd, sizeof kd);
        fail_msg("table %s: scan goes on after the model's %zu records: %s %s", t->name, t->n,
                 errs(rc), k ? kd : "");
    }
    eng_cursor_close(c);
    st->scans++;
    /* Gets: every key now and then, else a sample. */
    size_t ngets = all_gets ? t->n : (t->n < 64 ? t->n : 64);
    for (size_t g = 0; g < ngets; g++) {
        const ment *e = &t->e[all_gets ? g : below(s, t->n)];
        void *val = NULL;
        uint64_t vl = 0;
        rc = eng_get(v, tb, e->key, e->klen, &val, &vl);
        if (rc || vl != e->vlen || (vl && om_xxh3(val, vl, 0) != e->vhash) || (!vl && val)) {
            describe_key(e->key, e->klen, kd, sizeof kd);
            fail_msg("table %s: get %s -> %s, %llu bytes (model: %u bytes)", t->name, kd, errs(rc),
                     (unsigned long long)vl, e->vlen);
        }
        free(val);
        st->gets++;
    }
}

/* ------------------------------------------------------------------------------------------
 * The workload: random operations in transactions, shared by the model and crash tests
 * ---------------------------------------------------------------------------------------- */

typedef struct wstats {
    uint64_t ops, puts_new, replaces, dups, dels, dels_missing, gets, scans, txns, commits,
        rollbacks, lazy, drops, creates, checkpoints, reopens, crashes, records_peak, long_puts;
    uint32_t pages_peak, free_peak;
} wstats;

typedef struct work {
    eng_db *db;
    eng_opts o;
    crashvfs *c;
    model m;
    uint64_t s;     /* random state */
    uint64_t vseq;  /* value seeds */
    int crash_mode; /* unexpected errors stop the run instead of failing the test */
    int stop_rc;
    long op_index, op_total; /* phase of the growth/shrink cycle */
    unsigned lifecycle_odds; /* one transaction in this many drops or creates a table */
    wstats st;
    uint8_t kbuf[ENG_MAX_KEY];
} work;

/* In crash mode an error other than the expected one stops the workload; it must be the
 * power loss (the engine may report it as Crashed, FatalIO or DiskIO). */
static int unexpected(work *w, int rc, int want, const char *what)
{
    if (w->crash_mode && w->c && crashvfs_crashed(w->c)) {
        w->stop_rc = rc ? rc : OM_E_Crashed;
        return 1;
    }
    fail_msg("%s -> %s, expected %s (op %ld)", what, errs(rc), om_err_name(want), w->op_index);
    return 1;
}

#define WCHK(w, expr, want)                                                                        \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != (want) && unexpected((w), rc_, (want), #expr)) return (w)->stop_rc;             \
    } while (0)

static int pick_table(work *w, int must_exist)
{
    unsigned total = 0;
    for (int i = 0; i < NTAB; i++)
        if (w->m.t[i].exists || !must_exist) total += w->m.t[i].weight;
    if (!total) return -1;
    unsigned r = (unsigned)below(&w->s, total);
    for (int i = 0; i < NTAB; i++) {
        if (!(w->m.t[i].exists || !must_exist)) continue;
        if (r < w->m.t[i].weight) return i;
        r -= w->m.t[i].weight;
    }
    return -1;
}

/* A key that is not in the table (tries a few random ones). */
static int new_key(work *w, mtab *t, uint32_t *kl)
{
    for (int tries = 0; tries < 8; tries++) {
        int found;
        gen_key(&w->s, t->style, w->kbuf, kl);
        mfind(t, w->kbuf, *kl, &found);
        if (!found) return 1;
    }
    return 0;
}

static const ment *existing(work *w, mtab *t)
{
    return t->n ? &t->e[below(&w->s, t->n)] : NULL;
}

static int op_put(work *w, eng_txn *t, int ti, const uint8_t *k, uint32_t kl, unsigned flags,
                  int want)
{
    uint32_t vlen = val_len(&w->s);
    uint64_t vseed = ++w->vseq * 0x100000001b3ull;
    gen_value(vseed, vlen, vexp);
    WCHK(w, eng_put(t, w->m.t[ti].tb, k, kl, vexp, vlen, flags), want);
    if (want == 0) {
        mput(&w->m, ti, k, kl, vlen, vseed, om_xxh3(vexp, vlen, 0));
        w->st.long_puts += vlen + kl > ENG_MAX_INLINE;
    }
    return 0;
}

static int op_get(work *w, eng_view *v, int ti)
{
    mtab *t = &w->m.t[ti];
    const ment *e = below(&w->s, 4) ? existing(w, t) : NULL;
    uint32_t kl;
    const uint8_t *k;
    if (e) {
        k = e->key;
        kl = e->klen;
    } else {
        if (!new_key(w, t, &kl)) return 0;
        k = w->kbuf;
    }
    void *val = NULL;
    uint64_t vl = 99;
    int rc = eng_get(v, t->tb, k, kl, &val, &vl);
    if (rc != (e ? 0 : OM_E_RecordNotFound) &&
        unexpected(w, rc, e ? 0 : OM_E_RecordNotFound, "eng_get"))
        return w->stop_rc;
    if (e && (vl != e->vlen || (vl && om_xxh3(val, vl, 0) != e->vhash)))
        fail_msg("table %s: get in the transaction's view: %llu bytes, model %u (or content)",
                 t->name, (unsigned long long)vl, e->vlen);
    free(val);
    w->st.gets++;
    return 0;
}

/* Seek to a random key (an existing one, or any) and walk a few records. */
static int op_scan(work *w, eng_view *v, int ti)
{
    mtab *t = &w->m.t[ti];
    eng_cursor *c = NULL;
    WCHK(w, eng_cursor_open(v, t->tb, &c), 0);
    int rc;
    size_t i;
    int found;
    if (below(&w->s, 8) == 0) {
        rc = eng_cursor_first(c);
        i = 0;
    } else {
        const ment *e = below(&w->s, 2) ? existing(w, t) : NULL;
        uint32_t kl;
        if (e) {
            memcpy(w->kbuf, e->key, e->klen);
            kl = e->klen;
            /* sometimes just before or after an existing key */
            if (below(&w->s, 3) == 0 && kl > 1)
                kl--;
            else if (below(&w->s, 3) == 0 && kl < ENG_MAX_KEY)
                w->kbuf[kl++] = 0;
        } else {
            gen_key(&w->s, t->style, w->kbuf, &kl);
        }
        rc = eng_cursor_seek(c, w->kbuf, kl);
        i = mfind(t, w->kbuf, kl, &found);
    }
    uint64_t steps = 1 + below(&w->s, 40);
    for (uint64_t n = 0; n < steps; n++, i++) {
        int want = i < t->n ? 0 : OM_E_RecordNotFound;
        if (rc != want) {
            eng_cursor_close(c);
            if (unexpected(w, rc, want, "cursor seek/next")) return w->stop_rc;
        }
        if (rc) break;
        const void *k;
        uint32_t kl;
        uint64_t vl, h;
        rc = eng_cursor_key(c, &k, &kl);
        if (!rc) rc = eng_cursor_vlen(c, &vl);
        if (!rc) rc = cursor_value_hash(c, vl, &w->s, &h);
        if (rc) {
            eng_cursor_close(c);
            if (unexpected(w, rc, 0, "cursor key/value")) return w->stop_rc;
        }
        if (keycmp(k, kl, t->e[i].key, t->e[i].klen) || vl != t->e[i].vlen || h != t->e[i].vhash) {
            char a[256], b[256];
            describe_key(k, kl, a, sizeof a);
            describe_key(t->e[i].key, t->e[i].klen, b, sizeof b);
            fail_msg("table %s: cursor at model record %zu: key %s (%llu bytes of value), model %s "
                     "(%u bytes)",
                     t->name, i, a, (unsigned long long)vl, b, t->e[i].vlen);
        }
        rc = eng_cursor_next(c);
    }
    eng_cursor_close(c);
    w->st.scans++;
    return 0;
}

/* Uncommitted changes never show in a committed view, even on the writer's thread. */
static int op_isolation(work *w, int ti)
{
    if (!w->m.nu) return 0;
    const undo *u = &w->m.u[below(&w->s, w->m.nu)];
    if (u->kind != 0) return 0;
    /* the committed state of that key is the first undo record that mentions it */
    for (size_t i = 0; i < w->m.nu; i++) {
        if (w->m.u[i].kind == 1 && w->m.u[i].tab == u->tab) return 0; /* table replaced */
        if (w->m.u[i].kind == 0 && w->m.u[i].tab == u->tab &&
            !keycmp(w->m.u[i].old.key, w->m.u[i].old.klen, u->old.key, u->old.klen)) {
            u = &w->m.u[i];
            break;
        }
    }
    (void)ti;
    eng_view *v = NULL;
    WCHK(w, eng_view_begin(w->db, &v), 0);
    void *val = NULL;
    uint64_t vl = 0;
    eng_tbl tb;
    int rc = eng_table_open(v, w->m.t[u->tab].name, &tb);
    if (rc == 0) rc = eng_get(v, tb, u->old.key, u->old.klen, &val, &vl);
    eng_view_end(v);
    int want = u->had ? 0 : OM_E_RecordNotFound;
    if (rc != want && unexpected(w, rc, want, "get in a committed view during a transaction"))
        return w->stop_rc;
    if (!rc && (vl != u->old.vlen || (vl && om_xxh3(val, vl, 0) != u->old.vhash)))
        fail_msg("a committed view shows the running transaction's value (%llu bytes, committed "
                 "%u)",
                 (unsigned long long)vl, u->old.vlen);
    free(val);
    return 0;
}

/* Drops a table, or creates a missing one and fills it a little. */
static int op_lifecycle(work *w, eng_txn *t)
{
    int ti = (int)below(&w->s, NTAB);
    mtab *mt = &w->m.t[ti];
    int nexist = 0;
    for (int i = 0; i < NTAB; i++)
        nexist += w->m.t[i].exists;
    if (mt->exists) {
        if (nexist < 3) return 0;
        WCHK(w, eng_table_drop(t, mt->name), 0);
        mtable_replace(&w->m, ti, 0, (eng_tbl){0, 0});
        w->st.drops++;
        if (below(&w->s, 2)) return 0;
    }
    eng_tbl tb;
    WCHK(w, eng_table_create(t, mt->name, &tb), 0);
    mtable_replace(&w->m, ti, 1, tb);
    w->st.creates++;
    return 0;
}

/* One random operation on the transaction. The mix moves between growing and shrinking. */
static int random_op(work *w, eng_txn *t)
{
    int ti = pick_table(w, 1);
    if (ti < 0) return 0;
    mtab *mt = &w->m.t[ti];
    eng_view *v = eng_txn_view(t);
    long cycle = w->op_total / 2 > 0 ? w->op_total / 2 : 1;
    int growing = (w->op_index % cycle) < cycle * 6 / 10;
    unsigned p_new = growing ? 450 : 60, p_del = growing ? 110 : 560;
    unsigned r = (unsigned)below(&w->s, 1000);
    w->st.ops++;
    w->op_index++;
    uint32_t kl;
    if (r < p_new) { /* put a new key */
        if (!new_key(w, mt, &kl)) return 0;
        w->st.puts_new++;
        return op_put(w, t, ti, w->kbuf, kl, below(&w->s, 2) ? ENG_PUT_NOOVERWRITE : 0, 0);
    }
    r -= p_new;
    if (r < p_del) { /* delete an existing key */
        const ment *e = existing(w, mt);
        if (!e) return 0;
        memcpy(w->kbuf, e->key, e->klen);
        kl = e->klen;
        WCHK(w, eng_del(t, mt->tb, w->kbuf, kl), 0);
        mdel(&w->m, ti, w->kbuf, kl);
        w->st.dels++;
        return 0;
    }
    r -= p_del;
    if (r < 120) { /* replace */
        const ment *e = existing(w, mt);
        if (!e) return 0;
        memcpy(w->kbuf, e->key, e->klen);
        w->st.replaces++;
        return op_put(w, t, ti, w->kbuf, e->klen, 0, 0);
    }
    r -= 120;
    if (r < 40) { /* NOOVERWRITE on an existing key: refused, value unchanged */
        const ment *e = existing(w, mt);
        if (!e) return 0;
        memcpy(w->kbuf, e->key, e->klen);
        w->st.dups++;
        return op_put(w, t, ti, w->kbuf, e->klen, ENG_PUT_NOOVERWRITE, OM_E_KeyDuplicate);
    }
    r -= 40;
    if (r < 40) { /* delete a missing key */
        if (!new_key(w, mt, &kl)) return 0;
        WCHK(w, eng_del(t, mt->tb, w->kbuf, kl), OM_E_RecordNotFound);
        w->st.dels_missing++;
        return 0;
    }
    r -= 40;
    if (r < 150) return op_get(w, v, ti);
    r -= 150;
    if (r < 60) return op_scan(w, v, ti);
    r -= 60;
    if (r < 4) return op_isolation(w, ti);
    return 0;
}

/* One transaction: 1..~200 operations, a table dropped or created now and then; commits
 * (durably or lazily) or rolls back. *committed says which; commit_hook runs just before
 * the commit call (the crash test records the model's state there). */
static int run_txn(work *w, int *committed, void (*commit_hook)(work *, void *), void *arg)
{
    eng_txn *t = NULL;
    *committed = 0;
    WCHK(w, eng_txn_begin(w->db, &t), 0);
    w->st.txns++;
    uint64_t r = below(&w->s, 100);
    uint64_t nops = r < 10 ? 1 : r < 85 ? 1 + below(&w->s, 60) : 100 + below(&w->s, 200);
    int rc = 0;
    if (below(&w->s, w->lifecycle_odds) == 0) rc = op_lifecycle(w, t);
    for (uint64_t i = 0; i < nops && !rc; i++)
        rc = random_op(w, t);
    if (rc) {
        eng_txn_rollback(t);
        model_rollback(&w->m);
        return rc;
    }
    if (below(&w->s, 100) < 12) {
        eng_txn_rollback(t);
        model_rollback(&w->m);
        w->st.rollbacks++;
        return 0;
    }
    unsigned flags = below(&w->s, 100) < 20 ? ENG_COMMIT_LAZY : 0;
    if (commit_hook) commit_hook(w, arg);
    model_commit(&w->m);
    *committed = flags ? 2 : 1;
    rc = eng_txn_commit(t, flags);
    if (rc) {
        *committed = 0;
        if (unexpected(w, rc, 0, "eng_txn_commit")) return w->stop_rc;
    }
    w->st.commits++;
    w->st.lazy += flags != 0;
    return 0;
}

static void open_tables(work *w)
{
    eng_view *v = NULL;
    OK(eng_view_begin(w->db, &v));
    for (int i = 0; i < NTAB; i++) {
        eng_tbl tb;
        int rc = eng_table_open(v, w->m.t[i].name, &tb);
        if (rc != (w->m.t[i].exists ? 0 : OM_E_ObjectNotFound))
            fail_msg("reopening table %s: %s", w->m.t[i].name, errs(rc));
        if (!rc && (tb.root != w->m.t[i].tb.root || tb.objid != w->m.t[i].tb.objid))
            fail_msg("table %s changed its root or object id", w->m.t[i].name);
    }
    eng_view_end(v);
}

static void compare_all(work *w, int all_gets, cmpstat *cs)
{
    eng_view *v = NULL;
    OK(eng_view_begin(w->db, &v));
    for (int i = 0; i < NTAB; i++)
        compare_table(v, &w->m.t[i], &w->s, all_gets, cs);
    eng_space sp;
    OK(eng_space_info(v, &sp));
    eng_view_end(v);
    if (sp.pages > w->st.pages_peak) w->st.pages_peak = sp.pages;
    if (sp.free_pages > w->st.free_peak) w->st.free_peak = sp.free_pages;
    uint64_t n = 0;
    for (int i = 0; i < NTAB; i++)
        n += w->m.t[i].n;
    if (n > w->st.records_peak) w->st.records_peak = n;
}

static void work_setup(work *w, crashvfs *c, uint64_t seed)
{
    memset(w, 0, sizeof *w);
    w->c = c;
    w->o = opts_on(c);
    w->o.cache_bytes = 96 * ENG_PAGE_SIZE; /* small: checkpoints and evictions happen */
    w->o.checkpoint_gens = 4;
    w->s = seed;
    w->vseq = seed << 32;
    w->lifecycle_odds = 150;
    model_init(&w->m);
}

/* Creates the tables of the model (all but "spare") in one transaction. */
static void create_model_tables(work *w)
{
    eng_txn *t = NULL;
    OK(eng_txn_begin(w->db, &t));
    for (int i = 0; i < NTAB - 1; i++) {
        OK(eng_table_create(t, w->m.t[i].name, &w->m.t[i].tb));
        w->m.t[i].exists = 1;
    }
    OK(eng_txn_commit(t, 0));
}

/* ------------------------------------------------------------------------------------------
 * 1. The randomised model test
 * ---------------------------------------------------------------------------------------- */

/* Table pages of every table, tallied between two samples: pages gained (splits, new long
 * value chunks) and lost (merges, frees). */
typedef struct pagetally {
    uint32_t last[NTAB], peak[NTAB], depth[NTAB], depth_last[NTAB];
    uint64_t gained, lost, depth_changes;
} pagetally;

static void tally_pages(work *w, pagetally *pt)
{
    for (int i = 0; i < NTAB; i++) {
        uint32_t n = w->m.t[i].exists ? pages_of(w->db, w->m.t[i].tb.objid) : 0;
        if (n > pt->last[i]) pt->gained += n - pt->last[i];
        if (n < pt->last[i]) pt->lost += pt->last[i] - n;
        if (n > pt->peak[i]) pt->peak[i] = n;
        pt->last[i] = n;
        uint32_t d = w->m.t[i].exists ? tree_depth(w->db, w->m.t[i].tb.root) : 0;
        if (d > pt->depth[i]) pt->depth[i] = d;
        if (d != pt->depth_last[i] && d && pt->depth_last[i]) pt->depth_changes++;
        pt->depth_last[i] = d;
    }
}

static void random_operations_match_a_sorted_model(void **state)
{
    (void)state;
    long total = env_long("OMBRA_TABLE_OPS", 100000 / SCALE_DOWN);
    uint64_t seed = (uint64_t)env_long("OMBRA_TABLE_SEED", 1);
    crashvfs *c = new_disk(seed);
    static work w;
    work_setup(&w, c, seed);
    w.op_total = total;
    w.db = new_db(&w.o);
    create_model_tables(&w);
    cmpstat cs = {0};
    pagetally pt = {0};
    double t0 = now_s();
    long commits_seen = 0;
    while (w.op_index < total) {
        int committed;
        OK(run_txn(&w, &committed, NULL, NULL));
        if (!committed) {
            /* rolled back: nothing may have changed */
            if (below(&w.s, 8) == 0) compare_all(&w, 0, &cs);
            continue;
        }
        commits_seen++;
        compare_all(&w, commits_seen % 16 == 0, &cs);
        if (commits_seen % 8 == 0) tally_pages(&w, &pt);
        if (commits_seen % 97 == 0) { /* clean shutdown and mount */
            w.db = close_and_reopen(&w.o, w.db);
            open_tables(&w);
            w.st.reopens++;
        } else if (commits_seen % 131 == 0) { /* power loss after everything is durable */
            OK(eng_log_flush(w.db));
            w.db = crash_and_recover(c, &w.o, w.db);
            open_tables(&w);
            compare_all(&w, 1, &cs);
            w.st.crashes++;
        } else if (commits_seen % 41 == 0) {
            OK(eng_checkpoint(w.db));
            w.st.checkpoints++;
        }
    }
    w.db = close_and_reopen(&w.o, w.db);
    compare_all(&w, 1, &cs);
    tally_pages(&w, &pt);
    eng_space sp = space_of(w.db);
    print_message("model test: seed %llu, %llu operations in %llu transactions (%llu committed, "
                  "%llu lazily; %llu rolled back), %.1f s\n",
                  (unsigned long long)seed, (unsigned long long)w.st.ops,
                  (unsigned long long)w.st.txns, (unsigned long long)w.st.commits,
                  (unsigned long long)w.st.lazy, (unsigned long long)w.st.rollbacks, now_s() - t0);
    print_message("  %llu new puts, %llu replaces, %llu refused duplicates, %llu deletes, %llu "
                  "deletes of missing keys, %llu gets, %llu range scans, %llu long-value puts, "
                  "%llu drops, %llu creates\n",
                  (unsigned long long)w.st.puts_new, (unsigned long long)w.st.replaces,
                  (unsigned long long)w.st.dups, (unsigned long long)w.st.dels,
                  (unsigned long long)w.st.dels_missing, (unsigned long long)w.st.gets,
                  (unsigned long long)w.st.scans, (unsigned long long)w.st.long_puts,
                  (unsigned long long)w.st.drops, (unsigned long long)w.st.creates);
    print_message("  verified %llu full scans (%llu records) and %llu gets after commits; "
                  "%llu remounts, %llu power losses, %llu checkpoints\n",
                  (unsigned long long)cs.scans, (unsigned long long)cs.records,
                  (unsigned long long)cs.gets, (unsigned long long)w.st.reopens,
                  (unsigned long long)w.st.crashes, (unsigned long long)w.st.checkpoints);
    print_message("  peak: %llu records, %u pages (%u free at most); end: %u pages, %u free, "
                  "%llu long values allocated\n",
                  (unsigned long long)w.st.records_peak, w.st.pages_peak, w.st.free_peak, sp.pages,
                  sp.free_pages, (unsigned long long)sp.lv_count);
    print_message("  tree pages gained %llu times and lost %llu times (sampled every 8 commits); "
                  "peak pages per table:",
                  (unsigned long long)pt.gained, (unsigned long long)pt.lost);
    for (int i = 0; i < NTAB; i++)
        print_message(" %s %u (%u levels)", w.m.t[i].name, pt.peak[i], pt.depth[i]);
    print_message("; tree heights changed %llu times\n", (unsigned long long)pt.depth_changes);
    /* The test is only worth something if the trees grew and shrank a lot. */
    assert_true(pt.gained > 100 && pt.lost > 50);
    assert_true(pt.depth[2] >= 3); /* the long-key table */
    assert_true(sp.lv_count > 0);
    OK(eng_db_close(w.db));
    model_free(&w.m);
    crashvfs_free(c);
}

/* ------------------------------------------------------------------------------------------
 * 2. The model test across power losses
 * ---------------------------------------------------------------------------------------- */

#define CRASH_TXNS   40
#define MAX_ATTEMPTS (CRASH_TXNS + 1)

typedef struct crun {
    int dry;                           /* no crash: record the states, fail on any error */
    uint32_t stop_after;               /* dry run: stop after this many commits (0: never) */
    uint64_t states[MAX_ATTEMPTS + 1]; /* dry run: model state after the first k commits */
    uint32_t total;                    /* dry run: commits attempted */
    uint32_t attempted, durable;
    uint64_t syncs;
    uint64_t last_state; /* model state after the previous commit attempt */
    int changed;         /* the commit being attempted changes the state */
} crun;

static void record_state(work *w, void *arg)
{
    crun *r = arg;
    r->attempted++;
    /* the hook runs before model_commit, but the model already holds the changes */
    uint64_t st = model_state(&w->m);
    if (r->dry) r->states[r->attempted] = st;
    r->changed = st != r->last_state;
    r->last_state = st;
}

/* The prepared disk: a database with the model tables, filled until the long-key table is
 * three levels deep; its model is kept for every run. */
static crashvfs *prepare_crash_disk(uint64_t seed, model *out)
{
    crashvfs *c = new_disk(seed);
    static work w;
    work_setup(&w, c, seed);
    w.db = new_db(&w.o);
    create_model_tables(&w);
    w.op_total = 1000000;       /* always in the growing part of the cycle */
    w.lifecycle_odds = 1000000; /* keep every table */
    for (int i = 0; i < 240; i++) {
        int committed;
        OK(run_txn(&w, &committed, NULL, NULL));
    }
    if (seed == 1) {
        print_message("table crash test: the prepared database holds");
        for (int i = 0; i < NTAB; i++)
            if (w.m.t[i].exists)
                print_message(" %s %zu records (%u levels)", w.m.t[i].name, w.m.t[i].n,
                              tree_depth(w.db, w.m.t[i].tb.root));
        print_message("\n");
    }
    OK(eng_db_close(w.db));
    *out = model_copy(&w.m);
    model_free(&w.m);
    return c;
}

/* Runs CRASH_TXNS transactions from the prepared state; stops at the first error. A dry run
 * records the states; *end gets the final model. */
static uint64_t crash_lifecycle_ops; /* drops and creates in the dry runs */

static int crash_workload(crashvfs *c, uint64_t seed, const model *start, crun *r, model *end)
{
    static work w;
    work_setup(&w, c, seed);
    model_free(&w.m);
    w.m = model_copy(start);
    w.op_total = 400;      /* the cycle's growth and shrink phases both show */
    w.lifecycle_odds = 10; /* drops (pages freed) and creates under crashes too */
    w.crash_mode = !r->dry;
    r->attempted = r->durable = 0;
    r->last_state = model_state(&w.m);
    if (r->dry) r->states[0] = r->last_state;
    int rc = eng_db_open(&w.o, &w.db);
    if (rc) w.db = NULL;
    for (int i = 0; i < CRASH_TXNS && !rc; i++) {
        if (r->stop_after && r->attempted >= r->stop_after) break;
        int committed;
        uint64_t syncs0 = crashvfs_syncs(c);
        rc = run_txn(&w, &committed, record_state, r);
        if (getenv("OMBRA_TABLE_TRACE")) {
            static const char *const how[3] = {"rolled back or stopped", "committed",
                                               "committed lazily"};
            print_message("  txn %d: %s, commit %u (state %016llx), rc %d, syncs %llu..%llu\n", i,
                          how[committed], r->attempted,
                          (unsigned long long)(r->dry ? r->states[r->attempted] : 0), rc,
                          (unsigned long long)syncs0, (unsigned long long)crashvfs_syncs(c));
        }
        if (rc) break;
        /* A durable commit makes the earlier lazy ones durable too, but only if it changed
         * something: eng_txn_commit of a transaction without changes returns at once. */
        if (committed == 1 && r->changed) r->durable = r->attempted;
        if (i % 9 == 8) {
            if ((rc = eng_checkpoint(w.db))) break;
            r->durable = r->attempted;
        }
        if (i == 21) {
            rc = eng_db_close(w.db);
            w.db = NULL;
            if (rc) break;
            r->durable = r->attempted;
            if ((rc = eng_db_open(&w.o, &w.db))) {
                w.db = NULL;
                break;
            }
        }
    }
    if (!rc) {
        rc = eng_db_close(w.db);
        if (!rc) r->durable = r->attempted;
    } else if (w.db) {
        eng_db_abandon(w.db);
    }
    w.db = NULL;
    if (r->dry && rc) fail_msg("dry run failed: %s", errs(rc));
    if (r->dry && !r->stop_after) crash_lifecycle_ops += w.st.drops + w.st.creates;
    if (r->dry) r->total = r->attempted;
    if (end)
        *end = w.m;
    else
        model_free(&w.m);
    return rc;
}

/* Reads every table of the rebooted database into a state digest (the same as
 * model_state), checking each tree on the way. */
static int recovered_state(om_vfs *vfs, uint64_t *st, char *why, size_t whylen)
{
    eng_opts o = opts_vfs(vfs);
    eng_db *db = NULL;
    int rc = eng_db_open(&o, &db);
    if (rc) {
        snprintf(why, whylen, "recovery failed: %s", errs(rc));
        return 1;
    }
    eng_view *v = NULL;
    OK(eng_view_begin(db, &v));
    uint64_t h = 0x5eed;
    int bad = 0;
    for (int i = 0; i < NTAB && !bad; i++) {
        const char *name = table_defs[i].name;
        eng_tbl tb;
        rc = eng_table_open(v, name, &tb);
        if (rc && rc != OM_E_ObjectNotFound) {
            snprintf(why, whylen, "opening table %s: %s", name, errs(rc));
            bad = 1;
            break;
        }
        int exists = rc == 0;
        uint64_t th = om_xxh3(name, strlen(name), (uint64_t)exists), n = 0, checked = 0;
        if (exists) {
            if ((rc = eng_table_check(v, tb, &checked))) {
                snprintf(why, whylen, "table %s fails its check: %s", name, errs(rc));
                bad = 1;
                break;
            }
            eng_cursor *c = NULL;
            OK(eng_cursor_open(v, tb, &c));
            for (rc = eng_cursor_first(c); !rc; rc = eng_cursor_next(c)) {
                const void *k;
                uint32_t kl;
                uint64_t vl, vh;
                OK(eng_cursor_key(c, &k, &kl));
                OK(eng_cursor_vlen(c, &vl));
                OK(cursor_value_hash(c, vl, NULL, &vh));
                th = digest_step(th, k, kl, vl, vh);
                n++;
            }
            eng_cursor_close(c);
            if (rc != OM_E_RecordNotFound) {
                snprintf(why, whylen, "scanning table %s: %s", name, errs(rc));
                bad = 1;
                break;
            }
            if (n != checked) {
                snprintf(why, whylen, "table %s: check counts %llu records, a scan %llu", name,
                         (unsigned long long)checked, (unsigned long long)n);
                bad = 1;
            }
        }
        uint64_t vv[3] = {h, th, exists ? n : ~0ull};
        h = om_xxh3(vv, sizeof vv, 7);
    }
    eng_view_end(v);
    eng_db_close(db);
    *st = h;
    return bad;
}

/* For a violation: which records differ between the recovered database and a model. */
static void print_difference(om_vfs *vfs, const model *m)
{
    eng_opts o = opts_vfs(vfs);
    eng_db *db = NULL;
    if (eng_db_open(&o, &db)) return;
    eng_view *v = NULL;
    if (eng_view_begin(db, &v)) goto out;
    for (int i = 0; i < NTAB; i++) {
        const mtab *t = &m->t[i];
        eng_tbl tb;
        int rc = eng_table_open(v, t->name, &tb);
        if (rc || !t->exists) {
            if ((rc == 0) != t->exists)
                print_message("  table %s: exists %d, model %d\n", t->name, rc == 0, t->exists);
            continue;
        }
        eng_cursor *c = NULL;
        if (eng_cursor_open(v, tb, &c)) continue;
        size_t j = 0;
        int shown = 0;
        for (rc = eng_cursor_first(c); !rc && shown < 6; rc = eng_cursor_next(c), j++) {
            const void *k;
            uint32_t kl;
            uint64_t vl, vh = 0;
            char a[256], b[256] = "(end)";
            if (eng_cursor_key(c, &k, &kl) || eng_cursor_vlen(c, &vl)) break;
            cursor_value_hash(c, vl, NULL, &vh);
            if (j < t->n && !keycmp(k, kl, t->e[j].key, t->e[j].klen) && vl == t->e[j].vlen &&
                vh == t->e[j].vhash)
                continue;
            describe_key(k, kl, a, sizeof a);
            if (j < t->n) describe_key(t->e[j].key, t->e[j].klen, b, sizeof b);
            print_message("  table %s record %zu: %s (%llu bytes) vs model %s (%u bytes)\n",
                          t->name, j, a, (unsigned long long)vl, b, j < t->n ? t->e[j].vlen : 0);
            shown++;
            int found;
            size_t at = mfind(t, k, kl, &found);
            if (at > j) j = at - (found ? 0 : 1);
        }
        if (rc == OM_E_RecordNotFound && j != t->n)
            print_message("  table %s: %zu records, model %zu\n", t->name, j, t->n);
        eng_cursor_close(c);
    }
    eng_view_end(v);
out:
    eng_db_close(db);
}

static void crash_points_keep_exactly_a_committed_table_state(void **state)
{
    (void)state;
    long points = env_long("OMBRA_TABLE_CRASH_POINTS", 300 / SCALE_DOWN);
    unsigned long only_w = 0, only_n = 0;
    const char *only = getenv("OMBRA_TABLE_CRASH_ONLY");
    if (only && sscanf(only, "%lu:%lu", &only_w, &only_n) != 2) only_w = 0;
    long tried = 0, violations = 0, double_crashes = 0, seeds = 0;
    static crun dryr, r;
    double t0 = now_s();
    uint64_t pages_max = 0;
    for (uint64_t wseed = only_w ? only_w : 1; tried < points; wseed++) {
        model start;
        crashvfs *disk = prepare_crash_disk(wseed, &start);
        crashvfs *c = crashvfs_clone(disk);
        uint64_t s0 = crashvfs_syncs(c);
        memset(&dryr, 0, sizeof dryr);
        dryr.dry = 1;
        model end;
        crash_workload(c, wseed, &start, &dryr, &end);
        dryr.syncs = crashvfs_syncs(c) - s0;
        /* the dry run's end state is what the database holds */
        uint64_t st;
        char why[512];
        if (recovered_state(crashvfs_vfs(c), &st, why, sizeof why)) fail_msg("dry run: %s", why);
        if (st != model_state(&end)) {
            print_difference(crashvfs_vfs(c), &end);
            fail_msg("dry run (workload %llu): the database does not hold the model's state",
                     (unsigned long long)wseed);
        }
        eng_opts o = opts_on(c);
        eng_db *db = NULL;
        OK(eng_db_open(&o, &db));
        eng_info info;
        OK(eng_db_info(db, &info));
        if (info.pages > pages_max) pages_max = info.pages;
        OK(eng_db_close(db));
        model_free(&end);
        crashvfs_free(c);
        seeds++;
        for (uint64_t n = only_n ? only_n : 1; n <= dryr.syncs && tried < points; n++, tried++) {
            if (only_w && (wseed != only_w || n != only_n)) break;
            c = crashvfs_clone(disk);
            crashvfs_reseed(c, wseed * 1000003u + n);
            crashvfs_crash_at_sync(c, n);
            memset(&r, 0, sizeof r);
            crash_workload(c, wseed, &start, &r, NULL);
            if (!crashvfs_crashed(c))
                fail_msg("crash point %llu of workload %llu was not reached", (unsigned long long)n,
                         (unsigned long long)wseed);
            crashvfs_reboot(c);
            if (n % 3 == 0) { /* lose power again during recovery */
                crashvfs_crash_at_sync(c, 1 + n % 7);
                o = opts_on(c);
                db = NULL;
                if (eng_db_open(&o, &db) == 0) eng_db_close(db);
                if (crashvfs_crashed(c)) double_crashes++;
                crashvfs_reboot(c);
            }
            int bad = recovered_state(crashvfs_vfs(c), &st, why, sizeof why);
            int found = 0;
            for (uint32_t k = r.durable; k <= r.attempted && !bad && !found; k++)
                found = dryr.states[k] == st;
            if (!bad && !found) {
                int other = -1;
                for (uint32_t k = 0; k <= dryr.total; k++)
                    if (dryr.states[k] == st) other = (int)k;
                snprintf(why, sizeof why,
                         "recovered tables are not the state after any of commits %u..%u "
                         "(durable..attempted); they match commit %d",
                         r.durable, r.attempted, other);
                bad = 1;
            }
            if (bad) {
                violations++;
                print_message("violation: workload %llu, crash at sync %llu of %llu "
                              "(OMBRA_TABLE_CRASH_ONLY=%llu:%llu): %s\n",
                              (unsigned long long)wseed, (unsigned long long)n,
                              (unsigned long long)dryr.syncs, (unsigned long long)wseed,
                              (unsigned long long)n, why);
                /* the records that differ from the model after the last durable commit
                 * (rebuilt by a dry run that stops there) */
                crashvfs *d = crashvfs_clone(disk);
                static crun part;
                memset(&part, 0, sizeof part);
                part.dry = 1;
                part.stop_after = r.durable;
                model at;
                crash_workload(d, wseed, &start, &part, &at);
                print_message("  differences from commit %u:\n", r.durable);
                print_difference(crashvfs_vfs(c), &at);
                model_free(&at);
                crashvfs_free(d);
            }
            crashvfs_free(c);
        }
        model_free(&start);
        crashvfs_free(disk);
        if (only_w) break;
    }
    print_message("table crash test: %ld crash points over %ld workloads (%ld with a second crash "
                  "during recovery; %llu table drops and creates), %ld violations, %.1f s; "
                  "databases up to %llu pages\n",
                  tried, seeds, double_crashes, (unsigned long long)crash_lifecycle_ops, violations,
                  now_s() - t0, (unsigned long long)pages_max);
    assert_int_equal(violations, 0);
}

/* ------------------------------------------------------------------------------------------
 * 3. Long values at boundary sizes
 * ---------------------------------------------------------------------------------------- */

/* The largest value: 64 MiB (OMBRA_TABLE_BIG_MB; make test takes 16, its sanitizer pass 8). */
static uint64_t big_value = 64ull << 20;

static uint8_t *big_exp, *big_got;

static void lv_key(char *k, uint32_t i)
{
    snprintf(k, 16, "lv:%05u", i); /* 8 bytes */
}

/* Value i of round `round`: vseed from both so a replacement differs. */
static uint64_t lv_seed(uint32_t i, uint32_t round)
{
    return 0xABCD0000ull + i * 131u + round;
}

static void assert_long_value(eng_view *v, eng_tbl tb, uint32_t i, uint64_t vlen, uint64_t vseed)
{
    char k[16];
    lv_key(k, i);
    void *val = NULL;
    uint64_t got = 0;
    int rc = eng_get(v, tb, k, 8, &val, &got);
    if (rc) fail_msg("get %s (%llu bytes): %s", k, (unsigned long long)vlen, errs(rc));
    if (got != vlen)
        fail_msg("get %s: %llu bytes, expected %llu", k, (unsigned long long)got,
                 (unsigned long long)vlen);
    if (vlen == 0 && val) fail_msg("get %s: a 0-byte value comes with a buffer", k);
    gen_value(vseed, vlen, big_exp);
    if (vlen && memcmp(val, big_exp, vlen)) {
        uint64_t at = 0;
        while (((uint8_t *)val)[at] == big_exp[at])
            at++;
        fail_msg("get %s: value of %llu bytes differs from byte %llu", k, (unsigned long long)vlen,
                 (unsigned long long)at);
    }
    free(val);
    /* ranges at odd offsets, across chunk and page boundaries */
    eng_cursor *c = NULL;
    OK(eng_cursor_open(v, tb, &c));
    OK(eng_cursor_seek(c, k, 8));
    const void *ck;
    uint32_t ckl;
    uint64_t cvl;
    OK(eng_cursor_key(c, &ck, &ckl));
    assert_true(ckl == 8 && !memcmp(ck, k, 8));
    OK(eng_cursor_vlen(c, &cvl));
    assert_true(cvl == vlen);
    uint64_t offs[] = {1,
                       7,
                       4095,
                       4097,
                       ENG_PAGE_BODY - 3,
                       ENG_PAGE_SIZE - 1,
                       ENG_PAGE_SIZE + 1,
                       ENG_MAX_INLINE - 1,
                       vlen / 2 + 1,
                       vlen / 3 * 2 + 5,
                       vlen - 1,
                       vlen};
    uint64_t lens[] = {1, 3, ENG_PAGE_SIZE + 17, 2 * ENG_PAGE_SIZE + 3, 100001};
    for (size_t a = 0; a < sizeof offs / sizeof offs[0]; a++)
        for (size_t b = 0; b < sizeof lens / sizeof lens[0]; b++) {
            uint64_t off = offs[a], len = lens[b];
            if (off > vlen) continue;
            if (off + len > vlen) len = vlen - off;
            memset(big_got, 0xEE, len + 1);
            rc = eng_cursor_read(c, off, big_got, len);
            if (rc)
                fail_msg("read %s [%llu, +%llu) of %llu bytes: %s", k, (unsigned long long)off,
                         (unsigned long long)len, (unsigned long long)vlen, errs(rc));
            if (memcmp(big_got, big_exp + off, len))
                fail_msg("read %s [%llu, +%llu) of %llu bytes: wrong bytes", k,
                         (unsigned long long)off, (unsigned long long)len,
                         (unsigned long long)vlen);
            if (big_got[len] != 0xEE)
                fail_msg("read %s [%llu, +%llu): wrote past the buffer", k, (unsigned long long)off,
                         (unsigned long long)len);
        }
    /* past the end is refused, never garbage */
    if (eng_cursor_read(c, vlen, big_got, 1) == 0)
        fail_msg("read %s [%llu, +1) past a value of %llu bytes succeeded", k,
                 (unsigned long long)vlen, (unsigned long long)vlen);
    if (vlen && eng_cursor_read(c, vlen - 1, big_got, 2) == 0)
        fail_msg("read %s [%llu, +2) of a value of %llu bytes succeeded", k,
                 (unsigned long long)vlen - 1, (unsigned long long)vlen);
    eng_cursor_close(c);
}

/* The value length at which a record with an 8-byte key becomes a long value, found by
 * watching lv_count while putting every length around the limit. */
static uint64_t find_inline_limit(eng_db *db, eng_tbl tb)
{
    eng_txn *t = NULL;
    OK(eng_txn_begin(db, &t));
    eng_space before, after;
    uint64_t first_long = 0;
    for (uint64_t vlen = ENG_MAX_INLINE - 8 - 96; vlen <= ENG_MAX_INLINE - 8 + 1; vlen++) {
        char k[16];
        snprintf(k, sizeof k, "in:%05u", (unsigned)vlen % 100000);
        OK(eng_space_info(eng_txn_view(t), &before));
        gen_value(vlen, vlen, big_exp);
        OK(eng_put(t, tb, k, 8, big_exp, vlen, 0));
        OK(eng_space_info(eng_txn_view(t), &after));
        int is_long = after.lv_count != before.lv_count;
        if (is_long && !first_long) first_long = vlen;
        if (!is_long && first_long)
            fail_msg("a %llu-byte value is inline but a %llu-byte one was long",
                     (unsigned long long)vlen, (unsigned long long)first_long);
    }
    eng_txn_rollback(t);
    if (!first_long)
        fail_msg("no value up to %u bytes with an 8-byte key became a long value, although the "
                 "cell is over ENG_MAX_INLINE",
                 ENG_MAX_INLINE - 8 + 1);
    return first_long;
}

static void long_values_at_boundary_sizes_survive_and_free_their_pages(void **state)
{
    (void)state;
    big_value = (uint64_t)env_long("OMBRA_TABLE_BIG_MB", 64) << 20;
    big_exp = malloc(big_value + 1);
    big_got = malloc(big_value + 1);
    assert_true(big_exp && big_got);
    crashvfs *c = new_disk(3);
    eng_opts o = opts_on(c);
    eng_db *db = new_db(&o);
    eng_tbl tb = create_table(db, "values");

    uint64_t lim = find_inline_limit(db, tb); /* cell = 8 + lim + overhead = ENG_MAX_INLINE+1 */
    uint32_t overhead = (uint32_t)(ENG_MAX_INLINE + 1 - 8 - lim);
    print_message("long values: with an 8-byte key a value of %llu bytes is the first long one "
                  "(cell overhead %u bytes)\n",
                  (unsigned long long)lim, overhead);
    uint64_t sizes[] = {0,
                        1,
                        lim - 2, /* cell ENG_MAX_INLINE - 1 */
                        lim - 1, /* cell ENG_MAX_INLINE */
                        lim,     /* cell ENG_MAX_INLINE + 1: the first long value */
                        lim + 1,
                        ENG_PAGE_BODY - 1,
                        ENG_PAGE_BODY,
                        ENG_PAGE_BODY + 1,
                        ENG_PAGE_SIZE - 1,
                        ENG_PAGE_SIZE,
                        ENG_PAGE_SIZE + 1,
                        2 * ENG_PAGE_SIZE + 1,
                        big_value};
    const uint32_t nsizes = sizeof sizes / sizeof sizes[0];

    /* Round 0: write every size in one transaction; read back whole and in ranges. */
    eng_space s0 = space_of(db);
    eng_txn *t = NULL;
    OK(eng_txn_begin(db, &t));
    for (uint32_t i = 0; i < nsizes; i++) {
        char k[16];
        lv_key(k, i);
        gen_value(lv_seed(i, 0), sizes[i], big_exp);
        OK(eng_put(t, tb, k, 8, big_exp, sizes[i], ENG_PUT_NOOVERWRITE));
        assert_long_value(eng_txn_view(t), tb, i, sizes[i], lv_seed(i, 0)); /* own view */
    }
    OK(eng_txn_commit(t, 0));
    eng_space s1 = space_of(db);
    print_message("long values: %u sizes up to %llu MiB took %u pages (%llu long values)\n", nsizes,
                  (unsigned long long)(big_value >> 20), s1.pages - s0.pages,
                  (unsigned long long)(s1.lv_count - s0.lv_count));
    /* a cell of ENG_MAX_INLINE is inline, one byte more is long */
    assert_int_equal(s1.lv_count - s0.lv_count, nsizes - 4);
    eng_view *v = NULL;
    OK(eng_view_begin(db, &v));
    for (uint32_t i = 0; i < nsizes; i++)
        assert_long_value(v, tb, i, sizes[i], lv_seed(i, 0));
    eng_view_end(v);
    assert_int_equal(check_table(db, tb), nsizes);

    /* Survives a clean shutdown, then a power loss (after the commit was acknowledged). */
    db = close_and_reopen(&o, db);
    OK(eng_view_begin(db, &v));
    for (uint32_t i = 0; i < nsizes; i++)
        assert_long_value(v, tb, i, sizes[i], lv_seed(i, 0));
    eng_view_end(v);

    /* Round 1: every value replaced by the next size (shorter and longer ones), then a power
     * loss: recovery must rebuild them. */
    OK(eng_txn_begin(db, &t));
    for (uint32_t i = 0; i < nsizes; i++) {
        char k[16];
        lv_key(k, i);
        uint64_t len = sizes[(i + 1) % nsizes];
        gen_value(lv_seed(i, 1), len, big_exp);
        OK(eng_put(t, tb, k, 8, big_exp, len, 0));
    }
    OK(eng_txn_commit(t, 0));
    db = crash_and_recover(c, &o, db);
    OK(eng_view_begin(db, &v));
    for (uint32_t i = 0; i < nsizes; i++)
        assert_long_value(v, tb, i, sizes[(i + 1) % nsizes], lv_seed(i, 1));
    eng_view_end(v);
    assert_int_equal(check_table(db, tb), nsizes);

    /* Round 2: back to the first sizes; then delete everything. */
    OK(eng_txn_begin(db, &t));
    for (uint32_t i = 0; i < nsizes; i++) {
        char k[16];
        lv_key(k, i);
        gen_value(lv_seed(i, 2), sizes[i], big_exp);
        OK(eng_put(t, tb, k, 8, big_exp, sizes[i], 0));
    }
    OK(eng_txn_commit(t, 0));
    OK(eng_view_begin(db, &v));
    for (uint32_t i = 0; i < nsizes; i++)
        assert_long_value(v, tb, i, sizes[i], lv_seed(i, 2));
    eng_view_end(v);
    eng_space s2 = space_of(db);
    OK(eng_txn_begin(db, &t));
    for (uint32_t i = 0; i < nsizes; i++) {
        char k[16];
        lv_key(k, i);
        OK(eng_del(t, tb, k, 8));
        EXPECT(eng_del(t, tb, k, 8), OM_E_RecordNotFound);
    }
    OK(eng_txn_commit(t, 0));
    db = crash_and_recover(c, &o, db);
    OK(eng_view_begin(db, &v));
    for (uint32_t i = 0; i < nsizes; i++) {
        char k[16];
        void *val = NULL;
        uint64_t vl;
        lv_key(k, i);
        EXPECT(eng_get(v, tb, k, 8, &val, &vl), OM_E_RecordNotFound);
    }
    eng_view_end(v);
    assert_int_equal(check_table(db, tb), 0);
    eng_space s3 = space_of(db);
    print_message("long values: deleting them freed %u pages (%u pages, %u free)\n",
                  s3.free_pages - s2.free_pages, s3.pages, s3.free_pages);
    /* at least the largest value's pages are on the free list */
    assert_true(s3.free_pages >= s2.free_pages + (uint32_t)(big_value / ENG_PAGE_SIZE) - 48);

    /* Round 3: the same sizes again reuse the freed pages: the file does not grow. */
    OK(eng_txn_begin(db, &t));
    for (uint32_t i = 0; i < nsizes; i++) {
        char k[16];
        lv_key(k, i);
        gen_value(lv_seed(i, 3), sizes[i], big_exp);
        OK(eng_put(t, tb, k, 8, big_exp, sizes[i], 0));
    }
    OK(eng_txn_commit(t, 0));
    eng_space s4 = space_of(db);
    print_message("long values: written again: %u pages (was %u), %u free\n", s4.pages, s3.pages,
                  s4.free_pages);
    assert_true(s4.pages <= s3.pages);
    db = close_and_reopen(&o, db);
    OK(eng_view_begin(db, &v));
    for (uint32_t i = 0; i < nsizes; i++)
        assert_long_value(v, tb, i, sizes[i], lv_seed(i, 3));
    eng_view_end(v);
    assert_int_equal(check_table(db, tb), nsizes);
    OK(eng_db_close(db));
    crashvfs_free(c);
    free(big_exp);
    free(big_got);
    big_exp = big_got = NULL;
}

/* ------------------------------------------------------------------------------------------
 * 4. Delete-heavy workload: the file stops growing
 * ---------------------------------------------------------------------------------------- */

static void delete_heavy_workload_reuses_free_pages(void **state)
{
    (void)state;
    crashvfs *c = new_disk(4);
    static work w;
    work_setup(&w, c, 4);
    w.db = new_db(&w.o);
    int ti = 1; /* "mixed" keys */
    w.m.t[ti].tb = create_table(w.db, w.m.t[ti].name);
    w.m.t[ti].exists = 1;
    mtab *mt = &w.m.t[ti];
    const size_t live = 4000;
    const int rounds = (int)env_long("OMBRA_TABLE_DELETE_ROUNDS", 60);
    uint32_t peak_first = 0, pages_max_late = 0, free_seen_max = 0;
    uint32_t history[512];
    uint64_t lv_total = 0;
    for (int round = 0; round < rounds; round++) {
        eng_txn *t = NULL;
        OK(eng_txn_begin(w.db, &t));
        /* delete a third of the records, at random places; insert as many new ones */
        size_t ndel = round == 0 ? 0 : mt->n / 3;
        for (size_t d = 0; d < ndel; d++) {
            const ment *e = existing(&w, mt);
            memcpy(w.kbuf, e->key, e->klen);
            uint32_t kl = e->klen;
            OK(eng_del(t, mt->tb, w.kbuf, kl));
            mdel(&w.m, ti, w.kbuf, kl);
        }
        while (mt->n < live) {
            uint32_t kl;
            if (!new_key(&w, mt, &kl)) continue;
            uint32_t vlen = val_len(&w.s);
            uint64_t vseed = ++w.vseq;
            gen_value(vseed, vlen, vexp);
            OK(eng_put(t, mt->tb, w.kbuf, kl, vexp, vlen, ENG_PUT_NOOVERWRITE));
            mput(&w.m, ti, w.kbuf, kl, vlen, vseed, om_xxh3(vexp, vlen, 0));
            lv_total += vlen + kl > ENG_MAX_INLINE;
        }
        model_commit(&w.m);
        OK(eng_txn_commit(t, round % 5 ? ENG_COMMIT_LAZY : 0));
        eng_space sp = space_of(w.db);
        history[round % 512] = sp.pages;
        if (round < 3 && sp.pages > peak_first) peak_first = sp.pages;
        if (round >= 3 && sp.pages > pages_max_late) pages_max_late = sp.pages;
        if (sp.free_pages > free_seen_max) free_seen_max = sp.free_pages;
        if (round % 10 == 9) {
            cmpstat cs = {0};
            compare_all(&w, 1, &cs);
        }
        if (round == rounds / 2) {
            w.db = close_and_reopen(&w.o, w.db);
        }
    }
    cmpstat cs = {0};
    compare_all(&w, 1, &cs);
    eng_space sp = space_of(w.db);
    print_message("delete-heavy: %d rounds of deleting a third of %zu records at random and "
                  "refilling (%llu long values written): pages after the first rounds %u, at most "
                  "%u later, %u at the end (%u free; up to %u free at once)\n",
                  rounds, live, (unsigned long long)lv_total, peak_first, pages_max_late, sp.pages,
                  sp.free_pages, free_seen_max);
    print_message("  pages per round:");
    for (int r = 0; r < rounds && r<512; r += rounds / 12> 0 ? rounds / 12 : 1)
        print_message(" %u", history[r]);
    print_message("\n");
    assert_true(pages_max_late <= 2 * peak_first);
    /* and growth has stopped: the last third of the rounds add (almost) nothing */
    uint32_t at_two_thirds = history[(rounds * 2 / 3) % 512];
    assert_true(sp.pages <= at_two_thirds + at_two_thirds / 20 + 2);
    assert_true(free_seen_max > 0);
    OK(eng_db_close(w.db));
    model_free(&w.m);
    crashvfs_free(c);
}

/* ------------------------------------------------------------------------------------------
 * 5. Table lifecycle
 * ---------------------------------------------------------------------------------------- */

static void fill(eng_txn *t, eng_tbl tb, uint32_t n, uint32_t vlen, uint32_t tag)
{
    for (uint32_t i = 0; i < n; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "rec-%08u", i);
        gen_value(tag * 1000003u + i, vlen, vexp);
        OK(eng_put(t, tb, k, (uint32_t)kl, vexp, vlen, 0));
    }
}

static void table_lifecycle_create_open_drop_and_rollback(void **state)
{
    (void)state;
    crashvfs *c = new_disk(5);
    eng_opts o = opts_on(c);
    eng_db *db = new_db(&o);
    /* formatting twice would destroy the catalog: refused */
    assert_int_not_equal(eng_catalog_create(db), 0);
    assert_int_equal(eng_catalog_exists(db), 1);

    eng_view *v = NULL;
    eng_tbl tb, tb2, tb3;
    OK(eng_view_begin(db, &v));
    EXPECT(eng_table_open(v, "nope", &tb), OM_E_ObjectNotFound);
    eng_view_end(v);

    /* create; a duplicate in the same transaction and in a later one is refused */
    eng_txn *t = NULL;
    OK(eng_txn_begin(db, &t));
    OK(eng_table_create(t, "alpha", &tb));
    EXPECT(eng_table_create(t, "alpha", &tb2), OM_E_KeyDuplicate);
    OK(eng_table_open(eng_txn_view(t), "alpha", &tb2)); /* visible in its own view */
    assert_true(tb2.root == tb.root && tb2.objid == tb.objid);
    OK(eng_view_begin(db, &v)); /* and not in a committed one */
    EXPECT(eng_table_open(v, "alpha", &tb3), OM_E_ObjectNotFound);
    eng_view_end(v);
    fill(t, tb, 500, 300, 1);
    OK(eng_txn_commit(t, 0));
    OK(eng_txn_begin(db, &t));
    EXPECT(eng_table_create(t, "alpha", &tb2), OM_E_KeyDuplicate);
    OK(eng_table_create(t, "alphabet", &tb2)); /* a name with another as its prefix */
    OK(eng_table_create(t, "alph", &tb3));
    assert_true(tb.objid != tb2.objid && tb2.objid != tb3.objid && tb.objid != tb3.objid);
    assert_true(tb.objid && tb2.objid && tb3.objid);
    fill(t, tb2, 10, 10, 2);
    OK(eng_txn_commit(t, 0));
    assert_int_equal(check_table(db, tb), 500);
    assert_int_equal(check_table(db, tb2), 10);
    assert_int_equal(check_table(db, tb3), 0);

    /* a table created in a transaction that rolls back never existed */
    OK(eng_txn_begin(db, &t));
    eng_tbl gone;
    OK(eng_table_create(t, "ghost", &gone));
    fill(t, gone, 300, 500, 3);
    eng_txn_rollback(t);
    OK(eng_view_begin(db, &v));
    EXPECT(eng_table_open(v, "ghost", &gone), OM_E_ObjectNotFound);
    eng_view_end(v);
    db = close_and_reopen(&o, db);
    OK(eng_view_begin(db, &v));
    EXPECT(eng_table_open(v, "ghost", &gone), OM_E_ObjectNotFound);
    OK(eng_table_open(v, "alpha", &tb2));
    assert_true(tb2.root == tb.root && tb2.objid == tb.objid); /* handles stay valid */
    eng_view_end(v);

    /* a drop that rolls back leaves the table and its records */
    OK(eng_txn_begin(db, &t));
    OK(eng_table_drop(t, "alpha"));
    EXPECT(eng_table_open(eng_txn_view(t), "alpha", &tb2), OM_E_ObjectNotFound);
    EXPECT(eng_table_drop(t, "alpha"), OM_E_ObjectNotFound);
    eng_txn_rollback(t);
    assert_int_equal(check_table(db, tb), 500);

    /* drop frees the table's pages (tree and long values), and they are reused */
    OK(eng_txn_begin(db, &t));
    fill(t, tb, 40, 3 * ENG_MAX_INLINE, 4); /* long values too */
    OK(eng_txn_commit(t, 0));
    uint32_t tpages = pages_of(db, tb.objid);
    eng_space before = space_of(db);
    OK(eng_txn_begin(db, &t));
    OK(eng_table_drop(t, "alpha"));
    EXPECT(eng_table_drop(t, "never-was"), OM_E_ObjectNotFound);
    OK(eng_txn_commit(t, 0));
    eng_space after = space_of(db);
    print_message("lifecycle: dropping a table of %u tree pages (500 records, 40 long values) "
                  "freed %u pages\n",
                  tpages, after.free_pages - before.free_pages);
    /* the tree's pages, and the long values' (40 x 30000 bytes) */
    assert_true(after.free_pages >= before.free_pages + tpages + 40 * 30000 / (2 * ENG_PAGE_BODY));
    assert_int_equal(pages_of(db, tb.objid), 0);
    OK(eng_view_begin(db, &v));
    EXPECT(eng_table_open(v, "alpha", &tb2), OM_E_ObjectNotFound);
    eng_view_end(v);
    /* the same name again is a new, empty table */
    OK(eng_txn_begin(db, &t));
    OK(eng_table_create(t, "alpha", &tb2));
    assert_int_not_equal(tb2.objid, tb.objid);
    fill(t, tb2, 500, 300, 5);
    fill(t, tb2, 40, 3 * ENG_MAX_INLINE, 6);
    OK(eng_txn_commit(t, 0));
    eng_space reused = space_of(db);
    print_message("lifecycle: refilling used %u free pages; the file grew by %u pages\n",
                  after.free_pages - reused.free_pages, reused.pages - after.pages);
    assert_true(reused.pages <= after.pages);
    assert_int_equal(check_table(db, tb2), 500);

    /* names up to ENG_MAX_TABLE_NAME bytes; longer or empty ones are refused */
    char name[ENG_MAX_TABLE_NAME + 2];
    memset(name, 'n', sizeof name);
    name[ENG_MAX_TABLE_NAME] = 0;
    OK(eng_txn_begin(db, &t));
    OK(eng_table_create(t, name, &tb3));
    fill(t, tb3, 3, 3, 7);
    name[ENG_MAX_TABLE_NAME] = 'n';
    name[ENG_MAX_TABLE_NAME + 1] = 0;
    int rc = eng_table_create(t, name, &tb3);
    if (rc != OM_E_InvalidParameter && rc != OM_E_InvalidName)
        fail_msg("a table name of %u bytes: %s", ENG_MAX_TABLE_NAME + 1, errs(rc));
    rc = eng_table_create(t, "", &tb3);
    if (rc != OM_E_InvalidParameter && rc != OM_E_InvalidName)
        fail_msg("an empty table name: %s", errs(rc));
    OK(eng_txn_commit(t, 0));
    db = crash_and_recover(c, &o, db);
    name[ENG_MAX_TABLE_NAME] = 0;
    OK(eng_view_begin(db, &v));
    OK(eng_table_open(v, name, &tb3));
    uint64_t n = 0;
    OK(eng_table_check(v, tb3, &n));
    assert_int_equal(n, 3);
    name[ENG_MAX_TABLE_NAME - 1] = 0; /* a prefix of it is another name */
    EXPECT(eng_table_open(v, name, &tb3), OM_E_ObjectNotFound);
    OK(eng_table_open(v, "alphabet", &tb3));
    OK(eng_table_check(v, tb3, &n));
    assert_int_equal(n, 10);
    eng_view_end(v);
    OK(eng_db_close(db));
    crashvfs_free(c);
}

/* ------------------------------------------------------------------------------------------
 * 6. Bad input: arguments and damaged pages
 * ---------------------------------------------------------------------------------------- */

static void expect_invalid(int rc, const char *what, const char *word)
{
    if (rc != OM_E_InvalidParameter) fail_msg("%s: %s, expected InvalidParameter", what, errs(rc));
    if (!strstr(om_err_detail(), word))
        fail_msg("%s: the detail '%s' does not mention '%s'", what, om_err_detail(), word);
}

static void bad_arguments_are_refused_with_a_clear_detail(void **state)
{
    (void)state;
    crashvfs *c = new_disk(6);
    eng_opts o = opts_on(c);
    eng_db *db = new_db(&o);
    eng_tbl tb = create_table(db, "t");
    static uint8_t key[ENG_MAX_KEY + 1];
    memset(key, 'k', sizeof key);
    uint8_t val[16] = {0};
    eng_txn *t = NULL;
    OK(eng_txn_begin(db, &t));
    OK(eng_put(t, tb, "keep", 4, "v", 1, 0));
    OK(eng_put(t, tb, key, ENG_MAX_KEY, val, 1, 0)); /* the longest key is fine */
    expect_invalid(eng_put(t, tb, key, 0, val, 1, 0), "put with an empty key", "key");
    expect_invalid(eng_put(t, tb, key, ENG_MAX_KEY + 1, val, 1, 0), "put with a 1025-byte key",
                   "1025");
    expect_invalid(eng_put(t, tb, "k", 1, val, ENG_MAX_VALUE + 1, 0),
                   "put with a value over ENG_MAX_VALUE", "value");
    expect_invalid(eng_put(t, tb, "k", 1, val, UINT64_MAX, 0), "put with a 2^64-1-byte value",
                   "value");
    expect_invalid(eng_del(t, tb, key, 0), "del with an empty key", "key");
    expect_invalid(eng_del(t, tb, key, ENG_MAX_KEY + 1), "del with a 1025-byte key", "key");
    void *got = NULL;
    uint64_t gl;
    expect_invalid(eng_get(eng_txn_view(t), tb, key, 0, &got, &gl), "get with an empty key", "key");
    expect_invalid(eng_get(eng_txn_view(t), tb, key, ENG_MAX_KEY + 1, &got, &gl),
                   "get with a 1025-byte key", "key");
    eng_cursor *cur = NULL;
    OK(eng_cursor_open(eng_txn_view(t), tb, &cur));
    expect_invalid(eng_cursor_seek(cur, key, 0), "seek with an empty key", "key");
    expect_invalid(eng_cursor_seek(cur, key, ENG_MAX_KEY + 1), "seek with a 1025-byte key", "key");
    eng_cursor_close(cur);
    eng_tbl x;
    expect_invalid(eng_table_create(t, NULL, &x), "create with a NULL name", "name");
    expect_invalid(eng_table_open(eng_txn_view(t), NULL, &x), "open with a NULL name", "name");
    expect_invalid(eng_table_drop(t, NULL), "drop with a NULL name", "name");
    /* refused calls change nothing and leave the transaction usable */
    OK(eng_put(t, tb, "after", 5, "w", 1, 0));
    OK(eng_txn_commit(t, 0));
    assert_int_equal(check_table(db, tb), 3);
    eng_view *v = NULL;
    OK(eng_view_begin(db, &v));
    EXPECT(eng_get(v, tb, "k", 1, &got, &gl), OM_E_RecordNotFound);
    OK(eng_get(v, tb, "after", 5, &got, &gl));
    assert_true(gl == 1 && !memcmp(got, "w", 1));
    free(got);
    eng_view_end(v);
    OK(eng_db_close(db));
    crashvfs_free(c);
}

/* A two-level table: the pages it owns other than the root are leaves. */
static eng_tbl two_level_table(eng_db *db, uint32_t *leaves, uint32_t *nleaves)
{
    eng_tbl tb = create_table(db, "victim");
    eng_txn *t = NULL;
    OK(eng_txn_begin(db, &t));
    fill(t, tb, 200, 1000, 9);
    OK(eng_txn_commit(t, 0));
    eng_info info;
    OK(eng_db_info(db, &info));
    *nleaves = 0;
    for (uint32_t p = 1; p <= info.pages; p++) {
        uint32_t ob;
        OK(eng_page_objid(db, p, &ob));
        if (ob == tb.objid && p != tb.root) leaves[(*nleaves)++] = p;
    }
    assert_true(*nleaves >= 3);
    return tb;
}

/* The detail of the first damage reported (later calls overwrite the thread's detail). */
static char damage_detail[1024];

static int is_damage(int rc)
{
    return rc == OM_E_DatabaseCorrupted || rc == OM_E_ReadVerifyFailure;
}

/* Keeps the first damage error (with its detail), else the first other error. */
static void note(int *worst, int rc)
{
    if (!rc || is_damage(*worst)) return;
    if (is_damage(rc)) snprintf(damage_detail, sizeof damage_detail, "%s", om_err_detail());
    if (is_damage(rc) || !*worst) *worst = rc;
}

/* Scans, gets every record, and checks the tree. Returns the first damage reported, else
 * the first other error (a get that misses), else 0. */
static int read_everything(eng_view *v, eng_tbl tb)
{
    eng_cursor *c = NULL;
    int worst = 0, rc = eng_cursor_open(v, tb, &c);
    damage_detail[0] = 0;
    note(&worst, rc);
    if (rc) return worst;
    uint64_t n = 0;
    for (rc = eng_cursor_first(c); !rc && n < 100000; rc = eng_cursor_next(c), n++) {
        uint64_t vl;
        const void *k;
        uint32_t kl;
        rc = eng_cursor_key(c, &k, &kl);
        if (!rc) rc = eng_cursor_vlen(c, &vl);
        if (!rc && vl <= MAX_TEST_VALUE) rc = eng_cursor_read(c, 0, vbuf, vl);
        if (rc) break;
    }
    eng_cursor_close(c);
    if (rc != OM_E_RecordNotFound) note(&worst, rc);
    for (uint32_t i = 0; i < 200; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "rec-%08u", i);
        void *val = NULL;
        uint64_t vl;
        rc = eng_get(v, tb, k, (uint32_t)kl, &val, &vl);
        free(val);
        note(&worst, rc);
    }
    note(&worst, eng_table_check(v, tb, &n));
    return worst;
}

static uint32_t poke_pgno;
static uint8_t poke_save[ENG_PAGE_SIZE];

static void poke_page(om_vfs *vfs, const char *edb, uint32_t pgno, void (*edit)(uint8_t *page))
{
    uint8_t *page = malloc(ENG_PAGE_SIZE);
    om_file *f = NULL;
    OK(om_open(vfs, edb, 0, &f));
    OK(om_pread_full(f, page, ENG_PAGE_SIZE, eng_page_offset(pgno)));
    poke_pgno = pgno;
    edit(page);
    OK(om_pwrite(f, page, ENG_PAGE_SIZE, eng_page_offset(pgno)));
    OK(om_sync(f));
    om_close(f);
    free(page);
}

static void garble_bytes(uint8_t *page)
{
    memcpy(poke_save, page, ENG_PAGE_SIZE);
    memset(page + 3000, 0x5A, 2000);
}

static void restore_page(uint8_t *page)
{
    memcpy(page, poke_save, ENG_PAGE_SIZE);
}

/* Garbage in the body under a header and checksum that are right: only the tree can tell. */
static void garbage_sealed(uint8_t *page)
{
    memcpy(poke_save, page, ENG_PAGE_SIZE);
    uint64_t s = 99;
    for (uint32_t i = ENG_PAGE_HDR; i < ENG_PAGE_SIZE; i++)
        page[i] = (uint8_t)rnd(&s);
    eng_page_seal(page, poke_pgno);
}

static void expect_named_failure(int rc, uint32_t pgno, const char *what)
{
    char want[32];
    snprintf(want, sizeof want, "page %u", pgno);
    if (rc != OM_E_DatabaseCorrupted && rc != OM_E_ReadVerifyFailure)
        fail_msg("%s: %s, expected DatabaseCorrupted or ReadVerifyFailure", what, errs(rc));
    const char *detail = damage_detail[0] ? damage_detail : om_err_detail();
    if (!strstr(detail, want)) fail_msg("%s: the detail '%s' does not name %s", what, detail, want);
}

static void damaged_pages_are_reported_naming_the_page_never_crash(void **state)
{
    (void)state;
    crashvfs *c = new_disk(7);
    eng_opts o = opts_on(c);
    eng_db *db = new_db(&o);
    uint32_t leaves[64], nleaves;
    eng_tbl tb = two_level_table(db, leaves, &nleaves);
    uint32_t leaf = leaves[nleaves / 2];
    OK(eng_db_close(db));

    /* A leaf torn on disk (bad checksum): ReadVerifyFailure naming it, from every path. */
    poke_page(o.vfs, o.edb_path, leaf, garble_bytes);
    OK(eng_db_open(&o, &db));
    eng_view *v = NULL;
    OK(eng_view_begin(db, &v));
    expect_named_failure(read_everything(v, tb), leaf, "reading a table with a torn leaf");
    eng_view_end(v);
    eng_txn *t = NULL;
    OK(eng_txn_begin(db, &t));
    int rc = 0;
    for (uint32_t i = 0; i < 200 && !rc; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "rec-%08u", i);
        rc = eng_put(t, tb, k, (uint32_t)kl, "x", 1, 0);
    }
    damage_detail[0] = 0;
    expect_named_failure(rc, leaf, "writing to a torn leaf");
    eng_txn_rollback(t);
    OK(eng_db_close(db));
    poke_page(o.vfs, o.edb_path, leaf, restore_page);

    /* A leaf whose checksum is right but whose body is garbage: DatabaseCorrupted naming it. */
    poke_page(o.vfs, o.edb_path, leaf, garbage_sealed);
    OK(eng_db_open(&o, &db));
    OK(eng_view_begin(db, &v));
    rc = read_everything(v, tb);
    eng_view_end(v);
    expect_named_failure(rc, leaf, "reading a table whose leaf is sealed garbage");
    if (rc != OM_E_DatabaseCorrupted) fail_msg("sealed garbage: %s", errs(rc));
    OK(eng_db_close(db));
    poke_page(o.vfs, o.edb_path, leaf, restore_page);

    /* Pages whose checksum is right but whose content is not a tree page (written through a
     * transaction, so the engine seals them): DatabaseCorrupted naming the page. The damage is
     * read in the transaction's own view, then rolled back. */
    OK(eng_db_open(&o, &db));
    uint8_t *body = malloc(ENG_PAGE_BODY), *orig = malloc(ENG_PAGE_BODY);
    assert_true(body && orig);
    uint32_t victims[3] = {leaf, tb.root, 2 /* the catalog's root */};
    const char *vname[3] = {"a leaf", "the root", "the catalog root"};
    for (int vi = 0; vi < 3; vi++) {
        uint32_t pg = victims[vi];
        for (int pattern = 0; pattern < 3; pattern++) {
            uint64_t s = (uint64_t)pattern * 77 + pg;
            for (uint32_t i = 0; i < ENG_PAGE_BODY; i++)
                body[i] = pattern == 0 ? 0 : pattern == 1 ? 0xFF : (uint8_t)rnd(&s);
            OK(eng_txn_begin(db, &t));
            OK(eng_page_write(t, pg, 0, body, ENG_PAGE_BODY));
            eng_tbl tb2 = tb;
            damage_detail[0] = 0;
            rc = vi == 2 ? eng_table_open(eng_txn_view(t), "victim", &tb2) : 0;
            if (rc)
                snprintf(damage_detail, sizeof damage_detail, "%s", om_err_detail());
            else
                rc = read_everything(eng_txn_view(t), tb2);
            char what[96];
            snprintf(what, sizeof what, "%s (page %u) overwritten with pattern %d", vname[vi], pg,
                     pattern);
            expect_named_failure(rc, pg, what);
            if (rc == OM_E_ReadVerifyFailure) fail_msg("%s: reported as a checksum failure", what);
            eng_txn_rollback(t);
        }
    }
    /* Fuzz: a few bits of a leaf or the root flipped at random. Reads may succeed (a value's
     * byte is not checkable) but never crash, and any failure is DatabaseCorrupted naming a
     * page; writes over the damage too. Anomalies are collected and reported together. */
    long corrupted = 0, unnoticed = 0, anomalies = 0;
    const long rounds = env_long("OMBRA_TABLE_FUZZ_ROUNDS", 400);
    for (long round = 0; round < rounds; round++) {
        uint64_t s = 1000 + (uint64_t)round;
        uint32_t pg = round % 3 == 0 ? tb.root : leaves[below(&s, nleaves)];
        OK(eng_page_read(db, pg, orig));
        memcpy(body, orig, ENG_PAGE_BODY);
        int nflip = 1 + (int)below(&s, 8);
        char flips[256];
        size_t fl = 0;
        for (int f = 0; f < nflip; f++) {
            /* mostly near the start of the body, where headers and offsets live */
            uint32_t at =
                below(&s, 3) ? (uint32_t)below(&s, 256) : (uint32_t)below(&s, ENG_PAGE_BODY);
            unsigned bit = (unsigned)below(&s, 8);
            body[at] ^= (uint8_t)(1u << bit);
            fl += (size_t)snprintf(flips + fl, sizeof flips - fl, " byte %u bit %u", at, bit);
        }
        OK(eng_txn_begin(db, &t));
        OK(eng_page_write(t, pg, 0, body, ENG_PAGE_BODY));
        rc = read_everything(eng_txn_view(t), tb);
        const char *bad = NULL;
        if (rc == OM_E_DatabaseCorrupted) {
            if (!strstr(damage_detail, "page ")) bad = "the detail names no page";
            corrupted++;
        } else if (rc == 0 || rc == OM_E_RecordNotFound) {
            unnoticed++; /* a changed key or value byte: not detectable */
        } else {
            bad = "reading";
        }
        if (bad) {
            anomalies++;
            print_message("fuzz round %ld, page %u (%s), flipped%s: %s: %s\n", round, pg,
                          pg == tb.root ? "root" : "leaf", flips, bad, errs(rc));
        }
        /* writes over the damage fail cleanly too */
        for (uint32_t i = 0; i < 50 && !bad; i++) {
            char k[32];
            int kl = snprintf(k, sizeof k, "rec-%08u", (uint32_t)below(&s, 400));
            uint64_t vl = below(&s, 3000);
            int put = (int)below(&s, 2);
            rc = put ? eng_put(t, tb, k, (uint32_t)kl, vexp, vl, 0)
                     : eng_del(t, tb, k, (uint32_t)kl);
            if (rc && rc != OM_E_DatabaseCorrupted && rc != OM_E_RecordNotFound) {
                anomalies++;
                print_message("fuzz round %ld, page %u (%s), flipped%s: write %u (%s %s): %s\n",
                              round, pg, pg == tb.root ? "root" : "leaf", flips, i,
                              put ? "put" : "del", k, errs(rc));
                break;
            }
        }
        eng_txn_rollback(t);
    }
    print_message("damaged pages: 11 damaged pages reported by number; fuzz: %ld of %ld "
                  "damaged pages found corrupt, %ld read without error, %ld anomalies\n",
                  corrupted, rounds, unnoticed, anomalies);
    assert_int_equal(anomalies, 0);
    /* after all that, the table is intact */
    OK(eng_view_begin(db, &v));
    OK(read_everything(v, tb));
    eng_view_end(v);
    free(body);
    free(orig);
    OK(eng_db_close(db));
    crashvfs_free(c);
}

int main(void)
{
    /* The failures these tests cause on purpose would fill the output. */
    if (!getenv("OMBRA_DEBUG")) om_log_min_level(OM_ERROR + 1);
    init_prefixes();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_arguments_are_refused_with_a_clear_detail),
        cmocka_unit_test(table_lifecycle_create_open_drop_and_rollback),
        cmocka_unit_test(long_values_at_boundary_sizes_survive_and_free_their_pages),
        cmocka_unit_test(damaged_pages_are_reported_naming_the_page_never_crash),
        cmocka_unit_test(delete_heavy_workload_reuses_free_pages),
        cmocka_unit_test(random_operations_match_a_sorted_model),
        cmocka_unit_test(crash_points_keep_exactly_a_committed_table_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
