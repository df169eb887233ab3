/* Tables: B+trees keyed by byte strings, on the engine's pages and transactions.
 *
 * A database that holds tables is formatted once with eng_catalog_create (data page 1 is the
 * meta page: free-page list, counters; page 2 is the root of the catalog, itself a B+tree
 * from table name to root page and object id). Every change goes through an eng_txn, so it is
 * logged, atomic, and rebuilt exactly by recovery.
 *
 * Keys are byte strings of 1..ENG_MAX_KEY bytes, ordered by memcmp (then by length). Values
 * are 0..ENG_MAX_VALUE bytes; a value too large for the record (cell over ENG_MAX_INLINE
 * bytes) is a long value, cut into chunks kept in the database's long-value tree, and read
 * back whole or in ranges. Pages freed by deletes (merged leaves, dropped long values) go to
 * the free-page list and are reused before the file grows.
 *
 * Views: reads happen in a view. eng_txn_view(t) is the transaction's own view (its changes
 * included). eng_view_begin(db) is a committed, consistent view: no commit becomes visible
 * while it is open, so keep it short (it delays the publishing step of every commit), and
 * never commit on a thread that holds one. Pointers returned by a cursor (key, inline value)
 * stay valid until the cursor moves or the view ends; in a transaction's view, until the
 * transaction changes anything.
 *
 * A write that fails leaves the transaction's pages half changed: roll the transaction back.
 *
 * All functions return 0 or an error from errors.def: RecordNotFound (no such key, or a cursor
 * past its end), KeyDuplicate (eng_insert of an existing key), ObjectNotFound (no such table),
 * InvalidParameter (empty or oversized key or value), DatabaseCorrupted (a page that is not
 * what the tree expects, naming it). */
#ifndef OM_ENGINE_TABLE_H
#define OM_ENGINE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

#define ENG_MAX_KEY        1024u
#define ENG_MAX_VALUE      (1ull << 31) /* 2 GiB */
#define ENG_MAX_INLINE     10000u       /* a record cell larger than this moves its value out */
#define ENG_MAX_TABLE_NAME 255u

typedef struct eng_tbl {
    uint32_t root, objid;
} eng_tbl;

typedef struct eng_view eng_view;
typedef struct eng_cursor eng_cursor;

/* Formats the meta page and the catalog (in a transaction of its own). The database must
 * have no pages yet. */
int eng_catalog_create(eng_db *db);
/* 1 if the database holds tables (eng_catalog_create ran), else 0. */
int eng_catalog_exists(eng_db *db);

/* Views. eng_view_end also closes nothing: close cursors first. */
int eng_view_begin(eng_db *db, eng_view **out);
void eng_view_end(eng_view *v);
eng_view *eng_txn_view(eng_txn *t);
/* How many transactions were published before the view began (eng_view_begin's). Two views
 * with the same epoch see the same committed state: a reader that must see one state but need
 * not hold one view for all of it (which holds every commit back and keeps every page it reads
 * in the cache) ends its view now and then, begins another and compares. */
uint64_t eng_view_epoch(eng_view *v);
/* Commits (and checkpoints) wait from eng_commits_hold until eng_commits_resume: for such a
 * reader when commits keep coming between its views. Between two of its views (none open on the
 * thread) eng_commits_trim brings the cache back to its size, which no commit does meanwhile.
 * Never on a thread in a transaction or holding a view. */
void eng_commits_hold(eng_db *db);
void eng_commits_trim(eng_db *db);
void eng_commits_resume(eng_db *db);

/* Tables. */
int eng_table_create(eng_txn *t, const char *name, eng_tbl *out);
int eng_table_open(eng_view *v, const char *name, eng_tbl *out);
/* Deletes the table, its records and their long values; their pages become free. */
int eng_table_drop(eng_txn *t, const char *name);

/* Records. */
enum { ENG_PUT_NOOVERWRITE = 1 };
/* Inserts or replaces key's value (with ENG_PUT_NOOVERWRITE: KeyDuplicate if key exists). */
int eng_put(eng_txn *t, eng_tbl tb, const void *key, uint32_t klen, const void *val, uint64_t vlen,
            unsigned flags);
int eng_del(eng_txn *t, eng_tbl tb, const void *key, uint32_t klen);
/* The whole value of key, in a malloc'd buffer (*val NULL for a 0-byte value). */
int eng_get(eng_view *v, eng_tbl tb, const void *key, uint32_t klen, void **val, uint64_t *vlen);

/* Cursors: ordered scans. A new cursor is before the first record; seek or first to start. */
int eng_cursor_open(eng_view *v, eng_tbl tb, eng_cursor **out);
void eng_cursor_close(eng_cursor *c);
/* Positions on the first record with a key >= key (RecordNotFound: none). */
int eng_cursor_seek(eng_cursor *c, const void *key, uint32_t klen);
int eng_cursor_first(eng_cursor *c);
/* Moves to the next record (RecordNotFound: none). */
int eng_cursor_next(eng_cursor *c);
/* The current record's key, and its value's length. */
int eng_cursor_key(eng_cursor *c, const void **key, uint32_t *klen);
int eng_cursor_vlen(eng_cursor *c, uint64_t *vlen);
/* Copies len bytes of the value from offset off into buf (long values are read by chunks). */
int eng_cursor_read(eng_cursor *c, uint64_t off, void *buf, uint64_t len);

/* Space and structure, for tests and tools. */
typedef struct eng_space {
    uint32_t pages;      /* data pages in the database */
    uint32_t free_pages; /* on the free list */
    uint64_t lv_count;   /* long values allocated so far */
} eng_space;
int eng_space_info(eng_view *v, eng_space *s);
/* Walks a table's tree and checks its invariants (key order within and across pages, parent
 * separators, page kinds and object ids, leaf chain); DatabaseCorrupted names the first page
 * that breaks one. *records counts the records. */
int eng_table_check(eng_view *v, eng_tbl tb, uint64_t *records);

#endif
