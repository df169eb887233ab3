/* One database's .edb under a shadow copy, for a reader that is not a backup: seeding a passive
 * copy (repl/). A copy-type session of ombra-vssd that selects the store writer's component of
 * the database, makes the shadow copy (the held provider by default: writes are held for
 * milliseconds, mail goes on), and is aborted at the end: a seed is not a backup, so no
 * header slot is written and no log is truncated.
 *
 *   bk_shadow_db_take("db1", NULL, &s)   -> s->edb: the .edb's path inside the shadow copy,
 *                                           s->lo..s->hi: the generations it needs (the reader
 *                                           gets them elsewhere: the logs may be on another
 *                                           volume than the .edb)
 *   (read s->edb)
 *   bk_shadow_db_check(s)                -> 0 when the database stayed mounted throughout: what
 *                                           was read is one moment of it
 *   bk_shadow_db_release(s)
 *
 * The held provider's shadow is the database's own file while its page writes are held: a
 * dismount in between (a failover, the store stopping) releases the hold and writes pages
 * under the reader, which then holds an older header over newer pages. The check tells.
 */
#ifndef OM_BACKUP_SHADOW_H
#define OM_BACKUP_SHADOW_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The path of original file p inside the shadow copies of a snapshot set (the "shadows" array
 * of vss_req_do_snapshot_set: the shadow whose original covers p the closest): FileNotFound
 * when none covers it. */
int bk_shadow_path(json_t *shadows, const char *p, char *out, size_t n);

typedef struct bk_shadow_db {
    char edb[4400];  /* the .edb inside the shadow copy */
    uint32_t lo, hi; /* the generations the copy needs (the writer's log range) */
    void *req;       /* the session (vss_req) */
    char name[256];
    char mount_id[40]; /* the store's mount of the database the shadow copy was made of */
} bk_shadow_db;

/* provider NULL: "held". The database must be mounted in the local store. */
int bk_shadow_db_take(const char *name, const char *provider, bk_shadow_db **out);
/* 0 while the database is still mounted by the mount the shadow copy was made of (the hold
 * never released); else DatabaseUnavailable naming what came between. */
int bk_shadow_db_check(const bk_shadow_db *s);
/* Ends the session (an abort: nothing recorded) and frees s; NULL is a no-op. */
void bk_shadow_db_release(bk_shadow_db *s);

#endif
