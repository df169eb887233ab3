/* Stored copies found damaged: damaged.json, the list a verify or a restore adds to when a copy
 * of a block fails its checks, and which turns the index and the backups away from those
 * copies (docs/design.md, "Damaged copies are stored again"; repo.h has the file's format).
 *
 * What the list changes:
 * - the index points at another copy of the id when it knows one (repo.c, bk_index_avoid), so a
 *   fresh copy a later backup stored serves every set that names the id, older ones included;
 * - a backup treats an id whose every copy is listed as absent (bk_block_usable): it stores the
 *   block again when it has it, and a synthetic full reads the pages again instead of slicing
 *   such a block;
 * - expire counts a listed copy as unused when the index knows a good one (the pack loses it),
 *   and drops the entries whose copy is gone (bk_damaged_prune).
 * Entries are locations (block id, pack, offset), not ids: with ids alone the index could not
 * tell a fresh copy from the damaged one when it loads them in another order. An entry whose id
 * has a good copy is "stored again"; it stays until expire removes the damaged copy.
 *
 * Writers: verify and restore (bk_damaged_save, under the shared repository lock, so several
 * may run at once: the read, merge and write are serialised by an exclusive flock on
 * locks/damaged.lock) and expire (under the exclusive repository lock: nobody else has the
 * repository). The file is replaced whole through the durable-file helper (base/vfs.h), so a
 * reader never sees a partial one. A file that cannot be used is ignored with its reason: the
 * list only ever makes a backup store more, so losing it costs no data (a backup then may
 * reuse a damaged copy again, which the next verify finds and lists again). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "backup/repo_internal.h"
#include "base/error.h"
#include "base/proto.h"
#include "base/time.h"

#define DMG_FILE    "damaged.json"
#define DMG_FORMAT  "ombra-damaged-blocks"
#define DMG_VERSION 1
#define DMG_MAX     (16u << 20) /* bytes: ~60,000 entries */
#define DMG_WHAT    300         /* characters of "what" kept */

/* ---- the file ---- */

/* The checksum over the entries (compact, sorted keys): damage to the file is found. */
static int entries_sum(json_t *blocks, char hex[65])
{
    char *t = json_dumps(blocks, JSON_COMPACT | JSON_SORT_KEYS);
    uint8_t d[32];
    unsigned n = 0;
    if (!t) return om_errf(OM_E_OutOfMemory, "out of memory");
    int ok = EVP_Digest(t, strlen(t), d, &n, EVP_sha256(), NULL) == 1;
    free(t);
    if (!ok) return om_errf(OM_E_Internal, "SHA-256 failed in OpenSSL");
    bk_hex(d, sizeof d, hex);
    return 0;
}

/* 1 when s is exactly the lower-case hex of n bytes (into b). */
static int hex_ok(const char *s, uint8_t *b, size_t n)
{
    char back[65];
    if (!s || bk_unhex(s, b, n)) return 0;
    bk_hex(b, n, back);
    return !strcmp(back, s);
}

/* One entry checked; its id, pack and offset out. */
static int entry_ok(json_t *e, uint8_t id[BK_ID_LEN], const char **pack, uint64_t *off)
{
    uint8_t pk[16];
    json_t *o = json_object_get(e, "offset");
    const char *by = om_json_str_or(e, "by", "");
    *pack = om_json_str_or(e, "pack", NULL);
    if (!json_is_object(e) || !hex_ok(om_json_str_or(e, "block", NULL), id, BK_ID_LEN) ||
        !hex_ok(*pack, pk, sizeof pk) || !json_is_integer(o) ||
        json_integer_value(o) < BK_PACK_HDR || json_integer_value(o) > (1ll << 50) ||
        (strcmp(by, "verify") && strcmp(by, "restore") && strcmp(by, "expire")) ||
        !json_is_string(json_object_get(e, "found")) ||
        strlen(om_json_str_or(e, "found", "")) > 40 ||
        !json_is_string(json_object_get(e, "what")) ||
        strlen(om_json_str_or(e, "what", "")) > DMG_WHAT + 10)
        return 0;
    *off = (uint64_t)json_integer_value(o);
    return 1;
}

/* Reads damaged.json: *blocks its entries (an empty array when there is no file). Returns 0, or
 * 1 with why (one phrase) when the file is there but cannot be used; <0 when it could not be
 * read at all. */
static int read_file(bk_repo *r, json_t **blocks, char *why, size_t wn)
{
    *blocks = NULL;
    int kind = om_kind_at(r->root, DMG_FILE);
    if (kind < 0) return kind;
    if (kind == OM_KIND_NONE) {
        *blocks = json_array();
        return *blocks ? 0 : om_errf(OM_E_OutOfMemory, "out of memory");
    }
    if (kind != OM_KIND_FILE) {
        /* A fifo would hold the open for ever, a link point anywhere: never opened. */
        snprintf(why, wn, "it is not a regular file");
        return 1;
    }
    om_file *f = NULL;
    uint64_t size = 0;
    char *data = NULL;
    int rc = om_open_at(r->root, DMG_FILE, OM_O_RDONLY, &f);
    if (!rc) rc = om_fsize(f, &size);
    if (!rc && size > DMG_MAX) {
        om_close(f);
        snprintf(why, wn, "it holds %llu bytes, more than a list of damaged blocks can (%u)",
                 (unsigned long long)size, DMG_MAX);
        return 1;
    }
    if (!rc && !(data = malloc(size + 1))) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc) rc = om_pread_full(f, data, size, 0);
    om_close(f);
    if (rc) {
        free(data);
        if (rc == OM_E_FileNotFound) { /* removed meanwhile */
            *blocks = json_array();
            return 0;
        }
        if (rc == OM_E_OutOfMemory) return rc;
        /* Another user's file (a verify run as root), one swapped in since: no reason to stop
         * a restore or a backup, which read the list only to avoid damaged copies. */
        snprintf(why, wn, "it cannot be read (%.200s)", om_err_detail());
        om_err_clear();
        return 1;
    }
    json_error_t je;
    json_t *j = json_loadb(data, size, 0, &je), *b = json_object_get(j, "blocks");
    free(data);
    char sum[65] = "";
    size_t i;
    json_t *e;
    int bad = 0;
    if (!j)
        snprintf(why, wn, "not JSON (line %d: %.100s)", je.line, je.text);
    else if (!json_is_object(j))
        snprintf(why, wn, "not a list of damaged blocks (not a JSON object)");
    else if (strcmp(om_json_str_or(j, "format", ""), DMG_FORMAT) ||
             om_json_int_or(j, "version", 0) != DMG_VERSION || !json_is_array(b))
        snprintf(why, wn, "not a list of damaged blocks of this format (%s, version %d)",
                 DMG_FORMAT, DMG_VERSION);
    else if (strcmp(om_json_str_or(j, "repository", ""), r->uuid_str))
        snprintf(why, wn, "it belongs to repository %.40s, not to this one (%s)",
                 om_json_str_or(j, "repository", "(none named)"), r->uuid_str);
    else if ((rc = entries_sum(b, sum)) || strcmp(sum, om_json_str_or(j, "sha256", "")))
        snprintf(why, wn, "its entries do not match their checksum (damaged or edited)");
    else
        bad = -1;
    if (bad == -1) {
        bad = 0;
        json_array_foreach(b, i, e)
        {
            uint8_t id[BK_ID_LEN];
            const char *pack;
            uint64_t off;
            if (!entry_ok(e, id, &pack, &off)) {
                snprintf(why, wn, "entry %zu is malformed", i);
                bad = 1;
                break;
            }
        }
    } else
        bad = 1;
    if (!bad) *blocks = json_incref(b);
    json_decref(j);
    return rc ? rc : bad;
}

static int write_file(bk_repo *r, json_t *blocks)
{
    char sum[65];
    int rc = entries_sum(blocks, sum);
    if (rc) return rc;
    json_t *j = json_pack("{s:s, s:i, s:s, s:O, s:s}", "format", DMG_FORMAT, "version", DMG_VERSION,
                          "repository", r->uuid_str, "blocks", blocks, "sha256", sum);
    char *text = j ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!text) return om_errf(OM_E_OutOfMemory, "out of memory");
    rc = om_durable_write_at(r->root, DMG_FILE, text, strlen(text), OM_RENAME_REPLACE);
    free(text);
    return rc ? om_err_ctx(rc, "writing %s/%s", r->path, DMG_FILE) : 0;
}

/* The writers of the file among themselves (verify and restore under the shared repository
 * lock): one read-merge-write at a time. Another file system (bk_repo_open_vfs) lives in this
 * process alone: dmg_m is enough. *fd: the lock's descriptor, -1 when none was needed. */
static int lock_file(bk_repo *r, int *fd)
{
    char p[BK_PATH_MAX];
    *fd = -1;
    if (r->vfs != om_vfs_posix()) return 0;
    int rc = bk_path(r, p, sizeof p, "locks/damaged.lock");
    if (rc) return rc;
    *fd = open(p, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (*fd < 0) return om_errf(om_err_from_errno(errno), "opening %s: %s", p, strerror(errno));
    while (flock(*fd, LOCK_EX) != 0)
        if (errno != EINTR) {
            int e = errno;
            close(*fd);
            *fd = -1;
            return om_errf(om_err_from_errno(e), "locking %s: %s", p, strerror(e));
        }
    return 0;
}

static void unlock_file(int fd)
{
    if (fd >= 0) close(fd); /* releases the flock */
}

/* ---- the handle's list ---- */

/* what, cut to DMG_WHAT bytes of printable ASCII (a detail may hold any path's bytes, and the
 * file is JSON: UTF-8). */
static void clean_what(const char *in, char out[DMG_WHAT + 1])
{
    size_t k = 0;
    for (; in && in[k] && k < DMG_WHAT; k++)
        out[k] = (unsigned char)in[k] < 0x20 || (unsigned char)in[k] > 0x7e ? '?' : in[k];
    out[k] = 0;
}

/* Adds entry e (checked) to the handle: its key to bad, itself to dmg_all. 1 when it was new.
 * dmg_m held. */
static int know(bk_repo *r, json_t *e)
{
    uint8_t id[BK_ID_LEN], key[BK_ID_LEN];
    const char *pack;
    uint64_t off;
    if (!entry_ok(e, id, &pack, &off)) return 0;
    bk_loc_key(id, pack, off, key);
    bk_ent k = {0};
    memcpy(k.id, key, BK_ID_LEN);
    int added = 0;
    pthread_rwlock_wrlock(&r->lk);
    bk_map_put(&r->bad, &k, &added);
    pthread_rwlock_unlock(&r->lk);
    if (added) json_array_append(r->dmg_all, e);
    return added;
}

/* know () for each entry of blocks; the ones new to the handle (a JSON array). dmg_m held. */
static json_t *know_many(bk_repo *r, json_t *blocks)
{
    json_t *fresh = json_array(), *e;
    size_t i;
    json_array_foreach(blocks, i, e) if (know(r, e)) json_array_append(fresh, e);
    return fresh;
}

/* The index turned away from the copies fresh names (dmg_m not held: lock order). */
static void avoid_all(bk_repo *r, json_t *fresh)
{
    json_t *e;
    size_t i;
    json_array_foreach(fresh, i, e)
    {
        uint8_t id[BK_ID_LEN];
        if (!bk_unhex(om_json_str_or(e, "block", ""), id, BK_ID_LEN)) bk_index_avoid(r, id);
    }
    json_decref(fresh);
}

int bk_damaged_load(bk_repo *r, int again)
{
    pthread_mutex_lock(&r->dmg_m);
    if (r->dmg_loaded && !again) {
        pthread_mutex_unlock(&r->dmg_m);
        return 0;
    }
    json_t *blocks = NULL;
    char why[300] = "";
    int rc = read_file(r, &blocks, why, sizeof why);
    if (rc == 1) {
        snprintf(r->dmg_problem, sizeof r->dmg_problem, "%s/%s: %s", r->path, DMG_FILE, why);
        rc = 0;
    } else if (!rc)
        r->dmg_problem[0] = 0;
    json_t *fresh = know_many(r, blocks);
    if (!rc) r->dmg_loaded = 1;
    pthread_mutex_unlock(&r->dmg_m);
    avoid_all(r, fresh);
    json_decref(blocks);
    return rc;
}

int bk_damaged_note(bk_repo *r, const uint8_t id[BK_ID_LEN], const char *pack, uint64_t off,
                    const char *by, const char *what)
{
    om_err_saved keep;
    om_err_save(&keep, 1); /* the detail, whatever the code */
    char hex[65], t[40], why[DMG_WHAT + 1];
    bk_hex(id, BK_ID_LEN, hex);
    clean_what(what ? what : "?", why);
    json_t *e = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}", "block", hex, "pack", pack, "offset",
                          (json_int_t)off, "found", om_time_iso(om_now_ns(), t, sizeof t), "by", by,
                          "what", why);
    pthread_mutex_lock(&r->dmg_m);
    if (e && know(r, e)) json_array_append(r->dmg_new, e);
    pthread_mutex_unlock(&r->dmg_m);
    json_decref(e);
    int good = bk_index_avoid(r, id);
    om_err_restore(&keep);
    return good;
}

int bk_damaged_save(bk_repo *r)
{
    pthread_mutex_lock(&r->dmg_m);
    /* Nothing new, and the file is fine (an unusable one is replaced by what is known). */
    if (!json_array_size(r->dmg_new) && !r->dmg_problem[0]) {
        pthread_mutex_unlock(&r->dmg_m);
        return 0;
    }
    int fd = -1;
    json_t *blocks = NULL;
    char why[300] = "";
    int rc = lock_file(r, &fd);
    if (!rc) rc = read_file(r, &blocks, why, sizeof why);
    if (rc == 1) { /* unusable: replaced by what this handle knows */
        rc = 0;
        blocks = json_deep_copy(r->dmg_all);
    }
    if (!rc) {
        /* The entries the file has, plus this handle's new ones not among them. */
        json_t *keys = json_object(), *e;
        size_t i;
        json_array_foreach(blocks, i, e)
        {
            char k[200];
            snprintf(k, sizeof k, "%s:%s:%lld", om_json_str_or(e, "block", ""),
                     om_json_str_or(e, "pack", ""), (long long)om_json_int_or(e, "offset", 0));
            json_object_set_new(keys, k, json_true());
        }
        json_array_foreach(r->dmg_new, i, e)
        {
            char k[200];
            snprintf(k, sizeof k, "%s:%s:%lld", om_json_str_or(e, "block", ""),
                     om_json_str_or(e, "pack", ""), (long long)om_json_int_or(e, "offset", 0));
            if (!json_object_get(keys, k)) json_array_append(blocks, e);
        }
        json_decref(keys);
        rc = write_file(r, blocks);
    }
    json_t *fresh = NULL;
    if (!rc) { /* what other processes listed meanwhile, this handle knows now too */
        json_array_clear(r->dmg_new);
        r->dmg_problem[0] = 0;
        fresh = know_many(r, blocks);
    }
    unlock_file(fd);
    pthread_mutex_unlock(&r->dmg_m);
    if (fresh) avoid_all(r, fresh);
    json_decref(blocks);
    return rc;
}

int bk_damaged_prune(bk_repo *r, size_t *dropped)
{
    json_t *blocks = NULL;
    *dropped = 0;
    char why[300] = "";
    int rc = read_file(r, &blocks, why, sizeof why);
    if (rc) return rc == 1 ? 0 : rc; /* an unusable file is left for verify to replace */
    json_t *keep = json_array(), *e;
    size_t i;
    json_array_foreach(blocks, i, e)
    {
        uint8_t id[BK_ID_LEN];
        const char *pack;
        uint64_t off;
        if (entry_ok(e, id, &pack, &off) && bk_index_has_copy(r, id, pack, off))
            json_array_append(keep, e);
    }
    *dropped = json_array_size(blocks) - json_array_size(keep);
    if (*dropped) rc = write_file(r, keep);
    json_decref(keep);
    json_decref(blocks);
    return rc;
}

int bk_damaged_list(bk_repo *r, json_t **out)
{
    *out = NULL;
    int rc = bk_damaged_load(r, 0);
    if (rc) return rc;
    json_t *list = json_array(), *e;
    size_t i, waiting = 0;
    pthread_mutex_lock(&r->dmg_m);
    json_t *all = json_deep_copy(r->dmg_all);
    json_t *res = json_pack("{s:s, s:s?}", "file", DMG_FILE, "problem",
                            r->dmg_problem[0] ? r->dmg_problem : NULL);
    pthread_mutex_unlock(&r->dmg_m);
    json_array_foreach(all, i, e)
    {
        uint8_t id[BK_ID_LEN];
        const char *pack;
        uint64_t off;
        if (!entry_ok(e, id, &pack, &off) || !bk_index_has_copy(r, id, pack, off)) continue;
        int good = bk_block_usable(r, id);
        waiting += !good;
        json_object_set_new(e, "good_copy", json_boolean(good));
        json_array_append(list, e);
    }
    json_decref(all);
    if (!res || !list) {
        json_decref(res);
        json_decref(list);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    json_object_set_new(res, "blocks", list);
    json_object_set_new(res, "waiting", json_integer((json_int_t)waiting));
    *out = res;
    return 0;
}
