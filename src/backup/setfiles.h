/* The names of the files in a backup set, checked once for everyone who reads a set document
 * (restore, verify): a set file is data from storage that anyone with write access to the
 * repository can craft, and its names become paths on the server a restore runs on.
 *
 * A set holds exactly these names (ARCHITECTURE.md, "Backup repository"; backup/job.c writes
 * them):
 *   edb/<file>.edb            the database file (full and copy sets)
 *   logs/<base>XXXXXXXX.log   one finished log generation: 8 upper-case hex digits, not 0
 *   logs/<base>.chk           the checkpoint file
 * <base> is the set's three-character log base name (letters and digits). <file> is one path
 * component of letters, digits, '-', '_' and '.', not starting with '.', at most 200 bytes:
 * no '/', no "..", nothing a restore could be steered outside its folders with. The name only
 * says what a file is: a restore decides where it goes from the target, never from the name. */
#ifndef OM_BACKUP_SETFILES_H
#define OM_BACKUP_SETFILES_H

#include <stdint.h>

typedef enum bk_file_kind { BK_FILE_EDB = 1, BK_FILE_LOG = 2, BK_FILE_CHK = 3 } bk_file_kind;

/* 1 when base is a log base name (three letters or digits). */
int bk_base_ok(const char *base);

/* What the set file called name is (a bk_file_kind), with *gen its generation for a log (0
 * otherwise); 0 and a detail (InvalidName: "... is not a name a backup set holds") for
 * anything else. base: the set's log base name. */
int bk_set_file_kind(const char *name, const char *base, uint32_t *gen);

#endif
