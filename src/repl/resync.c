/* A passive copy's files across a change of active (resync.h). */
#include "repl/resync.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "base/vfs.h"
#include "engine/format.h"

int rp_epoch_read(const char *work, uint32_t *epoch)
{
    char p[4200];
    uint8_t *data = NULL;
    size_t n = 0;
    *epoch = 0;
    snprintf(p, sizeof p, "%s/epoch", work);
    int rc = om_read_file(om_vfs_posix(), p, &data, &n);
    if (rc == OM_E_FileNotFound) {
        om_err_clear();
        return 0;
    }
    if (rc) return rc;
    char buf[24] = "";
    char *end = NULL;
    if (n && n < sizeof buf) memcpy(buf, data, n);
    free(data);
    errno = 0;
    unsigned long v = strtoul(buf, &end, 10);
    if (!n || n >= sizeof buf || end == buf || (*end && *end != '\n') || errno || !v ||
        v > UINT32_MAX)
        return om_errf(OM_E_InvalidParameter,
                       "%s holds no epoch number. HINT: remove it; the copy then checks its files "
                       "against the active's epoch again",
                       p);
    *epoch = (uint32_t)v;
    return 0;
}

int rp_epoch_write(const char *work, uint32_t epoch)
{
    char p[4200], buf[24];
    snprintf(p, sizeof p, "%s/epoch", work);
    int n = snprintf(buf, sizeof buf, "%u\n", epoch);
    return om_write_file_durable(om_vfs_posix(), p, buf, (size_t)n);
}

/* ---- setting divergent files aside ---- */

typedef struct aside {
    om_dir *logs, *to;
    const char *base;
    uint32_t since, moved;
    int rc;
} aside;

/* One file from `from` into `to` under the same name: a rename, or, across filesystems, a
 * durable copy and then the removal of the original. */
static int move_one(om_dir *from, om_dir *to, const char *name)
{
    int rc = om_rename_at(from, name, to, name, 0);
    if (rc == 0 || rc == OM_E_FileNotFound) return rc;
    om_file *f = NULL;
    uint64_t n = 0;
    uint8_t *buf = NULL;
    om_err_clear();
    rc = om_open_at(from, name, OM_O_RDONLY, &f);
    if (!rc) rc = om_fsize(f, &n);
    if (!rc && n > (64u << 20))
        rc = om_errf(OM_E_InvalidParameter, "%s/%s: too big", from->path, name);
    if (!rc && !(buf = malloc(n ? n : 1))) rc = om_errf(OM_E_OutOfMemory, "%s", name);
    if (!rc) rc = om_pread_full(f, buf, n, 0);
    om_close(f);
    if (!rc) rc = om_durable_write_at(to, name, buf, n, 0);
    free(buf);
    if (!rc) rc = om_unlink_at(from, name);
    return rc;
}

static int aside_one(void *arg, const char *name)
{
    aside *a = arg;
    char cur[16], tmp[16];
    uint32_t g = 0;
    snprintf(cur, sizeof cur, "%s.log", a->base);
    snprintf(tmp, sizeof tmp, "%stmp.log", a->base);
    int numbered = eng_parse_log_name(name, a->base, &g);
    if (!(numbered && g >= a->since) && strcmp(name, cur) && strcmp(name, tmp)) return 0;
    if (om_kind_at(a->logs, name) != OM_KIND_FILE) return 0; /* a link or a folder: not ours */
    int rc = move_one(a->logs, a->to, name);
    if (!rc) a->moved++;
    if (rc && rc != OM_E_FileNotFound && !a->rc) a->rc = rc;
    return 0;
}

/* What rp_set_aside would move: 1 when logs or work holds any of it. */
static int found_one(void *arg, const char *name)
{
    aside *a = arg;
    uint32_t g = 0;
    char cur[16], tmp[16];
    snprintf(cur, sizeof cur, "%s.log", a->base);
    snprintf(tmp, sizeof tmp, "%stmp.log", a->base);
    if (((eng_parse_log_name(name, a->base, &g) && g >= a->since) || !strcmp(name, cur) ||
         !strcmp(name, tmp)) &&
        om_kind_at(a->logs, name) == OM_KIND_FILE)
        a->moved++;
    return 0;
}

int rp_edb_hold(const char *edb, const char *what, om_file **held)
{
    om_vfs *v = om_vfs_posix();
    *held = NULL;
    int rc = om_open(v, edb, OM_O_RDONLY, held);
    if (rc == OM_E_FileNotFound) {
        om_err_clear();
        return 0;
    }
    if (!rc && v->lock && (rc = v->lock(*held)) == OM_E_DatabaseInUse)
        rc = om_errf(OM_E_DatabaseInUse,
                     "%s is still open (its store has not dismounted it after the change of "
                     "active): nothing in %s is touched",
                     edb, what);
    if (rc) {
        om_close(*held);
        *held = NULL;
    }
    return rc;
}

int rp_set_aside(const char *work, const char *logs, const char *base, const char *edb,
                 uint32_t since_gen, uint32_t epoch, uint32_t *moved, char *where, size_t wn)
{
    om_vfs *v = om_vfs_posix();
    om_dir *wd = NULL, *ld = NULL, *dv = NULL, *to = NULL;
    om_file *held = NULL;
    char sname[16], folder[64] = "";
    *moved = 0;
    if (where && wn) where[0] = 0;
    snprintf(sname, sizeof sname, "%s.stream", base);
    int rc = edb ? rp_edb_hold(edb, logs, &held) : 0;
    if (!rc) rc = om_dir_open(v, NULL, work, 0, &wd);
    if (!rc) {
        rc = om_dir_open(v, NULL, logs, 0, &ld);
        if (rc == OM_E_FileNotFound) { /* no log folder: only the stream may be there */
            om_err_clear();
            rc = 0;
        }
    }
    aside a = {.logs = ld, .base = base, .since = since_gen};
    if (!rc && ld) rc = om_list_at(ld, found_one, &a);
    int stream = rc ? 0 : om_kind_at(wd, sname) == OM_KIND_FILE;
    if (rc || (!a.moved && !stream)) goto out;
    /* <epoch>-<UTC time>: one folder per change of active seen, in the order they came. */
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(folder, sizeof folder, "%u-%04d%02d%02dT%02d%02d%02dZ", epoch, tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    rc = om_dir_open(v, wd, "divergent", OM_D_CREATE, &dv);
    if (!rc) rc = om_dir_open(v, dv, folder, OM_D_CREATE, &to);
    if (!rc) rc = om_dir_sync(dv);
    if (!rc) rc = om_dir_sync(wd);
    a = (aside){.logs = ld, .to = to, .base = base, .since = since_gen};
    if (!rc && ld) rc = om_list_at(ld, aside_one, &a);
    if (!rc) rc = a.rc;
    if (!rc && stream) {
        rc = move_one(wd, to, sname);
        if (!rc) a.moved++;
        if (rc == OM_E_FileNotFound) rc = 0;
    }
    /* The new names first, then the old ones gone: a crash between leaves a file twice at
     * worst (a copy across filesystems), never nowhere. */
    if (!rc) rc = om_dir_sync(to);
    if (!rc && ld) rc = om_dir_sync(ld);
    if (!rc) rc = om_dir_sync(wd);
    *moved = a.moved;
    if (!rc && where && wn) snprintf(where, wn, "%s/divergent/%s", work, folder);
out:
    om_dir_close(to);
    om_dir_close(dv);
    om_dir_close(ld);
    om_dir_close(wd);
    om_close(held);
    return rc;
}

int rp_edb_past(const char *edb, uint32_t since_gen, int *past, uint32_t *held)
{
    eng_dbhdr h;
    *past = 0;
    if (held) *held = 0;
    int rc = eng_dbhdr_read(om_vfs_posix(), edb, &h, 0, NULL);
    if (rc) return rc;
    uint32_t reached = 0;
    if (h.state == ENG_STATE_CLEAN) {
        reached = h.consistent.gen;
        /* Consistent at (g, 0) holds nothing of g. */
        *past = h.consistent.gen > since_gen || (h.consistent.gen == since_gen && h.consistent.off);
    } else if (h.state == ENG_STATE_DIRTY) {
        /* A checkpoint writes the pages, then Log Required max = the generation the log was
         * in; a passive replay the last generation it replayed: pages never hold anything of a
         * later generation. */
        reached = h.log_req_max;
        *past = h.log_req_max >= since_gen;
    }
    if (held) *held = reached;
    return 0;
}

int rp_stream_promote(const char *work, const char *logs, const char *base, uint32_t gen,
                      uint64_t n)
{
    om_vfs *v = om_vfs_posix();
    om_dir *wd = NULL, *ld = NULL;
    om_file *f = NULL;
    char sname[16], cur[16];
    uint64_t size = 0;
    uint8_t *buf = NULL;
    snprintf(sname, sizeof sname, "%s.stream", base);
    snprintf(cur, sizeof cur, "%s.log", base);
    if (n < ENG_SLOT_SIZE || n > ENG_LOG_SIZE || n % ENG_SLOT_SIZE)
        return om_errf(OM_E_InvalidParameter,
                       "%llu streamed bytes of generation %u are not whole log slots with a header",
                       (unsigned long long)n, gen);
    int rc = om_dir_open(v, NULL, work, 0, &wd);
    if (!rc) rc = om_dir_open(v, NULL, logs, 0, &ld);
    if (!rc && om_kind_at(ld, cur) != OM_KIND_NONE)
        rc = om_errf(OM_E_InvalidParameter,
                     "%s/%s exists already: the streamed part of generation %u is not put over it",
                     logs, cur, gen);
    if (!rc) rc = om_open_at(wd, sname, OM_O_RDONLY, &f);
    if (!rc) rc = om_fsize(f, &size);
    if (!rc && size < n)
        rc = om_errf(OM_E_InvalidParameter, "%s/%s holds %llu bytes, not the %llu streamed", work,
                     sname, (unsigned long long)size, (unsigned long long)n);
    /* calloc: the rest of the generation is zeros, as a log the engine prepares. */
    if (!rc && !(buf = calloc(1, ENG_LOG_SIZE)))
        rc = om_errf(OM_E_OutOfMemory, "promoting the stream of generation %u", gen);
    if (!rc) rc = om_pread_full(f, buf, n, 0);
    eng_loghdr lh;
    if (!rc && (eng_loghdr_decode(buf, &lh) || lh.gen != gen)) {
        om_err_clear();
        rc = om_errf(OM_E_InvalidParameter, "%s/%s does not begin with the header of generation %u",
                     work, sname, gen);
    }
    if (!rc) rc = om_durable_write_at(ld, cur, buf, ENG_LOG_SIZE, 0);
    free(buf);
    om_close(f);
    om_dir_close(ld);
    om_dir_close(wd);
    return rc;
}
