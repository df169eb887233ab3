/* What the store service (service.c) shares with its writer (writer.c): the registry of mounted
 * databases and the directory, under the store's lock.
 *
 * Lock order: store.mu, then the writer's own lock. The writer never calls into the service
 * while holding its lock; the service calls store_writer_db_closing() with store.mu held. */
#ifndef OM_STORE_SERVICE_INTERNAL_H
#define OM_STORE_SERVICE_INTERNAL_H

#include <pthread.h>
#include <sys/types.h>

#include "engine/engine.h"
#include "store/directory.h"
#include "store/mail.h"
#include "store/service.h"

typedef struct store_writer store_writer;

typedef struct mounted {
    char name[STORE_MAX_NAME + 1];
    eng_db *db;
    mail_store *mail;
    int refs, closing, recovery;
} mounted;

typedef struct store {
    const store_opts *o;
    store_dir *dir;
    pthread_mutex_t mu; /* registry and directory */
    pthread_cond_t cond;
    mounted *m[STORE_MAX_MOUNTED + 1];
    int nm;
    gid_t group;
    int listen_fd;
    int stopping, active; /* connections being served */
    store_writer *writer;
} store;

/* The mounted database of that name (NULL: none). Under mu. */
mounted *store_find_mounted(store *s, const char *name);
/* A reference on a mounted database, for one request (acquire takes and releases mu). */
int store_acquire(store *s, const char *name, mounted **out);
void store_release(store *s, mounted *m);
/* Opens a database of the directory and registers it (create: a new one). Under mu. */
int store_mount_locked(store *s, const store_dbent *e, int create);
/* Dismounts (Clean Shutdown); releases mu while waiting for users. Under mu. */
int store_dismount_locked(store *s, mounted *m);
/* The engine options of a directory entry (the daemon's cache and checkpoint settings). */
eng_opts store_ent_opts(const store_dbent *e);

#endif
