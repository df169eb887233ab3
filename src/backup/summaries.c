/* The sets' summaries kept in the data directory (repo_internal.h; docs/design.md, "The sets'
 * summaries"). A set file's name is the id of its content (its SHA-256, or the MAC under the
 * repository's key), so the summary of a set that read and checked well once is what the same
 * name gives forever: it is kept here, and bk_sets reads only the sets it has not seen.
 *
 *   <data>/cache/sets-<repository id>.json:
 *     "ombra-set-summaries <SUM_FORMAT> <XXH3-64 of the rest, 16 hex>\n" then {"<set id>": summary}
 *
 * It is only ever a shortcut: a file that is missing, torn, of another format, or not a regular
 * file (a link is not followed), or a folder that is not the caller's own, is as none, and the
 * next bk_sets writes it again; a failure to write it changes no result. Each save and forget is
 * one read, merge and write under the file's lock (lock_in). A set found damaged
 * whole (bk_set_load, verify, a backup's parent) loses its summary (bk_summaries_forget); the
 * commands that read every set whole (restore, expire, repo stats) decide by what they read and
 * write the summaries again from it (verify.c, list_sets). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backup/repo_internal.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/paths.h"
#include "base/uuid.h"
#include "base/vfs.h"

/* Raised with any change to what a summary holds or to bk_set_check: a file of another
 * format is rebuilt from the sets. */
#define SUM_FORMAT    1
#define SUM_HEAD      "ombra-set-summaries"
#define SUM_MAX_BYTES (1u << 30)

/* The cache folder (made 0700 when missing; NULL and no error when it cannot be had). It must
 * be the caller's own and writable by nobody else (OM_D_OWN): another user who could put a file
 * there could change what listings and backups take a set to be. */
static om_dir *cache_dir(void)
{
    char data[4096];
    om_dir *d = NULL, *c = NULL;
    if (om_data_dir(data, sizeof data) || om_mkdirs(data) ||
        om_dir_open(om_vfs_posix(), NULL, data, OM_D_FOLLOW, &d)) {
        om_err_clear();
        return NULL;
    }
    if (om_dir_open(om_vfs_posix(), d, "cache", OM_D_OWN, &c) == OM_E_FileNotFound) {
        om_err_clear();
        char p[4200];
        if (snprintf(p, sizeof p, "%s/cache", data) < (int)sizeof p && mkdir(p, 0700) == 0)
            (void)om_dir_sync(d);
        (void)om_dir_open(om_vfs_posix(), d, "cache", OM_D_OWN, &c);
    }
    om_dir_close(d);
    om_err_clear();
    return c;
}

static void file_name(const bk_repo *r, char *out, size_t n)
{
    snprintf(out, n, "sets-%s.json", r->uuid_str);
}

/* ---- forgets that could not wait for the lock ----
 *
 * <data>/cache/sets-<repository id>.forgotten.<16 hex>: the ids of one forget (64 hex digits and
 * a newline each), written when the lock could not be had in time (its holder slow or stopped,
 * about to write a file that still holds them). Every load leaves their ids out; a save under
 * the lock leaves them out of what it writes, then removes the markers it read. */

#define MARK_MAX_BYTES (1u << 20)

typedef struct marks {
    char prefix[80];
    size_t plen;
    char (*names)[128];
    size_t n, cap;
    json_t *ids; /* the ids they name, as keys */
} marks;

static int mark_seen(void *arg, const char *name)
{
    marks *mk = arg;
    if (strncmp(name, mk->prefix, mk->plen) || strlen(name) >= sizeof mk->names[0] ||
        om_durable_is_tmp(name, NULL))
        return 0;
    if (mk->n == mk->cap) {
        size_t c = mk->cap ? 2 * mk->cap : 8;
        void *g = realloc(mk->names, c * sizeof *mk->names);
        if (!g) return 0;
        mk->names = g;
        mk->cap = c;
    }
    snprintf(mk->names[mk->n++], sizeof mk->names[0], "%s", name);
    return 0;
}

/* The markers in d now (mk->names, mk->ids), their ids taken out of m. */
static void marks_apply(om_dir *d, const char *uuid, marks *mk, json_t *m)
{
    memset(mk, 0, sizeof *mk);
    mk->ids = json_object();
    mk->plen = (size_t)snprintf(mk->prefix, sizeof mk->prefix, "sets-%s.forgotten.", uuid);
    if (!d || om_list_at(d, mark_seen, mk)) {
        om_err_clear();
        return;
    }
    for (size_t i = 0; i < mk->n; i++) {
        om_file *f = NULL;
        uint64_t sz = 0;
        char *b = NULL;
        if (!om_open_at(d, mk->names[i], OM_O_RDONLY, &f) && !om_fsize(f, &sz) &&
            sz <= MARK_MAX_BYTES && (b = malloc(sz + 1)) && !om_pread_full(f, b, sz, 0)) {
            b[sz] = 0;
            for (char *line = b, *nl; *line; line = nl + 1) {
                if (!(nl = strchr(line, '\n'))) break;
                *nl = 0;
                if (strlen(line) != 64) continue;
                json_object_del(m, line);
                json_object_set_new(mk->ids, line, json_true());
            }
        }
        free(b);
        om_close(f);
    }
    om_err_clear();
}

static void marks_free(marks *mk)
{
    free(mk->names);
    json_decref(mk->ids);
    memset(mk, 0, sizeof *mk);
}

/* Removes the markers read (their ids are out of the file now). */
static void marks_remove(om_dir *d, marks *mk)
{
    for (size_t i = 0; d && i < mk->n; i++)
        (void)om_unlink_at(d, mk->names[i]);
    marks_free(mk);
    om_err_clear();
}

/* A forget that could not take the lock: its ids as a marker of their own. */
static void mark_write(om_dir *d, const char *uuid, char (*ids)[65], size_t n)
{
    uint8_t rnd[8];
    om_random(rnd, sizeof rnd);
    char name[128];
    int at = snprintf(name, sizeof name, "sets-%s.forgotten.", uuid);
    for (int i = 0; i < 8; i++)
        at += snprintf(name + at, sizeof name - (size_t)at, "%02x", rnd[i]);
    char *body = malloc(n * 65 + 1);
    if (!body) return;
    for (size_t i = 0; i < n; i++)
        snprintf(body + i * 65, 66, "%.64s\n", ids[i]);
    (void)om_durable_write_at(d, name, body, (uint64_t)n * 65, 0);
    free(body);
    om_err_clear();
}

/* The map in d's file name, without the ids of the markers there; an empty object when there
 * is none usable. mk (NULL: not wanted): the markers read, for the caller to remove once it has
 * saved without their ids (marks_remove). */
static json_t *load_in(om_dir *d, const char *name, const char *uuid, marks *mk)
{
    om_file *f = NULL;
    uint64_t sz = 0;
    uint8_t *b = NULL;
    json_t *m = NULL;
    if (d && !om_open_at(d, name, OM_O_RDONLY, &f) && !om_fsize(f, &sz) && sz < SUM_MAX_BYTES &&
        (b = malloc(sz + 1)) && !om_pread_full(f, b, sz, 0)) {
        b[sz] = 0;
        /* exactly "<SUM_HEAD> <SUM_FORMAT> <16 lower-case hex digits>\n" */
        char head[64];
        int hl = snprintf(head, sizeof head, "%s %d ", SUM_HEAD, SUM_FORMAT);
        const char *h = (const char *)b, *x = h + hl;
        uint64_t sum = 0;
        int ok = sz > (uint64_t)hl + 17 && !memcmp(h, head, (size_t)hl) && x[16] == '\n';
        for (int i = 0; ok && i < 16; i++) {
            int v = x[i] >= '0' && x[i] <= '9'   ? x[i] - '0'
                    : x[i] >= 'a' && x[i] <= 'f' ? x[i] - 'a' + 10
                                                 : -1;
            ok = v >= 0;
            sum = sum << 4 | (uint64_t)(ok ? v : 0);
        }
        size_t at = (size_t)hl + 17;
        if (ok && om_xxh3(h + at, sz - at, 0) == sum) m = json_loadb(h + at, sz - at, 0, NULL);
    }
    free(b);
    om_close(f);
    om_err_clear();
    if (!json_is_object(m)) {
        json_decref(m);
        m = json_object();
    }
    marks own;
    marks_apply(d, uuid, mk ? mk : &own, m);
    if (!mk) marks_free(&own);
    return m;
}

json_t *bk_summaries_load(const bk_repo *r)
{
    char name[80];
    file_name(r, name, sizeof name);
    om_dir *d = cache_dir();
    json_t *m = load_in(d, name, r->uuid_str, NULL);
    om_dir_close(d);
    return m;
}

/* The lock that makes each change of the file one read, merge and write (its flock, held while
 * it is open): without it a listing that loaded the file before a forget (verify finding a set
 * damaged) wrote the forgotten summary back. Waited for up to wait_ms (a holder only reads and
 * writes the file, no sync); NULL when it cannot be had: a save is then skipped (a shortcut
 * only), a forget leaves a marker. */
enum { SAVE_WAIT_MS = 100, FORGET_WAIT_MS = 2000 };
static om_file *lock_in(om_dir *d, const bk_repo *r, int wait_ms)
{
    char name[80];
    snprintf(name, sizeof name, "sets-%s.lock", r->uuid_str);
    om_file *f = NULL;
    if (!d || om_open_at(d, name, OM_O_CREATE | OM_O_PRIVATE, &f)) {
        om_err_clear();
        return NULL;
    }
    for (int ms = 0; f->vfs->lock; ms += 5) {
        int rc = f->vfs->lock(f);
        om_err_clear();
        if (!rc) break;
        if (rc != OM_E_DatabaseInUse || ms >= wait_ms) {
            om_close(f);
            return NULL;
        }
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
    return f;
}

/* Writes m as d's file name, the lock held (nothing when it holds that already). */
static void save_in(om_dir *d, const char *name, json_t *m)
{
    char *body = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    size_t bl = body ? strlen(body) : 0;
    if (!body || bl >= SUM_MAX_BYTES) d = NULL;
    char head[80];
    int hl = snprintf(head, sizeof head, "%s %d %016llx\n", SUM_HEAD, SUM_FORMAT,
                      (unsigned long long)om_xxh3(body ? body : "", bl, 0));
    om_durable out = {0};
    /* nothing to write when the file holds this already (the whole readers save every time) */
    om_file *f = NULL;
    uint64_t sz = 0;
    uint8_t *old = NULL;
    if (d && !om_open_at(d, name, OM_O_RDONLY, &f) && !om_fsize(f, &sz) &&
        sz == (uint64_t)hl + bl && (old = malloc(sz ? sz : 1)) && !om_pread_full(f, old, sz, 0) &&
        !memcmp(old, head, (size_t)hl) && !memcmp(old + hl, body, bl))
        d = NULL;
    free(old);
    om_close(f);
    /* what a save killed before its rename left (the lock is held: nobody else is saving) */
    if (d) (void)om_durable_sweep(d, name, NULL);
    if (d && !om_durable_begin_private(d, name, &out)) {
        if (om_pwrite(out.f, head, (size_t)hl, 0) || om_pwrite(out.f, body, bl, (uint64_t)hl) ||
            om_durable_place(&out, OM_RENAME_REPLACE))
            om_durable_abort(&out);
    }
    free(body);
    om_err_clear();
}

void bk_summaries_save(const bk_repo *r, json_t *m, json_t *loaded)
{
    char name[80];
    file_name(r, name, sizeof name);
    om_dir *d = cache_dir();
    om_file *lk = lock_in(d, r, SAVE_WAIT_MS);
    if (lk) {
        /* the file as it is now, without the markers' ids, which go from m too */
        marks mk;
        json_t *cur = load_in(d, name, r->uuid_str, &mk), *v;
        const char *id;
        void *tmp;
        json_object_foreach_safe(m, tmp, id, v)
        {
            /* what m took from loaded stays only as the file still has it: forgotten since, it
             * goes (the set is read again at the next listing) */
            if ((loaded && json_object_get(loaded, id) == v &&
                 !json_equal(json_object_get(cur, id), v)) ||
                json_object_get(mk.ids, id))
                json_object_del(m, id);
        }
        json_decref(cur);
        save_in(d, name, m);
        marks_remove(d, &mk); /* their ids are out of the file now */
    }
    om_close(lk); /* releases the lock, after the rename */
    om_dir_close(d);
    om_err_clear();
}

void bk_summaries_forget(const bk_repo *r, char (*ids)[65], size_t n)
{
    if (!n) return;
    char name[80];
    file_name(r, name, sizeof name);
    om_dir *d = cache_dir();
    om_file *lk = lock_in(d, r, FORGET_WAIT_MS);
    if (!lk && d) {
        mark_write(d, r->uuid_str, ids, n);
    } else if (lk) {
        marks mk;
        json_t *m = load_in(d, name, r->uuid_str, &mk);
        for (size_t i = 0; i < n; i++)
            json_object_del(m, ids[i]);
        save_in(d, name, m);
        marks_remove(d, &mk);
        json_decref(m);
    }
    om_close(lk);
    om_dir_close(d);
    om_err_clear();
}
