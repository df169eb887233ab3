/* The steps shared by the providers (provider_internal.h): checks and placement every provider
 * makes, and the prepare/commit/expose/remove steps of those that build the shadow tree file by
 * file (held, reflink, copy), on the walking and copying of tree.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/time.h"
#include "base/uuid.h"
#include "base/vfs.h"
#include "vss/provider/provider_internal.h"

int vss_op_err(const char *op, const char *src, const char *dst)
{
    int e = errno;
    int err = (e == ENOSPC || e == EDQUOT) ? OM_E_DiskFull : OM_E_ProviderVeto;
    return om_errf(err, "%s %s to %s: %s", op, src, dst, strerror(e));
}

int vss_shadow_begin(const vss_shadow_path *p, vss_shadow *s, const char *provider)
{
    om_uuid u;
    const char *path = p && p->path ? p->path : "(none)";
    if (path[0] != '/')
        return om_errf(OM_E_InvalidPath, "shadow copy of %s: the path must be absolute", path);
    if (om_uuid_parse(s->set_id, &u) != 0)
        return om_errf(OM_E_InvalidParameter, "shadow copy of %s: set id \"%.36s\" is not a uuid",
                       path, s->set_id);
    if (!s->id[0]) {
        om_uuid_new(&u);
        om_uuid_str(&u, s->id);
    } else if (om_uuid_parse(s->id, &u) != 0) {
        return om_errf(OM_E_InvalidParameter, "shadow copy of %s: id \"%.36s\" is not a uuid", path,
                       s->id);
    }
    int rc = vss_fmt_path(s->original, sizeof s->original, "%s", path);
    if (rc) return om_err_ctx(rc, "shadow copy");
    for (size_t len = strlen(s->original); len > 1 && s->original[len - 1] == '/'; len--)
        s->original[len - 1] = 0;
    snprintf(s->provider, sizeof s->provider, "%s", provider);
    s->storage[0] = s->exposed[0] = 0;
    s->created_ns = s->bytes = 0;
    s->files = 0;
    return 0;
}

int vss_check_space(const char *dir, uint64_t need, const char *original)
{
    struct statvfs v;
    if (statvfs(dir, &v) != 0) return vss_sys_err("reading the free space of", dir);
    uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize;
    if (avail >= need) return 0;
    return om_errf(OM_E_InsufficientStorage,
                   "shadow copy of %s needs %.1f MiB in %s, which has %.1f MiB free; HINT: free "
                   "space there, or use a provider that copies less (btrfs, reflink, held)",
                   original, need / 1048576.0, dir, avail / 1048576.0);
}

int vss_make_storage(vss_shadow *s, const char *base, int mk_storage)
{
    char set[VSS_PATH_MAX];
    int rc = vss_join(set, sizeof set, base, s->set_id);
    if (!rc) rc = vss_join(s->storage, sizeof s->storage, set, s->id);
    if (rc) return om_err_ctx(rc, "shadow copy of %s", s->original);
    if (mkdir(set, 0750) != 0 && errno != EEXIST) return vss_sys_err("creating", set);
    if (mk_storage && mkdir(s->storage, 0750) != 0) {
        rc = vss_sys_err("creating", s->storage);
        rmdir(set); /* only when no other shadow copy of the set uses it */
    }
    return rc;
}

int vss_check_storage_path(const vss_shadow *s)
{
    om_uuid u;
    char tail[80];
    snprintf(tail, sizeof tail, "/%.36s/%.36s", s->set_id, s->id);
    size_t n = strnlen(s->storage, sizeof s->storage), t = strlen(tail);
    if (s->storage[0] == '/' && n < sizeof s->storage && n > t &&
        !strcmp(s->storage + n - t, tail) && om_uuid_parse(s->set_id, &u) == 0 &&
        om_uuid_parse(s->id, &u) == 0)
        return 0;
    return om_errf(OM_E_UnexpectedProviderError,
                   "refusing to delete \"%.300s\": a shadow copy's storage ends in "
                   "/<set id>/<id> (%s)",
                   s->storage, tail);
}

void vss_remove_set_dir(const vss_shadow *s)
{
    char set[VSS_PATH_MAX];
    om_dirname(s->storage, set, sizeof set);
    if (rmdir(set) != 0 && errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
        om_debug("shadow copy set directory %s stays: %s", set, strerror(errno));
}

/* --- held, reflink and copy: the tree rebuilt file by file -------------------------------- */

/* Where the storage's parent goes, created. */
static int tree_base(const vss_shadow *s, const char *shadow_root, int same_mnt, char *base,
                     size_t n)
{
    if (same_mnt) return vss_storage_base(s->original, shadow_root, base, n);
    int rc = om_mkdirs(shadow_root);
    return rc ? rc : vss_fmt_path(base, n, "%s", shadow_root);
}

int vss_tree_prepare(const vss_shadow_path *p, const char *shadow_root, vss_shadow *s,
                     const char *provider, const vss_tree_opts *o)
{
    char base[VSS_PATH_MAX];
    struct stat st;
    vss_scan *sc = malloc(sizeof *sc);
    if (!sc) return om_errf(OM_E_OutOfMemory, "preparing a shadow copy: out of memory");
    int rc = vss_shadow_begin(p, s, provider);
    if (!rc && stat(s->original, &st) != 0) rc = vss_sys_err("reading", s->original);
    if (!rc && !S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        rc = om_errf(OM_E_InvalidParameter, "shadow copy of %s: not a directory or a file",
                     s->original);
    if (!rc) rc = tree_base(s, shadow_root, o->same_mount, base, sizeof base);
    if (!rc) rc = vss_scan_tree(s->original, base, o->copies, o->arg, sc);
    if (!rc && o->same_mount && sc->other_fs[0])
        rc = om_errf(OM_E_VolumeNotSupportedByProvider,
                     "%s cannot shadow %s: %s is another filesystem or subvolume; HINT: shadow "
                     "it as a path of its own, or use the copy provider",
                     provider, s->original, sc->other_fs);
    if (!rc) rc = vss_check_space(base, sc->copy_bytes + 4096 * sc->entries, s->original);
    if (!rc) rc = vss_make_storage(s, base, 1);
    int made = !rc;
    if (!rc && S_ISDIR(st.st_mode)) memcpy(s->exposed, s->storage, sizeof s->exposed);
    if (!rc && !S_ISDIR(st.st_mode))
        rc = vss_join(s->exposed, sizeof s->exposed, s->storage, strrchr(s->original, '/') + 1);
    if (rc && made && vss_tree_remove(s) != 0) om_warn("%s", om_err_detail());
    if (rc) s->storage[0] = s->exposed[0] = 0; /* nothing for remove to do */
    free(sc);
    return rc;
}

typedef struct committer {
    int skip_existing; /* files already in the tree stay (held: linked at prepare) */
    const vss_shadow_path *p;
    const vss_shadow *s;
    uint64_t deadline_ns;
    vss_file_fn fn;
    void *arg;
    struct stat skip; /* the directory of the shadows, when inside the original */
    int has_skip;
    char dst[VSS_PATH_MAX];
} committer;

static int copy_symlink(const char *src, const char *dst, const char *original)
{
    char target[VSS_PATH_MAX];
    ssize_t n = readlink(src, target, sizeof target - 1);
    if (n < 0) return vss_sys_err("reading the link", src);
    target[n] = 0;
    if (symlink(target, dst) != 0) return vss_sys_err("creating the link", dst);
    if (target[0] == '/' || strstr(target, ".."))
        om_warn("shadow copy of %s: %s links to %s, which may be outside the shadow copy", original,
                src, target);
    return 0;
}

static int commit_cb(void *arg, const vss_entry *e)
{
    committer *c = arg;
    const struct stat *st = e->st;
    if (e->post) return 0;
    if (S_ISDIR(st->st_mode) && c->has_skip && e->rel[0] && st->st_dev == c->skip.st_dev &&
        st->st_ino == c->skip.st_ino)
        return VSS_WALK_SKIP;
    int rc = e->rel[0] ? vss_join(c->dst, sizeof c->dst, c->s->exposed, e->rel)
                       : vss_fmt_path(c->dst, sizeof c->dst, "%s", c->s->exposed);
    if (rc) return rc;
    if (S_ISDIR(st->st_mode)) {
        if (!e->rel[0]) return 0; /* the storage itself, made by prepare */
        struct stat dst;
        if (mkdir(c->dst, 0750) == 0 ||
            (errno == EEXIST && lstat(c->dst, &dst) == 0 && S_ISDIR(dst.st_mode)))
            return 0; /* (held links its files at prepare: the tree may be there) */
        return vss_sys_err("creating", c->dst);
    }
    if ((rc = vss_check_deadline(c->deadline_ns, e->path)) != 0) return rc;
    for (size_t i = 0; S_ISREG(st->st_mode) && c->p && i < c->p->nexclude; i++)
        if (!strcmp(c->p->exclude[i], e->path)) return 0;
    struct stat have;
    if (c->skip_existing && lstat(c->dst, &have) == 0) return 0; /* built in an earlier pass */
    if (S_ISREG(st->st_mode)) return c->fn(c->arg, e->path, c->dst, e->rel, st, c->deadline_ns);
    if (S_ISLNK(st->st_mode)) return copy_symlink(e->path, c->dst, c->s->original);
    om_debug("shadow copy of %s: %s skipped (a socket, FIFO or device)", c->s->original, e->path);
    return 0;
}

int vss_tree_commit(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns, vss_file_fn fn,
                    void *arg)
{
    return vss_tree_build(p, s, deadline_ns, fn, arg, 0);
}

int vss_tree_build(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns, vss_file_fn fn,
                   void *arg, int skip_existing)
{
    char set[VSS_PATH_MAX], base[VSS_PATH_MAX];
    committer *c = calloc(1, sizeof *c);
    if (!c) return om_errf(OM_E_OutOfMemory, "shadow copy of %s: out of memory", s->original);
    *c = (committer){.skip_existing = skip_existing,
                     .p = p,
                     .s = s,
                     .deadline_ns = deadline_ns,
                     .fn = fn,
                     .arg = arg};
    om_dirname(s->storage, set, sizeof set);
    om_dirname(set, base, sizeof base);
    c->has_skip = stat(base, &c->skip) == 0;
    uint64_t now = om_now_ns();
    int rc = vss_walk(s->original, 1, commit_cb, c);
    if (!rc) s->created_ns = now;
    free(c);
    return rc ? om_err_ctx(rc, "%s shadow copy of %s", s->provider, s->original) : 0;
}

int vss_tree_expose(vss_shadow *s)
{
    return vss_make_readonly(s->storage, &s->bytes, &s->files);
}

int vss_tree_remove(const vss_shadow *s)
{
    if (!s->storage[0]) return 0; /* prepare failed: it left nothing */
    int rc = vss_check_storage_path(s);
    if (!rc) rc = vss_remove_tree(s->storage);
    if (!rc) vss_remove_set_dir(s);
    return rc;
}

/* A small file in dir to probe with when the tree has none; its path into out. (Raw calls, as in
 * tree.c: a probe is removed at once and needs no durability.) */
static int probe_file(const char *dir, char *out, size_t n)
{
    int rc = vss_join(out, n, dir, ".ombra-probe-XXXXXX");
    int fd = rc ? -1 : mkstemp(out);
    if (!rc && fd < 0) rc = vss_sys_err("creating a probe file in", dir);
    if (!rc && write(fd, "ombra probe\n", 12) != 12) rc = vss_sys_err("writing", out);
    if (fd >= 0) close(fd);
    if (rc && fd >= 0) unlink(out);
    return rc;
}

/* One probe of src (a file of the tree, or a temporary one) into a new name in base. */
static int probe_once(const char *base, const char *first_file, vss_probe_fn probe,
                      const char *what, const char *op, char *why, size_t n)
{
    char tmp[VSS_PATH_MAX] = "", dst[VSS_PATH_MAX], fs[64], id[37];
    om_uuid u;
    om_uuid_new(&u);
    om_uuid_str(&u, id);
    int rc = vss_fmt_path(dst, sizeof dst, "%s/.ombra-probe-%s", base, id);
    if (!rc && !first_file[0]) rc = probe_file(base, tmp, sizeof tmp);
    if (rc) return rc;
    const char *src = tmp[0] ? tmp : first_file;
    int e = probe(src, dst);
    unlink(dst);
    if (e == 0) {
        if (n) why[0] = 0;
    } else {
        snprintf(why, n, "%s on %s: %s of %s into %s failed (%s)", what,
                 vss_fs_name(base, fs, sizeof fs), op, src, base, strerror(e));
    }
    if (tmp[0]) unlink(tmp);
    return e == 0;
}

int vss_probe_supports(const char *path, const char *shadow_root, vss_probe_fn probe,
                       const char *what, const char *op, char *why, size_t n)
{
    char base[VSS_PATH_MAX];
    vss_scan *sc = malloc(sizeof *sc);
    if (!sc) return om_errf(OM_E_OutOfMemory, "probing %s: out of memory", path);
    int rc = vss_storage_base(path, shadow_root, base, sizeof base);
    if (!rc) rc = vss_scan_tree(path, base, NULL, NULL, sc);
    if (!rc && sc->other_fs[0])
        snprintf(why, n, "%s is another filesystem or subvolume", sc->other_fs);
    else if (!rc)
        rc = probe_once(base, sc->first_file, probe, what, op, why, n);
    free(sc);
    return rc;
}
