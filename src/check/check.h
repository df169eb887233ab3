/* The check library: proves that a set of database files and their log folder can be recovered,
 * the way Exchange's CHKSGFILES lets a backup application verify a backup before it reports
 * success. The backup application runs it over the shadow copy's files; `ombra dbutil
 * check-set` runs it over any files.
 *
 * Sequence (each step after the previous one; anything else is InvalidBackupSequence):
 *   chk_init          databases, a log folder and its base name
 *   chk_check_headers page size, header pages, one log signature for every database, the log
 *                     generations needed to reach Clean Shutdown
 *   chk_check_pages   any number of calls, from any number of threads, over page ranges of any
 *                     database, until every page the headers count has been checked
 *   chk_check_logs    every generation of the base name in the folder
 *   chk_term          the verdict; frees the set
 *
 * Verdicts:
 * - A page whose checksum does not match is ReadVerifyFailure (-1018); one that holds another
 *   page number ReadPgnoVerifyFailure (-1118); in a database in Clean Shutdown, a page newer
 *   than the header's dbtime DbTimeTooNew (-567). A page never written (all zeros) is fine.
 * - Logs are needed from the oldest generation a database requires (Log Required min over the
 *   databases not in Clean Shutdown, or the first registered generation) up to the newest on
 *   disk, and at least up to every database's Log Required max and the last registered one.
 *   Any needed generation missing (-528; -543 for the first ones, which recovery starts with,
 *   and when the needed ones end early, as recovery says) fails the check,
 *   and so does one that does not continue the databases' stream as the engine's log chain
 *   judges it (engine/log.h, in that order): of the wrong size (-541), a damaged header (-501),
 *   written for another database (-539), of another stream (-530), under another generation's
 *   name (-513), not following its predecessor (-515), its predecessor cut short (-501), damaged
 *   data (-501). When the folder's newest generation is already of another database or stream,
 *   that is the one failure (-539, -530). Damage in generations older than the oldest needed one is
 * reported and does not fail it. A damaged checkpoint file is reported and does not fail it either
 *   (recovery then starts from the header's Log Required).
 * - chk_term fails with the first failure of any step, with DatabaseInvalidPages when fewer pages
 *   were checked than a header counts, and with LogFileNotCopied when a needed generation was not
 *   checked.
 * Every failure carries a detail naming the file, page or generation. */
#ifndef OM_CHECK_CHECK_H
#define OM_CHECK_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "base/vfs.h"
#include "engine/format.h"

typedef struct chk_set chk_set;

/* One database as its header describes it (valid after chk_check_headers). */
typedef struct chk_db_info {
    const char *path;
    uint32_t state; /* enum eng_state */
    uint32_t pages; /* data pages the header counts */
    uint32_t log_req_min, log_req_max, log_committed;
    uint64_t dbtime;
    eng_sig db_sig, log_sig;
    char base[4];
    int damaged_header_copy; /* -1 none; 0 or 1: that copy is bad, the other good */
} chk_db_info;

typedef struct chk_headers {
    size_t ndb;
    uint32_t page_size, header_pages;
    uint32_t need_min, need_max; /* generations needed for Clean Shutdown; 0, 0: none */
    eng_sig log_sig;             /* shared by every database */
} chk_headers;

/* edb: nedb database files (may be 0 when a log folder is given: a log-only set); log_dir: the
 * folder of the logs and the checkpoint (NULL: databases only); base: the log base name
 * (required with a log folder). vfs NULL: the real filesystem. InvalidParameter for an empty
 * target set, a log folder without a base name or an invalid base name. */
int chk_init(const char *const *edb, size_t nedb, const char *log_dir, const char *base,
             om_vfs *vfs, chk_set **out);
/* Generations the caller copied and expects to be there (the backup's log range): they become
 * needed whatever the headers say. Before chk_check_logs. */
int chk_expect_logs(chk_set *s, uint32_t first, uint32_t last);

int chk_check_headers(chk_set *s, chk_headers *out);
/* The i-th database (after chk_check_headers); NULL past the end. */
const chk_db_info *chk_db(const chk_set *s, size_t i);

/* What chk_check_pages says about one page. */
typedef struct chk_page_report {
    size_t db;
    uint32_t pgno;
    int initialised;
    uint64_t expected, actual; /* stored and computed checksums */
    uint64_t dbtime;
    int err; /* 0, ReadVerifyFailure, ReadPgnoVerifyFailure, DbTimeTooNew */
} chk_page_report;

/* Called for every page checked, from the calling thread. */
typedef void (*chk_page_cb)(void *arg, const chk_page_report *r);

/* Checks data pages [first, first + count) of database db (data pages are numbered from 1).
 * Thread-safe. Returns 0, the first page error after checking the whole range, or an I/O
 * error (FileIOBeyondEOF when the file is shorter than the header says). */
int chk_check_pages(chk_set *s, size_t db, uint32_t first, uint32_t count, chk_page_cb cb,
                    void *arg);

/* What chk_check_logs says about one log file (or the checkpoint: gen 0, is_checkpoint). */
typedef struct chk_log_report {
    const char *file;
    uint32_t gen;
    int needed;
    int is_checkpoint;
    int err;            /* 0 when good */
    const char *detail; /* the error's detail; valid during the callback */
    uint16_t slot;      /* for LogFileCorrupt: the damaged slot, if known */
} chk_log_report;

typedef void (*chk_log_cb)(void *arg, const chk_log_report *r);

typedef struct chk_logs {
    uint32_t lowest, highest;    /* generations present (0, 0: none) */
    uint32_t need_min, need_max; /* generations that had to be good (0, 0: none) */
    uint32_t checked;            /* files read */
    uint32_t bad_unneeded;       /* damaged generations older than the oldest needed one */
    int checkpoint_bad;          /* the checkpoint file is damaged, missing or of another stream */
} chk_logs;

/* Checks every generation of the base name in the log folder and the checkpoint; cb (may be
 * NULL) hears about each file. */
int chk_check_logs(chk_set *s, chk_log_cb cb, void *arg, chk_logs *out);

/* The same for pages the caller already read (count whole pages, data page first at the
 * start of `pages`): a backup checks the pages as it copies them, reading the file once. */
int chk_check_page_buf(chk_set *s, size_t db, uint32_t first, const uint8_t *pages, uint32_t count,
                       chk_page_cb cb, void *arg);

/* Pages [first, first + count) of database db (clipped to its pages) count as checked without
 * being read: a synthetic full backup reuses them from an earlier full that checked them (or
 * reused them from one that did; docs/design.md, "Change tracking and synthetic fulls"). */
void chk_vouch_pages(chk_set *s, size_t db, uint32_t first, uint32_t count);

/* Totals so far (pages checked over every database, pages the headers count). */
void chk_page_totals(const chk_set *s, uint64_t *checked, uint64_t *total);

/* The verdict (0 or the first failure); frees s. */
int chk_term(chk_set *s);

/* The generation files of a base name in a folder, in generation order; E<base>.log (the
 * current one) takes the generation in its header and comes last. Shared with dbutil. */
typedef struct chk_log_file {
    uint32_t gen; /* UINT32_MAX for a current log whose header cannot be read */
    int is_current;
    char path[4200];
} chk_log_file;

int chk_list_logs(om_vfs *vfs, const char *dir, const char *base, chk_log_file **out, size_t *n);

#endif
