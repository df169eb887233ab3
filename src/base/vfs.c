/* Helpers over any om_vfs: full reads, durable replace, zero-filled files, paths. */
#include "base/vfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/uuid.h"

int om_fstamp(om_file *f, om_stamp *s)
{
    memset(s, 0, sizeof *s);
    if (!f->vfs->stamp)
        return om_errf(OM_E_FileAccessDenied, "%s: its file system gives no stamp of it", f->path);
    return f->vfs->stamp(f, s);
}

int om_pread_full(om_file *f, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    int rc = f->vfs->pread(f, buf, n, off, &got);
    if (rc) return rc;
    if (got != n)
        return om_errf(OM_E_FileIOBeyondEOF,
                       "reading %s: %zu bytes at offset %llu: file ends first", f->path, n,
                       (unsigned long long)off);
    return 0;
}

void om_dirname(const char *path, char *out, size_t len)
{
    const char *s = strrchr(path, '/');
    if (!s)
        snprintf(out, len, ".");
    else if (s == path)
        snprintf(out, len, "/");
    else
        snprintf(out, len, "%.*s", (int)(s - path), path);
}

int om_path_join(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= len)
        return om_errf(OM_E_InvalidPath, "path too long: %s/%s", dir, name);
    return 0;
}

/* ---- durable files ---- */

int om_durable_is_tmp(const char *name, const char *target)
{
    size_t l = strlen(name);
    /* "." name "." 16 hex ".tmp" */
    if (l < 1 + 1 + 1 + 16 + 4 || name[0] != '.' || strcmp(name + l - 4, ".tmp")) return 0;
    const char *hex = name + l - 4 - 16;
    if (hex[-1] != '.') return 0;
    for (int i = 0; i < 16; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'))) return 0;
    size_t tl = (size_t)(hex - 1 - (name + 1));
    if (!target) return tl > 0;
    return strlen(target) == tl && !memcmp(name + 1, target, tl);
}

static int durable_begin(om_dir *dir, const char *name, int oflags, om_durable *d)
{
    memset(d, 0, sizeof *d);
    d->dir = dir;
    size_t l = strlen(name);
    if (!l || l > sizeof d->tmp - 23 || strchr(name, '/'))
        return om_errf(OM_E_InvalidPath, "%s/%s: not a name a file can have here", dir->path, name);
    memcpy(d->name, name, l + 1);
    /* A name nobody can guess ahead: a file planted there would fail EXCL, not be written. */
    uint8_t r[8];
    om_random(r, sizeof r);
    snprintf(d->tmp, sizeof d->tmp, ".%s.%02x%02x%02x%02x%02x%02x%02x%02x.tmp", name, r[0], r[1],
             r[2], r[3], r[4], r[5], r[6], r[7]);
    return om_open_at(dir, d->tmp, OM_O_CREATE | OM_O_EXCL | oflags, &d->f);
}

int om_durable_begin(om_dir *dir, const char *name, om_durable *d)
{
    return durable_begin(dir, name, 0, d);
}

int om_durable_begin_private(om_dir *dir, const char *name, om_durable *d)
{
    return durable_begin(dir, name, OM_O_PRIVATE, d);
}

void om_durable_abort(om_durable *d)
{
    if (!d->f) return;
    om_close(d->f);
    d->f = NULL;
    /* Only our own name: it was created EXCL in a handle that follows no link. */
    int rc = om_unlink_at(d->dir, d->tmp);
    if (rc && rc != OM_E_FileNotFound)
        om_warn("removing %s/%s: %s", d->dir->path, d->tmp, om_err_detail());
}

/* synced 0: om_durable_place (neither sync). */
static int durable_commit(om_durable *d, int flags, om_file **replaced, int synced,
                          om_file **open_f)
{
    if (!d->f)
        return om_errf(OM_E_InvalidParameter, "%s/%s: nothing to commit", d->dir->path, d->name);
    /* The content first: a name must never reach the disk before the bytes it names. */
    int rc = synced ? om_sync(d->f) : 0;
    int crc = 0;
    if (open_f)
        *open_f = d->f;
    else
        crc = om_close(d->f);
    d->f = NULL;
    if (!rc) rc = crc;
    /* The old file held open across the rename (never through a link: open_at follows none);
     * a name that is not a regular file is left to the rename to replace. */
    if (!rc && replaced && om_open_at(d->dir, d->name, OM_O_RDONLY, replaced)) {
        *replaced = NULL;
        om_err_clear();
    }
    if (!rc) rc = om_rename_at(d->dir, d->tmp, d->dir, d->name, flags);
    if (rc) {
        om_err_saved e; /* the unlink's failure is not the one to report */
        om_err_save(&e, rc);
        om_unlink_at(d->dir, d->tmp);
        if (replaced) {
            om_close(*replaced);
            *replaced = NULL;
        }
        if (open_f) {
            om_close(*open_f);
            *open_f = NULL;
        }
        return om_err_restore(&e);
    }
    /* Then the name: until the directory is synced a crash may bring the old one back. */
    return synced ? om_dir_sync(d->dir) : 0;
}

int om_durable_commit(om_durable *d, int flags)
{
    return durable_commit(d, flags, NULL, 1, NULL);
}

int om_durable_commit_keep(om_durable *d, om_file **replaced)
{
    *replaced = NULL;
    return durable_commit(d, OM_RENAME_REPLACE, replaced, 1, NULL);
}

int om_durable_place(om_durable *d, int flags)
{
    return durable_commit(d, flags, NULL, 0, NULL);
}

int om_durable_commit_open(om_durable *d, int flags, om_file **f)
{
    *f = NULL;
    return durable_commit(d, flags, NULL, 1, f);
}

int om_durable_place_open(om_durable *d, int flags, om_file **replaced, om_file **f)
{
    if (replaced) *replaced = NULL;
    *f = NULL;
    return durable_commit(d, flags, replaced, 0, f);
}

/* Writes real zeros rather than reserving space: on ext4 and XFS a reserved (unwritten)
 * extent makes every later fdatasync into it update metadata too, which doubles the cost of
 * each log flush. Log files are written once here and then overwritten in place. */
static int write_zeros(om_file *f, uint64_t n)
{
    static const uint8_t zeros[65536];
    int rc = 0;
    for (uint64_t off = 0; off < n && !rc; off += sizeof zeros)
        rc = om_pwrite(f, zeros, n - off < sizeof zeros ? (size_t)(n - off) : sizeof zeros, off);
    return rc;
}

int om_durable_write_at(om_dir *dir, const char *name, const void *data, uint64_t n, int flags)
{
    om_durable d;
    int rc = om_durable_begin(dir, name, &d);
    if (rc) return rc;
    if (n) rc = data ? om_pwrite(d.f, data, (size_t)n, 0) : write_zeros(d.f, n);
    if (rc) {
        om_durable_abort(&d);
        return rc;
    }
    return om_durable_commit(&d, flags);
}

typedef struct sweep {
    om_dir *dir;
    const char *target;
    int removed, rc;
} sweep;

static int sweep_one(void *arg, const char *name)
{
    sweep *s = arg;
    if (!om_durable_is_tmp(name, s->target)) return 0;
    int rc = om_unlink_at(s->dir, name);
    if (!rc)
        s->removed++;
    else if (rc != OM_E_FileNotFound && !s->rc)
        s->rc = rc;
    return 0;
}

int om_durable_sweep(om_dir *dir, const char *target, int *removed)
{
    sweep s = {.dir = dir, .target = target};
    int rc = om_list_at(dir, sweep_one, &s);
    if (!rc) rc = s.rc;
    if (!rc && s.removed) rc = om_dir_sync(dir);
    if (removed) *removed = s.removed;
    return rc;
}

/* The folder of a configured path (links allowed on the way) and the file's name in it. */
static int open_parent(om_vfs *v, const char *path, om_dir **dir, const char **name)
{
    char d[4096];
    const char *s = strrchr(path, '/');
    *name = s ? s + 1 : path;
    if (!**name) return om_errf(OM_E_InvalidPath, "%s: names a folder, not a file", path);
    if (strlen(path) >= sizeof d) return om_errf(OM_E_InvalidPath, "path too long: %s", path);
    om_dirname(path, d, sizeof d);
    return om_dir_open(v, NULL, d, OM_D_FOLLOW, dir);
}

static int replace_file(om_vfs *v, const char *path, const void *data, uint64_t n)
{
    om_dir *dir = NULL;
    const char *name;
    int rc = open_parent(v, path, &dir, &name);
    if (!rc) rc = om_durable_write_at(dir, name, data, n, OM_RENAME_REPLACE);
    om_dir_close(dir);
    return rc;
}

int om_write_file_durable(om_vfs *v, const char *path, const void *data, size_t n)
{
    static const uint8_t empty[1];
    return replace_file(v, path, data ? data : empty, n);
}

int om_create_zeroed(om_vfs *v, const char *path, uint64_t n)
{
    return replace_file(v, path, NULL, n);
}

int om_read_file(om_vfs *v, const char *path, uint8_t **data, size_t *n)
{
    om_file *f = NULL;
    uint64_t sz = 0;
    uint8_t *buf = NULL;
    int rc = om_open(v, path, OM_O_RDONLY, &f);
    if (rc) return rc;
    rc = om_fsize(f, &sz);
    if (rc) goto out;
    buf = malloc(sz + 1);
    if (!buf) {
        rc = om_errf(OM_E_OutOfMemory, "reading %s: out of memory", path);
        goto out;
    }
    rc = om_pread_full(f, buf, sz, 0);
    if (rc) goto out;
    buf[sz] = 0;
    *data = buf;
    *n = sz;
    buf = NULL;
out:
    free(buf);
    om_close(f);
    return rc;
}
