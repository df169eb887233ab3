/* A passive copy's files across a change of active (issue 19; docs/design.md "Resync after a
 * change of active"): the pieces of the copier (copier.h) that act on files only, so each can
 * be tested alone.
 *
 * The copy follows one epoch of active/<db id> ({"server", "epoch", "since_gen", ...}): the
 * epoch is in <work>/epoch (<work> = $OMBRA_HOME/copies/<db id>, the copy's work folder). When
 * the DAG moves to a greater epoch, every generation the copy holds from since_gen on came from
 * the deposed active and is not the new active's history: it is set aside (never merged, never
 * deleted by us), and a database that already holds changes of such a generation cannot follow
 * the new active at all: it is reseeded.
 *
 * Activation turns the streamed part of the open generation (block mode's <base>.stream) into
 * the log folder's <base>.log, so the mount's soft recovery replays it. */
#ifndef OM_REPL_RESYNC_H
#define OM_REPL_RESYNC_H

#include <stddef.h>
#include <stdint.h>

#include "base/vfs.h"

/* The epoch the copy follows: *epoch 0 when <work>/epoch is absent; InvalidParameter naming
 * the file when it holds anything but a number. */
int rp_epoch_read(const char *work, uint32_t *epoch);
/* Writes it durably (temp, sync, rename, sync the folder). */
int rp_epoch_write(const char *work, uint32_t epoch);

/* The engine's lock on database file edb, taken from here (*held, om_close lets it go; NULL
 * when there is no such file): DatabaseInUse naming edb and what (the folder the caller would
 * change) while another open file holds it, a store that still has the database mounted. */
int rp_edb_hold(const char *edb, const char *what, om_file **held);

/* Sets aside into <work>/divergent/<epoch>-<UTC time>/: every numbered generation >= since_gen
 * of base in logs, <base>.log and <base>tmp.log of logs, and <work>/<base>.stream. Moved by a
 * rename (copied then removed when logs is on another filesystem), both folders synced. Names
 * only, through handles that refuse a link; anything else in logs stays. *moved: how many files;
 * where (may be NULL): the folder they went to ("" when none went). A crash half-way leaves each
 * file in one place or the other (whole): calling it again moves the rest.
 * edb (may be NULL): the copy's database file. While another open file holds its lock (the
 * engine's: a store that still has the database mounted, not having seen the change of active
 * yet), nothing is moved: DatabaseInUse; the lock is held while the files move, so nobody mounts
 * it meanwhile. */
int rp_set_aside(const char *work, const char *logs, const char *base, const char *edb,
                 uint32_t since_gen, uint32_t epoch, uint32_t *moved, char *where, size_t wn);

/* Whether database edb already holds changes of generation since_gen or a later one, from its
 * header: Clean Shutdown past (since_gen, 0) (its consistent position), Dirty with Log Required
 * max at since_gen or later (a checkpoint or a replay reached there: its pages may hold them).
 * *past 0 or 1; *held (may be NULL): the generation the header says it reached. FileNotFound
 * when there is no edb; the header's errors. */
int rp_edb_past(const char *edb, uint32_t since_gen, int *past, uint32_t *held);

/* Activation: <work>/<base>.stream, the first n bytes of generation gen as streamed (whole slots,
 * header first), written as <logs>/<base>.log zero-filled to the size of a generation, synced,
 * the folder synced. Refused (InvalidParameter, nothing written) when the stream file is shorter
 * than n, n is not whole slots or shorter than the header, its header is not generation gen's,
 * or logs holds a <base>.log already. */
int rp_stream_promote(const char *work, const char *logs, const char *base, uint32_t gen,
                      uint64_t n);

#endif
