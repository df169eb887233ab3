/* The restore's progress file (laid.h has the protocol). */
#include "vss/laid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/hash.h"

#define HEAD       "laid "
#define HEAD_LEN   5
#define SESS_LEN   36
#define GEN_AT     (HEAD_LEN + SESS_LEN + 1)
#define GEN_LEN    10
#define CHECK_AT   (GEN_AT + GEN_LEN + 1)
#define CHECK_LEN  16
#define HOLD_TRIES 200 /* of 10 ms: how long a requester waits out a writer's check of the lock */

_Static_assert(CHECK_AT + CHECK_LEN + 1 == VSS_LAID_RECORD, "the record's layout");

static uint64_t check_of(const char *rec)
{
    return om_xxh3(rec, CHECK_AT, 0);
}

void vss_laid_encode(const char *session, uint32_t gen, char out[VSS_LAID_RECORD])
{
    char buf[VSS_LAID_RECORD + 1];
    snprintf(buf, sizeof buf, HEAD "%-36.36s %010u ", session, gen);
    snprintf(buf + CHECK_AT, sizeof buf - CHECK_AT, "%016llx\n", (unsigned long long)check_of(buf));
    memcpy(out, buf, VSS_LAID_RECORD);
}

static int digits(const char *s, size_t n, int hex)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (hex && s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

int vss_laid_decode(const void *buf, size_t n, const char *session, const char *path, uint32_t *gen)
{
    const char *r = buf;
    *gen = 0;
    if (n == 0) return 0;
    if (n < VSS_LAID_RECORD)
        return om_errf(OM_E_FileIOBeyondEOF, "%s: a short record (%zu bytes of %d)", path, n,
                       VSS_LAID_RECORD);
    char want[CHECK_LEN + 1] = "";
    if (n == VSS_LAID_RECORD && digits(r + CHECK_AT, CHECK_LEN, 1))
        snprintf(want, sizeof want, "%016llx", (unsigned long long)check_of(r));
    if (n != VSS_LAID_RECORD || memcmp(r, HEAD, HEAD_LEN) || r[GEN_AT - 1] != ' ' ||
        r[CHECK_AT - 1] != ' ' || r[VSS_LAID_RECORD - 1] != '\n' ||
        !digits(r + GEN_AT, GEN_LEN, 0) || !digits(r + CHECK_AT, CHECK_LEN, 1) ||
        memcmp(r + CHECK_AT, want, CHECK_LEN))
        return om_errf(OM_E_ReadVerifyFailure,
                       "%s: not a progress record, or one read while it "
                       "was written",
                       path);
    if (strlen(session) != SESS_LEN || memcmp(r + HEAD_LEN, session, SESS_LEN))
        return om_errf(OM_E_RestoreInProgress,
                       "%s is written by another restore (session %.36s), not by this one "
                       "(session %s). HINT: let that restore finish or stop it, then restore again",
                       path, r + HEAD_LEN, session);
    unsigned long long v = strtoull(r + GEN_AT, NULL, 10);
    if (v > UINT32_MAX)
        return om_errf(OM_E_ReadVerifyFailure, "%s: generation %llu is out of range", path, v);
    *gen = (uint32_t)v;
    return 0;
}

/* ---- the writer ---- */

int vss_laid_create(om_dir *d, const char *name)
{
    om_file *f = NULL;
    int rc = om_open_at(d, name, OM_O_CREATE | OM_O_EXCL, &f);
    int crc = om_close(f);
    return rc ? rc : crc;
}

/* The folder of a path and the name in it. */
static int open_parent(om_vfs *v, const char *path, om_dir **dir, const char **name)
{
    char d[4096];
    const char *s = strrchr(path, '/');
    if (!s || !s[1] || strlen(path) >= sizeof d)
        return om_errf(OM_E_InvalidPath, "%s does not name a progress file", path);
    *name = s + 1;
    om_dirname(path, d, sizeof d);
    return om_dir_open(v, NULL, d, 0, dir);
}

/* What the file says now: 0 and *gen, or decode's errors. */
static int read_laid(om_file *f, const char *session, uint32_t *gen)
{
    char buf[VSS_LAID_RECORD + 1];
    size_t got = 0;
    int rc = f->vfs->pread(f, buf, sizeof buf, 0, &got);
    if (rc) return rc;
    return vss_laid_decode(buf, got, session, f->path, gen);
}

static int stopped(const vss_laid_waiter *w, uint32_t gen)
{
    return om_errf(OM_E_MissingLogFile,
                   "the restore stopped before laying down log generation %u (%s)", gen, w->path);
}

/* A read that overlapped a write, or a short one: the requester is at work, read again. */
static int transient(int rc)
{
    return rc == OM_E_FileIOBeyondEOF || rc == OM_E_ReadVerifyFailure;
}

void vss_laid_waiter_close(vss_laid_waiter *w)
{
    om_close(w->f);
    om_dir_close(w->dir);
    w->f = NULL;
    w->dir = NULL;
}

/* The requester is gone (its lock could be taken, and is ours now): the file's last word. */
static int last_word(vss_laid_waiter *w, uint32_t gen)
{
    uint32_t have = 0;
    int rc = read_laid(w->f, w->session, &have);
    /* Closing drops our lock: the check holds it no longer than this. */
    vss_laid_waiter_close(w);
    if (rc && !transient(rc)) return rc;
    return !rc && have >= gen ? 0 : stopped(w, gen);
}

int vss_laid_wait(vss_laid_waiter *w, uint32_t gen)
{
    const char *name = NULL;
    int rc = 0;
    if (!w->vfs->lock)
        return om_errf(OM_E_Internal, "%s: waiting on it needs a file system that locks", w->path);
    if (!w->f) {
        rc = open_parent(w->vfs, w->path, &w->dir, &name);
        if (!rc) rc = om_open_at(w->dir, name, OM_O_RDONLY, &w->f);
        if (rc) {
            vss_laid_waiter_close(w);
            return rc == OM_E_FileNotFound ? stopped(w, gen) : rc;
        }
    }
    for (;;) {
        uint32_t have = 0;
        rc = read_laid(w->f, w->session, &have);
        if (!rc && have >= gen) return 0;
        if (rc && !transient(rc)) return rc;
        rc = w->vfs->lock(w->f);
        if (!rc) return last_word(w, gen);
        if (rc != OM_E_DatabaseInUse) return rc;
        om_err_clear();
        if (w->cancel && __atomic_load_n(w->cancel, __ATOMIC_ACQUIRE))
            return om_errf(OM_E_MissingLogFile,
                           "the store is stopping: log generation %u was not laid down yet (%s)",
                           gen, w->path);
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
    }
}

/* ---- the requester ---- */

struct vss_laid {
    om_file *f;
    char session[SESS_LEN + 1];
    uint32_t gen;
};

int vss_laid_hold(om_vfs *v, const char *path, const char *session, vss_laid **out)
{
    *out = NULL;
    if (strlen(session) != SESS_LEN)
        return om_errf(OM_E_InvalidParameter, "'%s' is not a session id", session);
    vss_laid *l = calloc(1, sizeof *l);
    if (!l) return om_errf(OM_E_OutOfMemory, "out of memory");
    memcpy(l->session, session, SESS_LEN + 1);
    om_dir *d = NULL;
    const char *name = NULL;
    int rc = v->lock
                 ? open_parent(v, path, &d, &name)
                 : om_errf(OM_E_Internal, "%s: holding it needs a file system that locks", path);
    if (!rc) rc = om_open_at(d, name, 0, &l->f);
    om_dir_close(d);
    /* The writer holds the lock only for a moment, when it checks whether we are gone. */
    for (int tries = 0; !rc && (rc = v->lock(l->f)) == OM_E_DatabaseInUse && tries < HOLD_TRIES;
         tries++) {
        struct timespec t = {0, 10000000L};
        nanosleep(&t, NULL);
    }
    if (!rc) rc = vss_laid_say(l, 0);
    if (rc) {
        vss_laid_release(l);
        return om_err_ctx(rc, "taking the restore's progress file");
    }
    *out = l;
    return 0;
}

int vss_laid_say(vss_laid *l, uint32_t gen)
{
    char rec[VSS_LAID_RECORD];
    if (gen < l->gen)
        return om_errf(OM_E_InvalidParameter, "%s: generation %u after %u", l->f->path, gen,
                       l->gen);
    vss_laid_encode(l->session, gen, rec);
    int rc = om_pwrite(l->f, rec, sizeof rec, 0);
    if (!rc) l->gen = gen;
    return rc;
}

void vss_laid_release(vss_laid *l)
{
    if (!l) return;
    om_close(l->f);
    free(l);
}
