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
    uint8_t *stream;       /* the record stream (malloc'd) */
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
uint64_t eng_log_end_lsn(eng_log *l);
/* The LSN up to which the log is durable. */
uint64_t eng_log_durable_lsn(eng_log *l);
/* The position of a flushed LSN. */
eng_lgpos eng_log_lgpos(eng_log *l, uint64_t lsn);
uint32_t eng_log_gen(eng_log *l);
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
 * the current log (E00.log), 0 when there is none. InvalidLogSequence when E00.log holds a
 * generation that is already finished. */
typedef struct eng_stream {
    om_vfs *vfs;
    char dir[4096], base[4];
    uint32_t *gens, n;
    uint32_t cur_gen;
} eng_stream;
int eng_stream_list(om_vfs *v, const char *dir, const char *base, eng_stream *s);
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

#endif
