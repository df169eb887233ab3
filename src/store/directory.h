/* The directory (storage configuration): which databases exist on which server, their paths,
 * log base names and flags. The Active Directory analog of ARCHITECTURE.md.
 *
 * The directory is a JSON document behind a backend of two calls (load, save). The file
 * backend keeps it in $OMBRA_HOME/directory.json and replaces it durably on every change
 * (write temp, fsync, rename, fsync the folder), so after a crash it is the old or the new
 * document, never a mix; an etcd backend for several hosts can follow with the same calls.
 *
 * Not thread-safe: the store serialises changes under its own lock. */
#ifndef OM_STORE_DIRECTORY_H
#define OM_STORE_DIRECTORY_H

#include <jansson.h>
#include <stddef.h>

#include "base/uuid.h"

#define STORE_MAX_NAME 64

typedef struct store_dbent {
    char name[STORE_MAX_NAME + 1];
    om_uuid id;
    char server[128];
    char edb[4096], logs[4096];
    char base[4];
    int circular, allow_restore, recovery, mounted;
} store_dbent;

typedef struct store_dir_backend {
    /* *doc is NULL when nothing was saved yet. */
    int (*load)(void *arg, json_t **doc);
    int (*save)(void *arg, json_t *doc);
    void *arg;
} store_dir_backend;

typedef struct store_dir {
    store_dir_backend be;
    store_dbent *ents;
    size_t n, cap;
} store_dir;

/* The file backend over path (arg is a strdup'd path, freed by store_dir_close). */
int store_dir_open_file(const char *path, store_dir **out);
void store_dir_close(store_dir *d);
/* NULL when there is no such database. */
store_dbent *store_dir_find(store_dir *d, const char *name);
/* Adds (or replaces by name) and saves. On a failed save the directory is unchanged. */
int store_dir_put(store_dir *d, const store_dbent *e);
int store_dir_remove(store_dir *d, const char *name);

/* 1 when two paths name one place: the same file or folder once links on the way are
 * resolved, or the same text where neither exists yet. */
int store_same_place(const char *a, const char *b);
/* InvalidPath when the name of the database file edb is one a log folder's own files take
 * (*.log, *.chk, *.pgj, *.jrs, *.env: a log roll or a truncation could meet it); else 0. */
int store_check_edb_name(const char *edb, const char *what);
/* Whether a database file at edb with its logs (base) in logs would share a place with a
 * database of the directory other than skip: the same .edb, the same log stream, an .edb
 * in another's log folder, or a log folder where another's .edb is (a log roll or a
 * truncation there would meet a file it did not write). Returns the first such database and
 * says which in why; NULL when none. */
const store_dbent *store_dir_place_taken(const store_dir *d, const char *edb, const char *logs,
                                         const char *base, const store_dbent *skip, char *why,
                                         size_t n);

#endif
