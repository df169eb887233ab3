/* bench_mail: the mail schema (src/store/mail.h) against SQLite, side by side in one run.
 *
 * Both stores get the same messages (store_mail_load_message: a pure function of the seed, so both
 * sides and the checks agree on every byte), 8 KiB bodies spread over 1000 mailboxes:
 *  1. durable deliveries, one message per transaction, 4 writer threads (Ombra's commits share
 *     log fsyncs; SQLite's connections take turns on the WAL write lock, one fsync each);
 *  2. the same messages as one bulk load (Ombra: store_mail_load, lazy commits and one flush at the
 *     end; SQLite: transactions of --batch messages);
 *  3. random point reads of the bulk-loaded messages (mailbox name + id -> header and the
 *     whole body), 1 reader and then 4;
 *  4. the size of the database files after the load.
 * The SQLite schema holds the same rows as Ombra's tables (mailboxes with their counters,
 * folders, messages with a BLOB body), and a delivery does the same work on both sides: find
 * or create the mailbox and the folder, take the next id, insert, update the counter. After
 * the bulk load both stores are hashed in store_mail_digest's canonical order and must be equal.
 * bench/README.md says how to read the figures. Any failure prints one line and exits 1. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>
#include <xxhash.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/time.h"
#include "engine/engine.h"
#include "engine/table.h"
#include "store/mail.h"
#include "store/mail_digest.h"

#define BENCH_NAME "bench_mail"
#include "bench_util.h"

#define MB          1e6
#define MAX_THREADS 64u
#define PPD_SAMPLE  2000u /* deliveries replayed to count the pages a delivery changes */

typedef struct params {
    const char *dir, *json;
    uint64_t messages, reads, seed, batch;
    uint32_t mailboxes, size;
    unsigned threads, rounds;
    int keep;
} params;

static uint64_t g_dir_bytes;
static int add_size(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)path, (void)ftw;
    if (type == FTW_F) g_dir_bytes += (uint64_t)sb->st_size;
    return 0;
}
static uint64_t dir_size(const char *dir)
{
    g_dir_bytes = 0;
    if (nftw(dir, add_size, 16, FTW_PHYS) != 0) die("measuring %s: %s", dir, strerror(errno));
    return g_dir_bytes;
}

/* ---- the bulk load's layout: where message i lands ---- */

typedef struct plan {
    uint32_t *mbx; /* mailbox number of message i */
    uint64_t *id;  /* its id when the messages arrive in order (the bulk load) */
} plan;

static void plan_make(const params *p, plan *pl)
{
    mail_load_buf lb;
    mail_new m;
    uint64_t *count = xmalloc(p->mailboxes * sizeof *count);
    memset(count, 0, p->mailboxes * sizeof *count);
    pl->mbx = xmalloc(p->messages * sizeof *pl->mbx);
    pl->id = xmalloc(p->messages * sizeof *pl->id);
    for (uint64_t i = 0; i < p->messages; i++) {
        store_mail_load_message(p->seed, p->mailboxes, 0, i, &lb, NULL, &m);
        pl->mbx[i] = (uint32_t)strtoul(lb.mailbox + 4, NULL, 10);
        pl->id[i] = ++count[pl->mbx[i]];
    }
    free(count);
}

/* ---- Ombra ---- */

typedef struct ostore {
    char dir[4300], edb[4400], logs[4400];
    eng_opts o;
    eng_db *db;
    mail_store *st;
} ostore;

static void o_create(ostore *s, const char *parent, const char *name)
{
    snprintf(s->dir, sizeof s->dir, "%s/%s", parent, name);
    snprintf(s->edb, sizeof s->edb, "%s/mail.edb", s->dir);
    snprintf(s->logs, sizeof s->logs, "%s/logs", s->dir);
    if (mkdir(s->dir, 0750) != 0) die("creating %s: %s", s->dir, strerror(errno));
    s->o = (eng_opts){.edb_path = s->edb, .log_dir = s->logs};
    eng_ok(eng_db_create(&s->o, &s->db), "creating the Ombra database");
    eng_ok(store_mail_open(s->db, &s->st), "creating the mail schema");
}

static void o_close(ostore *s)
{
    store_mail_close(s->st);
    s->st = NULL;
    eng_ok(eng_db_close(s->db), "closing the Ombra database");
    s->db = NULL;
}

static void o_open(ostore *s, const eng_opts *o)
{
    eng_ok(eng_db_open(o, &s->db), "opening the Ombra database");
    eng_ok(store_mail_open(s->db, &s->st), "opening the mail schema");
}

/* ---- SQLite ---- */

static const char sq_schema[] =
    "CREATE TABLE mailboxes(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  next_msg INTEGER NOT NULL, next_folder INTEGER NOT NULL);"
    "CREATE TABLE folders(mailbox INTEGER NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,"
    "  PRIMARY KEY(mailbox, id), UNIQUE(mailbox, name));"
    "CREATE TABLE messages(mailbox INTEGER NOT NULL, id INTEGER NOT NULL,"
    "  folder INTEGER NOT NULL, received INTEGER NOT NULL, size INTEGER NOT NULL,"
    "  subject TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY(mailbox, id));";

typedef struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *begin, *commit, *sel_mbx, *ins_mbx, *sel_fld, *ins_fld, *ins_msg, *upd_mbx, *get;
    int wal_prev;
    uint64_t wal_frames; /* frames this connection appended (one writer only) */
} sq_conn;

static void sq_create(const char *path)
{
    sqlite3 *db = sq_open(path);
    sqlite3_stmt *s = sq_prepare(db, "PRAGMA journal_mode=WAL");
    if (sqlite3_step(s) != SQLITE_ROW || strcmp((const char *)sqlite3_column_text(s, 0), "wal"))
        die("sqlite: journal_mode=WAL was refused");
    sqlite3_finalize(s);
    sq_exec(db, sq_schema);
    sq_ok(db, sqlite3_close(db), "closing after creating the schema");
}

/* SQLite's own autocheckpoint (a PASSIVE checkpoint once the WAL holds 1000 frames), plus a
 * count of the frames each commit appended. After a complete checkpoint the next transaction
 * starts the WAL over. */
static int sq_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    sq_conn *c = arg;
    c->wal_frames += (uint64_t)(frames >= c->wal_prev ? frames - c->wal_prev : frames);
    c->wal_prev = frames;
    if (frames >= 1000) {
        int log = 0, done = 0;
        if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log, &done) ==
                SQLITE_OK &&
            log == done)
            c->wal_prev = 0;
    }
    return SQLITE_OK;
}

/* --sqlite-busy-poll: busy_timeout's 60 s, but retrying every 100 us instead of SQLite's
 * back-off (sleeps of 1, 2, 5, 10 ... 100 ms, during which the lock is often free). */
static int sq_busy_poll(void *arg, int count)
{
    (void)arg;
    if (count >= 600000) return 0;
    usleep(100);
    return 1;
}
static int g_busy_poll;

static void sq_conn_open(sq_conn *c, const char *path, int count_frames)
{
    memset(c, 0, sizeof *c);
    c->db = sq_open(path);
    if (g_busy_poll) sqlite3_busy_handler(c->db, sq_busy_poll, NULL);
    sq_exec(c->db, "PRAGMA synchronous=FULL");
    if (count_frames) sqlite3_wal_hook(c->db, sq_wal_hook, c);
    c->begin = sq_prepare(c->db, "BEGIN IMMEDIATE");
    c->commit = sq_prepare(c->db, "COMMIT");
    c->sel_mbx =
        sq_prepare(c->db, "SELECT id, next_msg, next_folder FROM mailboxes WHERE name = ?1");
    c->ins_mbx = sq_prepare(c->db, "INSERT INTO mailboxes(name, next_msg, next_folder) "
                                   "VALUES (?1, 1, 1)");
    c->sel_fld = sq_prepare(c->db, "SELECT id FROM folders WHERE mailbox = ?1 AND name = ?2");
    c->ins_fld = sq_prepare(c->db, "INSERT INTO folders(mailbox, id, name) VALUES (?1, ?2, ?3)");
    c->ins_msg = sq_prepare(c->db, "INSERT INTO messages(mailbox, id, folder, received, size, "
                                   "subject, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    c->upd_mbx = sq_prepare(c->db, "UPDATE mailboxes SET next_msg = ?2, next_folder = ?3 "
                                   "WHERE id = ?1");
    c->get = sq_prepare(c->db, "SELECT f.name, m.received, m.size, m.subject, m.body "
                               "FROM mailboxes b JOIN messages m ON m.mailbox = b.id AND m.id = ?2 "
                               "JOIN folders f ON f.mailbox = b.id AND f.id = m.folder "
                               "WHERE b.name = ?1");
}

static void sq_conn_close(sq_conn *c)
{
    sqlite3_stmt *all[] = {c->begin,   c->commit,  c->sel_mbx, c->ins_mbx, c->sel_fld,
                           c->ins_fld, c->ins_msg, c->upd_mbx, c->get};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    sq_ok(c->db, sqlite3_close(c->db), "closing a connection");
    c->db = NULL;
}

static void sq_done(sq_conn *c, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) die("sqlite: %s: %s (%d)", what, sqlite3_errmsg(c->db), rc);
    sqlite3_reset(s);
}

/* The work of store_mail_deliver, in the caller's transaction: *id is the new message's id. */
static void sq_deliver(sq_conn *c, const mail_new *m, uint64_t *id)
{
    sqlite3_stmt *s = c->sel_mbx;
    int64_t mbx, next_msg, next_folder, fid;
    sqlite3_bind_text(s, 1, m->mailbox, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        mbx = sqlite3_column_int64(s, 0);
        next_msg = sqlite3_column_int64(s, 1);
        next_folder = sqlite3_column_int64(s, 2);
    } else if (rc == SQLITE_DONE) {
        sqlite3_bind_text(c->ins_mbx, 1, m->mailbox, -1, SQLITE_STATIC);
        sq_done(c, c->ins_mbx, "creating a mailbox");
        mbx = sqlite3_last_insert_rowid(c->db);
        next_msg = next_folder = 1;
    } else
        die("sqlite: finding mailbox %s: %s (%d)", m->mailbox, sqlite3_errmsg(c->db), rc);
    sqlite3_reset(s);

    s = c->sel_fld;
    sqlite3_bind_int64(s, 1, mbx);
    sqlite3_bind_text(s, 2, m->folder, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        fid = sqlite3_column_int64(s, 0);
    else if (rc == SQLITE_DONE) {
        fid = next_folder++;
        sqlite3_bind_int64(c->ins_fld, 1, mbx);
        sqlite3_bind_int64(c->ins_fld, 2, fid);
        sqlite3_bind_text(c->ins_fld, 3, m->folder, -1, SQLITE_STATIC);
        sq_done(c, c->ins_fld, "creating a folder");
    } else
        die("sqlite: finding folder %s: %s (%d)", m->folder, sqlite3_errmsg(c->db), rc);
    sqlite3_reset(s);

    s = c->ins_msg;
    sqlite3_bind_int64(s, 1, mbx);
    sqlite3_bind_int64(s, 2, next_msg);
    sqlite3_bind_int64(s, 3, fid);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)m->received);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)m->size);
    sqlite3_bind_text(s, 6, m->subject, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(s, 7, m->body, m->size, SQLITE_STATIC);
    sq_done(c, s, "inserting a message");
    *id = (uint64_t)next_msg;

    s = c->upd_mbx;
    sqlite3_bind_int64(s, 1, mbx);
    sqlite3_bind_int64(s, 2, next_msg + 1);
    sqlite3_bind_int64(s, 3, next_folder);
    sq_done(c, s, "updating the mailbox");
}

/* store_mail_get's equivalent: the header and the whole body; returns XXH3-64 of the body. */
static uint64_t sq_get(sq_conn *c, const char *mailbox, uint64_t id, uint64_t *size)
{
    sqlite3_stmt *s = c->get;
    sqlite3_bind_text(s, 1, mailbox, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)id);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW)
        die("sqlite: reading message %llu of %s: %s (%d)", (unsigned long long)id, mailbox,
            sqlite3_errmsg(c->db), rc);
    const void *body = sqlite3_column_blob(s, 4);
    *size = (uint64_t)sqlite3_column_bytes(s, 4);
    if ((uint64_t)sqlite3_column_int64(s, 2) != *size || !sqlite3_column_text(s, 0) ||
        !sqlite3_column_text(s, 3))
        die("sqlite: message %llu of %s is malformed", (unsigned long long)id, mailbox);
    uint64_t h = XXH3_64bits(body, *size);
    sqlite3_reset(s);
    return h;
}

/* ---- durable deliveries: several writers ---- */

typedef struct worker {
    bench_share s; /* first */
    const params *p;
    ostore *o;
    sq_conn *sq;
} worker;

static void *o_deliver_worker(void *arg)
{
    worker *w = arg;
    uint8_t *body = xmalloc(w->p->size);
    mail_load_buf lb;
    mail_new m;
    uint64_t id;
    pthread_barrier_wait(w->s.go);
    for (uint64_t i = w->s.first; i < w->s.first + w->s.n; i++) {
        store_mail_load_message(w->p->seed, w->p->mailboxes, w->p->size, i, &lb, body, &m);
        eng_ok(store_mail_deliver(w->o->st, &m, 0, &id), "delivering a message (durable)");
    }
    free(body);
    return NULL;
}

static void *sq_deliver_worker(void *arg)
{
    worker *w = arg;
    uint8_t *body = xmalloc(w->p->size);
    mail_load_buf lb;
    mail_new m;
    uint64_t id;
    pthread_barrier_wait(w->s.go);
    for (uint64_t i = w->s.first; i < w->s.first + w->s.n; i++) {
        store_mail_load_message(w->p->seed, w->p->mailboxes, w->p->size, i, &lb, body, &m);
        sq_done(w->sq, w->sq->begin, "BEGIN IMMEDIATE");
        sq_deliver(w->sq, &m, &id);
        sq_done(w->sq, w->sq->commit, "COMMIT");
    }
    free(body);
    return NULL;
}

/* Before a timed phase: the dirty data of the previous one (or of deleted files) is written
 * back first, so that a store does not pay for the other's writeback. */
static void quiet_disk(void)
{
    sync();
}

/* Splits [first, first + n) between the workers, starts them together, returns the seconds
 * until the last one finished. */
static double run_workers(worker *ws, unsigned nw, uint64_t first, uint64_t n, void *(*fn)(void *))
{
    uint64_t t0, t1 = run_threads(ws, sizeof *ws, nw, first, n, fn, &t0);
    return secs(t0, t1);
}

typedef struct durable_result {
    double o_secs, s_secs, lo_ratio, hi_ratio;
    eng_stats o_delta;
    uint64_t o_edb, o_logs, s_db; /* sizes after the phase */
    double pages_per_delivery, records_per_delivery;
    uint64_t ppd_log_bytes, ppd_images;
} durable_result;

/* What one delivery changes, counted by the log: PPD_SAMPLE more deliveries committed lazily
 * with no checkpoint, a crash, and recovery's count of page records per transaction. */
static void pages_per_delivery(ostore *o, const params *p, durable_result *r)
{
    eng_opts big = o->o;
    eng_stats st = {0}, a, b;
    uint8_t *body = xmalloc(p->size);
    mail_load_buf lb;
    mail_new m;
    uint64_t id;
    big.cache_bytes = 1ull << 30;
    big.checkpoint_gens = 100000;
    o_close(o);
    r->o_edb = file_size(o->edb); /* the durable phase's database, checkpointed */
    o_open(o, &big);
    eng_db_stats(o->db, &a);
    for (uint64_t i = p->messages; i < p->messages + PPD_SAMPLE; i++) {
        store_mail_load_message(p->seed, p->mailboxes, p->size, i, &lb, body, &m);
        eng_ok(store_mail_deliver(o->st, &m, MAIL_LAZY, &id), "delivering a message (lazy)");
    }
    eng_ok(store_mail_flush(o->st), "flushing the log");
    eng_db_stats(o->db, &b);
    store_mail_close(o->st);
    o->st = NULL;
    eng_db_abandon(o->db);
    o->db = NULL;
    eng_ok(eng_db_recover(&big, &st), "recovering the Ombra database");
    /* Groups: the deliveries plus the mount's ATTACH; records: pages plus one COMMIT each. */
    double groups = (double)st.replay_groups;
    r->records_per_delivery = (double)st.replay_records / groups;
    r->pages_per_delivery = (double)(st.replay_records - st.replay_groups) / groups;
    r->ppd_log_bytes = b.log_bytes - a.log_bytes;
    r->ppd_images = b.page_images - a.page_images;
    free(body);
}

static void durable_phase(const params *p, const char *rundir, durable_result *r)
{
    ostore o = {0};
    char sq_path[4400];
    worker ow[MAX_THREADS], sw[MAX_THREADS];
    sq_conn conns[MAX_THREADS];
    eng_stats a, b;
    unsigned nw = p->threads;
    o_create(&o, rundir, "ombra-durable");
    snprintf(sq_path, sizeof sq_path, "%s/sqlite-durable.db", rundir);
    sq_create(sq_path);
    eng_db_stats(o.db, &a);
    for (unsigned k = 0; k < nw; k++) {
        sq_conn_open(&conns[k], sq_path, 0);
        ow[k] = (worker){.p = p, .o = &o};
        sw[k] = (worker){.p = p, .sq = &conns[k]};
    }
    unsigned rounds = p->rounds < p->messages / nw ? p->rounds : (unsigned)(p->messages / nw);
    for (unsigned j = 0; j < rounds; j++) {
        uint64_t lo = p->messages * j / rounds, n = p->messages * (j + 1) / rounds - lo;
        double os = 0, ss = 0;
        for (unsigned e = 0; e < 2; e++) {
            quiet_disk();
            if ((e + j) % 2)
                ss = run_workers(sw, nw, lo, n, sq_deliver_worker);
            else
                os = run_workers(ow, nw, lo, n, o_deliver_worker);
        }
        double q = ss / os;
        if (j == 0 || q < r->lo_ratio) r->lo_ratio = q;
        if (j == 0 || q > r->hi_ratio) r->hi_ratio = q;
        r->o_secs += os;
        r->s_secs += ss;
        printf("  round %u/%u: %llu messages, Ombra %.1f s, SQLite %.1f s\n", j + 1, rounds,
               (unsigned long long)n, os, ss);
    }
    eng_db_stats(o.db, &b);
    stats_delta(&a, &b, &r->o_delta);
    for (unsigned k = 0; k < nw; k++)
        sq_conn_close(&conns[k]);
    sqlite3 *db = sq_open(sq_path);
    sq_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    sq_ok(db, sqlite3_close(db), "closing after the checkpoint");
    r->s_db = file_size(sq_path);
    pages_per_delivery(&o, p, r);
    rm_tree(o.dir);
    remove(sq_path);
}

/* ---- bulk load ---- */

typedef struct bulk_result {
    double o_secs, s_secs, o_digest_secs, s_digest_secs;
    eng_stats o_delta;
    uint64_t s_frames, o_edb, o_logs, s_db;
    uint32_t o_pages, o_free; /* data pages of the .edb, and of them on the free list */
    char o_digest[33], s_digest[33];
} bulk_result;

static void progress(void *arg, uint64_t done, uint64_t total)
{
    (void)arg;
    if (done % 20000 == 0 || done == total) {
        printf("\r  Ombra: %llu/%llu", (unsigned long long)done, (unsigned long long)total);
        if (done == total) printf("\n");
        fflush(stdout);
    }
}

static void o_bulk(ostore *o, const params *p, bulk_result *r)
{
    eng_stats a, b;
    eng_db_stats(o->db, &a);
    quiet_disk();
    uint64_t t0 = om_mono_ns();
    eng_ok(store_mail_load(o->st, p->mailboxes, p->messages, p->size, p->seed, 1, progress, NULL),
           "bulk load");
    r->o_secs = secs(t0, om_mono_ns());
    eng_db_stats(o->db, &b);
    stats_delta(&a, &b, &r->o_delta);
}

static void sq_bulk(const char *path, const params *p, bulk_result *r)
{
    sq_conn c;
    uint8_t *body = xmalloc(p->size);
    mail_load_buf lb;
    mail_new m;
    uint64_t id;
    sq_conn_open(&c, path, 1);
    quiet_disk();
    uint64_t t0 = om_mono_ns();
    for (uint64_t i = 0; i < p->messages; i++) {
        if (i % p->batch == 0) sq_done(&c, c.begin, "BEGIN IMMEDIATE");
        store_mail_load_message(p->seed, p->mailboxes, p->size, i, &lb, body, &m);
        sq_deliver(&c, &m, &id);
        if ((i + 1) % p->batch == 0 || i + 1 == p->messages) sq_done(&c, c.commit, "COMMIT");
    }
    r->s_secs = secs(t0, om_mono_ns());
    r->s_frames = c.wal_frames;
    sq_conn_close(&c);
    free(body);
}

/* ---- digest of the SQLite store, in store_mail_digest's order and encoding ---- */

static void sq_digest(const char *path, char out[33])
{
    sqlite3 *db = sq_open(path);
    XXH3_state_t *x = XXH3_createState();
    if (!x) die("out of memory");
    XXH3_128bits_reset(x);
    /* BINARY collation is memcmp order, the order of Ombra's keys. */
    sqlite3_stmt *mb = sq_prepare(db, "SELECT id, name FROM mailboxes ORDER BY name");
    sqlite3_stmt *fl = sq_prepare(db, "SELECT id, name FROM folders WHERE mailbox = ?1 "
                                      "ORDER BY name");
    sqlite3_stmt *ms = sq_prepare(db, "SELECT id, received, size, subject, body FROM messages "
                                      "WHERE mailbox = ?1 AND folder = ?2 ORDER BY id");
    while (sqlite3_step(mb) == SQLITE_ROW) {
        int64_t mid = sqlite3_column_int64(mb, 0);
        const char *mname = (const char *)sqlite3_column_text(mb, 1);
        size_t ml = (size_t)sqlite3_column_bytes(mb, 1);
        mail_h_tag(x, 'B');
        mail_h_field(x, mname, ml);
        sqlite3_bind_int64(fl, 1, mid);
        while (sqlite3_step(fl) == SQLITE_ROW) {
            const char *fname = (const char *)sqlite3_column_text(fl, 1);
            size_t fln = (size_t)sqlite3_column_bytes(fl, 1);
            mail_h_tag(x, 'F');
            mail_h_field(x, fname, fln);
            sqlite3_bind_int64(ms, 1, mid);
            sqlite3_bind_int64(ms, 2, sqlite3_column_int64(fl, 0));
            while (sqlite3_step(ms) == SQLITE_ROW) {
                mail_h_tag(x, 'M');
                mail_h_field(x, mname, ml);
                mail_h_field(x, fname, fln);
                mail_h_u64(x, (uint64_t)sqlite3_column_int64(ms, 0));
                mail_h_u64(x, (uint64_t)sqlite3_column_int64(ms, 1));
                mail_h_u64(x, (uint64_t)sqlite3_column_int64(ms, 2));
                mail_h_field(x, sqlite3_column_text(ms, 3), (uint64_t)sqlite3_column_bytes(ms, 3));
                mail_h_field(x, sqlite3_column_blob(ms, 4), (uint64_t)sqlite3_column_bytes(ms, 4));
            }
            sqlite3_reset(ms);
        }
        sqlite3_reset(fl);
    }
    sqlite3_finalize(mb);
    sqlite3_finalize(fl);
    sqlite3_finalize(ms);
    sq_ok(db, sqlite3_close(db), "closing after the digest");
    XXH128_canonical_t can;
    XXH128_canonicalFromHash(&can, XXH3_128bits_digest(x));
    XXH3_freeState(x);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", can.digest[i]);
}

/* ---- point reads ---- */

typedef struct reader {
    bench_share s; /* first: reads [first, first + n) of the read sequence */
    const params *p;
    const plan *pl;
    ostore *o;
    sq_conn *sq;
    uint64_t bad;
    uint64_t end_ns; /* when the timed loop ended */
} reader;

/* Read k of the sequence: a random message of the bulk load. */
static uint64_t read_pick(const params *p, uint64_t k)
{
    return mix64(p->seed * 31 + 0xBEEF + k) % p->messages;
}

/* The body of message i as the load wrote it, hashed (outside the timed loops). */
static uint64_t expected_hash(const params *p, uint64_t i, uint8_t *body)
{
    mail_load_buf lb;
    mail_new m;
    store_mail_load_message(p->seed, p->mailboxes, p->size, i, &lb, body, &m);
    return XXH3_64bits(body, p->size);
}

static void *o_read_worker(void *arg)
{
    reader *w = arg;
    char name[32];
    uint64_t *h = xmalloc(w->s.n * sizeof *h);
    pthread_barrier_wait(w->s.go);
    for (uint64_t k = 0; k < w->s.n; k++) {
        uint64_t i = read_pick(w->p, w->s.first + k);
        mail_message m;
        snprintf(name, sizeof name, "user%05u", w->pl->mbx[i]);
        eng_ok(store_mail_get(w->o->st, name, w->pl->id[i], &m), "reading a message");
        h[k] = m.h.size == w->p->size ? XXH3_64bits(m.body, m.h.size) : 0;
        store_mail_message_free(&m);
    }
    w->end_ns = om_mono_ns();
    /* Check every body against what the load wrote. */
    uint8_t *body = xmalloc(w->p->size);
    for (uint64_t k = 0; k < w->s.n; k++)
        w->bad += h[k] != expected_hash(w->p, read_pick(w->p, w->s.first + k), body);
    free(body);
    free(h);
    return NULL;
}

static void *sq_read_worker(void *arg)
{
    reader *w = arg;
    char name[32];
    uint64_t *h = xmalloc(w->s.n * sizeof *h), size;
    pthread_barrier_wait(w->s.go);
    for (uint64_t k = 0; k < w->s.n; k++) {
        uint64_t i = read_pick(w->p, w->s.first + k);
        snprintf(name, sizeof name, "user%05u", w->pl->mbx[i]);
        h[k] = sq_get(w->sq, name, w->pl->id[i], &size);
        if (size != w->p->size) h[k] = 0;
    }
    w->end_ns = om_mono_ns();
    uint8_t *body = xmalloc(w->p->size);
    for (uint64_t k = 0; k < w->s.n; k++)
        w->bad += h[k] != expected_hash(w->p, read_pick(w->p, w->s.first + k), body);
    free(body);
    free(h);
    return NULL;
}

/* Runs n reads on nr threads; the seconds from the start until the last reader's timed loop
 * ended (each then checks its bodies against the load, untimed). */
static double run_readers(reader *rs, unsigned nr, uint64_t n, void *(*fn)(void *))
{
    for (unsigned k = 0; k < nr; k++)
        rs[k].bad = 0;
    uint64_t t0;
    run_threads(rs, sizeof *rs, nr, 0, n, fn, &t0);
    uint64_t t1 = t0;
    for (unsigned k = 0; k < nr; k++)
        if (rs[k].end_ns > t1) t1 = rs[k].end_ns;
    double s = secs(t0, t1);
    for (unsigned k = 0; k < nr; k++)
        if (rs[k].bad)
            die("%s returned %llu bodies that differ from what was loaded",
                fn == o_read_worker ? "Ombra" : "SQLite", (unsigned long long)rs[k].bad);
    return s;
}

typedef struct read_result {
    double o1, s1, on, sn; /* seconds: 1 reader, T readers */
} read_result;

static void read_phase(ostore *o, const char *sq_path, const params *p, const plan *pl,
                       read_result *r)
{
    reader ors[MAX_THREADS], srs[MAX_THREADS];
    sq_conn conns[MAX_THREADS];
    for (unsigned k = 0; k < p->threads; k++) {
        sq_conn_open(&conns[k], sq_path, 0);
        ors[k] = (reader){.p = p, .pl = pl, .o = o};
        srs[k] = (reader){.p = p, .pl = pl, .sq = &conns[k]};
    }
    /* Warm-up outside the timing: a first pass over the same reads for both stores, so both
     * read from memory (the OS page cache, Ombra's page cache, SQLite's). */
    run_readers(ors, 1, p->reads, o_read_worker);
    run_readers(srs, 1, p->reads, sq_read_worker);
    r->o1 = run_readers(ors, 1, p->reads, o_read_worker);
    r->s1 = run_readers(srs, 1, p->reads, sq_read_worker);
    r->on = run_readers(ors, p->threads, p->reads, o_read_worker);
    r->sn = run_readers(srs, p->threads, p->reads, sq_read_worker);
    for (unsigned k = 0; k < p->threads; k++)
        sq_conn_close(&conns[k]);
}

/* ---- machine, output ---- */

typedef struct results {
    durable_result d;
    bulk_result b;
    read_result r;
} results;

static void print_table(const params *p, const machine *m, const results *x)
{
    double n = (double)p->messages, rd = (double)p->reads;
    char w[64];
    printf("\nmachine: %ld CPUs (%s); %s: filesystem %s (%s); SQLite %s\n", m->nproc, m->cpu,
           p->dir, m->fs, m->fstype, m->sqlite);
    printf("parameters: %llu messages of %u bytes into %u mailboxes; %u writer threads in %u "
           "alternating rounds (SQLite: %s); bulk: Ombra store_mail_load (lazy transactions of up "
           "to 64 "
           "messages, one flush), SQLite %llu messages per transaction; %llu random reads; "
           "seed %llu\n\n",
           (unsigned long long)p->messages, p->size, p->mailboxes, p->threads, p->rounds,
           g_busy_poll ? "busy handler polling every 100 us" : "busy_timeout 60 s",
           (unsigned long long)p->batch, (unsigned long long)p->reads, (unsigned long long)p->seed);
    printf("%-44s | %12s | %12s | %12s\n", "metric", "Ombra", "SQLite", "Ombra/SQLite");
    printf("%.44s-+-%.12s-+-%.12s-+-%.12s\n",
           "----------------------------------------------------", "--------------",
           "--------------", "--------------");
    snprintf(w, sizeof w, "durable deliveries/s, %u writers", p->threads);
    row(w, n / x->d.o_secs, n / x->d.s_secs, 0);
    row("bulk load messages/s", n / x->b.o_secs, n / x->b.s_secs, 0);
    row("point reads/s, 1 reader", rd / x->r.o1, rd / x->r.s1, 0);
    snprintf(w, sizeof w, "point reads/s, %u readers", p->threads);
    row(w, rd / x->r.on, rd / x->r.sn, 0);
    row("database MB after the load (lower: smaller)", x->b.o_edb / MB, x->b.s_db / MB, 1);

    const eng_stats *a = &x->d.o_delta, *b = &x->b.o_delta;
    double payload = n * p->size;
    printf("\ndetails:\n");
    printf("  durable ratio per round: %.2f..%.2f; Ombra %.2f deliveries per log fsync, %.1f KiB "
           "of log/delivery, %.2f page images/delivery, %llu checkpoints\n",
           x->d.lo_ratio, x->d.hi_ratio, n / (double)(a->log_flushes ? a->log_flushes : 1),
           a->log_bytes / 1024.0 / n, (double)a->page_images / n,
           (unsigned long long)a->checkpoints);
    printf("  pages a delivery changes (log of %u lazy deliveries replayed): %.2f (%.2f KiB of "
           "log, %.2f page images per delivery)\n",
           PPD_SAMPLE, x->d.pages_per_delivery, x->d.ppd_log_bytes / 1024.0 / PPD_SAMPLE,
           (double)x->d.ppd_images / PPD_SAMPLE);
    printf("  bulk: Ombra %.1f KiB of log/message, %.2f page images/message, %llu checkpoints; "
           "SQLite %.1f KiB of WAL/message\n",
           b->log_bytes / 1024.0 / n, (double)b->page_images / n,
           (unsigned long long)b->checkpoints, x->b.s_frames * (4096.0 + 24) / 1024.0 / n);
    printf("  after the bulk load: Ombra .edb %.1f MB (%u pages of 32 KiB in use = %.1f MB, %u "
           "free) + log folder %.1f MB; SQLite %.1f MB (checkpointed); payload %.1f MB; durable "
           "run: .edb %.1f MB, SQLite %.1f MB\n",
           x->b.o_edb / MB, x->b.o_pages, (double)x->b.o_pages * ENG_PAGE_SIZE / MB, x->b.o_free,
           x->b.o_logs / MB, x->b.s_db / MB, payload / MB, x->d.o_edb / MB, x->d.s_db / MB);
    printf("  digest of the bulk-loaded stores: Ombra %s (%.1f s), SQLite %s (%.1f s): %s\n",
           x->b.o_digest, x->b.o_digest_secs, x->b.s_digest, x->b.s_digest_secs,
           strcmp(x->b.o_digest, x->b.s_digest) ? "DIFFERENT" : "equal");
}

static void write_json(const params *p, const machine *m, const results *x)
{
    char tmp[4200], now[64];
    double n = (double)p->messages, rd = (double)p->reads;
    snprintf(tmp, sizeof tmp, "%s.tmp", p->json);
    FILE *f = fopen(tmp, "w");
    if (!f) die("writing %s: %s", tmp, strerror(errno));
    fprintf(f, "{\n  \"time\": \"%s\",\n", om_time_iso(om_now_ns(), now, sizeof now));
    fprintf(f,
            "  \"machine\": {\"nproc\": %ld, \"cpu\": \"%s\", \"fs\": \"%s\", \"fstype\": \"%s\", "
            "\"sqlite\": \"%s\"},\n",
            m->nproc, m->cpu, m->fs, m->fstype, m->sqlite);
    fprintf(f,
            "  \"params\": {\"messages\": %llu, \"size\": %u, \"mailboxes\": %u, \"threads\": %u, "
            "\"rounds\": %u, \"sqlite_busy\": \"%s\", \"sqlite_batch\": %llu, \"reads\": %llu, "
            "\"seed\": %llu},\n",
            (unsigned long long)p->messages, p->size, p->mailboxes, p->threads, p->rounds,
            g_busy_poll ? "poll" : "busy_timeout", (unsigned long long)p->batch,
            (unsigned long long)p->reads, (unsigned long long)p->seed);
    fprintf(f, "  \"results\": {\n");
    json_pair(f, "durable_deliveries_per_s", n / x->d.o_secs, n / x->d.s_secs, ",");
    json_pair(f, "bulk_messages_per_s", n / x->b.o_secs, n / x->b.s_secs, ",");
    json_pair(f, "point_reads_per_s_1r", rd / x->r.o1, rd / x->r.s1, ",");
    json_pair(f, "point_reads_per_s_nr", rd / x->r.on, rd / x->r.sn, ",");
    json_pair(f, "database_bytes", (double)x->b.o_edb, (double)x->b.s_db, "");
    fprintf(f, "  },\n  \"details\": {\n");
    const eng_stats *a = &x->d.o_delta, *b = &x->b.o_delta;
    fprintf(f,
            "    \"ombra_durable\": {\"log_fsyncs\": %llu, \"log_bytes\": %llu, \"page_images\": "
            "%llu, \"checkpoints\": %llu, \"edb_bytes\": %llu},\n",
            (unsigned long long)a->log_flushes, (unsigned long long)a->log_bytes,
            (unsigned long long)a->page_images, (unsigned long long)a->checkpoints,
            (unsigned long long)x->d.o_edb);
    fprintf(f, "    \"sqlite_durable\": {\"db_bytes\": %llu},\n", (unsigned long long)x->d.s_db);
    fprintf(f, "    \"durable_round_ratio\": [%.4g, %.4g],\n", x->d.lo_ratio, x->d.hi_ratio);
    fprintf(f,
            "    \"ombra_delivery\": {\"pages_changed\": %.3f, \"log_bytes\": %.1f, "
            "\"page_images\": %.3f, \"sample\": %u},\n",
            x->d.pages_per_delivery, (double)x->d.ppd_log_bytes / PPD_SAMPLE,
            (double)x->d.ppd_images / PPD_SAMPLE, PPD_SAMPLE);
    fprintf(f,
            "    \"ombra_bulk\": {\"log_bytes\": %llu, \"page_images\": %llu, \"checkpoints\": "
            "%llu, \"pages\": %u, \"free_pages\": %u, \"edb_bytes\": %llu, \"log_dir_bytes\": "
            "%llu, \"digest\": \"%s\"},\n",
            (unsigned long long)b->log_bytes, (unsigned long long)b->page_images,
            (unsigned long long)b->checkpoints, x->b.o_pages, x->b.o_free,
            (unsigned long long)x->b.o_edb, (unsigned long long)x->b.o_logs, x->b.o_digest);
    fprintf(f,
            "    \"sqlite_bulk\": {\"wal_frames\": %llu, \"db_bytes\": %llu, \"digest\": "
            "\"%s\"}\n  }\n}\n",
            (unsigned long long)x->b.s_frames, (unsigned long long)x->b.s_db, x->b.s_digest);
    if (ferror(f) | (fclose(f) != 0)) die("writing %s: %s", tmp, strerror(errno));
    if (rename(tmp, p->json) != 0) die("renaming %s to %s: %s", tmp, p->json, strerror(errno));
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_mail [--dir DIR] [--messages N] [--mailboxes M] [--size BYTES]\n"
            "                  [--threads T] [--rounds R] [--batch B] [--reads N] [--seed S]\n"
            "                  [--sqlite-busy-poll] [--keep] [--json FILE]\n"
            "  --dir DIR       scratch parent (default $TMPDIR or /tmp); a run-PID folder is "
            "made inside\n"
            "  --messages N    messages delivered in each phase (default 100000)\n"
            "  --mailboxes M   mailboxes they go to (default 1000)\n"
            "  --size BYTES    body size (default 8192)\n"
            "  --threads T     writers of the durable phase, readers of the second read phase "
            "(default 4)\n"
            "  --rounds R      alternate the stores R times in the durable phase (default 4)\n"
            "  --batch B       SQLite's messages per transaction in the bulk load (default 1000)\n"
            "  --reads N       random point reads per read phase (default 20000)\n"
            "  --sqlite-busy-poll  SQLite writers retry the lock every 100 us instead of\n"
            "                  busy_timeout's back-off (1, 2, 5 ... 100 ms sleeps)\n"
            "  --keep          keep the scratch files\n"
            "  --json FILE     write the figures as JSON\n");
}

static void parse_args(int argc, char **argv, params *p)
{
    *p = (params){.dir = scratch_parent(),
                  .messages = 100000,
                  .mailboxes = 1000,
                  .size = 8192,
                  .threads = 4,
                  .rounds = 4,
                  .batch = 1000,
                  .reads = 20000,
                  .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (common_arg(argc, argv, &i, usage, &p->dir, &p->json, &p->keep)) continue;
        if (!strcmp(a, "--sqlite-busy-poll"))
            g_busy_poll = 1;
        else if (!strcmp(a, "--messages"))
            p->messages = num_arg(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--mailboxes"))
            p->mailboxes = (uint32_t)num_arg(a, v, 1, 99999), i++;
        else if (!strcmp(a, "--size"))
            p->size = (uint32_t)num_arg(a, v, 0, 64u << 20), i++;
        else if (!strcmp(a, "--threads"))
            p->threads = (unsigned)num_arg(a, v, 1, MAX_THREADS), i++;
        else if (!strcmp(a, "--rounds"))
            p->rounds = (unsigned)num_arg(a, v, 1, 1000), i++;
        else if (!strcmp(a, "--batch"))
            p->batch = num_arg(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--reads"))
            p->reads = num_arg(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--seed"))
            p->seed = num_arg(a, v, 0, UINT64_MAX), i++;
        else
            bad_arg(a, usage);
    }
    if (p->messages < p->threads)
        die("--messages (%llu) must be at least --threads (%u)", (unsigned long long)p->messages,
            p->threads);
}

int main(int argc, char **argv)
{
    params p;
    machine m;
    plan pl;
    static results x;
    char rundir[4200], sq_path[4400];
    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_args(argc, argv, &p);
    machine_info(p.dir, &m);
    make_rundir(p.dir, rundir, sizeof rundir);
    plan_make(&p, &pl);

    printf("durable deliveries: %llu messages of %u bytes, %u writers, each store...\n",
           (unsigned long long)p.messages, p.size, p.threads);
    durable_phase(&p, rundir, &x.d);

    printf("bulk load of the same messages into new stores...\n");
    ostore o = {0};
    o_create(&o, rundir, "ombra-bulk");
    snprintf(sq_path, sizeof sq_path, "%s/sqlite-bulk.db", rundir);
    sq_create(sq_path);
    o_bulk(&o, &p, &x.b);
    printf("  SQLite...\n");
    sq_bulk(sq_path, &p, &x.b);

    /* Both stores closed and opened again: the reads start from the files. */
    eng_opts opts = o.o;
    o_close(&o);
    o_open(&o, &opts);
    printf("point reads...\n");
    read_phase(&o, sq_path, &p, &pl, &x.r);

    printf("digests...\n");
    uint64_t t0 = om_mono_ns();
    eng_ok(store_mail_digest(o.st, x.b.o_digest), "digest of the Ombra store");
    x.b.o_digest_secs = secs(t0, om_mono_ns());
    t0 = om_mono_ns();
    sq_digest(sq_path, x.b.s_digest);
    x.b.s_digest_secs = secs(t0, om_mono_ns());
    eng_view *v = NULL;
    eng_space sp;
    eng_ok(eng_view_begin(o.db, &v), "opening a view");
    eng_ok(eng_space_info(v, &sp), "reading the space information");
    eng_view_end(v);
    x.b.o_pages = sp.pages;
    x.b.o_free = sp.free_pages;

    o_close(&o);
    x.b.o_edb = file_size(o.edb);
    x.b.o_logs = dir_size(o.logs);
    sqlite3 *db = sq_open(sq_path);
    sq_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    sq_ok(db, sqlite3_close(db), "closing after the checkpoint");
    x.b.s_db = file_size(sq_path);

    print_table(&p, &m, &x);
    if (strcmp(x.b.o_digest, x.b.s_digest) != 0)
        die("the two stores do not hold the same mail after the same bulk load");
    if (p.json) {
        write_json(&p, &m, &x);
        printf("\nfigures written to %s\n", p.json);
    }
    if (!p.keep) rm_tree(rundir);
    free(pl.mbx);
    free(pl.id);
    return 0;
}
