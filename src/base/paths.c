#include "base/paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/config.h"
#include "base/error.h"
#include "base/vfs.h"

static int put(char *out, size_t len, const char *a, const char *b)
{
    int n = snprintf(out, len, "%s%s", a, b);
    if (n < 0 || (size_t)n >= len) return om_errf(OM_E_InvalidPath, "path too long: %s%s", a, b);
    return 0;
}

int om_runtime_dir(char *out, size_t len)
{
    const char *e = om_conf_setting("OMBRA_RUNTIME_DIR", "ombra", "runtime-dir");
    if (e && *e) return put(out, len, e, "");
    if (geteuid() == 0) return put(out, len, "/run/ombra", "");
    e = getenv("XDG_RUNTIME_DIR");
    if (e && *e) return put(out, len, e, "/ombra");
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/ombra-%u", (unsigned)geteuid());
    return put(out, len, tmp, "");
}

/* The runtime directory as found: owned by us, not writable by anybody else. */
static int runtime_dir_check(const char *dir)
{
    struct stat st, lst;
    if (lstat(dir, &lst) != 0 || stat(dir, &st) != 0)
        return om_errf(om_err_from_errno(errno), "runtime directory %s: %s", dir, strerror(errno));
    uid_t me = geteuid();
    const char *hint = "HINT: remove it (as its owner or root) and start the daemon again, or set "
                       "OMBRA_RUNTIME_DIR to a directory of this user's";
    if (S_ISLNK(lst.st_mode) && lst.st_uid != me && lst.st_uid != 0)
        return om_errf(OM_E_FileAccessDenied,
                       "the runtime directory %s is a link of uid %u, not of this daemon's user "
                       "(uid %u): another user may have taken it over. %s",
                       dir, (unsigned)lst.st_uid, (unsigned)me, hint);
    if (!S_ISDIR(st.st_mode))
        return om_errf(OM_E_InvalidPath, "the runtime directory %s is not a directory. %s", dir,
                       hint);
    if (st.st_uid != me)
        return om_errf(OM_E_FileAccessDenied,
                       "the runtime directory %s belongs to uid %u, not to this daemon's user "
                       "(uid %u): another user may have taken it over. %s",
                       dir, (unsigned)st.st_uid, (unsigned)me, hint);
    if (st.st_mode & 022)
        return om_errf(OM_E_FileAccessDenied,
                       "the runtime directory %s has mode %04o: other users could replace the "
                       "daemon's socket in it. HINT: chmod 0700 %s (0750 for the daemon's group)",
                       dir, (unsigned)(st.st_mode & 07777), dir);
    return 0;
}

int om_runtime_dir_make(const char *dir, gid_t group)
{
    struct stat st;
    if (lstat(dir, &st) != 0) {
        if (errno != ENOENT)
            return om_errf(om_err_from_errno(errno), "runtime directory %s: %s", dir,
                           strerror(errno));
        char parent[4096];
        int n = snprintf(parent, sizeof parent, "%s", dir);
        if (n < 0 || (size_t)n >= sizeof parent)
            return om_errf(OM_E_InvalidPath, "path too long: %s", dir);
        char *slash = strrchr(parent, '/');
        while (slash && slash > parent && slash[1] == 0) { /* "run/" */
            *slash = 0;
            slash = strrchr(parent, '/');
        }
        if (slash && slash > parent) {
            *slash = 0;
            int rc = om_mkdirs(parent);
            if (rc) return rc;
        }
        int shared = group != getegid();
        /* Created with no access for anyone else, then opened to the group: no window in
         * which another user could get in. */
        if (mkdir(dir, 0700) == 0) {
            if (shared && (chown(dir, (uid_t)-1, group) != 0 || chmod(dir, 0750) != 0))
                return om_errf(om_err_from_errno(errno),
                               "giving the runtime directory %s to group %u: %s", dir,
                               (unsigned)group, strerror(errno));
        } else if (errno != EEXIST)
            return om_errf(om_err_from_errno(errno), "creating the runtime directory %s: %s", dir,
                           strerror(errno));
    }
    return runtime_dir_check(dir);
}

int om_data_dir(char *out, size_t len)
{
    const char *e = om_conf_setting("OMBRA_HOME", "ombra", "data-dir");
    if (e && *e) return put(out, len, e, "");
    if (geteuid() == 0) return put(out, len, "/var/lib/ombra", "");
    e = getenv("HOME");
    if (!e || !*e) return om_errf(OM_E_InvalidPath, "no data directory: set OMBRA_HOME or HOME");
    return put(out, len, e, "/.local/share/ombra");
}

int om_mkdirs(const char *dir)
{
    om_dir *d = NULL;
    int rc = om_dir_open(om_vfs_posix(), NULL, dir, OM_D_CREATE | OM_D_FOLLOW, &d);
    om_dir_close(d);
    return rc;
}
