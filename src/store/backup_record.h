/* What a backup leaves in a database (spec §5, §8): whether a backup of a type may be taken at
 * all, and its record in the header (the slot update is a log record, so every passive copy
 * gets it by replay). One place for both writers' backups: the store writer's own (the active
 * copy backed up on this server) and a passive copy's, recorded here by the active at the
 * replica writer's request (db.backup_prepare, db.record_backup, db.truncate_logs in
 * service.c; docs/design.md, "Backups from passive copies"). */
#ifndef OM_STORE_BACKUP_RECORD_H
#define OM_STORE_BACKUP_RECORD_H

#include <jansson.h>

#include "engine/engine.h"

/* 1 when type is one of full, copy, incremental, differential; else the error saying so. */
int store_backup_type_ok(const char *type);
int store_backup_type_error(const char *type);

/* The header slot a backup of type writes. */
enum eng_bkslot_id store_backup_slot(const char *type);
enum eng_bk_kind store_backup_kind(const char *type);

/* 0 when a backup of type may be taken of database name (with circular logging or not, its
 * header as in): incremental and differential need every log (-526) and a full backup (-560);
 * a differential after an incremental since that full would miss the logs the incremental let
 * go (-546). The error's detail is one line with a HINT. */
int store_backup_allowed(const char *name, int circular, const eng_info *in, const char *type);

/* Records a backup of type in db's header, as one log record (eng_record_backup), and logs one
 * line naming who took it (by: "" for this server's own writer, else "the copy on server X").
 * A backup older (by its mark time) than the one the slot holds was overtaken while it ran: it
 * is refused (-546), so the slot never goes back in time. */
int store_backup_record(eng_db *db, const char *name, const char *type, const eng_bkslot *s,
                        const char *by);

/* The generation below which a recorded full or incremental backup that held generations up to
 * last, taken with the checkpoint at generation ckpt, lets logs go: min(ckpt, last) (spec §5);
 * 0 for copy and differential, which truncate nothing. */
uint32_t store_backup_truncates_below(const char *type, uint32_t ckpt, uint32_t last);

/* What a full backup's metadata says of the change map (docs/design.md, "Change tracking and
 * synthetic fulls"), called after the freeze: {"epoch": this freeze's epoch (16 hex digits),
 * "since": {epoch: "first:count,..." the data pages written since that earlier epoch},
 * "started_again": why the map was not trusted at this mount (when it was not)} when the map has
 * epochs; {"untrusted": why} when it does not. NULL when out of memory. */
json_t *store_backup_changemap(eng_db *db);

#endif
