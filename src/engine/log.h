/* The log stream: reading generations back (eng_gen_read) and appending to the current one
 * (eng_log).
 *
 * Writer invariants:
 * - Records are appended to an in-memory buffer under the log mutex and get an LSN (the byte
 *   count of the stream since the log was opened). A record never straddles two generations.
 * - One thread at a time is the flusher (group commit): it takes everything appended so far,
 *   writes it into fresh slots of E00.log (never a slot that already holds data), syncs, and
 *   wakes every committer whose LSN is now durable. Committers that arrive during a flush wait
 *   for the next one, which serves them all with one fsync.
 * - Rolling a generation: sync the current file; write the next generation's header into the
 *   prepared E00tmp.log and sync it; rename E00.log to E00XXXXXXXX.log and E00tmp.log to
 *   E00.log; sync the directory; prepare a new zero-filled E00tmp.log. A crash anywhere in
 *   that sequence leaves either E00.log or the numbered file as the newest generation.
 * - When E00tmp.log cannot be created for lack of space, a reserve log (E00res0000N.jrs) is
 *   renamed in its place and the log reports disk-full: the database refuses new transactions
 *   until eng_log_retry_space() succeeds, while the transactions already committing finish.
 * - A failed write, sync or roll is sticky (fatal): every later call fails.
 *
 * Generation reader: a slot whose segment is missing, stale or torn ends the stream. If a
 * good segment follows that belongs to the same flush (its flush_first is at or before the
 * gap), the last flush was torn by a crash and is dropped whole; if it belongs to a later
 * flush, data that was durable is damaged: LogFileCorrupt. */
#ifndef OM_ENGINE_LOG_H
#define OM_ENGINE_LOG_H

#include "engine/format.h"

typedef struct eng_genread {
    eng_loghdr hdr;
    uint8_t *stream;       /* the record stream (malloc'd, or the caller's buffer when lent) */
    int lent;              /* stream is the buffer given to eng_gen_read_into */
    uint32_t len;          /* bytes of it that are durable */
    uint16_t end_slot;     /* first slot past the data */
    uint16_t torn_slot;    /* a torn flush began here (0 = none) */
    uint16_t segments;     /* good segments read */
    uint16_t damaged_slot; /* set with LogFileCorrupt: the damaged slot */
} eng_genread;

/* Reads a whole generation file. Errors: FileNotFound, LogFileSizeMismatch, LogFileCorrupt
 * (bad header, or damage inside durable data: g->damaged_slot says where). On LogFileCorrupt
 * from a damaged segment, g still holds the header and the stream up to the damage. */
int eng_gen_read(om_vfs *v, const char *path, eng_genread *g);
/* The same into buf (ENG_LOG_SIZE bytes, the caller's, reused from one generation to the next:
 * replay reads hundreds of generations without allocating and faulting in fresh memory for
 * each); NULL allocates. g->stream then points into buf. */
int eng_gen_read_into(om_vfs *v, const char *path, eng_genread *g, uint8_t *buf);
/* Frees the stream unless it was lent. */
void eng_gen_free(eng_genread *g);

typedef struct eng_log eng_log;

typedef struct eng_log_cfg {
    om_vfs *vfs;
    const char *dir, *base;
    eng_sig log_sig, db_sig;
    om_uuid db_id;
    uint32_t flags; /* ENG_DBF_CIRCULAR */
    int no_reserve; /* do not keep reserve logs */
} eng_log_cfg;

/* Starts generation `gen` as E00.log. When rename_current is set, the existing E00.log (of
 * generation gen - 1) is renamed to its numbered name first. prev_created/prev_end describe
 * generation gen - 1 (0 for the first). */
int eng_log_start(const eng_log_cfg *cfg, uint32_t gen, int rename_current, uint64_t prev_created,
                  uint32_t prev_end, eng_lgpos checkpoint, eng_log **out);
/* Appends whole records; *end_lsn is the LSN just past them. */
int eng_log_append(eng_log *l, const uint8_t *recs, uint32_t len, uint64_t *end_lsn);
/* Returns once everything up to lsn is durable (group commit). */
int eng_log_flush_to(eng_log *l, uint64_t lsn);
/* Flushes everything and starts the next generation. */
int eng_log_roll(eng_log *l);
/* Flushes everything and closes the current generation without starting another: E00.log is
 * renamed to its numbered name and the folder synced (*gen: that generation). Appends are
 * refused afterwards; the caller frees the log. The next eng_log_start (the next mount) starts
 * the generation after it, with rename_current 0. A failure leaves E00.log where it was. */
int eng_log_finish(eng_log *l, uint32_t *gen);
uint64_t eng_log_end_lsn(eng_log *l);
/* The LSN up to which the log is durable. */
uint64_t eng_log_durable_lsn(eng_log *l);
/* The position of a flushed LSN. */
eng_lgpos eng_log_lgpos(eng_log *l, uint64_t lsn);
uint32_t eng_log_gen(eng_log *l);
/* The bytes of the current generation's file written so far: slots are never rewritten, so
 * they stay as they are, and the rest is still zero-filled. Only with the log quiet (writes
 * held: eng_backup_hold_writes), since the flusher owns the count. */
uint32_t eng_log_written(eng_log *l);
/* The checkpoint written into the headers of generations started from now on. */
void eng_log_set_checkpoint(eng_log *l, eng_lgpos c);
int eng_log_fatal(eng_log *l);
int eng_log_disk_full(eng_log *l);
/* Tries to recreate E00tmp.log and the reserve logs; clears disk-full when it can. */
int eng_log_retry_space(eng_log *l);
void eng_log_get_stats(eng_log *l, uint64_t *flushes, uint64_t *bytes, uint64_t *slots);
/* Closes the files; writes nothing. */
void eng_log_free(eng_log *l);

/* Creates the reserve logs that are missing. */
int eng_log_make_reserves(om_vfs *v, const char *dir, const char *base);

/* ---- log folders (logdir.c) ---- */

/* The numbered generations of base in dir, in no particular order (malloc'd; none when dir
 * does not exist). */
int eng_log_list_gens(om_vfs *v, const char *dir, const char *base, uint32_t **gens, uint32_t *n);

/* The generations of one log stream in a folder: numbered ones sorted, and the generation in
 * the current log (E00.log), 0 when there is none. The one lister of log folders: recovery,
 * hard recovery, the check library and dbutil read a folder through it. */
typedef struct eng_stream {
    om_vfs *vfs;
    char dir[4096], base[4];
    uint32_t *gens, n;
    uint32_t cur_gen;      /* E00.log's generation when it ends the stream, else 0 */
    int cur_present;       /* E00.log exists */
    uint32_t cur_holds;    /* the generation its header holds (0: unreadable) */
    int cur_err;           /* E00.log is there but does not end the stream: why (scan only) */
    char cur_detail[4400]; /* ... and the error's detail */
} eng_stream;
/* Lists the folder. InvalidLogSequence when E00.log holds a generation that is already
 * finished; the error of reading its header when it cannot be read. */
int eng_stream_list(om_vfs *v, const char *dir, const char *base, eng_stream *s);
/* The same, but a current log that does not end the stream is only described (cur_present,
 * cur_holds, cur_err, cur_detail; cur_gen 0): for callers that report every file and go on.
 * Fails only when the folder cannot be listed. */
int eng_stream_scan(om_vfs *v, const char *dir, const char *base, eng_stream *s);
void eng_stream_free(eng_stream *s);
uint32_t eng_stream_first(const eng_stream *s);
uint32_t eng_stream_last(const eng_stream *s);
int eng_stream_has(const eng_stream *s, uint32_t g);
/* The path of generation g: E00.log when it is the current one, else its numbered name. */
void eng_stream_path(const eng_stream *s, uint32_t g, char *p, size_t n);

/* Deletes the finished generations of base in dir below `below` and syncs the folder; *deleted
 * (may be NULL) counts them. With log_sig, only files whose header says they are that
 * generation of that stream are deleted (any other file at such a name is left, with a
 * warning); NULL deletes by name (a folder being replaced by a restore). */
int eng_log_delete_below(om_vfs *v, const char *dir, const char *base, uint32_t below,
                         const eng_sig *log_sig, uint32_t *deleted);

/* ---- the log chain (logchain.c) ----
 *
 * Does this log file continue this stream of this database? Every caller that reads
 * generations in order (soft and hard recovery, the check library, dbutil) asks these
 * functions and keeps only its policy: recovery fails or stops rolling forward, the check
 * library reports and goes on, dbutil prints. So the same file gets the same error from each.
 *
 * The checks, in this order; the first that fails is the answer, one error per cause, its
 * detail naming the file:
 *   1. ENG_CHAIN_MISSING       the file is not there                        -528 MissingLogFile
 *      ENG_CHAIN_UNREADABLE    it cannot be read (the I/O error as it came)
 *   2. ENG_CHAIN_SIZE          it is not 1 MiB: cut short or grown          -541
 * LogFileSizeMismatch
 *   3. ENG_CHAIN_HEADER        its header is damaged, or of another version -501 LogFileCorrupt,
 *                                                                            -514 BadLogVersion
 *   4. ENG_CHAIN_OTHER_DB      written for another database                 -539
 * DatabaseLogSetMismatch
 *   5. ENG_CHAIN_OTHER_STREAM  of this database, but another log stream     -530 BadLogSignature
 *                              (logs from before a restore, another copy's)
 *   6. ENG_CHAIN_NAME          holds another generation than its name says  -513
 * LogGenerationMismatch
 *   7. ENG_CHAIN_SEQUENCE      does not follow the previous generation (its -515 InvalidLogSequence
 *                              chain names another creation time), or the
 *                              current log holds another generation than expected
 *   8. ENG_CHAIN_PREV_CUT      says the previous generation ended later     -501 LogFileCorrupt
 *                              than the caller read it: the PREVIOUS file is  (naming the previous
 *                              damaged where it looked like its end           file)
 *   9. ENG_CHAIN_DAMAGED       damage inside its durable data               -501 LogFileCorrupt
 * Who the file is comes before what it holds: a file of another database that is also out of
 * sequence or damaged is -539, since nothing else about it matters to this chain. A gap in the
 * stream (a generation missing between two present ones, -528; the logs ending before what is
 * needed, -543) is the caller's policy over the stream lister (eng_stream_*): these functions
 * judge one file. */

typedef enum eng_chain_cause {
    ENG_CHAIN_OK = 0,
    ENG_CHAIN_MISSING,
    ENG_CHAIN_UNREADABLE,
    ENG_CHAIN_SIZE,
    ENG_CHAIN_HEADER,
    ENG_CHAIN_OTHER_DB,
    ENG_CHAIN_OTHER_STREAM,
    ENG_CHAIN_NAME,
    ENG_CHAIN_SEQUENCE,
    ENG_CHAIN_PREV_CUT,
    ENG_CHAIN_DAMAGED,
} eng_chain_cause;

/* What the caller expects of the next file it reads. */
typedef struct eng_chain_want {
    uint32_t gen;               /* the generation expected */
    int named;                  /* the file's name says gen (a numbered file; E00.log does not) */
    int check_db, check_stream; /* compare db_sig, log_sig (else any database, any stream) */
    eng_sig db_sig, log_sig;
    const char *sig_from; /* where the signatures come from, for details: "/d/mail.edb" */
    /* The previous generation, when the caller read it (have_prev): gen - 1, created at
     * prev_created, prev_len bytes of record stream, at prev_path. */
    int have_prev;
    uint64_t prev_created;
    uint32_t prev_len;
    char prev_path[4200];
} eng_chain_want;

/* The expectation of generation gen of the stream of a database whose header is h (sig_from:
 * the database's path), with no previous generation read yet. */
void eng_chain_of_db(eng_chain_want *w, const eng_dbhdr *h, const char *sig_from, uint32_t gen);
/* The expectation for a folder read without its database (dbutil logs, a log-only check): the
 * database and stream of its newest readable generation. Returns 0 when it has none (then w
 * expects any database and stream). */
int eng_chain_of_stream(eng_chain_want *w, const eng_stream *st);
/* Moves w on to the generation after the one just read from path (g: its header and length). */
void eng_chain_follow(eng_chain_want *w, const char *path, const eng_genread *g);
/* Forgets the previous generation (the caller skipped one: a gap, or a file it did not accept). */
void eng_chain_forget_prev(eng_chain_want *w);

/* Checks a header read from path against w (checks 4 to 8). Returns 0 or the error of the first
 * check that fails; *why (may be NULL) gets its cause. */
int eng_loghdr_continues(const eng_chain_want *w, const char *path, const eng_loghdr *h,
                         eng_chain_cause *why);
/* Reads generation file path whole and checks it against w (checks 1 to 9). On 0, g holds the
 * generation; on ENG_CHAIN_DAMAGED, g holds its header and the stream up to the damage
 * (g->damaged_slot says where); on a cause from 4 to 8, g->hdr holds the header. The caller
 * calls eng_gen_free(g) whatever the result. */
int eng_gen_continues(om_vfs *v, const char *path, const eng_chain_want *w, eng_genread *g,
                      eng_chain_cause *why);
/* The same, reading into buf (eng_gen_read_into). */
int eng_gen_continues_into(om_vfs *v, const char *path, const eng_chain_want *w, eng_genread *g,
                           eng_chain_cause *why, uint8_t *buf);
/* Before a generation that has a successor is used (replayed): w has just been moved past it
 * (eng_chain_follow); reads the successor's header at next_path and returns ENG_CHAIN_PREV_CUT's
 * error when it says the generation ended later than it was read. Any other cause is left for
 * when the successor itself is read, and 0 returned. */
int eng_chain_check_ahead(om_vfs *v, const eng_chain_want *w, const char *next_path,
                          int next_named);
/* The cause's name ("another database", ...), for reports. */
const char *eng_chain_cause_name(eng_chain_cause c);

#endif
