/* Helpers over any om_vfs: full reads, durable replace, zero-filled files, paths. */
#include "base/vfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

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

/* Shared by durable replace and zero-filled creation: content comes from data, or zeros when
 * data is NULL. */
static int write_tmp_and_rename(om_vfs *v, const char *path, const void *data, uint64_t n)
{
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return om_errf(OM_E_InvalidPath, "path too long: %s", path);
    om_dirname(path, dir, sizeof dir);
    om_file *f = NULL;
    int rc = om_open(v, tmp, OM_O_CREATE, &f);
    if (rc) return rc;
    rc = om_resize(f, 0);
    if (!rc) rc = data ? om_pwrite(f, data, n, 0) : write_zeros(f, n);
    if (!rc) rc = om_sync(f);
    int crc = om_close(f);
    if (!rc) rc = crc;
    if (!rc) rc = v->rename(v, tmp, path);
    if (!rc) rc = v->sync_dir(v, dir);
    if (rc) v->unlink(v, tmp);
    return rc;
}

int om_write_file_durable(om_vfs *v, const char *path, const void *data, size_t n)
{
    static const uint8_t empty[1];
    return write_tmp_and_rename(v, path, data ? data : empty, n);
}

int om_create_zeroed(om_vfs *v, const char *path, uint64_t n)
{
    return write_tmp_and_rename(v, path, NULL, n);
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
