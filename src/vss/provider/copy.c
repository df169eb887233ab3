/* copy: every regular file is copied into <shadow_root>/<set>/<id> during the freeze, with
 * copy_file_range (or 1 MiB reads and writes) and a deadline check every 8 MiB. Works on any
 * filesystem and across mounts, but the freeze lasts as long as the copy: the fallback for
 * small data, bounded by the 10 s commit limit. */
#include <stdio.h>
#include <sys/stat.h>

#include "base/error.h"
#include "vss/provider/provider_internal.h"

static int copies_all(void *arg, const char *rel)
{
    (void)arg, (void)rel;
    return 1;
}

static int copy_one(void *arg, const char *src, const char *dst, const char *rel,
                    const struct stat *st, uint64_t deadline_ns)
{
    (void)arg, (void)rel;
    return vss_copy_file(src, dst, st, deadline_ns);
}

static int copy_supports(const char *path, const char *shadow_root, char *why, size_t n)
{
    (void)shadow_root;
    struct stat st;
    if (stat(path, &st) != 0) return vss_sys_err("reading", path);
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
        snprintf(why, n, "%s is not a directory or a file", path);
        return 0;
    }
    if (n) why[0] = 0;
    return 1;
}

static int copy_prepare(const vss_shadow_path *p, const char *shadow_root, vss_shadow *s)
{
    vss_tree_opts o = {.same_mount = 0, .copies = copies_all};
    return vss_tree_prepare(p, shadow_root, s, "copy", &o);
}

static int copy_commit(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns)
{
    return vss_tree_commit(p, s, deadline_ns, copy_one, NULL);
}

const vss_provider vss_copy_provider = {
    .name = "copy",
    .supports = copy_supports,
    .prepare = copy_prepare,
    .commit = copy_commit,
    .expose = vss_tree_expose,
    .remove = vss_tree_remove,
};
