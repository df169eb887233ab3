/* The change map (db_internal.h, docs/design.md "Change tracking and synthetic fulls"): which
 * pages of the .edb were written since each of the last few full backups froze the database,
 * so that the next full reads only those.
 *
 * The map is a superset, never a subset: a page is marked in every epoch, and the map made
 * durable, before the page reaches the .edb (eng_cbt_note, from the checkpoint, the one path
 * that writes pages in place). A crash can only leave marks for pages that were not written.
 *
 * It is trusted only when the .edb's header carries its token (eng_dbhdr.cbt_token):
 * - an engine that keeps no map (hard recovery, a passive copy's replay, a recovery by dbutil)
 *   clears the header's token, durably, before its first page write (eng_cbt_note with no map);
 * - every write of E00.cbt takes a new token, and the header gets it (durably) right after,
 *   before the pages that write was for: one token, one version of E00.cbt, and the header
 *   carries a token only while no page it does not name has reached the .edb. So an older
 *   version of E00.cbt (a log folder put back from a file-level copy, a copy tool that took
 *   E00.cbt before the .edb) never matches a header that pages reached since; nor does a copy
 *   of the .edb from before the last write (the shadow copy of a backup, a file copied away):
 *   a restore of it, or a copy put back, is never taken for the database the map follows;
 * - a map of another database (its id and signature), a damaged or missing file, a header of an
 *   older build (token 0): not trusted. An untrusted map at open starts empty with a new token:
 *   it knows no epoch, so the next full reads everything;
 * - pages written to the .edb by anything but the engine (a tool, a `dd` of a page from another
 *   copy, a partial block-level restore, while the store was stopped or after it was killed)
 *   leave the header and its token alone. Every write of E00.chk (each checkpoint, mount and
 *   clean dismount, after the .edb's writes it stands for) records the .edb's stamp (om_stamp:
 *   inode, size, modification and change times), and a mount trusts the map only when the .edb
 *   still has the stamp the last E00.chk recorded: nothing wrote it since. So a crash keeps
 *   the map only when nothing reached the .edb after the last E00.chk; the file grows as
 *   transactions allocate pages, between checkpoints, so a crash under load usually leaves it
 *   untrusted (the next full reads everything).
 *
 * E00.cbt, little-endian, written whole by om_write_file_durable:
 *   0 "OMBRACBT"  8 u32 version (1)  12 u32 epochs  16 u64 token  24 db_id[16]  40 db_sig (2 u64)
 *   56 epochs, each: u64 id, u64 dbtime, u64 time (ns), u32 bytes, bitmap[bytes] (bit p: data
 *   page p written since the epoch began)
 *   then u64 XXH3-64 of everything before it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/logging.h"
#include "base/time.h"
#include "base/uuid.h"
#include "engine/db_internal.h"

#define CBT_MAGIC   "OMBRACBT"
#define CBT_VERSION 1u
#define CBT_SEED    0x6362746d61703031ull
#define CBT_MAXB    (1u << 29) /* 4 G pages: more than a page number holds */

struct eng_cbt {
    char path[4200];
    uint64_t token; /* in E00.cbt (and in the header when they agree) */
    int dirty;      /* E00.cbt is behind the map in memory */
    uint32_t nep;
    struct {
        uint64_t id, dbtime, time;
        uint8_t *bits;
        uint32_t bytes;
    } ep[ENG_CBT_EPOCHS];
    char why[400]; /* why the map was not trusted at open ("" when it was) */
};

static uint64_t new_token(void)
{
    uint64_t t = 0;
    while (!t)
        om_random(&t, sizeof t);
    return t;
}

void eng_cbt_free(eng_db *db)
{
    if (!db->cbt) return;
    for (uint32_t i = 0; i < db->cbt->nep; i++)
        free(db->cbt->ep[i].bits);
    free(db->cbt);
    db->cbt = NULL;
}

/* Decodes E00.cbt into m; 0, or 1 with why. */
static int decode(eng_db *db, const uint8_t *b, size_t n, struct eng_cbt *m, char *why, size_t wn)
{
    if (n < 64 || memcmp(b, CBT_MAGIC, 8)) {
        snprintf(why, wn, "%.120s is not a change map", m->path);
        return 1;
    }
    if (om_get64(b + n - 8) != om_xxh3(b, n - 8, CBT_SEED)) {
        snprintf(why, wn, "%.120s fails its checksum", m->path);
        return 1;
    }
    om_cur c = om_cur_make((uint8_t *)b + 8, n - 16);
    uint32_t ver = om_r32(&c), nep = om_r32(&c);
    uint64_t token = om_r64(&c);
    om_uuid id;
    eng_sig sig;
    om_rbytes(&c, id.b, 16);
    sig.random = om_r64(&c);
    sig.time = om_r64(&c);
    if (ver != CBT_VERSION || nep > ENG_CBT_EPOCHS) {
        snprintf(why, wn, "%.120s has version %u and %u epochs, which this build does not read",
                 m->path, ver, nep);
        return 1;
    }
    if (memcmp(id.b, db->hdr.db_id.b, 16) || !eng_sig_eq(&sig, &db->hdr.db_sig)) {
        snprintf(why, wn, "%.120s is the change map of another database", m->path);
        return 1;
    }
    m->token = token;
    for (uint32_t i = 0; i < nep; i++) {
        m->ep[i].id = om_r64(&c);
        m->ep[i].dbtime = om_r64(&c);
        m->ep[i].time = om_r64(&c);
        uint32_t bytes = om_r32(&c);
        const uint8_t *p = bytes <= CBT_MAXB ? om_cur_take(&c, bytes) : NULL;
        if (!p || c.bad) {
            snprintf(why, wn, "%.120s is truncated", m->path);
            return 1;
        }
        m->ep[i].bits = bytes ? malloc(bytes) : NULL;
        if (bytes && !m->ep[i].bits) {
            snprintf(why, wn, "out of memory reading the change map");
            return 1;
        }
        if (bytes) memcpy(m->ep[i].bits, p, bytes);
        m->ep[i].bytes = bytes;
        m->nep = i + 1;
    }
    if (c.bad || c.off != c.len) {
        snprintf(why, wn, "%.120s has %s bytes after its epochs", m->path,
                 c.bad ? "too few" : "extra");
        return 1;
    }
    return 0;
}

/* OM_KIND_* of E00.cbt in the log folder (OM_KIND_OTHER when the folder cannot be read). */
static int what_is_there(eng_db *db)
{
    char name[32];
    snprintf(name, sizeof name, "%s.cbt", db->base);
    om_dir *d = NULL;
    int kind = om_dir_open(db->vfs, NULL, db->logdir, OM_D_FOLLOW, &d) ? OM_KIND_OTHER
                                                                       : om_kind_at(d, name);
    om_err_clear();
    om_dir_close(d);
    return kind < 0 ? OM_KIND_OTHER : kind;
}

/* 1 with why when the .edb was written since the last write of E00.chk (its stamp differs
 * from the one E00.chk recorded), or either cannot be read; else 0. */
static int written_since_chk(eng_db *db, char *why, size_t wn)
{
    eng_chkfile ck;
    om_stamp now;
    if (eng_chk_read(db->vfs, db->chk, &ck, NULL) || om_fstamp(db->edbf, &now)) {
        snprintf(why, wn, "%.300s", om_err_detail());
        om_err_clear();
        return 1;
    }
    if (!memcmp(&now, &ck.edb, sizeof now)) return 0;
    snprintf(why, wn,
             "%.120s was written since its last checkpoint by something other than the store (a "
             "tool or a recovery by dbutil while the store was stopped, or the store killed "
             "while writing pages): its inode, size or times are not those E00.chk recorded",
             db->edb);
    return 1;
}

int eng_cbt_open(eng_db *db)
{
    struct eng_cbt *m = calloc(1, sizeof *m);
    if (!m) return om_errf(OM_E_OutOfMemory, "opening %s: out of memory", db->edb);
    eng_cbt_path(m->path, sizeof m->path, db->logdir, db->base);
    uint8_t *b = NULL;
    size_t n = 0;
    int bad = 0, kind = what_is_there(db);
    if (kind == OM_KIND_NONE) {
        snprintf(m->why, sizeof m->why, "%.120s has no change map", db->edb);
        bad = 1;
    } else if (kind != OM_KIND_FILE) {
        /* Never opened: a fifo would hold the mount for ever (a link is never followed). */
        snprintf(m->why, sizeof m->why, "%.120s is not a regular file", m->path);
        bad = 1;
    } else if (om_read_file(db->vfs, m->path, &b, &n)) {
        snprintf(m->why, sizeof m->why, "%.120s cannot be read: %s", m->path, om_err_detail());
        om_err_clear();
        bad = 1;
    } else {
        bad = decode(db, b, n, m, m->why, sizeof m->why);
    }
    free(b);
    if (!bad && (!db->hdr.cbt_token || db->hdr.cbt_token != m->token)) {
        snprintf(
            m->why, sizeof m->why,
            "%.120s's header does not carry the token of its change map (the file was restored, "
            "copied in, repaired or recovered without it)",
            db->edb);
        bad = 1;
    }
    if (!bad) bad = written_since_chk(db, m->why, sizeof m->why);
    if (bad) {
        /* Knows no epoch, so it vouches for nothing; a new token, so the header that follows it
         * (once the first checkpoint writes both) is never one a copy elsewhere carries. */
        for (uint32_t i = 0; i < m->nep; i++)
            free(m->ep[i].bits);
        m->nep = 0;
        m->token = 0;
        m->dirty = 1;
        om_info("%s: change map not trusted: %s", db->edb, m->why);
    }
    db->cbt = m;
    return 0;
}

/* E00.cbt could not be written (its disk full, the name taken by a directory): the database goes
 * on as one that keeps no map rather than refusing writes. The header's token is cleared,
 * durably, before the pages the file does not name reach the .edb, so the E00.cbt left in place
 * is never trusted; the map forgets its epochs (the next full reads everything) and is written
 * again, with a new token, at the next page write or checkpoint. */
static int not_written(eng_db *db)
{
    struct eng_cbt *m = db->cbt;
    int was = m->nep || db->hdr.cbt_token;
    snprintf(m->why, sizeof m->why, "%.120s could not be written: %.240s", m->path,
             om_err_detail());
    om_err_clear();
    if (was) om_warn("%s: %s; the next full backup reads every page", db->edb, m->why);
    for (uint32_t i = 0; i < m->nep; i++)
        free(m->ep[i].bits);
    m->nep = 0;
    m->dirty = 1;
    if (!db->hdr.cbt_token) return 0;
    db->hdr.cbt_token = 0;
    int rc = eng_dbhdr_write(db->edbf, &db->hdr);
    return rc ? om_err_ctx(rc, "clearing the change map's token in %s", db->edb) : 0;
}

/* E00.cbt from the map in memory with a new token, durably; then the header with that token,
 * durably, before any page the new marks are for is written (the rules at the top). */
static int persist(eng_db *db)
{
    struct eng_cbt *m = db->cbt;
    uint64_t token = new_token();
    size_t n = 56 + 8;
    for (uint32_t i = 0; i < m->nep; i++)
        n += 28 + m->ep[i].bytes;
    uint8_t *b = malloc(n);
    if (!b) return om_errf(OM_E_OutOfMemory, "writing %s: out of memory", m->path);
    om_cur c = om_cur_make(b, n);
    om_wbytes(&c, CBT_MAGIC, 8);
    om_w32(&c, CBT_VERSION);
    om_w32(&c, m->nep);
    om_w64(&c, token);
    om_wbytes(&c, db->hdr.db_id.b, 16);
    om_w64(&c, db->hdr.db_sig.random);
    om_w64(&c, db->hdr.db_sig.time);
    for (uint32_t i = 0; i < m->nep; i++) {
        om_w64(&c, m->ep[i].id);
        om_w64(&c, m->ep[i].dbtime);
        om_w64(&c, m->ep[i].time);
        om_w32(&c, m->ep[i].bytes);
        om_wbytes(&c, m->ep[i].bits, m->ep[i].bytes);
    }
    om_w64(&c, om_xxh3(b, n - 8, CBT_SEED));
    int rc = om_write_file_durable(db->vfs, m->path, b, n);
    free(b);
    if (rc) return not_written(db);
    m->token = token;
    m->dirty = 0;
    /* Not later (a checkpoint's header write after its pages): pages would reach the .edb while
     * the header still carried the token of the version before this one, which does not name
     * them. A crash between the two writes leaves the map untrusted: a full reads everything. */
    db->hdr.cbt_token = token;
    rc = eng_dbhdr_write(db->edbf, &db->hdr);
    return rc ? om_err_ctx(rc, "writing the change map's token to %s", db->edb) : 0;
}

/* Sets bit p in epoch i; 1 when it was clear. */
static int mark(struct eng_cbt *m, uint32_t i, uint32_t p, int *oom)
{
    uint32_t byte = p / 8;
    if (byte >= m->ep[i].bytes) {
        uint32_t nb = m->ep[i].bytes ? m->ep[i].bytes : 4096;
        while (nb <= byte)
            nb *= 2;
        uint8_t *x = realloc(m->ep[i].bits, nb);
        if (!x) {
            *oom = 1;
            return 0;
        }
        memset(x + m->ep[i].bytes, 0, nb - m->ep[i].bytes);
        m->ep[i].bits = x;
        m->ep[i].bytes = nb;
    }
    uint8_t bit = (uint8_t)(1u << (p % 8));
    if (m->ep[i].bits[byte] & bit) return 0;
    m->ep[i].bits[byte] |= bit;
    return 1;
}

int eng_cbt_note(eng_db *db, const uint32_t *pages, uint32_t n)
{
    if (!db->cbt) {
        /* Pages change without a map: no map may vouch for this file from now on. */
        if (!db->hdr.cbt_token || !n) return 0;
        db->hdr.cbt_token = 0;
        return eng_dbhdr_write(db->edbf, &db->hdr);
    }
    struct eng_cbt *m = db->cbt;
    int oom = 0;
    for (uint32_t k = 0; k < n; k++)
        for (uint32_t i = 0; i < m->nep; i++)
            m->dirty |= mark(m, i, pages[k], &oom);
    if (oom) {
        /* Cannot record them: forget every epoch (the next full reads everything). */
        om_warn("%s: out of memory for the change map: the next full backup reads every page",
                db->edb);
        for (uint32_t i = 0; i < m->nep; i++)
            free(m->ep[i].bits);
        m->nep = 0;
        m->dirty = 1;
    }
    return m->dirty ? persist(db) : 0;
}

int eng_cbt_flush(eng_db *db)
{
    return db->cbt && db->cbt->dirty ? persist(db) : 0;
}

uint64_t eng_cbt_epoch_start(eng_db *db)
{
    struct eng_cbt *m = db->cbt;
    if (!m) return 0;
    if (m->nep == ENG_CBT_EPOCHS) {
        free(m->ep[0].bits);
        memmove(&m->ep[0], &m->ep[1], (ENG_CBT_EPOCHS - 1) * sizeof m->ep[0]);
        m->nep--;
    }
    uint32_t i = m->nep++;
    memset(&m->ep[i], 0, sizeof m->ep[i]);
    m->ep[i].id = new_token();
    m->ep[i].dbtime = db->dbtime;
    m->ep[i].time = om_now_ns();
    /* Written at the next page write (before it) or the next checkpoint, with a new token:
     * until then the file knows the epoch not, and a full relative to it reads everything. */
    m->dirty = 1;
    return m->ep[i].id;
}

/* ---- what the backup asks (engine.h) ---- */

int eng_db_change_epochs(eng_db *db, eng_change_epoch *v, uint32_t cap, uint32_t *n, char *why,
                         size_t wn)
{
    eng_role_acquire(db);
    struct eng_cbt *m = db->cbt;
    *n = 0;
    if (why && wn) snprintf(why, wn, "%.300s", !m ? "no change map is kept" : m->why);
    for (uint32_t i = 0; m && i < m->nep && *n < cap; i++) {
        /* An epoch E00.cbt does not hold yet (its freeze is newer than the last write) is
         * listed: it holds no page yet, and no page reached the .edb since it began. */
        v[*n].id = m->ep[i].id;
        v[*n].dbtime = m->ep[i].dbtime;
        v[*n].time = m->ep[i].time;
        (*n)++;
    }
    eng_role_release(db);
    return 0;
}

int eng_db_changed_pages(eng_db *db, uint64_t epoch, uint32_t **runs, uint32_t *nruns)
{
    *runs = NULL;
    *nruns = 0;
    eng_role_acquire(db);
    struct eng_cbt *m = db->cbt;
    int rc = om_errf(OM_E_ObjectNotFound, "%s: the change map has no epoch %016llx", db->edb,
                     (unsigned long long)epoch);
    for (uint32_t i = 0; m && i < m->nep; i++) {
        if (m->ep[i].id != epoch) continue;
        om_err_clear();
        rc = 0;
        uint32_t cap = 0, *v = NULL;
        uint64_t nbits = (uint64_t)m->ep[i].bytes * 8;
        for (uint64_t p = 0; p < nbits && !rc; p++) {
            if (!(m->ep[i].bits[p / 8] & (1u << (p % 8)))) continue;
            uint64_t q = p;
            while (q + 1 < nbits && (m->ep[i].bits[(q + 1) / 8] & (1u << ((q + 1) % 8))))
                q++;
            if (*nruns + 2 > cap) {
                cap = cap ? cap * 2 : 64;
                uint32_t *x = realloc(v, cap * sizeof *v);
                if (!x) {
                    rc = om_errf(OM_E_OutOfMemory, "out of memory");
                    break;
                }
                v = x;
            }
            v[(*nruns)++] = (uint32_t)p;
            v[(*nruns)++] = (uint32_t)(q - p + 1);
            p = q;
        }
        if (rc) {
            free(v);
            *nruns = 0;
        } else {
            *runs = v;
            *nruns /= 2;
        }
        break;
    }
    eng_role_release(db);
    return rc;
}
