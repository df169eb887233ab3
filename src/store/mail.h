/* The mailbox schema: mailboxes, folders and messages in the tables of one database.
 *
 * This is what ombra-store calls (and `ombra mail ...` through it). A mailbox has a name and
 * folders; a message lives in one folder of one mailbox and has an id, a received time, a
 * size, a subject and a body. Message ids are per mailbox, start at 1, increase with every
 * delivery and are never reused, even after a delete.
 *
 * Contract:
 * - store_mail_deliver commits one message per transaction and returns its id only once the
 *   transaction is durable (MAIL_LAZY: once it is committed; the next durable commit, or
 *   store_mail_flush, makes it durable). A delivery is atomic: after a crash a message is either
 *   whole (header and body) or absent, and its mailbox and folder exist with it.
 * - Every read call (list, get, digest) runs in one committed view of its own, so it sees a
 *   consistent state and never a half-applied change. No call holds a view while it commits.
 * - A mail_store may be used by several threads at once; the engine runs one transaction at a
 *   time and lets durable commits share log fsyncs (group commit).
 * - Names (mailbox, folder): 1..MAIL_MAX_NAME bytes, no control characters, compared as bytes
 *   (so "Inbox" and "inbox" are two folders). Subjects: 0..MAIL_MAX_SUBJECT bytes, no control
 *   characters except tab. Bodies: 0..MAIL_MAX_BODY bytes of anything.
 *
 * Errors (the detail names the mailbox, folder, id or value): RecordNotFound for an unknown
 * mailbox, folder (list) or message; InvalidParameter for an empty, oversized or malformed
 * name, subject or body; InvalidDatabase when the database holds tables that are not this
 * schema, or this schema in another version; errors of the engine otherwise. */
#ifndef OM_STORE_MAIL_H
#define OM_STORE_MAIL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

#define MAIL_MAX_NAME       255u
#define MAIL_MAX_SUBJECT    1024u
#define MAIL_MAX_BODY       (1ull << 30) /* 1 GiB */
#define MAIL_DEFAULT_FOLDER "Inbox"
#define MAIL_SCHEMA_VERSION 1u

typedef struct mail_store mail_store;

/* Opens the mail schema of db. A database without tables is formatted (eng_catalog_create)
 * and given the schema in one transaction; a database with tables must hold this schema in
 * this version. db stays the caller's: close the store before the database. */
int store_mail_open(eng_db *db, mail_store **out);
void store_mail_close(mail_store *st);

/* ---- writing ---- */

enum { MAIL_LAZY = 1 }; /* commit without waiting for the log (bulk loads) */

typedef struct mail_new {
    const char *mailbox;
    const char *folder;  /* NULL: MAIL_DEFAULT_FOLDER */
    const char *subject; /* NULL: "" */
    const void *body;
    uint64_t size;
    uint64_t received; /* ns since the epoch; 0: now */
} mail_new;

/* Delivers one message in its own transaction, creating the mailbox and the folder on first
 * use; *id is the new message's id. */
int store_mail_deliver(mail_store *st, const mail_new *m, unsigned flags, uint64_t *id);
/* Deletes message id of mailbox. */
int store_mail_delete(mail_store *st, const char *mailbox, uint64_t id, unsigned flags);
/* Moves message id to folder (created if the mailbox has no such folder yet). Moving to the
 * folder it is in succeeds and changes nothing. */
int store_mail_move(mail_store *st, const char *mailbox, uint64_t id, const char *folder,
                    unsigned flags);
/* Makes every lazy commit so far durable. */
int store_mail_flush(mail_store *st);

/* ---- reading ---- */

typedef struct mail_header {
    uint64_t id;
    const char *folder; /* owned by the listing or message */
    uint64_t received;  /* ns since the epoch */
    uint64_t size;      /* body bytes */
    const char *subject;
} mail_header;

typedef struct mail_listing {
    mail_header *msgs; /* in id order */
    size_t n;
    char *strings_; /* private: the folder names and subjects */
} mail_listing;

/* The messages of mailbox (only those of folder, unless folder is NULL) with an id >= from_id,
 * at most max of them (0: all). Paging: the next call starts at the last id + 1. */
int store_mail_list(mail_store *st, const char *mailbox, const char *folder, uint64_t from_id,
                    size_t max, mail_listing *out);
void store_mail_listing_free(mail_listing *l);

typedef struct mail_message {
    mail_header h;
    void *body; /* h.size bytes, malloc'd (NULL for an empty body) */
    char *strings_;
} mail_message;

int store_mail_get(mail_store *st, const char *mailbox, uint64_t id, mail_message *out);
void store_mail_message_free(mail_message *m);

/* One XXH3-128 hash (32 hex characters and a NUL) over all contents in a canonical order:
 * mailboxes by name, in each its folders by name, in each folder its messages by id, every
 * field prefixed by its length. Two databases have the same digest exactly when they hold the
 * same mailboxes, folders and messages (id, received time, size, subject, body); how they got
 * there (order of deliveries, deleted messages, the next id to give) does not count.
 * One committed state, read in views of about half the cache's size of bodies each (64 MiB at
 * most), so commits wait for one view at a time and the cache stays near its size: a commit
 * between two views makes the digest start again, and after three such starts it holds commits
 * back until it is done (the cache still stays near its size). */
int store_mail_digest(mail_store *st, char out[33]);
/* The same with views of about view_bytes of bodies (0: one view); *how (optional): the views it
 * took, its passes, whether the last held commits back. Tests. */
typedef struct mail_digest_how {
    uint64_t views, passes;
    int held;
} mail_digest_how;
int store_mail_digest_views(mail_store *st, uint64_t view_bytes, char out[33],
                            mail_digest_how *how);

/* ---- loading (demos, benchmarks) ---- */

/* Message i of a load, a pure function of (seed, mailboxes, size, i): mailbox "user%05u"
 * chosen at random, folder "Inbox" (one in ten "Archive"), a subject naming i, a received time
 * i seconds after a fixed date, and size random bytes. body must hold size bytes; the names
 * point into buf. */
typedef struct mail_load_buf {
    char mailbox[32], folder[16], subject[80];
} mail_load_buf;
void store_mail_load_message(uint64_t seed, uint32_t mailboxes, uint64_t size, uint64_t i,
                             mail_load_buf *buf, void *body, mail_new *out);

typedef void (*mail_progress_fn)(void *arg, uint64_t done, uint64_t total);
/* Delivers messages 0..messages-1 of store_mail_load_message, in order, so the same arguments give
 * the same mail (and store_mail_digest) whatever the database. Not lazy: one durable transaction
 * per message, as store_mail_deliver. lazy (bulk loads): up to 64 messages (or 4 MiB of bodies) per
 * transaction, committed without waiting for the log, which a background thread writes out
 * meanwhile; one flush at the end, so everything is durable when it returns. A crash during a
 * lazy load keeps a prefix of the messages, whole transactions of them. progress, when not
 * NULL, is called every 1000 messages and at the end. */
int store_mail_load(mail_store *st, uint32_t mailboxes, uint64_t messages, uint64_t size,
                    uint64_t seed, int lazy, mail_progress_fn progress, void *arg);

#endif
