#include "base/paths.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/log.h"

static int put(char *out, size_t len, const char *a, const char *b)
{
    int n = snprintf(out, len, "%s%s", a, b);
    if (n < 0 || (size_t)n >= len) return om_errf(OM_E_InvalidPath, "path too long: %s%s", a, b);
    return 0;
}

int om_runtime_dir(char *out, size_t len)
{
    const char *e = getenv("OMBRA_RUNTIME_DIR");
    if (e && *e) return put(out, len, e, "");
    if (geteuid() == 0) return put(out, len, "/run/ombra", "");
    e = getenv("XDG_RUNTIME_DIR");
    if (e && *e) return put(out, len, e, "/ombra");
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/ombra-%u", (unsigned)geteuid());
    return put(out, len, tmp, "");
}

int om_data_dir(char *out, size_t len)
{
    const char *e = getenv("OMBRA_HOME");
    if (e && *e) return put(out, len, e, "");
    if (geteuid() == 0) return put(out, len, "/var/lib/ombra", "");
    e = getenv("HOME");
    if (!e || !*e) return om_errf(OM_E_InvalidPath, "no data directory: set OMBRA_HOME or HOME");
    return put(out, len, e, "/.local/share/ombra");
}

int om_mkdirs(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return om_errf(OM_E_InvalidPath, "path too long: %s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0750) != 0 && errno != EEXIST)
            return om_errf(om_err_from_errno(errno), "creating %s: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0750) != 0 && errno != EEXIST)
        return om_errf(om_err_from_errno(errno), "creating %s: %s", p, strerror(errno));
    return 0;
}

void om_remove_flat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[4400];
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%.4100s/%.255s", dir, de->d_name);
        if (unlink(p) != 0) om_warn("removing %s: %s", p, strerror(errno));
    }
    if (d) closedir(d);
    if (rmdir(dir) != 0) om_warn("removing %s: %s", dir, strerror(errno));
}
