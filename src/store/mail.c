/* The mailbox schema on the engine's tables.
 *
 * Tables (keys are big-endian so that memcmp order is numeric order; values are
 * little-endian fields, base/bytes.h):
 *
 *   mail.meta       "schema"   -> "ombra-mail" u32 version
 *                   "counters" -> u32 next mailbox id, u64 body sequence limit
 *   mail.mailboxes  name       -> u32 mailbox id, u64 next message id, u32 next folder id
 *   mail.folders    be32 mailbox id, name -> u32 folder id
 *   mail.headers    be32 mailbox id, be64 message id
 *                              -> u64 body seq, u32 folder id, u64 received, u64 size,
 *                                 u16 subject length, subject
 *   mail.bodies     be64 body seq -> the body bytes
 *
 * Why headers and bodies are apart: a body is keyed by a database-wide sequence number that
 * only grows, so deliveries append to the right edge of mail.bodies whatever mailbox they
 * go to: one hot leaf, filled to the end (the B+tree keeps a full last leaf whole when it
 * appends), instead of a random leaf among tens of thousands of 8 KiB-record leaves (a split
 * rewriting two pages every other delivery, leaves two-thirds full on average, and a dirty set
 * spread over the whole file for the checkpoint to write). A header is small (30 bytes plus
 * the subject), so listing a mailbox reads only headers, and a move rewrites only a header. An
 * 8 KiB body stays inline in its record (8 + 8 + 8,192 bytes, under ENG_MAX_INLINE); larger
 * ones become long values. A 32 KiB page holds three 8 KiB records, not four (120 bytes short),
 * so body pages are three-quarters full: the price of keeping a body in one record.
 *
 * Pages a delivery changes, in the steady state: the leaf of mail.mailboxes holding the
 * mailbox (next message id), a leaf of mail.headers (the new header) and the right-most
 * leaf of mail.bodies (the body). A third of the time the body leaf is full, so a new leaf is
 * allocated (the meta page counts it) and its parent gets a separator; rarely a header leaf
 * splits. Measured (bench_mail, 8 KiB bodies): 3.7 pages and 8.8 KiB of log per delivery. The
 * body sequence numbers are reserved in mail.meta SEQ_BATCH at a time, so mail.meta changes
 * once per SEQ_BATCH deliveries, and on the first delivery to a mailbox (its id).
 *
 * Concurrency: the engine runs one transaction at a time; everything a delivery reads and
 * writes goes through its transaction's view. The only state kept in memory is the reserved
 * range of sequence numbers (under `mu`); it is forgotten whenever a transaction fails, so the
 * next one reads the committed counter again (a range may be skipped, never reused). */
#include "store/mail.h"
#include "store/mail_digest.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/time.h"
#include "engine/table.h"

#define T_META      "mail.meta"
#define T_MAILBOXES "mail.mailboxes"
#define T_FOLDERS   "mail.folders"
#define T_HEADERS   "mail.headers"
#define T_BODIES    "mail.bodies"

#define SCHEMA_MAGIC     "ombra-mail"
#define SCHEMA_MAGIC_LEN 10u
#define SEQ_BATCH        1024u

#define MBX_REC_LEN  16u
#define HDR_FIXED    30u /* header record without the subject */
#define HDR_MAX      (HDR_FIXED + MAIL_MAX_SUBJECT)
#define HDR_KEY_LEN  12u
#define FLD_KEY_MAX  (4u + MAIL_MAX_NAME)
#define COUNTERS_LEN 12u

struct mail_store {
    eng_db *db;
    eng_tbl meta, mailboxes, folders, headers, bodies;
    pthread_mutex_t mu;
    uint64_t seq_next, seq_limit; /* reserved body sequence numbers [next, limit) */
};

typedef struct mbx_rec {
    uint32_t id;
    uint64_t next_msg;
    uint32_t next_folder;
} mbx_rec;

typedef struct hdr_rec {
    uint64_t seq;
    uint32_t folder;
    uint64_t received, size;
    uint16_t subject_len;
    char subject[MAIL_MAX_SUBJECT + 1];
} hdr_rec;

/* ---- names, keys and records ---- */

/* A printable excerpt of a caller's string for an error detail. */
static const char *show(const char *s, char *buf, size_t n)
{
    size_t len = strlen(s), j = 0;
    for (size_t i = 0; i < len && j + 4 < n && i < 60; i++)
        buf[j++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (len > 60 && j + 4 < n) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    buf[j] = 0;
    return buf;
}

static int check_name(const char *what, const char *s)
{
    char b[80];
    if (!s || !*s)
        return om_errf(OM_E_InvalidParameter, "%s is empty. HINT: give a name of 1 to %u bytes",
                       what, MAIL_MAX_NAME);
    size_t len = strlen(s);
    if (len > MAIL_MAX_NAME)
        return om_errf(OM_E_InvalidParameter, "%s '%s' is %zu bytes, longer than %u", what,
                       show(s, b, sizeof b), len, MAIL_MAX_NAME);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return om_errf(OM_E_InvalidParameter,
                           "%s '%s' holds a control character (byte 0x%02x at %zu)", what,
                           show(s, b, sizeof b), (unsigned char)s[i], i);
    return 0;
}

static int check_subject(const char *s)
{
    char b[80];
    size_t len = strlen(s);
    if (len > MAIL_MAX_SUBJECT)
        return om_errf(OM_E_InvalidParameter, "subject '%s' is %zu bytes, longer than %u",
                       show(s, b, sizeof b), len, MAIL_MAX_SUBJECT);
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
            return om_errf(OM_E_InvalidParameter,
                           "subject '%s' holds a control character (byte 0x%02x at %zu)",
                           show(s, b, sizeof b), (unsigned char)s[i], i);
    return 0;
}

static void be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static uint32_t folder_key(uint8_t *k, uint32_t mbx, const char *name)
{
    size_t n = strlen(name);
    be32(k, mbx);
    memcpy(k + 4, name, n);
    return (uint32_t)(4 + n);
}
static void header_key(uint8_t *k, uint32_t mbx, uint64_t id)
{
    be32(k, mbx);
    be64(k + 4, id);
}

static void mbx_encode(uint8_t *p, const mbx_rec *r)
{
    om_put32(p, r->id);
    om_put64(p + 4, r->next_msg);
    om_put32(p + 12, r->next_folder);
}

static uint32_t hdr_encode(uint8_t *p, const hdr_rec *h)
{
    om_put64(p, h->seq);
    om_put32(p + 8, h->folder);
    om_put64(p + 12, h->received);
    om_put64(p + 20, h->size);
    om_put16(p + 28, h->subject_len);
    memcpy(p + HDR_FIXED, h->subject, h->subject_len);
    return HDR_FIXED + h->subject_len;
}

static int hdr_decode(const uint8_t *p, uint64_t len, hdr_rec *h, uint32_t mbx, uint64_t id)
{
    if (len < HDR_FIXED || len != HDR_FIXED + (uint64_t)om_get16(p + 28) ||
        om_get16(p + 28) > MAIL_MAX_SUBJECT)
        return om_errf(OM_E_DatabaseCorrupted,
                       "%s: the header of mailbox id %u message %llu is malformed (%llu bytes)",
                       T_HEADERS, mbx, (unsigned long long)id, (unsigned long long)len);
    h->seq = om_get64(p);
    h->folder = om_get32(p + 8);
    h->received = om_get64(p + 12);
    h->size = om_get64(p + 20);
    h->subject_len = om_get16(p + 28);
    memcpy(h->subject, p + HDR_FIXED, h->subject_len);
    h->subject[h->subject_len] = 0;
    return 0;
}

/* ---- reading records in a view ---- */

static int mailbox_read(mail_store *st, eng_view *v, const char *name, mbx_rec *r)
{
    char b[80];
    void *val = NULL;
    uint64_t len = 0;
    int rc = eng_get(v, st->mailboxes, name, (uint32_t)strlen(name), &val, &len);
    if (rc == OM_E_RecordNotFound)
        return om_errf(rc, "mailbox '%s' does not exist", show(name, b, sizeof b));
    if (rc) return om_err_ctx(rc, "reading mailbox '%s': ", show(name, b, sizeof b));
    if (len != MBX_REC_LEN) {
        free(val);
        return om_errf(OM_E_DatabaseCorrupted,
                       "%s: the record of mailbox '%s' is %llu bytes, not %u", T_MAILBOXES,
                       show(name, b, sizeof b), (unsigned long long)len, MBX_REC_LEN);
    }
    r->id = om_get32(val);
    r->next_msg = om_get64((uint8_t *)val + 4);
    r->next_folder = om_get32((uint8_t *)val + 12);
    free(val);
    return 0;
}

/* Folder id of name in mailbox mbx (RecordNotFound when the mailbox has no such folder). */
static int folder_read(mail_store *st, eng_view *v, uint32_t mbx, const char *mailbox,
                       const char *name, uint32_t *fid)
{
    char b[80], c[80];
    uint8_t k[FLD_KEY_MAX];
    void *val = NULL;
    uint64_t len = 0;
    int rc = eng_get(v, st->folders, k, folder_key(k, mbx, name), &val, &len);
    if (rc == OM_E_RecordNotFound)
        return om_errf(rc, "mailbox '%s' has no folder '%s'", show(mailbox, b, sizeof b),
                       show(name, c, sizeof c));
    if (rc) return om_err_ctx(rc, "reading folder '%s': ", show(name, b, sizeof b));
    if (len != 4)
        rc = om_errf(OM_E_DatabaseCorrupted, "%s: the record of folder '%s' is malformed",
                     T_FOLDERS, show(name, b, sizeof b));
    else
        *fid = om_get32(val);
    free(val);
    return rc;
}

static int header_read(mail_store *st, eng_view *v, uint32_t mbx, const char *mailbox, uint64_t id,
                       hdr_rec *h)
{
    char b[80];
    uint8_t k[HDR_KEY_LEN];
    void *val = NULL;
    uint64_t len = 0;
    header_key(k, mbx, id);
    int rc = eng_get(v, st->headers, k, HDR_KEY_LEN, &val, &len);
    if (rc == OM_E_RecordNotFound)
        return om_errf(rc, "mailbox '%s' has no message %llu", show(mailbox, b, sizeof b),
                       (unsigned long long)id);
    if (rc) return om_err_ctx(rc, "reading message %llu: ", (unsigned long long)id);
    rc = hdr_decode(val, len, h, mbx, id);
    free(val);
    return rc;
}

typedef struct folder_ent {
    uint32_t id;
    uint32_t name_off; /* in the names buffer */
} folder_ent;

typedef struct folder_set {
    folder_ent *f; /* in name order */
    uint32_t n;
    char *names;
    size_t names_len;
} folder_set;

static void folder_set_free(folder_set *fs)
{
    free(fs->f);
    free(fs->names);
    memset(fs, 0, sizeof *fs);
}

/* All folders of mailbox mbx, in name order. */
static int folders_load(mail_store *st, eng_view *v, uint32_t mbx, folder_set *fs)
{
    eng_cursor *c = NULL;
    uint8_t k[4];
    uint32_t cap = 0;
    size_t names_cap = 0;
    memset(fs, 0, sizeof *fs);
    be32(k, mbx);
    int rc = eng_cursor_open(v, st->folders, &c);
    if (!rc) rc = eng_cursor_seek(c, k, 4);
    while (!rc) {
        const void *key;
        uint32_t klen;
        uint8_t val[4];
        uint64_t vlen;
        if ((rc = eng_cursor_key(c, &key, &klen))) break;
        if (klen < 5 || memcmp(key, k, 4) != 0) break;
        if ((rc = eng_cursor_vlen(c, &vlen))) break;
        if (vlen != 4 || klen - 4 > MAIL_MAX_NAME) {
            rc = om_errf(OM_E_DatabaseCorrupted, "%s: a folder of mailbox id %u is malformed",
                         T_FOLDERS, mbx);
            break;
        }
        if ((rc = eng_cursor_read(c, 0, val, 4))) break;
        if (fs->n == cap) {
            cap = cap ? 2 * cap : 8;
            folder_ent *nf = realloc(fs->f, cap * sizeof *nf);
            if (!nf) goto oom;
            fs->f = nf;
        }
        if (fs->names_len + klen - 4 + 1 > names_cap) {
            names_cap = 2 * names_cap + klen + 64;
            char *nn = realloc(fs->names, names_cap);
            if (!nn) goto oom;
            fs->names = nn;
        }
        fs->f[fs->n++] = (folder_ent){om_get32(val), (uint32_t)fs->names_len};
        memcpy(fs->names + fs->names_len, (const uint8_t *)key + 4, klen - 4);
        fs->names_len += klen - 4;
        fs->names[fs->names_len++] = 0;
        rc = eng_cursor_next(c);
    }
    if (rc == OM_E_RecordNotFound) rc = 0;
    eng_cursor_close(c);
    if (rc) folder_set_free(fs);
    return rc;
oom:
    eng_cursor_close(c);
    folder_set_free(fs);
    return om_errf(OM_E_OutOfMemory, "listing the folders of mailbox id %u: out of memory", mbx);
}

/* Index in fs of folder id fid, or -1. */
static long folder_find(const folder_set *fs, uint32_t fid)
{
    for (uint32_t i = 0; i < fs->n; i++)
        if (fs->f[i].id == fid) return i;
    return -1;
}

/* ---- opening: the schema ---- */

static int counters_read(mail_store *st, eng_view *v, uint32_t *next_mbx, uint64_t *seq_limit)
{
    void *val = NULL;
    uint64_t len = 0;
    int rc = eng_get(v, st->meta, "counters", 8, &val, &len);
    if (rc) return om_err_ctx(rc, "%s: reading the counters: ", T_META);
    if (len != COUNTERS_LEN)
        rc = om_errf(OM_E_DatabaseCorrupted, "%s: the counters record is %llu bytes, not %u",
                     T_META, (unsigned long long)len, COUNTERS_LEN);
    else {
        *next_mbx = om_get32(val);
        *seq_limit = om_get64((uint8_t *)val + 4);
    }
    free(val);
    return rc;
}

static int counters_write(mail_store *st, eng_txn *t, uint32_t next_mbx, uint64_t seq_limit)
{
    uint8_t val[COUNTERS_LEN];
    om_put32(val, next_mbx);
    om_put64(val + 4, seq_limit);
    return eng_put(t, st->meta, "counters", 8, val, sizeof val, 0);
}

static int schema_create(mail_store *st)
{
    eng_txn *t = NULL;
    uint8_t ver[SCHEMA_MAGIC_LEN + 4];
    int rc = eng_txn_begin(st->db, &t);
    if (rc) return rc;
    if ((rc = eng_table_create(t, T_META, &st->meta)) ||
        (rc = eng_table_create(t, T_MAILBOXES, &st->mailboxes)) ||
        (rc = eng_table_create(t, T_FOLDERS, &st->folders)) ||
        (rc = eng_table_create(t, T_HEADERS, &st->headers)) ||
        (rc = eng_table_create(t, T_BODIES, &st->bodies)))
        goto fail;
    memcpy(ver, SCHEMA_MAGIC, SCHEMA_MAGIC_LEN);
    om_put32(ver + SCHEMA_MAGIC_LEN, MAIL_SCHEMA_VERSION);
    if ((rc = eng_put(t, st->meta, "schema", 6, ver, sizeof ver, ENG_PUT_NOOVERWRITE)) ||
        (rc = counters_write(st, t, 1, 1)))
        goto fail;
    return eng_txn_commit(t, 0);
fail:
    eng_txn_rollback(t);
    return rc;
}

static int schema_check(mail_store *st, eng_view *v)
{
    void *val = NULL;
    uint64_t len = 0;
    int rc = eng_get(v, st->meta, "schema", 6, &val, &len);
    if (rc == OM_E_RecordNotFound)
        return om_errf(OM_E_InvalidDatabase, "%s has no schema record: not a mail database",
                       T_META);
    if (rc) return rc;
    if (len != SCHEMA_MAGIC_LEN + 4 || memcmp(val, SCHEMA_MAGIC, SCHEMA_MAGIC_LEN) != 0)
        rc = om_errf(OM_E_InvalidDatabase, "%s: the schema record is not Ombra's mail schema",
                     T_META);
    else if (om_get32((uint8_t *)val + SCHEMA_MAGIC_LEN) != MAIL_SCHEMA_VERSION)
        rc = om_errf(OM_E_InvalidDatabase,
                     "the mail schema is version %u; this build reads version %u. HINT: use the "
                     "Ombra release that wrote the database",
                     om_get32((uint8_t *)val + SCHEMA_MAGIC_LEN), MAIL_SCHEMA_VERSION);
    free(val);
    return rc;
}

/* Opens the schema's tables in a committed view. *fresh: the catalog holds none of them
 * and nothing else either (formatted, then a crash before the schema was created). */
#define EMPTY_CATALOG_PAGES 3u
static int schema_open(mail_store *st, int *fresh)
{
    static const char *const names[] = {T_META, T_MAILBOXES, T_FOLDERS, T_HEADERS, T_BODIES};
    eng_tbl *tbls[] = {&st->meta, &st->mailboxes, &st->folders, &st->headers, &st->bodies};
    eng_view *v = NULL;
    int rc = eng_view_begin(st->db, &v), missing = 0;
    const char *first_missing = NULL;
    *fresh = 0;
    if (rc) return rc;
    for (int i = 0; i < 5 && !rc; i++) {
        rc = eng_table_open(v, names[i], tbls[i]);
        if (rc == OM_E_ObjectNotFound) {
            missing++;
            if (!first_missing) first_missing = names[i];
            rc = 0;
        }
    }
    if (!rc && missing == 5) {
        /* table.h cannot list the catalog; an empty one is the three pages that
         * eng_catalog_create makes (meta, catalog root, long-value root) and nothing else. */
        eng_space sp;
        rc = eng_space_info(v, &sp);
        if (!rc && sp.pages <= EMPTY_CATALOG_PAGES && sp.lv_count == 0)
            *fresh = 1;
        else if (!rc)
            rc = om_errf(OM_E_InvalidDatabase,
                         "the database holds tables, but not the mail schema (no table %s). "
                         "HINT: give mail a database of its own",
                         T_META);
    } else if (!rc && missing)
        rc = om_errf(OM_E_InvalidDatabase, "the mail schema is incomplete: table %s is missing",
                     first_missing);
    if (!rc && !*fresh) rc = schema_check(st, v);
    eng_view_end(v);
    return rc;
}

int store_mail_open(eng_db *db, mail_store **out)
{
    int fresh = 0, rc = 0;
    *out = NULL;
    mail_store *st = calloc(1, sizeof *st);
    if (!st) return om_errf(OM_E_OutOfMemory, "opening the mail store: out of memory");
    st->db = db;
    pthread_mutex_init(&st->mu, NULL);
    if (!eng_catalog_exists(db) && (rc = eng_catalog_create(db))) {
        om_err_ctx(rc, "formatting the database for mail: ");
        goto fail;
    }
    if ((rc = schema_open(st, &fresh))) goto fail;
    if (fresh && (rc = schema_create(st))) {
        om_err_ctx(rc, "creating the mail schema: ");
        goto fail;
    }
    *out = st;
    return 0;
fail:
    pthread_mutex_destroy(&st->mu);
    free(st);
    return rc;
}

void store_mail_close(mail_store *st)
{
    if (!st) return;
    pthread_mutex_destroy(&st->mu);
    free(st);
}

int store_mail_flush(mail_store *st)
{
    return eng_log_flush(st->db);
}

/* ---- writing ---- */

/* The next body sequence number. Called inside a transaction (so under the engine's writer
 * role); a fresh range is reserved in mail.meta by the same transaction. */
static int body_seq(mail_store *st, eng_txn *t, uint64_t *seq)
{
    uint32_t next_mbx;
    uint64_t limit;
    pthread_mutex_lock(&st->mu);
    int have = st->seq_next < st->seq_limit;
    if (have) *seq = st->seq_next++;
    pthread_mutex_unlock(&st->mu);
    if (have) return 0;
    int rc = counters_read(st, eng_txn_view(t), &next_mbx, &limit);
    if (!rc) rc = counters_write(st, t, next_mbx, limit + SEQ_BATCH);
    if (rc) return rc;
    pthread_mutex_lock(&st->mu);
    *seq = limit;
    st->seq_next = limit + 1;
    st->seq_limit = limit + SEQ_BATCH;
    pthread_mutex_unlock(&st->mu);
    return 0;
}

/* After a failed transaction: its reservation may be gone, so read the counter again. */
static void body_seq_forget(mail_store *st)
{
    pthread_mutex_lock(&st->mu);
    st->seq_next = st->seq_limit = 0;
    pthread_mutex_unlock(&st->mu);
}

static int mailbox_get_or_create(mail_store *st, eng_txn *t, const char *name, mbx_rec *r)
{
    eng_view *v = eng_txn_view(t);
    int rc = mailbox_read(st, v, name, r);
    if (rc != OM_E_RecordNotFound) return rc;
    uint32_t next_mbx;
    uint64_t limit;
    if ((rc = counters_read(st, v, &next_mbx, &limit))) return rc;
    if (next_mbx == UINT32_MAX)
        return om_errf(OM_E_OutOfDatabaseSpace, "no mailbox id left for a new mailbox");
    *r = (mbx_rec){.id = next_mbx, .next_msg = 1, .next_folder = 1};
    om_err_clear();
    return counters_write(st, t, next_mbx + 1, limit);
}

/* Folder id of name, creating the folder (and changing r->next_folder) when it is new. */
static int folder_get_or_create(mail_store *st, eng_txn *t, mbx_rec *r, const char *mailbox,
                                const char *name, uint32_t *fid)
{
    uint8_t k[FLD_KEY_MAX], val[4];
    int rc = folder_read(st, eng_txn_view(t), r->id, mailbox, name, fid);
    if (rc != OM_E_RecordNotFound) return rc;
    if (r->next_folder == UINT32_MAX)
        return om_errf(OM_E_OutOfDatabaseSpace, "no folder id left in mailbox '%s'", mailbox);
    *fid = r->next_folder++;
    om_put32(val, *fid);
    om_err_clear();
    return eng_put(t, st->folders, k, folder_key(k, r->id, name), val, 4, ENG_PUT_NOOVERWRITE);
}

static int mailbox_write(mail_store *st, eng_txn *t, const char *name, const mbx_rec *r)
{
    uint8_t val[MBX_REC_LEN];
    mbx_encode(val, r);
    return eng_put(t, st->mailboxes, name, (uint32_t)strlen(name), val, sizeof val, 0);
}

/* Commits t (or rolls it back when rc is set); a failure forgets the reserved sequence. */
static int finish(mail_store *st, eng_txn *t, int rc, unsigned flags)
{
    if (rc)
        eng_txn_rollback(t);
    else
        rc = eng_txn_commit(t, (flags & MAIL_LAZY) ? ENG_COMMIT_LAZY : 0);
    if (rc) body_seq_forget(st);
    return rc;
}

static int check_new(const mail_new *m)
{
    int rc = check_name("mailbox name", m->mailbox);
    if (!rc) rc = check_name("folder name", m->folder ? m->folder : MAIL_DEFAULT_FOLDER);
    if (!rc && m->subject) rc = check_subject(m->subject);
    if (!rc && m->size > MAIL_MAX_BODY)
        rc = om_errf(OM_E_InvalidParameter, "a body of %llu bytes is over the limit of %llu",
                     (unsigned long long)m->size, (unsigned long long)MAIL_MAX_BODY);
    if (!rc && m->size && !m->body)
        rc = om_errf(OM_E_InvalidParameter, "a body of %llu bytes without data",
                     (unsigned long long)m->size);
    return rc;
}

/* The changes of one delivery (m already checked), in transaction t. */
static int deliver_in(mail_store *st, eng_txn *t, const mail_new *m, uint64_t *id)
{
    const char *folder = m->folder ? m->folder : MAIL_DEFAULT_FOLDER;
    const char *subject = m->subject ? m->subject : "";
    uint8_t hk[HDR_KEY_LEN], bk[8], hv[HDR_MAX];
    mbx_rec r;
    hdr_rec h = {.received = m->received ? m->received : om_now_ns(), .size = m->size};
    int rc;
    h.subject_len = (uint16_t)strlen(subject);
    memcpy(h.subject, subject, h.subject_len);
    if ((rc = mailbox_get_or_create(st, t, m->mailbox, &r)) ||
        (rc = folder_get_or_create(st, t, &r, m->mailbox, folder, &h.folder)) ||
        (rc = body_seq(st, t, &h.seq)))
        return rc;
    uint64_t msg = r.next_msg++;
    header_key(hk, r.id, msg);
    be64(bk, h.seq);
    if ((rc = eng_put(t, st->bodies, bk, 8, m->body, m->size, ENG_PUT_NOOVERWRITE)) ||
        (rc = eng_put(t, st->headers, hk, HDR_KEY_LEN, hv, hdr_encode(hv, &h),
                      ENG_PUT_NOOVERWRITE)) ||
        (rc = mailbox_write(st, t, m->mailbox, &r)))
        return rc;
    *id = msg;
    return 0;
}

int store_mail_deliver(mail_store *st, const mail_new *m, unsigned flags, uint64_t *id)
{
    eng_txn *t = NULL;
    uint64_t msg = 0;
    int rc = check_new(m);
    if (rc) return rc;
    if ((rc = eng_txn_begin(st->db, &t))) return om_err_ctx(rc, "delivering a message: ");
    rc = finish(st, t, deliver_in(st, t, m, &msg), flags);
    if (rc) return om_err_ctx(rc, "delivering a message: ");
    *id = msg;
    return 0;
}

int store_mail_delete(mail_store *st, const char *mailbox, uint64_t id, unsigned flags)
{
    uint8_t hk[HDR_KEY_LEN], bk[8];
    mbx_rec r;
    hdr_rec h;
    eng_txn *t = NULL;
    int rc = check_name("mailbox name", mailbox);
    if (rc || (rc = eng_txn_begin(st->db, &t))) return rc;
    if ((rc = mailbox_read(st, eng_txn_view(t), mailbox, &r)) ||
        (rc = header_read(st, eng_txn_view(t), r.id, mailbox, id, &h)))
        goto out;
    header_key(hk, r.id, id);
    be64(bk, h.seq);
    rc = eng_del(t, st->bodies, bk, 8);
    if (rc == OM_E_RecordNotFound)
        rc = om_errf(OM_E_DatabaseCorrupted, "%s: the body of message %llu (seq %llu) is missing",
                     T_BODIES, (unsigned long long)id, (unsigned long long)h.seq);
    if (!rc) rc = eng_del(t, st->headers, hk, HDR_KEY_LEN);
out:
    return finish(st, t, rc, flags);
}

int store_mail_move(mail_store *st, const char *mailbox, uint64_t id, const char *folder,
                    unsigned flags)
{
    uint8_t hk[HDR_KEY_LEN], hv[HDR_MAX];
    mbx_rec r;
    hdr_rec h;
    uint32_t fid;
    eng_txn *t = NULL;
    int rc = check_name("mailbox name", mailbox);
    if (!rc) rc = check_name("folder name", folder);
    if (rc || (rc = eng_txn_begin(st->db, &t))) return rc;
    if ((rc = mailbox_read(st, eng_txn_view(t), mailbox, &r)) ||
        (rc = header_read(st, eng_txn_view(t), r.id, mailbox, id, &h)))
        goto out;
    uint32_t next_folder = r.next_folder;
    if ((rc = folder_get_or_create(st, t, &r, mailbox, folder, &fid))) goto out;
    if (fid == h.folder) { /* already there */
        eng_txn_rollback(t);
        return 0;
    }
    h.folder = fid;
    header_key(hk, r.id, id);
    rc = eng_put(t, st->headers, hk, HDR_KEY_LEN, hv, hdr_encode(hv, &h), 0);
    if (!rc && r.next_folder != next_folder) rc = mailbox_write(st, t, mailbox, &r);
out:
    return finish(st, t, rc, flags);
}

/* ---- reading ---- */

/* Grows a byte buffer to hold need more bytes; 0 or OutOfMemory. */
static int grow(char **buf, size_t *cap, size_t len, size_t need)
{
    if (len + need <= *cap) return 0;
    size_t n = *cap ? *cap : 256;
    while (n < len + need)
        n *= 2;
    char *p = realloc(*buf, n);
    if (!p) return om_errf(OM_E_OutOfMemory, "out of memory (%zu bytes)", n);
    *buf = p;
    *cap = n;
    return 0;
}

/* Appends s and a NUL to the buffer; *off is where it starts. */
static int push_str(char **buf, size_t *cap, size_t *len, const char *s, size_t n, size_t *off)
{
    int rc = grow(buf, cap, *len, n + 1);
    if (rc) return rc;
    memcpy(*buf + *len, s, n);
    (*buf)[*len + n] = 0;
    *off = *len;
    *len += n + 1;
    return 0;
}

/* The header under cursor c when it belongs to mailbox mbx; RecordNotFound past the
 * mailbox's headers. */
static int cursor_header(eng_cursor *c, uint32_t mbx, uint64_t *id, hdr_rec *h)
{
    const void *key;
    uint32_t klen;
    uint64_t vlen;
    uint8_t val[HDR_MAX];
    int rc = eng_cursor_key(c, &key, &klen);
    if (rc) return rc;
    if (klen != HDR_KEY_LEN || get_be32(key) != mbx) return OM_E_RecordNotFound;
    *id = get_be64((const uint8_t *)key + 4);
    if ((rc = eng_cursor_vlen(c, &vlen))) return rc;
    if (vlen > HDR_MAX || vlen < HDR_FIXED)
        return om_errf(OM_E_DatabaseCorrupted,
                       "%s: the header of mailbox id %u message %llu is "
                       "%llu bytes",
                       T_HEADERS, mbx, (unsigned long long)*id, (unsigned long long)vlen);
    if ((rc = eng_cursor_read(c, 0, val, vlen))) return rc;
    return hdr_decode(val, vlen, h, mbx, *id);
}

typedef struct list_ent {
    uint64_t id, received, size;
    size_t folder_off, subject_off;
} list_ent;

/* What a listing collects: entries, and the folder names and subjects they point to (as
 * offsets, since the buffer moves as it grows). */
typedef struct list_acc {
    list_ent *ents;
    size_t n, cap;
    char *strs;
    size_t slen, scap;
} list_acc;

static int list_push(list_acc *a, uint64_t id, const hdr_rec *h, size_t folder_off)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        list_ent *ne = realloc(a->ents, cap * sizeof *ne);
        if (!ne) return om_errf(OM_E_OutOfMemory, "listing: out of memory");
        a->ents = ne;
        a->cap = cap;
    }
    list_ent *e = &a->ents[a->n];
    *e = (list_ent){id, h->received, h->size, folder_off, 0};
    int rc = push_str(&a->strs, &a->scap, &a->slen, h->subject, h->subject_len, &e->subject_off);
    if (!rc) a->n++;
    return rc;
}

/* The scan of store_mail_list, in the view v. */
static int list_scan(mail_store *st, eng_view *v, const char *mailbox, const char *folder,
                     uint64_t from_id, size_t max, list_acc *a)
{
    mbx_rec r;
    folder_set fs = {0};
    uint32_t want = 0;
    size_t *fname_off = NULL;
    eng_cursor *c = NULL;
    uint8_t k[HDR_KEY_LEN];
    int rc = mailbox_read(st, v, mailbox, &r);
    if (!rc && folder) rc = folder_read(st, v, r.id, mailbox, folder, &want);
    if (!rc) rc = folders_load(st, v, r.id, &fs);
    if (rc) return rc;
    /* Each folder name once in the strings, then the subjects. */
    if (!(fname_off = calloc(fs.n + 1, sizeof *fname_off)))
        rc = om_errf(OM_E_OutOfMemory, "listing mailbox '%s': out of memory", mailbox);
    for (uint32_t i = 0; i < fs.n && !rc; i++) {
        const char *nm = fs.names + fs.f[i].name_off;
        rc = push_str(&a->strs, &a->scap, &a->slen, nm, strlen(nm), &fname_off[i]);
    }
    header_key(k, r.id, from_id);
    if (!rc) rc = eng_cursor_open(v, st->headers, &c);
    if (!rc) rc = eng_cursor_seek(c, k, HDR_KEY_LEN);
    while (!rc && (max == 0 || a->n < max)) {
        uint64_t id;
        hdr_rec h;
        if ((rc = cursor_header(c, r.id, &id, &h))) break;
        if (!folder || h.folder == want) {
            long fi = folder_find(&fs, h.folder);
            if (fi < 0)
                rc =
                    om_errf(OM_E_DatabaseCorrupted,
                            "message %llu of mailbox '%s' is in folder id %u, which does not exist",
                            (unsigned long long)id, mailbox, h.folder);
            else
                rc = list_push(a, id, &h, fname_off[fi]);
        }
        if (!rc) rc = eng_cursor_next(c);
    }
    if (rc == OM_E_RecordNotFound) rc = 0;
    eng_cursor_close(c);
    free(fname_off);
    folder_set_free(&fs);
    return rc;
}

int store_mail_list(mail_store *st, const char *mailbox, const char *folder, uint64_t from_id,
                    size_t max, mail_listing *out)
{
    list_acc a = {0};
    eng_view *v = NULL;
    memset(out, 0, sizeof *out);
    int rc = check_name("mailbox name", mailbox);
    if (!rc && folder) rc = check_name("folder name", folder);
    if (!rc) rc = eng_view_begin(st->db, &v);
    if (rc) return rc;
    rc = list_scan(st, v, mailbox, folder, from_id, max, &a);
    eng_view_end(v);
    if (!rc && a.n && !(out->msgs = malloc(a.n * sizeof *out->msgs)))
        rc = om_errf(OM_E_OutOfMemory, "listing mailbox '%s': out of memory", mailbox);
    if (rc) {
        free(a.ents);
        free(a.strs);
        return rc;
    }
    for (size_t i = 0; i < a.n; i++)
        out->msgs[i] =
            (mail_header){a.ents[i].id, a.strs + a.ents[i].folder_off, a.ents[i].received,
                          a.ents[i].size, a.strs + a.ents[i].subject_off};
    out->n = a.n;
    out->strings_ = a.strs;
    free(a.ents);
    return 0;
}

void store_mail_listing_free(mail_listing *l)
{
    if (!l) return;
    free(l->msgs);
    free(l->strings_);
    memset(l, 0, sizeof *l);
}

static int get_in_view(mail_store *st, eng_view *v, const char *mailbox, uint64_t id,
                       mail_message *out)
{
    mbx_rec r;
    hdr_rec h;
    folder_set fs = {0};
    uint8_t bk[8];
    uint64_t blen = 0;
    int rc = mailbox_read(st, v, mailbox, &r);
    if (!rc) rc = header_read(st, v, r.id, mailbox, id, &h);
    if (!rc) rc = folders_load(st, v, r.id, &fs);
    if (rc) return rc;
    long fi = folder_find(&fs, h.folder);
    if (fi < 0) {
        rc = om_errf(OM_E_DatabaseCorrupted,
                     "message %llu of mailbox '%s' is in folder id %u, which does not exist",
                     (unsigned long long)id, mailbox, h.folder);
        goto out;
    }
    be64(bk, h.seq);
    rc = eng_get(v, st->bodies, bk, 8, &out->body, &blen);
    if (rc == OM_E_RecordNotFound || (!rc && blen != h.size))
        rc = om_errf(OM_E_DatabaseCorrupted,
                     "%s: the body of message %llu of mailbox '%s' (seq %llu) is %s", T_BODIES,
                     (unsigned long long)id, mailbox, (unsigned long long)h.seq,
                     rc ? "missing" : "not the size its header says");
    if (rc) goto out;
    const char *fname = fs.names + fs.f[fi].name_off;
    size_t fl = strlen(fname);
    if (!(out->strings_ = malloc(fl + 1 + h.subject_len + 1))) {
        rc = om_errf(OM_E_OutOfMemory, "reading message %llu: out of memory",
                     (unsigned long long)id);
        goto out;
    }
    memcpy(out->strings_, fname, fl + 1);
    memcpy(out->strings_ + fl + 1, h.subject, h.subject_len + 1u);
    out->h = (mail_header){id, out->strings_, h.received, h.size, out->strings_ + fl + 1};
out:
    folder_set_free(&fs);
    return rc;
}

int store_mail_get(mail_store *st, const char *mailbox, uint64_t id, mail_message *out)
{
    eng_view *v = NULL;
    memset(out, 0, sizeof *out);
    int rc = check_name("mailbox name", mailbox);
    if (!rc) rc = eng_view_begin(st->db, &v);
    if (rc) return rc;
    rc = get_in_view(st, v, mailbox, id, out);
    eng_view_end(v);
    if (rc) store_mail_message_free(out);
    return rc;
}

void store_mail_message_free(mail_message *m)
{
    if (!m) return;
    free(m->body);
    free(m->strings_);
    memset(m, 0, sizeof *m);
}

/* ---- digest ---- */

typedef struct dg_msg {
    uint32_t rank; /* the folder's place in name order */
    uint64_t id;
} dg_msg;

static int dg_cmp(const void *a, const void *b)
{
    const dg_msg *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The digest reads in views of about half the cache's size of bodies each (DG_VIEW_BYTES at
 * most): one view for all of a large database would hold every commit back while it reads, and
 * keep every page it read in the cache (nothing trims under a view): a 1.4 GB database's digest
 * grew the store by 1.4 GB. Between two messages, past its share, the view ends (commits
 * publish, the cache trims) and another begins; when its epoch differs from the first view's, a
 * commit came between them and the digest starts again (DG_TRIES times); then it holds commits
 * back for its last pass (they wait for all of it, as they did for one view) and still reads in
 * views, trimming the cache between them. */
enum { DG_VIEW_BYTES = 64 << 20, DG_TRIES = 3 };

typedef struct dg_run {
    mail_store *st;
    eng_view *v;
    uint64_t epoch;         /* the first view's */
    uint64_t read;          /* body bytes read in this view */
    uint64_t share;         /* the most a view reads (0: one view for all) */
    int changed;            /* a later view saw another epoch */
    int hold;               /* commits are held back: the cache is trimmed between views */
    uint64_t views, passes; /* taken (tests) */
    XXH3_state_t *x;
    uint8_t *chunk;
    size_t chunk_len;
} dg_run;

/* Between two messages: a view that read its share ends and another begins. Nonzero with
 * r->changed set when the database changed between them (the caller starts again). */
static int dg_next_view(dg_run *r)
{
    if (!r->share || r->read < r->share) return 0;
    eng_view_end(r->v);
    r->v = NULL;
    if (r->hold) eng_commits_trim(r->st->db);
    /* The view's end trims the cache only when it can take the writer role: a writer that
     * holds it across views lets the cache grow, so past twice its size the pass ends as for a
     * commit (the last one holds commits back and trims). */
    int over =
        !r->hold && eng_cache_pages(r->st->db) * ENG_PAGE_SIZE > 2 * eng_cache_size(r->st->db);
    int rc = eng_view_begin(r->st->db, &r->v);
    if (rc) return rc;
    r->views++;
    r->read = 0;
    if (!over && eng_view_epoch(r->v) == r->epoch) return 0;
    r->changed = 1;
    return OM_E_DatabaseInUse; /* never seen by a caller: store_mail_digest_views starts again */
}

/* Hashes the body of seq by chunks (long values are not read whole into memory). */
static int dg_body(dg_run *r, uint64_t seq, uint64_t size)
{
    mail_store *st = r->st;
    eng_cursor *c = NULL;
    uint8_t bk[8];
    const void *key;
    uint32_t klen;
    uint64_t vlen;
    be64(bk, seq);
    int rc = eng_cursor_open(r->v, st->bodies, &c);
    if (!rc) rc = eng_cursor_seek(c, bk, 8);
    if (!rc) rc = eng_cursor_key(c, &key, &klen);
    if (!rc && (klen != 8 || memcmp(key, bk, 8) != 0)) rc = OM_E_RecordNotFound;
    if (!rc) rc = eng_cursor_vlen(c, &vlen);
    if (rc == OM_E_RecordNotFound || (!rc && vlen != size))
        rc = om_errf(OM_E_DatabaseCorrupted, "%s: the body of seq %llu is %s", T_BODIES,
                     (unsigned long long)seq, rc ? "missing" : "not the size its header says");
    if (!rc) {
        uint8_t len[8];
        om_put64(len, size);
        XXH3_128bits_update(r->x, len, 8);
    }
    for (uint64_t off = 0; !rc && off < size; off += r->chunk_len) {
        uint64_t n = size - off < r->chunk_len ? size - off : r->chunk_len;
        if (!(rc = eng_cursor_read(c, off, r->chunk, n))) XXH3_128bits_update(r->x, r->chunk, n);
    }
    eng_cursor_close(c);
    r->read += size + 1;
    return rc;
}

/* The folders, then the messages in (folder name, id) order, of one mailbox. */
static int dg_mailbox(dg_run *r, const char *name, uint32_t mbx)
{
    mail_store *st = r->st;
    XXH3_state_t *x = r->x;
    folder_set fs = {0};
    dg_msg *msgs = NULL;
    size_t n = 0, cap = 0;
    eng_cursor *c = NULL;
    uint8_t k[HDR_KEY_LEN];
    int rc = folders_load(st, r->v, mbx, &fs);
    if (rc) return rc;
    header_key(k, mbx, 0);
    if (!(rc = eng_cursor_open(r->v, st->headers, &c))) rc = eng_cursor_seek(c, k, HDR_KEY_LEN);
    while (!rc) {
        uint64_t id;
        hdr_rec h;
        if ((rc = cursor_header(c, mbx, &id, &h))) break;
        long fi = folder_find(&fs, h.folder);
        if (fi < 0) {
            rc = om_errf(OM_E_DatabaseCorrupted, "message %llu of mailbox id %u has no folder",
                         (unsigned long long)id, mbx);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            dg_msg *nm = realloc(msgs, cap * sizeof *nm);
            if (!nm) {
                rc = om_errf(OM_E_OutOfMemory, "digest: out of memory");
                break;
            }
            msgs = nm;
        }
        msgs[n++] = (dg_msg){(uint32_t)fi, id};
        rc = eng_cursor_next(c);
    }
    eng_cursor_close(c);
    if (rc == OM_E_RecordNotFound) rc = 0;
    if (n) qsort(msgs, n, sizeof *msgs, dg_cmp); /* qsort(NULL, 0) is undefined */
    size_t j = 0;
    for (uint32_t f = 0; f < fs.n && !rc; f++) {
        const char *fname = fs.names + fs.f[f].name_off;
        mail_h_tag(x, 'F');
        mail_h_field(x, fname, strlen(fname));
        for (; j < n && msgs[j].rank == f && !rc; j++) {
            hdr_rec h;
            /* the list and the folders are the first view's, the same in every later one */
            if ((rc = dg_next_view(r)) || (rc = header_read(st, r->v, mbx, name, msgs[j].id, &h)))
                break;
            mail_h_tag(x, 'M');
            mail_h_field(x, name, strlen(name));
            mail_h_field(x, fname, strlen(fname));
            mail_h_u64(x, msgs[j].id);
            mail_h_u64(x, h.received);
            mail_h_u64(x, h.size);
            mail_h_field(x, h.subject, h.subject_len);
            rc = dg_body(r, h.seq, h.size);
        }
    }
    free(msgs);
    folder_set_free(&fs);
    return rc;
}

/* One pass over the mailboxes in views of r->share; r->changed when it must start again. */
static int dg_pass(dg_run *r)
{
    eng_cursor *c = NULL;
    char name[MAIL_MAX_NAME + 1];
    uint32_t nlen = 0;
    XXH3_128bits_reset(r->x);
    r->read = 0;
    int rc = eng_view_begin(r->st->db, &r->v);
    if (rc) return rc;
    r->views++;
    r->epoch = eng_view_epoch(r->v);
    rc = eng_cursor_open(r->v, r->st->mailboxes, &c);
    if (!rc) rc = eng_cursor_first(c);
    while (!rc) {
        const void *key;
        uint32_t klen;
        uint8_t val[MBX_REC_LEN];
        uint64_t vlen;
        if ((rc = eng_cursor_key(c, &key, &klen)) || (rc = eng_cursor_vlen(c, &vlen))) break;
        if (klen > MAIL_MAX_NAME || vlen != MBX_REC_LEN) {
            rc = om_errf(OM_E_DatabaseCorrupted, "%s: a mailbox record is malformed", T_MAILBOXES);
            break;
        }
        memcpy(name, key, klen);
        name[klen] = 0;
        nlen = klen;
        if ((rc = eng_cursor_read(c, 0, val, MBX_REC_LEN))) break;
        /* the mailbox's messages may end this view: the cursor goes and comes back after */
        eng_cursor_close(c);
        c = NULL;
        mail_h_tag(r->x, 'B');
        mail_h_field(r->x, name, nlen);
        if ((rc = dg_mailbox(r, name, om_get32(val)))) break;
        if ((rc = eng_cursor_open(r->v, r->st->mailboxes, &c)) ||
            (rc = eng_cursor_seek(c, name, nlen)) || (rc = eng_cursor_key(c, &key, &klen)))
            break;
        if (klen == nlen && !memcmp(key, name, nlen)) rc = eng_cursor_next(c);
    }
    if (rc == OM_E_RecordNotFound) rc = 0;
    eng_cursor_close(c);
    eng_view_end(r->v);
    r->v = NULL;
    return rc;
}

int store_mail_digest_views(mail_store *st, uint64_t view_bytes, char out[33], mail_digest_how *how)
{
    enum { CHUNK = 1 << 20 };
    dg_run r = {.st = st, .chunk = malloc(CHUNK), .chunk_len = CHUNK, .x = XXH3_createState()};
    int rc = 0;
    out[0] = 0;
    if (!r.chunk || !r.x) rc = om_errf(OM_E_OutOfMemory, "digest: out of memory");
    for (int i = 0; !rc; i++) {
        r.share = view_bytes;
        r.changed = 0;
        r.hold = i >= DG_TRIES && view_bytes;
        if (r.hold) eng_commits_hold(st->db);
        r.passes++;
        rc = dg_pass(&r);
        if (r.hold) eng_commits_resume(st->db);
        if (rc && r.changed && r.hold) /* cannot be: nothing commits while they are held */
            rc = om_errf(OM_E_Internal, "the database changed while commits were held");
        if (!rc || !r.changed || r.hold) break;
        rc = 0;
    }
    if (!rc) {
        XXH128_canonical_t can;
        XXH128_canonicalFromHash(&can, XXH3_128bits_digest(r.x));
        for (int i = 0; i < 16; i++)
            snprintf(out + 2 * i, 3, "%02x", can.digest[i]);
    }
    if (how) *how = (mail_digest_how){r.views, r.passes, r.hold};
    XXH3_freeState(r.x);
    free(r.chunk);
    return rc ? om_err_ctx(rc, "digest: ") : 0;
}

int store_mail_digest(mail_store *st, char out[33])
{
    uint64_t half = eng_cache_size(st->db) / 2,
             share = half < DG_VIEW_BYTES ? half + 1 : DG_VIEW_BYTES;
    /* tests: "0" reads in one view, as the digest did before views (the cache grows to the
     * database's size: test_store's dismount test) */
    const char *one = getenv("OMBRA_DIGEST_VIEW_MB");
    if (one && !strcmp(one, "0")) share = 0;
    return store_mail_digest_views(st, share, out, NULL);
}

/* ---- loading ---- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

#define LOAD_EPOCH_NS    1700000000000000000ull /* 2023-11-14 22:13:20 UTC */
#define LOAD_BATCH       64u                    /* deliveries per transaction of a bulk load */
#define LOAD_BATCH_BYTES (4u << 20)             /* or bodies of this many bytes */

void store_mail_load_message(uint64_t seed, uint32_t mailboxes, uint64_t size, uint64_t i,
                             mail_load_buf *buf, void *body, mail_new *out)
{
    uint64_t r = mix64(seed ^ mix64(i + 1));
    snprintf(buf->mailbox, sizeof buf->mailbox, "user%05u",
             (unsigned)(r % (mailboxes ? mailboxes : 1)));
    snprintf(buf->folder, sizeof buf->folder, "%s", (r >> 32) % 10 == 0 ? "Archive" : "Inbox");
    snprintf(buf->subject, sizeof buf->subject, "message %llu of load %llu", (unsigned long long)i,
             (unsigned long long)seed);
    uint8_t *b = body;
    uint64_t s = mix64(r + 0x5EED);
    for (uint64_t k = 0; k < size; k += 8) {
        uint64_t w = mix64(s + k);
        memcpy(b + k, &w, size - k < 8 ? size - k : 8);
    }
    *out = (mail_new){.mailbox = buf->mailbox,
                      .folder = buf->folder,
                      .subject = buf->subject,
                      .body = body,
                      .size = size,
                      .received = LOAD_EPOCH_NS + i * 1000000000ull};
}

/* A bulk load's background flusher: writes the log out while the loader builds the next
 * transactions, so the disk (log writes, generation rolls and their fsyncs) works in parallel
 * with the CPU instead of all at the end. */
typedef struct flusher {
    mail_store *st;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int running, stop, rc;
} flusher;

static void *flusher_main(void *arg)
{
    flusher *f = arg;
    pthread_mutex_lock(&f->mu);
    while (!f->stop && !f->rc) {
        pthread_mutex_unlock(&f->mu);
        int rc = eng_log_flush(f->st->db);
        pthread_mutex_lock(&f->mu);
        f->rc = rc;
        if (!f->stop && !rc) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 2000000; /* 2 ms: the loader appends a transaction meanwhile */
            if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
            pthread_cond_timedwait(&f->cond, &f->mu, &ts);
        }
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* Without a thread (none could be started) the final flush does all the writing. */
static void flusher_start(flusher *f)
{
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->running = pthread_create(&f->th, NULL, flusher_main, f) == 0;
}

/* Stops the thread; its error, if a flush failed. */
static int flusher_stop(flusher *f)
{
    if (f->running) {
        pthread_mutex_lock(&f->mu);
        f->stop = 1;
        pthread_cond_signal(&f->cond);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->th, NULL);
    }
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cond);
    return f->rc;
}

int store_mail_load(mail_store *st, uint32_t mailboxes, uint64_t messages, uint64_t size,
                    uint64_t seed, int lazy, mail_progress_fn progress, void *arg)
{
    mail_load_buf lb;
    mail_new m;
    uint64_t id, batch_bytes = 0;
    uint32_t batch = 0;
    eng_txn *t = NULL;
    int rc = 0;
    if (mailboxes == 0) return om_errf(OM_E_InvalidParameter, "a load needs at least one mailbox");
    if (size > MAIL_MAX_BODY)
        return om_errf(OM_E_InvalidParameter, "a body of %llu bytes is over the limit of %llu",
                       (unsigned long long)size, (unsigned long long)MAIL_MAX_BODY);
    void *body = malloc(size ? size : 1);
    if (!body)
        return om_errf(OM_E_OutOfMemory, "load: out of memory for a %llu-byte body",
                       (unsigned long long)size);
    flusher fl = {.st = st};
    if (lazy) flusher_start(&fl);
    for (uint64_t i = 0; i < messages && !rc; i++) {
        store_mail_load_message(seed, mailboxes, size, i, &lb, body, &m);
        if (!lazy) {
            rc = store_mail_deliver(st, &m, 0, &id);
        } else {
            /* Bulk: many deliveries per lazily committed transaction. */
            if (!t && (rc = eng_txn_begin(st->db, &t))) break;
            rc = deliver_in(st, t, &m, &id);
            batch_bytes += size;
            if (rc || ++batch == LOAD_BATCH || batch_bytes >= LOAD_BATCH_BYTES ||
                i + 1 == messages) {
                rc = finish(st, t, rc, MAIL_LAZY);
                t = NULL;
                batch = 0;
                batch_bytes = 0;
            }
        }
        if (!rc && progress && ((i + 1) % 1000 == 0 || i + 1 == messages))
            progress(arg, i + 1, messages);
    }
    if (lazy) {
        int frc = flusher_stop(&fl);
        if (!rc) rc = frc;
    }
    if (!rc && lazy) rc = store_mail_flush(st);
    free(body);
    return rc ? om_err_ctx(rc, "loading mail: ") : 0;
}
